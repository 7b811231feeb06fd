// Distance (docs/distance.md): the control plane and the Limiters a continent away, played by the
// test-only KEYWARD_TEST_REMOTE_DELAY_MS (every call from a gate isolate to them waits that long
// first). These tests assert behaviour, not timings: which requests wait for a feed read (the
// `feed.inline` count of /_keyward/debug/stats) and where the reads went (`feed.control`, the
// control plane; `feed.location`, the location's copy in the Cache API). Timings are measured by
// `scripts/bench.sh distance` instead.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import path from 'node:path';
import { startOrigin } from '../support/origin.mjs';
import { startKeyward, within as pollWithin, secondLocationConfig, ROOT } from '../support/keyward.mjs';

const USERS = '/api/v2/projects/1/users';
const DELAY = 150;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let origin;
before(async () => { origin = await startOrigin(); });
after(async () => { await origin?.stop(); });

const feed = async (kw) => {
  const r = await kw.request('GET', '/_keyward/debug/stats');
  assert.equal(r.status, 200, r.text);
  return r.body.data.feed;
};
const code = async (kw, key) => {
  const r = await kw.request('GET', USERS, { headers: { 'x-api-key': key } });
  return r.body?.error_code ?? (r.status === 200 ? 'VALID' : String(r.status));
};

async function createKey(kw) {
  const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'distance', permissions: ['users:read'] } });
  assert.equal(r.status, 201, r.text);
  return { key: r.body.data.api_key, id: r.body.data.id };
}

const within = (ms, probe, what) => pollWithin(ms, probe, what, 20);

test('strict: a busy isolate never reads the feed on a request\'s path; an idle one reads once, from the location\'s copy when a neighbour left one', async () => {
  // SYNC_INTERVAL_MS=1000: a view older than 1000 ms plus the round trip (about 150 ms) is read
  // again before answering; with traffic it is refreshed every 250 ms, from the location's copy
  // while that is under 1000 - 250 - 150 ms old.
  const kw = await startKeyward({ origin: origin.url, vars: { KEYWARD_DEBUG: '1', KEYWARD_TEST_REMOTE_DELAY_MS: String(DELAY), SYNC_INTERVAL_MS: '1000' } });
  try {
    const { key } = await createKey(kw);
    assert.equal(await code(kw, key), 'VALID');
    // Busy: 60 requests 50 ms apart (20 req/s, for 3 s, three intervals): the feed is read again
    // and again, always after the answers.
    const start = await feed(kw);
    for (let i = 0; i < 60; i++) {
      assert.equal(await code(kw, key), 'VALID');
      await sleep(50);
    }
    const busy = await feed(kw);
    assert.equal(busy.inline, start.inline, `no request waited for the feed: ${JSON.stringify({ start, busy })}`);
    assert.ok(busy.control + busy.location - start.control - start.location >= 4, `the feed was read in the background: ${JSON.stringify({ start, busy })}`);
    assert.ok(busy.location > start.location, `later reads used the location's copy: ${JSON.stringify({ start, busy })}`);

    // Idle for 1.6 s (past the interval plus the round trip), alone in its location: the next
    // request waits for one read of the control plane (strict).
    await sleep(1600);
    const before1 = await feed(kw);
    assert.equal(await code(kw, key), 'VALID');
    const alone = await feed(kw);
    assert.equal(alone.inline, before1.inline + 1, 'the idle isolate read the feed before answering');
    assert.equal(alone.control, before1.control + 1, 'from the control plane: no recent copy in the location');

    // Idle again, but a busy neighbour has just read the feed: the copy it shared in the location
    // is what the idle isolate reads, and the control plane is not asked.
    await sleep(1600);
    assert.equal((await kw.request('GET', '/_keyward/debug/neighbour')).status, 200);
    const before2 = await feed(kw);
    assert.equal(await code(kw, key), 'VALID');
    const neighbour = await feed(kw);
    assert.equal(neighbour.inline, before2.inline + 1, 'the idle isolate read the feed before answering');
    assert.equal(neighbour.location, before2.location + 1, 'from the location\'s copy');
    assert.equal(neighbour.control, before2.control, 'not from the control plane');
  } finally {
    await kw.stop();
  }
});

