// The control plane end to end: the source of truth on a SQLite-backed Durable Object, KV as the
// edge replica, the change feed, batch push, the audit log, the repair of failed KV writes, and
// the import of a deployment whose records lived only in KV. Everything runs under `wrangler dev`;
// a second `wrangler dev` process with its own KV and isolate, bound to the first one's Durable
// Object, plays another Cloudflare location whose KV replica has not caught up.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync } from 'node:fs';
import path from 'node:path';
import { startOrigin } from '../support/origin.mjs';
import { startKeyward, within, kvCommand, secondLocationConfig, ROOT } from '../support/keyward.mjs';
import { makeKey, digest } from '../support/keys.mjs';

const USERS = '/api/v2/projects/1/users';
const PROJECTS = '/api/v2/projects';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let origin;
before(async () => { origin = await startOrigin(); });
after(async () => { await origin?.stop(); });

const status = async (kw, p, key) => (await kw.request('GET', p, { headers: { 'x-api-key': key } })).status;
const code = async (kw, p, key) => (await kw.request('GET', p, { headers: { 'x-api-key': key } })).body.error_code ?? 'VALID';

async function createKey(kw, attrs = {}) {
  const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'control', permissions: ['users:read', 'projects:read'], ...attrs } });
  assert.equal(r.status, 201, r.text);
  return { key: r.body.data.api_key, id: r.body.data.id, digest: digest(r.body.data.api_key) };
}

/** The KV value under `name`, or null. */
async function kvGet(kw, name) {
  try {
    const out = await kw.kv('key', 'get', name, '--text');
    return /Value not found/.test(out) ? null : out.trim();
  } catch (e) {
    if (/not found/i.test(String(e.stderr ?? e.message))) return null;
    throw e;
  }
}

test('a stale KV replica cannot bring back a revoked, expired or changed key, nor an old policy', async () => {
  // CACHE_TTL_SECONDS=0: every request reads KV, so KV's (stale) answer is seen on every request.
  const kw = await startKeyward({ origin: origin.url, vars: { CACHE_TTL_SECONDS: '0' } });
  try {
    for (const change of ['revoke', 'expire', 'narrow']) {
      const k = await createKey(kw);
      assert.equal(await status(kw, USERS, k.key), 200);
      const before = await kvGet(kw, `key:${k.digest}`);
      assert.ok(before, 'the create reached KV');
      if (change === 'revoke') assert.equal((await kw.admin('POST', `/api_keys/${k.id}/revoke`)).status, 200);
      if (change === 'expire') assert.equal((await kw.admin('PUT', `/api_keys/${k.id}`, { api_key: { active: false } })).status, 200);
      if (change === 'narrow') assert.equal((await kw.admin('PUT', `/api_keys/${k.id}`, { api_key: { permissions: ['projects:read'] } })).status, 200);
      // This location's KV replica goes back to the old record, as a lagging replica would serve it.
      await kw.kv('key', 'put', `key:${k.digest}`, before);
      assert.equal(await kvGet(kw, `key:${k.digest}`), before);
      const expected = { revoke: 'KEY_REVOKED', expire: 'KEY_EXPIRED', narrow: 'PERMISSION_DENIED' }[change];
      const took = await within(1500, async () => (await code(kw, USERS, k.key)) === expected, `${change} honoured`);
      assert.ok(took <= 1500, `${change} took ${took} ms`);
      // The management API reads the source of truth, never the replica.
      const view = (await kw.admin('GET', `/api_keys/${k.id}`)).body.data;
      assert.equal(view.status, change === 'narrow' ? 'active' : change === 'revoke' ? 'revoked' : 'expired');
    }

    // The policy: a stored policy that removes a route, then the old one written back to KV.
    const k = await createKey(kw);
    assert.equal(await status(kw, PROJECTS, k.key), 200);
    const old = (await kw.admin('GET', '/policy')).body.data;
    const narrowed = { rules: old.rules.filter((r) => !(r.method === 'GET' && r.path === PROJECTS)) };
    assert.equal((await kw.admin('PUT', '/policy', narrowed)).status, 200);
    await kw.kv('key', 'put', 'policy', JSON.stringify(old));
    await sleep(1200);
    assert.equal(await code(kw, PROJECTS, k.key), 'ROUTE_NOT_ALLOWED');
  } finally {
    await kw.stop();
  }
});

