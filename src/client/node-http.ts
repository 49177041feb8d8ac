/**
 * The client's default transport in Node: a {@link FetchLike} over
 * `node:http` / `node:https` with keep-alive agents. Node's global `fetch`
 * (undici) costs the client 2–3× the CPU per request of `node:http`
 * (docs/BENCHMARKS.md, the floor rows; 94 vs 319 µs per plain POST on
 * loopback, Node 20.20). undici's own `request` API is cheaper still (63 µs)
 * but Node does not expose the undici it bundles, and the `undici` package
 * would be this zero-dependency client's first dependency.
 *
 * The modules are taken with `process.getBuiltinModule` (Node ≥ 20.16, 22.3):
 * no `import` or `require` a browser bundler would try to resolve, so this
 * file is inert in a browser build (and scripts/build-client.mjs leaves it
 * out of dist/browser altogether). Where it is unavailable the client keeps
 * the global `fetch`.
 */
import { onAbort } from './abort-link';
import type { FetchBodyReader, FetchInitLike, FetchLike, FetchResponseLike } from './types';

// The few shapes of node:http used here, written out: the client imports nothing, not even types.
interface NodeResponseStream {
  statusCode?: number;
  headers: Record<string, string | string[] | undefined>;
  on(event: string, listener: (...args: any[]) => void): unknown;
  destroy(): unknown;
}
interface NodeRequest {
  on(event: string, listener: (...args: any[]) => void): unknown;
  end(body?: string): unknown;
  destroy(error?: Error): unknown;
}
/** Loose on purpose, so that node:http's own (wider) options type fits. */
interface NodeRequestOptions {
  protocol?: string;
  hostname?: string;
  port?: number;
  path?: string;
  auth?: string;
  method?: string;
  headers?: Record<string, string | number>;
  // node:http's own type (an Agent, or a boolean): `unknown` would not be assignable to it.
  agent?: any;
}

/** What the transport takes from `node:http` and `node:https`. */
export interface HttpModule {
  request(options: NodeRequestOptions, callback: (res: NodeResponseStream) => void): NodeRequest;
  Agent: new (options: { keepAlive: boolean }) => object;
}

interface NodeProcess {
  versions?: { node?: string };
  getBuiltinModule?: (id: string) => unknown;
}

/** True in Node (or a runtime that answers as Node) that is not a browser-like environment (jsdom, Electron renderer). */
export function isNode(): boolean {
  const g = globalThis as { process?: NodeProcess; window?: unknown; document?: unknown };
  return typeof g.process?.versions?.node === 'string' && g.window === undefined && g.document === undefined;
}

let cached: FetchLike | null | undefined;

/**
 * The node:http fetch, or `undefined` outside Node (or on a Node without
 * `process.getBuiltinModule`). Built once per process: every session shares
 * its agents, as a browser shares its connections.
 */
export function nodeDefaultFetch(): FetchLike | undefined {
  if (cached !== undefined) return cached ?? undefined;
  cached = null;
  if (!isNode()) return undefined;
  const get = (globalThis as { process?: NodeProcess }).process?.getBuiltinModule;
  if (typeof get !== 'function') return undefined;
  const http = get('node:http') as HttpModule | undefined;
  const https = get('node:https') as HttpModule | undefined;
  if (!http || !https) return undefined;
  cached = createNodeFetch(http, https);
  return cached;
}

/**
 * The parts of a URL node:http takes, as `url.urlToHttpOptions` makes them. Parsed once per URL:
 * a session's sends all go to one URL (parsing it per request was 2–3 % of the client's CPU).
 */
type Target = Pick<NodeRequestOptions, 'protocol' | 'hostname' | 'port' | 'path' | 'auth'>;
const MAX_TARGETS = 64;

function toTarget(url: string): Target {
  const u = new URL(url);
  const target: Target = {
    protocol: u.protocol,
    // node:http wants an IPv6 address without its brackets.
    hostname: u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname,
    path: u.pathname + u.search,
  };
  if (u.port !== '') target.port = Number(u.port);
  if (u.username || u.password) target.auth = `${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`;
  return target;
}

/** What node:http's `signal` option fails a request with: the transport tells an abort by its own signal. */
function abortError(): Error {
  return Object.assign(new Error('The operation was aborted'), { name: 'AbortError', code: 'ABORT_ERR' });
}

/** The fetches made by {@link createNodeFetch}. */
const nodeFetches = new WeakSet<FetchLike>();

