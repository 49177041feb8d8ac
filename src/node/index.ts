export { createNodeHandler, toBidiRequest, writeBidiResponse } from './bridge';
export type { NodeHandler } from './bridge';
