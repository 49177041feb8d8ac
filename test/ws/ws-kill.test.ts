/**
 * WebSocket transport, scale-out for real: instances are separate processes
 * (test/fixtures/instance.ts with WS=1) over one redis-server. HTTP requests
 * (open, close) go through a plain round-robin balancer; each new socket goes
 * to the next live instance, as a balancer that forwards upgrades would. While
 * sessions send and receive, instances are SIGKILLed and restarted: every
 * session's sockets die with them and reconnect to other instances. Each side
 * must receive exactly the other's sequence, in order.
 */
import Redis from 'ioredis';
import WebSocket from 'ws';
import { open, type BidiClientSession, type CloseEvent, type WebSocketConstructorLike } from '../../src/client';
import { BidiServer } from '../../src/core';
import { newToken } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { removeInstanceBundle, startInstance, type Instance } from '../helpers/instances';
import { startProxy } from '../helpers/proxy';
import { startRedis } from '../helpers/redis-server';
import { waitFor } from '../helpers/client-session';
import { expectEachOnceInOrder, killInTurn, trafficBothWays } from '../helpers/kill-traffic';

jest.setTimeout(240_000);

afterAll(() => removeInstanceBundle());


it('SIGKILLed instances under WebSocket sessions lose, duplicate and reorder nothing', async () => {
  const redis = await startRedis();
  const prefix = `wk${newToken()}:`;
  const env = { REDIS_PORT: String(redis.port), PREFIX: prefix, WAIT: '2000', LEASE_MS: '1000', HEARTBEAT_MS: '500', WS: '1' };
  const instances: Instance[] = await Promise.all([0, 1, 2].map(() => startInstance(env)));
  const proxy = await startProxy(instances.map((i) => i.port));
  const conn = new Redis({ port: redis.port, host: '127.0.0.1', maxRetriesPerRequest: null });
  const hubStore = new RedisStore({ redis: conn, prefix });
  const hub = new BidiServer({ store: hubStore, sweepInterval: 0 });

  let nextSocket = 0;
  let socketsOpened = 0;
  class Balanced extends WebSocket {
    constructor(url: string, protocols?: string | string[], options?: WebSocket.ClientOptions) {
      const u = new URL(url);
      u.port = String(instances[nextSocket++ % instances.length]!.port);
      super(u.toString(), protocols, options);
      socketsOpened++;
    }
  }

  const N = 300;
  const sessions: BidiClientSession[] = [];
  const received: unknown[][] = [];
  const closes: Array<CloseEvent | undefined> = [];
  for (let k = 0; k < 20; k++) {
    const s = open(proxy.url + '/session', {
      transport: 'websocket',
      WebSocket: Balanced as unknown as WebSocketConstructorLike,
      retry: { initialDelayMs: 20, maxDelayMs: 300 },
      resendAfterMs: 500,
      connectTimeoutMs: 2000,
    });
    received.push([]);
    closes.push(undefined);
    s.on('message', (m) => received[k]!.push(m));
    s.on('close', (e) => (closes[k] = e));
    sessions.push(s);
  }

  const killer = killInTurn(instances, env, proxy, 700);
  try {
    await waitFor('sessions open', () => sessions.every((s) => s.state === 'open'), 30_000);
    await trafficBothWays(sessions, hub.hub, N, 20, 10);
    await waitFor('every client to receive its messages', () => received.every((r) => r.length >= N), 120_000);
    await killer.stop();
    const kills = killer.kills;
    expect(kills).toBeGreaterThanOrEqual(2);
    expect(closes.filter(Boolean)).toEqual([]);
    const redeliveries = await expectEachOnceInOrder(sessions, received, N, conn, prefix, kills * sessions.length);
    for (const s of sessions) expect(s.activeTransport).toBe('websocket');
    // Sockets died with their instances and were replaced.
    expect(socketsOpened).toBeGreaterThan(sessions.length);
    console.log(`ws kill: kills ${kills}, sockets opened ${socketsOpened} for ${sessions.length} sessions, handler redeliveries ${redeliveries}`);
  } finally {
    await killer.stop().catch(() => {});
    await Promise.all(sessions.map((s) => s.close().catch(() => {})));
    await hub.dispose();
    await hubStore.dispose();
    await proxy.close();
    await Promise.all(instances.map((i) => i.kill()));
    conn.disconnect();
    await redis.stop();
  }
});
