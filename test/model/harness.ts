/**
 * A simulated network and a simulated store latency for model tests of the
 * real core: requests are `BidiServer.handle(BidiRequest)` calls (no HTTP),
 * built the way src/core/fetch.ts builds them, and every store operation of
 * every "instance" (a BidiServer object of its own over one shared store) is
 * held at a gate that a fast-check scheduler opens in a random order. So
 * concurrent requests interleave at store-operation granularity in every
 * order the scheduler picks, and fast-check shrinks a failing schedule.
 *
 * Each store operation stays atomic (MemoryStore runs it synchronously once
 * its gate opens); what the scheduler reorders is which request's next
 * operation reaches the store first — the freedom a remote store behind
 * several instances really has.
 *
 * An instance can be *crashed*: from then on its operations never reach the
 * store and its requests never answer (as after a SIGKILL).
 */
import fc from 'fast-check';
import type { BidiRequest, BidiResponse, Store } from '../../src/core';
import { BidiError } from '../../src/core';

/** A BidiRequest as src/core/fetch.ts makes one from a Fetch `Request`. */
export function bidiRequest(
  method: string,
  path: string,
  init: { query?: Record<string, string | number>; headers?: Record<string, string>; body?: string } = {},
): BidiRequest {
  const headers = new Headers(init.headers);
  if (init.body !== undefined && !headers.has('content-type')) headers.set('content-type', 'application/json');
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(init.query ?? {})) query.set(k, String(v));
  const body = init.body ?? '';
  return {
    method,
    path,
    query,
    headers,
    text: async (limit) => {
      if (Buffer.byteLength(body) > limit) throw new BidiError('BODY_TOO_LARGE', `request body exceeds ${limit} bytes`);
      return body;
    },
  };
}

export interface Parsed {
  status: number;
  body: any;
}

export function parse(res: BidiResponse | null): Parsed {
  if (!res) throw new Error('the server did not serve the path');
  return { status: res.status, body: res.body ? JSON.parse(res.body) : undefined };
}

export interface Observation {
  /** Violations found while the schedule ran (checked at the end). */
  errors: string[];
}

/** Store methods that go through a gate (inspect stays direct: the checkers use it). */
const GATED = [
  'create',
  'receive',
  'commit',
  'renewLease',
  'append',
  'appendMany',
  'read',
  'close',
  'finishClose',
  'sweep',
  'subscribe',
  'join',
  'leave',
  'members',
] as const;

export interface Gates {
  s: fc.Scheduler;
  crashed: Set<number>;
  /** Called after each operation with its name, sid, input and result, before the caller sees it. */
  after?: (instance: number, op: string, sid: string | undefined, input: unknown, result: unknown) => void;
}

/** The view of `inner` that instance `id` has: every operation waits for the scheduler. */
export function gatedStore(inner: Store, id: number, gates: Gates): Store {
  const view: Record<string, unknown> = {};
  for (const name of GATED) {
    const fn = (inner as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[name]!.bind(inner);
    view[name] = async (...args: unknown[]) => {
      await gates.s.schedule(Promise.resolve(), `i${id}:${name}`);
      if (gates.crashed.has(id)) await new Promise(() => {}); // a dead instance never reaches the store
      const result = await fn(...args);
      gates.after?.(id, name, typeof args[0] === 'string' ? args[0] : undefined, args[1], result);
      return result;
    };
  }
  view.inspect = (sids: string[]) => inner.inspect(sids);
  view.dispose = async () => {};
  return view as unknown as Store;
}

/** A point in a handler where the scheduler may run other things (the handler "takes time"). */
export async function yieldTo(gates: Gates, id: number, label: string): Promise<void> {
  await gates.s.schedule(Promise.resolve(), `i${id}:${label}`);
  if (gates.crashed.has(id)) await new Promise(() => {});
}

/** The seed of this run of a property: FC_SEED to replay one, else fresh; always printed. */
export function propertySeed(name: string): number {
  const seed = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : (Date.now() ^ (Math.random() * 2 ** 31)) | 0;
  console.log(`${name}: fast-check seed ${seed} (replay with FC_SEED=${seed})`);
  return seed;
}

/** `fc.assert`, with the seed at the top of any failure. */
export async function assertProperty(name: string, property: fc.IAsyncProperty<any>, numRuns: number): Promise<void> {
  const seed = propertySeed(name);
  try {
    await fc.assert(property, { seed, numRuns });
  } catch (err) {
    (err as Error).message = `${name} failed — fast-check seed ${seed} (replay: FC_SEED=${seed})\n${(err as Error).message}`;
    throw err;
  }
}

/** Timers the core starts (delivery lease heartbeats) that a crashed flow would leave behind: cleared after each run. */
export function trackIntervals(): { clear(): void; restore(): void } {
  const original = global.setInterval;
  const made = new Set<ReturnType<typeof setInterval>>();
  global.setInterval = ((...args: Parameters<typeof setInterval>) => {
    const t = original(...args);
    made.add(t);
    return t;
  }) as typeof setInterval;
  return {
    clear() {
      for (const t of made) clearInterval(t);
      made.clear();
    },
    restore() {
      global.setInterval = original;
    },
  };
}

export const faultArb = fc.constantFrom('none', 'none', 'none', 'dropRequest', 'dropResponse', 'duplicate') as fc.Arbitrary<
  'none' | 'dropRequest' | 'dropResponse' | 'duplicate'
>;
export type Fault = 'none' | 'dropRequest' | 'dropResponse' | 'duplicate';

/**
 * Sends one request through the simulated network: `dropRequest` never
 * reaches a server; `dropResponse` is served but the answer is lost;
 * `duplicate` is served twice (by this instance and the next one).
 * Resolves with the response the client sees, or null.
 */
export async function network(
  fault: Fault,
  serve: (instance: number) => Promise<BidiResponse | null>,
  instance: number,
  instances: number,
): Promise<Parsed | null> {
  if (fault === 'dropRequest') return null;
  if (fault === 'duplicate') {
    const [a] = await Promise.all([serve(instance), serve((instance + 1) % instances)]);
    return parse(a);
  }
  const res = await serve(instance);
  return fault === 'dropResponse' ? null : parse(res);
}
