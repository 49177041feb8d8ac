/**
 * What a client that abuses WebSockets costs a server (docs/SECURITY.md,
 * "WebSockets"). A server process of its own (test/fixtures/ws-abuse-instance.ts,
 * bidiweb/ws attached, the peer's address as client key) is attacked from
 * 127.0.0.2, while a well-behaved client on 127.0.0.3 must still get in:
 *
 * 1. flood: `upgrades` upgrade requests on raw TCP connections that never
 *    send the hello and never read a byte;
 * 2. unread: `maxPerClient` real sockets of one session whose unacked log is
 *    ~1.6 MB, each sending `frames` watch frames (each answer ≈ 256 KiB,
 *    maxResponseBytes) and never reading one.
 *
 * The server's memory (after a full GC), TCP connections and sockets are
 * measured before, while the attack holds, and after its deadlines.
 *
 *   node scripts/run-ts.mjs test/security/ws-sockets-run.ts
 */
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import WebSocket from 'ws';
import { bundleEntry } from '../../samples/chat/bundle';
import { spawnListening } from '../helpers/instances';

export interface WsAbuseOptions {
  /** Upgrade requests of the flood. */
  upgrades: number;
  /** Watch frames each unread socket sends. */
  frames: number;
  maxSockets: number;
  maxPerClient: number;
  helloMs: number;
  drainTimeout: number;
}

export interface WsStats {
  heapUsed: number;
  external: number;
  rss: number;
  /** TCP connections of the HTTP server (upgraded ones included, until closed). */
  connections: number;
  /** Sockets the attach serves (`WsAttachment.sockets`). */
  sockets: number;
  /** Upgrades refused by the limits (`WsAttachment.refused`). */
  refused: number;
}

