/**
 * The store's wake-up subscriptions: one pub/sub connection per RedisStore,
 * shared by every listener (watch) of every session and group channel. The
 * scripts publish one-letter events on a session's channel (see
 * includes/session.lua, `notify`); this file turns them into StoreEvents.
 */
import type { Cluster, Redis } from 'ioredis';
import { BidiError } from '../core/errors';
import type { AppendedRun, StoreEvent, Unsubscribe } from '../core/store';

export type Listener = (event: StoreEvent) => void;

/** What a group's wake-up says about an entry its publish wrote (publish-3.lua): `json` when it carries it. */
export interface GroupEntryNews {
  epoch: string;
  gseq: number;
  /** Publish time, µs (orders entries of different groups). */
  t: number;
  json?: string;
}

/** More than a publish batch ever announces (128): such a wake-up is malformed. */
const MAX_WAKE_ENTRIES = 4096;

/**
 * 'g<epoch> <gseq> <time µs>[ <count>][\n<json>[\n<json>...]]': `count` consecutive entries (1 when
 * absent) from `gseq`, with their texts or none; null when malformed (the wake-up still wakes).
 */
export function decodeGroupWake(payload: string): GroupEntryNews[] | null {
  const nl = payload.indexOf('\n');
  const head = (nl < 0 ? payload.slice(1) : payload.slice(1, nl)).split(' ');
  if (head.length !== 3 && head.length !== 4) return null;
  const gseq = Number(head[1]);
  const t = Number(head[2]);
  const count = head.length === 4 ? Number(head[3]) : 1;
  if (!head[0] || !Number.isSafeInteger(gseq) || gseq < 1 || !Number.isSafeInteger(t) || !Number.isSafeInteger(count) || count < 1 || count > MAX_WAKE_ENTRIES) return null;
  const texts = nl >= 0 ? payload.slice(nl + 1).split('\n') : undefined;
  if (texts && texts.length !== count) return null;
  const out: GroupEntryNews[] = [];
  for (let i = 0; i < count; i++) {
    const news: GroupEntryNews = { epoch: head[0], gseq: gseq + i, t };
    if (texts) news.json = texts[i];
    out.push(news);
  }
  return out;
}

/** Longest add() waits for Redis to confirm the subscription. */
const SUBSCRIBE_TIMEOUT_MS = 2_000;

const MESSAGE: StoreEvent = Object.freeze({ type: 'message' });

/** The event a payload stands for; null for none, or for a run of messages at or below `runsUpTo` (see ChannelState). */
function decodeEvent(payload: string, runsUpTo: number): StoreEvent | null {
  switch (payload) {
    case 'm':
      return MESSAGE;
    case 'c':
      return { type: 'close' };
    case 'a':
      return { type: 'ack' };
    default:
      if (payload.startsWith('w:')) return { type: 'watch', token: payload.slice(2) };
      return payload.charCodeAt(0) === 109 /* m */ ? decodeRun(payload, runsUpTo) : null;
  }
}

/**
 * 'm<first seq> <client ack>\n<json>\n<json>...' (includes/session.lua, `notifyMessages`): a
 * message wake-up with its messages. Anything else that starts with 'm' is a bare wake-up (a
 * watch then reads), never a run it could get wrong.
 */
function decodeRun(payload: string, runsUpTo: number): StoreEvent | null {
  const nl = payload.indexOf('\n');
  const sp = payload.indexOf(' ');
  if (nl < 0 || sp < 0 || sp > nl) return MESSAGE;
  const first = Number(payload.slice(1, sp));
  const clientAck = Number(payload.slice(sp + 1, nl));
  if (!Number.isSafeInteger(first) || first < 1 || !Number.isSafeInteger(clientAck) || clientAck < 0) return MESSAGE;
  // Runs are disjoint seq ranges: one that starts at or below runsUpTo lies wholly below it (no split needed to tell).
  if (first <= runsUpTo) return null;
  const msgs = payload
    .slice(nl + 1)
    .split('\n')
    .map((json, i) => ({ seq: first + i, json }));
  return { type: 'message', run: { msgs, clientAck } };
}

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

