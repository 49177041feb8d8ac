/**
 * `npm run bench`: bidiweb side by side with Socket.IO 4, same machine, same
 * run, same client counts. Every server under test runs in its own process,
 * the clients in another; only 127.0.0.1 is used; every loop is bounded in
 * count and in time. Prints a table and writes bench/results/<date>.json.
 *
 * Options (after `npm run bench --`):
 *   --only=echo,push,burst,idle,floor,cost   scenarios to run (default: all)
 *   --systems=bidi-mem,bidi-redis,...       systems to run (default: all)
 *   --rounds=N                              repeat echo/push/burst N times, alternating systems (default 3)
 *   --idle=1000,5000                        idle session counts (default 1000,5000; bidiweb also gets --idle-max)
 *   --idle-max=10000                        extra idle count for bidiweb only (0 = skip)
 *   --out=path.json                         result file (default bench/results/<date>.json)
 *   --bidi-fetch=global                     the bidiweb client on Node's global fetch instead of node:http
 *   --cpu-prof=dir                          V8 CPU profiles of every process (bench/profile-top.mjs reads them)
 *   --heap-snapshots=dir                    heap snapshots of the idle instance (bench/heap-top.mjs compares them)
 */
import { execSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { startRedis, type RedisProcess } from '../test/helpers/redis-server';
import { median, now, Proc, sleep } from './lib';

// --- options -----------------------------------------------------------------------------

const argv = new Map(
  process.argv.slice(2).map((a) => {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    return m ? [m[1]!, m[2] ?? 'true'] : [a, 'true'];
  }),
);
const list = (name: string, fallback: string[]) => (argv.has(name) ? argv.get(name)!.split(',').filter(Boolean) : fallback);

const SCENARIOS = list('only', ['floor', 'echo', 'push', 'burst', 'idle', 'cost']);
const ROUNDS = Number(argv.get('rounds') ?? 3);
const IDLE = list('idle', ['1000', '5000']).map(Number);
const IDLE_MAX = Number(argv.get('idle-max') ?? 10_000);
/** Scenarios still to run are skipped after this; everything is stopped at BUDGET_MS + 60 s (under 10 minutes). */
const BUDGET_MS = 8.5 * 60_000;
const CLIENTS = 50;
const ECHO_ROUNDS = 200;
const ECHO_WARMUP = 20;
const PUSH_TICKS = 200;
const PUSH_INTERVAL_MS = 10;
const BURST = 1_000;

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

interface System {
  key: string;
  label: string;
  client: ClientKind;
  /** bidiweb clients: streaming watch (`stream: true`). */
  stream?: boolean;
  /** socket.io-client polling: one connection pool for all sockets (no stickiness needed). */
  sharedAgent?: boolean;
  /** Where clients connect. */
  url: string;
  /** The process asked to push (it reaches every client, through the store or the adapter). */
  pusher: Proc;
  /** For the idle scenario: how to start a fresh instance of its own (stopped afterwards), and what counts its waiters. */
  idle?: { start: () => Promise<{ proc: Proc; url: string }>; count: 'inflight' | 'clients' };
  /** Redis whose commands this system uses, for the per-request counts. */
  redis?: Redis;
  /** The process in front of the instances, if any. */
  proxy?: Proc;
  /** Every process serving this system (for CPU accounting), and the Redis whose CPU counts too. */
  cpu: Proc[];
  cpuRedis?: Redis;
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

// --- results -------------------------------------------------------------------------------

const results: any = {
  date: new Date().toISOString(),
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
  settings: { CLIENTS, ECHO_ROUNDS, ECHO_WARMUP, PUSH_TICKS, PUSH_INTERVAL_MS, BURST, ROUNDS, IDLE, IDLE_MAX },
  systems: {} as Record<string, string>,
  echo: {} as Record<string, any[]>,
  push: {} as Record<string, any[]>,
  burst: {} as Record<string, any[]>,
  idle: {} as Record<string, any>,
  floor: {} as Record<string, any>,
  cost: {} as Record<string, any>,
  errors: [] as string[],
};

function record(scenario: 'echo' | 'push' | 'burst', key: string, value: unknown): void {
  (results[scenario][key] ??= []).push(value);
}

// --- scenarios -----------------------------------------------------------------------------

let client!: Proc;
let tagNo = 0;

async function withConns<T>(sys: System, n: number, fn: (tag: string, ids: string[]) => Promise<T>, url = sys.url): Promise<T> {
  const tag = `t${++tagNo}`;
  try {
    const { ids } = await client.call('open', { tag, system: sys.client, url, n, stream: sys.stream, sharedAgent: sys.sharedAgent }, 120_000);
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

function diffStats(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) {
    const d = v - (a[k] ?? 0);
    if (d > 0 && k !== 'info') out[k] = d;
  }
  return out;
}

/** CPU ms used so far by the system's processes (and its Redis), and by the client process. */
async function cpuNow(sys: System): Promise<{ server: number; client: number }> {
  const parts = await Promise.all(sys.cpu.map((p) => p.call<number>('cpu')));
  let server = parts.reduce((a, b) => a + b, 0);
  if (sys.cpuRedis) {
    const info = await sys.cpuRedis.info('cpu');
    server += (Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1] ?? 0) + Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1] ?? 0)) * 1000;
  }
  return { server, client: await client.call<number>('cpu') };
}