/** Whether `fetch` keeps no listener on a request's signal once the request is over (so the signal can serve the next one). */
export function leavesSignalsClean(fetch: FetchLike): boolean {
  return nodeFetches.has(fetch);
}

/** A {@link FetchLike} over the given http and https modules, each with its own keep-alive agent. */
export function createNodeFetch(http: HttpModule, https: HttpModule): FetchLike {
  // Idle sockets of a keep-alive agent are unref'd: they never keep the process alive.
  const agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
  const targets = new Map<string, Target>();
  const fetch: FetchLike = (url: string, init: FetchInitLike): Promise<FetchResponseLike> =>
    new Promise<FetchResponseLike>((resolve, reject) => {
      const secure = url.startsWith('https:');
      if (!secure && !url.startsWith('http:')) {
        const err = new TypeError(`bidiweb: the Node transport needs an http: or https: URL, got ${url.slice(0, 40)}`);
        reject(Object.assign(err, { code: 'ERR_INVALID_URL_SCHEME' })); // a programmer error: not retried
        return;
      }
      const signal = init.signal as AbortSignal | undefined;
      if (signal?.aborted) {
        reject(abortError());
        return;
      }
      let target = targets.get(url);
      try {
        if (target === undefined) {
          target = toTarget(url);
          // Watch URLs differ by their ack: start over rather than grow.
          if (targets.size >= MAX_TARGETS) targets.clear();
          targets.set(url, target);
        }
      } catch (err) {
        reject(err);
        return;
      }
      const headers: Record<string, string | number> = { ...init.headers };
      // A string body: its byte length, so the request is not chunked. (keepalive and cache are browser notions.)
      if (init.body !== undefined) headers['Content-Length'] = Buffer.byteLength(init.body);
      const mod = secure ? https : http;
      let req: NodeRequest;
      // The signal is linked here, not given to node:http (its `signal` option adds and removes
      // listeners per request; see ./abort-link), and unlinked once the response is read or failed.
      let unlink: (() => void) | undefined;
      try {
        req = mod.request({ ...target, method: init.method, headers, agent: secure ? agents.https : agents.http }, (res) => {
          if (unlink) {
            const done = unlink;
            res.on('end', done);
            res.on('close', done);
          }
          resolve(new NodeResponse(res));
        });
      } catch (err) {
        reject(err);
        return;
      }
      if (signal) {
        const r = req;
        unlink = onAbort(signal, () => r.destroy(abortError()));
        req.on('close', unlink);
      }
      // Before the response: the request failed (or was aborted). After: the body reader sees it on `res`.
      req.on('error', reject);
      req.end(init.body);
    });
  nodeFetches.add(fetch);
  return fetch;
}

/** A node:http response as the client reads it: whole (`text()`) or chunk by chunk (`body.getReader()`). */
class NodeResponse implements FetchResponseLike {
  readonly status: number;
  readonly headers: { get(name: string): string | null };
  private readonly chunks: Buffer[] = [];
  private ended = false;
  private failed?: Error;
  private waiter?: () => void;

  constructor(private readonly res: NodeResponseStream) {
    this.status = res.statusCode ?? 0;
    const h = res.headers;
    this.headers = {
      get(name: string): string | null {
        const v = h[name.toLowerCase()];
        return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
      },
    };
    res.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.poke();
    });
    res.on('end', () => {
      this.ended = true;
      this.poke();
    });
    res.on('error', (err: Error) => this.fail(err));
    // Closed before its end (a reset connection, an abort): whoever waits for more must hear of it.
    res.on('close', () => {
      if (!this.ended) this.fail(new Error('the connection closed before the response ended'));
    });
  }

  private fail(err: Error): void {
    if (!this.failed) this.failed = err;
    this.poke();
  }

  private poke(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private more(): Promise<void> {
    return new Promise<void>((r) => (this.waiter = r));
  }

  async text(): Promise<string> {
    while (!this.ended && !this.failed) await this.more();
    if (!this.ended && this.failed) throw this.failed;
    const { chunks } = this;
    return chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8');
  }

  get body(): { getReader(): FetchBodyReader } {
    return {
      getReader: () => ({
        read: async () => {
          while (this.chunks.length === 0 && !this.ended && !this.failed) await this.more();
          if (this.chunks.length > 0) {
            const value = this.chunks.length === 1 ? this.chunks.pop()! : Buffer.concat(this.chunks.splice(0));
            return { done: false, value };
          }
          if (this.ended) return { done: true };
          throw this.failed;
        },
        cancel: async () => {
          this.res.destroy();
        },
      }),
    };
  }
}
