/**
 * Shared by the benchmark processes: a tiny request/reply protocol over the
 * Node IPC channel, a clock shared by every process of the machine, and
 * percentiles.
 */
import { fork, type ChildProcess } from 'node:child_process';

/** Milliseconds on CLOCK_MONOTONIC: the same clock in every process of the machine, sub-millisecond. */
export function now(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Rejects after `ms` with `what` in the message. Every wait in the bench is bounded by one of these. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]);
}

export interface Percentiles {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function percentiles(values: number[]): Percentiles {
  if (values.length === 0) return { n: 0, p50: NaN, p90: NaN, p99: NaN, max: NaN, mean: NaN };
  const s = Float64Array.from(values).sort();
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
  let sum = 0;
  for (const v of s) sum += v;
  return { n: s.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: s[s.length - 1]!, mean: sum / s.length };
}

/** The median; of an even count, the mean of the middle two (with 2 runs: their mean, not the lower one). */
export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = Float64Array.from(values).sort();
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

// --- IPC request / reply -------------------------------------------------------------

export type Handlers = Record<string, (args: any) => unknown>;

interface Request {
  rpc: number;
  cmd: string;
  args: unknown;
}

interface Reply {
  rpc: number;
  ok: boolean;
  value?: unknown;
  error?: string;
}

/** In a child process: answer the parent's calls. */
export function serve(handlers: Handlers, channel: { on(e: 'message', f: (m: any) => void): void; send?: (m: any) => void } = process): void {
  channel.on('message', (m: Request) => {
    if (!m || typeof m.rpc !== 'number' || typeof m.cmd !== 'string') return;
    const reply = (r: Reply) => channel.send?.(r);
    const handler = handlers[m.cmd];
    if (!handler) return reply({ rpc: m.rpc, ok: false, error: `unknown command ${m.cmd}` });
    Promise.resolve()
      .then(() => handler(m.args))
      .then(
        (value) => reply({ rpc: m.rpc, ok: true, value }),
        (err: unknown) => reply({ rpc: m.rpc, ok: false, error: err instanceof Error ? err.stack ?? err.message : String(err) }),
      );
  });
}

/** A forked bench process and its command channel. */
export class Proc {
  private next = 1;
  private readonly waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private readonly exited: Promise<void>;
  /** The first message the child sent that is not a reply (its "ready" report). */
  readonly ready: Promise<any>;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    this.ready = new Promise((resolve, reject) => {
      child.once('exit', (code, signal) => {
        reject(new Error(`${name} exited (${code ?? signal}) before it was ready`));
        for (const w of this.waiting.values()) w.reject(new Error(`${name} exited (${code ?? signal})`));
        this.waiting.clear();
      });
      child.on('message', (m: any) => {
        if (m && typeof m.rpc === 'number') {
          const w = this.waiting.get(m.rpc);
          if (!w) return;
          this.waiting.delete(m.rpc);
          if (m.ok) w.resolve(m.value);
          else w.reject(new Error(`${name}: ${m.error}`));
        } else if (m && m.ready) resolve(m);
      });
    });
    this.ready.catch(() => {});
  }

  static fork(name: string, file: string, args: string[], env: Record<string, string> = {}, execArgv: string[] = []): Proc {
    const child = fork(file, args, {
      env: { ...process.env, ...env },
      execArgv: ['--expose-gc', ...execArgv],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    return new Proc(name, child);
  }

  call<T = any>(cmd: string, args: unknown = {}, timeoutMs = 120_000): Promise<T> {
    const rpc = this.next++;
    const p = new Promise<T>((resolve, reject) => {
      this.waiting.set(rpc, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ rpc, cmd, args } satisfies Request);
    });
    return within(p, timeoutMs, `${this.name} ${cmd}`).finally(() => this.waiting.delete(rpc));
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 3_000);
    await this.exited;
    clearTimeout(t);
  }
}

/** In a bench child: after gc, the process's memory, bytes. */
export function memory(): { heapUsed: number; rss: number; external: number; arrayBuffers: number } {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) for (let i = 0; i < 3; i++) gc();
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, rss: m.rss, external: m.external, arrayBuffers: m.arrayBuffers };
}

/** CPU time (user + system) this process used so far, ms. */
export function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/**
 * The system (kernel) part of cpuMs: socket writes and reads on loopback. A V8 CPU profile cannot tell
 * it apart: it also counts a thread as busy in `writev` while the scheduler has it waiting there.
 */
export function cpuKernelMs(): number {
  return process.cpuUsage().system / 1000;
}
