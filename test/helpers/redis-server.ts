/**
 * Real `redis-server` processes for tests: each on a free port, with its data
 * directory in a fresh temp folder, never the machine's own Redis. Nothing is
 * flushed that a test did not create: every server here is started and
 * thrown away by the test that uses it.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface RedisProcess {
  port: number;
  url: string;
  /** The data directory (RDB / AOF files). */
  dir: string;
  /** Shut down (SIGTERM, as an operator would) and delete the data directory. */
  stop(): Promise<void>;
  /** Shut down gracefully and start again on the same port and data directory. */
  restart(): Promise<void>;
  /** Crash: SIGKILL, no chance to write anything. `restart()` brings it back. */
  kill(): Promise<void>;
}

export interface RedisOptions {
  /** Turn on the append-only file (fsync always); otherwise no persistence at all. */
  appendonly?: boolean;
  /** Extra `redis-server` arguments, e.g. `['--maxmemory', '10mb']`. */
  args?: string[];
}

export interface RedisClusterProcess {
  /** Every node, masters and replicas (ioredis' startup nodes). */
  nodes: Array<{ host: string; port: number }>;
  /** Each node's process, to crash and bring back (same port, same nodes.conf: it rejoins, as a replica if it lost its slots). */
  servers: ClusterServer[];
  /** `redis-cli -p port args…` against one node; resolves with stdout. */
  cli(port: number, ...args: string[]): Promise<string>;
  /**
   * Resolves once every running node reports cluster_state:ok, every slot is
   * served by a reachable master and every replica's link to its master is up.
   */
  settled(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface ClusterServer {
  port: number;
  /** True while its process runs. */
  running(): boolean;
  /** SIGKILL: no chance to hand anything over. */
  kill(): Promise<void>;
  /** Start it again after kill(). */
  restart(): Promise<void>;
}

export interface RedisClusterOptions {
  /** Replicas per master. Default 0. */
  replicas?: number;
  /** `cluster-node-timeout`, ms: how long a silent master is given before its replica takes over. Default 5000. */
  nodeTimeoutMs?: number;
}

let checked = false;
function requireRedisServer(): void {
  if (checked) return;
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(
      'The Redis tests need `redis-server` (and `redis-cli`) on PATH, version 7 or later. ' +
        'Install it, e.g. `apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS).',
    );
  }
  checked = true;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A free port (and, for Cluster nodes, a free bus port at port + 10000). */
async function freePort(withBus = false): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = withBus ? 20000 + Math.floor(Math.random() * 20000) : await ephemeral();
    if (port > 55535 && withBus) continue;
    if (!(await portFree(port))) continue;
    if (withBus && !(await portFree(port + 10000))) continue;
    return port;
  }
  throw new Error('no free port found for redis-server');
}

