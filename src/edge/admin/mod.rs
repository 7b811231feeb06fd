//! The management API under `/_keyward/v1/`, answered inside the control-plane Durable Object
//! against the source of truth (the ledger). Each concern has its module: key CRUD and lifecycle
//! (`keys`), lists (`list`), origin push, batch push and bulk revocation (`push`), the route policy
//! (`policy`), the audit log (`audit`) and the gate's decision as data (`verify`). `ping` and the
//! OpenAPI document are answered by the Worker itself (`edge`), off the control plane.

mod audit;
mod keys;
pub(crate) mod leaks;
mod list;
mod policy;
pub mod portal;
mod push;
mod usage;
mod verify;
mod workspaces;
mod webhooks;

pub use verify::{openapi, ping};

use serde_json::{Map, Value};
use worker::{Env, Method, Request, Response, Result};

use super::ledger::{Actor, Ledger};
use super::reply;
use super::store::StoreError;
use crate::core::decision::decide_permission;
use crate::core::digest::key_digest;
use crate::core::key::{is_key_id, parse_key};
use crate::core::record::{CompiledKey, FieldError, KeyRecord};
use crate::core::GateRequest;

/// Largest management request body; bigger ones get a 400 before they are parsed.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest batch push body: 1 000 records of up to about 8 KiB each.
pub const MAX_BATCH_BODY_BYTES: usize = 8 * 1024 * 1024;

/// A refusal: status, stable code, message naming the field.
pub(crate) struct Refusal(pub u16, pub &'static str, pub String);

impl Refusal {
    fn bad(message: impl Into<String>) -> Refusal {
        Refusal(400, "BAD_REQUEST", message.into())
    }
    fn field(e: FieldError) -> Refusal {
        Refusal::bad(e.to_string())
    }
    fn not_found(id: &str) -> Refusal {
        Refusal(404, "NOT_FOUND", format!("no key has the id {id}"))
    }
}

impl From<StoreError> for Refusal {
    fn from(_: StoreError) -> Self {
        Refusal(503, "STORE_UNAVAILABLE", "the key store is unavailable".into())
    }
}

impl From<worker::Error> for Refusal {
    fn from(e: worker::Error) -> Self {
        Refusal(500, "INTERNAL", format!("internal error: {e}"))
    }
}

type Answer = std::result::Result<Response, Refusal>;

/// A `local` rate limit needs the Rate Limiting binding of its tier (docs/limits-and-usage.md): a
/// record naming a tier this deployment does not declare is refused, and nothing is written. Only
/// a changed limit is checked, so a tier taken out of wrangler.toml does not block other edits.
fn check_tier(env: &Env, record: &KeyRecord, old: Option<&KeyRecord>) -> std::result::Result<(), Refusal> {
    match record.ratelimit {
        Some(rate) if rate.is_local() && old.and_then(|o| o.ratelimit) != Some(rate) && !crate::edge::limits::has_tier(env, &rate) => {
            let tiers = crate::edge::limits::declared_tiers(env);
            Err(Refusal::bad(format!(
                "ratelimit: no Rate Limiting binding {} is declared for \"local\" mode (declared tiers, limit/period: {}); use one of them, or \"exact\"",
                rate.local_binding(),
                if tiers.is_empty() { "none".to_string() } else { tiers.join(", ") }
            )))
        }
        _ => Ok(()),
    }
}

/// What one management call works with: the source of truth, the time, and who is calling.
pub(crate) struct Call<'a> {
    env: &'a Env,
    ledger: &'a Ledger,
    now: i64,
    actor: Actor,
    /// The workspace the call is confined to: the management key's own ("current"), or the one
    /// the path names (`/workspaces/{w}/...`, "specified"). Another workspace's key is a 404.
    scope: Option<String>,
    /// Set when the scope is the management key's own workspace: what that key holds (its
    /// permissions and its role's), beyond which it can give no key anything.
    confined: Option<crate::core::record::PermissionSet>,
}

impl Call<'_> {
    /// Whether a record belongs to the workspace the call is confined to (any, when none).
    pub(crate) fn in_scope(&self, record: &KeyRecord) -> bool {
        record.in_scope(self.scope.as_deref())
    }
}

