/**
 * The protocol suite once more, on a 3-master Redis Cluster, over the
 * 'stateless' target (a fresh server object per request: SPEC invariant 11).
 */
import { Cluster } from 'ioredis';
import { newToken } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { startRedisCluster, type RedisClusterProcess } from '../helpers/redis-server';
import { describeProtocolSuite } from '../protocol/suite';

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

describeProtocolSuite('RedisStore on Cluster', {
  kinds: ['stateless'],
  makeStore() {
    if (!connection) throw new Error('the cluster is not started yet');
    const store = new RedisStore({ redis: connection, prefix: `p${newToken()}:` });
    stores.push(store);
    return store;
  },
  cleanup: async () => void (await Promise.all(stores.splice(0).map((s) => s.dispose()))),
});
