import type { RequestHandler } from 'express';
import { connectMiddleware, toMiddleware, type BidiMiddleware, type OptionsOrServer } from '../node/middleware';

export type BidiExpressMiddleware<User, State, Out = unknown> = BidiMiddleware<RequestHandler, User, State, Out>;

/** `app.use(bidiWeb(options))`: serves the session routes under `options.path` (default `/session`). */
export function bidiWeb<User = unknown, State extends object = Record<string, unknown>, In = unknown, Out = unknown>(
  optionsOrServer: OptionsOrServer<User, State, In, Out> = {},
): BidiExpressMiddleware<User, State, Out> {
  return toMiddleware(optionsOrServer, connectMiddleware);
}

export * from '../core/index';
