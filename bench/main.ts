/**
 * `npm run bench`: bidiweb side by side with Socket.IO 4, same machine, same
 * run, same client counts. Every server under test runs in its own process,
 * the clients in another; only 127.0.0.1 is used; every loop is bounded in
 * count and in time. Prints tables and writes bench/results/<date>.json.
 *
 * Options (after `npm run bench --`):
 *   --only=floor,echo,push,burst,cost,idle  scenarios to run (default: all; also kill, not in the default)
 *   --systems=multi                         systems or groups of them (default multi; also single, all,
 *                                           or keys: sio-proxy, bidi-redis, bidi-redis-stream, ... see SYSTEMS)
 *   --rounds=N                              echo/push/burst N times per system, alternating systems (default 2)
 *   --echo-ms=15000                         no echo round starts after this (a slow system does fewer rounds)
 *   --fresh                                 every echo/push/burst run of a multi-instance system on freshly
 *                                           started instances (where issue 11's missed wake-up was seen)
 *   --stall-ms=10000                        a client with no echo / no push for this long is reported stalled
 *   --handler-send=await                    bidiweb's echo handler awaits its session.send() (default: not awaited,
 *                                           as the README's echo)
 *   --burst-inflight=N                      bidiweb's burst keeps N publishes in flight (default: all 1,000 at once,
 *                                           as Socket.IO's burst calls io.emit in a loop without waiting)
 *   --groups=10,1000,10000                  group sizes for the store-cost `hub.publish` rows
 *   --idle=1000,5000                        idle session counts (default 1000,5000)
 *   --idle-max=0                            extra idle count for bidiweb only (default 0 = none)
 *   --out=path.json                         result file (default bench/results/<date>.json)
 *   --render=path.json                      run nothing: print the tables of an earlier result file again
 *   --cpu-prof=dir                          V8 CPU profiles of every process (bench/profile-top.mjs reads them)
 *   --heap-snapshots=dir                    heap snapshots of the idle instance (bench/heap-top.mjs compares them)
 */
import { execSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { startRedis, type RedisProcess } from '../test/helpers/redis-server';
import type { FetchKind } from './client';
import { median, now, Proc, sleep } from './lib';

// --- options -----------------------------------------------------------------------------

const argv = new Map(
  process.argv.slice(2).map((a) => {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    return m ? [m[1]!, m[2] ?? 'true'] : [a, 'true'];
  }),
);
const list = (name: string, fallback: string[]) => (argv.has(name) ? argv.get(name)!.split(',').filter(Boolean) : fallback);

const SCENARIOS = list('only', ['floor', 'echo', 'push', 'burst', 'cost', 'idle']);
const ROUNDS = Number(argv.get('rounds') ?? 2);
const STALL_MS = Number(argv.get('stall-ms') ?? 10_000);
const ECHO_MAX_MS = Number(argv.get('echo-ms') ?? 15_000);
/** Every echo/push/burst run of a multi-instance system starts on freshly started instances (and proxy). */
const FRESH = argv.get('fresh') === 'true';
/** Read by bench/server.ts (the children inherit this process's environment). */
const HANDLER_SEND = argv.get('handler-send') === 'await' ? 'await' : 'pending';
process.env.HANDLER_SEND = HANDLER_SEND;
/** bidiweb's publishes in flight during a burst; 0 = all at once. Read by bench/server.ts. */
const BURST_INFLIGHT = Number(argv.get('burst-inflight') ?? 0);
if (BURST_INFLIGHT > 0) process.env.BURST_INFLIGHT = String(BURST_INFLIGHT);
else delete process.env.BURST_INFLIGHT;
const GROUP_SIZES = list('groups', ['10', '1000', '10000']).map(Number);
const IDLE = list('idle', ['1000', '5000']).map(Number);
const IDLE_MAX = Number(argv.get('idle-max') ?? 0);
/** Scenarios still to run are skipped after this; everything is stopped at BUDGET_MS + 60 s (under 10 minutes). */
const BUDGET_MS = 8.5 * 60_000;
const CLIENTS = 50;
const ECHO_ROUNDS = 200;
const ECHO_WARMUP = 20;
const PUSH_TICKS = 200;
const PUSH_INTERVAL_MS = 10;
const BURST = 1_000;
/** kill: pushes per client (one every PUSH_INTERVAL_MS), and when the second instance is SIGKILLed after the first. */
const KILL_TICKS = 400;
const KILL_AT_MS = 1_000;

const DIR = __dirname; // the bundle directory (scripts/run-bench.mjs)
const ROOT = process.env.BIDI_BENCH_ROOT ?? path.resolve(DIR, '..', '..', '..');
const started = now();

function log(text: string): void {
  const s = ((now() - started) / 1000).toFixed(1).padStart(6);
  process.stdout.write(`[${s}s] ${text}\n`);
}

function overBudget(): boolean {
  return now() - started > BUDGET_MS;
}

// --- systems -------------------------------------------------------------------------------

type ClientKind = 'bidi' | 'sio-polling' | 'sio-ws' | 'hold';
type Tier = 'multi' | 'single' | 'other';

/** Every system the bench knows: its label, its group, and what its ratios are taken against. */
const SYSTEMS: Record<string, { label: string; tier: Tier; reference?: string }> = {
  'sio-proxy': { label: 'Socket.IO polling ×2 + Redis streams adapter, sticky proxy (reference)', tier: 'multi' },
  'bidi-redis': { label: 'bidiweb ×2 + RedisStore, round-robin proxy, default client', tier: 'multi', reference: 'sio-proxy' },
  'bidi-redis-stream': { label: 'bidiweb ×2 + RedisStore, round-robin proxy, stream: true', tier: 'multi', reference: 'sio-proxy' },
  'bidi-redis-stream-http': { label: 'bidiweb ×2 + RedisStore, round-robin proxy, stream: true, node:http fetch', tier: 'multi', reference: 'sio-proxy' },
  'bidi-redis-http': { label: 'bidiweb ×2 + RedisStore, round-robin proxy, plain watch, node:http fetch', tier: 'other', reference: 'sio-proxy' },
  'sio-sticky': { label: 'Socket.IO polling ×2 + Redis streams, @socket.io/sticky (weaker baseline)', tier: 'other' },
  'sio-poll': { label: 'Socket.IO polling ×1 (reference)', tier: 'single' },
  'bidi-mem': { label: 'bidiweb ×1 MemoryStore, default client', tier: 'single', reference: 'sio-poll' },
  'bidi-mem-stream-http': { label: 'bidiweb ×1 MemoryStore, stream: true, node:http fetch', tier: 'single', reference: 'sio-poll' },
  'bidi-mem-stream': { label: 'bidiweb ×1 MemoryStore, stream: true', tier: 'other', reference: 'sio-poll' },
  'sio-ws': { label: 'Socket.IO WebSocket ×1', tier: 'other' },
  'sio-ws-proxy': { label: 'Socket.IO WebSocket ×2 + Redis streams adapter, proxy forwarding upgrades', tier: 'other' },
  'sio-ws-proxy-csr': { label: 'Socket.IO WebSocket ×2 + Redis streams adapter, connectionStateRecovery, proxy forwarding upgrades', tier: 'other' },
  'bidi-redis-ws': { label: "bidiweb ×2 + RedisStore, round-robin proxy forwarding upgrades, transport: 'websocket'", tier: 'other', reference: 'sio-ws-proxy' },
  'bidi-mem-ws': { label: "bidiweb ×1 MemoryStore, transport: 'websocket' (bidiweb/ws)", tier: 'other', reference: 'sio-ws' },
};

function selectedSystems(): Set<string> {
  const out = new Set<string>();
  for (const name of list('systems', ['multi'])) {
    if (name === 'all') Object.keys(SYSTEMS).forEach((k) => out.add(k));
    else if (name === 'multi' || name === 'single') for (const [k, v] of Object.entries(SYSTEMS)) v.tier === name && out.add(k);
    else if (SYSTEMS[name]) out.add(name);
    else throw new Error(`unknown system ${name} (known: multi, single, all, ${Object.keys(SYSTEMS).join(', ')})`);
  }
  return out;
}

interface System {
  key: string;
  label: string;
  client: ClientKind;
  /** bidiweb clients: `stream` as given (undefined: not passed, the client's default). */
  stream?: boolean;
  /** bidiweb clients: the fetch they get (undefined: none passed, the client's default). */
  fetch?: FetchKind;
  /** bidiweb clients: `transport: 'websocket'` (undefined: HTTP). */
  transport?: 'websocket';
  /** socket.io-client polling: one connection pool for all sockets (no per-connection stickiness needed). */
  sharedAgent?: boolean;
  /** Where clients connect. */
  url: string;
  /** The process asked to push (it reaches every client, through the store or the adapter). */
  pusher: Proc;
  /** For the idle scenario: how to start a fresh instance of its own (stopped afterwards), and what counts its waiters. */
  idle?: { start: () => Promise<{ proc: Proc; url: string }>; count: 'inflight' | 'clients' };
  /** The server processes (CPU; for bidiweb on Redis also their own command counts). */
  instances: Proc[];
  /** The balancer in front of the instances, if any. */
  proxy?: Proc;
  /** The Redis whose CPU counts as this system's (and, for bidiweb, whose commands are counted). */
  redis?: Redis;
  /** bidiweb on Redis: count commands per request during the echo. */
  countCommands?: boolean;
  /** Multi-instance systems: start fresh instances and proxy (`--fresh`, before every echo/push/burst run). */
  restart?: () => Promise<void>;
}

const procs: Proc[] = [];
const redisServers: RedisProcess[] = [];
const redisClients: Redis[] = [];

function bundle(name: string): string {
  return path.join(DIR, `${name}.js`);
}

/** `--cpu-prof=dir`: every bench process writes a V8 CPU profile there when it exits (see bench/profile-top.mjs). */
const PROF_DIR = argv.get('cpu-prof');

async function start(name: string, file: string, args: string[], env: Record<string, string> = {}): Promise<{ proc: Proc; info: any }> {
  const execArgv = PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(PROF_DIR)}`, `--cpu-prof-name=${name}.cpuprofile`] : [];
  const proc = Proc.fork(name, bundle(file), args, { ...env, BIDI_BENCH_NAME: name }, execArgv);
  procs.push(proc);
  const info = await Promise.race([proc.ready, sleep(30_000).then(() => Promise.reject(new Error(`${name} did not start within 30 s`)))]);
  return { proc, info };
}

async function newRedis(): Promise<{ server: RedisProcess; client: Redis }> {
  const server = await startRedis();
  redisServers.push(server);
  const client = new Redis({ host: '127.0.0.1', port: server.port });
  redisClients.push(client);
  return { server, client };
}

// --- results -------------------------------------------------------------------------------

const results: any = {
  date: new Date().toISOString(),
  command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
  machine: {
    node: process.version,
    cpus: os.cpus().length,
    cpu: os.cpus()[0]?.model,
    memGB: Math.round(os.totalmem() / 2 ** 30),
    loadavgStart: os.loadavg(),
  },
  git: (() => {
    try {
      return execSync('git rev-parse --short HEAD', { cwd: ROOT, encoding: 'utf8' }).trim() + (execSync('git status --porcelain src', { cwd: ROOT, encoding: 'utf8' }).trim() ? '+dirty' : '');
    } catch {
      return 'unknown';
    }
  })(),
  settings: { FRESH, HANDLER_SEND, BURST_INFLIGHT, CLIENTS, ECHO_ROUNDS, ECHO_MAX_MS, ECHO_WARMUP, PUSH_TICKS, PUSH_INTERVAL_MS, BURST, ROUNDS, STALL_MS, GROUP_SIZES, IDLE, IDLE_MAX },
  systems: {} as Record<string, string>,
  echo: {} as Record<string, any[]>,
  push: {} as Record<string, any[]>,
  burst: {} as Record<string, any[]>,
  kill: {} as Record<string, any[]>,
  idle: {} as Record<string, any>,
  floor: {} as Record<string, any>,
  cost: {} as Record<string, any>,
  loadavg: [] as Array<{ at: string; load: number[] }>,
  errors: [] as string[],
};

function record(scenario: 'echo' | 'push' | 'burst' | 'kill', key: string, value: unknown): void {
  (results[scenario][key] ??= []).push(value);
}

function noteLoad(at: string): void {
  results.loadavg.push({ at, load: os.loadavg().map((l) => Math.round(l * 100) / 100) });
}

// --- measuring -----------------------------------------------------------------------------

let client!: Proc;
let tagNo = 0;

interface OpenOptions {
  client: ClientKind;
  url: string;
  stream?: boolean;
  fetch?: FetchKind;
  transport?: 'websocket';
  sharedAgent?: boolean;
  /** socket.io-client: reconnect (its default delays); bidiweb's client always does. */
  reconnect?: boolean;
}

async function withConns<T>(sys: OpenOptions, n: number, fn: (tag: string, ids: string[]) => Promise<T>): Promise<T> {
  const tag = `t${++tagNo}`;
  try {
    const { ids } = await client.call('open', { tag, system: sys.client, url: sys.url, n, stream: sys.stream, fetch: sys.fetch, transport: sys.transport, sharedAgent: sys.sharedAgent, reconnect: sys.reconnect }, 120_000);
    return await fn(tag, ids);
  } finally {
    await client.call('close', { tag }, 60_000).catch(() => {});
  }
}

async function commandStats(redis: Redis): Promise<Record<string, number>> {
  const info = await redis.info('commandstats');
  const out: Record<string, number> = {};
  for (const m of info.matchAll(/cmdstat_([a-z|_-]+):calls=(\d+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

/** What Redis ran between two `INFO commandstats`, commands inside scripts and functions included (the INFOs left out). */
function diffStats(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) {
    const d = v - (a[k] ?? 0);
    if (d > 0 && k !== 'info') out[k] = d;
  }
  return out;
}

const SCRIPT_CALLS = ['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro'];
const PUBSUB = ['subscribe', 'unsubscribe', 'ssubscribe', 'sunsubscribe', 'psubscribe', 'punsubscribe'];
const PUBLISH = ['publish', 'spublish'];
const count = (d: Record<string, number>, names: string[]) => names.reduce((a, n) => a + (d[n] ?? 0), 0);

/** redis-server's own CPU (user + sys), ms. */
async function redisCpuMs(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  return (Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1] ?? 0) + Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1] ?? 0)) * 1000;
}

interface CpuSample {
  instances: number;
  /** The instances' system (kernel) CPU, part of `instances`. */
  instancesKernel: number;
  proxy: number;
  redis: number;
  client: number;
}

/** CPU ms used so far by the system's instances, its balancer, its Redis, and by the client process. */
async function cpuNow(sys: Pick<System, 'instances' | 'proxy' | 'redis'>): Promise<CpuSample> {
  const [parts, kernel, proxy, redis, cl] = await Promise.all([
    Promise.all(sys.instances.map((p) => p.call<number>('cpu'))),
    Promise.all(sys.instances.map((p) => p.call<number>('cpuKernel'))),
    sys.proxy ? sys.proxy.call<number>('cpu') : 0,
    sys.redis ? redisCpuMs(sys.redis) : 0,
    client.call<number>('cpu'),
  ]);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  return { instances: sum(parts), instancesKernel: sum(kernel), proxy, redis, client: cl };
}

/** CPU µs per unit of work: server side (instances + balancer + Redis) and its parts, and the client process. */
async function cpuPer(sys: Pick<System, 'instances' | 'proxy' | 'redis'>, before: CpuSample, units: number) {
  const after = await cpuNow(sys);
  const us = (k: keyof CpuSample) => ((after[k] - before[k]) * 1000) / units;
  const instancesUs = us('instances');
  const proxyUs = us('proxy');
  const redisUs = us('redis');
  return { serverUs: instancesUs + proxyUs + redisUs, instancesUs, instancesKernelUs: us('instancesKernel'), proxyUs, redisUs, clientUs: us('client') };
}

const cpuText = (c: any) =>
  `server ${c.serverUs.toFixed(0)} µs (instances ${c.instancesUs.toFixed(0)} [kernel ${c.instancesKernelUs.toFixed(0)}] + proxy ${c.proxyUs.toFixed(0)} + Redis ${c.redisUs.toFixed(0)}), client ${c.clientUs.toFixed(0)} µs`;

// --- scenarios -----------------------------------------------------------------------------

/** `--fresh`: new instances (and proxy) for this run; clients open on them as soon as they listen. */
async function fresh(sys: System): Promise<void> {
  if (FRESH && sys.restart) await sys.restart();
}

async function echoRun(sys: System): Promise<void> {
  await fresh(sys);
  await withConns(sys, CLIENTS, async (tag) => {
    const warm = await client.call('echo', { tag, rounds: ECHO_WARMUP, stallMs: STALL_MS }, 120_000);
    const before = sys.countCommands ? await commandStats(sys.redis!) : undefined;
    const proxyBefore = sys.proxy ? await sys.proxy.call<number>('requests') : 0;
    // The instances count the commands they send (a pipeline is one round trip): reset, run, read.
    if (sys.countCommands) await Promise.all(sys.instances.map((p) => p.call('commands')));
    const cpu0 = await cpuNow(sys);
    const r = await client.call('echo', { tag, rounds: ECHO_ROUNDS, stallMs: STALL_MS, maxMs: ECHO_MAX_MS }, 180_000);
    r.cpu = await cpuPer(sys, cpu0, r.roundTrips);
    r.warmupStalled = warm.stalled;
    if (sys.countCommands && before) {
      const d = diffStats(before, await commandStats(sys.redis!));
      const sent = await Promise.all(sys.instances.map((p) => p.call('commands')));
      const roundTrips = sent.reduce((a, c) => a + c.roundTrips, 0);
      const requests = (await sys.proxy!.call<number>('requests')) - proxyBefore;
      const all = Object.values(d).reduce((a, v) => a + v, 0);
      r.redis = {
        requests,
        requestsPerRoundTrip: requests / r.roundTrips,
        roundTripsPerRequest: roundTrips / requests,
        roundTripsPerRoundTrip: roundTrips / r.roundTrips,
        commandsPerRequest: all / requests,
        commandsPerRoundTrip: all / r.roundTrips,
        commands: d,
      };
    }
    record('echo', sys.key, r);
    log(
      `  echo ${sys.key}: ${r.perSec.toFixed(0)} rt/s (${r.roundTrips} in ${(r.ms / 1000).toFixed(1)} s), RTT p50 ${r.rtt.p50.toFixed(1)} p99 ${r.rtt.p99.toFixed(1)} ms; per round trip ${cpuText(r.cpu)}; stalled ${r.stalled} (warm-up ${warm.stalled}) of ${r.clients}, slowest client ${r.clientMax.max.toFixed(0)} ms`,
    );
  });
}

async function pushRun(sys: System): Promise<void> {
  await fresh(sys);
  await withConns(sys, CLIENTS, async (tag, ids) => {
    // A short warm-up push, not counted (but its stalls are).
    let since = now();
    await sys.pusher.call('push', { sids: ids, ticks: 20, intervalMs: PUSH_INTERVAL_MS });
    const warm = await client.call('collect', { tag, expected: 20, timeoutMs: 3_000, since, stallMs: STALL_MS }, 60_000);
    await client.call('reset', { tag });
    const cpu0 = await cpuNow(sys);
    since = now();
    const p = await sys.pusher.call('push', { sids: ids, ticks: PUSH_TICKS, intervalMs: PUSH_INTERVAL_MS }, 60_000);
    const r = await client.call('collect', { tag, expected: PUSH_TICKS, timeoutMs: 5_000, since, stallMs: STALL_MS }, 60_000);
    r.cpu = await cpuPer(sys, cpu0, r.received);
    r.server = p;
    r.warmupStalled = warm.stalled;
    r.warmupLost = warm.lost;
    record('push', sys.key, r);
    log(
      `  push ${sys.key}: latency p50 ${r.latency.p50.toFixed(1)} p99 ${r.latency.p99.toFixed(1)} ms; lost ${r.lost} dup ${r.dup} ooo ${r.outOfOrder}; per message ${cpuText(r.cpu)}; stalled ${r.stalled} (warm-up ${warm.stalled}), incomplete ${r.incomplete}, slowest client ${r.clientMax.max.toFixed(0)} ms`,
    );
  });
}

async function burstRun(sys: System): Promise<void> {
  await fresh(sys);
  await withConns(sys, CLIENTS, async (tag, ids) => {
    const before = sys.countCommands ? await commandStats(sys.redis!) : undefined;
    if (sys.countCommands) await Promise.all(sys.instances.map((p) => p.call('commands')));
    const cpu0 = await cpuNow(sys);
    const since = now();
    const p = await sys.pusher.call('burst', { sids: ids, count: BURST }, 120_000);
    const r = await client.call('collect', { tag, expected: BURST, timeoutMs: 60_000, since, stallMs: STALL_MS }, 90_000);
    r.cpu = await cpuPer(sys, cpu0, r.received);
    r.server = p;
    let store = '';
    if (sys.countCommands && before) {
      // Includes the acks of the last messages only if they came in time: read right after the last arrival.
      const d = diffStats(before, await commandStats(sys.redis!));
      const sent = await Promise.all(sys.instances.map((q) => q.call('commands')));
      const roundTrips = sent.reduce((a, c) => a + c.roundTrips, 0);
      r.redis = { roundTrips, scriptCalls: count(d, SCRIPT_CALLS), publishes: count(d, PUBLISH), commands: d };
      store = `; Redis: ${roundTrips} round trips, ${r.redis.scriptCalls} script calls, ${r.redis.publishes} PUBLISH`;
    }
    record('burst', sys.key, r);
    log(
      `  burst ${sys.key}: ${r.perSec.toFixed(0)} msg/s (${r.received} in ${r.spanMs.toFixed(0)} ms; server sent in ${p.ms.toFixed(0)} ms); lost ${r.lost} dup ${r.dup} ooo ${r.outOfOrder}; per message ${cpuText(r.cpu)}; stalled ${r.stalled}, slowest client ${r.clientMax.max.toFixed(0)} ms${store}`,
    );
  });
}

/**
 * Kill an instance mid-stream: fresh instances; the first pushes to every client every PUSH_INTERVAL_MS,
 * KILL_TICKS times; KILL_AT_MS in, the second is SIGKILLed (its clients' connections die with it and
 * reconnect through the proxy, with each client's default reconnection). Counts, per client, the pushes
 * never received, received twice, or out of order.
 */
async function killRun(sys: System): Promise<void> {
  if (!sys.restart || sys.instances.length < 2 || !sys.proxy) throw new Error('kill needs a two-instance system behind the proxy');
  await sys.restart();
  const upgrades = async () => ((await sys.proxy!.call('stats')) as { upgrades: number }).upgrades;
  await withConns({ ...sys, reconnect: true }, CLIENTS, async (tag, ids) => {
    let since = now();
    await sys.pusher.call('push', { sids: ids, ticks: 20, intervalMs: PUSH_INTERVAL_MS });
    await client.call('collect', { tag, expected: 20, timeoutMs: 3_000, since, stallMs: STALL_MS }, 60_000);
    await client.call('reset', { tag });
    const upgrades0 = await upgrades();
    since = now();
    const pushing = sys.pusher.call('push', { sids: ids, ticks: KILL_TICKS, intervalMs: PUSH_INTERVAL_MS }, 60_000);
    await sleep(KILL_AT_MS);
    sys.instances[1]!.child.kill('SIGKILL');
    const p = await pushing;
    // Long enough for every reconnection (socket.io-client's delays reach 5 s) and redelivery.
    const r = await client.call('collect', { tag, expected: KILL_TICKS, timeoutMs: 10_000, since, stallMs: STALL_MS }, 60_000);
    r.server = p;
    r.reconnects = (await upgrades()) - upgrades0;
    record('kill', sys.key, r);
    log(
      `  kill ${sys.key}: ${KILL_TICKS} pushes to each of ${CLIENTS} clients, instance 2 SIGKILLed at ${KILL_AT_MS} ms: lost ${r.lost} dup ${r.dup} ooo ${r.outOfOrder}; clients missing some ${r.incomplete}; upgrades after the kill ${r.reconnects}; push p50 ${r.latency.p50.toFixed(1)} p99 ${r.latency.p99.toFixed(1)} ms`,
    );
  });
  // A healthy pair for whatever runs next.
  await sys.restart();
}

async function waitFor(proc: Proc, what: 'inflight' | 'clients', target: number, ms: number): Promise<number> {
  const deadline = now() + ms;
  let n = 0;
  while (now() < deadline) {
    n = await proc.call(what);
    if (n >= target) return n;
    await sleep(100);
  }
  return n;
}

async function idleRun(sys: System, counts: number[]): Promise<void> {
  // A fresh process: memory deltas start from a clean heap, and nothing else runs in it.
  const fresh = await sys.idle!.start();
  try {
    await idleMeasure(sys, { ...fresh, count: sys.idle!.count }, counts);
  } finally {
    await fresh.proc.stop();
  }
}

async function idleMeasure(sys: Pick<System, 'key' | 'label' | 'client' | 'stream' | 'fetch' | 'transport' | 'sharedAgent' | 'redis'>, target: { proc: Proc; url: string; count: 'inflight' | 'clients' }, counts: number[]): Promise<void> {
  const out: Record<string, any> = {};
  const snapDir = argv.get('heap-snapshots');
  if (snapDir) mkdirSync(path.resolve(snapDir), { recursive: true });
  if (snapDir) await target.proc.call('snapshot', { file: path.resolve(snapDir, `${sys.key}-0.heapsnapshot`) }, 120_000);
  const base = await target.proc.call('mem');
  const redisBase = sys.redis && sys.client === 'bidi' ? await redisUsed(sys.redis) : undefined;
  const baseCount = await target.proc.call(target.count);
  const tag = `idle${++tagNo}`;
  let open = 0;
  try {
    for (const n of counts) {
      if (overBudget()) break;
      const t = now();
      await client.call('open', { tag, system: sys.client, url: target.url, n: n - open, parallel: 50, stream: sys.stream, fetch: sys.fetch, transport: sys.transport, sharedAgent: sys.sharedAgent }, 300_000);
      open = n;
      const reached = await waitFor(target.proc, target.count, baseCount + n, 30_000);
      await sleep(1_000);
      const m = await target.proc.call('mem');
      if (snapDir && n === counts[0]) await target.proc.call('snapshot', { file: path.resolve(snapDir, `${sys.key}-${n}.heapsnapshot`) }, 120_000);
      const redisBytes = redisBase !== undefined ? ((await redisUsed(sys.redis!)) - redisBase) / n : undefined;
      out[n] = {
        waiting: reached - baseCount,
        heapPerSession: (m.heapUsed - base.heapUsed) / n,
        rssPerSession: (m.rss - base.rss) / n,
        heapUsed: m.heapUsed,
        rss: m.rss,
        openMs: now() - t,
        ...(redisBytes !== undefined ? { redisBytesPerSession: redisBytes } : {}),
      };
      log(
        `  idle ${sys.key} ${n}: ${reached - baseCount} waiting; heap ${(out[n].heapPerSession / 1024).toFixed(2)} KiB/session, RSS ${(out[n].rssPerSession / 1024).toFixed(2)} KiB/session${redisBytes !== undefined ? `; Redis ${redisBytes.toFixed(0)} B/session` : ''}`,
      );
    }
  } finally {
    await client.call('close', { tag }, 120_000).catch(() => {});
  }
  results.idle[sys.key] = out;
}

async function redisUsed(redis: Redis): Promise<number> {
  const info = await redis.info('memory');
  return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0);
}

// --- store cost ----------------------------------------------------------------------------

/**
 * What one operation costs in Redis, on a setup of its own (its own
 * redis-server, two bidiweb instances without sweep timers behind the
 * round-robin proxy), so nothing but the measured operations reaches that
 * Redis: `INFO commandstats` deltas (every command Redis ran, inside scripts
 * too), round trips counted in the instances (a pipeline is one), HTTP
 * requests counted by the proxy, and redis-server's CPU.
 */
async function costScenario(): Promise<void> {
  const { server: redisProc, client: redis } = await newRedis();
  const env = { STORE: 'redis', REDIS_PORT: String(redisProc.port), PREFIX: 'cost:', SWEEP: '0' };
  const a = await start('cost-1', 'server', ['bidi'], env);
  const b = await start('cost-2', 'server', ['bidi'], env);
  const proxy = await start('cost-proxy', 'proxy', ['rr', String(a.info.port), String(b.info.port)]);
  const instances = [a.proc, b.proc];
  const viaProxy = `http://127.0.0.1:${proxy.info.port}/session`;
  const direct = `http://127.0.0.1:${a.info.port}/session`;
  const stopped: Proc[] = [a.proc, b.proc, proxy.proc];
  try {
    const measure = async (name: string, unit: string, fn: () => Promise<{ ops: number; members?: number; note?: string; direct?: boolean }>) => {
      if (overBudget()) {
        results.errors.push(`cost ${name}: skipped, over the time budget`);
        return;
      }
      await Promise.all(instances.map((p) => p.call('commands'))); // reset the instances' own counts
      const req0 = await proxy.proc.call<number>('requests');
      const before = await commandStats(redis);
      const cpu0 = await redisCpuMs(redis);
      const r = await fn();
      await sleep(50); // let a last UNSUBSCRIBE go out
      const d = diffStats(before, await commandStats(redis));
      const redisMs = (await redisCpuMs(redis)) - cpu0;
      const sent = await Promise.all(instances.map((p) => p.call('commands')));
      const requests = (await proxy.proc.call<number>('requests')) - req0;
      const ops = r.ops;
      const all = Object.values(d).reduce((x, v) => x + v, 0);
      const row = {
        unit,
        ops,
        ...(r.members ? { members: r.members } : {}),
        ...(r.note ? { note: r.note } : {}),
        // Requests straight to an instance pass no proxy: not counted.
        httpPerOp: r.direct ? undefined : requests / ops,
        roundTripsPerOp: sent.reduce((x, c) => x + c.roundTrips, 0) / ops,
        scriptCallsPerOp: count(d, SCRIPT_CALLS) / ops,
        pubsubPerOp: count(d, PUBSUB) / ops,
        publishPerOp: count(d, PUBLISH) / ops,
        commandsPerOp: all / ops,
        redisCpuUsPerOp: (redisMs * 1000) / ops,
        commandstats: d,
      };
      results.cost[name] = row;
      log(
        `  cost ${name}: per ${unit}: ${row.roundTripsPerOp.toFixed(2)} round trips (${row.scriptCallsPerOp.toFixed(2)} script calls, ${row.pubsubPerOp.toFixed(2)} (un)subscribe), ${row.commandsPerOp.toFixed(1)} commands incl. inside scripts (${row.publishPerOp.toFixed(2)} PUBLISH); ${fmt(row.httpPerOp, 2)} HTTP requests; Redis CPU ${row.redisCpuUsPerOp.toFixed(0)} µs`,
      );
    };

    // Echo round trips and pushes with the real client, through the proxy.
    const clients: Array<[string, Partial<OpenOptions>]> = [
      ['default client', {}],
      ['stream: true', { stream: true }],
      // The plain watch (one response per batch), which the default client falls back to behind a buffering proxy.
      ['stream: false', { stream: false }],
    ];
    for (const [what, opts] of clients) {
      const sys = { client: 'bidi' as const, url: viaProxy, ...opts };
      for (const n of [1, CLIENTS]) {
        await withConns(sys, n, async (tag) => {
          await client.call('echo', { tag, rounds: 10, stallMs: STALL_MS });
          const rounds = n === 1 ? 100 : 40;
          await measure(`echo round trip, ${n} client${n > 1 ? 's' : ''}, ${what}`, 'round trip', async () => {
            const r = await client.call('echo', { tag, rounds, stallMs: STALL_MS }, 120_000);
            return { ops: r.roundTrips, ...(r.stalled ? { note: `${r.stalled} stalled` } : {}) };
          });
        });
        await withConns(sys, n, async (tag, ids) => {
          await a.proc.call('push', { sids: ids, ticks: 5, intervalMs: 20 });
          await client.call('collect', { tag, expected: 5, timeoutMs: 3_000, stallMs: STALL_MS });
          await client.call('reset', { tag });
          const ticks = 50;
          await measure(`push delivered, ${n} client${n > 1 ? 's' : ''} (one broadcast per tick), ${what}`, 'delivered message', async () => {
            const since = now();
            await a.proc.call('push', { sids: ids, ticks, intervalMs: 20 }, 60_000);
            const r = await client.call('collect', { tag, expected: ticks, timeoutMs: 5_000, since, stallMs: STALL_MS }, 60_000);
            // The acks for the last messages go out with the next watch: give them a moment.
            await sleep(200);
            return { ops: r.received, ...(r.lost ? { note: `${r.lost} lost` } : {}) };
          });
        });
      }
    }

    // hub.publish to groups of members that have no watch waiting (no wake-ups: the store's write cost alone).
    const biggest = Math.max(0, ...GROUP_SIZES);
    if (biggest > 0 && !overBudget()) {
      const t = now();
      const sids = await handshakes(direct, biggest, 25);
      log(`  cost: ${sids.length} sessions opened for the groups in ${((now() - t) / 1000).toFixed(1)} s`);
      for (const size of GROUP_SIZES) {
        const group = `g${size}`;
        const joined = await a.proc.call<number>('join', { sids: sids.slice(0, size), group }, 300_000);
        const publishes = size >= 10_000 ? 2 : 5;
        await measure(`hub.publish to a group of ${size}`, 'publish', async () => {
          const r = await a.proc.call('publish', { group, count: publishes }, 300_000);
          return { ops: publishes, members: joined, direct: true, note: `${(r.ms / publishes).toFixed(0)} ms per publish; ${r.failed} failed` };
        });
      }
      // A user's loop of unawaited publishes (RedisStore sends a turn's publishes to a group together).
      const size = Math.min(...GROUP_SIZES);
      const loop = 1000;
      await measure(`hub.publish to a group of ${size}, a loop of ${loop} unawaited`, 'publish', async () => {
        const r = await a.proc.call('publish', { group: `g${size}`, count: loop, loop: true }, 300_000);
        return { ops: loop, members: size, direct: true, note: `${((r.ms * 1000) / loop).toFixed(0)} µs per publish; ${r.failed} failed` };
      });
    }

    // Protocol requests one by one, straight to one instance.
    await protocolCost(direct, a.proc, measure);
    // The same watches on an instance whose RedisStore keeps subscriptions (subscriptionLingerMs, if the store still has it).
    if (!overBudget()) {
      const l = await start('cost-linger', 'server', ['bidi'], { ...env, LINGER_MS: '30000' });
      stopped.push(l.proc);
      instances.push(l.proc);
      await protocolCost(`http://127.0.0.1:${l.info.port}/session`, l.proc, measure, ', subscriptionLingerMs 30 s', ['GET watch, messages waiting', 'GET watch, waits, then woken by a push']);
    }
  } finally {
    await Promise.all(stopped.map((p) => p.stop()));
  }
}

