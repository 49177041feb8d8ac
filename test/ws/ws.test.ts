/**
 * The WebSocket transport (bidiweb/ws `attach`, client `transport`): the
 * protocol checks that make sense over a socket (echo order, server pushes
 * from another instance, close, errors as replies and close codes, CORS on
 * the upgrade), exactly-once across a socket cut and a reconnect to another
 * instance over one RedisStore, and the `auto` fallback to HTTP when the
 * upgrade is refused or no frame comes. Instances are in-process Express
 * servers on their own ports; the client's WebSocket class is `ws`, routed
 * to whichever instance a test picks.
 */
import http from 'node:http';
import net from 'node:net';
import express from 'express';
import Koa from 'koa';
import Redis from 'ioredis';
import WebSocket, { WebSocketServer } from 'ws';
import { open, type BidiClientSession, type ClientOptions, type CloseEvent, type WebSocketConstructorLike } from '../../src/client';
import { MemoryStore, type BidiOptions, type BidiServer, type Store } from '../../src/core';
import { newToken } from '../../src/core/util';
import { bidiWeb } from '../../src/express';
import { bidiWeb as bidiKoa } from '../../src/koa';
import { RedisStore } from '../../src/redis';
import { attach, type WsAttachment } from '../../src/ws';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { waitFor } from '../helpers/client-session';

jest.setTimeout(60_000);

interface Node {
  port: number;
  url: string;
  server: BidiServer<any, any>;
  ws?: WsAttachment;
  close(): Promise<void>;
}

const nodes: Node[] = [];
const sessions: BidiClientSession[] = [];

async function startNode(options: BidiOptions<any, any> & { store: Store }, withWs = true, pingMs = 1000): Promise<Node> {
  const app = express();
  const middleware = bidiWeb({ onError: () => {}, ...options });
  app.use(middleware);
  const httpServer = http.createServer(app);
  const ws = withWs ? attach(httpServer, middleware, { pingMs }) : undefined;
  await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const port = (httpServer.address() as { port: number }).port;
  const node: Node = {
    port,
    url: `http://127.0.0.1:${port}/session`,
    server: middleware.server,
    ...(ws ? { ws } : {}),
    async close() {
      await ws?.close();
      httpServer.closeAllConnections();
      await new Promise((resolve) => httpServer.close(resolve));
      await middleware.server.dispose();
    },
  };
  nodes.push(node);
  return node;
}

/** A `ws` WebSocket that connects to `route.port` whatever port the client's URL names; remembers its sockets. */
function routedWebSocket(route: { port: number }): { WebSocket: WebSocketConstructorLike; sockets: WebSocket[] } {
  const sockets: WebSocket[] = [];
  class Routed extends WebSocket {
    constructor(url: string, protocols?: string | string[], options?: WebSocket.ClientOptions) {
      const u = new URL(url);
      u.port = String(route.port);
      super(u.toString(), protocols, options);
      sockets.push(this);
    }
  }
  return { WebSocket: Routed as unknown as WebSocketConstructorLike, sockets };
}

function client(url: string, options: ClientOptions): { s: BidiClientSession; received: unknown[]; closed: CloseEvent[]; errors: string[] } {
  const s = open(url, { retry: { initialDelayMs: 20, maxDelayMs: 200 }, resendAfterMs: 500, ...options });
  sessions.push(s);
  const received: unknown[] = [];
  const closed: CloseEvent[] = [];
  const errors: string[] = [];
  s.on('message', (m) => received.push(m));
  s.on('close', (e) => closed.push(e));
  s.on('error', (e) => errors.push(e.message));
  return { s, received, closed, errors };
}

afterEach(async () => {
  await Promise.all(sessions.splice(0).map((s) => s.close()));
  await Promise.all(nodes.splice(0).map((n) => n.close()));
});

const echo: BidiOptions<any, any>['onMessage'] = (session, data) => void session.send({ echo: data });

