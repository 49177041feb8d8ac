import { Controller, Get, Header } from '@nestjs/common';
import { buildClientBundle } from '../chat/client-bundle';

/** `GET /bidiweb.js`: the client library (src/client) bundled as a browser global (the chat sample's bundler), built on first request. */
@Controller()
export class ClientBundleController {
  private code?: string;

  @Get('bidiweb.js')
  @Header('content-type', 'text/javascript; charset=utf-8')
  @Header('cache-control', 'no-cache')
  bundle(): string {
    this.code ??= buildClientBundle();
    return this.code;
  }
}
