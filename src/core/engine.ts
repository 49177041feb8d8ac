/**
 * The protocol engine. It owns no session state: every decision is made by
 * one atomic store operation, so any number of engines (in one process or
 * many) can serve the same sessions. It opens sessions, delivers client
 * messages in order under a lease, stores the server's sends, closes and
 * sweeps sessions, and builds the hub; errors are reported from here.
 */
import { BidiError, unknownSession } from './errors';
import type { BidiRequest, BidiResponse, Endpoints } from './http';
import { jsonResponse } from './http';
import type { Limits } from './limits';
import { announcedLimits } from './limits';
import type { BidiOptions, ErrorContext, ErrorPhase, Settings } from './options';
import { leaseLost, Outbox } from './outbox';
import { Observer } from './observe';
import type { OpenLimiter } from './open-limit';
import type { SendBody } from './protocol';
import { PROTOCOL_VERSION, parseOpen, parseSend, readJsonObject, readSessionId, reparsesSame } from './protocol';
import type { SendOptions, SessionBackend } from './session';
import { PendingSessionBackend, ServerSession } from './session';
import type { AppendResult, CommitInput, CommitResult, Store, StoredMessage, Unsubscribe } from './store';
import { MemoryStore } from './stores/memory';
import { newAppendId, newSessionId, newToken, sessionLabel, utf8Length } from './util';
import { Watches } from './watch';

export interface BroadcastResult {
  /** Sessions that got the message. */
  sent: number;
  /** Sessions that did not, with why. */
  failed: Array<{ sid: string; code: 'UNKNOWN_SESSION' | 'SESSION_CLOSED' | 'SEND_WINDOW_FULL' }>;
}

export interface SessionView<User = unknown, State = unknown> {
  status: 'open' | 'closing' | 'closed';
  user: User;
  state: State;
}

/** Push and manage sessions from anywhere: timers, queue consumers, other sessions' handlers. */
export interface Hub<User = unknown, State = unknown, Out = unknown> {
  send(sid: string, data: Out, options?: SendOptions): Promise<number>;
  broadcast(sids: readonly string[], data: Out): Promise<BroadcastResult>;
  /**
   * Send to every member of a group: written once, whatever the group's size;
   * each member gets it once, at its own next seq (README guarantee 12).
   * `sent` is the number of members; `failed` is always empty (a member too
   * far behind is closed with reason 'group-overrun' instead).
   */
  publish(group: string, data: Out): Promise<BroadcastResult>;
  close(sid: string, reason?: string): Promise<void>;
  join(sid: string, group: string): Promise<boolean>;
  leave(sid: string, group: string): Promise<void>;
  members(group: string): Promise<string[]>;
  /** A read-only view of sessions (null where unknown). */
  inspect(sids: readonly string[]): Promise<Array<SessionView<User, State> | null>>;
  /** Sessions not closed yet (open or closing) in the store, as the store's index counts them (see `Store.count`). */
  count(): Promise<number>;
  /**
   * One page of the sessions not closed yet, for an admin page: ids, status, user and state,
   * as `inspect` shows them. Pass the page's `cursor` to get the next; `null` ends the listing.
   * A session open for the whole listing is listed at least once (rarely twice). The ids are
   * bearer secrets: protect the page like an admin login, and never put an id in a URL.
   */
  sessions(options?: SessionListOptions): Promise<SessionPage<User, State>>;
}

export interface SessionListOptions {
  /** The previous page's `cursor`; absent: the first page. It holds no session id. */
  cursor?: string;
  /** About how many sessions a page holds (1 to 1 000). Default 100. */
  limit?: number;
}

export interface SessionPage<User = unknown, State = unknown> {
  /** Open and closing sessions (`status`), in no particular order. */
  sessions: Array<SessionView<User, State> & { id: string }>;
  /** For the next page; `null`: that was the last. */
  cursor: string | null;
}

const CLOSE_REASON_MAX = 256;
/** `hub.sessions()` page size: default, and the most one call may ask for. */
const LIST_DEFAULT = 100;
const LIST_MAX = 1_000;
/** Store pages one `hub.sessions()` call reads at most to fill its page (store pages may come short or empty). */
const LIST_ROUNDS = 10;
/** Default error logging: one line per kind of error per minute, and how many it left out. */
const LOG_INTERVAL_MS = 60_000;
/** Kinds remembered for that (bounded, whatever a client sends); past it new kinds share one. */
const LOG_KINDS_MAX = 100;
/** How often a waiting send() looks for room when the store cannot wake it. */
const SEND_POLL_MS = 250;

