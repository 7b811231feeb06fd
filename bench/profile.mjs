// Isolate time per gated request: what a Workers bill is made of. Each Worker runs under
// `wrangler dev` (workerd); while `wrk -t1 -c4` sends one kind of request to one Worker, its
// isolate is profiled through the inspector (the DevTools protocol). The isolate time is the sum
// of the profile's `timeDeltas` over its non-idle samples (workerd samples about every 1.5 ms
// whatever interval is asked for, so each sample stands for the time since the previous one),
// divided by the requests wrk completed. Each figure is the median of BENCH_ROUNDS rounds (3);
// within a round the Workers take turns, so a slow spell of the machine falls on all of them.
//
// Workers: keyward (the build in build/, or BENCH_KEYWARD_MAIN=<path to another build's entry>),
// with BENCH_KEYWARD_BEFORE=<another build's entry> that build beside it as "keyward before" (e.g.
// a copy of an older build/ and its worker/shim.mjs), the hand-written JavaScript check with
// an in-isolate record cache (bench/js-gate) and a pass-through (bench/passthrough); and keyward's
// floor, the same entry with its check made free (below; BENCH_FLOOR=0 leaves it out).
// Cases: an allowed request with a warm key, MALFORMED_KEY (refused before any KV read),
// PERMISSION_DENIED, an allowed request on a route whose JSON body is inspected, and an allowed
// request missing the cache (CACHE_TTL_SECONDS=0 for keyward and the JS check alike).
// Prints one JSON object: per case and Worker, µs per request, and the profile by kind.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startOrigin } from '../tests/support/origin.mjs';
import { keywardToml, startKeyward, ROOT } from '../tests/support/keyward.mjs';
import { digest, typo } from '../tests/support/keys.mjs';
import { median } from './stats.mjs';
import { inspector } from './inspector.mjs';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const DURATION = process.env.BENCH_PROFILE_DURATION ?? '4s';
// How long each Worker takes this case's requests before its rounds (BENCH_WARMUP, a wrk
// duration; DURATION unless set). V8 runs wasm first as baseline (Liftoff) code and moves a
// function to optimised code once it has run a budget of its own code, which for
// keyward's check takes a few thousand requests (JavaScript tiers up sooner). A short warm-up
// measures an isolate that has served about 3 000 requests (all cases warm up before the first
// round); BENCH_WARMUP=60s one that has served many more (docs/benchmarks.md).
const WARMUP = process.env.BENCH_WARMUP ?? DURATION;
// BENCH_WORKERS=<names, comma-separated>: only these Workers (a name's start, or the whole name ending in '$').
const ONLY = process.env.BENCH_WORKERS?.split(',');
const tmp = mkdtempSync(path.join(ROOT, 'test-output', 'profile-'));

