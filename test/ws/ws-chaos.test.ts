/**
 * The chaos run (test/chaos/run.ts) in small, in WebSocket mode: 3 instance
 * processes over RedisStore (AOF, fsync always); clients on
 * `transport: 'websocket'`, each socket to the next live instance; a random
 * client socket cut every 100 ms, one instance SIGKILLed, Redis crashed and
 * restarted; opens and closes through the faulty balancer. Nothing may be
 * lost, duplicated or reordered.
 */
import { formatReport, runChaos } from '../chaos/run';
import { expectCleanRun } from '../chaos/expect-clean';

jest.setTimeout(180_000);

const SEED = Number(process.env.SEED ?? 20_241_130);

it(`chaos over WebSockets: 20 sessions × 100 messages each way, sockets cut at random, a SIGKILL and a Redis crash (seed ${SEED})`, async () => {
  const lines: string[] = [];
  const report = await runChaos({
    seed: SEED,
    sessions: 20,
    messages: 100,
    instances: 3,
    faults: { dropRequest: 0.1, dropResponse: 0.1, duplicate: 0.05, maxDelayMs: 50 },
    websocket: { cutSocketEveryMs: 100 },
    killAtProgress: [0.3],
    redisRestartAt: 0.6,
    redisRestartSignal: 'kill',
    durationMs: 90_000,
    drainMs: 30_000,
    progressEveryMs: 5_000,
    log: (line) => lines.push(line),
  });
  console.log(`${lines.join('\n')}\n${formatReport(report)}`);
  expect(report.kills).toBe(1);
  expect(report.redisRestarts).toBe(1);
  expect(report.sockets!.cut).toBeGreaterThan(5);
  expect(report.sockets!.opened).toBeGreaterThan(20 + report.sockets!.cut / 2);
  expectCleanRun(report, 2000);
});
