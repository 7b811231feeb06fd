// The keyward console: sign in, keys (list, filter, page, create, edit, lifecycle, history), the
// activity log and the playground. Plain JavaScript modules; every call goes to the management API next door.
import { api, setToken, getToken, setWorkspace } from './api.js';
import { MODULES, ACTIONS, toMatrix, fromMatrix } from './permissions.js';
import { openHistory, wireHistory, loadActivity, wireActivity, resetActivity } from './audit.js';
import { openPolicy, renderCorsOutcome } from './policy.js';
import { openUsage, wireUsage, ago } from './usage.js';
import { loadPicker, wirePicker, openWorkspaces, wireWorkspaces } from './workspaces.js';
import { openWebhooks, wireWebhooks } from './webhooks.js';

const $ = (selector) => document.querySelector(selector);
const $$ = (selector) => [...document.querySelectorAll(selector)];
const lines = (text) => text.split('\n').map((s) => s.trim()).filter(Boolean);

// ---------------------------------------------------------------- routing

const views = ['signin', 'keys', 'edit', 'activity', 'policy', 'playground', 'workspaces', 'webhooks'];

function show(view) {
  for (const v of views) $(`#view-${v}`).hidden = v !== view;
  $('.topbar').hidden = view === 'signin';
  for (const a of $$('[data-nav]')) {
    const current = a.dataset.nav === view || (view === 'edit' && a.dataset.nav === 'keys');
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
}

/**
 * Shows `view` and moves the focus to the main region at once, before the view's content loads:
 * focus moved when the content arrived would take a keyboard user's Tab back from wherever it
 * had got to meanwhile.
 */
function enter(view) {
  show(view);
  $('#main').focus({ preventScroll: true });
}

async function route() {
  if (!getToken()) {
    show('signin');
    $('#token').focus();
    return;
  }
  const hash = location.hash || '#/keys';
  const [where, query] = hash.split('?');
  const [, section, id] = where.split('/');
  loadPicker();
  if (section === 'webhooks') {
    enter('webhooks');
    await openWebhooks(id ? decodeURIComponent(id) : null);
  } else if (section === 'workspaces') {
    enter('workspaces');
    await openWorkspaces(id ? decodeURIComponent(id) : null);
  } else if (section === 'playground') {
    enter('playground');
    await openPlayground();
  } else if (section === 'activity') {
    enter('activity');
    resetActivity(new URLSearchParams(query));
    await loadActivity(signedOut);
  } else if (section === 'policy') {
    enter('policy');
    await openPolicy();
  } else if (section === 'keys' && id === 'new') {
    enter('edit');
    openEditor(null);
  } else if (section === 'keys' && id) {
    enter('edit');
    await loadEditor(decodeURIComponent(id));
  } else {
    enter('keys');
    await loadList();
  }
}

window.addEventListener('hashchange', route);

/** The token was refused mid-session: back to the sign-in form. */
function signedOut() {
  setToken(null);
  route();
}
wireHistory(signedOut);
wireActivity(signedOut);
wireUsage();
// Another workspace picked: the lists start again from their first page.
function workspacePicked() {
  resetPaging();
  resetActivity();
  route();
}
wirePicker(workspacePicked);
wireWorkspaces(workspacePicked);
wireWebhooks((...args) => confirmAction(...args));

// ---------------------------------------------------------------- sign in / out

$('#signin-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = $('#token').value.trim();
  const error = $('.field-error[data-field="token"]');
  error.textContent = '';
  if (!token) {
    error.textContent = 'Enter a management token.';
    return;
  }
  setToken(token);
  const r = await api('GET', '/api_keys?per_page=1');
  if (r.status === 401 || r.status === 403 || !r.body?.success) {
    setToken(null);
    error.textContent = r.body?.error_message ?? `The token was refused (${r.status}).`;
    $('#token').focus();
    return;
  }
  $('#token').value = '';
  if (!location.hash || location.hash === '#/') location.hash = '#/keys';
  else await route();
});

$('#sign-out').addEventListener('click', () => {
  setToken(null);
  setWorkspace(null);
  resetPaging();
  resetActivity();
  location.hash = '#/keys';
  route();
});

// ---------------------------------------------------------------- list