/** CPU µs per unit of work, server side (all its processes, its Redis) and client side. */
async function cpuPer(sys: System, before: { server: number; client: number }, units: number) {
  const after = await cpuNow(sys);
  return { serverUs: ((after.server - before.server) * 1000) / units, clientUs: ((after.client - before.client) * 1000) / units };
}

async function echoRun(sys: System): Promise<void> {
  await withConns(sys, CLIENTS, async (tag) => {
    await client.call('echo', { tag, rounds: ECHO_WARMUP });
    const before = sys.redis ? await commandStats(sys.redis) : undefined;
    const proxyBefore = sys.proxy ? await sys.proxy.call('requests') : 0;
    // The instances count the commands they send (a pipeline is one round trip): reset, run, read.
    if (sys.redis) await Promise.all(sys.cpu.filter((p) => p !== sys.proxy).map((p) => p.call('commands')));
    const cpu0 = await cpuNow(sys);
    const r = await client.call('echo', { tag, rounds: ECHO_ROUNDS }, 180_000);
    r.cpu = await cpuPer(sys, cpu0, r.roundTrips);
    if (sys.redis && before) {
      const d = diffStats(before, await commandStats(sys.redis));
      const sent = await Promise.all(sys.cpu.filter((p) => p !== sys.proxy).map((p) => p.call('commands')));
      const roundTrips = sent.reduce((a, c) => a + c.roundTrips, 0);
      const requests = (await sys.proxy!.call('requests')) - proxyBefore;
      const all = Object.values(d).reduce((a, v) => a + v, 0);
      r.redis = {
        requests,
        roundTripsPerRequest: roundTrips / requests,
        roundTripsPerRoundTrip: roundTrips / r.roundTrips,
        commandsPerRequest: all / requests,
        commands: d,
      };
    }
    record('echo', sys.key, r);
    log(
      `  echo ${sys.label}: ${r.perSec.toFixed(0)} rt/s, RTT p50 ${r.rtt.p50.toFixed(2)} p90 ${r.rtt.p90.toFixed(2)} p99 ${r.rtt.p99.toFixed(2)} ms; CPU per round trip: server ${r.cpu.serverUs.toFixed(0)} µs, client ${r.cpu.clientUs.toFixed(0)} µs${r.timeouts ? `; ${r.timeouts} timeouts` : ''}`,
    );
  });
}

