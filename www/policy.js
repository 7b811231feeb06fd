// The route policy view: its rules (shown) and its CORS settings (shown and edited), and how the
// playground shows a CORS outcome computed by the wasm core (corsOutcome).
import { api } from './api.js';

const $ = (selector) => document.querySelector(selector);
const lines = (text) => text.split('\n').map((s) => s.trim()).filter(Boolean);
const CORS_FIELDS = ['allowed_origins', 'allowed_headers', 'expose_headers', 'max_age'];

let current = null; // the policy document as GET /policy returned it

function clearMessages() {
  $('#policy-error').hidden = true;
  $('#policy-ok').hidden = true;
  for (const f of CORS_FIELDS) {
    $(`#cors-form .field-error[data-field="${f}"]`).textContent = '';
    $(`#cors-form [data-field-container="${f}"]`).classList.remove('invalid');
  }
}

/** An API error: next to its field when it names one of cors's ("cors.allowed_origins[1]: ..."). */
function showError(body, status) {
  const message = body?.error_message ?? `The request failed (${status}).`;
  const field = /^cors\.([a-z_]+)(\[\d+\])?:/.exec(message)?.[1];
  const slot = field && $(`#cors-form .field-error[data-field="${field}"]`);
  if (slot) {
    slot.textContent = message;
    const container = slot.closest('[data-field-container]');
    container.classList.add('invalid');
    container.querySelector('input, textarea')?.focus();
  } else {
    $('#policy-error').hidden = false;
    $('#policy-error').textContent = message;
  }
}

function syncEnabled() {
  const on = $('#c-on').checked;
  for (const id of ['#c-origins', '#c-max-age', '#c-allow-headers', '#c-expose-headers']) $(id).disabled = !on;
}

function render(policy, source) {
  current = policy;
  const cors = policy.cors ?? null;
  $('#c-on').checked = cors !== null;
  $('#c-origins').value = (cors?.allowed_origins ?? []).join('\n');
  $('#c-max-age').value = cors?.max_age ?? '';
  $('#c-allow-headers').value = (cors?.allowed_headers ?? []).join('\n');
  $('#c-expose-headers').value = (cors?.expose_headers ?? []).join('\n');
  syncEnabled();
  const rules = policy.rules ?? [];
  $('#policy-summary').textContent = `${rules.length} rule${rules.length === 1 ? '' : 's'} · ${source === 'stored' ? 'stored through the API' : 'the default from wrangler.toml'} · CORS ${cors ? 'on' : 'off'}`;
  const body = $('#rules-body');
  body.replaceChildren();
  rules.forEach((rule, i) => {
    const tr = document.createElement('tr');
    for (const [label, text, mono] of [['#', String(i), false], ['Method', rule.method, true], ['Path', rule.path, true], ['Permission', rule.permission, true]]) {
      const td = document.createElement('td');
      td.dataset.label = label;
      if (mono) {
        const code = document.createElement('code');
        code.textContent = text;
        td.append(code);
      } else {
        td.textContent = text;
      }
      tr.append(td);
    }
    body.append(tr);
  });
}

export async function openPolicy() {
  clearMessages();
  const r = await api('GET', '/policy');
  if (!r.body?.success) {
    showError(r.body, r.status);
    return;
  }
  render(r.body.data, r.body.source);
}

/** The `cors` object the form describes, or null when CORS is off. */
function formCors() {
  if (!$('#c-on').checked) return null;
  const cors = { allowed_origins: lines($('#c-origins').value) };
  const allowed = lines($('#c-allow-headers').value);
  const exposed = lines($('#c-expose-headers').value);
  if (allowed.length) cors.allowed_headers = allowed;
  if (exposed.length) cors.expose_headers = exposed;
  const age = $('#c-max-age').value.trim();
  // Sent as typed when it is not a whole number, so the API names what is wrong with it.
  if (age !== '') cors.max_age = /^\d+$/.test(age) ? Number(age) : age;
  return cors;
}

$('#c-on').addEventListener('change', syncEnabled);
$('#cors-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  clearMessages();
  if (!current) return;
  const { cors: _old, ...rest } = current;
  const cors = formCors();
  const doc = cors ? { ...rest, cors } : rest;
  const r = await api('PUT', '/policy', doc);
  if (!r.body?.success) {
    showError(r.body, r.status);
    return;
  }
  await openPolicy();
  $('#policy-ok').hidden = false;
  $('#policy-ok').textContent = cors ? 'Saved: CORS is answered at the edge.' : 'Saved: CORS is off; preflights go to the origin.';
});

/** Shows what corsOutcome said for a request from `origin`: the preflight's answer and the
 * CORS headers on the answer itself. */
export function renderCorsOutcome(el, outcome, origin) {
  el.replaceChildren();
  if (!origin) {
    el.className = 'decision';
    el.textContent = 'Enter an Origin to see the preflight and the CORS headers.';
    return;
  }
  if (outcome.type === 'failure') {
    el.className = 'decision bad';
    el.textContent = outcome.errors.map((e) => `${e.field}: ${e.message}`).join('; ');
    return;
  }
  const pre = outcome.preflight;
  const granted = outcome.response_headers.some(([name]) => name === 'access-control-allow-origin');
  const head = document.createElement('strong');
  head.className = 'code';
  const text = document.createElement('p');
  if (pre.outcome === 'pass_through') {
    el.className = 'decision';
    head.textContent = 'CORS off';
    text.textContent = 'The policy has no cors: preflights go to the origin unchanged, without a key, and answers carry no CORS headers.';
  } else if (pre.status === 204) {
    el.className = 'decision good';
    head.textContent = 'Preflight: 204';
    text.textContent = `A browser on ${origin} may call this; the answer, allowed or denied, is readable by the page.`;
  } else {
    el.className = 'decision bad';
    head.textContent = `Preflight: ${pre.status} ${pre.code}`;
    text.textContent = granted
      ? `${pre.message}. The browser refuses the call; a simple request (no preflight) is answered with CORS headers.`
      : `${pre.message}. The browser refuses to let the page make or read the call.`;
  }
  el.append(head, text);
  const lists = [['The preflight\'s headers', pre.outcome === 'answer' ? pre.headers : []], ['On the answer', outcome.response_headers]];
  for (const [title, headers] of lists) {
    if (!headers.length) continue;
    const list = document.createElement('p');
    list.className = 'rule headers';
    list.textContent = `${title}:\n${headers.map(([name, value]) => `${name}: ${value}`).join('\n')}`;
    el.append(list);
  }
}
