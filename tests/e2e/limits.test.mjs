// Rate limits and credits end to end: the built Worker under `wrangler dev` with its Limiter
// Durable Objects, a real origin that counts what reaches it. The Limiters' clock is the
// test-only KEYWARD_TEST_NOW_MS (frozen at the start, moved through /_keyward/debug/clock), so
// windows and refills pass without waiting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { keywardForFile } from '../support/per-file.mjs';
import { startKeyward, call, secondLocationConfig, ROOT } from '../support/keyward.mjs';
import { makeKey, digest } from '../support/keys.mjs';

const T0 = Date.now();
const USERS = '/api/v2/projects/7/users';
const MAX = 2 ** 53;

const { origin, kw } = keywardForFile({ vars: { KEYWARD_TEST_NOW_MS: String(T0) } });

async function createKey(attributes = {}) {
  const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'limits test', permissions: ['users:read'], ...attributes } });
  assert.equal(r.status, 201, r.text);
  return { key: r.body.data.api_key, id: r.body.data.id, record: r.body.data };
}

const use = (key, p = USERS, method = 'GET', headers = {}) => kw.request(method, p, { headers: { authorization: `Bearer ${key}`, ...headers } });
const reached = (id) => origin.seen.filter((s) => s.headers['x-keyward-key-id'] === id);
const record = async (id) => (await kw.admin('GET', `/api_keys/${id}`)).body.data;

async function setClock(id, ms) {
  const r = await call(kw.url, 'POST', `/_keyward/debug/clock?limiter=${id}&now_ms=${ms}`);
  assert.equal(r.status, 200, r.text);
}

