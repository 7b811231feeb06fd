// A hand-written API-key check: Bearer key, SHA-256, KV record (cached in the isolate), expiry,
// the route's permission from a first-match route table, the IP allowlist (IPv4 CIDRs), the
// event lists, then forward without the key. No checksum, no IPv6, no profile or attribute rules:
// the minimum a user would write.
import policy from '../../config/default-policy.json';

const routes = policy.rules.map((r) => ({
  method: r.method,
  regex: new RegExp(`^${r.path.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, '(?<$1>[^/]+)')}$`),
  permission: r.permission,
  event: r.event,
}));
const cache = new Map();
const json = (status, code, message) => new Response(JSON.stringify({ success: false, data: null, error_code: code, error_message: message }), { status, headers: { 'content-type': 'application/json' } });

function ipv4(text) {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) { const v = Number(p); if (!/^\d{1,3}$/.test(p) || v > 255) return null; n = n * 256 + v; }
  return n;
}
function inCidr(ip, cidr) {
  const [base, bits = '32'] = cidr.split('/');
  const b = ipv4(base);
  if (b === null) return false;
  const shift = 32 - Number(bits);
  return Math.floor(ip / 2 ** shift) === Math.floor(b / 2 ** shift);
}
function grants(perms, needed) {
  const [module] = needed.split(':');
  return perms.includes('*') || perms.includes(needed) || perms.includes(`${module}:*`);
}

export default {
  async fetch(request, env) {
    const auth = request.headers.get('authorization') ?? '';
    const key = auth.startsWith('Bearer ') ? auth.slice(7).trim() : null;
    if (!key) return json(401, 'MISSING_KEY', 'no API key was sent');
    const digest = [...new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(key)))]
      .map((b) => b.toString(16).padStart(2, '0')).join('');
    let entry = cache.get(digest);
    // CACHE_TTL_SECONDS as keyward reads it (30 unless set; 0: KV on every request).
    if (!entry || !(Date.now() - entry.at < Number(env.CACHE_TTL_SECONDS ?? 30) * 1000)) {
      const text = await env.KEYS.get(`key:${digest}`);
      entry = { record: text ? JSON.parse(text) : null, at: Date.now() };
      cache.set(digest, entry);
    }
    const record = entry.record;
    if (!record) return json(401, 'UNKNOWN_KEY', 'the API key is not known');
    if (record.revoked_at) return json(401, 'KEY_REVOKED', 'the API key has been revoked');
    if (!record.active || (record.expires_at && Date.parse(record.expires_at) <= Date.now())) return json(401, 'KEY_EXPIRED', 'the API key has expired');
    if (record.ip_allowlist?.length) {
      const ip = ipv4(request.headers.get('cf-connecting-ip') ?? '');
      if (ip === null || !record.ip_allowlist.some((c) => inCidr(ip, c))) return json(403, 'IP_NOT_ALLOWED', 'not from this address');
    }
    const url = new URL(request.url);
    let match = null;
    let rule = null;
    for (const r of routes) {
      if (r.method !== '*' && r.method !== request.method) continue;
      match = r.regex.exec(url.pathname);
      if (match) { rule = r; break; }
    }
    if (!rule) return json(403, 'ROUTE_NOT_ALLOWED', 'no route');
    if (!grants(record.permissions, rule.permission)) return json(403, 'PERMISSION_DENIED', `lacks ${rule.permission}`);
    let body;
    if (rule.event) {
      const [where, name] = rule.event.split(':');
      let event;
      if (where === 'path') event = match.groups[name];
      else { body = await request.text(); try { event = JSON.parse(body)[name]; } catch { return json(400, 'BAD_REQUEST', 'bad body'); } }
      if (typeof event !== 'string') return json(400, 'BAD_REQUEST', 'no event');
      if (record.event_denylist.includes(event) || (record.event_allowlist.length && !record.event_allowlist.includes(event))) return json(403, 'EVENT_NOT_ALLOWED', 'event');
    }
    const headers = new Headers(request.headers);
    headers.delete('authorization');
    headers.set('x-keyward-key-id', record.id);
    return fetch(env.ORIGIN_URL + url.pathname + url.search, { method: request.method, headers, body: body ?? (request.method === 'GET' || request.method === 'HEAD' ? undefined : request.body) });
  },
};
