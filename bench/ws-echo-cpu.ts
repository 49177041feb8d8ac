// Server and client CPU per WebSocket echo round trip, one server process, one client process, for
// three servers: bidiweb (MemoryStore, bidiweb/ws), Socket.IO 4 over WebSocket, and `floor`: a bare
// `ws` server that answers bidiweb's frames as bidiweb/ws would, without the core (no store, no
// handler), so the difference between `floor` and `bidi` is the core's exactly-once work.
// Not part of `npm run bench` (no proxy, no Redis); see docs/BENCHMARKS.md, "Client CPU per request".
//
//   npx tsx bench/ws-echo-cpu.ts [bidi,sio,floor] [sessions=50] [echoes=300] [rounds=5] [pairs=2]
//
// The systems alternate; each prints the median of `rounds` measured rounds (after one warm-up).
import { fork, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server as SioServer } from 'socket.io';
import { io as sioClient } from 'socket.io-client';
import WebSocket, { WebSocketServer } from 'ws';
import { open, type WebSocketConstructorLike } from '../src/client';
import { createBidiServer } from '../src/core';
import { createNodeHandler } from '../src/node';
import { attach } from '../src/ws';

type System = 'bidi' | 'sio' | 'floor';

/** The open answer the floor server gives (a MemoryStore server's, with a fresh sid each). */
const LIMITS = '{"maxBodyBytes":1048576,"maxMessageBytes":262144,"maxMessagesPerRequest":100,"inboundWindow":256,"inboundBufferBytes":4194304,"maxMessagesPerResponse":500,"maxResponseBytes":262144,"maxUnackedMessages":1024,"maxUnackedBytes":4194304,"maxJsonDepth":64,"maxWait":55000,"idleTimeout":120000,"leaseMs":5000}';

function serve(system: System): void {
  const server = http.createServer();
  if (system === 'bidi') {
    const bidi = createBidiServer({ path: '/bidi', sweepInterval: 0, onMessage: (session, data) => void session.send(data).catch(() => {}) });
    const handle = createNodeHandler(bidi);
    server.on('request', (req, res) => void handle(req, res));
    attach(server, bidi);
  } else if (system === 'sio') {
    const io = new SioServer(server, { transports: ['websocket'] });
    io.on('connection', (s) => s.on('echo', (d: unknown) => s.emit('echo', d)));
  } else {
    let opened = 0;
    server.on('request', (req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(req.method === 'POST' && req.url === '/bidi' ? 201 : 200, { 'content-type': 'application/json' });
        res.end(req.method === 'POST' && req.url === '/bidi' ? `{"sid":"floor${String(++opened).padStart(17, '0')}","v":1,"wait":25000,"limits":${LIMITS}}` : '{}');
      });
    });
    const wss = new WebSocketServer({ noServer: true });
    server.on('upgrade', (req, socket, head) =>
      wss.handleUpgrade(req, socket, head, (ws) => {
        let watchId = 0;
        let out = 0;
        let hello = false;
        ws.on('message', (raw) => {
          const frame = raw.toString();
          if (!hello) {
            hello = true;
            ws.send('{"ready":true,"v":1}');
            return;
          }
          const m = /^\{"id":(\d+),"(send|watch|cancel)":/.exec(frame);
          if (!m || m[2] === 'cancel') return;
          const id = Number(m[1]);
          if (m[2] === 'watch') {
            watchId = id;
            ws.send('{"id":' + id + ',"hb":25000}');
            return;
          }
          const [seq, data] = (JSON.parse(frame.slice(m[0].length, -1)) as { msgs: [number, unknown][] }).msgs[0]!;
          out++;
          ws.send('{"id":' + watchId + ',"frame":{"msgs":[[' + out + ',' + JSON.stringify(data) + ']],"ack":' + seq + '}}\n{"id":' + id + ',"status":200,"body":{"ack":' + seq + '}}');
        });
      }),
    );
  }
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as AddressInfo).port }));
  process.on('message', (m: { cpu?: boolean }) => {
    if (m.cpu) {
      const c = process.cpuUsage();
      process.send!({ cpu: c.user + c.system });
    }
  });
}

interface Echoer {
  send(k: number, r: number): void;
  next(): Promise<void>;
  close(): void;
}

async function clients(system: System, port: number, n: number): Promise<Echoer[]> {
  return Promise.all(
    Array.from({ length: n }, async (): Promise<Echoer> => {
      let waiter: (() => void) | undefined;
      const wake = (): void => {
        const w = waiter;
        waiter = undefined;
        w?.();
      };
      const next = (): Promise<void> => new Promise<void>((resolve) => (waiter = resolve));
      if (system === 'sio') {
        const s = sioClient(`http://127.0.0.1:${port}`, { transports: ['websocket'], forceNew: true });
        s.on('echo', wake);
        await new Promise<void>((resolve) => s.once('connect', () => resolve()));
        return { send: (k, r) => void s.emit('echo', { e: 1, r, k, t: performance.now() }), next, close: () => void s.close() };
      }
      const s = open(`http://127.0.0.1:${port}/bidi`, { transport: 'websocket', WebSocket: WebSocket as unknown as WebSocketConstructorLike });
      s.on('message', wake);
      await new Promise<void>((resolve, reject) => {
        s.once('open', () => resolve());
        s.once('close', (e) => reject(new Error(`closed: ${e.code}`)));
      });
      return { send: (k, r) => void s.send({ e: 1, r, k, t: performance.now() }).catch(() => {}), next, close: () => void s.close() };
    }),
  );
}

function ask<T>(child: ChildProcess, message: object, key: string): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: Record<string, unknown>): void => {
      if (key in m) {
        child.off('message', on);
        resolve(m[key] as T);
      }
    };
    child.on('message', on);
    child.send(message);
  });
}

async function measure(system: System, sessions: number, echoes: number, rounds: number): Promise<{ server: number; client: number }> {
  const child = fork(process.argv[1]!, ['--serve', system], { stdio: 'inherit' });
  const port = await new Promise<number>((resolve) => child.once('message', (m: { port: number }) => resolve(m.port)));
  const list = await clients(system, port, sessions);
  const run = (): Promise<unknown> =>
    Promise.all(
      list.map(async (c, k) => {
        for (let r = 0; r < echoes; r++) {
          const got = c.next();
          c.send(k, r);
          await got;
        }
      }),
    );
  await run();
  const server: number[] = [];
  const client: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const s0 = await ask<number>(child, { cpu: true }, 'cpu');
    const c0 = process.cpuUsage();
    await run();
    const c = process.cpuUsage(c0);
    const s1 = await ask<number>(child, { cpu: true }, 'cpu');
    server.push((s1 - s0) / (sessions * echoes));
    client.push((c.user + c.system) / (sessions * echoes));
  }
  for (const c of list) c.close();
  child.kill();
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  return { server: median(server), client: median(client) };
}

async function main(): Promise<void> {
  const [systemsArg = 'bidi,sio,floor', sessions = '50', echoes = '300', rounds = '5', pairs = '2'] = process.argv.slice(2);
  const systems = systemsArg.split(',') as System[];
  for (let p = 0; p < Number(pairs); p++) {
    for (const system of systems) {
      const r = await measure(system, Number(sessions), Number(echoes), Number(rounds));
      console.log(`${system.padEnd(6)} server ${r.server.toFixed(1).padStart(6)} µs/rt   client ${r.client.toFixed(1).padStart(6)} µs/rt`);
    }
  }
  process.exit(0);
}

if (process.argv[2] === '--serve') serve(process.argv[3] as System);
else void main().catch((err) => {
  console.error(err);
  process.exit(1);
});
