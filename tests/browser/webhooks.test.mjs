// The console's Webhooks page, in headless Chromium against the built Worker under `wrangler dev`,
// with real receivers on loopback that verify every delivery with the Standard Webhooks reference
// library (npm standardwebhooks) and the secret the page showed: create an endpoint (errors under
// their field, the secret shown once), see a key's event in the delivery log with its HTTP status,
// edit and delete it; a failing receiver's attempts are logged and Redeliver sends the event again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startReceiver } from '../support/receiver.mjs';
import { consoleSession, newPage, shot, signIn } from './support.mjs';

// Retries every 200 ms, given up 2 s after the event: a failing receiver's event is `failed` quickly.
const session = consoleSession({ vars: { WEBHOOK_RETRY_SCHEDULE_MS: '200', WEBHOOK_RETRY_WINDOW_MS: '2000' } });
const admin = (...args) => session.kw.admin(...args);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function ok(promise, status = 200) {
  const r = await promise;
  assert.equal(r.status, status, r.text);
  return r.body.data;
}

/** Clicks Refresh until the delivery log has a row matching `check` (row text). */
async function waitForLog(page, msg, pattern, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const texts = await page.$$eval(`#deliveries-body tr[data-msg="${msg}"]`, (rows) => rows.map((r) => r.textContent));
    if (texts.some((t) => pattern.test(t))) return texts;
    if (Date.now() > deadline) throw new Error(`the log of ${msg} never showed ${pattern}: ${JSON.stringify(texts)}`);
    await sleep(250);
    await page.click('#deliveries-refresh');
  }
}

test('create an endpoint (errors under their field, the secret shown once verifies the deliveries), see a key event delivered with 200 in the log, edit and delete it', async () => {
  const receiver = await startReceiver({ status: 200 });
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.click('[data-nav="webhooks"]');
  await page.waitForSelector('#view-webhooks:not([hidden])');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'main');
  assert.equal(await page.getAttribute('[data-nav="webhooks"]', 'aria-current'), 'page');
  assert.equal(await page.textContent('#view-webhooks h1'), 'Webhooks');
  await page.waitForSelector('#webhooks-empty:not([hidden])');
  // A bad URL: named under the URL field; no event chosen: named under the events.
  await page.fill('#wh-url', 'ftp://example.com/x');
  await page.check('[data-event="key.created"]');
  await page.click('#wh-save');
  await page.waitForSelector('[data-wh-error="url"]:not(:empty)');
  assert.match(await page.textContent('[data-wh-error="url"]'), /^url: must be an http:\/\/ or https:\/\/ URL/);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'wh-url');
  await page.fill('#wh-url', receiver.url);
  await page.uncheck('[data-event="key.created"]');
  await page.click('#wh-save');
  await page.waitForSelector('[data-wh-error="events"]:not(:empty)');
  assert.match(await page.textContent('[data-wh-error="events"]'), /^events: must be a non-empty array/);
  assert.equal(await page.textContent('[data-wh-error="url"]'), '');
  assert.deepEqual(await ok(admin('GET', '/webhooks')), []);
  // Keyboard only: the checkboxes and Save are reached and used with the keyboard.
  await page.focus('[data-event="key.created"]');
  await page.keyboard.press('Space');
  await page.focus('[data-event="key.revoked"]');
  await page.keyboard.press('Space');
  await page.focus('#wh-save');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#wh-secret:not([hidden])');
  const secret = await page.inputValue('#wh-secret-value');
  assert.match(secret, /^whsec_[A-Za-z0-9+/=]{32}$/);
  assert.match(await page.textContent('#wh-secret'), /will not be shown again/);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'wh-secret-value');
  await page.click('#wh-secret-copy');
  await page.waitForFunction(() => document.querySelector('#wh-secret-copied').textContent !== '');
  assert.equal(await page.textContent('#wh-secret-copied'), 'Copied to the clipboard.');
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  receiver.secret = secret;
  const [hook] = await ok(admin('GET', '/webhooks'));
  assert.deepEqual([hook.url, hook.events], [receiver.url, ['key.created', 'key.revoked']]);
  assert.equal(hook.secret, undefined);
  await page.waitForSelector(`#webhooks-body tr[data-id="${hook.id}"]`);
  assert.match(await page.textContent(`#webhooks-body tr[data-id="${hook.id}"]`), /key\.created, key\.revoked/);
  assert.equal(await page.isVisible('#webhook-deliveries'), true);
  await page.waitForSelector('#deliveries-empty:not([hidden])');
  // A key event: created through the API, delivered, verified with the secret the page showed.
  const key = await ok(admin('POST', '/api_keys', { api_key: { name: 'hooked' } }), 201);
  const deadline = Date.now() + 10_000;
  while (!receiver.verified.length && Date.now() < deadline) await sleep(50);
  assert.deepEqual(receiver.errors, []);
  assert.equal(receiver.verified.length, 1);
  const delivered = receiver.verified[0];
  assert.equal(delivered.event.type, 'key.created');
  assert.equal(delivered.event.data.id, key.id);
  const rows = await waitForLog(page, delivered.id, /HTTP 200/);
  assert.equal(rows.length, 1);
  assert.match(rows[0], /^key\.created/);
  assert.match(rows[0], new RegExp(`${delivered.id}\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d UTCHTTP 200deliveredRedeliver$`));
  // Pressing "I have stored it" clears the secret for good.
  await shot(page, '60-webhooks-page');
  await page.click('#wh-secret-done');
  assert.equal(await page.isVisible('#wh-secret'), false);
  assert.equal(await page.inputValue('#wh-secret-value'), '');
  // Edit: the events and the URL.
  assert.equal(await page.textContent('#webhook-form-title'), `Edit ${receiver.url}`);
  await page.uncheck('[data-event="key.revoked"]');
  await page.check('[data-event="key.deleted"]');
  await page.fill('#wh-url', `${receiver.url}?v=2`);
  await page.click('#wh-save');
  await page.waitForFunction((u) => document.querySelector('#webhook-form-title').textContent === `Edit ${u}`, `${receiver.url}?v=2`);
  const edited = await ok(admin('GET', `/webhooks/${hook.id}`));
  assert.deepEqual([edited.url, edited.events], [`${receiver.url}?v=2`, ['key.created', 'key.deleted']]);
  assert.equal(await page.isVisible('#wh-secret'), false);
  // An edit refused: the message under its field, nothing changed.
  await page.fill('#wh-url', 'not a url');
  await page.click('#wh-save');
  await page.waitForSelector('[data-wh-error="url"]:not(:empty)');
  assert.equal((await ok(admin('GET', `/webhooks/${hook.id}`))).url, `${receiver.url}?v=2`);
  // Delete: cancelled, then confirmed.
  await page.click('#wh-delete');
  await page.waitForSelector('#confirm-dialog[open]');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'confirm-cancel');
  await page.click('#confirm-cancel');
  await ok(admin('GET', `/webhooks/${hook.id}`));
  await page.click('#wh-delete');
  await page.waitForSelector('#confirm-dialog[open]');
  await page.click('#confirm-ok');
  await page.waitForSelector('#webhooks-empty:not([hidden])');
  assert.equal((await admin('GET', `/webhooks/${hook.id}`)).status, 404);
  assert.equal(await page.isVisible('#webhook-deliveries'), false);
  assert.deepEqual(page.errors, []);
  await page.context().close();
  await receiver.stop();
});

