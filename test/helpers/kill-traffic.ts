/**
 * Traffic both ways for the kill tests over several instances (HTTP and WebSocket), and what the
 * instances' handlers recorded (test/fixtures/instance.ts), to check it exactly once and in order.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type Redis from 'ioredis';
import type { BidiClientSession } from '../../src/client';
import type { BidiServer } from '../../src/core';
import { startInstance, type Instance } from './instances';

/**
 * Each session sends 1..n while the hub pushes 1..n to it, one push per
 * client send, resting `pauseMs` every `pauseEvery` messages; resolves when
 * every client send is acked.
 */
export async function trafficBothWays(sessions: BidiClientSession[], hub: BidiServer['hub'], n: number, pauseEvery: number, pauseMs: number): Promise<void> {
  await Promise.all(
    sessions.map(async (s, k) => {
      const sends: Promise<void>[] = [];
      for (let i = 1; i <= n; i++) {
        sends.push(s.send({ k, i }));
        await hub.send(s.id!, { k, s: i }, { whenFull: 'wait' });
        if (i % pauseEvery === 0) await sleep(pauseMs);
      }
      await Promise.all(sends);
    }),
  );
}

/** What the instances' handlers recorded for a session: first deliveries in order, and the redelivery count. */
export async function handlerLog(conn: Redis, prefix: string, sid: string): Promise<{ log: unknown[]; redelivered: number }> {
  const tag = `${prefix}test:{${sid}}`;
  const [log, redelivered] = await Promise.all([conn.lrange(`${tag}:log`, 0, -1), conn.get(`${tag}:redelivered`)]);
  return { log: log.map((j) => JSON.parse(j)), redelivered: Number(redelivered ?? 0) };
}

/** `[f(1), …, f(n)]`. */
export const range = (n: number, f: (i: number) => unknown): unknown[] => Array.from({ length: n }, (_, i) => f(i + 1));

/**
 * After trafficBothWays: every client received its pushes 1..n once, in order, and the handlers
 * recorded its sends 1..n once, in order, running messages again at most `maxRedeliveries` times
 * in all (the documented exception: a kill between a handler and its delivery record redelivers
 * that one message). Returns how many redeliveries the handlers saw.
 */
export async function expectEachOnceInOrder(sessions: BidiClientSession[], received: unknown[][], n: number, conn: Redis, prefix: string, maxRedeliveries: number): Promise<number> {
  let redeliveries = 0;
  for (let k = 0; k < sessions.length; k++) {
    expect(received[k]).toEqual(range(n, (i) => ({ k, s: i })));
    const { log, redelivered } = await handlerLog(conn, prefix, sessions[k]!.id!);
    expect(log).toEqual(range(n, (i) => ({ k, i })));
    redeliveries += redelivered;
  }
  expect(redeliveries).toBeLessThanOrEqual(maxRedeliveries);
  return redeliveries;
}

/**
 * Every `everyMs`, SIGKILLs the next instance of `instances` (in turn), starts a new one with
 * `env` in its place and points the balancer at the new set. `stop()` ends the loop once the
 * kill in progress (if any) is done.
 */
export function killInTurn(instances: Instance[], env: Record<string, string>, balancer: { setBackends(ports: number[]): void }, everyMs: number) {
  let kills = 0;
  let killing = true;
  const loop = (async () => {
    while (killing) {
      await sleep(everyMs);
      if (!killing) break;
      const victim = kills % instances.length;
      await instances[victim]!.kill();
      kills++;
      instances[victim] = await startInstance(env);
      balancer.setBackends(instances.map((i) => i.port));
    }
  })();
  return {
    get kills() {
      return kills;
    },
    stop(): Promise<void> {
      killing = false;
      return loop;
    },
  };
}
