// Through the gate on loopback, with wrk (fixed connections and duration): a pass-through Worker,
// keyward with a warm key, keyward missing its in-isolate cache on every request, and the same
// check hand-written in JavaScript; then keyward's cost with 1, 1 000 and 100 000 keys stored.
// Prints one JSON object of results. Every Worker runs under `wrangler dev` (workerd).
import { spawn } from 'node:child_process';
import { writeFileSync, mkdirSync, rmSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { startOrigin } from '../tests/support/origin.mjs';
import { startKeyward, ROOT } from '../tests/support/keyward.mjs';
import { makeKey, digest } from '../tests/support/keys.mjs';
import { median } from './stats.mjs';

const DURATION = process.env.BENCH_DURATION ?? '5s';
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONNECTIONS = process.env.BENCH_CONNECTIONS ?? '16';
const SCALE = (process.env.BENCH_SCALE ?? '1,1000,100000').split(',').map(Number);
const PATH = '/api/v2/projects/1/users';
const out = path.join(ROOT, 'bench-output');
mkdirSync(out, { recursive: true });

function wrk(url, key, connections) {
  return new Promise((resolve, reject) => {
    const args = [`-t${Math.min(2, connections)}`, `-c${connections}`, `-d${DURATION}`, '--latency'];
    if (key) args.push('-H', `Authorization: Bearer ${key}`);
    args.push(url);
    const child = spawn('wrk', args);
    let text = '';
    child.stdout.on('data', (d) => { text += d; });
    child.stderr.on('data', (d) => { text += d; });
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`wrk failed: ${text}`));
      const ms = (v, unit) => Number(v) * ({ us: 0.001, ms: 1, s: 1000 }[unit]);
      const at = (p) => { const m = new RegExp(`\\s${p}%\\s+([\\d.]+)(us|ms|s)`).exec(text); return m ? ms(m[1], m[2]) : null; };
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1]);
      const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(text)?.[1] ?? 0);
      const requests = Number(/(\d+) requests in/.exec(text)?.[1]);
      resolve({ p50_ms: at(50), p99_ms: at(99), rps, requests, non2xx });
    });
    child.on('error', reject);
  });
}

async function measureOnce(url, key) {
  // Latency with one connection (no queueing: what one request costs), throughput with
  // CONNECTIONS connections.
  const latency = await wrk(url, key, 1);
  const load = await wrk(url, key, Number(CONNECTIONS));
  for (const r of [latency, load]) {
    if (r.non2xx > 0) throw new Error(`${url}: ${r.non2xx} of ${r.requests} requests were refused`);
  }
  return { p50_ms: latency.p50_ms, p99_ms: latency.p99_ms, rps: load.rps, loaded_p50_ms: load.p50_ms, loaded_p99_ms: load.p99_ms };
}

