/**
 * Wire-level parsing and serialisation (docs/PROTOCOL.md). Pure functions:
 * they validate a whole request before anything is applied, and build
 * response bodies from stored JSON text without re-serialising messages.
 */
import { BidiError } from './errors';
import type { BidiRequest } from './http';
import { SID_HEADER } from './http';
import type { Limits } from './limits';
import type { StoredMessage } from './store';
import { SESSION_ID_PATTERN, utf8Length } from './util';
import { HEARTBEAT_HEADER as WIRE_HEARTBEAT_HEADER, JSON_MEDIA_TYPE, PROTOCOL_VERSION } from '../wire';

export { HEARTBEAT_FRAME, PROTOCOL_VERSION, STREAM_CONTENT_TYPE } from '../wire';

export function isJsonContentType(value: string | null): boolean {
  if (!value) return false;
  if (value === JSON_MEDIA_TYPE) return true;
  const type = value.split(';', 1)[0]!.trim().toLowerCase();
  return type === JSON_MEDIA_TYPE;
}

/** Strict: a body that is not valid UTF-8 is refused, never patched with U+FFFD behind the app's back. */
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** Adapters decode request bodies with this: invalid UTF-8 → 400 BAD_REQUEST. */
export function decodeUtf8(bytes: Uint8Array): string {
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    throw new BidiError('BAD_REQUEST', 'request body is not valid UTF-8');
  }
}

/**
 * The body's wrapper levels above a message's data: the body object, `msgs`
 * and the `[seq, data]` pair. `meta` sits one level down and is checked
 * exactly in {@link parseOpen}.
 */
const BODY_LEVELS = 3;

/**
 * Whether JSON text nests arrays and objects more than `max` levels deep
 * (brackets inside strings do not count). One pass, no allocation; it runs
 * before `JSON.parse`, so deeper data never reaches a handler, `send()` or a
 * state save (where `JSON.stringify` would overflow the stack).
 */
