/**
 * The protocol suite's Wire with sends and watches over WebSockets
 * (bidiweb/ws frames, docs/WEBSOCKET.md): one socket per session id, requests
 * answered by id. What has no WebSocket form (open, close, requests with other
 * headers or without a session id) stays HTTP, as the client does.
 */
import WebSocket from 'ws';
import { BidiServer, type BidiOptions } from '../../src/core';
import { attach } from '../../src/ws';
import type { Target } from '../helpers/targets';
import { Wire, type Reply } from '../helpers/wire';

interface Socket {
  ws: WebSocket;
  ready: Promise<void>;
  pending: Map<number, (reply: Reply) => void>;
  /** Set when the socket closed: every request on it is answered with this. */
  closedWith?: Reply;
}

export class WsWire extends Wire {
  private readonly sockets = new Map<string, Socket>();
  private nextId = 1;

  constructor(
    base: string,
    private readonly wsUrl: string,
  ) {
    super(base);
  }

  override sendRaw(sid: string | null, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }): Promise<Reply> {
    const plain = Object.keys(headers).length === 1 && headers['content-type'] === 'application/json';
    if (!sid || !plain) return super.sendRaw(sid, body, headers);
    return this.request(sid, 'send', body);
  }

  override watch(sid: string, ack: number, wait = 0, signal?: AbortSignal): Promise<Reply> {
    return this.request(sid, 'watch', JSON.stringify({ ack, wait }), signal);
  }

  dispose(): void {
    for (const s of this.sockets.values()) s.ws.terminate();
    this.sockets.clear();
  }

  private socket(sid: string): Socket {
    const known = this.sockets.get(sid);
    if (known && !known.closedWith) return known;
    const ws = new WebSocket(this.wsUrl);
    const pending = new Map<number, (reply: Reply) => void>();
    let ready!: () => void;
    const socket: Socket = { ws, pending, ready: new Promise<void>((resolve) => (ready = resolve)) };
    ws.on('open', () => ws.send(JSON.stringify({ sid })));
    ws.on('message', (data) => {
      for (const line of String(data).split('\n')) {
        const frame = JSON.parse(line);
        if (frame.ready) ready();
        else if (typeof frame.status === 'number' && !frame.end) {
          const headers = new Headers(frame.retryAfter !== undefined ? { 'retry-after': frame.retryAfter } : {});
          pending.get(frame.id)?.({ status: frame.status, body: frame.body ?? undefined, headers });
          pending.delete(frame.id);
        }
      }
    });
    ws.on('error', () => {});
    ws.on('close', (code, reason) => {
      // A socket refused at its first frame (4400 MISSING_SESSION_ID): answered as the HTTP request would be.
      const status = code >= 4000 && code < 5000 ? code - 4000 : 503;
      socket.closedWith = { status, body: { error: { code: String(reason) || 'CLOSED', message: 'socket closed' } }, headers: new Headers() };
      ready();
      for (const answer of pending.values()) answer(socket.closedWith);
      pending.clear();
    });
    this.sockets.set(sid, socket);
    return socket;
  }

  private async request(sid: string, op: 'send' | 'watch', body: string, signal?: AbortSignal): Promise<Reply> {
    const socket = this.socket(sid);
    await socket.ready;
    if (socket.closedWith) return socket.closedWith;
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      const onAbort = () => {
        socket.pending.delete(id);
        if (socket.ws.readyState === WebSocket.OPEN) socket.ws.send(`{"id":${this.nextId++},"cancel":${id}}`);
        reject(Object.assign(new Error('This operation was aborted'), { name: 'AbortError' }));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      socket.pending.set(id, (reply) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(reply);
      });
      socket.ws.send(`{"id":${id},"${op}":${body}}`);
    });
  }
}

/** For describeProtocolSuite's `wire`: upgrades served on the target's http.Server by a server object of their own over its store. */
export function wsWire(target: Target, options: BidiOptions<any, any>): Wire {
  const server = new BidiServer({ ...options, sweepInterval: 0 });
  const sockets = attach(target.http, server);
  const wire = new WsWire(target.url, target.url.replace(/^http/, 'ws') + '/ws');
  const close = target.close;
  target.close = async () => {
    wire.dispose();
    await sockets.close();
    await server.dispose();
    await close();
  };
  return wire;
}
