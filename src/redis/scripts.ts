/**
 * The Lua scripts, bundled as text (tsup's text loader; a jest transform in
 * tests) so that no build reads files at run time, and registered on an
 * ioredis connection with `defineCommand`. ioredis sends EVALSHA and falls
 * back to EVAL once per connection (and after a Redis restart), so each call
 * is one round trip.
 *
 * Everything about a script comes from its file: `commands/<name>-<numberOfKeys>.lua`
 * gives its name and key count, and its `-- @include <file>` lines the
 * helpers of `commands/includes/` it needs (each opens with a comment listing
 * its KEYS, ARGV and replies). The one list below is the imports: a bundler
 * only inlines files a module imports by name, and a directory listing would
 * need a plugin in every bundler config (tsup, scripts/node-bundle.mjs, the
 * samples' bundlers) and in jest. test/redis/redis-units.test.ts checks that
 * it holds every file of the directory.
 */
import type { ChainableCommander, Cluster, Redis } from 'ioredis';
import admit2 from './commands/admit-2.lua';
import append3 from './commands/append-3.lua';
import close2 from './commands/close-2.lua';
import commit2 from './commands/commit-2.lua';
import create2 from './commands/create-2.lua';
import expireCheck2 from './commands/expire-check-2.lua';
import finishClose3 from './commands/finish-close-3.lua';
import groupJoin2 from './commands/group-join-2.lua';
import groupLeave3 from './commands/group-leave-3.lua';
import groupTail2 from './commands/group-tail-2.lua';
import join1 from './commands/join-1.lua';
import leave1 from './commands/leave-1.lua';
import publish3 from './commands/publish-3.lua';
import read3 from './commands/read-3.lua';
import receive2 from './commands/receive-2.lua';
import renew1 from './commands/renew-1.lua';
import sweep2 from './commands/sweep-2.lua';
import session from './commands/includes/session.lua';
import time from './commands/includes/time.lua';

/** File name (without `.lua`) -> text. */
export const SCRIPT_FILES = {
  'admit-2': admit2,
  'append-3': append3,
  'close-2': close2,
  'commit-2': commit2,
  'create-2': create2,
  'expire-check-2': expireCheck2,
  'finish-close-3': finishClose3,
  'group-join-2': groupJoin2,
  'group-leave-3': groupLeave3,
  'group-tail-2': groupTail2,
  'join-1': join1,
  'leave-1': leave1,
  'publish-3': publish3,
  'read-3': read3,
  'receive-2': receive2,
  'renew-1': renew1,
  'sweep-2': sweep2,
} satisfies Record<string, string>;

/** `includes/<name>.lua` -> text. */
export const INCLUDE_FILES: Record<string, string> = { session, time };

/**
 * The version of the script set, in every command name. Bump it whenever a
 * script's text changes (test/redis/redis-units.test.ts pins the set's
 * fingerprint to it): one ioredis connection may then carry both versions'
 * commands side by side — two copies of bidiweb in one process — instead of
 * the later `defineCommand` replacing the earlier. docs/REDIS.md, "Scripts".
 */
export const SCRIPT_VERSION = 6;

/** 'expire-check-2' -> 'expire-check'. */
type Stem<F extends string> = F extends `${infer Head}-${infer Rest}` ? (Rest extends `${number}` ? Head : `${Head}-${Stem<Rest>}`) : never;

export type ScriptName = Stem<keyof typeof SCRIPT_FILES>;

export interface ScriptDefinition {
  /** The command's name on the ioredis connection: `bidiweb_<name>_v<SCRIPT_VERSION>`. */
  command: string;
  numberOfKeys: number;
  /** The script with its includes in place. */
  lua: string;
}

type Arg = string | number;

const FILE_NAME = /^([a-z]+(?:-[a-z]+)*)-(\d+)$/;
const INCLUDE_LINE = /^-- @include ([a-z-]+)[ \t]*$/gm;

/** Replaces each `-- @include <name>` line by that include (itself resolved), each include once per script. */
function resolveIncludes(lua: string, file: string, seen = new Set<string>()): string {
  return lua.replace(INCLUDE_LINE, (_line, name: string) => {
    const text = INCLUDE_FILES[name];
    if (text === undefined) throw new Error(`bidiweb/redis: ${file}.lua includes an unknown file "${name}"`);
    if (seen.has(name)) return '';
    seen.add(name);
    return resolveIncludes(text, `includes/${name}`, seen);
  });
}

function buildScripts(): Record<ScriptName, ScriptDefinition> {
  const table: Record<string, ScriptDefinition> = {};
  for (const [file, text] of Object.entries(SCRIPT_FILES)) {
    const m = FILE_NAME.exec(file);
    if (!m) throw new Error(`bidiweb/redis: script file name "${file}.lua" is not <name>-<numberOfKeys>.lua`);
    const name = m[1]!;
    table[name] = { command: `bidiweb_${name.replace(/-/g, '_')}_v${SCRIPT_VERSION}`, numberOfKeys: Number(m[2]), lua: resolveIncludes(text, file) };
  }
  return table as Record<ScriptName, ScriptDefinition>;
}

/** Script name -> its command. */
export const SCRIPTS: Readonly<Record<ScriptName, ScriptDefinition>> = buildScripts();

type ScriptCall = (...keysThenArgs: Arg[]) => unknown;

/** Runs the scripts on one connection (and on pipelines made from it). */
export interface Scripts {
  run(name: ScriptName, ...keysThenArgs: Arg[]): Promise<unknown>;
  /** Adds the script call to a pipeline of the same connection. */
  queue(pipeline: ChainableCommander, name: ScriptName, ...keysThenArgs: Arg[]): void;
}

/**
 * Defines every script on the connection (idempotent: redefining replaces the same script).
 * `before` runs before each call is handed to the connection (RedisStore sends its gathered
 * publishes there, so that they keep their place in the call order).
 */
export function defineScripts(redis: Redis | Cluster, before?: () => void): Scripts {
  for (const def of Object.values(SCRIPTS)) {
    redis.defineCommand(def.command, { numberOfKeys: def.numberOfKeys, lua: def.lua });
  }
  const call = (target: object, name: ScriptName, args: Arg[]): unknown => {
    before?.();
    return (target as Record<string, ScriptCall>)[SCRIPTS[name].command]!(...args);
  };
  return {
    run: (name, ...args) => call(redis, name, args) as Promise<unknown>,
    queue: (pipeline, name, ...args) => void call(pipeline, name, args),
  };
}
