/**
 * A RedisStore from a URL. Kept apart so that ./local.ts can load it as an
 * esbuild bundle (tsx cannot load the Lua scripts of src/redis) only when
 * REDIS_URL is set. In an app: `import { RedisStore } from 'bidiweb/redis'`.
 */
import Redis from 'ioredis';
import type { Store } from '../../src/core/store';
import { RedisStore } from '../../src/redis';

export function createRedisStore(url: string, prefix = 'chat:'): { store: Store; close(): Promise<void> } {
  const redis = new Redis(url, { maxRetriesPerRequest: 2 });
  redis.on('error', () => {}); // ioredis reconnects; requests meanwhile answer 500 and clients retry
  const store = new RedisStore({ redis, prefix });
  return {
    store,
    async close() {
      await store.dispose();
      await redis.quit().catch(() => {});
    },
  };
}
