/**
 * The round-robin balancer in front of the bidiweb instances, in its own
 * process: every request goes to the next backend, no stickiness (as
 * test/helpers/proxy.ts, without the fault injection). It streams bodies both
 * ways instead of buffering them, as nginx does with `proxy_buffering off`,
 * and keeps connections to the backends alive.
 *
 *   proxy.js <port> <port> ...   → sends { ready, port } over IPC
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpuMs, serve } from './lib';

const backends = process.argv.slice(2).map(Number);
const agent = new http.Agent({ keepAlive: true, maxSockets: 20_000 });
let next = 0;
let requests = 0;

const server = http.createServer((req, res) => {
  requests++;
  const port = backends[next++ % backends.length]!;
  const headers = { ...req.headers };
  delete headers.connection;
  const out = http.request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers, agent }, (upstream) => {
    const h = { ...upstream.headers };
    delete h.connection;
    delete h['keep-alive'];
    res.writeHead(upstream.statusCode ?? 502, h);
    upstream.pipe(res);
  });
  out.on('error', () => {
    if (!res.headersSent) {
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end('{"error":{"code":"BAD_GATEWAY","message":"backend unavailable"}}');
    } else res.destroy();
  });
  // The client went away: cancel the upstream request too (ends a waiting watch).
  res.once('close', () => {
    if (!res.writableFinished) out.destroy();
  });
  req.pipe(out);
});
server.keepAliveTimeout = 60_000;
server.maxConnections = 100_000;

serve({ requests: () => requests, ping: () => 'pong', cpu: () => cpuMs() });
server.listen(0, '127.0.0.1', () => process.send!({ ready: true, port: (server.address() as AddressInfo).port }));
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