// The list: with no status chosen, two sections, active keys and then expired and revoked keys,
// each with its own paging; with a status chosen, that status's keys in the first section only.
// The second section pages through the expired keys and then the revoked ones (the API's
// `status=` takes one status), so its cursors say which status they continue.
const list = { tokens: [null], index: 0, filter: '', status: '', perPage: 25 };
const inactive = { tokens: [{ status: 'expired', token: null }], index: 0 };
// Each load of a section takes a number; an answer for an older load (the filter typed on, the
// page turned again) is dropped, so a slow old answer never overwrites a newer one.
const loads = { primary: 0, inactive: 0, list: 0 };
const STALE = Symbol('stale');

/** Every list starts again from its first page. */
function resetPaging() {
  list.tokens = [null];
  list.index = 0;
  inactive.tokens = [{ status: 'expired', token: null }];
  inactive.index = 0;
}

function statusBadge(status) {
  const span = document.createElement('span');
  span.className = `badge ${status}`;
  span.textContent = status;
  return span;
}

function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return d.toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
}

/** One page of keys of one status (with the name filter), or null after showing the error. */
async function fetchKeys(status, perPage, token) {
  const params = new URLSearchParams({ per_page: String(perPage) });
  if (list.filter) params.set('name_contains', list.filter);
  if (status) params.set('status', status);
  if (token) params.set('page_token', token);
  const r = await api('GET', `/api_keys?${params}`);
  if (!r.body?.success) {
    const error = $('#list-error');
    error.hidden = false;
    error.textContent = r.body?.error_message ?? `The list could not be loaded (${r.status}).`;
    if (r.status === 401) { setToken(null); route(); }
    return null;
  }
  return r.body;
}

function renderRows(body, keys) {
  body.replaceChildren();
  for (const k of keys) {
    const tr = document.createElement('tr');
    tr.dataset.id = k.id;
    const name = document.createElement('td');
    name.dataset.label = 'Name';
    const link = document.createElement('a');
    link.href = `#/keys/${encodeURIComponent(k.id)}`;
    link.textContent = k.name;
    link.className = 'key-name';
    const id = document.createElement('small');
    id.textContent = k.id;
    name.append(link, id);
    const preview = document.createElement('td');
    preview.dataset.label = 'Key';
    const code = document.createElement('code');
    code.textContent = k.key_preview ?? '—';
    preview.append(code);
    const type = document.createElement('td');
    type.dataset.label = 'Type';
    type.textContent = k.type === 'profile' ? `profile ${k.profile_id}` : 'workspace';
    const status = document.createElement('td');
    status.dataset.label = 'Status';
    status.append(statusBadge(k.status));
    const perms = document.createElement('td');
    perms.dataset.label = 'Permissions';
    perms.className = 'perms';
    const shown = k.permissions.slice(0, 3);
    perms.textContent = shown.length ? shown.join(', ') + (k.permissions.length > 3 ? ` +${k.permissions.length - 3}` : '') : 'none';
    const created = document.createElement('td');
    created.dataset.label = 'Created';
    created.textContent = when(k.created_at);
    const used = document.createElement('td');
    used.dataset.label = 'Last used';
    used.className = 'last-used';
    used.textContent = ago(k.last_used_at);
    if (k.last_used_at) used.title = new Date(k.last_used_at).toLocaleString();
    tr.append(name, preview, type, status, perms, created, used);
    body.append(tr);
  }
}

/** Fills one section: its rows, its empty message, its page label and buttons. */
function renderSection(ids, { keys, total, index, more, empty }) {
  renderRows($(ids.body), keys);
  $(ids.empty).textContent = empty;
  $(ids.empty).hidden = keys.length > 0;
  $(ids.table).hidden = keys.length === 0;
  const first = index * list.perPage + (keys.length ? 1 : 0);
  const last = index * list.perPage + keys.length;
  $(ids.label).textContent = total ? `${first}–${last} of ${total}` : '';
  $(ids.prev).disabled = index === 0;
  $(ids.next).disabled = !more;
}

const PRIMARY = { body: '#keys-body', empty: '#keys-empty', table: '#keys-table', label: '#page-label', prev: '#prev-page', next: '#next-page' };
const INACTIVE = { body: '#inactive-body', empty: '#inactive-empty', table: '#inactive-table', label: '#inactive-label', prev: '#inactive-prev', next: '#inactive-next' };