/// Who may call what.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Admin,
    Permission(&'static str),
    /// The admin token, or a management key confined to its workspace holding the permission
    /// (push and bulk revocation, within that workspace).
    AdminOrConfined(&'static str),
}

/// Who is calling: the actor, and for a management key its workspace and what it holds.
struct Caller {
    actor: Actor,
    workspace: Option<String>,
    holds: Option<crate::core::record::PermissionSet>,
}

/// A caller already known (a portal session), and what it may call: the `Need` of each route is
/// checked against `may` instead of a token.
pub(crate) struct Preset {
    caller: Caller,
    may: crate::core::record::PermissionSet,
}

pub async fn handle(req: Request, env: &Env, rest: &str, ledger: &Ledger, now: i64) -> Result<Response> {
    handle_as(req, env, rest, ledger, now, None).await
}

/// The management API for the caller in `req`'s token, or (`preset`) a caller already known.
pub(crate) async fn handle_as(mut req: Request, env: &Env, rest: &str, ledger: &Ledger, now: i64, preset: Option<Preset>) -> Result<Response> {
    let segments: Vec<&str> = rest.split('/').collect();
    let method = req.method();
    // The body is read whole before anything is answered, whatever the call: an answer sent while
    // the caller's body is still unread breaks the caller's request (workerd then fails it with
    // "Can't read from request stream after response has been sent"). The calls read it again
    // from this in-memory copy.
    let body = req.bytes().await.unwrap_or_default();
    if !body.is_empty() && !matches!(method, Method::Get | Method::Head) {
        let mut init = worker::RequestInit::new();
        init.with_method(method.clone()).with_headers(req.headers().clone());
        init.with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
        req = Request::new_with_init(req.url()?.as_str(), &init)?;
    }
    let answer = match segments.as_slice() {
        // The workspaces themselves (synchronous: their body is the one already read).
        ["workspaces", ..] if preset.is_some() => Err(Refusal(404, "NOT_FOUND", "no such endpoint".into())),
        ["workspaces"] | ["workspaces", _] | ["workspaces", _, "usage"] => workspaces::route(&req, env, ledger, now, &method, &segments, &body),
        ["workspaces", id, "portal_sessions"] => workspaces::checked(id).and_then(|id| portal::create(&req, env, ledger, now, &method, id, &body)),
        _ => route(&mut req, env, ledger, now, &method, &segments, preset).await,
    };
    match answer {
        Ok(response) => Ok(response),
        Err(Refusal(405, code, message)) => {
            let response = reply::error(405, code, &message)?;
            response.headers().set("allow", allowed_methods(&segments))?;
            Ok(response)
        }
        Err(Refusal(status, code, message)) => reply::error(status, code, &message),
    }
}

/// The `Allow` header of a 405: the methods each endpoint answers.
pub(crate) fn allowed_methods(segments: &[&str]) -> &'static str {
    let segments = match segments {
        ["workspaces"] => return "GET, POST",
        ["workspaces", _] => return "GET, PUT, DELETE",
        ["workspaces", _, "usage"] => return "GET",
        ["workspaces", _, rest @ ..] => rest,
        _ => segments,
    };
    match segments {
        ["api_keys"] => "GET, POST",
        ["api_keys", _] => "GET, PUT, DELETE",
        ["api_keys", _, "usage"] => "GET",
        ["audit"] | ["ping"] | ["openapi.json"] => "GET",
        ["keys", "batch"] => "POST",
        ["keys", _] => "PUT",
        ["policy"] => "GET, PUT",
        ["webhooks"] => "GET, POST",
        ["webhooks", _] => "GET, PUT, DELETE",
        ["webhooks", _, "deliveries"] => "GET",
        _ => "POST",
    }
}

async fn route(req: &mut Request, env: &Env, ledger: &Ledger, now: i64, method: &Method, segments: &[&str], preset: Option<Preset>) -> Answer {
    // Every key route again under `/workspaces/{w}/`.
    let (specified, segments) = match segments {
        ["workspaces", id, rest @ ..] => (Some(workspaces::checked(id)?), rest),
        _ => (None, segments),
    };
    keys_route(req, env, ledger, now, method, segments, specified, preset).await
}

