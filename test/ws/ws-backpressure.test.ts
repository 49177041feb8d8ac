/**
 * Client-side back-pressure over WebSocket (issue 16 item 3): while the
 * socket's `bufferedAmount` is above WEBSOCKET_HIGH_WATER_MARK, the client
 * holds its send frames instead of writing them. The socket goes through a
 * TCP relay that stops reading from the client (so TCP pushes back and the
 * client's socket buffers what it writes) while the app keeps calling
 * `send()`; the client's `bufferedAmount` must stay near the bound, and
 * once the relay reads again every message must reach the server's handler
 * exactly once, in order. Two ways to get there: a server whose inbound
 * buffer lets the sender put more than the bound in flight, and the default
 * limits (4 MiB in flight) with requests that time out during the stall and
 * are retried while their first frames still sit in the socket's buffer.
 */
import http from 'node:http';
import net from 'node:net';
import express from 'express';
import WebSocket from 'ws';
import { open, type BidiClientSession, type ClientOptions, type WebSocketConstructorLike } from '../../src/client';
import { WEBSOCKET_HIGH_WATER_MARK } from '../../src/client/websocket';
import { MemoryStore } from '../../src/core';
import { bidiWeb } from '../../src/express';
import { attach } from '../../src/ws';
import { waitFor } from '../helpers/client-session';

jest.setTimeout(60_000);

const PAD = 'x'.repeat(100_000);
// The default maxBodyBytes: a held frame is written whole once the socket is at or below the bound.
const MAX_FRAME = 1024 * 1024 + 1024;

