/**
 * HTTP plumbing: URLs, headers, timeouts, cancellation, and the
 * classification of responses into success / retry / fatal.
 */
import { parseRetryAfter } from './backoff';
import { AbortedError, BidiClientError, describe } from './errors';
import { nodeDefaultFetch } from './node-http';
import type { FetchInitLike, FetchLike, FetchResponseLike, HeadersOption, Operation } from './types';

/** The request header that carries the session id. */
export const SID_HEADER = 'Bidi-Sid';

/** A response, body already read and parsed. */
export interface Reply {
  status: number;
  /** The parsed JSON body, or `undefined` if the body was empty or not JSON. */
  body: unknown;
  /** From `Retry-After`, if present. */
  retryAfterMs?: number;
  /** A streaming watch answered: its frames went to `onFrame`; `body` is undefined. */
  streamed?: boolean;
}

/** What to do with a reply. */
export type Outcome =
  | { kind: 'ok'; body: Record<string, unknown> }
  | { kind: 'retry'; error: BidiClientError; retryAfterMs?: number }
  | { kind: 'fatal'; status: number; errorCode?: string; message: string };

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

const STREAM_TYPE = 'application/x-ndjson';

/** The header by which a streaming watch announces its heartbeat interval, ms. */
export const HEARTBEAT_HEADER = 'Bidi-Heartbeat';
/** A stream silent for this many heartbeats (plus the margin) is taken as dead. */
export const MISSED_HEARTBEATS = 3;
/** Timer slack, a stalled event loop, a retransmitted packet: never abort a live stream for those. */
export const SILENCE_MARGIN_MS = 1_000;

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
/** The server's default `heartbeatMs`: the first-byte limit before the response announces its own. */
const DEFAULT_HEARTBEAT_MS = 5_000;

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

/** Byte length of the UTF-8 encoding of `s`. */
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

/** Rejects with {@link AbortedError} as soon as `signal` aborts, whatever `p` does. */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => {}); // it may still reject (with the abort): nobody waits for it any more
    return Promise.reject(new AbortedError());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new AbortedError());
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

export class Transport {
  private readonly base: { path: string; query: string };
  private readonly fetchImpl: FetchLike;

  constructor(
    baseUrl: string,
    private readonly headers: HeadersOption | undefined,
    fetchImpl: FetchLike | undefined,
  ) {
    this.base = splitBaseUrl(baseUrl);
    // An explicit fetch wins; in Node the node:http transport (far cheaper than undici's fetch); else the platform's.
    const node = fetchImpl === undefined ? nodeDefaultFetch() : undefined;
    if (node) {
      this.fetchImpl = node;
      return;
    }
    const impl = fetchImpl ?? (globalThis as { fetch?: FetchLike }).fetch;
    if (typeof impl !== 'function') {
      throw new TypeError('bidiweb: no fetch implementation (pass options.fetch)');
    }
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

  /**
   * Performs one request. Resolves with the reply for every HTTP status.
   * Throws {@link AbortedError} if `spec.signal` aborted, and a transient
   * {@link BidiClientError} (`NETWORK_ERROR`, `TIMEOUT`, `HEADERS_ERROR`) otherwise.
   */
  async request(spec: RequestSpec): Promise<Reply> {
    const { signal } = spec;
    if (signal?.aborted) throw new AbortedError();
    const ctl = new AbortController();
    const onAbort = (): void => ctl.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
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
          if (err instanceof AbortedError) throw err;
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
      if (spec.onFrame && res.status === 200 && (res.headers.get('content-type') ?? '').startsWith(STREAM_TYPE)) {
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
        return { status: 200, body: undefined, streamed: true };
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
      const reply: Reply = { status: res.status, body };
      const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'));
      if (retryAfterMs !== undefined) reply.retryAfterMs = retryAfterMs;
      return reply;
    } catch (err) {
      if (signal?.aborted) throw new AbortedError();
      if (lateMs) throw new BufferedStreamError(lateMs);
      if (err instanceof BidiClientError) throw err;
      const what = `${spec.method} ${spec.path || '/'}`;
      if (timedOut) throw new BidiClientError('TIMEOUT', `${what} timed out after ${spec.timeoutMs} ms`);
      if (silentMs) {
        throw new BidiClientError('TIMEOUT', `${what}: the stream was silent for ${silentMs} ms (${MISSED_HEARTBEATS} heartbeats and more): taken as dead`);
      }
      throw new BidiClientError('NETWORK_ERROR', `${what} failed: ${describe(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
      clearTimeout(firstByte);
      signal?.removeEventListener('abort', onAbort);
    }
  }

}

const SID_HEADER_LOWER = SID_HEADER.toLowerCase();

/** The headers of one request: Accept, the app's (without the two the client owns), Content-Type, Bidi-Sid. */
function requestHeaders(extra: Record<string, string | undefined> | undefined, spec: RequestSpec): Record<string, string> {
  const out: Record<string, string> = { Accept: 'application/json' };
  if (extra) {
    for (const k in extra) {
      if (!Object.prototype.hasOwnProperty.call(extra, k)) continue;
      const v = extra[k];
      if (v === undefined) continue;
      const lower = k.toLowerCase();
      if (lower === 'content-type' || lower === SID_HEADER_LOWER) continue;
      out[k] = String(v);
    }
  }
  if (spec.body !== undefined) out['Content-Type'] = 'application/json';
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
  if (status >= 200 && status < 300) {
    if (body && typeof body === 'object' && !Array.isArray(body)) return { kind: 'ok', body: body as Record<string, unknown> };
    return {
      kind: 'retry',
      error: new BidiClientError('BAD_RESPONSE', `${op}: HTTP ${status} without a JSON object body`, { status }),
    };
  }
  const { code, message } = errorFields(body);
  const text = `${op}: HTTP ${status}${code ? ` ${code}` : ''}${message ? `: ${message}` : ''}`;
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
