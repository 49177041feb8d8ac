// On-CPU time of one bench process by the code it ran, from Linux `perf` samples.
//
// A V8 CPU profile (`--cpu-prof`) samples a thread on a wall clock: a thread the scheduler keeps
// waiting inside `writev` still counts as busy there. `perf record -e cpu-clock:u` samples only
// while the process runs on a CPU (user space; the kernel part is the bench's `[kernel …]`).
//
//   NODE_OPTIONS=--perf-basic-prof npm run bench -- --only=echo --systems=bidi-redis --rounds=6 &
//   perf record -e cpu-clock:u -F 2000 -g -p <pid of bidi-redis-1> -o /tmp/p.data -- sleep 4
//   perf script -i /tmp/p.data | node bench/perf-categories.mjs [--top=25]
//
// Each sample goes to the first frame, from the innermost out, that names a known part (ioredis,
// ws, Socket.IO, bidiweb's bundle, Node's http / net / other internals); a sample inside the garbage
// collector goes to 'gc'; one with no such frame (V8's compiler threads, builtins called from
// native code) to 'V8 / native'. Then: the main thread's share (the rest is V8's helper threads:
// concurrent GC and the optimizing compiler), and bidiweb's functions by the same rule. Read that
// last table with care: perf names JIT code by the map file --perf-basic-prof writes, and code V8
// moved or freed leaves stale names there; for single functions V8's own profile is the better
// witness (docs/BENCHMARKS.md, "Where the CPU goes, measured on the CPU").
import { createInterface } from 'node:readline';

const top = Number(process.argv.find((a) => a.startsWith('--top='))?.slice(6) ?? 25);

const PARTS = [
  ['ioredis', /ioredis|redis-parser|standard-as-callback|cluster-key-slot/],
  ['ws', /node_modules\/ws\//],
  ['Socket.IO (socket.io, engine.io, adapters)', /node_modules\/(@socket\.io|socket\.io|engine\.io)/],
  ['bidiweb (bench bundle)', /bidi-bench\/server\.js/],
  ['node http', /JS:\S* node:_?http/],
  ['node net / streams', /JS:\S* node:(net|internal\/stream_base|internal\/streams)/],
  ['node other', /JS:\S* node:/],
];
const GC = /Scavenge|MarkCompact|Heap::|Sweeper|Marking|ConcurrentMark/;

const parts = new Map();
const functions = new Map();
const threads = new Map();
let total = 0;
const add = (map, key) => map.set(key, (map.get(key) ?? 0) + 1);

function sample(frames) {
  if (frames.length === 0) return;
  total++;
  if (GC.test(frames[0])) return add(parts, 'gc');
  for (const frame of frames) {
    const part = PARTS.find(([, re]) => re.test(frame));
    if (!part) continue;
    add(parts, part[0]);
    if (part[0].startsWith('bidiweb')) {
      const m = /JS:[*~^]?(\S*) \S*\/([^/\s]+:\d+)/.exec(frame);
      if (m) add(functions, `${m[1] || '(anonymous)'} ${m[2]}`);
    }
    return;
  }
  add(parts, 'V8 / native');
}

let frames = [];
for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === '') {
    sample(frames);
    frames = [];
  } else if (/^\s/.test(line)) {
    frames.push(line.trim());
  } else {
    // A sample's header: 'node 10202 12345.678: 500000 cpu-clock:u:' (command, thread id, ...).
    const tid = /^\S+\s+(\d+)/.exec(line)?.[1];
    if (tid) add(threads, tid);
  }
}
sample(frames);

const pct = (n) => `${((n / total) * 100).toFixed(1).padStart(5)} %`;
console.log(`${total} samples`);
for (const [name, n] of [...parts].sort((a, b) => b[1] - a[1])) console.log(`${pct(n)}  ${name}`);
// The main thread is the busiest one (JavaScript runs there).
const main = Math.max(0, ...threads.values());
if (threads.size > 0) console.log(`\nmain thread ${pct(main).trim()}, V8's helper threads ${pct(total - main).trim()}`);
console.log('\nbidiweb, by function (innermost bidiweb frame):');
for (const [name, n] of [...functions].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(n)}  ${name}`);
