/**
 * The streaming watch (`GET {base}/watch?...&stream=1`, docs/PROTOCOL.md) and
 * what it rests on (`read` with `after`, docs/STORE.md), over the memory store
 * and Redis, through the Node bridge, the Fetch handler and the client.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Redis from 'ioredis';
import { open, type BidiClientSession } from '../../src/client';
import { BidiServer, MemoryStore, toFetchHandler, type BidiOptions, type Store } from '../../src/core';
import type { BidiRequest } from '../../src/core/http';
import { newSessionId, newToken } from '../../src/core/util';
import { createNodeHandler } from '../../src/node';
import { RedisStore } from '../../src/redis';
import { faultyFetch } from '../helpers/faulty-fetch';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

jest.setTimeout(30_000);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Served {
  url: string;
  server: BidiServer<any, any>;
  store: Store;
  close(): Promise<void>;
}

async function serve(options: BidiOptions<any, any> = {}): Promise<Served> {
  const store = options.store ?? new MemoryStore();
  const server = new BidiServer({ sweepInterval: 0, ...options, store });
  const handle = createNodeHandler(server);
  const httpServer = http.createServer((req, res) => void handle(req, res));
  await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', () => r()));
  const port = (httpServer.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/session`,
    server,
    store,
    close: async () => {
      httpServer.closeAllConnections();
      await new Promise<void>((r) => httpServer.close(() => r()));
      await server.dispose();
    },
  };
}

async function openSid(url: string): Promise<string> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"v":1}' });
  return ((await res.json()) as { sid: string }).sid;
}

interface Frame {
  at: number;
  body: any;
}

/**
 * A streaming watch read line by line over node:http; `done` resolves when
 * the response ends. Frames (JSON lines) go to `frames`, heartbeats (empty
 * lines) to `heartbeats` (their times); anything else fails the parse.
 */
function streamWatch(url: string, sid: string, ack: number, wait: number, extra = '&stream=1', headers: Record<string, string> = {}) {
  const frames: Frame[] = [];
  const heartbeats: number[] = [];
  let status = 0;
  let responseHeaders: http.IncomingHttpHeaders = {};
  let req!: http.ClientRequest;
  const line = (text: string) => {
    if (text === '') heartbeats.push(Date.now());
    else frames.push({ at: Date.now(), body: JSON.parse(text) });
  };
  const done = new Promise<void>((resolve, reject) => {
    req = http.get(`${url}/watch?ack=${ack}&wait=${wait}${extra}`, { headers: { 'bidi-sid': sid, ...headers } }, (res) => {
      status = res.statusCode ?? 0;
      responseHeaders = res.headers;
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) !== -1) {
          line(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
        }
      });
      res.on('end', () => {
        if (buf) line(buf);
        resolve();
      });
      res.on('error', () => resolve()); // aborted by the test
    });
    req.on('error', (err) => (req.destroyed ? resolve() : reject(err)));
  });
  return {
    frames,
    heartbeats,
    done,
    get status() {
      return status;
    },
    get contentType() {
      return String(responseHeaders['content-type']);
    },
    get headers() {
      return responseHeaders;
    },
    abort: () => req.destroy(),
  };
}

async function until(cond: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(5);
  }
}

let redisServer: RedisProcess;
const redisConnections: Redis[] = [];

beforeAll(async () => {
  redisServer = await startRedis();
});

afterAll(async () => {
  for (const c of redisConnections) c.disconnect();
  await redisServer?.stop();
});

function redisStore(): RedisStore {
  const redis = new Redis({ host: '127.0.0.1', port: redisServer.port });
  redisConnections.push(redis);
  return new RedisStore({ redis, prefix: `st${newToken()}:` });
}

const stores: Array<[string, () => Store]> = [
  ['memory', () => new MemoryStore()],
  ['redis', () => redisStore()],
];

