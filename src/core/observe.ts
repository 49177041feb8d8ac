/**
 * Debug logging and metrics. Core imports neither the `debug` package (its
 * Node build needs `tty` and `util`) nor `@opentelemetry/api` (an optional
 * peer): both come in through structural types. The Node entry points
 * install `debug` as the default logger factory (src/node/debug.ts); the app
 * passes an OpenTelemetry `Meter` as the `meter` option.
 *
 * When there is neither a meter nor an enabled `bidiweb:*` namespace, the
 * store is used unwrapped and every call site in the server costs one
 * boolean check (`obs.on`).
 */
import type { Store } from './store';
import { sessionLabel } from './util';

/** A `debug` logger: callable, with `enabled` (the `debug` package's `Debugger` fits). */
export interface DebugLogger {
  (formatter: string, ...args: unknown[]): void;
  readonly enabled: boolean;
}

/** Makes a logger per namespace: the `debug` package's default export fits. */
export type DebugFactory = (namespace: string) => DebugLogger;

/** The parts of `@opentelemetry/api`'s `Meter` used here: a `Meter` from `metrics.getMeter()` fits. */
export interface MeterLike {
  createCounter(name: string, options?: InstrumentOptions): AddInstrument;
  createUpDownCounter(name: string, options?: InstrumentOptions): AddInstrument;
  createHistogram(name: string, options?: InstrumentOptions): RecordInstrument;
}
export interface InstrumentOptions {
  description?: string;
  unit?: string;
  advice?: { explicitBucketBoundaries?: number[] };
}
type Attributes = Record<string, string | number | boolean>;
export interface AddInstrument {
  add(value: number, attributes?: Attributes): void;
}
export interface RecordInstrument {
  record(value: number, attributes?: Attributes): void;
}

let defaultDebug: DebugFactory | undefined;

/** Called by the Node entry points with the `debug` package (not by core: it stays free of Node built-ins). */
export function setDefaultDebug(factory: DebugFactory): void {
  defaultDebug ??= factory;
}

/** A session's label in logs: the same as `onError`'s and apps' (`sessionLabel`, ./util), never the sid. */
export const sidLabel = sessionLabel;

/**
 * A store error's message, first line, without anything shaped like a sid or
 * a token (22+ base64url characters): a store client's message could quote a
 * key, and keys contain the sid.
 */
function scrub(message: string): string {
  return message.split('\n', 1)[0]!.slice(0, 200).replace(/[A-Za-z0-9_-]{22,}/g, '…');
}

/** Seconds, for latency histograms: 1 ms up to 10 s. */
const SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const NAMESPACES = ['open', 'send', 'deliver', 'watch', 'lease', 'store', 'close'] as const;
type Namespace = (typeof NAMESPACES)[number];

const noop: DebugLogger = Object.assign(() => {}, { enabled: false });

export interface ObserveOptions {
  /** An OpenTelemetry `Meter`; no metrics without one. */
  meter?: MeterLike;
  /** A `debug`-compatible logger factory; `false` turns debug logging off. Default: the `debug` package on Node. */
  debug?: DebugFactory | false;
}

export class Observer {
  /** Anything to do at all: the one check a call site pays when nothing observes. */
  readonly on: boolean;
  private readonly log: Record<Namespace, DebugLogger>;
  private readonly m?: {
    opened: AddInstrument;
    closed: AddInstrument;
    open: AddInstrument;
    msgIn: AddInstrument;
    msgOut: AddInstrument;
    delivery: RecordInstrument;
    redeliveries: AddInstrument;
    storeTime: RecordInstrument;
    storeErrors: AddInstrument;
    watches: AddInstrument;
  };

