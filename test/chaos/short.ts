/**
 * `npm run chaos` in small, as `npm test` runs it (test/chaos/chaos-short.test.ts,
 * test/ws/ws-chaos.test.ts): 3 instances over RedisStore, 20 sessions × 100
 * messages each way through the faulty balancer (10 % request drops, 10 %
 * response drops, 5 % duplicates, 0–50 ms delays), one instance SIGKILLed at
 * 30 % and Redis crashed at 60 %. Prints the run and its table.
 */
import { formatReport, runChaos, type ChaosOptions, type ChaosReport } from './run';

/** The messages each way of a short run. */
export const SHORT_MESSAGES_EACH_WAY = 20 * 100;

export async function runShortChaos(seed: number, over: Partial<ChaosOptions> = {}): Promise<ChaosReport> {
  const lines: string[] = [];
  const report = await runChaos({
    seed,
    sessions: 20,
    messages: 100,
    instances: 3,
    killAtProgress: [0.3],
    redisRestartAt: 0.6,
    redisRestartSignal: 'kill',
    durationMs: 90_000,
    drainMs: 30_000,
    progressEveryMs: 5_000,
    log: (line) => lines.push(line),
    ...over,
    faults: { dropRequest: 0.1, dropResponse: 0.1, duplicate: 0.05, maxDelayMs: 50, ...over.faults },
  });
  console.log(`${lines.join('\n')}\n${formatReport(report)}`);
  return report;
}
