import { Backoff, overBudget, TimerSet, type RetryBudget } from './backoff';
import { Emitter, type Listener } from './emitter';
import { AbortedError, BidiClientError, describe } from './errors';
import { Sender, tooLarge, type SenderHost } from './sender';
import { classify, headerProblem, resolveBaseUrl, splitBaseUrl, thrownOutcome, Transport, type Outcome } from './transport';
import type {
  ClientEvents,
  ClientOptions,
  CloseEvent,
  HeadersOption,
  Operation,
  ReopenInfo,
  ServerLimits,
  SessionState,
  TransportMode,
  WebSocketConstructorLike,
} from './types';
import { Watcher, type CloseMarker, type WatcherHost } from './watcher';
import { type AnnouncedLimits, DEFAULT_ANNOUNCED_LIMITS, DEFAULT_WAIT_MS, PROTOCOL_VERSION, utf8Length } from '../wire';
import { DEFAULT_CONNECT_TIMEOUT_MS, WebSocketChannel } from './websocket';

/** Limits the client always has: the server's defaults stand in for any an older server left out. */
const ASSUMED_LIMITS = ['maxBodyBytes', 'maxMessageBytes', 'maxMessagesPerRequest', 'inboundWindow', 'maxWait', 'idleTimeout'] as const;
/** Limits the client takes only when announced (it assumes nothing for them: an older server may bound otherwise). */
const OPTIONAL_LIMITS = ['inboundBufferBytes', 'maxMessagesPerResponse', 'maxResponseBytes', 'maxUnackedMessages', 'maxUnackedBytes', 'maxJsonDepth', 'leaseMs'] as const;
/** A DELETE always gets at least this long, even when `closeTimeoutMs` is used up by the drain. */
const MIN_DELETE_TIMEOUT_MS = 1_000;
/** After a server close, how long the client waits for the answers of POSTs in flight before it ends. */
const SEND_SETTLE_MS = 2_000;
/** Default `retry.maxElapsedMs`: see `RetryOptions.maxElapsedMs` for why. */
const DEFAULT_MAX_ELAPSED_MS = 300_000;

interface ResolvedOptions {
  wait?: number;
  stream: boolean | 'auto';
  maxInflight: number;
  initialDelayMs: number;
  maxDelayMs: number;
  resendAfterMs: number;
  closeTimeoutMs: number;
  requestTimeoutMs: number;
  closeOnPageHide: boolean;
  budget: RetryBudget;
  reopen: boolean;
}

function option(name: string, value: unknown, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new RangeError(`bidiweb: option ${name} must be a number >= ${min}`);
  }
  return value;
}

function resolveOptions(o: ClientOptions): ResolvedOptions {
  const out: ResolvedOptions = {
    maxInflight: Math.floor(option('maxInflight', o.maxInflight, 4, 1)),
    initialDelayMs: option('retry.initialDelayMs', o.retry?.initialDelayMs, 250, 0),
    maxDelayMs: option('retry.maxDelayMs', o.retry?.maxDelayMs, 10_000, 0),
    resendAfterMs: option('resendAfterMs', o.resendAfterMs, 2_000, 1),
    closeTimeoutMs: option('closeTimeoutMs', o.closeTimeoutMs, 5_000, 0),
    requestTimeoutMs: option('requestTimeoutMs', o.requestTimeoutMs, 30_000, 1),
    stream: streamOption(o.stream),
    closeOnPageHide: o.closeOnPageHide !== false,
    budget: {
      maxAttempts: Math.floor(limitOption('retry.maxAttempts', o.retry?.maxAttempts, Infinity, 1)),
      maxElapsedMs: limitOption('retry.maxElapsedMs', o.retry?.maxElapsedMs, DEFAULT_MAX_ELAPSED_MS, 0),
    },
    reopen: o.reopen === true,
  };
  if (o.wait !== undefined) out.wait = option('wait', o.wait, 0, 0);
  return out;
}

