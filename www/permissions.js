// The permission matrix of the console: modules by actions, with module:* and * wildcards.
// Permissions that do not fit the matrix are kept as they are.
export const MODULES = ['projects', 'users', 'points', 'rewards', 'suppressions', 'friend_invitations',
  'webhook_subscriptions', 'webhook_events', 'events', 'profiles', 'keys'];
export const ACTIONS = ['create', 'read', 'update', 'delete'];

/** Splits a key's permissions into the matrix's checked boxes and the rest. */
export function toMatrix(permissions) {
  const checked = new Set();
  const extra = [];
  let everything = false;
  for (const p of permissions) {
    const [module, action] = p.split(':');
    if (p === '*') everything = true;
    else if (MODULES.includes(module) && (ACTIONS.includes(action) || action === '*')) checked.add(p);
    else extra.push(p);
  }
  return { everything, checked, extra };
}

/** The permission list for the boxes checked: `*` alone, or module:* instead of its actions. */
export function fromMatrix(everything, checked, extra) {
  if (everything) return ['*'];
  const whole = new Set(checked.filter((p) => p.endsWith(':*')).map((p) => p.split(':')[0]));
  const out = checked.filter((p) => p.endsWith(':*') || !whole.has(p.split(':')[0]));
  for (const p of extra) if (!out.includes(p)) out.push(p);
  return out;
}