async function pushRun(sys: System): Promise<void> {
  await withConns(sys, CLIENTS, async (tag, ids) => {
    // A short warm-up push, not counted.
    await sys.pusher.call('push', { sids: ids, ticks: 20, intervalMs: PUSH_INTERVAL_MS });
    await client.call('collect', { tag, expected: 20, timeoutMs: 3_000 });
    await client.call('reset', { tag });
    const cpu0 = await cpuNow(sys);
    const p = await sys.pusher.call('push', { sids: ids, ticks: PUSH_TICKS, intervalMs: PUSH_INTERVAL_MS }, 60_000);
    const r = await client.call('collect', { tag, expected: PUSH_TICKS, timeoutMs: 5_000 }, 30_000);
    r.cpu = await cpuPer(sys, cpu0, r.received);
    r.server = p;
    record('push', sys.key, r);
    log(
      `  push ${sys.label}: latency p50 ${r.latency.p50.toFixed(2)} p99 ${r.latency.p99.toFixed(2)} ms; lost ${r.lost} dup ${r.dup} out-of-order ${r.outOfOrder}; CPU per message: server ${r.cpu.serverUs.toFixed(0)} µs, client ${r.cpu.clientUs.toFixed(0)} µs`,
    );
  });
}

async function burstRun(sys: System): Promise<void> {
  await withConns(sys, CLIENTS, async (tag, ids) => {
    const cpu0 = await cpuNow(sys);
    const p = await sys.pusher.call('burst', { sids: ids, count: BURST }, 120_000);
    const r = await client.call('collect', { tag, expected: BURST, timeoutMs: 60_000 }, 90_000);
    r.cpu = await cpuPer(sys, cpu0, r.received);
    r.server = p;
    record('burst', sys.key, r);
    log(`  burst ${sys.label}: ${r.perSec.toFixed(0)} msg/s (${r.received} in ${r.spanMs.toFixed(0)} ms; server sent in ${p.ms.toFixed(0)} ms); lost ${r.lost} dup ${r.dup} ooo ${r.outOfOrder}; CPU per message: server ${r.cpu.serverUs.toFixed(1)} µs, client ${r.cpu.clientUs.toFixed(1)} µs`);
  });
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

async function idleMeasure(sys: System, target: { proc: Proc; url: string; count: 'inflight' | 'clients' }, counts: number[]): Promise<void> {
  const out: Record<string, any> = {};
  const snapDir = argv.get('heap-snapshots');
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
      await client.call('open', { tag, system: sys.client, url: target.url, n: n - open, parallel: 50, stream: sys.stream, sharedAgent: sys.sharedAgent }, 300_000);
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
        `  idle ${sys.label} ${n}: ${reached - baseCount} waiting; heap ${(out[n].heapPerSession / 1024).toFixed(2)} KiB/session, RSS ${(out[n].rssPerSession / 1024).toFixed(2)} KiB/session${redisBytes !== undefined ? `; Redis ${redisBytes.toFixed(0)} B/session` : ''}`,
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

/** Redis commands per protocol request, measured request type by request type on one instance. */
async function costRun(instanceUrl: string, instance: Proc, redis: Redis, pusher: Proc, suffix = '', only?: string[]): Promise<void> {
  const base = instanceUrl;
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
  const measure = async (name: string, requests: number, fn: () => Promise<void>) => {
    if (only && !only.includes(name)) return fn();
    name += suffix;
    await instance.call('commands'); // reset the process's own count
    const before = await commandStats(redis);
    await fn();
    await sleep(50); // let the last UNSUBSCRIBE go out
    const d = diffStats(before, await commandStats(redis));
    const own = await instance.call('commands');
    const all = Object.values(d).reduce((a, v) => a + v, 0);
    const scripts = (d.evalsha ?? 0) + (d.eval ?? 0);
    const pubsub = (d.subscribe ?? 0) + (d.unsubscribe ?? 0) + (d.ssubscribe ?? 0) + (d.sunsubscribe ?? 0);
    const row = {
      requests,
      roundTripsPerRequest: own.roundTrips / requests,
      scriptCallsPerRequest: scripts / requests,
      pubsubPerRequest: pubsub / requests,
      commandsPerRequest: all / requests,
      commandstats: d,
      sent: own.commands,
    };
    results.cost[name] = row;
    log(
      `  cost ${name}: ${row.roundTripsPerRequest.toFixed(2)} round trips/request (${row.scriptCallsPerRequest.toFixed(2)} script calls + ${row.pubsubPerRequest.toFixed(2)} (un)subscribe); ${row.commandsPerRequest.toFixed(1)} Redis commands incl. inside scripts`,
    );
  };

  const { sid } = await post('', undefined, { v: 1 });
  let seq = 0;
  const N = 100;
  await measure('POST send, ack only', N, async () => {
    for (let i = 0; i < N; i++) await post('/send', sid, { ack: 0 });
  });
  await measure('POST send, 1 message delivered', N, async () => {
    for (let i = 0; i < N; i++) await post('/send', sid, { msgs: [[++seq, { n: seq }]], ack: 0 });
  });
  await measure('POST send, 10 messages delivered', N / 5, async () => {
    for (let i = 0; i < N / 5; i++) {
      const msgs = Array.from({ length: 10 }, () => [++seq, { n: seq }]);
      await post('/send', sid, { msgs, ack: 0 });
    }
  });
  await measure('POST send, 1 message, handler sends 1', N, async () => {
    for (let i = 0; i < N; i++) await post('/send', sid, { msgs: [[++seq, { e: 1, n: seq }]], ack: 0 });
  });
  // N server messages are now waiting: each watch acks one more and returns the rest.
  await measure('GET watch, messages waiting', N, async () => {
    for (let i = 0; i < N; i++) await watch(sid, i, 1_000);
  });
  let ack = N;
  await measure('GET watch, waits, then woken by a push', 20, async () => {
    for (let i = 0; i < 20; i++) {
      const w = watch(sid, ack, 5_000);
      await sleep(20);
      await pusher.call('burst', { sids: [sid], count: 1 });
      const body = await w;
      ack = body.msgs.length ? body.msgs[body.msgs.length - 1][0] : ack;
    }
  });
  const c = results.cost['GET watch, waits, then woken by a push' + suffix];
  if (c) c.note = 'includes the push itself (one append script) in every count';
}

// --- table ---------------------------------------------------------------------------------

const fmt = (v: number | undefined, digits = 0) => (v === undefined || Number.isNaN(v) ? '–' : v.toFixed(digits));

function medianOf(rows: any[] | undefined, pick: (r: any) => number): number | undefined {
  if (!rows || rows.length === 0) return undefined;
  return median(rows.map(pick));
}

function table(systems: System[]): string {
  const lines: string[] = [];
  const sum = (rows: any[] | undefined, k: string) => (rows ? rows.reduce((a, r) => a + r[k], 0) : undefined);
  const faults = (rows: any[] | undefined) => (rows ? `${sum(rows, 'lost')} / ${sum(rows, 'dup')} / ${sum(rows, 'outOfOrder')}` : '–');
  const m = (scenario: 'echo' | 'push' | 'burst', key: string, pick: (r: any) => number, digits = 0) => fmt(medianOf(results[scenario][key], pick), digits);
  const n = (scenario: 'echo' | 'push' | 'burst', key: string) => (results[scenario][key] as any[] | undefined)?.length ?? 0;
  lines.push(
    `| system | echo rt/s | echo RTT p50 / p90 / p99 ms | echo CPU µs/rt server + client | push latency p50 / p99 ms | push lost / dup / ooo | burst msg/s | burst lost / dup / ooo | runs |`,
  );
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const s of systems) {
    lines.push(
      `| ${s.label} | ${m('echo', s.key, (r) => r.perSec)} | ${m('echo', s.key, (r) => r.rtt.p50, 1)} / ${m('echo', s.key, (r) => r.rtt.p90, 1)} / ${m('echo', s.key, (r) => r.rtt.p99, 1)} | ${m('echo', s.key, (r) => r.cpu.serverUs)} + ${m('echo', s.key, (r) => r.cpu.clientUs)} | ${m('push', s.key, (r) => r.latency.p50, 2)} / ${m('push', s.key, (r) => r.latency.p99, 2)} | ${faults(results.push[s.key])} | ${m('burst', s.key, (r) => r.perSec)} | ${faults(results.burst[s.key])} | ${n('echo', s.key)} |`,
    );
  }
  lines.push('');
  lines.push(`Medians over the runs. echo: ${CLIENTS} clients × ${ECHO_ROUNDS} sequential round trips; push: every ${PUSH_INTERVAL_MS} ms to each of ${CLIENTS} clients, ${PUSH_TICKS} times; burst: ${BURST} messages to each of ${CLIENTS} clients as fast as possible.`);

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
    for (const s of systems) if (results.idle[s.key]) idleRow(s.label, results.idle[s.key]);
  }
  const f = results.floor;
  if (f.http || f.redis) {
    lines.push('');
    lines.push('| floor (same run) | value |');
    lines.push('| --- | ---: |');
    if (f.http) {
      lines.push(
        `| plain Node HTTP POST, node:http client (${CLIENTS} clients × ${ECHO_ROUNDS}): rt/s; RTT p50 / p99 ms; CPU µs/rt server + client | ${fmt(f.http.perSec)}; ${fmt(f.http.rtt.p50, 1)} / ${fmt(f.http.rtt.p99, 1)}; ${fmt(f.http.cpu?.serverUs)} + ${fmt(f.http.cpu?.clientUs)} |`,
      );
    }
    if (f.fetch) {
      lines.push(
        `| plain Node HTTP POST, global fetch client: rt/s; RTT p50 / p99 ms; CPU µs/rt server + client | ${fmt(f.fetch.perSec)}; ${fmt(f.fetch.rtt.p50, 1)} / ${fmt(f.fetch.rtt.p99, 1)}; ${fmt(f.fetch.cpu?.serverUs)} + ${fmt(f.fetch.cpu?.clientUs)} |`,
      );
    }
    if (f.redis) {
      lines.push(`| Redis PING (ioredis), sequential: RTT p50 / p99 ms | ${fmt(f.redis.rtt.p50, 3)} / ${fmt(f.redis.rtt.p99, 3)} |`);
      lines.push(`| Redis PING, ${CLIENTS} in parallel: per s | ${fmt(f.redis.perSec)} |`);
    }
  }
  if (Object.keys(results.cost).length) {
    lines.push('');
    lines.push('| bidiweb + RedisStore, per protocol request | Redis round trips | script calls | (un)subscribe | Redis commands incl. inside scripts |');
    lines.push('| --- | ---: | ---: | ---: | ---: |');
    for (const [name, c] of Object.entries<any>(results.cost)) {
      lines.push(`| ${name} | ${fmt(c.roundTripsPerRequest, 2)} | ${fmt(c.scriptCallsPerRequest, 2)} | ${fmt(c.pubsubPerRequest, 2)} | ${fmt(c.commandsPerRequest, 1)} |`);
    }
    for (const key of ['bidi-redis', 'bidi-redis-plain']) {
      const e = medianOf(results.echo[key], (r) => r.redis?.roundTripsPerRequest);
      if (e !== undefined) {
        lines.push(
          `| echo under load, ${results.systems[key]}: per HTTP request (per echo round trip) | ${fmt(e, 2)} (${fmt(medianOf(results.echo[key], (r) => r.redis?.roundTripsPerRoundTrip), 2)}) | | | ${fmt(medianOf(results.echo[key], (r) => r.redis?.commandsPerRequest), 1)} |`,
        );
      }
    }
  }
  return lines.join('\n');
}

