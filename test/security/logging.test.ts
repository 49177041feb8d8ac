/**
 * docs/SECURITY.md, "Where session ids are (not)": a sid is a bearer
 * secret. bidiweb never logs one — not in its default error reporting, not
 * through a store client's error objects — and the client never puts one in
 * a URL (so access logs, proxies and Referer headers never see it): it
 * travels in the `Bidi-Sid` request header.
 */
import express from 'express';
import Redis from 'ioredis';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import util from 'node:util';
import { open, type CloseEvent, type FetchLike } from '../../src/client';
import { BidiServer, MemoryStore, type Store } from '../../src/core';
import { bidiWeb } from '../../src/express';
import { RedisStore } from '../../src/redis';
import { startRedis } from '../helpers/redis-server';
import { call, openSid } from './util';

jest.setTimeout(60_000);

/** Everything written to the console or to stdout / stderr while `fn` runs. */
async function captureOutput(fn: () => Promise<void>): Promise<string> {
  const chunks: string[] = [];
  const methods = ['log', 'info', 'warn', 'error', 'debug', 'trace'] as const;
  const spies = methods.map((m) => jest.spyOn(console, m).mockImplementation((...args: unknown[]) => void chunks.push(util.format(...args))));
  const out = jest.spyOn(process.stdout, 'write').mockImplementation((c: unknown) => (chunks.push(String(c)), true));
  const err = jest.spyOn(process.stderr, 'write').mockImplementation((c: unknown) => (chunks.push(String(c)), true));
  try {
    // Bounded: if fn hangs, the capture must end before jest's own timeout (or jest could not report).
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([fn(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`captured section timed out; output so far:\n${chunks.join('\n').slice(-3000)}`)), 40_000)))]).finally(() => clearTimeout(timer));
  } finally {
    for (const s of spies) s.mockRestore();
    out.mockRestore();
    err.mockRestore();
  }
  return chunks.join('\n');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('session ids stay out of logs and URLs', () => {
  it('a whole session — hook errors, a store failure, bad requests, close, sweep — logs no sid with the default error reporting', async () => {
    // A store that fails once for read and once for append, as a remote store does.
    const memory = new MemoryStore();
    // Armed at chosen moments below.
    const failures = { read: 0, append: 0 };
    const store = new Proxy(memory, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver);
        if ((prop === 'read' || prop === 'append') && typeof value === 'function') {
          return async (...args: unknown[]) => {
            if (failures[prop] > 0) {
              failures[prop]--;
              // Like an ioredis error: the command's arguments (the session's keys) hang on it.
              throw Object.assign(new Error(`store unavailable`), { command: { name: 'evalsha', args: [`bidi:{${args[0]}}:s`] } });
            }
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as Store;

    const accessLog: string[] = [];
    const clientRequests: Array<{ url: string; headers: Record<string, string> }> = [];
    const received: unknown[] = [];
    let closed: CloseEvent | undefined;
    let sid = '';
    let hubError: unknown;
    const mw = bidiWeb({
      store,
      sweepInterval: 0,
      wait: 200,
      // No onError: the default reporting is what is under test.
      onOpen(session, req) {
        session.user = { name: String((req.meta as { name?: string })?.name) };
      },
      async onMessage(session, data) {
        if ((data as { boom?: boolean }).boom) throw new Error('the handler failed on purpose');
        await session.send({ echo: data });
      },
      onClose() {
        throw new Error('onClose failed on purpose');
      },
    });
    const app = express();
    app.use((req, _res, next) => {
      accessLog.push(`${req.method} ${req.originalUrl}`);
      next();
    });
    app.use(mw);
    const server = http.createServer(app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/session`;

    const recording: FetchLike = (url, init) => {
      clientRequests.push({ url, headers: { ...init.headers } });
      return fetch(url, init as RequestInit);
    };

    const output = await captureOutput(async () => {
      const s = open(base, { fetch: recording, meta: { name: 'ada' }, retry: { initialDelayMs: 10, maxDelayMs: 50 } });
      s.on('message', (d: unknown) => void received.push(d));
      s.on('close', (ev: CloseEvent) => (closed = ev));
      s.on('error', () => {});
      await new Promise<void>((r) => s.on('open', () => r()));
      sid = s.id!;
      await s.send({ text: 'hello' });
      await s.send({ boom: true });
      await s.send({ text: 'after the failure' });
      await until(() => received.length >= 2, 10_000, 'the echoes');
      failures.append = 1;
      try {
        await mw.hub.send(sid, { pushed: 1 });
      } catch (err) {
        hubError = err;
      }
      // A watch that meets a store failure answers 500 (reported); the client retries.
      failures.read = 1;
      await until(() => failures.read === 0, 10_000, 'a watch to meet the store failure');
      await mw.hub.send(sid, { pushed: 2 });
      // The client's watch retries after the failure; the push must reach it before the close below.
      await until(() => received.some((m) => (m as { pushed?: number }).pushed === 2), 10_000, 'the push after the store failure');
      // Bad requests with this sid and around it.
      for (const init of [
        { method: 'POST', headers: { 'bidi-sid': sid, 'content-type': 'application/json' }, body: '{not json' },
        { method: 'POST', headers: { 'bidi-sid': sid, 'content-type': 'text/plain' }, body: '{}' },
        { method: 'POST', headers: { 'bidi-sid': sid.slice(1) + 'A', 'content-type': 'application/json' }, body: '{"msgs":[]}' },
        { method: 'POST', headers: { 'bidi-sid': sid + '!', 'content-type': 'application/json' }, body: '{"msgs":[]}' },
        { method: 'POST', headers: { 'bidi-sid': sid, 'content-type': 'application/json' }, body: '{"msgs":[],"ack":999}' },
      ]) {
        await fetch(base + '/send', init);
      }
      await s.close();
      await mw.server.sweep();
    });

    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    await mw.server.dispose();

    expect(closed?.code).toBe('CLIENT');
    expect(hubError).toBeDefined();
    expect(received).toEqual(expect.arrayContaining([{ echo: { text: 'hello' } }, { pushed: 2 }]));
    // The capture works: the failures were reported…
    expect(output).toContain('[bidiweb] message error');
    expect(output).toContain('the handler failed on purpose');
    expect(output).toContain('[bidiweb] close error');
    expect(output).toContain('store unavailable');
    // …and no line names the session.
    expect(sid).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(output).not.toContain(sid);
    // URLs: the access log and every request the client made are free of it; the header carries it.
    expect(accessLog.length).toBeGreaterThan(5);
    for (const line of accessLog) expect(line).not.toContain(sid);
    for (const r of clientRequests) expect(r.url).not.toContain(sid);
    const afterOpen = clientRequests.slice(1);
    expect(afterOpen.length).toBeGreaterThan(3);
    for (const r of afterOpen) expect(r.headers['Bidi-Sid']).toBe(sid);
    expect(clientRequests[0]!.headers['Bidi-Sid']).toBeUndefined();
  });

  it('responses never carry a sid except the open response of that very session', async () => {
    const server = new BidiServer({ store: new MemoryStore(), sweepInterval: 0 });
    const a = await openSid(server);
    const b = await openSid(server);
    await server.hub.send(a, { x: 1 });
    const answers = [
      await call(server, 'POST', '/session/send', { sid: a, body: { msgs: [[1, 'm']] } }),
      await call(server, 'GET', '/session/watch', { sid: a, query: { ack: 0, wait: 0 } }),
      await call(server, 'POST', '/session/send', { sid: a, body: { msgs: [], ack: 99 } }),
      await call(server, 'GET', '/session/watch', { sid: 'A'.repeat(22), query: { ack: 0, wait: 0 } }),
      await call(server, 'DELETE', '/session', { sid: a }),
      await call(server, 'GET', '/session/watch', { sid: a, query: { ack: 0, wait: 0 } }),
    ];
    for (const r of answers) {
      const text = JSON.stringify(r);
      expect(text).not.toContain(a);
      expect(text).not.toContain(b);
    }
    await server.dispose();
  });

  it('a Redis failure during a request (OOM) is reported without the session keys its error object carries', async () => {
    const redis = await startRedis();
    const conn = new Redis({ port: redis.port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
    conn.on('error', () => {});
    const store = new RedisStore({ redis: conn, prefix: 'seclog:' });
    const server = new BidiServer({ store, sweepInterval: 0 });
    try {
      const sid = await openSid(server);
      // Redis out of memory: above maxmemory, with no eviction, every write is refused.
      await conn.set('seclog:filler', 'x'.repeat(2 * 1024 * 1024));
      await conn.config('SET', 'maxmemory-policy', 'noeviction');
      await conn.config('SET', 'maxmemory', String(1024 * 1024));
      let status = 0;
      let errorObject: unknown;
      const output = await captureOutput(async () => {
        status = (await call(server, 'POST', '/session/send', { sid, body: { msgs: [[1, 'x']] } })).status;
        await server.hub.send(sid, 'y').catch((e) => (errorObject = e));
      });
      expect(status).toBe(500);
      // The store client's error does name the session's keys…
      expect(util.inspect(errorObject)).toContain(sid);
      // …but bidiweb's report of the failed request does not.
      expect(output).toContain('[bidiweb] request error');
      expect(output).toContain('OOM');
      expect(output).not.toContain(sid);
    } finally {
      await server.dispose();
      await store.dispose();
      conn.disconnect();
      await redis.stop();
    }
  });
});
