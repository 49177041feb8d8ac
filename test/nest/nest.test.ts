/**
 * What is specific to the NestJS module: forRoot / forRootAsync, handler
 * discovery and routing, bootstrap errors, the push service, the tokens,
 * where the routes are mounted on Express and on Fastify, and unsupported
 * platforms. (The protocol itself runs through Nest in test/protocol,
 * targets 'nest' and 'nest-fastify'.)
 */
import { All, Controller, Get, Injectable, Module, Post, Scope } from '@nestjs/common';
import type { DynamicModule, INestApplication, INestApplicationContext, Type } from '@nestjs/common';
import { AbstractHttpAdapter, HttpAdapterHost, NestFactory } from '@nestjs/core';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import type { AddressInfo } from 'node:net';
import { ReplaySubject } from 'rxjs';
import {
  BIDIWEB_OPTIONS,
  BIDIWEB_SERVER,
  BIDIWEB_STORE,
  BidiError,
  BidiServer,
  BidiWebModule,
  BidiWebService,
  MemoryStore,
  OnClose,
  OnMessage,
  OnOpen,
  reject,
  UnhandledMessageError,
} from '../../src/nest';
import type { BidiWebModuleOptions, BidiWebOptionsFactory, MessageInfo, OpenRequest, ServerSession, Store } from '../../src/nest';
import { sessionLabel } from '../../src/nest';
import { BidiWebHttpMount } from '../../src/nest/mount';
import { Wire } from '../helpers/wire';

const quiet: BidiWebModuleOptions = { sweepInterval: 0, onError: () => {} };

interface Booted {
  app: INestApplication;
  origin: string;
  wire: Wire;
}

const apps: INestApplicationContext[] = [];
afterEach(async () => {
  for (const app of apps.splice(0)) {
    (app as INestApplication).getHttpServer?.()?.closeAllConnections?.();
    await app.close();
  }
});

function moduleOf(imports: Array<DynamicModule | Type>, providers: any[] = [], controllers: Type[] = []): DynamicModule {
  @Module({})
  class TestAppModule {}
  return { module: TestAppModule, imports, providers, controllers };
}

async function boot(module: DynamicModule, adapter?: AbstractHttpAdapter, path = '/session'): Promise<Booted> {
  const app = adapter
    ? await NestFactory.create(module, adapter, { logger: false, abortOnError: false })
    : await NestFactory.create(module, { logger: false, abortOnError: false });
  apps.push(app);
  await app.listen(0, '127.0.0.1');
  const origin = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
  return { app, origin, wire: new Wire(origin + path) };
}

/** Bootstrap that is expected to fail: the error, with the app closed. */
async function bootError(module: DynamicModule, adapter?: AbstractHttpAdapter): Promise<Error> {
  const app = adapter
    ? await NestFactory.create(module, adapter, { logger: false, abortOnError: false })
    : await NestFactory.create(module, { logger: false, abortOnError: false });
  apps.push(app);
  return app.init().then(
    () => {
      throw new Error('bootstrap succeeded');
    },
    (err: Error) => err,
  );
}

/** Records every hook call with its arguments. */
@Injectable()
class RecordingHandlers {
  readonly calls: Array<[string, ...unknown[]]> = [];

  @OnOpen()
  open(session: ServerSession, request: OpenRequest) {
    const meta = request.meta as { nick?: string } | null;
    if (meta?.nick === 'mallory') throw reject(403, 'not you');
    session.user = { nick: meta?.nick };
    this.calls.push(['open', request.meta, request.headers.get('x-test')]);
  }

  @OnMessage()
  async message(session: ServerSession, data: unknown, info: MessageInfo) {
    this.calls.push(['message', data, info.seq]);
    await session.send({ echo: data, user: session.user });
  }

  @OnClose()
  close(_session: ServerSession, reason: string) {
    this.calls.push(['close', reason]);
  }
}

