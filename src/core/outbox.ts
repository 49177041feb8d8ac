/**
 * Sends that a message handler makes on its own session ride on the
 * message's delivery record: core passes them to the store's `commit`, which
 * appends them in the same atomic step. One store round trip instead of two,
 * and a crash between the two can no longer store the sends of a message
 * that is then delivered again.
 *
 * A handler that waits for its send (`await session.send(x)`) cannot return
 * before the send is stored, so waiting for the commit would deadlock it:
 * a send still queued when the event loop has run out of other work (one
 * macrotask later) is flushed with a plain `append`, as before. So `await`ed
 * sends cost what they always did, and sends the handler does not wait for
 * (`session.send(x); return;`) go with the commit.
 *
 * Those plain appends (and a group member's, whose sends cannot ride on the commit) carry ids
 * derived from the delivered message's seq (`deliveryAppendId`), not fresh ones: when the
 * instance dies between them and the delivery record, the message is delivered again, and a
 * handler that sends the same way gets the first delivery's seqs back instead of a second copy.
 */
import { BidiError } from './errors';
import type { AppendResult, CommitSent } from './store';
import { deliveryAppendId } from './util';

interface Queued {
  json: string;
  resolve(seq: number): void;
  reject(err: unknown): void;
}

type Defer = (fn: () => void) => void;

/** After the microtasks that let a handler return, before any timer: setImmediate where the runtime has it. */
const afterMicrotasks: Defer =
  typeof (globalThis as { setImmediate?: unknown }).setImmediate === 'function'
    ? (fn) => void (globalThis as unknown as { setImmediate: (f: () => void) => unknown }).setImmediate(fn)
    : (fn) => void setTimeout(fn, 0);

/** Outboxes that had a send queued this turn: one deferred call looks at them all (not one per delivery). */
let due: Outbox[] = [];

function lookAtDue(): void {
  const outboxes = due;
  due = [];
  for (const outbox of outboxes) outbox.turnEnded();
}

const NOTHING: never[] = [];

function ignore(): void {}

export class Outbox {
  private queue: Queued[] = [];
  private scheduled = false;
  private flushing?: Promise<void>;
  /** While the delivery runs, sends are queued; afterwards they go straight to the store. */
  private deferring = true;
  /** The client message being delivered (set before its handler runs), and how many appends its sends made so far. */
  private seq = 0;
  private appends = 0;

  constructor(
    /** Stores messages with a plain append (all or nothing within the unacked bounds), under append id `id`. */
    private readonly append: (msgs: string[], id: string) => Promise<AppendResult>,
    /** Failures of sends the handler may not be waiting for. */
    private readonly report: (err: unknown) => void,
  ) {}

  /** The delivery still runs: a send may be queued for its commit. */
  get open(): boolean {
    return this.deferring;
  }

  /** The handler for client message `seq` is about to run: its sends' appends get ids made from `seq`. */
  beginMessage(seq: number): void {
    this.seq = seq;
    this.appends = 0;
  }

  /** The id for the next append of sends the current message's handler made. */
  private nextAppendId(): string {
    return deliveryAppendId(this.seq, this.appends++);
  }

  /** A send from the delivering session: resolves with its seq once stored (with a commit, or by a flush). */
  add(json: string): Promise<number> {
    const p = new Promise<number>((resolve, reject) => this.queue.push({ json, resolve, reject }));
    // Reported below when it fails; a send nobody awaits must not become an unhandled rejection.
    p.catch(ignore);
    if (!this.scheduled) {
      this.scheduled = true;
      if (due.push(this) === 1) afterMicrotasks(lookAtDue);
    }
    return p;
  }

  /** @internal The turn in which a send was queued is over (see `add`). */
  turnEnded(): void {
    this.scheduled = false;
    // Still queued a turn later: the handler waits for it (or is busy elsewhere). Store it now.
    if (this.queue.length > 0) void this.flush();
  }

