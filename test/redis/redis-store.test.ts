/**
 * The store contract suite against RedisStore on a standalone redis-server
 * started for this file (never the machine's own Redis). Each store gets a
 * unique key prefix, so stores made by the suite never see each other's keys.
 */
import Redis from 'ioredis';
import { RedisStore } from '../../src/redis';
import { newToken } from '../../src/core/util';
import { runStoreContract } from '../../src/testing';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

let server: RedisProcess;
const connections: Redis[] = [];

beforeAll(async () => {
  server = await startRedis();
});

afterAll(async () => {
  await Promise.all(connections.map((c) => c.quit().catch(() => c.disconnect())));
  await server?.stop();
});

runStoreContract(
  { describe, it, afterAll },
  () => {
    const redis = new Redis(server.port, '127.0.0.1', { lazyConnect: false });
    connections.push(redis);
    return new RedisStore({ redis, prefix: `t${newToken()}:` });
  },
  { name: 'RedisStore', cleanup: (store) => store.dispose() },
);
