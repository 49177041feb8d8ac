/**
 * The inbound half of a session: the server → client stream.
 *
 * Keeps exactly one watch (`GET {base}/watch?ack=N&wait=MS`) pending, where
 * `N` is the highest contiguous server seq delivered to the app. Delivers
 * server messages in seq order, each once: a seq `<= N` is a duplicate and
 * dropped; a seq after a gap is held until the gap fills (the server resends
 * everything above `N` on the next watch, so holding is only an optimisation
 * and is bounded). A `close` marker `{seq, reason}` ends the session once
 * every message below `seq` is delivered.
 */
import { Backoff, TimerSet } from './backoff';
import { AbortedError, BidiClientError } from './errors';
import { BufferedStreamError, classify, thrownOutcome, type Outcome, type Transport } from './transport';
import { protocolError, sessionLost } from './sender';
import type { CloseEvent, Operation } from './types';
import { WATCH_TIMEOUT_MARGIN_MS } from '../wire';


/** At most this many out-of-order messages are held; later ones are dropped (the server resends them). */
export const MAX_HELD_MESSAGES = 10_000;

/** What the frames of one streaming watch said. */
interface StreamState {
  superseded: boolean;
  fatal?: Extract<Outcome, { kind: 'fatal' }>;
  frames: number;
}

export interface CloseMarker {
  seq: number;
  reason: string;
}

/** What the watcher needs from its session. */
export interface WatcherHost {
  readonly transport: Transport;
  readonly timers: TimerSet;
  /** Delivers one server message to the app. */
  deliver(data: unknown, seq: number): void;
  /** A client → server ack from a watch response. */
  ack(value: unknown): void;
  /** The first close marker was seen (messages below it may still be missing). */
  closeMarkerSeen(marker: CloseMarker): void;
  /** Every message below the close marker was delivered: the session is over. */
  closed(marker: CloseMarker): void;
  /** See `SenderHost.retry`: false if the retry budget is spent (the session has ended). */
  retry(op: Operation, error: BidiClientError, backoff?: Backoff, delayMs?: number): boolean;
  retryDone(op: Operation): void;
  fail(event: CloseEvent): void;
  /** A watch succeeded: the session is known to the server (ends a run of reopens). */
  watchOk(): void;
}

export interface WatcherOptions {
  sid: string;
  waitMs: number;
  /**
   * Ask for streaming watches (`stream=1`): `true`; `'auto'`, and watch
   * without streaming for the rest of the session once a stream showed no
   * byte in time (something in between buffers); `false`/absent: never.
   */
  stream?: boolean | 'auto';
  /** Called once when `'auto'` turned streaming off. */
  onStreamOff?: (error: BidiClientError) => void;
  initialDelayMs: number;
  maxDelayMs: number;
}

export class Watcher {
  /** Highest contiguous server seq delivered to the app (the server → client ack). */
  delivered = 0;
  /** The close marker, once seen. */
  marker?: CloseMarker;

  private readonly held = new Map<number, unknown>();
  private readonly backoff: Backoff;
  private ctl?: AbortController;
  private stopped = false;
  private started = false;
  /** Set after a send got 410: watch with wait=0 until the close marker shows, else the session is closed. */
  private probing = false;
  private supersededInARow = 0;
  /** Watches ask for streaming (until `'auto'` finds a stream buffered). */
  private streamOn: boolean;

  constructor(
    private readonly host: WatcherHost,
    private readonly opts: WatcherOptions,
  ) {
    this.backoff = new Backoff(opts.initialDelayMs, opts.maxDelayMs);
    this.streamOn = opts.stream === true || opts.stream === 'auto';
  }

  /** True while watches ask for streaming. */
  get streaming(): boolean {
    return this.streamOn;
  }

  /** True once the server is known to be closing the session (close marker seen, or probing after a 410). */
  get finishing(): boolean {
    return this.marker !== undefined || this.probing;
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    void this.loop();
  }

