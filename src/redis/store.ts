/**
 * RedisStore: the store contract (src/core/store.ts) over Redis, for any
 * number of instances or serverless functions. Each contract operation is one
 * Lua script on the session's own Cluster slot (see ./commands); this file
 * only builds keys and arguments and decodes the flat replies; the wake-up
 * subscriptions live in ./subscriptions. It holds no session state: any
 * instance can serve any request.
 */
import type { ChainableCommander, Cluster, Redis } from 'ioredis';
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
} from '../core/store';
import { BidiError } from '../core/errors';
import { GROUP_OVERRUN_REASON } from '../core/store';
import { DEFAULT_LIMITS } from '../core/limits';
import type { OpenLimit, OpenLimiter } from '../core/open-limit';
import { openLimiterFrom } from '../core/open-limit';
import RateLimiterRedis from 'rate-limiter-flexible/lib/RateLimiterRedis.js';
import { keySlot, RedisKeys } from './keys';
import type { ScriptName, Scripts } from './scripts';
import { defineScripts } from './scripts';
import { GroupHints } from './group-hints';
import { Subscriptions, type GroupEntryNews } from './subscriptions';
import type { ReplicaAcks } from './replica-acks';
import { withReplicaAcks } from './replica-acks';
import { followSlots } from './follow-slots';
import type { PublishedRun, QueuedPublish } from './publish-batches';
import { PublishBatches } from './publish-batches';

export interface RedisStoreOptions {
  /**
   * The ioredis connection for commands: a `Redis` or a `Cluster`. The store
   * defines its scripts on it (commands named `bidiweb_<script>_v<version>`)
   * and never closes it: it is yours.
   */
  redis: Redis | Cluster;
  /**
   * A connection for pub/sub only (a connection that subscribes cannot run
   * other commands). Default: `redis.duplicate()` — on a Cluster, with
   * `shardedSubscribers: true` — made on the first `subscribe()` and closed
   * by `dispose()`. One you pass in is never closed by the store. On a
   * Cluster, a subscriber with `shardedSubscribers` gets sharded pub/sub
   * (SPUBLISH/SSUBSCRIBE: the message stays on the session's shard); any
   * other subscriber gets classic PUBLISH/SUBSCRIBE, which Redis Cluster
   * broadcasts to every node.
   */
  subscriber?: Redis | Cluster;
  /** Prepended to every key and channel. Default `'bidi:'`. Must not contain `{` or `}`. */
  prefix?: string;
  /** How long a closed session answers "closed" rather than "unknown", ms. Default: the session's idle timeout. */
  tombstoneMs?: number;
  /**
   * Last resort for sessions no sweep ever ends (no instance running, no
   * scheduled `sweep()`): every key of a session expires this long after its
   * last activity, without running `onClose`. It must stay far above the idle
   * timeout, since only a sweep may end an idle session. Default:
   * `max(10 × idleTimeout, 1 hour)`.
   */
  safetyTtlMs?: number | ((idleMs: number) => number);
  /**
   * How long this store stays subscribed to a session's wake-ups after its
   * last listener (a watch) left, ms. Behind a round-robin balancer the next
   * watch of the session often lands here again soon: with a linger it needs
   * no `SUBSCRIBE` (and no `UNSUBSCRIBE` at its end), one round trip instead
   * of three. The price: Redis delivers that session's events to this
   * instance for the linger time, and the instance keeps a small entry per
   * channel. Default 30 000 (above the default watch wait); `0`: unsubscribe
   * as soon as the last listener leaves.
   */
  subscriptionLingerMs?: number;
  /**
   * Wait for replicas before answering: after each state-changing script,
   * `WAIT replicas timeoutMs` on the master that ran it; fewer confirmations
   * fail the operation with STORE_UNAVAILABLE (503: the client retries). Closes
   * the window in which a master that dies before replicating loses a write
   * it acknowledged (Redis replication is asynchronous). Costs one more round
   * trip per operation, plus the replica's own. Default: off. See docs/REDIS.md.
   */
  replicaAcks?: ReplicaAcks;
}

/** A script's flat reply (Lua tables become arrays; a `false` in one becomes null). */
type Reply = Array<string | number | null>;
type Arg = string | number;

interface BatchItem {
  /** A key of the command, to find its Cluster node. */
  key: string;
  add(pipeline: ChainableCommander): void;
}

/** What a group's log holds after a member's cursor (group-tail-2's answer). */
interface GroupTail {
  group: string;
  cursor: string;
  epoch: string;
  /** 'c': every entry after the cursor is here; 'p': the first ones; 'o': overrun. */
  state: string;
  entries: Array<{ gseq: number; t: number; json: string }>;
}

/** Attempts of an append whose session's groups keep moving under it (another pull, a join) before it gives up. */
const APPEND_ATTEMPTS = 8;

/** Entries a close pulls per group at most: all a group log keeps, unless `groupLogEntries` was set above it. */
const CLOSE_PULL_MAX = 10_000_000;

/** Sweep rounds per call at most: each round re-scores the candidates that were not due yet. */
const SWEEP_ROUNDS = 10;
/**
 * A session's channel stays subscribed this long after its last watch left:
 * behind a round-robin balancer its next watch (at most `wait` later, 25 s by
 * default) comes back to this instance and needs no SUBSCRIBE/UNSUBSCRIBE —
 * one Redis round trip per plain watch instead of three.
 */
const DEFAULT_SUBSCRIPTION_LINGER_MS = 30_000;

