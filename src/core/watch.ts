/**
 * Watches: the server → client half. A watch reads the session's log from
 * the client's ack; with nothing to return it waits for the store's events
 * (up to its wait), or, streaming, writes frames as messages come.
 */
import { BidiError, unknownSession } from './errors';
import type { BidiRequest, BidiResponse, BidiStream } from './http';
import { jsonResponse } from './http';
import type { Limits } from './limits';
import type { Observer } from './observe';
import { HEARTBEAT_FRAME, HEARTBEAT_HEADER, STREAM_CONTENT_TYPE, parseWatch, watchBody } from './protocol';
import type { AppendedRun, AppendLimits, ReadInput, ReadResult, Store, StoreEvent, StoredMessage, Unsubscribe } from './store';
import { newToken, utf8Length } from './util';

export interface WatchSettings {
  limits: Limits;
  /** Default and longest wait, ms. */
  wait: number;
  maxWait: number;
  /** A streaming watch's heartbeat interval, ms; 0 = none. */
  heartbeatMs: number;
}

/** Most wake-ups whose messages a watch holds between two reads; past it, it reads. */
const MAX_HELD_RUNS = 64;

/** Serves the watches of one server object. */
export class Watches {
  private readonly streamLimits: StreamLimits;

  constructor(
    private readonly store: Store,
    private readonly settings: WatchSettings,
    private readonly obs: Observer,
    /** A store failure that ended a stream (its response is sent already). */
    private readonly onStreamError: (err: unknown, sid: string) => void,
  ) {
    const limits = settings.limits;
    this.streamLimits = {
      // A stream ends while the client can still ack before the unacked bounds are reached.
      messages: Math.max(1, Math.min(limits.maxMessagesPerResponse, Math.ceil(limits.maxUnackedMessages / 2))),
      // A stream is one response: the same byte budget as a plain watch.
      bytes: Math.max(1, Math.min(limits.maxResponseBytes, Math.ceil(limits.maxUnackedBytes / 2))),
    };
  }

  /** One watch request for `sid`, already authorized. */
  async serve(req: BidiRequest, sid: string): Promise<BidiResponse> {
    const { limits, heartbeatMs } = this.settings;
    const { ack, wait, stream } = parseWatch(req.query, this.settings.wait, this.settings.maxWait);
    const run = new WatchRun(this.store, sid, ack, Date.now() + wait, limits.maxMessagesPerResponse, limits.maxResponseBytes, req.signal, limits);
    if (this.obs.on) run.onDispose = this.obs.watch(sid, ack, stream);
    let handedOff = false;
    try {
      // Subscribe before the first read so no wake-up can fall between them.
      await run.subscribe();
      let r = await run.read(true);
      if (stream && req.canStream && r.status === 'ok') {
        const s = new WatchStream(run, r, this.streamLimits, heartbeatMs, (err) => this.onStreamError(err, sid));
        handedOff = true;
        const headers: Record<string, string> = { ...STREAM_HEADERS };
        if (heartbeatMs > 0) headers[HEARTBEAT_HEADER] = String(heartbeatMs);
        return { status: 200, headers, body: s.first, stream: s };
      }
      while (r.status === 'ok' && r.msgs.length === 0 && !r.close && !r.superseded && !run.superseded && !req.signal?.aborted) {
        if (run.deadline - Date.now() <= 0) break;
        await run.waitForNews();
        if (run.superseded) break;
        // The wake-up's own messages when it brought them, else a re-read as a stream's: the first read
        // trimmed by the ack and marked the session seen (a watch lasts at most maxWait), so a wake-up
        // needs no trim, no clock and no write.
        r = run.fromRuns(ack) ?? (await run.read(false, ack));
      }
      return watchResponse(r, ack, run.superseded);
    } finally {
      if (!handedOff) run.dispose();
    }
  }
}

