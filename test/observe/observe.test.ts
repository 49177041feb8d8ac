/**
 * Debug logging (`DEBUG=bidiweb:*` through the real `debug` package) and
 * OpenTelemetry metrics (a real MeterProvider): what they record, that no
 * session id reaches a log line, and that nothing wraps the store when
 * nothing observes.
 */
import createDebug from 'debug';
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import type { Server } from 'node:http';
import { format } from 'node:util';
import type { AddressInfo } from 'node:net';
import { bidiWeb } from '../../src/express';
import { createBidiServer, MemoryStore, SID_HEADER, toFetchHandler } from '../../src/index';
import type { BidiOptions } from '../../src/index';
import { sidLabel } from '../../src/core/observe';
import { createMetricsApp } from '../../samples/metrics/server';
import type { MetricsApp } from '../../samples/metrics/server';
import { openWatched, waitFor } from '../helpers/client-session';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { Redis } from 'ioredis';
import { RedisStore } from '../../src/redis';

/** A raw-protocol client over the Fetch handler: open, send, watch. */
function rawClient(options: BidiOptions) {
  const server = createBidiServer({ sweepInterval: 0, ...options });
  const fetchHandler = toFetchHandler(server);
  const call = async (method: string, path: string, sid?: string, body?: unknown) => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (sid) headers[SID_HEADER] = sid;
    const res = await fetchHandler(new Request('http://localhost' + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }));
    return { status: res.status, body: (await res.json()) as any };
  };
  return {
    server,
    open: async () => (await call('POST', '/session', undefined, { v: 1 })).body.sid as string,
    send: (sid: string, msgs: Array<[number, unknown]>) => call('POST', '/session/send', sid, { msgs }),
    watch: (sid: string, ack = 0) => call('GET', `/session/watch?ack=${ack}&wait=1`, sid),
    close: (sid: string) => call('DELETE', '/session', sid),
  };
}

describe('debug logging', () => {
  const lines: string[] = [];
  const savedLog = createDebug.log;
  beforeAll(() => {
    createDebug.enable('bidiweb:*');
    createDebug.log = (...args: unknown[]) => lines.push(format(...args));
  });
  afterAll(() => {
    createDebug.disable();
    createDebug.log = savedLog;
  });

  test('the Node entry points install `debug`: open, send, deliver, watch, store and close lines, never the sid', async () => {
    expect(typeof bidiWeb).toBe('function'); // importing a Node entry point made `debug` the default
    const c = rawClient({ onMessage: async (s, data) => void (await s.send({ echo: data })) });
    const sid = await c.open();
    expect((await c.send(sid, [[1, 'hi'], [2, 'there']])).status).toBe(200);
    expect((await c.watch(sid)).body.msgs).toHaveLength(2);
    await c.close(sid);
    const label = sidLabel(sid);
    const text = lines.join('\n');
    for (const ns of ['open', 'send', 'deliver', 'watch', 'store', 'close']) expect(text).toContain(`bidiweb:${ns}`);
    expect(text).toContain(`${label} opened`);
    expect(text).toMatch(new RegExp(`${label} seq 2 handled in [0-9.]+ ms`));
    expect(text).toContain(`${label} in: 2 message(s)`);
    expect(text).toContain(`${label} closed`);
    expect(text).not.toContain(sid);
    await c.server.dispose();
  });

  test('a store error\'s message in the debug log carries nothing sid-shaped', async () => {
    lines.length = 0;
    const store = new MemoryStore();
    const c = rawClient({ store, onError: () => {} });
    const sid = await c.open();
    // A store failing with a message that quotes a key (as a store client's error could).
    const original = store.receive.bind(store);
    store.receive = async (s, input) => {
      throw new Error(`cannot run on key bidi:{${s}}:log\nsecond line ${s}`);
    };
    expect((await c.send(sid, [[1, 'x']])).status).toBe(500);
    store.receive = original;
    expect((await c.send(sid, [[1, 'x']])).status).toBe(200); // the store's own method again
    const text = lines.join('\n');
    expect(text).toContain('receive');
    expect(text).toContain('failed: cannot run on key bidi:{…}:log');
    expect(text).not.toContain(sid);
    expect(text).not.toContain('second line');
    await c.server.dispose();
  });

  test('sidLabel: 6 hex characters, stable, different for different sids', () => {
    expect(sidLabel('abc')).toMatch(/^[0-9a-f]{6}$/);
    expect(sidLabel('abc')).toBe(sidLabel('abc'));
    expect(sidLabel('abc')).not.toBe(sidLabel('abd'));
  });
});

