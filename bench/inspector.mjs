// The inspector of a Worker under `wrangler dev` (tests/support/keyward.mjs gives each its own
// port), with the CPU profiler enabled: `send(method, params)` answers with the reply message.
import WebSocket from 'ws';

export async function inspector(worker) {
  const targets = await (await fetch(`http://127.0.0.1:${worker.inspectorPort}/json`)).json();
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
  return { send, close: () => ws.close() };
}
