/** What is specific to the Express adapter: mounting, coexistence with other middleware. */
import express from 'express';
import request from 'supertest';
import { bidiWeb } from '../../src/express';

describe('express adapter', () => {
  const disposers: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const d of disposers.splice(0)) await d();
  });
  function make(options: Parameters<typeof bidiWeb>[0] = {}) {
    const mw = bidiWeb({ sweepInterval: 0, onError: () => {}, ...options });
    disposers.push(() => mw.server.dispose());
    return mw;
  }

  it('passes requests outside its path to the next middleware', async () => {
    const app = express();
    app.use(make());
    app.get('/health', (_req, res) => void res.json({ ok: true }));
    await request(app).get('/health').expect(200, { ok: true });
    await request(app).get('/sessions').expect(404);
  });

  it("mounts under a prefix with path '/'", async () => {
    const app = express();
    app.use('/api/live', make({ path: '/' }));
    const open = await request(app).post('/api/live').send({ v: 1 }).expect(201);
    const sid = open.body.sid;
    await request(app).post('/api/live/send').set('bidi-sid', sid).send({ msgs: [[1, 'x']] }).expect(200, { ack: 1 });
    await request(app).get('/api/live/watch?ack=0&wait=0').set('bidi-sid', sid).expect(200, { msgs: [], ack: 1 });
  });

  it('works after express.json() consumed the body, keeping the body limit', async () => {
    const seen: unknown[] = [];
    const app = express();
    app.use(express.json({ limit: '10mb' }));
    app.use(make({ limits: { maxBodyBytes: 2000, maxMessageBytes: 1000 }, onMessage: (_s, d) => void seen.push(d) }));
    const sid = (await request(app).post('/session').send({ v: 1 }).expect(201)).body.sid;
    await request(app).post('/session/send').set('bidi-sid', sid).send({ msgs: [[1, { a: 1 }]] }).expect(200, { ack: 1 });
    const big = await request(app).post('/session/send').set('bidi-sid', sid).send({ msgs: [[2, 'x'.repeat(5000)]] });
    expect([big.status, big.body.error.code]).toEqual([413, 'BODY_TOO_LARGE']);
    expect(seen).toEqual([{ a: 1 }]);
  });

  it('exposes the hub and the core server on the middleware', async () => {
    const mw = make();
    const app = express();
    app.use(mw);
    const sid = (await request(app).post('/session').send({ v: 1 }).expect(201)).body.sid;
    expect(await mw.hub.send(sid, 'pushed')).toBe(1);
    await request(app).get('/session/watch?ack=0').set('bidi-sid', sid).expect(200, { msgs: [[1, 'pushed']], ack: 0 });
    expect(mw.server.path).toBe('/session');
  });
});
