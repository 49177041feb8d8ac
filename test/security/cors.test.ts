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

function make(cors?: CorsOptions, onMessage?: (d: unknown) => void) {
  const store = new MemoryStore();
  return { store, server: new BidiServer({ store, sweepInterval: 0, cors, onMessage: (_s, d) => onMessage?.(d) }) };
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