/// A key route, flat or (with `specified`) under `/workspaces/{specified}/`; `preset`: a portal
/// session's caller, in place of the request's token.
#[expect(clippy::too_many_arguments, reason = "the route's parts, passed through as they are")]
async fn keys_route(
    req: &mut Request,
    env: &Env,
    ledger: &Ledger,
    now: i64,
    method: &Method,
    segments: &[&str],
    specified: Option<&str>,
    preset: Option<Preset>,
) -> Answer {
    if specified.is_some() && matches!(segments, ["policy"] | ["ping"] | ["openapi.json"]) {
        return Err(Refusal(404, "NOT_FOUND", "no such management endpoint".into()));
    }
    let need = match (method, segments) {
        (Method::Post, ["keys", "batch"]) => Need::AdminOrConfined("keys:update"),
        (_, ["keys", "batch"]) => {
            return Err(Refusal(405, "METHOD_NOT_ALLOWED", format!("{method} is not allowed here")));
        }
        (Method::Get, ["api_keys"] | ["api_keys", _] | ["api_keys", _, "usage"] | ["audit"]) => Need::Permission("keys:read"),
        (Method::Post, ["api_keys"]) => Need::Permission("keys:create"),
        (Method::Put, ["api_keys", _]) | (Method::Post, ["api_keys", _, "revoke" | "roll" | "credits"]) => {
            Need::Permission("keys:update")
        }
        (Method::Delete, ["api_keys", _]) => Need::Permission("keys:delete"),
        (Method::Post, ["verify"]) => Need::Permission("keys:read"),
        (Method::Get, ["policy"]) => Need::Permission("keys:read"),
        (Method::Put, ["keys", _]) => Need::AdminOrConfined("keys:update"),
        (Method::Post, ["revocations"]) => Need::AdminOrConfined("keys:update"),
        (Method::Put, ["policy"]) => Need::Admin,
        // A workspace's management key reports leaks of its own workspace's keys only; another
        // workspace's key in its report is a false positive, left as it is.
        (Method::Post, ["leaks"]) => Need::AdminOrConfined("keys:update"),
        (Method::Get | Method::Post, ["webhooks"])
        | (Method::Get | Method::Put | Method::Delete, ["webhooks", _])
        | (Method::Get, ["webhooks", _, "deliveries"])
        | (Method::Post, ["webhooks", _, "deliveries", _, "redeliver"]) => Need::Admin,
        (_, ["webhooks"] | ["webhooks", _] | ["webhooks", _, "deliveries"] | ["webhooks", _, "deliveries", _, "redeliver"]) => {
            return Err(Refusal(405, "METHOD_NOT_ALLOWED", format!("{method} is not allowed here")));
        }
        (_, ["api_keys"] | ["api_keys", _] | ["api_keys", _, "revoke" | "roll" | "usage" | "credits"] | ["keys", _] | ["policy"]
            | ["revocations"] | ["verify"] | ["ping"] | ["openapi.json"] | ["audit"] | ["leaks"]) => {
            return Err(Refusal(405, "METHOD_NOT_ALLOWED", format!("{method} is not allowed here")));
        }
        _ => return Err(Refusal(404, "NOT_FOUND", "no such management endpoint".into())),
    };
    let caller = match preset {
        None => authorize(req, env, ledger, need, now)?,
        Some(Preset { caller, may }) => match need {
            Need::Permission(p) | Need::AdminOrConfined(p) if may.covers(p) => caller,
            Need::Permission(p) | Need::AdminOrConfined(p) => {
                return Err(Refusal(403, "PERMISSION_DENIED", format!("this session does not hold {p}")));
            }
            Need::Admin => return Err(Refusal(403, "PERMISSION_DENIED", "this call needs the admin token".into())),
        },
    };
    let call = scoped_call(env, ledger, now, caller, specified)?;
    match (method, segments) {
        (Method::Get, ["api_keys"]) => list::list(req, &call).await,
        (Method::Post, ["api_keys"]) => keys::create(req, &call).await,
        (Method::Get, ["api_keys", id]) => keys::get(req, &call, id).await,
        (Method::Get, ["api_keys", id, "usage"]) => usage::usage(req, &call, id),
        (Method::Put, ["api_keys", id]) => keys::update(req, &call, id).await,
        (Method::Delete, ["api_keys", id]) => boxed(keys::delete(&call, id)).await,
        (Method::Post, ["api_keys", id, "revoke"]) => keys::revoke(&call, id),
        (Method::Post, ["api_keys", id, "roll"]) => keys::roll(req, &call, id).await,
        (Method::Post, ["api_keys", id, "credits"]) => boxed(keys::credits(req, &call, id)).await,
        (Method::Post, ["keys", "batch"]) => push::batch(req, &call).await,
        (Method::Put, ["keys", digest]) => push::push(req, &call, digest).await,
        (Method::Post, ["revocations"]) => push::revocations(req, &call).await,
        (Method::Post, ["leaks"]) => boxed(leaks::report(req, &call)).await,
        (Method::Post, ["webhooks"]) => boxed(webhooks::create(req, &call)).await,
        (Method::Get, ["webhooks"]) => webhooks::list(req, &call),
        (Method::Get, ["webhooks", id]) => webhooks::get(req, &call, id),
        (Method::Put, ["webhooks", id]) => boxed(webhooks::update(req, &call, id)).await,
        (Method::Delete, ["webhooks", id]) => webhooks::delete(&call, id),
        (Method::Get, ["webhooks", id, "deliveries"]) => webhooks::deliveries(req, &call, id),
        (Method::Post, ["webhooks", id, "deliveries", msg, "redeliver"]) => webhooks::redeliver(&call, id, msg),
        (Method::Get, ["policy"]) => policy::get(env, &call),
        (Method::Put, ["policy"]) => policy::put(req, &call).await,
        (Method::Get, ["audit"]) => audit::list(req, &call),
        (Method::Post, ["verify"]) => verify::verify(req, &call).await,
        _ => Err(Refusal(404, "NOT_FOUND", "no such management endpoint".into())),
    }
}

