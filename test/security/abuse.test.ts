/**
 * docs/SECURITY.md, "Hostile input" and "Fair admission": what one
 * unauthenticated client can send, and what it cannot make the server do —
 * no 5xx and no handler call from deep JSON or invalid UTF-8, no log flood,
 * and no lock-out of other clients by flooding opens (one budget per client
 * key, held in the store, so shared by every instance).
 */
import express from 'express';
import Redis from 'ioredis';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { open } from '../../src/client';
import { BidiServer, MemoryStore, toFetchHandler, type BidiRequest } from '../../src/core';
import { openLimiterFrom } from '../../src/core/open-limit';
import { jsonDeeperThan } from '../../src/core/protocol';
import fc from 'fast-check';
import { bidiWeb } from '../../src/express';
import { RedisStore } from '../../src/redis';
import { bidiRequest } from '../model/harness';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { call, openSid } from './util';

jest.setTimeout(60_000);

const nested = (depth: number, leaf: string = '0') => '['.repeat(depth) + leaf + ']'.repeat(depth);

async function listen(app: express.Express): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer(app);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, close: () => new Promise((r) => (server.closeAllConnections(), server.close(() => r()))) };
}

/** A raw POST with exact body bytes (fetch would re-encode a string). */
async function postBytes(url: string, body: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: new Uint8Array(body) });
  return { status: res.status, body: await res.json() };
}

