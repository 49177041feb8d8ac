// Architecture lint: src/core imports no framework, no Redis client and no
// Node built-in (it runs on edge runtimes); src/client imports nothing
// outside itself (zero dependencies).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    // Declaration files import nothing at run time.
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') && !p.endsWith('.d.ts') ? [p] : [];
  });
}

const rules = [
  // The one package core may use: rate-limiter-flexible's memory limiter, plain JS without Node built-ins.
  { dir: 'src/core', allow: (spec) => spec.startsWith('.') || spec === 'rate-limiter-flexible/lib/RateLimiterMemory.js', why: 'core must stay framework- and runtime-neutral' },
  { dir: 'src/client', allow: (spec) => spec.startsWith('./'), why: 'the client has zero dependencies' },
];
const importRe = /(?:^|\n)\s*(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|require\(\s*['"]([^'"]+)['"]\s*\)/g;
let bad = 0;
for (const rule of rules) {
  for (const file of files(rule.dir)) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(importRe)) {
      const spec = m[1] ?? m[2] ?? m[3];
      if (!rule.allow(spec)) {
        console.error(`${relative('.', file)}: imports "${spec}" (${rule.why})`);
        bad++;
      }
    }
  }
}
if (bad) process.exit(1);
console.log('import rules hold');
