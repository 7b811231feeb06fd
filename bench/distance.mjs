// Distance (docs/distance.md): what a far control plane and far Limiters add to a gated request.
// Runs the built Worker under `wrangler dev` twice at once, without and with
// KEYWARD_TEST_REMOTE_DELAY_MS (every call from the gate isolate to the control plane or a Limiter
// waits that long first), and measures one client's latency (keep-alive, one connection per
// instance, the two instances' requests alternating so that the machine's load falls on both
// alike) in these cases:
//   busy       a key without limits at 20 req/s
//   limited    a key with credits and an exact rate limit at 20 req/s (leases)
//   idle+nbr   strict, after BENCH_IDLE_MS idle, a busy neighbour having just read the feed (its
//              read played by /_keyward/debug/neighbour: wrangler dev runs one isolate)
//   idle alone strict, after BENCH_IDLE_MS idle, nobody else in the location
//   bounded    FRESHNESS=bounded, after BENCH_IDLE_MS idle, alone
// BENCH_IDLE_MS (default 2500) only has to pass two SYNC_INTERVAL_MS (1000): an isolate idle for
// 10 s takes the same path. Then how many feed reads per second one control-plane object answers
// here (BENCH_FEED_CLIENTS clients reading it without a delay, through the debug endpoint).
// `node bench/distance.mjs` prints a table and writes bench-output/distance.json. Figures, not
// assertions: compare runs on one machine, and keep it otherwise quiet.
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { startOrigin } from '../tests/support/origin.mjs';
import { startKeyward, ROOT } from '../tests/support/keyward.mjs';

const DELAY = Number(process.env.BENCH_REMOTE_DELAY_MS ?? 150);
const IDLE_MS = Number(process.env.BENCH_IDLE_MS ?? 2500);
const STEADY = Number(process.env.BENCH_STEADY_REQUESTS ?? 200);
const IDLE_SAMPLES = Number(process.env.BENCH_IDLE_SAMPLES ?? 10);
const FEED_CLIENTS = Number(process.env.BENCH_FEED_CLIENTS ?? 8);
const PATH = '/api/v2/projects/1/users';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
function get(base, p, key) {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const req = http.request(new URL(p, base), { agent, headers: key ? { 'x-api-key': key } : {} }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, ms: Number(process.hrtime.bigint() - start) / 1e6 }));
    });
    req.on('error', reject);
    req.end();
  });
}

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

// Both instances (without and with the delay) run at once and each case alternates between them
// request by request, so that the machine's load (shared, noisy) falls on both alike.
async function steady(pair, keys) {
  const times = [[], []];
  // 20 req/s on each: a request every 50 ms, from its start, to each instance in turn.
  for (let i = 0; i < STEADY; i++) {
    const t0 = Date.now();
    for (const k of [0, 1]) {
      const r = await get(pair[k].url, PATH, keys[k]);
      if (r.status !== 200) throw new Error(`steady: ${r.status}`);
      if (i >= 10) times[k].push(r.ms);
    }
    await sleep(Math.max(0, 50 - (Date.now() - t0)));
  }
  return times;
}

async function idle(pair, keys, neighbour) {
  const times = [[], []];
  for (let i = 0; i < IDLE_SAMPLES; i++) {
    await sleep(IDLE_MS);
    for (const k of [0, 1]) {
      if (neighbour) {
        const n = await get(pair[k].url, '/_keyward/debug/neighbour');
        if (n.status !== 200) throw new Error(`neighbour: ${n.status}`);
      }
    }
    // The two requests one after the other: the second's instance idled a few ms longer.
    for (const k of i % 2 ? [1, 0] : [0, 1]) {
      const r = await get(pair[k].url, PATH, keys[k]);
      if (r.status !== 200) throw new Error(`idle: ${r.status}`);
      times[k].push(r.ms);
    }
  }
  return times;
}

async function createKey(kw, attrs = {}) {
  const r = await kw.admin('POST', '/api_keys', { api_key: { name: 'distance bench', permissions: ['users:read'], ...attrs } });
  if (r.status !== 201) throw new Error(r.text);
  return r.body.data.api_key;
}

const stats = async (kw) => (await (await fetch(`${kw.url}/_keyward/debug/stats`)).json()).data;

async function start(origin, freshness) {
  const vars = (delay) => ({ KEYWARD_DEBUG: '1', KEYWARD_TEST_REMOTE_DELAY_MS: String(delay), SYNC_INTERVAL_MS: '1000', FRESHNESS: freshness });
  return Promise.all([startKeyward({ origin: origin.url, vars: vars(0) }), startKeyward({ origin: origin.url, vars: vars(DELAY) })]);
}

