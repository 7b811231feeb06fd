//! The customers' portal (docs/portal.md), the control plane's side.
//!
//! `POST /workspaces/{w}/portal_sessions` gives a one-time link to `/_keyward/portal/?link=…`.
//! Opening it exchanges the link for a session cookie; `/_keyward/portal/api/…` then answers the
//! key routes as that workspace's management key would, audited as `portal:<user>`. Links and
//! sessions are kept only as SHA-256 digests, with their expiry.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use worker::{Env, Method, Request, Response, Result, SqlStorage, SqlStorageValue};

use super::{authorize, json_of, no_query, scoped_call, workspaces, Answer, Caller, Need, Refusal, MAX_BODY_BYTES};
use crate::core::record::PermissionSet;
use crate::edge::ledger::{Actor, Ledger};
use crate::edge::reply;

/// The session cookie's name.
pub const COOKIE: &str = "keyward_portal";
/// The header every state-changing portal call must carry: a cross-site form cannot send it, and
/// a cross-site `fetch` that tries needs a CORS preflight keyward never grants.
pub const CSRF_HEADER: &str = "x-keyward-portal";
const TTL_MIN: u64 = 60;
const TTL_MAX: u64 = 3600;
const TTL_DEFAULT: u64 = 900;
const MAX_USER_CHARS: usize = 128;
const MAX_URL_CHARS: usize = 2048;

/// One row per link: the link's digest, and once opened, its session's.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS portal_grants (
  link_digest TEXT PRIMARY KEY,
  session_digest TEXT UNIQUE,
  workspace TEXT NOT NULL,
  user TEXT NOT NULL,
  return_url TEXT NOT NULL,
  creator TEXT,
  title TEXT,
  logo_url TEXT,
  ttl_ms INTEGER NOT NULL,
  link_expires_at INTEGER NOT NULL,
  session_expires_at INTEGER,
  used_at INTEGER
);
";

pub fn create_schema(sql: &SqlStorage) -> std::result::Result<(), crate::edge::store::StoreError> {
    sql.exec(SCHEMA, None)?;
    Ok(())
}

#[derive(Deserialize)]
struct Grant {
    workspace: String,
    user: String,
    return_url: String,
    /// The id of the management key that made the link (none: the admin token).
    creator: Option<String>,
    title: Option<String>,
    logo_url: Option<String>,
    ttl_ms: i64,
    link_expires_at: i64,
    session_expires_at: Option<i64>,
    used_at: Option<i64>,
}

const GRANT_COLUMNS: &str = "workspace, user, return_url, creator, title, logo_url, ttl_ms, link_expires_at, session_expires_at, used_at";

fn text(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_string())
}

fn opt_text(s: Option<&str>) -> SqlStorageValue {
    s.map_or(SqlStorageValue::Null, text)
}

fn int(n: i64) -> SqlStorageValue {
    SqlStorageValue::Integer(n)
}

fn unavailable<E>(_: E) -> Refusal {
    Refusal(503, "STORE_UNAVAILABLE", "the portal's sessions are unavailable".into())
}

fn grant(sql: &SqlStorage, column: &str, digest: &str) -> std::result::Result<Option<Grant>, Refusal> {
    let query = format!("SELECT {GRANT_COLUMNS} FROM portal_grants WHERE {column} = ?");
    Ok(sql.exec(&query, vec![text(digest)]).map_err(unavailable)?.to_array::<Grant>().map_err(unavailable)?.into_iter().next())
}

fn digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A fresh secret of 256 bits, hex.
fn secret() -> std::result::Result<String, Refusal> {
    let bytes = crate::edge::random_bytes::<32>().map_err(|e| Refusal(500, "INTERNAL", format!("internal error: {e}")))?;
    Ok(hex(&bytes))
}

/// An `http(s)://` URL, or (`path_ok`) a path on this host starting with one `/`.
fn url_field(field: &str, value: &Value, path_ok: bool) -> std::result::Result<String, Refusal> {
    let what = if path_ok { "an http(s) URL or a path starting with /" } else { "an absolute http(s) URL" };
    let text = value.as_str().ok_or_else(|| Refusal::bad(format!("{field}: must be a string, {what}")))?;
    let bad = || Refusal::bad(format!("{field}: must be {what}, at most {MAX_URL_CHARS} characters"));
    if text.len() > MAX_URL_CHARS || text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad());
    }
    if path_ok && text.starts_with('/') && !text.starts_with("//") {
        return Ok(text.to_string());
    }
    match worker::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => Ok(text.to_string()),
        _ => Err(bad()),
    }
}

