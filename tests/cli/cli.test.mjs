// The `keyward` CLI end to end: the built binary (target/release/keyward, `cargo build --release
// -p keyward-cli`) against the built Worker under `wrangler dev` with a real origin. Keys made and
// hashed by the CLI must agree with tests/support/keys.mjs; what it imports, pushes and revokes
// must be what the gate then answers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startOrigin } from '../support/origin.mjs';
import { startKeyward, freePort, ROOT } from '../support/keyward.mjs';
import { makeKey, digest, checksum } from '../support/keys.mjs';

const BIN = process.env.KEYWARD_BIN ?? path.join(ROOT, 'target/release/keyward');
const USERS = '/api/v2/projects/1/users';

let origin;
let kw;
let dir;
before(async () => {
  assert.ok(existsSync(BIN), `${BIN} is missing: run cargo build --release -p keyward-cli`);
  origin = await startOrigin();
  kw = await startKeyward({ origin: origin.url });
  dir = mkdtempSync(path.join(ROOT, 'test-output', 'cli-'));
});
after(async () => {
  await kw?.stop();
  await origin?.stop();
});

/** Runs the CLI; resolves {code, stdout, stderr}. KEYWARD_URL/TOKEN point at the Worker unless `env` says otherwise. */
function cli(args, { env = {}, input } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, args, {
      cwd: dir,
      env: { PATH: process.env.PATH, KEYWARD_URL: kw.url, KEYWARD_TOKEN: kw.adminToken, ...env },
      stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
    if (input !== undefined) {
      child.stdin.on('error', () => { /* the CLI may exit before reading all of it */ });
      child.stdin.end(input);
    }
  });
}

