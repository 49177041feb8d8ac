/**
 * `replicaAcks`: after each state-changing command, `WAIT <replicas>
 * <timeoutMs>` on the connection that ran it, and fail the operation with
 * STORE_UNAVAILABLE when fewer replicas confirmed it in time.
 *
 * Why: Redis replication is asynchronous. A master that answered a script
 * and died before its replica got the write loses it when the replica takes
 * over — an acked client message, an assigned seq, a lease. With this
 * option nothing is answered to a client before a replica holds it; what
 * fails instead is retried by the client (every store script is safe to run
 * twice), and a master that dies meanwhile takes only unanswered writes
 * with it.
 *
 * Where WAIT goes: WAIT counts the writes of the connection it runs on, and
 * has no key, so ioredis' Cluster would send it to a random node. It goes to
 * the master that owns the first key's slot (`cluster.slots`, which ioredis
 * updates on MOVED before it retries the command), through the same node
 * connection the command went out on. WAIT cannot run inside a script.
 */
import type { ChainableCommander, Cluster, Redis } from 'ioredis';
import { BidiError } from '../core/errors';
import { keySlot } from './keys';
import { SCRIPTS } from './scripts';

export interface ReplicaAcks {
  /** Replicas that must hold a write before the operation answers. At least 1. */
  replicas: number;
  /** How long WAIT blocks for them, ms (at least 1: WAIT 0 would block forever). */
  timeoutMs: number;
}

/** Commands the store runs that change nothing: no WAIT after them. */
const READ_ONLY = new Set([SCRIPTS['group-tail'].command, 'hmget', 'exists', 'zcard', 'zscan', 'smembers', 'get']);

/** The connection with a WAIT after every state-changing `bidi*` script and pipeline; `redis` itself when `acks` is undefined. */
export function withReplicaAcks<R extends Redis | Cluster>(redis: R, acks: ReplicaAcks | undefined): R {
  if (acks === undefined) return redis;
  if (!acks || !Number.isInteger(acks.replicas) || acks.replicas < 1 || !Number.isInteger(acks.timeoutMs) || acks.timeoutMs < 1) {
    throw new BidiError('INVALID_OPTIONS', 'bidiweb/redis: replicaAcks needs integers { replicas >= 1, timeoutMs >= 1 }');
  }
  const wait = async (key: string): Promise<void> => {
    const node = nodeFor(redis, key);
    let got: number;
    try {
      got = Number(await node.wait(acks.replicas, acks.timeoutMs));
    } catch (err) {
      // The master went away under the WAIT (the case this option exists for): unconfirmed, retry.
      throw new BidiError('STORE_UNAVAILABLE', `bidiweb/redis: the write could not be confirmed by a replica (${String(err)})`, { retryAfter: 1, cause: err });
    }
    if (got < acks.replicas) {
      throw new BidiError('STORE_UNAVAILABLE', `bidiweb/redis: ${got} of ${acks.replicas} replica(s) confirmed the write within ${acks.timeoutMs} ms`, { retryAfter: 1 });
    }
  };
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(redis, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== 'function') return value;
      let fn = wrapped.get(prop);
      if (fn) return fn;
      if (prop === 'pipeline') {
        fn = () => pipelineWithAcks(target.pipeline(), wait);
      } else if (typeof prop === 'string' && prop.startsWith('bidi') && !READ_ONLY.has(prop)) {
        const script = value as (...args: Array<string | number>) => Promise<unknown>;
        fn = async (...args: Array<string | number>) => {
          const reply = await script.apply(target, args);
          await wait(String(args[0]));
          return reply;
        };
      } else {
        fn = (value as (...a: unknown[]) => unknown).bind(target);
      }
      wrapped.set(prop, fn);
      return fn;
    },
  });
}

/**
 * A pipeline whose exec() is followed by one WAIT on the node of its first
 * key (the store only pipelines commands of one node together) when it
 * holds any state-changing command.
 */
function pipelineWithAcks(pipeline: ChainableCommander, wait: (key: string) => Promise<void>): ChainableCommander {
  let firstKey: string | undefined;
  let writes = false;
  const proxy: ChainableCommander = new Proxy(pipeline, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== 'function') return value;
      if (prop === 'exec') {
        return async () => {
          const results = await target.exec();
          if (writes && firstKey !== undefined && results?.some(([err]) => !err)) await wait(firstKey);
          return results;
        };
      }
      return (...args: unknown[]) => {
        if (firstKey === undefined && typeof args[0] === 'string') firstKey = args[0];
        if (typeof prop === 'string' && !READ_ONLY.has(prop)) writes = true;
        const out = (value as (...a: unknown[]) => unknown).apply(target, args);
        return out === target ? proxy : out;
      };
    },
  });
  return proxy;
}

/** The connection that carried the command: on a Cluster, the node serving the key's slot now. */
function nodeFor(redis: Redis | Cluster, key: string): Redis {
  if ((redis as Cluster).isCluster !== true) return redis as Redis;
  const cluster = redis as Cluster;
  const address = cluster.slots[keySlot(key)]?.[0];
  const node = address === undefined ? undefined : cluster.nodes('master').find((n) => `${n.options.host}:${n.options.port}` === address);
  if (!node) throw new BidiError('STORE_UNAVAILABLE', `bidiweb/redis: no master known for the slot of ${key}`, { retryAfter: 1 });
  return node;
}