describe('BidiWebModule.forRoot', () => {
  it('mounts the routes and wires decorated provider methods with the core signatures', async () => {
    const { app, wire } = await boot(moduleOf([BidiWebModule.forRoot(quiet)], [RecordingHandlers]));
    const handlers = app.get(RecordingHandlers);
    const open = await wire.open({ v: 1, meta: { nick: 'ann' } }, { 'x-test': 'yes' });
    expect(open.status).toBe(201);
    const sid = open.body.sid;
    expect((await wire.send(sid, [[1, 'hi'], [2, { n: 2 }]])).body).toEqual({ ack: 2 });
    expect((await wire.collect(sid, 2)).msgs).toEqual([
      [1, { echo: 'hi', user: { nick: 'ann' } }],
      [2, { echo: { n: 2 }, user: { nick: 'ann' } }],
    ]);
    await wire.close(sid);
    expect(handlers.calls).toEqual([
      ['open', { nick: 'ann' }, 'yes'],
      ['message', 'hi', 1],
      ['message', { n: 2 }, 2],
      ['close', 'client'],
    ]);
  });

  it('lets @OnOpen reject a session', async () => {
    const { wire } = await boot(moduleOf([BidiWebModule.forRoot(quiet)], [RecordingHandlers]));
    const r = await wire.open({ v: 1, meta: { nick: 'mallory' } });
    expect([r.status, r.body]).toEqual([403, { error: { code: 'REJECTED', message: 'not you' } }]);
  });

  it('discovers handlers on a controller, next to its ordinary routes', async () => {
    const seen: unknown[] = [];
    @Controller('api')
    class LiveController {
      @Get('ping')
      ping() {
        return { pong: true };
      }
      @OnMessage()
      onMessage(_session: ServerSession, data: unknown) {
        seen.push(data);
      }
    }
    const { origin, wire } = await boot(moduleOf([BidiWebModule.forRoot({ ...quiet, path: '/live' })], [], [LiveController]));
    expect(await (await fetch(`${origin}/api/ping`)).json()).toEqual({ pong: true });
    const sid = await new Wire(`${origin}/live`).openSid();
    expect((await new Wire(`${origin}/live`).send(sid, [[1, 'via controller']])).body).toEqual({ ack: 1 });
    expect(seen).toEqual(['via controller']);
    expect((await wire.open()).status).toBe(404); // /session is not ours here: Nest's own 404
  });

  it('rejects the hooks as options: they come from decorators', async () => {
    const options = { ...quiet, onMessage: () => {} } as BidiWebModuleOptions;
    await expect(NestFactory.create(moduleOf([BidiWebModule.forRoot(options)]), { logger: false, abortOnError: false })).rejects.toThrow(
      /take no onMessage: decorate a provider method with @OnMessage\(\)/,
    );
  });

  it('is global: BidiWebService injects in a module that does not import it', async () => {
    @Injectable()
    class Pusher {
      constructor(readonly bidi: BidiWebService) {}
    }
    @Module({ providers: [Pusher], exports: [Pusher] })
    class FeatureModule {}
    const { app } = await boot(moduleOf([BidiWebModule.forRoot(quiet), FeatureModule]));
    expect(app.get(Pusher).bidi).toBe(app.get(BidiWebService));
  });
});

describe('BidiWebModule.forRootAsync', () => {
  const CONFIG = Symbol('CONFIG');
  const store = new MemoryStore();
  @Module({ providers: [{ provide: CONFIG, useValue: { path: '/from-config', store } }], exports: [CONFIG] })
  class ConfigModule {}

  it('takes useFactory + inject (+ imports)', async () => {
    const { app, origin } = await boot(
      moduleOf([
        BidiWebModule.forRootAsync({
          imports: [ConfigModule],
          inject: [CONFIG],
          useFactory: async (config: { path: string; store: Store }) => ({ ...quiet, path: config.path, store: config.store }),
        }),
      ]),
    );
    expect(app.get(BIDIWEB_STORE)).toBe(store);
    expect(app.get(BIDIWEB_OPTIONS)).toMatchObject({ path: '/from-config' });
    expect((await new Wire(`${origin}/from-config`).open()).status).toBe(201);
  });

  it('takes useClass', async () => {
    @Injectable()
    class BidiConfig implements BidiWebOptionsFactory {
      createBidiWebOptions(): BidiWebModuleOptions {
        return { ...quiet, path: '/by-class', wait: 1234 };
      }
    }
    const { origin } = await boot(moduleOf([BidiWebModule.forRootAsync({ useClass: BidiConfig })]));
    const r = await new Wire(`${origin}/by-class`).open();
    expect([r.status, r.body.wait]).toEqual([201, 1234]);
  });

  it('takes useExisting (a factory exported by an imported module)', async () => {
    @Injectable()
    class SharedConfig implements BidiWebOptionsFactory {
      createBidiWebOptions(): BidiWebModuleOptions {
        return { ...quiet, path: '/existing' };
      }
    }
    @Module({ providers: [SharedConfig], exports: [SharedConfig] })
    class SharedModule {}
    const { origin } = await boot(moduleOf([BidiWebModule.forRootAsync({ imports: [SharedModule], useExisting: SharedConfig })]));
    expect((await new Wire(`${origin}/existing`).open()).status).toBe(201);
  });

  it('needs one of useFactory, useClass, useExisting', () => {
    expect(() => BidiWebModule.forRootAsync({})).toThrow(/needs useFactory, useClass or useExisting/);
  });
});

