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
  nodes: Array<{ host: string; port: number }>;
  stop(): Promise<void>;
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
 * Starts an n-master Redis Cluster (no replicas) on free ports and waits
 * until every node reports cluster_state:ok.
 */
export async function startRedisCluster(masters = 3): Promise<RedisClusterProcess> {
  requireRedisServer();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bidiweb-redis-cluster-'));
  const children: ChildProcess[] = [];
  const nodes: Array<{ host: string; port: number }> = [];
  const stop = async () => {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map(exited));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < masters; i++) {
      const port = await freePort(true);
      const nodeDir = path.join(dir, String(port));
      rmSync(nodeDir, { recursive: true, force: true });
      mkdirSync(nodeDir);
      children.push(
        await launch(port, nodeDir, [
          '--save',
          '',
          '--appendonly',
          'no',
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          path.join(nodeDir, 'nodes.conf'),
          '--cluster-node-timeout',
          '5000',
        ]),
      );
      nodes.push({ host: '127.0.0.1', port });
    }
    await cli(nodes[0]!.port, '--cluster', 'create', ...nodes.map((n) => `${n.host}:${n.port}`), '--cluster-replicas', '0', '--cluster-yes');
    const deadline = Date.now() + 20_000;
    for (;;) {
      const infos = await Promise.all(nodes.map((n) => cli(n.port, 'cluster', 'info')));
      if (infos.every((info) => info.includes('cluster_state:ok'))) break;
      if (Date.now() > deadline) throw new Error(`cluster did not reach cluster_state:ok:\n${infos.join('\n')}`);
      await sleep(100);
    }
    return { nodes, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
