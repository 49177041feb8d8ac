import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { BidiOptions, Hub } from '../core/server';
import { toBidiServer, type BidiServer } from '../core/server';
import { createNodeHandler } from '../node/bridge';

export type BidiExpressMiddleware<User, State> = RequestHandler & {
  /** The core server: `sweep()`, `dispose()`, `store`. */
  server: BidiServer<any, any>;
  /** Push to sessions from anywhere. */
  hub: Hub<User, State>;
};

/** `app.use(bidiWeb(options))`: serves the session routes under `options.path` (default `/session`). */
export function bidiWeb<User = unknown, State extends object = Record<string, unknown>>(
  optionsOrServer: BidiOptions<User, State> | BidiServer<User, State> = {},
): BidiExpressMiddleware<User, State> {
  const server = toBidiServer(optionsOrServer);
  const handle = createNodeHandler(server);
  const middleware = (req: Request, res: Response, next: NextFunction) => {
    handle(req, res, req).then((handled) => handled || next(), next);
  };
  return Object.assign(middleware, { server, hub: server.hub });
}

export * from '../core/index';
