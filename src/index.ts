/**
 * bidiweb: ordered, exactly-once, bidirectional sessions over short HTTP
 * requests, with session state in a store so the server side is stateless.
 *
 * Framework adapters live in subpaths: `bidiweb/express`, `bidiweb/koa`,
 * `bidiweb/nest`, `bidiweb/node`, `bidiweb/aws-lambda`; Redis in
 * `bidiweb/redis`; the client in `bidiweb/client`.
 */
export * from './core/index';