/** Opens `n` bidiweb sessions by handshake alone (no client, no watch), `parallel` at a time; returns their sids. */
async function handshakes(url: string, n: number, parallel: number): Promise<string[]> {
  const sids: string[] = [];
  const deadline = now() + 120_000;
  await Promise.all(
    Array.from({ length: Math.min(parallel, n) }, async () => {
      while (sids.length < n && now() < deadline) {
        const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"v":1}' });
        const body = (await res.json()) as { sid?: string };
        if (res.status >= 300 || !body.sid) throw new Error(`handshake: ${res.status} ${JSON.stringify(body)}`);
        sids.push(body.sid);
      }
    }),
  );
  return sids.slice(0, n);
}

type Measure = (name: string, unit: string, fn: () => Promise<{ ops: number; note?: string; direct?: boolean }>) => Promise<void>;

/** Redis commands per protocol request, request type by request type, on one instance. */
async function protocolCost(base: string, pusher: Proc, measure: Measure, suffix = '', only?: string[]): Promise<void> {
  const post = async (pathName: string, sid: string | undefined, body: unknown) => {
    const res = await fetch(base + pathName, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(sid ? { 'bidi-sid': sid } : {}) },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    if (res.status >= 300) throw new Error(`${pathName}: ${res.status} ${text}`);
    return JSON.parse(text);
  };
  const watch = async (sid: string, ack: number, wait: number) => {
    const res = await fetch(`${base}/watch?ack=${ack}&wait=${wait}`, { headers: { 'bidi-sid': sid } });
    return JSON.parse(await res.text());
  };
  const m = (name: string, n: number, fn: () => Promise<void>, note?: string) =>
    only && !only.includes(name)
      ? fn()
      : measure(name + suffix, 'request', async () => {
          await fn();
          return { ops: n, direct: true, ...(note ? { note } : {}) };
        });

  const { sid } = await post('', undefined, { v: 1 });
  let seq = 0;
  const N = 100;
  await m('POST send, ack only', N, async () => {
    for (let i = 0; i < N; i++) await post('/send', sid, { ack: 0 });
  });
  await m('POST send, 1 message delivered', N, async () => {
    for (let i = 0; i < N; i++) await post('/send', sid, { msgs: [[++seq, { n: seq }]], ack: 0 });
  });
  await m('POST send, 10 messages delivered', N / 5, async () => {
    for (let i = 0; i < N / 5; i++) {
      const msgs = Array.from({ length: 10 }, () => [++seq, { n: seq }]);
      await post('/send', sid, { msgs, ack: 0 });
    }
  });
  await m('POST send, 1 message, handler sends 1', N, async () => {
    for (let i = 0; i < N; i++) await post('/send', sid, { msgs: [[++seq, { e: 1, n: seq }]], ack: 0 });
  });
  // N server messages are now waiting: each watch acks one more and returns the rest.
  await m('GET watch, messages waiting', N, async () => {
    for (let i = 0; i < N; i++) await watch(sid, i, 1_000);
  });
  let ack = N;
  await m(
    'GET watch, waits, then woken by a push',
    20,
    async () => {
      for (let i = 0; i < 20; i++) {
        const w = watch(sid, ack, 5_000);
        await sleep(20);
        await pusher.call('burst', { sids: [sid], count: 1, fanout: 'broadcast' });
        const body = await w;
        ack = body.msgs.length ? body.msgs[body.msgs.length - 1][0] : ack;
      }
    },
    'includes the push itself (hub.broadcast to 1) in every count',
  );
}