test('bounded: an idle isolate answers from memory and catches up after; past MAX_STALENESS_MS it reads first', async () => {
  const kw = await startKeyward({
    origin: origin.url,
    vars: { KEYWARD_DEBUG: '1', KEYWARD_TEST_REMOTE_DELAY_MS: String(DELAY), SYNC_INTERVAL_MS: '200', MAX_STALENESS_MS: '2500', FRESHNESS: 'bounded' },
  });
  try {
    const { key } = await createKey(kw);
    assert.equal(await code(kw, key), 'VALID');
    await sleep(1000);
    const before1 = await feed(kw);
    assert.equal(await code(kw, key), 'VALID');
    const after1 = await feed(kw);
    assert.equal(after1.inline, before1.inline, 'idle 1 s (5 intervals): answered from memory');
    await within(2000, async () => {
      const f = await feed(kw);
      return f.control + f.location > after1.control + after1.location;
    }, 'the background read after the answer');
    // Past MAX_STALENESS_MS a view is never used: the request reads first.
    await sleep(3000);
    const before2 = await feed(kw);
    assert.equal(await code(kw, key), 'VALID');
    assert.equal((await feed(kw)).inline, before2.inline + 1, 'idle 3 s > MAX_STALENESS_MS: read before answering');
  } finally {
    await kw.stop();
  }
});

test('two locations, both far from the control plane: a revocation is honoured by a busy location within the interval plus a round trip, by an idle one at once (strict) or after one answer (bounded)', async () => {
  const env = { WRANGLER_REGISTRY_PATH: mkdtempSync(path.join(ROOT, 'test-output', 'registry-')) };
  const far = { KEYWARD_DEBUG: '1', KEYWARD_TEST_REMOTE_DELAY_MS: String(DELAY), SYNC_INTERVAL_MS: '500' };
  const a = await startKeyward({ origin: origin.url, env, vars: far });
  const config = secondLocationConfig();
  const b = await startKeyward({ origin: origin.url, env, adminToken: a.adminToken, config, vars: far });
  const c = await startKeyward({ origin: origin.url, env, adminToken: a.adminToken, config: secondLocationConfig(), vars: { ...far, FRESHNESS: 'bounded' } });
  try {
    // Busy B: polled while the key is revoked at A.
    const k1 = await createKey(a);
    await within(3000, async () => (await code(b, k1.key)) === 'VALID', 'the new key at B');
    for (let i = 0; i < 10; i++) { await code(b, k1.key); await sleep(30); }
    assert.equal((await a.admin('POST', `/api_keys/${k1.id}/revoke`)).status, 200);
    const took = await within(500 + 2 * DELAY + 1000, async () => (await code(b, k1.key)) === 'KEY_REVOKED', 'revocation at busy B');
    console.log(`revocation honoured by a busy location ${took} ms after the answer to the revoke`);

    // Idle B (strict): its first request after the revocation already refuses it.
    const k2 = await createKey(a);
    await within(3000, async () => (await code(b, k2.key)) === 'VALID', 'the second key at B');
    await sleep(1500);
    const idleB = await feed(b);
    assert.equal((await a.admin('POST', `/api_keys/${k2.id}/revoke`)).status, 200);
    assert.equal(await code(b, k2.key), 'KEY_REVOKED', 'strict: the idle location read the feed before answering');
    assert.equal((await feed(b)).inline, idleB.inline + 1);

    // Idle C (bounded): the first request is answered from memory (the documented trade), the
    // background read after it brings the revocation.
    const k3 = await createKey(a);
    await within(3000, async () => (await code(c, k3.key)) === 'VALID', 'the third key at C');
    await sleep(1500);
    assert.equal((await a.admin('POST', `/api_keys/${k3.id}/revoke`)).status, 200);
    const idleC = await feed(c);
    assert.equal(await code(c, k3.key), 'VALID', 'bounded: answered from a view under MAX_STALENESS_MS old');
    assert.equal((await feed(c)).inline, idleC.inline, 'bounded: no read on the path');
    await within(500 + 2 * DELAY + 1000, async () => (await code(c, k3.key)) === 'KEY_REVOKED', 'revocation at idle C after its catch-up');
  } finally {
    await Promise.all([a.stop(), b.stop(), c.stop()]);
  }
});

