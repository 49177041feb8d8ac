/**
 * Fuzzing the HTTP surface: generated requests — malformed JSON, wrong
 * types, huge / negative / non-integer seqs, acks beyond what was sent,
 * unknown and malformed sids, wrong methods, paths and content types,
 * oversized, truncated and slow bodies, cross-origin requests — against a
 * live Express server whose other sessions carry real traffic (the real
 * client, both ways) the whole time.
 *
 * Checked: the process survives; no 5xx; every error is a documented 4xx
 * with a `{ error: { code, message } }` body whose code matches its status
 * (docs/PROTOCOL.md, "Errors"); a 4xx changes nothing (checked on a quiet
 * session of the fuzzer's own, request by request); the real sessions see
 * exactly their sequences; the heap after the run (once the fuzzer's
 * sessions expired, after gc) is about what it was before.
 *
 * Used by test/fuzz/http-fuzz.ts (`npm run fuzz`) and test/fuzz/http-fuzz.test.ts.
 */
import express from 'express';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import { open, type BidiClientSession, type CloseEvent } from '../../src/client';
import { MemoryStore } from '../../src/core';
import { bidiWeb } from '../../src/express';
import { rng } from '../helpers/faulty-fetch';

export interface FuzzOptions {
  seed: number;
  requests: number;
  concurrency: number;
  /** Real sessions carrying traffic during the run. */
  trafficSessions: number;
  /** Messages each way per real session. */
  trafficMessages: number;
  /** Requests checked one by one against a quiet session ("a 4xx changes nothing"). */
  sequentialChecks: number;
  /** The server's idle timeout (the fuzzer's sessions must expire before the heap is measured again). Default 10 000. */
  idleTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface FuzzReport {
  seed: number;
  requests: number;
  durationMs: number;
  /** "status CODE" → count; also "no response (…)" and "node: …" (answered by Node's HTTP parser, not bidiweb). */
  histogram: Record<string, number>;
  /** By generator. */
  kinds: Record<string, number>;
  /** Failures grouped: signature → count and the first example. */
  failures: Array<{ signature: string; kind: string; count: number; example: string }>;
  traffic: { sessions: number; c2s: number; s2c: number; ok: boolean; problems: string[] };
  heap: { beforeBytes: number; afterBytes: number; deltaBytes: number; sessionsBefore: number; sessionsAfter: number };
  ok: boolean;
}

/** docs/PROTOCOL.md, "Errors": the codes each status may carry. */
export const DOCUMENTED: Record<number, string[]> = {
  400: ['BAD_REQUEST', 'UNSUPPORTED_VERSION', 'INVALID_ACK', 'MISSING_SESSION_ID'],
  401: ['UNAUTHORIZED', 'REJECTED'],
  403: ['FORBIDDEN', 'CORS_FORBIDDEN', 'REJECTED'],
  404: ['UNKNOWN_SESSION', 'NOT_FOUND'],
  405: ['METHOD_NOT_ALLOWED'],
  410: ['SESSION_CLOSED'],
  413: ['BODY_TOO_LARGE', 'MESSAGE_TOO_LARGE', 'TOO_MANY_MESSAGES'],
  415: ['UNSUPPORTED_MEDIA_TYPE'],
  429: ['SEQ_OUT_OF_WINDOW', 'TOO_MANY_SESSIONS', 'TOO_MANY_OPENS'],
};

/** A gc() even without --expose-gc. */
export function gcFunction(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) return g;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

async function heapAfterGc(): Promise<number> {
  const gc = gcFunction();
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  return process.memoryUsage().heapUsed;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Req {
  kind: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string | Buffer;
  /** Raw-socket delivery: 'truncate' sends part of the body then closes; 'slow' drips it; 'garbage' is not HTTP. */
  raw?: 'truncate' | 'slow' | 'garbage' | 'badchunk';
  /** The sid this request targets, if one of the fuzzer's own. */
  own?: string;
}

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

export async function runFuzz(o: FuzzOptions): Promise<FuzzReport> {
  const log = o.log ?? ((l: string) => console.log(l));
  const random = rng(o.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  const chance = (p: number) => random() < p;

  // --- the server -----------------------------------------------------------------------------------
  const store = new MemoryStore({ tombstoneMs: 100 });
  const traffic = new Map<string, { got: number[]; sent: number }>();
  const hookErrors: string[] = [];
  const idle = o.idleTimeoutMs ?? 10_000;
  const mw = bidiWeb({
    store,
    wait: Math.min(2000, Math.floor(idle / 3)),
    maxWait: Math.floor(idle / 2),
    idleTimeout: idle,
    sweepInterval: 500,
    onError: (err, ctx) => {
      hookErrors.push(`${ctx.phase}: ${String(err)}`);
    },
    async onMessage(session, data) {
      const t = traffic.get(session.id);
      if (!t) return;
      t.got.push((data as { i: number }).i);
      // The answer to each client message is a server message (server → client traffic).
      t.sent++;
      await session.send({ i: t.sent });
    },
  });
  const app = express();
  app.use(mw);
  const server = http.createServer(app);
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  const base = `http://127.0.0.1:${port}/session`;
  const limits = mw.server.limits;
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.concurrency });

  const histogram: Record<string, number> = {};
  const kinds: Record<string, number> = {};
  const failures: FuzzReport['failures'] = [];
  const count = (key: string) => (histogram[key] = (histogram[key] ?? 0) + 1);
  const fail = (signature: string, kind: string, example: string) => {
    const known = failures.find((f) => f.signature === signature && f.kind === kind);
    if (known) known.count++;
    else failures.push({ signature, kind, count: 1, example: example.slice(0, 600) });
  };
  const started = Date.now();

  try {
    // --- real sessions with traffic -----------------------------------------------------------------
    const clients: Array<{ s: BidiClientSession; got: number[]; close?: CloseEvent; acked: number; rejected: number }> = [];
    for (let k = 0; k < o.trafficSessions; k++) {
      const s = open(base, { retry: { initialDelayMs: 20, maxDelayMs: 500 }, resendAfterMs: 500 });
      const c = { s, got: [] as number[], close: undefined as CloseEvent | undefined, acked: 0, rejected: 0 };
      s.on('message', (d: unknown) => void c.got.push((d as { i: number }).i));
      s.on('close', (ev: CloseEvent) => (c.close = ev));
      s.on('error', () => {});
      clients.push(c);
    }
    await Promise.all(clients.map((c) => new Promise<void>((r) => (c.s.state === 'open' ? r() : c.s.on('open', () => r())))));
    for (const c of clients) traffic.set(c.s.id!, { got: [], sent: 0 });

    // --- the fuzzer's own sessions ------------------------------------------------------------------------
    const own: string[] = [];
    const ownLastSeq = new Map<string, number>();
    const openOwn = async () => {
      const r = await send({ kind: 'setup', method: 'POST', path: '/session', headers: { 'content-type': 'application/json' }, body: '{"v":1}' });
      if (r && r.status === 201) own.push(JSON.parse(r.body).sid);
    };

    // --- request generators ---------------------------------------------------------------------------------
    const randomSid = () => Array.from({ length: 22 }, () => BASE64URL[int(0, 63)]).join('');
    const badSid = () =>
      pick([
        '',
        'x',
        randomSid().slice(0, 21),
        randomSid() + 'A',
        randomSid().replace(/^./, '!'),
        randomSid().replace(/^./, '='),
        ' ' + randomSid(),
        randomSid().slice(0, 11) + '/' + randomSid().slice(0, 10),
        'a'.repeat(4000),
        '../../etc/passwd',
        '%00%00',
        'null',
        '0',
      ]);
    const sidHeader = (): { headers: Record<string, string>; own?: string } => {
      const r = random();
      if (r < 0.45 && own.length) {
        const sid = pick(own);
        return { headers: { 'bidi-sid': sid }, own: sid };
      }
      if (r < 0.7) return { headers: { 'bidi-sid': randomSid() } };
      if (r < 0.92) return { headers: { 'bidi-sid': badSid() } };
      return { headers: {} };
    };
    const weirdNumber = () =>
      pick<unknown>([-1, 0, 1, 2, 3, 1.5, -0.5, 2 ** 53, 2 ** 53 + 2, 1e308, -1e308, '1', '01', 'abc', null, true, [], {}, 1e-7, 255, 256, 257, 10_000, int(1, 50)]);
    const weirdData = (): unknown =>
      pick<unknown>([
        null,
        0,
        'text',
        { a: 1 },
        [1, 2, 3],
        'é✓🙂',
        '\u0000\ud800',
        { nested: { deeper: [{ x: 'y' }] } },
        'x'.repeat(int(0, 2000)),
      ]);
    const deep = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
    const contentType = () =>
      pick([
        'application/json',
        'application/json',
        'application/json; charset=utf-8',
        'APPLICATION/JSON',
        'application/json;charset=utf-16',
        'text/plain',
        'text/plain;charset=UTF-8',
        'application/x-www-form-urlencoded',
        'multipart/form-data; boundary=x',
        'application/json-patch+json',
        'application/jsonx',
        '',
        'json',
      ]);
    /** A send body; the tag names generators worth telling apart in the report. */
    const sendBody = (sid?: string): [string, string] => {
      const b = sendBodyText(sid);
      return typeof b === 'string' ? [b, ''] : b;
    };
    const sendBodyText = (sid?: string): string | [string, string] => {
      const r = random();
      const seqBase = sid ? (ownLastSeq.get(sid) ?? 0) : 0;
      if (r < 0.25) {
        // plausible, maybe valid
        const n = int(0, 5);
        const start = int(1, seqBase + 3);
        const msgs = Array.from({ length: n }, (_, i) => [start + i, weirdData()]);
        if (sid) ownLastSeq.set(sid, Math.max(seqBase, start + n - 1));
        return JSON.stringify(chance(0.5) ? { msgs } : { msgs, ack: int(0, 3) });
      }
      if (r < 0.45) return JSON.stringify({ msgs: Array.from({ length: int(1, 4) }, () => [weirdNumber(), weirdData()]), ack: chance(0.5) ? weirdNumber() : undefined });
      if (r < 0.55) return JSON.stringify({ msgs: weirdNumber() });
      if (r < 0.62) return JSON.stringify({ msgs: [pick<unknown>([[1], [1, 2, 3], 'x', 5, null, {}, [[1, 2]]])] });
      if (r < 0.68) return JSON.stringify({ msgs: [[int(300, 100_000), 1]] }); // beyond the window
      if (r < 0.72) return JSON.stringify({ msgs: Array.from({ length: limits.maxMessagesPerRequest + int(1, 20) }, (_, i) => [i + 1, i]) });
      if (r < 0.75) return JSON.stringify({ msgs: [[1, 'x'.repeat(limits.maxMessageBytes + int(1, 100))]] });
      if (r < 0.78) return [`{"msgs":[[1,${deep(int(2_000, 60_000))}]]}`, 'deep'];
      if (r < 0.82) return JSON.stringify({ ack: pick<unknown>([10_000, 2 ** 40, -5, 1.5, 'x', 999_999_999_999_999]) }); // acks beyond what was sent
      if (r < 0.86) return pick(['', '{', '{"msgs":', '[]', 'null', '"str"', '42', 'true', '{"msgs":[[1,2]]', '\u0000', '{"msgs":[[1,2]],}', "{'msgs':[]}", '{"__proto__":{"x":1},"msgs":[]}']);
      if (r < 0.9) return JSON.stringify({ msgs: [[1, 1], [1, 2], [2, 3], [2, 4]], extra: 'field' });
      if (r < 0.93) return '\ufeff{"msgs":[]}';
      return JSON.stringify({ msgs: [[int(1, 5), weirdData()]], ack: 0 }) + ' '.repeat(int(0, 10));
    };
    const openBody = () =>
      pick([
        '{"v":1}',
        '{"v":1,"meta":{"name":"x"}}',
        '{"v":2}',
        '{"v":"1"}',
        '{}',
        '{"v":1,"meta":' + deep(int(1_000, 30_000)) + '}',
        '[]',
        'null',
        '',
        '{"v":1',
        '{"v":1.0}',
        '{"v":1,"meta":"' + 'm'.repeat(int(0, 5000)) + '"}',
      ]);
    /** Bytes that are not UTF-8: a bad continuation, an overlong form, a CESU surrogate half, 0xff. */
    const badUtf8 = () => Buffer.from(pick([[0xc3, 0x28], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xff], [0xe2, 0x82], [0xf8, 0x88, 0x80, 0x80, 0x80]]));
    /**
     * Issue 13, findings 4–7: invalid UTF-8, nesting just past maxJsonDepth (and brackets in
     * strings, which do not nest), and a DNS-rebinding origin (Origin and Host both its own name).
     */
    const hostile = (): Req => {
      const { headers, own: sid } = sidHeader();
      const json = { ...headers, 'content-type': 'application/json' };
      const depth = limits.maxJsonDepth + pick([-1, 0, 1, 2, 50]);
      switch (int(0, 5)) {
        case 0:
          return { kind: 'hostile-utf8', method: 'POST', path: '/session', headers: json, body: Buffer.concat([Buffer.from('{"v":1,"meta":"'), badUtf8(), Buffer.from('"}')]) };
        case 1:
          return { kind: 'hostile-utf8', method: 'POST', path: '/session/send', headers: json, body: Buffer.concat([Buffer.from('{"msgs":[[1,"'), badUtf8(), Buffer.from('"]]}')]), own: sid };
        case 2:
          return { kind: 'hostile-depth', method: 'POST', path: '/session', headers: json, body: '{"v":1,"meta":' + deep(depth) + '}' };
        case 3:
          return { kind: 'hostile-depth', method: 'POST', path: '/session/send', headers: json, body: `{"msgs":[[${int(1, 3)},${deep(depth)}]]}`, own: sid };
        case 4:
          return { kind: 'hostile-depth', method: 'POST', path: '/session/send', headers: json, body: JSON.stringify({ msgs: [[int(1, 3), '[{'.repeat(int(100, 5000))]] }), own: sid };
        default: {
          const evil = `evil.example:${port}`;
          const method = pick(['POST', 'GET', 'DELETE']);
          const path = method === 'GET' ? '/session/watch?ack=0&wait=0' : pick(['/session', '/session/send']);
          const browser: Record<string, string> = method === 'GET' && chance(0.5) ? { 'sec-fetch-site': 'same-origin' } : { origin: `http://${evil}` };
          return { kind: 'hostile-rebinding', method, path, headers: { ...json, host: evil, ...browser }, body: method === 'GET' ? undefined : '{"v":1,"msgs":[]}' };
        }
      }
    };
    const watchQuery = () => {
      const ack = pick<string | null>(['0', '1', '-1', '1.5', 'abc', '', '999999999999999', '9999999999999999', '1e3', '0x10', ' 1', null, '00', '5']);
      const wait = pick<string | null>([null, '0', '0', '1', '-5', 'x', '60000', '99999999999999999', '10']);
      const parts: string[] = [];
      if (ack !== null) parts.push(`ack=${encodeURIComponent(ack)}`);
      if (wait !== null) parts.push(`wait=${encodeURIComponent(wait)}`);
      if (chance(0.05)) parts.push('ack=2');
      if (chance(0.03)) parts.push('x=' + 'y'.repeat(int(1, 3000)));
      return parts.length ? '?' + parts.join('&') : '';
    };

    const generate = (): Req => {
      const r = random();
      if (r < 0.12) {
        const body = openBody();
        return { kind: 'open', method: 'POST', path: '/session', headers: { 'content-type': chance(0.85) ? 'application/json' : contentType() }, body };
      }
      if (r < 0.45) {
        const { headers, own: sid } = sidHeader();
        const [body, tag] = sendBody(sid);
        return { kind: tag ? `send-${tag}` : 'send', method: 'POST', path: '/session/send', headers: { ...headers, 'content-type': chance(0.8) ? 'application/json' : contentType() }, body, own: sid };
      }
      if (r < 0.65) {
        const { headers, own: sid } = sidHeader();
        return { kind: 'watch', method: 'GET', path: '/session/watch' + watchQuery(), headers, own: sid };
      }
      if (r < 0.7) {
        const { headers, own: sid } = sidHeader();
        // Deleting the fuzzer's own sessions now and then; new ones get opened.
        return { kind: 'close', method: 'DELETE', path: '/session', headers: { ...headers, ...(chance(0.3) ? { 'content-type': contentType() } : {}) }, body: chance(0.3) ? '{"reason":"x"}' : undefined, own: sid };
      }
      if (r < 0.78) {
        const method = pick(['PUT', 'PATCH', 'GET', 'HEAD', 'OPTIONS', 'TRACE', 'DELETE', 'POST', 'PROPFIND']);
        const path = pick(['/session', '/session/', '/session/send', '/session/watch', '/session/unknown', '/session/send/x', '/session//send', '/session/%73end', '/session/./send', '/session/../session/send', '/session/send%00', '/session/' + 'z'.repeat(int(1, 2000)), '/session?x=1', '/session/watch/']);
        const { headers } = sidHeader();
        return { kind: 'method-path', method, path, headers: { ...headers, ...(chance(0.5) ? { 'content-type': 'application/json' } : {}) }, body: method === 'GET' || method === 'HEAD' ? undefined : chance(0.5) ? '{"v":1}' : undefined };
      }
      if (r < 0.83) {
        // oversized bodies, declared or real
        const big = chance(0.5);
        const size = big ? limits.maxBodyBytes + int(1, 64 * 1024) : int(1, 1000);
        const body = Buffer.alloc(size, chance(0.5) ? '[' : ' ');
        const { headers } = sidHeader();
        return { kind: 'oversized', method: 'POST', path: pick(['/session', '/session/send']), headers: { ...headers, 'content-type': 'application/json' }, body };
      }
      if (r < 0.87) {
        const { headers } = sidHeader();
        return { kind: 'cross-origin', method: pick(['POST', 'OPTIONS', 'GET', 'DELETE']), path: pick(['/session', '/session/send', '/session/watch?ack=0&wait=0']), headers: { ...headers, origin: pick(['https://evil.example', 'null', 'http://127.0.0.1:1', 'file://', 'garbage']), 'content-type': 'application/json', ...(chance(0.5) ? { 'access-control-request-method': 'POST' } : {}) }, body: '{"v":1}' };
      }
      if (r < 0.9) {
        const { headers } = sidHeader();
        return { kind: 'headers', method: 'POST', path: '/session/send', headers: { ...headers, 'content-type': 'application/json', 'x-junk': 'j'.repeat(int(1, 8000)), 'content-length-x': '5' }, body: '{"msgs":[]}' };
      }
      if (r < 0.93) return hostile();
      const { headers, own: sid } = sidHeader();
      const raw = pick<Req['raw']>(['truncate', 'truncate', 'slow', 'garbage', 'badchunk']);
      let [body] = sendBody(sid);
      // A slow body drips 16 bytes at a time: keep it small enough to finish within seconds.
      while (raw === 'slow' && body.length > 1024) [body] = sendBody(sid);
      return { kind: `raw-${raw}`, method: 'POST', path: pick(['/session', '/session/send']), headers: { ...headers, 'content-type': 'application/json' }, body, raw, own: sid };
    };

    // --- transport ------------------------------------------------------------------------------------------------
    function send(req: Req): Promise<Res | null> {
      if (req.raw) return sendRaw(req);
      return new Promise((resolve) => {
        const body = req.body === undefined ? undefined : Buffer.isBuffer(req.body) ? req.body : Buffer.from(req.body);
        const out = http.request(
          { host: '127.0.0.1', port, method: req.method, path: req.path, agent, headers: { ...req.headers, ...(body ? { 'content-length': String(body.length) } : {}) } },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
            res.on('error', () => resolve(null));
          },
        );
        const timer = setTimeout(() => out.destroy(new Error('no answer within 30 s')), 30_000);
        out.on('close', () => clearTimeout(timer));
        out.on('error', () => resolve(null));
        out.end(body);
      });
    }

