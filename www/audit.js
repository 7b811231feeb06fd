// The audit log in the console: a key's history on its page, and the Activity view of every change,
// newest first. Everything shown comes from GET /audit and is put in the page as text, never as HTML
// (key names, metadata and the rest are user data).
import { api } from './api.js';

const $ = (selector) => document.querySelector(selector);

const HISTORY_PER_PAGE = 10;
// Attributes a change of which says nothing on its own (every write bumps the version).
const QUIET = new Set(['version', 'updated_at']);
// Attributes that are not worth listing when a key is made or removed.
const QUIET_WHOLE = new Set(['id', 'version', 'created_at', 'updated_at', 'key_preview']);
// What every new key starts with, unless told otherwise: not worth a line when a key is made.
const DEFAULTS = { active: true, status: 'active' };
const TIMES = new Set(['expires_at', 'revoked_at', 'created_at']);
const SHOWN_LINES = 6; // more than this, and the rest fold away
const LONG = 80;
const MAX_PARTS = 8; // added and removed list items shown on one line
const ACTORS = { admin: 'admin token', migration: 'migration' };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

const isEmpty = (v) => v === null || v === undefined || v === '' || (Array.isArray(v) && v.length === 0)
  || (typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0);

function clip(text) {
  return text.length > LONG ? `${text.slice(0, LONG - 1)}…` : text;
}

/** One value, short: a span whose title holds the whole value when it had to be cut. */
function value(attribute, v, className) {
  const span = el('span', className);
  let text;
  if ((v === null || v === undefined) && attribute === 'policy') {
    text = 'the default'; // no policy stored yet: the one in ROUTE_POLICY was in force
    span.classList.add('none');
  } else if (v === null || v === undefined) {
    text = 'none';
    span.classList.add('none');
  } else if (typeof v === 'string') {
    text = TIMES.has(attribute) && /^\d{4}-\d\d-\d\dT/.test(v) ? formatTime(v) : JSON.stringify(v);
  } else if (Array.isArray(v)) {
    text = v.length === 0 ? '[]' : `[${v.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join(', ')}]`;
  } else if (typeof v === 'object' && Array.isArray(v.rules)) {
    text = `${v.rules.length} rule${v.rules.length === 1 ? '' : 's'}`;
  } else {
    text = typeof v === 'object' ? JSON.stringify(v) : String(v);
  }
  span.textContent = clip(text);
  const whole = typeof v === 'string' ? v : JSON.stringify(v);
  if (text.length > LONG || (TIMES.has(attribute) && typeof v === 'string')) span.title = whole;
  return span;
}

/** A list of strings, or a policy's rules as `METHOD path → permission`, to tell what changed. */
function asList(v) {
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
  if (v && typeof v === 'object' && Array.isArray(v.rules)) {
    return v.rules.map((r) => (r && typeof r === 'object' && typeof r.method === 'string'
      ? `${r.method} ${r.path} → ${r.permission}${Object.keys(r).length > 3 ? ` ${JSON.stringify(r)}` : ''}`
      : JSON.stringify(r)));
  }
  return null;
}

/** One changed attribute: `name "a" → "b"`; lists of strings as what was added and removed. */
function changeLine(attribute, { old, new: next }, whole) {
  const li = el('li');
  li.dataset.attribute = attribute;
  li.append(el('code', 'attr', attribute), ' ');
  if (whole === 'create') {
    li.append(value(attribute, next, 'new'));
    return li;
  }
  if (whole === 'delete') {
    li.append(value(attribute, old, 'old'));
    return li;
  }
  const before = asList(old);
  const after = asList(next);
  if (before && after) {
    const added = after.filter((x) => !before.includes(x));
    const removed = before.filter((x) => !after.includes(x));
    if (added.length || removed.length) {
      const parts = [...added.map((x) => el('span', 'added', `+${clip(x)}`)), ...removed.map((x) => el('span', 'removed', `−${clip(x)}`))];
      for (const [i, part] of parts.slice(0, MAX_PARTS).entries()) li.append(...(i ? [' ', part] : [part]));
      if (parts.length > MAX_PARTS) li.append(el('span', 'quiet', ` and ${parts.length - MAX_PARTS} more`));
      return li;
    }
  }
  li.append(value(attribute, old, 'old'), el('span', 'arrow', ' → '), value(attribute, next, 'new'));
  return li;
}

