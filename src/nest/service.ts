import { Inject, Injectable } from '@nestjs/common';
import type { Hub } from '../core/server';
import { BidiServer } from '../core/server';
import { BIDIWEB_SERVER } from './constants';

/**
 * Push to sessions from anywhere (services, timers, queue consumers), on any
 * instance: every call goes to the store. Its methods are the core hub's own.
 *
 * The type parameters only type the calls (`Out`: the server's messages), e.g.
 * `@Inject(BidiWebService) bidi: BidiWebService<ChatUser, ChatState, ServerMsg>`.
 */
@Injectable()
export class BidiWebService<User = unknown, State = unknown, Out = unknown> {
  /** The core hub: `join`, `leave`, `members`, `inspect` and the rest. */
  readonly hub: Hub<User, State, Out>;
  /** Resolves with the message's server seq once it is stored. */
  readonly send: Hub<User, State, Out>['send'];
  readonly broadcast: Hub<User, State, Out>['broadcast'];
  /** Send to every member of a group (`session.join(group)`). */
  readonly publish: Hub<User, State, Out>['publish'];
  /** End a session; the client gets every message sent before it, then the close. */
  readonly close: Hub<User, State, Out>['close'];

  constructor(@Inject(BIDIWEB_SERVER) server: BidiServer<any, any>) {
    const hub: Hub<User, State, Out> = server.hub;
    this.hub = hub;
    // The hub's functions need no `this`: they are taken as they are, not wrapped.
    this.send = hub.send;
    this.broadcast = hub.broadcast;
    this.publish = hub.publish;
    this.close = hub.close;
  }
}
