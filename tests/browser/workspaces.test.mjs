// Workspaces in the console, in headless Chromium against the built Worker under `wrangler dev`:
// the picker confines the key list (and what is created) to one workspace, the key list shows
// active keys and expired and revoked keys in sections of their own (a status filter shows one
// status), and the Workspaces page shows, creates and edits workspaces; a workspace's own
// management key sees only its workspace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { consoleSession, holdRequests, newPage, setPerPage, shot, signIn } from './support.mjs';

const session = consoleSession({ vars: { USAGE_FLUSH_MS: '200' } });

async function ok(promise, status = 200) {
  const r = await promise;
  assert.equal(r.status, status, r.text);
  return r.body.data;
}
const admin = (...args) => session.kw.admin(...args);
const listed = (page) => page.$$eval('#keys-body tr', (rows) => rows.map((r) => r.dataset.id));
const inactiveListed = (page) => page.$$eval('#inactive-body tr', (rows) => rows.map((r) => r.dataset.id));

test('the workspace picker confines the key list and new keys; active keys and expired and revoked keys are listed in sections of their own, each paged, and the status filter shows one status', async () => {
  await ok(admin('POST', '/workspaces', { workspace: { id: 'acme', name: 'Acme', permission_ceiling: ['users:*', 'projects:read'] } }), 201);
  await ok(admin('POST', '/workspaces', { workspace: { id: 'globex' } }), 201);
  const a1 = await ok(admin('POST', '/workspaces/acme/api_keys', { api_key: { name: 'acme one', permissions: ['users:read'] } }), 201);
  const a2 = await ok(admin('POST', '/workspaces/acme/api_keys', { api_key: { name: 'acme off', active: false } }), 201);
  const a3 = await ok(admin('POST', '/workspaces/acme/api_keys', { api_key: { name: 'acme gone' } }), 201);
  await ok(admin('POST', `/api_keys/${a3.id}/revoke`));
  const g1 = await ok(admin('POST', '/workspaces/globex/api_keys', { api_key: { name: 'globex one' } }), 201);

  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.waitForSelector('#workspace-picker option[value="acme"]', { state: 'attached' });
  assert.deepEqual(await page.$$eval('#workspace-picker option', (o) => o.map((x) => x.textContent)), ['All workspaces', 'Acme (acme)', 'globex']);
  await page.waitForSelector(`#keys-body tr[data-id="${g1.id}"]`);
  await page.selectOption('#workspace-picker', 'acme');
  await page.waitForFunction((id) => !document.querySelector(`#keys-body tr[data-id="${id}"]`), g1.id);
  // No status chosen: two sections, the active keys, then the expired and revoked ones.
  const summary = () => page.textContent('#list-summary');
  await page.waitForFunction(() => /^3 keys: 1 active, 2 expired or revoked$/.test(document.querySelector('#list-summary').textContent));
  assert.equal(await page.textContent('#keys-heading'), 'Active keys');
  assert.equal(await page.textContent('#inactive-heading'), 'Expired and revoked keys');
  assert.deepEqual(await listed(page), [a1.id]);
  assert.deepEqual(await inactiveListed(page), [a2.id, a3.id]);
  assert.match(await page.textContent('#inactive-label'), /^1–2 of 2$/);
  await shot(page, '39-key-list-sections');
  // Each section pages on its own: one a page, the second section runs on from its expired key to its revoked one.
  await setPerPage(page, 1);
  await page.waitForFunction(() => document.querySelector('#inactive-label').textContent === '1–1 of 2');
  assert.deepEqual(await inactiveListed(page), [a2.id]);
  assert.equal(await page.isDisabled('#inactive-next'), false);
  await page.focus('#inactive-next');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.querySelector('#inactive-label').textContent === '2–2 of 2');
  assert.deepEqual(await inactiveListed(page), [a3.id]);
  assert.equal(await page.isDisabled('#inactive-next'), true);
  assert.deepEqual(await listed(page), [a1.id]);
  assert.equal(await page.textContent('#page-label'), '1–1 of 1');
  await page.click('#inactive-prev');
  await page.waitForFunction(() => document.querySelector('#inactive-label').textContent === '1–1 of 2');
  assert.deepEqual(await inactiveListed(page), [a2.id]);
  await page.selectOption('#per-page', '25');
  // The name filter narrows both sections; a section left empty says so.
  await page.fill('#filter', 'acme o');
  await page.waitForFunction(() => /^2 keys matching “acme o”: 1 active, 1 expired or revoked$/.test(document.querySelector('#list-summary').textContent));
  assert.deepEqual(await listed(page), [a1.id]);
  assert.deepEqual(await inactiveListed(page), [a2.id]);
  await page.fill('#filter', 'acme one');
  await page.waitForFunction(() => /^1 key matching “acme one”: 1 active, 0 expired or revoked$/.test(document.querySelector('#list-summary').textContent));
  assert.equal(await page.isVisible('#inactive-table'), false);
  assert.equal(await page.textContent('#inactive-empty'), 'No expired or revoked keys match.');
  assert.equal(await page.isVisible('#inactive-empty'), true);
  await page.fill('#filter', '');
  await page.waitForFunction(() => /^3 keys: /.test(document.querySelector('#list-summary').textContent));
  // A status chosen: its keys only, in one section.
  await page.selectOption('#status-filter', 'active');
  // The active section held one row before the choice too: wait for the list's summary, which is
  // written once the reloaded list has been drawn.
  await page.waitForFunction(() => /^1 active key$/.test(document.querySelector('#list-summary').textContent));
  assert.deepEqual(await listed(page), [a1.id]);
  assert.equal(await page.isVisible('#inactive-section'), false);
  await page.selectOption('#status-filter', 'expired');
  await page.waitForSelector(`#keys-body tr[data-id="${a2.id}"]`);
  assert.deepEqual(await listed(page), [a2.id]);
  assert.equal(await page.textContent('#keys-heading'), 'Expired keys');
  await page.selectOption('#status-filter', 'revoked');
  await page.waitForSelector(`#keys-body tr[data-id="${a3.id}"]`);
  assert.deepEqual(await listed(page), [a3.id]);
  await shot(page, '40-workspace-picker-revoked');
  await page.selectOption('#status-filter', '');
  // A key made in the console now belongs to acme; beyond acme's ceiling it is refused, named.
  await page.click('#new-key');
  await page.waitForSelector('#view-edit:not([hidden])');
  await page.fill('#f-name', 'made in acme');
  await page.check('[data-permission="users:read"]');
  await page.click('#save');
  await page.waitForSelector('#secret-dialog[open]');
  await page.click('#secret-done');
  const made = (await ok(admin('GET', '/api_keys?name=made%20in%20acme')))[0];
  assert.equal(made.workspace, 'acme');
  await page.goto(`${session.kw.url}/_keyward/console/#/keys/new`);
  await page.waitForSelector('#view-edit:not([hidden])');
  await page.fill('#f-name', 'too strong');
  await page.check('[data-permission="rewards:read"]');
  await page.click('#save');
  await page.waitForFunction(() => /rewards:read/.test(document.querySelector('#view-edit')?.textContent ?? ''));
  assert.deepEqual(await ok(admin('GET', '/api_keys?name=too%20strong')), []);
  // Back to every workspace.
  await page.goto(`${session.kw.url}/_keyward/console/#/keys`);
  await page.selectOption('#workspace-picker', '');
  await page.waitForSelector(`#keys-body tr[data-id="${g1.id}"]`);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the Workspaces page: counts, one workspace\'s keys and usage, create and edit with errors under their field', async () => {
  await ok(admin('POST', '/workspaces/initech/api_keys', { api_key: { name: 'initech one' } }), 201);
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.click('[data-nav="workspaces"]');
  await page.waitForSelector('#workspaces-body tr[data-id="initech"]');
  const row = await page.$eval('#workspaces-body tr[data-id="initech"]', (r) => r.textContent);
  assert.match(row, /named by keys only/);
  // Create one; a bad ceiling entry is shown under the ceiling field.
  await page.fill('#ws-form-id', 'hooli');
  await page.fill('#ws-form-name', 'Hooli');
  await page.fill('#ws-form-ceiling', 'users:read\nNot A Permission');
  await page.click('#ws-save');
  await page.waitForSelector('[data-ws-error="permission_ceiling"]:not(:empty)');
  assert.match(await page.textContent('[data-ws-error="permission_ceiling"]'), /permission_ceiling\[1\]/);
  await page.fill('#ws-form-ceiling', 'users:read\nkeys:*');
  await page.click('#ws-save');
  await page.waitForSelector('#workspace-detail:not([hidden])');
  assert.equal(await page.textContent('#workspace-title'), 'Hooli');
  assert.deepEqual((await ok(admin('GET', '/workspaces/hooli'))).permission_ceiling, ['users:read', 'keys:*']);
  // Edit it.
  await page.fill('#ws-form-name', 'Hooli XYZ');
  await page.click('#ws-save');
  await page.waitForFunction(() => document.querySelector('#workspace-title')?.textContent === 'Hooli XYZ');
  assert.equal((await ok(admin('GET', '/workspaces/hooli'))).name, 'Hooli XYZ');
  // One workspace's keys and usage.
  const k = await ok(admin('POST', '/workspaces/hooli/api_keys', { api_key: { name: 'hooli one', permissions: ['users:read'] } }), 201);
  for (let i = 0; i < 2; i++) await session.kw.request('GET', '/api/v2/projects/1/users', { headers: { 'x-api-key': k.api_key } });
  await page.reload();
  await page.waitForFunction(() => /1 \(1 active\)/.test(document.querySelector('#ws-keys')?.textContent ?? ''));
  // Usage is flushed every USAGE_FLUSH_MS: reload until it shows.
  for (let i = 0; i < 40; i++) {
    if (/VALID 2/.test(await page.textContent('#ws-usage'))) break;
    await new Promise((r) => setTimeout(r, 500));
    await page.reload();
    await page.waitForSelector('#workspace-detail:not([hidden])');
    await page.waitForFunction(() => document.querySelector('#ws-usage')?.textContent !== '…');
  }
  assert.match(await page.textContent('#ws-usage'), /VALID 2/);
  await shot(page, '41-workspace-page');
  // "Show its keys" picks it.
  await page.click('#ws-show-keys');
  await page.waitForSelector(`#view-keys:not([hidden]) #keys-body tr[data-id="${k.id}"]`);
  assert.equal(await page.inputValue('#workspace-picker'), 'hooli');
  assert.deepEqual(await listed(page), [k.id]);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the Workspaces page: what is typed into the new-workspace form while the list loads is kept', async () => {
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.waitForSelector('#view-keys:not([hidden])');
  const held = await holdRequests(page, (url) => url.pathname.endsWith('/_keyward/v1/workspaces'));
  await page.click('[data-nav="workspaces"]');
  await page.waitForSelector('#view-workspaces:not([hidden])');
  await held.sent();
  await page.fill('#ws-form-id', 'typed-early');
  await page.fill('#ws-form-name', 'Typed early');
  held.release();
  await page.waitForFunction(() => /^\d+ workspaces?$/.test(document.querySelector('#workspaces-summary').textContent));
  await held.delivered();
  assert.equal(await page.inputValue('#ws-form-id'), 'typed-early');
  assert.equal(await page.inputValue('#ws-form-name'), 'Typed early');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a workspace\'s own management key signs in to its workspace only', async () => {
  const mgmt = await ok(admin('POST', '/workspaces/umbrella/api_keys', { api_key: { name: 'umbrella admin', permissions: ['keys:*'] } }), 201);
  const other = await ok(admin('POST', '/workspaces/wayne/api_keys', { api_key: { name: 'wayne one' } }), 201);
  const page = await newPage(session.browser);
  await page.goto(`${session.kw.url}/_keyward/console/`);
  await page.fill('#token', mgmt.api_key);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector(`#keys-body tr[data-id="${mgmt.id}"]`);
  assert.deepEqual(await listed(page), [mgmt.id]);
  await page.waitForSelector('#workspace-picker option[value="umbrella"]', { state: 'attached' });
  assert.deepEqual(await page.$$eval('#workspace-picker option', (o) => o.map((x) => x.value)), ['', 'umbrella']);
  await page.goto(`${session.kw.url}/_keyward/console/#/keys/${other.id}`);
  await page.waitForFunction(() => /no key has the id/.test(document.querySelector('#view-edit')?.textContent ?? ''));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
