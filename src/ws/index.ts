/**
 * The WebSocket transport, server side: `attach(httpServer, bidi)` serves
 * `GET {base}/ws` upgrades on a Node `http.Server` with the `ws` package (an
 * optional peer dependency: install it to use this subpath).
 *
 * A socket is a transport, not state. Each request frame becomes the same
 * request the HTTP transport makes (`POST {base}/send`, a streaming
 * `GET {base}/watch`), served by `BidiServer.handle` with the upgrade's
 * headers: the same CORS and Host policy, `authorize` hook, limits, error
 * codes and store operations. A watch over a socket is a streaming watch, so
 * a socket on one instance gets what any other instance appends through the
 * store's wake-ups, and a client whose socket dies reconnects anywhere and
 * resumes from its acks. Frame format: docs/WEBSOCKET.md.
 */
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { BidiError } from '../core/errors';
import type { BidiRequest, BidiResponse, BidiStream, HeaderReader } from '../core/http';
import { SID_HEADER } from '../core/http';
import { decodeUtf8, HEARTBEAT_FRAME, HEARTBEAT_HEADER } from '../core/protocol';
import type { BidiOptions, BidiServer } from '../core/server';
import { toBidiServer } from '../core/server';
import { SESSION_ID_PATTERN, utf8Length } from '../core/util';
import { useNodeDebug } from '../node/debug';
import { JSON_MEDIA_TYPE } from '../wire';
import { Admission, refuseOverLimit, refuseUpgrade, type AdmissionOptions } from './admission';

export { DEFAULT_MAX_SOCKETS, DEFAULT_MAX_SOCKETS_PER_CLIENT, WS_REFUSED, type SocketClientKey } from './admission';

useNodeDebug();

/** Also `maxSockets`, `maxSocketsPerClient` and `clientKey`: see ./admission.ts. */
export interface AttachOptions extends AdmissionOptions {
  /**
   * The upgrade path. Default: the server's `path` + `/ws` (`/session/ws`). When the
   * middleware is mounted under a prefix (`app.use('/api', bidiWeb())`), pass the full path.
   */
  path?: string;
  /** How often each socket is pinged, ms; one that has not answered the previous ping is dropped. 0 = no pings. Default 5 000. */
  pingMs?: number;
  /**
   * While a socket has more than this many bytes queued for its client, its watch stops
   * pulling messages from the store (they stay there, unacked, under the session's window).
   * Default 1 MiB.
   */
  highWaterMark?: number;
  /** The first frame (`{"sid": ...}`) must come within this long, ms. Default 10 000. */
  helloTimeoutMs?: number;
  /** Requests one socket may have in progress; past it the socket is not read until one ends. Default 16. */
  maxRequestsPerSocket?: number;
}

export interface WsAttachment {
  /** Sockets open now. */
  readonly sockets: number;
  /** Upgrades refused so far by `maxSockets` / `maxSocketsPerClient`. */
  readonly refused: number;
  /** Stop accepting upgrades and close every socket (code 1001); clients reconnect elsewhere or fall back. */
  close(): Promise<void>;
}

/** Socket close codes: 4000 + the HTTP status the same error has over HTTP; the reason is the error code. */
export const WS_CLOSE = {
  BAD_REQUEST: 4400,
  HELLO_TIMEOUT: 4408,
} as const;

