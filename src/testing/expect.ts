/**
 * The few Jest-style assertions the store contract suite uses, built on
 * node:assert, so the suite needs nothing from the test runner but
 * `describe`, `it` and `afterAll` (Jest, Vitest and node:test alike) and
 * asserts the same way under each of them.
 *
 * Semantics follow Jest's where the suite relies on them: `toEqual` ignores
 * properties whose value is undefined and compares Sets by content;
 * `toMatchObject` checks the expected keys only, recursively, arrays
 * element by element at equal length; `expect.objectContaining` and
 * `expect.arrayContaining` work inside both.
 */
import { AssertionError } from 'node:assert';
import { inspect } from 'node:util';

const ASYMMETRIC = Symbol('bidiweb.testing.asymmetric');

interface Asymmetric {
  readonly [ASYMMETRIC]: true;
  matches(actual: unknown): boolean;
}

function isAsymmetric(x: unknown): x is Asymmetric {
  return typeof x === 'object' && x !== null && ASYMMETRIC in x;
}

function asymmetric(label: string, sample: unknown, matches: (actual: unknown) => boolean): Asymmetric {
  return {
    [ASYMMETRIC]: true,
    matches,
    // How a failure message shows it.
    [inspect.custom]: (_depth: number, options: object) => `${label} ${inspect(sample, options)}`,
  } as Asymmetric;
}

type Plain = Record<string | symbol, unknown>;

const isObject = (x: unknown): x is Plain => typeof x === 'object' && x !== null;
/** Objects compared key by key: not arrays, Sets, Maps or Dates. */
const isRecord = (x: unknown): x is Plain => isObject(x) && !Array.isArray(x) && !(x instanceof Set) && !(x instanceof Map) && !(x instanceof Date);
const definedKeys = (x: Plain) => Object.keys(x).filter((k) => x[k] !== undefined);

/** Jest's `equals`: `subset` is toMatchObject's rule (expected keys only). */
function equals(actual: unknown, expected: unknown, subset: boolean): boolean {
  if (isAsymmetric(expected)) return expected.matches(actual);
  if (Object.is(actual, expected)) return true;
  if (!isObject(actual) || !isObject(expected)) return false;
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && actual.length === expected.length && expected.every((x, i) => equals(actual[i], x, subset));
  }
  if (expected instanceof Set) {
    const items = actual instanceof Set ? [...actual] : [];
    return actual instanceof Set && actual.size === expected.size && [...expected].every((x) => items.some((y) => equals(y, x, false)));
  }
  if (expected instanceof Map) {
    return (
      actual instanceof Map && actual.size === expected.size && [...expected].every(([k, v]) => actual.has(k) && equals(actual.get(k), v, subset))
    );
  }
  if (expected instanceof Date) return actual instanceof Date && actual.getTime() === expected.getTime();
  if (!isRecord(actual)) return false;
  if (subset) return Object.keys(expected).every((k) => equals(actual[k], expected[k], true));
  const keys = definedKeys(expected);
  return definedKeys(actual).length === keys.length && keys.every((k) => actual[k] !== undefined && equals(actual[k], expected[k], false));
}

/**
 * The two values a failure message shows: where a part matches, both sides
 * show the received value (so only real differences stand out); under
 * `subset`, the received object is cut to the expected keys.
 */
function shown(actual: unknown, expected: unknown, subset: boolean): [unknown, unknown] {
  if (equals(actual, expected, subset)) return [actual, actual];
  if (Array.isArray(actual) && Array.isArray(expected) && actual.length === expected.length) {
    const pairs = expected.map((x, i) => shown(actual[i], x, subset));
    return [pairs.map((p) => p[0]), pairs.map((p) => p[1])];
  }
  if (isRecord(actual) && isRecord(expected) && !isAsymmetric(expected)) {
    const keys = subset ? Object.keys(expected) : [...new Set([...definedKeys(actual), ...definedKeys(expected)])];
    const a: Plain = {};
    const e: Plain = {};
    for (const k of keys) {
      const [x, y] = shown(actual[k], expected[k], subset);
      if (k in actual) a[k] = x;
      if (k in expected) e[k] = y;
    }
    return [a, e];
  }
  return [actual, expected];
}

const show = (x: unknown) => inspect(x, { depth: 8, breakLength: 100, sorted: false });

type Outcome = { pass: boolean; actual?: unknown; expected?: unknown; rule: string };