/** The change lines of an entry, the quiet ones left out; creations and deletions show one side. */
function changeLines(entry) {
  const changes = entry.changes && typeof entry.changes === 'object' ? entry.changes : {};
  // Only a record coming into being or going away changes its id.
  const id = changes.id && typeof changes.id === 'object' ? changes.id : null;
  const whole = id?.old === null ? 'create' : id?.new === null ? 'delete' : null;
  const lines = [];
  for (const [attribute, change] of Object.entries(changes)) {
    if (!change || typeof change !== 'object') continue;
    if (whole ? QUIET_WHOLE.has(attribute) : QUIET.has(attribute)) continue;
    if (whole === 'create' && (isEmpty(change.new) || DEFAULTS[attribute] === change.new)) continue;
    if (whole === 'delete' && isEmpty(change.old)) continue;
    lines.push(changeLine(attribute, change, whole));
  }
  // The name first: it is what a reader looks for.
  lines.sort((a, b) => (b.dataset.attribute === 'name') - (a.dataset.attribute === 'name'));
  return lines;
}

/** A key id or the admin token, as the entry's actor. */
function actorNode(actor, known) {
  const span = el('span', 'actor');
  span.append('by ');
  if (ACTORS[actor]) span.append(el('strong', '', ACTORS[actor]));
  else if (known) span.append(keyNode(actor, known));
  else span.append(el('code', '', actor));
  return span;
}

/** A link to a key that still exists (by its current name), else its last known name and its id. */
function keyNode(id, known) {
  const record = known.keys.get(id);
  if (record) {
    const a = el('a', 'entry-key', record.name);
    a.href = `#/keys/${encodeURIComponent(id)}`;
    a.title = id;
    return a;
  }
  const span = el('span', 'entry-key gone');
  const name = known.names.get(id);
  if (name !== undefined) span.append(name, ' ');
  span.append(el('small', '', `${id} · deleted`));
  return span;
}

/** The names the entries of a page give their keys, the newest first. */
function namesIn(entries) {
  const names = new Map();
  for (const e of entries) {
    const name = e.changes?.name;
    const given = typeof name?.new === 'string' ? name.new : name?.old;
    if (e.key_id && typeof given === 'string' && !names.has(e.key_id)) names.set(e.key_id, given);
  }
  return names;
}

/** An entry of the log, as a list item. `known` (the Activity view) holds `keys`, the current
 * records of the keys that still exist, and `names`, the names the page's entries give keys;
 * without it (a key's own history) the entry does not name its key. */
export function renderEntry(entry, known) {
  const li = el('li', 'entry');
  li.dataset.id = entry.id;
  li.dataset.action = entry.action;
  if (entry.key_id) li.dataset.keyId = entry.key_id;
  const time = el('time', 'at', formatTime(entry.at));
  time.dateTime = entry.at;
  time.title = entry.at;
  const body = el('div', 'entry-body');
  const head = el('div', 'entry-head');
  head.append(el('span', `action ${entry.action}`, entry.action.replace('_', ' ')));
  if (known) {
    if (entry.key_id) head.append(keyNode(entry.key_id, known));
    else head.append(el('span', 'entry-key', entry.action === 'policy_update' ? 'Route policy' : '—'));
  }
  head.append(actorNode(entry.actor, known));
  body.append(head);
  const lines = changeLines(entry);
  if (lines.length) {
    const list = el('ul', 'changes');
    list.append(...lines.slice(0, SHOWN_LINES));
    body.append(list);
    if (lines.length > SHOWN_LINES) {
      const more = el('details', 'more-changes');
      const rest = lines.length - SHOWN_LINES;
      more.append(el('summary', '', `${rest} more attribute${rest === 1 ? '' : 's'}`));
      const restList = el('ul', 'changes');
      restList.append(...lines.slice(SHOWN_LINES));
      more.append(restList);
      body.append(more);
    }
  } else if (entry.action === 'import') {
    body.append(el('p', 'quiet', 'Imported from a deployment that kept its keys in KV only.'));
  }
  li.append(time, body);
  return li;
}

/** The records of the keys named by `ids` that still exist (one GET each, side by side). */
async function existingKeys(ids) {
  const keys = new Map();
  await Promise.all([...new Set(ids)].map(async (id) => {
    const r = await api('GET', `/api_keys/${encodeURIComponent(id)}`);
    if (r.body?.success) keys.set(id, r.body.data);
  }));
  return keys;
}

const failure = (r, what) => r.body?.error_message ?? `${what} could not be loaded (${r.status}).`;

// ---------------------------------------------------------------- a key's history

