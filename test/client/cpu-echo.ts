/**
 * Client CPU per echo round trip, by transport and watch mode (a measurement,
 * not a test: nothing is asserted). An Express server with MemoryStore runs in
 * a child process; this process runs the clients and counts its own CPU
 * (process.cpuUsage) over the echo phase only.
 *
 *   npx tsx test/client/cpu-echo.ts [clients=20] [echoes=200]
 *
 * Rows: the old default (global fetch, plain watches), the new default
 * (node:http, stream 'auto'), and the two mixed cases.
 */
import { fork } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

async function server(): Promise<void> {
  const { default: express } = await import('express');
  const { bidiWeb } = await import('../../src/express');
  const app = express();
  app.use(bidiWeb({ sweepInterval: 0, onMessage: (s, m) => void s.send({ e: m }) }));
  const srv = http.createServer(app);
  srv.listen(0, '127.0.0.1', () => process.send!({ port: (srv.address() as AddressInfo).port }));
}

async function main(): Promise<void> {
  const { open } = await import('../../src/client');
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
  ];
  const rows: string[] = [];
  for (let round = 0; round < 2; round++) {
    for (const m of modes) {
      const sessions = Array.from({ length: clients }, () =>
        open(url, { stream: m.stream, ...(m.fetch ? { fetch: m.fetch } : {}) }),
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
      const row = `${m.name.padEnd(42)} ${((cpu.user + cpu.system) / n).toFixed(0).padStart(5)} µs/rt   ${(n / (ms / 1000)).toFixed(0).padStart(6)} rt/s   streaming ${streaming}/${clients}`;
      if (round === 1) rows.push(row);
      console.log(`${round === 0 ? 'warm-up ' : 'measured'} ${row}`);
    }
  }
  console.log(`\n${clients} clients × ${echoes} echoes, client CPU per round trip (round 2):\n${rows.join('\n')}`);
  child.kill();
}

if (process.argv.includes('--server')) void server();
else void main().catch((e) => {
  console.error(e);
  process.exit(1);
});
