/**
 * The chat sample in real Chromium over the WebSocket transport: three chat
 * instances (child processes, samples/chat/instance.ts with WS=1: bidiweb/ws
 * attached) over one RedisStore, behind the chat:cluster balancer
 * (samples/chat/balancer.ts), which forwards upgrades round robin — no
 * stickiness. The pages opt in with `?transport=websocket` / `?transport=auto`
 * (samples/chat/public/app.js).
 *
 *   npm run test:e2e
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { startBalancer, type Balancer } from '../../samples/chat/balancer';
import { bundleEntry } from '../../samples/chat/bundle';
import { startChatInstance, type ChatInstance } from '../../samples/chat/cluster';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { join, launchChromium, lines, say, waitForStatus, waitForTexts } from './browser';

const ROOT = path.join(__dirname, '..', '..');

let redis: RedisProcess;
let bundle: string;
const instances: ChatInstance[] = [];
let browser: Browser;
const contexts: BrowserContext[] = [];
const pageErrors: string[] = [];

beforeAll(async () => {
  redis = await startRedis();
  bundle = bundleEntry(path.join(ROOT, 'samples', 'chat', 'instance.ts'));
  for (let i = 1; i <= 3; i++) {
    instances.push(await startChatInstance(bundle, { REDIS_URL: redis.url, INSTANCE: `ws-${i}`, PREFIX: 'e2e-ws:', WAIT: '3000', WS: '1' }));
  }
  browser = await launchChromium();
}, 90_000);

afterAll(async () => {
  await browser?.close().catch(() => {});
  await Promise.all(instances.map((i) => i.stop()));
  await redis?.stop();
  if (bundle) rmSync(path.dirname(bundle), { recursive: true, force: true });
});

interface TestPage {
  page: Page;
  /** The page's WebSockets, in the order it opened them. */
  sockets: Array<{ url: string; closed: boolean; received: number }>;
  /** HTTP answers of 400 or more. */
  failed: string[];
}

/** A page whose User-Agent names it: the balancer's tunnels say which page a socket is (an upgrade carries no sid). */
async function newPage(name: string): Promise<TestPage> {
  const context = await browser.newContext({ viewport: { width: 1000, height: 720 }, userAgent: `bidiweb-e2e ${name}` });
  contexts.push(context);
  const page = await context.newPage();
  const t: TestPage = { page, sockets: [], failed: [] };
  page.on('pageerror', (err) => pageErrors.push(`${name}: ${err.message}`));
  page.on('response', (res) => {
    if (res.status() >= 400) t.failed.push(`${res.status()} ${res.request().method()} ${res.url()}`);
  });
  page.on('websocket', (ws) => {
    const s = { url: ws.url(), closed: false, received: 0 };
    t.sockets.push(s);
    ws.on('framereceived', () => s.received++);
    ws.on('close', () => (s.closed = true));
  });
  return t;
}

const texts = (ls: Array<{ text: string }>) => ls.map((l) => l.text);
const transportOf = (page: Page) => page.$eval('#status', (e) => (e as HTMLElement).dataset.transport);
const repeatsOf = (page: Page) => page.$eval('#messages', (e) => Number((e as HTMLElement).dataset.repeats ?? 0));

/** The instance holding `name`'s one open socket. */
function socketInstance(lb: Balancer, name: string): number {
  const open = lb.tunnels.filter((t) => t.open && t.userAgent === `bidiweb-e2e ${name}`);
  expect(open).toHaveLength(1);
  return open[0]!.backend;
}

async function waitForOpenTunnel(lb: Balancer, name: string, timeout = 20_000): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!lb.tunnels.some((t) => t.open && t.userAgent === `bidiweb-e2e ${name}`)) {
    if (Date.now() > deadline) throw new Error(`no open socket of ${name} within ${timeout} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("transport 'auto' behind a proxy that refuses upgrades: the page falls back to HTTP and chats exactly once, in order", async () => {
  const lb = await startBalancer(instances.map((i) => i.port), 0, { upgrades: 'refuse' });
  const url = `http://127.0.0.1:${lb.port}`;
  try {
    const ann = await newPage('ann-auto');
    const bob = await newPage('bob-auto');
    await join(ann.page, url, 'ann', 'ws-refused', '?transport=auto');
    await join(bob.page, url, 'bob', 'ws-refused', '?transport=auto');
    const fromAnn = ['a1', 'a2', 'a3', 'a4'];
    for (const t of fromAnn) await say(ann.page, t);
    await waitForTexts(bob.page, fromAnn);
    await say(bob.page, 'b1');
    await waitForTexts(ann.page, ['b1']);
    for (const p of [ann.page, bob.page]) {
      expect(texts(await lines(p))).toEqual([...fromAnn, 'b1']);
      expect(await transportOf(p)).toBe('http');
      expect(await repeatsOf(p)).toBe(0);
    }
    // Each page tried a socket, the proxy refused it, nothing went over one.
    expect(lb.upgradeStats.refused).toBeGreaterThanOrEqual(2);
    expect(lb.tunnels).toEqual([]);
    for (const t of [ann, bob]) {
      expect(t.sockets.length).toBeGreaterThanOrEqual(1);
      expect(t.sockets.every((s) => s.received === 0)).toBe(true);
      expect(t.failed).toEqual([]); // the refused upgrade is not an HTTP response the page sees
    }
    console.log(`auto fallback: ${lb.upgradeStats.refused} upgrades refused, pages on ${await transportOf(ann.page)}`);
  } finally {
    await lb.close();
  }
});

