/**
 * What the append id costs: `RedisStore.append` with an id (as core sends)
 * against the same call without one, in the same run, on one redis-server
 * started here on a free port. Redis' own time per script call comes from
 * `INFO commandstats` (evalsha usec), the caller's from wall time per call;
 * rounds alternate the two modes, medians are reported.
 *
 *   node scripts/run-ts.mjs bench/append-id.ts [--rounds=5] [--calls=5000] [--sessions=100]
 */
import Redis from 'ioredis';
import { newAppendId, newSessionId } from '../src/core/util';
import { RedisStore } from '../src/redis';
import { startRedis } from '../test/helpers/redis-server';
import { median, now } from './lib';

const argv = new Map(process.argv.slice(2).map((a) => [a.replace(/^--/, '').split('=')[0]!, a.split('=')[1] ?? '']));
const ROUNDS = Number(argv.get('rounds') ?? 5);
const CALLS = Number(argv.get('calls') ?? 5_000);
const SESSIONS = Number(argv.get('sessions') ?? 100);
const LIMITS = { maxUnackedMessages: 1e9, maxUnackedBytes: 1e12 };
const JSON_MSG = JSON.stringify({ text: 'hello, world', from: 'ada' });

async function evalshaStats(redis: Redis): Promise<{ calls: number; usec: number }> {
  const m = /cmdstat_evalsha:calls=(\d+),usec=(\d+)/.exec(await redis.info('commandstats'));
  return { calls: Number(m?.[1] ?? 0), usec: Number(m?.[2] ?? 0) };
}

async function main(): Promise<void> {
  const server = await startRedis();
  const redis = new Redis(server.port, '127.0.0.1');
  const store = new RedisStore({ redis, prefix: 'bench-aid:' });
  try {
    const sids = Array.from({ length: SESSIONS }, () => newSessionId());
    for (const sid of sids) await store.create({ sid, userJson: 'null', stateJson: '{}', initial: [], idleMs: 600_000, maxSessions: 1e9 });
    // Warm up both modes (script load, JIT) and fill every id list to its 32 entries: the steady state.
    for (let i = 0; i < 40; i++) await Promise.all(sids.map((sid) => store.append(sid, [JSON_MSG], LIMITS, newAppendId())));
    await Promise.all(sids.map((sid) => store.append(sid, [JSON_MSG], LIMITS)));

    const results: Record<'with id' | 'without id', { redisUs: number[]; wallUs: number[] }> = {
      'with id': { redisUs: [], wallUs: [] },
      'without id': { redisUs: [], wallUs: [] },
    };
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of round % 2 === 0 ? (['with id', 'without id'] as const) : (['without id', 'with id'] as const)) {
        const before = await evalshaStats(redis);
        const t0 = now();
        // 50 in flight, as many concurrent senders would have.
        let next = 0;
        await Promise.all(
          Array.from({ length: 50 }, async () => {
            while (next < CALLS) {
              const sid = sids[next++ % sids.length]!;
              await store.append(sid, [JSON_MSG], LIMITS, mode === 'with id' ? newAppendId() : undefined);
            }
          }),
        );
        const wall = now() - t0;
        const after = await evalshaStats(redis);
        results[mode].redisUs.push((after.usec - before.usec) / (after.calls - before.calls));
        results[mode].wallUs.push((wall * 1000) / CALLS);
      }
      // Keep the logs short: trim everything appended so far.
      await Promise.all(sids.map(async (sid) => {
        const [info] = await store.inspect([sid]);
        await store.read(sid, { ack: info!.lastSeq, watchToken: 't', claim: true, maxMessages: 0 });
      }));
    }
    const row = (mode: 'with id' | 'without id') =>
      `${mode.padEnd(11)} ${median(results[mode].redisUs).toFixed(2).padStart(16)} ${median(results[mode].wallUs).toFixed(2).padStart(18)}`;
    console.log(`append of a ${JSON_MSG.length}-byte message, ${SESSIONS} sessions, ${CALLS} calls × ${ROUNDS} rounds, medians`);
    console.log(`${'mode'.padEnd(11)} ${'Redis µs/script'.padStart(16)} ${'caller µs/append'.padStart(18)}`);
    console.log(row('with id'));
    console.log(row('without id'));
    const ratio = (k: 'redisUs' | 'wallUs') => median(results['with id'][k]) / median(results['without id'][k]);
    console.log(`ratio with/without: Redis time ${ratio('redisUs').toFixed(2)}×, caller time ${ratio('wallUs').toFixed(2)}×`);
  } finally {
    await store.dispose();
    redis.disconnect();
    await server.stop();
  }
}

void main().catch((err) => {
  console.error(err);
  process.exit(1);
});