/** Like `option`, and `Infinity` is allowed (no limit). */
function limitOption(name: string, value: unknown, fallback: number, min: number): number {
  if (value === Infinity) return value;
  return option(name, value, fallback, min);
}

/** Static headers are checked when the session is created: a bad one is a bug at the call of `open()`. */
function checkStaticHeaders(headers: HeadersOption | undefined): void {
  if (headers === undefined || typeof headers === 'function') return;
  if (typeof headers !== 'object' || headers === null) throw new TypeError('bidiweb: options.headers must be an object or a function');
  for (const name of Object.keys(headers)) {
    const value = headers[name];
    if (value === undefined) continue;
    const problem = headerProblem(name, String(value));
    if (problem) throw new TypeError(`bidiweb: options.headers: ${problem}`);
  }
}

function transportOption(value: unknown): TransportMode {
  if (value === undefined) return 'http';
  if (value !== 'http' && value !== 'websocket' && value !== 'auto') throw new RangeError("bidiweb: option transport must be 'auto', 'websocket' or 'http'");
  return value;
}

function streamOption(value: unknown): boolean | 'auto' {
  if (value === undefined || value === 'auto') return 'auto';
  if (typeof value !== 'boolean') throw new RangeError("bidiweb: option stream must be true, false or 'auto'");
  return value;
}

function parseLimits(value: unknown): ServerLimits {
  const src = value && typeof value === 'object' ? (value as Record<string, unknown>) : {};
  const limit = (key: keyof AnnouncedLimits): number | undefined => {
    const v = src[key];
    return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : undefined;
  };
  const limits = {} as ServerLimits;
  for (const key of ASSUMED_LIMITS) limits[key] = limit(key) ?? DEFAULT_ANNOUNCED_LIMITS[key];
  for (const key of OPTIONAL_LIMITS) {
    const v = limit(key);
    if (v !== undefined) limits[key] = v;
  }
  return limits;
}

/** The close event that a close marker from the server stands for. */
function closeEventFor(marker: CloseMarker): CloseEvent {
  if (marker.reason === 'client') return { code: 'CLIENT', reason: 'closed by the client' };
  if (marker.reason === 'expired') {
    return { code: 'EXPIRED', reason: 'the session expired on the server (idle timeout)' };
  }
  return { code: 'SERVER', reason: marker.reason };
}

function handledRejection(err: BidiClientError): Promise<void> {
  const p = Promise.reject(err);
  p.catch(() => {});
  return p;
}

/**
 * One bidiweb session, seen from the client. Create it with {@link open}.
 *
 * Guarantees:
 * - client → server: messages reach the server's handler in `send()` order,
 *   each once (the client retries, resends unacked messages, and the server
 *   dedupes by seq);
 * - server → client: `message` listeners see the server's messages in seq
 *   order, each exactly once, with no gap;
 * - the `close` event fires exactly once, after which `state` is `closed`,
 *   every pending `send()` promise is rejected, and no timer or request of
 *   the session is left (Node can exit).
 *
 * Listeners are called synchronously. A listener that throws does not break
 * the session: its exception is emitted as an `error` event (a
 * {@link BidiClientError} with code `LISTENER_ERROR` and the exception as
 * `cause`). If there is no `error` listener, or an `error` listener throws,
 * the exception is rethrown asynchronously (`queueMicrotask`), like an
 * exception in a DOM event listener.
 *
 * @typeParam TIn  type of the server's messages (not checked at run time)
 * @typeParam TOut type of the messages this client sends
 */
