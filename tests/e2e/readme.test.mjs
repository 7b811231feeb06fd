// The README's sessions, run as a reader would run them: every ```sh block of the sections below,
// top to bottom in one bash, against the built Worker under `wrangler dev` with the demo key that
// scripts/dev.sh would print (made by the same scripts/demo-key.mjs), `.dev.vars` holding the admin
// token, and 127.0.0.1:8787 and :8788 replaced by the test's keyward and origin. Each `# => ...` line under a command
// is what that command must print: its status when it starts with one, every `"name":value` pair
// in it (`...` or `…` stands for anything), and the rest of its text when it is not JSON. A `curl`
// with no `# =>` line must answer 2xx, and a `VAR=$(...)` must set VAR to something other than
// empty or `null`. So a README session that stops working fails here.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { keywardForFile } from '../support/per-file.mjs';
import { ROOT } from '../support/keyward.mjs';

const run = promisify(execFile);
/** The README's sections whose ```sh blocks are a session to run (the others install, build or deploy). */
const SESSIONS = ['A session', 'Workspaces', "Customers' portal", 'Tokens', 'Leaks and webhooks'];
const DEMO = 'http://127.0.0.1:8787';
const DEMO_ORIGIN = 'http://127.0.0.1:8788';

let dir;
const { origin, kw } = keywardForFile({}, async (kw) => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'keyward-readme-'));
  writeFileSync(path.join(dir, '.dev.vars'), `ADMIN_TOKEN=${kw.adminToken}\n`);
  // jq is what the README uses; where it is missing, a stand-in for the `jq -r .a.b` it needs.
  try {
    execFileSync('jq', ['--version'], { stdio: 'ignore' });
  } catch {
    const shim = path.join(dir, 'bin', 'jq');
    mkdirSync(path.dirname(shim), { recursive: true });
    writeFileSync(shim, `#!/usr/bin/env node
const p = process.argv.slice(2).find((a) => a.startsWith('.'));
let v = JSON.parse(require('fs').readFileSync(0, 'utf8'));
for (const k of p.split('.').filter(Boolean)) v = v == null ? null : v[k];
console.log(typeof v === 'string' ? v : JSON.stringify(v ?? null));
`);
    chmodSync(shim, 0o755);
  }
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The ```sh blocks of the named `## ` sections, in the README's order. */
function sessionBlocks(readme) {
  const blocks = [];
  let section = null;
  let block = null;
  for (const line of readme.split('\n')) {
    if (block) {
      if (line.startsWith('```')) { blocks.push({ section, lines: block }); block = null; } else block.push(line);
    } else if (line.startsWith('## ')) {
      section = line.slice(3).trim();
    } else if (line.startsWith('```sh') && SESSIONS.includes(section)) {
      block = [];
    }
  }
  return blocks;
}

