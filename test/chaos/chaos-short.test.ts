/**
 * `npm run chaos` in small, inside `npm test`: 3 instances over RedisStore
 * (AOF, fsync always) behind the faulty balancer (10 % request drops, 10 %
 * response drops, 5 % duplicates, 0–50 ms delays), 20 sessions × 100
 * messages each way, one instance SIGKILLed and restarted, one Redis crash
 * and restart. Nothing may be lost, duplicated or reordered.
 *
 * The instances use ioredis' defaults, so the Redis crash makes ioredis
 * resend the commands whose replies it lost; every store script must be safe
 * to run twice (test/chaos/redis-resend.test.ts pins each one down).
 *
 * It runs three times: with plain watches, with streaming watches of which
 * the balancer cuts 5 % midway (status, headers and part of the frames, then
 * a reset), and in groups mode (server → client traffic as publishes to 4
 * groups, each member pulling every one of its group's 100 items once, in
 * order).
 */
import { expectCleanRun } from './expect-clean';
import { runShortChaos, SHORT_MESSAGES_EACH_WAY } from './short';

jest.setTimeout(180_000);

const SEED = Number(process.env.SEED ?? 20_240_601);

const VARIANTS = [
  { name: 'plain watches', stream: false, cutStream: 0, groups: undefined },
  { name: 'streaming watches, 5 % of responses cut midway', stream: true, cutStream: 0.05, groups: undefined },
  { name: 'groups: 100 publishes to each of 4 groups of 5 members, instead of pushes', stream: false, cutStream: 0, groups: 4 },
];

describe.each(VARIANTS)('chaos, short: $name', ({ stream, cutStream, groups }) => {
  it(`20 sessions × 100 messages each way under faults, a SIGKILL and a Redis crash: nothing lost, duplicated or reordered (seed ${SEED})`, async () => {
    const report = await runShortChaos(SEED, { stream, groups, faults: { cutStream } });
    expect(report.kills).toBe(1);
    expect(report.redisRestarts).toBe(1);
    // The network really misbehaved.
    expect(report.proxy.droppedRequests).toBeGreaterThan(0);
    expect(report.proxy.droppedResponses).toBeGreaterThan(0);
    expect(report.proxy.duplicates).toBeGreaterThan(0);
    if (cutStream > 0) expect(report.proxy.cutStreams).toBeGreaterThan(0);
    expectCleanRun(report, SHORT_MESSAGES_EACH_WAY);
  });
});
