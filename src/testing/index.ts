/**
 * `bidiweb/testing`: the store contract suite, for anyone who writes a
 * `Store` (docs/STORE.md, "Writing a store"). Runs under Jest, Vitest and
 * node:test; needs `fast-check` installed (an optional peer dependency).
 */
export { runStoreContract } from './contract';
export type { StoreContractOptions, StoreContractRunner } from './contract';
