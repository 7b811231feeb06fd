// A key's usage in the console: requests per hour (24 h, 7 d) or day (30 d) from
// GET /api_keys/{id}/usage, drawn as stacked bars by outcome in an SVG made here (no library, no
// inline style: colours come from style.css classes), with a legend, totals and `last_used_at`.
import { api } from './api.js';

const $ = (selector) => document.querySelector(selector);
const SVG = 'http://www.w3.org/2000/svg';
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const RANGES = {
  '24h': { granularity: 'hour', span: DAY, label: 'the last 24 hours' },
  '7d': { granularity: 'hour', span: 7 * DAY, label: 'the last 7 days' },
  '30d': { granularity: 'day', span: 30 * DAY, label: 'the last 30 days' },
};
// Drawing area, in SVG units (the SVG scales to the card's width).
const W = 720;
const H = 200;
const PAD = { left: 40, right: 8, top: 10, bottom: 26 };
// Denials get the colours in this order, by how many each had; VALID is always green.
const DENIAL_COLOURS = 7;

const state = { id: null, range: '24h', signedOut: null, serial: 0 };

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** "3 min ago", "2 h ago", "5 days ago", or "never". */
export function ago(iso, now = Date.now()) {
  if (!iso) return 'never';
  const ms = now - Date.parse(iso);
  if (Number.isNaN(ms)) return String(iso);
  if (ms < 60_000) return 'just now';
  if (ms < HOUR) return `${Math.floor(ms / 60_000)} min ago`;
  if (ms < DAY) return `${Math.floor(ms / HOUR)} h ago`;
  const days = Math.floor(ms / DAY);
  return `${days} day${days === 1 ? '' : 's'} ago`;
}

function fullTime(iso) {
  return new Date(iso).toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function bucketLabel(iso, granularity) {
  const d = new Date(iso);
  return granularity === 'day'
    ? d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })
    : d.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

/** Outcomes in drawing order (VALID at the bottom, then denials by count) with their colour class. */
function palette(totals) {
  const outcomes = Object.keys(totals).sort((a, b) => (a === 'VALID' ? -1 : b === 'VALID' ? 1 : totals[b] - totals[a] || a.localeCompare(b)));
  let next = 0;
  return outcomes.map((outcome) => ({ outcome, colour: outcome === 'VALID' ? 'o-valid' : `o-deny${(next++ % DENIAL_COLOURS) + 1}` }));
}

/** A y-axis top at or above `max` whose half is a whole number too: 2, 4, ... 10, 20, 50, 100, ... */
function niceMax(max) {
  if (max <= 10) return Math.max(2, Math.ceil(max / 2) * 2);
  const step = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (m * step >= max) return m * step;
  return 10 * step;
}

