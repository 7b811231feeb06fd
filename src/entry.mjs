// keyward's Worker entry (wrangler.toml `main`): owns `fetch`, answers the common gated request on
// the fast path (one synchronous call into the wasm, src/edge/fast.rs) and hands everything else
// to the complete path, the worker crate's `fetch` (src/edge/mod.rs: the gate, the management
// API, the console). Both paths use the same in-wasm cache, policy and change-feed state, and give
// the same answers; the complete path is the reference (README, Architecture).
import Complete from '../build/index.js';

// worker-build puts the crate's extra #[wasm_bindgen] functions (src/edge/fast.rs) on the
// prototype of its entrypoint class; none of them uses `this`.
const {
  gate_background, gate_check, gate_configure, gate_constants, gate_digest, gate_failed, gate_load,
  gate_retry_after, gate_text, gate_unknown_read,
} = Complete.prototype;

// Durable Object classes exported by the crate (build/index.js) must be exported from here too.
// Add each new one to this line and to wrangler.toml.
export { ControlPlane, Limiter } from '../build/index.js';

// The answer word of gate_check / gate_load / gate_failed (src/edge/fast.rs).
const COMPLETE = 0;
const FORWARD = 1;
const DENY = 2;
const NEED_RECORD = 3;
const NEED_BODY = 4;
const AGAIN = 5;
const BACKGROUND = 1 << 4;
const UNKNOWN_READ = 1 << 5;
const STRIP_AUTHORIZATION = 1 << 6;
const STRIP_X_API_KEY = 1 << 7;
const KIND = 7;
const REFRESH = 1 << 16;
const REFRESH_REFUSAL = 1 << 3;
// gate_failed's reasons (and gate_check's body_error).
const ORIGIN_UNREACHABLE = 0;
const ORIGIN_TIMEOUT = 1;
const UNREADABLE = 2;
const TOO_LARGE = 3;
// Read once per isolate: vars do not change while it lives.
let constants = null;
let originBase = null;
let timeoutMs = 0;
// Test harnesses only (KEYWARD_DEBUG, never set in production): a request carrying this header
// takes the complete path, so tests/e2e/fastpath.test.mjs can compare both paths' answers.
const COMPLETE_PATH_HEADER = 'x-keyward-debug-complete-path';
let debug = false;
// A forward's X-Keyward-* values by slot (gate_check says when a slot must be fetched anew).
const slots = [];
// A refusal's body by slot, likewise.
const refusalTexts = [];

function setup(env) {
  const c = JSON.parse(gate_constants());
  timeoutMs = gate_configure(env);
  originBase = typeof env.ORIGIN_URL === 'string' ? env.ORIGIN_URL.replace(/\/+$/, '') : null;
  debug = env.KEYWARD_DEBUG !== undefined;
  constants = c;
}

// The complete path: the worker crate's entry, constructed as workerd would construct it.
function complete(request, env, ctx) {
  return new Complete(ctx, env).fetch(request);
}

// Bodies the gate inspects, read as gate.rs reads them: chunk by chunk, refused at the first
// chunk past the bound (a declared length past it is refused before any is read), and what follows
// a refusal read and dropped up to MAX_DISCARDED_BODY so that the answer goes back in good order.
const MAX_INSPECTED_BODY = 256 * 1024;
const MAX_DISCARDED_BODY = 1024 * 1024;

/** The body's bytes, or why it is refused (TOO_LARGE, UNREADABLE). */
async function readInspected(request, declared) {
  if (request.body === null) return new Uint8Array(0);
  try {
    const reader = request.body.getReader();
    const length = /^\d+$/.test(declared ?? '') ? Number(declared) : 0;
    if (length > MAX_INSPECTED_BODY) {
      await discard(reader, MAX_DISCARDED_BODY);
      return TOO_LARGE;
    }
    const chunks = [];
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (size + value.byteLength > MAX_INSPECTED_BODY) {
        await discard(reader, MAX_DISCARDED_BODY - value.byteLength);
        return TOO_LARGE;
      }
      chunks.push(value);
      size += value.byteLength;
    }
    if (chunks.length === 1) return chunks[0];
    const bytes = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) { bytes.set(c, at); at += c.byteLength; }
    return bytes;
  } catch {
    return UNREADABLE;
  }
}

async function discard(reader, budget) {
  let left = budget;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      left -= value.byteLength;
      if (left < 0) break;
    }
  } catch { /* abandoned */ }
  reader.releaseLock();
}

// A refusal's headers, built once: the Response copies them.
let refusalHeaders = null;
let unauthorizedHeaders = null;

function refusal(answer) {
  const status = answer >>> 16;
  if (refusalHeaders === null) {
    refusalHeaders = new Headers(constants.headers);
    unauthorizedHeaders = new Headers(constants.headers);
    unauthorizedHeaders.set('www-authenticate', constants.unauthorized['www-authenticate']);
  }
  let headers = status === 401 ? unauthorizedHeaders : refusalHeaders;
  if (status === 429) {
    const seconds = gate_retry_after();
    if (seconds !== undefined) {
      headers = new Headers(headers);
      headers.set('retry-after', String(seconds));
    }
  }
  // The body, kept per slot: gate_check says when it must be fetched anew.
  const slot = (answer >>> 8) & 255;
  let text = refusalTexts[slot];
  if (answer & REFRESH_REFUSAL) {
    text = gate_text();
    refusalTexts[slot] = text;
  }
  return new Response(text, { status, headers });
}