const checks = {
  toBe: (actual: unknown, expected: unknown): Outcome => ({ pass: Object.is(actual, expected), actual, expected, rule: 'Object.is' }),
  toEqual: (actual: unknown, expected: unknown): Outcome => {
    const [a, e] = shown(actual, expected, false);
    return { pass: equals(actual, expected, false), actual: a, expected: e, rule: 'recursively, ignoring undefined properties' };
  },
  toMatchObject: (actual: unknown, expected: object): Outcome => {
    const [a, e] = shown(actual, expected, true);
    return { pass: isObject(actual) && equals(actual, expected, true), actual: a, expected: e, rule: 'the expected properties, recursively' };
  },
  toHaveLength: (actual: unknown, length: number): Outcome => ({
    pass: isObject(actual) && (actual as { length?: unknown }).length === length,
    actual: isObject(actual) ? (actual as { length?: unknown }).length : actual,
    expected: length,
    rule: '.length',
  }),
  toBeNull: (actual: unknown): Outcome => ({ pass: actual === null, actual, expected: null, rule: '=== null' }),
  toBeUndefined: (actual: unknown): Outcome => ({ pass: actual === undefined, actual, expected: undefined, rule: '=== undefined' }),
  toBeGreaterThan: (actual: unknown, n: number): Outcome => ({ pass: typeof actual === 'number' && actual > n, actual, expected: n, rule: '>' }),
  toBeGreaterThanOrEqual: (actual: unknown, n: number): Outcome => ({
    pass: typeof actual === 'number' && actual >= n,
    actual,
    expected: n,
    rule: '>=',
  }),
  toBeLessThanOrEqual: (actual: unknown, n: number): Outcome => ({ pass: typeof actual === 'number' && actual <= n, actual, expected: n, rule: '<=' }),
  /** An item of an array (Object.is), or a substring of a string. */
  toContain: (actual: unknown, item: unknown): Outcome => ({
    pass: typeof actual === 'string' ? typeof item === 'string' && actual.includes(item) : Array.isArray(actual) && actual.some((x) => Object.is(x, item)),
    actual,
    expected: item,
    rule: 'an item (Object.is) or a substring',
  }),
};

type Checks = typeof checks;
type Args<K extends keyof Checks> = Checks[K] extends (actual: unknown, ...rest: infer A) => Outcome ? A : never;
export type Matchers<R> = { [K in keyof Checks]: (...args: Args<K>) => R };

export interface Expectation extends Matchers<void> {
  not: Matchers<void>;
  /** Awaits a promise that must reject, then checks its reason. */
  rejects: Matchers<Promise<void>>;
}

function verdict(name: string, outcome: Outcome, negated: boolean, from: (...args: never[]) => unknown): void {
  if (outcome.pass !== negated) return;
  const message = negated
    ? `expect(received).not.${name}(expected) (${outcome.rule}):\n  expected: not ${show(outcome.expected)}\n  received: ${show(outcome.actual)}`
    : `expect(received).${name}(expected) (${outcome.rule}):\n  expected: ${show(outcome.expected)}\n  received: ${show(outcome.actual)}`;
  throw new AssertionError({ message, actual: outcome.actual, expected: outcome.expected, operator: name, stackStartFn: from });
}

function matchers(actual: unknown, negated: boolean): Matchers<void> {
  const out = {} as Record<string, (...args: unknown[]) => void>;
  for (const name of Object.keys(checks) as (keyof Checks)[]) {
    const check = checks[name] as (actual: unknown, ...rest: unknown[]) => Outcome;
    const run = (...args: unknown[]): void => verdict(name, check(actual, ...args), negated, run);
    out[name] = run;
  }
  return out as unknown as Matchers<void>;
}

function rejecting(promise: unknown): Matchers<Promise<void>> {
  const out = {} as Record<string, (...args: unknown[]) => Promise<void>>;
  for (const name of Object.keys(checks) as (keyof Checks)[]) {
    const check = checks[name] as (actual: unknown, ...rest: unknown[]) => Outcome;
    const run = async (...args: unknown[]): Promise<void> => {
      let reason: unknown;
      try {
        await promise;
      } catch (e) {
        reason = e;
        verdict(name, check(reason, ...args), false, run);
        return;
      }
      throw new AssertionError({ message: `expected the promise to reject (${name}), but it resolved`, operator: 'rejects', stackStartFn: run });
    };
    out[name] = run;
  }
  return out as unknown as Matchers<Promise<void>>;
}

export function expect(actual: unknown): Expectation {
  return { ...matchers(actual, false), not: matchers(actual, true), rejects: rejecting(actual) };
}

/** Matches any object that has these properties (compared as toEqual does). */
expect.objectContaining = (sample: object): never =>
  asymmetric('ObjectContaining', sample, (actual) => isObject(actual) && Object.keys(sample).every((k) => k in actual && equals(actual[k], (sample as Plain)[k], false))) as never;

/** Matches any array that contains each of these items (in any order). */
expect.arrayContaining = (sample: readonly unknown[]): never =>
  asymmetric('ArrayContaining', sample, (actual) => Array.isArray(actual) && sample.every((x) => actual.some((y) => equals(y, x, false)))) as never;