    function sendRaw(req: Req): Promise<Res | null> {
      return new Promise((resolve) => {
        const socket = net.connect(port, '127.0.0.1');
        const body = Buffer.from(typeof req.body === 'string' ? req.body : '');
        let data = '';
        let done = false;
        const finish = () => {
          if (done) return;
          done = true;
          socket.destroy();
          const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
          if (!m) return resolve(null);
          const split = data.indexOf('\r\n\r\n');
          const headerLines = data.slice(0, split).split('\r\n').slice(1);
          const headers: http.IncomingHttpHeaders = {};
          for (const line of headerLines) {
            const i = line.indexOf(':');
            headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
          }
          resolve({ status: Number(m[1]), headers, body: split >= 0 ? data.slice(split + 4) : '' });
        };
        socket.setTimeout(5_000, finish);
        const cap = setTimeout(finish, 10_000);
        socket.on('close', () => clearTimeout(cap));
        socket.on('data', (c) => {
          data += c.toString('utf8');
          const split = data.indexOf('\r\n\r\n');
          const len = /content-length: *(\d+)/i.exec(data);
          if (split >= 0 && len && Buffer.byteLength(data.slice(split + 4)) >= Number(len[1])) finish();
        });
        socket.on('error', finish);
        socket.on('close', finish);
        const head = (extra: string) => `${req.method} ${req.path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n${Object.entries(req.headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}${extra}\r\n`;
        socket.on('connect', async () => {
          try {
            if (req.raw === 'garbage') {
              socket.write(pick(['GARBAGE\r\n\r\n', 'POST /session HTTP/1.1\r\nContent-Length: -1\r\n\r\n', 'POST /session/send HTTP/9.9\r\n\r\n', '\u0000\u0001\u0002\r\n\r\n', `POST /session HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`]));
              return;
            }
            if (req.raw === 'badchunk') {
              socket.write(head('Transfer-Encoding: chunked\r\n') + 'zz\r\n{"v"\r\n0\r\n\r\n');
              return;
            }
            if (req.raw === 'truncate') {
              // Declares more than it sends, then goes away (or just half-closes).
              socket.write(head(`Content-Length: ${body.length + int(1, 500)}\r\n`) + body.subarray(0, Math.floor(body.length / 2)).toString('latin1'));
              await sleep(int(0, 30));
              if (chance(0.5)) socket.end();
              else socket.destroy();
              return;
            }
            // slow: the body arrives in small pieces over a few hundred ms
            socket.write(head(`Content-Length: ${body.length}\r\n`));
            for (let i = 0; i < body.length; i += 16) {
              await sleep(int(5, 40));
              if (socket.destroyed) return;
              socket.write(body.subarray(i, i + 16));
            }
          } catch {
            finish();
          }
        });
      });
    }