test('two locations: a change made through one is honoured by the other within the sync interval', async () => {
  // Their own dev registry, so that location B finds this test's location A and no other.
  const env = { WRANGLER_REGISTRY_PATH: mkdtempSync(path.join(ROOT, 'test-output', 'registry-')) };
  const a = await startKeyward({ origin: origin.url, env });
  const b = await startKeyward({ origin: origin.url, env, adminToken: a.adminToken, config: secondLocationConfig(), vars: { MAX_STALENESS_MS: '4000' } });
  try {
    // B's KV never receives a write (the control plane writes A's): B knows keys only by the feed.
    const k = await createKey(a);
    const seen = await within(3000, async () => (await status(b, USERS, k.key)) === 200, 'a new key at B');
    const listed = await b.admin('GET', `/api_keys?name=control`);
    assert.ok(listed.body.data.some((r) => r.id === k.id), 'B lists from the same source of truth');

    const timings = [];
    // Keep B busy, as a location with traffic is: the feed is read in the background.
    for (const [change, expected] of [['narrow', 'PERMISSION_DENIED'], ['expire', 'KEY_EXPIRED'], ['reactivate', 'VALID'], ['revoke', 'KEY_REVOKED']]) {
      if (change === 'narrow') await a.admin('PUT', `/api_keys/${k.id}`, { api_key: { permissions: ['projects:read'] } });
      if (change === 'expire') await a.admin('PUT', `/api_keys/${k.id}`, { api_key: { active: false } });
      if (change === 'reactivate') await a.admin('PUT', `/api_keys/${k.id}`, { api_key: { active: true } });
      if (change === 'revoke') await a.admin('POST', `/api_keys/${k.id}/revoke`);
      const p = change === 'reactivate' ? PROJECTS : USERS;
      timings.push(await within(1500, async () => (await code(b, p, k.key)) === expected, `${change} at B`));
    }
    // And the other way round: a change made at B is honoured at A.
    const k2 = await createKey(b);
    assert.equal(await status(a, USERS, k2.key), 200);
    await b.admin('POST', `/api_keys/${k2.id}/revoke`);
    timings.push(await within(1500, async () => (await code(a, USERS, k2.key)) === 'KEY_REVOKED', 'revoke at A'));
    console.log(`propagation to the other location (ms): first sight ${seen}, changes ${timings.join(', ')}`);

    // The source of truth goes away: B's management calls get 503, B's gate serves what it knows
    // until MAX_STALENESS_MS (4 s here), then fails closed.
    const k3 = await createKey(a);
    await within(3000, async () => (await status(b, USERS, k3.key)) === 200, 'k3 at B');
    await a.stop();
    const down = Date.now();
    const r = await b.admin('GET', '/api_keys');
    assert.equal(r.status, 503, r.text);
    assert.equal(r.body.error_code, 'STORE_UNAVAILABLE');
    let lastServed = 0;
    await within(15000, async () => {
      const s = await b.request('GET', USERS, { headers: { 'x-api-key': k3.key } });
      if (s.status === 200) lastServed = Date.now() - down;
      return s.status === 503 && s.body.error_code === 'STORE_UNAVAILABLE';
    }, 'B fails closed');
    const closed = Date.now() - down;
    console.log(`source of truth down: B served until ${lastServed} ms, failed closed at ${closed} ms`);
    assert.ok(lastServed > 0, 'B kept serving a known key for a while');
    assert.ok(closed >= 2500 && closed <= 8000, `failed closed at ${closed} ms, MAX_STALENESS_MS is 4000`);
  } finally {
    await b.stop();
    await a.stop();
  }
});

