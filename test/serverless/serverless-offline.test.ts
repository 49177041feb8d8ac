/**
 * bidiweb/aws-lambda end to end through serverless-offline 13 (Serverless
 * Framework v3, the Lambda + API Gateway HTTP API emulation users develop
 * with): samples/serverless/lambda/serverless.yml, its handler a bundle of
 * samples/serverless/runtimes/lambda.ts, started as a child process on free
 * ports with dummy AWS credentials and a RedisStore on a test-started
 * redis-server. The shared scenario (./scenario.ts) runs against it: two
 * sessions chat both ways, each HTTP request one Lambda invocation (counted
 * from serverless-offline's own "(λ: session) RequestId: …" lines), and the
 * scheduled `sweep` function invoked once through the emulated Lambda
 * Invoke API (serverless-offline would also run its schedule; the test turns
 * that off so that only its own sweep runs).
 *
 * serverless-offline runs each function instance in a worker thread and
 * keeps idle ones warm (module state, the Redis connection, persists); a
 * request that finds no idle instance gets a new one, as on Lambda.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { bundleRuntimeEntry } from '../../samples/serverless/runtimes/bundle';
import { waitFor } from '../helpers/client-session';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { chatScenario } from './scenario';

const IDLE_TIMEOUT = 3000;
const ROOT = path.join(__dirname, '..', '..');
const SERVICE_DIR = path.join(ROOT, 'samples', 'serverless', 'lambda');
const SERVERLESS_BIN = path.join(ROOT, 'node_modules', 'serverless', 'bin', 'serverless.js');

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe('AWS Lambda through serverless-offline (HTTP API, RedisStore)', () => {
  let redis: RedisProcess;
  let child: ChildProcess | undefined;
  let out = '';
  let httpPort: number;
  let lambdaPort: number;

  beforeAll(async () => {
    redis = await startRedis();
    await bundleRuntimeEntry(path.join(ROOT, 'samples', 'serverless', 'runtimes', 'lambda.ts'), { outDir: path.join(SERVICE_DIR, '.build') });
    [httpPort, lambdaPort] = [await freePort(), await freePort()];
    // Node ≥ 20.19 can require() ES modules, and then Serverless v3 gets serverless-offline's frozen
    // module namespace instead of its class ("Cannot redefine property: _serverlessExternalPluginName").
    const nodeArgs = process.allowedNodeEnvironmentFlags.has('--experimental-require-module') ? ['--no-experimental-require-module'] : [];
    child = spawn(
      process.execPath,
      [...nodeArgs, SERVERLESS_BIN, 'offline', 'start', '--host', '127.0.0.1', '--httpPort', String(httpPort), '--lambdaPort', String(lambdaPort), '--noPrependStageInUrl', '--noSponsor'],
      {
        cwd: SERVICE_DIR,
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          // No AWS account: serverless-offline only needs the SDK to find some credentials.
          AWS_ACCESS_KEY_ID: 'offline',
          AWS_SECRET_ACCESS_KEY: 'offline',
          AWS_REGION: 'eu-west-1',
          // Nothing leaves the machine: no telemetry, no notifications fetched with it.
          SLS_TELEMETRY_DISABLED: '1',
          SLS_NOTIFICATIONS_MODE: 'off',
          CI: '1',
          NO_COLOR: '1',
          SWEEP_SCHEDULE: 'false',
          REDIS_URL: redis.url,
          PREFIX: 'offline:',
          WAIT: '1000',
          MAX_WAIT: '2000',
          IDLE_TIMEOUT: String(IDLE_TIMEOUT),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<never>((_, reject) => child!.once('exit', (code) => reject(new Error(`serverless offline exited (${code}):\n${out}`))));
    await Promise.race([exited, waitFor('serverless offline to be ready', () => /Server ready/.test(out), 30_000)]).catch((err: Error) => {
      throw new Error(`${err.message}\n${out}`);
    });
  }, 45_000);

  afterAll(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise<void>((r) => child!.once('exit', () => r()));
      child.kill('SIGKILL'); // its worker threads go with it
      await gone;
    }
    await redis?.stop();
    rmSync(path.join(SERVICE_DIR, '.build'), { recursive: true, force: true });
  });

  test('two sessions chat both ways, one invocation per request, the sweep function invoked once', async () => {
    const invocations = () => out.match(/\(λ: session\) RequestId:/g)?.length ?? 0;
    await chatScenario({
      base: `http://127.0.0.1:${httpPort}`,
      runtime: 'lambda',
      idleTimeout: IDLE_TIMEOUT,
      streams: false, // API Gateway buffers the response
      // What the schedule (EventBridge) does, through the emulated Lambda Invoke API.
      sweep: async () => {
        const res = await fetch(`http://127.0.0.1:${lambdaPort}/2015-03-31/functions/bidiweb-chat-dev-sweep/invocations`, { method: 'POST', body: '{}' });
        expect(res.status).toBe(200);
        return res.json();
      },
      // serverless-offline logs each invocation once it has returned (a server of its own: bidiLambda builds one per invocation).
      stats: async () => {
        await new Promise((r) => setTimeout(r, 200));
        return { runtime: 'lambda', servers: invocations() };
      },
    });
    expect(out).toMatch(/\(λ: sweep\) RequestId:/);
    expect(out).not.toMatch(/error/i);
  }, 40_000);
});
