/**
 * The core's HTTP face. The runtime-neutral request/response pair the core
 * speaks (adapters build a BidiRequest from their framework's request and
 * write a BidiResponse back; `toFetchHandler` does the same for Web-standard
 * runtimes), and what stands between a request and the engine: routing,
 * CORS, and the mapping of errors to responses.
 */
import { JSON_MEDIA_TYPE, SID_HEADER as WIRE_SID_HEADER } from '../wire';
import { BidiError, toBidiError } from './errors';
import { SESSION_ID_PATTERN } from './util';

export interface HeaderReader {
  get(name: string): string | null;
}

export interface BidiRequest {
  method: string;
  /** The URL path, without query string (e.g. `/session/watch`). */
  path: string;
  query: URLSearchParams;
  headers: HeaderReader;
  /**
   * The body as text. Implementations stop reading past `limit` bytes and
   * throw `BidiError('BODY_TOO_LARGE')`.
   */
  text(limit: number): Promise<string>;
  /** Aborts when the client goes away; ends a waiting watch early. */
  signal?: AbortSignal;
  /** The framework's own request object, handed to hooks untouched. */
  raw?: unknown;
  /** The peer's address where the adapter knows it (Node: the socket's); the default key of the open rate limit. */
  remoteAddress?: string;
  /**
   * The adapter can write a {@link BidiResponse.stream} (frames as they come,
   * not buffered). Without it a client's `stream=1` watch is answered the
   * plain way, which every client understands.
   */
  canStream?: boolean;
}

export interface BidiResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /**
   * A streaming watch: after `body`, write each chunk `next()` resolves with,
   * as soon as it comes (no buffering), until it resolves `null`; then end the
   * response. If the response cannot be written any more (the client went
   * away), call `close()`. Only set when the request had `canStream`.
   */
  stream?: BidiStream;
}

export interface BidiStream {
  /** The next chunk of the body, or `null` when the body is complete. Never rejects. */
  next(): Promise<string | null>;
  /** Stop early and release everything (idempotent). */
  close(): void;
}

export interface CorsOptions {
  /** Allowed origins: exact strings (`https://app.example.com`), `'*'`, or a predicate. Default: none. */
  origins?: readonly string[] | '*' | ((origin: string) => boolean);
  /** Send `Access-Control-Allow-Credentials: true` (cookies). Not allowed with `'*'`. */
  credentials?: boolean;
  /** Extra request headers to allow (e.g. `Authorization`). */
  allowHeaders?: readonly string[];
  /** Preflight cache, seconds. Default 600. */
  maxAge?: number;
}

/** The session id header (src/wire), lower-cased as adapters hand header names to core. */
export const SID_HEADER = WIRE_SID_HEADER.toLowerCase();

/** `Content-Type` of every JSON response. */
export const JSON_CONTENT_TYPE = `${JSON_MEDIA_TYPE}; charset=utf-8`;

const JSON_HEADERS = { 'content-type': JSON_CONTENT_TYPE, 'cache-control': 'no-store' } as const;

export function jsonResponse(status: number, body: string, extra?: Record<string, string>): BidiResponse {
  return { status, headers: extra ? { ...JSON_HEADERS, ...extra } : { ...JSON_HEADERS }, body };
}

/** The answer of handlers that must answer a request outside the mount path (Fetch, Lambda): a 404 in bidiweb's JSON shape. */
export function outsideMountResponse(): BidiResponse {
  return jsonResponse(404, JSON.stringify({ error: { code: 'NOT_FOUND', message: 'no such path' } }));
}

const IPV4 = /^\d{1,3}(?:\.\d{1,3}){3}$/;

/**
 * The default of `allowedHosts`: names a DNS-rebinding page cannot put in
 * the Host header, because it is not the attacker's name: `localhost`,
 * `*.localhost` (browsers resolve these to loopback themselves) and IP
 * literals.
 */
function defaultHostAllowed(hostname: string): boolean {
  return hostname === 'localhost' || hostname.endsWith('.localhost') || hostname.startsWith('[') || IPV4.test(hostname);
}

/** The Host header's name part, lower-cased: `Example.com:8080` → `example.com`, `[::1]:3000` → `[::1]`. */
function hostName(host: string): string {
  const end = host.startsWith('[') ? host.indexOf(']') + 1 : host.lastIndexOf(':');
  return (end > 0 ? host.slice(0, end) : host).toLowerCase();
}

/** Decides cross-origin access. Closed unless origins are configured. */
export class CorsPolicy {
  private readonly allowHeaders: string;
  private readonly hostAllowed: (hostname: string) => boolean;

