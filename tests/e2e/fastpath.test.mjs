// The gate's two paths give the same answers. The entry module (src/entry.mjs) answers the common
// gated request on its fast path and hands the rest to the complete path (the Rust gate through
// the worker crate). Under KEYWARD_DEBUG a request with X-Keyward-Debug-Complete-Path takes the
// complete path, so each request here is sent both ways: the answers (status, headers, body) and
// what the origin received must be the same, and the debug stats show which path answered.
import http from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keywardForFile } from '../support/per-file.mjs';
import { ROOT, keywardToml, startKeyward } from '../support/keyward.mjs';
import { digest, makeKey, typo } from '../support/keys.mjs';

const COMPLETE = 'x-keyward-debug-complete-path';
const { origin, kw } = keywardForFile({ vars: { KEYWARD_DEBUG: '1' } });

async function createKey(attributes) {
  const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'fast path', permissions: ['users:read'], ...attributes } });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body.data;
}

const stats = async () => (await kw.request('GET', '/_keyward/debug/stats')).body.data;

// Headers that differ between any two answers (the time), and the switch itself.
const VARYING = new Set(['date']);
function answerOf(r) {
  const headers = Object.fromEntries(Object.entries(r.headers).filter(([name]) => !VARYING.has(name)));
  // The origin's echo names the switch header: compared without it (and so without its length).
  if (headers['x-test-origin']) delete headers['content-length'];
  if (r.body?.origin === true) return { status: r.status, headers, echo: seenOf(r.body) };
  return { status: r.status, headers, text: r.text };
}
function seenOf(seen) {
  if (!seen) return null;
  const headers = { ...seen.headers };
  delete headers[COMPLETE];
  return { ...seen, headers };
}

/** Sends the request on the complete path, then on the fast path; returns both. */
async function both(method, path, { headers = {}, body, localAddress } = {}) {
  // With its length declared, as browsers and most clients send it (node's default is chunked).
  if (typeof body === 'string') headers = { ...headers, 'content-length': String(Buffer.byteLength(body)) };
  origin.clear();
  const complete = await kw.request(method, path, { headers: { ...headers, [COMPLETE]: '1' }, body, localAddress });
  const completeSeen = seenOf(origin.seen[0]);
  origin.clear();
  const before = (await stats()).fast_path_answers;
  const fast = await kw.request(method, path, { headers, body, localAddress });
  const fastSeen = seenOf(origin.seen[0]);
  const answered = (await stats()).fast_path_answers - before;
  return { complete: answerOf(complete), fast: answerOf(fast), completeSeen, fastSeen, answered };
}

async function same(name, method, path, options, { fast = true } = {}) {
  const r = await both(method, path, options);
  assert.deepEqual(r.fast, r.complete, `${name}: the answers differ`);
  assert.deepEqual(r.fastSeen, r.completeSeen, `${name}: the origin received different requests`);
  assert.equal(r.answered, fast ? 1 : 0, `${name}: ${fast ? 'not answered by the fast path' : 'answered by the fast path'}`);
  return r.fast;
}

const USERS = '/api/v2/projects/7/users';

