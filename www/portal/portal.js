// The customers' key page (docs/portal.md): one workspace's keys, managed through the portal's
// session API (/_keyward/portal/api/...), which acts as that workspace's management key. The
// session is a HttpOnly cookie this script never sees; every state-changing call sends the
// X-Keyward-Portal header, which a cross-site form cannot.
import { MODULES, ACTIONS } from '../console/permissions.js';
import qrcode from './qrcode.mjs';

const $ = (selector) => document.querySelector(selector);
const API = new URL('api/', document.baseURI).pathname;
const PING = new URL('../v1/ping', document.baseURI).pathname;

const state = { session: null, keys: [] };

/** Calls the portal API; never throws. Returns {status, body}. */
async function api(method, path, body) {
  const headers = {};
  if (method !== 'GET') headers['x-keyward-portal'] = '1';
  if (body !== undefined) headers['content-type'] = 'application/json';
  try {
    const r = await fetch(API + path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
    let parsed = null;
    try { parsed = await r.json(); } catch { /* not JSON */ }
    if (r.status === 401) ended();
    return { status: r.status, body: parsed };
  } catch (e) {
    return { status: 0, body: { success: false, error_message: `keyward could not be reached: ${e.message}` } };
  }
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function notice(text, isError = false) {
  const n = $('#notice');
  n.textContent = text;
  n.classList.toggle('error', isError);
}

function ended() {
  $('#view-keys').hidden = true;
  $('#view-ended').hidden = false;
}

function when(iso) {
  if (!iso) return 'never';
  return new Date(iso).toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

// ---------------------------------------------------------------- session and branding

async function start() {
  const r = await api('GET', 'session');
  if (!r.body?.success) {
    if (r.status !== 401) notice(r.body?.error_message ?? `The page could not load (${r.status}).`, true);
    ended();
    return;
  }
  const s = r.body.data;
  state.session = s;
  document.title = s.title;
  $('#brand-title').textContent = s.title;
  $('#page-title').textContent = s.title;
  if (s.logo_url) {
    $('#brand-logo').src = s.logo_url;
    $('#brand-logo').hidden = false;
  }
  $('#who').textContent = s.user;
  $('#return').href = s.return_url;
  $('#return').hidden = false;
  $('#view-keys').hidden = false;
  buildMatrix();
  await loadKeys();
}

// ---------------------------------------------------------------- the list

async function loadKeys() {
  const all = [];
  let token = null;
  for (let page = 0; page < 20; page++) {
    const q = `api_keys?per_page=100${token ? `&page_token=${encodeURIComponent(token)}` : ''}`;
    const r = await api('GET', q);
    if (!r.body?.success) {
      notice(r.body?.error_message ?? 'The keys could not be loaded.', true);
      return;
    }
    all.push(...r.body.data);
    token = r.body.next_page_token;
    if (!token) break;
  }
  state.keys = all;
  render();
}

function render() {
  const search = $('#search').value.trim().toLowerCase();
  const shown = search ? state.keys.filter((k) => k.name.toLowerCase().includes(search)) : state.keys;
  const active = shown.filter((k) => k.status === 'active');
  const inactive = shown.filter((k) => k.status !== 'active');
  fill($('#active-keys'), active);
  fill($('#inactive-keys'), inactive);
  $('#active-empty').textContent = search ? 'No active key matches.' : 'No active key.';
  $('#inactive-empty').textContent = search ? 'None matches.' : 'None.';
  $('#active-empty').hidden = active.length > 0;
  $('#inactive-empty').hidden = inactive.length > 0;
  const matching = search ? ` matching “${$('#search').value.trim()}”` : '';
  $('#summary').textContent = `${active.length} active, ${inactive.length} expired or revoked${matching}`;
}

function fill(list, keys) {
  list.replaceChildren(...keys.map(row));
}

function row(k) {
  const li = el('li', 'key');
  li.dataset.id = k.id;
  li.dataset.name = k.name;
  const head = el('div', 'key-head');
  head.append(el('strong', 'key-name', k.name), el('span', `badge ${k.status}`, k.status));
  li.append(head);
  if (k.description) li.append(el('p', 'key-desc', k.description));
  const meta = el('p', 'key-meta');
  meta.textContent = `${k.key_preview ?? k.id} · created ${when(k.created_at)} · expires ${when(k.expires_at)} · last used ${when(k.last_used_at)}`;
  li.append(meta);
  if (k.permissions?.length) li.append(el('p', 'key-perms', `Permissions: ${k.permissions.join(', ')}`));
  const actions = el('div', 'actions');
  const button = (label, handler, className = '') => {
    const b = el('button', className, label);
    b.type = 'button';
    b.dataset.action = label.toLowerCase();
    b.setAttribute('aria-label', `${label} ${k.name}`);
    b.addEventListener('click', () => handler(k));
    actions.append(b);
  };
  button('Usage', showUsage, 'ghost');
  if (k.status === 'active') {
    button('Expire', (key) => change(key, { active: false }, 'expired'));
    button('Roll', roll);
  } else if (k.status === 'expired') {
    button('Reactivate', (key) => change(key, { active: true }, 'reactivated'));
  }
  if (k.status !== 'revoked') button('Revoke', revoke, 'danger');
  if (k.status !== 'active') button('Delete', remove, 'danger');
  li.append(actions);
  return li;
}

async function change(k, attrs, done) {
  const r = await api('PUT', `api_keys/${k.id}`, { api_key: attrs });
  if (!r.body?.success) return notice(r.body?.error_message ?? 'The key could not be changed.', true);
  notice(`${k.name}: ${done}.`);
  await loadKeys();
  focusRow(k.id);
}

function focusRow(id) {
  const first = document.querySelector(`li[data-id="${id}"] button`);
  if (first) first.focus();
  else $('#new-key').focus();
}

/** Asks in a modal dialog; resolves true when confirmed. */
function confirmDialog(dialog) {
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true });
    dialog.returnValue = '';
    dialog.showModal();
  });
}

