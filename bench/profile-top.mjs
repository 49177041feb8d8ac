// Top self-time functions of V8 CPU profiles (`npm run bench -- --cpu-prof=dir`, or `node --cpu-prof`).
//
//   node bench/profile-top.mjs dir/bidi-mem.cpuprofile [more.cpuprofile ...] [--top=30]
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

const args = process.argv.slice(2);
const top = Number(args.find((a) => a.startsWith('--top='))?.slice(6) ?? 25);
for (const file of args.filter((a) => !a.startsWith('--'))) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = prof.timeDeltas;
  let total = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const node = byId.get(prof.samples[i]);
    const ms = (dt[i] ?? 0) / 1000;
    total += ms;
    const f = node.callFrame;
    const where = f.url ? `${basename(f.url)}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'} ${where}`;
    self.set(key, (self.get(key) ?? 0) + ms);
  }
  const idle = self.get('(idle) ') ?? 0;
  console.log(`\n${basename(file)}: ${total.toFixed(0)} ms sampled, ${(total - idle).toFixed(0)} ms busy`);
  const rows = [...self].filter(([k]) => k !== '(idle) ').sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [k, ms] of rows) console.log(`${ms.toFixed(1).padStart(9)} ms ${((ms / (total - idle)) * 100).toFixed(1).padStart(5)}%  ${k}`);
}
