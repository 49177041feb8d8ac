/**
 * Smoke test of the Koa sample (samples/koa/server.ts): the real app on a
 * free port, sessions opened with the real client (src/client).
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { openWatched, waitFor } from '../helpers/client-session';
import { createEchoApp } from '../../samples/koa/server';
import type { EchoApp } from '../../samples/koa/server';

let echo: EchoApp;
let server: Server;
let base: string;
const logged: string[] = [];

beforeAll(async () => {
  echo = createEchoApp({ tickMs: 50, sweepInterval: 0, log: (line) => logged.push(line) });
  server = await new Promise<Server>((resolve) => {
    const s = echo.app.listen(0, '127.0.0.1', () => resolve(s));
  });
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await echo.stop();
});

const connect = () => openWatched(`${base}/session`);

const ofType = (msgs: any[], type: string) => msgs.filter((m) => m.type === type);

test('welcome, echoes in send() order, and ticks pushed from a timer', async () => {
  const a = connect();
  await a.opened;
  const texts = ['one', 'two', { three: 3 }, 'four'];
  await Promise.all(texts.map((t) => a.s.send(t)));
  await waitFor('echoes and ticks', () => ofType(a.received, 'echo').length === texts.length && ofType(a.received, 'tick').length >= 3);
  expect(a.received[0]).toEqual({ type: 'welcome', tickMs: 50 });
  expect(ofType(a.received, 'echo')).toEqual(texts.map((data, i) => ({ type: 'echo', seq: i + 1, data })));
  const ns = ofType(a.received, 'tick').map((m) => m.n);
  expect(ns).toEqual([...ns].sort((x, y) => x - y)); // in order, each once
  expect(new Set(ns).size).toBe(ns.length);
  await a.s.close();
  expect(a.closed).toEqual([expect.objectContaining({ code: 'CLIENT' })]);
});

test('ticks reach every open session', async () => {
  const [a, b] = [connect(), connect()];
  await Promise.all([a.opened, b.opened]);
  await waitFor('ticks on both', () => ofType(a.received, 'tick').length >= 2 && ofType(b.received, 'tick').length >= 2);
  await Promise.all([a.s.close(), b.s.close()]);
});

test('other paths are left to Koa', async () => {
  const res = await fetch(`${base}/`);
  expect(res.status).toBe(200);
  expect(await res.text()).toContain('bidiweb echo sample');
  expect((await fetch(`${base}/nope`)).status).toBe(404);
});

test('no errors were logged', () => {
  expect(logged).toEqual([]);
});