describe('one validation for every JSON a client sends', () => {
  it('meta nested 5 000 deep: 400 BAD_REQUEST, onOpen never runs, nothing logged (200 requests)', async () => {
    const errors = jest.spyOn(console, 'error').mockImplementation(() => {});
    const onOpen = jest.fn((s: any, req: any) => void (s.user = req.meta));
    const server = new BidiServer({ sweepInterval: 0, onOpen });
    try {
      const body = `{"v":1,"meta":${nested(5_000)}}`;
      for (let i = 0; i < 200; i++) {
        const r = await call(server, 'POST', '/session', { body });
        expect([r.status, r.body.error.code]).toEqual([400, 'BAD_REQUEST']);
      }
      expect(onOpen).not.toHaveBeenCalled();
      expect(errors).not.toHaveBeenCalled();
    } finally {
      errors.mockRestore();
      await server.dispose();
    }
  });

  it('the depth scan of the body text agrees with the depth of the parsed value (strings, escapes, brackets in strings)', () => {
    const depth = (v: unknown): number => {
      if (typeof v !== 'object' || v === null) return 0;
      let d = 0;
      for (const k in v) d = Math.max(d, depth((v as Record<string, unknown>)[k]));
      return d + 1;
    };
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 8 }), fc.integer({ min: 0, max: 10 }), (v, max) => jsonDeeperThan(JSON.stringify(v), max) === depth(v) > max),
      { numRuns: 3_000, seed: 13 },
    );
    expect(jsonDeeperThan('["\\\\",[["a\\"[[["]]]', 2)).toBe(true); // ["\\",[["a\"[[["]]]: a backslash escaped, then an escaped quote
    expect(jsonDeeperThan('["\\\\\\"[[[[",[1]]', 2)).toBe(false);
  });

  it('meta may nest maxJsonDepth levels, not one more (wherever the nesting is)', async () => {
    const metas: unknown[] = [];
    const server = new BidiServer({ sweepInterval: 0, limits: { maxJsonDepth: 8 }, onOpen: (_s, req) => void metas.push(req.meta) });
    expect((await call(server, 'POST', '/session', { body: `{"v":1,"meta":${nested(8)}}` })).status).toBe(201);
    expect((await call(server, 'POST', '/session', { body: `{"v":1,"meta":{"a":1,"b":${nested(7)}}}` })).status).toBe(201);
    expect((await call(server, 'POST', '/session', { body: `{"v":1,"meta":${nested(9)}}` })).body.error.code).toBe('BAD_REQUEST');
    expect((await call(server, 'POST', '/session', { body: `{"v":1,"meta":{"a":{"b":${nested(7)}}}}` })).body.error.code).toBe('BAD_REQUEST');
    // Brackets inside strings are text, not nesting.
    expect((await call(server, 'POST', '/session', { body: JSON.stringify({ v: 1, meta: { s: '[{'.repeat(1_000) + '\\"]' } }) })).status).toBe(201);
    expect(metas).toHaveLength(3);
    await server.dispose();
  });

  it('a message nested 4 113 deep is refused at parse (400), not consumed: the seq is still free and the session works', async () => {
    const got: unknown[] = [];
    const errors: unknown[] = [];
    const server = new BidiServer({
      sweepInterval: 0,
      onMessage: async (s, data) => {
        got.push(data);
        await s.send(data); // would throw RangeError at this depth
        s.state = { last: data }; // and the state save too
      },
      onError: (err) => void errors.push(err),
    });
    const sid = await openSid(server);
    const deep = await call(server, 'POST', '/session/send', { sid, body: `{"msgs":[[1,${nested(4_113)}]]}` });
    expect([deep.status, deep.body.error.code]).toEqual([400, 'BAD_REQUEST']);
    const deepAmongOthers = await call(server, 'POST', '/session/send', { sid, body: `{"msgs":[[1,"ok"],[2,${nested(65)}]]}` });
    expect(deepAmongOthers.body.error.code).toBe('BAD_REQUEST'); // the whole request: nothing applied
    const edge = await call(server, 'POST', '/session/send', { sid, body: `{"msgs":[[1,${nested(64)}]],"ack":0}` });
    expect(edge).toMatchObject({ status: 200, body: { ack: 1 } });
    expect(got).toHaveLength(1);
    expect(errors).toEqual([]);
    const w = await call(server, 'GET', '/session/watch', { sid, query: { ack: 0, wait: 0 } });
    expect(w.body.msgs).toHaveLength(1);
    await server.dispose();
  });

  it('invalid UTF-8 → 400 BAD_REQUEST over Express (open and send) and the Fetch handler; the handler never sees U+FFFD', async () => {
    const got: unknown[] = [];
    const app = express();
    app.use(bidiWeb({ sweepInterval: 0, onOpen: (_s, r) => void got.push(r.meta), onMessage: (_s, d) => void got.push(d) }));
    const { url, close } = await listen(app);
    try {
      const bad = (prefix: string, suffix: string) => Buffer.concat([Buffer.from(prefix), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from(suffix)]);
      const open = await postBytes(`${url}/session`, bad('{"v":1,"meta":"', '"}'));
      expect([open.status, open.body.error.code]).toEqual([400, 'BAD_REQUEST']);
      const opened = await postBytes(`${url}/session`, Buffer.from('{"v":1,"meta":"é ok"}'));
      expect(opened.status).toBe(201);
      const send = await postBytes(`${url}/session/send`, bad('{"msgs":[[1,"', '"]]}'), { 'bidi-sid': opened.body.sid });
      expect([send.status, send.body.error.code]).toEqual([400, 'BAD_REQUEST']);
      // A lone surrogate half encoded as UTF-8 (CESU) is invalid too.
      const cesu = await postBytes(`${url}/session/send`, Buffer.concat([Buffer.from('{"msgs":[[1,"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"]]}')]), { 'bidi-sid': opened.body.sid });
      expect(cesu.status).toBe(400);
      expect(got).toEqual(['é ok']);
    } finally {
      await close();
    }
    const fetchHandler = toFetchHandler({ sweepInterval: 0 });
    const res = await fetchHandler(new Request('http://localhost/session', { method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.from([0x7b, 0xff, 0x7d]) }));
    expect(res.status).toBe(400);
    expect(((await res.json()) as any).error.code).toBe('BAD_REQUEST');
  });

  it('errors a client can cause are logged once per kind per minute, with a count of the rest (no log flood)', async () => {
    const lines: string[] = [];
    const errors = jest.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
    let now = 1_000_000;
    const clock = jest.spyOn(Date, 'now').mockImplementation(() => now);
    // An app whose onOpen trips over some meta: every such open is a 500 and a report.
    const server = new BidiServer({ sweepInterval: 0, onOpen: (_s, req) => void (req.meta as any).name.length });
    try {
      for (let i = 0; i < 200; i++) expect((await call(server, 'POST', '/session', { body: { v: 1 } })).status).toBe(500);
      // One line: the hook's (the request's 500 it becomes is the same error, not reported again).
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^\[bidiweb\] open error: TypeError/);
      now += 61_000;
      expect((await call(server, 'POST', '/session', { body: { v: 1 } })).status).toBe(500);
      expect(lines).toHaveLength(2);
      expect(lines[1]).toMatch(/^\[bidiweb\] open error \(and 199 more like it in the last 61 s, not logged\): TypeError/);
      // Many different kinds at once share one line past 100 kinds: the memory of kinds stays bounded.
      const varied = new BidiServer({ sweepInterval: 0, onOpen: (_s, req) => { throw new Error(`bad ${(req.meta as any).n}`); } });
      lines.length = 0;
      for (let n = 0; n < 300; n++) await call(varied, 'POST', '/session', { body: { v: 1, meta: { n } } });
      expect(lines.length).toBe(101);
      await varied.dispose();
    } finally {
      errors.mockRestore();
      clock.mockRestore();
      await server.dispose();
    }
  });
});

