/**
 * The chat sample in real Chromium: three chat instances (child processes,
 * samples/chat/instance.ts) over one RedisStore on a test-started
 * redis-server, behind the round-robin proxy of test/helpers/proxy.ts — no
 * stickiness: every request of a page may land on any instance.
 *
 *   npm run test:e2e
 */
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import Redis from 'ioredis';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { newSessionId } from '../../src/core/util';
import { RedisStore } from '../../src/redis';
import { startBalancer } from '../../samples/chat/balancer';
import { bundleEntry } from '../../samples/chat/bundle';
import { roomGroup } from '../../samples/chat/chat';
import { startChatInstance, type ChatInstance } from '../../samples/chat/cluster';
import { startProxy, type Proxy } from '../helpers/proxy';
import { startRedis, type RedisProcess } from '../helpers/redis-server';
import { join, launchChromium, lines, recordInstances, say, status, waitForStatus, waitForTexts } from './browser';

const ROOT = path.join(__dirname, '..', '..');
const ARTIFACTS = path.join(ROOT, 'test-artifacts');

let redis: RedisProcess;
let bundle: string;
const instances: ChatInstance[] = [];
let proxy: Proxy;
let browser: Browser;
const contexts: BrowserContext[] = [];
const stderr: string[] = [];
/** Every answer of 400 or more any page got, except where a test expects them (409 of a refused nick). */
const failedResponses: string[] = [];

beforeAll(async () => {
  redis = await startRedis();
  bundle = bundleEntry(path.join(ROOT, 'samples', 'chat', 'instance.ts'));
  for (let i = 1; i <= 3; i++) {
    instances.push(
      await startChatInstance(bundle, {
        REDIS_URL: redis.url,
        INSTANCE: `instance-${i}`,
        PREFIX: 'e2e:',
        // Short watches: a page that goes offline notices within seconds.
        WAIT: '3000',
      }),
    );
  }
  proxy = await startProxy(instances.map((i) => i.port));
  browser = await launchChromium();
}, 90_000);

afterAll(async () => {
  await browser?.close().catch(() => {});
  await proxy?.close();
  await Promise.all(instances.map((i) => i.stop()));
  await redis?.stop();
  if (bundle) rmSync(path.dirname(bundle), { recursive: true, force: true });
});

async function newPage(): Promise<{ context: BrowserContext; page: Page; served: string[] }> {
  const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
  contexts.push(context);
  const page = await context.newPage();
  page.on('pageerror', (err) => stderr.push(`pageerror: ${err.message}`));
  page.on('response', (res) => {
    if (res.status() >= 400 && res.status() !== 409) failedResponses.push(`${res.status()} ${res.request().method()} ${res.url()}`);
  });
  return { context, page, served: recordInstances(page) };
}

const presenceOf = (page: Page) => page.$$eval('#presence li', (els) => els.map((e) => e.textContent));
const visible = (page: Page, id: string) => page.$eval(`#${id}`, (e) => !(e as HTMLElement).hidden);

/** Fills the join form and submits it, waiting for nothing. */
async function submitJoin(page: Page, nick: string, room: string): Promise<void> {
  await page.fill('#nick', nick);
  await page.fill('#room', room);
  await page.click('#join button[type="submit"]');
}

const texts = (ls: Array<{ text: string }>) => ls.map((l) => l.text);

test('two pages on a round-robin balancer chat both ways, in order, exactly once', async () => {
  const room = 'both-ways';
  const ann = await newPage();
  const bob = await newPage();
  await join(ann.page, proxy.url, 'ann', room);
  await join(bob.page, proxy.url, 'bob', room);
  await ann.page.waitForFunction(() => document.getElementById('count')!.textContent === '(2)');
  expect(await ann.page.$$eval('#presence li', (els) => els.map((e) => e.textContent))).toEqual(['ann', 'bob']);

  // Typed as fast as Playwright can, interleaved: several POSTs in flight per page.
  const fromAnn = Array.from({ length: 6 }, (_, i) => `ann ${i + 1}`);
  const fromBob = Array.from({ length: 6 }, (_, i) => `bob ${i + 1}`);
  for (let i = 0; i < 6; i++) {
    await say(ann.page, fromAnn[i]!);
    await say(bob.page, fromBob[i]!);
  }
  const all = [...fromAnn, ...fromBob];
  await waitForTexts(ann.page, all);
  await waitForTexts(bob.page, all);

  for (const p of [ann.page, bob.page]) {
    const shown = await lines(p);
    // Exactly once each, and each sender's lines in the order typed.
    expect([...texts(shown)].sort()).toEqual([...all].sort());
    expect(texts(shown.filter((l) => l.from === 'ann'))).toEqual(fromAnn);
    expect(texts(shown.filter((l) => l.from === 'bob'))).toEqual(fromBob);
  }
  // Our own lines went sending → acked, and left the pending tail.
  await ann.page.waitForFunction(() => [...document.querySelectorAll('#messages li.mine')].every((e) => (e as HTMLElement).dataset.state === 'acked' && !e.classList.contains('pending')));
  expect((await lines(ann.page)).filter((l) => l.from === 'ann').every((l) => l.state === 'acked')).toBe(true);

  // The pages were served by different instances: each page's requests spread over several.
  expect(new Set(ann.served).size).toBeGreaterThanOrEqual(2);
  expect(new Set(bob.served).size).toBeGreaterThanOrEqual(2);
  expect(new Set([...ann.served, ...bob.served])).toEqual(new Set(['instance-1', 'instance-2', 'instance-3']));
  expect(proxy.stats.perBackend.every((n) => n > 0)).toBe(true);
  await expect(status(ann.page)).resolves.toMatchObject({ state: 'open' });
});

