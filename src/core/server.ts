/**
 * The protocol engine. It owns no session state: every decision is made by
 * one atomic store operation, so any number of BidiServer objects (in one
 * process or many) can serve the same sessions.
 */
import { BidiError, toBidiError } from './errors';
import type { BidiRequest, BidiResponse, BidiStream, CorsOptions, HeaderReader } from './http';
import { CorsPolicy, jsonResponse, SID_HEADER } from './http';
import type { Limits } from './limits';
import { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_WAIT_MS, MAX_WAIT_CAP_MS, resolveLimits } from './limits';
import { HEARTBEAT_FRAME, HEARTBEAT_HEADER, PROTOCOL_VERSION, STREAM_CONTENT_TYPE, parseOpen, parseSend, parseWatch, readJsonObject, readSessionId, watchBody } from './protocol';
import type { SendOptions, SessionBackend, WhenFull } from './session';
import { PendingSessionBackend, ServerSession } from './session';
import { leaseLost, Outbox } from './outbox';
import type { ObserveOptions } from './observe';
import { Observer } from './observe';
import type { OpenLimit, OpenLimiter } from './open-limit';
import { DEFAULT_OPEN_LIMIT, defaultClientKey } from './open-limit';
import type { AppendLimits, AppendResult, CommitResult, ReadResult, Store, StoreEvent, StoredMessage, Unsubscribe } from './store';
import { MemoryStore } from './stores/memory';
import { newAppendId, newSessionId, newToken, SESSION_ID_PATTERN, sessionLabel, utf8Length } from './util';

export interface OpenRequest {
  headers: HeaderReader;
  query: URLSearchParams;
  /** The `meta` the client passed to `open()` (JSON, or null). */
  meta: unknown;
  /** The framework's request object (Express `req`, Koa `ctx`, a Fetch `Request`). */
  raw?: unknown;
}

export interface RequestCheck {
  headers: HeaderReader;
  query: URLSearchParams;
  sessionId: string;
  raw?: unknown;
}

export interface MessageInfo {
  /** The client's seq for this message: stable across a redelivery, so handlers can be idempotent. */
  seq: number;
}

export type ErrorPhase = 'open' | 'message' | 'close' | 'request' | 'sweep' | 'state';

/** What `onError` is told about where an error happened. */
export interface ErrorContext<User = unknown> {
  phase: ErrorPhase;
  /** Phase `'message'`: the client message's seq, when the error is about one. */
  seq?: number;
  /**
   * The session, as a short label that is safe to log: 6 hex characters of a hash of its id
   * (`sessionLabel(sid)`), the same on every instance. Never the id itself, a bearer secret.
   * Absent when the error is about no one session (a sweep, a store call of an open refused
   * before it had an id).
   */
  session?: string;
  /** The session's `user` (what `onOpen` set), when the server had it in hand: phases `'message'`, `'close'`, `'state'`, and `'open'` once set. */
  user?: User;
}

/**
 * The server's options. `User` and `State` type `session.user` and `session.state`;
 * `In` types the client's messages (`onMessage`'s `data`), `Out` the server's
 * (`session.send`, `hub.send`): the client's `open<Out, In>()` read from the other side.
 * Neither is checked at run time.
 */
export interface BidiOptions<User = unknown, State extends object = Record<string, unknown>, In = unknown, Out = unknown> {
  /** Where session state lives. Default: a new `MemoryStore` (one process only). */
  store?: Store;
  /** Mount path. Default `/session`. */
  path?: string;
  /** Runs once per session before it exists. Throw `reject(status, reason)` to refuse; set `session.user` / `session.state`. */
  onOpen?(session: ServerSession<User, State, Out>, request: OpenRequest): void | Promise<void>;
  /** Each client message, in order, once (see README "Guarantees" for the crash window). Never concurrent per session. */
  onMessage?(session: ServerSession<User, State, Out>, data: In, info: MessageInfo): void | Promise<void>;
  /** Exactly once per session: reason is the app's close reason, `'client'` or `'expired'`. */
  onClose?(session: ServerSession<User, State, Out>, reason: string): void | Promise<void>;
  /** Optional per-request check after open (auth is otherwise done once, in onOpen). Throw a BidiError (e.g. `UNAUTHORIZED`) to refuse. */
  authorize?(check: RequestCheck): void | Promise<void>;
  /** Errors thrown by hooks or the store, with where they happened (never a session id). Default: `console.error` without session ids. */
  onError?(error: unknown, context: ErrorContext<User>): void;
  limits?: Partial<Limits>;
  /** Default watch wait, ms. Default 25 000. */
  wait?: number;
  /** Longest watch wait a client may ask for, ms. Default and cap 55 000. */
  maxWait?: number;
  /** A session with no request for this long expires, ms. Default 120 000. */
  idleTimeout?: number;
  /** Cross-origin access. Closed by default. */
  cors?: CorsOptions;
  /** What server `send()` does when a session's unacked window is full. Default `'reject'`. */
  whenFull?: WhenFull;
  /** Longest `send()` waits with `whenFull: 'wait'`, ms. Default 30 000. */
  sendTimeout?: number;
  /** Delivery lease, ms: how long a crashed instance can hold up a session. Renewed while a handler runs. Default 5 000. */
  leaseMs?: number;
  /** How often this instance tries to sweep expired sessions, ms; 0 turns the timer off (call `sweep()` yourself). Default 5 000. */
  sweepInterval?: number;
  /** An OpenTelemetry `Meter` (e.g. `metrics.getMeter('bidiweb')`): sessions, messages, latencies, store calls. None by default. */
  meter?: ObserveOptions['meter'];
  /** A `debug`-style logger factory for the `bidiweb:*` namespaces; `false` for none. Default on Node: the `debug` package (`DEBUG=bidiweb:*`). */
  debug?: ObserveOptions['debug'];
  /**
   * A streaming watch with nothing to say for this long writes a heartbeat (an empty line), ms, so a
   * client can tell a quiet stream from a dead one (it gives up on one silent for 3 heartbeats + 1 s).
   * 0 = no heartbeats. Default 5 000.
   */
  heartbeatMs?: number;
  /**
   * Node adapters: a response whose client takes no bytes for this long while a write waits
   * (the client stopped reading) is destroyed, ms, so a reader that never reads holds its
   * response's memory only this long. 0 = never. Default 30 000.
   */
  drainTimeout?: number;
  /**
   * Session opens allowed per client key (429 TOO_MANY_OPENS with Retry-After past it), counted
   * in the store so every instance shares the budget. `false`: no limit. Default 30 per 10 s.
   */
  openLimit?: OpenLimit | false;
  /**
   * The client key of the open limit. Default: the peer's address (none on loopback, where the
   * peer is a local proxy). Behind a proxy, read the header it sets, e.g.
   * `(req) => req.headers.get('x-real-ip')` — only a header your proxy overwrites, never one a
   * client can choose. Return null for no limit on that request; `false` turns keys off.
   */
  clientKey?: ((request: BidiRequest) => string | null | undefined) | false;
  /** Replaces the store's open limiter (e.g. a rate-limiter-flexible limiter wrapped by `openLimiterFrom`). */
  openLimiter?: OpenLimiter;
  /**
   * Host names (the Host header without its port) that same-origin requests may name: a request
   * whose Origin matches its Host counts as same-origin only for these, so a DNS-rebinding page
   * (Origin and Host both its own name) is cross-origin and refused. A leading dot allows
   * subdomains (`.example.com`). `'any'`: trust every Host (only for a server no browser can
   * reach under a name an attacker controls). Default: `localhost` (and `*.localhost`) and IP
   * addresses. See docs/SECURITY.md, "DNS rebinding".
   */
  allowedHosts?: readonly string[] | 'any';
}