test('allowed and refused requests: the same answer and the same forwarded request on both paths', async () => {
  const plain = await createKey({ permissions: ['users:read', 'users:create', 'events:create'], event_denylist: ['bad.event'], workspace: 'ws-1' });
  const bearer = { authorization: `Bearer ${plain.api_key}` };
  // Warm the cache (a miss is compared below).
  assert.equal((await kw.request('GET', USERS, { headers: bearer })).status, 200);

  assert.equal((await same('allowed', 'GET', `${USERS}?page=2&x=%41`, { headers: { ...bearer, 'x-other': 'kept', 'x-keyward-key-id': 'spoofed' } })).status, 200);
  assert.equal((await same('X-API-Key', 'GET', USERS, { headers: { 'x-api-key': plain.api_key } })).status, 200);
  const basic = Buffer.from(`ws-1:${plain.api_key}`).toString('base64');
  assert.equal((await same('Basic', 'GET', USERS, { headers: { authorization: `Basic ${basic}` } })).status, 200);
  const other = Buffer.from(`ws-2:${plain.api_key}`).toString('base64');
  assert.equal((await same('Basic, other workspace', 'GET', USERS, { headers: { authorization: `Basic ${other}` } })).status, 401);
  assert.equal((await same('HEAD', 'HEAD', USERS, { headers: bearer })).status, 200);
  assert.equal((await same('POST body streamed', 'POST', USERS, { headers: { ...bearer, 'content-type': 'application/json' }, body: '{"email":"a@b.c"}' })).status, 200);
  assert.equal((await same('missing key', 'GET', USERS, {})).status, 401);
  assert.equal((await same('malformed key', 'GET', USERS, { headers: { authorization: `Bearer ${typo(plain.api_key)}` } })).status, 401);
  assert.equal((await same('two keys', 'GET', USERS, { headers: { ...bearer, 'x-api-key': makeKey('kw_live') } })).status, 400);
  assert.equal((await same('permission denied', 'GET', '/api/v2/projects/7', { headers: bearer })).status, 403);
  assert.equal((await same('no route', 'GET', '/nowhere', { headers: bearer })).status, 403);
  assert.equal((await same('unsafe path', 'GET', '/api/v2/projects/7%2Fusers', { headers: bearer })).status, 400);
  assert.equal((await same('_method refused', 'GET', `${USERS}?_method=DELETE`, { headers: bearer })).status, 400);

  // Inspected bodies: the event named in the body.
  const events = { ...bearer, 'content-type': 'application/json' };
  assert.equal((await same('body event allowed', 'POST', '/v4/events', { headers: events, body: '{"action":"good.event","x":1}' })).status, 200);
  assert.equal((await same('body event refused', 'POST', '/v4/events', { headers: events, body: '{"action":"bad.event"}' })).status, 403);
  assert.equal((await same('body unreadable', 'POST', '/v4/events', { headers: events, body: '{"action":' })).status, 400);
  assert.equal((await same('body empty', 'POST', '/v4/events', { headers: events, body: '' })).status, 400);
  assert.equal((await same('path event', 'POST', '/v4/events/bad.event', { headers: bearer })).status, 403);
});

test('keys in other states: the same answers on both paths', async () => {
  const profile = await createKey({ type: 'profile', profile_id: 'p-1', permissions: ['profiles:*'], attribute_allowlist: ['email'] });
  const h = { authorization: `Bearer ${profile.api_key}`, 'content-type': 'application/json' };
  await kw.request('GET', '/v4/profiles/p-1', { headers: h });
  assert.equal((await same('profile key, own profile', 'GET', '/v4/profiles/p-1', { headers: h })).status, 200);
  assert.equal((await same('profile key, other profile', 'GET', '/v4/profiles/p-2', { headers: h })).status, 403);
  assert.equal((await same('attributes allowed', 'PUT', '/v4/profiles/p-1', { headers: h, body: '{"email":"a@b.c"}' })).status, 200);
  assert.equal((await same('attributes refused', 'PUT', '/v4/profiles/p-1', { headers: h, body: '{"email":"a@b.c","vip":true}' })).status, 403);

  const ip = await createKey({ ip_allowlist: ['127.0.0.1'] });
  const ih = { authorization: `Bearer ${ip.api_key}` };
  await kw.request('GET', USERS, { headers: ih, localAddress: '127.0.0.1' });
  assert.equal((await same('IP allowed', 'GET', USERS, { headers: ih, localAddress: '127.0.0.1' })).status, 200);
  assert.equal((await same('IP refused', 'GET', USERS, { headers: ih, localAddress: '127.0.0.9' })).status, 403);

  const revoked = await createKey({});
  assert.equal((await kw.admin('POST', '/revocations', { ids: [revoked.id] })).status, 200);
  const rh = { authorization: `Bearer ${revoked.api_key}` };
  await kw.request('GET', USERS, { headers: rh });
  assert.equal((await same('revoked', 'GET', USERS, { headers: rh })).status, 401);

  const unknown = { authorization: `Bearer ${makeKey('kw_live')}` };
  await kw.request('GET', USERS, { headers: unknown });
  assert.equal((await same('unknown (cached)', 'GET', USERS, { headers: unknown })).status, 401);

  // Taken by the complete path whatever the entry: credentials in the query, browsers.
  assert.equal((await same('api_key query', 'GET', `${USERS}?api_key=${profile.api_key}`, {}, { fast: false })).status, 403);
  const originKey = await createKey({ origin_allowlist: ['https://app.example'] });
  assert.equal((await same('origin_allowlist key', 'GET', USERS, { headers: { authorization: `Bearer ${originKey.api_key}`, referer: 'https://app.example/x' } }, { fast: false })).status, 200);
});