test('a page that goes offline shows it, then receives everything it missed exactly once, in order', async () => {
  const room = 'offline';
  const ann = await newPage();
  const bob = await newPage();
  await join(ann.page, proxy.url, 'ann', room);
  await join(bob.page, proxy.url, 'bob', room);
  await say(ann.page, 'before');
  await waitForTexts(bob.page, ['before']);
  await waitForStatus(bob.page, 'open');

  await bob.context.setOffline(true);
  // The page says so at once (the browser's offline event)…
  await waitForStatus(bob.page, 'retrying');
  // …and the client confirms: its watch failed and backs off. From here on nothing reaches bob.
  await waitForStatus(bob.page, 'retrying', /attempt \d+/, 20_000);
  const before = texts(await lines(bob.page));

  const missed = Array.from({ length: 8 }, (_, i) => `while you were away ${i + 1}`);
  for (const t of missed) await say(ann.page, t);
  // Bob types while offline: shown at once as sending.
  await say(bob.page, 'typed offline');
  await bob.page.waitForSelector('#messages li.mine.pending[data-state="sending"]');
  await waitForTexts(ann.page, missed);
  await ann.page.waitForTimeout(1000);
  expect(texts(await lines(bob.page)).filter((t) => t !== 'typed offline')).toEqual(before);
  await expect(status(bob.page)).resolves.toMatchObject({ state: 'retrying' });
  mkdirSync(ARTIFACTS, { recursive: true });
  await bob.page.screenshot({ path: path.join(ARTIFACTS, 'chat-offline.png') });

  await bob.context.setOffline(false);
  await waitForTexts(bob.page, [...missed, 'typed offline'], 40_000);
  await waitForStatus(bob.page, 'open', undefined, 20_000);
  await bob.page.waitForSelector('#messages li.mine[data-state="acked"]:not(.pending)');

  const shown = texts(await lines(bob.page));
  const annLines = shown.filter((t) => t === 'before' || t.startsWith('while you were away'));
  expect(annLines).toEqual(['before', ...missed]); // in order, none twice, none lost
  await waitForTexts(ann.page, ['typed offline']);
  expect(texts(await lines(ann.page)).filter((t) => t === 'typed offline')).toHaveLength(1);

  // A newcomer gets the room's history from the store (whichever instance serves it).
  const cy = await newPage();
  await join(cy.page, proxy.url, 'cy', room);
  await waitForTexts(cy.page, ['before', ...missed, 'typed offline']);
  const history = (await lines(cy.page)).filter((l) => l.history);
  expect(texts(history)).toEqual(['before', ...missed, 'typed offline']);
  await cy.page.waitForFunction(() => document.getElementById('count')!.textContent === '(3)');

  await bob.page.waitForFunction(() => document.getElementById('count')!.textContent === '(3)');
  await bob.page.screenshot({ path: path.join(ARTIFACTS, 'chat.png') });

  // Leaving shows the close reason.
  await cy.page.click('#leave');
  await waitForStatus(cy.page, 'closed', /you left/);
  expect(await cy.page.$eval('#status', (e) => (e as HTMLElement).dataset.code)).toBe('CLIENT');
});

