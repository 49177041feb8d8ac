/**
 * `npm run chaos -- --redis-cluster-failover` in small, inside `npm test`:
 * RedisStore on a Redis Cluster of 3 masters + 3 replicas, 2 instances
 * behind the faulty balancer, 20 sessions × 150 messages each way, and
 * during the traffic a coordinated failover (CLUSTER FAILOVER on the replica
 * of the master holding the most live sessions) and a reshard of slots that
 * hold live sessions (`redis-cli --cluster reshard`: ioredis follows MOVED,
 * ASK and TRYAGAIN). Nothing may be lost, duplicated or reordered.
 *
 * The uncoordinated case (a master SIGKILLed, its replica taking over on its
 * own) is measured by `npm run chaos -- --redis-cluster-failover`, not
 * asserted here: see docs/RELIABILITY.md.
 */
import { formatReport, runChaos } from './run';
import { expectCleanRun } from './expect-clean';

jest.setTimeout(90_000);

const SEED = Number(process.env.SEED ?? 20_240_613);

it(`Redis Cluster: a CLUSTER FAILOVER and a reshard of live sessions during traffic lose, duplicate and reorder nothing (seed ${SEED})`, async () => {
  const lines: string[] = [];
  const report = await runChaos({
    seed: SEED,
    sessions: 20,
    messages: 150,
    instances: 2,
    faults: { dropRequest: 0.05, dropResponse: 0.05, duplicate: 0.02, maxDelayMs: 20, cutStream: 0 },
    redisCluster: {
      ops: [
        { op: 'failover', at: 0.2 },
        { op: 'reshard', at: 0.45 },
      ],
    },
    durationMs: 40_000,
    drainMs: 10_000,
    progressEveryMs: 5_000,
    log: (line) => lines.push(line),
  });
  console.log(`${lines.join('\n')}\n${formatReport(report)}`);
  expect(report.clusterOps).toEqual([expect.stringMatching(/^CLUSTER FAILOVER: .* handed over/), expect.stringMatching(/^reshard: \d+ slots .* carrying [1-9]\d* live sessions/)]);
  // Each operation met flowing traffic: some drivers may already wait at the gate (a slow machine),
  // never all of them.
  for (const op of report.clusterOps) {
    const idle = /(\d+) of (\d+) drivers idle at the gate/.exec(op);
    if (idle) expect(Number(idle[1])).toBeLessThan(Number(idle[2]));
  }
  expectCleanRun(report, 3000);
});