// --- tables --------------------------------------------------------------------------------

const fmt = (v: number | undefined, digits = 0) => (v === undefined || Number.isNaN(v) ? '–' : v.toFixed(digits));

function medianOf(rows: any[] | undefined, pick: (r: any) => number | undefined): number | undefined {
  const vals = (rows ?? []).map(pick).filter((v): v is number => v !== undefined);
  return vals.length ? median(vals) : undefined;
}

type Scenario = 'echo' | 'push' | 'burst' | 'kill';
const med = (scenario: Scenario, key: string, pick: (r: any) => number | undefined) => medianOf(results[scenario][key], pick);

function table(systems: System[]): string {
  const lines: string[] = [];
  const m = (scenario: Scenario, key: string, pick: (r: any) => number, digits = 0) => fmt(med(scenario, key, pick), digits);
  const cpu = (scenario: Scenario, key: string) =>
    results[scenario][key]?.length
      ? `${m(scenario, key, (r) => r.cpu.serverUs)} (${m(scenario, key, (r) => r.cpu.instancesUs)} + ${m(scenario, key, (r) => r.cpu.proxyUs)} + ${m(scenario, key, (r) => r.cpu.redisUs)}) | ${m(scenario, key, (r) => r.cpu.clientUs)}`
      : '– | –';
  const cpu1 = (scenario: Scenario, key: string) =>
    results[scenario][key]?.length ? `${m(scenario, key, (r) => r.cpu.serverUs, 1)} (${m(scenario, key, (r) => r.cpu.instancesUs, 1)} + ${m(scenario, key, (r) => r.cpu.proxyUs, 1)} + ${m(scenario, key, (r) => r.cpu.redisUs, 1)}) | ${m(scenario, key, (r) => r.cpu.clientUs, 1)}` : '– | –';
  const n = (key: string) => Math.max(...(['echo', 'push', 'burst'] as const).map((s) => (results[s][key] as any[] | undefined)?.length ?? 0));
  lines.push(
    '| system | echo rt/s | echo RTT p50 / p99 ms | echo server CPU µs/rt (instances + proxy + Redis) | echo client CPU µs/rt | push p50 / p99 ms | push server CPU µs/msg | push client CPU µs/msg | burst msg/s | burst server CPU µs/msg | burst client CPU µs/msg | runs |',
  );
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const s of systems) {
    lines.push(
      `| ${s.label} | ${m('echo', s.key, (r) => r.perSec)} | ${m('echo', s.key, (r) => r.rtt.p50, 1)} / ${m('echo', s.key, (r) => r.rtt.p99, 1)} | ${cpu('echo', s.key)} | ${m('push', s.key, (r) => r.latency.p50, 1)} / ${m('push', s.key, (r) => r.latency.p99, 1)} | ${cpu('push', s.key)} | ${m('burst', s.key, (r) => r.perSec)} | ${cpu1('burst', s.key)} | ${n(s.key)} |`,
    );
  }
  lines.push('');
  lines.push(
    `Medians over the runs. echo: ${CLIENTS} clients × ${ECHO_ROUNDS} sequential round trips (no round starts after ${ECHO_MAX_MS / 1000} s); push: every ${PUSH_INTERVAL_MS} ms to each of ${CLIENTS} clients, ${PUSH_TICKS} times; burst: ${BURST} messages to each of ${CLIENTS} clients as fast as possible (bidiweb: ${BURST_INFLIGHT > 0 ? `${BURST_INFLIGHT} publishes` : 'every publish'} in flight at once). Server CPU = every server process + the proxy + redis-server, per echo round trip or per delivered message.`,
  );

  // Stalls and faults, run by run.
  lines.push('');
  const perRun = (scenario: Scenario, key: string, pick: (r: any) => number) => (results[scenario][key] as any[] | undefined)?.map(pick).join(', ') ?? '–';
  const worst = (scenario: Scenario, key: string) => {
    const rows = results[scenario][key] as any[] | undefined;
    return rows?.length ? fmt(Math.max(...rows.map((r) => r.clientMax.max))) : '–';
  };
  const faults = (scenario: Scenario, key: string) => {
    const rows = results[scenario][key] as any[] | undefined;
    const sum = (k: string) => rows!.reduce((a, r) => a + r[k], 0);
    return rows?.length ? `${sum('lost')} / ${sum('dup')} / ${sum('outOfOrder')}` : '–';
  };
  lines.push(
    `| system (stall = no echo / no push within ${STALL_MS / 1000} s; of ${CLIENTS} clients, per run) | echo stalled (warm-up) | echo slowest client ms | push stalled (warm-up) | push slowest client ms | push lost / dup / ooo | burst stalled | burst slowest client ms | burst lost / dup / ooo |`,
  );
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const s of systems) {
    lines.push(
      `| ${s.label} | ${perRun('echo', s.key, (r) => r.stalled)} (${perRun('echo', s.key, (r) => r.warmupStalled)}) | ${worst('echo', s.key)} | ${perRun('push', s.key, (r) => r.stalled)} (${perRun('push', s.key, (r) => r.warmupStalled)}) | ${worst('push', s.key)} | ${faults('push', s.key)} | ${perRun('burst', s.key, (r) => r.stalled)} | ${worst('burst', s.key)} | ${faults('burst', s.key)} |`,
    );
  }

  const idleCounts = [...new Set(Object.values(results.idle).flatMap((o: any) => Object.keys(o).map(Number)))].sort((a, b) => a - b);
  if (idleCounts.length) {
    lines.push('');
    lines.push(`| idle sessions, one instance: heap / RSS KiB per session | ${idleCounts.join(' | ')} |`);
    lines.push(`| --- | ${idleCounts.map(() => '---:').join(' | ')} |`);
    const idleRow = (label: string, o: any) =>
      lines.push(
        `| ${label} | ${idleCounts.map((c) => (o?.[c] ? `${fmt(o[c].heapPerSession / 1024, 1)} / ${fmt(o[c].rssPerSession / 1024, 1)}${o[c].waiting < c ? ` (${o[c].waiting} waiting)` : ''}` : '–')).join(' | ')} |`,
      );
    if (results.floor.idle) idleRow('floor: plain Node HTTP, one held request', results.floor.idle);
    for (const s of systems) if (results.idle[s.key]) idleRow(`${s.label} (one instance)`, results.idle[s.key]);
  }
  const killed = systems.filter((s) => results.kill[s.key]?.length);
  if (killed.length) {
    lines.push('');
    lines.push(
      `| kill an instance mid-stream (${KILL_TICKS} pushes to each of ${CLIENTS} clients, every ${PUSH_INTERVAL_MS} ms; instance 2 of 2 SIGKILLed at ${KILL_AT_MS} ms), per run | lost | duplicated | out of order | clients missing some | upgrades after the kill | push p50 / p99 ms |`,
    );
    lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    const per = (key: string, pick: (r: any) => string) => (results.kill[key] as any[]).map(pick).join(', ');
    for (const s of killed) {
      lines.push(
        `| ${s.label} | ${per(s.key, (r) => r.lost)} | ${per(s.key, (r) => r.dup)} | ${per(s.key, (r) => r.outOfOrder)} | ${per(s.key, (r) => r.incomplete)} | ${per(s.key, (r) => r.reconnects)} | ${per(s.key, (r) => `${fmt(r.latency.p50, 1)} / ${fmt(r.latency.p99, 1)}`)} |`,
      );
    }
  }
  const f = results.floor;
  if (f.http || f.redis) {
    lines.push('');
    lines.push('| floor (same run) | value |');
    lines.push('| --- | ---: |');
    for (const [k, what] of [
      ['http', 'node:http client'],
      ['fetch', 'global fetch client'],
    ] as const) {
      if (f[k]) {
        lines.push(
          `| plain Node HTTP POST, ${what} (${CLIENTS} clients × ${ECHO_ROUNDS}): rt/s; RTT p50 / p99 ms; CPU µs/rt server + client | ${fmt(f[k].perSec)}; ${fmt(f[k].rtt.p50, 1)} / ${fmt(f[k].rtt.p99, 1)}; ${fmt(f[k].cpu?.serverUs)} + ${fmt(f[k].cpu?.clientUs)} |`,
        );
      }
    }
    if (f.redis) {
      lines.push(`| Redis PING (ioredis), sequential: RTT p50 / p99 ms | ${fmt(f.redis.rtt.p50, 3)} / ${fmt(f.redis.rtt.p99, 3)} |`);
      lines.push(`| Redis PING, ${CLIENTS} in parallel: per s | ${fmt(f.redis.perSec)} |`);
    }
  }
  return lines.join('\n');
}