// Each figure is the median over ROUNDS rounds; within a round the Workers take turns, so a
// slow spell of the machine falls on all of them rather than on one.
async function measureRounds(targets, results) {
  for (const t of targets) await wrk(t.url, t.key, 1).catch(() => {}); // warm-up
  const runs = Object.fromEntries(targets.map((t) => [t.name, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const t of targets) runs[t.name].push(await measureOnce(t.url, t.key));
  }
  for (const t of targets) {
    const rs = runs[t.name];
    const pick = (f) => median(rs.map((x) => x[f]));
    const r = { p50_ms: pick('p50_ms'), p99_ms: pick('p99_ms'), rps: pick('rps'), loaded_p50_ms: pick('loaded_p50_ms'), loaded_p99_ms: pick('loaded_p99_ms'), connections: Number(CONNECTIONS), rounds: ROUNDS, rps_each_round: rs.map((x) => x.rps) };
    results[t.name] = r;
    console.error(`bench: ${t.name}: p50 ${r.p50_ms} ms, p99 ${r.p99_ms} ms (1 connection), ${r.rps} req/s (${CONNECTIONS} connections; rounds: ${r.rps_each_round.join(', ')})`);
  }
}

const results = {};
const origin = await startOrigin();
const started = [];
try {
  // (a) pass-through, (b) keyward with a warm key, (c) keyward missing its in-isolate cache on
  // every request (records and policy re-read from KV), (d) the hand-written JavaScript check
  // with the same record in its KV: all four running at once, measured in turns.
  const pass = await startKeyward({ origin: origin.url, config: path.join(ROOT, 'bench/passthrough/wrangler.toml') });
  started.push(pass);
  const warm = await startKeyward({ origin: origin.url });
  started.push(warm);
  const created = await warm.admin('POST', '/api_keys', { api_key: { name: 'bench', permissions: ['users:read'] } });
  const key = created.body.data.api_key;
  const storedRecord = await warm.kv('key', 'get', `key:${digest(key)}`);
  const cold = await startKeyward({ origin: origin.url, vars: { CACHE_TTL_SECONDS: '0' } });
  started.push(cold);
  // The policy stored, as in production: it then comes with the change feed and only the key
  // record misses the cache (a policy from wrangler.toml would be re-read from KV too).
  await cold.admin('PUT', '/policy', JSON.parse(readFileSync(path.join(ROOT, 'config/default-policy.json'), 'utf8')));
  const coldKey = (await cold.admin('POST', '/api_keys', { api_key: { name: 'bench', permissions: ['users:read'] } })).body.data.api_key;
  const js = await startKeyward({ origin: origin.url, config: path.join(ROOT, 'bench/js-gate/wrangler.toml') });
  started.push(js);
  await js.kv('key', 'put', `key:${digest(key)}`, storedRecord.trim());
  await measureRounds([
    { name: 'gate/passthrough', url: `${pass.url}${PATH}`, key: null },
    { name: 'gate/keyward_warm', url: `${warm.url}${PATH}`, key },
    { name: 'gate/keyward_cache_miss', url: `${cold.url}${PATH}`, key: coldKey },
    { name: 'gate/hand_written_js', url: `${js.url}${PATH}`, key },
  ], results);
  for (const s of [pass, warm, cold, js]) await s.stop();

  // Scale: keyward missing its cache, with N keys stored.
  const template = JSON.parse(storedRecord);
  for (const n of SCALE) {
    const kw = await startKeyward({ origin: origin.url, vars: { CACHE_TTL_SECONDS: '0' } });
    started.push(kw);
    // The control plane started first: it imports KV-only keys once, when it first starts, and
    // the first request would wait for that import of all N keys (about 1 ms a key) instead of
    // being measured. Started on an empty KV, it has nothing to import.
    const ready = await kw.admin('GET', '/api_keys');
    if (ready.status !== 200) throw new Error(`GET /api_keys: ${ready.status} ${ready.text}`);
    const probe = makeKey('kw_live');
    const entries = [{ key: `key:${digest(probe)}`, value: JSON.stringify({ ...template, digest: digest(probe) }) }];
    for (let i = 1; i < n; i++) {
      const d = digest(`filler-${i}`);
      entries.push({ key: `key:${d}`, value: JSON.stringify({ ...template, digest: d, id: `key_01JBENCH${String(i).padStart(17, '0')}` }) });
    }
    const file = path.join(out, `bulk-${n}.json`);
    writeFileSync(file, JSON.stringify(entries));
    const t = Date.now();
    await kw.kv('bulk', 'put', file);
    rmSync(file);
    console.error(`bench: stored ${n} keys in ${((Date.now() - t) / 1000).toFixed(1)} s`);
    await measureRounds([{ name: `scale/gate_cache_miss_${n}_keys_stored`, url: `${kw.url}${PATH}`, key: probe }], results);
    await kw.stop();
  }
} finally {
  for (const s of started) await s.stop();
  await origin.stop();
}
console.log(JSON.stringify(results));
