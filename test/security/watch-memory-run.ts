/**
 * The figure of docs/SECURITY.md, "Watches that are never read": from the project root,
 *
 *   node scripts/run-ts.mjs test/security/watch-memory-run.ts 1000 --settle 3000 --drain-timeout 1000
 */
import { formatWatchMemory, measureWatchMemory, type WatchMemoryOptions } from './watch-memory';

const argv = process.argv.slice(2);
const flag = (name: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : undefined;
};
const o: WatchMemoryOptions = {
  sockets: /^\d+$/.test(argv[0] ?? "") ? Number(argv[0]) : 1000,
  stream: argv.includes('--stream'),
  maxResponseBytes: flag('max-response-bytes'),
  drainTimeout: flag('drain-timeout'),
  settleMs: flag('settle'),
};
// Bounded in time: the whole run is killed after 2 minutes.
const guard = setTimeout(() => {
  console.error('watch-memory: took longer than 120 s');
  process.exit(2);
}, 120_000);
measureWatchMemory(o).then(
  (r) => {
    clearTimeout(guard);
    console.log(formatWatchMemory(o, r));
  },
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
