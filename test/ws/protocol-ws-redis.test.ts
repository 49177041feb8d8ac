/**
 * The protocol suite with sends and watches over WebSockets (test/ws/ws-wire.ts),
 * every store a RedisStore over a redis-server started for this file: the
 * socket's server object shares nothing with the adapter's but Redis.
 */
import { redisStoresForFile } from '../helpers/redis-stores';
import { describeProtocolSuite } from '../protocol/suite';
import { wsWire } from './ws-wire';

jest.setTimeout(30_000);

describeProtocolSuite('RedisStore, over WebSocket', { ...redisStoresForFile('pw'), wire: wsWire });
