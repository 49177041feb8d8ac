/**
 * The client against the real server (Express adapter, core, MemoryStore):
 * programmer errors fail fast (issue 14, item 5), the retry budget ends a
 * session that cannot reach its server, a too-large message is rejected alone
 * before open as after (item 7), and `reopen: true` replaces a lost session.
 * Every failure here must settle: each test bounds how long it may take.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { bidiWeb, reject, type BidiOptions } from '../../src/express';
import {
  open,
  BidiClientError,
  type BidiClientSession,
  type ClientOptions,
  type CloseEvent,
  type FetchLike,
  type ReopenInfo,
  type RetryInfo,
} from '../../src/client';
import { Backoff, overBudget } from '../../src/client/backoff';
import { createNodeFetch } from '../../src/client/node-http';
import { headerProblem, isInvalidRequest, resolveBaseUrl } from '../../src/client/transport';
import { sleep } from '../../src/core/util';

type Middleware = ReturnType<typeof bidiWeb>;

interface Harness {
  base: string;
  mw: Middleware;
  /** Replace the server behind the same URL (a restart that loses the in-memory store). */
  swap(options?: BidiOptions<any, any>): Middleware;
  /** Route the requests by a function of their count (1, 2, ...) to one of `extra` servers. */
  alternate(count: number): void;
  /** Stop listening: every later request is refused. */
  down(): Promise<void>;
  stop(): Promise<void>;
}

const harnesses: Harness[] = [];
const clients: BidiClientSession<any, any>[] = [];

async function startServer(options: BidiOptions<any, any> = {}): Promise<Harness> {
  const make = (o: BidiOptions<any, any>): Middleware => bidiWeb({ sweepInterval: 0, onError: () => {}, wait: 300, ...o });
  const all: Middleware[] = [make(options)];
  let current = all[0]!;
  let ring: Middleware[] | undefined;
  let requests = 0;
  const app = express();
  app.use((req, res, next) => (ring ? ring[requests++ % ring.length]! : current)(req, res, next));
  const server = http.createServer(app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  let listening = true;
  const h: Harness = {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}/session`,
    get mw() {
      return current;
    },
    swap(o = options) {
      current = make(o);
      all.push(current);
      return current;
    },
    alternate(count) {
      ring = Array.from({ length: count }, () => make(options));
      all.push(...ring);
    },
    async down() {
      if (!listening) return;
      listening = false;
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
    async stop() {
      await h.down();
      for (const m of all) await m.server.dispose();
    },
  };
  harnesses.push(h);
  return h;
}

function connect<TIn = any>(url: string, options: ClientOptions = {}): BidiClientSession<TIn, any> {
  const s = open<TIn, any>(url, { ...options, retry: { initialDelayMs: 5, maxDelayMs: 50, ...options.retry } });
  clients.push(s);
  return s;
}

afterEach(async () => {
  for (const s of clients.splice(0)) if (s.state !== 'closed') await s.close();
  for (const h of harnesses.splice(0)) await h.stop();
});

function opened(s: BidiClientSession<any, any>): Promise<void> {
  return new Promise((resolve, rejectFn) => {
    s.once('open', () => resolve());
    s.once('close', (ev) => rejectFn(new Error(`closed: ${ev.code} ${ev.reason}`)));
  });
}

function closed(s: BidiClientSession<any, any>): Promise<CloseEvent> {
  return new Promise((resolve) => s.once('close', resolve));
}

/** Resolves with what `p` settled with, or rejects if it did not settle within `ms`. */
async function within<T>(ms: number, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, rejectFn) => {
    timer = setTimeout(() => rejectFn(new Error(`did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** The rejection of `p` (fails if it resolves). */
async function rejection(p: Promise<unknown>): Promise<BidiClientError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(BidiClientError);
    return err as BidiClientError;
  }
  throw new Error('expected a rejection');
}

