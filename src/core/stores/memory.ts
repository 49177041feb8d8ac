import { APPEND_IDS_REMEMBERED, CLIENT_CLOSE_REASON, GROUP_OVERRUN_REASON } from '../store';
import type {
  AppendLimits,
  AppendResult,
  CloseInput,
  CloseResult,
  CommitInput,
  CommitResult,
  CommitSent,
  CreateInput,
  CreateResult,
  GroupRetention,
  ListInput,
  ListResult,
  PublishResult,
  ReadInput,
  ReadResult,
  ReceiveInput,
  ReceiveResult,
  SessionInfo,
  Store,
  StoreEvent,
  StoredMessage,
  SweepInput,
  SweepResult,
  SweptSession,
  Unsubscribe,
} from '../store';
import { BidiError } from '../errors';
import { DEFAULT_LIMITS } from '../limits';
import { utf8Length } from '../util';
import RateLimiterMemory from 'rate-limiter-flexible/lib/RateLimiterMemory.js';
import type { OpenLimit, OpenLimiter } from '../open-limit';
import { openLimiterFrom } from '../open-limit';

export interface MemoryStoreOptions {
  /** Clock, for tests. Default `Date.now`. */
  now?: () => number;
  /** How long a closed session's tombstone answers "closed" rather than "unknown". Default: the session's idle timeout. */
  tombstoneMs?: number;
}

type Status = 'open' | 'closing';

/**
 * A message as this store keeps it, and hands out (reads and deliveries return these objects): with
 * its UTF-8 length, counted once when it comes in (every bound, trim and stream budget needs it).
 * The length is no own property: results look exactly like `{ seq, json }` (the contract suite
 * compares them so).
 */
class Kept implements StoredMessage {
  readonly #bytes: number;

  constructor(
    readonly seq: number,
    readonly json: string,
    bytes: number,
  ) {
    this.#bytes = bytes;
  }

  get bytes(): number {
    return this.#bytes;
  }
}

interface SessionRecord {
  status: Status;
  userJson: string;
  stateJson: string;
  idleMs: number;
  lastSeen: number;
  /** Client → server: highest seq delivered, and what waits behind it. */
  clientAck: number;
  /** Made on first use and dropped when empty: an idle session holds no Map. */
  inbound?: Map<number, Kept>;
  inboundBytes: number;
  /** Server → client: last assigned seq, unacked log (ascending), its bytes. */
  lastSeq: number;
  log: Kept[];
  logBytes: number;
  leaseToken: string | null;
  leaseUntil: number;
  watcher: string | null;
  closeSeq: number;
  closeReason: string;
  /** The groups the session is in, each with its cursor: the last group entry pulled into `log`. */
  groups?: Map<string, GroupCursor>;
  /** The create call's token, so that a repeat of it answers ok. */
  createToken?: string;
  /** Creation order (the sessions map keeps it too): the cursor of `list`. */
  no: number;
  /** The last commit that carried messages: what became of them (answered again to a repeat). */
  lastCommitSent?: { seq: number; sent: CommitSent };
  /** The last appends that carried an id, newest last, with the seqs they got. */
  appends?: Array<{ id: string; firstSeq: number; lastSeq: number }>;
}

/**
 * A closed session: what its client may still ask for, nothing else (no user, state, inbound
 * buffer, groups or lease). `log` and `appends` only while the client has not acked every message
 * before the close marker (a session closed by its client keeps none: it reads no more).
 */
interface Tombstone {
  lastSeq: number;
  clientAck: number;
  closeReason: string;
  /** When it is dropped (unknown from then on). */
  expiresAt: number;
  log?: Kept[];
  logBytes?: number;
  appends?: Array<{ id: string; firstSeq: number; lastSeq: number }>;
}

/** Where a member stands in a group's log. `epoch` 0: the group had no log at the join. */
interface GroupCursor {
  epoch: number;
  gseq: number;
}

