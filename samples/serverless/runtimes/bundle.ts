/**
 * One self-contained ESM file per runtime entry, for runtimes that run
 * neither TypeScript paths of this repo nor its Lua imports: src (with the
 * Lua scripts as text, as the package build does) and ioredis bundled in;
 * Node builtins stay `node:` imports, which Deno, Bun and workerd
 * (nodejs_compat) provide. A `require` made with `createRequire` serves the
 * CommonJS `require('net')` calls inside ioredis.
 */
import { mkdirSync, mkdtempSync } from 'node:fs';
import path from 'node:path';
import { buildSync } from 'esbuild';

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');

export interface BundleOptions {
  /** Add `const require = createRequire(import.meta.url)` (Deno, Bun). Default true. */
  createRequire?: boolean;
  /** esbuild conditions/platform; default 'node'. */
  platform?: 'node' | 'neutral' | 'browser';
  /** Output directory; default a fresh one under node_modules/.cache. */
  outDir?: string;
}

/** Bundles `entry` (a .ts file) to `<dir>/<name>.mjs`; returns its path. */
export function bundleRuntimeEntry(entry: string, o: BundleOptions = {}): string {
  const cache = path.join(REPO_ROOT, 'node_modules', '.cache');
  mkdirSync(cache, { recursive: true });
  const dir = o.outDir ?? mkdtempSync(path.join(cache, 'bidiweb-runtime-'));
  mkdirSync(dir, { recursive: true });
  const out = path.join(dir, `${path.basename(entry, '.ts')}.mjs`);
  buildSync({
    entryPoints: [entry],
    bundle: true,
    platform: o.platform ?? 'node',
    target: 'es2022',
    format: 'esm',
    loader: { '.lua': 'text' },
    outfile: out,
    logLevel: 'error',
    banner:
      o.createRequire === false
        ? undefined
        : { js: "import { createRequire as __bidiCreateRequire } from 'node:module'; const require = __bidiCreateRequire(import.meta.url);" },
  });
  return out;
}
