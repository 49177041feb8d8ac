/**
 * bidiweb: ordered, exactly-once, bidirectional sessions over short HTTP
 * requests, with session state in a store so the server side is stateless.
 *
 * Framework adapters live in subpaths: `bidiweb/express`, `bidiweb/node`;
 * the client in `bidiweb/client`.
 */
export * from './core/index';
