import { Inject, Injectable } from '@nestjs/common';
import type { OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { BidiError } from '../core/errors';
import { BidiServer } from '../core/server';
import type { Store } from '../core/store';
import { bidiWeb } from '../express/index';
import { BIDIWEB_OPTIONS, BIDIWEB_SERVER, BIDIWEB_STORE } from './constants';
import type { BidiWebModuleOptions } from './interfaces';

/**
 * Mounts the core on the Express instance under the Nest app, and disposes
 * what the module built at shutdown.
 *
 * When: as soon as the HTTP adapter exists (`NestFactory.create`: while
 * providers are built; `Test.createTestingModule`: at
 * `createNestApplication()`), so the session routes come before Nest's body
 * parser (registered first thing in `app.init()`), `app.use()` middleware and
 * every controller route. The core reads and limits bodies itself and answers
 * every error in its own JSON shape.
 */
@Injectable()
export class BidiWebHttpMount implements OnModuleInit, OnApplicationShutdown {
  private mounted = false;
  private readonly subscription?: { unsubscribe(): void };

  constructor(
    @Inject(HttpAdapterHost) private readonly host: HttpAdapterHost,
    @Inject(BIDIWEB_SERVER) private readonly server: BidiServer<any, any>,
    @Inject(BIDIWEB_STORE) private readonly store: Store,
    @Inject(BIDIWEB_OPTIONS) private readonly options: BidiWebModuleOptions,
  ) {
    // A ReplaySubject: fires now if the adapter is already set.
    this.subscription = host.init$?.subscribe(() => this.mount(false));
  }

  /** Fails on unsupported platforms; mounts late (after the body parser) on a Nest without `init$`. */
  onModuleInit(): void {
    this.mount(true);
  }

  async onApplicationShutdown(): Promise<void> {
    this.subscription?.unsubscribe();
    await this.server.dispose();
    if (!this.options.store) await this.store.dispose?.(); // ours only
  }

  private mount(strict: boolean): void {
    const adapter = this.host.httpAdapter;
    // No adapter: a standalone application context (a worker): nothing to serve, BidiWebService still pushes.
    if (this.mounted || !adapter) return;
    const type = adapter.getType();
    if (type !== 'express') {
      if (strict) throw unsupported(type);
      return;
    }
    adapter.getInstance<{ use(handler: unknown): unknown }>().use(bidiWeb(this.server));
    this.mounted = true;
  }
}

function unsupported(type: string): BidiError {
  const platform = type === 'fastify' ? 'the Fastify platform (@nestjs/platform-fastify)' : `the "${type}" HTTP platform`;
  return new BidiError(
    'INVALID_OPTIONS',
    `BidiWebModule does not support ${platform}: it mounts on the Express platform only. ` +
      'Create the app with @nestjs/platform-express (the default of NestFactory.create), ' +
      'or serve BIDIWEB_SERVER yourself (bidiweb/node createNodeHandler, or toFetchHandler).',
  );
}
