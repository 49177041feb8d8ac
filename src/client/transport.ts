/**
 * HTTP plumbing: URLs, headers, timeouts, cancellation, and the
 * classification of responses into success / retry / fatal.
 */
import { onAbort } from './abort-link';
import { parseRetryAfter } from './backoff';
import { AbortedError, BidiClientError, describe, isErrorLike } from './errors';
import { leavesSignalsClean, nodeDefaultFetch } from './node-http';
import type { FetchInitLike, FetchLike, FetchResponseLike, HeadersOption, Operation } from './types';
import { DEFAULT_HEARTBEAT_MS, HEARTBEAT_HEADER, JSON_MEDIA_TYPE, MISSED_HEARTBEATS, SID_HEADER, SILENCE_MARGIN_MS, STREAM_MEDIA_TYPE } from '../wire';
import type { WebSocketChannel } from './websocket';

/** A response, body already read and parsed. */
export interface Reply {
  status: number;
  /** The parsed JSON body, or `undefined` if the body was empty or not JSON. */
  body: unknown;
  /** From `Retry-After`, if present. */
  retryAfterMs?: number;
  /** A streaming watch answered: its frames went to `onFrame`; `body` is undefined. */
  streamed?: boolean;
  /** The request, as error messages name it (`POST http://host/session/send`). */
  request?: string;
}

/** What to do with a reply. */
export type Outcome =
  | { kind: 'ok'; body: Record<string, unknown> }
  | { kind: 'retry'; error: BidiClientError; retryAfterMs?: number }
  | { kind: 'fatal'; status: number; errorCode?: string; message: string }
  /** The request could not be made (`INVALID_REQUEST`): the session ends, nothing is retried. */
  | { kind: 'invalid'; error: BidiClientError };

/** The outcome of an error `Transport.request()` threw (other than {@link AbortedError}). */
export function thrownOutcome(err: unknown): Outcome {
  const error = err instanceof BidiClientError ? err : new BidiClientError('NETWORK_ERROR', describe(err), { cause: err });
  return error.code === 'INVALID_REQUEST' ? { kind: 'invalid', error } : { kind: 'retry', error };
}

export interface RequestSpec {
  method: 'GET' | 'POST' | 'DELETE';
  /** Path below the base URL: `''`, `'/send'` or `'/watch'`. */
  path: '' | '/send' | '/watch';
  query?: Record<string, number>;
  /** JSON text. */
  body?: string;
  sid?: string;
  timeoutMs: number;
  /**
   * Aborting it cancels the request: `request()` then throws {@link AbortedError}.
   * One listener per request is added to it while the request runs: pass a
   * signal of this request (or of one caller that runs one request at a time),
   * never one shared by many concurrent requests, or the listeners pile up
   * (Node warns past 10). Without it only the timeout ends the request.
   */
  signal?: AbortSignal;
  /** Let the request outlive the page (fetch `keepalive`): for `DELETE`. */
  keepalive?: boolean;
  /**
   * For a streaming watch: called with each frame (a parsed JSON value) of a
   * `200` answered as a stream (`application/x-ndjson`), as it arrives.
   */
  onFrame?: (frame: unknown) => void;
  /**
   * With `onFrame` (`stream: 'auto'`): the stream must show a byte (a frame or
   * a heartbeat) within {@link firstByteLimitMs} of the request, or the
   * request is aborted with {@link BufferedStreamError}: something between
   * client and server holds the response back.
   */
  verifyStream?: boolean;
}

/** The heartbeat interval a streaming watch announced (`Bidi-Heartbeat`), ms; `0` for none. */
function announcedHeartbeatMs(heartbeat: string | null): number {
  if (heartbeat === null || !/^\d{1,9}$/.test(heartbeat.trim())) return 0;
  return Number(heartbeat.trim());
}

/**
 * How long a streaming watch may stay silent before it is taken as dead:
 * `MISSED_HEARTBEATS` heartbeats plus a margin, or `0` (never) when the
 * response announces no heartbeat (an older server, or heartbeats off).
 */