async function revoke(k) {
  $('#confirm-title').textContent = `Revoke ${k.name}?`;
  $('#confirm-text').textContent = 'A revoked key stops working at once and for good. This cannot be undone.';
  $('#confirm-yes').textContent = 'Revoke';
  if (!(await confirmDialog($('#confirm-dialog')))) return focusRow(k.id);
  const r = await api('POST', `api_keys/${k.id}/revoke`);
  if (!r.body?.success) return notice(r.body?.error_message ?? 'The key could not be revoked.', true);
  notice(`${k.name}: revoked.`);
  await loadKeys();
  focusRow(k.id);
}

async function remove(k) {
  $('#confirm-title').textContent = `Delete ${k.name}?`;
  $('#confirm-text').textContent = 'The key disappears from this page.';
  $('#confirm-yes').textContent = 'Delete';
  if (!(await confirmDialog($('#confirm-dialog')))) return focusRow(k.id);
  const r = await api('DELETE', `api_keys/${k.id}`);
  if (!r.body?.success) return notice(r.body?.error_message ?? 'The key could not be deleted.', true);
  notice(`${k.name}: deleted.`);
  await loadKeys();
  $('#new-key').focus();
}

async function roll(k) {
  if (!(await confirmDialog($('#roll-dialog')))) return focusRow(k.id);
  const grace = Number($('#roll-grace').value);
  const r = await api('POST', `api_keys/${k.id}/roll`, { grace_seconds: grace });
  if (!r.body?.success) return notice(r.body?.error_message ?? 'The key could not be rolled.', true);
  notice(`${k.name}: rolled. The old key ${grace ? 'keeps working for the grace period' : 'has stopped'}.`);
  await loadKeys();
  showCreated(r.body.data.api_key);
}

// ---------------------------------------------------------------- usage