export class BidiClientSession<TIn = unknown, TOut = unknown> {
  private readonly opts: ResolvedOptions;
  private readonly events: Emitter<ClientEvents<TIn>>;
  private readonly transport: Transport;
  private readonly timers = new TimerSet();
  /** The host of the current server session's sender and watcher (a new one per reopen). */
  private host!: SenderHost & WatcherHost;
  private sender!: Sender;
  private watcher?: Watcher;
  /** Counts server sessions (reopens): callbacks of a lost session's sender and watcher are ignored. */
  private generation = 0;
  /** A watch of the current server session succeeded (a loss after that starts a new run of reopens). */
  private proven = false;
  /** Delays between reopens; its run counts sessions lost in a row before a watch succeeded. */
  private readonly reopenBackoff: Backoff;
  /** Set from a loss until the new session opened: the `reopen` event's argument. */
  private reopening?: ReopenInfo;
  private readonly metaJson?: string;
  /** Aborted when the session ends: cancels the open request and sleeps (a DELETE in flight runs to its answer or timeout). */
  private readonly lifetime = new AbortController();
  private readonly backingOff = new Set<Operation>();
  private _state: SessionState = 'connecting';
  private _sid?: string;
  private _limits?: ServerLimits;
  private _closeEvent?: CloseEvent;
  private closePromise?: Promise<void>;
  /** A DELETE went out (it is not sent twice when the page hides during close()). */
  private deleteSent = false;
  private resolveEnded!: () => void;
  private readonly ended = new Promise<void>((resolve) => (this.resolveEnded = resolve));

  /**
   * Prefer {@link open}. Starts opening the session at once.
   *
   * @param url     the server's base URL, e.g. `https://example.com/session`
   *                (a query string is kept on every request): absolute
   *                http(s), or, in a browser, relative to the page
   * @throws TypeError for a URL that is not that (a relative URL in Node,
   *         `'localhost:3000/session'`, ...), a static `headers` object with
   *         an invalid name or value, `meta` that is not JSON-serialisable, or
   *         no fetch; RangeError for an invalid numeric option
   */
  constructor(url: string, options: ClientOptions = {}) {
    if (typeof url !== 'string' || url === '') throw new TypeError('bidiweb: open(url) needs a URL string');
    const base = resolveBaseUrl(url);
    checkStaticHeaders(options.headers);
    this.opts = resolveOptions(options);
    if (options.meta !== undefined) {
      const json = JSON.stringify(options.meta);
      if (json === undefined) throw new TypeError('bidiweb: options.meta is not JSON-serialisable');
      this.metaJson = json;
    }
    this.events = new Emitter<ClientEvents<TIn>>((event, err) => this.onListenerError(event, err));
    this.transport = new Transport(base, options.headers, options.fetch);
    const mode = transportOption(options.transport);
    if (mode !== 'http') {
      const injected = options.WebSocket;
      const impl = injected ?? (globalThis as { WebSocket?: WebSocketConstructorLike }).WebSocket;
      if (typeof impl === 'function') {
        const connectTimeoutMs = option('connectTimeoutMs', options.connectTimeoutMs, DEFAULT_CONNECT_TIMEOUT_MS, 1);
        this.transport.channel = new WebSocketChannel(splitBaseUrl(base), mode, impl, options.headers, injected !== undefined, connectTimeoutMs, (error) =>
          this.events.emit('error', error),
        );
      } else if (mode === 'websocket') {
        throw new TypeError("bidiweb: transport 'websocket' needs a WebSocket class: pass options.WebSocket (e.g. the ws package's WebSocket in Node 20)");
      }
    }
    this.reopenBackoff = new Backoff(this.opts.initialDelayMs, this.opts.maxDelayMs);
    this.incarnate();
    this.watchPage();
    void this.runOpen();
  }

  /** `'connecting' | 'open' | 'closing' | 'closed'`. */
  get state(): SessionState {
    return this._state;
  }

  /** The session id (`sid`), once open; `undefined` before. A bearer secret: do not log it. */
  get id(): string | undefined {
    return this._sid;
  }

  /** Bytes (UTF-8 length of the JSON) of the messages sent but not yet acked by the server. */
  get bufferedAmount(): number {
    return this.sender.bufferedAmount;
  }

  /**
   * True while watches stream (`stream: true`, or `'auto'` until a stream
   * showed no byte in time); false before the session is open.
   */
  get streaming(): boolean {
    return this.watcher?.streaming ?? false;
  }

  /**
   * Which transport the next send or watch takes: `'websocket'`, or `'http'` (`transport: 'http'`,
   * or `'auto'` after no socket became ready; see {@link TransportMode}).
   */
  get activeTransport(): 'websocket' | 'http' {
    return this.transport.channel?.active ?? 'http';
  }

