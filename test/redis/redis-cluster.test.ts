/**
 * The store contract suite against RedisStore on a 3-master Redis Cluster
 * started for this file: per-session scripts on their own slot, pipelines
 * grouped by node, sharded pub/sub (SPUBLISH / SSUBSCRIBE).
 */
import Redis, { Cluster } from 'ioredis';
import { newSessionId, newToken } from '../../src/core/util';
import { RedisKeys, RedisStore } from '../../src/redis';
import { keySlot } from '../../src/redis/keys';
import { startRedisCluster, type RedisClusterProcess } from '../helpers/redis-server';
import { runStoreContract } from '../../src/testing';

jest.setTimeout(60_000);

let cluster: RedisClusterProcess;
const connections: Cluster[] = [];

beforeAll(async () => {
  cluster = await startRedisCluster(3);
});

afterAll(async () => {
  await Promise.all(connections.map((c) => c.quit().catch(() => c.disconnect())));
  await cluster?.stop();
});

runStoreContract(
  { describe, it, afterAll },
  () => {
    const redis = new Cluster(cluster.nodes);
    connections.push(redis);
    return new RedisStore({ redis, prefix: `t${newToken()}:` });
  },
  { name: 'RedisStore on Redis Cluster', cleanup: (store) => store.dispose() },
);

