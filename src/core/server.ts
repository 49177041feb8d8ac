/**
 * The server: options checked into settings (./options), the engine that
 * serves sessions (./engine), and its HTTP face (./http), composed. Any
 * number of servers, in one process or many, can serve the same sessions:
 * their state lives in the store.
 */
import { Engine } from './engine';
import type { Hub } from './engine';
import type { BidiRequest, BidiResponse } from './http';
import { HttpFace } from './http';
import type { Limits } from './limits';
import type { BidiOptions } from './options';
import { resolveOptions } from './options';
import { HEARTBEAT_HEADER } from './protocol';
import type { Store } from './store';

export type { BroadcastResult, Hub, SessionListOptions, SessionPage, SessionView } from './engine';
export type { BidiOptions, ErrorContext, ErrorPhase, MessageInfo, OpenRequest, RequestCheck } from './options';

export class BidiServer<User = unknown, State extends object = Record<string, unknown>, In = unknown, Out = unknown> {
  readonly store: Store;
  readonly path: string;
  readonly limits: Limits;
  readonly hub: Hub<User, State, Out>;
  /** See {@link BidiOptions.drainTimeout}; read by the Node bridge. */
  readonly drainTimeout: number;
  /**
   * Serve one request. Resolves `null` when the path is not under this
   * server's mount path (adapters then pass the request on).
   */
  handle: (req: BidiRequest) => Promise<BidiResponse | null>;
  /**
   * For transports that check CORS and the Host once per connection, when it is set up (bidiweb/ws
   * at the upgrade): null when a request with these headers is admitted, else the 403
   * CORS_FORBIDDEN response to refuse the connection with.
   */
  admitConnection: (req: BidiRequest) => BidiResponse | null;
  /**
   * For transports that check CORS and the Host once per connection, when it is set up (bidiweb/ws
   * at the upgrade, through {@link admitConnection}): serve one send or watch of that connection, with the same
   * endpoint, limits and error responses as {@link handle}, without routing or a CORS check per request.
   */
  serveAdmitted: (route: 'send' | 'watch', req: BidiRequest) => Promise<BidiResponse>;
  private readonly engine: Engine<User, State, In, Out>;

  constructor(options: BidiOptions<User, State, In, Out> = {}) {
    const settings = resolveOptions(options);
    this.engine = new Engine(options, settings);
    this.store = this.engine.store;
    this.path = settings.path;
    this.limits = this.engine.limits;
    this.hub = this.engine.hub;
    this.drainTimeout = settings.drainTimeout;
    // A streaming watch announces its heartbeat: a cross-origin page must be allowed to read that.
    const face = new HttpFace(settings.path, settings.cors, this.engine, [HEARTBEAT_HEADER]);
    this.handle = face.handle;
    this.admitConnection = face.admitConnection;
    this.serveAdmitted = face.serveAdmitted;
  }

  /**
   * Expire idle sessions and finish closes interrupted by a crash. Safe to
   * call from any instance or a scheduled function: a store-wide lease makes
   * concurrent sweeps skip. Resolves with the number of sessions closed.
   */
  sweep(): Promise<number> {
    return this.engine.sweep();
  }

  /** Stop this object's timers. Does not close sessions (they live in the store). */
  dispose(): Promise<void> {
    return this.engine.dispose();
  }
}

export function createBidiServer<User = unknown, State extends object = Record<string, unknown>, In = unknown, Out = unknown>(
  options: BidiOptions<User, State, In, Out> = {},
): BidiServer<User, State, In, Out> {
  return new BidiServer(options);
}

/**
 * Adapters accept options or a server built elsewhere. Duck-typed: the ESM
 * and CJS builds each have their own class object, so `instanceof` can lie.
 */
export function toBidiServer<User, State extends object, In = unknown, Out = unknown>(
  optionsOrServer: BidiOptions<User, State, In, Out> | BidiServer<User, State, In, Out> = {},
): BidiServer<User, State, In, Out> {
  const x = optionsOrServer as BidiServer<User, State, In, Out>;
  return typeof x.handle === 'function' && 'hub' in x ? x : new BidiServer(optionsOrServer as BidiOptions<User, State, In, Out>);
}
