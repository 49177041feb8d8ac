/**
 * Keeps a Cluster subscriber's slot table in step with the command
 * connection's. When a slot moves (a reshard, a failover), Redis drops the
 * shard-channel subscriptions of that slot on its old owner; ioredis
 * subscribes them again on the new owner only when the subscriber's own
 * slot table is refreshed, which nothing triggers (a subscriber sends no
 * keyed commands to get MOVED, and `slotsRefreshInterval` is off by
 * default): the session's wake-ups would stop for as long as the
 * subscription is held. The command connection does learn of the move (its
 * next command on the slot gets MOVED and it refreshes): follow it.
 */
import type { Cluster } from 'ioredis';

/** Returns `subscriber`, refreshed each time `commands` refreshes its slots, until it ends. */
export function followSlots(commands: Cluster, subscriber: Cluster): Cluster {
  const refresh = () => {
    if (subscriber.status === 'ready') subscriber.refreshSlotsCache();
  };
  commands.on('refresh', refresh);
  subscriber.once('end', () => commands.removeListener('refresh', refresh));
  return subscriber;
}
