/**
 * The chat itself — rooms, nicknames, presence, history — as bidiweb hooks,
 * independent of any web framework. `server.ts` mounts it in Express;
 * `samples/serverless` serves it from a Fetch handler built per request.
 *
 * Every piece of shared chat state lives in the bidiweb store: room
 * membership is a store group, the nick is `session.user`, the history is a
 * log in the store (./history.ts). Nothing is kept in this module or in the
 * server object, so any number of instances — or a fresh server per request —
 * serve the same rooms once they share a store (a `RedisStore`).
 *
 * Chat protocol (JSON messages over one bidiweb session):
 *
 *   open meta        { nick, room }
 *   client → server  { type: 'hello' }                      announce me (the page sends it on open)
 *                    { type: 'say', text, cid? }             text ≤ 2000 chars; cid: the page's id for its
 *                                                            pending line, echoed in `said` ([A-Za-z0-9_-]{1,64})
 *   server → client  { type: 'history', lines: [said, …] } once, before our own `joined`: the room's last lines
 *                    { type: 'joined', nick, at }
 *                    { type: 'left', nick, at }
 *                    { type: 'presence', nicks: [...] }      the room's members, sorted
 *                    { type: 'said', id, from, text, at, cid? }
 *                                                            `id` is stable across a redelivery and in history
 *                    { type: 'error', message, code? }       a message of ours was refused; code 'nick-taken':
 *                                                            our nick is someone else's in the room, and the
 *                                                            server closes the session (reason 'nick-taken')
 *
 * A nick is unique in its room (compared case-insensitively, see nickKey):
 * the open request of a second "ann" is refused with 409 while an open
 * session of the room has it. That check reads the store, so it holds across
 * instances; two opens racing on the same nick can both pass it, and are
 * settled when they announce (see `announce`): every session checks again
 * there, once it is in the store, and the later one loses.
 *
 * Why `hello`: `onOpen` runs before the session exists in the store, so the
 * room's member list cannot include the newcomer yet. The announcement
 * (`history` to us, then `joined` + `presence` to the room) therefore runs on
 * the session's first message, when the session is a member for everyone.
 * Whichever message comes first triggers it, so a client that starts with
 * `say` is announced too.
 */
import { BidiError, reject } from '../../src/core/errors';
import type { BidiOptions, Hub } from '../../src/core/server';
import { createBidiServer, type BidiServer } from '../../src/core/server';
import type { ServerSession } from '../../src/core/session';
import type { Store } from '../../src/core/store';
import { MemoryStore } from '../../src/core/stores/memory';
import { isHistorySid, RoomHistory, type RoomHistoryOptions } from './history';

export const NICK_MAX = 32;
export const ROOM_PATTERN = /^[a-z0-9-]{1,32}$/;
export const TEXT_MAX = 2000;
const CID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** The history message stays well below bidiweb's default 256 KiB message limit. */
const HISTORY_MESSAGE_BYTES = 200_000;

/** What `onOpen` attaches to a session; read-only afterwards. */
export interface ChatUser {
  nick: string;
  room: string;
}

/** Per-session state kept in the store. */
export interface ChatState {
  /** The room has seen our `joined` notice. */
  announced?: boolean;
  /** Our nick was taken by the time we announced: the session is closing, ignore what else it sent. */
  refused?: boolean;
}

export interface SaidMessage {
  type: 'said';
  id: string;
  from: string;
  text: string;
  at: number;
  cid?: string;
}

export type ChatMessage =
  | { type: 'history'; lines: SaidMessage[] }
  | { type: 'joined'; nick: string; at: number }
  | { type: 'left'; nick: string; at: number }
  | { type: 'presence'; nicks: string[] }
  | SaidMessage
  | { type: 'error'; message: string; code?: 'nick-taken' };

export interface ChatOptions {
  /** Where sessions, rooms and histories live. Default: a new in-memory store (one process). */
  store?: Store;
  /** Room history: on (default, last 50 lines), off, or its options. */
  history?: boolean | RoomHistoryOptions;
  /** Session idle timeout, ms (bidiweb default 120 000). */
  idleTimeout?: number;
  /** Watch wait, ms (bidiweb default 25 000). */
  wait?: number;
  /** Longest watch wait a client may ask for, ms (bidiweb default 55 000). */
  maxWait?: number;
  /** Expiry sweep interval, ms; 0 = call `server.sweep()` yourself (e.g. from a scheduled function). */
  sweepInterval?: number;
  /** Where errors go. Default: one line on stderr (never a session id). */
  log?: (line: string) => void;
}