export class RedisStore implements Store {
  private readonly redis: Redis | Cluster;
  private readonly scripts: Scripts;
  private readonly keys: RedisKeys;
  private readonly cluster: boolean;
  /** '1': scripts SPUBLISH and the subscriber SSUBSCRIBEs; '0': classic pub/sub. */
  private readonly sharded: '0' | '1';
  private readonly tombstoneMs?: number;
  private readonly safetyTtl: (idleMs: number) => number;
  private readonly subs: Subscriptions;
  /**
   * Per session this store has listeners for (they are counted by `subs`, on
   * the session's channel): the group channels it listens to on their behalf
   * (learnt from reads). A publish wakes them with one message on the group's
   * channel, whatever the group's size.
   */
  private readonly groupSubs = new Map<string, Map<string, Promise<Unsubscribe>>>();
  /**
   * Group hints: what this instance heard and last read, so that a member's watch here can pull
   * a publish in one script call instead of three (its read answering the cursors, the group's
   * tail, the pull). Per group channel listened to here, the entries its recent wake-ups carried;
   * per session with listeners here, its groups and cursors as last read. Only ever a guess: the
   * read script pulls under a compare-and-set on each cursor and answers the real cursors when
   * the guess missed, and the read goes on as without hints.
   */
  private readonly groupHints = new GroupHints();
  /** Per session with listeners here: its groups and cursors as last read, and each group channel's run of hearing then (Subscriptions.heardRun). */
  private readonly knownCursors = new Map<string, { cursors: Array<[string, string]>; runs: ReadonlyMap<string, number> }>();
  /** Group-tail reads on their way, by group, cursor and bound, each with the `tailsIssued` count when it was sent (see groupTails). */
  private readonly tailsInFlight = new Map<string, { issued: number; tail: Promise<GroupTail> }>();
  private tailsIssued = 0;
  private readonly prefix: string;
  /** `publish` calls of the current turn, sent together at its end or before any other script (./publish-batches). */
  private readonly publishes = new PublishBatches((batch) => this.publishBatch(batch));

  private readonly onGroupEntry = (channel: string, news: GroupEntryNews): void => this.groupHints.heard(channel, news, this.subs.heardRun(channel));

  constructor(options: RedisStoreOptions) {
    if (!options || !options.redis) throw new BidiError('INVALID_OPTIONS', 'bidiweb/redis: new RedisStore({ redis }) needs an ioredis connection');
    // Every command (scripts and pipelines alike) goes through the replica-ack wrapper when it is on.
    this.redis = withReplicaAcks(options.redis, options.replicaAcks);
    // Every script call first sends the publishes gathered so far: call order is Redis order.
    this.scripts = defineScripts(this.redis, () => this.publishes.flush());
    this.prefix = options.prefix ?? 'bidi:';
    this.keys = new RedisKeys(this.prefix);
    this.cluster = isCluster(options.redis);
    this.tombstoneMs = options.tombstoneMs;
    const safety = options.safetyTtlMs;
    this.safetyTtl = typeof safety === 'function' ? safety : typeof safety === 'number' ? () => safety : defaultSafetyTtl;
    const given = options.subscriber;
    if (given && given === options.redis) {
      throw new BidiError('INVALID_OPTIONS', 'bidiweb/redis: `subscriber` must be a connection of its own (a subscribed connection cannot run other commands)');
    }
    // Sharded pub/sub needs a Cluster subscriber with `shardedSubscribers` (ioredis >= 5.9); anything else gets classic pub/sub.
    const sharded = this.cluster && (given ? isCluster(given) && given.options.shardedSubscribers === true : supportsShardedSubscribers(options.redis));
    this.sharded = sharded ? '1' : '0';
    this.subs = new Subscriptions(sharded, Math.max(0, options.subscriptionLingerMs ?? DEFAULT_SUBSCRIPTION_LINGER_MS), given, () =>
      isCluster(options.redis) ? followSlots(options.redis, options.redis.duplicate([], sharded ? { shardedSubscribers: true } : {})) : options.redis.duplicate(),
      this.onGroupEntry,
    );
  }

  async create(input: CreateInput): Promise<CreateResult> {
    const k = this.keys.session(input.sid);
    const a = asReply('admit', await this.scripts.run('admit', this.keys.sessions, this.keys.tombs, input.sid, input.maxSessions, input.idleMs));
    const admitted = a[0];
    if (admitted !== 0 && admitted !== 1 && admitted !== 2) throw unexpected('admit', a);
    // Tombstones past the count bound, oldest first: their keys go now.
    if (a.length > 1) {
      await this.batch(
        a.slice(1).map((evicted) => {
          const e = this.keys.session(String(evicted));
          return { key: e.s, add: (p) => p.del(e.s, e.out, e.aids) };
        }),
      );
    }
    if (admitted === 0) {
      return (await this.redis.exists(k.s)) ? { status: 'exists' } : { status: 'too-many-sessions' };
    }
    const tomb = this.tombstoneMs ?? input.idleMs;
    const ttl = Math.max(this.safetyTtl(input.idleMs), input.idleMs + 1);
    const token = input.token ?? '';
    const r = asReply('create', await this.scripts.run('create', k.s, k.out, input.userJson, input.stateJson, input.idleMs, tomb, ttl, token, ...input.initial));
    if (r[0] === 'exists' && r.length === 2) {
      // A tombstone's sid: take back the index entry admit just made for it. Only a tombstone's:
      // a live session with this sid (a racing create that won) owns its entry.
      if (admitted === 2 && r[1] === 'closed') await this.redis.zrem(this.keys.sessions, input.sid);
      return { status: 'exists' };
    }
    if (r[0] !== 'ok' || r.length !== 1) throw unexpected('create', r);
    return { status: 'ok' };
  }

  async receive(sid: string, input: ReceiveInput): Promise<ReceiveResult> {
    const k = this.keys.session(sid);
    const args: Arg[] = [k.s, k.out, k.channel, this.sharded, input.ack ?? '', input.window, input.bufferBytes];
    args.push(input.lease.token, input.lease.ms, input.maxDeliver);
    for (const m of input.msgs) args.push(m.seq, m.json);
    const r = asReply('receive', await this.scripts.run('receive', ...args));
    switch (r[0]) {
      case 'unknown':
      case 'closed':
        if (r.length === 1) return { status: r[0] };
        break;
      case 'invalid-ack':
        if (r.length === 2) return { status: 'invalid-ack', lastSeq: Number(r[1]) };
        break;
      case 'out-of-window':
        if (r.length === 2) return { status: 'out-of-window', clientAck: Number(r[1]) };
        break;
      case 'ok':
        // User and state come only with a run to deliver.
        if (r.length === 2) return { status: 'ok', clientAck: Number(r[1]), deliver: [] };
        if (r.length >= 4 && r.length % 2 === 0) return { status: 'ok', clientAck: Number(r[1]), deliver: pairs(r, 4), userJson: String(r[2]), stateJson: String(r[3]) };
        break;
    }
    throw unexpected('receive', r);
  }

