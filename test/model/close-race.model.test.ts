/**
 * Model test of invariant 6 (SPEC.md) against the real core: a client
 * close (DELETE, possibly duplicated or with its response lost), server
 * closes from any instance (`hub.close`, and `session.close()` inside a
 * handler), and idle expiry (the clock jumps past the idle timeout, then a
 * sweep) race each other and in-flight sends, pushes and watches, their store
 * operations interleaved by a fast-check scheduler.
 *
 * Checked, per session:
 * - `onClose` runs exactly once, never alongside a message handler, and no
 *   message handler starts after it;
 * - the reason it gets is the one the close marker carries;
 * - every server message whose `send()` succeeded comes before the close
 *   marker (`close.seq` is one above the last of them), every `send()` after
 *   the close fails, and a client watching afterwards gets all of them in
 *   order, then the close;
 * - afterwards sends answer 410, DELETE answers 200 (idempotent), and the
 *   session is a closed tombstone.
 */
import fc from 'fast-check';
import { BidiError, BidiServer, MemoryStore } from '../../src/core';
import { assertProperty, bidiRequest, faultArb, gatedStore, network, trackIntervals, yieldTo, type Fault, type Gates } from './harness';

jest.setTimeout(120_000);

const RUNS = Number(process.env.MODEL_RUNS ?? 1200);
const IDLE = 120_000;
// Leases never run out in this model (nobody crashes); only the idle clock moves.
const LEASE = 3_000_000_000;

type Race =
  | { kind: 'clientClose'; session: number; fault: Fault; instance: number }
  | { kind: 'serverClose'; session: number; instance: number }
  | { kind: 'expire' }
  | { kind: 'send'; session: number; count: number; fault: Fault; instance: number }
  | { kind: 'push'; session: number; count: number; instance: number }
  | { kind: 'watch'; session: number; instance: number };

const raceArb: fc.Arbitrary<Race> = fc.oneof(
  fc.record({ kind: fc.constant('clientClose' as const), session: fc.nat(1), fault: faultArb, instance: fc.nat(2) }),
  fc.record({ kind: fc.constant('serverClose' as const), session: fc.nat(1), instance: fc.nat(2) }),
  fc.record({ kind: fc.constant('expire' as const) }),
  fc.record({ kind: fc.constant('send' as const), session: fc.nat(1), count: fc.integer({ min: 1, max: 3 }), fault: faultArb, instance: fc.nat(2) }),
  fc.record({ kind: fc.constant('push' as const), session: fc.nat(1), count: fc.integer({ min: 1, max: 3 }), instance: fc.nat(2) }),
  fc.record({ kind: fc.constant('watch' as const), session: fc.nat(1), instance: fc.nat(2) }),
);

const paramsArb = fc.record({
  sessions: fc.integer({ min: 1, max: 2 }),
  instances: fc.integer({ min: 1, max: 3 }),
  warmupMsgs: fc.integer({ min: 0, max: 4 }),
  warmupPushes: fc.integer({ min: 0, max: 3 }),
  /** The handler calls session.close('handler') at this client seq (0: never). */
  handlerClosesAt: fc.integer({ min: 0, max: 6 }),
  race: fc.array(raceArb, { minLength: 1, maxLength: 7 }),
});

const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

interface S {
  sid: string;
  nextSeq: number;
  /** Server seqs whose send() resolved, with their JSON. */
  appended: Map<number, string>;
  /** send() calls that failed, and when (after which onClose had started or not). */
  failedAfterClose: number;
  closes: string[];
  /** 'handler' or 'close', in the order they started and ended. */
  active: number;
  closeStarted: boolean;
}

type Params = typeof paramsArb extends fc.Arbitrary<infer T> ? T : never;