/** Each case's latencies: [without the delay, with it]. */
async function run(origin) {
  const out = {};
  const pair = await start(origin, 'strict');
  try {
    const plain = await Promise.all(pair.map((kw) => createKey(kw)));
    const limited = await Promise.all(pair.map((kw) => createKey(kw, { credits: { remaining: 1_000_000 }, ratelimit: { limit: 100_000, period_seconds: 60 } })));
    for (const k of [0, 1]) await get(pair[k].url, PATH, plain[k]);
    const before = await stats(pair[1]);
    out.busy = await steady(pair, plain);
    const after = await stats(pair[1]);
    out.busy_inline_reads = after.feed.inline - before.feed.inline;
    for (const k of [0, 1]) await get(pair[k].url, PATH, limited[k]);
    out.limited = await steady(pair, limited);
    out.lease = (await stats(pair[1])).lease;
    out['idle+nbr'] = await idle(pair, plain, true);
    out['idle alone'] = await idle(pair, plain, false);
    out.feed = (await stats(pair[1])).feed;
  } finally {
    await Promise.all(pair.map((kw) => kw.stop()));
  }
  const bounded = await start(origin, 'bounded');
  try {
    const plain = await Promise.all(bounded.map((kw) => createKey(kw)));
    for (const k of [0, 1]) await get(bounded[k].url, PATH, plain[k]);
    out.bounded = await idle(bounded, plain, false);
  } finally {
    await Promise.all(bounded.map((kw) => kw.stop()));
  }
  return out;
}

/** Feed reads per second one control-plane object answers here (no delay). */
async function feedRate(origin) {
  const kw = await startKeyward({ origin: origin.url, vars: { KEYWARD_DEBUG: '1' } });
  try {
    await createKey(kw);
    let reads = 0;
    const until = Date.now() + 5000;
    await Promise.all(Array.from({ length: FEED_CLIENTS }, async () => {
      const a = new http.Agent({ keepAlive: true, maxSockets: 1 });
      while (Date.now() < until) {
        await new Promise((resolve, reject) => {
          const req = http.request(new URL('/_keyward/debug/neighbour', kw.url), { agent: a }, (res) => { res.resume(); res.on('end', resolve); });
          req.on('error', reject);
          req.end();
        });
        reads++;
      }
    }));
    return reads / 5;
  } finally {
    await kw.stop();
  }
}

const origin = await startOrigin();
try {
  const out = await run(origin);
  const rows = [];
  for (const name of ['busy', 'limited', 'idle+nbr', 'idle alone', 'bounded']) {
    const [a, b] = out[name];
    rows.push({
      case: name,
      n: b.length,
      p50_ms: +pct(a, 50).toFixed(2),
      p99_ms: +pct(a, 99).toFixed(2),
      p50_delay_ms: +pct(b, 50).toFixed(2),
      p99_delay_ms: +pct(b, 99).toFixed(2),
      added_p50_ms: +(pct(b, 50) - pct(a, 50)).toFixed(2),
      added_p99_ms: +(pct(b, 99) - pct(a, 99)).toFixed(2),
    });
  }
  const feedReadsPerSecond = await feedRate(origin);
  const result = {
    date: new Date().toISOString(),
    delay_ms: DELAY,
    idle_ms: IDLE_MS,
    load: os.loadavg(),
    rows,
    busy_requests_that_read_the_feed_first: out.busy_inline_reads,
    leases_with_delay: out.lease,
    feed_reads_with_delay: out.feed,
    control_plane_feed_reads_per_second: feedReadsPerSecond,
  };
  mkdirSync(path.join(ROOT, 'bench-output'), { recursive: true });
  writeFileSync(path.join(ROOT, 'bench-output', 'distance.json'), JSON.stringify(result, null, 2));
  console.log(`distance: KEYWARD_TEST_REMOTE_DELAY_MS=${DELAY} vs 0, idle ${IDLE_MS} ms, one client (ms; added = with delay minus without)`);
  console.log('case         n    p50    p99    p50+d  p99+d  added p50  added p99');
  for (const r of rows) {
    console.log(`${r.case.padEnd(11)} ${String(r.n).padStart(3)} ${String(r.p50_ms).padStart(6)} ${String(r.p99_ms).padStart(6)} ${String(r.p50_delay_ms).padStart(8)} ${String(r.p99_delay_ms).padStart(6)} ${String(r.added_p50_ms).padStart(10)} ${String(r.added_p99_ms).padStart(10)}`);
  }
  console.log(`with the delay: busy requests that read the feed first: ${out.busy_inline_reads}; leases ${JSON.stringify(out.lease)}; feed reads ${JSON.stringify(out.feed)}`);
  console.log(`one control-plane object here: ${feedReadsPerSecond.toFixed(0)} feed reads/s (${FEED_CLIENTS} clients, each read through a gate isolate)`);
} finally {
  await origin.stop();
  agent.destroy();
}
