/**
 * What a message handler receives is what the stored JSON text parses to, whether
 * the engine parses that text again or hands over the request's own parsed data
 * (its fast path): values JSON cannot carry back (-0, numbers beyond a double) come
 * as the stored text reads, and a seq the store already held keeps its first copy.
 */
import { BidiServer, MemoryStore } from '../../src/core';
import type { BidiRequest } from '../../src/core/http';

function request(method: string, path: string, body: string | undefined, sid?: string): BidiRequest {
  const headers = new Map<string, string>();
  if (body !== undefined) headers.set('content-type', 'application/json');
  if (sid) headers.set('bidi-sid', sid);
  return { method, path, query: new URLSearchParams(), headers: { get: (n) => headers.get(n.toLowerCase()) ?? null }, text: async () => body ?? '' };
}

async function setup() {
  const got: Array<{ seq: number; data: unknown }> = [];
  const server = new BidiServer({ sweepInterval: 0, store: new MemoryStore(), onMessage: (_s, data, info) => void got.push({ seq: info.seq, data }) });
  const opened = await server.handle(request('POST', '/session', '{"v":1}'));
  const sid = (JSON.parse(opened!.body) as { sid: string }).sid;
  const send = async (body: string) => {
    const res = await server.handle(request('POST', '/session/send', body, sid));
    expect(res!.status).toBe(200);
    return JSON.parse(res!.body) as { ack: number };
  };
  return { got, send, dispose: () => server.dispose() };
}

it('hands the handler what the stored JSON parses to: -0 as 0, overflowing numbers as null', async () => {
  const { got, send, dispose } = await setup();
  expect(await send('{"msgs":[[1,-0],[2,1e400],[3,{"a":[-0.0,-1e999,2.5],"b":"-0"}],[4,{"k":"v","n":[1,[true,null]]}]]}')).toEqual({ ack: 4 });
  expect(got.map((g) => g.seq)).toEqual([1, 2, 3, 4]);
  expect(Object.is(got[0]!.data, 0)).toBe(true);
  expect(got[1]!.data).toBeNull();
  expect(got[2]!.data).toEqual({ a: [0, null, 2.5], b: '-0' });
  expect(Object.is((got[2]!.data as { a: number[] }).a[0], 0)).toBe(true);
  expect(got[3]!.data).toEqual({ k: 'v', n: [1, [true, null]] });
  await dispose();
});

it('delivers the copy the store kept first when a later request carries other data for the same seq', async () => {
  const { got, send, dispose } = await setup();
  // seq 2 waits behind the gap at 1; the retransmission of 2 with other data must not replace it.
  expect(await send('{"msgs":[[2,{"copy":"first"}]]}')).toEqual({ ack: 0 });
  expect(await send('{"msgs":[[1,"one"],[2,{"copy":"second"}],[3,"three"]]}')).toEqual({ ack: 3 });
  expect(got).toEqual([
    { seq: 1, data: 'one' },
    { seq: 2, data: { copy: 'first' } },
    { seq: 3, data: 'three' },
  ]);
  await dispose();
});

it('keeps the first copy of a seq repeated within one request, whatever the order', async () => {
  const { got, send, dispose } = await setup();
  expect(await send('{"msgs":[[2,"b1"],[1,"a"],[2,"b2"],[1,"a2"]]}')).toEqual({ ack: 2 });
  expect(got).toEqual([
    { seq: 1, data: 'a' },
    { seq: 2, data: 'b1' },
  ]);
  await dispose();
});
