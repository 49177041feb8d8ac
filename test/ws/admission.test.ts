/**
 * bidiweb/ws admission (src/ws/admission.ts): upgrades past `maxSockets` or
 * `maxSocketsPerClient` are refused before the upgrade with a JSON error and
 * Retry-After; a closed socket frees its place; a client on `transport:
 * 'auto'` refused a socket uses HTTP.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { open, type WebSocketConstructorLike } from '../../src/client';
import { BidiServer } from '../../src/core';
import { BidiError } from '../../src/core/errors';
import { createNodeHandler } from '../../src/node';
import { attach, type AttachOptions, type WsAttachment } from '../../src/ws';
import { waitFor } from '../helpers/client-session';

let server: http.Server;
let bidi: BidiServer;
let sockets: WsAttachment;
let base: string;

async function start(options: AttachOptions): Promise<void> {
  bidi = new BidiServer({ sweepInterval: 0, onMessage: (s, m) => void s.send(m) });
  const handle = createNodeHandler(bidi);
  server = http.createServer((req, res) => {
    void handle(req, res).then((served) => {
      if (!served) res.writeHead(404).end();
    });
  });
  sockets = attach(server, bidi, options);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  base = `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

afterEach(async () => {
  await sockets?.close();
  server?.closeAllConnections();
  await new Promise<void>((r) => server?.close(() => r()));
  await bidi?.dispose();
});

/** Resolves the open socket, or the refusal's status, headers and body. */
function upgrade(headers: Record<string, string> = {}): Promise<WebSocket | { status: number; retryAfter?: string; body: any }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${base}/session/ws`, { headers });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, retryAfter: res.headers['retry-after'] as string | undefined, body: JSON.parse(text) }));
    });
    ws.once('error', reject);
  });
}

it('maxSockets: the next upgrade gets 503 SOCKETS_FULL with Retry-After; a closed socket frees its place', async () => {
  await start({ maxSockets: 2, clientKey: false });
  const a = (await upgrade()) as WebSocket;
  const b = (await upgrade()) as WebSocket;
  expect(a).toBeInstanceOf(WebSocket);
  expect(b).toBeInstanceOf(WebSocket);
  const refused = await upgrade();
  expect(refused).toEqual({ status: 503, retryAfter: '5', body: { error: { code: 'SOCKETS_FULL', message: expect.any(String) } } });
  expect(sockets.refused).toBe(1);
  a.terminate();
  let c: Awaited<ReturnType<typeof upgrade>> | undefined;
  for (let i = 0; i < 50 && !(c instanceof WebSocket); i++) {
    await new Promise((r) => setTimeout(r, 20));
    c = await upgrade();
  }
  expect(c).toBeInstanceOf(WebSocket);
  (c as WebSocket).terminate();
  b.terminate();
});

it('maxSocketsPerClient counts per client key: one key is refused with 429 TOO_MANY_SOCKETS, another still gets in', async () => {
  await start({ maxSocketsPerClient: 1, clientKey: (req) => req.headers['x-client'] as string });
  const a = (await upgrade({ 'x-client': 'one' })) as WebSocket;
  expect(await upgrade({ 'x-client': 'one' })).toEqual({ status: 429, retryAfter: '5', body: { error: { code: 'TOO_MANY_SOCKETS', message: expect.any(String) } } });
  const b = await upgrade({ 'x-client': 'two' });
  expect(b).toBeInstanceOf(WebSocket);
  a.terminate();
  (b as WebSocket).terminate();
});

it("a refused client on transport 'auto' falls back to HTTP and carries on", async () => {
  await start({ maxSockets: 1, clientKey: false });
  const hog = (await upgrade()) as WebSocket;
  const s = open(`http://${base}/session`, { transport: 'auto', WebSocket: WebSocket as unknown as WebSocketConstructorLike, connectTimeoutMs: 2_000 });
  const got: unknown[] = [];
  s.on('message', (m) => got.push(m));
  s.on('error', () => {});
  await s.send('a');
  await s.send('b');
  await waitFor('echoes', () => got.length === 2);
  expect(got).toEqual(['a', 'b']);
  expect(s.activeTransport).toBe('http');
  expect(sockets.refused).toBeGreaterThanOrEqual(1);
  await s.close();
  hog.terminate();
});

it('bad limits are setup errors', () => {
  const srv = http.createServer();
  expect(() => attach(srv, new BidiServer({ sweepInterval: 0 }), { maxSockets: 0 })).toThrow(BidiError);
  expect(() => attach(srv, new BidiServer({ sweepInterval: 0 }), { maxSocketsPerClient: 1.5 })).toThrow(/maxSocketsPerClient/);
});
