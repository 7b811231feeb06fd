// keyward's Worker entry (wrangler.toml `main`): owns `fetch`, answers the common gated request on
// the fast path (one synchronous call into the wasm, src/edge/fast.rs) and hands everything else
// to the complete path, the worker crate's `fetch` (src/edge/mod.rs: the gate, the management
// API, the console). Both paths use the same in-wasm cache, policy and change-feed state, and give
// the same answers; the complete path is the reference (docs/architecture.md).
import Complete from '../build/index.js';

// worker-build puts the crate's extra #[wasm_bindgen] functions (src/edge/fast.rs) on the
// prototype of its entrypoint class; none of them uses `this`.
const {
  gate_background, gate_body, gate_check, gate_configure, gate_constants, gate_digest, gate_failed, gate_load,
  gate_retry_after, gate_text, gate_token_id, gate_unknown_read,
} = Complete.prototype;

// How many arguments this entry passes to each of those functions. A build/ made from other
// sources than this entry (not rebuilt after a change) would take them in other places without
// an error: a stale build seen once put `now` where the body goes, so that every cached record had
// expired at once. The Worker refuses to start on one instead (scripts/build.sh makes both).
const ARGUMENTS = {
  gate_background: 1, gate_body: 3, gate_check: 4, gate_configure: 1, gate_constants: 0, gate_digest: 0,
  gate_failed: 2, gate_load: 4, gate_retry_after: 0, gate_text: 0, gate_token_id: 0, gate_unknown_read: 2,
};
for (const [name, count] of Object.entries(ARGUMENTS)) {
  const fn = Complete.prototype[name];
  if (typeof fn !== 'function' || fn.length !== count) {
    throw new Error(`keyward: build/ does not match src/entry.mjs (${name} takes ${typeof fn === 'function' ? fn.length : 'no'} arguments, the entry passes ${count}): run scripts/build.sh`);
  }
}

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
// On a forward: the credential is a token (gate_token_id gives its X-Keyward-Token-Id).
const TOKEN = 1 << 17;
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
// The digest of a key whose record must be read, by slot, likewise.
const digests = [];

/**
 * What wasm left for the entry, kept in `kept` per slot (the answer's bits 8 to 15): when the
 * answer has `refresh`, the slot changed hands and `fetch` takes the new value from wasm.
 */
function held(kept, answer, refresh, fetch) {
  const slot = (answer >>> 8) & 255;
  if (answer & refresh) kept[slot] = fetch();
  return kept[slot];
}

/** A forward's keyward headers, as gate_text gives them: id, type and (if any) profile. */
function forwardInfo() {
  return gate_text().split('\n');
}

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

// Bodies the gate inspects, read as gate.rs reads them: never more than the bound plus one byte
// kept, refused as soon as more arrives (a declared length past it is refused before any is read),
// and what follows a refusal read and dropped up to MAX_DISCARDED_BODY so that the answer goes
// back in good order.
const MAX_INSPECTED_BODY = 256 * 1024;
const MAX_DISCARDED_BODY = 1024 * 1024;
// The first buffer for a body that declares no length (chunked); it doubles as more arrives.
const FIRST_BUFFER = 16 * 1024;
const NO_BODY = new Uint8Array(0);

/**
 * The body's bytes, or why it is refused (TOO_LARGE, UNREADABLE).
 *
 * A body framed by its Content-Length alone is exactly that long (the runtime reads no more): one
 * `arrayBuffer()`. Any other (chunked: `Transfer-Encoding` wins over a Content-Length, which may
 * then lie) is read into one buffer with a BYOB reader, sized by the declared length plus one byte
 * so that a body as long as it says takes one read and a longer one shows at once; the buffer
 * grows, up to the bound plus one byte, only for a body that sends more than it declared.
 */
async function readInspected(request, headers) {
  try {
    const declared = headers.get('content-length');
    const length = declared !== null && /^\d+$/.test(declared) ? Number(declared) : -1;
    if (length >= 0 && length <= MAX_INSPECTED_BODY && !headers.has('transfer-encoding')) {
      // Nothing to read (the stream is not even made): NO_BODY, the request left as it came.
      if (length === 0) return NO_BODY;
      const bytes = new Uint8Array(await request.arrayBuffer());
      return bytes.byteLength <= MAX_INSPECTED_BODY ? bytes : TOO_LARGE;
    }
    const stream = request.body;
    if (stream === null) return NO_BODY;
    const reader = stream.getReader({ mode: 'byob' });
    if (length > MAX_INSPECTED_BODY) {
      await discard(reader, MAX_DISCARDED_BODY);
      return TOO_LARGE;
    }
    let buffer = new ArrayBuffer(length < 0 ? FIRST_BUFFER : length + 1);
    let filled = 0;
    for (;;) {
      const room = buffer.byteLength - filled;
      // Resolves once `room` bytes came, or with fewer when the stream ended.
      const { value } = await reader.readAtLeast(room, new Uint8Array(buffer, filled, room));
      if (value === undefined) break;
      buffer = value.buffer;
      filled += value.byteLength;
      if (value.byteLength < room) break;
      if (filled > MAX_INSPECTED_BODY) {
        await discard(reader, MAX_DISCARDED_BODY - value.byteLength);
        return TOO_LARGE;
      }
      const grown = new Uint8Array(Math.min(Math.max(2 * filled, FIRST_BUFFER), MAX_INSPECTED_BODY + 1));
      grown.set(new Uint8Array(buffer, 0, filled));
      buffer = grown.buffer;
    }
    return new Uint8Array(buffer, 0, filled);
  } catch {
    return UNREADABLE;
  }
}

/** Reads and drops at most `budget` more bytes, then lets the stream go (gate.rs: `discard`). */
async function discard(reader, budget) {
  let left = budget;
  let view = new Uint8Array(64 * 1024);
  try {
    while (left > 0) {
      const { done, value } = await reader.read(view);
      if (done || value === undefined) break;
      left -= value.byteLength;
      view = new Uint8Array(value.buffer);
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
  return new Response(held(refusalTexts, answer, REFRESH_REFUSAL, gate_text), { status, headers });
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
    // At most a KV read, then a body read, each followed by one call that goes on with the check
    // (and, if the check waiting for the body was let go, one more that starts it again).
    for (let round = 0; round < 3; round++) {
      const kind = answer & KIND;
      if (kind === NEED_RECORD) {
        // The digest, kept per slot: gate_check says when it must be fetched anew.
        const digest = held(digests, answer, REFRESH, gate_digest);
        let record;
        try {
          // As text, as the complete path reads it: a string costs the runtime less to make than
          // an ArrayBuffer (docs/benchmarks.md), and wasm-bindgen copies either into wasm memory.
          record = await env.KEYS.get(`key:${digest}`);
        } catch {
          answer = COMPLETE;
          break;
        }
        answer = gate_load(facts, digest, record ?? undefined, now);
      } else if (kind === NEED_BODY) {
        const read = await readInspected(request, h);
        if (typeof read === 'number') {
          bodyError = read;
        } else {
          body = read;
          bodyRead = read !== NO_BODY;
        }
        // The check waits in wasm under the answer's ticket.
        answer = gate_body(answer >>> 8, body, bodyError);
      } else if (kind === AGAIN) {
        answer = gate_check(facts, body, bodyError, now);
      } else {
        break;
      }
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
    const [id, type, profile] = held(slots, answer, REFRESH, forwardInfo);
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
    if (answer & TOKEN) forwarded.set('x-keyward-token-id', gate_token_id());
    else forwarded.delete('x-keyward-token-id');
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
