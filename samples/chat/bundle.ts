/**
 * Bundles a TS entry that imports src/redis, for running with plain node:
 * tsx cannot load the Lua scripts of src/redis, so they are inlined as text
 * by esbuild (as the package build does). npm packages stay external
 * (resolved from node_modules at run time); the output goes to
 * node_modules/.cache so those imports resolve.
 */
import { mkdirSync, mkdtempSync } from 'node:fs';
import path from 'node:path';
import { buildSync } from 'esbuild';
import { REPO_ROOT } from './client-bundle';

/** Returns the bundle's path (a fresh directory under node_modules/.cache; delete it when done). */
export function bundleEntry(entry: string, root = REPO_ROOT): string {
  const cache = path.join(root, 'node_modules', '.cache');
  mkdirSync(cache, { recursive: true });
  const out = path.join(mkdtempSync(path.join(cache, 'bidiweb-sample-')), `${path.basename(entry, '.ts')}.js`);
  buildSync({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    packages: 'external',
    loader: { '.lua': 'text' },
    outfile: out,
    logLevel: 'error',
  });
  return out;
}
