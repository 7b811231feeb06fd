// Webhooks in the console: the endpoints (url, events, created), create one (its whsec_ secret is
// shown once), edit its url and events, delete it, and its delivery log (every attempt of every
// event, newest event first) with a Redeliver button per event. The admin token only.
import { api } from './api.js';

const $ = (selector) => document.querySelector(selector);

export const EVENTS = ['key.created', 'key.updated', 'key.expired', 'key.revoked', 'key.deleted', 'key.leaked', 'credits.low', 'credits.exhausted'];

const when = (t) => (t ? t.replace('T', ' ').replace(/(\.\d+)?Z$/, ' UTC') : '');
const path = (id) => `/webhooks/${encodeURIComponent(id)}`;

let editing = null;
let confirmAction = null;

function fail(r, what) {
  const error = $('#webhooks-error');
  error.hidden = false;
  error.textContent = r.body?.error_message ?? `${what} (${r.status}).`;
}

export async function openWebhooks(id) {
  $('#webhooks-error').hidden = true;
  // The new-endpoint form is ready at once (what is typed while the list loads is kept).
  if (!id) {
    fillForm(null);
    $('#webhook-deliveries').hidden = true;
  }
  const r = await api('GET', '/webhooks');
  if (!r.body?.success) {
    fail(r, 'The webhooks could not be loaded');
    return;
  }
  const body = $('#webhooks-body');
  body.replaceChildren();
  for (const w of r.body.data) {
    const tr = document.createElement('tr');
    tr.dataset.id = w.id;
    const url = document.createElement('td');
    const link = document.createElement('a');
    link.href = `#/webhooks/${encodeURIComponent(w.id)}`;
    link.className = 'key-name';
    link.textContent = w.url;
    const small = document.createElement('small');
    small.textContent = w.id;
    url.append(link, small);
    const events = document.createElement('td');
    events.className = 'perms';
    events.dataset.label = 'Events';
    events.textContent = w.events.join(', ');
    const created = document.createElement('td');
    created.dataset.label = 'Created';
    created.textContent = when(w.created_at);
    tr.append(url, events, created);
    if (w.id === id) tr.setAttribute('aria-current', 'true');
    body.append(tr);
  }
  const n = r.body.data.length;
  $('#webhooks-empty').hidden = n > 0;
  $('#webhooks-table').hidden = n === 0;
  $('#webhooks-summary').textContent = `${n} endpoint${n === 1 ? '' : 's'}`;
  if (!id) return;
  const chosen = r.body.data.find((w) => w.id === id) ?? null;
  fillForm(chosen);
  if (id && !chosen) fail({ status: 404, body: { error_message: `No webhook has the id ${id}.` } });
  $('#webhook-deliveries').hidden = !chosen;
  if (chosen) await loadDeliveries();
}

function clearErrors() {
  for (const p of document.querySelectorAll('[data-wh-error]')) p.textContent = '';
  $('#wh-form-error').hidden = true;
}

function fillForm(w) {
  editing = w;
  clearErrors();
  $('#webhook-form-title').textContent = w ? `Edit ${w.url}` : 'New endpoint';
  $('#wh-save').textContent = w ? 'Save changes' : 'Create endpoint';
  $('#wh-delete').hidden = !w;
  $('#wh-new').hidden = !w;
  $('#wh-url').value = w?.url ?? '';
  for (const box of document.querySelectorAll('[data-event]')) box.checked = Boolean(w?.events.includes(box.dataset.event));
}

async function loadDeliveries() {
  const w = editing;
  $('#deliveries-title').textContent = `Delivery log of ${w.url}`;
  const r = await api('GET', `${path(w.id)}/deliveries?per_page=50`);
  if (editing !== w) return;
  const body = $('#deliveries-body');
  if (!r.body?.success) {
    body.replaceChildren();
    $('#deliveries-empty').hidden = false;
    $('#deliveries-empty').textContent = r.body?.error_message ?? `The delivery log could not be loaded (${r.status}).`;
    return;
  }
  const rows = [];
  for (const e of r.body.data) {
    // Each attempt a row, the newest first; an event not tried yet has one row saying so.
    const attempts = e.attempts.length ? [...e.attempts].reverse() : [null];
    attempts.forEach((a, i) => {
      const tr = document.createElement('tr');
      tr.dataset.msg = e.id;
      tr.dataset.state = e.state;
      const cell = (label, text, cls) => {
        const td = document.createElement('td');
        td.dataset.label = label;
        if (cls) td.className = cls;
        td.textContent = text;
        tr.append(td);
        return td;
      };
      cell('Event', e.type);
      const id = cell('webhook-id', '');
      const code = document.createElement('code');
      code.textContent = e.id;
      id.append(code);
      cell('Attempted', a ? when(a.at) : 'not yet');
      const outcome = a ? (a.status != null ? `HTTP ${a.status}` : a.error ?? 'no answer') : '';
      const ok = a && a.status >= 200 && a.status < 300;
      cell('Result', outcome, a ? (ok ? 'result ok' : 'result failed') : 'result');
      const next = i === 0 ? (e.state === 'pending' ? when(e.next_attempt_at) : e.state) : '';
      cell('Next retry', next, 'next');
      const action = document.createElement('td');
      if (i === 0) {
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'redeliver';
        button.textContent = 'Redeliver';
        button.dataset.msg = e.id;
        button.setAttribute('aria-label', `Redeliver ${e.type} ${e.id}`);
        action.append(button);
      }
      tr.append(action);
      rows.push(tr);
    });
  }
  body.replaceChildren(...rows);
  $('#deliveries-table').hidden = rows.length === 0;
  $('#deliveries-empty').hidden = rows.length > 0;
  $('#deliveries-empty').textContent = 'No events yet.';
}

