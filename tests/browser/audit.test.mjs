// The audit log in the console, in real headless Chromium against the built Worker under
// `wrangler dev`: a key's history on its page (newest first, old → new, older pages), the Activity
// view (every key, newest first, links, the action filter, pages) and user data shown as text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { consoleSession, newPage, shot, signIn } from './support.mjs';

const session = consoleSession();

const ok = async (call) => {
  const r = await call;
  assert.ok(r.status < 300, `${r.status} ${JSON.stringify(r.body)}`);
  return r.body.data;
};
const create = (name, extra = {}) => ok(session.kw.admin('POST', '/api_keys', { api_key: { name, ...extra } }));
const update = (id, attributes) => ok(session.kw.admin('PUT', `/api_keys/${id}`, { api_key: attributes }));
/** Every audit entry the API holds (optionally filtered), newest first. */
const audit = async (query = '') => (await ok(session.kw.admin('GET', `/audit?per_page=500${query}`)));

/** The entries shown in a list: id, action and each change line's parts. */
const shown = (page, list) => page.$$eval(`${list} > li.entry`, (items) => items.map((li) => ({
  id: li.dataset.id,
  action: li.dataset.action,
  at: li.querySelector('time').dateTime,
  actor: li.querySelector('.actor').textContent,
  key: li.querySelector('.entry-key')?.textContent ?? null,
  link: li.querySelector('a.entry-key')?.getAttribute('href') ?? null,
  changes: Object.fromEntries([...li.querySelectorAll('.changes > li')].map((c) => [c.dataset.attribute, {
    old: c.querySelector('.old')?.textContent ?? null,
    new: c.querySelector('.new')?.textContent ?? null,
    text: c.textContent,
  }])),
})));

const count = (page, list, n) => page.waitForFunction(([l, k]) => document.querySelectorAll(`${l} > li.entry`).length === k, [list, n]);