test('a failed KV write is retried until KV converges, and nothing is lost meanwhile', async () => {
  // Test-only fault injection: the control plane's first 5 KV writes fail (retried after 0.5, 1, 2, 4 and 8 s).
  const kw = await startKeyward({ origin: origin.url, vars: { KEYWARD_TEST_FAIL_KV_WRITES: '5' } });
  try {
    const k = await createKey(kw);
    assert.equal(await kvGet(kw, `key:${k.digest}`), null, 'the first KV write failed');
    // Committed to the source of truth all the same: listed, and honoured by the gate.
    assert.equal((await kw.admin('GET', `/api_keys/${k.id}`)).status, 200);
    assert.equal(await status(kw, USERS, k.key), 200);
    const took = await within(40000, async () => (await kvGet(kw, `key:${k.digest}`)) !== null, 'KV converges');
    const stored = JSON.parse(await kvGet(kw, `key:${k.digest}`));
    assert.equal(stored.id, k.id);
    assert.equal(stored.digest, k.digest);
    console.log(`KV converged ${took} ms after the answer, after 5 failed writes`);
  } finally {
    await kw.stop();
  }
});

test('batch push: each item applied or refused on its own, idempotent, and honoured by the gate', async () => {
  const kw = await startKeyward({ origin: origin.url });
  try {
    const keys = Array.from({ length: 5 }, () => makeKey('kw_live'));
    const records = keys.map((key, i) => ({ digest: digest(key), name: `batch-${i}`, permissions: ['users:read'], version: 1 }));
    const bad = [
      { digest: 'not-a-digest', name: 'x', version: 1 },
      { digest: digest(makeKey('kw_live')), name: 'no version' },
      { digest: digest(makeKey('kw_live')), name: 'x', version: 1, permissions: 'users:read' },
      'not an object',
    ];
    const r = await kw.admin('POST', '/keys/batch', { records: [...records, ...bad] });
    assert.equal(r.status, 200, r.text);
    const results = r.body.data.results;
    assert.equal(results.length, 9);
    assert.deepEqual(results.slice(0, 5).map((x) => x.status), Array(5).fill('created'));
    assert.deepEqual(results.slice(5).map((x) => x.status), Array(4).fill('refused'));
    assert.match(results[5].error_message, /^records\[5\]\.digest:/);
    assert.match(results[6].error_message, /^records\[6\]\.version:/);
    assert.match(results[7].error_message, /^records\[7\]\.permissions:/);
    assert.ok(results.slice(5).every((x) => x.error_code === 'BAD_REQUEST'));
    assert.equal(await status(kw, USERS, keys[0]), 200);

    // The same batch again changes nothing.
    const again = await kw.admin('POST', '/keys/batch', { records });
    assert.deepEqual(again.body.data.results.map((x) => x.status), Array(5).fill('unchanged'));
    // A higher version updates; the same version with other attributes, or a lower one, is refused.
    const next = await kw.admin('POST', '/keys/batch', { records: [
      { ...records[0], permissions: ['projects:read'], version: 2 },
      { ...records[1], name: 'renamed', version: 1 },
      { ...records[2], version: 0 },
    ] });
    assert.deepEqual(next.body.data.results.map((x) => x.status), ['updated', 'refused', 'refused']);
    assert.equal(next.body.data.results[1].error_code, 'VERSION_CONFLICT');
    assert.equal(await code(kw, USERS, keys[0]), 'PERMISSION_DENIED');
    assert.equal((await kw.admin('GET', '/api_keys?name=batch-1')).body.num_records, 1, 'the refused rename changed nothing');

    // Revoked keys stay revoked.
    await kw.admin('POST', '/revocations', { hashes: [records[3].digest] });
    const revoked = await kw.admin('POST', '/keys/batch', { records: [{ ...records[3], version: 5 }] });
    assert.equal(revoked.body.data.results[0].error_code, 'KEY_REVOKED');

    // Bad batches as a whole: 400 naming the field, nothing written.
    for (const [body, field] of [
      [{ records: [] }, 'records'],
      [{ records: Array(1001).fill(records[4]) }, 'records'],
      [{ records: 'x' }, 'records'],
      [{ records, extra: 1 }, 'extra'],
      [[], 'body'],
    ]) {
      const x = await kw.admin('POST', '/keys/batch', body);
      assert.equal(x.status, 400, x.text);
      assert.match(x.body.error_message, new RegExp(`^${field}`));
    }
    const list = await kw.admin('GET', '/api_keys?name_contains=batch-');
    assert.equal(list.body.num_records, 5);
    // Only the admin token may push.
    const mgmt = await createKey(kw, { permissions: ['keys:read', 'keys:create', 'keys:update'] });
    const denied = await kw.admin('POST', '/keys/batch', { records }, mgmt.key);
    assert.equal(denied.status, 403);
  } finally {
    await kw.stop();
  }
});

