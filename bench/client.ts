/**
 * The clients, in a process of their own (forked by bench/main.ts). It opens
 * sessions or sockets on command, runs the echo loops, and records every
 * pushed message it receives (arrival time, seq of the push, its stamp).
 *
 * Systems: `bidi` (bidiweb's own client), `sio-polling` (socket.io-client,
 * long-polling only), `sio-ws` (socket.io-client, WebSocket only), `hold`
 * (one plain HTTP request the server holds: the memory floor).
 */
import http from 'node:http';
import Redis from 'ioredis';
import { io as sioConnect, type Socket } from 'socket.io-client';
import { open as bidiOpen } from '../src/client';
import type { FetchLike, WebSocketConstructorLike } from '../src/client';
import WebSocket from 'ws';
import { cpuMs, memory, now, percentiles, serve, sleep, within } from './lib';

export type SystemKind = 'bidi' | 'sio-polling' | 'sio-ws' | 'hold';

interface Received {
  i: number;
  t: number;
  at: number;
}

interface Conn {
  id: string;
  send(data: unknown): void;
  close(): Promise<void>;
  /** Pushed messages, in arrival order. */
  pushed: Received[];
  /** Resolves the echo waiting for round `r`. */
  echoWaiter?: { r: number; resolve: () => void };
}

function onData(conn: Conn, data: any): void {
  const at = now();
  if (data && data.e) {
    const w = conn.echoWaiter;
    if (w && data.r === w.r) {
      conn.echoWaiter = undefined;
      w.resolve();
    }
    return;
  }
  if (data && typeof data.i === 'number') conn.pushed.push({ i: data.i, t: data.t, at });
}

/**
 * A `fetch` for the bidiweb client over node:http with a keep-alive agent: the
 * HTTP stack socket.io-client's polling transport uses in Node. (Node 20's
 * global fetch, undici, costs this process 2–4× more CPU per request.) Systems
 * with `fetch: 'node-http'` pass it; the others pass no `fetch` option at all
 * and get whatever the client's default is.
 */
const agent = new http.Agent({ keepAlive: true, keepAliveMsecs: 30_000 });
export const nodeFetch: FetchLike = (url, init) =>
  new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...init.headers };
    if (init.body !== undefined) headers['content-length'] = Buffer.byteLength(init.body);
    const req = http.request(url, { method: init.method, headers, agent, signal: init.signal }, (res) => {
      // The body is read either whole (text()) or chunk by chunk (body.getReader(), for a streaming watch).
      const chunks: Buffer[] = [];
      let ended = false;
      let failed: Error | undefined;
      let waiter: (() => void) | undefined;
      const poke = () => {
        const w = waiter;
        waiter = undefined;
        w?.();
      };
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        poke();
      });
      res.on('end', () => {
        ended = true;
        poke();
      });
      res.on('error', (err) => {
        failed = err;
        poke();
      });
      const more = () => new Promise<void>((r) => (waiter = r));
      resolve({
        status: res.statusCode ?? 0,
        headers: { get: (name: string) => (res.headers[name.toLowerCase()] as string | undefined) ?? null },
        async text() {
          while (!ended && !failed) await more();
          if (failed) throw failed;
          return Buffer.concat(chunks).toString('utf8');
        },
        body: {
          getReader: () => ({
            async read() {
              while (chunks.length === 0 && !ended && !failed) await more();
              if (chunks.length > 0) return { done: false, value: chunks.length === 1 ? chunks.pop()! : Buffer.concat(chunks.splice(0)) };
              if (failed) throw failed;
              return { done: true };
            },
            async cancel() {
              res.destroy();
            },
          }),
        },
      });
    });
    req.on('error', reject);
    req.end(init.body);
  });

/** Which `fetch` a bidiweb client gets: none given (the client's default), or the node:http one above. */
export type FetchKind = 'default' | 'node-http';

