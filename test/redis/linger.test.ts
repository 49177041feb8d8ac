/**
 * RedisStore `subscriptionLingerMs` (docs/REDIS.md): a session's channel stays
 * subscribed for a while after its last listener left, so the next watch of
 * the session on this instance needs no SUBSCRIBE.
 */
import Redis from 'ioredis';
import type { StoreEvent } from '../../src/core/store';
import { newSessionId, newToken } from '../../src/core/util';
import { RedisKeys, RedisStore } from '../../src/redis';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

jest.setTimeout(30_000);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
let server: RedisProcess;
const connections: Redis[] = [];
const stores: RedisStore[] = [];

beforeAll(async () => {
  server = await startRedis();
});

afterAll(async () => {
  for (const s of stores) await s.dispose();
  for (const c of connections) c.disconnect();
  await server?.stop();
});

function make(lingerMs: number) {
  const redis = new Redis({ host: '127.0.0.1', port: server.port });
  connections.push(redis);
  const prefix = `lg${newToken()}:`;
  const store = new RedisStore({ redis, prefix, subscriptionLingerMs: lingerMs });
  stores.push(store);
  return { store, redis, keys: new RedisKeys(prefix) };
}

async function open(store: RedisStore): Promise<string> {
  const sid = newSessionId();
  await store.create({ sid, userJson: 'null', stateJson: '{}', initial: [], idleMs: 60_000, maxSessions: 1e9 });
  return sid;
}

async function subscribes(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats');
  return Number(/cmdstat_subscribe:calls=(\d+)/.exec(info)?.[1] ?? 0);
}

async function numsub(redis: Redis, channel: string): Promise<number> {
  return Number((await redis.pubsub('NUMSUB', channel))[1]);
}

describe('subscriptionLingerMs', () => {
  it('keeps the channel subscribed after the last listener left, and a new listener needs no SUBSCRIBE', async () => {
    const { store, redis, keys } = make(600);
    const sid = await open(store);
    const channel = keys.session(sid).channel;
    const first = await store.subscribe(sid, () => {});
    expect(await numsub(redis, channel)).toBe(1);
    first();
    await sleep(50);
    expect(await numsub(redis, channel)).toBe(1);
    const before = await subscribes(redis);
    const events: StoreEvent[] = [];
    const second = await store.subscribe(sid, (e) => events.push(e));
    expect(await subscribes(redis)).toBe(before);
    await store.append(sid, ['1'], { maxUnackedMessages: 10, maxUnackedBytes: 1000 });
    for (let i = 0; i < 100 && events.length === 0; i++) await sleep(5);
    expect(events).toMatchObject([{ type: 'message' }]);
    second();
    // The linger runs out: UNSUBSCRIBE.
    for (let i = 0; i < 100 && (await numsub(redis, channel)) > 0; i++) await sleep(20);
    expect(await numsub(redis, channel)).toBe(0);
    // And a listener after that subscribes again and gets events.
    const third: StoreEvent[] = [];
    const off = await store.subscribe(sid, (e) => third.push(e));
    await store.close(sid, { reason: 'r' });
    for (let i = 0; i < 100 && third.length === 0; i++) await sleep(5);
    expect(third).toEqual([{ type: 'close' }]);
    off();
  });

  it('a listener that arrives while the expired channel’s UNSUBSCRIBE is in flight subscribes again', async () => {
    const { store, redis, keys } = make(150);
    const sid = await open(store);
    const channel = keys.session(sid).channel;
    for (let round = 0; round < 10; round++) {
      (await store.subscribe(sid, () => {}))();
      await sleep(150 + Math.floor(Math.random() * 150));
      const events: StoreEvent[] = [];
      const off = await store.subscribe(sid, (e) => events.push(e));
      await store.append(sid, [String(round)], { maxUnackedMessages: 100, maxUnackedBytes: 10_000 });
      for (let i = 0; i < 200 && events.length === 0; i++) await sleep(2);
      expect(events).toMatchObject([{ type: 'message' }]);
      off();
    }
    for (let i = 0; i < 100 && (await numsub(redis, channel)) > 0; i++) await sleep(20);
    expect(await numsub(redis, channel)).toBe(0);
  });

  it('dispose leaves lingering channels too', async () => {
    const { store, redis, keys } = make(60_000);
    const sid = await open(store);
    (await store.subscribe(sid, () => {}))();
    expect(await numsub(redis, keys.session(sid).channel)).toBe(1);
    await store.dispose();
    for (let i = 0; i < 100 && (await numsub(redis, keys.session(sid).channel)) > 0; i++) await sleep(10);
    expect(await numsub(redis, keys.session(sid).channel)).toBe(0);
  });
});
