/** RedisStores from a URL (ioredis), for entries that load them on demand. */
import { Redis } from 'ioredis';
import { RedisStore } from '../../../src/redis/store';
import type { RequestScopedStore } from './app';

export function createRedisStore(url: string, prefix?: string): RedisStore {
  return new RedisStore({ redis: new Redis(url, { maxRetriesPerRequest: 1, connectTimeout: 3000 }), prefix });
}

/**
 * A connection (and a RedisStore) per request, closed after the response:
 * workerd binds a socket to the request that opened it, and another request
 * that uses it hangs until the runtime cancels it.
 */
export function requestScopedRedisStore(url: string, prefix?: string): RequestScopedStore {
  return {
    open() {
      const redis = new Redis(url, { maxRetriesPerRequest: 1, connectTimeout: 3000 });
      const store = new RedisStore({ redis, prefix });
      return {
        store,
        async release() {
          await store.dispose().catch(() => {});
          redis.disconnect();
        },
      };
    },
  };
}