  /** `allowedHosts`: see BidiOptions.allowedHosts. */
  constructor(
    private readonly options: CorsOptions = {},
    allowedHosts?: readonly string[] | 'any',
  ) {
    if (options.origins === '*' && options.credentials) {
      throw new BidiError('INVALID_OPTIONS', "cors: credentials cannot be combined with origins '*'");
    }
    this.allowHeaders = ['content-type', SID_HEADER, ...(options.allowHeaders ?? [])].join(', ');
    if (allowedHosts === 'any') this.hostAllowed = () => true;
    else if (allowedHosts === undefined) this.hostAllowed = defaultHostAllowed;
    else {
      if (!Array.isArray(allowedHosts)) throw new BidiError('INVALID_OPTIONS', "allowedHosts must be an array of host names or 'any'");
      const exact = new Set<string>();
      const suffixes: string[] = [];
      for (const h of allowedHosts) {
        const name = String(h).toLowerCase();
        if (name.startsWith('.')) suffixes.push(name);
        else exact.add(name);
      }
      this.hostAllowed = (hostname) => exact.has(hostname) || suffixes.some((s) => hostname.endsWith(s) || hostname === s.slice(1));
    }
  }

  /**
   * Classifies a request. A Host the client chose is no proof of which server
   * it reached (DNS rebinding), so a Host counts only when it is allowed:
   * - no Origin: `crossOrigin: false` (same-origin or not from a browser),
   *   except a browser request (`Sec-Fetch-Site` present and not `none`, e.g.
   *   a same-origin GET, which carries no Origin) naming a Host that is not
   *   allowed: refused, `hostRefused`;
   * - an Origin that names the request's Host, an allowed Host: same-origin;
   * - an Origin that names the request's Host, a Host not allowed:
   *   cross-origin, allowed only for an origin in `cors.origins`, else refused
   *   with `hostRefused`;
   * - any other Origin (`null` and unparsable ones too): cross-origin,
   *   allowed only for an origin in `cors.origins`.
   */
  check(req: BidiRequest): { crossOrigin: boolean; allowed: boolean; origin: string | null; hostRefused?: boolean } {
    const origin = req.headers.get('origin');
    if (!origin) {
      const site = req.headers.get('sec-fetch-site');
      if (site !== null && site !== 'none') {
        const host = req.headers.get('host');
        if (host && !this.hostAllowed(hostName(host))) return { crossOrigin: true, allowed: false, origin, hostRefused: true };
      }
      return { crossOrigin: false, allowed: true, origin };
    }
    const host = req.headers.get('host');
    let originHost: string | null = null;
    try {
      originHost = new URL(origin).host;
    } catch {
      // "null" or garbage: treat as a foreign origin
    }
    if (host && originHost === host) {
      if (this.hostAllowed(hostName(host))) return { crossOrigin: false, allowed: true, origin };
      const allowed = this.allows(origin);
      return { crossOrigin: true, allowed, origin, hostRefused: !allowed };
    }
    return { crossOrigin: true, allowed: this.allows(origin), origin };
  }

  private allows(origin: string): boolean {
    const { origins } = this.options;
    if (!origins) return false;
    if (origins === '*') return true;
    if (typeof origins === 'function') return origins(origin);
    return origins.includes(origin);
  }

  /** Headers for an allowed cross-origin response. */
  headers(origin: string): Record<string, string> {
    const h: Record<string, string> = {
      'access-control-allow-origin': this.options.origins === '*' ? '*' : origin,
      vary: 'Origin',
    };
    if (this.options.credentials) h['access-control-allow-credentials'] = 'true';
    return h;
  }

  preflightHeaders(origin: string): Record<string, string> {
    return {
      ...this.headers(origin),
      'access-control-allow-methods': 'GET, POST, DELETE',
      'access-control-allow-headers': this.allowHeaders,
      'access-control-max-age': String(this.options.maxAge ?? 600),
    };
  }
}

type Route = 'root' | 'send' | 'watch' | 'unknown';

/** What the HTTP face hands each route to, and tells about failures. */
export interface Endpoints {
  /** POST on the mount path. */
  open(req: BidiRequest): Promise<BidiResponse>;
  /** POST `/send`: the client's messages. */
  receive(req: BidiRequest): Promise<BidiResponse>;
  /** GET `/watch`. */
  watch(req: BidiRequest): Promise<BidiResponse>;
  /** DELETE on the mount path. */
  clientClose(req: BidiRequest): Promise<BidiResponse>;
  /**
   * A request failed with a 5xx. `sid`: the session the request names, if
   * well-formed (not verified: a label of it reveals nothing).
   */
  failed(err: unknown, sid: string | undefined): void;
  /** A browser request named a Host not in allowedHosts (`host`: the header, cut short). */
  hostRefused(host: string): void;
}

/** Routes requests under the mount path to the endpoints, behind CORS, and maps errors to responses. */
export class HttpFace {
  constructor(
    /** Without a trailing slash ('' for '/'). */
    private readonly path: string,
    private readonly cors: CorsPolicy,
    private readonly endpoints: Endpoints,
    /** Response headers a cross-origin page may read when a response carries them. */
    private readonly exposable: readonly string[],
  ) {}

