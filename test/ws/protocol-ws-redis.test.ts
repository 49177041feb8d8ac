/**
 * The protocol suite with sends and watches over WebSockets (test/ws/ws-wire.ts),
 * every store a RedisStore over a redis-server started for this file: the
 * socket's server object shares nothing with the adapter's but Redis.
 */
import Redis from 'ioredis';
import { newToken } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { describeProtocolSuite } from '../protocol/suite';
import { wsWire } from './ws-wire';

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

describeProtocolSuite('RedisStore, over WebSocket', {
  makeStore() {
    if (!connection) throw new Error('redis-server is not started yet');
    const store = new RedisStore({ redis: connection, prefix: `pw${newToken()}:` });
    stores.push(store);
    return store;
  },
  cleanup: async () => void (await Promise.all(stores.splice(0).map((s) => s.dispose()))),
  wire: wsWire,
});
