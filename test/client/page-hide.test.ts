/**
 * `closeOnPageHide`: in a browser, an unloaded page ends its session at once
 * with a keepalive DELETE. Node has no page, so the test gives the global
 * scope what a window has (`document`, `addEventListener`) and fires
 * `pagehide` itself; test/e2e/chat.e2e.ts closes a real Chromium tab.
 */
import http from 'node:http';
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
