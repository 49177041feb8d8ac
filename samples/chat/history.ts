/**
 * Room history for the chat sample, kept in the bidiweb store itself, so
 * that it works the same on a `MemoryStore` (one process) and on a
 * `RedisStore` shared by any number of instances or serverless functions.
 * Optional: the chat runs without it (`createChatServer({ history: false })`).
 *
 * ## How, without a generic key-value API
 *
 * The `Store` contract (src/core/store.ts) has no generic key-value or list
 * operation, and this sample does not extend it. But a **session's server
 * log already is an atomic, ordered, bounded list**: `append` gives each
 * entry the next seq atomically (from any instance), `read` returns the
 * entries in seq order and trims everything up to an `ack`. So each room's
 * history is a *history session* in the store, never seen by any client:
 *
 * - its sid is derived from the room name (so every instance finds the same
 *   one without asking anyone): `chathist` + 14 base64url characters of a
 *   SHA-256 of the room name — a valid 22-character sid, as the contract
 *   requires, and recognisable by its prefix;
 * - `append(room, line)` is `store.append(historySid, [line])`: one round
 *   trip; every 10th line also trims the log to the last `keep` lines with a
 *   `read` whose `ack` is `lastSeq - keep`;
 * - `read(room)` is one `read` with `ack: 0` (which trims nothing);
 * - the chat's `authorize` hook answers `404 UNKNOWN_SESSION` to any HTTP
 *   request carrying a history sid, so no client can read, trim or close a
 *   history through the protocol, and its `onClose` ignores history sessions
 *   (a sweep expires them after `idleMs` without a join or trim).
 *
 * The chat appends a line to the history *before* publishing it to the room,
 * and a newcomer reads the history *after* it joined the room. So every line
 * reaches a newcomer live, in the history, or both — never neither. Both is
 * possible for lines said while the newcomer joins; lines carry a stable `id`
 * and the page drops the second copy.
 *
 * ## Expiry and generations
 *
 * A history session lives like any session: it expires after `idleMs`
 * (default 24 h) without a `read` (a join or a trim), and then stays a closed
 * tombstone for another `idleMs`, during which its sid cannot be created
 * again. So each room has a few candidate sids (generations 0..3); the
 * history in use is the open one, found with one `inspect` of all four; when
 * none is open, the lowest generation that does not exist is created. (With
 * every generation a tombstone, history is off for that room until one goes.)
 *
 * Costs: per line, one `inspect` + one `append` (+ a trim every 10th line);
 * per join, one `inspect` + one `read`. Each history session counts against
 * the store's `maxSessions` (one per room with a line in the last `idleMs`).
 *
 * What a store extension would look like instead is in the sample's README
 * (two operations: a capped push and a range read).
 */
import type { Store } from '../../src/core/store';

/** Every history sid starts with this (real sids are random; a clash is a 1 in 2^48 chance, and only hides one session). */
export const HISTORY_SID_PREFIX = 'chathist';
const GENERATIONS = 4;
/** Trim once every this many lines (the log holds between `keep` and `keep + TRIM_EVERY` lines). */
const TRIM_EVERY = 10;
/** The watch token of history reads: one fixed token, so readers never supersede each other. */
const READ_TOKEN = 'chat-history-reader';

export interface RoomHistoryOptions {
  /** Lines kept per room. Default 50. */
  keep?: number;
  /** A room's history expires after this long without a join or a trim, ms. Default 24 h. */
  idleMs?: number;
  /** Bytes one room's log may hold. Default 2 MiB. */
  maxBytes?: number;
  /** Counted against the store's session limit, like any session. Default 100 000 (bidiweb's default `limits.maxSessions`). */
  maxSessions?: number;
  /** Keeps several apps' histories apart on one store. Default `'chat'`. */
  namespace?: string;
}

export function isHistorySid(sid: string): boolean {
  return sid.startsWith(HISTORY_SID_PREFIX) && sid.length === 22;
}

function base64url(bytes: Uint8Array): string {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Web Crypto, so the sample also runs on edge runtimes (Node >= 20 has it as a global). */
async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));
}

interface Located {
  sid: string;
  /** The session exists and is open; else it must be created. */
  open: boolean;
  lastSeq: number;
}

