/**
 * Smoke test of the chat sample (samples/chat/server.ts): the real Express
 * app on a free port, sessions opened over real HTTP.
 */
import http, { type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import vm from 'node:vm';
import type { BidiClientSession, FetchLike } from '../../src/client';
import Redis from 'ioredis';
import { MemoryStore } from '../../src/core/stores/memory';
import type { Store } from '../../src/core/store';
import { newSessionId, newToken } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { createChatApp, NICK_TAKEN, roomGroup } from '../../samples/chat/server';
import type { ChatApp } from '../../samples/chat/server';
import { isHistorySid, RoomHistory } from '../../samples/chat/history';
import { createChatFunctions } from '../../samples/serverless/functions';
import { startBalancer } from '../../samples/chat/balancer';
import { twoInARoom } from '../helpers/chat-scenario';
import { openWatched, waitFor } from '../helpers/client-session';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

let chat: ChatApp;
let server: Server;
let base: string;
const logged: string[] = [];

beforeAll(async () => {
  chat = createChatApp({ sweepInterval: 0, log: (line) => logged.push(line) });
  server = await new Promise<Server>((resolve) => {
    const s = chat.app.listen(0, () => resolve(s));
  });
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await chat.middleware.server.dispose();
});

/** A bare-protocol session (docs/PROTOCOL.md), independent of src/client. */
class RawSession {
  private seq = 0;
  private ack = 0;
  readonly received: any[] = [];
  close?: { seq: number; reason: string };

  private constructor(
    private readonly sid: string,
    private readonly base: string,
  ) {}

  /** Opens at `at` (default: the chat app of this file); every later request goes there too. */
  static async open(meta: unknown, at = base): Promise<RawSession> {
    const res = await fetch(`${at}/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ v: 1, meta }),
    });
    const body = await res.json();
    if (res.status !== 201) throw Object.assign(new Error(body.error?.message), { status: res.status, body });
    return new RawSession(body.sid, at);
  }

  async send(data: unknown): Promise<number> {
    const seq = ++this.seq;
    const res = await fetch(`${this.base}/session/send`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'bidi-sid': this.sid },
      body: JSON.stringify({ msgs: [[seq, data]], ack: this.ack }),
    });
    expect(res.status).toBe(200);
    const { ack } = await res.json();
    expect(ack).toBe(seq);
    return ack;
  }

  /** Watch until `until` holds for the received messages (or the close marker arrives). */
  async receiveUntil(until: (msgs: any[]) => boolean, timeoutMs = 5000): Promise<any[]> {
    const deadline = Date.now() + timeoutMs;
    while (!until(this.received) && !this.close) {
      if (Date.now() > deadline) throw new Error(`timed out; got ${JSON.stringify(this.received)}`);
      const res = await fetch(`${this.base}/session/watch?ack=${this.ack}&wait=1000`, { headers: { 'bidi-sid': this.sid } });
      expect(res.status).toBe(200);
      const body = await res.json();
      for (const [seq, data] of body.msgs) {
        expect(seq).toBe(this.ack + 1);
        this.ack = seq;
        this.received.push(data);
      }
      if (body.close) this.close = body.close;
    }
    return this.received;
  }

  async closeSession(): Promise<void> {
    const res = await fetch(`${this.base}/session`, { method: 'DELETE', headers: { 'bidi-sid': this.sid } });
    expect(res.status).toBe(200);
  }

  get sessionId(): string {
    return this.sid;
  }
}

const ofType = (type: string) => (msgs: any[]) => msgs.filter((m) => m.type === type);
const lastPresence = (msgs: any[]) => ofType('presence')(msgs).at(-1)?.nicks;

describe('chat sample, bare protocol', () => {
  test('join, presence, say, leave', async () => {
    const ann = await RawSession.open({ nick: 'ann', room: 'raw-room' });
    await ann.send({ type: 'hello' });
    await ann.receiveUntil((m) => lastPresence(m)?.includes('ann'));
    // The room's history (empty: nobody spoke yet), then our own arrival.
    expect(ann.received.slice(0, 2)).toMatchObject([{ type: 'history', lines: [] }, { type: 'joined', nick: 'ann' }]);

    const bob = await RawSession.open({ nick: 'bob', room: 'raw-room' });
    await bob.send({ type: 'hello' });
    await ann.receiveUntil((m) => lastPresence(m)?.length === 2);
    expect(lastPresence(ann.received)).toEqual(['ann', 'bob']);
    await bob.receiveUntil((m) => lastPresence(m)?.length === 2);

    await ann.send({ type: 'say', text: '  one  ' });
    await ann.send({ type: 'say', text: 'two' });
    await bob.receiveUntil((m) => ofType('said')(m).length === 2);
    const said = ofType('said')(bob.received);
    expect(said.map((m) => [m.from, m.text])).toEqual([
      ['ann', 'one'],
      ['ann', 'two'],
    ]);
    expect(typeof said[0].at).toBe('number');
    expect(said[0].id).not.toBe(said[1].id);

    // Nothing a peer receives mentions a session id.
    const everything = JSON.stringify([ann.received, bob.received]);
    expect(everything).not.toContain(ann.sessionId);
    expect(everything).not.toContain(bob.sessionId);

    await bob.closeSession();
    await ann.receiveUntil((m) => ofType('left')(m).length === 1 && lastPresence(m)?.length === 1);
    expect(ofType('left')(ann.received)).toEqual([expect.objectContaining({ type: 'left', nick: 'bob' })]);
    expect(lastPresence(ann.received)).toEqual(['ann']);
    await ann.closeSession();
  });

  test('bad messages get an error back, nothing is published', async () => {
    const cy = await RawSession.open({ nick: 'cy', room: 'raw-bad' });
    await cy.send({ type: 'say', text: 'x'.repeat(2001) });
    await cy.send({ type: 'shout', text: 'hi' });
    await cy.send({ type: 'say', text: 42 });
    await cy.receiveUntil((m) => ofType('error')(m).length === 3);
    expect(ofType('said')(cy.received)).toEqual([]);
    // The first message announced the session even though it was refused.
    expect(cy.received.slice(0, 2)).toMatchObject([{ type: 'history', lines: [] }, { type: 'joined', nick: 'cy' }]);
    await cy.closeSession();
  });

  test.each([
    ['missing meta', undefined],
    ['empty nick', { nick: '  ', room: 'lobby' }],
    ['long nick', { nick: 'n'.repeat(33), room: 'lobby' }],
    ['nick with a newline', { nick: 'a\nb', room: 'lobby' }],
    ['non-string nick', { nick: 7, room: 'lobby' }],
    ['upper-case room', { nick: 'ann', room: 'Lobby' }],
    ['long room', { nick: 'ann', room: 'r'.repeat(33) }],
    ['empty room', { nick: 'ann', room: '' }],
  ])('open is refused with 400: %s', async (_name, meta) => {
    const res = await fetch(`${base}/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ v: 1, meta }),
    });
    expect(res.status).toBe(400);
    expect((await res.json()).error.code).toBe('REJECTED');
  });
});

