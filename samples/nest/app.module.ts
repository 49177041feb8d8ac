import { Module } from '@nestjs/common';
import type { DynamicModule, LogLevel } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import path from 'node:path';
import type { Store } from '../../src/core/store';
import { BidiWebModule } from '../../src/nest';
import { ChatHandlers } from './chat.handlers';
import { ClientBundleController } from './client.controller';

export interface NestChatOptions {
  /** Where sessions and rooms live. Default: a new in-memory store (one process). */
  store?: Store;
  /** Session idle timeout, ms (bidiweb default 120 000). */
  idleTimeout?: number;
  /** Watch wait, ms (bidiweb default 25 000). */
  wait?: number;
  /** Expiry sweep interval, ms; 0 = call `sweep()` on BIDIWEB_SERVER yourself. */
  sweepInterval?: number;
  /** Where bidiweb errors go. Default: one line on stderr (never a session id). */
  log?: (line: string) => void;
  /** Nest's own log levels. Default: errors and warnings. */
  logger?: LogLevel[] | false;
}

@Module({})
export class ChatAppModule {
  static forRoot(options: NestChatOptions = {}): DynamicModule {
    const log = options.log ?? ((line: string) => console.error(line));
    return {
      module: ChatAppModule,
      imports: [
        BidiWebModule.forRoot({
          path: '/session',
          store: options.store,
          idleTimeout: options.idleTimeout,
          wait: options.wait,
          sweepInterval: options.sweepInterval,
          onError(error, { phase }) {
            log(`[chat] ${phase} error: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
          },
        }),
      ],
      providers: [ChatHandlers],
      controllers: [ClientBundleController],
    };
  }
}

const PUBLIC_DIR = path.join(__dirname, '..', 'chat', 'public');

/** The chat as a Nest app: the session routes, the page of samples/chat, `/bidiweb.js`. Call `listen()`. */
export async function createNestChatApp(options: NestChatOptions = {}): Promise<NestExpressApplication> {
  const app = await NestFactory.create<NestExpressApplication>(ChatAppModule.forRoot(options), { logger: options.logger ?? ['error', 'warn'] });
  app.disable('x-powered-by');
  app.useStaticAssets(PUBLIC_DIR, {
    index: 'index.html',
    setHeaders(res, file) {
      res.setHeader('x-content-type-options', 'nosniff');
      if (file.endsWith('.html')) {
        res.setHeader('content-security-policy', "default-src 'self'; base-uri 'none'; frame-ancestors 'none'");
        res.setHeader('cache-control', 'no-cache');
      }
    },
  });
  return app;
}
