// The console in real headless Chromium against the built Worker under `wrangler dev`: sign in,
// create (plaintext once), filter, page, edit permissions, field errors, the lifecycle, seen at
// the gate, and a phone-sized screen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { consoleSession, holdRequests, newPage, setPerPage, shot, signIn } from './support.mjs';

const session = consoleSession();

const USERS = '/api/v2/projects/1/users';
const gate = (key) => session.kw.request('GET', USERS, { headers: { authorization: `Bearer ${key}` } });

test('sign in: a wrong token is refused with the API message; the right one opens the key list', async () => {
  const page = await newPage(session.browser);
  await page.goto(`${session.kw.url}/_keyward/console`);
  assert.match(page.url(), /\/_keyward\/console\/$/);
  await page.waitForSelector('#view-signin:not([hidden])');
  await shot(page, '01-sign-in');
  await page.fill('#token', 'wrong-token');
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('.field-error[data-field="token"]:not(:empty)');
  assert.match(await page.textContent('.field-error[data-field="token"]'), /not valid/);
  assert.equal(await page.isHidden('#view-keys'), true);
  await page.fill('#token', session.kw.adminToken);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#view-keys:not([hidden])');
  // Kept for the tab only.
  assert.equal(await page.evaluate(() => sessionStorage.getItem('keyward.token')), session.kw.adminToken);
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  await page.click('#sign-out');
  await page.waitForSelector('#view-signin:not([hidden])');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('keyward.token')), null);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('sign in with the keyboard only', async () => {
  const page = await newPage(session.browser);
  await page.goto(`${session.kw.url}/_keyward/console/`);
  await page.waitForSelector('#view-signin:not([hidden])');
  // The token field has focus on arrival; type, press Enter.
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'token');
  await page.keyboard.type(session.kw.adminToken);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#view-keys:not([hidden])');
  // The focus is on the main region as soon as the view shows.
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'main');
  // ... without a focus ring drawn around the whole region (it is not a control).
  assert.equal(await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle), 'none');
  // Tab reaches the "New key" link, and Enter opens the form.
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press('Tab');
    if (await page.evaluate(() => document.activeElement?.id) === 'new-key') break;
  }
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'new-key');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#view-edit:not([hidden])');
  await page.context().close();
});

test('a keyboard user who tabs on while the key list loads keeps the focus where the Tab put it', async () => {
  const made = await session.kw.admin('POST', '/api_keys', { api_key: { name: 'focus check', permissions: ['users:read'] } });
  assert.equal(made.status, 201);
  const page = await newPage(session.browser);
  await page.goto(`${session.kw.url}/_keyward/console/`);
  await page.waitForSelector('#view-signin:not([hidden])');
  // The list's answer is held back (the sign-in's own check, per_page=1, is not) until the user
  // has moved the focus.
  const held = await holdRequests(page, (url) => url.pathname.endsWith('/api_keys') && url.searchParams.get('per_page') !== '1');
  await page.fill('#token', session.kw.adminToken);
  await page.keyboard.press('Enter');
  await page.waitForSelector('#view-keys:not([hidden])');
  await page.keyboard.press('Tab');
  const moved = await page.evaluate(() => document.activeElement?.id || document.activeElement?.tagName);
  assert.notEqual(moved, 'main');
  held.release();
  await page.waitForSelector('#keys-body tr');
  assert.equal(await page.evaluate(() => document.activeElement?.id || document.activeElement?.tagName), moved, 'the list took the focus back');
  await page.context().close();
});

test('an older search answer never overwrites a newer one: the list shows what the filter says now', async () => {
  const alpha = await session.kw.admin('POST', '/api_keys', { api_key: { name: 'race alpha' } });
  const beta = await session.kw.admin('POST', '/api_keys', { api_key: { name: 'race beta' } });
  assert.equal(alpha.status, 201);
  assert.equal(beta.status, 201);
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.waitForSelector('#keys-body tr');
  // Every answer to the search for "race alpha" is held back until the search for "race beta"
  // has been answered and drawn; then released, late.
  const held = await holdRequests(page, (url) => url.pathname.endsWith('/api_keys') && url.searchParams.get('name_contains') === 'race alpha');
  await page.fill('#filter', 'race alpha');
  await page.press('#filter', 'Enter');
  await held.sent();
  await page.fill('#filter', 'race beta');
  await page.press('#filter', 'Enter');
  await page.waitForFunction((id) => document.querySelector(`#keys-body tr[data-id="${id}"]`), beta.body.data.id);
  await page.waitForFunction(() => /matching “race beta”/.test(document.querySelector('#list-summary').textContent));
  held.release();
  // The late answers arrive and are dropped: wait until the page has had them.
  await held.delivered();
  const ids = await page.$$eval('#keys-body tr', (rows) => rows.map((r) => r.dataset.id));
  assert.deepEqual(ids, [beta.body.data.id]);
  assert.match(await page.textContent('#list-summary'), /^1 key matching “race beta”: 1 active, 0 expired or revoked$/);
  await page.context().close();
});

