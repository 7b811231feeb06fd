// The management API end to end against the built Worker under `wrangler dev`: CRUD, listing and
// paging, the lifecycle, management keys, verify and ping, and every kind of bad input, each
// checked to leave the stored record as it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keywardForFile } from '../support/per-file.mjs';
import { call } from '../support/keyward.mjs';
import { makeKey } from '../support/keys.mjs';

const { origin, kw } = keywardForFile();

const USERS = '/api/v2/projects/1/users';

function assertEnvelope(r) {
  assert.match(r.headers['content-type'] ?? '', /^application\/json/, r.text);
  assert.deepEqual(Object.keys(r.body).filter((k) => ['success', 'data', 'error_code', 'error_message'].includes(k)).sort(),
    ['data', 'error_code', 'error_message', 'success'], r.text);
  if (r.body.success) {
    assert.equal(r.body.error_code, null);
    assert.equal(r.body.error_message, null);
  } else {
    assert.equal(r.body.data, null);
    assert.equal(typeof r.body.error_code, 'string');
    assert.ok(r.body.error_message.length > 0);
  }
}

function refused(r, status, code, field) {
  assertEnvelope(r);
  assert.equal(r.status, status, r.text);
  assert.equal(r.body.error_code, code, r.text);
  if (field) assert.match(r.body.error_message, new RegExp(`^${field.replace(/[[\]]/g, '\\$&')}`), r.text);
}

async function create(attributes = {}) {
  const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'mgmt', permissions: ['users:read'], ...attributes } });
  assertEnvelope(r);
  assert.equal(r.status, 201, r.text);
  return r.body.data;
}

const get = async (id) => (await kw.admin('GET', `/api_keys/${id}`)).body.data;

test('create returns the plaintext once, with defaults and a time-ordered id', async () => {
  const data = await create({ name: 'Billing export', description: 'nightly', metadata: { team: 'billing' } });
  assert.match(data.api_key, /^kw_live_[0-9A-Za-z]{38}$/);
  assert.match(data.id, /^key_[0-9A-HJKMNP-TV-Z]{26}$/);
  assert.equal(data.key_preview, `kw_live_...${data.api_key.slice(-4)}`);
  assert.equal(data.name, 'Billing export');
  assert.equal(data.type, 'workspace');
  assert.equal(data.role, 'organization_admin');
  assert.equal(data.status, 'active');
  assert.equal(data.active, true);
  assert.equal(data.version, 1);
  assert.deepEqual(data.metadata, { team: 'billing' });
  assert.ok(!Number.isNaN(Date.parse(data.created_at)));
  const again = await kw.admin('GET', `/api_keys/${data.id}`);
  assertEnvelope(again);
  assert.equal(again.body.data.api_key, undefined, 'never shown again');
  assert.ok(!again.text.includes(data.api_key));
  // The key works at the gate straight away.
  assert.equal((await kw.request('GET', USERS, { headers: { authorization: `Bearer ${data.api_key}` } })).status, 200);
});

