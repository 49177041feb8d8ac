/**
 * Typed messages: `bidiWeb<User, State, In, Out>()` types `onMessage`'s data
 * and every server send, matching the client's `open<TIn, TOut>()`. The
 * `@ts-expect-error` lines are checked by the type-check (`npm run
 * typecheck`): each would compile, and fail it, if the types were loose.
 * The run itself is one real round trip through Express and the client.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { bidiWeb, createBidiServer, type ServerSession } from '../../src/express';
import { open } from '../../src/client';
import { BidiWebService } from '../../src/nest';

type ToServer = { type: 'say'; text: string };
type ToClient = { type: 'said'; text: string; n: number };

it('types onMessage data and server sends; a typed client and server talk', async () => {
  const seen: string[] = [];
  const mw = bidiWeb<{ name: string }, { n: number }, ToServer, ToClient>({
    sweepInterval: 0,
    onOpen(session) {
      session.user = { name: 'ada' };
      session.state = { n: 0 };
      // @ts-expect-error not a ToClient
      void session.send({ type: 'say', text: 'x' }).catch(() => {});
    },
    onMessage(session, msg) {
      // @ts-expect-error ToServer has no `n`
      void msg.n;
      seen.push(msg.text);
      session.state.n++;
      void session.send({ type: 'said', text: msg.text.toUpperCase(), n: session.state.n });
    },
  });
  const app = express();
  app.use(mw);
  const server = http.createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const s = open<ToClient, ToServer>(`http://127.0.0.1:${(server.address() as AddressInfo).port}/session`);
  try {
    const got: ToClient[] = [];
    const done = new Promise<void>((resolve) =>
      s.on('message', (msg) => {
        if (msg.type === 'said') got.push(msg);
        if (got.length === 2) resolve();
      }),
    );
    // @ts-expect-error the client sends ToServer
    void s.send({ type: 'said', text: 'no', n: 1 }).catch(() => {});
    await s.send({ type: 'say', text: 'hi' });
    await done;
    // The ill-typed sends went through all the same: types are not checked at run time.
    expect(got).toEqual([
      { type: 'said', text: 'NO', n: 1 },
      { type: 'said', text: 'HI', n: 2 },
    ]);
    expect(seen).toEqual(['no', 'hi']);
    expect(await mw.hub.send(s.id!, { type: 'said', text: 'from the hub', n: 0 })).toBeGreaterThan(0);
    // @ts-expect-error hub sends are Out too
    await expect(mw.hub.send(s.id!, 'a string')).resolves.toBeGreaterThan(0);
  } finally {
    await s.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await mw.server.dispose();
  }
});

it('defaults stay unknown: untyped servers accept anything (no explicit type arguments needed)', () => {
  const server = createBidiServer({
    sweepInterval: 0,
    onMessage(session: ServerSession, data) {
      const d: unknown = data;
      return session.send({ anything: d }).then(() => {});
    },
  });
  void server.hub.send('x'.repeat(22), 42).catch(() => {});
  void server.dispose();
});

it('BidiWebService<User, State, Out> types the Nest service the same way', () => {
  type Service = BidiWebService<{ name: string }, { n: number }, ToClient>;
  const call = (bidi: Service) => {
    void bidi.send('sid', { type: 'said', text: 'x', n: 1 });
    // @ts-expect-error not a ToClient
    void bidi.publish('room', { type: 'say', text: 'x' });
  };
  expect(typeof call).toBe('function');
});
