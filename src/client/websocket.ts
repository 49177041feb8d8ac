/**
 * The WebSocket transport, client side. One socket per session carries the
 * session's sends and watches as frames (docs/WEBSOCKET.md); everything else
 * about a request (retries, acks, windows, exactly-once) is the sender's and
 * the watcher's, as over HTTP. So a socket that dies fails its requests like
 * a dropped connection would: they are retried, over a new socket (to any
 * instance) or over HTTP, from the same seqs and acks.
 *
 * Open and close stay plain HTTP requests (the close must outlive a page that
 * is going away).
 */
import { onAbort } from './abort-link';
import { parseRetryAfter } from './backoff';
import { AbortedError, BidiClientError } from './errors';
import type { Reply, RequestSpec } from './transport';
import type { HeadersOption, TransportMode, WebSocketConstructorLike, WebSocketLike } from './types';
// A socket whose watch announced heartbeats and then stayed silent for MISSED_HEARTBEATS of them (plus the margin) is dead.
import { MISSED_HEARTBEATS, SILENCE_MARGIN_MS } from '../wire';

/** Default time from `new WebSocket()` to the server's `ready` frame before the socket counts as failed. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** `transport: 'auto'` that fell back to HTTP tries a socket again after this long (in the background). */
export const WEBSOCKET_RETRY_MS = 30_000;
const OPEN = 1;
/**
 * Back-pressure: while a socket's `bufferedAmount` is above this, send frames are held in the
 * channel (in order) instead of being written, so a server or network that stops taking data
 * cannot make the socket buffer everything the app sends (the sender's window bounds what is
 * in flight, but a request that times out is retried while its first frame may still sit in the
 * buffer). 1 MiB, the server's `highWaterMark` default: one full request body (`maxBodyBytes`)
 * fits under it, and at one poll per DRAIN_POLL_MS the socket is never starved below ~100 MB/s.
 */
export const WEBSOCKET_HIGH_WATER_MARK = 1024 * 1024;
/** How often a socket above WEBSOCKET_HIGH_WATER_MARK is checked: browsers' WebSocket has no drain event. */
export const DRAIN_POLL_MS = 10;

/** A request waiting for its answer. Settled only through {@link settle}. */
interface Pending {
  id: number;
  /** The promise's own functions (see settle). */
  resolve(reply: Reply): void;
  reject(err: Error): void;
  /** Takes the request off its signal. */
  unlink?: () => void;
  onFrame?: (frame: unknown) => void;
  request: string;
  /** A watch: the socket's silence watchdog applies while one is pending. */
  watch: boolean;
  /** When it times out (Date.now() clock), and with what. */
  deadline: number;
  timeoutMs: number;
}

interface Socket {
  ws: WebSocketLike;
  sid: string;
  ready: Promise<boolean>;
  isReady: boolean;
  pending: Map<number, Pending>;
  heartbeatMs: number;
  heardAt: number;
  watchdog?: ReturnType<typeof setTimeout>;
  /**
   * One timer for the request timeouts of the socket, due at the earliest deadline or before (not a
   * timer per request: setting and clearing one per frame cost more than the rest of the frame).
   */
  deadlineTimer?: ReturnType<typeof setTimeout>;
  deadlineAt: number;
  /** Send frames held back while `bufferedAmount` is above WEBSOCKET_HIGH_WATER_MARK, by request id, in write order. */
  held: Map<number, string>;
  drainTimer?: ReturnType<typeof setTimeout>;
  /** Settles `ready` (once); cancels the connect timer. */
  settle(ok: boolean): void;
}

export class WebSocketChannel {
  private socket?: Socket;
  private nextId = 1;
  /** `'auto'` only: sockets failed to come up; HTTP carries the requests (a socket is tried again later). */
  private fellBackAt = 0;
  private disposed = false;
  private readonly url: string;
  /** See {@link label}: a few request kinds, so a few entries. */
  private readonly labels = new Map<string, string>();

  constructor(
    baseUrl: { path: string; query: string },
    private readonly mode: Exclude<TransportMode, 'http'>,
    private readonly impl: WebSocketConstructorLike,
    /** The app's headers: sent on the upgrade only by an injected implementation (browsers cannot). */
    private readonly headers: HeadersOption | undefined,
    private readonly injected: boolean,
    private readonly connectTimeoutMs: number,
    private readonly onFallback: (error: BidiClientError) => void,
  ) {
    this.url = baseUrl.path.replace(/^http/, 'ws') + '/ws' + (baseUrl.query ? '?' + baseUrl.query : '');
  }