    // --- checks -----------------------------------------------------------------------------------------------------
    const describeReq = (req: Req) => `${req.kind}: ${req.method} ${req.path.slice(0, 80)} ${JSON.stringify(req.headers).slice(0, 120)} ${String(req.body ?? '').slice(0, 120)}`;
    const check = (req: Req, res: Res | null) => {
      kinds[req.kind] = (kinds[req.kind] ?? 0) + 1;
      if (!res) {
        count(req.raw ? `no response (${req.raw}: the client went away)` : 'no response');
        if (!req.raw) fail('no response', req.kind, describeReq(req));
        return;
      }
      const type = String(res.headers['content-type'] ?? '');
      if (req.raw && !type.includes('json')) {
        count(`node: ${res.status} (the HTTP parser refused it)`);
        return;
      }
      if (req.method === 'HEAD') {
        // No body by definition: the status alone is checked.
        count(`${res.status} (HEAD)`);
        if (res.status >= 500 || (res.status >= 400 && !DOCUMENTED[res.status])) fail(`HEAD answered ${res.status}`, req.kind, describeReq(req));
        return;
      }
      if (res.status >= 500) {
        count(`${res.status}`);
        fail(`${res.status} ${res.body.slice(0, 120)}`, req.kind, describeReq(req));
        return;
      }
      if (res.status < 400) {
        count(String(res.status));
        if (req.kind === 'open' && res.status === 201) {
          const sid = JSON.parse(res.body).sid;
          own.push(sid);
          if (own.length > 64) own.shift();
        }
        return;
      }
      let code = '';
      try {
        const body = JSON.parse(res.body);
        code = body?.error?.code;
        if (typeof code !== 'string' || typeof body.error.message !== 'string') throw new Error('shape');
      } catch {
        count(`${res.status} (no JSON error body)`);
        fail(`${res.status} without a JSON error body (${type})`, req.kind, `${res.body.slice(0, 100)} for ${describeReq(req)}`);
        return;
      }
      count(`${res.status} ${code}`);
      if (!DOCUMENTED[res.status]?.includes(code)) fail(`undocumented ${res.status} ${code}`, req.kind, describeReq(req));
      if (res.status === 429 && !res.headers['retry-after']) fail('429 without Retry-After', req.kind, describeReq(req));
    };

