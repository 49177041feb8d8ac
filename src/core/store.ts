/**
 * The store contract: every piece of session state lives behind these
 * operations, and each operation is atomic on its own (one Lua script in
 * Redis, one synchronous step in memory). Core never reads, modifies and
 * writes across two calls, and keeps no state of its own that another
 * instance would need. See docs/STORE.md for the rules each one follows.
 *
 * Message payloads travel as JSON strings: core serialises once, stores never
 * parse them.
 */

import type { OpenLimit, OpenLimiter } from './open-limit';

/** A message as stored: its sequence number and its JSON text. */
export interface StoredMessage {
  seq: number;
  json: string;
  /** Its JSON's UTF-8 length, when the store has it counted already (core counts it otherwise). */
  bytes?: number;
}

/** A lease request: who asks (an unguessable token) and for how long. */
export interface LeaseRequest {
  token: string;
  ms: number;
}

export interface CreateInput {
  sid: string;
  userJson: string;
  stateJson: string;
  /** Server messages queued during `onOpen`; they get seqs 1..n. */
  initial: string[];
  idleMs: number;
  maxSessions: number;
  /**
   * Unguessable token of this create call. A repeat of the same call (same
   * sid and token: a store client resending a command whose reply was lost)
   * answers `ok` again and changes nothing. Without it a repeat answers `exists`.
   */
  token?: string;
}

export type CreateResult = { status: 'ok' } | { status: 'too-many-sessions' } | { status: 'exists' };

export interface ReceiveInput {
  /** Client messages, validated, sorted by seq, unique. */
  msgs: StoredMessage[];
  /** The client's ack of the server stream, if it sent one. */
  ack?: number;
  /** A seq above `clientAck + window` rejects the request. */
  window: number;
  /** Bytes that may wait behind a gap. */
  bufferBytes: number;
  /** Taken only if a run is deliverable and nobody holds it. */
  lease: LeaseRequest;
  /** Most messages handed out for delivery at once. */
  maxDeliver: number;
}

export type ReceiveResult =
  | { status: 'unknown' }
  | { status: 'closed' }
  | { status: 'invalid-ack'; lastSeq: number }
  | { status: 'out-of-window'; clientAck: number }
  | {
      status: 'ok';
      clientAck: number;
      /** Non-empty: the caller now holds the delivery lease and must deliver these, in order. */
      deliver: StoredMessage[];
      /** The session's user and state, for the handler: present when `deliver` is non-empty (a store may leave them out otherwise). */
      userJson?: string;
      stateJson?: string;
    };

export interface CommitInput {
  token: string;
  /** The seq whose handler just returned. */
  seq: number;
  /** New session state, when the handler changed it. */
  stateJson?: string;
  leaseMs: number;
  /** True when the caller has no more messages in hand: hand out the next run, or release the lease. */
  next: boolean;
  maxDeliver: number;
  /**
   * Server messages the handler sent without waiting for them: appended to
   * the session's log in the same atomic step as the delivery record, in
   * order, as many as fit `limits` (as if each were its own `append`); the
   * rest are refused. Only the call that records `seq` appends them; a
   * repeat stores nothing and answers the first call's outcome (`sent`).
   */
  sends?: { msgs: string[]; limits: AppendLimits };
}

/**
 * What became of a commit's `sends`: the first `stored` got seqs
 * `firstSeq ..`; the rest were refused, `full` (unacked bounds) or `closed`
 * (the session is closing).
 */
export interface CommitSent {
  stored: number;
  firstSeq: number;
  refused?: 'full' | 'closed';
}

export type CommitResult =
  /** The lease is gone (expired and taken, or the session vanished): stop delivering. */
  | { status: 'lost' }
  /**
   * Only with `sends`, on an open session that is a member of a group: nothing changed. Group
   * entries published before the sends must come first, which the commit does not pull: append
   * the sends (`append` pulls), then commit again without them.
   */
  | { status: 'pull' }
  /** Session is closing: the caller keeps the lease and must run onClose, then finishClose. */
  | { status: 'closing'; clientAck: number; reason: string; userJson: string; stateJson: string; sent?: CommitSent }
  /** `deliver` non-empty: keep going, lease extended. Empty with `next`: lease released. `sent` only when the input had `sends`. */
  | { status: 'ok'; clientAck: number; deliver: StoredMessage[]; sent?: CommitSent };

export interface AppendLimits {
  maxUnackedMessages: number;
  maxUnackedBytes: number;
}

/** How many of its most recent append ids a store remembers per session, at least (see `Store.append`). */
export const APPEND_IDS_REMEMBERED = 32;

