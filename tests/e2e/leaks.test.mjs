// Leak reports end to end against the built Worker under `wrangler dev`: GitHub's secret-scanning
// partner endpoint (signed with a P-256 key pair the test makes, given to the Worker through
// LEAK_REPORT_PUBLIC_KEYS in GitHub's published shape) and the operator's own POST /_keyward/v1/leaks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import { keywardForFile } from '../support/per-file.mjs';
import { startKeyward } from '../support/keyward.mjs';
import { makeKey, typo } from '../support/keys.mjs';

const USERS = '/api/v2/projects/1/users';
const GITHUB = '/_keyward/leaks/github';

function keyPair() {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey, pem: publicKey.export({ type: 'spki', format: 'pem' }) };
}

const current = keyPair();
const older = keyPair();
const stranger = keyPair();
const PUBLIC_KEYS = JSON.stringify({
  public_keys: [
    { key_identifier: 'kid-old', key: older.pem, is_current: false },
    { key_identifier: 'kid-current', key: current.pem, is_current: true },
  ],
});

/** GitHub's signature: base64 of the DER ECDSA P-256 signature over SHA-256 of the raw body. */
const signature = (body, privateKey = current.privateKey) => sign('sha256', Buffer.from(body), privateKey).toString('base64');
const sha256 = (text) => createHash('sha256').update(text).digest('hex');

function report(kw, body, { kid = 'kid-current', privateKey = current.privateKey, sig } = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const headers = { 'content-type': 'application/json' };
  if (kid !== null) headers['github-public-key-identifier'] = kid;
  if (sig !== null) headers['github-public-key-signature'] = sig ?? signature(text, privateKey);
  return kw.request('POST', GITHUB, { headers, body: text });
}

const { origin, kw } = keywardForFile({ vars: { LEAK_REPORT_PUBLIC_KEYS: PUBLIC_KEYS, KEY_PREFIX: 'kw_test' } });

async function create(name = 'leaky') {
  const r = await kw.admin('POST', '/api_keys', { api_key: { name, permissions: ['users:read'] } });
  assert.equal(r.status, 201, r.text);
  return r.body.data;
}

const gate = (key) => kw.request('GET', USERS, { headers: { authorization: `Bearer ${key}` } });
const record = async (id) => (await kw.admin('GET', `/api_keys/${id}`)).body.data;
const audit = async (id) => (await kw.admin('GET', `/audit?key_id=${id}`)).body.data;

test('a signed report: the real key is revoked and refused at once, the others are false positives', async () => {
  const real = await create();
  assert.equal((await gate(real.api_key)).status, 200);
  const unknown = makeKey('kw_test');
  const badChecksum = typo(makeKey('kw_test'));
  const url = 'https://github.com/octo/repo/blob/abc123/config.js';
  const body = [
    { token: real.api_key, type: 'keyward_api_key', url, source: 'content' },
    { token: unknown, type: 'keyward_api_key', url: 'https://github.com/o/r/blob/1/a', source: 'content' },
    { token: badChecksum, type: 'keyward_api_key', url: 'https://github.com/o/r/blob/1/b', source: 'commit' },
  ];
  const r = await report(kw, body);
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers['content-type'], /^application\/json/);
  // GitHub's format: the bare array, in the report's order, no envelope.
  assert.deepEqual(r.body, [
    { token_hash: sha256(real.api_key), token_type: 'keyward_api_key', label: 'true_positive' },
    { token_hash: sha256(unknown), token_type: 'keyward_api_key', label: 'false_positive' },
    { token_hash: sha256(badChecksum), token_type: 'keyward_api_key', label: 'false_positive' },
  ]);
  // Refused at the gate at once: the isolate that took the report read the change feed.
  const denied = await gate(real.api_key);
  assert.equal(denied.status, 401, denied.text);
  assert.equal(denied.body.error_code, 'KEY_REVOKED');
  const after = await record(real.id);
  assert.equal(after.status, 'revoked');
  assert.ok(after.revoked_at);
  assert.equal(after.leaked_url, url);
  assert.ok(Math.abs(Date.parse(after.leaked_at) - Date.now()) < 60_000, after.leaked_at);
  const [entry] = await audit(real.id);
  assert.equal(entry.actor, 'leak:github');
  assert.equal(entry.action, 'revoke');
  assert.equal(entry.changes.leaked_url.new, url);
  assert.equal(entry.changes.status.new, 'revoked');
  // The plaintext never reaches the audit log.
  assert.ok(!JSON.stringify(entry).includes(real.api_key));
});