/// Polls a call's future through a pointer, so that its code is compiled on its own rather than
/// inlined into `route`'s (the Worker's wasm has a size budget).
fn boxed<'a>(answer: impl std::future::Future<Output = Answer> + 'a) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + 'a>> {
    Box::pin(answer)
}

/// The call as confined by the caller's workspace ("current") and the path's ("specified"): a
/// management key of one workspace naming another gets a 404, as for anything else it cannot see.
fn scoped_call<'a>(env: &'a Env, ledger: &'a Ledger, now: i64, caller: Caller, specified: Option<&str>) -> std::result::Result<Call<'a>, Refusal> {
    let scope = match (&caller.workspace, specified) {
        (Some(own), Some(named)) if own != named => return Err(workspaces::not_found(named)),
        (Some(own), _) => Some(own.clone()),
        (None, named) => named.map(str::to_string),
    };
    let confined = if caller.workspace.is_some() { caller.holds } else { None };
    Ok(Call { env, ledger, now, actor: caller.actor, scope, confined })
}

/// `ADMIN_TOKEN` (compared in constant time) or a keyward key holding the needed permission.
fn authorize(req: &Request, env: &Env, ledger: &Ledger, need: Need, now: i64) -> std::result::Result<Caller, Refusal> {
    let unauthorized = || Refusal(401, "UNAUTHORIZED", "send Authorization: Bearer <admin token or management key>".into());
    let header = req.headers().get("authorization").ok().flatten().ok_or_else(unauthorized)?;
    let token = header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(unauthorized)?;
    let admin = env.secret("ADMIN_TOKEN").map(|s| s.to_string()).or_else(|_| env.var("ADMIN_TOKEN").map(|v| v.to_string()));
    if let Ok(admin) = admin {
        if !admin.is_empty() && constant_time_eq(token.as_bytes(), admin.as_bytes()) {
            return Ok(Caller { actor: Actor::Admin, workspace: None, holds: None });
        }
    }
    if parse_key(token).is_err() {
        return Err(Refusal(401, "UNAUTHORIZED", "the management token is not valid".into()));
    }
    let record = ledger
        .record(&key_digest(token))?
        .ok_or_else(|| Refusal(401, "UNAUTHORIZED", "the management token is not valid".into()))?;
    let key = CompiledKey::compile(record).map_err(|_| Refusal::from(StoreError("stored record is invalid".into())))?;
    let permission = match need {
        Need::Permission(p) => p,
        Need::AdminOrConfined(p) if key.record.workspace.is_some() => p,
        Need::Admin | Need::AdminOrConfined(_) => {
            return Err(Refusal(403, "PERMISSION_DENIED", "this call needs the admin token".into()));
        }
    };
    let client_ip = req.headers().get("cf-connecting-ip").ok().flatten();
    let (origin, referer) = (req.headers().get("origin").ok().flatten(), req.headers().get("referer").ok().flatten());
    let request = GateRequest { client_ip: client_ip.as_deref(), origin: origin.as_deref(), referer: referer.as_deref(), ..GateRequest::default() };
    let mut decision = decide_permission(&key, Some(permission), &request, now);
    // The key's role adds its permissions here too, as at the gate: every other check passed
    // when the permission is what is missing.
    let policy = policy_roles(env, ledger)?;
    let roles = policy.roles();
    if decision.code == crate::core::Code::PermissionDenied && roles.grants(&key.record.role, permission) {
        decision.valid = true;
    }
    if decision.valid {
        let holds = key.record.workspace.is_some().then(|| held(&key.record, roles));
        Ok(Caller { actor: Actor::Key(key.record.id.clone()), workspace: key.record.workspace.clone(), holds })
    } else if decision.code.status() == 401 {
        Err(Refusal(401, "UNAUTHORIZED", decision.message))
    } else {
        Err(Refusal(403, "PERMISSION_DENIED", decision.message))
    }
}

