/** Server instances as real child processes (test/fixtures/instance.ts), to kill and restart. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import path from 'node:path';
import { buildSync } from 'esbuild';

export interface Instance {
  port: number;
  pid: number;
  /** SIGKILL: no cleanup, requests in flight die with it. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'instance.ts');
let bundled: string | undefined;

/** Bundled once with esbuild, as the package build does (Lua scripts as text); starts fast, too. */
function fixtureBundle(): string {
  if (!bundled) {
    // Inside the project, so the bundle's bare imports resolve from node_modules.
    const cache = path.join(__dirname, '..', '..', 'node_modules', '.cache');
    mkdirSync(cache, { recursive: true });
    const out = path.join(mkdtempSync(path.join(cache, 'bidi-instance-')), 'instance.js');
    buildSync({ entryPoints: [FIXTURE], bundle: true, platform: 'node', target: 'node20', format: 'cjs', packages: 'external', loader: { '.lua': 'text' }, outfile: out, logLevel: 'error' });
    bundled = out;
  }
  return bundled;
}

export function startInstance(env: Record<string, string>, port = 0): Promise<Instance> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(process.execPath, [fixtureBundle()], {
      env: { ...process.env, ...env, PORT: String(port) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    const timer = setTimeout(() => reject(new Error('instance did not start within 20 s')), 20_000);
    child.once('exit', (code) => reject(new Error(`instance exited early with ${code}`)));
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const m = /LISTENING (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        const exited = new Promise<void>((r) => child.once('exit', () => r()));
        resolve({
          port: Number(m[1]),
          pid: child.pid!,
          kill: async () => {
            child.kill('SIGKILL');
            await exited;
          },
          stop: async () => {
            child.kill('SIGTERM');
            await exited;
          },
        });
      }
    });
  });
}