test('a report signed by an older published key is accepted too; a second report of a revoked key is audited only', async () => {
  const real = await create();
  const first = await report(kw, [{ token: real.api_key, type: 't', url: 'https://a', source: 'content' }], { kid: 'kid-old', privateKey: older.privateKey });
  assert.equal(first.status, 200, first.text);
  assert.equal(first.body[0].label, 'true_positive');
  const version = (await record(real.id)).version;
  const again = await report(kw, [{ token: real.api_key, type: 't', url: 'https://b', source: 'content' }]);
  assert.equal(again.body[0].label, 'true_positive');
  const now = await record(real.id);
  assert.equal(now.version, version);
  assert.equal(now.leaked_url, 'https://a');
  const [entry] = await audit(real.id);
  assert.equal(entry.action, 'leak');
  assert.equal(entry.changes.report_url, 'https://b');
});

test('unsigned, wrongly signed, replayed with another body, oversized or malformed reports change nothing', async () => {
  const real = await create();
  const body = JSON.stringify([{ token: real.api_key, type: 't', url: 'https://x', source: 'content' }]);
  const cases = [
    [await report(kw, body, { kid: null, sig: null }), 401, 'MISSING_SIGNATURE'],
    [await report(kw, body, { sig: null }), 401, 'MISSING_SIGNATURE'],
    [await report(kw, body, { kid: null }), 401, 'MISSING_SIGNATURE'],
    [await report(kw, body, { privateKey: stranger.privateKey }), 401, 'BAD_SIGNATURE'],
    [await report(kw, body, { kid: 'kid-old' }), 401, 'BAD_SIGNATURE'],
    [await report(kw, body, { kid: 'kid-nobody' }), 401, 'UNKNOWN_SIGNING_KEY'],
    [await report(kw, body, { sig: 'not base64 !!' }), 401, 'BAD_SIGNATURE'],
    [await report(kw, body, { sig: Buffer.from('not DER').toString('base64') }), 401, 'BAD_SIGNATURE'],
    // A genuine signature of another body, replayed with this one.
    [await report(kw, body, { sig: signature('[{"token":"x"}]') }), 401, 'BAD_SIGNATURE'],
    // Signed, but not GitHub's format.
    [await report(kw, '{"token": 1}'), 400, 'BAD_REQUEST'],
    [await report(kw, '[]'), 400, 'BAD_REQUEST'],
    [await report(kw, 'not json'), 400, 'BAD_REQUEST'],
    [await report(kw, '[{"type":"t"}]'), 400, 'BAD_REQUEST'],
    [await report(kw, JSON.stringify([{ token: real.api_key, url: 7 }])), 400, 'BAD_REQUEST'],
  ];
  for (const [r, status, code] of cases) {
    assert.equal(r.status, status, r.text);
    assert.equal(r.body.success, false, r.text);
    assert.equal(r.body.data, null);
    assert.equal(r.body.error_code, code, r.text);
    assert.ok(r.body.error_message.length > 0);
  }
  // Oversized: refused before the signature is looked at, signed or not.
  const big = JSON.stringify([{ token: real.api_key, type: 't', url: 'x'.repeat(1024 * 1024), source: 'content' }]);
  const tooBig = await report(kw, big);
  assert.equal(tooBig.status, 413, tooBig.text);
  assert.equal(tooBig.body.error_code, 'PAYLOAD_TOO_LARGE');
  const wrongMethod = await kw.request('GET', GITHUB);
  assert.equal(wrongMethod.status, 405);
  assert.equal(wrongMethod.headers.allow, 'POST');
  const unknownMethod = await kw.request('PROPFIND', GITHUB);
  assert.equal(unknownMethod.status, 405, unknownMethod.text);
  assert.equal(unknownMethod.headers.allow, 'POST');
  // Nothing changed.
  const still = await record(real.id);
  assert.equal(still.status, 'active');
  assert.equal(still.leaked_at, null);
  assert.equal(still.version, 1);
  assert.deepEqual((await audit(real.id)).map((e) => e.action), ['create']);
  assert.equal((await gate(real.api_key)).status, 200);
});

