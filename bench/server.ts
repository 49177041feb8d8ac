/**
 * One server under test, in its own process (forked by bench/main.ts):
 *
 *   server.js plain                 a plain Node HTTP echo: the floor
 *   server.js bidi                  bidiweb over node:http (STORE=memory | redis; WS=1: bidiweb/ws upgrades too;
 *                                   SWEEP=0: no sweep timer; LINGER_MS: subscriptionLingerMs)
 *   server.js sio                   Socket.IO 4 (ADAPTER=redis: redis streams adapter);
 *                                   two of them behind bench/proxy.ts in sticky mode are
 *                                   the multi-instance reference
 *   server.js sio-sticky            Socket.IO 4 in a cluster of WORKERS workers behind
 *                                   @socket.io/sticky (the primary is the balancer),
 *                                   with the redis streams adapter: the weaker baseline
 *
 * Every app does the same thing: echo what a client sends, and push to its
 * clients when the bench asks (`push`, `burst`). Messages carry `t`, a
 * CLOCK_MONOTONIC time stamp, so the client can compute latencies.
 */
import cluster from 'node:cluster';
import v8 from 'node:v8';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Redis from 'ioredis';
import { createBidiServer, type BidiServer } from '../src/core';
import { createNodeHandler } from '../src/node';
import { attach } from '../src/ws';
import { RedisStore } from '../src/redis';
import { cpuKernelMs, cpuMs, memory, now, serve, sleep, type Handlers } from './lib';

const mode = process.argv[2] ?? 'plain';
/**
 * bidiweb burst: publishes in flight at once. Default: all of them, as Socket.IO's burst calls
 * `io.emit` in a loop without waiting (`--burst-inflight=N` in bench/main.ts sets it).
 */
const BURST_INFLIGHT = process.env.BURST_INFLIGHT ? Number(process.env.BURST_INFLIGHT) : Infinity;
const env = process.env;

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

/** Requests being served right now (for bidiweb: mostly waiting watches). */
let inflight = 0;
function track(server: http.Server): void {
  server.on('request', (_req, res) => {
    inflight++;
    res.once('close', () => inflight--);
  });
}

const common: Handlers = {
  mem: () => memory(),
  /** A heap snapshot for bench/heap-top.mjs. */
  snapshot: ({ file }: { file: string }) => {
    memory();
    return v8.writeHeapSnapshot(file);
  },
  cpu: () => cpuMs(),
  cpuKernel: () => cpuKernelMs(),
  inflight: () => inflight,
  ping: () => 'pong',
};

// --- plain HTTP: the floor ------------------------------------------------------------

