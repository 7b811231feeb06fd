// The customers' key page (docs/portal.md) in headless Chromium against the built Worker under
// `wrangler dev`: the journey from the one-time link to a created key (shown once, with a QR code
// decoded here by jsQR from the screenshot's pixels), used through the gate, expired,
// reactivated, rolled, revoked and deleted; a reused and an expired link; keyboard-only create
// and revoke. Screenshots: test-output/portal-*.png.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import jsQR from 'jsqr';
import { PNG } from 'pngjs';
import { ROOT } from '../support/keyward.mjs';
import { consoleSession, newPage } from './support.mjs';

// One second of ttl_seconds lasts 50 ms here: a 3600 s session lasts 3 min, a 60 s link 3 s.
const MS_PER_SECOND = 50;
const session = consoleSession({ vars: { USAGE_FLUSH_MS: '200', KEYWARD_TEST_PORTAL_MS_PER_SECOND: String(MS_PER_SECOND), KEYWARD_PORTAL_TITLE: 'Your API keys', KEYWARD_PORTAL_FRAME_ANCESTORS: 'https://acme.example' } });
const USERS = '/api/v2/projects/1/users';

async function ok(promise, status = 200) {
  const r = await promise;
  assert.equal(r.status, status, r.text);
  return r.body.data;
}
const admin = (...args) => session.kw.admin(...args);
// From the website the journey's key allows (every other setting of it passes here).
const gate = (key) => session.kw.request('GET', USERS, { headers: { authorization: `Bearer ${key}`, origin: 'https://shop.acme.example' } });
const shot = (page, name) => page.screenshot({ path: path.join(ROOT, 'test-output', `portal-${name}.png`), fullPage: true });

let seq = 0;
async function link(ws, body = {}) {
  const data = await ok(admin('POST', `/workspaces/${ws}/portal_sessions`, { return_url: 'https://acme.example/account', user: 'carol', ttl_seconds: 3600, ...body }), 201);
  return data.url;
}

async function workspace(ceiling = ['users:*', 'projects:read']) {
  const id = `acme-${Date.now().toString(36)}-${seq++}`;
  await ok(admin('POST', '/workspaces', { workspace: { id, name: 'Acme', permission_ceiling: ceiling } }), 201);
  return id;
}

const row = (page, name) => page.locator(`li.key[data-name="${name}"]`);

/** The QR code as the screen shows it, decoded by jsQR from the screenshot's pixels. */
async function decodeQr(page) {
  const png = PNG.sync.read(await page.locator('#created-qr').screenshot());
  const code = jsQR(new Uint8ClampedArray(png.data), png.width, png.height);
  assert.ok(code, 'jsQR found no QR code in the screenshot');
  return code.data;
}

