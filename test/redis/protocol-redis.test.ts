/**
 * The protocol suite (test/protocol/protocol.test.ts: invariants 1–10 over
 * Express, the Fetch handler, and a fresh server object per request) with
 * every store a RedisStore on a redis-server started for this file.
 *
 * The suite builds its stores with `new MemoryStore()` (directly, and through
 * startTarget's default), so this file swaps that constructor, for this test
 * file's module registry only, for one that returns a RedisStore over a
 * fresh key prefix; then it loads the suite unchanged. A RedisStore has no
 * synchronous `size`; the one test that reads it ("creating nothing") gets
 * the number of sessions this store created.
 *
 * The 'stateless' target is invariant 11 itself: every HTTP request is
 * served by a newly constructed server object, so nothing but Redis carries
 * state between requests.
 */
import Redis from 'ioredis';
import type { CreateInput, CreateResult } from '../../src/core/store';
import { newToken } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

jest.setTimeout(30_000);

/** Shared with the module factory below (jest allows `mock`-prefixed names there). */
const mockRedis: { server?: RedisProcess; connection?: Redis; stores: RedisStore[] } = { stores: [] };

class CountingRedisStore extends RedisStore {
  private created = 0;
  /** Sessions this store created (MemoryStore's `size`, as far as the suite reads it). */
  get size(): number {
    return this.created;
  }
  override async create(input: CreateInput): Promise<CreateResult> {
    const r = await super.create(input);
    if (r.status === 'ok') this.created++;
    return r;
  }
}

function mockMakeRedisStore(): RedisStore {
  if (!mockRedis.connection) throw new Error('redis-server is not started yet');
  const store = new CountingRedisStore({ redis: mockRedis.connection, prefix: `p${newToken()}:` });
  mockRedis.stores.push(store);
  return store;
}

jest.mock('../../src/core', () => {
  const actual = jest.requireActual('../../src/core');
  // `new MemoryStore()` in the suite returns a RedisStore (a constructor may return another object).
  class MemoryStore {
    constructor() {
      return mockMakeRedisStore();
    }
  }
  return { ...actual, MemoryStore };
});

beforeAll(async () => {
  mockRedis.server = await startRedis();
  mockRedis.connection = new Redis(mockRedis.server.port, '127.0.0.1');
});

afterEach(async () => {
  // Each test's stores: close their subscriber connections (their keys go with the server).
  await Promise.all(mockRedis.stores.splice(0).map((s) => s.dispose()));
});

afterAll(async () => {
  await mockRedis.connection?.quit();
  await mockRedis.server?.stop();
});

// The suite itself, registered after the hooks above.
require('../protocol/protocol.test');