test('the audit log names who changed what, for every kind of change and no refused call', async () => {
  const kw = await startKeyward({ origin: origin.url });
  try {
    const mgmt = await createKey(kw, { name: 'ops', permissions: ['keys:read', 'keys:create', 'keys:update', 'keys:delete'] });
    const created = await kw.admin('POST', '/api_keys', { api_key: { name: 'audited', permissions: ['users:read'] } }, mgmt.key);
    const id = created.body.data.id;
    await kw.admin('PUT', `/api_keys/${id}`, { api_key: { name: 'audited-2' } });
    await kw.admin('PUT', `/api_keys/${id}`, { api_key: { active: false } }, mgmt.key);
    await kw.admin('PUT', `/api_keys/${id}`, { api_key: { active: true } });
    const rolled = await kw.admin('POST', `/api_keys/${id}/roll`, { grace_seconds: 0 });
    await kw.admin('POST', `/api_keys/${id}/revoke`);
    await kw.admin('DELETE', `/api_keys/${id}`);
    const pushed = digest(makeKey('kw_live'));
    await kw.admin('PUT', `/keys/${pushed}`, { api_key: { name: 'pushed', version: 1 } });
    const policy = (await kw.admin('GET', '/policy')).body.data;
    await kw.admin('PUT', '/policy', policy);
    const before = (await kw.admin('GET', '/audit?per_page=500')).body.data.length;

    // Refused calls leave no entry.
    assert.equal((await kw.admin('PUT', `/api_keys/${id}`, { api_key: { name: '' } })).status, 404);
    assert.equal((await kw.admin('PUT', `/api_keys/${rolled.body.data.id}`, { api_key: { name: '' } })).status, 400);
    assert.equal((await kw.admin('PUT', `/keys/${pushed}`, { api_key: { name: 'stale', version: 1 } })).status, 409);
    assert.equal((await kw.admin('POST', '/api_keys', { api_key: { name: 'x' } }, 'wrong-token')).status, 401);
    assert.equal((await kw.admin('GET', '/audit?per_page=500')).body.data.length, before);

    const forKey = (await kw.admin('GET', `/audit?key_id=${id}`)).body;
    assert.equal(forKey.success, true);
    assert.deepEqual(forKey.data.map((e) => e.action), ['delete', 'revoke', 'roll', 'reactivate', 'expire', 'update', 'create']);
    const byAction = Object.fromEntries(forKey.data.map((e) => [e.action, e]));
    assert.equal(byAction.create.actor, mgmt.id);
    assert.equal(byAction.expire.actor, mgmt.id);
    assert.equal(byAction.update.actor, 'admin');
    assert.deepEqual(byAction.update.changes.name, { old: 'audited', new: 'audited-2' });
    assert.deepEqual(byAction.expire.changes.active, { old: true, new: false });
    assert.equal(byAction.revoke.changes.status.new, 'revoked');
    assert.match(byAction.create.at, /^\d{4}-\d\d-\d\dT/);
    assert.match(byAction.create.id, /^evt_\d{12}$/);
    // Never a plaintext key.
    const all = JSON.stringify((await kw.admin('GET', '/audit?per_page=500')).body);
    assert.ok(!all.includes(created.body.data.api_key) && !all.includes(rolled.body.data.api_key));

    const pushes = (await kw.admin('GET', '/audit?action=push')).body.data;
    assert.equal(pushes.length, 1);
    assert.equal((await kw.admin('GET', '/audit?action=policy_update')).body.data.length, 1);

    // Paging: newest first, contiguous, no overlap.
    const seen = [];
    let token = null;
    do {
      const page = (await kw.admin('GET', `/audit?per_page=3${token ? `&page_token=${token}` : ''}`)).body;
      seen.push(...page.data.map((e) => e.id));
      token = page.next_page_token;
    } while (token);
    const everything = (await kw.admin('GET', '/audit?per_page=500')).body.data.map((e) => e.id);
    assert.deepEqual(seen, everything);
    assert.deepEqual([...everything].sort().reverse(), everything);

    // The unfiltered count is a kept counter, not a count of the table: after every kind of change
    // it still equals what the list holds, and what a filter matching every name counts.
    const listed = (await kw.admin('GET', '/api_keys?per_page=500')).body;
    assert.equal(listed.num_records, listed.data.length);
    assert.equal(listed.num_records, 3, 'the pushed key, the management key and the rolled key');
    assert.equal((await kw.admin('GET', '/api_keys?name_contains=')).body.num_records, listed.num_records);

    for (const [q, field] of [['key_id=nope', 'key_id'], ['action=explode', 'action'], ['page_token=zzz', 'page_token'], ['per_page=0', 'per_page'], ['colour=red', 'colour']]) {
      const r = await kw.admin('GET', `/audit?${q}`);
      assert.equal(r.status, 400, r.text);
      assert.match(r.body.error_message, new RegExp(`^${field}:`));
    }
  } finally {
    await kw.stop();
  }
});