test('every field rule of a key record is a 400 naming the field', async () => {
  const cases = [
    [{ permissions: [] }, 'name'],
    [{ name: '' }, 'name'],
    [{ name: 'x'.repeat(101) }, 'name'],
    [{ name: 7 }, 'name'],
    [{ name: 'ok', description: 'x'.repeat(501) }, 'description'],
    [{ name: 'ok', description: 5 }, 'description'],
    [{ name: 'ok', type: 'team' }, 'type'],
    [{ name: 'ok', type: 'profile' }, 'profile_id'],
    [{ name: 'ok', role: 3 }, 'role'],
    [{ name: 'ok', workspace: ['w'] }, 'workspace'],
    [{ name: 'ok', permissions: 'users:read' }, 'permissions'],
    [{ name: 'ok', permissions: ['users'] }, 'permissions[0]'],
    [{ name: 'ok', permissions: ['users:read', 'a b:c'] }, 'permissions[1]'],
    [{ name: 'ok', event_allowlist: [1] }, 'event_allowlist[0]'],
    [{ name: 'ok', event_denylist: 'purchase' }, 'event_denylist'],
    [{ name: 'ok', ip_allowlist: ['10.0.0.0/33'] }, 'ip_allowlist[0]'],
    [{ name: 'ok', ip_allowlist: ['1.2.3.4', '01.2.3.4'] }, 'ip_allowlist[1]'],
    [{ name: 'ok', ip_allowlist: ['2001:db8::/129'] }, 'ip_allowlist[0]'],
    [{ name: 'ok', ip_allowlist: ['not an ip'] }, 'ip_allowlist[0]'],
    [{ name: 'ok', attribute_allowlist: 'email' }, 'attribute_allowlist'],
    [{ name: 'ok', active: 'yes' }, 'active'],
    [{ name: 'ok', expires_at: 'tomorrow' }, 'expires_at'],
    [{ name: 'ok', expires_at: '2026-13-01T00:00:00Z' }, 'expires_at'],
    [{ name: 'ok', metadata: 'x' }, 'metadata'],
    [{ name: 'ok', metadata: { blob: 'x'.repeat(1100) } }, 'metadata'],
    [{ name: 'ok', colour: 'red' }, 'colour'],
    [{ name: 'ok', id: 'key_01ARZ3NDEKTSV4RRFFQ69G5FAV' }, 'id'],
    [{ name: 'ok', status: 'revoked' }, 'status'],
    [{ name: 'ok', created_at: '2020-01-01T00:00:00Z' }, 'created_at'],
  ];
  const before = (await kw.admin('GET', '/api_keys?per_page=500')).body.num_records;
  for (const [attributes, field] of cases) {
    refused(await kw.admin('POST', '/api_keys', { api_key: attributes }), 400, 'BAD_REQUEST', field);
  }
  assert.equal((await kw.admin('GET', '/api_keys?per_page=500')).body.num_records, before, 'nothing was created');
});

test('bad bodies: not JSON, not an object, no wrapper, extra fields, too large', async () => {
  const cases = [
    ['{"api_key": {"name": "x"', 'body'],
    ['', 'body'],
    ['[]', 'body'],
    ['"text"', 'body'],
    [JSON.stringify({ name: 'x' }), 'name'],
    [JSON.stringify({ api_key: 'x' }), 'api_key'],
    [JSON.stringify({ api_key: { name: 'x' }, extra: 1 }), 'extra'],
    [JSON.stringify({ api_key: { name: 'x', metadata: { pad: 'x'.repeat(1024 * 1024) } } }), 'body'],
  ];
  for (const [body, field] of cases) {
    refused(await kw.admin('POST', '/api_keys', body), 400, 'BAD_REQUEST', field);
  }
});

test('partial update changes only what is sent; a refused update changes nothing', async () => {
  const k = await create({ name: 'partial', description: 'first', permissions: ['users:read'], ip_allowlist: ['10.0.0.0/8'] });
  const r = await kw.admin('PUT', `/api_keys/${k.id}`, { api_key: { description: 'second' } });
  assertEnvelope(r);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.data.description, 'second');
  assert.equal(r.body.data.name, 'partial');
  assert.deepEqual(r.body.data.ip_allowlist, ['10.0.0.0/8']);
  assert.equal(r.body.data.version, 2);
  const stored = await get(k.id);
  for (const [attributes, field] of [
    [{ name: '' }, 'name'],
    [{ description: 'changed', ip_allowlist: ['10.0.0.0/8', '300.1.1.1'] }, 'ip_allowlist[1]'],
    [{ permissions: ['*'], metadata: [] }, 'metadata'],
    [{ version: 9 }, 'version'],
    [{ unknown: true }, 'unknown'],
  ]) {
    refused(await kw.admin('PUT', `/api_keys/${k.id}`, { api_key: attributes }), 400, 'BAD_REQUEST', field);
    assert.deepEqual(await get(k.id), stored, 'the stored record is unchanged');
  }
  // Clearing an attribute allowlist (null) is different from an empty one ([]).
  assert.equal((await kw.admin('PUT', `/api_keys/${k.id}`, { api_key: { attribute_allowlist: [] } })).body.data.attribute_allowlist.length, 0);
  assert.equal((await kw.admin('PUT', `/api_keys/${k.id}`, { api_key: { attribute_allowlist: null } })).body.data.attribute_allowlist, null);
});

