/**
 * The protocol suite: SPEC invariants 1–10 over real HTTP, run against every
 * way of serving the core (Express, Koa, Nest, the Fetch handler, and a fresh
 * server object per request to prove statelessness), over any store.
 * test/protocol/protocol.test.ts runs it on MemoryStore, test/redis on Redis.
 */
import { BidiError, reject, sessionLabel } from '../../src/core';
import type { BidiOptions, ErrorContext, ServerSession, Store } from '../../src/core';
import { startTarget, TARGET_KINDS, type Target, type TargetKind } from '../helpers/targets';
import { gated } from '../helpers/gated';
import { sleep, Wire } from '../helpers/wire';

const quiet = { onError: () => {} };

export interface ProtocolSuiteEnv {
  /** A store over a fresh key space; called once per served target. */
  makeStore(): Store | Promise<Store>;
  /** Release what makeStore made (after each test). */
  cleanup?(): Promise<void>;
  kinds?: TargetKind[];
  /** How tests speak the wire (default: HTTP); test/ws runs the suite with sends and watches over WebSockets. */
  wire?(target: Target, options: BidiOptions<any, any>): Wire;
}

/** Wraps a store so that one operation can be made to fail, as if the instance died mid-way. */
function failing(inner: Store, op: keyof Store, shouldFail: () => boolean): Store {
  return new Proxy(inner, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      if (prop === op) {
        return async (...args: unknown[]) => {
          if (shouldFail()) throw new Error('instance died');
          return value.apply(target, args);
        };
      }
      return value.bind(target);
    },
  });
}