  constructor(options: ObserveOptions) {
    const factory = options.debug === false ? undefined : (options.debug ?? defaultDebug);
    this.log = {} as Record<Namespace, DebugLogger>;
    let logging = false;
    for (const ns of NAMESPACES) {
      const d = factory ? factory('bidiweb:' + ns) : noop;
      this.log[ns] = d;
      logging ||= d.enabled;
    }
    const meter = options.meter;
    if (meter) {
      const seconds = { unit: 's', advice: { explicitBucketBoundaries: SECONDS_BUCKETS } };
      this.m = {
        opened: meter.createCounter('bidiweb.sessions.opened', { description: 'Sessions opened' }),
        closed: meter.createCounter('bidiweb.sessions.closed', { description: 'Sessions closed (onClose ran)' }),
        open: meter.createUpDownCounter('bidiweb.sessions.open', { description: 'Sessions opened minus closed by this instance (sum over instances for the total)' }),
        msgIn: meter.createCounter('bidiweb.messages.in', { description: 'Client messages handed to onMessage' }),
        msgOut: meter.createCounter('bidiweb.messages.out', { description: 'Messages stored for clients (a group publish counts once per member)' }),
        delivery: meter.createHistogram('bidiweb.delivery.duration', { description: 'From the send request arriving to onMessage done', ...seconds }),
        redeliveries: meter.createCounter('bidiweb.redeliveries', { description: 'Handled messages whose delivery could not be recorded (lease lost or store error): they run again' }),
        storeTime: meter.createHistogram('bidiweb.store.duration', { description: 'Store call latency', ...seconds }),
        storeErrors: meter.createCounter('bidiweb.store.errors', { description: 'Store calls that failed' }),
        watches: meter.createUpDownCounter('bidiweb.watches.held', { description: 'Watch requests waiting or streaming' }),
      };
    }
    this.on = logging || meter !== undefined;
  }

  /** The store the server should use: itself when nothing observes, else a wrapper that times and counts. */
  store(store: Store): Store {
    return this.on ? observeStore(store, this) : store;
  }

  /** A start time for {@link delivered}; 0 when off (the caller checks `on` first). */
  now(): number {
    return performance.now();
  }

  /** `onMessage` returned (or threw) for `seq`, `since` the send request arrived. */
  delivered(sid: string, seq: number, since: number, failed: boolean): void {
    const ms = performance.now() - since;
    this.m?.msgIn.add(1);
    this.m?.delivery.record(ms / 1000);
    if (this.log.deliver.enabled) this.log.deliver('%s seq %d %s in %s ms', sidLabel(sid), seq, failed ? 'handler threw' : 'handled', ms.toFixed(1));
  }