test('unknown ids are 404, ids of another shape 400', async () => {
  const unknown = 'key_01ARZ3NDEKTSV4RRFFQ69G5FAV';
  refused(await kw.admin('GET', `/api_keys/${unknown}`), 404, 'NOT_FOUND');
  refused(await kw.admin('PUT', `/api_keys/${unknown}`, { api_key: { name: 'x' } }), 404, 'NOT_FOUND');
  refused(await kw.admin('DELETE', `/api_keys/${unknown}`), 404, 'NOT_FOUND');
  refused(await kw.admin('POST', `/api_keys/${unknown}/revoke`), 404, 'NOT_FOUND');
  refused(await kw.admin('POST', `/api_keys/${unknown}/roll`, { grace_seconds: 0 }), 404, 'NOT_FOUND');
  for (const bad of ['42', 'key_short', 'KEY_01ARZ3NDEKTSV4RRFFQ69G5FAV', 'key_01ARZ3NDEKTSV4RRFFQ69G5FAU!']) {
    refused(await kw.admin('GET', `/api_keys/${encodeURIComponent(bad)}`), 400, 'BAD_REQUEST', 'id');
  }
});

test('list: sorted by id, filters are case-insensitive, page and per_page', async () => {
  const tag = `Zeta${Date.now()}`;
  const made = [];
  for (const n of ['Alpha', 'alphabet', 'Beta', 'ALPHA']) made.push(await create({ name: `${tag} ${n}` }));
  let r = await kw.admin('GET', `/api_keys?name_contains=${encodeURIComponent(tag.toLowerCase() + ' alpha')}`);
  assertEnvelope(r);
  assert.deepEqual(r.body.data.map((k) => k.id), [made[0].id, made[1].id, made[3].id]);
  assert.equal(r.body.num_records, 3);
  r = await kw.admin('GET', `/api_keys?name=${encodeURIComponent(`${tag} alpha`.toUpperCase())}`);
  assert.deepEqual(r.body.data.map((k) => k.id), [made[0].id, made[3].id]);
  r = await kw.admin('GET', `/api_keys?name_contains=${tag}&per_page=3&page=1`);
  assert.deepEqual(r.body.data.map((k) => k.id), [made[3].id]);
  assert.equal(r.body.page, 1);
  assert.equal(r.body.per_page, 3);
  assert.equal(r.body.num_records, 4);
  assert.equal(r.body.num_pages, 2);
  assert.equal(r.body.next_page_token, null);
  // A page past the last one is empty and says which page it is; it is not moved to the last.
  r = await kw.admin('GET', `/api_keys?name_contains=${tag}&per_page=3&page=7`);
  assertEnvelope(r);
  assert.deepEqual(r.body.data, []);
  assert.equal(r.body.page, 7);
  assert.equal(r.body.num_pages, 2);
  r = await kw.admin('GET', '/api_keys');
  const ids = r.body.data.map((k) => k.id);
  assert.deepEqual(ids, [...ids].sort(), 'sorted by id');
  assert.equal(r.body.per_page, 100);
  for (const k of r.body.data) assert.equal(k.api_key, undefined);
});

test('list: a parameter\'s name may be percent-encoded as its value may; an unknown one is named decoded', async () => {
  const tag = `Encoded${Date.now()}`;
  for (const n of ['a', 'b']) await create({ name: `${tag} ${n}` });
  const r = await kw.admin('GET', `/api_keys?name%5Fcontains=${tag}&per%5Fpage=1`);
  assert.equal(r.status, 200, r.text);
  assertEnvelope(r);
  assert.equal(r.body.per_page, 1);
  assert.equal(r.body.num_records, 2);
  assert.equal(r.body.data.length, 1);
  const unknown = await kw.admin('GET', '/api_keys?page%5Bsize%5D=1');
  assert.equal(unknown.status, 400, unknown.text);
  assert.equal(unknown.body.error_code, 'BAD_REQUEST');
  assert.equal(unknown.body.error_message, 'page[size]: is not a list parameter');
  const bad = await kw.admin('GET', '/api_keys?per_page=%zz');
  assert.equal(bad.status, 400, bad.text);
  assert.equal(bad.body.error_message, 'per_page: is not valid percent-encoding');
});

test('a host name in punycode (an international domain) is served: the Worker parses its URL', async () => {
  const host = { host: 'xn--bcher-kva.example' };
  const listed = await call(kw.url, 'GET', '/_keyward/v1/api_keys?per_page=1', undefined, { authorization: `Bearer ${kw.adminToken}`, ...host });
  assert.equal(listed.status, 200, listed.text);
  assertEnvelope(listed);
  // The console's redirect is built from the request's URL: the host reached the Worker.
  const redirect = await call(kw.url, 'GET', '/_keyward/console', undefined, host);
  assert.equal(redirect.status, 302);
  assert.equal(redirect.headers.location, 'http://xn--bcher-kva.example/_keyward/console/');
});

