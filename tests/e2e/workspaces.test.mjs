// Workspaces end to end against the built Worker under `wrangler dev` (contract section 13,
// docs/workspaces.md): the workspaces themselves, every key route under /workspaces/{w}/, the
// `workspace` and `status` list filters, management keys confined to their own workspace (404 for
// another's keys, never 403; no escalation past their own permissions or the ceiling), roles, and
// usage and audit per workspace. Each refused write is checked to leave nothing written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { keywardForFile } from '../support/per-file.mjs';
import { makeKey, digest } from '../support/keys.mjs';

const { kw } = keywardForFile({ vars: { USAGE_FLUSH_MS: '200' } });

const USERS = '/api/v2/projects/1/users';
const PROJECTS = '/api/v2/projects';

function refused(r, status, code, field) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.body.success, false, r.text);
  assert.equal(r.body.data, null, r.text);
  assert.equal(r.body.error_code, code, r.text);
  if (field) assert.match(r.body.error_message, new RegExp(`^${field.replace(/[[\]]/g, '\\$&')}`), r.text);
}

async function ok(promise, status = 200) {
  const r = await promise;
  assert.equal(r.status, status, r.text);
  assert.equal(r.body.success, true, r.text);
  return r.body.data;
}

const admin = (method, p, body, token) => kw.admin(method, p, body, token);
const createKey = (attrs, token, base = '') =>
  ok(admin('POST', `${base}/api_keys`, { api_key: { name: 'k', ...attrs } }, token), 201);
const allIds = async (p, token) => (await ok(admin('GET', p, undefined, token))).map((k) => k.id);
/** The audit log's length, to show that a refused call wrote nothing. */
const auditLength = async () => (await ok(admin('GET', '/audit?per_page=500'))).length;

let seq = 0;
const fresh = (stem) => `${stem}-${Date.now().toString(36)}-${seq++}`;

test('workspaces: create, list with key counts, get, update, delete (409 while it has active keys)', async () => {
  const id = fresh('acme');
  const made = await ok(admin('POST', '/workspaces', { workspace: { id, name: 'Acme Inc.', permission_ceiling: ['users:*', 'keys:*'] } }), 201);
  assert.deepEqual(
    { id: made.id, name: made.name, permission_ceiling: made.permission_ceiling, explicit: made.explicit, key_count: made.key_count },
    { id, name: 'Acme Inc.', permission_ceiling: ['users:*', 'keys:*'], explicit: true, key_count: 0 },
  );
  // The ceiling defaults to ["*"], the name to the id.
  const plain = fresh('plain');
  const p = await ok(admin('POST', '/workspaces', { workspace: { id: plain } }), 201);
  assert.deepEqual([p.name, p.permission_ceiling], [plain, ['*']]);
  refused(await admin('POST', '/workspaces', { workspace: { id } }), 409, 'WORKSPACE_EXISTS', 'id');

  const k1 = await createKey({ workspace: id, permissions: ['users:read'] });
  await createKey({ workspace: id, permissions: ['users:read'], active: false });
  const listed = await ok(admin('GET', '/workspaces'));
  const mine = listed.find((w) => w.id === id);
  assert.equal(mine.key_count, 2);
  assert.equal(mine.active_key_count, 1);
  assert.ok(listed.some((w) => w.id === plain));
  const got = await ok(admin('GET', `/workspaces/${id}`));
  assert.equal(got.key_count, 2);

  const updated = await ok(admin('PUT', `/workspaces/${id}`, { workspace: { name: 'Acme', permission_ceiling: ['users:*', 'projects:read', 'keys:*'] } }));
  assert.equal(updated.name, 'Acme');
  assert.deepEqual(updated.permission_ceiling, ['users:*', 'projects:read', 'keys:*']);
  assert.equal((await ok(admin('GET', `/workspaces/${id}`))).name, 'Acme');

  refused(await admin('DELETE', `/workspaces/${id}`), 409, 'WORKSPACE_HAS_ACTIVE_KEYS');
  await ok(admin('PUT', `/api_keys/${k1.id}`, { api_key: { active: false } }));
  assert.deepEqual(await ok(admin('DELETE', `/workspaces/${id}`)), { id, deleted: true });
  // Its keys (expired) remain: the workspace exists implicitly again, with the ceiling ["*"].
  const implicit = await ok(admin('GET', `/workspaces/${id}`));
  assert.deepEqual([implicit.explicit, implicit.permission_ceiling, implicit.key_count], [false, ['*'], 2]);
  refused(await admin('DELETE', `/workspaces/${id}`), 404, 'NOT_FOUND');
  refused(await admin('GET', `/workspaces/${fresh('never')}`), 404, 'NOT_FOUND');
  // The audit log has the workspace's changes.
  const entries = await ok(admin('GET', `/audit?workspace=${id}&per_page=500`));
  assert.deepEqual(entries.filter((e) => e.action.startsWith('workspace_')).map((e) => e.action), ['workspace_delete', 'workspace_update', 'workspace_create']);
});

