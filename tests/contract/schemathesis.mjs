// Checks the management API against its OpenAPI document (www/openapi.json) with schemathesis:
// starts the built Worker under `wrangler dev` with a real origin, then runs `st run` with the
// admin token against it. Exits with schemathesis's status. Used by scripts/test.sh.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import { startOrigin } from '../support/origin.mjs';
import { startKeyward, ROOT } from '../support/keyward.mjs';

const maxExamples = process.env.SCHEMATHESIS_MAX_EXAMPLES ?? '25';
const origin = await startOrigin();
const kw = await startKeyward({ origin: origin.url });
let status = 1;
try {
  // A few keys so that list, get and the lifecycle calls have something to work on.
  for (let i = 0; i < 3; i++) await kw.admin('POST', '/api_keys', { api_key: { name: `contract ${i}`, permissions: ['users:read'] } });
  const out = path.join(ROOT, 'test-output', 'schemathesis');
  mkdirSync(out, { recursive: true });
  // Operations whose rules JSON Schema cannot express (see README.md here): every check but
  // positive_data_acceptance. The others: every check.
  const keyRoutes = ['GET /api_keys', 'PUT /api_keys/{id}', 'POST /api_keys', 'PUT /keys/{digest}', 'GET /api_keys/{id}/usage'];
  const inexpressible = [
    ...keyRoutes, 'GET /ping', 'POST /auth/token', 'POST /auth/refresh', 'POST /auth/simple', 'PUT /policy', 'GET /workspaces/{workspace}/usage',
    // The same rules under a workspace; and a ceiling or a role made by one example refuses the
    // permissions of another (403), which a schema cannot say either.
    ...keyRoutes.map((n) => n.replace(' /', ' /workspaces/{workspace}/')),
    // A workspace id taken by an earlier example (409) and one that still has active keys (409).
    'POST /workspaces', 'DELETE /workspaces/{workspace}',
    // A workspace that exists only once made (404 otherwise); a user id without control
    // characters; a return_url with a host.
    'POST /workspaces/{workspace}/portal_sessions',
  ];
  const common = [
    'run', path.join(ROOT, 'www/openapi.json'),
    '--url', `${kw.url}/_keyward/v1`,
    '--header', `Authorization: Bearer ${kw.adminToken}`,
    '--checks', 'all',
    '--max-examples', maxExamples,
    '--workers', '1',
    '--generation-deterministic',
  ];
  const runs = [
    [...common, ...inexpressible.flatMap((n) => ['--exclude-name', n]), '--report', 'junit', '--report-dir', path.join(out, 'strict')],
    [...common, ...inexpressible.flatMap((n) => ['--include-name', n]), '--exclude-checks', 'positive_data_acceptance', '--report', 'junit', '--report-dir', path.join(out, 'inexpressible')],
  ];
  status = 0;
  // Spawned, not spawnSync: this process must keep reading wrangler's output (and answering as
  // the origin) while st runs; a blocked parent fills wrangler's pipe and the Worker stops answering.
  for (const args of runs) {
    const code = await new Promise((resolve) => {
      const child = spawn('st', args, { stdio: 'inherit', cwd: ROOT });
      child.on('error', () => resolve(1));
      child.on('exit', (c) => resolve(c ?? 1));
    });
    if (code !== 0) status = code;
  }
} finally {
  writeFileSync(path.join(ROOT, 'test-output', 'schemathesis', 'wrangler.log'), kw.log());
  // The Worker's own uncaught errors, if any, say why a call failed.
  const uncaught = kw.log().split('\n').filter((l) => /uncaught|exception/i.test(l));
  if (uncaught.length) console.error(`schemathesis: the Worker logged:\n${uncaught.slice(0, 20).join('\n')}`);
  await kw.stop();
  await origin.stop();
}
process.exit(status);
