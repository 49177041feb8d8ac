import { BidiError } from './errors';

export type WhenFull = 'reject' | 'wait';

export interface SendOptions {
  /**
   * What `send()` does when the session's unacked window is full:
   * `'reject'` throws `SEND_WINDOW_FULL` at once; `'wait'` waits for the
   * client to ack (up to `sendTimeout`, then `SEND_TIMEOUT`).
   */
  whenFull?: WhenFull;
}

/** What a session object needs from the server that made it. */
export interface SessionBackend {
  send(sid: string, json: string, options: SendOptions | undefined): Promise<number>;
  close(sid: string, reason: string): Promise<void>;
  join(sid: string, group: string): Promise<boolean>;
  leave(sid: string, group: string): Promise<void>;
  serialize(data: unknown): string;
}

/**
 * A session as the app's hooks see it. It is a handle, not the session's
 * state: every call goes to the store, so it behaves the same on any
 * instance. `state` is the small per-session object kept in the store; a
 * handler's changes to it are saved atomically with the message's delivery
 * record.
 */
export class ServerSession<User = unknown, State extends object = Record<string, unknown>> {
  /** The session id. A bearer secret: do not log it. */
  readonly id: string;
  private _user: User;
  private _state: State;
  /** Until first read, `user` and `state` stay the JSON text the store gave: a handler that never looks at them costs no parse. */
  private userJson?: string;
  private stateJson?: string;

  /** @internal */
  constructor(
    id: string,
    user: User,
    state: State,
    private readonly backend: SessionBackend,
    json?: { user: string; state: string },
  ) {
    this.id = id;
    this._user = user;
    this._state = state;
    if (json) {
      this.userJson = json.user;
      this.stateJson = json.state;
    }
  }

  /** Set in `onOpen`; read-only afterwards. */
  get user(): User {
    if (this.userJson !== undefined) {
      this._user = JSON.parse(this.userJson) as User;
      this.userJson = undefined;
    }
    return this._user;
  }

  set user(value: User) {
    this.userJson = undefined;
    this._user = value;
  }

  /** Small JSON state kept in the store. Mutate it in `onOpen` and `onMessage`; it is saved after each. */
  get state(): State {
    if (this.stateJson !== undefined) {
      this._state = JSON.parse(this.stateJson) as State;
      this.stateJson = undefined;
    }
    return this._state;
  }

  set state(value: State) {
    this.stateJson = undefined;
    this._state = value;
  }

  /** @internal True when `state` was never read or set since the session was made from stored JSON: it cannot have changed. */
  get stateUntouched(): boolean {
    return this.stateJson !== undefined;
  }

  /** Send a message to the client. Resolves with its server seq once it is stored. */
  send(data: unknown, options?: SendOptions): Promise<number> {
    return this.backend.send(this.id, this.backend.serialize(data), options);
  }

  /**
   * End the session. The client receives every message sent before this,
   * then the close with `reason`. `onClose` runs exactly once.
   */
  close(reason = 'server'): Promise<void> {
    return this.backend.close(this.id, reason);
  }

  /** Join a group (a room): `hub.publish(group, msg)` reaches every member. */
  async join(group: string): Promise<void> {
    if (!(await this.backend.join(this.id, group))) {
      throw new BidiError('SESSION_CLOSED', 'cannot join a group: the session is closed');
    }
  }

  leave(group: string): Promise<void> {
    return this.backend.leave(this.id, group);
  }
}

/**
 * `onOpen` sees this backend: the session does not exist in the store yet, so
 * sends and joins are queued and applied when it is created.
 */
export class PendingSessionBackend implements SessionBackend {
  readonly queued: string[] = [];
  readonly groups: string[] = [];

  constructor(readonly serialize: (data: unknown) => string) {}

  async send(_sid: string, json: string): Promise<number> {
    this.queued.push(json);
    return this.queued.length;
  }

  async close(): Promise<void> {
    throw new BidiError('INVALID_OPTIONS', 'close() cannot be called in onOpen; throw reject(status, reason) to refuse a session');
  }

  async join(_sid: string, group: string): Promise<boolean> {
    this.groups.push(group);
    return true;
  }

  async leave(_sid: string, group: string): Promise<void> {
    const i = this.groups.indexOf(group);
    if (i >= 0) this.groups.splice(i, 1);
  }
}
