/**
 * docs/SECURITY.md, "WebSockets": what one client can make an instance hold
 * over bidiweb/ws. Upgrades past `maxSocketsPerClient` (and `maxSockets`) are
 * refused with a 429/503 JSON answer before any upgrade; a socket that never
 * sends its hello is closed after `helloTimeoutMs`; a socket whose client
 * asks and never reads has its reads held once more than `highWaterMark` is
 * queued for it, and is dropped after `drainTimeout`. Meanwhile a second
 * client connects and gets its echo. Measured on a server in a child process
 * (./ws-sockets.ts), so only its memory counts.
 */
import { formatWsAbuse, measureWsAbuse, type WsAbuseOptions } from './ws-sockets';

jest.setTimeout(120_000);
const MiB = 1024 * 1024;

it('a client flooding upgrades, and one holding sockets it never reads, stay within the limits; a second client still connects', async () => {
  const o: WsAbuseOptions = { upgrades: 300, frames: 100, maxSockets: 40, maxPerClient: 10, helloMs: 2_000, drainTimeout: 3_000 };
  const r = await measureWsAbuse(o);
  console.log(formatWsAbuse(o, r));

  // The flood: the client's first 10 upgrades succeed, the other 290 get the 429 before any upgrade.
  expect(r.flood.answers).toEqual({ '101': 10, '429': 290 });
  // (Under load the hello timeout may have closed them already: at most 10, and their TCP connections plus the stats request.)
  expect(r.flood.held.sockets).toBeLessThanOrEqual(10);
  expect(r.flood.held.connections).toBeLessThanOrEqual(11);
  expect(r.flood.held.refused).toBe(290);
  expect(r.flood.held.heapUsed - r.before.heapUsed).toBeLessThan(8 * MiB);
  // No hello within helloTimeoutMs: closed.
  expect(r.flood.afterHello.sockets).toBe(0);
  expect(r.flood.goodClientMs).toBeLessThan(5_000);

  // Unread: 100 watch frames of ~256 KiB answers each, on 10 sockets, would be ~250 MiB queued;
  // each socket holds about highWaterMark + maxRequestsPerSocket answers instead.
  expect(r.unread.held.heapUsed + r.unread.held.external - r.before.heapUsed - r.before.external).toBeLessThan(64 * MiB);
  expect(r.unread.goodClientMs).toBeLessThan(5_000);
  // Past drainTimeout: dropped, memory back.
  expect(r.unread.settled.sockets).toBe(0);
  expect(r.unread.closedByServer).toBe(10);
  expect(r.unread.settled.heapUsed - r.before.heapUsed).toBeLessThan(8 * MiB);
});