test('the journey: link, create (shown once, QR, test), use at the gate, expire, reactivate, roll, revoke, delete', async () => {
  const ws = await workspace();
  const url = await link(ws, { title: 'Acme API keys', logo_url: '/_keyward/console/logo.svg' });
  const page = await newPage(session.browser);
  const pageResponse = page.waitForResponse((r) => new URL(r.url()).pathname === '/_keyward/portal/' && r.status() === 200);
  await page.goto(url);
  await page.waitForSelector('#view-keys:not([hidden])');
  // Framing allowed to the listed origin only (KEYWARD_PORTAL_FRAME_ANCESTORS).
  const headers = (await pageResponse).headers();
  assert.match(headers['content-security-policy'], /frame-ancestors https:\/\/acme\.example;/);
  assert.equal(headers['x-frame-options'], undefined);
  assert.equal(new URL(page.url()).search, '', 'the link is gone from the address bar');
  assert.equal(new URL(page.url()).pathname, '/_keyward/portal/');
  assert.equal(await page.title(), 'Acme API keys');
  assert.equal(await page.textContent('#brand-title'), 'Acme API keys');
  assert.equal(await page.getAttribute('#return', 'href'), 'https://acme.example/account');
  assert.ok(await page.isVisible('#brand-logo'));
  // The cookie is HttpOnly: the page's script cannot read it.
  assert.equal(await page.evaluate(() => document.cookie), '');

  // The matrix offers the ceiling only: users' actions, projects:read; nothing of rewards.
  await page.click('#new-key');
  const boxes = await page.$$eval('#matrix input', (b) => b.map((x) => x.value));
  assert.ok(boxes.includes('users:read') && boxes.includes('users:*') && boxes.includes('projects:read'), boxes.join());
  assert.ok(!boxes.includes('projects:create') && !boxes.some((b) => b.startsWith('rewards')), boxes.join());
  await page.fill('#f-name', 'production');
  await page.fill('#f-description', 'the shop backend');
  await page.check('#matrix input[value="users:read"]');
  await page.fill('#f-events-deny', 'purge');
  await page.fill('#f-ips', 'not-an-address');
  await shot(page, '01-create');
  await page.click('#create-submit');
  await page.waitForFunction(() => /ip_allowlist/.test(document.querySelector('#create-error').textContent));
  await page.fill('#f-ips', '127.0.0.0/8\n::1/128');
  await page.fill('#f-origins', 'https://shop.acme.example');
  await page.fill('#f-expires', '2099-01-01T12:00');
  await page.click('#create-submit');
  await page.waitForSelector('#created:not([hidden])');
  const key = (await page.textContent('#created-key')).trim();
  assert.match(key, /^[A-Za-z0-9_]+_[A-Za-z0-9]{38}$/);
  assert.equal(await decodeQr(page), key, 'the QR code is the key');
  await page.click('#test-key');
  await page.waitForFunction(() => !['', 'Testing…'].includes(document.querySelector('#test-result').textContent));
  // The page's own call names no website, and this key allows only its shop's: the test says so.
  assert.match(await page.textContent('#test-result'), /^Refused: ORIGIN_NOT_ALLOWED/);
  await shot(page, '02-created');
  const made = (await ok(admin('GET', `/workspaces/${ws}/api_keys`))).find((k) => k.name === 'production');
  // The expiry was typed in local time (Chromium and this process share the time zone).
  const expires = new Date('2099-01-01T12:00').getTime();
  assert.deepEqual(
    [made.description, made.permissions, made.event_denylist, made.ip_allowlist, made.origin_allowlist, Date.parse(made.expires_at)],
    ['the shop backend', ['users:read'], ['purge'], ['127.0.0.0/8', '::1/128'], ['https://shop.acme.example'], expires],
  );
  await page.click('#created-done');
  assert.equal(await page.textContent('#created-key'), '', 'the key is not kept on the page');

  // Used through the gate.
  assert.equal((await gate(key)).status, 200);
  await page.waitForSelector('#active-keys li[data-name="production"]');

  // Expire: it moves to Expired and revoked; the gate refuses it.
  await row(page, 'production').locator('button[data-action="expire"]').click();
  await page.waitForSelector('#inactive-keys li[data-name="production"] .badge.expired');
  assert.equal((await gate(key)).body.error_code, 'KEY_EXPIRED');
  await shot(page, '03-expired');
  // Reactivate.
  await row(page, 'production').locator('button[data-action="reactivate"]').click();
  await page.waitForSelector('#active-keys li[data-name="production"] .badge.active');
  assert.equal((await gate(key)).status, 200);

  // Usage (the gate's calls above, flushed every 200 ms).
  await sleep(600);
  await row(page, 'production').locator('button[data-action="usage"]').click();
  await page.waitForSelector('#usage:not([hidden]) #usage-chart svg');
  assert.match(await page.textContent('#usage-summary'), /^\d+ requests/);
  await shot(page, '04-usage');
  await page.click('#usage-close');

  // Roll with no grace: a new key shown once; the old one stops.
  await row(page, 'production').locator('button[data-action="roll"]').click();
  await page.selectOption('#roll-grace', '0');
  await page.click('#roll-yes');
  await page.waitForSelector('#created:not([hidden])');
  const rolled = (await page.textContent('#created-key')).trim();
  assert.notEqual(rolled, key);
  assert.equal(await decodeQr(page), rolled);
  await shot(page, '05-rolled');
  await page.click('#created-done');
  assert.equal((await gate(rolled)).status, 200);
  const oldStatus = (await gate(key)).body.error_code;
  assert.ok(['KEY_EXPIRED', 'KEY_REVOKED'].includes(oldStatus), oldStatus);

  // Revoke the new key, after a confirmation (Cancel first: nothing happens).
  const active = page.locator('#active-keys li.key');
  assert.equal(await active.count(), 1);
  const newName = await active.first().getAttribute('data-name');
  await active.first().locator('button[data-action="revoke"]').click();
  await page.waitForSelector('#confirm-dialog[open]');
  assert.match(await page.textContent('#confirm-text'), /cannot be undone/);
  await shot(page, '06-revoke-confirm');
  await page.click('#confirm-no');
  assert.equal((await gate(rolled)).status, 200, 'cancelled: still works');
  await active.first().locator('button[data-action="revoke"]').click();
  await page.click('#confirm-yes');
  await page.waitForFunction(() => document.querySelectorAll('#active-keys li').length === 0);
  assert.equal((await gate(rolled)).body.error_code, 'KEY_REVOKED');
  // An active key has no Delete; a revoked one does.
  const revokedRow = page.locator(`#inactive-keys li.key .badge.revoked`).first().locator('xpath=../..');
  await revokedRow.locator('button[data-action="delete"]').click();
  await page.click('#confirm-yes');
  await page.waitForFunction((n) => document.querySelectorAll('#inactive-keys li').length === n, 1);
  await shot(page, '07-deleted');
  const left = await ok(admin('GET', `/workspaces/${ws}/api_keys`));
  assert.equal(left.length, 1, JSON.stringify(left.map((k) => k.name)));
  assert.ok(newName);

  const audit = await ok(admin('GET', `/audit?workspace=${ws}&per_page=100`));
  const actions = audit.filter((e) => e.actor === 'portal:carol').map((e) => e.action);
  for (const a of ['create', 'expire', 'reactivate', 'roll', 'revoke', 'delete']) assert.ok(actions.includes(a), `${a} in ${actions}`);
  assert.deepEqual(page.errors, []);
});

