// Headless Chromium (Debian's package) driven by playwright-core, against the Worker under
// `wrangler dev`. Screenshots go to test-output/screenshots/.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../support/keyward.mjs';

export const SCREENSHOTS = path.join(ROOT, 'test-output', 'screenshots');

/** `args`: extra Chromium flags (e.g. `--host-resolver-rules` to give local servers host names). */
export async function launch({ args = [] } = {}) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', ...args],
  });
}

export async function newPage(browser, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
  await context.grantPermissions(['clipboard-read', 'clipboard-write']).catch(() => {});
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.errors = errors;
  return page;
}

export const shot = (page, name) => page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });

export async function signIn(page, kw) {
  await page.goto(`${kw.url}/_keyward/console/`);
  await page.fill('#token', kw.adminToken);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#view-keys:not([hidden])');
}
