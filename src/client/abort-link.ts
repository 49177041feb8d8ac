/**
 * Abort callbacks without an EventTarget listener per request.
 *
 * Adding and removing an `'abort'` listener costs a request about as much as
 * the rest of the client's work on a WebSocket frame (Node's EventTarget), and
 * node:http's `signal` option adds and removes two more. The client's signals
 * serve many requests in turn (the sender and the transport reuse controllers
 * that did not abort), so each signal gets one listener for its whole life,
 * which calls the callbacks linked to it when it aborts. A signal holds its
 * listener and the listener its set: nothing outlives the signal.
 */
const links = new WeakMap<AbortSignal, Set<() => void>>();

/**
 * Calls `fn` when `signal` aborts, until the returned function unlinks it.
 * Like `addEventListener`, never for an abort that already happened: callers
 * check `signal.aborted` first.
 */
export function onAbort(signal: AbortSignal, fn: () => void): () => void {
  let set = links.get(signal);
  if (set === undefined) {
    const callbacks = new Set<() => void>();
    set = callbacks;
    links.set(signal, callbacks);
    signal.addEventListener(
      'abort',
      () => {
        const due = [...callbacks];
        callbacks.clear();
        for (const f of due) {
          try {
            f();
          } catch (err) {
            // As EventTarget does with a listener that throws: report it, and call the others still.
            queueMicrotask(() => {
              throw err;
            });
          }
        }
      },
      { once: true },
    );
  }
  set.add(fn);
  const linked = set;
  return () => {
    linked.delete(fn);
  };
}