describe('tokens and BidiWebService', () => {
  it('injects the store, the core server and the options by token; builds a MemoryStore by default and disposes it', async () => {
    const { app, wire } = await boot(moduleOf([BidiWebModule.forRoot({ ...quiet, path: '/session' })]));
    const store = app.get<Store>(BIDIWEB_STORE);
    expect(store).toBeInstanceOf(MemoryStore);
    const server = app.get<BidiServer>(BIDIWEB_SERVER);
    expect(server).toBeInstanceOf(BidiServer);
    expect(server.store).toBe(store);
    expect(app.get(BIDIWEB_OPTIONS)).toMatchObject({ path: '/session' });
    await wire.openSid();
    expect((store as MemoryStore).size).toBe(1);
    const dispose = jest.spyOn(store as MemoryStore, 'dispose');
    app.getHttpServer().closeAllConnections();
    await app.close();
    apps.splice(apps.indexOf(app), 1);
    expect(dispose).toHaveBeenCalledTimes(1);
  });

  it('leaves a store it was given open at shutdown', async () => {
    const store = new MemoryStore();
    const dispose = jest.spyOn(store, 'dispose');
    const { app } = await boot(moduleOf([BidiWebModule.forRoot({ ...quiet, store })]));
    expect(app.get(BIDIWEB_STORE)).toBe(store);
    app.getHttpServer().closeAllConnections();
    await app.close();
    apps.splice(apps.indexOf(app), 1);
    expect(dispose).not.toHaveBeenCalled();
  });

  it('pushes from anywhere: send, broadcast, publish, close reach the client in order', async () => {
    @Injectable()
    class Rooms {
      @OnOpen()
      async open(session: ServerSession) {
        await session.join('room:a');
      }
    }
    const { app, wire } = await boot(moduleOf([BidiWebModule.forRoot(quiet)], [Rooms]));
    const bidi = app.get(BidiWebService);
    const [a, b] = [await wire.openSid(), await wire.openSid()];
    expect(await bidi.send(a, 'one')).toBe(1);
    expect(await bidi.broadcast([a, b], 'two')).toEqual({ sent: 2, failed: [] });
    expect((await bidi.publish('room:a', 'three')).sent).toBe(2);
    expect(await bidi.hub.members('room:a')).toHaveLength(2);
    await bidi.close(a, 'bye');
    expect(await wire.collect(a, 3)).toEqual({
      msgs: [
        [1, 'one'],
        [2, 'two'],
        [3, 'three'],
      ],
      close: { seq: 4, reason: 'bye' },
    });
    expect((await wire.collect(b, 2)).msgs).toEqual([
      [1, 'two'],
      [2, 'three'],
    ]);
  });

  it('works in a standalone application context (a worker): nothing mounted, the service pushes through the store', async () => {
    const store = new MemoryStore();
    const web = await boot(moduleOf([BidiWebModule.forRoot({ ...quiet, store })]));
    const sid = await web.wire.openSid();
    const worker = await NestFactory.createApplicationContext(moduleOf([BidiWebModule.forRoot({ ...quiet, store })]), { logger: false, abortOnError: false });
    apps.push(worker);
    await worker.get(BidiWebService).send(sid, 'from the worker');
    expect((await web.wire.collect(sid, 1)).msgs).toEqual([[1, 'from the worker']]);
  });
});