export interface BroadcastResult {
  /** Sessions that got the message. */
  sent: number;
  /** Sessions that did not, with why. */
  failed: Array<{ sid: string; code: 'UNKNOWN_SESSION' | 'SESSION_CLOSED' | 'SEND_WINDOW_FULL' }>;
}

export interface SessionView<User = unknown, State = unknown> {
  status: 'open' | 'closing' | 'closed';
  user: User;
  state: State;
}

/** Push and manage sessions from anywhere: timers, queue consumers, other sessions' handlers. */
export interface Hub<User = unknown, State = unknown, Out = unknown> {
  send(sid: string, data: Out, options?: SendOptions): Promise<number>;
  broadcast(sids: readonly string[], data: Out): Promise<BroadcastResult>;
  /**
   * Send to every member of a group: written once, whatever the group's size;
   * each member gets it once, at its own next seq (README guarantee 12).
   * `sent` is the number of members; `failed` is always empty (a member too
   * far behind is closed with reason 'group-overrun' instead).
   */
  publish(group: string, data: Out): Promise<BroadcastResult>;
  close(sid: string, reason?: string): Promise<void>;
  join(sid: string, group: string): Promise<boolean>;
  leave(sid: string, group: string): Promise<void>;
  members(group: string): Promise<string[]>;
  /** A read-only view of sessions (null where unknown). */
  inspect(sids: readonly string[]): Promise<Array<SessionView<User, State> | null>>;
  /** Sessions not closed yet (open or closing) in the store, as the store's index counts them (see `Store.count`). */
  count(): Promise<number>;
  /**
   * One page of the sessions not closed yet, for an admin page: ids, status, user and state,
   * as `inspect` shows them. Pass the page's `cursor` to get the next; `null` ends the listing.
   * A session open for the whole listing is listed at least once (rarely twice). The ids are
   * bearer secrets: protect the page like an admin login, and never put an id in a URL.
   */
  sessions(options?: SessionListOptions): Promise<SessionPage<User, State>>;
}

export interface SessionListOptions {
  /** The previous page's `cursor`; absent: the first page. It holds no session id. */
  cursor?: string;
  /** About how many sessions a page holds (1 to 1 000). Default 100. */
  limit?: number;
}

export interface SessionPage<User = unknown, State = unknown> {
  /** Open and closing sessions (`status`), in no particular order. */
  sessions: Array<SessionView<User, State> & { id: string }>;
  /** For the next page; `null`: that was the last. */
  cursor: string | null;
}

const CLOSE_REASON_MAX = 256;
/** `hub.sessions()` page size: default, and the most one call may ask for. */
const LIST_DEFAULT = 100;
const LIST_MAX = 1_000;
/** Store pages one `hub.sessions()` call reads at most to fill its page (store pages may come short or empty). */
const LIST_ROUNDS = 10;
/** Default error logging: one line per kind of error per minute, and how many it left out. */
const LOG_INTERVAL_MS = 60_000;
/** Kinds remembered for that (bounded, whatever a client sends); past it new kinds share one. */
const LOG_KINDS_MAX = 100;
/** How often a waiting send() looks for room when the store cannot wake it. */
const SEND_POLL_MS = 250;

/**
 * 5 s: a client then finds a dead stream within 16 s (3 heartbeats + 1 s),
 * well inside the default 25 s wait (without heartbeats: wait + 10 s, 35 s),
 * and the beat stays far below the idle cut of common proxies and balancers
 * (30–100 s). Its cost: one 1-byte write per idle stream per 5 s, far less
 * than the request per wait a plain watch costs.
 */
const DEFAULT_HEARTBEAT_MS = 5_000;

/**
 * 30 s without a byte taken: far longer than a slow mobile link needs to
 * take some of a 256 KiB response, short enough that sockets which never read
 * cannot pile up their responses for long.
 */
const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;

interface HeldLease {
  sid: string;
  token: string;
  /** When the store last extended it (taken, committed or renewed). */
  renewedAt: number;
  /** A renewal found it taken by someone else: stop delivering. */
  lost: boolean;
}

export class BidiServer<User = unknown, State extends object = Record<string, unknown>, In = unknown, Out = unknown> {
  readonly store: Store;
  readonly path: string;
  readonly limits: Limits;
  readonly hub: Hub<User, State, Out>;
  /** See {@link BidiOptions.drainTimeout}; read by the Node bridge. */
  readonly drainTimeout: number;
  private readonly options: BidiOptions<User, State, In, Out>;
  private readonly cors: CorsPolicy;
  private readonly wait: number;
  private readonly maxWait: number;
  private readonly idleTimeout: number;
  private readonly leaseMs: number;
  private readonly sendTimeout: number;
  private readonly heartbeatMs: number;
  private readonly backend: SessionBackend;
  private readonly openLimiter?: OpenLimiter;
  private readonly clientKey: ((request: BidiRequest) => string | null | undefined) | false;
  /** Default console logging, per kind of error: the first is logged, the rest counted per interval. */
  private readonly logged = new Map<string, { since: number; suppressed: number }>();
  private sweepTimer?: ReturnType<typeof setInterval>;
  private readonly sweepToken = newToken();
  private readonly streamLimits: StreamLimits;
  /** Delivery leases held by this object's requests, and the one timer that renews them. */
  private readonly held = new Set<HeldLease>();
  private leaseTimer?: ReturnType<typeof setInterval>;
  /** Deliveries running in this object, by session: their handlers' queued sends. */
  private readonly outboxes = new Map<string, Outbox>();
  /** Debug logging and metrics (./observe): `obs.on` is false when nothing observes. */
  private readonly obs: Observer;
  /** Errors already reported with their own phase (a throwing onOpen): the 500 they become is not reported again. */
  private readonly reported = new WeakSet<object>();