test('a failing receiver: each attempt is logged with its status, the event is given up, and Redeliver sends it again', async () => {
  const receiver = await startReceiver({ status: 500 });
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.goto(`${session.kw.url}/_keyward/console/#/webhooks`);
  // Typed at once, while the list may still be loading: kept.
  await page.waitForSelector('#view-webhooks:not([hidden])');
  await page.fill('#wh-url', receiver.url);
  await page.check('[data-event="key.updated"]');
  await page.click('#wh-save');
  await page.waitForSelector('#wh-secret:not([hidden])');
  receiver.secret = await page.inputValue('#wh-secret-value');
  await page.click('#wh-secret-done');
  const key = await ok(admin('POST', '/api_keys', { api_key: { name: 'flaky' } }), 201);
  await ok(admin('PUT', `/api_keys/${key.id}`, { api_key: { name: 'flaky two' } }));
  let deadline = Date.now() + 10_000;
  while (receiver.all.length < 2 && Date.now() < deadline) await sleep(50);
  const msg = receiver.all[0].id;
  // Given up after the retry window: every attempt answered 500, the event `failed`.
  const failedRows = await waitForLog(page, msg, /HTTP 500failedRedeliver$/);
  assert.ok(failedRows.length >= 2, JSON.stringify(failedRows));
  for (const row of failedRows) assert.match(row, /^key\.updated.*HTTP 500/);
  const before = receiver.all.length;
  assert.ok(before >= 2);
  assert.equal(await page.$$eval(`#deliveries-body button.redeliver[data-msg="${msg}"]`, (b) => b.length), 1);
  await shot(page, '61-webhooks-failed-delivery');
  // The receiver recovers; Redeliver (by keyboard) sends the same event again.
  receiver.status = 200;
  await page.focus(`#deliveries-body button.redeliver[data-msg="${msg}"]`);
  await page.keyboard.press('Enter');
  await page.waitForFunction((m) => document.querySelector('#deliveries-status').textContent === `${m} is queued again.`, msg);
  const rows = await waitForLog(page, msg, /HTTP 200/);
  assert.match(rows[0], /HTTP 200deliveredRedeliver$/);
  deadline = Date.now() + 5_000;
  while (!receiver.verified.some((d) => d.status === 200) && Date.now() < deadline) await sleep(50);
  const redelivered = receiver.verified.filter((d) => d.status === 200);
  assert.equal(redelivered.length, 1);
  assert.equal(redelivered[0].id, msg);
  assert.equal(redelivered[0].event.type, 'key.updated');
  assert.equal(redelivered[0].event.data.name, 'flaky two');
  assert.deepEqual(receiver.errors, []);
  await shot(page, '62-webhooks-redelivered');
  assert.deepEqual(page.errors, []);
  await page.context().close();
  await receiver.stop();
});