function watchResponse(r: ReadResult, ack: number, superseded: boolean): BidiResponse {
  if (r.status === 'unknown') throw unknownSession();
  if (r.status === 'invalid-ack') throw new BidiError('INVALID_ACK', `ack ${ack} is above the last server seq ${r.lastSeq}`);
  if (superseded || r.superseded) return jsonResponse(200, watchBody([], r.clientAck, { superseded: true }));
  return jsonResponse(200, watchBody(r.msgs, r.clientAck, { close: r.close }));
}

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
  /**
   * The messages the events since the last read brought (see `fromRuns`), while every such event
   * brought its messages; null once one did not (a close, another watch's claim, a wake-up
   * without its messages): then only a read can say what changed.
   */
  private runs: AppendedRun[] | null = [];
  private unsubscribe?: Unsubscribe;
  private wake?: () => void;
  private timer?: ReturnType<typeof setTimeout>;
  /**
   * A stream's heartbeat: when one is due (`waitForNews(idleAt)`), and the one timer that serves every
   * wait of the stream. It is moved only when it fires early (not set and cleared per wait: a stream
   * that carries a message every few ms would make and drop a timer per message).
   */
  private idleAt = 0;
  private idleTimer?: ReturnType<typeof setTimeout>;
  private onIdle?: () => void;
  private disposed = false;
  /** Called once when the watch is over (the observer's watch gauge). */
  onDispose?: () => void;
  /** The unacked bounds passed with every read (made once, not per read). */
  private readonly readLimits?: AppendLimits;

  constructor(
    private readonly store: Store,
    private readonly sid: string,
    private readonly ack: number,
    readonly deadline: number,
    private readonly maxMessages: number,
    private readonly maxBytes: number,
    private readonly signal: AbortSignal | undefined,
    /** The unacked bounds, for the group entries a read pulls in. */
    limits?: AppendLimits,
  ) {
    if (limits) this.readLimits = { maxUnackedMessages: limits.maxUnackedMessages, maxUnackedBytes: limits.maxUnackedBytes };
  }

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
    if (this.runs !== null) {
      if (event.type === 'message' && event.run && this.runs.length < MAX_HELD_RUNS) this.runs.push(event.run);
      else this.runs = null;
    }
    this.news++;
    this.wake?.();
  };

  /** `maxBytes`: a stream's budget left (default: the whole response budget). */
  read(claim: boolean, after?: number, maxBytes = this.maxBytes): Promise<ReadResult> {
    this.seen = this.news;
    this.runs = [];
    const input: ReadInput = { ack: this.ack, watchToken: this.token, claim, maxMessages: this.maxMessages, maxBytes };
    if (this.readLimits) input.limits = this.readLimits;
    if (after !== undefined) input.after = Math.max(after, this.ack);
    return this.store.read(this.sid, input);
  }

  /**
   * What a read with `after` would return, from the messages the events since the last read
   * brought, without asking the store; null when they cannot tell (an event without its
   * messages, a gap after `after`, more than the budgets allow, or nothing new: read instead).
   * Messages at or below `after` are skipped: the last read may have returned them already.
   */
  fromRuns(after: number, maxBytes = this.maxBytes): ReadResult | null {
    const runs = this.runs;
    if (runs === null || runs.length === 0) return null;
    const msgs: StoredMessage[] = [];
    let next = Math.max(after, this.ack) + 1;
    let bytes = 0;
    for (const run of runs) {
      for (const m of run.msgs) {
        if (m.seq < next) continue;
        if (m.seq > next || msgs.length >= this.maxMessages || bytes >= maxBytes) return null;
        msgs.push(m);
        bytes += m.bytes ?? utf8Length(m.json);
        next++;
      }
    }
    // Nothing new (all sent already): read, rather than answer with the client ack of a wake-up
    // that may be older than the last read's.
    if (msgs.length === 0) return null;
    this.seen = this.news;
    this.runs = [];
    // The store's order: the last wake-up carries the newest client ack.
    return { status: 'ok', msgs, clientAck: runs[runs.length - 1]!.clientAck, superseded: false };
  }

  /** Events came since the last read. */
  get hasNews(): boolean {
    return this.news !== this.seen;
  }

  /**
   * Waits for news: `'news'` when events came since the last read, `'end'`
   * when the wait ended (deadline, client gone, disposed) without any, and,
   * given `idleAt` (a `Date.now()` time), `'idle'` when that time came first
   * (a heartbeat is due). The deadline's and the heartbeat's timers are cleared by `dispose()`.
   */
  waitForNews(idleAt = 0): Promise<'news' | 'idle' | 'end'> {
    if (this.news !== this.seen) return Promise.resolve('news');
    if (this.ended) return Promise.resolve('end');
    // Only when due before the deadline: at the deadline the stream ends instead.
    const idle = idleAt > 0 && idleAt < this.deadline;
    if (idle && idleAt <= Date.now()) return Promise.resolve('idle');
    return new Promise((resolve) => {
      const signal = this.signal;
      const done = () => {
        this.wake = undefined;
        this.onIdle = undefined;
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
      if (idle) {
        this.idleAt = idleAt;
        this.onIdle = () => {
          this.wake = undefined;
          this.onIdle = undefined;
          signal?.removeEventListener('abort', done);
          resolve(this.news !== this.seen ? 'news' : this.ended ? 'end' : 'idle');
        };
        this.armIdle();
      }
    });
  }

  private armIdle(): void {
    if (this.idleTimer || this.disposed) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      // No wait in progress: the next wait looks at idleAt itself.
      if (!this.onIdle) return;
      if (Date.now() >= this.idleAt) this.onIdle();
      else this.armIdle();
    }, Math.max(1, this.idleAt - Date.now()));
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
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
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
      for (const m of r.msgs) this.streamedBytes += m.bytes ?? utf8Length(m.json);
    }
    if (r.close || this.streamed >= this.limits.messages || this.streamedBytes >= this.limits.bytes) this.ending = true;
    return watchBody(r.msgs, r.clientAck, { close: r.close }) + '\n';
  }

  /** A chunk goes out: the heartbeat interval counts from now. */
  private wrote(chunk: string): string {
    this.wroteAt = Date.now();
    return chunk;
  }

  async next(): Promise<string | null> {
    try {
      // More news already, right after a frame: messages are coming faster than frames go out.
      // Let them gather for one turn of the event loop, then send them as one frame.
      if (this.sentFrame && this.run.hasNews && !this.ending) await new Promise((resolve) => setTimeout(resolve, 0));
      this.sentFrame = false;
      for (;;) {
        if (this.done) return null;
        // Idle for heartbeatMs since the last chunk (not since this call: a wake-up may bring nothing).
        const woke = this.ending ? 'end' : await this.run.waitForNews(this.heartbeatMs > 0 ? this.wroteAt + this.heartbeatMs : 0);
        if (woke === 'end' || this.done) {
          this.close();
          return null;
        }
        if (woke === 'idle') return this.wrote(HEARTBEAT_FRAME);
        if (this.run.superseded) {
          this.ending = true;
          return this.wrote(watchBody([], this.clientAck, { superseded: true }) + '\n');
        }
        const budget = Math.max(1, this.limits.bytes - this.streamedBytes);
        const r = this.run.fromRuns(this.after, budget) ?? (await this.run.read(false, this.after, budget));
        if (this.done) return null;
        if (r.status !== 'ok') {
          // The session vanished mid-stream (or the store lost it): tell the client as a 4xx would.
          this.ending = true;
          const e = r.status === 'unknown' ? unknownSession() : new BidiError('INVALID_ACK', `ack is above the last server seq ${r.lastSeq}`);
          return this.wrote(JSON.stringify({ error: { code: e.code, message: e.message } }) + '\n');
        }
        const frame = this.frame(r);
        if (frame !== null) {
          this.sentFrame = true;
          return this.wrote(frame);
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