  /**
   * Serve one request. Resolves `null` when the path is not under this
   * server's mount path (adapters then pass the request on).
   */
  readonly handle = async (req: BidiRequest): Promise<BidiResponse | null> => {
    const route = this.route(req.path);
    if (route === null) return null;
    const cors = this.cors.check(req);
    const corsHeaders = cors.crossOrigin && cors.allowed ? this.cors.headers(cors.origin!) : undefined;
    try {
      this.refuseForbidden(req, cors);
      if (req.method === 'OPTIONS' && route !== 'unknown') {
        return { status: 204, headers: cors.crossOrigin ? this.cors.preflightHeaders(cors.origin!) : { allow: allowed(route) }, body: '' };
      }
      const res = await this.dispatch(route, req);
      if (corsHeaders) {
        Object.assign(res.headers, corsHeaders);
        // A cross-origin page may read only the response headers it is told it may.
        const exposed = this.exposable.filter((name) => name in res.headers);
        if (exposed.length > 0) res.headers['access-control-expose-headers'] = exposed.join(', ');
      }
      return res;
    } catch (err) {
      return this.failure(err, req, corsHeaders);
    }
  };

  /**
   * The CORS and allowedHosts decision alone, for a carrier that checks once when it is set up (a
   * WebSocket's upgrade, see src/ws): null when admitted, else the 403 CORS_FORBIDDEN answer an
   * HTTP request with these headers would get.
   */
  readonly admitConnection = (req: BidiRequest): BidiResponse | null => {
    try {
      this.refuseForbidden(req, this.cors.check(req));
      return null;
    } catch (err) {
      return this.failure(err, req, undefined);
    }
  };

  /** Throws CORS_FORBIDDEN for a cross-origin request the policy (origins, allowedHosts) refuses. */
  private refuseForbidden(req: BidiRequest, cors: ReturnType<CorsPolicy['check']>): void {
    if (!cors.crossOrigin || cors.allowed) return;
    if (cors.hostRefused) {
      // Most likely the app's own page on a host it did not list: say so to the operator, not only to the page.
      this.endpoints.hostRefused((req.headers.get('host') ?? '').slice(0, 100));
      throw new BidiError('CORS_FORBIDDEN', 'this Host is not in allowedHosts');
    }
    throw new BidiError('CORS_FORBIDDEN', 'cross-origin requests from this origin are not allowed');
  }

  /**
   * Serve a send or a watch that came over a carrier whose every request passed the CORS and Host
   * check already, once, when it was set up (a WebSocket's upgrade, see src/ws): the same endpoint,
   * limits and error responses as through {@link handle}, without routing or a CORS check per request.
   */
  readonly serveAdmitted = async (route: 'send' | 'watch', req: BidiRequest): Promise<BidiResponse> => {
    try {
      return await (route === 'send' ? this.endpoints.receive(req) : this.endpoints.watch(req));
    } catch (err) {
      return this.failure(err, req, undefined);
    }
  };

  private failure(err: unknown, req: BidiRequest, corsHeaders: Record<string, string> | undefined): BidiResponse {
    const e = toBidiError(err);
    if (e.status >= 500) {
      const sid = req.headers.get(SID_HEADER);
      this.endpoints.failed(err, sid && SESSION_ID_PATTERN.test(sid) ? sid : undefined);
    }
    return errorResponse(e, corsHeaders);
  }

  private route(path: string): Route | null {
    if (path === this.path || path === this.path + '/') return 'root';
    if (!path.startsWith(this.path + '/')) return null;
    const rest = path.slice(this.path.length + 1);
    if (rest === 'send') return 'send';
    if (rest === 'watch') return 'watch';
    return 'unknown';
  }

  private async dispatch(route: Route, req: BidiRequest): Promise<BidiResponse> {
    const m = req.method;
    switch (route) {
      case 'root':
        if (m === 'POST') return this.endpoints.open(req);
        if (m === 'DELETE') return this.endpoints.clientClose(req);
        break;
      case 'send':
        if (m === 'POST') return this.endpoints.receive(req);
        break;
      case 'watch':
        if (m === 'GET') return this.endpoints.watch(req);
        break;
      case 'unknown':
        throw new BidiError('NOT_FOUND', `no such path: ${req.path}`);
    }
    throw new BidiError('METHOD_NOT_ALLOWED', `${m} is not allowed here; use ${allowed(route)}`);
  }
}

function allowed(route: Route): string {
  return route === 'root' ? 'POST, DELETE' : route === 'send' ? 'POST' : route === 'watch' ? 'GET' : '';
}

/**
 * The response for an error. A 5xx tells the client nothing of its cause:
 * it is `INTERNAL` (retry), except `STORE_UNAVAILABLE`, which clients retry
 * after its Retry-After.
 */
function errorResponse(e: BidiError, extraHeaders?: Record<string, string>): BidiResponse {
  const headers: Record<string, string> = { ...extraHeaders };
  if (e.retryAfter !== undefined) headers['retry-after'] = String(e.retryAfter);
  if (e.code === 'STORE_UNAVAILABLE') {
    return jsonResponse(503, JSON.stringify({ error: { code: e.code, message: 'the session store is unavailable; retry' } }), headers);
  }
  const status = e.status >= 500 ? 500 : e.status;
  const message = e.status >= 500 && e.code !== 'INTERNAL' ? 'internal error' : e.message;
  return jsonResponse(status, JSON.stringify({ error: { code: status === 500 ? 'INTERNAL' : e.code, message } }), headers);
}