  /** True while some request (open, send, watch or close) waits in backoff before a retry. */
  get retrying(): boolean {
    return this.backingOff.size > 0;
  }

  /** The server's limits, once open. */
  get limits(): Readonly<ServerLimits> | undefined {
    return this._limits;
  }

  /** The close event, once closed. */
  get closeEvent(): Readonly<CloseEvent> | undefined {
    return this._closeEvent;
  }

  /** Adds a listener. See {@link ClientEvents} for the events and their arguments. */
  on<K extends keyof ClientEvents<TIn>>(event: K, listener: Listener<ClientEvents<TIn>[K]>): this {
    this.events.on(event, listener);
    return this;
  }

  /** Adds a listener that is removed after its first call. */
  once<K extends keyof ClientEvents<TIn>>(event: K, listener: Listener<ClientEvents<TIn>[K]>): this {
    this.events.once(event, listener);
    return this;
  }

  /** Removes a listener added with `on` or `once`. */
  off<K extends keyof ClientEvents<TIn>>(event: K, listener: Listener<ClientEvents<TIn>[K]>): this {
    this.events.off(event, listener);
    return this;
  }

  /**
   * Sends a message (any JSON-serialisable value). It gets the next client
   * seq now; messages sent before the session is open are queued.
   *
   * @returns a promise that resolves when the server acked the message (its
   *   handler has run), or rejects with a {@link BidiClientError} carrying the
   *   close event's `code` and `reason` if the session ends first. It rejects
   *   at once when the state is `closing` or `closed`, with `INVALID_MESSAGE`
   *   for a value JSON cannot represent, and with `MESSAGE_TOO_LARGE` above the
   *   server's `maxMessageBytes` (or too large for its `maxBodyBytes` even
   *   alone). The limits are known once open: a message sent before is checked
   *   when the open response arrives and rejected the same way, and the
   *   session carries on. These rejections consume no seq.
   *   Rejections caused by the end of the session are marked handled, so a
   *   fire-and-forget `send()` never produces an unhandled rejection.
   */
  send(data: TOut): Promise<void> {
    if (this._closeEvent) {
      const { code, reason, status, errorCode } = this._closeEvent;
      return handledRejection(new BidiClientError(code, reason, { status, errorCode }));
    }
    if (this._state === 'closing') return handledRejection(new BidiClientError('CLIENT', 'the session is closing'));
    let json: string | undefined;
    try {
      json = JSON.stringify(data);
    } catch (err) {
      return Promise.reject(
        new BidiClientError('INVALID_MESSAGE', `send: the message is not JSON-serialisable: ${describe(err)}`, { cause: err }),
      );
    }
    if (json === undefined) {
      return Promise.reject(new BidiClientError('INVALID_MESSAGE', 'send: the message is not JSON-serialisable'));
    }
    const bytes = utf8Length(json);
    // Before open the limits are unknown: the sender checks queued messages when they arrive.
    const problem = this._limits && tooLarge(bytes, this._limits);
    if (problem) return Promise.reject(new BidiClientError('MESSAGE_TOO_LARGE', `send: ${problem}`));
    return this.sender.enqueue(json, bytes);
  }

  /**
   * Closes the session: the state becomes `closing` (further `send()` calls
   * reject), the client waits up to `closeTimeoutMs` until every sent message
   * is acked (if the session is still connecting, that includes opening it;
   * with nothing queued, a connecting session is abandoned at once and the
   * server expires it), then sends `DELETE` and ends with code `CLIENT`.
   * Messages still unacked then are rejected. Idempotent.
   *
   * @returns a promise that resolves when the state is `closed` (whatever the
   *   close code); it never rejects.
   */
  close(): Promise<void> {
    if (this.closePromise) return this.closePromise;
    if (this._closeEvent) return Promise.resolve();
    this.setState('closing');
    this.closePromise = this.runClose();
    return this.closePromise;
  }

