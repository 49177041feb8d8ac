/**
 * docs/SECURITY.md, "Closed sessions": what closed sessions cost a store. Two
 * churns through a real BidiServer (direct calls, no sockets):
 *
 * - `openClose`: `pairs` × (open, DELETE), with `maxSessions` as given;
 * - `echoes`: `sessions` sessions that each get ~`bytes` of echoes they never
 *   read (the client sends, the handler echoes, nobody watches), then DELETE,
 *   and one session left open.
 *
 * Each reports the store's size (MemoryStore: `size`; Redis: keys and
 * `used_memory`), and the heap when `global.gc` is exposed.
 */
import { Redis } from 'ioredis';
import { BidiServer } from '../../src/core';
import type { Store } from '../../src/core/store';
import { MemoryStore } from '../../src/core/stores/memory';
import { RedisStore } from '../../src/redis';
import { call, openSid } from './util';

export interface StoreUnderTest {
  store: Store;
  /** Records: MemoryStore sessions + tombstones; Redis: session records (`*}:s` keys). */
  records(): Promise<number>;
  /** Bytes: Redis `used_memory`; memory: the heap after a full GC (needs --expose-gc), else NaN. */
  bytes(): Promise<number>;
  close(): Promise<void>;
}

export async function heap(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return NaN;
  // Work the server queued (setImmediate closures holding request bodies) runs first.
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

export function memoryStore(): StoreUnderTest {
  const store = new MemoryStore();
  return { store, records: async () => store.size, bytes: heap, close: async () => {} };
}

export async function redisStore(url: string, prefix: string): Promise<StoreUnderTest & { redis: Redis }> {
  const redis = new Redis(url);
  const store = new RedisStore({ redis, prefix });
  const count = async () => {
    let n = 0;
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}{*}:s`, 'COUNT', 1000);
      cursor = next;
      n += keys.filter((k) => !k.includes('{sessions}')).length;
    } while (cursor !== '0');
    return n;
  };
  const bytes = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
  return {
    store,
    redis,
    records: count,
    bytes,
    close: async () => {
      await store.dispose();
      redis.disconnect();
    },
  };
}

function server(store: Store, maxSessions: number): BidiServer<any, any> {
  return new BidiServer({
    store,
    sweepInterval: 0,
    idleTimeout: 120_000,
    openLimit: false,
    limits: { maxSessions },
    onMessage(session, data) {
      session.send(data);
    },
  });
}

export async function openClose(t: StoreUnderTest, pairs: number, maxSessions: number): Promise<{ records: number; refused: number }> {
  const s = server(t.store, maxSessions);
  let refused = 0;
  for (let i = 0; i < pairs; i++) {
    const r = await call(s, 'POST', '/session', { body: { v: 1 } });
    if (r.status !== 201) {
      refused++;
      continue;
    }
    const d = await call(s, 'DELETE', '/session', { sid: r.body.sid });
    if (d.status !== 200) throw new Error(`DELETE: ${d.status}`);
  }
  return { records: await t.records(), refused };
}

export async function echoes(t: StoreUnderTest, sessions: number, bytes: number, maxSessions: number): Promise<{ before: number; held: number; records: number }> {
  const s = server(t.store, maxSessions);
  const before = await t.bytes();
  const text = 'e'.repeat(25_000);
  const per = Math.ceil(bytes / text.length);
  for (let i = 0; i < sessions; i++) {
    const sid = await openSid(s);
    for (let seq = 1; seq <= per; seq++) {
      const r = await call(s, 'POST', '/session/send', { sid, body: { msgs: [[seq, text]] } });
      if (r.status !== 200) throw new Error(`send: ${r.status} ${JSON.stringify(r.body)}`);
    }
    const d = await call(s, 'DELETE', '/session', { sid });
    if (d.status !== 200) throw new Error(`DELETE: ${d.status}`);
  }
  await openSid(s);
  return { before, held: await t.bytes(), records: await t.records() };
}
