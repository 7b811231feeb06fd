// Waits for the local keyward, creates a demo key through the management API and prints how to
// try it. Used by scripts/dev.sh.
const [base, admin] = process.argv.slice(2);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
for (let i = 0; ; i++) {
  try { await fetch(`${base}/_keyward/v1/ping`); break; } catch { if (i > 300) throw new Error('keyward did not start'); await sleep(200); }
}
const response = await fetch(`${base}/_keyward/v1/api_keys`, {
  method: 'POST',
  headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
  body: JSON.stringify({ api_key: { name: 'demo', description: 'created by scripts/dev.sh', permissions: ['users:read', 'projects:read'] } }),
});
const reply = await response.json();
if (!reply.success) throw new Error(`could not create the demo key: ${JSON.stringify(reply)}`);
const { api_key: key, id } = reply.data;
console.log(`
keyward is running on ${base} in front of the demo origin.
  console:   ${base}/_keyward/console/   (sign in with the admin token)
  admin:     ADMIN=${admin}
  demo key:  KEY=${key}
             ID=${id}   (may read users and projects, nothing else)

Try it:
  curl -s ${base}/api/v2/projects/1/users -H "Authorization: Bearer ${key}"
  curl -s -X DELETE ${base}/api/v2/projects/1 -H "Authorization: Bearer ${key}"
  curl -s -X PUT ${base}/_keyward/v1/api_keys/${id} -H "Authorization: Bearer ${admin}" -d '{"api_key":{"active":false}}'
  curl -s ${base}/api/v2/projects/1/users -H "Authorization: Bearer ${key}"
`);
