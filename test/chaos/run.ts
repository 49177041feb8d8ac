/**
 * The chaos run: real clients, a faulty round-robin balancer, several server
 * instances over one Redis (AOF, fsync always), instances SIGKILLed and
 * restarted, Redis crashed and restarted — and an exact account of every
 * message both ways. Used by `npm run chaos` (test/chaos/chaos.ts) and, in
 * small, by test/chaos/chaos-short.test.ts.
 *
 * What is counted, per direction:
 *
 * - client → server. *sent*: `send()` calls. *delivered*: messages the
 *   handler recorded a first delivery of (the instance's handler records by
 *   seq, idempotently, in Redis). *duplicated*: a message in that first-
 *   delivery log twice (i.e. after dedupe by seq: must be 0). *reordered*: a
 *   first delivery that comes after a later message's. *redelivered*: the
 *   handler ran again for a seq it had already seen — the documented
 *   exception after an instance crash — reported apart, not a duplicate.
 *   Latency: from `send()` to the handler.
 * - server → client. *sent*: every seq the store assigned (the session's
 *   `lastSeq`). Pushes go through the balancer to whichever instance is next,
 *   and are idempotent by push id (see test/fixtures/chaos-instance.ts): a
 *   push whose response was lost is retried and answers the seqs it got the
 *   first time, so an unconfirmed push is neither counted lost nor sent
 *   twice. *delivered*: seqs the client's `message` event delivered.
 *   *lost*: seqs assigned and never delivered, or (if more) confirmed pushed
 *   items never delivered (a seq handed out twice after a lost Redis write).
 *   *duplicated*: a seq delivered twice, or one pushed item delivered under
 *   two seqs. *reordered*: a seq delivered after a higher one. Latency: from
 *   the instance's `send()` to the client's `message` event.
 * - *retries*: the clients' `retry` events (op `send` for client → server,
 *   `watch` for server → client).
 */
import Redis, { Cluster } from 'ioredis';
import WebSocket from 'ws';
import { open, type BidiClientSession, type CloseEvent, type RetryInfo, type WebSocketConstructorLike } from '../../src/client';
import { RedisStore } from '../../src/redis';
import { rng } from '../helpers/faulty-fetch';
import { startProxy, type Proxy, type ProxyFaults } from '../helpers/proxy';
import { startRedis, startRedisCluster, type RedisClusterProcess, type RedisProcess } from '../helpers/redis-server';
import { clusterOp, type ClusterOp } from './cluster-ops';
import { chaosKeys } from './keys';
import { killAll, removeBundle, startChaosInstance, type ChaosInstance } from './cluster';

export interface ChaosOptions {
  seed: number;
  sessions: number;
  /** Messages each way per session. */
  messages: number;
  instances: number;
  /** Network faults at the balancer (the seed is `seed`). */
  faults: Omit<ProxyFaults, 'seed' | 'match'>;
  /** SIGKILL + restart one instance this often (ms)… */
  killEveryMs?: number;
  /** …or at these fractions of the total progress (0..1). */
  killAtProgress?: number[];
  /** Crash (SIGKILL) and restart Redis once, at this fraction of the progress. */
  redisRestartAt?: number;
  /** Clients use streaming watches (`stream: true`): with `faults.cutStream`, streams get cut midway. */
  stream?: boolean;
  /**
   * WebSocket mode: instances serve bidiweb/ws upgrades and clients use `transport: 'websocket'`; each new
   * socket goes straight to the next live instance (as a balancer forwarding upgrades), and a random client
   * socket is cut (terminated, no close frame) every `cutSocketEveryMs`. Opens and closes still cross the
   * faulty balancer.
   */
  websocket?: { cutSocketEveryMs: number };
  /** false: the instances' ioredis does not resend commands whose reply was lost (default true, ioredis' default). */
  resend?: boolean;
  /** 'kill' (SIGKILL, a crash) or 'term' (graceful). Default 'kill'. */
  redisRestartSignal?: 'kill' | 'term';
  /** Stop starting new traffic after this long (ms). */
  durationMs: number;
  /** Then wait this long at most for what is in flight (ms). */
  drainMs: number;
  /**
   * Groups mode: sessions join `groups` groups (session k joins group k mod
   * groups at open) and the server → client traffic is `messages`
   * publishes to each group (written once, pulled by every member) instead
   * of pushes to each session. Each member must get its group's items 1..n
   * once, in order, at contiguous seqs.
   */
  groups?: number;
  /**
   * Groups mode: each publish request carries 1 to `publishBatch` items, which the instance
   * publishes in one turn, none awaited (RedisStore sends them as one batch). Default 1.
   */
  publishBatch?: number;
  /** Most client messages sent and not yet acked, per session. */
  outstanding?: number;
  progressEveryMs?: number;
  log?: (line: string) => void;
  /**
   * Cluster mode: the store runs on a Redis Cluster of 3 masters + 3
   * replicas instead of one Redis (the run's own bookkeeping goes to a
   * separate Redis, so a lost store write cannot hide its own trace), and the
   * cluster is operated during the traffic (test/chaos/cluster-ops.ts).
   * `redisRestartAt` does not apply.
   */
  redisCluster?: RedisClusterChaos;
}