  async commit(sid: string, input: CommitInput): Promise<CommitResult> {
    const k = this.keys.session(sid);
    const hasState = input.stateJson !== undefined;
    const sends = input.sends;
    const args: Arg[] = [k.s, k.out, input.token, input.seq, hasState ? '1' : '0', hasState ? input.stateJson! : ''];
    args.push(input.leaseMs, input.next ? '1' : '0', input.maxDeliver, k.channel, this.sharded);
    args.push(sends?.limits.maxUnackedMessages ?? 0, sends?.limits.maxUnackedBytes ?? 0);
    // A watch of the session listening here: when it is the session's current one, the script leaves
    // the publish out and wakeHere below wakes it (no message through Redis back to this instance).
    const claim = sends ? this.subs.claimHere(k.channel) : undefined;
    args.push(claim ?? '');
    if (sends) for (const m of sends.msgs) args.push(m);
    let reply: unknown;
    try {
      reply = await this.scripts.run('commit', ...args);
    } catch (err) {
      // The script may have run, without a publish, and its reply been lost: that watch must not
      // sleep through what it stored. A bare wake-up makes it read the log.
      if (claim !== undefined) this.subs.wake(k.channel, { type: 'message' });
      throw err;
    }
    const r = asReply('commit', reply);
    switch (r[0]) {
      case 'lost':
      case 'pull':
        if (r.length === 1) return { status: r[0] };
        break;
      case 'closing': {
        if (r.length !== 8) break;
        const result: CommitResult = { status: 'closing', clientAck: Number(r[1]), reason: String(r[2]), userJson: String(r[3]), stateJson: String(r[4]) };
        const sent = commitSent(r, 5);
        if (sent) result.sent = sent;
        return result;
      }
      case 'ok': {
        if (r.length < 5 || r.length % 2 === 0) break;
        const result: CommitResult = { status: 'ok', clientAck: Number(r[1]), deliver: pairs(r, 5) };
        const sent = commitSent(r, 2);
        if (sent) {
          result.sent = sent;
          if (sent.stored > 0) this.wakeHere(k.channel, sends!.msgs, sent.firstSeq, sent.stored, result.clientAck);
        }
        return result;
      }
    }
    throw unexpected('commit', r);
  }

  async renewLease(sid: string, token: string, ms: number): Promise<boolean> {
    const r = await this.scripts.run('renew', this.keys.record(sid), token, ms);
    if (r !== 0 && r !== 1) throw unexpected('renew', r);
    return r === 1;
  }

  async append(sid: string, msgs: string[], limits: AppendLimits, id?: string): Promise<AppendResult> {
    return (await this.appendAll([sid], msgs, limits, appendIdArg(id)))[0]!;
  }

  /** One pipeline (one round trip; on a Cluster, one per node, in parallel) for any number of sessions. */
  async appendMany(sids: string[], msg: string, limits: AppendLimits, id?: string): Promise<AppendResult[]> {
    if (sids.length === 0) return [];
    return this.appendAll(sids, [msg], limits, appendIdArg(id));
  }

  /**
   * The append script on each session; those in groups answer with their
   * groups first (nothing changed), so: read those groups' logs after their
   * cursors (one pipeline), then append again with the entries, which go
   * before the messages. A session whose groups moved meanwhile answers with
   * its groups again.
   */
  private async appendAll(sids: string[], msgs: string[], limits: AppendLimits, idArg: string): Promise<AppendResult[]> {
    // A group tail sent after this point shows every publish that resolved before the call (see groupTails).
    const since = this.tailsIssued;
    const keys = sids.map((sid) => this.keys.session(sid));
    const results: AppendResult[] = new Array(sids.length);
    const blocks = new Map<number, Arg[]>();
    const args = (i: number): Arg[] => {
      const k = keys[i]!;
      return [k.s, k.out, k.aids, k.channel, this.sharded, limits.maxUnackedMessages, limits.maxUnackedBytes, idArg, msgs.length, ...msgs, ...(blocks.get(i) ?? [])];
    };
    let todo = sids.map((_, i) => i);
    for (let attempt = 0; todo.length > 0; attempt++) {
      if (attempt === APPEND_ATTEMPTS) throw new Error('bidiweb/redis: append kept finding the session\'s groups changed under it');
      const replies =
        todo.length === 1 && sids.length === 1
          ? [await this.scripts.run('append', ...args(todo[0]!))]
          : await this.batch(todo.map((i) => ({ key: keys[i]!.s, add: (p: ChainableCommander) => this.scripts.queue(p, 'append', ...args(i)) })));
      const again: Array<[number, Array<[string, string]>]> = [];
      for (let j = 0; j < todo.length; j++) {
        const i = todo[j]!;
        const r = asReply('append', replies[j]);
        if (r[0] === 'groups' && r.length % 2 === 1) again.push([i, namePairs(r, 1)]);
        else if (r[0] === 'overrun' && r.length === 1) {
          await this.close(sids[i]!, { reason: GROUP_OVERRUN_REASON });
          results[i] = { status: 'closed' };
        } else {
          results[i] = appendResult(r);
          // Stored by this call (a repeat answers without the client ack): wake the watches here now.
          if (r.length === 4) this.wakeHere(keys[i]!.channel, msgs, Number(r[1]), msgs.length, Number(r[3]));
        }
      }
      if (again.length > 0) {
        const wanted = new Map<string, [string, string]>();
        for (const [, cursors] of again) for (const c of cursors) wanted.set(c.join('\n'), c);
        const tails = await this.groupTails([...wanted.values()], limits.maxUnackedMessages, since);
        const byCursor = new Map(tails.map((t) => [`${t.group}\n${t.cursor}`, t]));
        for (const [i, cursors] of again) blocks.set(i, pullBlock(cursors.map((c) => byCursor.get(c.join('\n'))!)));
      }
      todo = again.map(([i]) => i);
    }
    return results;
  }

