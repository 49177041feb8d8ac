import type { Context, Middleware, Next } from 'koa';
import type { BidiOptions, Hub } from '../core/server';
import { toBidiServer, type BidiServer } from '../core/server';
import { createNodeHandler } from '../node/bridge';

export type BidiKoaMiddleware<User, State, Out = unknown> = Middleware & {
  /** The core server: `sweep()`, `dispose()`, `store`. */
  server: BidiServer<any, any>;
  /** Push to sessions from anywhere. */
  hub: Hub<User, State, Out>;
};

/** `app.use(bidiWeb(options))`: serves the session routes under `options.path` (default `/session`). */
export function bidiWeb<User = unknown, State extends object = Record<string, unknown>, In = unknown, Out = unknown>(
  optionsOrServer: BidiOptions<User, State, In, Out> | BidiServer<User, State, In, Out> = {},
): BidiKoaMiddleware<User, State, Out> {
  const server = toBidiServer(optionsOrServer);
  const handle = createNodeHandler(server);
  const middleware = async (ctx: Context, next: Next) => {
    // A body parser mounted before us (koa-bodyparser, @koa/bodyparser) leaves the body on ctx.request.
    const { rawBody, body } = ctx.request as { rawBody?: unknown; body?: unknown };
    if (await handle(ctx.req, ctx.res, ctx, typeof rawBody === 'string' ? rawBody : body)) ctx.respond = false;
    else await next();
  };
  return Object.assign(middleware, { server, hub: server.hub });
}

export * from '../core/index';