interface ChannelState {
  listeners: Set<Listener>;
  /**
   * The connection epoch in which Redis confirmed our subscription, or 0.
   * In effect only while that epoch is the current one and the connection is
   * ready: a reconnect makes every confirmation stale until it is renewed.
   */
  confirmed: number;
  /** Redis may hold a subscription of ours to this channel (confirmed in some epoch, not since left). */
  held: boolean;
  /** A (S)SUBSCRIBE or (S)UNSUBSCRIBE for the channel is in flight. */
  busy: boolean;
  /** The subscription was in effect on a connection that dropped: wake the listeners once it is renewed. */
  lost: boolean;
  /** add() calls waiting for the subscription to be in effect. */
  waiters: Waiter[];
  /**
   * The token of the last watch of the channel's session that claimed it while listening here
   * (noteClaim); dropped when the channel's last listener leaves. Whether it is still the
   * session's current watch, only the record says (commit-2 compares).
   */
  claim?: string;
  retry?: ReturnType<typeof setTimeout>;
  /** No listener since then, still subscribed (see `subscriptionLingerMs`). */
  idleSince?: number;
  /** The linger ran out: unsubscribe (unless a listener came back). */
  expired?: boolean;
  /**
   * The highest seq of the messages a wake-up handed to the listeners (a published one or
   * `wakeLocal`'s). A later wake-up whose messages all lie at or below it is dropped: it is the
   * other copy of the same messages, or older ones, which every listener has had or read (each
   * message is stored before any wake-up for a later seq is sent, and a watch reads on a gap).
   */
  runsUpTo?: number;
  /** A group wake-up is waiting for the end of the turn (see onMessage). */
  groupWake?: boolean;
  /**
   * Which unbroken run of hearing the channel is in (see heardRun): a new number whenever
   * wake-ups may have gone unheard since, which is when the subscriber reconnects, when the
   * channel's last listener leaves (a wake-up that comes with nobody listening is not looked at),
   * when it is unsubscribed, and when a group wake-up on it cannot be read.
   */
  heard: number;
}

/**
 * One pub/sub connection per store, shared by every listener: a channel is
 * subscribed when its first listener arrives and left when its last one
 * goes (one command in flight per channel at a time, so a listener added
 * while an unsubscribe is in flight re-subscribes once it completes).
 *
 * `add` resolves only once the subscription is in effect — Redis answered
 * the (S)SUBSCRIBE on the connection as it is now — so an operation started
 * after that observes the store after the subscription, and no wake-up can
 * fall between the two (core subscribes, then reads). When that cannot be
 * had within SUBSCRIBE_TIMEOUT_MS, `add` rejects (`STORE_UNAVAILABLE`): a
 * watch is never left waiting on a subscription nobody confirmed.
 *
 * Commands go out only on a ready connection. ioredis writes a SUBSCRIBE
 * issued while its socket is still in its handshake straight away; the
 * reply switches the connection to subscriber mode, its ready check (INFO)
 * is then refused, and the connection is torn down with the commands queued
 * on it. Waiting for `ready` keeps us out of that window; each `ready` starts
 * a new epoch in which every wanted channel is subscribed again (ioredis'
 * own auto-resubscribe is not relied on) and its listeners are woken, since
 * events published while the connection was down are lost.
 */
export class Subscriptions {
  private readonly channels = new Map<string, ChannelState>();
  private conn?: Redis | Cluster;
  private readonly owned: boolean;
  /** Bumped at every `ready` of the connection; confirmations of older epochs are stale. */
  private epoch = 0;
  /** The last `heard` number given to a channel: they never repeat. */
  private heardRuns = 0;
  private closed = false;
  private lingerTimer?: ReturnType<typeof setInterval>;