describe('fair admission: an open rate limit per client key', () => {
  const from = (address: string, body = '{"v":1}'): BidiRequest => ({ ...bidiRequest('POST', '/session', { body }), remoteAddress: address });

  it('one address flooding opens gets 429 TOO_MANY_OPENS with Retry-After; another address still opens; loopback is not limited', async () => {
    const store = new MemoryStore();
    const server = new BidiServer({ store, sweepInterval: 0 });
    const statuses: number[] = [];
    let refused: any;
    for (let i = 0; i < 1_000; i++) {
      const res = (await server.handle(from('203.0.113.5')))!;
      statuses.push(res.status);
      if (res.status === 429) refused ??= res;
    }
    expect(statuses.filter((s) => s === 201)).toHaveLength(30); // the default: 30 per 10 s
    expect(statuses.filter((s) => s === 429)).toHaveLength(970);
    expect(JSON.parse(refused.body).error.code).toBe('TOO_MANY_OPENS');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(refused.headers['retry-after'])).toBeLessThanOrEqual(10);
    // Someone else is not locked out.
    for (let i = 0; i < 20; i++) expect((await server.handle(from('198.51.100.7')))!.status).toBe(201);
    for (let i = 0; i < 50; i++) expect((await server.handle(from('127.0.0.1')))!.status).toBe(201);
    expect(store.size).toBe(100);
    await server.dispose();
  });

  it('behind a proxy: the key comes from the header the app names; the flooder is limited, a second client opens all its sessions (over HTTP)', async () => {
    const app = express();
    app.use(bidiWeb({ sweepInterval: 0, openLimit: { opens: 5, perSeconds: 60 }, clientKey: (req) => req.headers.get('x-real-ip') }));
    const { url, close } = await listen(app);
    try {
      const open = async (ip: string) => {
        const res = await fetch(`${url}/session`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-real-ip': ip }, body: '{"v":1}' });
        return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as any };
      };
      const flood = await Promise.all(Array.from({ length: 200 }, () => open('192.0.2.1')));
      expect(flood.filter((r) => r.status === 201)).toHaveLength(5);
      const r429 = flood.find((r) => r.status === 429)!;
      expect([r429.body.error.code, Number(r429.retryAfter) > 0]).toEqual(['TOO_MANY_OPENS', true]);
      const second = await Promise.all(Array.from({ length: 5 }, () => open('192.0.2.2')));
      expect(second.map((r) => r.status)).toEqual([201, 201, 201, 201, 201]);
    } finally {
      await close();
    }
  });

  it('openLimit: false, clientKey: false, and an app-supplied limiter', async () => {
    const off = new BidiServer({ sweepInterval: 0, openLimit: false });
    const noKey = new BidiServer({ sweepInterval: 0, clientKey: false });
    for (let i = 0; i < 40; i++) {
      expect((await off.handle(from('203.0.113.5')))!.status).toBe(201);
      expect((await noKey.handle(from('203.0.113.5')))!.status).toBe(201);
    }
    const keys: string[] = [];
    const custom = new BidiServer({
      sweepInterval: 0,
      openLimiter: openLimiterFrom({ consume: async (key) => { keys.push(key); if (keys.length > 2) throw { msBeforeNext: 2_500 }; } }),
    });
    expect((await custom.handle(from('203.0.113.9')))!.status).toBe(201);
    expect((await custom.handle(from('203.0.113.9')))!.status).toBe(201);
    const r = (await custom.handle(from('203.0.113.9')))!;
    expect([r.status, r.headers['retry-after']]).toEqual([429, '3']);
    expect(keys).toEqual(['203.0.113.9', '203.0.113.9', '203.0.113.9']);
    expect(() => new BidiServer({ sweepInterval: 0, openLimit: { opens: 0, perSeconds: 1 } })).toThrow(/openLimit/);
    for (const s of [off, noKey, custom]) await s.dispose();
  });

  describe('with Redis: the budget is shared by every server object (instances, serverless invocations)', () => {
    let redis: RedisProcess;
    let conns: Redis[] = [];
    beforeAll(async () => {
      redis = await startRedis();
    });
    afterAll(async () => {
      for (const c of conns) c.disconnect();
      await redis?.stop();
    });

    it('two servers on two connections: 30 opens in all for one address, not 30 each; another address still opens', async () => {
      conns = [new Redis({ port: redis.port, host: '127.0.0.1' }), new Redis({ port: redis.port, host: '127.0.0.1' })];
      const servers = conns.map((redisConn) => new BidiServer({ store: new RedisStore({ redis: redisConn, prefix: 'rl:' }), sweepInterval: 0 }));
      const statuses = await Promise.all(Array.from({ length: 100 }, (_, i) => servers[i % 2]!.handle(from('203.0.113.77')).then((r) => r!.status)));
      expect(statuses.filter((s) => s === 201)).toHaveLength(30);
      expect(statuses.filter((s) => s === 429)).toHaveLength(70);
      expect((await servers[1]!.handle(from('203.0.113.78')))!.status).toBe(201);
      // The counter is one Redis key per client key, expiring with its window.
      expect(await conns[0]!.pttl('rl:open:203.0.113.77')).toBeGreaterThan(0);
      for (const s of servers) await s.dispose();
    });
  });
});

describe('the byte budget of a watch, seen by the reference client', () => {
  it.each([false, true])('a 3.8 MB backlog comes through 256 KiB watches in order, each message once (stream: %s)', async (stream) => {
    const app = express();
    const mw = bidiWeb({ sweepInterval: 0, wait: 1_000 });
    app.use(mw);
    const { url, close } = await listen(app);
    const s = open(`${url}/session`, { stream });
    try {
      await new Promise<void>((r) => s.on('open', () => r()));
      const got: number[] = [];
      const all = new Promise<void>((r) => s.on('message', (m: any) => void (got.push(m.i), got.length === 250 && r())));
      for (let i = 1; i <= 250; i++) await mw.hub.send(s.id!, { i, pad: 'p'.repeat(15_000) });
      await all;
      expect(got).toEqual(Array.from({ length: 250 }, (_, i) => i + 1));
    } finally {
      await s.close();
      await close();
    }
  });
});
