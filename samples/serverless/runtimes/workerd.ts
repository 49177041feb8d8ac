/**
 * bidiweb on Cloudflare's workerd (Workers): the module worker's `fetch`
 * serves the Fetch handler (./app.ts), `scheduled` (a cron trigger) sweeps.
 * The store comes from the environment: RedisStore over ioredis (through
 * workerd's node:net, `nodejs_compat`) when `REDIS_URL` is bound — one
 * connection per request, as workerd binds a socket to the request that
 * opened it — else a MemoryStore — which lives only as long as this isolate, so it
 * shows the handler running, not a deployment.
 */
import { MemoryStore } from '../../../src/core/stores/memory';
import type { Store } from '../../../src/core/store';
import { createRuntimeApp, type RequestScopedStore, type RuntimeApp } from './app';

interface Env {
  REDIS_URL?: string;
  /** "1": one module-scope connection for every request, as on other runtimes (hangs on workerd: docs/SERVERLESS.md). */
  SHARED_CONNECTION?: string;
  WAIT?: string;
  MAX_WAIT?: string;
  IDLE_TIMEOUT?: string;
}

let app: RuntimeApp | undefined;
let storeError: string | undefined;

async function appFor(env: Env): Promise<RuntimeApp> {
  if (app) return app;
  let store: Store | RequestScopedStore;
  if (env.REDIS_URL) {
    // Loaded only when asked for, so the MemoryStore worker does not need node:net.
    // A connection per request: workerd does not let one request use another's socket.
    const { createRedisStore, requestScopedRedisStore } = await import('./redis-store');
    store = env.SHARED_CONNECTION === '1' ? createRedisStore(env.REDIS_URL) : requestScopedRedisStore(env.REDIS_URL);
  } else {
    store = new MemoryStore();
  }
  const num = (v: string | undefined) => (v ? Number(v) : undefined);
  app = createRuntimeApp({ store, runtime: 'workerd', wait: num(env.WAIT), maxWait: num(env.MAX_WAIT), idleTimeout: num(env.IDLE_TIMEOUT) });
  return app;
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    try {
      return await (await appFor(env)).fetch(request);
    } catch (err) {
      storeError = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      return new Response(JSON.stringify({ error: { code: 'INTERNAL', message: storeError } }), { status: 500, headers: { 'content-type': 'application/json' } });
    }
  },
  async scheduled(_event: unknown, env: Env): Promise<void> {
    await (await appFor(env)).sweep();
  },
};
