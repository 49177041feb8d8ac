/**
 * Helpers for the browser tests: the system Chromium (never a downloaded
 * one) driven by playwright-core, and the chat page's DOM contract
 * (samples/chat/public/app.js).
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`The browser tests need Chromium at ${CHROMIUM} (Debian/Ubuntu: apt-get install -y chromium; or set CHROMIUM_PATH).`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Which instance (x-chat-instance) answered each of this page's session requests. */
export function recordInstances(page: Page): string[] {
  const seen: string[] = [];
  page.on('response', (res) => {
    if (!new URL(res.url()).pathname.startsWith('/session')) return;
    const instance = res.headers()['x-chat-instance'];
    if (instance) seen.push(instance);
  });
  return seen;
}

/** `query`: the page's own options, e.g. `?transport=websocket` (samples/chat/public/app.js). */
export async function join(page: Page, base: string, nick: string, room: string, query = ''): Promise<void> {
  await page.goto(`${base}/${query}#${room}`);
  await page.fill('#nick', nick);
  await page.fill('#room', room);
  await page.click('#join button[type="submit"]');
  await page.waitForSelector('#status[data-state="open"]');
  await page.waitForSelector('#chat:not([hidden])');
  // Announced (the `hello` was handled): our own "you joined" notice is in.
  await page.waitForFunction(() => [...document.querySelectorAll('#messages li.notice .text')].some((e) => e.textContent === 'you joined'));
}

export async function say(page: Page, text: string): Promise<void> {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

export interface Line {
  from: string;
  text: string;
  state?: string;
  pending: boolean;
  history: boolean;
}

/** Every chat line on the page, top to bottom. */
export function lines(page: Page): Promise<Line[]> {
  return page.$$eval('#messages li.said', (els) =>
    els.map((e) => ({
      from: e.querySelector('.from')!.textContent!,
      text: e.querySelector('.text')!.textContent!,
      state: (e as HTMLElement).dataset.state,
      pending: e.classList.contains('pending'),
      history: e.classList.contains('history'),
    })),
  );
}

export function status(page: Page): Promise<{ state?: string; text: string }> {
  return page.$eval('#status', (e) => ({ state: (e as HTMLElement).dataset.state, text: e.textContent ?? '' }));
}

export async function waitForStatus(page: Page, state: string, textPattern?: RegExp, timeout = 30_000): Promise<void> {
  await page.waitForFunction(
    ([s, source]) => {
      const el = document.getElementById('status')!;
      return el.dataset.state === s && (source === null || new RegExp(source).test(el.textContent ?? ''));
    },
    [state, textPattern ? textPattern.source : null] as const,
    { timeout },
  );
}

/** Waits until the page shows `count` lines with these texts (and none of ours still pending). */
export async function waitForTexts(page: Page, texts: string[], timeout = 30_000): Promise<void> {
  await page.waitForFunction(
    (want) => {
      const shown = new Set([...document.querySelectorAll('#messages li.said:not(.pending) .text')].map((e) => e.textContent));
      return want.every((t) => shown.has(t));
    },
    texts,
    { timeout },
  );
}
