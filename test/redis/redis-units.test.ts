/**
 * What only the Redis store does: key layout and TTLs, script registration,
 * one subscriber connection per store, round trips per operation, memory per
 * session, Redis restarts with and without persistence, connection ownership.
 * The shared contract lives in src/testing/contract.ts (run by
 * redis-store.test.ts and redis-cluster.test.ts).
 */
import Redis from 'ioredis';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Socket } from 'node:net';
import { BidiError } from '../../src/core/errors';
import { DEFAULT_LIMITS } from '../../src/core/limits';
import type { StoreEvent } from '../../src/core/store';
import { newAppendId, newSessionId, newToken } from '../../src/core/util';
import { RedisKeys, RedisStore } from '../../src/redis';
import { keySlot } from '../../src/redis/keys';
import { decodeGroupWake } from '../../src/redis/subscriptions';
import { INCLUDE_FILES, SCRIPT_FILES, SCRIPT_VERSION, SCRIPTS, type ScriptName } from '../../src/redis/scripts';
import { startRedis, type RedisProcess } from '../helpers/redis-server';

jest.setTimeout(30_000);

const ROOMY = { maxUnackedMessages: 10_000, maxUnackedBytes: 1 << 24 };
const LONG = 60_000;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

let server: RedisProcess;
const connections: Redis[] = [];
const stores: RedisStore[] = [];

function connect(): Redis {
  const c = new Redis(server.port, '127.0.0.1');
  connections.push(c);
  return c;
}

function makeStore(over: Partial<ConstructorParameters<typeof RedisStore>[0]> = {}): { store: RedisStore; redis: Redis; prefix: string } {
  const redis = (over.redis as Redis | undefined) ?? connect();
  const prefix = over.prefix ?? `u${newToken()}:`;
  const store = new RedisStore({ ...over, redis, prefix });
  stores.push(store);
  return { store, redis, prefix };
}

async function open(store: RedisStore, over: Partial<Parameters<RedisStore['create']>[0]> = {}): Promise<string> {
  const sid = newSessionId();
  const r = await store.create({ sid, userJson: '{"name":"ada"}', stateJson: '{}', initial: [], idleMs: LONG, maxSessions: 1e9, ...over });
  expect(r).toEqual({ status: 'ok' });
  return sid;
}

