/**
 * bidiweb on Bun: `Bun.serve` with the Fetch handler (./app.ts) on a
 * RedisStore. Bundled with esbuild (./bundle.ts) and run with
 *
 *   REDIS_URL=redis://127.0.0.1:6379 PORT=8000 bun bundle.mjs
 *
 * Prints `LISTENING <port>` once it serves.
 */
import { appOptionsFromEnv, createRedisApp } from './redis-app';

// Bun's own global, typed here for what is used (no bun-types in this repo).
declare const Bun: {
  env: Record<string, string | undefined>;
  serve(options: {
    port: number;
    hostname: string;
    idleTimeout?: number;
    fetch(request: Request): Promise<Response>;
  }): { port: number };
};

const app = createRedisApp(appOptionsFromEnv((name) => Bun.env[name], 'bun'));
const server = Bun.serve({
  port: Number(Bun.env.PORT ?? 8000),
  hostname: '127.0.0.1',
  // Bun closes a connection idle for 10 s by default, a hanging watch too:
  // allow the longest watch (maxWait) plus a margin. 255 s is Bun's maximum.
  idleTimeout: Math.min(255, Math.ceil(Number(Bun.env.MAX_WAIT ?? 25_000) / 1000) + 10),
  fetch: (request) => app.fetch(request),
});
console.log(`LISTENING ${server.port}`);
