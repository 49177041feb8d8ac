/**
 * The store contract suite. Every `Store` implementation runs this exact
 * suite (see docs/STORE.md, "Writing a store"); it is shipped as
 * `bidiweb/testing` so third-party stores can run it too:
 *
 *   runStoreContract({ describe, it, afterAll }, () => new RedisStore(...), { name: 'RedisStore' });
 *
 * It takes the test runner's `describe`, `it` and `afterAll` (node:test:
 * `after`) and asserts with node:assert (./expect.ts), so it runs unchanged
 * under Jest, Vitest and node:test.
 *
 * Rules the suite follows so that it runs against any store, local or remote:
 *
 * - Time is real: idle, lease and tombstone durations are tens of ms and the
 *   tests sleep past them. A remote store uses its own clock.
 * - Session ids are fresh random 22-character ids and group names are unique,
 *   so a store shared across tests (or with other suites) never collides.
 * - Tests that count sessions store-wide (`maxSessions`) or sweep get a store
 *   of their own from `makeStore`, which must therefore return a store over
 *   a fresh key space on every call (e.g. a unique key prefix).
 * - Tests run one after another (the default of all three runners): they
 *   share one store, made by the first test that runs.
 */
import * as fc from 'fast-check';
import type { AppendLimits, CreateInput, GroupRetention, ReadInput, ReceiveInput, Store, StoreEvent, StoredMessage } from '../core/store';
import { APPEND_IDS_REMEMBERED, CLIENT_CLOSE_REASON, GROUP_OVERRUN_REASON } from '../core/store';
import { newSessionId, newToken } from '../core/util';
import { expect } from './expect';

/**
 * The test runner's functions the suite registers its tests with. Jest and
 * Vitest: `{ describe, it, afterAll }`; node:test: `{ describe, it, afterAll: after }`.
 */
export interface StoreContractRunner {
  describe(name: string, body: () => void): unknown;
  it(name: string, body: () => Promise<void>): unknown;
  /** Runs once after the suite's tests, to release the stores it made. */
  afterAll(body: () => Promise<void>): unknown;
}

export interface StoreContractOptions<S extends Store = Store> {
  /** Shown in the suite's title: `Store contract: <name>`. Default `'store'`. */
  name?: string;
  /** Releases a store the suite made (connections, timers, its keys). Default: `store.dispose?.()`. */
  cleanup?(store: S): Promise<void> | void;
}

/** Long enough never to expire during a test. */
const LONG = 60_000;
/** Short durations for expiry tests, and a sleep safely past them. */
const SHORT = 50;
const PAST_SHORT = 90;

const ROOMY: AppendLimits = { maxUnackedMessages: 10_000, maxUnackedBytes: 1 << 24 };
/** A group log that keeps everything a test publishes. */
const KEEP: GroupRetention = { maxEntries: 10_000, maxAgeMs: LONG };

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Client message `seq` with a recognisable payload. */
function m(seq: number): StoredMessage {
  return { seq, json: JSON.stringify(`m${seq}`) };
}
function ms(...seqs: number[]): StoredMessage[] {
  return seqs.map(m);
}
/** A message of exactly `bytes` bytes of JSON (bytes >= 2). */
function sized(seq: number, bytes: number): StoredMessage {
  return { seq, json: JSON.stringify('x'.repeat(bytes - 2)) };
}
const seqsOf = (list: StoredMessage[]) => list.map((x) => x.seq);

function uniqueGroup(): string {
  return `group-${newToken()}`;
}

/** Polls until `check` holds (for events from remote stores), failing after `timeoutMs`. */
async function eventually(check: () => boolean, timeoutMs = 1_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await sleep(2);
  }
}

/**
 * Registers the store contract suite with the runner: one `describe` block
 * of tests against stores from `makeStore`, each over a fresh key space.
 */
