/**
 * A plain round-robin HTTP load balancer on loopback, with no stickiness —
 * each request goes to the next backend — and optional, seeded fault
 * injection. A dead backend answers 502, as a real balancer would.
 *
 * Faults, each an independent per-request probability (0..1):
 *
 * | fault          | what the client sees                      | what the backends see          |
 * | -------------- | ----------------------------------------- | ------------------------------ |
 * | `dropRequest`  | connection reset, no response             | nothing                        |
 * | `dropResponse` | connection reset, no response             | the request, processed         |
 * | `duplicate`    | one normal response                       | the request twice (2 backends) |
 * | `cutStream`    | status, headers and part of the body, then a reset (a truncated body) | the request, processed |
 * | `delay`        | the request waits `0..maxDelayMs` ms before it is forwarded (reorders concurrent ones) | — |
 *
 * `delay` defaults to 1 (every request is delayed by a random part of
 * `maxDelayMs`), which is what the original `{ maxDelayMs }` meant.
 *
 * `holdDeadStreams` is not a draw but a behaviour: a backend that dies after
 * its response started (headers sent) normally gets the client's connection
 * destroyed too; with it, the proxy keeps the client's response open and
 * silent instead (until the client goes away or the proxy closes), as some
 * real proxies do. `stats.heldStreams` counts them.
 *
 * Reproducibility: the n-th request the proxy receives gets the n-th draw of
 * a PRNG seeded with `seed` (default 1); every request consumes the same
 * number of draws, whatever faults it gets, so changing one probability does
 * not shift the faults of later requests. Which request is the n-th depends
 * on the clients' timing, so a seed reproduces the fault *stream*, not an
 * exact interleaving.
 *
 * Responses are streamed through as the backend writes them (a response the
 * backend writes in several chunks reaches the client in several chunks), so
 * `cutStream` cuts a streaming response midway: it forwards some of its
 * chunks (and part of the next) and then destroys the socket; a
 * `Content-Length` response is cut at a random byte below its length.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { rng } from './faulty-fetch';

export interface ProxyFaults {
  /** Probability that a request is never forwarded (the client's connection is destroyed). */
  dropRequest?: number;
  /** Probability that the backend's response is thrown away (the client's connection is destroyed). */
  dropResponse?: number;
  /** Probability that a copy of the request also goes to the next backend (its response is discarded). */
  duplicate?: number;
  /** Probability that the response is cut: headers and part of the body go out, then the socket is destroyed. */
  cutStream?: number;
  /** Probability that a request is delayed (by a uniform `0..maxDelayMs`). Default 1. */
  delay?: number;
  maxDelayMs?: number;
  /** PRNG seed for the fault stream. Default 1. */
  seed?: number;
  /** Only requests for which this returns true get faults (default: all). */
  match?: (req: { method: string; url: string }) => boolean;
  /** A backend dying mid-response leaves the client's response open and silent, not cut (see above). Default false. */
  holdDeadStreams?: boolean;
}

export interface ProxyStats {
  requests: number;
  droppedRequests: number;
  droppedResponses: number;
  duplicates: number;
  cutStreams: number;
  delayed: number;
  badGateway: number;
  /** The client went away before its response was complete (not a fault of the proxy's). */
  clientGone: number;
  /** Responses kept open after their backend died mid-response (`holdDeadStreams`). */
  heldStreams: number;
  perBackend: number[];
}

export interface Proxy {
  port: number;
  url: string;
  stats: ProxyStats;
  /** Replace the backend list (e.g. after an instance restarted on a new port). */
  setBackends(ports: number[]): void;
  /** New faults; the PRNG restarts from the new seed. */
  setFaults(faults: ProxyFaults): void;
  close(): Promise<void>;
}

/** The per-request draws, always the same number of them, in this order. */
const DRAWS = 7;

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function forwardHeaders(req: http.IncomingMessage): http.OutgoingHttpHeaders {
  const headers = { ...req.headers };
  delete headers.connection;
  delete headers['keep-alive'];
  return headers;
}

function responseHeaders(res: http.IncomingMessage): http.OutgoingHttpHeaders {
  const headers = { ...res.headers };
  delete headers.connection;
  delete headers['keep-alive'];
  return headers;
}

/** Sends a copy whose response nobody reads (a duplicate the network made). */
function fireAndForget(port: number, req: http.IncomingMessage, body: Buffer): void {
  const out = http.request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers: forwardHeaders(req), agent }, (res) => res.resume());
  out.on('error', () => {});
  out.end(body);
}

