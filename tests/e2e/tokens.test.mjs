// Tokens end to end (contract section 15): a key exchanged for a short-lived EdDSA-signed JWT at
// /_keyward/v1/auth/token, used at the gate as `Authorization: Bearer <token>` with every rule of
// its key, refreshed, verified by an origin with a well-kept JOSE library (npm `jose`, not
// keyward's code) against /_keyward/jwks.json, refused in every malformed or forged shape, and
// ended by its key's revocation, expiry or deletion, by revoke_tokens, and by time (a test clock).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import path from 'node:path';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, SignJWT, generateKeyPair } from 'jose';
import { keywardForFile } from '../support/per-file.mjs';
import { startKeyward, within, secondLocationConfig, ROOT } from '../support/keyward.mjs';

const USERS = '/api/v2/projects/1/users';
const PROJECTS = '/api/v2/projects';

const { origin, kw } = keywardForFile({ vars: { KEYWARD_DEBUG: '1' } });

const b64url = (s) => Buffer.from(s).toString('base64url');
const fromB64url = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
const parts = (token) => token.split('.');
const claimsOf = (token) => fromB64url(parts(token)[1]);
const headerOf = (token) => fromB64url(parts(token)[0]);

async function createKey(attrs = {}) {
  const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'tokens', permissions: ['users:read'], workspace: 'ws-1', ...attrs } });
  assert.equal(r.status, 201, r.text);
  return { key: r.body.data.api_key, id: r.body.data.id };
}

const login = (headers, body, localAddress) => kw.request('POST', '/_keyward/v1/auth/token', { headers, body, localAddress });
const use = (token, p = USERS, extra = {}, localAddress) => kw.request('GET', p, { headers: { authorization: `Bearer ${token}`, ...extra }, localAddress });
const codeOf = (r) => r.body?.error_code ?? (r.status === 200 ? 'VALID' : `HTTP ${r.status}`);

async function tokenFor(key, body) {
  const r = await login({ 'x-api-key': key }, body);
  assert.equal(r.status, 200, r.text);
  return r.body.data.token;
}