test('workspaces: a key naming a workspace never created makes it exist implicitly (ceiling ["*"]); PUT makes it explicit', async () => {
  const id = fresh('implicit');
  await createKey({ workspace: id, permissions: ['*'] });
  const w = await ok(admin('GET', `/workspaces/${id}`));
  assert.deepEqual([w.explicit, w.name, w.permission_ceiling, w.key_count, w.created_at], [false, id, ['*'], 1, null]);
  const now = await ok(admin('PUT', `/workspaces/${id}`, { workspace: { name: 'Now explicit' } }));
  assert.deepEqual([now.explicit, now.name, now.permission_ceiling], [true, 'Now explicit', ['*']]);
});

test('workspaces: every bad input is a 400 naming the field, and nothing is written', async () => {
  const id = fresh('bad');
  await ok(admin('POST', '/workspaces', { workspace: { id } }), 201);
  const before = await auditLength();
  const cases = [
    [{}, 'workspace'],
    [{ workspace: {} }, 'id'],
    [{ workspace: { id: '' } }, 'id'],
    [{ workspace: { id: 'a'.repeat(65) } }, 'id'],
    [{ workspace: { id: 'has space' } }, 'id'],
    [{ workspace: { id: 'dot.ted' } }, 'id'],
    [{ workspace: { id: 7 } }, 'id'],
    [{ workspace: { id: 'ok-id', name: '' } }, 'name'],
    [{ workspace: { id: 'ok-id', name: 'x'.repeat(101) } }, 'name'],
    [{ workspace: { id: 'ok-id', permission_ceiling: 'users:*' } }, 'permission_ceiling'],
    [{ workspace: { id: 'ok-id', permission_ceiling: ['users'] } }, 'permission_ceiling[0]'],
    [{ workspace: { id: 'ok-id', permission_ceiling: ['users:read', 3] } }, 'permission_ceiling[1]'],
    [{ workspace: { id: 'ok-id', key_count: 3 } }, 'key_count'],
    [{ workspace: { id: 'ok-id', colour: 'red' } }, 'colour'],
    [{ workspace: { id: 'ok-id' }, extra: 1 }, 'extra'],
  ];
  for (const [body, field] of cases) refused(await admin('POST', '/workspaces', body), 400, 'BAD_REQUEST', field);
  refused(await admin('PUT', `/workspaces/${id}`, { workspace: { id: 'other' } }), 400, 'BAD_REQUEST', 'id');
  refused(await admin('PUT', `/workspaces/${id}`, { workspace: { permission_ceiling: ['*', 'Bad'] } }), 400, 'BAD_REQUEST', 'permission_ceiling[1]');
  refused(await admin('GET', '/workspaces/not%20valid'), 400, 'BAD_REQUEST', 'workspace');
  refused(await admin('GET', '/workspaces/not%20valid/api_keys'), 400, 'BAD_REQUEST', 'workspace');
  refused(await admin('PATCH', `/workspaces/${id}`), 405, 'METHOD_NOT_ALLOWED');
  refused(await admin('GET', '/workspaces?x=1'), 400, 'BAD_REQUEST', 'query');
  // A key's workspace must be a workspace id.
  refused(await admin('POST', '/api_keys', { api_key: { name: 'k', workspace: 'not valid' } }), 400, 'BAD_REQUEST', 'workspace');
  assert.equal(await auditLength(), before);
  assert.equal((await ok(admin('GET', `/workspaces/${id}`))).permission_ceiling[0], '*');
});

