/**
 * One self-contained ESM file per runtime entry, for runtimes that run
 * neither TypeScript paths of this repo nor its Lua imports: src (with the
 * Lua scripts as text, as the package build does) and ioredis bundled in;
 * Node builtins stay `node:` imports, which Deno, Bun and workerd
 * (nodejs_compat) provide. The CommonJS `require('net')` calls inside
 * ioredis become such imports too (an ESM bundle has no `require`, and
 * workerd has no `import.meta.url` to make one with `createRequire`).
 */
import { mkdirSync, mkdtempSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { build, type Plugin } from 'esbuild';

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');

const builtins = new Set(builtinModules);

/** `require('events')` → a module that re-exports `node:events` (named exports and default). */
const requiredBuiltinsAsImports: Plugin = {
  name: 'required-builtins-as-imports',
  setup(b) {
    b.onResolve({ filter: /^(node:)?[a-z_/]+$/ }, (args) => {
      const name = args.path.replace(/^node:/, '');
      if (args.kind !== 'require-call' || !builtins.has(name)) return undefined;
      return { path: name, namespace: 'required-builtin' };
    });
    b.onLoad({ filter: /.*/, namespace: 'required-builtin' }, (args) => ({
      contents: `import * as m from 'node:${args.path}'; export * from 'node:${args.path}'; export default (m.default ?? m);`,
      loader: 'js',
    }));
  },
};

export interface BundleOptions {
  /** Output directory; default a fresh one under node_modules/.cache. */
  outDir?: string;
}

/** Bundles `entry` (a .ts file) to `<dir>/<name>.mjs`; returns its path. */
export async function bundleRuntimeEntry(entry: string, o: BundleOptions = {}): Promise<string> {
  const cache = path.join(REPO_ROOT, 'node_modules', '.cache');
  mkdirSync(cache, { recursive: true });
  const dir = o.outDir ?? mkdtempSync(path.join(cache, 'bidiweb-runtime-'));
  mkdirSync(dir, { recursive: true });
  const out = path.join(dir, `${path.basename(entry, '.ts')}.mjs`);
  await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    target: 'es2022',
    format: 'esm',
    loader: { '.lua': 'text' },
    plugins: [requiredBuiltinsAsImports],
    outfile: out,
    logLevel: 'error',
  });
  return out;
}
