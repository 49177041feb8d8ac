import { getEventListeners } from 'node:events';
import { onAbort } from '../../src/client/abort-link';
import { Backoff, parseRetryAfter, TimerSet } from '../../src/client/backoff';
import { Emitter } from '../../src/client/emitter';
import { BidiClientError } from '../../src/client/errors';
import { classify, splitBaseUrl, Transport } from '../../src/client/transport';
import { utf8Length } from '../../src/wire';

describe('Backoff', () => {
  test('full jitter within an exponentially growing, capped bound', () => {
    const b = new Backoff(100, 1000, () => 0.999999);
    expect([1, 2, 3, 4, 5, 6].map(() => b.next())).toEqual([99, 199, 399, 799, 999, 999]);
    expect(b.attempt).toBe(6);
    b.reset();
    expect(b.next()).toBe(99);
    const zero = new Backoff(100, 1000, () => 0);
    expect(zero.next()).toBe(0);
  });

  test('Retry-After is a lower bound, clamped to 5 minutes', () => {
    const b = new Backoff(100, 1000, () => 0.5);
    expect(b.next(3000)).toBe(3000);
    expect(b.next(0)).toBe(100);
    expect(b.next(10 * 60_000)).toBe(5 * 60_000);
  });

  test('parseRetryAfter: seconds, dates, junk', () => {
    expect(parseRetryAfter('2')).toBe(2000);
    expect(parseRetryAfter(' 0 ')).toBe(0);
    expect(parseRetryAfter(null)).toBeUndefined();
    expect(parseRetryAfter('soon')).toBeUndefined();
    const now = Date.parse('2024-01-01T00:00:00Z');
    expect(parseRetryAfter('Mon, 01 Jan 2024 00:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter('Mon, 01 Jan 2023 00:00:05 GMT', now)).toBe(0);
  });
});

describe('TimerSet', () => {
  test('sleep resolves true, or false when aborted or cleared; clear cancels everything', async () => {
    const t = new TimerSet();
    await expect(t.sleep(1)).resolves.toBe(true);
    const ctl = new AbortController();
    const p = t.sleep(10_000, ctl.signal);
    ctl.abort();
    await expect(p).resolves.toBe(false);
    const q = t.sleep(10_000);
    let fired = false;
    t.after(10_000, () => (fired = true));
    expect(t.size).toBe(2);
    t.clear();
    await expect(q).resolves.toBe(false);
    expect(t.size).toBe(0);
    expect(fired).toBe(false);
  });
});

describe('TimerSet.wake', () => {
  test('runs the wakeable timers and sleeps now, and leaves the others alone', async () => {
    const t = new TimerSet();
    const fired: string[] = [];
    t.after(10_000, () => fired.push('backoff'), undefined, true);
    t.after(10_000, () => fired.push('resend timer'));
    const backoffSleep = t.sleep(10_000, undefined, true);
    const plainSleep = t.sleep(10_000);
    expect(t.wake()).toBe(2);
    expect(fired).toEqual(['backoff']);
    await expect(backoffSleep).resolves.toBe(true);
    expect(t.size).toBe(2);
    expect(t.wake()).toBe(0);
    t.clear();
    await expect(plainSleep).resolves.toBe(false);
    expect(fired).toEqual(['backoff']);
  });
});

describe('Emitter', () => {
  type E = { a: [number]; b: [] };

  test('on / once / off, in registration order', () => {
    const errors: unknown[] = [];
    const e = new Emitter<E>((_ev, err) => errors.push(err));
    const seen: string[] = [];
    const f = (n: number): void => void seen.push(`f${n}`);
    e.on('a', f);
    e.once('a', (n) => seen.push(`once${n}`));
    e.emit('a', 1);
    e.emit('a', 2);
    e.off('a', f);
    e.emit('a', 3);
    expect(seen).toEqual(['f1', 'once1', 'f2']);
    expect(errors).toEqual([]);
    e.emit('b'); // no listeners: nothing
  });

  test('a throwing listener does not stop the others', () => {
    const errors: unknown[] = [];
    const e = new Emitter<E>((ev, err) => errors.push([ev, (err as Error).message]));
    const seen: number[] = [];
    e.on('a', () => {
      throw new Error('boom');
    });
    e.on('a', (n) => seen.push(n));
    e.emit('a', 7);
    expect(seen).toEqual([7]);
    expect(errors).toEqual([['a', 'boom']]);
  });

  test('removing a listener during emit does not skip the next one', () => {
    const e = new Emitter<E>(() => {});
    const seen: string[] = [];
    const g = (): void => void seen.push('g');
    e.on('a', () => {
      seen.push('f');
      e.off('a', g);
    });
    e.on('a', g);
    e.emit('a', 1);
    e.emit('a', 1);
    expect(seen).toEqual(['f', 'g', 'f']);
  });
});

describe('onAbort (one listener per signal, for every request it serves)', () => {
  test('links many callbacks in turn with one listener; an abort calls those linked then, once', () => {
    const ctl = new AbortController();
    const calls: string[] = [];
    for (let i = 0; i < 100; i++) onAbort(ctl.signal, () => calls.push('stale ' + i))();
    expect(getEventListeners(ctl.signal, 'abort')).toHaveLength(1);
    onAbort(ctl.signal, () => calls.push('a'));
    const unlinkB = onAbort(ctl.signal, () => calls.push('b'));
    onAbort(ctl.signal, () => calls.push('c'));
    unlinkB();
    expect(getEventListeners(ctl.signal, 'abort')).toHaveLength(1);
    ctl.abort();
    expect(calls).toEqual(['a', 'c']);
    ctl.abort(); // a second abort is no event
    expect(calls).toEqual(['a', 'c']);
  });

  test('an already aborted signal calls nothing (as addEventListener); a callback that throws does not stop the others', () => {
    const gone = AbortSignal.abort();
    let called = false;
    onAbort(gone, () => (called = true));
    expect(called).toBe(false);

    const ctl = new AbortController();
    const calls: string[] = [];
    onAbort(ctl.signal, () => {
      throw new Error('boom');
    });
    onAbort(ctl.signal, () => calls.push('after'));
    // The throw is reported as an uncaught error would be: a microtask rethrows it (held here).
    const reported: (() => void)[] = [];
    const spy = jest.spyOn(globalThis, 'queueMicrotask').mockImplementation((fn) => void reported.push(fn));
    try {
      ctl.abort();
    } finally {
      spy.mockRestore();
    }
    expect(calls).toEqual(['after']);
    expect(reported).toHaveLength(1);
    expect(() => reported[0]!()).toThrow('boom');
  });
});

describe('transport helpers', () => {
  test('utf8Length matches TextEncoder', () => {
    for (const s of ['', 'abc', 'é', '€', '😀', 'a😀b€é', JSON.stringify('\ud800'), '\ud800x']) {
      expect(utf8Length(s)).toBe(new TextEncoder().encode(s).length);
    }
  });

  test('base URLs keep their query; trailing slash and fragment dropped', () => {
    expect(splitBaseUrl('http://h/session/')).toEqual({ path: 'http://h/session', query: '' });
    expect(splitBaseUrl('http://h/session?t=1#x')).toEqual({ path: 'http://h/session', query: 't=1' });
    const t = new Transport('http://h/s?tenant=a', undefined, async () => {
      throw new Error('unused');
    });
    expect(t.url('')).toBe('http://h/s?tenant=a');
    expect(t.url('/watch', { ack: 3, wait: 100 })).toBe('http://h/s/watch?tenant=a&ack=3&wait=100');
    expect(new Transport('/session', undefined, async () => ({}) as never).url('/send')).toBe('/session/send');
  });

  test('classify', () => {
    expect(classify({ status: 200, body: { ack: 1 } }, 'send').kind).toBe('ok');
    const bad = classify({ status: 200, body: undefined }, 'send');
    expect(bad.kind).toBe('retry');
    expect(bad.kind === 'retry' && bad.error.code).toBe('BAD_RESPONSE');
    expect(classify({ status: 500, body: undefined }, 'send').kind).toBe('retry');
    expect(classify({ status: 503, body: undefined, retryAfterMs: 2000 }, 'send')).toMatchObject({ kind: 'retry', retryAfterMs: 2000 });
    expect(classify({ status: 429, body: { error: { code: 'SEQ_OUT_OF_WINDOW', message: 'm' } }, retryAfterMs: 1000 }, 'send')).toMatchObject({
      kind: 'retry',
      retryAfterMs: 1000,
    });
    expect(classify({ status: 404, body: { error: { code: 'UNKNOWN_SESSION', message: 'gone' } } }, 'watch')).toEqual({
      kind: 'fatal',
      status: 404,
      errorCode: 'UNKNOWN_SESSION',
      message: 'gone',
    });
    expect(classify({ status: 400, body: 'nope' }, 'watch')).toEqual({ kind: 'fatal', status: 400, message: 'HTTP 400' });
  });

  test('request: headers, abort, timeout, network errors', async () => {
    const calls: { url: string; headers: Record<string, string>; body?: string }[] = [];
    let token = 0;
    const t = new Transport(
      'http://h/s',
      async () => ({ Authorization: `t${++token}`, 'bidi-sid': 'forged', 'content-type': 'text/plain', Skip: undefined }),
      async (url, init) => {
        calls.push({ url, headers: init.headers, ...(init.body !== undefined ? { body: init.body } : {}) });
        return { status: 200, headers: { get: () => null }, text: async () => '{"ack":1}' };
      },
    );
    const signal = new AbortController().signal;
    await expect(t.request({ method: 'POST', path: '/send', body: '{}', sid: 'S', timeoutMs: 1000, signal })).resolves.toEqual({
      status: 200,
      body: { ack: 1 },
      request: 'POST http://h/s/send', // how error messages name it
    });
    await t.request({ method: 'GET', path: '/watch', query: { ack: 0, wait: 0 }, sid: 'S', timeoutMs: 1000, signal });
    expect(calls[0].headers).toEqual({ Accept: 'application/json', Authorization: 't1', 'Content-Type': 'application/json', 'Bidi-Sid': 'S' });
    expect(calls[1].headers).toEqual({ Accept: 'application/json', Authorization: 't2', 'Bidi-Sid': 'S' });

    const hanging = new Transport('http://h/s', undefined, () => new Promise(() => {}));
    const e1 = await hanging.request({ method: 'GET', path: '/watch', timeoutMs: 20, signal }).catch((e) => e);
    expect(e1).toBeInstanceOf(BidiClientError);
    expect(e1.code).toBe('TIMEOUT');
    const ctl = new AbortController();
    const p = hanging.request({ method: 'GET', path: '/watch', timeoutMs: 10_000, signal: ctl.signal }).catch((e) => e);
    ctl.abort();
    expect((await p).name).toBe('AbortedError');

    const failing = new Transport('http://h/s', undefined, async () => {
      throw new TypeError('fetch failed');
    });
    const e2 = await failing.request({ method: 'GET', path: '/watch', timeoutMs: 1000, signal }).catch((e) => e);
    expect(e2.code).toBe('NETWORK_ERROR');
    expect(e2.message).toBe('GET http://h/s/watch failed: fetch failed');
    const badHeaders = new Transport(
      'http://h/s',
      () => {
        throw new Error('no token');
      },
      async () => ({}) as never,
    );
    const e3 = await badHeaders.request({ method: 'GET', path: '/watch', timeoutMs: 1000, signal }).catch((e) => e);
    expect(e3.code).toBe('HEADERS_ERROR');
  });
});
