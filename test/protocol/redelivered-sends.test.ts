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
import type { BidiOptions, Store } from '../../src/core';
import { RedisStore } from '../../src/redis';
import { newToken } from '../../src/core/util';
import { bidiRequest } from '../model/harness';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

const LEASE_MS = 300;

/**
 * `inner` as instance A sees it: A dies right after its first append (the handler's send) was
 * stored; from then on every call hangs for good, as after a SIGKILL.
 */
function dyingAfterFirstAppend(inner: Store): Store {
  let dead = false;
  return new Proxy(inner, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver) as unknown;
      if (typeof value !== 'function') return value;
      return async (...args: unknown[]) => {
        if (dead) return new Promise(() => {});
        const result = await (value as (...a: unknown[]) => unknown).apply(target, args);
        if (key === 'append') dead = true;
        return result;
      };
    },
  });
}

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

/**
 * Opens a session (a group member with `group`) and sends client message 1 to instance A, which
 * dies after the handler's first append; after A's lease runs out, the client's resend reaches
 * B, which delivers seq 1 again. `check` gets the session's messages before and after the resend.
 */
async function redeliverAfterDeath(
  makeStores: () => [Store, Store, () => Promise<void>],
  group: boolean,
  onMessage: NonNullable<BidiOptions['onMessage']>,
  check: (before: Array<[number, unknown]>, after: Array<[number, unknown]>, handled: number) => void,
): Promise<void> {
  const [storeA, storeB, disposeStores] = makeStores();
  let handled = 0;
  const options = (store: Store): BidiOptions => ({
    store,
    sweepInterval: 0,
    leaseMs: LEASE_MS,
    onMessage: (session, data, info) => {
      handled++;
      return onMessage(session, data, info);
    },
  });
  const dying = dyingAfterFirstAppend(storeA);
  const serverA = new BidiServer(options(dying));
  const serverB = new BidiServer(options(storeB));
  try {
    const opened = await serverB.handle(bidiRequest('POST', '/session', { body: '{"v":1}' }));
    const sid = (JSON.parse(opened!.body) as { sid: string }).sid;
    if (group) expect(await serverB.hub.join(sid, 'room')).toBe(true);
    const send = bidiRequest('POST', '/session/send', { headers: { 'bidi-sid': sid }, body: '{"msgs":[[1,"hi"]]}' });
    void serverA.handle(send);
    await waitUntil(() => probeDead(dying));
    const before = await readAll(serverB, sid);
    await new Promise((resolve) => setTimeout(resolve, LEASE_MS + 100));
    const res = await serverB.handle(send);
    expect(res!.status).toBe(200);
    expect(JSON.parse(res!.body)).toEqual({ ack: 1 });
    check(before, await readAll(serverB, sid), handled);
  } finally {
    await serverB.dispose();
    await disposeStores();
  }
}

type Send = 'awaited' | 'wait' | 'pending';

const CASES: Array<{ name: string; send: Send; group: boolean }> = [
  { name: 'an awaited send', send: 'awaited', group: false },
  { name: "a send with whenFull: 'wait'", send: 'wait', group: false },
  { name: "a group member's pending send (stored by append before the record)", send: 'pending', group: true },
  { name: "a group member's awaited send", send: 'awaited', group: true },
];

describe.each(STORES)('%s', (_name, makeStores) => {
  it.each(CASES)('a redelivered message stores $name once', async ({ send, group }) => {
    await redeliverAfterDeath(
      makeStores,
      group,
      async (session, data) => {
        const reply = { echo: data };
        if (send === 'pending') void session.send(reply);
        else await session.send(reply, send === 'wait' ? { whenFull: 'wait' } : undefined);
      },
      (before, after, handled) => {
        // The first delivery's message is stored; its record is not.
        expect(before).toEqual([[1, { echo: 'hi' }]]);
        expect(handled).toBe(2);
        // Once: the second delivery's append was recognised by its id.
        expect(after).toEqual([[1, { echo: 'hi' }]]);
      },
    );
  });

  it('keeps what the first delivery stored under an id and stores the rest when the redelivery sends differently: no message twice, none lost', async () => {
    let runs = 0;
    await redeliverAfterDeath(
      makeStores,
      true,
      async (session) => {
        if (++runs === 1) {
          // First delivery: one awaited send (its own append), then the instance dies.
          await session.send('one');
        } else {
          // The redelivery sends both at once: a group member's pending sends, one append of two.
          void session.send('one');
          void session.send('two');
        }
      },
      (before, after, handled) => {
        expect(before).toEqual([[1, 'one']]);
        expect(handled).toBe(2);
        // The append of both under the first id answered the first delivery's one message; 'two' went on under the next id.
        expect(after).toEqual([
          [1, 'one'],
          [2, 'two'],
        ]);
      },
    );
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
  const res = await server.handle(bidiRequest('GET', '/session/watch', { headers: { 'bidi-sid': sid }, query: { ack: 0, wait: 0 } }));
  expect(res!.status).toBe(200);
  return (JSON.parse(res!.body) as { msgs: Array<[number, unknown]> }).msgs;
}
