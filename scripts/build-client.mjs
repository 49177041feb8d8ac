#!/usr/bin/env node
/**
 * Browser builds of the client (src/client), with esbuild's JS API:
 *
 *   dist/browser/bidiweb.esm.js   ESM, minified:   import { open } from './bidiweb.esm.js'
 *   dist/browser/bidiweb.min.js   IIFE, minified:  <script src="bidiweb.min.js"></script> → window.bidiweb.open(...)
 *
 * Zero dependencies: the client imports nothing outside src/client but the
 * wire module (src/wire), and this script fails if a bundle pulls in anything else. Prints the gzip sizes
 * (zlib level 9) next to Socket.IO's browser client, measured the same way.
 *
 *   node scripts/build-client.mjs            (npm run build:client)
 */
import { build } from 'esbuild';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const entry = path.join(root, 'src', 'client', 'index.ts');
const outDir = path.join(root, 'dist', 'browser');
const clientDir = path.join(root, 'src', 'client') + path.sep;
// The wire module (protocol constants, utf8Length) is shared with the server and imports nothing.
const wireDir = path.join(root, 'src', 'wire') + path.sep;

// The Node transport (src/client/node-http.ts) never runs in a browser: leave it out of these bundles.
const nodeHttp = path.join(root, 'src', 'client', 'node-http.ts');
const withoutNodeTransport = {
  name: 'without-node-transport',
  setup(b) {
    b.onResolve({ filter: /\/node-http$/ }, (args) =>
      path.resolve(args.resolveDir, args.path + '.ts') === nodeHttp ? { path: nodeHttp, namespace: 'browser-stub' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'browser-stub' }, () => ({
      contents: 'export const nodeDefaultFetch = () => undefined;\nexport const leavesSignalsClean = () => false;',
      loader: 'js',
    }));
  },
};

const common = {
  plugins: [withoutNodeTransport],
  entryPoints: [entry],
  bundle: true,
  minify: true,
  platform: 'browser',
  // fetch, AbortController, optional chaining, ??: every browser of the last years.
  target: ['es2020'],
  legalComments: 'none',
  sourcemap: false,
  metafile: true,
  write: false,
  logLevel: 'warning',
  banner: { js: '/* bidiweb client | MIT */' },
};

const outputs = [
  { file: 'bidiweb.esm.js', format: 'esm' },
  { file: 'bidiweb.min.js', format: 'iife', globalName: 'bidiweb' },
];

mkdirSync(outDir, { recursive: true });
// The package is CommonJS; this marks bidiweb.esm.js as ESM for Node and
// bundlers that import `bidiweb/browser/bidiweb.esm.js` through the exports
// map. The IIFE build's point is its side effect (the `bidiweb` global).
writeFileSync(path.join(outDir, 'package.json'), '{ "type": "module", "sideEffects": ["./bidiweb.min.js"] }\n');
const rows = [];
for (const o of outputs) {
  const result = await build({ ...common, format: o.format, ...(o.globalName ? { globalName: o.globalName } : {}) });
  const foreign = Object.keys(result.metafile.inputs)
    .filter((f) => !f.startsWith('browser-stub:'))
    .filter((f) => !path.resolve(root, f).startsWith(clientDir) && !path.resolve(root, f).startsWith(wireDir));
  if (foreign.length > 0) {
    console.error(`build-client: ${o.file} would bundle files outside src/client and src/wire: ${foreign.join(', ')}`);
    process.exit(1);
  }
  const code = result.outputFiles[0].contents;
  writeFileSync(path.join(outDir, o.file), code);
  rows.push({ name: `bidiweb ${o.file}`, raw: code.byteLength, gzip: gzipSync(code, { level: 9 }).byteLength });
}

// Socket.IO's browser client, measured the same way.
const require = createRequire(import.meta.url);
let sio;
try {
  sio = path.join(path.dirname(require.resolve('socket.io-client/package.json')), 'dist', 'socket.io.min.js');
} catch {
  sio = undefined;
}
if (sio && existsSync(sio)) {
  const code = readFileSync(sio);
  const version = JSON.parse(readFileSync(path.join(path.dirname(sio), '..', 'package.json'), 'utf8')).version;
  rows.push({ name: `socket.io-client ${version} socket.io.min.js`, raw: statSync(sio).size, gzip: gzipSync(code, { level: 9 }).byteLength });
} else {
  console.warn('build-client: socket.io-client is not installed; skipping the comparison');
}

const kb = (n) => `${(n / 1024).toFixed(1)} KiB`;
const width = Math.max(...rows.map((r) => r.name.length));
console.log(`${'file'.padEnd(width)}  ${'minified'.padStart(10)}  ${'gzip -9'.padStart(10)}`);
for (const r of rows) {
  console.log(`${r.name.padEnd(width)}  ${kb(r.raw).padStart(10)}  ${kb(r.gzip).padStart(10)}   (${r.gzip} bytes gzipped)`);
}
console.log(`\nwritten to ${path.relative(root, outDir)}/`);
