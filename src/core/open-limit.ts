/**
 * Fair admission: a rate limit on session opens per client key, so one
 * client cannot fill `maxSessions` and lock everyone else out. The limiter
 * lives in the store (a store offers one: `Store.openLimiter`), so every
 * instance and serverless invocation counts against the same budget. The
 * algorithm is `rate-limiter-flexible`'s; core only speaks this interface.
 */
import type { BidiRequest } from './http';

export interface OpenLimiter {
  /** Count one open for `key`: resolves 0 when it may go ahead, else the ms until that key may open again. */
  take(key: string): Promise<number>;
}

export interface OpenLimit {
  /** Opens allowed per client key... */
  opens: number;
  /** ...in this many seconds (a fixed window). */
  perSeconds: number;
}

/** 30 opens per 10 s per client: a page load opens one; one address then holds at most ~3 × idleTimeout/1 s sessions. */
export const DEFAULT_OPEN_LIMIT: Readonly<OpenLimit> = Object.freeze({ opens: 30, perSeconds: 10 });

/** A rate-limiter-flexible limiter (any back end): `consume` resolves, or rejects with a result carrying `msBeforeNext`. */
export interface RateLimiterLike {
  consume(key: string, points?: number): Promise<unknown>;
}

/** Wraps a rate-limiter-flexible limiter (RateLimiterMemory, RateLimiterRedis, ...) as an OpenLimiter. */
export function openLimiterFrom(limiter: RateLimiterLike): OpenLimiter {
  return {
    async take(key) {
      try {
        await limiter.consume(key);
        return 0;
      } catch (err) {
        // Over the limit it rejects with a RateLimiterRes (not an Error); a store failure is an Error.
        const ms = err !== null && typeof err === 'object' && !(err instanceof Error) ? (err as { msBeforeNext?: unknown }).msBeforeNext : undefined;
        if (typeof ms === 'number') return Math.max(1, ms);
        throw err;
      }
    },
  };
}

/**
 * The default client key: the peer's address. Loopback peers get none (no
 * limit): on loopback the peer is a local reverse proxy (every client would
 * share one budget) or a test. Behind a proxy, name the header it sets with
 * the `clientKey` option.
 */
export function defaultClientKey(req: BidiRequest): string | null {
  const a = req.remoteAddress;
  if (!a || a === '::1' || a.startsWith('127.') || a.startsWith('::ffff:127.')) return null;
  return a;
}