    // --- traffic runs alongside -----------------------------------------------------------------------------------
    let fuzzing = true;
    const trafficDone = Promise.all(
      clients.map(async (c, k) => {
        const rand = rng(o.seed * 31 + k);
        for (let i = 1; i <= o.trafficMessages; i++) {
          c.s.send({ i }).then(
            () => void c.acked++,
            () => void c.rejected++,
          );
          // Spread over the run: a few messages, then a pause.
          if (i % 5 === 0) await sleep(Math.floor(rand() * 60));
          while (c.s.bufferedAmount > 4096 && !c.close) await sleep(10);
          if (!fuzzing && i % 50 === 0) await sleep(0);
        }
      }),
    );

    // --- warm-up, heap baseline ----------------------------------------------------------------------------------------
    for (let i = 0; i < 8; i++) await openOwn();
    const warm = Math.min(2000, Math.floor(o.requests / 10));
    await pool(warm, () => generate(), send, check, o.concurrency);
    const idleWaitMs = idle + 2_000;
    log(`fuzz: warm-up ${warm} requests; waiting ${idleWaitMs / 1000} s for the fuzzer's sessions to expire, then measuring the heap`);
    await sleep(idleWaitMs);
    const sessionsBefore = store.size;
    const beforeBytes = await heapAfterGc();
    for (const k of Object.keys(histogram)) delete histogram[k];
    for (const k of Object.keys(kinds)) delete kinds[k];
    failures.length = 0;
    hookErrors.length = 0;
    own.length = 0;
    for (let i = 0; i < 8; i++) await openOwn();