/// The roles of the policy in force.
fn policy_roles(env: &Env, ledger: &Ledger) -> std::result::Result<crate::core::RoutePolicy, Refusal> {
    let text = match ledger.policy()? {
        Some((doc, _)) => doc,
        None => crate::edge::store::default_policy(env),
    };
    crate::core::RoutePolicy::parse(&text).map_err(|_| Refusal::from(StoreError("the route policy is invalid".into())))
}

/// What a record holds: its permissions and its role's.
fn held(record: &KeyRecord, roles: &crate::core::policy::Roles) -> crate::core::record::PermissionSet {
    let all: Vec<&str> = record.permissions.iter().map(String::as_str).chain(roles.permissions(&record.role).iter().map(String::as_str)).collect();
    crate::core::record::PermissionSet::new(&all)
}

/// What a written record may hold: its role must be one the policy knows, and nothing it holds
/// (its permissions and its role's) may go beyond its workspace's ceiling or, for a management
/// key confined to its workspace, beyond what that key holds. Refused with 403 naming the
/// permission; nothing is written. `changed`: whether permissions, role or workspace are part of
/// this write (a write that changes none of them is not refused for a ceiling lowered since).
fn check_grants(call: &Call<'_>, record: &KeyRecord, changed: bool) -> std::result::Result<(), Refusal> {
    let policy = policy_roles(call.env, call.ledger)?;
    let roles = policy.roles();
    if !roles.knows(&record.role) {
        let mut known = String::from(crate::core::policy::DEFAULT_ROLE);
        for name in roles.names() {
            known.push_str(", ");
            known.push_str(name);
        }
        return Err(Refusal::bad(format!("role: \"{}\" is not a role the policy defines (known: {known})", record.role)));
    }
    if !changed {
        return Ok(());
    }
    let ceiling = match record.workspace.as_deref() {
        Some(w) => workspaces::ceiling(call.ledger, w)?,
        None => None,
    };
    let own = record.permissions.len();
    for (i, permission) in record.permissions.iter().chain(roles.permissions(&record.role)).enumerate() {
        let limit = match (&ceiling, record.workspace.as_deref(), &call.confined) {
            (Some(set), Some(w), _) if !set.covers(permission) => format!("the permission ceiling of workspace {w}"),
            (_, _, Some(holds)) if !holds.covers(permission) => "what the calling management key holds".to_string(),
            _ => continue,
        };
        let what = if i < own {
            format!("permissions: {permission} is")
        } else {
            format!("role: the role \"{}\" grants {permission}, which is", record.role)
        };
        return Err(Refusal(403, "PERMISSION_DENIED", format!("{what} beyond {limit}")));
    }
    Ok(())
}