async function plain(): Promise<void> {
  const server = http.createServer((req, res) => {
    if (req.url === '/hold') return; // held until the client goes away: the memory floor of a waiting request
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = chunks.length ? Buffer.concat(chunks) : Buffer.from('{}');
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 60_000;
  track(server);
  serve(common);
  process.send!({ ready: true, port: await listen(server) });
}

// --- bidiweb ---------------------------------------------------------------------------

/** Counts the commands this process sends to Redis, and its round trips (a pipeline is one). */
class CommandCounter {
  commands: Record<string, number> = {};
  roundTrips = 0;
  private readonly pipelines = new WeakSet<object>();

  wrap(redis: Redis): void {
    const original = redis.sendCommand.bind(redis);
    redis.sendCommand = ((command: { name: string }, stream?: object, node?: unknown) => {
      this.commands[command.name] = (this.commands[command.name] ?? 0) + 1;
      if (!stream) this.roundTrips++;
      else if (!this.pipelines.has(stream)) {
        this.pipelines.add(stream);
        this.roundTrips++;
      }
      return (original as (...a: unknown[]) => unknown)(command, stream, node);
    }) as Redis['sendCommand'];
  }

  take(): { commands: Record<string, number>; roundTrips: number } {
    const out = { commands: this.commands, roundTrips: this.roundTrips };
    this.commands = {};
    this.roundTrips = 0;
    return out;
  }
}

async function bidi(): Promise<void> {
  const counter = new CommandCounter();
  let store: RedisStore | undefined;
  let redis: Redis | undefined;
  if (env.STORE === 'redis') {
    redis = new Redis({ host: '127.0.0.1', port: Number(env.REDIS_PORT), maxRetriesPerRequest: null });
    const subscriber = new Redis({ host: '127.0.0.1', port: Number(env.REDIS_PORT), maxRetriesPerRequest: null });
    counter.wrap(redis);
    counter.wrap(subscriber);
    // Built untyped on purpose: store options come and go while the store changes; unknown ones are ignored.
    const storeOptions: Record<string, unknown> = { redis, subscriber, prefix: env.PREFIX ?? 'bench:' };
    if (env.LINGER_MS) storeOptions.subscriptionLingerMs = Number(env.LINGER_MS);
    store = new RedisStore(storeOptions as unknown as ConstructorParameters<typeof RedisStore>[0]);
  }
  const server: BidiServer = createBidiServer({
    ...(store ? { store } : {}),
    ...(env.WAIT ? { wait: Number(env.WAIT) } : {}),
    limits: { maxSessions: 1_000_000 },
    // SWEEP=0 (the store-cost instances): no sweep timer, so nothing but the measured requests reaches Redis.
    ...(env.SWEEP ? { sweepInterval: Number(env.SWEEP) } : {}),
    onError: (err) => console.error('[bench bidi]', err),
    async onMessage(session, data) {
      // Echo messages that ask for it; others are only delivered (for the store-cost counts). Not awaited, as
      // the README's echo: a server that stores a pending send with the delivery record does so. HANDLER_SEND=await
      // (`--handler-send=await`): awaited, each send stored on its own before the delivery is recorded.
      if (data && typeof data === 'object' && (data as { e?: unknown }).e) {
        if (env.HANDLER_SEND === 'await') await session.send(data);
        else void session.send(data).catch((err: unknown) => console.error('[bench bidi] send', err));
      }
    },
  });
  const handle = createNodeHandler(server);
  const httpServer = http.createServer((req, res) => {
    handle(req, res).then(
      (handled) => {
        if (!handled) {
          res.statusCode = 404;
          res.end();
        }
      },
      (err) => {
        console.error('[bench bidi]', err);
        res.statusCode = 500;
        res.end();
      },
    );
  });
  httpServer.keepAliveTimeout = 60_000;
  httpServer.maxConnections = 100_000;
  track(httpServer);

  serve({
    ...common,
    /** Every `intervalMs`, one message to each sid (one broadcast), `ticks` times. */
    async push({ sids, ticks, intervalMs }: { sids: string[]; ticks: number; intervalMs: number }) {
      const start = now();
      const sends: Promise<unknown>[] = [];
      let failed = 0;
      for (let i = 0; i < ticks; i++) {
        const due = start + i * intervalMs;
        const wait = due - now();
        if (wait > 0) await sleep(wait);
        sends.push(server.hub.broadcast(sids, { i, t: now() }).then((r) => (failed += r.failed.length)));
      }
      await Promise.all(sends);
      return { failed, ms: now() - start };
    },
    /**
     * `count` messages to each sid, as fast as the store takes them, up to `inflight` at a time (default: all
     * at once, as a loop of unawaited `hub.publish` calls; they stay in order: sends through one server object
     * keep their call order, README "Guarantees"). As Socket.IO's `io.emit` fans out to a room,
     * the sids first join one group (not timed) and each message is one `hub.publish` to it, written once
     * whatever the group's size; `fanout: 'broadcast'` (or BURST_FANOUT=broadcast): one `hub.broadcast(sids)` per message instead.
     */
    async burst({ sids, count, inflight = BURST_INFLIGHT, fanout = env.BURST_FANOUT }: { sids: string[]; count: number; inflight?: number; fanout?: string }) {
      const group = fanout === 'broadcast' ? undefined : `burst-${process.pid}-${now().toFixed(0)}`;
      if (group) await Promise.all(sids.map((sid) => server.hub.join(sid, group)));
      const start = now();
      let failed = 0;
      let next = 0;
      await Promise.all(
        Array.from({ length: Math.min(inflight, count) }, async () => {
          while (next < count) {
            const i = next++;
            const r = group ? await server.hub.publish(group, { i, t: now() }) : await server.hub.broadcast(sids, { i, t: now() });
            failed += r.failed.length;
          }
        }),
      );
      // No leave afterwards: leaving drops what a member has not pulled yet (docs/STORE.md, "Groups"); the
      // group is fresh per burst, and its log goes with its members' sessions.
      return { failed, ms: now() - start };
    },
    /** Joins every sid to `group`, `inflight` at a time (store-cost setup). */
    async join({ sids, group, inflight = 50 }: { sids: string[]; group: string; inflight?: number }) {
      let next = 0;
      let joined = 0;
      await Promise.all(
        Array.from({ length: Math.min(inflight, sids.length) }, async () => {
          while (next < sids.length) if (await server.hub.join(sids[next++]!, group)) joined++;
        }),
      );
      return joined;
    },
    /** `count` sequential `hub.publish(group, …)` calls; `loop`: all of them at once, none awaited before the next. */
    async publish({ group, count, loop = false }: { group: string; count: number; loop?: boolean }) {
      const start = now();
      let sent = 0;
      let failed = 0;
      const results = [];
      for (let i = 0; i < count; i++) {
        const r = server.hub.publish(group, { g: group, i, t: now() });
        results.push(loop ? r : await r);
      }
      for (const r of await Promise.all(results)) {
        sent += r.sent;
        failed += r.failed.length;
      }
      return { sent, failed, ms: now() - start };
    },
    commands: () => counter.take(),
  });
  // WS=1: WebSocket upgrades at /session/ws too (bidiweb/ws), for clients with transport: 'websocket'.
  if (env.WS === '1') attach(httpServer, server);
  process.send!({ ready: true, port: await listen(httpServer) });
}

// --- Socket.IO -------------------------------------------------------------------------

async function makeIo(httpServer: http.Server) {
  const { Server } = await import('socket.io');
  // CSR=1: Socket.IO's connection state recovery (missed packets replayed to a client that reconnects in time).
  const io = new Server(httpServer, {
    serveClient: false,
    transports: ['polling', 'websocket'],
    ...(env.CSR === '1' ? { connectionStateRecovery: { maxDisconnectionDuration: 120_000 } } : {}),
  });
  if (env.ADAPTER === 'redis') {
    const { createAdapter } = await import('@socket.io/redis-streams-adapter');
    const redis = new Redis({ host: '127.0.0.1', port: Number(env.REDIS_PORT), maxRetriesPerRequest: null });
    io.adapter(createAdapter(redis, { streamName: `${env.PREFIX ?? 'bench:'}sio` }) as any);
  }
  io.on('connection', (socket) => {
    socket.on('m', (data: unknown) => socket.emit('m', data));
  });
  const handlers: Handlers = {
    ...common,
    clients: () => io.engine.clientsCount,
    /** Every `intervalMs`, one message to every client (all instances, through the adapter), `ticks` times. */
    async push({ ticks, intervalMs }: { ticks: number; intervalMs: number }) {
      const start = now();
      for (let i = 0; i < ticks; i++) {
        const due = start + i * intervalMs;
        const wait = due - now();
        if (wait > 0) await sleep(wait);
        io.emit('p', { i, t: now() });
      }
      return { failed: 0, ms: now() - start };
    },
    async burst({ count }: { count: number }) {
      const start = now();
      for (let i = 0; i < count; i++) io.emit('p', { i, t: now() });
      return { failed: 0, ms: now() - start };
    },
  };
  return { io, handlers };
}

async function sio(): Promise<void> {
  const httpServer = http.createServer();
  httpServer.keepAliveTimeout = 60_000;
  httpServer.maxConnections = 100_000;
  const { handlers } = await makeIo(httpServer);
  // After engine.io attached: it takes over the 'request' listeners there were.
  track(httpServer);
  serve(handlers);
  process.send!({ ready: true, port: await listen(httpServer) });
}

async function sioSticky(): Promise<void> {
  const { setupMaster, setupWorker } = await import('@socket.io/sticky');
  if (cluster.isPrimary) {
    const httpServer = http.createServer();
    setupMaster(httpServer, { loadBalancingMethod: 'least-connection' });
    cluster.setupPrimary({ serialization: 'advanced' } as any);
    const workers = Array.from({ length: Number(env.WORKERS ?? 2) }, () => cluster.fork());
    await Promise.all(workers.map((w) => new Promise<void>((resolve) => w.once('message', (m: any) => m?.ready && resolve()))));
    // The bench talks to the primary; it forwards to worker 0 (the pusher) or to all of them.
    let rpc = 1;
    const call = (w: (typeof workers)[number], cmd: string, args: unknown) =>
      new Promise<any>((resolve, reject) => {
        const id = rpc++;
        const onMessage = (m: any) => {
          if (m?.rpc !== id) return;
          w.off('message', onMessage);
          if (m.ok) resolve(m.value);
          else reject(new Error(m.error));
        };
        w.on('message', onMessage);
        w.send({ rpc: id, cmd, args });
      });
    serve({
      ping: () => 'pong',
      mem: () => memory(),
      // The primary (the balancer) and every worker.
      cpu: async () => (await Promise.all(workers.map((w) => call(w, 'cpu', {})))).reduce((a: number, b: number) => a + b, cpuMs()),
      cpuKernel: async () => (await Promise.all(workers.map((w) => call(w, 'cpuKernel', {})))).reduce((a: number, b: number) => a + b, cpuKernelMs()),
      push: (args) => call(workers[0]!, 'push', args),
      burst: (args) => call(workers[0]!, 'burst', args),
      clients: async () => (await Promise.all(workers.map((w) => call(w, 'clients', {})))).reduce((a: number, b: number) => a + b, 0),
      inflight: async () => (await Promise.all(workers.map((w) => call(w, 'inflight', {})))).reduce((a: number, b: number) => a + b, 0),
    });
    process.send!({ ready: true, port: await listen(httpServer), pids: workers.map((w) => w.process.pid) });
    process.on('SIGTERM', () => {
      for (const w of workers) w.process.kill('SIGTERM');
      process.exit(0);
    });
  } else {
    const httpServer = http.createServer();
    const { io, handlers } = await makeIo(httpServer);
    track(httpServer);
    setupWorker(io);
    serve(handlers);
    process.send!({ ready: true });
  }
}

const modes: Record<string, () => Promise<void>> = { plain, bidi, sio, 'sio-sticky': sioSticky };
const run = modes[mode];
if (!run) {
  console.error(`unknown server mode ${mode}`);
  process.exit(2);
}
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
run().catch((err) => {
  console.error(err);
  process.exit(1);
});
