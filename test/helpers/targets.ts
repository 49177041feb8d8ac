/**
 * Ways to serve the same core, so one protocol suite runs against each:
 * the Express and Koa adapters, the NestJS module on its Express and its
 * Fastify platform (decorated handlers that forward to the options' hooks),
 * the Fetch handler behind a tiny Node
 * server, and the statelessness check (a freshly constructed server object
 * per request, sharing only the store).
 */
import { Injectable } from '@nestjs/common';
import type { INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import express from 'express';
import Koa from 'koa';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import type { BidiOptions, Hub, Store } from '../../src/core';
import { BidiServer, MemoryStore, toFetchHandler } from '../../src/core';
import { bidiWeb } from '../../src/express';
import { bidiWeb as bidiWebKoa } from '../../src/koa';
import { BIDIWEB_SERVER, BidiWebModule, OnClose, OnMessage, OnOpen } from '../../src/nest';

export type TargetKind = 'express' | 'koa' | 'nest' | 'nest-fastify' | 'fetch' | 'stateless';

export interface Target {
  kind: TargetKind;
  http: http.Server;
  /** e.g. http://127.0.0.1:1234/session */
  url: string;
  /** A hub on a server object of its own: pushes "from another instance". */
  hub: Hub<any, any>;
  store: Store;
  /** Runs an expiry sweep as a scheduled function would. */
  sweep(): Promise<number>;
  close(): Promise<void>;
}

export const TARGET_KINDS: TargetKind[] = ['express', 'koa', 'nest', 'nest-fastify', 'fetch', 'stateless'];

function listen(server: http.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

export function fetchNodeServer(handler: (r: Request) => Promise<Response>): http.Server {
  return http.createServer(async (req, res) => {
    const controller = new AbortController();
    res.once('close', () => !res.writableFinished && controller.abort());
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD';
    const request = new Request(`http://${req.headers.host}${req.url}`, {
      method: req.method,
      headers: req.headers as Record<string, string>,
      body: hasBody ? (Readable.toWeb(req) as ReadableStream) : undefined,
      duplex: 'half',
      signal: controller.signal,
    } as RequestInit);
    const response = await handler(request);
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  });
}

export async function startTarget(kind: TargetKind, options: BidiOptions<any, any> = {}): Promise<Target> {
  const store = options.store ?? new MemoryStore();
  const opts: BidiOptions<any, any> = { sweepInterval: 0, ...options, store };
  const servers: BidiServer<any, any>[] = [];
  let server: http.Server;
  let nest: INestApplication | undefined;
  if (kind === 'express') {
    const mw = bidiWeb(opts);
    servers.push(mw.server);
    const app = express();
    app.use(mw);
    server = http.createServer(app);
  } else if (kind === 'koa') {
    const mw = bidiWebKoa(opts);
    servers.push(mw.server);
    const app = new Koa();
    app.use(mw);
    server = http.createServer(app.callback());
  } else if (kind === 'nest' || kind === 'nest-fastify') {
    nest = await startNest(opts, kind === 'nest-fastify');
    servers.push(nest.get(BIDIWEB_SERVER));
    server = nest.getHttpServer();
  } else if (kind === 'fetch') {
    const core = new BidiServer(opts);
    servers.push(core);
    server = fetchNodeServer(toFetchHandler(core));
  } else {
    const app = express();
    // Every request gets a brand-new server object: any state kept in process would be lost.
    app.use((req, res, next) => bidiWeb({ ...opts, sweepInterval: 0 })(req, res, next));
    server = http.createServer(app);
  }
  const other = new BidiServer({ ...opts, sweepInterval: 0 });
  servers.push(other);
  const port = nest ? await nest.listen(0, '127.0.0.1').then(() => (server.address() as AddressInfo).port) : await listen(server);
  return {
    kind,
    http: server,
    url: `http://127.0.0.1:${port}${opts.path ?? '/session'}`,
    hub: other.hub,
    store,
    sweep: () => new BidiServer({ ...opts, sweepInterval: 0 }).sweep(),
    close: async () => {
      server.closeAllConnections?.();
      if (nest) await nest.close();
      else await new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of servers) await s.dispose();
    },
  };
}

/**
 * The options' hooks, served through BidiWebModule: a provider whose
 * decorated methods forward to them, so the same suite runs through Nest's
 * discovery and mounting.
 */
async function startNest(options: BidiOptions<any, any>, onFastify: boolean): Promise<INestApplication> {
  const { onOpen, onMessage, onClose, ...moduleOptions } = options;
  @Injectable()
  class ForwardingHandlers {
    @OnOpen()
    open(...args: Parameters<NonNullable<BidiOptions['onOpen']>>) {
      return onOpen?.(...args);
    }
    @OnMessage()
    message(...args: Parameters<NonNullable<BidiOptions['onMessage']>>) {
      return onMessage?.(...args);
    }
    @OnClose()
    close(...args: Parameters<NonNullable<BidiOptions['onClose']>>) {
      return onClose?.(...args);
    }
  }
  const module = { module: class ProtocolTestModule {}, imports: [BidiWebModule.forRoot(moduleOptions)], providers: [ForwardingHandlers] };
  const settings = { logger: false as const, abortOnError: false };
  const app = onFastify ? await NestFactory.create(module, new FastifyAdapter(), settings) : await NestFactory.create(module, settings);
  await app.init();
  return app;
}
