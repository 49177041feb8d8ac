/**
 * A plain round-robin HTTP load balancer for the cluster demo: no sticky
 * sessions, no health checks — every request goes to the next backend, so
 * one chat session's requests land on every instance in turn. Streams bodies
 * both ways and cancels the backend request when the client goes away (a
 * watch whose browser left stops waiting). A backend that cannot be reached
 * answers 502; the bidiweb client retries it (on the next backend).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Balancer {
  port: number;
  /** Requests sent to each backend so far. */
  counts: number[];
  close(): Promise<void>;
}

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer'];

export function startBalancer(backends: number[], port: number, host = '127.0.0.1'): Promise<Balancer> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
  const counts = backends.map(() => 0);
  let next = 0;

  const server = http.createServer((req, res) => {
    const index = next++ % backends.length;
    counts[index]!++;
    const headers = { ...req.headers };
    for (const h of HOP_BY_HOP) delete headers[h];
    headers['x-forwarded-for'] = req.socket.remoteAddress ?? '';
    const upstream = http.request(
      { host: '127.0.0.1', port: backends[index], method: req.method, path: req.url, headers, agent },
      (up) => {
        const out = { ...up.headers };
        for (const h of HOP_BY_HOP) delete out[h];
        res.writeHead(up.statusCode ?? 502, out);
        up.pipe(res);
      },
    );
    upstream.on('error', () => {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end('{"error":{"code":"BAD_GATEWAY","message":"backend unavailable"}}');
      } else {
        res.destroy();
      }
    });
    // The client went away before the answer: cancel the backend request.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  });
  server.keepAliveTimeout = 65_000;

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      resolve({
        port: (server.address() as AddressInfo).port,
        counts,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
            agent.destroy();
          }),
      });
    });
  });
}
