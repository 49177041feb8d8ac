/**
 * The client against a small fake server (node:http) that speaks
 * docs/PROTOCOL.md, with hooks for fault injection.
 */
import http from 'node:http';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { sleep } from '../../src/core/util';
import {
  open,
  BidiClientError,
  type BidiClientSession,
  type ClientOptions,
  type CloseEvent,
  type FetchLike,
  type RetryInfo,
  type SessionState,
} from '../../src/client';
import { rng, sessionChaosFetch } from '../helpers/faulty-fetch';

// ---- fake server ------------------------------------------------------------------------------

interface FakeSession {
  sid: string;
  meta: unknown;
  /** client → server ack */
  ack: number;
  buffered: Map<number, unknown>;
  /** delivered client messages, in order */
  received: unknown[];
  /** unacked server → client messages */
  out: [number, unknown][];
  nextOut: number;
  close?: { seq: number; reason: string };
  wake: Set<(superseded: boolean) => void>;
  /** when true, send requests only buffer (nothing is delivered) */
  paused: boolean;
}

interface ReqInfo {
  method: string;
  url: string;
  kind: 'open' | 'send' | 'watch' | 'close' | 'other';
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: any;
  sid?: string;
}

type HookResult = undefined | 'drop' | { status: number; body?: unknown; headers?: Record<string, string> };