test('scoped routes: every key route under /workspaces/{w}/ answers only that workspace\'s keys', async () => {
  const [a, b] = [fresh('wa'), fresh('wb')];
  const inA = await createKey({ permissions: ['users:read'] }, undefined, `/workspaces/${a}`);
  assert.equal(inA.workspace, a, 'a key created on a scoped route belongs to that workspace');
  const inB = await createKey({ workspace: b, permissions: ['users:read'] });
  const base = `/workspaces/${a}`;
  assert.deepEqual(await allIds(`${base}/api_keys`), [inA.id]);
  assert.equal((await ok(admin('GET', `${base}/api_keys/${inA.id}`))).id, inA.id);
  // The other workspace's key: 404 on every route that names it.
  for (const [method, p, body] of [
    ['GET', `/api_keys/${inB.id}`],
    ['PUT', `/api_keys/${inB.id}`, { api_key: { name: 'x' } }],
    ['DELETE', `/api_keys/${inB.id}`],
    ['POST', `/api_keys/${inB.id}/revoke`],
    ['POST', `/api_keys/${inB.id}/roll`, { grace_seconds: 0 }],
    ['POST', `/api_keys/${inB.id}/credits`, { set: 5 }],
    ['GET', `/api_keys/${inB.id}/usage`],
  ]) refused(await admin(method, `${base}${p}`, body), 404, 'NOT_FOUND');
  assert.equal((await ok(admin('GET', `/api_keys/${inB.id}`))).name, 'k', 'untouched');
  // Moving a key to another workspace is refused, on scoped and flat routes alike.
  refused(await admin('PUT', `${base}/api_keys/${inA.id}`, { api_key: { workspace: b } }), 400, 'BAD_REQUEST', 'workspace');
  refused(await admin('PUT', `/api_keys/${inA.id}`, { api_key: { workspace: b } }), 400, 'BAD_REQUEST', 'workspace');
  refused(await admin('PUT', `/api_keys/${inA.id}`, { api_key: { workspace: null } }), 400, 'BAD_REQUEST', 'workspace');
  refused(await admin('POST', `${base}/api_keys`, { api_key: { name: 'k', workspace: b } }), 400, 'BAD_REQUEST', 'workspace');
  assert.equal((await ok(admin('GET', `/api_keys/${inA.id}`))).workspace, a);
  // The lifecycle works on the scoped routes.
  await ok(admin('PUT', `${base}/api_keys/${inA.id}`, { api_key: { name: 'renamed' } }));
  const rolled = await ok(admin('POST', `${base}/api_keys/${inA.id}/roll`, { grace_seconds: 0 }), 201);
  assert.equal(rolled.workspace, a);
  await ok(admin('POST', `${base}/api_keys/${rolled.id}/revoke`));
  await ok(admin('DELETE', `${base}/api_keys/${rolled.id}`));
  await ok(admin('GET', `${base}/api_keys/${inA.id}/usage`));
  // A deleted revoked key stays its workspace's: pushed again there it is KEY_REVOKED, elsewhere 404.
  const pushed = digest(makeKey('kw_live'));
  const made = await ok(admin('PUT', `${base}/keys/${pushed}`, { api_key: { name: 'pushed', version: 1 } }), 201);
  assert.equal(made.workspace, a);
  await ok(admin('POST', `${base}/api_keys/${made.id}/revoke`));
  await ok(admin('DELETE', `${base}/api_keys/${made.id}`));
  refused(await admin('PUT', `${base}/keys/${pushed}`, { api_key: { name: 'again', version: 9 } }), 409, 'KEY_REVOKED');
  refused(await admin('PUT', `/workspaces/${b}/keys/${pushed}`, { api_key: { name: 'again', version: 9 } }), 404, 'NOT_FOUND');
  // Policy, ping and the OpenAPI document are not workspace routes.
  for (const p of ['/policy', '/ping', '/openapi.json', '/workspaces']) refused(await admin('GET', `${base}${p}`), 404, 'NOT_FOUND');
});

