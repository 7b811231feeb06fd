// Fine-grained key policy at the gate: every denial code beside its allowed twin, driven over
// HTTP against the built Worker, with the client address varied by connecting from another
// loopback address (under wrangler dev, CF-Connecting-IP is the connecting socket's address).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keywardForFile } from '../support/per-file.mjs';

const { kw } = keywardForFile();

async function createKey(attributes) {
  const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'policy test', ...attributes } });
  assert.equal(r.status, 201, r.text);
  return r.body.data;
}

function expectAllowed(r) {
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.origin, true);
}

function expectDenied(r, status, code, messagePattern) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.body.error_code, code, r.text);
  if (messagePattern) assert.match(r.body.error_message, messagePattern);
}

const bearer = (key) => ({ authorization: `Bearer ${key}` });
const basic = (login, key) => ({ authorization: `Basic ${Buffer.from(`${login}:${key}`).toString('base64')}` });

test('PERMISSION_DENIED and its twin: a key that may read users but not delete a project', async () => {
  const { api_key: key } = await createKey({ permissions: ['users:read', 'projects:read'] });
  expectAllowed(await kw.request('GET', '/api/v2/projects/1/users/2', { headers: bearer(key) }));
  expectDenied(await kw.request('DELETE', '/api/v2/projects/1', { headers: bearer(key) }), 403, 'PERMISSION_DENIED', /projects:delete/);
});

test('ROUTE_NOT_ALLOWED and its twin', async () => {
  const { api_key: key } = await createKey({ permissions: ['*'] });
  expectAllowed(await kw.request('GET', '/api/v2/webhook_events', { headers: bearer(key) }));
  expectDenied(await kw.request('GET', '/api/v2/webhook_eventz', { headers: bearer(key) }), 403, 'ROUTE_NOT_ALLOWED');
});

test('EVENT_NOT_ALLOWED and its twins, in the path and in the body', async () => {
  const { api_key: key } = await createKey({ permissions: ['events:create'], event_allowlist: ['page_visit', 'purchase'], event_denylist: ['purchase'] });
  expectAllowed(await kw.request('POST', '/v4/events/page_visit', { headers: bearer(key), body: '{}' }));
  expectDenied(await kw.request('POST', '/v4/events/purchase', { headers: bearer(key), body: '{}' }), 403, 'EVENT_NOT_ALLOWED', /purchase/);
  expectDenied(await kw.request('POST', '/v4/events/signup', { headers: bearer(key), body: '{}' }), 403, 'EVENT_NOT_ALLOWED', /signup/);
  const ok = await kw.request('POST', '/v4/events', { headers: bearer(key), body: { action: 'page_visit', params: { url: '/' } } });
  expectAllowed(ok);
  assert.deepEqual(JSON.parse(ok.body.body), { action: 'page_visit', params: { url: '/' } }, 'the inspected body still reaches the origin');
  expectDenied(await kw.request('POST', '/v4/events', { headers: bearer(key), body: { action: 'purchase' } }), 403, 'EVENT_NOT_ALLOWED');
  expectDenied(await kw.request('POST', '/v4/events', { headers: bearer(key), body: { params: {} } }), 400, 'BAD_REQUEST', /action/);
  expectDenied(await kw.request('POST', '/v4/events', { headers: bearer(key), body: '{"action":' }), 400, 'BAD_REQUEST', /JSON/);
  expectDenied(await kw.request('POST', '/v4/events', { headers: bearer(key) }), 400, 'BAD_REQUEST');
  const huge = JSON.stringify({ action: 'page_visit', pad: 'x'.repeat(300 * 1024) });
  expectDenied(await kw.request('POST', '/v4/events', { headers: bearer(key), body: huge }), 400, 'BAD_REQUEST', /256 KiB/);
});

test('IP_NOT_ALLOWED and its twin, by the connecting address', async () => {
  const { api_key: key } = await createKey({ permissions: ['users:read'], ip_allowlist: ['127.0.0.1', '2001:db8::/32'] });
  expectAllowed(await kw.request('GET', '/api/v2/projects/1/users', { headers: bearer(key), localAddress: '127.0.0.1' }));
  expectDenied(await kw.request('GET', '/api/v2/projects/1/users', { headers: bearer(key), localAddress: '127.0.0.9' }), 403, 'IP_NOT_ALLOWED');
  const range = await createKey({ permissions: ['users:read'], ip_allowlist: ['127.0.0.8/29'] });
  expectAllowed(await kw.request('GET', '/api/v2/projects/1/users', { headers: bearer(range.api_key), localAddress: '127.0.0.9' }));
  expectDenied(await kw.request('GET', '/api/v2/projects/1/users', { headers: bearer(range.api_key), localAddress: '127.0.0.1' }), 403, 'IP_NOT_ALLOWED');
});

test('the IP check comes before the permission check', async () => {
  const { api_key: key } = await createKey({ permissions: [], ip_allowlist: ['10.0.0.0/8'] });
  expectDenied(await kw.request('DELETE', '/api/v2/projects/1', { headers: bearer(key) }), 403, 'IP_NOT_ALLOWED');
});

