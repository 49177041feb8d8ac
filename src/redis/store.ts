/**
 * RedisStore: the store contract (src/core/store.ts) over Redis, for any
 * number of instances or serverless functions. Each contract operation is one
 * Lua script on the session's own Cluster slot (see ./commands); this file
 * only builds keys and arguments, decodes the flat replies, and keeps the
 * wake-up subscriptions. It holds no session state: any instance can serve
 * any request.
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
import type { ScriptedRedis, ScriptName } from './scripts';
import { defineScripts } from './scripts';
import type { ReplicaAcks } from './replica-acks';
import { withReplicaAcks } from './replica-acks';
import { followSlots } from './follow-slots';

export interface RedisStoreOptions {
  /**
   * The ioredis connection for commands: a `Redis` or a `Cluster`. The store
   * defines its scripts on it (commands named `bidi*`) and never closes it:
   * it is yours.
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

type Reply = Array<string | number>;
type Arg = string | number;
type ScriptedPipeline = ChainableCommander & Record<ScriptName, (...args: Arg[]) => ScriptedPipeline>;
type Listener = (event: StoreEvent) => void;

interface BatchItem {
  /** A key of the command, to find its Cluster node. */
  key: string;
  add(pipeline: ScriptedPipeline): void;
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
/** Longest subscribe() waits for Redis to confirm the subscription. */
const SUBSCRIBE_TIMEOUT_MS = 2_000;

export class RedisStore implements Store {
  private readonly redis: ScriptedRedis;
  private readonly keys: RedisKeys;
  private readonly cluster: boolean;
  /** '1': scripts SPUBLISH and the subscriber SSUBSCRIBEs; '0': classic pub/sub. */
  private readonly sharded: '0' | '1';
  private readonly tombstoneMs?: number;
  private readonly safetyTtl: (idleMs: number) => number;
  private readonly subs: Subscriptions;
  /**
   * Sessions this store has listeners for, and the group channels it listens
   * to on their behalf (learnt from reads): a publish wakes them with one
   * message on the group's channel, whatever the group's size.
   */
  private readonly watched = new Map<string, { listeners: Set<Listener>; groups: Map<string, Promise<Unsubscribe>> }>();
  private readonly prefix: string;

  constructor(options: RedisStoreOptions) {
    if (!options || !options.redis) throw new TypeError('bidiweb/redis: new RedisStore({ redis }) needs an ioredis connection');
    this.redis = withReplicaAcks(defineScripts(options.redis), options.replicaAcks);
    this.prefix = options.prefix ?? 'bidi:';
    this.keys = new RedisKeys(this.prefix);
    this.cluster = isCluster(options.redis);
    this.tombstoneMs = options.tombstoneMs;
    const safety = options.safetyTtlMs;
    this.safetyTtl = typeof safety === 'function' ? safety : typeof safety === 'number' ? () => safety : defaultSafetyTtl;
    const given = options.subscriber;
    if (given && given === options.redis) {
      throw new TypeError('bidiweb/redis: `subscriber` must be a connection of its own (a subscribed connection cannot run other commands)');
    }
    // Sharded pub/sub needs a Cluster subscriber with `shardedSubscribers` (ioredis >= 5.9); anything else gets classic pub/sub.
    const sharded = this.cluster && (given ? isCluster(given) && given.options.shardedSubscribers === true : supportsShardedSubscribers(options.redis));
    this.sharded = sharded ? '1' : '0';
    this.subs = new Subscriptions(sharded, Math.max(0, options.subscriptionLingerMs ?? DEFAULT_SUBSCRIPTION_LINGER_MS), given, () =>
      isCluster(options.redis) ? followSlots(options.redis, options.redis.duplicate([], sharded ? { shardedSubscribers: true } : {})) : options.redis.duplicate(),
    );
  }

