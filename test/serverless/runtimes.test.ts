/**
 * bidiweb's Fetch handler on real runtimes other than Node: Deno (`Deno.serve`)
 * and Bun (`Bun.serve`), each a child process serving a bundle of
 * samples/serverless/runtimes/<runtime>.ts on a RedisStore (ioredis over the
 * runtime's node:net) on a test-started redis-server. From this process, two
 * sessions of the project's client chat both ways through it; every session
 * request gets a fresh server object; one scheduled sweep (POST /sweep)
 * expires an abandoned session and its onClose reaches the others.
 *
 * A runtime whose npm package is not installed, or whose binary does not run
 * here, is skipped with the reason in the test name.
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { bundleRuntimeEntry } from '../../samples/serverless/runtimes/bundle';
import { findRuntime, startRuntime, type Runtime, type RuntimeName, type Started } from '../../samples/serverless/runtimes/launch';
import { chatScenario } from './scenario';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

const IDLE_TIMEOUT = 3000;
const ENTRY_DIR = path.join(__dirname, '..', '..', 'samples', 'serverless', 'runtimes');

for (const name of ['deno', 'bun'] as RuntimeName[]) {
  const found = findRuntime(name);
  const run: Runtime | undefined = 'skip' in found ? undefined : found;
  const title = run ? `${name} (${run.version})` : `${name} — skipped: ${(found as { skip: string }).skip}`;

  (run ? describe : describe.skip)(title, () => {
    let redis: RedisProcess;
    let bundle: string;
    let rt: Started;
    let base: string;

    beforeAll(async () => {
      redis = await startRedis();
      bundle = await bundleRuntimeEntry(path.join(ENTRY_DIR, `${name}.ts`));
      rt = await startRuntime(run!, bundle, {
        REDIS_URL: redis.url,
        PREFIX: `${name}:`,
        WAIT: '1000',
        MAX_WAIT: '2000',
        IDLE_TIMEOUT: String(IDLE_TIMEOUT),
      });
      base = `http://127.0.0.1:${rt.port}`;
    }, 25_000);

    afterAll(async () => {
      await rt?.stop();
      await redis?.stop();
      if (bundle) rmSync(path.dirname(bundle), { recursive: true, force: true });
    });

    test('two sessions chat both ways, a fresh server per request, one scheduled sweep', async () => {
      await chatScenario({ base, runtime: name, idleTimeout: IDLE_TIMEOUT, streams: true });
      expect(rt.stderr()).not.toMatch(/error/i);
    }, 25_000);
  });
}