/** A block's commands (continuation lines joined), each with the `# =>` lines under it. */
function commands(lines) {
  const out = [];
  let pending = '';
  for (const raw of lines) {
    const line = raw.trimEnd();
    if (pending) {
      pending += ' ' + line.trim();
      if (!pending.endsWith('\\')) { out.push({ text: pending, expect: [] }); pending = ''; } else pending = pending.slice(0, -1).trimEnd();
      continue;
    }
    const expect = line.match(/^\s*# => ?(.*)$/);
    if (expect) { assert.ok(out.length, `a "# =>" line before any command: ${line}`); out[out.length - 1].expect.push(expect[1]); continue; }
    if (/^\s*(#|$)/.test(line)) continue;
    if (line.endsWith('\\')) { pending = line.slice(0, -1).trimEnd(); continue; }
    out.push({ text: line, expect: [] });
  }
  assert.equal(pending, '', 'a block ends in a continuation line');
  return out;
}

/** The command without its trailing comment (outside quotes), as bash would read it. */
function withoutComment(text) {
  let quote = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) { if (c === quote) quote = null; else if (c === '\\' && quote === '"') i++; continue; }
    if (c === "'" || c === '"') quote = c;
    else if (c === '#' && (i === 0 || /\s/.test(text[i - 1]))) return text.slice(0, i).trimEnd();
  }
  return text;
}

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** `...` and `…` stand for anything. */
const pattern = (s) => new RegExp(s.split(/\.\.\.|…/).map(escape).join('[\\s\\S]*?'));

function check(cmd, out, status, base) {
  const where = `README (${cmd.section}): ${cmd.text}\nprinted: ${out}${status ? `\nstatus: ${status}` : ''}`;
  if (!cmd.expect.length) {
    if (status) assert.match(status, /^2\d\d$/, `no "# =>" line, so a 2xx is expected; ${where}`);
    return;
  }
  for (let e of cmd.expect) {
    e = e.replace(/\s+\([^()]*\)\s*$/, '').replaceAll('https://api.example.com', base).trim();
    const code = e.match(/^(\d{3})\b[,\s]*/);
    if (code) {
      if (status) assert.equal(status, code[1], where);
      else assert.match(out, new RegExp(`^${code[1]}\\b`), where);
      e = e.slice(code[0].length);
    }
    const pairs = [...e.matchAll(/"[\w-]+":("(?:[^"\\]|\\.)*"|true|false|null|-?\d+)/g)].map((m) => m[0]);
    if (pairs.length) {
      for (const pair of pairs) assert.match(out, pattern(pair), `${pair} is missing; ${where}`);
    } else if (e && !/^\{\.*\}$/.test(e)) {
      assert.match(out, pattern(e), where);
    }
  }
}

test("the README's sessions run as written against keyward, and print what the README says", async () => {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const blocks = sessionBlocks(readme);
  const ran = new Set(blocks.map((b) => b.section));
  for (const s of SESSIONS) assert.ok(ran.has(s), `the README has no \`\`\`sh block under "## ${s}"`);

  // The demo key, made as scripts/dev.sh makes it, and its printed KEY= and ID= lines.
  const { stdout: demo } = await run('node', [path.join(ROOT, 'scripts/demo-key.mjs'), kw.url, kw.adminToken]);
  const KEY = demo.match(/KEY=(\S+)/)?.[1];
  const ID = demo.match(/ID=(\S+)/)?.[1];
  assert.ok(KEY && ID, `scripts/demo-key.mjs printed no KEY= or ID=:\n${demo}`);

  const cmds = blocks.flatMap((b) => commands(b.lines).map((c) => ({ ...c, section: b.section })));
  let script = 'set -u\n';
  cmds.forEach((cmd, i) => {
    let text = withoutComment(cmd.text).replaceAll(DEMO, kw.url).replaceAll(DEMO_ORIGIN, origin.url);
    // `KEY=kw_live_...  # printed by dev.sh`: what dev.sh printed.
    const placeholder = text.match(/^(\w+)=\S*\.\.\.$/);
    if (placeholder) text = `${placeholder[1]}=${{ KEY, ID }[placeholder[1]] ?? ''}`;
    const assign = text.match(/^(\w+)=\$\(/);
    // A plain curl (no pipe, redirect or -w of its own) also reports its status.
    const plain = /^curl\s/.test(text) && !/[|>]|\s-w\s|\s-o\s/.test(text);
    script += `printf '\\n@@@ ${i}\\n'\n`;
    if (plain) script += `${text} -w '\\n@@status %{http_code}'\n`;
    else if (assign) script += `${text}\nprintf '%s' "$${assign[1]}"\n`;
    else script += `${text}\n`;
  });
  script += `printf '\\n@@@ end\\n'\n`;
  const env = { ...process.env, PATH: `${path.join(dir, 'bin')}:${process.env.PATH}` };
  const { stdout, stderr } = await run('bash', ['-c', script], { cwd: dir, env, maxBuffer: 16 << 20 }).catch((e) => e);
  assert.match(stdout ?? '', /@@@ end\n$/, `the session stopped early:\n${stdout}\n${stderr}`);

  const parts = stdout.split(/\n@@@ (\d+|end)\n/);
  for (let k = 1; k + 1 < parts.length; k += 2) {
    if (parts[k] === 'end') break;
    const cmd = cmds[Number(parts[k])];
    let out = parts[k + 1];
    let status = null;
    const s = out.match(/\n?@@status (\d{3})$/);
    if (s) { status = s[1]; out = out.slice(0, s.index); }
    if (/^(\w+)=\$\(/.test(withoutComment(cmd.text))) assert.ok(out && out !== 'null', `README (${cmd.section}): ${cmd.text} set nothing\n${stderr}`);
    check(cmd, out, status, kw.url);
  }
});
