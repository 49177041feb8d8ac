/**
 * `bidiweb/aws-lambda`: bidiweb as an AWS Lambda function behind API Gateway
 * (HTTP API, payload format 2.0; REST API and ALB, format 1.0) or a Lambda
 * Function URL (format 2.0).
 *
 * ```ts
 * import { Redis } from 'ioredis';
 * import { bidiLambda } from 'bidiweb/aws-lambda';
 * import { RedisStore } from 'bidiweb/redis';
 *
 * const store = new RedisStore({ redis: new Redis(process.env.REDIS_URL!) }); // module scope: reused while warm
 * const bidi = bidiLambda({ store, onMessage: (session, msg) => void session.send({ echo: msg }) });
 * export const handler = bidi.handler;                  // the HTTP function
 * export const sweep = () => bidi.sweep();              // an EventBridge schedule, every minute
 * ```
 *
 * Responses are buffered (the platform sends them when the function
 * returns), so watches are answered the plain way, never streamed. A watch
 * must end before the integration's time limit: `maxWait` defaults to
 * `timeLimitMs - marginMs` and a larger one is refused; each watch also
 * answers before the function's own remaining time runs out. See
 * docs/SERVERLESS.md.
 */
import { BidiError } from '../core/errors';
import type { BidiRequest, BidiResponse } from '../core/http';
import { outsideMountResponse } from '../core/http';
import { MAX_WAIT_CAP_MS } from '../wire';
import type { BidiOptions } from '../core/server';
import { createBidiServer, type BidiServer } from '../core/server';
import { useNodeDebug } from '../node/debug';

useNodeDebug();

/** API Gateway HTTP API (payload format 2.0) and Lambda Function URL events: the fields read here. */
export interface LambdaEventV2 {
  version: '2.0';
  rawPath: string;
  rawQueryString?: string;
  /** The `Cookie` header, split: format 2.0 takes cookies out of `headers`. */
  cookies?: string[];
  /** Lower-case names; repeated headers joined with commas. */
  headers?: Record<string, string | undefined>;
  body?: string;
  isBase64Encoded?: boolean;
  requestContext: { http: { method: string } };
}

/** API Gateway REST API and ALB events (payload format 1.0): the fields read here. */
export interface LambdaEventV1 {
  version?: '1.0';
  httpMethod: string;
  path: string;
  headers?: Record<string, string | undefined> | null;
  multiValueHeaders?: Record<string, string[] | undefined> | null;
  queryStringParameters?: Record<string, string | undefined> | null;
  multiValueQueryStringParameters?: Record<string, string[] | undefined> | null;
  body?: string | null;
  isBase64Encoded?: boolean;
}

export type LambdaHttpEvent = LambdaEventV2 | LambdaEventV1;

/** The Lambda context: only the remaining time is used. */
export interface LambdaContextLike {
  getRemainingTimeInMillis?(): number;
}

export interface LambdaResultV2 {
  statusCode: number;
  headers: Record<string, string>;
  /** `Set-Cookie` values (format 2.0 has no multi-value headers). */
  cookies?: string[];
  body: string;
  isBase64Encoded: false;
}

export interface LambdaResultV1 {
  statusCode: number;
  headers: Record<string, string>;
  multiValueHeaders: Record<string, string[]>;
  body: string;
  isBase64Encoded: false;
}

export type LambdaResult = LambdaResultV2 | LambdaResultV1;

export interface LambdaAdapterOptions {
  /**
   * The time limit of a request, ms: API Gateway HTTP API 30 000 (its
   * maximum), REST API 29 000 (its default); a Function URL is limited by
   * the function timeout only (up to 15 min). Default 29 000.
   */
  timeLimitMs?: number;
  /** Kept free between the longest watch and the time limit (store round trips, cold start). Default 4 000. */
  marginMs?: number;
  /**
   * Build a new bidiweb server for every invocation (default `true`): the
   * server keeps nothing between requests, so this only proves it;
   * `false` builds one per warm instance.
   */
  freshServer?: boolean;
}

export interface BidiLambda<User, State extends object, In = unknown, Out = unknown> {
  /** The Lambda handler: `export const handler = bidi.handler`. */
  handler(event: LambdaHttpEvent, context?: LambdaContextLike): Promise<LambdaResult>;
  /** Expire idle sessions (runs their `onClose`): call it from a scheduled function. Resolves with how many. */
  sweep(): Promise<number>;
  /** A server with these options (e.g. to push with `server().hub` from another function). */
  server(): BidiServer<User, State, In, Out>;
  /** The `maxWait` in effect (ms). */
  readonly maxWait: number;
}

const DEFAULT_TIME_LIMIT_MS = 29_000;
const DEFAULT_MARGIN_MS = 4_000;
/** A watch answers this long before the function's own timeout. */
const REMAINING_TIME_RESERVE_MS = 1_000;

function isV2(event: LambdaHttpEvent): event is LambdaEventV2 {
  return (event as LambdaEventV2).version === '2.0' && typeof (event as LambdaEventV2).rawPath === 'string';
}

function eventHeaders(event: LambdaHttpEvent): Headers {
  const headers = new Headers();
  if (isV2(event)) {
    for (const [name, value] of Object.entries(event.headers ?? {})) if (value !== undefined) headers.set(name, value);
    if (event.cookies?.length) headers.set('cookie', event.cookies.join('; '));
    return headers;
  }
  const multi = event.multiValueHeaders ?? {};
  for (const [name, values] of Object.entries(multi)) for (const v of values ?? []) headers.append(name, v);
  for (const [name, value] of Object.entries(event.headers ?? {})) if (value !== undefined && !headers.has(name)) headers.set(name, value);
  return headers;
}