test('lists: workspace= and status= filters, paged, on flat and scoped routes', async () => {
  const w = fresh('lists');
  const active = [];
  for (let i = 0; i < 3; i++) active.push((await createKey({ workspace: w, name: `a${i}` })).id);
  const expired = (await createKey({ workspace: w, name: 'off', active: false })).id;
  const pastDue = (await createKey({ workspace: w, name: 'past', expires_at: new Date(Date.now() + 1500).toISOString() })).id;
  const revoked = (await createKey({ workspace: w, name: 'gone' })).id;
  await ok(admin('POST', `/api_keys/${revoked}/revoke`));
  await createKey({ workspace: fresh('other'), name: 'elsewhere' });
  await sleep(1600);
  const base = `/workspaces/${w}/api_keys`;
  assert.deepEqual(await allIds(`/api_keys?workspace=${w}&status=active`), active);
  assert.deepEqual(await allIds(`${base}?status=active`), active);
  assert.deepEqual(await allIds(`${base}?status=expired`), [expired, pastDue], 'expired by state or by time');
  assert.deepEqual(await allIds(`${base}?status=revoked`), [revoked]);
  assert.deepEqual((await allIds(base)).length, 6);
  // Paging with the filters: by number and by token, counts for the filter.
  const page = await admin('GET', `${base}?status=active&per_page=2`);
  assert.deepEqual([page.body.num_records, page.body.num_pages, page.body.data.length], [3, 2, 2]);
  const next = await admin('GET', `${base}?status=active&per_page=2&page_token=${page.body.next_page_token}`);
  assert.deepEqual(next.body.data.map((k) => k.id), [active[2]]);
  assert.equal(next.body.next_page_token, null);
  // With the name filters.
  assert.deepEqual(await allIds(`/api_keys?workspace=${w}&name=A1`), [active[1]]);
  assert.deepEqual(await allIds(`/api_keys?workspace=${w}&name_contains=a&status=active`), active);
  assert.deepEqual(await allIds(`/api_keys?workspace=${w}&name_contains=o&status=revoked`), [revoked]);
  // Status alone (all workspaces): each listed key has that status.
  const all = await ok(admin('GET', '/api_keys?status=expired&per_page=500'));
  assert.ok(all.every((k) => k.status === 'expired') && all.some((k) => k.id === pastDue));
  refused(await admin('GET', '/api_keys?status=dormant'), 400, 'BAD_REQUEST', 'status');
  refused(await admin('GET', '/api_keys?workspace=a%20b'), 400, 'BAD_REQUEST', 'workspace');
  refused(await admin('GET', `${base}?workspace=${fresh('other')}`), 400, 'BAD_REQUEST', 'workspace');
});

