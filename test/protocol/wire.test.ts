/**
 * src/wire: the one statement of the protocol's names and numbers that server
 * and client share. Its byte count matches what is actually sent, its
 * defaults are the server's, and the open response announces every limit it
 * lists.
 */
import fc from 'fast-check';
import { BidiServer, DEFAULT_LIMITS } from '../../src/core';
import { announcedLimits } from '../../src/core/limits';
import { DEFAULT_ANNOUNCED_LIMITS, DEFAULT_LEASE_MS, DEFAULT_WAIT_MS, MAX_WAIT_CAP_MS, utf8Length } from '../../src/wire';
import { call } from '../security/util';

const encoder = new TextEncoder();

describe('utf8Length', () => {
  it('counts what TextEncoder produces: a lone surrogate is U+FFFD, 3 bytes', () => {
    const cases: Array<[string, number]> = [
      ['', 0],
      ['a', 1],
      ['é', 2],
      ['€', 3],
      ['😀', 4], // a pair
      ['\ud800', 3], // lone high surrogate at the end
      ['\udc00', 3], // lone low surrogate
      ['\ud800x', 4],
      ['\ud800é', 5], // a high surrogate followed by no low one: the next character is counted on its own
      ['\ud800\ud800', 6],
      ['\ud800\ud83d\ude00', 7], // lone high, then a pair
      ['\udc00\ud800', 6], // reversed pair: two lone surrogates
    ];
    for (const [s, bytes] of cases) {
      expect(encoder.encode(s).length).toBe(bytes);
      expect(utf8Length(s)).toBe(bytes);
    }
  });

  it('agrees with TextEncoder on any sequence of UTF-16 code units', () => {
    const codeUnits = fc.array(fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0xd800, max: 0xdfff })), { maxLength: 40 });
    fc.assert(
      fc.property(codeUnits, (units) => {
        const s = String.fromCharCode(...units);
        return utf8Length(s) === encoder.encode(s).length;
      }),
      { numRuns: 2000, seed: 15 },
    );
  });
});

describe('announced limits', () => {
  it('the server defaults for every announced bound are the wire defaults', () => {
    const server = announcedLimits(DEFAULT_LIMITS, { maxWait: MAX_WAIT_CAP_MS, idleTimeout: DEFAULT_ANNOUNCED_LIMITS.idleTimeout, leaseMs: DEFAULT_LEASE_MS });
    expect(server).toEqual(DEFAULT_ANNOUNCED_LIMITS);
    expect(Object.keys(server).sort()).toEqual(Object.keys(DEFAULT_ANNOUNCED_LIMITS).sort());
  });

  it('announcedLimits carries what a client needs from configured limits, including the lease and the unacked bounds', () => {
    const limits = { ...DEFAULT_LIMITS, maxMessagesPerResponse: 7, maxUnackedMessages: 8, maxUnackedBytes: 9_000, maxSessions: 3 };
    const announced = announcedLimits(limits, { maxWait: 2_000, idleTimeout: 9_000, leaseMs: 1_234 });
    expect(announced).toMatchObject({ maxMessagesPerResponse: 7, maxUnackedMessages: 8, maxUnackedBytes: 9_000, maxWait: 2_000, idleTimeout: 9_000, leaseMs: 1_234 });
    // Server-only bounds stay on the server.
    expect(announced).not.toHaveProperty('maxSessions');
    expect(announced).not.toHaveProperty('groupLogEntries');
  });

  // FLIP TO `it` once src/core/server.ts builds the open response's `limits` with
  // `announcedLimits(this.limits, { maxWait, idleTimeout, leaseMs })` (issue 15: server.ts was being
  // split while the wire module was made, so its one line is swapped after that merge). Until then
  // the open response lacks leaseMs and the unacked bounds, and this test fails as expected.
  it('the open response announces every limit of the wire module, with configured values', async () => {
    const server = new BidiServer({
      sweepInterval: 0,
      leaseMs: 1_500,
      wait: 1_000,
      maxWait: 2_000,
      idleTimeout: 9_000,
      limits: { maxMessagesPerResponse: 50, maxUnackedMessages: 60, maxUnackedBytes: 70_000 },
    });
    try {
      const opened = await call(server, 'POST', '/session', { body: { v: 1 } });
      expect(opened.status).toBe(201);
      expect(opened.body.wait).toBe(1_000);
      expect(Object.keys(opened.body.limits).sort()).toEqual(Object.keys(DEFAULT_ANNOUNCED_LIMITS).sort());
      expect(opened.body.limits).toEqual({
        ...DEFAULT_ANNOUNCED_LIMITS,
        maxMessagesPerResponse: 50,
        maxUnackedMessages: 60,
        maxUnackedBytes: 70_000,
        maxWait: 2_000,
        idleTimeout: 9_000,
        leaseMs: 1_500,
      });
    } finally {
      await server.dispose();
    }
  });

  it('a server with default options announces the default wait', async () => {
    const server = new BidiServer({ sweepInterval: 0 });
    try {
      const opened = await call(server, 'POST', '/session', { body: { v: 1 } });
      expect(opened.body).toMatchObject({ v: 1, wait: DEFAULT_WAIT_MS });
    } finally {
      await server.dispose();
    }
  });
});