function eventQuery(event: LambdaHttpEvent): URLSearchParams {
  if (isV2(event)) return new URLSearchParams(event.rawQueryString ?? '');
  const query = new URLSearchParams();
  const multi = event.multiValueQueryStringParameters;
  if (multi) {
    for (const [name, values] of Object.entries(multi)) for (const v of values ?? []) query.append(name, v);
  } else {
    for (const [name, value] of Object.entries(event.queryStringParameters ?? {})) if (value !== undefined) query.append(name, value);
  }
  return query;
}

/** The event's body as UTF-8 text (base64 decoded when the platform encoded it), refused past `limit` bytes. */
function eventBody(event: LambdaHttpEvent, limit: number): string {
  const raw = event.body ?? '';
  const bytes = event.isBase64Encoded ? Buffer.from(raw, 'base64') : Buffer.from(raw, 'utf8');
  if (bytes.byteLength > limit) throw new BidiError('BODY_TOO_LARGE', `request body exceeds ${limit} bytes`);
  return bytes.toString('utf8');
}

/** Translates a Lambda HTTP event into the core's request. `signal` ends a waiting watch. */
export function lambdaEventToBidi(event: LambdaHttpEvent, signal?: AbortSignal, raw?: unknown): BidiRequest {
  if (!event || typeof event !== 'object' || (!isV2(event) && typeof (event as LambdaEventV1).httpMethod !== 'string')) {
    throw new TypeError('bidiweb/aws-lambda: not an API Gateway / Function URL HTTP event');
  }
  return {
    method: isV2(event) ? event.requestContext.http.method : event.httpMethod,
    path: isV2(event) ? event.rawPath : event.path,
    query: eventQuery(event),
    headers: eventHeaders(event),
    text: async (limit) => eventBody(event, limit),
    signal,
    raw: raw ?? event,
    // The platform buffers the whole response: a stream would only arrive at its end.
    canStream: false,
  };
}

async function drain(res: BidiResponse): Promise<string> {
  let body = res.body;
  if (!res.stream) return body;
  for (let chunk = await res.stream.next(); chunk !== null; chunk = await res.stream.next()) body += chunk;
  return body;
}

/** Translates the core's response into the result format of `event`. */
export async function bidiToLambdaResult(event: LambdaHttpEvent, res: BidiResponse | null): Promise<LambdaResult> {
  const r = res ?? outsideMountResponse();
  const body = r.status === 204 ? '' : await drain(r);
  const headers: Record<string, string> = {};
  const cookies: string[] = [];
  for (const [name, value] of Object.entries(r.headers)) {
    if (name.toLowerCase() === 'set-cookie') cookies.push(value);
    else headers[name] = value;
  }
  if (isV2(event)) return { statusCode: r.status, headers, ...(cookies.length ? { cookies } : {}), body, isBase64Encoded: false };
  const multiValueHeaders: Record<string, string[]> = cookies.length ? { 'set-cookie': cookies } : {};
  return { statusCode: r.status, headers, multiValueHeaders, body, isBase64Encoded: false };
}

/**
 * A Lambda handler (and a scheduled sweep) for bidiweb. `options` are the
 * server options as everywhere else; `sweepInterval` defaults to 0 (no timers
 * in a function: schedule `sweep()`), `maxWait` to the time limit minus the
 * margin (at most the core's cap, 55 s), and a `maxWait` above that is refused with `INVALID_OPTIONS`.
 */
export function bidiLambda<User = unknown, State extends object = Record<string, unknown>, In = unknown, Out = unknown>(
  options: BidiOptions<User, State, In, Out>,
  adapter: LambdaAdapterOptions = {},
): BidiLambda<User, State, In, Out> {
  const limit = adapter.timeLimitMs ?? DEFAULT_TIME_LIMIT_MS;
  const margin = adapter.marginMs ?? DEFAULT_MARGIN_MS;
  const ceiling = limit - margin;
  if (!(ceiling > 0)) throw new BidiError('INVALID_OPTIONS', `timeLimitMs (${limit}) must exceed marginMs (${margin})`);
  if (options.maxWait !== undefined && options.maxWait > ceiling) {
    throw new BidiError(
      'INVALID_OPTIONS',
      `maxWait (${options.maxWait}) must be at most timeLimitMs - marginMs (${limit} - ${margin} = ${ceiling}), or watches outlive the platform's request time limit`,
    );
  }
  const maxWait = options.maxWait ?? Math.min(ceiling, MAX_WAIT_CAP_MS);
  const config: BidiOptions<User, State, In, Out> = { sweepInterval: 0, ...options, maxWait };
  const shared = createBidiServer(config); // also checks the options now, not at the first request
  const server = () => (adapter.freshServer === false ? shared : createBidiServer(config));

  return {
    maxWait,
    server,
    sweep: () => server().sweep(),
    async handler(event, context) {
      // Answer a watch before the function itself times out (its timeout may be below maxWait).
      const abort = new AbortController();
      const remaining = context?.getRemainingTimeInMillis?.();
      const timer =
        typeof remaining === 'number' ? setTimeout(() => abort.abort(), Math.max(0, remaining - REMAINING_TIME_RESERVE_MS)) : undefined;
      try {
        return await bidiToLambdaResult(event, await server().handle(lambdaEventToBidi(event, abort.signal, { event, context })));
      } finally {
        if (timer) clearTimeout(timer);
      }
    },
  };
}

export * from '../core/index';
