/**
 * A fetch wrapper that misbehaves like a bad network, reproducibly from a
 * seed: it drops requests before they leave, drops responses after the
 * server processed them, sends duplicates, and delays requests (which
 * reorders concurrent ones).
 */
import type { FetchLike } from '../../src/client';
import { sleep as abortableSleep } from '../../src/core/util';
export interface Faults {
  dropRequest: number;
  dropResponse: number;
  duplicate: number;
  maxDelayMs: number;
}

export interface FaultStats {
  requests: number;
  droppedRequests: number;
  droppedResponses: number;
  duplicates: number;
}

/** mulberry32: a small seeded PRNG. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function faultyFetch(seed: number, faults: Faults): { fetch: typeof fetch; stats: FaultStats; heal(): void } {
  const random = rng(seed);
  const stats: FaultStats = { requests: 0, droppedRequests: 0, droppedResponses: 0, duplicates: 0 };
  let healed = false;
  const wrapped = async (input: any, init?: any): Promise<Response> => {
    stats.requests++;
    if (healed) return fetch(input, init);
    const delay = random() * faults.maxDelayMs;
    const dropRequest = random() < faults.dropRequest;
    const duplicate = random() < faults.duplicate;
    const dropResponse = random() < faults.dropResponse;
    if (delay > 0) await sleep(delay);
    if (dropRequest) {
      stats.droppedRequests++;
      throw new TypeError('fetch failed (injected: request dropped)');
    }
    if (duplicate) {
      stats.duplicates++;
      // The copy's response is lost on the way; the server still sees it.
      const copyDelay = random() * faults.maxDelayMs;
      void sleep(copyDelay).then(() => fetch(input, { ...init, signal: undefined }).then((r) => r.text()).catch(() => {}));
    }
    const res = await fetch(input, init);
    if (dropResponse) {
      await res.text().catch(() => {});
      stats.droppedResponses++;
      throw new TypeError('fetch failed (injected: response dropped)');
    }
    return res;
  };
  return { fetch: wrapped as typeof fetch, stats, heal: () => void (healed = true) };
}

/** Faults of {@link sessionChaosFetch}, as probabilities per request (and a delay bound). */
export interface SessionFaults {
  /** Lost before the server sees it. */
  before: number;
  /** Lost after the server processed it. */
  after: number;
  duplicate: number;
  maxDelayMs: number;
}

/**
 * A client `fetch` (FetchLike) that loses, duplicates and delays only the
 * requests of an open session (they carry `Bidi-Sid`) other than DELETE:
 * opening and closing stay reliable. Delays honour the request's signal.
 */
export function sessionChaosFetch(random: () => number, p: SessionFaults): { fetch: FetchLike; stats: { before: number; after: number; duplicate: number } } {
  const stats = { before: 0, after: 0, duplicate: 0 };
  const chaos: FetchLike = async (url, init) => {
    await abortableSleep(Math.floor(random() * p.maxDelayMs), init.signal);
    if (init.signal.aborted) throw new DOMException('aborted', 'AbortError');
    const breakable = init.headers['Bidi-Sid'] !== undefined && init.method !== 'DELETE';
    if (breakable && random() < p.before) {
      stats.before++;
      throw new TypeError('chaos: request lost');
    }
    if (breakable && random() < p.duplicate) {
      stats.duplicate++;
      void fetch(url, init).then((r) => r.text(), () => undefined);
    }
    const res = await fetch(url, init);
    const text = await res.text();
    if (breakable && random() < p.after) {
      stats.after++;
      throw new TypeError('chaos: response lost');
    }
    return { status: res.status, headers: res.headers, text: async () => text };
  };
  return { fetch: chaos, stats };
}
