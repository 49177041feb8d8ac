// `npm run bench [-- --only=echo,push --rounds=2 ...]`
//
// Bundles bench/*.ts with esbuild (the Lua scripts as text, as the package
// build does; packages stay external and resolve from node_modules) into
// node_modules/.cache/bidi-bench, then runs the orchestrator. See
// docs/BENCHMARKS.md.
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { NODE_BUNDLE } from './node-bundle.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'node_modules', '.cache', 'bidi-bench');
mkdirSync(out, { recursive: true });

const t = Date.now();
await build({
  entryPoints: ['main', 'server', 'client', 'proxy'].map((name) => join(root, 'bench', `${name}.ts`)),
  outdir: out,
  ...NODE_BUNDLE,
});
console.log(`bundled bench/*.ts in ${Date.now() - t} ms`);

const child = spawn(process.execPath, ['--enable-source-maps', join(out, 'main.js'), ...process.argv.slice(2)], {
  stdio: 'inherit',
  env: { ...process.env, BIDI_BENCH_ROOT: root },
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
