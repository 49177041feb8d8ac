/**
 * The HTTP fuzzer (./fuzz.ts) in small, inside `npm test`: a few thousand
 * generated requests against a live Express server whose other sessions
 * carry real traffic. No 5xx, only documented 4xx with the JSON error body,
 * a 4xx changes nothing, the real sessions see exactly their sequences, and
 * the heap comes back to where it was. `npm run fuzz` runs 100 000.
 */
import express from 'express';
import request from 'supertest';
import { bidiWeb } from '../../src/express';
import { formatFuzzReport, runFuzz } from './fuzz';

jest.setTimeout(180_000);

const SEED = Number(process.env.SEED ?? 424_242);

it(`6 000 generated requests: no crash, no 5xx, only documented 4xx, real traffic unaffected, heap back to its level (seed ${SEED})`, async () => {
  const lines: string[] = [];
  const report = await runFuzz({
    seed: SEED,
    requests: 6_000,
    concurrency: 16,
    trafficSessions: 4,
    trafficMessages: 100,
    sequentialChecks: 500,
    idleTimeoutMs: 3_000,
    log: (l) => lines.push(l),
  });
  console.log(`${lines.join('\n')}\n${formatFuzzReport(report)}`);
  expect(report.failures).toEqual([]);
  expect(report.traffic.problems).toEqual([]);
  expect(report.traffic.c2s).toBe(400);
  expect(report.traffic.s2c).toBe(400);
  // Every kind of request was generated, and the server answered with a spread of documented errors.
  for (const kind of ['open', 'send', 'watch', 'close', 'method-path', 'oversized', 'cross-origin', 'raw-truncate', 'raw-slow', 'raw-garbage', 'hostile-utf8', 'hostile-depth', 'hostile-rebinding']) {
    expect(report.kinds[kind] ?? 0).toBeGreaterThan(0);
  }
  for (const key of ['400 BAD_REQUEST', '400 MISSING_SESSION_ID', '400 INVALID_ACK', '404 UNKNOWN_SESSION', '413 BODY_TOO_LARGE', '415 UNSUPPORTED_MEDIA_TYPE', '403 CORS_FORBIDDEN', '405 METHOD_NOT_ALLOWED']) {
    expect(report.histogram[key] ?? 0).toBeGreaterThan(0);
  }
  // No leak: what the run allocated is gone once its sessions expired (generous: jest's own heap moves too).
  expect(report.heap.sessionsAfter).toBe(0);
  expect(report.heap.deltaBytes).toBeLessThan(8 * 1024 * 1024);
});

it('a message whose JSON is nested a few thousand levels deep gets a 4xx, not a 500 (found by the fuzzer)', async () => {
  // JSON.parse accepts nesting that JSON.stringify (parseSend re-serialises each message) cannot walk
  // back: it throws RangeError (stack overflow). That used to answer 500 and be reported as a server fault.
  const errors: unknown[] = [];
  const app = express().use(bidiWeb({ sweepInterval: 0, onError: (e) => void errors.push(e) }));
  const opened = await request(app).post('/session').set('content-type', 'application/json').send('{"v":1}');
  const depth = 20_000; // 40 KB of brackets: far below maxBodyBytes (1 MiB) and maxMessageBytes (256 KiB)
  const res = await request(app)
    .post('/session/send')
    .set('content-type', 'application/json')
    .set('bidi-sid', opened.body.sid)
    .send(`{"msgs":[[1,${'['.repeat(depth)}${']'.repeat(depth)}]]}`);
  // Expected: a documented 4xx (400 BAD_REQUEST or 413 MESSAGE_TOO_LARGE), nothing reported as a server fault.
  expect({ status: res.status, code: res.body?.error?.code, reported: errors.length }).toEqual({
    status: expect.any(Number),
    code: expect.stringMatching(/^(BAD_REQUEST|MESSAGE_TOO_LARGE)$/),
    reported: 0,
  });
  expect(res.status === 400 || res.status === 413).toBe(true);
});
