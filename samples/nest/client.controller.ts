import { Controller, Get, Header } from '@nestjs/common';
import { buildSync } from 'esbuild';
import path from 'node:path';

const CLIENT_ENTRY = path.join(__dirname, '..', '..', 'src', 'client', 'index.ts');

/** `GET /bidiweb.js`: the client library (src/client) bundled as a browser global, built on first request. */
@Controller()
export class ClientBundleController {
  private code?: string;

  @Get('bidiweb.js')
  @Header('content-type', 'text/javascript; charset=utf-8')
  @Header('cache-control', 'no-cache')
  bundle(): string {
    this.code ??= buildSync({
      entryPoints: [CLIENT_ENTRY],
      bundle: true,
      format: 'iife',
      globalName: 'bidiweb',
      platform: 'browser',
      target: 'es2020',
      write: false,
      logLevel: 'silent',
      legalComments: 'none',
    }).outputFiles[0]!.text;
    return this.code;
  }
}
