/**
 * The client with the platform's own WebSocket (the browser API), not an
 * injected `ws`: Node 20's global WebSocket (undici) behind
 * --experimental-websocket, in a child process.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';

it("works with the platform's global WebSocket (no injected class)", () => {
  const out = execFileSync(process.execPath, ['--experimental-websocket', '--no-warnings', '--import', 'tsx', path.join(__dirname, 'fixtures', 'native-client.ts')], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  const result = JSON.parse(out.trim().split('\n').pop()!);
  expect(result).toEqual({
    hasGlobal: 'function',
    received: [...Array.from({ length: 50 }, (_, i) => ({ echo: i + 1 })), 'pushed'],
    transport: 'websocket',
    sockets: 1,
    close: 'CLIENT',
  });
});
