/**
 * No listener piles up on a long-lived AbortSignal, however many requests a
 * process runs at once. This suite's environment
 * (test/helpers/listener-leak-environment.js) fails any test during which Node
 * emits a `MaxListenersExceededWarning`, so the tests below only have to do
 * what used to trigger it: many sessions closing at once (each DELETE added a
 * listener to one process-wide signal) and more than 10 send POSTs of one
 * session in flight (each added one to the session's sender signal).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { open, type BidiClientSession } from '../../src/client';
import { BidiServer } from '../../src/core';
import { sleep } from '../../src/core/util';
import { createNodeHandler } from '../../src/node';

let server: BidiServer<any, any>;
let httpServer: http.Server;
let base: string;
/** Send POSTs the server holds at once (so that a test can keep many in flight). */
let holdSends = 0;

beforeAll(async () => {
  server = new BidiServer({ sweepInterval: 0, wait: 500 });
  const handle = createNodeHandler(server);
  httpServer = http.createServer((req, res) => {
    const delay = req.url?.startsWith('/session/send') ? holdSends : 0;
    setTimeout(() => void handle(req, res), delay);
  });
  await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', () => r()));
  base = `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}/session`;
});

afterAll(async () => {
  httpServer.closeAllConnections();
  await new Promise<void>((r) => httpServer.close(() => r()));
  await server.dispose();
});

function opened(s: BidiClientSession): Promise<void> {
  return new Promise((resolve, reject) => {
    s.once('open', () => resolve());
    s.once('close', (e) => reject(new Error(`closed: ${e.code} ${e.reason}`)));
  });
}

it('20 sessions of one process close at once (20 DELETEs in flight)', async () => {
  const sessions = Array.from({ length: 20 }, () => open(base));
  await Promise.all(sessions.map(opened));
  await Promise.all(sessions.map((s, i) => s.send(i)));
  await Promise.all(sessions.map((s) => s.close()));
  expect(sessions.map((s) => s.closeEvent?.code)).toEqual(sessions.map(() => 'CLIENT'));
});

it('one session with 16 send POSTs in flight, then closed while they are', async () => {
  const s = open(base, { maxInflight: 16, closeTimeoutMs: 100 });
  await opened(s);
  holdSends = 300;
  try {
    // 16 POSTs of one message each: every send() in its own task gets its own batch.
    const sends: Promise<void>[] = [];
    for (let i = 0; i < 16; i++) {
      sends.push(s.send(i));
      await sleep(2);
    }
    await Promise.all(sends);
    // Again, and close while they are held: the drain (closeTimeoutMs) ends first and the POSTs are aborted.
    for (let i = 0; i < 16; i++) {
      void s.send(i).catch(() => {});
      await sleep(2);
    }
    await s.close();
    expect(s.closeEvent?.reason).toMatch(/unacked message/);
  } finally {
    holdSends = 0;
  }
});

it('many sends and watches over one long session (streaming and plain)', async () => {
  for (const stream of [false, true]) {
    const s = open(base, { stream, wait: 50 });
    await opened(s);
    for (let round = 0; round < 30; round++) {
      await Promise.all(Array.from({ length: 5 }, (_, i) => s.send({ round, i })));
      await server.hub.send(s.id!, round);
    }
    await sleep(200); // several watches come and go
    await s.close();
    expect(s.closeEvent?.code).toBe('CLIENT');
  }
});
