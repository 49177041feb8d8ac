#!/usr/bin/env node
/**
 * Runs a TypeScript script the way the package build sees the sources:
 * bundled with esbuild (Lua scripts as text, which tsx cannot do), packages
 * left external, then executed in this very process — so Node flags given
 * to this runner (e.g. `--expose-gc`) apply to the script.
 *
 *   node scripts/run-ts.mjs test/chaos/chaos.ts --seed 42
 *   node --expose-gc scripts/run-ts.mjs test/fuzz/http-fuzz.ts
 *
 * The script sees `process.argv` as `[node, <bundle>, ...its own arguments]`.
 */
import { buildSync } from 'esbuild';
import { NODE_BUNDLE } from './node-bundle.mjs';
import { mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const [entry, ...args] = process.argv.slice(2);
if (!entry) {
  console.error('usage: node scripts/run-ts.mjs <file.ts> [args...]');
  process.exit(2);
}
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const source = path.resolve(entry);
// Inside the project, so the bundle's bare imports resolve from node_modules.
const cacheDir = path.join(root, 'node_modules', '.cache', 'run-ts');
mkdirSync(cacheDir, { recursive: true });
const outfile = path.join(cacheDir, `${path.basename(source).replace(/\.[cm]?tsx?$/, '')}-${process.pid}.js`);
buildSync({
  entryPoints: [source],
  ...NODE_BUNDLE,
  outfile,
});
process.argv = [process.argv[0], outfile, ...args];
process.setSourceMapsEnabled?.(true);
try {
  createRequire(import.meta.url)(outfile);
} finally {
  // Loaded (with its inline source map): the file is no longer needed.
  rmSync(outfile, { force: true });
}
