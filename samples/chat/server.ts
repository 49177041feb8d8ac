/**
 * The chat sample: the talk's case study on bidiweb, served by Express.
 *
 *   npm start                      # http://localhost:3000, in-memory store, one process
 *   PORT=8080 npm start
 *   npm run chat:cluster           # 3 instances over Redis behind a round-robin balancer (./cluster.ts)
 *
 * The chat itself (rooms, nicks, presence, history; its message protocol) is
 * in ./chat.ts and keeps every piece of shared state in the bidiweb store, so
 * the same code serves many instances behind a round-robin balancer once they
 * share a RedisStore: `createChatApp({ store })` (see ./instance.ts).
 */
import path from 'node:path';
import express from 'express';
import type { Express } from 'express';
import type { Hub } from '../../src/core/server';
import { bidiWeb } from '../../src/express';
import type { BidiExpressMiddleware } from '../../src/express';
import { createChatServer, type ChatOptions, type ChatState, type ChatUser } from './chat';
import { lazyClientBundle, REPO_ROOT } from './client-bundle';

export { NICK_MAX, NICK_TAKEN, ROOM_PATTERN, TEXT_MAX, chatUserFromMeta, messageId, nickKey, nickTakenMessage, roomGroup, validNick, validRoom } from './chat';
export type { ChatMessage, ChatState, ChatUser, SaidMessage } from './chat';

export interface ChatAppOptions extends ChatOptions {
  /** Sent as the `x-chat-instance` response header (the page shows it), to see a balancer at work. */
  instanceName?: string;
  /**
   * The repository root, for the page (samples/chat/public) and the client
   * source (src/client). Default: found from this file; a bundle of this file
   * (see ./instance.ts) must pass it.
   */
  root?: string;
}

export interface ChatApp {
  app: Express;
  middleware: BidiExpressMiddleware<ChatUser, ChatState>;
  hub: Hub<ChatUser, ChatState>;
}

export function createChatApp(options: ChatAppOptions = {}): ChatApp {
  const log = options.log ?? ((line: string) => console.error(line));
  const middleware = bidiWeb(createChatServer({ ...options, log }));
  const root = options.root ?? REPO_ROOT;
  const bundle = lazyClientBundle(root, log);

  const app = express();
  app.disable('x-powered-by');
  app.use((_req, res, next) => {
    res.setHeader('x-content-type-options', 'nosniff');
    if (options.instanceName) res.setHeader('x-chat-instance', options.instanceName);
    next();
  });
  app.use(middleware);
  app.get('/bidiweb.js', (_req, res) => {
    let code: string;
    try {
      code = bundle.get();
    } catch (err) {
      res.status(500).type('text/plain').send(`client bundle failed to build:\n${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    res.type('text/javascript; charset=utf-8').setHeader('cache-control', 'no-cache').send(code);
  });
  // Browsers that ignore the page's <link rel="icon"> (and tools) still ask for /favicon.ico.
  app.get('/favicon.ico', (_req, res) => {
    res.redirect(301, '/favicon.svg');
  });
  app.use(
    express.static(path.join(root, 'samples', 'chat', 'public'), {
      index: 'index.html',
      setHeaders(res, file) {
        if (file.endsWith('.html')) {
          res.setHeader('content-security-policy', "default-src 'self'; base-uri 'none'; frame-ancestors 'none'");
          res.setHeader('cache-control', 'no-cache');
        }
      },
    }),
  );
  return { app, middleware, hub: middleware.hub };
}

// Only when this very file is the entry point (not when a bundle that includes it runs: see ./instance.ts).
if (require.main === module && /[\\/]server\.[cm]?[jt]s$/.test(require.main.filename)) {
  const port = Number(process.env.PORT ?? 3000);
  const { app, middleware } = createChatApp();
  const server = app.listen(port, (err?: Error) => {
    if (err) {
      console.error(`[chat] cannot listen on port ${port}: ${err.message}`);
      process.exit(1);
    }
    console.log(`[chat] listening on http://localhost:${port} (in-memory store: sessions end on restart)`);
  });
  const stop = () => {
    server.close();
    server.closeAllConnections();
    void middleware.server.dispose();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
