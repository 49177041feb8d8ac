/**
 * The outbound half of a session: the client → server message queue.
 *
 * Every `send()` gets the next sequence number at call time and stays in the
 * queue until an ack covers it. The sender POSTs the unacked messages in
 * batches (at most `maxMessagesPerRequest` messages and `maxBodyBytes` bytes
 * each, never a seq above `ack + inboundWindow`), with up to `maxInflight`
 * POSTs at once. A message is in one of three states:
 *
 * - `pending`: to be POSTed (new, or its last POST failed);
 * - `inflight`: in a POST that has not answered yet;
 * - `waiting`: its POST answered 200 but the ack did not cover it: the server
 *   buffered it behind a gap or another request is delivering it. It goes
 *   back to `pending` after the resend interval (which doubles per resend).
 *
 * Acks (from send and watch responses) only grow; they resolve the covered
 * messages' promises in seq order and drop them from the queue.
 */
import { Backoff, TimerSet } from './backoff';
import { AbortedError, BidiClientError } from './errors';
import { classify, thrownOutcome, type Transport } from './transport';
import type { CloseEvent, Operation, ServerLimits } from './types';

/** What the sender needs from its session. */
export interface SenderHost {
  readonly transport: Transport;
  readonly timers: TimerSet;
  /** The session's ack of the server → client stream (sent along as `ack`). */
  serverAck(): number;
  /**
   * A transient error. With `backoff` (whose `next()` gave `delayMs`) a new
   * backoff starts: returns false if the retry budget is spent, and then the
   * session has ended.
   */
  retry(op: Operation, error: BidiClientError, backoff?: Backoff, delayMs?: number): boolean;
  retryDone(op: Operation): void;
  /** The session must end. */
  fail(event: CloseEvent): void;
  /** The server answered 410 SESSION_CLOSED to a send. */
  gone(status: number, errorCode: string | undefined, message: string): void;
}

export interface SenderOptions {
  maxInflight: number;
  resendAfterMs: number;
  maxResendDelayMs: number;
  requestTimeoutMs: number;
  initialDelayMs: number;
  maxDelayMs: number;
}

type MessageState = 'pending' | 'inflight' | 'waiting';

interface Outgoing {
  seq: number;
  /** The message's JSON text. */
  json: string;
  /** UTF-8 length of `json`. */
  bytes: number;
  state: MessageState;
  /** When a `waiting` message goes back to `pending` (ms since epoch). */
  resendAt: number;
  /** How many times it was answered 200 without being acked. */
  resends: number;
  resolve: () => void;
  reject: (err: BidiClientError) => void;
}

const noop = (): void => {};
/** Spare abort controllers a sender keeps (see Sender.spareCtls). */
const SPARE_CONTROLLERS = 16;

function digits(n: number): number {
  return String(n).length;
}

export class Sender {
  /** Highest contiguous client seq the server delivered (the client → server ack). */
  ack = 0;
  /** Sum of `bytes` of all unacked messages. */
  bufferedAmount = 0;

  private readonly queue: Outgoing[] = []; // unacked, ascending seq
  private nextSeq = 1;
  private limits?: ServerLimits;
  private sid = '';
  private inflight = 0;
  /**
   * One per POST in flight, so `halt()` can cancel them: not one shared signal, which would gather a
   * listener per POST. An array, not a Set: a few at a time, added and removed per POST (a Set
   * rebuilds its table every few such operations).
   */
  private readonly inflightCtls: AbortController[] = [];
  /** Controllers of POSTs that ended without an abort, for the next POSTs: making one costs more than the rest of a POST over a WebSocket. */
  private readonly spareCtls: AbortController[] = [];
  private halted = false;
  private pumpScheduled = false;
  private inBackoff = false;
  private readonly backoff: Backoff;
  private cancelResendTimer?: () => void;
  private resendTimerAt = Infinity;
  /** Lowered when the server answers 413 to a batch of several messages. */
  private perRequestCap = Infinity;
  private drainWaiters: (() => void)[] = [];
  private settleWaiters: (() => void)[] = [];

  constructor(
    private readonly host: SenderHost,
    private readonly opts: SenderOptions,
  ) {
    this.backoff = new Backoff(opts.initialDelayMs, opts.maxDelayMs);
  }

  /** Number of unacked messages. */
  get size(): number {
    return this.queue.length;
  }

  /** Highest seq assigned so far. */
  get lastSeq(): number {
    return this.nextSeq - 1;
  }