interface ConnectOptions {
  wait?: number;
  /** bidiweb: `stream` as given; undefined = not passed (the client's default). */
  stream?: boolean;
  fetch?: FetchKind;
  /** bidiweb: `transport: 'websocket'` (the ws package's WebSocket); undefined = not passed (HTTP). */
  transport?: 'websocket';
  sharedAgent?: boolean;
  /** socket.io-client: reconnect after a lost connection, with its default delays (the kill scenario). Default: no. */
  reconnect?: boolean;
}

async function connect(system: SystemKind, url: string, opts: ConnectOptions): Promise<Conn> {
  if (system === 'hold') {
    // The floor for an idle session: one plain HTTP request the server holds open.
    const req = http.request(url, { method: 'GET', agent });
    req.on('error', () => {});
    req.end();
    await new Promise<void>((resolve) => req.once('socket', (s) => (s.connecting ? s.once('connect', () => resolve()) : resolve())));
    return { id: '', pushed: [], send: () => {}, close: async () => void req.destroy() };
  }
  if (system === 'bidi') {
    // Only what the system asks for; everything else is the client's default.
    const s = bidiOpen(url, {
      ...(opts.wait ? { wait: opts.wait } : {}),
      ...(opts.fetch === 'node-http' ? { fetch: nodeFetch } : {}),
      ...(opts.stream !== undefined ? { stream: opts.stream } : {}),
      ...(opts.transport ? { transport: opts.transport, WebSocket: WebSocket as unknown as WebSocketConstructorLike } : {}),
    });
    const conn: Conn = {
      id: '',
      pushed: [],
      send: (data) => void s.send(data).catch(() => {}),
      close: () => s.close(),
    };
    s.on('message', (data) => onData(conn, data));
    // BENCH_DEBUG=1: print the client's errors (a stream 'auto' fell back, retries) to see why a run is slow.
    s.on('error', (e) => {
      if (process.env.BENCH_DEBUG) console.error('[client error]', e.code, e.message);
    });
    await within(
      new Promise<void>((resolve, reject) => {
        s.once('open', () => resolve());
        s.once('close', (e) => reject(new Error(`bidi session closed while opening: ${e.code} ${e.reason}`)));
      }),
      30_000,
      'bidi open',
    );
    conn.id = s.id!;
    return conn;
  }
  // @socket.io/sticky can route a handshake's second request before the primary learnt the sid
  // (a 400 "Session ID unknown" under load): try again, as socket.io-client's reconnection would.
  for (let attempt = 1; ; attempt++) {
    try {
      return await connectSio(system, url, opts.sharedAgent === true, opts.reconnect === true);
    } catch (err) {
      sioConnectRetries++;
      if (attempt >= 5) throw err;
      await sleep(50 * attempt);
    }
  }
}

let sioConnectRetries = 0;

/** One agent for every socket that does not need its own (a single instance needs no stickiness). */
const sioAgent = new http.Agent({ keepAlive: true });

async function connectSio(system: SystemKind, url: string, sharedAgent: boolean, reconnect = false): Promise<Conn> {
  const polling = system === 'sio-polling';
  const socket: Socket = sioConnect(url, {
    transports: [polling ? 'polling' : 'websocket'],
    forceNew: true,
    reconnection: reconnect,
    timeout: 30_000,
    // Behind @socket.io/sticky every connection must carry one socket's requests only (the primary routes
    // connections, not requests): a pool per socket, as a browser tab has. One instance: one shared pool,
    // as the bidiweb clients have.
    ...(polling ? { agent: sharedAgent ? sioAgent : new http.Agent({ keepAlive: true, maxSockets: 2 }) } : {}),
  } as any);
  const conn: Conn = {
    id: '',
    pushed: [],
    send: (data) => void socket.emit('m', data),
    close: async () => void socket.disconnect(),
  };
  socket.on('m', (data: unknown) => onData(conn, data));
  socket.on('p', (data: unknown) => onData(conn, data));
  await within(
    new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('connect_error', (err) => {
        socket.disconnect();
        reject(err);
      });
    }),
    30_000,
    'socket.io connect',
  );
  conn.id = socket.id!;
  return conn;
}