export interface RedisClusterChaos {
  /** Operations at fractions (0..1) of the total progress, in order. */
  ops: Array<{ op: ClusterOp; at: number }>;
  /** cluster-node-timeout, ms (how soon a replica takes over from a silent master). Default 1500. */
  nodeTimeoutMs?: number;
  /** The instances' RedisStore `replicaAcks` option. */
  replicaAcks?: { replicas: number; timeoutMs: number };
}

export interface DirectionStats {
  sent: number;
  delivered: number;
  lost: number;
  duplicated: number;
  reordered: number;
  redelivered: number;
  retries: number;
  p50: number;
  p99: number;
  max: number;
}

export interface ChaosReport {
  options: ChaosOptions;
  durationMs: number;
  trafficMs: number;
  cappedByDuration: boolean;
  c2s: DirectionStats;
  s2c: DirectionStats;
  kills: number;
  redisRestarts: number;
  /** Cluster mode: what each operation did. */
  clusterOps: string[];
  openRetries: number;
  closeRetries: number;
  pushRequests: number;
  pushRetries: number;
  pushRecovered: number;
  unexpectedCloses: string[];
  /** Client retry events by operation and error. */
  retryCauses: Record<string, number>;
  /** Instances that exited without being killed by the run (with their last stderr). */
  instanceCrashes: string[];
  sendRejections: number;
  onCloseRuns: number;
  onCloseRepeated: number;
  /** Push endpoint inconsistencies (a message sent twice, a lock lost, …). */
  anomalies: string[];
  /** Push endpoint events that were handled (e.g. a failed send that had appended). */
  notes: string[];
  integrityErrors: string[];
  proxy: Proxy['stats'];
  /** WebSocket mode: sockets opened, and cut at random by the run. */
  sockets?: { opened: number; cut: number };
  /** No loss, no duplicate, no reorder, no unexpected close, no integrity error. */
  ok: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface SessionRun {
  k: number;
  client: BidiClientSession;
  sid?: string;
  /** send() call times, index = client seq. */
  sendTimes: number[];
  sent: number;
  acked: number;
  rejected: number;
  /** Server → client deliveries: [seq, item, latency]. */
  received: Array<[number, number, number]>;
  /** Items (1..n) pushed and confirmed: item → seq. */
  confirmed: Map<number, number>;
  pushed: number;
  closeEvent?: CloseEvent;
  closedByUs: boolean;
  retries: Record<string, number>;
  /** Wakes the session's sender / pusher when an ack or a message arrives. */
  kick: () => void;
  waiters: Array<() => void>;
}

/** Waits for the session's next ack or message (or 200 ms, so deadlines are noticed). */
function nextEvent(r: SessionRun): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, 200);
    function done() {
      clearTimeout(timer);
      resolve();
    }
    r.waiters.push(done);
  });
}

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const log = o.log ?? ((line: string) => console.log(line));
  const random = rng(o.seed ^ 0x5eed);
  const started = Date.now();
  const outstanding = o.outstanding ?? 50;
  let redis: RedisProcess | undefined;
  let cluster: RedisClusterProcess | undefined;
  let storeConn: Cluster | undefined;
  let conn: Redis | undefined;
  let proxy: Proxy | undefined;
  let store: RedisStore | undefined;
  const instances: ChaosInstance[] = [];
  const runs: SessionRun[] = [];
  const instanceCrashes: string[] = [];
  const retryCauses: Record<string, number> = {};
  let stopping = false;
  const onExit = () => killAll();
  process.once('exit', onExit);
  try {
    const rc = o.redisCluster;
    // Cluster mode: `redis` holds only the run's bookkeeping, and is never crashed.
    redis = await startRedis({ appendonly: !rc });
    if (rc) cluster = await startRedisCluster(3, { replicas: 1, nodeTimeoutMs: rc.nodeTimeoutMs ?? 1500 });
    const prefix = `chaos${o.seed}:`;
    const env: Record<string, string> = { REDIS_PORT: String(redis.port), PREFIX: prefix, WAIT: '2000', LEASE_MS: '1000', RESEND: o.resend === false ? '0' : '1' };
    if (o.websocket) Object.assign(env, { WS: '1', HEARTBEAT_MS: '1000' });
    if (cluster) {
      env.REDIS_CLUSTER = cluster.nodes.map((n) => n.port).join(',');
      env.BOOK_PORT = String(redis.port);
      // A master's takeover stalls its slots for seconds: the push lock must outlast that.
      env.PUSH_LOCK_MS = '20000';
      if (rc?.replicaAcks) env.REPLICA_ACKS = `${rc.replicaAcks.replicas}:${rc.replicaAcks.timeoutMs}`;
    }
    // An instance that dies on its own is a finding: report it, and start a new one so the run goes on.
    const launch = async (slot: number): Promise<void> => {
      const inst = await startChaosInstance(env);
      instances[slot] = inst;
      void inst.exited.then(async ({ code, signal, byUs }) => {
        if (byUs || stopping) return;
        const what = `instance pid ${inst.pid} exited on its own (code ${code}, signal ${signal}):\n${inst.log().trim().split('\n').slice(-15).join('\n')}`;
        instanceCrashes.push(what);
        log(`chaos: ${what}`);
        if (instances[slot] === inst) {
          await launch(slot);
          proxy?.setBackends(instances.map((i) => i.port));
        }
      });
    };
    for (let i = 0; i < o.instances; i++) await launch(i);
    proxy = await startProxy(
      instances.map((i) => i.port),
      { ...o.faults, seed: o.seed },
    );
    conn = new Redis({ port: redis.port, host: '127.0.0.1', maxRetriesPerRequest: null });
    conn.on('error', () => {});
    if (cluster) {
      storeConn = new Cluster(cluster.nodes, { retryDelayOnFailover: 200, retryDelayOnClusterDown: 200, maxRedirections: 32, redisOptions: { maxRetriesPerRequest: null } });
      storeConn.on('error', () => {});
    }
    store = new RedisStore({ redis: storeConn ?? conn, prefix });
    const base = proxy.url;
    log(
      `chaos: seed ${o.seed}, ${o.sessions} sessions × ${o.messages} messages each way, ${o.instances} instances, ` +
        `faults ${JSON.stringify(o.faults)}, ` +
        (cluster
          ? `Redis Cluster 3 masters + 3 replicas (ports ${env.REDIS_CLUSTER}, cluster-node-timeout ${rc!.nodeTimeoutMs ?? 1500} ms` +
            (rc!.replicaAcks ? `, replicaAcks ${JSON.stringify(rc!.replicaAcks)}` : ', no replicaAcks') +
            `), bookkeeping on ${redis.url}`
          : `redis ${redis.url} (appendonly yes, appendfsync always)`) +
        (o.resend === false ? ', instances with autoResendUnfulfilledCommands: false' : '') +
        (o.stream ? ', streaming watches' : '') +
        (o.websocket ? `, WebSocket transport (a socket cut every ${o.websocket.cutSocketEveryMs} ms)` : ''),
    );
    // WebSocket mode: each new socket to the next live instance; the run cuts them at random.
    const clientSockets: WebSocket[] = [];
    const socketStats = { opened: 0, cut: 0 };
    let nextSocket = 0;
    class Balanced extends WebSocket {
      constructor(url: string, protocols?: string | string[], options?: WebSocket.ClientOptions) {
        const u = new URL(url);
        u.port = String(instances[nextSocket++ % instances.length]!.port);
        super(u.toString(), protocols, options);
        socketStats.opened++;
        clientSockets.push(this);
        this.once('close', () => clientSockets.splice(clientSockets.indexOf(this), 1));
      }
    }

    // --- sessions ---------------------------------------------------------------------------
    for (let k = 0; k < o.sessions; k++) {
      const client = open(base + '/session', {
        retry: { initialDelayMs: 20, maxDelayMs: 500 },
        resendAfterMs: 500,
        wait: 2000,
        requestTimeoutMs: 10_000,
        closeTimeoutMs: 30_000,
        ...(o.stream ? { stream: true } : {}),
        ...(o.websocket ? { transport: 'websocket' as const, WebSocket: Balanced as unknown as WebSocketConstructorLike, connectTimeoutMs: 3000 } : {}),
        ...(o.groups ? { meta: { group: `g${k % o.groups}` } } : {}),
      });
      const run: SessionRun = {
        k,
        client,
        sendTimes: [0],
        sent: 0,
        acked: 0,
        rejected: 0,
        received: [],
        confirmed: new Map(),
        pushed: 0,
        closedByUs: false,
        retries: {},
        waiters: [],
        kick: () => {
          const w = run.waiters;
          run.waiters = [];
          for (const f of w) f();
        },
      };
      client.on('message', (data: unknown, info: { seq: number }) => {
        const d = data as { k: number; s: number; t: number; g?: number };
        const mine = o.groups ? d.g === k % o.groups : d.k === k;
        run.received.push([info.seq, mine ? d.s : -1, Date.now() - d.t]);
        run.kick();
      });
      client.on('retry', (r: RetryInfo) => {
        run.retries[r.op] = (run.retries[r.op] ?? 0) + 1;
        const cause = `${r.op} ${r.error.code}${r.error.status ? ' ' + r.error.status : ''}${r.error.errorCode ? ' ' + r.error.errorCode : ''}`;
        retryCauses[cause] = (retryCauses[cause] ?? 0) + 1;
      });
      client.on('close', (ev: CloseEvent) => {
        run.closeEvent = ev;
        run.kick();
      });
      client.on('error', () => {});
      runs.push(run);
    }
    await Promise.all(
      runs.map(
        (r) =>
          new Promise<void>((resolve) => {
            if (r.client.state === 'open') resolve();
            r.client.on('open', () => resolve());
            r.client.on('close', () => resolve());
          }),
      ),
    );
    for (const r of runs) r.sid = r.client.id;
    log(`chaos: ${runs.filter((r) => r.sid).length} sessions open after ${((Date.now() - started) / 1000).toFixed(1)} s`);

    // --- chaos agents ----------------------------------------------------------------------------
    const total = 2 * o.sessions * o.messages;
    /** Groups mode: items 1..n published and confirmed, per group. */
    const published = Array.from({ length: o.groups ?? 0 }, () => 0);
    const progress = () => {
      let n = 0;
      for (const r of runs) n += r.acked + (o.groups ? published[r.k % o.groups]! : r.confirmed.size);
      return n / total;
    };
    let trafficOver = false;
    let kills = 0;
    let redisRestarts = 0;
    let pushRequests = 0;
    let pushRetries = 0;
    let pushRecovered = 0;
    const trafficStart = Date.now();
    const deadline = trafficStart + o.durationMs;
    let capped = false;

    const killOne = async () => {
      const victim = Math.floor(random() * instances.length);
      await instances[victim]!.kill();
      kills++;
      await launch(victim);
      proxy!.setBackends(instances.map((i) => i.port));
    };
    const killer = (async () => {
      if (o.killEveryMs) {
        while (!trafficOver) {
          const until = Date.now() + o.killEveryMs;
          while (!trafficOver && Date.now() < until) await sleep(50);
          if (trafficOver) break;
          await killOne();
          log(`chaos: SIGKILLed an instance and started a new one (${kills} so far)`);
        }
      } else {
        for (const target of [...(o.killAtProgress ?? [])].sort()) {
          while (!trafficOver && progress() < target) await sleep(20);
          if (trafficOver) break;
          const at = progress();
          await killOne();
          log(`chaos: SIGKILLed an instance at ${(at * 100).toFixed(0)}% and started a new one`);
        }
      }
    })();
    const socketCutter = (async () => {
      if (!o.websocket) return;
      while (!trafficOver) {
        const until = Date.now() + o.websocket.cutSocketEveryMs;
        while (!trafficOver && Date.now() < until) await sleep(10);
        if (trafficOver || clientSockets.length === 0) continue;
        clientSockets[Math.floor(random() * clientSockets.length)]!.terminate();
        socketStats.cut++;
      }
    })();
    const redisCrasher = (async () => {
      if (o.redisRestartAt === undefined || cluster) return;
      while (!trafficOver && progress() < o.redisRestartAt) await sleep(20);
      if (trafficOver) return;
      const at = progress();
      const t0 = Date.now();
      if ((o.redisRestartSignal ?? 'kill') === 'kill') await redis!.kill();
      await redis!.restart();
      redisRestarts++;
      log(`chaos: Redis ${o.redisRestartSignal === 'term' ? 'stopped' : 'SIGKILLed'} and restarted at ${(at * 100).toFixed(0)}% (down ${Date.now() - t0} ms)`);
    })();
    const clusterOps: string[] = [];
    let opsOver = false;
    /** Drivers (senders, pushers) waiting at the gate for the operations to be over. */
    let atGate = 0;
    const clusterOpFailures: string[] = [];
    const clusterOperator = (async () => {
      if (!cluster || !rc) return;
      for (const { op, at } of rc.ops) {
        while (!trafficOver && progress() < at) await sleep(20);
        if (trafficOver) return;
        const reached = progress();
        // An operation is meant to hit flowing traffic: say so when some of it already waits at the gate.
        const held = atGate > 0 ? `, ${atGate} of ${o.sessions * (o.groups ? 1 : 2)} drivers idle at the gate` : '';
        const line = await clusterOp(
          cluster,
          op,
          runs.filter((r) => r.sid && !r.closeEvent).map((r) => `${prefix}{${r.sid}}`),
        );
        clusterOps.push(`${line} (at ${(reached * 100).toFixed(0)}%${held})`);
        log(`chaos: ${line} (at ${(reached * 100).toFixed(0)}%${held})`);
      }
    })()
      .catch((err: unknown) => {
        clusterOpFailures.push(String(err));
        log(`chaos: a cluster operation failed: ${String(err)}`);
      })
      .finally(() => (opsOver = true));
    const lastProgress = { c2s: 0, s2c: 0 };
    const reporter = setInterval(() => {
      let c2s = 0;
      let s2c = 0;
      let pushed = 0;
      let retries = 0;
      for (const r of runs) {
        c2s += r.acked;
        s2c += r.received.length;
        pushed += r.confirmed.size;
        retries += (r.retries.send ?? 0) + (r.retries.watch ?? 0);
      }
      const p = proxy!.stats;
      const every = (o.progressEveryMs ?? 2000) / 1000;
      log(
        `[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] c2s acked ${c2s}/${o.sessions * o.messages} (+${((c2s - lastProgress.c2s) / every).toFixed(0)}/s)` +
          ` | s2c delivered ${s2c}/${o.sessions * o.messages} (+${((s2c - lastProgress.s2c) / every).toFixed(0)}/s, pushed ${pushed})` +
          ` | kills ${kills}, redis restarts ${redisRestarts} | proxy ${p.requests} req, ${p.droppedRequests} dropped, ${p.droppedResponses} resp dropped, ${p.duplicates} dup, ${p.cutStreams} cut, ${p.badGateway} 502 | client retries ${retries}, push retries ${pushRetries}`,
      );
      lastProgress.c2s = c2s;
      lastProgress.s2c = s2c;
    }, o.progressEveryMs ?? 2000);
    reporter.unref();

    // --- traffic ---------------------------------------------------------------------------------
    const stillRunning = (r: SessionRun) => !r.closeEvent && Date.now() < deadline;
    // Cluster mode: once the run as a whole is past this fraction, traffic waits for the cluster
    // operations to be over, so that each one happens while traffic flows (and some flows after).
    const gate = rc ? Math.min(0.95, Math.max(0, ...rc.ops.map((x) => x.at)) + 0.15) : 1;
    const pastGate = async (r: SessionRun) => {
      if (gate >= 1 || opsOver || progress() <= gate) return;
      atGate++;
      while (!opsOver && stillRunning(r)) await sleep(50);
      atGate--;
    };

    const sender = async (r: SessionRun) => {
      const rand = rng(o.seed * 7919 + r.k);
      for (let i = 1; i <= o.messages; i++) {
        await pastGate(r);
        while (r.sent - r.acked >= outstanding && stillRunning(r)) await nextEvent(r);
        if (!stillRunning(r)) break;
        r.sendTimes[i] = Date.now();
        r.sent = i;
        r.client.send({ k: r.k, i }).then(
          () => {
            r.acked++;
            r.kick();
          },
          () => {
            r.rejected++;
            r.kick();
          },
        );
        if (i % 10 === 0) await sleep(Math.floor(rand() * 10));
      }
    };

    const pusher = async (r: SessionRun) => {
      const rand = rng(o.seed * 104729 + r.k);
      let from = 1;
      let pushSerial = 0;
      while (from <= o.messages && stillRunning(r)) {
        await pastGate(r);
        while (r.confirmed.size - r.received.length >= outstanding * 2 && stillRunning(r)) await nextEvent(r);
        if (!stillRunning(r)) break;
        const n = Math.min(o.messages - from + 1, 1 + Math.floor(rand() * 25));
        // Retries of a push whose answer was lost reuse its id; once answered, the next push gets a new one.
        const pushId = `${r.k}:${from}:${++pushSerial}`;
        const items = Array.from({ length: n }, (_, j) => ({ k: r.k, s: from + j }));
        let delay = 10;
        for (let attempt = 0; stillRunning(r); attempt++) {
          if (attempt > 0) {
            pushRetries++;
            await sleep(Math.floor(rand() * delay));
            delay = Math.min(delay * 2, 500);
          }
          pushRequests++;
          let res: { seqs: number[]; full?: boolean; partial?: boolean; recovered?: boolean; error?: string } | undefined;
          try {
            const reply = await fetch(base + '/push', {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ sid: r.sid, pushId, items }),
              signal: AbortSignal.timeout(15_000),
            });
            const text = await reply.text();
            if (reply.status === 200) res = JSON.parse(text);
          } catch {
            // dropped, cut, timed out: retry with the same push id
          }
          if (!res) continue;
          if (res.recovered) pushRecovered++;
          res.seqs.forEach((seq, j) => r.confirmed.set(from + j, seq));
          from += res.seqs.length;
          if (res.error) await sleep(100);
          else if (res.full || res.seqs.length === 0) await sleep(20 + Math.floor(rand() * 30));
          break;
        }
        r.pushed = from - 1;
      }
    };

    /** Groups mode: one publisher per group, one publish in flight, retried under its id until answered. */
    const publisher = async (g: number) => {
      const rand = rng(o.seed * 15485863 + g);
      const members = runs.filter((r) => r.k % o.groups! === g);
      const stillGoing = () => Date.now() < deadline && members.some((r) => !r.closeEvent);
      for (let item = 1; item <= o.messages && stillGoing(); ) {
        // Stay well within the group log's retention of the slowest member.
        while (stillGoing() && members.some((r) => !r.closeEvent && published[g]! - r.received.length >= outstanding * 2)) await nextEvent(members.find((r) => !r.closeEvent)!);
        const pushId = `g${g}-${item}`;
        const count = (o.publishBatch ?? 1) > 1 ? Math.min(o.messages - item + 1, 1 + Math.floor(rand() * o.publishBatch!)) : 1;
        const items = Array.from({ length: count }, (_, i) => ({ g, s: item + i }));
        let delay = 10;
        let answered = false;
        for (let attempt = 0; stillGoing(); attempt++) {
          if (attempt > 0) {
            pushRetries++;
            await sleep(Math.floor(rand() * delay));
            delay = Math.min(delay * 2, 500);
          }
          pushRequests++;
          try {
            const reply = await fetch(base + '/publish', {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify(count === 1 ? { group: `g${g}`, pushId, item: items[0] } : { group: `g${g}`, pushId, items }),
              signal: AbortSignal.timeout(15_000),
            });
            await reply.text();
            if (reply.status === 200) {
              answered = true;
              break;
            }
          } catch {
            // dropped, cut, timed out: retry with the same id
          }
        }
        if (!answered) break;
        item += count;
        published[g] = item - 1;
        if (Math.floor((item - 1) / 10) > Math.floor((item - 1 - count) / 10)) await sleep(Math.floor(rand() * 10));
      }
    };

    const live = runs.filter((r) => r.sid);
    await Promise.all([
      ...live.map((r) => sender(r)),
      ...(o.groups ? Array.from({ length: o.groups }, (_, g) => publisher(g)) : process.env.CHAOS_NO_PUSH ? [] : live.map((r) => pusher(r))),
    ]);
    capped = Date.now() >= deadline;
    const drainUntil = Date.now() + o.drainMs;
    // Wait for what is in flight: every send acked, every confirmed push delivered.
    const settled = () =>
      runs.every(
        (r) =>
          !!r.closeEvent ||
          (r.acked + r.rejected >= r.sent && r.received.length >= (o.groups ? published[r.k % o.groups]! : maxSeq(r.confirmed))),
      );
    while (!settled() && Date.now() < drainUntil) await sleep(50);
    const trafficMs = Date.now() - trafficStart;
    trafficOver = true;
    await killer;
    await socketCutter;
    await redisCrasher;
    await clusterOperator;
    clearInterval(reporter);
    log(`chaos: traffic over after ${(trafficMs / 1000).toFixed(1)} s${capped ? ' (DURATION cap reached)' : ''}; closing sessions`);

    // --- close, then collect -------------------------------------------------------------------------
    const unexpectedCloses: string[] = [];
    for (const r of runs) {
      if (r.closeEvent) unexpectedCloses.push(`session ${r.k}: ${r.closeEvent.code} ${r.closeEvent.reason}`);
      else if (!r.sid) unexpectedCloses.push(`session ${r.k}: never opened`);
    }
    await Promise.all(
      runs.map(async (r) => {
        if (r.closeEvent) return;
        r.closedByUs = true;
        await r.client.close();
      }),
    );
    // onClose runs inside the DELETE; give retried DELETEs a moment.
    await sleep(500);

    const c2sLat: number[] = [];
    const s2cLat: number[] = [];
    const c2s: DirectionStats = { sent: 0, delivered: 0, lost: 0, duplicated: 0, reordered: 0, redelivered: 0, retries: 0, p50: 0, p99: 0, max: 0 };
    const s2c: DirectionStats = { ...c2s };
    const integrityErrors: string[] = [];
    let onCloseRuns = 0;
    let onCloseRepeated = 0;
    let openRetries = 0;
    let closeRetries = 0;
    for (const r of runs) {
      openRetries += r.retries.open ?? 0;
      closeRetries += r.retries.close ?? 0;
      c2s.retries += r.retries.send ?? 0;
      s2c.retries += r.retries.watch ?? 0;
      if (!r.sid) continue;
      const keys = chaosKeys(prefix, r.sid);
      const [logRaw, redelivered, closes, pushedRaw] = await Promise.all([
        conn.lrange(keys.log, 0, -1),
        conn.lrange(keys.redelivered, 0, -1),
        conn.get(keys.closes),
        conn.hgetall(keys.pushed),
      ]);
      const [info] = await store.inspect([r.sid]);

      // client → server
      c2s.sent += r.sent;
      c2s.redelivered += redelivered.length;
      const seen = new Set<number>();
      let maxI = 0;
      for (const line of logRaw) {
        const e = JSON.parse(line) as { q: number; t: number; d: { k: number; i: number } };
        if (e.d.k !== r.k || e.d.i !== e.q) integrityErrors.push(`c2s session ${r.k}: seq ${e.q} carried ${JSON.stringify(e.d)}`);
        const i = e.d.i;
        if (seen.has(i)) {
          c2s.duplicated++;
          continue;
        }
        seen.add(i);
        if (i < maxI) c2s.reordered++;
        maxI = Math.max(maxI, i);
        if (i <= r.sent) {
          c2s.delivered++;
          c2sLat.push(e.t - r.sendTimes[i]!);
        }
      }
      const lostHere = r.sent - [...seen].filter((i) => i <= r.sent).length;
      c2s.lost += lostHere;
      if (lostHere > 0 && process.env.CHAOS_DEBUG) {
        const rec = await (storeConn ?? conn).hgetall(`${prefix}{${r.sid}}:s`);
        const inb = Object.keys(rec).filter((f) => /^i\d+$/.test(f));
        log(`debug c2s session ${r.k}: sent ${r.sent}, acked ${r.acked}, rejected ${r.rejected}, handler saw ${seen.size} (max ${maxI}), redelivered [${redelivered}], record ${JSON.stringify({ ...rec, user: undefined, state: undefined })}, inbound [${inb.slice(0, 10)}${inb.length > 10 ? '…' : ''}] (${inb.length}), close ${JSON.stringify(r.closeEvent)}`);
      }
      if (closes !== null) {
        onCloseRuns++;
        if (Number(closes) > 1) onCloseRepeated++;
      }

      // server → client, groups mode: the group's items 1..published, once each, in order, at contiguous seqs
      if (o.groups) {
        const lastSeq = info?.lastSeq ?? 0;
        const n = published[r.k % o.groups]!;
        s2c.sent += n;
        const gotSeq = new Set<number>();
        const gotItem = new Set<number>();
        let maxItem = 0;
        for (const [seq, item, latency] of r.received) {
          if (gotSeq.has(seq) || gotItem.has(item)) {
            s2c.duplicated++;
            continue;
          }
          if (item < 0) integrityErrors.push(`s2c session ${r.k}: seq ${seq} carried another group's item`);
          gotSeq.add(seq);
          gotItem.add(item);
          if (item < maxItem) s2c.reordered++;
          maxItem = Math.max(maxItem, item);
          if (item <= n) s2c.delivered++;
          s2cLat.push(latency);
        }
        for (let item = 1; item <= n; item++) if (!gotItem.has(item)) s2c.lost++;
        // Every seq the session assigned was one of its group's items, and it got each one.
        for (let seq = 1; seq <= lastSeq; seq++) if (!gotSeq.has(seq)) integrityErrors.push(`s2c session ${r.k}: seq ${seq} assigned, never delivered`);
        continue;
      }

      // server → client
      const lastSeq = info?.lastSeq ?? 0;
      s2c.sent += lastSeq;
      const itemAt = new Map<number, number>();
      for (const [pushId, json] of Object.entries(pushedRaw)) {
        const from = Number(pushId.split(':')[1]);
        (JSON.parse(json) as { seqs: number[] }).seqs.forEach((seq, j) => {
          if (itemAt.has(seq)) integrityErrors.push(`s2c session ${r.k}: seq ${seq} recorded for two pushes`);
          itemAt.set(seq, from + j);
        });
      }
      for (const [item, seq] of r.confirmed) {
        if (itemAt.get(seq) !== item) integrityErrors.push(`s2c session ${r.k}: confirmed item ${item} at seq ${seq}, recorded ${itemAt.get(seq)}`);
      }
      const gotSeq = new Set<number>();
      const gotItem = new Set<number>();
      let maxSeen = 0;
      for (const [seq, item, latency] of r.received) {
        if (gotSeq.has(seq)) {
          s2c.duplicated++;
          continue;
        }
        gotSeq.add(seq);
        if (gotItem.has(item)) s2c.duplicated++;
        gotItem.add(item);
        if (seq < maxSeen) s2c.reordered++;
        maxSeen = Math.max(maxSeen, seq);
        if (itemAt.has(seq) && itemAt.get(seq) !== item) integrityErrors.push(`s2c session ${r.k}: seq ${seq} delivered item ${item}, recorded ${itemAt.get(seq)}`);
        if (seq <= lastSeq) s2c.delivered++;
        s2cLat.push(latency);
      }
      let seqsMissing = 0;
      for (let seq = 1; seq <= lastSeq; seq++) if (!gotSeq.has(seq)) seqsMissing++;
      // A push confirmed at a seq the store later handed out again (a write lost with a Redis
      // master) never reaches the client although every seq does: count such items too.
      let itemsMissing = 0;
      for (const item of r.confirmed.keys()) if (!gotItem.has(item)) itemsMissing++;
      s2c.lost += Math.max(seqsMissing, itemsMissing);
      if (itemAt.size !== lastSeq) integrityErrors.push(`s2c session ${r.k}: ${lastSeq} seqs assigned, ${itemAt.size} recorded by pushes`);
    }
    const allAnomalies = await conn.lrange(chaosKeys(prefix, '-').anomalies, 0, -1);
    const anomalies = allAnomalies.filter((a) => !a.includes(': info: '));
    const notes = allAnomalies.filter((a) => a.includes(': info: '));
    c2sLat.sort((a, b) => a - b);
    s2cLat.sort((a, b) => a - b);
    Object.assign(c2s, { p50: percentile(c2sLat, 50), p99: percentile(c2sLat, 99), max: c2sLat.at(-1) ?? 0 });
    Object.assign(s2c, { p50: percentile(s2cLat, 50), p99: percentile(s2cLat, 99), max: s2cLat.at(-1) ?? 0 });
    const sendRejections = runs.reduce((n, r) => n + r.rejected, 0);
    const ok =
      c2s.lost + c2s.duplicated + c2s.reordered + s2c.lost + s2c.duplicated + s2c.reordered === 0 &&
      unexpectedCloses.length === 0 &&
      instanceCrashes.length === 0 &&
      anomalies.length === 0 &&
      integrityErrors.length === 0 &&
      clusterOpFailures.length === 0 &&
      (!rc || clusterOps.length === rc.ops.length);
    return {
      options: o,
      durationMs: Date.now() - started,
      trafficMs,
      cappedByDuration: capped,
      c2s,
      s2c,
      kills,
      redisRestarts,
      clusterOps: [...clusterOps, ...clusterOpFailures.map((f) => `FAILED: ${f}`)],
      openRetries,
      closeRetries,
      pushRequests,
      pushRetries,
      pushRecovered,
      unexpectedCloses,
      retryCauses,
      instanceCrashes,
      sendRejections,
      onCloseRuns,
      onCloseRepeated,
      anomalies,
      notes,
      integrityErrors,
      proxy: { ...proxy.stats },
      ...(o.websocket ? { sockets: socketStats } : {}),
      ok,
    };
  } finally {
    stopping = true;
    for (const r of runs) if (!r.client.closeEvent) void r.client.close();
    await proxy?.close().catch(() => {});
    await Promise.all(instances.map((i) => i.kill().catch(() => {})));
    await store?.dispose().catch(() => {});
    conn?.disconnect();
    storeConn?.disconnect();
    await redis?.stop().catch(() => {});
    await cluster?.stop().catch(() => {});
    removeBundle();
    process.removeListener('exit', onExit);
  }
}

