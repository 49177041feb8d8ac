import { Inject, Injectable } from '@nestjs/common';
import type { BroadcastResult, Hub } from '../core/server';
import { BidiServer } from '../core/server';
import type { SendOptions } from '../core/session';
import { BIDIWEB_SERVER } from './constants';

/**
 * Push to sessions from anywhere (services, timers, queue consumers), on any
 * instance: every call goes to the store. Delegates to the core hub.
 *
 * The type parameters only type the calls (`Out`: the server's messages), e.g.
 * `@Inject(BidiWebService) bidi: BidiWebService<ChatUser, ChatState, ServerMsg>`.
 */
@Injectable()
export class BidiWebService<User = unknown, State = unknown, Out = unknown> {
  constructor(@Inject(BIDIWEB_SERVER) private readonly server: BidiServer<any, any>) {}

  /** The core hub: `join`, `leave`, `members`, `inspect` and the rest. */
  get hub(): Hub<User, State, Out> {
    return this.server.hub;
  }

  /** Resolves with the message's server seq once it is stored. */
  send(sid: string, data: Out, options?: SendOptions): Promise<number> {
    return this.server.hub.send(sid, data, options);
  }

  broadcast(sids: readonly string[], data: Out): Promise<BroadcastResult> {
    return this.server.hub.broadcast(sids, data);
  }

  /** Send to every member of a group (`session.join(group)`). */
  publish(group: string, data: Out): Promise<BroadcastResult> {
    return this.server.hub.publish(group, data);
  }

  /** End a session; the client gets every message sent before it, then the close. */
  close(sid: string, reason?: string): Promise<void> {
    return this.server.hub.close(sid, reason);
  }
}
