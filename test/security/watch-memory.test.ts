/**
 * docs/SECURITY.md, "Watches that are never read": a watch answers at most
 * `limits.maxResponseBytes` (plus one message), however long the unacked log
 * is, so sockets that never read cannot make a server hold the log once per
 * socket; and a response whose client takes nothing for `drainTimeout` is
 * destroyed. Measured on a server in a child process (./watch-memory.ts), so
 * only its memory counts. Before the byte budget, 100 such sockets cost that
 * server +383 MiB of heap.
 */
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { formatWatchMemory, measureWatchMemory, type WatchMemoryOptions } from './watch-memory';

jest.setTimeout(120_000);
const MiB = 1024 * 1024;

async function measure(o: WatchMemoryOptions) {
  const r = await measureWatchMemory(o);
  console.log(formatWatchMemory(o, r));
  return r;
}

describe('watches that are never read', () => {
  it.each([false, true])('200 sockets on a 4 MB unacked log (stream: %s): the server heap grows by less than 32 MiB, not 200 × 4 MB', async (stream) => {
    const r = await measure({ sockets: 200, stream });
    // Every socket was answered (the measurement's own connection is the +1).
    expect(r.held.connections).toBeGreaterThanOrEqual(190);
    expect(r.held.heapUsed - r.before.heapUsed).toBeLessThan(32 * MiB);
    expect(r.held.external - r.before.external).toBeLessThan(32 * MiB);
  });

  describe('with Redis', () => {
    let redis: RedisProcess;
    beforeAll(async () => {
      redis = await startRedis();
    });
    afterAll(async () => {
      await redis?.stop();
    });

    it('200 sockets: the same bound (the log is read in budgeted slices)', async () => {
      const r = await measure({ sockets: 200, redisPort: redis.port });
      expect(r.held.connections).toBeGreaterThanOrEqual(190);
      expect(r.held.heapUsed - r.before.heapUsed).toBeLessThan(32 * MiB);
    });
  });

  it('a response the client does not drain within drainTimeout is destroyed, and its memory freed (4 MiB responses, 20 sockets)', async () => {
    // A budget as large as the log, so each response is stuck in the server's own buffers.
    const r = await measure({ sockets: 20, maxResponseBytes: 4 * MiB, drainTimeout: 2_000, settleMs: 3_500 });
    expect(r.held.heapUsed - r.before.heapUsed).toBeGreaterThan(20 * MiB); // the measurement sees them
    expect(r.settled!.connections).toBeLessThanOrEqual(1);
    expect(r.settled!.heapUsed - r.before.heapUsed).toBeLessThan(8 * MiB);
    // Reset, not closed: the kernel does not keep the unsent bytes for a peer that never reads.
    if (r.settled!.kernelSendQueue >= 0) expect(r.settled!.kernelSendQueue).toBeLessThan(MiB);
  });
});
