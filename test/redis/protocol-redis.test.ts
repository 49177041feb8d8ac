/**
 * The protocol suite (test/protocol/suite.ts: invariants 1–10 over every
 * adapter and a fresh server object per request) with every store a
 * RedisStore, over a redis-server started for this file. The 'stateless'
 * target is invariant 11 itself: nothing but Redis carries state between
 * requests.
 */
import { redisStoresForFile } from '../helpers/redis-stores';
import { describeProtocolSuite } from '../protocol/suite';

jest.setTimeout(30_000);

describeProtocolSuite('RedisStore', redisStoresForFile('p'));