export default {
  async fetch(request, env, ctx) {
    if (constants === null) setup(env);
    const h = request.headers;
    const url = request.url;
    // The URL as workerd serialised it: path from the first '/' after the host, query after '?'.
    const start = url.indexOf('/', url.indexOf('//') + 2);
    const q = url.indexOf('?', start);
    const path = q < 0 ? url.slice(start) : url.slice(start, q);
    const query = q < 0 ? undefined : url.slice(q + 1);
    // Browsers (CORS), method overrides and unknown deployments take the complete path.
    if (originBase === null || h.has('origin') || (debug && h.has(COMPLETE_PATH_HEADER))) return complete(request, env, ctx);
    for (const name of constants.override_headers) if (h.has(name)) return complete(request, env, ctx);
    const method = request.method;
    const authorization = h.get('authorization');
    const xApiKey = h.get('x-api-key');
    const ipHeader = h.get('cf-connecting-ip');
    const ip = ipHeader ?? undefined;
    // One string for gate_check: a line each, an optional value as '' (absent) or '=' + value.
    const facts = `${method}\n${path}\n${query === undefined ? '' : `=${query}`}\n${authorization === null ? '' : `=${authorization}`}\n${xApiKey === null ? '' : `=${xApiKey}`}\n${ipHeader === null ? '' : `=${ipHeader}`}`;
    const now = Date.now();
    let body;
    let bodyRead = false;
    let bodyError = 0;
    let answer = gate_check(facts, undefined, 0, now);
    let flags = answer & BACKGROUND;
    for (let round = 0; round < 4; round++) {
      const kind = answer & KIND;
      if (kind === NEED_RECORD) {
        const digest = gate_digest();
        let text;
        try {
          text = await env.KEYS.get(`key:${digest}`);
        } catch {
          answer = COMPLETE;
          break;
        }
        answer = gate_load(digest, text ?? undefined, ip, now);
        if ((answer & KIND) !== AGAIN) break;
      } else if (kind === NEED_BODY) {
        const read = await readInspected(request, h.get('content-length'));
        if (typeof read === 'number') {
          bodyError = read;
        } else {
          body = read;
          bodyRead = request.body !== null;
        }
      } else if (kind !== AGAIN) {
        break;
      }
      answer = gate_check(facts, body, bodyError, now);
      flags |= answer & BACKGROUND;
    }
    if (flags & BACKGROUND) ctx.waitUntil(gate_background(env));
    const kind = answer & KIND;
    if (kind === DENY) {
      if (answer & UNKNOWN_READ) ctx.waitUntil(gate_unknown_read(env, ip));
      return refusal(answer);
    }
    if (kind !== FORWARD) {
      // The body was read for the check: the complete path gets a request that still has it.
      if (bodyError !== 0) return refusal(gate_failed(bodyError, 0));
      return complete(bodyRead ? new Request(request, { body }) : request, env, ctx);
    }
    // The keyward headers of this key: kept per slot, fetched when the slot changed hands.
    const slot = (answer >>> 8) & 255;
    let info = slots[slot];
    if (answer & REFRESH) {
      info = gate_text().split('\n');
      slots[slot] = info;
    }
    const [id, type, profile] = info;
    // The client's headers less the credential and this Worker's Host; any X-Keyward-* the client
    // made up is replaced (set replaces every value) or dropped.
    const forwarded = new Headers(h);
    forwarded.delete('host');
    if (answer & STRIP_AUTHORIZATION) forwarded.delete('authorization');
    if (answer & STRIP_X_API_KEY) forwarded.delete('x-api-key');
    forwarded.set('x-keyward-key-id', id);
    forwarded.set('x-keyward-key-type', type);
    if (profile !== undefined) forwarded.set('x-keyward-profile-id', profile);
    else forwarded.delete('x-keyward-profile-id');
    // Set only by the complete path, for keys with credits (which never come this way).
    forwarded.delete('x-keyward-credits-remaining');
    const init = { method, headers: forwarded, redirect: 'manual' };
    if (method !== 'GET' && method !== 'HEAD') {
      if (body !== undefined) init.body = body;
      else if (request.body !== null) init.body = request.body;
    }
    // The wait for the origin's answer (its status and headers) is bounded; never retried. workerd
    // ties a fetch's signal to the wait for the answer only: a body that started in time streams
    // as long as it takes (tests/e2e/hardening.test.mjs holds both). One native timer, no closure.
    const signal = AbortSignal.timeout(timeoutMs);
    init.signal = signal;
    try {
      return await fetch(query ? `${originBase}${path}?${query}` : `${originBase}${path}`, init);
    } catch {
      return refusal(gate_failed(signal.aborted ? ORIGIN_TIMEOUT : ORIGIN_UNREACHABLE, timeoutMs));
    }
  },
};
