// The control plane's figures: batch push rate (100 000 records), list latency at 1 000, 20 000
// and 100 000 keys (first page, name_contains, exact name, status, workspace and status), and how long a change made through one
// location takes to be honoured by another (p50/p99 over 100 changes). Two `wrangler dev`
// processes play two locations, as in tests/e2e/control.test.mjs. Prints a table; the last line
// is the figures as JSON. Usage: node bench/control.mjs [total keys, default 100000]
import { mkdtempSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { startOrigin } from '../tests/support/origin.mjs';
import { startKeyward, secondLocationConfig, ROOT } from '../tests/support/keyward.mjs';
import { makeKey, digest } from '../tests/support/keys.mjs';
import { median, pct } from './stats.mjs';

const total = Number(process.argv[2] ?? 100_000);
const sizes = [1_000, 20_000, total].filter((n, i, a) => n <= total && a.indexOf(n) === i);
const log = (...a) => console.error('bench control:', ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

mkdirSync(path.join(ROOT, 'test-output'), { recursive: true });
const env = { WRANGLER_REGISTRY_PATH: mkdtempSync(path.join(ROOT, 'test-output', 'registry-')) };
const origin = await startOrigin();
const a = await startKeyward({ origin: origin.url, env });
const b = await startKeyward({ origin: origin.url, env, adminToken: a.adminToken, config: secondLocationConfig() });

const results = { batch: null, lists: {}, propagation: null };
try {
  // Batch push, 1 000 records a call, two calls in flight; list latency measured at each size.
  let pushed = 0;
  let pushMs = 0;
  let lastDigest = null;
  const record = (i) => ({
    digest: randomBytes(32).toString('hex'),
    name: i % 1000 === 7 ? `needle ${i}` : `bench key ${i}`,
    permissions: ['users:read'],
    version: 1,
    // Twenty workspaces; one key in five expired, so the status lists have something to skip.
    workspace: `bench-ws-${i % 20}`,
    active: i % 5 !== 0,
  });
  for (const size of sizes) {
    const t0 = Date.now();
    const batches = [];
    for (let start = pushed; start < size; start += 1000) batches.push([start, Math.min(size, start + 1000)]);
    const inFlight = async () => {
      while (batches.length) {
        const [from, to] = batches.shift();
        const records = [];
        for (let i = from; i < to; i++) records.push(record(i));
        lastDigest = records[records.length - 1].digest;
        const r = await a.admin('POST', '/keys/batch', { records });
        if (r.status !== 200 || r.body.data.created !== records.length) throw new Error(`batch ${from}: ${r.status} ${r.text.slice(0, 300)}`);
      }
    };
    await Promise.all([inFlight(), inFlight()]);
    pushMs += Date.now() - t0;
    pushed = size;
    log(`${pushed} keys pushed`);
    // Let the KV outbox drain first, so the lists are timed on a quiet control plane.
    for (let i = 0; i < 600; i++) {
      const out = await a.kv('key', 'get', `key:${lastDigest}`, '--text').catch(() => 'Value not found');
      if (!/Value not found/.test(out)) break;
      await sleep(500);
    }
    const time = async (p) => {
      const xs = [];
      for (let i = 0; i < 30; i++) {
        const t = performance.now();
        const r = await a.admin('GET', p);
        xs.push(performance.now() - t);
        if (r.status !== 200) throw new Error(`${p}: ${r.status} ${r.text.slice(0, 200)}`);
      }
      return { p50_ms: median(xs), p99_ms: pct(xs, 0.99) };
    };
    results.lists[size] = {
      first_page: await time('/api_keys?per_page=100'),
      name_contains: await time('/api_keys?name_contains=needle&per_page=100'),
      name: await time(`/api_keys?name=${encodeURIComponent('bench key 500')}`),
      status: await time('/api_keys?status=expired&per_page=100'),
      workspace_status: await time('/api_keys?workspace=bench-ws-3&status=active&per_page=100'),
    };
  }
  results.batch = { records: pushed, seconds: pushMs / 1000, per_second: Math.round(pushed / (pushMs / 1000)) };

  // Propagation: expire and reactivate one key through A, 100 times; B is asked every 10 ms.
  const created = await a.admin('POST', '/api_keys', { api_key: { name: 'propagation', permissions: ['users:read'] } });
  const key = created.body.data.api_key;
  const id = created.body.data.id;
  const seenAtB = async (expected, limitMs) => {
    const t0 = Date.now();
    for (;;) {
      const r = await b.request('GET', '/api/v2/projects/1/users', { headers: { 'x-api-key': key } });
      if ((r.status === 200 ? 'VALID' : r.body.error_code) === expected) return Date.now() - t0;
      if (Date.now() - t0 > limitMs) throw new Error(`B did not see ${expected} within ${limitMs} ms`);
      await sleep(10);
    }
  };
  await seenAtB('VALID', 10_000);
  const times = [];
  for (let i = 0; i < 100; i++) {
    const active = i % 2 === 1;
    const r = await a.admin('PUT', `/api_keys/${id}`, { api_key: { active } });
    if (r.status !== 200) throw new Error(`change ${i}: ${r.status}`);
    times.push(await seenAtB(active ? 'VALID' : 'KEY_EXPIRED', 10_000));
  }
  results.propagation = { changes: times.length, p50_ms: median(times), p99_ms: pct(times, 0.99), max_ms: Math.max(...times) };
} finally {
  await b.stop();
  await a.stop();
  await origin.stop();
}

const f = (x) => `${x.p50_ms.toFixed(1)} / ${x.p99_ms.toFixed(1)} ms`;
const rows = [
  ['batch push', `${results.batch.records} records in ${results.batch.seconds.toFixed(1)} s (${results.batch.per_second}/s)`, '100 000 in < 60 s'],
  ...Object.entries(results.lists).flatMap(([n, l]) => [
    [`list first page at ${n} keys p50/p99`, f(l.first_page), '< 20 ms p50'],
    [`list name_contains at ${n} keys p50/p99`, f(l.name_contains), '< 20 ms p50'],
    [`list exact name at ${n} keys p50/p99`, f(l.name), '< 20 ms p50'],
    [`list status=expired at ${n} keys p50/p99`, f(l.status), '< 20 ms p50'],
    [`list workspace=W&status=active at ${n} keys p50/p99`, f(l.workspace_status), '< 20 ms p50'],
  ]),
  ['propagation to another location p50/p99 (100 changes)', `${results.propagation.p50_ms} / ${results.propagation.p99_ms} ms`, 'p99 < SYNC_INTERVAL_MS + 200 = 1200 ms'],
];
const w = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c].length)));
for (const r of rows) console.error(r.map((c, i) => c.padEnd(w[i])).join('  '));
console.log(JSON.stringify(results));
