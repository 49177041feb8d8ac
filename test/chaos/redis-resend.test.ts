/**
 * What `npm run chaos` found at its first Redis crash, made deterministic:
 * a store command that Redis executed (and, with `appendfsync always`,
 * persisted) but whose reply was lost with the connection is **sent again**
 * by ioredis after it reconnects (`autoResendUnfulfilledCommands`, on by
 * default). Every script core uses must then answer as its first run did and
 * change nothing more: `append` by its append id, `create` by its token,
 * `receive` and `close` by their lease token, the rest by their nature.
 *
 * The reply is lost on purpose here: a TCP relay between ioredis and Redis
 * forwards the command, then drops the reply and resets the connection —
 * exactly what a Redis crash right after its AOF fsync, or a network cut,
 * does. Each test first runs the operation once uncut, so the script is
 * loaded (a cut NOSCRIPT reply would prove nothing).
 */
import Redis from 'ioredis';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { BidiServer, toFetchHandler } from '../../src/core';
import { newSessionId, newToken } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

jest.setTimeout(30_000);

interface ReplyCutter {
  port: number;
  /** The next reply to a script call (EVALSHA / EVAL) is dropped and its connection reset; with `marker`, only a call whose command text holds it. */
  arm(marker?: string): void;
  cuts: number;
  close(): Promise<void>;
}

