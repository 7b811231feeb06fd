// A web page calling an API behind keyward from another origin, in real Chromium: the page is
// served by a tiny HTTP server on one origin, keyward (wrangler dev) is on another, and the page
// uses a profile key bound to its own website. The browser makes the preflight, keyward answers
// it at the edge, and the page reads an allowed answer and a denial's error_code. A page on a
// third origin is refused by the browser itself (no CORS grant), and its requests that need no
// preflight are refused by keyward (the key's origin_allowlist) before they reach the origin.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { startOrigin } from '../support/origin.mjs';
import { startKeyward, ROOT } from '../support/keyward.mjs';
import { launch, newPage, shot } from './support.mjs';
import { typo } from '../support/keys.mjs';

/** A website: serves one HTML page that shows what its script wrote. */
async function startSite(title) {
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title></head>
<body><h1>${title}</h1><pre id="out"></pre></body></html>`;
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(html);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return { port, stop: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()); }) };
}

const defaultPolicy = JSON.parse(readFileSync(path.join(ROOT, 'config/default-policy.json'), 'utf8'));

let origin;
let kw;
let browser;
let app;
let evil;
let appOrigin;
let evilOrigin;
let key;
before(async () => {
  origin = await startOrigin();
  kw = await startKeyward({ origin: origin.url });
  app = await startSite('The app');
  evil = await startSite('Somebody else');
  // Real host names for the two websites (both served from loopback): the browser resolves them
  // with --host-resolver-rules, so keyward (127.0.0.1) is a third, distinct origin.
  appOrigin = `http://app.example.test:${app.port}`;
  evilOrigin = `http://evil.test:${evil.port}`;
  const policy = await kw.admin('PUT', '/policy', { ...defaultPolicy, cors: { allowed_origins: [`http://*.example.test:${app.port}`], max_age: 60 } });
  assert.equal(policy.status, 200, policy.text);
  const created = await kw.admin('POST', '/api_keys', {
    api_key: { name: 'web app', type: 'profile', profile_id: 'p-1', permissions: ['profiles:read'], origin_allowlist: [appOrigin] },
  });
  assert.equal(created.status, 201, created.text);
  key = created.body.data.api_key;
  browser = await launch({ args: ['--host-resolver-rules=MAP app.example.test 127.0.0.1, MAP evil.test 127.0.0.1'] });
});
after(async () => {
  await browser?.close();
  await kw?.stop();
  await origin?.stop();
  await app?.stop();
  await evil?.stop();
});

/** What docs/browsers.md's example page does: fetch with the profile key, read the JSON. */
function callFromPage(page, url, key, init = {}) {
  return page.evaluate(async ({ url, key, init }) => {
    try {
      const response = await fetch(url, { ...init, headers: { authorization: `Bearer ${key}`, ...init.headers } });
      const body = await response.json();
      const result = { status: response.status, body, retryAfterReadable: response.headers.has('retry-after') || 'not sent' };
      document.querySelector('#out').textContent += `${response.status} ${body.error_code ?? 'ok'}\n`;
      return result;
    } catch (e) {
      document.querySelector('#out').textContent += `refused by the browser: ${e.message}\n`;
      return { thrown: e.name, message: e.message };
    }
  }, { url, key, init });
}

