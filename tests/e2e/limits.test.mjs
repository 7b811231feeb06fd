// Rate limits and credits end to end: the built Worker under `wrangler dev` with its Limiter
// Durable Objects, a real origin that counts what reaches it. The Limiters' clock is the
// test-only KEYWARD_TEST_NOW_MS (frozen at the start, moved through /_keyward/debug/clock), so
// windows and refills pass without waiting.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startOrigin } from '../support/origin.mjs';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startKeyward, call, secondLocationConfig, ROOT } from '../support/keyward.mjs';
import { makeKey, digest } from '../support/keys.mjs';

const T0 = Date.now();
const USERS = '/api/v2/projects/7/users';
const MAX = 2 ** 53;

let origin;
let kw;

before(async () => {
  origin = await startOrigin();
  kw = await startKeyward({ origin: origin.url, vars: { KEYWARD_TEST_NOW_MS: String(T0) } });
});
after(async () => {
  await kw?.stop();
  await origin?.stop();
});

async function createKey(attributes = {}) {
  const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'limits test', permissions: ['users:read'], ...attributes } });
  assert.equal(r.status, 201, r.text);
  return { key: r.body.data.api_key, id: r.body.data.id, record: r.body.data };
}

const use = (key, p = USERS, method = 'GET') => kw.request(method, p, { headers: { authorization: `Bearer ${key}` } });
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

test('two locations spend from one Limiter; a Limiter that cannot be reached fails closed, a key without limits never asks', async () => {
  const env = { WRANGLER_REGISTRY_PATH: mkdtempSync(path.join(ROOT, 'test-output', 'registry-')) };
  const a = await startKeyward({ origin: origin.url, env });
  let b;
  let c;
  try {
    b = await startKeyward({ origin: origin.url, env, adminToken: a.adminToken, config: secondLocationConfig() });
    // A third location whose LIMITER binding names a Worker that does not exist.
    const broken = secondLocationConfig();
    const toml = readFileSync(broken, 'utf8').replace('class_name = "Limiter", script_name = "keyward"', 'class_name = "Limiter", script_name = "keyward-nowhere"')
      .replace('name = "keyward-location-b"', 'name = "keyward-location-c"');
    assert.ok(toml.includes('keyward-nowhere'));
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
    const answers = await Promise.all([...Array.from({ length: 30 }, () => at(a)), ...Array.from({ length: 30 }, () => at(b))]);
    assert.equal(answers.filter((r) => r.status === 200).length, 30, JSON.stringify(answers.map((r) => r.status)));
    assert.ok(answers.slice(30).some((r) => r.status === 200), 'the second location spent some');
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
  } finally {
    await c?.stop();
    await b?.stop();
    await a.stop();
  }
});
