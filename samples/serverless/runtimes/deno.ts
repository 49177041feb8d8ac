/**
 * bidiweb on Deno: `Deno.serve` with the Fetch handler (./app.ts) on a
 * RedisStore. Bundled with esbuild (./bundle.ts) and run with
 *
 *   REDIS_URL=redis://127.0.0.1:6379 PORT=8000 deno run -A --no-config bundle.mjs
 *
 * Prints `LISTENING <port>` once it serves.
 */
import { appOptionsFromEnv, createRedisApp } from './redis-app';

// Deno's own global, typed here for what is used (no Deno types in this repo).
declare const Deno: {
  env: { get(name: string): string | undefined };
  serve(
    options: { port: number; hostname: string; onListen(addr: { port: number }): void },
    handler: (request: Request) => Promise<Response>,
  ): unknown;
};

const app = createRedisApp(appOptionsFromEnv((name) => Deno.env.get(name), 'deno'));
Deno.serve(
  {
    port: Number(Deno.env.get('PORT') ?? 8000),
    hostname: '127.0.0.1',
    onListen: ({ port }) => console.log(`LISTENING ${port}`),
  },
  (request) => app.fetch(request),
);