test('current workspace: a management key with a workspace manages that workspace only, 404 for the other\'s keys', async () => {
  const [a, b] = [fresh('cur-a'), fresh('cur-b')];
  await ok(admin('POST', '/workspaces', { workspace: { id: a, permission_ceiling: ['users:*', 'projects:read', 'keys:*'] } }), 201);
  await ok(admin('POST', '/workspaces', { workspace: { id: b } }), 201);
  const mgmtA = await createKey({ workspace: a, name: 'mgmt a', permissions: ['keys:*', 'users:*'] });
  const mgmtB = await createKey({ workspace: b, name: 'mgmt b', permissions: ['keys:*', 'users:read', 'projects:read'] });
  const ka = mgmtA.api_key;
  const kb = mgmtB.api_key;
  // Created with the flat route: the key belongs to the caller's workspace.
  const ownA = await createKey({ permissions: ['users:read'] }, ka);
  assert.equal(ownA.workspace, a);
  const ownB = await createKey({ permissions: ['users:read'] }, kb);
  assert.equal(ownB.workspace, b);
  const unscoped = await createKey({ permissions: ['users:read'] });

  // Lists: exactly its own keys, flat and scoped.
  assert.deepEqual((await allIds('/api_keys?per_page=500', ka)).sort(), [mgmtA.id, ownA.id].sort());
  assert.deepEqual((await allIds(`/workspaces/${a}/api_keys`, ka)).sort(), [mgmtA.id, ownA.id].sort());
  assert.deepEqual((await allIds('/api_keys?per_page=500', kb)).sort(), [mgmtB.id, ownB.id].sort());
  refused(await admin('GET', `/api_keys?workspace=${b}`, undefined, ka), 404, 'NOT_FOUND');
  refused(await admin('GET', `/workspaces/${b}/api_keys`, undefined, ka), 404, 'NOT_FOUND');
  // Every route naming another workspace's key (or a key of no workspace): 404, never 403.
  const before = await auditLength();
  for (const other of [ownB, unscoped]) {
    for (const [method, p, body] of [
      ['GET', `/api_keys/${other.id}`],
      ['PUT', `/api_keys/${other.id}`, { api_key: { name: 'taken' } }],
      ['PUT', `/api_keys/${other.id}`, { api_key: { active: false } }],
      ['DELETE', `/api_keys/${other.id}`],
      ['POST', `/api_keys/${other.id}/revoke`],
      ['POST', `/api_keys/${other.id}/roll`, { grace_seconds: 0 }],
      ['POST', `/api_keys/${other.id}/credits`, { add: 5 }],
      ['GET', `/api_keys/${other.id}/usage`],
      ['POST', `/api_keys/${other.id}/revoke_tokens`],
      ['POST', `/workspaces/${a}/api_keys/${other.id}/revoke_tokens`],
      ['POST', `/workspaces/${b}/api_keys/${other.id}/revoke_tokens`],
      ['GET', `/audit?key_id=${other.id}&workspace=${b}`],
      ['GET', `/workspaces/${b}`],
      ['GET', `/workspaces/${b}/usage`],
      ['PUT', `/workspaces/${b}`, { workspace: { permission_ceiling: ['*'] } }],
      ['DELETE', `/workspaces/${b}`],
    ]) refused(await admin(method, p, body, ka), 404, 'NOT_FOUND');
  }
  // Its own key's tokens it may end, flat or under its workspace.
  await ok(admin('POST', `/api_keys/${ownA.id}/revoke_tokens`, undefined, ka));
  await ok(admin('POST', `/workspaces/${a}/api_keys/${ownA.id}/revoke_tokens`, undefined, ka));
  // Bulk revocation by id and by digest, and a push of the other's digest: refused, per item.
  const rev = await ok(admin('POST', '/revocations', { ids: [ownB.id, ownA.id], hashes: [digest(kb)] }, ka));
  assert.deepEqual(rev.revoked, [ownA.id]);
  assert.deepEqual(rev.not_found.sort(), [ownB.id, digest(kb)].sort());
  const batch = await ok(admin('POST', '/keys/batch', { records: [
    { digest: digest(kb), name: 'hijack', version: 99, permissions: ['*'] },
    { digest: digest(makeKey('kw_live')), name: 'pushed into a', version: 1, permissions: ['users:read'] },
  ] }, ka));
  assert.deepEqual(batch.results.map((r) => [r.status, r.error_code]), [['refused', 'NOT_FOUND'], ['created', null]]);
  refused(await admin('PUT', `/keys/${digest(kb)}`, { api_key: { name: 'hijack', version: 99 } }, ka), 404, 'NOT_FOUND');
  // The other workspace's keys are as they were; a verify of its key is an unknown key.
  assert.equal((await ok(admin('GET', `/api_keys/${ownB.id}`))).status, 'active');
  assert.equal((await ok(admin('GET', `/api_keys/${mgmtB.id}`))).name, 'mgmt b');
  const v = await ok(admin('POST', '/verify', { key: kb, method: 'GET', path: USERS }, ka));
  assert.equal(v.code, 'UNKNOWN_KEY');
  // What was written: a's two token revocations, its revocation and the push into a; nothing of b's.
  const written = (await ok(admin('GET', '/audit?per_page=500'))).slice(0, (await auditLength()) - before);
  assert.deepEqual(written.map((e) => [e.action, e.workspace]), [['push', a], ['revoke', a], ['revoke_tokens', a], ['revoke_tokens', a]]);
  // Its own workspace it may read, not change; the list of workspaces shows only it.
  assert.equal((await ok(admin('GET', `/workspaces/${a}`, undefined, ka))).id, a);
  assert.deepEqual((await ok(admin('GET', '/workspaces', undefined, ka))).map((w) => w.id), [a]);
  refused(await admin('PUT', `/workspaces/${a}`, { workspace: { permission_ceiling: ['*'] } }, ka), 403, 'PERMISSION_DENIED');
  refused(await admin('POST', '/workspaces', { workspace: { id: fresh('new') } }, ka), 403, 'PERMISSION_DENIED');
  // Audit: only its workspace's entries.
  const audit = await ok(admin('GET', '/audit?per_page=500', undefined, ka));
  assert.ok(audit.length > 0 && audit.every((e) => e.workspace === a), JSON.stringify(audit.slice(0, 3)));
  // The admin token may name any workspace ("specified").
  assert.deepEqual((await allIds(`/workspaces/${b}/api_keys`)).sort(), [mgmtB.id, ownB.id].sort());
  // A management key without a workspace still manages every key (as before workspaces).
  const everything = await createKey({ name: 'ops', permissions: ['keys:*'] });
  assert.equal((await ok(admin('GET', `/api_keys/${ownB.id}`, undefined, everything.api_key))).id, ownB.id);
});

