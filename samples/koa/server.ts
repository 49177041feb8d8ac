/**
 * bidiweb on Koa: an echo and notification service.
 *
 *   npx tsx samples/koa/server.ts          # http://localhost:3002, in-memory store
 *   PORT=8080 TICK_MS=1000 npx tsx samples/koa/server.ts
 *
 * Every session gets a `welcome`, an `echo` of each message it sends (with
 * the message's client seq), and a `tick` every few seconds pushed from a
 * timer through the hub: server push outside any request.
 *
 *   server → client  { type: 'welcome', tickMs }
 *                    { type: 'echo', seq, data }
 *                    { type: 'tick', n, at }
 *
 * Try it with the Node client:
 *
 *   import { open } from 'bidiweb/client';
 *   const s = open('http://localhost:3002/session');
 *   s.on('message', (m) => console.log(m));
 *   await s.send({ hello: 'koa' });
 */
import Koa from 'koa';
import type { Store } from '../../src/core/store';
import { bidiWeb } from '../../src/koa';
import type { BidiKoaMiddleware } from '../../src/koa';

/** Store group of every open session: the tick goes to its members. */
const TICKS = 'echo:ticks';

export type EchoMessage = { type: 'welcome'; tickMs: number } | { type: 'echo'; seq: number; data: unknown } | { type: 'tick'; n: number; at: number };

export interface EchoAppOptions {
  /** Where sessions live. Default: a new in-memory store (one process). */
  store?: Store;
  /** Tick interval, ms; 0 = no ticks. Default 5 000. */
  tickMs?: number;
  /** Watch wait, ms (bidiweb default 25 000). */
  wait?: number;
  /** Expiry sweep interval, ms; 0 = call `middleware.server.sweep()` yourself. */
  sweepInterval?: number;
  /** Where errors go. Default: one line on stderr (never a session id). */
  log?: (line: string) => void;
}

export interface EchoApp {
  app: Koa;
  middleware: BidiKoaMiddleware<unknown, Record<string, unknown>>;
  /** Stop the ticks and the core's timers (sessions stay in the store). */
  stop(): Promise<void>;
}

export function createEchoApp(options: EchoAppOptions = {}): EchoApp {
  const log = options.log ?? ((line: string) => console.error(line));
  const tickMs = options.tickMs ?? 5_000;

  const middleware = bidiWeb({
    path: '/session',
    store: options.store,
    wait: options.wait,
    sweepInterval: options.sweepInterval,
    async onOpen(session) {
      await session.join(TICKS);
      await session.send({ type: 'welcome', tickMs } satisfies EchoMessage);
    },
    async onMessage(session, data, { seq }) {
      await session.send({ type: 'echo', seq, data } satisfies EchoMessage);
    },
    onError(error, { phase }) {
      log(`[echo] ${phase} error: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
    },
  });

  const app = new Koa();
  app.use(middleware);
  app.use(async (ctx, next) => {
    if (ctx.path !== '/') return next();
    ctx.type = 'text/plain';
    ctx.body = 'bidiweb echo sample: open a session at /session (see samples/koa/server.ts)\n';
  });

  // Server push from a timer: any instance may run it, the store numbers the messages.
  let n = 0;
  const timer =
    tickMs > 0
      ? setInterval(() => {
          const msg: EchoMessage = { type: 'tick', n: ++n, at: Date.now() };
          // Sessions whose client stopped reading (window full) just miss ticks.
          middleware.hub.publish(TICKS, msg).catch((err) => log(`[echo] tick failed: ${err instanceof Error ? err.message : String(err)}`));
        }, tickMs)
      : undefined;
  timer?.unref();

  return {
    app,
    middleware,
    stop: async () => {
      if (timer) clearInterval(timer);
      await middleware.server.dispose();
    },
  };
}

if (require.main === module) {
  const port = Number(process.env.PORT ?? 3002);
  const tickMs = process.env.TICK_MS === undefined ? undefined : Number(process.env.TICK_MS);
  const echo = createEchoApp({ tickMs });
  const server = echo.app.listen(port, () => {
    console.log(`[echo] listening on http://localhost:${port}/session (in-memory store: sessions end on restart)`);
  });
  server.on('error', (err) => {
    console.error(`[echo] cannot listen on port ${port}: ${err.message}`);
    process.exit(1);
  });
  const stop = () => {
    server.close();
    server.closeAllConnections();
    void echo.stop();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
