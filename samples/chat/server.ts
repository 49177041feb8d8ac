/**
 * The chat sample: the talk's case study on bidiweb.
 *
 *   npm start                      # http://localhost:3000, in-memory store
 *   PORT=8080 npm start
 *
 * Every piece of shared chat state (who is in which room, each session's nick)
 * lives in the bidiweb store: room membership is a store group, the nick is
 * `session.user`. This module keeps no chat state of its own, so the same
 * code serves many instances behind a round-robin balancer once they share a
 * RedisStore: pass it as `createChatApp({ store })`.
 *
 * Chat protocol (JSON messages over one bidiweb session):
 *
 *   open meta        { nick, room }
 *   client → server  { type: 'hello' }                      announce me (the page sends it on open)
 *                    { type: 'say', text }                   ≤ 2000 chars
 *   server → client  { type: 'joined', nick, at }
 *                    { type: 'left', nick, at }
 *                    { type: 'presence', nicks: [...] }      the room's members, sorted
 *                    { type: 'said', id, from, text, at }    `id` is stable across a redelivery
 *                    { type: 'error', message }              a message of ours was refused
 *
 * Why `hello`: `onOpen` runs before the session exists in the store, so the
 * room's member list cannot include the newcomer yet. The announcement
 * (`joined` + `presence`) therefore runs on the session's first message,
 * when the session is a member for everyone. Whichever message comes first
 * triggers it, so a client that starts with `say` is announced too.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { buildSync } from 'esbuild';
import express from 'express';
import type { Express } from 'express';
import { reject } from '../../src/core/errors';
import type { Hub } from '../../src/core/server';
import type { ServerSession } from '../../src/core/session';
import type { Store } from '../../src/core/store';
import { bidiWeb } from '../../src/express';
import type { BidiExpressMiddleware } from '../../src/express';

export const NICK_MAX = 32;
export const ROOM_PATTERN = /^[a-z0-9-]{1,32}$/;
export const TEXT_MAX = 2000;

/** What `onOpen` attaches to a session; read-only afterwards. */
export interface ChatUser {
  nick: string;
  room: string;
}

/** Per-session state kept in the store. */
export interface ChatState {
  /** The room has seen our `joined` notice. */
  announced?: boolean;
}

export type ChatMessage =
  | { type: 'joined'; nick: string; at: number }
  | { type: 'left'; nick: string; at: number }
  | { type: 'presence'; nicks: string[] }
  | { type: 'said'; id: string; from: string; text: string; at: number }
  | { type: 'error'; message: string };

export interface ChatAppOptions {
  /** Where sessions and rooms live. Default: a new in-memory store (one process). */
  store?: Store;
  /** Session idle timeout, ms (bidiweb default 120 000). */
  idleTimeout?: number;
  /** Watch wait, ms (bidiweb default 25 000). */
  wait?: number;
  /** Expiry sweep interval, ms; 0 = call `middleware.server.sweep()` yourself. */
  sweepInterval?: number;
  /** Where errors go. Default: one line on stderr (never a session id). */
  log?: (line: string) => void;
}

export interface ChatApp {
  app: Express;
  middleware: BidiExpressMiddleware<ChatUser, ChatState>;
  hub: Hub<ChatUser, ChatState>;
}

const PUBLIC_DIR = path.join(__dirname, 'public');
const CLIENT_ENTRY = path.join(__dirname, '..', '..', 'src', 'client', 'index.ts');

/** Store groups are shared by every app on the store: keep ours apart. */
function roomGroup(room: string): string {
  return `chat:room:${room}`;
}

/** The nick rules: trimmed, 1–32 characters, no control characters. Returns null when invalid. */
export function validNick(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  const nick = value.trim();
  if (nick.length === 0 || nick.length > NICK_MAX) return null;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(nick)) return null;
  return nick;
}

export function validRoom(value: unknown): string | null {
  return typeof value === 'string' && ROOM_PATTERN.test(value) ? value : null;
}

/**
 * A message id that reveals nothing about the session id (a one-way hash of
 * it) yet is the same if bidiweb redelivers the message after an instance
 * crash (same session, same client seq), so pages can drop the duplicate.
 */
function messageId(sid: string, seq: number): string {
  return createHash('sha256').update(`bidiweb-chat:${sid}:${seq}`).digest('base64url').slice(0, 22);
}