test('tokens: the same answers on both paths; a warm token is answered by the fast path', async () => {
  const k = await createKey({ permissions: ['users:read', 'events:create'], event_denylist: ['bad.event'] });
  const login = await kw.request('POST', '/_keyward/v1/auth/token', { headers: { 'x-api-key': k.api_key } });
  assert.equal(login.status, 200, login.text);
  const token = login.body.data.token;
  const t = { authorization: `Bearer ${token}` };
  const TOKEN_INVALID = /"error_code":"TOKEN_INVALID"/;
  // The first use fetches the public keys on the complete path; then the fast path holds them.
  assert.equal((await kw.request('GET', USERS, { headers: t })).status, 200);
  const allowed = await same('token allowed', 'GET', `${USERS}?q=1`, { headers: { ...t, 'x-keyward-token-id': 'spoofed', 'x-keyward-key-id': 'spoofed' } });
  assert.equal(allowed.status, 200);
  assert.equal(allowed.echo.headers['x-keyward-token-id'], JSON.parse(Buffer.from(token.split('.')[1], 'base64url')).jti);
  assert.equal(allowed.echo.headers['x-keyward-key-id'], k.id);
  assert.equal(allowed.echo.headers.authorization, undefined);
  assert.equal((await same('token, permission denied', 'GET', '/api/v2/projects/7', { headers: t })).status, 403);
  const events = { ...t, 'content-type': 'application/json' };
  assert.equal((await same('token, body event refused', 'POST', '/v4/events', { headers: events, body: '{"action":"bad.event"}' })).status, 403);
  assert.equal((await same('token, body event allowed', 'POST', '/v4/events', { headers: events, body: '{"action":"ok.event"}' })).status, 200);
  const [h, p, sig] = token.split('.');
  const changed = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url')), sub: 'key_x' })).toString('base64url')}.${sig}`;
  assert.match((await same('token, changed claim', 'GET', USERS, { headers: { authorization: `Bearer ${changed}` } })).text, TOKEN_INVALID);
  assert.match((await same('token, truncated', 'GET', USERS, { headers: { authorization: `Bearer ${h}.${p}` } })).text, TOKEN_INVALID);
  // Never the fast path's: a token beside a key, a kid the isolate does not hold, a huge token.
  assert.equal((await same('token and key', 'GET', USERS, { headers: { ...t, 'x-api-key': k.api_key } }, { fast: false })).status, 400);
  const nowhere = `${Buffer.from(JSON.stringify({ alg: 'EdDSA', kid: 'kw-nowhere' })).toString('base64url')}.${p}.${sig}`;
  assert.match((await same('unknown kid', 'GET', USERS, { headers: { authorization: `Bearer ${nowhere}` } }, { fast: false })).text, TOKEN_INVALID);
  assert.match((await same('huge token', 'GET', USERS, { headers: { authorization: `Bearer ${h}.${'x'.repeat(5000)}.${sig}` } }, { fast: false })).text, TOKEN_INVALID);
  // revoke_tokens reaches the fast path (this isolate answered the call, so at once).
  await kw.admin('POST', `/api_keys/${k.id}/revoke_tokens`);
  assert.match((await same('token revoked by revoke_tokens', 'GET', USERS, { headers: t })).text, TOKEN_INVALID);
  await kw.admin('POST', `/api_keys/${k.id}/revoke`);
  const fresh = await kw.request('POST', '/_keyward/v1/auth/token', { headers: { 'x-api-key': k.api_key } });
  assert.equal(fresh.body.error_code, 'KEY_REVOKED');
});

test('a cache miss on the fast path reads KV once and answers as the complete path does', async () => {
  const { api_key: key } = await createKey({});
  const h = { authorization: `Bearer ${key}` };
  const before = await stats();
  origin.clear();
  const r = await kw.request('GET', `${USERS}?q=1`, { headers: h });
  const after = await stats();
  assert.equal(r.status, 200, r.text);
  assert.equal(after.key_reads - before.key_reads, 1, 'one KV read');
  assert.equal(after.fast_path_answers - before.fast_path_answers, 1, 'answered by the fast path');
  assert.equal(origin.last().headers['x-keyward-key-type'], 'workspace');
  assert.equal(origin.last().headers.authorization, undefined);

  // An unknown key: one read, then answered from the cache.
  const unknown = { authorization: `Bearer ${makeKey('kw_live')}` };
  const first = await kw.request('GET', USERS, { headers: unknown });
  const mid = await stats();
  const second = await kw.request('GET', USERS, { headers: unknown });
  const last = await stats();
  assert.equal(first.status, 401);
  assert.deepEqual(answerOf(first), answerOf(second));
  assert.equal(mid.key_reads - after.key_reads, 1);
  assert.equal(last.key_reads, mid.key_reads);
  assert.equal(last.fast_path_answers - after.fast_path_answers, 2);
});