function ratios(): string {
  const lines: string[] = [];
  const med = (scenario: 'echo' | 'push' | 'burst', k: string, pick: (r: any) => number) => medianOf(results[scenario][k], pick);
  const heap = (k: string, n: number) => results.idle[k]?.[n]?.heapPerSession as number | undefined;
  const ratio = (a?: number, b?: number) => (a === undefined || b === undefined || !b ? '–' : `${(a / b).toFixed(2)}×`);
  const pairs: Array<[string, string]> = [
    ['bidi-mem', 'sio-poll'],
    ['bidi-mem-plain', 'sio-poll'],
    ['bidi-redis', 'sio-poll-sticky'],
    ['bidi-redis-plain', 'sio-poll-sticky'],
    ['bidi-mem', 'sio-ws'],
  ];
  lines.push('| bidiweb ÷ Socket.IO, same run | echo rt/s | echo CPU per rt | push p50 latency | burst msg/s | idle heap/session 1000 | idle heap/session 5000 |');
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const [a, b] of pairs) {
    if (!results.systems[a] || !results.systems[b]) continue;
    const cpu = (k: string) => med('echo', k, (r) => r.cpu.serverUs + r.cpu.clientUs);
    lines.push(
      `| ${results.systems[a]} ÷ ${results.systems[b]} | ${ratio(med('echo', a, (r) => r.perSec), med('echo', b, (r) => r.perSec))} | ${ratio(cpu(a), cpu(b))} | ${ratio(med('push', a, (r) => r.latency.p50), med('push', b, (r) => r.latency.p50))} | ${ratio(med('burst', a, (r) => r.perSec), med('burst', b, (r) => r.perSec))} | ${ratio(heap(a, 1000), heap(b, 1000))} | ${ratio(heap(a, 5000), heap(b, 5000))} |`,
    );
  }
  return lines.join('\n');
}

