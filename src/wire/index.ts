/**
 * The bidiweb wire protocol, version 1: every name and number that the server
 * (src/core) and the client (src/client) must agree on, stated once.
 * docs/PROTOCOL.md says the same in prose; together they are enough to write
 * a client in another language.
 *
 * This module imports nothing: the browser client bundles it (the client's
 * zero-dependency rule allows this module and nothing else of the server), and
 * core runs on edge runtimes. scripts/check-core-imports.mjs keeps it so.
 */

/** The protocol version: an open request sends `{"v":1}`; the open response repeats it. */
export const PROTOCOL_VERSION = 1;

/**
 * The request header that carries the session id on every request after open.
 * Never the URL: access logs, proxies and `Referer` would record a bearer
 * secret. Header names are case-insensitive; servers look it up lower-cased.
 */
export const SID_HEADER = 'Bidi-Sid';

/** A session id: 22 characters of base64url holding 128 bits from a CSPRNG (a bearer secret). */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9_-]{22}$/;

/** Every request body and every non-streaming response body (errors too, when the server wrote them). */
export const JSON_MEDIA_TYPE = 'application/json';

/**
 * A streaming watch's body (`stream=1`): one watch body per line. A client
 * compares the media type only: a server or adapter that does not stream
 * answers with {@link JSON_MEDIA_TYPE} instead.
 */
export const STREAM_MEDIA_TYPE = 'application/x-ndjson';
/** The `Content-Type` a streaming watch is sent with. */
export const STREAM_CONTENT_TYPE = `${STREAM_MEDIA_TYPE}; charset=utf-8`;

/** The response header of a streaming watch that announces its heartbeat interval, ms (absent: no heartbeats). */
export const HEARTBEAT_HEADER = 'Bidi-Heartbeat';
/**
 * A heartbeat on an idle stream: an empty line. NDJSON readers skip empty
 * lines, and no frame is ever empty, so it is never taken for a watch body.
 */
export const HEARTBEAT_FRAME = '\n';
/**
 * The server's default heartbeat interval. 5 s: a client then finds a dead
 * stream within 16 s (3 heartbeats + 1 s), well inside the default 25 s wait,
 * and the beat stays far below the idle cut of common proxies (30–100 s).
 */
export const DEFAULT_HEARTBEAT_MS = 5_000;
/**
 * A stream announced with `Bidi-Heartbeat: H` from which no byte came for
 * `MISSED_HEARTBEATS × H + SILENCE_MARGIN_MS` is dead (its upstream died behind
 * a proxy that keeps the connection open): abort it and watch again.
 */
export const MISSED_HEARTBEATS = 3;
/** Timer slack, a stalled event loop, a retransmitted packet: never abort a live stream for those. */
export const SILENCE_MARGIN_MS = 1_000;

/** The watch wait the server announces by default (`wait` in the open response). */
export const DEFAULT_WAIT_MS = 25_000;
/** The longest watch wait: serverless platforms cut requests at 60 s; stay clearly below. */
export const MAX_WAIT_CAP_MS = 55_000;
/** A session with no request for this long expires (default `idleTimeout`). */
export const DEFAULT_IDLE_TIMEOUT_MS = 120_000;
/**
 * The default delivery lease (`leaseMs`): how long a crashed server instance
 * can hold up delivery of a session's client messages. Nothing on the server
 * resumes that delivery when the lease runs out: the client's next send (a
 * resend of a message not yet acked is enough) does.
 */
export const DEFAULT_LEASE_MS = 5_000;
/**
 * A watch takes up to its `wait`, plus network and server time: a client
 * gives it `wait` + this margin before it times it out. (A send may take as
 * long as the delivery it runs — see PROTOCOL.md, "Timeouts" — so it gets a
 * timeout of its own, far above a typical handler's run.)
 */
export const WATCH_TIMEOUT_MARGIN_MS = 10_000;

/**
 * What the open response announces in `limits`: every bound a client must
 * respect or plan for. Older servers announce fewer fields; a client assumes
 * {@link DEFAULT_ANNOUNCED_LIMITS} for any field missing.
 */
export interface AnnouncedLimits {
  /** Request body size, bytes (413 BODY_TOO_LARGE). */
  maxBodyBytes: number;
  /** One message's JSON, bytes, both directions (413 MESSAGE_TOO_LARGE). */
  maxMessageBytes: number;
  /** Messages in one send request (413 TOO_MANY_MESSAGES). */
  maxMessagesPerRequest: number;
  /** A client message's seq may be at most this far above the client → server ack (429 SEQ_OUT_OF_WINDOW). */
  inboundWindow: number;
  /**
   * Bytes of client messages the server buffers behind a gap (429 SEQ_OUT_OF_WINDOW past it),
   * unless the request fills the gap: send the oldest unacked message first and this never wedges.
   */
  inboundBufferBytes: number;
  /** Messages in one watch response (the client watches again for the rest). */
  maxMessagesPerResponse: number;
  /**
   * Bytes of messages in one watch response, plain or one whole stream: messages are added until
   * they reach it, so a response carries less than `maxResponseBytes + maxMessageBytes`, and at
   * least one message when one is due.
   */
  maxResponseBytes: number;
  /**
   * Server → client messages the server keeps until the client acks them. A server `send()`
   * past it fails or waits, so a client acks (its next watch) promptly. A stream ends after about
   * `min(maxMessagesPerResponse, maxUnackedMessages / 2)` messages, for that next watch to ack them.
   */
  maxUnackedMessages: number;
  /** The same in bytes; a stream ends after about `min(maxResponseBytes, maxUnackedBytes / 2)` bytes. */
  maxUnackedBytes: number;
  /** Nesting depth of a message's data and of `meta` (400 BAD_REQUEST). */
  maxJsonDepth: number;
  /** The longest watch wait, ms: a larger `wait` is capped to it. */
  maxWait: number;
  /** A session with no request for this long expires, ms. Always above `maxWait`. */
  idleTimeout: number;
  /**
   * The delivery lease, ms. After a server instance dies while delivering, the session's
   * buffered client messages wait until this runs out *and* a send of the client arrives: a
   * client resends its unacked messages at an interval of at most about `leaseMs` (never gives up
   * while one is unacked), so delivery resumes soon after the lease.
   */
  leaseMs: number;
}