    // --- "a 4xx changes nothing": one by one against a quiet session ------------------------------------------------------
    const quiet = own[0]!;
    const peek = (sid: string): string => {
      const rec = (store as unknown as { sessions?: Map<string, Record<string, unknown>> }).sessions?.get(sid);
      if (!rec) return 'gone';
      return JSON.stringify(rec, (_k, v) => (v instanceof Map ? [...v] : v instanceof Set ? [...v] : v));
    };
    let sequential4xx = 0;
    for (let i = 0; i < o.sequentialChecks; i++) {
      let req = generate();
      // Not the requests that may legitimately change it (opens make other sessions).
      while (req.raw || req.kind === 'close' || req.kind === 'open' || req.method === 'DELETE') req = generate();
      if (req.headers['bidi-sid'] !== undefined || chance(0.5)) req = { ...req, headers: { ...req.headers, 'bidi-sid': quiet }, own: quiet };
      const before = peek(quiet);
      const res = await send(req);
      check(req, res);
      if (res && res.status >= 400 && res.status < 500) {
        sequential4xx++;
        const after = peek(quiet);
        if (after !== before) fail(`a ${res.status} changed the session`, req.kind, `${res.body.slice(0, 80)}: ${describeReq(req)}\n  before ${before.slice(0, 300)}\n  after  ${after.slice(0, 300)}`);
      }
    }
    log(`fuzz: ${o.sequentialChecks} requests one by one against a quiet session: ${sequential4xx} answered 4xx, each left it unchanged`);

