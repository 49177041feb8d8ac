/** Small runtime-neutral helpers (no Node imports: core runs on edge runtimes too). */

// Shared with the client (src/wire): the byte count every limit uses, and the id shape.
export { SESSION_ID_PATTERN, utf8Length } from '../wire';

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * CSPRNG bytes, fetched in blocks: one `getRandomValues` call per 4 KiB
 * instead of one per id (the call itself, not the bytes, is what costs).
 * Each byte is handed out once.
 */
const POOL_SIZE = 4096;
let pool = new Uint8Array(0);
let poolAt = 0;

/** Character codes of one id, reused: the id is made flat in one step (see below). */
const codes: number[] = [];

function randomBase64url(bytes: number): string {
  if (poolAt + bytes > pool.length) {
    pool = new Uint8Array(POOL_SIZE);
    globalThis.crypto.getRandomValues(pool);
    poolAt = 0;
  }
  codes.length = 0;
  let acc = 0;
  let bits = 0;
  const end = poolAt + bytes;
  for (let i = poolAt; i < end; i++) {
    acc = (acc << 8) | pool[i]!;
    pool[i] = 0;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      codes.push(BASE64URL.charCodeAt((acc >> bits) & 63));
    }
    acc &= (1 << bits) - 1;
  }
  poolAt = end;
  if (bits > 0) codes.push(BASE64URL.charCodeAt((acc << (6 - bits)) & 63));
  // One flat string: built with `+=`, a 22-character id is a chain of concatenation nodes, which costs
  // about 300 more bytes of heap per id for as long as the id lives (every open session holds its own).
  return String.fromCharCode.apply(null, codes);
}

/** Session ids: 128 bits from the platform CSPRNG, 22 base64url characters. */
export function newSessionId(): string {
  return randomBase64url(16);
}

/**
 * Lease, watch and sweep tokens. They never leave the servers, so they need to be unique, not
 * unguessable: made as append ids are (a random prefix per process and a counter), with no
 * CSPRNG bytes per request (docs/BENCHMARKS.md, "Client CPU per request": about 0.4 µs per send).
 */
export function newToken(): string {
  return newAppendId();
}

let appendIdPrefix = '';
let appendIdCounter = 0;

/**
 * Append ids (see `Store.append`): unique per process by a counter, across
 * processes by a random prefix (48 bits), so no CSPRNG call per send. Short,
 * because a store keeps the last few per session. The prefix is made on
 * first use: some edge runtimes refuse random values at module scope.
 */
export function newAppendId(): string {
  if (appendIdPrefix === '') appendIdPrefix = randomBase64url(6);
  appendIdCounter = (appendIdCounter + 1) % Number.MAX_SAFE_INTEGER;
  return appendIdPrefix + appendIdCounter.toString(36);
}

/**
 * The append id of the `n`-th store append a handler's sends make while client message `seq` is
 * delivered: the same on every delivery of that message, on any instance, so a redelivery (after
 * a crash between those appends and the delivery record) that sends the same way stores nothing
 * twice. Never one of newAppendId's: those hold base-36 digits only from their 9th character on,
 * and this has a '-' there or later.
 */
export function deliveryAppendId(seq: number, n: number): string {
  return 'd' + seq.toString(36).padStart(7, '0') + '-' + n.toString(36);
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * A short label for a session that is safe to log, where the id (a bearer
 * secret) must never go: 6 hex characters (24 bits) of a 32-bit FNV-1a hash
 * of the id — the label the debug log uses too. The same on every instance
 * and in every process, so log lines about one session can be matched up. It
 * tells at most 24 of the id's 128 random bits, so the other 104 stay
 * unguessable; a cryptographic hash is not needed (and would be async in
 * core). Two sessions may share a label (about one pair among 6 000 open
 * sessions): fine for reading logs, and it cannot address a session.
 */
export function sessionLabel(sid: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < sid.length; i++) {
    h ^= sid.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return ((h >>> 8) & 0xffffff).toString(16).padStart(6, '0');
}