function costTable(): string {
  const lines: string[] = [];
  const rows = Object.entries<any>(results.cost);
  const echoRows = Object.keys(results.echo).filter((k) => results.echo[k].some((r: any) => r.redis));
  if (!rows.length && !echoRows.length) return '';
  lines.push('| bidiweb + RedisStore: per operation | HTTP requests | Redis round trips | script calls | (un)subscribe | PUBLISH | Redis commands incl. inside scripts | Redis CPU µs |');
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const [name, c] of rows) {
    const perMember = c.members ? ` (${fmt(c.commandsPerOp / c.members, 2)} per member)` : '';
    lines.push(
      `| ${name}, per ${c.unit}${c.note ? ` (${c.note})` : ''} | ${fmt(c.httpPerOp, 2)} | ${fmt(c.roundTripsPerOp, 2)} | ${fmt(c.scriptCallsPerOp, 2)} | ${fmt(c.pubsubPerOp, 2)} | ${fmt(c.publishPerOp, 2)} | ${fmt(c.commandsPerOp, 1)}${perMember} | ${fmt(c.redisCpuUsPerOp)} |`,
    );
  }
  for (const key of echoRows) {
    const e = (pick: (r: any) => number) => medianOf(results.echo[key], (r) => (r.redis ? pick(r.redis) : undefined));
    lines.push(
      `| echo under load (${CLIENTS} clients), ${results.systems[key]}, per round trip | ${fmt(e((r) => r.requestsPerRoundTrip), 2)} | ${fmt(e((r) => r.roundTripsPerRoundTrip), 2)} | | | | ${fmt(e((r) => r.commandsPerRoundTrip), 1)} | |`,
    );
  }
  lines.push('');
  lines.push(
    'Store-cost rows run on a setup of their own (own redis-server; two instances without sweep timers behind the round-robin proxy; protocol-request rows straight to one instance). Group members have no watch waiting, so a publish wakes nobody. "echo under load" rows come from the echo scenario (their counts include the instances\' sweeps).',
  );
  return lines.join('\n');
}