  constructor(options: BidiOptions<User, State, In, Out> = {}) {
    this.options = options;
    this.obs = new Observer(options);
    this.store = this.obs.store(options.store ?? new MemoryStore());
    this.path = normalizePath(options.path ?? '/session');
    this.limits = resolveLimits(options.limits);
    this.maxWait = positive('maxWait', options.maxWait ?? MAX_WAIT_CAP_MS, MAX_WAIT_CAP_MS);
    this.wait = positive('wait', options.wait ?? Math.min(DEFAULT_WAIT_MS, this.maxWait), this.maxWait);
    this.idleTimeout = positive('idleTimeout', options.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS);
    if (this.idleTimeout <= this.maxWait) {
      throw new BidiError('INVALID_OPTIONS', `idleTimeout (${this.idleTimeout}) must exceed maxWait (${this.maxWait}), or waiting clients would expire`);
    }
    this.leaseMs = positive('leaseMs', options.leaseMs ?? 5_000);
    this.sendTimeout = positive('sendTimeout', options.sendTimeout ?? 30_000);
    // Above the longest wait a heartbeat could never be due: the stream ends first.
    this.heartbeatMs = positive('heartbeatMs', options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS, MAX_WAIT_CAP_MS);
    this.drainTimeout = positive('drainTimeout', options.drainTimeout ?? DEFAULT_DRAIN_TIMEOUT_MS);
    this.cors = new CorsPolicy(options.cors, options.allowedHosts);
    this.clientKey = options.clientKey ?? defaultClientKey;
    const openLimit = options.openLimit ?? DEFAULT_OPEN_LIMIT;
    if (openLimit) {
      positive('openLimit.opens', openLimit.opens);
      positive('openLimit.perSeconds', openLimit.perSeconds);
      if (openLimit.opens < 1 || openLimit.perSeconds < 1) throw new BidiError('INVALID_OPTIONS', 'openLimit.opens and openLimit.perSeconds must be at least 1');
      this.openLimiter = options.openLimiter ?? this.store.openLimiter?.(openLimit);
    }
    this.streamLimits = {
      // A stream ends while the client can still ack before the unacked bounds are reached.
      messages: Math.max(1, Math.min(this.limits.maxMessagesPerResponse, Math.ceil(this.limits.maxUnackedMessages / 2))),
      // A stream is one response: the same byte budget as a plain watch.
      bytes: Math.max(1, Math.min(this.limits.maxResponseBytes, Math.ceil(this.limits.maxUnackedBytes / 2))),
    };
    this.backend = {
      send: (sid, json, opts) => this.sendJson(sid, json, opts),
      close: (sid, reason) => this.closeSession(sid, reason),
      join: (sid, group) => this.store.join(sid, group),
      leave: (sid, group) => this.store.leave(sid, group),
      serialize: serialize,
    };
    this.hub = this.makeHub();
    const interval = options.sweepInterval ?? 5_000;
    if (interval > 0) {
      this.sweepTimer = setInterval(() => void this.sweep().catch((err) => this.report(err, { phase: 'sweep' })), interval);
      (this.sweepTimer as { unref?: () => void }).unref?.();
    }
  }

  /**
   * Serve one request. Resolves `null` when the path is not under this
   * server's mount path (adapters then pass the request on).
   */
  handle = async (req: BidiRequest): Promise<BidiResponse | null> => {
    const route = this.route(req.path);
    if (route === null) return null;
    const cors = this.cors.check(req);
    const corsHeaders = cors.crossOrigin && cors.allowed ? this.cors.headers(cors.origin!) : undefined;
    try {
      if (cors.crossOrigin && !cors.allowed) {
        if (cors.hostRefused) {
          // Most likely the app's own page on a host it did not list: say so to the operator (logged once per
          // interval by the default reporter), not only to the page.
          const host = JSON.stringify((req.headers.get('host') ?? '').slice(0, 100));
          if (!this.options.onError) {
            this.logLimited('request', `refused a request for Host ${host}: it is not in allowedHosts (set allowedHosts to your site's host names; see docs/SECURITY.md)`, 'warning');
          }
          throw new BidiError('CORS_FORBIDDEN', 'this Host is not in allowedHosts');
        }
        throw new BidiError('CORS_FORBIDDEN', 'cross-origin requests from this origin are not allowed');
      }
      if (req.method === 'OPTIONS' && route !== 'unknown') {
        return { status: 204, headers: cors.crossOrigin ? this.cors.preflightHeaders(cors.origin!) : { allow: allowed(route) }, body: '' };
      }
      const res = await this.dispatch(route, req);
      if (corsHeaders) {
        Object.assign(res.headers, corsHeaders);
        // A cross-origin page may read only the response headers it is told it may.
        if (HEARTBEAT_HEADER in res.headers) res.headers['access-control-expose-headers'] = HEARTBEAT_HEADER;
      }
      return res;
    } catch (err) {
      return this.errorResponse(err, corsHeaders, req);
    }
  };

  /**
   * Expire idle sessions and finish closes interrupted by a crash. Safe to
   * call from any instance or a scheduled function: a store-wide lease makes
   * concurrent sweeps skip. Resolves with the number of sessions closed.
   */
  async sweep(): Promise<number> {
    let total = 0;
    let leased = false;
    try {
      for (let round = 0; round < 100; round++) {
        const result = await this.store.sweep({ lease: { token: this.sweepToken, ms: this.leaseMs }, limit: 100 });
        if (result.status === 'busy') break;
        leased = true;
        if (result.closing.length === 0) break;
        await Promise.all(
          result.closing.map((s) =>
            this.runClose(s.sid, this.sweepToken, s.reason, s.userJson, s.stateJson),
          ),
        );
        total += result.closing.length;
        if (result.closing.length < 100) break;
      }
    } finally {
      // Done: hand the store-wide lease back rather than let it run out, so the next sweep (another
      // instance, or the next serverless invocation with a fresh token) need not wait `leaseMs`.
      if (leased) await this.store.sweep({ lease: { token: this.sweepToken, ms: 0 }, limit: 0 }).catch((err) => this.report(err, { phase: 'sweep' }));
    }
    return total;
  }

  /** Stop this object's timers. Does not close sessions (they live in the store). */
  async dispose(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    // Deliveries still running keep their renewals; the timer stops by itself once they end.
    if (this.leaseTimer && this.held.size === 0) {
      clearInterval(this.leaseTimer);
      this.leaseTimer = undefined;
    }
  }

  // --- routing ---------------------------------------------------------------

  private route(path: string): 'root' | 'send' | 'watch' | 'unknown' | null {
    if (path === this.path || path === this.path + '/') return 'root';
    if (!path.startsWith(this.path + '/')) return null;
    const rest = path.slice(this.path.length + 1);
    if (rest === 'send') return 'send';
    if (rest === 'watch') return 'watch';
    return 'unknown';
  }

  private async dispatch(route: 'root' | 'send' | 'watch' | 'unknown', req: BidiRequest): Promise<BidiResponse> {
    const m = req.method;
    switch (route) {
      case 'root':
        if (m === 'POST') return this.open(req);
        if (m === 'DELETE') return this.clientClose(req);
        break;
      case 'send':
        if (m === 'POST') return this.receive(req);
        break;
      case 'watch':
        if (m === 'GET') return this.watch(req);
        break;
      case 'unknown':
        throw new BidiError('NOT_FOUND', `no such path: ${req.path}`);
    }
    throw new BidiError('METHOD_NOT_ALLOWED', `${m} is not allowed here; use ${allowed(route)}`);
  }

  // --- open --------------------------------------------------------------------

