// The playground and the known-answer vectors in real Chromium: the wasm core in the page must
// give every vector's expected decision, and agree with what the edge answers through /verify.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../support/keyward.mjs';
import { consoleSession, newPage, shot, signIn } from './support.mjs';

const session = consoleSession();

test('every known-answer vector, through the wasm core in the page', async () => {
  const dir = path.join(ROOT, 'tests/vectors');
  const defaultPolicy = JSON.parse(readFileSync(path.join(ROOT, 'config/default-policy.json'), 'utf8'));
  const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort()
    .map((f) => ({ file: f, ...JSON.parse(readFileSync(path.join(dir, f), 'utf8')) }));
  const page = await newPage(session.browser);
  await page.goto(`${session.kw.url}/_keyward/console/`);
  const result = await page.evaluate(async ({ files, defaultPolicy }) => {
    const core = await import('./pkg/keyward.js');
    await core.default();
    const wrong = [];
    let count = 0;
    for (const f of files) {
      const policy = f.policy === 'default' ? defaultPolicy : f.policy;
      for (const c of f.cases) {
        count += 1;
        const out = core.decide(c.record, policy, c.request, Date.parse(f.now));
        const d = out.decision;
        const e = c.expect;
        const ok = out.type === 'success' && d.valid === e.valid && d.code === e.code
          && (e.permission === undefined || d.permission === e.permission)
          && (e.rule === undefined || d.rule === e.rule);
        if (!ok) wrong.push(`${f.file}: ${c.name}: ${JSON.stringify(out)}`);
      }
    }
    return { count, wrong };
  }, { files, defaultPolicy });
  assert.ok(result.count >= 80, `${result.count} vectors`);
  assert.deepEqual(result.wrong, []);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the wasm core answers bad input as tagged data, never by throwing', async () => {
  const page = await newPage(session.browser);
  await page.goto(`${session.kw.url}/_keyward/console/`);
  const out = await page.evaluate(async () => {
    const core = await import('./pkg/keyward.js');
    await core.default();
    return {
      badRecord: core.decide({ name: 'x', ip_allowlist: ['10.0.0.0/33'] }, { rules: [] }, { method: 'GET', path: '/' }, 0),
      badPolicy: core.validatePolicy({ rules: [{ method: 'GET', path: 'nope', permission: 'a:b' }] }),
      notJson: core.decide(undefined, null, 7, 0),
      key: core.parseKey('kw_live_nope'),
      generated: core.generateKey('kw_test'),
    };
  });
  assert.equal(out.badRecord.type, 'failure');
  assert.equal(out.badRecord.errors[0].field, 'ip_allowlist[0]');
  assert.equal(out.badPolicy.type, 'failure');
  assert.equal(out.notJson.type, 'failure');
  assert.equal(out.key.type, 'failure');
  assert.equal(out.generated.type, 'success');
  assert.match(out.generated.key, /^kw_test_[0-9A-Za-z]{38}$/);
  await page.context().close();
});

test('the playground decides in the page and agrees with the edge', async () => {
  const created = await session.kw.admin('POST', '/api_keys', { api_key: { name: 'playground key', permissions: ['users:read'], ip_allowlist: ['203.0.113.0/24'] } });
  const { id, api_key: key } = created.body.data;
  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.click('[data-nav="playground"]');
  await page.waitForSelector('#view-playground:not([hidden])');
  await page.waitForFunction((id) => [...document.querySelectorAll('#p-key option')].some((o) => o.value === id), id);
  await page.selectOption('#p-key', id);
  await page.waitForFunction((id) => document.querySelector('#p-record').value.includes(id), id);
  await page.fill('#p-path', '/api/v2/projects/1/users');
  await page.fill('#p-ip', '203.0.113.7');
  await page.waitForSelector('#p-local.good');
  assert.match(await page.textContent('#p-local'), /VALID/);
  assert.match(await page.textContent('#p-local'), /users:read/);
  await page.fill('#p-plain', key);
  await page.click('#p-ask');
  await page.waitForSelector('#p-agree.yes');
  await shot(page, '07-playground-agree');

  // Denied in the page, denied at the edge, for the same reason.
  await page.selectOption('#p-method', 'DELETE');
  await page.fill('#p-path', '/api/v2/projects/1');
  await page.waitForSelector('#p-local.bad');
  assert.match(await page.textContent('#p-local'), /PERMISSION_DENIED/);
  await page.click('#p-ask');
  await page.waitForSelector('#p-agree.yes');
  await page.fill('#p-ip', '198.51.100.1');
  await page.waitForFunction(() => document.querySelector('#p-local').textContent.includes('IP_NOT_ALLOWED'));
  await page.click('#p-ask');
  await page.waitForSelector('#p-agree.yes');
  assert.match(await page.textContent('#p-edge'), /IP_NOT_ALLOWED/);

  // A record that differs from the stored one: the page says they disagree.
  const record = JSON.parse(await page.inputValue('#p-record'));
  record.ip_allowlist = [];
  record.permissions = ['*'];
  await page.fill('#p-record', JSON.stringify(record));
  await page.waitForSelector('#p-local.good');
  await page.click('#p-ask');
  await page.waitForSelector('#p-agree.no');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