describe('when nothing observes', () => {
  test('the store is used as given (no wrapper), with debug off and no meter', async () => {
    const store = new MemoryStore();
    const server = createBidiServer({ store, sweepInterval: 0 });
    expect(server.store).toBe(store);
    await server.dispose();
  });

  test('a meter wraps the store; its own members stay reachable', async () => {
    const store = new MemoryStore();
    const provider = new MeterProvider();
    const server = createBidiServer({ store, sweepInterval: 0, meter: provider.getMeter('t'), debug: false });
    expect(server.store).not.toBe(store);
    expect(server.store).toBeInstanceOf(MemoryStore);
    expect(typeof server.store.openLimiter).toBe('function');
    await server.dispose();
    await provider.shutdown();
  });
});

describe('metrics', () => {
  async function collect(reader: PeriodicExportingMetricReader, exporter: InMemoryMetricExporter) {
    await reader.forceFlush();
    const points = new Map<string, number>();
    for (const rm of exporter.getMetrics()) {
      for (const sm of rm.scopeMetrics) {
        for (const m of sm.metrics) {
          for (const dp of m.dataPoints as any[]) {
            const key = m.descriptor.name + (dp.attributes.operation ? `{${dp.attributes.operation}}` : '');
            points.set(key, typeof dp.value === 'number' ? dp.value : dp.value.count);
          }
        }
      }
    }
    exporter.reset();
    return points;
  }

  test('sessions, messages, delivery latency, store calls and watches held', async () => {
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 });
    const provider = new MeterProvider({ readers: [reader] });
    const c = rawClient({ meter: provider.getMeter('bidiweb'), debug: false, wait: 2_000, onMessage: async (s, data) => void (await s.send({ echo: data })) });
    const a = await c.open();
    const b = await c.open();
    await c.send(a, [[1, 'x'], [2, 'y'], [3, 'z']]);
    // A watch with nothing to return waits: it is held while it waits (counted when it starts).
    const waiting = c.server.handle({ method: 'GET', path: '/session/watch', query: new URLSearchParams('ack=0&wait=1000'), headers: new Headers({ [SID_HEADER]: b }), body: async () => new Uint8Array(), canStream: false } as any);
    await new Promise((r) => setTimeout(r, 50)); // it waits up to 1 s for news
    let p = await collect(reader, exporter);
    expect(p.get('bidiweb.sessions.opened')).toBe(2);
    expect(p.get('bidiweb.sessions.open')).toBe(2);
    expect(p.get('bidiweb.messages.in')).toBe(3);
    expect(p.get('bidiweb.messages.out')).toBe(3);
    expect(p.get('bidiweb.delivery.duration')).toBe(3); // histogram count
    expect(p.get('bidiweb.store.duration{create}')).toBe(2);
    expect(p.get('bidiweb.store.duration{commit}')).toBe(3);
    expect(p.get('bidiweb.watches.held')).toBe(1);
    await c.server.hub.send(b, 'wake');
    await waiting;
    await c.close(a);
    p = await collect(reader, exporter);
    expect(p.get('bidiweb.watches.held')).toBe(0);
    expect(p.get('bidiweb.messages.out')).toBe(4);
    expect(p.get('bidiweb.sessions.closed')).toBe(1);
    expect(p.get('bidiweb.sessions.open')).toBe(1);
    expect(p.get('bidiweb.store.errors{commit}')).toBeUndefined();
    await c.server.dispose();
    await provider.shutdown();
  });

  test('a handled message whose lease was taken meanwhile counts as a redelivery', async () => {
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 });
    const provider = new MeterProvider({ readers: [reader] });
    const store = new MemoryStore();
    // Instance B: the client's resend lands here while A's handler is stalled past its lease.
    const b = rawClient({ store, debug: false });
    const handledBy: string[] = [];
    let sid = '';
    const a = rawClient({
      store,
      leaseMs: 100,
      debug: false,
      meter: provider.getMeter('bidiweb'),
      onMessage: async () => {
        handledBy.push('a');
        // Stalled (a blocked event loop): no renewal runs, the lease expires; the resend then takes it.
        const until = Date.now() + 300;
        while (Date.now() < until);
        await b.send(sid, [[1, 'm']]);
      },
    });
    sid = await a.open();
    await a.send(sid, [[1, 'm']]);
    const p = await collect(reader, exporter);
    expect(p.get('bidiweb.redeliveries')).toBe(1);
    expect(p.get('bidiweb.messages.in')).toBe(1);
    await a.server.dispose();
    await b.server.dispose();
    await provider.shutdown();
  });
});