test('closing a tab ends its session at once (keepalive DELETE on pagehide): the room sees it leave', async () => {
  const room = 'tab-close';
  const ann = await newPage();
  const bob = await newPage();
  await join(ann.page, proxy.url, 'ann', room);
  await join(bob.page, proxy.url, 'bob', room);
  await bob.page.waitForFunction(() => document.getElementById('count')!.textContent === '(2)');
  const closedAt = Date.now();
  // The page's own script registers no pagehide handler: the client library does it.
  await ann.page.close({ runBeforeUnload: true });
  // The idle timeout is 120 s: only the DELETE can make this happen within seconds.
  await bob.page.waitForFunction(() => document.getElementById('count')!.textContent === '(1)', undefined, { timeout: 10_000 });
  expect(Date.now() - closedAt).toBeLessThan(10_000);
  expect(await bob.page.$$eval('#presence li', (els) => els.map((e) => e.textContent))).toEqual(['bob']);
  // (Playwright does not report a keepalive request sent as its page closes; test/client/page-hide.test.ts
  // checks the request itself.)
});

test('Leave takes the old room off the page: only the join form is left', async () => {
  const ann = await newPage();
  const bob = await newPage();
  await join(ann.page, proxy.url, 'ann', 'leave-room');
  await join(bob.page, proxy.url, 'bob', 'leave-room');
  await say(ann.page, 'bye soon');
  await waitForTexts(bob.page, ['bye soon']);
  await bob.page.click('#leave');
  await waitForStatus(bob.page, 'closed', /you left/);
  expect(await visible(bob.page, 'chat')).toBe(false);
  expect(await visible(bob.page, 'join')).toBe(true);
  expect(await bob.page.$eval('#room-title', (e) => e.textContent)).toBe('');
  expect(await bob.page.$$eval('#messages li', (els) => els.length)).toBe(0);
  expect(await presenceOf(bob.page)).toEqual([]);
  expect(await bob.page.$eval('#join button[type="submit"]', (e) => e.textContent)).toBe('Join again');
  mkdirSync(ARTIFACTS, { recursive: true });
  await bob.page.screenshot({ path: path.join(ARTIFACTS, 'chat-after-leave.png') });
  await ann.page.waitForFunction(() => document.getElementById('count')!.textContent === '(1)');

  // Joining another room shows that room only.
  await join(bob.page, proxy.url, 'bob', 'leave-other');
  expect(await bob.page.$eval('#room-title', (e) => e.textContent)).toBe('#leave-other');
  expect(texts(await lines(bob.page))).toEqual([]);
});

test('a nick taken in the room is refused with the reason on the join form; the room keeps one of it', async () => {
  const room = 'nick-taken';
  const ann = await newPage();
  const twin = await newPage();
  await join(ann.page, proxy.url, 'ann', room);
  await twin.page.goto(`${proxy.url}/#${room}`);
  await submitJoin(twin.page, 'Ann', room);
  await waitForStatus(twin.page, 'closed');
  await twin.page.waitForSelector('#join-error:not([hidden])');
  expect(await twin.page.$eval('#join-error', (e) => e.textContent)).toBe('the nick "Ann" is taken in #nick-taken: choose another');
  expect(await twin.page.$eval('#status', (e) => (e as HTMLElement).dataset.code)).toBe('REJECTED');
  expect(await visible(twin.page, 'chat')).toBe(false);
  mkdirSync(ARTIFACTS, { recursive: true });
  await twin.page.screenshot({ path: path.join(ARTIFACTS, 'chat-nick-taken.png') });
  expect(await presenceOf(ann.page)).toEqual(['ann']);

  // Another nick gets in.
  await submitJoin(twin.page, 'ann2', room);
  await twin.page.waitForSelector('#chat:not([hidden])');
  await ann.page.waitForFunction(() => document.getElementById('count')!.textContent === '(2)');
  expect(await presenceOf(ann.page)).toEqual(['ann', 'ann2']);
  expect(await visible(twin.page, 'join-error')).toBe(false);
});

test('a namesake that got in at the same moment on another instance: the page is told at its hello and goes back to the join form', async () => {
  const room = 'nick-race';
  const { page } = await newPage();
  // Hold the page's first send (its hello) until "another instance" has opened a session with
  // the same nick: what a racing open leaves in the store (created, a member of the room).
  const redisConn = new Redis(redis.url);
  const store = new RedisStore({ redis: redisConn, prefix: 'e2e:' });
  let held = false;
  await page.route('**/session/send', async (route) => {
    if (!held) {
      held = true;
      const sid = newSessionId();
      await store.create({ sid, userJson: JSON.stringify({ nick: 'zoe', room }), stateJson: '{"announced":false}', initial: [], idleMs: 60_000, maxSessions: 1_000_000 });
      await store.join(sid, roomGroup(room));
    }
    await route.continue();
  });
  try {
    await page.goto(`${proxy.url}/#${room}`);
    await submitJoin(page, 'zoe', room);
    await waitForStatus(page, 'closed', /nick is taken/);
    expect(await page.$eval('#status', (e) => (e as HTMLElement).dataset.code)).toBe('SERVER');
    expect(await page.$eval('#join-error', (e) => e.textContent)).toBe('the nick "zoe" is taken in #nick-race: choose another');
    expect(await visible(page, 'chat')).toBe(false);
    expect(await visible(page, 'join')).toBe(true);
  } finally {
    await store.dispose();
    await redisConn.quit();
  }
});