/** The first section: active keys, or the keys of the status chosen. */
async function loadPrimary() {
  const load = ++loads.primary;
  const status = list.status || 'active';
  const page = await fetchKeys(status, list.perPage, list.tokens[list.index]);
  if (load !== loads.primary) return STALE;
  if (!page) return null;
  const next = page.next_page_token;
  list.tokens[list.index + 1] = next ?? undefined;
  const word = { active: 'active', expired: 'expired', revoked: 'revoked' }[status];
  $('#keys-heading').textContent = `${word[0].toUpperCase()}${word.slice(1)} keys`;
  $('#keys-pager').setAttribute('aria-label', `Pages of ${word} keys`);
  renderSection(PRIMARY, {
    keys: page.data, total: page.num_records, index: list.index, more: Boolean(next),
    empty: list.filter ? `No ${word} keys match.` : `No ${word} keys.`,
  });
  return page.num_records;
}

/**
 * The second section: the expired keys, then the revoked ones, a page at a time. A page that
 * ends the expired keys is filled up with the first revoked ones; the other status is asked for
 * its count only (per_page=1), so the section's total covers both.
 */
async function loadInactive() {
  const load = ++loads.inactive;
  const at = inactive.tokens[inactive.index];
  let keys;
  let next = null;
  let expired;
  let revoked;
  if (at.status === 'expired') {
    expired = await fetchKeys('expired', list.perPage, at.token);
    if (!expired) return null;
    keys = expired.data;
    const room = list.perPage - keys.length;
    if (expired.next_page_token) {
      next = { status: 'expired', token: expired.next_page_token };
      revoked = await fetchKeys('revoked', 1, null);
      if (!revoked) return null;
    } else if (room > 0) {
      revoked = await fetchKeys('revoked', room, null);
      if (!revoked) return null;
      keys = [...keys, ...revoked.data];
      if (revoked.next_page_token) next = { status: 'revoked', token: revoked.next_page_token };
    } else {
      revoked = await fetchKeys('revoked', 1, null);
      if (!revoked) return null;
      if (revoked.num_records > 0) next = { status: 'revoked', token: null };
    }
  } else {
    [revoked, expired] = await Promise.all([fetchKeys('revoked', list.perPage, at.token), fetchKeys('expired', 1, null)]);
    if (!revoked || !expired) return null;
    keys = revoked.data;
    if (revoked.next_page_token) next = { status: 'revoked', token: revoked.next_page_token };
  }
  if (load !== loads.inactive) return STALE;
  inactive.tokens[inactive.index + 1] = next ?? undefined;
  const total = expired.num_records + revoked.num_records;
  renderSection(INACTIVE, {
    keys, total, index: inactive.index, more: Boolean(next),
    empty: list.filter ? 'No expired or revoked keys match.' : 'No expired or revoked keys.',
  });
  return total;
}

function summarize(counts) {
  const matching = list.filter ? ` matching “${list.filter}”` : '';
  const plural = (n) => `key${n === 1 ? '' : 's'}`;
  if (list.status) return `${counts[0]} ${list.status} ${plural(counts[0])}${matching}`;
  const [active, other] = counts;
  return `${active + other} ${plural(active + other)}${matching}: ${active} active, ${other} expired or revoked`;
}

async function loadList() {
  const load = ++loads.list;
  $('#list-error').hidden = true;
  const split = !list.status;
  $('#inactive-section').hidden = !split;
  const counts = await Promise.all(split ? [loadPrimary(), loadInactive()] : [loadPrimary()]);
  if (load !== loads.list || counts.some((c) => c === null || c === STALE)) return;
  $('#list-summary').textContent = summarize(counts);
}

let filterTimer;
$('#filter').addEventListener('input', () => {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    list.filter = $('#filter').value.trim();
    resetPaging();
    loadList();
  }, 250);
});
$('#filter-form').addEventListener('submit', (event) => {
  event.preventDefault();
  clearTimeout(filterTimer);
  list.filter = $('#filter').value.trim();
  resetPaging();
  loadList();
});
$('#status-filter').addEventListener('change', () => {
  list.status = $('#status-filter').value;
  resetPaging();
  loadList();
});
$('#per-page').addEventListener('change', () => {
  list.perPage = Number($('#per-page').value);
  resetPaging();
  loadList();
});
// Each section pages on its own, leaving the other where it is.
function pageTo(load) {
  $('#list-error').hidden = true;
  load();
}
$('#prev-page').addEventListener('click', () => {
  if (list.index > 0) { list.index -= 1; pageTo(loadPrimary); }
});
$('#next-page').addEventListener('click', () => {
  if (list.tokens[list.index + 1]) { list.index += 1; pageTo(loadPrimary); }
});
$('#inactive-prev').addEventListener('click', () => {
  if (inactive.index > 0) { inactive.index -= 1; pageTo(loadInactive); }
});
$('#inactive-next').addEventListener('click', () => {
  if (inactive.tokens[inactive.index + 1]) { inactive.index += 1; pageTo(loadInactive); }
});