  publish(group: string, msg: string, retention: GroupRetention, id?: string): Promise<PublishResult> {
    let idArg: string;
    try {
      idArg = appendIdArg(id);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.publishes.add(group, msg, retention, idArg);
  }

  /** One script call for consecutive publishes to one group (./publish-batches). */
  private async publishBatch(batch: QueuedPublish[]): Promise<PublishedRun> {
    const { group, retention, id } = batch[0]!;
    const g = this.keys.groupKeys(group);
    const r = asReply('publish', await this.scripts.run('publish', g.members, g.log, g.meta, g.channel, this.sharded, retention.maxEntries, retention.maxAgeMs, id, ...batch.map((p) => p.msg)));
    if (r.length !== 2 || typeof r[0] !== 'number' || typeof r[1] !== 'number') throw unexpected('publish', r);
    return { members: Number(r[0]), first: Number(r[1]) };
  }

  /**
   * The entries of each group's log after a member's cursor (read-only; one pipeline, on a Cluster
   * one per node). A read of the same group, cursor and bound already on its way serves the caller
   * too when it was sent after `since` (a `tailsIssued` value the caller took once the tail had to
   * show everything before it: see read, appendAll, close): its answer is then as good as a read
   * of its own. Entries never change, so the same answer is right for every member at that cursor;
   * members of one room woken together read it once instead of each.
   */
  private groupTails(cursors: Array<[string, string]>, max: number, since: number): Promise<GroupTail[]> {
    const out: Array<Promise<GroupTail>> = new Array(cursors.length);
    const fresh: number[] = [];
    const keys = cursors.map(([group, cursor]) => `${group}\n${cursor}\n${max}`);
    keys.forEach((key, i) => {
      const shared = this.tailsInFlight.get(key);
      if (shared && shared.issued > since) out[i] = shared.tail;
      else fresh.push(i);
    });
    if (fresh.length > 0) {
      const issued = ++this.tailsIssued;
      const replies = this.batch(
        fresh.map((i) => {
          const g = this.keys.groupKeys(cursors[i]![0]);
          return { key: g.log, add: (p: ChainableCommander) => this.scripts.queue(p, 'group-tail', g.log, g.meta, cursors[i]![1], max) };
        }),
      );
      fresh.forEach((i, j) => {
        const [group, cursor] = cursors[i]!;
        const tail = replies.then((r) => groupTail(r[j], group, cursor));
        const key = keys[i]!;
        const entry = { issued, tail };
        this.tailsInFlight.set(key, entry);
        const settled = (): void => {
          if (this.tailsInFlight.get(key) === entry) this.tailsInFlight.delete(key);
        };
        tail.then(settled, settled);
        out[i] = tail;
      });
    }
    return Promise.all(out);
  }

  /**
   * Messages this call stored (`msgs[0 .. n)` at seqs `first` ...), handed at once to this
   * instance's own listeners of the session, as the wake-up Redis is about to deliver would: a
   * watch here writes them without waiting for the published copy, in the same turn as the reply
   * that caused them. Redis still publishes (other instances need it); here whichever copy comes
   * second is dropped (`Subscriptions.wakeLocal`). Called after the script returned: the messages are stored.
   */
  private wakeHere(channel: string, msgs: string[], first: number, n: number, clientAck: number): void {
    if (this.subs.listenerCount(channel) === 0) return;
    const run = { msgs: msgs.slice(0, n).map((json, i) => ({ seq: first + i, json })), clientAck };
    // Never inside the operation itself (docs/STORE.md, subscribe): once it has returned.
    queueMicrotask(() => this.subs.wakeLocal(channel, run));
  }

  /**
   * The pull block a re-read of `sid` would need, from its cursors as last read here and the
   * entries its groups' wake-ups carried since: null when that cannot be told (no cursors known,
   * the hints do not reach back to a cursor or miss an entry's text, or a group was not heard
   * without a break since: read the cursors and the tails instead).
   */
  private guessPulls(sid: string): { cursors: Array<[string, string]>; tails: GroupTail[]; runs: ReadonlyMap<string, number> } | null {
    const known = this.knownCursors.get(sid);
    if (!known) return null;
    const { cursors, runs } = known;
    const tails: GroupTail[] = [];
    for (const [group, cursor] of cursors) {
      // Heard without a break since the cursor was read, no entry heard since means none to pull: a
      // publish wakes this instance before any read here could pull it. A break (a reconnect, a
      // moment nobody here listened to the group) may have lost wake-ups: read the tails instead.
      if (this.subs.heardRun(this.keys.groupKeys(group).channel) !== (runs.get(group) ?? 0)) return null;
      const tail = this.hintedTail(group, cursor, false);
      if (!tail) return null;
      tails.push(tail);
    }
    return { cursors, tails, runs };
  }

  /**
   * A group's tail after `cursor` as the group's wake-ups heard here tell it (GroupHints.after;
   * `strict` for a cursor just read, see there), at most `max` entries; null when they cannot tell.
   */
  private hintedTail(group: string, cursor: string, strict: boolean, max = Infinity): GroupTail | null {
    const colon = cursor.lastIndexOf(':');
    const channel = this.keys.groupKeys(group).channel;
    const known = this.groupHints.after(channel, cursor.slice(0, colon), Number(cursor.slice(colon + 1)), this.subs.heardRun(channel), strict);
    if (!known) return null;
    return { group, cursor, epoch: known.epoch, state: 'c', entries: known.entries.length > max ? known.entries.slice(0, max) : known.entries };
  }

  /**
   * Remembers the session's groups and cursors as just read, while it has listeners here, with
   * the groups' runs of hearing the read relied on (`runs`, taken before it: see guessPulls; a
   * group not in it never matches, so its next read reads the tails).
   */
  private noteCursors(sid: string, cursors: Array<[string, string]>, runs: ReadonlyMap<string, number>): void {
    if (this.subs.listenerCount(this.keys.session(sid).channel) > 0) this.knownCursors.set(sid, { cursors, runs });
  }

  /**
   * Listens to the channels of the session's groups on behalf of its listeners here; resolves
   * once they are active, with a `tailsIssued` count taken when they all were: a group tail sent
   * after it misses no entry the session's listeners will not hear of (see groupTails). Taken as
   * each subscription resolves, not once this returns: the members of a room woken together then
   * all have theirs before the first of them sends its tail, which the others can share.
   */
  private async watchGroups(sid: string, groups: string[]): Promise<number> {
    const channel = this.keys.session(sid).channel;
    if (this.subs.listenerCount(channel) === 0) return this.tailsIssued;
    let subs = this.groupSubs.get(sid);
    if (!subs) this.groupSubs.set(sid, (subs = new Map()));
    let since = 0;
    const waits: Array<Promise<unknown>> = [];
    for (const group of groups) {
      let sub = subs.get(group);
      if (!sub) {
        sub = this.subs.add(this.keys.groupKeys(group).channel, () => this.subs.wake(channel, { type: 'message' }));
        subs.set(group, sub);
        // A subscription that failed is tried again by the next read, not remembered.
        const failed = sub;
        const current = subs;
        sub.catch(() => {
          if (current.get(group) === failed) current.delete(group);
        });
      }
      waits.push(sub.then(() => (since = Math.max(since, this.tailsIssued))));
    }
    await Promise.all(waits);
    return since;
  }

  /**
   * The read script; for a session in groups it also answers their cursors:
   * then (once this store listens to those groups' channels for the session's
   * listeners, so no publish after this point goes unnoticed) read the
   * groups' logs after the cursors and, if they hold anything, read again
   * with those entries, which the script appends under a compare-and-set on
   * each cursor.
   */
  async read(sid: string, input: ReadInput): Promise<ReadResult> {
    const k = this.keys.session(sid);
    const limits = input.limits ?? DEFAULT_LIMITS;
    const claimAt = 7;
    const args: Arg[] = [
      k.s,
      k.out,
      k.aids,
      k.channel,
      this.sharded,
      input.ack,
      input.watchToken,
      input.claim ? '1' : '0', // args[claimAt]
      input.maxMessages,
      input.after ?? '',
      limits.maxUnackedMessages,
      limits.maxUnackedBytes,
      input.maxBytes ?? 0,
    ];
    // A watch's re-read (no claim, no trim to do) of a session in groups: start with the pull block
    // the group hints make, which saves the cursors' call and the groups' tails when it was right.
    const guess = input.after !== undefined && !input.claim ? this.guessPulls(sid) : null;
    let r = readReply(await this.scripts.run('read', ...args, ...(guess ? pullBlock(guess.tails) : [])));
    if (guess && r[0] === 'ok' && Number(r[6]) === 0) this.noteCursors(sid, advanced(guess.cursors, guess.tails), guess.runs);
    if (r[0] === 'ok' && Number(r[6]) > 0) {
      const cursors = namePairs(r, 7, Number(r[6]));
      const since = await this.watchGroups(sid, cursors.map(([group]) => group));
      // The runs of hearing the tails below are good for: from here, the session's listeners hear its groups.
      const runs = new Map(cursors.map(([group]) => [group, this.subs.heardRun(this.keys.groupKeys(group).channel)]));
      // A group whose wake-ups this instance has heard without a break since before the cursor
      // needs no tail read: what came after it was heard, and what comes later wakes the session's
      // listeners, which now listen to the group (a session with none here reads the tails).
      const max = limits.maxUnackedMessages;
      const hinted = this.subs.listenerCount(k.channel) > 0 ? cursors.map(([group, cursor]) => this.hintedTail(group, cursor, true, max)) : [];
      const unknown = cursors.filter((_, i) => !hinted[i]);
      const read = unknown.length > 0 ? await this.groupTails(unknown, max, since) : [];
      let next = 0;
      const tails = cursors.map((_, i) => hinted[i] ?? read[next++]!).filter((t) => t.state === 'o' || t.entries.length > 0);
      if (tails.length > 0) {
        args[claimAt] = '0'; // claimed (or not) by the first call
        r = readReply(await this.scripts.run('read', ...args, ...pullBlock(tails)));
        // Closed for an overrun: let the sweep run onClose now rather than when the session's idle time is up.
        if (r[0] === 'ok' && Number(r[5]) > 0) await this.redis.zadd(this.keys.sessions, 'XX', Number(r[5]), sid);
        if (r[0] === 'ok') this.noteCursors(sid, Number(r[6]) > 0 ? namePairs(r, 7, Number(r[6])) : advanced(cursors, tails), runs);
      } else this.noteCursors(sid, cursors, runs);
    }
    if (r[0] === 'unknown') return { status: 'unknown' };
    if (r[0] === 'invalid-ack') return { status: 'invalid-ack', lastSeq: Number(r[1]) };
    // This instance's watch is now the session's current one (while it listens here: see commit).
    if (input.claim && r[2] !== 1) this.subs.noteClaim(k.channel, input.watchToken);
    const at = 7 + 2 * Number(r[6]);
    const first = Number(r[at]);
    const msgs: StoredMessage[] = [];
    for (let i = at + 1; i < r.length; i++) msgs.push({ seq: first + i - at - 1, json: String(r[i]) });
    const result: ReadResult = { status: 'ok', msgs, clientAck: Number(r[1]), superseded: r[2] === 1 };
    if (Number(r[3]) > 0) result.close = { seq: Number(r[3]), reason: String(r[4]) };
    return result;
  }

  /** The close script; an open session in groups first answers its cursors, and its pending group entries are pulled before the marker. */
  async close(sid: string, input: CloseInput): Promise<CloseResult> {
    const k = this.keys.session(sid);
    const args: Arg[] = [k.s, k.out, k.channel, this.sharded, input.reason, input.lease?.token ?? '', input.lease?.ms ?? 0];
    // A group tail sent after this point shows every publish that resolved before the call (see groupTails).
    const since = this.tailsIssued;
    let r = closeReply(await this.scripts.run('close', ...args));
    for (let attempt = 0; r[0] === 'groups'; attempt++) {
      if (attempt === APPEND_ATTEMPTS) throw new Error('bidiweb/redis: close kept finding the session\'s groups changed under it');
      // Every pending entry, whatever the unacked bounds: the group logs' retention bounds them.
      const tails = await this.groupTails(namePairs(r, 1), CLOSE_PULL_MAX, since);
      r = closeReply(await this.scripts.run('close', ...args, ...pullBlock(tails)));
    }
    if (r[0] === 'unknown') return { status: 'unknown' };
    const transitioned = r[1] === 1;
    const leased = r[2] === 1;
    const checkAt = Number(r[6]);
    // Tell the sweep when to look again: at once if nobody holds the lease, else when it runs out
    // (the holder may die before finishClose). XX: never re-enter a session the index dropped.
    if (checkAt > 0 && (transitioned || leased)) await this.redis.zadd(this.keys.sessions, 'XX', checkAt, sid);
    return { status: 'ok', transitioned, leased, reason: String(r[3]), userJson: String(r[4]), stateJson: String(r[5]) };
  }

  async finishClose(sid: string, token: string): Promise<void> {
    const k = this.keys.session(sid);
    const r = asReply('finish-close', await this.scripts.run('finish-close', k.s, k.out, k.aids, token));
    if (r.length === 0) return; // not this token's to finish
    if (r[0] !== 'ok' || r.length < 2) throw unexpected('finish-close', r);
    const expiresAt = Number(r[1]);
    const items: BatchItem[] = [
      {
        key: this.keys.sessions,
        add: (p) => {
          p.zrem(this.keys.sessions, sid);
          // Counted among the tombstones (bounded at each create) until its keys expire.
          if (expiresAt > 0) p.zadd(this.keys.tombs, expiresAt, sid);
        },
      },
    ];
    for (const group of r.slice(2)) {
      const g = this.keys.groupKeys(String(group));
      items.push({ key: g.members, add: (p) => this.scripts.queue(p, 'group-leave', g.members, g.log, g.meta, sid) });
    }
    await this.batch(items);
  }

  async sweep(input: SweepInput): Promise<SweepResult> {
    const closing: SweptSession[] = [];
    for (let round = 0; round < SWEEP_ROUNDS; round++) {
      const want = input.limit - closing.length;
      if (round > 0 && want <= 0) break;
      const r = asReply('sweep', await this.scripts.run('sweep', this.keys.sessions, this.keys.sweep, input.lease.token, input.lease.ms, want));
      if (r[0] === 'busy' && r.length === 1) return round === 0 ? { status: 'busy' } : { status: 'ok', closing };
      if (r[0] !== 'ok') throw unexpected('sweep', r);
      const sids = r.slice(1).map(String);
      if (sids.length === 0) break;
      const checks = await this.batch(
        sids.map((sid) => {
          const k = this.keys.session(sid);
          return { key: k.s, add: (p) => this.scripts.queue(p, 'expire-check', k.s, k.out, k.channel, this.sharded, input.lease.token, input.lease.ms) };
        }),
      );
      // Re-score each candidate: drop the dead, push back the ones not due yet.
      const index = this.redis.pipeline();
      checks.forEach((c, i) => {
        const reply = asReply('expire-check', c);
        const sid = sids[i]!;
        switch (`${reply[0]}/${reply.length}`) {
          case 'gone/1':
          case 'closed/1':
            index.zrem(this.keys.sessions, sid);
            break;
          case 'wait/2':
            index.zadd(this.keys.sessions, 'XX', Number(reply[1]), sid);
            break;
          case 'closing/5':
            closing.push({ sid, reason: String(reply[1]), userJson: String(reply[2]), stateJson: String(reply[3]) });
            index.zadd(this.keys.sessions, 'XX', Number(reply[4]), sid);
            break;
          default:
            throw unexpected('expire-check', reply);
        }
      });
      await execPipeline(index);
      if (sids.length < want) break;
    }
    return { status: 'ok', closing };
  }

  /** Resolves once Redis confirmed the (S)SUBSCRIBE, or at once when this store already listens to the session. */
  async subscribe(sid: string, listener: (event: StoreEvent) => void): Promise<Unsubscribe> {
    let unsubscribe: Unsubscribe;
    try {
      unsubscribe = await this.subs.add(this.keys.session(sid).channel, listener);
    } catch (err) {
      this.unwatchGroups(sid);
      throw err;
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      unsubscribe();
      this.unwatchGroups(sid);
    };
  }

  /** Once the session's last listener here left, its group subscriptions go with it. */
  private unwatchGroups(sid: string): void {
    if (this.subs.listenerCount(this.keys.session(sid).channel) > 0) return;
    this.knownCursors.delete(sid);
    const subs = this.groupSubs.get(sid);
    if (!subs) return;
    this.groupSubs.delete(sid);
    for (const [group, sub] of subs) {
      sub.then(
        (u) => {
          u();
          // No session here listens to the group any more: what its wake-ups carried goes too.
          const channel = this.keys.groupKeys(group).channel;
          if (this.subs.listenerCount(channel) === 0) this.groupHints.drop(channel);
        },
        () => {},
      );
    }
  }

  async inspect(sids: string[]): Promise<Array<SessionInfo | null>> {
    const replies = await this.batch(
      sids.map((sid) => {
        const s = this.keys.record(sid);
        return { key: s, add: (p) => p.hmget(s, 'status', 'user', 'state', 'cack', 'last') };
      }),
    );
    return replies.map((reply) => {
      const [status, user, state, cack, last] = reply as Array<string | null>;
      if (!status) return null;
      // A tombstone keeps no user or state.
      if (status === 'closed') return { status, userJson: 'null', stateJson: 'null', clientAck: Number(cack ?? 0), lastSeq: Number(last ?? 0) };
      return { status: status as SessionInfo['status'], userJson: user ?? 'null', stateJson: state ?? '{}', clientAck: Number(cack ?? 0), lastSeq: Number(last ?? 0) };
    });
  }

  /** ZCARD of the sessions index: open and closing sessions (and, until a sweep drops them, ones whose keys expired unswept). */
  async count(): Promise<number> {
    return this.redis.zcard(this.keys.sessions);
  }

  /**
   * ZSCAN of the sessions index: every sid in it for the whole listing comes at least once, and
   * the cursor is Redis' own (a number, no sid). `limit` is ZSCAN's COUNT hint: a small index
   * (stored as a listpack, up to `zset-max-listpack-entries`, 128 by default) comes whole in one
   * page; a larger one about `limit` per page.
   */
  async list(input: ListInput): Promise<ListResult> {
    const cursor = input.cursor ?? '0';
    if (!/^\d{1,20}$/.test(cursor)) throw new BidiError('BAD_REQUEST', 'malformed session list cursor');
    const [next, flat] = await this.redis.zscan(this.keys.sessions, cursor, 'COUNT', Math.max(1, Math.floor(input.limit)));
    // Members and scores alternate; a rehash may repeat a member within a reply.
    const sids = new Set<string>();
    for (let i = 0; i < flat.length; i += 2) sids.add(flat[i]!);
    return { sids: [...sids], cursor: next === '0' ? null : next };
  }

  /**
   * The group's side first (the set, and where its log stands: the member's
   * cursor), then the session's own record of it (a script that refuses a
   * session that is not open); a refusal takes the set entry back unless the
   * session was already a member. This order leaves no entry behind when the
   * session finishes closing at the same moment.
   */
  async join(sid: string, group: string): Promise<boolean> {
    const g = this.keys.groupKeys(group);
    const k = this.keys.session(sid);
    const at = asReply('group-join', await this.scripts.run('group-join', g.members, g.meta, sid));
    if (at.length !== 2 || typeof at[0] !== 'string' || typeof at[1] !== 'number') throw unexpected('group-join', at);
    const joined = await this.scripts.run('join', k.s, group, `${at[0]}:${at[1]}`, k.channel, this.sharded);
    if (joined !== 1 && joined !== 0 && joined !== -1) throw unexpected('join', joined);
    if (joined === 0) await this.scripts.run('group-leave', g.members, g.log, g.meta, sid);
    return joined === 1;
  }

  async leave(sid: string, group: string): Promise<void> {
    const g = this.keys.groupKeys(group);
    const s = this.keys.record(sid);
    await this.batch([
      { key: s, add: (p) => this.scripts.queue(p, 'leave', s, group) },
      { key: g.members, add: (p) => this.scripts.queue(p, 'group-leave', g.members, g.log, g.meta, sid) },
    ]);
  }

  async members(group: string): Promise<string[]> {
    return this.redis.smembers(this.keys.group(group));
  }

  /**
   * Open rate limits counted in Redis (one key per client key, `<prefix>open:<key>`, expiring with
   * its window), so every instance shares them. On a Cluster each key lives on its own slot.
   */
  openLimiter(limit: OpenLimit): OpenLimiter {
    return openLimiterFrom(new RateLimiterRedis({ storeClient: this.redis, keyPrefix: this.prefix + 'open', points: limit.opens, duration: limit.perSeconds }));
  }

  /** Drops every listener and closes the subscriber connection if the store made it. The command connection is yours to close. */
  async dispose(): Promise<void> {
    this.groupSubs.clear();
    this.knownCursors.clear();
    this.groupHints.clear();
    await this.subs.close();
  }

  // --- internals -------------------------------------------------------------------

  /**
   * Runs commands as pipelines: one on a standalone Redis; on a Cluster one
   * per node (ioredis refuses a pipeline that spans nodes), all in parallel.
   * Replies come back in the order of `items`.
   */
  private async batch(items: BatchItem[]): Promise<unknown[]> {
    if (items.length === 0) return [];
    const groups = new Map<string, number[]>();
    items.forEach((item, i) => {
      const node = this.cluster ? this.nodeOf(item.key) : '';
      let list = groups.get(node);
      if (!list) groups.set(node, (list = []));
      list.push(i);
    });
    const replies: unknown[] = new Array(items.length);
    await Promise.all(
      [...groups.values()].map(async (indexes) => {
        const p = this.redis.pipeline();
        for (const i of indexes) items[i]!.add(p);
        const out = await execPipeline(p);
        indexes.forEach((i, j) => (replies[i] = out[j]));
      }),
    );
    return replies;
  }

  private nodeOf(key: string): string {
    const slot = keySlot(key);
    return (this.redis as Cluster).slots[slot]?.[0] ?? `slot:${slot}`;
  }
}

/** Far above the idle timeout: a sweep, not the TTL, is what ends idle sessions. */
function defaultSafetyTtl(idleMs: number): number {
  return Math.max(idleMs * 10, 3_600_000);
}

/** ioredis >= 5.9 routes SSUBSCRIBE to the shard that owns the channel (one subscriber per master); older versions cannot. */
function supportsShardedSubscribers(cluster: Redis | Cluster): boolean {
  return typeof (cluster as unknown as { createShardedSubscriberGroup?: unknown }).createShardedSubscriberGroup === 'function';
}

function isCluster(redis: Redis | Cluster): redis is Cluster {
  return (redis as Cluster).isCluster === true;
}

/** Runs a pipeline; the first command error rejects. */
async function execPipeline(p: ChainableCommander): Promise<unknown[]> {
  const results = (await p.exec()) ?? [];
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}

/** seq, json pairs from index `from` of a reply. */
function pairs(r: Reply, from: number): StoredMessage[] {
  const out: StoredMessage[] = [];
  for (let i = from; i + 1 < r.length; i += 2) out.push({ seq: Number(r[i]), json: String(r[i + 1]) });
  return out;
}

/** `count` (default: to the end) name, value pairs from index `from` of a reply. */
/** The cursors after a pull of `tails`: each group's moves to its last entry pulled (a guess: see guessPulls). */
function advanced(cursors: Array<[string, string]>, tails: GroupTail[]): Array<[string, string]> {
  const moved = new Map<string, string>();
  for (const t of tails) if (t.state !== 'o' && t.entries.length > 0) moved.set(t.group, `${t.epoch}:${t.entries[t.entries.length - 1]!.gseq}`);
  return cursors.map(([group, cursor]) => [group, moved.get(group) ?? cursor]);
}

/** A group-tail-2 reply, its shape checked. */
function groupTail(reply: unknown, group: string, cursor: string): GroupTail {
  const r = asReply('group-tail', reply);
  if (r.length < 3 || r.length % 2 === 0 || (r[2] !== 'c' && r[2] !== 'p' && r[2] !== 'o')) throw unexpected('group-tail', r);
  const from = Number(r[1]);
  const entries: GroupTail['entries'] = [];
  for (let j = 3; j + 1 < r.length; j += 2) entries.push({ gseq: from + 1 + (j - 3) / 2, t: Number(r[j]), json: String(r[j + 1]) });
  return { group, cursor, epoch: String(r[0]), state: String(r[2]), entries };
}

function namePairs(r: Reply, from: number, count = (r.length - from) / 2): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i < count; i++) out.push([String(r[from + 2 * i]), String(r[from + 2 * i + 1])]);
  return out;
}