class FakeServer {
  server!: http.Server;
  base = '';
  sessions = new Map<string, FakeSession>();
  log: ReqInfo[] = [];
  hook?: (req: ReqInfo, session?: FakeSession) => HookResult | Promise<HookResult>;
  onMessage?: (s: FakeSession, data: unknown, seq: number) => void;
  limits = { maxBodyBytes: 1048576, maxMessageBytes: 262144, maxMessagesPerRequest: 100, inboundWindow: 256, maxWait: 55000, idleTimeout: 120000 };
  wait = 2000;
  windowRetryAfter = '0';
  inflightSends = 0;
  maxInflightSends = 0;
  private timers = new Set<NodeJS.Timeout>();

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/session`;
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const s of this.sessions.values()) for (const w of [...s.wake]) w(true);
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  only(): FakeSession {
    expect(this.sessions.size).toBe(1);
    return [...this.sessions.values()][0];
  }

  push(s: FakeSession, data: unknown): number {
    const seq = s.nextOut++;
    s.out.push([seq, data]);
    this.wakeAll(s);
    return seq;
  }

  closeSession(s: FakeSession, reason: string): void {
    if (!s.close) s.close = { seq: s.nextOut, reason };
    this.wakeAll(s);
  }

  resume(s: FakeSession): void {
    s.paused = false;
    this.deliver(s);
  }

  private wakeAll(s: FakeSession): void {
    for (const w of [...s.wake]) w(false);
  }

  private deliver(s: FakeSession): void {
    while (!s.paused && s.buffered.has(s.ack + 1)) {
      const seq = s.ack + 1;
      const data = s.buffered.get(seq);
      s.buffered.delete(seq);
      s.ack = seq;
      s.received.push(data);
      this.onMessage?.(s, data, seq);
    }
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url!, 'http://x');
    const rest = url.pathname.replace(/^\/session/, '');
    const kind: ReqInfo['kind'] =
      req.method === 'POST' && rest === '' ? 'open'
      : req.method === 'POST' && rest === '/send' ? 'send'
      : req.method === 'GET' && rest === '/watch' ? 'watch'
      : req.method === 'DELETE' && rest === '' ? 'close'
      : 'other';
    let body: any;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = Symbol('bad json');
    }
    const sidHeader = req.headers['bidi-sid'];
    const info: ReqInfo = {
      method: req.method!,
      url: req.url!,
      kind,
      query: url.searchParams,
      headers: req.headers,
      body,
      ...(typeof sidHeader === 'string' ? { sid: sidHeader } : {}),
    };
    this.log.push(info);
    const json = (status: number, b: unknown, headers: Record<string, string> = {}): void => {
      if (res.writableEnded || res.destroyed) return;
      res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
      res.end(JSON.stringify(b));
    };
    const err = (status: number, code: string, message: string, headers?: Record<string, string>): void =>
      json(status, { error: { code, message } }, headers);

    const session = info.sid !== undefined ? this.sessions.get(info.sid) : undefined;
    if (this.hook) {
      const r = await this.hook(info, session);
      if (r === 'drop') {
        req.socket.destroy();
        return;
      }
      if (r) {
        json(r.status, r.body ?? {}, r.headers);
        return;
      }
    }
    if (kind === 'other') return err(404, 'NOT_FOUND', 'no such path');
    if (kind === 'open') {
      if (!body || body.v !== 1) return err(400, 'UNSUPPORTED_VERSION', 'v must be 1');
      const sid = randomBytes(16).toString('base64url');
      this.sessions.set(sid, {
        sid, meta: body.meta, ack: 0, buffered: new Map(), received: [], out: [], nextOut: 1, wake: new Set(), paused: false,
      });
      return json(201, { sid, v: 1, wait: this.wait, limits: this.limits });
    }
    if (info.sid === undefined) return err(400, 'MISSING_SESSION_ID', 'no Bidi-Sid');
    if (!session) return err(404, 'UNKNOWN_SESSION', 'no such session');
    const s = session;

    if (kind === 'close') {
      this.closeSession(s, 'client');
      return json(200, { closed: true });
    }

    if (kind === 'send') {
      if (req.headers['content-type'] !== 'application/json') return err(415, 'UNSUPPORTED_MEDIA_TYPE', 'json only');
      if (s.close) return err(410, 'SESSION_CLOSED', 'closed');
      if (!body || typeof body !== 'object') return err(400, 'BAD_REQUEST', 'bad body');
      if (Buffer.byteLength(text) > this.limits.maxBodyBytes) return err(413, 'BODY_TOO_LARGE', 'too large');
      const msgs: [number, unknown][] = body.msgs ?? [];
      if (msgs.length > this.limits.maxMessagesPerRequest) return err(413, 'TOO_MANY_MESSAGES', 'too many');
      for (const [seq] of msgs) {
        if (!Number.isSafeInteger(seq) || seq < 1) return err(400, 'BAD_REQUEST', 'bad seq');
        if (seq > s.ack + this.limits.inboundWindow) {
          return err(429, 'SEQ_OUT_OF_WINDOW', 'out of window', { 'Retry-After': this.windowRetryAfter });
        }
      }
      if (typeof body.ack === 'number') {
        if (body.ack > s.nextOut - 1) return err(400, 'INVALID_ACK', 'ack too high');
        s.out = s.out.filter(([seq]) => seq > body.ack);
      }
      this.inflightSends++;
      this.maxInflightSends = Math.max(this.maxInflightSends, this.inflightSends);
      try {
        for (const [seq, data] of msgs) if (seq > s.ack && !s.buffered.has(seq)) s.buffered.set(seq, data);
        this.deliver(s);
        // Give concurrent requests a chance to overlap.
        await new Promise((r) => setImmediate(r));
      } finally {
        this.inflightSends--;
      }
      return json(200, { ack: s.ack });
    }

    // watch
    const ack = Number(info.query.get('ack'));
    const wait = info.query.has('wait') ? Number(info.query.get('wait')) : this.wait;
    if (!Number.isSafeInteger(ack) || ack < 0) return err(400, 'BAD_REQUEST', 'bad ack');
    if (ack > s.nextOut - 1) return err(400, 'INVALID_ACK', 'ack too high');
    s.out = s.out.filter(([seq]) => seq > ack);
    for (const w of [...s.wake]) w(true); // supersede older watches
    const respond = (): void =>
      json(200, { msgs: s.out.filter(([seq]) => seq > ack), ack: s.ack, ...(s.close ? { close: s.close } : {}) });
    if (s.out.some(([seq]) => seq > ack) || s.close || wait === 0) return respond();
    await new Promise<void>((resolve) => {
      const done = (superseded: boolean): void => {
        s.wake.delete(done);
        clearTimeout(timer);
        this.timers.delete(timer);
        if (superseded) json(200, { msgs: [], ack: s.ack, superseded: true });
        else respond();
        resolve();
      };
      const timer = setTimeout(() => done(false), wait);
      this.timers.add(timer);
      s.wake.add(done);
      res.on('close', () => {
        if (s.wake.has(done)) done(true);
      });
    });
  }
}

// ---- helpers ----------------------------------------------------------------------------------




function closed(s: BidiClientSession<any, any>): Promise<CloseEvent> {
  return new Promise((resolve) => s.once('close', resolve));
}

function opened(s: BidiClientSession<any, any>): Promise<void> {
  return new Promise((resolve, reject) => {
    s.once('open', () => resolve());
    s.once('close', (ev) => reject(new Error(`closed: ${ev.code} ${ev.reason}`)));
  });
}

async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('waitFor: timed out');
    await sleep(5);
  }
}

// ---- tests ------------------------------------------------------------------------------------

/** Chaos seeds; set BIDI_CHAOS_SEEDS=1-200 (a range) to stress the client. */
const SEEDS: number[] = (() => {
  const m = /^(\d+)-(\d+)$/.exec(process.env.BIDI_CHAOS_SEEDS ?? '');
  if (!m) return [42, 1234];
  return Array.from({ length: Number(m[2]) - Number(m[1]) + 1 }, (_, i) => Number(m[1]) + i);
})();

let server: FakeServer;
const sessions: BidiClientSession<any, any>[] = [];

function connect<TIn = any>(options: ClientOptions = {}): BidiClientSession<TIn, any> {
  const s = open<TIn, any>(server.base, { retry: { initialDelayMs: 5, maxDelayMs: 50 }, ...options });
  sessions.push(s);
  return s;
}

beforeEach(async () => {
  server = new FakeServer();
  await server.start();
});

afterEach(async () => {
  // Every session must end cleanly (and leave no timers: jest would report open handles).
  for (const s of sessions.splice(0)) if (s.state !== 'closed') await s.close();
  await server.stop();
});

describe('basics', () => {
  test('opens, exchanges messages in both directions, closes', async () => {
    server.onMessage = (s, data) => server.push(s, { echo: data });
    const s = connect({ meta: { room: 'lobby' } });
    const states: SessionState[] = [];
    s.on('state', (st) => states.push(st));
    const got: [unknown, number][] = [];
    s.on('message', (data, { seq }) => got.push([data, seq]));
    const sent = [s.send('a'), s.send({ b: 1 }), s.send([3])]; // before open: queued
    expect(s.state).toBe('connecting');
    expect(s.id).toBeUndefined();
    await opened(s);
    expect(s.id).toMatch(/^[A-Za-z0-9_-]{22}$/);
    await Promise.all(sent);
    expect(s.bufferedAmount).toBe(0);
    await waitFor(() => got.length === 3);
    expect(got).toEqual([
      [{ echo: 'a' }, 1],
      [{ echo: { b: 1 } }, 2],
      [{ echo: [3] }, 3],
    ]);
    const fs = server.only();
    expect(fs.meta).toEqual({ room: 'lobby' });
    expect(fs.received).toEqual(['a', { b: 1 }, [3]]);
    const ev = closed(s);
    await s.close();
    expect(await ev).toEqual({ code: 'CLIENT', reason: 'closed by the client' });
    expect(s.state).toBe('closed');
    expect(states).toEqual(['open', 'closing', 'closed']);
    expect(server.log.filter((r) => r.kind === 'close')).toHaveLength(1);
  });

  test('the sid travels only in the Bidi-Sid header; bodies are JSON', async () => {
    const s = connect();
    await opened(s);
    await s.send('x');
    await s.close();
    const sid = s.id!;
    const after = server.log.filter((r) => r.kind !== 'open');
    expect(after.length).toBeGreaterThanOrEqual(3);
    for (const r of server.log) expect(r.url).not.toContain(sid);
    for (const r of after) expect(r.sid).toBe(sid);
    for (const r of server.log.filter((x) => x.method === 'POST')) expect(r.headers['content-type']).toBe('application/json');
    expect(server.log[0].body).toEqual({ v: 1 });
    const watch = server.log.find((r) => r.kind === 'watch')!;
    expect(watch.query.get('ack')).toBe('0');
    expect(watch.query.get('wait')).toBe(String(server.wait));
  });

  test('bufferedAmount counts UTF-8 bytes of unacked messages', async () => {
    const s = connect();
    void s.send('é€'); // JSON "é€" = 2 + 2 + 3 bytes
    void s.send({ a: 1 });
    expect(s.bufferedAmount).toBe(7 + 7);
    await opened(s);
    await waitFor(() => s.bufferedAmount === 0);
  });

  test('send() validates messages without consuming a seq', async () => {
    server.limits.maxMessageBytes = 10;
    const s = connect();
    await opened(s);
    await expect(s.send(undefined)).rejects.toMatchObject({ code: 'INVALID_MESSAGE' });
    const circular: any = {};
    circular.self = circular;
    await expect(s.send(circular)).rejects.toMatchObject({ code: 'INVALID_MESSAGE' });
    await expect(s.send('x'.repeat(20))).rejects.toMatchObject({ code: 'MESSAGE_TOO_LARGE' });
    await s.send('ok');
    expect(server.only().received).toEqual(['ok']);
    expect(server.log.find((r) => r.kind === 'send')!.body.msgs).toEqual([[1, 'ok']]);
  });

  test('send() rejects at once while closing and after close', async () => {
    server.hook = (req) => (req.kind === 'close' ? undefined : undefined);
    const s = connect();
    await opened(s);
    const closing = s.close();
    expect(s.state).toBe('closing');
    await expect(s.send('late')).rejects.toMatchObject({ code: 'CLIENT' });
    await closing;
    const err = await s.send('later').catch((e) => e);
    expect(err).toBeInstanceOf(BidiClientError);
    expect(err.code).toBe('CLIENT');
    expect(server.only().received).toEqual([]);
  });

  test('headers: an async function, evaluated for every request', async () => {
    let n = 0;
    const s = connect({ headers: async () => ({ Authorization: `Bearer t${++n}` }) });
    await opened(s);
    await s.send(1);
    await s.send(2);
    await s.close();
    const auths = server.log.map((r) => r.headers.authorization);
    expect(new Set(auths).size).toBe(auths.length);
    expect(auths.every((a) => /^Bearer t\d+$/.test(a!))).toBe(true);
  });

  test('the server ack of the watch stream rides on send POSTs', async () => {
    const s = connect();
    const got: unknown[] = [];
    s.on('message', (d) => got.push(d));
    await opened(s);
    const fs = server.only();
    server.push(fs, 'm1');
    server.push(fs, 'm2');
    await waitFor(() => got.length === 2);
    await s.send('x');
    expect(server.log.filter((r) => r.kind === 'send').at(-1)!.body.ack).toBe(2);
  });

  test('a throwing listener is reported as an error event and breaks nothing', async () => {
    server.onMessage = (s, data) => server.push(s, data);
    const s = connect();
    const errors: BidiClientError[] = [];
    s.on('error', (e) => errors.push(e));
    const got: unknown[] = [];
    s.on('message', () => {
      throw new Error('app bug');
    });
    s.on('message', (d) => got.push(d));
    await opened(s);
    await s.send(1);
    await s.send(2);
    await waitFor(() => got.length === 2);
    expect(got).toEqual([1, 2]);
    expect(errors.map((e) => e.code)).toEqual(['LISTENER_ERROR', 'LISTENER_ERROR']);
    expect((errors[0].cause as Error).message).toBe('app bug');
    expect(s.state).toBe('open');
  });
});

describe('client → server', () => {
  test('batches within maxMessagesPerRequest, maxBodyBytes and maxInflight', async () => {
    server.limits.maxMessagesPerRequest = 5;
    server.limits.maxBodyBytes = 400;
    const s = connect({ maxInflight: 2 });
    await opened(s);
    const big = 'x'.repeat(100);
    const all = Array.from({ length: 40 }, (_, i) => s.send(i % 4 === 0 ? big : i));
    await Promise.all(all);
    const sends = server.log.filter((r) => r.kind === 'send');
    for (const r of sends) {
      expect(r.body.msgs.length).toBeLessThanOrEqual(5);
      expect(Buffer.byteLength(JSON.stringify(r.body))).toBeLessThanOrEqual(400);
    }
    expect(server.maxInflightSends).toBeLessThanOrEqual(2);
    expect(server.only().received).toEqual(Array.from({ length: 40 }, (_, i) => (i % 4 === 0 ? big : i)));
  });

  test('never sends a seq above ack + inboundWindow', async () => {
    server.limits.inboundWindow = 5;
    const s = connect({ resendAfterMs: 20 });
    await opened(s);
    const fs = server.only();
    fs.paused = true; // the server buffers but does not deliver: ack stays 0
    const all = Array.from({ length: 20 }, (_, i) => s.send(i + 1));
    await sleep(200);
    const seen = server.log.filter((r) => r.kind === 'send').flatMap((r) => r.body.msgs.map((m: [number]) => m[0]));
    expect(Math.max(...seen)).toBe(5);
    expect(fs.received).toEqual([]);
    expect(s.bufferedAmount).toBeGreaterThan(0);
    server.resume(fs);
    await Promise.all(all);
    expect(fs.received).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  });

  test('honours limits.inboundBufferBytes when the server sends it', async () => {
    (server.limits as Record<string, number>).inboundBufferBytes = 300;
    const s = connect({ resendAfterMs: 20 });
    await opened(s);
    const fs = server.only();
    fs.paused = true;
    const msg = 'x'.repeat(98); // 100 bytes of JSON
    const all = Array.from({ length: 10 }, () => s.send(msg));
    await sleep(150);
    const seen = server.log.filter((r) => r.kind === 'send').flatMap((r) => r.body.msgs.map((m: [number]) => m[0]));
    expect(Math.max(...seen)).toBe(3);
    server.resume(fs);
    await Promise.all(all);
    expect(fs.received).toHaveLength(10);
  });

  test('a 200 whose ack does not cover a message: resent after resendAfterMs', async () => {
    let swallowed = 0;
    // A faulty server: the first POST is answered 200 but its messages are dropped.
    server.hook = (req, fs) => {
      if (req.kind === 'send' && swallowed++ === 0) return { status: 200, body: { ack: fs!.ack } };
      return undefined;
    };
    const s = connect({ resendAfterMs: 100 });
    await opened(s);
    const t0 = Date.now();
    await s.send('once');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
    expect(server.only().received).toEqual(['once']);
    expect(server.log.filter((r) => r.kind === 'send')).toHaveLength(2);
  });

  test('a server that announces leaseMs: a message unacked for long is resent at least once per lease, not ever more rarely', async () => {
    // After a server instance dies mid-delivery, only a send after its lease ran out resumes delivery.
    Object.assign(server.limits, { leaseMs: 40, maxUnackedMessages: 9 });
    const sendsAt: number[] = [];
    server.hook = (req, fs) => {
      if (req.kind !== 'send') return undefined;
      sendsAt.push(Date.now());
      // The first 7 are answered 200 but dropped (as if buffered behind a lease that is not released).
      if (sendsAt.length <= 7) return { status: 200, body: { ack: fs!.ack } };
      return undefined;
    };
    const s = connect({ resendAfterMs: 20, retry: { initialDelayMs: 5, maxDelayMs: 10_000 } });
    await opened(s);
    expect(s.limits).toMatchObject({ leaseMs: 40, maxUnackedMessages: 9 });
    await s.send('late');
    expect(server.only().received).toEqual(['late']);
    const gaps = sendsAt.slice(1).map((t, i) => t - sendsAt[i]!);
    // Doubling alone would wait 20, 40, …, 1 280 ms; capped at the lease, 40 ms each.
    expect(Math.max(...gaps)).toBeLessThan(1_000);
  });

  test('acks from watch responses resolve sends', async () => {
    // Send responses never carry a useful ack; only the watch tells.
    server.hook = (req, fs) => {
      if (req.kind !== 'send') return undefined;
      for (const [seq, data] of req.body.msgs) if (seq === fs!.ack + 1) {
        fs!.ack = seq;
        fs!.received.push(data);
      }
      setTimeout(() => server.push(fs!, 'tick'), 10);
      return { status: 200, body: { ack: 0 } };
    };
    const s = connect({ resendAfterMs: 10_000 });
    await opened(s);
    await s.send('a');
    expect(server.only().received).toEqual(['a']);
  });

  test('retries network errors and 5xx with backoff, emitting error and retry', async () => {
    let failures = 0;
    server.hook = (req) => {
      if (req.kind !== 'send') return undefined;
      failures++;
      if (failures === 1) return 'drop';
      if (failures === 2) return { status: 500, body: { error: { code: 'INTERNAL', message: 'store down' } } };
      if (failures === 3) return { status: 503, body: {} };
      return undefined;
    };
    const s = connect();
    const retries: RetryInfo[] = [];
    const errors: string[] = [];
    let sawRetrying = false;
    s.on('retry', (r) => {
      retries.push(r);
      sawRetrying ||= s.retrying;
    });
    s.on('error', (e) => errors.push(e.code));
    await opened(s);
    await s.send('persistent');
    expect(server.only().received).toEqual(['persistent']);
    expect(retries.map((r) => [r.op, r.attempt])).toEqual([
      ['send', 1],
      ['send', 2],
      ['send', 3],
    ]);
    expect(errors).toEqual(['NETWORK_ERROR', 'HTTP_ERROR', 'HTTP_ERROR']);
    expect(retries[1].error.status).toBe(500);
    expect(sawRetrying).toBe(true);
    expect(s.retrying).toBe(false);
  });

  test('429 honours Retry-After', async () => {
    server.windowRetryAfter = '1';
    let first = true;
    server.hook = (req) => {
      if (req.kind === 'send' && first) {
        first = false;
        return { status: 429, body: { error: { code: 'SEQ_OUT_OF_WINDOW', message: 'slow down' } }, headers: { 'Retry-After': '1' } };
      }
      return undefined;
    };
    const s = connect();
    const retries: RetryInfo[] = [];
    s.on('retry', (r) => retries.push(r));
    await opened(s);
    const t0 = Date.now();
    await s.send('x');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(950);
    expect(retries).toHaveLength(1);
    expect(retries[0].delayMs).toBeGreaterThanOrEqual(1000);
    expect(retries[0].error.errorCode).toBe('SEQ_OUT_OF_WINDOW');
  });

  test('413 for a batch: retried in smaller batches', async () => {
    server.limits.maxMessagesPerRequest = 100;
    let real = 3; // the server's real per-request limit, smaller than it advertised
    server.hook = (req) =>
      req.kind === 'send' && req.body.msgs.length > real
        ? { status: 413, body: { error: { code: 'TOO_MANY_MESSAGES', message: 'too many' } } }
        : undefined;
    const s = connect();
    await opened(s);
    await Promise.all(Array.from({ length: 10 }, (_, i) => s.send(i)));
    expect(server.only().received).toEqual(Array.from({ length: 10 }, (_, i) => i));
    real = 0;
  });

  test.each(SEEDS)('exactly once, in order, under lost, duplicated, delayed and reordered requests (seed %i)', async (seed) => {
    server.limits.maxMessagesPerRequest = 7;
    server.limits.inboundWindow = 30;
    const random = rng(seed);
    const chaos = sessionChaosFetch(random, { before: 0.15, after: 0.15, duplicate: 0.15, maxDelayMs: 15 });
    const s = connect({ fetch: chaos.fetch, resendAfterMs: 50, maxInflight: 4 });
    await opened(s);
    const n = 300;
    const acked: number[] = [];
    const all: Promise<void>[] = [];
    for (let i = 1; i <= n; i++) {
      all.push(s.send(i).then(() => void acked.push(i)));
      if (random() < 0.1) await sleep(1);
    }
    await Promise.all(all);
    expect(server.only().received).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(acked).toEqual(Array.from({ length: n }, (_, i) => i + 1)); // resolved in seq order
    expect(s.bufferedAmount).toBe(0);
    expect(chaos.stats.before + chaos.stats.after + chaos.stats.duplicate).toBeGreaterThan(3); // faults were really injected
  });
});

describe('server → client', () => {
  /** Watches answered by `script`'s bodies in turn (then as the fake server would), their acks in `acks`; a session receiving into `got`. */
  async function scripted(script: unknown[], acks: string[] = []): Promise<{ s: BidiClientSession<any, any>; got: [unknown, number][] }> {
    server.hook = (req) => {
      if (req.kind !== 'watch') return undefined;
      acks.push(req.query.get('ack')!);
      const body = script.shift();
      return body ? { status: 200, body } : undefined;
    };
    const s = connect();
    const got: [unknown, number][] = [];
    s.on('message', (d, { seq }) => got.push([d, seq]));
    await opened(s);
    return { s, got };
  }

  test('out-of-order and duplicated watch responses are delivered in order, once', async () => {
    const acks: string[] = [];
    const { s, got } = await scripted(
      [
        { msgs: [[2, 'b'], [3, 'c']], ack: 0 },
        { msgs: [[3, 'c'], [2, 'b']], ack: 0 },
        { msgs: [[1, 'a'], [2, 'b']], ack: 0 },
        { msgs: [[1, 'a'], [3, 'c'], [5, 'e']], ack: 0 },
        { msgs: [[4, 'd'], [5, 'e'], [6, 'f']], ack: 0 },
      ],
      acks,
    );
    await waitFor(() => got.length === 6);
    expect(got).toEqual([['a', 1], ['b', 2], ['c', 3], ['d', 4], ['e', 5], ['f', 6]]);
    await waitFor(() => acks.length >= 6);
    expect(acks.slice(0, 6)).toEqual(['0', '0', '0', '3', '3', '6']);
    s.close();
  });

  test('in-order messages go straight to the app, and a gap inside a response is held until filled (in order, once)', async () => {
    const { s, got } = await scripted([
      { msgs: [[1, 'a'], [3, 'c'], [2, 'b'], [2, 'b']], ack: 0 },
      { msgs: [[4, 'd'], [5, 'e'], [4, 'd']], ack: 0 },
      { msgs: [[7, 'g'], [6, 'f'], [8, 'h']], ack: 0 },
    ]);
    await waitFor(() => got.length === 8);
    await sleep(30);
    expect(got).toEqual([['a', 1], ['b', 2], ['c', 3], ['d', 4], ['e', 5], ['f', 6], ['g', 7], ['h', 8]]);
    s.close();
  });

  test('a superseded response is ignored', async () => {
    let n = 0;
    server.hook = (req) => {
      if (req.kind !== 'watch') return undefined;
      n++;
      if (n === 1) return { status: 200, body: { msgs: [[1, 'ghost']], ack: 0, superseded: true } };
      if (n === 2) return { status: 200, body: { msgs: [[1, 'real']], ack: 0 } };
      return undefined;
    };
    const s = connect();
    const got: unknown[] = [];
    s.on('message', (d) => got.push(d));
    await opened(s);
    await waitFor(() => got.length === 1);
    await sleep(30);
    expect(got).toEqual(['real']);
  });

  test('exactly one watch pending at a time', async () => {
    server.wait = 50;
    let pending = 0;
    let maxPending = 0;
    const random = rng(7);
    const chaos = sessionChaosFetch(random, { before: 0.2, after: 0.2, duplicate: 0, maxDelayMs: 10 });
    const fetch: FetchLike = async (url, init) => {
      const isWatch = url.includes('/watch');
      if (isWatch) maxPending = Math.max(maxPending, ++pending);
      try {
        return await chaos.fetch(url, init);
      } finally {
        if (isWatch) pending--;
      }
    };
    const s = connect({ fetch });
    await opened(s);
    await sleep(500);
    expect(maxPending).toBe(1);
  });

  test.each(SEEDS)('exactly once, in order, under lost, delayed and duplicated watches (seed %i)', async (seed) => {
    server.wait = 100;
    const random = rng(seed);
    const chaos = sessionChaosFetch(random, { before: 0.2, after: 0.2, duplicate: 0.1, maxDelayMs: 10 });
    const s = connect({ fetch: chaos.fetch });
    const got: number[] = [];
    s.on('message', (d: number, { seq }) => {
      expect(seq).toBe(d);
      got.push(d);
    });
    await opened(s);
    const fs = server.only();
    const n = 300;
    for (let i = 1; i <= n; i++) {
      server.push(fs, i);
      if (random() < 0.2) await sleep(2);
    }
    await waitFor(() => got.length >= n, 15_000);
    await sleep(50);
    expect(got).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(chaos.stats.before + chaos.stats.after).toBeGreaterThan(0);
  });

  test('watch errors are retried; the watch resumes from the last delivered seq', async () => {
    let n = 0;
    server.hook = (req) => {
      if (req.kind !== 'watch') return undefined;
      n++;
      if (n === 2) return 'drop';
      if (n === 3) return { status: 502, body: {} };
      return undefined;
    };
    const s = connect();
    const got: unknown[] = [];
    const retries: RetryInfo[] = [];
    s.on('message', (d) => got.push(d));
    s.on('retry', (r) => retries.push(r));
    await opened(s);
    const fs = server.only();
    server.push(fs, 'x');
    await waitFor(() => got.length === 1);
    server.push(fs, 'y');
    await waitFor(() => got.length === 2);
    expect(got).toEqual(['x', 'y']);
    expect(retries.map((r) => [r.op, r.attempt])).toEqual([
      ['watch', 1],
      ['watch', 2],
    ]);
    await waitFor(() => server.log.filter((r) => r.kind === 'watch').length >= 5);
    const watches = server.log.filter((r) => r.kind === 'watch').map((r) => r.query.get('ack'));
    expect(watches.slice(0, 5)).toEqual(['0', '1', '1', '1', '2']);
  });
});

describe('endings', () => {
  test('server close: messages below the close seq first, then SERVER', async () => {
    const s = connect();
    const got: unknown[] = [];
    const order: string[] = [];
    s.on('message', (d) => {
      got.push(d);
      order.push(`m:${d}`);
    });
    s.on('close', (ev) => order.push(`close:${ev.code}`));
    await opened(s);
    const fs = server.only();
    const pending = s.send('unacked?');
    server.push(fs, 1);
    server.push(fs, 2);
    server.closeSession(fs, 'kicked by admin');
    const ev = await closed(s);
    expect(ev).toEqual({ code: 'SERVER', reason: 'kicked by admin' });
    expect(order).toEqual(['m:1', 'm:2', 'close:SERVER']);
    expect(s.state).toBe('closed');
    // The send either made it before the close, or is rejected with the close's code.
    const r = await pending.then(() => 'ok', (e) => e.code);
    expect(['ok', 'SERVER']).toContain(r);
  });

  test('close marker with a gap: waits for the missing messages', async () => {
    let n = 0;
    server.hook = (req) => {
      if (req.kind !== 'watch') return undefined;
      n++;
      if (n === 1) return { status: 200, body: { msgs: [[1, 'a'], [3, 'c']], ack: 0, close: { seq: 4, reason: 'bye' } } };
      if (n === 2) return { status: 200, body: { msgs: [[2, 'b'], [3, 'c']], ack: 0, close: { seq: 4, reason: 'bye' } } };
      return undefined;
    };
    const s = connect();
    const got: unknown[] = [];
    s.on('message', (d) => got.push(d));
    await opened(s);
    const ev = await closed(s);
    expect(got).toEqual(['a', 'b', 'c']);
    expect(ev.code).toBe('SERVER');
    expect(ev.reason).toBe('bye');
    expect(server.log.filter((r) => r.kind === 'watch').map((r) => r.query.get('ack'))).toEqual(['0', '1']);
  });

  test('close() while the server close is pending behind a gap: the server close wins, no DELETE', async () => {
    let n = 0;
    server.hook = async (req) => {
      if (req.kind !== 'watch') return undefined;
      n++;
      if (n === 1) return { status: 200, body: { msgs: [[2, 'b']], ack: 0, close: { seq: 3, reason: 'maintenance' } } };
      await sleep(100);
      return { status: 200, body: { msgs: [[1, 'a'], [2, 'b']], ack: 0, close: { seq: 3, reason: 'maintenance' } } };
    };
    const s = connect();
    const got: unknown[] = [];
    s.on('message', (d) => got.push(d));
    await opened(s);
    await waitFor(() => n === 2);
    await s.close();
    expect(got).toEqual(['a', 'b']);
    expect(s.closeEvent).toEqual({ code: 'SERVER', reason: 'maintenance' });
    expect(server.log.filter((r) => r.kind === 'close')).toHaveLength(0);
  });

  test("close reason 'expired' → EXPIRED", async () => {
    const s = connect();
    await opened(s);
    server.closeSession(server.only(), 'expired');
    const ev = await closed(s);
    expect(ev.code).toBe('EXPIRED');
  });

  test('404 UNKNOWN_SESSION on the watch → SESSION_LOST; pending sends reject with it', async () => {
    const s = connect();
    await opened(s);
    server.only().paused = true;
    const p = s.send('lost');
    await sleep(20);
    server.sessions.clear(); // the store "lost" it
    // wake the pending watch so that the client asks again
    server.hook = (req) =>
      req.kind === 'watch' ? { status: 404, body: { error: { code: 'UNKNOWN_SESSION', message: 'no such session' } } } : undefined;
    const ev = await closed(s);
    expect(ev.code).toBe('SESSION_LOST');
    expect(ev.reason).toMatch(/no longer knows this session/);
    expect(ev.status).toBe(404);
    const err = await p.catch((e) => e);
    expect(err).toBeInstanceOf(BidiClientError);
    expect(err.code).toBe('SESSION_LOST');
    expect(err.reason).toBe(ev.reason);
  });

  test('404 UNKNOWN_SESSION on a send → SESSION_LOST', async () => {
    const s = connect();
    await opened(s);
    server.sessions.clear();
    const err = await s.send('x').catch((e) => e);
    expect(err.code).toBe('SESSION_LOST');
    expect(s.closeEvent?.code).toBe('SESSION_LOST');
  });

  test('410 on a send, server closed with a marker: the watch finishes the session (SERVER)', async () => {
    server.wait = 5000;
    const s = connect();
    const got: unknown[] = [];
    s.on('message', (d) => got.push(d));
    await opened(s);
    const fs = server.only();
    // The close is recorded, but the pending watch is not woken (a slow notification).
    fs.out.push([1, 'last words']);
    fs.nextOut = 2;
    fs.close = { seq: 2, reason: 'done' };
    const err = await s.send('too late').catch((e) => e);
    expect(err.code).toBe('SERVER');
    expect(got).toEqual(['last words']);
    expect(s.closeEvent).toEqual({ code: 'SERVER', reason: 'done' });
  });

  test('410 on a send without any close marker → SESSION_CLOSED', async () => {
    server.hook = (req) => (req.kind === 'send' ? { status: 410, body: { error: { code: 'SESSION_CLOSED', message: 'closed' } } } : undefined);
    const s = connect();
    await opened(s);
    const err = await s.send('x').catch((e) => e);
    expect(err.code).toBe('SESSION_CLOSED');
    expect(s.closeEvent).toMatchObject({ code: 'SESSION_CLOSED', status: 410 });
    // the probe watch asked with wait=0
    expect(server.log.filter((r) => r.kind === 'watch').at(-1)!.query.get('wait')).toBe('0');
  });

  test('open refused with a 4xx → REJECTED with status and message; queued sends reject', async () => {
    server.hook = (req) =>
      req.kind === 'open' ? { status: 403, body: { error: { code: 'REJECTED', message: 'bad token' } } } : undefined;
    const s = connect();
    const p = s.send('queued');
    const ev = await closed(s);
    expect(ev).toEqual({ code: 'REJECTED', reason: 'bad token', status: 403, errorCode: 'REJECTED' });
    await expect(p).rejects.toMatchObject({ code: 'REJECTED', status: 403 });
    expect(s.id).toBeUndefined();
  });

  test('open retried on 500, 429 and network errors', async () => {
    let n = 0;
    server.hook = (req) => {
      if (req.kind !== 'open') return undefined;
      n++;
      if (n === 1) return { status: 500, body: {} };
      if (n === 2) return 'drop';
      if (n === 3) return { status: 429, body: { error: { code: 'TOO_MANY_SESSIONS', message: 'full' } }, headers: { 'Retry-After': '0' } };
      if (n === 4) return { status: 200, body: { nope: true } }; // 2xx without a sid
      return undefined;
    };
    const s = connect();
    const retries: RetryInfo[] = [];
    s.on('retry', (r) => retries.push(r));
    await opened(s);
    expect(retries.map((r) => [r.op, r.attempt, r.error.code])).toEqual([
      ['open', 1, 'HTTP_ERROR'],
      ['open', 2, 'NETWORK_ERROR'],
      ['open', 3, 'HTTP_ERROR'],
      ['open', 4, 'BAD_RESPONSE'],
    ]);
  });

  test('other 4xx → PROTOCOL_ERROR with status, code and message', async () => {
    server.hook = (req) =>
      req.kind === 'send' ? { status: 401, body: { error: { code: 'UNAUTHORIZED', message: 'token expired' } } } : undefined;
    const s = connect();
    await opened(s);
    const err = await s.send('x').catch((e) => e);
    expect(err.code).toBe('PROTOCOL_ERROR');
    expect(s.closeEvent).toMatchObject({ code: 'PROTOCOL_ERROR', status: 401, errorCode: 'UNAUTHORIZED' });
    expect(s.closeEvent!.reason).toMatch(/401.*UNAUTHORIZED.*token expired/);
  });

  test('the close event fires exactly once', async () => {
    const s = connect();
    const events: CloseEvent[] = [];
    s.on('close', (e) => events.push(e));
    await opened(s);
    server.closeSession(server.only(), 'one');
    await waitFor(() => events.length > 0);
    await s.close();
    await s.close();
    await sleep(20);
    expect(events).toHaveLength(1);
  });
});

describe('close()', () => {
  test('waits for unacked sends, then DELETE', async () => {
    const s = connect({ resendAfterMs: 20 });
    await opened(s);
    const fs = server.only();
    fs.paused = true;
    const p = s.send('must arrive');
    await sleep(30);
    const closing = s.close();
    setTimeout(() => server.resume(fs), 100);
    await closing;
    await expect(p).resolves.toBeUndefined();
    expect(fs.received).toEqual(['must arrive']);
    const kinds = server.log.map((r) => r.kind);
    expect(kinds.lastIndexOf('close')).toBeGreaterThan(kinds.indexOf('send'));
    expect(s.closeEvent).toEqual({ code: 'CLIENT', reason: 'closed by the client' });
  });

  test('bounded by closeTimeoutMs: unacked sends are rejected', async () => {
    const s = connect({ closeTimeoutMs: 150, resendAfterMs: 20 });
    await opened(s);
    server.only().paused = true;
    const p = s.send('never acked');
    const t0 = Date.now();
    await s.close();
    expect(Date.now() - t0).toBeLessThan(1500);
    await expect(p).rejects.toMatchObject({ code: 'CLIENT' });
    expect(s.closeEvent!.reason).toMatch(/1 unacked message/);
    expect(server.log.filter((r) => r.kind === 'close')).toHaveLength(1);
  });

  test('while connecting with nothing queued: abandons the open at once', async () => {
    server.hook = (req) => (req.kind === 'open' ? { status: 503, body: {} } : undefined);
    const s = connect({ retry: { initialDelayMs: 10_000, maxDelayMs: 10_000 } });
    await waitFor(() => server.log.length > 0);
    await s.close();
    expect(s.closeEvent?.code).toBe('CLIENT');
    expect(server.log.filter((r) => r.kind === 'close')).toHaveLength(0);
  });

  test('while connecting with queued messages: opens, delivers them, then closes', async () => {
    const s = connect();
    let openEvents = 0;
    s.on('open', () => openEvents++);
    const p = s.send('hello');
    await s.close();
    await expect(p).resolves.toBeUndefined();
    expect(server.only().received).toEqual(['hello']);
    expect(openEvents).toBe(0);
    expect(s.closeEvent?.code).toBe('CLIENT');
  });

  test('a DELETE that fails is retried within the deadline', async () => {
    let n = 0;
    server.hook = (req) => (req.kind === 'close' && n++ === 0 ? 'drop' : undefined);
    const s = connect();
    await opened(s);
    await s.close();
    expect(server.log.filter((r) => r.kind === 'close')).toHaveLength(2);
    expect(server.only().close?.reason).toBe('client');
  });
});

describe('resources', () => {
  test('Node exits on its own after close(), also while requests were in backoff', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'bidiweb-client-'));
    try {
      const file = path.join(dir, 'exit.ts');
      const entry = path.resolve(__dirname, '../../src/client/index.ts');
      writeFileSync(
        file,
        `import { open } from ${JSON.stringify(entry)};
        (async () => {
          const s = open(process.argv[2], { retry: { initialDelayMs: 5, maxDelayMs: 20 } });
          await new Promise((r) => s.once('open', r));
          await s.send('hi');
          s.send('unacked-at-exit').catch(() => {});
          const dead = open('http://127.0.0.1:1/session', { retry: { initialDelayMs: 60000, maxDelayMs: 60000 } });
          await new Promise((r) => dead.once('retry', r));
          await Promise.all([s.close(), dead.close()]);
          console.log('closed ' + s.state + ' ' + dead.state + ' ' + dead.retrying);
        })();`,
      );
      const tsx = path.resolve(__dirname, '../../node_modules/.bin/tsx');
      const child = spawn(tsx, [file, server.base], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let closedAt = 0;
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (!closedAt && out.includes('closed')) closedAt = Date.now();
      });
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      expect(out.trim()).toBe('closed closed closed false');
      expect(code).toBe(0);
      expect(Date.now() - closedAt).toBeLessThan(1500);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
