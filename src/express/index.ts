import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { BidiOptions, Hub } from '../core/server';
import { toBidiServer, type BidiServer } from '../core/server';
import { createNodeHandler } from '../node/bridge';

export type BidiExpressMiddleware<User, State, Out = unknown> = RequestHandler & {
  /** The core server: `sweep()`, `dispose()`, `store`. */
  server: BidiServer<any, any>;
  /** Push to sessions from anywhere. */
  hub: Hub<User, State, Out>;
};

/** `app.use(bidiWeb(options))`: serves the session routes under `options.path` (default `/session`). */
export function bidiWeb<User = unknown, State extends object = Record<string, unknown>, In = unknown, Out = unknown>(
  optionsOrServer: BidiOptions<User, State, In, Out> | BidiServer<User, State, In, Out> = {},
): BidiExpressMiddleware<User, State, Out> {
  const server = toBidiServer(optionsOrServer);
  const handle = createNodeHandler(server);
  const middleware = (req: Request, res: Response, next: NextFunction) => {
    handle(req, res, req).then((handled) => handled || next(), next);
  };
  return Object.assign(middleware, { server, hub: server.hub });
}

export * from '../core/index';