  private async open(req: BidiRequest): Promise<BidiResponse> {
    if (this.openLimiter && this.clientKey) await this.admit(req, this.openLimiter, this.clientKey);
    const { meta } = parseOpen(await readJsonObject(req, this.limits), this.limits);
    const sid = newSessionId();
    const pending = new PendingSessionBackend(serialize);
    const session = new ServerSession<User, State, Out>(sid, undefined as User, {} as State, pending);
    // A session object kept from onOpen outlives the hook: until the store has the session its calls wait, then go
    // to the store; if it never will, they reject (a send that resolves with a seq is always delivered).
    let created = false;
    try {
      if (this.options.onOpen) {
        try {
          await this.options.onOpen(session, { headers: req.headers, query: req.query, meta, raw: req.raw });
        } catch (err) {
          if (!(err instanceof BidiError)) this.report(err, { phase: 'open', ...this.errorWho(sid, session) });
          throw err;
        }
      }
      const { initial, groups } = pending.seal();
      const userJson = serialize(session.user ?? null);
      const stateJson = serialize(session.state ?? {});
      if (utf8Length(userJson) + utf8Length(stateJson) > this.limits.maxSessionDataBytes) {
        throw new BidiError('INTERNAL', 'session user and state exceed limits.maxSessionDataBytes');
      }
      const r = await this.store.create({
        sid,
        userJson,
        stateJson,
        initial,
        idleMs: this.idleTimeout,
        maxSessions: this.limits.maxSessions,
        token: newToken(),
      });
      if (r.status === 'too-many-sessions') {
        throw new BidiError('TOO_MANY_SESSIONS', 'the server holds its maximum number of sessions; retry later', { retryAfter: 5 });
      }
      if (r.status === 'exists') throw new BidiError('INTERNAL', 'session id collision');
      created = true;
      pending.created(this.backend);
      for (const group of groups) await this.store.join(sid, group);
    } finally {
      if (!created) pending.failed();
    }
    const body = JSON.stringify({
      sid,
      v: PROTOCOL_VERSION,
      wait: this.wait,
      limits: {
        maxBodyBytes: this.limits.maxBodyBytes,
        maxMessageBytes: this.limits.maxMessageBytes,
        maxMessagesPerRequest: this.limits.maxMessagesPerRequest,
        inboundWindow: this.limits.inboundWindow,
        inboundBufferBytes: this.limits.inboundBufferBytes,
        maxResponseBytes: this.limits.maxResponseBytes,
        maxJsonDepth: this.limits.maxJsonDepth,
        maxWait: this.maxWait,
        idleTimeout: this.idleTimeout,
      },
    });
    return jsonResponse(201, body);
  }

  /** The open rate limit: one client key may not open more than its budget (see open-limit.ts). */
  private async admit(req: BidiRequest, limiter: OpenLimiter, clientKey: (request: BidiRequest) => string | null | undefined): Promise<void> {
    const key = clientKey(req);
    if (!key) return;
    let waitMs: number;
    try {
      waitMs = await limiter.take(key);
    } catch (err) {
      // The limiter's store failed: admit (the session's own store call decides, and fails the same way if it is down).
      this.report(err, { phase: 'open' });
      return;
    }
    if (waitMs > 0) {
      throw new BidiError('TOO_MANY_OPENS', 'this client opened too many sessions lately; retry later', { retryAfter: Math.ceil(waitMs / 1000) });
    }
  }

  // --- client → server -------------------------------------------------------------

  private async receive(req: BidiRequest): Promise<BidiResponse> {
    const t0 = this.obs.on ? this.obs.now() : 0;
    const sid = readSessionId(req);
    await this.authorize(req, sid);
    const { msgs, ack } = parseSend(await readJsonObject(req, this.limits), this.limits);
    const token = newToken();
    const result = await this.store.receive(sid, {
      msgs,
      ack,
      window: this.limits.inboundWindow,
      bufferBytes: this.limits.inboundBufferBytes,
      lease: { token, ms: this.leaseMs },
      maxDeliver: this.limits.maxMessagesPerRequest,
    });
    switch (result.status) {
      case 'unknown':
        throw unknownSession();
      case 'closed':
        throw new BidiError('SESSION_CLOSED', 'the session is closed');
      case 'invalid-ack':
        throw new BidiError('INVALID_ACK', `ack ${ack} is above the last server seq ${result.lastSeq}`);
      case 'out-of-window':
        throw new BidiError('SEQ_OUT_OF_WINDOW', `messages must stay within ${this.limits.inboundWindow} seqs and ${this.limits.inboundBufferBytes} buffered bytes of ack ${result.clientAck}`, { retryAfter: 1 });
    }
    let clientAck = result.clientAck;
    if (result.deliver.length > 0) {
      clientAck = await this.deliver(sid, token, result.deliver, result.userJson ?? 'null', result.stateJson ?? '{}', t0);
    }
    return jsonResponse(200, '{"ack":' + clientAck + '}');
  }

  /**
   * Runs the handler over a deliverable run while holding the session's
   * lease, recording each delivery (and the state it left) before the next.
   * Returns the client ack reached.
   */
  private async deliver(sid: string, token: string, first: StoredMessage[], userJson: string, stateJson: string, t0 = 0): Promise<number> {
    // The session's own sends ride on each message's commit (see ./outbox).
    const outbox = new Outbox(
      (msgs) => this.store.append(sid, msgs, this.limits, newAppendId()),
      (err) => this.report(err, { phase: 'message', ...this.errorWho(sid, session) }),
    );
    const backend: SessionBackend = { ...this.backend, send: (_sid, json, opts) => this.sendFromHandler(sid, outbox, json, opts) };
    const session = new ServerSession<User, State, Out>(sid, undefined as User, {} as State, backend, { user: userJson, state: stateJson });
    this.outboxes.set(sid, outbox);
    let savedState = stateJson;
    const lease = this.holdLease(sid, token);
    let clientAck = first[0]!.seq - 1;
    try {
      let batch = first;
      while (batch.length > 0 && !lease.lost) {
        let next: StoredMessage[] = [];
        for (let i = 0; i < batch.length; i++) {
          const msg = batch[i]!;
          let threw = false;
          try {
            await this.options.onMessage?.(session, JSON.parse(msg.json), { seq: msg.seq });
          } catch (err) {
            // A throwing handler still consumes its message: redelivering it would loop forever.
            threw = true;
            this.report(err, { phase: 'message', seq: msg.seq, ...this.errorWho(sid, session) });
          }
          if (this.obs.on) this.obs.delivered(sid, msg.seq, t0, threw);
          const newState = this.stateToSave(session, savedState);
          const last = i === batch.length - 1;
          let sends = await outbox.take();
          const commit = () =>
            this.store.commit(sid, {
              token,
              seq: msg.seq,
              stateJson: newState,
              leaseMs: this.leaseMs,
              next: last,
              maxDeliver: this.limits.maxMessagesPerRequest,
              ...(sends.length > 0 ? { sends: { msgs: sends.map((q) => q.json), limits: this.limits } } : {}),
            });
          let r: CommitResult;
          try {
            r = await commit();
            if (r.status === 'pull') {
              // A group member: its sends go after the groups' entries, by append, before the record.
              await outbox.appendNow(sends);
              sends = [];
              r = await commit();
            }
          } catch (err) {
            outbox.fail(sends, err);
            throw err;
          }
          lease.renewedAt = Date.now();
          if (r.status === 'lost' || r.status === 'pull') {
            outbox.fail(sends, leaseLost());
            return clientAck;
          }
          outbox.settle(sends, r.sent);
          if (newState !== undefined) savedState = newState;
          clientAck = r.clientAck;
          if (r.status === 'closing') {
            this.releaseLease(lease);
            await this.endOutbox(sid, outbox);
            await this.runClose(sid, token, r.reason, r.userJson, r.stateJson, session);
            return clientAck;
          }
          if (last) next = r.deliver;
        }
        batch = next;
      }
      return clientAck;
    } finally {
      this.releaseLease(lease);
      await this.endOutbox(sid, outbox);
    }
  }

