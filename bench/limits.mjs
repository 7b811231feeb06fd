// What a key's rate limit and credits cost at the gate: p50/p99 latency (one connection) and the
// isolate's time per request (inspector profile: non-idle samples × the sampling tick, as
// bench/profile.mjs measures it; the timeDeltas summed beside it) for a key with neither attribute, with a rate limit (exact, and `local`
// on a Rate Limiting binding), and with credits; then the most requests per second one
// rate-limited key sustains here, exact and local (wrk, 16 connections).
// `node bench/limits.mjs` prints JSON and writes bench-output/limits.json. Keep the machine
// otherwise quiet, or report its load (uptime) with the figures.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { startOrigin } from '../tests/support/origin.mjs';
import { inspector } from './inspector.mjs';
import { startKeyward, ROOT } from '../tests/support/keyward.mjs';

const SEQUENTIAL = Number(process.env.BENCH_LIMITS_REQUESTS ?? 400);
const DURATION = process.env.BENCH_DURATION ?? '5s';
const PATH = '/api/v2/projects/1/users';

function wrk(url, key, connections, duration) {
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', ['-t1', `-c${connections}`, `-d${duration}`, '--latency', '-H', `Authorization: Bearer ${key}`, url]);
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.on('exit', () => {
      const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0);
      const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
      resolve({ requests, rps, non2xx });
    });
    child.on('error', reject);
  });
}

async function latency(base, key) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const times = [];
  for (let i = 0; i < SEQUENTIAL; i++) {
    const start = process.hrtime.bigint();
    const status = await new Promise((resolve, reject) => {
      const req = http.request(`${base}${PATH}`, { agent, headers: { authorization: `Bearer ${key}` } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      });
      req.on('error', reject);
      req.end();
    });
    if (status !== 200) throw new Error(`request ${i} answered ${status}`);
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  agent.destroy();
  times.sort((a, b) => a - b);
  const at = (q) => +times[Math.min(times.length - 1, Math.floor(q * times.length))].toFixed(2);
  return { p50_ms: at(0.5), p99_ms: at(0.99) };
}

async function isolateTime(kw, key) {
  const { send, close } = await inspector(kw);
  await send('Profiler.start');
  const run = await wrk(`${kw.url}${PATH}`, key, 4, '4s');
  const { result: { profile } } = await send('Profiler.stop');
  close();
  if (run.non2xx) throw new Error(`${run.non2xx} requests were refused while profiling`);
  const byNode = new Map(profile.nodes.map((n) => [n.id, n]));
  // As bench/profile.mjs measures it (docs/benchmarks.md, Isolate time per request): non-idle samples × the
  // sampling tick (the 10th percentile of the gaps between samples); the timeDeltas summed too.
  let busy = 0;
  let samples = 0;
  profile.samples.forEach((nodeId, i) => {
    if (byNode.get(nodeId).callFrame.functionName === '(idle)') return;
    busy += profile.timeDeltas?.[i] ?? 0;
    samples += 1;
  });
  const gaps = (profile.timeDeltas ?? []).filter((d) => d > 0).sort((a, b) => a - b);
  const tick = gaps.length ? gaps[Math.floor(gaps.length * 0.1)] : 0;
  const per = (x) => (run.requests ? +(x / run.requests).toFixed(1) : null);
  return { requests: run.requests, isolate_us_per_request: per(samples * tick), timedeltas_us_per_request: per(busy), tick_us: tick };
}

const origin = await startOrigin();
const kw = await startKeyward({ origin: origin.url });
const result = { load_before: os.loadavg().map((l) => +l.toFixed(2)), cpus: os.cpus().length, keys: {} };
try {
  const make = async (name, extra) => {
    const r = await kw.admin('POST', '/api_keys', { api_key: { name, permissions: ['users:read'], ...extra } });
    if (r.status !== 201) throw new Error(r.text);
    return r.body.data.api_key;
  };
  const keys = {
    neither: await make('bench plain', {}),
    ratelimit: await make('bench rate limit', { ratelimit: { limit: 1000000, period_seconds: 86400 } }),
    // The largest declared tier (wrangler.toml): the runs below stay well under 10 000 a minute.
    local: await make('bench local rate limit', { ratelimit: { limit: 10000, period_seconds: 60, mode: 'local' } }),
    credits: await make('bench credits', { credits: { remaining: 1e12 } }),
  };
  for (const [name, key] of Object.entries(keys)) {
    await latency(kw.url, key); // warm the isolate, the cache and the Limiter
    result.keys[name] = { ...(await latency(kw.url, key)), ...(await isolateTime(kw, key)) };
  }
  const sustained = await wrk(`${kw.url}${PATH}`, keys.ratelimit, 16, DURATION);
  if (sustained.non2xx) throw new Error(`${sustained.non2xx} refusals in the sustained run`);
  result.one_limited_key_rps = sustained.rps;
  const local = await wrk(`${kw.url}${PATH}`, keys.local, 16, DURATION);
  if (local.non2xx) throw new Error(`${local.non2xx} refusals in the local run`);
  result.one_local_limited_key_rps = local.rps;
  const plain = await wrk(`${kw.url}${PATH}`, keys.neither, 16, DURATION);
  result.one_plain_key_rps = plain.rps;
  result.load_after = os.loadavg().map((l) => +l.toFixed(2));
} finally {
  await kw.stop();
  await origin.stop();
}
mkdirSync(path.join(ROOT, 'bench-output'), { recursive: true });
writeFileSync(path.join(ROOT, 'bench-output', 'limits.json'), JSON.stringify(result, null, 1));
console.log(JSON.stringify(result, null, 1));