function maxSeq(confirmed: Map<number, number>): number {
  let m = 0;
  for (const seq of confirmed.values()) m = Math.max(m, seq);
  return m;
}

const pad = (s: string | number, n: number) => String(s).padStart(n);

/** The final table and notes, as printed by `npm run chaos`. */
export function formatReport(r: ChaosReport): string {
  const o = r.options;
  const head = `${'direction'.padEnd(16)}${pad('sent', 9)}${pad('delivered', 11)}${pad('lost', 6)}${pad('duplicated', 12)}${pad('reordered', 11)}${pad('retries', 9)}${pad('p50 ms', 8)}${pad('p99 ms', 8)}${pad('max ms', 8)}`;
  const row = (name: string, d: DirectionStats) =>
    `${name.padEnd(16)}${pad(d.sent, 9)}${pad(d.delivered, 11)}${pad(d.lost, 6)}${pad(d.duplicated, 12)}${pad(d.reordered, 11)}${pad(d.retries, 9)}${pad(d.p50, 8)}${pad(d.p99, 8)}${pad(d.max, 8)}`;
  const p = r.proxy;
  const lines = [
    '',
    `seed ${o.seed} · ${o.sessions} sessions × ${o.messages} messages each way · ${o.instances} instances · ${(r.durationMs / 1000).toFixed(1)} s total, traffic ${(r.trafficMs / 1000).toFixed(1)} s${r.cappedByDuration ? ' (DURATION cap reached)' : ''}`,
    head,
    '-'.repeat(head.length),
    row('client→server', r.c2s),
    row('server→client', r.s2c),
    '',
    `handler redeliveries (documented exception after an instance crash): ${r.c2s.redelivered}`,
    `ioredis autoResendUnfulfilledCommands in the instances: ${o.resend === false ? 'false' : 'true (default)'} · watches: ${o.stream ? 'streaming (stream: true)' : 'plain'}`,
    o.redisCluster
      ? `instance SIGKILLs: ${r.kills} · Redis Cluster (3 masters + 3 replicas) operations: ${r.clusterOps.length} · replicaAcks: ${o.redisCluster.replicaAcks ? JSON.stringify(o.redisCluster.replicaAcks) : 'off'}`
      : `instance SIGKILLs: ${r.kills} · Redis restarts: ${r.redisRestarts} (${o.redisRestartSignal === 'term' ? 'SIGTERM' : 'SIGKILL'}, appendfsync always)`,
    ...r.clusterOps.map((line) => `  ${line}`),
    `proxy: ${p.requests} requests, ${p.droppedRequests} requests dropped, ${p.droppedResponses} responses dropped, ${p.duplicates} duplicated, ${p.cutStreams} cut, ${p.delayed} delayed, ${p.badGateway} × 502 (dead backend)`,
    `client retries: send ${r.c2s.retries}, watch ${r.s2c.retries}, open ${r.openRetries}, close ${r.closeRetries} · pushes: ${r.pushRequests} requests, ${r.pushRetries} retried, ${r.pushRecovered} answered from a dead holder's intent`,
    `client retry causes: ${Object.entries(r.retryCauses)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} × ${v}`)
      .join(', ')}`,
    `onClose: ran for ${r.onCloseRuns} sessions, more than once for ${r.onCloseRepeated} · send() rejections: ${r.sendRejections}`,
  ];
  if (r.sockets) lines.splice(lines.length - 1, 0, `WebSocket transport: ${r.sockets.opened} sockets opened, ${r.sockets.cut} cut at random (besides those of killed instances)`);
  if (r.unexpectedCloses.length) lines.push(`unexpected session ends (${r.unexpectedCloses.length}):`, ...r.unexpectedCloses.slice(0, 10).map((s) => '  ' + s));
  if (r.instanceCrashes.length) lines.push(`instances that died on their own (${r.instanceCrashes.length}):`, ...r.instanceCrashes.slice(0, 3).map((s) => '  ' + s.replace(/\n/g, '\n    ')));
  if (r.integrityErrors.length) lines.push(`integrity errors (${r.integrityErrors.length}):`, ...r.integrityErrors.slice(0, 10).map((s) => '  ' + s));
  if (r.notes.length) lines.push(`push endpoint notes (${r.notes.length}):`, ...r.notes.slice(0, 5).map((s) => '  ' + s));
  if (r.anomalies.length) lines.push(`push endpoint anomalies (${r.anomalies.length}):`, ...r.anomalies.slice(0, 10).map((s) => '  ' + s));
  lines.push(r.ok ? 'RESULT: OK — nothing lost, duplicated or reordered' : 'RESULT: FAILED');
  return lines.join('\n');
}
