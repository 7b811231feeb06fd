// The check in wasm under Node (V8, the engine workerd runs): the browser build of the core
// (www/pkg), a record and policy compiled once as the edge caches them, then the whole check
// (key format and checksum, SHA-256, decision) per call. Also compile/instantiate times.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { median, pct } from './stats.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const wasmPath = path.join(ROOT, 'www/pkg/keyward_bg.wasm');
const bytes = readFileSync(wasmPath);
const core = await import(path.join(ROOT, 'www/pkg/keyward.js'));


// Start: compile + instantiate, fresh each time (median of 15).
const compileMs = [];
const startMs = [];
for (let i = 0; i < 15; i++) {
  let t = performance.now();
  const module = await WebAssembly.compile(bytes);
  compileMs.push(performance.now() - t);
  t = performance.now();
  await core.default({ module_or_path: module });
  startMs.push(performance.now() - t);
}

const cidrs = [];
let seed = 7;
const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed; };
for (let i = 0; i < 99; i++) {
  let a = (rnd() % 223) + 1; if (a === 198) a = 199;
  cidrs.push(`${a}.${rnd() % 256}.${rnd() % 256}.0/${8 + (rnd() % 25)}`.replace(/\/(\d+)$/, (m, p) => `/${p}`));
}
// Host bits are cleared by the core, so any address works as a network.
cidrs.push('198.51.100.0/24');
const record = {
  id: 'key_01JBENCH000000000000000000', name: 'benchmark key',
  permissions: [...Array.from({ length: 19 }, (_, i) => `module_${i}:read`), 'events:create'],
  event_allowlist: Array.from({ length: 50 }, (_, i) => `event_${i}`), event_denylist: ['event_blocked'],
  ip_allowlist: cidrs, expires_at: '2099-01-01T00:00:00Z',
};
const policy = JSON.parse(readFileSync(path.join(ROOT, 'config/default-policy.json'), 'utf8'));
const key = core.generateKey('kw_live').key;
const checker = core.Checker.compile(record, policy);
if (!checker) throw new Error('the benchmark record did not compile');
checker.bindKey(key);
const body = '{"action":"event_17","params":{"url":"/pricing","referrer":"search"}}';
const now = Date.parse('2026-09-21T00:00:00Z');
const code = checker.check(key, 'POST', '/v4/events', '198.51.100.77', body, now);
if (code !== 'VALID') throw new Error(`the benchmark request must pass, got ${code}`);

function run(f, batch = 500, ms = 2000) {
  for (let i = 0; i < batch * 20; i++) f();
  const samples = [];
  const end = performance.now() + ms;
  while (performance.now() < end || samples.length < 50) {
    const t = performance.now();
    for (let i = 0; i < batch; i++) f();
    samples.push(((performance.now() - t) * 1e6) / batch);
  }
  return { p50_ns: pct(samples, 0.5), p99_ns: pct(samples, 0.99), batches: samples.length };
}

const results = {
  'wasm/keyward_full_check': run(() => checker.check(key, 'POST', '/v4/events', '198.51.100.77', body, now)),
  'wasm/keyward_decide_compiling_each_time': run(() => core.decide(record, policy, { method: 'POST', path: '/v4/events', ip: '198.51.100.77', body }, now), 20),
  'start/browser_wasm_compile_ms': median(compileMs),
  'start/browser_wasm_instantiate_ms': median(startMs),
};
console.log(JSON.stringify(results));