  /** The delivery is over: what its handler still queued is stored now, and later sends go straight to the store. */
  private async endOutbox(sid: string, outbox: Outbox): Promise<void> {
    if (this.outboxes.get(sid) === outbox) this.outboxes.delete(sid);
    await outbox.close();
  }

  /** `session.send()` from the session being delivered to: queued for the commit unless it must wait for room. */
  private sendFromHandler(sid: string, outbox: Outbox, json: string, options: SendOptions | undefined): Promise<number> {
    const whenFull = options?.whenFull ?? this.options.whenFull ?? 'reject';
    if (!outbox.open || whenFull === 'wait' || utf8Length(json) > this.limits.maxMessageBytes) return this.sendJson(sid, json, options);
    return outbox.add(json);
  }

  /** A fan-out is about to go out: every running delivery's queued sends go first (cheap: only deliveries in progress here). */
  private async flushOutboxes(): Promise<void> {
    for (const outbox of [...this.outboxes.values()]) await outbox.flush();
  }

  /** Another path is about to append to `sid`: a delivery's queued sends go first, so this process's sends keep their order. */
  private async flushOutbox(sid: string): Promise<void> {
    const outbox = this.outboxes.get(sid);
    if (outbox) await outbox.flush();
  }

  /**
   * Keeps a delivery lease renewed (every `leaseMs / 3`) while its handlers
   * run. One timer per server object serves every delivery in progress,
   * instead of one timer per request.
   */
  private holdLease(sid: string, token: string): HeldLease {
    const lease: HeldLease = { sid, token, renewedAt: Date.now(), lost: false };
    this.held.add(lease);
    if (!this.leaseTimer) {
      const every = Math.max(50, Math.floor(this.leaseMs / 3));
      this.leaseTimer = setInterval(() => this.renewLeases(every), Math.max(25, Math.floor(every / 2)));
      (this.leaseTimer as { unref?: () => void }).unref?.();
    }
    return lease;
  }

  private releaseLease(lease: HeldLease): void {
    this.held.delete(lease);
  }

  private renewLeases(every: number): void {
    if (this.held.size === 0) {
      clearInterval(this.leaseTimer);
      this.leaseTimer = undefined;
      return;
    }
    const now = Date.now();
    for (const lease of this.held) {
      if (now - lease.renewedAt < every) continue;
      lease.renewedAt = now;
      this.store.renewLease(lease.sid, lease.token, this.leaseMs).then(
        (ok) => (lease.lost ||= !ok),
        (err) => this.report(err, { phase: 'message', session: sessionLabel(lease.sid) }),
      );
    }
  }

  private stateToSave(session: ServerSession<User, State, Out>, saved: string): string | undefined {
    if (session.stateUntouched) return undefined; // never read or set: unchanged
    let json: string;
    try {
      json = serialize(session.state ?? {});
    } catch (err) {
      this.report(err, { phase: 'state', ...this.errorWho(session.id, session) });
      return undefined;
    }
    if (json === saved) return undefined;
    if (utf8Length(json) > this.limits.maxSessionDataBytes) {
      this.report(new BidiError('INTERNAL', 'session.state exceeds limits.maxSessionDataBytes; not saved'), { phase: 'state', ...this.errorWho(session.id, session) });
      return undefined;
    }
    return json;
  }

  // --- server → client -----------------------------------------------------------------

  private async watch(req: BidiRequest): Promise<BidiResponse> {
    const sid = readSessionId(req);
    await this.authorize(req, sid);
    const { ack, wait, stream } = parseWatch(req.query, this.wait, this.maxWait);
    const run = new WatchRun(this.store, sid, ack, Date.now() + wait, this.limits.maxMessagesPerResponse, this.limits.maxResponseBytes, req.signal, this.limits);
    if (this.obs.on) run.onDispose = this.obs.watch(sid, ack, stream);
    let handedOff = false;
    try {
      // Subscribe before the first read so no wake-up can fall between them.
      await run.subscribe();
      let r = await run.read(true);
      if (stream && req.canStream && r.status === 'ok') {
        const s = new WatchStream(run, r, this.streamLimits, this.heartbeatMs, (err) => this.report(err, { phase: 'request', session: sessionLabel(sid) }));
        handedOff = true;
        const headers: Record<string, string> = { ...STREAM_HEADERS };
        if (this.heartbeatMs > 0) headers[HEARTBEAT_HEADER] = String(this.heartbeatMs);
        return { status: 200, headers, body: s.first, stream: s };
      }
      while (r.status === 'ok' && r.msgs.length === 0 && !r.close && !r.superseded && !run.superseded && !req.signal?.aborted) {
        if (run.deadline - Date.now() <= 0) break;
        await run.waitForNews();
        if (run.superseded) break;
        r = await run.read(false);
      }
      return this.watchResponse(r, ack, run.superseded);
    } finally {
      if (!handedOff) run.dispose();
    }
  }

  private watchResponse(r: ReadResult, ack: number, superseded: boolean): BidiResponse {
    if (r.status === 'unknown') throw unknownSession();
    if (r.status === 'invalid-ack') throw new BidiError('INVALID_ACK', `ack ${ack} is above the last server seq ${r.lastSeq}`);
    if (superseded || r.superseded) return jsonResponse(200, watchBody([], r.clientAck, { superseded: true }));
    return jsonResponse(200, watchBody(r.msgs, r.clientAck, { close: r.close }));
  }

  /** A server message as JSON, within `limits.maxMessageBytes` (every send, broadcast and publish goes through here). */
  private outgoing(data: unknown): string {
    return this.checkSize(serialize(data));
  }

  private checkSize(json: string): string {
    if (utf8Length(json) > this.limits.maxMessageBytes) {
      throw new BidiError('MESSAGE_TOO_LARGE', `message exceeds limits.maxMessageBytes (${this.limits.maxMessageBytes})`);
    }
    return json;
  }