test("a key's history: made, renamed, expired and reactivated in the console, newest first with old → new", async () => {
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.click('#new-key');
  await page.waitForSelector('#view-edit:not([hidden])');
  assert.equal(await page.isHidden('#history'), true, 'no history for a key not made yet');
  await page.fill('#f-name', 'history one');
  await page.check('[data-permission="users:read"]');
  await page.click('#save');
  await page.waitForSelector('#secret-dialog[open]');
  await page.click('#secret-done');
  await page.waitForSelector('#view-edit:not([hidden]) #history:not([hidden])');
  await count(page, '#history-list', 1);
  const id = decodeURIComponent((await page.evaluate(() => location.hash)).split('/')[2]);

  // Rename, expire, reactivate: each shows up at the top as soon as it is done.
  await page.fill('#f-name', 'history two');
  await page.check('[data-permission="projects:read"]');
  await page.click('#save');
  await count(page, '#history-list', 2);
  await page.click('#act-expire');
  await count(page, '#history-list', 3);
  await page.click('#act-reactivate');
  await count(page, '#history-list', 4);
  await shot(page, 'audit-01-key-history');

  const entries = await shown(page, '#history-list');
  assert.deepEqual(entries.map((e) => e.action), ['reactivate', 'expire', 'update', 'create']);
  const fromApi = await audit(`&key_id=${id}`);
  assert.deepEqual(entries.map((e) => e.id), fromApi.map((e) => e.id));
  const times = entries.map((e) => Date.parse(e.at));
  assert.deepEqual([...times].sort((a, b) => b - a), times, 'newest first');
  for (const e of entries) assert.equal(e.actor, 'by admin token');
  const [reactivate, expire, rename, made] = entries;
  assert.deepEqual(rename.changes.name, { old: '"history one"', new: '"history two"', text: 'name "history one" → "history two"' });
  // A list shows what was added and removed.
  assert.equal(rename.changes.permissions.text, 'permissions +projects:read');
  assert.deepEqual([expire.changes.active.old, expire.changes.active.new], ['true', 'false']);
  assert.deepEqual([expire.changes.status.old, expire.changes.status.new], ['"active"', '"expired"']);
  assert.deepEqual([reactivate.changes.status.old, reactivate.changes.status.new], ['"expired"', '"active"']);
  // A creation lists what the key was made with, and leaves out what is empty or bookkeeping.
  assert.equal(made.changes.name.new, '"history one"');
  assert.equal(made.changes.name.old, null);
  assert.equal(made.changes.permissions.text, 'permissions [users:read]');
  for (const quiet of ['id', 'version', 'created_at', 'event_allowlist', 'description', 'active', 'status']) assert.equal(made.changes[quiet], undefined, quiet);
  assert.equal(rename.changes.version, undefined, 'every write bumps the version: not listed');
  assert.equal(await page.isHidden('#history-older'), true);

  // Twelve more changes: the page shows the newest ten, "Older changes" the rest.
  for (let i = 1; i <= 12; i++) await update(id, { description: `step ${i}` });
  await page.reload();
  await count(page, '#history-list', 10);
  const first = await shown(page, '#history-list');
  assert.deepEqual(first[0].changes.description, { old: '"step 11"', new: '"step 12"', text: 'description "step 11" → "step 12"' });
  assert.equal(await page.isVisible('#history-older'), true);
  await page.click('#history-older');
  await count(page, '#history-list', 16);
  assert.equal(await page.isHidden('#history-older'), true, 'no older page after the last');
  const all = await shown(page, '#history-list');
  assert.deepEqual(all.map((e) => e.id), (await audit(`&key_id=${id}`)).map((e) => e.id));
  assert.equal(all.at(-1).action, 'create');
  await shot(page, 'audit-02-key-history-older');

  // Another key's page shows only its own history.
  const other = await create('history other');
  await page.goto(`${session.kw.url}/_keyward/console/#/keys/${other.id}`);
  await count(page, '#history-list', 1);
  assert.equal((await shown(page, '#history-list'))[0].action, 'create');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('Activity: every key newest first, links to keys that still exist, the action filter, pages', async () => {
  // Two keys, their changes interleaved; then enough changes to fill more than one page of ten.
  const a = await create('activity A', { permissions: ['users:read'] });
  const b = await create('activity B');
  await update(a.id, { name: 'activity A2' });
  await update(b.id, { active: false });
  await update(a.id, { active: false });
  await ok(session.kw.admin('DELETE', `/api_keys/${b.id}`));
  for (let i = 1; i <= 8; i++) await update(a.id, { description: `note ${i}` });
  await update(a.id, { active: true });

  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.click('[data-nav="activity"]');
  await page.waitForSelector('#view-activity:not([hidden]) #activity-list > li.entry');
  assert.equal(await page.getAttribute('[data-nav="activity"]', 'aria-current'), 'page');
  const everything = await audit();
  const firstPage = await shown(page, '#activity-list');
  assert.deepEqual(firstPage.map((e) => e.id), everything.slice(0, 25).map((e) => e.id));
  const times = firstPage.map((e) => Date.parse(e.at));
  assert.deepEqual([...times].sort((x, y) => y - x), times, 'newest first');
  // The two keys' changes, newest first, as they happened.
  const ours = firstPage.filter((e) => [a.id, b.id].includes(e.link?.split('/')[2]) || e.key?.includes(b.id));
  assert.deepEqual(ours.map((e) => `${e.action} ${e.link ? 'A' : 'B'}`), [
    'reactivate A', ...Array(8).fill('update A'), 'delete B', 'expire A', 'expire B', 'update A', 'create B', 'create A',
  ]);
  // A key that still exists is a link named as it is now; a deleted one is its last name and id.
  for (const e of ours.filter((x) => x.link)) {
    assert.equal(e.link, `#/keys/${a.id}`);
    assert.equal(e.key, 'activity A2');
  }
  for (const e of ours.filter((x) => !x.link)) assert.equal(e.key, `activity B ${b.id} · deleted`);
  const deleted = ours.find((e) => e.action === 'delete');
  assert.equal(deleted.changes.name.old, '"activity B"');
  await shot(page, 'audit-03-activity');

  // The action filter: only expiries, the same as the API's.
  await page.selectOption('#activity-action', 'expire');
  await page.waitForFunction(() => [...document.querySelectorAll('#activity-list > li.entry')].every((li) => li.dataset.action === 'expire'));
  const expiries = await shown(page, '#activity-list');
  assert.deepEqual(expiries.map((e) => e.id), (await audit('&action=expire')).map((e) => e.id));
  assert.ok(expiries.length >= 2);
  await shot(page, 'audit-04-activity-filter');
  // The filter is in the address: it survives a reload, and Back undoes it.
  assert.equal(await page.evaluate(() => location.hash), '#/activity?action=expire');
  await page.reload();
  await page.waitForSelector('#activity-list > li.entry');
  assert.equal(await page.inputValue('#activity-action'), 'expire');
  assert.deepEqual((await shown(page, '#activity-list')).map((e) => e.id), expiries.map((e) => e.id));
  await page.goBack();
  await page.waitForFunction((n) => document.querySelectorAll('#activity-list > li.entry').length > n, expiries.length);
  assert.equal(await page.inputValue('#activity-action'), '');
  // A policy change: what was added, in words; no key.
  const policy = await ok(session.kw.admin('GET', '/policy'));
  await ok(session.kw.admin('PUT', '/policy', policy));
  policy.rules.push({ method: 'GET', path: '/api/v2/audited', permission: 'audited:read' });
  await ok(session.kw.admin('PUT', '/policy', policy));
  await page.selectOption('#activity-action', 'policy_update');
  await page.waitForFunction(() => document.querySelector('#activity-list > li.entry')?.dataset.action === 'policy_update');
  await count(page, '#activity-list', 2);
  const [changed, stored] = await shown(page, '#activity-list');
  assert.equal(changed.key, 'Route policy');
  assert.equal(changed.changes.policy.text, 'policy +GET /api/v2/audited → audited:read');
  assert.equal(stored.changes.policy.text, `policy the default → ${policy.rules.length - 1} rules`);
  // Nothing imported here: an empty page says so.
  await page.selectOption('#activity-action', 'import');
  await page.waitForSelector('#activity-empty:not([hidden])');
  assert.equal(await page.$$eval('#activity-list > li', (l) => l.length), 0);
  await page.selectOption('#activity-action', '');

  // Pages of ten: older until the last, every entry once, in the API's order; newer goes back.
  await page.selectOption('#activity-per-page', '10');
  await count(page, '#activity-list', 10);
  assert.equal(await page.isDisabled('#activity-newer'), true);
  const ids = async () => (await shown(page, '#activity-list')).map((e) => e.id);
  const pages = [await ids()];
  while (!(await page.isDisabled('#activity-older'))) {
    const before = pages.at(-1)[0];
    await page.click('#activity-older');
    await page.waitForFunction((id) => document.querySelector('#activity-list > li.entry')?.dataset.id !== id, before);
    pages.push(await ids());
  }
  const all = (await audit()).map((e) => e.id);
  assert.ok(pages.length >= 2, `${all.length} entries make more than one page`);
  assert.deepEqual(pages.flat(), all);
  assert.match(await page.textContent('#activity-page'), new RegExp(`Page ${pages.length}`));
  await page.click('#activity-newer');
  await page.waitForFunction((id) => document.querySelector('#activity-list > li.entry')?.dataset.id === id, pages.at(-2)[0]);
  assert.deepEqual(await ids(), pages.at(-2));

  // A link opens the key's page, with its history.
  await page.selectOption('#activity-per-page', '25');
  await page.click(`#activity-list a.entry-key[href="#/keys/${a.id}"] >> nth=0`);
  await page.waitForSelector('#view-edit:not([hidden]) #history-list > li.entry');
  assert.equal(await page.inputValue('#f-name'), 'activity A2');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a change made with a management key names that key as who made it, linked to it', async () => {
  const ops = await create('ops robot', { permissions: ['keys:*'] });
  const made = await ok(session.kw.admin('POST', '/api_keys', { api_key: { name: 'made by ops' } }, ops.api_key));
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.goto(`${session.kw.url}/_keyward/console/#/activity`);
  await page.waitForSelector(`#activity-list > li.entry[data-key-id="${made.id}"]`);
  const actor = await page.$eval(`#activity-list > li.entry[data-key-id="${made.id}"] .actor`, (a) => ({
    text: a.textContent, href: a.querySelector('a')?.getAttribute('href'),
  }));
  assert.deepEqual(actor, { text: 'by ops robot', href: `#/keys/${ops.id}` });
  // On the key's own page, the actor is named by id; a time is shown as a date, in full on hover.
  const { expires_at: expiry } = await update(made.id, { expires_at: '2030-01-02T03:04:05Z' });
  await page.goto(`${session.kw.url}/_keyward/console/#/keys/${made.id}`);
  await count(page, '#history-list', 2);
  const [expiring, creation] = await shown(page, '#history-list');
  assert.equal(creation.actor, `by ${ops.id}`);
  assert.equal(expiring.actor, 'by admin token');
  assert.equal(expiring.changes.expires_at.old, 'none');
  assert.match(expiring.changes.expires_at.new, /2030/);
  assert.equal(await page.getAttribute('#history-list [data-attribute="expires_at"] .new', 'title'), expiry);
  await page.context().close();
});

test('names and metadata are shown as text, never as HTML', async () => {
  const evil = '<img src=x onerror=alert(1)>';
  const page = await newPage(session.browser);
  const dialogs = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
  await signIn(page, session.kw);
  await page.click('#new-key');
  await page.waitForSelector('#view-edit:not([hidden])');
  await page.fill('#f-name', evil);
  await page.fill('#f-metadata', JSON.stringify({ note: '<script>alert(2)</script>' }));
  await page.click('#save');
  await page.waitForSelector('#secret-dialog[open]');
  await page.click('#secret-done');
  await count(page, '#history-list', 1);
  const id = decodeURIComponent((await page.evaluate(() => location.hash)).split('/')[2]);
  await page.fill('#f-name', `${evil} 2`);
  await page.click('#save');
  await count(page, '#history-list', 2);
  const [rename, made] = await shown(page, '#history-list');
  assert.deepEqual([rename.changes.name.old, rename.changes.name.new], [JSON.stringify(evil), JSON.stringify(`${evil} 2`)]);
  assert.equal(made.changes.metadata.new, JSON.stringify({ note: '<script>alert(2)</script>' }));

  await page.goto(`${session.kw.url}/_keyward/console/#/activity`);
  await page.waitForSelector(`#activity-list a.entry-key[href="#/keys/${id}"]`);
  const links = await page.$$eval(`#activity-list a.entry-key[href="#/keys/${id}"]`, (as) => as.map((a) => a.textContent));
  assert.deepEqual(links, [`${evil} 2`, `${evil} 2`]);
  await shot(page, 'audit-05-names-as-text');
  assert.equal(await page.$$eval('img, script:not([src])', (n) => n.length), 0, 'no element made from user data');
  assert.deepEqual(dialogs, []);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a phone-sized screen: the Activity view has no horizontal scroll', async () => {
  const page = await newPage(session.browser, { viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
  await signIn(page, session.kw);
  await page.goto(`${session.kw.url}/_keyward/console/#/activity`);
  await page.waitForSelector('#activity-list > li.entry');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px`);
  await shot(page, 'audit-06-phone-activity');
  await page.context().close();
});
