// The console's Content-Security-Policy in real Chromium: the watch every browser test relies on
// does see a violation (an inline script and a style attribute are refused and reported), and a
// page on another origin cannot frame the console.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { consoleSession, newPage, cspViolations } from './support.mjs';

const session = consoleSession();

test('an inline script and a style attribute are refused in the console, and the watch reports both', async () => {
  const page = await newPage(session.browser);
  await page.goto(`${session.kw.url}/_keyward/console/`);
  await page.waitForSelector('#view-signin:not([hidden])');
  assert.deepEqual(cspViolations, [], 'the console itself breaks its CSP');
  const ran = await page.evaluate(async () => {
    window.inlineRan = false;
    const script = document.createElement('script');
    script.textContent = 'window.inlineRan = true;';
    document.body.append(script);
    const div = document.createElement('div');
    div.innerHTML = '<p id="styled" style="color: rgb(255, 0, 0)">x</p>';
    document.body.append(div);
    await new Promise((r) => setTimeout(r, 200));
    return { inline: window.inlineRan, color: getComputedStyle(document.getElementById('styled')).color };
  });
  assert.equal(ran.inline, false, 'an inline script ran');
  assert.notEqual(ran.color, 'rgb(255, 0, 0)', 'a style attribute applied');
  // Both kinds of report arrive: the page's event and Chromium's console message.
  for (let i = 0; i < 20 && cspViolations.length < 4; i++) await new Promise((r) => setTimeout(r, 100));
  const seen = cspViolations.splice(0);
  assert.ok(seen.some((v) => /^event: script-src-elem blocked inline/.test(v)), seen.join('\n'));
  assert.ok(seen.some((v) => /^event: style-src-attr blocked inline/.test(v)), seen.join('\n'));
  assert.ok(seen.some((v) => /^console: .*script/i.test(v)), seen.join('\n'));
  await page.context().close();
});

test('a page on another origin cannot frame the console', async () => {
  // A real page on another origin (another port), framing the console and, as a control, the
  // origin server (which sends no frame-ancestors).
  const framing = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<!doctype html><title>frames</title>
      <iframe name="console" src="${session.kw.url}/_keyward/console/"></iframe>
      <iframe name="control" src="${session.origin.url}/control"></iframe>`);
  });
  await new Promise((resolve) => framing.listen(0, '127.0.0.1', resolve));
  const page = await newPage(session.browser);
  try {
    await page.goto(`http://127.0.0.1:${framing.address().port}/`);
    await page.waitForLoadState('load');
    const control = page.frame({ name: 'control' });
    assert.match(await control.textContent('body'), /"origin":true/, 'the control frame did not load');
    const framed = page.frame({ name: 'console' });
    // Chromium puts its error page in place of the console: no sign-in form, no console script.
    assert.equal(await framed.$('#signin-form'), null, 'the console loaded inside a frame');
    assert.equal(await framed.$('script[src="app.js"]'), null, 'the console loaded inside a frame');
    for (let i = 0; i < 20 && !cspViolations.some((v) => /frame-ancestors/.test(v)); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(framed.url(), /^chrome-error:/);
    const seen = cspViolations.splice(0);
    assert.ok(seen.some((v) => /frame-ancestors 'none'.*blocked/.test(v)), `no frame-ancestors refusal reported:\n${seen.join('\n')}`);
  } finally {
    await page.context().close();
    framing.close();
  }
});