  /**
   * Queues a message and returns a promise that resolves when it is acked.
   * The promise is marked handled, so an ignored rejection is not reported
   * as unhandled; awaiting it still throws.
   */
  enqueue(json: string, bytes: number): Promise<void> {
    const seq = this.nextSeq++;
    let resolve!: () => void;
    let reject!: (err: BidiClientError) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(noop);
    this.queue.push({ seq, json, bytes, state: 'pending', resendAt: 0, resends: 0, resolve, reject });
    this.bufferedAmount += bytes;
    this.schedulePump();
    return promise;
  }

  /**
   * Starts POSTing (messages queued before open go out now). A message queued
   * before open that the server's limits refuse is rejected with
   * `MESSAGE_TOO_LARGE`, as `send()` would have done after open, and the
   * others are renumbered to keep the seqs contiguous: nothing was POSTed
   * yet, so no seq has been seen by the server.
   */
  start(sid: string, limits: ServerLimits): void {
    this.sid = sid;
    this.limits = limits;
    if (this.queue.some((m) => tooLarge(m.bytes, limits) !== undefined)) {
      const kept: Outgoing[] = [];
      for (const m of this.queue.splice(0)) {
        const problem = tooLarge(m.bytes, limits);
        if (problem === undefined) {
          m.seq = kept.length + 1;
          kept.push(m);
        } else {
          this.bufferedAmount -= m.bytes;
          m.reject(new BidiClientError('MESSAGE_TOO_LARGE', `send: ${problem}`));
        }
      }
      this.queue.push(...kept);
      this.nextSeq = kept.length + 1;
      if (kept.length === 0) {
        this.bufferedAmount = 0;
        this.notifyDrained();
      }
    }
    this.schedulePump();
  }