test('with CACHE_TTL_SECONDS=0 each request reads its record once and is still answered on the fast path', async () => {
  const cold = await startKeyward({ origin: origin.url, vars: { KEYWARD_DEBUG: '1', CACHE_TTL_SECONDS: '0' } });
  try {
    const policy = (await cold.admin('GET', '/policy')).body.data;
    assert.equal((await cold.admin('PUT', '/policy', policy)).status, 200, 'the policy stored (then it comes with the change feed)');
    const made = await cold.admin('POST', '/api_keys', { api_key: { name: 'cold', permissions: ['users:read', 'events:create'] } });
    const h = { authorization: `Bearer ${made.body.data.api_key}` };
    const coldStats = async () => (await cold.request('GET', '/_keyward/debug/stats')).body.data;
    await cold.request('GET', USERS, { headers: h });
    const before = await coldStats();
    for (let i = 0; i < 3; i++) assert.equal((await cold.request('GET', USERS, { headers: h })).status, 200);
    assertPermissionDenied(await cold.request('GET', '/api/v2/projects/7', { headers: h }));
    const after = await coldStats();
    assert.equal(after.key_reads - before.key_reads, 4, 'one KV read a request');
    assert.equal(after.fast_path_answers - before.fast_path_answers, 4, 'all answered on the fast path');
    // A route whose body is inspected: the record read, then the body (its length declared, or
    // chunked), each request still answered on the fast path with one read, the body forwarded whole.
    for (const declared of [true, false]) {
      const body = JSON.stringify({ action: 'signup', user: 'u-1' });
      const headers = { ...h, 'content-type': 'application/json', ...(declared ? { 'content-length': String(body.length) } : {}) };
      const was = await coldStats();
      origin.clear();
      const r = await cold.request('POST', '/v4/events', { headers, body });
      const now = await coldStats();
      assert.equal(r.status, 200, r.text);
      assert.equal(origin.last().body, body);
      assert.equal(now.key_reads - was.key_reads, 1, 'one KV read');
      assert.equal(now.fast_path_answers - was.fast_path_answers, 1, 'answered on the fast path');
    }
    // A record read again unchanged is not compiled again; a record whose bytes changed in KV
    // (here its permissions, its version the same, so the change feed has nothing newer) is: the
    // next request on either path is judged on the new bytes, and again on the old ones after.
    const name = `key:${digest(made.body.data.api_key)}`;
    const stored = (await cold.kv('key', 'get', name, '--text')).trim();
    const record = JSON.parse(stored);
    assert.deepEqual(record.permissions, ['users:read', 'events:create']);
    for (const [text, expected] of [[JSON.stringify({ ...record, permissions: ['events:create'] }), 403], [stored, 200]]) {
      await cold.kv('key', 'put', name, text);
      // The complete path first: after the seconds `wrangler kv` takes, the isolate reads the
      // change feed before it answers (an idle isolate's first request), which is its work.
      for (const path of [{ [COMPLETE]: '1' }, {}]) {
        const was = await coldStats();
        const r = await cold.request('GET', USERS, { headers: { ...h, ...path } });
        assert.equal(r.status, expected, r.text);
        if (expected === 403) assert.equal(r.body.error_code, 'PERMISSION_DENIED');
        const now = await coldStats();
        assert.equal(now.fast_path_answers - was.fast_path_answers, path[COMPLETE] ? 0 : 1);
      }
    }
    // Two keys whose digests share their first byte (the entry keeps one digest per first
    // byte): taking turns, each request reads and is judged on its own key's record.
    const byByte = new Map();
    let pair;
    while (!pair) {
      const key = makeKey('kw_live');
      const first = digest(key).slice(0, 2);
      if (byByte.has(first)) pair = [byByte.get(first), key];
      else byByte.set(first, key);
    }
    const pushed = await cold.admin('POST', '/keys/batch', { records: [
      { digest: digest(pair[0]), name: 'slot a', permissions: ['users:read'], version: 1 },
      { digest: digest(pair[1]), name: 'slot b', permissions: ['events:create'], version: 1 },
    ] });
    assert.equal(pushed.status, 200, pushed.text);
    assert.deepEqual(pushed.body.data.results.map((x) => x.status), ['created', 'created']);
    await cold.request('GET', USERS, { headers: { [COMPLETE]: '1', authorization: `Bearer ${pair[0]}` } });
    const was = await coldStats();
    for (let i = 0; i < 6; i++) {
      const r = await cold.request('GET', USERS, { headers: { authorization: `Bearer ${pair[i % 2]}` } });
      if (i % 2 === 0) assert.equal(r.status, 200, r.text);
      else assertPermissionDenied(r);
    }
    const now = await coldStats();
    assert.equal(now.key_reads - was.key_reads, 6, 'one KV read a request');
    assert.equal(now.fast_path_answers - was.fast_path_answers, 6, 'all answered on the fast path');
  } finally {
    await cold.stop();
  }
});

