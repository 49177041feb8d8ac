/**
 * The protocol suite once more, on a 3-master Redis Cluster, over the
 * 'stateless' target (a fresh server object per request: SPEC invariant 11).
 */
import { redisStoresForFile } from '../helpers/redis-stores';
import { describeProtocolSuite } from '../protocol/suite';

jest.setTimeout(30_000);

describeProtocolSuite('RedisStore on Cluster', { kinds: ['stateless'], ...redisStoresForFile('p', 'cluster') });
