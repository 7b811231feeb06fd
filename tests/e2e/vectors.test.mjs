// The known-answer vectors (tests/vectors/*.json) through the running Worker: each record is
// pushed to KV under a fresh key, the file's policy is stored, and POST /_keyward/v1/verify must
// give the vector's decision. The Rust tests run the same files through the core, the browser
// tests through the wasm core in Chromium.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { keywardForFile } from '../support/per-file.mjs';
import { ROOT } from '../support/keyward.mjs';
import { makeKey, digest } from '../support/keys.mjs';

const dir = path.join(ROOT, 'tests/vectors');
const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
const defaultPolicy = JSON.parse(readFileSync(path.join(ROOT, 'config/default-policy.json'), 'utf8'));

const { kw } = keywardForFile();

test('there are known-answer vectors', () => {
  const count = files.reduce((n, f) => n + JSON.parse(readFileSync(path.join(dir, f), 'utf8')).cases.length, 0);
  assert.ok(files.length >= 8 && count >= 80, `${files.length} files, ${count} cases`);
});

for (const file of files) {
  test(`vectors ${file} agree with the edge`, async () => {
    const doc = JSON.parse(readFileSync(path.join(dir, file), 'utf8'));
    const policy = doc.policy === 'default' ? defaultPolicy : doc.policy;
    const stored = await kw.admin('PUT', '/policy', policy);
    assert.equal(stored.status, 200, stored.text);
    const wrong = [];
    for (const c of doc.cases) {
      const key = makeKey('kw_live');
      const { status: _ignored, ...attributes } = c.record;
      const pushed = await kw.admin('PUT', `/keys/${digest(key)}`, { api_key: { ...attributes, version: 1 } });
      assert.equal(pushed.status, 201, `${c.name}: push: ${pushed.text}`);
      if (c.record.status === 'revoked') {
        assert.equal((await kw.admin('POST', '/revocations', { hashes: [digest(key)] })).status, 200);
      }
      const basic = c.request.basic_workspace !== undefined
        ? { authorization: `Basic ${Buffer.from(`${c.request.basic_workspace}:${key}`).toString('base64')}` }
        : undefined;
      const browser = Object.fromEntries(['origin', 'referer'].filter((h) => c.request[h] !== undefined).map((h) => [h, c.request[h]]));
      const headers = basic || Object.keys(browser).length ? { ...basic, ...browser } : undefined;
      const body = { key: basic ? undefined : key, headers, method: c.request.method, path: c.request.path, ip: c.request.ip, body: c.request.body };
      // `recent`: that many identical requests were just allowed; made here for real, through
      // the gate, so that the key's Limiter holds them (refused ones count for nothing, as in the core).
      for (let i = 0; i < (c.request.recent ?? 0); i++) {
        const warm = await kw.request(c.request.method, c.request.path, { headers: headers ?? { authorization: `Bearer ${key}` } });
        assert.ok([200, 403, 429].includes(warm.status), `${c.name}: warm-up: ${warm.status} ${warm.text}`);
      }
      const r = await kw.admin('POST', '/verify', body);
      assert.equal(r.status, 200, `${c.name}: ${r.text}`);
      const d = r.body.data;
      const e = c.expect;
      const ok = d.valid === e.valid && d.code === e.code
        && (e.permission === undefined || d.permission === e.permission)
        && (e.rule === undefined || d.rule === e.rule);
      if (!ok) wrong.push(`${c.name}: expected ${JSON.stringify(e)}, edge said ${JSON.stringify({ valid: d.valid, code: d.code, permission: d.permission, rule: d.rule, message: d.message })}`);
    }
    assert.deepEqual(wrong, []);
  });
}
