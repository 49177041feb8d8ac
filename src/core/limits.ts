import { BidiError } from './errors';

/** Every bound bidiweb enforces. All are configurable; see README "Configuration". */
export interface Limits {
  /** Request body size, bytes (413 BODY_TOO_LARGE). */
  maxBodyBytes: number;
  /** One message's JSON, bytes, both directions (413 MESSAGE_TOO_LARGE / send() throws). */
  maxMessageBytes: number;
  /** Messages in one send request (413 TOO_MANY_MESSAGES). */
  maxMessagesPerRequest: number;
  /** A client message may be at most this many seqs ahead of the ack (429 SEQ_OUT_OF_WINDOW). */
  inboundWindow: number;
  /** Bytes of client messages buffered behind a gap, per session (429 SEQ_OUT_OF_WINDOW). */
  inboundBufferBytes: number;
  /** Unacked server → client messages per session before send() fails or waits. */
  maxUnackedMessages: number;
  /** Unacked server → client bytes per session before send() fails or waits. */
  maxUnackedBytes: number;
  /** Messages returned by one watch response (the client watches again for more). */
  maxMessagesPerResponse: number;
  /**
   * Bytes of messages in one watch response, plain or streamed (the client watches again for
   * more): messages are added until they reach it, so a response carries less than
   * `maxResponseBytes + maxMessageBytes`, and always at least one message. Bounds what a watch
   * that is never read can hold.
   */
  maxResponseBytes: number;
  /**
   * Nesting depth of a client message's data and of `meta` (400 BAD_REQUEST). Checked on the
   * request text before it is parsed, so deeper JSON never reaches a handler.
   */
  maxJsonDepth: number;
  /** Open sessions in the store (429 TOO_MANY_SESSIONS). */
  maxSessions: number;
  /** Bytes of JSON for `session.user` plus `session.state`. */
  maxSessionDataBytes: number;
  /** Entries a group's log keeps for members that have not pulled them yet (`hub.publish`). */
  groupLogEntries: number;
  /** Longest a group's log keeps an entry, ms. A member that falls further behind is closed ('group-overrun'). */
  groupLogMs: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxBodyBytes: 1024 * 1024,
  maxMessageBytes: 256 * 1024,
  maxMessagesPerRequest: 100,
  inboundWindow: 256,
  inboundBufferBytes: 4 * 1024 * 1024,
  maxUnackedMessages: 1024,
  maxUnackedBytes: 4 * 1024 * 1024,
  maxMessagesPerResponse: 500,
  maxResponseBytes: 256 * 1024,
  maxJsonDepth: 64,
  maxSessions: 100_000,
  maxSessionDataBytes: 64 * 1024,
  groupLogEntries: 1024,
  groupLogMs: 10 * 60 * 1000,
});

export const DEFAULT_WAIT_MS = 25_000;
/** Serverless platforms cut requests at 60 s; stay clearly below. */
export const MAX_WAIT_CAP_MS = 55_000;
export const DEFAULT_IDLE_TIMEOUT_MS = 120_000;

export function resolveLimits(partial: Partial<Limits> = {}): Limits {
  const limits = { ...DEFAULT_LIMITS, ...partial };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new BidiError('INVALID_OPTIONS', `limits.${name} must be a positive integer, got ${String(value)}`);
    }
  }
  if (limits.maxMessageBytes > limits.maxBodyBytes) {
    throw new BidiError('INVALID_OPTIONS', 'limits.maxMessageBytes must not exceed limits.maxBodyBytes');
  }
  return limits;
}