  async create(input: CreateInput): Promise<CreateResult> {
    const k = this.keys.session(input.sid);
    const a = (await this.redis.bidiAdmit(this.keys.sessions, this.keys.tombs, input.sid, input.maxSessions, input.idleMs)) as Reply;
    const admitted = Number(a[0]);
    // Tombstones past the count bound, oldest first: their keys go now.
    if (a.length > 1) {
      await this.batch(
        a.slice(1).map((evicted) => {
          const e = this.keys.session(String(evicted));
          return { key: e.s, add: (p) => p.del(e.s, e.in, e.out, e.aids) };
        }),
      );
    }
    if (admitted === 0) {
      return (await this.redis.exists(k.s)) ? { status: 'exists' } : { status: 'too-many-sessions' };
    }
    const tomb = this.tombstoneMs ?? input.idleMs;
    const ttl = Math.max(this.safetyTtl(input.idleMs), input.idleMs + 1);
    const token = input.token ?? '';
    const r = (await this.redis.bidiCreate(k.s, k.out, input.userJson, input.stateJson, input.idleMs, tomb, ttl, token, ...input.initial)) as Reply;
    if (r[0] === 'exists') {
      // A tombstone's sid: take back the index entry admit just made for it. Only a tombstone's:
      // a live session with this sid (a racing create that won) owns its entry.
      if (admitted === 2 && r[1] === 'closed') await this.redis.zrem(this.keys.sessions, input.sid);
      return { status: 'exists' };
    }
    return { status: 'ok' };
  }

  async receive(sid: string, input: ReceiveInput): Promise<ReceiveResult> {
    const k = this.keys.session(sid);
    const args: Arg[] = [k.s, k.in, k.out, k.channel, this.sharded, input.ack ?? '', input.window, input.bufferBytes];
    args.push(input.lease.token, input.lease.ms, input.maxDeliver);
    for (const m of input.msgs) args.push(m.seq, m.json);
    const r = (await this.redis.bidiReceive(...args)) as Reply;
    switch (r[0]) {
      case 'unknown':
      case 'closed':
        return { status: r[0] };
      case 'invalid-ack':
        return { status: 'invalid-ack', lastSeq: Number(r[1]) };
      case 'out-of-window':
        return { status: 'out-of-window', clientAck: Number(r[1]) };
      default:
        // User and state come only with a run to deliver.
        if (r.length <= 2) return { status: 'ok', clientAck: Number(r[1]), deliver: [] };
        return { status: 'ok', clientAck: Number(r[1]), deliver: pairs(r, 4), userJson: String(r[2]), stateJson: String(r[3]) };
    }
  }

  async commit(sid: string, input: CommitInput): Promise<CommitResult> {
    const k = this.keys.session(sid);
    const hasState = input.stateJson !== undefined;
    const sends = input.sends;
    const args: Arg[] = [k.s, k.in, k.out, input.token, input.seq, hasState ? '1' : '0', hasState ? input.stateJson! : ''];
    args.push(input.leaseMs, input.next ? '1' : '0', input.maxDeliver, k.channel, this.sharded);
    args.push(sends?.limits.maxUnackedMessages ?? 0, sends?.limits.maxUnackedBytes ?? 0);
    if (sends) for (const m of sends.msgs) args.push(m);
    const r = (await this.redis.bidiCommit(...args)) as Reply;
    switch (r[0]) {
      case 'lost':
      case 'pull':
        return { status: r[0] };
      case 'closing': {
        const result: CommitResult = { status: 'closing', clientAck: Number(r[1]), reason: String(r[2]), userJson: String(r[3]), stateJson: String(r[4]) };
        const sent = commitSent(r, 5);
        if (sent) result.sent = sent;
        return result;
      }
      case 'ok': {
        const result: CommitResult = { status: 'ok', clientAck: Number(r[1]), deliver: pairs(r, 5) };
        const sent = commitSent(r, 2);
        if (sent) result.sent = sent;
        return result;
      }
      default:
        throw new Error(`bidiweb/redis: unexpected commit reply ${JSON.stringify(r[0])}`);
    }
  }

