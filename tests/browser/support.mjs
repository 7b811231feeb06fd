// Headless Chromium (Debian's package) driven by playwright-core, against the Worker under
// `wrangler dev`. Screenshots go to test-output/screenshots/.
//
// The console is served with its Content-Security-Policy on (never bypassed here), and every
// page this module opens reports each CSP violation it sees, both as the page's
// `securitypolicyviolation` event and as Chromium's console message about it; a shared afterEach
// fails the test that caused any.
import { afterEach, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT, startKeyward } from '../support/keyward.mjs';
import { startOrigin } from '../support/origin.mjs';

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

/**
 * For a test file: a real origin, the built Worker under `wrangler dev` in front of it (with
 * `vars`) and Chromium, started before the file's tests and stopped after them. The returned
 * object's `origin`, `kw` and `browser` are set once they are up.
 */
export function consoleSession({ vars } = {}) {
  const session = {};
  before(async () => {
    session.origin = await startOrigin();
    session.kw = await startKeyward({ origin: session.origin.url, vars });
    session.browser = await launch();
  });
  after(async () => {
    await session.browser?.close();
    await session.kw?.stop();
    await session.origin?.stop();
  });
  return session;
}

/** CSP violations seen since the current test began, by every page opened through newPage. */
export const cspViolations = [];

afterEach(() => {
  const seen = cspViolations.splice(0);
  assert.deepEqual(seen, [], 'the console broke its Content-Security-Policy');
});

// Runs in every document before the page's own scripts (Playwright injects it through the
// DevTools protocol, which the page's CSP does not govern).
function watchCsp() {
  document.addEventListener('securitypolicyviolation', (e) => {
    // eslint-disable-next-line no-undef
    globalThis.__keywardCspViolation?.(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'} `
      + `at ${e.sourceFile || e.documentURI}:${e.lineNumber} (${e.sample || 'no sample'})`);
  });
}

export async function newPage(browser, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, bypassCSP: false, ...options });
  await context.grantPermissions(['clipboard-read', 'clipboard-write']).catch(() => {});
  await context.exposeFunction('__keywardCspViolation', (text) => cspViolations.push(`event: ${text}`));
  await context.addInitScript(watchCsp);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(`console: ${m.text()}`);
  });
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

/**
 * Holds back the page's requests whose URL `matches` until `release()`: `sent()` waits until one
 * is held, `delivered()` until every held one has been answered and read by the page (then one
 * more turn of the page's tasks, for what it does with the answers).
 */
export async function holdRequests(page, matches) {
  let release;
  const held = new Promise((resolve) => { release = resolve; });
  // The requests this route held, until each is answered (or fails): a matching request already
  // in flight when the route was installed (the picker's list at sign-in, say) is not one of them.
  const pending = new Set();
  let count = 0;
  await page.route(matches, async (route) => {
    count += 1;
    pending.add(route.request());
    await held;
    await route.continue();
  });
  const settled = (request) => { pending.delete(request); };
  page.on('requestfinished', settled);
  page.on('requestfailed', settled);
  const until = async (done, what) => {
    for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
    if (!done()) throw new Error(what);
  };
  return {
    release: () => release(),
    sent: () => until(() => count > 0, 'no matching request was sent'),
    delivered: async () => {
      await until(() => pending.size === 0, 'the held answers did not reach the page');
      await page.evaluate(() => new Promise((r) => setTimeout(r, 100)));
    },
  };
}

/** Sets the key list's page size to `n`, an option the console does not offer (to page small lists). */
export async function setPerPage(page, n) {
  await page.evaluate((size) => {
    const select = document.querySelector('#per-page');
    select.append(new Option(String(size), String(size)));
    select.value = String(size);
    select.dispatchEvent(new Event('change'));
  }, n);
}