// Another build of keyward (its entry module), with the rest of wrangler.toml unchanged; or,
// `withoutAssets`, the same Worker without the console's static assets: then no assets router
// runs in front of it (wrangler dev runs that router as another Worker in the same workerd
// process, so it shows in that process's CPU time; it is not the gate's own work).
function keywardConfig(main, { withoutAssets = false } = {}) {
  if (!main && !withoutAssets) return undefined;
  let toml = keywardToml(main);
  if (withoutAssets) toml = toml.replace(/^\[assets\]\n(?:[^[\n].*\n|#.*\n)*/m, '');
  const file = path.join(mkdtempSync(path.join(tmp, 'config-')), 'wrangler.toml');
  writeFileSync(file, toml);
  return file;
}

// The JS check with keyward's own [assets] section added (the console's files, the Worker first):
// the same assets router in front of it as in front of keyward. An extra row, for comparing the
// two checks under one set-up; the issue's ratio stays keyward ÷ js-gate as it is.
function jsGateWithAssetsConfig() {
  const assets = readFileSync(path.join(ROOT, 'wrangler.toml'), 'utf8').match(/^\[assets\]\n(?:[^[\n].*\n|#.*\n)*/m)?.[0];
  if (!assets) throw new Error('wrangler.toml has no [assets] section');
  const toml = readFileSync(path.join(ROOT, 'bench/js-gate/wrangler.toml'), 'utf8')
    .replace(/^main = "(.*)"$/m, (_, m) => `main = "${path.join(ROOT, 'bench/js-gate', m)}"`);
  const file = path.join(mkdtempSync(path.join(tmp, 'config-')), 'wrangler.toml');
  writeFileSync(file, `${toml}\n${assets.replace(/^directory = "www"$/m, `directory = "${path.join(ROOT, 'www')}"`)}`);
  return file;
}

// The floor: keyward's own entry (src/entry.mjs, or BENCH_KEYWARD_MAIN's) with its check made free.
// Its first request of each kind runs the check as usual; every later identical request takes the
// check's answer from a memo (by the request's facts) and skips the wasm calls, but still reads KV
// (a cache miss) and the body (an inspected route) where the check had them read, and still reads
// the change feed each second. Everything else is keyward's: the entry's JavaScript, the origin's
// time bound, the header hygiene, the answers, the assets router in front. Not counted: usage and
// its flush. So it is what keyward would cost with a check that cost nothing (docs/benchmarks.md).
// Measurement only: the memo keeps plaintext keys, which keyward itself must never do.
function floorConfig(main) {
  const entry = main ?? path.join(ROOT, 'src/entry.mjs');
  let src = readFileSync(entry, 'utf8');
  const build = path.resolve(path.dirname(entry), '../build/index.js');
  const first = "    let answer = gate_check(facts, undefined, 0, now);\n    let flags = answer & BACKGROUND;\n";
  const after = '    if (flags & BACKGROUND) ctx.waitUntil(gate_background(env));\n';
  const i = src.indexOf(first);
  const j = src.indexOf(after);
  const record = '        answer = gate_load(';
  const bodyRead = '        const read = await readInspected(request, h);\n';
  if (i < 0 || j < i || !src.slice(i, j).includes(record) || !src.slice(i, j).includes(bodyRead) || !src.includes("'../build/index.js'")) {
    throw new Error(`bench: the floor cannot be made from ${entry}: its check is not where bench/profile.mjs looks for it`);
  }
  const loop = src.slice(i + first.length, j).replace(record, `        seenDigest = digest;\n${record}`).replace(bodyRead, `        seenBody = true;\n${bodyRead}`);
  src = `${src.slice(0, i)}    let answer;
    let flags = 0;
    const memo = floorMemo.get(facts);
    if (memo !== undefined) {
      if (memo.digest !== null) await env.KEYS.get(\`key:\${memo.digest}\`);
      if (memo.body) {
        const read = await readInspected(request, h);
        if (typeof read !== 'number') { body = read; bodyRead = read !== NO_BODY; }
      }
      answer = memo.answer;
      if (now - floorFeedMs >= 1000) { floorFeedMs = now; flags = BACKGROUND; }
    } else {
    let seenDigest = null;
    let seenBody = false;
    answer = gate_check(facts, undefined, 0, now);
    flags = answer & BACKGROUND;
${loop}    const kind = answer & KIND;
    // Kept without the flags that ask for a fetch from wasm or for background work.
    if (kind === FORWARD || kind === DENY) floorMemo.set(facts, { answer: answer & ~((kind === DENY ? REFRESH_REFUSAL : REFRESH) | BACKGROUND | UNKNOWN_READ), digest: seenDigest, body: seenBody });
    }
${src.slice(j)}`;
  src = src.replaceAll("'../build/index.js'", JSON.stringify(build)).replace('\nexport default {', '\nconst floorMemo = new Map();\nlet floorFeedMs = 0;\n\nexport default {');
  const dir = mkdtempSync(path.join(tmp, 'floor-'));
  writeFileSync(path.join(dir, 'entry.mjs'), src);
  return keywardConfig(path.join(dir, 'entry.mjs'));
}

/** Where a profile's time went, by kind of code. */
function kindOf(frame) {
  const name = frame.functionName;
  const file = frame.url.split('/').pop();
  if (name === '(garbage collector)') return 'GC';
  if (name === '(program)') return 'runtime (program)';
  if (name.startsWith('js-to-wasm') || name.startsWith('wasm-to-js')) return 'wasm/JS boundary';
  if (name.startsWith('wasm-function') || /\.wasm/.test(frame.url)) return 'wasm';
  if (!frame.url) return 'runtime built-ins (fetch, Request, Response, Headers, crypto, ...)';
  // The bundle of keyward's entry holds the entry module's own functions and the wasm-bindgen
  // glue (build/index.js, minified: short names) that worker-build generates.
  if (/^(shim|entry)\.js$/.test(file)) return ENTRY_FUNCTIONS.has(name) ? 'entry module (JS)' : 'wasm-bindgen glue';
  return 'handler (JS)';
}
// The entry module's functions, read from its source (src/entry.mjs): its top-level functions and
// its handler's `fetch`. Anything else in the bundle is the glue or wrangler's middleware.
const ENTRY_FUNCTIONS = new Set(['fetch', ...[...readFileSync(path.join(ROOT, 'src/entry.mjs'), 'utf8').matchAll(/^(?:async )?function (\w+)\(/gm)].map((m) => m[1])]);

function wrk(url, request, duration = DURATION) {
  return new Promise((resolve, reject) => {
    const args = ['-t1', '-c4', `-d${duration}`];
    for (const [name, value] of Object.entries(request.headers)) args.push('-H', `${name}: ${value}`);
    if (request.body !== undefined) {
      const script = path.join(tmp, `wrk-${Math.random().toString(36).slice(2)}.lua`);
      writeFileSync(script, `wrk.method = ${JSON.stringify(request.method)}\nwrk.body = ${JSON.stringify(request.body)}\n`);
      args.push('-s', script);
    }
    args.push(url + request.path);
    const child = spawn('wrk', args);
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`wrk failed: ${out}`));
      const requests = Number(/(\d+) requests in/.exec(out)?.[1]);
      const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
      resolve({ requests, non2xx });
    });
    child.on('error', reject);
  });
}

/**
 * CPU time (user + system, µs, all threads) of the workerd process that runs the Worker itself:
 * `wrangler dev` starts two, its proxy and the Worker's runtime (the one with the inspector).
 * Unlike the profile's timeDeltas, CPU time does not count the time the isolate waits.
 */
function workerdCpu(group) {
  let ticks = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let stat;
    let cmdline;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch { continue; }
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const fields = stat.slice(close + 2).split(' ');
    // fields[2] is the process group; utime and stime are fields 14 and 15 of stat (1-based).
    if (comm === 'workerd' && Number(fields[2]) === group && cmdline.includes('--inspector-addr')) ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks * 1e6 / CLOCK_TICKS;
}
const CLOCK_TICKS = 100;

/** One profiled run: µs of isolate time per request and the busy time's shares by kind. */
async function profileOnce(worker, request) {
  await worker.inspector.send('Profiler.start');
  const cpuBefore = workerdCpu(worker.group);
  const run = await wrk(worker.url, request);
  const cpu = workerdCpu(worker.group) - cpuBefore;
  const { result: { profile } } = await worker.inspector.send('Profiler.stop');
  // wrk counts answers that are not 2xx: all of them for a refusal, none for an allowed request.
  // A few (at most 2%) may be otherwise on this loaded machine (a 503 while the change feed could
  // not be read, wrangler's proxy); they are counted in the result, more is an error.
  const refused = request.status >= 300;
  const unexpected = refused ? run.requests - run.non2xx : run.non2xx;
  if (unexpected > run.requests * 0.02) {
    throw new Error(`${worker.name} ${request.path}: ${unexpected} of ${run.requests} answers were not ${request.status}`);
  }
  const byNode = new Map(profile.nodes.map((n) => [n.id, n]));
  // Two readings of one profile. `busy`: the sum of the non-idle samples' timeDeltas (the issue's
  // method). `samples`: how many non-idle samples there were; workerd takes them at a steady tick
  // only while the isolate runs, and a sample after a wait carries the whole wait in its
  // timeDelta, so the count times the tick is the time the isolate ran (docs/benchmarks.md).
  // Kinds and functions are weighed by samples for the same reason.
  let busy = 0;
  let samples = 0;
  const kinds = {};
  const frames = {};
  profile.samples.forEach((nodeId, i) => {
    const frame = byNode.get(nodeId).callFrame;
    if (frame.functionName === '(idle)') return;
    busy += profile.timeDeltas?.[i] ?? 0;
    samples += 1;
    const k = kindOf(frame);
    kinds[k] = (kinds[k] ?? 0) + 1;
    const name = `${frame.functionName || '(anonymous)'}${frame.url ? ` ${frame.url.split('/').pop()}:${frame.lineNumber}:${frame.columnNumber}` : ''}`;
    frames[name] = (frames[name] ?? 0) + 1;
  });
  // The tick: the sampling interval while the isolate keeps running, read as the 10th percentile
  // of the gaps between samples (most gaps also hold a wait; the shortest ones do not).
  const gaps = (profile.timeDeltas ?? []).filter((d) => d > 0).sort((a, b) => a - b);
  const tick = gaps.length ? gaps[Math.floor(gaps.length * 0.1)] : 0;
  // Each node's caller, and a frame's name without the Rust symbol's hash: for the two views below.
  const parent = new Map();
  if (process.env.BENCH_STACKS || process.env.BENCH_INCLUSIVE) for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const nameOf = (id) => byNode.get(id).callFrame.functionName.replace(/::h[0-9a-f]{16}$/, '');
  // BENCH_STACKS=<regex>: the callers of the matching frames, samples per 1000 requests by call chain.
  const stacks = {};
  if (process.env.BENCH_STACKS) {
    const wanted = new RegExp(process.env.BENCH_STACKS);
    profile.samples.forEach((nodeId, i) => {
      if (!wanted.test(byNode.get(nodeId).callFrame.functionName)) return;
      const chain = [];
      for (let id = nodeId; id !== undefined && chain.length < 12; id = parent.get(id)) chain.push(nameOf(id).slice(0, 90));
      const k = chain.join(' < ');
      stacks[k] = (stacks[k] ?? 0) + 1 / run.requests;
    });
  }
  // BENCH_INCLUSIVE=<regex>: for each function whose name matches, the samples in which it is
  // anywhere on the stack (its inclusive time: itself and what it called), per request.
  const inclusive = {};
  if (process.env.BENCH_INCLUSIVE) {
    const wanted = new RegExp(process.env.BENCH_INCLUSIVE);
    profile.samples.forEach((nodeId) => {
      if (byNode.get(nodeId).callFrame.functionName === '(idle)') return;
      const seen = new Set();
      for (let id = nodeId; id !== undefined; id = parent.get(id)) {
        const name = nameOf(id);
        if (wanted.test(name) && !seen.has(name)) {
          seen.add(name);
          inclusive[name] = (inclusive[name] ?? 0) + 1;
        }
      }
    });
  }
  return {
    us: busy / run.requests, sampled_us: (samples * tick) / run.requests, cpu_us: cpu / run.requests, tick,
    requests: run.requests, unexpected, kinds, frames, samples, stacks, inclusive,
  };
}

async function verify(worker, request) {
  const r = await fetch(worker.url + request.path, { method: request.method, headers: request.headers, body: request.body });
  await r.arrayBuffer();
  if (r.status !== request.status) throw new Error(`${worker.name} ${request.method} ${request.path}: ${r.status}, expected ${request.status}`);
}

const origin = await startOrigin();
const started = [];
const result = {
  method: `wrk -t1 -c4 -d${DURATION} per Worker and case after a ${WARMUP} warm-up, median of ${ROUNDS} rounds, Workers in turn (each round starting with the next)${process.env.BENCH_TOGETHER === '1' ? ' (BENCH_TOGETHER: at the same time)' : ''}. `
    + 'Per request: isolate_us = non-idle profile samples × the sampling tick (the time the isolate ran; the tick is the run\'s median of every profile\'s 10th-percentile gap); '
    + 'us = the sum of the non-idle samples\' timeDeltas (which also holds the time the isolate waited before each sample); '
    + 'workerd_cpu_us = user + system CPU time (/proc) of the workerd process that runs the Worker (with wrangler dev\'s assets router for keyward).',
  cases: {},
};
try {
  const start = async (name, options) => {
    const w = await startKeyward({ origin: origin.url, ...options });
    started.push(w);
    return Object.assign(w, { name });
  };
  const kwConfig = process.env.BENCH_KEYWARD_CONFIG ?? keywardConfig(process.env.BENCH_KEYWARD_MAIN);
  const beforeConfig = process.env.BENCH_BEFORE_CONFIG ?? keywardConfig(process.env.BENCH_KEYWARD_BEFORE);
  const aloneConfig = keywardConfig(process.env.BENCH_KEYWARD_MAIN, { withoutAssets: true });
  const floorCfg = process.env.BENCH_FLOOR !== '0' ? floorConfig(process.env.BENCH_KEYWARD_MAIN) : undefined;
  const workers = {
    // BENCH_KEYWARD_VARS='{"NAME":"value"}': vars for "keyward" only (e.g. to see what a setting costs).
    keyward: await start('keyward', { config: kwConfig, vars: JSON.parse(process.env.BENCH_KEYWARD_VARS ?? '{}') }),
    keyward_cold: await start('keyward (cache miss)', { config: kwConfig, vars: { CACHE_TTL_SECONDS: '0' } }),
    ...(beforeConfig ? {
      before: await start('keyward before', { config: beforeConfig }),
      before_cold: await start('keyward before (cache miss)', { config: beforeConfig, vars: { CACHE_TTL_SECONDS: '0' } }),
    } : {}),
    // BENCH_FLOOR=0: without the floor's rows.
    ...(floorCfg ? {
      floor: await start('keyward floor', { config: floorCfg }),
      floor_cold: await start('keyward floor (cache miss)', { config: floorCfg, vars: { CACHE_TTL_SECONDS: '0' } }),
    } : {}),
    alone: await start('keyward without assets', { config: aloneConfig }),
    alone_cold: await start('keyward without assets (cache miss)', { config: aloneConfig, vars: { CACHE_TTL_SECONDS: '0' } }),
    js: await start('js-gate', { config: path.join(ROOT, 'bench/js-gate/wrangler.toml') }),
    js_cold: await start('js-gate (cache miss)', { config: path.join(ROOT, 'bench/js-gate/wrangler.toml'), vars: { CACHE_TTL_SECONDS: '0' } }),
    js_assets: await start('js-gate with assets', { config: jsGateWithAssetsConfig() }),
    js_assets_cold: await start('js-gate with assets (cache miss)', { config: jsGateWithAssetsConfig(), vars: { CACHE_TTL_SECONDS: '0' } }),
    pass: await start('pass-through', { config: path.join(ROOT, 'bench/passthrough/wrangler.toml') }),
  };
  const policy = JSON.parse(readFileSync(path.join(ROOT, 'config/default-policy.json'), 'utf8'));
  const keys = {};
  for (const [kw, js] of [['keyward', 'js'], ['keyward_cold', 'js_cold'], ['alone', null], ['alone_cold', null], ...(workers.floor ? [['floor', null], ['floor_cold', null]] : []), ...(beforeConfig ? [['before', null], ['before_cold', null]] : [])]) {
    // The policy stored, as in production (then it comes with the change feed, not from KV).
    const put = await workers[kw].admin('PUT', '/policy', policy);
    if (put.status !== 200) throw new Error(`PUT /policy: ${put.status} ${put.text}`);
    const created = await workers[kw].admin('POST', '/api_keys', { api_key: { name: 'bench', permissions: ['users:read', 'events:create'] } });
    const key = created.body.data.api_key;
    const record = js && (await workers[kw].kv('key', 'get', `key:${digest(key)}`)).trim();
    if (js) await workers[js].kv('key', 'put', `key:${digest(key)}`, record);
    if (js) await workers[`${js.replace('js', 'js_assets')}`].kv('key', 'put', `key:${digest(key)}`, record);
    keys[kw] = key;
  }
  const bearer = (key) => ({ authorization: `Bearer ${key}` });
  const cases = [
    { name: 'allowed, warm key', pair: ['keyward', 'js'], request: (key) => ({ method: 'GET', path: '/api/v2/projects/1/users', headers: bearer(key), status: 200 }) },
    { name: 'MALFORMED_KEY', pair: ['keyward', 'js'], request: (key) => ({ method: 'GET', path: '/api/v2/projects/1/users', headers: bearer(typo(key)), status: 401 }) },
    { name: 'PERMISSION_DENIED', pair: ['keyward', 'js'], request: (key) => ({ method: 'GET', path: '/api/v2/projects/1', headers: bearer(key), status: 403 }) },
    { name: 'allowed, inspected JSON body', pair: ['keyward', 'js'], request: (key) => ({ method: 'POST', path: '/v4/events', headers: { ...bearer(key), 'content-type': 'application/json' }, body: '{"action":"signup","user":"u-1"}', status: 200 }) },
    { name: 'allowed, cache miss', pair: ['keyward_cold', 'js_cold'], request: (key) => ({ method: 'GET', path: '/api/v2/projects/1/users', headers: bearer(key), status: 200 }) },
  ].filter((c) => !process.env.BENCH_CASES || new RegExp(process.env.BENCH_CASES).test(c.name));
  for (const w of Object.values(workers)) w.inspector = await inspector(w);
  const runs = [];
  for (const c of cases) {
    const [kw, js] = c.pair;
    const key = keys[kw];
    const request = c.request(key);
    const before = kw === 'keyward' ? 'before' : 'before_cold';
    const alone = kw === 'keyward' ? 'alone' : 'alone_cold';
    const floor = kw === 'keyward' ? 'floor' : 'floor_cold';
    const passRequest = { ...request, headers: { ...request.headers }, status: 200 };
    // The pass-through forwards whatever it gets: measured once for a GET and once for the POST.
    const passes = c.name === 'allowed, warm key' || request.method !== 'GET';
    c.targets = [[workers[kw], request], [workers[alone], c.request(keys[alone])], ...(workers[floor] ? [[workers[floor], c.request(keys[floor])]] : []), ...(workers[before] ? [[workers[before], c.request(keys[before])]] : []), [workers[js], request], [workers[js.replace('js', 'js_assets')], request], ...(passes ? [[workers.pass, passRequest]] : [])]
      .filter(([w]) => !ONLY || ONLY.some((o) => (o.endsWith('$') ? w.name.replace(/ \(cache miss\)$/, '') === o.slice(0, -1) : w.name.startsWith(o))));
    for (const [w, r] of c.targets) {
      await verify(w, r);
      await wrk(w.url, { ...r, headers: r.headers }, WARMUP).catch(() => {}); // warm-up
    }
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const c of cases) {
      // BENCH_TOGETHER=1: the case's Workers run at the same time, so that a busy spell of the
      // machine falls on all of them alike (for comparing builds on a shared machine).
      const together = process.env.BENCH_TOGETHER === '1';
      // Taking turns, each round starts with the next Worker: no Worker always goes first (after
      // the pause between cases) or always follows the same one.
      const order = c.targets.map((_, i) => c.targets[(i + round) % c.targets.length]);
      const measured = together ? await Promise.all(order.map(([w, r]) => profileOnce(w, r))) : [];
      for (const [i, [w, r]] of order.entries()) {
        const p = together ? measured[i] : await profileOnce(w, r);
        runs.push({ case: c.name, worker: w.name.replace(/ \(cache miss\)$/, ''), ...p });
        console.error(`bench: profile round ${round + 1}: ${c.name}: ${w.name}: per request ${p.us.toFixed(0)} µs of timeDeltas, isolate ${p.sampled_us.toFixed(0)} µs (${p.samples} samples, tick ${p.tick} µs), workerd CPU ${p.cpu_us.toFixed(0)} µs (${p.requests} requests)`);
      }
    }
  }
  // The sampling tick is the profiler's, not the Worker's: one figure for the whole run (the
  // median of every profile's), so that a profile whose short gaps happened to be longer or
  // shorter does not move its Worker's figure.
  const tick = median(runs.map((r) => r.tick));
  result.tick_us = tick;
  for (const r of runs) r.sampled_us = (r.samples * tick) / r.requests;
  for (const c of cases) {
    const row = {};
    for (const w of ['keyward', 'keyward without assets', 'keyward floor', 'keyward before', 'js-gate', 'js-gate with assets', 'pass-through']) {
      let rs = runs.filter((r) => r.case === c.name && r.worker === w);
      if (!rs.length && w === 'pass-through') rs = runs.filter((r) => r.case === 'allowed, warm key' && r.worker === w);
      if (!rs.length) continue;
      const samples = rs.reduce((s, r) => s + r.samples, 0);
      // A per-round count (by kind, frame, call chain or function) summed over the rounds.
      const summed = (field) => {
        const total = {};
        for (const r of rs) for (const [k, n] of Object.entries(r[field])) total[k] = (total[k] ?? 0) + n;
        return total;
      };
      const kinds = summed('kinds');
      const frames = summed('frames');
      const requests = rs.reduce((s, r) => s + r.requests, 0);
      // Sample counts as µs per request (samples × tick), largest first.
      const usPerRequest = (counts, limit) => Object.fromEntries(Object.entries(counts).sort((a, b) => b[1] - a[1]).slice(0, limit)
        .map(([k, n]) => [k, +((n * tick) / requests).toFixed(1)]));
      row[w] = {
        // The issue's figure: the non-idle samples' timeDeltas, which hold the waits too.
        us_per_request: Math.round(median(rs.map((r) => r.us))),
        // The time the isolate ran: non-idle samples × the tick (the sampling interval).
        isolate_us_per_request: Math.round(median(rs.map((r) => r.sampled_us))),
        samples_per_request: +median(rs.map((r) => r.samples / r.requests)).toFixed(3),
        // The CPU time (user + system, /proc) of the workerd process running the Worker.
        workerd_cpu_us_per_request: Math.round(median(rs.map((r) => r.cpu_us))),
        us_each_round: rs.map((r) => Math.round(r.us)),
        isolate_us_each_round: rs.map((r) => Math.round(r.sampled_us)),
        workerd_cpu_us_each_round: rs.map((r) => Math.round(r.cpu_us)),
        requests_each_round: rs.map((r) => r.requests),
        tick_us_each_round: rs.map((r) => r.tick),
        unexpected_answers: rs.reduce((s, r) => s + r.unexpected, 0),
        by_kind: Object.fromEntries(Object.entries(kinds).sort((a, b) => b[1] - a[1]).map(([k, n]) => [k, +(n / samples).toFixed(3)])),
        // Call chains: samples per 1000 requests, the mean of the rounds.
        ...(process.env.BENCH_STACKS ? { stacks: Object.fromEntries(Object.entries(summed('stacks')).sort((a, b) => b[1] - a[1]).slice(0, 15).map(([k, v]) => [k, Math.round((v / rs.length) * 1000)])) } : {}),
        ...(process.env.BENCH_INCLUSIVE ? { inclusive: usPerRequest(summed('inclusive')) } : {}),
        // The functions the isolate ran most, in µs per request (self time: samples × tick).
        top: usPerRequest(frames, Number(process.env.BENCH_TOP ?? 12)),
      };
    }
    const ratio = (a, b, field) => (row[a] && row[b] ? +(row[a][field] / row[b][field]).toFixed(2) : undefined);
    row.keyward_over_js = {
      isolate: ratio('keyward', 'js-gate', 'isolate_us_per_request'),
      timedeltas: ratio('keyward', 'js-gate', 'us_per_request'),
      workerd_cpu: ratio('keyward', 'js-gate', 'workerd_cpu_us_per_request'),
      workerd_cpu_without_assets: ratio('keyward without assets', 'js-gate', 'workerd_cpu_us_per_request'),
      // Both behind the same assets router, and both without one.
      isolate_both_with_assets: ratio('keyward', 'js-gate with assets', 'isolate_us_per_request'),
      isolate_both_without_assets: ratio('keyward without assets', 'js-gate', 'isolate_us_per_request'),
    };
    // The floor (keyward with a check that costs nothing) against the JS check, as the verdict is.
    if (row['keyward floor']) row.floor_over_js = { isolate: ratio('keyward floor', 'js-gate', 'isolate_us_per_request'), workerd_cpu: ratio('keyward floor', 'js-gate', 'workerd_cpu_us_per_request') };
    if (row['keyward before']) row.keyward_over_before = { isolate: ratio('keyward', 'keyward before', 'isolate_us_per_request'), workerd_cpu: ratio('keyward', 'keyward before', 'workerd_cpu_us_per_request') };
    result.cases[c.name] = row;
  }
  for (const w of Object.values(workers)) w.inspector.close();
} finally {
  for (const s of started) await s.stop();
  await origin.stop();
}
console.log(JSON.stringify(result));