test('PROFILE_MISMATCH and its twin; the origin gets X-Keyward-Profile-Id', async () => {
  const { api_key: key } = await createKey({ type: 'profile', profile_id: 'p-42', permissions: ['profiles:*', 'users:read'] });
  const ok = await kw.request('GET', '/v4/profiles/p-42', { headers: bearer(key) });
  expectAllowed(ok);
  assert.equal(ok.body.headers['x-keyward-profile-id'], 'p-42');
  assert.equal(ok.body.headers['x-keyward-key-type'], 'profile');
  expectDenied(await kw.request('GET', '/v4/profiles/p-43', { headers: bearer(key) }), 403, 'PROFILE_MISMATCH');
  expectDenied(await kw.request('GET', '/api/v2/projects/1/users', { headers: bearer(key) }), 403, 'PROFILE_MISMATCH');
});

test('ATTRIBUTE_NOT_ALLOWED and its twin, on fields and tags', async () => {
  const { api_key: key } = await createKey({ permissions: ['profiles:update'], attribute_allowlist: ['email', 'tags', 'vip'] });
  expectAllowed(await kw.request('PUT', '/v4/profiles/p-1', { headers: bearer(key), body: { email: 'a@example.com', tags: ['vip'] } }));
  expectDenied(await kw.request('PUT', '/v4/profiles/p-1', { headers: bearer(key), body: { email: 'a@example.com', score: 9 } }), 403, 'ATTRIBUTE_NOT_ALLOWED', /score/);
  expectDenied(await kw.request('PUT', '/v4/profiles/p-1', { headers: bearer(key), body: { tags: ['vip', 'churned'] } }), 403, 'ATTRIBUTE_NOT_ALLOWED', /churned/);
  const unlimited = await createKey({ permissions: ['profiles:update'] });
  expectAllowed(await kw.request('PUT', '/v4/profiles/p-1', { headers: bearer(unlimited.api_key), body: { score: 9, tags: ['churned'] } }));
});

test('WORKSPACE_MISMATCH and its twin with Basic credentials', async () => {
  const workspace = '5f0c6b1e-8d2a-4c1b-9a57-0e3f2d1c4b6a';
  const { api_key: key } = await createKey({ permissions: ['users:read'], workspace });
  const ok = await kw.request('GET', '/api/v2/projects/1/users', { headers: basic(workspace, key) });
  expectAllowed(ok);
  assert.equal(ok.body.headers.authorization, undefined, 'Basic credentials are not forwarded');
  expectDenied(await kw.request('GET', '/api/v2/projects/1/users', { headers: basic('another-workspace', key) }), 401, 'WORKSPACE_MISMATCH');
});

test('malformed Basic headers are 400/401, never a crash', async () => {
  const { api_key: key } = await createKey({ permissions: ['users:read'] });
  const cases = [
    'Basic', 'Basic ', 'Basic !!!notbase64!!!', `Basic ${Buffer.from('no-colon').toString('base64')}`,
    `Basic ${Buffer.from(':').toString('base64')}`, `Basic ${Buffer.from([0xff, 0xfe, 0x3a, 0x41]).toString('base64')}`,
    `Basic ${Buffer.from(`ws:${key}:extra`).toString('base64')}`, 'Digest abc', 'Bearer', 'Bearer    ',
  ];
  for (const authorization of cases) {
    const r = await kw.request('GET', '/api/v2/projects/1/users', { headers: { authorization } });
    assert.ok([400, 401].includes(r.status), `${authorization}: ${r.status} ${r.text}`);
    assert.equal(r.body.success, false, authorization);
    assert.ok(['BAD_REQUEST', 'MISSING_KEY', 'MALFORMED_KEY'].includes(r.body.error_code), `${authorization}: ${r.text}`);
  }
  // The Worker is still healthy after all of them.
  expectAllowed(await kw.request('GET', '/api/v2/projects/1/users', { headers: bearer(key) }));
});

test('a replaced route policy applies to the next request; a bad one is refused and the old kept', async () => {
  const { api_key: key } = await createKey({ permissions: ['reports:read'] });
  expectDenied(await kw.request('GET', '/reports/7', { headers: bearer(key) }), 403, 'ROUTE_NOT_ALLOWED');
  const before = (await kw.admin('GET', '/policy')).body.data;
  const bad = await kw.admin('PUT', '/policy', { rules: [{ method: 'GET', path: 'reports/{id', permission: 'reports:read' }] });
  expectDenied(bad, 400, 'BAD_REQUEST', /path/);
  assert.deepEqual((await kw.admin('GET', '/policy')).body.data.rules, before.rules);
  const rules = [{ method: 'GET', path: '/reports/{id}', permission: 'reports:read' }, ...before.rules];
  assert.equal((await kw.admin('PUT', '/policy', { rules })).status, 200);
  expectAllowed(await kw.request('GET', '/reports/7', { headers: bearer(key) }));
  assert.equal((await kw.admin('PUT', '/policy', { rules: before.rules })).status, 200);
  expectDenied(await kw.request('GET', '/reports/7', { headers: bearer(key) }), 403, 'ROUTE_NOT_ALLOWED');
});
