/**
 * The chaos run (test/chaos/run.ts) in small, in WebSocket mode: 3 instance
 * processes over RedisStore (AOF, fsync always); clients on
 * `transport: 'websocket'`, each socket to the next live instance; a random
 * client socket cut every 100 ms, one instance SIGKILLed, Redis crashed and
 * restarted; opens and closes through the faulty balancer. Nothing may be
 * lost, duplicated or reordered.
 */
import { expectCleanRun } from '../chaos/expect-clean';
import { runShortChaos, SHORT_MESSAGES_EACH_WAY } from '../chaos/short';

jest.setTimeout(180_000);

const SEED = Number(process.env.SEED ?? 20_241_130);

it(`chaos over WebSockets: 20 sessions × 100 messages each way, sockets cut at random, a SIGKILL and a Redis crash (seed ${SEED})`, async () => {
  const report = await runShortChaos(SEED, { websocket: { cutSocketEveryMs: 100 } });
  expect(report.kills).toBe(1);
  expect(report.redisRestarts).toBe(1);
  expect(report.sockets!.cut).toBeGreaterThan(5);
  expect(report.sockets!.opened).toBeGreaterThan(20 + report.sockets!.cut / 2);
  expectCleanRun(report, SHORT_MESSAGES_EACH_WAY);
});