export type AppendResult =
  | { status: 'ok'; firstSeq: number; lastSeq: number }
  | { status: 'unknown' }
  | { status: 'closed' }
  | { status: 'full' };

export interface ReadInput {
  /** Trim everything up to and including this seq. */
  ack: number;
  watchToken: string;
  /** Make this watch the session's current one (superseding any other). */
  claim: boolean;
  maxMessages: number;
  /**
   * The session's unacked bounds, for the group entries this read pulls into
   * its log (see `Store.publish`). Default: the default limits.
   */
  limits?: AppendLimits;
  /**
   * Stop adding messages once their JSON has reached this many bytes (UTF-8): the message that
   * reaches it still comes, so the first always does, and a read cut by the budget has always
   * reached it (a stream can tell it must end). Absent: no byte budget. Applied where the log is
   * read, so a large unacked log is never copied whole for one response.
   */
  maxBytes?: number;
  /**
   * A streaming watch's re-read: return only messages with a seq above this
   * (it sent the ones before). Trims nothing (only `ack` trims), and is not
   * activity: `lastSeen` and expiries stay as the stream's first read left
   * them (a stream lasts at most `maxWait`, below the idle timeout).
   */
  after?: number;
}

export type ReadResult =
  | { status: 'unknown' }
  | { status: 'invalid-ack'; lastSeq: number }
  | {
      status: 'ok';
      msgs: StoredMessage[];
      clientAck: number;
      /** A newer watch took over. */
      superseded: boolean;
      /** Present once the session is closing or closed. */
      close?: { seq: number; reason: string };
    };

/** How long a group's log keeps an entry: both bounds apply, whichever trims first. */
export interface GroupRetention {
  /** Newest entries kept. */
  maxEntries: number;
  /** Entries older than this are dropped, ms (at the next publish). */
  maxAgeMs: number;
}

/**
 * The close reason core gives a client's own close (`DELETE`). Such a session's tombstone keeps no
 * log: the client that asked for the close reads no more (docs/STORE.md, "Lifecycle and tombstones").
 */
export const CLIENT_CLOSE_REASON = 'client';

/** The close reason of a member whose group log moved past entries it had not pulled yet. */
export const GROUP_OVERRUN_REASON = 'group-overrun';

export type PublishResult = {
  status: 'ok';
  /** Members of the group when the entry was written (0: nothing was written). */
  members: number;
  /** The entry's number in the group's log (0 when nothing was written). */
  gseq: number;
};

export interface CloseInput {
  reason: string;
  /** Try to take the delivery lease to run onClose. */
  lease?: LeaseRequest;
}

export type CloseResult =
  | { status: 'unknown' }
  | {
      status: 'ok';
      /** This call moved the session from open to closing. */
      transitioned: boolean;
      /** The caller holds the lease and must run onClose (reason below), then finishClose. */
      leased: boolean;
      reason: string;
      userJson: string;
      stateJson: string;
    };

export interface SweepInput {
  /** Store-wide sweep lease: only one instance sweeps at a time. */
  lease: LeaseRequest;
  /** Most sessions returned for closing in one call. */
  limit: number;
}

export interface SweptSession {
  sid: string;
  reason: string;
  userJson: string;
  stateJson: string;
}

export type SweepResult =
  | { status: 'busy' }
  /** The caller holds each returned session's lease (token = the sweep lease token) and must run onClose then finishClose. */
  | { status: 'ok'; closing: SweptSession[] };

export interface SessionInfo {
  status: 'open' | 'closing' | 'closed';
  userJson: string;
  stateJson: string;
  clientAck: number;
  lastSeq: number;
}

export interface ListInput {
  /** Where the previous page ended (its `cursor`); absent: from the start. */
  cursor?: string;
  /** How many sids a page should hold, at least 1 (a store may return a few more; see `Store.list`). */
  limit: number;
}

export interface ListResult {
  /** Sids from the sessions index (open and closing sessions), in no particular order. */
  sids: string[];
  /** Pass it to get the next page; `null`: the listing is complete. Holds no session id. */
  cursor: string | null;
}

/**
 * What woke a watch. `watch` carries the claiming watch's token so it can ignore its own claim.
 * A `message` event may carry the messages it announces (`run`): then a watch that has sent
 * everything before them writes them without a read (see {@link AppendedRun}).
 */
export type StoreEvent =
  | { type: 'message'; run?: AppendedRun }
  | { type: 'close' }
  | { type: 'ack' }
  | { type: 'watch'; token: string };

/**
 * The messages one append (or one commit's sends) stored, as the log now holds them: consecutive
 * seqs, in order, with the client ack at that moment. Optional for a store (a store may leave it
 * out, e.g. when the messages are large); when present it must be exactly what a `read` would
 * return for those seqs, because a watch delivers it instead of reading.
 */
