// The security headers of everything keyward itself answers, against the built Worker under
// `wrangler dev`: each console file carries the console's Content-Security-Policy, nosniff,
// no-referrer and DENY framing; every JSON answer (management API, gate denials) carries nosniff,
// no-referrer and a CSP that lets nothing run; 401s name the Bearer scheme; what the origin
// answers is forwarded without keyward's headers added.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keywardForFile } from '../support/per-file.mjs';

const { origin, kw } = keywardForFile();

const USERS = '/api/v2/projects/1/users';

/** The CSP as a map of directive → list of sources. */
function csp(r) {
  const header = r.headers['content-security-policy'];
  assert.equal(typeof header, 'string', `no Content-Security-Policy on ${r.status} ${r.text.slice(0, 80)}`);
  return Object.fromEntries(header.split(';').map((d) => d.trim()).filter(Boolean)
    .map((d) => { const [name, ...sources] = d.split(/\s+/); return [name, sources]; }));
}

function assertConsoleHeaders(r, what, status = 200) {
  assert.equal(r.status, status, `${what}: ${r.text.slice(0, 200)}`);
  const policy = csp(r);
  assert.deepEqual(policy['default-src'], ["'self'"], what);
  // Scripts only from the console's own files; wasm may compile, nothing may eval; no inline.
  assert.deepEqual(policy['script-src'], ["'self'", "'wasm-unsafe-eval'"], what);
  assert.deepEqual(policy['style-src'], ["'self'"], what);
  for (const directive of ['script-src', 'style-src', 'default-src', 'img-src', 'connect-src']) {
    for (const source of policy[directive] ?? []) {
      assert.doesNotMatch(source, /^'unsafe-inline'$|^'unsafe-eval'$|^'unsafe-hashes'$|\*|^data:$|^https?:$/, `${what}: ${directive} ${source}`);
    }
  }
  assert.deepEqual(policy['frame-ancestors'], ["'none'"], what);
  assert.deepEqual(policy['base-uri'], ["'none'"], what);
  assert.deepEqual(policy['object-src'], ["'none'"], what);
  assert.equal(r.headers['x-content-type-options'], 'nosniff', what);
  assert.equal(r.headers['referrer-policy'], 'no-referrer', what);
  assert.equal(r.headers['x-frame-options'], 'DENY', what);
}

function assertApiHeaders(r, what) {
  const policy = csp(r);
  assert.deepEqual(policy['default-src'], ["'none'"], what);
  assert.deepEqual(policy['frame-ancestors'], ["'none'"], what);
  assert.equal(r.headers['x-content-type-options'], 'nosniff', what);
  assert.equal(r.headers['referrer-policy'], 'no-referrer', what);
  assert.match(r.headers['content-type'], /^application\/json/, what);
}

test('every console file carries the CSP, nosniff, no-referrer and DENY framing', async () => {
  for (const file of ['', 'index.html', 'app.js', 'api.js', 'permissions.js', 'style.css', 'favicon.svg', 'logo.svg',
    'pkg/keyward.js', 'pkg/keyward_bg.wasm']) {
    const r = await kw.request('GET', `/_keyward/console/${file}`);
    assertConsoleHeaders(r, file || '(index)');
  }
  // The redirect to the console's index carries them too.
  const bare = await kw.request('GET', '/_keyward/console');
  assertConsoleHeaders(bare, '(redirect)', 302);
  assert.match(bare.headers.location, /\/_keyward\/console\/$/);
  // The types the CSP and nosniff rely on.
  assert.match((await kw.request('GET', '/_keyward/console/app.js')).headers['content-type'], /javascript/);
  assert.match((await kw.request('GET', '/_keyward/console/style.css')).headers['content-type'], /^text\/css/);
  assert.match((await kw.request('GET', '/_keyward/console/pkg/keyward_bg.wasm')).headers['content-type'], /^application\/wasm/);
});