const DEFAULT_PING_MS = 5_000;
const DEFAULT_HIGH_WATER_MARK = 1_048_576;
const DEFAULT_HELLO_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_REQUESTS = 16;
/** How often a socket above its high-water mark is looked at again. */
const DRAIN_POLL_MS = 10;
/** `{"id":7,"send":` — the body follows verbatim, so the core parses and checks it exactly as an HTTP body. */
const REQUEST_FRAME = /^\{"id":(\d{1,15}),"(send|watch|cancel)":/;
const EMPTY_QUERY = new URLSearchParams();

type Bidi = BidiServer<any, any, any, any>;

/**
 * Serve WebSocket upgrades at `{base}/ws` on `httpServer`. `bidi` is a `BidiServer`, the
 * middleware an adapter returned (it carries `.server`), or options for a new server.
 *
 * ```ts
 * const middleware = bidiWeb({ onMessage: (s, m) => s.send(m) });
 * app.use(middleware);
 * attach(app.listen(3000), middleware);
 * ```
 */
export function attach(httpServer: HttpServer, bidi: Bidi | { server: Bidi } | BidiOptions<any, any, any, any>, options: AttachOptions = {}): WsAttachment {
  // An adapter's middleware carries its server; anything else is a server or options (no option is named `server`).
  const server: Bidi = toBidiServer('server' in bidi ? (bidi.server as Bidi) : (bidi as Bidi | BidiOptions<any, any>));
  const path = options.path ?? server.path + '/ws';
  if (!path.startsWith('/')) throw new BidiError('INVALID_OPTIONS', `attach: path must start with "/", got ${JSON.stringify(path)}`);
  const settings: Settings = {
    pingMs: nonNegative('pingMs', options.pingMs ?? DEFAULT_PING_MS),
    highWaterMark: nonNegative('highWaterMark', options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK),
    helloTimeoutMs: nonNegative('helloTimeoutMs', options.helloTimeoutMs ?? DEFAULT_HELLO_TIMEOUT_MS),
    maxRequests: Math.max(1, nonNegative('maxRequestsPerSocket', options.maxRequestsPerSocket ?? DEFAULT_MAX_REQUESTS)),
  };
  // A frame is one request body plus its small envelope. The core answers a body above maxBodyBytes with 413, as
  // over HTTP (the client halves its batches on it); only a frame far above (twice) ends the socket, with 1009.
  const wss = new WebSocketServer({ noServer: true, maxPayload: 2 * server.limits.maxBodyBytes + 1024, perMessageDeflate: false });
  const connections = new Set<Connection>();
  const admission = new Admission(options);

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    if ((q === -1 ? url : url.slice(0, q)) !== path) {
      // Not ours: another listener (Socket.IO, a dev server) may take it; if none, nobody will.
      if (httpServer.listenerCount('upgrade') === 1) socket.destroy();
      return;
    }
    socket.on('error', () => socket.destroy());
    // Counted before any work on it, so a flood of upgrades is bounded too.
    const full = admission.take(req, socket);
    if (full) return refuseOverLimit(socket, full);
    const refusal = server.admitConnection(new FrameRequest(req, 'GET', path, EMPTY_QUERY, undefined, new FrameHeaders(req.headers, '', false), undefined));
    if (refusal) return refuseUpgrade(socket, refusal.status, refusal.body);
    wss.handleUpgrade(req, socket, head, (ws) => {
      const c = new Connection(ws, req, server, settings, () => connections.delete(c));
      connections.add(c);
    });
  };
  httpServer.on('upgrade', onUpgrade);

  let pinger: ReturnType<typeof setInterval> | undefined;
  if (settings.pingMs > 0) {
    pinger = setInterval(() => {
      for (const c of connections) c.ping();
    }, settings.pingMs);
    pinger.unref();
  }

  return {
    get sockets() {
      return connections.size;
    },
    get refused() {
      return admission.refused;
    },
    async close() {
      httpServer.off('upgrade', onUpgrade);
      if (pinger) clearInterval(pinger);
      for (const c of connections) c.close(1001, 'going away');
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}

interface Settings {
  pingMs: number;
  highWaterMark: number;
  helloTimeoutMs: number;
  maxRequests: number;
}

function nonNegative(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new BidiError('INVALID_OPTIONS', `attach: ${name} must be a non-negative integer, got ${String(value)}`);
  return value;
}

/** A watch in progress: a cancel or the socket's end stops it (its stream, or the signal of a plain watch). */
class WatchHandle {
  aborted = false;
  stream?: BidiStream;
  private controller?: AbortController;

  signal(): AbortSignal {
    return (this.controller ??= new AbortController()).signal;
  }

  abort(): void {
    this.aborted = true;
    this.controller?.abort();
    this.stream?.close();
  }
}

/** The upgrade request's headers, with the session id and content type a frame stands for. */
class FrameHeaders implements HeaderReader {
  constructor(
    private readonly upgrade: IncomingMessage['headers'],
    private readonly sid: string,
    private readonly hasBody: boolean,
  ) {}

  get(name: string): string | null {
    const key = name.toLowerCase();
    if (key === SID_HEADER) return this.sid || null;
    if (key === 'content-type') return this.hasBody ? JSON_MEDIA_TYPE : null;
    // The upgrade's own length says nothing about a frame; text() checks the frame's.
    if (key === 'content-length') return null;
    const v = this.upgrade[key];
    if (v === undefined) return null;
    return Array.isArray(v) ? v.join(', ') : v;
  }
}

/** One frame as the request the HTTP transport would have made. */
class FrameRequest implements BidiRequest {
  readonly headers: FrameHeaders;
  readonly canStream = true;

  constructor(
    private readonly upgrade: IncomingMessage,
    readonly method: string,
    readonly path: string,
    readonly query: URLSearchParams,
    private readonly body: string | undefined,
    /** The connection's, made once: its session id and content type never change. */
    headers: FrameHeaders,
    readonly signal: AbortSignal | undefined,
  ) {
    this.headers = headers;
  }

  get raw(): unknown {
    return this.upgrade;
  }

  get remoteAddress(): string | undefined {
    return this.upgrade.socket?.remoteAddress;
  }

  text(limit: number): Promise<string> {
    const body = this.body ?? '';
    if (body.length > limit || (body.length * 3 > limit && utf8Length(body) > limit)) {
      return Promise.reject(new BidiError('BODY_TOO_LARGE', `request body exceeds ${limit} bytes`));
    }
    return Promise.resolve(body);
  }
}

/** One socket: bound to one session by its first frame, then a carrier of that session's requests. */
class Connection {
  private sid = '';
  private alive = true;
  private closed = false;
  private paused = false;
  /** Sends in progress: while one is, output waits for the end of the turn, so its reply shares a write with the watch frame it caused. */
  private sending = 0;
  /** Reads held: more than highWaterMark queued for a client that does not read (see holdReads). */
  private unread = false;
  /** Frames read while reads were held (see onMessage). */
  private backlog: Array<[RawData, boolean]> = [];
  /** Requests in progress: a watch's handle (a cancel ends it); null for a send, which runs to its end as over HTTP. */
  private readonly requests = new Map<number, WatchHandle | null>();
  /** Frames written in this turn of the event loop: they go out as one message (fewer writes, see flush). */
  private outbox: string[] = [];
  private helloTimer?: ReturnType<typeof setTimeout>;
  private readonly base: string;
  /** The headers every send and every watch of this socket's session reads (set by the first frame). */
  private sendHeaders?: FrameHeaders;
  private watchHeaders?: FrameHeaders;

  constructor(
    private readonly ws: WebSocket,
    private readonly upgrade: IncomingMessage,
    private readonly server: Bidi,
    private readonly settings: Settings,
    private readonly onGone: () => void,
  ) {
    this.base = server.path;
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('pong', () => (this.alive = true));
    ws.on('error', () => ws.terminate());
    ws.on('close', () => this.onClose());
    if (settings.helloTimeoutMs > 0) {
      this.helloTimer = setTimeout(() => this.close(WS_CLOSE.HELLO_TIMEOUT, 'HELLO_TIMEOUT'), settings.helloTimeoutMs);
      this.helloTimer.unref();
    }
  }

  ping(): void {
    if (this.closed) return;
    // Reads held (holdReads): its pongs wait unread; drained() judges it by the bytes it takes instead.
    if (this.unread) return;
    if (!this.alive) {
      // No pong since the last ping: the peer or the path to it is gone.
      this.ws.terminate();
      return;
    }
    this.alive = false;
    this.ws.ping();
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.ws.close(code, reason);
    this.onClose();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.helloTimer) clearTimeout(this.helloTimer);
    for (const ctl of this.requests.values()) ctl?.abort();
    this.outbox = [];
    this.backlog = [];
    this.requests.clear();
    this.onGone();
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    this.alive = true;
    if (this.closed) return;
    if (!this.unread && this.queued() > this.settings.highWaterMark) this.holdReads();
    // ws delivers every frame of a TCP chunk already read even while paused: they wait here, in order (at most a chunk's worth).
    if (this.paused || this.unread || this.backlog.length > 0) {
      this.backlog.push([data, isBinary]);
      return;
    }
    this.onFrame(data, isBinary);
  }

  private onFrame(data: RawData, isBinary: boolean): void {
    let text: string;
    try {
      if (isBinary) throw new BidiError('BAD_REQUEST', 'frames are JSON text');
      // ws has checked a text frame's UTF-8 already (it closes the socket with 1007 otherwise).
      text = Buffer.isBuffer(data) ? data.toString() : decodeUtf8(Array.isArray(data) ? Buffer.concat(data) : new Uint8Array(data));
    } catch {
      this.close(WS_CLOSE.BAD_REQUEST, 'BAD_REQUEST');
      return;
    }
    if (!this.sid) {
      this.hello(text);
      return;
    }
    const m = REQUEST_FRAME.exec(text);
    if (!m || !text.endsWith('}')) {
      this.close(WS_CLOSE.BAD_REQUEST, 'BAD_REQUEST');
      return;
    }
    const id = Number(m[1]);
    const body = text.slice(m[0].length, -1);
    if (m[2] === 'cancel') {
      this.requests.get(Number(body))?.abort();
      return;
    }
    if (this.requests.has(id)) {
      this.close(WS_CLOSE.BAD_REQUEST, 'BAD_REQUEST');
      return;
    }
    const isSend = m[2] === 'send';
    // A send needs no handle: nothing in it waits for the client.
    const watch = isSend ? null : new WatchHandle();
    if (isSend) this.sending++;
    this.requests.set(id, watch);
    if (this.requests.size >= this.settings.maxRequests && !this.paused) {
      // Bounded work per socket: read no more frames until a request ends (TCP pushes back on the client).
      this.paused = true;
      this.ws.pause();
    }
    void this.run(id, body, watch);
  }

  /** One request to its end (one async function, not a chain of promises per frame). */
  private async run(id: number, body: string, watch: WatchHandle | null): Promise<void> {
    try {
      if (watch === null) await this.send(id, body);
      else await this.watch(id, body, watch);
    } catch {
      this.write('{"id":' + id + ',"status":500,"body":{"error":{"code":"INTERNAL","message":"internal error"}}}');
    } finally {
      this.requests.delete(id);
      if (watch === null) this.sending--;
      if (this.paused && this.requests.size < this.settings.maxRequests && !this.closed) {
        this.paused = false;
        this.readOn();
      }
    }
  }

  /**
   * The client does not read the answers it asks for: read none of its frames until it takes them
   * (TCP then pushes back on it), so its socket holds at most about highWaterMark; dropped after drainTimeout.
   */
  private holdReads(): void {
    this.unread = true;
    this.ws.pause();
    // After this turn's flush (an immediate queued before this one), so the socket's queue counts what the outbox held.
    void new Promise((resolve) => setImmediate(resolve)).then(() => this.drained()).then(() => {
      this.unread = false;
      this.readOn();
    });
  }

  /** Bytes waiting for the client: the socket's queue and this turn's frames not yet flushed (UTF-16 units: near enough). */
  private queued(): number {
    let n = this.ws.bufferedAmount;
    for (const frame of this.outbox) n += frame.length;
    return n;
  }

  /** Reads resume: frames held back first, then the socket. */
  private readOn(): void {
    while (this.backlog.length > 0 && !this.paused && !this.unread && !this.closed) {
      if (this.queued() > this.settings.highWaterMark) return this.holdReads();
      const [data, isBinary] = this.backlog.shift()!;
      this.onFrame(data, isBinary);
    }
    if (this.backlog.length === 0 && !this.paused && !this.unread && !this.closed) this.ws.resume();
  }

  /** The first frame: `{"sid":"..."}` binds the socket to a session (never in the URL: URLs reach access logs). */
  private hello(text: string): void {
    let sid: unknown;
    try {
      sid = (JSON.parse(text) as { sid?: unknown }).sid;
    } catch {
      sid = undefined;
    }
    if (typeof sid !== 'string' || !SESSION_ID_PATTERN.test(sid)) {
      this.close(WS_CLOSE.BAD_REQUEST, 'MISSING_SESSION_ID');
      return;
    }
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = undefined;
    this.sid = sid;
    this.sendHeaders = new FrameHeaders(this.upgrade.headers, sid, true);
    this.watchHeaders = new FrameHeaders(this.upgrade.headers, sid, false);
    this.write('{"ready":true,"v":1}');
  }

  /** CORS and allowedHosts were checked at the upgrade (admit): the core serves the frame without a check per request. */
  private async send(id: number, body: string): Promise<void> {
    const res = await this.server.serveAdmitted('send', new FrameRequest(this.upgrade, 'POST', this.base + '/send', EMPTY_QUERY, body, this.sendHeaders!, undefined));
    this.reply(id, res);
  }

  /** `{"ack":N,"wait":ms,"stream":1}`: a streaming watch whose frames go out as they come, tagged with the request id. */
  private async watch(id: number, body: string, handle: WatchHandle): Promise<void> {
    let args: { ack?: unknown; wait?: unknown; stream?: unknown };
    try {
      args = JSON.parse(body) as typeof args;
      if (typeof args !== 'object' || args === null) throw new Error('not an object');
    } catch {
      this.reply(id, { status: 400, headers: {}, body: '{"error":{"code":"BAD_REQUEST","message":"a watch frame carries {ack, wait}"}}' });
      return;
    }
    const query = new URLSearchParams();
    if (args.ack !== undefined) query.set('ack', String(args.ack));
    if (args.wait !== undefined) query.set('wait', String(args.wait));
    const streaming = args.stream === 1;
    if (streaming) query.set('stream', '1');
    // A stream is ended by closing it (handle.abort); a signal would cost a listener per wait in the core.
    const signal = streaming ? undefined : handle.signal();
    const res = await this.server.serveAdmitted('watch', new FrameRequest(this.upgrade, 'GET', this.base + '/watch', query, undefined, this.watchHeaders!, signal));
    const stream = res.stream;
    if (!stream) {
      if (!handle.aborted) this.reply(id, res);
      return;
    }
    handle.stream = stream;
    if (handle.aborted) stream.close();
    try {
      const heartbeat = Number(res.headers[HEARTBEAT_HEADER] ?? 0);
      this.write('{"id":' + id + ',"hb":' + heartbeat + '}');
      this.forward(id, res.body, heartbeat);
      for (;;) {
        if (this.closed || handle.aborted) break;
        if (this.ws.bufferedAmount > this.settings.highWaterMark && !(await this.drained())) break;
        const chunk = await stream.next();
        if (chunk === null || this.closed) break;
        this.forward(id, chunk, heartbeat);
      }
    } finally {
      stream.close();
    }
    if (!handle.aborted) this.write('{"id":' + id + ',"status":200,"end":true}');
  }

  /** A stream chunk (one NDJSON line, or an empty line: a heartbeat) as frames of watch `id`. */
  private forward(id: number, chunk: string, heartbeat: number): void {
    // Most chunks are one frame and its newline.
    const nl = chunk.indexOf('\n');
    if (nl > 0 && nl === chunk.length - 1) {
      this.write('{"id":' + id + ',"frame":' + chunk.slice(0, nl) + '}');
      return;
    }
    for (const line of chunk.split('\n')) {
      if (line !== '') this.write('{"id":' + id + ',"frame":' + line + '}');
    }
    if (chunk === HEARTBEAT_FRAME) this.write('{"id":' + id + ',"hb":' + heartbeat + '}');
  }

  /**
   * Waits until the socket's queue is back under half the high-water mark. False when the
   * socket closed, or its client took nothing for the server's drainTimeout (then it is dropped).
   */
  private async drained(): Promise<boolean> {
    const limit = this.server.drainTimeout;
    let queued = this.ws.bufferedAmount;
    let progressAt = Date.now();
    while (!this.closed && this.ws.bufferedAmount > this.settings.highWaterMark / 2) {
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
      const now = this.ws.bufferedAmount;
      if (now < queued) progressAt = Date.now();
      queued = now;
      if (limit > 0 && Date.now() - progressAt > limit) {
        this.ws.terminate();
        return false;
      }
    }
    return !this.closed;
  }

  private reply(id: number, res: BidiResponse): void {
    let out = '{"id":' + id + ',"status":' + res.status;
    const retryAfter = res.headers['retry-after'];
    if (retryAfter !== undefined) out += ',"retryAfter":' + JSON.stringify(retryAfter);
    this.write(out + ',"body":' + (res.body === '' ? 'null' : res.body) + '}');
  }

  private write(frame: string): void {
    if (this.closed) return;
    if (this.outbox.push(frame) !== 1) return;
    // No send in progress (a push, a heartbeat): out after this job's microtasks, without waiting for the
    // other sockets' frames of the turn (a broadcast's first socket would wait for its last).
    if (this.sending === 0) queueMicrotask(this.flush);
    else scheduleFlush(this);
  }

  /**
   * The frames of one turn of the event loop (flushed after its I/O callbacks) as one message, one per line (JSON text has no raw
   * newline): an echo's response and the watch frame with its answer then cost one socket write, not two.
   */
  readonly flush = (): void => {
    const frames = this.outbox;
    this.outbox = [];
    if (frames.length === 0 || this.closed || this.ws.readyState !== 1) return;
    this.ws.send(frames.length === 1 ? frames[0]! : frames.join('\n'));
  };
}

/** Sockets with frames to send after this turn: one setImmediate for all of them, not one per socket. */
let toFlush: Connection[] = [];

function scheduleFlush(c: Connection): void {
  if (toFlush.push(c) === 1) setImmediate(flushAll);
}

function flushAll(): void {
  const list = toFlush;
  toFlush = [];
  for (const c of list) c.flush();
}
