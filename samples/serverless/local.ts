/**
 * Runs the serverless chat (./functions.ts) locally, the way a function
 * platform would call it:
 *
 *   npx tsx samples/serverless/local.ts                        # MemoryStore shared by all "invocations"
 *   REDIS_URL=redis://127.0.0.1:6379/5 npx tsx samples/serverless/local.ts   # RedisStore (keys prefixed chat:)
 *   PORT=8080 SWEEP_EVERY=10000 npx tsx samples/serverless/local.ts
 *
 * - Every `/session…` request is turned into a Web `Request` and answered by
 *   `fetch()` of ./functions.ts, which builds a brand-new bidiweb server for
 *   it: no server object outlives a request.
 * - A timer calls `sweep()` every SWEEP_EVERY ms (default 15 s), standing in
 *   for the platform's cron trigger.
 * - The page and /bidiweb.js stand in for static hosting.
 *
 * With REDIS_URL, the RedisStore is loaded from an esbuild bundle of
 * ./redis-store.ts (tsx cannot load the Lua scripts of src/redis).
 */
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { rmSync } from 'node:fs';
import type { Store } from '../../src/core/store';
import { MemoryStore } from '../../src/core/stores/memory';
import { bundleEntry } from '../chat/bundle';
import { lazyClientBundle, REPO_ROOT } from '../chat/client-bundle';
import { createChatFunctions, type ChatFunctions } from './functions';

const PUBLIC_DIR = path.join(REPO_ROOT, 'samples', 'chat', 'public');
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

export interface LocalServer {
  url: string;
  port: number;
  functions: ChatFunctions;
  close(): Promise<void>;
}

export interface LocalOptions {
  store: Store;
  port?: number;
  /** ms between scheduled sweeps; 0 = none. */
  sweepEvery?: number;
  wait?: number;
  maxWait?: number;
  idleTimeout?: number;
  log?: (line: string) => void;
}

/** Node request → Web Request (body streamed, aborted when the client goes away). */
function toRequest(req: http.IncomingMessage, res: http.ServerResponse, origin: string): Request {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    headers.set(name, Array.isArray(value) ? value.join(', ') : value);
  }
  const abort = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) abort.abort();
  });
  const method = req.method ?? 'GET';
  const hasBody = method !== 'GET' && method !== 'HEAD';
  const init: RequestInit & { duplex?: 'half' } = { method, headers, signal: abort.signal };
  if (hasBody) {
    init.body = new ReadableStream<Uint8Array>({
      start(controller) {
        req.on('data', (chunk: Buffer) => controller.enqueue(new Uint8Array(chunk)));
        req.on('end', () => controller.close());
        req.on('error', (err) => controller.error(err));
      },
      cancel() {
        req.destroy();
      },
    });
    init.duplex = 'half';
  }
  return new Request(new URL(req.url ?? '/', origin), init);
}

async function writeResponse(response: Response, res: http.ServerResponse): Promise<void> {
  const body = Buffer.from(await response.arrayBuffer());
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => (headers[name] = value));
  res.writeHead(response.status, headers);
  res.end(body);
}

export async function startLocal(options: LocalOptions): Promise<LocalServer> {
  const log = options.log ?? ((line: string) => console.error(line));
  const functions = createChatFunctions({
    store: options.store,
    wait: options.wait,
    maxWait: options.maxWait,
    idleTimeout: options.idleTimeout,
    log,
  });
  const bundle = lazyClientBundle(REPO_ROOT, log);

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://local');
    res.setHeader('x-content-type-options', 'nosniff');
    if (url.pathname === '/session' || url.pathname.startsWith('/session/')) {
      // The HTTP function.
      functions
        .fetch(toRequest(req, res, `http://${req.headers.host ?? 'localhost'}`))
        .then((response) => writeResponse(response, res))
        .catch((err) => {
          log(`[serverless] function failed: ${err instanceof Error ? err.message : String(err)}`);
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
          res.end('{"error":{"code":"INTERNAL","message":"function failed"}}');
        });
      return;
    }
    // Static hosting.
    void serveStatic(url.pathname, res, bundle);
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });

  // The cron trigger.
  const every = options.sweepEvery ?? 15_000;
  const timer =
    every > 0
      ? setInterval(() => {
          functions.sweep().then(
            (n) => n > 0 && log(`[serverless] scheduled sweep expired ${n} session(s)`),
            (err) => log(`[serverless] scheduled sweep failed: ${err instanceof Error ? err.message : String(err)}`),
          );
        }, every)
      : undefined;

  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    functions,
    async close() {
      if (timer) clearInterval(timer);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function serveStatic(pathname: string, res: http.ServerResponse, bundle: { get(): string }): Promise<void> {
  try {
    if (pathname === '/bidiweb.js') {
      res.writeHead(200, { 'content-type': TYPES['.js']!, 'cache-control': 'no-cache' });
      res.end(bundle.get());
      return;
    }
    const name = pathname === '/' ? 'index.html' : pathname.slice(1);
    if (!/^[a-z0-9-]+\.(html|js|css)$/.test(name)) throw Object.assign(new Error('not found'), { code: 'ENOENT' });
    const body = await readFile(path.join(PUBLIC_DIR, name));
    const headers: Record<string, string> = { 'content-type': TYPES[path.extname(name)]!, 'cache-control': 'no-cache' };
    if (name.endsWith('.html')) headers['content-security-policy'] = "default-src 'self'; base-uri 'none'; frame-ancestors 'none'";
    res.writeHead(200, headers);
    res.end(body);
  } catch (err) {
    const missing = (err as { code?: string }).code === 'ENOENT';
    res.writeHead(missing ? 404 : 500, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(missing ? 'not found' : 'error');
  }
}

async function main(): Promise<void> {
  const port = Number(process.env.PORT ?? 3000);
  let store: Store;
  let closeStore = async () => {};
  let label: string;
  const redisUrl = process.env.REDIS_URL;
  if (redisUrl) {
    const file = bundleEntry(path.join(__dirname, 'redis-store.ts'));
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { createRedisStore } = require(file) as typeof import('./redis-store');
    rmSync(path.dirname(file), { recursive: true, force: true }); // loaded: the file is no longer needed
    const redis = createRedisStore(redisUrl);
    store = redis.store;
    closeStore = redis.close;
    label = 'RedisStore (REDIS_URL, keys prefixed chat:)';
  } else {
    store = new MemoryStore();
    label = 'MemoryStore shared by every invocation (one process)';
  }
  const local = await startLocal({ store, port, sweepEvery: Number(process.env.SWEEP_EVERY ?? 15_000) }).catch((err: Error) => {
    console.error(`[serverless] cannot listen on port ${port}: ${err.message}`);
    process.exit(1);
  });
  console.log(`[serverless] chat on http://localhost:${local.port} — a fresh fetch handler per request, ${label}; scheduled sweep every ${Number(process.env.SWEEP_EVERY ?? 15_000) / 1000} s`);
  const stop = () => {
    void local
      .close()
      .then(closeStore)
      .finally(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (require.main === module && /[\\/]local\.[cm]?[jt]s$/.test(require.main.filename)) void main();