test('POST /_keyward/v1/leaks: the operator\'s scanner reports plaintext keys and digests', async () => {
  const [a, b] = [await create('scan-a'), await create('scan-b')];
  const bad = typo(a.api_key);
  const r = await kw.admin('POST', '/leaks', {
    source: 'trufflehog',
    leaks: [
      { key: a.api_key, url: 'https://pastebin.example/1' },
      { digest: sha256(b.api_key) },
      { key: bad },
      { digest: sha256(makeKey('kw_test')) },
    ],
  });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body.data.results, [
    { token_hash: sha256(a.api_key), label: 'true_positive', key_id: a.id },
    { token_hash: sha256(b.api_key), label: 'true_positive', key_id: b.id },
    { token_hash: sha256(bad), label: 'false_positive', key_id: null },
    { token_hash: r.body.data.results[3].token_hash, label: 'false_positive', key_id: null },
  ]);
  for (const key of [a, b]) {
    const denied = await gate(key.api_key);
    assert.equal(denied.body.error_code, 'KEY_REVOKED', denied.text);
    const [entry] = await audit(key.id);
    assert.equal(entry.actor, 'leak:trufflehog');
  }
  assert.equal((await record(a.id)).leaked_url, 'https://pastebin.example/1');
  assert.equal((await record(b.id)).leaked_url, null);
  assert.ok((await record(b.id)).leaked_at);
});

test('POST /_keyward/v1/leaks refuses bad input, and callers without keys:update', async () => {
  const victim = await create('scan-victim');
  const bad = [
    [{ leaks: [{ key: victim.api_key }] }, 'source'],
    [{ source: 'Bad Name', leaks: [{ key: victim.api_key }] }, 'source'],
    [{ source: 's', leaks: [] }, 'leaks'],
    [{ source: 's', leaks: 'x' }, 'leaks'],
    [{ source: 's', leaks: [{ key: victim.api_key, digest: 'ab' }] }, 'leaks\\[0\\]'],
    [{ source: 's', leaks: [{ digest: 'ABC' }] }, 'leaks\\[0\\]\\.digest'],
    [{ source: 's', leaks: [{ key: victim.api_key, url: 5 }] }, 'leaks\\[0\\]\\.url'],
    [{ source: 's', leaks: [{ key: victim.api_key, other: 1 }] }, 'leaks\\[0\\]\\.other'],
    [{ source: 's', leaks: [{ key: victim.api_key }], extra: 1 }, 'extra'],
  ];
  for (const [body, field] of bad) {
    const r = await kw.admin('POST', '/leaks', body);
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error_code, 'BAD_REQUEST');
    assert.match(r.body.error_message, new RegExp(`^${field}`), r.text);
  }
  const reader = await kw.admin('POST', '/api_keys', { api_key: { name: 'reader', permissions: ['keys:read'] } });
  const forbidden = await kw.admin('POST', '/leaks', { source: 's', leaks: [{ key: victim.api_key }] }, reader.body.data.api_key);
  assert.equal(forbidden.status, 403, forbidden.text);
  assert.equal((await kw.admin('POST', '/leaks', { source: 's', leaks: [{ key: victim.api_key }] }, 'nope')).status, 401);
  assert.equal((await kw.admin('GET', '/leaks')).status, 405);
  assert.equal((await record(victim.id)).status, 'active');
});

