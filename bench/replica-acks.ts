/**
 * What RedisStore's `replicaAcks` costs per echo (a client message, the
 * handler's `session.send()` of it back, the client receiving it): commands
 * the store sent per echo (counted on its ioredis connection: each is a
 * round trip, WAITs included), WAITs per echo (the master's `INFO
 * commandstats`), and the
 * echo's round trip as a real client sees it, with the option off and on
 * ({ replicas: 1, timeoutMs: 100 }), in the same run, rounds alternating.
 * One redis-server master with one replica, both started here on free
 * ports; one Express server per mode in this process; plain watches.
 *
 *   node scripts/run-ts.mjs bench/replica-acks.ts [--rounds=4] [--echoes=300] [--sessions=1,20]
 */
import type { AddressInfo } from 'node:net';
import express from 'express';
import Redis from 'ioredis';
import { open, type BidiClientSession } from '../src/client';
import { bidiWeb } from '../src/express';
import { RedisStore } from '../src/redis';
import { startRedis } from '../test/helpers/redis-server';
import { median, now, percentiles } from './lib';

const argv = new Map(process.argv.slice(2).map((a) => [a.replace(/^--/, '').split('=')[0]!, a.split('=')[1] ?? '']));
const ROUNDS = Number(argv.get('rounds') ?? 4);
const ECHOES = Number(argv.get('echoes') ?? 300);
const SESSIONS = (argv.get('sessions') ?? '1,20').split(',').map(Number);
const MODES = ['off', 'on'] as const;
type Mode = (typeof MODES)[number];

async function waitCalls(redis: Redis): Promise<number> {
  return Number(/cmdstat_wait:calls=(\d+)/.exec(await redis.info('commandstats'))?.[1] ?? 0);
}

/** Counts the commands sent on the connection (INFO commandstats would also count each redis.call inside the scripts). */
function countCommands(redis: Redis): { n: number } {
  const counter = { n: 0 };
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => {
    counter.n++;
    return send(...args);
  }) as Redis['sendCommand'];
  return counter;
}

async function main(): Promise<void> {
  const master = await startRedis({ args: ['--repl-diskless-sync-delay', '0'] });
  const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
  const admin = new Redis(master.port, '127.0.0.1');
  for (let i = 0; i < 200 && !/slave0:.*state=online/.test(await admin.info('replication')); i++) await new Promise((r) => setTimeout(r, 50));
  const conns: Redis[] = [];
  const servers: Array<{ close(): void }> = [];
  const stores: RedisStore[] = [];
  const urls = {} as Record<Mode, string>;
  const sent = {} as Record<Mode, { n: number }>;
  try {
    for (const mode of MODES) {
      const redis = new Redis(master.port, '127.0.0.1');
      conns.push(redis);
      sent[mode] = countCommands(redis);
      const store = new RedisStore({ redis, prefix: `bench-ra-${mode}:`, ...(mode === 'on' ? { replicaAcks: { replicas: 1, timeoutMs: 100 } } : {}) });
      stores.push(store);
      const app = express();
      app.use(bidiWeb({ store, onMessage: (session, data) => session.send(data).then(() => undefined) }));
      const server = await new Promise<ReturnType<typeof app.listen>>((resolve) => {
        const s = app.listen(0, '127.0.0.1', () => resolve(s));
      });
      servers.push(server);
      urls[mode] = `http://127.0.0.1:${(server.address() as AddressInfo).port}/session`;
    }
    console.log(`echo (client send → handler → session.send → client), master + 1 replica on loopback, ${ECHOES} echoes per session × ${ROUNDS} rounds per mode`);
    console.log(`${'sessions'.padEnd(9)}${'replicaAcks'.padEnd(13)}${'cmds/echo'.padStart(10)}${'WAIT/echo'.padStart(10)}${'p50 ms'.padStart(8)}${'p99 ms'.padStart(8)}${'echoes/s'.padStart(10)}`);
    for (const n of SESSIONS) {
      const acc: Record<Mode, { cmds: number[]; waits: number[]; lat: number[]; rate: number[] }> = {
        off: { cmds: [], waits: [], lat: [], rate: [] },
        on: { cmds: [], waits: [], lat: [], rate: [] },
      };
      for (let round = 0; round < ROUNDS; round++) {
        for (const mode of round % 2 === 0 ? MODES : ([...MODES].reverse() as Mode[])) {
          const clients: BidiClientSession[] = [];
          const waiting = new Map<BidiClientSession, { i: number; resolve: () => void }>();
          for (let k = 0; k < n; k++) {
            const c = open(urls[mode], { wait: 5000 });
            c.on('message', (data: unknown) => {
              const w = waiting.get(c);
              if (w && (data as { i: number }).i === w.i) {
                waiting.delete(c);
                w.resolve();
              }
            });
            clients.push(c);
          }
          await Promise.all(clients.map((c) => new Promise<void>((resolve) => (c.state === 'open' ? resolve() : c.on('open', () => resolve())))));
          // Warm up (script load, subscriptions), then measure.
          const run = async (count: number, lat?: number[]) =>
            Promise.all(
              clients.map(async (c) => {
                for (let i = 0; i < count; i++) {
                  const t0 = now();
                  const got = new Promise<void>((resolve) => waiting.set(c, { i, resolve }));
                  void c.send({ i });
                  await got;
                  lat?.push(now() - t0);
                }
              }),
            );
          await run(10);
          const waitsBefore = await waitCalls(admin);
          const cmdsBefore = sent[mode].n;
          const t0 = now();
          await run(ECHOES, acc[mode].lat);
          const wall = now() - t0;
          const echoes = ECHOES * n;
          acc[mode].cmds.push((sent[mode].n - cmdsBefore) / echoes);
          acc[mode].waits.push(((await waitCalls(admin)) - waitsBefore) / echoes);
          acc[mode].rate.push((echoes * 1000) / wall);
          await Promise.all(clients.map((c) => c.close()));
        }
      }
      for (const mode of MODES) {
        const p = percentiles(acc[mode].lat);
        console.log(
          `${String(n).padEnd(9)}${mode.padEnd(13)}${median(acc[mode].cmds).toFixed(1).padStart(10)}${median(acc[mode].waits).toFixed(1).padStart(10)}${p.p50.toFixed(2).padStart(8)}${p.p99.toFixed(2).padStart(8)}${median(acc[mode].rate).toFixed(0).padStart(10)}`,
        );
      }
    }
  } finally {
    for (const s of servers) s.close();
    await Promise.all(stores.map((s) => s.dispose()));
    for (const c of conns) c.disconnect();
    admin.disconnect();
    await replica.stop();
    await master.stop();
  }
}

void main().catch((err) => {
  console.error(err);
  process.exit(1);
});
