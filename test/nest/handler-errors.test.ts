/**
 * A throwing `@OnMessage` handler is never silent: without an `onError`
 * option the error goes to Nest's logger (the app's logger settings apply),
 * never with the session id; the message is consumed (acked), as the README
 * documents, and the session goes on.
 */
import { Injectable, Module } from '@nestjs/common';
import type { DynamicModule, INestApplication, LoggerService } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { AddressInfo } from 'node:net';
import { BidiWebModule, OnMessage, sessionLabel } from '../../src/nest';
import type { ServerSession } from '../../src/nest';
import { Wire } from '../helpers/wire';

class RecordingLogger implements LoggerService {
  readonly errors: Array<{ message: unknown; rest: unknown[] }> = [];
  log() {}
  warn() {}
  debug() {}
  verbose() {}
  error(message: unknown, ...rest: unknown[]) {
    this.errors.push({ message, rest });
  }
}

@Injectable()
class Handlers {
  @OnMessage({ type: 'boom' })
  boom(): void {
    throw new Error('handler exploded');
  }

  @OnMessage()
  echo(session: ServerSession, data: unknown) {
    return session.send({ echo: data });
  }
}

let app: INestApplication | undefined;
afterEach(async () => {
  app?.getHttpServer()?.closeAllConnections?.();
  await app?.close();
  app = undefined;
});

async function boot(bidi: DynamicModule, logger: LoggerService): Promise<Wire> {
  @Module({ imports: [bidi], providers: [Handlers] })
  class AppModule {}
  app = await NestFactory.create(AppModule, { logger, abortOnError: false });
  await app.listen(0, '127.0.0.1');
  return new Wire(`http://127.0.0.1:${(app.getHttpServer().address() as AddressInfo).port}/session`);
}

it('logs a throwing handler through Nest by default, acks the message and keeps the session', async () => {
  const logger = new RecordingLogger();
  const wire = await boot(BidiWebModule.forRoot({ sweepInterval: 0 }), logger);
  const sid = await wire.openSid();

  // What the client sees: the send is acked like any other; nothing else.
  expect((await wire.send(sid, [[1, { type: 'boom' }], [2, { type: 'ping' }]])).body).toEqual({ ack: 2 });
  const { msgs } = await wire.collect(sid, 1);
  expect(msgs).toEqual([[1, { echo: { type: 'ping' } }]]);

  const logged = logger.errors.filter((e) => String(e.message).includes('handler exploded'));
  expect(logged).toHaveLength(1);
  // The session's label (sessionLabel), never its id.
  expect(logged[0]!.message).toBe(`message error (session ${sessionLabel(sid)}, client message 1): Error: handler exploded`);
  expect(logged[0]!.rest).toEqual([expect.stringContaining('at Handlers.boom'), 'BidiWeb']);
  expect(JSON.stringify(logger.errors)).not.toContain(sid);
});

it('sends the errors to onError instead when it is given', async () => {
  const logger = new RecordingLogger();
  const seen: Array<[string, unknown]> = [];
  const wire = await boot(
    BidiWebModule.forRoot({ sweepInterval: 0, onError: (err, ctx) => void seen.push([(err as Error).message, ctx]) }),
    logger,
  );
  const sid = await wire.openSid();
  expect((await wire.send(sid, [[1, { type: 'boom' }]])).body).toEqual({ ack: 1 });
  expect(seen).toEqual([['handler exploded', { phase: 'message', seq: 1, session: sessionLabel(sid) }]]);
  expect(logger.errors.filter((e) => String(e.message).includes('handler exploded'))).toEqual([]);
});