async function replyCutter(redisPort: number): Promise<ReplyCutter> {
  let armed = false;
  let armedMarker: string | undefined;
  const sockets = new Set<net.Socket>();
  const state = { cuts: 0 };
  const server = net.createServer((client) => {
    const upstream = net.connect(redisPort, '127.0.0.1');
    sockets.add(client).add(upstream);
    let target = false;
    client.on('data', (buf) => {
      const text = buf.toString('latin1');
      if (armed && /evalsha|\beval\b/i.test(text) && (armedMarker === undefined || text.includes(armedMarker))) {
        armed = false;
        target = true;
      }
      upstream.write(buf);
    });
    upstream.on('data', (buf) => {
      if (target) {
        // Redis executed the script; its answer never arrives.
        state.cuts++;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(buf);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    arm: (marker?: string) => {
      armed = true;
      armedMarker = marker;
    },
    get cuts() {
      return state.cuts;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('a store command whose reply is lost (Redis crash after fsync, or a network cut)', () => {
  let redis: RedisProcess;
  let cutter: ReplyCutter;
  let conn: Redis;
  let store: RedisStore;
  let server: BidiServer;
  const delivered: Array<[string, number, unknown]> = [];
  const closes: Array<[string, string]> = [];
  let fetchHandler: (r: Request) => Promise<Response>;

  beforeAll(async () => {
    redis = await startRedis({ appendonly: true });
    cutter = await replyCutter(redis.port);
    // ioredis defaults for resending, as the README and the multi-instance tests configure it.
    conn = new Redis({ port: cutter.port, host: '127.0.0.1', maxRetriesPerRequest: null, retryStrategy: () => 20 });
    conn.on('error', () => {});
    store = new RedisStore({ redis: conn, prefix: 'resend:' });
    server = new BidiServer({
      store,
      sweepInterval: 0,
      onError: () => {},
      onMessage: (s, msg, info) => void delivered.push([s.id, info.seq, msg]),
      onClose: (s, reason) => void closes.push([s.id, reason]),
      // The marker lets a test cut exactly the create script's reply (admit, before it, does not carry the user).
      onOpen: (s) => void (s.user = { marker: 'cut-this-create' }),
    });
    fetchHandler = toFetchHandler(server);
  });

  afterAll(async () => {
    await server.dispose();
    await store.dispose();
    conn.disconnect();
    await cutter.close();
    await redis.stop();
  });

  async function newSession(): Promise<string> {
    const sid = newSessionId();
    expect(await store.create({ sid, userJson: 'null', stateJson: '{}', initial: [], idleMs: 60_000, maxSessions: 1000 })).toEqual({ status: 'ok' });
    return sid;
  }

  async function log(sid: string): Promise<string[]> {
    const r = await store.read(sid, { ack: 0, watchToken: 'probe', claim: true, maxMessages: 100 });
    if (r.status !== 'ok') throw new Error(r.status);
    return r.msgs.map((m) => m.json);
  }

  function request(method: string, path: string, sid?: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (sid) headers['bidi-sid'] = sid;
    return fetchHandler(new Request(`http://test/session${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }));
  }

  /** Runs `op` with the reply to its next script call cut, and checks the cut happened. */
  async function cut<T>(op: () => Promise<T>): Promise<T> {
    const before = cutter.cuts;
    cutter.arm();
    const result = await op();
    expect(cutter.cuts).toBe(before + 1);
    return result;
  }

  it('hub.send whose reply is lost appends once and returns its one seq', async () => {
    const warm = await newSession();
    await server.hub.send(warm, 'warm-up');
    const sid = await newSession();
    expect(await server.hub.send(sid, 'first')).toBe(1);
    const seq = await cut(() => server.hub.send(sid, 'second'));
    expect(seq).toBe(2);
    expect(await server.hub.send(sid, 'third')).toBe(3);
    expect(await log(sid)).toEqual(['"first"', '"second"', '"third"']);
  });

  it('hub.broadcast whose replies are lost (one pipeline) appends once to each session', async () => {
    const sids = [await newSession(), await newSession(), await newSession()];
    await server.hub.broadcast(sids, 'warm-up');
    const r = await cut(() => server.hub.broadcast(sids, 'news'));
    expect(r).toEqual({ sent: 3, failed: [] });
    for (const sid of sids) expect(await log(sid)).toEqual(['"warm-up"', '"news"']);
  });

  it('hub.publish whose reply is lost writes the group log once: each member gets the message once', async () => {
    const sids = [await newSession(), await newSession()];
    for (const sid of sids) await server.hub.join(sid, 'resend-room');
    await server.hub.publish('resend-room', 'warm-up');
    expect(await cut(() => server.hub.publish('resend-room', 'news'))).toEqual({ sent: 2, failed: [] });
    await server.hub.publish('resend-room', 'after');
    for (const sid of sids) expect(await log(sid)).toEqual(['"warm-up"', '"news"', '"after"']);
  });

  it('a batch of publishes (a loop, nothing awaited) whose reply is lost writes each entry once, in call order', async () => {
    const sids = [await newSession(), await newSession()];
    for (const sid of sids) await server.hub.join(sid, 'resend-batch');
    await server.hub.publish('resend-batch', 'warm-up');
    const texts = Array.from({ length: 40 }, (_, i) => `batch-${i}`);
    const results = await cut(() => Promise.all(texts.map((t) => server.hub.publish('resend-batch', t))));
    expect(results).toEqual(texts.map(() => ({ sent: 2, failed: [] })));
    await server.hub.publish('resend-batch', 'after');
    for (const sid of sids) expect(await log(sid)).toEqual(['"warm-up"', ...texts.map((t) => JSON.stringify(t)), '"after"']);
  });

  it('a read whose pull reply is lost pulls each group entry once (the cursor compare-and-set refuses the repeat)', async () => {
    const sid = await newSession();
    await server.hub.join(sid, 'resend-pull');
    await server.hub.publish('resend-pull', 'one');
    expect(await log(sid)).toEqual(['"one"']);
    await server.hub.publish('resend-pull', 'cut-this-pull');
    const before = cutter.cuts;
    cutter.arm('cut-this-pull');
    expect(await log(sid)).toEqual(['"one"', '"cut-this-pull"']);
    expect(cutter.cuts).toBe(before + 1);
    expect(await log(sid)).toEqual(['"one"', '"cut-this-pull"']);
    expect((await store.inspect([sid]))[0]).toMatchObject({ lastSeq: 2 });
  });

  it('a send whose pull-and-append reply is lost stores the group entry and the message once, in order', async () => {
    const sid = await newSession();
    await server.hub.join(sid, 'resend-send');
    await server.hub.publish('resend-send', 'cut-this-send-pull');
    const before = cutter.cuts;
    cutter.arm('cut-this-send-pull');
    expect(await server.hub.send(sid, 'mine')).toBe(2);
    expect(cutter.cuts).toBe(before + 1);
    expect(await log(sid)).toEqual(['"cut-this-send-pull"', '"mine"']);
  });

  it('open whose create reply is lost answers 201, and the session it names is the one created', async () => {
    expect((await request('POST', '', undefined, { v: 1 })).status).toBe(201);
    const before = cutter.cuts;
    cutter.arm('cut-this-create');
    const res = await request('POST', '', undefined, { v: 1 });
    expect(cutter.cuts).toBe(before + 1);
    expect(res.status).toBe(201);
    const { sid } = (await res.json()) as { sid: string };
    expect((await store.inspect([sid]))[0]).toMatchObject({ status: 'open', userJson: '{"marker":"cut-this-create"}', lastSeq: 0 });
  });

  it('a client send whose receive reply is lost is delivered once, at once (not after the lease expires)', async () => {
    const warm = await newSession();
    expect((await request('POST', '/send', warm, { msgs: [[1, 'warm']] })).status).toBe(200);
    const sid = await newSession();
    const res = await cut(() => request('POST', '/send', sid, { msgs: [[1, 'hello']] }));
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ ack: 1 });
    expect(delivered.filter(([s]) => s === sid)).toEqual([[sid, 1, 'hello']]);
  });

  it('receive at the store: the repeat hands the run to the same token again', async () => {
    const sid = await newSession();
    const input = { msgs: [{ seq: 1, json: '"a"' }], window: 10, bufferBytes: 1000, lease: { token: 't1', ms: 5000 }, maxDeliver: 10 };
    const r = await cut(() => store.receive(sid, input));
    expect(r).toMatchObject({ status: 'ok', clientAck: 0, deliver: [{ seq: 1, json: '"a"' }] });
    const [info] = await store.inspect([sid]);
    expect(info!.clientAck).toBe(0); // nothing committed yet, and nothing buffered twice
  });

  it('finishClose whose reply is lost still takes the session out of its groups and the sessions index', async () => {
    const warm = await newSession();
    const warmToken = newToken();
    await store.close(warm, { reason: 'r', lease: { token: warmToken, ms: 5000 } });
    await store.finishClose(warm, warmToken);
    const sid = await newSession();
    expect(await store.join(sid, 'room')).toBe(true);
    const token = newToken();
    expect(await store.close(sid, { reason: 'bye', lease: { token, ms: 5000 } })).toMatchObject({ leased: true });
    await cut(() => store.finishClose(sid, token));
    expect(await store.members('room')).not.toContain(sid);
    expect(await conn.zscore('resend:{sessions}', sid)).toBeNull();
    expect((await store.inspect([sid]))[0]).toMatchObject({ status: 'closed' });
    // The tombstone's group field is inert: the closed session cannot join again.
    expect(await store.join(sid, 'room')).toBe(false);
    expect(await store.members('room')).not.toContain(sid);
  });

  it('a client close whose close reply is lost runs onClose once, at once', async () => {
    const warm = await newSession();
    expect((await request('DELETE', '', warm)).status).toBe(200);
    const sid = await newSession();
    const res = await cut(() => request('DELETE', '', sid));
    expect(res.status).toBe(200);
    expect(closes.filter(([s]) => s === sid)).toEqual([[sid, 'client']]);
    expect((await store.inspect([sid]))[0]).toMatchObject({ status: 'closed' });
  });
});