test('the console\'s files: index.html at /_keyward/console/, its scripts beside it, and a clear 404 for a file it does not have', async () => {
  const page = await kw.request('GET', '/_keyward/console/');
  assert.equal(page.status, 200);
  assert.match(page.headers['content-type'], /^text\/html/);
  assert.match(page.text, /<main id="main"/);
  const script = await kw.request('GET', '/_keyward/console/app.js?v=1');
  assert.equal(script.status, 200);
  assert.match(script.headers['content-type'], /javascript/);
  const missing = await kw.request('GET', '/_keyward/console/nope.js');
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error_code, 'NOT_FOUND');
  assert.equal(missing.body.error_message, 'no such console file');
});

test('list: page_token pages are contiguous and never overlap while keys come and go', async () => {
  const tag = `Paging${Date.now()}`;
  const ids = [];
  for (let i = 0; i < 7; i++) ids.push((await create({ name: `${tag} ${i}` })).id);
  const seen = [];
  let r = await kw.admin('GET', `/api_keys?name_contains=${tag}&per_page=3`);
  seen.push(...r.body.data.map((k) => k.id));
  assert.equal(r.body.page_token, null);
  assert.ok(r.body.next_page_token);
  // Between calls: delete a key already seen (expire first), and add a new one at the end.
  await kw.admin('PUT', `/api_keys/${ids[0]}`, { api_key: { active: false } });
  assert.equal((await kw.admin('DELETE', `/api_keys/${ids[0]}`)).status, 200);
  const added = (await create({ name: `${tag} late` })).id;
  const token = r.body.next_page_token;
  r = await kw.admin('GET', `/api_keys?name_contains=${tag}&per_page=3&page_token=${encodeURIComponent(token)}`);
  assert.equal(r.body.page_token, token);
  seen.push(...r.body.data.map((k) => k.id));
  while (r.body.next_page_token) {
    r = await kw.admin('GET', `/api_keys?name_contains=${tag}&per_page=3&page_token=${encodeURIComponent(r.body.next_page_token)}`);
    seen.push(...r.body.data.map((k) => k.id));
  }
  assert.deepEqual(seen, [...ids, added], 'every key once, in order, with the late one at the end');
  assert.equal(new Set(seen).size, seen.length);
});

test('list: bad parameters are 400 with a message, never clamped', async () => {
  for (const [query, field] of [
    ['page=0&page_token=abc', 'page_token'],
    ['per_page=0', 'per_page'],
    ['per_page=501', 'per_page'],
    ['per_page=ten', 'per_page'],
    ['page=-1', 'page'],
    ['page=1.5', 'page'],
    ['page_token=not-a-token', 'page_token'],
    ['sort=name', 'sort'],
    ['name=%ZZ', 'name'],
  ]) {
    refused(await kw.admin('GET', `/api_keys?${query}`), 400, 'BAD_REQUEST', field);
  }
});

