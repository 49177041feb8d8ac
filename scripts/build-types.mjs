// Declarations come from tsc (tsup's dts build trips on TypeScript 6); each
// entry also gets a .d.cts twin so `require` consumers resolve types.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync } from 'node:fs';

execFileSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
for (const entry of ['index', 'express/index', 'koa/index', 'nest/index', 'node/index', 'client/index', 'redis/index']) {
  const dts = `dist/${entry}.d.ts`;
  if (!existsSync(dts)) throw new Error(`missing ${dts}`);
  copyFileSync(dts, `dist/${entry}.d.cts`);
}
console.log('types written');
