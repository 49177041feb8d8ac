/**
 * docs/SECURITY.md, "Cross-origin requests" and "JSON only": CORS is closed
 * unless configured; bodies must be `application/json`, which a cross-site
 * form cannot send and which (with the `Bidi-Sid` header) makes every
 * browser request from another origin preflighted.
 */
import express from 'express';
import request from 'supertest';
import { BidiServer, MemoryStore, type CorsOptions } from '../../src/core';
import { bidiWeb } from '../../src/express';
import { call, openSid } from './util';

const HOST = { host: 'app.example' };

function make(cors?: CorsOptions, onMessage?: (d: unknown) => void, allowedHosts: readonly string[] | 'any' = ['app.example']) {
  const store = new MemoryStore();
  return { store, server: new BidiServer({ store, sweepInterval: 0, cors, allowedHosts, onMessage: (_s, d) => onMessage?.(d) }) };
}

describe('CORS, closed by default', () => {
  it('refuses every cross-origin request — preflight included — with 403 CORS_FORBIDDEN and no CORS headers; same-origin and non-browser requests pass', async () => {
    const { server, store } = make();
    const sid = await openSid(server);
    for (const origin of ['https://evil.example', 'null', 'http://app.example:8080', 'https://app.example.evil']) {
      for (const [method, path, body] of [
        ['POST', '/session', { v: 1 }],
        ['POST', '/session/send', { msgs: [[1, 'x']] }],
        ['GET', '/session/watch', undefined],
        ['DELETE', '/session', undefined],
        ['OPTIONS', '/session/send', undefined],
      ] as const) {
        const r = await call(server, method, path, { sid, body, query: { ack: 0, wait: 0 }, headers: { ...HOST, origin, 'access-control-request-method': 'POST' } });
        expect([r.status, r.body?.error?.code]).toEqual([403, 'CORS_FORBIDDEN']);
        expect(Object.keys(r.headers).filter((h) => h.startsWith('access-control-'))).toEqual([]);
      }
    }
    expect(store.size).toBe(1);
    // Same origin (Origin names the Host) and no Origin at all (curl, servers) are not cross-origin.
    expect((await call(server, 'POST', '/session/send', { sid, body: { msgs: [[1, 'x']] }, headers: { ...HOST, origin: 'https://app.example' } })).status).toBe(200);
    expect((await call(server, 'POST', '/session/send', { sid, body: { msgs: [[2, 'y']] } })).status).toBe(200);
    await server.dispose();
  });

  it('when origins are configured: only those get CORS headers; preflights list the methods and the Bidi-Sid header', async () => {
    const { server } = make({ origins: ['https://ui.example'], allowHeaders: ['authorization'], maxAge: 60 });
    const pre = await call(server, 'OPTIONS', '/session/send', { headers: { ...HOST, origin: 'https://ui.example', 'access-control-request-method': 'POST' } });
    expect(pre.status).toBe(204);
    expect(pre.headers['access-control-allow-origin']).toBe('https://ui.example');
    expect(pre.headers['access-control-allow-methods']).toBe('GET, POST, DELETE');
    expect(pre.headers['access-control-allow-headers']!.split(/, */)).toEqual(expect.arrayContaining(['content-type', 'bidi-sid', 'authorization']));
    expect(pre.headers['access-control-max-age']).toBe('60');
    expect(pre.headers['access-control-allow-credentials']).toBeUndefined();
    const opened = await call(server, 'POST', '/session', { body: { v: 1 }, headers: { ...HOST, origin: 'https://ui.example' } });
    expect(opened.status).toBe(201);
    expect(opened.headers['access-control-allow-origin']).toBe('https://ui.example');
    expect(opened.headers.vary).toBe('Origin');
    const other = await call(server, 'POST', '/session', { body: { v: 1 }, headers: { ...HOST, origin: 'https://evil.example' } });
    expect(other.status).toBe(403);
    await server.dispose();
  });

  it("credentials cannot be combined with origins '*'", () => {
    expect(() => new BidiServer({ sweepInterval: 0, cors: { origins: '*', credentials: true } })).toThrow(/credentials/);
  });

  it('bad CORS options are setup errors like every other option: INVALID_OPTIONS', () => {
    const invalid = expect.objectContaining({ name: 'BidiError', code: 'INVALID_OPTIONS' });
    expect(() => new BidiServer({ sweepInterval: 0, cors: { origins: '*', credentials: true } })).toThrow(invalid);
    expect(() => new BidiServer({ sweepInterval: 0, allowedHosts: 'example.com' as unknown as string[] })).toThrow(invalid);
  });
});

