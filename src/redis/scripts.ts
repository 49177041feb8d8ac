/**
 * The Lua scripts, bundled as text (tsup's text loader; a jest transform in
 * tests) so that no build reads files at run time, and registered on an
 * ioredis connection with `defineCommand`. ioredis sends EVALSHA and falls
 * back to EVAL once per connection (and after a Redis restart), so each call
 * is one round trip.
 *
 * Files are named `<name>-<numberOfKeys>.lua`; each opens with a comment
 * listing its KEYS, ARGV and replies. The per-session scripts get
 * `includes/session.lua` (shared helpers) put in front of them.
 */
import type { Cluster, Redis } from 'ioredis';
import admit from './commands/admit-2.lua';
import append from './commands/append-3.lua';
import close from './commands/close-3.lua';
import commit from './commands/commit-3.lua';
import create from './commands/create-2.lua';
import expireCheck from './commands/expire-check-3.lua';
import finishClose from './commands/finish-close-4.lua';
import session from './commands/includes/session.lua';
import groupJoin from './commands/group-join-2.lua';
import groupLeave from './commands/group-leave-3.lua';
import groupTail from './commands/group-tail-2.lua';
import join from './commands/join-1.lua';
import leave from './commands/leave-1.lua';
import publish from './commands/publish-3.lua';
import read from './commands/read-4.lua';
import receive from './commands/receive-3.lua';
import renew from './commands/renew-1.lua';
import sweep from './commands/sweep-2.lua';

export interface ScriptDefinition {
  numberOfKeys: number;
  lua: string;
}

/** Command name on the ioredis connection -> script. Names carry a `bidi` prefix so they cannot clash with Redis commands or an app's own scripts. */
export const SCRIPTS = {
  bidiCreate: { numberOfKeys: 2, lua: session + create },
  bidiReceive: { numberOfKeys: 3, lua: session + receive },
  bidiCommit: { numberOfKeys: 3, lua: session + commit },
  bidiRenew: { numberOfKeys: 1, lua: session + renew },
  bidiAppend: { numberOfKeys: 3, lua: session + append },
  bidiRead: { numberOfKeys: 4, lua: session + read },
  bidiClose: { numberOfKeys: 3, lua: session + close },
  bidiFinishClose: { numberOfKeys: 4, lua: session + finishClose },
  bidiExpireCheck: { numberOfKeys: 3, lua: session + expireCheck },
  bidiJoin: { numberOfKeys: 1, lua: join },
  bidiLeave: { numberOfKeys: 1, lua: leave },
  bidiGroupJoin: { numberOfKeys: 2, lua: groupJoin },
  bidiGroupLeave: { numberOfKeys: 3, lua: groupLeave },
  bidiGroupTail: { numberOfKeys: 2, lua: groupTail },
  bidiPublish: { numberOfKeys: 3, lua: publish },
  bidiAdmit: { numberOfKeys: 2, lua: admit },
  bidiSweep: { numberOfKeys: 2, lua: sweep },
} satisfies Record<string, ScriptDefinition>;

export type ScriptName = keyof typeof SCRIPTS;

type Arg = string | number;
type ScriptCall = (...keysThenArgs: Arg[]) => Promise<unknown>;

/** The connection once the scripts are defined on it. */
export type ScriptedRedis = (Redis | Cluster) & Record<ScriptName, ScriptCall>;

/** Defines every script on the connection (idempotent: redefining replaces the same script). */
export function defineScripts(redis: Redis | Cluster): ScriptedRedis {
  for (const [name, def] of Object.entries(SCRIPTS)) {
    redis.defineCommand(name, def);
  }
  return redis as ScriptedRedis;
}
