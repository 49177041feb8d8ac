/**
 * The scenario every runtime runs (samples/serverless/runtimes/app.ts behind
 * it): two sessions of the project's client chat both ways; a third one
 * opens and walks away, and one scheduled sweep (POST /sweep) expires it,
 * its onClose reaching the others; then every request served had a server
 * object of its own (GET /stats).
 */
import type { FetchLike } from '../../src/client';
import { openWatched, waitFor } from '../helpers/client-session';

export interface ScenarioOptions {
  /** The runtime's origin, e.g. http://127.0.0.1:1234 */
  base: string;
  /** The runtime's name as GET /stats reports it. */
  runtime: string;
  /** The app's idleTimeout (ms). */
  idleTimeout: number;
  /** Whether the runtime streams watches (the client's 'auto' check keeps streaming on). */
  streams: boolean;
  /** The scheduled function, where it is not `POST /sweep` (e.g. a Lambda invoked on its own): resolves with its `{ expired }`. */
  sweep?: () => Promise<unknown>;
  /** `GET /stats` elsewhere: `servers` is the number of session requests the runtime served, each with a server of its own. */
  stats?: () => Promise<{ runtime: string; servers: number }>;
}

export async function chatScenario({ base, runtime: name, idleTimeout: IDLE_TIMEOUT, streams, sweep, stats: statsOf }: ScenarioOptions): Promise<void> {
  // Count every session request the clients make, to compare with the servers the runtime built.
  // `answered` counts those that got a response; a watch cut by close() may or may not have
  // reached the runtime before it was aborted, so only these can be required to have a server.
  let requests = 0;
  let answered = 0;
  const counted: FetchLike = async (url, init) => {
    requests++;
    const res = await (fetch(url, init as RequestInit) as ReturnType<FetchLike>);
    answered++;
    return res;
  };

  // carol opens and walks away (no watch, no close): only a sweep can end her session.
  const carol = await fetch(`${base}/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ v: 1, meta: { name: 'carol' } }),
  });
  requests++;
  expect(carol.status).toBe(201);
  const carolOpenedAt = Date.now();

  const alice = openWatched(`${base}/session`, { meta: { name: 'alice' }, fetch: counted });
  const bob = openWatched(`${base}/session`, { meta: { name: 'bob' }, fetch: counted });
  await Promise.all([alice.opened, bob.opened]);

  for (const text of ['a1', 'a2', 'a3']) void alice.s.send({ text });
  for (const text of ['b1', 'b2']) void bob.s.send({ text });
  const chat = (w: typeof alice) => w.received.filter((m) => 'text' in m);
  await waitFor('5 chat messages on both sides', () => chat(alice).length === 5 && chat(bob).length === 5, 10_000);
  for (const w of [alice, bob]) {
    // Each sender's messages arrive in the order sent, once, at both sessions.
    expect(chat(w).filter((m) => m.from === 'alice').map((m) => m.text)).toEqual(['a1', 'a2', 'a3']);
    expect(chat(w).filter((m) => m.from === 'bob').map((m) => m.text)).toEqual(['b1', 'b2']);
  }

  // The scheduled function, once carol is idle past the idle timeout: it expires her (and only her).
  await new Promise((r) => setTimeout(r, Math.max(0, carolOpenedAt + IDLE_TIMEOUT + 500 - Date.now())));
  const swept = sweep ? await sweep() : await (await fetch(`${base}/sweep`, { method: 'POST' })).json();
  expect(swept).toEqual({ expired: 1 });
  await waitFor('the sweep’s onClose notice', () => alice.received.some((m) => m.left === 'carol') && bob.received.some((m) => m.left === 'carol'));
  expect(alice.s.state).toBe('open');
  expect(bob.s.state).toBe('open');
  // The runtime's server streams the watch (the client's 'auto' check kept it on).
  if (streams) {
    expect(alice.s.streaming).toBe(true);
    expect(bob.s.streaming).toBe(true);
  }

  // After they close, every request served had a server object of its own.
  await Promise.all([alice.s.close(), bob.s.close()]);
  const stats = statsOf ? await statsOf() : ((await (await fetch(`${base}/stats`)).json()) as { runtime: string; servers: number });
  expect(stats.runtime).toBe(name);
  // One server per request: every answered request had one, and none was built beyond what was sent.
  // carol's open (made without `counted`) is in `requests` only, hence the + 1. At most the two
  // watches close() aborted lie in between.
  expect(stats.servers).toBeGreaterThanOrEqual(answered + 1);
  expect(stats.servers).toBeLessThanOrEqual(requests);
  expect(requests - (answered + 1)).toBeLessThanOrEqual(2);
  expect(requests).toBeGreaterThan(5);
}
