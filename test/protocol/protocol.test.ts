import { MemoryStore } from '../../src/core';
import { describeProtocolSuite } from './suite';

describeProtocolSuite('MemoryStore', { makeStore: () => new MemoryStore() });