describe.each(stores)('streaming watch over the %s store', (_name, makeStore) => {
  let s: Served;
  let store: Store;
  beforeEach(async () => {
    store = makeStore();
    // Heartbeats every 50 ms: every ending below must hold with heartbeats between the frames.
    s = await serve({ store, limits: { maxMessagesPerResponse: 50 }, heartbeatMs: 50 });
  });
  afterEach(async () => {
    await s.close();
    await store.dispose?.();
  });

  it('writes each new batch as a frame on the open response, as it comes', async () => {
    const sid = await openSid(s.url);
    const w = streamWatch(s.url, sid, 0, 3_000);
    await sleep(100);
    expect(w.status).toBe(200);
    expect(w.contentType).toBe('application/x-ndjson; charset=utf-8');
    for (let i = 1; i <= 5; i++) {
      const sent = Date.now();
      await s.server.hub.send(sid, { i });
      await until(() => w.frames.length >= i);
      expect(w.frames[i - 1]!.at - sent).toBeLessThan(1_000);
    }
    const seqs = w.frames.flatMap((f) => f.body.msgs.map((m: [number, unknown]) => m[0]));
    expect(seqs).toEqual([1, 2, 3, 4, 5]);
    expect(w.frames[4]!.body).toEqual({ msgs: [[5, { i: 5 }]], ack: 0 });
    w.abort();
  });

  it('writes pushed messages from their wake-up without reading the log again, and reads when a wake-up leaves a gap', async () => {
    const inner = store;
    let reads = 0;
    let dropNext = false;
    // The same store, counting reads and able to lose one message wake-up (as a subscription that was down would).
    const counted: Store = Object.create(inner, {
      read: { value: (sid: string, input: Parameters<Store['read']>[1]) => (reads++, inner.read(sid, input)) },
      subscribe: {
        value: (sid: string, listener: Parameters<Store['subscribe']>[1]) =>
          inner.subscribe(sid, (e) => {
            if (e.type === 'message' && dropNext) dropNext = false;
            else listener(e);
          }),
      },
    });
    const t = await serve({ store: counted, heartbeatMs: 0 });
    try {
      const sid = await openSid(t.url);
      const w = streamWatch(t.url, sid, 0, 5_000);
      await until(() => reads === 1);
      for (let i = 1; i <= 5; i++) {
        await t.server.hub.send(sid, { i });
        await until(() => w.frames.length >= i);
      }
      expect(reads).toBe(1);
      // A lost wake-up: the next one's messages do not follow what the stream sent, so it reads.
      dropNext = true;
      await t.server.hub.send(sid, 'lost');
      await sleep(50);
      expect(w.frames).toHaveLength(5);
      await t.server.hub.send(sid, 'next');
      await until(() => w.frames.length >= 6);
      expect(w.frames[5]!.body.msgs).toEqual([
        [6, 'lost'],
        [7, 'next'],
      ]);
      expect(reads).toBe(2);
      // A large message (a store may wake without it): it still comes, once, in order.
      const big = 'x'.repeat(40_000);
      await t.server.hub.send(sid, big);
      await t.server.hub.send(sid, 'after');
      await until(() => w.frames.flatMap((f) => f.body.msgs).length >= 9);
      expect(w.frames.flatMap((f) => f.body.msgs.map((m: [number, unknown]) => m[0]))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
      w.abort();
    } finally {
      await t.close();
    }
  });

  it('ends when the wait ends, with no frame when nothing came (heartbeats only)', async () => {
    const sid = await openSid(s.url);
    const t = Date.now();
    const w = streamWatch(s.url, sid, 0, 300);
    await w.done;
    expect(Date.now() - t).toBeGreaterThanOrEqual(250);
    expect(w.frames).toEqual([]);
    expect(w.heartbeats.length).toBeGreaterThanOrEqual(2);
  });

  it('sends what is already there as the first frame, then streams on', async () => {
    const sid = await openSid(s.url);
    await s.server.hub.send(sid, 'a');
    await s.server.hub.send(sid, 'b');
    const w = streamWatch(s.url, sid, 0, 2_000);
    await until(() => w.frames.length === 1);
    expect(w.frames[0]!.body).toEqual({ msgs: [[1, 'a'], [2, 'b']], ack: 0 });
    await s.server.hub.send(sid, 'c');
    await until(() => w.frames.length === 2);
    expect(w.frames[1]!.body.msgs).toEqual([[3, 'c']]);
    w.abort();
  });

  it('ends after streaming maxMessagesPerResponse messages, so that the next watch acks them', async () => {
    const sid = await openSid(s.url);
    const w = streamWatch(s.url, sid, 0, 5_000);
    await sleep(50);
    for (let i = 0; i < 60; i++) await s.server.hub.send(sid, i);
    await w.done;
    const seqs = w.frames.flatMap((f) => f.body.msgs.map((m: [number, unknown]) => m[0]));
    expect(seqs.length).toBeGreaterThanOrEqual(50);
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    // The next watch acks and gets the rest.
    const next = streamWatch(s.url, sid, seqs.length, 5_000);
    await until(() => next.frames.length > 0);
    expect(next.frames[0]!.body.msgs[0][0]).toBe(seqs.length + 1);
    next.abort();
  });

  it('ends with the close marker after the messages sent before the close', async () => {
    const sid = await openSid(s.url);
    const w = streamWatch(s.url, sid, 0, 5_000);
    await sleep(50);
    await s.server.hub.send(sid, 'last words');
    await s.server.hub.close(sid, 'bye');
    await w.done;
    const all = w.frames.map((f) => f.body);
    expect(all.flatMap((b) => b.msgs)).toEqual([[1, 'last words']]);
    expect(all[all.length - 1].close).toEqual({ seq: 2, reason: 'bye' });
  });

  it('a newer watch supersedes the stream: it gets a superseded frame and ends', async () => {
    const sid = await openSid(s.url);
    const first = streamWatch(s.url, sid, 0, 5_000);
    await sleep(100);
    const second = streamWatch(s.url, sid, 0, 5_000);
    await first.done;
    expect(first.frames.map((f) => f.body)).toEqual([{ msgs: [], ack: 0, superseded: true }]);
    await s.server.hub.send(sid, 'x');
    await until(() => second.frames.length === 1);
    expect(second.frames[0]!.body.msgs).toEqual([[1, 'x']]);
    second.abort();
  });

  it('answers errors before the stream starts as plain 4xx JSON', async () => {
    const w = streamWatch(s.url, newSessionId(), 0, 1_000);
    await w.done;
    expect(w.status).toBe(404);
    expect(w.frames[0]!.body.error.code).toBe('UNKNOWN_SESSION');
    const sid = await openSid(s.url);
    const bad = streamWatch(s.url, sid, 5, 1_000);
    await bad.done;
    expect(bad.status).toBe(400);
    expect(bad.frames[0]!.body.error.code).toBe('INVALID_ACK');
  });

  it('releases the subscription when the client goes away', async () => {
    const sid = await openSid(s.url);
    const w = streamWatch(s.url, sid, 0, 10_000);
    await sleep(100);
    w.abort();
    await sleep(100);
    if (store instanceof MemoryStore) expect((store as unknown as { listeners: Map<string, unknown> }).listeners.size).toBe(0);
    // The session still works.
    await s.server.hub.send(sid, 'after');
    const again = streamWatch(s.url, sid, 0, 2_000);
    await until(() => again.frames.length === 1);
    again.abort();
  });

  it('without stream=1 the answer is the plain one, unchanged', async () => {
    const sid = await openSid(s.url);
    await s.server.hub.send(sid, { a: 1 });
    const res = await fetch(`${s.url}/watch?ack=0&wait=1000`, { headers: { 'bidi-sid': sid } });
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(await res.text()).toBe('{"msgs":[[1,{"a":1}]],"ack":0}');
    const other = await fetch(`${s.url}/watch?ack=1&wait=0&stream=0`, { headers: { 'bidi-sid': sid } });
    expect(other.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(await other.text()).toBe('{"msgs":[],"ack":0}');
  });
});

describe('streaming watch: the session vanishes mid-stream', () => {
  it('ends the stream with an error frame, as a 404 would be', async () => {
    const store = redisStore();
    const s = await serve({ store });
    const sid = await openSid(s.url);
    const w = streamWatch(s.url, sid, 0, 5_000);
    await sleep(100);
    const redis = redisConnections[redisConnections.length - 1]!;
    const prefix = (store as unknown as { keys: { prefix: string } }).keys.prefix;
    await redis.del(`${prefix}{${sid}}:s`);
    await redis.publish(`${prefix}{${sid}}:ev`, 'm');
    await w.done;
    expect(w.frames.map((f) => f.body.error?.code)).toEqual(['UNKNOWN_SESSION']);
    await s.close();
    await store.dispose();
  });
});

describe('streaming watch: heartbeats', () => {
  const served: Served[] = [];
  afterEach(async () => {
    for (const s of served.splice(0)) await s.close();
  });
  async function serveWith(options: BidiOptions<any, any>): Promise<Served> {
    const s = await serve(options);
    served.push(s);
    return s;
  }

  it('an idle stream writes an empty line every heartbeatMs, announced in Bidi-Heartbeat, and still ends at its wait', async () => {
    const s = await serveWith({ heartbeatMs: 100 });
    const sid = await openSid(s.url);
    const t = Date.now();
    const w = streamWatch(s.url, sid, 0, 1_000);
    await sleep(450);
    await s.server.hub.send(sid, 'between');
    await w.done;
    const took = Date.now() - t;
    expect(w.headers['bidi-heartbeat']).toBe('100');
    expect(took).toBeGreaterThanOrEqual(950);
    expect(took).toBeLessThan(2_000);
    expect(w.frames.map((f) => f.body)).toEqual([{ msgs: [[1, 'between']], ack: 0 }]);
    // About one per 100 ms of silence (9 in 1 s, minus the frame), never faster than the interval.
    expect(w.heartbeats.length).toBeGreaterThanOrEqual(4);
    expect(w.heartbeats.length).toBeLessThanOrEqual(10);
    const gaps = w.heartbeats.slice(1).map((at, i) => at - w.heartbeats[i]!);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(70);
  });

  it('a heartbeat is due heartbeatMs after the last chunk, whatever it was: a frame restarts the interval', async () => {
    const s = await serveWith({ heartbeatMs: 250 });
    const sid = await openSid(s.url);
    const w = streamWatch(s.url, sid, 0, 3_000);
    // A message every 25 ms for 500 ms: the stream is never idle for 250 ms, so no heartbeat.
    for (let i = 0; i < 20; i++) {
      await s.server.hub.send(sid, i);
      await sleep(25);
    }
    const firstFrameAt = w.frames[0]!.at;
    const lastFrameAt = w.frames[w.frames.length - 1]!.at;
    expect(w.heartbeats.filter((at) => at > firstFrameAt && at <= lastFrameAt)).toEqual([]);
    await until(() => w.heartbeats.length > 0);
    w.abort();
  });

  it('a stream with nothing to send yet opens with a heartbeat: its first byte comes at once, not after heartbeatMs', async () => {
    const s = await serveWith({ heartbeatMs: 2_000 });
    const sid = await openSid(s.url);
    const t = Date.now();
    const w = streamWatch(s.url, sid, 0, 3_000);
    await until(() => w.heartbeats.length > 0);
    expect(w.heartbeats[0]! - t).toBeLessThan(1_500);
    expect(w.frames).toEqual([]);
    w.abort();
  });

  it('a plain watch (no stream=1) carries no heartbeat and no Bidi-Heartbeat header', async () => {
    const s = await serveWith({ heartbeatMs: 50 });
    const sid = await openSid(s.url);
    const res = await fetch(`${s.url}/watch?ack=0&wait=500`, { headers: { 'bidi-sid': sid } });
    expect(res.headers.get('bidi-heartbeat')).toBeNull();
    expect(await res.text()).toBe('{"msgs":[],"ack":0}');
  });

  it('heartbeatMs: 0 turns them off (no header, no empty line)', async () => {
    const s = await serveWith({ heartbeatMs: 0 });
    const sid = await openSid(s.url);
    const w = streamWatch(s.url, sid, 0, 500);
    await w.done;
    expect(w.headers['bidi-heartbeat']).toBeUndefined();
    expect(w.heartbeats).toEqual([]);
  });

  it('the default is 5 000 ms; heartbeatMs is validated', async () => {
    const s = await serveWith({});
    const sid = await openSid(s.url);
    const w = streamWatch(s.url, sid, 0, 100);
    await w.done;
    expect(w.headers['bidi-heartbeat']).toBe('5000');
    for (const bad of [-1, 1.5, Number.NaN, 55_001]) {
      expect(() => new BidiServer({ heartbeatMs: bad, sweepInterval: 0 })).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }));
    }
  });

  it('a cross-origin page may read Bidi-Heartbeat (Access-Control-Expose-Headers)', async () => {
    const s = await serveWith({ heartbeatMs: 100, cors: { origins: ['https://app.example'] } });
    const sid = await openSid(s.url);
    const w = streamWatch(s.url, sid, 0, 100, '&stream=1', { origin: 'https://app.example' });
    await w.done;
    expect(w.headers['access-control-allow-origin']).toBe('https://app.example');
    expect(w.headers['access-control-expose-headers']).toBe('bidi-heartbeat');
  });

  it('leaves no timer behind: a stream that ended, was superseded or was dropped holds none', async () => {
    const s = await serveWith({ heartbeatMs: 20 });
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const sid = await openSid(s.url);
    await sleep(50);
    const before = timers();
    const ended = streamWatch(s.url, sid, 0, 200);
    await ended.done;
    const superseded = streamWatch(s.url, sid, 0, 5_000);
    await sleep(100);
    const dropped = streamWatch(s.url, sid, 0, 5_000);
    await superseded.done;
    await sleep(100);
    dropped.abort();
    await sleep(100);
    expect(ended.heartbeats.length).toBeGreaterThan(0);
    expect(superseded.frames.map((f) => f.body.superseded)).toEqual([true]);
    expect(dropped.heartbeats.length).toBeGreaterThan(0);
    // The test's own clients keep timers for their idle keep-alive connections, which come and go (Node's
    // http agent: 5 s, undici: 4 s): wait past those for them to settle. A stream's timer left behind
    // (a 20 ms heartbeat) would keep the count above `before` however long this waits.
    for (let until = Date.now() + 8_000; timers() > before && Date.now() < until; ) await sleep(50);
    expect(timers()).toBeLessThanOrEqual(before);
  });

  it('the Fetch handler writes heartbeats too', async () => {
    const server = new BidiServer({ sweepInterval: 0, heartbeatMs: 50 });
    const handler = toFetchHandler(server);
    const opened = await handler(new Request('http://x/session', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"v":1}' }));
    const { sid } = (await opened.json()) as { sid: string };
    const res = await handler(new Request('http://x/session/watch?ack=0&wait=3000&stream=1', { headers: { 'bidi-sid': sid } }));
    expect(res.headers.get('bidi-heartbeat')).toBe('50');
    const reader = res.body!.getReader();
    const decode = async () => new TextDecoder().decode((await reader.read()).value);
    expect(await decode()).toBe('\n');
    await server.hub.send(sid, 'one');
    expect(await decode()).toBe('{"msgs":[[1,"one"]],"ack":0}\n');
    expect(await decode()).toBe('\n');
    await reader.cancel();
    await server.dispose();
  });
});

