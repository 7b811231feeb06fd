// The console's rate limit and credits in real headless Chromium against the built Worker under
// `wrangler dev`: set both when creating a key, see the live count after traffic, top up (add and
// set), field errors named by the API, and a save that does not touch credits keeps the live count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { consoleSession, newPage, shot, signIn } from './support.mjs';

const session = consoleSession();

const USERS = '/api/v2/projects/1/users';
const gate = (key) => session.kw.request('GET', USERS, { headers: { authorization: `Bearer ${key}` } });

test('create a key with a rate limit and credits, watch the credits fall, top them up, edit the limit', async () => {
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.click('#new-key');
  await page.waitForSelector('#view-edit:not([hidden])');
  assert.equal(await page.isDisabled('#f-rl-limit'), true, 'off until asked for');
  await page.fill('#f-name', 'Metered');
  await page.check('[data-permission="users:read"]');
  await page.check('#f-rl-on');
  await page.fill('#f-rl-limit', '3');
  await page.fill('#f-rl-period', '60');
  await page.check('#f-cr-on');
  await page.fill('#f-cr-remaining', '10');
  await page.selectOption('#f-cr-interval', 'monthly');
  await page.fill('#f-cr-amount', '500');
  await page.click('#save');
  await page.waitForSelector('#secret-dialog[open]');
  const key = await page.inputValue('#secret-value');
  await page.click('#secret-done');
  await page.waitForSelector('#view-edit:not([hidden]) #credits-card:not([hidden])');
  assert.equal(await page.textContent('#credits-left'), '10');
  assert.match(await page.textContent('#credits-refill'), /500 each UTC month/);
  const id = (await session.kw.admin('GET', '/api_keys?name=Metered')).body.data[0].id;
  const stored = (await session.kw.admin('GET', `/api_keys/${id}`)).body.data;
  assert.deepEqual(stored.ratelimit, { limit: 3, period_seconds: 60 });
  assert.deepEqual(stored.credits, { remaining: 10, refill: { amount: 500, interval: 'monthly' } });

  // Traffic spends credits; the page shows the live count when it loads the key.
  for (let i = 0; i < 3; i++) assert.equal((await gate(key)).status, 200);
  assert.equal((await gate(key)).body.error_code, 'RATE_LIMITED');
  await page.reload();
  await page.waitForSelector('#view-edit:not([hidden]) #credits-card:not([hidden])');
  await page.waitForFunction(() => document.querySelector('#credits-left').textContent === '7');
  assert.equal(await page.inputValue('#f-cr-remaining'), '7');

  // Top up: add, then set.
  await page.fill('#topup-amount', '15');
  await page.click('#topup-add');
  await page.waitForFunction(() => document.querySelector('#credits-left').textContent === '22');
  assert.match(await page.textContent('#edit-ok'), /22 left/);
  await page.fill('#topup-amount', '5');
  await page.click('#topup-set');
  await page.waitForFunction(() => document.querySelector('#credits-left').textContent === '5');
  await shot(page, 'limits-01-credits-card');
  assert.equal((await session.kw.admin('GET', `/api_keys/${id}`)).body.data.credits.remaining, 5);
  await page.fill('#topup-amount', '-1');
  await page.click('#topup-add');
  await page.waitForSelector('.field-error[data-field="topup"]:not(:empty)');
  assert.match(await page.textContent('.field-error[data-field="topup"]'), /^add:/);

  // A bad limit is named by the API next to its field; nothing is saved.
  await page.fill('#f-rl-limit', '0');
  await page.click('#save');
  await page.waitForSelector('.field-error[data-field="ratelimit"]:not(:empty)');
  assert.match(await page.textContent('.field-error[data-field="ratelimit"]'), /^ratelimit\.limit:/);
  await shot(page, 'limits-02-field-error');
  assert.deepEqual((await session.kw.admin('GET', `/api_keys/${id}`)).body.data.ratelimit, { limit: 3, period_seconds: 60 });

  // A save that leaves the credit fields alone keeps the live count, even after more traffic.
  await page.fill('#f-rl-limit', '100');
  await session.kw.admin('POST', `/api_keys/${id}/credits`, { set: 4 });
  await page.click('#save');
  await page.waitForFunction(() => !document.querySelector('#edit-ok').hidden);
  const after = (await session.kw.admin('GET', `/api_keys/${id}`)).body.data;
  assert.deepEqual(after.ratelimit, { limit: 100, period_seconds: 60 });
  assert.equal(after.credits.remaining, 4, 'the save did not send the credits it showed');
  assert.equal(await page.textContent('#credits-left'), '4');

  // Turning credits off removes the card.
  await page.uncheck('#f-cr-on');
  await page.click('#save');
  await page.waitForSelector('#credits-card', { state: 'hidden' });
  assert.equal((await session.kw.admin('GET', `/api_keys/${id}`)).body.data.credits, null);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the rate limit\'s mode: local takes a declared tier only, and the page shows what was saved', async () => {
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.click('#new-key');
  await page.waitForSelector('#view-edit:not([hidden])');
  await page.fill('#f-name', 'Local tier');
  await page.check('[data-permission="users:read"]');
  await page.check('#f-rl-on');
  assert.equal(await page.inputValue('#f-rl-mode'), 'exact', 'exact unless chosen');
  assert.equal(await page.isHidden('#f-rl-hint-local'), true);
  await page.selectOption('#f-rl-mode', 'local');
  assert.equal(await page.isVisible('#f-rl-hint-local'), true);
  await page.fill('#f-rl-limit', '7');
  await page.fill('#f-rl-period', '10');
  await page.click('#save');
  await page.waitForSelector('.field-error[data-field="ratelimit"]:not(:empty)');
  const error = await page.textContent('.field-error[data-field="ratelimit"]');
  assert.match(error, /^ratelimit: no Rate Limiting binding RATE_LIMIT_7_PER_10/);
  assert.match(error, /100\/60s/);
  await shot(page, 'limits-03-local-tier-error');
  assert.equal((await session.kw.admin('GET', '/api_keys?name=Local%20tier')).body.data.length, 0, 'nothing saved');
  await page.fill('#f-rl-limit', '100');
  await page.fill('#f-rl-period', '60');
  await page.click('#save');
  await page.waitForSelector('#secret-dialog[open]');
  const key = await page.inputValue('#secret-value');
  await page.click('#secret-done');
  const id = (await session.kw.admin('GET', '/api_keys?name=Local%20tier')).body.data[0].id;
  assert.deepEqual((await session.kw.admin('GET', `/api_keys/${id}`)).body.data.ratelimit, { limit: 100, period_seconds: 60, mode: 'local' });
  assert.equal((await gate(key)).headers['ratelimit-policy'], '"key";q=100;w=60');
  await page.reload();
  await page.waitForSelector('#view-edit:not([hidden])');
  await page.waitForFunction(() => document.querySelector('#f-rl-mode').value === 'local');
  // Back to exact: the saved record no longer names a mode.
  await page.selectOption('#f-rl-mode', 'exact');
  await page.click('#save');
  await page.waitForFunction(() => !document.querySelector('#edit-ok').hidden);
  assert.deepEqual((await session.kw.admin('GET', `/api_keys/${id}`)).body.data.ratelimit, { limit: 100, period_seconds: 60 });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
