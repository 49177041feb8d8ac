/**
 * bidiweb/aws-lambda: API Gateway / Function URL events in, results out.
 *
 * - Unit: event shapes as AWS documents them (payload format 2.0 for HTTP API
 *   and Function URLs, 1.0 for REST API / ALB), base64 bodies, cookies,
 *   multi-value headers and query strings, the time limit → maxWait.
 * - End to end through a tiny local shim that turns real HTTP requests into
 *   format 2.0 events the way a Function URL does, invokes the handler
 *   in-process and writes its result back; two sessions of the project's
 *   client chat through it on a RedisStore, and one scheduled sweep expires
 *   an abandoned session. The same through API Gateway HTTP API emulation
 *   (serverless-offline): ./serverless-offline.test.ts.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Redis from 'ioredis';
import { bidiLambda, type BidiLambda, type LambdaEventV1, type LambdaEventV2, type LambdaResultV1, type LambdaResultV2 } from '../../src/aws-lambda';
import { BidiError } from '../../src/core/errors';
import { MemoryStore } from '../../src/core/stores/memory';
import { RedisStore } from '../../src/redis';
import { chatHooks, type ChatUser } from '../../samples/serverless/runtimes/app';
import { openWatched, waitFor } from '../helpers/client-session';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

/** A format 2.0 event, with the fields API Gateway HTTP API / Function URLs send. */
function v2(method: string, rawPath: string, o: { query?: string; headers?: Record<string, string>; body?: string; base64?: boolean; cookies?: string[] } = {}): LambdaEventV2 {
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath,
    rawQueryString: o.query ?? '',
    ...(o.cookies ? { cookies: o.cookies } : {}),
    headers: { 'content-length': String(o.body?.length ?? 0), host: 'abc123.lambda-url.eu-west-1.on.aws', 'x-forwarded-proto': 'https', ...o.headers },
    requestContext: {
      accountId: 'anonymous',
      apiId: 'abc123',
      domainName: 'abc123.lambda-url.eu-west-1.on.aws',
      http: { method, path: rawPath, protocol: 'HTTP/1.1', sourceIp: '203.0.113.7', userAgent: 'test' },
      requestId: 'c6af9ac6-7b61-11e6-9a41-93e8deadbeef',
      routeKey: '$default',
      stage: '$default',
      time: '12/Mar/2020:19:03:58 +0000',
      timeEpoch: 1583348638390,
    },
    ...(o.body !== undefined ? { body: o.base64 ? Buffer.from(o.body).toString('base64') : o.body } : {}),
    isBase64Encoded: o.base64 ?? false,
  } as LambdaEventV2;
}

const json = { 'content-type': 'application/json' };