function assertPermissionDenied(r) {
  assert.equal(r.status, 403, r.text);
  assert.equal(r.body.error_code, 'PERMISSION_DENIED');
}

test('bodies read at once by many requests: each check goes on with its own key, even past the waiting checks wasm keeps', async () => {
  // workerd's own socket: wrangler's proxy may hold a body back until it is whole, and here the
  // Worker must have every request's headers while all bodies are still on their way.
  const direct = await startKeyward({ origin: origin.url, vars: { KEYWARD_DEBUG: '1' }, direct: true });
  try {
    const make = async (attributes) => (await direct.admin('POST', '/api_keys', { api_key: { name: 'waiting', permissions: ['events:create'], ...attributes } })).body.data.api_key;
    const allowed = await make({});
    const denied = await make({ event_denylist: ['signup'] });
    const body = JSON.stringify({ action: 'signup', user: 'u-1' });
    // Once through the gate first: a new isolate syncs inline (the complete path) before its fast path.
    for (const key of [allowed, denied]) await direct.request('POST', '/v4/events', { headers: { authorization: `Bearer ${key}`, 'content-length': String(body.length) }, body });
    const before = (await direct.request('GET', '/_keyward/debug/stats')).body.data;
    // More requests than the 64 checks wasm keeps waiting for a body, keys alternating: the
    // oldest checks are let go and start again once their body comes.
    const count = 80;
    const { hostname, port } = new URL(direct.directUrl);
    const sent = [];
    const answers = [];
    for (let i = 0; i < count; i++) {
      const key = i % 2 === 0 ? allowed : denied;
      answers.push(new Promise((resolve, reject) => {
        const req = http.request({ hostname, port, method: 'POST', path: '/v4/events', agent: false, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': String(body.length) } }, (res) => {
          let text = '';
          res.on('data', (d) => { text += d; });
          res.on('end', () => resolve({ i, status: res.statusCode, text }));
        });
        req.on('error', reject);
        req.write(body.slice(0, 10));
        sent.push(req);
      }));
    }
    await new Promise((r) => setTimeout(r, 1500));
    for (const req of sent) req.end(body.slice(10));
    const results = await Promise.all(answers);
    for (const r of results) {
      if (r.i % 2 === 0) assert.equal(r.status, 200, `request ${r.i}: ${r.text}`);
      else assert.equal(JSON.parse(r.text).error_code, 'EVENT_NOT_ALLOWED', `request ${r.i}: ${r.text}`);
    }
    const after = (await direct.request('GET', '/_keyward/debug/stats')).body.data;
    assert.equal(after.fast_path_answers - before.fast_path_answers, count, 'all answered on the fast path');
  } finally {
    await direct.stop();
  }
});

test('an entry whose build passes other arguments than it expects refuses to start, naming the function', async () => {
  // The entry as it is, but expecting gate_load to take 6 arguments: what it would meet in a
  // build/ made from other sources (the wasm's gate_load takes 4).
  const entry = readFileSync(path.join(ROOT, 'src/entry.mjs'), 'utf8')
    .replaceAll("'../build/index.js'", JSON.stringify(path.join(ROOT, 'build/index.js')));
  const changed = entry.replace('gate_load: 4,', 'gate_load: 6,');
  assert.notEqual(changed, entry, 'the entry lists gate_load with 4 arguments');
  mkdirSync(path.join(ROOT, 'test-output'), { recursive: true });
  const dir = mkdtempSync(path.join(ROOT, 'test-output', 'stale-'));
  writeFileSync(path.join(dir, 'entry.mjs'), changed);
  writeFileSync(path.join(dir, 'wrangler.toml'), keywardToml(path.join(dir, 'entry.mjs')));
  await assert.rejects(
    startKeyward({ origin: origin.url, config: path.join(dir, 'wrangler.toml') }),
    /build\/ does not match src\/entry\.mjs \(gate_load takes 4 arguments, the entry passes 6\): run scripts\/build\.sh/,
  );
});