/** A failure as the contract wants it: non-zero exit, one line on stderr saying why, no trace. */
function failedWithOneLine(r, pattern) {
  assert.notEqual(r.code, 0, `expected a failure:\n${r.stdout}\n${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0], /^keyward: /);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /panicked|backtrace|RUST_BACKTRACE/);
}

const gate = (key, p = USERS) => kw.request('GET', p, { headers: { authorization: `Bearer ${key}` } });

test('key new and digest agree with the test suite\'s own key maker', async () => {
  const made = await cli(['key', 'new', '--prefix', 'kw_test', '--count', '3']);
  assert.equal(made.code, 0, made.stderr);
  const keys = made.stdout.trim().split('\n');
  assert.equal(keys.length, 3);
  for (const key of keys) {
    assert.match(key, /^kw_test_[0-9A-Za-z]{38}$/);
    assert.equal(key.slice(-6), checksum(key.slice(0, -6)), 'the CRC-32 checksum is keyward\'s');
    const d = await cli(['digest', key]);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(d.stdout.trim(), digest(key));
  }
  assert.equal(new Set(keys).size, 3);
  const node = makeKey('kw_live');
  const fromStdin = await cli(['digest', '--json'], { input: `${node}\n` });
  assert.deepEqual(JSON.parse(fromStdin.stdout), { digest: digest(node), key_preview: `kw_live_...${node.slice(-4)}` });
  const json = JSON.parse((await cli(['key', 'new', '--json'])).stdout);
  assert.equal(json.digest, digest(json.key));
  failedWithOneLine(await cli(['digest', node.slice(0, -1) + (node.endsWith('a') ? 'b' : 'a')]), /checksum/);
});

test('keys: create, list as JSON, get, expire, reactivate, roll, revoke, delete', async () => {
  const created = await cli(['keys', 'create', '--name', 'cli ci', '--permission', 'users:read', '--json']);
  assert.equal(created.code, 0, created.stderr);
  const record = JSON.parse(created.stdout);
  assert.match(record.api_key, /^kw_live_/);
  assert.equal((await gate(record.api_key)).status, 200);

  const listed = await cli(['keys', 'list', '--json', '--name', 'cli ci']);
  assert.equal(listed.code, 0, listed.stderr);
  const list = JSON.parse(listed.stdout);
  assert.deepEqual(list.map((r) => r.id), [record.id]);
  assert.ok(!listed.stdout.includes(record.api_key), 'list never shows the plaintext');
  const table = await cli(['keys', 'list', '--name-contains', 'cli']);
  assert.match(table.stdout, /^ID\s+NAME\s+STATUS/);
  assert.match(table.stdout, new RegExp(`${record.id}\\s+cli ci\\s+active`));

  const got = JSON.parse((await cli(['keys', 'get', record.id, '--json'])).stdout);
  assert.equal(got.name, 'cli ci');
  assert.equal(got.api_key, undefined);

  assert.equal(JSON.parse((await cli(['keys', 'expire', record.id, '--json'])).stdout).status, 'expired');
  assert.equal((await gate(record.api_key)).body.error_code, 'KEY_EXPIRED');
  assert.equal(JSON.parse((await cli(['keys', 'reactivate', record.id, '--json'])).stdout).status, 'active');
  const updated = JSON.parse((await cli(['keys', 'update', record.id, '--set', 'permissions=users:read,users:create', '--json'])).stdout);
  assert.deepEqual(updated.permissions, ['users:read', 'users:create']);

  const rolled = JSON.parse((await cli(['keys', 'roll', record.id, '--json'])).stdout);
  assert.notEqual(rolled.id, record.id);
  assert.equal((await gate(rolled.api_key)).status, 200);
  assert.equal((await gate(record.api_key)).body.error_code, 'KEY_EXPIRED');

  failedWithOneLine(await cli(['keys', 'delete', rolled.id]), /409 KEY_ACTIVE/);
  assert.equal(JSON.parse((await cli(['keys', 'revoke', rolled.id, '--json'])).stdout).status, 'revoked');
  const deleted = await cli(['keys', 'delete', rolled.id]);
  assert.equal(deleted.code, 0, deleted.stderr);
  failedWithOneLine(await cli(['keys', 'get', rolled.id]), /404/);

  // Refused here, before anything is sent: the core's own field rules.
  failedWithOneLine(await cli(['keys', 'create', '--name', 'x', '--ip', '10.0.0.0/33']), /refused before sending: ip_allowlist\[0\]/);
  failedWithOneLine(await cli(['keys', 'get', 'nope']), /not a key id/);
});

test('push sends only the digest; the key then works at the gate; verify agrees', async () => {
  const key = makeKey('kw_live');
  const pushed = await cli(['push', '--key', '-', '--version', '1', '--name', 'pushed', '--permission', 'users:read', '--json'], { input: key });
  assert.equal(pushed.code, 0, pushed.stderr);
  assert.equal(JSON.parse(pushed.stdout).key_preview, `kw_live_...${key.slice(-4)}`);
  assert.equal((await gate(key)).status, 200);
  const again = await cli(['push', '--digest', digest(key), '--version', '1', '--name', 'pushed']);
  failedWithOneLine(again, /VERSION_CONFLICT/);
  const verified = JSON.parse((await cli(['verify', '--key', key, '--path', USERS, '--json'])).stdout);
  assert.equal(verified.valid, true);
  assert.equal(verified.code, 'VALID');
  const denied = JSON.parse((await cli(['verify', '--key', key, '--method', 'delete', '--path', '/api/v2/projects/1', '--json'])).stdout);
  assert.equal(denied.valid, false);
  assert.ok(!kw.storedBytes().includes(key), 'the plaintext key reached the store');
});

test('revoke --from-file: ids, plaintext keys and digests, in one call; bad lines reported', async () => {
  const byId = JSON.parse((await cli(['keys', 'create', '--name', 'revoke me', '--permission', 'users:read', '--json'])).stdout);
  const plain = makeKey('kw_live');
  const hashed = makeKey('kw_live');
  for (const k of [plain, hashed]) {
    const r = await cli(['push', '--key', k, '--version', '1', '--name', 'to revoke', '--permission', 'users:read']);
    assert.equal(r.code, 0, r.stderr);
  }
  const never = makeKey('kw_live'); // revoked before the origin ever pushes it
  const file = path.join(dir, 'revoke.txt');
  writeFileSync(file, ['# one a line', byId.id, plain, digest(hashed), digest(never), 'kw_live_typo', plain, ''].join('\n'));
  const r = await cli(['revoke', '--from-file', file]);
  assert.equal(r.stdout.trim(), 'revoked=4 not_found=0 failed=1');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /line 6: not a key id, a SHA-256 digest or a keyward key/);
  assert.ok(!r.stderr.includes('kw_live_typo'), 'a bad line is not echoed (it may be a secret)');
  for (const k of [byId.api_key, plain, hashed]) assert.equal((await gate(k)).body.error_code, 'KEY_REVOKED');
  const late = await cli(['push', '--key', never, '--version', '5', '--name', 'too late']);
  failedWithOneLine(late, /KEY_REVOKED/);

  const ok = await cli(['revoke', '--json', byId.id]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual(JSON.parse(ok.stdout), { revoked: [byId.id], not_found: [], failed: [] });
});

test('a wrong token: one line, non-zero, the token never printed', async () => {
  const secret = 'wrong-token-' + 'x'.repeat(20);
  const r = await cli(['keys', 'list'], { env: { KEYWARD_TOKEN: secret } });
  failedWithOneLine(r, /token was refused \(401/);
  assert.ok(!r.stderr.includes(secret) && !r.stdout.includes(secret));
  const help = await cli(['--help'], { env: { KEYWARD_TOKEN: secret } });
  assert.ok(!help.stdout.includes(secret), 'help shows the token');
  failedWithOneLine(await cli(['keys', 'list'], { env: { KEYWARD_TOKEN: '' } }), /--token/);
});

test('token: a key exchanged for a token the gate accepts, refreshed; a revoked key refused in one line', async () => {
  const made = await kw.admin('POST', '/api_keys', { api_key: { name: 'cli token', permissions: ['users:read'] } });
  const { api_key: key, id } = made.body.data;
  const r = await cli(['token', '--key', key, '--ttl', '120']);
  assert.equal(r.code, 0, r.stderr);
  const token = r.stdout.trim();
  assert.equal(token.split('.').length, 3);
  assert.equal(JSON.parse(Buffer.from(token.split('.')[1], 'base64url')).sub, id);
  assert.equal((await kw.request('GET', USERS, { headers: { authorization: `Bearer ${token}` } })).status, 200);
  const refreshed = await cli(['token', '--refresh', '-', '--json'], { input: `${token}\n` });
  assert.equal(refreshed.code, 0, refreshed.stderr);
  const data = JSON.parse(refreshed.stdout);
  assert.equal(data.token_type, 'Bearer');
  assert.equal(data.expires_in, 120);
  failedWithOneLine(await cli(['token', '--key', key, '--ttl', '30']), /--ttl/);
  await kw.admin('POST', `/api_keys/${id}/revoke`);
  const refused = await cli(['token', '--key', key]);
  failedWithOneLine(refused, /keyward refused the key \(401 KEY_REVOKED/);
  assert.ok(!refused.stderr.includes(key));
});

test('an unreachable URL: one line, non-zero', async () => {
  const port = await freePort();
  failedWithOneLine(await cli(['keys', 'list'], { env: { KEYWARD_URL: `http://127.0.0.1:${port}` } }), /cannot reach keyward at http:\/\/127\.0\.0\.1:\d+/);
  failedWithOneLine(await cli(['keys', 'list'], { env: { KEYWARD_URL: 'ftp://example' } }), /--url/);
  failedWithOneLine(await cli(['keys', 'list'], { env: { KEYWARD_URL: '' } }), /--url/);
});