interface HeldLease {
  sid: string;
  token: string;
  /** When the store last extended it (taken, committed or renewed). */
  renewedAt: number;
  /** A renewal found it taken by someone else: stop delivering. */
  lost: boolean;
  /** Its place in `Engine.held` while held; -1 once released. */
  index: number;
}

export class Engine<User = unknown, State extends object = Record<string, unknown>, In = unknown, Out = unknown> implements Endpoints {
  readonly store: Store;
  readonly limits: Limits;
  /** Push and manage sessions by id; sessions' own calls go through it too (see makeHub). */
  readonly hub: Hub<User, State, Out>;
  private readonly wait: number;
  private readonly maxWait: number;
  private readonly idleTimeout: number;
  private readonly leaseMs: number;
  private readonly sendTimeout: number;
  private readonly openLimiter?: OpenLimiter;
  private readonly clientKey: Settings['clientKey'];
  private readonly watches: Watches;
  /** Default console logging, per kind of error: the first is logged, the rest counted per interval. */
  private readonly logged = new Map<string, { since: number; suppressed: number }>();
  private sweepTimer?: ReturnType<typeof setInterval>;
  private readonly sweepToken = newToken();
  /** Delivery leases held by this object's requests (an array with each lease's index: no hashing per delivery), and the one timer that renews them. */
  private readonly held: HeldLease[] = [];
  private leaseTimer?: ReturnType<typeof setInterval>;
  /** Deliveries running in this object, by session: their handlers' queued sends. */
  private readonly outboxes = new Map<string, Outbox>();
  /** Store writes to sessions and of publishes in progress here (see `inOrder`). */
  private readonly writing = { direct: new Set<Promise<unknown>>(), publish: new Set<Promise<unknown>>() };
  /** Debug logging and metrics (./observe): `obs.on` is false when nothing observes. */
  private readonly obs: Observer;
  /** Errors already reported with their own phase (a throwing onOpen): the 500 they become is not reported again. */
  private readonly reported = new WeakSet<object>();

  /** `settings`: `options` as `resolveOptions` checked them. */
  constructor(
    private readonly options: BidiOptions<User, State, In, Out>,
    settings: Settings,
  ) {
    this.obs = new Observer(options);
    this.store = this.obs.store(options.store ?? new MemoryStore());
    this.limits = settings.limits;
    this.wait = settings.wait;
    this.maxWait = settings.maxWait;
    this.idleTimeout = settings.idleTimeout;
    this.leaseMs = settings.leaseMs;
    this.sendTimeout = settings.sendTimeout;
    this.clientKey = settings.clientKey;
    if (settings.openLimit) this.openLimiter = options.openLimiter ?? this.store.openLimiter?.(settings.openLimit);
    this.watches = new Watches(this.store, settings, this.obs, (err, sid) => this.report(err, { phase: 'request', session: sessionLabel(sid) }));
    this.hub = this.makeHub();
    const interval = settings.sweepInterval;
    if (interval > 0) {
      this.sweepTimer = setInterval(() => void this.sweep().catch((err) => this.report(err, { phase: 'sweep' })), interval);
      (this.sweepTimer as { unref?: () => void }).unref?.();
    }
  }

  // --- sweep -------------------------------------------------------------------------

  /**
   * Expire idle sessions and finish closes interrupted by a crash. Safe to
   * call from any instance or a scheduled function: a store-wide lease makes
   * concurrent sweeps skip. Resolves with the number of sessions closed.
   */
  async sweep(): Promise<number> {
    let total = 0;
    let leased = false;
    try {
      for (let round = 0; round < 100; round++) {
        const result = await this.store.sweep({ lease: { token: this.sweepToken, ms: this.leaseMs }, limit: 100 });
        if (result.status === 'busy') break;
        leased = true;
        if (result.closing.length === 0) break;
        await Promise.all(
          result.closing.map((s) =>
            this.runClose(s.sid, this.sweepToken, s.reason, s.userJson, s.stateJson),
          ),
        );
        total += result.closing.length;
        if (result.closing.length < 100) break;
      }
    } finally {
      // Done: hand the store-wide lease back rather than let it run out, so the next sweep (another
      // instance, or the next serverless invocation with a fresh token) need not wait `leaseMs`.
      if (leased) await this.store.sweep({ lease: { token: this.sweepToken, ms: 0 }, limit: 0 }).catch((err) => this.report(err, { phase: 'sweep' }));
    }
    return total;
  }