test('lifecycle: expire, reactivate, revoke (final), delete only when not active', async () => {
  const k = await create();
  const auth = { authorization: `Bearer ${k.api_key}` };
  refused(await kw.admin('DELETE', `/api_keys/${k.id}`), 409, 'KEY_ACTIVE');
  assert.equal((await get(k.id)).status, 'active');

  let r = await kw.admin('PUT', `/api_keys/${k.id}`, { api_key: { active: false } });
  assert.equal(r.body.data.status, 'expired');
  refused(await kw.request('GET', USERS, { headers: auth }), 401, 'KEY_EXPIRED');
  r = await kw.admin('PUT', `/api_keys/${k.id}`, { api_key: { active: true } });
  assert.equal(r.body.data.status, 'active');
  assert.equal((await kw.request('GET', USERS, { headers: auth })).status, 200);

  r = await kw.admin('POST', `/api_keys/${k.id}/revoke`);
  assertEnvelope(r);
  assert.equal(r.status, 200);
  assert.equal(r.body.data.status, 'revoked');
  assert.ok(r.body.data.revoked_at);
  refused(await kw.request('GET', USERS, { headers: auth }), 401, 'KEY_REVOKED');
  refused(await kw.admin('PUT', `/api_keys/${k.id}`, { api_key: { active: true } }), 409, 'KEY_REVOKED');
  refused(await kw.admin('PUT', `/api_keys/${k.id}`, { api_key: { name: 'renamed' } }), 409, 'KEY_REVOKED');
  refused(await kw.admin('POST', `/api_keys/${k.id}/roll`, { grace_seconds: 0 }), 409, 'KEY_REVOKED');
  assert.equal((await kw.admin('POST', `/api_keys/${k.id}/revoke`)).body.data.status, 'revoked', 'revoking twice is harmless');

  r = await kw.admin('DELETE', `/api_keys/${k.id}`);
  assertEnvelope(r);
  assert.equal(r.status, 200, r.text);
  refused(await kw.admin('GET', `/api_keys/${k.id}`), 404, 'NOT_FOUND');
  // Deleted, but a revoked key is still refused as revoked, never as unknown.
  refused(await kw.request('GET', USERS, { headers: auth }), 401, 'KEY_REVOKED');

  const e = await create();
  await kw.admin('PUT', `/api_keys/${e.id}`, { api_key: { active: false } });
  assert.equal((await kw.admin('DELETE', `/api_keys/${e.id}`)).status, 200);
  refused(await kw.request('GET', USERS, { headers: { 'x-api-key': e.api_key } }), 401, 'UNKNOWN_KEY');
  const past = await create({ expires_at: '2020-01-01T00:00:00Z' });
  assert.equal(past.status, 'expired');
  assert.equal((await kw.admin('DELETE', `/api_keys/${past.id}`)).status, 200, 'expired by date counts as not active');
});

test('roll: a new key with every setting of the old; the old one expires after the grace', async () => {
  const settings = { name: 'rolling', description: 'd', permissions: ['users:read', 'rewards:*'], event_denylist: ['x'], ip_allowlist: ['127.0.0.0/8'], metadata: { a: 1 }, workspace: 'ws-1' };
  const old = await create(settings);
  let r = await kw.admin('POST', `/api_keys/${old.id}/roll`, { grace_seconds: 3600 });
  assertEnvelope(r);
  assert.equal(r.status, 201, r.text);
  const fresh = r.body.data;
  assert.notEqual(fresh.id, old.id);
  assert.notEqual(fresh.api_key, old.api_key);
  assert.ok(fresh.id > old.id);
  for (const [field, value] of Object.entries(settings)) assert.deepEqual(fresh[field], value, field);
  assert.equal(fresh.rolled_from.id, old.id);
  const graceEnd = Date.parse(fresh.rolled_from.expires_at);
  assert.ok(Math.abs(graceEnd - (Date.now() + 3600_000)) < 60_000, fresh.rolled_from.expires_at);
  assert.equal((await kw.request('GET', USERS, { headers: { 'x-api-key': old.api_key } })).status, 200, 'old key works during the grace');
  assert.equal((await kw.request('GET', USERS, { headers: { 'x-api-key': fresh.api_key } })).status, 200);

  r = await kw.admin('POST', `/api_keys/${fresh.id}/roll`, { grace_seconds: 0 });
  assert.equal(r.status, 201);
  refused(await kw.request('GET', USERS, { headers: { 'x-api-key': fresh.api_key } }), 401, 'KEY_EXPIRED');
  assert.equal((await kw.request('GET', USERS, { headers: { 'x-api-key': r.body.data.api_key } })).status, 200);
  // Rotation's last step: the old key, now expired, can be deleted.
  assert.equal((await kw.admin('DELETE', `/api_keys/${fresh.id}`)).status, 200);

  for (const [body, field] of [[{}, 'grace_seconds'], [{ grace_seconds: -1 }, 'grace_seconds'], [{ grace_seconds: 31 * 86400 }, 'grace_seconds'], [{ grace_seconds: '60' }, 'grace_seconds'], [{ grace_seconds: 1, x: 1 }, 'x']]) {
    refused(await kw.admin('POST', `/api_keys/${old.id}/roll`, body), 400, 'BAD_REQUEST', field);
  }
});

