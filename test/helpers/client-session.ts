/** A real client session as the sample smoke tests watch it: what it received, how it closed, when it opened. */
import { open } from '../../src/client';
import type { BidiClientSession, CloseEvent, ClientOptions } from '../../src/client';

export interface WatchedSession {
  s: BidiClientSession<any, unknown>;
  received: any[];
  closed: CloseEvent[];
  /** Resolves on `open`, rejects with the close event if the session ends first. */
  opened: Promise<void>;
}

export function openWatched(url: string, options: ClientOptions = {}): WatchedSession {
  const s: BidiClientSession<any, unknown> = open(url, { retry: { initialDelayMs: 20, maxDelayMs: 200 }, ...options });
  const received: any[] = [];
  const closed: CloseEvent[] = [];
  s.on('message', (m) => received.push(m));
  s.on('close', (e) => closed.push(e));
  const opened = new Promise<void>((resolve, rejectOpen) => {
    s.once('open', () => resolve());
    s.once('close', (e) => rejectOpen(Object.assign(new Error(e.reason), e)));
  });
  opened.catch(() => {});
  return { s, received, closed, opened };
}

/** Polls `cond` every 10 ms; throws "timed out waiting for <what>" after `timeoutMs`. */
export async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
