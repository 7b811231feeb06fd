// Browsers as clients (contract section 11), end to end under `wrangler dev` with a real origin:
// CORS preflights answered at the edge or passed through, CORS headers on forwards and on every
// kind of denial, keys bound to websites (origin_allowlist), HEAD checked as GET, and the 400s for
// bad settings. The same behaviour in real Chromium is in tests/browser/cross-origin.test.mjs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { keywardForFile } from '../support/per-file.mjs';
import { ROOT } from '../support/keyward.mjs';
import { makeKey, digest, typo } from '../support/keys.mjs';

const APP = 'https://app.example.com';
const USERS = '/api/v2/projects/7/users';
const EVENTS = '/api/v2/webhook_events';
const defaultPolicy = JSON.parse(readFileSync(path.join(ROOT, 'config/default-policy.json'), 'utf8'));
const CORS = {
  allowed_origins: [APP, 'https://*.example.org', 'http://localhost:5173'],
  allowed_headers: ['X-Request-Id'],
  expose_headers: ['X-Trace-Id'],
  max_age: 600,
};
// A rule naming HEAD itself, after the GET rule for the same path.
const POLICY = {
  rules: [...defaultPolicy.rules, { method: 'HEAD', path: EVENTS, permission: 'webhook_events:peek' }],
  cors: CORS,
};

const { origin, kw } = keywardForFile({}, async (kw) => {
  const r = await kw.admin('PUT', '/policy', POLICY);
  assert.equal(r.status, 200, r.text);
});

async function createKey(attributes = {}) {
  const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'cors test', permissions: ['users:read'], ...attributes } });
  assert.equal(r.status, 201, r.text);
  return { key: r.body.data.api_key, id: r.body.data.id };
}

const preflight = (p, requestOrigin, method = 'GET', extra = {}) => kw.request('OPTIONS', p, {
  headers: { origin: requestOrigin, 'access-control-request-method': method, 'access-control-request-headers': 'authorization,content-type', ...extra },
});

const corsHeaders = (r) => Object.fromEntries(Object.entries(r.headers).filter(([name]) => name.startsWith('access-control-')));
const varies = (r) => (r.headers.vary ?? '').split(',').map((v) => v.trim().toLowerCase()).includes('origin');

function assertGrantedTo(r, requestOrigin, what) {
  assert.equal(r.headers['access-control-allow-origin'], requestOrigin, `${what}: ${r.status} ${JSON.stringify(r.headers)}`);
  assert.ok(varies(r), `${what}: Vary: Origin`);
  const exposed = r.headers['access-control-expose-headers'].split(',').map((s) => s.trim());
  for (const h of ['retry-after', 'ratelimit', 'ratelimit-policy', 'x-trace-id']) assert.ok(exposed.includes(h), `${what}: exposes ${h}`);
  assert.equal(r.headers['access-control-allow-credentials'], undefined, `${what}: never credentials`);
}

function assertDenied(r, status, code, what = code) {
  assert.equal(r.status, status, `${what}: expected ${status} ${code}, got ${r.status} ${r.text}`);
  assert.equal(r.body.success, false, what);
  assert.equal(r.body.error_code, code, what);
}

test('a preflight from an allowed origin is answered at the edge: 204, no key, the origin not called', async () => {
  origin.clear();
  const r = await preflight(USERS, APP, 'GET', { 'x-keyward-key-id': 'spoofed' });
  assert.equal(r.status, 204, r.text);
  assert.equal(r.text, '');
  assert.equal(r.headers['access-control-allow-origin'], APP);
  assert.ok(varies(r));
  assert.equal(r.headers['access-control-allow-methods'], 'GET');
  assert.deepEqual(r.headers['access-control-allow-headers'].split(', '), ['authorization', 'content-type', 'x-api-key', 'x-request-id']);
  assert.equal(r.headers['access-control-max-age'], '600');
  assert.equal(r.headers['access-control-allow-credentials'], undefined);
  const put = await preflight('/api/v2/projects/7/users/9', 'http://localhost:5173', 'PUT');
  assert.equal(put.status, 204, put.text);
  assert.equal(put.headers['access-control-allow-methods'], 'PUT');
  const head = await preflight(USERS, APP, 'HEAD');
  assert.equal(head.status, 204, 'HEAD is allowed where GET is');
  assert.equal(origin.seen.length, 0, 'no preflight reached the origin');
});