test('a key logs in, its token is used with the key\'s rules, refreshed, and verified by jose against the JWKS', async () => {
  const { key, id } = await createKey();
  // A key in each credential position may log in.
  for (const headers of [{ 'x-api-key': key }, { authorization: `Bearer ${key}` }, { authorization: `Basic ${Buffer.from(`ws-1:${key}`).toString('base64')}` }]) {
    const r = await login(headers);
    assert.equal(r.status, 200, r.text);
  }
  const viaQuery = await kw.request('POST', `/_keyward/v1/auth/token?api_key=${key}`);
  assert.equal(viaQuery.status, 200, viaQuery.text);

  const r = await login({ 'x-api-key': key });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.success, true);
  assert.deepEqual(Object.keys(r.body.data).sort(), ['expires_in', 'token', 'token_type']);
  assert.equal(r.body.data.token_type, 'Bearer');
  assert.equal(r.body.data.expires_in, 3600);
  assert.equal(r.headers['cache-control'], 'no-store');
  const token = r.body.data.token;
  const header = headerOf(token);
  const claims = claimsOf(token);
  assert.equal(header.alg, 'EdDSA');
  assert.match(header.kid, /^kw-/);
  assert.equal(claims.iss, 'keyward');
  assert.equal(claims.sub, id);
  assert.equal(claims.type, 'workspace');
  assert.equal(claims.workspace, 'ws-1');
  assert.equal(claims.profile, null);
  assert.equal(claims.exp - claims.iat, 3600);
  assert.match(claims.jti, /^tok_/);
  assert.ok(!token.includes(key), 'the key is not in the token');

  // The origin verifies the token itself with jose, against the published keys.
  const jwksAnswer = await kw.request('GET', '/_keyward/jwks.json');
  assert.equal(jwksAnswer.status, 200);
  assert.match(jwksAnswer.headers['cache-control'], /public, max-age=\d+/);
  assert.ok(jwksAnswer.body.keys.every((k) => k.kty === 'OKP' && k.crv === 'Ed25519' && !('d' in k)), 'public halves only');
  const verified = await jwtVerify(token, createLocalJWKSet(jwksAnswer.body), { issuer: 'keyward', algorithms: ['EdDSA'] });
  assert.equal(verified.payload.sub, id);
  assert.equal(verified.protectedHeader.kid, header.kid);
  // And with the remote set, as an origin would configure it.
  const remote = await jwtVerify(token, createRemoteJWKSet(new URL('/_keyward/jwks.json', kw.url)), { issuer: 'keyward' });
  assert.equal(remote.payload.jti, claims.jti);
  // A changed claim fails jose too: the test's verifier is not a rubber stamp.
  const [h, , s] = parts(token);
  const changed = `${h}.${b64url(JSON.stringify({ ...claims, sub: 'key_other' }))}.${s}`;
  await assert.rejects(jwtVerify(changed, createLocalJWKSet(jwksAnswer.body)));

  // At the gate: the key's rules, the token's headers, no credential forwarded.
  origin.clear();
  const ok = await use(token, USERS, { 'x-keyward-token-id': 'forged', 'x-keyward-key-id': 'forged' });
  assert.equal(ok.status, 200, ok.text);
  const seen = origin.last();
  assert.equal(seen.headers['x-keyward-key-id'], id);
  assert.equal(seen.headers['x-keyward-key-type'], 'workspace');
  assert.equal(seen.headers['x-keyward-token-id'], claims.jti);
  assert.equal(seen.headers.authorization, undefined);
  assert.equal(codeOf(await use(token, PROJECTS)), 'PERMISSION_DENIED');
  // A token beside a key: refused, as two keys are.
  const both = await use(token, USERS, { 'x-api-key': key });
  assert.equal(both.status, 400);
  assert.match(both.body.error_message, /token and an API key/);
  // A client cannot make up X-Keyward-Token-Id on a key's request either (the fast path drops it).
  origin.clear();
  assert.equal((await kw.request('GET', USERS, { headers: { 'x-api-key': key, 'x-keyward-token-id': 'forged' } })).status, 200);
  assert.equal(origin.last().headers['x-keyward-token-id'], undefined);

  // GET /ping takes a token too: the key's id and type, and the token's id.
  const ping = await kw.request('GET', '/_keyward/v1/ping', { headers: { authorization: `Bearer ${token}` } });
  assert.equal(ping.status, 200, ping.text);
  assert.deepEqual(ping.body.data, { key_id: id, type: 'workspace', token_id: claims.jti });
  assert.equal(codeOf(await kw.request('GET', '/_keyward/v1/ping', { headers: { authorization: `Bearer ${changed}` } })), 'TOKEN_INVALID');

  // Refresh: a new token (a new jti) of the same lifetime, or the one asked for.
  const refreshed = await kw.request('POST', '/_keyward/v1/auth/refresh', { headers: { authorization: `Bearer ${token}` } });
  assert.equal(refreshed.status, 200, refreshed.text);
  const second = refreshed.body.data.token;
  assert.notEqual(claimsOf(second).jti, claims.jti);
  assert.equal(refreshed.body.data.expires_in, 3600);
  assert.equal((await use(second)).status, 200);
  const shorter = await kw.request('POST', '/_keyward/v1/auth/refresh', { headers: { authorization: `Bearer ${second}` }, body: { ttl_seconds: 60 } });
  assert.equal(shorter.body.data.expires_in, 60);
  const refreshWithKey = await kw.request('POST', '/_keyward/v1/auth/refresh', { headers: { authorization: `Bearer ${key}` } });
  assert.equal(codeOf(refreshWithKey), 'TOKEN_INVALID');
});

