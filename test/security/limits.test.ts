/**
 * docs/SECURITY.md, "Limits" and "What a client can do to the server's
 * memory": every bound, its default, what enforces it — and, by
 * measurement, that a client holding a valid sid cannot make the server keep
 * more than those bounds allow.
 */
import { BidiError, BidiServer, DEFAULT_LIMITS, MemoryStore, type Limits } from '../../src/core';
import { gcFunction } from '../fuzz/fuzz';
import { bidiRequest } from '../model/harness';
import { call, openSid } from './util';

/** The defaults as docs/SECURITY.md and the README document them. */
const DOCUMENTED: Limits = {
  maxBodyBytes: 1024 * 1024,
  maxMessageBytes: 256 * 1024,
  maxMessagesPerRequest: 100,
  inboundWindow: 256,
  inboundBufferBytes: 4 * 1024 * 1024,
  maxUnackedMessages: 1024,
  maxUnackedBytes: 4 * 1024 * 1024,
  maxMessagesPerResponse: 500,
  maxResponseBytes: 256 * 1024,
  maxJsonDepth: 64,
  maxSessions: 100_000,
  maxSessionDataBytes: 64 * 1024,
  groupLogEntries: 1024,
  groupLogMs: 10 * 60 * 1000,
};

/** A session record's size in the memory store, as the store itself counts it (test-only peek). */
function record(store: MemoryStore, sid: string): { inboundBytes: number; log: unknown[]; logBytes: number } {
  const r = (store as unknown as { sessions: Map<string, any> }).sessions.get(sid);
  if (!r) throw new Error('no such record (has MemoryStore changed its internals?)');
  return r;
}

