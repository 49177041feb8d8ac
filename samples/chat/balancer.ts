/**
 * A round-robin HTTP load balancer for the cluster demo: no sticky sessions —
 * every request goes to the next backend, so one chat session's requests land
 * on every instance in turn. Streams responses and cancels the backend
 * request when the client goes away (a watch whose browser left stops
 * waiting).
 *
 * A dead backend is skipped, as real balancers do (nginx's passive checks,
 * HAProxy's `observe layer4`): a request whose connection to a backend fails
 * (refused, unreachable, not accepted within `connectTimeoutMs`) marks that
 * backend down and is sent to the next live one — safe, since the failed
 * backend received nothing. A down backend gets no traffic; a TCP health
 * check every `healthIntervalMs` puts it back once it accepts connections.
 * A failure after the connection was made (the backend died mid-request) is
 * retried on another backend only for an idempotent method (a watch is a
 * GET) and only while nothing was sent to the client; a POST may have been
 * acted on, so it answers 502, which the bidiweb client retries itself (its
 * sends carry seqs: a repeat is deduplicated).
 *
 * Request bodies are read whole before forwarding (bidiweb's are small: 1 MiB
 * at most by default) so that a refused request can be replayed.
 *
 * WebSocket upgrades (bidiweb/ws, when instances run with WS=1) go to the
 * next live backend too, then bytes flow both ways as with nginx's
 * `proxy_pass` + `Upgrade` headers; a backend that refuses the connection is
 * skipped as above. When it dies, the client's socket ends with it and the
 * client reconnects through here, to another instance. `upgrades: 'refuse'`
 * plays a proxy that blocks upgrades (a 403), for clients to fall back to HTTP.
 */
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';

export interface BalancerOptions {
  /** Interface to listen on. Default 127.0.0.1. */
  host?: string;
  /** How often a backend that is down is probed (a TCP connect), ms. Default 1000. */
  healthIntervalMs?: number;
  /** A backend that has not accepted the connection by then counts as down, ms. Default 2000. */
  connectTimeoutMs?: number;
  /** Largest request body forwarded (read whole, for a replay), bytes; above it: 413. Default 4 MiB. */
  maxBodyBytes?: number;
  /** Told when a backend leaves or rejoins the rotation (index into `backends`). */
  onChange?(index: number, up: boolean): void;
  /** WebSocket upgrades: forwarded to the next live backend (default), or refused with a 403. */
  upgrades?: 'forward' | 'refuse';
}

/** One forwarded WebSocket. */
export interface Tunnel {
  /** Index into `backends` of the instance holding the socket. */
  backend: number;
  /** The upgrade's User-Agent (tells a test's pages apart: the sid is never in an upgrade). */
  userAgent: string;
  open: boolean;
}

export interface Balancer {
  port: number;
  /** Requests sent to each backend so far (health checks not counted). */
  counts: number[];
  /** Whether each backend is in the rotation. */
  up: boolean[];
  stats: {
    /** Requests sent again to another backend (their first choice refused the connection, or failed an idempotent one). */
    retried: number;
    /** Requests answered 502: no backend took them, or one failed mid-request. */
    badGateway: number;
  };
  /** WebSocket upgrades refused (`upgrades: 'refuse'`, or no backend took them). */
  upgradeStats: { refused: number };
  /** Every WebSocket forwarded so far, oldest first. */
  tunnels: Tunnel[];
  close(): Promise<void>;
}