export interface AppendedRun {
  msgs: StoredMessage[];
  clientAck: number;
}

export type Unsubscribe = () => void;

export interface Store {
  /** Create an open session with its user, state and initial server messages. */
  create(input: CreateInput): Promise<CreateResult>;
  /**
   * Client messages in: validate, trim by ack, dedupe, buffer, and hand out
   * the deliverable run under the lease. A lease held by `input.lease.token`
   * itself counts as free (a repeated call gets the run again).
   */
  receive(sid: string, input: ReceiveInput): Promise<ReceiveResult>;
  /** Record that `seq` was delivered (and the state it left); hand out more or release the lease. */
  commit(sid: string, input: CommitInput): Promise<CommitResult>;
  /** Extend a held delivery lease while a handler runs long. */
  renewLease(sid: string, token: string, ms: number): Promise<boolean>;
  /**
   * Server messages out: assign the next seqs atomically, within the unacked
   * bounds; wakes watches. `id` (letters, digits, `_`, `-`) names this send:
   * a repeat with an id among (at least) the session's last
   * {@link APPEND_IDS_REMEMBERED} appends stores nothing and answers the
   * first call's seqs, whatever the session's state now. That makes the call
   * safe for a store client to resend when a reply was lost (ioredis does,
   * after a reconnect). Core repeats ids on purpose too: the appends of a
   * handler's sends while client message `seq` is delivered carry ids made
   * from `seq`, the same on a redelivery of that message.
   */
  append(sid: string, msgs: string[], limits: AppendLimits, id?: string): Promise<AppendResult>;
  /** One message to many sessions in one round trip (pipelined where the store is remote); `id` as for `append`, per session. */
  appendMany(sids: string[], msg: string, limits: AppendLimits, id?: string): Promise<AppendResult[]>;
  /** Watch step: trim by ack, return what follows; `claim` supersedes older watches. */
  read(sid: string, input: ReadInput): Promise<ReadResult>;
  /**
   * Move an open session to closing (appending the close marker) and maybe
   * take the lease for onClose; a lease held by `input.lease.token` itself
   * answers `leased` again (a repeated call).
   */
  close(sid: string, input: CloseInput): Promise<CloseResult>;
  /** onClose has run: the session is closed; release the lease, leave groups, keep a tombstone. */
  finishClose(sid: string, token: string): Promise<void>;
  /** Expire idle sessions and pick up closes whose onClose never finished. */
  sweep(input: SweepInput): Promise<SweepResult>;
  /**
   * Listen for news about one session. Resolves once the subscription is
   * active: an event from any operation that completes after that reaches
   * the listener. Listeners must be cheap: they only wake a waiter.
   */
  subscribe(sid: string, listener: (event: StoreEvent) => void): Promise<Unsubscribe>;
  /** Read-only look at sessions (missing ones are null). */
  inspect(sids: string[]): Promise<Array<SessionInfo | null>>;
  /**
   * How many sessions the index holds: the open and closing ones, which count against
   * `maxSessions` (a store may still count a session that expired unswept until its next sweep).
   */
  count(): Promise<number>;
  /**
   * One page of the sessions index, for inspection (an admin page). A sid that is in the index
   * from the first page to the last is returned at least once; one may come twice; sessions
   * created or closed meanwhile may or may not come. A page holds about `limit` sids: at most
   * `limit`, unless the store cannot split its index finer (RedisStore returns a small index
   * whole), and it may be empty while the cursor is not null. A malformed cursor throws
   * `BAD_REQUEST`. The cursor must not contain a session id (it may end up in a URL).
   */
  list(input: ListInput): Promise<ListResult>;
  /**
   * One message to every member of a group, written once (the group's log),
   * whatever the group's size; each member pulls it into its own log, in its
   * own seq order, at its next `read` or `append` (see docs/STORE.md, "Groups").
   * Wakes members' watches. `id` as for `append`: a repeat writes nothing more.
   */
  publish(group: string, msg: string, retention: GroupRetention, id?: string): Promise<PublishResult>;
  /**
   * Group membership, for fan-out to rooms. A member gets the entries published
   * after its join (none from before). Closed sessions leave their groups.
   */
  join(sid: string, group: string): Promise<boolean>;
  leave(sid: string, group: string): Promise<void>;
  members(group: string): Promise<string[]>;
  /**
   * A limiter for session opens per client key, counted in this store (so
   * across instances). Optional: without it the server applies no open rate
   * limit unless the app passes `openLimiter`.
   */
  openLimiter?(limit: OpenLimit): OpenLimiter;
  /** Release connections and timers. */
  dispose?(): Promise<void>;
}