test('management keys: keys:read, keys:create, keys:update, keys:delete each open their calls and nothing else', async () => {
  const reader = (await create({ name: 'reader', permissions: ['keys:read'] })).api_key;
  const creator = (await create({ name: 'creator', permissions: ['keys:create'] })).api_key;
  const updater = (await create({ name: 'updater', permissions: ['keys:update'] })).api_key;
  const deleter = (await create({ name: 'deleter', permissions: ['keys:delete'] })).api_key;
  const all = (await create({ name: 'all', permissions: ['keys:*'] })).api_key;
  const target = await create({ name: 'target' });

  assert.equal((await kw.admin('GET', '/api_keys', undefined, reader)).status, 200);
  assert.equal((await kw.admin('GET', `/api_keys/${target.id}`, undefined, reader)).status, 200);
  refused(await kw.admin('POST', '/api_keys', { api_key: { name: 'x' } }, reader), 403, 'PERMISSION_DENIED');
  refused(await kw.admin('PUT', `/api_keys/${target.id}`, { api_key: { active: false } }, reader), 403, 'PERMISSION_DENIED');

  assert.equal((await kw.admin('POST', '/api_keys', { api_key: { name: 'by creator' } }, creator)).status, 201);
  refused(await kw.admin('GET', '/api_keys', undefined, creator), 403, 'PERMISSION_DENIED');

  assert.equal((await kw.admin('PUT', `/api_keys/${target.id}`, { api_key: { active: false } }, updater)).status, 200);
  refused(await kw.admin('DELETE', `/api_keys/${target.id}`, undefined, updater), 403, 'PERMISSION_DENIED');
  assert.equal((await kw.admin('DELETE', `/api_keys/${target.id}`, undefined, deleter)).status, 200);

  // Push, revocations and the policy are for the admin token only.
  refused(await kw.admin('PUT', '/policy', { rules: [] }, all), 403, 'PERMISSION_DENIED');
  refused(await kw.admin('POST', '/revocations', { ids: [target.id] }, all), 403, 'PERMISSION_DENIED');
  refused(await kw.admin('PUT', `/keys/${'a'.repeat(64)}`, { api_key: { name: 'x', version: 1 } }, all), 403, 'PERMISSION_DENIED');
  // A key without key permissions, an expired one and an unknown one.
  refused(await kw.admin('GET', '/api_keys', undefined, target.api_key), 401, 'UNAUTHORIZED');
  const gateKey = (await create({ name: 'gate only', permissions: ['users:read'] })).api_key;
  refused(await kw.admin('GET', '/api_keys', undefined, gateKey), 403, 'PERMISSION_DENIED');
  refused(await kw.admin('GET', '/api_keys', undefined, makeKey('kw_live')), 401, 'UNAUTHORIZED');
});

test('verify returns the gate decision as data without calling the origin', async () => {
  const k = await create({ permissions: ['users:read'], ip_allowlist: ['10.0.0.0/8'] });
  origin.clear();
  let r = await kw.admin('POST', '/verify', { key: k.api_key, method: 'GET', path: USERS, ip: '10.1.1.1' });
  assertEnvelope(r);
  assert.equal(r.status, 200);
  assert.equal(r.body.data.valid, true);
  assert.equal(r.body.data.code, 'VALID');
  assert.equal(r.body.data.key_id, k.id);
  assert.equal(r.body.data.permission, 'users:read');
  assert.equal(typeof r.body.data.rule, 'number');
  r = await kw.admin('POST', '/verify', { key: k.api_key, method: 'DELETE', path: '/api/v2/projects/1', ip: '10.1.1.1' });
  assert.equal(r.body.data.valid, false);
  assert.equal(r.body.data.code, 'PERMISSION_DENIED');
  r = await kw.admin('POST', '/verify', { key: k.api_key, method: 'GET', path: USERS, ip: '192.0.2.1' });
  assert.equal(r.body.data.code, 'IP_NOT_ALLOWED');
  r = await kw.admin('POST', '/verify', { headers: { 'X-API-Key': k.api_key }, path: `${USERS}?x=1`, ip: '10.0.0.1' });
  assert.equal(r.body.data.code, 'VALID');
  assert.equal((await kw.admin('POST', '/verify', { key: makeKey('kw_live'), path: USERS })).body.data.code, 'UNKNOWN_KEY');
  assert.equal((await kw.admin('POST', '/verify', { key: 'kw_live_nope', path: USERS })).body.data.code, 'MALFORMED_KEY');
  assert.equal((await kw.admin('POST', '/verify', { path: USERS })).body.data.code, 'MISSING_KEY');
  assert.equal(origin.seen.length, 0, 'the origin was never called');
  for (const [body, field] of [[{ key: k.api_key }, 'path'], [{ key: k.api_key, path: 'users' }, 'path'], [{ key: 5, path: '/' }, 'key'], [{ key: k.api_key, path: '/', headers: [] }, 'headers'], [{ key: k.api_key, path: '/', cookie: 'x' }, 'cookie']]) {
    refused(await kw.admin('POST', '/verify', body), 400, 'BAD_REQUEST', field);
  }
});

