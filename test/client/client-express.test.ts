/**
 * The client against the real server: Express adapter, core, MemoryStore.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { bidiWeb, reject, type BidiOptions } from '../../src/express';
import { open, type BidiClientSession, type ClientOptions, type CloseEvent, type FetchLike } from '../../src/client';
import { sleep } from '../../src/core/util';
import { rng, sessionChaosFetch } from '../helpers/faulty-fetch';

type Middleware = ReturnType<typeof bidiWeb>;

interface Harness {
  base: string;
  mw: Middleware;
  /** Replace the server behind the same URL (a restart that loses the in-memory store). */
  swap(options: BidiOptions<any, any>): Middleware;
  stop(): Promise<void>;
}

/** Chaos seeds; set BIDI_CHAOS_SEEDS=1-50 (a range) to stress. */
const SEEDS: number[] = (() => {
  const m = /^(\d+)-(\d+)$/.exec(process.env.BIDI_CHAOS_SEEDS ?? '');
  if (!m) return [7, 99];
  return Array.from({ length: Number(m[2]) - Number(m[1]) + 1 }, (_, i) => Number(m[1]) + i);
})();

const harnesses: Harness[] = [];
const clients: BidiClientSession<any, any>[] = [];

async function startServer(options: BidiOptions<any, any> = {}): Promise<Harness> {
  const make = (o: BidiOptions<any, any>): Middleware =>
    bidiWeb({ sweepInterval: 0, onError: () => {}, wait: 1000, ...o });
  const all: Middleware[] = [make(options)];
  let current = all[0];
  const app = express();
  app.use((req, res, next) => current(req, res, next));
  const server = http.createServer(app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const h: Harness = {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}/session`,
    get mw() {
      return current;
    },
    swap(o) {
      current = make(o);
      all.push(current);
      return current;
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      for (const m of all) await m.server.dispose();
    },
  };
  harnesses.push(h);
  return h;
}

function connect<TIn = any>(h: Harness, options: ClientOptions = {}): BidiClientSession<TIn, any> {
  const s = open<TIn, any>(h.base, { retry: { initialDelayMs: 5, maxDelayMs: 100 }, ...options });
  clients.push(s);
  return s;
}

afterEach(async () => {
  for (const s of clients.splice(0)) if (s.state !== 'closed') await s.close();
  for (const h of harnesses.splice(0)) await h.stop();
});


async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('waitFor: timed out');
    await sleep(5);
  }
}

function opened(s: BidiClientSession<any, any>): Promise<void> {
  return new Promise((resolve, rejectFn) => {
    s.once('open', () => resolve());
    s.once('close', (ev) => rejectFn(new Error(`closed: ${ev.code} ${ev.reason}`)));
  });
}

function closed(s: BidiClientSession<any, any>): Promise<CloseEvent> {
  return new Promise((resolve) => s.once('close', resolve));
}


/** Records every request and its status. */
function recordingFetch(log: { method: string; url: string; status: number; headers: Record<string, string> }[]): FetchLike {
  return async (url, init) => {
    const res = await fetch(url, init);
    log.push({ method: init.method, url, status: res.status, headers: init.headers });
    return res;
  };
}


describe('client ↔ express server', () => {
  test('echo: ordered both ways; close() runs onClose once with reason client', async () => {
    const closes: string[] = [];
    const h = await startServer({
      onMessage: async (session, data) => void (await session.send({ echo: data })),
      onClose: (_s, reason) => void closes.push(reason),
    });
    const log: { method: string; url: string; status: number; headers: Record<string, string> }[] = [];
    const s = connect(h, { fetch: recordingFetch(log) });
    const got: [unknown, number][] = [];
    s.on('message', (d, { seq }) => got.push([d, seq]));
    const n = 100;
    const sends = Array.from({ length: n }, (_, i) => s.send(i));
    await opened(s);
    await Promise.all(sends);
    await waitFor(() => got.length === n);
    expect(got).toEqual(Array.from({ length: n }, (_, i) => [{ echo: i }, i + 1]));
    expect(s.bufferedAmount).toBe(0);
    const ev = closed(s);
    await s.close();
    expect(await ev).toEqual({ code: 'CLIENT', reason: 'closed by the client' });
    expect(closes).toEqual(['client']);
    // The sid never appears in a URL; it is in the header of every request after open.
    for (const r of log) expect(r.url).not.toContain(s.id!);
    expect(log.slice(1).every((r) => r.headers['Bidi-Sid'] === s.id)).toBe(true);
    expect(log.every((r) => r.status < 400)).toBe(true);
  });

  test('onOpen sees meta and headers; a rejection ends the client with REJECTED', async () => {
    const users: unknown[] = [];
    const h = await startServer({
      onOpen: (session, req) => {
        if (req.headers.get('authorization') !== 'Bearer good') throw reject(401, 'login first');
        session.user = req.meta;
        users.push(req.meta);
      },
    });
    const bad = connect(h, { headers: { Authorization: 'Bearer bad' } });
    const queued = bad.send('never');
    expect(await closed(bad)).toEqual({ code: 'REJECTED', reason: 'login first', status: 401, errorCode: 'REJECTED' });
    await expect(queued).rejects.toMatchObject({ code: 'REJECTED' });

    const good = connect(h, { headers: async () => ({ Authorization: 'Bearer good' }), meta: { name: 'ada' } });
    await opened(good);
    expect(users).toEqual([{ name: 'ada' }]);
  });

  test('server close: every message sent before it arrives first, then SERVER with the reason', async () => {
    const h = await startServer({
      onMessage: async (session, data) => {
        if (data === 'bye') {
          await session.send('last 1');
          await session.send('last 2');
          await session.close('bye now');
        }
      },
    });
    const s = connect(h);
    const order: string[] = [];
    s.on('message', (d) => order.push(String(d)));
    s.on('close', (ev) => order.push(`close ${ev.code} ${ev.reason}`));
    await opened(s);
    await s.send('bye');
    await closed(s);
    expect(order).toEqual(['last 1', 'last 2', 'close SERVER bye now']);
    await expect(s.send('after')).rejects.toMatchObject({ code: 'SERVER' });
  });

  test('hub pushes from outside any request arrive in seq order, each once', async () => {
    const h = await startServer();
    const s = connect(h);
    const got: [unknown, number][] = [];
    s.on('message', (d, { seq }) => got.push([d, seq]));
    await opened(s);
    const n = 200;
    await Promise.all(Array.from({ length: n }, (_, i) => h.mw.hub.send(s.id!, i)));
    await waitFor(() => got.length >= n);
    await sleep(50);
    expect(got.map(([, seq]) => seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(new Set(got.map(([d]) => d)).size).toBe(n);
  });

  test('a restart that loses the in-memory store: SESSION_LOST with a clear reason', async () => {
    const h = await startServer({ wait: 200 });
    const s = connect(h);
    await opened(s);
    h.swap({ wait: 200 }); // fresh MemoryStore
    const ev = await closed(s);
    expect(ev.code).toBe('SESSION_LOST');
    expect(ev.status).toBe(404);
    expect(ev.reason).toMatch(/no longer knows this session \(expired or lost by the store\)/);
  });

  test('idle expiry: EXPIRED', async () => {
    const closes: string[] = [];
    const h = await startServer({ wait: 50, maxWait: 100, idleTimeout: 300, onClose: (_s, r) => void closes.push(r) });
    // A network that goes away for a while: requests wait until it is back.
    let down: Promise<void> | undefined;
    let up = (): void => {};
    const f: FetchLike = async (url, init) => {
      if (down) await down;
      return fetch(url, init);
    };
    const s = connect(h, { fetch: f });
    await opened(s);
    down = new Promise((r) => (up = r));
    await sleep(500); // the pending watch returns; the next one waits for the network
    await h.mw.server.sweep();
    expect(closes).toEqual(['expired']);
    down = undefined;
    up();
    const ev = await closed(s);
    expect(ev.code).toBe('EXPIRED');
  });

  test('close() waits for a slow handler; onClose runs after every message', async () => {
    const seen: string[] = [];
    const h = await startServer({
      onMessage: async (_s, data) => {
        await sleep(100);
        seen.push(String(data));
      },
      onClose: (_s, reason) => void seen.push(`close:${reason}`),
    });
    const s = connect(h);
    const sends = ['a', 'b', 'c'].map((x) => s.send(x));
    await s.close();
    await Promise.all(sends);
    expect(seen).toEqual(['a', 'b', 'c', 'close:client']);
  });

  test('small window and small batches: no 429 or 413, everything in order', async () => {
    const seen: number[] = [];
    const h = await startServer({
      limits: { inboundWindow: 4, maxMessagesPerRequest: 3 },
      onMessage: async (_s, data) => {
        await sleep(2);
        seen.push(data as number);
      },
    });
    const log: { method: string; url: string; status: number; headers: Record<string, string> }[] = [];
    const s = connect(h, { fetch: recordingFetch(log), maxInflight: 4 });
    await opened(s);
    await Promise.all(Array.from({ length: 40 }, (_, i) => s.send(i)));
    expect(seen).toEqual(Array.from({ length: 40 }, (_, i) => i));
    expect(log.filter((r) => r.status >= 400)).toEqual([]);
  });

  test('per-request authorize: rotating tokens pass; a refused request ends with PROTOCOL_ERROR', async () => {
    const h = await startServer({
      authorize: ({ headers }) => {
        if (!/^tok-\d+$/.test(headers.get('x-token') ?? '')) throw reject(403, 'bad token');
      },
    });
    let n = 0;
    let valid = true;
    const s = connect(h, { headers: () => ({ 'x-token': valid ? `tok-${++n}` : 'stolen' }) });
    await opened(s);
    await s.send('ok');
    valid = false;
    const err = await s.send('refused').catch((e) => e);
    expect(err.code).toBe('PROTOCOL_ERROR');
    expect(s.closeEvent).toMatchObject({ code: 'PROTOCOL_ERROR', status: 403 });
  });

  test.each(SEEDS)('chaos (seed %i): exactly once, in order, both ways', async (seed) => {
    const received: [unknown, number][] = [];
    const h = await startServer({
      wait: 200,
      limits: { inboundWindow: 16, maxMessagesPerRequest: 5 },
      onMessage: async (session, data, info) => {
        received.push([data, info.seq]);
        await session.send({ echo: data });
      },
    });
    const random = rng(seed);
    const chaos = sessionChaosFetch(random, { before: 0.15, after: 0.15, duplicate: 0.1, maxDelayMs: 10 });
    const s = connect(h, { fetch: chaos.fetch, resendAfterMs: 100 });
    const got: unknown[] = [];
    s.on('message', (d: any) => got.push(d.echo ?? d));
    await opened(s);
    const n = 150;
    const sends: Promise<void>[] = [];
    for (let i = 0; i < n; i++) {
      sends.push(s.send(i));
      if (random() < 0.2) await sleep(1);
    }
    await Promise.all(sends);
    await waitFor(() => got.length >= n, 20_000);
    await sleep(100);
    expect(received).toEqual(Array.from({ length: n }, (_, i) => [i, i + 1]));
    expect(got).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(chaos.stats.before + chaos.stats.after + chaos.stats.duplicate).toBeGreaterThan(2); // faults were really injected
    await s.close();
    expect(s.closeEvent?.code).toBe('CLIENT');
  });
});
