// Benchmark, not a test: how long the Block Images list takes to show a page when the pool holds 10,000 images, in
// Chromium against a real `basalt serve` (web/scripts/bench-list.sh builds both and runs this file). Each step is
// timed inside the page, from the user's action (next page, page size, search) until a frame shows the expected
// range and first row; the page load until its list response arrived. The list request's own time (server and
// transfer, from the browser's resource timing) is beside each figure. It prints medians and asserts no time.

import type { Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { launchBrowser, startServer, type Browser, type Server } from './harness';
import { gotoImages, login } from './ui';

const IMAGES = Number(process.env.BENCH_IMAGES ?? 10_000);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);

let server: Server;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  server = await startServer();
  browser = await launchBrowser();
  page = await browser.context.newPage();
  browser.context.setDefaultTimeout(60_000);
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

const name = (i: number) => `img-${String(i).padStart(5, '0')}`;

/** Creates the images through the API, a few requests at a time, sizes varied so sorting by size means something. */
async function populate(): Promise<number> {
  const started = performance.now();
  const workers = 8;
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let i = w; i < IMAGES; i += workers) {
        const size = (1 + (i % 64)) << 20;
        const created = await server.api('POST', '/api/block/image', { name: name(i), pool_name: 'rbd', size });
        if (created.status !== 201) throw new Error(`create ${name(i)}: ${JSON.stringify(created.body)}`);
      }
    }),
  );
  return performance.now() - started;
}

/** Milliseconds of the last finished request to the image list, from the browser's resource timing. */
async function lastListRequest(p: Page): Promise<number> {
  return p.evaluate(() => {
    const entries = performance
      .getEntriesByType('resource')
      .filter((e) => e.name.includes('/api/block/image?')) as PerformanceResourceTiming[];
    const last = entries[entries.length - 1];
    return last ? last.responseEnd - last.startTime : Number.NaN;
  });
}

/** What a step waits for: the pager's range text, and the name in the first row (both exactly). */
interface Shown {
  range: string;
  first: string;
}

/**
 * Times one step inside the page, so the figure is the browser's own: from the action (a click on the button
 * named `button`, or typing `search`) until, checked on every animation frame, the pager and the first row show
 * `shown`.
 */
async function step(p: Page, action: { button?: string; select?: string; search?: string }, shown: Shown) {
  const ms = await p.evaluate(
    ({ action, shown }) =>
      new Promise<number>((resolve, reject) => {
        performance.clearResourceTimings();
        const t0 = performance.now();
        if (action.button !== undefined) {
          const button = [...document.querySelectorAll('button')].find(
            (b) => b.textContent?.trim() === action.button || b.getAttribute('aria-label') === action.button,
          );
          if (!button) return reject(new Error(`no button ${action.button}`));
          button.click();
        } else if (action.select !== undefined) {
          const select = document.querySelector<HTMLSelectElement>('nav.pager select');
          if (!select) return reject(new Error('no page size'));
          select.value = action.select;
          select.dispatchEvent(new Event('change', { bubbles: true }));
        } else if (action.search !== undefined) {
          const input = document.querySelector<HTMLInputElement>('input[type="search"], input[aria-label="Search"]');
          if (!input) return reject(new Error('no search field'));
          input.value = action.search;
          input.dispatchEvent(new Event('input', { bubbles: true }));
        }
        const deadline = t0 + 30_000;
        const check = () => {
          const range = document.querySelector('nav.pager [role="status"]')?.textContent;
          const first = document.querySelector('.images-table tbody tr:not(.detail-row) th')?.textContent;
          if (range === shown.range && first === shown.first) resolve(performance.now() - t0);
          else if (performance.now() > deadline) reject(new Error(`not shown: ${range} / ${first}`));
          else requestAnimationFrame(check);
        };
        check();
      }),
    { action, shown },
  );
  return { ms, request: await lastListRequest(p) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

/** Runs `once` REPEATS times and keeps the medians. */
async function measure(what: string, once: (attempt: number) => Promise<{ ms: number; request: number }>) {
  const runs = [];
  for (let attempt = 0; attempt < REPEATS; attempt += 1) runs.push(await once(attempt));
  return { what, total: median(runs.map((r) => r.ms)), request: median(runs.map((r) => r.request)) };
}

it(`shows a page of the list with ${IMAGES} images`, async () => {
  const populateMs = await populate();
  await page.setViewportSize({ width: 1440, height: 900 });
  await login(page, server.url, 'admin', 'e2e-admin-password');
  await gotoImages(page);
  const range = (text: RegExp) => page.getByRole('navigation', { name: 'Pages of images' }).getByText(text);
  const total = IMAGES.toLocaleString('en-US');
  await range(new RegExp(`^1–25 of ${total} images$`)).waitFor();

  // From navigation start, check every frame for the first page of the list, and note when it shows.
  await page.addInitScript(
    ({ range, first }) => {
      const check = () => {
        const shown = document.querySelector('nav.pager [role="status"]')?.textContent === range;
        const row = document.querySelector('.images-table tbody tr:not(.detail-row) th')?.textContent === first;
        if (shown && row) (window as unknown as { shownAt?: number }).shownAt = performance.now();
        else requestAnimationFrame(check);
      };
      requestAnimationFrame(check);
    },
    { range: `1–25 of ${total} images`, first: name(0) },
  );
  const fmt = (n: number) => n.toLocaleString('en-US');
  const pageOf = (first: number, size: number) => `${fmt(first + 1)}–${fmt(first + size)} of ${total} images`;
  const results = [];
  results.push(
    await measure('open the page (from navigation start)', async () => {
      await page.reload();
      await range(new RegExp(`^1–25 of ${total} images$`)).waitFor();
      // Set by the init script below: the first frame that showed the first page.
      const ms = await page.evaluate(() => (window as unknown as { shownAt?: number }).shownAt ?? Number.NaN);
      return { ms, request: await lastListRequest(page) };
    }),
  );
  results.push(
    await measure('next page', async (n) => {
      return step(page, { button: 'Next page' }, { range: pageOf((n + 1) * 25, 25), first: name((n + 1) * 25) });
    }),
  );
  await page.getByRole('button', { name: 'Page 1', exact: true }).click();
  await range(new RegExp(`^1–25 of ${total} images$`)).waitFor();
  results.push(
    await measure('100 rows, then 25 again', async (n) => {
      const size = n % 2 === 0 ? 100 : 25;
      return step(page, { select: String(size) }, { range: pageOf(0, size), first: name(0) });
    }),
  );
  await page.getByLabel('Rows per page').selectOption('25');
  await range(new RegExp(`^1–25 of ${total} images$`)).waitFor();
  results.push(
    await measure('search one name (300 ms typing pause)', async (n) => {
      const wanted = name(IMAGES - 1 - n);
      return step(page, { search: wanted }, { range: '1 image', first: wanted });
    }),
  );
  expect(results.every((r) => Number.isFinite(r.total))).toBe(true);
  console.log(
    `\nimages list with ${IMAGES} images (${populateMs.toFixed(0)} ms to create them), median of ${REPEATS}:`,
  );
  console.log('  step                                   on screen   list request');
  for (const r of results)
    console.log(`  ${r.what.padEnd(38)} ${r.total.toFixed(0).padStart(6)} ms ${r.request.toFixed(0).padStart(9)} ms`);
}, 1_800_000);