/**
 * The pull block the session scripts take (applyPulls in
 * commands/includes/session.lua): the groups with the cursors their tails
 * were read at, then every entry, interleaved across groups by publish time
 * (each group's own entries stay in their order, whatever the clocks do).
 */
function pullBlock(tails: GroupTail[]): Arg[] {
  const out: Arg[] = [tails.length];
  const all: Array<{ gi: number; gseq: number; t: number; json: string }> = [];
  tails.forEach((tail, gi) => {
    out.push(tail.group, tail.cursor, tail.epoch, tail.state);
    let t = -Infinity;
    for (const e of tail.entries) {
      t = Math.max(t, e.t);
      all.push({ gi: gi + 1, gseq: e.gseq, t, json: e.json });
    }
  });
  all.sort((a, b) => a.t - b.t); // stable
  // Runs of consecutive entries of one group: (group index, first gseq, n, json × n). Three
  // arguments per entry cost ioredis and Redis about twice what one does (docs/BENCHMARKS.md).
  const runsAt = out.push(0) - 1;
  let countAt = -1;
  let prev: (typeof all)[number] | undefined;
  for (const e of all) {
    if (prev !== undefined && prev.gi === e.gi && prev.gseq + 1 === e.gseq) out[countAt] = (out[countAt] as number) + 1;
    else {
      countAt = out.push(e.gi, e.gseq, 1) - 1;
      out[runsAt] = (out[runsAt] as number) + 1;
    }
    out.push(e.json);
    prev = e;
  }
  return out;
}