  /** Stop this object's timers. Does not close sessions (they live in the store). */
  async dispose(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    // Deliveries still running keep their renewals; the timer stops by itself once they end.
    if (this.leaseTimer && this.held.length === 0) {
      clearInterval(this.leaseTimer);
      this.leaseTimer = undefined;
    }
  }

  // --- open --------------------------------------------------------------------

  async open(req: BidiRequest): Promise<BidiResponse> {
    if (this.openLimiter && this.clientKey) await this.admit(req, this.openLimiter, this.clientKey);
    const { meta } = parseOpen(await readJsonObject(req, this.limits), this.limits);
    const sid = newSessionId();
    const pending = new PendingSessionBackend(serialize);
    const session = ServerSession.opening<User, State, Out>(sid, pending);
    // A session object kept from onOpen outlives the hook: until the store has the session its calls wait, then go
    // to the store; if it never will, they reject (a send that resolves with a seq is always delivered).
    let created = false;
    try {
      if (this.options.onOpen) {
        try {
          await this.options.onOpen(session, { headers: req.headers, query: req.query, meta, raw: req.raw });
        } catch (err) {
          if (!(err instanceof BidiError)) this.report(err, { phase: 'open', ...this.errorWho(sid, session) });
          throw err;
        }
      }
      const { initial, groups } = pending.seal();
      const userJson = serialize(session.user ?? null);
      const stateJson = serialize(session.state ?? {});
      if (utf8Length(userJson) + utf8Length(stateJson) > this.limits.maxSessionDataBytes) {
        throw new BidiError('INTERNAL', 'session user and state exceed limits.maxSessionDataBytes');
      }
      const r = await this.store.create({
        sid,
        userJson,
        stateJson,
        initial,
        idleMs: this.idleTimeout,
        maxSessions: this.limits.maxSessions,
        token: newToken(),
      });
      if (r.status === 'too-many-sessions') {
        throw new BidiError('TOO_MANY_SESSIONS', 'the server holds its maximum number of sessions; retry later', { retryAfter: 5 });
      }
      if (r.status === 'exists') throw new BidiError('INTERNAL', 'session id collision');
      created = true;
      pending.created(this.hub);
      for (const group of groups) await this.store.join(sid, group);
    } finally {
      if (!created) pending.failed();
    }
    const body = JSON.stringify({
      sid,
      v: PROTOCOL_VERSION,
      wait: this.wait,
      limits: announcedLimits(this.limits, { maxWait: this.maxWait, idleTimeout: this.idleTimeout, leaseMs: this.leaseMs }),
    });
    return jsonResponse(201, body);
  }

  /** The open rate limit: one client key may not open more than its budget (see open-limit.ts). */
  private async admit(req: BidiRequest, limiter: OpenLimiter, clientKey: (request: BidiRequest) => string | null | undefined): Promise<void> {
    const key = clientKey(req);
    if (!key) return;
    let waitMs: number;
    try {
      waitMs = await limiter.take(key);
    } catch (err) {
      // The limiter's store failed: admit (the session's own store call decides, and fails the same way if it is down).
      this.report(err, { phase: 'open' });
      return;
    }
    if (waitMs > 0) {
      throw new BidiError('TOO_MANY_OPENS', 'this client opened too many sessions lately; retry later', { retryAfter: Math.ceil(waitMs / 1000) });
    }
  }

  // --- client → server -------------------------------------------------------------

  async receive(req: BidiRequest): Promise<BidiResponse> {
    const t0 = this.obs.on ? this.obs.now() : 0;
    const sid = readSessionId(req);
    if (this.options.authorize) await this.authorize(req, sid);
    const sent = parseSend(await readJsonObject(req, this.limits), this.limits);
    const ack = sent.ack;
    const token = newToken();
    const result = await this.store.receive(sid, {
      msgs: sent.msgs,
      ack,
      window: this.limits.inboundWindow,
      bufferBytes: this.limits.inboundBufferBytes,
      lease: { token, ms: this.leaseMs },
      maxDeliver: this.limits.maxMessagesPerRequest,
    });
    switch (result.status) {
      case 'unknown':
        throw unknownSession();
      case 'closed':
        throw new BidiError('SESSION_CLOSED', 'the session is closed');
      case 'invalid-ack':
        throw new BidiError('INVALID_ACK', `ack ${ack} is above the last server seq ${result.lastSeq}`);
      case 'out-of-window':
        throw new BidiError('SEQ_OUT_OF_WINDOW', `messages must stay within ${this.limits.inboundWindow} seqs and ${this.limits.inboundBufferBytes} buffered bytes of ack ${result.clientAck}`, { retryAfter: 1 });
    }
    let clientAck = result.clientAck;
    if (result.deliver.length > 0) {
      clientAck = await this.deliver(sid, token, result.deliver, result.userJson ?? 'null', result.stateJson ?? '{}', t0, sent);
    }
    return jsonResponse(200, '{"ack":' + clientAck + '}');
  }