  /** Records a client → server ack from any response. */
  onAck(value: unknown): void {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) return;
    // An ack above what was ever sent is a server bug; never resolve messages that do not exist.
    const ack = Math.min(value, this.lastSeq);
    if (ack <= this.ack) return;
    this.ack = ack;
    let k = 0;
    while (k < this.queue.length && this.queue[k].seq <= ack) k++;
    const done = this.queue.splice(0, k);
    for (const m of done) {
      this.bufferedAmount -= m.bytes;
      m.resolve();
    }
    if (this.queue.length === 0) {
      this.bufferedAmount = 0;
      this.notifyDrained();
    }
    this.schedulePump();
  }

  /** Resolves when every queued message is acked (or the sender stopped). */
  drained(): Promise<void> {
    if (this.queue.length === 0 || this.halted) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /**
   * Stops POSTing; the queue is kept. In-flight POSTs are cancelled, unless
   * `keepInflight`: then they run to their answer and the acks they carry
   * still resolve their messages (see {@link settled}).
   */
  halt(keepInflight = false): void {
    if (!keepInflight) {
      for (const ctl of this.inflightCtls.splice(0)) ctl.abort();
    }
    if (this.halted) return;
    this.halted = true;
    this.cancelResendTimer?.();
    this.cancelResendTimer = undefined;
    if (this.inBackoff) {
      this.inBackoff = false;
      this.host.retryDone('send');
    }
    this.notifyDrained();
  }

  /** Resolves when no POST is in flight. */
  settled(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => this.settleWaiters.push(resolve));
  }

  /** Rejects every queued message with `err` and empties the queue. */
  rejectAll(err: BidiClientError): void {
    const all = this.queue.splice(0, this.queue.length);
    this.bufferedAmount = 0;
    for (const m of all) m.reject(err);
  }

  private notifyDrained(): void {
    if (this.drainWaiters.length === 0) return;
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }

  private schedulePump(): void {
    if (this.pumpScheduled || this.halted) return;
    this.pumpScheduled = true;
    // Deferred so that messages sent in the same tick share a POST.
    queueMicrotask(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    if (this.halted || this.inBackoff || !this.limits) return;
    while (this.inflight < this.opts.maxInflight) {
      const serverAck = this.host.serverAck();
      const batch = this.takeBatch(serverAck);
      if (batch.length === 0) return;
      void this.post(batch, serverAck);
    }
  }

  /** Takes the next batch of `pending` messages within the window and the request limits. */
  private takeBatch(serverAck: number): Outgoing[] {
    const limits = this.limits!;
    const maxCount = Math.max(1, Math.min(limits.maxMessagesPerRequest, this.perRequestCap));
    const windowEnd = this.ack + limits.inboundWindow;
    // The server buffers at most inboundBufferBytes behind a gap. Count every message sent
    // and not acked as buffered (conservative); a batch that starts with the next
    // deliverable message (ack + 1) is always accepted.
    let budget = Infinity;
    if (limits.inboundBufferBytes !== undefined) {
      budget = limits.inboundBufferBytes;
      for (const m of this.queue) {
        if (m.seq > windowEnd) break;
        if (m.state !== 'pending') budget -= m.bytes;
      }
    }
    const batch: Outgoing[] = [];
    // Body: {"msgs":[ ... ],"ack":N} — 18 bytes plus the digits of N.
    let size = 18 + digits(serverAck);
    for (const m of this.queue) {
      if (m.seq > windowEnd) break;
      if (m.state !== 'pending') continue;
      const itemSize = 3 + digits(m.seq) + m.bytes + (batch.length ? 1 : 0);
      const fillsGap = batch.length === 0 && m.seq === this.ack + 1;
      if (m.bytes > budget && !fillsGap) break;
      // A single message always goes out, even if too large: the server's 413 then ends the session.
      if (batch.length && (batch.length >= maxCount || size + itemSize > limits.maxBodyBytes)) break;
      m.state = 'inflight';
      batch.push(m);
      size += itemSize;
      budget -= m.bytes;
      if (batch.length >= maxCount) break;
    }
    return batch;
  }

  private async post(batch: Outgoing[], serverAck: number): Promise<void> {
    this.inflight++;
    let body = '{"msgs":[';
    for (let i = 0; i < batch.length; i++) body += (i === 0 ? '[' : ',[') + batch[i]!.seq + ',' + batch[i]!.json + ']';
    body += '],"ack":' + serverAck + '}';
    const ctl = this.spareCtls.pop() ?? new AbortController();
    this.inflightCtls.push(ctl);
    const signal = ctl.signal;
    let outcome: ReturnType<typeof classify>;
    try {
      const reply = await this.host.transport.request({
        method: 'POST',
        path: '/send',
        body,
        sid: this.sid,
        timeoutMs: this.opts.requestTimeoutMs,
        signal,
      });
      outcome = classify(reply, 'send');
    } catch (err) {
      if (err instanceof AbortedError || signal.aborted) return;
      outcome = thrownOutcome(err);
    } finally {
      this.inflight--;
      const at = this.inflightCtls.indexOf(ctl);
      if (at !== -1) this.inflightCtls.splice(at, 1);
      // The transport took its listener off when the request ended.
      if (!ctl.signal.aborted && this.spareCtls.length < SPARE_CONTROLLERS) this.spareCtls.push(ctl);
      if (this.inflight === 0 && this.settleWaiters.length > 0) for (const w of this.settleWaiters.splice(0)) w();
    }
    if (this.halted) {
      // Halted with this POST kept in flight (the server is closing the session): its ack still counts.
      if (outcome.kind === 'ok') this.onAck(outcome.body.ack);
      return;
    }

    switch (outcome.kind) {
      case 'ok': {
        this.backoff.reset();
        this.onAck(outcome.body.ack);
        const now = Date.now();
        for (const m of batch) {
          if (m.seq <= this.ack || m.state !== 'inflight') continue;
          m.state = 'waiting';
          m.resendAt = now + Math.min(this.opts.resendAfterMs * 2 ** Math.min(m.resends, 30), this.resendCapMs());
          m.resends++;
        }
        this.scheduleResendTimer();
        break;
      }
      case 'retry':
        this.requeue(batch);
        this.enterBackoff(outcome.error, outcome.retryAfterMs);
        break;
      case 'invalid':
        this.host.fail({ code: 'INVALID_REQUEST', reason: outcome.error.message });
        return;
      case 'fatal': {
        const { status, errorCode, message } = outcome;
        if (status === 404 && errorCode === 'UNKNOWN_SESSION') {
          this.host.fail(sessionLost(status, errorCode));
        } else if (status === 410) {
          this.requeue(batch);
          this.host.gone(status, errorCode, message);
        } else if (
          status === 413 &&
          (errorCode === 'BODY_TOO_LARGE' || errorCode === 'TOO_MANY_MESSAGES') &&
          batch.length > 1
        ) {
          // Our idea of the limits is off: retry with smaller batches.
          this.perRequestCap = Math.max(1, Math.floor(batch.length / 2));
          this.requeue(batch);
        } else {
          this.host.fail(protocolError(this.host.transport.describe({ method: 'POST', path: '/send' }), status, errorCode, message));
        }
        break;
      }
    }
    this.schedulePump();
  }

  /**
   * The longest wait between resends of one message. After a server instance dies mid-delivery,
   * delivery resumes only with a send that comes after its lease (`leaseMs`) ran out: resending
   * at least about once per lease keeps that pause near one lease.
   */
  private resendCapMs(): number {
    const leaseMs = this.limits?.leaseMs;
    if (leaseMs === undefined) return this.opts.maxResendDelayMs;
    return Math.max(this.opts.resendAfterMs, Math.min(this.opts.maxResendDelayMs, leaseMs));
  }

  private requeue(batch: Outgoing[]): void {
    for (const m of batch) if (m.seq > this.ack && m.state === 'inflight') m.state = 'pending';
  }

  private enterBackoff(error: BidiClientError, retryAfterMs?: number): void {
    if (this.inBackoff) {
      // Another POST already started a backoff (e.g. several failed at once).
      this.host.retry('send', error);
      return;
    }
    this.inBackoff = true;
    const delay = this.backoff.next(retryAfterMs);
    // Budget spent: the session ended (halt() has undone inBackoff).
    if (!this.host.retry('send', error, this.backoff, delay) || this.halted) return;
    this.host.timers.after(
      delay,
      () => {
        if (!this.inBackoff) return;
        this.inBackoff = false;
        this.host.retryDone('send');
        this.schedulePump();
      },
      undefined,
      retryAfterMs === undefined, // a server's Retry-After is kept
    );
  }

  /** Keeps one timer, at the earliest `resendAt` of the `waiting` messages. */
  private scheduleResendTimer(): void {
    let earliest = Infinity;
    for (const m of this.queue) if (m.state === 'waiting' && m.resendAt < earliest) earliest = m.resendAt;
    if (earliest === Infinity) {
      this.cancelResendTimer?.();
      this.cancelResendTimer = undefined;
      this.resendTimerAt = Infinity;
      return;
    }
    if (this.cancelResendTimer && this.resendTimerAt <= earliest) return;
    this.cancelResendTimer?.();
    this.resendTimerAt = earliest;
    this.cancelResendTimer = this.host.timers.after(earliest - Date.now(), () => {
      this.cancelResendTimer = undefined;
      this.resendTimerAt = Infinity;
      if (this.halted) return;
      const now = Date.now();
      for (const m of this.queue) if (m.state === 'waiting' && m.resendAt <= now) m.state = 'pending';
      this.scheduleResendTimer();
      this.schedulePump();
    });
  }
}

