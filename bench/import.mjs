// The CLI's import rate: `keyward import` of N generated keys (default 100 000, JSONL, plaintext
// keys hashed by the CLI) into the built Worker under `wrangler dev`, through POST /keys/batch.
// Prints one line with the rate and writes bench-output/import.json.
// Usage: node bench/import.mjs [N]
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startOrigin } from '../tests/support/origin.mjs';
import { startKeyward, ROOT } from '../tests/support/keyward.mjs';
import { makeKey } from '../tests/support/keys.mjs';

const count = Number(process.argv[2] ?? 100_000);
const BIN = process.env.KEYWARD_BIN ?? path.join(ROOT, 'target/release/keyward');
mkdirSync(path.join(ROOT, 'bench-output'), { recursive: true });
const dir = mkdtempSync(path.join(ROOT, 'bench-output', 'import-'));
const file = path.join(dir, 'keys.jsonl');
const lines = [];
for (let i = 0; i < count; i++) {
  lines.push(JSON.stringify({ key: makeKey('kw_live'), name: `imported ${i}`, permissions: ['users:read', 'events:create'], metadata: { n: i } }));
}
writeFileSync(file, lines.join('\n') + '\n');

const origin = await startOrigin();
const kw = await startKeyward({ origin: origin.url });
const run = (args) => new Promise((resolve, reject) => {
  const started = process.hrtime.bigint();
  const child = spawn(BIN, args, { env: { PATH: process.env.PATH, KEYWARD_URL: kw.url, KEYWARD_TOKEN: kw.adminToken }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.on('error', reject);
  child.on('close', (code) => resolve({ code, out, seconds: Number(process.hrtime.bigint() - started) / 1e9 }));
});
try {
  console.error(`bench: keyward import of ${count} keys`);
  const first = await run(['import', file, '--json']);
  if (first.code !== 0) throw new Error(`keyward import exited with ${first.code}: ${first.out}`);
  const summary = JSON.parse(first.out);
  console.error('bench: the same import again (everything unchanged)');
  const rerun = await run(['import', file, '--json']);
  const again = JSON.parse(rerun.out);
  const result = {
    records: count,
    seconds: Number(first.seconds.toFixed(2)),
    per_second: Math.round(count / first.seconds),
    imported: summary.imported, unchanged: summary.unchanged, failed: summary.failed,
    rerun_seconds: Number(rerun.seconds.toFixed(2)),
    rerun_unchanged: again.unchanged,
  };
  writeFileSync(path.join(ROOT, 'bench-output/import.json'), JSON.stringify(result, null, 1));
  const r = result;
  console.log(`keyward import: ${r.records} keys in ${r.seconds} s = ${r.per_second} keys/s `
    + `(imported=${r.imported} unchanged=${r.unchanged} failed=${r.failed}; the same import again: `
    + `${r.rerun_seconds} s, unchanged=${r.rerun_unchanged}); target >= 1000 keys/s, 100 000 in < 100 s`);
} finally {
  await kw.stop();
  await origin.stop();
  rmSync(dir, { recursive: true, force: true }); // the generated plaintext keys
}