export function silenceLimitMs(heartbeat: string | null): number {
  const ms = announcedHeartbeatMs(heartbeat);
  return ms > 0 ? MISSED_HEARTBEATS * ms + SILENCE_MARGIN_MS : 0;
}

/** Slack on top of the announced heartbeat before a stream that showed nothing is taken as buffered. */
export const FIRST_BYTE_MARGIN_MS = 2_000;

/**
 * How long after its request a verified stream must show its first byte: the
 * server writes a frame at once or a heartbeat after `heartbeatMs` (announced
 * in `Bidi-Heartbeat`; the default 5 s until the headers say otherwise), plus
 * a margin; never later than the stream would be taken as dead anyway. A
 * stream without heartbeats gets the default: an idle one cannot prove that
 * nothing buffers it.
 */
export function firstByteLimitMs(heartbeat: string | null): number {
  const ms = announcedHeartbeatMs(heartbeat);
  if (ms === 0) return DEFAULT_HEARTBEAT_MS + FIRST_BYTE_MARGIN_MS;
  return Math.min(ms + FIRST_BYTE_MARGIN_MS, silenceLimitMs(heartbeat));
}

/**
 * A streaming watch showed no byte in time (`stream: 'auto'`): a proxy or
 * platform between client and server buffers responses. The session watches
 * without streaming from then on.
 */
export class BufferedStreamError extends BidiClientError {
  constructor(limitMs: number) {
    super('TIMEOUT', `watch: no byte of the stream within ${limitMs} ms; something between client and server buffers responses`);
  }
}

/** Splits a base URL into its path part (no trailing slash, no fragment) and its query (no `?`). */
export function splitBaseUrl(url: string): { path: string; query: string } {
  let rest = url;
  const hash = rest.indexOf('#');
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf('?');
  const path = (q >= 0 ? rest.slice(0, q) : rest).replace(/\/+$/, '');
  const query = q >= 0 ? rest.slice(q + 1) : '';
  return { path, query };
}

/**
 * The base URL as an absolute http(s) URL: `url` itself, or, where there is a
 * page (`location`), `url` resolved against it, as fetch would. Throws a
 * TypeError naming the URL otherwise (a relative URL in Node, `'not a url'`,
 * `'localhost:3000/session'`, another scheme, credentials in the URL).
 */
export function resolveBaseUrl(url: string): string {
  const where = (globalThis as { location?: { href?: unknown } }).location?.href;
  const base = typeof where === 'string' ? where : undefined;
  let parsed: URL;
  try {
    parsed = base === undefined ? new URL(url) : new URL(url, base);
  } catch {
    throw new TypeError(
      `bidiweb: open(url): ${quote(url)} is not ${base === undefined ? 'an absolute http: or https: URL (e.g. http://localhost:3000/session)' : 'a valid URL'}`,
    );
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new TypeError(
      `bidiweb: open(url): ${quote(url)} is not an http: or https: URL (scheme ${quote(parsed.protocol)}${base === undefined && !url.includes('//') ? '; a relative URL needs a page to resolve it against' : ''})`,
    );
  }
  if (parsed.username !== '' || parsed.password !== '') {
    throw new TypeError('bidiweb: open(url): the URL carries credentials (user:password@), which fetch refuses; send them in an Authorization header');
  }
  return parsed.href;
}