export function jsonDeeperThan(text: string, max: number): boolean {
  // Each level takes at least one character.
  if (text.length <= max) return false;
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // A string: jump to its closing quote (indexOf is much faster than a loop here), one not
      // escaped by an odd number of backslashes.
      for (;;) {
        const q = text.indexOf('"', i + 1);
        if (q === -1) return false; // unterminated: JSON.parse refuses it
        let b = q - 1;
        while (text.charCodeAt(b) === 0x5c) b--;
        i = q;
        if ((q - 1 - b) % 2 === 0) break;
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/** Whether a parsed JSON value nests more than `max` levels (a scalar: 0, `[]`: 1). */
function valueDeeperThan(value: unknown, max: number): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (max === 0) return true;
  for (const key in value) if (valueDeeperThan((value as Record<string, unknown>)[key], max - 1)) return true;
  return false;
}

/** Reads and parses a JSON object body, enforcing the body limit, the nesting limit and the content type. */
export async function readJsonObject(req: BidiRequest, limits: Limits): Promise<Record<string, unknown>> {
  if (!isJsonContentType(req.headers.get('content-type'))) {
    throw new BidiError('UNSUPPORTED_MEDIA_TYPE', 'request body must be application/json');
  }
  const declared = req.headers.get('content-length');
  if (declared !== null && Number(declared) > limits.maxBodyBytes) {
    throw new BidiError('BODY_TOO_LARGE', `request body exceeds ${limits.maxBodyBytes} bytes`);
  }
  const text = await req.text(limits.maxBodyBytes);
  if (jsonDeeperThan(text, limits.maxJsonDepth + BODY_LEVELS)) {
    throw new BidiError('BAD_REQUEST', `JSON nested more than ${limits.maxJsonDepth} levels deep`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new BidiError('BAD_REQUEST', 'request body is not valid JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new BidiError('BAD_REQUEST', 'request body must be a JSON object');
  }
  return body as Record<string, unknown>;
}

export function readSessionId(req: BidiRequest): string {
  const sid = req.headers.get(SID_HEADER);
  if (!sid) throw new BidiError('MISSING_SESSION_ID', `the ${SID_HEADER} header is required`);
  if (!SESSION_ID_PATTERN.test(sid)) throw new BidiError('MISSING_SESSION_ID', `the ${SID_HEADER} header is malformed`);
  return sid;
}

export function isSeq(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

export interface OpenBody {
  meta: unknown;
}

export function parseOpen(body: Record<string, unknown>, limits: Pick<Limits, 'maxJsonDepth'>): OpenBody {
  if (body.v !== PROTOCOL_VERSION) {
    // `v` is client input: echo it only when it is a short scalar.
    const v = typeof body.v === 'number' || (typeof body.v === 'string' && body.v.length <= 16) ? JSON.stringify(body.v) : 'that';
    throw new BidiError('UNSUPPORTED_VERSION', `protocol version ${v} is not supported; this server speaks v${PROTOCOL_VERSION}`);
  }
  if (valueDeeperThan(body.meta, limits.maxJsonDepth)) {
    throw new BidiError('BAD_REQUEST', `"meta" is nested more than ${limits.maxJsonDepth} levels deep`);
  }
  return { meta: body.meta === undefined ? null : body.meta };
}

export interface SendBody {
  msgs: StoredMessage[];
  /** Each message's data as parsed from the body (`values[i]` is `msgs[i]`'s): see {@link reparsesSame}. */
  values: unknown[];
  ack?: number;
}

/** Validates a send body whole; returns messages sorted by seq with duplicates removed. */
export function parseSend(body: Record<string, unknown>, limits: Limits): SendBody {
  const { msgs: rawMsgs = [], ack } = body;
  if (ack !== undefined && !isSeq(ack)) throw new BidiError('BAD_REQUEST', '"ack" must be a non-negative integer');
  if (!Array.isArray(rawMsgs)) throw new BidiError('BAD_REQUEST', '"msgs" must be an array of [seq, data] pairs');
  if (rawMsgs.length > limits.maxMessagesPerRequest) {
    throw new BidiError('TOO_MANY_MESSAGES', `at most ${limits.maxMessagesPerRequest} messages per request`);
  }
  const max = limits.maxMessageBytes;
  let msgs: StoredMessage[] = [];
  let values: unknown[] = [];
  let ascending = true;
  for (const item of rawMsgs) {
    if (!Array.isArray(item) || item.length !== 2) throw new BidiError('BAD_REQUEST', 'each message must be a [seq, data] pair');
    const [seq, data] = item as [unknown, unknown];
    if (!isSeq(seq) || seq === 0) throw new BidiError('BAD_REQUEST', 'a message seq must be a positive integer');
    let json: string;
    try {
      json = JSON.stringify(data);
    } catch {
      // JSON.parse accepts nesting deeper than JSON.stringify can walk back (stack depth).
      throw new BidiError('BAD_REQUEST', `message ${seq} is nested too deeply`);
    }
    // A UTF-16 length of at most max / 3 cannot exceed max UTF-8 bytes: count only when it might.
    if (json.length * 3 > max && utf8Length(json) > max) {
      throw new BidiError('MESSAGE_TOO_LARGE', `message ${seq} exceeds ${max} bytes`);
    }
    if (msgs.length > 0 && seq <= msgs[msgs.length - 1]!.seq) ascending = false;
    msgs.push({ seq, json });
    values.push(data);
  }
  if (!ascending) {
    // Retransmissions and reordering: sort, and keep the first copy of each seq.
    const bySeq = new Map<number, number>();
    msgs.forEach((m, i) => bySeq.has(m.seq) || bySeq.set(m.seq, i));
    const order = [...bySeq.values()].sort((a, b) => msgs[a]!.seq - msgs[b]!.seq);
    values = order.map((i) => values[i]);
    msgs = order.map((i) => msgs[i]!);
  }
  return ack === undefined ? { msgs, values } : { msgs, values, ack };
}

/**
 * Whether `JSON.parse(JSON.stringify(value))` gives `value` back, for a value `JSON.parse` made:
 * true unless it holds -0 or a number too large for a double (`1e400`), which JSON text cannot
 * carry back (0, null). Then a message's data as parsed from the request is what its stored JSON
 * would parse to, and the handler can have it without a second parse.
 */
export function reparsesSame(value: unknown): boolean {
  if (typeof value === 'number') return value === 0 ? 1 / value > 0 : value - value === 0;
  if (typeof value !== 'object' || value === null) return true;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (!reparsesSame(value[i])) return false;
    return true;
  }
  for (const key in value) if (!reparsesSame((value as Record<string, unknown>)[key])) return false;
  return true;
}

export interface WatchQuery {
  ack: number;
  wait: number;
  /** `stream=1`: the client asks for a streaming watch (several frames on one response). */
  stream: boolean;
}

export function parseWatch(query: URLSearchParams, defaultWait: number, maxWait: number): WatchQuery {
  const ackText = query.get('ack');
  if (ackText === null) throw new BidiError('BAD_REQUEST', 'query parameter "ack" is required');
  const ack = parseInteger(ackText, 'ack');
  const waitText = query.get('wait');
  const wait = waitText === null ? defaultWait : Math.min(parseInteger(waitText, 'wait'), maxWait);
  return { ack, wait, stream: query.get('stream') === '1' };
}

function parseInteger(text: string, name: string): number {
  if (!/^\d{1,15}$/.test(text)) throw new BidiError('BAD_REQUEST', `query parameter "${name}" must be a non-negative integer`);
  return Number(text);
}

/** `[[seq,json],...]` from stored text, no re-serialisation. */
export function messagesJson(msgs: readonly StoredMessage[]): string {
  let out = '[';
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i]!;
    out += (i === 0 ? '[' : ',[') + m.seq + ',' + m.json + ']';
  }
  return out + ']';
}

/**
 * The response header of a streaming watch that announces its heartbeat interval (src/wire),
 * lower-cased like every response header core writes (and as `Access-Control-Expose-Headers` lists it).
 */
export const HEARTBEAT_HEADER = WIRE_HEARTBEAT_HEADER.toLowerCase();

export function watchBody(
  msgs: readonly StoredMessage[],
  clientAck: number,
  extra: { close?: { seq: number; reason: string }; superseded?: boolean },
): string {
  let out = '{"msgs":' + messagesJson(msgs) + ',"ack":' + clientAck;
  if (extra.close) out += ',"close":' + JSON.stringify(extra.close);
  if (extra.superseded) out += ',"superseded":true';
  return out + '}';
}