  private async sendJson(sid: string, json: string, options?: SendOptions): Promise<number> {
    this.checkSize(json);
    await this.flushOutbox(sid);
    const whenFull = options?.whenFull ?? this.options.whenFull ?? 'reject';
    const deadline = Date.now() + this.sendTimeout;
    // One id for every attempt of this send: a store client that resends the append makes no second copy.
    const appendId = newAppendId();
    for (;;) {
      // Subscribe first so an ack between a 'full' answer and the wait still wakes us.
      let acked = false;
      let wake: (() => void) | undefined;
      let unsubscribe: Unsubscribe | undefined;
      let subscribed = whenFull !== 'wait';
      if (whenFull === 'wait') {
        try {
          unsubscribe = await this.store.subscribe(sid, (e) => {
            if (e.type === 'ack' || e.type === 'close') {
              acked = true;
              wake?.();
            }
          });
          subscribed = true;
        } catch (err) {
          // No wake-ups to be had right now: poll for room instead of sleeping through it.
          if (!(err instanceof BidiError && err.code === 'STORE_UNAVAILABLE')) throw err;
        }
      }
      try {
        const r = await this.store.append(sid, [json], this.limits, appendId);
        if (r.status !== 'full' || whenFull === 'reject') return appendSeq(r);
        const left = deadline - Date.now();
        if (left <= 0) throw new BidiError('SEND_TIMEOUT', `the client did not make room within ${this.sendTimeout} ms`);
        if (!acked) {
          const waiter = wakeable(subscribed ? left : Math.min(left, SEND_POLL_MS));
          wake = waiter.wake;
          await waiter.done;
        }
      } finally {
        unsubscribe?.();
      }
    }
  }

  // --- close ---------------------------------------------------------------------

  private async clientClose(req: BidiRequest): Promise<BidiResponse> {
    const sid = readSessionId(req);
    await this.authorize(req, sid);
    await this.closeSession(sid, 'client', true);
    return jsonResponse(200, '{"closed":true}');
  }

  /** Move to closing; if this call gets the lease, run onClose now, else the lease holder or a sweep will. */
  private async closeSession(sid: string, reason: string, fromClient = false): Promise<void> {
    // The close marker must follow every message sent before it.
    await this.flushOutbox(sid);
    const token = newToken();
    const r = await this.store.close(sid, { reason: reason.slice(0, CLOSE_REASON_MAX), lease: { token, ms: this.leaseMs } });
    if (r.status === 'unknown') {
      if (fromClient) throw unknownSession();
      throw new BidiError('UNKNOWN_SESSION', 'no such session');
    }
    if (r.leased) await this.runClose(sid, token, r.reason, r.userJson, r.stateJson);
  }

  private async runClose(
    sid: string,
    token: string,
    reason: string,
    userJson: string,
    stateJson: string,
    session?: ServerSession<User, State, Out>,
  ): Promise<void> {
    const s = session ?? new ServerSession<User, State, Out>(sid, undefined as User, {} as State, this.backend, { user: userJson, state: stateJson });
    try {
      await this.options.onClose?.(s, reason);
    } catch (err) {
      this.report(err, { phase: 'close', ...this.errorWho(sid, s) });
    }
    await this.store.finishClose(sid, token);
  }

  // --- hub -------------------------------------------------------------------------

  private makeHub(): Hub<User, State, Out> {
    const toResult = (sids: readonly string[], results: AppendResult[]): BroadcastResult => {
      const out: BroadcastResult = { sent: 0, failed: [] };
      results.forEach((r, i) => {
        if (r.status === 'ok') out.sent++;
        else out.failed.push({ sid: sids[i]!, code: r.status === 'unknown' ? 'UNKNOWN_SESSION' : r.status === 'closed' ? 'SESSION_CLOSED' : 'SEND_WINDOW_FULL' });
      });
      return out;
    };
    const broadcast = async (sids: readonly string[], data: unknown): Promise<BroadcastResult> => {
      const json = this.outgoing(data);
      if (sids.length === 0) return { sent: 0, failed: [] };
      await this.flushOutboxes();
      return toResult(sids, await this.store.appendMany([...sids], json, this.limits, newAppendId()));
    };
    return {
      send: (sid, data, options) => this.sendJson(sid, serialize(data), options),
      broadcast,
      publish: async (group, data) => {
        const json = this.outgoing(data);
        await this.flushOutboxes();
        // Written once to the group's log; members pull it into their own logs (docs/STORE.md, "Groups").
        const r = await this.store.publish(group, json, { maxEntries: this.limits.groupLogEntries, maxAgeMs: this.limits.groupLogMs }, newAppendId());
        return { sent: r.members, failed: [] };
      },
      close: (sid, reason = 'server') => this.closeSession(sid, reason),
      join: (sid, group) => this.store.join(sid, group),
      leave: (sid, group) => this.store.leave(sid, group),
      members: (group) => this.store.members(group),
      inspect: async (sids) =>
        (await this.store.inspect([...sids])).map((info) =>
          info ? { status: info.status, user: JSON.parse(info.userJson), state: JSON.parse(info.stateJson) } : null,
        ),
      count: () => this.store.count(),
      sessions: (options) => this.listSessions(options),
    };
  }

  private async listSessions(options: SessionListOptions = {}): Promise<SessionPage<User, State>> {
    const limit = options.limit ?? LIST_DEFAULT;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > LIST_MAX) {
      throw new BidiError('BAD_REQUEST', `limit must be an integer from 1 to ${LIST_MAX}, got ${String(limit)}`);
    }
    if (options.cursor !== undefined && typeof options.cursor !== 'string') throw new BidiError('BAD_REQUEST', 'cursor must be a string');
    const page: SessionPage<User, State> = { sessions: [], cursor: options.cursor ?? null };
    const seen = new Set<string>();
    for (let round = 0; round < LIST_ROUNDS && page.sessions.length < limit; round++) {
      const r = await this.store.list({ ...(page.cursor !== null ? { cursor: page.cursor } : {}), limit: limit - page.sessions.length });
      page.cursor = r.cursor;
      const sids = r.sids.filter((sid) => !seen.has(sid) && seen.add(sid));
      const infos = sids.length > 0 ? await this.store.inspect(sids) : [];
      infos.forEach((info, i) => {
        // The index may still hold a session that has just closed, or whose keys expired unswept.
        if (info && info.status !== 'closed') {
          page.sessions.push({ id: sids[i]!, status: info.status, user: JSON.parse(info.userJson), state: JSON.parse(info.stateJson) });
        }
      });
      if (r.cursor === null) break;
    }
    return page;
  }

  // --- helpers -------------------------------------------------------------------------

  private async authorize(req: BidiRequest, sessionId: string): Promise<void> {
    if (!this.options.authorize) return;
    try {
      await this.options.authorize({ headers: req.headers, query: req.query, sessionId, raw: req.raw });
    } catch (err) {
      if (err instanceof BidiError) throw err;
      this.report(err, { phase: 'request', session: sessionLabel(sessionId) });
      throw new BidiError('FORBIDDEN', 'request refused');
    }
  }

  private errorResponse(err: unknown, extraHeaders?: Record<string, string>, req?: BidiRequest): BidiResponse {
    const e = toBidiError(err);
    if (e.status >= 500 && !(typeof err === 'object' && err !== null && this.reported.has(err))) {
      // The session the request names, if any (well-formed, not verified: a label of it reveals nothing).
      const sid = req?.headers.get(SID_HEADER);
      this.report(err, sid && SESSION_ID_PATTERN.test(sid) ? { phase: 'request', session: sessionLabel(sid) } : { phase: 'request' });
    }
    const headers: Record<string, string> = { ...extraHeaders };
    if (e.retryAfter !== undefined) headers['retry-after'] = String(e.retryAfter);
    if (e.code === 'STORE_UNAVAILABLE') {
      return jsonResponse(503, JSON.stringify({ error: { code: e.code, message: 'the session store is unavailable; retry' } }), headers);
    }
    const status = e.status >= 500 ? 500 : e.status;
    const message = e.status >= 500 && e.code !== 'INTERNAL' ? 'internal error' : e.message;
    return jsonResponse(status, JSON.stringify({ error: { code: status === 500 ? 'INTERNAL' : e.code, message } }), headers);
  }

  /** `onError`'s context for one session: its label, and its user when the session object has one. */
  private errorWho(sid: string, session?: ServerSession<User, State, Out>): { session: string; user?: User } {
    const who: { session: string; user?: User } = { session: sessionLabel(sid) };
    try {
      const user = session?.user;
      if (user !== undefined && user !== null) who.user = user;
    } catch {
      // user JSON that does not parse: the label alone
    }
    return who;
  }

  private report(error: unknown, context: ErrorContext<User>): void {
    if (typeof error === 'object' && error !== null) this.reported.add(error);
    if (this.options.onError) {
      try {
        this.options.onError(error, context);
      } catch {
        // an error reporter that throws must not take a request down
      }
      return;
    }
    // The stack only: errors from store clients carry their command's arguments
    // (session keys, so session ids) as properties, and sids are never logged.
    this.logLimited(context.phase, error instanceof Error ? (error.stack ?? error.message) : String(error), 'error');
  }

  /**
   * The default log. A client that can cause an error must not flood it: the first of a kind (phase
   * and first line) per interval is logged, with how many were left out since the last one.
   */
  private logLimited(phase: ErrorPhase, text: string, level: 'error' | 'warning'): void {
    let kind = phase + ':' + text.slice(0, Math.min(200, (text + '\n').indexOf('\n')));
    const now = Date.now();
    if (!this.logged.has(kind) && this.logged.size >= LOG_KINDS_MAX) {
      for (const [k, v] of this.logged) if (now - v.since >= LOG_INTERVAL_MS && v.suppressed === 0) this.logged.delete(k);
      // Still full: many kinds at once (a client varying its input); they share one line.
      if (this.logged.size >= LOG_KINDS_MAX) kind = 'other';
    }
    const seen = this.logged.get(kind);
    if (seen && now - seen.since < LOG_INTERVAL_MS) {
      seen.suppressed++;
      return;
    }
    const suppressed = seen?.suppressed ?? 0;
    this.logged.set(kind, { since: now, suppressed: 0 });
    const more = suppressed > 0 ? ` (and ${suppressed} more like it in the last ${Math.round((now - seen!.since) / 1000)} s, not logged)` : '';
    console.error(`[bidiweb] ${phase} ${level}${more}: ${text}`);
  }
}

