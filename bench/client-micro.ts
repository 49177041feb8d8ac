// In-process client micro-bench: N sessions over `transport: 'websocket'`, each sending and awaiting
// its echo in turn, against a fake WebSocket that answers each send as bidiweb/ws does (the watch
// frame with the echo and the send's reply, one message, in a later macrotask). No sockets, no
// server: prints the client library's own CPU µs per echo round trip (plus the fake's JSON work,
// about 1 µs). Not part of `npm run bench`; see docs/BENCHMARKS.md, "Client CPU per request".
//
//   node scripts/run-ts.mjs bench/client-micro.ts          # SESS=50 ROUNDS=400 REPS=7
import { open, type FetchLike, type WebSocketConstructorLike, type WebSocketLike } from '../src/client';
const OPEN = '{"sid":"bAbSB4NVCoyyRm6PB9udpw","v":1,"wait":25000,"limits":{"maxBodyBytes":1048576,"maxMessageBytes":262144,"maxMessagesPerRequest":100,"inboundWindow":256,"inboundBufferBytes":4194304,"maxMessagesPerResponse":500,"maxResponseBytes":262144,"maxUnackedMessages":1024,"maxUnackedBytes":4194304,"maxJsonDepth":64,"maxWait":55000,"idleTimeout":120000,"leaseMs":5000}}';
/** The open request's answer, as a MemoryStore server gives it; nothing else goes over HTTP. */
const fetchImpl: FetchLike = async () => ({ status: 201, headers: { get: (n: string) => (n.toLowerCase() === 'content-type' ? 'application/json' : null) }, text: async () => OPEN });
/** Answers each frame as bidiweb/ws would: `ready`, a watch's heartbeat announcement, a send's echo and reply. */
class FakeWS implements WebSocketLike {
  readyState = 0;
  bufferedAmount = 0;
  onopen: WebSocketLike['onopen'] = null;
  onmessage: WebSocketLike['onmessage'] = null;
  onclose: WebSocketLike['onclose'] = null;
  onerror: WebSocketLike['onerror'] = null;
  private watchId = 0;
  private out = 0;

  constructor() {
    setImmediate(() => {
      this.readyState = 1;
      this.onopen?.({});
    });
  }

  close(): void {
    this.readyState = 3;
  }

  send(frame: string): void {
    if (frame.startsWith('{"sid"')) return this.deliver('{"ready":true,"v":1}');
    const m = /^\{"id":(\d+),"(send|watch|cancel)":/.exec(frame)!;
    const id = Number(m[1]);
    if (m[2] === 'cancel') return;
    if (m[2] === 'watch') {
      this.watchId = id;
      return this.deliver('{"id":' + id + ',"hb":25000}');
    }
    const [seq, data] = (JSON.parse(frame.slice(m[0].length, -1)) as { msgs: [number, unknown][] }).msgs[0]!;
    this.out++;
    // The stream never ends here (a real one ends after maxMessagesPerResponse / 2 messages).
    this.deliver('{"id":' + this.watchId + ',"frame":{"msgs":[[' + this.out + ',' + JSON.stringify(data) + ']],"ack":' + seq + '}}\n{"id":' + id + ',"status":200,"body":{"ack":' + seq + '}}');
  }

  private deliver(data: string): void {
    setImmediate(() => this.onmessage?.({ data }));
  }
}

const SESS = Number(process.env.SESS ?? 50), ROUNDS = Number(process.env.ROUNDS ?? 400), REPS = Number(process.env.REPS ?? 7);
async function main() {
  const sessions = await Promise.all(Array.from({ length: SESS }, async () => {
    const s = open('http://127.0.0.1:1/bidi', { transport: 'websocket', WebSocket: FakeWS as unknown as WebSocketConstructorLike, fetch: fetchImpl });
    let waiter: (() => void) | undefined;
    s.on('message', () => { const w = waiter; waiter = undefined; w?.(); });
    await new Promise<void>((res, rej) => { s.on('open', () => res()); s.on('close', (e) => rej(new Error(e.code))); });
    return { s, next: () => new Promise<void>((res) => (waiter = res)) };
  }));
  const run = async () => { await Promise.all(sessions.map(async ({ s, next }, k) => { for (let r = 0; r < ROUNDS; r++) { const p = next(); void s.send({ e: 1, r, k, t: performance.now() }).catch(() => {}); await p; } })); };
  await run(); await run();
  const res: number[] = [];
  for (let i = 0; i < REPS; i++) {
    const c0 = process.cpuUsage();
    await run();
    const d = process.cpuUsage(c0);
    res.push((d.user + d.system) / (SESS * ROUNDS));
  }
  res.sort((a, b) => a - b);
  console.log('client CPU µs per echo round trip: median', res[Math.floor(res.length / 2)].toFixed(2), 'min', res[0].toFixed(2));
  process.exit(0);
}
void main();
