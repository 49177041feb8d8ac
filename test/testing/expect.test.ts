/**
 * The contract suite's own assertions (src/testing/expect.ts, built on
 * node:assert so the suite runs under any runner) agree with Jest's on every
 * kind of case the suite uses them for: each case is checked with both, and
 * both must pass, or both fail.
 */
import { AssertionError } from 'node:assert';
import { expect as own } from '../../src/testing/expect';

type Case = [label: string, check: (e: typeof expect | typeof own) => unknown];

class Thing {
  constructor(readonly a: number) {}
}

const cases: Case[] = [
  ['toBe: same primitive', (e) => e(1).toBe(1)],
  ['toBe: NaN is NaN', (e) => e(NaN).toBe(NaN)],
  ['toBe: +0 is not -0', (e) => e(0).toBe(-0)],
  ['toBe: equal objects are not the same', (e) => e({ a: 1 }).toBe({ a: 1 })],
  ['toEqual: nested equal', (e) => e({ a: [1, { b: '2' }], c: null }).toEqual({ a: [1, { b: '2' }], c: null })],
  ['toEqual: a different leaf', (e) => e({ a: [1, { b: '2' }] }).toEqual({ a: [1, { b: '3' }] })],
  ['toEqual: an extra key', (e) => e({ a: 1, b: 2 }).toEqual({ a: 1 })],
  ['toEqual: a missing key', (e) => e({ a: 1 }).toEqual({ a: 1, b: 2 })],
  ['toEqual: undefined properties are ignored (received)', (e) => e({ a: 1, close: undefined }).toEqual({ a: 1 })],
  ['toEqual: undefined properties are ignored (expected)', (e) => e({ a: 1 }).toEqual({ a: 1, close: undefined })],
  ['toEqual: arrays of different length', (e) => e([1, 2]).toEqual([1, 2, 3])],
  ['toEqual: array order matters', (e) => e([1, 2]).toEqual([2, 1])],
  ['toEqual: array vs object', (e) => e([]).toEqual({})],
  ['toEqual: null vs object', (e) => e(null).toEqual({})],
  ['toEqual: class instance vs plain object of the same keys', (e) => e(new Thing(1)).toEqual({ a: 1 })],
  ['toEqual: Sets by content, any order', (e) => e(new Set(['a', 'b'])).toEqual(new Set(['b', 'a']))],
  ['toEqual: Sets of different content', (e) => e(new Set(['a', 'b'])).toEqual(new Set(['a', 'c']))],
  ['toEqual: Set vs array', (e) => e(new Set(['a'])).toEqual(['a'])],
  ['toEqual: objectContaining inside an array', (e) => e({ closing: [{ sid: 's', reason: 'expired', at: 5 }] }).toEqual({ closing: [e.objectContaining({ sid: 's', reason: 'expired' })] })],
  ['toEqual: objectContaining that does not match', (e) => e({ closing: [{ sid: 's', reason: 'client' }] }).toEqual({ closing: [e.objectContaining({ reason: 'expired' })] })],
  ['toEqual: arrayContaining, any order, extra items allowed', (e) => e(['c', 'a', 'b']).toEqual(e.arrayContaining(['a', 'b']))],
  ['toEqual: arrayContaining with an item missing', (e) => e(['a']).toEqual(e.arrayContaining(['a', 'b']))],
  ['toMatchObject: a subset of keys', (e) => e({ status: 'ok', clientAck: 2, deliver: [] }).toMatchObject({ status: 'ok', clientAck: 2 })],
  ['toMatchObject: a differing key', (e) => e({ status: 'ok', clientAck: 1 }).toMatchObject({ status: 'ok', clientAck: 2 })],
  ['toMatchObject: nested subset', (e) => e({ a: { b: 1, c: 2 }, d: 3 }).toMatchObject({ a: { b: 1 } })],
  ['toMatchObject: arrays must have the same length', (e) => e({ msgs: [{ seq: 1 }, { seq: 2 }] }).toMatchObject({ msgs: [{ seq: 1 }] })],
  ['toMatchObject: array items as subsets', (e) => e({ msgs: [{ seq: 1, json: '"x"' }] }).toMatchObject({ msgs: [{ seq: 1 }] })],
  ['toMatchObject: an empty array matches only an empty array', (e) => e({ msgs: [{ seq: 1 }] }).toMatchObject({ msgs: [] })],
  ['toMatchObject: an expected undefined property (received undefined)', (e) => e({ a: 1, close: undefined }).toMatchObject({ close: undefined })],
  ['toMatchObject: an expected undefined property (received defined)', (e) => e({ close: 'x' }).toMatchObject({ close: undefined })],
  ['toMatchObject: a missing key', (e) => e({ a: 1 }).toMatchObject({ b: 1 })],
  ['toMatchObject: an Error by its properties', (e) => e(Object.assign(new Error('x'), { code: 'BAD_REQUEST' })).toMatchObject({ code: 'BAD_REQUEST' })],
  ['toMatchObject: null received', (e) => e(null).toMatchObject({ a: 1 })],
  ['toHaveLength: right', (e) => e([1, 2, 3]).toHaveLength(3)],
  ['toHaveLength: wrong', (e) => e([1, 2, 3]).toHaveLength(2)],
  ['toBeNull: null', (e) => e(null).toBeNull()],
  ['toBeNull: undefined', (e) => e(undefined).toBeNull()],
  ['toBeUndefined: undefined', (e) => e(undefined).toBeUndefined()],
  ['toBeUndefined: null', (e) => e(null).toBeUndefined()],
  ['toBeGreaterThan: equal', (e) => e(2).toBeGreaterThan(2)],
  ['toBeGreaterThan: above', (e) => e(3).toBeGreaterThan(2)],
  ['toBeGreaterThanOrEqual: equal', (e) => e(2).toBeGreaterThanOrEqual(2)],
  ['toBeGreaterThanOrEqual: below', (e) => e(1).toBeGreaterThanOrEqual(2)],
  ['toBeLessThanOrEqual: equal', (e) => e(2).toBeLessThanOrEqual(2)],
  ['toBeLessThanOrEqual: above', (e) => e(3).toBeLessThanOrEqual(2)],
  ['not.toContain: a substring that is there', (e) => e('abc:def').not.toContain('def')],
  ['not.toContain: a substring that is not', (e) => e('abc').not.toContain('x')],
  ['not.toEqual: equal values', (e) => e({ a: 1 }).not.toEqual({ a: 1 })],
  ['toContain: an array item', (e) => e(['a', 'b']).toContain('b')],
  ['toContain: an item that is not there', (e) => e(['a', 'b']).toContain('c')],
  ['rejects.toMatchObject: a rejection that matches', (e) => e(Promise.reject(Object.assign(new Error('x'), { code: 'BAD_REQUEST' }))).rejects.toMatchObject({ code: 'BAD_REQUEST' })],
  ['rejects.toMatchObject: a rejection that does not match', (e) => e(Promise.reject(Object.assign(new Error('x'), { code: 'OTHER' }))).rejects.toMatchObject({ code: 'BAD_REQUEST' })],
  ['rejects.toMatchObject: a promise that resolves', (e) => e(Promise.resolve({ code: 'BAD_REQUEST' })).rejects.toMatchObject({ code: 'BAD_REQUEST' })],
];

