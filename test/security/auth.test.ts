/**
 * docs/SECURITY.md, "Authentication" and "Another client's session": auth
 * runs once, in `onOpen`, which may refuse; the optional `authorize` hook
 * checks every later request; without a session's sid a client can do
 * nothing to it.
 */
import { BidiError, BidiServer, MemoryStore, reject, type OpenRequest, type RequestCheck } from '../../src/core';
import { call, openSid } from './util';

describe('authentication at open', () => {
  it('onOpen sees the headers, query and meta, and may refuse with its status and reason: no session exists then', async () => {
    const store = new MemoryStore();
    const seen: OpenRequest[] = [];
    const server = new BidiServer({
      store,
      sweepInterval: 0,
      onOpen(session, req) {
        seen.push(req);
        if (req.headers.get('authorization') !== 'Bearer good') throw reject(401, 'log in first');
        if ((req.meta as { room?: string })?.room === 'vip') throw reject(403, 'not for you');
        session.user = { id: 'u1' };
      },
    });
    const refused = await call(server, 'POST', '/session', { body: { v: 1 }, headers: { authorization: 'Bearer bad' } });
    expect([refused.status, refused.body]).toEqual([401, { error: { code: 'REJECTED', message: 'log in first' } }]);
    const forbidden = await call(server, 'POST', '/session', { body: { v: 1, meta: { room: 'vip' } }, headers: { authorization: 'Bearer good' }, query: { x: '1' } });
    expect([forbidden.status, forbidden.body.error.code]).toEqual([403, 'REJECTED']);
    expect(store.size).toBe(0);
    expect(seen[1]!.query.get('x')).toBe('1');
    expect(seen[1]!.meta).toEqual({ room: 'vip' });
    const sid = await openSid(server, { v: 1 }, { authorization: 'Bearer good' });
    expect(store.size).toBe(1);
    expect((await server.hub.inspect([sid]))[0]!.user).toEqual({ id: 'u1' });
    await server.dispose();
  });

  it('a refusal can only be a 4xx, and a crashing onOpen is a 500 that creates nothing', async () => {
    expect(() => reject(500, 'no')).toThrow(BidiError);
    expect(() => reject(302, 'no')).toThrow(BidiError);
    const store = new MemoryStore();
    const server = new BidiServer({
      store,
      sweepInterval: 0,
      onError: () => {},
      onOpen() {
        throw new Error('bug in the app');
      },
    });
    const r = await call(server, 'POST', '/session', { body: { v: 1 } });
    expect([r.status, r.body.error.code]).toEqual([500, 'INTERNAL']);
    expect(r.body.error.message).not.toContain('bug in the app');
    expect(store.size).toBe(0);
    await server.dispose();
  });

  it('later requests are not authenticated again unless authorize is set ("skip redundant auth"): the sid is the credential', async () => {
    let opens = 0;
    const server = new BidiServer({
      sweepInterval: 0,
      onOpen(_s, req) {
        opens++;
        if (!req.headers.get('authorization')) throw reject(401, 'log in first');
      },
    });
    const sid = await openSid(server, { v: 1 }, { authorization: 'Bearer x' });
    // No Authorization header on any of these: the sid alone is enough.
    expect((await call(server, 'POST', '/session/send', { sid, body: { msgs: [[1, 'a']] } })).status).toBe(200);
    expect((await call(server, 'GET', '/session/watch', { sid, query: { ack: 0, wait: 0 } })).status).toBe(200);
    expect((await call(server, 'DELETE', '/session', { sid })).status).toBe(200);
    expect(opens).toBe(1);
    await server.dispose();
  });
});

