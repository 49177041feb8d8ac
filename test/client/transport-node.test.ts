/**
 * The client's default transport in Node (src/client/node-http.ts): that it
 * is the default, and that it does everything the client asks of a fetch —
 * headers, bodies, DELETE, abort, timeout, bodies read frame by frame, http
 * and https, keep-alive. And `stream: 'auto'`: behind a proxy that holds
 * whole responses, a session falls back to plain watches without losing or
 * repeating anything; without one, it keeps streaming.
 */
import { execFileSync } from 'node:child_process';
import { getEventListeners } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import express from 'express';
import { bidiWeb, type BidiOptions } from '../../src/express';
import { open, type BidiClientSession, type FetchLike } from '../../src/client';
import { AbortedError, BidiClientError } from '../../src/client/errors';
import { createNodeFetch, isNode, nodeDefaultFetch } from '../../src/client/node-http';
import { Transport, firstByteLimitMs } from '../../src/client/transport';
import { sleep } from '../../src/core/util';
import { waitFor } from '../helpers/client-session';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listen(server: http.Server | https.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  return (server.address() as AddressInfo).port;
}

/** An Express app with bidiweb on MemoryStore; `url` is its base URL. */
async function bidiServer(options: BidiOptions<any, any> = {}): Promise<{ url: string; mw: ReturnType<typeof bidiWeb> }> {
  const mw = bidiWeb({ sweepInterval: 0, onError: () => {}, ...options });
  const app = express();
  app.use(mw);
  const port = await listen(http.createServer(app));
  cleanups.push(() => mw.server.dispose());
  return { url: `http://127.0.0.1:${port}/session`, mw };
}

function track<T extends BidiClientSession<any, any>>(s: T): T {
  cleanups.push(async () => {
    if (s.state !== 'closed') await s.close();
  });
  return s;
}

function opened(s: BidiClientSession<any, any>): Promise<void> {
  return new Promise((resolve, reject) => {
    s.once('open', () => resolve());
    s.once('close', (e) => reject(new Error(`closed: ${e.code} ${e.reason}`)));
  });
}

describe('the default transport in Node', () => {
  test('is node:http: with the global fetch throwing, a session still opens, echoes, streams and closes', async () => {
    const { url } = await bidiServer({ onMessage: (s, m) => void s.send({ echo: m }) });
    const original = globalThis.fetch;
    let globalCalls = 0;
    globalThis.fetch = (() => {
      globalCalls++;
      throw new Error('global fetch must not be used');
    }) as typeof fetch;
    try {
      expect(nodeDefaultFetch()).toBeDefined();
      const s = track(open(url, { retry: { initialDelayMs: 5, maxDelayMs: 50 } }));
      const got: unknown[] = [];
      const errors: string[] = [];
      s.on('message', (m) => got.push(m));
      s.on('error', (e) => errors.push(`${e.code} ${e.message}`));
      await opened(s);
      for (let i = 0; i < 20; i++) await s.send(i);
      await waitFor('20 echoes', () => got.length === 20);
      expect(got).toEqual(Array.from({ length: 20 }, (_, i) => ({ echo: i })));
      expect(s.streaming).toBe(true); // the default is 'auto', and nothing in between buffers
      await s.close();
      expect(s.closeEvent?.code).toBe('CLIENT');
      expect(errors).toEqual([]);
      expect(globalCalls).toBe(0);
    } finally {
      globalThis.fetch = original;
    }
  });

  test('an explicit fetch option wins', async () => {
    const { url } = await bidiServer();
    let calls = 0;
    const mine: FetchLike = (u, init) => {
      calls++;
      return fetch(u, init);
    };
    const s = track(open(url, { fetch: mine }));
    await opened(s);
    await s.close();
    expect(calls).toBeGreaterThanOrEqual(2); // open and DELETE at least
  });

  test('is Node only outside browser-like environments (jsdom defines document)', () => {
    expect(isNode()).toBe(true);
    const g = globalThis as { document?: unknown };
    g.document = {};
    try {
      expect(isNode()).toBe(false);
    } finally {
      delete g.document;
    }
  });
});

