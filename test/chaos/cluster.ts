/**
 * Chaos instances (test/fixtures/chaos-instance.ts) as child processes, to
 * SIGKILL and restart. Bundled once (samples/chat/bundle.ts: Lua scripts as
 * text, as the package build does; tsx cannot import .lua).
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { bundleEntry } from '../../samples/chat/bundle';
import { spawnListening } from '../helpers/instances';

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
let bundled: string | undefined;
const live = new Set<ChildProcess>();

function fixtureBundle(): string {
  return (bundled ??= bundleEntry(path.join(projectRoot(), 'test', 'fixtures', 'chaos-instance.ts'), projectRoot()));
}

/** Deletes the bundle (call once no instance will start any more). */
export function removeBundle(): void {
  if (bundled) rmSync(path.dirname(bundled), { recursive: true, force: true });
  bundled = undefined;
}

/** Kills every instance still running (for exit handlers). */
export function killAll(): void {
  for (const c of live) c.kill('SIGKILL');
  live.clear();
}

export async function startChaosInstance(env: Record<string, string>, port = 0): Promise<ChaosInstance> {
  let err = '';
  let spawned: ChildProcess | undefined;
  const { child, port: listening } = await spawnListening(fixtureBundle(), env, {
    port,
    stderr: 'pipe',
    onSpawn: (c) => {
      spawned = c;
      live.add(c);
      c.stderr!.on('data', (chunk: Buffer) => (err = (err + chunk.toString()).slice(-8000)));
    },
    details: () => err,
  }).catch((e: unknown) => {
    if (spawned) live.delete(spawned);
    throw e;
  });
  let byUs = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; byUs: boolean }>((r) =>
    child.once('exit', (code, signal) => {
      live.delete(child);
      r({ code, signal, byUs });
    }),
  );
  const signal = async (sig: NodeJS.Signals) => {
    byUs = true;
    child.kill(sig);
    await exited;
  };
  return { port: listening, pid: child.pid!, log: () => err, exited, kill: () => signal('SIGKILL'), stop: () => signal('SIGTERM') };
}
