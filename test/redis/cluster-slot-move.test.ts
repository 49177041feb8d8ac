/**
 * A session whose slot moves to another master (a reshard) keeps waking its
 * watches: Redis drops the shard-channel subscription on the old owner, and
 * the store's subscriber follows the command connection's slot table
 * (src/redis/follow-slots.ts) so that ioredis subscribes again on the new
 * owner. Without it, no wake-up of that session ever arrived again (16 s of
 * appends observed). The slot is moved by hand, as `redis-cli --cluster
 * reshard` does: SETSLOT IMPORTING / MIGRATING, MIGRATE, SETSLOT NODE.
 */
import { Cluster } from 'ioredis';
import { newSessionId, newToken } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { keySlot } from '../../src/redis/keys';
import { startRedisCluster, type RedisClusterProcess } from '../helpers/redis-server';

jest.setTimeout(60_000);

const ROOMY = { maxUnackedMessages: 1000, maxUnackedBytes: 1 << 20 };
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let cluster: RedisClusterProcess;
let redis: Cluster;

beforeAll(async () => {
  cluster = await startRedisCluster(3);
  redis = new Cluster(cluster.nodes);
});

afterAll(async () => {
  await redis?.quit().catch(() => redis.disconnect());
  await cluster?.stop();
});

async function moveSlot(slot: number, to: number): Promise<void> {
  const nodes = (await cluster.cli(cluster.nodes[0]!.port, 'cluster', 'nodes')).trim().split('\n').map((l) => l.split(' '));
  const id = (port: number) => nodes.find((f) => f[1]!.startsWith(`127.0.0.1:${port}@`))![0]!;
  const from = Number(redis.slots[slot]![0]!.split(':')[1]);
  await cluster.cli(to, 'cluster', 'setslot', String(slot), 'importing', id(from));
  await cluster.cli(from, 'cluster', 'setslot', String(slot), 'migrating', id(to));
  const keys = (await cluster.cli(from, 'cluster', 'getkeysinslot', String(slot), '1000')).trim().split('\n').filter(Boolean);
  if (keys.length > 0) await cluster.cli(from, 'migrate', '127.0.0.1', String(to), '', '0', '5000', 'keys', ...keys);
  for (const n of cluster.nodes) await cluster.cli(n.port, 'cluster', 'setslot', String(slot), 'node', id(to));
}

it("wakes the session's listeners again after its slot moved to another master", async () => {
  const prefix = `m${newToken()}:`;
  const store = new RedisStore({ redis, prefix });
  const sid = newSessionId();
  expect(await store.create({ sid, userJson: 'null', stateJson: '{}', initial: [], idleMs: 60_000, maxSessions: 1e9 })).toEqual({ status: 'ok' });
  const events: string[] = [];
  const unsubscribe = await store.subscribe(sid, (e) => events.push(e.type));
  expect(await store.append(sid, ['1'], ROOMY)).toMatchObject({ status: 'ok', lastSeq: 1 });
  for (let i = 0; i < 100 && events.length === 0; i++) await sleep(10);
  expect(events).toEqual(['message']);

  const slot = keySlot(`${prefix}{${sid}}`);
  const owner = Number(redis.slots[slot]![0]!.split(':')[1]);
  await moveSlot(slot, cluster.nodes.map((n) => n.port).find((p) => p !== owner)!);

  // The first append after the move may wake nobody (the subscription moves once the command
  // connection has met MOVED); within a few appends the wake-ups come from the new owner.
  events.length = 0;
  let seq = 1;
  for (let i = 0; i < 25 && events.length === 0; i++) {
    expect(await store.append(sid, [String(++seq)], ROOMY)).toMatchObject({ status: 'ok', lastSeq: seq });
    await sleep(200);
  }
  expect(events).toContain('message');
  expect(Number(redis.slots[slot]![0]!.split(':')[1])).not.toBe(owner);
  unsubscribe();
  await store.dispose();
});