  /** Which transport the next send or watch takes. */
  get active(): 'websocket' | 'http' {
    return this.fellBackAt !== 0 && !this.socket?.isReady ? 'http' : 'websocket';
  }

  /**
   * Carries a send or a watch over the socket. Resolves `null` when the request should go
   * over HTTP instead (not a send or watch; `'auto'` after sockets failed to come up).
   */
  async request(spec: RequestSpec, describe: string): Promise<Reply | null> {
    if (this.disposed || spec.sid === undefined || spec.keepalive || (spec.path !== '/send' && spec.path !== '/watch')) return null;
    if (spec.signal?.aborted) throw new AbortedError();
    if (this.mode === 'auto' && this.fellBackAt !== 0) {
      if (!this.socket?.isReady) {
        // Keep HTTP; try a socket in the background now and then, and switch once one is ready.
        if (!this.socket && Date.now() - this.fellBackAt >= WEBSOCKET_RETRY_MS) {
          this.fellBackAt = Date.now();
          void this.connect(spec.sid);
        }
        return null;
      }
    }
    const socket = this.socket && this.socket.sid === spec.sid ? this.socket : this.connect(spec.sid);
    // A socket that is up needs no wait (an await costs a turn of the microtask queue per frame).
    if (!socket.isReady && !(await socket.ready)) {
      if (this.disposed) throw new AbortedError();
      if (this.mode === 'auto') {
        if (this.fellBackAt === 0) {
          this.onFallback(new BidiClientError('NETWORK_ERROR', `${this.url}: no WebSocket session within ${this.connectTimeoutMs} ms; using HTTP`));
        }
        this.fellBackAt = Date.now();
        return null;
      }
      throw new BidiClientError('NETWORK_ERROR', `${describe} (WebSocket): the socket could not be opened`);
    }
    if (socket !== this.socket || socket.ws.readyState !== OPEN) throw new BidiClientError('NETWORK_ERROR', `${describe} (WebSocket): the socket closed`);
    if (this.mode === 'auto') this.fellBackAt = 0;
    return this.exchange(socket, spec, this.label(describe));
  }

  /**
   * Carries a send or a watch at once when the session's socket is up and nothing else stands in
   * the way (the common case, without {@link request}'s async step); null otherwise: then
   * {@link request} decides.
   */
  exchangeNow(spec: RequestSpec, describe: string): Promise<Reply> | null {
    const socket = this.socket;
    if (socket === undefined || !socket.isReady || socket.sid !== spec.sid || socket.ws.readyState !== OPEN) return null;
    if (this.disposed || this.fellBackAt !== 0 || spec.keepalive || spec.signal?.aborted || (spec.path !== '/send' && spec.path !== '/watch')) return null;
    return this.exchange(socket, spec, this.label(describe));
  }

  /** `describe` + ' (WebSocket)', made once per request kind (error messages name the transport). */
  private label(describe: string): string {
    let label = this.labels.get(describe);
    if (label === undefined) {
      label = describe + ' (WebSocket)';
      this.labels.set(describe, label);
    }
    return label;
  }

  /** The session ended: close the socket. */
  dispose(): void {
    this.disposed = true;
    if (this.socket) this.drop(this.socket, 1000, 'closed', new AbortedError());
  }

