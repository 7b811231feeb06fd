// Starts the built Worker under `wrangler dev` (real workerd, real local KV on disk) for a test:
// a free port, its own inspector port, a fresh KV directory, an origin, an admin token.
// Run scripts/build.sh first; the harness never builds, so every test uses the same artefact.
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WRANGLER = path.join(ROOT, 'node_modules/.bin/wrangler');
const run = promisify(execFile);

export async function freePort(host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * @param {{origin: string, vars?: Record<string,string>, adminToken?: string, persistDir?: string, config?: string, direct?: boolean}} options
 * `direct`: also find the address where workerd itself serves the Worker (wrangler dev puts a
 * proxy Worker in front, which answers 503 to any answer given before the request body was
 * read to the end); returned as `directUrl`. It needs wrangler's debug log, so it is opt-in.
 * `probe`: the request that says the Worker is up (`{path, headers, every}`; by default
 * `/_keyward/v1/ping` every 200 ms); the time from spawning wrangler to the Worker's first answer
 * to it is returned as `readyMs`, and that answer's status as `readyStatus` (bench/first-answer.mjs).
 */
export async function startKeyward(options) {
  // A free port can be taken between finding it and wrangler binding it (wrangler and workerd
  // open ports of their own too): start again on fresh ports, at most three times.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(options);
    } catch (e) {
      if (attempt >= 3 || !/Address already in use|EADDRINUSE/.test(e.message)) throw e;
    }
  }
}