export function runStoreContract<S extends Store>(
  runner: StoreContractRunner,
  makeStore: () => Promise<S> | S,
  options: StoreContractOptions<S> = {},
): void {
  const { describe } = runner;
  runner.describe(`Store contract: ${options.name ?? 'store'}`, () => {
    let store: S; // made by the first test that runs (see `it` below)
    const made: S[] = [];

    async function fresh(): Promise<S> {
      const s = await makeStore();
      made.push(s);
      return s;
    }

    /** A test of the suite. The shared store is made by the first test that runs, so the runner need not offer a beforeAll hook. */
    const it = (name: string, body: () => Promise<void>): void => {
      runner.it(name, async () => {
        store ??= await fresh();
        await body();
      });
    };

    runner.afterAll(async () => {
      for (const s of made.splice(0)) {
        if (options.cleanup) await options.cleanup(s);
        else await s.dispose?.();
      }
    });

    // --- helpers over the store under test ----------------------------------------

    async function open(over: Partial<CreateInput> = {}, on: Store = store): Promise<string> {
      const sid = over.sid ?? newSessionId();
      const r = await on.create({
        sid,
        userJson: '{"name":"ada"}',
        stateJson: '{"n":0}',
        initial: [],
        idleMs: LONG,
        maxSessions: 1_000_000_000,
        ...over,
      });
      expect(r).toEqual({ status: 'ok' });
      return sid;
    }

    function receive(sid: string, over: Partial<ReceiveInput> = {}, on: Store = store) {
      return on.receive(sid, {
        msgs: [],
        window: 1_000,
        bufferBytes: 1 << 20,
        lease: { token: newToken(), ms: LONG },
        maxDeliver: 1_000,
        ...over,
      });
    }

    function read(sid: string, over: Partial<ReadInput> = {}, on: Store = store) {
      return on.read(sid, { ack: 0, watchToken: newToken(), claim: true, maxMessages: 1_000, ...over });
    }

    function commit(sid: string, token: string, seq: number, over: Partial<Parameters<Store['commit']>[1]> = {}) {
      return store.commit(sid, { token, seq, leaseMs: LONG, next: true, maxDeliver: 1_000, ...over });
    }

    /** Delivers a whole run the way core does: commit each seq, taking more with next=true. Returns the seqs delivered. */
    async function drain(sid: string, token: string, first: StoredMessage[]): Promise<number[]> {
      const out: number[] = [];
      let batch = first;
      while (batch.length > 0) {
        let next: StoredMessage[] = [];
        for (let i = 0; i < batch.length; i++) {
          out.push(batch[i]!.seq);
          const last = i === batch.length - 1;
          const c = await commit(sid, token, batch[i]!.seq, { next: last });
          if (c.status !== 'ok') throw new Error(`commit: ${c.status}`);
          if (last) next = c.deliver;
        }
        batch = next;
      }
      return out;
    }

    async function info(sid: string, on: Store = store) {
      return (await on.inspect([sid]))[0];
    }

    /** Closes and finishes the close, leaving a tombstone. */
    async function closeFully(sid: string, reason = 'server', on: Store = store): Promise<void> {
      const token = newToken();
      const c = await on.close(sid, { reason, lease: { token, ms: LONG } });
      expect(c).toMatchObject({ status: 'ok', leased: true });
      await on.finishClose(sid, token);
    }

    /**
     * Subscribes and collects events. Awaits what subscribe returns, so the suite
     * also fits a store whose subscription becomes active asynchronously (see
     * docs/STORE.md, "subscribe").
     */
    async function listen(sid: string, on: Store = store) {
      const events: StoreEvent[] = [];
      const unsubscribe = await on.subscribe(sid, (e) => events.push(e));
      return { events, unsubscribe };
    }

    /** Events as kinds: a message event's optional `run` left out (a store may or may not attach one). */
    function kinds(events: StoreEvent[]): StoreEvent[] {
      return events.map((e) => (e.type === 'message' ? { type: 'message' } : e));
    }

    // --- create --------------------------------------------------------------------

    describe('create', () => {
      it('creates an open session with its user, state and initial messages as seqs 1..n', async () => {
        const sid = await open({ userJson: '{"u":1}', stateJson: '{"s":2}', initial: ['"a"', '{"b":1}'] });
        expect(await info(sid)).toEqual({ status: 'open', userJson: '{"u":1}', stateJson: '{"s":2}', clientAck: 0, lastSeq: 2 });
        const r = await read(sid);
        expect(r).toMatchObject({ status: 'ok', clientAck: 0, superseded: false });
        if (r.status !== 'ok') throw new Error();
        expect(r.msgs).toEqual([
          { seq: 1, json: '"a"' },
          { seq: 2, json: '{"b":1}' },
        ]);
        expect(r.close).toBeUndefined();
      });

      it('answers exists for a sid already in use and leaves that session alone', async () => {
        const sid = await open({ userJson: '"first"' });
        expect(await store.create({ sid, userJson: '"second"', stateJson: '{}', initial: ['"x"'], idleMs: LONG, maxSessions: 1e9 })).toEqual({
          status: 'exists',
        });
        expect(await info(sid)).toMatchObject({ userJson: '"first"', lastSeq: 0 });
      });

      it('answers exists for the sid of a closed session (tombstone)', async () => {
        const sid = await open();
        await closeFully(sid);
        expect((await store.create({ sid, userJson: 'null', stateJson: '{}', initial: [], idleMs: LONG, maxSessions: 1e9 })).status).toBe('exists');
      });

      it('refuses beyond maxSessions, counting sessions that are not closed (open and closing), not tombstones', async () => {
        const s = await fresh();
        const a = await open({ maxSessions: 2 }, s);
        const b = await open({ maxSessions: 2 }, s);
        const refused = newSessionId();
        expect(await s.create({ sid: refused, userJson: 'null', stateJson: '{}', initial: [], idleMs: LONG, maxSessions: 2 })).toEqual({
          status: 'too-many-sessions',
        });
        expect(await info(refused, s)).toBeNull();
        // A larger limit admits more: the limit is per call, the count is store-wide.
        const c = await open({ maxSessions: 3 }, s);

        // Closing sessions still count: onClose has not run yet.
        const token = newToken();
        await s.close(a, { reason: 'bye', lease: { token, ms: LONG } });
        expect((await s.create({ sid: newSessionId(), userJson: 'null', stateJson: '{}', initial: [], idleMs: LONG, maxSessions: 3 })).status).toBe(
          'too-many-sessions',
        );
        // Closed ones (tombstones) do not.
        await s.finishClose(a, token);
        await open({ maxSessions: 3 }, s);
        expect((await s.create({ sid: newSessionId(), userJson: 'null', stateJson: '{}', initial: [], idleMs: LONG, maxSessions: 3 })).status).toBe(
          'too-many-sessions',
        );
        expect((await s.inspect([b, c])).map((x) => x?.status)).toEqual(['open', 'open']);
      });
    });

    // --- receive -------------------------------------------------------------------

    describe('receive', () => {
      it('answers unknown for a sid that never existed', async () => {
        expect(await receive(newSessionId(), { msgs: ms(1) })).toEqual({ status: 'unknown' });
      });

      it('answers closed for a closing session and for a closed one', async () => {
        const sid = await open();
        const token = newToken();
        await store.close(sid, { reason: 'x', lease: { token, ms: LONG } });
        expect(await receive(sid, { msgs: ms(1) })).toEqual({ status: 'closed' });
        await store.finishClose(sid, token);
        expect(await receive(sid, { msgs: ms(1) })).toEqual({ status: 'closed' });
      });

      it('delivers the contiguous run under the lease, with user and state', async () => {
        const sid = await open({ userJson: '{"u":7}', stateJson: '{"k":1}' });
        const r = await receive(sid, { msgs: ms(1, 2, 3) });
        expect(r).toEqual({ status: 'ok', clientAck: 0, deliver: ms(1, 2, 3), userJson: '{"u":7}', stateJson: '{"k":1}' });
      });

      it('hands out at most maxDeliver messages; commit with next=true hands out the rest', async () => {
        const sid = await open();
        const token = newToken();
        const r = await receive(sid, { msgs: ms(1, 2, 3, 4, 5), maxDeliver: 2, lease: { token, ms: LONG } });
        expect(r.status === 'ok' && seqsOf(r.deliver)).toEqual([1, 2]);
        await commit(sid, token, 1, { next: false, maxDeliver: 2 });
        const c = await commit(sid, token, 2, { next: true, maxDeliver: 2 });
        expect(c).toEqual({ status: 'ok', clientAck: 2, deliver: ms(3, 4) });
      });

      it('rejects an ack above the last server seq, changing nothing', async () => {
        const sid = await open({ initial: ['1', '2'] });
        expect(await receive(sid, { msgs: ms(1), ack: 3 })).toEqual({ status: 'invalid-ack', lastSeq: 2 });
        // Nothing was buffered, nothing trimmed.
        const again = await receive(sid, { msgs: [] });
        expect(again).toMatchObject({ status: 'ok', clientAck: 0, deliver: [] });
        const r = await read(sid);
        expect(r.status === 'ok' && seqsOf(r.msgs)).toEqual([1, 2]);
      });

      it('rejects a seq above clientAck + window, changing nothing (no buffering, no trimming)', async () => {
        const sid = await open({ initial: ['1', '2'] });
        expect(await receive(sid, { msgs: ms(2, 3, 9), window: 8, ack: 2 })).toEqual({ status: 'out-of-window', clientAck: 0 });
        // seq 8 = clientAck + window is still inside.
        const okay = await receive(sid, { msgs: ms(8), window: 8 });
        expect(okay).toMatchObject({ status: 'ok', clientAck: 0, deliver: [] });
        // 2 and 3 were not buffered: 1 alone is deliverable.
        const r = await receive(sid, { msgs: ms(1), window: 8 });
        expect(r.status === 'ok' && seqsOf(r.deliver)).toEqual([1]);
        // The ack of the rejected request did not trim.
        const w = await read(sid);
        expect(w.status === 'ok' && seqsOf(w.msgs)).toEqual([1, 2]);
      });

      it('measures the window from the current clientAck', async () => {
        const sid = await open();
        const token = newToken();
        const r = await receive(sid, { msgs: ms(1, 2), window: 2, lease: { token, ms: LONG } });
        expect(r.status === 'ok' && seqsOf(r.deliver)).toEqual([1, 2]);
        await commit(sid, token, 1, { next: false });
        await commit(sid, token, 2, { next: true });
        expect((await receive(sid, { msgs: ms(4), window: 2 })).status).toBe('ok');
        expect((await receive(sid, { msgs: ms(5), window: 2 })).status).toBe('out-of-window');
      });

      it('rejects messages that would exceed bufferBytes behind a gap, changing nothing', async () => {
        const sid = await open({ initial: ['1'] });
        // 10-byte messages, 30 bytes of buffer.
        expect((await receive(sid, { msgs: [sized(2, 10), sized(3, 10)], bufferBytes: 30 })).status).toBe('ok');
        expect(await receive(sid, { msgs: [sized(4, 10), sized(5, 10)], bufferBytes: 30, ack: 1 })).toEqual({
          status: 'out-of-window',
          clientAck: 0,
        });
        // Neither 4 nor 5 was buffered, and the ack did not trim.
        const w = await read(sid);
        expect(w.status === 'ok' && seqsOf(w.msgs)).toEqual([1]);
        expect((await receive(sid, { msgs: [sized(4, 10)], bufferBytes: 30 })).status).toBe('ok');
        const r = await receive(sid, { msgs: [sized(1, 10)], bufferBytes: 30 });
        expect(r.status === 'ok' && seqsOf(r.deliver)).toEqual([1, 2, 3, 4]);
      });

      it('never refuses the message that unblocks a full buffer', async () => {
        const sid = await open();
        expect((await receive(sid, { msgs: [sized(2, 10), sized(3, 10)], bufferBytes: 20 })).status).toBe('ok');
        const r = await receive(sid, { msgs: [sized(1, 10)], bufferBytes: 20 });
        expect(r.status === 'ok' && seqsOf(r.deliver)).toEqual([1, 2, 3]);
      });

      it('does not count duplicates of buffered messages against bufferBytes', async () => {
        const sid = await open();
        expect((await receive(sid, { msgs: [sized(2, 10), sized(3, 10)], bufferBytes: 20 })).status).toBe('ok');
        expect(await receive(sid, { msgs: [sized(2, 10), sized(3, 10)], bufferBytes: 20 })).toMatchObject({ status: 'ok', deliver: [] });
      });

      it('accepts a request that fills the gap even when its other messages join the run past already buffered ones', async () => {
        // The client's sender batches whatever is `pending`: after a lost POST of
        // [1,2] and a 429 for [11,12] while [3..10] sat buffered, it sends
        // [1,2,11,12] (later [1..12]). Every message of that request joins the
        // contiguous run 1..12, nothing would wait behind a gap, yet it is refused
        // because the request's *fresh* messages are not contiguous among
        // themselves. The client retries the same batch forever: a livelock.
        const sid = await open();
        const tenBytes = (seq: number) => sized(seq, 10);
        const buffered = [3, 4, 5, 6, 7, 8, 9, 10].map(tenBytes);
        expect((await receive(sid, { msgs: buffered, bufferBytes: 80 })).status).toBe('ok');
        const r = await receive(sid, { msgs: [1, 2, 11, 12].map(tenBytes), bufferBytes: 80 });
        expect(r.status).toBe('ok');
        expect(r.status === 'ok' && seqsOf(r.deliver)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
      });

      it('buffers messages behind a gap and delivers the run once the gap fills', async () => {
        const sid = await open();
        expect(await receive(sid, { msgs: ms(3, 5) })).toMatchObject({ status: 'ok', clientAck: 0, deliver: [] });
        expect(await receive(sid, { msgs: ms(2) })).toMatchObject({ status: 'ok', clientAck: 0, deliver: [] });
        const r = await receive(sid, { msgs: ms(1) });
        expect(r).toMatchObject({ status: 'ok', clientAck: 0, deliver: ms(1, 2, 3) });
      });

      it('ignores already delivered seqs', async () => {
        const sid = await open();
        const token = newToken();
        const r = await receive(sid, { msgs: ms(1, 2), lease: { token, ms: LONG } });
        if (r.status !== 'ok') throw new Error();
        await drain(sid, token, r.deliver);
        const again = await receive(sid, { msgs: [{ seq: 1, json: '"changed"' }, { seq: 2, json: '"changed"' }, m(3)] });
        expect(again).toMatchObject({ status: 'ok', clientAck: 2, deliver: ms(3) });
      });

      it('keeps the first copy of an already buffered seq', async () => {
        const sid = await open();
        await receive(sid, { msgs: ms(2) });
        await receive(sid, { msgs: [{ seq: 2, json: '"second copy"' }] });
        const r = await receive(sid, { msgs: ms(1) });
        expect(r).toMatchObject({ status: 'ok', deliver: ms(1, 2) });
      });

      it('trims the server log by ack', async () => {
        const sid = await open({ initial: ['1', '2', '3'] });
        expect(await receive(sid, { ack: 2 })).toMatchObject({ status: 'ok' });
        const r = await read(sid);
        expect(r.status === 'ok' && seqsOf(r.msgs)).toEqual([3]);
        // An older ack is harmless.
        await receive(sid, { ack: 1 });
        const r2 = await read(sid);
        expect(r2.status === 'ok' && seqsOf(r2.msgs)).toEqual([3]);
      });

      it('gives a deliverable run to one caller only: concurrent receives of the same message', async () => {
        const sid = await open();
        const results = await Promise.all([1, 2, 3, 4].map(() => receive(sid, { msgs: ms(1, 2) })));
        const runs = results.map((r) => (r.status === 'ok' ? seqsOf(r.deliver) : null));
        expect(runs.filter((x) => x !== null && x.length > 0)).toEqual([[1, 2]]);
        expect(runs.filter((x) => x !== null && x.length === 0)).toHaveLength(3);
      });

      it('gives a deliverable run to one caller only: concurrent receives of different messages', async () => {
        const sid = await open();
        const results = await Promise.all([receive(sid, { msgs: ms(1) }), receive(sid, { msgs: ms(2) }), receive(sid, { msgs: ms(1, 3) })]);
        const nonEmpty = results.filter((r) => r.status === 'ok' && r.deliver.length > 0);
        expect(nonEmpty).toHaveLength(1);
      });

      it('while the lease is held, another receive buffers and gets deliver=[]; the holder gets it on commit', async () => {
        const sid = await open();
        const holder = newToken();
        const r = await receive(sid, { msgs: ms(1), lease: { token: holder, ms: LONG } });
        expect(r.status === 'ok' && seqsOf(r.deliver)).toEqual([1]);
        expect(await receive(sid, { msgs: ms(2) })).toMatchObject({ status: 'ok', clientAck: 0, deliver: [] });
        // A receive with nothing new but a deliverable run buffered does not take it either.
        expect(await receive(sid, {})).toMatchObject({ status: 'ok', deliver: [] });
        expect(await commit(sid, holder, 1)).toEqual({ status: 'ok', clientAck: 1, deliver: ms(2) });
      });

      it('after the lease expires, a receive takes over and gets the run again (the redelivery case)', async () => {
        const sid = await open();
        const crashed = newToken();
        const r = await receive(sid, { msgs: ms(1, 2), lease: { token: crashed, ms: SHORT } });
        expect(r.status === 'ok' && seqsOf(r.deliver)).toEqual([1, 2]);
        expect(await receive(sid, {})).toMatchObject({ deliver: [] });
        await sleep(PAST_SHORT);
        const next = newToken();
        const r2 = await receive(sid, { lease: { token: next, ms: LONG } });
        expect(r2).toMatchObject({ status: 'ok', clientAck: 0, deliver: ms(1, 2) });
        // The old holder has lost the lease.
        expect(await commit(sid, crashed, 1)).toEqual({ status: 'lost' });
        expect(await commit(sid, next, 1, { next: false })).toMatchObject({ status: 'ok', clientAck: 1 });
      });

      it('takes no lease when nothing is deliverable', async () => {
        const sid = await open();
        const t = newToken();
        expect(await receive(sid, { msgs: ms(2), lease: { token: t, ms: LONG } })).toMatchObject({ deliver: [] });
        expect(await store.renewLease(sid, t, LONG)).toBe(false);
        // ...so the next receive that fills the gap gets the run.
        const r = await receive(sid, { msgs: ms(1) });
        expect(r.status === 'ok' && seqsOf(r.deliver)).toEqual([1, 2]);
      });
    });

    // --- commit --------------------------------------------------------------------

    describe('commit', () => {
      it('advances clientAck one seq at a time and saves the state', async () => {
        const sid = await open({ stateJson: '{"n":0}' });
        const token = newToken();
        await receive(sid, { msgs: ms(1, 2), lease: { token, ms: LONG } });
        expect(await commit(sid, token, 1, { next: false, stateJson: '{"n":1}' })).toEqual({ status: 'ok', clientAck: 1, deliver: [] });
        expect(await info(sid)).toMatchObject({ clientAck: 1, stateJson: '{"n":1}' });
        // Without stateJson the state stays.
        await commit(sid, token, 2, { next: false });
        expect(await info(sid)).toMatchObject({ clientAck: 2, stateJson: '{"n":1}' });
      });

      it('never moves clientAck back or past a gap (a repeated or out-of-order commit changes no ack)', async () => {
        const sid = await open();
        const token = newToken();
        await receive(sid, { msgs: ms(1, 2, 3), lease: { token, ms: LONG } });
        await commit(sid, token, 1, { next: false });
        expect(await commit(sid, token, 1, { next: false })).toMatchObject({ status: 'ok', clientAck: 1 });
        expect(await commit(sid, token, 3, { next: false })).toMatchObject({ status: 'ok', clientAck: 1 });
        expect(await commit(sid, token, 2, { next: false })).toMatchObject({ status: 'ok', clientAck: 2 });
      });

      it('the state saved by commit is what the next delivery sees', async () => {
        const sid = await open({ stateJson: '{"n":0}' });
        const t1 = newToken();
        await receive(sid, { msgs: ms(1), lease: { token: t1, ms: LONG } });
        expect(await commit(sid, t1, 1, { stateJson: '{"n":1}' })).toEqual({ status: 'ok', clientAck: 1, deliver: [] });
        const r = await receive(sid, { msgs: ms(2) });
        expect(r).toMatchObject({ status: 'ok', deliver: ms(2), stateJson: '{"n":1}' });
      });

      it('with next=false keeps the lease (even with nothing more to deliver)', async () => {
        const sid = await open();
        const token = newToken();
        await receive(sid, { msgs: ms(1), lease: { token, ms: LONG } });
        await commit(sid, token, 1, { next: false });
        expect(await receive(sid, { msgs: ms(2) })).toMatchObject({ deliver: [] });
        expect(await store.renewLease(sid, token, LONG)).toBe(true);
      });

      it('with next=true and nothing buffered releases the lease', async () => {
        const sid = await open();
        const token = newToken();
        await receive(sid, { msgs: ms(1), lease: { token, ms: LONG } });
        expect(await commit(sid, token, 1)).toEqual({ status: 'ok', clientAck: 1, deliver: [] });
        expect(await store.renewLease(sid, token, LONG)).toBe(false);
        const r = await receive(sid, { msgs: ms(2) });
        expect(r).toMatchObject({ status: 'ok', clientAck: 1, deliver: ms(2) });
      });

      it('with next=true stops at a gap and releases the lease', async () => {
        const sid = await open();
        const token = newToken();
        await receive(sid, { msgs: ms(1, 3), lease: { token, ms: LONG } });
        expect(await commit(sid, token, 1)).toEqual({ status: 'ok', clientAck: 1, deliver: [] });
        const r = await receive(sid, { msgs: ms(2) });
        expect(r).toMatchObject({ deliver: ms(2, 3) });
      });

      it('a receive racing the final commit is never stranded: either the commit hands the message out or the receive gets it', async () => {
        for (let round = 0; round < 40; round++) {
          const sid = await open();
          const holder = newToken();
          await receive(sid, { msgs: ms(1), lease: { token: holder, ms: LONG } });
          const racer = newToken();
          const doCommit = () => commit(sid, holder, 1, { next: true });
          const doReceive = () => receive(sid, { msgs: ms(2), lease: { token: racer, ms: LONG } });
          const [c, r] = round % 2 === 0 ? await Promise.all([doCommit(), doReceive()]) : (await Promise.all([doReceive(), doCommit()])).reverse();
          if (c.status !== 'ok' || r.status !== 'ok') throw new Error('unexpected status');
          const handedOut = [...c.deliver, ...(r as { deliver: StoredMessage[] }).deliver].map((x) => x.seq);
          expect(handedOut).toEqual([2]);
        }
      });

      it('answers lost for a wrong token, an unknown session, and changes nothing', async () => {
        const sid = await open({ stateJson: '{"n":0}' });
        const token = newToken();
        await receive(sid, { msgs: ms(1), lease: { token, ms: LONG } });
        expect(await commit(sid, newToken(), 1, { stateJson: '{"n":9}' })).toEqual({ status: 'lost' });
        expect(await info(sid)).toMatchObject({ clientAck: 0, stateJson: '{"n":0}' });
        expect(await commit(newSessionId(), token, 1)).toEqual({ status: 'lost' });
        expect(await commit(sid, token, 1)).toMatchObject({ status: 'ok', clientAck: 1 });
      });

      it('answers lost when the lease expired and another caller took it', async () => {
        const sid = await open();
        const old = newToken();
        await receive(sid, { msgs: ms(1), lease: { token: old, ms: SHORT } });
        await sleep(PAST_SHORT);
        const r = await receive(sid, {});
        expect(r).toMatchObject({ deliver: ms(1) });
        expect(await commit(sid, old, 1, { stateJson: '{"stale":true}' })).toEqual({ status: 'lost' });
        expect(await info(sid)).toMatchObject({ clientAck: 0, stateJson: '{"n":0}' });
      });

      it('answers closing once the session started closing; the holder keeps the lease to run onClose', async () => {
        const sid = await open({ userJson: '{"u":1}', stateJson: '{"n":0}' });
        const holder = newToken();
        await receive(sid, { msgs: ms(1, 2), lease: { token: holder, ms: LONG } });
        const closer = newToken();
        const c = await store.close(sid, { reason: 'kicked', lease: { token: closer, ms: LONG } });
        expect(c).toMatchObject({ status: 'ok', transitioned: true, leased: false, reason: 'kicked' });
        const r = await commit(sid, holder, 1, { stateJson: '{"n":1}', next: false });
        expect(r).toEqual({ status: 'closing', clientAck: 1, reason: 'kicked', userJson: '{"u":1}', stateJson: '{"n":1}' });
        // The closer's token cannot finish; the holder's can.
        await store.finishClose(sid, closer);
        expect((await info(sid))?.status).toBe('closing');
        expect(await store.renewLease(sid, holder, LONG)).toBe(true);
        await store.finishClose(sid, holder);
        expect((await info(sid))?.status).toBe('closed');
        expect(await commit(sid, holder, 2)).toEqual({ status: 'lost' });
      });

      describe('with the handler\'s sends', () => {
        it('appends them atomically with the delivery record, in order, after what is in the log, and wakes watches', async () => {
          const sid = await open({ initial: ['"w"'] });
          const token = newToken();
          await receive(sid, { msgs: ms(1, 2), lease: { token, ms: LONG } });
          const { events, unsubscribe } = await listen(sid);
          const c = await commit(sid, token, 1, { next: false, sends: { msgs: ['"a"', '"b"'], limits: ROOMY } });
          expect(c).toEqual({ status: 'ok', clientAck: 1, deliver: [], sent: { stored: 2, firstSeq: 2 } });
          expect(await store.append(sid, ['"c"'], ROOMY)).toEqual({ status: 'ok', firstSeq: 4, lastSeq: 4 });
          expect(await read(sid)).toMatchObject({
            msgs: [
              { seq: 1, json: '"w"' },
              { seq: 2, json: '"a"' },
              { seq: 3, json: '"b"' },
              { seq: 4, json: '"c"' },
            ],
          });
          await eventually(() => events.some((e) => e.type === 'message'));
          unsubscribe();
          // No sends: no `sent`, as before.
          expect(await commit(sid, token, 2, { next: false })).toEqual({ status: 'ok', clientAck: 2, deliver: [] });
        });

        it('a repeated commit stores nothing and answers the first call\'s seqs', async () => {
          const sid = await open();
          const token = newToken();
          await receive(sid, { msgs: ms(1), lease: { token, ms: LONG } });
          const input = { next: false, sends: { msgs: ['"a"', '"b"'], limits: ROOMY } };
          const first = await commit(sid, token, 1, input);
          expect(first).toMatchObject({ sent: { stored: 2, firstSeq: 1 } });
          expect(await store.append(sid, ['"x"'], ROOMY)).toMatchObject({ firstSeq: 3 });
          expect(await commit(sid, token, 1, input)).toEqual(first);
          expect(await info(sid)).toMatchObject({ lastSeq: 3, clientAck: 1 });
        });

        it('stores as many as fit the unacked bounds and refuses the rest (full), still recording the delivery', async () => {
          const sid = await open({ initial: ['1'] });
          const token = newToken();
          await receive(sid, { msgs: ms(1, 2), lease: { token, ms: LONG } });
          const limits = { maxUnackedMessages: 3, maxUnackedBytes: 1 << 20 };
          const c = await commit(sid, token, 1, { next: false, sends: { msgs: ['2', '3', '4'], limits } });
          expect(c).toEqual({ status: 'ok', clientAck: 1, deliver: [], sent: { stored: 2, firstSeq: 2, refused: 'full' } });
          const bytes = { maxUnackedMessages: 100, maxUnackedBytes: 5 }; // '1','2','3' hold 3 bytes: '44' fits, '5' not
          expect(await commit(sid, token, 2, { next: false, sends: { msgs: ['44', '5'], limits: bytes } })).toEqual({
            status: 'ok',
            clientAck: 2,
            deliver: [],
            sent: { stored: 1, firstSeq: 4, refused: 'full' },
          });
          expect(await info(sid)).toMatchObject({ lastSeq: 4, clientAck: 2 });
        });

        it('a member of a group: answers pull and changes nothing (the sends go by append, which pulls first)', async () => {
          const sid = await open();
          const token = newToken();
          await receive(sid, { msgs: ms(1), lease: { token, ms: LONG } });
          expect(await store.join(sid, `g${newToken()}`)).toBe(true);
          expect(await commit(sid, token, 1, { next: false, sends: { msgs: ['"x"'], limits: ROOMY } })).toEqual({ status: 'pull' });
          expect(await info(sid)).toMatchObject({ lastSeq: 0, clientAck: 0 });
          expect(await commit(sid, token, 1, { next: false })).toEqual({ status: 'ok', clientAck: 1, deliver: [] });
        });

        it('refuses them (closed) on a closing session, and stores nothing when the lease is lost', async () => {
          const sid = await open();
          const token = newToken();
          await receive(sid, { msgs: ms(1, 2), lease: { token, ms: LONG } });
          expect(await commit(sid, newToken(), 1, { sends: { msgs: ['"x"'], limits: ROOMY } })).toEqual({ status: 'lost' });
          expect(await info(sid)).toMatchObject({ lastSeq: 0, clientAck: 0 });
          await store.close(sid, { reason: 'bye' });
          const c = await commit(sid, token, 1, { next: false, sends: { msgs: ['"x"'], limits: ROOMY } });
          expect(c).toMatchObject({ status: 'closing', clientAck: 1, sent: { stored: 0, refused: 'closed' } });
          expect(await info(sid)).toMatchObject({ lastSeq: 0 });
        });
      });
    });

    // --- renewLease ----------------------------------------------------------------

    describe('renewLease', () => {
      it('extends a held lease so nobody takes it over', async () => {
        const sid = await open();
        const token = newToken();
        await receive(sid, { msgs: ms(1), lease: { token, ms: SHORT } });
        expect(await store.renewLease(sid, token, 400)).toBe(true);
        await sleep(PAST_SHORT);
        expect(await receive(sid, {})).toMatchObject({ deliver: [] });
        expect(await commit(sid, token, 1)).toMatchObject({ status: 'ok', clientAck: 1 });
      });

      it('answers false for a wrong token, an unknown session, and a lease taken over', async () => {
        const sid = await open();
        const token = newToken();
        await receive(sid, { msgs: ms(1), lease: { token, ms: SHORT } });
        expect(await store.renewLease(sid, newToken(), LONG)).toBe(false);
        expect(await store.renewLease(newSessionId(), token, LONG)).toBe(false);
        await sleep(PAST_SHORT);
        await receive(sid, {});
        expect(await store.renewLease(sid, token, LONG)).toBe(false);
      });
    });

    // --- append / appendMany ---------------------------------------------------------

    describe('append', () => {
      it('assigns contiguous seqs after the initial messages', async () => {
        const sid = await open({ initial: ['0'] });
        expect(await store.append(sid, ['1', '2'], ROOMY)).toEqual({ status: 'ok', firstSeq: 2, lastSeq: 3 });
        expect(await store.append(sid, ['3'], ROOMY)).toEqual({ status: 'ok', firstSeq: 4, lastSeq: 4 });
        const r = await read(sid);
        expect(r.status === 'ok' && r.msgs).toEqual([
          { seq: 1, json: '0' },
          { seq: 2, json: '1' },
          { seq: 3, json: '2' },
          { seq: 4, json: '3' },
        ]);
        expect(await info(sid)).toMatchObject({ lastSeq: 4 });
      });

      it('is atomic under concurrency: 200 concurrent appends get seqs 1..200, no gaps, no repeats', async () => {
        const sid = await open();
        const results = await Promise.all(Array.from({ length: 200 }, (_, i) => store.append(sid, [String(i)], ROOMY)));
        const seqs = results.map((r) => {
          if (r.status !== 'ok') throw new Error(r.status);
          expect(r.firstSeq).toBe(r.lastSeq);
          return r.firstSeq;
        });
        expect([...seqs].sort((a, b) => a - b)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
        // And each seq holds the message that was given it.
        const r = await read(sid);
        if (r.status !== 'ok') throw new Error();
        const bySeq = new Map(r.msgs.map((x) => [x.seq, x.json]));
        results.forEach((res, i) => expect(bySeq.get((res as { firstSeq: number }).firstSeq)).toBe(String(i)));
      });

      it('keeps multi-message appends contiguous under concurrency', async () => {
        const sid = await open();
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => store.append(sid, [`${i}.0`, `${i}.1`, `${i}.2`], ROOMY)));
        const ranges = results.map((r) => (r.status === 'ok' ? [r.firstSeq, r.lastSeq] : [0, 0])).sort((a, b) => a[0]! - b[0]!);
        ranges.forEach(([first, last], i) => expect([first, last]).toEqual([i * 3 + 1, i * 3 + 3]));
      });

      it('answers full by unacked count, atomically for the whole batch, and has room again after an ack', async () => {
        const sid = await open({ initial: ['1'] });
        const limits = { maxUnackedMessages: 3, maxUnackedBytes: 1 << 20 };
        expect(await store.append(sid, ['2', '3', '4'], limits)).toEqual({ status: 'full' });
        expect(await info(sid)).toMatchObject({ lastSeq: 1 });
        expect(await store.append(sid, ['2', '3'], limits)).toMatchObject({ status: 'ok', lastSeq: 3 });
        expect(await store.append(sid, ['4'], limits)).toEqual({ status: 'full' });
        await read(sid, { ack: 1 });
        expect(await store.append(sid, ['4'], limits)).toEqual({ status: 'ok', firstSeq: 4, lastSeq: 4 });
      });

      it('answers full by unacked bytes', async () => {
        const sid = await open();
        const limits = { maxUnackedMessages: 100, maxUnackedBytes: 25 };
        const ten = JSON.stringify('x'.repeat(8));
        expect(await store.append(sid, [ten, ten], limits)).toMatchObject({ status: 'ok', lastSeq: 2 });
        expect(await store.append(sid, [ten], limits)).toEqual({ status: 'full' });
        expect(await store.append(sid, ['"abc"'], limits)).toMatchObject({ status: 'ok', lastSeq: 3 });
        await receive(sid, { ack: 2 });
        expect(await store.append(sid, [ten], limits)).toMatchObject({ status: 'ok', lastSeq: 4 });
      });

      it('counts bytes as UTF-8', async () => {
        const sid = await open();
        // "é" is 2 bytes, "€" 3, "😀" 4: 2 + 2 + 3 + 4 = 11 bytes of JSON.
        const json = JSON.stringify('é€😀');
        expect(await store.append(sid, [json], { maxUnackedMessages: 10, maxUnackedBytes: 10 })).toEqual({ status: 'full' });
        expect(await store.append(sid, [json], { maxUnackedMessages: 10, maxUnackedBytes: 11 })).toMatchObject({ status: 'ok' });
      });

      it('answers unknown and closed (also while closing)', async () => {
        expect(await store.append(newSessionId(), ['1'], ROOMY)).toEqual({ status: 'unknown' });
        const sid = await open();
        const token = newToken();
        await store.close(sid, { reason: 'r', lease: { token, ms: LONG } });
        expect(await store.append(sid, ['1'], ROOMY)).toEqual({ status: 'closed' });
        await store.finishClose(sid, token);
        expect(await store.append(sid, ['1'], ROOMY)).toEqual({ status: 'closed' });
      });
    });

    describe('appendMany', () => {
      it('appends one message to each session and answers per session, in order', async () => {
        const a = await open({ initial: ['1'] });
        const b = await open();
        const closed = await open();
        await closeFully(closed);
        const full = await open({ initial: ['1', '2'] });
        const unknown = newSessionId();
        const limits = { maxUnackedMessages: 2, maxUnackedBytes: 1 << 20 };
        const results = await store.appendMany([a, unknown, b, closed, full], '"hi"', limits);
        expect(results).toEqual([
          { status: 'ok', firstSeq: 2, lastSeq: 2 },
          { status: 'unknown' },
          { status: 'ok', firstSeq: 1, lastSeq: 1 },
          { status: 'closed' },
          { status: 'full' },
        ]);
        const r = await read(b);
        expect(r.status === 'ok' && r.msgs).toEqual([{ seq: 1, json: '"hi"' }]);
        expect(await info(full)).toMatchObject({ lastSeq: 2 });
      });

      it('answers an empty list for no sessions', async () => {
        expect(await store.appendMany([], '1', ROOMY)).toEqual([]);
      });
    });

    // --- repeats ---------------------------------------------------------------------
    // A store client may run a command twice: ioredis resends, after a reconnect, every
    // command whose reply it lost, although Redis had run it. Each operation core uses on
    // the hot path must then answer as the first run did and change nothing more.

    describe('repeats (a command run again after its reply was lost)', () => {
      async function logOf(sid: string): Promise<StoredMessage[]> {
        const r = await read(sid);
        if (r.status !== 'ok') throw new Error(r.status);
        return r.msgs;
      }

      it('create with the same token answers ok again and changes nothing; another token, or none, answers exists', async () => {
        const token = newToken();
        const sid = await open({ token, initial: ['"hello"'] });
        expect(await store.create({ sid, token, userJson: '{"other":1}', stateJson: '{"n":9}', initial: ['"again"'], idleMs: LONG, maxSessions: 1e9 })).toEqual({ status: 'ok' });
        expect(await info(sid)).toMatchObject({ status: 'open', userJson: '{"name":"ada"}', stateJson: '{"n":0}', lastSeq: 1 });
        expect(seqsOf(await logOf(sid))).toEqual([1]);
        const again = { sid, userJson: 'null', stateJson: '{}', initial: [], idleMs: LONG, maxSessions: 1e9 };
        expect(await store.create({ ...again, token: newToken() })).toEqual({ status: 'exists' });
        expect(await store.create(again)).toEqual({ status: 'exists' });
      });

      it('append with the same id stores nothing and answers the first seqs, also once the session is full or closed', async () => {
        const sid = await open({ initial: ['"0"'] });
        const { events, unsubscribe } = await listen(sid);
        expect(await store.append(sid, ['"a"', '"b"'], ROOMY, 'id-1')).toEqual({ status: 'ok', firstSeq: 2, lastSeq: 3 });
        await eventually(() => events.some((e) => e.type === 'message'));
        events.length = 0;
        expect(await store.append(sid, ['"a"', '"b"'], ROOMY, 'id-1')).toEqual({ status: 'ok', firstSeq: 2, lastSeq: 3 });
        expect(await store.append(sid, ['"c"'], ROOMY, 'id-2')).toEqual({ status: 'ok', firstSeq: 4, lastSeq: 4 });
        expect(await store.append(sid, ['"a"', '"b"'], ROOMY, 'id-1')).toEqual({ status: 'ok', firstSeq: 2, lastSeq: 3 });
        // Full now, but the repeat still answers what the first run did.
        expect(await store.append(sid, ['"c"'], { maxUnackedMessages: 1, maxUnackedBytes: 1 << 20 }, 'id-2')).toEqual({ status: 'ok', firstSeq: 4, lastSeq: 4 });
        expect(await logOf(sid)).toEqual([
          { seq: 1, json: '"0"' },
          { seq: 2, json: '"a"' },
          { seq: 3, json: '"b"' },
          { seq: 4, json: '"c"' },
        ]);
        expect(await info(sid)).toMatchObject({ lastSeq: 4 });
        await closeFully(sid);
        expect(await store.append(sid, ['"c"'], ROOMY, 'id-2')).toEqual({ status: 'ok', firstSeq: 4, lastSeq: 4 });
        expect(await store.append(sid, ['"d"'], ROOMY, 'id-3')).toEqual({ status: 'closed' });
        unsubscribe();
      });

      it('append tells ids apart exactly: no prefix match, and "-" or "_" are plain characters', async () => {
        const sid = await open();
        const ids = ['ab', 'a-b', 'a', 'a1', 'a_b', 'b', 'A', '-', '--', '_', 'x-', 'x'];
        for (const [i, id] of ids.entries()) {
          expect(await store.append(sid, [String(i)], ROOMY, id)).toEqual({ status: 'ok', firstSeq: i + 1, lastSeq: i + 1 });
        }
        for (const [i, id] of ids.entries()) {
          expect(await store.append(sid, ['"again"'], ROOMY, id)).toEqual({ status: 'ok', firstSeq: i + 1, lastSeq: i + 1 });
        }
        expect(await info(sid)).toMatchObject({ lastSeq: ids.length });
      });

      it(`append remembers (at least) the session's last ${APPEND_IDS_REMEMBERED} ids, per session`, async () => {
        const sid = await open();
        const other = await open();
        expect(await store.append(other, ['"x"'], ROOMY, 'first')).toMatchObject({ status: 'ok', firstSeq: 1 });
        // Another session's ids are its own.
        expect(await store.append(sid, ['"x"'], ROOMY, 'first')).toEqual({ status: 'ok', firstSeq: 1, lastSeq: 1 });
        for (let i = 2; i <= APPEND_IDS_REMEMBERED; i++) await store.append(sid, [String(i)], ROOMY, `id${i}`);
        // 'first' is the oldest of the last APPEND_IDS_REMEMBERED: still recognised, as is every later one.
        expect(await store.append(sid, ['"x"'], ROOMY, 'first')).toEqual({ status: 'ok', firstSeq: 1, lastSeq: 1 });
        for (let i = 2; i <= APPEND_IDS_REMEMBERED; i++) {
          expect(await store.append(sid, ['"again"'], ROOMY, `id${i}`)).toEqual({ status: 'ok', firstSeq: i, lastSeq: i });
        }
        // Long after, an id is forgotten (when exactly is the store's choice): then it is a new append.
        for (let i = 0; i < 200; i++) await store.append(sid, ['"push"'], ROOMY, `later${i}`);
        expect(await store.append(sid, ['"x"'], ROOMY, 'first')).toEqual({ status: 'ok', firstSeq: APPEND_IDS_REMEMBERED + 201, lastSeq: APPEND_IDS_REMEMBERED + 201 });
        expect(await store.append(sid, ['"x"'], ROOMY, 'later199')).toEqual({ status: 'ok', firstSeq: APPEND_IDS_REMEMBERED + 200, lastSeq: APPEND_IDS_REMEMBERED + 200 });
      });

      it('appendMany with the same id stores nothing more in any session and answers as the first run', async () => {
        const a = await open({ initial: ['1'] });
        const b = await open();
        const first = await store.appendMany([a, b], '"hi"', ROOMY, 'fan-1');
        expect(first).toEqual([
          { status: 'ok', firstSeq: 2, lastSeq: 2 },
          { status: 'ok', firstSeq: 1, lastSeq: 1 },
        ]);
        await store.append(b, ['"own"'], ROOMY, 'b-1');
        expect(await store.appendMany([a, b], '"hi"', ROOMY, 'fan-1')).toEqual(first);
        expect(await info(a)).toMatchObject({ lastSeq: 2 });
        expect(await info(b)).toMatchObject({ lastSeq: 2 });
      });

      it('receive with the same lease token hands out the same run again; another token gets nothing', async () => {
        const sid = await open();
        const token = newToken();
        const input = { msgs: ms(1, 2), lease: { token, ms: LONG } };
        const first = await receive(sid, input);
        expect(first).toMatchObject({ status: 'ok', clientAck: 0, deliver: ms(1, 2) });
        expect(await receive(sid, input)).toEqual(first);
        expect(await receive(sid, { msgs: ms(1, 2) })).toEqual({ status: 'ok', clientAck: 0, deliver: [] });
        expect(await drain(sid, token, ms(1, 2))).toEqual([1, 2]);
        expect(await info(sid)).toMatchObject({ clientAck: 2 });
      });

      it('close with the same lease token answers leased again (not transitioned); another token is not leased', async () => {
        const sid = await open();
        const token = newToken();
        const first = await store.close(sid, { reason: 'bye', lease: { token, ms: LONG } });
        expect(first).toMatchObject({ status: 'ok', transitioned: true, leased: true, reason: 'bye' });
        expect(await store.close(sid, { reason: 'other', lease: { token, ms: LONG } })).toMatchObject({ status: 'ok', transitioned: false, leased: true, reason: 'bye' });
        expect(await store.close(sid, { reason: 'other', lease: { token: newToken(), ms: LONG } })).toMatchObject({ transitioned: false, leased: false });
        await store.finishClose(sid, token);
        expect(await info(sid)).toMatchObject({ status: 'closed' });
        // A repeat after finishClose finds nothing to lease: onClose already ran.
        expect(await store.close(sid, { reason: 'other', lease: { token, ms: LONG } })).toMatchObject({ status: 'ok', leased: false });
      });

      it('commit repeated answers as the first run did and moves nothing', async () => {
        const sid = await open();
        const token = newToken();
        await receive(sid, { msgs: ms(1, 2), lease: { token, ms: LONG } });
        const first = await commit(sid, token, 1, { next: false, stateJson: '{"n":1}' });
        expect(await commit(sid, token, 1, { next: false, stateJson: '{"n":1}' })).toEqual(first);
        expect(await info(sid)).toMatchObject({ clientAck: 1, stateJson: '{"n":1}' });
      });
    });

    // --- read ------------------------------------------------------------------------

    describe('read', () => {
      it('answers unknown for a sid that never existed', async () => {
        expect(await read(newSessionId())).toEqual({ status: 'unknown' });
      });

      it('trims by ack and returns what follows, with the client ack', async () => {
        const sid = await open({ initial: ['1', '2', '3'] });
        const token = newToken();
        await receive(sid, { msgs: ms(1), lease: { token, ms: LONG } });
        await commit(sid, token, 1);
        expect(await read(sid, { ack: 2 })).toEqual({ status: 'ok', msgs: [{ seq: 3, json: '3' }], clientAck: 1, superseded: false });
        // Trimmed for good: a lower ack does not bring them back.
        const r = await read(sid, { ack: 0 });
        expect(r.status === 'ok' && seqsOf(r.msgs)).toEqual([3]);
        expect(await read(sid, { ack: 3 })).toMatchObject({ status: 'ok', msgs: [] });
      });

      it('caps the messages returned at maxMessages, oldest first', async () => {
        const sid = await open({ initial: ['1', '2', '3', '4', '5'] });
        const r = await read(sid, { maxMessages: 2 });
        expect(r.status === 'ok' && seqsOf(r.msgs)).toEqual([1, 2]);
        const r2 = await read(sid, { ack: 2, maxMessages: 2 });
        expect(r2.status === 'ok' && seqsOf(r2.msgs)).toEqual([3, 4]);
      });

      it('stops adding messages once their bytes (UTF-8) reach maxBytes, so at least one comes', async () => {
        // 10-byte messages, one of 11 bytes in UTF-8 (é takes 2), and one bigger than the budget.
        const ten = (c: string) => JSON.stringify(c.repeat(8));
        const sid = await open({ initial: [ten('a'), ten('b'), JSON.stringify('é'.repeat(1) + 'c'.repeat(7)), ten('d'), JSON.stringify('x'.repeat(40)), ten('e')] });
        const r = await read(sid, { maxBytes: 20 });
        expect(r.status === 'ok' && seqsOf(r.msgs)).toEqual([1, 2]);
        const r1 = await read(sid, { maxBytes: 21 });
        expect(r1.status === 'ok' && seqsOf(r1.msgs)).toEqual([1, 2, 3]); // the message that passes it comes
        // 11 bytes reach 11: the fourth message waits for the next read.
        const r2 = await read(sid, { ack: 2, maxBytes: 11 });
        expect(r2.status === 'ok' && seqsOf(r2.msgs)).toEqual([3]);
        const r3 = await read(sid, { ack: 2, maxBytes: 12 });
        expect(r3.status === 'ok' && seqsOf(r3.msgs)).toEqual([3, 4]);
        // A message above the budget still comes, alone.
        const r4 = await read(sid, { ack: 4, maxBytes: 20 });
        expect(r4.status === 'ok' && r4.msgs).toEqual([{ seq: 5, json: JSON.stringify('x'.repeat(40)) }]);
        // With a stream's `after` too, and with maxMessages the tighter bound.
        const again = await open({ initial: [ten('a'), ten('b'), ten('c'), ten('d'), JSON.stringify('x'.repeat(40)), ten('e')] });
        const watcher = newToken();
        await read(again, { watchToken: watcher });
        const r5 = await read(again, { watchToken: watcher, claim: false, after: 3, maxBytes: 1_000, maxMessages: 2 });
        expect(r5.status === 'ok' && seqsOf(r5.msgs)).toEqual([4, 5]);
        const r6 = await read(again, { watchToken: watcher, claim: false, after: 3, maxBytes: 11 });
        expect(r6.status === 'ok' && seqsOf(r6.msgs)).toEqual([4, 5]);
        const r6b = await read(again, { watchToken: watcher, claim: false, after: 3, maxBytes: 10 });
        expect(r6b.status === 'ok' && seqsOf(r6b.msgs)).toEqual([4]);
        // A long log in a small budget (the store reads it in slices).
        const many = await open({ initial: Array.from({ length: 100 }, (_, i) => JSON.stringify(i.toString().padStart(8, '0'))) });
        const r7 = await read(many, { maxBytes: 355 });
        expect(r7.status === 'ok' && seqsOf(r7.msgs)).toEqual(Array.from({ length: 36 }, (_, i) => i + 1));
      });

      it('rejects an ack above the last seq, trimming nothing', async () => {
        const sid = await open({ initial: ['1', '2'] });
        expect(await read(sid, { ack: 3 })).toEqual({ status: 'invalid-ack', lastSeq: 2 });
        const r = await read(sid);
        expect(r.status === 'ok' && seqsOf(r.msgs)).toEqual([1, 2]);
      });

      it('a newer claim supersedes an older watch', async () => {
        const sid = await open({ initial: ['1'] });
        const older = newToken();
        const newer = newToken();
        expect(await read(sid, { watchToken: older, claim: true })).toMatchObject({ superseded: false, msgs: [{ seq: 1 }] });
        expect(await read(sid, { watchToken: older, claim: false })).toMatchObject({ superseded: false, msgs: [{ seq: 1 }] });
        expect(await read(sid, { watchToken: newer, claim: true })).toMatchObject({ superseded: false, msgs: [{ seq: 1 }] });
        expect(await read(sid, { watchToken: older, claim: false })).toEqual({ status: 'ok', msgs: [], clientAck: 0, superseded: true });
        expect(await read(sid, { watchToken: newer, claim: false })).toMatchObject({ superseded: false, msgs: [{ seq: 1 }] });
      });

      it('a superseded watch still trims by its ack (acks are cumulative)', async () => {
        const sid = await open({ initial: ['1', '2'] });
        const older = newToken();
        await read(sid, { watchToken: older });
        await read(sid, { watchToken: newToken() });
        expect(await read(sid, { watchToken: older, claim: false, ack: 1 })).toMatchObject({ superseded: true });
        const r = await read(sid);
        expect(r.status === 'ok' && seqsOf(r.msgs)).toEqual([2]);
      });

      it('after close returns the messages sent before it and the close marker at lastSeq + 1', async () => {
        const sid = await open({ initial: ['1'] });
        await store.append(sid, ['2'], ROOMY);
        await store.close(sid, { reason: 'bye now' });
        const r = await read(sid);
        expect(r).toEqual({
          status: 'ok',
          msgs: [
            { seq: 1, json: '1' },
            { seq: 2, json: '2' },
          ],
          clientAck: 0,
          superseded: false,
          close: { seq: 3, reason: 'bye now' },
        });
        // The marker stays as the log is acked.
        expect(await read(sid, { ack: 2 })).toMatchObject({ msgs: [], close: { seq: 3, reason: 'bye now' } });
      });

      it('reports the close marker for a session closed with nothing sent at seq 1', async () => {
        const sid = await open();
        await store.close(sid, { reason: 'client' });
        expect(await read(sid)).toMatchObject({ status: 'ok', msgs: [], close: { seq: 1, reason: 'client' } });
      });
    });

    // --- close / finishClose -------------------------------------------------------------

    describe('close', () => {
      it('answers unknown for a sid that never existed', async () => {
        expect(await store.close(newSessionId(), { reason: 'x', lease: { token: newToken(), ms: LONG } })).toEqual({ status: 'unknown' });
      });

      it('transitions once, takes the free lease, keeps the first reason', async () => {
        const sid = await open({ userJson: '{"u":1}', stateJson: '{"s":1}' });
        const t1 = newToken();
        expect(await store.close(sid, { reason: 'first', lease: { token: t1, ms: LONG } })).toEqual({
          status: 'ok',
          transitioned: true,
          leased: true,
          reason: 'first',
          userJson: '{"u":1}',
          stateJson: '{"s":1}',
        });
        expect((await info(sid))?.status).toBe('closing');
        // A second close: no transition, the lease is held, the reason stays.
        expect(await store.close(sid, { reason: 'second', lease: { token: newToken(), ms: LONG } })).toMatchObject({
          status: 'ok',
          transitioned: false,
          leased: false,
          reason: 'first',
        });
        await store.finishClose(sid, t1);
        // After finishClose: still ok (idempotent for the client), nothing to do.
        expect(await store.close(sid, { reason: 'third', lease: { token: newToken(), ms: LONG } })).toMatchObject({
          status: 'ok',
          transitioned: false,
          leased: false,
          reason: 'first',
        });
      });

      it('without a lease request transitions but leases nothing', async () => {
        const sid = await open();
        expect(await store.close(sid, { reason: 'r' })).toMatchObject({ status: 'ok', transitioned: true, leased: false });
        // Someone else can take the lease to run onClose.
        expect(await store.close(sid, { reason: 'r2', lease: { token: newToken(), ms: LONG } })).toMatchObject({
          transitioned: false,
          leased: true,
          reason: 'r',
        });
      });

      it('does not take a lease held by a delivery; the holder learns of it at commit', async () => {
        const sid = await open();
        const holder = newToken();
        await receive(sid, { msgs: ms(1), lease: { token: holder, ms: LONG } });
        expect(await store.close(sid, { reason: 'k', lease: { token: newToken(), ms: LONG } })).toMatchObject({
          transitioned: true,
          leased: false,
        });
        expect(await commit(sid, holder, 1)).toMatchObject({ status: 'closing', clientAck: 1, reason: 'k' });
      });

      it('takes over the lease of a closer whose lease expired (onClose crashed)', async () => {
        const sid = await open();
        const crashed = newToken();
        expect(await store.close(sid, { reason: 'r', lease: { token: crashed, ms: SHORT } })).toMatchObject({ leased: true });
        await sleep(PAST_SHORT);
        const next = newToken();
        expect(await store.close(sid, { reason: 'other', lease: { token: next, ms: LONG } })).toMatchObject({
          transitioned: false,
          leased: true,
          reason: 'r',
        });
        await store.finishClose(sid, crashed);
        expect((await info(sid))?.status).toBe('closing');
        await store.finishClose(sid, next);
        expect((await info(sid))?.status).toBe('closed');
      });

      it('discards client messages buffered behind a gap', async () => {
        const sid = await open();
        await receive(sid, { msgs: ms(2, 3) });
        await store.close(sid, { reason: 'r' });
        expect(await info(sid)).toMatchObject({ status: 'closing', clientAck: 0 });
      });

      it('concurrent closes: exactly one transitions and exactly one gets the lease', async () => {
        const sid = await open();
        const results = await Promise.all(
          ['a', 'b', 'c', 'd'].map((reason) => store.close(sid, { reason, lease: { token: newToken(), ms: LONG } })),
        );
        const oks = results.map((r) => (r.status === 'ok' ? r : null));
        expect(oks.filter((r) => r?.transitioned)).toHaveLength(1);
        expect(oks.filter((r) => r?.leased)).toHaveLength(1);
        const reason = oks.find((r) => r?.transitioned)!.reason;
        expect(oks.every((r) => r?.reason === reason)).toBe(true);
      });
    });

    describe('finishClose', () => {
      it('does nothing with a wrong token or on an open session', async () => {
        const sid = await open();
        await store.finishClose(sid, newToken());
        expect((await info(sid))?.status).toBe('open');
        const token = newToken();
        await store.close(sid, { reason: 'r', lease: { token, ms: LONG } });
        await store.finishClose(sid, newToken());
        expect((await info(sid))?.status).toBe('closing');
        await store.finishClose(newSessionId(), token); // unknown: no error
      });

      it('closes the session; the tombstone answers closed and keeps the close marker until it expires, then unknown', async () => {
        const idleMs = 120;
        const sid = await open({ idleMs, initial: ['1'] });
        const token = newToken();
        await store.close(sid, { reason: 'done', lease: { token, ms: LONG } });
        await store.finishClose(sid, token);
        expect(await info(sid)).toMatchObject({ status: 'closed', lastSeq: 1 });
        expect(await receive(sid, { msgs: ms(1) })).toEqual({ status: 'closed' });
        expect(await store.append(sid, ['2'], ROOMY)).toEqual({ status: 'closed' });
        expect(await store.join(sid, uniqueGroup())).toBe(false);
        expect(await store.renewLease(sid, token, LONG)).toBe(false);
        expect(await read(sid)).toMatchObject({ status: 'ok', msgs: [{ seq: 1, json: '1' }], close: { seq: 2, reason: 'done' } });
        // Tombstones are kept for the session's idle timeout.
        await sleep(idleMs + 60);
        expect(await read(sid)).toEqual({ status: 'unknown' });
        expect(await receive(sid, { msgs: ms(1) })).toEqual({ status: 'unknown' });
        expect(await store.close(sid, { reason: 'x' })).toEqual({ status: 'unknown' });
        expect(await store.inspect([sid])).toEqual([null]);
      });

      it('the tombstone keeps no user or state, and its log only until the client acks up to the close marker; then a read answers the marker alone', async () => {
        const sid = await open({ userJson: '{"big":"' + 'u'.repeat(1000) + '"}', stateJson: '{"s":1}', initial: ['"a"', '"b"'] });
        expect(await store.append(sid, ['"c"'], ROOMY, 'tomb-id')).toEqual({ status: 'ok', firstSeq: 3, lastSeq: 3 });
        await closeFully(sid, 'server-bye');
        expect(await info(sid)).toEqual({ status: 'closed', userJson: 'null', stateJson: 'null', clientAck: 0, lastSeq: 3 });
        // A resent append still answers its seqs while the log waits for the client.
        expect(await store.append(sid, ['"c"'], ROOMY, 'tomb-id')).toEqual({ status: 'ok', firstSeq: 3, lastSeq: 3 });
        const closeMarker = { seq: 4, reason: 'server-bye' };
        expect(await read(sid, { ack: 1 })).toEqual({ status: 'ok', msgs: [{ seq: 2, json: '"b"' }, { seq: 3, json: '"c"' }], clientAck: 0, superseded: false, close: closeMarker });
        // Never superseded: a tombstone takes no claim.
        expect(await read(sid, { ack: 1, claim: false })).toMatchObject({ msgs: [{ seq: 2, json: '"b"' }, { seq: 3, json: '"c"' }], superseded: false });
        // The ack that reaches the marker drops the log: later reads, whatever their ack, get the marker alone.
        expect(await read(sid, { ack: 3 })).toEqual({ status: 'ok', msgs: [], clientAck: 0, superseded: false, close: closeMarker });
        expect(await read(sid, { ack: 0 })).toEqual({ status: 'ok', msgs: [], clientAck: 0, superseded: false, close: closeMarker });
        expect(await read(sid, { ack: 4 })).toEqual({ status: 'invalid-ack', lastSeq: 3 });
        // ... and the append ids: a resend now answers closed.
        expect(await store.append(sid, ['"c"'], ROOMY, 'tomb-id')).toEqual({ status: 'closed' });
        expect(await store.close(sid, { reason: 'again' })).toMatchObject({ status: 'ok', transitioned: false, leased: false, reason: 'server-bye' });
        expect(await receive(sid, { msgs: ms(1) })).toEqual({ status: 'closed' });
      });

      it('a session its client closed (reason CLIENT_CLOSE_REASON) keeps no log in its tombstone: that client reads no more', async () => {
        const sid = await open({ initial: ['"a"', '"b"'] });
        await closeFully(sid, CLIENT_CLOSE_REASON);
        expect(await read(sid)).toEqual({ status: 'ok', msgs: [], clientAck: 0, superseded: false, close: { seq: 3, reason: CLIENT_CLOSE_REASON } });
        expect(await info(sid)).toMatchObject({ status: 'closed', lastSeq: 2 });
      });

      it('holds at most maxSessions tombstones after a create: the oldest go first (unknown from then on)', async () => {
        const s = await fresh();
        const closeOn = async (sid: string) => {
          const token = newToken();
          await s.close(sid, { reason: 'bye', lease: { token, ms: LONG } });
          await s.finishClose(sid, token);
        };
        const sids: string[] = [];
        for (let i = 0; i < 5; i++) {
          const sid = await open({ maxSessions: 2, initial: ['"x"'] }, s);
          await closeOn(sid);
          sids.push(sid);
          // "Oldest" is by expiry time in ms: two closes in the same ms may go in either order.
          await sleep(2);
        }
        // Each create trimmed the tombstones to 2 before it; the last two closes came after.
        expect((await s.inspect(sids)).map((x) => x?.status ?? null)).toEqual([null, null, 'closed', 'closed', 'closed']);
        const live = await open({ maxSessions: 2 }, s);
        expect((await s.inspect([...sids, live])).map((x) => x?.status ?? null)).toEqual([null, null, null, 'closed', 'closed', 'open']);
        expect(await read(sids[2]!, {}, s)).toEqual({ status: 'unknown' });
        expect(await s.append(sids[2]!, ['1'], ROOMY)).toEqual({ status: 'unknown' });
        expect(await read(sids[4]!, {}, s)).toMatchObject({ status: 'ok', msgs: [{ seq: 1, json: '"x"' }], close: { seq: 2, reason: 'bye' } });
      });

      it('removes the session from its groups', async () => {
        const g1 = uniqueGroup();
        const g2 = uniqueGroup();
        const sid = await open();
        const other = await open();
        expect(await store.join(sid, g1)).toBe(true);
        expect(await store.join(sid, g2)).toBe(true);
        expect(await store.join(other, g1)).toBe(true);
        const token = newToken();
        await store.close(sid, { reason: 'r', lease: { token, ms: LONG } });
        // Still a member while closing (onClose may publish to its rooms).
        expect(await store.members(g1)).toEqual(expect.arrayContaining([sid, other]));
        await store.finishClose(sid, token);
        expect(await store.members(g1)).toEqual([other]);
        expect(await store.members(g2)).toEqual([]);
      });
    });

    // --- sweep ---------------------------------------------------------------------------

    describe('sweep', () => {
      it('closes idle sessions as expired and returns each leased to the sweeper, once', async () => {
        const s = await fresh();
        const idle = await open({ idleMs: SHORT, userJson: '{"u":1}', stateJson: '{"s":1}' }, s);
        const active = await open({ idleMs: 400 }, s);
        const events = await listen(idle, s);
        await sleep(PAST_SHORT);
        const token = newToken();
        const r = await s.sweep({ lease: { token, ms: LONG }, limit: 100 });
        expect(r).toEqual({ status: 'ok', closing: [{ sid: idle, reason: 'expired', userJson: '{"u":1}', stateJson: '{"s":1}' }] });
        expect((await info(idle, s))?.status).toBe('closing');
        expect((await info(active, s))?.status).toBe('open');
        await eventually(() => events.events.some((e) => e.type === 'close'));
        events.unsubscribe();
        // Its lease is the sweeper's: a repeat sweep does not return it again, close cannot lease it.
        expect(await s.sweep({ lease: { token, ms: LONG }, limit: 100 })).toEqual({ status: 'ok', closing: [] });
        expect(await s.close(idle, { reason: 'x', lease: { token: newToken(), ms: LONG } })).toMatchObject({ leased: false, reason: 'expired' });
        expect(await read(idle, {}, s)).toMatchObject({ close: { seq: 1, reason: 'expired' } });
        await s.finishClose(idle, token);
        expect((await info(idle, s))?.status).toBe('closed');
      });

      it('a request keeps a session alive', async () => {
        const s = await fresh();
        const sid = await open({ idleMs: 150 }, s);
        await sleep(90);
        await read(sid, {}, s);
        await sleep(90);
        expect(await s.sweep({ lease: { token: newToken(), ms: LONG }, limit: 100 })).toEqual({ status: 'ok', closing: [] });
      });

      it('lets one sweeper at a time run: a racing sweeper with another token gets busy or nothing', async () => {
        const s = await fresh();
        const sids = [await open({ idleMs: SHORT }, s), await open({ idleMs: SHORT }, s), await open({ idleMs: SHORT }, s)];
        await sleep(PAST_SHORT);
        const [a, b] = await Promise.all([
          s.sweep({ lease: { token: newToken(), ms: LONG }, limit: 100 }),
          s.sweep({ lease: { token: newToken(), ms: LONG }, limit: 100 }),
        ]);
        const returned = [a, b].flatMap((r) => (r.status === 'ok' ? r.closing.map((c) => c.sid) : []));
        expect(returned.sort()).toEqual([...sids].sort());
        expect([a, b].some((r) => r.status === 'busy' || r.closing.length === 0)).toBe(true);
        // While the sweep lease is held, other sweepers are busy.
        expect(await s.sweep({ lease: { token: newToken(), ms: LONG }, limit: 100 })).toEqual({ status: 'busy' });
      });

      it('ms 0 hands the sweep lease back: another token sweeps at once; another token cannot hand it back', async () => {
        const s = await fresh();
        const holder = newToken();
        expect(await s.sweep({ lease: { token: holder, ms: LONG }, limit: 100 })).toEqual({ status: 'ok', closing: [] });
        expect(await s.sweep({ lease: { token: newToken(), ms: 0 }, limit: 0 })).toEqual({ status: 'busy' });
        expect(await s.sweep({ lease: { token: newToken(), ms: LONG }, limit: 100 })).toEqual({ status: 'busy' });
        expect(await s.sweep({ lease: { token: holder, ms: 0 }, limit: 0 })).toEqual({ status: 'ok', closing: [] });
        const sid = await open({ idleMs: SHORT }, s);
        await sleep(PAST_SHORT);
        const next = await s.sweep({ lease: { token: newToken(), ms: LONG }, limit: 100 });
        expect(next).toEqual({ status: 'ok', closing: [expect.objectContaining({ sid, reason: 'expired' })] });
      });

      it('after the sweep lease expires another sweeper runs and picks up closes left unfinished', async () => {
        const s = await fresh();
        const sid = await open({ idleMs: SHORT }, s);
        await sleep(PAST_SHORT);
        const crashed = newToken();
        const r = await s.sweep({ lease: { token: crashed, ms: SHORT }, limit: 100 });
        expect(r.status === 'ok' && r.closing.map((c) => c.sid)).toEqual([sid]);
        expect(await s.sweep({ lease: { token: newToken(), ms: LONG }, limit: 100 })).toEqual({ status: 'busy' });
        await sleep(PAST_SHORT);
        const next = newToken();
        const r2 = await s.sweep({ lease: { token: next, ms: LONG }, limit: 100 });
        expect(r2).toEqual({ status: 'ok', closing: [expect.objectContaining({ sid, reason: 'expired' })] });
        await s.finishClose(sid, crashed);
        expect((await info(sid, s))?.status).toBe('closing');
        await s.finishClose(sid, next);
        expect((await info(sid, s))?.status).toBe('closed');
      });

      it('picks up sessions stuck in closing: never leased, or whose closer lease expired', async () => {
        const s = await fresh();
        const unleased = await open({}, s);
        await s.close(unleased, { reason: 'no lease' });
        const crashed = await open({}, s);
        expect(await s.close(crashed, { reason: 'crashed', lease: { token: newToken(), ms: SHORT } })).toMatchObject({ leased: true });
        const held = await open({}, s);
        const heldToken = newToken();
        await s.close(held, { reason: 'held', lease: { token: heldToken, ms: LONG } });
        await sleep(PAST_SHORT);
        const token = newToken();
        const r = await s.sweep({ lease: { token, ms: LONG }, limit: 100 });
        if (r.status !== 'ok') throw new Error('busy');
        expect(r.closing.map((c) => [c.sid, c.reason]).sort()).toEqual(
          [
            [unleased, 'no lease'],
            [crashed, 'crashed'],
          ].sort(),
        );
        await s.finishClose(unleased, token);
        await s.finishClose(crashed, token);
        await s.finishClose(held, heldToken);
        expect((await s.inspect([unleased, crashed, held])).map((x) => x?.status)).toEqual(['closed', 'closed', 'closed']);
      });

      it('closes an idle session whose delivery lease is held without leasing it; the holder gets closing at commit', async () => {
        const s = await fresh();
        const sid = await open({ idleMs: SHORT }, s);
        const holder = newToken();
        await receive(sid, { msgs: ms(1), lease: { token: holder, ms: LONG } }, s);
        await sleep(PAST_SHORT);
        expect(await s.sweep({ lease: { token: newToken(), ms: LONG }, limit: 100 })).toEqual({ status: 'ok', closing: [] });
        expect((await info(sid, s))?.status).toBe('closing');
        expect(await s.commit(sid, { token: holder, seq: 1, leaseMs: LONG, next: true, maxDeliver: 10 })).toMatchObject({
          status: 'closing',
          reason: 'expired',
          clientAck: 1,
        });
      });

      it('returns at most limit sessions per call; the next call returns the rest', async () => {
        const s = await fresh();
        const sids = [];
        for (let i = 0; i < 5; i++) sids.push(await open({ idleMs: SHORT }, s));
        await sleep(PAST_SHORT);
        const token = newToken();
        const r1 = await s.sweep({ lease: { token, ms: LONG }, limit: 2 });
        const r2 = await s.sweep({ lease: { token, ms: LONG }, limit: 2 });
        const r3 = await s.sweep({ lease: { token, ms: LONG }, limit: 2 });
        const r4 = await s.sweep({ lease: { token, ms: LONG }, limit: 2 });
        const counts = [r1, r2, r3, r4].map((r) => (r.status === 'ok' ? r.closing.length : -1));
        expect(counts).toEqual([2, 2, 1, 0]);
        const all = [r1, r2, r3].flatMap((r) => (r.status === 'ok' ? r.closing.map((c) => c.sid) : []));
        expect(all.sort()).toEqual([...sids].sort());
      });

      it('ignores closed sessions', async () => {
        const s = await fresh();
        const sid = await open({ idleMs: SHORT }, s);
        const token = newToken();
        await s.close(sid, { reason: 'r', lease: { token, ms: LONG } });
        await s.finishClose(sid, token);
        await sleep(PAST_SHORT);
        expect(await s.sweep({ lease: { token: newToken(), ms: LONG }, limit: 100 })).toEqual({ status: 'ok', closing: [] });
      });
    });

    // --- subscribe ------------------------------------------------------------------------

    describe('subscribe', () => {
      it('emits message on append, asynchronously and after the change is visible', async () => {
        const sid = await open();
        const seen: number[] = [];
        const events: StoreEvent[] = [];
        const unsubscribe = await store.subscribe(sid, (e) => {
          events.push(e);
          if (e.type === 'message') void store.inspect([sid]).then(([i]) => seen.push(i!.lastSeq));
        });
        const p = store.append(sid, ['1'], ROOMY);
        expect(events).toEqual([]); // never synchronously, inside the call
        await p;
        await eventually(() => seen.length > 0);
        expect(kinds(events)).toEqual([{ type: 'message' }]);
        expect(seen[0]).toBeGreaterThanOrEqual(1);
        unsubscribe();
      });

      it("a message event's messages, when the store attaches them, are the stored ones at their seqs, with the client ack", async () => {
        const sid = await open({ initial: ['"i"'] });
        const { events, unsubscribe } = await listen(sid);
        expect(await store.append(sid, ['"a"', '{"b":[1,2]}'], ROOMY)).toMatchObject({ status: 'ok', firstSeq: 2, lastSeq: 3 });
        const token = newToken();
        await receive(sid, { msgs: ms(1), lease: { token, ms: LONG } });
        expect(await commit(sid, token, 1, { next: false, sends: { msgs: ['"r"'], limits: ROOMY } })).toMatchObject({ sent: { stored: 1, firstSeq: 4 } });
        // Valid JSON with a raw newline and a large message: a store may send such ones without their text.
        expect(await store.append(sid, ['[1,\n2]', JSON.stringify('x'.repeat(40_000))], ROOMY)).toMatchObject({ firstSeq: 5, lastSeq: 6 });
        await store.appendMany([sid], '"m"', ROOMY);
        await eventually(() => events.filter((e) => e.type === 'message').length >= 4);
        const r = await read(sid, { maxMessages: 100, maxBytes: 1 << 20 });
        if (r.status !== 'ok') throw new Error(r.status);
        const stored = new Map(r.msgs.map((m) => [m.seq, m.json]));
        const acks: number[] = [];
        for (const e of events) {
          if (e.type !== 'message' || !e.run) continue;
          e.run.msgs.forEach((m, i) => {
            expect([m.seq, m.json]).toEqual([e.run!.msgs[0]!.seq + i, stored.get(m.seq)]);
            if (m.bytes !== undefined) expect(m.bytes).toBe(new TextEncoder().encode(m.json).length);
          });
          acks.push(e.run.clientAck);
        }
        // Before the commit the client ack was 0; the commit's own event carries its seq.
        for (const [i, ack] of acks.entries()) if (i > 0) expect(ack).toBeGreaterThanOrEqual(acks[i - 1]!);
        const commitRun = events.find((e) => e.type === 'message' && e.run?.msgs[0]?.seq === 4);
        if (commitRun?.type === 'message') expect(commitRun.run!.clientAck).toBe(1);
        unsubscribe();
      });

      it('emits message on appendMany, per session', async () => {
        const a = await open();
        const b = await open();
        const la = await listen(a);
        const lb = await listen(b);
        await store.appendMany([a, b], '1', ROOMY);
        await eventually(() => la.events.length > 0 && lb.events.length > 0);
        expect(kinds(la.events)).toEqual([{ type: 'message' }]);
        expect(kinds(lb.events)).toEqual([{ type: 'message' }]);
        la.unsubscribe();
        lb.unsubscribe();
      });

      it('emits close on close, once', async () => {
        const sid = await open();
        const l = await listen(sid);
        await store.close(sid, { reason: 'r' });
        await store.close(sid, { reason: 'again' });
        await eventually(() => l.events.length > 0);
        await sleep(30);
        expect(l.events).toEqual([{ type: 'close' }]);
        l.unsubscribe();
      });

      it('emits watch with the token on a claim, nothing for a read without claim', async () => {
        const sid = await open();
        const l = await listen(sid);
        const w = newToken();
        await read(sid, { watchToken: w, claim: true });
        await eventually(() => l.events.length > 0);
        await read(sid, { watchToken: w, claim: false });
        await sleep(30);
        expect(l.events).toEqual([{ type: 'watch', token: w }]);
        l.unsubscribe();
      });

      it('after an append found the log full, emits ack at the next read or receive that trims (and never for a trim of nothing)', async () => {
        const sid = await open({ initial: ['1', '2'] });
        const tight = { maxUnackedMessages: 2, maxUnackedBytes: 1 << 20 };
        const w = newToken();
        await read(sid, { watchToken: w });
        const l = await listen(sid);
        await read(sid, { watchToken: w, claim: false, ack: 0 });
        await receive(sid, { ack: 0 });
        await sleep(30);
        expect(l.events).toEqual([]);
        // A sender finds no room: the trim that makes room wakes it.
        expect(await store.append(sid, ['3'], tight)).toEqual({ status: 'full' });
        await read(sid, { watchToken: w, claim: false, ack: 1 });
        await eventually(() => l.events.length === 1);
        expect(l.events).toEqual([{ type: 'ack' }]);
        await receive(sid, { ack: 1 });
        await sleep(30);
        expect(l.events).toHaveLength(1);
        expect(await store.append(sid, ['3', '4'], tight)).toEqual({ status: 'full' });
        await receive(sid, { ack: 2 });
        await eventually(() => l.events.length === 2);
        expect(l.events).toEqual([{ type: 'ack' }, { type: 'ack' }]);
        l.unsubscribe();
      });

      it('delivers only the subscribed session events', async () => {
        const a = await open();
        const b = await open();
        const l = await listen(a);
        await store.append(b, ['1'], ROOMY);
        await store.close(b, { reason: 'r' });
        await sleep(30);
        expect(l.events).toEqual([]);
        l.unsubscribe();
      });

      it('stops after unsubscribe, and other listeners of the session keep theirs', async () => {
        const sid = await open();
        const first = await listen(sid);
        const second = await listen(sid);
        first.unsubscribe();
        await store.append(sid, ['1'], ROOMY);
        await eventually(() => second.events.length > 0);
        await sleep(20);
        expect(first.events).toEqual([]);
        second.unsubscribe();
        await store.append(sid, ['2'], ROOMY);
        await sleep(30);
        expect(kinds(second.events)).toEqual([{ type: 'message' }]);
        first.unsubscribe(); // twice: harmless
      });
    });

    // --- inspect --------------------------------------------------------------------------

    describe('inspect', () => {
      it('answers each sid in order, null for unknown ones', async () => {
        const a = await open({ userJson: '"a"', stateJson: '{"a":1}', initial: ['1'] });
        const b = await open({ userJson: '"b"' });
        const t = newToken();
        await receive(b, { msgs: ms(1), lease: { token: t, ms: LONG } });
        await commit(b, t, 1);
        await store.close(b, { reason: 'r' });
        const unknown = newSessionId();
        expect(await store.inspect([a, unknown, b])).toEqual([
          { status: 'open', userJson: '"a"', stateJson: '{"a":1}', clientAck: 0, lastSeq: 1 },
          null,
          { status: 'closing', userJson: '"b"', stateJson: '{"n":0}', clientAck: 1, lastSeq: 0 },
        ]);
        expect(await store.inspect([])).toEqual([]);
      });

      it('changes nothing (it does not count as activity)', async () => {
        const s = await fresh();
        const sid = await open({ idleMs: SHORT }, s);
        await sleep(30);
        await s.inspect([sid]);
        await sleep(40);
        const r = await s.sweep({ lease: { token: newToken(), ms: LONG }, limit: 10 });
        expect(r.status === 'ok' && r.closing.map((c) => c.sid)).toEqual([sid]);
      });
    });

    // --- the sessions index: count and list ----------------------------------------------

    describe('count / list', () => {
      /** Every page of a listing, from the start; `between` runs after each page but the last. */
      async function listAll(on: Store, limit: number, between?: () => Promise<void>): Promise<string[][]> {
        const pages: string[][] = [];
        let cursor: string | undefined;
        for (let i = 0; i < 1_000; i++) {
          const r = await on.list({ ...(cursor !== undefined ? { cursor } : {}), limit });
          pages.push(r.sids);
          if (r.cursor === null) return pages;
          expect(typeof r.cursor).toBe('string');
          for (const sid of r.sids) expect(r.cursor).not.toContain(sid); // a cursor may go in a URL: no session id
          cursor = r.cursor;
          await between?.();
        }
        throw new Error('the listing never ended');
      }

      it('count: sessions not closed yet (open and closing), not tombstones', async () => {
        const s = await fresh();
        expect(await s.count()).toBe(0);
        const a = await open({}, s);
        await open({}, s);
        expect(await s.count()).toBe(2);
        const token = newToken();
        await s.close(a, { reason: 'bye', lease: { token, ms: LONG } });
        expect(await s.count()).toBe(2); // closing still counts
        await s.finishClose(a, token);
        expect(await s.count()).toBe(1);
      });

      it('list: every open and closing session, none closed, however the pages fall', async () => {
        const s = await fresh();
        expect(await listAll(s, 10)).toEqual([[]]);
        const sids: string[] = [];
        for (let i = 0; i < 6; i++) sids.push(await open({}, s));
        await s.close(sids[0]!, { reason: 'closing' });
        await closeFully(sids[1]!, 'server', s);
        const want = sids.filter((sid) => sid !== sids[1]).sort();
        for (const limit of [1, 2, 5, 100]) {
          const pages = await listAll(s, limit);
          expect([...new Set(pages.flat())].sort()).toEqual(want);
        }
      });

      it('list: a large index comes in pages of about `limit`', async () => {
        const s = await fresh();
        const sids = new Set<string>();
        await Promise.all(Array.from({ length: 300 }, async () => sids.add(await open({}, s))));
        expect(await s.count()).toBe(300);
        const pages = await listAll(s, 50);
        expect(pages.length).toBeGreaterThan(2);
        for (const page of pages) expect(page.length).toBeLessThanOrEqual(100);
        expect(new Set(pages.flat())).toEqual(sids);
      });

      it('list: a session in the index for the whole listing comes at least once while others open and close', async () => {
        const s = await fresh();
        const kept = new Set<string>();
        await Promise.all(Array.from({ length: 200 }, async () => kept.add(await open({}, s))));
        const pages = await listAll(s, 20, async () => {
          // Churn between pages: new sessions, and some of them closed again.
          const fresh = await Promise.all(Array.from({ length: 10 }, () => open({}, s)));
          for (const sid of fresh.slice(0, 5)) await closeFully(sid, 'server', s);
        });
        const listed = new Set(pages.flat());
        for (const sid of kept) expect(listed.has(sid)).toBe(true);
      });

      it('list: a malformed cursor throws BAD_REQUEST', async () => {
        await expect(store.list({ cursor: 'not a cursor', limit: 10 })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
      });
    });

    // --- groups ---------------------------------------------------------------------------

    describe('join / leave / members', () => {
      it('joins, lists and leaves; joining twice lists once', async () => {
        const g = uniqueGroup();
        const a = await open();
        const b = await open();
        expect(await store.members(g)).toEqual([]);
        expect(await store.join(a, g)).toBe(true);
        expect(await store.join(a, g)).toBe(true);
        expect(await store.join(b, g)).toBe(true);
        expect((await store.members(g)).sort()).toEqual([a, b].sort());
        await store.leave(a, g);
        expect(await store.members(g)).toEqual([b]);
        await store.leave(a, g); // not a member: no-op
        await store.leave(newSessionId(), g);
        await store.leave(b, g);
        expect(await store.members(g)).toEqual([]);
      });

      it('keeps groups apart', async () => {
        const g1 = uniqueGroup();
        const g2 = uniqueGroup();
        const a = await open();
        await store.join(a, g1);
        expect(await store.members(g2)).toEqual([]);
        await store.leave(a, g2);
        expect(await store.members(g1)).toEqual([a]);
      });

      it('refuses unknown, closing and closed sessions', async () => {
        const g = uniqueGroup();
        expect(await store.join(newSessionId(), g)).toBe(false);
        const sid = await open();
        const token = newToken();
        await store.close(sid, { reason: 'r', lease: { token, ms: LONG } });
        expect(await store.join(sid, g)).toBe(false);
        await store.finishClose(sid, token);
        expect(await store.join(sid, g)).toBe(false);
        expect(await store.members(g)).toEqual([]);
      });
    });

    // --- groups: publish, pull ----------------------------------------------------------

    describe('groups: publish and pull', () => {
      /** The JSON texts a read returns, acking everything (the client's next watch). */
      async function drainReads(sid: string, from = 0): Promise<{ seqs: number[]; jsons: string[]; ack: number }> {
        const r = await read(sid, { ack: from });
        if (r.status !== 'ok') throw new Error(r.status);
        const ack = r.msgs.length > 0 ? r.msgs[r.msgs.length - 1]!.seq : from;
        return { seqs: seqsOf(r.msgs), jsons: r.msgs.map((x) => x.json), ack };
      }

      /** A new session that joined two new groups. */
      async function memberOfTwo(): Promise<{ sid: string; g1: string; g2: string }> {
        const g1 = uniqueGroup();
        const g2 = uniqueGroup();
        const sid = await open();
        await store.join(sid, g1);
        await store.join(sid, g2);
        return { sid, g1, g2 };
      }

      it('writes once and each member reads it at its next seq; publishing to an empty group writes nothing', async () => {
        const g = uniqueGroup();
        expect(await store.publish(g, '"nobody"', KEEP)).toEqual({ status: 'ok', members: 0, gseq: 0 });
        const a = await open({ initial: ['"hello"'] });
        const b = await open();
        await store.join(a, g);
        await store.join(b, g);
        expect(await store.publish(g, '"p1"', KEEP)).toEqual({ status: 'ok', members: 2, gseq: 1 });
        expect(await store.publish(g, '"p2"', KEEP)).toEqual({ status: 'ok', members: 2, gseq: 2 });
        expect(await read(a)).toMatchObject({ msgs: [{ seq: 1, json: '"hello"' }, { seq: 2, json: '"p1"' }, { seq: 3, json: '"p2"' }] });
        expect(await read(b)).toMatchObject({ msgs: [{ seq: 1, json: '"p1"' }, { seq: 2, json: '"p2"' }] });
        expect(await info(b)).toMatchObject({ lastSeq: 2 });
      });

      it('pulls each entry exactly once: repeated and concurrent reads, acked or not', async () => {
        const g = uniqueGroup();
        const sid = await open();
        await store.join(sid, g);
        for (let i = 1; i <= 5; i++) await store.publish(g, `"p${i}"`, KEEP);
        const reads = await Promise.all([read(sid), read(sid), read(sid, { claim: false }), read(sid)]);
        for (const r of reads) expect(r).toMatchObject({ status: 'ok' });
        expect(await info(sid)).toMatchObject({ lastSeq: 5 });
        const r = await read(sid, { ack: 2 });
        expect(r).toMatchObject({ msgs: [{ seq: 3, json: '"p3"' }, { seq: 4, json: '"p4"' }, { seq: 5, json: '"p5"' }] });
        expect(await read(sid, { ack: 5 })).toMatchObject({ msgs: [] });
        expect(await info(sid)).toMatchObject({ lastSeq: 5 });
      });

      it('delivers what is published after the join, nothing from before; joining again keeps the cursor', async () => {
        const g = uniqueGroup();
        const early = await open();
        await store.join(early, g);
        await store.publish(g, '"before"', KEEP);
        const late = await open();
        expect(await store.join(late, g)).toBe(true);
        await store.publish(g, '"after"', KEEP);
        expect(await store.join(late, g)).toBe(true); // a member already: nothing is re-delivered or skipped
        await store.publish(g, '"again"', KEEP);
        expect((await drainReads(late)).jsons).toEqual(['"after"', '"again"']);
        expect((await drainReads(early)).jsons).toEqual(['"before"', '"after"', '"again"']);
      });

      it('leave stops delivery at once, also of entries not pulled yet; a new join starts at the new end', async () => {
        const g = uniqueGroup();
        const sid = await open();
        const other = await open();
        await store.join(sid, g);
        await store.join(other, g);
        await store.publish(g, '"pulled"', KEEP);
        expect((await drainReads(sid)).jsons).toEqual(['"pulled"']);
        await store.publish(g, '"not pulled"', KEEP);
        await store.leave(sid, g);
        await store.publish(g, '"after leave"', KEEP);
        expect((await drainReads(sid, 1)).jsons).toEqual([]);
        await store.join(sid, g);
        await store.publish(g, '"back"', KEEP);
        expect((await drainReads(sid, 1)).jsons).toEqual(['"back"']);
      });

      it('keeps sends and publishes in the order they happened: a publish that resolved before a send comes before it', async () => {
        const g = uniqueGroup();
        const sid = await open();
        await store.join(sid, g);
        await store.append(sid, ['"s1"'], ROOMY, newToken());
        await store.publish(g, '"p1"', KEEP);
        await store.publish(g, '"p2"', KEEP);
        await store.append(sid, ['"s2"'], ROOMY, newToken());
        await store.publish(g, '"p3"', KEEP);
        expect(await store.append(sid, ['"s3"', '"s4"'], ROOMY)).toEqual({ status: 'ok', firstSeq: 6, lastSeq: 7 });
        const r = await drainReads(sid);
        expect(r.seqs).toEqual([1, 2, 3, 4, 5, 6, 7]);
        expect(r.jsons).toEqual(['"s1"', '"p1"', '"p2"', '"s2"', '"p3"', '"s3"', '"s4"']);
      });

      it('appendMany (a broadcast) also puts a member\'s earlier publishes first, per session', async () => {
        const g = uniqueGroup();
        const a = await open();
        const b = await open();
        const loner = await open();
        await store.join(a, g);
        await store.join(b, g);
        await store.publish(g, '"p1"', KEEP);
        expect(await store.appendMany([a, loner, b], '"all"', ROOMY, newToken())).toEqual([
          { status: 'ok', firstSeq: 2, lastSeq: 2 },
          { status: 'ok', firstSeq: 1, lastSeq: 1 },
          { status: 'ok', firstSeq: 2, lastSeq: 2 },
        ]);
        for (const sid of [a, b]) expect((await drainReads(sid)).jsons).toEqual(['"p1"', '"all"']);
        expect((await drainReads(loner)).jsons).toEqual(['"all"']);
      });

      it('keeps each group\'s order for a member of several groups, with contiguous seqs', async () => {
        const { sid, g1, g2 } = await memberOfTwo();
        for (let i = 1; i <= 4; i++) {
          await store.publish(g1, `"a${i}"`, KEEP);
          await store.publish(g2, `"b${i}"`, KEEP);
        }
        const r = await drainReads(sid);
        expect(r.seqs).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
        expect(r.jsons.filter((j) => j.startsWith('"a'))).toEqual(['"a1"', '"a2"', '"a3"', '"a4"']);
        expect(r.jsons.filter((j) => j.startsWith('"b'))).toEqual(['"b1"', '"b2"', '"b3"', '"b4"']);
      });

      it('a read pulls only what fits the unacked bounds; the rest waits in the group log until acks make room', async () => {
        const g = uniqueGroup();
        const sid = await open({ initial: ['"i1"'] });
        await store.join(sid, g);
        for (let i = 1; i <= 5; i++) await store.publish(g, `"p${i}"`, KEEP);
        const limits = { maxUnackedMessages: 3, maxUnackedBytes: 1 << 20 };
        expect(await read(sid, { limits })).toMatchObject({ msgs: [{ seq: 1 }, { seq: 2, json: '"p1"' }, { seq: 3, json: '"p2"' }] });
        expect(await read(sid, { limits })).toMatchObject({ msgs: [{ seq: 1 }, { seq: 2 }, { seq: 3 }] });
        expect(await read(sid, { ack: 3, limits })).toMatchObject({ msgs: [{ seq: 4, json: '"p3"' }, { seq: 5, json: '"p4"' }, { seq: 6, json: '"p5"' }] });
        // By bytes: each "pN" is 4 bytes.
        for (let i = 6; i <= 8; i++) await store.publish(g, `"p${i}"`, KEEP);
        expect(await read(sid, { ack: 6, limits: { maxUnackedMessages: 100, maxUnackedBytes: 9 } })).toMatchObject({ msgs: [{ seq: 7 }, { seq: 8 }] });
        expect(await read(sid, { ack: 8, limits: { maxUnackedMessages: 100, maxUnackedBytes: 9 } })).toMatchObject({ msgs: [{ seq: 9, json: '"p8"' }] });
      });

      it('a member of two groups pulls runs of each in publish order, stopping inside a run at the bound and going on from there', async () => {
        const { sid, g1: ga, g2: gb } = await memberOfTwo();
        for (const [g, m] of [[ga, 'a1'], [ga, 'a2'], [gb, 'b1'], [gb, 'b2'], [gb, 'b3'], [ga, 'a3']] as const) await store.publish(g, `"${m}"`, KEEP);
        const limits = { maxUnackedMessages: 4, maxUnackedBytes: 1 << 20 };
        const first = await read(sid, { limits });
        expect(first).toMatchObject({ msgs: [{ seq: 1, json: '"a1"' }, { seq: 2, json: '"a2"' }, { seq: 3, json: '"b1"' }, { seq: 4, json: '"b2"' }] });
        expect(await read(sid, { ack: 4, limits })).toMatchObject({ msgs: [{ seq: 5, json: '"b3"' }, { seq: 6, json: '"a3"' }] });
        expect(await read(sid, { ack: 6, limits })).toMatchObject({ msgs: [] });
      });

      it('append answers full, changing nothing, when the pending group entries and its messages do not all fit', async () => {
        const g = uniqueGroup();
        const sid = await open();
        await store.join(sid, g);
        await store.publish(g, '"p1"', KEEP);
        await store.publish(g, '"p2"', KEEP);
        const tight = { maxUnackedMessages: 2, maxUnackedBytes: 1 << 20 };
        expect(await store.append(sid, ['"s"'], tight, newToken())).toEqual({ status: 'full' });
        expect(await info(sid)).toMatchObject({ lastSeq: 0 });
        expect(await store.append(sid, ['"s"'], { maxUnackedMessages: 3, maxUnackedBytes: 1 << 20 })).toEqual({ status: 'ok', firstSeq: 3, lastSeq: 3 });
        expect((await drainReads(sid)).jsons).toEqual(['"p1"', '"p2"', '"s"']);
      });

      it('closes a member that fell behind the retained log (by count) with reason group-overrun, after what it already had', async () => {
        const g = uniqueGroup();
        const keep2: GroupRetention = { maxEntries: 2, maxAgeMs: LONG };
        const slow = await open({ initial: ['"hello"'] });
        const fast = await open();
        await store.join(slow, g);
        await store.join(fast, g);
        const events = await listen(slow);
        for (let i = 1; i <= 3; i++) {
          await store.publish(g, `"p${i}"`, keep2);
          await read(fast, { ack: i - 1 });
        }
        expect((await drainReads(fast, 2)).jsons).toEqual(['"p3"']);
        const r = await read(slow);
        expect(r).toMatchObject({ status: 'ok', msgs: [{ seq: 1, json: '"hello"' }], close: { seq: 2, reason: GROUP_OVERRUN_REASON } });
        expect(await info(slow)).toMatchObject({ status: 'closing', lastSeq: 1 });
        await eventually(() => events.events.some((e) => e.type === 'close'));
        events.unsubscribe();
        // onClose runs as for any close: the sweep (or a close with a lease) picks it up.
        const token = newToken();
        expect(await store.close(slow, { reason: 'other', lease: { token, ms: LONG } })).toMatchObject({ leased: true, reason: GROUP_OVERRUN_REASON });
      });

      it('closes a member that fell behind by age, also when it sends first', async () => {
        const g = uniqueGroup();
        const young: GroupRetention = { maxEntries: 1_000, maxAgeMs: SHORT };
        const sid = await open();
        await store.join(sid, g);
        await store.publish(g, '"old"', young);
        await sleep(PAST_SHORT);
        await store.publish(g, '"new"', young); // trims "old", which sid never pulled
        expect(await store.append(sid, ['"s"'], ROOMY, newToken())).toEqual({ status: 'closed' });
        expect(await read(sid)).toMatchObject({ msgs: [], close: { seq: 1, reason: GROUP_OVERRUN_REASON } });
      });

      it('a member that keeps up is never overrun by trims', async () => {
        const g = uniqueGroup();
        const keep2: GroupRetention = { maxEntries: 2, maxAgeMs: LONG };
        const sid = await open();
        await store.join(sid, g);
        let ack = 0;
        const got: string[] = [];
        for (let i = 1; i <= 6; i++) {
          await store.publish(g, `"p${i}"`, keep2);
          if (i % 2 === 0) {
            const r = await drainReads(sid, ack);
            got.push(...r.jsons);
            ack = r.ack;
          }
        }
        expect(got).toEqual(['"p1"', '"p2"', '"p3"', '"p4"', '"p5"', '"p6"']);
        expect(await info(sid)).toMatchObject({ status: 'open' });
      });

      it('close pulls the pending entries first, whatever the unacked bounds: a publish before the close comes before its marker', async () => {
        const g = uniqueGroup();
        const sid = await open();
        await store.join(sid, g);
        await store.append(sid, ['"s1"'], ROOMY);
        await store.publish(g, '"p1"', KEEP);
        await store.publish(g, '"p2"', KEEP);
        expect(await store.close(sid, { reason: 'bye' })).toMatchObject({ status: 'ok', transitioned: true, reason: 'bye' });
        expect(await read(sid, { limits: { maxUnackedMessages: 1, maxUnackedBytes: 1 } })).toMatchObject({
          msgs: [{ seq: 1, json: '"s1"' }, { seq: 2, json: '"p1"' }, { seq: 3, json: '"p2"' }],
          close: { seq: 4, reason: 'bye' },
        });
      });

      it('a close that finds the member overrun closes with reason group-overrun (the first reason)', async () => {
        const g = uniqueGroup();
        const sid = await open();
        await store.join(sid, g);
        for (let i = 1; i <= 3; i++) await store.publish(g, `"p${i}"`, { maxEntries: 1, maxAgeMs: LONG });
        expect(await store.close(sid, { reason: 'bye' })).toMatchObject({ status: 'ok', transitioned: true, reason: GROUP_OVERRUN_REASON });
        expect(await read(sid)).toMatchObject({ msgs: [], close: { seq: 1, reason: GROUP_OVERRUN_REASON } });
      });

      it('a group left empty drops its log; members joining later start from a new log', async () => {
        const g = uniqueGroup();
        const a = await open();
        await store.join(a, g);
        expect(await store.publish(g, '"p1"', KEEP)).toMatchObject({ gseq: 1 });
        await store.leave(a, g);
        expect(await store.publish(g, '"nobody"', KEEP)).toEqual({ status: 'ok', members: 0, gseq: 0 });
        const b = await open();
        await store.join(b, g);
        await store.join(a, g);
        expect(await store.publish(g, '"p2"', KEEP)).toEqual({ status: 'ok', members: 2, gseq: 1 });
        expect((await drainReads(b)).jsons).toEqual(['"p2"']);
        expect((await drainReads(a)).jsons).toEqual(['"p2"']);
      });

      it('closing and closed members pull nothing more', async () => {
        const g = uniqueGroup();
        const sid = await open();
        await store.join(sid, g);
        const token = newToken();
        await store.close(sid, { reason: 'bye', lease: { token, ms: LONG } });
        await store.publish(g, '"while closing"', KEEP);
        expect(await read(sid)).toMatchObject({ msgs: [], close: { seq: 1, reason: 'bye' } });
        await store.finishClose(sid, token);
        await store.publish(g, '"closed"', KEEP);
        expect(await read(sid)).toMatchObject({ msgs: [], close: { seq: 1, reason: 'bye' } });
      });

      it('publish with the same id writes once and answers as the first run', async () => {
        const g = uniqueGroup();
        const sid = await open();
        await store.join(sid, g);
        const first = await store.publish(g, '"once"', KEEP, 'pub-1');
        expect(await store.publish(g, '"once"', KEEP, 'pub-1')).toEqual(first);
        await store.publish(g, '"two"', KEEP, 'pub-2');
        expect(await store.publish(g, '"once"', KEEP, 'pub-1')).toEqual(first);
        expect((await drainReads(sid)).jsons).toEqual(['"once"', '"two"']);
      });

      it('wakes a member\'s listener on publish once a read saw its membership, and on join', async () => {
        const g = uniqueGroup();
        const sid = await open();
        const { events, unsubscribe } = await listen(sid);
        await store.join(sid, g);
        await eventually(() => events.some((e) => e.type === 'message'));
        await read(sid);
        events.length = 0;
        await store.publish(g, '"wake"', KEEP);
        await eventually(() => events.some((e) => e.type === 'message'));
        unsubscribe();
      });
    });

    // --- properties -----------------------------------------------------------------------

    describe('properties', () => {
      it('client → server: duplicated, reordered batches in flight at once on several instances deliver 1..N once, in order, stranding nothing', async () => {
        await fc.assert(
          fc.asyncProperty(
            fc.integer({ min: 1, max: 24 }).chain((n) =>
              fc.record({
                n: fc.constant(n),
                // Each batch is one POST: a random subset of 1..n, duplicates and any order allowed.
                batches: fc.array(
                  fc.record({
                    seqs: fc.array(fc.integer({ min: 1, max: n }), { maxLength: 8 }),
                    // Macrotask turns before the request reaches its instance.
                    delay: fc.integer({ min: 0, max: 6 }),
                  }),
                  { maxLength: 16 },
                ),
                maxDeliver: fc.integer({ min: 1, max: 5 }),
                // Macrotask turns each handler takes, cycled through.
                handlerPauses: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 8 }),
              }),
            ),
            async ({ n, batches, maxDeliver, handlerPauses }) => {
              const sid = await open();
              const delivered: StoredMessage[] = [];
              const turns = async (k: number) => {
                for (let i = 0; i < k; i++) await new Promise<void>((resolve) => setImmediate(resolve));
              };
              let pauseIndex = 0;

              /** One POST as any instance serves it: receive, then deliver and commit under the lease. */
              const request = async (seqs: number[], delay: number) => {
                await turns(delay);
                const unique = [...new Set(seqs)].sort((a, b) => a - b);
                const token = newToken();
                const r = await receive(sid, { msgs: ms(...unique), window: n, maxDeliver, lease: { token, ms: LONG } });
                if (r.status !== 'ok') throw new Error(`receive: ${r.status}`);
                let batch = r.deliver;
                while (batch.length > 0) {
                  let next: StoredMessage[] = [];
                  for (let i = 0; i < batch.length; i++) {
                    await turns(handlerPauses[pauseIndex++ % handlerPauses.length]!);
                    delivered.push(batch[i]!);
                    const last = i === batch.length - 1;
                    const c = await store.commit(sid, { token, seq: batch[i]!.seq, leaseMs: LONG, next: last, maxDeliver });
                    if (c.status !== 'ok') throw new Error(`commit: ${c.status}`);
                    if (last) next = c.deliver;
                  }
                  batch = next;
                }
              };

              // Every POST in flight at once; each lands on its own (simulated) instance.
              await Promise.all(batches.map((b) => request(b.seqs, b.delay)));

              // Once every request has returned, nothing deliverable is stranded in the buffer:
              // the delivered prefix is the longest contiguous prefix of everything sent.
              const sent = new Set(batches.flatMap((b) => b.seqs));
              let prefix = 0;
              while (sent.has(prefix + 1)) prefix++;
              expect(seqsOf(delivered)).toEqual(Array.from({ length: prefix }, (_, i) => i + 1));

              // The client resends everything still unacked.
              await request(Array.from({ length: n }, (_, i) => i + 1), 0);

              expect(delivered).toEqual(ms(...Array.from({ length: n }, (_, i) => i + 1)));
              expect(await info(sid)).toMatchObject({ clientAck: n });
            },
          ),
          { numRuns: 100 },
        );
      });

      it('groups: concurrent sends, publishes to two groups and reads give each member every message once, contiguous, in causal order', async () => {
        type Op = { kind: 'send-a' | 'send-b' | 'pub-1' | 'pub-2' | 'read-a' | 'read-b'; delay: number };
        await fc.assert(
          fc.asyncProperty(
            fc.array(
              fc.record({
                kind: fc.constantFrom<Op['kind']>('send-a', 'send-b', 'pub-1', 'pub-2', 'read-a', 'read-b'),
                delay: fc.integer({ min: 0, max: 4 }),
              }),
              { minLength: 1, maxLength: 24 },
            ),
            async (ops) => {
              const g1 = uniqueGroup();
              const g2 = uniqueGroup();
              const a = await open();
              const b = await open();
              await store.join(a, g1);
              await store.join(a, g2);
              await store.join(b, g1);
              const acks = new Map([[a, 0], [b, 0]]);
              const seen = new Map<string, StoredMessage[]>([[a, []], [b, []]]);
              // A logical clock: when each op started and ended.
              let clock = 0;
              const spans = new Map<string, { start: number; end: number }>();
              const turns = async (k: number) => {
                for (let i = 0; i < k; i++) await new Promise<void>((resolve) => setImmediate(resolve));
              };
              const readAll = async (sid: string) => {
                const r = await read(sid, { ack: acks.get(sid)! });
                if (r.status !== 'ok') throw new Error(r.status);
                const list = seen.get(sid)!;
                for (const msg of r.msgs) {
                  const last = list.length > 0 ? list[list.length - 1]!.seq : 0;
                  if (msg.seq === last + 1) list.push(msg);
                }
                if (list.length > 0) acks.set(sid, list[list.length - 1]!.seq);
              };
              await Promise.all(
                ops.map(async (op, i) => {
                  await turns(op.delay);
                  const json = JSON.stringify(`${op.kind}#${i}`);
                  const start = ++clock;
                  if (op.kind === 'send-a' || op.kind === 'send-b') {
                    const r = await store.append(op.kind === 'send-a' ? a : b, [json], ROOMY, newToken());
                    if (r.status !== 'ok') throw new Error(r.status);
                  } else if (op.kind === 'pub-1' || op.kind === 'pub-2') {
                    await store.publish(op.kind === 'pub-1' ? g1 : g2, json, KEEP, newToken());
                  } else {
                    await readAll(op.kind === 'read-a' ? a : b);
                  }
                  spans.set(json, { start, end: ++clock });
                }),
              );
              await readAll(a);
              await readAll(b);
              const expected = (sid: string) =>
                ops.map((op, i) => ({ op, json: JSON.stringify(`${op.kind}#${i}`) })).filter(({ op }) =>
                  sid === a ? ['send-a', 'pub-1', 'pub-2'].includes(op.kind) : ['send-b', 'pub-1'].includes(op.kind),
                );
              for (const sid of [a, b]) {
                const got = seen.get(sid)!;
                // Contiguous from 1, every message once.
                expect(seqsOf(got)).toEqual(got.map((_, i) => i + 1));
                expect(got.map((x) => x.json).sort()).toEqual(expected(sid).map((x) => x.json).sort());
                // Causal: whatever resolved before another started comes first (between two groups a store
                // need only follow its clock, which may tie or, across Cluster shards, skew: not checked).
                const pos = new Map(got.map((x, i) => [x.json, i]));
                const groupOf = (json: string) => (json.startsWith('"pub-') ? json.slice(1, 6) : 'send');
                for (const x of got) {
                  for (const y of got) {
                    const crossGroup = groupOf(x.json) !== groupOf(y.json) && groupOf(x.json) !== 'send' && groupOf(y.json) !== 'send';
                    if (!crossGroup && spans.get(x.json)!.end < spans.get(y.json)!.start) expect([x.json, pos.get(x.json)! < pos.get(y.json)!]).toEqual([x.json, true]);
                  }
                }
              }
            },
          ),
          { numRuns: 60 },
        );
      });

      it('server → client: concurrent senders and acking watches see 1..N in order, each once', async () => {
        await fc.assert(
          fc.asyncProperty(
            fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 12 }),
            fc.integer({ min: 1, max: 4 }),
            async (sizes, maxMessages) => {
              const sid = await open();
              const total = sizes.reduce((a, b) => a + b, 0);
              const got: number[] = [];
              let ack = 0;
              const watcher = newToken();
              const sending = Promise.all(sizes.map((k, i) => store.append(sid, Array.from({ length: k }, (_, j) => `"${i}.${j}"`), ROOMY)));
              while (ack < total) {
                const r = await read(sid, { ack, watchToken: watcher, claim: ack === 0, maxMessages });
                if (r.status !== 'ok') throw new Error(r.status);
                for (const msg of r.msgs) {
                  if (msg.seq === ack + 1) {
                    got.push(msg.seq);
                    ack = msg.seq;
                  }
                }
                if (r.msgs.length === 0) await new Promise<void>((resolve) => setImmediate(resolve));
              }
              await sending;
              expect(got).toEqual(Array.from({ length: total }, (_, i) => i + 1));
              expect(await read(sid, { ack, watchToken: watcher, claim: false })).toMatchObject({ msgs: [] });
            },
          ),
          { numRuns: 40 },
        );
      });
    });
  });
}