test('log in: ttl_seconds bounds, the key\'s own expiry, and the gate\'s refusals', async () => {
  const { key } = await createKey();
  const r120 = await login({ 'x-api-key': key }, { ttl_seconds: 120 });
  assert.equal(r120.body.data.expires_in, 120);
  for (const bad of [59, 86401, '600', 1.5, -1, true]) {
    const r = await login({ 'x-api-key': key }, { ttl_seconds: bad });
    assert.equal(r.status, 400, `${bad}: ${r.text}`);
    assert.equal(r.body.error_code, 'BAD_REQUEST');
    assert.match(r.body.error_message, /^ttl_seconds: must be an integer from 60 to 86400/);
  }
  const other = await login({ 'x-api-key': key }, { ttl: 60 });
  assert.equal(other.status, 400);
  assert.match(other.body.error_message, /^ttl: is not a token field/);
  const notJson = await login({ 'x-api-key': key, 'content-type': 'application/json' }, '{');
  assert.equal(notJson.status, 400);
  assert.match(notJson.body.error_message, /^body: is not valid JSON/);
  const max = await login({ 'x-api-key': key }, { ttl_seconds: 86400 });
  assert.equal(max.body.data.expires_in, 86400);

  // Never past the key's own expiry.
  const soon = new Date(Date.now() + 100_000).toISOString();
  const expiring = await createKey({ expires_at: soon });
  const t = await login({ 'x-api-key': expiring.key });
  assert.ok(t.body.data.expires_in <= 100 && t.body.data.expires_in >= 95, t.text);
  assert.ok(claimsOf(t.body.data.token).exp <= Math.floor(Date.parse(soon) / 1000));

  // Only a key the gate would accept, with the gate's codes.
  assert.equal(codeOf(await login({})), 'MISSING_KEY');
  assert.equal(codeOf(await login({ 'x-api-key': 'kw_live_nope' })), 'MALFORMED_KEY');
  const revoked = await createKey();
  await kw.admin('POST', `/api_keys/${revoked.id}/revoke`);
  assert.equal(codeOf(await login({ 'x-api-key': revoked.key })), 'KEY_REVOKED');
  const expired = await createKey({ active: false });
  assert.equal(codeOf(await login({ 'x-api-key': expired.key })), 'KEY_EXPIRED');
  const fenced = await createKey({ ip_allowlist: ['10.9.9.9'] });
  assert.equal(codeOf(await login({ 'x-api-key': fenced.key })), 'IP_NOT_ALLOWED');
  const site = await createKey({ origin_allowlist: ['https://app.example.com'] });
  assert.equal(codeOf(await login({ 'x-api-key': site.key, origin: 'https://evil.example.com' })), 'ORIGIN_NOT_ALLOWED');
  assert.equal(codeOf(await login({ 'x-api-key': site.key, origin: 'https://app.example.com' })), 'VALID');
  assert.equal(codeOf(await login({ authorization: `Basic ${Buffer.from(`ws-other:${key}`).toString('base64')}` })), 'WORKSPACE_MISMATCH');
  const withToken = await login({ authorization: `Bearer ${r120.body.data.token}` });
  assert.equal(withToken.status, 400);
  assert.match(withToken.body.error_message, /auth\/refresh/);
  const get = await kw.request('GET', '/_keyward/v1/auth/token', { headers: { 'x-api-key': key } });
  assert.equal(get.status, 405);
  assert.equal(get.headers.allow, 'POST');

  // The key's IP rule holds for its tokens: logged in from 127.0.0.1, used from 127.0.0.9.
  const local = await createKey({ ip_allowlist: ['127.0.0.1'] });
  const lt = await tokenFor(local.key);
  assert.equal((await use(lt, USERS, {}, '127.0.0.1')).status, 200);
  assert.equal(codeOf(await use(lt, USERS, {}, '127.0.0.9')), 'IP_NOT_ALLOWED');
});

test('logins are counted per key: past 60 a minute, 429 RATE_LIMITED with Retry-After, nothing signed; other keys and the tokens already made go on', async () => {
  const { key } = await createKey({ name: 'busy login' });
  const { key: calm } = await createKey({ name: 'calm login' });
  const tokens = [];
  for (let i = 0; i < 60; i++) {
    const r = await login({ 'x-api-key': key });
    assert.equal(r.status, 200, `login ${i + 1}: ${r.text}`);
    tokens.push(r.body.data.token);
  }
  const refused = await login({ 'x-api-key': key });
  assert.equal(refused.status, 429, refused.text);
  assert.equal(refused.body.success, false);
  assert.equal(refused.body.data, null);
  assert.equal(refused.body.error_code, 'RATE_LIMITED');
  assert.match(refused.body.error_message, /too many logins with this API key/);
  assert.equal(refused.headers['retry-after'], '60');
  // A refresh with one of its tokens is a login too; the key's other credentials count the same.
  const refresh = await kw.request('POST', '/_keyward/v1/auth/refresh', { headers: { authorization: `Bearer ${tokens[0]}` } });
  assert.equal(refresh.status, 429, refresh.text);
  assert.equal((await login({ authorization: `Bearer ${key}` })).status, 429);
  // What was made still works, and another key logs in.
  assert.equal(codeOf(await use(tokens[59])), 'VALID');
  assert.equal(codeOf(await use(key)), 'VALID');
  assert.equal((await login({ 'x-api-key': calm })).status, 200);
  // A refused login is still refused for what it is first: a bad key is not counted as this key.
  assert.equal(codeOf(await login({ 'x-api-key': key.slice(0, -1) + (key.endsWith('A') ? 'B' : 'A') })), 'MALFORMED_KEY');
});