/** The usage periods offered: how far back, and the bucket. */
const PERIODS = { '24h': { days: 1, granularity: 'hour' }, '7d': { days: 7, granularity: 'day' }, '30d': { days: 30, granularity: 'day' } };
let usageKey = null;

async function showUsage(k, { focus = true } = {}) {
  usageKey = k;
  const period = PERIODS[$('#usage-range').value] ?? PERIODS['24h'];
  const from = new Date(Date.now() - period.days * 86_400_000).toISOString();
  const r = await api('GET', `api_keys/${k.id}/usage?granularity=${period.granularity}&from=${encodeURIComponent(from)}`);
  if (usageKey !== k) return; // another key's usage was asked for meanwhile
  if (!r.body?.success) return notice(r.body?.error_message ?? 'The usage could not be loaded.', true);
  const data = r.body.data;
  const card = $('#usage');
  card.hidden = false;
  $('#usage-title').textContent = `Usage of ${k.name}`;
  const valid = data.totals?.VALID ?? 0;
  $('#usage-summary').textContent = `${data.total} requests (${valid} allowed, ${data.total - valid} refused) from ${when(data.from)} to ${when(data.to)}.`;
  $('#usage-chart').replaceChildren(chart(data.buckets, data.granularity ?? period.granularity));
  if (!focus) return;
  card.scrollIntoView({ block: 'nearest' });
  $('#usage-close').focus();
}

function chart(buckets, granularity = 'hour') {
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(NS, 'svg');
  const w = 720;
  const h = 120;
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `Requests per ${granularity}`);
  const top = Math.max(1, ...buckets.map((b) => b.total));
  const bw = w / Math.max(1, buckets.length);
  buckets.forEach((b, i) => {
    const bh = (b.total / top) * (h - 4);
    const valid = ((b.counts?.VALID ?? 0) / top) * (h - 4);
    for (const [height, y, cls] of [[bh - valid, h - bh, 'bar-deny'], [valid, h - valid, 'bar-valid']]) {
      if (height <= 0) continue;
      const rect = document.createElementNS(NS, 'rect');
      rect.setAttribute('x', String(i * bw + 1));
      rect.setAttribute('y', String(y));
      rect.setAttribute('width', String(Math.max(1, bw - 2)));
      rect.setAttribute('height', String(height));
      rect.setAttribute('class', cls);
      svg.append(rect);
    }
  });
  return svg;
}

// ---------------------------------------------------------------- create

/** Whether the permission set `set` (a ceiling or what the session holds) covers `p`. */
function covers(set, p) {
  if (!set) return true;
  const [module, action] = p.split(':');
  return set.some((q) => q === '*' || q === p || q === `${module}:*` || (action !== '*' && q === `*:${action}`));
}

const allowed = (p) => covers(state.session.permission_ceiling, p) && covers(state.session.holds, p);

function buildMatrix() {
  const table = el('table', 'matrix');
  const head = el('tr');
  head.append(el('th', '', 'Module'));
  for (const a of [...ACTIONS, 'all']) head.append(el('th', '', a));
  table.append(head);
  // The modules of the matrix, and any module the ceiling names that it does not.
  const modules = [...MODULES];
  for (const p of state.session.permission_ceiling) {
    const m = p.split(':')[0];
    if (p !== '*' && m !== '*' && !modules.includes(m)) modules.push(m);
  }
  let any = false;
  for (const m of modules) {
    const perms = [...ACTIONS.map((a) => `${m}:${a}`), `${m}:*`];
    if (!perms.some(allowed)) continue;
    any = true;
    const tr = el('tr');
    tr.append(el('th', '', m));
    for (const p of perms) {
      const td = el('td');
      if (allowed(p)) {
        const box = el('input');
        box.type = 'checkbox';
        box.value = p;
        box.setAttribute('aria-label', p);
        td.append(box);
      } else {
        td.textContent = '—';
      }
      tr.append(td);
    }
    table.append(tr);
  }
  $('#matrix').replaceChildren(any ? table : el('p', 'hint', 'No permission can be given here.'));
}