  /**
   * Retries now whatever waits in backoff after a failed request (open, send,
   * watch, close) instead of at the end of its delay: call it when you know
   * the network is back. In a browser the client does so by itself on the
   * `online` event. A wait the server asked for (`Retry-After`) is kept.
   */
  retryNow(): void {
    if (this._closeEvent) return;
    this.timers.wake();
  }

  // ---- internals -------------------------------------------------------------------------------

  private setState(state: SessionState): void {
    if (this._state === state) return;
    this._state = state;
    this.events.emit('state', state);
  }

  private onListenerError(event: keyof ClientEvents<TIn>, err: unknown): void {
    if (event !== 'error' && this.events.listenerCount('error') > 0) {
      this.events.emit(
        'error',
        new BidiClientError('LISTENER_ERROR', `a '${String(event)}' listener threw: ${describe(err)}`, { cause: err }),
      );
      return;
    }
    queueMicrotask(() => {
      throw err;
    });
  }

  /**
   * A fresh sender and host for a new server session: callbacks of the
   * previous ones (a lost session's POSTs and watch still answering) are
   * ignored from now on.
   */
  private incarnate(): void {
    const generation = ++this.generation;
    const live = (): boolean => generation === this.generation && !this._closeEvent;
    const host: SenderHost & WatcherHost = {
      transport: this.transport,
      timers: this.timers,
      serverAck: () => (live() ? (this.watcher?.delivered ?? 0) : 0),
      retry: (op, error, backoff, delayMs) => live() && this.onRetry(op, error, backoff, delayMs),
      retryDone: (op) => void (live() && this.backingOff.delete(op)),
      fail: (event) => void (live() && this.fail(event)),
      gone: () => void (live() && this.onSendGone()),
      deliver: (data, seq) => void (live() && this.events.emit('message', data as TIn, { seq })),
      ack: (value) => void (live() && sender.onAck(value)),
      // No new POSTs, but those in flight may carry the ack of a message whose handler closed the session.
      closeMarkerSeen: () => void (live() && sender.halt(true)),
      closed: (marker) => void (live() && this.endAfterSends(closeEventFor(marker))),
      watchOk: () => void (live() && (this.proven = true)),
    };
    const sender = new Sender(host, {
      maxInflight: this.opts.maxInflight,
      resendAfterMs: this.opts.resendAfterMs,
      maxResendDelayMs: Math.max(this.opts.resendAfterMs, this.opts.maxDelayMs),
      requestTimeoutMs: this.opts.requestTimeoutMs,
      initialDelayMs: this.opts.initialDelayMs,
      maxDelayMs: this.opts.maxDelayMs,
    });
    this.host = host;
    this.sender = sender;
  }

  /**
   * A transient error; with `backoff`/`delayMs` a backoff starts (emits
   * `error`, then `retry`), unless the retry budget is spent: then the
   * session ends with `RETRY_EXHAUSTED` and this returns false.
   */
  private onRetry(op: Operation, error: BidiClientError, backoff?: Backoff, delayMs?: number): boolean {
    if (this._closeEvent) return false;
    if (backoff !== undefined && delayMs !== undefined) {
      // close is bounded by closeTimeoutMs already.
      const spent = op === 'close' ? undefined : overBudget(backoff, delayMs, this.opts.budget);
      if (spent !== undefined) {
        const { status, errorCode } = error;
        this.end({
          code: 'RETRY_EXHAUSTED',
          reason: `${op}: ${spent}; last error: ${error.message}`,
          ...(status !== undefined ? { status } : {}),
          ...(errorCode !== undefined ? { errorCode } : {}),
        });
        return false;
      }
      this.backingOff.add(op);
    }
    this.events.emit('error', error);
    if (backoff !== undefined && delayMs !== undefined) {
      this.events.emit('retry', { op, attempt: backoff.attempt, delayMs, error });
    }
    return !this._closeEvent;
  }

  /** The current server session must end: reopened after a loss when asked to, else closed. */
  private fail(event: CloseEvent): void {
    if (event.code === 'SESSION_LOST' && this.opts.reopen && this._state === 'open') this.lose(event);
    else this.end(event);
  }