// ---------------------------------------------------------------- editor

const matrixBody = $('#matrix tbody');
for (const module of MODULES) {
  const tr = document.createElement('tr');
  const th = document.createElement('th');
  th.scope = 'row';
  th.textContent = module;
  tr.append(th);
  for (const action of [...ACTIONS, '*']) {
    const td = document.createElement('td');
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.dataset.permission = `${module}:${action}`;
    box.setAttribute('aria-label', `${module}:${action}`);
    td.append(box);
    tr.append(td);
  }
  matrixBody.append(tr);
}
$('#matrix').addEventListener('change', (event) => {
  const box = event.target;
  if (box.dataset.permission?.endsWith(':*')) syncModuleRow(box.dataset.permission.split(':')[0]);
});
$('#perm-all').addEventListener('change', syncEverything);

function syncModuleRow(module) {
  const all = $(`[data-permission="${module}:*"]`).checked;
  for (const action of ACTIONS) {
    const box = $(`[data-permission="${module}:${action}"]`);
    box.disabled = all || $('#perm-all').checked;
    if (all) box.checked = true;
  }
}
function syncEverything() {
  const everything = $('#perm-all').checked;
  for (const box of $$('#matrix input')) box.disabled = everything;
  if (!everything) for (const m of MODULES) syncModuleRow(m);
}

let editing = null; // the key record being edited, or null for a new key

function clearErrors() {
  for (const e of $$('#view-edit .field-error')) e.textContent = '';
  for (const c of $$('#view-edit [data-field-container]')) c.classList.remove('invalid');
  $('#edit-error').hidden = true;
  $('#edit-ok').hidden = true;
}

/** Shows an API error next to its field ("ip_allowlist[1]: ..." belongs to ip_allowlist). */
function showError(body, status) {
  const message = body?.error_message ?? `The request failed (${status}).`;
  const field = /^([a-z_]+)(\[\d+\]|\.[a-z_.]+)?:/.exec(message)?.[1];
  const slot = field && $(`#view-edit .field-error[data-field="${field}"]`);
  if (slot) {
    slot.textContent = message;
    slot.closest('[data-field-container]')?.classList.add('invalid');
    const input = slot.closest('[data-field-container]')?.querySelector('input:not([type=checkbox]), textarea, select');
    input?.focus();
  } else {
    $('#edit-error').hidden = false;
    $('#edit-error').textContent = message;
  }
}

