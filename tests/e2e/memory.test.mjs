// The isolate's key cache lets go of what it can no longer answer from, end to end under
// `wrangler dev`: a key the change feed reports changed (deleted, revoked, rolled) leaves the
// cache at once, and entries past CACHE_TTL_SECONDS are dropped as new keys arrive, so that the
// wasm memory levels off while keys come and go (scripts/soak.sh shows it, docs/security.md). Counts come
// from the debug-only stats endpoint (KEYWARD_DEBUG, set by the harness only).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startOrigin } from '../support/origin.mjs';
import { startKeyward } from '../support/keyward.mjs';
import { makeKey } from '../support/keys.mjs';

const USERS = '/api/v2/projects/7/users';
const bearer = (key) => ({ authorization: `Bearer ${key}` });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let origin;

before(async () => {
  origin = await startOrigin();
});
after(async () => {
  await origin?.stop();
});

async function stats(kw) {
  const r = await kw.request('GET', '/_keyward/debug/stats');
  assert.equal(r.status, 200, r.text);
  return r.body.data;
}

async function createKey(kw, name) {
  const r = await kw.admin('POST', '/api_keys', { api_key: { name, permissions: ['users:read'] } });
  assert.equal(r.status, 201, r.text);
  return { id: r.body.data.id, key: r.body.data.api_key };
}

async function expectCode(kw, key, status, code) {
  const r = await kw.request('GET', USERS, { headers: bearer(key) });
  assert.equal(r.status, status, r.text);
  if (code) assert.equal(r.body.error_code, code, r.text);
}

test('a key the change feed reports deleted, revoked or rolled leaves the isolate cache at once', async () => {
  // A long TTL: nothing but the feed could take these entries out of the cache.
  const kw = await startKeyward({ origin: origin.url, vars: { KEYWARD_DEBUG: '1', CACHE_TTL_SECONDS: '600' } });
  try {
    const keys = []; // deleted, revoked, rolled, kept
    for (const name of ['deleted', 'revoked', 'rolled', 'kept']) keys.push(await createKey(kw, name));
    for (const k of keys) await expectCode(kw, k.key, 200);
    const start = await stats(kw);
    assert.equal(start.cached_known, 4, JSON.stringify(start));

    // Each management write reads the feed before it is answered (this isolate), so the entry
    // is gone when the answer arrives; the next request reads KV again. Only a key that is not
    // active may be deleted: it is expired (and gone from the cache), used, then deleted.
    assert.equal((await kw.admin('PUT', `/api_keys/${keys[0].id}`, { api_key: { active: false } })).status, 200);
    assert.equal((await stats(kw)).cached_known, 3, 'the expired key left the cache');
    await expectCode(kw, keys[0].key, 401, 'KEY_EXPIRED');
    assert.equal((await stats(kw)).cached_known, 4, 'and is back, read again');
    assert.equal((await kw.admin('DELETE', `/api_keys/${keys[0].id}`)).status, 200);
    let now = await stats(kw);
    assert.equal(now.cached_known, 3, 'the deleted key left the cache');
    await expectCode(kw, keys[0].key, 401, 'UNKNOWN_KEY');
    const afterDelete = await stats(kw);
    assert.equal(afterDelete.key_reads, now.key_reads + 1, 'a deleted key is read from KV once');
    assert.equal(afterDelete.cached_known, 3, 'and is not a known key again');
    assert.equal(afterDelete.cached_unknown, start.cached_unknown + 1, 'but a small negative entry');
    await expectCode(kw, keys[0].key, 401, 'UNKNOWN_KEY');
    assert.equal((await stats(kw)).key_reads, afterDelete.key_reads, 'the negative entry answers the next request');

    assert.equal((await kw.admin('POST', `/api_keys/${keys[1].id}/revoke`)).status, 200);
    assert.equal((await stats(kw)).cached_known, 2, 'the revoked key left the cache');
    await expectCode(kw, keys[1].key, 401, 'KEY_REVOKED');

    const roll = await kw.admin('POST', `/api_keys/${keys[2].id}/roll`, { grace_seconds: 0 });
    assert.equal(roll.status, 201, roll.text);
    now = await stats(kw);
    assert.equal(now.cached_known, 2, 'the rolled key left the cache (the revoked one is back, read again)');
    await expectCode(kw, keys[2].key, 401, 'KEY_EXPIRED');
    await expectCode(kw, roll.body.data.api_key, 200);
    await expectCode(kw, keys[3].key, 200);
    now = await stats(kw);
    assert.equal(now.cached_known, 4, 'kept, revoked, the old rolled key and its successor');
  } finally {
    await kw.stop();
  }
});

test('cache entries past CACHE_TTL_SECONDS are dropped as new keys arrive, so the cache holds about the keys in use', async () => {
  const kw = await startKeyward({ origin: origin.url, vars: { KEYWARD_DEBUG: '1', CACHE_TTL_SECONDS: '1' } });
  try {
    // 30 keys used once: 30 cached records.
    const first = [];
    for (let i = 0; i < 30; i++) first.push(await createKey(kw, `first ${i}`));
    for (const k of first) await expectCode(kw, k.key, 200);
    assert.ok((await stats(kw)).cached_known >= 30);
    // Past the TTL they can no longer be answered from; each new entry looks at a few slots of
    // each map (four) and drops the stale ones, so 20 unknown keys clear all 30.
    await sleep(1200);
    for (let i = 0; i < 20; i++) await expectCode(kw, makeKey('kw_live'), 401, 'UNKNOWN_KEY');
    const reaped = await stats(kw);
    assert.equal(reaped.cached_known, 0, JSON.stringify(reaped));
    assert.ok(reaped.cached_unknown <= 20, JSON.stringify(reaped));
    // The keys still work: read from KV again.
    await expectCode(kw, first[0].key, 200);
    assert.equal((await stats(kw)).key_reads, reaped.key_reads + 1);

    // Rounds of churn: 40 new keys used, 20 of them revoked and 10 of those deleted. Without the
    // reaping, every round's keys would stay cached (240 records by the end, about 2 KB of wasm
    // memory each); with it, the cache holds about the last round's. The feed's recent versions
    // (120 s of changed digests, kept to judge stale KV replicas) still grow here: this test is
    // shorter than their window; the soak shows them level off.
    const rounds = [];
    for (let round = 0; round < 12; round++) {
      const keys = [];
      for (let i = 0; i < 40; i++) keys.push(await createKey(kw, `round ${round} key ${i}`));
      for (const k of keys) await expectCode(kw, k.key, 200);
      for (const k of keys.slice(0, 20)) assert.equal((await kw.admin('POST', `/api_keys/${k.id}/revoke`)).status, 200);
      for (const k of keys.slice(0, 10)) assert.equal((await kw.admin('DELETE', `/api_keys/${k.id}`)).status, 200);
      await sleep(1100);
      const s = await stats(kw);
      rounds.push({ bytes: s.wasm_memory_bytes, known: s.cached_known, unknown: s.cached_unknown, recent: s.feed_recent });
    }
    console.log(`# by round: wasm KiB (known+unknown cached, feed recent): ${rounds.map((m) => `${(m.bytes / 1024).toFixed(0)} (${m.known}+${m.unknown}, ${m.recent})`).join(', ')}`);
    for (const m of rounds) assert.ok(m.known <= 40 + 2, `cached known keys stay within one round's: ${JSON.stringify(m)}`);
  } finally {
    await kw.stop();
  }
});