interface GroupEntry {
  gseq: number;
  at: number;
  /** Store-wide publish order, to interleave the entries of several groups. */
  order: number;
  json: string;
}

interface GroupRecord {
  members: Set<string>;
  /** Tells this log apart from an earlier one of the same name (a group left empty is dropped with its log). */
  epoch: number;
  /** gseq of the newest entry ever written; `log` holds the retained tail, ascending. */
  last: number;
  log: GroupEntry[];
  /** The last publish ids, with the answers they got. */
  ids?: Array<{ id: string; members: number; gseq: number }>;
}

const UNBOUNDED: AppendLimits = { maxUnackedMessages: Infinity, maxUnackedBytes: Infinity };

/** A group entry on its way into a member's log. */
interface Pending extends GroupEntry {
  group: string;
}

/**
 * The embedded default store: one process, no persistence. Every operation
 * runs synchronously inside one call, which is what makes it atomic. A
 * restart loses every session; clients then see `SESSION_LOST`.
 */
export class MemoryStore implements Store {
  /** Open and closing sessions. */
  private readonly sessions = new Map<string, SessionRecord>();
  /** Closed sessions, oldest close first (a Map keeps insertion order): at most `maxSessions` after each create. */
  private readonly tombs = new Map<string, Tombstone>();
  private readonly groups = new Map<string, GroupRecord>();
  private nextEpoch = 1;
  private publishes = 0;
  /** Per session, its listeners (an array: lighter than a Set for the usual one or two). */
  private readonly listeners = new Map<string, Array<(event: StoreEvent) => void>>();
  private readonly now: () => number;
  private readonly tombstoneMs?: number;
  private openCount = 0;
  private created = 0;
  private sweepToken: string | null = null;
  private sweepUntil = 0;

  constructor(options: MemoryStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    this.tombstoneMs = options.tombstoneMs;
  }

  async create(input: CreateInput): Promise<CreateResult> {
    const existing = this.sessions.get(input.sid);
    if (existing) return input.token !== undefined && existing.createToken === input.token ? { status: 'ok' } : { status: 'exists' };
    if (this.tomb(input.sid)) return { status: 'exists' };
    // Tombstones are bounded by count too: the oldest go first.
    for (const sid of this.tombs.keys()) {
      if (this.tombs.size <= input.maxSessions) break;
      this.tombs.delete(sid);
    }
    if (this.openCount >= input.maxSessions) return { status: 'too-many-sessions' };
    const record: SessionRecord = {
      status: 'open',
      userJson: input.userJson,
      stateJson: input.stateJson,
      idleMs: input.idleMs,
      lastSeen: this.now(),
      clientAck: 0,
      inboundBytes: 0,
      lastSeq: 0,
      log: [],
      logBytes: 0,
      leaseToken: null,
      leaseUntil: 0,
      watcher: null,
      closeSeq: 0,
      closeReason: '',
      createToken: input.token,
      no: ++this.created,
    };
    for (const json of input.initial) this.push(record, json, utf8Length(json));
    this.sessions.set(input.sid, record);
    this.openCount++;
    return { status: 'ok' };
  }

