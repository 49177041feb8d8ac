/** A listener for an event whose arguments are the tuple `A`. */
export type Listener<A extends unknown[]> = (...args: A) => void;

type EventMap<E> = { [K in keyof E]: unknown[] };

interface Entry {
  fn: (...args: never[]) => void;
  once: boolean;
}

/**
 * A minimal typed event emitter.
 *
 * Listeners run synchronously in registration order. A listener that throws
 * does not stop the others: the exception goes to `onListenerError`.
 * Emitting an event without listeners does nothing (also for `error`).
 */
export class Emitter<E extends EventMap<E>> {
  private readonly listeners = new Map<keyof E, Entry[]>();

  constructor(private readonly onListenerError: (event: keyof E, err: unknown) => void) {}

  on<K extends keyof E>(event: K, fn: Listener<E[K]>): void {
    this.add(event, fn, false);
  }

  once<K extends keyof E>(event: K, fn: Listener<E[K]>): void {
    this.add(event, fn, true);
  }

  /** Removes one registration of `fn` (the latest), whether added with `on` or `once`. */
  off<K extends keyof E>(event: K, fn: Listener<E[K]>): void {
    this.remove(event, (e) => e.fn === (fn as unknown));
  }

  private remove(event: keyof E, match: (entry: Entry) => boolean): void {
    const list = this.listeners.get(event);
    if (!list) return;
    for (let i = list.length - 1; i >= 0; i--) {
      if (match(list[i])) {
        // Copy on write: an emit in progress keeps iterating its snapshot.
        const next = list.slice();
        next.splice(i, 1);
        if (next.length) this.listeners.set(event, next);
        else this.listeners.delete(event);
        return;
      }
    }
  }

  listenerCount(event: keyof E): number {
    return this.listeners.get(event)?.length ?? 0;
  }

  emit<K extends keyof E>(event: K, ...args: E[K]): void {
    const list = this.listeners.get(event);
    if (!list) return;
    for (const entry of list) {
      if (entry.once) this.remove(event, (e) => e === entry);
      try {
        (entry.fn as unknown as Listener<E[K]>)(...args);
      } catch (err) {
        this.onListenerError(event, err);
      }
    }
  }

  removeAll(): void {
    this.listeners.clear();
  }

  private add<K extends keyof E>(event: K, fn: Listener<E[K]>, once: boolean): void {
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    const list = this.listeners.get(event) ?? [];
    this.listeners.set(event, [...list, { fn: fn as unknown as Entry['fn'], once }]);
  }
}
