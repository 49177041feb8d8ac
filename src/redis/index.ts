/**
 * `bidiweb/redis`: the Redis store, for any number of server instances or
 * serverless functions sharing sessions. Needs ioredis >= 5.3 (an optional
 * peer dependency) and Redis >= 7. See docs/REDIS.md.
 *
 * ```ts
 * import Redis from 'ioredis';
 * import { RedisStore } from 'bidiweb/redis';
 * const store = new RedisStore({ redis: new Redis(process.env.REDIS_URL) });
 * ```
 */
export { RedisStore } from './store';
export type { RedisStoreOptions } from './store';
export type { ReplicaAcks } from './replica-acks';
export { RedisKeys } from './keys';
export type { SessionKeys } from './keys';