test('a workspace\'s management key reports leaks of its own keys only: another workspace\'s key is a false positive, left as it is', async () => {
  const inWs = async (ws, name, permissions = ['users:read']) => {
    const r = await kw.admin('POST', `/workspaces/${ws}/api_keys`, { api_key: { name, permissions } });
    assert.equal(r.status, 201, r.text);
    return r.body.data;
  };
  const manager = await inWs('leak-acme', 'acme manager', ['keys:update']);
  const reader = await inWs('leak-acme', 'acme reader', ['keys:read']);
  const own = await inWs('leak-acme', 'acme leaked');
  const theirs = await inWs('leak-globex', 'globex key');
  const r = await kw.admin('POST', '/leaks', { source: 'acme-scanner', leaks: [{ key: own.api_key }, { key: theirs.api_key }] }, manager.api_key);
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body.data.results.map((x) => [x.label, x.key_id]), [['true_positive', own.id], ['false_positive', null]]);
  assert.equal((await record(own.id)).status, 'revoked');
  assert.equal((await gate(own.api_key)).body.error_code, 'KEY_REVOKED');
  const untouched = await record(theirs.id);
  assert.equal(untouched.status, 'active');
  assert.equal(untouched.leaked_at ?? null, null);
  assert.equal((await gate(theirs.api_key)).status, 200);
  assert.deepEqual((await audit(theirs.id)).map((e) => e.action), ['create']);
  // The admin token under a workspace's path is confined the same way.
  const other = await inWs('leak-globex', 'globex other');
  const scoped = await kw.admin('POST', '/workspaces/leak-acme/leaks', { source: 's', leaks: [{ key: other.api_key }] });
  assert.equal(scoped.status, 200, scoped.text);
  assert.equal(scoped.body.data.results[0].label, 'false_positive');
  assert.equal((await record(other.id)).status, 'active');
  // Without keys:update: 403, nothing changed.
  const refused = await kw.admin('POST', '/leaks', { source: 's', leaks: [{ key: other.api_key }] }, reader.api_key);
  assert.equal(refused.status, 403, refused.text);
  assert.equal(refused.body.error_code, 'PERMISSION_DENIED');
});

test('LEAK_ACTION=expire expires a leaked key instead (it can be reactivated)', async () => {
  const other = await startKeyward({ origin: origin.url, vars: { LEAK_REPORT_PUBLIC_KEYS: PUBLIC_KEYS, LEAK_ACTION: 'expire' } });
  try {
    const r = await other.admin('POST', '/api_keys', { api_key: { name: 'exp', permissions: ['users:read'] } });
    const key = r.body.data;
    const rep = await report(other, [{ token: key.api_key, type: 't', url: 'https://e', source: 'content' }]);
    assert.equal(rep.body[0].label, 'true_positive', rep.text);
    const denied = await other.request('GET', USERS, { headers: { authorization: `Bearer ${key.api_key}` } });
    assert.equal(denied.body.error_code, 'KEY_EXPIRED', denied.text);
    const shown = (await other.admin('GET', `/api_keys/${key.id}`)).body.data;
    assert.equal(shown.status, 'expired');
    assert.equal(shown.leaked_url, 'https://e');
    const [entry] = (await other.admin('GET', `/audit?key_id=${key.id}`)).body.data;
    assert.equal(entry.action, 'expire');
    assert.equal(entry.actor, 'leak:github');
    const back = await other.admin('PUT', `/api_keys/${key.id}`, { api_key: { active: true } });
    assert.equal(back.body.data.status, 'active', back.text);
    assert.equal(back.body.data.leaked_url, 'https://e');
  } finally {
    await other.stop();
  }
});
