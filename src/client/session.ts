import { Backoff, TimerSet } from './backoff';
import { Emitter, type Listener } from './emitter';
import { AbortedError, BidiClientError, describe } from './errors';
import { Sender, type SenderHost } from './sender';
import { classify, Transport, utf8Length, type Outcome } from './transport';
import type {
  ClientEvents,
  ClientOptions,
  CloseEvent,
  Operation,
  ServerLimits,
  SessionState,
} from './types';
import { Watcher, type CloseMarker, type WatcherHost } from './watcher';

/** Limits assumed for any field the open response leaves out (the server's defaults). */
export const DEFAULT_LIMITS: Readonly<Required<Omit<ServerLimits, 'inboundBufferBytes'>>> = Object.freeze({
  maxBodyBytes: 1_048_576,
  maxMessageBytes: 262_144,
  maxMessagesPerRequest: 100,
  inboundWindow: 256,
  maxWait: 55_000,
  idleTimeout: 120_000,
});

const DEFAULT_WAIT_MS = 25_000;
/** A DELETE always gets at least this long, even when `closeTimeoutMs` is used up by the drain. */
const MIN_DELETE_TIMEOUT_MS = 1_000;
/** After a server close, how long the client waits for the answers of POSTs in flight before it ends. */
const SEND_SETTLE_MS = 2_000;

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
  };
  if (o.wait !== undefined) out.wait = option('wait', o.wait, 0, 0);
  return out;
}

function streamOption(value: unknown): boolean | 'auto' {
  if (value === undefined || value === 'auto') return 'auto';
  if (typeof value !== 'boolean') throw new RangeError("bidiweb: option stream must be true, false or 'auto'");
  return value;
}

function parseLimits(value: unknown): ServerLimits {
  const src = value && typeof value === 'object' ? (value as Record<string, unknown>) : {};
  const limits: ServerLimits = { ...DEFAULT_LIMITS };
  for (const key of [...Object.keys(DEFAULT_LIMITS), 'inboundBufferBytes'] as (keyof ServerLimits)[]) {
    const v = src[key];
    if (typeof v === 'number' && Number.isFinite(v) && v > 0) limits[key] = v;
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
  private readonly host: SenderHost & WatcherHost;
  private readonly sender: Sender;
  private watcher?: Watcher;
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
   *                (a query string is kept on every request)
   * @throws TypeError if `meta` is not JSON-serialisable or there is no fetch;
   *         RangeError for an invalid numeric option
   */
  constructor(url: string, options: ClientOptions = {}) {
    if (typeof url !== 'string' || url === '') throw new TypeError('bidiweb: open(url) needs a URL string');
    this.opts = resolveOptions(options);
    if (options.meta !== undefined) {
      const json = JSON.stringify(options.meta);
      if (json === undefined) throw new TypeError('bidiweb: options.meta is not JSON-serialisable');
      this.metaJson = json;
    }
    this.events = new Emitter<ClientEvents<TIn>>((event, err) => this.onListenerError(event, err));
    this.transport = new Transport(url, options.headers, options.fetch);
    this.host = {
      transport: this.transport,
      timers: this.timers,
      serverAck: () => this.watcher?.delivered ?? 0,
      retry: (op, error, attempt, delayMs) => this.onRetry(op, error, attempt, delayMs),
      retryDone: (op) => void this.backingOff.delete(op),
      fail: (event) => this.end(event),
      gone: () => this.onSendGone(),
      deliver: (data, seq) => this.events.emit('message', data as TIn, { seq }),
      ack: (value) => this.sender.onAck(value),
      // No new POSTs, but those in flight may carry the ack of a message whose handler closed the session.
      closeMarkerSeen: () => this.sender.halt(true),
      closed: (marker) => void this.endAfterSends(closeEventFor(marker)),
    };
    this.sender = new Sender(this.host, {
      maxInflight: this.opts.maxInflight,
      resendAfterMs: this.opts.resendAfterMs,
      maxResendDelayMs: Math.max(this.opts.resendAfterMs, this.opts.maxDelayMs),
      requestTimeoutMs: this.opts.requestTimeoutMs,
      initialDelayMs: this.opts.initialDelayMs,
      maxDelayMs: this.opts.maxDelayMs,
    });
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
   *   server's `maxMessageBytes` (known once open; these two consume no seq).
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
    if (this._limits && bytes > this._limits.maxMessageBytes) {
      return Promise.reject(
        new BidiClientError(
          'MESSAGE_TOO_LARGE',
          `send: the message is ${bytes} bytes, the server accepts at most ${this._limits.maxMessageBytes}`,
        ),
      );
    }
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

  /** A transient error; with `attempt`/`delayMs` a backoff starts (emits `error`, then `retry`). */
  private onRetry(op: Operation, error: BidiClientError, attempt?: number, delayMs?: number): void {
    if (this._closeEvent) return;
    if (attempt !== undefined && delayMs !== undefined) this.backingOff.add(op);
    this.events.emit('error', error);
    if (attempt !== undefined && delayMs !== undefined) this.events.emit('retry', { op, attempt, delayMs, error });
  }

  private async runOpen(): Promise<void> {
    const backoff = new Backoff(this.opts.initialDelayMs, this.opts.maxDelayMs);
    const body = this.metaJson === undefined ? '{"v":1}' : `{"v":1,"meta":${this.metaJson}}`;
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
            error: new BidiClientError('BAD_RESPONSE', `open: HTTP ${reply.status} without a sid`, { status: reply.status }),
          };
        }
      } catch (err) {
        if (err instanceof AbortedError || signal.aborted) return;
        outcome = { kind: 'retry', error: err as BidiClientError };
      }
      if (this._closeEvent) return;
      if (outcome.kind === 'ok') {
        this.onOpened(outcome.body);
        return;
      }
      if (outcome.kind === 'fatal') {
        const { status, errorCode, message } = outcome;
        this.end({ code: 'REJECTED', reason: message, status, ...(errorCode !== undefined ? { errorCode } : {}) });
        return;
      }
      const delay = backoff.next(outcome.retryAfterMs);
      this.onRetry('open', outcome.error, backoff.attempt, delay);
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
    // If close() was called while connecting, the state stays 'closing' and 'open' is not emitted.
    if (this._state === 'connecting') {
      this.setState('open');
      if (this.state === 'open') this.events.emit('open'); // a 'state' listener may have called close()
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
        outcome = { kind: 'retry', error: err as BidiClientError };
      }
      if (outcome.kind !== 'retry') return;
      const delay = backoff.next(outcome.retryAfterMs);
      if (Date.now() + delay >= deadline) {
        this.onRetry('close', outcome.error); // report, give up: the server expires the session
        return;
      }
      this.onRetry('close', outcome.error, backoff.attempt, delay);
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
 * @param url     the server's base URL (where the bidiweb middleware is mounted)
 * @param options see {@link ClientOptions}
 */
export function open<TIn = unknown, TOut = unknown>(url: string, options?: ClientOptions): BidiClientSession<TIn, TOut> {
  return new BidiClientSession<TIn, TOut>(url, options);
}
