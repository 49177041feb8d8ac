#!/usr/bin/env node
/**
 * Set-up that `npm start` and `npm test` do for themselves, so a fresh clone
 * needs nothing typed first. Node built-ins only: it runs before any
 * dependency is installed.
 *
 *   node scripts/ensure-setup.mjs            dependencies (npm ci) when node_modules is missing or stale
 *   node scripts/ensure-setup.mjs --redis    also redis-server >= 7 (apt-get when root, else says what to install)
 *
 * "Stale" means a package the lockfile names is missing from node_modules or
 * has another version there; optional packages (other platforms' binaries)
 * may be absent.
 *
 * `npm ci --ignore-scripts`: nothing here needs a dependency's install script
 * (esbuild finds its binary in its @esbuild/<platform> package; @parcel/watcher
 * only serves jest's watch mode), and npm 11 blocks unapproved scripts anyway;
 * package.json's `allowScripts` records the same decision for `npm install`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const log = (line) => console.log(`[setup] ${line}`);

function staleReason() {
  const lock = JSON.parse(readFileSync(path.join(root, 'package-lock.json'), 'utf8'));
  if (!existsSync(path.join(root, 'node_modules'))) return 'node_modules is missing';
  for (const [where, entry] of Object.entries(lock.packages ?? {})) {
    if (where === '' || entry.link || !where.startsWith('node_modules/')) continue;
    const manifest = path.join(root, where, 'package.json');
    if (!existsSync(manifest)) {
      if (entry.optional || isOtherPlatform(entry)) continue;
      return `${where} is missing`;
    }
    const version = JSON.parse(readFileSync(manifest, 'utf8')).version;
    if (entry.version && version !== entry.version) return `${where} is ${version}, package-lock.json says ${entry.version}`;
  }
  return undefined;
}

/** Optional platform binaries of other OSes/CPUs are never installed here. */
function isOtherPlatform(entry) {
  const fits = (list, value) => {
    if (!Array.isArray(list) || list.length === 0) return true;
    if (list.includes(`!${value}`)) return false;
    return list.includes(value) || list.every((v) => v.startsWith('!'));
  };
  return !fits(entry.os, process.platform) || !fits(entry.cpu, process.arch);
}

function run(cmd, args) {
  log(`$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    console.error(`[setup] ${cmd} ${args.join(' ')} failed (exit ${r.status})`);
    process.exit(r.status ?? 1);
  }
}

function ensureDependencies() {
  const reason = staleReason();
  if (!reason) return;
  log(`installing dependencies: ${reason}`);
  run('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund']);
  const after = staleReason();
  if (after) {
    console.error(`[setup] still incomplete after npm ci: ${after}`);
    process.exit(1);
  }
}

function redisVersion() {
  try {
    const out = execFileSync('redis-server', ['--version'], { encoding: 'utf8' });
    return out.match(/v=(\d+)\.(\d+)/)?.slice(1).map(Number);
  } catch {
    return undefined;
  }
}

function ensureRedis() {
  const version = redisVersion();
  if (version && version[0] >= 7) return;
  const why = version ? `redis-server ${version.join('.')} is too old (the tests need >= 7)` : 'redis-server is not on PATH';
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const hasApt = spawnSync('sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status === 0;
  if (isRoot && hasApt) {
    log(`${why}: installing it with apt-get`);
    run('apt-get', ['update', '-q']);
    run('apt-get', ['install', '-y', '-q', 'redis-server']);
    const now = redisVersion();
    if (now && now[0] >= 7) return;
    console.error(`[setup] apt-get installed redis-server ${now ? now.join('.') : '(not found on PATH)'}; the tests need >= 7`);
    process.exit(1);
  }
  console.error(
    `[setup] ${why}. The tests start their own redis-server (>= 7) on free ports.\n` +
      '        Install it, then run the command again:\n' +
      '          Debian/Ubuntu: sudo apt-get install -y redis-server\n' +
      '          macOS:         brew install redis\n' +
      '          other:         https://redis.io/docs/latest/operate/oss_and_stack/install/',
  );
  process.exit(1);
}

ensureDependencies();
if (process.argv.includes('--redis')) ensureRedis();