  /**
   * `reopen: true` and the server lost the session: reject its unacked sends,
   * drop its sender and watcher, and open a new session (after a backoff
   * delay, so that many clients of a restarted store spread their opens).
   */
  private lose(lost: CloseEvent): void {
    const { watcher, sender } = this;
    const delivered = watcher?.delivered ?? 0;
    const rejected = sender.size;
    this.incarnate();
    watcher?.stop();
    sender.halt();
    const { status, errorCode } = lost;
    sender.rejectAll(new BidiClientError('SESSION_LOST', lost.reason, { status, errorCode }));
    this.backingOff.clear();
    this.watcher = undefined;
    this._sid = undefined;
    this._limits = undefined;
    if (this.proven) this.reopenBackoff.reset();
    this.proven = false;
    const delay = this.reopenBackoff.next();
    const attempt = this.reopenBackoff.attempt;
    const spent = attempt > 1 ? overBudget(this.reopenBackoff, delay, this.opts.budget) : undefined;
    if (spent !== undefined) {
      this.end({
        code: 'RETRY_EXHAUSTED',
        reason: `reopen: ${spent}; every new session was lost before a watch succeeded (${lost.reason})`,
        ...(status !== undefined ? { status } : {}),
        ...(errorCode !== undefined ? { errorCode } : {}),
      });
      return;
    }
    this.reopening = { lost, rejected, delivered, attempt };
    this.setState('connecting');
    void this.reopenAfter(delay);
  }

  private async reopenAfter(delayMs: number): Promise<void> {
    this.backingOff.add('open');
    const waited = await this.timers.sleep(delayMs, this.lifetime.signal, true);
    this.backingOff.delete('open');
    if (!waited || this._closeEvent) return;
    await this.runOpen();
  }

  private async runOpen(): Promise<void> {
    const backoff = new Backoff(this.opts.initialDelayMs, this.opts.maxDelayMs);
    const body = `{"v":${PROTOCOL_VERSION}${this.metaJson === undefined ? '' : `,"meta":${this.metaJson}`}}`;
    const signal = this.lifetime.signal;
    for (;;) {
      let outcome: Outcome;
      try {
        const reply = await this.transport.request({
          method: 'POST',
          path: '',
          body,
          timeoutMs: this.opts.requestTimeoutMs,
          signal,
        });
        outcome = classify(reply, 'open');
        if (outcome.kind === 'ok' && (typeof outcome.body.sid !== 'string' || outcome.body.sid === '')) {
          outcome = {
            kind: 'retry',
            error: new BidiClientError('BAD_RESPONSE', `${reply.request ?? 'open'}: HTTP ${reply.status} without a sid`, { status: reply.status }),
          };
        }
      } catch (err) {
        if (err instanceof AbortedError || signal.aborted) return;
        outcome = thrownOutcome(err);
      }
      if (this._closeEvent) return;
      if (outcome.kind === 'ok') {
        this.onOpened(outcome.body);
        return;
      }
      if (outcome.kind === 'invalid') {
        this.end({ code: 'INVALID_REQUEST', reason: outcome.error.message });
        return;
      }
      if (outcome.kind === 'fatal') {
        const { status, errorCode, message } = outcome;
        this.end({ code: 'REJECTED', reason: message, status, ...(errorCode !== undefined ? { errorCode } : {}) });
        return;
      }
      const delay = backoff.next(outcome.retryAfterMs);
      if (!this.onRetry('open', outcome.error, backoff, delay)) return; // budget spent: the session ended
      await this.timers.sleep(delay, signal, outcome.retryAfterMs === undefined);
      this.backingOff.delete('open');
      if (this._closeEvent) return;
    }
  }