test('leases: two far locations spend a key\'s credits and window locally, never more than them, and give back what they did not use', async () => {
  const env = { WRANGLER_REGISTRY_PATH: mkdtempSync(path.join(ROOT, 'test-output', 'registry-')) };
  const far = { KEYWARD_DEBUG: '1', KEYWARD_TEST_REMOTE_DELAY_MS: String(DELAY), LEASE_TTL_MS: '1000' };
  const a = await startKeyward({ origin: origin.url, env, vars: far });
  const b = await startKeyward({ origin: origin.url, env, adminToken: a.adminToken, config: secondLocationConfig(), vars: far });
  const reached = (id) => origin.seen.filter((s) => s.headers['x-keyward-key-id'] === id).length;
  const lease = async (kw) => (await kw.request('GET', '/_keyward/debug/stats')).body.data.lease;
  try {
    for (const [attrs, allowed] of [[{ credits: { remaining: 120 } }, 120], [{ ratelimit: { limit: 90, period_seconds: 600 } }, 90]]) {
      const made = await a.admin('POST', '/api_keys', { api_key: { name: 'leased', permissions: ['users:read'], ...attrs } });
      assert.equal(made.status, 201, made.text);
      const { api_key: key, id } = made.body.data;
      await within(3000, async () => (await code(b, key)) === 'VALID', 'the key at B');
      await code(a, key);
      const before = { a: await lease(a), b: await lease(b) };
      // Four clients per location, each sending its next request when the last is answered:
      // 320 requests for what allows `allowed` (two already spent above).
      const statuses = [];
      await Promise.all([a, b].flatMap((loc) => Array.from({ length: 4 }, async () => {
        for (let i = 0; i < 40; i++) statuses.push((await loc.request('GET', USERS, { headers: { 'x-api-key': key } })).status);
      })));
      const forwarded = reached(id);
      assert.ok(forwarded <= allowed, `${JSON.stringify(attrs)}: ${forwarded} forwarded, more than ${allowed}`);
      assert.equal(statuses.filter((s) => s === 200).length + 2, forwarded);
      const after = { a: await lease(a), b: await lease(b) };
      const local = after.a.spent_locally + after.b.spent_locally - before.a.spent_locally - before.b.spent_locally;
      assert.ok(local > 0, `requests were spent from leases: ${JSON.stringify({ before, after })}`);
      // What a location held unused comes back after the lease's time; then the rest is spent.
      await sleep(1500);
      for (let i = 0; i < 40 && reached(id) < allowed; i++) {
        await Promise.all([a, b].map((loc) => loc.request('GET', USERS, { headers: { 'x-api-key': key } })));
      }
      assert.equal(reached(id), allowed, `${JSON.stringify(attrs)}: in the end exactly what was allowed (${forwarded} during the run)`);
      console.log(`${JSON.stringify(attrs)}: ${forwarded} forwarded during the run, ${local} of them from leases; ${reached(id)} in the end`);
    }
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
});

test('leases: a change of credits ends the leases; a set replaces what they held, an add loses nothing', async () => {
  const kw = await startKeyward({ origin: origin.url, vars: { KEYWARD_DEBUG: '1', KEYWARD_TEST_REMOTE_DELAY_MS: '50', LEASE_TTL_MS: '3000' } });
  const reached = (id) => origin.seen.filter((s) => s.headers['x-keyward-key-id'] === id).length;
  const use = (key) => kw.request('GET', USERS, { headers: { 'x-api-key': key } });
  const lease = async () => (await kw.request('GET', '/_keyward/debug/stats')).body.data.lease;
  const remaining = async (id) => (await kw.admin('GET', `/api_keys/${id}`)).body.data.credits.remaining;
  try {
    const made = await kw.admin('POST', '/api_keys', { api_key: { name: 'leased', permissions: ['users:read'], credits: { remaining: 1000 } } });
    const { api_key: key, id } = made.body.data;
    for (let i = 0; i < 30; i++) assert.equal((await use(key)).status, 200);
    await sleep(300); // a prefetch in flight lands
    const held = (await lease()).held;
    assert.ok(held > 0, `the isolate holds leased requests: ${JSON.stringify(await lease())}`);
    // The view reads the Limiter: what is leased and unused is not in it.
    assert.equal(await remaining(id), 1000 - 30 - held);
    // An add: the leases end and give their credits back; nothing is lost.
    assert.equal((await kw.admin('POST', `/api_keys/${id}/credits`, { add: 5 })).status, 200);
    assert.equal((await use(key)).status, 200);
    // (The request after the add may take a new lease: it too comes back when it ends.)
    await within(8000, async () => (await remaining(id)) === 1000 + 5 - reached(id), 'the leased credits given back after the add');
    // Busy again, then a set: what the leases held is replaced, and exactly 3 more pass.
    for (let i = 0; i < 30; i++) assert.equal((await use(key)).status, 200);
    assert.ok((await lease()).held > 0, 'leased again');
    assert.equal((await kw.admin('POST', `/api_keys/${id}/credits`, { set: 3 })).status, 200);
    const before = reached(id);
    const statuses = [];
    for (let i = 0; i < 8; i++) statuses.push((await use(key)).status);
    assert.deepEqual(statuses, [200, 200, 200, 429, 429, 429, 429, 429]);
    assert.equal(reached(id) - before, 3);
    assert.equal(await remaining(id), 0);
  } finally {
    await kw.stop();
  }
});