test('a page on an allowed origin calls keyward with a profile key and reads answers and denials', async (t) => {
  const page = await newPage(browser);
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(m.text()));
  await page.goto(`${appOrigin}/`);
  assert.equal(await page.evaluate(() => location.origin), appOrigin);
  origin.clear();

  const allowed = await callFromPage(page, `${kw.url}/v4/profiles/p-1?fields=email`, key);
  assert.equal(allowed.status, 200, JSON.stringify(allowed));
  assert.equal(allowed.body.origin, true, 'the answer came from the origin');
  assert.equal(allowed.body.headers['x-keyward-profile-id'], 'p-1');
  assert.equal(allowed.body.headers.origin, appOrigin, 'the browser sent its Origin');
  assert.equal(allowed.body.headers.authorization, undefined, 'the key is not forwarded');
  // The browser made the preflight itself (Authorization is not a simple header); keyward
  // answered it, so the origin saw only the GET.
  assert.deepEqual(origin.seen.map((r) => r.method), ['GET']);

  const denied = await callFromPage(page, `${kw.url}/v4/profiles/p-2`, key);
  assert.equal(denied.status, 403, JSON.stringify(denied));
  assert.equal(denied.body.error_code, 'PROFILE_MISMATCH', 'the page can read the denial');
  const unknown = await callFromPage(page, `${kw.url}/v4/profiles/p-1`, typo(key));
  assert.equal(unknown.status, 401);
  assert.equal(unknown.body.error_code, 'MALFORMED_KEY');
  const route = await callFromPage(page, `${kw.url}/v4/profiles/p-1`, key, { method: 'DELETE' });
  assert.ok(route.thrown, 'no rule allows DELETE there: the preflight is refused, so the browser refuses');
  assert.equal(origin.seen.length, 1, 'no denied request reached the origin');
  assert.ok(!consoleLines.some((l) => /CORS/.test(l) && /p-1\?fields|p-2/.test(l)), consoleLines.join('\n'));
  t.diagnostic(`page ${appOrigin} -> keyward ${kw.url}: GET p-1 ${allowed.status}, GET p-2 ${denied.status} ${denied.body.error_code}, `
    + `typo ${unknown.status} ${unknown.body.error_code}, DELETE refused by the browser (${route.message}); origin saw ${JSON.stringify(origin.seen.map((r) => `${r.method} ${r.path}`))}`);
  await shot(page, 'cross-origin-allowed');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a page on a third origin is refused: by the browser without a CORS grant, by keyward when it sends anyway', async (t) => {
  const page = await newPage(browser);
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(m.text()));
  await page.goto(`${evilOrigin}/`);
  origin.clear();

  // With the key in a header the browser asks first; keyward refuses the preflight (403, no
  // CORS headers), so the browser never sends the request.
  const preflighted = await callFromPage(page, `${kw.url}/v4/profiles/p-1`, key);
  assert.equal(preflighted.thrown, 'TypeError', JSON.stringify(preflighted));
  assert.ok(consoleLines.some((l) => /blocked by CORS policy/.test(l) && /preflight/i.test(l)), consoleLines.join('\n'));

  // A request that needs no preflight (the key in the query) is sent; keyward refuses it with
  // ORIGIN_NOT_ALLOWED before the origin, and the page cannot read the answer either.
  const simple = await page.evaluate(async (url) => {
    try {
      const r = await fetch(url);
      return { status: r.status };
    } catch (e) {
      return { thrown: e.name };
    }
  }, `${kw.url}/v4/profiles/p-1?api_key=${key}`);
  assert.equal(simple.thrown, 'TypeError');
  const opaque = await page.evaluate(async (url) => (await fetch(url, { mode: 'no-cors' })).type, `${kw.url}/v4/profiles/p-1?api_key=${key}`);
  assert.equal(opaque, 'opaque');
  assert.equal(origin.seen.length, 0, 'nothing from the third origin reached the origin');

  // What keyward answered to those requests, seen from outside the browser.
  const direct = await kw.request('GET', `/v4/profiles/p-1?api_key=${key}`, { headers: { origin: evilOrigin } });
  assert.equal(direct.status, 403);
  assert.equal(direct.body.error_code, 'ORIGIN_NOT_ALLOWED');
  assert.equal(direct.headers['access-control-allow-origin'], undefined);
  t.diagnostic(`page ${evilOrigin} -> keyward: ${preflighted.thrown} (${consoleLines.find((l) => /blocked by CORS policy/.test(l))}); `
    + `simple request ${simple.thrown}; keyward answered it ${direct.status} ${direct.body.error_code}; origin saw ${origin.seen.length} requests`);
  await shot(page, 'cross-origin-refused');
  await page.context().close();
});
