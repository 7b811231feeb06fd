// Where a gated request's time goes inside workerd: a CPU profile of keyward under load, taken
// through wrangler dev's inspector (the DevTools protocol), summed by function (self time), and
// the isolate's CPU time per request. `node bench/profile.mjs js` profiles the hand-written
// JavaScript check instead, for comparison. Prints JSON.
import { spawn } from 'node:child_process';
import WebSocket from 'ws';
import { startOrigin } from '../tests/support/origin.mjs';
import path from 'node:path';
import { startKeyward, ROOT } from '../tests/support/keyward.mjs';
import { digest } from '../tests/support/keys.mjs';

const handWritten = process.argv[2] === 'js';

const origin = await startOrigin();
const kw = await startKeyward({ origin: origin.url });
const js = handWritten ? await startKeyward({ origin: origin.url, config: path.join(ROOT, 'bench/js-gate/wrangler.toml') }) : null;
let result = {};
let requests = 0;
try {
  const key = (await kw.admin('POST', '/api_keys', { api_key: { name: 'profile', permissions: ['users:read'] } })).body.data.api_key;
  if (js) await js.kv('key', 'put', `key:${digest(key)}`, (await kw.kv('key', 'get', `key:${digest(key)}`)).trim());
  const profiled = js ?? kw;
  const targets = await (await fetch(`http://127.0.0.1:${profiled.inspectorPort}/json`)).json();
  const target = targets.find((t) => /keyward/.test(t.title ?? '') || /keyward/.test(t.url ?? '')) ?? targets[0];
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  let id = 0;
  const pending = new Map();
  ws.on('message', (data) => {
    const msg = JSON.parse(data);
    if (msg.id && pending.has(msg.id)) { pending.get(msg.id)(msg); pending.delete(msg.id); }
  });
  const send = (method, params = {}) => new Promise((resolve) => { id += 1; pending.set(id, resolve); ws.send(JSON.stringify({ id, method, params })); });
  await send('Profiler.enable');
  await send('Profiler.setSamplingInterval', { interval: 100 });
  await send('Profiler.start');
  await new Promise((resolve, reject) => {
    const child = spawn('wrk', ['-t1', '-c4', '-d5s', '-H', `Authorization: Bearer ${key}`, `${profiled.url}/api/v2/projects/1/users`]);
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.on('exit', () => {
      requests = Number(/(\d+) requests in/.exec(out)?.[1]);
      if (/Non-2xx/.test(out)) reject(new Error(`requests were refused while profiling: ${out}`));
      resolve();
    });
    child.on('error', reject);
  });
  const { result: { profile } } = await send('Profiler.stop');
  ws.close();
  const byNode = new Map(profile.nodes.map((n) => [n.id, n]));
  const nameOf = (nodeId) => {
    const f = byNode.get(nodeId).callFrame;
    return `${f.functionName || '(anonymous)'}${f.url ? ` ${f.url.split('/').pop()}:${f.lineNumber}` : ''}`;
  };
  // workerd samples about every 1.5 ms whatever interval is asked for, so each sample stands for
  // the time since the previous one (its timeDelta), not for the requested interval.
  const self = new Map();
  let total = 0;
  profile.samples.forEach((nodeId, i) => {
    const us = profile.timeDeltas?.[i] ?? 0;
    const name = nameOf(nodeId);
    self.set(name, (self.get(name) ?? 0) + us);
    total += us;
  });
  const busy = total - (self.get('(idle)') ?? 0);
  const top = [...self].filter(([n]) => n !== '(idle)').sort((a, b) => b[1] - a[1]).slice(0, 15)
    .map(([name, us]) => ({ name, share_of_busy: busy ? +(us / busy).toFixed(3) : 0 }));
  // Sums by kind: the wasm module (keyward's core and the worker crate), its generated JS glue,
  // the runtime's own objects (fetch, Request, Response, Headers), GC and the rest.
  const kind = (name) => {
    if (name.startsWith('wasm-function') || name === 'wasm-to-js' || name === 'js-to-wasm') return name.startsWith('wasm-function') ? 'wasm code' : 'wasm/JS boundary';
    if (name.includes('shim.js')) return 'wasm-bindgen JS glue';
    if (name === '(garbage collector)') return 'garbage collector';
    if (name === '(program)') return 'runtime (program)';
    return 'runtime built-ins (fetch, Request, Response, Headers, ...)';
  };
  const kinds = {};
  for (const [name, us] of self) {
    if (name === '(idle)') continue;
    kinds[kind(name)] = +(((kinds[kind(name)] ?? 0) + us / busy)).toFixed(3);
  }
  // Isolate time per request: the non-idle samples' timeDeltas, over the requests completed.
  const cpuPerRequest = requests ? +(busy / requests).toFixed(1) : null;
  result = { requests, cpu_us_per_request: cpuPerRequest, samples: profile.samples.length, profiled_us: total, busy_share: +(busy / total).toFixed(3), by_kind: kinds, top };
} finally {
  if (js) await js.stop();
  await kw.stop();
  await origin.stop();
}
console.log(JSON.stringify(result));
