// The console's side of browsers as clients, in real Chromium: the policy's CORS settings shown
// and edited (with errors next to their field), a key's origin_allowlist on the key form, and the
// playground deciding with an Origin and showing the CORS outcome, in agreement with the edge.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { consoleSession, newPage, shot, signIn } from './support.mjs';

const session = consoleSession();

test('the policy view shows the rules and edits the CORS settings, errors next to their field', async () => {
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.click('[data-nav="policy"]');
  await page.waitForSelector('#view-policy:not([hidden])');
  await page.waitForFunction(() => document.querySelectorAll('#rules-body tr').length > 10);
  assert.match(await page.textContent('#policy-summary'), /CORS off/);
  assert.equal(await page.isChecked('#c-on'), false);
  assert.equal(await page.isDisabled('#c-origins'), true);

  await page.check('#c-on');
  await page.fill('#c-origins', 'https://app.example.com\napp.example.com');
  await page.fill('#c-max-age', '600');
  await page.click('#c-save');
  await page.waitForSelector('[data-field-container="allowed_origins"].invalid');
  assert.match(await page.textContent('.field-error[data-field="allowed_origins"]'), /^cors\.allowed_origins\[1\]: /);
  assert.equal((await session.kw.admin('GET', '/policy')).body.data.cors, undefined, 'nothing was saved');

  await page.fill('#c-origins', 'https://app.example.com\nhttps://*.example.org');
  await page.fill('#c-max-age', '90000');
  await page.click('#c-save');
  await page.waitForSelector('[data-field-container="max_age"].invalid');
  assert.match(await page.textContent('.field-error[data-field="max_age"]'), /^cors\.max_age: /);

  await page.fill('#c-max-age', '600');
  await page.fill('#c-expose-headers', 'X-Trace-Id');
  await page.click('#c-save');
  await page.waitForSelector('#policy-ok:not([hidden])');
  assert.match(await page.textContent('#policy-summary'), /CORS on/);
  const stored = (await session.kw.admin('GET', '/policy')).body.data;
  assert.deepEqual(stored.cors, { allowed_origins: ['https://app.example.com', 'https://*.example.org'], expose_headers: ['X-Trace-Id'], max_age: 600 });
  assert.ok(stored.rules.length > 10, 'the rules are kept');
  // What the console saved is what the edge does.
  const pre = await session.kw.request('OPTIONS', '/api/v2/projects/1/users', { headers: { origin: 'https://shop.example.org', 'access-control-request-method': 'GET' } });
  assert.equal(pre.status, 204);
  await shot(page, 'policy-cors');

  // Reloaded, the form shows what is stored.
  await page.reload();
  await page.waitForFunction(() => document.querySelector('#c-origins').value.includes('*.example.org'));
  assert.equal(await page.isChecked('#c-on'), true);
  assert.equal(await page.inputValue('#c-max-age'), '600');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the key form edits origin_allowlist, and the playground decides with an Origin', async () => {
  const policy = (await session.kw.admin('GET', '/policy')).body.data;
  assert.ok(policy.cors, 'the previous test turned CORS on');
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.goto(`${session.kw.url}/_keyward/console/#/keys/new`);
  await page.waitForSelector('#view-edit:not([hidden])');
  await page.fill('#f-name', 'web app key');
  await page.check('[data-permission="users:read"]');
  await page.fill('#f-origins', 'https://app.example.com\nhttps://*.com');
  await page.click('#save');
  await page.waitForSelector('[data-field-container="origin_allowlist"].invalid');
  assert.match(await page.textContent('.field-error[data-field="origin_allowlist"]'), /^origin_allowlist\[1\]: /);
  await page.fill('#f-origins', 'https://app.example.com\nhttps://*.example.org');
  await page.click('#save');
  await page.waitForSelector('#secret-dialog[open]');
  const key = await page.inputValue('#secret-value');
  await page.click('#secret-done');
  await page.waitForFunction(() => location.hash.startsWith('#/keys/key_'));
  const id = decodeURIComponent((await page.evaluate(() => location.hash)).split('/')[2]);
  await page.waitForFunction(() => document.querySelector('#f-origins').value.includes('*.example.org'));
  assert.deepEqual((await session.kw.admin('GET', `/api_keys/${id}`)).body.data.origin_allowlist, ['https://app.example.com', 'https://*.example.org']);

  await page.click('[data-nav="playground"]');
  await page.waitForSelector('#view-playground:not([hidden])');
  await page.waitForFunction((id) => [...document.querySelectorAll('#p-key option')].some((o) => o.value === id), id);
  await page.selectOption('#p-key', id);
  await page.waitForFunction((id) => document.querySelector('#p-record').value.includes(id), id);
  await page.fill('#p-path', '/api/v2/projects/1/users');
  await page.fill('#p-plain', key);

  // No Origin: a key bound to websites is refused.
  await page.waitForFunction(() => document.querySelector('#p-local').textContent.includes('ORIGIN_NOT_ALLOWED'));
  // A look-alike website: refused by the key, and no CORS grant for its page.
  await page.fill('#p-origin', 'https://app.example.com.evil.net');
  await page.waitForFunction(() => document.querySelector('#p-cors').textContent.includes('Preflight: 403 ORIGIN_NOT_ALLOWED'));
  assert.match(await page.textContent('#p-local'), /ORIGIN_NOT_ALLOWED/);
  await page.click('#p-ask');
  await page.waitForSelector('#p-agree.yes');
  assert.match(await page.textContent('#p-edge'), /ORIGIN_NOT_ALLOWED/);

  // The app's own website: allowed, and the page gets its CORS grant.
  await page.fill('#p-origin', 'https://app.example.com');
  await page.waitForSelector('#p-local.good');
  await page.waitForSelector('#p-cors.good');
  const cors = await page.textContent('#p-cors');
  assert.match(cors, /Preflight: 204/);
  assert.match(cors, /access-control-allow-origin: https:\/\/app\.example\.com/);
  assert.match(cors, /access-control-expose-headers: retry-after, ratelimit, ratelimit-policy, x-trace-id/);
  await page.click('#p-ask');
  await page.waitForSelector('#p-agree.yes');
  await shot(page, 'playground-cors');

  // Only a Referer, from a wildcard website: allowed too; a path no rule allows: no preflight grant.
  await page.fill('#p-origin', '');
  await page.fill('#p-referer', 'https://shop.example.org/cart');
  await page.waitForSelector('#p-local.good');
  await page.click('#p-ask');
  await page.waitForSelector('#p-agree.yes');
  await page.fill('#p-origin', 'https://shop.example.org');
  await page.fill('#p-path', '/nowhere');
  await page.waitForFunction(() => document.querySelector('#p-cors').textContent.includes('Preflight: 403 ROUTE_NOT_ALLOWED'));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
