/**
 * How many WebSockets an `attach` holds: at most `maxSocketsPerClient` per
 * client key and `maxSockets` in all. A socket counts from its upgrade
 * request until its TCP connection is gone (before the hello too: a socket
 * that never sends one is closed after `helloTimeoutMs`, and counts until
 * then). An upgrade past a limit is refused before it is upgraded, with the
 * JSON error an HTTP request gets: 429 TOO_MANY_SOCKETS (that client key) or
 * 503 SOCKETS_FULL (this attach), both with Retry-After. A client on
 * `transport: 'auto'` then uses HTTP; one on `'websocket'` retries with its
 * backoff.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { BidiError } from '../core/errors';
import type { BidiRequest } from '../core/http';
import { defaultClientKey } from '../core/open-limit';

export const DEFAULT_MAX_SOCKETS = 10_000;
export const DEFAULT_MAX_SOCKETS_PER_CLIENT = 100;
/** Seconds a refused client is told to wait (Retry-After): sockets free up as others close. */
const RETRY_AFTER_S = 5;

/** The error codes of refused upgrades (the `code` of the JSON body). */
export const WS_REFUSED = {
  /** 429: this client key holds `maxSocketsPerClient` sockets already. */
  TOO_MANY_SOCKETS: 'TOO_MANY_SOCKETS',
  /** 503: this attach holds `maxSockets` sockets already. */
  SOCKETS_FULL: 'SOCKETS_FULL',
} as const;

export type SocketClientKey = (upgrade: IncomingMessage) => string | null | undefined;

export interface AdmissionOptions {
  /** Sockets (upgrades in progress included) this attach holds at most. Default 10 000. */
  maxSockets?: number;
  /** Sockets one client key holds at most. Default 100. */
  maxSocketsPerClient?: number;
  /**
   * The client key of `maxSocketsPerClient`: as the core's `clientKey` (its default is the same: the peer's address, none on
   * loopback, where the peer is a local proxy). Behind a proxy, read the header it sets, e.g.
   * `(req) => req.headers['x-real-ip'] as string` — only one your proxy overwrites. null: only `maxSockets` applies.
   * `false`: no per-client limit.
   */
  clientKey?: SocketClientKey | false;
}

export interface Refusal {
  status: 429 | 503;
  code: string;
  message: string;
}

/** Counts sockets per client key and in all; each admitted socket is released once, when its connection closes. */
export class Admission {
  private total = 0;
  private readonly perKey = new Map<string, number>();
  /** Upgrades refused so far, for operators (`WsAttachment.refused`). */
  refused = 0;
  readonly maxSockets: number;
  readonly maxPerClient: number;
  private readonly keyOf: SocketClientKey | null;

  constructor(options: AdmissionOptions) {
    this.maxSockets = positive('maxSockets', options.maxSockets ?? DEFAULT_MAX_SOCKETS);
    this.maxPerClient = positive('maxSocketsPerClient', options.maxSocketsPerClient ?? DEFAULT_MAX_SOCKETS_PER_CLIENT);
    if (options.clientKey !== undefined && options.clientKey !== false && typeof options.clientKey !== 'function') {
      throw new BidiError('INVALID_OPTIONS', 'attach: clientKey must be a function or false');
    }
    // The core's default reads only the peer's address.
    this.keyOf = options.clientKey === false ? null : (options.clientKey ?? ((req) => defaultClientKey({ remoteAddress: req.socket?.remoteAddress } as BidiRequest)));
  }

  get sockets(): number {
    return this.total;
  }

  /** Takes a place for this upgrade's socket, released when `socket` closes; or says why not. */
  take(upgrade: IncomingMessage, socket: Duplex): Refusal | null {
    if (this.total >= this.maxSockets) {
      this.refused++;
      return { status: 503, code: WS_REFUSED.SOCKETS_FULL, message: 'this server holds as many WebSockets as it takes; retry later or use HTTP' };
    }
    const key = this.keyOf?.(upgrade) ?? null;
    const held = key === null ? 0 : (this.perKey.get(key) ?? 0);
    if (key !== null && held >= this.maxPerClient) {
      this.refused++;
      return { status: 429, code: WS_REFUSED.TOO_MANY_SOCKETS, message: 'this client holds too many WebSockets; close some or retry later' };
    }
    this.total++;
    if (key !== null) this.perKey.set(key, held + 1);
    let released = false;
    socket.once('close', () => {
      if (released) return;
      released = true;
      this.total--;
      if (key === null) return;
      const left = (this.perKey.get(key) ?? 1) - 1;
      // No entry for a key without sockets: the map is never larger than the sockets held.
      if (left <= 0) this.perKey.delete(key);
      else this.perKey.set(key, left);
    });
    return null;
  }
}

const STATUS_TEXT: Readonly<Record<number, string>> = { 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 503: 'Service Unavailable' };

/**
 * Answers an upgrade with a plain HTTP error (a JSON body) and ends the connection. Destroyed once
 * written: a client that never closes its side must not keep a refused connection half-open.
 */
export function refuseUpgrade(socket: Duplex, status: number, body: string, headers: Readonly<Record<string, string>> = {}): void {
  let head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Refused'}\r\ncontent-type: application/json; charset=utf-8\r\n`;
  for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
  socket.end(`${head}content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`, () => socket.destroy());
}

/** The refusal of an upgrade past `maxSockets` / `maxSocketsPerClient`. */
export function refuseOverLimit(socket: Duplex, refusal: Refusal): void {
  const body = JSON.stringify({ error: { code: refusal.code, message: refusal.message } });
  refuseUpgrade(socket, refusal.status, body, { 'retry-after': String(RETRY_AFTER_S) });
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw new BidiError('INVALID_OPTIONS', `attach: ${name} must be a positive integer, got ${String(value)}`);
  return value;
}
