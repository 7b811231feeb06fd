// The headline figures of one `scripts/bench.sh` run, from what its steps wrote to bench-output/
// (results.json, limits.json, distance.json, distance-sim.json, control.json, import.json,
// first-answer.json): the
// README's "Figures" table and the rows the main table leaves out (rate limits, distance, the
// control plane, the CLI's import). Prints both as Markdown; with BENCH_TABLE=FILE (scripts/bench.sh
// --table FILE) also appends them to that file, after the main table bench/run.mjs wrote there.
// A figure a step did not write is "not measured", never a number.
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const read = (name) => {
  const file = path.join(ROOT, 'bench-output', name);
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : null;
};
const results = read('results.json');
const limits = read('limits.json');
const distance = read('distance.json');
const sim = read('distance-sim.json');
const control = read('control.json');
const imported = read('import.json');
const first = read('first-answer.json');

const NONE = 'not measured';
const fixed = (n, digits) => (typeof n === 'number' && Number.isFinite(n) ? n.toFixed(digits) : NONE);
const us = (ns) => (typeof ns === 'number' ? `${(ns / 1000).toFixed(2)} µs` : NONE);
const grouped = (n) => (typeof n === 'number' ? Math.round(n).toLocaleString('en-US').replace(/,/g, ' ') : NONE);
const signed = (n, digits = 2) => (typeof n === 'number' ? `${n >= 0 ? '+' : '−'}${Math.abs(n).toFixed(digits)}` : NONE);
const verdict = (ok, target) => (ok === null ? target : `${target}: **${ok ? 'met' : 'missed'}**`);
const both = (...xs) => (xs.every((x) => typeof x === 'number') ? xs : null);

const native = results?.native ?? {};
const wasm = results?.wasm ?? {};
const gate = results?.gate ?? {};
const cases = results?.profile?.cases ?? {};
const full = native['native/keyward_full_check']?.p50_ns;
const cedar = native['native/cedar']?.p50_ns;
const wasmFull = wasm['wasm/keyward_full_check']?.p50_ns;
const p50 = (name) => gate[name]?.p50_ms;
const rps = (name) => gate[name]?.rps;
const added = both(p50('gate/keyward_warm'), p50('gate/passthrough'));
const ratio = both(rps('gate/keyward_warm'), rps('gate/hand_written_js'));
const scale = ['1', '1000', '100000'].map((n) => p50(`scale/gate_cache_miss_${n}_keys_stored`));
const flat = both(...scale);
const warm = cases['allowed, warm key'];
const isolate = both(warm?.keyward?.isolate_us_per_request, warm?.['js-gate']?.isolate_us_per_request);
const row = (name) => distance?.rows?.find((r) => r.case === name)?.added_p50_ms;
const simRow = (design) => sim?.rows?.find((r) => r.design === design);
const propagation = control?.propagation;
const worker = results?.sizes?.worker?.gzip;
const firstRow = (name) => first?.rows?.find((r) => r.worker === name);

const headline = [
  ['whole check natively (parse, checksum, SHA-256, decide), p50', us(full), ''],
  ['whole check in wasm (Node/V8), p50', us(wasmFull), verdict(typeof wasmFull === 'number' ? wasmFull < 2000 : null, '< 2 µs')],
  ['cedar-policy on the same decision ÷ keyward, natively', both(full, cedar) ? `${Math.round(cedar / full)}×` : NONE, verdict(both(full, cedar) ? cedar / full >= 10 : null, '≥ 10×')],
  ['gate p50, 1 connection: pass-through / keyward / hand-written JS check', `${p50('gate/passthrough') ?? NONE} / ${p50('gate/keyward_warm') ?? NONE} / ${p50('gate/hand_written_js') ?? NONE} ms`, ''],
  ["keyward's added p50 over a pass-through Worker", added ? `${(added[0] - added[1]).toFixed(2)} ms` : NONE, verdict(added ? added[0] - added[1] < 0.5 : null, '< 0.5 ms')],
  ['req/s at 16 connections, keyward ÷ JS check', ratio ? (ratio[0] / ratio[1]).toFixed(2) : NONE, verdict(ratio ? ratio[0] / ratio[1] >= 1 : null, '≥ 1')],
  ['gate with 1 / 1 000 / 100 000 keys stored, cache miss, p50', `${scale.map((s) => s ?? NONE).join(' / ')} ms`, verdict(flat ? Math.max(...flat) / Math.min(...flat) <= 2 : null, 'flat within 2×')],
  ['isolate time per allowed request (warm key): keyward / JS check', isolate ? `${isolate[0]} / ${isolate[1]} µs (${(isolate[0] / isolate[1]).toFixed(2)}×)` : NONE, verdict(isolate ? isolate[0] <= isolate[1] : null, '≤ 1.0×')],
  [`control plane and Limiters ${distance?.delay_ms ?? 150} ms away: added p50, busy isolate / limited key / idle isolate / idle with \`FRESHNESS=bounded\``, distance ? `${signed(row('busy'))} / ${signed(row('limited'))} / ${signed(row('idle alone'))} / ${signed(row('bounded'))} ms` : NONE, ''],
  [`simulated fleet (${sim?.locations ?? '?'} locations × ${sim?.isolates ?? '?'} isolates): control-plane reads/s, old design / now`, sim ? `${grouped(simRow('old')?.control_reads_per_s)} / ${grouped(simRow('strict')?.control_reads_per_s)}` : NONE, ''],
  ['a change honoured at another location, p50 / p99', propagation ? `${propagation.p50_ms} / ${propagation.p99_ms} ms` : NONE, verdict(propagation ? propagation.p99_ms < 1200 : null, 'p99 < 1 200 ms')],
  ['100 000 keys: batch push / `keyward import` (keys/s)', control && imported ? `${fixed(control.batch?.seconds, 1)} s / ${fixed(imported.seconds, 1)} s (${grouped(imported.per_second)}/s)` : NONE, verdict(control && imported ? control.batch.seconds < 60 && imported.per_second >= 1000 : null, '< 60 s / ≥ 1 000/s')],
  ['req/s at 16 connections of one key: exact rate limit / no limit', limits ? `${grouped(limits.one_limited_key_rps)} / ${grouped(limits.one_plain_key_rps)}` : NONE, ''],
  ['a new isolate\'s first answer (wrangler dev started afresh), added over a pass-through Worker: keyward allowed request / keyward without a key / JS check', first ? `${signed(firstRow('keyward')?.added_ms, 0)} / ${signed(firstRow('keyward, no key sent')?.added_ms, 0)} / ${signed(firstRow('JS check')?.added_ms, 0)} ms (pass-through ${grouped(firstRow('pass-through')?.first_answer_ms)} ms from spawn)` : NONE, ''],
  ['Worker wasm, gzip -9', typeof worker === 'number' ? `${grouped(worker)} B` : NONE, verdict(typeof worker === 'number' ? worker < 512 * 1024 : null, '< 512 KiB')],
];

const table = (rows) => ['| measure | value | target |', '| --- | --- | --- |', ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
const text = `\n### Headline (the README's table)\n\n${table(headline)}\n`;
console.log(text);
if (process.env.BENCH_TABLE) {
  appendFileSync(process.env.BENCH_TABLE, text);
  console.log(`headline appended to ${process.env.BENCH_TABLE}`);
}
