/**
 * The HTTP balancer in front of the multi-instance systems, in its own
 * process. One program, two modes, so that bidiweb and Socket.IO pay for the
 * same hop:
 *
 *   proxy.js rr <port> <port> ...      every request to the next backend, no
 *                                      stickiness (bidiweb: any instance serves
 *                                      any request)
 *   proxy.js sticky <port> <port> ...  sticky on engine.io's `sid` query
 *                                      parameter: a request without one (the
 *                                      handshake) goes to the next backend, and
 *                                      the proxy learns the sid from that
 *                                      handshake's answer; every later request
 *                                      with that sid goes to the backend that
 *                                      owns it (an unknown sid: a hash of it, as
 *                                      nginx `hash $arg_sid` would). This is what
 *                                      HAProxy's stick tables or a sid-aware
 *                                      nginx route do for Socket.IO polling.
 *
 * It streams bodies both ways instead of buffering them (nginx with
 * `proxy_buffering off`) and keeps connections to the backends alive. Only a
 * sticky handshake's answer (one small JSON packet per connection) is read
 * whole, to learn its sid. Sends `{ ready, port }` over IPC.
 */
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { cpuMs, serve } from './lib';

const mode = process.argv[2];
if (mode !== 'rr' && mode !== 'sticky') {
  console.error(`proxy: unknown mode ${mode} (rr | sticky)`);
  process.exit(2);
}
const backends = process.argv.slice(3).map(Number);
const agent = new http.Agent({ keepAlive: true, maxSockets: 20_000 });
let next = 0;
let requests = 0;

/** sid → backend port, learnt from handshakes. Bounded: the oldest entries go first. */
const owners = new Map<string, number>();
const MAX_OWNERS = 200_000;
let learnt = 0;
let hashed = 0;

function sidOf(url: string | undefined): string | undefined {
  const q = url?.indexOf('?') ?? -1;
  if (q < 0) return undefined;
  return new URLSearchParams(url!.slice(q + 1)).get('sid') ?? undefined;
}

/** FNV-1a: what a `hash $arg_sid` balancer does with a sid it has never seen. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

function learn(sid: string, port: number): void {
  owners.set(sid, port);
  learnt++;
  if (owners.size > MAX_OWNERS) owners.delete(owners.keys().next().value!);
}

const server = http.createServer((req, res) => {
  requests++;
  let port: number;
  let handshake = false;
  if (mode === 'sticky') {
    const sid = sidOf(req.url);
    if (sid === undefined) {
      handshake = true;
      port = backends[next++ % backends.length]!;
    } else {
      const owner = owners.get(sid);
      if (owner === undefined) hashed++;
      port = owner ?? backends[hash(sid) % backends.length]!;
    }
  } else port = backends[next++ % backends.length]!;
  const headers = { ...req.headers };
  delete headers.connection;
  const out = http.request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers, agent }, (upstream) => {
    const h = { ...upstream.headers };
    delete h.connection;
    delete h['keep-alive'];
    if (handshake && upstream.statusCode === 200) {
      // engine.io's open packet: `0{"sid":"…",…}`. Read it whole (it is small), learn the owner, pass it on.
      const chunks: Buffer[] = [];
      upstream.on('data', (c: Buffer) => chunks.push(c));
      upstream.on('end', () => {
        const body = Buffer.concat(chunks);
        const m = /"sid":"([^"]+)"/.exec(body.toString('latin1'));
        if (m) learn(m[1]!, port);
        delete h['transfer-encoding'];
        h['content-length'] = String(body.length);
        res.writeHead(upstream.statusCode ?? 502, h);
        res.end(body);
      });
      upstream.on('error', () => res.destroy());
      return;
    }
    res.writeHead(upstream.statusCode ?? 502, h);
    upstream.pipe(res);
  });
  out.on('error', () => {
    if (!res.headersSent) {
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end('{"error":{"code":"BAD_GATEWAY","message":"backend unavailable"}}');
    } else res.destroy();
  });
  // The client went away: cancel the upstream request too (ends a waiting watch or poll).
  res.once('close', () => {
    if (!res.writableFinished) out.destroy();
  });
  req.pipe(out);
});
server.keepAliveTimeout = 60_000;
server.maxConnections = 100_000;

/**
 * WebSocket upgrades, in both modes: to the next backend (a WebSocket-only Socket.IO client carries no sid: its
 * socket is its session, so sticky has nothing to stick to), then bytes both ways, as nginx with `proxy_pass` and
 * `Upgrade` headers does.
 */
let upgrades = 0;
server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
  upgrades++;
  const port = backends[next++ % backends.length]!;
  const upstream = net.connect(port, '127.0.0.1');
  socket.on('error', () => upstream.destroy());
  upstream.on('error', () => socket.destroy());
  socket.on('close', () => upstream.destroy());
  upstream.on('close', () => socket.destroy());
  upstream.on('connect', () => {
    upstream.setNoDelay(true);
    socket.setNoDelay(true);
    let head0 = `${req.method} ${req.url} HTTP/1.1\r\n`;
    for (let i = 0; i < req.rawHeaders.length; i += 2) head0 += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
    upstream.write(head0 + '\r\n');
    if (head.length > 0) upstream.write(head);
    socket.pipe(upstream);
    upstream.pipe(socket);
  });
});

serve({ requests: () => requests, stats: () => ({ requests, upgrades, learnt, hashed, owners: owners.size }), ping: () => 'pong', cpu: () => cpuMs() });
server.listen(0, '127.0.0.1', () => process.send!({ ready: true, port: (server.address() as AddressInfo).port }));
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
