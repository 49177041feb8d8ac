/**
 * The chat sample (samples/chat) as serverless functions: one HTTP function
 * answering the Web-standard `fetch(Request) => Response`, and one scheduled
 * function that expires idle sessions.
 *
 * Every invocation builds its bidiweb server afresh, as a function platform
 * gives no guarantee that anything survives between requests:
 *
 *   fetch(request) = toFetchHandler(createBidiServer({ store, sweepInterval: 0, … }))(request)
 *
 * That works because bidiweb keeps no session state in the server object:
 * sequence numbers, unacked messages, the delivery lease, room membership and
 * the chat's per-session state and room history are all in the store. So the
 * store must be shared by every invocation: a `RedisStore` (a `MemoryStore`
 * only works where all invocations share one process, like ./local.ts).
 *
 * No background timers: `sweepInterval: 0`, and `sweep()` runs from a
 * scheduled function (a cron trigger) instead. Watch waits stay below the
 * platform's request time limit: see README.md here.
 */
import { toFetchHandler } from '../../src/core/fetch';
import type { Store } from '../../src/core/store';
import { createChatServer, type ChatOptions } from '../chat/chat';

export interface ChatFunctionsOptions extends Omit<ChatOptions, 'sweepInterval' | 'store'> {
  /** Shared by every invocation: a RedisStore on a real platform. */
  store: Store;
}

/**
 * Defaults for a platform whose requests may run 30 s: a watch waits at most
 * 25 s (the client asks for 20 s), leaving a margin for the store round trips
 * and the platform's own overhead.
 */
export const FUNCTION_DEFAULTS = Object.freeze({ wait: 20_000, maxWait: 25_000, idleTimeout: 90_000 });

export interface ChatFunctions {
  /** The HTTP function: serves `/session`, `/session/send`, `/session/watch` (404 JSON for anything else). */
  fetch(request: Request): Promise<Response>;
  /** The scheduled function: expires idle sessions (runs their `onClose`: "left" notices, presence). Resolves with how many. */
  sweep(): Promise<number>;
}

export function createChatFunctions(options: ChatFunctionsOptions): ChatFunctions {
  const config: ChatOptions = { ...FUNCTION_DEFAULTS, ...options, sweepInterval: 0 };
  return {
    fetch(request) {
      // A fresh server for this one request (nothing is kept between invocations).
      return toFetchHandler(createChatServer(config))(request);
    },
    sweep() {
      return createChatServer(config).sweep();
    },
  };
}
