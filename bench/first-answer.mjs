// A new isolate's time to its first answer: wrangler dev is started afresh (a new workerd, so the
// Worker's script and wasm are loaded, compiled and instantiated from nothing) and asked for one
// allowed request every 5 ms from the moment it is spawned; the figure is the time from the spawn
// to the Worker's first answer. The same for a pass-through Worker (bench/passthrough) and the
// hand-written JS check (bench/js-gate), which pay the same wrangler and workerd start: what
// keyward adds over them is what its script, its wasm and its first request's reads cost.
// keyward's key and policy are stored once beforehand and found on disk by each start, as a new
// isolate finds them in KV and in the control plane. keyward is also started to answer a request
// without a key, which reads nothing: its first answer is the script's and the wasm's start alone.
//
// BENCH_FIRST_ROUNDS (default 5) starts of each Worker, in turns. Prints one line per Worker and
// writes bench-output/first-answer.json.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startOrigin } from '../tests/support/origin.mjs';
import { startKeyward, ROOT } from '../tests/support/keyward.mjs';
import { digest } from '../tests/support/keys.mjs';
import { median } from './stats.mjs';

const ROUNDS = Number(process.env.BENCH_FIRST_ROUNDS ?? 5);
const PATH = '/api/v2/projects/1/users';
const out = path.join(ROOT, 'bench-output');
mkdirSync(out, { recursive: true });

const origin = await startOrigin();
const fresh = () => mkdtempSync(path.join(ROOT, 'test-output', 'first-'));
// The stored state each start finds: keyward's key (KV and the control plane's SQLite), and the
// same record in the JS check's KV.
const keywardDir = fresh();
const setup = await startKeyward({ origin: origin.url, persistDir: keywardDir });
const created = await setup.admin('POST', '/api_keys', { api_key: { name: 'first answer', permissions: ['users:read'] } });
if (created.status !== 201) throw new Error(`the bench key was not created: ${created.status} ${JSON.stringify(created.body)}`);
const key = created.body.data.api_key;
const record = await setup.kv('key', 'get', `key:${digest(key)}`);
await setup.stop();
const jsDir = fresh();
const jsConfig = path.join(ROOT, 'bench/js-gate/wrangler.toml');
const jsSetup = await startKeyward({ origin: origin.url, persistDir: jsDir, config: jsConfig });
await jsSetup.kv('key', 'put', `key:${digest(key)}`, record.trim());
await jsSetup.stop();

const workers = [
  { name: 'pass-through', options: { persistDir: fresh(), config: path.join(ROOT, 'bench/passthrough/wrangler.toml') }, expect: 200 },
  { name: 'keyward', options: { persistDir: keywardDir }, expect: 200 },
  // The same start answering a request without a key (401 MISSING_KEY): no KV or control-plane
  // read, so the difference to the row above is what the first allowed request's reads cost.
  { name: 'keyward, no key sent', options: { persistDir: keywardDir }, expect: 401, probe: { headers: {} } },
  { name: 'JS check', options: { persistDir: jsDir, config: jsConfig }, expect: 200 },
];
const times = Object.fromEntries(workers.map((w) => [w.name, []]));
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const w of workers) {
      const started = await startKeyward({
        origin: origin.url, ...w.options,
        probe: { path: PATH, headers: { authorization: `Bearer ${key}` }, ...w.probe, every: 5 },
      });
      await started.stop();
      if (started.readyStatus !== w.expect) throw new Error(`${w.name}: the first answer was ${started.readyStatus}, not ${w.expect}`);
      times[w.name].push(started.readyMs);
    }
  }
} finally {
  await origin.stop();
}

const rows = workers.map((w) => ({ worker: w.name, first_answer_ms: Math.round(median(times[w.name])), each_ms: times[w.name].map(Math.round) }));
const base = rows[0].first_answer_ms;
for (const r of rows) {
  r.added_ms = r.first_answer_ms - base;
  console.error(`bench: first answer, ${r.worker}: ${r.first_answer_ms} ms from spawn (median of ${ROUNDS}: ${r.each_ms.join(', ')}), ${r.added_ms >= 0 ? '+' : ''}${r.added_ms} ms over the pass-through`);
}
const result = { rounds: ROUNDS, rows };
writeFileSync(path.join(out, 'first-answer.json'), JSON.stringify(result, null, 1));
console.log(JSON.stringify(result));
process.exit(0);
