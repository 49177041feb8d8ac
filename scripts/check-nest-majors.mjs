#!/usr/bin/env node
/**
 * The README's NestJS quickstart, as pasted, against each NestJS major the
 * peer range claims: for each major a fresh project outside this repository
 * installs the packed bidiweb tarball and that major, takes the README block
 * that starts `// app.module.ts` unchanged, and runs it under tsx (esbuild:
 * no decorator metadata, as many users run Nest) with clients from
 * `bidiweb/client`: open (and a refused open), a published `say` reaching
 * two sessions, the catch-all reply, and a throwing handler logged through
 * Nest's logger while the client's send still resolves; once on the Express
 * platform and once on the Fastify one (@nestjs/platform-fastify of that
 * major). Each project is also type-checked (strict, NodeNext) against that
 * major's types.
 *
 *   node scripts/check-nest-majors.mjs           majors 10 11 12
 *   node scripts/check-nest-majors.mjs 11 12     just these
 *
 * Needs the registry (npm install) and a build (runs `npm run build` when
 * dist/ is missing). Prints one line per major and platform; exits 1 if any
 * failed.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const majors = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ['10', '11', '12'];
const tsx = path.join(root, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');

const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
const block = /```ts\n(\/\/ app\.module\.ts\n[\s\S]*?)```/.exec(readme)?.[1];
if (!block) throw new Error('README.md has no ```ts block starting with // app.module.ts');

if (!existsSync(path.join(root, 'dist', 'nest', 'index.js'))) execFileSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
const work = mkdtempSync(path.join(os.tmpdir(), 'bidiweb-nest-majors-'));
const tarball = path.join(
  work,
  execFileSync('npm', ['pack', '--silent', '--pack-destination', work], { cwd: root, encoding: 'utf8' }).trim().split('\n').pop(),
);

const smoke = `
import { Injectable, Module } from '@nestjs/common';
import type { LoggerService } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { open } from 'bidiweb/client';
import type { BidiClientSession } from 'bidiweb/client';
import { OnMessage } from 'bidiweb/nest';
import type { AddressInfo } from 'node:net';
import { AppModule } from './app.module';

class Logs implements LoggerService {
  errors: string[] = [];
  log() {}
  warn() {}
  error(message: unknown, _stack?: unknown, context?: unknown) { this.errors.push(\`\${context}: \${message}\`); }
}

@Injectable()
class Boom {
  @OnMessage({ type: 'boom' })
  boom() { throw new Error('boom handler failed'); }
}

@Module({ imports: [AppModule], providers: [Boom] })
class SmokeModule {}

function until<T>(what: string, fn: (done: (v: T) => void) => void, ms = 10_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('timed out waiting for ' + what)), ms);
    fn((v) => { clearTimeout(t); resolve(v); });
  });
}

async function main() {
  const logs = new Logs();
  const onFastify = process.argv[2] === 'fastify';
  const app = onFastify ? await NestFactory.create(SmokeModule, new FastifyAdapter(), { logger: logs }) : await NestFactory.create(SmokeModule, { logger: logs });
  await app.listen(0, '127.0.0.1');
  const url = \`http://127.0.0.1:\${(app.getHttpServer().address() as AddressInfo).port}/session\`;
  const inbox = new Map<string, unknown[]>();
  const join = async (nick: string) => {
    const s = open(url, { headers: { authorization: 'Bearer t' }, meta: { nick } });
    inbox.set(nick, []);
    s.on('message', (m) => inbox.get(nick)!.push(m));
    await until('open of ' + nick, (done) => s.on('open', () => done(undefined)));
    return s;
  };
  const ada: BidiClientSession = await join('ada');
  const bob: BidiClientSession = await join('bob');

  const refused = open(url, { meta: { nick: 'eve' } });
  const closed = await until<{ code: string }>('refused open', (done) => refused.on('close', (c) => done(c)));
  if (closed.code !== 'REJECTED') throw new Error('open without authorization: ' + JSON.stringify(closed));

  await ada.send({ type: 'say', text: 'hi' });
  await ada.send({ type: 'nonsense' });
  await ada.send({ type: 'boom' }); // resolves: the message is acked and consumed
  await until('messages', (done) => {
    const t = setInterval(() => {
      if (inbox.get('ada')!.length >= 2 && inbox.get('bob')!.length >= 1 && logs.errors.length >= 1) { clearInterval(t); done(undefined); }
    }, 20);
  });
  const said = { from: { nick: 'ada' }, text: 'hi', seq: 1 };
  const expect = JSON.stringify({ ada: [said, { error: 'unknown message' }], bob: [said] });
  const got = JSON.stringify({ ada: inbox.get('ada'), bob: inbox.get('bob') });
  if (got !== expect) throw new Error('messages: ' + got + ' expected ' + expect);
  // "BidiWeb: message error (session <label>, client message 3): Error: boom …": a label, never the sid.
  if (!logs.errors.some((e) => /^BidiWeb: message error \\(session [0-9a-f]{6}, client message 3\\): Error: boom handler failed/.test(e))) {
    throw new Error('handler error not logged: ' + JSON.stringify(logs.errors));
  }
  await ada.close();
  await bob.close();
  await app.close();
  const v = require('@nestjs/core/package.json').version;
  console.log(\`nest \${v} on \${onFastify ? 'fastify' : 'express'}: types OK; quickstart OK (open, refused open, publish to 2 sessions, catch-all, throwing handler logged: "\${logs.errors[0]}")\`);
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
`;

let failed = 0;
for (const major of majors) {
  const dir = path.join(work, `nest${major}`);
  mkdirSync(dir);
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: `nest${major}-smoke`, private: true, type: 'commonjs' }, null, 2));
  // What `nest new` writes, minus emitDecoratorMetadata (tsx ignores it anyway).
  writeFileSync(
    path.join(dir, 'tsconfig.json'),
    JSON.stringify(
      { compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, experimentalDecorators: true, skipLibCheck: true, noEmit: true, types: ['node'] } },
      null,
      2,
    ),
  );
  writeFileSync(path.join(dir, 'app.module.ts'), block);
  writeFileSync(path.join(dir, 'smoke.ts'), smoke);
  const deps = [tarball, ...['common', 'core', 'platform-express', 'platform-fastify'].map((p) => `@nestjs/${p}@${major}`), 'reflect-metadata', 'rxjs', '@types/node@20'];
  const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel=error', ...deps], { cwd: dir, encoding: 'utf8' });
  if (install.status !== 0) {
    console.log(`nest ${major}: npm install failed\n${install.stderr}`);
    failed++;
    continue;
  }
  const types = spawnSync(process.execPath, [tsc, '-p', '.'], { cwd: dir, encoding: 'utf8' });
  if (types.status !== 0) {
    console.log(`nest ${major}: type errors\n${types.stdout}${types.stderr}`);
    failed++;
    continue;
  }
  for (const platform of ['express', 'fastify']) {
    const run = spawnSync(process.execPath, [tsx, 'smoke.ts', platform], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
    if (run.status === 0) console.log(run.stdout.trim());
    else {
      console.log(`nest ${major} on ${platform}: FAILED\n${(run.stdout + run.stderr).trim()}`);
      failed++;
    }
  }
}
rmSync(work, { recursive: true, force: true });
process.exit(failed ? 1 : 0);