  private connect(sid: string): Socket {
    if (this.socket) this.drop(this.socket, 1000, 'new session', new BidiClientError('NETWORK_ERROR', 'the session changed'));
    let resolveReady!: (ok: boolean) => void;
    const ready = new Promise<boolean>((resolve) => (resolveReady = resolve));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const settle = (ok: boolean): void => {
      clearTimeout(timer);
      resolveReady(ok);
    };
    let ws: WebSocketLike;
    try {
      ws = this.injected ? new this.impl(this.url, undefined, { headers: this.staticHeaders() }) : new this.impl(this.url);
    } catch {
      settle(false);
      return { ws: { readyState: 3, send() {}, close() {} } as unknown as WebSocketLike, sid, ready, isReady: false, pending: new Map(), heartbeatMs: 0, heardAt: 0, deadlineAt: 0, held: new Map(), settle };
    }
    const socket: Socket = { ws, sid, ready, isReady: false, pending: new Map(), heartbeatMs: 0, heardAt: Date.now(), deadlineAt: 0, held: new Map(), settle };
    this.socket = socket;
    timer = setTimeout(() => {
      this.drop(socket, 1000, 'no ready frame', new BidiClientError('TIMEOUT', 'the WebSocket did not become ready'));
    }, this.connectTimeoutMs);
    ws.onopen = () => ws.send(JSON.stringify({ sid }));
    ws.onmessage = (event) => {
      socket.heardAt = Date.now();
      const data = typeof event.data === 'string' ? event.data : String(event.data);
      // The server sends the frames of one turn as one message, a frame per line.
      for (const line of data.includes('\n') ? data.split('\n') : [data]) {
        let frame: Record<string, unknown>;
        try {
          frame = JSON.parse(line) as Record<string, unknown>;
        } catch {
          this.drop(socket, 4400, 'BAD_RESPONSE', new BidiClientError('BAD_RESPONSE', 'a WebSocket frame is not JSON'));
          return;
        }
        if (frame.ready === true) {
          socket.isReady = true;
          settle(true);
          continue;
        }
        this.onFrame(socket, frame);
        if (this.socket !== socket && !socket.isReady) return; // dropped by a frame's handler
      }
    };
    ws.onclose = (event) => {
      const why = event.reason ? `${event.code} ${event.reason}` : String(event.code);
      this.drop(socket, 0, '', new BidiClientError('NETWORK_ERROR', `the WebSocket closed (${why})`));
    };
    ws.onerror = () => {
      // onclose follows with the code
    };
    return socket;
  }

  /** Headers for an injected implementation's upgrade (a function is not awaited: the upgrade cannot wait). */
  private staticHeaders(): Record<string, string> {
    const out: Record<string, string> = {};
    const h = this.headers;
    if (h && typeof h === 'object') for (const k of Object.keys(h)) if (h[k] !== undefined) out[k] = String(h[k]);
    return out;
  }

  private onFrame(socket: Socket, frame: Record<string, unknown>): void {
    const id = frame.id;
    if (typeof id !== 'number') return;
    const p = socket.pending.get(id);
    if (!p) return;
    if (typeof frame.hb === 'number') {
      if (frame.hb > 0 && socket.heartbeatMs !== frame.hb) {
        socket.heartbeatMs = frame.hb;
        this.armWatchdog(socket);
      }
      return;
    }
    if ('frame' in frame) {
      try {
        p.onFrame?.(frame.frame);
      } catch (err) {
        this.settle(socket, p, err as Error);
      }
      return;
    }
    if (typeof frame.status !== 'number') return;
    socket.pending.delete(id);
    if (frame.end === true) {
      this.settle(socket, p, null, { status: 200, body: undefined, streamed: true, request: p.request });
      return;
    }
    const reply: Reply = { status: frame.status, body: frame.body ?? undefined, request: p.request };
    if (typeof frame.retryAfter === 'string') {
      const retryAfterMs = parseRetryAfter(frame.retryAfter);
      if (retryAfterMs !== undefined) reply.retryAfterMs = retryAfterMs;
    }
    this.settle(socket, p, null, reply);
  }

  /**
   * Ends a request: with its reply, or with `err` (then, if the server may still be working on it,
   * its frame is cancelled; a frame still held was never written: nothing to cancel).
   */
  private settle(socket: Socket, p: Pending, err: Error | null, reply?: Reply): void {
    p.unlink?.();
    if (err === null) {
      p.resolve(reply!);
      return;
    }
    if (socket.pending.delete(p.id) && !socket.held.delete(p.id)) this.cancel(socket, p.id);
    p.reject(err);
  }

  private exchange(socket: Socket, spec: RequestSpec, request: string): Promise<Reply> {
    const id = this.nextId++;
    let frame: string;
    if (spec.path === '/send') frame = '{"id":' + id + ',"send":' + (spec.body ?? '{}') + '}';
    else {
      const q = spec.query ?? {};
      frame = '{"id":' + id + ',"watch":{"ack":' + (q.ack ?? 0) + (q.wait !== undefined ? ',"wait":' + q.wait : '') + (spec.onFrame ? ',"stream":1' : '') + '}}';
    }
    const signal = spec.signal;
    if (signal?.aborted) return Promise.reject(new AbortedError());
    return new Promise<Reply>((resolve, reject) => {
      const timeoutMs = Math.max(0, spec.timeoutMs);
      const deadline = Date.now() + timeoutMs;
      const p: Pending = { id, resolve, reject, request, watch: spec.path === '/watch', deadline, timeoutMs };
      if (spec.onFrame) p.onFrame = spec.onFrame;
      if (signal) p.unlink = onAbort(signal, () => this.settle(socket, p, new AbortedError()));
      socket.pending.set(id, p);
      if (socket.deadlineTimer === undefined || deadline < socket.deadlineAt) this.armDeadlines(socket, deadline);
      // Only sends wait for the socket to drain: a watch or cancel frame is a few dozen bytes, and
      // holding a watch back would stall what comes down (acks, heartbeats) behind the uploads.
      // The request's timeout runs while its frame is held, as an HTTP request's runs while it
      // waits for a connection: it bounds the whole request.
      if (spec.path === '/send' && (socket.held.size > 0 || (socket.ws.bufferedAmount ?? 0) > WEBSOCKET_HIGH_WATER_MARK)) {
        socket.held.set(id, frame);
        if (socket.drainTimer === undefined) this.awaitDrain(socket);
      } else socket.ws.send(frame);
    });
  }