describe('the per-request authorize hook', () => {
  function make() {
    const checks: RequestCheck[] = [];
    const delivered: unknown[] = [];
    const errors: unknown[] = [];
    let mode: 'allow' | 'unauthorized' | 'crash' = 'allow';
    const server = new BidiServer({
      sweepInterval: 0,
      onError: (e) => void errors.push(e),
      onMessage: (_s, d) => void delivered.push(d),
      authorize(check) {
        checks.push(check);
        if (mode === 'unauthorized') throw new BidiError('UNAUTHORIZED', 'token expired');
        if (mode === 'crash') throw new Error('auth service down');
      },
    });
    return { server, checks, delivered, errors, set: (m: typeof mode) => (mode = m) };
  }

  it('runs for send, watch and close with the sid and the headers; not for open', async () => {
    const t = make();
    const sid = await openSid(t.server);
    expect(t.checks).toHaveLength(0);
    await call(t.server, 'POST', '/session/send', { sid, body: { msgs: [[1, 'a']] }, headers: { authorization: 'Bearer 1' } });
    await call(t.server, 'GET', '/session/watch', { sid, query: { ack: 0, wait: 0 }, headers: { authorization: 'Bearer 2' } });
    await call(t.server, 'DELETE', '/session', { sid, headers: { authorization: 'Bearer 3' } });
    expect(t.checks.map((c) => [c.sessionId, c.headers.get('authorization')])).toEqual([
      [sid, 'Bearer 1'],
      [sid, 'Bearer 2'],
      [sid, 'Bearer 3'],
    ]);
    await t.server.dispose();
  });

  it('a refusal answers its status and changes nothing: no delivery, no trim, no close', async () => {
    const t = make();
    const sid = await openSid(t.server);
    await t.server.hub.send(sid, 'one');
    t.set('unauthorized');
    const send = await call(t.server, 'POST', '/session/send', { sid, body: { msgs: [[1, 'a']], ack: 1 } });
    expect([send.status, send.body.error.code]).toEqual([401, 'UNAUTHORIZED']);
    const watch = await call(t.server, 'GET', '/session/watch', { sid, query: { ack: 1, wait: 0 } });
    expect(watch.status).toBe(401);
    const del = await call(t.server, 'DELETE', '/session', { sid });
    expect(del.status).toBe(401);
    t.set('allow');
    expect(t.delivered).toEqual([]);
    const [view] = await t.server.hub.inspect([sid]);
    expect(view!.status).toBe('open');
    // The message was not trimmed by the refused acks.
    const again = await call(t.server, 'GET', '/session/watch', { sid, query: { ack: 0, wait: 0 } });
    expect(again.body.msgs).toEqual([[1, 'one']]);
    await t.server.dispose();
  });

  it('a hook that crashes refuses with 403 FORBIDDEN (fails closed) and is reported', async () => {
    const t = make();
    const sid = await openSid(t.server);
    t.set('crash');
    const r = await call(t.server, 'POST', '/session/send', { sid, body: { msgs: [[1, 'a']] } });
    expect([r.status, r.body.error.code]).toEqual([403, 'FORBIDDEN']);
    expect(r.body.error.message).not.toContain('auth service down');
    expect(t.delivered).toEqual([]);
    expect(t.errors).toHaveLength(1);
    await t.server.dispose();
  });
});

describe("another client's session", () => {
  it('cannot be reached without its sid: guessed, truncated, altered or missing sids all get 4xx and change nothing', async () => {
    const delivered: unknown[] = [];
    const server = new BidiServer({ sweepInterval: 0, onMessage: (_s, d) => void delivered.push(d) });
    const victim = await openSid(server);
    await server.hub.send(victim, 'secret');
    const flip = (c: string) => (c === 'A' ? 'B' : 'A');
    const attempts = [
      'A'.repeat(22),
      victim.slice(0, 21) + flip(victim[21]!),
      flip(victim[0]!) + victim.slice(1),
      victim.slice(0, 21),
      victim + 'A',
      victim.toLowerCase() === victim ? victim.toUpperCase() : victim.toLowerCase(),
      '',
      victim.slice(0, 11),
    ];
    for (const sid of attempts) {
      for (const [method, path, body, query] of [
        ['POST', '/session/send', { msgs: [[1, 'evil']], ack: 1 }, undefined],
        ['GET', '/session/watch', undefined, { ack: 1, wait: 0 }],
        ['DELETE', '/session', undefined, undefined],
      ] as const) {
        const r = await call(server, method, path, { sid, body, query: query as Record<string, number> | undefined });
        expect(r.status).toBeGreaterThanOrEqual(400);
        expect(r.status).toBeLessThan(500);
        expect(['UNKNOWN_SESSION', 'MISSING_SESSION_ID']).toContain(r.body.error.code);
      }
    }
    expect(delivered).toEqual([]);
    const [view] = await server.hub.inspect([victim]);
    expect(view!.status).toBe('open');
    const own = await call(server, 'GET', '/session/watch', { sid: victim, query: { ack: 0, wait: 0 } });
    expect(own.body.msgs).toEqual([[1, 'secret']]);
    await server.dispose();
  });

  it('the server-side hub (push, close, inspect, groups) has no HTTP route', async () => {
    const server = new BidiServer({ sweepInterval: 0 });
    const sid = await openSid(server);
    for (const path of ['/session/hub', '/session/send/' + sid, '/session/' + sid, '/session/close', '/session/inspect', '/session/broadcast']) {
      for (const method of ['GET', 'POST', 'DELETE']) {
        const r = await call(server, method, path, { sid, body: method === 'POST' ? { v: 1 } : undefined });
        expect([r.status, r.body.error.code]).toEqual([404, 'NOT_FOUND']);
      }
    }
    const [view] = await server.hub.inspect([sid]);
    expect(view!.status).toBe('open');
    await server.dispose();
  });
});