/** A raw socket on `node` (no client): frames as parsed JSON, and how it closed. */
async function rawSocket(node: Node, headers: Record<string, string> = {}): Promise<{ ws: WebSocket; frames: any[]; closed: Promise<{ code: number; reason: string }> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${node.port}/session/ws`, { headers });
  const frames: any[] = [];
  // A message carries one frame per line.
  ws.on('message', (d) => frames.push(...String(d).split('\n').map((line) => JSON.parse(line))));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return { ws, frames, closed };
}

async function openSid(node: Node): Promise<string> {
  const r = await fetch(node.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"v":1}' });
  return ((await r.json()) as { sid: string }).sid;
}

describe('over one instance (MemoryStore)', () => {
  it('echoes in order, each once, and carries pushes from outside any request', async () => {
    const node = await startNode({ store: new MemoryStore(), onMessage: echo });
    const route = routedWebSocket(node);
    const c = client(node.url, { transport: 'websocket', WebSocket: route.WebSocket });
    const n = 300;
    const sends: Promise<void>[] = [];
    for (let i = 1; i <= n; i++) sends.push(c.s.send(i));
    await Promise.all(sends);
    await waitFor('echoes', () => c.received.length >= n);
    await node.server.hub.send(c.s.id!, 'pushed');
    await waitFor('push', () => c.received.length === n + 1);
    expect(c.received).toEqual([...Array.from({ length: n }, (_, i) => ({ echo: i + 1 })), 'pushed']);
    expect(c.s.activeTransport).toBe('websocket');
    expect(route.sockets).toHaveLength(1);
    expect(node.ws!.sockets).toBe(1);
    expect(c.errors).toEqual([]);
  });

  it('delivers a server close after every message sent before it; onClose runs once; a client close ends the socket', async () => {
    const closes: string[] = [];
    const node = await startNode({
      store: new MemoryStore(),
      onMessage: async (session, data) => {
        await session.send({ echo: data });
        if (data === 'bye') await session.close('done');
      },
      onClose: (_s, reason) => void closes.push(reason),
    });
    const route = routedWebSocket(node);
    const c = client(node.url, { transport: 'websocket', WebSocket: route.WebSocket });
    await c.s.send('a');
    await c.s.send('bye');
    await waitFor('close', () => c.closed.length === 1);
    expect(c.received).toEqual([{ echo: 'a' }, { echo: 'bye' }]);
    expect(c.closed[0]).toMatchObject({ code: 'SERVER', reason: 'done' });
    expect(closes).toEqual(['done']);
    await waitFor('socket closed', () => node.ws!.sockets === 0);

    const d = client(node.url, { transport: 'websocket', WebSocket: route.WebSocket });
    await d.s.send('x');
    await d.s.close();
    expect(d.closed[0]).toMatchObject({ code: 'CLIENT' });
    await waitFor('onClose client', () => closes.length === 2);
    expect(closes[1]).toBe('client');
    await waitFor('socket closed', () => node.ws!.sockets === 0);
  });

  it('answers request errors as HTTP would (status, code), and frame errors with close codes', async () => {
    const node = await startNode({ store: new MemoryStore(), onMessage: echo, limits: { maxMessageBytes: 1000 } });
    const sid = await openSid(node);

    // A bad first frame: the socket is closed with 4400 and the error code.
    const bad = await rawSocket(node);
    bad.ws.send('{"sid":"not-a-session-id"}');
    expect(await bad.closed).toEqual({ code: 4400, reason: 'MISSING_SESSION_ID' });

    const raw = await rawSocket(node);
    raw.ws.send(JSON.stringify({ sid }));
    await waitFor('ready', () => raw.frames.length === 1);
    expect(raw.frames[0]).toEqual({ ready: true, v: 1 });
    raw.ws.send('{"id":1,"send":{"msgs":[[1,"hi"]],"ack":0}}');
    raw.ws.send('{"id":2,"send":{"msgs":[[2,"' + 'x'.repeat(2000) + '"]]}}');
    raw.ws.send('{"id":3,"send":{"msgs":[[300,"far"]]}}');
    raw.ws.send('{"id":4,"send":{"msgs":"nope"}}');
    raw.ws.send('{"id":5,"watch":{"ack":9}}');
    await waitFor('replies', () => raw.frames.length === 6);
    const byId = new Map(raw.frames.slice(1).map((f) => [f.id, f]));
    expect(byId.get(1)).toEqual({ id: 1, status: 200, body: { ack: 1 } });
    expect(byId.get(2)).toMatchObject({ status: 413, body: { error: { code: 'MESSAGE_TOO_LARGE' } } });
    expect(byId.get(3)).toMatchObject({ status: 429, retryAfter: '1', body: { error: { code: 'SEQ_OUT_OF_WINDOW' } } });
    expect(byId.get(4)).toMatchObject({ status: 400, body: { error: { code: 'BAD_REQUEST' } } });
    expect(byId.get(5)).toMatchObject({ status: 400, body: { error: { code: 'INVALID_ACK' } } });

    // A frame that is not a request: closed with 4400 BAD_REQUEST.
    raw.ws.send('{"what":1}');
    expect(await raw.closed).toEqual({ code: 4400, reason: 'BAD_REQUEST' });

    // A socket to an instance whose store does not know the session: SESSION_LOST, as over HTTP.
    const stranger = await startNode({ store: new MemoryStore(), onMessage: echo });
    const c = client(node.url, { transport: 'websocket', WebSocket: routedWebSocket(stranger).WebSocket });
    await c.s.send('first').catch(() => {});
    await waitFor('lost', () => c.closed.length === 1, 10_000);
    expect(c.closed[0]).toMatchObject({ code: 'SESSION_LOST', status: 404, errorCode: 'UNKNOWN_SESSION' });
  });

  it('runs authorize on every request over the socket and ends the session on its refusal', async () => {
    let allow = true;
    const node = await startNode({
      store: new MemoryStore(),
      onMessage: echo,
      authorize: ({ headers }) => {
        if (!allow || headers.get('authorization') !== 'Bearer t') throw Object.assign(new Error('no'), {});
      },
    });
    const c = client(node.url, { transport: 'websocket', WebSocket: routedWebSocket(node).WebSocket, headers: { authorization: 'Bearer t' } });
    await c.s.send(1);
    await waitFor('echo', () => c.received.length === 1);
    allow = false;
    await c.s.send(2).catch(() => {});
    await waitFor('closed', () => c.closed.length === 1);
    expect(c.closed[0]).toMatchObject({ code: 'PROTOCOL_ERROR', status: 403, errorCode: 'FORBIDDEN' });
  });

  it('attaches to a Koa server the same way (app.listen returns the http.Server)', async () => {
    const app = new Koa();
    const middleware = bidiKoa({ store: new MemoryStore(), onMessage: echo, onError: () => {} });
    app.use(middleware);
    const httpServer = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => httpServer.once('listening', resolve));
    const sockets = attach(httpServer, middleware);
    const port = (httpServer.address() as { port: number }).port;
    try {
      const c = client(`http://127.0.0.1:${port}/session`, { transport: 'websocket', WebSocket: routedWebSocket({ port }).WebSocket });
      await c.s.send('k');
      await waitFor('echo', () => c.received.length === 1);
      expect(c.received).toEqual([{ echo: 'k' }]);
      expect(sockets.sockets).toBe(1);
      await c.s.close();
    } finally {
      await sockets.close();
      httpServer.closeAllConnections();
      await new Promise((resolve) => httpServer.close(resolve));
      await middleware.server.dispose();
    }
  });

  it("applies the core's CORS and allowedHosts policy to the upgrade", async () => {
    const node = await startNode({ store: new MemoryStore(), cors: { origins: ['https://app.example'] } });
    const refused = (headers: Record<string, string>) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(`ws://127.0.0.1:${node.port}/session/ws`, { headers });
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () => {
          ws.close();
          resolve(101);
        });
        ws.on('error', () => {});
      });
    expect(await refused({ origin: 'https://evil.example' })).toBe(403);
    // DNS rebinding: Origin and Host both the attacker's name.
    expect(await refused({ origin: 'http://evil.example', host: 'evil.example' })).toBe(403);
    expect(await refused({ origin: 'https://app.example' })).toBe(101);
    expect(await refused({})).toBe(101);
  });

  it('closes a CORS-refused upgrade itself, even when the client never ends its side', async () => {
    const node = await startNode({ store: new MemoryStore(), cors: { origins: ['https://app.example'] } });
    // allowHalfOpen: this client never ends its side; only the server can close the connection.
    const raw = net.connect({ port: node.port, host: '127.0.0.1', allowHalfOpen: true });
    raw.setEncoding('utf8');
    raw.on('error', () => {});
    let answer = '';
    raw.on('data', (chunk: string) => (answer += chunk));
    const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
    const ended = new Promise<void>((resolve) => raw.once('end', () => resolve()));
    raw.write(
      'GET /session/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
    await ended;
    expect(answer).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
    expect(answer).toContain('"CORS_FORBIDDEN"');
    // A connection the server only half-closed would take these bytes quietly; a destroyed one resets.
    let isClosed = false;
    void closed.then(() => (isClosed = true));
    for (let i = 0; i < 40 && !isClosed; i++) {
      raw.write('x');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(isClosed).toBe(true);
    raw.destroy();
  });
});

