// The gate end to end: the built Worker under `wrangler dev` (real workerd, real local KV on disk)
// in front of a real origin on loopback, driven over HTTP as a client would.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keywardForFile } from '../support/per-file.mjs';
import { startOrigin } from '../support/origin.mjs';
import { startKeyward } from '../support/keyward.mjs';
import { makeKey, digest, typo } from '../support/keys.mjs';

const { origin, kw } = keywardForFile();

const USERS = '/api/v2/projects/7/users';

async function createKey(attributes = {}) {
  const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'gate test', permissions: ['users:read'], ...attributes } });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return { key: r.body.data.api_key, id: r.body.data.id, record: r.body.data };
}

function assertDenied(r, status, code) {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status} ${r.text}`);
  assert.match(r.headers['content-type'], /^application\/json/);
  assert.equal(r.body.success, false);
  assert.equal(r.body.data, null);
  assert.equal(r.body.error_code, code);
  assert.equal(typeof r.body.error_message, 'string');
  assert.ok(r.body.error_message.length > 0);
}

test('an allowed request reaches the origin without the key, with the keyward headers set', async () => {
  const { key, id } = await createKey();
  origin.clear();
  const r = await kw.request('GET', `${USERS}?page=2`, {
    headers: { authorization: `Bearer ${key}`, 'x-keyward-key-id': 'spoofed', 'x-keyward-profile-id': 'spoofed', 'x-other': 'kept' },
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.origin, true);
  const seen = origin.last();
  assert.equal(seen.path, USERS);
  assert.equal(seen.query, 'page=2');
  assert.equal(seen.headers.authorization, undefined);
  assert.equal(seen.headers['x-keyward-key-id'], id);
  assert.equal(seen.headers['x-keyward-key-type'], 'workspace');
  assert.equal(seen.headers['x-keyward-profile-id'], undefined, 'a client-sent X-Keyward-* header is dropped');
  assert.equal(seen.headers['x-other'], 'kept');
  assert.ok(!JSON.stringify(seen).includes(key), 'the origin never sees the key');
});

test('the key is stripped from every credential position', async () => {
  const { key } = await createKey();
  const cases = [
    { name: 'X-API-Key', path: USERS, headers: { 'x-api-key': key } },
    { name: 'api_key query', path: `${USERS}?a=1&api_key=${key}&b=2`, headers: {} },
    { name: 'Bearer and the same key in the query', path: `${USERS}?api_key=${key}`, headers: { authorization: `Bearer ${key}` } },
  ];
  for (const c of cases) {
    origin.clear();
    const r = await kw.request('GET', c.path, { headers: c.headers });
    assert.equal(r.status, 200, `${c.name}: ${r.text}`);
    const seen = JSON.stringify(origin.last());
    assert.ok(!seen.includes(key), `${c.name}: the origin saw the key`);
  }
  assert.equal(origin.last().query, '');
  const r = await kw.request('GET', `${USERS}?a=1&api_key=${key}&b=2`);
  assert.equal(r.body.query, 'a=1&b=2');
});

test('a POST body is forwarded unchanged', async () => {
  const { key } = await createKey({ permissions: ['users:create'] });
  const body = JSON.stringify({ email: 'ada@example.com', name: 'Ada' });
  const r = await kw.request('POST', USERS, { headers: { 'x-api-key': key, 'content-type': 'application/json' }, body });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.body, body);
  assert.equal(r.body.method, 'POST');
});

test('MISSING_KEY, MALFORMED_KEY, UNKNOWN_KEY and two different keys', async () => {
  const { key } = await createKey();
  assertDenied(await kw.request('GET', USERS), 401, 'MISSING_KEY');
  assert.equal((await kw.request('GET', USERS)).headers['www-authenticate']?.startsWith('Bearer'), true);
  assertDenied(await kw.request('GET', USERS, { headers: { authorization: `Bearer ${typo(key)}` } }), 401, 'MALFORMED_KEY');
  assertDenied(await kw.request('GET', USERS, { headers: { authorization: 'Bearer not-a-key' } }), 401, 'MALFORMED_KEY');
  assertDenied(await kw.request('GET', USERS, { headers: { authorization: `Bearer ${makeKey('kw_live')}` } }), 401, 'UNKNOWN_KEY');
  const other = makeKey('kw_live');
  const r = await kw.request('GET', `${USERS}?api_key=${other}`, { headers: { authorization: `Bearer ${key}` } });
  assertDenied(r, 400, 'BAD_REQUEST');
  assert.ok(!r.text.includes(key) && !r.text.includes(other), 'errors never echo a key');
});

test('ROUTE_NOT_ALLOWED and PERMISSION_DENIED, each beside an allowed twin', async () => {
  const { key } = await createKey({ permissions: ['users:read', 'projects:read'] });
  const auth = { authorization: `Bearer ${key}` };
  assert.equal((await kw.request('GET', '/api/v2/projects/1', { headers: auth })).status, 200);
  assertDenied(await kw.request('DELETE', '/api/v2/projects/1', { headers: auth }), 403, 'PERMISSION_DENIED');
  assertDenied(await kw.request('GET', '/api/v2/nothing-here', { headers: auth }), 403, 'ROUTE_NOT_ALLOWED');
  assertDenied(await kw.request('PATCH', '/api/v2/projects/1', { headers: auth }), 403, 'ROUTE_NOT_ALLOWED');
  const r = await kw.request('DELETE', '/api/v2/projects/1', { headers: auth });
  assert.match(r.body.error_message, /projects:delete/);
});

test('wildcard permissions: module:* and *', async () => {
  const { key: moduleKey } = await createKey({ permissions: ['projects:*'] });
  const { key: allKey } = await createKey({ permissions: ['*'] });
  assert.equal((await kw.request('DELETE', '/api/v2/projects/1', { headers: { 'x-api-key': moduleKey } })).status, 200);
  assertDenied(await kw.request('GET', USERS, { headers: { 'x-api-key': moduleKey } }), 403, 'PERMISSION_DENIED');
  assert.equal((await kw.request('DELETE', '/api/v2/projects/1/users/2', { headers: { 'x-api-key': allKey } })).status, 200);
});

test('expiry by the active flag takes effect on the next request, and reactivation too', async () => {
  const { key, id } = await createKey();
  const auth = { authorization: `Bearer ${key}` };
  assert.equal((await kw.request('GET', USERS, { headers: auth })).status, 200);
  assert.equal((await kw.admin('PUT', `/api_keys/${id}`, { api_key: { active: false } })).status, 200);
  assertDenied(await kw.request('GET', USERS, { headers: auth }), 401, 'KEY_EXPIRED');
  assert.equal((await kw.admin('PUT', `/api_keys/${id}`, { api_key: { active: true } })).status, 200);
  assert.equal((await kw.request('GET', USERS, { headers: auth })).status, 200);
});

test('expiry by expires_at', async () => {
  const soon = new Date(Date.now() + 2500).toISOString();
  const { key, record } = await createKey({ expires_at: soon });
  assert.equal(record.status, 'active');
  const auth = { authorization: `Bearer ${key}` };
  assert.equal((await kw.request('GET', USERS, { headers: auth })).status, 200);
  await new Promise((r) => setTimeout(r, 3000));
  assertDenied(await kw.request('GET', USERS, { headers: auth }), 401, 'KEY_EXPIRED');
});

test('origin push: create, update with a higher version, stale versions refused and nothing changed', async () => {
  const key = makeKey('kw_live');
  const d = digest(key);
  const auth = { authorization: `Bearer ${key}` };
  assertDenied(await kw.request('GET', USERS, { headers: auth }), 401, 'UNKNOWN_KEY');

  let r = await kw.admin('PUT', `/keys/${d}`, { api_key: { name: 'pushed', permissions: ['users:read'], version: 5 } });
  assert.equal(r.status, 201, r.text);
  const id = r.body.data.id;
  assert.equal(r.body.data.version, 5);
  assert.ok(!('api_key' in r.body.data), 'a push never returns a key');
  // Unknown keys are cached negatively, but a push is seen by the very next request.
  assert.equal((await kw.request('GET', USERS, { headers: auth })).status, 200);

  for (const version of [5, 4, 1]) {
    r = await kw.admin('PUT', `/keys/${d}`, { api_key: { name: 'stale', permissions: ['*'], version } });
    assertDenied(r, 409, 'VERSION_CONFLICT');
  }
  r = await kw.admin('GET', `/api_keys/${id}`);
  assert.equal(r.body.data.name, 'pushed');
  assert.deepEqual(r.body.data.permissions, ['users:read']);
  assert.equal(r.body.data.version, 5);
  assertDenied(await kw.request('DELETE', '/api/v2/projects/1', { headers: auth }), 403, 'PERMISSION_DENIED');

  r = await kw.admin('PUT', `/keys/${d}`, { api_key: { name: 'pushed', permissions: ['users:read', 'projects:delete'], version: 6 } });
  assert.equal(r.status, 200, r.text);
  assert.equal((await kw.request('DELETE', '/api/v2/projects/1', { headers: auth })).status, 200);
});

test('a push without a version, or a bad one, is refused', async () => {
  const d = digest(makeKey('kw_live'));
  for (const [body, field] of [
    [{ api_key: { name: 'x' } }, 'version'],
    [{ api_key: { name: 'x', version: -1 } }, 'version'],
    [{ api_key: { name: 'x', version: 0 } }, 'version'],
    [{ api_key: { name: 'x', version: 1.5 } }, 'version'],
    [{ api_key: { name: 'x', version: '3' } }, 'version'],
    [{ api_key: { name: 'x', version: 1, colour: 'red' } }, 'colour'],
  ]) {
    const r = await kw.admin('PUT', `/keys/${d}`, body);
    assertDenied(r, 400, 'BAD_REQUEST');
    assert.match(r.body.error_message, new RegExp(field));
  }
  assertDenied(await kw.admin('PUT', '/keys/ABC', { api_key: { name: 'x', version: 1 } }), 400, 'BAD_REQUEST');
  assertDenied(await kw.admin('PUT', `/keys/${d.toUpperCase()}`, { api_key: { name: 'x', version: 1 } }), 400, 'BAD_REQUEST');
});

test('revocation by id and by hash is seen on the next request and is final', async () => {
  const a = await createKey();
  const pushedKey = makeKey('kw_live');
  const d = digest(pushedKey);
  assert.equal((await kw.admin('PUT', `/keys/${d}`, { api_key: { name: 'pushed', permissions: ['users:read'], version: 1 } })).status, 201);
  assert.equal((await kw.request('GET', USERS, { headers: { 'x-api-key': a.key } })).status, 200);
  assert.equal((await kw.request('GET', USERS, { headers: { 'x-api-key': pushedKey } })).status, 200);

  const r = await kw.admin('POST', '/revocations', { ids: [a.id], hashes: [d] });
  assert.equal(r.status, 200, r.text);
  assertDenied(await kw.request('GET', USERS, { headers: { 'x-api-key': a.key } }), 401, 'KEY_REVOKED');
  assertDenied(await kw.request('GET', USERS, { headers: { 'x-api-key': pushedKey } }), 401, 'KEY_REVOKED');

  // Nothing brings a revoked key back: not a later push, not reactivation.
  assertDenied(await kw.admin('PUT', `/keys/${d}`, { api_key: { name: 'again', permissions: ['*'], version: 99 } }), 409, 'KEY_REVOKED');
  assertDenied(await kw.admin('PUT', `/api_keys/${a.id}`, { api_key: { active: true } }), 409, 'KEY_REVOKED');
  assertDenied(await kw.request('GET', USERS, { headers: { 'x-api-key': pushedKey } }), 401, 'KEY_REVOKED');
  assert.equal((await kw.admin('GET', `/api_keys/${a.id}`)).body.data.status, 'revoked');
});

test('a hash revoked before the origin ever pushed it stays revoked', async () => {
  const key = makeKey('kw_live');
  const d = digest(key);
  assert.equal((await kw.admin('POST', '/revocations', { hashes: [d] })).status, 200);
  assertDenied(await kw.admin('PUT', `/keys/${d}`, { api_key: { name: 'late', permissions: ['*'], version: 1 } }), 409, 'KEY_REVOKED');
  assertDenied(await kw.request('GET', USERS, { headers: { 'x-api-key': key } }), 401, 'KEY_REVOKED');
});

test('a wrong or missing admin token gets 401 and touches nothing', async () => {
  const key = makeKey('kw_live');
  const d = digest(key);
  const wrong = kw.adminToken.slice(0, -1) + (kw.adminToken.endsWith('x') ? 'y' : 'x');
  const attempts = [
    ['PUT', `/keys/${d}`, { api_key: { name: 'evil', permissions: ['*'], version: 1 } }],
    ['POST', '/revocations', { hashes: [d] }],
    ['POST', '/api_keys', { api_key: { name: 'evil' } }],
    ['PUT', '/policy', { rules: [] }],
  ];
  for (const [method, p, body] of attempts) {
    for (const headers of [{ authorization: `Bearer ${wrong}` }, {}, { authorization: `Basic ${Buffer.from(`x:${kw.adminToken}`).toString('base64')}` }]) {
      const r = await kw.request(method, `/_keyward/v1${p}`, { headers, body });
      assertDenied(r, 401, 'UNAUTHORIZED');
    }
  }
  assertDenied(await kw.request('GET', USERS, { headers: { 'x-api-key': key } }), 401, 'UNKNOWN_KEY');
  const list = await kw.admin('GET', '/api_keys?name=evil');
  assert.equal(list.body.num_records, 0);
  const policy = await kw.admin('GET', '/policy');
  assert.ok(policy.body.data.rules.length > 0, 'the policy is untouched');
});

test('the key store never holds a plaintext key, only its digest', async () => {
  const made = [];
  for (let i = 0; i < 3; i++) made.push(await createKey());
  const pushed = makeKey('kw_live');
  await kw.admin('PUT', `/keys/${digest(pushed)}`, { api_key: { name: 'p', version: 1 } });
  const stored = kw.storedBytes();
  for (const { key } of made) {
    assert.ok(stored.includes(digest(key)), 'the digest is the storage key');
    assert.ok(!stored.includes(key), 'the plaintext key is not stored');
    assert.ok(!stored.includes(key.slice(8, 40)), 'not even its random part');
  }
  assert.ok(!stored.includes(pushed));
  // Nor is it ever shown again.
  const list = await kw.admin('GET', '/api_keys?per_page=500');
  for (const { key, id } of made) {
    assert.ok(!list.text.includes(key));
    const one = await kw.admin('GET', `/api_keys/${id}`);
    assert.ok(!one.text.includes(key));
    assert.equal(one.body.data.key_preview, `kw_live_...${key.slice(-4)}`);
  }
});

test('a KV failure fails closed with 503 STORE_UNAVAILABLE', async () => {
  const key = makeKey('kw_live');
  // A record that cannot be read back (as if KV returned garbage) for a key not yet in memory.
  await kw.kv('key', 'put', `key:${digest(key)}`, '{"this is": not json');
  const r = await kw.request('GET', USERS, { headers: { authorization: `Bearer ${key}` } });
  assertDenied(r, 503, 'STORE_UNAVAILABLE');
  origin.clear();
  assert.equal(origin.seen.length, 0);
});

test('a key with a bad checksum is refused before any KV read', async () => {
  // If the gate read KV for this key it would find a broken record and answer 503.
  const bad = typo(makeKey('kw_live'));
  await kw.kv('key', 'put', `key:${digest(bad)}`, 'broken');
  assertDenied(await kw.request('GET', USERS, { headers: { authorization: `Bearer ${bad}` } }), 401, 'MALFORMED_KEY');
});

test('an unreachable origin is a 502, not a pass', async () => {
  const gone = await startOrigin();
  await gone.stop();
  const dead = await startKeyward({ origin: gone.url });
  try {
    const r = await dead.admin('POST', '/api_keys', { api_key: { name: 'x', permissions: ['users:read'] } });
    const res = await dead.request('GET', USERS, { headers: { 'x-api-key': r.body.data.api_key } });
    assertDenied(res, 502, 'ORIGIN_UNAVAILABLE');
  } finally {
    await dead.stop();
  }
});

test('a method the runtime does not know is refused, not read as GET', async () => {
  const { key } = await createKey({ permissions: ['*'] });
  origin.clear();
  const r = await kw.request('QUERY', USERS, { headers: { 'x-api-key': key } });
  assertDenied(r, 400, 'BAD_REQUEST');
  assert.match(r.body.error_message, /QUERY/);
  assert.equal(origin.seen.length, 0);
});

test('keyward paths are never forwarded', async () => {
  origin.clear();
  const { key } = await createKey({ permissions: ['*'] });
  const r = await kw.request('GET', '/_keyward/nothing', { headers: { 'x-api-key': key } });
  assertDenied(r, 404, 'NOT_FOUND');
  assert.equal(origin.seen.length, 0);
});

test('the debug stats are not served without KEYWARD_DEBUG (only test harnesses set it)', async () => {
  const r = await kw.request('GET', '/_keyward/debug/stats');
  assert.equal(r.status, 404, r.text);
  assert.equal(r.body.error_code, 'NOT_FOUND');
});

test('no number outside JavaScript\'s safe-integer range crosses from the Worker to JS', async () => {
  // A new isolate reads the whole recent change log, bounded by the first change KV still owes;
  // with none owed that bound was i64::MAX, which the worker crate logs (console.debug, so only at
  // wrangler's debug log level: `direct`) as "Converting 9223372036854775807 to JsValue as
  // Integer, but it is outside the JavaScript safe-integer range".
  const fresh = await startKeyward({ origin: origin.url, direct: true });
  try {
    const unknown = await fresh.request('GET', USERS, { headers: { authorization: `Bearer ${makeKey()}` } });
    assert.equal(unknown.status, 401, unknown.text);
    const made = await fresh.admin('POST', '/api_keys', { api_key: { name: 'safe integers', permissions: ['users:read'] } });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const allowed = await fresh.request('GET', USERS, { headers: { authorization: `Bearer ${made.body.data.api_key}` } });
    assert.equal(allowed.status, 200, allowed.text);
    assert.match(fresh.log(), /GET \/api\/v2\/projects\/7\/users/, 'the debug log is captured');
    assert.doesNotMatch(fresh.log(), /outside the JavaScript safe-integer range/);
  } finally {
    await fresh.stop();
  }
});