test('ping answers for a key in any credential position', async () => {
  const k = await create({ workspace: 'ws-ping' });
  for (const headers of [{ authorization: `Bearer ${k.api_key}` }, { 'x-api-key': k.api_key }, { authorization: `Basic ${Buffer.from(`ws-ping:${k.api_key}`).toString('base64')}` }]) {
    const r = await kw.request('GET', '/_keyward/v1/ping', { headers });
    assertEnvelope(r);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.data.key_id, k.id);
  }
  assert.equal((await kw.request('GET', `/_keyward/v1/ping?api_key=${k.api_key}`)).body.data.key_id, k.id);
  refused(await kw.request('GET', '/_keyward/v1/ping'), 401, 'MISSING_KEY');
  refused(await kw.request('GET', '/_keyward/v1/ping', { headers: { 'x-api-key': makeKey('kw_live') } }), 401, 'UNKNOWN_KEY');
  await kw.admin('PUT', `/api_keys/${k.id}`, { api_key: { active: false } });
  refused(await kw.request('GET', '/_keyward/v1/ping', { headers: { 'x-api-key': k.api_key } }), 401, 'KEY_EXPIRED');
});

test('policy: GET shows it; PUT validates, and a refused policy leaves the old one', async () => {
  const r = await kw.admin('GET', '/policy');
  assertEnvelope(r);
  const rules = r.body.data.rules;
  assert.ok(rules.length >= 30);
  for (const [doc, field] of [
    [{ rules: [{ method: 'GET', path: '/a/{id', permission: 'a:read' }] }, 'rules[0].path'],
    [{ rules: [{ method: 'GET', path: 'a', permission: 'a:read' }] }, 'rules[0].path'],
    [{ rules: [{ method: 'FETCH!', path: '/a', permission: 'a:read' }] }, 'rules[0].method'],
    [{ rules: [{ method: 'GET', path: '/a', permission: 'nope' }] }, 'rules[0].permission'],
    [{ rules: [{ method: 'GET', path: '/a', permission: 'a:read', event: 'query:x' }] }, 'rules[0].event'],
    [{ rules: [{ method: 'GET', path: '/a', permission: 'a:read', event: 'path:x' }] }, 'rules[0].event'],
    [{ rules: [{ method: 'GET', path: '/a', permission: 'a:read', profile: 'p' }] }, 'rules[0].profile'],
    [{ rules: [{ method: 'GET', path: '/a', permission: 'a:read', colour: 1 }] }, 'rules[0]'],
    [{ rules: [], extra: 1 }, 'extra'],
    [{ rules: 'all' }, 'rules'],
  ]) {
    refused(await kw.admin('PUT', '/policy', doc), 400, 'BAD_REQUEST', field.split('.')[0].replace(/\[.*/, ''));
    assert.deepEqual((await kw.admin('GET', '/policy')).body.data.rules, rules);
  }
});

test('unknown endpoints are 404 and wrong methods 405, in the envelope', async () => {
  refused(await kw.admin('GET', '/nothing'), 404, 'NOT_FOUND');
  refused(await kw.admin('PATCH', '/api_keys'), 405, 'METHOD_NOT_ALLOWED');
  refused(await kw.admin('DELETE', '/policy'), 405, 'METHOD_NOT_ALLOWED');
  refused(await kw.request('GET', '/_keyward/v2/api_keys'), 404, 'NOT_FOUND');
  const patch = await kw.admin('PATCH', '/api_keys');
  assert.equal(patch.headers.allow, 'GET, POST');
  // Methods the runtime does not know are refused, not read as GET.
  const query = await kw.admin('QUERY', '/policy');
  refused(query, 405, 'METHOD_NOT_ALLOWED');
  assert.equal(query.headers.allow, 'GET, PUT');
  const doc = await kw.request('GET', '/_keyward/v1/openapi.json');
  assert.equal(doc.status, 200);
  assert.equal(doc.body.openapi, '3.1.0');
});