  /** Polls a socket above the high-water mark; writes held frames, in order, while it is at or below. */
  private awaitDrain(socket: Socket): void {
    socket.drainTimer = setTimeout(() => {
      socket.drainTimer = undefined;
      if (this.socket !== socket || socket.ws.readyState !== OPEN) return;
      for (const [id, frame] of socket.held) {
        if ((socket.ws.bufferedAmount ?? 0) > WEBSOCKET_HIGH_WATER_MARK) break;
        socket.held.delete(id);
        socket.ws.send(frame);
      }
      if (socket.held.size > 0) this.awaitDrain(socket);
    }, DRAIN_POLL_MS);
  }

  /** (Re)arms the socket's timeout timer for `at`; when it fires, requests past their deadline fail with TIMEOUT. */
  private armDeadlines(socket: Socket, at: number): void {
    if (socket.deadlineTimer !== undefined) clearTimeout(socket.deadlineTimer);
    socket.deadlineAt = at;
    socket.deadlineTimer = setTimeout(() => {
      socket.deadlineTimer = undefined;
      const now = Date.now();
      let next = Infinity;
      for (const p of [...socket.pending.values()]) {
        if (p.deadline <= now) this.settle(socket, p, new BidiClientError('TIMEOUT', `${p.request} timed out after ${p.timeoutMs} ms`));
        else if (p.deadline < next) next = p.deadline;
      }
      if (next !== Infinity && this.socket === socket) this.armDeadlines(socket, next);
    }, Math.max(0, at - Date.now()));
  }

  private cancel(socket: Socket, id: number): void {
    if (socket.ws.readyState === OPEN) socket.ws.send('{"id":' + this.nextId++ + ',"cancel":' + id + '}');
  }

  /** One timer per socket: a socket silent past its heartbeats while a watch waits on it is dead. */
  private armWatchdog(socket: Socket): void {
    if (socket.watchdog) clearTimeout(socket.watchdog);
    const limit = MISSED_HEARTBEATS * socket.heartbeatMs + SILENCE_MARGIN_MS;
    const check = (): void => {
      const quiet = Date.now() - socket.heardAt;
      const watching = [...socket.pending.values()].some((p) => p.watch);
      if (watching && quiet >= limit) {
        this.drop(socket, 4408, 'silent', new BidiClientError('TIMEOUT', `the WebSocket was silent for ${limit} ms (${MISSED_HEARTBEATS} heartbeats and more): taken as dead`));
        return;
      }
      socket.watchdog = setTimeout(check, watching ? limit - quiet : limit);
    };
    socket.watchdog = setTimeout(check, limit);
  }

  /** Ends a socket: its requests fail with `error` (they are retried by their owners). */
  private drop(socket: Socket, code: number, reason: string, error: Error): void {
    // Requests waiting for this socket to come up go elsewhere (HTTP, or a retry).
    socket.settle(false);
    if (socket.watchdog) clearTimeout(socket.watchdog);
    socket.watchdog = undefined;
    if (socket.deadlineTimer !== undefined) clearTimeout(socket.deadlineTimer);
    socket.deadlineTimer = undefined;
    if (socket.drainTimer !== undefined) clearTimeout(socket.drainTimer);
    socket.drainTimer = undefined;
    socket.held.clear();
    if (this.socket === socket) this.socket = undefined;
    socket.isReady = false;
    const ws = socket.ws;
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
    if (code !== 0 && (ws.readyState === 0 || ws.readyState === OPEN)) {
      try {
        ws.close(code, reason);
      } catch {
        // already closing
      }
    }
    const pending = [...socket.pending.values()];
    socket.pending.clear();
    for (const p of pending) this.settle(socket, p, error);
  }
}