function ratios(systems: System[]): string {
  const lines: string[] = [];
  const ratio = (a?: number, b?: number) => (a === undefined || b === undefined || !b ? '–' : `${(a / b).toFixed(2)}×`);
  const heap = (k: string, n: number) => results.idle[k]?.[n]?.heapPerSession as number | undefined;
  const rss = (k: string, n: number) => results.idle[k]?.[n]?.rssPerSession as number | undefined;
  const idleN = Math.max(...IDLE);
  lines.push(
    `| system ÷ its reference, same run (medians) | echo rt/s | echo server CPU/rt | echo client CPU/rt | push p50 latency | push server CPU/msg | burst msg/s | burst server CPU/msg | idle heap / RSS per session at ${idleN} |`,
  );
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const s of systems) {
    const ref = SYSTEMS[s.key]?.reference;
    if (!ref || !results.systems[ref]) continue;
    const r = (scenario: Scenario, pick: (x: any) => number) => ratio(med(scenario, s.key, pick), med(scenario, ref, pick));
    // Idle runs on one instance; for a multi-instance pair, compare with whatever idle row the reference tier has.
    const idleRef = results.idle[ref] ? ref : SYSTEMS[ref]!.tier === 'multi' && results.idle['sio-poll'] ? 'sio-poll' : ref;
    lines.push(
      `| ${s.label} ÷ ${results.systems[ref]} | ${r('echo', (x) => x.perSec)} | ${r('echo', (x) => x.cpu.serverUs)} | ${r('echo', (x) => x.cpu.clientUs)} | ${r('push', (x) => x.latency.p50)} | ${r('push', (x) => x.cpu.serverUs)} | ${r('burst', (x) => x.perSec)} | ${r('burst', (x) => x.cpu.serverUs)} | ${ratio(heap(s.key, idleN), heap(idleRef, idleN))} / ${ratio(rss(s.key, idleN), rss(idleRef, idleN))} |`,
    );
  }
  return lines.length > 2 ? lines.join('\n') : '';
}

