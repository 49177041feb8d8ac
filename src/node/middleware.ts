/**
 * What the Express and Koa adapters share: the core server behind a Node
 * handler, returned as the framework's middleware with the server and its
 * hub attached. Each adapter only says how its framework calls a middleware.
 */
import type { BidiOptions, BidiServer, Hub } from '../core/server';
import { toBidiServer } from '../core/server';
import { createNodeHandler, type NodeHandler } from './bridge';

export type BidiMiddleware<Middleware, User, State, Out = unknown> = Middleware & {
  /** The core server: `sweep()`, `dispose()`, `store`. */
  server: BidiServer<any, any>;
  /** Push to sessions from anywhere. */
  hub: Hub<User, State, Out>;
};

/** `toMiddleware` takes options or a server built elsewhere (one server can serve several mounts). */
export type OptionsOrServer<User, State extends object, In, Out> = BidiOptions<User, State, In, Out> | BidiServer<User, State, In, Out>;

export function toMiddleware<Middleware extends (...args: any[]) => unknown, User, State extends object, In, Out>(
  optionsOrServer: OptionsOrServer<User, State, In, Out>,
  fromHandler: (handle: NodeHandler) => Middleware,
): BidiMiddleware<Middleware, User, State, Out> {
  const server = toBidiServer(optionsOrServer);
  return Object.assign(fromHandler(createNodeHandler(server)), { server, hub: server.hub });
}

/** Connect-style `(req, res, next)`, as Express (and Nest on Express) calls it: paths not ours, and errors, go to `next`. */
export function connectMiddleware(handle: NodeHandler) {
  return (req: Parameters<NodeHandler>[0], res: Parameters<NodeHandler>[1], next: (err?: unknown) => void): void => {
    handle(req, res, req).then((handled) => handled || next(), next);
  };
}