test('no escalation: above the ceiling, above the caller\'s own, by role or wildcard: 403 naming the permission, nothing written', async () => {
  const w = fresh('esc');
  await ok(admin('POST', '/workspaces', { workspace: { id: w, permission_ceiling: ['users:*', 'projects:read', 'keys:*'] } }), 201);
  const policy = await ok(admin('GET', '/policy'));
  await ok(admin('PUT', '/policy', { ...policy, roles: { [`${w}-boss`]: ['*'], [`${w}-viewer`]: ['users:read'] } }));
  const mgmt = await createKey({ workspace: w, name: 'mgmt', permissions: ['keys:*', 'users:read', 'projects:read'] });
  const target = await createKey({ workspace: w, name: 'target', permissions: ['users:read'] });
  const before = await auditLength();
  const denied = async (r, permission) => {
    refused(r, 403, 'PERMISSION_DENIED');
    assert.ok(r.body.error_message.includes(permission), r.body.error_message);
  };
  // Above the ceiling, even for the admin token.
  await denied(await admin('POST', '/api_keys', { api_key: { name: 'x', workspace: w, permissions: ['rewards:read'] } }), 'rewards:read');
  await denied(await admin('POST', `/workspaces/${w}/api_keys`, { api_key: { name: 'x', permissions: ['*'] } }), '*');
  await denied(await admin('PUT', `/api_keys/${target.id}`, { api_key: { permissions: ['projects:*'] } }), 'projects:*');
  await denied(await admin('PUT', `/keys/${digest(makeKey('kw_live'))}`, { api_key: { name: 'p', version: 1, workspace: w, permissions: ['events:create'] } }), 'events:create');
  // Above what the calling key holds (users:* is within the ceiling, not within the key).
  await denied(await admin('POST', '/api_keys', { api_key: { name: 'x', permissions: ['users:*'] } }, mgmt.api_key), 'users:*');
  await denied(await admin('POST', '/api_keys', { api_key: { name: 'x', permissions: ['users:delete'] } }, mgmt.api_key), 'users:delete');
  await denied(await admin('PUT', `/api_keys/${target.id}`, { api_key: { permissions: ['users:read', 'users:update'] } }, mgmt.api_key), 'users:update');
  // A role that grants more.
  await denied(await admin('POST', '/api_keys', { api_key: { name: 'x', role: `${w}-boss` } }, mgmt.api_key), 'role');
  await denied(await admin('PUT', `/api_keys/${target.id}`, { api_key: { role: `${w}-boss` } }), 'role');
  // A wildcard.
  await denied(await admin('POST', '/api_keys', { api_key: { name: 'x', permissions: ['keys:*', '*'] } }, mgmt.api_key), '*');
  // Rolling a key that holds more than the caller would hand out its power.
  const strong = await createKey({ workspace: w, name: 'strong', permissions: ['users:*'] });
  await denied(await admin('POST', `/api_keys/${strong.id}/roll`, { grace_seconds: 0 }, mgmt.api_key), 'users:*');
  // An unknown role is a 400.
  refused(await admin('POST', '/api_keys', { api_key: { name: 'x', role: 'nobody' } }), 400, 'BAD_REQUEST', 'role');
  assert.equal(await auditLength(), before + 1, 'only the strong key was written');
  assert.deepEqual((await ok(admin('GET', `/api_keys/${target.id}`))).permissions, ['users:read']);
  // Within both: allowed, a role included.
  const fine = await createKey({ permissions: ['users:read', 'keys:read'], role: `${w}-viewer` }, mgmt.api_key);
  assert.equal(fine.workspace, w);
  // A ceiling lowered later does not block unrelated edits of a key above it.
  await ok(admin('PUT', `/workspaces/${w}`, { workspace: { permission_ceiling: ['keys:*'] } }));
  await ok(admin('PUT', `/api_keys/${target.id}`, { api_key: { name: 'renamed' } }));
  await denied(await admin('PUT', `/api_keys/${target.id}`, { api_key: { permissions: ['users:read'] } }), 'users:read');
  await ok(admin('PUT', '/policy', policy));
});