  /**
   * Runs the handler over a deliverable run while holding the session's
   * lease, recording each delivery (and the state it left) before the next.
   * Returns the client ack reached.
   */
  private async deliver(
    sid: string,
    token: string,
    first: StoredMessage[],
    userJson: string,
    stateJson: string,
    t0 = 0,
    /** The request's own messages, parsed: their data is handed over as is instead of parsed again (see below). */
    sent?: SendBody,
  ): Promise<number> {
    // The session's own sends ride on each message's commit (see ./outbox).
    const outbox = new Outbox(
      (msgs, id) => this.inOrder('direct', () => this.store.append(sid, msgs, this.limits, id)),
      (err) => this.report(err, { phase: 'message', ...this.errorWho(sid, session) }),
    );
    const hub = this.hub;
    const backend: SessionBackend = {
      send: (_sid, data, opts) => this.sendFromHandler(sid, outbox, serialize(data), opts),
      close: hub.close,
      join: hub.join,
      leave: hub.leave,
    };
    const session = ServerSession.fromStored<User, State, Out>(sid, { userJson, stateJson }, backend);
    this.outboxes.set(sid, outbox);
    let savedState = stateJson;
    const lease = this.holdLease(sid, token);
    let clientAck = first[0]!.seq - 1;
    /** Where the next delivered seq is looked for in `sent` (both ascend). */
    let at = 0;
    try {
      let batch = first;
      while (batch.length > 0 && !lease.lost) {
        let next: StoredMessage[] = [];
        for (let i = 0; i < batch.length; i++) {
          const msg = batch[i]!;
          let threw = false;
          // The handler gets what the stored JSON parses to. When the store kept this request's own text for the
          // seq, the request's parsed data is that already (unless it holds -0 or an overflowing number).
          let data: unknown;
          if (sent) {
            const msgs = sent.msgs;
            while (at < msgs.length && msgs[at]!.seq < msg.seq) at++;
            if (at < msgs.length && msgs[at]!.seq === msg.seq && msgs[at]!.json === msg.json && reparsesSame(sent.values[at])) data = sent.values[at];
            else data = JSON.parse(msg.json);
          } else {
            data = JSON.parse(msg.json);
          }
          outbox.beginMessage(msg.seq);
          try {
            await this.options.onMessage?.(session, data as In, { seq: msg.seq });
          } catch (err) {
            // A throwing handler still consumes its message: redelivering it would loop forever.
            threw = true;
            this.report(err, { phase: 'message', seq: msg.seq, ...this.errorWho(sid, session) });
          }
          if (this.obs.on) this.obs.delivered(sid, msg.seq, t0, threw);
          const newState = this.stateToSave(session, savedState);
          const last = i === batch.length - 1;
          let sends = outbox.takeNow() ?? (await outbox.take());
          const input: CommitInput = {
            token,
            seq: msg.seq,
            stateJson: newState,
            leaseMs: this.leaseMs,
            next: last,
            maxDeliver: this.limits.maxMessagesPerRequest,
          };
          if (sends.length > 0) input.sends = { msgs: sends.map((q) => q.json), limits: this.limits };
          let r: CommitResult;
          try {
            // A commit that stores sends is a write to the session like an append (see inOrder).
            r = await (input.sends ? this.inOrder('direct', () => this.store.commit(sid, input)) : this.store.commit(sid, input));
            if (r.status === 'pull') {
              // A group member: its sends go after the groups' entries, by append, before the record.
              await outbox.appendNow(sends);
              sends = [];
              delete input.sends;
              r = await this.store.commit(sid, input);
            }
          } catch (err) {
            outbox.fail(sends, err);
            throw err;
          }
          lease.renewedAt = Date.now();
          if (r.status === 'lost' || r.status === 'pull') {
            outbox.fail(sends, leaseLost());
            return clientAck;
          }
          outbox.settle(sends, r.sent);
          if (newState !== undefined) savedState = newState;
          clientAck = r.clientAck;
          if (r.status === 'closing') {
            this.releaseLease(lease);
            const ending = this.endOutbox(sid, outbox);
            if (ending) await ending;
            await this.runClose(sid, token, r.reason, r.userJson, r.stateJson, session);
            return clientAck;
          }
          if (last) next = r.deliver;
        }
        batch = next;
      }
      return clientAck;
    } finally {
      this.releaseLease(lease);
      const ending = this.endOutbox(sid, outbox);
      if (ending) await ending;
    }
  }

