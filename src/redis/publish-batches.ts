/**
 * Publish batches: the `publish` calls a RedisStore gets in one turn of the
 * event loop go to Redis together, consecutive calls to the same group as one
 * script call (publish-3 takes several messages and gives them consecutive
 * gseqs). A loop of unawaited `hub.publish` calls is then a few script calls
 * instead of one per message, and the entries are the same.
 *
 * Order is kept: calls are gathered only until the end of the turn's
 * microtasks, and any other script call of the store sends what is gathered
 * first (`flush`, called before every script), so on one connection
 * everything reaches Redis in call order, as without batching.
 */
import type { GroupRetention, PublishResult } from '../core/store';

export interface QueuedPublish {
  group: string;
  msg: string;
  retention: GroupRetention;
  /** The publish id ('' = none); a batch is stored under its first call's id. */
  id: string;
  resolve(result: PublishResult): void;
  reject(err: unknown): void;
}

/** What one script call answers: the group's size and the gseq of the batch's first entry. */
export interface PublishedRun {
  members: number;
  first: number;
}

/** At most this many messages per script call, */
const MAX_BATCH_MESSAGES = 128;
/** and at most about this many bytes (UTF-16 units; a single larger message goes alone). */
const MAX_BATCH_CHARS = 1 << 20;

export class PublishBatches {
  private queue: QueuedPublish[] = [];

  constructor(private readonly send: (batch: QueuedPublish[]) => Promise<PublishedRun>) {}

  add(group: string, msg: string, retention: GroupRetention, id: string): Promise<PublishResult> {
    return new Promise((resolve, reject) => {
      if (this.queue.push({ group, msg, retention, id, resolve, reject }) === 1) queueMicrotask(this.flush);
    });
  }

  /** Sends everything gathered, now (synchronously hands each batch's command to the connection). */
  readonly flush = (): void => {
    if (this.queue.length === 0) return;
    const queue = this.queue;
    this.queue = [];
    for (const batch of batches(queue)) {
      let sent: Promise<PublishedRun>;
      try {
        sent = this.send(batch);
      } catch (err) {
        sent = Promise.reject(err);
      }
      sent.then(
        ({ members, first }) => batch.forEach((p, i) => p.resolve({ status: 'ok', members, gseq: members === 0 ? 0 : first + i })),
        (err: unknown) => batch.forEach((p) => p.reject(err)),
      );
    }
  };
}

/** Consecutive calls to the same group, with the same retention and both with or without an id, within the size caps. */
function batches(queue: QueuedPublish[]): QueuedPublish[][] {
  const out: QueuedPublish[][] = [];
  let batch: QueuedPublish[] = [];
  let chars = 0;
  for (const p of queue) {
    const head = batch[0];
    const fits =
      head !== undefined &&
      p.group === head.group &&
      p.retention.maxEntries === head.retention.maxEntries &&
      p.retention.maxAgeMs === head.retention.maxAgeMs &&
      (p.id === '') === (head.id === '') &&
      batch.length < MAX_BATCH_MESSAGES &&
      chars + p.msg.length <= MAX_BATCH_CHARS;
    if (!fits && batch.length > 0) {
      out.push(batch);
      batch = [];
      chars = 0;
    }
    batch.push(p);
    chars += p.msg.length;
  }
  if (batch.length > 0) out.push(batch);
  return out;
}