test('search narrows both lists by name; usage is shown for the last 24 hours by hour, or 7 or 30 days by day', async () => {
  const ws = await workspace();
  const billing = await ok(admin('POST', `/workspaces/${ws}/api_keys`, { api_key: { name: 'Alpha billing', permissions: ['users:read'] } }), 201);
  await ok(admin('POST', `/workspaces/${ws}/api_keys`, { api_key: { name: 'beta crm', permissions: ['users:read'] } }), 201);
  await ok(admin('POST', `/workspaces/${ws}/api_keys`, { api_key: { name: 'alpha old', active: false } }), 201);
  for (let i = 0; i < 3; i++) assert.equal((await session.kw.request('GET', USERS, { headers: { 'x-api-key': billing.api_key } })).status, 200);
  const page = await newPage(session.browser);
  await page.goto(await link(ws));
  await page.waitForSelector('#active-keys li[data-name="beta crm"]');
  const names = (list) => page.$$eval(`#${list} li`, (items) => items.map((li) => li.dataset.name));
  assert.equal(await page.textContent('#summary'), '2 active, 1 expired or revoked');
  await page.fill('#search', 'ALPHA');
  assert.deepEqual(await names('active-keys'), ['Alpha billing']);
  assert.deepEqual(await names('inactive-keys'), ['alpha old']);
  assert.equal(await page.textContent('#summary'), '1 active, 1 expired or revoked matching “ALPHA”');
  await page.fill('#search', 'nothing like it');
  assert.deepEqual(await names('active-keys'), []);
  assert.equal(await page.isVisible('#active-empty'), true);
  assert.equal(await page.textContent('#active-empty'), 'No active key matches.');
  await shot(page, '12-search');
  await page.fill('#search', '');
  assert.deepEqual((await names('active-keys')).sort(), ['Alpha billing', 'beta crm']);

  // Usage: the 3 requests above (flushed every 200 ms), in every period.
  let summary = '';
  for (let i = 0; i < 40 && !/^3 requests/.test(summary); i++) {
    await sleep(250);
    await row(page, 'Alpha billing').locator('button[data-action="usage"]').click();
    await page.waitForSelector('#usage:not([hidden]) #usage-chart svg');
    summary = await page.textContent('#usage-summary');
  }
  assert.match(summary, /^3 requests \(3 allowed, 0 refused\)/);
  assert.equal(await page.getAttribute('#usage-chart svg', 'aria-label'), 'Requests per hour');
  for (const [period, unit] of [['7d', 'day'], ['30d', 'day'], ['24h', 'hour']]) {
    await page.selectOption('#usage-range', period);
    await page.waitForFunction((u) => document.querySelector('#usage-chart svg')?.getAttribute('aria-label') === `Requests per ${u}`, unit);
    assert.match(await page.textContent('#usage-summary'), /^3 requests \(3 allowed, 0 refused\)/, period);
  }
  await page.selectOption('#usage-range', '30d');
  await page.waitForFunction(() => document.querySelector('#usage-chart svg')?.getAttribute('aria-label') === 'Requests per day');
  await shot(page, '13-usage-30-days');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a reused, an expired and an unknown link get a clear page; no session shows the closed page', async () => {
  const ws = await workspace();
  const url = await link(ws);
  const page = await newPage(session.browser);
  await page.goto(url);
  await page.waitForSelector('#view-keys:not([hidden])');
  const other = await newPage(session.browser);
  const reused = await other.goto(url);
  assert.equal(reused.status(), 410);
  assert.match(await other.textContent('h1'), /already used/);
  await shot(other, '08-link-reused');

  const late = await link(ws, { ttl_seconds: 60 });
  await sleep(60 * MS_PER_SECOND + 500);
  const expired = await other.goto(late);
  assert.equal(expired.status(), 410);
  assert.match(await other.textContent('h1'), /expired/);
  await shot(other, '09-link-expired');

  const unknown = await other.goto(`${session.kw.url}/_keyward/portal/?link=${'0'.repeat(64)}`);
  assert.equal(unknown.status(), 401);
  assert.match(await other.textContent('h1'), /not valid/);

  await other.goto(`${session.kw.url}/_keyward/portal/`);
  await other.waitForSelector('#view-ended:not([hidden])');
  assert.ok(await other.isHidden('#view-keys'));
  await shot(other, '10-no-session');
});