/** Store groups are shared by every app on the store: keep ours apart. */
export function roomGroup(room: string): string {
  return `chat:room:${room}`;
}

/** The nick rules: trimmed, 1–32 characters, no control characters. Returns null when invalid. */
export function validNick(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  const nick = value.trim();
  if (nick.length === 0 || nick.length > NICK_MAX) return null;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(nick)) return null;
  return nick;
}

/**
 * What makes two nicks the same person to a reader: case and compatibility
 * forms (full-width letters, ligatures) do not count, so "Ann" and "ＡＮＮ"
 * cannot sit next to "ann".
 */
export function nickKey(nick: string): string {
  return nick.normalize('NFKC').toLowerCase();
}

/** The close reason (and error code) of a session whose nick was taken by the time it announced. */
export const NICK_TAKEN = 'nick-taken';

export function nickTakenMessage(nick: string, room: string): string {
  return `the nick "${nick}" is taken in #${room}: choose another`;
}

export function validRoom(value: unknown): string | null {
  return typeof value === 'string' && ROOM_PATTERN.test(value) ? value : null;
}

/** The open request's `meta` as a chat user, or a 400 that says what is wrong. */
export function chatUserFromMeta(meta: unknown): ChatUser {
  const m = (meta ?? {}) as { nick?: unknown; room?: unknown };
  const nick = validNick(m.nick);
  if (nick === null) throw reject(400, `nick must be 1–${NICK_MAX} characters without control characters`);
  const room = validRoom(m.room);
  if (room === null) throw reject(400, 'room must be 1–32 characters of a-z, 0-9 and -');
  return { nick, room };
}

function utf8Length(s: string): number {
  return new TextEncoder().encode(s).byteLength;
}

/**
 * A message id that reveals nothing about the session id (a one-way hash of
 * it) yet is the same if bidiweb redelivers the message after an instance
 * crash (same session, same client seq), so pages can drop the duplicate.
 * Web Crypto, so the chat also runs on edge runtimes.
 */
export async function messageId(sid: string, seq: number): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(`bidiweb-chat:${sid}:${seq}`)));
  let bin = '';
  for (const b of digest) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '').slice(0, 22);
}

/**
 * The chat as bidiweb options. `hub` is called whenever a hook needs to push
 * (publish to a room): pass the hub of the server these options end up in.
 */
