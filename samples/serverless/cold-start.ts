/**
 * Cold start per runtime: the time from spawning a fresh runtime process to
 * the first answered open (`POST /session` → 201), with the RedisStore on a
 * redis-server this script starts. A figure to read, not a test.
 *
 *   node scripts/run-ts.mjs samples/serverless/cold-start.ts [runs=5]
 *
 * - deno, bun: `deno run` / `bun` on the bundled entry (runtimes/deno.ts,
 *   runtimes/bun.ts), then an open over HTTP.
 * - workerd: miniflare starting the workerd binary on runtimes/workerd.ts
 *   (miniflare's own setup included), then an open over HTTP.
 * - node (Lambda handler): `node` importing the bundled runtimes/lambda.ts
 *   and invoking its handler with an open event (no HTTP: what Lambda's
 *   Node runtime does after its own init).
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { startRedis } from '../../test/helpers/redis-server';
import { bundleRuntimeEntry } from './runtimes/bundle';
import { findRuntime, startRuntime, type Runtime } from './runtimes/launch';

const RUNS = Number(process.argv[2] ?? 5);
const ENTRIES = path.resolve('samples', 'serverless', 'runtimes');
const OPEN = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"v":1}' };

async function openOnce(base: string): Promise<void> {
  const r = await fetch(`${base}/session`, OPEN);
  if (r.status !== 201) throw new Error(`open answered ${r.status}: ${await r.text()}`);
}

async function timeServe(rt: Runtime, bundle: string, env: Record<string, string>): Promise<number> {
  const t0 = performance.now();
  const started = await startRuntime(rt, bundle, env);
  try {
    await openOnce(`http://127.0.0.1:${started.port}`);
    return performance.now() - t0;
  } finally {
    await started.stop();
  }
}

async function timeWorkerd(bundle: string, env: Record<string, string>): Promise<number> {
  const { Miniflare } = await import('miniflare');
  const t0 = performance.now();
  const mf = new Miniflare({
    modules: true,
    scriptPath: bundle,
    modulesRoot: path.dirname(bundle),
    compatibilityDate: '2026-04-01',
    compatibilityFlags: ['nodejs_compat'],
    bindings: env,
    cf: false,
  });
  try {
    await openOnce((await mf.ready).origin);
    return performance.now() - t0;
  } finally {
    await mf.dispose();
  }
}

function timeLambda(bundle: string, env: Record<string, string>): Promise<number> {
  const event = { version: '2.0', rawPath: '/session', rawQueryString: '', headers: { 'content-type': 'application/json' }, requestContext: { http: { method: 'POST' } }, body: '{"v":1}', isBase64Encoded: false };
  const code = `import(${JSON.stringify(bundle)}).then(async (m) => { const r = await m.handler(${JSON.stringify(event)}); console.log('STATUS ' + r.statusCode); process.exit(0); });`;
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', code], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (/STATUS 201/.test(out)) resolve(performance.now() - t0);
    });
    child.once('exit', (code) => (/STATUS 201/.test(out) ? undefined : reject(new Error(`lambda run exited ${code}: ${out}`))));
  });
}

function summary(ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  const f = (n: number) => `${Math.round(n)} ms`;
  return `${f(s[Math.floor(s.length / 2)]!).padStart(8)} ${f(s[0]!).padStart(8)} ${f(s[s.length - 1]!).padStart(8)}`;
}

async function main(): Promise<void> {
  const redis = await startRedis();
  const env = { REDIS_URL: redis.url, PREFIX: 'cold:' };
  const rows: string[] = [];
  const dirs: string[] = [];
  try {
    for (const name of ['deno', 'bun'] as const) {
      const rt = findRuntime(name);
      if ('skip' in rt) {
        rows.push(`${name.padEnd(30)} skipped: ${rt.skip}`);
        continue;
      }
      const bundle = await bundleRuntimeEntry(path.join(ENTRIES, `${name}.ts`));
      dirs.push(path.dirname(bundle));
      const ms: number[] = [];
      for (let i = 0; i < RUNS; i++) ms.push(await timeServe(rt, bundle, env));
      rows.push(`${`${name} ${rt.version.split(' ')[1] ?? rt.version}`.padEnd(30)} ${summary(ms)}`);
    }
    const workerd = await bundleRuntimeEntry(path.join(ENTRIES, 'workerd.ts'));
    dirs.push(path.dirname(workerd));
    const wms: number[] = [];
    for (let i = 0; i < RUNS; i++) wms.push(await timeWorkerd(workerd, { REDIS_URL: redis.url }));
    rows.push(`${'workerd (miniflare)'.padEnd(30)} ${summary(wms)}`);
    const lambda = await bundleRuntimeEntry(path.join(ENTRIES, 'lambda.ts'));
    dirs.push(path.dirname(lambda));
    const lms: number[] = [];
    for (let i = 0; i < RUNS; i++) lms.push(await timeLambda(lambda, env));
    rows.push(`${`node ${process.versions.node} (Lambda handler)`.padEnd(30)} ${summary(lms)}`);
  } finally {
    await redis.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
  console.log(`cold start → first answered open, RedisStore, ${RUNS} runs each`);
  console.log(`${'runtime'.padEnd(30)} ${'median'.padStart(8)} ${'min'.padStart(8)} ${'max'.padStart(8)}`);
  for (const row of rows) console.log(row);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
