// The customers' portal end to end against the built Worker under `wrangler dev` (contract
// section 14, docs/portal.md): portal_sessions' inputs, the one-time link and its cookie, the
// session's API acting as the workspace's management key (audited as portal:<user>), CSRF, and
// isolation: a session of workspace A trying B's ids, digests, usage and audit gets 404 every
// time, and nothing of B changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { keywardForFile } from '../support/per-file.mjs';
import { digest } from '../support/keys.mjs';

// One second of ttl_seconds lasts 20 ms here: a 60 s link expires in 1.2 s.
const MS_PER_SECOND = 20;
const { kw } = keywardForFile({ vars: { KEYWARD_TEST_PORTAL_MS_PER_SECOND: String(MS_PER_SECOND) } });

const USERS = '/api/v2/projects/1/users';
const admin = (method, p, body, token) => kw.admin(method, p, body, token);

function refused(r, status, code, field) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.body.success, false, r.text);
  assert.equal(r.body.data, null, r.text);
  assert.equal(r.body.error_code, code, r.text);
  if (field) assert.match(r.body.error_message, new RegExp(`^${field}`), r.text);
}

async function ok(promise, status = 200) {
  const r = await promise;
  assert.equal(r.status, status, r.text);
  assert.equal(r.body.success, true, r.text);
  return r.body.data;
}

let seq = 0;
const fresh = (stem) => `${stem}-${Date.now().toString(36)}-${seq++}`;

async function workspace(ceiling = ['users:*', 'projects:read']) {
  const id = fresh('ws');
  await ok(admin('POST', '/workspaces', { workspace: { id, permission_ceiling: ceiling } }), 201);
  return id;
}

const linkPath = (url) => {
  const u = new URL(url);
  return u.pathname + u.search;
};

/** A portal session of `ws` as `user`: the link opened, its cookie returned. */
async function session(ws, user = 'cust-1', token, ttl) {
  const data = await ok(admin('POST', `/workspaces/${ws}/portal_sessions`, { return_url: 'https://app.example.com/account', user, ...(ttl ? { ttl_seconds: ttl } : {}) }, token), 201);
  const r = await kw.request('GET', linkPath(data.url));
  assert.equal(r.status, 303, r.text);
  const cookie = r.headers['set-cookie'][0].split(';')[0];
  return { cookie, url: data.url };
}

/** A portal API call with the session's cookie and (for writes) the CSRF header. */
const portal = (s, method, p, body, { csrf = method !== 'GET', headers = {} } = {}) =>
  kw.request(method, `/_keyward/portal/api/${p}`, {
    body,
    headers: { cookie: s.cookie, ...(csrf ? { 'x-keyward-portal': '1' } : {}), ...headers },
  });

test('portal_sessions: bad inputs are 400 naming the field; unknown workspace 404; no token 401', async () => {
  const ws = await workspace();
  const p = `/workspaces/${ws}/portal_sessions`;
  const good = { return_url: 'https://app.example.com/account', user: 'u1' };
  const cases = [
    [{ user: 'u1' }, 'return_url'],
    [{ ...good, return_url: 'javascript:alert(1)' }, 'return_url'],
    [{ ...good, return_url: '/relative' }, 'return_url'],
    [{ ...good, return_url: 7 }, 'return_url'],
    [{ ...good, ttl_seconds: 59 }, 'ttl_seconds'],
    [{ ...good, ttl_seconds: 3601 }, 'ttl_seconds'],
    [{ ...good, ttl_seconds: 90.5 }, 'ttl_seconds'],
    [{ ...good, ttl_seconds: '900' }, 'ttl_seconds'],
    [{ return_url: good.return_url }, 'user'],
    [{ ...good, user: '' }, 'user'],
    [{ ...good, user: 'a\u0000b' }, 'user'],
    [{ ...good, user: 'x'.repeat(129) }, 'user'],
    [{ ...good, logo_url: 'ftp://x' }, 'logo_url'],
    [{ ...good, title: '' }, 'title'],
    [{ ...good, colour: 'red' }, 'colour'],
    [[good], 'body'],
    ['{not json', 'body'],
  ];
  for (const [body, field] of cases) refused(await admin('POST', p, body), 400, 'BAD_REQUEST', field);
  refused(await admin('POST', `/workspaces/${fresh('nope')}/portal_sessions`, good), 404, 'NOT_FOUND');
  refused(await admin('POST', `/workspaces/bad%20id/portal_sessions`, good), 400, 'BAD_REQUEST', 'workspace');
  refused(await kw.request('POST', `/_keyward/v1${p}`, { body: good }), 401, 'UNAUTHORIZED');
  const r = await admin('GET', p);
  refused(r, 405, 'METHOD_NOT_ALLOWED');
  const made = await ok(admin('POST', p, { ...good, ttl_seconds: 60 }), 201);
  assert.match(made.url, /^http:\/\/127\.0\.0\.1:\d+\/_keyward\/portal\/\?link=[0-9a-f]{64}$/);
  assert.equal(made.workspace, ws);
  assert.equal(made.user, 'u1');
  assert.ok(Date.parse(made.expires_at) > Date.now() - 5_000);
});