/** Counts writes on the connection's socket: each is one round trip's worth of commands (a pipeline is one write). */
function countWrites(redis: Redis): { readonly writes: number; stop(): void } {
  const stream = (redis as unknown as { stream: Socket }).stream;
  const original = stream.write;
  let writes = 0;
  stream.write = function (this: Socket, ...args: unknown[]) {
    writes++;
    return (original as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof stream.write;
  return {
    get writes() {
      return writes;
    },
    stop: () => void (stream.write = original),
  };
}

async function commandStats(redis: Redis): Promise<Record<string, number>> {
  const info = await redis.info('commandstats');
  const out: Record<string, number> = {};
  for (const m of info.matchAll(/cmdstat_([a-z|]+):calls=(\d+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

async function scriptCalls(redis: Redis, since: Record<string, number>): Promise<number> {
  const now = await commandStats(redis);
  return (now.evalsha ?? 0) + (now.eval ?? 0) - (since.evalsha ?? 0) - (since.eval ?? 0);
}

beforeAll(async () => {
  server = await startRedis();
});

afterAll(async () => {
  for (const s of stores) await s.dispose();
  await Promise.all(connections.map((c) => c.quit().catch(() => c.disconnect())));
  await server?.stop();
});

describe('key layout', () => {
  it('keeps every key and the channel of a session under its {sid} hash tag, in one slot', async () => {
    const { store, redis, prefix } = makeStore();
    const sid = await open(store, { initial: ['"hello"'] });
    await store.receive(sid, { msgs: [{ seq: 2, json: '"behind a gap"' }], window: 10, bufferBytes: 1000, lease: { token: newToken(), ms: LONG }, maxDeliver: 10 });
    await store.join(sid, 'room');
    const keys = (await redis.keys(`${prefix}*`)).sort();
    expect(keys).toEqual(
      [`${prefix}{${sid}}:s`, `${prefix}{${sid}}:out`, `${prefix}{sessions}`, `${prefix}group:{room}`].sort(),
    );
    const k = new RedisKeys(prefix).session(sid);
    const slots = new Set([k.s, k.out, k.channel].map(keySlot));
    expect(slots.size).toBe(1);
    expect(keySlot(`${prefix}{sessions}`)).toBe(keySlot(`${prefix}{sessions}:sweep`));
    // The session record: one hash, group membership as a field.
    expect(await redis.type(k.s)).toBe('hash');
    expect(await redis.hget(k.s, 'g:room')).toBe(':0'); // its cursor: the group had no log yet
    // The message behind a gap: in the record, as the field i<seq>.
    expect(await redis.hget(k.s, 'i2')).toBe('"behind a gap"');
    expect(await redis.type(k.out)).toBe('list');
  });

  it('computes Redis Cluster slots as Redis does (CRC16 of the hash tag)', () => {
    // Reference values from CLUSTER KEYSLOT.
    expect(keySlot('foo')).toBe(12182);
    expect(keySlot('{user1000}.following')).toBe(keySlot('user1000'));
    expect(keySlot('{}x')).toBe(keySlot('{}x')); // empty tag: the whole key
    expect(keySlot('123456789')).toBe(0x31c3 & 16383);
  });

  it('refuses a prefix with braces (they would break the hash tags)', () => {
    expect(() => new RedisStore({ redis: connect(), prefix: 'a{b}:' })).toThrow(/prefix/);
  });

  it('reports every bad option as BidiError INVALID_OPTIONS', () => {
    const redis = connect();
    const bad: Array<() => unknown> = [
      () => new RedisStore({ redis, prefix: 'a{b}:' }),
      () => new RedisStore({ redis, subscriber: redis }),
      () => new RedisStore(undefined as unknown as ConstructorParameters<typeof RedisStore>[0]),
      () => new RedisStore({} as ConstructorParameters<typeof RedisStore>[0]),
    ];
    for (const make of bad) {
      let thrown: unknown;
      try {
        make();
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(BidiError);
      expect((thrown as BidiError).code).toBe('INVALID_OPTIONS');
    }
  });

  it('an idle session is one key: the empty inbound buffer and log take no space', async () => {
    const { store, redis, prefix } = makeStore();
    const sid = await open(store);
    expect((await redis.keys(`${prefix}{${sid}}*`)).length).toBe(1);
  });
});

describe('create races', () => {
  it('two instances creating the same sid: one wins, and its session keeps its entry in the sessions index', async () => {
    const prefix = `u${newToken()}:`;
    const a = makeStore({ prefix }).store;
    const b = makeStore({ prefix }).store;
    const keys = new RedisKeys(prefix);
    const index = connect();
    for (let round = 0; round < 40; round++) {
      const sid = newSessionId();
      const input = { sid, userJson: 'null', stateJson: '{}', initial: [], idleMs: LONG, maxSessions: 1e9 };
      const results = await Promise.all([a.create({ ...input, token: newToken() }), b.create({ ...input, token: newToken() })]);
      expect(results.map((r) => r.status).sort()).toEqual(['exists', 'ok']);
      expect(await index.zscore(keys.sessions, sid)).not.toBeNull();
    }
  });
});

describe('append ids', () => {
  it('refuses an id the script could not store unambiguously, before sending anything', async () => {
    const { store } = makeStore();
    const sid = await open(store);
    for (const id of ['a|b', 'a:b', '', 'x'.repeat(65), 'é']) {
      await expect(store.append(sid, ['1'], ROOMY, id)).rejects.toThrow(/append id must match/);
      await expect(store.appendMany([sid], '1', ROOMY, id)).rejects.toThrow(/append id must match/);
    }
    expect((await store.inspect([sid]))[0]).toMatchObject({ lastSeq: 0 });
  });

  it('keeps the ids in their own key, which expires 10 minutes after the last append', async () => {
    const { store, redis, prefix } = makeStore();
    const sid = await open(store);
    const keys = new RedisKeys(prefix).session(sid);
    await store.append(sid, ['1'], ROOMY);
    expect(await redis.exists(keys.aids)).toBe(0); // no id, no list
    await store.append(sid, ['2'], ROOMY, 'first-id');
    expect(await redis.get(keys.aids)).toBe('|first-id:2');
    await store.append(sid, ['3', '4'], ROOMY, 'two-msgs');
    expect(await redis.get(keys.aids)).toBe('|two-msgs:3:4|first-id:2');
    const ttl = await redis.pttl(keys.aids);
    expect(ttl).toBeGreaterThan(590_000);
    expect(ttl).toBeLessThanOrEqual(600_000);
    expect(await redis.hexists(keys.s, 'aids')).toBe(0); // the record stays small
  });

  it('holds exactly the last 32 ids, and starts over when the list expired', async () => {
    const { store, redis, prefix } = makeStore();
    const sid = await open(store);
    const keys = new RedisKeys(prefix).session(sid);
    for (let i = 1; i <= 100; i++) await store.append(sid, [String(i)], ROOMY, `id${i}`);
    const entries = (await redis.get(keys.aids))!.split('|').slice(1);
    expect(entries).toEqual(Array.from({ length: 32 }, (_, k) => `id${100 - k}:${100 - k}`));
    expect(await redis.hget(keys.s, 'an')).toBe('32');
    await redis.del(keys.aids); // as its TTL would
    await store.append(sid, ['101'], ROOMY, 'fresh');
    expect(await redis.get(keys.aids)).toBe('|fresh:101');
    expect(await redis.hget(keys.s, 'an')).toBe('1');
  });
});

describe('TTLs', () => {
  it('gives every session key the safety TTL from the last activity, far above the idle timeout', async () => {
    const { store, redis } = makeStore();
    const sid = await open(store, { idleMs: 120_000, initial: ['1'] });
    const k = new RedisKeys((store as unknown as { keys: RedisKeys }).keys.prefix).session(sid);
    await store.receive(sid, { msgs: [{ seq: 3, json: '3' }], window: 10, bufferBytes: 1000, lease: { token: newToken(), ms: 5_000 }, maxDeliver: 10 });
    for (const key of [k.s, k.out]) {
      const ttl = await redis.pttl(key);
      expect(ttl).toBeGreaterThan(3_600_000 - 5_000); // default max(10 × idle, 1 h) = 1 h
      expect(ttl).toBeLessThanOrEqual(3_600_000);
    }
  });

  it('gives keys created by append (the log) the record’s TTL', async () => {
    const { store, redis } = makeStore({ safetyTtlMs: 500_000 });
    const sid = await open(store);
    await store.append(sid, ['1'], ROOMY);
    const keys = (store as unknown as { keys: RedisKeys }).keys.session(sid);
    const [s, out] = [await redis.pttl(keys.s), await redis.pttl(keys.out)];
    expect(out).toBeGreaterThan(0);
    expect(Math.abs(s - out)).toBeLessThan(1_000);
  });

  it('expires a tombstone after tombstoneMs', async () => {
    const { store, redis } = makeStore({ tombstoneMs: 1_000 });
    const sid = await open(store, { initial: ['1'] });
    const keys = (store as unknown as { keys: RedisKeys }).keys.session(sid);
    // A client message behind a gap: the close drops it (and the tombstone holds no inbound field).
    await store.receive(sid, { msgs: [{ seq: 2, json: '2' }], window: 10, bufferBytes: 1000, lease: { token: newToken(), ms: LONG }, maxDeliver: 10 });
    expect(await redis.hget(keys.s, 'i2')).toBe('2');
    const token = newToken();
    await store.close(sid, { reason: 'r', lease: { token, ms: LONG } });
    expect(await redis.hmget(keys.s, 'i2', 'ibytes')).toEqual([null, '0']);
    await store.finishClose(sid, token);
    for (const key of [keys.s, keys.out]) {
      const ttl = await redis.pttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(1_000);
    }
    expect(await redis.hkeys(keys.s)).not.toContainEqual(expect.stringMatching(/^i\d+$/));
  });

  it('drops the index entry of a session whose keys expired unswept, freeing its maxSessions slot', async () => {
    const { store, redis, prefix } = makeStore({ safetyTtlMs: () => 60 });
    await open(store, { idleMs: 20, maxSessions: 1 });
    await sleep(120); // keys gone by TTL, no sweep ran
    expect(await redis.zcard(`${prefix}{sessions}`)).toBe(1);
    expect((await store.create({ sid: newSessionId(), userJson: 'null', stateJson: '{}', initial: [], idleMs: LONG, maxSessions: 1 })).status).toBe(
      'too-many-sessions',
    );
    expect(await store.sweep({ lease: { token: newToken(), ms: 1_000 }, limit: 10 })).toEqual({ status: 'ok', closing: [] });
    expect(await redis.zcard(`${prefix}{sessions}`)).toBe(0);
    await open(store, { maxSessions: 1 });
  });
});

describe('scripts', () => {
  const commandsDir = path.join(__dirname, '../../src/redis/commands');
  const luaFiles = (dir: string) =>
    readdirSync(dir)
      .filter((f) => f.endsWith('.lua'))
      .map((f) => f.slice(0, -'.lua'.length))
      .sort();

  it('defines one versioned command per script on the connection, and loads each script once', async () => {
    const { store, redis } = makeStore();
    for (const def of Object.values(SCRIPTS)) {
      expect(def.command).toMatch(new RegExp(`^bidiweb_[a-z_]+_v${SCRIPT_VERSION}$`));
      expect(typeof (redis as unknown as Record<string, unknown>)[def.command]).toBe('function');
      expect(def.lua).toMatch(/KEYS\[1\]/);
    }
    const sid = await open(store);
    const before = await commandStats(redis);
    for (let i = 0; i < 5; i++) await store.append(sid, ['1'], ROOMY);
    const after = await commandStats(redis);
    // The first call on a connection may be an EVAL; afterwards EVALSHA only.
    expect((after.evalsha ?? 0) - (before.evalsha ?? 0)).toBeGreaterThanOrEqual(4);
    expect((after.eval ?? 0) - (before.eval ?? 0)).toBeLessThanOrEqual(1);
  });

  it('takes every file of commands/, named <name>-<numberOfKeys>.lua, with the includes each asks for, once', () => {
    expect(Object.keys(SCRIPT_FILES).sort()).toEqual(luaFiles(commandsDir));
    expect(Object.keys(INCLUDE_FILES).sort()).toEqual(luaFiles(path.join(commandsDir, 'includes')));
    for (const [file, text] of Object.entries(SCRIPT_FILES)) {
      expect([file, text]).toEqual([file, readFileSync(path.join(commandsDir, `${file}.lua`), 'utf8')]);
      const [, name, keys] = /^(.*)-(\d+)$/.exec(file)!;
      const def = SCRIPTS[name as ScriptName];
      // The highest KEYS[n] the file uses is its key count.
      const used = Math.max(...[...text.matchAll(/KEYS\[(\d+)\]/g)].map((m) => Number(m[1])));
      expect([file, def.numberOfKeys, used]).toEqual([file, Number(keys), Number(keys)]);
      expect(def.lua).not.toMatch(/^-- @include/m);
      // nowMs comes from includes/time.lua only, defined once whatever includes it.
      expect([file, def.lua.split('local function nowMs()').length - 1]).toEqual([file, /nowMs\(\)|msOf\(/.test(text) || /@include session/.test(text) ? 1 : 0]);
      expect(text).not.toMatch(/tonumber\(t\[1\]\) \* 1000/);
    }
  });

  it('pins the script set to its version: changing a script means a new version', () => {
    const fingerprint = createHash('sha1')
      .update(JSON.stringify(Object.values(SCRIPTS).map((d) => [d.command, d.numberOfKeys, d.lua])))
      .digest('hex');
    // A failure here means a script's text changed: bump SCRIPT_VERSION in src/redis/scripts.ts
    // and put the new fingerprint here (docs/REDIS.md, "Versioned command names").
    expect({ version: SCRIPT_VERSION, fingerprint }).toEqual({ version: 6, fingerprint: '27e38fb3ec7cac9ec0bb34043b9e6c688c7c1140' });
  });

  it('keeps its commands when another version defines its own on the same connection', async () => {
    const { store, redis } = makeStore();
    const sid = await open(store);
    const token = newToken();
    await store.receive(sid, { msgs: [{ seq: 1, json: '1' }], window: 10, bufferBytes: 1000, lease: { token, ms: LONG }, maxDeliver: 10 });
    // A newer copy of bidiweb loaded later in the same process, lent the same connection.
    redis.defineCommand(`bidiweb_renew_v${SCRIPT_VERSION + 1}`, { numberOfKeys: 1, lua: "return 'newer'" });
    expect(await store.renewLease(sid, token, LONG)).toBe(true);
    expect(await (redis as unknown as Record<string, (key: string) => Promise<unknown>>)[`bidiweb_renew_v${SCRIPT_VERSION + 1}`]!('k')).toBe('newer');
  });
});

describe('reply decoders', () => {
  // Each operation against a script that answers something no version of it sends (the command
  // redefined under the store's own name): a clear error naming the script, never a guessed result.
  const LEASE = { token: 't', ms: LONG };
  const cases: Array<[ScriptName, (store: RedisStore, sid: string) => Promise<unknown>]> = [
    ['admit', (store) => store.create({ sid: newSessionId(), userJson: 'null', stateJson: '{}', initial: [], idleMs: LONG, maxSessions: 10 })],
    ['create', (store) => store.create({ sid: newSessionId(), userJson: 'null', stateJson: '{}', initial: [], idleMs: LONG, maxSessions: 10 })],
    ['receive', (store, sid) => store.receive(sid, { msgs: [{ seq: 1, json: '1' }], window: 10, bufferBytes: 1000, lease: LEASE, maxDeliver: 10 })],
    ['commit', (store, sid) => store.commit(sid, { token: 't', seq: 1, leaseMs: LONG, next: true, maxDeliver: 10 })],
    ['renew', (store, sid) => store.renewLease(sid, 't', LONG)],
    ['append', (store, sid) => store.append(sid, ['1'], ROOMY)],
    ['read', (store, sid) => store.read(sid, { ack: 0, watchToken: 'w', claim: true, maxMessages: 10 })],
    ['close', (store, sid) => store.close(sid, { reason: 'test' })],
    ['finish-close', (store, sid) => store.finishClose(sid, 't')],
    ['sweep', (store) => store.sweep({ lease: LEASE, limit: 10 })],
    ['publish', async (store, sid) => (await store.join(sid, 'g'), store.publish('g', '1', { maxEntries: 10, maxAgeMs: LONG }))],
    ['group-join', (store, sid) => store.join(sid, 'g')],
    ['join', (store, sid) => store.join(sid, 'g')],
  ];
  it.each(cases)('%s: an unexpected reply throws', async (name, op) => {
    const { store, redis } = makeStore();
    const sid = await open(store);
    redis.defineCommand(SCRIPTS[name].command, { numberOfKeys: SCRIPTS[name].numberOfKeys, lua: "return {'surprise', 'x'}" });
    await expect(op(store, sid)).rejects.toThrow(`bidiweb/redis: unexpected reply from the ${name} script: ["surprise","x"]`);
  });

  it('expire-check (in the sweep) and group-tail (in a read): an unexpected reply throws', async () => {
    const { store, redis } = makeStore();
    const sid = await open(store, { idleMs: 1 });
    await store.join(sid, 'g');
    redis.defineCommand(SCRIPTS['group-tail'].command, { numberOfKeys: 2, lua: "return {'e', 0, 'x'}" });
    await expect(store.read(sid, { ack: 0, watchToken: 'w', claim: true, maxMessages: 10 })).rejects.toThrow('unexpected reply from the group-tail script');
    await sleep(10);
    redis.defineCommand(SCRIPTS['expire-check'].command, { numberOfKeys: 3, lua: "return {'wait'}" });
    await expect(store.sweep({ lease: { token: newToken(), ms: 1_000 }, limit: 10 })).rejects.toThrow('unexpected reply from the expire-check script: ["wait"]');
  });
});

describe('round trips', () => {
  it('receive, commit, append, read and renewLease are one script call and one round trip each', async () => {
    const { store, redis } = makeStore();
    const sid = await open(store, { initial: ['1'] });
    await store.append(sid, ['warm-up'], ROOMY); // scripts loaded on this connection
    await store.read(sid, { ack: 0, watchToken: 'w', claim: true, maxMessages: 10 });
    const token = newToken();
    const ops: Array<[string, () => Promise<unknown>]> = [
      ['receive', () => store.receive(sid, { msgs: [{ seq: 1, json: '"a"' }], ack: 1, window: 10, bufferBytes: 1000, lease: { token, ms: LONG }, maxDeliver: 10 })],
      ['renewLease', () => store.renewLease(sid, token, LONG)],
      ['commit', () => store.commit(sid, { token, seq: 1, leaseMs: LONG, next: true, maxDeliver: 10, stateJson: '{"n":1}' })],
      ['append', () => store.append(sid, ['"b"'], ROOMY)],
      ['read', () => store.read(sid, { ack: 2, watchToken: 'w', claim: false, maxMessages: 10 })],
    ];
    for (const [name, op] of ops) {
      const stats = await commandStats(redis);
      const counter = countWrites(redis);
      await op();
      counter.stop();
      expect([name, counter.writes]).toEqual([name, 1]);
      expect([name, await scriptCalls(redis, stats)]).toEqual([name, 1]);
    }
  });

  it("a watch's re-read of a group member pulls what the groups' wake-ups carried in one script call, and reads the tails when they cannot tell", async () => {
    const { store, redis } = makeStore();
    const sid = await open(store);
    const groups = [`ga${newToken()}`, `gb${newToken()}`];
    for (const g of groups) await store.join(sid, g);
    const events: StoreEvent[] = [];
    const stop = await store.subscribe(sid, (e) => events.push(e));
    const read = (after: number, claim = false) => store.read(sid, { ack: 0, watchToken: 'w', claim, maxMessages: 100, ...(claim ? {} : { after }) });
    // The first read learns the cursors and listens to the groups' channels.
    await read(0, true);
    const measured = async (after: number) => {
      await sleep(50); // the wake-ups have come
      const stats = await commandStats(redis);
      const r = await read(after);
      return { r, scripts: await scriptCalls(redis, stats) };
    };
    await store.publish(groups[0]!, '"a1"', { maxEntries: 100, maxAgeMs: LONG });
    await store.publish(groups[1]!, '"b1"', { maxEntries: 100, maxAgeMs: LONG });
    await store.publish(groups[0]!, '"a2"', { maxEntries: 100, maxAgeMs: LONG });
    let m = await measured(0);
    expect(m.r).toMatchObject({ msgs: [{ seq: 1, json: '"a1"' }, { seq: 2, json: '"b1"' }, { seq: 3, json: '"a2"' }] });
    expect(m.scripts).toBe(1);
    // Another instance pulled the next entry first (its send): the guess misses, the read still gets everything, once.
    await store.publish(groups[1]!, '"b2"', { maxEntries: 100, maxAgeMs: LONG });
    const other = makeStore({ prefix: (store as unknown as { keys: RedisKeys }).keys.prefix }).store;
    await other.append(sid, ['"mine"'], ROOMY);
    await store.publish(groups[0]!, '"a3"', { maxEntries: 100, maxAgeMs: LONG });
    m = await measured(3);
    expect(m.r).toMatchObject({ msgs: [{ seq: 4, json: '"b2"' }, { seq: 5, json: '"mine"' }, { seq: 6, json: '"a3"' }] });
    // The call pulled a3 and answered the cursors; the hints, heard without a break, reach back to
    // them and hold nothing after: no tail to read.
    expect(m.scripts).toBe(1);
    // The cursors are known again: one call.
    await store.publish(groups[1]!, '"b3"', { maxEntries: 100, maxAgeMs: LONG });
    m = await measured(6);
    expect(m.r).toMatchObject({ msgs: [{ seq: 7, json: '"b3"' }] });
    expect(m.scripts).toBe(1);
    // A wake-up without its entry (too large to carry): the tails are read.
    const big = JSON.stringify('x'.repeat(40_000));
    await store.publish(groups[0]!, big, { maxEntries: 100, maxAgeMs: LONG });
    m = await measured(7);
    expect(m.r).toMatchObject({ msgs: [{ seq: 8, json: big }] });
    expect(m.scripts).toBeGreaterThan(1);
    stop();
  });

  /**
   * Holds back the reply to the next pipeline that reads a group's tail on `redis` (the read itself
   * goes to Redis at once, so its answer is of that moment) until `release()`.
   */
  function holdNextTailReply(redis: Redis): { sent: Promise<void>; release(): void } {
    const sha = createHash('sha1').update(SCRIPTS['group-tail'].lua).digest('hex');
    const original = redis.pipeline.bind(redis);
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let sent!: () => void;
    const sentP = new Promise<void>((resolve) => (sent = resolve));
    redis.pipeline = ((...args: Parameters<Redis['pipeline']>) => {
      const p = original(...args);
      const exec = p.exec.bind(p);
      p.exec = (async (...e: Parameters<typeof p.exec>) => {
        const isTail = (p as unknown as { _queue: Array<{ args: unknown[] }> })._queue.some((c) => c.args[0] === sha);
        if (!isTail) return exec(...e);
        redis.pipeline = original;
        const reply = exec(...e);
        sent();
        await released;
        return reply;
      }) as typeof p.exec;
      return p;
    }) as Redis['pipeline'];
    return { sent: sentP, release };
  }

  it('members of a room woken together read its tail once, and each pulls every entry once', async () => {
    const { store, redis } = makeStore();
    const group = `g${newToken()}`;
    const n = 20;
    const sids = await Promise.all(Array.from({ length: n }, () => open(store)));
    for (const sid of sids) await store.join(sid, group);
    const stops = await Promise.all(sids.map((sid) => store.subscribe(sid, () => {})));
    // Published while this store listens to nobody's groups: only the group's log has them.
    const other = makeStore({ prefix: (store as unknown as { keys: RedisKeys }).keys.prefix }).store;
    for (let i = 0; i < 30; i++) await other.publish(group, String(i), { maxEntries: 100, maxAgeMs: LONG });
    const stats = await commandStats(redis);
    const reads = await Promise.all(sids.map((sid) => store.read(sid, { ack: 0, watchToken: 'w', claim: true, maxMessages: 100 })));
    for (const r of reads) expect(r.status === 'ok' && r.msgs.map((m) => m.json)).toEqual(Array.from({ length: 30 }, (_, i) => String(i)));
    // Each: its read (answering the cursor) and the pull; the tail once for all (3 × 20 without sharing).
    expect(await scriptCalls(redis, stats)).toBeLessThanOrEqual(2 * n + 3);
    stops.forEach((stop) => stop());
  });

  it('a group tail already on its way serves no read or send that must see a publish made after it was sent', async () => {
    const { store, redis } = makeStore();
    const group = `g${newToken()}`;
    const [a, b, c] = await Promise.all([open(store), open(store), open(store)]);
    for (const sid of [a, b, c]) await store.join(sid, group);
    const retention = { maxEntries: 100, maxAgeMs: LONG };
    await store.publish(group, '"p1"', retention);
    const stopA = await store.subscribe(a, () => {});
    const stopB = await store.subscribe(b, () => {});
    // a's first read sends the tail of the group (p1 only) and waits for its answer.
    const held = holdNextTailReply(redis);
    const readA = store.read(a, { ack: 0, watchToken: 'w', claim: true, maxMessages: 100 });
    await held.sent;
    // Published after that tail was read; this store listens to the group (a's read subscribed) and hears it.
    await store.publish(group, '"p2"', retention);
    await sleep(30);
    // b is woken by nothing (it was not listening yet) and c sends after p2 resolved: each must have p2 first.
    const readB = store.read(b, { ack: 0, watchToken: 'w', claim: true, maxMessages: 100 });
    // (The read's bounds: the tail a send shares must be for the same cursor and bound.)
    const sendC = store.append(c, ['"c"'], DEFAULT_LIMITS);
    await sleep(30);
    held.release();
    const [ra, rb] = await Promise.all([readA, readB]);
    await sendC;
    const rc = await store.read(c, { ack: 0, watchToken: 'w', claim: true, maxMessages: 100 });
    expect(ra.status === 'ok' && ra.msgs.map((m) => m.json)).toEqual(['"p1"']);
    expect(rc.status === 'ok' && rc.msgs.map((m) => m.json)).toEqual(['"p1"', '"p2"', '"c"']);
    expect(rb.status === 'ok' && rb.msgs.map((m) => m.json)).toEqual(['"p1"', '"p2"']);
    stopA();
    stopB();
  });

  it("a watch's first read of a group member takes the entries from the hints when they reach back to its cursor", async () => {
    const { store, redis } = makeStore();
    const group = `g${newToken()}`;
    const [a, b] = await Promise.all([open(store), open(store)]);
    for (const sid of [a, b]) await store.join(sid, group);
    // a's watch keeps this store listening to the group; b's watch starts after the publishes.
    const stopA = await store.subscribe(a, () => {});
    await store.read(a, { ack: 0, watchToken: 'w', claim: true, maxMessages: 100 });
    for (let i = 1; i <= 3; i++) await store.publish(group, `"p${i}"`, { maxEntries: 100, maxAgeMs: LONG });
    await sleep(50); // their wake-ups have come
    const stopB = await store.subscribe(b, () => {});
    const stats = await commandStats(redis);
    const r = await store.read(b, { ack: 0, watchToken: 'w', claim: true, maxMessages: 100 });
    expect(r.status === 'ok' && r.msgs.map((m) => m.json)).toEqual(['"p1"', '"p2"', '"p3"']);
    // The read answering the cursor, and the pull: no tail read.
    expect(await scriptCalls(redis, stats)).toBe(2);
    stopA();
    stopB();
  });

  it('a group whose wake-ups went unheard for a while (the subscriber reconnected) is read from its log, never guessed empty', async () => {
    const subscriber = connect();
    const { store, prefix } = makeStore({ subscriber });
    const other = makeStore({ prefix }).store;
    const group = `g${newToken()}`;
    const sid = await open(store);
    await store.join(sid, group);
    const events: StoreEvent[] = [];
    const stop = await store.subscribe(sid, (e) => events.push(e));
    await store.read(sid, { ack: 0, watchToken: 'w', claim: true, maxMessages: 100 }); // listens to the group; nothing heard yet
    // Published while the subscriber is down: its wake-up is lost.
    const ready = new Promise<void>((resolve) => subscriber.once('ready', () => resolve()));
    subscriber.disconnect(true);
    await other.publish(group, '"lost"', { maxEntries: 100, maxAgeMs: LONG });
    await ready;
    for (let i = 0; i < 200 && events.length === 0; i++) await sleep(5); // the renewed subscription wakes the listener
    expect(events.length).toBeGreaterThan(0);
    const r = await store.read(sid, { ack: 0, watchToken: 'w', claim: false, maxMessages: 100, after: 0 });
    expect(r.status === 'ok' && r.msgs.map((m) => m.json)).toEqual(['"lost"']);
    stop();
  });

  it('a group wake-up the store cannot read ends its run of hearing: the next re-read reads the tails', async () => {
    const { store, redis, prefix } = makeStore();
    const group = `g${newToken()}`;
    const groupChannel = new RedisKeys(prefix).groupKeys(group).channel;
    const sid = await open(store);
    await store.join(sid, group);
    const events: StoreEvent[] = [];
    const stop = await store.subscribe(sid, (e) => events.push(e));
    await store.read(sid, { ack: 0, watchToken: 'w', claim: true, maxMessages: 100 }); // listens to the group
    const reRead = async (after: number) => {
      for (let i = 0; i < 200 && events.length === 0; i++) await sleep(5);
      events.length = 0;
      const stats = await commandStats(redis);
      const r = await store.read(sid, { ack: 0, watchToken: 'w', claim: false, maxMessages: 100, after });
      return { msgs: r.status === 'ok' ? r.msgs.map((m) => m.json) : [], scripts: await scriptCalls(redis, stats) };
    };
    await store.publish(group, '"p1"', { maxEntries: 100, maxAgeMs: LONG });
    expect(await reRead(0)).toEqual({ msgs: ['"p1"'], scripts: 1 }); // from the hints
    // A wake-up naming entries it cannot tell (here: not one bidiweb sends).
    await redis.publish(groupChannel, 'g? not a wake-up');
    await store.publish(group, '"p2"', { maxEntries: 100, maxAgeMs: LONG });
    const r = await reRead(1);
    expect(r.msgs).toEqual(['"p2"']);
    expect(r.scripts).toBeGreaterThan(1);
    stop();
  });

  it('appendMany is one pipeline: one round trip for 200 sessions', async () => {
    const { store, redis } = makeStore();
    const sids = await Promise.all(Array.from({ length: 200 }, () => open(store)));
    await store.append(sids[0]!, ['warm-up'], ROOMY);
    const stats = await commandStats(redis);
    const counter = countWrites(redis);
    const results = await store.appendMany(sids, '"to all"', ROOMY);
    counter.stop();
    expect(counter.writes).toBe(1);
    expect(await scriptCalls(redis, stats)).toBe(200);
    expect(results.filter((r) => r.status === 'ok')).toHaveLength(200);
  });

  it('publishes of one turn go together: consecutive ones to a group in one script call of up to 128, in call order', async () => {
    const { store, redis } = makeStore();
    const sid = await open(store);
    await store.join(sid, 'loop');
    await store.join(sid, 'other');
    const retention = { maxEntries: 1000, maxAgeMs: LONG };
    await store.publish('loop', '"warm-up"', retention, newAppendId());
    const stats = await commandStats(redis);
    // 300 to one group, then one to another, then 2 more to the first: 3 + 1 + 1 calls.
    const calls = Array.from({ length: 300 }, (_, i) => store.publish('loop', String(i), retention, newAppendId()));
    calls.push(store.publish('other', '"x"', retention, newAppendId()), store.publish('loop', '300', retention, newAppendId()), store.publish('loop', '301', retention, newAppendId()));
    const results = await Promise.all(calls);
    expect(await scriptCalls(redis, stats)).toBe(5);
    expect(results.map((r) => r.gseq)).toEqual([...Array.from({ length: 300 }, (_, i) => i + 2), 1, 302, 303]);
    expect(results.every((r) => r.status === 'ok' && r.members === 1)).toBe(true);
    const read = await store.read(sid, { ack: 0, watchToken: 'w', claim: true, maxMessages: 1000 });
    expect(read.status).toBe('ok');
    const msgs = read.status === 'ok' ? read.msgs.map((m) => m.json) : [];
    expect(msgs.filter((m) => m !== '"x"')).toEqual(['"warm-up"', ...Array.from({ length: 302 }, (_, i) => String(i))]);
  });

  it('wakes for a batch: one per run of small entries (up to 32 KiB), a bare one for an entry too large or with a newline', async () => {
    const { store, redis, prefix } = makeStore();
    const sid = await open(store);
    await store.join(sid, 'wakes');
    const g = new RedisKeys(prefix).groupKeys('wakes');
    const sub = connect();
    const heard: string[] = [];
    sub.on('message', (_channel: string, payload: string) => heard.push(payload));
    await sub.subscribe(g.channel);
    const big = JSON.stringify('x'.repeat(40_000));
    const mid = JSON.stringify('y'.repeat(20_000));
    const msgs = ['1', '2', big, '"line\\nbreak"', '"raw\nnewline"', mid, mid, '3'];
    expect(await redis.eval(SCRIPTS.publish.lua, 3, g.members, g.log, g.meta, g.channel, '0', 100, LONG, '', ...msgs)).toEqual([1, 1]);
    for (let i = 0; i < 100 && heard.length < 6; i++) await sleep(5);
    const decoded = heard.map((w) => decodeGroupWake(w)!);
    // Runs: [1, 2], [big] bare, ["line\\nbreak"] (an escaped newline is fine), [raw newline] bare, [mid], [mid, 3].
    expect(decoded.map((d) => d.map((e) => [e.gseq, e.json === undefined ? null : e.json.length]))).toEqual([
      [
        [1, 1],
        [2, 1],
      ],
      [[3, null]],
      [[4, msgs[3]!.length]],
      [[5, null]],
      [[6, mid.length]],
      [
        [7, mid.length],
        [8, 1],
      ],
    ]);
    expect(decoded.flat().filter((e) => e.json !== undefined).map((e) => e.json)).toEqual([msgs[0], msgs[1], msgs[3], mid, mid, msgs[7]]);
    expect(decodeGroupWake('g1.2 5 100 2\nonly-one')).toBeNull();
    expect(decodeGroupWake('g1.2 5 100 999999999')).toBeNull();
    expect(decodeGroupWake('g1.2 5 100')).toEqual([{ epoch: '1.2', gseq: 5, t: 100 }]);
    await sub.quit();
  });

  it('a batch of publishes run twice (a lost reply, resent) writes its entries once and answers as the first run', async () => {
    const { store, redis, prefix } = makeStore();
    const sid = await open(store);
    await store.join(sid, 'twice');
    const g = new RedisKeys(prefix).groupKeys('twice');
    const run = () => redis.eval(SCRIPTS.publish.lua, 3, g.members, g.log, g.meta, g.channel, '0', 100, LONG, 'batch-id', '"a"', '"b"', '"c"');
    expect(await run()).toEqual([1, 1]);
    expect(await run()).toEqual([1, 1]);
    expect(await redis.llen(g.log)).toBe(3);
    expect(await store.publish('twice', '"d"', { maxEntries: 100, maxAgeMs: LONG }, newAppendId())).toEqual({ status: 'ok', members: 1, gseq: 4 });
  });
});

describe('subscriptions', () => {
  async function clients(redis: Redis): Promise<number> {
    return String(await redis.client('LIST')).trim().split('\n').length;
  }

  it('shares one subscriber connection among all listeners, made on the first subscribe', async () => {
    const { store, redis, prefix } = makeStore({ subscriptionLingerMs: 0 });
    const sids = await Promise.all(Array.from({ length: 30 }, () => open(store)));
    const before = await clients(redis);
    const events: StoreEvent[] = [];
    const unsubs = await Promise.all(sids.flatMap((sid) => [store.subscribe(sid, (e) => events.push(e)), store.subscribe(sid, () => {})]));
    expect((await clients(redis)) - before).toBe(1);
    expect((await redis.pubsub('CHANNELS', `${prefix}*`)).length).toBe(30);
    await store.appendMany(sids, '1', ROOMY);
    for (let i = 0; i < 100 && events.length < 30; i++) await sleep(5);
    expect(events).toHaveLength(30);
    // Ref-counted: the channel stays until its last listener leaves.
    unsubs.forEach((u, i) => i % 2 === 0 && u());
    await sleep(30);
    expect((await redis.pubsub('CHANNELS', `${prefix}*`)).length).toBe(30);
    unsubs.forEach((u) => u());
    for (let i = 0; i < 100 && (await redis.pubsub('CHANNELS', `${prefix}*`)).length > 0; i++) await sleep(5);
    expect(await redis.pubsub('CHANNELS', `${prefix}*`)).toEqual([]);
  });

  it('listens to a member’s group channel for all the session’s listeners here, until the last of them leaves', async () => {
    const { store, redis, prefix } = makeStore({ subscriptionLingerMs: 0 });
    const keys = new RedisKeys(prefix);
    const sid = await open(store);
    const group = `g${newToken()}`;
    await store.join(sid, group);
    const groupChannel = keys.groupKeys(group).channel;
    const a: StoreEvent[] = [];
    const b: StoreEvent[] = [];
    const stopA = await store.subscribe(sid, (e) => a.push(e));
    const stopB = await store.subscribe(sid, (e) => b.push(e));
    await store.read(sid, { ack: 0, watchToken: 'w', claim: true, maxMessages: 10 }); // learns the group: subscribes to it
    expect(await redis.pubsub('NUMSUB', groupChannel)).toEqual([groupChannel, 1]);
    const publishWakes = async (events: StoreEvent[]) => {
      events.length = 0;
      await store.publish(group, '1', { maxEntries: 100, maxAgeMs: LONG });
      for (let i = 0; i < 100 && events.length === 0; i++) await sleep(5);
      expect(events).toMatchObject([{ type: 'message' }]);
    };
    await publishWakes(a);
    await publishWakes(b);
    stopA();
    await sleep(30);
    // One listener of the session is left: the group channel stays, and wakes it.
    expect(await redis.pubsub('NUMSUB', groupChannel)).toEqual([groupChannel, 1]);
    a.length = 0;
    await publishWakes(b);
    expect(a).toEqual([]);
    stopB();
    for (let i = 0; i < 100 && Number((await redis.pubsub('NUMSUB', groupChannel))[1]) > 0; i++) await sleep(5);
    expect(await redis.pubsub('NUMSUB', groupChannel)).toEqual([groupChannel, 0]);
  });

  it('wakes a member once for a run of publishes whose wake-ups arrive together, with every entry in the hints', async () => {
    const { store } = makeStore({ subscriptionLingerMs: 0 });
    const sid = await open(store);
    const group = `g${newToken()}`;
    await store.join(sid, group);
    const events: StoreEvent[] = [];
    const stop = await store.subscribe(sid, (e) => events.push(e));
    await store.read(sid, { ack: 0, watchToken: 'w', claim: true, maxMessages: 10 }); // learns the group: subscribes to it
    // One batch: 100 entries, 100 wake-ups in one reply from Redis.
    await Promise.all(Array.from({ length: 100 }, (_, i) => store.publish(group, String(i), { maxEntries: 1000, maxAgeMs: LONG }, newAppendId())));
    for (let i = 0; i < 100 && events.length === 0; i++) await sleep(5);
    await sleep(50);
    expect(events.length).toBeGreaterThanOrEqual(1);
    expect(events.length).toBeLessThan(10);
    // The re-read the wake-up causes pulls all 100 from the hints (one script call, below).
    const read = await store.read(sid, { ack: 0, watchToken: 'w', claim: false, maxMessages: 1000, after: 0 });
    expect(read.status === 'ok' && read.msgs.map((m) => m.json)).toEqual(Array.from({ length: 100 }, (_, i) => String(i)));
    stop();
  });

  it('hands messages it stored to its own listeners at once, and drops the published copy (whichever comes second)', async () => {
    const { store, redis, prefix } = makeStore();
    const sid = await open(store);
    const channel = new RedisKeys(prefix).session(sid).channel;
    const events: StoreEvent[] = [];
    const stop = await store.subscribe(sid, (e) => events.push(e));
    // Another instance's append: only the published copy reaches this one.
    const other = makeStore({ prefix }).store;
    expect(await other.append(sid, ['"other"'], ROOMY)).toMatchObject({ firstSeq: 1 });
    for (let i = 0; i < 100 && events.length === 0; i++) await sleep(5);
    // This instance's own append, and a commit carrying sends.
    await store.append(sid, ['"mine"', '"too"'], ROOMY);
    const token = newToken();
    await store.receive(sid, { msgs: [{ seq: 1, json: '1' }], window: 10, bufferBytes: 1000, lease: { token, ms: LONG }, maxDeliver: 10 });
    await store.commit(sid, { token, seq: 1, leaseMs: LONG, next: false, maxDeliver: 10, sends: { msgs: ['"reply"'], limits: ROOMY } });
    await sleep(100);
    expect(events.map((e) => (e.type === 'message' ? e.run?.msgs.map((m) => [m.seq, m.json]) : e.type))).toEqual([
      [[1, '"other"']],
      [
        [2, '"mine"'],
        [3, '"too"'],
      ],
      [[4, '"reply"']],
    ]);
    // Redis did publish each of them (other instances need the copy).
    expect(Number((await redis.pubsub('NUMSUB', channel))[1])).toBe(1);
    stop();
  });

  it("a commit's messages are not published while the session's current watch listens on the committing instance (it wakes that watch itself); they are once a watch claimed elsewhere, or nobody here listens", async () => {
    const { store: a, prefix } = makeStore();
    const b = makeStore({ prefix }).store;
    const sid = await open(a);
    const channel = new RedisKeys(prefix).session(sid).channel;
    // What Redis publishes on the session's channel, as any other instance would hear it.
    const spy = connect();
    const published: string[] = [];
    spy.on('message', (_ch: string, payload: string) => published.push(payload));
    await spy.subscribe(channel);
    let seq = 0;
    const echo = async (json: string): Promise<void> => {
      const token = newToken();
      seq++;
      await a.receive(sid, { msgs: [{ seq, json: String(seq) }], window: 10, bufferBytes: 1000, lease: { token, ms: LONG }, maxDeliver: 10 });
      const r = await a.commit(sid, { token, seq, leaseMs: LONG, next: true, maxDeliver: 10, sends: { msgs: [json], limits: ROOMY } });
      expect(r).toMatchObject({ status: 'ok', sent: { stored: 1 } });
    };
    const runs = (events: StoreEvent[]): unknown[] => events.flatMap((e) => (e.type === 'message' && e.run ? e.run.msgs.map((m) => m.json) : []));

    // A watch here (subscribed, then claimed as core does).
    const atA: StoreEvent[] = [];
    const stopA = await a.subscribe(sid, (e) => atA.push(e));
    await a.read(sid, { ack: 0, watchToken: 'watch-a', claim: true, maxMessages: 10 });
    await echo('"one"');
    await sleep(100);
    expect(runs(atA)).toEqual(['"one"']);
    expect(published.filter((p) => p.startsWith('m'))).toEqual([]);

    // A newer watch on another instance: the record names it, so the same commit publishes.
    const atB: StoreEvent[] = [];
    const stopB = await b.subscribe(sid, (e) => atB.push(e));
    await b.read(sid, { ack: 0, watchToken: 'watch-b', claim: true, maxMessages: 10 });
    await echo('"two"');
    for (let i = 0; i < 100 && runs(atB).length === 0; i++) await sleep(5);
    expect(runs(atB)).toEqual(['"two"']);
    expect(published.filter((p) => p.startsWith('m'))).toHaveLength(1);

    // This instance's watch claims again, then leaves: with nobody listening here, it publishes.
    await a.read(sid, { ack: 0, watchToken: 'watch-a2', claim: true, maxMessages: 10 });
    await echo('"three"');
    await sleep(100);
    expect(published.filter((p) => p.startsWith('m'))).toHaveLength(1);
    stopA();
    await echo('"four"');
    for (let i = 0; i < 100 && published.filter((p) => p.startsWith('m')).length < 2; i++) await sleep(5);
    expect(published.filter((p) => p.startsWith('m'))).toHaveLength(2);
    expect(runs(atA)).toEqual(['"one"', '"two"', '"three"']);
    stopB();
  });

  it('a commit that ran without a publish but whose reply was lost still wakes the watch here (it reads the log)', async () => {
    const { store } = makeStore();
    const sid = await open(store);
    const events: StoreEvent[] = [];
    const stop = await store.subscribe(sid, (e) => events.push(e));
    await store.read(sid, { ack: 0, watchToken: 'watch-here', claim: true, maxMessages: 10 });
    // The script runs (stores the reply, publishes nothing: the watch is here), then its reply is lost.
    const scripts = (store as unknown as { scripts: { run: (...a: unknown[]) => Promise<unknown> } }).scripts;
    const run = scripts.run.bind(scripts);
    scripts.run = async (...a: unknown[]) => {
      const reply = await run(...a);
      if (a[0] === 'commit') throw new Error('connection lost before the reply');
      return reply;
    };
    const token = newToken();
    await store.receive(sid, { msgs: [{ seq: 1, json: '1' }], window: 10, bufferBytes: 1000, lease: { token, ms: LONG }, maxDeliver: 10 });
    await expect(store.commit(sid, { token, seq: 1, leaseMs: LONG, next: true, maxDeliver: 10, sends: { msgs: ['"reply"'], limits: ROOMY } })).rejects.toThrow('connection lost');
    scripts.run = run;
    expect(events.filter((e) => e.type === 'message')).toHaveLength(1);
    const r = await store.read(sid, { ack: 0, watchToken: 'watch-here', claim: false, maxMessages: 10, after: 0 });
    expect(r).toMatchObject({ status: 'ok', msgs: [{ seq: 1, json: '"reply"' }] });
    stop();
  });

  it('re-subscribes a listener added while the last one’s UNSUBSCRIBE is in flight', async () => {
    const { store, redis } = makeStore({ subscriptionLingerMs: 0 });
    const sid = await open(store);
    for (let round = 0; round < 20; round++) {
      const first = await store.subscribe(sid, () => {});
      first(); // UNSUBSCRIBE goes out...
      const events: StoreEvent[] = [];
      const second = await store.subscribe(sid, (e) => events.push(e)); // ...and this must wait for it, then SUBSCRIBE again
      await store.append(sid, [String(round)], ROOMY);
      for (let i = 0; i < 100 && events.length === 0; i++) await sleep(2);
      expect(events).toMatchObject([{ type: 'message' }]);
      second();
    }
    const channel = new RedisKeys((store as unknown as { keys: RedisKeys }).keys.prefix).session(sid).channel;
    for (let i = 0; i < 100 && Number((await redis.pubsub('NUMSUB', channel))[1]) > 0; i++) await sleep(5);
    expect(await redis.pubsub('NUMSUB', channel)).toEqual([channel, 0]);
  });

  it('wakes every listener after the subscriber reconnects (events in the gap are lost)', async () => {
    const { store, redis } = makeStore();
    const sid = await open(store);
    const events: StoreEvent[] = [];
    const unsubscribe = await store.subscribe(sid, (e) => events.push(e));
    await redis.client('KILL', 'TYPE', 'pubsub');
    for (let i = 0; i < 200 && events.length === 0; i++) await sleep(10);
    expect(events[0]).toMatchObject({ type: 'message' });
    // And the subscription is back.
    events.length = 0;
    await sleep(50);
    await store.close(sid, { reason: 'r' });
    for (let i = 0; i < 200 && events.length === 0; i++) await sleep(10);
    expect(events).toEqual([{ type: 'close' }]);
    unsubscribe();
  });
});

describe('connections', () => {
  it('dispose closes the subscriber it made, never the connections it was given', async () => {
    const { store, redis } = makeStore();
    const sid = await open(store);
    await store.subscribe(sid, () => {});
    const made = (store as unknown as { subs: { conn: Redis } }).subs.conn;
    expect(made).not.toBe(redis);
    await store.dispose();
    expect(made.status).toBe('end');
    expect(redis.status).toBe('ready');

    const lent = connect();
    const other = makeStore({ subscriber: lent });
    const sid2 = await open(other.store);
    const events: StoreEvent[] = [];
    await other.store.subscribe(sid2, (e) => events.push(e));
    await other.store.append(sid2, ['1'], ROOMY);
    for (let i = 0; i < 100 && events.length === 0; i++) await sleep(5);
    expect(events).toMatchObject([{ type: 'message' }]);
    await other.store.dispose();
    expect(lent.status).toBe('ready');
    expect(other.redis.status).toBe('ready');
  });
});

describe('memory', () => {
  it('stays small: an idle session under 600 bytes, a queued message under 100 bytes plus its JSON', async () => {
    const { store, redis } = makeStore();
    const used = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
    const n = 2_000;
    const sids: string[] = [];
    const before = await used();
    for (let i = 0; i < n; i += 500) {
      const batch = await Promise.all(Array.from({ length: 500 }, () => open(store, { idleMs: 120_000 })));
      sids.push(...batch);
    }
    const perSession = ((await used()) - before) / n;
    const json = JSON.stringify({ text: 'hello, world', from: 'ada' }); // 36 bytes
    // As core sends: each with an append id, which the store remembers (the last 32 per session).
    const beforeFirst = await used();
    await store.appendMany(sids, json, ROOMY, newAppendId()); // the first message creates each log and id list
    const firstMessage = ((await used()) - beforeFirst) / n;
    const beforeMsgs = await used();
    for (let k = 0; k < 10; k++) await store.appendMany(sids, json, ROOMY, newAppendId());
    const perMessage = ((await used()) - beforeMsgs) / (n * 10);
    // Once 32 ids are remembered the list stops growing: further messages cost their log entry only.
    for (let k = 0; k < 25; k++) await store.appendMany(sids, json, ROOMY, newAppendId());
    const beforeSteady = await used();
    for (let k = 0; k < 10; k++) await store.appendMany(sids, json, ROOMY, newAppendId());
    const perSteadyMessage = ((await used()) - beforeSteady) / (n * 10);
    if (process.env.BIDIWEB_PRINT_MEMORY) {
      const keys = new RedisKeys((store as unknown as { keys: RedisKeys }).keys.prefix).session(sids[0]!);
      console.log(
        `idle session: ${perSession.toFixed(0)} B (MEMORY USAGE of the record: ${await redis.memory('USAGE', keys.s, 'SAMPLES', '0')} B); ` +
          `first ${json.length}-byte message: ${firstMessage.toFixed(0)} B; next ten: ${perMessage.toFixed(1)} B each; ` +
          `past 32 ids: ${perSteadyMessage.toFixed(1)} B each; id list of 32: ${await redis.memory('USAGE', keys.aids, 'SAMPLES', '0')} B`,
      );
    }
    expect(perSession).toBeLessThan(600);
    expect(perMessage).toBeLessThan(100 + json.length);
    expect(perSteadyMessage).toBeLessThan(60 + json.length);
  });
});

describe('Redis restarts', () => {
  it('without persistence, every session is lost: operations answer unknown (clients see SESSION_LOST)', async () => {
    const volatile = await startRedis();
    const redis = new Redis(volatile.port, '127.0.0.1', { maxRetriesPerRequest: 50, retryStrategy: () => 50 });
    const store = new RedisStore({ redis });
    try {
      const sid = newSessionId();
      await store.create({ sid, userJson: 'null', stateJson: '{}', initial: ['1'], idleMs: LONG, maxSessions: 10 });
      await volatile.restart();
      expect(await store.read(sid, { ack: 0, watchToken: 'w', claim: true, maxMessages: 10 })).toEqual({ status: 'unknown' });
      expect(await store.append(sid, ['2'], ROOMY)).toEqual({ status: 'unknown' });
      // The scripts are reloaded by themselves (NOSCRIPT -> EVAL) and new sessions work.
      await store.create({ sid: newSessionId(), userJson: 'null', stateJson: '{}', initial: [], idleMs: LONG, maxSessions: 10 });
    } finally {
      await store.dispose();
      redis.disconnect();
      await volatile.stop();
    }
  });

  it('with appendonly, sessions, logs, leases and subscriptions survive a restart, and a crash (SIGKILL)', async () => {
    const durable = await startRedis({ appendonly: true });
    const redis = new Redis(durable.port, '127.0.0.1', { maxRetriesPerRequest: 50, retryStrategy: () => 50 });
    const store = new RedisStore({ redis });
    try {
      const sid = newSessionId();
      await store.create({ sid, userJson: '"ada"', stateJson: '{"n":1}', initial: ['1'], idleMs: LONG, maxSessions: 10 });
      await store.append(sid, ['2'], ROOMY);
      const events: StoreEvent[] = [];
      await store.subscribe(sid, (e) => events.push(e));
      await durable.restart();
      expect(await store.read(sid, { ack: 0, watchToken: 'w', claim: true, maxMessages: 10 })).toMatchObject({
        status: 'ok',
        msgs: [
          { seq: 1, json: '1' },
          { seq: 2, json: '2' },
        ],
      });
      await durable.kill();
      await durable.restart();
      expect(await store.append(sid, ['3'], ROOMY)).toEqual({ status: 'ok', firstSeq: 3, lastSeq: 3 });
      for (let i = 0; i < 200 && !events.some((e) => e.type === 'message'); i++) await sleep(10);
      expect(events.some((e) => e.type === 'message')).toBe(true);
      expect((await store.inspect([sid]))[0]).toEqual({ status: 'open', userJson: '"ada"', stateJson: '{"n":1}', clientAck: 0, lastSeq: 3 });
    } finally {
      await store.dispose();
      redis.disconnect();
      await durable.stop();
    }
  });
});