  /**
   * The delivery is over: what its handler still queued is stored now, and later sends go straight to the store.
   * Undefined when nothing was left to store (no promise to wait for, the usual case).
   */
  private endOutbox(sid: string, outbox: Outbox): Promise<void> | undefined {
    if (this.outboxes.get(sid) === outbox) this.outboxes.delete(sid);
    return outbox.close();
  }

  /** `session.send()` from the session being delivered to: queued for the commit unless it must wait for room. */
  private sendFromHandler(sid: string, outbox: Outbox, json: string, options: SendOptions | undefined): Promise<number> {
    const whenFull = options?.whenFull ?? this.options.whenFull ?? 'reject';
    if (!outbox.open || whenFull === 'wait' || this.tooLarge(json)) return this.sendJson(sid, json, options, outbox.idForDirectSend());
    return outbox.add(json);
  }

  /** A fan-out is about to go out: every running delivery's queued sends go first (cheap: only deliveries in progress here). */
  private async flushOutboxes(): Promise<void> {
    for (const outbox of [...this.outboxes.values()]) await outbox.flush();
  }

  /**
   * Runs a store write to sessions (`direct`: an append, a commit that carries sends, a broadcast, a close)
   * or of a publish, after every write of the other kind that this object started before it has
   * settled; writes of one kind start at once. Needed for call order (README guarantee 2)
   * between the two: a write to a group member first pulls the group's entries, and a store may
   * do that in a second step (RedisStore: read the group's log, then append or close), which a
   * publish called later could otherwise overtake, and whose pull could take in a publish that
   * came after it. Costs nothing while the calls are all of one kind (a publish loop, a broadcast
   * loop).
   */
  private inOrder<T>(kind: 'direct' | 'publish', write: () => Promise<T>): Promise<T> {
    const other = this.writing[kind === 'direct' ? 'publish' : 'direct'];
    const p = other.size === 0 ? write() : Promise.allSettled([...other]).then(write);
    const mine = this.writing[kind];
    mine.add(p);
    const done = (): void => void mine.delete(p);
    p.then(done, done);
    return p;
  }

  /** Another path is about to append to `sid`: a delivery's queued sends go first, so this process's sends keep their order. */
  private async flushOutbox(sid: string): Promise<void> {
    const outbox = this.outboxes.get(sid);
    if (outbox) await outbox.flush();
  }

  /**
   * Keeps a delivery lease renewed (every `leaseMs / 3`) while its handlers
   * run. One timer per server object serves every delivery in progress,
   * instead of one timer per request.
   */
  private holdLease(sid: string, token: string): HeldLease {
    const lease: HeldLease = { sid, token, renewedAt: Date.now(), lost: false, index: this.held.length };
    this.held.push(lease);
    if (!this.leaseTimer) {
      const every = Math.max(50, Math.floor(this.leaseMs / 3));
      this.leaseTimer = setInterval(() => this.renewLeases(every), Math.max(25, Math.floor(every / 2)));
      (this.leaseTimer as { unref?: () => void }).unref?.();
    }
    return lease;
  }

  private releaseLease(lease: HeldLease): void {
    const i = lease.index;
    if (i < 0) return;
    lease.index = -1;
    // The last lease takes its place.
    const moved = this.held.pop()!;
    if (moved !== lease) {
      this.held[i] = moved;
      moved.index = i;
    }
  }

  private renewLeases(every: number): void {
    if (this.held.length === 0) {
      clearInterval(this.leaseTimer);
      this.leaseTimer = undefined;
      return;
    }
    const now = Date.now();
    for (const lease of this.held) {
      if (now - lease.renewedAt < every) continue;
      lease.renewedAt = now;
      this.store.renewLease(lease.sid, lease.token, this.leaseMs).then(
        (ok) => (lease.lost ||= !ok),
        (err) => this.report(err, { phase: 'message', session: sessionLabel(lease.sid) }),
      );
    }
  }

