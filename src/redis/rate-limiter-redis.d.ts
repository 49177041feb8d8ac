// The Redis limiter alone, not the package index (which loads every back end, one of them with a
// dynamic import that bundlers for edge runtimes such as workerd refuse).
declare module 'rate-limiter-flexible/lib/RateLimiterRedis.js' {
  import { RateLimiterRedis } from 'rate-limiter-flexible';
  export default RateLimiterRedis;
}