  async receive(sid: string, input: ReceiveInput): Promise<ReceiveResult> {
    const r = this.sessions.get(sid);
    if (!r) return this.tomb(sid) ? { status: 'closed' } : { status: 'unknown' };
    if (r.status !== 'open') return { status: 'closed' };
    if (input.ack !== undefined && input.ack > r.lastSeq) return { status: 'invalid-ack', lastSeq: r.lastSeq };

    // Validate the whole request before changing anything.
    const fresh: Kept[] = [];
    let added = 0;
    for (const m of input.msgs) {
      if (m.seq <= r.clientAck || r.inbound?.has(m.seq)) continue;
      if (m.seq > r.clientAck + input.window) return { status: 'out-of-window', clientAck: r.clientAck };
      const bytes = utf8Length(m.json);
      added += bytes;
      fresh.push(new Kept(m.seq, m.json, bytes));
    }
    if (added > 0 && r.inboundBytes + added > input.bufferBytes && !this.fillsGap(r, fresh)) {
      return { status: 'out-of-window', clientAck: r.clientAck };
    }

    const now = this.now();
    r.lastSeen = now;
    if (input.ack !== undefined) this.trim(sid, r, input.ack);
    if (fresh.length > 0) {
      const inbound = (r.inbound ??= new Map());
      for (const m of fresh) inbound.set(m.seq, m);
    }
    r.inboundBytes += added;

    let deliver: StoredMessage[] = [];
    if (r.inbound?.has(r.clientAck + 1) && (!this.leaseHeld(r, now) || r.leaseToken === input.lease.token)) {
      deliver = this.run(r, r.clientAck, input.maxDeliver);
      r.leaseToken = input.lease.token;
      r.leaseUntil = now + input.lease.ms;
    }
    if (deliver.length === 0) return { status: 'ok', clientAck: r.clientAck, deliver };
    return { status: 'ok', clientAck: r.clientAck, deliver, userJson: r.userJson, stateJson: r.stateJson };
  }

  async commit(sid: string, input: CommitInput): Promise<CommitResult> {
    const r = this.sessions.get(sid);
    if (!r || r.leaseToken !== input.token) return { status: 'lost' };
    const sends = input.sends && input.sends.msgs.length > 0 ? input.sends : undefined;
    // A member of groups appends its own sends after pulling the groups' entries (as RedisStore must).
    if (sends && r.status === 'open' && r.groups && r.groups.size > 0 && input.seq === r.clientAck + 1) return { status: 'pull' };
    let sent: CommitSent | undefined;
    if (input.seq === r.clientAck + 1) {
      const kept = r.inbound?.get(input.seq);
      if (kept !== undefined) {
        r.inboundBytes -= kept.bytes;
        r.inbound!.delete(input.seq);
        if (r.inbound!.size === 0) r.inbound = undefined;
      }
      r.clientAck = input.seq;
      if (sends) {
        sent = this.appendSends(sid, r, sends.msgs, sends.limits);
        r.lastCommitSent = { seq: input.seq, sent };
      }
    } else if (sends) {
      // A repeat of the call that recorded seq: answer what it did, store nothing.
      sent = r.lastCommitSent?.seq === input.seq ? r.lastCommitSent.sent : { stored: 0, firstSeq: r.lastSeq + 1, refused: 'closed' };
    }
    if (input.stateJson !== undefined) r.stateJson = input.stateJson;
    const now = this.now();
    r.lastSeen = now;
    r.leaseUntil = now + input.leaseMs;
    if (r.status === 'closing') {
      const closing: CommitResult = { status: 'closing', clientAck: r.clientAck, reason: r.closeReason, userJson: r.userJson, stateJson: r.stateJson };
      if (sent) closing.sent = sent;
      return closing;
    }
    const result: CommitResult = { status: 'ok', clientAck: r.clientAck, deliver: [] };
    if (sent) result.sent = sent;
    if (!input.next) return result;
    result.deliver = this.run(r, r.clientAck, input.maxDeliver);
    if (result.deliver.length === 0) r.leaseToken = null;
    return result;
  }

  /** A commit's sends: as many as fit the unacked bounds, in order; the rest refused. */
  private appendSends(sid: string, r: SessionRecord, msgs: string[], limits: AppendLimits): CommitSent {
    const sent: CommitSent = { stored: 0, firstSeq: r.lastSeq + 1 };
    if (r.status !== 'open') return { ...sent, refused: 'closed' };
    for (const json of msgs) {
      const bytes = utf8Length(json);
      if (r.log.length + 1 > limits.maxUnackedMessages || r.logBytes + bytes > limits.maxUnackedBytes) {
        sent.refused = 'full';
        break;
      }
      this.push(r, json, bytes);
      sent.stored++;
    }
    if (sent.stored > 0) this.emitMessages(sid, r, sent.stored);
    return sent;
  }

