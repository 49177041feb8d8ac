/** What is specific to the Koa adapter: mounting, coexistence with other middleware, pre-parsed bodies. */
import Koa from 'koa';
import type { Context, Next } from 'koa';
import request from 'supertest';
import { bidiWeb, BidiServer } from '../../src/koa';
import type { OpenRequest } from '../../src/koa';

/** Like koa-bodyparser / @koa/bodyparser: reads JSON bodies into ctx.request.body (and rawBody). */
function jsonBodyParser({ keepRaw }: { keepRaw: boolean }) {
  return async (ctx: Context, next: Next) => {
    if (ctx.is('application/json')) {
      const chunks: Buffer[] = [];
      for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
      const text = Buffer.concat(chunks).toString('utf8');
      const req = ctx.request as Context['request'] & { body?: unknown; rawBody?: string };
      req.body = text ? JSON.parse(text) : {};
      if (keepRaw) req.rawBody = text;
    }
    await next();
  };
}

describe('koa adapter', () => {
  const disposers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const d of disposers.splice(0)) await d();
  });
  function make(options: Parameters<typeof bidiWeb>[0] = {}) {
    const mw = bidiWeb({ sweepInterval: 0, onError: () => {}, ...(options as object) });
    disposers.push(() => mw.server.dispose());
    return mw;
  }

  it('passes requests outside its path to the next middleware', async () => {
    const app = new Koa();
    app.use(make());
    app.use(async (ctx, next) => {
      if (ctx.path === '/health') ctx.body = { ok: true };
      else await next();
    });
    const server = app.callback();
    await request(server).get('/health').expect(200, { ok: true });
    await request(server).get('/sessions').expect(404);
    await request(server).post('/session').send({ v: 1 }).expect(201);
  });

  it('serves a custom path and leaves the response to the bridge (no Koa body, headers from earlier middleware kept)', async () => {
    const app = new Koa();
    app.use(async (ctx, next) => {
      ctx.set('x-content-type-options', 'nosniff');
      await next();
      ctx.set('x-after', 'ignored once the bridge has answered');
    });
    app.use(make({ path: '/api/live' }));
    const server = app.callback();
    const open = await request(server).post('/api/live').send({ v: 1 }).expect(201);
    expect(open.headers['x-content-type-options']).toBe('nosniff');
    expect(open.headers['content-type']).toBe('application/json; charset=utf-8');
    const sid = open.body.sid;
    await request(server).post('/api/live/send').set('bidi-sid', sid).send({ msgs: [[1, 'x']] }).expect(200, { ack: 1 });
    await request(server).get('/api/live/watch?ack=0&wait=0').set('bidi-sid', sid).expect(200, { msgs: [], ack: 1 });
    await request(server).get('/session').expect(404);
  });

  it("mounts under a prefix with path '/' (as koa-mount does: it rewrites ctx.path, hence req.url)", async () => {
    const mw = make({ path: '/' });
    const app = new Koa();
    app.use(async (ctx, next) => {
      const prefix = '/api/live';
      if (ctx.path !== prefix && !ctx.path.startsWith(prefix + '/')) return next();
      const original = ctx.path;
      ctx.path = ctx.path.slice(prefix.length) || '/';
      try {
        await mw(ctx, next);
      } finally {
        ctx.path = original;
      }
    });
    const server = app.callback();
    const sid = (await request(server).post('/api/live').send({ v: 1 }).expect(201)).body.sid;
    await request(server).post('/api/live/send').set('bidi-sid', sid).send({ msgs: [[1, 'x']] }).expect(200, { ack: 1 });
    await request(server).get('/api/live/watch?ack=0&wait=0').set('bidi-sid', sid).expect(200, { msgs: [], ack: 1 });
  });

  it('hands onOpen the Koa context as request.raw (e.g. ctx.state from an auth middleware)', async () => {
    const seen: unknown[] = [];
    const app = new Koa();
    app.use(async (ctx, next) => {
      ctx.state.user = { id: 7 };
      await next();
    });
    app.use(
      make({
        onOpen(session, req: OpenRequest) {
          session.user = ((req.raw as Context).state as { user: unknown }).user;
          seen.push(session.user);
        },
      }),
    );
    await request(app.callback()).post('/session').send({ v: 1 }).expect(201);
    expect(seen).toEqual([{ id: 7 }]);
  });

  it.each([
    ['with rawBody', true],
    ['with a parsed body only', false],
  ])('works after a body parser consumed the body (%s), keeping the body limit', async (_name, keepRaw) => {
    const seen: unknown[] = [];
    const app = new Koa();
    app.use(jsonBodyParser({ keepRaw }));
    app.use(make({ limits: { maxBodyBytes: 2000, maxMessageBytes: 1000 }, onMessage: (_s, d) => void seen.push(d) }));
    const server = app.callback();
    const sid = (await request(server).post('/session').send({ v: 1, meta: { a: 1 } }).expect(201)).body.sid;
    await request(server).post('/session/send').set('bidi-sid', sid).send({ msgs: [[1, { a: 1 }]] }).expect(200, { ack: 1 });
    const big = await request(server).post('/session/send').set('bidi-sid', sid).send({ msgs: [[2, 'x'.repeat(5000)]] });
    expect([big.status, big.body.error.code]).toEqual([413, 'BODY_TOO_LARGE']);
    await request(server).post('/session/send').set('bidi-sid', sid).send({ msgs: [[2, 'b']] }).expect(200, { ack: 2 });
    expect(seen).toEqual([{ a: 1 }, 'b']);
  });

  it('enforces the body limit while reading the stream itself', async () => {
    const app = new Koa();
    app.use(make({ limits: { maxBodyBytes: 1000, maxMessageBytes: 500 } }));
    const server = app.callback();
    const sid = (await request(server).post('/session').send({ v: 1 }).expect(201)).body.sid;
    const big = await request(server)
      .post('/session/send')
      .set('bidi-sid', sid)
      .set('content-type', 'application/json')
      .send(JSON.stringify({ msgs: [[1, 'x'.repeat(100_000)]] }));
    expect(big.status).toBe(413);
    expect(big.body).toEqual({ error: { code: 'BODY_TOO_LARGE', message: expect.any(String) } });
  });

  it('exposes the hub and the core server, and accepts a server object', async () => {
    const core = new BidiServer({ sweepInterval: 0 });
    disposers.push(() => core.dispose());
    const mw = bidiWeb(core);
    expect(mw.server).toBe(core);
    const app = new Koa();
    app.use(mw);
    const server = app.callback();
    const sid = (await request(server).post('/session').send({ v: 1 }).expect(201)).body.sid;
    expect(await mw.hub.send(sid, 'pushed')).toBe(1);
    await request(server).get('/session/watch?ack=0').set('bidi-sid', sid).expect(200, { msgs: [[1, 'pushed']], ack: 0 });
  });
});
