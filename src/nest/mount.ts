import { Inject, Injectable } from '@nestjs/common';
import type { OnApplicationShutdown, OnModuleInit } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BidiError } from '../core/errors';
import { BidiServer } from '../core/server';
import type { Store } from '../core/store';
import { createNodeHandler, toBidiRequest, writeBidiResponse } from '../node/bridge';
import { connectMiddleware } from '../node/middleware';
import { BIDIWEB_OPTIONS, BIDIWEB_SERVER, BIDIWEB_STORE } from './constants';
import type { BidiWebModuleOptions } from './interfaces';

/** The little of each platform's instance that mounting uses (no import of either platform). */
interface ExpressInstance {
  use(middleware: ReturnType<typeof connectMiddleware>): unknown;
}
interface FastifyInstance {
  addHook(name: 'onRequest', hook: (request: { raw: IncomingMessage }, reply: { raw: ServerResponse; hijack(): void }) => Promise<void>): unknown;
}

/**
 * How to put the core in front of Nest's body parsing and routes on each
 * platform. Both hand Node's own request and response to the bridge, which
 * reads and limits the body itself and answers every error in bidiweb's JSON
 * shape.
 */
const PLATFORMS: Record<string, (instance: any, server: BidiServer<any, any>) => void> = {
  express(app: ExpressInstance, server) {
    app.use(connectMiddleware(createNodeHandler(server)));
  },
  // An onRequest hook, not routes: it runs before Fastify parses the body, and shadows a
  // controller route on the same path instead of clashing with it. (Nest's CORS hook and
  // middleware engine, middie, are hooks added when the app is created: they run first.)
  fastify(app: FastifyInstance, server) {
    app.addHook('onRequest', async (request, reply) => {
      const response = await server.handle(toBidiRequest(request.raw, reply.raw, request));
      if (!response) return; // not our path: on to the route Fastify found
      reply.hijack(); // Fastify neither parses this body nor writes this reply
      writeBidiResponse(reply.raw, response, { drainTimeout: server.drainTimeout });
    });
  },
};

/**
 * Mounts the core on the HTTP platform under the Nest app (Express or
 * Fastify), and disposes what the module built at shutdown.
 *
 * When: as soon as the HTTP adapter exists (`NestFactory.create`: while
 * providers are built; `Test.createTestingModule`: at
 * `createNestApplication()`), so the session routes come before Nest's body
 * parser (registered first thing in `app.init()`) and every controller route,
 * and on Express before `app.use()` middleware too.
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
    const mountOn = Object.hasOwn(PLATFORMS, type) ? PLATFORMS[type] : undefined;
    if (!mountOn) {
      if (strict) throw unsupported(type);
      return;
    }
    mountOn(adapter.getInstance(), this.server);
    this.mounted = true;
  }
}

function unsupported(type: string): BidiError {
  return new BidiError(
    'INVALID_OPTIONS',
    `BidiWebModule does not support the "${type}" HTTP platform: it mounts on ${Object.keys(PLATFORMS).join(' and ')} ` +
      '(@nestjs/platform-express, the default of NestFactory.create, or @nestjs/platform-fastify). ' +
      'Serve BIDIWEB_SERVER yourself on others (bidiweb/node createNodeHandler, or toFetchHandler).',
  );
}
