// How the wasm check's cost moves as one isolate calls it more: V8 runs each wasm function as
// baseline (Liftoff) code until it has run a budget of its own code, then as optimised code
// (docs/benchmarks.md: "A young isolate runs keyward's wasm as baseline code").
//
// keyward runs under `wrangler dev` behind a wrapper entry that, for a request carrying
// `x-bench-loop: N`, calls gate_check N times on that request's facts before answering it as
// usual. Each batch is one such request, timed from here against the same request without the
// loop just before it; the difference divided by N is one batch's µs per call. The first batches
// run baseline code, later ones more and more optimised code. Wall time, so noisy: read the trend.
//
// BENCH_TIERUP_CALLS (per batch, 1000) and BENCH_TIERUP_BATCHES (30). Prints one line per ten batches.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startOrigin } from '../tests/support/origin.mjs';
import { keywardToml, startKeyward, ROOT } from '../tests/support/keyward.mjs';

const CALLS = Number(process.env.BENCH_TIERUP_CALLS ?? 1000);
const BATCHES = Number(process.env.BENCH_TIERUP_BATCHES ?? 30);
const dir = mkdtempSync(path.join(ROOT, 'test-output', 'tierup-'));
const entry = path.join(dir, 'entry.mjs');
writeFileSync(entry, `import keyward from ${JSON.stringify(path.join(ROOT, 'src/entry.mjs'))};
import Complete from ${JSON.stringify(path.join(ROOT, 'build/index.js'))};
export { ControlPlane, Limiter } from ${JSON.stringify(path.join(ROOT, 'build/index.js'))};
const { gate_check } = Complete.prototype;
export default {
  async fetch(request, env, ctx) {
    const calls = Number(request.headers.get('x-bench-loop') ?? 0);
    if (calls > 0) {
      const url = new URL(request.url);
      const facts = \`\${request.method}\\n\${url.pathname}\\n\\n=\${request.headers.get('authorization')}\\n\\n\`;
      const now = Date.now();
      for (let i = 0; i < calls; i++) gate_check(facts, undefined, 0, now);
    }
    return keyward.fetch(request, env, ctx);
  },
};
`);
const config = path.join(dir, 'wrangler.toml');
writeFileSync(config, keywardToml(entry));

const origin = await startOrigin();
const kw = await startKeyward({ origin: origin.url, config });
try {
  await kw.admin('PUT', '/policy', JSON.parse(readFileSync(path.join(ROOT, 'config/default-policy.json'), 'utf8')));
  const created = await kw.admin('POST', '/api_keys', { api_key: { name: 'tierup', permissions: ['users:read'] } });
  const key = created.body.data.api_key;
  const once = async (calls) => {
    const t = performance.now();
    const r = await fetch(`${kw.url}/api/v2/projects/1/users`, { headers: { authorization: `Bearer ${key}`, 'x-bench-loop': String(calls) } });
    await r.arrayBuffer();
    if (r.status !== 200) throw new Error(`expected 200, got ${r.status}`);
    return performance.now() - t;
  };
  for (let i = 0; i < 5; i++) await once(0);
  let line = [];
  for (let b = 1; b <= BATCHES; b++) {
    const without = await once(0);
    const withLoop = await once(CALLS);
    line.push((((withLoop - without) * 1000) / CALLS).toFixed(1));
    if (line.length === 10 || b === BATCHES) {
      console.log(`gate_check, calls ${(b - line.length) * CALLS + 1}–${b * CALLS}: µs per call, each batch of ${CALLS}: ${line.join(' ')}`);
      line = [];
    }
  }
} finally {
  await kw.stop();
  await origin.stop();
}
