/**
 * Traffic both ways for the kill tests over several instances (HTTP and WebSocket), and what the
 * instances' handlers recorded (test/fixtures/instance.ts), to check it exactly once and in order.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type Redis from 'ioredis';
import type { BidiClientSession } from '../../src/client';
import type { BidiServer } from '../../src/core';

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