    // --- the run ---------------------------------------------------------------------------------------------------------
    const t0 = Date.now();
    let last = t0;
    await pool(
      o.requests,
      () => generate(),
      send,
      (req, res) => {
        check(req, res);
        if (Date.now() - last > 5_000) {
          last = Date.now();
          const done = Object.values(kinds).reduce((a, b) => a + b, 0);
          log(`fuzz: ${done}/${o.requests + o.sequentialChecks} requests, ${failures.reduce((n, f) => n + f.count, 0)} failures, ${((done / (Date.now() - t0)) * 1000).toFixed(0)} req/s, store ${store.size} sessions`);
        }
      },
      o.concurrency,
    );
    fuzzing = false;
    const fuzzMs = Date.now() - t0;
    log(`fuzz: ${o.requests} requests in ${(fuzzMs / 1000).toFixed(1)} s; finishing the real sessions' traffic`);

    // --- the real sessions ---------------------------------------------------------------------------------------------------
    await trafficDone;
    const deadline = Date.now() + 60_000;
    const complete = () => clients.every((c) => c.close || (c.acked + c.rejected >= o.trafficMessages && c.got.length >= o.trafficMessages));
    while (!complete() && Date.now() < deadline) await sleep(50);
    const problems: string[] = [];
    let c2s = 0;
    let s2c = 0;
    const want = Array.from({ length: o.trafficMessages }, (_, i) => i + 1);
    for (const [k, c] of clients.entries()) {
      const t = traffic.get(c.s.id!)!;
      c2s += t.got.length;
      s2c += c.got.length;
      if (c.close) problems.push(`session ${k} ended: ${c.close.code} ${c.close.reason}`);
      if (JSON.stringify(t.got) !== JSON.stringify(want)) problems.push(`session ${k}: the handler saw ${t.got.length} messages, not exactly 1..${o.trafficMessages} in order`);
      if (JSON.stringify(c.got) !== JSON.stringify(want)) problems.push(`session ${k}: the client got ${c.got.length} messages, not exactly 1..${o.trafficMessages} in order`);
      if (c.acked !== o.trafficMessages) problems.push(`session ${k}: ${c.acked} sends acked, ${c.rejected} rejected`);
    }
    await Promise.all(clients.map((c) => c.s.close()));

