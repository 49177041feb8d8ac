/**
 * bidiweb client: an ordered, exactly-once, bidirectional message session
 * over short plain-HTTP requests. Zero dependencies; browsers (native
 * `fetch`) and Node >= 20 (its own node:http transport from 20.16 on, else
 * the global `fetch`).
 *
 * ```ts
 * import { open } from 'bidiweb/client';
 * const s = open('https://example.com/session', { meta: { room: 'lobby' } });
 * s.on('message', (data) => console.log(data));
 * await s.send({ text: 'hi' });
 * ```
 *
 * Wire protocol: docs/PROTOCOL.md.
 *
 * @packageDocumentation
 */
export { open, BidiClientSession } from './session';
export { BidiClientError, type BidiErrorCode } from './errors';
export type {
  ClientEvents,
  ClientOptions,
  CloseCode,
  CloseEvent,
  FetchInitLike,
  FetchLike,
  FetchBodyReader,
  FetchResponseLike,
  HeadersOption,
  MessageInfo,
  ReopenInfo,
  Operation,
  RetryInfo,
  RetryOptions,
  ServerLimits,
  SessionState,
  TransportMode,
  WebSocketConstructorLike,
  WebSocketLike,
} from './types';
export type { Listener } from './emitter';
