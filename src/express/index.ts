import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { BidiOptions, Hub } from '../core/server';
import { BidiServer } from '../core/server';
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
  const server = isServer(optionsOrServer) ? optionsOrServer : new BidiServer(optionsOrServer);
  const handle = createNodeHandler(server);
  const middleware = (req: Request, res: Response, next: NextFunction) => {
    handle(req, res, req).then((handled) => handled || next(), next);
  };
  return Object.assign(middleware, { server, hub: server.hub });
}

function isServer<U, S extends object>(x: BidiOptions<U, S> | BidiServer<U, S>): x is BidiServer<U, S> {
  // Duck-typed: the ESM and CJS builds each have their own class object.
  return typeof (x as BidiServer<U, S>).handle === 'function' && 'hub' in x;
}

export * from '../core/index';