/// The workspace a written record belongs to under the call's scope: a key written under a
/// workspace belongs to it (naming another is a 400); a key never moves to another workspace.
fn place(call: &Call<'_>, record: &mut KeyRecord, old: Option<&KeyRecord>) -> std::result::Result<(), Refusal> {
    if let Some(w) = &call.scope {
        match record.workspace.as_deref() {
            // Not named: the call's (a key found under the scope is already its own).
            None => record.workspace = Some(w.clone()),
            Some(named) if named == w => {}
            _ => return Err(Refusal::bad(format!("workspace: a key written in workspace {w} belongs to it (a key cannot move to another workspace)"))),
        }
    }
    if let Some(old_ws) = old.and_then(|o| o.workspace.as_deref()) {
        if record.workspace.as_deref() != Some(old_ws) {
            return Err(Refusal::bad(format!("workspace: the key belongs to workspace {old_ws}; a key cannot move to another workspace")));
        }
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Compare digests so the time taken does not depend on where, or whether, lengths differ.
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

/// A JSON number that is a whole number (`60` or `60.0`) from 0 to 2^53, as an integer.
fn whole_number(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return Some(n);
    }
    let f = value.as_f64()?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "range and fraction checked first")]
    ((0.0..=9_007_199_254_740_992.0).contains(&f) && f.fract() == 0.0).then_some(f as u64)
}

async fn read_json(req: &mut Request) -> std::result::Result<Value, Refusal> {
    read_json_up_to(req, MAX_BODY_BYTES).await
}

async fn read_json_up_to(req: &mut Request, limit: usize) -> std::result::Result<Value, Refusal> {
    let declared = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if declared > limit {
        return Err(Refusal::bad(format!("body: must be at most {limit} bytes")));
    }
    let bytes = req.bytes().await.map_err(|_| Refusal::bad("body: could not be read"))?;
    json_of(&bytes, limit)
}

/// A body already read, as JSON: at most `limit` bytes, not empty, valid.
fn json_of(bytes: &[u8], limit: usize) -> std::result::Result<Value, Refusal> {
    if bytes.len() > limit {
        return Err(Refusal::bad(format!("body: must be at most {limit} bytes")));
    }
    if bytes.is_empty() {
        return Err(Refusal::bad("body: a JSON body is required"));
    }
    serde_json::from_slice(bytes).map_err(|e| Refusal::bad(format!("body: is not valid JSON ({e})")))
}

/// The `{"api_key": {...}}` wrapper every key-writing call takes.
fn attributes(body: &Value) -> std::result::Result<&Map<String, Value>, Refusal> {
    let object = body.as_object().ok_or_else(|| Refusal::bad("body: must be a JSON object"))?;
    if let Some(other) = object.keys().find(|k| k.as_str() != "api_key") {
        return Err(Refusal::bad(format!("{other}: is not a request field (expected only \"api_key\")")));
    }
    object
        .get("api_key")
        .and_then(Value::as_object)
        .ok_or_else(|| Refusal::bad("api_key: must be an object of key attributes"))
}

fn no_query(req: &Request) -> std::result::Result<(), Refusal> {
    match req.url().ok().and_then(|u| u.query().map(str::to_string)) {
        Some(q) if !q.is_empty() => Err(Refusal::bad("query: this call takes no query parameters")),
        _ => Ok(()),
    }
}

fn check_id(id: &str) -> std::result::Result<(), Refusal> {
    if is_key_id(id) {
        Ok(())
    } else {
        Err(Refusal::bad("id: must look like key_ followed by 26 characters (a ULID)"))
    }
}

