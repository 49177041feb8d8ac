/**
 * Stream liveness, end to end: a streaming watch whose backend dies behind a
 * proxy that keeps the client's connection open (test/helpers/proxy.ts
 * `holdDeadStreams`) is found dead by its missing heartbeats and replaced by
 * a new watch on another instance, with nothing lost. And no live stream is
 * ever taken for a dead one: not an idle one with heartbeats, not one from a
 * server that sends none (an older server, or `heartbeatMs: 0`).
 *
 * The instances are real processes (test/fixtures/instance.ts) over one real
 * redis-server; `POST /push-many` on an instance sends server messages.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { open, type BidiClientSession, type RetryInfo } from '../../src/client';
import { MISSED_HEARTBEATS, SILENCE_MARGIN_MS } from '../../src/wire';
import { BidiServer } from '../../src/core';
import { sleep } from '../../src/core/util';
import { createNodeHandler } from '../../src/node';
import { newToken } from '../../src/core/util';
import { removeInstanceBundle, startInstance, type Instance } from '../helpers/instances';
import { startProxy, type Proxy } from '../helpers/proxy';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { waitFor } from '../helpers/client-session';

jest.setTimeout(60_000);

afterAll(() => removeInstanceBundle());

function opened(s: BidiClientSession): Promise<void> {
  return new Promise((resolve, reject) => {
    s.once('open', () => resolve());
    s.once('close', (e) => reject(new Error(`closed: ${e.code} ${e.reason}`)));
  });
}

async function push(instance: Instance, sid: string, data: unknown[]): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${instance.port}/push-many`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sid, data }),
  });
  if (res.status !== 200) throw new Error(`push-many: ${res.status} ${await res.text()}`);
}

describe('a stream whose backend died behind a proxy that holds the connection', () => {
  const HEARTBEAT_MS = 300;
  /** What the client allows: 3 heartbeats + 1 s. */
  const THRESHOLD_MS = MISSED_HEARTBEATS * HEARTBEAT_MS + SILENCE_MARGIN_MS;
  let redis: RedisProcess;
  let proxy: Proxy;
  const instances: Instance[] = [];

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await proxy?.close();
    await Promise.all(instances.map((i) => i.kill()));
    await redis?.stop();
  });

  it('is found dead within 3 heartbeats + 1 s and replaced by a watch on another instance, losing nothing', async () => {
    // A wait far longer than the threshold: only the heartbeats can end the dead stream in time.
    const env = { REDIS_PORT: String(redis.port), PREFIX: `lv${newToken()}:`, WAIT: '20000', HEARTBEAT_MS: String(HEARTBEAT_MS) };
    const [a, b] = await Promise.all([startInstance(env), startInstance(env)]);
    instances.push(a!, b!);
    proxy = await startProxy([a!.port], { holdDeadStreams: true });

    const s = open(proxy.url + '/session', { stream: true, retry: { initialDelayMs: 20, maxDelayMs: 200 } });
    const got: Array<{ data: unknown; seq: number }> = [];
    const retries: Array<RetryInfo & { at: number }> = [];
    s.on('message', (data, { seq }) => got.push({ data, seq }));
    s.on('retry', (info) => retries.push({ ...info, at: Date.now() }));
    s.on('error', () => {});
    await opened(s);
    const sid = s.id!;

    await push(a!, sid, ['a1', 'a2', 'a3']);
    await waitFor('the first messages', () => got.length === 3);
    // Idle for several heartbeats: a live stream is not aborted.
    await sleep(THRESHOLD_MS + 500);
    expect(retries).toEqual([]);

    // New requests now go to b; the stream in flight stays on a, which dies.
    proxy.setBackends([b!.port]);
    await a!.kill();
    const killedAt = Date.now();
    await push(b!, sid, ['b1', 'b2', 'b3']);
    await s.send('after the kill'); // the client → server half works too (through b)

    await waitFor('the messages sent after the kill', () => got.length === 6, 10_000);
    expect(proxy.stats.heldStreams).toBe(1);
    // Found dead by its silence (TIMEOUT), reported as a watch retry, within the threshold
    // (+ 1.5 s for a loaded machine), far inside the 20 s wait.
    const watchRetries = retries.filter((r) => r.op === 'watch');
    expect(watchRetries.map((r) => r.error.code)).toEqual(['TIMEOUT']);
    expect(watchRetries[0]!.error.message).toMatch(/silent/);
    expect(watchRetries[0]!.at - killedAt).toBeLessThan(THRESHOLD_MS + 1_500);
    expect(got).toEqual(['a1', 'a2', 'a3', 'b1', 'b2', 'b3'].map((data, i) => ({ data, seq: i + 1 })));
    await s.close();
    expect(s.closeEvent?.code).toBe('CLIENT');
  });
});

describe('no live stream is taken for a dead one', () => {
  const servers: Array<{ url: string; close(): Promise<void> }> = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
  });

  async function serve(heartbeatMs: number): Promise<{ url: string; server: BidiServer }> {
    const server = new BidiServer({ sweepInterval: 0, heartbeatMs, wait: 4_000 });
    const handle = createNodeHandler(server);
    const httpServer = http.createServer((req, res) => void handle(req, res));
    await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}/session`;
    servers.push({
      url,
      close: async () => {
        httpServer.closeAllConnections();
        await new Promise<void>((r) => httpServer.close(() => r()));
        await server.dispose();
      },
    });
    return { url, server };
  }

  it.each([
    ['idle, with heartbeats of 300 ms (threshold 1.9 s)', 300],
    ['from a server that sends no heartbeat (an older one, or heartbeatMs: 0)', 0],
  ])('an idle stream for 3 s: %s', async (_name, heartbeatMs) => {
    const { url, server } = await serve(heartbeatMs);
    const headers: Array<string | null> = [];
    const s = open(url, {
      stream: true,
      // Records the header each watch was answered with.
      fetch: async (u, init) => {
        const res = await fetch(u, init);
        if (u.includes('/watch')) headers.push(res.headers.get('bidi-heartbeat'));
        return res;
      },
    });
    const errors: string[] = [];
    const got: unknown[] = [];
    s.on('error', (e) => errors.push(e.code));
    s.on('message', (m) => got.push(m));
    await opened(s);
    await sleep(3_000);
    await server.hub.send(s.id!, 'still there');
    await waitFor('the message', () => got.length === 1);
    expect(errors).toEqual([]);
    // One stream served the whole idle time (its wait is 4 s).
    expect(headers).toEqual([heartbeatMs ? String(heartbeatMs) : null]);
    await s.close();
  });
});