test('a deployment whose records lived only in KV is imported on first start', async () => {
  // Make a KV-only deployment the way keyward wrote one before the control plane: key:<digest>
  // records, id:<id> index entries (a revoked, deleted key has a record but no index entry), and
  // a stored policy. The records are made by a running keyward; only its KV is kept.
  const donor = await startKeyward({ origin: origin.url });
  const live = await createKey(donor, { name: 'legacy-live' });
  const gone = await createKey(donor, { name: 'legacy-gone' });
  await donor.admin('POST', `/api_keys/${gone.id}/revoke`);
  const policy = (await donor.admin('GET', '/policy')).body.data;
  const narrowed = { rules: policy.rules.filter((r) => r.path !== PROJECTS) };
  await donor.stop();
  const legacy = mkdtempSync(path.join(ROOT, 'test-output', 'legacy-'));
  cpSync(path.join(donor.persist, 'v3', 'kv'), path.join(legacy, 'v3', 'kv'), { recursive: true });
  await kvCommand(legacy, undefined, 'key', 'put', `id:${live.id}`, live.digest);
  await kvCommand(legacy, undefined, 'key', 'put', 'policy', JSON.stringify(narrowed));

  const kw = await startKeyward({ origin: origin.url, persistDir: legacy, adminToken: donor.adminToken });
  try {
    const list = await kw.admin('GET', '/api_keys');
    assert.deepEqual(list.body.data.map((r) => r.name), ['legacy-live']);
    assert.equal(list.body.num_records, 1, 'imported keys are counted');
    assert.equal(await status(kw, USERS, live.key), 200);
    assert.equal(await code(kw, USERS, gone.key), 'KEY_REVOKED');
    assert.equal((await kw.admin('PUT', `/keys/${gone.digest}`, { api_key: { name: 'back', version: 99 } })).body.error_code, 'KEY_REVOKED');
    const p = await kw.admin('GET', '/policy');
    assert.equal(p.body.source, 'stored');
    assert.deepEqual(p.body.data, narrowed);
    assert.equal(await code(kw, PROJECTS, live.key), 'ROUTE_NOT_ALLOWED');
    const imports = (await kw.admin('GET', '/audit?action=import')).body.data;
    assert.equal(imports.length, 2);
    assert.ok(imports.every((e) => e.actor === 'migration'));
  } finally {
    await kw.stop();
  }
  // Once only: a restart imports nothing again.
  const again = await startKeyward({ origin: origin.url, persistDir: legacy, adminToken: donor.adminToken });
  try {
    assert.equal((await again.admin('GET', '/audit?action=import')).body.data.length, 2);
  } finally {
    await again.stop();
  }
});

