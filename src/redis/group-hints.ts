/**
 * Group hints: the entries recent group wake-ups carried (publish-3.lua sends
 * `g<epoch> <gseq> <time µs>\n<json>`), per group channel this instance
 * listens to. RedisStore makes a woken member's pull block from them instead
 * of reading the group's log (docs/REDIS.md, "Group hints"). Only ever a
 * guess that the read script checks, so the cache may forget anything at any
 * time; it is bounded per group and in total.
 */
import type { GroupEntryNews } from './subscriptions';

export interface HintedEntry {
  gseq: number;
  /** Publish time, µs. */
  t: number;
  json: string;
}

interface Held {
  /** The channel's run of hearing they were heard in (Subscriptions.heardRun): in another, wake-ups may have gone unheard since. */
  run: number;
  /** The group log's epoch. */
  epoch: string;
  /** Consecutive gseqs, oldest first; `json` absent when the wake-up did not carry it. */
  entries: Array<{ gseq: number; t: number; json: string | undefined }>;
  bytes: number;
}

/** Per group: the newest entries kept. */
export const HINTS_PER_GROUP = 1024;
/** In total, over every group: past either bound, the cache starts over empty. */
export const HINTS_MAX_ENTRIES = 65_536;
export const HINTS_MAX_CHARS = 8 * 1024 * 1024;

export class GroupHints {
  private readonly groups = new Map<string, Held>();
  /**
   * Channels whose entries the total bounds made it forget (see heard): until one of theirs is
   * heard again, "nothing heard" there does not mean "nothing published". At most one per
   * channel listened to: drop() takes a channel out.
   */
  private readonly forgotten = new Set<string>();
  private entries = 0;
  private chars = 0;

  /** A group channel's wake-up, heard in the channel's run of hearing `run` (Subscriptions.heardRun). */
  heard(channel: string, news: GroupEntryNews, run: number): void {
    let h = this.groups.get(channel);
    const last = h?.entries[h.entries.length - 1];
    if (!h || h.run !== run || h.epoch !== news.epoch || (last && news.gseq !== last.gseq + 1)) {
      // Not the next entry of what is held: start over from this one.
      this.drop(channel);
      h = { run, epoch: news.epoch, entries: [], bytes: 0 };
      this.groups.set(channel, h);
    }
    // From this entry on, the channel's hints are whole again (after() checks they reach back).
    this.forgotten.delete(channel);
    const size = news.json?.length ?? 0;
    if (this.entries + 1 > HINTS_MAX_ENTRIES || this.chars + size > HINTS_MAX_CHARS) {
      // Those forgotten before and not heard since stay forgotten.
      const others = [...this.groups.keys(), ...this.forgotten].filter((other) => other !== channel);
      this.clear();
      for (const other of others) this.forgotten.add(other);
      this.groups.set(channel, h);
      h.entries.length = 0;
      h.bytes = 0;
    }
    h.entries.push({ gseq: news.gseq, t: news.t, json: news.json });
    h.bytes += size;
    this.entries++;
    this.chars += size;
    if (h.entries.length > HINTS_PER_GROUP) {
      const gone = h.entries.shift()!;
      const goneSize = gone.json?.length ?? 0;
      h.bytes -= goneSize;
      this.entries--;
      this.chars -= goneSize;
    }
  }

  /**
   * The entries after a member's cursor (`epoch`, `gseq`), as far as the wake-ups heard in the
   * channel's run of hearing `run` tell them: [] when none was heard, null when they cannot tell
   * (they do not reach back to the cursor, one came without its text, the run changed since, or
   * the total bounds made it forget the channel's entries).
   *
   * "None heard" is an answer only for a cursor this instance read while it listened to the group
   * ever since (a watch's re-read: RedisStore's knownCursors). `strict`: for any other cursor
   * (one just read from the session), where only entries heard from the cursor on tell anything,
   * null unless the entries held reach back to it.
   */
  after(channel: string, epoch: string, gseq: number, run: number, strict = false): { epoch: string; entries: HintedEntry[] } | null {
    const h = this.groups.get(channel);
    if (!h || h.entries.length === 0) return strict || this.forgotten.has(channel) ? null : { epoch, entries: [] };
    if (h.run !== run) return null;
    // A cursor of another epoch: the log began again, its entries count from 1 (as group-tail does).
    const from = h.epoch === epoch ? gseq : 0;
    const firstHeld = h.entries[0]!.gseq;
    if (firstHeld > from + 1) return null;
    const entries = h.entries.slice(from + 1 - firstHeld);
    for (const e of entries) if (e.json === undefined) return null;
    return { epoch: h.epoch, entries: entries as HintedEntry[] };
  }

  /** The channel is not listened to any more (or its entries start over): forget it. */
  drop(channel: string): void {
    this.forgotten.delete(channel);
    const h = this.groups.get(channel);
    if (!h) return;
    this.groups.delete(channel);
    this.entries -= h.entries.length;
    this.chars -= h.bytes;
  }

  /** Forgets everything (the store's dispose, and the total bounds: see heard). */
  clear(): void {
    this.groups.clear();
    this.forgotten.clear();
    this.entries = 0;
    this.chars = 0;
  }

  /** For tests: entries and characters held. */
  get size(): { entries: number; chars: number; groups: number } {
    return { entries: this.entries, chars: this.chars, groups: this.groups.size };
  }
}