describe('@OnMessage filters', () => {
  it('routes by field equality: the most specific filter wins, the catch-all comes last', async () => {
    const got: Array<[string, unknown, number]> = [];
    @Injectable()
    class Chat {
      @OnMessage({ type: 'say' })
      say(_s: ServerSession, data: unknown, info: MessageInfo) {
        got.push(['say', data, info.seq]);
      }
      @OnMessage({ type: 'say', room: 'ops' })
      sayOps(_s: ServerSession, data: unknown) {
        got.push(['sayOps', data, 0]);
      }
      @OnMessage({ type: 'ping' })
      @OnMessage({ type: 'pong' })
      pingPong(_s: ServerSession, data: unknown) {
        got.push(['pingPong', data, 0]);
      }
    }
    @Injectable()
    class Fallback {
      @OnMessage()
      other(_s: ServerSession, data: unknown) {
        got.push(['other', data, 0]);
      }
    }
    const { wire } = await boot(moduleOf([BidiWebModule.forRoot(quiet)], [Fallback, Chat]));
    const sid = await wire.openSid();
    const msgs: unknown[] = [
      { type: 'say', text: 'hi' },
      { type: 'say', room: 'ops', text: 'deploy' },
      { type: 'say', room: 'dev' },
      { type: 'ping' },
      { type: 'pong' },
      { type: 'shout' },
      'a string',
      ['type', 'say'],
      null,
    ];
    await wire.send(sid, msgs.map((m, i) => [i + 1, m] as [number, unknown]));
    expect(got.map(([name]) => name)).toEqual(['say', 'sayOps', 'say', 'pingPong', 'pingPong', 'other', 'other', 'other', 'other']);
    expect(got[0]).toEqual(['say', { type: 'say', text: 'hi' }, 1]);
  });

  it('reports a message no filter matches to onError as UnhandledMessageError and consumes it', async () => {
    const errors: Array<[unknown, unknown]> = [];
    const seen: unknown[] = [];
    @Injectable()
    class OnlySay {
      @OnMessage({ type: 'say' })
      say(_s: ServerSession, data: unknown) {
        seen.push(data);
      }
    }
    const { wire } = await boot(moduleOf([BidiWebModule.forRoot({ ...quiet, onError: (e, ctx) => void errors.push([e, ctx]) })], [OnlySay]));
    const sid = await wire.openSid();
    expect((await wire.send(sid, [[1, { type: 'shout' }], [2, { type: 'say' }]])).body).toEqual({ ack: 2 });
    expect(seen).toEqual([{ type: 'say' }]);
    expect(errors).toEqual([[expect.any(UnhandledMessageError), { phase: 'message', seq: 1, session: sessionLabel(sid) }]]);
    expect((errors[0]![0] as UnhandledMessageError).seq).toBe(1);
  });

  it('refuses filters that are not objects of primitives', () => {
    expect(() => OnMessage({ type: { nested: true } } as never)).toThrow(/must be a string, a finite number, a boolean or null/);
    expect(() => OnMessage(['say'] as never)).toThrow(/must be an object/);
  });
});

