// The management API, called with the token of this tab (sessionStorage: gone when the tab closes).
const STORAGE = 'keyward.token';
const BASE = new URL('../v1', document.baseURI).pathname; // /_keyward/console/ -> /_keyward/v1

export const getToken = () => sessionStorage.getItem(STORAGE);

export function setToken(token) {
  if (token) sessionStorage.setItem(STORAGE, token);
  else sessionStorage.removeItem(STORAGE);
}

// The workspace picked in the top bar (this tab only): key calls go to /workspaces/{w}/..., which
// answers that workspace's keys only.
const WORKSPACE = 'keyward.workspace';
const KEY_ROUTES = /^\/(api_keys|audit|verify|revocations|keys\/)/;

export const getWorkspace = () => sessionStorage.getItem(WORKSPACE) ?? '';

export function setWorkspace(workspace) {
  if (workspace) sessionStorage.setItem(WORKSPACE, workspace);
  else sessionStorage.removeItem(WORKSPACE);
}

/** Calls the API; never throws. Returns {status, body} with body the parsed envelope (or null). */
export async function api(method, path, body) {
  const headers = { authorization: `Bearer ${getToken() ?? ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  try {
    const workspace = getWorkspace();
    const scoped = workspace && KEY_ROUTES.test(path) ? `/workspaces/${encodeURIComponent(workspace)}${path}` : path;
    const response = await fetch(`${BASE}${scoped}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let parsed = null;
    try { parsed = await response.json(); } catch { /* not JSON */ }
    return { status: response.status, body: parsed };
  } catch (e) {
    return { status: 0, body: { success: false, error_message: `keyward could not be reached: ${e.message}` } };
  }
}