function quote(text: string): string {
  return JSON.stringify(text.length > 100 ? `${text.slice(0, 100)}…` : text);
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// What both fetch (a ByteString without NUL, CR, LF) and node:http (no control character but HTAB) accept.
const BAD_VALUE_CHAR = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * What is wrong with one request header, or `undefined`. Never quotes the
 * value: it is often a secret (a bearer token).
 */
export function headerProblem(name: string, value: string): string | undefined {
  if (!TOKEN.test(name)) return `header name ${quote(name)} is not a valid HTTP token`;
  const bad = BAD_VALUE_CHAR.exec(value);
  if (bad) {
    const code = bad[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0');
    return `header ${quote(name)}: character U+${code} at index ${bad.index} is not allowed in a header value (plain ASCII, no control characters)`;
  }
  return undefined;
}

/** Error codes of a request that could not be made at all: no retry can fix it. */
const INVALID_REQUEST_CODES = new Set([
  'ERR_INVALID_URL',
  'ERR_INVALID_URL_SCHEME',
  'ERR_INVALID_PROTOCOL',
  'ERR_INVALID_CHAR',
  'ERR_INVALID_HTTP_TOKEN',
  'ERR_HTTP_INVALID_HEADER_VALUE',
  'ERR_UNESCAPED_CHARACTERS',
  'ERR_INVALID_ARG_TYPE',
  'ERR_INVALID_ARG_VALUE',
]);
// The messages fetch implementations give a header or URL they refuse, without a code (undici, Chrome,
// Firefox, Safari). Their network errors are TypeErrors too ("fetch failed", "Failed to fetch", "Load
// failed", "NetworkError ..."), which never match.
const INVALID_REQUEST_MESSAGE = /header|ByteString|ISO-8859-1|invalid URL|failed to parse URL|URL scheme/i;

/** True if `err` (or its `cause`) says the request itself is invalid: a programmer error, not the network. */
export function isInvalidRequest(err: unknown): boolean {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && INVALID_REQUEST_CODES.has(code)) return true;
    if (isErrorLike(e) && e.name === 'TypeError' && INVALID_REQUEST_MESSAGE.test(e.message)) return true;
  }
  return false;
}

/** `describe(err)`, plus its cause's (undici's "fetch failed" says nothing by itself). */
function describeWithCause(err: unknown): string {
  const text = describe(err);
  const cause = isErrorLike(err) ? err.cause : undefined;
  if (cause === undefined || cause === null) return text;
  const more = describe(cause);
  return more && !text.includes(more) ? `${text} (${more})` : text;
}

/** Rejects with {@link AbortedError} as soon as `signal` aborts, whatever `p` does. */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => {}); // it may still reject (with the abort): nobody waits for it any more
    return Promise.reject(new AbortedError());
  }
  return new Promise<T>((resolve, reject) => {
    const unlink = onAbort(signal, () => reject(new AbortedError()));
    p.then(
      (v) => {
        unlink();
        resolve(v);
      },
      (e: unknown) => {
        unlink();
        reject(e);
      },
    );
  });
}

export class Transport {
  private readonly base: { path: string; query: string };
  /** The base URL as error messages show it: no query (it may carry a token), no fragment. */
  private readonly shown: string;
  private readonly fetchImpl: FetchLike;
  /**
   * Controllers of requests that ended without an abort, for the next requests: only with the
   * node:http fetch, which keeps no listener on a signal once its request is over (another fetch
   * might, and a reused signal would pile them up).
   */
  private readonly spareCtls?: AbortController[];
  private sendLabel?: string;
  private watchLabel?: string;
  /** `transport: 'websocket' | 'auto'`: the session's socket (./websocket). */
  channel?: WebSocketChannel;

  /** @param baseUrl an absolute URL (see {@link resolveBaseUrl}) */
  constructor(
    baseUrl: string,
    private readonly headers: HeadersOption | undefined,
    fetchImpl: FetchLike | undefined,
  ) {
    this.base = splitBaseUrl(baseUrl);
    this.shown = this.base.path;
    // An explicit fetch wins; in Node the node:http transport (far cheaper than undici's fetch); else the platform's.
    const node = fetchImpl === undefined ? nodeDefaultFetch() : undefined;
    if (node) {
      this.fetchImpl = node;
      this.spareCtls = [];
      return;
    }
    const impl = fetchImpl ?? (globalThis as { fetch?: FetchLike }).fetch;
    if (typeof impl !== 'function') {
      throw new TypeError('bidiweb: no fetch implementation (pass options.fetch)');
    }
    if (leavesSignalsClean(impl)) this.spareCtls = [];
    // Call through a closure: browsers' fetch must not be called as a method of another object.
    this.fetchImpl = (url, init) => impl(url, init);
  }

