import type { Context, Middleware, Next } from 'koa';
import { toMiddleware, type BidiMiddleware, type OptionsOrServer } from '../node/middleware';

export type BidiKoaMiddleware<User, State, Out = unknown> = BidiMiddleware<Middleware, User, State, Out>;

/** `app.use(bidiWeb(options))`: serves the session routes under `options.path` (default `/session`). */
export function bidiWeb<User = unknown, State extends object = Record<string, unknown>, In = unknown, Out = unknown>(
  optionsOrServer: OptionsOrServer<User, State, In, Out> = {},
): BidiKoaMiddleware<User, State, Out> {
  return toMiddleware(optionsOrServer, (handle) => async (ctx: Context, next: Next) => {
    // A body parser mounted before us (koa-bodyparser, @koa/bodyparser) leaves the body on ctx.request.
    const { rawBody, body } = ctx.request as { rawBody?: unknown; body?: unknown };
    if (await handle(ctx.req, ctx.res, ctx, typeof rawBody === 'string' ? rawBody : body)) ctx.respond = false;
    else await next();
  });
}

export * from '../core/index';
