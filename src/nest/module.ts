import { Logger, Module } from '@nestjs/common';
import type { DynamicModule, ModuleMetadata, Provider } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { BidiError } from '../core/errors';
import { BidiServer } from '../core/server';
import type { BidiOptions } from '../core/server';
import type { Store } from '../core/store';
import { MemoryStore } from '../core/stores/memory';
import { BIDIWEB_OPTIONS, BIDIWEB_SERVER, BIDIWEB_STORE } from './constants';
import { BidiWebExplorer } from './explorer';
import { BidiWebHandlers } from './handlers';
import type { BidiWebModuleAsyncOptions, BidiWebModuleExtras, BidiWebModuleOptions, BidiWebOptionsFactory } from './interfaces';
import { BidiWebHttpMount } from './mount';
import { BidiWebService } from './service';

const storeProvider: Provider = {
  provide: BIDIWEB_STORE,
  useFactory: (options: BidiWebModuleOptions): Store => options.store ?? new MemoryStore(),
  inject: [BIDIWEB_OPTIONS],
};

const serverProvider: Provider = {
  provide: BIDIWEB_SERVER,
  useFactory: (options: BidiWebModuleOptions, store: Store, handlers: BidiWebHandlers) => {
    for (const hook of ['onOpen', 'onMessage', 'onClose']) {
      if (hook in options) {
        throw new BidiError('INVALID_OPTIONS', `BidiWebModule options take no ${hook}: decorate a provider method with @${hook[0]!.toUpperCase()}${hook.slice(1)}() instead`);
      }
    }
    return new BidiServer({ ...options, onError: options.onError ?? logToNest(), store, ...handlers.hooks() });
  },
  inject: [BIDIWEB_OPTIONS, BIDIWEB_STORE, BidiWebHandlers],
};

/**
 * bidiweb for NestJS: builds the core server from options, mounts it on the
 * Express or Fastify platform, wires `@OnOpen` / `@OnMessage` / `@OnClose` methods found
 * on providers and controllers, and provides `BidiWebService` to push.
 * Global by default.
 */
@Module({})
export class BidiWebModule {
  static forRoot(options: BidiWebModuleOptions<any, any> & BidiWebModuleExtras = {}): DynamicModule {
    const { global, ...core } = options;
    return build(global, [], [{ provide: BIDIWEB_OPTIONS, useValue: core }]);
  }

  static forRootAsync(options: BidiWebModuleAsyncOptions): DynamicModule {
    return build(options.global, options.imports ?? [], [...optionsProviders(options), ...(options.extraProviders ?? [])]);
  }
}

/**
 * Without an `onError` option, hook and store errors (a throwing `@OnMessage`
 * handler among them) go to Nest's logger, so they follow the app's logger
 * settings. Only the stack: store errors carry session keys (session ids)
 * as properties, and sids are never logged.
 */
function logToNest(): NonNullable<BidiOptions['onError']> {
  const logger = new Logger('BidiWeb');
  return (error, { phase, seq, session }) => {
    // The session's label, never its id (a bearer secret); not its user, which may be personal data.
    const about = [session === undefined ? '' : `session ${session}`, seq === undefined ? '' : `client message ${seq}`].filter(Boolean).join(', ');
    const where = about ? `${phase} error (${about})` : `${phase} error`;
    if (error instanceof Error) logger.error(`${where}: ${error.name}: ${error.message}`, error.stack);
    else logger.error(`${where}: ${String(error)}`);
  };
}

function build(global = true, imports: NonNullable<ModuleMetadata['imports']>, providers: Provider[]): DynamicModule {
  return {
    module: BidiWebModule,
    global,
    imports: [DiscoveryModule, ...imports],
    providers: [...providers, storeProvider, serverProvider, BidiWebHandlers, BidiWebExplorer, BidiWebHttpMount, BidiWebService],
    exports: [BIDIWEB_OPTIONS, BIDIWEB_STORE, BIDIWEB_SERVER, BidiWebService],
  };
}

function optionsProviders(options: BidiWebModuleAsyncOptions): Provider[] {
  const fromFactory = (factory: BidiWebOptionsFactory) => factory.createBidiWebOptions();
  if (options.useFactory) {
    return [{ provide: BIDIWEB_OPTIONS, useFactory: options.useFactory, inject: options.inject ?? [] }];
  }
  if (options.useClass) {
    return [
      { provide: options.useClass, useClass: options.useClass },
      { provide: BIDIWEB_OPTIONS, useFactory: fromFactory, inject: [options.useClass] },
    ];
  }
  if (options.useExisting) {
    return [{ provide: BIDIWEB_OPTIONS, useFactory: fromFactory, inject: [options.useExisting] }];
  }
  throw new BidiError('INVALID_OPTIONS', 'BidiWebModule.forRootAsync needs useFactory, useClass or useExisting');
}