const APPEND_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/** The script keeps ids in a '|'- and ':'-separated field: refuse anything else rather than corrupt it. */
function appendIdArg(id: string | undefined): string {
  if (id === undefined) return '';
  if (!APPEND_ID_PATTERN.test(id)) throw new TypeError(`bidiweb/redis: append id must match ${APPEND_ID_PATTERN} (got ${JSON.stringify(id)})`);
  return id;
}

/** The `stored, first, refused` triple of a commit reply from index `at`; undefined when the commit carried no messages. */
function commitSent(r: Reply, at: number): CommitSent | undefined {
  const stored = Number(r[at]);
  if (stored < 0) return undefined;
  const sent: CommitSent = { stored, firstSeq: Number(r[at + 1]) };
  const refused = r[at + 2];
  if (refused === 'full' || refused === 'closed') sent.refused = refused;
  else if (refused !== '') throw unexpected('commit', r);
  return sent;
}

function appendResult(r: Reply): AppendResult {
  switch (r[0]) {
    case 'ok':
      if (r.length === 3 || r.length === 4) return { status: 'ok', firstSeq: Number(r[1]), lastSeq: Number(r[2]) };
      break;
    case 'unknown':
    case 'closed':
    case 'full':
      if (r.length === 1) return { status: r[0] };
      break;
  }
  throw unexpected('append', r);
}