/** Presses Tab until the focused element matches `selector` (at most 60 times). */
async function tabTo(page, selector) {
  for (let i = 0; i < 60; i++) {
    if (await page.evaluate((s) => document.activeElement?.matches(s), selector)) return;
    await page.keyboard.press('Tab');
  }
  assert.fail(`Tab never reached ${selector}`);
}

test('keyboard only: create a key and revoke it', async () => {
  const ws = await workspace();
  const page = await newPage(session.browser);
  await page.goto(await link(ws));
  await page.waitForSelector('#view-keys:not([hidden])');
  // No title in the link: the deployment's (KEYWARD_PORTAL_TITLE); no logo.
  assert.equal(await page.title(), 'Your API keys');
  assert.ok(await page.isHidden('#brand-logo'));
  await tabTo(page, '#new-key');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#create-dialog[open]');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'f-name');
  await page.keyboard.type('typed');
  await tabTo(page, '#matrix input[value="users:read"]');
  await page.keyboard.press('Space');
  await tabTo(page, '#create-submit');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#created:not([hidden])');
  const key = (await page.textContent('#created-key')).trim();
  assert.equal((await gate(key)).status, 200);
  await tabTo(page, '#test-key');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => !['', 'Testing…'].includes(document.querySelector('#test-result').textContent));
  assert.match(await page.textContent('#test-result'), /^It works: keyward knows this key \(key_/);
  await tabTo(page, '#created-done');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'new-key');
  await tabTo(page, 'li[data-name="typed"] button[data-action="revoke"]');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#confirm-dialog[open]');
  await tabTo(page, '#confirm-yes');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#inactive-keys li[data-name="typed"] .badge.revoked');
  assert.equal((await gate(key)).body.error_code, 'KEY_REVOKED');
  const made = (await ok(admin('GET', `/workspaces/${ws}/api_keys`)))[0];
  assert.deepEqual([made.name, made.permissions, made.status], ['typed', ['users:read'], 'revoked']);
  await shot(page, '11-keyboard');
});

test('the page\'s QR encoder is qrcode-generator as npm ships it (vendored unchanged into www/portal/)', () => {
  const shipped = readFileSync(path.join(ROOT, 'node_modules', 'qrcode-generator', 'dist', 'qrcode.mjs'), 'utf8');
  assert.equal(readFileSync(path.join(ROOT, 'www', 'portal', 'qrcode.mjs'), 'utf8'), shipped);
});
