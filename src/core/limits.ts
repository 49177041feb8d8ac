import { BidiError } from './errors';
import { type AnnouncedLimits, DEFAULT_ANNOUNCED_LIMITS as WIRE } from '../wire';

export { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_LEASE_MS, DEFAULT_WAIT_MS, MAX_WAIT_CAP_MS } from '../wire';
export type { AnnouncedLimits } from '../wire';

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

/** The bounds a client sees come from the wire module (the client assumes the same defaults); the rest are the server's own. */
export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxBodyBytes: WIRE.maxBodyBytes,
  maxMessageBytes: WIRE.maxMessageBytes,
  maxMessagesPerRequest: WIRE.maxMessagesPerRequest,
  inboundWindow: WIRE.inboundWindow,
  inboundBufferBytes: WIRE.inboundBufferBytes,
  maxUnackedMessages: WIRE.maxUnackedMessages,
  maxUnackedBytes: WIRE.maxUnackedBytes,
  maxMessagesPerResponse: WIRE.maxMessagesPerResponse,
  maxResponseBytes: WIRE.maxResponseBytes,
  maxJsonDepth: WIRE.maxJsonDepth,
  maxSessions: 100_000,
  maxSessionDataBytes: 64 * 1024,
  groupLogEntries: 1024,
  groupLogMs: 10 * 60 * 1000,
});


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

/**
 * The open response's `limits`: every bound a client must respect or plan for
 * (see `AnnouncedLimits` in src/wire), from the server's limits and timings.
 */
export function announcedLimits(limits: Limits, timing: { maxWait: number; idleTimeout: number; leaseMs: number }): AnnouncedLimits {
  return {
    maxBodyBytes: limits.maxBodyBytes,
    maxMessageBytes: limits.maxMessageBytes,
    maxMessagesPerRequest: limits.maxMessagesPerRequest,
    inboundWindow: limits.inboundWindow,
    inboundBufferBytes: limits.inboundBufferBytes,
    maxMessagesPerResponse: limits.maxMessagesPerResponse,
    maxResponseBytes: limits.maxResponseBytes,
    maxUnackedMessages: limits.maxUnackedMessages,
    maxUnackedBytes: limits.maxUnackedBytes,
    maxJsonDepth: limits.maxJsonDepth,
    maxWait: timing.maxWait,
    idleTimeout: timing.idleTimeout,
    leaseMs: timing.leaseMs,
  };
}