export async function startProxy(backends: number[], initialFaults: ProxyFaults = {}): Promise<Proxy> {
  let ports = [...backends];
  let faults = initialFaults;
  let random = rng(faults.seed ?? 1);
  let next = 0;
  const stats: ProxyStats = {
    requests: 0,
    droppedRequests: 0,
    droppedResponses: 0,
    duplicates: 0,
    cutStreams: 0,
    delayed: 0,
    badGateway: 0,
    clientGone: 0,
    heldStreams: 0,
    perBackend: ports.map(() => 0),
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {});
    req.on('end', async () => {
      stats.requests++;
      const body = Buffer.concat(chunks);
      const draw = Array.from({ length: DRAWS }, () => random());
      const f = faults;
      const faulty = f.match ? f.match({ method: req.method ?? 'GET', url: req.url ?? '/' }) : true;
      const delay = faulty && draw[0]! < (f.delay ?? 1) ? draw[1]! * (f.maxDelayMs ?? 0) : 0;
      const dropRequest = faulty && draw[2]! < (f.dropRequest ?? 0);
      const duplicate = faulty && draw[3]! < (f.duplicate ?? 0);
      const dropResponse = faulty && draw[4]! < (f.dropResponse ?? 0);
      const cutStream = faulty && !dropResponse && draw[5]! < (f.cutStream ?? 0);
      const cutFraction = draw[6]!;
      if (delay > 0) {
        stats.delayed++;
        await new Promise((r) => setTimeout(r, delay));
      }
      if (dropRequest) {
        stats.droppedRequests++;
        res.socket?.destroy();
        return;
      }
      if (ports.length === 0) {
        stats.badGateway++;
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end('{"error":{"code":"BAD_GATEWAY","message":"no backend"}}');
        return;
      }
      const index = next++ % ports.length;
      stats.perBackend[index] = (stats.perBackend[index] ?? 0) + 1;
      if (duplicate) {
        stats.duplicates++;
        fireAndForget(ports[(index + 1) % ports.length]!, req, body);
      }
      const out = http.request(
        { host: '127.0.0.1', port: ports[index]!, method: req.method, path: req.url, headers: forwardHeaders(req), agent },
        (upstream) => relay(upstream),
      );
      let clientGone = false;
      let held = false;
      /** The backend died after the response started: with holdDeadStreams, leave the client hanging. */
      const hold = (): boolean => {
        if (!f.holdDeadStreams || !res.headersSent || res.writableEnded) return false;
        if (!held) stats.heldStreams++;
        held = true;
        return true;
      };
      out.on('error', () => {
        if (clientGone) {
          stats.clientGone++;
          return;
        }
        if (hold()) return;
        if (dropResponse) {
          stats.droppedResponses++;
          res.socket?.destroy();
          return;
        }
        stats.badGateway++;
        if (!res.headersSent) {
          res.writeHead(502, { 'content-type': 'application/json' });
          res.end('{"error":{"code":"BAD_GATEWAY","message":"backend unavailable"}}');
        } else {
          res.socket?.destroy();
        }
      });
      // The client went away: stop waiting for the backend (it still processes what it got).
      res.on('close', () => {
        if (res.writableFinished) return;
        clientGone = true;
        out.destroy();
      });
      out.end(body);

      function relay(upstream: http.IncomingMessage): void {
        upstream.on('error', () => {
          if (!hold()) res.socket?.destroy();
        });
        if (dropResponse) {
          // Let the backend finish its response, then lose it.
          upstream.resume();
          upstream.on('end', () => {
            stats.droppedResponses++;
            res.socket?.destroy();
          });
          return;
        }
        res.writeHead(upstream.statusCode ?? 502, responseHeaders(upstream));
        if (!cutStream) {
          upstream.pipe(res);
          return;
        }
        stats.cutStreams++;
        res.flushHeaders();
        const length = Number(upstream.headers['content-length']);
        // Content-Length known: cut at a byte below it. Streaming: pass 0..2 whole chunks, then part of the next.
        let budget = Number.isFinite(length) && length > 0 ? Math.floor(length * cutFraction) : Infinity;
        let wholeChunks = Number.isFinite(budget) ? Infinity : Math.floor(cutFraction * 3);
        let done = false;
        const cut = () => {
          if (done) return;
          done = true;
          upstream.destroy();
          // Flush what was written, then reset: the client sees a truncated body.
          res.socket?.end();
          setImmediate(() => res.socket?.destroy());
        };
        upstream.on('data', (chunk: Buffer) => {
          if (done) return;
          if (wholeChunks > 0 && !Number.isFinite(budget)) {
            wholeChunks--;
            res.write(chunk);
            return;
          }
          const take = Number.isFinite(budget) ? Math.min(budget, chunk.length) : Math.floor(chunk.length / 2);
          if (take > 0) res.write(chunk.subarray(0, take));
          budget -= take;
          if (!Number.isFinite(budget) || budget <= 0 || take < chunk.length) cut();
        });
        // A response shorter than the cut point still never ends properly.
        upstream.on('end', cut);
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
      while (stats.perBackend.length < ports.length) stats.perBackend.push(0);
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
