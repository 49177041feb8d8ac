/**
 * The protocol suite with sends and watches over WebSockets
 * (test/ws/ws-wire.ts) on a 3-master Redis Cluster started for this file,
 * over the 'stateless' target as test/redis/protocol-redis-cluster.test.ts:
 * the adapter's requests each get a fresh server object, the socket's
 * server object is one of its own, and they share nothing but the cluster.
 */
import { redisStoresForFile } from '../helpers/redis-stores';
import { describeProtocolSuite } from '../protocol/suite';
import { wsWire } from './ws-wire';

jest.setTimeout(30_000);

describeProtocolSuite('RedisStore on Cluster, over WebSocket', { kinds: ['stateless'], ...redisStoresForFile('pwc', 'cluster'), wire: wsWire });