test('POST /verify takes a token as the gate does: its key\'s decision, or the token\'s refusal', async () => {
  const { key, id } = await createKey({ name: 'verify token' });
  const token = await tokenFor(key);
  const verify = (body) => kw.admin('POST', '/verify', body).then((r) => { assert.equal(r.status, 200, r.text); return r.body.data; });
  // Allowed and refused as at the gate, with the key's id; as `key` or as the Authorization header.
  const ok = await verify({ key: token, method: 'GET', path: USERS });
  assert.equal(ok.code, 'VALID');
  assert.equal(ok.valid, true);
  assert.equal(ok.key_id, id);
  assert.equal(codeOf(await use(token)), 'VALID');
  assert.equal((await verify({ method: 'GET', path: USERS, headers: { authorization: `Bearer ${token}` } })).code, 'VALID');
  const denied = await verify({ key: token, method: 'DELETE', path: `${PROJECTS}/1` });
  assert.equal(denied.code, 'PERMISSION_DENIED');
  assert.equal(codeOf(await kw.request('DELETE', `${PROJECTS}/1`, { headers: { authorization: `Bearer ${token}` } })), 'PERMISSION_DENIED');
  // A forged token, a token beside a key, and a revoked key's token.
  const [h, , sig] = token.split('.');
  const forged = `${h}.${b64url(JSON.stringify({ ...claimsOf(token), sub: 'key_someone_else' }))}.${sig}`;
  assert.equal((await verify({ key: forged, path: USERS })).code, 'TOKEN_INVALID');
  assert.equal((await verify({ path: USERS, headers: { authorization: `Bearer ${token}`, 'x-api-key': key } })).code, 'BAD_REQUEST');
  assert.equal((await kw.admin('POST', `/api_keys/${id}/revoke_tokens`)).status, 200);
  assert.equal((await verify({ key: token, path: USERS })).code, 'TOKEN_INVALID');
  assert.equal((await verify({ key, path: USERS })).code, 'VALID', 'the key itself still passes');
});

