// One origin and one keyward for a whole test file: started before its first test (then `ready`,
// for the file's own set-up), stopped after its last. The two are returned at once, as stand-ins
// that reach the started instances once the file's `before` hook has run, so that a file reads
// `kw.admin(...)` and `origin.url` as if it had started them itself.
import { before, after } from 'node:test';
import { startOrigin } from './origin.mjs';
import { startKeyward } from './keyward.mjs';

/** @param {object} options startKeyward's, less `origin`; @param {(kw) => Promise<void>} [ready] */
export function keywardForFile(options = {}, ready = async () => {}) {
  const started = {};
  before(async () => {
    started.origin = await startOrigin();
    started.kw = await startKeyward({ origin: started.origin.url, ...options });
    await ready(started.kw);
  });
  after(async () => {
    await started.kw?.stop();
    await started.origin?.stop();
  });
  const late = (name) => new Proxy({}, {
    get(_, property) {
      if (!started[name]) throw new Error(`${name}.${String(property)}: used before the file's before() hook started it`);
      return started[name][property];
    },
  });
  return { origin: late('origin'), kw: late('kw') };
}