  async renewLease(sid: string, token: string, ms: number): Promise<boolean> {
    return (await this.redis.bidiRenew(this.keys.record(sid), token, ms)) === 1;
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
          ? [await this.redis.bidiAppend(...args(todo[0]!))]
          : await this.batch(todo.map((i) => ({ key: keys[i]!.s, add: (p: ScriptedPipeline) => p.bidiAppend(...args(i)) })));
      const again: Array<[number, Array<[string, string]>]> = [];
      for (let j = 0; j < todo.length; j++) {
        const i = todo[j]!;
        const r = replies[j] as Reply;
        if (r[0] === 'groups') again.push([i, namePairs(r, 1)]);
        else if (r[0] === 'overrun') {
          await this.close(sids[i]!, { reason: GROUP_OVERRUN_REASON });
          results[i] = { status: 'closed' };
        } else results[i] = appendResult(r);
      }
      if (again.length > 0) {
        const wanted = new Map<string, [string, string]>();
        for (const [, cursors] of again) for (const c of cursors) wanted.set(c.join('\n'), c);
        const tails = await this.groupTails([...wanted.values()], limits.maxUnackedMessages);
        const byCursor = new Map(tails.map((t) => [`${t.group}\n${t.cursor}`, t]));
        for (const [i, cursors] of again) blocks.set(i, pullBlock(cursors.map((c) => byCursor.get(c.join('\n'))!)));
      }
      todo = again.map(([i]) => i);
    }
    return results;
  }

  async publish(group: string, msg: string, retention: GroupRetention, id?: string): Promise<PublishResult> {
    const g = this.keys.groupKeys(group);
    const r = (await this.redis.bidiPublish(g.members, g.log, g.meta, g.channel, this.sharded, retention.maxEntries, retention.maxAgeMs, appendIdArg(id), msg)) as Reply;
    return { status: 'ok', members: Number(r[0]), gseq: Number(r[1]) };
  }

  /** The entries of each group's log after a member's cursor (read-only; one pipeline, on a Cluster one per node). */
  private async groupTails(cursors: Array<[string, string]>, max: number): Promise<GroupTail[]> {
    const replies = await this.batch(
      cursors.map(([group, cursor]) => {
        const g = this.keys.groupKeys(group);
        return { key: g.log, add: (p: ScriptedPipeline) => p.bidiGroupTail(g.log, g.meta, cursor, max) };
      }),
    );
    return replies.map((reply, i) => {
      const r = reply as Reply;
      const from = Number(r[1]);
      const entries: GroupTail['entries'] = [];
      for (let j = 3; j + 1 < r.length; j += 2) entries.push({ gseq: from + 1 + (j - 3) / 2, t: Number(r[j]), json: String(r[j + 1]) });
      return { group: cursors[i]![0], cursor: cursors[i]![1], epoch: String(r[0]), state: String(r[2]), entries };
    });
  }

  /** Listens to the channels of the session's groups on behalf of its listeners here; resolves once they are active. */
  private async watchGroups(sid: string, groups: string[]): Promise<void> {
    const w = this.watched.get(sid);
    if (!w) return;
    const waits: Array<Promise<Unsubscribe>> = [];
    for (const group of groups) {
      let sub = w.groups.get(group);
      if (!sub) {
        sub = this.subs.add(this.keys.groupKeys(group).channel, () => {
          for (const listener of [...w.listeners]) listener({ type: 'message' });
        });
        w.groups.set(group, sub);
        // A subscription that failed is tried again by the next read, not remembered.
        const failed = sub;
        sub.catch(() => {
          if (w.groups.get(group) === failed) w.groups.delete(group);
        });
      }
      waits.push(sub);
    }
    await Promise.all(waits);
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
    const args: Arg[] = [
      k.s,
      k.in,
      k.out,
      k.aids,
      k.channel,
      this.sharded,
      input.ack,
      input.watchToken,
      input.claim ? '1' : '0',
      input.maxMessages,
      input.after ?? '',
      limits.maxUnackedMessages,
      limits.maxUnackedBytes,
      input.maxBytes ?? 0,
    ];
    let r = (await this.redis.bidiRead(...args)) as Reply;
    if (r[0] === 'ok' && Number(r[6]) > 0) {
      const cursors = namePairs(r, 7, Number(r[6]));
      await this.watchGroups(sid, cursors.map(([group]) => group));
      const tails = (await this.groupTails(cursors, limits.maxUnackedMessages)).filter((t) => t.state === 'o' || t.entries.length > 0);
      if (tails.length > 0) {
        args[8] = '0'; // claimed (or not) by the first call
        r = (await this.redis.bidiRead(...args, ...pullBlock(tails))) as Reply;
        // Closed for an overrun: let the sweep run onClose now rather than when the session's idle time is up.
        if (r[0] === 'ok' && Number(r[5]) > 0) await this.redis.zadd(this.keys.sessions, 'XX', Number(r[5]), sid);
      }
    }
    if (r[0] === 'unknown') return { status: 'unknown' };
    if (r[0] === 'invalid-ack') return { status: 'invalid-ack', lastSeq: Number(r[1]) };
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
    const args: Arg[] = [k.s, k.in, k.out, k.channel, this.sharded, input.reason, input.lease?.token ?? '', input.lease?.ms ?? 0];
    let r = (await this.redis.bidiClose(...args)) as Reply;
    for (let attempt = 0; r[0] === 'groups'; attempt++) {
      if (attempt === APPEND_ATTEMPTS) throw new Error('bidiweb/redis: close kept finding the session\'s groups changed under it');
      // Every pending entry, whatever the unacked bounds: the group logs' retention bounds them.
      const tails = await this.groupTails(namePairs(r, 1), CLOSE_PULL_MAX);
      r = (await this.redis.bidiClose(...args, ...pullBlock(tails))) as Reply;
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
    const r = (await this.redis.bidiFinishClose(k.s, k.in, k.out, k.aids, token)) as Reply;
    if (r[0] !== 'ok') return;
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
      items.push({ key: g.members, add: (p) => p.bidiGroupLeave(g.members, g.log, g.meta, sid) });
    }
    await this.batch(items);
  }

  async sweep(input: SweepInput): Promise<SweepResult> {
    const closing: SweptSession[] = [];
    for (let round = 0; round < SWEEP_ROUNDS; round++) {
      const want = input.limit - closing.length;
      if (round > 0 && want <= 0) break;
      const r = (await this.redis.bidiSweep(this.keys.sessions, this.keys.sweep, input.lease.token, input.lease.ms, want)) as Reply;
      if (r[0] === 'busy') return round === 0 ? { status: 'busy' } : { status: 'ok', closing };
      const sids = r.slice(1).map(String);
      if (sids.length === 0) break;
      const checks = await this.batch(
        sids.map((sid) => {
          const k = this.keys.session(sid);
          return { key: k.s, add: (p) => p.bidiExpireCheck(k.s, k.in, k.out, k.channel, this.sharded, input.lease.token, input.lease.ms) };
        }),
      );
      // Re-score each candidate: drop the dead, push back the ones not due yet.
      const index = this.redis.pipeline() as ScriptedPipeline;
      checks.forEach((c, i) => {
        const reply = c as Reply;
        const sid = sids[i]!;
        switch (reply[0]) {
          case 'gone':
          case 'closed':
            index.zrem(this.keys.sessions, sid);
            break;
          case 'wait':
            index.zadd(this.keys.sessions, 'XX', Number(reply[1]), sid);
            break;
          case 'closing':
            closing.push({ sid, reason: String(reply[1]), userJson: String(reply[2]), stateJson: String(reply[3]) });
            index.zadd(this.keys.sessions, 'XX', Number(reply[4]), sid);
            break;
        }
      });
      await execPipeline(index);
      if (sids.length < want) break;
    }
    return { status: 'ok', closing };
  }

  /** Resolves once Redis confirmed the (S)SUBSCRIBE, or at once when this store already listens to the session. */
  async subscribe(sid: string, listener: (event: StoreEvent) => void): Promise<Unsubscribe> {
    let w = this.watched.get(sid);
    if (!w) this.watched.set(sid, (w = { listeners: new Set(), groups: new Map() }));
    const entry: Listener = (event) => listener(event);
    w.listeners.add(entry);
    let unsubscribe: Unsubscribe;
    try {
      unsubscribe = await this.subs.add(this.keys.session(sid).channel, listener);
    } catch (err) {
      this.unwatch(sid, w, entry);
      throw err;
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      unsubscribe();
      this.unwatch(sid, w, entry);
    };
  }

  /** A listener of a watched session left: the last one takes the session's group subscriptions with it. */
  private unwatch(sid: string, w: { listeners: Set<Listener>; groups: Map<string, Promise<Unsubscribe>> }, entry: Listener): void {
    w.listeners.delete(entry);
    if (w.listeners.size > 0 || this.watched.get(sid) !== w) return;
    this.watched.delete(sid);
    for (const sub of w.groups.values()) sub.then((u) => u(), () => {});
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
    const at = (await this.redis.bidiGroupJoin(g.members, g.meta, sid)) as Reply;
    const joined = (await this.redis.bidiJoin(k.s, group, `${at[0]}:${at[1]}`, k.channel, this.sharded)) as number;
    if (joined === 0) await this.redis.bidiGroupLeave(g.members, g.log, g.meta, sid);
    return joined === 1;
  }

  async leave(sid: string, group: string): Promise<void> {
    const g = this.keys.groupKeys(group);
    const s = this.keys.record(sid);
    await this.batch([
      { key: s, add: (p) => p.bidiLeave(s, group) },
      { key: g.members, add: (p) => p.bidiGroupLeave(g.members, g.log, g.meta, sid) },
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
        const p = this.redis.pipeline() as ScriptedPipeline;
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
  out.push(all.length);
  for (const e of all) out.push(e.gi, e.gseq, e.json);
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
  else if (refused !== '') throw new Error(`bidiweb/redis: unexpected commit reply ${JSON.stringify(refused)}`);
  return sent;
}

function appendResult(r: Reply): AppendResult {
  switch (r[0]) {
    case 'ok':
      return { status: 'ok', firstSeq: Number(r[1]), lastSeq: Number(r[2]) };
    case 'unknown':
    case 'closed':
    case 'full':
      return { status: r[0] };
    default:
      throw new Error(`bidiweb/redis: unexpected append reply ${JSON.stringify(r)}`);
  }
}

function decodeEvent(payload: string): StoreEvent | null {
  switch (payload) {
    case 'm':
      return { type: 'message' };
    case 'c':
      return { type: 'close' };
    case 'a':
      return { type: 'ack' };
    default:
      return payload.startsWith('w:') ? { type: 'watch', token: payload.slice(2) } : null;
  }
}

// --- subscriptions ---------------------------------------------------------------------

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

interface ChannelState {
  listeners: Set<Listener>;
  /**
   * The connection epoch in which Redis confirmed our subscription, or 0.
   * In effect only while that epoch is the current one and the connection is
   * ready: a reconnect makes every confirmation stale until it is renewed.
   */
  confirmed: number;
  /** Redis may hold a subscription of ours to this channel (confirmed in some epoch, not since left). */
  held: boolean;
  /** A (S)SUBSCRIBE or (S)UNSUBSCRIBE for the channel is in flight. */
  busy: boolean;
  /** The subscription was in effect on a connection that dropped: wake the listeners once it is renewed. */
  lost: boolean;
  /** add() calls waiting for the subscription to be in effect. */
  waiters: Waiter[];
  retry?: ReturnType<typeof setTimeout>;
  /** No listener since then, still subscribed (see `subscriptionLingerMs`). */
  idleSince?: number;
  /** The linger ran out: unsubscribe (unless a listener came back). */
  expired?: boolean;
}

/**
 * One pub/sub connection per store, shared by every listener: a channel is
 * subscribed when its first listener arrives and left when its last one
 * goes (one command in flight per channel at a time, so a listener added
 * while an unsubscribe is in flight re-subscribes once it completes).
 *
 * `add` resolves only once the subscription is in effect — Redis answered
 * the (S)SUBSCRIBE on the connection as it is now — so an operation started
 * after that observes the store after the subscription, and no wake-up can
 * fall between the two (core subscribes, then reads). When that cannot be
 * had within SUBSCRIBE_TIMEOUT_MS, `add` rejects (`STORE_UNAVAILABLE`): a
 * watch is never left waiting on a subscription nobody confirmed.
 *
 * Commands go out only on a ready connection. ioredis writes a SUBSCRIBE
 * issued while its socket is still in its handshake straight away; the
 * reply switches the connection to subscriber mode, its ready check (INFO)
 * is then refused, and the connection is torn down with the commands queued
 * on it. Waiting for `ready` keeps us out of that window; each `ready` starts
 * a new epoch in which every wanted channel is subscribed again (ioredis'
 * own auto-resubscribe is not relied on) and its listeners are woken, since
 * events published while the connection was down are lost.
 */
class Subscriptions {
  private readonly channels = new Map<string, ChannelState>();
  private conn?: Redis | Cluster;
  private readonly owned: boolean;
  /** Bumped at every `ready` of the connection; confirmations of older epochs are stale. */
  private epoch = 0;
  private closed = false;
  private lingerTimer?: ReturnType<typeof setInterval>;

  constructor(
    private readonly sharded: boolean,
    private readonly lingerMs: number,
    given: Redis | Cluster | undefined,
    private readonly make: () => Redis | Cluster,
  ) {
    this.conn = given;
    this.owned = !given;
    if (given) {
      if (given.status === 'ready') this.epoch = 1;
      this.attach(given);
    }
  }

  async add(channel: string, listener: Listener): Promise<Unsubscribe> {
    if (this.closed) throw unavailable('the store was disposed');
    let ch = this.channels.get(channel);
    if (!ch) this.channels.set(channel, (ch = { listeners: new Set(), confirmed: 0, held: false, busy: false, lost: false, waiters: [] }));
    // A listener is a registration: the same function added twice needs two unsubscribes.
    const entry: Listener = (event) => listener(event);
    ch.listeners.add(entry);
    let done = false;
    const unsubscribe = () => {
      if (done) return;
      done = true;
      const current = this.channels.get(channel);
      if (!current || !current.listeners.delete(entry)) return;
      this.sync(channel);
    };
    this.sync(channel);
    if (!this.inEffect(ch)) {
      try {
        await this.whenInEffect(ch);
      } catch (err) {
        unsubscribe();
        throw err;
      }
    }
    return unsubscribe;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.lingerTimer) clearInterval(this.lingerTimer);
    this.lingerTimer = undefined;
    const conn = this.conn;
    const mine = [...this.channels.entries()].filter(([, ch]) => ch.held).map(([name]) => name);
    for (const ch of this.channels.values()) {
      if (ch.retry) clearTimeout(ch.retry);
      ch.listeners.clear();
      fail(ch, unavailable('the store was disposed'));
    }
    this.channels.clear();
    if (!conn) return;
    conn.removeListener('message', this.onMessage);
    conn.removeListener('smessage', this.onMessage);
    conn.removeListener('ready', this.onReady);
    if (this.owned) {
      // QUIT needs a reachable server; past a second, drop the socket.
      const ended = conn.status === 'end' ? Promise.resolve() : new Promise<void>((resolve) => conn.once('end', () => resolve()));
      void conn.quit().catch(() => {});
      await Promise.race([ended, delay(1_000)]);
      if (conn.status !== 'end') conn.disconnect();
    } else if (mine.length > 0 && conn.status === 'ready') {
      // A connection lent to us: leave our channels, keep the rest.
      await Promise.race([(this.sharded ? Promise.all(mine.map((c) => conn.sunsubscribe(c))) : conn.unsubscribe(...mine)).catch(() => {}), delay(1_000)]);
    }
  }

  /** Subscribed on the connection as it is now, with no UNSUBSCRIBE on its way. */
  private inEffect(ch: ChannelState): boolean {
    return !ch.busy && ch.confirmed !== 0 && ch.confirmed === this.epoch && this.conn?.status === 'ready';
  }

  /** Resolves when the channel's subscription is in effect; rejects after SUBSCRIBE_TIMEOUT_MS (the subscription keeps being retried for later listeners). */
  private whenInEffect(ch: ChannelState): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        const i = ch.waiters.indexOf(waiter);
        if (i >= 0) ch.waiters.splice(i, 1);
        reject(unavailable(`Redis did not confirm the subscription within ${SUBSCRIBE_TIMEOUT_MS} ms`));
      }, SUBSCRIBE_TIMEOUT_MS);
      (timer as { unref?: () => void }).unref?.();
      ch.waiters.push(waiter);
    });
  }

  /** One timer, while channels linger: unsubscribes those whose linger ran out. */
  private lingering(): void {
    if (this.lingerTimer || this.closed) return;
    this.lingerTimer = setInterval(() => {
      const now = Date.now();
      let left = 0;
      for (const [name, ch] of this.channels) {
        if (ch.idleSince === undefined || ch.listeners.size > 0) continue;
        if (now - ch.idleSince < this.lingerMs) {
          left++;
          continue;
        }
        ch.idleSince = undefined;
        ch.expired = true;
        this.sync(name);
      }
      if (left === 0 && this.lingerTimer) {
        clearInterval(this.lingerTimer);
        this.lingerTimer = undefined;
      }
    }, Math.max(100, Math.floor(this.lingerMs / 2)));
    (this.lingerTimer as { unref?: () => void }).unref?.();
  }

  private connection(): Redis | Cluster {
    if (!this.conn) {
      this.conn = this.make();
      // Connection errors surface as subscriptions not confirmed in time; ioredis reconnects by itself.
      this.conn.on('error', () => {});
      this.attach(this.conn);
    }
    // A duplicate of a lazyConnect connection (or a lent one) may not have started connecting.
    if (this.conn.status === 'wait') this.conn.connect().catch(() => {});
    return this.conn;
  }

  private attach(conn: Redis | Cluster): void {
    conn.on(this.sharded ? 'smessage' : 'message', this.onMessage);
    conn.on('ready', this.onReady);
  }

  private readonly onMessage = (channel: string, payload: string): void => {
    const ch = this.channels.get(channel);
    if (!ch || ch.listeners.size === 0) return;
    const event = decodeEvent(String(payload));
    if (event) deliver(ch, event);
  };

  /** A new connection epoch: renew every subscription we want, leave the ones Redis may still hold for us. */
  private readonly onReady = (): void => {
    this.epoch++;
    for (const [name, ch] of this.channels) {
      if (ch.confirmed !== 0) ch.lost = true;
      if (ch.retry) {
        clearTimeout(ch.retry);
        ch.retry = undefined;
      }
      this.sync(name);
    }
  };

  private sync(channel: string): void {
    const ch = this.channels.get(channel);
    if (!ch || ch.busy || this.closed) return;
    const want = ch.listeners.size > 0;
    if (want) {
      ch.idleSince = undefined;
      ch.expired = false;
      if (this.inEffect(ch)) {
        settle(ch);
        return;
      }
    } else {
      if (ch.held && this.lingerMs > 0 && !ch.expired) {
        // Stay subscribed for a while: the session's next watch on this instance needs no SUBSCRIBE.
        ch.idleSince ??= Date.now();
        this.lingering();
        return;
      }
      if (!ch.held) {
        this.channels.delete(channel);
        return;
      }
    }
    const conn = this.connection();
    // Not ready: the next `ready` syncs every channel (and a waiter times out if it never comes).
    if (conn.status !== 'ready') return;
    ch.busy = true;
    const epoch = this.epoch;
    const op: Promise<unknown> = want
      ? this.sharded
        ? conn.ssubscribe(channel)
        : conn.subscribe(channel)
      : this.sharded
        ? conn.sunsubscribe(channel)
        : conn.unsubscribe(channel);
    op.then(
      () => {
        ch.busy = false;
        // Redis may hold a subscription whatever the epoch (ioredis resends and resubscribes after a
        // reconnect), so count it; but only a reply of this epoch confirms anything about the
        // connection now — otherwise sync() sends the command again.
        if (want) ch.held = true;
        if (epoch === this.epoch) {
          if (!want) ch.held = false;
          ch.confirmed = want ? epoch : 0;
          if (want && ch.lost) {
            ch.lost = false;
            // Events published while the connection was down are gone: let watches read again.
            deliver(ch, { type: 'message' });
          }
        }
        this.sync(channel);
      },
      () => {
        ch.busy = false;
        if (this.closed || ch.retry) return;
        // Waiters keep waiting (until their timeout); try again shortly.
        ch.retry = setTimeout(() => {
          ch.retry = undefined;
          this.sync(channel);
        }, 250);
        (ch.retry as { unref?: () => void }).unref?.();
      },
    );
  }
}

function unavailable(why: string): BidiError {
  return new BidiError('STORE_UNAVAILABLE', `bidiweb/redis: ${why}; the watch should be retried`, { retryAfter: 1 });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => (setTimeout(resolve, ms) as { unref?: () => void }).unref?.());
}

function settle(ch: ChannelState): void {
  for (const w of ch.waiters.splice(0)) w.resolve();
}

function fail(ch: ChannelState, err: Error): void {
  for (const w of ch.waiters.splice(0)) w.reject(err);
}

function deliver(ch: ChannelState, event: StoreEvent): void {
  for (const listener of [...ch.listeners]) {
    try {
      listener(event);
    } catch {
      // a listener only wakes a watch; one that throws must not stop the others
    }
  }
}
