// The console's tokens card in real headless Chromium against the built Worker under `wrangler
// dev`: a saved key shows it; "Revoke its tokens" refuses the tokens made until then (and only
// them); "Rotate the signing key" makes new tokens carry the next kid; a profile key's simple
// authentication is turned on from the form and its salt shown. And the token known-answer
// vectors (tests/vectors/tokens/verify.json) through the wasm core in the page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../support/keyward.mjs';
import { consoleSession, newPage, shot, signIn } from './support.mjs';

const session = consoleSession();

const USERS = '/api/v2/projects/1/users';
const login = async (key) => (await session.kw.request('POST', '/_keyward/v1/auth/token', { headers: { 'x-api-key': key } })).body.data.token;
const use = (token, p = USERS) => session.kw.request('GET', p, { headers: { authorization: `Bearer ${token}` } });
const kidOf = (token) => JSON.parse(Buffer.from(token.split('.')[0], 'base64url')).kid;

test('the tokens card: revoke a key\'s tokens, rotate the signing key, turn simple authentication on', async () => {
  const made = await session.kw.admin('POST', '/api_keys', { api_key: { name: 'Tokened', permissions: ['users:read'] } });
  const { api_key: key, id } = made.body.data;
  const before = await login(key);
  assert.equal((await use(before)).status, 200);

  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  await page.goto(`${session.kw.url}/_keyward/console/#/keys/${id}`);
  await page.waitForSelector('#view-edit:not([hidden]) #tokens-card:not([hidden])');
  assert.equal(await page.getAttribute('#tokens-jwks', 'href'), '/_keyward/jwks.json');
  assert.equal(await page.textContent('#tokens-since'), '');
  assert.equal(await page.isHidden('#tokens-salt-line'), true);

  await page.click('#tokens-revoke');
  await page.waitForSelector('#confirm-dialog[open]');
  await page.click('#confirm-ok');
  await page.waitForFunction(() => /refused/.test(document.querySelector('#edit-ok').textContent));
  await page.waitForFunction(() => /Tokens issued before/.test(document.querySelector('#tokens-since').textContent));
  assert.equal((await use(before)).body.error_code, 'TOKEN_INVALID');
  const after = await login(key);
  assert.equal((await use(after)).status, 200, 'a token made afterwards works');
  await shot(page, 'tokens-01-card');

  const next = (await session.kw.request('GET', '/_keyward/jwks.json')).body.keys[1].kid;
  await page.click('#tokens-rotate');
  await page.waitForSelector('#confirm-dialog[open]');
  await page.click('#confirm-ok');
  await page.waitForFunction((kid) => document.querySelector('#edit-ok').textContent.includes(kid), next);
  assert.equal(kidOf(await login(key)), next);
  assert.equal((await use(after)).status, 200, 'a token signed before the rotation stays valid');

  // Simple authentication, from the form of a profile key.
  const profile = await session.kw.admin('POST', '/api_keys', { api_key: { name: 'App', type: 'profile', profile_id: 'p-7', permissions: ['profiles:read'] } });
  await page.goto(`${session.kw.url}/_keyward/console/#/keys/${profile.body.data.id}`);
  await page.waitForSelector('#view-edit:not([hidden]) #tokens-card:not([hidden])');
  await page.waitForFunction(() => document.querySelector('#f-name').value === 'App');
  assert.equal(await page.isChecked('#f-simple-auth'), false);
  await page.check('#f-simple-auth');
  await page.click('#save');
  await page.waitForSelector('#tokens-salt-line:not([hidden])');
  const salt = await page.textContent('#tokens-salt');
  assert.match(salt, /^[0-9a-f]{64}$/);
  assert.equal((await session.kw.admin('GET', `/api_keys/${profile.body.data.id}`)).body.data.simple_auth_salt, salt);
  assert.deepEqual(page.errors, []);
});

test('every token known-answer vector, through the wasm core in the page', async () => {
  const vectors = JSON.parse(readFileSync(path.join(ROOT, 'tests/vectors/tokens/verify.json'), 'utf8'));
  const page = await newPage(session.browser);
  await page.goto(`${session.kw.url}/_keyward/console/`);
  const result = await page.evaluate(async (file) => {
    const core = await import('./pkg/keyward.js');
    await core.default();
    const wrong = [];
    for (const c of file.cases) {
      const out = core.verifyToken(c.token, file.jwks, file.issuer, c.now_ms);
      const ok = out.type === 'success' && out.code === c.code
        && (c.code !== 'VALID' || (out.claims.sub === c.sub && (out.claims.profile ?? undefined) === (c.profile ?? undefined)));
      if (!ok) wrong.push(`${c.name}: ${JSON.stringify(out)}`);
    }
    return { count: file.cases.length, wrong };
  }, vectors);
  assert.ok(result.count >= 20, `${result.count} vectors`);
  assert.deepEqual(result.wrong, []);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
