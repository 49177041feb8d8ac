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
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { bundleEntry } from '../../samples/chat/bundle';
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
  return { context, page, served: recordInstances(page) };
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

test('no page errors', () => {
  expect(stderr).toEqual([]);
});