/** The read script's reply, its shape checked (see read-3.lua). */
function readReply(value: unknown): Reply {
  const r = asReply('read', value);
  switch (r[0]) {
    case 'unknown':
      if (r.length === 1) return r;
      break;
    case 'invalid-ack':
      if (r.length === 2) return r;
      break;
    case 'ok': {
      const groups = r[6];
      if (typeof groups === 'number' && r.length >= 8 + 2 * groups) return r;
      break;
    }
  }
  throw unexpected('read', r);
}

/** The close script's reply, its shape checked (see close-2.lua). */
function closeReply(value: unknown): Reply {
  const r = asReply('close', value);
  if ((r[0] === 'unknown' && r.length === 1) || (r[0] === 'groups' && r.length % 2 === 1) || (r[0] === 'ok' && r.length === 7)) return r;
  throw unexpected('close', r);
}

function asReply(script: ScriptName, value: unknown): Reply {
  if (!Array.isArray(value)) throw unexpected(script, value);
  return value as Reply;
}

/**
 * A reply no version of the script sends: this file and the scripts disagree
 * (a bug). Thrown as a plain Error, so core answers 500 `internal error` and
 * reports the message, which may quote session data, only to the app.
 */
function unexpected(script: ScriptName, reply: unknown): Error {
  const text = JSON.stringify(reply) ?? String(reply);
  return new Error(`bidiweb/redis: unexpected reply from the ${script} script: ${text.length > 200 ? `${text.slice(0, 200)}…` : text}`);
}
