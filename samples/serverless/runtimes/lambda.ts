/**
 * The chat (./app.ts hooks) as an AWS Lambda function: deploy this module's
 * `handler` behind an API Gateway HTTP API or a Function URL, and `sweep`
 * on an EventBridge schedule (every minute); ../lambda/serverless.yml does
 * both (bundled with ./bundle.ts). The RedisStore is made at module scope:
 * warm invocations reuse its connection.
 *
 * Environment: REDIS_URL, PREFIX, and optional WAIT / MAX_WAIT /
 * IDLE_TIMEOUT (ms) as for the other runtime entries.
 */
import { Redis } from 'ioredis';
import { bidiLambda, type BidiLambda } from '../../../src/aws-lambda';
import { RedisStore } from '../../../src/redis/store';
import { chatHooks, type ChatUser } from './app';

const num = (name: string): number | undefined => (process.env[name] ? Number(process.env[name]) : undefined);

const store = new RedisStore({ redis: new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'), prefix: process.env.PREFIX });

const bidi: BidiLambda<ChatUser, Record<string, unknown>> = bidiLambda<ChatUser>(
  {
    store,
    idleTimeout: num('IDLE_TIMEOUT') ?? 90_000,
    ...(num('WAIT') !== undefined ? { wait: num('WAIT') } : {}),
    ...(num('MAX_WAIT') !== undefined ? { maxWait: num('MAX_WAIT') } : {}),
    ...chatHooks(() => bidi.server().hub),
  },
  { timeLimitMs: 30_000 }, // HTTP API's integration limit → maxWait 26 s
);

export const handler = bidi.handler;
/** The scheduled function: `{ expired }`, the number of sessions it ended. */
export const sweep = async (): Promise<{ expired: number }> => ({ expired: await bidi.sweep() });