describe('streaming watch: adapters', () => {
  it('an adapter that cannot stream gets the plain answer', async () => {
    const server = new BidiServer({ sweepInterval: 0 });
    const sid = await (async () => {
      const r = await server.handle(fake('POST', '/session', '{"v":1}'));
      return JSON.parse(r!.body).sid as string;
    })();
    await server.hub.send(sid, 'x');
    const r = await server.handle(fake('GET', '/session/watch', '', 'ack=0&wait=0&stream=1', sid));
    expect(r!.stream).toBeUndefined();
    expect(r!.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(r!.body).toBe('{"msgs":[[1,"x"]],"ack":0}');
    await server.dispose();
  });

  it('the Fetch handler streams frames in a ReadableStream body', async () => {
    const server = new BidiServer({ sweepInterval: 0 });
    const handler = toFetchHandler(server);
    const opened = await handler(new Request('http://x/session', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"v":1}' }));
    const { sid } = (await opened.json()) as { sid: string };
    const ctl = new AbortController();
    const res = await handler(new Request('http://x/session/watch?ack=0&wait=3000&stream=1', { headers: { 'bidi-sid': sid }, signal: ctl.signal }));
    expect(res.headers.get('content-type')).toBe('application/x-ndjson; charset=utf-8');
    const reader = res.body!.getReader();
    // Nothing to send yet: the stream opens with a heartbeat.
    expect(new TextDecoder().decode((await reader.read()).value)).toBe('\n');
    await server.hub.send(sid, 'one');
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toBe('{"msgs":[[1,"one"]],"ack":0}\n');
    await server.hub.send(sid, 'two');
    const second = await reader.read();
    expect(new TextDecoder().decode(second.value)).toBe('{"msgs":[[2,"two"]],"ack":0}\n');
    await reader.cancel();
    ctl.abort();
    await server.dispose();
  });
});

function fake(method: string, path: string, body: string, query = '', sid?: string): BidiRequest {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(sid ? { 'bidi-sid': sid } : {}) };
  return {
    method,
    path,
    query: new URLSearchParams(query),
    headers: { get: (n: string) => headers[n.toLowerCase()] ?? null },
    text: async () => body,
  };
}

describe.each(stores)('store read with `after` (%s)', (_name, makeStore) => {
  it('returns only the messages above `after`, and trims by `ack` only', async () => {
    const store = makeStore();
    const sid = newSessionId();
    await store.create({ sid, userJson: 'null', stateJson: '{}', initial: ['"a"', '"b"', '"c"', '"d"'], idleMs: 60_000, maxSessions: 1e9 });
    const base = { watchToken: 'w', claim: true, maxMessages: 10 };
    expect(await store.read(sid, { ...base, ack: 1, after: 2 })).toMatchObject({ status: 'ok', msgs: [{ seq: 3, json: '"c"' }, { seq: 4, json: '"d"' }] });
    // `after` trimmed nothing: message 2 is still there.
    expect(await store.read(sid, { ...base, claim: false, ack: 1 })).toMatchObject({ msgs: [{ seq: 2 }, { seq: 3 }, { seq: 4 }] });
    // `after` below the ack, or past the end.
    expect(await store.read(sid, { ...base, claim: false, ack: 2, after: 0 })).toMatchObject({ msgs: [{ seq: 3 }, { seq: 4 }] });
    expect(await store.read(sid, { ...base, claim: false, ack: 2, after: 4 })).toMatchObject({ status: 'ok', msgs: [] });
    expect(await store.read(sid, { ...base, claim: false, ack: 2, after: 3, maxMessages: 1 })).toMatchObject({ msgs: [{ seq: 4, json: '"d"' }] });
    await store.dispose?.();
  });
});

describe.each(stores)('client with stream: true (%s)', (_name, makeStore) => {
  let store: Store;
  const servers: Served[] = [];
  beforeEach(async () => {
    store = makeStore();
    // Two server objects on one store: requests alternate between them (round robin, no stickiness).
    for (let i = 0; i < 2; i++) {
      servers.push(
        await serve({
          store,
          wait: 1_000,
          limits: { maxMessagesPerResponse: 20 },
          async onMessage(session, data) {
            await session.send({ echo: data });
          },
        }),
      );
    }
  });
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
    await store.dispose?.();
  });

  function roundRobin(): typeof fetch {
    let next = 0;
    return ((input: string, init: RequestInit) => {
      const target = servers[next++ % servers.length]!.url;
      return fetch(String(input).replace(servers[0]!.url, target), init);
    }) as typeof fetch;
  }

  it('delivers every pushed and echoed message once, in order, across streams and instances', async () => {
    const session: BidiClientSession = open(servers[0]!.url, { stream: true, fetch: roundRobin() });
    const got: Array<{ data: any; seq: number }> = [];
    session.on('message', (data, { seq }) => got.push({ data, seq }));
    await new Promise<void>((r) => session.once('open', () => r()));
    const sid = session.id!;
    const pushes = (async () => {
      for (let i = 0; i < 150; i++) {
        await servers[i % 2]!.server.hub.send(sid, { push: i }, { whenFull: 'wait' });
        if (i % 10 === 0) await sleep(5);
      }
    })();
    await Promise.all(Array.from({ length: 30 }, (_, i) => session.send(i)));
    await pushes;
    await until(() => got.length >= 180, 15_000);
    expect(got.map((g) => g.seq)).toEqual(Array.from({ length: 180 }, (_, i) => i + 1));
    expect(got.filter((g) => 'push' in g.data).map((g) => g.data.push)).toEqual(Array.from({ length: 150 }, (_, i) => i));
    expect(got.filter((g) => 'echo' in g.data).map((g) => g.data.echo)).toEqual(Array.from({ length: 30 }, (_, i) => i));
    await session.close();
    expect(session.closeEvent?.code).toBe('CLIENT');
  });

  it('ends the session with the server close reason after the last message', async () => {
    const session = open(servers[0]!.url, { stream: true, fetch: roundRobin() });
    const got: unknown[] = [];
    session.on('message', (d) => got.push(d));
    await new Promise<void>((r) => session.once('open', () => r()));
    await servers[1]!.server.hub.send(session.id!, 'a');
    await servers[0]!.server.hub.close(session.id!, 'maintenance');
    await until(() => session.state === 'closed');
    expect(got).toEqual(['a']);
    expect(session.closeEvent).toMatchObject({ code: 'SERVER', reason: 'maintenance' });
  });

  it('stays exactly-once and in order over a network that drops, duplicates and delays requests', async () => {
    const bad = faultyFetch(7, { dropRequest: 0.1, dropResponse: 0.1, duplicate: 0.1, maxDelayMs: 20 });
    const session = open(servers[0]!.url, {
      stream: true,
      fetch: bad.fetch,
      retry: { initialDelayMs: 5, maxDelayMs: 50 },
      resendAfterMs: 100,
    });
    const got: Array<{ data: any; seq: number }> = [];
    session.on('message', (data, { seq }) => got.push({ data, seq }));
    session.on('error', () => {});
    await new Promise<void>((r) => session.once('open', () => r()));
    const pushes = (async () => {
      for (let i = 0; i < 100; i++) {
        await servers[i % 2]!.server.hub.send(session.id!, { push: i }, { whenFull: 'wait' });
        await sleep(2);
      }
    })();
    for (let i = 0; i < 40; i++) void session.send(i);
    await pushes;
    await until(() => got.length >= 140, 20_000);
    bad.heal();
    expect(got.map((g) => g.seq)).toEqual(Array.from({ length: 140 }, (_, i) => i + 1));
    expect(got.filter((g) => 'push' in g.data).map((g) => g.data.push)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(got.filter((g) => 'echo' in g.data).map((g) => g.data.echo)).toEqual(Array.from({ length: 40 }, (_, i) => i));
    await session.close();
  });

  it('backs off when streams keep ending at once without a frame (no spinning)', async () => {
    let watches = 0;
    const cutting = ((input: string, init: RequestInit) => {
      if (String(input).includes('/watch')) {
        watches++;
        return Promise.resolve(new Response('', { status: 200, headers: { 'content-type': 'application/x-ndjson; charset=utf-8' } }));
      }
      return fetch(input, init);
    }) as typeof fetch;
    const session = open(servers[0]!.url, { stream: true, fetch: cutting, wait: 1_000, retry: { initialDelayMs: 100, maxDelayMs: 400 } });
    const retries: string[] = [];
    session.on('retry', ({ op }) => retries.push(op));
    session.on('error', () => {});
    await new Promise<void>((r) => session.once('open', () => r()));
    await sleep(600);
    expect(watches).toBeLessThan(15);
    expect(retries.filter((op) => op === 'watch').length).toBeGreaterThan(0);
    await session.close();
  });

  it('works with a fetch that has no readable body (frames arrive when the response ends)', async () => {
    const textOnly = ((input: string, init: RequestInit) =>
      fetch(input, init).then((r) => ({ status: r.status, headers: r.headers, text: () => r.text() }))) as unknown as typeof fetch;
    const session = open(servers[0]!.url, { stream: true, fetch: textOnly, wait: 300 });
    const got: unknown[] = [];
    session.on('message', (d) => got.push(d));
    await new Promise<void>((r) => session.once('open', () => r()));
    for (let i = 0; i < 5; i++) await servers[0]!.server.hub.send(session.id!, i);
    await until(() => got.length === 5, 5_000);
    expect(got).toEqual([0, 1, 2, 3, 4]);
    await session.close();
  });

  it('reports a session the store lost as SESSION_LOST', async () => {
    const session = open(servers[0]!.url, { stream: true, fetch: roundRobin() });
    await new Promise<void>((r) => session.once('open', () => r()));
    // Make the store forget the session: a closed session whose tombstone is gone.
    const token = newToken();
    await store.close(session.id!, { reason: 'gone', lease: { token, ms: 1_000 } });
    await store.finishClose(session.id!, token);
    await until(() => session.state === 'closed', 10_000);
    expect(['SERVER', 'SESSION_LOST']).toContain(session.closeEvent?.code);
  });
});