const openStatus = async (meta: unknown, at = base) => {
  const res = await fetch(`${at}/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ v: 1, meta }) });
  const body = await res.json();
  if (res.status === 201) await fetch(`${at}/session`, { method: 'DELETE', headers: { 'bidi-sid': body.sid } });
  return { status: res.status, body };
};

describe('chat sample, one nick per room', () => {
  test('a taken nick is refused at open with 409 and a message, whatever its case; other rooms and a freed nick are fine', async () => {
    const ann = await RawSession.open({ nick: 'ann', room: 'nick-room' });
    await ann.send({ type: 'hello' });
    await ann.receiveUntil((m) => lastPresence(m)?.includes('ann'));
    for (const nick of ['ann', '  ANN ', 'Ann', '\uff41\uff4e\uff4e' /* full-width */]) {
      const { status, body } = await openStatus({ nick, room: 'nick-room' });
      expect(status).toBe(409);
      expect(body.error).toMatchObject({ code: 'REJECTED', message: `the nick "${nick.trim()}" is taken in #nick-room: choose another` });
    }
    // What the page gets from the client: a REJECTED close with that message as the reason.
    const twin = join('ann', 'nick-room');
    await expect(twin.opened).rejects.toMatchObject({ code: 'REJECTED', status: 409 });
    expect(twin.closed).toEqual([expect.objectContaining({ code: 'REJECTED', reason: 'the nick "ann" is taken in #nick-room: choose another' })]);
    expect((await openStatus({ nick: 'ann', room: 'nick-elsewhere' })).status).toBe(201);
    expect((await openStatus({ nick: 'anna', room: 'nick-room' })).status).toBe(201);
    expect(lastPresence(ann.received)).toEqual(['ann']);

    await ann.closeSession();
    expect((await openStatus({ nick: 'ann', room: 'nick-room' })).status).toBe(201);
  });

  test('namesakes that both got past the open check (opened at once): the one that checks second is closed with nick-taken', async () => {
    // The session another instance created while our open was being checked: in the
    // store and a member of the room, as bidiweb leaves it after its open.
    const store = chat.middleware.server.store;
    const dan = await RawSession.open({ nick: 'dan', room: 'nick-race' });
    const other = newSessionId();
    expect(
      await store.create({ sid: other, userJson: JSON.stringify({ nick: 'Dan', room: 'nick-race' }), stateJson: '{"announced":false}', initial: [], idleMs: 60_000, maxSessions: 1_000_000 }),
    ).toEqual({ status: 'ok' });
    expect(await store.join(other, roomGroup('nick-race'))).toBe(true);

    await dan.send({ type: 'hello' });
    await dan.receiveUntil(() => false);
    expect(dan.close).toMatchObject({ reason: NICK_TAKEN });
    // Told why, never announced, nothing said.
    expect(dan.received).toEqual([{ type: 'error', code: NICK_TAKEN, message: 'the nick "dan" is taken in #nick-race: choose another' }]);
    expect(await store.members(roomGroup('nick-race'))).toEqual([other]);
    expect((await store.inspect([other]))[0]).toMatchObject({ status: 'open' });
    await store.close(other, { reason: 'test' });
  });

  test('across two instances on one Redis: namesakes opened at the same moment, one on each, never both stay', async () => {
    const redisServer = await startRedis();
    const prefix = `nick${newToken()}:`;
    const conns = [new Redis(redisServer.port, '127.0.0.1'), new Redis(redisServer.port, '127.0.0.1')];
    const apps = conns.map((redis) => createChatApp({ store: new RedisStore({ redis, prefix }), sweepInterval: 0, history: false }));
    const servers = await Promise.all(apps.map((c) => new Promise<Server>((resolve) => {
      const s = c.app.listen(0, () => resolve(s));
    })));
    const bases = servers.map((s) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`);
    let bothOpened = 0;
    try {
      for (let round = 0; round < 12; round++) {
        const room = `race-${round}`;
        const opens = await Promise.allSettled(bases.map((at) => RawSession.open({ nick: 'eve', room }, at)));
        const opened = opens.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
        for (const o of opens) if (o.status === 'rejected') expect((o.reason as { status: number }).status).toBe(409);
        expect(opened.length).toBeGreaterThanOrEqual(1);
        if (opened.length === 2) bothOpened++;
        await Promise.all(opened.map((s) => s.send({ type: 'hello' })));
        await Promise.all(opened.map((s) => s.receiveUntil((m) => ofType('joined')(m).length > 0)));
        const stayed = opened.filter((s) => !s.close);
        // Exactly one in the usual case; none when both checked at the very same moment (each saw the other).
        expect(stayed.length).toBeLessThanOrEqual(1);
        for (const s of opened.filter((x) => x.close)) {
          expect(s.close!.reason).toBe(NICK_TAKEN);
          expect(ofType('joined')(s.received)).toEqual([]);
        }
        for (const s of stayed) {
          await s.receiveUntil((m) => lastPresence(m)?.length === 1);
          expect(lastPresence(s.received)).toEqual(['eve']);
          await s.closeSession();
        }
      }
      // The opens did race past the open-time check (so the announce-time check was what decided).
      expect(bothOpened).toBeGreaterThan(0);
    } finally {
      for (const s of servers) {
        s.closeAllConnections();
        await new Promise<void>((resolve) => s.close(() => resolve()));
      }
      for (const c of apps) await c.middleware.server.dispose();
      await Promise.all(conns.map((c) => c.quit().catch(() => c.disconnect())));
      await redisServer.stop();
    }
  });
});

/** A real client session that records what it receives. */
function join(nick: string, room: string, fetchImpl?: FetchLike) {
  const watched = openWatched(`${base}/session`, { meta: { nick, room }, fetch: fetchImpl });
  live.add(watched.s);
  watched.s.on('close', () => live.delete(watched.s));
  return watched;
}

/** Sessions a failed test left open would keep jest alive (their watches retry forever). */
const live = new Set<BidiClientSession<any, unknown>>();
afterEach(async () => {
  await Promise.all([...live].map((s) => s.close()));
});

describe('chat sample, real client (src/client)', () => {
  test('two sessions in "lobby": one says, the other receives in order', async () => {
    const { ann, bob } = await twoInARoom(join);
    // Bob joined after ann but before she spoke: an empty history, his own arrival, then the chat.
    expect(bob.received.slice(0, 2)).toMatchObject([{ type: 'history', lines: [] }, { type: 'joined', nick: 'bob' }]);
    await ann.s.close();
    expect(ann.s.state).toBe('closed');
  });

  test('a bad nick is rejected with 400', async () => {
    const bad = join('', 'lobby');
    await expect(bad.opened).rejects.toMatchObject({ code: 'REJECTED', status: 400, errorCode: 'REJECTED' });
    expect(bad.s.state).toBe('closed');
    const bad2 = join('x'.repeat(33), 'lobby');
    await expect(bad2.opened).rejects.toMatchObject({ code: 'REJECTED', status: 400 });
  });
});

describe('chat sample, two instances sharing one store', () => {
  // Two independent apps (as two processes would have), one store, and every
  // request of every session sent round-robin to either: the chat keeps no
  // state outside the store.
  test('a room spans instances', async () => {
    const store = new MemoryStore();
    const instances = [createChatApp({ store, sweepInterval: 0 }), createChatApp({ store, sweepInterval: 0 })];
    const servers = await Promise.all(
      instances.map((c) => new Promise<Server>((resolve) => {
        const s = c.app.listen(0, () => resolve(s));
      })),
    );
    const bases = servers.map((s) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`);
    let turn = 0;
    const roundRobin: FetchLike = (url, init) => fetch(url.replace(base, bases[turn++ % bases.length]!), init);
    try {
      const ann = join('ann', 'spread', roundRobin);
      const bob = join('bob', 'spread', roundRobin);
      await Promise.all([ann.opened, bob.opened]);
      await Promise.all([ann.s.send({ type: 'hello' }), bob.s.send({ type: 'hello' })]);
      await waitFor('both in presence', () => lastPresence(ann.received)?.length === 2 && lastPresence(bob.received)?.length === 2);
      const lines = Array.from({ length: 20 }, (_, i) => `line ${i}`);
      await Promise.all(lines.map((text) => ann.s.send({ type: 'say', text })));
      await waitFor('bob to get every line', () => ofType('said')(bob.received).length === lines.length);
      expect(ofType('said')(bob.received).map((m) => m.text)).toEqual(lines);
      // A newcomer, also spread over both instances, gets the room's history from the store.
      const cy = join('cy', 'spread', roundRobin);
      await cy.opened;
      await cy.s.send({ type: 'hello' });
      await waitFor('cy to get the history', () => ofType('history')(cy.received).length === 1);
      expect(ofType('history')(cy.received)[0].lines.map((m: any) => m.text)).toEqual(lines);
      await cy.s.close();
      await bob.s.close();
      await waitFor('ann to see bob leave', () => ofType('left')(ann.received).length === 2);
      await ann.s.close();
    } finally {
      for (const s of servers) {
        s.closeAllConnections();
        await new Promise<void>((resolve) => s.close(() => resolve()));
      }
      for (const c of instances) await c.middleware.server.dispose();
    }
  });
});