function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function openEditor(record) {
  editing = record;
  clearErrors();
  const isNew = !record;
  $('#edit-title').textContent = isNew ? 'New key' : record.name;
  $('#edit-sub').textContent = isNew ? 'The key is generated at the edge and shown to you once.' : `${record.id} · ${record.key_preview ?? ''} · version ${record.version}`;
  $('#save').textContent = isNew ? 'Create key' : 'Save changes';
  $('#edit-status').hidden = isNew;
  if (!isNew) {
    $('#edit-status').className = `badge ${record.status}`;
    $('#edit-status').textContent = record.status;
  }
  const r = record ?? { name: '', description: '', type: 'workspace', permissions: [], event_allowlist: [], event_denylist: [], ip_allowlist: [], origin_allowlist: [], attribute_allowlist: null, metadata: {} };
  $('#f-name').value = r.name;
  $('#f-description').value = r.description ?? '';
  $('#f-workspace').value = r.workspace ?? '';
  $('#f-type').value = r.type;
  $('#f-profile').value = r.profile_id ?? '';
  $('#profile-field').hidden = r.type !== 'profile';
  $('#f-simple-auth').checked = Boolean(r.simple_auth);
  fillTokens(record);
  const { everything, checked, extra } = toMatrix(r.permissions);
  $('#perm-all').checked = everything;
  for (const box of $$('#matrix input')) box.checked = checked.has(box.dataset.permission);
  syncEverything();
  $('#f-extra').value = extra.join(', ');
  $('#f-allow').value = r.event_allowlist.join('\n');
  $('#f-deny').value = r.event_denylist.join('\n');
  $('#f-ips').value = r.ip_allowlist.join('\n');
  $('#f-origins').value = (r.origin_allowlist ?? []).join('\n');
  $('#f-attr-on').checked = Array.isArray(r.attribute_allowlist);
  $('#f-attrs').value = (r.attribute_allowlist ?? []).join('\n');
  $('#f-attrs').disabled = !$('#f-attr-on').checked;
  $('#f-expires').value = toLocalInput(r.expires_at);
  $('#f-metadata').value = JSON.stringify(r.metadata ?? {}, null, 1);
  fillLimits(r);
  // Lifecycle: what each state allows.
  const lifecycle = $('#lifecycle');
  lifecycle.hidden = isNew;
  if (!isNew) {
    const revoked = record.status === 'revoked';
    $('#act-expire').hidden = !record.active || revoked;
    $('#act-reactivate').hidden = record.active || revoked;
    $('#act-roll').closest('.roll').hidden = revoked;
    $('#act-revoke').hidden = revoked;
    $('#act-delete').hidden = record.status === 'active';
    $('#lifecycle-hint').textContent = revoked
      ? 'This key is revoked, which is final. It can only be deleted.'
      : record.status === 'active'
        ? 'Only a key that is not active can be deleted: expire or revoke it first.'
        : 'This key is expired: reactivate it, or delete it for good.';
    for (const el of $$('#key-form input, #key-form textarea, #key-form select, #key-form button')) {
      if (revoked) el.setAttribute('disabled', ''); else if (!el.closest('#matrix') && el.id !== 'f-attrs') el.removeAttribute('disabled');
    }
    if (!revoked) { syncEverything(); $('#f-attrs').disabled = !$('#f-attr-on').checked; }
  } else {
    for (const el of $$('#key-form input, #key-form textarea, #key-form select, #key-form button')) {
      if (!el.closest('#matrix') && el.id !== 'f-attrs') el.removeAttribute('disabled');
    }
  }
  if (record?.status !== 'revoked') syncLimits();
  openHistory(record?.id ?? null, signedOut);
  openUsage(record, signedOut);
}

async function loadEditor(id) {
  const r = await api('GET', `/api_keys/${encodeURIComponent(id)}`);
  if (!r.body?.success) {
    openEditor(null);
    showError(r.body, r.status);
    return;
  }
  openEditor(r.body.data);
}

$('#f-type').addEventListener('change', () => { $('#profile-field').hidden = $('#f-type').value !== 'profile'; });
$('#f-attr-on').addEventListener('change', () => { $('#f-attrs').disabled = !$('#f-attr-on').checked; });

/** The rate limit and credit fields from a record, and the credits card for a saved key. */
function fillLimits(r) {
  $('#f-rl-on').checked = Boolean(r.ratelimit);
  $('#f-rl-limit').value = r.ratelimit?.limit ?? 100;
  $('#f-rl-period').value = r.ratelimit?.period_seconds ?? 60;
  $('#f-rl-mode').value = r.ratelimit?.mode ?? 'exact';
  $('#f-cr-on').checked = Boolean(r.credits);
  $('#f-cr-remaining').value = r.credits?.remaining ?? 1000;
  $('#f-cr-interval').value = r.credits?.refill?.interval ?? '';
  $('#f-cr-amount').value = r.credits?.refill?.amount ?? 1000;
  syncLimits();
  // What the credit fields said when the key was opened: a save sends credits only when they
  // changed, since sending them sets the live count (spending since then would be undone).
  loadedCredits = JSON.stringify(formCredits());
  const card = $('#credits-card');
  card.hidden = !r.id || !r.credits || r.status === 'revoked';
  if (!card.hidden) {
    $('#credits-left').textContent = String(r.credits.remaining);
    $('#credits-refill').textContent = r.credits.refill ? `(refilled to ${r.credits.refill.amount} ${r.credits.refill.interval === 'daily' ? 'each UTC day' : 'each UTC month'})` : '';
  }
}

let loadedCredits = 'null';

function syncLimits() {
  for (const id of ['#f-rl-limit', '#f-rl-period', '#f-rl-mode']) $(id).disabled = !$('#f-rl-on').checked;
  const local = $('#f-rl-mode').value === 'local';
  $('#f-rl-hint-exact').hidden = local;
  $('#f-rl-hint-local').hidden = !local;
  for (const id of ['#f-cr-remaining', '#f-cr-interval', '#f-cr-amount']) $(id).disabled = !$('#f-cr-on').checked;
  if ($('#f-cr-on').checked) $('#f-cr-amount').disabled = !$('#f-cr-interval').value;
}
for (const id of ['#f-rl-on', '#f-rl-mode', '#f-cr-on', '#f-cr-interval']) $(id).addEventListener('change', syncLimits);

