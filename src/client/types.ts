/**
 * Public types of the bidiweb client.
 *
 * @packageDocumentation
 */
import type { BidiClientError } from './errors';

/**
 * The life cycle of a {@link BidiClientSession}.
 *
 * - `connecting`: the open request has not succeeded yet (it is retried on
 *   network errors, 5xx and 429). `send()` queues messages.
 * - `open`: the session exists on the server; messages flow both ways.
 * - `closing`: `close()` was called; the client waits (bounded) for its sent
 *   messages to be acked, then sends `DELETE`. `send()` rejects at once.
 * - `closed`: final. The `close` event has fired exactly once.
 */
export type SessionState = 'connecting' | 'open' | 'closing' | 'closed';

/**
 * Why a session ended (the `code` of a {@link CloseEvent}).
 *
 * - `CLIENT`: `close()` was called on this client.
 * - `SERVER`: the server closed the session (the app called `session.close(reason)`);
 *   `reason` is the server's reason.
 * - `EXPIRED`: the server expired the session after its idle timeout.
 * - `SESSION_LOST`: the server answered `404 UNKNOWN_SESSION`: it no longer
 *   knows the session (expired long ago, or the store lost it, e.g. the
 *   in-memory store after a restart).
 * - `SESSION_CLOSED`: the server answered `410 SESSION_CLOSED` and never showed
 *   this client the close marker of the session.
 * - `REJECTED`: the open request was refused with a 4xx (e.g. by the app's open
 *   hook); `status` and `errorCode` tell which.
 * - `PROTOCOL_ERROR`: any other non-retryable 4xx (bad request, per-request
 *   auth refused, body too large, ...); `status` and `errorCode` tell which.
 */
export type CloseCode =
  | 'CLIENT'
  | 'SERVER'
  | 'EXPIRED'
  | 'SESSION_LOST'
  | 'SESSION_CLOSED'
  | 'REJECTED'
  | 'PROTOCOL_ERROR';

/** The argument of the `close` event. */
export interface CloseEvent {
  /** Why the session ended. */
  code: CloseCode;
  /** Human-readable explanation (for `SERVER`: the server's reason verbatim). */
  reason: string;
  /** HTTP status of the response that ended the session, when one did. */
  status?: number;
  /** The server's `error.code` of the response that ended the session, when one did. */
  errorCode?: string;
}

/** The second argument of the `message` event. */
export interface MessageInfo {
  /** Sequence number of the message in the server → client stream (1, 2, 3, …). */
  seq: number;
}

/** Which kind of request a retry or transient error concerns. */
export type Operation = 'open' | 'send' | 'watch' | 'close';

/** The argument of the `retry` event. */
export interface RetryInfo {
  /** Which request is retried. */
  op: Operation;
  /** Consecutive failed attempts of this kind of request (1 for the first retry). */
  attempt: number;
  /** How long the client waits before retrying. */
  delayMs: number;
  /** The transient error that caused the retry (also emitted as `error`). */
  error: BidiClientError;
}

/** The server's limits, from the open response (`limits`). */
export interface ServerLimits {
  maxBodyBytes: number;
  maxMessageBytes: number;
  maxMessagesPerRequest: number;
  inboundWindow: number;
  maxWait: number;
  idleTimeout: number;
  /**
   * Bytes of client messages the server buffers behind a gap (a 429
   * SEQ_OUT_OF_WINDOW above it). Optional: the client honours it when the
   * server sends it.
   */
  inboundBufferBytes?: number;
}

/** Request headers: a plain object, or a (possibly async) function that returns one. */
export type HeadersOption =
  | Record<string, string | undefined>
  | (() => Record<string, string | undefined> | Promise<Record<string, string | undefined>>);

/** The subset of a fetch `Response` that the client uses. */
export interface FetchResponseLike {
  readonly status: number;
  readonly headers: { get(name: string): string | null };
  text(): Promise<string>;
  /**
   * The body as a stream (a fetch `Response.body` fits). Only a streaming
   * watch (`stream: true`) reads it, to see each frame as it arrives; without
   * it the frames are read when the response ends.
   */
  readonly body?: { getReader(): FetchBodyReader } | null;
}

/** The subset of a `ReadableStreamDefaultReader` the client uses. */
export interface FetchBodyReader {
  read(): Promise<{ done: boolean; value?: Uint8Array }>;
  cancel(reason?: unknown): Promise<void>;
}

/** The subset of the `RequestInit` that the client passes to fetch. */
export interface FetchInitLike {
  method: string;
  headers: Record<string, string>;
  body?: string;
  signal: AbortSignal;
  cache?: 'no-store';
  /** Set on `DELETE`: the browser still sends it when the page is being unloaded. */
  keepalive?: boolean;
}

/** A fetch implementation (`globalThis.fetch` fits). */
export type FetchLike = (url: string, init: FetchInitLike) => Promise<FetchResponseLike>;

