/**
 * One chat instance over a RedisStore: what `npm run chat:cluster` starts
 * three of (./cluster.ts), and what the browser tests run (test/e2e).
 *
 * It imports src/redis, whose Lua scripts tsx cannot load, so it runs as an
 * esbuild bundle (Lua as text; see ./bundle.ts):
 *
 *   REDIS_URL=redis://127.0.0.1:6390 PORT=0 CHAT_ROOT=/path/to/repo node <bundle>   → prints "LISTENING <port>"
 *
 * Environment: REDIS_URL (required), PORT (0 = any), CHAT_ROOT (the
 * repository root, for the page and the client source), PREFIX (Redis key
 * prefix, default `chat:`), INSTANCE (name sent as `x-chat-instance`), WAIT
 * and IDLE_TIMEOUT (ms), HISTORY_KEEP (lines per room), WS (1: also serve
 * WebSocket upgrades at /session/ws with bidiweb/ws, for pages opened with
 * `?transport=websocket` or `?transport=auto`).
 */
import type { AddressInfo } from 'node:net';
import Redis from 'ioredis';
import { RedisStore } from '../../src/redis';
import { attach, type WsAttachment } from '../../src/ws';
import { createChatApp } from './server';

const url = process.env.REDIS_URL;
if (!url) {
  console.error('[chat] REDIS_URL is required');
  process.exit(2);
}
const num = (name: string): number | undefined => (process.env[name] ? Number(process.env[name]) : undefined);

const redis = new Redis(url, { maxRetriesPerRequest: 2, lazyConnect: false });
redis.on('error', () => {}); // ioredis reconnects by itself; requests meanwhile fail with 500 and clients retry
const store = new RedisStore({ redis, prefix: process.env.PREFIX ?? 'chat:' });
const name = process.env.INSTANCE ?? `pid-${process.pid}`;
const keep = num('HISTORY_KEEP');

const { app, middleware } = createChatApp({
  store,
  root: process.env.CHAT_ROOT,
  instanceName: name,
  wait: num('WAIT'),
  idleTimeout: num('IDLE_TIMEOUT'),
  history: keep ? { keep } : true,
  log: (line) => console.error(`[${name}] ${line}`),
});

const server = app.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(`LISTENING ${(server.address() as AddressInfo).port}`);
});
server.keepAliveTimeout = 65_000;
const sockets: WsAttachment | undefined = process.env.WS === '1' ? attach(server, middleware) : undefined;

let stopping = false;
function stop(): void {
  if (stopping) return;
  stopping = true;
  server.close();
  server.closeAllConnections();
  void Promise.resolve(sockets?.close())
    .then(() => middleware.server.dispose())
    .then(() => store.dispose())
    .then(() => redis.quit())
    .catch(() => {})
    .finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 3000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