/** A port nothing listens on (taken and released). */
async function deadPort(): Promise<number> {
  const srv = http.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe('programmer errors fail at open() (synchronously, TypeError naming the URL or header)', () => {
  test.each([
    ['/session', /"\/session" is not an absolute http: or https: URL/],
    ['not a url', /"not a url" is not an absolute http: or https: URL/],
    ['localhost:3000/session', /"localhost:3000\/session" is not an http: or https: URL \(scheme "localhost:"; a relative URL needs a page/],
    ['ws://localhost:3000/session', /"ws:\/\/localhost:3000\/session" is not an http: or https: URL \(scheme "ws:"\)/],
    ['http://ada:secret@localhost:3000/session', /carries credentials/],
  ])('open(%j) throws', (url, message) => {
    expect(() => open(url)).toThrow(TypeError);
    expect(() => open(url)).toThrow(message);
  });

  test('a static header with a non-ASCII value or an invalid name throws, without quoting the value', () => {
    const bad = () => open('http://localhost:3000/session', { headers: { authorization: 'Bearer \u2026secret' } });
    expect(bad).toThrow(TypeError);
    expect(bad).toThrow('bidiweb: options.headers: header "authorization": character U+2026 at index 7 is not allowed in a header value');
    try {
      bad();
    } catch (err) {
      expect(String(err)).not.toContain('secret');
    }
    expect(() => open('http://localhost:3000/session', { headers: { 'x trace': '1' } })).toThrow(
      'header name "x trace" is not a valid HTTP token',
    );
    expect(() => open('http://localhost:3000/session', { headers: { 'x-crlf': 'a\r\nb' } })).toThrow(/U\+000D at index 1/);
    // Latin-1 is what fetch and node:http both accept; undefined values are left out.
    expect(headerProblem('x-name', 'café')).toBeUndefined();
    const ok = open('http://localhost:3000/session', { headers: { 'x-name': 'café', 'x-none': undefined } });
    void ok.close();
  });

  test('in a page, a relative URL resolves against location, as fetch does', () => {
    const g = globalThis as { location?: unknown };
    g.location = { href: 'https://app.example/chat/index.html' };
    try {
      expect(resolveBaseUrl('/session')).toBe('https://app.example/session');
      expect(resolveBaseUrl('session?room=1')).toBe('https://app.example/chat/session?room=1');
      expect(() => resolveBaseUrl('ftp://x/y')).toThrow(/not an http: or https: URL/);
    } finally {
      delete g.location;
    }
  });
});

describe('invalid requests close the session at once: INVALID_REQUEST, pending sends reject', () => {
  test('a headers function that returns a non-ASCII value: open fails, no retry, within 2 s', async () => {
    const h = await startServer();
    const s = connect(h.base, { headers: () => ({ authorization: 'Bearer \u2026secret' }) });
    const retries: RetryInfo[] = [];
    s.on('retry', (r) => retries.push(r));
    const pending = s.send('never');
    const ev = await within(2_000, closed(s));
    expect(ev.code).toBe('INVALID_REQUEST');
    expect(ev.reason).toBe(
      `POST ${h.base}: header "authorization": character U+2026 at index 7 is not allowed in a header value (plain ASCII, no control characters)`,
    );
    const err = await within(2_000, rejection(pending));
    expect(err.code).toBe('INVALID_REQUEST');
    expect(err.message).toBe(ev.reason);
    expect(retries).toEqual([]);
  });

  test('a token that turns invalid after open: the session closes, the message names method and URL, never the sid', async () => {
    const h = await startServer();
    let calls = 0;
    const s = connect(h.base, { headers: () => ({ authorization: ++calls === 1 ? 'Bearer ok' : 'Bearer \u00e9\u2026' }) });
    await opened(s);
    const sid = s.id!;
    const pending = s.send('x');
    const ev = await within(2_000, closed(s));
    expect(ev.code).toBe('INVALID_REQUEST');
    expect(ev.reason).toMatch(
      new RegExp(`^(GET|POST) ${h.base.replace(/[.]/g, '\\.')}/(watch|send): header "authorization": character U\\+2026 at index 8`),
    );
    expect(ev.reason).not.toContain(sid);
    expect(ev.reason).not.toContain('Bearer');
    expect((await within(2_000, rejection(pending))).code).toBe('INVALID_REQUEST');
    await expect(s.send('after')).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
  });

  // What a fetch implementation itself refuses (undici's TypeErrors, node:http's ERR_INVALID_CHAR, an unparseable URL).
  const nodeFetch = createNodeFetch(http, https);
  const badHeader = (impl: FetchLike): FetchLike => (url, init) => impl(url, { ...init, headers: { ...init.headers, 'x-trace': 'a\u2026' } });
  test.each<[string, FetchLike, RegExp]>([
    ['global fetch, a header it refuses', badHeader((u, i) => fetch(u, i)), /^POST .*\/session cannot be made: Cannot convert argument to a ByteString/],
    ['node:http, a header it refuses', badHeader(nodeFetch), /^POST .*\/session cannot be made: Invalid character in header content \["x-trace"\]/],
    ['global fetch, a URL it cannot parse', (u, i) => fetch(u.replace(/^http:\/\/[^/]+/, ''), i), /^POST .*\/session cannot be made: Failed to parse URL from \/session \(Invalid URL\)/],
  ])('%s: INVALID_REQUEST within 2 s', async (_name, impl, reason) => {
    const h = await startServer();
    const s = connect(h.base, { fetch: impl });
    const pending = s.send(1);
    const ev = await within(2_000, closed(s));
    expect(ev).toMatchObject({ code: 'INVALID_REQUEST', reason: expect.stringMatching(reason) });
    expect((await rejection(pending)).code).toBe('INVALID_REQUEST');
  });

  test('every error message names the method and URL: HTTP errors and PROTOCOL_ERROR too', async () => {
    let refuse = false;
    let unavailable = 1;
    const h = await startServer({
      onOpen: () => {
        if (unavailable-- > 0) throw new Error('the hook failed'); // a 500
      },
      authorize: () => {
        if (refuse) throw reject(403, 'bad token');
      },
    });
    const s = connect(h.base);
    const errors: BidiClientError[] = [];
    s.on('error', (e) => errors.push(e));
    await opened(s);
    expect(errors[0]?.message).toMatch(new RegExp(`^POST ${h.base.replace(/[.]/g, '\\.')}: HTTP 500 INTERNAL: internal error$`));
    refuse = true;
    const err = await within(5_000, rejection(s.send('x')));
    expect(err.code).toBe('PROTOCOL_ERROR');
    expect(err.message).toMatch(new RegExp(`^(POST|GET) ${h.base.replace(/[.]/g, '\\.')}/(send|watch) failed with HTTP 403 \\w+: bad token$`));
    expect(err.message).not.toContain(s.id!);
  });

  test('network errors are not invalid requests', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    expect(isInvalidRequest(new TypeError('fetch failed', { cause: refused }))).toBe(false);
    expect(isInvalidRequest(new TypeError('Failed to fetch'))).toBe(false);
    expect(isInvalidRequest(new TypeError('NetworkError when attempting to fetch resource.'))).toBe(false);
    expect(isInvalidRequest(new TypeError('Load failed'))).toBe(false);
    expect(isInvalidRequest(Object.assign(new TypeError('x'), { code: 'ERR_INVALID_CHAR' }))).toBe(true);
  });
});

describe('retry budget: a session that cannot reach its server closes with RETRY_EXHAUSTED', () => {
  test('retry.maxAttempts 3: two retries, then closed; the reason names the request and its error', async () => {
    const port = await deadPort();
    const url = `http://127.0.0.1:${port}/session?token=query-secret`;
    const s = connect(url, { retry: { maxAttempts: 3 } });
    const retries: RetryInfo[] = [];
    s.on('retry', (r) => retries.push(r));
    const errors: BidiClientError[] = [];
    s.on('error', (e) => errors.push(e));
    const pending = s.send('never');
    const ev = await within(3_000, closed(s));
    expect(retries.map((r) => [r.op, r.attempt])).toEqual([
      ['open', 1],
      ['open', 2],
    ]);
    expect(errors.map((e) => e.code)).toEqual(['NETWORK_ERROR', 'NETWORK_ERROR']);
    expect(errors[0]!.message).toMatch(new RegExp(`^POST http://127\\.0\\.0\\.1:${port}/session failed: .*ECONNREFUSED`));
    expect(ev.code).toBe('RETRY_EXHAUSTED');
    expect(ev.reason).toMatch(
      new RegExp(`^open: gave up after 3 attempt\\(s\\) in \\d+ ms \\(retry\\.maxAttempts 3\\); last error: POST http://127\\.0\\.0\\.1:${port}/session failed: .*ECONNREFUSED`),
    );
    expect(ev.reason).not.toContain('query-secret'); // the query may carry a token
    const err = await rejection(pending);
    expect(err).toMatchObject({ code: 'RETRY_EXHAUSTED', message: ev.reason });
  });

  test('retry.maxElapsedMs: the open gives up within the budget (+ one request)', async () => {
    const port = await deadPort();
    const started = Date.now();
    const s = connect(`http://127.0.0.1:${port}/session`, { retry: { maxElapsedMs: 300, initialDelayMs: 20, maxDelayMs: 60 } });
    let retries = 0;
    s.on('retry', () => retries++);
    const ev = await within(3_000, closed(s));
    expect(ev.code).toBe('RETRY_EXHAUSTED');
    expect(ev.reason).toMatch(/^open: gave up after \d+ attempt\(s\) in \d+ ms \(retry\.maxElapsedMs 300\)/);
    expect(retries).toBeGreaterThan(1);
    expect(Date.now() - started).toBeLessThan(300 + 2_000);
  });

  test('the server goes away after open: watch and sends give up, pending sends reject, within the budget', async () => {
    const h = await startServer({ onMessage: () => {} });
    const s = connect(h.base, { retry: { maxElapsedMs: 400 } });
    await opened(s);
    await s.send('ok');
    await h.down();
    const wentDown = Date.now();
    const pending = [s.send(1), s.send(2)];
    const ev = await within(5_000, closed(s));
    expect(ev.code).toBe('RETRY_EXHAUSTED');
    expect(ev.reason).toMatch(/^(watch|send): gave up after \d+ attempt\(s\) in \d+ ms \(retry\.maxElapsedMs 400\); last error: (GET|POST) http:\/\/127\.0\.0\.1:\d+\/session\/(watch|send) failed/);
    expect(ev.reason).not.toContain(s.id!);
    for (const p of pending) expect((await rejection(p)).code).toBe('RETRY_EXHAUSTED');
    expect(Date.now() - wentDown).toBeLessThan(400 + 2_000);
    expect(s.state).toBe('closed');
  });

  test('a success ends the run: budgets count consecutive failures only', () => {
    const b = new Backoff(10, 100, () => 0);
    const budget = { maxAttempts: 3, maxElapsedMs: 1_000 };
    b.next();
    expect(overBudget(b, 0, budget)).toBeUndefined();
    b.next();
    b.next();
    expect(overBudget(b, 0, budget)).toMatch(/^gave up after 3 attempt\(s\)/);
    b.reset();
    const t0 = Date.now();
    b.next();
    expect(overBudget(b, 0, budget, t0 + 500)).toBeUndefined();
    expect(overBudget(b, 600, budget, t0 + 500)).toMatch(/retry\.maxElapsedMs 1000/); // the retry would start past the budget
    expect(overBudget(b, 0, { maxAttempts: Infinity, maxElapsedMs: Infinity }, t0 + 1e9)).toBeUndefined();
  });

  test('invalid budgets are refused', () => {
    expect(() => open('http://localhost:1/session', { retry: { maxAttempts: 0 } })).toThrow(RangeError);
    expect(() => open('http://localhost:1/session', { retry: { maxElapsedMs: -1 } })).toThrow(RangeError);
    const forever = open('http://localhost:1/session', { retry: { maxAttempts: Infinity, maxElapsedMs: Infinity } });
    void forever.close();
  });
});

describe('a too-large message is rejected alone, before open as after; the session survives', () => {
  test('maxMessageBytes: sent before open → MESSAGE_TOO_LARGE, the others keep their order and contiguous seqs', async () => {
    const received: [unknown, number][] = [];
    const h = await startServer({ limits: { maxMessageBytes: 1_000 }, onMessage: (_s, data, { seq }) => void received.push([data, seq]) });
    const s = connect(h.base);
    const closes: CloseEvent[] = [];
    s.on('close', (e) => closes.push(e));
    const a = s.send('a');
    const big = s.send('x'.repeat(2_000));
    const b = s.send('b');
    const err = await within(3_000, rejection(big));
    expect(err.code).toBe('MESSAGE_TOO_LARGE');
    expect(err.message).toBe('send: the message is 2002 bytes, the server accepts at most 1000 (limits.maxMessageBytes)');
    await within(3_000, Promise.all([a, b]));
    expect(s.state).toBe('open');
    // After open: the same rejection, at once.
    const after = await rejection(s.send('y'.repeat(2_000)));
    expect(after).toMatchObject({ code: 'MESSAGE_TOO_LARGE', message: 'send: the message is 2002 bytes, the server accepts at most 1000 (limits.maxMessageBytes)' });
    await s.send('c');
    expect(received).toEqual([
      ['a', 1],
      ['b', 2],
      ['c', 3],
    ]);
    expect(closes).toEqual([]);
  });

  test('only too-large messages before open: all rejected, nothing sent, the session opens', async () => {
    const received: unknown[] = [];
    const h = await startServer({ limits: { maxMessageBytes: 1_000 }, onMessage: (_s, data) => void received.push(data) });
    const s = connect(h.base);
    const bigs = [s.send('x'.repeat(1_500)), s.send('z'.repeat(1_500))];
    await opened(s);
    for (const p of bigs) expect((await rejection(p)).code).toBe('MESSAGE_TOO_LARGE');
    expect(s.bufferedAmount).toBe(0);
    await s.send('small');
    expect(received).toEqual(['small']);
    await s.close(); // nothing left to drain
    expect(s.closeEvent?.code).toBe('CLIENT');
  });

  test('a message that fits maxMessageBytes but no request body (maxBodyBytes) is rejected the same way', async () => {
    const h = await startServer({ limits: { maxMessageBytes: 1_000, maxBodyBytes: 1_000 } });
    const s = connect(h.base);
    const early = s.send('x'.repeat(980));
    expect((await within(3_000, rejection(early))).message).toMatch(/too large for a request body of at most 1000 bytes \(limits\.maxBodyBytes\)/);
    await within(3_000, (async () => {
      while (s.state !== 'open') await sleep(5);
    })());
    expect((await rejection(s.send('x'.repeat(980)))).code).toBe('MESSAGE_TOO_LARGE');
    await s.send('x'.repeat(900));
  });
});

describe('reopen: true', () => {
  /** Holds POST /send requests while `held` is true (until released or aborted). */
  function holdingFetch(state: { held: boolean; release?: () => void }): FetchLike {
    return async (url, init) => {
      if (state.held && url.includes('/session/send')) {
        await new Promise<void>((resolve, rejectFn) => {
          const prev = state.release;
          state.release = () => {
            prev?.();
            resolve();
          };
          init.signal.addEventListener('abort', () => rejectFn(new Error('aborted')), { once: true });
        });
      }
      return fetch(url, init);
    };
  }

  test('the store loses the session: unacked sends reject with SESSION_LOST, a new session opens on the same object', async () => {
    const opens: unknown[] = [];
    const received: unknown[] = [];
    const h = await startServer({
      onOpen: (_session, req) => void opens.push(req.meta),
      onMessage: (_s, data) => void received.push(data),
    });
    const hold = { held: false } as { held: boolean; release?: () => void };
    const s = connect(h.base, { reopen: true, meta: { name: 'ada' }, fetch: holdingFetch(hold) });
    const log: string[] = [];
    s.on('state', (st) => log.push(`state ${st}`));
    s.on('open', () => log.push('open'));
    s.on('close', (e) => log.push(`close ${e.code}`));
    const reopens: ReopenInfo[] = [];
    s.on('reopen', (info) => {
      reopens.push(info);
      log.push('reopen');
    });
    const got: [unknown, number][] = [];
    s.on('message', (d, { seq }) => got.push([d, seq]));
    await opened(s);
    const oldId = s.id!;
    await s.send('one');
    await h.mw.hub.send(oldId, 'p1');
    await h.mw.hub.send(oldId, 'p2');
    while (got.length < 2) await sleep(5);
    hold.held = true;
    const held = s.send('held'); // POSTed, never answered
    await sleep(20);
    const reopened = new Promise<ReopenInfo>((resolve) => s.once('reopen', resolve));
    h.swap(); // a restart that loses the in-memory store
    const info = await within(5_000, reopened);
    expect(info).toEqual({
      lost: { code: 'SESSION_LOST', reason: expect.stringMatching(/no longer knows this session/), status: 404, errorCode: 'UNKNOWN_SESSION' },
      rejected: 1,
      delivered: 2,
      attempt: 1,
    });
    const err = await rejection(held);
    expect(err).toMatchObject({ code: 'SESSION_LOST', status: 404 });
    expect(s.state).toBe('open');
    expect(s.id).toBeDefined();
    expect(s.id).not.toBe(oldId);
    expect(s.closeEvent).toBeUndefined();
    hold.held = false;
    hold.release?.();
    await s.send('two');
    expect(received).toEqual(['one', 'two']); // 'held' was not resent into the new session
    await h.mw.hub.send(s.id!, 'p3');
    while (got.length < 3) await sleep(5);
    expect(got).toEqual([
      ['p1', 1],
      ['p2', 2],
      ['p3', 1], // the new session's seqs start again at 1
    ]);
    expect(opens).toEqual([{ name: 'ada' }, { name: 'ada' }]);
    expect(log).toEqual(['state open', 'open', 'state connecting', 'state open', 'reopen', 'open']);
  });

  test('sends made while reopening go to the new session', async () => {
    const received: unknown[] = [];
    const h = await startServer({ onMessage: (_s, data) => void received.push(data) });
    const s = connect(h.base, { reopen: true, retry: { initialDelayMs: 200, maxDelayMs: 200 } });
    await opened(s);
    const connecting = new Promise<void>((resolve) => s.on('state', (st) => st === 'connecting' && resolve()));
    h.swap();
    await within(5_000, connecting);
    const during = s.send('during');
    await within(5_000, during);
    expect(received).toEqual(['during']);
  });

  test('a store that loses every session: reopens back off, then RETRY_EXHAUSTED within the budget', async () => {
    const h = await startServer();
    h.alternate(2); // two in-memory stores behind a round-robin balancer: the watch never finds the session
    const s = connect(h.base, { reopen: true, retry: { maxElapsedMs: 500, initialDelayMs: 20, maxDelayMs: 100 } });
    const attempts: number[] = [];
    s.on('reopen', (info) => attempts.push(info.attempt));
    let closes = 0;
    s.on('close', () => closes++);
    const ev = await within(5_000, closed(s));
    expect(ev.code).toBe('RETRY_EXHAUSTED');
    expect(ev.reason).toMatch(/^reopen: gave up after \d+ attempt\(s\) in \d+ ms \(retry\.maxElapsedMs 500\); every new session was lost/);
    expect(attempts.length).toBeGreaterThan(1);
    expect(attempts).toEqual(attempts.map((_, i) => i + 1));
    await sleep(50);
    expect(closes).toBe(1);
  });

  test('15 reopens of one session: no listener piles up (the suite fails on a MaxListenersExceededWarning)', async () => {
    const h = await startServer({ wait: 50 });
    const s = connect(h.base, { reopen: true });
    await opened(s);
    const ids = new Set([s.id]);
    for (let i = 0; i < 15; i++) {
      // A push seen: a watch of this session succeeded, so its loss starts a new run of reopens.
      const pushed = new Promise<void>((resolve) => s.once('message', () => resolve()));
      await h.mw.hub.send(s.id!, i);
      await within(5_000, pushed);
      const reopened = new Promise<ReopenInfo>((resolve) => s.once('reopen', resolve));
      h.swap({ wait: 50 });
      expect((await within(5_000, reopened)).attempt).toBe(1); // each lost session had a watch succeed first
      await s.send(i);
      ids.add(s.id);
    }
    expect(ids.size).toBe(16);
    expect(s.state).toBe('open');
  });

  test('without reopen, SESSION_LOST closes the session (the default)', async () => {
    const h = await startServer();
    const s = connect(h.base);
    await opened(s);
    h.swap();
    expect((await within(5_000, closed(s))).code).toBe('SESSION_LOST');
  });

  test('close() while reopening ends the session with CLIENT', async () => {
    const h = await startServer();
    const s = connect(h.base, { reopen: true, retry: { initialDelayMs: 10_000, maxDelayMs: 10_000 } });
    await opened(s);
    const connecting = new Promise<void>((resolve) => s.on('state', (st) => st === 'connecting' && resolve()));
    h.swap();
    await within(5_000, connecting);
    await within(2_000, s.close());
    expect(s.closeEvent?.code).toBe('CLIENT');
  });
});