  async renewLease(sid: string, token: string, ms: number): Promise<boolean> {
    const r = this.sessions.get(sid);
    if (!r || r.leaseToken !== token) return false;
    r.leaseUntil = this.now() + ms;
    return true;
  }

  async append(sid: string, msgs: string[], limits: AppendLimits, id?: string): Promise<AppendResult> {
    return this.appendOne(sid, msgs, limits, id);
  }

  async appendMany(sids: string[], msg: string, limits: AppendLimits, id?: string): Promise<AppendResult[]> {
    return sids.map((sid) => this.appendOne(sid, [msg], limits, id));
  }

  /** Open rate limits in this process (a fixed window per key, expired by rate-limiter-flexible's own timers). */
  openLimiter(limit: OpenLimit): OpenLimiter {
    return openLimiterFrom(new RateLimiterMemory({ points: limit.opens, duration: limit.perSeconds }));
  }

  async read(sid: string, input: ReadInput): Promise<ReadResult> {
    const r = this.sessions.get(sid);
    if (!r) return this.readTomb(sid, input);
    if (input.ack > r.lastSeq) return { status: 'invalid-ack', lastSeq: r.lastSeq };
    if (input.after === undefined) r.lastSeen = this.now(); // a stream's re-read is not activity
    this.trim(sid, r, input.ack);
    this.pull(sid, r, input.limits ?? DEFAULT_LIMITS, false, 0, 0);
    if (input.claim) {
      r.watcher = input.watchToken;
      this.emit(sid, { type: 'watch', token: input.watchToken });
    }
    const superseded = r.watcher !== input.watchToken;
    let msgs: StoredMessage[] = [];
    if (!superseded && r.log.length > 0) {
      // The log is contiguous: the message with seq `after + 1` is at index `after + 1 - log[0].seq`.
      msgs = slice(r.log, input);
    }
    const result: ReadResult = { status: 'ok', msgs, clientAck: r.clientAck, superseded };
    if (r.status !== 'open') result.close = { seq: r.closeSeq, reason: r.closeReason };
    return result;
  }

  /**
   * A read of a closed session: what is left of its log before the close marker, and the marker.
   * Never superseded (nothing waits on a closed session: every watch is answered at once). The ack
   * that reaches the marker drops the log and the append ids: the tombstone is then its few numbers.
   */
  private readTomb(sid: string, input: ReadInput): ReadResult {
    const t = this.tomb(sid);
    if (!t) return { status: 'unknown' };
    if (input.ack > t.lastSeq) return { status: 'invalid-ack', lastSeq: t.lastSeq };
    let msgs: StoredMessage[] = [];
    if (t.log) {
      let n = 0;
      while (n < t.log.length && t.log[n]!.seq <= input.ack) t.logBytes! -= t.log[n++]!.bytes;
      if (n > 0) t.log.splice(0, n);
      if (t.log.length === 0) {
        t.log = undefined;
        t.logBytes = undefined;
        t.appends = undefined;
      } else {
        msgs = slice(t.log, input);
      }
    }
    return { status: 'ok', msgs, clientAck: t.clientAck, superseded: false, close: { seq: t.lastSeq + 1, reason: t.closeReason } };
  }