describe('chat sample, room history', () => {
  test('a newcomer gets the room\'s last lines; lines echo the sender\'s cid', async () => {
    const ann = join('ann', 'hist-room');
    await ann.opened;
    await ann.s.send({ type: 'hello' });
    await ann.s.send({ type: 'say', text: 'first', cid: 'c-1' });
    await ann.s.send({ type: 'say', text: 'second', cid: 'not a cid!' });
    await waitFor('ann to see her lines', () => ofType('said')(ann.received).length === 2);
    const said = ofType('said')(ann.received);
    expect(said[0]).toMatchObject({ from: 'ann', text: 'first', cid: 'c-1' });
    expect(said[1]).not.toHaveProperty('cid'); // only [A-Za-z0-9_-]{1,64} is echoed

    const bob = join('bob', 'hist-room');
    await bob.opened;
    await bob.s.send({ type: 'hello' });
    await waitFor('bob to get the history', () => ofType('joined')(bob.received).length === 1);
    // The history comes first, then our own arrival; the lines are the room's, ids included.
    expect(bob.received[0]).toEqual({ type: 'history', lines: said });
    expect(bob.received[1]).toMatchObject({ type: 'joined', nick: 'bob' });
    await Promise.all([ann.s.close(), bob.s.close()]);
  });

  test('history sessions live in the store but no HTTP request can reach them', async () => {
    const store = chat.middleware.server.store;
    const history = new RoomHistory(store);
    const sid = (await history.sids('hist-room'))[0]!;
    expect(isHistorySid(sid)).toBe(true);
    expect((await store.inspect([sid]))[0]).toMatchObject({ status: 'open' });
    const attempts = [
      fetch(`${base}/session/watch?ack=2&wait=0`, { headers: { 'bidi-sid': sid } }),
      fetch(`${base}/session/send`, { method: 'POST', headers: { 'bidi-sid': sid, 'content-type': 'application/json' }, body: '{"msgs":[[1,"x"]]}' }),
      fetch(`${base}/session`, { method: 'DELETE', headers: { 'bidi-sid': sid } }),
    ];
    for (const res of await Promise.all(attempts)) {
      expect(res.status).toBe(404);
      expect((await res.json()).error.code).toBe('UNKNOWN_SESSION');
    }
    // Nothing was trimmed or closed.
    expect((await history.read('hist-room')).map((l: any) => l.text)).toEqual(['first', 'second']);
  });
});

