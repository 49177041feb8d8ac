/**
 * A watch must never sleep through its wake-up (issue 11): RedisStore's
 * subscribe() resolves only once Redis has confirmed the subscription on a
 * ready connection, and rejects — never resolves as if subscribed — when it
 * cannot. A TCP relay holds the pub/sub connection in its connecting state to
 * open the windows deterministically.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Redis from 'ioredis';
import { createBidiServer } from '../../src/core';
import type { StoreEvent } from '../../src/core/store';
import { newSessionId, newToken } from '../../src/core/util';
import { createNodeHandler } from '../../src/node';
import { RedisStore } from '../../src/redis';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { startTcpRelay, type TcpRelay } from '../helpers/tcp-relay';

jest.setTimeout(30_000);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const LIMITS = { maxUnackedMessages: 100, maxUnackedBytes: 100_000 };

let server: RedisProcess;
const cleanup: Array<() => unknown> = [];

beforeAll(async () => {
  server = await startRedis();
});

afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

afterAll(async () => {
  await server?.stop();
});

/** A store whose command connection goes straight through the relay and whose own pub/sub connection (the relay's 2nd) is held. */
async function freshStore(options: { lingerMs?: number } = {}) {
  const relay = await startTcpRelay(server.port, (i) => i === 2);
  const redis = new Redis({ host: '127.0.0.1', port: relay.port, maxRetriesPerRequest: null });
  const store = new RedisStore({ redis, prefix: `sr${newToken()}:`, subscriptionLingerMs: options.lingerMs ?? 0 });
  cleanup.push(() => relay.close(), () => redis.disconnect(), () => store.dispose());
  await redis.ping();
  return { relay, redis, store };
}

async function open(store: RedisStore): Promise<string> {
  const sid = newSessionId();
  await store.create({ sid, userJson: 'null', stateJson: '{}', initial: [], idleMs: 60_000, maxSessions: 1e9 });
  return sid;
}

async function eventually(events: StoreEvent[], ms = 3_000): Promise<StoreEvent[]> {
  for (let until = Date.now() + ms; events.length === 0 && Date.now() < until; ) await sleep(5);
  return events;
}

/** Two subscribes on a fresh store: the first opens the pub/sub connection, the second arrives while it is connecting. */
async function racingSubscribes(relay: TcpRelay, store: RedisStore, a: string, b: string) {
  const events = { a: [] as StoreEvent[], b: [] as StoreEvent[] };
  const first = store.subscribe(a, (e) => events.a.push(e));
  await relay.waitAccepted(2);
  await sleep(50); // the driver has its socket ('connect') and has written its handshake into the relay
  const second = store.subscribe(b, (e) => events.b.push(e));
  await sleep(50);
  relay.release();
  const [offA, offB] = await Promise.all([first, second]);
  return { events, offA, offB };
}