  private stateToSave(session: ServerSession<User, State, Out>, saved: string): string | undefined {
    if (session.stateUntouched) return undefined; // never read or set: unchanged
    let json: string;
    try {
      json = serialize(session.state ?? {});
    } catch (err) {
      this.report(err, { phase: 'state', ...this.errorWho(session.id, session) });
      return undefined;
    }
    if (json === saved) return undefined;
    if (utf8Length(json) > this.limits.maxSessionDataBytes) {
      this.report(new BidiError('INTERNAL', 'session.state exceeds limits.maxSessionDataBytes; not saved'), { phase: 'state', ...this.errorWho(session.id, session) });
      return undefined;
    }
    return json;
  }

  /** A server message as JSON, within `limits.maxMessageBytes` (every send, broadcast and publish goes through here). */
  private outgoing(data: unknown): string {
    return this.checkSize(serialize(data));
  }

  /** Over `maxMessageBytes`. A UTF-16 length of at most a third of it cannot be: count bytes only when it might. */
  private tooLarge(json: string): boolean {
    const max = this.limits.maxMessageBytes;
    return json.length * 3 > max && utf8Length(json) > max;
  }

  private checkSize(json: string): string {
    if (this.tooLarge(json)) {
      throw new BidiError('MESSAGE_TOO_LARGE', `message exceeds limits.maxMessageBytes (${this.limits.maxMessageBytes})`);
    }
    return json;
  }

  /** `appendId`: a handler's send while its message is delivered (see Outbox.idForDirectSend); else a fresh one. */
  private async sendJson(sid: string, json: string, options?: SendOptions, appendId = newAppendId()): Promise<number> {
    this.checkSize(json);
    await this.flushOutbox(sid);
    const whenFull = options?.whenFull ?? this.options.whenFull ?? 'reject';
    const deadline = Date.now() + this.sendTimeout;
    // One id for every attempt of this send: a store client that resends the append makes no second copy.
    for (;;) {
      // Subscribe first so an ack between a 'full' answer and the wait still wakes us.
      let acked = false;
      let wake: (() => void) | undefined;
      let unsubscribe: Unsubscribe | undefined;
      let subscribed = whenFull !== 'wait';
      if (whenFull === 'wait') {
        try {
          unsubscribe = await this.store.subscribe(sid, (e) => {
            if (e.type === 'ack' || e.type === 'close') {
              acked = true;
              wake?.();
            }
          });
          subscribed = true;
        } catch (err) {
          // No wake-ups to be had right now: poll for room instead of sleeping through it.
          if (!(err instanceof BidiError && err.code === 'STORE_UNAVAILABLE')) throw err;
        }
      }
      try {
        const r = await this.inOrder('direct', () => this.store.append(sid, [json], this.limits, appendId));
        if (r.status !== 'full' || whenFull === 'reject') return appendSeq(r);
        const left = deadline - Date.now();
        if (left <= 0) throw new BidiError('SEND_TIMEOUT', `the client did not make room within ${this.sendTimeout} ms`);
        if (!acked) {
          const waiter = wakeable(subscribed ? left : Math.min(left, SEND_POLL_MS));
          wake = waiter.wake;
          await waiter.done;
        }
      } finally {
        unsubscribe?.();
      }
    }
  }

  // --- server → client: watches (./watch) -----------------------------------------------

  async watch(req: BidiRequest): Promise<BidiResponse> {
    const sid = readSessionId(req);
    if (this.options.authorize) await this.authorize(req, sid);
    return this.watches.serve(req, sid);
  }

  // --- close ---------------------------------------------------------------------

  async clientClose(req: BidiRequest): Promise<BidiResponse> {
    const sid = readSessionId(req);
    await this.authorize(req, sid);
    await this.closeSession(sid, 'client', true);
    return jsonResponse(200, '{"closed":true}');
  }

  /** Move to closing; if this call gets the lease, run onClose now, else the lease holder or a sweep will. */
  private async closeSession(sid: string, reason: string, fromClient = false): Promise<void> {
    // The close marker must follow every message sent before it.
    await this.flushOutbox(sid);
    const token = newToken();
    const r = await this.inOrder('direct', () => this.store.close(sid, { reason: reason.slice(0, CLOSE_REASON_MAX), lease: { token, ms: this.leaseMs } }));
    if (r.status === 'unknown') {
      if (fromClient) throw unknownSession();
      throw new BidiError('UNKNOWN_SESSION', 'no such session');
    }
    if (r.leased) await this.runClose(sid, token, r.reason, r.userJson, r.stateJson);
  }

