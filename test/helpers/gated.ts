import type { Store } from '../../src/core';

/** Wraps a store so that one operation waits until `release()` is called; `reached` resolves when one is waiting. */
export function gated(inner: Store, op: keyof Store): { store: Store; reached: Promise<void>; release(): void } {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let reach!: () => void;
  const reached = new Promise<void>((resolve) => (reach = resolve));
  const store = new Proxy(inner, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      if (prop === op) {
        return async (...args: unknown[]) => {
          reach();
          await gate;
          return value.apply(target, args);
        };
      }
      return value.bind(target);
    },
  });
  return { store, reached, release };
}
