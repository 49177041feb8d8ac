/**
 * Public types of the bidiweb client.
 *
 * @packageDocumentation
 */
import type { AnnouncedLimits } from '../wire';
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
 * - `INVALID_REQUEST`: the client could not make a request at all, a
 *   programmer error that no retry fixes: a `headers` function returned an
 *   invalid header name or value, or the fetch implementation refused the URL
 *   or a header (`ERR_INVALID_URL`, `ERR_INVALID_CHAR`, ...). The reason names
 *   the method, the URL and the header (never its value).
 * - `RETRY_EXHAUSTED`: a request kept failing transiently past the retry
 *   budget (`retry.maxAttempts` / `retry.maxElapsedMs`); the reason names the
 *   request and its last error.
 */
export type CloseCode =
  | 'CLIENT'
  | 'SERVER'
  | 'EXPIRED'
  | 'SESSION_LOST'
  | 'SESSION_CLOSED'
  | 'REJECTED'
  | 'PROTOCOL_ERROR'
  | 'INVALID_REQUEST'
  | 'RETRY_EXHAUSTED';

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

/**
 * The server's limits, from the open response (`limits`; each field is
 * described in src/wire and docs/PROTOCOL.md). The first six are always
 * there (the server's defaults stand in for any an older server left out);
 * the others only when the server announced them, and the client relies on
 * them only then.
 */
export interface ServerLimits extends Pick<AnnouncedLimits, AlwaysAnnounced>, Partial<Omit<AnnouncedLimits, AlwaysAnnounced>> {}

/** The limits every server has announced since the first release. */
type AlwaysAnnounced = 'maxBodyBytes' | 'maxMessageBytes' | 'maxMessagesPerRequest' | 'inboundWindow' | 'maxWait' | 'idleTimeout';

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

/**
 * Backoff settings (exponential backoff with full jitter) and the retry
 * budget. The budget counts per kind of request (open, send, watch): a run of
 * consecutive transient failures of one kind, ended by any success of that
 * kind. When a run exceeds the budget the session closes with
 * `RETRY_EXHAUSTED` and every pending `send()` rejects with it.
 */
export interface RetryOptions {
  /** Upper bound of the first delay (the delay is uniformly random in [0, bound]). Default 250. */
  initialDelayMs?: number;
  /** Cap of the bound, which doubles after every consecutive failure. Default 10000. */
  maxDelayMs?: number;
  /**
   * Most attempts of one request in a row, the first included (`1`: never
   * retry), like Socket.IO's `reconnectionAttempts` (which counts the retries
   * only). Default `Infinity`: the time budget decides.
   */
  maxAttempts?: number;
  /**
   * Longest run of failures of one kind of request: no retry starts later
   * than this after the run's first failure, so the session closes at most
   * this plus `requestTimeoutMs` after it. Default 300000 (5 minutes): longer
   * than a deploy, a server restart or a network switch, and than the
   * server's default `idleTimeout` (2 minutes), after which an unreachable
   * session is expired on the server anyway. A server's `Retry-After` that
   * reaches past it ends the run too. `Infinity` retries forever.
   */
  maxElapsedMs?: number;
}

/**
 * Which transport carries a session's sends and watches (the open and the close are
 * always plain HTTP requests).
 *
 * - `'http'` (default): HTTP requests (plain or streaming watches, see `stream`).
 * - `'websocket'`: one WebSocket per session to `{url}/ws` (served by `bidiweb/ws`'s
 *   `attach`); a socket that fails or dies fails its requests like a dropped connection,
 *   and they are retried over a new socket, with backoff, from the same seqs and acks.
 * - `'auto'`: WebSocket when one becomes ready within `connectTimeoutMs`, else HTTP (an
 *   `error` event says so); a socket is tried again in the background every 30 s, and
 *   used once it is ready. Switching never loses, repeats or reorders a message.
 */
export type TransportMode = 'auto' | 'websocket' | 'http';

/** The part of a WebSocket (the browser's, Node 22's global one, or the `ws` package's) the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  /** Bytes passed to `send()` not yet handed to the network (read for back-pressure; taken as 0 when absent). */
  readonly bufferedAmount?: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/** A WebSocket class: the global `WebSocket`, or the `ws` package's `WebSocket` in Node 20. */
