/**
 * The protocol suite with sends and watches over WebSockets
 * (test/ws/ws-wire.ts) on a 3-master Redis Cluster started for this file,
 * over the 'stateless' target as test/redis/protocol-redis-cluster.test.ts:
 * the adapter's requests each get a fresh server object, the socket's
 * server object is one of its own, and they share nothing but the cluster.
 */
import { Cluster } from 'ioredis';
import { newToken } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { startRedisCluster, type RedisClusterProcess } from '../helpers/redis-server';
import { describeProtocolSuite } from '../protocol/suite';
import { wsWire } from './ws-wire';

jest.setTimeout(30_000);

let cluster: RedisClusterProcess | undefined;
let connection: Cluster | undefined;
const stores: RedisStore[] = [];

beforeAll(async () => {
  cluster = await startRedisCluster(3);
  connection = new Cluster(cluster.nodes);
});

afterAll(async () => {
  await connection?.quit();
  await cluster?.stop();
});

describeProtocolSuite('RedisStore on Cluster, over WebSocket', {
  kinds: ['stateless'],
  makeStore() {
    if (!connection) throw new Error('the cluster is not started yet');
    const store = new RedisStore({ redis: connection, prefix: `pwc${newToken()}:` });
    stores.push(store);
    return store;
  },
  cleanup: async () => void (await Promise.all(stores.splice(0).map((s) => s.dispose()))),
  wire: wsWire,
});
