/**
 * Retry helpers: exponential backoff with full jitter, `Retry-After` parsing,
 * and a set of timers that can all be cancelled at once (so that a closed
 * session leaves no timer behind).
 */

/** Longest `Retry-After` the client honours (a larger value is clamped). */
export const MAX_RETRY_AFTER_MS = 5 * 60_000;

/**
 * Exponential backoff with full jitter: the n-th consecutive delay is uniform
 * in `[0, min(maxDelayMs, initialDelayMs * 2^(n-1))]`. A server's
 * `Retry-After` is a lower bound.
 */
export class Backoff {
  /** Consecutive failures since the last `reset()`. */
  attempt = 0;
  /** When the first of those failures was counted (ms since epoch); 0 after `reset()`. */
  since = 0;

  constructor(
    private readonly initialDelayMs: number,
    private readonly maxDelayMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  /** Counts one more failure and returns how long to wait before the next try. */
  next(retryAfterMs?: number): number {
    if (this.attempt++ === 0) this.since = Date.now();
    const bound = Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** Math.min(this.attempt - 1, 40));
    const jittered = Math.floor(this.random() * bound);
    if (retryAfterMs === undefined) return jittered;
    return Math.max(Math.min(retryAfterMs, MAX_RETRY_AFTER_MS), jittered);
  }

  reset(): void {
    this.attempt = 0;
    this.since = 0;
  }
}

/** How long a run of failures may go on (see `RetryOptions.maxAttempts` / `maxElapsedMs`). */
export interface RetryBudget {
  maxAttempts: number;
  maxElapsedMs: number;
}

/**
 * Why the run of failures counted by `backoff` (its `next()` just returned
 * `delayMs`) may not be retried, or `undefined` if it may: `attempt` attempts
 * made, or the retry would start more than `maxElapsedMs` after the run began.
 */
export function overBudget(backoff: Backoff, delayMs: number, budget: RetryBudget, now = Date.now()): string | undefined {
  const elapsed = now - backoff.since;
  if (backoff.attempt >= budget.maxAttempts) {
    return `gave up after ${backoff.attempt} attempt(s) in ${elapsed} ms (retry.maxAttempts ${budget.maxAttempts})`;
  }
  if (elapsed + delayMs > budget.maxElapsedMs) {
    return `gave up after ${backoff.attempt} attempt(s) in ${elapsed} ms (retry.maxElapsedMs ${budget.maxElapsedMs})`;
  }
  return undefined;
}

/**
 * Parses a `Retry-After` header value: delay-seconds or an HTTP date.
 * Returns milliseconds, or `undefined` when absent or unparseable.
 */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (value == null) return undefined;
  const text = value.trim();
  if (text === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

type Handle = ReturnType<typeof setTimeout>;

interface Entry {
  fn: () => void;
  onCancel?: () => void;
  /** A backoff wait that `wake()` may cut short. */
  wakeable: boolean;
}

/** A set of timers that `clear()` cancels all at once, and whose backoff waits `wake()` ends early. */
export class TimerSet {
  private readonly entries = new Map<Handle, Entry>();

  /**
   * Runs `fn` after `ms` (or at `wake()`, if `wakeable`). Returns a function
   * that cancels it (without calling `onCancel`). `clear()` cancels it and
   * calls `onCancel`.
   */
  after(ms: number, fn: () => void, onCancel?: () => void, wakeable = false): () => void {
    const handle = setTimeout(() => {
      this.entries.delete(handle);
      fn();
    }, Math.max(0, ms));
    this.entries.set(handle, { fn, onCancel, wakeable });
    return () => {
      if (this.entries.delete(handle)) clearTimeout(handle);
    };
  }

  /** Runs every wakeable timer now: the reason for its wait (the network) is gone. */
  wake(): number {
    const due = [...this.entries].filter(([, e]) => e.wakeable);
    for (const [handle] of due) {
      this.entries.delete(handle);
      clearTimeout(handle);
    }
    for (const [, e] of due) e.fn();
    return due.length;
  }

  /** Resolves `true` after `ms` (or at `wake()`, if `wakeable`), or `false` as soon as `signal` aborts or `clear()` runs. */
  sleep(ms: number, signal?: AbortSignal, wakeable = false): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      if (signal?.aborted) {
        resolve(false);
        return;
      }
      const onAbort = (): void => {
        cancel();
        resolve(false);
      };
      const cancel = this.after(
        ms,
        () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(true);
        },
        () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(false);
        },
        wakeable,
      );
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Cancels every pending timer. */
  clear(): void {
    const entries = [...this.entries];
    this.entries.clear();
    for (const [handle, entry] of entries) {
      clearTimeout(handle);
      entry.onCancel?.();
    }
  }

  get size(): number {
    return this.entries.size;
  }
}