  private onOpened(body: Record<string, unknown>): void {
    const sid = body.sid as string;
    const limits = parseLimits(body.limits);
    const serverWait = typeof body.wait === 'number' && Number.isFinite(body.wait) && body.wait >= 0 ? body.wait : DEFAULT_WAIT_MS;
    const waitMs = Math.min(this.opts.wait ?? serverWait, limits.maxWait);
    this._sid = sid;
    this._limits = limits;
    this.watcher = new Watcher(this.host, {
      sid,
      waitMs,
      stream: this.opts.stream,
      onStreamOff: (error) => this.events.emit('error', error),
      initialDelayMs: this.opts.initialDelayMs,
      maxDelayMs: this.opts.maxDelayMs,
    });
    this.sender.start(sid, limits);
    this.watcher.start();
    const reopened = this.reopening;
    this.reopening = undefined;
    // If close() was called while connecting, the state stays 'closing' and 'open' is not emitted.
    if (this._state === 'connecting') {
      this.setState('open');
      // A listener may call close() at any point.
      if (reopened && this.state === 'open') this.events.emit('reopen', reopened);
      if (this.state === 'open') this.events.emit('open');
    }
  }

  /** A send was answered 410 SESSION_CLOSED. */
  private onSendGone(): void {
    if (this.watcher?.marker) return; // the watcher is already finishing the session
    this.sender.halt();
    if (this.watcher) this.watcher.probe();
    else this.end({ code: 'SESSION_CLOSED', reason: 'the server reports the session as closed', status: 410 });
  }

  private async runClose(): Promise<void> {
    await Promise.resolve(); // never emit events synchronously inside close()
    if (this._closeEvent) return;
    const deadline = Date.now() + this.opts.closeTimeoutMs;
    if (this._sid === undefined && this.sender.size === 0) {
      this.end({ code: 'CLIENT', reason: 'closed by the client' });
      return;
    }
    // Wait for acks (and for the open, if still connecting), bounded.
    await this.until(this.sender.drained(), deadline);
    if (this._closeEvent) return;
    if (this.watcher?.finishing) {
      // The server is closing the session too: let the watcher fetch what precedes its close.
      await this.until(this.ended, deadline);
      if (this._closeEvent) return;
    }
    const unacked = this.sender.size;
    this.watcher?.stop();
    this.sender.halt();
    if (this._sid !== undefined) await this.sendDelete(this._sid, deadline);
    this.end({
      code: 'CLIENT',
      reason: unacked ? `closed by the client; ${unacked} unacked message(s) discarded` : 'closed by the client',
    });
  }

  /**
   * The server closed the session and every message before its close marker
   * was delivered: end once the POSTs in flight got their answer (bounded),
   * so a `send()` whose handler closed the session resolves rather than
   * rejects. A streaming watch brings the close marker before the POST's answer.
   */
  private async endAfterSends(event: CloseEvent): Promise<void> {
    await this.until(this.sender.settled(), Date.now() + Math.min(SEND_SETTLE_MS, this.opts.requestTimeoutMs));
    this.end(event);
  }

  /** Waits for `p`, the end of the session, or the deadline, whichever comes first. */
  private async until(p: Promise<void>, deadline: number): Promise<void> {
    const timer = new AbortController();
    await Promise.race([p, this.ended, this.timers.sleep(deadline - Date.now(), timer.signal)]);
    timer.abort();
  }

  /** DELETE, retried on transient errors until the deadline. Any final answer (even 404) is fine. */
  private async sendDelete(sid: string, deadline: number): Promise<void> {
    const backoff = new Backoff(this.opts.initialDelayMs, this.opts.maxDelayMs);
    const signal = this.lifetime.signal;
    for (;;) {
      let outcome: Outcome;
      try {
        this.deleteSent = true;
        const reply = await this.transport.request({
          method: 'DELETE',
          path: '',
          sid,
          timeoutMs: Math.min(this.opts.requestTimeoutMs, Math.max(deadline - Date.now(), MIN_DELETE_TIMEOUT_MS)),
          // No signal: a page that hides now ends the session, and must not cancel this (only its timeout
          // does). Not a shared never-aborted one either: every session's DELETE would add a listener to it.
          keepalive: true,
        });
        outcome = classify(reply, 'close');
      } catch (err) {
        if (err instanceof AbortedError || signal.aborted) return;
        outcome = thrownOutcome(err);
      }
      if (outcome.kind !== 'retry') return;
      const delay = backoff.next(outcome.retryAfterMs);
      if (Date.now() + delay >= deadline) {
        this.onRetry('close', outcome.error); // report, give up: the server expires the session
        return;
      }
      this.onRetry('close', outcome.error, backoff, delay);
      await this.timers.sleep(delay, signal, outcome.retryAfterMs === undefined);
      this.backingOff.delete('close');
      if (this._closeEvent) return;
    }
  }