async function startOnce({ origin, vars = {}, adminToken = 'test-admin-token-' + Math.random().toString(36).slice(2), persistDir, config, env = {}, direct = false, probe = {} } = {}) {
  const { path: probePath = '/_keyward/v1/ping', headers: probeHeaders = {}, every = 200 } = probe;
  const port = await freePort();
  const inspectorPort = await freePort();
  mkdirSync(path.join(ROOT, 'test-output'), { recursive: true });
  const persist = persistDir ?? mkdtempSync(path.join(ROOT, 'test-output', 'kv-'));
  // A dev registry of its own unless the caller shares one (two "locations" must): wrangler dev
  // reloads its runtime whenever the registry changes, so another wrangler dev starting or
  // stopping anywhere on the machine would cut this one's requests short.
  if (!env.WRANGLER_REGISTRY_PATH) env = { ...env, WRANGLER_REGISTRY_PATH: mkdtempSync(path.join(ROOT, 'test-output', 'registry-')) };
  const args = [
    'dev', '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', String(inspectorPort),
    '--persist-to', persist, '--log-level', direct ? 'debug' : process.env.KEYWARD_WRANGLER_LOG ?? 'warn', '--show-interactive-dev-session=false',
    '--var', `ORIGIN_URL:${origin}`, '--var', `ADMIN_TOKEN:${adminToken}`,
  ];
  for (const [name, value] of Object.entries(vars)) args.push('--var', `${name}:${value}`);
  if (config) args.push('--config', config);
  const spawnedAt = performance.now();
  const child = spawn(WRANGLER, args, {
    cwd: ROOT,
    env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: 'true', NO_COLOR: '1', FORCE_COLOR: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  // The log, cut back to its last 4 MB once it passes 8 MB: wrangler's debug log (`direct`) writes
  // lines for every request, and a long load run would outgrow a string.
  let log = '';
  const append = (d) => {
    log += d;
    if (log.length > 8_000_000) log = log.slice(-4_000_000);
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  let exited = null;
  child.on('exit', (code) => { exited = code; });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  let readyMs;
  let readyStatus;
  for (;;) {
    if (exited !== null) throw new Error(`wrangler dev exited with ${exited}:\n${log}`);
    if (Date.now() > deadline) {
      process.kill(-child.pid, 'SIGKILL');
      throw new Error(`wrangler dev did not answer within 60 s:\n${log}`);
    }
    try {
      const r = await fetch(`${url}${probePath}`, { headers: probeHeaders, signal: AbortSignal.timeout(2000) });
      const body = await r.arrayBuffer();
      // An empty 404 is wrangler's, not the Worker's (which always answers with a body): seen once
      // on a clean clone as the answer to the first request after start. Not up yet.
      if (r.status === 404 && body.byteLength === 0) throw new Error('not up yet');
      readyMs = performance.now() - spawnedAt;
      readyStatus = r.status;
      break;
    } catch {
      await sleep(every);
    }
  }
  let directUrl;
  if (direct) {
    const ports = [...log.matchAll(/"userWorkerUrl":\{"protocol":"http:","hostname":"127\.0\.0\.1","port":"(\d+)"/g)];
    if (!ports.length) throw new Error(`no userWorkerUrl in wrangler's debug log:\n${log.slice(-2000)}`);
    directUrl = `http://127.0.0.1:${ports[ports.length - 1][1]}`;
  }
  const stop = async () => {
    if (exited !== null) return;
    try { process.kill(-child.pid, 'SIGTERM'); } catch { /* already gone */ }
    for (let i = 0; i < 50 && exited === null; i++) await sleep(100);
    if (exited === null) try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
  };
  return {
    url, directUrl, port, inspectorPort, persist, adminToken, log: () => log, stop, readyMs, readyStatus,
    /** The process group of wrangler and its workerd (bench/profile.mjs reads workerd's CPU time). */
    group: child.pid,
    /** A management call with the admin token (or `token`); returns {status, body, headers}. */
    admin: (method, p, body, token = adminToken) => call(url, method, `/_keyward/v1${p}`, body, { authorization: `Bearer ${token}` }),
    /** Any request; returns {status, body (parsed JSON when it is), headers}. */
    request: (method, p, { headers = {}, body, localAddress } = {}) => call(url, method, p, body, headers, localAddress),
    /** Runs `wrangler kv ...` against this instance's local KV (e.g. to corrupt a record). */
    kv: (...kvArgs) => kvCommand(persist, config, ...kvArgs),
    /** Every byte of the local KV store, to check that no plaintext key was ever written. */
    storedBytes: () => readTree(persist),
  };
}

/**
 * keyward's wrangler.toml with its paths made absolute, so that a copy written anywhere (under
 * test-output/) runs the same Worker; `main`: another entry module in place of keyward's.
 */
export function keywardToml(main) {
  return readFileSync(path.join(ROOT, 'wrangler.toml'), 'utf8')
    .replace(/^main = "(.*)"$/m, (_, m) => `main = "${path.resolve(main ?? path.join(ROOT, m))}"`)
    .replace(/^directory = "www"$/m, `directory = "${path.join(ROOT, 'www')}"`);
}

/**
 * A wrangler.toml for a second "location": its own name, isolate and KV, with the CONTROL binding
 * pointing at the first instance's Durable Object (script "keyward") through the dev registry.
 */
export function secondLocationConfig() {
  const toml = keywardToml()
    .replace(/^name = "keyward"$/m, 'name = "keyward-location-b"')
    .replace('class_name = "ControlPlane" }', 'class_name = "ControlPlane", script_name = "keyward" }')
    .replace('class_name = "Limiter" }', 'class_name = "Limiter", script_name = "keyward" }')
    .replace(/\[\[migrations\]\][^[]*/gm, '');
  if (!toml.includes('script_name = "keyward"')) throw new Error('wrangler.toml: the CONTROL binding was not found');
  mkdirSync(path.join(ROOT, 'test-output'), { recursive: true });
  const file = path.join(mkdtempSync(path.join(ROOT, 'test-output', 'loc-')), 'wrangler.toml');
  writeFileSync(file, toml);
  return file;
}

/** Runs `wrangler kv ...` against the local KV kept in `persist` (a running instance's or not). */
export async function kvCommand(persist, config, ...kvArgs) {
  const { stdout } = await run(WRANGLER, ['kv', ...kvArgs, '--binding', 'KEYS', '--local', '--persist-to', persist, ...(config ? ['--config', config] : [])], {
    maxBuffer: 64 * 1024 * 1024,
    cwd: ROOT, env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: 'true', NO_COLOR: '1' },
  });
  return stdout;
}

function readTree(dir) {
  const parts = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) parts.push(readTree(p));
    else parts.push(readFileSync(p).toString('latin1'));
  }
  return parts.join('\n');
}

/** HTTP with node:http so a test can choose the local address (the client IP under wrangler dev). */
export function call(base, method, p, body, headers = {}, localAddress) {
  const url = new URL(p, base);
  let payload;
  if (body !== undefined) {
    payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers = { 'content-type': 'application/json', ...headers };
  }
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, localAddress, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed = text;
        try { parsed = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, body: parsed, text, headers: res.headers });
      });
    });
    req.on('error', reject);
    req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${p} timed out`)));
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** Polls `probe` every `every` ms until it returns true; the milliseconds it took, or throws. */
export async function within(ms, probe, what, every = 25) {
  const start = Date.now();
  for (;;) {
    if (await probe()) return Date.now() - start;
    if (Date.now() - start > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, every));
  }
}