describe('limits and their defaults', () => {
  it('the defaults are the documented ones, and the open response announces the ones a client needs', async () => {
    expect(DEFAULT_LIMITS).toEqual(DOCUMENTED);
    const server = new BidiServer({ sweepInterval: 0 });
    expect(server.limits).toEqual(DOCUMENTED);
    const opened = await call(server, 'POST', '/session', { body: { v: 1 } });
    expect(opened.body.wait).toBe(25_000);
    expect(opened.body.limits).toMatchObject({
      maxBodyBytes: DOCUMENTED.maxBodyBytes,
      maxMessageBytes: DOCUMENTED.maxMessageBytes,
      maxMessagesPerRequest: DOCUMENTED.maxMessagesPerRequest,
      inboundWindow: DOCUMENTED.inboundWindow,
      maxResponseBytes: DOCUMENTED.maxResponseBytes,
      maxJsonDepth: DOCUMENTED.maxJsonDepth,
      maxWait: 55_000,
      idleTimeout: 120_000,
    });
    await server.dispose();
  });

  it('waits are capped below the 60 s of function platforms, and a session outlives its longest watch', async () => {
    expect(() => new BidiServer({ sweepInterval: 0, maxWait: 56_000 })).toThrow(BidiError);
    expect(() => new BidiServer({ sweepInterval: 0, maxWait: 10_000, idleTimeout: 10_000 })).toThrow(/idleTimeout/);
    expect(() => new BidiServer({ sweepInterval: 0, limits: { maxBodyBytes: 0 } })).toThrow(BidiError);
    expect(() => new BidiServer({ sweepInterval: 0, limits: { maxMessageBytes: 2_000_000 } })).toThrow(/maxMessageBytes/);
    const server = new BidiServer({ sweepInterval: 0, maxWait: 300, idleTimeout: 10_000 });
    const sid = await openSid(server);
    const t0 = Date.now();
    const r = await call(server, 'GET', '/session/watch', { sid, query: { ack: 0, wait: 999_999_999 } });
    expect(r.status).toBe(200);
    expect(Date.now() - t0).toBeLessThan(5_000); // clamped to maxWait (300 ms), not 11 days
    await server.dispose();
  });

  const small: Partial<Limits> = {
    maxBodyBytes: 4096,
    maxMessageBytes: 1024,
    maxMessagesPerRequest: 5,
    inboundWindow: 8,
    inboundBufferBytes: 2048,
    maxUnackedMessages: 6,
    maxUnackedBytes: 3000,
    maxMessagesPerResponse: 4,
    maxSessions: 3,
    maxSessionDataBytes: 200,
  };

  function make(extra: Partial<ConstructorParameters<typeof BidiServer>[0]> = {}) {
    const store = new MemoryStore();
    const delivered: unknown[] = [];
    const errors: unknown[] = [];
    const server = new BidiServer({ store, sweepInterval: 0, limits: small, onError: (e) => void errors.push(e), onMessage: (_s, d) => void delivered.push(d), ...extra });
    return { store, server, delivered, errors };
  }

  it('maxBodyBytes: 413 BODY_TOO_LARGE, declared or not, nothing applied', async () => {
    const { server, delivered } = make();
    const sid = await openSid(server);
    const big = JSON.stringify({ msgs: [[1, 'x'.repeat(500)], [2, 'x'.repeat(500)], [3, 'x'.repeat(500)], [4, 'x'.repeat(500)], [5, 'x'.repeat(500)]] }).padEnd(5000, ' ');
    const r = await call(server, 'POST', '/session/send', { sid, body: big });
    expect([r.status, r.body.error.code]).toEqual([413, 'BODY_TOO_LARGE']);
    const declared = await call(server, 'POST', '/session/send', { sid, body: '{"msgs":[]}', headers: { 'content-length': '999999' } });
    expect([declared.status, declared.body.error.code]).toEqual([413, 'BODY_TOO_LARGE']);
    expect(delivered).toEqual([]);
    await server.dispose();
  });

  it('maxMessageBytes: 413 MESSAGE_TOO_LARGE from a client; send() throws on the server side', async () => {
    const { server, delivered } = make();
    const sid = await openSid(server);
    const r = await call(server, 'POST', '/session/send', { sid, body: { msgs: [[1, 'ok'], [2, 'x'.repeat(1100)]] } });
    expect([r.status, r.body.error.code]).toEqual([413, 'MESSAGE_TOO_LARGE']);
    expect(delivered).toEqual([]); // validated whole: message 1 was not delivered either
    await expect(server.hub.send(sid, 'y'.repeat(1100))).rejects.toMatchObject({ code: 'MESSAGE_TOO_LARGE' });
    await server.dispose();
  });

  it('maxMessagesPerRequest: 413 TOO_MANY_MESSAGES', async () => {
    const { server, delivered } = make();
    const sid = await openSid(server);
    const r = await call(server, 'POST', '/session/send', { sid, body: { msgs: [1, 2, 3, 4, 5, 6].map((i) => [i, i]) } });
    expect([r.status, r.body.error.code]).toEqual([413, 'TOO_MANY_MESSAGES']);
    expect(delivered).toEqual([]);
    await server.dispose();
  });

  it('inboundWindow: a seq beyond ack + window is 429 SEQ_OUT_OF_WINDOW with Retry-After', async () => {
    const { server, store } = make();
    const sid = await openSid(server);
    const r = await call(server, 'POST', '/session/send', { sid, body: { msgs: [[9, 'far']] } });
    expect([r.status, r.body.error.code, r.headers['retry-after']]).toEqual([429, 'SEQ_OUT_OF_WINDOW', '1']);
    expect(record(store, sid).inboundBytes).toBe(0);
    await server.dispose();
  });

  it('inboundBufferBytes: bytes waiting behind a gap are capped (429), but the message that fills the gap is always taken', async () => {
    const { server, store, delivered } = make();
    const sid = await openSid(server);
    const m = 'x'.repeat(900);
    expect((await call(server, 'POST', '/session/send', { sid, body: { msgs: [[2, m], [3, m]] } })).status).toBe(200);
    const over = await call(server, 'POST', '/session/send', { sid, body: { msgs: [[4, m]] } });
    expect([over.status, over.body.error.code]).toEqual([429, 'SEQ_OUT_OF_WINDOW']);
    expect(record(store, sid).inboundBytes).toBeLessThanOrEqual(2048);
    const fill = await call(server, 'POST', '/session/send', { sid, body: { msgs: [[1, m]] } });
    expect(fill.body.ack).toBe(3);
    expect(delivered).toHaveLength(3);
    await server.dispose();
  });

  it("maxUnackedMessages / maxUnackedBytes: the server's send() is refused (SEND_WINDOW_FULL) or waits for the client's ack (then SEND_TIMEOUT)", async () => {
    const { server } = make({ sendTimeout: 200 });
    const sid = await openSid(server);
    for (let i = 1; i <= 6; i++) await server.hub.send(sid, i);
    await expect(server.hub.send(sid, 7)).rejects.toMatchObject({ code: 'SEND_WINDOW_FULL' });
    await expect(server.hub.send(sid, 7, { whenFull: 'wait' })).rejects.toMatchObject({ code: 'SEND_TIMEOUT' });
    const waiting = server.hub.send(sid, 7, { whenFull: 'wait' });
    await call(server, 'GET', '/session/watch', { sid, query: { ack: 6, wait: 0 } }); // the ack makes room
    expect(await waiting).toBe(7);
    const sid2 = await openSid(server);
    await server.hub.send(sid2, 'b'.repeat(1000));
    await server.hub.send(sid2, 'b'.repeat(1000));
    await expect(server.hub.send(sid2, 'b'.repeat(1000))).rejects.toMatchObject({ code: 'SEND_WINDOW_FULL' }); // bytes
    await server.dispose();
  });

  it('maxMessagesPerResponse: a watch returns at most that many; the client watches again for the rest', async () => {
    const { server } = make();
    const sid = await openSid(server);
    for (let i = 1; i <= 6; i++) await server.hub.send(sid, i);
    const r = await call(server, 'GET', '/session/watch', { sid, query: { ack: 0, wait: 0 } });
    expect(r.body.msgs.map((m: [number]) => m[0])).toEqual([1, 2, 3, 4]);
    const next = await call(server, 'GET', '/session/watch', { sid, query: { ack: 4, wait: 0 } });
    expect(next.body.msgs.map((m: [number]) => m[0])).toEqual([5, 6]);
    await server.dispose();
  });

  it('maxResponseBytes: a plain or streamed watch carries at most that many bytes of messages (one message always); the client watches again', async () => {
    const { server } = make({ limits: { ...small, maxMessageBytes: 4_000, maxMessagesPerResponse: 100, maxUnackedMessages: 100, maxUnackedBytes: 100_000, maxResponseBytes: 2_500 } });
    const sid = await openSid(server);
    const msg = (i: number) => String(i).padStart(998, '-'); // 1 000 bytes of JSON each
    for (let i = 1; i <= 9; i++) await server.hub.send(sid, msg(i));
    const seqs = (r: { body: { msgs: Array<[number]> } }) => r.body.msgs.map((m) => m[0]);
    // Messages until their bytes reach the budget: 3 000 ≥ 2 500.
    expect(seqs(await call(server, 'GET', '/session/watch', { sid, query: { ack: 0, wait: 0 } }))).toEqual([1, 2, 3]);
    expect(seqs(await call(server, 'GET', '/session/watch', { sid, query: { ack: 3, wait: 0 } }))).toEqual([4, 5, 6]);
    // A stream: the same budget over all its frames; it ends as soon as it is spent (long before its
    // 30 s wait: the test would time out), and the next watch acks them.
    const res = (await server.handle({ ...bidiRequest('GET', '/session/watch', { headers: { 'bidi-sid': sid }, query: { ack: 6, wait: 30_000, stream: 1 } }), canStream: true }))!;
    const frames = [res.body];
    for (let chunk = await res.stream!.next(); chunk !== null; chunk = await res.stream!.next()) frames.push(chunk);
    const streamed = frames.filter((f) => f.trim()).flatMap((f) => JSON.parse(f).msgs.map((m: [number]) => m[0]));
    expect(streamed).toEqual([7, 8, 9]);
    // One message above the budget still goes, alone.
    await server.hub.send(sid, 'x'.repeat(3_000));
    await server.hub.send(sid, 'y');
    expect(seqs(await call(server, 'GET', '/session/watch', { sid, query: { ack: 9, wait: 0 } }))).toEqual([10]);
    await server.dispose();
  });

  it('maxSessions: 429 TOO_MANY_SESSIONS with Retry-After; a finished close makes room', async () => {
    const { server, store } = make();
    const sids = [await openSid(server), await openSid(server), await openSid(server)];
    const r = await call(server, 'POST', '/session', { body: { v: 1 } });
    expect([r.status, r.body.error.code, r.headers['retry-after']]).toEqual([429, 'TOO_MANY_SESSIONS', '5']);
    expect(store.size).toBe(3);
    await call(server, 'DELETE', '/session', { sid: sids[0] });
    expect((await call(server, 'POST', '/session', { body: { v: 1 } })).status).toBe(201);
    await server.dispose();
  });

  it('maxSessionDataBytes: user + state above it refuse the open (nothing stored); a handler growing state past it is not saved', async () => {
    const { server, store, errors } = make({
      onOpen(session, req) {
        session.state = { blob: 'z'.repeat((req.meta as { n: number }).n) };
      },
      onMessage(session) {
        (session.state as { blob: string }).blob += 'z'.repeat(300);
      },
    });
    const refused = await call(server, 'POST', '/session', { body: { v: 1, meta: { n: 500 } } });
    expect(refused.status).toBe(500);
    expect(store.size).toBe(0);
    const sid = await openSid(server, { v: 1, meta: { n: 10 } });
    await call(server, 'POST', '/session/send', { sid, body: { msgs: [[1, 'grow']] } });
    const [view] = await server.hub.inspect([sid]);
    expect((view!.state as { blob: string }).blob).toHaveLength(10);
    expect(errors.map((e) => String(e))).toEqual(expect.arrayContaining([expect.stringContaining('maxSessionDataBytes')]));
    await server.dispose();
  });
});

