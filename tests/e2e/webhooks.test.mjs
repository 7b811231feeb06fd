// Webhooks end to end against the built Worker under `wrangler dev`: endpoints registered through
// /_keyward/v1/webhooks, and real receivers on loopback that check every delivery with the
// Standard Webhooks reference library (npm standardwebhooks), not with keyward's own code.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { startOrigin } from '../support/origin.mjs';
import { startKeyward } from '../support/keyward.mjs';
import { startReceiver } from '../support/receiver.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, check, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const ALL = ['key.created', 'key.updated', 'key.expired', 'key.revoked', 'key.deleted', 'key.leaked'];
const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const PUBLIC_KEYS = JSON.stringify({ public_keys: [{ key_identifier: 'k1', key: publicKey.export({ type: 'spki', format: 'pem' }), is_current: true }] });

let origin;
let kw;
const receivers = [];
before(async () => {
  origin = await startOrigin();
  kw = await startKeyward({
    origin: origin.url,
    vars: { WEBHOOK_RETRY_SCHEDULE_MS: '100,200,300', LEAK_REPORT_PUBLIC_KEYS: PUBLIC_KEYS },
  });
});
after(async () => {
  await kw?.stop();
  await origin?.stop();
  for (const r of receivers) await r.stop();
});

async function receiverWithEndpoint(events = ALL, options = {}) {
  const receiver = await startReceiver({ status: 204, ...options });
  receivers.push(receiver);
  const r = await kw.admin('POST', '/webhooks', { webhook: { url: receiver.url, events } });
  assert.equal(r.status, 201, r.text);
  receiver.secret = r.body.data.secret;
  receiver.id = r.body.data.id;
  return receiver;
}

const mine = (receiver, keyId) => receiver.accepted.filter((d) => d.event?.data?.id === keyId);

test('endpoints: create shows the secret once; get, list, update, delete; bad input is refused', async () => {
  const r = await kw.admin('POST', '/webhooks', { webhook: { url: 'https://hooks.example/keyward', events: ['key.revoked'] } });
  assert.equal(r.status, 201, r.text);
  const hook = r.body.data;
  assert.match(hook.id, /^wh_[0-9A-Z]{26}$/);
  assert.match(hook.secret, /^whsec_[A-Za-z0-9+/]{32}$/);
  assert.deepEqual(hook.events, ['key.revoked']);
  const got = await kw.admin('GET', `/webhooks/${hook.id}`);
  assert.equal(got.body.data.url, 'https://hooks.example/keyward');
  assert.equal(got.body.data.secret, undefined);
  const listed = await kw.admin('GET', '/webhooks');
  assert.ok(listed.body.data.some((h) => h.id === hook.id && h.secret === undefined));
  const put = await kw.admin('PUT', `/webhooks/${hook.id}`, { webhook: { events: ['key.created', 'key.deleted'] } });
  assert.equal(put.status, 200, put.text);
  assert.deepEqual(put.body.data.events, ['key.created', 'key.deleted']);
  assert.equal(put.body.data.url, 'https://hooks.example/keyward');
  const bad = [
    ['POST', '/webhooks', { webhook: { url: 'ftp://x', events: ['key.created'] } }, 'url'],
    ['POST', '/webhooks', { webhook: { url: 'https://x' } }, 'events'],
    ['POST', '/webhooks', { webhook: { url: 'https://x', events: [] } }, 'events'],
    ['POST', '/webhooks', { webhook: { url: 'https://x', events: ['key.eaten'] } }, 'events\\[0\\]'],
    ['POST', '/webhooks', { webhook: { url: 'https://x', events: ['credits.low', 'credits.lower'] } }, 'events\\[1\\]'],
    ['POST', '/webhooks', { webhook: { url: 'https://x', events: ['key.created'], secret: 'whsec_x' } }, 'secret'],
    ['POST', '/webhooks', { hook: {} }, 'hook'],
    ['PUT', `/webhooks/${hook.id}`, { webhook: { events: ['key.created', 'key.created'] } }, 'events\\[1\\]'],
    ['GET', '/webhooks/nope', undefined, 'id'],
    ['GET', `/webhooks/${hook.id}/deliveries?page=2`, undefined, 'page'],
    ['POST', `/webhooks/${hook.id}/deliveries/evt_1/redeliver`, undefined, 'msg_id'],
  ];
  for (const [method, path, body, field] of bad) {
    const res = await kw.admin(method, path, body);
    assert.equal(res.status, 400, `${method} ${path}: ${res.text}`);
    assert.equal(res.body.error_code, 'BAD_REQUEST');
    assert.match(res.body.error_message, new RegExp(`^${field}`), res.text);
  }
  assert.equal((await kw.admin('GET', `/webhooks/${hook.id}`)).body.data.events.length, 2, 'a refused update changed nothing');
  // Only the admin token manages webhooks (they hold secrets).
  const key = await kw.admin('POST', '/api_keys', { api_key: { name: 'mgmt', permissions: ['keys:read', 'keys:update', 'keys:create'] } });
  assert.equal((await kw.admin('GET', '/webhooks', undefined, key.body.data.api_key)).status, 403);
  assert.equal((await kw.admin('PATCH', '/webhooks')).status, 405);
  const gone = await kw.admin('DELETE', `/webhooks/${hook.id}`);
  assert.deepEqual(gone.body.data, { id: hook.id, deleted: true });
  assert.equal((await kw.admin('GET', `/webhooks/${hook.id}`)).status, 404);
  const audit = (await kw.admin('GET', '/audit?action=webhook_create')).body.data;
  assert.ok(audit.some((e) => e.changes.webhook.new.id === hook.id && !JSON.stringify(e).includes(hook.secret)));
});

