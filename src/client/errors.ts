import type { CloseCode } from './types';

/**
 * What a {@link BidiClientError} is about.
 *
 * - a {@link CloseCode}: the session ended (pending `send()` promises reject
 *   with the close event's code and reason), among them `INVALID_REQUEST` (a
 *   request that cannot be made: no retry) and `RETRY_EXHAUSTED` (the retry
 *   budget is spent); `SESSION_LOST` also rejects the unacked sends of a
 *   session that `reopen: true` replaces;
 * - `NETWORK_ERROR`, `TIMEOUT`, `HTTP_ERROR` (5xx, 429, 408), `BAD_RESPONSE`
 *   (a 2xx whose body is not what the protocol says), `HEADERS_ERROR` (the
 *   `headers` option threw): transient errors, emitted as `error` while the
 *   client retries;
 * - `LISTENER_ERROR`: an event listener threw (`cause` is what it threw);
 * - `INVALID_MESSAGE` (not JSON-serialisable), `MESSAGE_TOO_LARGE` (above the
 *   server's `maxMessageBytes`): `send()` rejected the message without
 *   assigning it a sequence number.
 */
export type BidiErrorCode =
  | CloseCode
  | 'NETWORK_ERROR'
  | 'TIMEOUT'
  | 'HTTP_ERROR'
  | 'BAD_RESPONSE'
  | 'HEADERS_ERROR'
  | 'LISTENER_ERROR'
  | 'INVALID_MESSAGE'
  | 'MESSAGE_TOO_LARGE';

/** The error class of the bidiweb client. `message` equals `reason`. */
export class BidiClientError extends Error {
  override readonly name = 'BidiClientError';
  /** What the error is about; see {@link BidiErrorCode}. */
  readonly code: BidiErrorCode;
  /** Human-readable explanation (same as `message`). */
  readonly reason: string;
  /** HTTP status of the response involved, if any. */
  readonly status?: number;
  /** The server's `error.code` of the response involved, if any. */
  readonly errorCode?: string;

  constructor(
    code: BidiErrorCode,
    reason: string,
    details: { status?: number; errorCode?: string; cause?: unknown } = {},
  ) {
    super(reason, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.reason = reason;
    if (details.status !== undefined) this.status = details.status;
    if (details.errorCode !== undefined) this.errorCode = details.errorCode;
  }
}

/** Internal: thrown by requests and sleeps that were cancelled on purpose. Never escapes the client. */
export class AbortedError extends Error {
  override readonly name = 'AbortedError';
  constructor() {
    super('aborted');
  }
}

/** A short description of anything thrown. */
export function describe(err: unknown): string {
  // Not `instanceof Error`: errors of another realm (node:http's, in a vm or a test runner) count too.
  if (isErrorLike(err)) return err.message || err.name || 'Error';
  try {
    return String(err);
  } catch {
    return 'unknown error';
  }
}

/** An `Error` of any realm: an object with a string `message`. */
export function isErrorLike(err: unknown): err is { message: string; name?: string; code?: unknown; cause?: unknown } {
  return typeof err === 'object' && err !== null && typeof (err as { message?: unknown }).message === 'string';
}
