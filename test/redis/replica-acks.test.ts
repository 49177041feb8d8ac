/**
 * RedisStore's `replicaAcks` option: a WAIT after each state-changing
 * script, on the master that ran it; fewer replica confirmations than asked
 * → STORE_UNAVAILABLE (503, the client retries). Against real servers: a
 * master with a replica (then without: the replica killed), and a Cluster
 * of 3 masters + 3 replicas, where each WAIT must reach the master that
 * owns the session's slot.
 */
import Redis, { Cluster } from 'ioredis';
import { BidiError } from '../../src/core/errors';
import { newSessionId, newToken } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { keySlot } from '../../src/redis/keys';
import { startRedis, startRedisCluster, type RedisClusterProcess, type RedisProcess } from '../helpers/redis-server';

jest.setTimeout(60_000);

const ROOMY = { maxUnackedMessages: 100, maxUnackedBytes: 1 << 20 };

async function commandCalls(port: number, name: string): Promise<number> {
  const node = new Redis(port, '127.0.0.1');
  try {
    const info = await node.info('commandstats');
    return Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
  } finally {
    node.disconnect();
  }
}

async function open(store: RedisStore): Promise<string> {
  const sid = newSessionId();
  expect(await store.create({ sid, userJson: 'null', stateJson: '{}', initial: [], idleMs: 60_000, maxSessions: 1e9 })).toEqual({ status: 'ok' });
  return sid;
}

describe('replicaAcks on a master with one replica', () => {
  let master: RedisProcess;
  let replica: RedisProcess;
  let redis: Redis;

  beforeAll(async () => {
    master = await startRedis({ args: ['--repl-diskless-sync-delay', '0'] });
    replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
    redis = new Redis(master.port, '127.0.0.1', { maxRetriesPerRequest: 1 });
    await linked();
  });

  /** Until the replica is online (synced), so WAIT can count it. */
  async function linked(): Promise<void> {
    for (let i = 0; i < 200 && !/slave0:.*state=online/.test(await redis.info('replication')); i++) await new Promise((r) => setTimeout(r, 50));
  }

  afterAll(async () => {
    redis?.disconnect();
    await replica?.stop();
    await master?.stop();
  });

  it('refuses malformed options', () => {
    for (const bad of [{ replicas: 0, timeoutMs: 10 }, { replicas: 1, timeoutMs: 0 }, { replicas: 1.5, timeoutMs: 10 }, null]) {
      expect(() => new RedisStore({ redis, replicaAcks: bad as never })).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }));
    }
  });

  it('sends one WAIT after each state-changing operation and none after a read-only one', async () => {
    const store = new RedisStore({ redis, prefix: `a${newToken()}:`, replicaAcks: { replicas: 1, timeoutMs: 1000 } });
    const before = await commandCalls(master.port, 'wait');
    const sid = await open(store);
    const afterCreate = await commandCalls(master.port, 'wait');
    // create = admit + create scripts.
    expect(afterCreate - before).toBe(2);
    expect(await store.append(sid, ['"x"'], ROOMY)).toEqual({ status: 'ok', firstSeq: 1, lastSeq: 1 });
    expect((await commandCalls(master.port, 'wait')) - afterCreate).toBe(1);
    expect((await store.inspect([sid]))[0]).toMatchObject({ status: 'open', lastSeq: 1 });
    expect((await commandCalls(master.port, 'wait')) - afterCreate).toBe(1);
    // The replica holds what was answered.
    const r = new Redis(replica.port, '127.0.0.1');
    expect(await r.exists(store['keys'].record(sid))).toBe(1);
    r.disconnect();
    await store.dispose();
  });

  it('leaves the open rate limiter (rate-limiter-flexible on the same connection) working', async () => {
    const store = new RedisStore({ redis, prefix: `l${newToken()}:`, replicaAcks: { replicas: 1, timeoutMs: 1000 } });
    const limiter = store.openLimiter({ opens: 2, perSeconds: 60 });
    expect([await limiter.take('k'), await limiter.take('k')]).toEqual([0, 0]);
    expect(await limiter.take('k')).toBeGreaterThan(0);
    await store.dispose();
  });

  it('fails with STORE_UNAVAILABLE (503) when no replica confirms in time, and works again once one does', async () => {
    const store = new RedisStore({ redis, prefix: `b${newToken()}:`, replicaAcks: { replicas: 1, timeoutMs: 100 } });
    const sid = await open(store);
    await replica.kill();
    const err = await store.append(sid, ['"lonely"'], ROOMY).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BidiError);
    expect(err).toMatchObject({ code: 'STORE_UNAVAILABLE', status: 503 });
    await replica.restart();
    await linked();
    // The retry is the same append again; the first one did land on the master.
    expect(await store.append(sid, ['"again"'], ROOMY)).toEqual({ status: 'ok', firstSeq: 2, lastSeq: 2 });
    await store.dispose();
  });
});

describe('replicaAcks on a Redis Cluster of 3 masters + 3 replicas', () => {
  let cluster: RedisClusterProcess;
  let redis: Cluster;

  beforeAll(async () => {
    cluster = await startRedisCluster(3, { replicas: 1 });
    redis = new Cluster(cluster.nodes);
  });

  afterAll(async () => {
    await redis?.quit().catch(() => redis.disconnect());
    await cluster?.stop();
  });

  it("sends each WAIT to the master that owns the session's slot, one per node for a pipelined appendMany", async () => {
    const store = new RedisStore({ redis, prefix: `c${newToken()}:`, replicaAcks: { replicas: 1, timeoutMs: 1000 } });
    const masterPorts = cluster.servers.map((s) => s.port);
    await redis.ping();
    const ownerOf = (sid: string) => Number(redis.slots[keySlot(`x{${sid}}`)]![0]!.split(':')[1]);
    // One session on each master.
    const sids = new Map<number, string>();
    for (let i = 0; i < 100 && sids.size < 3; i++) {
      const sid = await open(store);
      if (!sids.has(ownerOf(sid))) sids.set(ownerOf(sid), sid);
    }
    expect(sids.size).toBe(3);
    for (const [port, sid] of sids) {
      const before = await Promise.all(masterPorts.map((p) => commandCalls(p, 'wait')));
      expect(await store.append(sid, ['"x"'], ROOMY)).toMatchObject({ status: 'ok' });
      const after = await Promise.all(masterPorts.map((p) => commandCalls(p, 'wait')));
      const delta = masterPorts.map((p, i) => [p, after[i]! - before[i]!]).filter(([, d]) => d !== 0);
      expect(delta).toEqual([[port, 1]]);
    }
    const before = await Promise.all(masterPorts.map((p) => commandCalls(p, 'wait')));
    const results = await store.appendMany([...sids.values()], '"all"', ROOMY);
    expect(results.map((r) => r.status)).toEqual(['ok', 'ok', 'ok']);
    const after = await Promise.all(masterPorts.map((p) => commandCalls(p, 'wait')));
    expect(masterPorts.map((p, i) => [p, after[i]! - before[i]!]).filter(([, d]) => d !== 0).sort()).toEqual([...sids.keys()].map((p) => [p, 1]).sort());
    await store.dispose();
  });
});