  /** A watch request began; the returned function ends it (once). */
  watch(sid: string, ack: number, stream: boolean): () => void {
    this.m?.watches.add(1);
    const label = this.log.watch.enabled ? sidLabel(sid) : '';
    if (label) this.log.watch('%s watch ack %d%s', label, ack, stream ? ' (stream)' : '');
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.m?.watches.add(-1);
      if (label) this.log.watch('%s watch over', label);
    };
  }

  /** @internal the store wrapper's hooks */
  storeCall(op: string, ms: number, error: unknown): void {
    this.m?.storeTime.record(ms / 1000, { operation: op });
    if (error !== undefined) this.m?.storeErrors.add(1, { operation: op });
    if (this.log.store.enabled) {
      this.log.store('%s %s ms%s', op, ms.toFixed(1), error !== undefined ? ' failed: ' + scrub(error instanceof Error ? error.message : String(error)) : '');
    }
  }

  /** @internal what a store call's result says about sessions and messages */
  storeResult(op: string, args: unknown[], r: unknown): void {
    const m = this.m;
    const log = this.log;
    switch (op) {
      case 'create': {
        if ((r as { status: string }).status !== 'ok') return;
        m?.opened.add(1);
        m?.open.add(1);
        if (log.open.enabled) log.open('%s opened', sidLabel((args[0] as { sid: string }).sid));
        return;
      }
      case 'finishClose': {
        m?.closed.add(1);
        m?.open.add(-1);
        if (log.close.enabled) log.close('%s closed', sidLabel(args[0] as string));
        return;
      }
      case 'receive': {
        if (log.send.enabled) {
          const input = args[1] as { msgs: unknown[]; ack?: number };
          const res = r as { status: string; deliver?: unknown[] };
          log.send('%s in: %d message(s), ack %s: %s, %d to deliver', sidLabel(args[0] as string), input.msgs.length, input.ack ?? '-', res.status, res.deliver?.length ?? 0);
        }
        return;
      }
      case 'append': {
        const res = r as { status: string; firstSeq?: number; lastSeq?: number };
        if (res.status === 'ok') m?.msgOut.add((res.lastSeq ?? 0) - (res.firstSeq ?? 0) + 1);
        if (log.send.enabled) log.send('%s out: %d message(s): %s', sidLabel(args[0] as string), (args[1] as unknown[]).length, res.status);
        return;
      }
      case 'appendMany': {
        const ok = (r as Array<{ status: string }>).filter((x) => x.status === 'ok').length;
        m?.msgOut.add(ok);
        if (log.send.enabled) log.send('broadcast to %d session(s): %d stored', (args[0] as unknown[]).length, ok);
        return;
      }
      case 'publish': {
        const members = (r as { members: number }).members;
        m?.msgOut.add(members);
        if (log.send.enabled) log.send('publish to a group of %d', members);
        return;
      }
      case 'commit': {
        const res = r as { status: string; sent?: { stored: number } };
        if (res.sent) m?.msgOut.add(res.sent.stored);
        if (res.status === 'lost') this.redelivery(args[0] as string, (args[1] as { seq: number }).seq, 'lease lost');
        return;
      }
      case 'renewLease': {
        if (log.lease.enabled) log.lease('%s lease %s', sidLabel(args[0] as string), r ? 'renewed' : 'lost');
        return;
      }
    }
  }

  /** @internal */
  storeFailed(op: string, args: unknown[]): void {
    // A handled message whose commit failed runs again: the lease expires and the client resends it.
    if (op === 'commit') this.redelivery(args[0] as string, (args[1] as { seq: number }).seq, 'commit failed');
  }

  private redelivery(sid: string, seq: number, why: string): void {
    this.m?.redeliveries.add(1);
    if (this.log.lease.enabled) this.log.lease('%s seq %d: %s, it will be delivered again', sidLabel(sid), seq, why);
  }
}

/** Store methods that are timed and counted (all async; `openLimiter`, `dispose` and the like pass through). */
const OPS = new Set([
  'create', 'receive', 'commit', 'renewLease', 'append', 'appendMany', 'read', 'close', 'finishClose',
  'sweep', 'subscribe', 'inspect', 'publish', 'join', 'leave', 'members',
]);

/**
 * The store with each call timed and its result read for the session and
 * message counters. A Proxy, so store-specific members (`dispose`,
 * `openLimiter`, a RedisStore's own methods) stay reachable; methods run on
 * the store itself (private fields need the real `this`).
 */
function observeStore(store: Store, obs: Observer): Store {
  // One wrapper per method, made again if the store's property is replaced.
  const wrapped = new Map<PropertyKey, { fn: unknown; w: unknown }>();
  return new Proxy(store, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== 'function') return value;
      let w = wrapped.get(prop)?.fn === value ? wrapped.get(prop)!.w : undefined;
      if (w === undefined) {
        const fn = value as (...args: unknown[]) => unknown;
        const op = String(prop);
        w = OPS.has(op)
          ? async (...args: unknown[]) => {
              const t0 = performance.now();
              let r: unknown;
              try {
                r = await fn.apply(target, args);
              } catch (err) {
                obs.storeCall(op, performance.now() - t0, err);
                obs.storeFailed(op, args);
                throw err;
              }
              obs.storeCall(op, performance.now() - t0, undefined);
              obs.storeResult(op, args, r);
              return r;
            }
          : fn.bind(target);
        wrapped.set(prop, { fn: value, w });
      }
      return w;
    },
  });
}