/** Room for `{"msgs":[[seq,`, `]],"ack":N}` around one message: a body of one message needs this much more. */
const ONE_MESSAGE_OVERHEAD = 64;

/**
 * Why the server would refuse a message of `bytes` (UTF-8 length of its
 * JSON) whatever the client does (413), or `undefined` if it fits: above
 * `maxMessageBytes`, or too large for a request body even alone.
 */
export function tooLarge(bytes: number, limits: ServerLimits): string | undefined {
  if (bytes > limits.maxMessageBytes) {
    return `the message is ${bytes} bytes, the server accepts at most ${limits.maxMessageBytes} (limits.maxMessageBytes)`;
  }
  if (bytes + ONE_MESSAGE_OVERHEAD > limits.maxBodyBytes) {
    return `the message is ${bytes} bytes, too large for a request body of at most ${limits.maxBodyBytes} bytes (limits.maxBodyBytes)`;
  }
  return undefined;
}

/** The close event for a 404 UNKNOWN_SESSION. */
export function sessionLost(status: number, errorCode?: string): CloseEvent {
  return {
    code: 'SESSION_LOST',
    reason: 'the server no longer knows this session (expired or lost by the store)',
    status,
    ...(errorCode !== undefined ? { errorCode } : {}),
  };
}

/** The close event for a non-retryable 4xx to `request` (`POST http://host/session/send`). */
export function protocolError(request: string, status: number, errorCode: string | undefined, message: string): CloseEvent {
  return {
    code: 'PROTOCOL_ERROR',
    reason: `${request} failed with HTTP ${status}${errorCode ? ` ${errorCode}` : ''}: ${message}`,
    status,
    ...(errorCode !== undefined ? { errorCode } : {}),
  };
}
