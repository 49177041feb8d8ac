/**
 * The protocol suite (test/protocol/suite.ts: invariants 1–10 over every
 * adapter and a fresh server object per request) with every store a
 * RedisStore, over a redis-server started for this file. The 'stateless'
 * target is invariant 11 itself: nothing but Redis carries state between
 * requests.
 */
import Redis from 'ioredis';
import { newToken } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { describeProtocolSuite } from '../protocol/suite';

jest.setTimeout(30_000);

let server: RedisProcess | undefined;
let connection: Redis | undefined;
const stores: RedisStore[] = [];

beforeAll(async () => {
  server = await startRedis();
  connection = new Redis(server.port, '127.0.0.1');
});

afterAll(async () => {
  await connection?.quit();
  await server?.stop();
});

describeProtocolSuite('RedisStore', {
  makeStore() {
    if (!connection) throw new Error('redis-server is not started yet');
    const store = new RedisStore({ redis: connection, prefix: `p${newToken()}:` });
    stores.push(store);
    return store;
  },
  // Each test's stores: close their subscriber connections (their keys go with the server).
  cleanup: async () => void (await Promise.all(stores.splice(0).map((s) => s.dispose()))),
});
