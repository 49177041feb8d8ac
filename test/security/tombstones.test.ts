/**
 * docs/SECURITY.md, "Closed sessions": a closed session is a small tombstone,
 * and the store holds at most `maxSessions` of them after each open, so its
 * size is bounded by `maxSessions`, whatever the rate of open and close.
 * (Before: 20 000 open+DELETE with maxSessions 2 000 left 22 000 records, and
 * 40 closed sessions kept their ~1 MB logs each.) Figures:
 * `node --expose-gc scripts/run-ts.mjs test/security/tombstones-run.ts`.
 */
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { echoes, memoryStore, openClose, redisStore } from './tombstones';

jest.setTimeout(120_000);
const MiB = 1024 * 1024;

describe('closed sessions', () => {
  // Each open trims the tombstones to maxSessions; the close after the last open adds one.
  it('MemoryStore: 5 000 open+DELETE with maxSessions 500 leave 501 records (500 tombstones + the last close)', async () => {
    const t = memoryStore();
    const r = await openClose(t, 5_000, 500);
    expect(r.refused).toBe(0);
    expect(r.records).toBe(501);
  });

  it('MemoryStore: 10 sessions given ~1 MB of echoes and closed by their client keep no log', async () => {
    const t = memoryStore();
    const r = await echoes(t, 10, 1_000_000, 2_000);
    expect(r.records).toBe(11);
    // Every tombstone answers the marker alone.
    const store = t.store;
    const sids = [...(store as unknown as { tombs: Map<string, unknown> }).tombs.keys()];
    for (const sid of sids) {
      expect(await store.read(sid, { ack: 0, watchToken: 't', claim: true, maxMessages: 10 })).toMatchObject({ msgs: [], close: { reason: 'client' } });
    }
  });

  describe('RedisStore', () => {
    let redis: RedisProcess;
    beforeAll(async () => {
      redis = await startRedis();
    });
    afterAll(async () => {
      await redis?.stop();
    });

    it('2 000 open+DELETE with maxSessions 200 leave 201 session records (200 tombstones + the last close)', async () => {
      const t = await redisStore(redis.url, 'churn:');
      try {
        const r = await openClose(t, 2_000, 200);
        expect(r.refused).toBe(0);
        expect(r.records).toBe(201);
        expect(await t.redis.zcard('churn:{sessions}:tombs')).toBe(201);
      } finally {
        await t.close();
      }
    });

    it('10 sessions given ~1 MB of echoes and closed by their client leave under 1 MiB in Redis', async () => {
      const t = await redisStore(redis.url, 'echo:');
      try {
        const r = await echoes(t, 10, 1_000_000, 2_000);
        expect(r.records).toBe(11);
        expect(r.held - r.before).toBeLessThan(MiB);
      } finally {
        await t.close();
      }
    });
  });
});