test('a usage mistake: one line, exit 2; help still prints', async () => {
  const missing = await cli(['keys', 'get']);
  failedWithOneLine(missing, /required arguments were not provided: <ID>/);
  assert.equal(missing.code, 2);
  failedWithOneLine(await cli(['keys', 'lst']), /unrecognized subcommand 'lst'.*'list'/);
  const help = await cli(['import', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--dry-run/);
});

test('policy: check runs the vectors locally; a bad file is refused before it is sent', async () => {
  const good = await cli(['policy', 'check', path.join(ROOT, 'config/default-policy.json')]);
  assert.equal(good.code, 0, good.stderr);
  assert.match(good.stdout, /valid, \d+ rules/);
  assert.match(good.stdout, /vectors: (\d+) agree, 0 differ/);

  const before = (await kw.admin('GET', '/policy')).body.data;
  const bad = path.join(dir, 'bad-policy.json');
  writeFileSync(bad, JSON.stringify({ rules: [{ method: 'GET', path: '/v1/things', permission: 'things' }] }));
  failedWithOneLine(await cli(['policy', 'check', bad]), /bad-policy\.json: rules\[0\]\.permission/);
  failedWithOneLine(await cli(['policy', 'put', bad]), /rules\[0\]\.permission/);
  writeFileSync(bad, '{"rules": [');
  failedWithOneLine(await cli(['policy', 'check', bad]), /not valid JSON/);
  assert.deepEqual((await kw.admin('GET', '/policy')).body.data, before, 'a refused policy was stored');

  // A valid policy that changes known answers: check says which.
  const narrower = path.join(dir, 'narrower.json');
  writeFileSync(narrower, JSON.stringify({ rules: before.rules.filter((r) => !r.path.endsWith('/users')) }));
  const differs = await cli(['policy', 'check', '--json', narrower]);
  assert.notEqual(differs.code, 0);
  const report = JSON.parse(differs.stdout);
  assert.ok(report.disagreements.some((d) => d.got.code === 'ROUTE_NOT_ALLOWED'));

  const put = await cli(['policy', 'put', path.join(ROOT, 'config/default-policy.json')]);
  assert.equal(put.code, 0, put.stderr);
  const got = JSON.parse((await cli(['policy', 'get', '--json'])).stdout);
  assert.deepEqual(got.rules.length, before.rules.length);
});

test('import --dry-run: every line is checked here with the core and nothing is sent', async () => {
  const keys = Array.from({ length: 3 }, () => makeKey('kw_live'));
  const file = path.join(dir, 'dry.jsonl');
  writeFileSync(file, [
    JSON.stringify({ key: keys[0], name: 'a' }),
    JSON.stringify({ key: keys[1], name: 'b', version: 2, metadata: { plan: 'pro' } }),
    JSON.stringify({ key: keys[0], name: 'a' }),
    JSON.stringify({ key: keys[0], name: 'a but other' }),
    JSON.stringify({ key: keys[2], name: 'c', type: 'profile' }),
    JSON.stringify({ key: keys[2], name: 'c', colour: 'red' }),
    JSON.stringify({ name: 'no key' }),
    '[1, 2]',
  ].join('\n'));
  const r = await cli(['import', file, '--dry-run']);
  assert.equal(r.stdout.trim(), 'would_import=2 unchanged=1 failed=5', r.stderr);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /dry run: nothing was sent/);
  const failed = readFileSync(`${file}.failed.jsonl`, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(failed.map((f) => [f.line, f.error_message.split(':')[0]]).sort(), [
    [4, 'digest'], [5, 'profile_id'], [6, 'colour'], [7, 'key'], [8, 'line'],
  ]);
  assert.equal(failed.find((f) => f.line === 5).record.digest, digest(keys[2]));
  assert.ok(!keys.some((k) => readFileSync(`${file}.failed.jsonl`, 'utf8').includes(k)), 'a plaintext key in the failed file');
  const listed = JSON.parse((await cli(['keys', 'list', '--json', '--name', 'b'])).stdout);
  assert.deepEqual(listed, [], 'a dry run sent a record');
  failedWithOneLine(await cli(['import', path.join(dir, 'keys.txt')]), /expected a \.jsonl or \.csv file/);
  writeFileSync(path.join(dir, 'nokey.csv'), 'name,permissions\na,users:read\n');
  failedWithOneLine(await cli(['import', path.join(dir, 'nokey.csv')]), /needs a "key" or "digest" column/);
});

test('import JSONL and CSV: good, bad and repeated lines; a rerun changes nothing', async () => {
  const good = Array.from({ length: 5 }, () => makeKey('kw_live'));
  const byDigest = makeKey('kw_live');
  const lines = [
    ...good.map((key, i) => JSON.stringify({ key, name: `imported ${i}`, permissions: ['users:read'] })),
    JSON.stringify({ digest: digest(byDigest), name: 'by digest', permissions: ['users:read'], version: 3 }),
    JSON.stringify({ key: good[0], name: 'imported 0', permissions: ['users:read'] }), // a repeat
    JSON.stringify({ key: makeKey('kw_live'), name: 'bad ip', ip_allowlist: ['10.0.0.0/33'] }),
    JSON.stringify({ key: 'kw_live_not_a_key', name: 'malformed' }),
    '{not json',
    '',
  ];
  const file = path.join(dir, 'keys.jsonl');
  writeFileSync(file, lines.join('\n'));
  const first = await cli(['import', file]);
  assert.equal(first.stdout.trim(), 'imported=6 unchanged=1 failed=3', first.stderr);
  assert.notEqual(first.code, 0);
  assert.match(first.stderr, /3 records failed; see .*keys\.jsonl\.failed\.jsonl/);
  const failed = readFileSync(`${file}.failed.jsonl`, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(failed.map((f) => f.line).sort((a, b) => a - b), [8, 9, 10]);
  assert.match(failed.find((f) => f.line === 8).error_message, /^ip_allowlist\[0\]/);
  assert.match(failed.find((f) => f.line === 9).error_message, /^key: /);
  assert.match(failed.find((f) => f.line === 10).error_message, /not valid JSON/);
  for (const key of good) assert.ok(!readFileSync(`${file}.failed.jsonl`, 'utf8').includes(key));
  for (const key of [...good, byDigest]) assert.equal((await gate(key)).status, 200, 'an imported key works at the gate');
  assert.ok(!good.some((key) => kw.storedBytes().includes(key)), 'a plaintext key was sent');

  const rerun = await cli(['import', file, '--json']);
  const summary = JSON.parse(rerun.stdout);
  assert.deepEqual([summary.imported, summary.unchanged, summary.failed], [0, 7, 3]);

  // CSV: lists in one cell, a bad row, a repeated row.
  const csvKeys = Array.from({ length: 3 }, () => makeKey('kw_test'));
  const csv = [
    'key,name,permissions,ip_allowlist,active',
    `${csvKeys[0]},csv zero,users:read users:create,,true`,
    `${csvKeys[1]},"csv, one",users:read,127.0.0.1/32 ::1,`,
    `${csvKeys[2]},csv two,users:nope:x,,`,
    `${csvKeys[0]},csv zero,users:read users:create,,true`,
  ].join('\n');
  const csvFile = path.join(dir, 'keys.csv');
  writeFileSync(csvFile, csv);
  const imported = await cli(['import', csvFile]);
  assert.equal(imported.stdout.trim(), 'imported=2 unchanged=1 failed=1', imported.stderr);
  const csvFailed = JSON.parse(readFileSync(`${csvFile}.failed.jsonl`, 'utf8'));
  assert.equal(csvFailed.line, 4);
  assert.match(csvFailed.error_message, /^permissions\[0\]/);
  assert.equal((await gate(csvKeys[0], '/api/v2/projects/1/users')).status, 200);
  const listed = JSON.parse((await cli(['keys', 'list', '--json', '--name', 'csv, one'])).stdout);
  assert.deepEqual(listed[0].ip_allowlist, ['127.0.0.1/32', '::1']);

  // Fixed, the CSV imports clean and the stale failed file goes away.
  writeFileSync(csvFile, csv.replace('users:nope:x', 'users:read'));
  const fixed = await cli(['import', csvFile]);
  assert.equal(fixed.code, 0, fixed.stderr);
  assert.equal(fixed.stdout.trim(), 'imported=1 unchanged=3 failed=0');
  assert.ok(!existsSync(`${csvFile}.failed.jsonl`));
});

test('import with a wrong token stops at once with one line', async () => {
  const file = path.join(dir, 'token.jsonl');
  writeFileSync(file, JSON.stringify({ key: makeKey('kw_live'), name: 'x' }) + '\n');
  const r = await cli(['import', file], { env: { KEYWARD_TOKEN: 'not-the-token' } });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr.trim().split('\n').at(-1), /^keyward: the token was refused \(401/);
});

test('audit: the changes made here, newest first, filtered by key', async () => {
  const record = JSON.parse((await cli(['keys', 'create', '--name', 'audited', '--json'])).stdout);
  await cli(['keys', 'update', record.id, '--name', 'audited again']);
  await cli(['keys', 'revoke', record.id]);
  const r = await cli(['audit', '--key-id', record.id, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const entries = JSON.parse(r.stdout);
  assert.ok(entries.length >= 3, r.stdout);
  assert.ok(entries.every((e) => e.key_id === record.id));
  assert.deepEqual([...entries].sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0)).map((e) => e.id), entries.map((e) => e.id), 'newest first');
  assert.ok(!r.stdout.includes(record.api_key), 'the audit log shows a plaintext key');
  const table = await cli(['audit', '--key-id', record.id]);
  assert.match(table.stdout, /^AT\s+ACTOR\s+ACTION\s+KEY_ID\s+CHANGES/);
  assert.match(table.stdout, /name: audited -> audited again/);

  // --follow prints what is written after it started.
  const follow = spawn(BIN, ['audit', '--follow', '--interval', '0.3', '--json', '--limit', '1'], {
    env: { PATH: process.env.PATH, KEYWARD_URL: kw.url, KEYWARD_TOKEN: kw.adminToken },
  });
  let out = '';
  follow.stdout.on('data', (d) => { out += d; });
  try {
    await new Promise((r) => setTimeout(r, 1000));
    const later = JSON.parse((await cli(['keys', 'create', '--name', 'followed', '--json'])).stdout);
    const deadline = Date.now() + 15_000;
    while (!out.includes(later.id) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    assert.ok(out.includes(later.id), `--follow did not print the new entry:\n${out}`);
  } finally {
    follow.kill('SIGTERM');
  }
});

test('workspaces: list, create, get, update, delete; --workspace scopes every key command', async () => {
  const w = `cli-${Date.now().toString(36)}`;
  const other = `${w}-other`;
  const json = async (args, env) => {
    const r = await cli([...args, '--json'], { env });
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };
  const made = await json(['workspaces', 'create', w, '--name', 'CLI Co', '--ceiling', 'users:*,keys:*']);
  assert.deepEqual([made.id, made.name, made.permission_ceiling], [w, 'CLI Co', ['users:*', 'keys:*']]);
  await json(['workspaces', 'create', other]);
  // Keys made with --workspace belong to it; the list with --workspace shows only them.
  const key = await json(['keys', 'create', '--workspace', w, '--name', 'scoped', '--permission', 'users:read']);
  assert.equal(key.workspace, w);
  const elsewhere = await json(['keys', 'create', '--name', 'elsewhere', '--permission', 'users:read'], { KEYWARD_WORKSPACE: other });
  assert.equal(elsewhere.workspace, other);
  assert.deepEqual((await json(['keys', 'list', '--workspace', w])).map((k) => k.id), [key.id]);
  assert.equal((await json(['keys', 'get', key.id, '--workspace', w])).id, key.id);
  // Another workspace's key is not found under --workspace, on every key command.
  for (const args of [['keys', 'get', elsewhere.id], ['keys', 'expire', elsewhere.id], ['keys', 'revoke', elsewhere.id],
    ['keys', 'roll', elsewhere.id], ['keys', 'delete', elsewhere.id], ['keys', 'update', elsewhere.id, '--name', 'x']]) {
    failedWithOneLine(await cli([...args, '--workspace', w]), /404 NOT_FOUND/);
  }
  // Above the ceiling: refused by keyward, naming the permission.
  failedWithOneLine(await cli(['keys', 'create', '--workspace', w, '--name', 'x', '--permission', 'projects:read']), /PERMISSION_DENIED.*projects:read/);
  await json(['keys', 'expire', key.id, '--workspace', w]);
  assert.deepEqual((await json(['keys', 'list', '--workspace', w, '--status', 'expired'])).map((k) => k.id), [key.id]);
  assert.deepEqual(await json(['keys', 'list', '--workspace', w, '--status', 'active']), []);
  // Workspaces list, get, update and delete.
  const listed = (await json(['workspaces', 'list'])).find((x) => x.id === w);
  assert.deepEqual([listed.key_count, listed.active_key_count], [1, 0]);
  const human = await cli(['workspaces', 'list']);
  assert.match(human.stdout, new RegExp(`^${w}\\s+CLI Co\\s+1\\s+0\\s+true\\s+users:\\*,keys:\\*$`, 'm'));
  assert.equal((await json(['workspaces', 'update', w, '--name', 'Renamed'])).name, 'Renamed');
  assert.equal((await json(['workspaces', 'get', w])).name, 'Renamed');
  failedWithOneLine(await cli(['workspaces', 'delete', other]), /409 WORKSPACE_HAS_ACTIVE_KEYS/);
  assert.deepEqual(await json(['workspaces', 'delete', w]), { id: w, deleted: true });
  // Bad input is refused here, before anything is sent.
  failedWithOneLine(await cli(['workspaces', 'create', 'not valid']), /ID: "not valid" is not a workspace id/);
  failedWithOneLine(await cli(['workspaces', 'create', 'ok', '--ceiling', 'Users']), /--ceiling: "Users" is not a permission/);
  failedWithOneLine(await cli(['workspaces', 'update', w]), /nothing to change/);
  // A one-time portal link for one of the workspace's users: it opens the portal once.
  await json(['workspaces', 'create', w]);
  const link = await cli(['workspaces', 'link', w, '--user', 'user_42', '--return-url', 'https://app.example.com/account', '--ttl', '600']);
  assert.equal(link.code, 0, link.stderr);
  const url = new URL(link.stdout.trim());
  assert.equal(url.pathname, '/_keyward/portal/');
  assert.ok(url.searchParams.get('link'), link.stdout);
  const opened = await kw.request('GET', `${url.pathname}${url.search}`);
  assert.equal(opened.status, 303, opened.text);
  assert.equal((await kw.request('GET', `${url.pathname}${url.search}`)).status, 410, 'a link opens once');
  const described = await json(['workspaces', 'link', w, '--user', 'u', '--return-url', 'https://app.example.com/']);
  assert.equal(described.workspace, w);
  assert.equal(described.user, 'u');
  failedWithOneLine(await cli(['workspaces', 'link', w, '--user', 'u', '--return-url', 'app.example.com']), /--return-url: "app.example.com" is not an absolute http\(s\) URL/);
  failedWithOneLine(await cli(['workspaces', 'link', w, '--user', 'u', '--return-url', 'https://a.example', '--ttl', '30']), /--ttl: must be 60 to 3600 seconds/);
  failedWithOneLine(await cli(['workspaces', 'link', w, '--user', '', '--return-url', 'https://a.example']), /--user: must be 1 to 128 characters/);
  failedWithOneLine(await cli(['workspaces', 'link', 'no-such-workspace', '--user', 'u', '--return-url', 'https://a.example']), /404/);
  failedWithOneLine(await cli(['keys', 'list', '--workspace', 'a b']), /--workspace: "a b" is not a workspace id/);
  const bad = await cli(['keys', 'list', '--status', 'dormant']);
  assert.equal(bad.code, 2);
});

test('--workspace on push, verify, revoke and audit: the workspace\'s keys only', async () => {
  const w = `cli-push-${Date.now().toString(36)}`;
  const other = `${w}-b`;
  const mine = makeKey('kw_live');
  const theirs = makeKey('kw_live');
  const push = (key, workspace) => cli(['push', '--key', key, '--version', '1', '--name', 'pushed', '--permission', 'users:read', '--workspace', workspace, '--json']);
  const a = await push(mine, w);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(JSON.parse(a.stdout).workspace, w);
  assert.equal((await push(theirs, other)).code, 0);
  // verify under w knows only w's key.
  const known = JSON.parse((await cli(['verify', '--key', mine, '--path', USERS, '--workspace', w, '--json'])).stdout);
  assert.equal(known.code, 'VALID');
  const unknown = JSON.parse((await cli(['verify', '--key', theirs, '--path', USERS, '--workspace', w, '--json'])).stdout);
  assert.equal(unknown.code, 'UNKNOWN_KEY');
  // revoke under w: the other workspace's key is not found, and still works.
  const revoked = await cli(['revoke', mine, theirs, '--workspace', w]);
  assert.notEqual(revoked.code, 0, 'a key not found makes the run fail');
  assert.equal((await gate(mine)).body.error_code, 'KEY_REVOKED');
  assert.equal((await gate(theirs)).status, 200);
  // audit under w: only w's entries.
  const entries = JSON.parse((await cli(['audit', '--workspace', w, '--json'])).stdout);
  assert.deepEqual(entries.map((e) => e.action), ['revoke', 'push']);
  assert.ok(entries.every((e) => e.workspace === w));
});

test('leaks report FILE: plaintext keys hashed here, digests, typos decided here; the keys are refused at once', async () => {
  const a = JSON.parse((await cli(['keys', 'create', '--name', 'leak a', '--permission', 'users:read', '--json'])).stdout);
  const b = JSON.parse((await cli(['keys', 'create', '--name', 'leak b', '--permission', 'users:read', '--json'])).stdout);
  assert.equal((await gate(a.api_key)).status, 200);
  const unknown = makeKey('kw_live');
  const file = path.join(dir, 'leaks.txt');
  writeFileSync(file, ['# found by our scanner', `${a.api_key} https://pastebin.example/a`, digest(b.api_key), 'kw_live_typo', unknown, ''].join('\n'));
  const r = await cli(['leaks', 'report', file, '--source', 'ci-scan', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout).results, [
    { token_hash: digest(a.api_key), label: 'true_positive', key_id: a.id },
    { token_hash: digest(b.api_key), label: 'true_positive', key_id: b.id },
    { token_hash: digest('kw_live_typo'), label: 'false_positive', key_id: null },
    { token_hash: digest(unknown), label: 'false_positive', key_id: null },
  ]);
  for (const k of [a, b]) assert.equal((await gate(k.api_key)).body.error_code, 'KEY_REVOKED');
  const shown = (await kw.admin('GET', `/api_keys/${a.id}`)).body.data;
  assert.equal(shown.leaked_url, 'https://pastebin.example/a');
  const [entry] = (await kw.admin('GET', `/audit?key_id=${a.id}`)).body.data;
  assert.equal(entry.actor, 'leak:ci-scan');
  const human = await cli(['leaks', 'report', '-', '--source', 'ci-scan'], { input: `${a.api_key}\n` });
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /true_positive=1 false_positive=0/);
  failedWithOneLine(await cli(['leaks', 'report', file, '--source', 'Bad Source']), /--source/);
  failedWithOneLine(await cli(['leaks', 'report', path.join(dir, 'missing.txt')]), /missing\.txt/);
});

test('webhooks: create (secret once), list, get, update, deliveries, redeliver, delete', async () => {
  const received = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => { received.push({ id: req.headers['webhook-id'], body: JSON.parse(body) }); res.writeHead(200).end(); });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  try {
    const url = `http://127.0.0.1:${server.address().port}/hook`;
    const made = await cli(['webhooks', 'create', '--endpoint', url, '--event', 'key.created,key.revoked', '--json']);
    assert.equal(made.code, 0, made.stderr);
    const hook = JSON.parse(made.stdout);
    assert.match(hook.secret, /^whsec_/);
    assert.deepEqual(hook.events, ['key.created', 'key.revoked']);
    const list = await cli(['webhooks', 'list']);
    assert.match(list.stdout, new RegExp(hook.id));
    assert.ok(!list.stdout.includes(hook.secret));
    assert.ok(!(await cli(['webhooks', 'get', hook.id])).stdout.includes(hook.secret));
    const key = JSON.parse((await cli(['keys', 'create', '--name', 'hooked', '--json'])).stdout);
    const deadline = Date.now() + 10_000;
    while (!received.some((d) => d.body.data.id === key.id) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const first = received.find((d) => d.body.data.id === key.id);
    assert.equal(first?.body.type, 'key.created');
    const deliveries = await cli(['webhooks', 'deliveries', hook.id]);
    assert.equal(deliveries.code, 0, deliveries.stderr);
    assert.match(deliveries.stdout, new RegExp(`${first.id}\\s+key\\.created\\s+${key.id}\\s+delivered\\s+1\\s+200`));
    const again = await cli(['webhooks', 'redeliver', hook.id, first.id, '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).state, 'pending');
    while (received.filter((d) => d.id === first.id).length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(received.filter((d) => d.id === first.id).length, 2, 'redelivered with the same webhook-id');
    const updated = JSON.parse((await cli(['webhooks', 'update', hook.id, '--event', 'key.deleted', '--json'])).stdout);
    assert.deepEqual(updated.events, ['key.deleted']);
    failedWithOneLine(await cli(['webhooks', 'update', hook.id]), /nothing to change/);
    failedWithOneLine(await cli(['webhooks', 'create', '--endpoint', 'ftp://x', '--event', 'key.created']), /400 BAD_REQUEST: url/);
    assert.equal((await cli(['webhooks', 'delete', hook.id])).code, 0);
    failedWithOneLine(await cli(['webhooks', 'get', hook.id]), /404 NOT_FOUND/);
  } finally {
    await new Promise((r) => server.close(r));
  }
});
