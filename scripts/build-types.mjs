// Declarations come from tsc (tsup's dts build trips on TypeScript 6's
// `baseUrl` deprecation). Two trees, so each module system gets types of its
// own format (are-the-types-wrong: no "masquerading as CJS"):
//
//   dist/**/*.d.ts    for `require` (the package is "type": "commonjs")
//   dist/**/*.d.mts   for `import`: the same declarations, relative
//                     specifiers rewritten to the .mjs files ESM resolution needs
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

execFileSync(process.execPath, [path.join('node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { stdio: 'inherit' });

function* declarations(dir) {
  for (const name of readdirSync(dir)) {
    const file = path.join(dir, name);
    if (statSync(file).isDirectory()) yield* declarations(file);
    else if (name.endsWith('.d.ts')) yield file;
  }
}

/** `../core/server` → `../core/server.mjs`; `./stores` (a directory) → `./stores/index.mjs`. */
function toEsmSpecifier(fromFile, spec) {
  const target = path.resolve(path.dirname(fromFile), spec);
  if (existsSync(`${target}.d.ts`)) return `${spec}.mjs`;
  if (existsSync(path.join(target, 'index.d.ts'))) return `${spec.replace(/\/$/, '')}/index.mjs`;
  throw new Error(`${fromFile}: cannot resolve ${spec}`);
}

const relative = /((?:from|import)\s*\(?\s*)(['"])(\.{1,2}\/[^'"]*)\2/g;
let count = 0;
for (const dts of declarations('dist')) {
  const text = readFileSync(dts, 'utf8');
  const esm = text.replace(relative, (_m, lead, quote, spec) => `${lead}${quote}${toEsmSpecifier(dts, spec)}${quote}`);
  writeFileSync(dts.replace(/\.d\.ts$/, '.d.mts'), esm);
  count++;
}

for (const entry of ['index', 'express/index', 'koa/index', 'nest/index', 'node/index', 'ws/index', 'client/index', 'redis/index', 'aws-lambda/index', 'testing/index']) {
  for (const ext of ['.d.ts', '.d.mts']) {
    if (!existsSync(`dist/${entry}${ext}`)) throw new Error(`missing dist/${entry}${ext}`);
  }
}
console.log(`types written: ${count} .d.ts and ${count} .d.mts`);