describe('the node:http fetch, through the client transport', () => {
  const nodeFetch = createNodeFetch(http, https);

  interface Seen {
    method: string;
    url: string;
    headers: http.IncomingHttpHeaders;
    body: string;
    closedEarly: boolean;
  }

  /** A raw server: `handler` answers; every request is recorded, with whether its connection closed before the answer ended. */
  async function raw(handler: (req: http.IncomingMessage, res: http.ServerResponse, seen: Seen) => void): Promise<{ base: string; seen: Seen[]; connections: () => number }> {
    const seen: Seen[] = [];
    let connections = 0;
    const server = http.createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        const s: Seen = { method: req.method!, url: req.url!, headers: req.headers, body, closedEarly: false };
        seen.push(s);
        res.on('close', () => {
          if (!res.writableFinished) s.closedEarly = true;
        });
        handler(req, res, s);
      });
    });
    server.on('connection', () => connections++);
    const port = await listen(server);
    return { base: `http://127.0.0.1:${port}/session?app=1`, seen, connections: () => connections };
  }

  test('headers, a JSON body with its length, the reply parsed; DELETE with keepalive; one kept-alive connection', async () => {
    const srv = await raw((_req, res, s) => {
      res.writeHead(s.method === 'DELETE' ? 200 : 201, { 'content-type': 'application/json', 'retry-after': '2' });
      res.end(JSON.stringify({ got: s.body, n: 'ü' }));
    });
    const t = new Transport(srv.base, { authorization: 'Bearer x', 'x-many': 'a' }, nodeFetch);
    const reply = await t.request({ method: 'POST', path: '/send', body: '{"msgs":[[1,"é"]]}', sid: 'abc', timeoutMs: 5_000, query: { ack: 3 } });
    expect(reply).toEqual({ status: 201, body: { got: '{"msgs":[[1,"é"]]}', n: 'ü' }, retryAfterMs: 2_000, request: `POST ${srv.base.split("?")[0]}/send` }); // the query (it may carry a token) is left out
    const del = await t.request({ method: 'DELETE', path: '', sid: 'abc', timeoutMs: 5_000, keepalive: true });
    expect(del.status).toBe(200);
    const [post, remove] = srv.seen;
    expect(post).toMatchObject({ method: 'POST', url: '/session/send?app=1&ack=3' });
    expect(post!.headers).toMatchObject({
      authorization: 'Bearer x',
      'x-many': 'a',
      'bidi-sid': 'abc',
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength('{"msgs":[[1,"é"]]}')),
      accept: 'application/json',
    });
    expect(post!.headers['transfer-encoding']).toBeUndefined();
    expect(remove).toMatchObject({ method: 'DELETE', url: '/session?app=1', body: '' });
    expect(srv.connections()).toBe(1);
  });

  test('a timeout ends the request (TIMEOUT) and its connection', async () => {
    const srv = await raw(() => {}); // never answers
    const t = new Transport(srv.base, undefined, nodeFetch);
    await expect(t.request({ method: 'GET', path: '/watch', timeoutMs: 150 })).rejects.toMatchObject({ code: 'TIMEOUT' });
    await waitFor('the server to see the connection close', () => srv.seen[0]?.closedEarly === true);
  });

  test('an abort before the answer, and one in the middle of a body, end the request (AbortedError) and its connection', async () => {
    const srv = await raw((_req, res, s) => {
      if (s.url.includes('part')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"half":'); // and never the rest
      }
    });
    const t = new Transport(srv.base, undefined, nodeFetch);
    const ctl = new AbortController();
    const p = t.request({ method: 'GET', path: '/watch', timeoutMs: 10_000, signal: ctl.signal });
    await waitFor('the request', () => srv.seen.length === 1);
    ctl.abort();
    await expect(p).rejects.toBeInstanceOf(AbortedError);
    const ctl2 = new AbortController();
    const p2 = t.request({ method: 'GET', path: '/watch', query: { part: 1 }, timeoutMs: 10_000, signal: ctl2.signal });
    await waitFor('the second request', () => srv.seen.length === 2);
    await sleep(50); // the head and part of the body are in
    ctl2.abort();
    await expect(p2).rejects.toBeInstanceOf(AbortedError);
    await waitFor('both connections closed', () => srv.seen.every((s) => s.closedEarly));
  });

  test('a signal that serves request after request holds one abort listener, and so do the controllers the transport reuses; an abort still ends the request in flight', async () => {
    const srv = await raw((_req, res, s) => {
      if (s.url.includes('hold')) return; // never answered
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ack":1}');
    });
    const t = new Transport(srv.base, undefined, nodeFetch);
    // As the sender does: one controller for every send that ends without an abort.
    const ctl = new AbortController();
    for (let i = 0; i < 30; i++) {
      const reply = await t.request({ method: 'POST', path: '/send', body: '{}', sid: 'abc', timeoutMs: 5_000, signal: ctl.signal });
      expect(reply.status).toBe(200);
    }
    expect(getEventListeners(ctl.signal, 'abort').length).toBeLessThanOrEqual(1);
    const spare = (t as unknown as { spareCtls: AbortController[] }).spareCtls;
    expect(spare.length).toBeGreaterThan(0);
    for (const c of spare) expect(getEventListeners(c.signal, 'abort').length).toBeLessThanOrEqual(1);
    expect(srv.connections()).toBe(1);
    const held = t.request({ method: 'POST', path: '/send', query: { hold: 1 }, body: '{}', sid: 'abc', timeoutMs: 10_000, signal: ctl.signal });
    await waitFor('the held request', () => srv.seen.length === 31);
    ctl.abort();
    await expect(held).rejects.toBeInstanceOf(AbortedError);
    await waitFor('its connection closed', () => srv.seen[30]!.closedEarly);
    // The transport's controller of the aborted request is not used again; the next request goes out as usual.
    const next = await t.request({ method: 'POST', path: '/send', body: '{}', sid: 'abc', timeoutMs: 5_000 });
    expect(next.status).toBe(200);
  });

  test('URLs node:http is given in parts: credentials become Basic auth, an IPv6 host loses its brackets', async () => {
    const srv = await raw((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
    const port = new URL(srv.base).port;
    const t = new Transport(`http://ad%20a:p%40ss@127.0.0.1:${port}/session`, undefined, nodeFetch);
    expect((await t.request({ method: 'POST', path: '/send', body: '{}', sid: 'abc', timeoutMs: 5_000 })).status).toBe(200);
    expect(srv.seen[0]!.headers.authorization).toBe('Basic ' + Buffer.from('ad a:p@ss').toString('base64'));
    expect(srv.seen[0]!.url).toBe('/session/send');

    const v6 = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ url: req.url, host: req.headers.host }));
    });
    await new Promise<void>((r) => v6.listen(0, '::1', () => r()));
    cleanups.push(async () => {
      v6.closeAllConnections();
      await new Promise<void>((r) => v6.close(() => r()));
    });
    const v6port = (v6.address() as AddressInfo).port;
    const t6 = new Transport(`http://[::1]:${v6port}/session?t=1`, undefined, nodeFetch);
    const reply = await t6.request({ method: 'GET', path: '/watch', query: { ack: 0 }, sid: 'abc', timeoutMs: 5_000 });
    expect(reply.body).toEqual({ url: '/session/watch?t=1&ack=0', host: `[::1]:${v6port}` });
  });

  test('a stream is read frame by frame: the next frame is written only after the client handled the previous one', async () => {
    let handled!: () => void;
    const firstHandled = new Promise<void>((r) => (handled = r));
    const srv = await raw((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'bidi-heartbeat': '5000' });
      res.write('{"n":1}\n\n'); // a frame and a heartbeat
      // Were the body buffered until its end, this would wait forever (and the test time out).
      void firstHandled.then(() => res.end('{"n":2}\n'));
    });
    const t = new Transport(srv.base, undefined, nodeFetch);
    const frames: unknown[] = [];
    const reply = await t.request({
      method: 'GET',
      path: '/watch',
      timeoutMs: 5_000,
      verifyStream: true,
      onFrame: (f) => {
        frames.push(f);
        handled();
      },
    });
    expect(reply).toMatchObject({ status: 200, streamed: true });
    expect(frames).toEqual([{ n: 1 }, { n: 2 }]);
  });

  test('a connection reset in the middle of a body is a NETWORK_ERROR', async () => {
    const srv = await raw((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      res.write('{"cut":');
      setTimeout(() => req.socket.destroy(), 20);
    });
    const t = new Transport(srv.base, undefined, nodeFetch);
    const err = await t.request({ method: 'GET', path: '/watch', timeoutMs: 5_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BidiClientError);
    expect((err as BidiClientError).code).toBe('NETWORK_ERROR');
  });

  test('https: a whole session over TLS (a self-signed certificate the test trusts)', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'bidiweb-tls-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    const mw = bidiWeb({ sweepInterval: 0, onError: () => {}, onMessage: (s, m) => void s.send({ echo: m }) });
    cleanups.push(() => mw.server.dispose());
    const app = express();
    app.use(mw);
    const port = await listen(https.createServer({ key: readFileSync(key), cert: readFileSync(cert) }, app));
    // The real https module, with an Agent that trusts this certificate.
    const ca = readFileSync(cert);
    const trusting = { ...https, Agent: class extends https.Agent { constructor(o?: https.AgentOptions) { super({ ...o, ca }); } } };
    const s = track(open(`https://127.0.0.1:${port}/session`, { fetch: createNodeFetch(http, trusting) }));
    const got: unknown[] = [];
    s.on('message', (m) => got.push(m));
    await opened(s);
    await s.send('over tls');
    await waitFor('the echo', () => got.length === 1);
    expect(got).toEqual([{ echo: 'over tls' }]);
    expect(s.streaming).toBe(true);
    await s.close();
    expect(s.closeEvent?.code).toBe('CLIENT');
  });
});