/** The rate limit fields; `mode` only when it is not the default (exact). */
function formRateLimit() {
  const limit = { limit: Number($('#f-rl-limit').value), period_seconds: Number($('#f-rl-period').value) };
  return $('#f-rl-mode').value === 'local' ? { ...limit, mode: 'local' } : limit;
}

function formCredits() {
  if (!$('#f-cr-on').checked) return null;
  const interval = $('#f-cr-interval').value;
  return {
    remaining: Number($('#f-cr-remaining').value),
    refill: interval ? { amount: Number($('#f-cr-amount').value), interval } : null,
  };
}

async function topUp(op) {
  clearErrors();
  const amount = Number($('#topup-amount').value);
  const r = await api('POST', `/api_keys/${encodeURIComponent(editing.id)}/credits`, { [op]: amount });
  if (!r.body?.success) {
    const slot = $('.field-error[data-field="topup"]');
    slot.textContent = r.body?.error_message ?? `The request failed (${r.status}).`;
    slot.closest('.card').querySelector('[data-field-container]').classList.add('invalid');
    return;
  }
  openEditor(r.body.data);
  flash(`Credits: ${r.body.data.credits.remaining} left.`);
}
$('#topup-add').addEventListener('click', () => topUp('add'));
$('#topup-set').addEventListener('click', () => topUp('set'));

/** The attributes the form describes; metadata that is not JSON is reported like an API error. */
function formAttributes() {
  const checked = $$('#matrix input').filter((b) => b.checked && !b.disabled).map((b) => b.dataset.permission);
  const extra = $('#f-extra').value.split(',').map((s) => s.trim()).filter(Boolean);
  let metadata;
  try {
    metadata = JSON.parse($('#f-metadata').value || '{}');
  } catch {
    return { error: 'metadata: is not valid JSON' };
  }
  const expires = $('#f-expires').value;
  const attributes = {
    name: $('#f-name').value,
    description: $('#f-description').value,
    type: $('#f-type').value,
    profile_id: $('#f-type').value === 'profile' ? $('#f-profile').value : null,
    simple_auth: $('#f-type').value === 'profile' && $('#f-simple-auth').checked,
    workspace: $('#f-workspace').value.trim() || null,
    permissions: fromMatrix($('#perm-all').checked, checked, extra),
    event_allowlist: lines($('#f-allow').value),
    event_denylist: lines($('#f-deny').value),
    ip_allowlist: lines($('#f-ips').value),
    origin_allowlist: lines($('#f-origins').value),
    attribute_allowlist: $('#f-attr-on').checked ? lines($('#f-attrs').value) : null,
    expires_at: expires ? new Date(expires).toISOString() : null,
    metadata,
    ratelimit: $('#f-rl-on').checked ? formRateLimit() : null,
  };
  const credits = formCredits();
  if (!editing || JSON.stringify(credits) !== loadedCredits) attributes.credits = credits;
  return { attributes };
}

$('#key-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  clearErrors();
  const { attributes, error } = formAttributes();
  if (error) { showError({ error_message: error }, 400); return; }
  const r = editing
    ? await api('PUT', `/api_keys/${encodeURIComponent(editing.id)}`, { api_key: attributes })
    : await api('POST', '/api_keys', { api_key: attributes });
  if (!r.body?.success) { showError(r.body, r.status); return; }
  if (editing) {
    openEditor(r.body.data);
    flash('Saved.');
  } else {
    await showSecret(r.body.data.api_key);
    location.hash = `#/keys/${encodeURIComponent(r.body.data.id)}`;
  }
});

function flash(text) {
  $('#edit-ok').hidden = false;
  $('#edit-ok').textContent = text;
}

async function lifecycle(method, path, body, done) {
  clearErrors();
  const r = await api(method, path, body);
  if (!r.body?.success) { showError(r.body, r.status); return null; }
  if (done) flash(done);
  return r.body.data;
}