  private async runClose(
    sid: string,
    token: string,
    reason: string,
    userJson: string,
    stateJson: string,
    session?: ServerSession<User, State, Out>,
  ): Promise<void> {
    const s = session ?? ServerSession.fromStored<User, State, Out>(sid, { userJson, stateJson }, this.hub);
    try {
      await this.options.onClose?.(s, reason);
    } catch (err) {
      this.report(err, { phase: 'close', ...this.errorWho(sid, s) });
    }
    await this.store.finishClose(sid, token);
  }

  // --- hub -------------------------------------------------------------------------

  /**
   * The one implementation of the calls on sessions by id. Sessions call it
   * (a delivery's own sends go to its outbox instead), and so does Nest's
   * BidiWebService, which takes its functions off the object: they are arrow
   * functions, needing no `this`.
   */
  private makeHub(): Hub<User, State, Out> {
    const toResult = (sids: readonly string[], results: AppendResult[]): BroadcastResult => {
      const out: BroadcastResult = { sent: 0, failed: [] };
      results.forEach((r, i) => {
        if (r.status === 'ok') out.sent++;
        else out.failed.push({ sid: sids[i]!, code: r.status === 'unknown' ? 'UNKNOWN_SESSION' : r.status === 'closed' ? 'SESSION_CLOSED' : 'SEND_WINDOW_FULL' });
      });
      return out;
    };
    const broadcast = async (sids: readonly string[], data: unknown): Promise<BroadcastResult> => {
      const json = this.outgoing(data);
      if (sids.length === 0) return { sent: 0, failed: [] };
      await this.flushOutboxes();
      return toResult(sids, await this.inOrder('direct', () => this.store.appendMany([...sids], json, this.limits, newAppendId())));
    };
    return {
      send: (sid, data, options) => this.sendJson(sid, serialize(data), options),
      broadcast,
      publish: async (group, data) => {
        const json = this.outgoing(data);
        await this.flushOutboxes();
        // Written once to the group's log; members pull it into their own logs (docs/STORE.md, "Groups").
        const retention = { maxEntries: this.limits.groupLogEntries, maxAgeMs: this.limits.groupLogMs };
        const r = await this.inOrder('publish', () => this.store.publish(group, json, retention, newAppendId()));
        return { sent: r.members, failed: [] };
      },
      close: (sid, reason = 'server') => this.closeSession(sid, reason),
      join: (sid, group) => this.store.join(sid, group),
      leave: (sid, group) => this.store.leave(sid, group),
      members: (group) => this.store.members(group),
      inspect: async (sids) =>
        (await this.store.inspect([...sids])).map((info) =>
          info ? { status: info.status, user: JSON.parse(info.userJson), state: JSON.parse(info.stateJson) } : null,
        ),
      count: () => this.store.count(),
      sessions: (options) => this.listSessions(options),
    };
  }

