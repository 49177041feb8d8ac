/**
 * A plain round-robin HTTP load balancer on loopback, with no stickiness —
 * each request goes to the next backend — and optional, seeded fault
 * injection: drop a request, drop a response after the backend processed it,
 * duplicate a request to a second backend, delay a request (reordering
 * concurrent ones). A dead backend answers 502, as a real balancer would.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { rng } from './faulty-fetch';

export interface ProxyFaults {
  dropRequest?: number;
  dropResponse?: number;
  duplicate?: number;
  maxDelayMs?: number;
  seed?: number;
}

export interface ProxyStats {
  requests: number;
  droppedRequests: number;
  droppedResponses: number;
  duplicates: number;
  badGateway: number;
  perBackend: number[];
}

export interface Proxy {
  port: number;
  url: string;
  stats: ProxyStats;
  /** Replace the backend list (e.g. after an instance restarted on a new port). */
  setBackends(ports: number[]): void;
  setFaults(faults: ProxyFaults): void;
  close(): Promise<void>;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function forward(port: number, req: http.IncomingMessage, body: Buffer): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const headers = { ...req.headers };
    delete headers.connection;
    const out = http.request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 502, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    out.on('error', reject);
    out.end(body);
  });
}

export async function startProxy(backends: number[], initialFaults: ProxyFaults = {}): Promise<Proxy> {
  let ports = [...backends];
  let faults = initialFaults;
  let random = rng(faults.seed ?? 1);
  let next = 0;
  const stats: ProxyStats = { requests: 0, droppedRequests: 0, droppedResponses: 0, duplicates: 0, badGateway: 0, perBackend: ports.map(() => 0) };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      stats.requests++;
      const body = Buffer.concat(chunks);
      const delay = random() * (faults.maxDelayMs ?? 0);
      const dropRequest = random() < (faults.dropRequest ?? 0);
      const duplicate = random() < (faults.duplicate ?? 0);
      const dropResponse = random() < (faults.dropResponse ?? 0);
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      if (dropRequest) {
        stats.droppedRequests++;
        res.socket?.destroy();
        return;
      }
      const index = next++ % ports.length;
      stats.perBackend[index] = (stats.perBackend[index] ?? 0) + 1;
      if (duplicate && ports.length > 0) {
        stats.duplicates++;
        void forward(ports[(index + 1) % ports.length]!, req, body).catch(() => {});
      }
      try {
        const r = await forward(ports[index]!, req, body);
        if (dropResponse) {
          stats.droppedResponses++;
          res.socket?.destroy();
          return;
        }
        const headers = { ...r.headers };
        delete headers.connection;
        delete headers['keep-alive'];
        res.writeHead(r.status, headers);
        res.end(r.body);
      } catch {
        stats.badGateway++;
        if (!res.headersSent) {
          res.writeHead(502, { 'content-type': 'application/json' });
          res.end('{"error":{"code":"BAD_GATEWAY","message":"backend unavailable"}}');
        }
      }
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    stats,
    setBackends(p) {
      ports = [...p];
    },
    setFaults(f) {
      faults = f;
      random = rng(f.seed ?? 1);
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
