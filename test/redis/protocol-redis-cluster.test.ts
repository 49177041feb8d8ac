/**
 * The protocol suite once more, on a 3-master Redis Cluster, over the
 * 'stateless' target only (a fresh server object per request: SPEC invariant
 * 11). Same technique as protocol-redis.test.ts: `new MemoryStore()` in the
 * suite returns a RedisStore over a fresh key prefix.
 */
import { Cluster } from 'ioredis';
import type { CreateInput, CreateResult } from '../../src/core/store';
import { newToken } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { startRedisCluster, type RedisClusterProcess } from '../helpers/redis-server';

jest.setTimeout(30_000);

const mockCluster: { process?: RedisClusterProcess; connection?: Cluster; stores: RedisStore[] } = { stores: [] };

class CountingRedisStore extends RedisStore {
  private created = 0;
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
  if (!mockCluster.connection) throw new Error('the cluster is not started yet');
  const store = new CountingRedisStore({ redis: mockCluster.connection, prefix: `p${newToken()}:` });
  mockCluster.stores.push(store);
  return store;
}

jest.mock('../../src/core', () => {
  const actual = jest.requireActual('../../src/core');
  class MemoryStore {
    constructor() {
      return mockMakeRedisStore();
    }
  }
  return { ...actual, MemoryStore };
});

jest.mock('../helpers/targets', () => ({ ...jest.requireActual('../helpers/targets'), TARGET_KINDS: ['stateless'] }));

beforeAll(async () => {
  mockCluster.process = await startRedisCluster(3);
  mockCluster.connection = new Cluster(mockCluster.process.nodes);
});

afterEach(async () => {
  await Promise.all(mockCluster.stores.splice(0).map((s) => s.dispose()));
});

afterAll(async () => {
  await mockCluster.connection?.quit();
  await mockCluster.process?.stop();
});

require('../protocol/protocol.test');
