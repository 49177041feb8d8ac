/**
 * A TCP relay on loopback that can hold chosen connections in their
 * connecting state: the client's socket is accepted at once (its driver sees
 * `connect`), but nothing it writes reaches the upstream, and nothing comes
 * back, until the relay releases it. Used to open the window in which a
 * Redis client has a socket but no ready connection.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';

export interface TcpRelay {
  port: number;
  /** Connections accepted so far (1-based index of the next is `accepted + 1`). */
  readonly accepted: number;
  /** Let every held connection through (bytes written meanwhile are forwarded in order). */
  release(): void;
  /** From now on, hold new connections whose 1-based index passes `which`. */
  holdWhen(which: (index: number) => boolean): void;
  /** Waits until `n` connections have been accepted. */
  waitAccepted(n: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpRelay(upstreamPort: number, hold: (index: number) => boolean = () => false): Promise<TcpRelay> {
  let accepted = 0;
  let holding = hold;
  const held: Array<() => void> = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const index = ++accepted;
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    const buffered: Buffer[] = [];
    const collect = (chunk: Buffer) => buffered.push(chunk);
    client.on('data', collect);
    const connect = () => {
      if (client.destroyed) return;
      const upstream = net.connect(upstreamPort, '127.0.0.1');
      sockets.add(upstream);
      upstream.on('close', () => {
        sockets.delete(upstream);
        client.destroy();
      });
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.destroy());
      upstream.on('connect', () => {
        client.off('data', collect);
        for (const chunk of buffered.splice(0)) upstream.write(chunk);
        client.pipe(upstream);
        upstream.pipe(client);
      });
    };
    if (holding(index)) held.push(connect);
    else connect();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    get accepted() {
      return accepted;
    },
    release() {
      for (const go of held.splice(0)) go();
    },
    holdWhen(which) {
      holding = which;
    },
    async waitAccepted(n, timeoutMs = 5_000) {
      const until = Date.now() + timeoutMs;
      while (accepted < n) {
        if (Date.now() > until) throw new Error(`relay: ${accepted} of ${n} connections after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