// --- main ----------------------------------------------------------------------------------

async function main(): Promise<void> {
  log(`bidiweb benchmarks: ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  const only = new Set(list('systems', ['bidi-mem', 'bidi-redis', 'bidi-mem-plain', 'bidi-redis-plain', 'sio-poll', 'sio-poll-sticky', 'sio-ws']));

  log('starting redis-server ×2 on free ports (one for bidiweb, one for the Socket.IO adapter)');
  const bidiRedis = await startRedis();
  redisServers.push(bidiRedis);
  const sioRedis = await startRedis();
  redisServers.push(sioRedis);
  const bidiRedisClient = new Redis({ host: '127.0.0.1', port: bidiRedis.port });
  const sioRedisClient = new Redis({ host: '127.0.0.1', port: sioRedis.port });
  redisClients.push(bidiRedisClient, sioRedisClient);

  log('starting the client process and the servers under test');
  client = (await start('client', 'client', [], argv.get('bidi-fetch') === 'global' ? { BIDI_FETCH: 'global' } : {})).proc;
  const systems: System[] = [];
  let idleNo = 0;
  const idleBidi = (env: Record<string, string>): System['idle'] => ({
    count: 'inflight',
    start: async () => {
      const { proc, info } = await start(`idle-${++idleNo}`, 'server', ['bidi'], env);
      return { proc, url: `http://127.0.0.1:${info.port}/session` };
    },
  });
  const idleSio = (count: 'inflight' | 'clients'): System['idle'] => ({
    count,
    start: async () => {
      const { proc, info } = await start(`idle-${++idleNo}`, 'server', ['sio']);
      return { proc, url: `http://127.0.0.1:${info.port}` };
    },
  });
  if (only.has('bidi-mem') || only.has('bidi-mem-plain')) {
    const { proc, info } = await start('bidi-mem', 'server', ['bidi'], { STORE: 'memory' });
    const url = `http://127.0.0.1:${info.port}/session`;
    if (only.has('bidi-mem'))
      systems.push({ key: 'bidi-mem', label: 'bidiweb, memory ×1, streaming watch', client: 'bidi', stream: true, url, pusher: proc, idle: idleBidi({ STORE: 'memory' }), cpu: [proc] });
    if (only.has('bidi-mem-plain'))
      systems.push({ key: 'bidi-mem-plain', label: 'bidiweb, memory ×1, plain watch', client: 'bidi', stream: false, url, pusher: proc, idle: idleBidi({ STORE: 'memory' }), cpu: [proc] });
  }
  let redisInstance: { proc: Proc; url: string } | undefined;
  if (only.has('bidi-redis') || only.has('bidi-redis-plain')) {
    const env = { STORE: 'redis', REDIS_PORT: String(bidiRedis.port), PREFIX: 'bench:' };
    const a = await start('bidi-redis-1', 'server', ['bidi'], env);
    const b = await start('bidi-redis-2', 'server', ['bidi'], env);
    const proxy = await start('proxy', 'proxy', [String(a.info.port), String(b.info.port)]);
    const direct = `http://127.0.0.1:${a.info.port}/session`;
    redisInstance = { proc: a.proc, url: direct };
    const common = {
      client: 'bidi' as const,
      url: `http://127.0.0.1:${proxy.info.port}/session`,
      pusher: a.proc,
      redis: bidiRedisClient,
      proxy: proxy.proc,
      cpu: [a.proc, b.proc, proxy.proc],
      cpuRedis: bidiRedisClient,
    };
    if (only.has('bidi-redis'))
      systems.push({ key: 'bidi-redis', label: 'bidiweb, Redis ×2 round-robin, streaming watch', stream: true, idle: idleBidi({ ...env, PREFIX: 'idle:' }), ...common });
    if (only.has('bidi-redis-plain')) systems.push({ key: 'bidi-redis-plain', label: 'bidiweb, Redis ×2 round-robin, plain watch', stream: false, ...common });
  }
  if (only.has('sio-poll')) {
    const { proc, info } = await start('sio-poll', 'server', ['sio']);
    const url = `http://127.0.0.1:${info.port}`;
    systems.push({ key: 'sio-poll', label: 'Socket.IO polling ×1', client: 'sio-polling', sharedAgent: true, url, pusher: proc, idle: idleSio('inflight'), cpu: [proc] });
  }
  if (only.has('sio-poll-sticky')) {
    const { proc, info } = await start('sio-sticky', 'server', ['sio-sticky'], { ADAPTER: 'redis', REDIS_PORT: String(sioRedis.port), PREFIX: 'bench:', WORKERS: '2' });
    systems.push({
      key: 'sio-poll-sticky',
      label: 'Socket.IO polling ×2 sticky + Redis streams',
      client: 'sio-polling',
      url: `http://127.0.0.1:${info.port}`,
      pusher: proc,
      cpu: [proc],
      cpuRedis: sioRedisClient,
    });
  }
  if (only.has('sio-ws')) {
    const { proc, info } = await start('sio-ws', 'server', ['sio']);
    const url = `http://127.0.0.1:${info.port}`;
    systems.push({ key: 'sio-ws', label: 'Socket.IO WebSocket ×1', client: 'sio-ws', url, pusher: proc, idle: idleSio('clients'), cpu: [proc] });
  }
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
  /** Each round visits every system; the order rotates so no system always goes first. */
  const alternate = async (scenario: string, fn: (s: System) => Promise<void>) => {
    for (let round = 0; round < ROUNDS; round++) {
      const order = systems.map((_, i) => systems[(i + round) % systems.length]!);
      if (round % 2 === 1) order.reverse();
      for (const s of order) await run(`${scenario} ${s.key}`, () => fn(s));
    }
  };

  if (SCENARIOS.includes('floor')) {
    log('floor: plain Node HTTP and Redis PING on loopback');
    await run('floor', async () => {
      const { proc, info } = await start('plain', 'server', ['plain']);
      const url = `http://127.0.0.1:${info.port}/echo`;
      const plainSys = { cpu: [proc] } as unknown as System;
      await client.call('floorNodeHttp', { url, clients: CLIENTS, rounds: ECHO_WARMUP });
      let cpu0 = await cpuNow(plainSys);
      results.floor.http = await client.call('floorNodeHttp', { url, clients: CLIENTS, rounds: ECHO_ROUNDS });
      results.floor.http.cpu = await cpuPer(plainSys, cpu0, results.floor.http.roundTrips);
      log(
        `  plain HTTP (node:http client): ${results.floor.http.perSec.toFixed(0)} rt/s, RTT p50 ${results.floor.http.rtt.p50.toFixed(2)} p99 ${results.floor.http.rtt.p99.toFixed(2)} ms; CPU per round trip: server ${results.floor.http.cpu.serverUs.toFixed(0)} µs, client ${results.floor.http.cpu.clientUs.toFixed(0)} µs`,
      );
      await client.call('floorHttp', { url, clients: CLIENTS, rounds: ECHO_WARMUP });
      cpu0 = await cpuNow(plainSys);
      results.floor.fetch = await client.call('floorHttp', { url, clients: CLIENTS, rounds: ECHO_ROUNDS });
      results.floor.fetch.cpu = await cpuPer(plainSys, cpu0, results.floor.fetch.roundTrips);
      log(
        `  plain HTTP (global fetch client): ${results.floor.fetch.perSec.toFixed(0)} rt/s, RTT p50 ${results.floor.fetch.rtt.p50.toFixed(2)} p99 ${results.floor.fetch.rtt.p99.toFixed(2)} ms; CPU per round trip: server ${results.floor.fetch.cpu.serverUs.toFixed(0)} µs, client ${results.floor.fetch.cpu.clientUs.toFixed(0)} µs`,
      );
      results.floor.redis = await client.call('floorRedis', { port: bidiRedis.port, n: 5_000, clients: CLIENTS });
      log(`  Redis PING: RTT p50 ${results.floor.redis.rtt.p50.toFixed(3)} p99 ${results.floor.redis.rtt.p99.toFixed(3)} ms; ${results.floor.redis.perSec.toFixed(0)}/s with ${CLIENTS} in parallel`);
      await proc.stop();
    });
  }
  if (SCENARIOS.includes('echo')) {
    log(`echo: ${CLIENTS} clients × ${ECHO_ROUNDS} sequential round trips (after ${ECHO_WARMUP} warm-up rounds)`);
    await alternate('echo', echoRun);
  }
  if (SCENARIOS.includes('push')) {
    log(`push: the server pushes to ${CLIENTS} clients every ${PUSH_INTERVAL_MS} ms, ${PUSH_TICKS} each`);
    await alternate('push', pushRun);
  }
  if (SCENARIOS.includes('burst')) {
    log(`burst: ${CLIENTS} clients × ${BURST} pushed messages, as fast as possible`);
    await alternate('burst', burstRun);
  }
  if (SCENARIOS.includes('cost') && redisInstance) {
    log('store cost: Redis commands per protocol request (INFO commandstats deltas; one instance, direct)');
    await run('cost', () => costRun(redisInstance!.url, redisInstance!.proc, bidiRedisClient, redisInstance!.proc));
    // The same watches on an instance whose RedisStore keeps subscriptions (subscriptionLingerMs).
    await run('cost (linger)', async () => {
      const { proc, info } = await start('bidi-redis-linger', 'server', ['bidi'], { STORE: 'redis', REDIS_PORT: String(bidiRedis.port), PREFIX: 'bench:', LINGER_MS: '30000' });
      await costRun(`http://127.0.0.1:${info.port}/session`, proc, bidiRedisClient, proc, ', subscriptionLingerMs 30 s', [
        'GET watch, messages waiting',
        'GET watch, waits, then woken by a push',
      ]);
      await proc.stop();
    });
  }
  if (SCENARIOS.includes('idle')) {
    log(`idle: ${IDLE.join(' and ')} open sessions with a waiting watch on one instance (heap and RSS after gc, in the server process)`);
    await run('idle floor', async () => {
      const { proc, info } = await start('plain-idle', 'server', ['plain']);
      const url = `http://127.0.0.1:${info.port}/hold`;
      const floor = { key: 'floor', label: 'plain Node HTTP, a held request', client: 'hold', url, pusher: proc, cpu: [proc] } as System;
      await idleMeasure(floor, { proc, url, count: 'inflight' }, IDLE);
      results.floor.idle = results.idle.floor;
      delete results.idle.floor;
      await proc.stop();
    });
    for (const s of systems) {
      if (!s.idle) continue;
      const counts = s.client === 'bidi' && IDLE_MAX > Math.max(...IDLE) ? [...IDLE, IDLE_MAX] : IDLE;
      await run(`idle ${s.key}`, () => idleRun(s, counts));
    }
  }

  results.machine.loadavgEnd = os.loadavg();
  results.elapsedMs = now() - started;
  const text = table(systems);
  const ratioText = ratios();
  results.table = text;
  results.ratios = ratioText;
  const out = argv.get('out') ?? path.join(ROOT, 'bench', 'results', `${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}.json`);
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(results, null, 2) + '\n');
  process.stdout.write(`\n${text}\n\n${ratioText}\n\n`);
  if (results.errors.length) process.stdout.write(`errors:\n${results.errors.map((e: string) => `  - ${e}`).join('\n')}\n\n`);
  log(`done in ${((now() - started) / 1000).toFixed(0)} s; load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; results in ${path.relative(ROOT, out)}`);
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
main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => shutdown().then(() => process.exit()));
