/**
 * One error class for everything bidiweb reports, with a stable `code`.
 * HTTP statuses are decided here and nowhere else.
 */
export type BidiErrorCode =
  | 'BAD_REQUEST'
  | 'UNSUPPORTED_VERSION'
  | 'INVALID_ACK'
  | 'MISSING_SESSION_ID'
  | 'UNAUTHORIZED'
  | 'FORBIDDEN'
  | 'CORS_FORBIDDEN'
  | 'REJECTED'
  | 'UNKNOWN_SESSION'
  | 'NOT_FOUND'
  | 'METHOD_NOT_ALLOWED'
  | 'SESSION_CLOSED'
  | 'BODY_TOO_LARGE'
  | 'MESSAGE_TOO_LARGE'
  | 'TOO_MANY_MESSAGES'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'SEQ_OUT_OF_WINDOW'
  | 'TOO_MANY_SESSIONS'
  | 'TOO_MANY_OPENS'
  | 'SEND_WINDOW_FULL'
  | 'SEND_TIMEOUT'
  | 'STORE_UNAVAILABLE'
  | 'LEASE_LOST'
  | 'INVALID_OPTIONS'
  | 'INTERNAL';

const STATUS: Record<BidiErrorCode, number> = {
  BAD_REQUEST: 400,
  UNSUPPORTED_VERSION: 400,
  INVALID_ACK: 400,
  MISSING_SESSION_ID: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  CORS_FORBIDDEN: 403,
  REJECTED: 403,
  UNKNOWN_SESSION: 404,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  SESSION_CLOSED: 410,
  BODY_TOO_LARGE: 413,
  MESSAGE_TOO_LARGE: 413,
  TOO_MANY_MESSAGES: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  SEQ_OUT_OF_WINDOW: 429,
  TOO_MANY_SESSIONS: 429,
  // One client key opened too many sessions lately (the open rate limit): it retries after Retry-After.
  TOO_MANY_OPENS: 429,
  // Server-side send() failures: never sent to a client as such.
  SEND_WINDOW_FULL: 503,
  SEND_TIMEOUT: 503,
  // A handler's send that rode on a delivery whose lease was lost (the message is delivered again elsewhere).
  LEASE_LOST: 503,
  // The store could not serve the request now (e.g. a watch's wake-up subscription was not
  // confirmed in time): sent to clients as is, with Retry-After; they retry.
  STORE_UNAVAILABLE: 503,
  INVALID_OPTIONS: 500,
  INTERNAL: 500,
};

export interface BidiErrorOptions {
  /** Override the status (only `REJECTED`, `UNAUTHORIZED` and `FORBIDDEN` take one from the app). */
  status?: number;
  /** Seconds, sent as `Retry-After` with 429s. */
  retryAfter?: number;
  cause?: unknown;
}

export class BidiError extends Error {
  override readonly name = 'BidiError';
  readonly code: BidiErrorCode;
  readonly status: number;
  readonly retryAfter?: number;

  constructor(code: BidiErrorCode, message: string, options: BidiErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.status = options.status ?? STATUS[code];
    this.retryAfter = options.retryAfter;
  }

  /** The JSON body every error response carries. */
  toJSON(): { error: { code: BidiErrorCode; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

/**
 * Thrown from `onOpen` to refuse a session: `throw reject(401, 'login first')`.
 * The status must be a 4xx.
 */
export function reject(status: number, message = 'session rejected'): BidiError {
  if (!Number.isInteger(status) || status < 400 || status > 499) {
    throw new BidiError('INVALID_OPTIONS', `reject() takes a 4xx status, got ${status}`);
  }
  return new BidiError('REJECTED', message, { status });
}

/** Anything thrown becomes a BidiError; unknown throws are INTERNAL and keep their cause. */
export function toBidiError(err: unknown): BidiError {
  if (err instanceof BidiError) return err;
  return new BidiError('INTERNAL', 'internal error', { cause: err });
}

/** A session the store does not have, as clients are told (send, watch and close alike). */
export function unknownSession(): BidiError {
  return new BidiError('UNKNOWN_SESSION', 'unknown session: it never existed, expired, or the store lost it');
}