/**
 * A room's last `keep` lines, in the store. Holds nothing but its options:
 * every call reads and writes the store, so any number of instances (or a
 * fresh one per request) share the histories.
 */
export class RoomHistory<Line = unknown> {
  readonly keep: number;
  private readonly idleMs: number;
  private readonly maxBytes: number;
  private readonly maxSessions: number;
  private readonly namespace: string;

  constructor(
    private readonly store: Store,
    options: RoomHistoryOptions = {},
  ) {
    this.keep = options.keep ?? 50;
    this.idleMs = options.idleMs ?? 24 * 60 * 60 * 1000;
    this.maxBytes = options.maxBytes ?? 2 * 1024 * 1024;
    this.maxSessions = options.maxSessions ?? 100_000;
    this.namespace = options.namespace ?? 'chat';
    if (!Number.isSafeInteger(this.keep) || this.keep < 1) throw new RangeError('history keep must be a positive integer');
  }

  /** The candidate sids of a room's history, generation 0 first. */
  async sids(room: string): Promise<string[]> {
    const out: string[] = [];
    for (let gen = 0; gen < GENERATIONS; gen++) {
      const hash = await sha256(`bidiweb-chat-history\u0000${this.namespace}\u0000${room}\u0000${gen}`);
      out.push(HISTORY_SID_PREFIX + base64url(hash).slice(0, 22 - HISTORY_SID_PREFIX.length));
    }
    return out;
  }

  /** Adds a line (any JSON value). Resolves false when the history is unavailable (store full, every generation a tombstone). */
  async append(room: string, line: Line): Promise<boolean> {
    const json = JSON.stringify(line);
    const limits = { maxUnackedMessages: this.keep + TRIM_EVERY * 5, maxUnackedBytes: this.maxBytes };
    for (let attempt = 0; attempt < 4; attempt++) {
      const at = await this.locate(room);
      if (!at) return false;
      if (!at.open) {
        const c = await this.store.create({
          sid: at.sid,
          userJson: JSON.stringify({ history: room }),
          stateJson: '{}',
          initial: [json],
          idleMs: this.idleMs,
          maxSessions: this.maxSessions,
        });
        if (c.status === 'ok') return true;
        if (c.status === 'too-many-sessions') return false;
        continue; // 'exists': another instance created it meanwhile
      }
      const r = await this.store.append(at.sid, [json], limits);
      if (r.status === 'ok') {
        if (r.lastSeq > this.keep && r.lastSeq % TRIM_EVERY === 0) await this.trim(at.sid, r.lastSeq - this.keep);
        return true;
      }
      // Full: trims were missed (e.g. an instance died between append and trim); trim and retry.
      if (r.status === 'full') await this.trim(at.sid, at.lastSeq - this.keep);
      // 'closed' / 'unknown': it expired meanwhile; locate again.
    }
    return false;
  }

  /** The last `keep` lines, oldest first. */
  async read(room: string): Promise<Line[]> {
    const at = await this.locate(room);
    if (!at?.open) return [];
    const r = await this.store.read(at.sid, { ack: 0, watchToken: READ_TOKEN, claim: true, maxMessages: this.keep + TRIM_EVERY * 5 });
    if (r.status !== 'ok') return [];
    const lines: Line[] = [];
    for (const m of r.msgs.slice(-this.keep)) {
      try {
        lines.push(JSON.parse(m.json) as Line);
      } catch {
        // never written by us: skip
      }
    }
    return lines;
  }

  /** Which generation is in use: the open one, else the lowest free one to create; null if none can be used now. */
  private async locate(room: string): Promise<Located | null> {
    const sids = await this.sids(room);
    const infos = await this.store.inspect(sids);
    for (let i = sids.length - 1; i >= 0; i--) {
      const info = infos[i];
      if (info?.status === 'open') return { sid: sids[i]!, open: true, lastSeq: info.lastSeq };
    }
    const free = infos.findIndex((info) => info === null);
    return free === -1 ? null : { sid: sids[free]!, open: false, lastSeq: 0 };
  }

  /** Drops every line up to `ack` (a read whose ack trims; acks only grow, so racing trims are harmless). */
  private async trim(sid: string, ack: number): Promise<void> {
    if (ack <= 0) return;
    await this.store.read(sid, { ack, watchToken: READ_TOKEN, claim: true, maxMessages: 1 });
  }
}