    // --- heap after ------------------------------------------------------------------------------------------------------------
    log(`fuzz: waiting ${idleWaitMs / 1000} s for the fuzzer's sessions to expire, then measuring the heap`);
    await sleep(idleWaitMs);
    const sessionsAfter = store.size;
    const afterBytes = await heapAfterGc();
    for (const e of hookErrors) fail(`onError: ${e.split('\n')[0]!.slice(0, 100)}`, 'server', e);
    const report: FuzzReport = {
      seed: o.seed,
      requests: Object.values(kinds).reduce((a, b) => a + b, 0),
      durationMs: Date.now() - started,
      histogram,
      kinds,
      failures,
      traffic: { sessions: clients.length, c2s, s2c, ok: problems.length === 0, problems },
      heap: { beforeBytes, afterBytes, deltaBytes: afterBytes - beforeBytes, sessionsBefore, sessionsAfter },
      ok: false,
    };
    report.ok = failures.length === 0 && problems.length === 0;
    return report;
  } finally {
    agent.destroy();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    await mw.server.dispose();
  }
}

/** Runs `total` generated requests, `concurrency` at a time. */
async function pool(total: number, gen: () => Req, send: (r: Req) => Promise<Res | null>, check: (r: Req, res: Res | null) => void, concurrency: number): Promise<void> {
  let issued = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (issued < total) {
        issued++;
        const req = gen();
        check(req, await send(req));
      }
    }),
  );
}