const groups = new Map<string, Conn[]>();
/** Opening stops after this, however many are open: every loop of the bench is bounded in time. */
const OPEN_DEADLINE_MS = 120_000;

/** Opens `n` connections, `parallel` at a time; returns their ids. */
async function openMany({
  tag,
  system,
  url,
  n,
  parallel = 100,
  ...opts
}: {
  tag: string;
  system: SystemKind;
  url: string;
  n: number;
  parallel?: number;
} & ConnectOptions) {
  const list = groups.get(tag) ?? [];
  groups.set(tag, list);
  const start = now();
  const deadline = start + OPEN_DEADLINE_MS;
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, n) }, async () => {
      while (next < n && now() < deadline) {
        next++;
        list.push(await connect(system, url, opts));
      }
    }),
  );
  return { ids: list.map((c) => c.id), ms: now() - start, sioConnectRetries };
}

async function closeMany({ tag }: { tag: string }) {
  const list = groups.get(tag) ?? [];
  groups.delete(tag);
  await within(Promise.all(list.map((c) => c.close().catch(() => {}))), 30_000, 'close').catch(() => {});
  return list.length;
}

let echoCalls = 0;

/**
 * Each connection: `rounds` sequential round trips (send, wait for the echo).
 * A connection whose echo does not come back within `stallMs` is *stalled*: it
 * stops there (the others go on), and is counted. Throughput is measured up to
 * the last echo that came back, so a stalled client's wait does not dilute it.
 * No round starts after `maxMs`.
 */
async function echo({ tag, rounds, stallMs = 10_000, maxMs = Infinity }: { tag: string; rounds: number; stallMs?: number; maxMs?: number }) {
  const list = groups.get(tag) ?? [];
  const rtts: number[] = [];
  const clientMax: number[] = [];
  let stalled = 0;
  // Round numbers never repeat across calls: a stalled echo that comes back late cannot pass for a later one.
  const base = (echoCalls += 1_000_000);
  const start = now();
  let last = start;
  await Promise.all(
    list.map(async (conn, k) => {
      let max = 0;
      try {
        for (let r = base; r < base + rounds; r++) {
          const t = now();
          if (t - start > maxMs) return; // bounded in time too: a slow system does fewer rounds, not a longer run
          const got = new Promise<void>((resolve) => (conn.echoWaiter = { r, resolve }));
          conn.send({ e: 1, r, k, t });
          try {
            await within(got, stallMs, 'echo');
          } catch {
            conn.echoWaiter = undefined;
            stalled++;
            max = Math.max(max, now() - t);
            return;
          }
          last = now();
          const rtt = last - t;
          rtts.push(rtt);
          max = Math.max(max, rtt);
        }
      } finally {
        clientMax.push(max);
      }
    }),
  );
  const ms = last - start;
  return {
    roundTrips: rtts.length,
    ms,
    wallMs: now() - start,
    perSec: (rtts.length / ms) * 1000,
    rtt: percentiles(rtts),
    clients: list.length,
    stalled,
    /** Per client: its slowest round trip (a stalled one counts as `stallMs`). */
    clientMax: percentiles(clientMax),
  };
}

function resetPushed({ tag }: { tag: string }) {
  for (const c of groups.get(tag) ?? []) c.pushed = [];
  return true;
}

/**
 * Waits (bounded) until every connection has `expected` distinct pushes, then
 * reports latencies and what was lost, duplicated or out of order. A
 * connection that got no push within `stallMs` of `since` (when the pushing
 * began) is *stalled*; while one has nothing, the wait lasts at least until
 * `since + stallMs`, so a stall is told apart from a slow start.
 */