export type WebSocketConstructorLike = new (url: string, protocols?: string | string[], options?: { headers?: Record<string, string> }) => WebSocketLike;

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
  /** Which transport carries sends and watches: `'http'` (default), `'websocket'` or `'auto'`; see {@link TransportMode}. */
  transport?: TransportMode;
  /**
   * The WebSocket class for `transport: 'websocket' | 'auto'`. Default: the global
   * `WebSocket` (browsers, Node 22). In Node 20 pass the `ws` package's `WebSocket`; an injected class also
   * gets the static `headers` on the upgrade (a browser's WebSocket cannot send headers:
   * there the upgrade carries cookies only, and the session id goes in the first frame).
   */
  WebSocket?: WebSocketConstructorLike;
  /** How long a new socket may take to be ready (its first frame from the server), ms. Default 5000. */
  connectTimeoutMs?: number;
  /** Maximum concurrent send POSTs. Default 4. */
  maxInflight?: number;
  /**
   * Backoff for network errors, timeouts, 5xx, 408 and 429 (429 honours
   * `Retry-After`), and the retry budget after which the session closes with
   * `RETRY_EXHAUSTED` (default: 5 minutes of failures in a row).
   */
  retry?: RetryOptions;
  /**
   * A message that was POSTed and answered `200` but is still unacked after
   * this many ms is resent; the interval doubles on each resend of the same
   * message, capped at `max(resendAfterMs, retry.maxDelayMs)` and, when the
   * server announces its delivery lease (`limits.leaseMs`), at
   * `max(resendAfterMs, leaseMs)`: after a server instance dies mid-delivery,
   * delivery resumes with the first resend after its lease ran out. Default 2000.
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
  /**
   * After `SESSION_LOST` (the server answered `404 UNKNOWN_SESSION`: the
   * store lost the session, or it expired long ago), open a new session on
   * the same URL with the same options (`headers`, `meta`, ...) instead of
   * closing: this object lives on with a new `id`, and its listeners stay.
   * The lost session's messages are gone, not carried over:
   *
   * - `send()`s of the lost session not yet acked reject with `SESSION_LOST`
   *   and are **not** resent into the new session (the server may or may not
   *   have handled them); `send()`s made after the loss go to the new session;
   * - server messages of the lost session not yet delivered are lost; the new
   *   session's server seqs (`message`'s `seq`) start again at 1;
   * - the server's `onOpen` runs again (with the same `meta`), as for any open.
   *
   * Events: `state` `'connecting'` at the loss; once the new session is open,
   * `state` `'open'`, then `reopen` ({@link ReopenInfo}), then `open`. No
   * `close` event for the lost session. If the new open fails for good
   * (`REJECTED`, `RETRY_EXHAUSTED`, ...) the session closes with that code.
   * Sessions lost again before one watch succeeded (a store that loses every
   * session, e.g. several instances on the in-memory store behind a balancer)
   * are reopened with backoff, within the retry budget of `open`. Other
   * close codes (`EXPIRED`, `SERVER`, ...) never reopen. Default `false`.
   */
  reopen?: boolean;
}

/** The argument of the `reopen` event: what was lost with the old session. */
export interface ReopenInfo {
  /** Why the old session ended (code `SESSION_LOST`, with `status` and `errorCode`). */
  lost: CloseEvent;
  /** `send()`s of the old session that were rejected with `SESSION_LOST` (not resent). */
  rejected: number;
  /** Server messages the old session delivered (`message`'s `seq` starts again at 1). */
  delivered: number;
  /** Reopens in a row without a successful watch in between (1 normally). */
  attempt: number;
}

/**
 * The events of a session and their listener arguments.
 *
 * - `open()`: the session is open (`session.id` is set); with `reopen: true`,
 *   again after each reopen (after `reopen`).
 * - `message(data, { seq })`: a server message, in order, exactly once.
 * - `close(event)`: the session ended; fires exactly once.
 * - `error(err)`: a transient error (the client retries, within the retry
 *   budget) or a listener that threw (`err.code === 'LISTENER_ERROR'`).
 *   Never fatal by itself: what ends the session is the `close` event.
 * - `state(state)`: every state change.
 * - `retry(info)`: a request failed transiently and will be retried after `info.delayMs`.
 * - `reopen(info)`: with `reopen: true`, a lost session was replaced by a new one (see {@link ReopenInfo}).
 */
export interface ClientEvents<TIn = unknown> {
  open: [];
  message: [data: TIn, info: MessageInfo];
  close: [event: CloseEvent];
  error: [error: BidiClientError];
  state: [state: SessionState];
  retry: [info: RetryInfo];
  reopen: [info: ReopenInfo];
}