describe('bootstrap errors', () => {
  it.each([
    [
      'two @OnOpen',
      () => {
        class A {
          @OnOpen() a() {}
        }
        class B {
          @OnOpen() b() {}
        }
        return [A, B];
      },
      /only one @OnOpen handler is allowed; found A\.a and B\.b/,
    ],
    [
      'two @OnClose',
      () => {
        class A {
          @OnClose() a() {}
          @OnClose() b() {}
        }
        return [A];
      },
      /only one @OnClose handler is allowed; found A\.a and A\.b/,
    ],
    [
      'two @OnMessage with the same filter',
      () => {
        class A {
          @OnMessage({ type: 'say' }) a() {}
        }
        class B {
          @OnMessage({ type: 'say' }) b() {}
        }
        return [A, B];
      },
      /two @OnMessage handlers with the filter \{"type":"say"\}: A\.a and B\.b/,
    ],
    [
      'two catch-all @OnMessage',
      () => {
        class A {
          @OnMessage() a() {}
          @OnMessage() b() {}
        }
        return [A];
      },
      /two @OnMessage handlers with the filter \(none: every message\)/,
    ],
    [
      'overlapping @OnMessage filters neither of which refines the other',
      () => {
        class A {
          @OnMessage({ type: 'say' }) a() {}
          @OnMessage({ room: 'ops' }) b() {}
        }
        return [A];
      },
      /can both match one message, e\.g\. \{"type":"say","room":"ops"\}/,
    ],
  ])('%s', async (_name, make, message) => {
    const providers = (make as () => Type[])().map((cls) => (Injectable()(cls), cls));
    const err = await bootError(moduleOf([BidiWebModule.forRoot(quiet)], providers));
    expect(err.message).toMatch(message as RegExp);
  });

  it('counts a provider registered under two tokens (useExisting alias, same instance) once', async () => {
    @Injectable()
    class Handlers {
      @OnOpen() open() {}
    }
    const { wire } = await boot(
      moduleOf(
        [BidiWebModule.forRoot(quiet)],
        [Handlers, { provide: 'ALIAS', useExisting: Handlers }, { provide: 'SAME', useFactory: (h: Handlers) => h, inject: [Handlers] }],
      ),
    );
    expect((await wire.open()).status).toBe(201);
  });

  it('refuses handlers on a request-scoped provider', async () => {
    @Injectable({ scope: Scope.REQUEST })
    class PerRequest {
      @OnMessage() m() {}
    }
    const err = await bootError(moduleOf([BidiWebModule.forRoot(quiet)], [PerRequest]));
    expect(err.message).toMatch(/PerRequest has bidiweb handlers but is request-scoped .* put them on a singleton/);
  });

  it('refuses handlers on a provider that depends on a request-scoped one', async () => {
    @Injectable({ scope: Scope.REQUEST })
    class RequestContext {}
    @Injectable()
    class Handlers {
      constructor(readonly ctx: RequestContext) {}
      @OnOpen() open() {}
    }
    const err = await bootError(moduleOf([BidiWebModule.forRoot(quiet)], [RequestContext, Handlers]));
    expect(err.message).toMatch(/Handlers has bidiweb handlers but is request-scoped \(or depends on a request-scoped provider\)/);
  });

  it('refuses handlers on a transient provider', async () => {
    @Injectable({ scope: Scope.TRANSIENT })
    class Fresh {
      @OnClose() c() {}
    }
    const err = await bootError(moduleOf([BidiWebModule.forRoot(quiet)], [Fresh]));
    expect(err.message).toMatch(/Fresh has bidiweb handlers but is transient/);
  });

  it('ignores request-scoped providers without handlers', async () => {
    @Injectable({ scope: Scope.REQUEST })
    class PerRequest {
      hello() {}
    }
    const { wire } = await boot(moduleOf([BidiWebModule.forRoot(quiet)], [PerRequest]));
    expect((await wire.open()).status).toBe(201);
  });
});

/** Routes that would take bidiweb's requests if they came first (one on its path, a catch-all), and an ordinary one. */
function greedyRoutes(catchAll: string): Type {
  @Controller()
  class Greedy {
    @Post('session')
    shadow() {
      return 'shadowed';
    }
    @Get('hello')
    hello() {
      return 'world';
    }
    @All(catchAll)
    other() {
      return 'other';
    }
  }
  return Greedy;
}

/** Handlers that keep each message's data and each open's `raw` request. */
function sink(): { Sink: Type; seen: unknown[]; raws: unknown[] } {
  const seen: unknown[] = [];
  const raws: unknown[] = [];
  @Injectable()
  class Sink {
    @OnOpen() open(_s: ServerSession, request: OpenRequest) {
      raws.push(request.raw);
    }
    @OnMessage() m(_s: ServerSession, d: unknown) {
      seen.push(d);
    }
  }
  return { Sink, seen, raws };
}