/**
 * A proxy that holds each response whole until the backend ends it, then
 * sends it with a Content-Length (as a buffering reverse proxy or a
 * non-streaming functions platform does). Records every request's URL.
 */
async function bufferingProxy(backend: string, headersAtOnce = false): Promise<{ url: string; urls: string[] }> {
  const target = new URL(backend);
  const agent = new http.Agent({ keepAlive: true });
  cleanups.push(() => agent.destroy());
  const urls: string[] = [];
  const server = http.createServer((req, res) => {
    urls.push(req.url!);
    const headers = { ...req.headers, host: target.host };
    const out = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers, agent }, (up) => {
      const chunks: Buffer[] = [];
      if (headersAtOnce) {
        // As nginx with proxy_buffering: the status and headers go on, the body waits in a buffer.
        const h = { ...up.headers };
        delete h['content-length'];
        res.writeHead(up.statusCode ?? 502, h);
        res.flushHeaders();
      }
      up.on('data', (c: Buffer) => chunks.push(c));
      up.on('end', () => {
        const body = Buffer.concat(chunks);
        if (!headersAtOnce) {
          const h = { ...up.headers };
          delete h['transfer-encoding'];
          h['content-length'] = String(body.length);
          res.writeHead(up.statusCode ?? 502, h);
        }
        res.end(body);
      });
      up.on('error', () => res.destroy());
    });
    out.on('error', () => res.destroy());
    res.on('close', () => out.destroy()); // the client went away: so does the backend request
    req.pipe(out);
  });
  const port = await listen(server);
  return { url: `http://127.0.0.1:${port}`, urls };
}