export function formatFuzzReport(r: FuzzReport): string {
  const mb = (b: number) => (b / 1024 / 1024).toFixed(2) + ' MB';
  const lines = [
    '',
    `seed ${r.seed} · ${r.requests} requests · ${(r.durationMs / 1000).toFixed(1)} s`,
    'responses:',
    ...Object.entries(r.histogram)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `  ${String(v).padStart(7)}  ${k}`),
    'requests by kind: ' + Object.entries(r.kinds).map(([k, v]) => `${k} ${v}`).join(', '),
    `real sessions: ${r.traffic.sessions}, client→server ${r.traffic.c2s}, server→client ${r.traffic.s2c}: ${r.traffic.ok ? 'exact sequences, no session ended' : 'PROBLEMS'}`,
    ...r.traffic.problems.map((p) => '  ' + p),
    `heap (after gc, the fuzzer's sessions expired): before ${mb(r.heap.beforeBytes)}, after ${mb(r.heap.afterBytes)}, delta ${mb(r.heap.deltaBytes)} · store sessions before ${r.heap.sessionsBefore}, after ${r.heap.sessionsAfter}`,
  ];
  if (r.failures.length) {
    lines.push(`failures (${r.failures.reduce((n, f) => n + f.count, 0)}, by kind of request and answer):`);
    for (const f of r.failures) lines.push(`  ${String(f.count).padStart(6)} × [${f.kind}] ${f.signature}`, `           e.g. ${f.example.slice(0, 300)}`);
  }
  lines.push(r.ok ? 'RESULT: OK — no crash, no 5xx, only documented 4xx, traffic unaffected' : 'RESULT: FAILED');
  return lines.join('\n');
}