describe("what a client can do to the server's memory: no more than the limits", () => {
  it('a client with valid sids that floods messages behind gaps, never acks, and opens sessions: the server holds at most the bounds', async () => {
    const limits: Partial<Limits> = { inboundBufferBytes: 64 * 1024, inboundWindow: 256, maxSessions: 40, maxUnackedMessages: 200, maxUnackedBytes: 64 * 1024 };
    const store = new MemoryStore();
    const server = new BidiServer({ store, sweepInterval: 0, limits, onError: () => {} });
    const gc = gcFunction();
    gc();
    const before = process.memoryUsage().heapUsed;

    // Sessions: at most maxSessions, however many opens.
    const sids: string[] = [];
    let refusedOpens = 0;
    for (let i = 0; i < 200; i++) {
      const r = await call(server, 'POST', '/session', { body: { v: 1 } });
      if (r.status === 201) sids.push(r.body.sid);
      else refusedOpens++;
    }
    expect(sids).toHaveLength(40);
    expect(refusedOpens).toBe(160);

    // Inbound: every session gets ~1 MB of messages behind a gap (seq 1 is never sent).
    const chunk = 'm'.repeat(8 * 1024);
    let offered = 0;
    for (const sid of sids) {
      for (let seq = 2; seq <= 129; seq++) {
        offered += chunk.length;
        await call(server, 'POST', '/session/send', { sid, body: { msgs: [[seq, chunk]] } });
      }
    }
    // Outbound: the server pushes to a client that never acks.
    let refusedSends = 0;
    for (const sid of sids) {
      for (let i = 0; i < 300; i++) await server.hub.send(sid, 'o'.repeat(1000)).catch(() => refusedSends++);
    }
    let buffered = 0;
    let logged = 0;
    for (const sid of sids) {
      const r = record(store, sid);
      expect(r.inboundBytes).toBeLessThanOrEqual(64 * 1024);
      expect(r.log.length).toBeLessThanOrEqual(200);
      expect(r.logBytes).toBeLessThanOrEqual(64 * 1024);
      buffered += r.inboundBytes;
      logged += r.logBytes;
    }
    expect(refusedSends).toBeGreaterThan(0);
    gc();
    const grown = process.memoryUsage().heapUsed - before;
    const bound = 40 * (64 * 1024 + 64 * 1024); // sessions × (inbound + unacked) bytes
    console.log(
      `memory: offered ${(offered / 1e6).toFixed(1)} MB inbound behind gaps and ${(sids.length * 300 * 1002) / 1e6} MB outbound; ` +
        `the store holds ${(buffered / 1e6).toFixed(2)} MB inbound + ${(logged / 1e6).toFixed(2)} MB unacked; heap grew ${(grown / 1e6).toFixed(2)} MB (bound ${(bound / 1e6).toFixed(2)} MB + overhead)`,
    );
    expect(offered).toBeGreaterThan(5 * bound);
    // JS strings, Map entries and records cost more than their payload: allow 2× the payload bound plus 4 MB.
    expect(grown).toBeLessThan(2 * bound + 4 * 1024 * 1024);
    await server.dispose();
  });

  it('many concurrent watches of one session: each new one supersedes the last, so at most one waits', async () => {
    const server = new BidiServer({ sweepInterval: 0 });
    const sid = await openSid(server);
    const t0 = Date.now();
    const watches = Array.from({ length: 50 }, () => call(server, 'GET', '/session/watch', { sid, query: { ack: 0, wait: 30_000 } }));
    // Let them all claim; then one message ends the newest.
    await new Promise((r) => setTimeout(r, 100));
    await server.hub.send(sid, 'wake');
    const answers = await Promise.all(watches);
    expect(Date.now() - t0).toBeLessThan(10_000);
    const superseded = answers.filter((a) => a.body.superseded);
    const withMessage = answers.filter((a) => a.body.msgs.length === 1);
    expect(superseded.length).toBeGreaterThanOrEqual(49);
    expect(superseded.length + withMessage.length).toBe(50);
    await server.dispose();
  });
});
