/**
 * What watches that are never read cost a server (docs/SECURITY.md, "Watches
 * that are never read"). A server process of its own (test/fixtures/
 * abuse-instance.ts) gets one session whose unacked log is filled to ~4 MB;
 * then `sockets` raw TCP connections each send `GET /session/watch?ack=0`
 * and never read a byte. Its memory (after a full GC) is measured before and
 * while they hang there, and again once its drain deadline has passed.
 *
 *   node scripts/run-ts.mjs test/security/watch-memory-run.ts [sockets] [--stream] [--max-response-bytes N] [--drain-timeout MS] [--settle MS]
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { bundleEntry } from '../../samples/chat/bundle';
import { spawnListening } from '../helpers/instances';

export interface WatchMemoryOptions {
  sockets: number;
  stream?: boolean;
  /** limits.maxResponseBytes of the server (default: the library's). */
  maxResponseBytes?: number;
  /** drainTimeout of the server, ms (default: the library's). */
  drainTimeout?: number;
  /** After the sockets hang, wait this long before the second look (past the drain deadline). */
  settleMs?: number;
  redisPort?: number;
}

export interface Stats {
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  rss: number;
  connections: number;
  /** Bytes queued in the kernel's send buffers of the server's sockets (Linux `ss`; -1 where unavailable). */
  kernelSendQueue: number;
}

/** The sum of Send-Q over the server's TCP sockets, from `ss` (Linux). */
function kernelSendQueue(port: number): number {
  try {
    const out = execFileSync('ss', ['-Htn', 'sport', '=', `:${port}`], { encoding: 'utf8', timeout: 5_000 });
    let sum = 0;
    for (const line of out.split('\n')) {
      const cols = line.trim().split(/\s+/);
      if (cols.length >= 3) sum += Number(cols[2]) || 0;
    }
    return sum;
  } catch {
    return -1;
  }
}

async function stats(port: number): Promise<Stats> {
  const s = (await json(port, 'GET', '/stats')) as Omit<Stats, 'kernelSendQueue'>;
  return { ...s, kernelSendQueue: kernelSendQueue(port) };
}

export interface WatchMemoryResult {
  logBytes: number;
  before: Stats;
  /** While every socket hangs unread (1 s after the last request). */
  held: Stats;
  /** `settleMs` later. */
  settled?: Stats;
}

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function json(port: number, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<any> {
  const res = await fetch(`http://127.0.0.1:${port}${p}`, {
    method,
    headers: { 'content-type': 'application/json', connection: 'close', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text}`);
  return JSON.parse(text);
}

async function start(env: Record<string, string>): Promise<{ child: ChildProcess; port: number; bundle: string }> {
  // From the project root (jest and the runner both start there; this file may run bundled elsewhere).
  const bundle = bundleEntry(path.resolve('test/fixtures/abuse-instance.ts'));
  return { ...(await spawnListening(bundle, env, { execArgv: ['--expose-gc'] })), bundle };
}

export async function measureWatchMemory(o: WatchMemoryOptions): Promise<WatchMemoryResult> {
  const env: Record<string, string> = {};
  if (o.maxResponseBytes !== undefined) env.MAX_RESPONSE_BYTES = String(o.maxResponseBytes);
  if (o.drainTimeout !== undefined) env.DRAIN_TIMEOUT = String(o.drainTimeout);
  if (o.redisPort !== undefined) env.REDIS_PORT = String(o.redisPort);
  const { child, port, bundle } = await start(env);
  const sockets: net.Socket[] = [];
  try {
    const { sid } = await json(port, 'POST', '/session', { v: 1 });
    // 250 messages of 16 000 characters: ~4 MB unacked, under maxUnackedBytes (4 MiB).
    const count = 250;
    const size = 16_000;
    await json(port, 'POST', '/fill', { sid, count, size });
    const before = await stats(port);
    const request = `GET /session/watch?ack=0&wait=5000${o.stream ? '&stream=1' : ''} HTTP/1.1\r\nHost: 127.0.0.1\r\nbidi-sid: ${sid}\r\n\r\n`;
    for (let i = 0; i < o.sockets; i++) {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => {});
      s.pause(); // never read a byte
      s.write(request);
      sockets.push(s);
      if (i % 50 === 49) await sleep(20);
    }
    await sleep(1_000);
    const held = await stats(port);
    let settled: Stats | undefined;
    if (o.settleMs) {
      await sleep(o.settleMs);
      settled = await stats(port);
    }
    return { logBytes: count * (size + 2), before, held, ...(settled ? { settled } : {}) };
  } finally {
    for (const s of sockets) s.destroy();
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(5_000).then(() => child.kill('SIGKILL'))]);
    rmSync(path.dirname(bundle), { recursive: true, force: true });
  }
}

export function formatWatchMemory(o: WatchMemoryOptions, r: WatchMemoryResult): string {
  const d = (a: Stats, k: keyof Stats) => ((a[k] - r.before[k]) / MiB).toFixed(1);
  const line = (label: string, s: Stats) =>
    `${label}: heap +${d(s, 'heapUsed')} MiB, external +${d(s, 'external')} MiB, rss +${d(s, 'rss')} MiB, connections ${s.connections}` +
    (s.kernelSendQueue >= 0 ? `, kernel send queues ${(s.kernelSendQueue / MiB).toFixed(1)} MiB` : '');
  return [
    `${o.sockets} unread ${o.stream ? 'streaming ' : ''}watches on a ${(r.logBytes / MiB).toFixed(1)} MiB unacked log` +
      ` (maxResponseBytes ${o.maxResponseBytes ?? 'default'}, drainTimeout ${o.drainTimeout ?? 'default'})`,
    line('  held', r.held),
    ...(r.settled ? [line(`  ${o.settleMs} ms later`, r.settled)] : []),
  ].join('\n');
}

