/**
 * `npm run fuzz` — 100 000 generated requests against a live Express server
 * whose other sessions carry real traffic (see ./fuzz.ts for what is
 * generated and checked). Exit code 1 on any failure.
 *
 *   node --expose-gc scripts/run-ts.mjs test/fuzz/http-fuzz.ts [--seed N] [--requests N] [--concurrency N] [--json FILE]
 *
 * Environment: SEED, REQUESTS, CONCURRENCY.
 */
import { writeFileSync } from 'node:fs';
import { formatFuzzReport, runFuzz } from './fuzz';

function arg(name: string, env: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  return process.env[env];
}

async function main(): Promise<void> {
  const seed = Number(arg('seed', 'SEED') ?? Math.floor(Math.random() * 2 ** 31));
  const report = await runFuzz({
    seed,
    requests: Number(arg('requests', 'REQUESTS') ?? 100_000),
    concurrency: Number(arg('concurrency', 'CONCURRENCY') ?? 32),
    trafficSessions: 10,
    trafficMessages: 500,
    sequentialChecks: 2_000,
  });
  console.log(formatFuzzReport(report));
  const json = arg('json', 'JSON');
  if (json) writeFileSync(json, JSON.stringify(report, null, 2));
  process.exit(report.ok ? 0 : 1);
}

main().catch((err) => {
  console.error('fuzz: failed to run:', err);
  process.exit(2);
});