describe('RedisStore on Redis Cluster: specifics', () => {
  const ROOMY = { maxUnackedMessages: 100, maxUnackedBytes: 1 << 20 };
  const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
  const stores: RedisStore[] = [];
  afterAll(async () => {
    for (const s of stores) await s.dispose();
  });

  function make(over: Partial<ConstructorParameters<typeof RedisStore>[0]> = {}) {
    const redis = new Cluster(cluster.nodes);
    connections.push(redis);
    const prefix = `c${newToken()}:`;
    const store = new RedisStore({ redis, prefix, ...over });
    stores.push(store);
    return { store, redis, prefix };
  }

  async function open(store: RedisStore): Promise<string> {
    const sid = newSessionId();
    expect(await store.create({ sid, userJson: 'null', stateJson: '{}', initial: [], idleMs: 60_000, maxSessions: 1e9 })).toEqual({ status: 'ok' });
    return sid;
  }

  async function statsOf(port: number): Promise<Record<string, number>> {
    const node = new Redis(port, '127.0.0.1');
    try {
      const info = await node.info('commandstats');
      const out: Record<string, number> = {};
      for (const m of info.matchAll(/cmdstat_([a-z|]+):calls=(\d+)/g)) out[m[1]!] = Number(m[2]);
      return out;
    } finally {
      node.disconnect();
    }
  }

  it('puts every key and the channel of a session in one slot, as CLUSTER KEYSLOT computes it', async () => {
    const { redis, prefix } = make();
    const keys = new RedisKeys(prefix);
    for (let i = 0; i < 20; i++) {
      const k = keys.session(newSessionId());
      const slots = await Promise.all([k.s, k.out, k.channel].map((key) => redis.cluster('KEYSLOT', key)));
      expect(new Set(slots).size).toBe(1);
      expect(slots[0]).toBe(keySlot(k.s));
    }
    expect(await redis.cluster('KEYSLOT', keys.sweep)).toBe(await redis.cluster('KEYSLOT', keys.sessions));
    expect(await redis.cluster('KEYSLOT', keys.group('room'))).toBe(keySlot(keys.group('room')));
  });

  it('uses sharded pub/sub: SPUBLISH from the scripts, SSUBSCRIBE on the shard of the session, never a cluster-wide PUBLISH', async () => {
    const { store, redis, prefix } = make();
    const before = await Promise.all(cluster.nodes.map((n) => statsOf(n.port)));
    const sid = await open(store);
    const events: string[] = [];
    const unsubscribe = await store.subscribe(sid, (e) => events.push(e.type));
    const channel = new RedisKeys(prefix).session(sid).channel;
    const shardChannels = (await Promise.all(
      (redis as Cluster).nodes('master').map((n) => n.call('PUBSUB', 'SHARDCHANNELS', `${prefix}*`)),
    )) as string[][];
    expect(shardChannels.flat()).toEqual([channel]);
    await store.append(sid, ['1'], ROOMY);
    await store.close(sid, { reason: 'r' });
    for (let i = 0; i < 100 && events.length < 2; i++) await sleep(5);
    expect(events).toEqual(['message', 'close']);
    const after = await Promise.all(cluster.nodes.map((n) => statsOf(n.port)));
    const delta = (name: string) => after.reduce((sum, a, i) => sum + (a[name] ?? 0) - (before[i]![name] ?? 0), 0);
    expect(delta('spublish')).toBeGreaterThanOrEqual(2);
    expect(delta('publish')).toBe(0);
    unsubscribe();
  });

  it('falls back to classic PUBLISH/SUBSCRIBE with a subscriber that has no shardedSubscribers', async () => {
    const subscriber = new Cluster(cluster.nodes);
    connections.push(subscriber);
    const { store } = make({ subscriber });
    const sid = await open(store);
    const events: string[] = [];
    const unsubscribe = await store.subscribe(sid, (e) => events.push(e.type));
    await store.append(sid, ['1'], ROOMY);
    for (let i = 0; i < 100 && events.length < 1; i++) await sleep(5);
    expect(events).toEqual(['message']);
    unsubscribe();
  });

  it('groups: the group keys share their own slot; a publish is one script and one SPUBLISH on that shard; members on other shards pull it and wake', async () => {
    const { store, redis, prefix } = make();
    const keys = new RedisKeys(prefix);
    const g = keys.groupKeys('room');
    const slots = await Promise.all([g.members, g.log, g.meta, g.channel].map((key) => redis.cluster('KEYSLOT', key)));
    expect(new Set(slots).size).toBe(1);
    expect(slots[0]).toBe(keySlot(g.members));
    const groupNode = (redis as Cluster).slots[keySlot(g.members)]![0];
    // Members whose sessions live on the other nodes.
    const sids: string[] = [];
    while (sids.length < 4) {
      const sid = await open(store);
      if ((redis as Cluster).slots[keySlot(keys.record(sid))]![0] !== groupNode) sids.push(sid);
    }
    for (const sid of sids) expect(await store.join(sid, 'room')).toBe(true);
    const woken: string[] = [];
    // A watch subscribes, then reads (which makes the store listen to the group's channel).
    const unsubscribe = await store.subscribe(sids[0]!, (e) => woken.push(e.type));
    await store.read(sids[0]!, { ack: 0, watchToken: 'w', claim: true, maxMessages: 10 });
    woken.length = 0;
    const before = await Promise.all(cluster.nodes.map((n) => statsOf(n.port)));
    expect(await store.publish('room', '"hi"', { maxEntries: 10, maxAgeMs: 60_000 }, 'p1')).toEqual({ status: 'ok', members: 4, gseq: 1 });
    const after = await Promise.all(cluster.nodes.map((n) => statsOf(n.port)));
    const delta = (name: string) => after.reduce((sum, a, i) => sum + (a[name] ?? 0) - (before[i]![name] ?? 0), 0);
    expect([delta('evalsha') + delta('eval'), delta('spublish'), delta('publish')]).toEqual([1, 1, 0]);
    for (let i = 0; i < 100 && woken.length < 1; i++) await sleep(5);
    expect(woken).toContain('message');
    for (const sid of sids) {
      expect(await store.read(sid, { ack: 0, watchToken: 'w', claim: true, maxMessages: 10 })).toMatchObject({ msgs: [{ seq: 1, json: '"hi"' }] });
    }
    // A send to a member comes after the publish it followed.
    expect(await store.append(sids[1]!, ['"after"'], ROOMY, 'a1')).toEqual({ status: 'ok', firstSeq: 2, lastSeq: 2 });
    unsubscribe();
  });

  it('appendMany sends one pipeline per node, all at once', async () => {
    const { store, redis } = make();
    const sids = await Promise.all(Array.from({ length: 60 }, () => open(store)));
    const pipeline = jest.spyOn(redis, 'pipeline');
    const results = await store.appendMany(sids, '"hi"', ROOMY);
    expect(results.every((r) => r.status === 'ok')).toBe(true);
    const nodes = new Set(sids.map((sid) => (redis as Cluster).slots[keySlot(`x{${sid}}`)]![0]));
    expect(nodes.size).toBe(3);
    expect(pipeline).toHaveBeenCalledTimes(nodes.size);
    pipeline.mockRestore();
  });
});