/** A loopback relay whose client-side reads can be stopped (the kernel buffers fill, then the client's socket does). */
async function startPausableRelay(upstreamPort: number): Promise<{ port: number; pause(): void; resume(): void; close(): Promise<void> }> {
  const clients = new Set<net.Socket>();
  const all = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, '127.0.0.1');
    clients.add(client);
    all.add(client).add(upstream);
    client.on('data', (chunk) => upstream.write(chunk));
    upstream.on('data', (chunk) => client.write(chunk));
    for (const [a, b] of [[client, upstream], [upstream, client]] as const) {
      a.on('error', () => b.destroy());
      a.on('close', () => {
        all.delete(a);
        clients.delete(a);
        b.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    pause: () => clients.forEach((c) => c.pause()),
    resume: () => clients.forEach((c) => c.resume()),
    async close() {
      for (const s of all) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Run {
  /** Highest `bufferedAmount` of the client's socket seen while the relay read nothing. */
  peak: number;
  /** Its `bufferedAmount` at the end of the stall. */
  stalledAt: number;
  /** What the server's handler got during the stall, then in all. */
  handledDuringStall: number[];
  handled: number[];
  socketsOpened: number;
}

/** One session over a stalled socket: the app sends `messages` of 100 kB while the relay reads nothing for `stallMs`. */
async function stalledSession(messages: number, stallMs: number, limits: Record<string, number>, clientOptions: Partial<ClientOptions>): Promise<Run> {
  const handled: number[] = [];
  const app = express();
  const middleware = bidiWeb({
    store: new MemoryStore(),
    limits,
    onError: () => {},
    onMessage: (_session, data) => void handled.push((data as { i: number }).i),
  });
  app.use(middleware);
  const httpServer = http.createServer(app);
  // No server pings during the stall: the pongs would wait behind the relay too.
  const sockets = attach(httpServer, middleware, { pingMs: 60_000 });
  await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const port = (httpServer.address() as net.AddressInfo).port;
  cleanups.push(async () => {
    await sockets.close();
    httpServer.closeAllConnections();
    await new Promise((resolve) => httpServer.close(resolve));
    await middleware.server.dispose();
  });
  const relay = await startPausableRelay(port);
  cleanups.push(() => relay.close());

  // HTTP (the open) goes straight to the server; the socket through the relay.
  const clientSockets: WebSocket[] = [];
  class Relayed extends WebSocket {
    constructor(url: string, protocols?: string | string[], options?: WebSocket.ClientOptions) {
      const u = new URL(url);
      u.port = String(relay.port);
      super(u.toString(), protocols, options);
      clientSockets.push(this);
    }
  }
  const s: BidiClientSession = open(`http://127.0.0.1:${port}/session`, {
    transport: 'websocket',
    WebSocket: Relayed as unknown as WebSocketConstructorLike,
    ...clientOptions,
  });
  cleanups.push(() => s.close());
  await s.send({ i: -1 });
  expect(clientSockets).toHaveLength(1);
  const ws = clientSockets[0]!;

  relay.pause();
  const stallEnds = Date.now() + stallMs;
  let peak = 0;
  const sample = (): void => void (peak = Math.max(peak, ws.bufferedAmount));
  const sampler = setInterval(sample, 2);
  cleanups.push(() => clearInterval(sampler));
  const acked: Promise<void>[] = [];
  for (let i = 0; i < messages; i++) {
    acked.push(s.send({ i, pad: PAD }));
    // Ten at a time (they share a POST of ~1 MB), then the sender writes (or holds) its frames.
    if (i % 10 === 9) {
      await new Promise((resolve) => setTimeout(resolve, 1));
      sample();
    }
  }
  // Every drain poll (and, with short timeouts, retry) runs many times over while the relay reads nothing.
  while (Date.now() < stallEnds) await new Promise((resolve) => setTimeout(resolve, 20));
  sample();
  clearInterval(sampler);
  const stalledAt = ws.bufferedAmount;
  const handledDuringStall = handled.slice();

  relay.resume();
  await Promise.all(acked);
  await waitFor('every message handled', () => handled.length >= messages + 1, 20_000);
  return { peak, stalledAt, handledDuringStall, handled, socketsOpened: clientSockets.length };
}

const inOrder = (messages: number): number[] => [-1, ...Array.from({ length: messages }, (_, i) => i)];

test('a server that lets more than the bound be in flight: sends are held near the bound, then all delivered in order', async () => {
  // All 500 × 100 kB may be in flight at once, in up to 64 POSTs (more than loopback's TCP buffers take).
  const r = await stalledSession(500, 1_000, { inboundWindow: 1024, inboundBufferBytes: 64 * 1024 * 1024 }, { maxInflight: 64, requestTimeoutMs: 50_000 });
  expect(r.handledDuringStall).toEqual([-1]); // the stall was real: nothing of the 500 got through
  expect(r.peak).toBeGreaterThan(WEBSOCKET_HIGH_WATER_MARK); // the socket did back up past the bound
  expect(r.peak).toBeLessThanOrEqual(WEBSOCKET_HIGH_WATER_MARK + MAX_FRAME);
  expect(r.stalledAt).toBeLessThanOrEqual(WEBSOCKET_HIGH_WATER_MARK + MAX_FRAME);
  expect(r.handled).toEqual(inOrder(500));
  expect(r.socketsOpened).toBe(1); // the same socket throughout
  console.log(`50 MB in flight allowed: client bufferedAmount peak ${r.peak} B while stalled (bound ${WEBSOCKET_HIGH_WATER_MARK} B), ${r.stalledAt} B at the end of the stall`);
});

test('default limits, requests timing out during the stall: their retries are held, not buffered again', async () => {
  const r = await stalledSession(100, 3_000, {}, { requestTimeoutMs: 300, retry: { initialDelayMs: 20, maxDelayMs: 100 } });
  expect(r.handledDuringStall).toEqual([-1]);
  expect(r.peak).toBeGreaterThan(WEBSOCKET_HIGH_WATER_MARK);
  expect(r.peak).toBeLessThanOrEqual(WEBSOCKET_HIGH_WATER_MARK + MAX_FRAME);
  expect(r.stalledAt).toBeLessThanOrEqual(WEBSOCKET_HIGH_WATER_MARK + MAX_FRAME);
  // The copies written before their requests timed out arrive too: the server takes each seq once.
  expect(r.handled).toEqual(inOrder(100));
  expect(r.socketsOpened).toBe(1);
  console.log(`default limits, 300 ms timeouts: client bufferedAmount peak ${r.peak} B while stalled, ${r.stalledAt} B at the end of the stall`);
});