test('the link: exchanged once for a HttpOnly, SameSite=Strict cookie on /_keyward/portal/; reused, unknown and expired links get a clear page', async () => {
  const ws = await workspace();
  const data = await ok(admin('POST', `/workspaces/${ws}/portal_sessions`, { return_url: 'https://app.example.com/', user: 'u2' }), 201);
  const r = await kw.request('GET', linkPath(data.url));
  assert.equal(r.status, 303, r.text);
  assert.equal(r.headers.location, '/_keyward/portal/');
  const cookie = r.headers['set-cookie'][0];
  assert.match(cookie, /^keyward_portal=[0-9a-f]{64}; /);
  assert.match(cookie, /; HttpOnly/);
  assert.match(cookie, /; SameSite=Strict/);
  assert.match(cookie, /; Path=\/_keyward\/portal\//);
  assert.doesNotMatch(cookie, /Secure/, 'plain http here: Secure only over https');
  assert.equal(r.headers['cache-control'], 'no-store');

  const again = await kw.request('GET', linkPath(data.url));
  assert.equal(again.status, 410);
  assert.match(again.headers['content-type'], /^text\/html/);
  assert.match(again.text, /already used/);
  assert.equal(again.headers['set-cookie'], undefined);

  const unknown = await kw.request('GET', `/_keyward/portal/?link=${'0'.repeat(64)}`);
  assert.equal(unknown.status, 401);
  assert.match(unknown.text, /not valid/);
  assert.match(unknown.headers['content-security-policy'], /default-src 'none'/);

  const late = await ok(admin('POST', `/workspaces/${ws}/portal_sessions`, { return_url: 'https://app.example.com/', user: 'u2', ttl_seconds: 60 }), 201);
  await sleep(60 * MS_PER_SECOND + 300);
  const expired = await kw.request('GET', linkPath(late.url));
  assert.equal(expired.status, 410);
  assert.match(expired.text, /expired/);
  assert.equal(expired.headers['set-cookie'], undefined);
});

test('the session expires with its ttl; a forged or missing cookie is 401', async () => {
  const ws = await workspace();
  const s = await session(ws, 'u3', undefined, 60);
  assert.equal((await portal(s, 'GET', 'api_keys')).status, 200);
  await sleep(60 * MS_PER_SECOND + 300);
  refused(await portal(s, 'GET', 'api_keys'), 401, 'UNAUTHORIZED');
  refused(await portal({ cookie: `keyward_portal=${'a'.repeat(64)}` }, 'GET', 'api_keys'), 401, 'UNAUTHORIZED');
  refused(await kw.request('GET', '/_keyward/portal/api/api_keys'), 401, 'UNAUTHORIZED');
});

test('the session acts as the workspace management key: create within the ceiling, use, lifecycle; audited as portal:<user>', async () => {
  const ws = await workspace(['users:*', 'projects:read']);
  const s = await session(ws, 'alice@customer');
  const info = await ok(portal(s, 'GET', 'session'));
  assert.deepEqual([info.workspace, info.user, info.return_url], [ws, 'alice@customer', 'https://app.example.com/account']);
  assert.deepEqual(info.permission_ceiling, ['users:*', 'projects:read']);

  const key = await ok(portal(s, 'POST', 'api_keys', { api_key: { name: 'mine', permissions: ['users:read'] } }), 201);
  assert.equal(key.workspace, ws);
  assert.equal((await kw.request('GET', USERS, { headers: { authorization: `Bearer ${key.api_key}` } })).status, 200);
  // Beyond the ceiling: refused, nothing written.
  refused(await portal(s, 'POST', 'api_keys', { api_key: { name: 'greedy', permissions: ['billing:read'] } }), 403, 'PERMISSION_DENIED', 'permissions');
  // Naming another workspace in the body: refused.
  refused(await portal(s, 'POST', 'api_keys', { api_key: { name: 'moved', workspace: 'other' } }), 400, 'BAD_REQUEST', 'workspace');
  assert.deepEqual((await ok(portal(s, 'GET', 'api_keys'))).map((k) => k.name), ['mine']);

  assert.equal((await ok(portal(s, 'PUT', `api_keys/${key.id}`, { api_key: { active: false } }))).status, 'expired');
  assert.equal((await ok(portal(s, 'PUT', `api_keys/${key.id}`, { api_key: { active: true } }))).status, 'active');
  const rolled = await ok(portal(s, 'POST', `api_keys/${key.id}/roll`, { grace_seconds: 0 }), 201);
  assert.equal(rolled.workspace, ws);
  assert.equal((await ok(portal(s, 'POST', `api_keys/${rolled.id}/revoke`))).status, 'revoked');
  await ok(portal(s, 'DELETE', `api_keys/${rolled.id}`));
  await ok(portal(s, 'GET', `api_keys/${key.id}/usage`));

  const audit = await ok(admin('GET', `/audit?workspace=${ws}&per_page=100`));
  const mine = audit.filter((e) => e.actor === 'portal:alice@customer').map((e) => e.action);
  for (const action of ['create', 'expire', 'reactivate', 'roll', 'revoke', 'delete']) assert.ok(mine.includes(action), `${action} in ${mine}`);
  assert.ok(audit.some((e) => e.actor === 'admin' && e.action === 'portal_session_create'));
  // The session's own audit view is its workspace's.
  const seen = await ok(portal(s, 'GET', 'audit?per_page=100'));
  assert.ok(seen.length > 0 && seen.every((e) => e.workspace === ws), JSON.stringify(seen.slice(0, 2)));
});

test('a session made by a management key holds what that key holds now, and its workspace only; it ends with that key, or on sign-out', async () => {
  const a = await workspace(['users:*', 'keys:*']);
  const b = await workspace(['users:*', 'keys:*']);
  const readOnly = await ok(admin('POST', `/workspaces/${a}/api_keys`, { api_key: { name: 'ro', permissions: ['keys:read'] } }), 201);
  const full = await ok(admin('POST', `/workspaces/${a}/api_keys`, { api_key: { name: 'mgmt', permissions: ['keys:*', 'users:read'] } }), 201);
  // A management key of A cannot open B's portal.
  refused(await admin('POST', `/workspaces/${b}/portal_sessions`, { return_url: 'https://x.example/', user: 'u' }, full.api_key), 404, 'NOT_FOUND');
  const ro = await session(a, 'viewer', readOnly.api_key);
  await ok(portal(ro, 'GET', 'api_keys'));
  refused(await portal(ro, 'POST', 'api_keys', { api_key: { name: 'x' } }), 403, 'PERMISSION_DENIED');
  const s = await session(a, 'editor', full.api_key);
  await ok(portal(s, 'POST', 'api_keys', { api_key: { name: 'ok', permissions: ['users:read'] } }), 201);
  // Beyond what the creating key holds (users:write is within A's ceiling, not within the key).
  refused(await portal(s, 'POST', 'api_keys', { api_key: { name: 'x', permissions: ['users:write'] } }), 403, 'PERMISSION_DENIED', 'permissions');
  assert.deepEqual((await ok(portal(s, 'GET', 'session'))).holds, ['keys:*', 'users:read']);
  // The session follows its creator: narrowed, it is narrowed; expired or revoked, it ends.
  await ok(admin('PUT', `/api_keys/${full.id}`, { api_key: { permissions: ['keys:read'] } }));
  refused(await portal(s, 'POST', 'api_keys', { api_key: { name: 'y' } }), 403, 'PERMISSION_DENIED');
  await ok(admin('PUT', `/api_keys/${full.id}`, { api_key: { active: false } }));
  refused(await portal(s, 'GET', 'api_keys'), 401, 'UNAUTHORIZED');
  await ok(admin('PUT', `/api_keys/${full.id}`, { api_key: { active: true } }));
  await ok(portal(s, 'GET', 'api_keys'));
  await ok(admin('POST', `/api_keys/${full.id}/revoke`));
  refused(await portal(s, 'GET', 'session'), 401, 'UNAUTHORIZED');
  // Signing out ends a session at once.
  const out = await portal(ro, 'POST', 'logout');
  assert.equal(out.status, 200, out.text);
  assert.match(out.headers['set-cookie'][0], /^keyward_portal=; .*Max-Age=0/);
  refused(await portal(ro, 'GET', 'api_keys'), 401, 'UNAUTHORIZED');
});

test('CSRF: a state-changing call without the X-Keyward-Portal header, or cross-site, is refused and changes nothing', async () => {
  const ws = await workspace();
  const s = await session(ws);
  const before = (await ok(portal(s, 'GET', 'api_keys'))).length;
  // What a cross-site form can send: the cookie (were it not Strict) and a form body, no header.
  let r = await portal(s, 'POST', 'api_keys', 'api_key=x', { csrf: false, headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://evil.example' } });
  refused(r, 403, 'CSRF_REFUSED');
  r = await portal(s, 'POST', 'api_keys', { api_key: { name: 'x' } }, { csrf: false });
  refused(r, 403, 'CSRF_REFUSED');
  r = await portal(s, 'POST', 'api_keys', { api_key: { name: 'x' } }, { headers: { 'sec-fetch-site': 'cross-site' } });
  refused(r, 403, 'CSRF_REFUSED');
  const k = await ok(portal(s, 'POST', 'api_keys', { api_key: { name: 'real' } }), 201);
  refused(await portal(s, 'DELETE', `api_keys/${k.id}`, undefined, { csrf: false }), 403, 'CSRF_REFUSED');
  refused(await portal(s, 'POST', `api_keys/${k.id}/revoke`, undefined, { csrf: false }), 403, 'CSRF_REFUSED');
  assert.equal((await ok(portal(s, 'GET', `api_keys/${k.id}`))).status, 'active');
  assert.equal((await ok(portal(s, 'GET', 'api_keys'))).length, before + 1);
});

test('isolation: a session of A trying B\'s ids, digests, usage and audit gets 404 every time, and nothing of B changes', async () => {
  const a = await workspace();
  const b = await workspace();
  const theirs = await ok(admin('POST', `/workspaces/${b}/api_keys`, { api_key: { name: 'b-key', permissions: ['users:read'] } }), 201);
  const bDigest = digest(theirs.api_key);
  const s = await session(a, 'mallory');
  const snapshot = async () => JSON.stringify(await ok(admin('GET', `/api_keys/${theirs.id}`)));
  const bAudit = async () => (await ok(admin('GET', `/audit?workspace=${b}&per_page=500`))).length;
  const [was, auditWas] = [await snapshot(), await bAudit()];

  const attempts = [
    ['GET', `api_keys/${theirs.id}`],
    ['GET', `api_keys/${theirs.id}/usage`],
    ['PUT', `api_keys/${theirs.id}`, { api_key: { active: false } }],
    ['PUT', `api_keys/${theirs.id}`, { api_key: { name: 'pwned' } }],
    ['POST', `api_keys/${theirs.id}/revoke`],
    ['POST', `api_keys/${theirs.id}/roll`, { grace_seconds: 0 }],
    ['DELETE', `api_keys/${theirs.id}`],
    ['PUT', `keys/${bDigest}`, { api_key: { name: 'pushed', active: false } }],
    ['GET', `audit?key_id=${theirs.id}`],
    ['GET', `audit?workspace=${b}`],
    ['GET', `api_keys?workspace=${b}`],
    ['GET', `workspaces/${b}/api_keys`],
    ['GET', `workspaces/${b}/usage`],
    ['GET', `workspaces/${b}`],
    ['POST', `workspaces/${b}/api_keys`, { api_key: { name: 'planted' } }],
    ['POST', `workspaces/${b}/portal_sessions`, { return_url: 'https://x.example/', user: 'm' }],
  ];
  for (const [method, p, body] of attempts) {
    const r = await portal(s, method, p, body);
    assert.equal(r.status, 404, `${method} ${p}: ${r.text}`);
    assert.equal(r.body.error_code, 'NOT_FOUND', `${method} ${p}`);
  }
  // Bulk revocation by B's id and digest: reported not found, nothing revoked.
  const bulk = await ok(portal(s, 'POST', 'revocations', { ids: [theirs.id], hashes: [bDigest] }));
  assert.equal(bulk.revoked.length, 0, JSON.stringify(bulk));
  // verify with B's key answers as for a key it cannot see.
  const v = await portal(s, 'POST', 'verify', { key: theirs.api_key, method: 'GET', path: USERS });
  assert.notEqual(v.body?.data?.valid, true, v.text);
  // A's own list never shows B's key.
  assert.ok(!(await ok(portal(s, 'GET', 'api_keys'))).some((k) => k.id === theirs.id));

  assert.equal(await snapshot(), was, 'B\'s key is unchanged');
  assert.equal(await bAudit(), auditWas, 'nothing was written to B\'s audit');
  assert.equal((await kw.request('GET', USERS, { headers: { authorization: `Bearer ${theirs.api_key}` } })).status, 200);
});

test('the page\'s files: served under /_keyward/portal/ with a CSP without inline script, not framed', async () => {
  const r = await kw.request('GET', '/_keyward/portal/');
  assert.equal(r.status, 200);
  assert.match(r.headers['content-type'], /^text\/html/);
  const csp = r.headers['content-security-policy'];
  assert.match(csp, /script-src 'self' 'wasm-unsafe-eval';/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.equal(r.headers['x-frame-options'], 'DENY');
  assert.doesNotMatch(r.text, /<script(?![^>]*\bsrc=)/, 'no inline script');
  for (const file of ['portal.js', 'portal.css', 'qrcode.mjs']) assert.equal((await kw.request('GET', `/_keyward/portal/${file}`)).status, 200, file);
  refused(await kw.request('GET', '/_keyward/portal/nope.js'), 404, 'NOT_FOUND', 'no such portal file');
  const bare = await kw.request('GET', '/_keyward/portal');
  assert.equal(bare.status, 302);
  assert.match(bare.headers.location, /\/_keyward\/portal\/$/);
});