test('the console page has no inline script, style attribute, on* handler or data: URL', async () => {
  const html = (await kw.request('GET', '/_keyward/console/')).text;
  assert.match(html, /<script type="module" src="app.js"><\/script>/);
  // Every <script> has a src and no body.
  for (const [, attrs, body] of html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)) {
    assert.match(attrs, /\bsrc=/, `inline script: ${body.slice(0, 60)}`);
    assert.equal(body.trim(), '');
  }
  assert.doesNotMatch(html, /\sstyle\s*=/i);
  assert.doesNotMatch(html, /\son[a-z]+\s*=/i);
  assert.doesNotMatch(html, /<style\b/i);
  assert.doesNotMatch(html, /(href|src)\s*=\s*["']?(data|javascript):/i);
  const css = (await kw.request('GET', '/_keyward/console/style.css')).text;
  assert.doesNotMatch(css, /url\(\s*["']?data:/i);
});

test('management answers carry nosniff, no-referrer and a CSP that lets nothing run', async () => {
  const list = await kw.admin('GET', '/api_keys');
  assert.equal(list.status, 200, list.text);
  assertApiHeaders(list, 'GET /api_keys');
  const created = await kw.admin('POST', '/api_keys', { api_key: { name: 'headers', permissions: ['users:read'] } });
  assert.equal(created.status, 201, created.text);
  assertApiHeaders(created, 'POST /api_keys');
  const bad = await kw.admin('POST', '/api_keys', { api_key: { name: 7 } });
  assert.equal(bad.status, 400, bad.text);
  assertApiHeaders(bad, 'a 400');
  const missing = await kw.request('GET', '/_keyward/console/no-such-file.js');
  assert.equal(missing.status, 404, missing.text);
  assertApiHeaders(missing, 'a console 404');
  const ping = await kw.request('GET', '/_keyward/v1/ping', { headers: { authorization: `Bearer ${created.body.data.api_key}` } });
  assert.equal(ping.status, 200, ping.text);
  assertApiHeaders(ping, 'ping');
});

test('401s carry WWW-Authenticate: Bearer; other refusals do not', async () => {
  const noToken = await kw.request('GET', '/_keyward/v1/api_keys');
  assert.equal(noToken.status, 401, noToken.text);
  assert.match(noToken.headers['www-authenticate'] ?? '', /^Bearer\b/);
  assertApiHeaders(noToken, 'management 401');
  const wrongToken = await kw.admin('GET', '/api_keys', undefined, 'not-the-token');
  assert.equal(wrongToken.status, 401, wrongToken.text);
  assert.match(wrongToken.headers['www-authenticate'] ?? '', /^Bearer\b/);
  const gateMissing = await kw.request('GET', USERS);
  assert.equal(gateMissing.status, 401, gateMissing.text);
  assert.match(gateMissing.headers['www-authenticate'] ?? '', /^Bearer\b/);
  assertApiHeaders(gateMissing, 'gate 401');
  const created = await kw.admin('POST', '/api_keys', { api_key: { name: 'reader', permissions: ['users:read'] } });
  const forbidden = await kw.request('DELETE', `${USERS}/1`, { headers: { authorization: `Bearer ${created.body.data.api_key}` } });
  assert.equal(forbidden.status, 403, forbidden.text);
  assert.equal(forbidden.headers['www-authenticate'], undefined);
  assertApiHeaders(forbidden, 'gate 403');
});

test("an allowed request gets the origin's own headers, not keyward's", async () => {
  const created = await kw.admin('POST', '/api_keys', { api_key: { name: 'forward', permissions: ['users:read'] } });
  const r = await kw.request('GET', USERS, { headers: { authorization: `Bearer ${created.body.data.api_key}` } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.origin, true);
  assert.equal(r.headers['content-security-policy'], undefined);
  assert.equal(r.headers['x-frame-options'], undefined);
});

test('an event body with invalid UTF-8 anywhere is refused, not scanned past (found by fuzzing)', async () => {
  const created = await kw.admin('POST', '/api_keys', { api_key: { name: 'events', permissions: ['events:create'], event_denylist: ['denied'] } });
  const key = created.body.data.api_key;
  const send = (bytes) => kw.request('POST', '/v4/events', {
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: Buffer.from(bytes, 'latin1'),
  });
  origin.clear();
  const fine = await send('{"action":"page_visit","x":"ok"}');
  assert.equal(fine.status, 200, fine.text);
  // A skipped string holding a byte that is not UTF-8: an origin that drops or replaces it could
  // read another field than the gate did (here a second "action").
  for (const body of ['{"action":"page_visit","x":"\xff"}', '{"action":"page_visit","act\xffion":"denied"}']) {
    const r = await send(body);
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error_code, 'BAD_REQUEST');
    assert.match(r.body.error_message, /not valid JSON/);
  }
  assert.equal(origin.seen.length, 1, 'a refused body reached the origin');
});

test('an expiry that would leave years 0000-9999 once in UTC is refused by name (found with the record fuzz target)', async () => {
  for (const at of ['0000-01-01T00:00:00+23:59', '9999-12-31T23:59:59-00:01']) {
    const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'far', permissions: ['users:read'], expires_at: at } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error_code, 'BAD_REQUEST');
    assert.match(r.body.error_message, /expires_at/);
  }
  const edge = await kw.admin('POST', '/api_keys', { api_key: { name: 'far', permissions: ['users:read'], expires_at: '9999-12-31T23:59:59+00:01' } });
  assert.equal(edge.status, 201, edge.text);
  const r = await kw.request('GET', USERS, { headers: { authorization: `Bearer ${edge.body.data.api_key}` } });
  assert.equal(r.status, 200, r.text);
});
