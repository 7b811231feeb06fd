// Workspaces in the console: the picker in the top bar (key calls then go to /workspaces/{w}/...)
// and the Workspaces page (the list with key counts; one workspace's ceiling, keys and usage;
// create and edit).
import { api, getWorkspace, setWorkspace } from './api.js';

const $ = (selector) => document.querySelector(selector);
const lines = (text) => text.split('\n').map((s) => s.trim()).filter(Boolean);

/** Fills the picker from GET /workspaces, keeping the workspace picked (if it still exists). */
export async function loadPicker() {
  const picker = $('#workspace-picker');
  const r = await api('GET', '/workspaces');
  if (!r.body?.success) return;
  const picked = getWorkspace();
  const options = [new Option('All workspaces', '')];
  for (const w of r.body.data) options.push(new Option(w.name === w.id ? w.id : `${w.name} (${w.id})`, w.id));
  if (picked && !r.body.data.some((w) => w.id === picked)) options.push(new Option(picked, picked));
  picker.replaceChildren(...options);
  picker.value = picked;
}

/** `changed` runs after a new workspace is picked (the current view reloads). */
export function wirePicker(changed) {
  $('#workspace-picker').addEventListener('change', () => {
    setWorkspace($('#workspace-picker').value);
    changed();
  });
}

let editing = null;

export async function openWorkspaces(id) {
  const error = $('#workspaces-error');
  // The new-workspace form is ready at once: what is typed while the list loads is kept.
  if (!id) await showDetail(null, null);
  const r = await api('GET', '/workspaces');
  if (!r.body?.success) {
    error.hidden = false;
    error.textContent = r.body?.error_message ?? `The workspaces could not be loaded (${r.status}).`;
    return;
  }
  error.hidden = true;
  const body = $('#workspaces-body');
  body.replaceChildren();
  for (const w of r.body.data) {
    const tr = document.createElement('tr');
    tr.dataset.id = w.id;
    const name = document.createElement('td');
    const link = document.createElement('a');
    link.href = `#/workspaces/${encodeURIComponent(w.id)}`;
    link.className = 'key-name';
    link.textContent = w.name;
    const small = document.createElement('small');
    small.textContent = w.explicit ? w.id : `${w.id} · named by keys only`;
    name.append(link, small);
    const ceiling = document.createElement('td');
    ceiling.className = 'perms';
    ceiling.dataset.label = 'Ceiling';
    ceiling.textContent = w.permission_ceiling.join(', ') || 'nothing';
    const keys = document.createElement('td');
    keys.className = 'count';
    keys.dataset.label = 'Keys';
    keys.textContent = String(w.key_count);
    const active = document.createElement('td');
    active.className = 'active-count';
    active.dataset.label = 'Active';
    active.textContent = String(w.active_key_count);
    tr.append(name, ceiling, keys, active);
    body.append(tr);
  }
  $('#workspaces-empty').hidden = r.body.data.length > 0;
  $('#workspaces-table').hidden = r.body.data.length === 0;
  $('#workspaces-summary').textContent = `${r.body.data.length} workspace${r.body.data.length === 1 ? '' : 's'}`;
  if (!id) return;
  await showDetail(r.body.data.find((w) => w.id === id) ?? null, id);
}

async function showDetail(w, id) {
  const card = $('#workspace-detail');
  clearForm();
  editing = w;
  $('#ws-form-id').disabled = Boolean(w);
  $('#workspace-form-title').textContent = w ? `Edit ${w.name}` : 'New workspace';
  $('#ws-save').textContent = w ? 'Save changes' : 'Create workspace';
  $('#ws-form-id').value = w?.id ?? '';
  $('#ws-form-name').value = w?.name ?? '';
  $('#ws-form-ceiling').value = w ? w.permission_ceiling.join('\n') : '';
  if (!w) {
    card.hidden = true;
    if (id) {
      $('#workspaces-error').hidden = false;
      $('#workspaces-error').textContent = `No workspace has the id ${id}.`;
    }
    return;
  }
  card.hidden = false;
  $('#workspace-title').textContent = w.name;
  $('#ws-id').textContent = w.id;
  $('#ws-keys').textContent = `${w.key_count} (${w.active_key_count} active)`;
  $('#ws-usage').textContent = '…';
  const usage = await api('GET', `/workspaces/${encodeURIComponent(w.id)}/usage`);
  if (usage.body?.success) {
    const totals = Object.entries(usage.body.data.totals).map(([code, n]) => `${code} ${n}`).join(', ');
    $('#ws-usage').textContent = usage.body.data.total ? `${usage.body.data.total}: ${totals}` : 'none';
  } else {
    $('#ws-usage').textContent = usage.body?.error_message ?? 'unavailable';
  }
}

function clearForm() {
  for (const p of document.querySelectorAll('[data-ws-error]')) p.textContent = '';
  $('#ws-form-error').hidden = true;
}

export function wireWorkspaces(picked) {
  $('#ws-show-keys').addEventListener('click', () => {
    if (!editing) return;
    setWorkspace(editing.id);
    picked();
    location.hash = '#/keys';
  });
  $('#workspace-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    clearForm();
    const attributes = {};
    const name = $('#ws-form-name').value.trim();
    if (name || editing) attributes.name = name;
    const ceiling = lines($('#ws-form-ceiling').value);
    attributes.permission_ceiling = ceiling.length ? ceiling : ['*'];
    let r;
    if (editing) {
      r = await api('PUT', `/workspaces/${encodeURIComponent(editing.id)}`, { workspace: attributes });
    } else {
      attributes.id = $('#ws-form-id').value.trim();
      if (!attributes.name) delete attributes.name;
      r = await api('POST', '/workspaces', { workspace: attributes });
    }
    if (!r.body?.success) {
      // The message names the field first (`permission_ceiling[1]: ...`): shown under it.
      const message = r.body?.error_message ?? `The workspace could not be saved (${r.status}).`;
      const field = message.split(':')[0].replace(/\[\d+\]$/, '');
      const slot = document.querySelector(`[data-ws-error="${field}"]`);
      if (slot) slot.textContent = message;
      else { $('#ws-form-error').hidden = false; $('#ws-form-error').textContent = message; }
      return;
    }
    await loadPicker();
    const target = `#/workspaces/${encodeURIComponent(r.body.data.id)}`;
    if (location.hash === target) await openWorkspaces(r.body.data.id);
    else location.hash = target;
  });
}