  stop(): void {
    this.stopped = true;
    this.ctl?.abort();
  }

  /**
   * A send was answered 410 SESSION_CLOSED: replace the pending watch by one
   * with `wait=0` to fetch the close marker (and the messages before it). If
   * the server shows no close marker, the session ends as `SESSION_CLOSED`.
   */
  probe(): void {
    if (this.stopped || this.probing) return;
    this.probing = true;
    this.ctl?.abort();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const ctl = (this.ctl = new AbortController());
      const wait = this.probing ? 0 : this.opts.waitMs;
      const streaming = this.streamOn && !this.probing;
      const stream: StreamState = { superseded: false, frames: 0 };
      const started = Date.now();
      let outcome: Outcome;
      try {
        const reply = await this.host.transport.request({
          method: 'GET',
          path: '/watch',
          query: streaming ? { ack: this.delivered, wait, stream: 1 } : { ack: this.delivered, wait },
          sid: this.opts.sid,
          timeoutMs: wait + WATCH_TIMEOUT_MARGIN_MS,
          signal: ctl.signal,
          ...(streaming ? { onFrame: (frame: unknown) => this.onFrame(frame, stream) } : {}),
          ...(streaming && this.opts.stream === 'auto' ? { verifyStream: true } : {}),
        });
        if (reply.streamed) {
          if (this.stopped) return;
          if (stream.fatal) outcome = stream.fatal;
          else if (stream.superseded) outcome = { kind: 'ok', body: { superseded: true } };
          else if (stream.frames === 0 && Date.now() - started < wait / 2) {
            // Ended early with nothing (a proxy cutting streams, a server going down): back off, do not spin.
            outcome = { kind: 'retry', error: new BidiClientError('BAD_RESPONSE', 'watch: the stream ended early without a frame') };
          } else {
            this.backoff.reset();
            this.host.watchOk();
            continue; // the stream ended (its wait, or enough sent to need an ack): watch again
          }
        } else {
          outcome = classify(reply, 'watch');
        }
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof AbortedError) continue; // replaced by probe()
        if (err instanceof BufferedStreamError) {
          // Its frames (if any) are held somewhere in between; the next watch asks for them again
          // from the same ack, answered the plain way: no backoff, nothing lost.
          this.streamOn = false;
          this.opts.onStreamOff?.(err);
          continue;
        }
        outcome = thrownOutcome(err);
      }
      if (this.stopped) return;

      if (outcome.kind === 'ok') {
        const superseded = outcome.body.superseded === true;
        if (!superseded) {
          this.supersededInARow = 0;
          this.backoff.reset();
          this.host.watchOk();
          this.handle(outcome.body);
          continue;
        }
        // Ignored. Twice in a row means another watcher with our sid exists: do not spin.
        if (++this.supersededInARow > 1) await this.host.timers.sleep(this.backoff.next(), ctl.signal);
        continue;
      }

      if (outcome.kind === 'fatal') {
        const { status, errorCode, message } = outcome;
        if (status === 404 && errorCode === 'UNKNOWN_SESSION') this.host.fail(sessionLost(status, errorCode));
        else if (status === 410) this.host.fail(sessionClosed(status, errorCode, this.marker));
        else this.host.fail(protocolError(this.host.transport.describe({ method: 'GET', path: '/watch' }), status, errorCode, message));
        return;
      }

      if (outcome.kind === 'invalid') {
        this.host.fail({ code: 'INVALID_REQUEST', reason: outcome.error.message });
        return;
      }

