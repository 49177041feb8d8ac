/**
 * README guarantee 2 through one server object: a handler's sends to a group member wait for a
 * publish the same object called before them and that is still in progress (the store is held
 * inside `publish`), whether they ride on the delivery's commit or go by an append.
 */
import { BidiServer, MemoryStore } from '../../src/core';
import { gated } from '../helpers/gated';
import { bidiRequest } from '../model/harness';

async function messagesOf(server: BidiServer, sid: string): Promise<unknown[]> {
  const res = await server.handle(bidiRequest('GET', '/session/watch', { headers: { 'bidi-sid': sid }, query: { ack: 0, wait: 0 } }));
  return (JSON.parse(String(res!.body)) as { msgs: unknown[] }).msgs;
}

describe.each([
  ['not awaited (rides on the commit)', false],
  ['awaited (an append)', true],
])('a handler’s send, %s, after a publish of the same object still in progress', (_name, awaited) => {
  it('comes after the publish', async () => {
    const held = gated(new MemoryStore(), 'publish');
    const server = new BidiServer({
      store: held.store,
      sweepInterval: 0,
      async onMessage(session, data) {
        if (awaited) await session.send({ ok: data });
        else void session.send({ ok: data });
      },
    });
    try {
      const opened = await server.handle(bidiRequest('POST', '/session', { body: '{"v":1}' }));
      const sid = (JSON.parse(String(opened!.body)) as { sid: string }).sid;
      expect(await server.hub.join(sid, 'room')).toBe(true);
      const publishing = server.hub.publish('room', 'news');
      await held.reached;
      const sending = server.handle(bidiRequest('POST', '/session/send', { headers: { 'bidi-sid': sid }, body: '{"msgs":[[1,"x"]]}' }));
      await new Promise((resolve) => setTimeout(resolve, 50)); // without the ordering, the reply would be stored by now
      held.release();
      expect(await publishing).toEqual({ sent: 1, failed: [] });
      expect((await sending)!.status).toBe(200);
      expect(await messagesOf(server, sid)).toEqual([
        [1, 'news'],
        [2, { ok: 'x' }],
      ]);
    } finally {
      await server.dispose();
    }
  });
});
