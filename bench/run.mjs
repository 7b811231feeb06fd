// The benchmark command's table: gathers the native figures (criterion bench, written to
// bench-output/native.json), wasm under Node, wasm start in Chromium, the gate under wrk and the
// isolate time per request (profiled), prints one table and writes bench-output/results.json.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../tests/support/keyward.mjs';
import { launch } from '../tests/browser/support.mjs';

const node = (script, ...args) => JSON.parse(execFileSync(process.execPath, [path.join(ROOT, 'bench', script), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26 }).toString().trim().split('\n').pop());

const native = JSON.parse(readFileSync(path.join(ROOT, 'bench-output/native.json'), 'utf8'));
console.error('bench: wasm under Node');
const wasm = node('wasm.mjs');

// Worker wasm: compile in V8 as workerd does (Chromium's V8 knows the wasm GC types it uses).
console.error('bench: Worker wasm compile time in Chromium');
// gzip -9 as scripts/build.sh and the README measure it (GNU gzip's deflate packs this wasm about
// 2 % tighter than Node's zlib at level 9: 409 037 against 417 866 bytes for one build).
const size = (file) => {
  const bytes = readFileSync(path.join(ROOT, file));
  return { raw: bytes.length, gzip: execFileSync('gzip', ['-9', '-c'], { input: bytes, maxBuffer: 1 << 26 }).length };
};
const browser = await launch();
const page = await browser.newPage();
const workerWasm = readFileSync(path.join(ROOT, 'build/index_bg.wasm')).toString('base64');
const workerCompileMs = await page.evaluate(async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const times = [];
  for (let i = 0; i < 15; i++) {
    const t = performance.now();
    await WebAssembly.compile(bytes);
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return times[7];
}, workerWasm);
await browser.close();

console.error('bench: through the gate (wrk)');
const gate = node('gate.mjs');
console.error('bench: isolate time per request, profiled (keyward, the JS check, a pass-through)');
const profile = node('profile.mjs');

const sizes = { worker: size('build/index_bg.wasm'), browser: size('www/pkg/keyward_bg.wasm') };
const results = {
  when: new Date().toISOString(),
  machine: { cpus: (await import('node:os')).cpus().length, node: process.version },
  native, wasm, gate, profile, sizes, worker_wasm_compile_ms: workerCompileMs,
};
writeFileSync(path.join(ROOT, 'bench-output/results.json'), JSON.stringify(results, null, 1));

const us = (ns) => `${(ns / 1000).toFixed(2)} µs`;
const rows = [];
const row = (what, value, target = '') => rows.push([what, value, target]);
const n = (k) => native[k];
row('decision, native: whole check (parse+checksum+SHA-256+decide) p50/p99', `${us(n('native/keyward_full_check').p50_ns)} / ${us(n('native/keyward_full_check').p99_ns)}`);
row('decision, native: decide only p50/p99', `${us(n('native/keyward_decide').p50_ns)} / ${us(n('native/keyward_decide').p99_ns)}`);
row('  of which SHA-256 digest / key parse (p50)', `${us(n('native/sha256_digest').p50_ns)} / ${us(n('native/parse_key').p50_ns)}`);
row('usage counting, native: one tally update (usage::record) p50', us(n('native/usage_record').p50_ns));
row('decision, wasm (Node/V8): whole check p50/p99', `${us(wasm['wasm/keyward_full_check'].p50_ns)} / ${us(wasm['wasm/keyward_full_check'].p99_ns)}`,
  `< 2 µs: ${wasm['wasm/keyward_full_check'].p50_ns < 2000 ? 'met' : 'MISSED'}`);
