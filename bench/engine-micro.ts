// In-process engine micro-bench: N sessions, each one streaming watch + sequential echo sends, as
// bidiweb/ws drives the core (serveAdmitted), no sockets. Prints this process's CPU µs per echo round
// trip (the core's, plus this file's small client part). Not part of `npm run bench`.
//
//   node scripts/run-ts.mjs bench/engine-micro.ts          # SESSIONS=50 ROUNDS=2000 MODE=stream|plain
import { BidiServer } from '../src/core/server';
import type { BidiRequest, BidiStream } from '../src/core/http';

const SESSIONS = Number(process.env.SESSIONS ?? 50);
const ROUNDS = Number(process.env.ROUNDS ?? 2000);
const MODE = process.env.MODE ?? 'stream'; // stream | plain

class Headers {
  constructor(private readonly sid: string, private readonly body: boolean) {}
  get(name: string): string | null {
    if (name === 'bidi-sid') return this.sid;
    if (name === 'content-type') return this.body ? 'application/json' : null;
    return null;
  }
}
function req(method: string, path: string, sid: string, body?: string, query = new URLSearchParams()): BidiRequest {
  return { method, path, query, headers: new Headers(sid, body !== undefined), text: async () => body ?? '', canStream: true };
}

async function main() {
  const server = new BidiServer({
    path: '/s',
    onMessage(session, data) {
      if (data && typeof data === 'object' && (data as { e?: unknown }).e) void session.send(data).catch(() => {});
    },
  });
  const sids: string[] = [];
  for (let i = 0; i < SESSIONS; i++) {
    const res = await server.handle({ ...req('POST', '/s', '', JSON.stringify({ v: 1, meta: null })) });
    sids.push(JSON.parse(res!.body).sid);
  }
  const state = new Map<string, { seq: number; ack: number }>();
  async function client(sid: string, rounds: number) {
    const st = state.get(sid) ?? { seq: 0, ack: 0 };
    state.set(sid, st);
    let { seq, ack } = st;
    let stream: BidiStream | undefined;
    const pending: string[] = [];
    const startWatch = async () => {
      const q = new URLSearchParams({ ack: String(ack), wait: '20000', ...(MODE === 'stream' ? { stream: '1' } : {}) });
      const res = await server.serveAdmitted('watch', req('GET', '/s/watch', sid, undefined, q));
      if (res.stream) {
        stream = res.stream;
        if (res.body && res.body !== '\n') pending.push(res.body);
      } else pending.push(res.body);
    };
    if (MODE === 'stream') await startWatch();
    for (let r = 0; r < rounds; r++) {
      seq++;
      const body = '{"msgs":[[' + seq + ',{"e":1,"r":' + r + ',"k":"c' + sid.slice(0, 4) + '","t":' + (1e12 + r * 1.5) + '}]],"ack":' + ack + '}';
      const watchP = MODE === 'stream' ? undefined : startWatch();
      const res = await server.serveAdmitted('send', req('POST', '/s/send', sid, body));
      if (res.status !== 200) throw new Error(res.body);
      let got = false;
      while (!got) {
        if (MODE !== 'stream') await watchP;
        let chunk = pending.shift();
        if (chunk === undefined) chunk = (await stream!.next()) ?? undefined;
        if (chunk === undefined) {
          await startWatch();
          continue;
        }
        if (chunk.trim() === '') continue;
        const f = JSON.parse(chunk);
        if (f.msgs.length > 0) {
          ack = f.msgs[f.msgs.length - 1][0];
          got = true;
        }
      }
    }
    stream?.close();
    st.seq = seq;
    st.ack = ack;
  }
  // warm-up
  await Promise.all(sids.map((sid) => client(sid, 200)));
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(sids.map((sid) => client(sid, ROUNDS)));
  const cpu = process.cpuUsage(c0);
  const ms = performance.now() - t0;
  const n = SESSIONS * ROUNDS;
  console.log(`${MODE}: ${n} rt in ${ms.toFixed(0)} ms, cpu ${((cpu.user + cpu.system) / n).toFixed(2)} µs/rt (user ${(cpu.user / n).toFixed(2)})`);
  await server.dispose();
}
void main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
