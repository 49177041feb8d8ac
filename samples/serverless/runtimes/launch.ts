/**
 * Finds a runtime binary that npm installed (packages `deno` and `bun`, whose
 * binaries come in per-platform optional dependencies: no install script is
 * needed, the package.json `allowScripts` keeps them off) and starts a
 * bundled entry (./bundle.ts) on it as a child process.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

export type RuntimeName = 'deno' | 'bun';

export interface Runtime {
  name: RuntimeName;
  bin: string;
  version: string;
  /** The command line that runs a bundled entry file. */
  args(file: string): string[];
}

const requireHere = createRequire(__filename);

function packageDir(name: string): string | undefined {
  try {
    return path.dirname(requireHere.resolve(`${name}/package.json`));
  } catch {
    return undefined;
  }
}

/** Candidate paths, most specific first: the platform package, then what an install script would have placed. */
function candidates(name: RuntimeName): string[] {
  const arch = process.arch;
  const out: string[] = [];
  if (name === 'deno') {
    const target = process.platform === 'linux' ? `linux-${arch}-glibc` : `${process.platform}-${arch}`;
    const dir = packageDir(`@deno/${target}`);
    if (dir) out.push(path.join(dir, 'deno'));
    const main = packageDir('deno');
    if (main) out.push(path.join(main, 'deno'));
  } else {
    const a = arch === 'arm64' ? 'aarch64' : arch;
    for (const pkg of [`@oven/bun-${process.platform}-${a}`, `@oven/bun-${process.platform}-${a}-baseline`]) {
      const dir = packageDir(pkg);
      if (dir) out.push(path.join(dir, 'bin', 'bun'));
    }
    const main = packageDir('bun');
    if (main) out.push(path.join(main, 'bin', 'bun.exe')); // where bun's postinstall moves it
  }
  return out;
}

/** The runtime, or why it cannot run here (a skip reason to print). */
export function findRuntime(name: RuntimeName): Runtime | { skip: string } {
  const tried = candidates(name);
  const problems: string[] = [];
  for (const bin of tried) {
    if (!existsSync(bin)) continue;
    const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 20_000 });
    if (r.status === 0) {
      const version = r.stdout.trim().split('\n')[0]!;
      const args = name === 'deno' ? (file: string) => ['run', '-A', '--no-config', '--no-lock', file] : (file: string) => [file];
      return { name, bin, version, args };
    }
    problems.push(`${bin}: ${r.error?.message ?? r.stderr.trim().split('\n')[0] ?? `exit ${r.status}`}`);
  }
  if (problems.length > 0) return { skip: `${name} does not run here: ${problems.join('; ')}` };
  return { skip: `${name} is not installed (npm package \`${name}\`; looked for ${tried.join(', ') || 'its platform package'})` };
}

export interface Started {
  child: ChildProcess;
  port: number;
  /** ms from spawn to "LISTENING". */
  startedMs: number;
  /** What the child wrote to stderr (last 8 KB). */
  stderr(): string;
  stop(): Promise<void>;
}

/** Spawns `runtime` on `file` with `env` (PORT=0 by default) and waits (≤ `timeoutMs`) for "LISTENING <port>". */
export function startRuntime(runtime: Runtime, file: string, env: Record<string, string>, timeoutMs = 20_000): Promise<Started> {
  const t0 = performance.now();
  const child = spawn(runtime.bin, runtime.args(file), {
    cwd: path.dirname(file),
    env: { ...process.env, PORT: '0', NO_COLOR: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-8192)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`${runtime.name} did not start within ${timeoutMs} ms:\n${err}`));
    }, timeoutMs);
    const early = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`${runtime.name} exited early (${code}):\n${err}`));
    };
    child.once('exit', early);
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const m = /LISTENING (\d+)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      child.off('exit', early);
      child.stdout!.removeAllListeners('data');
      child.stdout!.resume();
      resolve({ child, port: Number(m[1]), startedMs: performance.now() - t0, stderr: () => err, stop });
    });
  });
}