  constructor(
    private readonly sharded: boolean,
    private readonly lingerMs: number,
    given: Redis | Cluster | undefined,
    private readonly make: () => Redis | Cluster,
    /** Told of each group entry a group channel's wake-up names, before its listeners are woken. */
    private readonly onGroupEntry?: (channel: string, news: GroupEntryNews) => void,
  ) {
    this.conn = given;
    this.owned = !given;
    if (given) {
      if (given.status === 'ready') this.epoch = 1;
      this.attach(given);
    }
  }

  async add(channel: string, listener: Listener): Promise<Unsubscribe> {
    if (this.closed) throw unavailable('the store was disposed');
    let ch = this.channels.get(channel);
    if (!ch) this.channels.set(channel, (ch = { listeners: new Set(), confirmed: 0, held: false, busy: false, lost: false, waiters: [], heard: ++this.heardRuns }));
    // A listener is a registration: the same function added twice needs two unsubscribes.
    const entry: Listener = (event) => listener(event);
    ch.listeners.add(entry);
    let done = false;
    const unsubscribe = () => {
      if (done) return;
      done = true;
      const current = this.channels.get(channel);
      if (!current || !current.listeners.delete(entry)) return;
      if (current.listeners.size === 0) {
        current.heard = ++this.heardRuns;
        current.claim = undefined;
      }
      this.sync(channel);
    };
    this.sync(channel);
    if (!this.inEffect(ch)) {
      try {
        await this.whenInEffect(ch);
      } catch (err) {
        unsubscribe();
        throw err;
      }
    }
    return unsubscribe;
  }

  /**
   * The channel's unbroken run of hearing: while it stays the same number, every wake-up Redis
   * sent on the channel since it began reached this instance's listeners (and `onGroupEntry`),
   * in order. 0 for a channel not listened to.
   */
  heardRun(channel: string): number {
    return this.channels.get(channel)?.heard ?? 0;
  }

  /** A watch listening here claimed the channel's session (`token`): see ChannelState.claim. */
  noteClaim(channel: string, token: string): void {
    const ch = this.channels.get(channel);
    if (ch && ch.listeners.size > 0) ch.claim = token;
  }

  /** The token of a watch that claimed the channel's session while listening here, if someone here still listens (the claim goes with the last listener). */
  claimHere(channel: string): string | undefined {
    return this.channels.get(channel)?.claim;
  }

  /** Listeners on the channel now (a lingering subscription has none). */
  listenerCount(channel: string): number {
    return this.channels.get(channel)?.listeners.size ?? 0;
  }

  /**
   * Hands messages this instance has just stored to the channel's listeners here, before Redis
   * delivers the published copy, which is then dropped (it would only repeat them).
   */
  wakeLocal(channel: string, run: AppendedRun): void {
    const ch = this.channels.get(channel);
    if (ch && ch.listeners.size > 0) deliverRun(ch, run, { type: 'message', run });
  }