export interface WsAbuseResult {
  before: WsStats;
  flood: { held: WsStats; afterHello: WsStats; answers: Record<string, number>; goodClientMs: number };
  unread: { held: WsStats; settled: WsStats; goodClientMs: number; closedByServer: number };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ATTACKER = '127.0.0.2';
const GOOD = '127.0.0.3';

async function json(port: number, method: string, p: string, body?: unknown, localAddress?: string): Promise<any> {
  const http = await import('node:http');
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      { host: '127.0.0.1', port, method, path: p, localAddress, headers: { 'content-type': 'application/json', connection: 'close', ...(data ? { 'content-length': Buffer.byteLength(data) } : {}) } },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => (res.statusCode! < 300 ? resolve(JSON.parse(text)) : reject(new Error(`${method} ${p}: ${res.statusCode} ${text}`))));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

const stats = (port: number): Promise<WsStats> => json(port, 'GET', '/stats');

async function start(env: Record<string, string>): Promise<{ child: ChildProcess; port: number; bundle: string }> {
  // From the project root (jest and the runner both start there; this file may run bundled elsewhere).
  const bundle = bundleEntry(path.resolve('test/fixtures/ws-abuse-instance.ts'));
  return { ...(await spawnListening(bundle, env, { execArgv: ['--expose-gc'] })), bundle };
}

/** Opens a socket from `localAddress` and binds it to `sid`; resolves once the server's `ready` frame came. */
function openSocket(port: number, sid: string, localAddress: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/session/ws`, { localAddress });
    const timer = setTimeout(() => reject(new Error('no ready frame within 5 s')), 5_000);
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.once('open', () => ws.send(JSON.stringify({ sid })));
    ws.once('message', (data) => {
      clearTimeout(timer);
      if (String(data).includes('"ready":true')) resolve(ws);
      else reject(new Error(`not ready: ${String(data)}`));
    });
  });
}

/** The well-behaved client: opens a session, a socket, sends one message and waits for its echo. Resolves the time it took. */
async function goodClient(port: number): Promise<number> {
  const t0 = Date.now();
  const { sid } = await json(port, 'POST', '/session', { v: 1 }, GOOD);
  const ws = await openSocket(port, sid, GOOD);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no echo within 5 s')), 5_000);
      ws.on('message', (data) => {
        if (String(data).includes('"hello over ws"')) {
          clearTimeout(timer);
          resolve();
        }
      });
      ws.send('{"id":1,"watch":{"ack":0,"wait":5000,"stream":1}}');
      ws.send('{"id":2,"send":{"msgs":[[1,"hello over ws"]],"ack":0}}');
    });
  } finally {
    ws.terminate();
  }
  await json(port, 'DELETE', '/session', undefined, GOOD).catch(() => {});
  return Date.now() - t0;
}

export async function measureWsAbuse(o: WsAbuseOptions): Promise<WsAbuseResult> {
  const { child, port, bundle } = await start({
    MAX_SOCKETS: String(o.maxSockets),
    MAX_PER_CLIENT: String(o.maxPerClient),
    HELLO_MS: String(o.helloMs),
    DRAIN_TIMEOUT: String(o.drainTimeout),
  });
  const raw: net.Socket[] = [];
  const attackers: WebSocket[] = [];
  try {
    const before = await stats(port);

    // 1. The flood: upgrades that never say hello and never read.
    const answers: Record<string, number> = {};
    const handshake =
      `GET /session/ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
    for (let i = 0; i < o.upgrades; i++) {
      const s = net.connect({ port, host: '127.0.0.1', localAddress: ATTACKER });
      s.on('error', () => {});
      // Only the status line is looked at (the attacker reads nothing else: no hello, no frames).
      s.once('data', (c: Buffer) => {
        const status = /^HTTP\/1\.1 (\d+)/.exec(c.toString('latin1'))?.[1] ?? '?';
        answers[status] = (answers[status] ?? 0) + 1;
        s.pause();
      });
      s.write(handshake);
      raw.push(s);
      if (i % 50 === 49) await sleep(20);
    }
    await sleep(500);
    const floodHeld = await stats(port);
    const floodGoodMs = await goodClient(port);
    await sleep(o.helloMs + 500);
    const afterHello = await stats(port);
    for (const s of raw) s.destroy();
    raw.length = 0;
    await sleep(300);

    // 2. Sockets that ask and never read.
    const { sid } = await json(port, 'POST', '/session', { v: 1 }, ATTACKER);
    await json(port, 'POST', '/fill', { sid, count: 200, size: 8000 }, ATTACKER);
    let closedByServer = 0;
    for (let k = 0; k < o.maxPerClient; k++) {
      const ws = await openSocket(port, sid, ATTACKER);
      ws.on('close', () => closedByServer++);
      ws.on('error', () => {});
      ws.pause(); // never read another byte
      for (let i = 1; i <= o.frames; i++) ws.send(`{"id":${i},"watch":{"ack":0,"wait":0}}`);
      attackers.push(ws);
    }
    await sleep(1_000);
    const unreadHeld = await stats(port);
    const unreadGoodMs = await goodClient(port);
    await sleep(o.drainTimeout + 2_000);
    const settled = await stats(port);
    // The attacker's side learns of the server's resets only once it reads again.
    for (const ws of attackers) ws.resume();
    for (let i = 0; i < 50 && closedByServer < attackers.length; i++) await sleep(100);
    return {
      before,
      flood: { held: floodHeld, afterHello, answers, goodClientMs: floodGoodMs },
      unread: { held: unreadHeld, settled, goodClientMs: unreadGoodMs, closedByServer },
    };
  } finally {
    for (const s of raw) s.destroy();
    for (const ws of attackers) ws.terminate();
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(5_000).then(() => child.kill('SIGKILL'))]);
    rmSync(path.dirname(bundle), { recursive: true, force: true });
  }
}

export function formatWsAbuse(o: WsAbuseOptions, r: WsAbuseResult): string {
  const MiB = 1024 * 1024;
  const d = (s: WsStats, k: 'heapUsed' | 'external' | 'rss') => ((s[k] - r.before[k]) / MiB).toFixed(1);
  const line = (label: string, s: WsStats) =>
    `  ${label}: heap +${d(s, 'heapUsed')} MiB, external +${d(s, 'external')} MiB, rss +${d(s, 'rss')} MiB, TCP connections ${s.connections}, sockets ${s.sockets}, refused ${s.refused}`;
  return [
    `limits: maxSockets ${o.maxSockets}, maxSocketsPerClient ${o.maxPerClient}, helloTimeoutMs ${o.helloMs}, drainTimeout ${o.drainTimeout}`,
    `flood: ${o.upgrades} upgrades from one client, no hello, never read; answers ${JSON.stringify(r.flood.answers)}`,
    line('held', r.flood.held),
    line(`after helloTimeoutMs`, r.flood.afterHello),
    `  a second client connected and got its echo in ${r.flood.goodClientMs} ms`,
    `unread: ${o.maxPerClient} sockets × ${o.frames} watch frames on a 1.6 MB unacked log, never read`,
    line('held', r.unread.held),
    line(`after drainTimeout`, r.unread.settled),
    `  a second client connected and got its echo in ${r.unread.goodClientMs} ms; attacker sockets closed by the server: ${r.unread.closedByServer}`,
  ].join('\n');
}