test('create a key: the plaintext is shown once, with a copy button, and works at the gate', async () => {
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.click('#new-key');
  await page.waitForSelector('#view-edit:not([hidden])');
  await page.fill('#f-name', 'Console created');
  await page.fill('#f-description', 'made in the browser test');
  await page.check('[data-permission="users:read"]');
  await page.check('[data-permission="projects:read"]');
  await page.click('#save');
  await page.waitForSelector('#secret-dialog[open]');
  const key = await page.inputValue('#secret-value');
  assert.match(key, /^kw_live_[0-9A-Za-z]{38}$/);
  assert.match(await page.textContent('#secret-dialog'), /only time/);
  await page.click('#secret-copy');
  await page.waitForSelector('#secret-copied:not(:empty)');
  await shot(page, '03-create-plaintext-once');
  await page.click('#secret-done');
  await page.waitForSelector('#secret-dialog:not([open])', { state: 'attached' });
  // Gone from the page once the dialog is closed (its close event, which follows the [open]
  // attribute's removal as a task of its own: waited for, not raced), and not in what the API shows.
  await page.waitForFunction(() => document.querySelector('#secret-value').value === '', null, { timeout: 5000 });
  await page.waitForSelector('#view-edit:not([hidden]) #lifecycle:not([hidden])');
  assert.ok(!(await page.content()).includes(key));
  assert.equal((await gate(key)).status, 200);
  const list = await session.kw.admin('GET', '/api_keys?name=Console%20created');
  assert.deepEqual(list.body.data[0].permissions.sort(), ['projects:read', 'users:read']);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('filter by name and page through the list', async () => {
  const tag = `pager${Date.now()}`;
  for (let i = 0; i < 5; i++) {
    const r = await session.kw.admin('POST', '/api_keys', { api_key: { name: `${tag} ${i}` } });
    assert.equal(r.status, 201);
  }
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.selectOption('#per-page', '10');
  await page.fill('#filter', tag);
  await page.waitForFunction((t) => [...document.querySelectorAll('.key-name')].every((a) => a.textContent.startsWith(t))
    && document.querySelectorAll('.key-name').length === 5, tag);
  await shot(page, '02-key-list');
  // Two per page would need the API's per_page; use the smallest option by asking the API via URL state.
  await setPerPage(page, 2);
  const names = async () => page.$$eval('.key-name', (as) => as.map((a) => a.textContent));
  await page.waitForFunction(() => document.querySelectorAll('.key-name').length === 2);
  const seen = [...await names()];
  assert.equal(await page.isDisabled('#prev-page'), true);
  while (!(await page.isDisabled('#next-page'))) {
    const before = (await names()).join();
    await page.click('#next-page');
    await page.waitForFunction((b) => [...document.querySelectorAll('.key-name')].map((a) => a.textContent).join() !== b, before);
    seen.push(...await names());
  }
  assert.deepEqual(seen, [0, 1, 2, 3, 4].map((i) => `${tag} ${i}`));
  assert.match(await page.textContent('#page-label'), /5–5 of 5/);
  await page.click('#prev-page');
  await page.waitForFunction((t) => document.querySelector('.key-name')?.textContent === `${t} 2`, tag);
  await page.context().close();
});

test('edit permissions in the matrix; a field error is shown next to its field and nothing is saved', async () => {
  const created = await session.kw.admin('POST', '/api_keys', { api_key: { name: 'matrix', permissions: ['users:read', 'reports:export'] } });
  const { id, api_key: key } = created.body.data;
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.goto(`${session.kw.url}/_keyward/console/#/keys/${id}`);
  await page.waitForSelector('#view-edit:not([hidden]) #lifecycle:not([hidden])');
  assert.equal(await page.isChecked('[data-permission="users:read"]'), true);
  assert.equal(await page.inputValue('#f-extra'), 'reports:export', 'permissions outside the matrix are kept');
  // A malformed CIDR: the API's message appears next to the IP allowlist.
  await page.fill('#f-ips', '10.0.0.0/8\n10.0.0.0/33');
  await page.check('[data-permission="projects:*"]');
  await page.click('#save');
  await page.waitForSelector('.field-error[data-field="ip_allowlist"]:not(:empty)');
  assert.match(await page.textContent('.field-error[data-field="ip_allowlist"]'), /ip_allowlist\[1\].*10\.0\.0\.0\/33/);
  assert.equal(await page.getAttribute('[data-field-container="ip_allowlist"]', 'class'), 'field invalid');
  await shot(page, '04-edit-field-error');
  let stored = (await session.kw.admin('GET', `/api_keys/${id}`)).body.data;
  assert.deepEqual(stored.ip_allowlist, []);
  assert.deepEqual(stored.permissions, ['users:read', 'reports:export']);
  // Fix it and save: the matrix's module:* replaces the module's single actions.
  await page.fill('#f-ips', '127.0.0.0/8');
  await page.check('[data-permission="users:delete"]');
  await page.click('#save');
  await page.waitForSelector('#edit-ok:not([hidden])');
  stored = (await session.kw.admin('GET', `/api_keys/${id}`)).body.data;
  assert.deepEqual(stored.permissions.sort(), ['projects:*', 'reports:export', 'users:delete', 'users:read']);
  assert.deepEqual(stored.ip_allowlist, ['127.0.0.0/8']);
  assert.equal((await session.kw.request('DELETE', '/api/v2/projects/3', { headers: { 'x-api-key': key } })).status, 200);
  // Name rules too: an empty name.
  await page.fill('#f-name', '');
  await page.click('#save');
  await page.waitForSelector('.field-error[data-field="name"]:not(:empty)');
  assert.match(await page.textContent('.field-error[data-field="name"]'), /^name/);
  await page.context().close();
});

test('lifecycle: expire (refused at the gate), reactivate, roll, revoke with a confirmation, delete', async () => {
  const created = await session.kw.admin('POST', '/api_keys', { api_key: { name: 'lifecycle', permissions: ['users:read'] } });
  const { id, api_key: key } = created.body.data;
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.goto(`${session.kw.url}/_keyward/console/#/keys/${id}`);
  await page.waitForSelector('#lifecycle:not([hidden])');
  assert.equal(await page.isVisible('#act-delete'), false, 'delete is not offered for an active key');

  await page.click('#act-expire');
  await page.waitForSelector('#edit-status.expired');
  const expired = await gate(key);
  assert.equal(expired.status, 401);
  assert.equal(expired.body.error_code, 'KEY_EXPIRED');
  assert.equal(await page.isVisible('#act-delete'), true);

  await page.click('#act-reactivate');
  await page.waitForSelector('#edit-status.active');
  assert.equal((await gate(key)).status, 200);

  // Roll with no grace: a new key (shown once), the old one expired at once.
  await page.fill('#grace', '0');
  await page.click('#act-roll');
  await page.waitForSelector('#secret-dialog[open]');
  const rolled = await page.inputValue('#secret-value');
  await page.click('#secret-done');
  assert.equal((await gate(rolled)).status, 200);
  assert.equal((await gate(key)).body.error_code, 'KEY_EXPIRED');
  await page.waitForFunction((old) => !location.hash.includes(old), id);
  const newId = decodeURIComponent((await page.evaluate(() => location.hash)).split('/')[2]);
  await page.waitForSelector('#edit-status.active');

  // Revoke: a confirmation that says it is final; cancelling changes nothing.
  await page.click('#act-revoke');
  await page.waitForSelector('#confirm-dialog[open]');
  assert.match(await page.textContent('#confirm-text'), /final/);
  await shot(page, '05-revoke-confirmation');
  await page.click('#confirm-cancel');
  assert.equal((await gate(rolled)).status, 200);
  await page.click('#act-revoke');
  await page.click('#confirm-ok');
  await page.waitForSelector('#edit-status.revoked');
  assert.equal((await gate(rolled)).body.error_code, 'KEY_REVOKED');
  assert.equal(await page.isVisible('#act-reactivate'), false);
  assert.equal(await page.isDisabled('#save'), true);

  await page.click('#act-delete');
  await page.click('#confirm-ok');
  await page.waitForSelector('#view-keys:not([hidden])');
  assert.equal((await session.kw.admin('GET', `/api_keys/${newId}`)).status, 404);
  assert.equal((await gate(rolled)).body.error_code, 'KEY_REVOKED', 'deleted, and still revoked');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a phone-sized screen: the list has no horizontal scroll', async () => {
  const page = await newPage(session.browser, { viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
  await signIn(page, session.kw);
  await page.waitForSelector('.key-name');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px`);
  await shot(page, '06-phone-list');
  await page.goto(`${session.kw.url}/_keyward/console/#/keys/new`);
  await page.waitForSelector('#view-edit:not([hidden])');
  const formOverflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(formOverflow <= 0, `the form scrolls sideways by ${formOverflow}px`);
  await page.context().close();
});
