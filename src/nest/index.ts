/**
 * bidiweb for NestJS (Express or Fastify platform):
 *
 * ```ts
 * @Module({ imports: [BidiWebModule.forRoot({ path: '/session' })], providers: [ChatHandlers] })
 * class AppModule {}
 *
 * @Injectable()
 * class ChatHandlers {
 *   @OnOpen() open(session: ServerSession, request: OpenRequest) {}
 *   @OnMessage({ type: 'say' }) say(session: ServerSession, data: unknown, info: MessageInfo) {}
 *   @OnClose() close(session: ServerSession, reason: string) {}
 * }
 * ```
 */
export { BidiWebModule } from './module';
export { BidiWebService } from './service';
export { OnClose, OnMessage, OnOpen } from './decorators';
export { UnhandledMessageError } from './handlers';
export { BIDIWEB_OPTIONS, BIDIWEB_SERVER, BIDIWEB_STORE } from './constants';
export type { BidiWebModuleAsyncOptions, BidiWebModuleExtras, BidiWebModuleOptions, BidiWebOptionsFactory, MessageFilter } from './interfaces';
export * from '../core/index';
