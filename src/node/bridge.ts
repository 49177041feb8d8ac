/**
 * The one bridge between Node's http objects and the core, shared by the
 * Express, Koa and Nest adapters: builds a BidiRequest (body limit, abort on
 * client disconnect) and writes a BidiResponse back.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BidiError } from '../core/errors';
import type { BidiRequest, BidiResponse, HeaderReader } from '../core/http';
import { decodeUtf8 } from '../core/protocol';
import type { BidiServer } from '../core/server';
import { useNodeDebug } from '../node/debug';

useNodeDebug();

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
      try {
        resolve(decodeUtf8(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
      } catch (err) {
        reject(err);
      }
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
  return new NodeBidiRequest(req, res, raw, parsedBody);
}

/** A class, not a literal with closures: a waiting watch keeps its request, and this is the lighter form. */
class NodeBidiRequest implements BidiRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: NodeHeaders;
  readonly canStream = true;
  private readonly q: number;
  private readonly url: string;
  private _query?: URLSearchParams;
  /** Only a waiting watch needs to learn that the client went away: the signal is made on first use. */
  private controller?: AbortController;

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    readonly raw: unknown,
    private readonly parsedBody: unknown,
  ) {
    const url = (this.url = req.url ?? '/');
    this.q = url.indexOf('?');
    this.method = req.method ?? 'GET';
    this.path = this.q === -1 ? url : url.slice(0, this.q);
    this.headers = new NodeHeaders(req.headers);
  }

  get query(): URLSearchParams {
    return (this._query ??= new URLSearchParams(this.q === -1 ? '' : this.url.slice(this.q + 1)));
  }

  text(limit: number): Promise<string> {
    return readBody(this.req, limit, this.parsedBody);
  }

  get remoteAddress(): string | undefined {
    return this.req.socket.remoteAddress;
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      const c = (this.controller = new AbortController());
      const res = this.res;
      if (res.closed) {
        if (!res.writableFinished) c.abort();
      } else {
        res.once('close', () => {
          if (!res.writableFinished) c.abort();
        });
      }
    }
    return this.controller.signal;
  }
}

export interface WriteOptions {
  /** Destroy the response when its client takes no bytes for this long while a write waits, ms; 0 = never. Default 30 000. */
  drainTimeout?: number;
}

export function writeBidiResponse(res: ServerResponse, response: BidiResponse, options: WriteOptions = {}): void {
  const { stream } = response;
  const drainTimeout = options.drainTimeout ?? 30_000;
  if (res.headersSent || res.destroyed) {
    stream?.close();
    return;
  }
  if (stream) {
    writeStream(res, response, stream, drainTimeout);
    return;
  }
  if (response.status === 204) {
    res.writeHead(204, response.headers);
    res.end();
    return;
  }
  const headers: Record<string, string | number> = { ...response.headers };
  headers['content-length'] = Buffer.byteLength(response.body);
  res.writeHead(response.status, headers);
  res.end(response.body);
  // Handed whole to the kernel (the usual case): nothing waits, no timer.
  if (!res.writableFinished) destroyIfStuck(res, drainTimeout, 'finish');
}

/**
 * Until `res` emits `until` ('finish': all written; 'drain': room again),
 * checks every `ms` whether the client took any bytes; a response that made
 * no progress for a whole `ms` is destroyed, which frees what it holds.
 */
function destroyIfStuck(res: ServerResponse, ms: number, until: 'finish' | 'drain'): void {
  const socket = res.socket;
  if (ms <= 0 || !socket) return;
  let queued = socket.writableLength;
  const timer = setInterval(() => {
    const now = socket.writableLength;
    if (now > 0 && now >= queued) {
      stop();
      // A reset, not a close: the kernel drops what it still queues for this peer at once,
      // instead of keeping it for a peer that does not read.
      socket.resetAndDestroy();
      res.destroy();
      return;
    }
    queued = now;
  }, ms);
  timer.unref();
  const stop = () => {
    clearInterval(timer);
    res.off(until, stop);
    res.off('close', stop);
  };
  res.on(until, stop);
  res.on('close', stop);
}

/** A streaming watch: headers and the first frame at once, then each frame as it comes, unbuffered. */
function writeStream(res: ServerResponse, response: BidiResponse, stream: NonNullable<BidiResponse['stream']>, drainTimeout: number): void {
  res.writeHead(response.status, response.headers);
  if (response.body) {
    if (!res.write(response.body)) destroyIfStuck(res, drainTimeout, 'drain');
  } else res.flushHeaders();
  let gone = false;
  const onClose = () => {
    gone = true;
    stream.close();
  };
  res.once('close', onClose);
  void (async () => {
    for (;;) {
      const chunk = await stream.next();
      if (chunk === null || gone) break;
      if (!res.write(chunk)) {
        destroyIfStuck(res, drainTimeout, 'drain');
        await new Promise<void>((resolve) => {
          const done = () => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    }
    res.off('close', onClose);
    stream.close();
    if (!gone) {
      res.end();
      if (!res.writableFinished) destroyIfStuck(res, drainTimeout, 'finish');
    }
  })();
}

export type NodeHandler = (req: IncomingMessage, res: ServerResponse, raw?: unknown, parsedBody?: unknown) => Promise<boolean>;

/** Serve a Node request; resolves `false` when the path is not the server's (the caller passes it on). */
export function createNodeHandler(server: BidiServer<any, any>): NodeHandler {
  return async (req, res, raw, parsedBody) => {
    const response = await server.handle(toBidiRequest(req, res, raw, parsedBody));
    if (!response) return false;
    writeBidiResponse(res, response, { drainTimeout: server.drainTimeout });
    return true;
  };
}
