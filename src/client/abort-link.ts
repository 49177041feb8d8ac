/**
 * Abort callbacks without an EventTarget listener per request.
 *
 * Adding and removing an `'abort'` listener costs a request about as much as
 * the rest of the client's work on a WebSocket frame (Node's EventTarget), and
 * node:http's `signal` option adds and removes two more. The client's signals
 * serve many requests in turn (the sender and the transport reuse controllers
 * that did not abort), so each signal gets one listener for its whole life,
 * which calls the callbacks linked to it when it aborts. A signal holds its
 * listener and the listener its list of callbacks: nothing outlives the signal.
 */
const links = new WeakMap<AbortSignal, Array<() => void>>();

/**
 * Calls `fn` when `signal` aborts, until the returned function unlinks it.
 * Like `addEventListener`, never for an abort that already happened: callers
 * check `signal.aborted` first.
 */
export function onAbort(signal: AbortSignal, fn: () => void): () => void {
  // An array, not a Set: a signal holds one or two links at a time, and a Set that is added to and
  // deleted from per request rebuilds its table every few operations.
  let linked = links.get(signal);
  if (linked === undefined) {
    const callbacks: Array<() => void> = [];
    linked = callbacks;
    links.set(signal, callbacks);
    signal.addEventListener(
      'abort',
      () => {
        const due = callbacks.splice(0);
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
  const list = linked;
  list.push(fn);
  return () => {
    const i = list.indexOf(fn);
    if (i === -1) return;
    // In place (the order is the order of linking, as with listeners): no array made per unlink.
    for (let k = i + 1; k < list.length; k++) list[k - 1] = list[k]!;
    list.pop();
  };
}