test('every key event is delivered, signed per Standard Webhooks, in order, with no plaintext key', async () => {
  const receiver = await receiverWithEndpoint();
  const created = await kw.admin('POST', '/api_keys', { api_key: { name: 'hooked', permissions: ['users:read'] } });
  const key = created.body.data;
  await kw.admin('PUT', `/api_keys/${key.id}`, { api_key: { description: 'changed' } });
  await kw.admin('PUT', `/api_keys/${key.id}`, { api_key: { active: false } });
  await kw.admin('PUT', `/api_keys/${key.id}`, { api_key: { active: true } });
  await kw.admin('POST', `/api_keys/${key.id}/revoke`);
  await kw.admin('DELETE', `/api_keys/${key.id}`);
  const types = ['key.created', 'key.updated', 'key.expired', 'key.updated', 'key.revoked', 'key.deleted'];
  await waitFor('six events', () => mine(receiver, key.id).length >= types.length);
  assert.deepEqual(receiver.errors, []);
  const got = mine(receiver, key.id);
  assert.deepEqual(got.map((d) => d.event.type), types);
  assert.equal(new Set(got.map((d) => d.id)).size, types.length, 'each event has its own webhook-id');
  assert.equal(got[1].event.data.description, 'changed');
  assert.equal(got[4].event.data.status, 'revoked');
  for (const d of got) {
    assert.ok(!d.body.includes(key.api_key), 'no plaintext key in a payload');
    assert.ok(Date.parse(d.event.timestamp));
  }
  // A wrong secret does not verify: the check above is real.
  assert.throws(() => new Webhook('whsec_' + Buffer.alloc(24, 1).toString('base64')).verify(got[0].body, {
    'webhook-id': got[0].id, 'webhook-timestamp': String(Math.floor(Date.now() / 1000)), 'webhook-signature': 'v1,AAAA',
  }));
  const log = await kw.admin('GET', `/webhooks/${receiver.id}/deliveries`);
  assert.equal(log.status, 200, log.text);
  const forKey = log.body.data.filter((d) => d.key_id === key.id);
  assert.equal(forKey.length, types.length);
  assert.ok(forKey.every((d) => d.state === 'delivered' && d.attempts.length === 1 && d.attempts[0].status === 204));
});

