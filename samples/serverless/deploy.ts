/**
 * What you deploy: the module a function platform loads. (Shown with this
 * repository's paths; in an app, import from 'bidiweb' and 'bidiweb/redis'.)
 *
 * - `fetch` is the HTTP function, routed for `/session` and everything under
 *   it. Each call builds a fresh bidiweb server (./functions.ts).
 * - `scheduled` is the cron function (e.g. every minute): it expires idle
 *   sessions, which no resident process would otherwise do.
 * - The Redis connection is made at module scope, so a warm instance reuses
 *   it. It is a connection, not session state: nothing else survives here.
 *
 * Static files (samples/chat/public and the browser client,
 * dist/browser/bidiweb.min.js from `npm run build:client`, served as
 * /bidiweb.js) go to the platform's static hosting.
 */
import Redis from 'ioredis';
import { RedisStore } from '../../src/redis';
import { createChatFunctions } from './functions';

const url = process.env.REDIS_URL;
if (!url) throw new Error('REDIS_URL is required: every invocation must share one store');

const redis = new Redis(url, { maxRetriesPerRequest: 2 });
const chat = createChatFunctions({
  store: new RedisStore({ redis }),
  // Below your platform's request limit (here: 30 s): see README.md.
  wait: Number(process.env.BIDI_WAIT ?? 20_000),
  maxWait: Number(process.env.BIDI_MAX_WAIT ?? 25_000),
});

/** HTTP: `export default { fetch }` (Cloudflare-, Deno-, Bun-style; Vercel and Netlify accept a `(Request) => Response` export too). */
export default { fetch: (request: Request) => chat.fetch(request) };

/** Cron: call every minute or so. */
export async function scheduled(): Promise<void> {
  await chat.sweep();
}
