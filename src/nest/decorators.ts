import { BidiError } from '../core/errors';
import { BIDIWEB_HANDLER_METADATA } from './constants';
import type { BidiHandlerMetadata, MessageFilter } from './interfaces';

/** Appends to the method's handler metadata, so one method may carry several decorators. */
function handler(meta: BidiHandlerMetadata): MethodDecorator {
  return (_target, _key, descriptor) => {
    const method = descriptor.value as object;
    const previous: BidiHandlerMetadata[] = Reflect.getMetadata(BIDIWEB_HANDLER_METADATA, method) ?? [];
    Reflect.defineMetadata(BIDIWEB_HANDLER_METADATA, [...previous, meta], method);
    return descriptor;
  };
}

/**
 * Runs once per session before it exists, as `method(session, request)`:
 * throw `reject(status, reason)` to refuse; set `session.user` / `session.state`.
 * One per application.
 */
export function OnOpen(): MethodDecorator {
  return handler({ kind: 'open' });
}

/**
 * Each client message, in order, once, as `method(session, data, { seq })`;
 * never concurrent per session. With a filter, only messages that are JSON
 * objects whose fields equal every entry (`@OnMessage({ type: 'say' })`);
 * without, every message. The most specific matching filter wins and the
 * catch-all comes last; duplicate or ambiguous filters fail at bootstrap.
 */
export function OnMessage(filter: MessageFilter = {}): MethodDecorator {
  return handler({ kind: 'message', filter: checkFilter(filter) });
}

/** Exactly once per session, as `method(session, reason)` (`'client'`, `'expired'` or the server's reason). One per application. */
export function OnClose(): MethodDecorator {
  return handler({ kind: 'close' });
}

function checkFilter(filter: MessageFilter): MessageFilter {
  if (typeof filter !== 'object' || filter === null || Array.isArray(filter)) {
    throw new BidiError('INVALID_OPTIONS', '@OnMessage(filter): the filter must be an object such as { type: "say" }');
  }
  for (const [key, value] of Object.entries(filter)) {
    const ok = value === null || typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value));
    if (!ok) throw new BidiError('INVALID_OPTIONS', `@OnMessage(filter): "${key}" must be a string, a finite number, a boolean or null`);
  }
  return Object.freeze({ ...filter });
}