describe('mounting on the Express platform', () => {
  it('comes before Nest body parsing, middleware and routes (even a catch-all), and leaves other paths to Nest', async () => {
    const { Sink, seen } = sink();
    const { app, origin, wire } = await boot(moduleOf([BidiWebModule.forRoot(quiet)], [Sink], [greedyRoutes('other/*rest')]));
    expect(app.get(HttpAdapterHost).httpAdapter.getType()).toBe('express');
    const sid = await wire.openSid();
    // Malformed JSON gets bidiweb's answer, not Nest's body parser's.
    const bad = await wire.sendRaw(sid, '{"msgs":');
    expect([bad.status, bad.body]).toEqual([400, { error: { code: 'BAD_REQUEST', message: expect.any(String) } }]);
    // Above Nest's default JSON limit (100 kB), within bidiweb's (1 MB).
    const big = 'x'.repeat(200_000);
    expect((await wire.send(sid, [[1, big]])).body).toEqual({ ack: 1 });
    expect(seen).toEqual([big]);
    expect(await (await fetch(`${origin}/hello`)).text()).toBe('world');
    expect(await (await fetch(`${origin}/other/x`, { method: 'POST' })).text()).toBe('other');
    const missing = await fetch(`${origin}/nope`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ statusCode: 404 }); // Nest's own 404
  });

  it('mounts when the adapter arrives after the providers were built (as with Test.createTestingModule)', async () => {
    const used: unknown[] = [];
    const adapter = { getType: () => 'express', getInstance: () => ({ use: (h: unknown) => used.push(h) }) };
    const host = { init$: new ReplaySubject<void>(), httpAdapter: undefined as unknown };
    const server = new BidiServer({ sweepInterval: 0 });
    const mount = new BidiWebHttpMount(host as unknown as HttpAdapterHost, server, new MemoryStore(), {});
    expect(used).toHaveLength(0);
    host.httpAdapter = adapter;
    host.init$.next();
    expect(used).toHaveLength(1);
    mount.onModuleInit(); // no second mount
    expect(used).toHaveLength(1);
    await mount.onApplicationShutdown();
  });
});