      // Transient error.
      if (this.probing) {
        // The server already said 410; do not keep a dead session alive on retries.
        this.host.fail(sessionClosed(410, 'SESSION_CLOSED', this.marker));
        return;
      }
      const delay = this.backoff.next(outcome.retryAfterMs);
      if (!this.host.retry('watch', outcome.error, this.backoff, delay)) return; // budget spent: the session ended
      await this.host.timers.sleep(delay, ctl.signal, outcome.retryAfterMs === undefined);
      this.host.retryDone('watch');
    }
  }

  /**
   * One frame of a streaming watch: a watch body, handled as soon as it
   * arrives; or an error (as a 4xx would be) or `superseded`, which end the
   * stream.
   */
  private onFrame(frame: unknown, stream: StreamState): void {
    if (this.stopped || stream.fatal || stream.superseded) return;
    stream.frames++;
    if (!frame || typeof frame !== 'object' || Array.isArray(frame)) {
      throw new BidiClientError('BAD_RESPONSE', 'watch: a stream frame is not a JSON object');
    }
    const body = frame as Record<string, unknown>;
    if (body.error && typeof body.error === 'object') {
      const { code, message } = body.error as { code?: unknown; message?: unknown };
      const errorCode = typeof code === 'string' ? code : undefined;
      stream.fatal = {
        kind: 'fatal',
        status: errorCode === 'UNKNOWN_SESSION' ? 404 : 400,
        ...(errorCode !== undefined ? { errorCode } : {}),
        message: typeof message === 'string' ? message : 'watch stream error',
      };
      return;
    }
    if (body.superseded === true) {
      stream.superseded = true;
      return;
    }
    this.supersededInARow = 0;
    this.backoff.reset();
    this.host.watchOk();
    this.handle(body);
  }

  /** Processes a watch response body. */
  private handle(body: Record<string, unknown>): void {
    this.host.ack(body.ack);
    const before = this.delivered;
    const heldBefore = this.held.size;

    const close = body.close as { seq?: unknown; reason?: unknown } | undefined;
    if (!this.marker && close && typeof close === 'object' && Number.isSafeInteger(close.seq)) {
      this.marker = {
        seq: close.seq as number,
        reason: typeof close.reason === 'string' ? close.reason : String(close.reason ?? ''),
      };
      for (const seq of this.held.keys()) if (seq >= this.marker.seq) this.held.delete(seq);
      this.host.closeMarkerSeen(this.marker);
      if (this.stopped) return;
    }

    if (Array.isArray(body.msgs)) {
      for (const pair of body.msgs as unknown[]) {
        if (!Array.isArray(pair) || pair.length < 2) continue;
        const seq = pair[0];
        if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) continue;
        if (seq <= this.delivered || this.held.has(seq)) continue; // duplicate
        if (this.marker && seq >= this.marker.seq) continue; // after the end: cannot exist
        if (seq === this.delivered + 1 && this.held.size === 0) {
          // The next one, with nothing held: straight to the app, in order (no Map entry made and dropped per message).
          if (this.stopped) continue;
          this.delivered = seq;
          this.host.deliver(pair[1], seq);
          continue;
        }
        if (this.held.size >= MAX_HELD_MESSAGES && seq !== this.delivered + 1) continue;
        this.held.set(seq, pair[1]);
      }
    }

    // Deliver the contiguous run.
    while (!this.stopped) {
      const next = this.delivered + 1;
      if (!this.held.has(next)) break;
      const data = this.held.get(next);
      this.held.delete(next);
      this.delivered = next;
      this.host.deliver(data, next);
    }
    if (this.stopped) return;

    if (this.marker && this.delivered >= this.marker.seq - 1) {
      this.stopped = true;
      this.host.closed(this.marker);
      return;
    }
    if (this.probing && this.delivered === before && this.held.size === heldBefore) {
      // No close marker and no progress: the server closed the session without telling us why.
      this.host.fail(sessionClosed(410, 'SESSION_CLOSED', this.marker));
    }
  }
}

function sessionClosed(status: number, errorCode: string | undefined, marker: CloseMarker | undefined): CloseEvent {
  return {
    code: 'SESSION_CLOSED',
    reason: marker
      ? `the server closed the session (${marker.reason}) before all its messages reached this client`
      : 'the server reports the session as closed',
    status,
    ...(errorCode !== undefined ? { errorCode } : {}),
  };
}