describe('JSON-only bodies', () => {
  it('refuses every body that is not application/json with 415 and applies nothing — the content types a cross-site form or a "simple" fetch can send', async () => {
    const delivered: unknown[] = [];
    const { server, store } = make(undefined, (d) => delivered.push(d));
    const sid = await openSid(server);
    for (const type of ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonp', 'text/json', '']) {
      const open = await call(server, 'POST', '/session', { body: '{"v":1}', headers: { 'content-type': type } });
      expect([type, open.status, open.body.error.code]).toEqual([type, 415, 'UNSUPPORTED_MEDIA_TYPE']);
      const send = await call(server, 'POST', '/session/send', { sid, body: '{"msgs":[[1,"x"]]}', headers: { 'content-type': type } });
      expect([type, send.status, send.body.error.code]).toEqual([type, 415, 'UNSUPPORTED_MEDIA_TYPE']);
    }
    expect(store.size).toBe(1);
    expect(delivered).toEqual([]);
    await server.dispose();
  });

  it('over Express too: a form post never reaches the session (and the sid cannot come from a form or the URL)', async () => {
    const delivered: unknown[] = [];
    const mw = bidiWeb({ sweepInterval: 0, onMessage: (_s, d) => void delivered.push(d) });
    const app = express().use(mw);
    const sid = (await request(app).post('/session').send({ v: 1 }).expect(201)).body.sid;
    // A form cannot set the Bidi-Sid header, so it names no session at all…
    const form = await request(app).post('/session/send').type('form').send({ msgs: '[[1,"x"]]', sid });
    expect([form.status, form.body.error.code]).toEqual([400, 'MISSING_SESSION_ID']);
    // …and with the header but a form's content type, the body is refused.
    const typed = await request(app).post('/session/send').set('bidi-sid', sid).type('form').send({ msgs: '[[1,"x"]]' });
    expect([typed.status, typed.body.error.code]).toEqual([415, 'UNSUPPORTED_MEDIA_TYPE']);
    const inUrl = await request(app).post(`/session/send?sid=${sid}&bidi-sid=${sid}`).send({ msgs: [[1, 'x']] });
    expect([inUrl.status, inUrl.body.error.code]).toEqual([400, 'MISSING_SESSION_ID']);
    expect(delivered).toEqual([]);
    await mw.server.dispose();
  });
});

