/**
 * `bidiweb/testing` is runner-neutral: the store contract suite, run by
 * node:test (test/stores/memory.node-test.ts, no Jest in the process), passes
 * on MemoryStore and fails on a store with a known bug.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');

interface NodeTestRun {
  exitCode: number;
  tests: number;
  pass: number;
  fail: number;
  /** Failed tests (not suites), by name. */
  failed: string[];
  output: string;
}

/** Names of the failed tests in TAP output: `not ok` lines whose YAML block is not a suite's (a suite fails when a test in it does). */
function failedTests(tap: string): string[] {
  const lines = tap.split('\n');
  const names: string[] = [];
  lines.forEach((line, i) => {
    const name = /^\s*not ok \d+ - (.*)$/.exec(line)?.[1];
    if (name === undefined) return;
    const end = lines.findIndex((l, j) => j > i && /^\s*\.\.\.$/.test(l));
    if (!lines.slice(i, end).some((l) => /^\s*type: 'suite'$/.test(l))) names.push(name);
  });
  return names;
}

/** Runs the file under `node --test` with the TAP reporter and reads its summary lines (`# tests 127`, `# pass 127`, …). */
function runNodeTest(env: Record<string, string> = {}): Promise<NodeTestRun> {
  const args = ['--import', 'tsx', '--test', '--test-reporter=tap', 'test/stores/memory.node-test.ts'];
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...env }, timeout: 120_000 }, (error, stdout, stderr) => {
      const count = (name: string) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(stdout)?.[1] ?? NaN);
      resolve({
        exitCode: error ? (typeof error.code === 'number' ? error.code : -1) : 0,
        tests: count('tests'),
        pass: count('pass'),
        fail: count('fail'),
        failed: failedTests(stdout),
        output: `${stdout}\n${stderr}`,
      });
    });
  });
}

it('passes on MemoryStore under node:test: every test of the suite ran and passed', async () => {
  const run = await runNodeTest();
  if (run.exitCode !== 0 || run.fail !== 0) console.log(run.output.slice(-4_000));
  expect(run.tests).toBeGreaterThan(100);
  expect({ exitCode: run.exitCode, pass: run.pass, fail: run.fail }).toEqual({ exitCode: 0, pass: run.tests, fail: 0 });
});

it('fails under node:test on a store whose count() is off by one, naming the count tests', async () => {
  const run = await runNodeTest({ CONTRACT_STORE: 'miscounting' });
  expect(run.exitCode).not.toBe(0);
  expect(run.fail).toBeGreaterThan(0);
  expect(run.pass + run.fail).toBe(run.tests);
  expect(run.failed).toContain('count: sessions not closed yet (open and closing), not tombstones');
});