describe('bidiweb/aws-lambda: events and results', () => {
  test('format 2.0: a base64 body opens a session; cookies and headers reach onOpen; watch and send by query and header', async () => {
    const seen: Array<{ cookie: string | null; auth: string | null; meta: unknown }> = [];
    const bidi = bidiLambda({
      store: new MemoryStore(),
      onOpen(session, req) {
        seen.push({ cookie: req.headers.get('cookie'), auth: req.headers.get('authorization'), meta: req.meta });
      },
      async onMessage(session, data) {
        await session.send({ echo: data });
      },
    });
    const opened = (await bidi.handler(
      v2('POST', '/session', { body: JSON.stringify({ v: 1, meta: { name: 'zoë ✓' } }), base64: true, headers: { ...json, authorization: 'Bearer t' }, cookies: ['a=1', 'b=2'] }),
    )) as LambdaResultV2;
    expect(opened.statusCode).toBe(201);
    expect(opened.isBase64Encoded).toBe(false);
    expect(opened.headers['content-type']).toMatch(/application\/json/);
    const { sid, limits } = JSON.parse(opened.body);
    expect(limits.maxWait).toBe(25_000); // 29 s limit - 4 s margin
    expect(seen).toEqual([{ cookie: 'a=1; b=2', auth: 'Bearer t', meta: { name: 'zoë ✓' } }]);

    const sent = (await bidi.handler(v2('POST', '/session/send', { body: JSON.stringify({ msgs: [[1, 'hi']] }), headers: { ...json, 'bidi-sid': sid } }))) as LambdaResultV2;
    expect(sent.statusCode).toBe(200);
    const watched = (await bidi.handler(v2('GET', '/session/watch', { query: 'ack=0&wait=0&stream=1', headers: { 'bidi-sid': sid } }))) as LambdaResultV2;
    expect(watched.statusCode).toBe(200);
    // Buffered platform: a stream=1 watch is answered the plain way.
    expect(JSON.parse(watched.body).msgs).toEqual([[1, { echo: 'hi' }]]);
    const closed = (await bidi.handler(v2('DELETE', '/session', { headers: { 'bidi-sid': sid } }))) as LambdaResultV2;
    expect(closed.statusCode).toBeLessThan(300);
  });

  test('format 1.0 (REST API, ALB): multi-value headers and query strings, multiValueHeaders in the result', async () => {
    const bidi = bidiLambda({ store: new MemoryStore(), cors: { origins: ['https://app.example'] } });
    const opened = (await bidi.handler({
      httpMethod: 'POST',
      path: '/session',
      headers: { 'Content-Type': 'application/json' },
      multiValueHeaders: { 'Content-Type': ['application/json'], Origin: ['https://app.example'] },
      queryStringParameters: null,
      multiValueQueryStringParameters: null,
      body: JSON.stringify({ v: 1 }),
      isBase64Encoded: false,
    } as LambdaEventV1)) as LambdaResultV1;
    expect(opened.statusCode).toBe(201);
    expect(opened.multiValueHeaders).toEqual({});
    expect(opened.headers['access-control-allow-origin']).toBe('https://app.example');
    const { sid } = JSON.parse(opened.body);
    const watched = (await bidi.handler({
      httpMethod: 'GET',
      path: '/session/watch',
      headers: { 'Bidi-Sid': sid },
      multiValueHeaders: { 'Bidi-Sid': [sid] },
      queryStringParameters: { ack: '0', wait: '0' },
      multiValueQueryStringParameters: { ack: ['0'], wait: ['0'] },
      body: null,
      isBase64Encoded: false,
    } as LambdaEventV1)) as LambdaResultV1;
    expect(watched.statusCode).toBe(200);
    expect(JSON.parse(watched.body).msgs).toEqual([]);
  });

  test('bad input gets a 4xx JSON error; other paths a 404; a body over the limit a 413', async () => {
    const bidi = bidiLambda({ store: new MemoryStore(), limits: { maxBodyBytes: 1000, maxMessageBytes: 500 } });
    const bad = (await bidi.handler(v2('POST', '/session', { body: '{not json', base64: true, headers: json }))) as LambdaResultV2;
    expect(bad.statusCode).toBe(400);
    expect(JSON.parse(bad.body).error.code).toBeDefined();
    const big = (await bidi.handler(v2('POST', '/session', { body: JSON.stringify({ v: 1, meta: 'x'.repeat(2000) }), base64: true, headers: json }))) as LambdaResultV2;
    expect(big.statusCode).toBe(413);
    expect(JSON.parse(big.body).error.code).toBe('BODY_TOO_LARGE');
    const other = (await bidi.handler(v2('GET', '/elsewhere'))) as LambdaResultV2;
    expect(other.statusCode).toBe(404);
    expect(JSON.parse(other.body).error.code).toBe('NOT_FOUND');
    await expect(bidi.handler({ hello: 'not http' } as never)).rejects.toThrow(TypeError);
  });

  test('the time limit sets maxWait; a larger maxWait is refused', () => {
    expect(bidiLambda({ store: new MemoryStore() }).maxWait).toBe(25_000);
    expect(bidiLambda({ store: new MemoryStore() }, { timeLimitMs: 30_000, marginMs: 2_000 }).maxWait).toBe(28_000);
    expect(bidiLambda({ store: new MemoryStore(), maxWait: 10_000 }).maxWait).toBe(10_000);
    expect(() => bidiLambda({ store: new MemoryStore(), maxWait: 28_000 })).toThrow(BidiError);
    expect(() => bidiLambda({ store: new MemoryStore(), maxWait: 28_000 })).toThrow(/maxWait \(28000\) must be at most/);
    // A Function URL may run up to 15 min: the core's own cap (55 s) still applies.
    expect(bidiLambda({ store: new MemoryStore() }, { timeLimitMs: 900_000 }).maxWait).toBe(55_000);
  });

  test("a watch answers before the function's own remaining time runs out", async () => {
    const bidi = bidiLambda({ store: new MemoryStore() });
    const { sid } = JSON.parse(((await bidi.handler(v2('POST', '/session', { body: '{"v":1}', headers: json }))) as LambdaResultV2).body);
    const started = Date.now();
    const watched = (await bidi.handler(v2('GET', '/session/watch', { query: 'ack=0&wait=20000', headers: { 'bidi-sid': sid } }), {
      getRemainingTimeInMillis: () => 1_500,
    })) as LambdaResultV2;
    expect(watched.statusCode).toBe(200);
    expect(JSON.parse(watched.body).msgs).toEqual([]);
    expect(Date.now() - started).toBeLessThan(20_000); // not the asked-for wait: the function would have timed out
  });
});