describe('DNS rebinding: same-origin needs an allowed Host', () => {
  // A rebinding page at http://evil.example:PORT whose name now resolves to this server's address:
  // its requests carry Origin and Host both evil.example:PORT, so "Origin matches Host" proves nothing.
  const EVIL = { host: 'evil.example:8080', origin: 'http://evil.example:8080' };

  it('by default (localhost and IP addresses only) refuses Origin = Host = evil.example:port: no open, no send with a known sid, no watch', async () => {
    const store = new MemoryStore();
    const delivered: unknown[] = [];
    const server = new BidiServer({ store, sweepInterval: 0, onMessage: (_s, d) => void delivered.push(d) });
    const sid = await openSid(server); // a session of someone else, its sid known to the attacker
    const open = await call(server, 'POST', '/session', { body: { v: 1 }, headers: EVIL });
    expect([open.status, open.body.error.code, open.body.error.message]).toEqual([403, 'CORS_FORBIDDEN', 'this Host is not in allowedHosts']);
    const send = await call(server, 'POST', '/session/send', { sid, body: { msgs: [[1, 'x']] }, headers: EVIL });
    expect([send.status, send.body.error.code]).toEqual([403, 'CORS_FORBIDDEN']);
    // A same-origin GET carries no Origin, but a browser says Sec-Fetch-Site.
    const watch = await call(server, 'GET', '/session/watch', { sid, query: { ack: 0, wait: 0 }, headers: { host: EVIL.host, 'sec-fetch-site': 'same-origin' } });
    expect([watch.status, watch.body.error.code]).toEqual([403, 'CORS_FORBIDDEN']);
    expect(delivered).toEqual([]);
    expect(store.size).toBe(1);
    await server.dispose();
  });

  it('the default trusts localhost, *.localhost and IP literals as same-origin (dev servers, the chat sample)', async () => {
    const server = new BidiServer({ sweepInterval: 0 });
    for (const host of ['localhost:3000', 'app.localhost:3000', '127.0.0.1:3000', '[::1]:3000', '10.1.2.3']) {
      const r = await call(server, 'POST', '/session', { body: { v: 1 }, headers: { host, origin: `http://${host.toLowerCase()}` } });
      expect([host, r.status]).toEqual([host, 201]);
      expect(r.headers['access-control-allow-origin']).toBeUndefined();
      const w = await call(server, 'GET', '/session/watch', { sid: r.body.sid, query: { ack: 0, wait: 0 }, headers: { host, 'sec-fetch-site': 'same-origin' } });
      expect(w.status).toBe(200);
    }
    await server.dispose();
  });

  it("allowedHosts names the server's hosts (a leading dot: subdomains); 'any' trusts every Host; a cors origin still works", async () => {
    const named = new BidiServer({ sweepInterval: 0, allowedHosts: ['app.example', '.corp.example'] });
    for (const host of ['app.example', 'app.example:8443', 'x.corp.example', 'corp.example']) {
      expect((await call(named, 'POST', '/session', { body: { v: 1 }, headers: { host, origin: `https://${host}` } })).status).toBe(201);
    }
    expect((await call(named, 'POST', '/session', { body: { v: 1 }, headers: EVIL })).status).toBe(403);
    expect((await call(named, 'POST', '/session', { body: { v: 1 }, headers: { host: 'localhost:3000', origin: 'http://localhost:3000' } })).status).toBe(403);
    const any = new BidiServer({ sweepInterval: 0, allowedHosts: 'any' });
    expect((await call(any, 'POST', '/session', { body: { v: 1 }, headers: EVIL })).status).toBe(201);
    // Listing the app's own origin in cors admits it as an allowed cross-origin caller.
    const listed = new BidiServer({ sweepInterval: 0, cors: { origins: ['https://app.example'] } });
    const r = await call(listed, 'POST', '/session', { body: { v: 1 }, headers: { host: 'app.example', origin: 'https://app.example' } });
    expect([r.status, r.headers['access-control-allow-origin']]).toEqual([201, 'https://app.example']);
    // Non-browser clients (no Origin, no Sec-Fetch-Site) are not judged by Host.
    expect((await call(named, 'POST', '/session', { body: { v: 1 }, headers: { host: 'evil.example' } })).status).toBe(201);
    for (const s of [named, any, listed]) await s.dispose();
  });

  it('over Express with real sockets: Origin and Host both evil.example:port get 403', async () => {
    const app = express();
    app.use(bidiWeb({ sweepInterval: 0 }));
    const r = await request(app).post('/session').set('host', 'evil.example:8080').set('origin', 'http://evil.example:8080').send({ v: 1 });
    expect([r.status, r.body.error.code]).toEqual([403, 'CORS_FORBIDDEN']);
    const ok = await request(app).post('/session').set('origin', 'http://127.0.0.1').set('host', '127.0.0.1').send({ v: 1 });
    expect(ok.status).toBe(201);
  });
});