test('roles: a key\'s role adds the policy\'s permissions at the gate, in verify and for management keys', async () => {
  const policy = await ok(admin('GET', '/policy'));
  await ok(admin('PUT', '/policy', { ...policy, roles: { reader: ['users:read', 'projects:read'], keyreader: ['keys:read'] } }));
  try {
    const reader = await createKey({ permissions: [], role: 'reader' });
    const plain = await createKey({ permissions: [] });
    const auth = (key) => ({ headers: { authorization: `Bearer ${key}` } });
    await sleep(1200);
    assert.equal((await kw.request('GET', USERS, auth(reader.api_key))).status, 200);
    assert.equal((await kw.request('GET', PROJECTS, auth(reader.api_key))).status, 200);
    assert.equal((await kw.request('POST', USERS, { ...auth(reader.api_key), body: {} })).body.error_code, 'PERMISSION_DENIED');
    assert.equal((await kw.request('GET', USERS, auth(plain.api_key))).body.error_code, 'PERMISSION_DENIED');
    const v = await ok(admin('POST', '/verify', { key: reader.api_key, method: 'GET', path: USERS }));
    assert.deepEqual([v.valid, v.code], [true, 'VALID']);
    // A management key whose role grants keys:read.
    const mk = await createKey({ permissions: [], role: 'keyreader' });
    await ok(admin('GET', '/api_keys?per_page=1', undefined, mk.api_key));
    refused(await admin('POST', '/api_keys', { api_key: { name: 'x' } }, mk.api_key), 403, 'PERMISSION_DENIED');
    // The default role grants nothing unless defined.
    assert.equal(plain.role, 'organization_admin');
    // Bad roles in the policy name the field.
    refused(await admin('PUT', '/policy', { ...policy, roles: { reader: ['users'] } }), 400, 'BAD_REQUEST', 'roles.reader[0]');
    refused(await admin('PUT', '/policy', { ...policy, roles: { 'bad name': [] } }), 400, 'BAD_REQUEST', 'roles.bad name');
    refused(await admin('PUT', '/policy', { ...policy, roles: ['reader'] }), 400, 'BAD_REQUEST', 'roles');
    refused(await admin('PUT', `/api_keys/${plain.id}`, { api_key: { role: 'writer' } }), 400, 'BAD_REQUEST', 'role');
  } finally {
    await ok(admin('PUT', '/policy', policy));
  }
});

test('usage and audit per workspace', async () => {
  const [a, b] = [fresh('use-a'), fresh('use-b')];
  const k1 = await createKey({ workspace: a, permissions: ['users:read'] });
  const k2 = await createKey({ workspace: a, permissions: [] });
  const k3 = await createKey({ workspace: b, permissions: ['users:read'] });
  const send = (k) => kw.request('GET', USERS, { headers: { 'x-api-key': k.api_key } });
  for (let i = 0; i < 3; i++) assert.equal((await send(k1)).status, 200);
  for (let i = 0; i < 2; i++) assert.equal((await send(k2)).status, 403);
  assert.equal((await send(k3)).status, 200);
  const deadline = Date.now() + 15_000;
  let usage;
  for (;;) {
    usage = await ok(admin('GET', `/workspaces/${a}/usage`));
    if (usage.total === 5 || Date.now() > deadline) break;
    await sleep(250);
  }
  assert.equal(usage.workspace, a);
  assert.deepEqual(usage.totals, { VALID: 3, PERMISSION_DENIED: 2 });
  assert.equal(usage.buckets.length, 25);
  refused(await admin('GET', `/workspaces/${a}/usage?granularity=week`), 400, 'BAD_REQUEST', 'granularity');
  refused(await admin('GET', `/workspaces/${fresh('none')}/usage`), 404, 'NOT_FOUND');
  // audit?workspace=
  const entries = await ok(admin('GET', `/audit?workspace=${a}&per_page=500`));
  assert.deepEqual(entries.map((e) => e.key_id).sort(), [k1.id, k2.id].sort());
  assert.ok(entries.every((e) => e.workspace === a));
  assert.deepEqual((await ok(admin('GET', `/workspaces/${b}/audit`))).map((e) => e.key_id), [k3.id]);
  refused(await admin('GET', '/audit?workspace=no%20way'), 400, 'BAD_REQUEST', 'workspace');
});