test('a preflight from a wildcard origin: any subdomain, never the domain itself or a look-alike', async () => {
  for (const o of ['https://shop.example.org', 'https://a.b.example.org']) {
    const r = await preflight(USERS, o);
    assert.equal(r.status, 204, `${o}: ${r.text}`);
    assert.equal(r.headers['access-control-allow-origin'], o);
  }
  for (const o of ['https://example.org', 'https://evilexample.org', 'https://shop.example.org.evil.net', 'http://shop.example.org']) {
    const r = await preflight(USERS, o);
    assertDenied(r, 403, 'ORIGIN_NOT_ALLOWED', o);
    assert.deepEqual(corsHeaders(r), {}, `${o}: no CORS headers`);
  }
});

test('a preflight from any other origin is refused with 403 and no CORS headers', async () => {
  origin.clear();
  for (const o of ['https://evil.net', 'https://app.example.com.evil.net', 'https://evilexample.com', 'null', 'http://app.example.com', 'https://app.example.com:8443']) {
    const r = await preflight(USERS, o);
    assertDenied(r, 403, 'ORIGIN_NOT_ALLOWED', o);
    assert.deepEqual(corsHeaders(r), {}, `${o}: no CORS headers`);
  }
  assert.equal(origin.seen.length, 0);
});

test('a preflight for a method and path no rule allows is refused, without a grant of any method', async () => {
  origin.clear();
  for (const [p, method] of [['/nowhere', 'GET'], [USERS, 'DELETE'], ['/v4/events/x', 'GET'], [USERS, 'PATCH']]) {
    const r = await preflight(p, APP, method);
    assertDenied(r, 403, 'ROUTE_NOT_ALLOWED', `${method} ${p}`);
    assert.equal(r.headers['access-control-allow-methods'], undefined);
  }
  assertDenied(await preflight('/api/v2/projects/%2F/users', APP), 400, 'BAD_REQUEST');
  assert.equal(origin.seen.length, 0);
});

test('an OPTIONS without Access-Control-Request-Method is not a preflight: it needs a key', async () => {
  const r = await kw.request('OPTIONS', USERS, { headers: { origin: APP } });
  assertDenied(r, 401, 'MISSING_KEY');
  assertGrantedTo(r, APP, 'plain OPTIONS');
});