  async close(sid: string, input: CloseInput): Promise<CloseResult> {
    const r = this.sessions.get(sid);
    if (!r) {
      const t = this.tomb(sid);
      if (!t) return { status: 'unknown' };
      return { status: 'ok', transitioned: false, leased: false, reason: t.closeReason, userJson: 'null', stateJson: 'null' };
    }
    let transitioned = false;
    if (r.status === 'open') {
      transitioned = true;
      // Publishes that resolved before the close come before its marker: pull them all (the group
      // logs' retention bounds them). An overrun found here closes with its own reason.
      if (this.pull(sid, r, UNBOUNDED, false, 0, 0) !== 'overrun') this.beginClose(sid, r, input.reason);
    }
    let leased = false;
    if (r.status === 'closing' && input.lease && (!this.leaseHeld(r) || r.leaseToken === input.lease.token)) {
      r.leaseToken = input.lease.token;
      r.leaseUntil = this.now() + input.lease.ms;
      leased = true;
    }
    return { status: 'ok', transitioned, leased, reason: r.closeReason, userJson: r.userJson, stateJson: r.stateJson };
  }

  async finishClose(sid: string, token: string): Promise<void> {
    const r = this.sessions.get(sid);
    if (!r || r.leaseToken !== token || r.status !== 'closing') return;
    if (r.groups) for (const group of r.groups.keys()) this.removeMember(group, sid);
    this.sessions.delete(sid);
    this.openCount--;
    const ms = this.tombstoneMs ?? r.idleMs;
    if (ms <= 0) return;
    // The record becomes a tombstone: only what its client may still read.
    const t: Tombstone = { lastSeq: r.lastSeq, clientAck: r.clientAck, closeReason: r.closeReason, expiresAt: this.now() + ms };
    // A client that closed the session reads no more; otherwise its unacked log waits for it.
    if (r.log.length > 0 && r.closeReason !== CLIENT_CLOSE_REASON) {
      t.log = r.log;
      t.logBytes = r.logBytes;
      if (r.appends) t.appends = r.appends;
    }
    this.tombs.set(sid, t);
  }

  async sweep(input: SweepInput): Promise<SweepResult> {
    const now = this.now();
    if (this.sweepToken !== null && this.sweepToken !== input.lease.token && this.sweepUntil > now) return { status: 'busy' };
    this.sweepToken = input.lease.token;
    this.sweepUntil = now + input.lease.ms;
    const closing: SweptSession[] = [];
    for (const [sid, t] of this.tombs) if (now > t.expiresAt) this.tombs.delete(sid);
    for (const [sid, r] of this.sessions) {
      if (closing.length >= input.limit) break;
      if (r.status === 'open' && now - r.lastSeen > r.idleMs) this.beginClose(sid, r, 'expired');
      if (r.status === 'closing' && !this.leaseHeld(r)) {
        r.leaseToken = input.lease.token;
        r.leaseUntil = now + input.lease.ms;
        closing.push({ sid, reason: r.closeReason, userJson: r.userJson, stateJson: r.stateJson });
      }
    }
    return { status: 'ok', closing };
  }