const history = { keyId: null, next: null, load: 0 };

/** Shows the newest changes of key `id` under its form; `null` hides the section. */
export async function openHistory(id, onUnauthorized) {
  history.keyId = id;
  history.next = null;
  $('#history').hidden = !id;
  $('#history-list').replaceChildren();
  $('#history-empty').hidden = true;
  $('#history-older').hidden = true;
  $('#history-error').hidden = true;
  if (id) await loadHistory(onUnauthorized);
}

async function loadHistory(onUnauthorized) {
  const load = ++history.load; // a newer load wins over one still on its way
  const params = new URLSearchParams({ key_id: history.keyId, per_page: String(HISTORY_PER_PAGE) });
  if (history.next) params.set('page_token', history.next);
  const r = await api('GET', `/audit?${params}`);
  if (load !== history.load) return;
  const error = $('#history-error');
  if (!r.body?.success) {
    error.hidden = false;
    error.textContent = failure(r, 'The history');
    if (r.status === 401) onUnauthorized?.();
    return;
  }
  error.hidden = true;
  $('#history-list').append(...r.body.data.map((e) => renderEntry(e, null)));
  history.next = r.body.next_page_token ?? null;
  $('#history-older').hidden = !history.next;
  $('#history-empty').hidden = $('#history-list').children.length > 0;
}

export function wireHistory(onUnauthorized) {
  $('#history-older').addEventListener('click', () => loadHistory(onUnauthorized));
}

// ---------------------------------------------------------------- Activity

const activity = { tokens: [null], index: 0, action: '', perPage: 25, load: 0 };

/** Back to the newest page; `query` (the address's, `#/activity?action=revoke`) sets the filter. */
export function resetActivity(query) {
  activity.tokens = [null];
  activity.index = 0;
  if (query) {
    const select = $('#activity-action');
    const action = query.get('action') ?? '';
    activity.action = [...select.options].some((o) => o.value === action) ? action : '';
    select.value = activity.action;
  }
}

export async function loadActivity(onUnauthorized) {
  const load = ++activity.load;
  const params = new URLSearchParams({ per_page: String(activity.perPage) });
  if (activity.action) params.set('action', activity.action);
  const token = activity.tokens[activity.index];
  if (token) params.set('page_token', token);
  const r = await api('GET', `/audit?${params}`);
  if (load !== activity.load) return;
  const error = $('#activity-error');
  if (!r.body?.success) {
    error.hidden = false;
    error.textContent = failure(r, 'The activity');
    if (r.status === 401) onUnauthorized?.();
    return;
  }
  const entries = r.body.data;
  const ids = entries.flatMap((e) => [e.key_id, ACTORS[e.actor] ? null : e.actor]).filter(Boolean);
  const known = { keys: await existingKeys(ids), names: namesIn(entries) };
  if (load !== activity.load) return;
  error.hidden = true;
  $('#activity-list').replaceChildren(...entries.map((e) => renderEntry(e, known)));
  $('#activity-summary').textContent = activity.action
    ? `Changes of one kind (${activity.action.replace('_', ' ')}), newest first.`
    : 'Every change to keys and to the route policy, newest first.';
  $('#activity-empty').hidden = entries.length > 0;
  const next = r.body.next_page_token ?? null;
  activity.tokens[activity.index + 1] = next ?? undefined;
  $('#activity-newer').disabled = activity.index === 0;
  $('#activity-older').disabled = !next;
  $('#activity-page').textContent = entries.length || activity.index ? `Page ${activity.index + 1}` : '';
}

export function wireActivity(onUnauthorized) {
  const reload = () => { resetActivity(); loadActivity(onUnauthorized); };
  // The filter lives in the address, so a filtered view can be bookmarked and Back undoes it.
  $('#activity-action').addEventListener('change', () => {
    const action = $('#activity-action').value;
    location.hash = action ? `#/activity?${new URLSearchParams({ action })}` : '#/activity';
  });
  $('#activity-per-page').addEventListener('change', () => { activity.perPage = Number($('#activity-per-page').value); reload(); });
  $('#activity-form').addEventListener('submit', (event) => { event.preventDefault(); reload(); });
  $('#activity-newer').addEventListener('click', () => {
    if (activity.index > 0) { activity.index -= 1; loadActivity(onUnauthorized); }
  });
  $('#activity-older').addEventListener('click', () => {
    if (activity.tokens[activity.index + 1]) { activity.index += 1; loadActivity(onUnauthorized); }
  });
}