test('bad tokens are refused with TOKEN_INVALID or TOKEN_EXPIRED, never a 5xx', async () => {
  const { key } = await createKey();
  const token = await tokenFor(key, { ttl_seconds: 60 });
  const [h, p, s] = parts(token);
  const header = headerOf(token);
  const claims = claimsOf(token);
  const jwks = (await kw.request('GET', '/_keyward/jwks.json')).body;
  const publicJwk = jwks.keys.find((k) => k.kid === header.kid);
  // HS256 "signed" with the public key as the HMAC secret (the classic key-confusion attack).
  const hsInput = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid: header.kid }))}.${p}`;
  const hs256 = `${hsInput}.${createHmac('sha256', JSON.stringify(publicJwk)).update(hsInput).digest('base64url')}`;
  const hs256Raw = `${hsInput}.${createHmac('sha256', Buffer.from(publicJwk.x, 'base64url')).update(hsInput).digest('base64url')}`;
  // Another deployment's token: its own Ed25519 key, even under this deployment's kid.
  const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
  const foreign = await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', kid: header.kid }).sign(privateKey);
  const foreignKid = await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', kid: 'kw-elsewhere' }).sign(privateKey);
  // Signed by node:crypto with a key pair of its own, alg none, other forms.
  const cases = {
    'alg none': `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${p}.`,
    'alg none with kid': `${b64url(JSON.stringify({ alg: 'none', kid: header.kid }))}.${p}.${s}`,
    'HS256 with the public JWK as secret': hs256,
    'HS256 with the raw public key as secret': hs256Raw,
    'ES256 header': `${b64url(JSON.stringify({ alg: 'ES256', kid: header.kid }))}.${p}.${s}`,
    'a changed claim': `${h}.${b64url(JSON.stringify({ ...claims, exp: claims.exp + 86400 }))}.${s}`,
    'another key id in sub': `${h}.${b64url(JSON.stringify({ ...claims, sub: 'key_01HZZZZZZZZZZZZZZZZZZZZZZZ' }))}.${s}`,
    'another deployment (same kid)': foreign,
    'another deployment (its kid)': foreignKid,
    'a truncated signature': `${h}.${p}.${s.slice(0, -6)}`,
    'no signature': `${h}.${p}.`,
    'a kid pointing nowhere': `${b64url(JSON.stringify({ ...header, kid: 'kw-nowhere' }))}.${p}.${s}`,
    'no kid': `${b64url(JSON.stringify({ alg: 'EdDSA' }))}.${p}.${s}`,
    'a huge header': `${b64url(JSON.stringify({ ...header, pad: 'x'.repeat(6000) }))}.${p}.${s}`,
    'two parts': `${h}.${p}`,
    'four parts': `${token}.${s}`,
    'not base64': `${h}.${p}.!!!`,
    'a header that is not JSON': `${b64url('nope')}.${p}.${s}`,
    'dots only': '..',
  };
  for (const [name, bad] of Object.entries(cases)) {
    const r = await use(bad);
    assert.equal(r.status, 401, `${name}: ${r.text}`);
    assert.equal(r.body.error_code, 'TOKEN_INVALID', `${name}: ${r.text}`);
    assert.match(r.headers['www-authenticate'], /^Bearer/);
    const refresh = await kw.request('POST', '/_keyward/v1/auth/refresh', { headers: { authorization: `Bearer ${bad}` } });
    assert.equal(refresh.body.error_code, 'TOKEN_INVALID', `refresh, ${name}: ${refresh.text}`);
  }
  // The real token still works after all that (no isolate state was spoilt).
  assert.equal((await use(token)).status, 200);

  // Time, on the tokens' test clock: valid a second before exp, expired at exp and a second past.
  const toExp = claims.exp * 1000 - Date.now();
  try {
    await kw.request('GET', `/_keyward/debug/token-clock?offset_ms=${toExp - 2000}`);
    assert.equal((await use(token)).status, 200);
    await kw.request('GET', `/_keyward/debug/token-clock?offset_ms=${toExp + 1000}`);
    const late = await use(token);
    assert.equal(late.status, 401);
    assert.equal(late.body.error_code, 'TOKEN_EXPIRED');
    assert.equal(codeOf(await kw.request('POST', '/_keyward/v1/auth/refresh', { headers: { authorization: `Bearer ${token}` } })), 'TOKEN_EXPIRED');
    // An expired forgery is still a forgery.
    assert.equal(codeOf(await use(cases['a changed claim'])), 'TOKEN_INVALID');
  } finally {
    await kw.request('GET', '/_keyward/debug/token-clock?offset_ms=0');
  }
  assert.equal((await use(token)).status, 200);
});

test('revoke_tokens, rotation, and the key\'s revocation, expiry and deletion end its tokens', async () => {
  const { key, id } = await createKey();
  const first = await tokenFor(key);
  assert.equal((await use(first)).status, 200);
  // revoke_tokens: every token issued before now is refused; a token made after works.
  const rt = await kw.admin('POST', `/api_keys/${id}/revoke_tokens`);
  assert.equal(rt.status, 200, rt.text);
  assert.equal(rt.body.data.id, id);
  assert.ok(Date.parse(rt.body.data.tokens_not_before) > 0);
  assert.equal(codeOf(await use(first)), 'TOKEN_INVALID');
  assert.equal(codeOf(await kw.request('POST', '/_keyward/v1/auth/refresh', { headers: { authorization: `Bearer ${first}` } })), 'TOKEN_INVALID');
  const view = (await kw.admin('GET', `/api_keys/${id}`)).body.data;
  assert.equal(view.tokens_not_before, rt.body.data.tokens_not_before);
  const after = await tokenFor(key);
  assert.equal((await use(after)).status, 200, 'a token made right after revoke_tokens lives');
  assert.equal((await use(key, USERS)).status, 200, 'the key itself still works');
  assert.equal((await kw.admin('POST', '/api_keys/key_01HZZZZZZZZZZZZZZZZZZZZZZZ/revoke_tokens')).status, 404);
  assert.equal((await kw.admin('GET', `/api_keys/${id}/revoke_tokens`)).status, 405);
  const audit = (await kw.admin('GET', `/audit?key_id=${id}&action=revoke_tokens`)).body.data;
  assert.equal(audit.length, 1);

  // Rotation: a new kid signs; the old public key stays published while its tokens live.
  const before = (await kw.request('GET', '/_keyward/jwks.json')).body.keys.map((k) => k.kid);
  const manager = await createKey({ permissions: ['keys:update'] });
  assert.equal((await kw.admin('POST', '/signing_keys/rotate', undefined, manager.key)).status, 403, 'rotation needs the admin token');
  assert.equal((await kw.request('POST', '/_keyward/v1/signing_keys/rotate')).status, 401);
  const rotated = await kw.admin('POST', '/signing_keys/rotate');
  assert.equal(rotated.status, 200, rotated.text);
  const kids = (await kw.request('GET', '/_keyward/jwks.json')).body.keys.map((k) => k.kid);
  assert.equal(kids[0], rotated.body.data.kid);
  assert.ok(before.includes(rotated.body.data.kid), 'the new key was published ahead of its use');
  assert.ok(kids.includes(rotated.body.data.next_kid), 'and so is the one after it');
  assert.ok(before.every((k) => kids.includes(k)), 'the old public key is kept');
  assert.ok(rotated.body.data.retired.some((r) => r.kid === headerOf(after).kid && Date.parse(r.kept_until) >= claimsOf(after).exp * 1000));
  const newer = await tokenFor(key);
  assert.equal(headerOf(newer).kid, rotated.body.data.kid);
  assert.equal((await use(newer)).status, 200);
  assert.equal((await use(after)).status, 200, 'a token of the old key is valid until it expires');
  await jwtVerify(after, createLocalJWKSet((await kw.request('GET', '/_keyward/jwks.json')).body));

  // The key's revocation, expiry, roll past its grace and deletion end its tokens.
  const rolled = await createKey();
  const rolledToken = await tokenFor(rolled.key);
  assert.equal((await kw.admin('POST', `/api_keys/${rolled.id}/roll`, { grace_seconds: 0 })).status, 201);
  assert.equal(codeOf(await use(rolledToken)), 'KEY_EXPIRED');
  const e = await createKey();
  const et = await tokenFor(e.key);
  await kw.admin('PUT', `/api_keys/${e.id}`, { api_key: { active: false } });
  assert.equal(codeOf(await use(et)), 'KEY_EXPIRED');
  assert.equal(codeOf(await kw.request('POST', '/_keyward/v1/auth/refresh', { headers: { authorization: `Bearer ${et}` } })), 'KEY_EXPIRED');
  await kw.admin('PUT', `/api_keys/${e.id}`, { api_key: { active: true } });
  assert.equal((await use(et)).status, 200, 'reactivated, its tokens work again');
  await kw.admin('POST', `/api_keys/${id}/revoke`);
  assert.equal(codeOf(await use(newer)), 'KEY_REVOKED');
  assert.equal(codeOf(await kw.request('GET', '/_keyward/v1/ping', { headers: { authorization: `Bearer ${newer}` } })), 'KEY_REVOKED');
  await kw.admin('PUT', `/api_keys/${e.id}`, { api_key: { active: false } });
  assert.equal((await kw.admin('DELETE', `/api_keys/${e.id}`)).status, 200);
  const gone = await use(et);
  assert.equal(gone.status, 401, gone.text);
  assert.equal(gone.body.error_code, 'TOKEN_INVALID', gone.text);
  assert.match(gone.body.error_message, /its key no longer exists/);
});

test('a profile key\'s token carries its profile and type', async () => {
  const { key, id } = await createKey({ type: 'profile', profile_id: 'p-42', permissions: ['profiles:read'] });
  const token = await tokenFor(key);
  const claims = claimsOf(token);
  assert.equal(claims.type, 'profile');
  assert.equal(claims.profile, 'p-42');
  origin.clear();
  assert.equal((await use(token, '/v4/profiles/p-42')).status, 200);
  assert.equal(origin.last().headers['x-keyward-profile-id'], 'p-42');
  assert.equal(origin.last().headers['x-keyward-key-id'], id);
  assert.equal(codeOf(await use(token, '/v4/profiles/p-43')), 'PROFILE_MISMATCH');
});

test('simple authentication: a profile key\'s customer logs in with the HMAC of their identifier under the key\'s salt', async () => {
  const refusedOnWorkspace = await kw.admin('POST', '/api_keys', { api_key: { name: 'sa', simple_auth: true } });
  assert.equal(refusedOnWorkspace.status, 400);
  assert.match(refusedOnWorkspace.body.error_message, /^simple_auth: is only allowed on a profile key/);
  const { key, id } = await createKey({ type: 'profile', profile_id: 'p-1', permissions: ['profiles:read'], simple_auth: true, attribute_allowlist: ['uuid', 'email', 'firstName'] });
  const view = (await kw.admin('GET', `/api_keys/${id}`)).body.data;
  assert.equal(view.simple_auth, true);
  assert.match(view.simple_auth_salt, /^[0-9a-f]{64}$/);
  const salt = view.simple_auth_salt;
  const hmac = (identifier, s = salt) => createHmac('sha256', s).update(identifier).digest('hex');
  const simple = (body, k = key) => kw.request('POST', '/_keyward/v1/auth/simple', { headers: { 'x-api-key': k }, body });

  const r = await simple({ identifier_type: 'email', identifier: 'ann@example.com', signature: hmac('ann@example.com'), ttl_seconds: 600 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.data.expires_in, 600);
  const token = r.body.data.token;
  const claims = claimsOf(token);
  assert.equal(claims.sub, id);
  assert.equal(claims.type, 'profile');
  assert.equal(claims.profile, 'ann@example.com');
  assert.equal(claims.idt, 'email');
  origin.clear();
  assert.equal((await use(token, '/v4/profiles/ann@example.com')).status, 200);
  assert.equal(origin.last().headers['x-keyward-profile-id'], 'ann@example.com');
  assert.equal(codeOf(await use(token, '/v4/profiles/p-1')), 'PROFILE_MISMATCH', 'the customer, not the key\'s own profile');
  const refreshed = await kw.request('POST', '/_keyward/v1/auth/refresh', { headers: { authorization: `Bearer ${token}` } });
  assert.equal(refreshed.status, 200, refreshed.text);
  assert.equal(claimsOf(refreshed.body.data.token).profile, 'ann@example.com');

  // Refusals, each naming its field.
  const wrong = await simple({ identifier_type: 'email', identifier: 'bob@example.com', signature: hmac('ann@example.com') });
  assert.equal(wrong.status, 401);
  assert.match(wrong.body.error_message, /^signature:/);
  const customId = await simple({ identifier_type: 'custom_id', identifier: 'c-9', signature: hmac('c-9') });
  assert.equal(customId.status, 400);
  assert.match(customId.body.error_message, /^attribute_allowlist: must include uuid and customId .*missing: customId/);
  for (const [body, field] of [
    [{ identifier: 'x', signature: hmac('x') }, 'identifier_type'],
    [{ identifier_type: 'phone', identifier: 'x', signature: hmac('x') }, 'identifier_type'],
    [{ identifier_type: 'email', signature: hmac('x') }, 'identifier'],
    [{ identifier_type: 'email', identifier: 'x', signature: 'abc' }, 'signature'],
    [{ identifier_type: 'email', identifier: 'x', signature: hmac('x'), more: 1 }, 'more'],
    [{ identifier_type: 'email', identifier: 'x', signature: hmac('x'), ttl_seconds: 1 }, 'ttl_seconds'],
  ]) {
    const bad = await simple(body);
    assert.equal(bad.status, 400, `${field}: ${bad.text}`);
    assert.ok(bad.body.error_message.startsWith(`${field}:`), bad.text);
  }
  const plain = await createKey({ type: 'profile', profile_id: 'p-2', permissions: ['profiles:read'] });
  const off = await simple({ identifier_type: 'email', identifier: 'x', signature: hmac('x') }, plain.key);
  assert.equal(off.status, 400);
  assert.match(off.body.error_message, /^simple_auth: is not turned on/);
  const workspace = await createKey();
  assert.match((await simple({ identifier_type: 'email', identifier: 'x', signature: hmac('x') }, workspace.key)).body.error_message, /profile key/);

  // Turning it off ends the customers' tokens and the salt; turning it on again makes a new salt.
  await kw.admin('PUT', `/api_keys/${id}`, { api_key: { simple_auth: false } });
  assert.equal((await kw.admin('GET', `/api_keys/${id}`)).body.data.simple_auth_salt, null);
  assert.equal(codeOf(await use(token, '/v4/profiles/ann@example.com')), 'TOKEN_INVALID');
  const again = await kw.admin('PUT', `/api_keys/${id}`, { api_key: { simple_auth: true } });
  assert.match(again.body.data.simple_auth_salt, /^[0-9a-f]{64}$/);
  assert.notEqual(again.body.data.simple_auth_salt, salt);
  assert.equal((await simple({ identifier_type: 'email', identifier: 'ann@example.com', signature: hmac('ann@example.com') })).status, 401, 'the old salt\'s signature no longer works');
  const salted = await kw.admin('PUT', `/api_keys/${id}`, { api_key: { simple_auth_salt: 'mine' } });
  assert.equal(salted.status, 400);
  assert.match(salted.body.error_message, /^simple_auth_salt: is read-only/);
});

test('a web page of an allowed origin logs in across origins, under the route policy\'s cors settings', async () => {
  const APP = 'https://app.example.com';
  const before = (await kw.admin('GET', '/policy')).body.data;
  const preflight = (p, origin, method = 'POST') => kw.request('OPTIONS', p, { headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': 'x-api-key,content-type' } });
  // Without cors in the policy, no page of another origin may call it.
  assert.equal(codeOf(await preflight('/_keyward/v1/auth/token', APP)), 'ORIGIN_NOT_ALLOWED');
  assert.equal((await kw.admin('PUT', '/policy', { rules: before.rules, cors: { allowed_origins: [APP], max_age: 600 } })).status, 200);
  try {
    for (const p of ['/_keyward/v1/auth/token', '/_keyward/v1/auth/refresh', '/_keyward/v1/auth/simple']) {
      const ok = await preflight(p, APP);
      assert.equal(ok.status, 204, `${p}: ${ok.text}`);
      assert.equal(ok.headers['access-control-allow-origin'], APP);
      assert.equal(ok.headers['access-control-allow-methods'], 'POST');
      assert.match(ok.headers['access-control-allow-headers'], /x-api-key/);
      assert.equal(ok.headers['access-control-max-age'], '600');
      assert.equal(ok.headers['access-control-allow-credentials'], undefined);
    }
    const evil = await preflight('/_keyward/v1/auth/token', 'https://evil.example.com');
    assert.equal(codeOf(evil), 'ORIGIN_NOT_ALLOWED');
    assert.equal(evil.headers['access-control-allow-origin'], undefined);
    assert.equal((await preflight('/_keyward/v1/auth/token', APP, 'DELETE')).status, 400);

    const { key } = await createKey({ origin_allowlist: [APP] });
    const r = await login({ 'x-api-key': key, origin: APP });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers['access-control-allow-origin'], APP);
    assert.match(r.headers.vary, /Origin/);
    // The token is then used from the page like the key: the gate's own CORS.
    const used = await use(r.body.data.token, USERS, { origin: APP });
    assert.equal(used.status, 200, used.text);
    assert.equal(used.headers['access-control-allow-origin'], APP);
    const refused = await login({ 'x-api-key': key, origin: 'https://evil.example.com' });
    assert.equal(codeOf(refused), 'ORIGIN_NOT_ALLOWED');
    assert.equal(refused.headers['access-control-allow-origin'], undefined);
  } finally {
    assert.equal((await kw.admin('PUT', '/policy', { rules: before.rules })).status, 200);
  }
});

test('two locations: a token made at one is used at the other, and its key\'s revocation ends it there within the interval', async () => {
  const env = { WRANGLER_REGISTRY_PATH: mkdtempSync(path.join(ROOT, 'test-output', 'registry-')) };
  const a = await startKeyward({ origin: origin.url, env });
  const b = await startKeyward({ origin: origin.url, env, adminToken: a.adminToken, config: secondLocationConfig() });
  try {
    const r = await a.admin('POST', '/api_keys', { api_key: { name: 'two', permissions: ['users:read'] } });
    const { api_key: key, id } = r.body.data;
    const t = await a.request('POST', '/_keyward/v1/auth/token', { headers: { 'x-api-key': key } });
    assert.equal(t.status, 200, t.text);
    const token = t.body.data.token;
    const atB = async () => codeOf(await b.request('GET', USERS, { headers: { authorization: `Bearer ${token}` } }));
    await within(3000, async () => (await atB()) === 'VALID', 'the token at B');
    await a.admin('POST', `/api_keys/${id}/revoke_tokens`);
    const tookTokens = await within(1500, async () => (await atB()) === 'TOKEN_INVALID', 'revoke_tokens at B');
    const t2 = (await a.request('POST', '/_keyward/v1/auth/token', { headers: { 'x-api-key': key } })).body.data.token;
    const atB2 = async () => codeOf(await b.request('GET', USERS, { headers: { authorization: `Bearer ${t2}` } }));
    await within(3000, async () => (await atB2()) === 'VALID', 'the second token at B');
    await a.admin('POST', `/api_keys/${id}/revoke`);
    const tookRevoke = await within(1500, async () => (await atB2()) === 'KEY_REVOKED', 'revoke at B');
    console.log(`tokens ended at the other location (ms): revoke_tokens ${tookTokens}, revoke ${tookRevoke}`);
  } finally {
    await b.stop();
    await a.stop();
  }
});
