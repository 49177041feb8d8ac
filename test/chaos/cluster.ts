/**
 * Chaos instances (test/fixtures/chaos-instance.ts) as child processes, to
 * SIGKILL and restart. Bundled once with esbuild (Lua scripts as text, as the
 * package build does; tsx cannot import .lua).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { buildSync } from 'esbuild';

export interface ChaosInstance {
  port: number;
  pid: number;
  /** The last few KB the instance wrote to stderr. */
  log(): string;
  /** Resolves when the process exits, with how; `byUs` is true after kill() / stop(). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; byUs: boolean }>;
  /** SIGKILL: no cleanup, requests in flight die with it. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

/** The project root: found from here, whether this file runs from source (jest) or from a bundle (scripts/run-ts.mjs). */
export function projectRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, 'utf8')).name === 'bidiweb') return dir;
    if (path.dirname(dir) === dir) throw new Error('bidiweb project root not found above ' + __dirname);
  }
}
let bundled: { file: string; dir: string } | undefined;
const live = new Set<ChildProcess>();

function fixtureBundle(): string {
  if (!bundled) {
    // Inside the project, so the bundle's bare imports resolve from node_modules.
    const cache = path.join(projectRoot(), 'node_modules', '.cache');
    mkdirSync(cache, { recursive: true });
    const dir = mkdtempSync(path.join(cache, 'bidi-chaos-instance-'));
    const file = path.join(dir, 'chaos-instance.js');
    const fixture = path.join(projectRoot(), 'test', 'fixtures', 'chaos-instance.ts');
    buildSync({ entryPoints: [fixture], bundle: true, platform: 'node', target: 'node20', format: 'cjs', packages: 'external', loader: { '.lua': 'text' }, outfile: file, logLevel: 'error' });
    bundled = { file, dir };
  }
  return bundled.file;
}

/** Deletes the bundle (call once no instance will start any more). */
export function removeBundle(): void {
  if (bundled) rmSync(bundled.dir, { recursive: true, force: true });
  bundled = undefined;
}

/** Kills every instance still running (for exit handlers). */
export function killAll(): void {
  for (const c of live) c.kill('SIGKILL');
  live.clear();
}

export function startChaosInstance(env: Record<string, string>, port = 0): Promise<ChaosInstance> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(process.execPath, [fixtureBundle()], {
      env: { ...process.env, ...env, PORT: String(port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(child);
    let out = '';
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-8000)));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`chaos instance did not start within 20 s:\n${err}`));
    }, 20_000);
    child.once('exit', (code) => {
      live.delete(child);
      clearTimeout(timer);
      reject(new Error(`chaos instance exited early with ${code}:\n${err}`));
    });
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const m = /LISTENING (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        let byUs = false;
        const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; byUs: boolean }>((r) =>
          child.once('exit', (code, signal) => {
            live.delete(child);
            r({ code, signal, byUs });
          }),
        );
        resolve({
          port: Number(m[1]),
          pid: child.pid!,
          log: () => err,
          exited,
          kill: async () => {
            byUs = true;
            child.kill('SIGKILL');
            await exited;
          },
          stop: async () => {
            byUs = true;
            child.kill('SIGTERM');
            await exited;
          },
        });
      }
    });
  });
}