$('#act-expire').addEventListener('click', async () => {
  const data = await lifecycle('PUT', `/api_keys/${editing.id}`, { api_key: { active: false } });
  if (data) { openEditor(data); flash('Expired: requests with this key are refused from now on.'); }
});
$('#act-reactivate').addEventListener('click', async () => {
  const data = await lifecycle('PUT', `/api_keys/${editing.id}`, { api_key: { active: true } });
  if (data) { openEditor(data); flash('Reactivated.'); }
});
$('#act-roll').addEventListener('click', async () => {
  const grace = Number($('#grace').value);
  const data = await lifecycle('POST', `/api_keys/${editing.id}/roll`, { grace_seconds: grace });
  if (data) {
    await showSecret(data.api_key);
    location.hash = `#/keys/${encodeURIComponent(data.id)}`;
  }
});
$('#act-revoke').addEventListener('click', async () => {
  const ok = await confirmAction('Revoke this key?', `Revoking “${editing.name}” is final: every request with it is refused from now on, and nothing can bring it back.`, 'Revoke for good');
  if (!ok) return;
  const data = await lifecycle('POST', `/api_keys/${editing.id}/revoke`);
  if (data) { openEditor(data); flash('Revoked.'); }
});
$('#act-delete').addEventListener('click', async () => {
  const ok = await confirmAction('Delete this key?', `Deleting “${editing.name}” cannot be undone.`, 'Delete');
  if (!ok) return;
  const data = await lifecycle('DELETE', `/api_keys/${editing.id}`);
  if (data) location.hash = '#/keys';
});

/** The tokens card of a saved key that is not revoked: when its tokens were last revoked, its salt. */
function fillTokens(record) {
  const card = $('#tokens-card');
  card.hidden = !record || record.status === 'revoked';
  if (card.hidden) return;
  $('#tokens-since').textContent = record.tokens_not_before
    ? `Tokens issued before ${new Date(record.tokens_not_before).toLocaleString()} are refused.`
    : '';
  $('#tokens-salt-line').hidden = !record.simple_auth_salt;
  $('#tokens-salt').textContent = record.simple_auth_salt ?? '';
}

$('#tokens-revoke').addEventListener('click', async () => {
  const ok = await confirmAction('Revoke this key\'s tokens?', `Every token made from “${editing.name}” until now is refused from now on. The key itself keeps working, and new tokens can be made.`, 'Revoke its tokens');
  if (!ok) return;
  const data = await lifecycle('POST', `/api_keys/${editing.id}/revoke_tokens`);
  if (data) {
    await loadEditor(editing.id);
    flash('Its tokens issued until now are refused.');
  }
});
$('#tokens-rotate').addEventListener('click', async () => {
  const ok = await confirmAction('Rotate the signing key?', 'New tokens of every key are signed with the next key, already published. Tokens signed until now stay valid until they expire. This needs the admin token.', 'Rotate');
  if (!ok) return;
  const data = await lifecycle('POST', '/signing_keys/rotate');
  if (data) flash(`Tokens are now signed with ${data.kid}.`);
});

// ---------------------------------------------------------------- dialogs

function showSecret(key) {
  const dialog = $('#secret-dialog');
  $('#secret-value').value = key;
  $('#secret-copied').textContent = '';
  dialog.showModal();
  $('#secret-value').select();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      $('#secret-value').value = ''; // gone for good once closed
      resolve();
    }, { once: true });
  });
}

$('#secret-copy').addEventListener('click', async () => {
  const input = $('#secret-value');
  try {
    await navigator.clipboard.writeText(input.value);
    $('#secret-copied').textContent = 'Copied to the clipboard.';
  } catch {
    input.select();
    $('#secret-copied').textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
  }
});

function confirmAction(title, text, label) {
  const dialog = $('#confirm-dialog');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = label;
  dialog.returnValue = '';
  dialog.showModal();
  $('#confirm-cancel').focus();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
  });
}

// ---------------------------------------------------------------- playground

let core = null;
let policy = null;

async function openPlayground() {
  if (!core) {
    try {
      const module = await import('./pkg/keyward.js');
      await module.default();
      core = module;
    } catch (e) {
      $('#p-local').className = 'decision bad';
      $('#p-local').textContent = `The wasm core could not be loaded: ${e.message}`;
      return;
    }
  }
  const r = await api('GET', '/policy');
  policy = r.body?.success ? r.body.data : { rules: [] };
  const keys = await api('GET', '/api_keys?per_page=100');
  const select = $('#p-key');
  const current = select.value;
  select.replaceChildren(new Option('— paste a record below —', ''));
  for (const k of keys.body?.data ?? []) select.append(new Option(`${k.name} (${k.key_preview ?? k.id})`, k.id));
  select.value = current;
  decideHere();
}

