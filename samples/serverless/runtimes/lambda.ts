/**
 * The chat (./app.ts hooks) as an AWS Lambda function: deploy this module's
 * `handler` behind an API Gateway HTTP API or a Function URL, and `sweep`
 * on an EventBridge schedule (every minute). The RedisStore is made at
 * module scope: warm invocations reuse its connection.
 */
import { Redis } from 'ioredis';
import { bidiLambda, type BidiLambda } from '../../../src/aws-lambda';
import { RedisStore } from '../../../src/redis/store';
import { chatHooks, type ChatUser } from './app';

const store = new RedisStore({ redis: new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'), prefix: process.env.PREFIX });

const bidi: BidiLambda<ChatUser, Record<string, unknown>> = bidiLambda<ChatUser>(
  { store, idleTimeout: 90_000, ...chatHooks(() => bidi.server().hub) },
  { timeLimitMs: 30_000 }, // HTTP API's integration limit → maxWait 26 s
);

export const handler = bidi.handler;
export const sweep = (): Promise<number> => bidi.sweep();