// --- main ----------------------------------------------------------------------------------

async function startSystems(only: Set<string>): Promise<System[]> {
  const systems: System[] = [];
  const add = (key: string, s: Omit<System, 'key' | 'label'>) => only.has(key) && systems.push({ key, label: SYSTEMS[key]!.label, ...s });
  let idleNo = 0;
  const idleBidi = (env: Record<string, string>): System['idle'] => ({
    count: 'inflight',
    start: async () => {
      const { proc, info } = await start(`idle-${++idleNo}`, 'server', ['bidi'], env);
      return { proc, url: `http://127.0.0.1:${info.port}/session` };
    },
  });
  const idleSio = (count: 'inflight' | 'clients', env: Record<string, string> = {}): System['idle'] => ({
    count,
    start: async () => {
      const { proc, info } = await start(`idle-${++idleNo}`, 'server', ['sio'], env);
      return { proc, url: `http://127.0.0.1:${info.port}` };
    },
  });
  const any = (...keys: string[]) => keys.some((k) => only.has(k));

  /**
   * Two instances behind the proxy. `restart` replaces all three processes with fresh ones (`--fresh`) and
   * points every system of the pair at them.
   */
  let pairNo = 0;
  const pair = async (name: string, mode: 'bidi' | 'sio', proxyMode: 'rr' | 'sticky', env: Record<string, string>, urlPath: string) => {
    const up = async () => {
      const no = ++pairNo;
      const a = await start(`${name}-1.${no}`, 'server', [mode], env);
      const b = await start(`${name}-2.${no}`, 'server', [mode], env);
      const proxy = await start(`${name}-lb.${no}`, 'proxy', [proxyMode, String(a.info.port), String(b.info.port)]);
      return { url: `http://127.0.0.1:${proxy.info.port}${urlPath}`, pusher: a.proc, instances: [a.proc, b.proc], proxy: proxy.proc };
    };
    const members: System[] = [];
    const deployment = await up();
    const restart = async () => {
      const old = members[0]!;
      await Promise.all([...old.instances, old.proxy!].map((p) => p.stop()));
      const next = await up();
      for (const m of members) Object.assign(m, next);
    };
    return { deployment, restart, members };
  };

  if (any('sio-proxy')) {
    log('starting Socket.IO ×2 + Redis streams adapter (own redis-server) behind the proxy in sticky mode');
    const { server, client: redis } = await newRedis();
    const env = { ADAPTER: 'redis', REDIS_PORT: String(server.port), PREFIX: 'proxy:' };
    const p = await pair('sio-proxy', 'sio', 'sticky', env, '');
    add('sio-proxy', {
      client: 'sio-polling',
      sharedAgent: true,
      ...p.deployment,
      redis,
      restart: p.restart,
      // Idle memory is per instance: measured here only when the single-instance reference is not run.
      ...(only.has('sio-poll') ? {} : { idle: idleSio('inflight', env) }),
    });
    p.members.push(...systems.filter((x) => x.key === 'sio-proxy'));
  }
  if (any('bidi-redis', 'bidi-redis-stream', 'bidi-redis-stream-http', 'bidi-redis-http')) {
    log('starting bidiweb ×2 + RedisStore (own redis-server) behind the proxy in round-robin mode');
    const { server, client: redis } = await newRedis();
    const env = { STORE: 'redis', REDIS_PORT: String(server.port), PREFIX: 'bench:' };
    const p = await pair('bidi-redis', 'bidi', 'rr', env, '/session');
    const common = { client: 'bidi' as const, ...p.deployment, redis, countCommands: true, restart: p.restart };
    add('bidi-redis', { ...common, idle: idleBidi({ ...env, PREFIX: 'idle:' }) });
    add('bidi-redis-stream', { ...common, stream: true });
    add('bidi-redis-stream-http', { ...common, stream: true, fetch: 'node-http' });
    add('bidi-redis-http', { ...common, fetch: 'node-http' });
    p.members.push(...systems.filter((x) => x.key.startsWith('bidi-redis')));
  }
  if (any('sio-sticky')) {
    log('starting Socket.IO ×2 behind @socket.io/sticky + Redis streams adapter (own redis-server)');
    const { server, client: redis } = await newRedis();
    const { proc, info } = await start('sio-sticky', 'server', ['sio-sticky'], { ADAPTER: 'redis', REDIS_PORT: String(server.port), PREFIX: 'sticky:', WORKERS: '2' });
    // A sticky primary routes connections, not requests: one keep-alive pool per socket (sharedAgent false).
    add('sio-sticky', { client: 'sio-polling', url: `http://127.0.0.1:${info.port}`, pusher: proc, instances: [proc], redis });
  }
  if (any('sio-poll')) {
    const { proc, info } = await start('sio-poll', 'server', ['sio']);
    add('sio-poll', { client: 'sio-polling', sharedAgent: true, url: `http://127.0.0.1:${info.port}`, pusher: proc, instances: [proc], idle: idleSio('inflight') });
  }
  if (any('bidi-mem', 'bidi-mem-stream-http', 'bidi-mem-stream')) {
    const { proc, info } = await start('bidi-mem', 'server', ['bidi'], { STORE: 'memory' });
    const common = { client: 'bidi' as const, url: `http://127.0.0.1:${info.port}/session`, pusher: proc, instances: [proc] };
    add('bidi-mem', { ...common, idle: idleBidi({ STORE: 'memory' }) });
    add('bidi-mem-stream-http', { ...common, stream: true, fetch: 'node-http' });
    add('bidi-mem-stream', { ...common, stream: true });
  }
  if (any('sio-ws')) {
    const { proc, info } = await start('sio-ws', 'server', ['sio']);
    add('sio-ws', { client: 'sio-ws', url: `http://127.0.0.1:${info.port}`, pusher: proc, instances: [proc], idle: idleSio('clients') });
  }
  if (any('sio-ws-proxy')) {
    log('starting Socket.IO ×2 + Redis streams adapter (own redis-server) behind the proxy, WebSocket clients');
    const { server, client: redis } = await newRedis();
    const env = { ADAPTER: 'redis', REDIS_PORT: String(server.port), PREFIX: 'wsproxy:' };
    const p = await pair('sio-ws-proxy', 'sio', 'sticky', env, '');
    add('sio-ws-proxy', { client: 'sio-ws', ...p.deployment, redis, restart: p.restart });
    p.members.push(...systems.filter((x) => x.key === 'sio-ws-proxy'));
  }
  if (any('sio-ws-proxy-csr')) {
    log('starting Socket.IO ×2 + Redis streams adapter with connectionStateRecovery (own redis-server) behind the proxy, WebSocket clients');
    const { server, client: redis } = await newRedis();
    const env = { ADAPTER: 'redis', REDIS_PORT: String(server.port), PREFIX: 'wscsr:', CSR: '1' };
    const p = await pair('sio-ws-proxy-csr', 'sio', 'sticky', env, '');
    add('sio-ws-proxy-csr', { client: 'sio-ws', ...p.deployment, redis, restart: p.restart });
    p.members.push(...systems.filter((x) => x.key === 'sio-ws-proxy-csr'));
  }
  if (any('bidi-redis-ws')) {
    log('starting bidiweb ×2 + RedisStore (own redis-server) with bidiweb/ws behind the proxy in round-robin mode');
    const { server, client: redis } = await newRedis();
    const env = { STORE: 'redis', REDIS_PORT: String(server.port), PREFIX: 'benchws:', WS: '1' };
    const p = await pair('bidi-redis-ws', 'bidi', 'rr', env, '/session');
    add('bidi-redis-ws', { client: 'bidi', transport: 'websocket', ...p.deployment, redis, countCommands: true, restart: p.restart });
    p.members.push(...systems.filter((x) => x.key === 'bidi-redis-ws'));
  }
  if (any('bidi-mem-ws')) {
    const { proc, info } = await start('bidi-mem-ws', 'server', ['bidi'], { STORE: 'memory', WS: '1' });
    add('bidi-mem-ws', { client: 'bidi', transport: 'websocket', url: `http://127.0.0.1:${info.port}/session`, pusher: proc, instances: [proc] });
  }
  // Table order: the catalogue's.
  const order = Object.keys(SYSTEMS);
  return systems.sort((x, y) => order.indexOf(x.key) - order.indexOf(y.key));
}

