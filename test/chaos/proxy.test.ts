/** The fault-injecting balancer itself (test/helpers/proxy.ts): each fault does what it says, reproducibly. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startProxy, type Proxy, type ProxyFaults } from '../helpers/proxy';

interface Backend {
  port: number;
  hits: string[];
  close(): Promise<void>;
}

/** `/plain` answers with a Content-Length body; `/stream` writes three chunks 50 ms apart. */
async function backend(name: string): Promise<Backend> {
  const hits: string[] = [];
  const server = http.createServer((req, res) => {
    hits.push(`${req.method} ${req.url}`);
    req.resume();
    req.on('end', () => {
      if (req.url?.startsWith('/stream')) {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write(`{"chunk":1,"from":"${name}"}\n`);
        setTimeout(() => res.write('{"chunk":2}\n'), 50);
        setTimeout(() => res.end('{"chunk":3}\n'), 100);
        return;
      }
      const body = JSON.stringify({ from: name, pad: 'p'.repeat(2000) });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    hits,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

async function get(url: string): Promise<{ ok: true; status: number; text: string } | { ok: false; partial: string }> {
  let partial = '';
  try {
    const res = await fetch(url, { method: 'POST', body: 'x' });
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      partial += decoder.decode(value, { stream: true });
    }
    return { ok: true, status: res.status, text: partial };
  } catch {
    return { ok: false, partial };
  }
}

describe('the fault-injecting balancer', () => {
  let a: Backend;
  let b: Backend;
  let proxy: Proxy;
  beforeEach(async () => {
    a = await backend('a');
    b = await backend('b');
  });
  afterEach(async () => {
    await proxy?.close();
    await a.close();
    await b.close();
  });

  it('without faults: round-robin, and a streaming response goes through chunk by chunk', async () => {
    proxy = await startProxy([a.port, b.port]);
    const froms = [];
    for (let i = 0; i < 4; i++) {
      const r = await get(proxy.url + '/plain');
      froms.push(r.ok && JSON.parse(r.text).from);
    }
    expect(froms).toEqual(['a', 'b', 'a', 'b']);
    // The first chunk arrives before the backend wrote the last one.
    const res = await fetch(proxy.url + '/stream', { method: 'POST', body: 'x' });
    const reader = res.body!.getReader();
    const t0 = Date.now();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toContain('"chunk":1');
    expect(Date.now() - t0).toBeLessThan(90);
    while (!(await reader.read()).done);
    expect(proxy.stats).toMatchObject({ requests: 5, droppedRequests: 0, droppedResponses: 0, duplicates: 0, cutStreams: 0 });
  });

  it('dropRequest: the backend never sees it; dropResponse: the backend processed it, the client gets nothing', async () => {
    proxy = await startProxy([a.port], { dropRequest: 1 });
    expect((await get(proxy.url + '/plain')).ok).toBe(false);
    expect(a.hits).toHaveLength(0);
    proxy.setFaults({ dropResponse: 1 });
    expect((await get(proxy.url + '/plain')).ok).toBe(false);
    expect(a.hits).toHaveLength(1);
    expect(proxy.stats).toMatchObject({ droppedRequests: 1, droppedResponses: 1 });
  });

  it('duplicate: the request reaches the next backend too; the client sees one response', async () => {
    proxy = await startProxy([a.port, b.port], { duplicate: 1 });
    const r = await get(proxy.url + '/plain');
    expect(r.ok && JSON.parse(r.text).from).toBe('a');
    await new Promise((res) => setTimeout(res, 50));
    expect([a.hits.length, b.hits.length]).toEqual([1, 1]);
  });

  it('cutStream: a Content-Length response arrives truncated; a streaming one stops after part of its chunks', async () => {
    proxy = await startProxy([a.port], { cutStream: 1, seed: 7 });
    for (let i = 0; i < 5; i++) {
      const r = await get(proxy.url + '/plain');
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.partial.length).toBeLessThan(2000);
    }
    let sawPartialStream = false;
    for (let i = 0; i < 10; i++) {
      const r = await get(proxy.url + '/stream');
      expect(r.ok).toBe(false);
      if (!r.ok && r.partial.includes('"chunk":1')) sawPartialStream = true;
      if (!r.ok) expect(r.partial).not.toContain('"chunk":3}\n');
    }
    expect(sawPartialStream).toBe(true);
    expect(proxy.stats.cutStreams).toBe(15);
    expect(a.hits).toHaveLength(15); // every cut request was processed by the backend
  });

  it('per-request probabilities from a seed: the same seed gives the same faults, another seed others', async () => {
    const pattern = async (faults: ProxyFaults) => {
      proxy.setFaults(faults);
      const out: string[] = [];
      for (let i = 0; i < 60; i++) out.push((await get(proxy.url + '/plain')).ok ? '.' : 'x');
      return out.join('');
    };
    proxy = await startProxy([a.port, b.port]);
    const faults = { dropRequest: 0.2, dropResponse: 0.2, maxDelayMs: 2 };
    const first = await pattern({ ...faults, seed: 42 });
    const again = await pattern({ ...faults, seed: 42 });
    const other = await pattern({ ...faults, seed: 43 });
    expect(again).toBe(first);
    expect(other).not.toBe(first);
    // About 36 % of requests fail (1 − 0.8 × 0.8), and 0 % with the probabilities at 0.
    const failed = first.split('').filter((c) => c === 'x').length;
    expect(failed).toBeGreaterThan(8);
    expect(failed).toBeLessThan(40);
    expect(await pattern({ seed: 42 })).toBe('.'.repeat(60));
  });

  it('match: faults only for the requests it selects', async () => {
    proxy = await startProxy([a.port], { dropRequest: 1, match: (r) => r.url.startsWith('/stream') });
    expect((await get(proxy.url + '/plain')).ok).toBe(true);
    expect((await get(proxy.url + '/stream')).ok).toBe(false);
  });
});