/// A listed key by id, or 404 (also for a key of another workspace than the call's).
fn load(call: &Call<'_>, id: &str) -> std::result::Result<KeyRecord, Refusal> {
    check_id(id)?;
    call.ledger.record_by_id(id)?.filter(|r| call.in_scope(r)).ok_or_else(|| Refusal::not_found(id))
}

/// The `name=value` pairs of a query string, percent-decoded; a bad encoding names its field.
fn query_pairs(req: &Request) -> std::result::Result<Vec<(String, String)>, Refusal> {
    let url = req.url().map_err(|_| Refusal::bad("query: could not be read"))?;
    let query = url.query().unwrap_or("");
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let pair = crate::core::credential::form_pair(pair)
            .ok_or_else(|| Refusal::bad(format!("{}: is not valid percent-encoding", crate::core::credential::pair_halves(pair).0)))?;
        out.push(pair);
    }
    Ok(out)
}

/// Records as the API shows them, with `last_used_at` (kept beside the record, never in it: it
/// changes with traffic, not by a versioned write).
pub(super) fn shown_all(call: &Call<'_>, records: &[KeyRecord]) -> std::result::Result<Vec<Value>, Refusal> {
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let last = crate::edge::usage::last_used(call.ledger.sql(), &ids)?;
    Ok(records
        .iter()
        .map(|r| {
            let mut view = r.view(call.now);
            if let Some(map) = view.as_object_mut() {
                let at = last
                    .binary_search_by(|(id, _)| id.as_str().cmp(&r.id))
                    .ok()
                    .and_then(|i| last.get(i))
                    .map_or(Value::Null, |(_, ms)| Value::String(crate::core::time::format_rfc3339(*ms)));
                map.insert("last_used_at".into(), at);
            }
            view
        })
        .collect())
}

fn shown(call: &Call<'_>, record: &KeyRecord) -> std::result::Result<Value, Refusal> {
    Ok(shown_all(call, std::slice::from_ref(record))?.pop().unwrap_or(Value::Null))
}

/// A list's `workspace=`: within the call's scope (a management key confined to its workspace
/// naming another gets a 404; a path naming another, a 400).
fn list_workspace(call: &Call<'_>, value: String) -> std::result::Result<String, Refusal> {
    if !crate::core::record::is_workspace_id(&value) {
        return Err(Refusal::bad("workspace: must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -"));
    }
    match call.scope.as_deref() {
        Some(w) if w != value && call.confined.is_some() => Err(workspaces::not_found(&value)),
        Some(w) if w != value => Err(Refusal::bad(format!("workspace: the path already names workspace {w}"))),
        _ => Ok(value),
    }
}

/// A list's `status=`.
fn list_status(value: &str) -> std::result::Result<crate::core::record::KeyStatus, Refusal> {
    use crate::core::record::KeyStatus;
    match value {
        "active" => Ok(KeyStatus::Active),
        "expired" => Ok(KeyStatus::Expired),
        "revoked" => Ok(KeyStatus::Revoked),
        _ => Err(Refusal::bad("status: must be active, expired or revoked")),
    }
}

/// `per_page`: from 1 to `max`.
fn per_page(value: &str, max: usize) -> std::result::Result<usize, Refusal> {
    value
        .parse::<usize>()
        .ok()
        .filter(|p| (1..=max).contains(p))
        .ok_or_else(|| Refusal::bad(format!("per_page: must be an integer from 1 to {max}")))
}

/// For management calls answered outside this module (`edge::tokens`): the `ADMIN_TOKEN`
/// (`permission` None: the admin token only) or a key holding `permission`.
/// With the workspace the call is confined to (the management key's own, or `specified` by the
/// path; a key of one workspace naming another: 404), as for every key route.
pub(crate) fn authorize_call_in(
    req: &Request,
    env: &Env,
    ledger: &Ledger,
    permission: Option<&'static str>,
    now: i64,
    specified: Option<&str>,
) -> std::result::Result<(Actor, Option<String>), Refusal> {
    let need = permission.map_or(Need::Admin, Need::Permission);
    let specified = specified.map(workspaces::checked).transpose()?;
    let call = scoped_call(env, ledger, now, authorize(req, env, ledger, need, now)?, specified)?;
    Ok((call.actor, call.scope))
}
