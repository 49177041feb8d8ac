/**
 * `DEBUG=bidiweb:*` on Node: the `debug` package (Express, Koa and Socket.IO
 * use it) becomes the default logger factory of every server object. It
 * lives here, not in core: its Node build imports `tty` and `util`, and core
 * runs on edge runtimes too (there, pass `debug` as an option).
 */
import createDebug from 'debug';
import { setDefaultDebug } from '../core/observe';

export function useNodeDebug(): void {
  setDefaultDebug(createDebug);
}