function playRequest() {
  const body = $('#p-body').value;
  return {
    method: $('#p-method').value,
    path: $('#p-path').value,
    ip: $('#p-ip').value.trim() || null,
    body: body === '' ? null : body,
    basic_workspace: $('#p-workspace').value.trim() || null,
    origin: $('#p-origin').value.trim() || null,
    referer: $('#p-referer').value.trim() || null,
    recent: Math.max(0, Math.floor(Number($('#p-recent').value) || 0)),
  };
}

function renderDecision(el, decision, rule) {
  el.hidden = false;
  el.className = `decision ${decision.valid ? 'good' : 'bad'}`;
  el.replaceChildren();
  const head = document.createElement('strong');
  head.className = 'code';
  head.textContent = decision.valid ? 'VALID: allowed' : decision.code;
  const message = document.createElement('p');
  message.textContent = decision.message;
  el.append(head, message);
  if (rule) {
    const r = document.createElement('p');
    r.className = 'rule';
    r.textContent = `Rule ${decision.rule}: ${rule.method} ${rule.path} needs ${rule.permission}`;
    el.append(r);
  } else if (decision.permission) {
    const r = document.createElement('p');
    r.className = 'rule';
    r.textContent = `Rule ${decision.rule}: needs ${decision.permission}`;
    el.append(r);
  }
}

let lastLocal = null;
function decideHere() {
  if (!core) return;
  const out = $('#p-local');
  let record;
  try {
    record = JSON.parse($('#p-record').value);
  } catch {
    out.className = 'decision bad';
    out.textContent = 'The record is not valid JSON.';
    lastLocal = null;
    return;
  }
  const request = playRequest();
  renderCorsOutcome($('#p-cors'), core.corsOutcome(policy, request), request.origin);
  const result = core.decide(record, policy, request, Date.now());
  if (result.type === 'failure') {
    out.className = 'decision bad';
    out.textContent = result.errors.map((e) => `${e.field}: ${e.message}`).join('; ');
    lastLocal = null;
    return;
  }
  lastLocal = result.decision;
  renderDecision(out, result.decision, result.matched_rule);
  compare();
}

let lastEdge = null;
function compare() {
  const agree = $('#p-agree');
  if (!lastEdge || !lastLocal) { agree.hidden = true; return; }
  agree.hidden = false;
  const same = lastEdge.valid === lastLocal.valid && lastEdge.code === lastLocal.code;
  agree.className = `agree ${same ? 'yes' : 'no'}`;
  agree.textContent = same ? '✓ The page and the edge agree.' : '✗ The page and the edge disagree (is the record the one stored for this key?).';
}

for (const id of ['#p-record', '#p-method', '#p-path', '#p-ip', '#p-body', '#p-workspace', '#p-origin', '#p-referer', '#p-recent']) {
  $(id).addEventListener('input', () => { lastEdge = null; $('#p-edge').hidden = true; $('#p-agree').hidden = true; decideHere(); });
}
$('#p-key').addEventListener('change', async () => {
  const id = $('#p-key').value;
  if (!id) return;
  const r = await api('GET', `/api_keys/${encodeURIComponent(id)}`);
  if (r.body?.success) {
    $('#p-record').value = JSON.stringify(r.body.data, null, 1);
    lastEdge = null;
    $('#p-edge').hidden = true;
    decideHere();
  }
});
$('#p-ask').addEventListener('click', async () => {
  const req = playRequest();
  const ws = req.basic_workspace;
  const key = $('#p-plain').value.trim();
  const body = { method: req.method, path: req.path, ip: req.ip, body: req.body };
  if (ws) body.headers = { authorization: `Basic ${btoa(`${ws}:${key}`)}` }; else body.key = key;
  for (const name of ['origin', 'referer']) if (req[name]) body.headers = { ...body.headers, [name]: req[name] };
  const r = await api('POST', '/verify', body);
  const out = $('#p-edge');
  if (!r.body?.success) {
    out.hidden = false;
    out.className = 'decision bad';
    out.textContent = r.body?.error_message ?? `The edge did not answer (${r.status}).`;
    lastEdge = null;
    compare();
    return;
  }
  lastEdge = r.body.data;
  renderDecision(out, r.body.data, null);
  compare();
});

route();
