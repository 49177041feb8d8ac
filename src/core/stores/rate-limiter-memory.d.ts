// The memory limiter alone, not the package index (which loads every back end,
// some with Node built-ins): core must run on edge runtimes too.
declare module 'rate-limiter-flexible/lib/RateLimiterMemory.js' {
  import { RateLimiterMemory } from 'rate-limiter-flexible';
  export default RateLimiterMemory;
}