/** The server's defaults, which a client assumes for any field an open response leaves out. */
export const DEFAULT_ANNOUNCED_LIMITS: Readonly<AnnouncedLimits> = Object.freeze({
  maxBodyBytes: 1024 * 1024,
  maxMessageBytes: 256 * 1024,
  maxMessagesPerRequest: 100,
  inboundWindow: 256,
  inboundBufferBytes: 4 * 1024 * 1024,
  maxMessagesPerResponse: 500,
  maxResponseBytes: 256 * 1024,
  maxUnackedMessages: 1024,
  maxUnackedBytes: 4 * 1024 * 1024,
  maxJsonDepth: 64,
  maxWait: MAX_WAIT_CAP_MS,
  idleTimeout: DEFAULT_IDLE_TIMEOUT_MS,
  leaseMs: DEFAULT_LEASE_MS,
});

/**
 * Byte length of the UTF-8 encoding of `s`, as `TextEncoder` would produce it,
 * without allocating: a lone surrogate (no partner) encodes as U+FFFD, 3 bytes.
 * Every byte limit (`maxMessageBytes`, `maxResponseBytes`, the unacked bounds)
 * counts these bytes.
 */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

// --- bodies -------------------------------------------------------------------------------------
// Types only (nothing at run time): what each request and response carries, with the duties they
// imply for a client. docs/PROTOCOL.md has the full rules.

/** `POST {base}`: open a session. */
export interface OpenRequestBody {
  v: typeof PROTOCOL_VERSION;
  /** Any JSON, handed to the app's open hook. */
  meta?: unknown;
}

/** `201` to an open. */
export interface OpenResponseBody {
  /** The session id, a bearer secret: send it only in {@link SID_HEADER}, never in a URL. */
  sid: string;
  v: typeof PROTOCOL_VERSION;
  /** The watch wait to ask for, ms. */
  wait: number;
  /** Ignore fields you do not know; assume {@link DEFAULT_ANNOUNCED_LIMITS} for missing ones. */
  limits: AnnouncedLimits;
}

/**
 * `POST {base}/send`. Keep every message until an ack covers it and resend it (same seq, same
 * data) while none does, at an interval capped at about `limits.leaseMs`: a resend is not a
 * no-op. Any send that finds the next message buffered and the delivery lease free starts its
 * delivery, and after a server instance died mid-delivery nothing else does.
 *
 * A send runs the app's handler over every message it can deliver, including ones other requests
 * buffer meanwhile, so it may take as long as that chain of handlers: a client's timeout on it is
 * not a failure of its messages (they stay unacked and are resent; the server finishes the
 * delivery regardless).
 */
export interface SendRequestBody {
  /** `[seq, data]` pairs, any order; messages the server already has are not delivered again. */
  msgs?: Array<[seq: number, data: unknown]>;
  /** Ack of the server → client stream. Above the last seq the server assigned: 400 INVALID_ACK (as for a watch). */
  ack?: number;
}

/** `200` to a send: every client message `1..ack` reached the app's handler. Not covered: buffered or in delivery, not lost. */
export interface SendResponseBody {
  ack: number;
}

/**
 * `200` to `GET {base}/watch?ack=N&wait=MS` (and each frame of a streaming watch). Give a watch
 * its `wait` plus {@link WATCH_TIMEOUT_MARGIN_MS} before timing it out.
 */
export interface WatchResponseBody {
  /** Server messages `N+1, N+2, …` in order; empty when the wait ended. */
  msgs: Array<[seq: number, data: unknown]>;
  /** The client → server ack, as in a send response. */
  ack: number;
  /** The session is closing: deliver every message below `seq`, then end with `reason`. */
  close?: { seq: number; reason: string };
  /**
   * A newer watch of this session took over; the body carries nothing. Not only two clients
   * sharing a sid: a proxy that sends a request twice (a retried or mirrored GET) supersedes a
   * single client's own watch, many times per run. Watch again at once; after two in a row, back
   * off (exponential, with jitter) until an answer that is not superseded. Never end the session
   * for it.
   */
  superseded?: true;
}

/**
 * Every error the server itself writes. Errors written by something in between (a balancer's 502
 * or 504, a proxy's 413, a platform's timeout) may have no body or an HTML one: take `code` only
 * from a JSON body of this shape, else go by the status alone.
 */
export interface ErrorResponseBody {
  error: { code: string; message: string };
}