test('over WebSocket: the instance holding a page socket is SIGKILLed mid-stream, twice; both pages show every line once, in order', async () => {
  const lb = await startBalancer(instances.map((i) => i.port), 0, { healthIntervalMs: 500 });
  const url = `http://127.0.0.1:${lb.port}`;
  try {
    const ann = await newPage('ann');
    const bob = await newPage('bob');
    await join(ann.page, url, 'ann', 'ws-kill', '?transport=websocket');
    await join(bob.page, url, 'bob', 'ws-kill', '?transport=websocket');
    await say(ann.page, 'before');
    await waitForTexts(bob.page, ['before']);
    expect(await transportOf(bob.page)).toBe('websocket');
    await waitForOpenTunnel(lb, 'ann');
    await waitForOpenTunnel(lb, 'bob');

    // Phase 1: ann types; the instance holding bob's socket dies after her 2nd line (lines in flight to bob).
    const bobVictim = socketInstance(lb, 'bob');
    const fromAnn = ['a1', 'a2', 'a3', 'a4', 'a5', 'a6'];
    for (let i = 0; i < fromAnn.length; i++) {
      await say(ann.page, fromAnn[i]!);
      if (i === 1) instances[bobVictim]!.child.kill('SIGKILL');
    }
    await waitForTexts(bob.page, fromAnn, 40_000);
    await waitForTexts(ann.page, fromAnn, 40_000);
    await waitForOpenTunnel(lb, 'bob');
    expect(socketInstance(lb, 'bob')).not.toBe(bobVictim);

    // Phase 2: bob types; the instance now holding ann's socket dies after bob's 2nd line.
    await waitForOpenTunnel(lb, 'ann');
    const annVictim = socketInstance(lb, 'ann');
    const fromBob = ['b1', 'b2', 'b3', 'b4', 'b5', 'b6'];
    for (let i = 0; i < fromBob.length; i++) {
      await say(bob.page, fromBob[i]!);
      if (i === 1) instances[annVictim]!.child.kill('SIGKILL');
    }
    await waitForTexts(ann.page, fromBob, 40_000);
    await waitForTexts(bob.page, fromBob, 40_000);

    // The exact sequence, on both pages: nothing lost, nothing doubled, the room's order.
    const expected = ['before', ...fromAnn, ...fromBob];
    for (const p of [ann.page, bob.page]) {
      expect(texts(await lines(p))).toEqual(expected);
      await p.waitForFunction(() => [...document.querySelectorAll('#messages li.mine')].every((e) => (e as HTMLElement).dataset.state === 'acked' && !e.classList.contains('pending')));
      await waitForStatus(p, 'open', undefined, 20_000);
      expect(await transportOf(p)).toBe('websocket');
    }
    const killed = new Set([bobVictim, annVictim]);
    // Both kills hit a socket in use; each page got a new socket, on an instance still alive.
    for (const [t, name] of [[ann, 'ann'], [bob, 'bob']] as const) {
      expect(t.sockets.length).toBeGreaterThanOrEqual(2);
      expect(t.sockets.every((s) => s.received > 0)).toBe(true); // the lines came over the sockets
      expect(t.sockets.filter((s) => !s.closed)).toHaveLength(1);
      await waitForOpenTunnel(lb, name);
      expect(killed.has(socketInstance(lb, name))).toBe(false);
    }
    const repeats = [await repeatsOf(ann.page), await repeatsOf(bob.page)];
    console.log(
      `ws kill e2e: killed instance(s) ${[...killed].map((k) => instances[k]!.name).join(', ')}; sockets opened ann ${ann.sockets.length}, bob ${bob.sockets.length}; ` +
        `tunnels ${lb.tunnels.length}; second copies dropped by the pages (handler redeliveries) ${repeats.join('/')}; HTTP failures ann ${ann.failed.length}, bob ${bob.failed.length}`,
    );
  } finally {
    await lb.close();
  }
});

test('no page errors', () => {
  expect(pageErrors).toEqual([]);
});
