import type { Context, Middleware, Next } from 'koa';
import type { BidiOptions, Hub } from '../core/server';
import { BidiServer } from '../core/server';
import { createNodeHandler } from '../node/bridge';

export type BidiKoaMiddleware<User, State> = Middleware & {
  /** The core server: `sweep()`, `dispose()`, `store`. */
  server: BidiServer<any, any>;
  /** Push to sessions from anywhere. */
  hub: Hub<User, State>;
};

/** `app.use(bidiWeb(options))`: serves the session routes under `options.path` (default `/session`). */
export function bidiWeb<User = unknown, State extends object = Record<string, unknown>>(
  optionsOrServer: BidiOptions<User, State> | BidiServer<User, State> = {},
): BidiKoaMiddleware<User, State> {
  const server = isServer(optionsOrServer) ? optionsOrServer : new BidiServer(optionsOrServer);
  const handle = createNodeHandler(server);
  const middleware = async (ctx: Context, next: Next) => {
    // A body parser mounted before us (koa-bodyparser, @koa/bodyparser) leaves the body on ctx.request.
    const { rawBody, body } = ctx.request as { rawBody?: unknown; body?: unknown };
    if (await handle(ctx.req, ctx.res, ctx, typeof rawBody === 'string' ? rawBody : body)) ctx.respond = false;
    else await next();
  };
  return Object.assign(middleware, { server, hub: server.hub });
}

function isServer<U, S extends object>(x: BidiOptions<U, S> | BidiServer<U, S>): x is BidiServer<U, S> {
  // Duck-typed: the ESM and CJS builds each have their own class object.
  return typeof (x as BidiServer<U, S>).handle === 'function' && 'hub' in x;
}

export * from '../core/index';
