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
import type { FetchLike } from '../../src/client';
import { bundleRuntimeEntry } from '../../samples/serverless/runtimes/bundle';
import { findRuntime, startRuntime, type Runtime, type RuntimeName, type Started } from '../../samples/serverless/runtimes/launch';
import { openWatched, waitFor } from '../helpers/client-session';
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
      bundle = bundleRuntimeEntry(path.join(ENTRY_DIR, `${name}.ts`));
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
      // Count every session request the clients make, to compare with the servers the runtime built.
      let requests = 0;
      const counted: FetchLike = (url, init) => {
        requests++;
        return fetch(url, init as RequestInit) as ReturnType<FetchLike>;
      };

      // carol opens and walks away (no watch, no close): only a sweep can end her session.
      const carol = await fetch(`${base}/session`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ v: 1, meta: { name: 'carol' } }),
      });
      requests++;
      expect(carol.status).toBe(201);
      const carolOpenedAt = Date.now();

      const alice = openWatched(`${base}/session`, { meta: { name: 'alice' }, fetch: counted });
      const bob = openWatched(`${base}/session`, { meta: { name: 'bob' }, fetch: counted });
      await Promise.all([alice.opened, bob.opened]);

      for (const text of ['a1', 'a2', 'a3']) void alice.s.send({ text });
      for (const text of ['b1', 'b2']) void bob.s.send({ text });
      const chat = (w: typeof alice) => w.received.filter((m) => 'text' in m);
      await waitFor('5 chat messages on both sides', () => chat(alice).length === 5 && chat(bob).length === 5, 10_000);
      for (const w of [alice, bob]) {
        // Each sender's messages arrive in the order sent, once, at both sessions.
        expect(chat(w).filter((m) => m.from === 'alice').map((m) => m.text)).toEqual(['a1', 'a2', 'a3']);
        expect(chat(w).filter((m) => m.from === 'bob').map((m) => m.text)).toEqual(['b1', 'b2']);
      }
      expect(alice.received).toEqual(bob.received);

      // The scheduled function, once carol is idle past the idle timeout: it expires her (and only her).
      await new Promise((r) => setTimeout(r, Math.max(0, carolOpenedAt + IDLE_TIMEOUT + 500 - Date.now())));
      const swept = await fetch(`${base}/sweep`, { method: 'POST' });
      expect(await swept.json()).toEqual({ expired: 1 });
      await waitFor('the sweep’s onClose notice', () => alice.received.some((m) => m.left === 'carol') && bob.received.some((m) => m.left === 'carol'));
      expect(alice.s.state).toBe('open');
      expect(bob.s.state).toBe('open');
      // The runtime's server streams the watch (the client's 'auto' check kept it on).
      expect(alice.s.streaming).toBe(true);
      expect(bob.s.streaming).toBe(true);

      // After they close, every request served had a server object of its own.
      await Promise.all([alice.s.close(), bob.s.close()]);
      const stats = (await (await fetch(`${base}/stats`)).json()) as { runtime: string; servers: number };
      expect(stats.runtime).toBe(name);
      expect(stats.servers).toBe(requests);
      expect(requests).toBeGreaterThan(5);
      expect(rt.stderr()).not.toMatch(/error/i);
    }, 25_000);
  });
}