describe('RedisStore subscribe on a freshly started instance', () => {
  it('a second subscribe while the pub/sub connection is connecting: both resolve subscribed, no wake-up is missed', async () => {
    const { relay, store } = await freshStore();
    const [a, b] = [await open(store), await open(store)];
    const { events } = await racingSubscribes(relay, store, a, b);
    // Resolved means in effect: an append right now must wake both.
    await store.append(a, ['1'], LIMITS);
    await store.append(b, ['1'], LIMITS);
    expect(await eventually(events.a)).toContainEqual(expect.objectContaining({ type: 'message' }));
    expect(await eventually(events.b)).toContainEqual(expect.objectContaining({ type: 'message' }));
  });

  it('with subscriptionLingerMs: after the race, later listeners on both channels still get every wake-up', async () => {
    const { relay, store } = await freshStore({ lingerMs: 60_000 });
    const [a, b] = [await open(store), await open(store)];
    const first = await racingSubscribes(relay, store, a, b);
    first.offA();
    first.offB();
    for (let round = 0; round < 3; round++) {
      const events = { a: [] as StoreEvent[], b: [] as StoreEvent[] };
      const offA = await store.subscribe(a, (e) => events.a.push(e));
      const offB = await store.subscribe(b, (e) => events.b.push(e));
      await store.append(a, [String(round)], LIMITS);
      await store.append(b, [String(round)], LIMITS);
      expect(await eventually(events.a)).toContainEqual(expect.objectContaining({ type: 'message' }));
      expect(await eventually(events.b)).toContainEqual(expect.objectContaining({ type: 'message' }));
      offA();
      offB();
    }
  });

  it('a pub/sub connection slower than the subscribe timeout: subscribe rejects, and works once the connection is up', async () => {
    const { relay, store } = await freshStore();
    const sid = await open(store);
    const events: StoreEvent[] = [];
    const started = Date.now();
    const outcome = await store.subscribe(sid, (e) => events.push(e)).then(
      () => 'resolved',
      (err: Error) => err,
    );
    // Never "assumed": a subscription Redis did not confirm is an error the watch reports (the client watches again).
    expect(outcome).toBeInstanceOf(Error);
    expect((outcome as { code?: string }).code).toBe('STORE_UNAVAILABLE');
    expect(Date.now() - started).toBeLessThan(10_000);
    relay.release();
    const later: StoreEvent[] = [];
    const off = await store.subscribe(sid, (e) => later.push(e));
    await store.append(sid, ['1'], LIMITS);
    expect(await eventually(later)).toContainEqual(expect.objectContaining({ type: 'message' }));
    // The rejected listener was dropped: it hears nothing.
    expect(events).toEqual([]);
    off();
  });

  it('after the pub/sub connection drops, a new listener resolves only once the channel is subscribed again', async () => {
    const redis = new Redis({ host: '127.0.0.1', port: server.port });
    const admin = new Redis({ host: '127.0.0.1', port: server.port });
    const store = new RedisStore({ redis, prefix: `sr${newToken()}:` });
    cleanup.push(() => redis.disconnect(), () => admin.disconnect(), () => store.dispose());
    const sid = await open(store);
    const standing: StoreEvent[] = [];
    const offStanding = await store.subscribe(sid, (e) => standing.push(e));
    for (let round = 0; round < 5; round++) {
      await admin.client('KILL', 'TYPE', 'pubsub');
      const events: StoreEvent[] = [];
      const off = await store.subscribe(sid, (e) => events.push(e));
      await store.append(sid, [String(round)], LIMITS);
      expect(await eventually(events)).toContainEqual(expect.objectContaining({ type: 'message' }));
      off();
    }
    // The listener that stayed through the drops was woken too (so a waiting watch re-reads).
    expect(standing.length).toBeGreaterThan(0);
    offStanding();
  });
});

describe('HTTP: watches on a freshly started instance', () => {
  it('concurrent first watches return as soon as another instance sends, not at their wait', async () => {
    const relay = await startTcpRelay(server.port, (i) => i === 2);
    const redis = new Redis({ host: '127.0.0.1', port: relay.port });
    const other = new Redis({ host: '127.0.0.1', port: server.port });
    const prefix = `srh${newToken()}:`;
    const fresh = createBidiServer({ store: new RedisStore({ redis, prefix }), sweepInterval: 0, onError: () => {} });
    const pusher = createBidiServer({ store: new RedisStore({ redis: other, prefix }), sweepInterval: 0, onError: () => {} });
    const handle = createNodeHandler(fresh);
    const httpServer = http.createServer((req, res) => void handle(req, res).then((served) => served || res.writeHead(404).end()));
    await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
    cleanup.push(
      () => relay.close(),
      () => redis.disconnect(),
      () => other.disconnect(),
      () => fresh.store.dispose?.(),
      () => new Promise((r) => httpServer.close(r)),
    );
    const base = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}/session`;
    const sids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await fetch(base, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"v":1}' });
      sids.push(((await res.json()) as { sid: string }).sid);
    }
    const started = Date.now();
    const watches = sids.map((sid) =>
      fetch(`${base}/watch?ack=0&wait=20000`, { headers: { 'bidi-sid': sid } }).then(async (r) => ({ status: r.status, body: (await r.json()) as { msgs?: unknown[] }, at: Date.now() - started })),
    );
    await relay.waitAccepted(2);
    await sleep(100);
    relay.release();
    await sleep(300);
    for (const sid of sids) await pusher.hub.send(sid, { hello: sid.slice(0, 4) });
    const results = await Promise.all(watches);
    for (const r of results) {
      // The connection was held for far less than the subscribe timeout: every watch is subscribed
      // in time and returns with its message, not at its 20 s wait.
      expect(r.status).toBe(200);
      expect(r.body.msgs?.length ?? 0).toBeGreaterThan(0);
      expect(r.at).toBeLessThan(10_000);
    }
  });
});
