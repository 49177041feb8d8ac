/**
 * A handler's sends that are stored before its delivery record (awaited sends, `whenFull: 'wait'`
 * sends, a group member's pending sends) carry append ids made from the delivered message's seq.
 * When the instance dies between those appends and the record, the message is delivered again
 * on another instance; a handler that sends the same way then gets the first delivery's seqs
 * back, and the client gets each of its messages once.
 *
 * Two server objects ("instances") share one store (a MemoryStore, or a real redis-server seen
 * through one RedisStore each). Instance A "dies" right after the handler's append: from then on
 * its store calls never return (as after a SIGKILL). After its lease runs out, the client's
 * resend reaches B, which runs the handler again.
 */
import Redis from 'ioredis';
import { BidiServer, MemoryStore } from '../../src/core';
import type { BidiOptions, BidiRequest, Store } from '../../src/core';
import { RedisStore } from '../../src/redis';
import { newToken } from '../../src/core/util';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

const LEASE_MS = 300;

function request(method: string, path: string, body: string | undefined, sid?: string, query = ''): BidiRequest {
  const headers = new Map<string, string>();
  if (body !== undefined) headers.set('content-type', 'application/json');
  if (sid) headers.set('bidi-sid', sid);
  return { method, path, query: new URLSearchParams(query), headers: { get: (n) => headers.get(n.toLowerCase()) ?? null }, text: async () => body ?? '' };
}

/** `inner`, until `die()`: then every call hangs for good (its instance is gone). */
function mortal(inner: Store): { store: Store; die(): void } {
  let dead = false;
  const store = new Proxy(inner, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => (dead ? new Promise(() => {}) : (value as (...a: unknown[]) => unknown).apply(target, args));
    },
  });
  return { store, die: () => void (dead = true) };
}

type Send = 'awaited' | 'wait' | 'pending';

interface Case {
  name: string;
  send: Send;
  group: boolean;
}

const CASES: Case[] = [
  { name: 'an awaited send', send: 'awaited', group: false },
  { name: "a send with whenFull: 'wait'", send: 'wait', group: false },
  { name: "a group member's pending send (stored by append before the record)", send: 'pending', group: true },
  { name: "a group member's awaited send", send: 'awaited', group: true },
];

let redis: RedisProcess;
let conn: Redis;

beforeAll(async () => {
  redis = await startRedis();
  conn = new Redis(redis.port, '127.0.0.1');
});

afterAll(async () => {
  await conn.quit();
  await redis.stop();
});

const STORES: Array<[string, () => [Store, Store, () => Promise<void>]]> = [
  [
    'MemoryStore',
    () => {
      const shared = new MemoryStore();
      return [shared, shared, async () => {}];
    },
  ],
  [
    'RedisStore',
    () => {
      const prefix = `redeliver:${newToken()}:`;
      const a = new RedisStore({ redis: conn, prefix });
      const b = new RedisStore({ redis: conn, prefix });
      return [a, b, async () => void (await Promise.all([a.dispose(), b.dispose()]))];
    },
  ],
];