function draw(data) {
  const figure = $('#usage-chart');
  const order = palette(data.totals);
  const buckets = data.buckets;
  const top = niceMax(Math.max(0, ...buckets.map((b) => b.total)));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(buckets.length, 1);
  const barW = Math.max(1, slot * 0.78);
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'usage-svg', 'data-buckets': buckets.length, 'data-max': top });
  const summary = order.map(({ outcome }) => `${outcome} ${data.totals[outcome]}`).join(', ');
  chart.setAttribute('aria-label', `Requests per ${data.granularity}, ${RANGES[state.range].label}: ${data.total} in all${summary ? ` (${summary})` : ''}`);
  // Grid lines and their values: 0, half, top.
  for (const f of [0, 0.5, 1]) {
    const y = PAD.top + plotH - f * plotH;
    chart.append(svg('line', { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: f === 0 ? 'axis' : 'grid' }));
    chart.append(svg('text', { x: PAD.left - 6, y: y + 4, class: 'tick', 'text-anchor': 'end' }, String(f * top)));
  }
  buckets.forEach((bucket, i) => {
    const x = PAD.left + i * slot + (slot - barW) / 2;
    const bar = svg('g', { class: 'bar', 'data-start': bucket.start, 'data-total': bucket.total });
    let y = PAD.top + plotH;
    for (const { outcome, colour } of order) {
      const n = bucket.counts[outcome] ?? 0;
      if (!n) continue;
      const h = (n / top) * plotH;
      y -= h;
      const rect = svg('rect', { x: x.toFixed(2), y: y.toFixed(2), width: barW.toFixed(2), height: Math.max(h, 0.5).toFixed(2), class: `seg ${colour}`, 'data-outcome': outcome, 'data-count': n });
      rect.append(svg('title', {}, `${bucketLabel(bucket.start, data.granularity)}: ${outcome} ${n}`));
      bar.append(rect);
    }
    chart.append(bar);
  });
  // Time labels: first, middle and last bucket.
  const marks = [...new Set([0, Math.floor((buckets.length - 1) / 2), buckets.length - 1])].filter((i) => i >= 0);
  for (const i of marks) {
    const x = PAD.left + i * slot + slot / 2;
    const anchor = i === 0 ? 'start' : i === buckets.length - 1 ? 'end' : 'middle';
    chart.append(svg('text', { x: x.toFixed(2), y: H - 8, class: 'tick', 'text-anchor': anchor }, bucketLabel(buckets[i].start, data.granularity)));
  }
  figure.replaceChildren(chart);

  const legend = $('#usage-legend');
  legend.replaceChildren(...order.map(({ outcome, colour }) => {
    const li = el('li');
    li.dataset.outcome = outcome;
    li.append(el('span', `swatch ${colour}`), el('span', 'outcome', outcome), el('span', 'count', String(data.totals[outcome])));
    return li;
  }));
  $('#usage-total').textContent = data.total
    ? `${data.total} request${data.total === 1 ? '' : 's'} in ${RANGES[state.range].label}`
    : `No requests in ${RANGES[state.range].label}.`;
}

async function load() {
  const serial = ++state.serial;
  const { granularity, span } = RANGES[state.range];
  const to = new Date();
  const from = new Date(to.getTime() - span);
  const params = new URLSearchParams({ granularity, from: from.toISOString(), to: to.toISOString() });
  for (const b of document.querySelectorAll('#usage-ranges button')) b.setAttribute('aria-pressed', String(b.dataset.range === state.range));
  const id = encodeURIComponent(state.id);
  // The record too, for last_used_at, which moves with the same traffic.
  const [r, record] = await Promise.all([api('GET', `/api_keys/${id}/usage?${params}`), api('GET', `/api_keys/${id}`)]);
  if (serial !== state.serial) return; // a newer range or key was asked for meanwhile
  const error = $('#usage-error');
  if (!r.body?.success) {
    if (r.status === 401) { state.signedOut?.(); return; }
    error.hidden = false;
    error.textContent = r.body?.error_message ?? `Usage could not be loaded (${r.status}).`;
    return;
  }
  error.hidden = true;
  draw(r.body.data);
  if (record?.body?.success) showLastUsed(record.body.data.last_used_at);
  $('#usage').dataset.loaded = state.range;
}

/** Shows the usage card of a key (`record`), or hides it for a key not made yet. */
export function openUsage(record, signedOut) {
  const card = $('#usage');
  card.hidden = !record;
  state.signedOut = signedOut;
  if (!record) { state.id = null; return; }
  if (state.id !== record.id) state.range = '24h';
  state.id = record.id;
  delete card.dataset.loaded;
  showLastUsed(record.last_used_at);
  load();
}

function showLastUsed(iso) {
  const last = $('#usage-last');
  last.textContent = ago(iso);
  if (iso) {
    last.dateTime = iso;
    last.title = fullTime(iso);
  } else {
    last.removeAttribute('datetime');
    last.removeAttribute('title');
  }
}

export function wireUsage() {
  for (const b of document.querySelectorAll('#usage-ranges button')) {
    b.addEventListener('click', () => { state.range = b.dataset.range; load(); });
  }
  $('#usage-refresh').addEventListener('click', () => load());
}
