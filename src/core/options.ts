/**
 * The server's options: their types, their defaults, and the checks that
 * turn them into settings once, when a server is built. A bad option throws
 * `BidiError('INVALID_OPTIONS')` there, never later in a request.
 */
import { DEFAULT_HEARTBEAT_MS } from '../wire';
import { BidiError } from './errors';
import type { BidiRequest, CorsOptions, HeaderReader } from './http';
import { CorsPolicy } from './http';
import type { Limits } from './limits';
import { DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_LEASE_MS, DEFAULT_WAIT_MS, MAX_WAIT_CAP_MS, resolveLimits } from './limits';
import type { ObserveOptions } from './observe';
import type { OpenLimit, OpenLimiter } from './open-limit';
import { DEFAULT_OPEN_LIMIT, defaultClientKey } from './open-limit';
import type { ServerSession, WhenFull } from './session';
import type { Store } from './store';

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

const DEFAULT_PATH = '/session';
const DEFAULT_SEND_TIMEOUT_MS = 30_000;
const DEFAULT_SWEEP_INTERVAL_MS = 5_000;


/**
 * 30 s without a byte taken: far longer than a slow mobile link needs to
 * take some of a 256 KiB response, short enough that sockets which never read
 * cannot pile up their responses for long.
 */
const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;

/** The options as the server runs with them: checked, defaults filled in. */
export interface Settings {
  /** The mount path, without a trailing slash ('' for '/'). */
  path: string;
  limits: Limits;
  wait: number;
  maxWait: number;
  idleTimeout: number;
  leaseMs: number;
  sendTimeout: number;
  heartbeatMs: number;
  drainTimeout: number;
  /** 0 or less: no sweep timer. Not checked: a negative value turns the timer off as 0 does. */
  sweepInterval: number;
  cors: CorsPolicy;
  clientKey: ((request: BidiRequest) => string | null | undefined) | false;
  /** The checked open limit, or false for none. */
  openLimit: OpenLimit | false;
}

/** Checks the options and fills in defaults. Throws `BidiError('INVALID_OPTIONS')` on the first bad one. */
export function resolveOptions<User, State extends object, In, Out>(options: BidiOptions<User, State, In, Out>): Settings {
  const path = normalizePath(options.path ?? DEFAULT_PATH);
  const limits = resolveLimits(options.limits);
  const maxWait = checkedInteger('maxWait', options.maxWait ?? MAX_WAIT_CAP_MS, MAX_WAIT_CAP_MS);
  const wait = checkedInteger('wait', options.wait ?? Math.min(DEFAULT_WAIT_MS, maxWait), maxWait);
  const idleTimeout = checkedInteger('idleTimeout', options.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS);
  if (idleTimeout <= maxWait) {
    throw new BidiError('INVALID_OPTIONS', `idleTimeout (${idleTimeout}) must exceed maxWait (${maxWait}), or waiting clients would expire`);
  }
  const leaseMs = checkedInteger('leaseMs', options.leaseMs ?? DEFAULT_LEASE_MS);
  const sendTimeout = checkedInteger('sendTimeout', options.sendTimeout ?? DEFAULT_SEND_TIMEOUT_MS);
  // Above the longest wait a heartbeat could never be due: the stream ends first.
  const heartbeatMs = checkedInteger('heartbeatMs', options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS, MAX_WAIT_CAP_MS);
  const drainTimeout = checkedInteger('drainTimeout', options.drainTimeout ?? DEFAULT_DRAIN_TIMEOUT_MS);
  const cors = new CorsPolicy(options.cors, options.allowedHosts);
  const openLimit = options.openLimit ?? DEFAULT_OPEN_LIMIT;
  if (openLimit) {
    checkedInteger('openLimit.opens', openLimit.opens);
    checkedInteger('openLimit.perSeconds', openLimit.perSeconds);
    if (openLimit.opens < 1 || openLimit.perSeconds < 1) throw new BidiError('INVALID_OPTIONS', 'openLimit.opens and openLimit.perSeconds must be at least 1');
  }
  return {
    path,
    limits,
    wait,
    maxWait,
    idleTimeout,
    leaseMs,
    sendTimeout,
    heartbeatMs,
    drainTimeout,
    sweepInterval: options.sweepInterval ?? DEFAULT_SWEEP_INTERVAL_MS,
    cors,
    clientKey: options.clientKey ?? defaultClientKey,
    openLimit,
  };
}

function normalizePath(path: string): string {
  if (!path.startsWith('/')) throw new BidiError('INVALID_OPTIONS', `path must start with "/", got ${JSON.stringify(path)}`);
  // '/' becomes '': mounted under a framework prefix, the server owns everything below it.
  return path.replace(/\/+$/, '');
}

function checkedInteger(name: string, value: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new BidiError('INVALID_OPTIONS', `${name} must be an integer between 0 and ${max}, got ${String(value)}`);
  }
  return value;
}
