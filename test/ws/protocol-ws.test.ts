/**
 * The protocol suite (test/protocol/suite.ts) with its sends and watches over
 * WebSockets (test/ws/ws-wire.ts), on every adapter's http.Server, MemoryStore.
 */
import { MemoryStore } from '../../src/core';
import { describeProtocolSuite } from '../protocol/suite';
import { wsWire } from './ws-wire';

describeProtocolSuite('MemoryStore, over WebSocket', { makeStore: () => new MemoryStore(), wire: wsWire });
