import { Injectable } from '@nestjs/common';
import { BidiError } from '../core/errors';
import type { BidiOptions } from '../core/server';
import type { BidiHandlerMetadata, MessageFilter } from './interfaces';

type HandlerFn = (...args: any[]) => unknown;

interface Found {
  fn: HandlerFn;
  /** `Class.method`, for error messages. */
  where: string;
}

interface MessageRoute extends Found {
  filter: MessageFilter;
  keys: string[];
}

/**
 * Reported to `onError` (phase `'message'`) for a client message that no
 * `@OnMessage` filter matches. The message is consumed, as when a handler
 * throws; add a catch-all `@OnMessage()` to take such messages yourself.
 */
export class UnhandledMessageError extends Error {
  override readonly name = 'UnhandledMessageError';
  constructor(readonly seq: number) {
    super(`no @OnMessage handler matches client message ${seq}`);
  }
}

/**
 * The decorated handlers the explorer found, behind the three core hooks.
 * The core server is built with `hooks()` before discovery runs; the hooks
 * read the registry on every call.
 */
@Injectable()
export class BidiWebHandlers {
  private open?: Found;
  private close?: Found;
  /** Most specific filter first, the catch-all last. */
  private readonly routes: MessageRoute[] = [];

  add(meta: BidiHandlerMetadata, fn: HandlerFn, where: string): void {
    if (meta.kind === 'open') this.open = single('@OnOpen', this.open, { fn, where });
    else if (meta.kind === 'close') this.close = single('@OnClose', this.close, { fn, where });
    else this.addRoute({ fn, where, filter: meta.filter, keys: Object.keys(meta.filter) });
  }

  hooks(): Required<Pick<BidiOptions<any, any>, 'onOpen' | 'onMessage' | 'onClose'>> {
    return {
      onOpen: (session, request) => this.open?.fn(session, request) as void | Promise<void>,
      onMessage: (session, data, info) => {
        const route = this.routes.find((r) => matches(r, data));
        if (!route) throw new UnhandledMessageError(info.seq);
        return route.fn(session, data, info) as void | Promise<void>;
      },
      onClose: (session, reason) => this.close?.fn(session, reason) as void | Promise<void>,
    };
  }

  private addRoute(route: MessageRoute): void {
    for (const other of this.routes) {
      if (!compatible(route, other)) continue; // disjoint: no message matches both
      const refinesOther = other.keys.every((k) => Object.hasOwn(route.filter, k));
      const refinedByOther = route.keys.every((k) => Object.hasOwn(other.filter, k));
      if (refinesOther && refinedByOther) {
        throw new BidiError('INVALID_OPTIONS', `two @OnMessage handlers with the filter ${describe(route.filter)}: ${other.where} and ${route.where}`);
      }
      // Compatible filters must nest (one refines the other), or the winner would be arbitrary.
      if (!refinesOther && !refinedByOther) {
        throw new BidiError(
          'INVALID_OPTIONS',
          `@OnMessage filters ${describe(other.filter)} (${other.where}) and ${describe(route.filter)} (${route.where}) can both match one message, ` +
            `e.g. ${JSON.stringify({ ...other.filter, ...route.filter })}; make them disjoint or one a refinement of the other`,
        );
      }
    }
    this.routes.push(route);
    this.routes.sort((a, b) => b.keys.length - a.keys.length);
  }
}

function single(name: string, existing: Found | undefined, found: Found): Found {
  if (existing) throw new BidiError('INVALID_OPTIONS', `only one ${name} handler is allowed; found ${existing.where} and ${found.where}`);
  return found;
}

/** Two filters can match the same message unless they disagree on a shared field. */
function compatible(a: MessageRoute, b: MessageRoute): boolean {
  return a.keys.every((k) => !Object.hasOwn(b.filter, k) || b.filter[k] === a.filter[k]);
}

function matches(route: MessageRoute, data: unknown): boolean {
  if (route.keys.length === 0) return true;
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return false;
  return route.keys.every((k) => Object.hasOwn(data, k) && (data as Record<string, unknown>)[k] === route.filter[k]);
}

function describe(filter: MessageFilter): string {
  return Object.keys(filter).length === 0 ? '(none: every message)' : JSON.stringify(filter);
}
