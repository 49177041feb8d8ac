/**
 * `npm run chaos` — prove it under failure.
 *
 * 3 server instances over one RedisStore (a redis-server this script starts
 * on a free port, `appendonly yes`, `appendfsync always`), behind a
 * round-robin balancer that drops 10 % of requests and 10 % of responses,
 * duplicates 5 % and delays every request by 0–50 ms; 200 sessions × 1 000
 * messages each way; one instance SIGKILLed and restarted every 5 s; Redis
 * SIGKILLed and restarted once midway. At the end, a table per direction;
 * exit code 1 on any loss, duplicate or reorder.
 *
 * Options (flag or environment variable):
 *
 *   --seed N        SEED        fault / schedule seed (default: random, printed)
 *   --sessions N    SESSIONS    default 200
 *   --messages N    MESSAGES    per session, each way; default 1000
 *   --duration S    DURATION    cap on the traffic phase, seconds; default 900
 *   --drain S       DRAIN       then wait at most this long for what is in flight; default 120
 *   --instances N   INSTANCES   default 3
 *   --kill-every S  KILL_EVERY  seconds between instance kills; default 5 (0 = none)
 *   --drop-request P, --drop-response P, --duplicate P, --max-delay MS
 *                   (DROP_REQUEST, DROP_RESPONSE, DUPLICATE, MAX_DELAY)  the fault mix; default 0.1, 0.1, 0.05, 50
 *   --cut P         CUT         probability of cutting a response midway; default 0
 *   --redis-signal  REDIS_SIGNAL  kill | term: how Redis is restarted midway; default kill
 *   --no-resend     RESEND=0    instances' ioredis with autoResendUnfulfilledCommands: false
 *                               (and a commandTimeout): the other way to configure ioredis
 *   --stream        STREAM=1    clients use streaming watches (combine with --cut to cut them midway)
 *   --websocket     WEBSOCKET=1 clients use transport: 'websocket' (instances serve bidiweb/ws; each socket goes to
 *                               the next instance); a random socket is cut every --cut-socket MS (CUT_SOCKET, default 200)
 *   --groups N      GROUPS      groups mode: sessions join N groups, and the server → client
 *                               traffic is MESSAGES publishes per group (written once, pulled
 *                               by every member) instead of pushes per session; default 0 (off)
 *   --publish-batch N  PUBLISH_BATCH  groups mode: each publish request carries 1 to N items, which
 *                               the instance publishes in one turn, none awaited (one RedisStore
 *                               batch); default 1
 *   --no-redis-restart          skip the Redis crash
 *   --redis-cluster-failover    cluster mode: the store on a Redis Cluster of 3 masters + 3 replicas
 *                               (cluster-node-timeout 1500 ms), operated during the traffic; no
 *                               Redis crash; the run's bookkeeping on a Redis of its own. Default
 *                               operations: CLUSTER FAILOVER at 20 %, a reshard of slots holding
 *                               live sessions at 45 %, a SIGKILL of a master at 70 %
 *                               (test/chaos/cluster-ops.ts)
 *   --cluster-ops LIST  CLUSTER_OPS  e.g. failover@0.2,reshard@0.45,kill@0.7 (implies cluster mode)
 *   --replica-acks R:MS REPLICA_ACKS  the instances' RedisStore replicaAcks { replicas: R, timeoutMs: MS }
 *   --json FILE     JSON        also write the report as JSON
 *
 *   node scripts/run-ts.mjs test/chaos/chaos.ts --seed 42 --sessions 20 --messages 100
 */
import { writeFileSync } from 'node:fs';
import { formatReport, runChaos } from './run';

function arg(name: string, env: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  const eq = process.argv.find((a) => a.startsWith(`--${name}=`));
  if (eq) return eq.slice(name.length + 3);
  return process.env[env];
}

function num(name: string, env: string, fallback: number): number {
  const v = arg(name, env);
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) {
    console.error(`chaos: --${name} / ${env} must be a non-negative number, got ${v}`);
    process.exit(2);
  }
  return n;
}

async function main(): Promise<void> {
  const seed = Math.floor(num('seed', 'SEED', Math.floor(Math.random() * 2 ** 31)));
  const killEvery = num('kill-every', 'KILL_EVERY', 5);
  const signal = arg('redis-signal', 'REDIS_SIGNAL') === 'term' ? 'term' : 'kill';
  const opsArg = arg('cluster-ops', 'CLUSTER_OPS');
  const clusterMode = process.argv.includes('--redis-cluster-failover') || !!opsArg;
  const ops = (opsArg ?? 'failover@0.2,reshard@0.45,kill@0.7').split(',').map((item) => {
    const [op, at] = item.split('@');
    if ((op !== 'failover' && op !== 'kill' && op !== 'reshard') || !(Number(at) >= 0 && Number(at) <= 1)) {
      console.error(`chaos: --cluster-ops takes op@fraction items (op: failover | kill | reshard), got ${item}`);
      process.exit(2);
    }
    return { op: op as 'failover' | 'kill' | 'reshard', at: Number(at) };
  });
  const acksArg = arg('replica-acks', 'REPLICA_ACKS');
  const acks = acksArg?.split(':').map(Number);
  const report = await runChaos({
    seed,
    sessions: Math.floor(num('sessions', 'SESSIONS', 200)),
    messages: Math.floor(num('messages', 'MESSAGES', 1000)),
    instances: Math.max(1, Math.floor(num('instances', 'INSTANCES', 3))),
    faults: {
      dropRequest: num('drop-request', 'DROP_REQUEST', 0.1),
      dropResponse: num('drop-response', 'DROP_RESPONSE', 0.1),
      duplicate: num('duplicate', 'DUPLICATE', 0.05),
      maxDelayMs: num('max-delay', 'MAX_DELAY', 50),
      cutStream: num('cut', 'CUT', 0),
    },
    killEveryMs: killEvery > 0 ? killEvery * 1000 : undefined,
    redisRestartAt: process.argv.includes('--no-redis-restart') || clusterMode ? undefined : 0.5,
    ...(clusterMode ? { redisCluster: { ops, ...(acks ? { replicaAcks: { replicas: acks[0]!, timeoutMs: acks[1]! } } : {}) } } : {}),
    redisRestartSignal: signal,
    resend: !(process.argv.includes('--no-resend') || process.env.RESEND === '0'),
    stream: process.argv.includes('--stream') || process.env.STREAM === '1',
    ...(process.argv.includes('--websocket') || process.env.WEBSOCKET === '1' ? { websocket: { cutSocketEveryMs: num('cut-socket', 'CUT_SOCKET', 200) } } : {}),
    groups: Math.floor(num('groups', 'GROUPS', 0)) || undefined,
    publishBatch: Math.max(1, Math.floor(num('publish-batch', 'PUBLISH_BATCH', 1))),
    durationMs: num('duration', 'DURATION', 900) * 1000,
    drainMs: num('drain', 'DRAIN', 120) * 1000,
    progressEveryMs: 5000,
  });
  console.log(formatReport(report));
  const json = arg('json', 'JSON');
  if (json) writeFileSync(json, JSON.stringify(report, null, 2));
  process.exit(report.ok ? 0 : 1);
}

main().catch((err) => {
  console.error('chaos: failed to run:', err);
  process.exit(2);
});
