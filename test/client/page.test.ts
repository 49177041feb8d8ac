/**
 * The client in a page. `closeOnPageHide`: an unloaded page ends its session
 * at once with a keepalive DELETE. `online` (and `retryNow()`): what waits in
 * backoff retries at once. Node has no page, so the test gives the global
 * scope what a window has (`document`, `addEventListener`) and fires the
 * events itself; test/e2e/chat.e2e.ts closes a real Chromium tab.
 */
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { bidiWeb } from '../../src/express';
import { open, type BidiClientSession, type ClientOptions, type CloseEvent, type FetchLike } from '../../src/client';
import { waitFor } from '../helpers/client-session';

const page = new EventTarget();
const scope = globalThis as unknown as Record<string, unknown>;
let server: http.Server;
let mw: ReturnType<typeof bidiWeb>;
let base: string;
const closes: Array<[string, string]> = [];
const received: unknown[] = [];
/** Every request the client made: method and whether it asked for keepalive. */
const requests: Array<{ method: string; keepalive?: boolean }> = [];
const recordingFetch: FetchLike = (url, init) => {
  requests.push({ method: init.method, keepalive: init.keepalive });
  return fetch(url, init as RequestInit) as ReturnType<FetchLike>;
};

beforeAll(async () => {
  scope.document = {};
  scope.addEventListener = page.addEventListener.bind(page);
  scope.removeEventListener = page.removeEventListener.bind(page);
  mw = bidiWeb({
    sweepInterval: 0,
    wait: 1000,
    onError: () => {},
    onMessage: async (_s, data) => void received.push(data),
    onClose: (s, reason) => void closes.push([s.id, reason]),
  });
  const app = express();
  app.use(mw);
  server = http.createServer(app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/session`;
});

afterAll(async () => {
  delete scope.document;
  delete scope.addEventListener;
  delete scope.removeEventListener;
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await mw.server.dispose();
});

function pagehide(persisted: boolean): void {
  const event = new Event('pagehide');
  Object.defineProperty(event, 'persisted', { value: persisted });
  page.dispatchEvent(event);
}

async function opened(options: ClientOptions = {}): Promise<{ s: BidiClientSession<unknown, unknown>; closed: CloseEvent[] }> {
  const s = open(base, { fetch: recordingFetch, retry: { initialDelayMs: 5, maxDelayMs: 50 }, ...options });
  const closed: CloseEvent[] = [];
  s.on('close', (e) => closed.push(e));
  await new Promise<void>((resolve) => s.once('open', () => resolve()));
  return { s, closed };
}

test('an unloaded page ends its session at once: one keepalive DELETE, onClose with reason client', async () => {
  const { s, closed } = await opened();
  await s.send('hello');
  requests.length = 0;
  pagehide(false);
  // Synchronously: the page may be gone after this event.
  expect(s.state).toBe('closed');
  expect(closed).toEqual([{ code: 'CLIENT', reason: 'the page was closed' }]);
  expect(requests).toEqual([{ method: 'DELETE', keepalive: true }]);
  await waitFor('onClose', () => closes.some(([sid]) => sid === s.id));
  expect(closes.filter(([sid]) => sid === s.id)).toEqual([[s.id, 'client']]);
  expect(received).toContain('hello');
});

test('a page kept in the back/forward cache (persisted) keeps its session', async () => {
  const { s, closed } = await opened();
  pagehide(true);
  await new Promise((r) => setTimeout(r, 50));
  expect(s.state).toBe('open');
  expect(closed).toEqual([]);
  await s.send('still here');
  await s.close();
});

test('closeOnPageHide: false leaves the session to the app', async () => {
  const { s } = await opened({ closeOnPageHide: false });
  pagehide(false);
  await new Promise((r) => setTimeout(r, 50));
  expect(s.state).toBe('open');
  await s.close();
});

test('a page that hides while close() waits for its DELETE sends no second one', async () => {
  const { s, closed } = await opened();
  requests.length = 0;
  const closing = s.close();
  await waitFor('the DELETE to go out', () => requests.some((r) => r.method === 'DELETE'));
  pagehide(false);
  await closing;
  expect(requests.filter((r) => r.method === 'DELETE')).toEqual([{ method: 'DELETE', keepalive: true }]);
  expect(closed).toHaveLength(1);
  await waitFor('onClose', () => closes.some(([sid]) => sid === s.id));
});

test('sessions that ended stop listening for pagehide', async () => {
  const { s } = await opened();
  await s.close();
  requests.length = 0;
  pagehide(false);
  expect(requests).toEqual([]);
});

/** A port nothing listens on (yet). */
async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  return port;
}

/**
 * Opens a client against a server that is not there yet, with backoff delays
 * of up to a minute; once a retry waits at least 3 s, starts the server and
 * calls `kick`. Resolves with how long the open then took.
 */
async function recoveryAfter(kick: (s: BidiClientSession<unknown, unknown>) => void): Promise<number> {
  const port = await freePort();
  const s = open(`http://127.0.0.1:${port}/session`, { retry: { initialDelayMs: 60_000, maxDelayMs: 60_000 } });
  const late = http.createServer(express().use(mw));
  try {
    const long = await new Promise<number>((resolve) => {
      s.on('retry', (info) => {
        if (info.op === 'open' && info.delayMs >= 3_000) resolve(info.delayMs);
      });
    });
    expect(long).toBeGreaterThanOrEqual(3_000);
    await new Promise<void>((r) => late.listen(port, '127.0.0.1', r));
    const kicked = Date.now();
    const openedNow = new Promise<void>((resolve) => s.once('open', () => resolve()));
    kick(s);
    await openedNow;
    return Date.now() - kicked;
  } finally {
    await s.close();
    late.closeAllConnections();
    await new Promise<void>((r) => late.close(() => r()));
  }
}

test('retryNow(): an open waiting in backoff retries at once', async () => {
  expect(await recoveryAfter((s) => s.retryNow())).toBeLessThan(2_000);
});

test("the browser's online event retries at once what waits in backoff", async () => {
  expect(await recoveryAfter(() => page.dispatchEvent(new Event('online')))).toBeLessThan(2_000);
});
