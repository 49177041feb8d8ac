/**
 * The chat on three instances over Redis, behind a round-robin balancer
 * (./balancer.ts: no stickiness; skips an instance that refuses connections)
 * — the talk's architecture on one machine:
 *
 *   npm run chat:cluster                 # http://localhost:3000
 *   PORT=8080 npm run chat:cluster
 *
 *   browser ──▶ balancer :PORT ──round robin──▶ instance 1 ─┐
 *                                               instance 2 ─┼──▶ redis-server (its own, on a free port)
 *                                               instance 3 ─┘
 *
 * Every request of every session may land on any instance; the page shows
 * which one answered last ("via instance-2"). Open two tabs and chat; kill
 * one instance (its pid is printed) and watch the pages carry on: the
 * balancer takes it out of the rotation at its first refused connection,
 * sends that request to another instance, and probes it every second.
 *
 * It starts its own `redis-server` (on PATH) on a free port with a throwaway
 * data directory — never the machine's Redis on 6379 — and stops everything
 * on Ctrl-C. Set REDIS_URL to use a Redis of yours instead (keys are
 * prefixed `chat:`).
 *
 * The instances run ./instance.ts bundled with esbuild (./bundle.ts: tsx
 * cannot load the Lua scripts of src/redis), into node_modules/.cache.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startBalancer, type Balancer } from './balancer';
import { bundleEntry } from './bundle';
import { REPO_ROOT } from './client-bundle';

const INSTANCES = Number(process.env.INSTANCES ?? 3);

export interface ChatInstance {
  name: string;
  port: number;
  pid: number;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** Starts one bundled instance (./instance.ts) and resolves once it listens. */
export function startChatInstance(bundle: string, env: Record<string, string>, root = REPO_ROOT): Promise<ChatInstance> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bundle], {
      env: { ...process.env, PORT: '0', CHAT_ROOT: root, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`chat instance ${env.INSTANCE ?? ''} did not start within 30 s`));
    }, 30_000);
    const early = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`chat instance ${env.INSTANCE ?? ''} exited early with ${code}`));
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
      const exited = new Promise<void>((r) => (child.exitCode !== null ? r() : child.once('exit', () => r())));
      resolve({
        name: env.INSTANCE ?? '',
        port: Number(m[1]),
        pid: child.pid!,
        child,
        stop: async () => {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
          await exited;
        },
      });
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let data = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('error', () => done(false));
    socket.on('data', (c) => {
      data += c.toString();
      if (data.includes('\r\n')) done(data.startsWith('+PONG'));
    });
    socket.once('connect', () => socket.write('PING\r\n'));
  });
}

/** A throwaway redis-server: free port, temp dir, no persistence. */
async function startRedisServer(): Promise<{ url: string; stop(): Promise<void> }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bidiweb-chat-redis-'));
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (c) => (log = (log + c).slice(-2000)));
  child.stderr!.on('data', (c) => (log = (log + c).slice(-2000)));
  const spawnError = new Promise<never>((_, reject) =>
    child.once('error', (err) => reject(new Error(`cannot start redis-server (is it on PATH? apt-get install redis-server): ${err.message}`))),
  );
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const ready = (async () => {
    const deadline = Date.now() + 10_000;
    while (!(await ping(port))) {
      if (child.exitCode !== null) throw new Error(`redis-server exited:\n${log}`);
      if (Date.now() > deadline) throw new Error(`redis-server did not answer within 10 s:\n${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  await Promise.race([ready, spawnError]);
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function main(): Promise<void> {
  const port = Number(process.env.PORT ?? 3000);
  const cleanups: Array<() => Promise<void>> = [];
  let stopping = false;
  const shutdown = async (code: number) => {
    if (stopping) return;
    stopping = true;
    console.log('\n[cluster] stopping…');
    for (const fn of cleanups.reverse()) await fn().catch(() => {});
    process.exit(code);
  };
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));

  try {
    let redisUrl = process.env.REDIS_URL;
    if (redisUrl) {
      console.log(`[cluster] using REDIS_URL (keys prefixed "chat:")`);
    } else {
      const redis = await startRedisServer();
      cleanups.push(() => redis.stop());
      redisUrl = redis.url;
      console.log(`[cluster] redis-server on ${redis.url} (throwaway data directory)`);
    }

    const bundle = bundleEntry(path.join(__dirname, 'instance.ts'));
    cleanups.push(async () => rmSync(path.dirname(bundle), { recursive: true, force: true }));
    const instances: ChatInstance[] = [];
    cleanups.push(async () => {
      await Promise.all(instances.map((i) => i.stop()));
    });
    for (let i = 1; i <= INSTANCES; i++) {
      // WS=1: pages opened with ?transport=websocket (or auto) chat over a socket (see README).
      const inst = await startChatInstance(bundle, { REDIS_URL: redisUrl, INSTANCE: `instance-${i}`, WS: process.env.WS ?? '1' });
      instances.push(inst);
      console.log(`[cluster] instance-${i} on 127.0.0.1:${inst.port} (pid ${inst.pid})`);
      inst.child.once('exit', (code, signal) => {
        if (!stopping) console.log(`[cluster] instance-${i} exited (${signal ?? code}); the others carry on`);
      });
    }

    let balancer: Balancer;
    try {
      balancer = await startBalancer(
        instances.map((i) => i.port),
        port,
        {
          host: process.env.HOST ?? '127.0.0.1',
          onChange: (index, up) => {
            if (!stopping) console.log(`[cluster] balancer: instance-${index + 1} ${up ? 'is back: in the rotation again' : 'refuses connections: skipped until it answers again'}`);
          },
        },
      );
    } catch (err) {
      throw new Error(`cannot listen on port ${port}: ${(err as Error).message} (set PORT)`);
    }
    cleanups.push(() => balancer.close());
    console.log(`[cluster] round-robin balancer on http://localhost:${balancer.port} → ${instances.length} instances. Ctrl-C stops everything.`);
  } catch (err) {
    console.error(`[cluster] ${(err as Error).message}`);
    await shutdown(1);
  }
}

if (require.main === module) void main();