async function collect({ tag, expected, timeoutMs, since, stallMs = 10_000 }: { tag: string; expected: number; timeoutMs: number; since?: number; stallMs?: number }) {
  const list = groups.get(tag) ?? [];
  const from = since ?? now();
  const deadline = now() + timeoutMs;
  const complete = () => list.every((c) => new Set(c.pushed.map((p) => p.i)).size >= expected);
  const anyEmpty = () => list.some((c) => c.pushed.length === 0);
  while (!complete() && (now() < deadline || (anyEmpty() && now() < from + stallMs + 200))) await sleep(20);
  let stalled = 0;
  let incomplete = 0;
  const clientMax: number[] = [];
  const latencies: number[] = [];
  let lost = 0;
  let dup = 0;
  let outOfOrder = 0;
  let received = 0;
  let first = Infinity;
  let last = -Infinity;
  for (const c of list) {
    const seen = new Set<number>();
    let max = -1;
    let worst = 0;
    const firstAt = c.pushed.length ? Math.min(...c.pushed.map((p) => p.at)) : Infinity;
    if (firstAt - from > stallMs) stalled++;
    for (const p of c.pushed) {
      if (seen.has(p.i)) {
        dup++;
        continue;
      }
      seen.add(p.i);
      if (p.i < max) outOfOrder++;
      max = Math.max(max, p.i);
      received++;
      latencies.push(p.at - p.t);
      worst = Math.max(worst, p.at - p.t);
      if (p.i === 0) first = Math.min(first, p.t);
      last = Math.max(last, p.at);
    }
    let missing = 0;
    for (let i = 0; i < expected; i++) if (!seen.has(i)) missing++;
    lost += missing;
    if (missing) {
      incomplete++;
      worst = Math.max(worst, now() - from); // still waiting for some: at least this long
    }
    clientMax.push(worst);
  }
  const spanMs = last - first;
  return {
    received,
    lost,
    dup,
    outOfOrder,
    latency: percentiles(latencies),
    spanMs,
    perSec: (received / spanMs) * 1000,
    clients: list.length,
    stalled,
    incomplete,
    /** Per client: its slowest delivery (one still missing counts as the whole wait). */
    clientMax: percentiles(clientMax),
  };
}

/** The floor: plain HTTP round trips (POST, small JSON body) over `post`, with the same concurrency as the echo. */
async function floorPosts(post: FetchLike, { url, clients, rounds }: { url: string; clients: number; rounds: number }) {
  const rtts: number[] = [];
  const start = now();
  await Promise.all(
    Array.from({ length: clients }, async (_, k) => {
      for (let r = 0; r < rounds; r++) {
        const t = now();
        const res = await post(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ e: 1, r, k, t }), signal: new AbortController().signal });
        await res.text();
        rtts.push(now() - t);
      }
    }),
  );
  const ms = now() - start;
  return { roundTrips: rtts.length, ms, perSec: (rtts.length / ms) * 1000, rtt: percentiles(rtts) };
}

/** The floor over the global fetch. */
const floorHttp = (args: { url: string; clients: number; rounds: number }) => floorPosts((url, init) => fetch(url, init) as ReturnType<FetchLike>, args);

/** The floor over node:http (the stack the clients above use). */
const floorNodeHttp = (args: { url: string; clients: number; rounds: number }) => floorPosts(nodeFetch, args);

/** The floor: Redis PING on loopback, sequential (latency) and `clients` in parallel (throughput). */
async function floorRedis({ port, n, clients }: { port: number; n: number; clients: number }) {
  const redis = new Redis({ host: '127.0.0.1', port });
  try {
    for (let i = 0; i < 200; i++) await redis.ping();
    const rtts: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = now();
      await redis.ping();
      rtts.push(now() - t);
    }
    const start = now();
    await Promise.all(
      Array.from({ length: clients }, async () => {
        for (let i = 0; i < n / clients; i++) await redis.ping();
      }),
    );
    const ms = now() - start;
    return { rtt: percentiles(rtts), perSec: (n / ms) * 1000 };
  } finally {
    redis.disconnect();
  }
}

serve({
  open: openMany,
  close: closeMany,
  echo,
  reset: resetPushed,
  collect,
  floorHttp,
  floorNodeHttp,
  floorRedis,
  mem: () => memory(),
  cpu: () => cpuMs(),
  ping: () => 'pong',
});
process.send!({ ready: true });
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