test('a receiver that fails five times then succeeds gets every event, in order; the log shows each attempt', async () => {
  const receiver = await receiverWithEndpoint(['key.created', 'key.updated', 'key.revoked'], { failures: 5 });
  const key = (await kw.admin('POST', '/api_keys', { api_key: { name: 'flaky' } })).body.data;
  await kw.admin('PUT', `/api_keys/${key.id}`, { api_key: { name: 'flaky 2' } });
  await kw.admin('POST', `/api_keys/${key.id}/revoke`);
  await waitFor('three accepted events', () => mine(receiver, key.id).length >= 3, 20_000).catch(async (e) => {
    const log = (await kw.admin('GET', `/webhooks/${receiver.id}/deliveries`)).body.data;
    throw new Error(`${e.message}: ${JSON.stringify(log)} received ${JSON.stringify(receiver.all.map((d) => [d.id, d.at]))}`);
  });
  assert.deepEqual(receiver.errors, []);
  assert.deepEqual(mine(receiver, key.id).map((d) => d.event.type), ['key.created', 'key.updated', 'key.revoked']);
  // In order per key: nothing of this key reached the receiver before its created event was accepted.
  const firstAccepted = receiver.all.findIndex((d) => d === mine(receiver, key.id)[0]);
  assert.ok(receiver.all.slice(0, firstAccepted).every((d) => d.event.type === 'key.created'), 'a later event overtook the failing one');
  // The five failures were retries of the same message (same webhook-id).
  assert.equal(new Set(receiver.all.slice(0, 6).map((d) => d.id)).size, 1);
  const log = (await kw.admin('GET', `/webhooks/${receiver.id}/deliveries`)).body.data;
  const createdLog = log.find((d) => d.type === 'key.created' && d.key_id === key.id);
  assert.equal(createdLog.state, 'delivered');
  assert.deepEqual(createdLog.attempts.map((a) => a.status), [500, 500, 500, 500, 500, 204]);
  assert.equal(createdLog.attempt_count, 6);
  // Redelivery sends the same message again.
  const before = receiver.accepted.length;
  const again = await kw.admin('POST', `/webhooks/${receiver.id}/deliveries/${createdLog.id}/redeliver`);
  assert.equal(again.status, 200, again.text);
  await waitFor('the redelivery', () => receiver.accepted.length > before);
  assert.equal(receiver.accepted.at(-1).id, createdLog.id);
  const missing = await kw.admin('POST', `/webhooks/${receiver.id}/deliveries/msg_999999999999/redeliver`);
  assert.equal(missing.status, 404);
});

test('a receiver that never answers well is given up once its retry window closes, each failed attempt logged', async () => {
  const other = await startKeyward({ origin: origin.url, vars: { WEBHOOK_RETRY_SCHEDULE_MS: '100', WEBHOOK_RETRY_WINDOW_MS: '1000' } });
  const receiver = await startReceiver({ failures: 1_000_000 });
  receivers.push(receiver);
  try {
    const hook = (await other.admin('POST', '/webhooks', { webhook: { url: receiver.url, events: ['key.created'] } })).body.data;
    receiver.secret = hook.secret;
    const key = (await other.admin('POST', '/api_keys', { api_key: { name: 'doomed' } })).body.data;
    const log = await waitFor('the event given up', async () => {
      const data = (await other.admin('GET', `/webhooks/${hook.id}/deliveries`)).body.data;
      return data.find((d) => d.key_id === key.id && d.state === 'failed') && data;
    });
    const failed = log.find((d) => d.key_id === key.id);
    assert.ok(failed.attempts.length >= 5 && failed.attempts.length <= 13, JSON.stringify(failed));
    assert.ok(failed.attempts.every((a) => a.status === 500));
    assert.equal(failed.next_attempt_at, null);
    assert.deepEqual(receiver.errors, []);
  } finally {
    await other.stop();
  }
});

test('credits.low and credits.exhausted go out once each, when a request takes the count across', async () => {
  const receiver = await receiverWithEndpoint(['credits.low', 'credits.exhausted']);
  const made = await kw.admin('POST', '/api_keys', { api_key: { name: 'metered', permissions: ['users:read'], credits: { remaining: 3, low_threshold: 1 } } });
  assert.equal(made.status, 201, made.text);
  const key = made.body.data;
  assert.equal(key.credits.low_threshold, 1);
  const use = () => kw.request('GET', '/api/v2/projects/1/users', { headers: { authorization: `Bearer ${key.api_key}` } });
  for (let i = 0; i < 3; i++) assert.equal((await use()).status, 200);
  const refused = await use();
  assert.equal(refused.body.error_code, 'USAGE_EXCEEDED', refused.text);
  await waitFor('two credits events', () => mine(receiver, key.id).length >= 2);
  await sleep(500);
  assert.deepEqual(receiver.errors, []);
  const got = mine(receiver, key.id);
  // With leases (docs/distance.md) one step may take several credits at once: the count each
  // event shows is the Limiter's after that step, at or below the threshold.
  assert.deepEqual(got.map((d) => d.event.type), ['credits.low', 'credits.exhausted']);
  assert.ok(got[0].event.data.credits.remaining <= 1, JSON.stringify(got[0].event.data.credits));
  assert.equal(got[1].event.data.credits.remaining, 0);
  assert.ok(!got.some((d) => d.body.includes(key.api_key)));
  const bad = await kw.admin('PUT', `/api_keys/${key.id}`, { api_key: { credits: { remaining: 5, low_threshold: -1 } } });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error_message, /^credits\.low_threshold/);
});