  /** Wakes the channel's listeners here as if `event` had been published on it (a group's publish wakes its members' watches). */
  wake(channel: string, event: StoreEvent): void {
    const ch = this.channels.get(channel);
    if (ch && ch.listeners.size > 0) deliver(ch, event);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.lingerTimer) clearInterval(this.lingerTimer);
    this.lingerTimer = undefined;
    const conn = this.conn;
    const mine = [...this.channels.entries()].filter(([, ch]) => ch.held).map(([name]) => name);
    for (const ch of this.channels.values()) {
      if (ch.retry) clearTimeout(ch.retry);
      ch.listeners.clear();
      fail(ch, unavailable('the store was disposed'));
    }
    this.channels.clear();
    if (!conn) return;
    conn.removeListener('message', this.onMessage);
    conn.removeListener('smessage', this.onMessage);
    conn.removeListener('ready', this.onReady);
    if (this.owned) {
      // QUIT needs a reachable server; past a second, drop the socket.
      const ended = conn.status === 'end' ? Promise.resolve() : new Promise<void>((resolve) => conn.once('end', () => resolve()));
      void conn.quit().catch(() => {});
      await Promise.race([ended, delay(1_000)]);
      if (conn.status !== 'end') conn.disconnect();
    } else if (mine.length > 0 && conn.status === 'ready') {
      // A connection lent to us: leave our channels, keep the rest.
      await Promise.race([(this.sharded ? Promise.all(mine.map((c) => conn.sunsubscribe(c))) : conn.unsubscribe(...mine)).catch(() => {}), delay(1_000)]);
    }
  }

  /** Subscribed on the connection as it is now, with no UNSUBSCRIBE on its way. */
  private inEffect(ch: ChannelState): boolean {
    return !ch.busy && ch.confirmed !== 0 && ch.confirmed === this.epoch && this.conn?.status === 'ready';
  }

  /** Resolves when the channel's subscription is in effect; rejects after SUBSCRIBE_TIMEOUT_MS (the subscription keeps being retried for later listeners). */
  private whenInEffect(ch: ChannelState): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        const i = ch.waiters.indexOf(waiter);
        if (i >= 0) ch.waiters.splice(i, 1);
        reject(unavailable(`Redis did not confirm the subscription within ${SUBSCRIBE_TIMEOUT_MS} ms`));
      }, SUBSCRIBE_TIMEOUT_MS);
      (timer as { unref?: () => void }).unref?.();
      ch.waiters.push(waiter);
    });
  }

  /** One timer, while channels linger: unsubscribes those whose linger ran out. */
  private lingering(): void {
    if (this.lingerTimer || this.closed) return;
    this.lingerTimer = setInterval(() => {
      const now = Date.now();
      let left = 0;
      for (const [name, ch] of this.channels) {
        if (ch.idleSince === undefined || ch.listeners.size > 0) continue;
        if (now - ch.idleSince < this.lingerMs) {
          left++;
          continue;
        }
        ch.idleSince = undefined;
        ch.expired = true;
        this.sync(name);
      }
      if (left === 0 && this.lingerTimer) {
        clearInterval(this.lingerTimer);
        this.lingerTimer = undefined;
      }
    }, Math.max(100, Math.floor(this.lingerMs / 2)));
    (this.lingerTimer as { unref?: () => void }).unref?.();
  }

  private connection(): Redis | Cluster {
    if (!this.conn) {
      this.conn = this.make();
      // Connection errors surface as subscriptions not confirmed in time; ioredis reconnects by itself.
      this.conn.on('error', () => {});
      this.attach(this.conn);
    }
    // A duplicate of a lazyConnect connection (or a lent one) may not have started connecting.
    if (this.conn.status === 'wait') this.conn.connect().catch(() => {});
    return this.conn;
  }

  private attach(conn: Redis | Cluster): void {
    conn.on(this.sharded ? 'smessage' : 'message', this.onMessage);
    conn.on('ready', this.onReady);
  }

  private readonly onMessage = (channel: string, payload: string): void => {
    const ch = this.channels.get(channel);
    if (!ch || ch.listeners.size === 0) return;
    const text = String(payload);
    if (text.charCodeAt(0) === 103 /* g */) {
      // A group's publish: remember what it wrote, then wake (the listeners are its members' watches).
      // The wake-ups of a run of publishes arrive together (one socket read): members are woken
      // once for all of them, at the end of the turn, when every entry is remembered.
      const news = decodeGroupWake(text);
      if (news) for (const entry of news) this.onGroupEntry?.(channel, entry);
      // One it cannot read names entries nobody here learns of: as good as unheard.
      else ch.heard = ++this.heardRuns;
      if (!ch.groupWake) {
        ch.groupWake = true;
        queueMicrotask(() => {
          ch.groupWake = false;
          if (ch.listeners.size > 0) deliver(ch, MESSAGE);
        });
      }
      return;
    }
    const event = decodeEvent(text, ch.runsUpTo ?? 0);
    if (!event) return;
    if (event.type === 'message' && event.run) deliverRun(ch, event.run, event);
    else deliver(ch, event);
  };

  /** A new connection epoch: renew every subscription we want, leave the ones Redis may still hold for us. */
  private readonly onReady = (): void => {
    this.epoch++;
    for (const [name, ch] of this.channels) {
      // Whatever was published while the connection was down went unheard.
      ch.heard = ++this.heardRuns;
      if (ch.confirmed !== 0) ch.lost = true;
      if (ch.retry) {
        clearTimeout(ch.retry);
        ch.retry = undefined;
      }
      this.sync(name);
    }
  };

  private sync(channel: string): void {
    const ch = this.channels.get(channel);
    if (!ch || ch.busy || this.closed) return;
    const want = ch.listeners.size > 0;
    if (want) {
      ch.idleSince = undefined;
      ch.expired = false;
      if (this.inEffect(ch)) {
        settle(ch);
        return;
      }
    } else {
      if (ch.held && this.lingerMs > 0 && !ch.expired) {
        // Stay subscribed for a while: the session's next watch on this instance needs no SUBSCRIBE.
        ch.idleSince ??= Date.now();
        this.lingering();
        return;
      }
      if (!ch.held) {
        this.channels.delete(channel);
        return;
      }
    }
    const conn = this.connection();
    // Not ready: the next `ready` syncs every channel (and a waiter times out if it never comes).
    if (conn.status !== 'ready') return;
    ch.busy = true;
    const epoch = this.epoch;
    const op: Promise<unknown> = want
      ? this.sharded
        ? conn.ssubscribe(channel)
        : conn.subscribe(channel)
      : this.sharded
        ? conn.sunsubscribe(channel)
        : conn.unsubscribe(channel);
    op.then(
      () => {
        ch.busy = false;
        // Unsubscribed, the channel went unheard from some moment up to now (what was heard while the
        // command was on its way included): a listener added meanwhile starts a new run.
        if (!want) ch.heard = ++this.heardRuns;
        // Redis may hold a subscription whatever the epoch (ioredis resends and resubscribes after a
        // reconnect), so count it; but only a reply of this epoch confirms anything about the
        // connection now — otherwise sync() sends the command again.
        if (want) ch.held = true;
        if (epoch === this.epoch) {
          if (!want) ch.held = false;
          ch.confirmed = want ? epoch : 0;
          if (want && ch.lost) {
            ch.lost = false;
            // Events published while the connection was down are gone: let watches read again.
            deliver(ch, { type: 'message' });
          }
        }
        this.sync(channel);
      },
      () => {
        ch.busy = false;
        if (this.closed || ch.retry) return;
        // Waiters keep waiting (until their timeout); try again shortly.
        ch.retry = setTimeout(() => {
          ch.retry = undefined;
          this.sync(channel);
        }, 250);
        (ch.retry as { unref?: () => void }).unref?.();
      },
    );
  }
}

function unavailable(why: string): BidiError {
  return new BidiError('STORE_UNAVAILABLE', `bidiweb/redis: ${why}; the watch should be retried`, { retryAfter: 1 });
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => (setTimeout(resolve, ms) as { unref?: () => void }).unref?.());
}

function settle(ch: ChannelState): void {
  for (const w of ch.waiters.splice(0)) w.resolve();
}

function fail(ch: ChannelState, err: Error): void {
  for (const w of ch.waiters.splice(0)) w.reject(err);
}

/** A wake-up with its messages, unless a wake-up already handed them (or later ones) to the listeners. */
function deliverRun(ch: ChannelState, run: AppendedRun, event: StoreEvent): void {
  const msgs = run.msgs;
  if (msgs.length === 0) return;
  const last = msgs[msgs.length - 1]!.seq;
  if (ch.runsUpTo !== undefined && last <= ch.runsUpTo) return;
  ch.runsUpTo = last;
  deliver(ch, event);
}

function deliver(ch: ChannelState, event: StoreEvent): void {
  for (const listener of [...ch.listeners]) {
    try {
      listener(event);
    } catch {
      // a listener only wakes a watch; one that throws must not stop the others
    }
  }
}
