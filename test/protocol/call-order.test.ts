/**
 * README guarantee 2 through one server object: a handler's sends to a group member wait for a
 * publish the same object called before them and that is still in progress (the store is held
 * inside `publish`), whether they ride on the delivery's commit or go by an append.
 */
import { BidiServer, MemoryStore } from '../../src/core';
import type { Store } from '../../src/core';
import { bidiRequest } from '../model/harness';

/** `publish` waits until `release()`; `reached` resolves once one is waiting. */
function heldPublish(inner: Store): { store: Store; reached: Promise<void>; release(): void } {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let reach!: () => void;
  const reached = new Promise<void>((resolve) => (reach = resolve));
  const store = new Proxy(inner, {
    get(target, key) {
      const value = Reflect.get(target, key, target) as unknown;
      if (typeof value !== 'function') return value;
      if (key !== 'publish') return value.bind(target);
      return async (...args: unknown[]) => {
        reach();
        await gate;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store, reached, release };
}

async function messagesOf(server: BidiServer, sid: string): Promise<unknown[]> {
  const res = await server.handle(bidiRequest('GET', '/session/watch', { headers: { 'bidi-sid': sid }, query: { ack: 0, wait: 0 } }));
  return (JSON.parse(String(res!.body)) as { msgs: unknown[] }).msgs;
}

describe.each([
  ['not awaited (rides on the commit)', false],
  ['awaited (an append)', true],
])('a handler’s send, %s, after a publish of the same object still in progress', (_name, awaited) => {
  it('comes after the publish', async () => {
    const held = heldPublish(new MemoryStore());
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
