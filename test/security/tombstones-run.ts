/**
 * The figures of docs/SECURITY.md, "Closed sessions": from the project root,
 *
 *   node --expose-gc scripts/run-ts.mjs test/security/tombstones-run.ts
 *
 * starts its own redis-server (test/helpers/redis-server.ts) and prints, for
 * MemoryStore and RedisStore: records after 20 000 open+DELETE with
 * maxSessions 2 000; heap / used_memory after 40 sessions × ~1 MB of unread
 * echoes, closed by their client, one session open; and bytes per tombstone.
 */
import { startRedis } from '../helpers/redis-server';
import { MemoryStore } from '../../src/core/stores/memory';
import { echoes, heap, memoryStore, openClose, redisStore } from './tombstones';
import { newSessionId, newToken } from '../../src/core/util';

const MiB = 1024 * 1024;
const guard = setTimeout(() => {
  console.error('tombstones-run: took longer than 300 s');
  process.exit(2);
}, 300_000);

async function perTombstoneMemory(n: number, print = true): Promise<void> {
  const store = new MemoryStore();
  const sids: string[] = [];
  // Flat copies (newSessionId builds a sid by concatenation: a rope that a Map key flattens later,
  // which would free memory in the middle of the measurement). They stay referenced throughout:
  // what grows is the store's own.
  for (let i = 0; i < n; i++) sids.push(Buffer.from(newSessionId(), 'latin1').toString('latin1'));
  const base = await heap();
  for (const sid of sids) await store.create({ sid, userJson: '{"name":"ada"}', stateJson: '{"n":1}', initial: [], idleMs: 120_000, maxSessions: n });
  const open = await heap();
  for (const sid of sids) {
    const token = newToken();
    await store.close(sid, { reason: 'client', lease: { token, ms: 10_000 } });
    await store.finishClose(sid, token);
  }
  const closed = await heap();
  // The store must stay alive until here (it is dead, and collected, after its last use).
  if (print) console.log(`  heap per record over ${store.size} records: open session (small user/state) ${((open - base) / n).toFixed(0)} B, tombstone ${((closed - base) / n).toFixed(0)} B`);
}

async function main() {
  console.log('MemoryStore');
  // First, before the churns leave garbage behind; once unprinted, so that what the start-up
  // leaves behind (the bundler ran in this process) is gone before the measurement.
  await perTombstoneMemory(100_000, false);
  await perTombstoneMemory(100_000);
  const m1 = await openClose(memoryStore(), 20_000, 2_000);
  console.log(`  20000 open+DELETE, maxSessions 2000: ${m1.records} records (${m1.refused} refused)`);
  const m2 = await echoes(memoryStore(), 40, 1_000_000, 2_000);
  console.log(`  40 sessions x ~1 MB unread echoes, closed by their client, 1 open: heap +${((m2.held - m2.before) / MiB).toFixed(1)} MiB, ${m2.records} records`);

  const redis = await startRedis();
  try {
    console.log('RedisStore');
    const r1t = await redisStore(redis.url, 'churn:');
    const r1 = await openClose(r1t, 20_000, 2_000);
    console.log(`  20000 open+DELETE, maxSessions 2000: ${r1.records} session records (${r1.refused} refused), dbsize ${await r1t.redis.dbsize()}, tombstone index ${await r1t.redis.zcard('churn:{sessions}:tombs')}`);
    const [sid] = await r1t.redis.zrange('churn:{sessions}:tombs', -1, -1);
    const rec = Number(await r1t.redis.memory('USAGE', `churn:{${sid}}:s`, 'SAMPLES', '0'));
    console.log(`  a tombstone: MEMORY USAGE of its record ${rec} B, fields ${JSON.stringify(await r1t.redis.hgetall(`churn:{${sid}}:s`))}`);
    await r1t.close();
    const r2t = await redisStore(redis.url, 'echo:');
    const r2 = await echoes(r2t, 40, 1_000_000, 2_000);
    console.log(`  40 sessions x ~1 MB unread echoes, closed by their client, 1 open: used_memory +${((r2.held - r2.before) / MiB).toFixed(2)} MiB, ${r2.records} records`);
    await r2t.close();
  } finally {
    await redis.stop();
  }
}

main().then(
  () => {
    clearTimeout(guard);
  },
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