describe.each([
  ['MemoryStore', false],
  ['RedisStore', true],
])('RoomHistory on %s', (_name, onRedis) => {
  let redisServer: RedisProcess | undefined;
  const connections: Redis[] = [];
  beforeAll(async () => {
    if (onRedis) redisServer = await startRedis();
  });
  afterAll(async () => {
    await Promise.all(connections.map((c) => c.quit().catch(() => c.disconnect())));
    await redisServer?.stop();
  });
  const makeStore = (): Store => {
    if (!onRedis) return new MemoryStore();
    const redis = new Redis(redisServer!.port, '127.0.0.1');
    connections.push(redis);
    return new RedisStore({ redis, prefix: `h${newToken()}:` });
  };

  test('keeps the last `keep` lines, oldest first, trimming as it goes', async () => {
    const store = makeStore();
    const history = new RoomHistory<number>(store, { keep: 5 });
    expect(await history.read('r')).toEqual([]);
    for (let i = 1; i <= 23; i++) expect(await history.append('r', i)).toBe(true);
    expect(await history.read('r')).toEqual([19, 20, 21, 22, 23]);
    // The log itself stays bounded (trimmed every 10 lines to the last 5).
    const [sid] = await history.sids('r');
    const raw = await store.read(sid!, { ack: 0, watchToken: 'chat-history-reader', claim: false, maxMessages: 1000 });
    expect(raw.status === 'ok' && raw.msgs.length).toBeLessThanOrEqual(15);
    // Rooms are apart.
    await history.append('other', 99);
    expect(await history.read('other')).toEqual([99]);
    await store.dispose?.();
  });

  test('several writers at once (as several instances): nothing lost, each writer in its own order', async () => {
    const store = makeStore();
    const writers = [0, 1, 2].map(() => new RoomHistory<string>(store, { keep: 100 }));
    await Promise.all(
      writers.map(async (h, w) => {
        for (let i = 0; i < 20; i++) await h.append('busy', `${w}:${i}`);
      }),
    );
    const got = await writers[0]!.read('busy');
    expect(got).toHaveLength(60);
    for (const w of [0, 1, 2]) {
      expect(got.filter((l) => l.startsWith(`${w}:`))).toEqual(Array.from({ length: 20 }, (_, i) => `${w}:${i}`));
    }
    await store.dispose?.();
  });

  test('a history that expired (a tombstone) is replaced by the next generation', async () => {
    const store = makeStore();
    const history = new RoomHistory<string>(store, { keep: 5 });
    await history.append('gone', 'old');
    const [gen0, gen1] = await history.sids('gone');
    // What a sweep does to an idle session: close it, run onClose (the chat ignores history sessions), finish.
    const closed = await store.close(gen0!, { reason: 'expired', lease: { token: 'sweeper', ms: 5000 } });
    expect(closed).toMatchObject({ status: 'ok', leased: true });
    await store.finishClose(gen0!, 'sweeper');
    expect(await history.read('gone')).toEqual([]);
    await history.append('gone', 'new');
    expect(await history.read('gone')).toEqual(['new']);
    expect((await store.inspect([gen0!, gen1!])).map((i) => i?.status)).toEqual(['closed', 'open']);
    await store.dispose?.();
  });
});

