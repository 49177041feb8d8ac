import { Inject, Injectable } from '@nestjs/common';
import type { OnModuleInit } from '@nestjs/common';
import { DiscoveryService, MetadataScanner, Reflector } from '@nestjs/core';
import { BidiError } from '../core/errors';
import { BIDIWEB_HANDLER_METADATA } from './constants';
import { BidiWebHandlers } from './handlers';
import type { BidiHandlerMetadata } from './interfaces';

/**
 * Finds `@OnOpen` / `@OnMessage` / `@OnClose` methods on every provider and
 * controller and registers them, bound to their instance. Runs in
 * `onModuleInit`, before the application listens.
 *
 * Handlers must live on singleton (default-scoped) classes: they run outside
 * any Nest request (a client's request to another instance, a timer, an
 * expiry sweep), so a request-scoped or transient class is refused at
 * bootstrap rather than skipped.
 */
@Injectable()
export class BidiWebExplorer implements OnModuleInit {
  // Explicit tokens throughout: bundlers and tsx (esbuild) emit no decorator metadata.
  constructor(
    @Inject(DiscoveryService) private readonly discovery: DiscoveryService,
    @Inject(MetadataScanner) private readonly scanner: MetadataScanner,
    @Inject(Reflector) private readonly reflector: Reflector,
    @Inject(BidiWebHandlers) private readonly handlers: BidiWebHandlers,
  ) {}

  onModuleInit(): void {
    const seen = new Set<object>();
    for (const wrapper of [...this.discovery.getProviders(), ...this.discovery.getControllers()]) {
      if (wrapper.isAlias) continue;
      // A class provider's prototype even when it has no static instance (request-scoped); else the instance's.
      const isClass = typeof wrapper.metatype === 'function' && !wrapper.inject;
      const prototype: object | undefined = isClass
        ? (wrapper.metatype as { prototype?: object }).prototype
        : wrapper.instance
          ? Object.getPrototypeOf(wrapper.instance)
          : undefined;
      if (!prototype) continue;
      const found = this.scan(prototype);
      if (found.length === 0) continue;
      const where = (wrapper.metatype as { name?: string } | null)?.name || String(wrapper.name);
      if (!wrapper.isDependencyTreeStatic() || wrapper.isTransient) {
        throw new BidiError(
          'INVALID_OPTIONS',
          `${where} has bidiweb handlers but is ${wrapper.isTransient ? 'transient' : 'request-scoped (or depends on a request-scoped provider)'}; ` +
            'handlers run outside any HTTP request of Nest, so put them on a singleton (default-scoped) provider or controller',
        );
      }
      const instance = wrapper.instance as Record<string, (...args: unknown[]) => unknown> | undefined;
      // The same object under two tokens (e.g. a useValue of an instance) is one set of handlers.
      if (!instance || seen.has(instance)) continue;
      seen.add(instance);
      for (const { method, metas } of found) {
        const fn = instance[method]!.bind(instance);
        for (const meta of metas) this.handlers.add(meta, fn, `${where}.${method}`);
      }
    }
  }

  private scan(prototype: object): Array<{ method: string; metas: BidiHandlerMetadata[] }> {
    const out: Array<{ method: string; metas: BidiHandlerMetadata[] }> = [];
    for (const method of this.scanner.getAllMethodNames(prototype)) {
      const fn = (prototype as Record<string, unknown>)[method];
      if (typeof fn !== 'function') continue;
      const metas = this.reflector.get<BidiHandlerMetadata[] | undefined>(BIDIWEB_HANDLER_METADATA, fn);
      if (metas?.length) out.push({ method, metas });
    }
    return out;
  }
}