row('peer: cedar-policy is_authorized, native p50/p99', `${us(n('native/cedar').p50_ns)} / ${us(n('native/cedar').p99_ns)}`);
const ratio = n('native/cedar').p50_ns / n('native/keyward_full_check').p50_ns;
row('cedar / keyward (native, whole check)', `${ratio.toFixed(0)}×`, `≥ 10×: ${ratio >= 10 ? 'met' : 'MISSED'}`);
const g = (k) => gate[k];
const added = g('gate/keyward_warm').p50_ms - g('gate/passthrough').p50_ms;
for (const [k, label] of [['gate/passthrough', '(a) pass-through Worker'], ['gate/keyward_warm', '(b) keyward, warm key'], ['gate/keyward_cache_miss', '(c) keyward, cache miss every request'], ['gate/hand_written_js', '(d) hand-written JS check']]) {
  row(`gate ${label}: p50/p99 (1 conn), req/s (${g(k).connections} conn)`, `${g(k).p50_ms} / ${g(k).p99_ms} ms, ${g(k).rps.toFixed(0)} req/s`);
}
// Issue 11's target (the first benchmark's was 1 ms).
row('keyward added p50 over pass-through', `${added.toFixed(2)} ms`, `< 0.5 ms: ${added < 0.5 ? 'met' : 'MISSED'}`);
const vsJs = g('gate/keyward_warm').rps / g('gate/hand_written_js').rps;
row('keyward req/s ÷ hand-written JS req/s', vsJs.toFixed(2), `≥ 1: ${vsJs >= 1 ? 'met' : 'MISSED'}`);
const scaleKeys = Object.keys(gate).filter((k) => k.startsWith('scale/'));
for (const k of scaleKeys) row(`scale: ${k.replace('scale/gate_cache_miss_', 'gate, cache miss, ').replace(/_/g, ' ')}`, `${g(k).p50_ms} ms p50, ${g(k).rps.toFixed(0)} req/s`);
if (scaleKeys.length > 1) {
  const p = scaleKeys.map((k) => g(k).p50_ms);
  const spread = Math.max(...p) / Math.min(...p);
  row('scale: stored keys, max/min p50', `${spread.toFixed(2)}×`, `flat within 2×: ${spread <= 2 ? 'met' : 'MISSED'}`);
}
for (const m of [10, 1000, 10000]) row(`scale: decide with ${m} CIDRs + ${m} permissions (native p50)`, us(n(`scale/decide_${m}_cidrs_and_permissions`).p50_ns));
for (const m of [10, 1000]) row(`scale: cedar with ${m} CIDRs + ${m} permissions (native p50)`, us(n(`scale/cedar_${m}_cidrs_and_permissions`).p50_ns));
for (const m of [10, 1000, 10000]) row(`scale: decide with ${m} route rules (native p50)`, us(n(`scale/decide_${m}_route_rules`).p50_ns));
const lists = [10, 1000, 10000].map((m) => n(`scale/decide_${m}_cidrs_and_permissions`).p50_ns);
const rules = [10, 1000, 10000].map((m) => n(`scale/decide_${m}_route_rules`).p50_ns);
const flat = Math.max(Math.max(...lists) / Math.min(...lists), Math.max(...rules) / Math.min(...rules));
row('scale: lists and rules, max/min', `${flat.toFixed(2)}×`, `flat within 2×: ${flat <= 2 ? 'met' : 'MISSED'}`);
row('size: Worker wasm raw / gzip -9', `${(sizes.worker.raw / 1024).toFixed(0)} KiB / ${sizes.worker.gzip} B`, `< 512 KiB gz: ${sizes.worker.gzip < 512 * 1024 ? 'met' : 'MISSED'}`);
row('size: browser wasm raw / gzip -9', `${(sizes.browser.raw / 1024).toFixed(0)} KiB / ${(sizes.browser.gzip / 1024).toFixed(0)} KiB`);
row('start: Worker wasm compile (Chromium V8, median)', `${workerCompileMs.toFixed(2)} ms`);
row('start: browser wasm compile / instantiate (Node, median)', `${wasm['start/browser_wasm_compile_ms'].toFixed(2)} / ${wasm['start/browser_wasm_instantiate_ms'].toFixed(3)} ms`);
// Isolate time per request (bench/profile.mjs): keyward beside the JS check and the pass-through,
// three ways (docs/benchmarks.md: how each is measured and why the first is the one that counts).
for (const [name, c] of Object.entries(profile.cases)) {
  const r = c.keyward_over_js;
  const v = (field) => `${c.keyward[field]} / ${c['js-gate'][field]} / ${c['pass-through'][field]} µs`;
  row(`isolate time (samples × tick), ${name}: keyward / JS check / pass-through`, `${v('isolate_us_per_request')} (${r.isolate}×)`, `≤ 1.0× the JS check: ${r.isolate <= 1 ? 'met' : 'MISSED'}`);
  row(`  same, timeDeltas summed (holds waits)`, `${v('us_per_request')} (${r.timedeltas}×)`);
  row(`  same set-up: keyward / JS check, both behind the assets router; both without it`, `${c.keyward.isolate_us_per_request} / ${c['js-gate with assets'].isolate_us_per_request} µs (${r.isolate_both_with_assets}×); ${c['keyward without assets'].isolate_us_per_request} / ${c['js-gate'].isolate_us_per_request} µs (${r.isolate_both_without_assets}×)`);
  // keyward with its check made free (bench/profile.mjs: the floor): what the rest of keyward costs.
  if (c['keyward floor']) row(`  floor: keyward with a free check / JS check`, `${c['keyward floor'].isolate_us_per_request} / ${c['js-gate'].isolate_us_per_request} µs (${c.floor_over_js.isolate}×)`);
  row(`  workerd CPU (/proc): keyward / without assets / JS check`, `${c.keyward.workerd_cpu_us_per_request} / ${c['keyward without assets'].workerd_cpu_us_per_request} / ${c['js-gate'].workerd_cpu_us_per_request} µs (${r.workerd_cpu}×, ${r.workerd_cpu_without_assets}×)`);
}
const warmKinds = profile.cases['allowed, warm key'].keyward.by_kind;
row('profile: keyward, allowed warm key, by kind', Object.entries(warmKinds).map(([k, v]) => `${k} ${(v * 100).toFixed(0)}%`).join(', '));