async function passes(check: () => unknown): Promise<boolean> {
  try {
    await check();
    return true;
  } catch {
    return false;
  }
}

it.each(cases)('%s: the same verdict as Jest', async (_label, check) => {
  const jest = await passes(() => check(expect));
  const ours = await passes(() => check(own));
  expect({ ours }).toEqual({ ours: jest });
});

it('the cases include passing and failing ones', async () => {
  const verdicts = await Promise.all(cases.map(([, check]) => passes(() => check(expect))));
  expect(verdicts.filter(Boolean).length).toBeGreaterThan(15);
  expect(verdicts.filter((v) => !v).length).toBeGreaterThan(15);
});

it('fails with an AssertionError that shows only the parts that differ, and points at the caller', () => {
  let error: unknown;
  try {
    own({ status: 'ok', clientAck: 1, deliver: [{ seq: 1, json: '"m1"' }], userJson: '{}' }).toMatchObject({ status: 'ok', clientAck: 2 });
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(AssertionError);
  const { message, stack } = error as AssertionError;
  expect(message).toContain('toMatchObject');
  expect(message).toContain("expected: { status: 'ok', clientAck: 2 }");
  expect(message).toContain("received: { status: 'ok', clientAck: 1 }");
  expect(stack!.split('\n').find((l) => l.includes(' at '))).toContain('expect.test.ts');
});
