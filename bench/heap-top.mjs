// Which objects a heap snapshot holds, by constructor, and what changed between two snapshots.
//
//   node bench/heap-top.mjs after.heapsnapshot [before.heapsnapshot] [--per=1000] [--top=40]
//
// Sizes are self sizes (what the objects themselves take, not what they retain).
import { readFileSync } from 'node:fs';

function load(file) {
  const snap = JSON.parse(readFileSync(file, 'utf8'));
  const f = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const [iType, iName, iSize] = ['type', 'name', 'self_size'].map((k) => f.indexOf(k));
  const stride = f.length;
  const out = new Map();
  const nodes = snap.nodes;
  for (let i = 0; i < nodes.length; i += stride) {
    const type = types[nodes[i + iType]];
    let name = type === 'object' || type === 'closure' ? snap.strings[nodes[i + iName]] : `(${type})`;
    if (type === 'closure') name = `closure ${name}`;
    const e = out.get(name) ?? { count: 0, size: 0 };
    e.count++;
    e.size += nodes[i + iSize];
    out.set(name, e);
  }
  return out;
}

const args = process.argv.slice(2);
const per = Number(args.find((a) => a.startsWith('--per='))?.slice(6) ?? 1);
const top = Number(args.find((a) => a.startsWith('--top='))?.slice(6) ?? 40);
const [afterFile, beforeFile] = args.filter((a) => !a.startsWith('--'));
const after = load(afterFile);
const before = beforeFile ? load(beforeFile) : new Map();
const rows = [];
let total = 0;
for (const [name, a] of after) {
  const b = before.get(name) ?? { count: 0, size: 0 };
  const d = { name, count: a.count - b.count, size: a.size - b.size };
  total += d.size;
  rows.push(d);
}
rows.sort((x, y) => y.size - x.size);
console.log(`total self size change: ${(total / per).toFixed(0)} bytes${per > 1 ? ` per ${'unit'} (÷${per})` : ''}`);
for (const r of rows.slice(0, top)) {
  console.log(`${(r.size / per).toFixed(1).padStart(10)} B ${(r.count / per).toFixed(2).padStart(8)} ×  ${r.name}`);
}