fn short_text(field: &str, value: &Value, max: usize) -> std::result::Result<String, Refusal> {
    let text = value.as_str().ok_or_else(|| Refusal::bad(format!("{field}: must be a string")))?;
    let n = text.chars().count();
    if n == 0 || n > max || text.trim().is_empty() || text.chars().any(char::is_control) {
        return Err(Refusal::bad(format!("{field}: must be 1 to {max} characters long, not blank, without control characters")));
    }
    Ok(text.to_string())
}

/// `POST /workspaces/{w}/portal_sessions`: the admin token or a management key of that workspace.
pub(super) fn create(req: &Request, env: &Env, ledger: &Ledger, now: i64, method: &Method, id: &str, body: &[u8]) -> Answer {
    if *method != Method::Post {
        return Err(Refusal(405, "METHOD_NOT_ALLOWED", format!("{method} is not allowed here")));
    }
    let caller = authorize(req, env, ledger, Need::Permission("keys:read"), now)?;
    let call = scoped_call(env, ledger, now, caller, Some(id))?;
    no_query(req)?;
    let body = json_of(body, MAX_BODY_BYTES)?;
    let attrs = body.as_object().ok_or_else(|| Refusal::bad("body: must be a JSON object"))?;
    let (mut return_url, mut ttl, mut user, mut title, mut logo) = (None, TTL_DEFAULT, None, None, None);
    for (field, value) in attrs {
        match field.as_str() {
            "return_url" => return_url = Some(url_field("return_url", value, false)?),
            "ttl_seconds" => {
                ttl = super::whole_number(value)
                    .filter(|n| (TTL_MIN..=TTL_MAX).contains(n))
                    .ok_or_else(|| Refusal::bad(format!("ttl_seconds: must be a whole number of seconds from {TTL_MIN} to {TTL_MAX}")))?;
            }
            "user" => user = Some(short_text("user", value, MAX_USER_CHARS)?),
            "title" => title = Some(short_text("title", value, MAX_USER_CHARS)?),
            "logo_url" => logo = Some(url_field("logo_url", value, true)?),
            other => {
                return Err(Refusal::bad(format!("{other}: is not a request field (expected return_url, ttl_seconds, user, title, logo_url)")));
            }
        }
    }
    let return_url = return_url.ok_or_else(|| Refusal::bad("return_url: is required (where the page's return button leads)"))?;
    let user = user.ok_or_else(|| Refusal::bad("user: is required (the customer's own user id, for the audit log)"))?;
    if ledger.workspace_views(Some(id), now)?.is_empty() {
        return Err(workspaces::not_found(id));
    }
    // What the session may do: what its creator holds while it stays active (a management key),
    // or (the admin token) anything the key routes allow within the workspace and its ceiling.
    let creator = match &call.actor {
        Actor::Key(key_id) => Some(key_id.clone()),
        _ => None,
    };
    let token = secret()?;
    // Tests only (never set in wrangler.toml): how long one second of `ttl_seconds` lasts, so
    // that a test sees a link and a session expire without waiting a minute.
    let ms_per_second = env.var("KEYWARD_TEST_PORTAL_MS_PER_SECOND").ok().and_then(|v| v.to_string().parse::<u64>().ok()).unwrap_or(1000);
    let ttl_ms = i64::try_from(ttl * ms_per_second).unwrap_or(900_000);
    let sql = ledger.sql();
    sql.exec("DELETE FROM portal_grants WHERE link_expires_at < ?1 AND (session_expires_at IS NULL OR session_expires_at < ?1)", vec![int(now)])
        .map_err(unavailable)?;
    sql.exec(
        "INSERT INTO portal_grants (link_digest, workspace, user, return_url, creator, title, logo_url, ttl_ms, link_expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        vec![
            text(&digest(&token)),
            text(id),
            text(&user),
            text(&return_url),
            opt_text(creator.as_deref()),
            opt_text(title.as_deref()),
            opt_text(logo.as_deref()),
            int(ttl_ms),
            int(now + ttl_ms),
        ],
    )
    .map_err(unavailable)?;
    ledger.audit_in(&call.actor, "portal_session_create", None, Some(id), &json!({"user": user, "ttl_seconds": ttl}), now)?;
    let mut url = req.url()?;
    url.set_path("/_keyward/portal/");
    url.set_query(Some(&format!("link={token}")));
    let expires_at = crate::core::time::format_rfc3339(now + ttl_ms);
    Ok(reply::success(201, json!({"url": url.as_str(), "workspace": id, "user": user, "expires_at": expires_at}))?)
}

