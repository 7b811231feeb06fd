// A key's usage in the console, in real headless Chromium against the built Worker under
// `wrangler dev`: real requests through the gate (allowed and denied), flushed by the edge, drawn
// as stacked bars by outcome over 24 h / 7 d / 30 d, with last used on the key's page and in the
// list. Screenshots: test-output/screenshots/usage-*.png.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { consoleSession, newPage, shot, signIn, SCREENSHOTS } from './support.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const session = consoleSession({ vars: { USAGE_FLUSH_MS: '500' } });

const ok = async (call) => {
  const r = await call;
  assert.ok(r.status < 300, `${r.status} ${JSON.stringify(r.body)}`);
  return r.body.data;
};

/** Real gate traffic: `n` requests of `path` with `key` (and extra headers), each answering `code`. */
async function traffic(key, path, n, code, headers = {}) {
  for (let i = 0; i < n; i++) {
    const r = await session.kw.request('GET', path, { headers: { 'x-api-key': key, ...headers } });
    assert.equal(r.body?.error_code ?? 'VALID', code, `${path}: ${r.text.slice(0, 200)}`);
  }
}

/** The chart as drawn: bucket count, and the counts by outcome summed over every bar segment. */
const drawn = (page) => page.$eval('#usage-chart svg', (svg) => {
  const sums = {};
  for (const rect of svg.querySelectorAll('rect.seg')) sums[rect.dataset.outcome] = (sums[rect.dataset.outcome] ?? 0) + Number(rect.dataset.count);
  return { buckets: Number(svg.dataset.buckets), bars: svg.querySelectorAll('g.bar').length, sums, label: svg.getAttribute('aria-label') };
});

test('the usage chart draws real traffic by outcome over 24 h, 7 d and 30 d; last used on the page and in the list', async () => {
  const used = await ok(session.kw.admin('POST', '/api_keys', { api_key: { name: 'checkout service', permissions: ['projects:read', 'users:read'] } }));
  const idle = await ok(session.kw.admin('POST', '/api_keys', { api_key: { name: 'never used', permissions: ['projects:read'] } }));
  const want = { VALID: 14, PERMISSION_DENIED: 5, ROUTE_NOT_ALLOWED: 3, BAD_REQUEST: 2 };
  await traffic(used.api_key, '/api/v2/projects', 9, 'VALID');
  await traffic(used.api_key, '/api/v2/projects/7/users', 5, 'VALID');
  await traffic(used.api_key, '/api/v2/projects/7/rewards', 5, 'PERMISSION_DENIED');
  await traffic(used.api_key, '/admin/export', 3, 'ROUTE_NOT_ALLOWED');
  await traffic(used.api_key, '/api/v2/projects', 2, 'BAD_REQUEST', { 'x-http-method-override': 'DELETE' });
  // Wait for the edge's flush through the API, as a user would.
  for (let i = 0; ; i++) {
    const totals = (await ok(session.kw.admin('GET', `/api_keys/${used.id}/usage`))).totals;
    if (JSON.stringify(totals) === JSON.stringify({ ...totals, ...want }) && Object.keys(totals).length === 4) break;
    assert.ok(i < 60, `usage did not arrive: ${JSON.stringify(totals)}`);
    await sleep(250);
  }

  const page = await newPage(session.browser);
  await signIn(page, session.kw);
  // The list view shows before its rows come: wait for both keys' rows.
  await page.waitForSelector(`#keys-body tr[data-id="${used.id}"]`);
  await page.waitForSelector(`#keys-body tr[data-id="${idle.id}"]`);
  const lastUsed = await page.$$eval('#keys-body tr', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.id, r.querySelector('td.last-used').textContent])));
  assert.equal(lastUsed[used.id], 'just now');
  assert.equal(lastUsed[idle.id], 'never');
  await shot(page, 'usage-list-last-used');

  await page.click(`a[href="#/keys/${used.id}"]`);
  await page.waitForSelector('#usage[data-loaded="24h"]');
  assert.equal(await page.textContent('#usage-last'), 'just now');
  let chart = await drawn(page);
  assert.equal(chart.buckets, 25, '24 hourly buckets and the current one');
  assert.equal(chart.bars, 25);
  assert.deepEqual(chart.sums, want);
  assert.match(chart.label, /24 in all/);
  const legend = await page.$$eval('#usage-legend li', (items) => items.map((li) => [li.dataset.outcome, li.querySelector('.count').textContent]));
  assert.deepEqual(legend, [['VALID', '14'], ['PERMISSION_DENIED', '5'], ['ROUTE_NOT_ALLOWED', '3'], ['BAD_REQUEST', '2']]);
  assert.equal(await page.textContent('#usage-total'), '24 requests in the last 24 hours');
  await page.$eval('#usage', (el) => el.scrollIntoView());
  await shot(page, 'usage-24h');
  await page.locator('#usage').screenshot({ path: path.join(SCREENSHOTS, 'usage-24h-card.png') });

  // More traffic shows after a refresh, without reloading the page.
  await traffic(used.api_key, '/api/v2/projects/7/rewards', 3, 'PERMISSION_DENIED');
  for (let i = 0; ; i++) {
    await page.click('#usage-refresh');
    await page.waitForSelector('#usage[data-loaded="24h"]');
    chart = await drawn(page);
    if (chart.sums.PERMISSION_DENIED === 8) break;
    assert.ok(i < 60, `refresh did not show the new requests: ${JSON.stringify(chart.sums)}`);
    await sleep(250);
  }

  await page.click('#usage-ranges button[data-range="7d"]');
  await page.waitForSelector('#usage[data-loaded="7d"]');
  chart = await drawn(page);
  assert.ok(chart.buckets === 169 || chart.buckets === 168, `7 days of hours (${chart.buckets})`);
  assert.deepEqual(chart.sums, { ...want, PERMISSION_DENIED: 8 });
  assert.equal(await page.getAttribute('#usage-ranges button[data-range="7d"]', 'aria-pressed'), 'true');
  await page.locator('#usage').screenshot({ path: path.join(SCREENSHOTS, 'usage-7d-card.png') });

  await page.click('#usage-ranges button[data-range="30d"]');
  await page.waitForSelector('#usage[data-loaded="30d"]');
  chart = await drawn(page);
  assert.ok(chart.buckets === 30 || chart.buckets === 31, `30 days (${chart.buckets})`);
  assert.deepEqual(chart.sums, { ...want, PERMISSION_DENIED: 8 });
  await page.locator('#usage').screenshot({ path: path.join(SCREENSHOTS, 'usage-30d-card.png') });

  // A key without traffic: an empty chart, never used.
  await page.goto(`${session.kw.url}/_keyward/console/#/keys/${idle.id}`);
  await page.waitForSelector('#usage[data-loaded="24h"]');
  chart = await drawn(page);
  assert.deepEqual(chart.sums, {});
  assert.equal(await page.textContent('#usage-last'), 'never');
  assert.equal(await page.textContent('#usage-total'), 'No requests in the last 24 hours.');
  assert.deepEqual(page.errors, []);
});