async function main(): Promise<void> {
  log(`bidiweb benchmarks: ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  noteLoad('start');
  const needSystems = SCENARIOS.some((s) => ['echo', 'push', 'burst', 'idle', 'kill'].includes(s));
  const only = needSystems ? selectedSystems() : new Set<string>();

  client = (await start('client', 'client', [])).proc;
  log(`systems: ${[...only].join(', ') || 'none'}; scenarios: ${SCENARIOS.join(', ')}; ${ROUNDS} rounds; stall = ${STALL_MS} ms without an answer${FRESH ? '; fresh instances for every run' : ''}`);
  const systems = await startSystems(only);
  for (const s of systems) results.systems[s.key] = s.label;

  const run = async (name: string, fn: () => Promise<void>) => {
    if (overBudget()) {
      results.errors.push(`${name}: skipped, over the time budget`);
      log(`${name}: skipped (over the time budget)`);
      return;
    }
    try {
      await fn();
    } catch (err) {
      const msg = `${name}: ${err instanceof Error ? err.message : String(err)}`;
      results.errors.push(msg);
      log(`ERROR ${msg}`);
    }
  };
  /** Each round visits every system; the order rotates (and reverses every other round) so no system always goes first. */
  const alternate = async (scenario: string, fn: (s: System) => Promise<void>) => {
    for (let round = 0; round < ROUNDS; round++) {
      const order = systems.map((_, i) => systems[(i + round) % systems.length]!);
      if (round % 2 === 1) order.reverse();
      for (const s of order) await run(`${scenario} ${s.key}`, () => fn(s));
    }
    noteLoad(`after ${scenario}`);
  };

  if (SCENARIOS.includes('floor')) {
    log('floor: plain Node HTTP and Redis PING on loopback');
    await run('floor', async () => {
      const { proc, info } = await start('plain', 'server', ['plain']);
      const url = `http://127.0.0.1:${info.port}/echo`;
      const plainSys = { instances: [proc] };
      for (const [key, cmd, what] of [
        ['http', 'floorNodeHttp', 'node:http client'],
        ['fetch', 'floorHttp', 'global fetch client'],
      ] as const) {
        await client.call(cmd, { url, clients: CLIENTS, rounds: ECHO_WARMUP });
        const cpu0 = await cpuNow(plainSys);
        const r = await client.call(cmd, { url, clients: CLIENTS, rounds: ECHO_ROUNDS });
        r.cpu = await cpuPer(plainSys, cpu0, r.roundTrips);
        results.floor[key] = r;
        log(`  plain HTTP (${what}): ${r.perSec.toFixed(0)} rt/s, RTT p50 ${r.rtt.p50.toFixed(2)} p99 ${r.rtt.p99.toFixed(2)} ms; CPU per round trip: server ${r.cpu.serverUs.toFixed(0)} µs, client ${r.cpu.clientUs.toFixed(0)} µs`);
      }
      const { server } = await newRedis();
      results.floor.redis = await client.call('floorRedis', { port: server.port, n: 5_000, clients: CLIENTS });
      log(`  Redis PING: RTT p50 ${results.floor.redis.rtt.p50.toFixed(3)} p99 ${results.floor.redis.rtt.p99.toFixed(3)} ms; ${results.floor.redis.perSec.toFixed(0)}/s with ${CLIENTS} in parallel`);
      await proc.stop();
    });
  }
  if (SCENARIOS.includes('echo') && systems.length) {
    log(`echo: ${CLIENTS} clients × ${ECHO_ROUNDS} sequential round trips (after ${ECHO_WARMUP} warm-up rounds)`);
    await alternate('echo', echoRun);
  }
  if (SCENARIOS.includes('push') && systems.length) {
    log(`push: the server pushes to ${CLIENTS} clients every ${PUSH_INTERVAL_MS} ms, ${PUSH_TICKS} each`);
    await alternate('push', pushRun);
  }
  if (SCENARIOS.includes('burst') && systems.length) {
    log(`burst: ${CLIENTS} clients × ${BURST} pushed messages, as fast as possible`);
    await alternate('burst', burstRun);
  }
  if (SCENARIOS.includes('kill') && systems.length) {
    log(`kill: ${KILL_TICKS} pushes to each of ${CLIENTS} clients; the second instance SIGKILLed ${KILL_AT_MS} ms in`);
    await alternate('kill', async (s) => {
      if (s.restart && s.instances.length >= 2) await killRun(s);
    });
  }
  if (SCENARIOS.includes('cost')) {
    log(`store cost: Redis round trips and commands per operation (own redis-server, INFO commandstats deltas); groups of ${GROUP_SIZES.join(', ')}`);
    await run('cost', costScenario);
    noteLoad('after cost');
  }
  if (SCENARIOS.includes('idle')) {
    log(`idle: ${IDLE.join(' and ')} open sessions with a waiting watch on one instance (heap and RSS after gc, in the server process)`);
    await run('idle floor', async () => {
      const { proc, info } = await start('plain-idle', 'server', ['plain']);
      const url = `http://127.0.0.1:${info.port}/hold`;
      await idleMeasure({ key: 'floor', label: 'plain Node HTTP, a held request', client: 'hold' }, { proc, url, count: 'inflight' }, IDLE);
      results.floor.idle = results.idle.floor;
      delete results.idle.floor;
      await proc.stop();
    });
    for (const s of systems) {
      if (!s.idle) continue;
      const counts = s.client === 'bidi' && IDLE_MAX > Math.max(...IDLE) ? [...IDLE, IDLE_MAX] : IDLE;
      await run(`idle ${s.key}`, () => idleRun(s, counts));
    }
    noteLoad('after idle');
  }

  results.proxies = Object.fromEntries(
    await Promise.all(systems.filter((s) => s.proxy).map(async (s) => [s.key, await s.proxy!.call('stats').catch(() => undefined)] as const)),
  );
  results.machine.loadavgEnd = os.loadavg();
  results.elapsedMs = now() - started;
  const text = [table(systems), ratios(systems), costTable()].filter(Boolean).join('\n\n');
  results.table = text;
  const out = argv.get('out') ?? path.join(ROOT, 'bench', 'results', `${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}.json`);
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(results, null, 2) + '\n');
  process.stdout.write(`\n${text}\n\n`);
  process.stdout.write(`load average (1/5/15 min): ${results.loadavg.map((l: any) => `${l.at} ${l.load.join(' ')}`).join('; ')}\n\n`);
  if (results.errors.length) process.stdout.write(`errors:\n${results.errors.map((e: string) => `  - ${e}`).join('\n')}\n\n`);
  log(`done in ${((now() - started) / 1000).toFixed(0)} s; results in ${path.relative(ROOT, out)}`);
}

/** `--render=file.json`: the tables of an earlier run, from its raw results (e.g. after a change to the tables). */
function render(file: string): void {
  Object.assign(results, JSON.parse(readFileSync(file, 'utf8')));
  const systems = Object.entries<string>(results.systems).map(([key, label]) => ({ key, label }) as System);
  process.stdout.write(`${[table(systems), ratios(systems), costTable()].filter(Boolean).join('\n\n')}\n\n`);
  process.stdout.write(`load average (1/5/15 min): ${(results.loadavg ?? []).map((l: any) => `${l.at} ${l.load.join(' ')}`).join('; ')}\n`);
}

async function shutdown(): Promise<void> {
  await Promise.all(procs.map((p) => p.stop().catch(() => {})));
  for (const r of redisClients) r.disconnect();
  await Promise.all(redisServers.map((r) => r.stop().catch(() => {})));
}

const hardStop = setTimeout(() => {
  log('hard time limit reached: stopping');
  void shutdown().finally(() => process.exit(3));
}, BUDGET_MS + 60_000);
hardStop.unref();

process.on('SIGINT', () => void shutdown().finally(() => process.exit(130)));
(argv.has('render') ? Promise.resolve(render(argv.get('render')!)) : main())
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => shutdown().then(() => process.exit()));