function showSecret(secret) {
  $('#wh-secret-value').value = secret;
  $('#wh-secret-copied').textContent = '';
  $('#wh-secret').hidden = false;
  $('#wh-secret-value').focus();
  $('#wh-secret-value').select();
}

/** `confirm(title, text, label)` resolves true when confirmed (the console's confirmation dialog). */
export function wireWebhooks(confirm) {
  confirmAction = confirm;
  const boxes = $('#wh-events');
  for (const name of EVENTS) {
    const label = document.createElement('label');
    label.className = 'check';
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.dataset.event = name;
    box.id = `wh-event-${name.replace('.', '-')}`;
    label.append(box, ` ${name}`);
    boxes.append(label);
  }
  $('#wh-secret-copy').addEventListener('click', async () => {
    const input = $('#wh-secret-value');
    try {
      await navigator.clipboard.writeText(input.value);
      $('#wh-secret-copied').textContent = 'Copied to the clipboard.';
    } catch {
      input.select();
      $('#wh-secret-copied').textContent = 'Selected: press Ctrl+C (⌘C) to copy.';
    }
  });
  $('#wh-secret-done').addEventListener('click', () => {
    $('#wh-secret-value').value = ''; // gone for good
    $('#wh-secret').hidden = true;
    $('#wh-url').focus();
  });
  $('#wh-new').addEventListener('click', () => { location.hash = '#/webhooks'; });
  $('#webhook-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors();
    const webhook = {
      url: $('#wh-url').value.trim(),
      events: [...document.querySelectorAll('[data-event]')].filter((b) => b.checked).map((b) => b.dataset.event),
    };
    const r = editing ? await api('PUT', path(editing.id), { webhook }) : await api('POST', '/webhooks', { webhook });
    if (!r.body?.success) {
      // The message names the field first (`events[1]: ...`): shown under it.
      const message = r.body?.error_message ?? `The webhook could not be saved (${r.status}).`;
      const field = message.split(':')[0].replace(/\[\d+\]$/, '');
      const slot = document.querySelector(`[data-wh-error="${field}"]`);
      if (slot) slot.textContent = message;
      else { $('#wh-form-error').hidden = false; $('#wh-form-error').textContent = message; }
      (field === 'events' ? $('[data-event]') : $('#wh-url')).focus();
      return;
    }
    const target = `#/webhooks/${encodeURIComponent(r.body.data.id)}`;
    if (location.hash === target) await openWebhooks(r.body.data.id);
    else {
      location.hash = target;
      await new Promise((resolve) => window.addEventListener('hashchange', resolve, { once: true }));
    }
    if (r.body.data.secret) showSecret(r.body.data.secret);
  });
  $('#wh-delete').addEventListener('click', async () => {
    const w = editing;
    if (!w || !(await confirmAction('Delete this webhook?', `${w.url} gets no more events; its queued events are dropped.`, 'Delete webhook'))) return;
    const r = await api('DELETE', path(w.id));
    if (!r.body?.success) { fail(r, 'The webhook could not be deleted'); return; }
    location.hash = '#/webhooks';
  });
  $('#deliveries-refresh').addEventListener('click', () => editing && loadDeliveries());
  $('#deliveries-body').addEventListener('click', async (event) => {
    const button = event.target.closest('button.redeliver');
    if (!button || !editing) return;
    const r = await api('POST', `${path(editing.id)}/deliveries/${encodeURIComponent(button.dataset.msg)}/redeliver`);
    if (!r.body?.success) { fail(r, 'The event could not be redelivered'); return; }
    $('#deliveries-status').textContent = `${button.dataset.msg} is queued again.`;
    await loadDeliveries();
    document.querySelector(`#deliveries-body button.redeliver[data-msg="${button.dataset.msg}"]`)?.focus();
  });
}
