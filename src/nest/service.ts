import { Inject, Injectable } from '@nestjs/common';
import type { BroadcastResult, Hub } from '../core/server';
import { BidiServer } from '../core/server';
import type { SendOptions } from '../core/session';
import { BIDIWEB_SERVER } from './constants';

/**
 * Push to sessions from anywhere (services, timers, queue consumers), on any
 * instance: every call goes to the store. Delegates to the core hub.
 */
@Injectable()
export class BidiWebService<User = unknown, State = unknown> {
  constructor(@Inject(BIDIWEB_SERVER) private readonly server: BidiServer<any, any>) {}

  /** The core hub: `join`, `leave`, `members`, `inspect` and the rest. */
  get hub(): Hub<User, State> {
    return this.server.hub;
  }

  /** Resolves with the message's server seq once it is stored. */
  send(sid: string, data: unknown, options?: SendOptions): Promise<number> {
    return this.server.hub.send(sid, data, options);
  }

  broadcast(sids: readonly string[], data: unknown): Promise<BroadcastResult> {
    return this.server.hub.broadcast(sids, data);
  }

  /** Send to every member of a group (`session.join(group)`). */
  publish(group: string, data: unknown): Promise<BroadcastResult> {
    return this.server.hub.publish(group, data);
  }

  /** End a session; the client gets every message sent before it, then the close. */
  close(sid: string, reason?: string): Promise<void> {
    return this.server.hub.close(sid, reason);
  }
}
