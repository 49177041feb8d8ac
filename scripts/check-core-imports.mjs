// Architecture lint: src/core imports no framework, no Redis client and no
// Node built-in (it runs on edge runtimes); src/client imports nothing
// outside itself but the wire module (zero dependencies); src/wire, which
// both halves import, imports nothing at all.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    // Declaration files import nothing at run time.
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') && !p.endsWith('.d.ts') ? [p] : [];
  });
}

const wire = resolve('src/wire');
/** A relative import of `file` that lands in src/wire (`../wire`, `../wire/index`). */
const isWire = (file, spec) => spec.startsWith('.') && [wire, join(wire, 'index')].includes(resolve(dirname(file), spec));

const rules = [
  // The one package core may use: rate-limiter-flexible's memory limiter, plain JS without Node built-ins.
  { dir: 'src/core', allow: (spec) => spec.startsWith('.') || spec === 'rate-limiter-flexible/lib/RateLimiterMemory.js', why: 'core must stay framework- and runtime-neutral' },
  { dir: 'src/client', allow: (spec, file) => spec.startsWith('./') || isWire(file, spec), why: 'the client has zero dependencies: it imports only itself and src/wire' },
  { dir: 'src/wire', allow: () => false, why: 'the wire module is shared by server and client and imports nothing' },
];
const importRe = /(?:^|\n)\s*(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|require\(\s*['"]([^'"]+)['"]\s*\)/g;
let bad = 0;
for (const rule of rules) {
  for (const file of files(rule.dir)) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(importRe)) {
      const spec = m[1] ?? m[2] ?? m[3];
      if (!rule.allow(spec, file)) {
        console.error(`${relative('.', file)}: imports "${spec}" (${rule.why})`);
        bad++;
      }
    }
  }
}
if (bad) process.exit(1);
console.log('import rules hold');
