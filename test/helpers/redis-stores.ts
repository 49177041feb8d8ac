/**
 * RedisStores for a suite over a redis-server (or a 3-master Cluster) started
 * for the calling test file: registers its beforeAll/afterAll, hands out
 * stores with a fresh prefix each, and closes their subscriber connections
 * after each test (their keys go with the server).
 */
import Redis, { Cluster } from 'ioredis';
import { newToken } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { startRedis, startRedisCluster } from './redis-server';

export interface StoresForFile {
  makeStore(): RedisStore;
  cleanup(): Promise<void>;
}

export function redisStoresForFile(prefixTag: string, topology: 'standalone' | 'cluster' = 'standalone'): StoresForFile {
  let stop: (() => Promise<void>) | undefined;
  let connection: Redis | Cluster | undefined;
  const stores: RedisStore[] = [];
  beforeAll(async () => {
    if (topology === 'cluster') {
      const cluster = await startRedisCluster(3);
      stop = () => cluster.stop();
      connection = new Cluster(cluster.nodes);
    } else {
      const server = await startRedis();
      stop = () => server.stop();
      connection = new Redis(server.port, '127.0.0.1');
    }
  });
  afterAll(async () => {
    await connection?.quit();
    await stop?.();
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