test('key.expired goes out once when a key expires by time, with nothing written to it', async () => {
  const receiver = await receiverWithEndpoint(['key.expired']);
  const expiresAt = new Date(Date.now() + 2000).toISOString();
  const key = (await kw.admin('POST', '/api_keys', { api_key: { name: 'short-lived', permissions: ['users:read'], expires_at: expiresAt } })).body.data;
  const other = (await kw.admin('POST', '/api_keys', { api_key: { name: 'long-lived', expires_at: new Date(Date.now() + 3_600_000).toISOString() } })).body.data;
  const got = await waitFor('key.expired', () => mine(receiver, key.id)[0], 8_000);
  assert.ok(got.at >= Date.parse(expiresAt), 'not before the key expired');
  assert.ok(got.at - Date.parse(expiresAt) < 3_000, `${got.at - Date.parse(expiresAt)} ms after the key expired`);
  assert.equal(got.event.type, 'key.expired');
  assert.equal(got.event.data.status, 'expired');
  assert.equal(got.event.data.expires_at, expiresAt);
  // Once: a later management call or alarm does not announce it again; the other key is not due.
  await kw.admin('GET', `/api_keys/${key.id}`);
  await sleep(1000);
  assert.equal(mine(receiver, key.id).length, 1);
  assert.equal(mine(receiver, other.id).length, 0);
  assert.deepEqual(receiver.errors, []);
});

test('a slow receiver holds back neither the management API nor the gate', async () => {
  const receiver = await receiverWithEndpoint(['key.created'], { delayMs: 3000 });
  const key = (await kw.admin('POST', '/api_keys', { api_key: { name: 'slow hook', permissions: ['users:read'] } })).body.data;
  await waitFor('the delivery to start', () => receiver.all.some((d) => d.event?.data?.id === key.id));
  const start = Date.now();
  const got = await kw.admin('GET', `/api_keys/${key.id}`);
  assert.equal(got.status, 200);
  const listed = await kw.admin('GET', '/api_keys?per_page=1');
  assert.equal(listed.status, 200);
  const gated = await kw.request('GET', '/api/v2/projects/1/users', { headers: { authorization: `Bearer ${key.api_key}` } });
  assert.equal(gated.status, 200, gated.text);
  assert.ok(Date.now() - start < 1500, `management and gate took ${Date.now() - start} ms while a receiver was slow`);
  assert.equal(receiver.accepted.length, 0, 'the receiver had not answered yet');
  await waitFor('the slow delivery', () => mine(receiver, key.id).length === 1, 10_000);
});

test('a leaked key\'s key.leaked arrives within 5 s of the report', async () => {
  const receiver = await receiverWithEndpoint(['key.leaked', 'key.revoked']);
  const key = (await kw.admin('POST', '/api_keys', { api_key: { name: 'to leak' } })).body.data;
  const body = JSON.stringify([{ token: key.api_key, type: 'keyward', url: 'https://github.com/o/r/blob/1/x', source: 'content' }]);
  const start = Date.now();
  const r = await kw.request('POST', '/_keyward/leaks/github', {
    headers: { 'content-type': 'application/json', 'github-public-key-identifier': 'k1', 'github-public-key-signature': sign('sha256', Buffer.from(body), privateKey).toString('base64') },
    body,
  });
  assert.equal(r.body[0].label, 'true_positive', r.text);
  await waitFor('key.leaked', () => mine(receiver, key.id).some((d) => d.event.type === 'key.leaked'), 5_000);
  assert.ok(Date.now() - start < 5_000);
  await waitFor('key.revoked', () => mine(receiver, key.id).length >= 2, 5_000);
  const [leaked, revoked] = mine(receiver, key.id);
  assert.equal(leaked.event.type, 'key.leaked');
  assert.equal(leaked.event.data.leaked_url, 'https://github.com/o/r/blob/1/x');
  assert.equal(revoked.event.type, 'key.revoked');
  assert.ok(!leaked.body.includes(key.api_key));
  assert.deepEqual(receiver.errors, []);
});