/**
 * What a Function URL does with an HTTP request: a format 2.0 event
 * (lower-case headers, repeated ones comma-joined, cookies split out, a
 * non-text body base64-encoded), the result written back.
 */
function functionUrlShim(handler: (event: LambdaEventV2, context: { getRemainingTimeInMillis(): number }) => Promise<unknown>): http.Server {
  return http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://shim');
      const headers: Record<string, string> = {};
      let cookies: string[] | undefined;
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        const name = req.rawHeaders[i]!.toLowerCase();
        const value = req.rawHeaders[i + 1]!;
        if (name === 'cookie') cookies = [...(cookies ?? []), ...value.split(/;\s*/)];
        else headers[name] = headers[name] === undefined ? value : `${headers[name]},${value}`;
      }
      const body = Buffer.concat(chunks);
      const text = /^(text\/|application\/json)/.test(headers['content-type'] ?? '');
      const event = {
        version: '2.0',
        rawPath: url.pathname,
        rawQueryString: url.search.slice(1),
        ...(cookies ? { cookies } : {}),
        headers,
        requestContext: { http: { method: req.method ?? 'GET', path: url.pathname } },
        ...(body.length ? { body: text ? body.toString('utf8') : body.toString('base64') } : {}),
        isBase64Encoded: body.length > 0 && !text,
      } as LambdaEventV2;
      const deadline = Date.now() + 30_000;
      handler(event, { getRemainingTimeInMillis: () => deadline - Date.now() })
        .then((result) => {
          const r = result as LambdaResultV2;
          const out: Record<string, string | string[]> = { ...r.headers };
          if (r.cookies) out['set-cookie'] = r.cookies;
          res.writeHead(r.statusCode, out);
          res.end(r.isBase64Encoded ? Buffer.from(r.body, 'base64') : r.body);
        })
        .catch(() => {
          res.writeHead(502, json);
          res.end('{"message":"Internal Server Error"}');
        });
    });
  });
}

describe('bidiweb/aws-lambda end to end (local Function URL shim, RedisStore)', () => {
  let redis: RedisProcess;
  let conn: Redis;
  let shim: http.Server;
  let base: string;
  let sweep: () => Promise<number>;

  beforeAll(async () => {
    redis = await startRedis();
    conn = new Redis(redis.url);
    const store = new RedisStore({ redis: conn, prefix: 'lambda:' });
    const bidi: BidiLambda<ChatUser, Record<string, unknown>> = bidiLambda<ChatUser>({ store, wait: 1000, maxWait: 2000, idleTimeout: 3000, ...chatHooks(() => bidi.server().hub) });
    sweep = bidi.sweep;
    shim = functionUrlShim(bidi.handler);
    await new Promise<void>((r) => shim.listen(0, '127.0.0.1', () => r()));
    base = `http://127.0.0.1:${(shim.address() as AddressInfo).port}/session`;
  });

  afterAll(async () => {
    shim?.closeAllConnections();
    await new Promise<void>((r) => (shim ? shim.close(() => r()) : r()));
    conn?.disconnect();
    await redis?.stop();
  });

  test('two sessions chat both ways; a scheduled sweep expires an abandoned one', async () => {
    const carol = await fetch(base, { method: 'POST', headers: json, body: JSON.stringify({ v: 1, meta: { name: 'carol' } }) });
    expect(carol.status).toBe(201);
    const carolAt = Date.now();
    const alice = openWatched(base, { meta: { name: 'alice' } });
    const bob = openWatched(base, { meta: { name: 'bob' } });
    await Promise.all([alice.opened, bob.opened]);
    for (const text of ['a1', 'a2']) void alice.s.send({ text });
    void bob.s.send({ text: 'b1' });
    const chat = (w: typeof alice) => w.received.filter((m) => 'text' in m);
    await waitFor('3 chat messages on both sides', () => chat(alice).length === 3 && chat(bob).length === 3, 10_000);
    for (const w of [alice, bob]) {
      // Each sender's messages arrive in the order sent, once, at both sessions.
      expect(chat(w).filter((m) => m.from === 'alice').map((m) => m.text)).toEqual(['a1', 'a2']);
      expect(chat(w).filter((m) => m.from === 'bob').map((m) => m.text)).toEqual(['b1']);
    }

    await new Promise((r) => setTimeout(r, Math.max(0, carolAt + 3000 + 500 - Date.now())));
    expect(await sweep()).toBe(1);
    await waitFor('the left notice', () => alice.received.some((m) => m.left === 'carol') && bob.received.some((m) => m.left === 'carol'));
    await Promise.all([alice.s.close(), bob.s.close()]);
  }, 25_000);
});