/** Methods a request of which may be sent again after a backend failed with it (as nginx's `proxy_next_upstream`). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer'];

export function startBalancer(backends: number[], port: number, options: BalancerOptions = {}): Promise<Balancer> {
  const host = options.host ?? '127.0.0.1';
  const healthIntervalMs = options.healthIntervalMs ?? 1000;
  const connectTimeoutMs = options.connectTimeoutMs ?? 2000;
  const maxBodyBytes = options.maxBodyBytes ?? 4 * 1024 * 1024;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
  const counts = backends.map(() => 0);
  const up = backends.map(() => true);
  const stats = { retried: 0, badGateway: 0 };
  const upgradeStats = { refused: 0 };
  const tunnels: Tunnel[] = [];
  const upgraded = new Set<net.Socket>();
  const probes = new Map<number, NodeJS.Timeout>();
  let closed = false;
  let next = 0;

  function markDown(index: number): void {
    if (!up[index] || closed) return;
    up[index] = false;
    options.onChange?.(index, false);
    const probe = setInterval(() => {
      void canConnect(backends[index]!, connectTimeoutMs).then((ok) => {
        if (!ok || closed || up[index]) return;
        clearInterval(probe);
        probes.delete(index);
        up[index] = true;
        options.onChange?.(index, true);
      });
    }, healthIntervalMs);
    probe.unref();
    probes.set(index, probe);
  }

  /** The next live backend in round-robin order that this request has not tried yet. */
  function pick(tried: Set<number>): number | undefined {
    for (let k = 0; k < backends.length; k++) {
      const index = (next + k) % backends.length;
      if (up[index] && !tried.has(index)) {
        next = index + 1;
        return index;
      }
    }
    return undefined;
  }

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= maxBodyBytes) chunks.push(chunk);
      else if (!res.headersSent) reply(res, 413, 'PAYLOAD_TOO_LARGE', 'request body too large for the balancer');
    });
    req.on('end', () => {
      if (size <= maxBodyBytes) forward(req, res, Buffer.concat(chunks), new Set());
    });
  });
  server.keepAliveTimeout = 65_000;

  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    if (options.upgrades === 'refuse') {
      upgradeStats.refused++;
      refuseUpgrade(socket, 403, 'UPGRADE_REFUSED', 'this proxy does not forward WebSocket upgrades');
      return;
    }
    upgrade(req, socket, head, new Set());
  });

  function upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer, tried: Set<number>): void {
    if (socket.destroyed) return;
    const index = pick(tried);
    if (index === undefined) {
      upgradeStats.refused++;
      refuseUpgrade(socket, 502, 'BAD_GATEWAY', 'no backend available');
      return;
    }
    if (tried.size > 0) stats.retried++;
    tried.add(index);
    counts[index]!++;
    const upstream = net.connect(backends[index]!, '127.0.0.1');
    let connected = false;
    const connectTimer = setTimeout(() => upstream.destroy(), connectTimeoutMs);
    upstream.once('error', () => {
      clearTimeout(connectTimer);
      if (connected) return; // 'close' ends the pair
      // Nothing reached the backend: skip it, as for a plain request.
      markDown(index);
      upgrade(req, socket, head, tried);
    });
    upstream.once('connect', () => {
      clearTimeout(connectTimer);
      connected = true;
      const tunnel: Tunnel = { backend: index, userAgent: String(req.headers['user-agent'] ?? ''), open: true };
      tunnels.push(tunnel);
      upgraded.add(socket);
      const end = () => {
        tunnel.open = false;
        upgraded.delete(socket);
        socket.destroy();
        upstream.destroy();
      };
      socket.on('close', end);
      upstream.on('close', end);
      upstream.on('error', end);
      upstream.setNoDelay(true);
      socket.setNoDelay(true);
      let head0 = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) head0 += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      upstream.write(head0 + `x-forwarded-for: ${req.socket.remoteAddress ?? ''}\r\n\r\n`);
      if (head.length > 0) upstream.write(head);
      socket.pipe(upstream);
      upstream.pipe(socket);
    });
  }

  function forward(req: http.IncomingMessage, res: http.ServerResponse, body: Buffer, tried: Set<number>): void {
    if (res.destroyed) return; // the client went away meanwhile
    const index = pick(tried);
    if (index === undefined) {
      stats.badGateway++;
      reply(res, 502, 'BAD_GATEWAY', 'no backend available');
      return;
    }
    if (tried.size > 0) stats.retried++;
    tried.add(index);
    counts[index]!++;
    const headers: http.OutgoingHttpHeaders = { ...req.headers };
    for (const h of HOP_BY_HOP) delete headers[h];
    headers['x-forwarded-for'] = req.socket.remoteAddress ?? '';
    if (body.length > 0 || headers['content-length'] !== undefined) headers['content-length'] = String(body.length);

    let connected = false;
    let connectTimer: NodeJS.Timeout | undefined;
    const upstream = http.request({ host: '127.0.0.1', port: backends[index], method: req.method, path: req.url, headers, agent }, (answer) => {
      const out = { ...answer.headers };
      for (const h of HOP_BY_HOP) delete out[h];
      res.writeHead(answer.statusCode ?? 502, out);
      answer.pipe(res);
    });
    upstream.on('socket', (socket) => {
      // A kept-alive socket is connected already; a new one must connect in time.
      if (!socket.connecting) {
        connected = true;
        return;
      }
      connectTimer = setTimeout(() => upstream.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })), connectTimeoutMs);
      socket.once('connect', () => {
        clearTimeout(connectTimer);
        connected = true;
      });
    });
    upstream.on('error', () => {
      clearTimeout(connectTimer);
      if (!connected) {
        // Nothing reached the backend: take it out of the rotation, try the next one.
        markDown(index);
        forward(req, res, body, tried);
        return;
      }
      if (!res.headersSent && IDEMPOTENT.has(req.method ?? '')) {
        // It died with the request in hand (e.g. a held watch): safe to ask another.
        forward(req, res, body, tried);
        return;
      }
      if (!res.headersSent) {
        stats.badGateway++;
        reply(res, 502, 'BAD_GATEWAY', 'backend failed');
      } else {
        res.destroy();
      }
    });
    // The client went away before the answer: cancel the backend request.
    res.once('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    upstream.end(body);
  }

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      resolve({
        port: (server.address() as AddressInfo).port,
        counts,
        up,
        stats,
        upgradeStats,
        tunnels,
        close: () =>
          new Promise<void>((done) => {
            closed = true;
            for (const probe of probes.values()) clearInterval(probe);
            probes.clear();
            server.close(() => done());
            server.closeAllConnections();
            for (const socket of upgraded) socket.destroy();
            agent.destroy();
          }),
      });
    });
  });
}

function reply(res: http.ServerResponse, status: number, code: string, message: string): void {
  res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
  res.end(JSON.stringify({ error: { code, message } }));
}

function refuseUpgrade(socket: net.Socket, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

/** The health check: does the port accept a TCP connection? */
function canConnect(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => done(true));
  });
}