  /**
   * Browsers only. `online`: retry now what waits in backoff. `pagehide`: end
   * the session when the page is unloaded (see `ClientOptions.closeOnPageHide`);
   * a page kept in the back/forward cache (`persisted`) may come back, so it
   * keeps its session.
   */
  private watchPage(): void {
    const page = globalThis as unknown as Partial<Pick<EventTarget, 'addEventListener' | 'removeEventListener'>> & { document?: unknown };
    if (typeof page.addEventListener !== 'function' || page.document === undefined) return;
    const onOnline = (): void => this.retryNow();
    const onPageHide = (event: Event): void => {
      if (!(event as Event & { persisted?: boolean }).persisted) this.closeNow('the page was closed');
    };
    page.addEventListener('online', onOnline);
    if (this.opts.closeOnPageHide) page.addEventListener('pagehide', onPageHide);
    void this.ended.then(() => {
      page.removeEventListener?.('online', onOnline);
      page.removeEventListener?.('pagehide', onPageHide);
    });
  }

  /** Close without waiting for anything: DELETE as a keepalive request (once), then end. */
  private closeNow(reason: string): void {
    if (this._closeEvent) return;
    const unacked = this.sender.size;
    this.watcher?.stop();
    this.sender.halt();
    if (this._sid !== undefined && !this.deleteSent) {
      this.deleteSent = true;
      const sid = this._sid;
      this.transport
        .request({ method: 'DELETE', path: '', sid, timeoutMs: this.opts.requestTimeoutMs, keepalive: true })
        .catch(() => {}); // the page is going away: nobody is left to tell
    }
    this.end({ code: 'CLIENT', reason: unacked ? `${reason}; ${unacked} unacked message(s) discarded` : reason });
  }

  /** Ends the session: exactly once, whatever the cause. */
  private end(event: CloseEvent): void {
    if (this._closeEvent) return;
    this._closeEvent = event;
    this.lifetime.abort();
    this.transport.channel?.dispose();
    this.watcher?.stop();
    this.sender.halt();
    this.timers.clear();
    this.backingOff.clear();
    const { code, reason, status, errorCode } = event;
    this.sender.rejectAll(new BidiClientError(code, reason, { status, errorCode }));
    this.setState('closed');
    this.events.emit('close', event);
    this.resolveEnded();
  }
}

/**
 * Opens a bidiweb session.
 *
 * ```ts
 * const s = open('https://example.com/session', { headers: () => ({ Authorization: `Bearer ${token()}` }) });
 * s.on('message', (data, { seq }) => render(data));
 * s.on('close', ({ code, reason }) => console.log('closed', code, reason));
 * await s.send({ text: 'hi' }); // resolves once the server's handler has it
 * await s.close();
 * ```
 *
 * @param url     the server's base URL (where the bidiweb middleware is mounted):
 *                absolute http(s), or relative to the page in a browser
 * @param options see {@link ClientOptions}
 * @throws TypeError at once for a programmer error that no retry could fix: a
 *         URL that is not that, a static `headers` object with an invalid
 *         name or value, `meta` that JSON cannot represent; RangeError for an
 *         invalid numeric option. (Later invalid requests close the session
 *         with `INVALID_REQUEST`.)
 */
export function open<TIn = unknown, TOut = unknown>(url: string, options?: ClientOptions): BidiClientSession<TIn, TOut> {
  return new BidiClientSession<TIn, TOut>(url, options);
}
