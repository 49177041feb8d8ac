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

/**
 * What a session object calls, for its own id: the hub's `send`, `close`,
 * `join` and `leave` (a `Hub` is one), or a stand-in for them while the
 * session is being opened or delivered to.
 */
export interface SessionBackend {
  send(sid: string, data: unknown, options?: SendOptions): Promise<number>;
  close(sid: string, reason?: string): Promise<void>;
  join(sid: string, group: string): Promise<boolean>;
  leave(sid: string, group: string): Promise<void>;
}

/**
 * A session as the app's hooks see it. It is a handle, not the session's
 * state: every call goes to the store, so it behaves the same on any
 * instance. `state` is the small per-session object kept in the store; a
 * handler's changes to it are saved atomically with the message's delivery
 * record.
 */
export class ServerSession<User = unknown, State extends object = Record<string, unknown>, Out = unknown> {
  /** The session id. A bearer secret: do not log it. */
  readonly id: string;
  /** Set from `userJson` on first read; undefined in a session being opened until `onOpen` sets it. */
  private _user!: User;
  /** Set from `stateJson` on first read. */
  private _state!: State;
  /** Until first read, `user` and `state` stay JSON text: a handler that never looks at them costs no parse. */
  private userJson?: string;
  private stateJson?: string;

  private constructor(id: string, userJson: string | undefined, stateJson: string, private readonly backend: SessionBackend) {
    this.id = id;
    this.userJson = userJson;
    this.stateJson = stateJson;
  }

  /** @internal A session `onOpen` is deciding on: no user yet, empty state. */
  static opening<User, State extends object, Out>(id: string, backend: SessionBackend): ServerSession<User, State, Out> {
    return new ServerSession<User, State, Out>(id, undefined, '{}', backend);
  }

  /** @internal A session as the store holds it: its user and state are parsed when first read. */
  static fromStored<User, State extends object, Out>(
    id: string,
    stored: { userJson: string; stateJson: string },
    backend: SessionBackend,
  ): ServerSession<User, State, Out> {
    return new ServerSession<User, State, Out>(id, stored.userJson, stored.stateJson, backend);
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

  /**
   * Send a message to the client. Resolves with its server seq once it is
   * stored (in `onOpen`: at once, with the seq it gets when the session is
   * created). `Out` types the server's messages (`bidiWeb<User, State, In, Out>`).
   */
  send(data: Out, options?: SendOptions): Promise<number> {
    return this.backend.send(this.id, data, options);
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
 * `onOpen` sees this backend. While the hook runs the session does not exist
 * in the store yet, so sends and joins are queued (they become the session's
 * first messages and groups) and a send resolves at once with the seq it will
 * get. Once the hook returned, the session object may still be kept and used:
 * calls then wait for the store's create and go to the real backend (a send
 * resolves with its seq once stored), or reject with `UNKNOWN_SESSION` when
 * the session was never created (the open was refused or failed).
 */
export class PendingSessionBackend implements SessionBackend {
  readonly queued: string[] = [];
  readonly groups: string[] = [];
  private hook = true;
  private settle!: { created: (real: SessionBackend) => void; failed: (err: BidiError) => void };
  /** The real backend once the session exists; rejects when it never will. */
  private readonly ready = new Promise<SessionBackend>((created, failed) => {
    this.settle = { created, failed };
  });

  constructor(private readonly serialize: (data: unknown) => string) {
    // Nobody may ever ask after a refused open: that is no unhandled rejection.
    this.ready.catch(() => {});
  }

  /** The hook returned: what it queued is final (the create's initial messages and groups); later calls wait for the create. */
  seal(): { initial: string[]; groups: string[] } {
    this.hook = false;
    return { initial: this.queued, groups: this.groups };
  }

  /** The session exists: waiting and later calls go to `real`. */
  created(real: SessionBackend): void {
    this.hook = false;
    this.settle.created(real);
  }

  /** The session will never exist: waiting and later calls reject. */
  failed(): void {
    this.hook = false;
    this.settle.failed(new BidiError('UNKNOWN_SESSION', 'the session was never created: onOpen refused it or the open failed'));
  }

  send(sid: string, data: unknown, options?: SendOptions): Promise<number> {
    // Serialised at the call, as every send is: the message is what `data` was then (a bad one throws now).
    const json = this.serialize(data);
    if (this.hook) {
      this.queued.push(json);
      return Promise.resolve(this.queued.length);
    }
    // Awaited in call order, so calls made while the create runs keep their order after it. The real
    // backend takes data: it gets the snapshot back (only sends made while the create runs pay the parse).
    return this.ready.then((real) => real.send(sid, JSON.parse(json), options));
  }

  async close(sid: string, reason?: string): Promise<void> {
    if (this.hook) throw new BidiError('INVALID_OPTIONS', 'close() cannot be called in onOpen; throw reject(status, reason) to refuse a session');
    return (await this.ready).close(sid, reason);
  }

  async join(sid: string, group: string): Promise<boolean> {
    if (this.hook) {
      if (!this.groups.includes(group)) this.groups.push(group);
      return true;
    }
    return (await this.ready).join(sid, group);
  }

  async leave(sid: string, group: string): Promise<void> {
    if (this.hook) {
      const i = this.groups.indexOf(group);
      if (i >= 0) this.groups.splice(i, 1);
      return;
    }
    return (await this.ready).leave(sid, group);
  }
}