test('the name search follows every kind of change made after it was first used', async () => {
  const kw = await startKeyward({ origin: origin.url });
  try {
    const names = async (part) => {
      const r = await kw.admin('GET', `/api_keys?name_contains=${encodeURIComponent(part)}&per_page=500`);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.num_records, r.body.data.length);
      return r.body.data.map((k) => k.name).sort();
    };
    const a = await createKey(kw, { name: 'Find-Me a' });
    const b = await createKey(kw, { name: 'find-me b' });
    const c = await createKey(kw, { name: 'find-me c' });
    assert.deepEqual(await names('FIND-me'), ['Find-Me a', 'find-me b', 'find-me c']);
    // Renamed away and back, deleted, revoked, rolled, created, pushed one by one and in a batch.
    assert.equal((await kw.admin('PUT', `/api_keys/${a.id}`, { api_key: { name: 'elsewhere' } })).status, 200);
    assert.equal((await kw.admin('PUT', `/api_keys/${b.id}`, { api_key: { active: false } })).status, 200);
    const del = await kw.admin('DELETE', `/api_keys/${b.id}`);
    assert.equal(del.status, 200, del.text);
    const rolled = await kw.admin('POST', `/api_keys/${c.id}/roll`, { grace_seconds: 0 });
    assert.equal(rolled.status, 201, rolled.text);
    await createKey(kw, { name: 'find-me d' });
    const pushed = digest(makeKey('kw_live'));
    const push = await kw.admin('PUT', `/keys/${pushed}`, { api_key: { name: 'find-me pushed', version: 1 } });
    assert.equal(push.status, 201, push.text);
    const batch = await kw.admin('POST', '/keys/batch', { records: [{ digest: digest(makeKey('kw_live')), name: 'find-me batch', version: 1 }] });
    assert.equal(batch.status, 200, batch.text);
    const before = await names('find-me');
    assert.equal((await kw.admin('POST', `/api_keys/${c.id}/revoke`)).status, 200);
    await kw.admin('PUT', `/keys/${pushed}`, { api_key: { name: 'pushed elsewhere', version: 2 } });
    const after = await names('find-me');
    assert.deepEqual(await names('elsewhere'), ['elsewhere', 'pushed elsewhere']);
    // The same answers as the list without the search, filtered here.
    const all = (await kw.admin('GET', '/api_keys?per_page=500')).body.data;
    assert.deepEqual(after, all.map((k) => k.name).filter((n) => n.toLowerCase().includes('find-me')).sort());
    assert.ok(before.includes('find-me d') && before.includes('find-me pushed') && before.includes('find-me batch'), before.join());
    assert.ok(!after.includes('find-me pushed') && !after.includes('find-me b') && !after.includes('Find-Me a'), after.join());
  } finally {
    await kw.stop();
  }
});