test('the page has a favicon (no 404)', async () => {
  const { page } = await newPage();
  await page.goto(`${proxy.url}/`);
  const icon = await page.evaluate(async () => {
    const href = (document.querySelector('link[rel="icon"]') as HTMLLinkElement).href;
    const res = await fetch(href);
    const ico = await fetch('/favicon.ico');
    return { status: res.status, type: res.headers.get('content-type'), ico: ico.status };
  });
  expect(icon).toEqual({ status: 200, type: expect.stringMatching(/^image\/svg\+xml/), ico: 200 });
});

test('chat:cluster balancer: an instance killed mid-chat is skipped; the pages carry on with no 502', async () => {
  const room = 'dead-instance';
  const own = [
    await startChatInstance(bundle, { REDIS_URL: redis.url, INSTANCE: 'b-1', PREFIX: 'e2e:', WAIT: '3000' }),
    await startChatInstance(bundle, { REDIS_URL: redis.url, INSTANCE: 'b-2', PREFIX: 'e2e:', WAIT: '3000' }),
    await startChatInstance(bundle, { REDIS_URL: redis.url, INSTANCE: 'b-3', PREFIX: 'e2e:', WAIT: '3000' }),
  ];
  const lb = await startBalancer(own.map((i) => i.port), 0, { healthIntervalMs: 500 });
  const url = `http://127.0.0.1:${lb.port}`;
  // 502s for requests made once the instance was dead. (A POST it died with in hand
  // answers 502 by design — it may have been acted on — and the client retries it.)
  const badGateway: string[] = [];
  let killedAt = Infinity;
  try {
    const ann = await newPage();
    const bob = await newPage();
    for (const p of [ann.page, bob.page]) {
      p.on('response', (res) => {
        if (res.status() === 502 && res.request().timing().startTime > killedAt) badGateway.push(`${res.request().method()} ${res.url()}`);
      });
    }
    await join(ann.page, url, 'ann', room);
    await join(bob.page, url, 'bob', room);
    await say(ann.page, 'before the crash');
    await waitForTexts(bob.page, ['before the crash']);

    own[1]!.child.kill('SIGKILL');
    await own[1]!.stop();
    killedAt = Date.now();
    const fromAnn = ['after the crash a1', 'after the crash a2', 'after the crash a3'];
    const fromBob = ['after the crash b1', 'after the crash b2', 'after the crash b3'];
    for (let i = 0; i < 3; i++) {
      await say(ann.page, fromAnn[i]!);
      await say(bob.page, fromBob[i]!);
    }
    const after = [...fromAnn, ...fromBob];
    await waitForTexts(ann.page, after);
    await waitForTexts(bob.page, after);
    for (const p of [ann.page, bob.page]) {
      const shown = await lines(p);
      // Exactly once each, each sender's lines in the order typed.
      expect(texts(shown).sort()).toEqual(['before the crash', ...after].sort());
      expect(texts(shown.filter((l) => l.from === 'ann'))).toEqual(['before the crash', ...fromAnn]);
      expect(texts(shown.filter((l) => l.from === 'bob'))).toEqual(fromBob);
    }
    expect(lb.up).toEqual([true, false, true]);
    expect(lb.stats.retried).toBeGreaterThan(0); // the request that found it dead went elsewhere
    const deadCount = lb.counts[1];
    for (let i = 0; i < 4; i++) await say(ann.page, `later ${i}`);
    await waitForTexts(bob.page, ['later 0', 'later 1', 'later 2', 'later 3']);
    expect(lb.counts[1]).toBe(deadCount); // no request went to it any more
    expect(lb.counts[0]! + lb.counts[2]!).toBeGreaterThan(10);
    expect(badGateway).toEqual([]);
    await waitForStatus(ann.page, 'open', undefined, 20_000);
  } finally {
    await lb.close();
    await Promise.all(own.map((i) => i.stop()));
  }
});

test('no page errors, no failed requests (favicon included)', () => {
  expect(stderr).toEqual([]);
  expect(failedResponses).toEqual([]);
});