test('first-byte limits: the announced heartbeat + 2 s, at most the dead-stream limit; 7 s when none is announced', () => {
  expect(firstByteLimitMs('5000')).toBe(7_000);
  expect(firstByteLimitMs('300')).toBe(1_900);
  expect(firstByteLimitMs(null)).toBe(7_000);
  expect(firstByteLimitMs('0')).toBe(7_000);
  expect(firstByteLimitMs('junk')).toBe(7_000);
});

describe("stream: 'auto' (the default)", () => {
  const HEARTBEAT = 300; // first-byte limit: min(300 + 2 000, 3 × 300 + 1 000) = 1.9 s

  test.each([
    // Headers held too: the heartbeat is not known, the stream's end (at its wait, 4 s) shows the headers late.
    ['whole responses', false, [3_500, 8_000]],
    // Headers at once: they announce 300 ms heartbeats, so no byte by 1.9 s gives the stream away.
    ['bodies (headers go on at once)', true, [1_500, 3_900]],
  ])('behind a proxy that buffers %s: one stream is found held back, the session goes on with plain watches, each message once and in order', async (_name, headersAtOnce, [from, to]) => {
    expect(firstByteLimitMs(String(HEARTBEAT))).toBe(1_900);
    const { url, mw } = await bidiServer({ heartbeatMs: HEARTBEAT, wait: 4_000 });
    const proxy = await bufferingProxy(url, headersAtOnce as boolean);
    const s = track(open(proxy.url + '/session', { retry: { initialDelayMs: 5, maxDelayMs: 50 } }));
    const got: [unknown, number][] = [];
    const errors: BidiClientError[] = [];
    const retries: string[] = [];
    s.on('message', (m, { seq }) => got.push([m, seq]));
    s.on('error', (e) => errors.push(e));
    s.on('retry', (r) => retries.push(r.op));
    await opened(s);
    expect(s.streaming).toBe(true);
    const t0 = Date.now();
    await mw.hub.send(s.id!, 'early'); // written into the held stream: it reaches the client only through the plain watch
    await waitFor('the early message', () => got.length === 1, 10_000);
    const fellBackAfter = Date.now() - t0;
    expect(s.streaming).toBe(false);
    expect(fellBackAfter).toBeGreaterThanOrEqual(from as number);
    expect(fellBackAfter).toBeLessThan(to as number);
    expect(errors.map((e) => e.code)).toEqual(['TIMEOUT']);
    expect(errors[0]!.message).toMatch(/buffers responses/);
    expect(retries).toEqual([]); // not a retry: the next watch goes at once
    for (let i = 1; i <= 5; i++) await mw.hub.send(s.id!, i);
    await waitFor('five more', () => got.length === 6, 6_000);
    expect(got).toEqual([['early', 1], ...[1, 2, 3, 4, 5].map((i) => [i, i + 1])]);
    const watches = proxy.urls.filter((u) => u.includes('/watch'));
    expect(watches[0]).toContain('stream=1');
    expect(watches.slice(1).length).toBeGreaterThan(0);
    expect(watches.slice(1).every((u) => !u.includes('stream=1'))).toBe(true);
    await s.close();
    expect(s.closeEvent?.code).toBe('CLIENT');
  });

  test('with nothing in between: an idle stream stays a stream past the first-byte limit (its heartbeats count)', async () => {
    const { url, mw } = await bidiServer({ heartbeatMs: HEARTBEAT, wait: 4_000 });
    const s = track(open(url));
    const errors: string[] = [];
    const got: unknown[] = [];
    s.on('error', (e) => errors.push(e.code));
    s.on('message', (m) => got.push(m));
    await opened(s);
    await sleep(2_500);
    await mw.hub.send(s.id!, 'late');
    await waitFor('the message', () => got.length === 1);
    expect(s.streaming).toBe(true);
    expect(errors).toEqual([]);
  });

  test('stream: false never streams; stream: true is never switched off; other values are refused', async () => {
    const { url } = await bidiServer({ heartbeatMs: HEARTBEAT, wait: 4_000 });
    const proxy = await bufferingProxy(url);
    const plain = track(open(proxy.url + '/session', { stream: false }));
    const forced = track(open(proxy.url + '/session', { stream: true }));
    await Promise.all([opened(plain), opened(forced)]);
    await sleep(2_200); // past the first-byte limit
    expect(plain.streaming).toBe(false);
    expect(forced.streaming).toBe(true);
    expect(() => open(url, { stream: 'yes' as unknown as boolean })).toThrow(RangeError);
  });
});