  /** Store what is queued now, after any flush in flight (so sends keep their order). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    const items = this.queue.splice(0);
    if (items.length === 0) return;
    this.flushing = this.appendAll(items).finally(() => (this.flushing = undefined));
    await this.flushing;
  }

  /** For the commit: what the handler left queued (after any flush in flight). */
  async take(): Promise<Queued[]> {
    while (this.flushing) await this.flushing;
    return this.takeNow()!;
  }

  /** `take()` without waiting, when no flush is in flight (else undefined: call `take()`). */
  takeNow(): Queued[] | undefined {
    if (this.flushing) return undefined;
    if (this.queue.length === 0) return NOTHING;
    const items = this.queue;
    this.queue = [];
    return items;
  }

  /** The commit's outcome for what `take()` gave it. */
  settle(items: Queued[], sent: CommitSent | undefined): void {
    if (items.length === 0) return;
    const stored = sent?.stored ?? 0;
    for (let i = 0; i < stored; i++) items[i]!.resolve(sent!.firstSeq + i);
    if (stored < items.length) this.fail(items.slice(stored), sent?.refused === 'full' ? windowFull() : closed());
  }

  /** The commit failed or lost its lease: nothing of these was stored. */
  fail(items: Queued[], err: unknown): void {
    if (items.length === 0) return;
    for (const item of items) item.reject(err);
    this.report(err);
  }

  /** The commit could not take them (the session is in groups): store them with a plain append now. */
  async appendNow(items: Queued[]): Promise<void> {
    if (items.length > 0) await this.appendAll(items);
  }

  /**
   * The delivery is over: later sends go straight to the store, after what is still queued.
   * Undefined when nothing is queued or being flushed (nothing to wait for).
   */
  close(): Promise<void> | undefined {
    this.deferring = false;
    if (this.queue.length === 0 && !this.flushing) return undefined;
    return this.flush();
  }

  private async appendAll(items: Queued[]): Promise<void> {
    let r: AppendResult;
    try {
      r = await this.append(items.map((i) => i.json), this.nextAppendId());
      // All or nothing: when they do not fit together, store as many as fit, one by one, in order.
      if (r.status === 'full' && items.length > 1) {
        for (let i = 0; i < items.length; i++) {
          const one = await this.append([items[i]!.json], this.nextAppendId());
          if (one.status !== 'ok') {
            this.fail(items.slice(i), appendError(one));
            return;
          }
          items[i]!.resolve(one.firstSeq);
        }
        return;
      }
    } catch (err) {
      this.fail(items, err);
      return;
    }
    if (r.status !== 'ok') {
      this.fail(items, appendError(r));
      return;
    }
    // A redelivery whose earlier run stored fewer of these under this id (it split its sends
    // differently): those are stored; the rest go on under the next id.
    const stored = Math.max(1, r.lastSeq - r.firstSeq + 1);
    for (let i = 0; i < items.length && i < stored; i++) items[i]!.resolve(r.firstSeq + i);
    if (stored < items.length) await this.appendAll(items.slice(stored));
  }

  /**
   * The append id for a send the handler makes past the queue (`whenFull: 'wait'`, too large to
   * queue) while its message is delivered; undefined once the delivery is over (a fresh id then).
   */
  idForDirectSend(): string | undefined {
    return this.deferring ? this.nextAppendId() : undefined;
  }
}

/** The commit did not hold the session's lease any more: another instance delivers the message again, with its sends. */
export function leaseLost(): BidiError {
  return new BidiError('LEASE_LOST', 'the delivery lease was lost: the message is delivered again elsewhere, and these sends with it');
}

function appendError(r: Exclude<AppendResult, { status: 'ok' }>): BidiError {
  if (r.status === 'full') return windowFull();
  if (r.status === 'closed') return closed();
  return new BidiError('UNKNOWN_SESSION', 'no such session');
}

function windowFull(): BidiError {
  return new BidiError('SEND_WINDOW_FULL', 'the session has too many unacked messages; the client is not keeping up');
}

function closed(): BidiError {
  return new BidiError('SESSION_CLOSED', 'the session is closed');
}
