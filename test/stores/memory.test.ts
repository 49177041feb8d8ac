import { MemoryStore } from '../../src/core/stores/memory';
import type { CreateInput, StoredMessage } from '../../src/core/store';
import { newSessionId, newToken } from '../../src/core/util';
import { runStoreContract } from '../../src/testing';

runStoreContract({ describe, it, afterAll }, () => new MemoryStore(), { name: 'MemoryStore', cleanup: (store) => store.dispose() });

/** What only the in-memory store can do: an injected clock, retention options, its size. */
describe('MemoryStore specifics', () => {
  let t = 1_000_000;
  const clock = () => t;
  beforeEach(() => {
    t = 1_000_000;
  });

  async function open(store: MemoryStore, over: Partial<CreateInput> = {}): Promise<string> {
    const sid = newSessionId();
    const r = await store.create({ sid, userJson: 'null', stateJson: '{}', initial: [], idleMs: 10_000, maxSessions: 1e9, ...over });
    expect(r.status).toBe('ok');
    return sid;
  }
  const m = (seq: number): StoredMessage => ({ seq, json: String(seq) });
  const receiveInput = (msgs: StoredMessage[], token = newToken(), ms = 1_000) => ({
    msgs,
    window: 100,
    bufferBytes: 1 << 20,
    lease: { token, ms },
    maxDeliver: 100,
  });

  it('uses the injected clock for idle expiry: exactly at idleMs still open, one ms later expired', async () => {
    const store = new MemoryStore({ now: clock });
    const sid = await open(store, { idleMs: 10_000 });
    t += 10_000;
    expect(await store.sweep({ lease: { token: 'a', ms: 1 }, limit: 10 })).toEqual({ status: 'ok', closing: [] });
    t += 1;
    const r = await store.sweep({ lease: { token: 'a', ms: 1 }, limit: 10 });
    expect(r).toEqual({ status: 'ok', closing: [expect.objectContaining({ sid, reason: 'expired' })] });
  });

  it('uses the injected clock for leases', async () => {
    const store = new MemoryStore({ now: clock });
    const sid = await open(store);
    const holder = newToken();
    const r = await store.receive(sid, receiveInput([m(1)], holder, 500));
    expect(r.status === 'ok' && r.deliver.length).toBe(1);
    t += 499;
    expect(await store.receive(sid, receiveInput([]))).toMatchObject({ deliver: [] });
    t += 1;
    expect(await store.receive(sid, receiveInput([]))).toMatchObject({ deliver: [m(1)] });
    expect(await store.commit(sid, { token: holder, seq: 1, leaseMs: 500, next: true, maxDeliver: 10 })).toEqual({ status: 'lost' });
  });

  it('keeps tombstones for the idle timeout by default, or for tombstoneMs', async () => {
    const byIdle = new MemoryStore({ now: clock });
    const byOption = new MemoryStore({ now: clock, tombstoneMs: 100 });
    const close = async (store: MemoryStore, sid: string) => {
      const token = newToken();
      await store.close(sid, { reason: 'r', lease: { token, ms: 1_000 } });
      await store.finishClose(sid, token);
    };
    const a = await open(byIdle, { idleMs: 5_000 });
    const b = await open(byOption, { idleMs: 5_000 });
    await close(byIdle, a);
    await close(byOption, b);
    t += 100;
    expect((await byOption.inspect([b]))[0]?.status).toBe('closed');
    t += 1;
    expect(await byOption.inspect([b])).toEqual([null]);
    t += 4_899;
    expect((await byIdle.inspect([a]))[0]?.status).toBe('closed');
    t += 1;
    expect(await byIdle.inspect([a])).toEqual([null]);
  });

  it('drops expired tombstones on sweep (size counts open, closing and tombstones)', async () => {
    const store = new MemoryStore({ now: clock });
    const sid = await open(store, { idleMs: 1_000 });
    await open(store, { idleMs: 1e9 });
    expect(store.size).toBe(2);
    const token = newToken();
    await store.close(sid, { reason: 'r', lease: { token, ms: 1_000 } });
    await store.finishClose(sid, token);
    expect(store.size).toBe(2);
    t += 1_001;
    await store.sweep({ lease: { token: 'sweeper', ms: 1 }, limit: 10 });
    expect(store.size).toBe(1);
  });

  it('releases the sweep lease to another sweeper once it expires: a lease of ms taken at t is held while now < t + ms', async () => {
    const store = new MemoryStore({ now: clock });
    expect((await store.sweep({ lease: { token: 'a', ms: 1_000 }, limit: 10 })).status).toBe('ok');
    t += 999;
    expect(await store.sweep({ lease: { token: 'b', ms: 1_000 }, limit: 10 })).toEqual({ status: 'busy' });
    t += 1;
    expect((await store.sweep({ lease: { token: 'b', ms: 1_000 }, limit: 10 })).status).toBe('ok');
  });

  it('delivers events in a microtask, before the caller resumes from its await', async () => {
    const store = new MemoryStore();
    const sid = await open(store);
    const order: string[] = [];
    store.subscribe(sid, (e) => order.push(e.type));
    const p = store.append(sid, ['1'], { maxUnackedMessages: 10, maxUnackedBytes: 1_000 });
    order.push('returned');
    await p;
    order.push('resumed');
    expect(order).toEqual(['returned', 'message', 'resumed']);
  });

  it('dispose drops every listener', async () => {
    const store = new MemoryStore();
    const sid = await open(store);
    const events: string[] = [];
    store.subscribe(sid, (e) => events.push(e.type));
    await store.dispose();
    await store.append(sid, ['1'], { maxUnackedMessages: 10, maxUnackedBytes: 1_000 });
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(events).toEqual([]);
  });

  it('finishClose leaves no empty group behind (no leak)', async () => {
    // leave() deletes a group's Set once it is empty; finishClose() only removes
    // the sid from the Set, so every group whose last member closed (one chat room
    // per conversation, say) stays in `groups` forever.
    const store = new MemoryStore();
    const groups = (store as unknown as { groups: Map<string, Set<string>> }).groups;
    const sid = await open(store);
    for (let i = 0; i < 100; i++) await store.join(sid, `room-${i}`);
    expect(groups.size).toBe(100);
    const token = newToken();
    await store.close(sid, { reason: 'r', lease: { token, ms: 1_000 } });
    await store.finishClose(sid, token);
    expect(await store.members('room-0')).toEqual([]);
    expect(groups.size).toBe(0);
  });
});