  url(path: RequestSpec['path'], query?: Record<string, number>): string {
    let q = this.base.query;
    if (query) {
      for (const k in query) {
        if (!Object.prototype.hasOwnProperty.call(query, k)) continue;
        q += (q ? '&' : '') + encodeURIComponent(k) + '=' + encodeURIComponent(String(query[k]));
      }
    }
    return this.base.path + path + (q ? '?' + q : '');
  }

  /** `POST http://host/session/send`: how error messages name a request (never with the sid, which is not in URLs). */
  describe(spec: Pick<RequestSpec, 'method' | 'path'>): string {
    // Sends and watches, made once: every one of them is described, for its reply.
    if (spec.path === '/send' && spec.method === 'POST') return (this.sendLabel ??= `POST ${this.shown}/send`);
    if (spec.path === '/watch' && spec.method === 'GET') return (this.watchLabel ??= `GET ${this.shown}/watch`);
    return `${spec.method} ${this.shown}${spec.path}`;
  }

  /**
   * Performs one request. Resolves with the reply for every HTTP status.
   * Throws {@link AbortedError} if `spec.signal` aborted; a
   * {@link BidiClientError} with code `INVALID_REQUEST` if the request cannot
   * be made at all (an invalid header from the `headers` function, or the
   * fetch implementation refused the URL or a header); and a transient one
   * (`NETWORK_ERROR`, `TIMEOUT`, `HEADERS_ERROR`) otherwise.
   */
  request(spec: RequestSpec): Promise<Reply> {
    const channel = this.channel;
    if (channel) {
      // Sends and watches go over the session's WebSocket when it has one: at once when its socket is
      // up (no async step of its own per frame), else once it is, or over HTTP (null).
      const describe = this.describe(spec);
      return channel.exchangeNow(spec, describe) ?? channel.request(spec, describe).then((reply) => reply ?? this.overHttp(spec));
    }
    return this.overHttp(spec);
  }

