/**
 * The one bridge between Node's http objects and the core, shared by the
 * Express, Koa and Nest adapters: builds a BidiRequest (body limit, abort on
 * client disconnect) and writes a BidiResponse back.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BidiError } from '../core/errors';
import type { BidiRequest, BidiResponse, HeaderReader } from '../core/http';
import type { BidiServer } from '../core/server';

class NodeHeaders implements HeaderReader {
  constructor(private readonly headers: IncomingMessage['headers']) {}
  get(name: string): string | null {
    const v = this.headers[name.toLowerCase()];
    if (v === undefined) return null;
    return Array.isArray(v) ? v.join(', ') : v;
  }
}

/**
 * A body some framework middleware already parsed, if any: `parsed` when the
 * adapter passes one (Koa's `ctx.request.body`), else `req.body` (e.g.
 * `express.json()`). Only used when the stream was consumed.
 */
function preParsedBody(req: IncomingMessage, parsed?: unknown): string | undefined {
  const body = parsed !== undefined ? parsed : (req as IncomingMessage & { body?: unknown }).body;
  // Only a stream someone already read to the end: `complete` alone can be true for unread data.
  if (body === undefined || !req.readableEnded) return undefined;
  if (typeof body === 'string') return body;
  if (body instanceof Uint8Array) return Buffer.from(body).toString('utf8');
  return JSON.stringify(body);
}

function readBody(req: IncomingMessage, limit: number, parsedBody?: unknown): Promise<string> {
  const parsed = preParsedBody(req, parsedBody);
  if (parsed !== undefined) {
    if (Buffer.byteLength(parsed) > limit) return Promise.reject(new BidiError('BODY_TOO_LARGE', `request body exceeds ${limit} bytes`));
    return Promise.resolve(parsed);
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        // Stop buffering but drain, so the 413 can still be written on this connection.
        req.resume();
        reject(new BidiError('BODY_TOO_LARGE', `request body exceeds ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks).toString('utf8'));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(new BidiError('BAD_REQUEST', 'request body could not be read', { cause: err }));
    };
    const onAborted = () => onError(new Error('aborted'));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
  });
}

/**
 * `parsedBody`: what a body-parsing middleware of the framework left behind
 * (a string, bytes or parsed JSON), for frameworks that keep it elsewhere
 * than `req.body`. Ignored unless that middleware consumed the stream.
 */
export function toBidiRequest(req: IncomingMessage, res: ServerResponse, raw: unknown = req, parsedBody?: unknown): BidiRequest {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return {
    method: req.method ?? 'GET',
    path: q === -1 ? url : url.slice(0, q),
    query: new URLSearchParams(q === -1 ? '' : url.slice(q + 1)),
    headers: new NodeHeaders(req.headers),
    text: (limit) => readBody(req, limit, parsedBody),
    signal: controller.signal,
    raw,
  };
}

export function writeBidiResponse(res: ServerResponse, response: BidiResponse): void {
  if (res.headersSent || res.destroyed) return;
  res.statusCode = response.status;
  for (const [name, value] of Object.entries(response.headers)) res.setHeader(name, value);
  if (response.status === 204) {
    res.end();
    return;
  }
  res.setHeader('content-length', Buffer.byteLength(response.body));
  res.end(response.body);
}

export type NodeHandler = (req: IncomingMessage, res: ServerResponse, raw?: unknown, parsedBody?: unknown) => Promise<boolean>;

/** Serve a Node request; resolves `false` when the path is not the server's (the caller passes it on). */
export function createNodeHandler(server: BidiServer<any, any>): NodeHandler {
  return async (req, res, raw, parsedBody) => {
    const response = await server.handle(toBidiRequest(req, res, raw, parsedBody));
    if (!response) return false;
    writeBidiResponse(res, response);
    return true;
  };
}