export function describeProtocolSuite(storeName: string, env: ProtocolSuiteEnv): void {
  describe.each(env.kinds ?? TARGET_KINDS)(`protocol over %s (${storeName})`, (kind: TargetKind) => {
    const targets: Target[] = [];
    async function serve(options: BidiOptions<any, any> = {}): Promise<{ t: Target; wire: Wire }> {
      const t = await startTarget(kind, { ...quiet, ...options, store: options.store ?? (await env.makeStore()) });
      targets.push(t);
      return { t, wire: env.wire ? env.wire(t, { ...quiet, ...options, store: t.store }) : new Wire(t.url) };
    }
    const newStore = async () => env.makeStore();
    afterEach(async () => {
      await Promise.all(targets.splice(0).map((t) => t.close()));
      await env.cleanup?.();
    });

    describe('open (invariant 6, 10)', () => {
      it('creates a session with a 128-bit id and announces wait and limits', async () => {
        const { wire } = await serve({ wait: 1000 });
        const r = await wire.open();
        expect(r.status).toBe(201);
        expect(r.body.sid).toMatch(/^[A-Za-z0-9_-]{22}$/);
        expect(r.body).toMatchObject({ v: 1, wait: 1000, limits: { maxMessagesPerRequest: 100, inboundWindow: 256 } });
      });

      it('gives distinct ids', async () => {
        const { wire } = await serve();
        const sids = await Promise.all(Array.from({ length: 200 }, () => wire.openSid()));
        expect(new Set(sids).size).toBe(200);
      });

      it('lets onOpen see headers, query and meta, and attach user and state', async () => {
        const seen: any[] = [];
        const { wire } = await serve({
          onOpen(session, req) {
            seen.push({ auth: req.headers.get('authorization'), q: req.query.get('room'), meta: req.meta });
            session.user = { name: 'ada' };
            session.state = { count: 0 };
          },
          onMessage(session, data) {
            (session.state as any).count++;
            return session.send({ user: session.user, count: (session.state as any).count, data }).then(() => {});
          },
        });
        const r = await fetch(wire.base + '?room=blue', {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: 'Bearer x' },
          body: JSON.stringify({ v: 1, meta: { nick: 'a' } }),
        });
        const sid = (await r.json()).sid;
        expect(seen).toEqual([{ auth: 'Bearer x', q: 'blue', meta: { nick: 'a' } }]);
        await wire.send(sid, [[1, 'x'], [2, 'y']]);
        const got = await wire.collect(sid, 2);
        expect(got.msgs).toEqual([
          [1, { user: { name: 'ada' }, count: 1, data: 'x' }],
          [2, { user: { name: 'ada' }, count: 2, data: 'y' }],
        ]);
      });

      it('lets onOpen reject with a status and reason, creating nothing', async () => {
        let refuse = true;
        const { wire } = await serve({
          limits: { maxSessions: 1 },
          onOpen() {
            if (refuse) throw reject(401, 'log in first');
          },
        });
        const r = await wire.open();
        expect(r.status).toBe(401);
        expect(r.body).toEqual({ error: { code: 'REJECTED', message: 'log in first' } });
        // Had the refused open created a session, the store would now be full.
        refuse = false;
        expect((await wire.open()).status).toBe(201);
      });

      it('queues sends made in onOpen as the first server messages', async () => {
        const { wire } = await serve({
          async onOpen(session) {
            await session.send('welcome');
            await session.send('rules');
          },
        });
        const sid = await wire.openSid();
        expect((await wire.collect(sid, 2)).msgs).toEqual([
          [1, 'welcome'],
          [2, 'rules'],
        ]);
      });

      describe('a session object kept from onOpen (a send that resolves with a seq is delivered; others reject)', () => {
        it('sends, joins and closes after the open: its sends follow the first messages, with the seqs they resolved with', async () => {
          let kept: ServerSession | undefined;
          const { t, wire } = await serve({
            async onOpen(session) {
              kept = session;
              await session.send('welcome');
            },
          });
          const sid = await wire.openSid();
          expect(kept!.id).toBe(sid);
          expect(await kept!.send('later')).toBe(2);
          await kept!.join('room');
          expect(await t.hub.publish('room', 'to the room')).toEqual({ sent: 1, failed: [] });
          expect(await kept!.send('last')).toBe(4);
          await kept!.close('done');
          const got = await wire.collect(sid, 4);
          expect(got.msgs).toEqual([
            [1, 'welcome'],
            [2, 'later'],
            [3, 'to the room'],
            [4, 'last'],
          ]);
          expect(got.close).toEqual({ seq: 5, reason: 'done' });
          await expect(kept!.send('too late')).rejects.toMatchObject({ code: 'SESSION_CLOSED' });
        });

        it('a send made after onOpen returned, while the session is being created, waits for it and keeps call order', async () => {
          const gate = gated(await newStore(), 'create');
          let kept: ServerSession | undefined;
          const { wire } = await serve({
            store: gate.store,
            onOpen(session) {
              kept = session;
              void session.send('first');
            },
          });
          const opening = wire.openSid();
          await gate.reached;
          let settled = false;
          const sends = [kept!.send('second'), kept!.send('third')];
          void sends[0]!.then(() => (settled = true));
          await sleep(20);
          expect(settled).toBe(false); // no seq before the session exists
          gate.release();
          const sid = await opening;
          expect(await Promise.all(sends)).toEqual([2, 3]);
          expect((await wire.collect(sid, 3)).msgs).toEqual([
            [1, 'first'],
            [2, 'second'],
            [3, 'third'],
          ]);
        });

        it('rejects with UNKNOWN_SESSION once the open was refused; close() in onOpen is refused', async () => {
          let kept: ServerSession | undefined;
          let closeInHook: unknown;
          const { wire } = await serve({
            async onOpen(session) {
              kept = session;
              closeInHook = await session.close().catch((err: unknown) => err);
              throw reject(401, 'log in first');
            },
          });
          expect((await wire.open()).status).toBe(401);
          expect(closeInHook).toMatchObject({ code: 'INVALID_OPTIONS' });
          await expect(kept!.send('x')).rejects.toMatchObject({ code: 'UNKNOWN_SESSION' });
          await expect(kept!.join('room')).rejects.toMatchObject({ code: 'UNKNOWN_SESSION' });
          await expect(kept!.close()).rejects.toMatchObject({ code: 'UNKNOWN_SESSION' });
        });

        it('rejects with UNKNOWN_SESSION when the store refuses the session (maxSessions)', async () => {
          const kept: ServerSession[] = [];
          const { wire } = await serve({ limits: { maxSessions: 1 }, onOpen: (session) => void kept.push(session) });
          expect((await wire.open()).status).toBe(201);
          expect((await wire.open()).status).toBe(429);
          await expect(kept[1]!.send('x')).rejects.toMatchObject({ code: 'UNKNOWN_SESSION' });
          expect(await kept[0]!.send('x')).toBe(1);
        });
      });

      it('refuses other protocol versions', async () => {
        const { wire } = await serve();
        const r = await wire.open({ v: 2 });
        expect(r.status).toBe(400);
        expect(r.body.error.code).toBe('UNSUPPORTED_VERSION');
      });
    });

    describe('observability: onError context, counting and listing sessions', () => {
      it("onError names the phase, the session by its label (never its id), the message's seq and the user", async () => {
        const seen: Array<[string, ErrorContext]> = [];
        const kept: ServerSession[] = [];
        const { wire } = await serve({
          onError: (err, ctx) => void seen.push([(err as Error).message, ctx]),
          onOpen(session, req) {
            kept.push(session);
            session.user = { name: 'ada' };
            if ((req.meta as { fail?: boolean } | null)?.fail) throw new Error('open exploded');
          },
          onMessage() {
            throw new Error('handler exploded');
          },
          onClose() {
            throw new Error('close exploded');
          },
        });
        expect((await wire.open({ v: 1, meta: { fail: true } })).status).toBe(500);
        const refused = kept[0]!.id;
        const sid = await wire.openSid();
        expect((await wire.send(sid, [[1, 'x']])).body).toEqual({ ack: 1 });
        await wire.close(sid);
        const label = sessionLabel(sid);
        expect(label).toMatch(/^[0-9a-f]{6}$/);
        expect(seen).toEqual([
          ['open exploded', { phase: 'open', session: sessionLabel(refused), user: { name: 'ada' } }],
          ['handler exploded', { phase: 'message', seq: 1, session: label, user: { name: 'ada' } }],
          ['close exploded', { phase: 'close', session: label, user: { name: 'ada' } }],
        ]);
        expect(JSON.stringify(seen)).not.toContain(sid);
      });

      it('hub.count() counts and hub.sessions() pages through the sessions not closed yet, with status, user and state', async () => {
        const { t, wire } = await serve({
          onOpen(session, req) {
            session.user = { n: (req.meta as { n: number }).n };
            session.state = { k: 1 };
          },
        });
        expect(await t.hub.count()).toBe(0);
        expect(await t.hub.sessions()).toEqual({ sessions: [], cursor: null });
        const sids: string[] = [];
        for (let n = 0; n < 5; n++) sids.push(await wire.openSid({ n }));
        await wire.close(sids[4]!);
        expect(await t.hub.count()).toBe(4);
        const listed = new Map<string, unknown>();
        let cursor: string | undefined;
        for (let pages = 0; pages < 20; pages++) {
          const page = await t.hub.sessions({ cursor, limit: 2 });
          for (const s of page.sessions) listed.set(s.id, s);
          if (page.cursor === null) break;
          expect(page.cursor).not.toMatch(/[A-Za-z0-9_-]{22}/); // no session id in a cursor
          cursor = page.cursor;
        }
        expect([...listed.keys()].sort()).toEqual(sids.slice(0, 4).sort());
        expect(listed.get(sids[1]!)).toEqual({ id: sids[1], status: 'open', user: { n: 1 }, state: { k: 1 } });
        await expect(t.hub.sessions({ limit: 0 })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
        await expect(t.hub.sessions({ limit: 1001 })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
        await expect(t.hub.sessions({ cursor: 'not a cursor' })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
      });
    });

    describe('client → server order, exactly once (invariant 1)', () => {
      it('delivers concurrent out-of-order POSTs in seq order', async () => {
        const seen: number[] = [];
        const { wire } = await serve({
          async onMessage(_s, data) {
            await sleep(Math.random() * 3);
            seen.push(data as number);
          },
        });
        const sid = await wire.openSid();
        const n = 60;
        const batches: Array<Array<[number, unknown]>> = [];
        for (let s = 1; s <= n; s += 3) batches.push([s, s + 1, s + 2].map((x) => [x, x] as [number, unknown]));
        batches.reverse();
        await Promise.all(batches.map((b) => wire.send(sid, b)));
        // Stragglers are delivered by whichever request holds the lease; an empty POST shows the final ack.
        let ack = 0;
        for (let i = 0; i < 50 && ack < n; i++) {
          ack = (await wire.send(sid, [])).body.ack;
          if (ack < n) await sleep(20);
        }
        expect(ack).toBe(n);
        expect(seen).toEqual(Array.from({ length: n }, (_, i) => i + 1));
      });

      it('does not redeliver a duplicated POST and gives a retried POST the same ack', async () => {
        const seen: unknown[] = [];
        const { wire } = await serve({ onMessage: (_s, d) => void seen.push(d) });
        const sid = await wire.openSid();
        const batch: Array<[number, unknown]> = [
          [1, 'a'],
          [2, 'b'],
        ];
        const [r1, r2] = await Promise.all([wire.send(sid, batch), wire.send(sid, batch)]);
        const retry = await wire.send(sid, batch); // as after a lost response
        expect(retry.status).toBe(200);
        expect(retry.body).toEqual({ ack: 2 });
        expect(Math.max(r1.body.ack, r2.body.ack)).toBe(2);
        expect(seen).toEqual(['a', 'b']);
      });

      it('holds messages behind a gap and answers with the current ack', async () => {
        const seen: unknown[] = [];
        const { wire } = await serve({ onMessage: (_s, d) => void seen.push(d) });
        const sid = await wire.openSid();
        expect((await wire.send(sid, [[2, 'b'], [3, 'c']])).body).toEqual({ ack: 0 });
        expect(seen).toEqual([]);
        expect((await wire.send(sid, [[1, 'a']])).body).toEqual({ ack: 3 });
        expect(seen).toEqual(['a', 'b', 'c']);
      });

      it('redelivers (same seq) only the message whose delivery record was lost in a crash', async () => {
        let failNextCommit = false;
        let crashed = false;
        // A store whose commit fails once, as if the instance died after the handler ran.
        const store = failing(await newStore(), 'commit', () => {
          const fail = failNextCommit;
          failNextCommit = false;
          return fail;
        });
        const seen: Array<[number, unknown]> = [];
        const { wire } = await serve({
          store,
          leaseMs: 100,
          onMessage(_s, data, info) {
            seen.push([info.seq, data]);
            if (data === 'b' && !crashed) failNextCommit = crashed = true;
          },
        });
        const sid = await wire.openSid();
        const r = await wire.send(sid, [[1, 'a'], [2, 'b'], [3, 'c']]);
        expect(r.status).toBe(500);
        await sleep(150); // the dead instance's lease runs out
        const again = await wire.send(sid, [[1, 'a'], [2, 'b'], [3, 'c']]);
        expect(again.body).toEqual({ ack: 3 });
        expect(seen).toEqual([
          [1, 'a'],
          [2, 'b'],
          [2, 'b'],
          [3, 'c'],
        ]);
      });
    });

    describe('server → client order, exactly once (invariant 2)', () => {
      describe("a handler's own sends ride on the message's delivery record", () => {
        /** Counts store calls by name (the store itself is real). */
        function counting(inner: Store): { store: Store; calls: Record<string, number> } {
          const calls: Record<string, number> = {};
          const store = new Proxy(inner, {
            get(target, prop) {
              const value = Reflect.get(target, prop, target);
              if (typeof value !== 'function') return value;
              return (...args: unknown[]) => {
                calls[String(prop)] = (calls[String(prop)] ?? 0) + 1;
                return value.apply(target, args);
              };
            },
          });
          return { store, calls };
        }

        it('sends not waited for are stored by the commit (no append), in order, with their seqs', async () => {
          const { store, calls } = counting(await newStore());
          const seqs: Array<Promise<number>> = [];
          const { wire } = await serve({
            store,
            onMessage(session, data) {
              seqs.push(session.send({ echo: data }), session.send({ again: data }));
            },
          });
          const sid = await wire.openSid();
          expect((await wire.send(sid, [[1, 'a'], [2, 'b']])).body).toEqual({ ack: 2 });
          expect((await wire.collect(sid, 4)).msgs).toEqual([
            [1, { echo: 'a' }],
            [2, { again: 'a' }],
            [3, { echo: 'b' }],
            [4, { again: 'b' }],
          ]);
          expect(await Promise.all(seqs)).toEqual([1, 2, 3, 4]);
          expect(calls.append ?? 0).toBe(0);
          expect(calls.commit).toBe(2);
        });

        it('a send the handler awaits is stored at once and resolves before the handler returns (no deadlock)', async () => {
          const got: number[] = [];
          const { wire } = await serve({
            async onMessage(session, data) {
              got.push(await session.send({ first: data }));
              got.push(await session.send({ second: data }));
              session.send({ third: data });
            },
          });
          const sid = await wire.openSid();
          expect((await wire.send(sid, [[1, 'x']])).body).toEqual({ ack: 1 });
          expect(got).toEqual([1, 2]);
          expect((await wire.collect(sid, 3)).msgs).toEqual([
            [1, { first: 'x' }],
            [2, { second: 'x' }],
            [3, { third: 'x' }],
          ]);
        });

        it("keeps call order against the same server object's other sends and its close", async () => {
          const { wire } = await serve({
            async onMessage(session, data) {
              session.send('queued-1');
              // whenFull: 'wait' cannot ride on the commit: it goes out at once, after what is queued.
              await session.send('waited', { whenFull: 'wait' });
              session.send('queued-2');
              session.send('queued-3');
              if (data === 'bye') await session.close('done');
            },
          });
          const sid = await wire.openSid();
          await wire.send(sid, [[1, 'bye']]);
          const got = await wire.collect(sid, 4);
          expect(got.msgs).toEqual([
            [1, 'queued-1'],
            [2, 'waited'],
            [3, 'queued-2'],
            [4, 'queued-3'],
          ]);
          expect(got.close).toMatchObject({ seq: 5, reason: 'done' });
        });

        it('a group member: a publish that resolved before the handler sent comes first', async () => {
          const { t, wire } = await serve({
            async onOpen(session) {
              await session.join('room');
            },
            onMessage(session, data) {
              session.send({ reply: data });
            },
          });
          const sid = await wire.openSid();
          await t.hub.publish('room', 'news');
          expect((await wire.send(sid, [[1, 'hi']])).body).toEqual({ ack: 1 });
          expect((await wire.collect(sid, 2)).msgs).toEqual([
            [1, 'news'],
            [2, { reply: 'hi' }],
          ]);
        });

        it('a delivery record lost in a crash takes its sends with it: the redelivered message sends them once', async () => {
          let failNextCommit = false;
          let crashed = false;
          const store = failing(await newStore(), 'commit', () => {
            const fail = failNextCommit;
            failNextCommit = false;
            return fail;
          });
          const { wire } = await serve({
            store,
            leaseMs: 100,
            onMessage(session, data, info) {
              session.send({ reply: data, seq: info.seq });
              if (data === 'b' && !crashed) failNextCommit = crashed = true;
            },
          });
          const sid = await wire.openSid();
          expect((await wire.send(sid, [[1, 'a'], [2, 'b'], [3, 'c']])).status).toBe(500);
          await sleep(150); // the dead instance's lease runs out
          expect((await wire.send(sid, [[1, 'a'], [2, 'b'], [3, 'c']])).body).toEqual({ ack: 3 });
          expect((await wire.collect(sid, 3)).msgs).toEqual([
            [1, { reply: 'a', seq: 1 }],
            [2, { reply: 'b', seq: 2 }],
            [3, { reply: 'c', seq: 3 }],
          ]);
        });

        it('as many as fit the unacked window are stored, in order; the rest are refused (SEND_WINDOW_FULL) and reported', async () => {
          const errors: unknown[] = [];
          const outcomes: string[] = [];
          const track = (p: Promise<number>) =>
            p.then(
              (seq) => outcomes.push(`seq ${seq}`),
              (e: BidiError) => outcomes.push(e.code),
            );
          const { wire } = await serve({
            limits: { maxUnackedMessages: 2 },
            onError: (err) => errors.push(err),
            onMessage(session) {
              track(session.send('one'));
              track(session.send('two'));
              track(session.send('three'));
            },
          });
          const sid = await wire.openSid();
          expect((await wire.send(sid, [[1, 'x']])).body).toEqual({ ack: 1 });
          await sleep(10);
          expect(outcomes).toEqual(['seq 1', 'seq 2', 'SEND_WINDOW_FULL']);
          expect(errors.map((e) => (e as BidiError).code)).toEqual(['SEND_WINDOW_FULL']);
          expect((await wire.collect(sid, 2)).msgs).toEqual([
            [1, 'one'],
            [2, 'two'],
          ]);
        });
      });

      it('delivers sends made outside any request, from another server object, in order', async () => {
        const { t, wire } = await serve();
        const sid = await wire.openSid();
        const timer = setTimeout(() => void t.hub.send(sid, 'from a timer'), 50);
        const got = await wire.collect(sid, 1);
        clearTimeout(timer);
        expect(got.msgs).toEqual([[1, 'from a timer']]);
      });

      it('numbers concurrent sends contiguously and delivers them all once', async () => {
        const { t, wire } = await serve();
        const sid = await wire.openSid();
        const seqs = await Promise.all(Array.from({ length: 200 }, (_, i) => t.hub.send(sid, i)));
        expect([...seqs].sort((a, b) => a - b)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
        const got = await wire.collect(sid, 200);
        expect(got.msgs.map((m) => m[0])).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
        // each payload once, at the seq send() returned for it
        for (const [seq, data] of got.msgs) expect(seqs[data as number]).toBe(seq);
      });

      it('broadcasts to many sessions and reports the ones that failed', async () => {
        const { t, wire } = await serve();
        const sids = await Promise.all(Array.from({ length: 20 }, () => wire.openSid()));
        await wire.close(sids[0]!);
        const result = await t.hub.broadcast([...sids, 'AAAAAAAAAAAAAAAAAAAAAA'], { hi: true });
        expect(result.sent).toBe(19);
        expect(result.failed.map((f) => f.code).sort()).toEqual(['SESSION_CLOSED', 'UNKNOWN_SESSION']);
        for (const sid of sids.slice(1)) expect((await wire.collect(sid, 1)).msgs).toEqual([[1, { hi: true }]]);
      });
    });

    describe('groups: publish writes once, each member gets it once in its order (invariant 12)', () => {
      it('reaches every member once, after what was sent before it and before what is sent after it; not non-members', async () => {
        const { t, wire } = await serve({
          onOpen: (session, req) => ((req.meta as { room?: boolean })?.room ? session.join('room') : undefined),
          async onMessage(session, data) {
            // In a handler: a publish, then a send of its own; the member sees them in that order.
            await t.hub.publish('room', { said: data });
            await session.send({ ok: data });
          },
        });
        const open = (room: boolean) => wire.openSid({ room });
        const a = await open(true);
        const b = await open(true);
        const outsider = await open(false);
        await t.hub.send(a, 'direct');
        expect(await t.hub.publish('room', 'p1')).toEqual({ sent: 2, failed: [] });
        await wire.send(a, [[1, 'x']]);
        expect(await t.hub.publish('room', 'p2')).toEqual({ sent: 2, failed: [] });
        expect((await wire.collect(a, 5)).msgs).toEqual([
          [1, 'direct'],
          [2, 'p1'],
          [3, { said: 'x' }],
          [4, { ok: 'x' }],
          [5, 'p2'],
        ]);
        expect((await wire.collect(b, 3)).msgs).toEqual([
          [1, 'p1'],
          [2, { said: 'x' }],
          [3, 'p2'],
        ]);
        const r = await wire.watch(outsider, 0, 0);
        expect(r.body.msgs).toEqual([]);
        // Acked: nothing comes twice.
        expect((await wire.watch(a, 5, 0)).body.msgs).toEqual([]);
      });

      it('a close waits for a publish called before it through the same object that is still in progress', async () => {
        const gate = gated(await newStore(), 'publish');
        const { t, wire } = await serve({ store: gate.store });
        const leaving = await wire.openSid();
        await t.hub.join(leaving, 'room');
        const publishing = t.hub.publish('room', 'news');
        await gate.reached;
        const closing = t.hub.close(leaving, 'bye');
        await sleep(50); // without the ordering, the close marker would be stored by now
        gate.release();
        expect(await publishing).toEqual({ sent: 1, failed: [] });
        await closing;
        const left = await wire.collect(leaving, 1);
        expect(left.msgs).toEqual([[1, 'news']]);
        expect(left.close).toEqual({ seq: 2, reason: 'bye' });
      });

      it('unawaited publishes in a loop keep their call order, also between sends and another group (each once)', async () => {
        const { t, wire } = await serve();
        const both = await wire.openSid();
        const onlyA = await wire.openSid();
        await t.hub.join(both, 'a');
        await t.hub.join(both, 'b');
        await t.hub.join(onlyA, 'a');
        // What a user's loop does: nothing awaited. RedisStore sends each turn's publishes together
        // (consecutive ones to a group in one script call): the order must not change.
        const calls: Array<Promise<unknown>> = [];
        const expected: unknown[] = [];
        const expectedA: unknown[] = [];
        for (let i = 0; i < 300; i++) {
          if (i % 97 === 50) {
            calls.push(t.hub.send(both, `direct ${i}`));
            expected.push(`direct ${i}`);
          } else if (i % 61 === 30) {
            calls.push(t.hub.publish('b', `b ${i}`));
            expected.push(`b ${i}`);
          } else {
            calls.push(t.hub.publish('a', i));
            expected.push(i);
            expectedA.push(i);
          }
        }
        const results = await Promise.all(calls);
        expect(results.filter((r) => typeof r === 'object')).toEqual(Array.from({ length: 300 - 3 }, () => ({ sent: expect.any(Number), failed: [] })));
        const got = await wire.collect(both, expected.length);
        expect(got.msgs.map(([seq]) => seq)).toEqual(expected.map((_, i) => i + 1));
        // Sends and one group's entries in call order. Between two groups, publishes this close
        // together may interleave either way (docs/STORE.md, "Order": on a Redis Cluster the
        // groups' shards run them side by side), but never across a send called between them.
        const segments = (list: unknown[]) => {
          const out: string[][] = [[]];
          for (const d of list) {
            if (typeof d === 'string' && d.startsWith('direct')) out.push([d], []);
            else out[out.length - 1]!.push(JSON.stringify(d));
          }
          return out.map((seg) => seg.sort());
        };
        const data = got.msgs.map(([, d]) => d);
        expect(segments(data)).toEqual(segments(expected));
        const notB = (d: unknown) => !(typeof d === 'string' && d.startsWith('b '));
        expect(data.filter(notB)).toEqual(expected.filter(notB));
        expect(data.filter((d) => !notB(d))).toEqual(expected.filter((d) => !notB(d)));
        expect((await wire.collect(onlyA, expectedA.length)).msgs.map(([, data]) => data)).toEqual(expectedA);
        expect((await wire.watch(both, expected.length, 0)).body.msgs).toEqual([]);
      });

      it('wakes a waiting watch as soon as a publish reaches its group, also one made before the join', async () => {
        const { t, wire } = await serve();
        const sid = await wire.openSid();
        const started = Date.now();
        const pending = wire.watch(sid, 0, 5000);
        await sleep(50);
        expect(await t.hub.join(sid, 'news')).toBe(true);
        await sleep(50);
        await t.hub.publish('news', 'extra');
        const r = await pending;
        expect(r.body.msgs).toEqual([[1, 'extra']]);
        expect(Date.now() - started).toBeLessThan(4000);
        const again = wire.watch(sid, 1, 5000);
        await sleep(50);
        await t.hub.publish('news', 'second');
        expect((await again).body.msgs).toEqual([[2, 'second']]);
        expect(Date.now() - started).toBeLessThan(8000);
      });

      it('closes a member that falls behind the group log with reason group-overrun, after what it had; onClose runs', async () => {
        const closes: string[] = [];
        const { t, wire } = await serve({ limits: { groupLogEntries: 3 }, onClose: (_s, reason) => void closes.push(reason) });
        const slow = await wire.openSid();
        const fast = await wire.openSid();
        await t.hub.join(slow, 'feed');
        await t.hub.join(fast, 'feed');
        await t.hub.send(slow, 'before');
        let ack = 0;
        for (let i = 1; i <= 5; i++) {
          await t.hub.publish('feed', i);
          const r = await wire.watch(fast, ack, 0);
          ack += r.body.msgs.length;
        }
        expect(ack).toBe(5);
        const got = await wire.collect(slow, 1);
        expect(got).toEqual({ msgs: [[1, 'before']], close: { seq: 2, reason: 'group-overrun' } });
        await t.sweep();
        expect(closes).toEqual(['group-overrun']);
      });
    });

    describe('acks both ways (invariant 3)', () => {
      it('trims acked server messages and keeps unacked ones for retransmission', async () => {
        const { t, wire } = await serve();
        const sid = await wire.openSid();
        for (let i = 1; i <= 5; i++) await t.hub.send(sid, i);
        // A lost watch response: the client asks again from the same ack and gets the same messages.
        expect((await wire.watch(sid, 0)).body.msgs.length).toBe(5);
        expect((await wire.watch(sid, 0)).body.msgs.length).toBe(5);
        expect((await wire.watch(sid, 3)).body.msgs).toEqual([
          [4, 4],
          [5, 5],
        ]);
        // Trimmed: asking from an older ack no longer returns 1..3.
        expect((await wire.watch(sid, 0)).body.msgs).toEqual([
          [4, 4],
          [5, 5],
        ]);
        // The send path acks too.
        await wire.send(sid, [], 5);
        expect((await wire.watch(sid, 0)).body.msgs).toEqual([]);
      });

      it('carries the client ack on watch responses', async () => {
        const { wire } = await serve({ onMessage() {} });
        const sid = await wire.openSid();
        await wire.send(sid, [[1, 'a']]);
        expect((await wire.watch(sid, 0)).body.ack).toBe(1);
      });

      it('refuses an ack beyond what was sent, changing nothing', async () => {
        const { t, wire } = await serve({ onMessage() {} });
        const sid = await wire.openSid();
        await t.hub.send(sid, 'x');
        const r = await wire.watch(sid, 2);
        expect(r.status).toBe(400);
        expect(r.body.error.code).toBe('INVALID_ACK');
        const s = await wire.send(sid, [[1, 'a']], 9);
        expect(s.status).toBe(400);
        expect(s.body.error.code).toBe('INVALID_ACK');
        expect((await wire.watch(sid, 0)).body).toEqual({ msgs: [[1, 'x']], ack: 0 });
      });
    });

    describe('concurrency control (invariant 4)', () => {
      it('never overlaps handler invocations of one session, across server objects', async () => {
        let active = 0;
        let maxActive = 0;
        const seen: number[] = [];
        const store = await newStore();
        const options: BidiOptions = {
          store,
          async onMessage(_s, data) {
            active++;
            maxActive = Math.max(maxActive, active);
            await sleep(2);
            seen.push(data as number);
            active--;
          },
        };
        const a = await serve(options);
        const b = await serve(options); // a second "instance" on the same store
        const sid = await a.wire.openSid();
        const sends = [];
        for (let s = 1; s <= 40; s++) sends.push((s % 2 ? a.wire : b.wire).send(sid, [[s, s]]));
        await Promise.all(sends);
        for (let i = 0; i < 100 && seen.length < 40; i++) await sleep(20);
        expect(maxActive).toBe(1);
        expect(seen).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
      });

      it('runs different sessions in parallel', async () => {
        let inside = 0;
        let release!: () => void;
        const bothInside = new Promise<void>((r) => (release = r));
        const { wire } = await serve({
          async onMessage() {
            if (++inside === 2) release();
            await bothInside; // deadlocks unless both sessions' handlers run at once
          },
        });
        const [s1, s2] = await Promise.all([wire.openSid(), wire.openSid()]);
        const [r1, r2] = await Promise.all([wire.send(s1, [[1, 'x']]), wire.send(s2, [[1, 'y']])]);
        expect([r1.body.ack, r2.body.ack]).toEqual([1, 1]);
      });
    });

    describe('watch (invariant 5)', () => {
      it('returns as soon as a message is sent', async () => {
        const { t, wire } = await serve();
        const sid = await wire.openSid();
        const started = Date.now();
        const pending = wire.watch(sid, 0, 5000);
        await sleep(50);
        await t.hub.send(sid, 'now');
        const r = await pending;
        expect(r.body.msgs).toEqual([[1, 'now']]);
        expect(Date.now() - started).toBeLessThan(4000);
      });

      it('returns empty when the wait ends', async () => {
        const { wire } = await serve();
        const sid = await wire.openSid();
        const started = Date.now();
        const r = await wire.watch(sid, 0, 150);
        expect(r.status).toBe(200);
        expect(r.body).toEqual({ msgs: [], ack: 0 });
        expect(Date.now() - started).toBeGreaterThanOrEqual(140);
      });

      it('caps the wait at maxWait', async () => {
        const { wire } = await serve({ maxWait: 200, idleTimeout: 5000 });
        const sid = await wire.openSid();
        const started = Date.now();
        await wire.watch(sid, 0, 30_000);
        expect(Date.now() - started).toBeLessThan(3000);
      });

      it('lets a newer watch supersede an older one', async () => {
        const { t, wire } = await serve();
        const sid = await wire.openSid();
        const older = wire.watch(sid, 0, 5000);
        await sleep(50);
        const newer = wire.watch(sid, 0, 5000);
        const o = await older;
        expect(o.body).toEqual({ msgs: [], ack: 0, superseded: true });
        await t.hub.send(sid, 'to the newer');
        expect((await newer).body.msgs).toEqual([[1, 'to the newer']]);
      });
    });

    describe('lifecycle (invariant 6)', () => {
      it('runs onClose once for a client close, and DELETE is idempotent', async () => {
        const closes: string[] = [];
        const { wire } = await serve({ onClose: (_s, reason) => void closes.push(reason) });
        const sid = await wire.openSid();
        const [a, b] = await Promise.all([wire.close(sid), wire.close(sid)]);
        const c = await wire.close(sid);
        expect([a.status, b.status, c.status]).toEqual([200, 200, 200]);
        expect(c.body).toEqual({ closed: true });
        expect(closes).toEqual(['client']);
        const s = await wire.send(sid, [[1, 'late']]);
        expect(s.status).toBe(410);
        expect(s.body.error.code).toBe('SESSION_CLOSED');
      });

      it('runs onClose once for a server close from a handler, after the handler', async () => {
        const events: string[] = [];
        const { wire } = await serve({
          async onMessage(session, data) {
            events.push(`msg ${data}`);
            if (data === 'bye') await session.close('done');
            events.push(`after ${data}`);
          },
          onClose: (_s, reason) => void events.push(`close ${reason}`),
        });
        const sid = await wire.openSid();
        await wire.send(sid, [[1, 'hi'], [2, 'bye'], [3, 'never']]);
        expect(events).toEqual(['msg hi', 'after hi', 'msg bye', 'after bye', 'close done']);
        await wire.close(sid);
        expect(events.filter((e) => e.startsWith('close'))).toEqual(['close done']);
      });

      it('delivers a server close after every message sent before it', async () => {
        const { t, wire } = await serve();
        const sid = await wire.openSid();
        for (let i = 1; i <= 3; i++) await t.hub.send(sid, i);
        await t.hub.close(sid, 'maintenance');
        await expect(t.hub.send(sid, 'too late')).rejects.toMatchObject({ code: 'SESSION_CLOSED' });
        const got = await wire.collect(sid, 3);
        expect(got.msgs).toEqual([
          [1, 1],
          [2, 2],
          [3, 3],
        ]);
        expect(got.close).toEqual({ seq: 4, reason: 'maintenance' });
      });

      it('expires idle sessions through sweep(), onClose once, and tells the client', async () => {
        const closes: string[] = [];
        const { t, wire } = await serve({ maxWait: 50, idleTimeout: 200, onClose: (_s, r) => void closes.push(r) });
        const idle = await wire.openSid();
        const busy = await wire.openSid();
        for (let i = 0; i < 6; i++) {
          await sleep(50);
          await wire.watch(busy, 0, 0);
        }
        await Promise.all([t.sweep(), t.sweep(), t.sweep()]);
        await t.sweep();
        expect(closes).toEqual(['expired']);
        const r = await wire.watch(idle, 0, 0);
        expect(r.body.close).toEqual({ seq: 1, reason: 'expired' });
        expect((await wire.watch(busy, 0, 0)).body.close).toBeUndefined();
      });

      it('successive sweeps by fresh server objects (serverless invocations) each close what is due: a finished sweep hands its lease back', async () => {
        const closes: string[] = [];
        const { t, wire } = await serve({ maxWait: 50, idleTimeout: 100, onClose: (_s, r) => void closes.push(r) });
        await wire.openSid();
        await sleep(150);
        expect(await t.sweep()).toBe(1);
        await wire.openSid();
        await sleep(150);
        // Well within leaseMs (5 s) of the first sweep, by another token.
        expect(await t.sweep()).toBe(1);
        expect(closes).toEqual(['expired', 'expired']);
      });

      it('runs onClose exactly once when client close, server close and sweep race', async () => {
        const closes: string[] = [];
        const { t, wire } = await serve({ maxWait: 10, idleTimeout: 20, onClose: (_s, r) => void closes.push(r) });
        const sids = await Promise.all(Array.from({ length: 20 }, () => wire.openSid()));
        await sleep(30);
        await Promise.all(sids.flatMap((sid) => [wire.close(sid), t.hub.close(sid, 'server').catch(() => {}), t.sweep()]));
        await t.sweep();
        expect(closes.length).toBe(20);
      });
    });

    describe('flow control and limits (invariant 7)', () => {
      it('answers 429 with Retry-After beyond the inbound window, changing nothing', async () => {
        const seen: unknown[] = [];
        const { wire } = await serve({ limits: { inboundWindow: 4 }, onMessage: (_s, d) => void seen.push(d) });
        const sid = await wire.openSid();
        const r = await wire.send(sid, [[3, 'c'], [5, 'e']]);
        expect(r.status).toBe(429);
        expect(r.headers.get('retry-after')).toBe('1');
        expect(r.body.error.code).toBe('SEQ_OUT_OF_WINDOW');
        await wire.send(sid, [[1, 'a'], [2, 'b']]);
        await wire.send(sid, [[3, 'c']]);
        expect(seen).toEqual(['a', 'b', 'c']); // 'c' was not kept from the refused request
      });

      it('bounds the bytes buffered behind a gap', async () => {
        const { wire } = await serve({ limits: { inboundBufferBytes: 100 } });
        const sid = await wire.openSid();
        const r = await wire.send(sid, [[2, 'x'.repeat(200)]]);
        expect(r.status).toBe(429);
        expect(r.body.error.code).toBe('SEQ_OUT_OF_WINDOW');
      });

      it('answers 413 for a body, a message or a batch that is too large', async () => {
        const { wire } = await serve({ limits: { maxBodyBytes: 1000, maxMessageBytes: 100, maxMessagesPerRequest: 3 } });
        const sid = await wire.openSid();
        const body = await wire.sendRaw(sid, JSON.stringify({ msgs: [[1, 'x'.repeat(2000)]] }));
        expect([body.status, body.body.error.code]).toEqual([413, 'BODY_TOO_LARGE']);
        const msg = await wire.send(sid, [[1, 'x'.repeat(200)]]);
        expect([msg.status, msg.body.error.code]).toEqual([413, 'MESSAGE_TOO_LARGE']);
        const many = await wire.send(sid, [[1, 1], [2, 2], [3, 3], [4, 4]]);
        expect([many.status, many.body.error.code]).toEqual([413, 'TOO_MANY_MESSAGES']);
      });

      it("send() rejects when the client's window is full (whenFull: 'reject')", async () => {
        const { t, wire } = await serve({ limits: { maxUnackedMessages: 3 } });
        const sid = await wire.openSid();
        for (let i = 0; i < 3; i++) await t.hub.send(sid, i);
        await expect(t.hub.send(sid, 'overflow')).rejects.toMatchObject({ code: 'SEND_WINDOW_FULL' });
        await wire.watch(sid, 3);
        expect(await t.hub.send(sid, 'room again')).toBe(4);
      });

      it("send() waits for acks with whenFull: 'wait', and times out", async () => {
        const { t, wire } = await serve({ limits: { maxUnackedBytes: 30 }, whenFull: 'wait', sendTimeout: 300 });
        const sid = await wire.openSid();
        await t.hub.send(sid, 'x'.repeat(20));
        let resolved = false;
        const waiting = t.hub.send(sid, 'y'.repeat(20)).then((seq) => ((resolved = true), seq));
        await sleep(50);
        expect(resolved).toBe(false);
        await wire.watch(sid, 1); // the ack makes room
        expect(await waiting).toBe(2);
        await expect(t.hub.send(sid, 'z'.repeat(20))).rejects.toMatchObject({ code: 'SEND_TIMEOUT' });
        await expect(t.hub.send(sid, 'z'.repeat(20), { whenFull: 'reject' })).rejects.toMatchObject({ code: 'SEND_WINDOW_FULL' });
      });

      it('refuses new sessions past maxSessions with 429', async () => {
        const { wire } = await serve({ limits: { maxSessions: 2 } });
        const a = await wire.openSid();
        await wire.openSid();
        const r = await wire.open();
        expect([r.status, r.body.error.code, r.headers.get('retry-after')]).toEqual([429, 'TOO_MANY_SESSIONS', '5']);
        await wire.close(a);
        expect((await wire.open()).status).toBe(201);
      });
    });

    describe('bad input (invariant 9)', () => {
      const cases: Array<[string, (w: Wire, sid: string) => Promise<{ status: number; body: any }>, number, string]> = [
        ['malformed JSON', (w, sid) => w.sendRaw(sid, '{"msgs":'), 400, 'BAD_REQUEST'],
        ['a JSON array body', (w, sid) => w.sendRaw(sid, '[1]'), 400, 'BAD_REQUEST'],
        ['msgs not an array', (w, sid) => w.sendRaw(sid, '{"msgs":{}}'), 400, 'BAD_REQUEST'],
        ['a message that is not a pair', (w, sid) => w.sendRaw(sid, '{"msgs":[[1]]}'), 400, 'BAD_REQUEST'],
        ['seq 0', (w, sid) => w.sendRaw(sid, '{"msgs":[[0,"x"]]}'), 400, 'BAD_REQUEST'],
        ['a negative seq', (w, sid) => w.sendRaw(sid, '{"msgs":[[-1,"x"]]}'), 400, 'BAD_REQUEST'],
        ['a fractional seq', (w, sid) => w.sendRaw(sid, '{"msgs":[[1.5,"x"]]}'), 400, 'BAD_REQUEST'],
        ['a huge seq', (w, sid) => w.sendRaw(sid, '{"msgs":[[1e300,"x"]]}'), 400, 'BAD_REQUEST'],
        ['a string seq', (w, sid) => w.sendRaw(sid, '{"msgs":[["1","x"]]}'), 400, 'BAD_REQUEST'],
        ['a negative ack', (w, sid) => w.sendRaw(sid, '{"ack":-1}'), 400, 'BAD_REQUEST'],
        ['a far-ahead seq', (w, sid) => w.send(sid, [[100000, 'x']]), 429, 'SEQ_OUT_OF_WINDOW'],
        ['text/plain', (w, sid) => w.sendRaw(sid, '{}', { 'content-type': 'text/plain' }), 415, 'UNSUPPORTED_MEDIA_TYPE'],
        ['form encoding', (w, sid) => w.sendRaw(sid, 'a=1', { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'UNSUPPORTED_MEDIA_TYPE'],
        ['no session id', (w) => w.sendRaw(null, '{}'), 400, 'MISSING_SESSION_ID'],
        ['a malformed session id', (w) => w.sendRaw('../../etc', '{}'), 400, 'MISSING_SESSION_ID'],
        ['an unknown session', (w) => w.sendRaw('AAAAAAAAAAAAAAAAAAAAAA', '{}'), 404, 'UNKNOWN_SESSION'],
        ['an unknown session watch', (w) => w.watch('AAAAAAAAAAAAAAAAAAAAAA', 0), 404, 'UNKNOWN_SESSION'],
        ['an unknown session close', (w) => w.close('AAAAAAAAAAAAAAAAAAAAAA'), 404, 'UNKNOWN_SESSION'],
        ['watch without ack', (w, sid) => fetch(w.base + '/watch', { headers: { 'bidi-sid': sid } }).then(reply), 400, 'BAD_REQUEST'],
        ['watch with ack=abc', (w, sid) => fetch(w.base + '/watch?ack=abc', { headers: { 'bidi-sid': sid } }).then(reply), 400, 'BAD_REQUEST'],
        ['watch with wait=-5', (w, sid) => fetch(w.base + '/watch?ack=0&wait=-5', { headers: { 'bidi-sid': sid } }).then(reply), 400, 'BAD_REQUEST'],
        ['GET on send', (w, sid) => fetch(w.base + '/send', { headers: { 'bidi-sid': sid } }).then(reply), 405, 'METHOD_NOT_ALLOWED'],
        ['PUT on the base', (w) => fetch(w.base, { method: 'PUT' }).then(reply), 405, 'METHOD_NOT_ALLOWED'],
        ['an unknown path', (w) => fetch(w.base + '/nope').then(reply), 404, 'NOT_FOUND'],
        ['open without a body', (w) => fetch(w.base, { method: 'POST', headers: { 'content-type': 'application/json' } }).then(reply), 400, 'BAD_REQUEST'],
      ];

      it.each(cases)('answers %s with a JSON 4xx and leaves other sessions alone', async (_name, make, status, code) => {
        const seen: unknown[] = [];
        const { t, wire } = await serve({ onMessage: (_s, d) => void seen.push(d) });
        const victim = await wire.openSid();
        const other = await wire.openSid();
        await wire.send(other, [[1, 'before']]);
        await t.hub.send(other, 'pending');
        const r = await make(wire, victim);
        expect(r.status).toBe(status);
        expect(r.body).toEqual({ error: { code, message: expect.any(String) } });
        // The other session is untouched and keeps working.
        await wire.send(other, [[2, 'after']]);
        expect(seen).toEqual(['before', 'after']);
        expect((await wire.watch(other, 0)).body).toEqual({ msgs: [[1, 'pending']], ack: 2 });
        // So is the victim, for everything but the refused request.
        expect((await wire.send(victim, [[1, 'ok']])).body).toEqual({ ack: 1 });
      });

      it('answers a per-request authorize failure, and runs it on every request after open', async () => {
        const checks: string[] = [];
        const { wire } = await serve({
          authorize({ headers }) {
            checks.push(headers.get('x-token') ?? 'none');
            if (headers.get('x-token') !== 'ok') throw new BidiError('UNAUTHORIZED', 'bad token');
          },
        });
        const sid = await wire.openSid();
        const denied = await wire.send(sid, [[1, 'x']]);
        expect([denied.status, denied.body.error.code]).toEqual([401, 'UNAUTHORIZED']);
        const ok = await wire.sendRaw(sid, JSON.stringify({ msgs: [[1, 'x']] }), { 'content-type': 'application/json', 'x-token': 'ok' });
        expect(ok.status).toBe(200);
        expect(checks).toEqual(['none', 'ok']);
      });
    });

    describe('CORS and media types (invariant 10)', () => {
      it('is closed by default: cross-origin requests and preflights get 403', async () => {
        const { wire } = await serve();
        const r = await wire.open({ v: 1 }, { origin: 'https://evil.example' });
        expect([r.status, r.body.error.code]).toEqual([403, 'CORS_FORBIDDEN']);
        expect(r.headers.get('access-control-allow-origin')).toBeNull();
        const pre = await fetch(wire.base, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
        expect(pre.status).toBe(403);
      });

      it('allows same-origin requests that carry an Origin header', async () => {
        const { wire } = await serve();
        const origin = new URL(wire.base).origin;
        expect((await wire.open({ v: 1 }, { origin })).status).toBe(201);
      });

      it('answers preflights and adds headers for allowed origins', async () => {
        const { wire } = await serve({ cors: { origins: ['https://app.example'], allowHeaders: ['authorization'] } });
        const pre = await fetch(wire.base + '/send', { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'POST' } });
        expect(pre.status).toBe(204);
        expect(pre.headers.get('access-control-allow-origin')).toBe('https://app.example');
        expect(pre.headers.get('access-control-allow-headers')).toBe('content-type, bidi-sid, authorization');
        expect(pre.headers.get('access-control-allow-methods')).toBe('GET, POST, DELETE');
        const r = await wire.open({ v: 1 }, { origin: 'https://app.example' });
        expect(r.status).toBe(201);
        expect(r.headers.get('access-control-allow-origin')).toBe('https://app.example');
      });
    });
  });
}

async function reply(res: Response): Promise<{ status: number; body: any }> {
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    // keep the text
  }
  return { status: res.status, body };
}