  async subscribe(sid: string, listener: (event: StoreEvent) => void): Promise<Unsubscribe> {
    let list = this.listeners.get(sid);
    if (!list) this.listeners.set(sid, (list = []));
    list.push(listener);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const i = list!.indexOf(listener);
      if (i >= 0) list!.splice(i, 1);
      if (list!.length === 0 && this.listeners.get(sid) === list) this.listeners.delete(sid);
    };
  }

  async inspect(sids: string[]): Promise<Array<SessionInfo | null>> {
    return sids.map((sid) => {
      const r = this.sessions.get(sid);
      if (!r) {
        const t = this.tomb(sid);
        // A tombstone keeps no user or state.
        return t ? { status: 'closed', userJson: 'null', stateJson: 'null', clientAck: t.clientAck, lastSeq: t.lastSeq } : null;
      }
      return { status: r.status, userJson: r.userJson, stateJson: r.stateJson, clientAck: r.clientAck, lastSeq: r.lastSeq };
    });
  }

  async count(): Promise<number> {
    return this.openCount;
  }

  /** In creation order; the cursor is the creation number of the last sid returned (O(sessions) per page: for inspection, not a hot path). */
  async list(input: ListInput): Promise<ListResult> {
    const after = input.cursor === undefined ? 0 : parseCursor(input.cursor);
    const limit = Math.max(1, Math.floor(input.limit));
    const sids: string[] = [];
    let last = after;
    for (const [sid, r] of this.sessions) {
      if (r.no <= after) continue; // closed sessions are tombstones, kept elsewhere
      if (sids.length === limit) return { sids, cursor: String(last) };
      sids.push(sid);
      last = r.no;
    }
    return { sids, cursor: null };
  }

  async publish(group: string, msg: string, retention: GroupRetention, id?: string): Promise<PublishResult> {
    const g = this.groups.get(group);
    if (!g) return { status: 'ok', members: 0, gseq: 0 };
    const seen = id === undefined ? undefined : g.ids?.find((x) => x.id === id);
    if (seen) return { status: 'ok', members: seen.members, gseq: seen.gseq };
    const now = this.now();
    g.last++;
    g.log.push({ gseq: g.last, at: now, order: ++this.publishes, json: msg });
    // Retention, whichever bound trims more: count, then age.
    let drop = Math.max(0, g.log.length - retention.maxEntries);
    while (drop < g.log.length && now - g.log[drop]!.at > retention.maxAgeMs) drop++;
    if (drop > 0) g.log.splice(0, drop);
    if (id !== undefined) {
      const ids = (g.ids ??= []);
      if (ids.length >= APPEND_IDS_REMEMBERED) ids.shift();
      ids.push({ id, members: g.members.size, gseq: g.last });
    }
    // One wake-up per member watched here: no write to any member.
    for (const sid of g.members) if (this.listeners.has(sid)) this.emit(sid, { type: 'message' });
    return { status: 'ok', members: g.members.size, gseq: g.last };
  }

  async join(sid: string, group: string): Promise<boolean> {
    const r = this.sessions.get(sid);
    if (!r || r.status !== 'open') return false;
    const groups = (r.groups ??= new Map());
    if (groups.has(group)) return true; // a member already: its cursor stays
    let g = this.groups.get(group);
    if (!g) this.groups.set(group, (g = { members: new Set(), epoch: this.nextEpoch++, last: 0, log: [] }));
    // Entries published from now on are the member's; none from before.
    groups.set(group, { epoch: g.epoch, gseq: g.last });
    g.members.add(sid);
    // A watch waiting now learns of the group at its next read.
    this.emit(sid, { type: 'message' });
    return true;
  }

  async leave(sid: string, group: string): Promise<void> {
    this.sessions.get(sid)?.groups?.delete(group);
    this.removeMember(group, sid);
  }

  async members(group: string): Promise<string[]> {
    return [...(this.groups.get(group)?.members ?? [])];
  }

  async dispose(): Promise<void> {
    this.listeners.clear();
  }

  /** Number of sessions held (open, closing and tombstones); for tests and metrics. */
  get size(): number {
    return this.sessions.size + this.tombs.size;
  }

  /** Number of tombstones held (at most `maxSessions` after each create); for tests and metrics. */
  get tombstones(): number {
    return this.tombs.size;
  }

  // --- internals -----------------------------------------------------------

  /** A tombstone, unless it is past its retention (then dropped). */
  private tomb(sid: string): Tombstone | undefined {
    const t = this.tombs.get(sid);
    if (t && this.now() > t.expiresAt) {
      this.tombs.delete(sid);
      return undefined;
    }
    return t;
  }

  private removeMember(group: string, sid: string): void {
    const g = this.groups.get(group);
    if (!g) return;
    g.members.delete(sid);
    // Nobody left to read its log: drop it (a later join starts a new epoch).
    if (g.members.size === 0) this.groups.delete(group);
  }

  /**
   * Moves the session's pending group entries (those after its cursors) into
   * its log, in publish-time order across groups, each group's in its order,
   * taking the next seqs and advancing the cursors. `all` false (a read):
   * as many as fit the unacked bounds. `all` true (an append of `extra`
   * messages of `extraBytes`): every pending entry and the extra messages
   * must fit, else nothing moves and the answer is 'full'. A member whose
   * cursor fell behind a group's retained log starts closing ('overrun').
   */
  private pull(sid: string, r: SessionRecord, limits: AppendLimits, all: boolean, extra: number, extraBytes: number): 'ok' | 'full' | 'overrun' {
    if (!r.groups || r.status !== 'open') return 'ok';
    const pending: Pending[] = [];
    for (const [group, cursor] of r.groups) {
      const g = this.groups.get(group);
      if (!g) continue;
      const from = cursor.epoch === g.epoch ? cursor.gseq : 0;
      if (g.last <= from) continue;
      const first = g.log.length > 0 ? g.log[0]!.gseq : g.last + 1;
      if (first > from + 1) {
        this.beginClose(sid, r, GROUP_OVERRUN_REASON);
        return 'overrun';
      }
      for (let i = from + 1 - first; i < g.log.length; i++) pending.push({ ...g.log[i]!, group });
    }
    if (pending.length === 0) return 'ok';
    // Stable: entries of one group keep their order; groups interleave by publish time.
    pending.sort((a, b) => a.order - b.order);
    let n = 0;
    let bytes = 0;
    while (n < pending.length) {
      const b = utf8Length(pending[n]!.json);
      if (r.log.length + n + 1 > limits.maxUnackedMessages || r.logBytes + bytes + b > limits.maxUnackedBytes) break;
      bytes += b;
      n++;
    }
    if (all && (n < pending.length || r.log.length + n + extra > limits.maxUnackedMessages || r.logBytes + bytes + extraBytes > limits.maxUnackedBytes)) {
      return 'full';
    }
    for (let i = 0; i < n; i++) {
      const e = pending[i]!;
      this.push(r, e.json, utf8Length(e.json));
      r.groups.set(e.group, { epoch: this.groups.get(e.group)!.epoch, gseq: e.gseq });
    }
    return 'ok';
  }

  private leaseHeld(r: SessionRecord, now = this.now()): boolean {
    return r.leaseToken !== null && r.leaseUntil > now;
  }

  /** The contiguous buffered run after `from`. */
  private run(r: SessionRecord, from: number, max: number): StoredMessage[] {
    const out: StoredMessage[] = [];
    const inbound = r.inbound;
    if (!inbound) return out;
    for (let seq = from + 1; out.length < max; seq++) {
      const kept = inbound.get(seq);
      if (kept === undefined) break;
      // The kept object itself: nobody changes it (commit only drops it from the map).
      out.push(kept);
    }
    return out;
  }

  /**
   * True when, with this request's messages, everything new joins the run
   * that starts at clientAck + 1: such a request unblocks the buffer and is
   * never refused for buffer bytes (or a full buffer could wedge a session).
   */
  private fillsGap(r: SessionRecord, fresh: StoredMessage[]): boolean {
    if (fresh.length === 0 || fresh[0]!.seq !== r.clientAck + 1) return false;
    const incoming = new Set(fresh.map((m) => m.seq));
    let end = r.clientAck;
    while (r.inbound?.has(end + 1) || incoming.has(end + 1)) end++;
    return fresh[fresh.length - 1]!.seq <= end;
  }

  private push(r: SessionRecord, json: string, bytes: number): number {
    r.lastSeq++;
    r.log.push(new Kept(r.lastSeq, json, bytes));
    r.logBytes += bytes;
    return r.lastSeq;
  }

  private appendOne(sid: string, msgs: string[], limits: AppendLimits, id?: string): AppendResult {
    const r = this.sessions.get(sid);
    if (!r) {
      const t = this.tomb(sid);
      if (!t) return { status: 'unknown' };
      const seen = id === undefined ? undefined : t.appends?.find((a) => a.id === id);
      return seen ? { status: 'ok', firstSeq: seen.firstSeq, lastSeq: seen.lastSeq } : { status: 'closed' };
    }
    if (id !== undefined && r.appends) {
      const seen = r.appends.find((a) => a.id === id);
      if (seen) return { status: 'ok', firstSeq: seen.firstSeq, lastSeq: seen.lastSeq };
    }
    if (r.status !== 'open') return { status: 'closed' };
    let bytes = 0;
    const sizes: number[] = [];
    for (const json of msgs) {
      const b = utf8Length(json);
      sizes.push(b);
      bytes += b;
    }
    // Group entries published before this send come before it: pull them all first (or refuse).
    const pulled = this.pull(sid, r, limits, true, msgs.length, bytes);
    if (pulled === 'overrun') return { status: 'closed' };
    if (pulled === 'full' || r.log.length + msgs.length > limits.maxUnackedMessages || r.logBytes + bytes > limits.maxUnackedBytes) {
      return { status: 'full' };
    }
    const firstSeq = r.lastSeq + 1;
    for (let i = 0; i < msgs.length; i++) this.push(r, msgs[i]!, sizes[i]!);
    if (id !== undefined) {
      const appends = (r.appends ??= []);
      if (appends.length >= APPEND_IDS_REMEMBERED) appends.shift();
      appends.push({ id, firstSeq, lastSeq: r.lastSeq });
    }
    this.emitMessages(sid, r, msgs.length);
    return { status: 'ok', firstSeq, lastSeq: r.lastSeq };
  }

  private trim(sid: string, r: SessionRecord, ack: number): void {
    let n = 0;
    while (n < r.log.length && r.log[n]!.seq <= ack) {
      r.logBytes -= r.log[n]!.bytes;
      n++;
    }
    if (n > 0) {
      r.log.splice(0, n);
      this.emit(sid, { type: 'ack' });
    }
  }

  private beginClose(sid: string, r: SessionRecord, reason: string): void {
    r.status = 'closing';
    r.closeReason = reason;
    r.closeSeq = r.lastSeq + 1;
    // Messages waiting behind a gap will never be delivered now.
    r.inbound = undefined;
    r.inboundBytes = 0;
    this.emit(sid, { type: 'close' });
  }

  /** A message event carrying the last `n` messages of the log (a watch writes them without a read). */
  private emitMessages(sid: string, r: SessionRecord, n: number): void {
    if (this.listeners.has(sid)) this.emit(sid, { type: 'message', run: { msgs: r.log.slice(-n), clientAck: r.clientAck } });
  }

  private emit(sid: string, event: StoreEvent): void {
    const list = this.listeners.get(sid);
    if (!list || list.length === 0) return;
    // Listeners run after the operation returns, as they would with a remote store.
    queueMicrotask(() => {
      // A copy, so that listeners (un)subscribing meanwhile do not upset the loop; one listener (a watch) needs none.
      if (list.length === 1) list[0]!(event);
      else for (const listener of list.slice()) listener(event);
    });
  }
}

/** The messages of a contiguous log a read returns: after `after`, at most `maxMessages`, until their bytes reach `maxBytes` (the first always goes). */
function slice(log: Kept[], input: ReadInput): StoredMessage[] {
  // The log is contiguous: the message with seq `after + 1` is at index `after + 1 - log[0].seq`.
  const start = input.after === undefined ? 0 : Math.max(0, input.after + 1 - log[0]!.seq);
  let end = Math.min(log.length, start + input.maxMessages);
  if (input.maxBytes !== undefined) {
    let bytes = 0;
    for (let i = start; i < end; i++) {
      if (bytes >= input.maxBytes) {
        end = i;
        break;
      }
      bytes += log[i]!.bytes;
    }
  }
  return log.slice(start, end);
}

function parseCursor(cursor: string): number {
  if (!/^\d{1,15}$/.test(cursor)) throw new BidiError('BAD_REQUEST', 'malformed session list cursor');
  return Number(cursor);
}
