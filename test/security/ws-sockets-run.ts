/**
 * The figure of docs/SECURITY.md, "WebSockets": from the project root,
 *
 *   node scripts/run-ts.mjs test/security/ws-sockets-run.ts [upgrades] [frames]
 */
import { formatWsAbuse, measureWsAbuse, type WsAbuseOptions } from './ws-sockets';

const argv = process.argv.slice(2);
const o: WsAbuseOptions = {
  upgrades: Number(argv[0] ?? 1000),
  frames: Number(argv[1] ?? 100),
  maxSockets: 40,
  maxPerClient: 10,
  helloMs: 1_000,
  drainTimeout: 3_000,
};
// Bounded in time: the whole run is killed after 2 minutes.
const guard = setTimeout(() => {
  console.error('ws-sockets: took longer than 120 s');
  process.exit(2);
}, 120_000);
measureWsAbuse(o).then(
  (r) => {
    clearTimeout(guard);
    console.log(formatWsAbuse(o, r));
  },
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