/** Backoff settings: exponential backoff with full jitter. */
export interface RetryOptions {
  /** Upper bound of the first delay (the delay is uniformly random in [0, bound]). Default 250. */
  initialDelayMs?: number;
  /** Cap of the bound, which doubles after every consecutive failure. Default 10000. */
  maxDelayMs?: number;
}

/** Options of {@link open}. */
export interface ClientOptions {
  /**
   * Extra request headers (e.g. `Authorization`). A function is called before
   * every request, so tokens can rotate; it may be async. If it throws, the
   * request counts as failed with a transient error and is retried.
   * `Content-Type` and `Bidi-Sid` are set by the client.
   */
  headers?: HeadersOption;
  /** Any JSON value, sent once in the open request (`meta`); the server's open hook sees it. */
  meta?: unknown;
  /**
   * fetch implementation; when given, every request goes through it. Default:
   * in Node (≥ 20.16, not under jsdom), a built-in transport over `node:http`
   * / `node:https` with keep-alive agents shared by all sessions of the
   * process — about a third of the client CPU per request of Node's global
   * `fetch` (undici); elsewhere (browsers, workers, runtimes without
   * `process.getBuiltinModule`) `globalThis.fetch`.
   */
  fetch?: FetchLike;
  /** Watch wait in ms. Default: the server's `wait` from the open response (clamped to `limits.maxWait`). */
  wait?: number;
  /**
   * Streaming watch: ask the server (`stream=1`) to keep each watch response
   * open and write every new batch of messages on it as a frame, until the
   * wait ends, instead of answering once per batch: fewer requests, and
   * pushes arrive with the latency of one write instead of one request.
   *
   * - `'auto'` (default): stream, and check every stream: it must show a
   *   byte (a frame, or the heartbeat the server writes after `heartbeatMs`,
   *   announced in `Bidi-Heartbeat`) within that heartbeat + 2 s of the
   *   request (7 s without an announced heartbeat). One that does not is
   *   held back by something in between (a proxy or platform that buffers
   *   responses, or a server that does not stream): it is aborted, an
   *   `error` (`TIMEOUT`) is emitted, and the session watches without
   *   streaming from then on (`session.streaming` turns `false`). Nothing is
   *   lost: the next watch asks again from the same ack. Behind a buffering
   *   proxy a session's first pushes thus wait up to that limit once.
   * - `true`: always stream, unchecked (nothing in between buffers, or it is
   *   told not to, e.g. nginx `proxy_buffering off`, which the server's
   *   `X-Accel-Buffering: no` also asks for).
   * - `false`: never stream (one response per batch).
   *
   * A server without streaming answers the plain way, which the client
   * handles as usual. A stream that announces heartbeats and then stays
   * silent for 3 of them plus 1 s is taken as dead (its upstream died behind
   * a proxy that kept the connection): it is aborted and the client watches
   * again (a `TIMEOUT` error, a `watch` retry).
   */
  stream?: boolean | 'auto';
  /** Maximum concurrent send POSTs. Default 4. */
  maxInflight?: number;
  /** Backoff for network errors, 5xx and 429 (429 honours `Retry-After`). */
  retry?: RetryOptions;
  /**
   * A message that was POSTed and answered `200` but is still unacked after
   * this many ms is resent; the interval doubles on each resend of the same
   * message (capped at `max(resendAfterMs, retry.maxDelayMs)`). Default 2000.
   */
  resendAfterMs?: number;
  /** How long `close()` waits for unacked messages before it sends `DELETE` anyway. Default 5000. */
  closeTimeoutMs?: number;
  /** Timeout of open, send and close requests. Default 30000. The watch times out at its wait + 10 s. */
  requestTimeoutMs?: number;
  /**
   * In a browser, end the session when its page is unloaded (the `pagehide`
   * event of a page that is not kept in the back/forward cache): the client
   * sends `DELETE` at once, as a `keepalive` request the browser delivers
   * after the page is gone, and closes with code `CLIENT` — so the server's
   * `onClose` runs now rather than after the idle timeout. Messages not yet
   * acked are dropped (a closing page cannot wait for them). A `headers`
   * function must return synchronously (or from a cache) for that request to
   * carry its headers in time. Default `true`; ignored outside browsers.
   */
  closeOnPageHide?: boolean;
}

/**
 * The events of a session and their listener arguments.
 *
 * - `open()`: the session is open (`session.id` is set).
 * - `message(data, { seq })`: a server message, in order, exactly once.
 * - `close(event)`: the session ended; fires exactly once.
 * - `error(err)`: a transient error (the client retries) or a listener that
 *   threw (`err.code === 'LISTENER_ERROR'`). Never fatal by itself.
 * - `state(state)`: every state change.
 * - `retry(info)`: a request failed transiently and will be retried after `info.delayMs`.
 */
export interface ClientEvents<TIn = unknown> {
  open: [];
  message: [data: TIn, info: MessageInfo];
  close: [event: CloseEvent];
  error: [error: BidiClientError];
  state: [state: SessionState];
  retry: [info: RetryInfo];
}