const w = [Math.max(...rows.map((r) => r[0].length)), Math.max(...rows.map((r) => r[1].length))];
console.log(`\n${'measure'.padEnd(w[0])}  ${'value'.padEnd(w[1])}  target`);
console.log(`${'-'.repeat(w[0])}  ${'-'.repeat(w[1])}  ------`);
for (const [a, b, c] of rows) console.log(`${a.padEnd(w[0])}  ${b.padEnd(w[1])}  ${c}`);
console.log(`\nwritten to bench-output/results.json`);

// scripts/bench.sh --table FILE (BENCH_TABLE): the same table as Markdown for docs/benchmarks.md,
// headed by when, on what and by which command it was measured.
if (process.env.BENCH_TABLE) {
  let commit = 'unknown commit';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    if (execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT }).toString().trim()) commit += ' (with uncommitted changes)';
  } catch { /* not a git checkout */ }
  const os = await import('node:os');
  const md = (cell) => cell.replace(/\|/g, '\\|').replace(/: met$/, ': **met**').replace(/: MISSED$/, ': **missed**');
  const lines = [
    `Measured by \`scripts/bench.sh\` at \`${commit}\`, ${results.when.slice(0, 16).replace('T', ' ')} UTC ` +
      `(${os.cpus().length} CPUs, ${os.arch()}, Node ${process.version}).`,
    '',
    '| measure | value | target |',
    '| --- | --- | --- |',
    ...rows.map(([a, b, c]) => `| ${md(a)} | ${md(b)} | ${md(c)} |`),
  ];
  writeFileSync(process.env.BENCH_TABLE, `${lines.join('\n')}\n`);
  console.log(`table written to ${process.env.BENCH_TABLE}`);
}
