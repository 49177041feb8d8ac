/**
 * The verdict every chaos test ends with: nothing unexpected happened, and
 * each direction delivered exactly what was sent, in order, once.
 */
import type { ChaosReport } from './run';

export function expectCleanRun(report: ChaosReport, messagesEachWay: number): void {
  expect({
    unexpectedCloses: report.unexpectedCloses,
    instanceCrashes: report.instanceCrashes,
    integrityErrors: report.integrityErrors,
    anomalies: report.anomalies,
  }).toEqual({ unexpectedCloses: [], instanceCrashes: [], integrityErrors: [], anomalies: [] });
  for (const d of [report.c2s, report.s2c]) {
    expect({ sent: d.sent, delivered: d.delivered, lost: d.lost, duplicated: d.duplicated, reordered: d.reordered }).toEqual({
      sent: messagesEachWay,
      delivered: messagesEachWay,
      lost: 0,
      duplicated: 0,
      reordered: 0,
    });
  }
  expect(report.cappedByDuration).toBe(false);
  expect(report.ok).toBe(true);
}