  private async listSessions(options: SessionListOptions = {}): Promise<SessionPage<User, State>> {
    const limit = options.limit ?? LIST_DEFAULT;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > LIST_MAX) {
      throw new BidiError('BAD_REQUEST', `limit must be an integer from 1 to ${LIST_MAX}, got ${String(limit)}`);
    }
    if (options.cursor !== undefined && typeof options.cursor !== 'string') throw new BidiError('BAD_REQUEST', 'cursor must be a string');
    const page: SessionPage<User, State> = { sessions: [], cursor: options.cursor ?? null };
    const seen = new Set<string>();
    for (let round = 0; round < LIST_ROUNDS && page.sessions.length < limit; round++) {
      const r = await this.store.list({ ...(page.cursor !== null ? { cursor: page.cursor } : {}), limit: limit - page.sessions.length });
      page.cursor = r.cursor;
      const sids = r.sids.filter((sid) => !seen.has(sid) && seen.add(sid));
      const infos = sids.length > 0 ? await this.store.inspect(sids) : [];
      infos.forEach((info, i) => {
        // The index may still hold a session that has just closed, or whose keys expired unswept.
        if (info && info.status !== 'closed') {
          page.sessions.push({ id: sids[i]!, status: info.status, user: JSON.parse(info.userJson), state: JSON.parse(info.stateJson) });
        }
      });
      if (r.cursor === null) break;
    }
    return page;
  }

  // --- errors ------------------------------------------------------------------------

  /** A request failed with a 5xx (see `Endpoints.failed`): reported unless it was already, with its own phase. */
  failed(err: unknown, sid: string | undefined): void {
    if (typeof err === 'object' && err !== null && this.reported.has(err)) return;
    this.report(err, sid !== undefined ? { phase: 'request', session: sessionLabel(sid) } : { phase: 'request' });
  }

  /** Most likely the app's own page on a host it did not list: the default reporter tells the operator (once per interval). */
  hostRefused(host: string): void {
    if (!this.options.onError) {
      this.logLimited('request', `refused a request for Host ${JSON.stringify(host)}: it is not in allowedHosts (set allowedHosts to your site's host names; see docs/SECURITY.md)`, 'warning');
    }
  }

  private async authorize(req: BidiRequest, sessionId: string): Promise<void> {
    if (!this.options.authorize) return;
    try {
      await this.options.authorize({ headers: req.headers, query: req.query, sessionId, raw: req.raw });
    } catch (err) {
      if (err instanceof BidiError) throw err;
      this.report(err, { phase: 'request', session: sessionLabel(sessionId) });
      throw new BidiError('FORBIDDEN', 'request refused');
    }
  }

  /** `onError`'s context for one session: its label, and its user when the session object has one. */
  private errorWho(sid: string, session?: ServerSession<User, State, Out>): { session: string; user?: User } {
    const who: { session: string; user?: User } = { session: sessionLabel(sid) };
    try {
      const user = session?.user;
      if (user !== undefined && user !== null) who.user = user;
    } catch {
      // user JSON that does not parse: the label alone
    }
    return who;
  }

  private report(error: unknown, context: ErrorContext<User>): void {
    if (typeof error === 'object' && error !== null) this.reported.add(error);
    if (this.options.onError) {
      try {
        this.options.onError(error, context);
      } catch {
        // an error reporter that throws must not take a request down
      }
      return;
    }
    // The stack only: errors from store clients carry their command's arguments
    // (session keys, so session ids) as properties, and sids are never logged.
    this.logLimited(context.phase, error instanceof Error ? (error.stack ?? error.message) : String(error), 'error');
  }

  /**
   * The default log. A client that can cause an error must not flood it: the first of a kind (phase
   * and first line) per interval is logged, with how many were left out since the last one.
   */
  private logLimited(phase: ErrorPhase, text: string, level: 'error' | 'warning'): void {
    let kind = phase + ':' + text.slice(0, Math.min(200, (text + '\n').indexOf('\n')));
    const now = Date.now();
    if (!this.logged.has(kind) && this.logged.size >= LOG_KINDS_MAX) {
      for (const [k, v] of this.logged) if (now - v.since >= LOG_INTERVAL_MS && v.suppressed === 0) this.logged.delete(k);
      // Still full: many kinds at once (a client varying its input); they share one line.
      if (this.logged.size >= LOG_KINDS_MAX) kind = 'other';
    }
    const seen = this.logged.get(kind);
    if (seen && now - seen.since < LOG_INTERVAL_MS) {
      seen.suppressed++;
      return;
    }
    const suppressed = seen?.suppressed ?? 0;
    this.logged.set(kind, { since: now, suppressed: 0 });
    const more = suppressed > 0 ? ` (and ${suppressed} more like it in the last ${Math.round((now - seen!.since) / 1000)} s, not logged)` : '';
    console.error(`[bidiweb] ${phase} ${level}${more}: ${text}`);
  }
}

function appendSeq(r: AppendResult): number {
  switch (r.status) {
    case 'ok':
      return r.lastSeq;
    case 'unknown':
      throw new BidiError('UNKNOWN_SESSION', 'no such session');
    case 'closed':
      throw new BidiError('SESSION_CLOSED', 'the session is closed');
    case 'full':
      throw new BidiError('SEND_WINDOW_FULL', 'the session has too many unacked messages; the client is not keeping up');
  }
}

/** A wait that ends at `ms`, on abort, or when `wake()` is called, leaving no timer or listener behind. */
function wakeable(ms: number, signal?: AbortSignal): { done: Promise<void>; wake: () => void } {
  let wake!: () => void;
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(finish, ms);
    signal?.addEventListener('abort', finish, { once: true });
    function finish() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', finish);
      resolve();
    }
    wake = finish;
  });
  return { done, wake };
}

function serialize(data: unknown): string {
  const json = JSON.stringify(data);
  if (json === undefined) throw new TypeError('bidiweb: a message must be JSON-serialisable');
  return json;
}