export function createChatApp(options: ChatAppOptions = {}): ChatApp {
  const log = options.log ?? ((line: string) => console.error(line));

  // Read from the store on every call: no in-process room state.
  async function presence(hub: Hub<ChatUser, ChatState>, room: string): Promise<ChatMessage> {
    const sids = await hub.members(roomGroup(room));
    const views = sids.length > 0 ? await hub.inspect(sids) : [];
    const nicks = new Set<string>();
    for (const v of views) if (v?.status === 'open' && v.user) nicks.add(v.user.nick);
    return { type: 'presence', nicks: [...nicks].sort((a, b) => a.localeCompare(b)) };
  }

  async function publish(hub: Hub<ChatUser, ChatState>, room: string, msg: ChatMessage): Promise<void> {
    const result = await hub.publish(roomGroup(room), msg);
    // A member whose unacked window is full would silently miss this line; end
    // its session instead so its page says so (and can rejoin) rather than
    // show a transcript with a hole.
    for (const f of result.failed) {
      if (f.code === 'SEND_WINDOW_FULL') {
        hub.close(f.sid, 'too far behind: messages could not be delivered').catch(() => {});
      }
    }
  }

  async function announce(session: ServerSession<ChatUser, ChatState>): Promise<void> {
    const { nick, room } = session.user;
    session.state.announced = true;
    await publish(middleware.hub, room, { type: 'joined', nick, at: Date.now() });
    await publish(middleware.hub, room, await presence(middleware.hub, room));
  }

  const middleware = bidiWeb<ChatUser, ChatState>({
    path: '/session',
    store: options.store,
    idleTimeout: options.idleTimeout,
    wait: options.wait,
    sweepInterval: options.sweepInterval,

    async onOpen(session, { meta }) {
      const m = (meta ?? {}) as { nick?: unknown; room?: unknown };
      const nick = validNick(m.nick);
      if (nick === null) throw reject(400, `nick must be 1–${NICK_MAX} characters without control characters`);
      const room = validRoom(m.room);
      if (room === null) throw reject(400, 'room must be 1–32 characters of a-z, 0-9 and -');
      session.user = { nick, room };
      session.state = { announced: false };
      await session.join(roomGroup(room));
    },

    async onMessage(session, data, { seq }) {
      if (!session.state.announced) await announce(session);
      const msg = (data ?? {}) as { type?: unknown; text?: unknown };
      switch (msg.type) {
        case 'hello':
          return;
        case 'say': {
          if (typeof msg.text !== 'string') break;
          const text = msg.text.trim();
          if (text.length === 0) return;
          if (text.length > TEXT_MAX) {
            await session.send({ type: 'error', message: `a message may be at most ${TEXT_MAX} characters` } satisfies ChatMessage);
            return;
          }
          const { nick, room } = session.user;
          await publish(middleware.hub, room, { type: 'said', id: messageId(session.id, seq), from: nick, text, at: Date.now() });
          return;
        }
      }
      await session.send({ type: 'error', message: 'unknown message' } satisfies ChatMessage);
    },

    async onClose(session) {
      const { nick, room } = session.user;
      // bidiweb drops closed sessions from their groups after onClose; leave
      // first so the presence below no longer counts us.
      await session.leave(roomGroup(room));
      if (session.state.announced) await publish(middleware.hub, room, { type: 'left', nick, at: Date.now() });
      await publish(middleware.hub, room, await presence(middleware.hub, room));
    },

    onError(error, { phase }) {
      log(`[chat] ${phase} error: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
    },
  });

  const app = express();
  app.disable('x-powered-by');
  app.use((_req, res, next) => {
    res.setHeader('x-content-type-options', 'nosniff');
    next();
  });
  app.use(middleware);
  app.get('/bidiweb.js', clientBundle(log));
  app.use(
    express.static(PUBLIC_DIR, {
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

/**
 * `GET /bidiweb.js`: the client library (`src/client`) bundled with esbuild
 * as an IIFE that defines `window.bidiweb`. Built once; if the build fails
 * it is retried on the next request and the error is served as a 500.
 */
function clientBundle(log: (line: string) => void): express.RequestHandler {
  let code: string | undefined;
  const build = (): string => {
    const out = buildSync({
      entryPoints: [CLIENT_ENTRY],
      bundle: true,
      format: 'iife',
      globalName: 'bidiweb',
      platform: 'browser',
      target: 'es2020',
      write: false,
      logLevel: 'silent',
      legalComments: 'none',
    });
    return out.outputFiles[0]!.text;
  };
  try {
    code = build();
  } catch (err) {
    log(`[chat] client bundle not built yet: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
  }
  return (_req, res) => {
    if (code === undefined) {
      try {
        code = build();
      } catch (err) {
        res.status(500).type('text/plain').send(`client bundle failed to build:\n${err instanceof Error ? err.message : String(err)}`);
        return;
      }
    }
    res.type('text/javascript; charset=utf-8').setHeader('cache-control', 'no-cache').send(code);
  };
}

if (require.main === module) {
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