describe('mounting on the Fastify platform', () => {
  it('comes before Fastify body parsing and routes (even one on its path), and leaves other paths to Nest', async () => {
    const { Sink, seen, raws } = sink();
    const throughMiddleware: string[] = [];
    // Fastify's body limit below bidiweb's: a body between the two shows that Fastify never reads ours.
    const adapter = new FastifyAdapter({ bodyLimit: 100_000 });
    const app = await NestFactory.create<NestFastifyApplication>(moduleOf([BidiWebModule.forRoot(quiet)], [Sink], [greedyRoutes('other/*')]), adapter, {
      logger: false,
      abortOnError: false,
    });
    apps.push(app);
    app.use((req: { url: string }, _res: unknown, next: () => void) => {
      throughMiddleware.push(req.url);
      next();
    });
    await app.listen(0, '127.0.0.1');
    const origin = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}`;
    const wire = new Wire(`${origin}/session`);
    expect(app.get(HttpAdapterHost).httpAdapter.getType()).toBe('fastify');
    const sid = await wire.openSid();
    expect(raws[0]).toHaveProperty('raw.url', '/session'); // the FastifyRequest
    // Malformed JSON gets bidiweb's answer, not Fastify's JSON parser's.
    const bad = await wire.sendRaw(sid, '{"msgs":');
    expect([bad.status, bad.body]).toEqual([400, { error: { code: 'BAD_REQUEST', message: expect.any(String) } }]);
    const big = 'x'.repeat(200_000);
    expect((await wire.send(sid, [[1, big]])).body).toEqual({ ack: 1 });
    expect(seen).toEqual([big]);
    // A content type Fastify has no parser for: bidiweb's 415, not Fastify's.
    const form = await fetch(`${origin}/session/send`, { method: 'POST', headers: { 'bidi-sid': sid, 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1' });
    expect([form.status, (await form.json()).error.code]).toEqual([415, 'UNSUPPORTED_MEDIA_TYPE']);
    expect(await (await fetch(`${origin}/hello`)).text()).toBe('world');
    expect(await (await fetch(`${origin}/other/x`, { method: 'POST' })).text()).toBe('other');
    const missing = await fetch(`${origin}/nope`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ statusCode: 404 }); // Nest's own 404
    // Nest middleware runs first on Fastify (its engine, middie, hooks in at NestFactory.create, before any provider exists).
    expect(throughMiddleware).toEqual(['/session', '/session/send', '/session/send', '/session/send', '/hello', '/other/x', '/nope']);
  });

  it('serves app.inject() (light-my-request), as Nest tests on Fastify use it', async () => {
    const app = await NestFactory.create<NestFastifyApplication>(moduleOf([BidiWebModule.forRoot(quiet)], [RecordingHandlers]), new FastifyAdapter(), {
      logger: false,
      abortOnError: false,
    });
    apps.push(app);
    await app.init();
    const json = { 'content-type': 'application/json' };
    const open = await app.inject({ method: 'POST', url: '/session', headers: json, payload: JSON.stringify({ v: 1, meta: { nick: 'ann' } }) });
    expect(open.statusCode).toBe(201);
    const sid = open.json().sid as string;
    const sent = await app.inject({ method: 'POST', url: '/session/send', headers: { ...json, 'bidi-sid': sid }, payload: '{"msgs":[[1,"hi"]]}' });
    expect([sent.statusCode, sent.json()]).toEqual([200, { ack: 1 }]);
    const watch = await app.inject({ method: 'GET', url: '/session/watch?ack=0&wait=0', headers: { 'bidi-sid': sid } });
    expect(watch.json().msgs).toEqual([[1, { echo: 'hi', user: { nick: 'ann' } }]]);
  });

  it('streams a watch on the hijacked reply: each frame as it comes, not when the response ends', async () => {
    const app = await NestFactory.create<NestFastifyApplication>(moduleOf([BidiWebModule.forRoot({ ...quiet, heartbeatMs: 0 })]), new FastifyAdapter(), {
      logger: false,
      abortOnError: false,
    });
    apps.push(app);
    await app.listen(0, '127.0.0.1');
    const url = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}/session`;
    const sid = await new Wire(url).openSid();
    const watch = await fetch(`${url}/watch?ack=0&wait=5000&stream=1`, { headers: { 'bidi-sid': sid } });
    expect([watch.status, watch.headers.get('content-type')]).toEqual([200, 'application/x-ndjson; charset=utf-8']);
    const reader = watch.body!.pipeThrough(new TextDecoderStream()).getReader();
    const bidi = app.get(BidiWebService);
    for (const n of [1, 2]) {
      await bidi.send(sid, { n });
      let line = '';
      while (!line.endsWith('\n')) line += (await reader.read()).value ?? '';
      expect(JSON.parse(line)).toEqual({ msgs: [[n, { n }]], ack: 0 });
    }
    await reader.cancel();
  });

  it("keeps refusing origins bidiweb does not allow though Nest's enableCors() hook runs first on Fastify", async () => {
    const app = await NestFactory.create<NestFastifyApplication>(moduleOf([BidiWebModule.forRoot(quiet)]), new FastifyAdapter(), { logger: false, abortOnError: false });
    apps.push(app);
    app.enableCors(); // any origin, for Nest's own routes
    await app.listen(0, '127.0.0.1');
    const url = `http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}/session`;
    const cross = { origin: 'http://elsewhere.example' };
    // The preflight is Nest's (its CORS hook precedes every other onRequest hook)...
    const preflight = await fetch(url, { method: 'OPTIONS', headers: { ...cross, 'access-control-request-method': 'POST' } });
    expect(preflight.status).toBe(204);
    // ...the request itself is bidiweb's, closed to other origins by default.
    const open = await fetch(url, { method: 'POST', headers: { ...cross, 'content-type': 'application/json' }, body: '{"v":1}' });
    expect([open.status, (await open.json()).error.code]).toEqual([403, 'CORS_FORBIDDEN']);
  });
});

describe('unsupported platforms', () => {
  class FakeHyperExpressAdapter extends ExpressAdapter {
    override getType(): string {
      return 'hyper-express';
    }
  }

  it('fail at startup with a clear message', async () => {
    const err = await bootError(moduleOf([BidiWebModule.forRoot(quiet)], [RecordingHandlers]), new FakeHyperExpressAdapter());
    expect(err).toBeInstanceOf(BidiError);
    expect((err as BidiError).code).toBe('INVALID_OPTIONS');
    expect(err.message).toMatch(/BidiWebModule does not support the "hyper-express" HTTP platform: it mounts on express and fastify/);
  });

  it('fail in onModuleInit given a host whose adapter is neither, mounting nothing', () => {
    const use = jest.fn();
    const host = { httpAdapter: { getType: () => 'koa', getInstance: () => ({ use }) } };
    const mount = new BidiWebHttpMount(host as unknown as HttpAdapterHost, new BidiServer({ sweepInterval: 0 }), new MemoryStore(), {});
    expect(() => mount.onModuleInit()).toThrow(/does not support the "koa" HTTP platform/);
    expect(use).not.toHaveBeenCalled();
    return mount.onApplicationShutdown();
  });
});
