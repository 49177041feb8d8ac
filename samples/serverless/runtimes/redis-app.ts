/**
 * The runtime app on a RedisStore (ioredis), built once per runtime instance:
 * the connection is made at module scope of the deployed function, so warm
 * invocations reuse it.
 */
import { Redis } from 'ioredis';
import { RedisStore } from '../../../src/redis/store';
import { createRuntimeApp, type RuntimeApp } from './app';

export interface RedisAppOptions {
  redisUrl: string;
  runtime: string;
  /** Key prefix (default `bidi:`). */
  prefix?: string;
  wait?: number;
  maxWait?: number;
  idleTimeout?: number;
}

export function createRedisApp(o: RedisAppOptions): RuntimeApp {
  const redis = new Redis(o.redisUrl, { maxRetriesPerRequest: 3 });
  const store = new RedisStore({ redis, prefix: o.prefix });
  return createRuntimeApp({ store, runtime: o.runtime, wait: o.wait, maxWait: o.maxWait, idleTimeout: o.idleTimeout });
}

/** Numbers from the environment (the runtime entries pass their `env`). */
export function appOptionsFromEnv(env: (name: string) => string | undefined, runtime: string): RedisAppOptions {
  const num = (name: string) => (env(name) ? Number(env(name)) : undefined);
  const redisUrl = env('REDIS_URL');
  if (!redisUrl) throw new Error('REDIS_URL is not set');
  return { redisUrl, runtime, prefix: env('PREFIX'), wait: num('WAIT'), maxWait: num('MAX_WAIT'), idleTimeout: num('IDLE_TIMEOUT') };
}
