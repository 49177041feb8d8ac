/**
 * Smoke test of the NestJS chat sample (samples/nest): the real Nest app on
 * a free port, sessions opened with the real client (src/client).
 */
import type { NestExpressApplication } from '@nestjs/platform-express';
import type { AddressInfo } from 'node:net';
import vm from 'node:vm';
import { ofType, twoInARoom } from '../helpers/chat-scenario';
import { openWatched, waitFor } from '../helpers/client-session';
import { createNestChatApp } from '../../samples/nest/app.module';

let app: NestExpressApplication;
let base: string;
const logged: string[] = [];

beforeAll(async () => {
  app = await createNestChatApp({ sweepInterval: 0, log: (line) => logged.push(line), logger: false });
  await app.listen(0, '127.0.0.1');
  base = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
});

afterAll(async () => {
  app.getHttpServer().closeAllConnections();
  await app.close();
});

const join = (nick: string, room: string) => openWatched(`${base}/session`, { meta: { nick, room } });


test('two sessions in a room: join, presence, say in order, leave', async () => {
  const { ann } = await twoInARoom(join);
  await ann.s.close();
});

test('bad messages get an error back (the catch-all @OnMessage), nothing is published', async () => {
  const cy = join('cy', 'bad-room');
  await cy.opened;
  await cy.s.send({ type: 'say', text: 'x'.repeat(2001) });
  await cy.s.send({ type: 'shout', text: 'hi' });
  await cy.s.send({ type: 'say', text: 42 });
  await cy.s.send('not even an object');
  await waitFor('four errors', () => ofType(cy.received, 'error').length === 4);
  expect(ofType(cy.received, 'error').map((m) => m.message)).toEqual([
    'a message may be at most 2000 characters',
    'unknown message',
    'unknown message',
    'unknown message',
  ]);
  expect(ofType(cy.received, 'said')).toEqual([]);
  expect(cy.received[0]).toMatchObject({ type: 'joined', nick: 'cy' });
  await cy.s.close();
});

test('a bad nick or room is rejected with 400 by @OnOpen', async () => {
  const bad = join('', 'lobby');
  await expect(bad.opened).rejects.toMatchObject({ code: 'REJECTED', status: 400 });
  const badRoom = join('dee', 'Not A Room');
  await expect(badRoom.opened).rejects.toMatchObject({ code: 'REJECTED', status: 400 });
});

test('serves the chat page and the client bundle next to the session routes', async () => {
  const page = await fetch(`${base}/`);
  expect(page.status).toBe(200);
  expect(await page.text()).toContain('<script src="bidiweb.js">');
  const js = await fetch(`${base}/bidiweb.js`);
  expect(js.status).toBe(200);
  expect(js.headers.get('content-type')).toMatch(/^text\/javascript/);
  const sandbox: Record<string, any> = {};
  vm.runInNewContext(await js.text(), sandbox);
  expect(typeof sandbox.bidiweb.open).toBe('function');
});

test('no errors were logged', () => {
  expect(logged).toEqual([]);
});
