/**
 * The one key builder of the Redis store. Every key and channel name is made
 * here, nowhere else.
 *
 * Layout (prefix `bidi:` by default):
 *
 *   bidi:{<sid>}:s          HASH   the session record, with the inbound buffer (fields in commands/includes/session.lua)
 *   bidi:{<sid>}:out        LIST   unacked server messages, oldest first
 *   bidi:{<sid>}:aids       STRING the last append ids and their seqs (see commands/append-3.lua)
 *   bidi:{<sid>}:ev         channel (PUBLISH / SPUBLISH) for wake-ups
 *   bidi:{sessions}         ZSET   sid -> when to look at it again (expiry sweep, maxSessions)
 *   bidi:{sessions}:sweep   STRING the store-wide sweep lease
 *   bidi:{sessions}:tombs   ZSET   closed sessions (tombstones) -> when their keys expire
 *   bidi:group:{<group>}    SET    the sids in a group
 *   bidi:group:{<group>}:log LIST  the group's log: '<time µs>|<json>' entries, oldest first
 *   bidi:group:{<group>}:m  HASH   the log's counters (epoch, last gseq, oldest time, publish ids)
 *   bidi:group:{<group>}:ev channel: one wake-up per publish, for watches of members
 *
 * The `{...}` hash tags put every key of one session (and its channel) in one
 * Redis Cluster slot, so one Lua script can touch them all; the two
 * store-wide keys share the tag `{sessions}` so the sweep script can use both;
 * a group's keys share the group's own tag.
 */
import { BidiError } from '../core/errors';

export interface GroupKeys {
  /** The sids in the group (SET). */
  members: string;
  /** The group's log (LIST). */
  log: string;
  /** The log's counters (HASH). */
  meta: string;
  /** Pub/sub channel: one wake-up per publish. */
  channel: string;
}

export interface SessionKeys {
  /** The session record (HASH). */
  s: string;
  /** Unacked server messages (LIST). */
  out: string;
  /** The last append ids and the seqs they got, so a resent append stores nothing (STRING). */
  aids: string;
  /** Pub/sub channel for this session's events. */
  channel: string;
}

export class RedisKeys {
  /** ZSET of open and closing sessions, scored by when the sweep should look at them again. */
  readonly sessions: string;
  /** The store-wide sweep lease. */
  readonly sweep: string;
  /** ZSET of tombstones, scored by when their keys expire (bounded by count at each create). */
  readonly tombs: string;

  constructor(readonly prefix: string) {
    if (/[{}]/.test(prefix)) {
      throw new BidiError('INVALID_OPTIONS', `bidiweb/redis: prefix must not contain "{" or "}" (they would break the Cluster hash tags), got ${JSON.stringify(prefix)}`);
    }
    this.sessions = `${prefix}{sessions}`;
    this.sweep = `${prefix}{sessions}:sweep`;
    this.tombs = `${prefix}{sessions}:tombs`;
  }

  session(sid: string): SessionKeys {
    const unit = `${this.prefix}{${sid}}`;
    return { s: `${unit}:s`, out: `${unit}:out`, aids: `${unit}:aids`, channel: `${unit}:ev` };
  }

  /** The session hash alone (for commands that need nothing else). */
  record(sid: string): string {
    return `${this.prefix}{${sid}}:s`;
  }

  group(group: string): string {
    return `${this.prefix}group:{${group}}`;
  }

  groupKeys(group: string): GroupKeys {
    const members = this.group(group);
    return { members, log: `${members}:log`, meta: `${members}:m`, channel: `${members}:ev` };
  }
}

// --- Cluster slots (to group pipelines by node) -------------------------------------

const CRC16_TABLE = (() => {
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let j = 0; j < 8; j++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    table[i] = crc;
  }
  return table;
})();

/** The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag, or of the whole key, mod 16384. */
const utf8 = new TextEncoder();

export function keySlot(key: string): number {
  let bytes = utf8.encode(key);
  const open = bytes.indexOf(0x7b); // {
  if (open !== -1) {
    const close = bytes.indexOf(0x7d, open + 1); // }
    if (close > open + 1) bytes = bytes.subarray(open + 1, close);
  }
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ CRC16_TABLE[((crc >> 8) ^ byte) & 0xff]!;
  return crc & 0x3fff;
}
