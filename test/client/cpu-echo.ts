/**
 * Client CPU per echo round trip, by transport and watch mode (a measurement,
 * not a test: nothing is asserted). An Express server with MemoryStore runs in
 * a child process; this process runs the clients and counts its own CPU
 * (process.cpuUsage) over the echo phase only.
 *
 *   npx tsx test/client/cpu-echo.ts [clients=20] [echoes=200] [measured rounds=1]
 *
 * With several measured rounds (the modes alternate within each), each row is the median.
 *
 * Rows: the old default (global fetch, plain watches), the new default
 * (node:http, stream 'auto'), the two mixed cases, and `transport:
 * 'websocket'` (the `ws` package's WebSocket; the server attaches bidiweb/ws).
 */
import { fork } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { WebSocketConstructorLike } from '../../src/client';

async function server(): Promise<void> {
  const { default: express } = await import('express');
  const { bidiWeb } = await import('../../src/express');
  const { attach } = await import('../../src/ws');
  const app = express();
  const mw = bidiWeb({ sweepInterval: 0, onMessage: (s, m) => void s.send({ e: m }) });
  app.use(mw);
  const srv = http.createServer(app);
  attach(srv, mw);
  srv.listen(0, '127.0.0.1', () => process.send!({ port: (srv.address() as AddressInfo).port }));
}

async function main(): Promise<void> {
  const { open } = await import('../../src/client');
  const { default: WebSocket } = await import('ws');
  const clients = Number(process.argv[2] ?? 20);
  const echoes = Number(process.argv[3] ?? 200);
  const child = fork(__filename, ['--server'], { stdio: 'inherit' });
  const port = await new Promise<number>((resolve) => child.once('message', (m: any) => resolve(m.port)));
  const url = `http://127.0.0.1:${port}/session`;
  const globalFetch = (u: string, init: any) => fetch(u, init);
  const modes = [
    { name: 'before: global fetch, plain watch', fetch: globalFetch, stream: false },
    { name: 'global fetch, stream auto', fetch: globalFetch, stream: 'auto' as const },
    { name: 'node:http, plain watch', stream: false },
    { name: 'after (default): node:http, stream auto', stream: 'auto' as const },
    { name: "transport: 'websocket' (ws)", stream: 'auto' as const, websocket: true },
  ];
  const measured = Math.max(1, Number(process.argv[4] ?? 1));
  const results = new Map<string, { us: number[]; perSec: number[]; streaming: string }>();
  for (let round = 0; round <= measured; round++) {
    for (const m of modes) {
      const sessions = Array.from({ length: clients }, () =>
        open(url, {
          stream: m.stream,
          ...(m.fetch ? { fetch: m.fetch } : {}),
          ...('websocket' in m ? { transport: 'websocket' as const, WebSocket: WebSocket as unknown as WebSocketConstructorLike } : {}),
        }),
      );
      await Promise.all(sessions.map((s) => new Promise<void>((r) => s.once('open', () => r()))));
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      await Promise.all(
        sessions.map(async (s) => {
          for (let i = 0; i < echoes; i++) {
            const got = new Promise<void>((r) => {
              const on = (d: any) => {
                if (d.e === i) {
                  s.off('message', on);
                  r();
                }
              };
              s.on('message', on);
            });
            void s.send(i);
            await got;
          }
        }),
      );
      const ms = performance.now() - t0;
      const cpu = process.cpuUsage(cpu0);
      const n = clients * echoes;
      const streaming = sessions.filter((s) => s.streaming).length;
      await Promise.all(sessions.map((s) => s.close()));
      const us = (cpu.user + cpu.system) / n;
      const perSec = n / (ms / 1000);
      const row = `${m.name.padEnd(42)} ${us.toFixed(0).padStart(5)} µs/rt   ${perSec.toFixed(0).padStart(6)} rt/s   streaming ${streaming}/${clients}`;
      if (round > 0) {
        const r = results.get(m.name) ?? { us: [], perSec: [], streaming: '' };
        r.us.push(us);
        r.perSec.push(perSec);
        r.streaming = `${streaming}/${clients}`;
        results.set(m.name, r);
      }
      console.log(`${round === 0 ? 'warm-up ' : 'measured'} ${row}`);
    }
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const rows = [...results].map(([name, r]) => `${name.padEnd(42)} ${median(r.us).toFixed(0).padStart(5)} µs/rt   ${median(r.perSec).toFixed(0).padStart(6)} rt/s   streaming ${r.streaming}`);
  console.log(`\n${clients} clients × ${echoes} echoes, client CPU per round trip (${measured === 1 ? 'the measured round' : `medians of ${measured} measured rounds`}):\n${rows.join('\n')}`);
  child.kill();
}

if (process.argv.includes('--server')) void server();
else void main().catch((e) => {
  console.error(e);
  process.exit(1);
});
