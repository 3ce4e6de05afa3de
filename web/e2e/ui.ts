// Small page helpers for the end-to-end tests: log in, find an image row, use row menus and confirmations.

import type { Locator, Page } from 'playwright-core';

export async function login(page: Page, url: string, username: string, password: string): Promise<void> {
  await page.goto(`${url}/`);
  await page.getByLabel('Username', { exact: true }).fill(username);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Block Images', level: 1 }).waitFor();
}

/** The table row whose row header is exactly `name` (not the expanded-detail row that contains a nested table). */
export function row(page: Page | Locator, name: string): Locator {
  return page.locator('tr:not(.detail-row)', { has: page.getByRole('rowheader', { name, exact: true }) });
}

/** Opens the "..." menu of `subject` and returns the menu. */
export async function openMenu(page: Page, subject: string): Promise<Locator> {
  await page.getByRole('button', { name: `Actions for ${subject}`, exact: true }).click();
  const menu = page.getByRole('menu', { name: `Actions for ${subject}` });
  await menu.waitFor();
  return menu;
}

export function item(menu: Locator, label: string): Locator {
  return menu.getByRole('menuitem', { name: new RegExp(`^${label}`) });
}

/** Closes the open menu with Escape. */
export async function closeMenu(page: Page): Promise<void> {
  await page.keyboard.press('Escape');
  await page.getByRole('menu').waitFor({ state: 'detached' });
}

/** Runs a row action through its menu. */
export async function act(page: Page, subject: string, label: string): Promise<void> {
  await item(await openMenu(page, subject), label).click();
}

/** Ticks "Yes, I am sure." in the open confirmation and presses its button. */
export async function confirm(page: Page, button: string): Promise<Locator> {
  const dialog = page.getByRole('dialog');
  await dialog.getByLabel('Yes, I am sure.', { exact: true }).check();
  await dialog.getByRole('button', { name: button, exact: true }).click();
  return dialog;
}

export async function closeNotices(page: Page): Promise<void> {
  const buttons = page.getByRole('button', { name: 'Dismiss' });
  while ((await buttons.count()) > 0) await buttons.first().click();
}

export async function gotoTab(
  page: Page,
  tab: 'Images' | 'Namespaces' | 'Trash' | 'Overall Performance',
): Promise<void> {
  await page
    .getByRole('navigation', { name: 'Block Images tabs' })
    .getByRole('link', { name: tab, exact: true })
    .click();
}

export async function gotoImages(page: Page): Promise<void> {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Block Images' }).click();
  await gotoTab(page, 'Images');
}
