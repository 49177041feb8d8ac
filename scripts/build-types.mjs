// Declarations come from tsc (tsup's dts build trips on TypeScript 6). One
// .d.ts tree serves both module systems (the package is CommonJS-typed; the
// ESM build is .mjs).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
for (const entry of ['index', 'express/index', 'koa/index', 'nest/index', 'node/index', 'client/index', 'redis/index']) {
  const dts = `dist/${entry}.d.ts`;
  if (!existsSync(dts)) throw new Error(`missing ${dts}`);
}
console.log('types written');