export function createBidiServer<User = unknown, State extends object = Record<string, unknown>, In = unknown, Out = unknown>(
  options: BidiOptions<User, State, In, Out> = {},
): BidiServer<User, State, In, Out> {
  return new BidiServer(options);
}

/**
 * Adapters accept options or a server built elsewhere. Duck-typed: the ESM
 * and CJS builds each have their own class object, so `instanceof` can lie.
 */
export function toBidiServer<User, State extends object, In = unknown, Out = unknown>(
  optionsOrServer: BidiOptions<User, State, In, Out> | BidiServer<User, State, In, Out> = {},
): BidiServer<User, State, In, Out> {
  const x = optionsOrServer as BidiServer<User, State, In, Out>;
  return typeof x.handle === 'function' && 'hub' in x ? x : new BidiServer(optionsOrServer as BidiOptions<User, State, In, Out>);
}

function appendSeq(r: AppendResult): number {
  switch (r.status) {
    case 'ok':
      return r.lastSeq;
    case 'unknown':
      throw new BidiError('UNKNOWN_SESSION', 'no such session');
    case 'closed':
      throw new BidiError('SESSION_CLOSED', 'the session is closed');
    case 'full':
      throw new BidiError('SEND_WINDOW_FULL', 'the session has too many unacked messages; the client is not keeping up');
  }
}

/** A wait that ends at `ms`, on abort, or when `wake()` is called, leaving no timer or listener behind. */
function wakeable(ms: number, signal?: AbortSignal): { done: Promise<void>; wake: () => void } {
  let wake!: () => void;
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(finish, ms);
    signal?.addEventListener('abort', finish, { once: true });
    function finish() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', finish);
      resolve();
    }
    wake = finish;
  });
  return { done, wake };
}

function unknownSession(): BidiError {
  return new BidiError('UNKNOWN_SESSION', 'unknown session: it never existed, expired, or the store lost it');
}

function serialize(data: unknown): string {
  const json = JSON.stringify(data);
  if (json === undefined) throw new TypeError('bidiweb: a message must be JSON-serialisable');
  return json;
}

function normalizePath(path: string): string {
  if (!path.startsWith('/')) throw new BidiError('INVALID_OPTIONS', `path must start with "/", got ${JSON.stringify(path)}`);
  // '/' becomes '': mounted under a framework prefix, the server owns everything below it.
  return path.replace(/\/+$/, '');
}

function positive(name: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new BidiError('INVALID_OPTIONS', `${name} must be an integer between 0 and ${max}, got ${String(value)}`);
  }
  return value;
}

function allowed(route: string): string {
  return route === 'root' ? 'POST, DELETE' : route === 'send' ? 'POST' : route === 'watch' ? 'GET' : '';
}

// --- watches -----------------------------------------------------------------------------

const STREAM_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-type': STREAM_CONTENT_TYPE,
  'cache-control': 'no-store',
  // Ask buffering reverse proxies (nginx) to pass frames on at once.
  'x-accel-buffering': 'no',
});

interface StreamLimits {
  /** A streaming watch ends once it has streamed this many messages (the client's next watch acks them)... */
  messages: number;
  /** ...or this many bytes of them. */
  bytes: number;
}

/**
 * One watch request: its token, its subscription to the session's events,
 * and one timer for its whole wait (not one per wake-up).
 */
class WatchRun {
  readonly token = newToken();
  /** Events that may bring news, and how many of them the last read had seen. */
  private news = 0;
  private seen = 0;
  superseded = false;
  /** Our own claim's event came back: later claims are newer watches. */
  private claimSeen = false;
  private unsubscribe?: Unsubscribe;
  private wake?: () => void;
  private timer?: ReturnType<typeof setTimeout>;
  private disposed = false;
  /** Called once when the watch is over (the observer's watch gauge). */
  onDispose?: () => void;

  constructor(
    private readonly store: Store,
    private readonly sid: string,
    private readonly ack: number,
    readonly deadline: number,
    private readonly maxMessages: number,
    private readonly maxBytes: number,
    private readonly signal: AbortSignal | undefined,
    /** The unacked bounds, for the group entries a read pulls in. */
    private readonly limits?: AppendLimits,
  ) {}

  async subscribe(): Promise<void> {
    const unsubscribe = await this.store.subscribe(this.sid, this.onEvent);
    if (this.disposed) unsubscribe();
    else this.unsubscribe = unsubscribe;
  }

