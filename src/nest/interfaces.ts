import type { InjectionToken, ModuleMetadata, OptionalFactoryDependency, Provider, Type } from '@nestjs/common';
import type { BidiOptions } from '../core/server';

/**
 * The core `BidiOptions` without the hooks (`onOpen`, `onMessage`, `onClose`
 * come from the `@OnOpen` / `@OnMessage` / `@OnClose` decorators). `store`
 * defaults to a `MemoryStore` (one process only).
 */
export type BidiWebModuleOptions<User = unknown, State extends object = Record<string, unknown>> = Omit<
  BidiOptions<User, State>,
  'onOpen' | 'onMessage' | 'onClose'
>;

export interface BidiWebModuleExtras {
  /** Register the module globally, so `BidiWebService` and the tokens inject anywhere. Default `true`. */
  global?: boolean;
}

/** For `forRootAsync({ useClass })` and `forRootAsync({ useExisting })`. */
export interface BidiWebOptionsFactory {
  createBidiWebOptions(): BidiWebModuleOptions<any, any> | Promise<BidiWebModuleOptions<any, any>>;
}

export interface BidiWebModuleAsyncOptions extends BidiWebModuleExtras, Pick<ModuleMetadata, 'imports'> {
  useFactory?: (...args: any[]) => BidiWebModuleOptions<any, any> | Promise<BidiWebModuleOptions<any, any>>;
  inject?: Array<InjectionToken | OptionalFactoryDependency>;
  useClass?: Type<BidiWebOptionsFactory>;
  useExisting?: InjectionToken<BidiWebOptionsFactory>;
  /** More providers for the module's scope (e.g. what the factory injects). */
  extraProviders?: Provider[];
}

/**
 * `@OnMessage(filter)`: a message matches when it is a JSON object whose own
 * fields equal every entry of the filter (`{ type: 'say' }`).
 */
export type MessageFilter = Readonly<Record<string, string | number | boolean | null>>;

export type BidiHandlerMetadata = { kind: 'open' } | { kind: 'close' } | { kind: 'message'; filter: MessageFilter };