describe('serverless sample: a fresh fetch handler for every request', () => {
  test('chat, history, and expiry by a scheduled sweep, with no server object kept', async () => {
    const store = new MemoryStore();
    const fnLog: string[] = [];
    const fns = createChatFunctions({ store, wait: 200, maxWait: 300, idleTimeout: 1000, log: (l) => fnLog.push(l) });
    let invocations = 0;
    const viaFunction: FetchLike = (url, init) => {
      invocations++;
      const { cache: _cache, ...rest } = init;
      return fns.fetch(new Request(url, rest));
    };
    const ann = join('ann', 'fn-room', viaFunction);
    const bob = join('bob', 'fn-room', viaFunction);
    await Promise.all([ann.opened, bob.opened]);
    await Promise.all([ann.s.send({ type: 'hello' }), bob.s.send({ type: 'hello' })]);
    const lines = Array.from({ length: 10 }, (_, i) => `fn line ${i}`);
    await Promise.all(lines.map((text) => ann.s.send({ type: 'say', text })));
    await waitFor('bob to get every line', () => ofType('said')(bob.received).length === lines.length);
    expect(ofType('said')(bob.received).map((m) => m.text)).toEqual(lines);

    // A client that vanishes (no more requests at all): only a sweep can end its session.
    const open = await fns.fetch(
      new Request('http://fn.local/session', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"v":1,"meta":{"nick":"dan","room":"fn-room"}}' }),
    );
    expect(open.status).toBe(201);
    const { sid, wait, limits } = await open.json();
    expect([wait, limits.maxWait]).toEqual([200, 300]);
    const hello = await fns.fetch(
      new Request('http://fn.local/session/send', { method: 'POST', headers: { 'content-type': 'application/json', 'bidi-sid': sid }, body: '{"msgs":[[1,{"type":"hello"}]]}' }),
    );
    expect(await hello.json()).toEqual({ ack: 1 });
    await waitFor('ann to see dan', () => lastPresence(ann.received)?.includes('dan'));
    await new Promise((r) => setTimeout(r, 1300));
    // The cron function. (One sweep: a sweep within leaseMs of another one, made by another
    // server object, is skipped as busy — schedule sweeps further apart than that.)
    expect(await fns.sweep()).toBe(1);
    await waitFor('ann to see dan leave', () => ofType('left')(ann.received).some((m) => m.nick === 'dan') && lastPresence(ann.received)?.length === 2);
    expect(lastPresence(ann.received)).toEqual(['ann', 'bob']);

    await Promise.all([ann.s.close(), bob.s.close()]);
    expect(invocations).toBeGreaterThan(20);
    expect(fnLog).toEqual([]);
  });
});