test('CORS headers on a forwarded answer to an allowed origin, and none for others', async () => {
  const { key } = await createKey();
  origin.clear();
  const r = await kw.request('GET', USERS, { headers: { authorization: `Bearer ${key}`, origin: APP } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.origin, true);
  assertGrantedTo(r, APP, 'forward');
  assert.equal(origin.last().headers.origin, APP, 'the origin sees the Origin header');
  const wildcard = await kw.request('GET', USERS, { headers: { authorization: `Bearer ${key}`, origin: 'https://shop.example.org' } });
  assertGrantedTo(wildcard, 'https://shop.example.org', 'forward to a wildcard origin');
  // A key without an origin_allowlist works from any website, but only allowed origins get a grant.
  const other = await kw.request('GET', USERS, { headers: { authorization: `Bearer ${key}`, origin: 'https://evil.net' } });
  assert.equal(other.status, 200);
  assert.deepEqual(corsHeaders(other), {});
  assert.ok(varies(other));
  const none = await kw.request('GET', USERS, { headers: { authorization: `Bearer ${key}` } });
  assert.equal(none.status, 200);
  assert.deepEqual(corsHeaders(none), {});
});

test('with cors in the policy, keyward replaces the origin\'s own CORS headers and keeps its Vary', async () => {
  const { key } = await createKey();
  const own = JSON.stringify({ 'access-control-allow-origin': '*', 'access-control-allow-credentials': 'true', vary: 'Accept-Encoding' });
  const headers = { authorization: `Bearer ${key}`, 'x-test-response-headers': own };
  const mine = await kw.request('GET', USERS, { headers: { ...headers, origin: APP } });
  assert.equal(mine.status, 200);
  assertGrantedTo(mine, APP, 'an allowed origin');
  assert.match(mine.headers.vary, /Accept-Encoding/);
  const other = await kw.request('GET', USERS, { headers: { ...headers, origin: 'https://evil.net' } });
  assert.equal(other.status, 200);
  assert.deepEqual(corsHeaders(other), {}, 'the origin\'s * grants nothing the policy does not');
  assert.match(other.headers.vary, /Accept-Encoding, Origin/);
  // Without an Origin the answer is left as the origin made it.
  const plain = await kw.request('GET', USERS, { headers });
  assert.equal(plain.headers['access-control-allow-origin'], '*');
});

test('CORS headers on each kind of denial, so a page can read the error code', async () => {
  const reader = await createKey();
  const revoked = await createKey();
  assert.equal((await kw.admin('POST', `/api_keys/${revoked.id}/revoke`)).status, 200);
  const expired = await createKey({ expires_at: '2020-01-01T00:00:00Z' });
  const profile = await createKey({ type: 'profile', profile_id: 'p-1', permissions: ['profiles:update'] });
  const fenced = await createKey({ ip_allowlist: ['203.0.113.0/24'] });
  const events = await createKey({ permissions: ['events:create'], event_denylist: ['purchase'] });
  const bound = await createKey({ origin_allowlist: [APP] });
  const cases = [
    ['MISSING_KEY', 401, 'GET', USERS, {}],
    ['MALFORMED_KEY', 401, 'GET', USERS, { 'x-api-key': typo(reader.key) }],
    ['UNKNOWN_KEY', 401, 'GET', USERS, { 'x-api-key': makeKey('kw_live') }],
    ['KEY_REVOKED', 401, 'GET', USERS, { 'x-api-key': revoked.key }],
    ['KEY_EXPIRED', 401, 'GET', USERS, { 'x-api-key': expired.key }],
    ['BAD_REQUEST', 400, 'GET', USERS, { 'x-api-key': reader.key, authorization: `Bearer ${revoked.key}` }],
    ['IP_NOT_ALLOWED', 403, 'GET', USERS, { 'x-api-key': fenced.key }],
    ['ORIGIN_NOT_ALLOWED', 403, 'GET', USERS, { 'x-api-key': bound.key }, 'https://shop.example.org'],
    ['ROUTE_NOT_ALLOWED', 403, 'GET', '/nowhere', { 'x-api-key': reader.key }],
    ['PERMISSION_DENIED', 403, 'DELETE', `${USERS}/1`, { 'x-api-key': reader.key }],
    ['PROFILE_MISMATCH', 403, 'PUT', '/v4/profiles/p-2', { 'x-api-key': profile.key }],
    ['EVENT_NOT_ALLOWED', 403, 'POST', '/v4/events/purchase', { 'x-api-key': events.key }],
  ];
  origin.clear();
  for (const [code, status, method, p, headers, from = APP] of cases) {
    const r = await kw.request(method, p, { headers: { ...headers, origin: from } });
    assertDenied(r, status, code);
    assertGrantedTo(r, from, code);
    // The same denial for a website that is not allowed: readable by no page.
    const elsewhere = await kw.request(method, p, { headers: { ...headers, origin: 'https://evil.net' } });
    assert.equal(elsewhere.status, status, `${code} from evil.net`);
    assert.deepEqual(corsHeaders(elsewhere), {}, `${code} from evil.net`);
  }
  assert.equal(origin.seen.length, 0, 'no denied request reached the origin');
});

test('origin_allowlist: Origin, else the Referer\'s origin; neither or a look-alike is refused', async () => {
  const { key } = await createKey({ origin_allowlist: [APP, 'https://*.example.com', 'http://localhost:3000'] });
  const at = (headers) => kw.request('GET', USERS, { headers: { 'x-api-key': key, ...headers } });
  for (const headers of [
    { origin: APP },
    { origin: 'https://shop.example.com' },
    { origin: 'https://a.b.example.com' },
    { origin: 'http://localhost:3000' },
    { referer: 'https://shop.example.com/checkout?step=2' },
    { referer: `${APP}/` },
  ]) {
    const r = await at(headers);
    assert.equal(r.status, 200, `${JSON.stringify(headers)}: ${r.text}`);
  }
  for (const headers of [
    {},
    { origin: 'https://app.example.com.evil.net' },
    { origin: 'https://evilexample.com' },
    { origin: 'https://example.com' },
    { origin: 'http://shop.example.com' },
    { origin: 'http://localhost:3001' },
    { origin: 'null', referer: `${APP}/` },
    { origin: 'https://evil.net', referer: `${APP}/` },
    { referer: 'https://app.example.com.evil.net/page' },
    { referer: 'https://evilexample.com/' },
  ]) {
    const r = await at(headers);
    assertDenied(r, 403, 'ORIGIN_NOT_ALLOWED', JSON.stringify(headers));
  }
  // The key's binding holds wherever the key is used: /ping and /verify too.
  assertDenied(await kw.request('GET', '/_keyward/v1/ping', { headers: { 'x-api-key': key } }), 403, 'ORIGIN_NOT_ALLOWED');
  assert.equal((await kw.request('GET', '/_keyward/v1/ping', { headers: { 'x-api-key': key, origin: APP } })).status, 200);
  const verified = await kw.admin('POST', '/verify', { key, method: 'GET', path: USERS, headers: { referer: 'https://evilexample.com/' } });
  assert.equal(verified.body.data.code, 'ORIGIN_NOT_ALLOWED');
  const fine = await kw.admin('POST', '/verify', { key, method: 'GET', path: USERS, headers: { origin: 'https://x.example.com' } });
  assert.equal(fine.body.data.code, 'VALID');
  // It comes after the IP allowlist and before the route in the decision's precedence.
  const both = await createKey({ origin_allowlist: [APP], ip_allowlist: ['203.0.113.0/24'], permissions: [] });
  assertDenied(await kw.request('GET', '/nowhere', { headers: { 'x-api-key': both.key, origin: 'https://evil.net' } }), 403, 'IP_NOT_ALLOWED');
  const open = await createKey({ origin_allowlist: [APP], permissions: [] });
  assertDenied(await kw.request('GET', '/nowhere', { headers: { 'x-api-key': open.key, origin: 'https://evil.net' } }), 403, 'ORIGIN_NOT_ALLOWED');
  assertDenied(await kw.request('GET', '/nowhere', { headers: { 'x-api-key': open.key, origin: APP } }), 403, 'ROUTE_NOT_ALLOWED');
});

test('HEAD is checked as GET and reaches the origin as HEAD; refused where GET would be', async () => {
  const { key } = await createKey();
  origin.clear();
  const r = await kw.request('HEAD', USERS, { headers: { 'x-api-key': key } });
  assert.equal(r.status, 200);
  assert.equal(r.text, '');
  assert.equal(origin.last().method, 'HEAD');
  const writer = await createKey({ permissions: ['users:create'] });
  origin.clear();
  assert.equal((await kw.request('HEAD', USERS, { headers: { 'x-api-key': writer.key } })).status, 403, 'no users:read');
  assert.equal((await kw.request('HEAD', '/v4/events/x', { headers: { 'x-api-key': key } })).status, 403, 'a POST-only route');
  assert.equal(origin.seen.length, 0);
  // The same through /verify, where the code can be read.
  const v = (k, p) => kw.admin('POST', '/verify', { key: k, method: 'HEAD', path: p }).then((x) => x.body.data);
  assert.deepEqual(await v(key, USERS).then((d) => [d.code, d.permission]), ['VALID', 'users:read']);
  assert.equal((await v(writer.key, USERS)).code, 'PERMISSION_DENIED');
  assert.equal((await v(key, '/v4/events/x')).code, 'ROUTE_NOT_ALLOWED');
  // A rule naming HEAD decides HEAD on its path, whatever the GET rule says.
  const reader = await createKey({ permissions: ['webhook_events:read'] });
  const peeker = await createKey({ permissions: ['webhook_events:peek'] });
  assert.equal((await kw.request('GET', EVENTS, { headers: { 'x-api-key': reader.key } })).status, 200);
  assert.equal((await kw.request('HEAD', EVENTS, { headers: { 'x-api-key': reader.key } })).status, 403);
  assert.equal((await v(reader.key, EVENTS)).permission, 'webhook_events:peek');
  origin.clear();
  assert.equal((await kw.request('HEAD', EVENTS, { headers: { 'x-api-key': peeker.key } })).status, 200);
  assert.equal(origin.last().method, 'HEAD');
});

test('bad cors settings get a 400 naming the field, and leave the policy as it was', async () => {
  for (const [cors, field] of [
    [{ allowed_origins: [APP, 'app.example.com'] }, 'cors.allowed_origins[1]'],
    [{ allowed_origins: ['https://*.com'] }, 'cors.allowed_origins[0]'],
    [{ allowed_origins: ['https://app.*.example.com'] }, 'cors.allowed_origins[0]'],
    [{ allowed_origins: [`${APP}/`] }, 'cors.allowed_origins[0]'],
    [{ allowed_origins: APP }, 'cors.allowed_origins'],
    [{}, 'cors.allowed_origins'],
    [{ allowed_origins: [], allowed_headers: ['x-ok', 'not a header'] }, 'cors.allowed_headers[1]'],
    [{ allowed_origins: [], expose_headers: ['*'] }, 'cors.expose_headers[0]'],
    [{ allowed_origins: [], max_age: -5 }, 'cors.max_age'],
    [{ allowed_origins: [], max_age: 100000 }, 'cors.max_age'],
    [{ allowed_origins: [], allow_credentials: true }, 'cors.allow_credentials'],
    ['yes', 'cors'],
  ]) {
    const r = await kw.admin('PUT', '/policy', { rules: [], cors });
    assertDenied(r, 400, 'BAD_REQUEST', field);
    assert.ok(r.body.error_message.startsWith(`${field}: `), `${field}: ${r.body.error_message}`);
  }
  const stored = await kw.admin('GET', '/policy');
  assert.deepEqual(stored.body.data.cors, CORS);
  assert.equal(stored.body.data.rules.length, POLICY.rules.length);
});

test('bad origin_allowlist entries get a 400 naming the entry, on create, update and push', async () => {
  const { id } = await createKey({ origin_allowlist: ['https://*.example.com'] });
  const bad = [
    [['https://ok.example.com', 'ok.example.com'], 'origin_allowlist[1]'],
    [['https://*.com'], 'origin_allowlist[0]'],
    [['https://app.*.example.com'], 'origin_allowlist[0]'],
    [['https://*example.com'], 'origin_allowlist[0]'],
    [['https://app.example.com/path'], 'origin_allowlist[0]'],
    [['https://app.example.com:99999'], 'origin_allowlist[0]'],
    [['https://user@app.example.com'], 'origin_allowlist[0]'],
    [[42], 'origin_allowlist[0]'],
    ['https://app.example.com', 'origin_allowlist'],
  ];
  for (const [list, field] of bad) {
    const calls = [
      ['POST', '/api_keys', { api_key: { name: 'bad', origin_allowlist: list } }],
      ['PUT', `/api_keys/${id}`, { api_key: { origin_allowlist: list } }],
      ['PUT', `/keys/${digest(makeKey('kw_live'))}`, { api_key: { name: 'pushed', version: 1, origin_allowlist: list } }],
    ];
    for (const [method, p, body] of calls) {
      const r = await kw.admin(method, p, body);
      assertDenied(r, 400, 'BAD_REQUEST', `${method} ${p} ${field}`);
      assert.ok(r.body.error_message.startsWith(`${field}: `), r.body.error_message);
    }
  }
  const kept = await kw.admin('GET', `/api_keys/${id}`);
  assert.deepEqual(kept.body.data.origin_allowlist, ['https://*.example.com']);
});

test('without cors in the policy, a preflight goes to the origin unchanged and unauthenticated', async () => {
  const { cors: _none, ...withoutCors } = POLICY;
  assert.equal((await kw.admin('PUT', '/policy', withoutCors)).status, 200);
  try {
    origin.clear();
    const r = await preflight(USERS, 'https://evil.net', 'DELETE', { 'x-keyward-key-id': 'spoofed' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.origin, true);
    const seen = origin.last();
    assert.equal(seen.method, 'OPTIONS');
    assert.equal(seen.path, USERS);
    assert.equal(seen.headers.origin, 'https://evil.net');
    assert.equal(seen.headers['access-control-request-method'], 'DELETE');
    assert.equal(seen.headers['x-keyward-key-id'], undefined, 'no identity: the origin must not trust an OPTIONS');
    // Other answers carry no CORS headers at all without cors.
    const { key } = await createKey();
    const forwarded = await kw.request('GET', USERS, { headers: { 'x-api-key': key, origin: APP } });
    assert.equal(forwarded.status, 200);
    assert.deepEqual(corsHeaders(forwarded), {});
    assertDenied(await kw.request('OPTIONS', USERS, { headers: { origin: APP } }), 401, 'MISSING_KEY');
  } finally {
    assert.equal((await kw.admin('PUT', '/policy', POLICY)).status, 200);
  }
});
