/**
 * docs/SECURITY.md, "Session ids": 128 bits from the platform CSPRNG, 22
 * base64url characters, a bearer secret.
 */
import { BidiServer, MemoryStore } from '../../src/core';
import { newSessionId } from '../../src/core/util';
import { openSid } from './util';

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** The 16 bytes a sid encodes (22 base64url characters = 132 bits, the last 4 of them zero). */
function decode(sid: string): Uint8Array {
  const buf = Buffer.from(sid, 'base64url');
  return new Uint8Array(buf);
}

describe('session ids', () => {
  const N = 100_000;
  const ids = Array.from({ length: N }, () => newSessionId());

  it('are 22 base64url characters that decode to exactly 16 bytes (128 bits), the padding bits zero', () => {
    // 22 × 6 = 132 bits: the last character carries 2 bits of data and 4 zero bits.
    const bad = ids.filter((id) => !/^[A-Za-z0-9_-]{21}[AQgw]$/.test(id) || decode(id).length !== 16 || Buffer.from(decode(id)).toString('base64url') !== id);
    expect(bad).toEqual([]);
  });

  it(`are all distinct over ${N} ids, and unrelated to each other (no counter, no clock)`, () => {
    expect(new Set(ids).size).toBe(N);
    // Consecutive ids differ in about half their bits, as independent random values do.
    let distance = 0;
    for (let i = 1; i < 2000; i++) {
      const a = decode(ids[i - 1]!);
      const b = decode(ids[i]!);
      for (let k = 0; k < 16; k++) distance += popcount(a[k]! ^ b[k]!);
    }
    const mean = distance / 1999;
    expect(mean).toBeGreaterThan(60);
    expect(mean).toBeLessThan(68);
  });

  it('have every one of their 128 bits set in half of the ids (within 5 σ), and every character equally often', () => {
    const ones = new Array<number>(128).fill(0);
    for (const id of ids) {
      const bytes = decode(id);
      for (let bit = 0; bit < 128; bit++) if (bytes[bit >> 3]! & (0x80 >> (bit & 7))) ones[bit]!++;
    }
    const sigma = 0.5 / Math.sqrt(N);
    for (let bit = 0; bit < 128; bit++) expect(Math.abs(ones[bit]! / N - 0.5)).toBeLessThan(5 * sigma);
    // Characters 1..21 carry 6 random bits each: 64 symbols, uniform (chi-square, 63 degrees of freedom).
    const counts = new Array<number>(64).fill(0);
    for (const id of ids) for (let i = 0; i < 21; i++) counts[BASE64URL.indexOf(id[i]!)]!++;
    const expected = (N * 21) / 64;
    const chi2 = counts.reduce((sum, c) => sum + (c - expected) ** 2 / expected, 0);
    expect(chi2).toBeLessThan(120); // p ≈ 1e-5 for 63 degrees of freedom
  });

  it('come from crypto.getRandomValues, never Math.random', async () => {
    const server = new BidiServer({ store: new MemoryStore(), sweepInterval: 0 });
    const csprng = jest.spyOn(globalThis.crypto, 'getRandomValues');
    const weak = jest.spyOn(Math, 'random');
    try {
      for (let i = 0; i < 500; i++) expect(await openSid(server)).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(csprng).toHaveBeenCalled();
      expect(weak).not.toHaveBeenCalled();
      // The bytes of an id are bytes getRandomValues produced: make it produce 0xA5 only, and ids follow.
      csprng.mockImplementation(<T extends ArrayBufferView | null>(array: T): T => {
        new Uint8Array(array!.buffer, array!.byteOffset, array!.byteLength).fill(0xa5);
        return array;
      });
      let last = '';
      for (let i = 0; i < 1000; i++) last = newSessionId(); // 16 KB: any pool of random bytes is refilled meanwhile
      expect([...decode(last)]).toEqual(new Array(16).fill(0xa5));
    } finally {
      csprng.mockRestore();
      weak.mockRestore();
      // Use up whatever 0xA5 bytes a pool may still hold, so later ids are random again.
      for (let i = 0; i < 1000; i++) newSessionId();
      await server.dispose();
    }
  });

  it('are what open hands out (the same generator), distinct across sessions', async () => {
    const server = new BidiServer({ store: new MemoryStore(), sweepInterval: 0 });
    const sids = new Set<string>();
    for (let i = 0; i < 2000; i++) sids.add(await openSid(server));
    expect(sids.size).toBe(2000);
    for (const sid of sids) expect(sid).toMatch(/^[A-Za-z0-9_-]{21}[AQgw]$/);
    await server.dispose();
  });
});

function popcount(x: number): number {
  let n = 0;
  for (; x; x &= x - 1) n++;
  return n;
}