export function chatBidiOptions(
  options: ChatOptions & { store: Store },
  hub: () => Hub<ChatUser, ChatState>,
): BidiOptions<ChatUser, ChatState> {
  const log = options.log ?? ((line: string) => console.error(line));
  const store = options.store;
  const history =
    options.history === false ? null : new RoomHistory<SaidMessage>(store, options.history === true ? {} : options.history);

  // Read from the store on every call: no in-process room state.
  async function openMembers(room: string): Promise<Array<{ sid: string; user: ChatUser }>> {
    const h = hub();
    const sids = await h.members(roomGroup(room));
    const views = sids.length > 0 ? await h.inspect(sids) : [];
    const out: Array<{ sid: string; user: ChatUser }> = [];
    views.forEach((v, i) => {
      if (v?.status === 'open' && v.user) out.push({ sid: sids[i]!, user: v.user });
    });
    return out;
  }

  async function presence(room: string): Promise<ChatMessage> {
    // A set: a nick raced in twice shows once until the loser's close (see announce).
    const nicks = new Set((await openMembers(room)).map((m) => m.user.nick));
    return { type: 'presence', nicks: [...nicks].sort((a, b) => a.localeCompare(b)) };
  }

  /** Whether an open session other than `self` has this nick in the room. */
  async function nickTaken(room: string, nick: string, self?: string): Promise<boolean> {
    const key = nickKey(nick);
    return (await openMembers(room)).some((m) => m.sid !== self && nickKey(m.user.nick) === key);
  }

  async function publish(room: string, msg: ChatMessage): Promise<void> {
    // Written once to the room's log whatever its size. A member too far
    // behind never gets a transcript with a hole: bidiweb closes its session
    // ('group-overrun'), so its page says so and can rejoin.
    await hub().publish(roomGroup(room), msg);
  }

  /** The room's last lines, newest kept first when they do not all fit in one message. */
  async function historyMessage(room: string): Promise<ChatMessage | null> {
    if (!history) return null;
    let lines: SaidMessage[];
    try {
      lines = await history.read(room);
    } catch (err) {
      log(`[chat] history read failed: ${describe(err)}`);
      return null;
    }
    let bytes = 40;
    let first = lines.length;
    while (first > 0) {
      const size = utf8Length(JSON.stringify(lines[first - 1])) + 1;
      if (bytes + size > HISTORY_MESSAGE_BYTES) break;
      bytes += size;
      first--;
    }
    return { type: 'history', lines: lines.slice(first) };
  }

  /** Announces the session; false when its nick turned out to be taken (the session is closing then). */
  async function announce(session: ServerSession<ChatUser, ChatState>): Promise<boolean> {
    const { nick, room } = session.user;
    // The open-time check cannot see a session opened at the same moment on another
    // instance. Here both are in the store and members of the room, so whichever of
    // two namesakes checks second sees the first and gives way: never both stay
    // (in a close race both may give way, and both pages ask for another nick).
    if (await nickTaken(room, nick, session.id)) {
      session.state.refused = true;
      await session.send({ type: 'error', code: NICK_TAKEN, message: nickTakenMessage(nick, room) } satisfies ChatMessage);
      await session.close(NICK_TAKEN);
      return false;
    }
    session.state.announced = true;
    // After our join (done at open): see history.ts for why no line can fall between.
    const past = await historyMessage(room);
    if (past) await session.send(past);
    await publish(room, { type: 'joined', nick, at: Date.now() });
    await publish(room, await presence(room));
    return true;
  }

  return {
    path: '/session',
    store,
    idleTimeout: options.idleTimeout,
    wait: options.wait,
    maxWait: options.maxWait,
    sweepInterval: options.sweepInterval,

    async onOpen(session, { meta }) {
      session.user = chatUserFromMeta(meta);
      session.state = { announced: false };
      const { nick, room } = session.user;
      if (await nickTaken(room, nick)) throw reject(409, nickTakenMessage(nick, room));
      await session.join(roomGroup(session.user.room));
    },

    // History sessions live in the same store but belong to no client.
    authorize({ sessionId }) {
      if (isHistorySid(sessionId)) throw new BidiError('UNKNOWN_SESSION', 'unknown session');
    },

    async onMessage(session, data, { seq }) {
      if (session.state.refused) return;
      if (!session.state.announced && !(await announce(session))) return;
      const msg = (data ?? {}) as { type?: unknown; text?: unknown; cid?: unknown };
      switch (msg.type) {
        case 'hello':
          return;
        case 'say': {
          if (typeof msg.text !== 'string') break;
          const text = msg.text.trim();
          if (text.length === 0) return;
          if (text.length > TEXT_MAX) {
            await session.send({ type: 'error', message: `a message may be at most ${TEXT_MAX} characters` } satisfies ChatMessage);
            return;
          }
          const { nick, room } = session.user;
          const line: SaidMessage = { type: 'said', id: await messageId(session.id, seq), from: nick, text, at: Date.now() };
          if (typeof msg.cid === 'string' && CID_PATTERN.test(msg.cid)) line.cid = msg.cid;
          // History first, then the room: a newcomer reads the history after joining, so it
          // gets this line live, from the history, or both (the page drops the copy by id).
          if (history) {
            try {
              await history.append(room, line);
            } catch (err) {
              log(`[chat] history append failed: ${describe(err)}`);
            }
          }
          await publish(room, line);
          return;
        }
      }
      await session.send({ type: 'error', message: 'unknown message' } satisfies ChatMessage);
    },

    async onClose(session) {
      if (isHistorySid(session.id)) return; // a room history expired (see history.ts)
      const { nick, room } = session.user;
      // bidiweb drops closed sessions from their groups after onClose; leave
      // first so the presence below no longer counts us.
      await session.leave(roomGroup(room));
      if (session.state.announced) await publish(room, { type: 'left', nick, at: Date.now() });
      await publish(room, await presence(room));
    },

    onError(error, { phase }) {
      log(`[chat] ${phase} error: ${describe(error)}`);
    },
  };
}

/**
 * A bidiweb server running the chat. Cheap to build: a function platform may
 * build one per request (with `sweepInterval: 0`).
 */
export function createChatServer(options: ChatOptions = {}): BidiServer<ChatUser, ChatState> {
  const store = options.store ?? new MemoryStore();
  // The hooks reach the hub of the server they run in; it exists by the time any hook runs.
  const server: BidiServer<ChatUser, ChatState> = createBidiServer(chatBidiOptions({ ...options, store }, () => server.hub));
  return server;
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
