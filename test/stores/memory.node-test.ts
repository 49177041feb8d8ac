/**
 * The store contract suite under node:test rather than Jest, to show that
 * `bidiweb/testing` needs nothing of Jest (run by node-test-runner.test.ts):
 *
 *   node --import tsx --test test/stores/memory.node-test.ts
 *
 * With CONTRACT_STORE=miscounting it runs against a store with a known bug,
 * so that test can also see the suite fail under node:test.
 */
import { after, describe, it } from 'node:test';
import { MemoryStore } from '../../src/core/stores/memory';
import { runStoreContract } from '../../src/testing';

/** A MemoryStore whose count() is one too many: the suite's count tests must catch it. */
class MiscountingStore extends MemoryStore {
  override async count(): Promise<number> {
    return (await super.count()) + 1;
  }
}

const miscounting = process.env.CONTRACT_STORE === 'miscounting';
runStoreContract({ describe, it, afterAll: after }, () => (miscounting ? new MiscountingStore() : new MemoryStore()), {
  name: miscounting ? 'MiscountingStore (node:test)' : 'MemoryStore (node:test)',
});