describe('chat sample, static files', () => {
  test('GET / serves the page', async () => {
    const res = await fetch(`${base}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await res.text();
    expect(html).toContain('<script src="bidiweb.js">');
    expect(html).toContain('<script src="app.js">');
  });

  test('GET /bidiweb.js serves the client as a browser global', async () => {
    const res = await fetch(`${base}/bidiweb.js`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/javascript/);
    const code = await res.text();
    const sandbox: Record<string, any> = {};
    vm.runInNewContext(code, sandbox);
    expect(typeof sandbox.bidiweb.open).toBe('function');
  });

  test('a favicon: the page links /favicon.svg, and /favicon.ico leads there (no 404)', async () => {
    const html = await (await fetch(`${base}/`)).text();
    expect(html).toContain('<link rel="icon" href="favicon.svg" type="image/svg+xml">');
    const svg = await fetch(`${base}/favicon.svg`);
    expect(svg.status).toBe(200);
    expect(svg.headers.get('content-type')).toMatch(/^image\/svg\+xml/);
    expect(await svg.text()).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    const ico = await fetch(`${base}/favicon.ico`, { redirect: 'manual' });
    expect(ico.status).toBe(301);
    expect(ico.headers.get('location')).toBe('/favicon.svg');
    expect((await fetch(`${base}/favicon.ico`)).status).toBe(200);
  });

  test('GET /app.js and /style.css', async () => {
    const js = await fetch(`${base}/app.js`);
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toMatch(/javascript/);
    const css = await fetch(`${base}/style.css`);
    expect(css.status).toBe(200);
    expect(css.headers.get('content-type')).toMatch(/^text\/css/);
  });
});

test('no errors were logged', () => {
  expect(logged).toEqual([]);
});

describe('chat:cluster balancer (samples/chat/balancer.ts)', () => {
  /** A backend that answers with its name and the request's body. */
  const backend = (name: string, port = 0, seen: string[] = []) =>
    new Promise<Server>((resolve) => {
      const s = http.createServer((req, res) => {
        let body = '';
        req.on('data', (c) => (body += c));
        req.on('end', () => {
          seen.push(`${req.method} ${req.url} ${body}`);
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ name, body }));
        });
      });
      s.listen(port, '127.0.0.1', () => resolve(s));
    });
  const portOf = (s: Server) => (s.address() as AddressInfo).port;
  const stop = async (s: Server) => {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  };
  /** A port nothing listens on (connections are refused). */
  const deadPort = async () => {
    const s = await backend('gone');
    const port = portOf(s);
    await stop(s);
    return port;
  };
  const post = async (url: string, body: string) => {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'text/plain' }, body });
    return { status: res.status, json: await res.json() };
  };

  test('a backend that refuses connections is skipped, the request retried on the next one, and it rejoins once it accepts again', async () => {
    const a = await backend('a');
    const c = await backend('c');
    const dead = await deadPort();
    const changes: Array<[number, boolean]> = [];
    const lb = await startBalancer([portOf(a), dead, portOf(c)], 0, { healthIntervalMs: 100, onChange: (i, up) => changes.push([i, up]) });
    const url = `http://127.0.0.1:${lb.port}/x`;
    let revived: Server | undefined;
    try {
      const answers = [];
      for (let i = 0; i < 9; i++) answers.push(await post(url, `body ${i}`));
      // Every request answered by a live backend, with its own body (replayed after the refusal).
      expect(answers.map((r) => r.status)).toEqual(Array(9).fill(200));
      expect(answers.map((r) => r.json.body)).toEqual(Array.from({ length: 9 }, (_, i) => `body ${i}`));
      expect(new Set(answers.map((r) => r.json.name))).toEqual(new Set(['a', 'c']));
      // The dead one was tried once, then left out.
      expect(lb.counts[1]).toBe(1);
      expect(lb.up).toEqual([true, false, true]);
      expect(lb.stats).toEqual({ retried: 1, badGateway: 0 });
      expect(changes).toEqual([[1, false]]);

      // It comes back: the health check puts it in the rotation again.
      const seen: string[] = [];
      revived = await backend('b', dead, seen);
      await waitFor('the health check to see b', () => lb.up[1] === true);
      const after = [];
      for (let i = 0; i < 6; i++) after.push(await post(url, `again ${i}`));
      expect(after.filter((r) => r.json.name === 'b')).toHaveLength(2);
      expect(seen).toHaveLength(2);
      expect(changes).toEqual([[1, false], [1, true]]);
    } finally {
      await lb.close();
      for (const s of [a, c, revived]) if (s) await stop(s);
    }
  });

  test('a backend that dies while in use: requests carry on over the others', async () => {
    const servers = [await backend('a'), await backend('b'), await backend('c')];
    const lb = await startBalancer(servers.map(portOf), 0, { healthIntervalMs: 100 });
    const url = `http://127.0.0.1:${lb.port}/x`;
    try {
      for (let i = 0; i < 6; i++) expect((await post(url, `warm ${i}`)).status).toBe(200);
      expect(lb.counts).toEqual([2, 2, 2]); // kept-alive connections to each
      await stop(servers[1]!);
      const answers = [];
      for (let i = 0; i < 12; i++) answers.push(await post(url, `after ${i}`));
      expect(answers.map((r) => r.status)).toEqual(Array(12).fill(200));
      expect(answers.map((r) => r.json.body)).toEqual(Array.from({ length: 12 }, (_, i) => `after ${i}`));
      expect(lb.up).toEqual([true, false, true]);
      expect(lb.counts[1]).toBe(3); // the two before, and the one request that found it dead
    } finally {
      await lb.close();
      await stop(servers[0]!);
      await stop(servers[2]!);
    }
  });

  test('no backend takes the request: 502 with a JSON error', async () => {
    const lb = await startBalancer([await deadPort(), await deadPort()], 0, { healthIntervalMs: 60_000 });
    try {
      const res = await fetch(`http://127.0.0.1:${lb.port}/session`);
      expect(res.status).toBe(502);
      expect(await res.json()).toEqual({ error: { code: 'BAD_GATEWAY', message: 'no backend available' } });
      expect(lb.up).toEqual([false, false]);
      expect(lb.counts).toEqual([1, 1]);
    } finally {
      await lb.close();
    }
  });

  test('a backend that fails after it got the request: a POST is not sent elsewhere (it may have acted on it: 502), a GET is', async () => {
    let got = 0;
    const breaking = http.createServer((req) => {
      got++;
      req.socket.destroy();
    });
    await new Promise<void>((resolve) => breaking.listen(0, '127.0.0.1', () => resolve()));
    const other = await backend('other');
    const lb = await startBalancer([portOf(breaking), portOf(other)], 0);
    try {
      const res = await fetch(`http://127.0.0.1:${lb.port}/session/send`, { method: 'POST', body: 'x' });
      expect(res.status).toBe(502);
      expect(got).toBe(1);
      expect(lb.counts).toEqual([1, 0]);
      expect(lb.up).toEqual([true, true]); // it accepts connections: not down
      expect(lb.stats).toEqual({ retried: 0, badGateway: 1 });
      // A GET (a watch) is idempotent: sent again to the next backend. (Round robin: the
      // first goes to `other`, the second to `breaking` first.)
      for (let i = 0; i < 2; i++) {
        const watch = await fetch(`http://127.0.0.1:${lb.port}/session/watch?ack=0`);
        expect(watch.status).toBe(200);
        expect(await watch.json()).toMatchObject({ name: 'other' });
      }
      expect(got).toBe(2);
      expect(lb.counts).toEqual([2, 2]);
      expect(lb.stats).toEqual({ retried: 1, badGateway: 1 });
    } finally {
      await lb.close();
      await stop(breaking);
      await stop(other);
    }
  });
});
