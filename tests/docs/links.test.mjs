// The README's and docs/'s relative links: every linked file exists, and every #anchor names a
// heading of the file it points into (GitHub's slugs). Catches a section moved or renamed without
// its links.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from '../support/keyward.mjs';

/** The text outside fenced code blocks and inline code spans. */
function prose(markdown) {
  return markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
}

/** GitHub's anchors for a Markdown file's headings (duplicates get -1, -2, ...). */
export function anchors(markdown) {
  const seen = new Map();
  const out = new Set();
  for (const [, title] of prose(markdown).matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const base = title.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n ? `${base}-${n}` : base);
  }
  return out;
}

const files = ['README.md', ...readdirSync(path.join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

test('anchors follow GitHub\'s slugs', () => {
  assert.deepEqual([...anchors('# A `b`, c (d)\n## A `b`, c (d)\n```\n# not a heading\n```\n### Rate limits and credits')],
    ['a-b-c-d', 'a-b-c-d-1', 'rate-limits-and-credits']);
});

for (const file of files) {
  test(`every relative link in ${file} resolves`, () => {
    const text = prose(readFileSync(path.join(ROOT, file), 'utf8')).replace(/`[^`\n]*`/g, '');
    const broken = [];
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
      const [where, anchor] = target.split('#');
      const resolved = where ? path.resolve(path.dirname(path.join(ROOT, file)), where) : path.join(ROOT, file);
      if (!existsSync(resolved)) { broken.push(`${target}: no such file`); continue; }
      if (anchor !== undefined && statSync(resolved).isFile() && resolved.endsWith('.md')
        && !anchors(readFileSync(resolved, 'utf8')).has(anchor)) broken.push(`${target}: no heading #${anchor}`);
    }
    assert.deepEqual(broken, [], `${file} has broken links`);
  });
}
