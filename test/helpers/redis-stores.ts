/**
 * RedisStores for a suite over a redis-server started for the calling test
 * file: registers its beforeAll/afterAll, hands out stores with a fresh
 * prefix each, and closes their subscriber connections after each test
 * (their keys go with the server).
 */
import Redis from 'ioredis';
import { newToken } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { startRedis, type RedisProcess } from './redis-server';

export function redisStoresForFile(prefixTag: string): { makeStore: () => RedisStore; cleanup: () => Promise<void> } {
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
  return {
    makeStore() {
      if (!connection) throw new Error('redis-server is not started yet');
      const store = new RedisStore({ redis: connection, prefix: `${prefixTag}${newToken()}:` });
      stores.push(store);
      return store;
    },
    cleanup: async () => void (await Promise.all(stores.splice(0).map((s) => s.dispose()))),
  };
}
