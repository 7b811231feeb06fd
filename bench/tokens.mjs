// Isolate time per gated request for a warm token beside a warm key, in one run (issue 31): one
// keyward under `wrangler dev`, one key and one token made from it; `wrk -t1 -c4` sends each
// kind of request in turn while the isolate is profiled through the inspector, as
// bench/profile.mjs does (isolate time = non-idle samples × the sampling tick). Prints JSON:
// per case, the median over BENCH_ROUNDS rounds (3) of µs per request.
//   node bench/tokens.mjs            (build first: scripts/build.sh)
// BENCH_KEYWARD_BEFORE=<another build's entry module, e.g. a main checkout's src/entry.mjs>: that
// build beside this one, for its warm key ("warm key, before"), in the same rounds.
import { spawn } from 'node:child_process';
import { startOrigin } from '../tests/support/origin.mjs';
import { mkdtempSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { keywardToml, startKeyward, ROOT } from '../tests/support/keyward.mjs';
import { inspector } from './inspector.mjs';
import { median } from './stats.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const DURATION = process.env.BENCH_PROFILE_DURATION ?? '4s';
const PATH = '/api/v2/projects/1/users';

function wrk(url, headers, duration = DURATION) {
  return new Promise((resolve, reject) => {
    const args = ['-t1', '-c4', `-d${duration}`];
    for (const [name, value] of Object.entries(headers)) args.push('-H', `${name}: ${value}`);
    const child = spawn('wrk', [...args, url + PATH]);
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`wrk failed: ${out}`));
      resolve({ requests: Number(/(\d+) requests in/.exec(out)?.[1]), non2xx: Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0) });
    });
    child.on('error', reject);
  });
}

async function profileOnce({ kw, probe }, headers) {
  await probe.send('Profiler.start');
  const run = await wrk(kw.url, headers);
  const { result: { profile } } = await probe.send('Profiler.stop');
  if (run.non2xx > run.requests * 0.02) throw new Error(`${run.non2xx} of ${run.requests} answers were not 2xx`);
  const byNode = new Map(profile.nodes.map((n) => [n.id, n]));
  const samples = profile.samples.filter((id) => byNode.get(id).callFrame.functionName !== '(idle)').length;
  const gaps = (profile.timeDeltas ?? []).filter((d) => d > 0).sort((a, b) => a - b);
  return { samples, requests: run.requests, tick: gaps.length ? gaps[Math.floor(gaps.length * 0.1)] : 0 };
}

const origin = await startOrigin();
const instances = [];
try {
  const start = async (config) => {
    const kw = await startKeyward({ origin: origin.url, config });
    instances.push(kw);
    const key = (await kw.admin('POST', '/api_keys', { api_key: { name: 'bench', permissions: ['users:read'] } })).body.data.api_key;
    return { kw, key };
  };
  const now = await start();
  const token = (await now.kw.request('POST', '/_keyward/v1/auth/token', { headers: { 'x-api-key': now.key }, body: { ttl_seconds: 86400 } })).body.data.token;
  const cases = { 'allowed, warm key': [now, { authorization: `Bearer ${now.key}` }], 'allowed, warm token': [now, { authorization: `Bearer ${token}` }] };
  if (process.env.BENCH_KEYWARD_BEFORE) {
    const file = path.join(mkdtempSync(path.join(ROOT, 'test-output', 'bench-tokens-')), 'wrangler.toml');
    writeFileSync(file, keywardToml(path.resolve(process.env.BENCH_KEYWARD_BEFORE)));
    const before = await start(file);
    cases['allowed, warm key, before'] = [before, { authorization: `Bearer ${before.key}` }];
  }
  for (const [target, headers] of Object.values(cases)) {
    const r = await fetch(target.kw.url + PATH, { headers });
    if (r.status !== 200) throw new Error(`warm-up: ${r.status} ${await r.text()}`);
    await wrk(target.kw.url, headers); // warm-up (tier-up of the wasm)
    target.probe ??= await inspector(target.kw);
  }
  const runs = [];
  const names = Object.keys(cases);
  for (let round = 0; round < ROUNDS; round++) {
    // Each round starts with the next case: none always goes first.
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + round) % names.length];
      const [target, headers] = cases[name];
      runs.push({ name, ...(await profileOnce(target, headers)) });
    }
  }
  for (const [target] of Object.values(cases)) target.probe?.close();
  const tick = median(runs.map((r) => r.tick));
  const result = { method: `wrk -t1 -c4 -d${DURATION}, median of ${ROUNDS} rounds, isolate µs = non-idle samples × ${tick} µs tick / requests`, cases: {} };
  for (const name of names) {
    const mine = runs.filter((r) => r.name === name);
    result.cases[name] = { isolate_us: Math.round(median(mine.map((r) => (r.samples * tick) / r.requests))), rounds_us: mine.map((r) => Math.round((r.samples * tick) / r.requests)) };
  }
  console.log(JSON.stringify(result, null, 1));
} finally {
  for (const kw of instances) await kw.stop();
  await origin.stop();
}
