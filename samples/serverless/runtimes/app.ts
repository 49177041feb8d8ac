/**
 * A small chat as one portable Fetch handler, for the runtime entries next to
 * this file (deno.ts, bun.ts, workerd.ts, and the Lambda handler): the
 * runtime's own server calls `app.fetch(request)`.
 *
 * - Every `/session…` request gets a brand-new bidiweb server (nothing is
 *   kept in a server object between requests, as on a function platform);
 *   `GET /stats` says how many were built.
 * - `POST /sweep` is the scheduled function (what a cron trigger calls):
 *   one `sweep()` that expires idle sessions and runs their `onClose`.
 * - The store is built once per runtime instance (module scope in a real
 *   deployment), so warm invocations reuse its Redis connection.
 *
 * The chat: `open(url, { meta: { name } })` joins the room; each message
 * `{ text }` is published to the room as `{ from, text }`; a session that
 * expires is announced as `{ left: name }`.
 */
import type { BidiOptions, BidiServer, Hub } from '../../../src/core/server';
import { createBidiServer } from '../../../src/core/server';
import { toFetchHandler } from '../../../src/core/fetch';
import type { Store } from '../../../src/core/store';

/** A store made for one request and released once its response has been sent (workerd: see docs/SERVERLESS.md). */
export interface RequestScopedStore {
  open(): { store: Store; release(): Promise<void> };
}

export interface RuntimeAppOptions {
  /** A store shared by every request of this runtime instance, or one per request. */
  store: Store | RequestScopedStore;
  /** Reported by `GET /stats`. */
  runtime: string;
  wait?: number;
  maxWait?: number;
  idleTimeout?: number;
}

export interface RuntimeApp {
  fetch(request: Request): Promise<Response>;
  /** The scheduled function: resolves with the number of sessions expired. */
  sweep(): Promise<number>;
}

export interface ChatUser {
  name: string;
}

const ROOM = 'room';

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json; charset=utf-8' } });
}

/** The chat's hooks; `hub()` is the hub of the server handling the request (any server will do: they share the store). */
export function chatHooks(hub: () => Hub<ChatUser>): Pick<BidiOptions<ChatUser>, 'onOpen' | 'onMessage' | 'onClose'> {
  return {
    async onOpen(session, req) {
      const name = (req.meta as { name?: unknown } | undefined)?.name;
      session.user = { name: typeof name === 'string' ? name.slice(0, 40) : 'anon' };
      await session.join(ROOM);
    },
    async onMessage(session, data) {
      const text = (data as { text?: unknown } | null)?.text;
      if (typeof text !== 'string') return;
      await hub().publish(ROOM, { from: session.user.name, text });
    },
    async onClose(session, reason) {
      if (reason === 'expired') await hub().publish(ROOM, { left: session.user.name });
    },
  };
}

/** `response` with a body that calls `release` once it has been read to its end or cancelled. */
function releasedAfterBody(response: Response, release: () => Promise<void>): Response {
  if (!response.body) {
    void release();
    return response;
  }
  const reader = response.body.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) {
        controller.close();
        await release();
      } else controller.enqueue(value);
    },
    async cancel(reason) {
      await reader.cancel(reason);
      await release();
    },
  });
  return new Response(body, { status: response.status, headers: response.headers });
}

export function createRuntimeApp(o: RuntimeAppOptions): RuntimeApp {
  let servers = 0;
  const scoped = 'open' in o.store ? o.store : undefined;
  const build = (store: Store) => {
    const server: BidiServer<ChatUser> = createBidiServer<ChatUser>({
      store,
      wait: o.wait ?? 20_000,
      maxWait: o.maxWait ?? 25_000,
      idleTimeout: o.idleTimeout ?? 90_000,
      sweepInterval: 0, // no timers on a function platform: POST /sweep instead
      ...chatHooks(() => server.hub),
    });
    return server;
  };
  return {
    async fetch(request) {
      const { pathname } = new URL(request.url);
      if (pathname === '/sweep' && request.method === 'POST') {
        return json(200, { expired: await this.sweep() });
      }
      if (pathname === '/stats') return json(200, { runtime: o.runtime, servers });
      servers++;
      if (!scoped) return toFetchHandler(build(o.store as Store))(request);
      const { store, release } = scoped.open();
      try {
        return releasedAfterBody(await toFetchHandler(build(store))(request), release);
      } catch (err) {
        await release();
        throw err;
      }
    },
    async sweep() {
      if (!scoped) return build(o.store as Store).sweep();
      const { store, release } = scoped.open();
      try {
        return await build(store).sweep();
      } finally {
        await release();
      }
    },
  };
}