describe.each(STORES)('%s', (_name, makeStores) => {
  it.each(CASES)('a redelivered message stores $name once', async ({ send, group }) => {
    const [storeA, storeB, disposeStores] = makeStores();
    const a = mortal(storeA);
    let handled = 0;
    let afterAppend: (() => void) | undefined;
    const options = (store: Store): BidiOptions => ({
      store,
      sweepInterval: 0,
      leaseMs: LEASE_MS,
      onMessage: async (session, data) => {
        handled++;
        const reply = { echo: data };
        if (send === 'pending') void session.send(reply);
        else await session.send(reply, send === 'wait' ? { whenFull: 'wait' } : undefined);
        afterAppend?.();
      },
    });
    const serverA = new BidiServer(options(a.store));
    const serverB = new BidiServer(options(storeB));
    try {
      const opened = await serverB.handle(request('POST', '/session', '{"v":1}'));
      const sid = (JSON.parse(opened!.body) as { sid: string }).sid;
      if (group) expect(await serverB.hub.join(sid, 'room')).toBe(true);

      // Instance A: the handler's send is stored (awaited: before the handler returns; pending,
      // for a group member: by the append after the 'pull' commit), then A dies before the record.
      const body = '{"msgs":[[1,"hi"]]}';
      if (send === 'pending') {
        const append = storeA.append.bind(storeA);
        storeA.append = async (...args) => {
          const r = await append(...args);
          a.die();
          return r;
        };
      } else {
        afterAppend = () => a.die();
      }
      void serverA.handle(request('POST', '/session/send', body, sid));
      await waitUntil(() => handled === 1);
      await waitUntil(() => probeDead(a.store));
      afterAppend = undefined;
      if (send === 'pending') delete (storeA as Partial<Store>).append;

      // The first delivery's message is stored; its record is not.
      const before = await readAll(serverB, sid);
      expect(before).toEqual([[1, { echo: 'hi' }]]);

      // A's lease runs out; the client's resend reaches B, which delivers seq 1 again.
      await new Promise((resolve) => setTimeout(resolve, LEASE_MS + 100));
      const res = await serverB.handle(request('POST', '/session/send', body, sid));
      expect(res!.status).toBe(200);
      expect(JSON.parse(res!.body)).toEqual({ ack: 1 });
      expect(handled).toBe(2);

      // Once: the second delivery's append was recognised by its id.
      expect(await readAll(serverB, sid)).toEqual([[1, { echo: 'hi' }]]);
    } finally {
      await serverB.dispose();
      await disposeStores();
    }
  });
});

describe.each(STORES)('%s, a redelivery that sends differently', (_name, makeStores) => {
  it("keeps what the first delivery stored under an id and stores the rest: no message twice, none lost", async () => {
    const [storeA, storeB, disposeStores] = makeStores();
    const a = mortal(storeA);
    let handled = 0;
    const options = (store: Store): BidiOptions => ({
      store,
      sweepInterval: 0,
      leaseMs: LEASE_MS,
      onMessage: async (session) => {
        handled++;
        if (handled === 1) {
          // First delivery: one awaited send (its own append), then the instance dies.
          await session.send('one');
          a.die();
        } else {
          // The redelivery sends both at once: a group member's pending sends, one append of two.
          void session.send('one');
          void session.send('two');
        }
      },
    });
    const serverA = new BidiServer(options(a.store));
    const serverB = new BidiServer(options(storeB));
    try {
      const opened = await serverB.handle(request('POST', '/session', '{"v":1}'));
      const sid = (JSON.parse(opened!.body) as { sid: string }).sid;
      expect(await serverB.hub.join(sid, 'room')).toBe(true);
      const body = '{"msgs":[[1,"go"]]}';
      void serverA.handle(request('POST', '/session/send', body, sid));
      await waitUntil(() => probeDead(a.store));
      expect(await readAll(serverB, sid)).toEqual([[1, 'one']]);
      await new Promise((resolve) => setTimeout(resolve, LEASE_MS + 100));
      const res = await serverB.handle(request('POST', '/session/send', body, sid));
      expect(JSON.parse(res!.body)).toEqual({ ack: 1 });
      expect(handled).toBe(2);
      // The append of both under the first id answered the first delivery's one message; 'two' went on under the next id.
      expect(await readAll(serverB, sid)).toEqual([
        [1, 'one'],
        [2, 'two'],
      ]);
    } finally {
      await serverB.dispose();
      await disposeStores();
    }
  });
});

/** True once the store hangs (a dead instance's): a read that does not answer within 50 ms. */
async function probeDead(store: Store): Promise<boolean> {
  const answered = await Promise.race([store.count().then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 50))]);
  return !answered;
}

async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The session's server messages from seq 1, as `[seq, data]` pairs (a watch that does not wait). */
async function readAll(server: BidiServer, sid: string): Promise<Array<[number, unknown]>> {
  const res = await server.handle(request('GET', '/session/watch', undefined, sid, 'ack=0&wait=0'));
  expect(res!.status).toBe(200);
  return (JSON.parse(res!.body) as { msgs: Array<[number, unknown]> }).msgs;
}