/// Everything under `/_keyward/portal/` that reaches the control plane: the link's exchange
/// (`?link=`) and the session's API (`api/…`).
pub async fn handle(req: Request, env: &Env, rest: &str, ledger: &Ledger, now: i64) -> Result<Response> {
    if rest.is_empty() {
        return exchange(&req, ledger, now);
    }
    let Some(api) = rest.strip_prefix("api/") else {
        return reply::error(404, "NOT_FOUND", "no such portal endpoint");
    };
    let method = req.method();
    // CSRF: a state-changing call needs the header a cross-site form cannot send.
    if !matches!(method, Method::Get | Method::Head) {
        let header = req.headers().get(CSRF_HEADER).ok().flatten();
        let cross_site = req.headers().get("sec-fetch-site").ok().flatten().is_some_and(|s| s == "cross-site");
        if header.as_deref() != Some("1") || cross_site {
            return reply::error(
                403,
                "CSRF_REFUSED",
                "a state-changing portal call needs the X-Keyward-Portal: 1 header, from the portal's own page",
            );
        }
    }
    let session = match session_of(&req, ledger, now) {
        Ok(Some(pair)) => pair,
        Ok(None) => {
            return reply::error(401, "UNAUTHORIZED", "the portal session is missing or has expired: open a new link from your account");
        }
        Err(Refusal(status, code, message)) => return reply::error(status, code, &message),
    };
    let (session_digest, grant) = session;
    if method == Method::Post && api == "logout" {
        let _ = ledger.sql().exec("DELETE FROM portal_grants WHERE session_digest = ?", vec![text(&session_digest)]);
        let response = reply::success(200, json!({"signed_out": true}))?;
        response.headers().set("set-cookie", &format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/_keyward/portal/; Max-Age=0"))?;
        return Ok(response);
    }
    let held = match creator_holds(env, ledger, &grant, now) {
        Ok(held) => held,
        Err(Refusal(status, code, message)) => return reply::error(status, code, &message),
    };
    match (&method, api) {
        (Method::Get, "session") => return session_view(env, ledger, &grant, held.as_deref(), now),
        (_, "session" | "logout") => return reply::error(405, "METHOD_NOT_ALLOWED", &format!("{method} is not allowed here")),
        _ => {}
    }
    // The portal is its workspace: paths naming workspaces are not part of it.
    if api.starts_with("workspaces") {
        return reply::error(404, "NOT_FOUND", "no such portal endpoint");
    }
    let may = match held.as_deref() {
        Some(list) => PermissionSet::new(list),
        None => PermissionSet::new(&["*"]),
    };
    let holds = match held {
        Some(_) => may.clone(),
        None => workspaces::ceiling(ledger, &grant.workspace).ok().flatten().unwrap_or_else(|| PermissionSet::new(&["*"])),
    };
    let caller = Caller { actor: Actor::Portal(format!("portal:{}", grant.user)), workspace: Some(grant.workspace), holds: Some(holds) };
    super::handle_as(req, env, api, ledger, now, Some(super::Preset { caller, may })).await
}

/// What the management key that made the session holds now (its permissions and its role's);
/// none for a session made with the admin token. A creator no longer active (revoked, expired,
/// deleted) ends the session: 401.
fn creator_holds(env: &Env, ledger: &Ledger, grant: &Grant, now: i64) -> std::result::Result<Option<Vec<String>>, Refusal> {
    let Some(id) = grant.creator.as_deref() else { return Ok(None) };
    let record = ledger
        .record_by_id(id)?
        .filter(|r| r.status(now) == crate::core::record::KeyStatus::Active)
        .ok_or_else(|| Refusal(401, "UNAUTHORIZED", "the management key that opened this key page is no longer active: open a new link from your account".into()))?;
    let policy = super::policy_roles(env, ledger)?;
    let mut all = record.permissions.clone();
    all.extend(policy.roles().permissions(&record.role).iter().cloned());
    Ok(Some(all))
}

/// The session a request's cookie names, if it is live: (its digest, its grant).
fn session_of(req: &Request, ledger: &Ledger, now: i64) -> std::result::Result<Option<(String, Grant)>, Refusal> {
    let cookies = req.headers().get("cookie").ok().flatten().unwrap_or_default();
    let Some(token) = cookies.split(';').filter_map(|c| c.trim().split_once('=')).find(|(k, _)| *k == COOKIE).map(|(_, v)| v.trim()) else {
        return Ok(None);
    };
    if token.is_empty() {
        return Ok(None);
    }
    let d = digest(token);
    Ok(grant(ledger.sql(), "session_digest", &d)?.filter(|g| g.session_expires_at.is_some_and(|at| at > now)).map(|g| (d, g)))
}

fn session_view(env: &Env, ledger: &Ledger, grant: &Grant, held: Option<&[String]>, now: i64) -> Result<Response> {
    let var = |name: &str| env.var(name).ok().map(|v| v.to_string()).filter(|v| !v.is_empty());
    let ceiling = match ledger.workspace_ceiling(&grant.workspace) {
        Ok(Some(text)) => serde_json::from_str::<Value>(&text).unwrap_or(json!(["*"])),
        Ok(None) => json!(["*"]),
        Err(_) => return reply::error(503, "STORE_UNAVAILABLE", "the key store is unavailable"),
    };
    let mut data = Map::new();
    data.insert("workspace".into(), json!(grant.workspace));
    data.insert("user".into(), json!(grant.user));
    data.insert("return_url".into(), json!(grant.return_url));
    data.insert("title".into(), json!(grant.title.clone().or_else(|| var("KEYWARD_PORTAL_TITLE")).unwrap_or_else(|| "API keys".into())));
    data.insert("logo_url".into(), json!(grant.logo_url.clone().or_else(|| var("KEYWARD_PORTAL_LOGO_URL"))));
    data.insert("permission_ceiling".into(), ceiling);
    data.insert("holds".into(), held.map_or(Value::Null, |h| json!(h)));
    data.insert("expires_at".into(), json!(crate::core::time::format_rfc3339(grant.session_expires_at.unwrap_or(now))));
    reply::success(200, Value::Object(data))
}

/// `GET /_keyward/portal/?link=…`: the one-time link, exchanged for the session cookie, then
/// a redirect to the page's clean URL. A link unknown, used or expired gets a page saying so.
fn exchange(req: &Request, ledger: &Ledger, now: i64) -> Result<Response> {
    let url = req.url()?;
    if req.method() != Method::Get {
        return page(405, "Not allowed", "This address only opens a portal link.");
    }
    let token = url.query_pairs().find(|(k, _)| k == "link").map(|(_, v)| v.to_string()).unwrap_or_default();
    let link_digest = digest(&token);
    let found = match grant(ledger.sql(), "link_digest", &link_digest) {
        Ok(found) => found,
        Err(_) => return page(503, "Unavailable", "The key store is unavailable right now. Try again in a moment."),
    };
    let Some(found) = found else {
        return page(401, "This link is not valid", "The link is not one keyward gave out. Go back to your account and open the key page again.");
    };
    if found.used_at.is_some() {
        return page(410, "This link was already used", "A key page link works once. Go back to your account and open the key page again.");
    }
    if found.link_expires_at <= now {
        return page(410, "This link has expired", "The link was not opened in time. Go back to your account and open the key page again.");
    }
    let session = match secret() {
        Ok(s) => s,
        Err(Refusal(status, _, message)) => return page(status, "Internal error", &message),
    };
    let expires = now + found.ttl_ms;
    let updated = ledger.sql().exec(
        "UPDATE portal_grants SET used_at = ?, session_digest = ?, session_expires_at = ? WHERE link_digest = ? AND used_at IS NULL",
        vec![int(now), text(&digest(&session)), int(expires), text(&link_digest)],
    );
    if updated.is_err() {
        return page(503, "Unavailable", "The key store is unavailable right now. Try again in a moment.");
    }
    let _ = ledger.audit_in(&Actor::Portal(format!("portal:{}", found.user)), "portal_session_open", None, Some(&found.workspace), &json!({}), now);
    let mut clean = url.clone();
    clean.set_query(None);
    let secure = if url.scheme() == "https" { "; Secure" } else { "" };
    let max_age = (found.ttl_ms / 1000).max(1);
    let response = Response::empty()?.with_status(303);
    let headers = response.headers();
    headers.set("location", clean.path())?;
    headers.set("set-cookie", &format!("{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/_keyward/portal/; Max-Age={max_age}{secure}"))?;
    headers.set("cache-control", "no-store")?;
    headers.set("referrer-policy", "no-referrer")?;
    Ok(response)
}

/// A plain HTML page (no script) for a link that cannot be opened.
fn page(status: u16, title: &str, message: &str) -> Result<Response> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title></head><body><main><h1>{title}</h1><p>{message}</p></main></body></html>"
    );
    let response = Response::from_html(html)?.with_status(status);
    let headers = response.headers();
    headers.set("content-security-policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")?;
    headers.set("cache-control", "no-store")?;
    headers.set("referrer-policy", "no-referrer")?;
    headers.set("x-content-type-options", "nosniff")?;
    Ok(response)
}
