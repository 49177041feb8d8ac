/**
 * What one `hub.publish(group, msg)` costs in Redis, for groups of 10, 1 000
 * and 10 000 members, on one redis-server started here on a free port:
 * commands (`INFO commandstats` deltas, commands run inside scripts
 * included), script calls, round trips (writes on the command connection's
 * socket; a pipeline is one), Redis' own time (commandstats usec) and the
 * caller's wall time. Then what each member's next watch read costs to pick
 * the message up (the same counters, divided by the members).
 *
 *   node scripts/run-ts.mjs bench/group-cost.ts [--sizes=10,1000,10000] [--publishes=5]
 */
import type { Socket } from 'node:net';
import Redis from 'ioredis';
import { createBidiServer } from '../src/core/server';
import { newSessionId, newToken } from '../src/core/util';
import { RedisStore } from '../src/redis';
import { startRedis } from '../test/helpers/redis-server';
import { median, now } from './lib';

const argv = new Map(process.argv.slice(2).map((a) => [a.replace(/^--/, '').split('=')[0]!, a.split('=')[1] ?? '']));
const SIZES = (argv.get('sizes') ?? '10,1000,10000').split(',').map(Number);
const PUBLISHES = Number(argv.get('publishes') ?? 5);
const BURST = Number(argv.get('burst') ?? 20);
const MSG = { text: 'hello, room', from: 'ada' };

interface Stats {
  calls: number;
  usec: number;
}

/**
 * Every command Redis ran (inside scripts too), but the INFO that asks; and
 * Redis' time: the script calls' (which includes what they run) plus the
 * plain commands the store sends itself (SMEMBERS).
 */
async function commandStats(redis: Redis): Promise<Stats> {
  const info = await redis.info('commandstats');
  let calls = 0;
  let usec = 0;
  for (const m of info.matchAll(/cmdstat_([a-z|_]+):calls=(\d+),usec=(\d+)/g)) {
    if (m[1] === 'info') continue;
    calls += Number(m[2]);
    if (m[1] === 'evalsha' || m[1] === 'eval' || m[1] === 'smembers') usec += Number(m[3]);
  }
  return { calls, usec };
}

async function scriptCalls(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats');
  let n = 0;
  for (const m of info.matchAll(/cmdstat_(evalsha|eval):calls=(\d+)/g)) n += Number(m[2]);
  return n;
}

function countWrites(redis: Redis): { readonly writes: number; stop(): void } {
  const stream = (redis as unknown as { stream: Socket }).stream;
  const original = stream.write;
  let writes = 0;
  stream.write = function (this: Socket, ...args: unknown[]) {
    writes++;
    return (original as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof stream.write;
  return {
    get writes() {
      return writes;
    },
    stop: () => void (stream.write = original),
  };
}

async function main(): Promise<void> {
  const server = await startRedis();
  const redis = new Redis(server.port, '127.0.0.1');
  const store = new RedisStore({ redis, prefix: 'bench-group:' });
  const bidi = createBidiServer({ store, sweepInterval: 0 });
  const rows: string[] = [];
  try {
    for (const size of SIZES) {
      const group = `room-${size}`;
      const sids = Array.from({ length: size }, () => newSessionId());
      for (let i = 0; i < sids.length; i += 500) {
        await Promise.all(
          sids.slice(i, i + 500).map(async (sid) => {
            await store.create({ sid, userJson: 'null', stateJson: '{}', initial: [], idleMs: 600_000, maxSessions: 1e9 });
            await bidi.hub.join(sid, group);
          }),
        );
      }
      await bidi.hub.publish(group, MSG); // warm up: scripts loaded
      // Members read once so that the measured publishes start from a caught-up group.
      const acks = new Map<string, number>();
      const readAll = async () => {
        for (let i = 0; i < sids.length; i += 500) {
          await Promise.all(
            sids.slice(i, i + 500).map(async (sid) => {
              const r = await store.read(sid, { ack: acks.get(sid) ?? 0, watchToken: newToken(), claim: true, maxMessages: 500 });
              if (r.status === 'ok' && r.msgs.length > 0) acks.set(sid, r.msgs[r.msgs.length - 1]!.seq);
            }),
          );
        }
      };
      await readAll();
      const pub = { commands: [] as number[], scripts: [] as number[], rts: [] as number[], redisMs: [] as number[], wallMs: [] as number[] };
      const rd = { commands: [] as number[], scripts: [] as number[] };
      for (let p = 0; p < PUBLISHES; p++) {
        const before = await commandStats(redis);
        const scriptsBefore = await scriptCalls(redis);
        const w = countWrites(redis);
        const t0 = now();
        const result = await bidi.hub.publish(group, MSG);
        const wall = now() - t0;
        w.stop();
        const after = await commandStats(redis);
        // The two INFO calls of `after` (commandStats, then scriptCalls below) are excluded by name.
        pub.commands.push(after.calls - before.calls);
        pub.scripts.push((await scriptCalls(redis)) - scriptsBefore);
        pub.rts.push(w.writes);
        pub.redisMs.push((after.usec - before.usec) / 1000);
        pub.wallMs.push(wall);
        if (result.sent !== size) throw new Error(`publish reached ${result.sent} of ${size}`);
        // Each member's next watch read picks the message up.
        const rb = await commandStats(redis);
        const rs = await scriptCalls(redis);
        await readAll();
        const ra = await commandStats(redis);
        rd.commands.push((ra.calls - rb.calls) / size);
        rd.scripts.push(((await scriptCalls(redis)) - rs) / size);
      }
      // A burst: BURST publishes, then each member's read takes them all at once.
      const burst = { commands: [] as number[], scripts: [] as number[] };
      for (let p = 0; p < 3; p++) {
        const bb = await commandStats(redis);
        const bs = await scriptCalls(redis);
        for (let i = 0; i < BURST; i++) await bidi.hub.publish(group, MSG);
        await readAll();
        const ba = await commandStats(redis);
        burst.commands.push((ba.calls - bb.calls) / (size * BURST));
        burst.scripts.push(((await scriptCalls(redis)) - bs) / (size * BURST));
      }
      rows.push(
        `| ${size.toLocaleString('en-US')} | ${median(pub.rts)} | ${median(pub.scripts)} | ${median(pub.commands)} | ${median(pub.redisMs).toFixed(2)} | ${median(pub.wallMs).toFixed(2)} | ${median(rd.scripts).toFixed(1)} | ${median(rd.commands).toFixed(1)} | ${median(burst.scripts).toFixed(2)} | ${median(burst.commands).toFixed(1)} |`,
      );
      console.error(rows[rows.length - 1]);
    }
    console.log(
      `| members | publish: round trips | script calls | Redis commands (scripts included) | Redis time, ms | wall time, ms | each member's next read: script calls | its commands | burst of ${BURST} publishes, then one read per member: script calls per member per message | commands per member per message |`,
    );
    console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const row of rows) console.log(row);
  } finally {
    await bidi.dispose();
    await store.dispose();
    redis.disconnect();
    await server.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
