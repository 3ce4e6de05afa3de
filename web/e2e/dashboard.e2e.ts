// End-to-end tests of the dashboard against a real `basalt serve`: the API contract, the seed's Quick User Flow
// (pool prerequisite, create, details, snapshot, protect, clone, flatten, trash restore and purge, performance
// validation with writes through NBD by qemu-io), the troubleshooting refusals, the roles, keyboard use and a narrow
// window. Each step saves a screenshot.

import type { Locator, Page } from 'playwright-core';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EP } from '../src/api/endpoints';
import {
  ADMIN_PASSWORD,
  cleanResults,
  launchBrowser,
  qemuIo,
  shot,
  startServer,
  type Browser,
  type Server,
} from './harness';
import { act, closeMenu, closeNotices, confirm, gotoImages, gotoTab, item, login, openMenu, row } from './ui';

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

let server: Server;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  cleanResults();
  server = await startServer();
  browser = await launchBrowser();
  page = await browser.context.newPage();
  browser.context.setDefaultTimeout(10_000);
});

afterEach(async (context) => {
  if (context.task.result?.state === 'fail')
    await shot(page, `FAILED-${context.task.name.replace(/\W+/g, '-').slice(0, 40)}`);
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

async function expand(name: string, spec: string): Promise<void> {
  const chevron = page.getByRole('button', { name: `Details of ${spec}`, exact: true });
  if ((await chevron.getAttribute('aria-expanded')) !== 'true') await chevron.click();
  await page.getByRole('tablist', { name: `Image ${spec}` }).waitFor();
  expect(await row(page, name).count()).toBeGreaterThan(0);
}

async function detailTab(spec: string, tab: string): Promise<void> {
  await page
    .getByRole('tablist', { name: `Image ${spec}` })
    .getByRole('tab', { name: tab })
    .click();
}

describe('the API contract', () => {
  it('every endpoint the client calls exists in /api/openapi.json with the same permission', async () => {
    const doc = (await server.api('GET', '/api/openapi.json')).body as {
      paths: Record<
        string,
        Record<string, { security: unknown[]; 'x-permission'?: { scope: string; permission: string } }>
      >;
    };
    const problems: string[] = [];
    for (const [name, ep] of Object.entries(EP)) {
      const op = doc.paths[ep.path]?.[ep.method.toLowerCase()];
      if (!op) {
        problems.push(`${name}: ${ep.method} ${ep.path} is not in the OpenAPI document`);
        continue;
      }
      const needText = (need: { scope: string; permission: string } | 'user' | null) =>
        need === null ? 'public' : need === 'user' ? 'any user' : `${need.permission} on ${need.scope}`;
      const documented = op['x-permission'] ?? (op.security.length === 0 ? null : 'user');
      if (needText(documented) !== needText(ep.need)) {
        problems.push(`${name}: the client expects ${needText(ep.need)}, the server documents ${needText(documented)}`);
      }
    }
    expect(problems).toEqual([]);
  });
});

describe('login', () => {
  it('refuses a wrong password with the server message, then logs in', async () => {
    await page.goto(`${server.url}/`);
    await page.getByLabel('Username', { exact: true }).fill('admin');
    await page.getByLabel('Password', { exact: true }).fill('wrong-password');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').waitFor();
    await shot(page, 'login-refused');
    await login(page, server.url, 'admin', ADMIN_PASSWORD);
    await page.getByRole('button', { name: '+ Create Image' }).waitFor();
    await shot(page, 'images-empty');
  });
});

describe('Quick User Flow', () => {
  it('1. prerequisite: without a healthy rbd pool the page says so and links to Pools', async () => {
    await page.getByRole('link', { name: 'Pools' }).click();
    await page.getByRole('heading', { name: 'Pools' }).waitFor();
    await act(page, 'pool rbd', 'Remove rbd tag');
    await confirm(page, 'Remove rbd tag');
    await row(page, 'rbd')
      .locator('span.muted', { hasText: /^none$/ })
      .waitFor();
    await gotoImages(page);
    await page.getByRole('heading', { name: 'No healthy rbd pool' }).waitFor();
    expect(await page.getByRole('button', { name: '+ Create Image' }).isDisabled()).toBe(true);
    await page.getByText('Disabled: no healthy pool is tagged rbd').waitFor();
    await shot(page, 'prerequisite-no-rbd-pool');

    await page.getByRole('link', { name: 'Storage › Pools' }).click();
    await page.getByRole('button', { name: '+ Create Pool' }).click();
    await page.getByRole('dialog').getByRole('textbox', { name: 'Name', exact: true }).fill('scratch');
    await page.getByLabel('Tag with the rbd application (for block images)', { exact: true }).uncheck();
    await page.getByRole('dialog').getByRole('button', { name: 'Create Pool' }).click();
    await row(page, 'scratch').waitFor();
    await act(page, 'pool rbd', 'Tag with rbd');
    await row(page, 'rbd').getByText('rbd', { exact: true }).first().waitFor();
    await row(page, 'rbd').locator('.tag', { hasText: 'rbd' }).waitFor();
    await shot(page, 'pools-tagged');
    await act(page, 'pool scratch', 'Delete');
    await confirm(page, 'Delete pool');
    await row(page, 'scratch').waitFor({ state: 'detached' });

    await gotoImages(page);
    await page.getByRole('button', { name: '+ Create Image' }).waitFor();
    expect(await page.getByRole('button', { name: '+ Create Image' }).isEnabled()).toBe(true);
    expect(await page.getByRole('heading', { name: 'No healthy rbd pool' }).count()).toBe(0);
  });

  it('2. create image: required fields, feature rules, then the new row', async () => {
    await page.getByRole('button', { name: '+ Create Image' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create RBD Image' });
    await dialog.getByText('If required fields (Name * or Pool *) are empty, image creation fails.').waitFor();
    await dialog.getByRole('button', { name: 'Create Image' }).click();
    await dialog.getByText('Name * is required.').waitFor();
    await dialog.getByText('Size is required.').waitFor();
    await dialog.getByRole('textbox', { name: 'Name', exact: true }).fill('bad/name');
    await dialog.getByText("'/' and '@' are not allowed.").waitFor();
    await shot(page, 'create-validation');

    // Feature dependencies: exclusive-lock carries object-map, which carries fast-diff.
    const feature = (name: string) => dialog.getByRole('checkbox', { name, exact: true });
    await feature('exclusive-lock').uncheck();
    expect(await feature('object-map').isChecked()).toBe(false);
    expect(await feature('fast-diff').isChecked()).toBe(false);
    expect(await feature('object-map').isDisabled()).toBe(true);
    await feature('exclusive-lock').check();
    await feature('object-map').check();
    expect(await feature('fast-diff').isChecked()).toBe(true);
    await feature('fast-diff').uncheck();
    expect(await feature('object-map').isChecked()).toBe(false);
    await feature('object-map').check();

    await dialog.getByRole('textbox', { name: 'Name', exact: true }).fill('vm1');
    await dialog.getByRole('textbox', { name: 'Size' }).fill('10');
    expect(await dialog.getByRole('combobox', { name: 'Pool', exact: true }).inputValue()).toBe('rbd');
    await shot(page, 'create-filled');
    await dialog.getByRole('button', { name: 'Create Image' }).click();
    await dialog.waitFor({ state: 'detached' });
    const vm1 = row(page, 'vm1');
    await vm1.waitFor();
    expect(await vm1.textContent()).toContain('10 GiB');
    expect(await vm1.textContent()).toContain('rbd');
    await shot(page, 'image-created');
  });

  it('2b. connect: after Create Image, in Details and on snapshot rows, with copy buttons and the warning', async () => {
    // Right after the create, the seed's next step: how to attach the new image.
    const created = page.getByRole('region', { name: 'Connect rbd/vm1' });
    await created.getByText('Attach an image read-write to one workload at a time').waitFor();
    const drive = await created.getByRole('figure', { name: 'QEMU -drive', exact: true }).locator('pre').textContent();
    expect(drive).toMatch(/^-drive file=nbd:\/\/127\.0\.0\.1:\d+\/rbd\/vm1,format=raw,if=virtio/);
    expect(
      await created.getByRole('figure', { name: 'basalt device map', exact: true }).locator('pre').textContent(),
    ).toMatch(/^basalt device map --nbd-address 127\.0\.0\.1:\d+ rbd\/vm1$/);
    expect(
      await created.getByRole('figure', { name: 'libvirt disk', exact: true }).locator('pre').textContent(),
    ).toContain("<source protocol='nbd' name='rbd/vm1'>");
    await browser.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.url });
    await created.getByRole('button', { name: 'Copy QEMU -drive' }).click();
    await created.getByText('Copied').waitFor();
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(drive);
    await shot(page, 'connect-after-create');
    await page.getByRole('button', { name: 'Hide connection details' }).click();
    await created.waitFor({ state: 'detached' });

    // The same panel in the image's Details tab, read-write.
    await expand('vm1', 'rbd/vm1');
    const details = page.locator('.expanded').getByRole('region', { name: 'Connect rbd/vm1' });
    await details.getByText('Attaches read-write').waitFor();
    // The attach lines are behind a disclosure there, closed at first, so the expanded row stays short.
    const examples = details.locator('details.connect-examples');
    expect(await examples.getAttribute('open')).toBeNull();
    const height = await page.locator('.detail-row').evaluate((r) => r.getBoundingClientRect().height);
    expect(height).toBeLessThan(600);
    expect(await details.getByRole('figure', { name: 'nbd-client', exact: true }).count()).toBe(0);
    await examples.locator('summary').click();
    expect(
      await details.getByRole('figure', { name: 'nbd-client', exact: true }).locator('pre').textContent(),
    ).toContain('-name rbd/vm1');
    await shot(page, 'connect-details');
  });

  it('3. details: the expanded row shows identity, features and parent state', async () => {
    await expand('vm1', 'rbd/vm1');
    await page.getByText('None: standalone image').waitFor();
    const details = await page.locator('.details').textContent();
    expect(details).toContain('deep-flatten, exclusive-lock, fast-diff, layering, object-map');
    expect(details).toContain('10 GiB');
    await shot(page, 'details');
  });

  it('4. create snapshot from the row menu; it appears in the Snapshots tab', async () => {
    await act(page, 'rbd/vm1', 'Create Snapshot');
    const dialog = page.getByRole('dialog', { name: 'Create Snapshot' });
    await dialog.getByRole('textbox', { name: 'Name', exact: true }).fill('snap1');
    await dialog.getByRole('button', { name: 'Create Snapshot' }).click();
    await dialog.waitFor({ state: 'detached' });
    await detailTab('rbd/vm1', 'Snapshots');
    const snap = row(page, 'snap1');
    await snap.getByText('UNPROTECTED').waitFor();
    expect(await row(page, 'vm1').locator('td').nth(5).textContent()).toBe('1');
    const menu = await openMenu(page, 'snapshot snap1');
    expect(await item(menu, 'Clone').isDisabled()).toBe(true);
    expect(await item(menu, 'Clone').textContent()).toContain('Protect snapshot first, then run clone.');
    await shot(page, 'snapshot-clone-needs-protection');
    await closeMenu(page);

    // A snapshot row connects read-only.
    await row(page, 'snap1').getByRole('button', { name: 'Connect snapshot snap1 (read-only)' }).click();
    const connect = page.getByRole('dialog', { name: 'Connect rbd/vm1@snap1' });
    await connect.getByText('A snapshot attaches read-only.').waitFor();
    expect(
      await connect.getByRole('figure', { name: 'QEMU -drive', exact: true }).locator('pre').textContent(),
    ).toMatch(/readonly=on$/);
    expect(
      await connect.getByRole('figure', { name: 'basalt device map', exact: true }).locator('pre').textContent(),
    ).toContain('--read-only rbd/vm1@snap1');
    await shot(page, 'connect-snapshot');
    await connect.getByRole('button', { name: 'Done', exact: true }).click();
    await connect.waitFor({ state: 'detached' });
  });

  it('5. protect and clone: the clone appears with its parent', async () => {
    await act(page, 'snapshot snap1', 'Protect');
    await row(page, 'snap1').getByText('PROTECTED', { exact: true }).waitFor();
    await act(page, 'snapshot snap1', 'Clone');
    const dialog = page.getByRole('dialog', { name: 'Clone snapshot' });
    expect(await dialog.getByRole('textbox', { name: 'Name', exact: true }).inputValue()).toBe('vm1-clone');
    await dialog.getByRole('button', { name: 'Clone' }).click();
    await dialog.waitFor({ state: 'detached' });
    const clone = row(page, 'vm1-clone');
    await clone.getByText('rbd/vm1@snap1').waitFor();
    await shot(page, 'clone-created');
  });

  it('troubleshooting: refusals are explained, by disabled actions or by the server', async () => {
    // Cannot delete image: clones depend on its snapshot.
    let menu = await openMenu(page, 'rbd/vm1');
    expect(await item(menu, 'Delete').isDisabled()).toBe(true);
    expect(await item(menu, 'Delete').textContent()).toContain('1 clone depends on its snapshots');
    await shot(page, 'refusal-delete-image');
    await closeMenu(page);
    // Cannot delete snapshot: protected with a linked clone.
    menu = await openMenu(page, 'snapshot snap1');
    expect(await item(menu, 'Delete').textContent()).toContain('1 linked clone');
    await closeMenu(page);
    // Cannot unprotect a snapshot with a linked clone: the menu says why (the server refuses it too).
    menu = await openMenu(page, 'snapshot snap1');
    expect(await item(menu, 'Unprotect').isDisabled()).toBe(true);
    expect(await item(menu, 'Unprotect').textContent()).toContain(
      'Has 1 linked clone: flatten or delete them, then unprotect.',
    );
    await shot(page, 'refusal-unprotect');
    await closeMenu(page);
    const refused = await server.api('PUT', '/api/block/image/rbd%2Fvm1/snap/snap1', { is_protected: false });
    expect(refused.status).toBe(400);
    expect(refused.body).toMatchObject({ code: '16' }); // EBUSY

    // Cannot purge a trashed image whose snapshot has clones.
    await act(page, 'rbd/vm1', 'Move to Trash');
    const trashDialog = page.getByRole('dialog', { name: 'Move an image to trash' });
    await trashDialog.getByText('it can be trashed, but not purged').waitFor();
    await trashDialog.getByRole('button', { name: 'Move to Trash' }).click();
    await row(page, 'vm1').waitFor({ state: 'detached' });
    await gotoTab(page, 'Trash');
    await act(page, 'trashed image vm1', 'Purge');
    const purge = await confirm(page, 'Purge');
    await purge.getByRole('alert').waitFor();
    expect(await purge.getByRole('alert').textContent()).toContain(
      'Flatten or delete dependent clones, then purge again.',
    );
    await shot(page, 'refusal-purge-with-clones');
    await purge.getByRole('button', { name: 'Cancel' }).click();
    await act(page, 'trashed image vm1', 'Restore');
    await page.getByRole('dialog', { name: 'Restore image' }).getByRole('button', { name: 'Restore' }).click();
    await page.getByText('The trash is empty.').waitFor();

    // Cannot delete a pool that holds images: the server's reason is shown.
    await page.getByRole('link', { name: 'Pools' }).click();
    await act(page, 'pool rbd', 'Delete');
    const poolDelete = await confirm(page, 'Delete pool');
    await poolDelete.getByRole('alert').waitFor();
    await shot(page, 'refusal-delete-pool');
    await poolDelete.getByRole('button', { name: 'Cancel' }).click();
    await gotoImages(page);
    await row(page, 'vm1').waitFor();
  });

  it('6. flatten: the clone no longer has a parent and the task is listed', async () => {
    await act(page, 'rbd/vm1-clone', 'Flatten');
    await page.getByRole('dialog').getByText('Flatten is data-intensive').waitFor();
    await confirm(page, 'Flatten');
    const clone = row(page, 'vm1-clone');
    await clone.getByText('rbd/vm1@snap1').waitFor({ state: 'detached' });
    await page.locator('.tasks-panel').getByText('rbd/flatten').waitFor();
    await shot(page, 'flattened');
    const menu = await openMenu(page, 'rbd/vm1-clone');
    expect(await item(menu, 'Flatten').textContent()).toContain('Not a clone');
    await closeMenu(page);
  });

  it('7. trash: move with an expiration date, restore under a new name, then purge', async () => {
    await act(page, 'rbd/vm1-clone', 'Move to Trash');
    const dialog = page.getByRole('dialog', { name: 'Move an image to trash' });
    const tomorrow = new Date(Date.now() + 86_400_000);
    const pad = (n: number) => String(n).padStart(2, '0');
    await dialog
      .getByLabel('Protection expires at', { exact: true })
      .fill(`${tomorrow.getFullYear()}-${pad(tomorrow.getMonth() + 1)}-${pad(tomorrow.getDate())}T12:00`);
    // The dialog says what the expiration means: it allows purging, it deletes nothing by itself.
    await dialog.getByText('The image is not deleted automatically when this time passes').waitFor();
    await shot(page, 'move-to-trash');
    await dialog.getByRole('button', { name: 'Move to Trash' }).click();
    await dialog.waitFor({ state: 'detached' });
    await gotoTab(page, 'Trash');
    const entry = row(page, 'vm1-clone');
    await entry.getByText('protected').waitFor();
    expect(await entry.textContent()).toContain(
      `${tomorrow.getFullYear()}-${pad(tomorrow.getMonth() + 1)}-${pad(tomorrow.getDate())} 12:00`,
    );
    await shot(page, 'trash-list');

    await act(page, 'trashed image vm1-clone', 'Restore');
    const restore = page.getByRole('dialog', { name: 'Restore image' });
    await restore.getByRole('textbox', { name: 'New image name', exact: true }).fill('vm1-restored');
    await restore.getByRole('button', { name: 'Restore' }).click();
    await page.getByText('The trash is empty.').waitFor();
    await gotoTab(page, 'Images');
    await row(page, 'vm1-restored').waitFor();

    await act(page, 'rbd/vm1-restored', 'Move to Trash');
    await page.getByRole('dialog').getByRole('button', { name: 'Move to Trash' }).click();
    await gotoTab(page, 'Trash');
    await act(page, 'trashed image vm1-restored', 'Purge');
    await page
      .getByRole('dialog')
      .getByText('Purge is irreversible. There is no recovery after purge completes.')
      .waitFor();
    await page.getByRole('dialog').getByText('This permanently removes image vm1-restored').waitFor();
    await shot(page, 'purge-confirm');
    await confirm(page, 'Purge');
    await page.getByText('The trash is empty.').waitFor();
    await shot(page, 'purged');

    // Purge schedules: none by default, then one added for pool rbd and removed again.
    const schedules = page.getByRole('region', { name: 'Purge schedules' });
    await schedules
      .getByText('No purge schedule: expired images stay in the trash until someone purges them.')
      .waitFor();
    await schedules.getByRole('button', { name: 'Add schedule' }).click();
    const add = page.getByRole('dialog', { name: 'Add a purge schedule' });
    await add.getByRole('textbox', { name: 'Interval', exact: true }).fill('12h');
    await add.getByRole('textbox', { name: 'Start time (UTC)', exact: true }).fill('02:00');
    await add.getByRole('button', { name: 'Add schedule' }).click();
    await add.waitFor({ state: 'detached' });
    await schedules.getByText('every 12h from 02:00 UTC').waitFor();
    await schedules.getByText('Next purge of rbd:').waitFor();
    await shot(page, 'purge-schedule');
    await schedules
      .getByRole('button', { name: 'Remove schedule every 12h from 02:00 UTC of rbd (all namespaces)' })
      .click();
    await schedules
      .getByText('No purge schedule: expired images stay in the trash until someone purges them.')
      .waitFor();
  });

  it('8. performance validation: writes through NBD show in the image and overall charts', async () => {
    // Before any I/O the image's charts say so instead of drawing made-up figures.
    await closeNotices(page);
    await gotoTab(page, 'Images');
    await expand('vm1', 'rbd/vm1');
    await detailTab('rbd/vm1', 'Performance');
    const imagePerf = page.getByRole('region', { name: 'Performance of rbd/vm1' });
    await imagePerf.getByText('No I/O in this window.').waitFor();
    expect(await imagePerf.locator('.chart-empty').count()).toBe(3);
    await shot(page, 'image-performance-idle');

    // A real NBD client writes 4 MiB through the server's unix socket in its data directory.
    const written = await qemuIo(server, 'rbd/vm1', 'write -P 0xab 0 4M');
    expect(written).toContain('wrote 4194304/4194304 bytes');

    // The sampler runs once a second and the tab reloads every 3 s: wait for the write to reach the charts.
    const figure = (scope: Locator, title: string) =>
      scope.locator('figure', { has: page.locator('figcaption', { hasText: title }) });
    const nonzero = /Write (idle now|latest [\d.,]+ \S+) · peak [1-9]/;
    const throughput = figure(imagePerf, 'Throughput');
    await throughput.locator('.chart-legend').filter({ hasText: nonzero }).waitFor({ timeout: 20_000 });
    expect(await throughput.locator('.chart-legend').textContent()).toMatch(/Write latest [\d.]+ \S+ · peak 4 MiB\/s/);
    expect(await figure(imagePerf, 'IOPS').locator('.chart-legend').textContent()).toMatch(nonzero);
    expect(await figure(imagePerf, 'Read / Write Latency').locator('.chart-legend').textContent()).toMatch(nonzero);
    expect(await imagePerf.getByText('No I/O in this window.').count()).toBe(0);
    // The text alternatives carry the same figures.
    expect(await throughput.getByRole('img').getAttribute('aria-label')).toMatch(
      /^Throughput over the last 5 minutes: Read: none; Write: peak 4 MiB\/s at /,
    );
    expect(await throughput.locator('table tbody tr').nth(1).textContent()).toContain('4 MiB/s');
    // uPlot draws the charts; the page's charts share one cursor: hovering one shows the time in every chart.
    expect(await throughput.locator('canvas').count()).toBe(1);
    const box = await throughput.locator('.u-over').boundingBox();
    if (!box) throw new Error('the throughput chart has no plot area');
    await page.mouse.move(box.x + box.width - 4, box.y + box.height / 2);
    await figure(imagePerf, 'IOPS').locator('.chart-at').waitFor();
    expect(await figure(imagePerf, 'IOPS').locator('.chart-at').textContent()).toMatch(
      /^\w+ \d+ \w+ \d\d:\d\d:\d\d(, \d+ s average)?$/,
    );
    expect(await throughput.locator('.chart-zone').textContent()).toMatch(/UTC[+-]\d\d:\d\d/);
    // The pointer stays on the chart while the tab reloads its data (every 3 s) and new I/O arrives: the page
    // keeps answering (a chart that re-rendered on each cursor update used to lock the tab here).
    await qemuIo(server, 'rbd/vm1', 'write -P 0xac 0 1M');
    await page.mouse.move(box.x + box.width - 12, box.y + box.height / 2);
    await new Promise((r) => setTimeout(r, 4_000));
    const answered = await Promise.race([
      page.evaluate(() => new Promise<boolean>((r) => requestAnimationFrame(() => r(true)))),
      new Promise<boolean>((r) => setTimeout(() => r(false), 5_000)),
    ]);
    expect(answered, 'the page answers with the pointer on a live chart').toBe(true);
    await shot(page, 'image-performance-hover');
    await page.mouse.move(0, 0);
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
    await shot(page, 'image-performance');

    // The range selector: a longer window still holds the write.
    await imagePerf.getByRole('radio', { name: '15 min', exact: true }).check();
    await throughput
      .getByRole('img', { name: /^Throughput over the last 15 minutes: .*Write: peak 4 MiB\/s/ })
      .waitFor();
    await imagePerf.getByRole('radio', { name: '5 min', exact: true }).check();

    // Overall: the system-wide panels and the top images show the same write.
    await gotoTab(page, 'Overall Performance');
    await page.getByText('Use overall charts first, then drill into per-image performance').waitFor();
    const overall = page.getByRole('region', { name: 'Overall Performance' });
    for (const title of ['IOPS', 'Throughput']) {
      await figure(overall, title).locator('.chart-legend').filter({ hasText: nonzero }).waitFor({ timeout: 20_000 });
    }
    const top = (caption: string) =>
      overall
        .locator('table', { has: page.locator('caption', { hasText: caption }) })
        .getByRole('row', { name: /^Performance of rbd\/vm1 / });
    await top('Highest IOPS').waitFor();
    expect(await top('Highest IOPS').textContent()).toMatch(/[1-9][\d.]* IOPS/);
    expect(await top('Highest Throughput').textContent()).toMatch(/[1-9][\d.]* (KiB|MiB)\/s/);
    expect(await top('Highest Latency').textContent()).toMatch(/[1-9][\d.]* ms/);
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
    await shot(page, 'overall-performance');

    // A narrow window: charts and tables stack and nothing widens the page.
    await page.setViewportSize({ width: 400, height: 860 });
    await figure(overall, 'IOPS').waitFor();
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
    await shot(page, 'narrow-overall-performance');
    await page.setViewportSize({ width: 1280, height: 800 });

    // Drill down from the top table into the image's own charts.
    await overall.getByRole('button', { name: 'Performance of rbd/vm1', exact: true }).first().click();
    await page
      .getByRole('tablist', { name: 'Image rbd/vm1' })
      .getByRole('tab', { name: 'Performance', selected: true })
      .waitFor();
    await figure(page.getByRole('region', { name: 'Performance of rbd/vm1' }), 'Throughput')
      .locator('.chart-legend')
      .filter({ hasText: nonzero })
      .waitFor();
    await page.setViewportSize({ width: 400, height: 860 });
    await figure(page.getByRole('region', { name: 'Performance of rbd/vm1' }), 'IOPS').waitFor();
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
    await shot(page, 'narrow-image-performance');
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.getByLabel('Search', { exact: true }).fill('');
  });
});

describe('image management', () => {
  it('configuration: QoS override with its source, then reset', async () => {
    await detailTab('rbd/vm1', 'Configuration');
    const form = page.getByRole('form', { name: 'Quality of Service' });
    await form.getByRole('textbox', { name: 'IOPS limit', exact: true }).fill('500');
    await form.getByRole('button', { name: 'Save Quality of Service' }).click();
    const option = row(page, 'rbd_qos_iops_limit');
    await option.getByText('image', { exact: true }).waitFor();
    expect(await option.textContent()).toContain('500');
    await shot(page, 'configuration-override');
    // Each rate field's unit selector stays inside its field (they overflowed into the next field).
    expect(await form.locator('.qos-field select').count()).toBeGreaterThan(0);
    const overflowing = await form.evaluate(
      (f) =>
        [...f.querySelectorAll('.qos-field')].filter((field) => {
          const unit = field.querySelector('select');
          return unit !== null && unit.getBoundingClientRect().right > field.getBoundingClientRect().right + 0.5;
        }).length,
    );
    expect(overflowing).toBe(0);
    await form.getByRole('button', { name: 'Reset IOPS limit' }).click();
    await option.getByText('global', { exact: true }).waitFor();
  });

  it('edit resizes, copy makes an independent image, search/sort/paging run on the server', async () => {
    await act(page, 'rbd/vm1', 'Edit');
    const dialog = page.getByRole('dialog', { name: 'Edit RBD Image' });
    expect(await dialog.getByRole('checkbox', { name: 'layering', exact: true }).isDisabled()).toBe(true);
    await dialog.getByRole('textbox', { name: 'Size' }).fill('20');
    await dialog.getByRole('button', { name: 'Save' }).click();
    await dialog.waitFor({ state: 'detached' });
    await row(page, 'vm1').getByText('20 GiB').first().waitFor();

    await act(page, 'rbd/vm1', 'Copy');
    const copy = page.getByRole('dialog', { name: 'Copy RBD Image' });
    await copy.getByRole('button', { name: 'Copy' }).click();
    await copy.waitFor({ state: 'detached' });
    await row(page, 'vm1-copy').waitFor();

    for (let i = 0; i < 10; i += 1) {
      const created = await server.api('POST', '/api/block/image', {
        name: `bulk-${String(i).padStart(2, '0')}`,
        pool_name: 'rbd',
        size: 1 << 30,
      });
      expect(created.status).toBe(201);
    }
    await page.getByRole('button', { name: 'Refresh the image list' }).click();
    await page.getByText('1–12 of 12 images').waitFor();
    await page.getByLabel('Rows per page').selectOption('10');
    await page.getByText('1–10 of 12 images').waitFor();
    // Numbered pages; going to another page scrolls back to the top of the list.
    await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
    await page.getByRole('button', { name: 'Page 2', exact: true }).click();
    await page.getByText('11–12 of 12 images').waitFor();
    expect(await page.getByRole('button', { name: 'Page 2', exact: true }).getAttribute('aria-current')).toBe('page');
    await page.waitForFunction(() => {
      const tab = document.querySelector('.tab-content');
      return tab !== null && tab.getBoundingClientRect().top >= -1;
    });
    await page.getByLabel('Search', { exact: true }).fill('copy');
    await page.getByText('1 image', { exact: true }).waitFor();
    await page.getByLabel('Search', { exact: true }).fill('');
    await page.getByRole('button', { name: 'Name', exact: true }).click();
    await page.getByText('1–10 of 12 images').waitFor();
    await page.locator('th[aria-sort="descending"]').waitFor();
    expect(await page.locator('tbody th').first().textContent()).toBe('vm1-copy');
    await shot(page, 'sorted-descending');
    await page.getByLabel('Rows per page').selectOption('25');
    await page.getByText('1–12 of 12 images').waitFor();
  });

  it('namespaces: create, list with image counts, delete refused while images remain', async () => {
    await gotoTab(page, 'Namespaces');
    await page.getByRole('button', { name: '+ Create Namespace' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create Namespace' });
    await dialog.getByRole('textbox', { name: 'Name', exact: true }).fill('tenant-a');
    await dialog.getByRole('button', { name: 'Create Namespace' }).click();
    await row(page, 'tenant-a').waitFor();
    const created = await server.api('POST', '/api/block/image', {
      name: 'app1',
      pool_name: 'rbd',
      namespace: 'tenant-a',
      size: 1 << 30,
    });
    expect(created.status).toBe(201);
    await gotoTab(page, 'Images');
    await gotoTab(page, 'Namespaces');
    expect(await row(page, 'tenant-a').locator('td').nth(1).textContent()).toBe('1');
    const menu = await openMenu(page, 'namespace rbd/tenant-a');
    expect(await item(menu, 'Delete').isDisabled()).toBe(true);
    expect(await item(menu, 'Delete').textContent()).toContain('1 image remains: delete or move it first.');
    await shot(page, 'namespace-delete-refused');
    await closeMenu(page);
  });
});

describe('roles', () => {
  it('read-only sees everything and can change nothing', async () => {
    const viewer = await browser.context.newPage();
    await login(viewer, server.url, 'viewer', 'viewer-password');
    await viewer.getByLabel('Search', { exact: true }).fill('vm1');
    await row(viewer, 'vm1').waitFor();
    expect(await viewer.getByRole('button', { name: '+ Create Image' }).count()).toBe(0);
    await viewer.getByText('Your role cannot create images').waitFor();
    expect(await viewer.getByRole('button', { name: /^Actions for/ }).count()).toBe(0);
    await viewer.getByRole('button', { name: 'Details of rbd/vm1', exact: true }).click();
    await viewer.getByRole('tab', { name: 'Snapshots' }).click();
    await row(viewer, 'snap1').waitFor();
    expect(await viewer.getByRole('button', { name: 'Create Snapshot' }).count()).toBe(0);
    await viewer.getByRole('tab', { name: 'Configuration' }).click();
    await viewer.getByText('Effective configuration of rbd/vm1').waitFor();
    expect(await viewer.getByRole('form', { name: 'Quality of Service' }).count()).toBe(0);
    await shot(viewer, 'read-only-images');
    await viewer
      .getByRole('navigation', { name: 'Block Images tabs' })
      .getByRole('link', { name: 'Namespaces' })
      .click();
    await row(viewer, 'tenant-a').waitFor();
    expect(await viewer.getByRole('button', { name: '+ Create Namespace' }).count()).toBe(0);
    await viewer.getByRole('link', { name: 'Pools' }).click();
    await row(viewer, 'rbd').waitFor();
    expect(await viewer.getByRole('button', { name: '+ Create Pool' }).count()).toBe(0);
    expect(await viewer.getByRole('button', { name: /^Actions for/ }).count()).toBe(0);
    await shot(viewer, 'read-only-pools');
    await viewer.close();
  });

  it('block-manager manages images but not pools; changes its password; logs out', async () => {
    const manager = await browser.context.newPage();
    await login(manager, server.url, 'blockadmin', 'blockadmin-password');
    await manager.getByRole('button', { name: '+ Create Image' }).click();
    const dialog = manager.getByRole('dialog', { name: 'Create RBD Image' });
    await dialog.getByRole('textbox', { name: 'Name', exact: true }).fill('managed');
    await dialog.getByRole('textbox', { name: 'Size' }).fill('512');
    await dialog.getByRole('combobox', { name: 'Unit' }).selectOption('MiB');
    await dialog.getByRole('button', { name: 'Create Image' }).click();
    await dialog.waitFor({ state: 'detached' });
    await manager.getByLabel('Search', { exact: true }).fill('managed');
    await row(manager, 'managed').getByText('512 MiB').first().waitFor();
    await manager.getByRole('link', { name: 'Pools' }).click();
    await row(manager, 'rbd').waitFor();
    expect(await manager.getByRole('button', { name: '+ Create Pool' }).count()).toBe(0);
    await shot(manager, 'block-manager-pools');

    await manager.getByRole('link', { name: 'Change password' }).click();
    await manager.getByLabel('Current password', { exact: true }).fill('blockadmin-password');
    await manager.getByLabel('New password', { exact: true }).fill('blockadmin-password-2');
    await manager.getByLabel('Repeat the new password', { exact: true }).fill('blockadmin-password-2');
    await manager.getByRole('button', { name: 'Change password' }).click();
    await manager.getByText('Your password was changed.').waitFor();
    await manager.getByRole('button', { name: 'Log out' }).click();
    await manager.getByRole('button', { name: 'Log in' }).waitFor();
    await login(manager, server.url, 'blockadmin', 'blockadmin-password-2');
    await manager.close();
  });
});

describe('keyboard and narrow windows', () => {
  it('opens the create panel and a row menu from the keyboard', async () => {
    await gotoImages(page);
    await page.getByRole('button', { name: '+ Create Image' }).focus();
    await page.keyboard.press('Enter');
    await page.getByRole('dialog', { name: 'Create RBD Image' }).waitFor();
    expect(await page.evaluate(() => document.activeElement?.closest('dialog') !== null)).toBe(true);
    await page.keyboard.press('Escape');
    await page.getByRole('dialog').waitFor({ state: 'detached' });
    await page.getByLabel('Search', { exact: true }).fill('vm1');
    await page.getByRole('button', { name: 'Actions for rbd/vm1', exact: true }).focus();
    await page.keyboard.press('Enter');
    await page.getByRole('menu').waitFor();
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Edit');
    await page.keyboard.press('ArrowDown');
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Copy');
    await closeMenu(page);
    expect(await page.evaluate(() => document.activeElement?.getAttribute('aria-label'))).toBe('Actions for rbd/vm1');
  });

  it('fits a narrow window: the sidebar becomes a drawer and tables scroll inside their frame', async () => {
    await page.setViewportSize({ width: 400, height: 860 });
    await gotoTab(page, 'Images');
    await page.getByLabel('Search', { exact: true }).fill('vm1');
    await row(page, 'vm1').waitFor();
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
    // The name keeps the room (the least important columns give way) and shows in full, with its pool under it.
    const names = await page.evaluate(() =>
      [...document.querySelectorAll<HTMLElement>('.images-table tbody .name-cell')].map((c) => ({
        text: c.textContent,
        width: c.clientWidth,
        cut: c.scrollWidth > c.clientWidth,
      })),
    );
    expect(names.length).toBeGreaterThan(0);
    for (const name of names) {
      expect(name.cut).toBe(false);
      expect(name.width).toBeGreaterThanOrEqual(120);
    }
    expect(names.map((n) => n.text)).toContain('vm1rbd');
    expect(await page.getByRole('columnheader', { name: 'Parent' }).count()).toBe(0);
    await shot(page, 'narrow-images');
    await page.getByRole('button', { name: 'Navigation' }).click();
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Pools' }).waitFor();
    await shot(page, 'narrow-navigation');
    await page.getByRole('button', { name: 'Navigation' }).click();
    await page.getByRole('button', { name: '+ Create Image' }).click();
    await page.getByRole('dialog', { name: 'Create RBD Image' }).waitFor();
    await shot(page, 'narrow-create');
    await page.keyboard.press('Escape');
    await page.setViewportSize({ width: 1280, height: 800 });
  });
});

describe('user management', () => {
  it('creates a user with a role, a custom role as scope × permission, disables the user, and audits it all', async () => {
    await page.setViewportSize({ width: 1440, height: 900 });
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'User Management' }).click();
    await page.getByRole('heading', { name: 'User Management', level: 1 }).waitFor();
    await row(page, 'admin').waitFor();

    // A custom role: rbd-image read and update only.
    await page.getByRole('navigation', { name: 'User Management tabs' }).getByRole('link', { name: 'Roles' }).click();
    await page.getByRole('button', { name: '+ Create Role' }).click();
    const roleDialog = page.getByRole('dialog', { name: 'Create Role' });
    // The dialog focuses its first field, so typing goes there at once.
    await page.keyboard.type('image-editor');
    await roleDialog.getByRole('checkbox', { name: 'rbd-image read' }).check();
    await roleDialog.getByRole('checkbox', { name: 'rbd-image update' }).check();
    await shot(page, 'role-create');
    await roleDialog.getByRole('button', { name: 'Create Role' }).click();
    await roleDialog.waitFor({ state: 'detached' });
    expect(await row(page, 'image-editor').textContent()).toContain('rbd-image: read, update');
    // System roles cannot change.
    await openMenu(page, 'role administrator');
    expect(await item(page.getByRole('menu'), 'Edit').isDisabled()).toBe(true);
    await closeMenu(page);

    // A user with that role; a duplicate is refused at the top of the form, in words.
    await page.getByRole('navigation', { name: 'User Management tabs' }).getByRole('link', { name: 'Users' }).click();
    const createOperator = async () => {
      await page.getByRole('button', { name: '+ Create User' }).click();
      const dialog = page.getByRole('dialog', { name: 'Create User' });
      await dialog.getByLabel('Username *').fill('operator');
      await dialog.getByLabel('Password *').fill('operator-password-12345');
      await dialog.getByRole('checkbox', { name: /^image-editor/ }).check();
      await dialog.getByRole('button', { name: 'Create User' }).click();
      return dialog;
    };
    await (await createOperator()).waitFor({ state: 'detached' });
    await row(page, 'operator').waitFor();
    const dialog = await createOperator();
    const error = dialog.getByRole('alert');
    await error.waitFor();
    expect(await page.evaluate(() => document.activeElement?.classList.contains('error-text'))).toBe(true);
    expect(await error.textContent()).toMatch(/already exists|Conflict|Invalid request/i);
    // Said once: "User 'operator' already exists", not "Already exists: user 'operator' already exists".
    expect(await error.textContent()).not.toMatch(/already exists.*already exists/i);
    expect(await error.locator('.error-details').textContent()).toMatch(/^Code /);
    await shot(page, 'user-create-duplicate');
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await dialog.waitFor({ state: 'detached' });
    expect(await row(page, 'operator').textContent()).toContain('image-editor');

    // Disable, then reset the password.
    await act(page, 'user operator', 'Disable');
    await row(page, 'operator').getByText('Disabled').waitFor();
    await act(page, 'user operator', 'Reset password');
    const reset = page.getByRole('dialog', { name: 'Reset password of operator' });
    await page.keyboard.type('another-operator-pass-678');
    await reset.getByRole('button', { name: 'Reset password' }).click();
    await reset.waitFor({ state: 'detached' });
    await shot(page, 'users');

    // The audit log names who did what, when, and the result.
    await page
      .getByRole('navigation', { name: 'User Management tabs' })
      .getByRole('link', { name: 'Audit log' })
      .click();
    await page.getByLabel('Search', { exact: true }).fill('operator');
    await page.getByRole('button', { name: 'Filter' }).click();
    const audit = page.locator('.audit-table tbody tr');
    await audit.filter({ hasText: 'PUT /api/user/operator' }).first().waitFor();
    expect(await audit.filter({ hasText: 'username=operator' }).first().textContent()).toMatch(/adminPOST \/api\/user/);
    expect(await audit.filter({ hasText: 'Failure' }).count()).toBeGreaterThan(0);
    expect(await page.locator('.audit-table').textContent()).not.toContain('operator-password-12345');
    await shot(page, 'audit-log');
    await page.setViewportSize({ width: 1280, height: 800 });
  });
});

/** Serious and critical accessibility violations axe-core finds on the page as it is now. */
async function axeViolations(p: Page): Promise<string[]> {
  // Evaluated through the DevTools protocol: the dashboard's content policy rightly refuses injected script tags.
  if (!(await p.evaluate(() => 'axe' in window))) await p.evaluate(AXE_SOURCE);
  const found = await p.evaluate(async () => {
    const axe = (
      window as unknown as {
        axe: {
          run: (
            ctx: Document,
          ) => Promise<{ violations: { id: string; impact: string; nodes: { target: string[] }[] }[] }>;
        };
      }
    ).axe;
    const result = await axe.run(document);
    return result.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map(
        (v) =>
          `${v.impact} ${v.id}: ${v.nodes
            .map((n) => n.target.join(' '))
            .slice(0, 3)
            .join(', ')}`,
      );
  });
  return found;
}

describe('status and alerts', () => {
  it('an image whose files are lost is degraded in its row, raises a critical alert, and the header links to it', async () => {
    await page.setViewportSize({ width: 1440, height: 900 });
    const layers = join(server.dataDir, 'layers');
    const before = new Set(readdirSync(layers));
    expect(
      (await server.api('POST', '/api/block/image', { name: 'lost', pool_name: 'rbd', size: 4 << 20 })).status,
    ).toBe(201);
    await qemuIo(server, 'rbd/lost', 'write -P 0x5a 0 64k');
    const files = readdirSync(layers).filter((f) => !before.has(f));
    expect(files.length).toBeGreaterThan(0);
    // The disk loses the image's files while basalt is down; the next read finds out.
    await server.restart(() => files.forEach((f) => rmSync(join(layers, f))));
    await expect(qemuIo(server, 'rbd/lost', 'read 0 4k')).rejects.toThrow();

    await page.goto(`${server.url}/`);
    if (await page.getByRole('button', { name: 'Log in' }).isVisible())
      await login(page, server.url, 'admin', ADMIN_PASSWORD);
    await gotoImages(page);
    await page.getByLabel('Search', { exact: true }).fill('lost');
    const badge = row(page, 'lost').getByTestId('image-status');
    await badge.getByText('degraded').waitFor();
    expect(await badge.getAttribute('title')).toMatch(/cannot be read/);
    // Its figures are unknown, and only removal is offered.
    expect(await row(page, 'lost').locator('td').nth(3).textContent()).toBe('?');
    expect(await badge.getAttribute('class')).toContain('badge-err');
    await shot(page, 'status-degraded');

    // The header counts the alerts, red while one is critical, and leads to the Alerts page.
    const header = page.getByRole('banner').getByRole('link', { name: /^\d+ alerts?$/ });
    await header.waitFor();
    expect(await header.getAttribute('class')).toContain('badge-err');
    await header.click();
    await page.getByRole('heading', { name: 'Alerts', level: 1 }).waitFor();
    const alert = page.locator('tr[data-alert-id="image_degraded:rbd/lost"]');
    await alert.waitFor();
    expect(await alert.locator('td').nth(0).textContent()).toBe('critical');
    expect(await alert.locator('td').nth(1).textContent()).toBe('image rbd/lost is degraded');
    expect(await alert.locator('td').nth(2).textContent()).toMatch(/layer file/);
    // Critical alerts come first.
    const severities = await page.locator('tbody tr td:first-child').allTextContents();
    expect(
      severities.indexOf('warning') === -1 || severities.lastIndexOf('critical') < severities.indexOf('warning'),
    ).toBe(true);
    expect(await axeViolations(page)).toEqual([]);
    await shot(page, 'alerts');
    await page.setViewportSize({ width: 400, height: 860 });
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
    expect(await header.isVisible()).toBe(true);
    await shot(page, 'narrow-alerts');
    await page.setViewportSize({ width: 1280, height: 800 });
  });
});

describe('screenshots at 1440×900 and 400 px', () => {
  it('shows 20+ image rows at 1440×900 and every main page', async () => {
    for (let i = 10; i < 24; i += 1) {
      const created = await server.api('POST', '/api/block/image', {
        name: `bulk-${i}`,
        pool_name: 'rbd',
        size: 1 << 30,
      });
      expect(created.status).toBe(201);
    }
    await page.setViewportSize({ width: 1440, height: 900 });
    await gotoImages(page);
    await page.getByLabel('Search', { exact: true }).fill('');

    // While the first page loads, the page says so once and the pager claims no count ("No images" reads as empty);
    // after a failed first load it says what failed and what to do, and still claims no count.
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    let answer: 'data' | 'error' = 'data';
    await page.route(/\/api\/block\/image\?/, async (route) => {
      await held;
      if (answer === 'data') await route.continue();
      else
        await route.fulfill({
          status: 500,
          contentType: 'application/json',
          body: JSON.stringify({ code: 'EIO', detail: 'simulated failure' }),
        });
    });
    const pager = page.getByRole('navigation', { name: 'Pages of images' });
    await page.reload();
    await page.getByText('Loading images…').waitFor();
    expect(await page.getByText('Loading images…').count()).toBe(1);
    expect(await pager.count()).toBe(0);
    expect(await page.getByText('No images').count()).toBe(0);
    await shot(page, 'images-loading');
    answer = 'error';
    release();
    await page.getByText('The image list could not be loaded.').waitFor();
    expect(await page.locator('.error-text').textContent()).toContain('What to do: Refresh to try again');
    expect(await pager.count()).toBe(0);
    await shot(page, 'images-load-failed');
    answer = 'data';
    await page.getByRole('button', { name: 'Refresh the image list' }).click();
    await pager.waitFor();
    await page.unroute(/\/api\/block\/image\?/);

    await page.getByRole('button', { name: 'Refresh the image list' }).click();
    await page.getByText(/^1–25 of \d+ images$/).waitFor();
    const visible = await page.evaluate(
      () =>
        [...document.querySelectorAll('.images-table tbody tr')].filter((r) => {
          const b = r.getBoundingClientRect();
          return b.top >= 0 && b.bottom <= window.innerHeight;
        }).length,
    );
    expect(visible).toBeGreaterThanOrEqual(20);
    // Every column is there, and its header and typical values fit: nothing is cut.
    const layout = await page.evaluate(() => ({
      headers: [...document.querySelectorAll('.images-table thead th')].map((h) => h.textContent),
      cut: [
        ...document.querySelectorAll<HTMLElement>(
          '.images-table thead th, .images-table tbody tr:not(.detail-row) > *',
        ),
      ]
        .filter((c) => c.scrollWidth > c.clientWidth)
        .map((c) => c.textContent),
      name: document.querySelector('.images-table tbody .name-cell')?.clientWidth ?? 0,
    }));
    expect(layout.headers).toEqual([
      'Expand',
      'Name ▲',
      'Pool',
      'Namespace',
      'Size',
      'Status',
      'Snaps',
      'Features',
      'Objects × Size',
      'Provisioned / Used',
      'Parent',
      'Actions',
    ]);
    expect(layout.cut).toEqual([]);
    expect(layout.name).toBeGreaterThanOrEqual(160);
    // Features are short codes with the full names in a tooltip.
    expect(await page.locator('.images-table .features-cell').first().getAttribute('title')).toContain('layering');
    await shot(page, 'wide-images');
    const violations: string[] = [];
    violations.push(...(await axeViolations(page)));
    for (const tab of ['Trash', 'Overall Performance', 'Namespaces'] as const) {
      await gotoTab(page, tab);
      await page.waitForLoadState('networkidle');
      await shot(page, `wide-${tab.toLowerCase().replace(' ', '-')}`);
      violations.push(...(await axeViolations(page)).map((v) => `${tab}: ${v}`));
    }
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Pools' }).click();
    await page.getByText('Storage › Pools').waitFor();
    await shot(page, 'wide-pools');
    violations.push(...(await axeViolations(page)).map((v) => `Pools: ${v}`));
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'User Management' }).click();
    await row(page, 'admin').waitFor();
    await shot(page, 'wide-users');
    violations.push(...(await axeViolations(page)).map((v) => `Users: ${v}`));
    for (const tab of ['Roles', 'Audit log']) {
      await page.getByRole('navigation', { name: 'User Management tabs' }).getByRole('link', { name: tab }).click();
      await page.waitForLoadState('networkidle');
      violations.push(...(await axeViolations(page)).map((v) => `${tab}: ${v}`));
    }
    expect(violations).toEqual([]);
    await page.setViewportSize({ width: 400, height: 860 });
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
    await shot(page, 'narrow-users');
    await page.setViewportSize({ width: 1280, height: 800 });
  });
});
