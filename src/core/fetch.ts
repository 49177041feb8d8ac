/**
 * The Web-standard entry point: `(Request) => Promise<Response>`, for
 * serverless and edge runtimes (and anything else that speaks Fetch).
 */
import { BidiError } from './errors';
import type { BidiRequest, BidiStream } from './http';
import { outsideMountResponse } from './http';
import { decodeUtf8 } from './protocol';
import type { BidiOptions, BidiServer } from './server';
import { toBidiServer } from './server';

export type FetchHandler = (request: Request, ...platform: any[]) => Promise<Response>;

export interface FetchHandlerOptions {
  /**
   * The client's address, from what the platform passes beside the request
   * (Deno: `(req, info) => info.remoteAddr.hostname`; Bun: `(req, server) =>
   * server.requestIP(req)?.address`). It keys the open rate limit (the
   * `clientKey` option); without it that limit applies only where
   * `clientKey` gives a key.
   */
  remoteAddress?(request: Request, ...platform: any[]): string | undefined;
}

/** Reads a Fetch body as text, stopping past `limit` bytes. */
async function readLimited(request: Request, limit: number): Promise<string> {
  if (!request.body) return '';
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw new BidiError('BODY_TOO_LARGE', `request body exceeds ${limit} bytes`);
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    all.set(c, offset);
    offset += c.byteLength;
  }
  return decodeUtf8(all);
}

/**
 * `remoteAddress`: the client's address where the runtime knows it (Fetch's
 * `Request` does not carry it); it keys the open rate limit.
 */
export function fetchRequestToBidi(request: Request, remoteAddress?: string): BidiRequest {
  const url = new URL(request.url);
  return {
    remoteAddress,
    method: request.method,
    path: url.pathname,
    query: url.searchParams,
    headers: request.headers,
    text: (limit) => readLimited(request, limit),
    signal: request.signal,
    raw: request,
    canStream: typeof ReadableStream === 'function',
  };
}

/** A streaming watch as a Web stream: the first chunk, then each frame as it comes. */
function streamBody(first: string, stream: BidiStream): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream<Uint8Array>({
    start(controller) {
      if (first) controller.enqueue(encoder.encode(first));
    },
    async pull(controller) {
      const chunk = await stream.next();
      if (chunk === null) controller.close();
      else controller.enqueue(encoder.encode(chunk));
    },
    cancel() {
      stream.close();
    },
  });
}

/**
 * Wrap a server (or options to build one) as a Fetch handler. Requests
 * outside the mount path get a 404 JSON error.
 */
export function toFetchHandler(serverOrOptions: BidiServer<any, any> | BidiOptions<any, any>, options: FetchHandlerOptions = {}): FetchHandler {
  const server = toBidiServer(serverOrOptions);
  const { remoteAddress } = options;
  return async (request, ...rest: unknown[]) => {
    const res = (await server.handle(fetchRequestToBidi(request, remoteAddress?.(request, ...rest)))) ?? outsideMountResponse();
    if (res.stream) return new Response(streamBody(res.body, res.stream), { status: res.status, headers: res.headers });
    return new Response(res.status === 204 ? null : res.body, { status: res.status, headers: res.headers });
  };
}