  private readonly onEvent = (event: StoreEvent): void => {
    // A trim never brings a watch anything to return (it only waits on an empty log).
    if (event.type === 'ack') return;
    if (event.type === 'watch') {
      if (event.token === this.token) {
        this.claimSeen = true;
        return;
      }
      // Events come in the store's order: a claim seen after our own is a newer watch. One seen
      // before it may be an older watch's claim arriving late (the subscription was active before
      // our claim): let the next read say whether we are still the session's watch.
      if (this.claimSeen) this.superseded = true;
    }
    this.news++;
    this.wake?.();
  };

  /** `maxBytes`: a stream's budget left (default: the whole response budget). */
  read(claim: boolean, after?: number, maxBytes = this.maxBytes): Promise<ReadResult> {
    this.seen = this.news;
    return this.store.read(this.sid, {
      ack: this.ack,
      watchToken: this.token,
      claim,
      maxMessages: this.maxMessages,
      maxBytes,
      ...(this.limits ? { limits: { maxUnackedMessages: this.limits.maxUnackedMessages, maxUnackedBytes: this.limits.maxUnackedBytes } } : {}),
      ...(after !== undefined ? { after: Math.max(after, this.ack) } : {}),
    });
  }

  /** Events came since the last read. */
  get hasNews(): boolean {
    return this.news !== this.seen;
  }

  /**
   * Waits for news: `'news'` when events came since the last read, `'end'`
   * when the wait ended (deadline, client gone, disposed) without any, and,
   * given `idleMs`, `'idle'` when that long passed first (a heartbeat is due).
   * The idle timer never outlives the call; the deadline's is cleared by `dispose()`.
   */
  waitForNews(idleMs = 0): Promise<'news' | 'idle' | 'end'> {
    if (this.news !== this.seen) return Promise.resolve('news');
    if (this.ended) return Promise.resolve('end');
    return new Promise((resolve) => {
      const signal = this.signal;
      let idleTimer: ReturnType<typeof setTimeout> | undefined;
      const done = () => {
        this.wake = undefined;
        if (idleTimer) clearTimeout(idleTimer);
        signal?.removeEventListener('abort', done);
        resolve(this.news !== this.seen ? 'news' : 'end');
      };
      this.wake = done;
      signal?.addEventListener('abort', done, { once: true });
      if (!this.timer) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.wake?.();
        }, this.deadline - Date.now());
      }
      // Only when due before the deadline: at the deadline the stream ends instead.
      if (idleMs > 0 && idleMs < this.deadline - Date.now()) {
        idleTimer = setTimeout(() => {
          idleTimer = undefined;
          this.wake = undefined;
          signal?.removeEventListener('abort', done);
          resolve(this.news !== this.seen ? 'news' : this.ended ? 'end' : 'idle');
        }, idleMs);
      }
    });
  }

  /** The wait is over: deadline passed, client gone, or disposed. */
  private get ended(): boolean {
    return this.disposed || this.signal?.aborted === true || this.deadline - Date.now() <= 0;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.onDispose?.();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.wake?.();
  }
}

/**
 * A streaming watch (`stream=1`): one response, one frame per line, each
 * frame a watch body. Frames carry the messages that follow the previous
 * frame's; the stream ends at the wait, after a close marker or a
 * `superseded` frame, once it has streamed `limits` worth of messages (so
 * the client's next watch acks them), or when the client goes away. While
 * idle it writes a heartbeat (an empty line) every `heartbeatMs`.
 */
class WatchStream implements BidiStream {
  /** The first chunk (written with the headers): the first read's frame, or ''. */
  readonly first: string;
  private done = false;
  private ending = false;
  private after: number;
  private streamed = 0;
  private streamedBytes = 0;
  private clientAck = 0;
  /** The last next() returned a frame of messages. */
  private sentFrame = false;
  /** When the last chunk went out (the first goes with the headers). */
  private wroteAt = Date.now();

  constructor(
    private readonly run: WatchRun,
    r: Extract<ReadResult, { status: 'ok' }>,
    private readonly limits: StreamLimits,
    /** Write a heartbeat after this long without a chunk; 0 = never. */
    private readonly heartbeatMs: number,
    private readonly report: (err: unknown) => void,
  ) {
    this.after = 0;
    // Nothing to send yet: a heartbeat goes with the headers, so the body's first byte comes at once and
    // a client can tell a stream that something in between holds back from a quiet one (stream 'auto').
    this.first = this.frame(r) ?? (heartbeatMs > 0 ? HEARTBEAT_FRAME : '');
  }

  /** The frame for a read, or null when it brings nothing. Marks the stream as ending when it must. */
  private frame(r: Extract<ReadResult, { status: 'ok' }>): string | null {
    this.clientAck = r.clientAck;
    if (r.superseded || this.run.superseded) {
      this.ending = true;
      return watchBody([], r.clientAck, { superseded: true }) + '\n';
    }
    if (r.msgs.length === 0 && !r.close) return null;
    if (r.msgs.length > 0) {
      this.after = r.msgs[r.msgs.length - 1]!.seq;
      this.streamed += r.msgs.length;
      for (const m of r.msgs) this.streamedBytes += utf8Length(m.json);
    }
    if (r.close || this.streamed >= this.limits.messages || this.streamedBytes >= this.limits.bytes) this.ending = true;
    return watchBody(r.msgs, r.clientAck, { close: r.close }) + '\n';
  }

  async next(): Promise<string | null> {
    const chunk = await this.nextChunk();
    if (chunk !== null) this.wroteAt = Date.now();
    return chunk;
  }

  private async nextChunk(): Promise<string | null> {
    try {
      // More news already, right after a frame: messages are coming faster than frames go out.
      // Let them gather for one turn of the event loop, then send them as one frame.
      if (this.sentFrame && this.run.hasNews && !this.ending) await new Promise((resolve) => setTimeout(resolve, 0));
      this.sentFrame = false;
      for (;;) {
        if (this.done) return null;
        // Idle for heartbeatMs since the last chunk (not since this call: a wake-up may bring nothing).
        const idleMs = this.heartbeatMs > 0 ? Math.max(1, this.heartbeatMs - (Date.now() - this.wroteAt)) : 0;
        const woke = this.ending ? 'end' : await this.run.waitForNews(idleMs);
        if (woke === 'end' || this.done) {
          this.close();
          return null;
        }
        if (woke === 'idle') return HEARTBEAT_FRAME;
        if (this.run.superseded) {
          this.ending = true;
          return watchBody([], this.clientAck, { superseded: true }) + '\n';
        }
        const r = await this.run.read(false, this.after, Math.max(1, this.limits.bytes - this.streamedBytes));
        if (this.done) return null;
        if (r.status !== 'ok') {
          // The session vanished mid-stream (or the store lost it): tell the client as a 4xx would.
          this.ending = true;
          const e = r.status === 'unknown' ? unknownSession() : new BidiError('INVALID_ACK', `ack is above the last server seq ${r.lastSeq}`);
          return JSON.stringify({ error: { code: e.code, message: e.message } }) + '\n';
        }
        const frame = this.frame(r);
        if (frame !== null) {
          this.sentFrame = true;
          return frame;
        }
      }
    } catch (err) {
      // A store failure mid-stream: end it; the client watches again.
      this.report(err);
      this.close();
      return null;
    }
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.run.dispose();
  }
}
