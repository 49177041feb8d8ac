/** Raw protocol calls (docs/PROTOCOL.md) for tests that speak the wire directly. */
export interface Reply {
  status: number;
  body: any;
  headers: Headers;
}

async function call(url: string, init: RequestInit): Promise<Reply> {
  const res = await fetch(url, init);
  const text = await res.text();
  let body: any = text;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    // leave as text: the test will fail on it with a readable value
  }
  return { status: res.status, body, headers: res.headers };
}

export class Wire {
  constructor(readonly base: string) {}

  open(body: unknown = { v: 1 }, headers: Record<string, string> = {}): Promise<Reply> {
    return call(this.base, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  }

  async openSid(meta?: unknown): Promise<string> {
    const r = await this.open(meta === undefined ? { v: 1 } : { v: 1, meta });
    if (r.status !== 201) throw new Error(`open failed: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.sid;
  }

  send(sid: string, msgs: Array<[number, unknown]>, ack?: number): Promise<Reply> {
    return this.sendRaw(sid, JSON.stringify(ack === undefined ? { msgs } : { msgs, ack }));
  }

  sendRaw(sid: string | null, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }): Promise<Reply> {
    return call(this.base + '/send', { method: 'POST', headers: { ...headers, ...(sid ? { 'bidi-sid': sid } : {}) }, body });
  }

  watch(sid: string, ack: number, wait = 0, signal?: AbortSignal): Promise<Reply> {
    return call(`${this.base}/watch?ack=${ack}&wait=${wait}`, { headers: { 'bidi-sid': sid }, signal });
  }

  close(sid: string): Promise<Reply> {
    return call(this.base, { method: 'DELETE', headers: { 'bidi-sid': sid } });
  }

  /** Watch until `count` messages after `from` arrived (or a close); returns them in order. */
  async collect(sid: string, count: number, from = 0, timeoutMs = 10_000): Promise<{ msgs: Array<[number, unknown]>; close?: { seq: number; reason: string } }> {
    const msgs: Array<[number, unknown]> = [];
    let ack = from;
    const deadline = Date.now() + timeoutMs;
    while (msgs.length < count && Date.now() < deadline) {
      const r = await this.watch(sid, ack, 1000);
      if (r.status !== 200) throw new Error(`watch failed: ${r.status} ${JSON.stringify(r.body)}`);
      for (const m of r.body.msgs) {
        msgs.push(m);
        ack = m[0];
      }
      if (r.body.close && ack >= r.body.close.seq - 1) return { msgs, close: r.body.close };
    }
    return { msgs };
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
