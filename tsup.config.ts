import { defineConfig } from 'tsup';

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    'express/index': 'src/express/index.ts',
    'koa/index': 'src/koa/index.ts',
    'nest/index': 'src/nest/index.ts',
    'node/index': 'src/node/index.ts',
    'ws/index': 'src/ws/index.ts',
    'client/index': 'src/client/index.ts',
    'redis/index': 'src/redis/index.ts',
    'aws-lambda/index': 'src/aws-lambda/index.ts',
    'testing/index': 'src/testing/index.ts',
  },
  format: ['esm', 'cjs'],
  dts: false, // declarations come from `tsc --emitDeclarationOnly` (scripts/build-types.mjs)
  sourcemap: false, // maps would point at src/, which is not shipped (and tsup's CJS maps carried absolute paths)
  clean: true,
  target: 'node20',
  external: ['express', 'ioredis', 'koa', 'ws', /^@nestjs\//, 'reflect-metadata', 'rxjs', 'fast-check'],
  loader: { '.lua': 'text' },
  splitting: true,
});