  private async overHttp(spec: RequestSpec): Promise<Reply> {
    const { signal } = spec;
    if (signal?.aborted) throw new AbortedError();
    const ctl = this.spareCtls?.pop() ?? new AbortController();
    const unlink = signal ? onAbort(signal, () => ctl.abort()) : undefined;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctl.abort();
    }, Math.max(0, spec.timeoutMs));
    /** Set when a stream went silent past its heartbeats (see readFrames). */
    let silentMs = 0;
    /** With verifyStream: aborts the request if no byte of a stream came in time; `lateMs` says it did. */
    let lateMs = 0;
    let firstByte: ReturnType<typeof setTimeout> | undefined;
    const started = Date.now();
    const expectFirstByte = (limitMs: number): void => {
      clearTimeout(firstByte);
      firstByte = setTimeout(() => {
        lateMs = limitMs;
        ctl.abort();
      }, Math.max(0, started + limitMs - Date.now()));
    };
    const heardFirstByte = (): void => {
      clearTimeout(firstByte);
      firstByte = undefined;
    };
    if (spec.verifyStream && spec.onFrame) expectFirstByte(firstByteLimitMs(null));
    try {
      let headers: Record<string, string>;
      const option = this.headers;
      if (typeof option === 'function') {
        try {
          headers = requestHeaders(await abortable(Promise.resolve().then(() => option()), ctl.signal), spec);
        } catch (err) {
          if (err instanceof AbortedError || err instanceof InvalidHeaderError) throw err;
          throw new BidiClientError('HEADERS_ERROR', `the headers option threw: ${describe(err)}`, { cause: err });
        }
      } else {
        headers = requestHeaders(option, spec); // no await: a static object costs no extra turn
      }
      const init: FetchInitLike = { method: spec.method, headers, signal: ctl.signal, cache: 'no-store' };
      if (spec.keepalive) init.keepalive = true;
      const res = await abortable(
        this.fetchImpl(this.url(spec.path, spec.query), spec.body === undefined ? init : { ...init, body: spec.body }),
        ctl.signal,
      );
      if (spec.onFrame && res.status === 200 && (res.headers.get('content-type') ?? '').startsWith(STREAM_MEDIA_TYPE)) {
        const heartbeat = res.headers.get(HEARTBEAT_HEADER);
        const limit = silenceLimitMs(heartbeat);
        if (firstByte !== undefined) {
          const firstLimit = firstByteLimitMs(heartbeat);
          // The server answers a watch's headers at once: late headers mean the whole response was held.
          if (Date.now() - started >= firstLimit) {
            lateMs = firstLimit;
            ctl.abort();
            throw new BufferedStreamError(firstLimit);
          }
          expectFirstByte(firstLimit);
        }
        await readFrames(
          res,
          ctl.signal,
          spec.onFrame,
          limit,
          () => {
            silentMs = limit;
            ctl.abort();
          },
          heardFirstByte,
        );
        return { status: 200, body: undefined, streamed: true, request: this.describe(spec) };
      }
      heardFirstByte(); // a plain answer: nothing to verify
      const text = await abortable(res.text(), ctl.signal);
      let body: unknown;
      if (text !== '') {
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
      }
      const reply: Reply = { status: res.status, body, request: this.describe(spec) };
      const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'));
      if (retryAfterMs !== undefined) reply.retryAfterMs = retryAfterMs;
      return reply;
    } catch (err) {
      if (signal?.aborted) throw new AbortedError();
      if (lateMs) throw new BufferedStreamError(lateMs);
      const what = this.describe(spec);
      if (err instanceof InvalidHeaderError) throw new BidiClientError('INVALID_REQUEST', `${what}: ${err.message}`);
      if (err instanceof BidiClientError) throw err;
      if (!timedOut && isInvalidRequest(err)) {
        throw new BidiClientError('INVALID_REQUEST', `${what} cannot be made: ${describeWithCause(err)}`, { cause: err });
      }
      if (timedOut) throw new BidiClientError('TIMEOUT', `${what} timed out after ${spec.timeoutMs} ms`);
      if (silentMs) {
        throw new BidiClientError('TIMEOUT', `${what}: the stream was silent for ${silentMs} ms (${MISSED_HEARTBEATS} heartbeats and more): taken as dead`);
      }
      throw new BidiClientError('NETWORK_ERROR', `${what} failed: ${describeWithCause(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
      clearTimeout(firstByte);
      unlink?.();
      if (this.spareCtls && !ctl.signal.aborted && this.spareCtls.length < SPARE_CONTROLLERS) this.spareCtls.push(ctl);
    }
  }

}

const SID_HEADER_LOWER = SID_HEADER.toLowerCase();

/** Spare request controllers kept per transport (see `Transport.spareCtls`): about the requests one session has in flight. */
const SPARE_CONTROLLERS = 8;

/** A header the `headers` option gave cannot be sent (see {@link headerProblem}). */
class InvalidHeaderError extends Error {}

/** The headers of one request: Accept, the app's (without the two the client owns), Content-Type, Bidi-Sid. */
function requestHeaders(extra: Record<string, string | undefined> | undefined, spec: RequestSpec): Record<string, string> {
  const out: Record<string, string> = { Accept: JSON_MEDIA_TYPE };
  if (extra) {
    for (const k in extra) {
      if (!Object.prototype.hasOwnProperty.call(extra, k)) continue;
      const v = extra[k];
      if (v === undefined) continue;
      const lower = k.toLowerCase();
      if (lower === 'content-type' || lower === SID_HEADER_LOWER) continue;
      const value = String(v);
      const problem = headerProblem(k, value);
      if (problem) throw new InvalidHeaderError(problem);
      out[k] = value;
    }
  }
  if (spec.body !== undefined) out['Content-Type'] = JSON_MEDIA_TYPE;
  if (spec.sid !== undefined) out[SID_HEADER] = spec.sid;
  return out;
}

/**
 * Reads a streaming watch: one JSON value per line, each handed to `onFrame`
 * as soon as its line is complete; empty lines (heartbeats) are skipped. A
 * frame that is not JSON is a transient error (the watch is retried). Without
 * a readable body (a fetch that only has `text()`), the frames come when the
 * response ends. With `silenceMs`, a body from which no byte came for that
 * long calls `onSilent` (which aborts `signal`): one timer per stream, moved
 * on lazily rather than reset per chunk. `onFirstByte` is called once, with
 * the first chunk.
 */
async function readFrames(
  res: FetchResponseLike,
  signal: AbortSignal,
  onFrame: (frame: unknown) => void,
  silenceMs: number,
  onSilent: () => void,
  onFirstByte: () => void,
): Promise<void> {
  const emit = (line: string): void => {
    if (line === '') return;
    let frame: unknown;
    try {
      frame = JSON.parse(line);
    } catch {
      throw new BidiClientError('BAD_RESPONSE', 'watch: a stream frame is not JSON');
    }
    if (!signal.aborted) onFrame(frame);
  };
  const reader = res.body?.getReader();
  if (!reader) {
    const text = await abortable(res.text(), signal);
    onFirstByte();
    for (const line of text.split('\n')) emit(line);
    return;
  }
  const decoder = new TextDecoder();
  let pending = '';
  let finished = false;
  let heardAt = Date.now();
  let heard = false;
  let watchdog: ReturnType<typeof setTimeout> | undefined;
  const check = (): void => {
    const quiet = Date.now() - heardAt;
    if (quiet >= silenceMs) {
      watchdog = undefined;
      onSilent();
    } else {
      watchdog = setTimeout(check, silenceMs - quiet);
    }
  };
  if (silenceMs > 0) watchdog = setTimeout(check, silenceMs);
  try {
    for (;;) {
      if (signal.aborted) throw new AbortedError();
      const { done, value } = await abortable(reader.read(), signal);
      if (done) break;
      if (!heard) {
        heard = true;
        onFirstByte();
      }
      heardAt = Date.now();
      pending += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = pending.indexOf('\n')) !== -1) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        emit(line);
      }
    }
    finished = true;
    emit(pending + decoder.decode());
  } finally {
    if (watchdog !== undefined) clearTimeout(watchdog);
    // Stopped early (aborted, silent, or a bad frame): let the connection go.
    if (!finished) reader.cancel().catch(() => {});
  }
}

function errorFields(body: unknown): { code?: string; message?: string } {
  if (!body || typeof body !== 'object') return {};
  const error = (body as { error?: unknown }).error;
  if (!error || typeof error !== 'object') return {};
  const { code, message } = error as { code?: unknown; message?: unknown };
  return {
    ...(typeof code === 'string' ? { code } : {}),
    ...(typeof message === 'string' ? { message } : {}),
  };
}

/** True for statuses that are retried with backoff: 408, 429 and 5xx. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/**
 * Sorts a reply into success (2xx with a JSON object body), retry (408, 429,
 * 5xx, other non-4xx statuses, or a 2xx whose body is not a JSON object), or
 * fatal (any other 4xx).
 */
export function classify(reply: Reply, op: Operation): Outcome {
  const { status, body } = reply;
  const label = reply.request ?? op;
  if (status >= 200 && status < 300) {
    if (body && typeof body === 'object' && !Array.isArray(body)) return { kind: 'ok', body: body as Record<string, unknown> };
    return {
      kind: 'retry',
      error: new BidiClientError('BAD_RESPONSE', `${label}: HTTP ${status} without a JSON object body`, { status }),
    };
  }
  const { code, message } = errorFields(body);
  const text = `${label}: HTTP ${status}${code ? ` ${code}` : ''}${message ? `: ${message}` : ''}`;
  if (status >= 400 && status < 500 && !isRetryableStatus(status)) {
    return {
      kind: 'fatal',
      status,
      ...(code !== undefined ? { errorCode: code } : {}),
      message: message ?? `HTTP ${status}`,
    };
  }
  const outcome: Outcome = {
    kind: 'retry',
    error: new BidiClientError('HTTP_ERROR', text, { status, ...(code !== undefined ? { errorCode: code } : {}) }),
  };
  if (reply.retryAfterMs !== undefined && (status === 429 || status === 503)) outcome.retryAfterMs = reply.retryAfterMs;
  return outcome;
}
