/**
 * Rough cost of observing (not a test; nothing asserted): the same open +
 * send + watch loop through the core on MemoryStore, with nothing observing
 * (the default: one boolean check per call site, store unwrapped), with an
 * OpenTelemetry meter, and with `bidiweb:*` debug logging into a no-op sink.
 *
 *   npx tsx bench/observe-overhead.ts [rounds=3] [sessions=2000]
 */
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import createDebug from 'debug';
import { createBidiServer, SID_HEADER } from '../src/index';
import type { BidiOptions, BidiRequest } from '../src/index';

const rounds = Number(process.argv[2] ?? 3);
const sessions = Number(process.argv[3] ?? 2000);

function req(method: string, path: string, sid: string | undefined, body: string, query = ''): BidiRequest {
  const headers = new Headers({ 'content-type': 'application/json' });
  if (sid) headers.set(SID_HEADER, sid);
  return { method, path, query: new URLSearchParams(query), headers, text: async () => body } as unknown as BidiRequest;
}

async function run(options: BidiOptions): Promise<number> {
  const server = createBidiServer({ sweepInterval: 0, openLimit: false, limits: { maxSessions: 1_000_000 }, onMessage: async (s, d) => void (await s.send(d)), ...options });
  const t0 = performance.now();
  for (let i = 0; i < sessions; i++) {
    const opened = await server.handle(req('POST', '/session', undefined, '{"v":1}'));
    const sid = JSON.parse(opened!.body as string).sid as string;
    await server.handle(req('POST', '/session/send', sid, '{"msgs":[[1,"a"],[2,"b"],[3,"c"]]}'));
    await server.handle(req('GET', '/session/watch', sid, '', 'ack=0&wait=1000'));
  }
  const us = ((performance.now() - t0) * 1000) / sessions;
  await server.dispose();
  return us;
}

async function main(): Promise<void> {
  const provider = new MeterProvider();
  const quiet = (ns: string) => Object.assign(createDebug(ns), { log: () => {} });
  createDebug.enable('bidiweb:*');
  const configs: Array<[string, () => BidiOptions]> = [
    ['off (no meter, DEBUG off)', () => ({ debug: false })],
    ['meter (OpenTelemetry SDK)', () => ({ debug: false, meter: provider.getMeter('bench') })],
    ['DEBUG=bidiweb:* (no-op sink)', () => ({ debug: quiet })],
  ];
  await run({ debug: false }); // warm-up
  for (const [name, options] of configs) {
    const times: number[] = [];
    for (let r = 0; r < rounds; r++) times.push(await run(options()));
    times.sort((a, b) => a - b);
    console.log(`${name.padEnd(30)} median ${times[Math.floor(times.length / 2)]!.toFixed(1)}, best ${times[0]!.toFixed(1)} µs per session (open + send of 3 + watch), ${rounds} rounds of ${sessions}`);
  }
  await provider.shutdown();
}

void main();