function assertCode(r, status, code) {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status} ${r.text}`);
  assert.equal(r.body.error_code, code);
}

function nextUtcMidnight(ms) {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
}

test('60 concurrent requests on 20 credits: exactly 20 reach the origin, 40 get USAGE_EXCEEDED, the record shows 0', async () => {
  const { key, id, record: created } = await createKey({ credits: { remaining: 20, refill: null } });
  assert.deepEqual(created.credits, { remaining: 20, refill: null });
  const answers = await Promise.all(Array.from({ length: 60 }, () => use(key)));
  const statuses = answers.map((r) => r.status);
  assert.equal(statuses.filter((s) => s === 200).length, 20, JSON.stringify(statuses));
  const refused = answers.filter((r) => r.status === 429);
  assert.equal(refused.length, 40);
  for (const r of refused) assertCode(r, 429, 'USAGE_EXCEEDED');
  assert.equal(reached(id).length, 20, 'exactly 20 reached the origin');
  // Each forwarded request told the origin what was left after it: 19 down to 0, each once.
  const left = reached(id).map((s) => Number(s.headers['x-keyward-credits-remaining'])).sort((a, b) => a - b);
  assert.deepEqual(left, Array.from({ length: 20 }, (_, i) => i));
  assert.equal((await record(id)).credits.remaining, 0);
  const listed = (await kw.admin('GET', `/api_keys?name=limits%20test&per_page=500`)).body.data.find((k) => k.id === id);
  assert.equal(listed.credits.remaining, 0, 'lists show the live count too');

  // Top up: add, then set; each is audited.
  let r = await kw.admin('POST', `/api_keys/${id}/credits`, { add: 5 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.data.credits.remaining, 5);
  r = await kw.admin('POST', `/api_keys/${id}/credits`, { set: 2 });
  assert.equal(r.body.data.credits.remaining, 2);
  assert.equal((await use(key)).status, 200);
  assert.equal((await use(key)).status, 200);
  assertCode(await use(key), 429, 'USAGE_EXCEEDED');
  assert.equal((await record(id)).credits.remaining, 0);
  const audit = await kw.admin('GET', `/audit?key_id=${id}&action=credits`);
  assert.equal(audit.status, 200, audit.text);
  assert.equal(audit.body.data.length, 2, 'one audit entry per top-up');
});

test('a client cannot send its own X-Keyward-Credits-Remaining to the origin', async () => {
  const { key, id } = await createKey();
  const r = await kw.request('GET', USERS, { headers: { authorization: `Bearer ${key}`, 'x-keyward-credits-remaining': '999' } });
  assert.equal(r.status, 200);
  assert.equal(reached(id).at(-1).headers['x-keyward-credits-remaining'], undefined);
});

test('credits refill on the UTC day boundary, lazily, to the amount (set, not added)', async () => {
  const { key, id } = await createKey({ credits: { remaining: 2, refill: { amount: 5, interval: 'daily' } } });
  await setClock(id, T0);
  assert.equal((await use(key)).status, 200);
  assert.equal((await use(key)).status, 200);
  const out = await use(key);
  assertCode(out, 429, 'USAGE_EXCEEDED');
  const midnight = nextUtcMidnight(T0);
  assert.equal(Number(out.headers['retry-after']), Math.ceil((midnight - T0) / 1000), 'Retry-After: until the refill');
  await setClock(id, midnight - 1);
  assertCode(await use(key), 429, 'USAGE_EXCEEDED');
  await setClock(id, midnight + 1000);
  assert.equal((await record(id)).credits.remaining, 5, 'the view shows the refill due');
  for (let i = 0; i < 5; i++) assert.equal((await use(key)).status, 200, `request ${i}`);
  assertCode(await use(key), 429, 'USAGE_EXCEEDED');
  // A monthly refill waits for the first of the next month.
  const monthly = await createKey({ credits: { remaining: 0, refill: { amount: 3, interval: 'monthly' } } });
  await setClock(monthly.id, T0);
  assertCode(await use(monthly.key), 429, 'USAGE_EXCEEDED');
  const d = new Date(T0);
  await setClock(monthly.id, Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1));
  for (let i = 0; i < 3; i++) assert.equal((await use(monthly.key)).status, 200);
  assertCode(await use(monthly.key), 429, 'USAGE_EXCEEDED');
});

test('5 per 10 s: the 6th gets 429 with Retry-After and RateLimit headers, other keys are unaffected, the window rolls', async () => {
  const { key, id } = await createKey({ ratelimit: { limit: 5, period_seconds: 10 } });
  const other = await createKey({ ratelimit: { limit: 5, period_seconds: 10 } });
  await setClock(id, T0);
  for (let i = 0; i < 3; i++) assert.equal((await use(key)).status, 200);
  await setClock(id, T0 + 5000);
  for (let i = 0; i < 2; i++) assert.equal((await use(key)).status, 200);
  const sixth = await use(key);
  assertCode(sixth, 429, 'RATE_LIMITED');
  assert.equal(sixth.headers['retry-after'], '5', 'the first three leave the window at T0 + 10 s');
  assert.equal(sixth.headers['ratelimit-policy'], '"key";q=5;w=10');
  assert.equal(sixth.headers['ratelimit'], '"key";r=0;t=5');
  assert.equal(reached(id).length, 5);
  assert.equal((await use(other.key)).status, 200, 'another key has its own window');
  await setClock(id, T0 + 9999);
  assertCode(await use(key), 429, 'RATE_LIMITED');
  await setClock(id, T0 + 10_000);
  for (let i = 0; i < 3; i++) assert.equal((await use(key)).status, 200, `after the wait, request ${i}`);
  const again = await use(key);
  assertCode(again, 429, 'RATE_LIMITED');
  assert.equal(again.headers['retry-after'], '5');
});

test('concurrency never lets more than the limit through', async () => {
  const { key, id } = await createKey({ ratelimit: { limit: 7, period_seconds: 60 } });
  const answers = await Promise.all(Array.from({ length: 40 }, () => use(key)));
  assert.equal(answers.filter((r) => r.status === 200).length, 7);
  assert.equal(answers.filter((r) => r.status === 429 && r.body.error_code === 'RATE_LIMITED').length, 33);
  assert.equal(reached(id).length, 7);
});

test('a denied request spends nothing and counts nothing; a route cost spends that many', async () => {
  const { key, id } = await createKey({ credits: { remaining: 12 }, ratelimit: { limit: 3, period_seconds: 60 } });
  for (let i = 0; i < 5; i++) assertCode(await use(key, '/api/v2/projects', 'POST'), 403, 'PERMISSION_DENIED');
  const view = await record(id);
  assert.equal(view.credits.remaining, 12, 'no credit spent by refused requests');
  const before = await kw.admin('GET', '/policy');
  const policy = structuredClone(before.body.data);
  const rule = policy.rules.find((r) => r.method === 'GET' && r.path === '/api/v2/projects/{project_id}/users');
  rule.cost = 5;
  assert.equal((await kw.admin('PUT', '/policy', policy)).status, 200);
  try {
    assert.equal((await use(key)).status, 200);
    assert.equal((await use(key)).status, 200);
    assert.deepEqual(reached(id).map((s) => s.headers['x-keyward-credits-remaining']), ['7', '2']);
    assertCode(await use(key), 429, 'USAGE_EXCEEDED');
    assert.equal((await record(id)).credits.remaining, 2);
    // The third request was refused for credits: it did not take the rate limit's last slot.
    await kw.admin('POST', `/api_keys/${id}/credits`, { add: 5 });
    assert.equal((await use(key)).status, 200);
    assertCode(await use(key), 429, 'RATE_LIMITED');
  } finally {
    assert.equal((await kw.admin('PUT', '/policy', before.body.data)).status, 200);
  }
});

test('/verify shows the limit and credit outcome without spending', async () => {
  const { key, id } = await createKey({ credits: { remaining: 1 } });
  const verify = () => kw.admin('POST', '/verify', { key, method: 'GET', path: USERS });
  for (let i = 0; i < 3; i++) assert.equal((await verify()).body.data.code, 'VALID');
  assert.equal((await record(id)).credits.remaining, 1);
  assert.equal((await use(key)).status, 200);
  const d = (await verify()).body.data;
  assert.equal(d.code, 'USAGE_EXCEEDED');
  assert.equal(d.valid, false);
  const limited = await createKey({ ratelimit: { limit: 1, period_seconds: 60 } });
  assert.equal((await use(limited.key)).status, 200);
  assert.equal((await kw.admin('POST', '/verify', { key: limited.key, method: 'GET', path: USERS })).body.data.code, 'RATE_LIMITED');
});

test('a rolled key keeps its credits and window: the old and new secrets share one Limiter', async () => {
  const { key, id } = await createKey({ credits: { remaining: 3 } });
  assert.equal((await use(key)).status, 200);
  const rolled = await kw.admin('POST', `/api_keys/${id}/roll`, { grace_seconds: 600 });
  assert.equal(rolled.status, 201, rolled.text);
  const fresh = rolled.body.data;
  assert.equal(fresh.credits.remaining, 2);
  assert.equal((await use(fresh.api_key)).status, 200);
  assert.equal((await use(key)).status, 200, 'the old key in its grace period');
  assertCode(await use(fresh.api_key), 429, 'USAGE_EXCEEDED');
  assert.equal((await record(fresh.id)).credits.remaining, 0);
});

test('PUT sets credits and limits; removing them makes the key unlimited', async () => {
  const { key, id } = await createKey({ credits: { remaining: 0 }, ratelimit: { limit: 1, period_seconds: 60 } });
  assertCode(await use(key), 429, 'USAGE_EXCEEDED');
  let r = await kw.admin('PUT', `/api_keys/${id}`, { api_key: { credits: { remaining: 4, refill: { amount: 10, interval: 'monthly' } } } });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.body.data.credits, { remaining: 4, refill: { amount: 10, interval: 'monthly' } });
  assert.deepEqual(r.body.data.ratelimit, { limit: 1, period_seconds: 60 });
  assert.equal((await use(key)).status, 200);
  assertCode(await use(key), 429, 'RATE_LIMITED');
  r = await kw.admin('PUT', `/api_keys/${id}`, { api_key: { name: 'renamed' } });
  assert.equal(r.body.data.credits.remaining, 3, 'an update that does not name credits keeps the live count');
  r = await kw.admin('PUT', `/api_keys/${id}`, { api_key: { credits: null, ratelimit: null } });
  assert.equal(r.body.data.credits, null);
  assert.equal(r.body.data.ratelimit, null);
  for (let i = 0; i < 3; i++) assert.equal((await use(key)).status, 200);
  assert.equal(reached(id).at(-1).headers['x-keyward-credits-remaining'], undefined);
});

test('bad limits and credits: 400 naming the field, nothing written', async () => {
  const bad = [
    [{ ratelimit: { limit: 0, period_seconds: 10 } }, 'ratelimit.limit'],
    [{ ratelimit: { limit: -5, period_seconds: 10 } }, 'ratelimit.limit'],
    [{ ratelimit: { limit: 1000001, period_seconds: 10 } }, 'ratelimit.limit'],
    [{ ratelimit: { limit: 5, period_seconds: 0 } }, 'ratelimit.period_seconds'],
    [{ ratelimit: { limit: 5, period_seconds: 86401 } }, 'ratelimit.period_seconds'],
    [{ ratelimit: { limit: 5 } }, 'ratelimit.period_seconds'],
    [{ ratelimit: 5 }, 'ratelimit'],
    [{ credits: { remaining: -1 } }, 'credits.remaining'],
    [{ credits: { remaining: MAX + 2 } }, 'credits.remaining'],
    [{ credits: { remaining: 1, refill: { amount: 5, interval: 'weekly' } } }, 'credits.refill.interval'],
    [{ credits: { remaining: 1, refill: { amount: 0, interval: 'daily' } } }, 'credits.refill.amount'],
    [{ credits: { remaining: 1, extra: true } }, 'credits.extra'],
  ];
  const count = async () => (await kw.admin('GET', '/api_keys?per_page=1')).body.num_records;
  const before = await count();
  for (const [attrs, field] of bad) {
    const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'bad', ...attrs } });
    assert.equal(r.status, 400, `${JSON.stringify(attrs)}: ${r.text}`);
    assert.ok(r.body.error_message.startsWith(`${field}:`), `${JSON.stringify(attrs)}: ${r.body.error_message}`);
  }
  assert.equal(await count(), before, 'no key was created');
  const { id } = await createKey({ credits: { remaining: 9 }, ratelimit: { limit: 2, period_seconds: 5 } });
  const stored = await record(id);
  for (const [attrs, field] of bad) {
    const r = await kw.admin('PUT', `/api_keys/${id}`, { api_key: attrs });
    assert.equal(r.status, 400, r.text);
    assert.ok(r.body.error_message.startsWith(`${field}:`), r.body.error_message);
    const k = makeKey('kw_live');
    const pushed = await kw.admin('PUT', `/keys/${digest(k)}`, { api_key: { name: 'pushed', version: 1, ...attrs } });
    assert.equal(pushed.status, 400, pushed.text);
    assert.ok(pushed.body.error_message.includes(field), pushed.body.error_message);
  }
  assert.deepEqual(await record(id), stored, 'the key is unchanged');
  const credits = [
    [{}, 'set'],
    [{ set: 1, add: 1 }, 'set'],
    [{ set: -1 }, 'set'],
    [{ set: 1.5 }, 'set'],
    [{ set: '5' }, 'set'],
    [{ add: MAX + 2 }, 'add'],
    [{ top_up: 5 }, 'top_up'],
    [[5], 'body'],
  ];
  for (const [body, field] of credits) {
    const r = await kw.admin('POST', `/api_keys/${id}/credits`, body);
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.ok(r.body.error_message.startsWith(`${field}:`), `${JSON.stringify(body)}: ${r.body.error_message}`);
  }
  const maxed = await kw.admin('POST', `/api_keys/${id}/credits`, { set: MAX });
  assert.equal(maxed.status, 200, maxed.text);
  const over = await kw.admin('POST', `/api_keys/${id}/credits`, { add: 1 });
  assert.equal(over.status, 400, over.text);
  assert.ok(over.body.error_message.startsWith('add:'), over.body.error_message);
  assert.equal((await record(id)).credits.remaining, MAX, 'refused: nothing written');
  const missing = await kw.admin('POST', `/api_keys/key_01H${'Z'.repeat(23)}/credits`, { set: 1 });
  assert.equal(missing.status, 404, missing.text);
  const policy = await kw.admin('PUT', '/policy', { rules: [{ method: 'GET', path: '/a', permission: 'a:read', cost: -1 }] });
  assert.equal(policy.status, 400);
  assert.ok(policy.body.error_message.startsWith('rules[0].cost:'), policy.body.error_message);
});

test('two locations spend from one Limiter; a Limiter that cannot be reached fails closed, a key without limits or with a local one never asks', async () => {
  const env = { WRANGLER_REGISTRY_PATH: mkdtempSync(path.join(ROOT, 'test-output', 'registry-')) };
  const a = await startKeyward({ origin: origin.url, env });
  let b;
  let c;
  try {
    b = await startKeyward({ origin: origin.url, env, adminToken: a.adminToken, config: secondLocationConfig() });
    // A third location whose LIMITER binding names a Worker that does not exist.
    const broken = secondLocationConfig();
    // It also lacks one of the local tiers' bindings.
    const toml = readFileSync(broken, 'utf8').replace('class_name = "Limiter", script_name = "keyward"', 'class_name = "Limiter", script_name = "keyward-nowhere"')
      .replace('name = "keyward-location-b"', 'name = "keyward-location-c"')
      .replace('[[ratelimits]]\nname = "RATE_LIMIT_100_PER_10"', '[[ratelimits]]\nname = "RATE_LIMIT_100_PER_10_GONE"');
    assert.ok(toml.includes('keyward-nowhere'));
    assert.ok(toml.includes('RATE_LIMIT_100_PER_10_GONE'));
    const brokenFile = path.join(path.dirname(broken), 'broken.toml');
    writeFileSync(brokenFile, toml);
    c = await startKeyward({ origin: origin.url, env, adminToken: a.adminToken, config: brokenFile });
    const made = await a.admin('POST', '/api_keys', { api_key: { name: 'two places', permissions: ['users:read'], credits: { remaining: 30 } } });
    assert.equal(made.status, 201, made.text);
    const { api_key: key, id } = made.body.data;
    const at = (loc) => loc.request('GET', USERS, { headers: { authorization: `Bearer ${key}` } });
    // A new key reaches the other locations through the change feed (about a second).
    const known = async (loc, k) => {
      for (let i = 0; i < 50; i++) {
        // A route the key may not use: known keys get PERMISSION_DENIED, which spends nothing.
        const r = await loc.request('GET', '/api/v2/projects', { headers: { authorization: `Bearer ${k}` } });
        if (r.body.error_code === 'PERMISSION_DENIED') return;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.fail('the key never reached the other location');
    };
    await known(b, key);
    await known(c, key);
    // The second location spends from the Limiter: ten at once there, all allowed. (Once, the
    // 30 credits were all spent by the first location's requests before the second's came.)
    const first = await Promise.all(Array.from({ length: 10 }, () => at(b)));
    assert.deepEqual(first.map((r) => r.status), Array(10).fill(200), 'the second location spent some');
    // Then both locations at once, 20 requests each, for the 20 credits left: exactly 20 pass.
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => at(i % 2 ? b : a)));
    assert.equal(answers.filter((r) => r.status === 200).length, 20, JSON.stringify(answers.map((r) => r.status)));
    assert.equal(reached(id).length, 30);
    assert.equal((await a.admin('GET', `/api_keys/${id}`)).body.data.credits.remaining, 0);
    // The broken location: a key with credits is refused with a clear 503, never forwarded.
    await a.admin('POST', `/api_keys/${id}/credits`, { set: 5 });
    const before = reached(id).length;
    const refused = await at(c);
    assertCode(refused, 503, 'STORE_UNAVAILABLE');
    assert.match(refused.body.error_message, /Limiter/);
    assert.equal(reached(id).length, before, 'not forwarded');
    // A key with neither attribute works there: the gate never calls a Limiter for it.
    const plain = await a.admin('POST', '/api_keys', { api_key: { name: 'no limits', permissions: ['users:read'] } });
    await known(c, plain.body.data.api_key);
    const r = await c.request('GET', USERS, { headers: { authorization: `Bearer ${plain.body.data.api_key}` } });
    assert.equal(r.status, 200, r.text);
    // Nor for a key with a `local` limit and no credits; and each location counts it on its own.
    const local = await a.admin('POST', '/api_keys', { api_key: { name: 'local', permissions: ['users:read'], ratelimit: LOCAL } });
    assert.equal(local.status, 201, local.text);
    const localKey = local.body.data.api_key;
    await known(b, localKey);
    await known(c, localKey);
    const send = (loc) => loc.request('GET', USERS, { headers: { authorization: `Bearer ${localKey}` } });
    const perLocation = await inOneWindow(10_000, () => Promise.all([c, b].map(async (loc) => {
      const statuses = [];
      for (let i = 0; i < 11; i++) statuses.push((await send(loc)).status);
      return statuses;
    })));
    const tenThen429 = [...Array(10).fill(200), 429];
    assert.deepEqual(perLocation[0], tenThen429, 'the location whose Limiter is unreachable: no Durable Object call');
    assert.deepEqual(perLocation[1], tenThen429, 'another location has its own count: approximate across locations');
    // A location that does not declare a key's tier fails closed for it.
    const tier = await a.admin('POST', '/api_keys', { api_key: { name: 'tier', permissions: ['users:read'], ratelimit: { ...LOCAL, limit: 100 } } });
    assert.equal(tier.status, 201, tier.text);
    await known(b, tier.body.data.api_key);
    await known(c, tier.body.data.api_key);
    const missing = await c.request('GET', USERS, { headers: { authorization: `Bearer ${tier.body.data.api_key}` } });
    assertCode(missing, 503, 'STORE_UNAVAILABLE');
    assert.match(missing.body.error_message, /RATE_LIMIT_100_PER_10/);
    assert.equal((await b.request('GET', USERS, { headers: { authorization: `Bearer ${tier.body.data.api_key}` } })).status, 200, 'where it is declared, it passes');
  } finally {
    await c?.stop();
    await b?.stop();
    await a.stop();
  }
});

// The `local` mode's Rate Limiting bindings count in fixed windows of their period (wrangler dev
// aligns them to the epoch; Cloudflare does not say how it does): start just after a boundary.
async function startOfWindow(periodMs) {
  const wait = periodMs - (Date.now() % periodMs) + 150;
  await new Promise((r) => setTimeout(r, wait));
}

/** Runs `body` from the start of a window; again in the next window (up to three times) when the
 * machine was so slow that the requests did not all fall in one window. */
async function inOneWindow(periodMs, body) {
  for (let attempt = 0; attempt < 3; attempt++) {
    await startOfWindow(periodMs);
    const start = Date.now();
    const result = await body();
    if (Math.floor(Date.now() / periodMs) === Math.floor(start / periodMs)) return result;
    console.log(`limits: the requests spilled over a ${periodMs} ms window; again`);
  }
  assert.fail('three windows in a row ended before the requests did');
}

const LOCAL = { limit: 10, period_seconds: 10, mode: 'local' };
const TIERS = '10/10s, 100/10s, 1000/10s, 100/60s, 1000/60s, 10000/60s';

test('local mode: counted by the tier\'s Rate Limiting binding, per key, with RateLimit-Policy on every answer', async () => {
  // A fresh key per try, so that each try starts from nothing.
  const { key, id, other, answers } = await inOneWindow(10_000, async () => {
    const { key, id, record: created } = await createKey({ ratelimit: LOCAL });
    assert.deepEqual(created.ratelimit, LOCAL);
    const answers = await Promise.all(Array.from({ length: 30 }, () => use(key)));
    const other = await createKey({ ratelimit: LOCAL });
    assert.equal((await use(other.key)).status, 200, 'another key of the same tier has its own count');
    const rolled = await kw.admin('POST', `/api_keys/${id}/roll`, { grace_seconds: 600 });
    assert.equal(rolled.status, 201, rolled.text);
    // A key rolled from it shares its count, as it shares its Limiter.
    assertCode(await use(rolled.body.data.api_key), 429, 'RATE_LIMITED');
    return { key, id, other, answers };
  });
  const allowed = answers.filter((r) => r.status === 200);
  assert.equal(allowed.length, 10, JSON.stringify(answers.map((r) => r.status)));
  assert.equal(reached(id).length, 10);
  for (const r of allowed) {
    assert.equal(r.headers['ratelimit-policy'], '"key";q=10;w=10');
    assert.equal(r.headers['ratelimit'], undefined, 'the binding does not say how many are left');
  }
  const refused = answers.filter((r) => r.status !== 200);
  for (const r of refused) {
    assertCode(r, 429, 'RATE_LIMITED');
    assert.equal(r.headers['retry-after'], '10', 'at most the period');
    assert.equal(r.headers['ratelimit-policy'], '"key";q=10;w=10');
    assert.equal(r.headers['ratelimit'], '"key";r=0;t=10');
  }
  assert.ok(other.id);
  assert.equal((await record(id)).ratelimit.mode, 'local');
  // /verify cannot read a binding's count without counting: it takes a local limit as not reached.
  assert.equal((await kw.admin('POST', '/verify', { key, method: 'GET', path: USERS })).body.data.code, 'VALID');
  // The next window lets the key through again.
  await startOfWindow(10_000);
  assert.equal((await use(key)).status, 200);
});

test('local mode with credits: the binding counts, the Limiter spends; RATE_LIMITED still comes first', async () => {
  const { id, statuses } = await inOneWindow(10_000, async () => {
    const { key, id } = await createKey({ ratelimit: LOCAL, credits: { remaining: 3 } });
    const statuses = [];
    for (let i = 0; i < 11; i++) statuses.push((await use(key)).body?.error_code ?? 'VALID');
    return { id, statuses };
  });
  // The binding counted the requests the credits refused too (it counts before the credits are
  // asked): the 11th request in the window is over the local limit.
  assert.deepEqual(statuses, [...Array(3).fill('VALID'), ...Array(7).fill('USAGE_EXCEEDED'), 'RATE_LIMITED']);
  assert.deepEqual(reached(id).map((s) => s.headers['x-keyward-credits-remaining']), ['2', '1', '0']);
  assert.equal((await record(id)).credits.remaining, 0);
});

test('local mode: bad values and undeclared tiers are refused naming the field, nothing written', async () => {
  const count = async () => (await kw.admin('GET', '/api_keys?per_page=1')).body.num_records;
  const before = await count();
  const bad = [
    [{ ...LOCAL, period_seconds: 30 }, 'ratelimit.period_seconds'],
    [{ ...LOCAL, mode: 'nearby' }, 'ratelimit.mode'],
    [{ ...LOCAL, mode: true }, 'ratelimit.mode'],
    [{ ...LOCAL, limit: 7 }, 'ratelimit'],
  ];
  for (const [ratelimit, field] of bad) {
    const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'bad local', ratelimit } });
    assert.equal(r.status, 400, r.text);
    assert.ok(r.body.error_message.startsWith(`${field}:`), r.body.error_message);
  }
  const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'bad local', ratelimit: { ...LOCAL, limit: 7 } } });
  assert.match(r.body.error_message, /RATE_LIMIT_7_PER_10/);
  assert.ok(r.body.error_message.includes(TIERS), r.body.error_message);
  assert.equal(await count(), before, 'no key was created');
  const { id } = await createKey({ ratelimit: { limit: 5, period_seconds: 10 } });
  const stored = await record(id);
  const put = await kw.admin('PUT', `/api_keys/${id}`, { api_key: { ratelimit: { limit: 7, period_seconds: 10, mode: 'local' } } });
  assert.equal(put.status, 400, put.text);
  assert.ok(put.body.error_message.startsWith('ratelimit:'), put.body.error_message);
  const k = makeKey('kw_live');
  const pushed = await kw.admin('PUT', `/keys/${digest(k)}`, { api_key: { name: 'pushed', version: 1, ratelimit: { limit: 7, period_seconds: 60, mode: 'local' } } });
  assert.equal(pushed.status, 400, pushed.text);
  assert.ok(pushed.body.error_message.startsWith('ratelimit:'), pushed.body.error_message);
  const batch = await kw.admin('POST', '/keys/batch', { records: [{ digest: digest(k), name: 'b', version: 1, ratelimit: { limit: 3, period_seconds: 60, mode: 'local' } }] });
  assert.equal(batch.status, 200, batch.text);
  assert.equal(batch.body.data.results[0].status, 'refused');
  assert.ok(batch.body.data.results[0].error_message.startsWith('records[0].ratelimit:'), batch.body.data.results[0].error_message);
  assert.deepEqual(await record(id), stored, 'the key is unchanged');
  // A declared tier is taken by each way in; back to exact by naming it (or leaving `mode` out).
  const ok = await kw.admin('PUT', `/api_keys/${id}`, { api_key: { ratelimit: { limit: 100, period_seconds: 60, mode: 'local' } } });
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual(ok.body.data.ratelimit, { limit: 100, period_seconds: 60, mode: 'local' });
  const exact = await kw.admin('PUT', `/api_keys/${id}`, { api_key: { ratelimit: { limit: 100, period_seconds: 60, mode: 'exact' } } });
  assert.deepEqual(exact.body.data.ratelimit, { limit: 100, period_seconds: 60 });
});

test('RateLimit-Policy and RateLimit on allowed answers too, added to the origin\'s own; on a 502 as well', async () => {
  const { key, id } = await createKey({ ratelimit: { limit: 5, period_seconds: 10 } });
  await setClock(id, T0);
  let r = await use(key);
  assert.equal(r.status, 200);
  assert.equal(r.headers['ratelimit-policy'], '"key";q=5;w=10');
  assert.equal(r.headers['ratelimit'], '"key";r=4;t=10');
  await setClock(id, T0 + 3000);
  r = await use(key, USERS, 'GET', { 'x-test-response-headers': JSON.stringify({ 'RateLimit-Policy': '"origin";q=100;w=60', RateLimit: '"origin";r=99;t=60' }) });
  assert.equal(r.status, 200);
  assert.equal(r.headers['ratelimit-policy'], '"origin";q=100;w=60, "key";q=5;w=10', 'both policies, the origin\'s first');
  assert.equal(r.headers['ratelimit'], '"origin";r=99;t=60, "key";r=3;t=7');
  r = await use(key, USERS, 'GET', { 'x-test-destroy': '1' });
  assertCode(r, 502, 'ORIGIN_UNAVAILABLE');
  assert.equal(r.headers['ratelimit'], '"key";r=2;t=7', 'the request was counted: it was forwarded');
  // A key without a rate limit gets none of them.
  const plain = await createKey({ credits: { remaining: 5 } });
  r = await use(plain.key);
  assert.equal(r.status, 200);
  assert.equal(r.headers['ratelimit-policy'], undefined);
  assert.equal(r.headers['ratelimit'], undefined);
});

async function limiterRows(id) {
  const r = await call(kw.url, 'GET', `/_keyward/debug/limiter-rows?limiter=${id}`);
  assert.equal(r.status, 200, r.text);
  return r.body.data;
}

async function expireAndDelete(id) {
  let r = await kw.admin('PUT', `/api_keys/${id}`, { api_key: { active: false } });
  assert.equal(r.status, 200, r.text);
  r = await kw.admin('DELETE', `/api_keys/${id}`);
  assert.equal(r.status, 200, r.text);
}

test('deleting a key deletes its Limiter\'s rows, unless a key rolled from it still counts there', async () => {
  const { key, id } = await createKey({ credits: { remaining: 5 }, ratelimit: { limit: 5, period_seconds: 60 } });
  assert.equal((await use(key)).status, 200);
  assert.deepEqual(await limiterRows(id), { hits: 1, credits: 1 });
  await expireAndDelete(id);
  assert.deepEqual(await limiterRows(id), { hits: 0, credits: 0 }, 'the Limiter holds nothing after delete');
  // A revoked key, deleted (its tombstone stays; its counts do not).
  const revoked = await createKey({ credits: { remaining: 5 } });
  assert.equal((await use(revoked.key)).status, 200);
  assert.equal((await kw.admin('POST', `/api_keys/${revoked.id}/revoke`)).status, 200);
  assert.equal((await kw.admin('DELETE', `/api_keys/${revoked.id}`)).status, 200);
  assert.deepEqual(await limiterRows(revoked.id), { hits: 0, credits: 0 });
  assertCode(await use(revoked.key), 401, 'KEY_REVOKED');
  // Rolled: the new key spends from the old key's Limiter, so deleting the old one keeps it.
  const old = await createKey({ credits: { remaining: 4 } });
  assert.equal((await use(old.key)).status, 200);
  const rolled = await kw.admin('POST', `/api_keys/${old.id}/roll`, { grace_seconds: 0 });
  assert.equal(rolled.status, 201, rolled.text);
  const fresh = rolled.body.data;
  assert.equal((await kw.admin('DELETE', `/api_keys/${old.id}`)).status, 200);
  assert.deepEqual(await limiterRows(old.id), { hits: 0, credits: 1 }, 'kept for the rolled key');
  assert.equal((await record(fresh.id)).credits.remaining, 3);
  assert.equal((await use(fresh.api_key)).status, 200);
  assert.equal((await record(fresh.id)).credits.remaining, 2);
  // The last key using it goes: so do the rows.
  await expireAndDelete(fresh.id);
  assert.deepEqual(await limiterRows(old.id), { hits: 0, credits: 0 });
  // A key that never had limits is deleted as before.
  const plain = await createKey();
  await expireAndDelete(plain.id);
  assert.equal((await kw.admin('GET', `/api_keys/${plain.id}`)).status, 404);
});

test('a request the gate allowed and the origin failed is counted under the gate\'s answer, not VALID', async () => {
  // Its own Worker, with a short wait for the origin (the others keep the default, as load may slow the origin).
  const short = await startKeyward({ origin: origin.url, vars: { ORIGIN_TIMEOUT_MS: '1500' } });
  try {
    const made = await short.admin('POST', '/api_keys', { api_key: { name: 'origin failures', permissions: ['users:read'], credits: { remaining: 10 } } });
    assert.equal(made.status, 201, made.text);
    const { api_key: key, id } = made.body.data;
    const send = (headers = {}) => short.request('GET', USERS, { headers: { authorization: `Bearer ${key}`, ...headers } });
    assert.equal((await send()).status, 200);
    const firstUse = Date.now();
    await new Promise((r) => setTimeout(r, 60));
    assertCode(await send({ 'x-test-destroy': '1' }), 502, 'ORIGIN_UNAVAILABLE');
    assertCode(await send({ 'x-test-destroy': '1' }), 502, 'ORIGIN_UNAVAILABLE');
    assertCode(await send({ 'x-test-delay-ms': '4000' }), 504, 'ORIGIN_TIMEOUT');
    const want = JSON.stringify({ ORIGIN_TIMEOUT: 1, ORIGIN_UNAVAILABLE: 2, VALID: 1 });
    const sorted = (totals) => JSON.stringify(Object.fromEntries(Object.entries(totals).sort()));
    let totals;
    for (let i = 0; i < 75; i++) {
      totals = (await short.admin('GET', `/api_keys/${id}/usage`)).body.data.totals;
      if (sorted(totals) === want) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(sorted(totals), want);
    // The credits were spent all the same: the request was sent, and the origin may have acted on
    // it; and it was a use of the key: last_used_at is one of the failed requests' times.
    const view = (await short.admin('GET', `/api_keys/${id}`)).body.data;
    assert.equal(view.credits.remaining, 6);
    assert.ok(Date.parse(view.last_used_at) >= firstUse + 50, `${view.last_used_at}: a failed request's time, not the first one's (${new Date(firstUse).toISOString()})`);
  } finally {
    await short.stop();
  }
});