/** A loopback relay whose connections can be frozen: open, but nothing passes either way (a dead path). */
async function freezableRelay(upstreamPort: number): Promise<{ port: number; freeze(): void; close(): Promise<void> }> {
  const pairs: Array<[net.Socket, net.Socket]> = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(upstreamPort, '127.0.0.1');
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
    pairs.push([client, upstream]);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    freeze() {
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    },
    async close() {
      for (const [client, upstream] of pairs) {
        client.destroy();
        upstream.destroy();
      }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('liveness', () => {
  it('a dead path is found on both sides (client: silent past the heartbeats; server: no pong), and the session carries on over a new socket', async () => {
    const node = await startNode({ store: new MemoryStore(), onMessage: echo, heartbeatMs: 300 }, true, 200);
    const relay = await freezableRelay(node.port);
    try {
      const route = { port: relay.port };
      const c = client(node.url, { transport: 'websocket', WebSocket: routedWebSocket(route).WebSocket });
      await c.s.send(1);
      await waitFor('echo', () => c.received.length === 1);
      expect(node.ws!.sockets).toBe(1);
      relay.freeze();
      route.port = node.port;
      const started = Date.now();
      // Sent while the path is dead: delivered once, over the next socket.
      const sends = [2, 3, 4].map((i) => c.s.send(i));
      await waitFor('echoes over a new socket', () => c.received.length === 4, 10_000);
      expect(Date.now() - started).toBeLessThan(3 * 300 + 1000 + 3000);
      await Promise.all(sends);
      expect(c.received).toEqual([1, 2, 3, 4].map((i) => ({ echo: i })));
      expect(c.errors.some((e) => e.includes('silent'))).toBe(true);
      // The server dropped the frozen socket on its own (no pong within a ping interval).
      await waitFor('frozen socket dropped', () => node.ws!.sockets === 1, 5_000);
    } finally {
      await relay.close();
    }
  });
});

describe('auto falls back to HTTP', () => {
  it('when the upgrade is refused, and keeps order and exactly-once', async () => {
    const node = await startNode({ store: new MemoryStore(), onMessage: echo }, false);
    const c = client(node.url, { transport: 'auto', WebSocket: routedWebSocket(node).WebSocket });
    for (let i = 1; i <= 20; i++) void c.s.send(i);
    await waitFor('echoes', () => c.received.length === 20);
    expect(c.received).toEqual(Array.from({ length: 20 }, (_, i) => ({ echo: i + 1 })));
    expect(c.s.activeTransport).toBe('http');
    expect(c.errors.some((e) => e.includes('using HTTP'))).toBe(true);
  });

  it('when the socket opens but no frame comes in time', async () => {
    const node = await startNode({ store: new MemoryStore(), onMessage: echo }, false);
    // Something at the path that takes upgrades and says nothing (a proxy holding frames back).
    const silent = new WebSocketServer({ noServer: true });
    const sockets: WebSocket[] = [];
    const httpServer = http.createServer();
    httpServer.on('upgrade', (req, socket, head) => silent.handleUpgrade(req, socket, head, (ws) => sockets.push(ws)));
    await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
    try {
      const c = client(node.url, { transport: 'auto', connectTimeoutMs: 300, WebSocket: routedWebSocket({ port: (httpServer.address() as { port: number }).port }).WebSocket });
      await c.s.send('a');
      await waitFor('echo', () => c.received.length === 1);
      expect(c.received).toEqual([{ echo: 'a' }]);
      expect(sockets.length).toBeGreaterThan(0);
      expect(c.s.activeTransport).toBe('http');
    } finally {
      for (const ws of sockets) ws.terminate();
      silent.close();
      await new Promise((resolve) => httpServer.close(resolve));
    }
  });
});

describe('websocket without fallback', () => {
  it('retries a socket that does not come up, and close() while it is connecting ends the session at once', async () => {
    const node = await startNode({ store: new MemoryStore(), onMessage: echo }, false);
    const c = client(node.url, { transport: 'websocket', connectTimeoutMs: 200, closeTimeoutMs: 300, WebSocket: routedWebSocket(node).WebSocket });
    void c.s.send('never').catch(() => {});
    await waitFor('a retry', () => c.errors.some((e) => e.includes('WebSocket')), 5_000);
    expect(c.s.activeTransport).toBe('websocket');
    const started = Date.now();
    await c.s.close();
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(c.closed).toHaveLength(1);
    expect(c.closed[0]!.code).toBe('CLIENT');
  });
});

describe('two instances over one RedisStore', () => {
  let redis: RedisProcess;
  let conns: Redis[] = [];
  let stores: RedisStore[] = [];
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(async () => {
    await redis.stop();
  });
  afterEach(async () => {
    await Promise.all(sessions.splice(0).map((s) => s.close()));
    await Promise.all(nodes.splice(0).map((n) => n.close()));
    await Promise.all(stores.splice(0).map((s) => s.dispose()));
    await Promise.all(conns.splice(0).map((c) => c.quit()));
  });

  async function pair(options: BidiOptions<any, any>): Promise<[Node, Node]> {
    const prefix = `ws${newToken()}:`;
    const make = () => {
      const conn = new Redis(redis.port, '127.0.0.1');
      conns.push(conn);
      const store = new RedisStore({ redis: conn, prefix });
      stores.push(store);
      return store;
    };
    return [await startNode({ ...options, store: make() }), await startNode({ ...options, store: make() })];
  }

  it("a socket on A receives what B appends (the store's wake-ups)", async () => {
    const [a, b] = await pair({ onMessage: echo });
    const c = client(a.url, { transport: 'websocket', WebSocket: routedWebSocket(a).WebSocket });
    await c.s.send('hello');
    await waitFor('echo', () => c.received.length === 1);
    for (let i = 1; i <= 50; i++) await b.server.hub.send(c.s.id!, { fromB: i });
    await waitFor('pushes', () => c.received.length === 51);
    expect(c.received.slice(1)).toEqual(Array.from({ length: 50 }, (_, i) => ({ fromB: i + 1 })));
    expect(a.ws!.sockets).toBe(1);
    expect(b.ws!.sockets).toBe(0);
  });

  it('keeps exactly-once and order both ways across socket cuts and reconnects to the other instance', async () => {
    const handled: number[] = [];
    const [a, b] = await pair({ onMessage: (_s, data) => void handled.push(data as number) });
    const route = { port: a.port };
    const routed = routedWebSocket(route);
    const c = client(a.url, { transport: 'websocket', WebSocket: routed.WebSocket });
    await waitFor('open', () => c.s.state === 'open');
    const n = 400;
    const sends: Promise<void>[] = [];
    let cuts = 0;
    for (let i = 1; i <= n; i++) {
      sends.push(c.s.send(i));
      // Pushes from both instances, interleaved with the client's sends.
      await (i % 2 ? a : b).server.hub.send(c.s.id!, i, { whenFull: 'wait' });
      if (i % 100 === 50) {
        // Cut the socket abruptly (no close frame) and send the next one to the other instance.
        route.port = route.port === a.port ? b.port : a.port;
        routed.sockets.at(-1)!.terminate();
        cuts++;
      }
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    await Promise.all(sends);
    await waitFor('all pushes', () => c.received.length >= n, 20_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(handled).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(c.received).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(cuts).toBe(4);
    expect(routed.sockets.length).toBeGreaterThanOrEqual(cuts + 1);
    expect(c.s.activeTransport).toBe('websocket');
    expect(c.closed).toEqual([]);
  });

  it("switches from WebSocket to HTTP mid-session ('auto') without losing, repeating or reordering", async () => {
    const handled: number[] = [];
    const [a, b] = await pair({ onMessage: async (s, data) => void handled.push(data as number) });
    // B serves no upgrades: once the socket on A is cut and the next one goes to B, 'auto' falls back.
    await b.ws!.close();
    const route = { port: a.port };
    const routed = routedWebSocket(route);
    const c = client(a.url, { transport: 'auto', connectTimeoutMs: 500, WebSocket: routed.WebSocket });
    await waitFor('open', () => c.s.state === 'open');
    const n = 200;
    const sends: Promise<void>[] = [];
    for (let i = 1; i <= n; i++) {
      sends.push(c.s.send(i));
      await b.server.hub.send(c.s.id!, i, { whenFull: 'wait' });
      if (i === 100) {
        expect(c.s.activeTransport).toBe('websocket');
        route.port = b.port;
        routed.sockets.at(-1)!.terminate();
      }
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    await Promise.all(sends);
    await waitFor('all pushes', () => c.received.length >= n, 20_000);
    expect(handled).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(c.received).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(c.s.activeTransport).toBe('http');
  });
});