async function runRace(s: fc.Scheduler, p: Params): Promise<void> {
  const errors: string[] = [];
  const clock = { t: Date.now() };
  // Tombstones outlive the clock jumps of the model, so the final checks can read them.
  const store = new MemoryStore({ now: () => clock.t, tombstoneMs: LEASE });
  const gates: Gates = { s, crashed: new Set() };
  const bySid = new Map<string, S>();

  const make = (id: number) =>
    new BidiServer({
      store: gatedStore(store, id, gates),
      sweepInterval: 0,
      leaseMs: LEASE,
      idleTimeout: IDLE,
      onError: (err, ctx) => void errors.push(`onError ${ctx.phase}: ${String(err)}`),
      async onMessage(session, _data, info) {
        const st = bySid.get(session.id)!;
        if (st.closeStarted) errors.push(`${session.id}: onMessage(${info.seq}) after onClose started`);
        if (st.active > 0) errors.push(`${session.id}: onMessage(${info.seq}) overlaps another hook`);
        st.active++;
        try {
          await yieldTo(gates, id, 'handler');
          if (info.seq === p.handlerClosesAt) await session.close('handler');
        } finally {
          st.active--;
        }
      },
      async onClose(session, reason) {
        const st = bySid.get(session.id)!;
        if (st.active > 0) errors.push(`${session.id}: onClose overlaps a hook`);
        st.closeStarted = true;
        st.active++;
        st.closes.push(reason);
        try {
          await yieldTo(gates, id, 'onClose');
        } finally {
          st.active--;
        }
      },
    });
  const servers = range(0, p.instances - 1).map(make);
  const sweeper = make(99);
  const srv = (i: number) => servers[i % servers.length]!;

  const sessions: S[] = [];
  for (let k = 0; k < p.sessions; k++) {
    const res = await s.waitFor(srv(0).handle(bidiRequest('POST', '/session', { body: '{"v":1}' })));
    const sid = JSON.parse(res!.body).sid as string;
    const st: S = { sid, nextSeq: 1, appended: new Map(), failedAfterClose: 0, closes: [], active: 0, closeStarted: false };
    bySid.set(sid, st);
    sessions.push(st);
  }

  let pushes = 0;
  const push = async (st: S, instance: number) => {
    const json = JSON.stringify({ p: ++pushes });
    try {
      st.appended.set(await srv(instance).hub.send(st.sid, JSON.parse(json)), json);
    } catch (err) {
      if (!(err instanceof BidiError) || err.code !== 'SESSION_CLOSED') errors.push(`push: ${String(err)}`);
      st.failedAfterClose++;
    }
  };
  const send = async (st: S, count: number, fault: Fault, instance: number) => {
    const msgs = range(st.nextSeq, st.nextSeq + count - 1).map((seq) => [seq, { c: seq }]);
    st.nextSeq += count;
    const reply = await network(fault, (i) => srv(i).handle(bidiRequest('POST', '/session/send', { headers: { 'bidi-sid': st.sid }, body: JSON.stringify({ msgs }) })), instance, p.instances);
    if (reply && reply.status !== 200 && reply.status !== 410) errors.push(`send: ${reply.status} ${JSON.stringify(reply.body)}`);
  };
  const watch = async (st: S, instance: number) => {
    const reply = await network('none', (i) => srv(i).handle(bidiRequest('GET', '/session/watch', { headers: { 'bidi-sid': st.sid }, query: { ack: 0, wait: 0 } })), instance, p.instances);
    if (reply && reply.status !== 200) errors.push(`watch: ${reply.status} ${JSON.stringify(reply.body)}`);
  };
  const clientClose = async (st: S, fault: Fault, instance: number) => {
    const reply = await network(fault, (i) => srv(i).handle(bidiRequest('DELETE', '/session', { headers: { 'bidi-sid': st.sid } })), instance, p.instances);
    if (reply && reply.status !== 200) errors.push(`DELETE: ${reply.status} ${JSON.stringify(reply.body)}`);
  };

  const settle = async (tasks: Promise<unknown>[]) => {
    let done = 0;
    tasks.forEach((t) => t.then(() => done++, (e) => errors.push(`a request threw: ${e}`)));
    await s.waitIdle();
    await new Promise((resolve) => setImmediate(resolve));
    if (done !== tasks.length) errors.push(`${tasks.length - done} request(s) never completed`);
  };

  // Warm up: some traffic both ways, no faults.
  await settle(
    sessions.flatMap((st) => [
      ...(p.warmupMsgs ? [send(st, p.warmupMsgs, 'none', 0)] : []),
      ...range(1, p.warmupPushes).map(() => push(st, 0)),
    ]),
  );

  // The race.
  await settle(
    p.race.map((r) => {
      if (r.kind === 'expire') {
        clock.t += IDLE + 1;
        return sweeper.sweep();
      }
      const st = sessions[r.session % sessions.length]!;
      switch (r.kind) {
        case 'clientClose':
          return clientClose(st, r.fault, r.instance);
        case 'serverClose':
          return srv(r.instance)
            .hub.close(st.sid, `bye-${r.instance}`)
            .catch((e) => errors.push(`hub.close: ${String(e)}`));
        case 'send':
          return send(st, r.count, r.fault, r.instance);
        case 'push':
          return push(st, r.instance);
        case 'watch':
          return watch(st, r.instance);
      }
    }),
  );

  // Every session ends (a DELETE is idempotent), then one more sweep; nothing is left running.
  await settle(sessions.map((st) => clientClose(st, 'none', 0)));
  clock.t += 1;
  await settle([sweeper.sweep()]);

  for (const st of sessions) {
    const id = st.sid;
    if (st.closes.length !== 1) errors.push(`${id}: onClose ran ${st.closes.length} times (${st.closes})`);
    const [info] = await store.inspect([id]);
    if (info?.status !== 'closed') errors.push(`${id}: status ${info?.status} after every close finished`);
    // A client that watches now gets every message sent before the close, then the close.
    const res = await s.waitFor(srv(0).handle(bidiRequest('GET', '/session/watch', { headers: { 'bidi-sid': id }, query: { ack: 0, wait: 0 } })));
    const body = JSON.parse(res!.body);
    if (res!.status !== 200 || !body.close) {
      errors.push(`${id}: final watch ${res!.status} ${res!.body}`);
      continue;
    }
    const lastSent = Math.max(0, ...st.appended.keys());
    if (body.close.seq !== lastSent + 1) errors.push(`${id}: close marker at seq ${body.close.seq}, but the last successful send() got seq ${lastSent}`);
    if (body.close.reason !== st.closes[0]) errors.push(`${id}: onClose got "${st.closes[0]}", the close marker says "${body.close.reason}"`);
    if (!['client', 'expired', 'handler', 'bye-0', 'bye-1', 'bye-2'].includes(body.close.reason)) errors.push(`${id}: unexpected reason ${body.close.reason}`);
    // Nothing was trimmed (every watch acked 0): the log is exactly what send() returned — except
    // after the client's own close, whose tombstone keeps no log (that client reads no more).
    const got = (body.msgs as Array<[number, unknown]>).map(([seq, data]) => [seq, JSON.stringify(data)]);
    const want = body.close.reason === 'client' ? [] : [...st.appended].sort((a, b) => a[0] - b[0]);
    if (JSON.stringify(got) !== JSON.stringify(want)) errors.push(`${id}: watch after close returned ${JSON.stringify(got)}, appended ${JSON.stringify(want)}`);
    // After the end: sends are refused, pushes fail, DELETE still answers 200.
    const late = await s.waitFor(srv(1).handle(bidiRequest('POST', '/session/send', { headers: { 'bidi-sid': id }, body: `{"msgs":[[${st.nextSeq},1]]}` })));
    if (late!.status !== 410) errors.push(`${id}: send after close answered ${late!.status}`);
    const again = await s.waitFor(srv(2).handle(bidiRequest('DELETE', '/session', { headers: { 'bidi-sid': id } })));
    if (again!.status !== 200) errors.push(`${id}: a second DELETE answered ${again!.status}`);
    const failed = st.failedAfterClose;
    await s.waitFor(push(st, 0));
    if (st.failedAfterClose !== failed + 1) errors.push(`${id}: send() after close did not fail`);
  }
  if (errors.length) throw new Error(errors.slice(0, 10).join('\n'));
}

describe('model: closes racing each other and traffic', () => {
  const intervals = trackIntervals();
  afterEach(() => intervals.clear());
  afterAll(() => intervals.restore());

  it('invariant 6: onClose exactly once, after every handler, with the reason the client sees; messages sent before the close reach the client first', async () => {
    await assertProperty(
      'close-race model',
      fc.asyncProperty(fc.scheduler(), paramsArb, async (s, p) => {
        try {
          await runRace(s, p);
        } finally {
          intervals.clear();
        }
      }),
      RUNS,
    );
  });
});
