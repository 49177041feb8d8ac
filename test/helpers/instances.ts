/** Server instances as real child processes (test/fixtures/*.ts, bundled), to kill and restart. */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { bundleEntry } from '../../samples/chat/bundle';

export interface Instance {
  port: number;
  pid: number;
  /** SIGKILL: no cleanup, requests in flight die with it. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

export interface SpawnOptions {
  port?: number;
  /** 'pipe' to read it in `onSpawn`; default 'inherit'. */
  stderr?: 'inherit' | 'pipe';
  /** Called right after the spawn, before anything else (to track the child, read its stderr). */
  onSpawn?(child: ChildProcess): void;
  /** Added to the start errors (e.g. the child's stderr). */
  details?(): string;
  /** Node flags before the bundle (e.g. `--expose-gc` for a process that measures its memory). */
  execArgv?: string[];
}

/**
 * Runs `node <bundle>` and resolves with the child and its port once it
 * prints "LISTENING <port>" (test/fixtures/listen.ts). Rejects if it exits
 * first, or kills it and rejects if it has not started within 20 s.
 */
export function spawnListening(bundle: string, env: Record<string, string>, o: SpawnOptions = {}): Promise<{ child: ChildProcess; port: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...(o.execArgv ?? []), bundle], {
      env: { ...process.env, ...env, PORT: String(o.port ?? 0) },
      stdio: ['ignore', 'pipe', o.stderr ?? 'inherit'],
    });
    o.onSpawn?.(child);
    const details = () => (o.details ? `:\n${o.details()}` : '');
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${path.basename(bundle)} did not start within 20 s${details()}`));
    }, 20_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${path.basename(bundle)} exited early with ${code}${details()}`));
    });
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const m = /LISTENING (\d+)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      // Keep draining stdout (a full pipe would block the child), without keeping what it says.
      child.stdout!.removeAllListeners('data');
      child.stdout!.resume();
      resolve({ child, port: Number(m[1]) });
    });
  });
}

let bundled: string | undefined;

/** test/fixtures/instance.ts, bundled once (Lua scripts as text, as the package build does; tsx cannot load them). */
function fixtureBundle(): string {
  return (bundled ??= bundleEntry(path.join(__dirname, '..', 'fixtures', 'instance.ts')));
}

/** Deletes the bundle (call once no instance will start any more). */
export function removeInstanceBundle(): void {
  if (bundled) rmSync(path.dirname(bundled), { recursive: true, force: true });
  bundled = undefined;
}

export async function startInstance(env: Record<string, string>, port = 0): Promise<Instance> {
  const { child, port: listening } = await spawnListening(fixtureBundle(), env, { port });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const signal = async (sig: NodeJS.Signals) => {
    child.kill(sig);
    await exited;
  };
  return { port: listening, pid: child.pid!, kill: () => signal('SIGKILL'), stop: () => signal('SIGTERM') };
}