function ephemeral(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Sends one inline command over a raw socket and returns the first reply line (no client library needed). */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let data = '';
    const finish = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => finish(false));
    socket.once('error', () => finish(false));
    socket.on('data', (chunk) => {
      data += chunk.toString();
      if (data.includes('\r\n')) finish(data.startsWith('+PONG'));
    });
    socket.once('connect', () => socket.write('PING\r\n'));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function cli(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { encoding: 'utf8' }, (err, stdout, stderr) =>
      err ? reject(new Error(`redis-cli ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout),
    );
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function launch(port: number, dir: string, args: string[]): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--daemonize', 'no', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (c) => (log = (log + c.toString()).slice(-4000)));
  child.stderr!.on('data', (c) => (log = (log + c.toString()).slice(-4000)));
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server on port ${port} exited (${child.exitCode}):\n${log}`);
    if (await ping(port)) return child;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server on port ${port} did not answer PING within 10 s:\n${log}`);
    }
    await sleep(20);
  }
}

/** Starts a standalone redis-server on a free port. */
export async function startRedis(options: RedisOptions = {}): Promise<RedisProcess> {
  requireRedisServer();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bidiweb-redis-'));
  const port = await freePort();
  const args = [
    '--save',
    '',
    ...(options.appendonly ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']),
    ...(options.args ?? []),
  ];
  let child: ChildProcess | null = await launch(port, dir, args);
  const down = async (signal: NodeJS.Signals) => {
    if (!child) return;
    const c = child;
    child = null;
    c.kill(signal);
    await exited(c);
  };
  return {
    port,
    dir,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      await down('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
    async restart() {
      await down('SIGTERM');
      child = await launch(port, dir, args);
    },
    async kill() {
      await down('SIGKILL');
    },
  };
}

/**
 * Starts an n-master Redis Cluster (with `replicas` replicas per master) on
 * free ports and waits until it is settled (see `settled`). No persistence:
 * a restarted node comes back empty and resyncs from its master.
 */
export async function startRedisCluster(masters = 3, options: RedisClusterOptions = {}): Promise<RedisClusterProcess> {
  requireRedisServer();
  const replicas = options.replicas ?? 0;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bidiweb-redis-cluster-'));
  const children = new Map<number, ChildProcess>();
  const nodes: Array<{ host: string; port: number }> = [];
  const servers: ClusterServer[] = [];
  const stop = async () => {
    const all = [...children.values()];
    children.clear();
    for (const c of all) c.kill('SIGTERM');
    await Promise.all(all.map(exited));
    rmSync(dir, { recursive: true, force: true });
  };
  const argsOf = (nodeDir: string) => [
    '--save',
    '',
    '--appendonly',
    'no',
    '--cluster-enabled',
    'yes',
    '--cluster-config-file',
    path.join(nodeDir, 'nodes.conf'),
    '--cluster-node-timeout',
    String(options.nodeTimeoutMs ?? 5000),
    // A replica (a new one, or a restarted node) syncs at once rather than after the default 5 s.
    '--repl-diskless-sync-delay',
    '0',
  ];
  const settled = async (timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const up = servers.filter((s) => s.running());
      const infos = await Promise.all(up.map((s) => cli(s.port, 'cluster', 'info').catch((e: Error) => e.message)));
      const repl = await Promise.all(up.map((s) => cli(s.port, 'info', 'replication').catch((e: Error) => e.message)));
      const slots = await cli(up[0]!.port, 'cluster', 'nodes').catch(() => '');
      const live = new Set(up.map((s) => `127.0.0.1:${s.port}`));
      // Every master that holds slots is one of ours, running, and not marked failed.
      const servedByLive = slots
        .split('\n')
        .map((line) => line.trim().split(' '))
        .filter((f) => f.length > 8 && f[2]!.includes('master'))
        .every((f) => live.has(f[1]!.split('@')[0]!) && !f[2]!.includes('fail'));
      const ok =
        infos.every((i) => i.includes('cluster_state:ok')) &&
        repl.every((r) => !r.includes('role:slave') || r.includes('master_link_status:up')) &&
        servedByLive;
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`cluster did not settle:\n${infos.join('\n')}\n${slots}`);
      await sleep(100);
    }
  };
  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      const port = await freePort(true);
      const nodeDir = path.join(dir, String(port));
      rmSync(nodeDir, { recursive: true, force: true });
      mkdirSync(nodeDir);
      children.set(port, await launch(port, nodeDir, argsOf(nodeDir)));
      nodes.push({ host: '127.0.0.1', port });
      servers.push({
        port,
        running: () => children.has(port),
        async kill() {
          const c = children.get(port);
          if (!c) return;
          children.delete(port);
          c.kill('SIGKILL');
          await exited(c);
        },
        async restart() {
          if (children.has(port)) return;
          children.set(port, await launch(port, nodeDir, argsOf(nodeDir)));
        },
      });
    }
    await cli(nodes[0]!.port, '--cluster', 'create', ...nodes.map((n) => `${n.host}:${n.port}`), '--cluster-replicas', String(replicas), '--cluster-yes');
    await settled();
    return { nodes, servers, cli, settled, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