describe('the Prometheus sample (samples/metrics/server.ts)', () => {
  let sample: MetricsApp;
  let http: Server;
  let base: string;
  beforeAll(async () => {
    sample = createMetricsApp();
    http = await new Promise<Server>((resolve) => {
      const s = sample.app.listen(0, '127.0.0.1', () => resolve(s));
    });
    base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    http.closeAllConnections();
    await new Promise<void>((resolve) => http.close(() => resolve()));
    await sample.stop();
  });

  const scrape = async () => {
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    const values = new Map<string, number>();
    for (const line of (await res.text()).split('\n')) {
      const m = /^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)/.exec(line);
      if (m) values.set(m[1]!.replace(/,?otel_scope_name="[^"]*"|,?otel_scope_version="[^"]*"|,?otel_scope_schema_url="[^"]*"/g, '').replace('{}', ''), Number(m[2]));
    }
    return values;
  };

  test('counters move after real client traffic', async () => {
    const w = openWatched(`${base}/session`);
    await w.opened;
    await Promise.all(['a', 'b', 'c'].map((t) => w.s.send(t)));
    await waitFor('three echoes', () => w.received.length === 3);
    const v = await scrape();
    expect(v.get('bidiweb_sessions_opened_total')).toBe(1);
    expect(v.get('bidiweb_messages_in_total')).toBe(3);
    expect(v.get('bidiweb_messages_out_total')).toBe(3);
    expect(v.get('bidiweb_delivery_duration_count')).toBe(3);
    expect(v.get('bidiweb_store_duration_count{operation="create"}')).toBe(1);
    await w.s.close();
    const after = await scrape();
    expect(after.get('bidiweb_sessions_closed_total')).toBe(1);
  });
});

describe('metrics on RedisStore', () => {
  let redisServer: RedisProcess;
  beforeAll(async () => {
    redisServer = await startRedis();
  });
  afterAll(async () => {
    await redisServer?.stop();
  });

  test('the wrapped store runs its own methods (private state intact) and is counted', async () => {
    const redis = new Redis(redisServer.port, '127.0.0.1');
    const store = new RedisStore({ redis, prefix: 'obs:' });
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 });
    const provider = new MeterProvider({ readers: [reader] });
    const c = rawClient({ store, debug: false, meter: provider.getMeter('bidiweb'), onMessage: async (s, data) => void (await s.send({ echo: data })) });
    const sid = await c.open();
    expect((await c.send(sid, [[1, 'x'], [2, 'y']])).status).toBe(200);
    expect((await c.watch(sid)).body.msgs).toHaveLength(2);
    await c.close(sid);
    await reader.forceFlush();
    const names = new Map<string, number>();
    for (const rm of exporter.getMetrics()) for (const sm of rm.scopeMetrics) for (const m of sm.metrics) for (const dp of m.dataPoints as any[]) names.set(m.descriptor.name + (dp.attributes.operation ? `{${dp.attributes.operation}}` : ''), typeof dp.value === 'number' ? dp.value : dp.value.count);
    expect(names.get('bidiweb.sessions.opened')).toBe(1);
    expect(names.get('bidiweb.sessions.closed')).toBe(1);
    expect(names.get('bidiweb.messages.in')).toBe(2);
    expect(names.get('bidiweb.messages.out')).toBe(2);
    expect(names.get('bidiweb.store.duration{receive}')).toBe(1);
    await c.server.dispose();
    await provider.shutdown();
    await store.dispose();
    await redis.quit();
  });

  test('a failing store call is counted as an error of its operation', async () => {
    const down = await startRedis();
    const redis = new Redis(down.port, '127.0.0.1', { maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
    const store = new RedisStore({ redis, prefix: 'obs2:' });
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 });
    const provider = new MeterProvider({ readers: [reader] });
    const c = rawClient({ store, debug: false, openLimit: false, meter: provider.getMeter('bidiweb'), onError: () => {} });
    await waitFor('the connection', () => redis.status === 'ready');
    expect(await c.open()).toMatch(/^[\w-]{22}$/);
    await down.kill(); // Redis gone: the next call fails
    await waitFor('the connection to drop', () => redis.status === 'end');
    expect(await c.open()).toBeUndefined(); // 503 STORE_UNAVAILABLE
    await reader.forceFlush();
    const errors = exporter.getMetrics().flatMap((rm) => rm.scopeMetrics.flatMap((sm) => sm.metrics)).find((m) => m.descriptor.name === 'bidiweb.store.errors');
    expect(errors?.dataPoints.map((dp) => [dp.attributes.operation, dp.value])).toEqual([['create', 1]]);
    await c.server.dispose();
    await provider.shutdown();
    await store.dispose().catch(() => {});
    redis.disconnect();
    await down.stop().catch(() => {});
  });
});
