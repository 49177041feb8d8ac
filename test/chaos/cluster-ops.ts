/**
 * What an operator does to a Redis Cluster while traffic flows, for the
 * chaos run's cluster mode: a coordinated failover (CLUSTER FAILOVER on a
 * replica), a crash of a master (SIGKILL; its replica takes over on its own
 * after cluster-node-timeout), and a reshard of slots that hold live
 * sessions (`redis-cli --cluster reshard`). Each one returns a line saying
 * what it did.
 */
import { keySlot } from '../../src/redis/keys';
import type { RedisClusterProcess } from '../helpers/redis-server';

export type ClusterOp = 'failover' | 'kill' | 'reshard';

interface MasterView {
  id: string;
  port: number;
  /** Slot ranges, inclusive. */
  ranges: Array<[number, number]>;
  replicaPort?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The masters that hold slots, with their replica, as a running node sees them. */
async function masters(c: RedisClusterProcess): Promise<MasterView[]> {
  const up = c.servers.find((s) => s.running())!;
  const lines = (await c.cli(up.port, 'cluster', 'nodes'))
    .trim()
    .split('\n')
    .map((l) => l.trim().split(' '));
  const portOf = (f: string[]) => Number(f[1]!.split('@')[0]!.split(':')[1]);
  const out: MasterView[] = [];
  for (const f of lines) {
    if (!f[2]!.includes('master') || f[2]!.includes('fail') || f.length <= 8) continue;
    const ranges = f
      .slice(8)
      .filter((r) => /^\d/.test(r))
      .map((r) => {
        const [a, b] = r.split('-').map(Number);
        return [a!, b ?? a!] as [number, number];
      });
    const replica = lines.find((g) => g[2]!.includes('slave') && g[3] === f[0] && !g[2]!.includes('fail'));
    out.push({ id: f[0]!, port: portOf(f), ranges, ...(replica ? { replicaPort: portOf(replica) } : {}) });
  }
  return out;
}

const owns = (m: MasterView, slot: number) => m.ranges.some(([a, b]) => slot >= a && slot <= b);

/** The master holding the most of these slots (the op should hit live sessions). */
function busiest(ms: MasterView[], slots: number[], withReplica: boolean): MasterView {
  const candidates = ms.filter((m) => !withReplica || m.replicaPort !== undefined);
  if (candidates.length === 0) throw new Error('no master with a replica to fail over to');
  return candidates.map((m) => ({ m, n: slots.filter((s) => owns(m, s)).length })).sort((a, b) => b.n - a.n)[0]!.m;
}

async function role(c: RedisClusterProcess, port: number): Promise<string> {
  const info = await c.cli(port, 'info', 'replication').catch(() => '');
  return /role:(\w+)/.exec(info)?.[1] ?? '?';
}

/**
 * Runs one operation on the cluster and waits until it has settled (every
 * slot served, every replica linked). `sessionKeys` are keys of the live
 * sessions (one per session), to aim at the master that holds most of them.
 */
export async function clusterOp(c: RedisClusterProcess, op: ClusterOp, sessionKeys: string[]): Promise<string> {
  const slots = sessionKeys.map(keySlot);
  const ms = await masters(c);
  const t0 = Date.now();
  if (op === 'failover') {
    const m = busiest(ms, slots, true);
    const n = slots.filter((s) => owns(m, s)).length;
    await c.cli(m.replicaPort!, 'cluster', 'failover');
    for (let i = 0; (await role(c, m.replicaPort!)) !== 'master'; i++) {
      if (i > 200) throw new Error(`CLUSTER FAILOVER: replica ${m.replicaPort} did not become master`);
      await sleep(50);
    }
    await c.settled();
    return `CLUSTER FAILOVER: master :${m.port} (${n} live sessions) handed over to its replica :${m.replicaPort} in ${Date.now() - t0} ms`;
  }
  if (op === 'kill') {
    const m = busiest(ms, slots, true);
    const n = slots.filter((s) => owns(m, s)).length;
    const server = c.servers.find((s) => s.port === m.port)!;
    await server.kill();
    for (let i = 0; (await role(c, m.replicaPort!)) !== 'master'; i++) {
      if (i > 600) throw new Error(`SIGKILL of a master: replica ${m.replicaPort} did not take over within 30 s`);
      await sleep(50);
    }
    const tookOver = Date.now() - t0;
    await c.settled(30_000);
    const served = Date.now() - t0;
    // Back as a replica of the new master (empty: no persistence; it resyncs).
    await server.restart();
    await c.settled(30_000);
    return `SIGKILL master :${m.port} (${n} live sessions): replica :${m.replicaPort} master after ${tookOver} ms, every slot served after ${served} ms; the old master back as a replica after ${Date.now() - t0} ms`;
  }
  // reshard: redis-cli moves a source's slots in ascending order, so take the lowest slots of a
  // master, as many as carry a quarter of its live sessions (at least 2, if it has them), to the
  // least busy other master; of the masters, the one where that takes the fewest slots per session.
  const plans = ms
    .map((m) => {
      const mine: number[] = [];
      for (const [a, b] of m.ranges) for (let s = a; s <= b; s++) mine.push(s);
      const live = [...new Set(slots.filter((s) => owns(m, s)))].sort((a, b) => a - b);
      const carry = Math.min(live.length, Math.max(2, Math.ceil(live.length / 4)));
      return { m, carry, count: carry === 0 ? Infinity : mine.indexOf(live[carry - 1]!) + 1 };
    })
    .sort((a, b) => a.count / Math.max(1, a.carry) - b.count / Math.max(1, b.carry));
  const from = plans[0]!.m;
  const count = Number.isFinite(plans[0]!.count) ? plans[0]!.count : 100;
  const to = ms.filter((m) => m !== from).map((m) => ({ m, n: slots.filter((s) => owns(m, s)).length })).sort((a, b) => a.n - b.n)[0]!.m;
  await c.cli(from.port, '--cluster', 'reshard', `127.0.0.1:${from.port}`, '--cluster-from', from.id, '--cluster-to', to.id, '--cluster-slots', String(count), '--cluster-yes');
  await c.settled();
  const after = await masters(c);
  const dest = after.find((m) => m.id === to.id)!;
  const moved = slots.filter((s) => owns(from, s) && owns(dest, s)).length;
  return `reshard: ${count} slots from :${from.port} to :${to.port}, carrying ${moved} live sessions, in ${Date.now() - t0} ms`;
}