const lines = (id) => $(id).value.split('\n').map((s) => s.trim()).filter(Boolean);

$('#new-key').addEventListener('click', () => {
  $('#create-form').reset();
  $('#create-error').textContent = '';
  $('#create-dialog').showModal();
  $('#f-name').focus();
});
$('#create-cancel').addEventListener('click', () => {
  $('#create-dialog').close();
  $('#new-key').focus();
});

$('#create-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const error = $('#create-error');
  const name = $('#f-name').value.trim();
  if (!name) {
    error.textContent = 'Give the key a name.';
    $('#f-name').focus();
    return;
  }
  const attrs = { name, permissions: [...document.querySelectorAll('#matrix input:checked')].map((b) => b.value) };
  const description = $('#f-description').value.trim();
  if (description) attrs.description = description;
  for (const [id, field] of [['#f-events-allow', 'event_allowlist'], ['#f-events-deny', 'event_denylist'], ['#f-ips', 'ip_allowlist'], ['#f-origins', 'origin_allowlist']]) {
    const list = lines(id);
    if (list.length) attrs[field] = list;
  }
  if ($('#f-expires').value) {
    const at = new Date($('#f-expires').value);
    if (Number.isNaN(at.getTime())) {
      error.textContent = 'expires_at: not a date.';
      return;
    }
    attrs.expires_at = at.toISOString().replace(/\.\d{3}Z$/, 'Z');
  }
  $('#create-submit').disabled = true;
  const r = await api('POST', 'api_keys', { api_key: attrs });
  $('#create-submit').disabled = false;
  if (!r.body?.success) {
    error.textContent = r.body?.error_message ?? `The key could not be created (${r.status}).`;
    return;
  }
  $('#create-dialog').close();
  notice(`${name}: created.`);
  await loadKeys();
  showCreated(r.body.data.api_key);
});

// ---------------------------------------------------------------- the key, once

function showCreated(key) {
  $('#created-key').textContent = key;
  const qr = qrcode(0, 'M');
  qr.addData(key);
  qr.make();
  $('#created-qr').src = qr.createDataURL(5, 4);
  $('#test-result').textContent = '';
  $('#created').hidden = false;
  $('#created').focus();
}

$('#copy-key').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText($('#created-key').textContent);
    $('#copy-key').textContent = 'Copied';
  } catch {
    // No clipboard permission: select the text so that the customer can copy it.
    const range = document.createRange();
    range.selectNodeContents($('#created-key'));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    $('#copy-key').textContent = 'Selected: press Ctrl+C';
  }
});

$('#test-key').addEventListener('click', async () => {
  const out = $('#test-result');
  out.textContent = 'Testing…';
  try {
    const r = await fetch(PING, { headers: { authorization: `Bearer ${$('#created-key').textContent}` }, credentials: 'omit' });
    const body = await r.json();
    out.textContent = body.success ? `It works: keyward knows this key (${body.data.key_id}).` : `Refused: ${body.error_code}: ${body.error_message}`;
    out.className = body.success ? 'ok' : 'error';
  } catch (e) {
    out.textContent = `keyward could not be reached: ${e.message}`;
  }
});

$('#created-done').addEventListener('click', () => {
  $('#created').hidden = true;
  $('#created-key').textContent = '';
  $('#created-qr').removeAttribute('src');
  $('#copy-key').textContent = 'Copy';
  $('#new-key').focus();
});

$('#usage-range').addEventListener('change', () => {
  if (usageKey && !$('#usage').hidden) showUsage(usageKey, { focus: false });
});

$('#search').addEventListener('input', () => render());
$('#search-form').addEventListener('submit', (event) => {
  event.preventDefault();
  render();
});

$('#usage-close').addEventListener('click', () => {
  usageKey = null;
  $('#usage').hidden = true;
  $('#new-key').focus();
});

start();
