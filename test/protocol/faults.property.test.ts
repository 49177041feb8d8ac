/**
 * Property: whatever the network does to individual HTTP requests (drops
 * before or after the server, duplicates, delays that reorder concurrent
 * requests), the real client and the real server each receive exactly the
 * other side's sequence, in order, once. Runs over every way of serving the
 * core, including a fresh server object per request.
 */
import fc from 'fast-check';
import { open } from '../../src/client';
import { MemoryStore } from '../../src/core';
import { faultyFetch } from '../helpers/faulty-fetch';
import { startTarget, TARGET_KINDS } from '../helpers/targets';

jest.setTimeout(120_000);

describe.each(TARGET_KINDS)('exactly once in order under injected faults, over %s', (kind) => {
  it('holds for random schedules', async () => {
    const injected = { requests: 0, droppedRequests: 0, droppedResponses: 0, duplicates: 0 };
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
          clientMsgs: fc.integer({ min: 0, max: 60 }),
          serverMsgs: fc.integer({ min: 0, max: 60 }),
          maxInflight: fc.integer({ min: 1, max: 4 }),
          dropRequest: fc.double({ min: 0.02, max: 0.25, noNaN: true }),
          dropResponse: fc.double({ min: 0.02, max: 0.25, noNaN: true }),
          duplicate: fc.double({ min: 0.02, max: 0.15, noNaN: true }),
          maxDelayMs: fc.integer({ min: 0, max: 20 }),
          perRequest: fc.integer({ min: 1, max: 5 }),
          window: fc.integer({ min: 2, max: 16 }),
        }),
        async (p) => {
          const received: Array<[number, unknown]> = [];
          const store = new MemoryStore();
          const target = await startTarget(kind, {
            store,
            wait: 200,
            leaseMs: 200,
            limits: { maxMessagesPerRequest: p.perRequest, inboundWindow: p.window },
            onError: () => {},
            async onMessage(_session, data, info) {
              received.push([info.seq, data]);
              // Handlers take time: this is where a second delivery could overlap.
              if (info.seq % 3 === 0) await new Promise((r) => setTimeout(r, 1));
            },
          });
          const net = faultyFetch(p.seed, p);
          const session = open(target.url, {
            fetch: net.fetch as any,
            maxInflight: p.maxInflight,
            retry: { initialDelayMs: 5, maxDelayMs: 40 },
            resendAfterMs: 100,
          });
          const delivered: Array<[number, unknown]> = [];
          session.on('message', (data: unknown, info: { seq: number }) => void delivered.push([info.seq, data]));
          let closedEarly: unknown;
          session.on('close', (ev: unknown) => (closedEarly = ev));
          try {
            const sends: Promise<void>[] = [];
            const firstHalf = Math.floor(p.clientMsgs / 2);
            for (let i = 1; i <= firstHalf; i++) sends.push(session.send({ c: i }));
            await new Promise<void>((resolve) => (session.state === 'open' ? resolve() : session.on('open', () => resolve())));
            const sid = session.id!;
            // Server pushes from "another instance", concurrently with the client's sends, in small bursts.
            const pushes = (async () => {
              for (let i = 1; i <= p.serverMsgs; i++) {
                await target.hub.send(sid, { s: i });
                if (i % 3 === 0) await new Promise((r) => setTimeout(r, 2));
              }
            })();
            for (let i = firstHalf + 1; i <= p.clientMsgs; i++) {
              sends.push(session.send({ c: i }));
              if (i % 4 === 0) await new Promise((r) => setTimeout(r, 3));
            }
            await Promise.all([...sends, pushes]);
            const deadline = Date.now() + 30_000;
            while (delivered.length < p.serverMsgs && Date.now() < deadline && !closedEarly) {
              await new Promise((r) => setTimeout(r, 10));
            }
            expect(closedEarly).toBeUndefined();
            expect(received).toEqual(Array.from({ length: p.clientMsgs }, (_, i) => [i + 1, { c: i + 1 }]));
            expect(delivered).toEqual(Array.from({ length: p.serverMsgs }, (_, i) => [i + 1, { s: i + 1 }]));
          } finally {
            for (const k of Object.keys(injected) as Array<keyof typeof injected>) injected[k] += net.stats[k];
            net.heal();
            await session.close().catch(() => {});
            await target.close();
          }
        },
      ),
      { numRuns: kind === 'express' ? 40 : 20 },
    );
    // The property is only worth something if the network really misbehaved.
    expect(injected.droppedRequests).toBeGreaterThan(0);
    expect(injected.droppedResponses).toBeGreaterThan(0);
    expect(injected.duplicates).toBeGreaterThan(0);
    console.log(`faults over ${kind}:`, JSON.stringify(injected));
  });
});
