//! The management API under `/_keyward/v1/`: key CRUD and lifecycle, origin push, bulk
//! revocation, the route policy, verify and ping. Every answer uses the contract's envelope.

use std::rc::Rc;

use serde_json::{json, Map, Value};
use worker::{Env, Method, Request, Response, Result};

use super::reply;
use super::store::{Store, StoreError};
use crate::core::credential::{find_credential, query_values};
use crate::core::decision::{decide_permission, Decision};
use crate::core::digest::{is_digest, key_digest};
use crate::core::key::{generate_key, is_key_id, key_preview, new_key_id, parse_key, RANDOM_BYTES_FOR_KEY};
use crate::core::record::{CompiledKey, FieldError, KeyRecord, KeyStatus, WriteMode};
use crate::core::time::format_rfc3339;
use crate::core::{decide, Code, GateRequest, RoutePolicy};

/// Largest management request body; bigger ones get a 400 before they are parsed.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_PER_PAGE: usize = 500;
const DEFAULT_PER_PAGE: usize = 100;
const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;
const MAX_REVOCATIONS: usize = 1000;

/// A refusal: status, stable code, message naming the field.
struct Refusal(u16, &'static str, String);

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

/// Who may call what.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Admin,
    Permission(&'static str),
}

pub async fn handle(mut req: Request, env: &Env, rest: &str) -> Result<Response> {
    let segments: Vec<&str> = rest.split('/').collect();
    let method = req.method();
    let outcome = route(&mut req, env, &method, &segments).await;
    match outcome {
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
    match segments {
        ["api_keys"] => "GET, POST",
        ["api_keys", _] => "GET, PUT, DELETE",
        ["keys", _] => "PUT",
        ["policy"] => "GET, PUT",
        ["ping"] | ["openapi.json"] => "GET",
        _ => "POST",
    }
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

async fn route(req: &mut Request, env: &Env, method: &Method, segments: &[&str]) -> Answer {
    let store = Store::open(env)?;
    let now = super::now_ms();
    match (method, segments) {
        (Method::Get, ["ping"]) => return ping(req, &store, now).await,
        (Method::Get, ["openapi.json"]) => return openapi(env).await,
        _ => {}
    }
    let need = match (method, segments) {
        (Method::Get, ["api_keys"] | ["api_keys", _]) => Need::Permission("keys:read"),
        (Method::Post, ["api_keys"]) => Need::Permission("keys:create"),
        (Method::Put, ["api_keys", _]) | (Method::Post, ["api_keys", _, "revoke" | "roll"]) => {
            Need::Permission("keys:update")
        }
        (Method::Delete, ["api_keys", _]) => Need::Permission("keys:delete"),
        (Method::Post, ["verify"]) => Need::Permission("keys:read"),
        (Method::Get, ["policy"]) => Need::Permission("keys:read"),
        (Method::Put, ["keys", _] | ["policy"]) | (Method::Post, ["revocations"]) => Need::Admin,
        (_, ["api_keys"] | ["api_keys", _] | ["api_keys", _, "revoke" | "roll"] | ["keys", _] | ["policy"]
            | ["revocations"] | ["verify"] | ["ping"] | ["openapi.json"]) => {
            return Err(Refusal(405, "METHOD_NOT_ALLOWED", format!("{method} is not allowed here")));
        }
        _ => return Err(Refusal(404, "NOT_FOUND", "no such management endpoint".into())),
    };
    authorize(req, env, &store, need, now).await?;
    match (method, segments) {
        (Method::Get, ["api_keys"]) => list(req, &store).await,
        (Method::Post, ["api_keys"]) => create(req, env, &store, now).await,
        (Method::Get, ["api_keys", id]) => {
            no_query(req)?;
            let record = load(&store, id).await?;
            Ok(reply::success(200, record.view(now))?)
        }
        (Method::Put, ["api_keys", id]) => update(req, &store, id, now).await,
        (Method::Delete, ["api_keys", id]) => delete(&store, id, now).await,
        (Method::Post, ["api_keys", id, "revoke"]) => revoke(&store, id, now).await,
        (Method::Post, ["api_keys", id, "roll"]) => roll(req, env, &store, id, now).await,
        (Method::Put, ["keys", digest]) => push(req, &store, digest, now).await,
        (Method::Post, ["revocations"]) => revocations(req, &store, now).await,
        (Method::Get, ["policy"]) => {
            let (text, source) = store.policy_text().await?;
            let doc: Value = serde_json::from_str(&text).map_err(|_| Refusal::from(StoreError("bad policy".into())))?;
            let mut extra = Map::new();
            extra.insert("source".into(), Value::String(source.into()));
            Ok(reply::success_with(200, doc, extra)?)
        }
        (Method::Put, ["policy"]) => put_policy(req, &store).await,
        (Method::Post, ["verify"]) => verify(req, &store, now).await,
        _ => Err(Refusal(404, "NOT_FOUND", "no such management endpoint".into())),
    }
}

/// `ADMIN_TOKEN` (compared in constant time) or a keyward key holding the needed permission.
async fn authorize(req: &Request, env: &Env, store: &Store, need: Need, now: i64) -> std::result::Result<(), Refusal> {
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
            return Ok(());
        }
    }
    if parse_key(token).is_err() {
        return Err(Refusal(401, "UNAUTHORIZED", "the management token is not valid".into()));
    }
    let key = store
        .key(&key_digest(token), now)
        .await?
        .ok_or_else(|| Refusal(401, "UNAUTHORIZED", "the management token is not valid".into()))?;
    let Need::Permission(permission) = need else {
        return Err(Refusal(403, "PERMISSION_DENIED", "this call needs the admin token".into()));
    };
    let client_ip = req.headers().get("cf-connecting-ip").ok().flatten();
    let decision = decide_permission(&key, Some(permission), client_ip.as_deref(), None, now);
    if decision.valid {
        Ok(())
    } else if decision.code.status() == 401 {
        Err(Refusal(401, "UNAUTHORIZED", decision.message))
    } else {
        Err(Refusal(403, "PERMISSION_DENIED", decision.message))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Compare digests so the time taken does not depend on where, or whether, lengths differ.
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

async fn read_json(req: &mut Request) -> std::result::Result<Value, Refusal> {
    let declared = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if declared > MAX_BODY_BYTES {
        return Err(Refusal::bad(format!("body: must be at most {MAX_BODY_BYTES} bytes")));
    }
    let bytes = req.bytes().await.map_err(|_| Refusal::bad("body: could not be read"))?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(Refusal::bad(format!("body: must be at most {MAX_BODY_BYTES} bytes")));
    }
    if bytes.is_empty() {
        return Err(Refusal::bad("body: a JSON body is required"));
    }
    serde_json::from_slice(&bytes).map_err(|e| Refusal::bad(format!("body: is not valid JSON ({e})")))
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

async fn load(store: &Store, id: &str) -> std::result::Result<KeyRecord, Refusal> {
    check_id(id)?;
    store.record_by_id(id).await?.ok_or_else(|| Refusal::not_found(id))
}

fn new_id(now: i64) -> std::result::Result<String, Refusal> {
    let random = super::random_bytes::<10>().map_err(|_| Refusal(503, "RANDOM_UNAVAILABLE", "no randomness".into()))?;
    Ok(new_key_id(now, &random))
}

fn new_key(env: &Env) -> std::result::Result<String, Refusal> {
    let prefix = env.var("KEY_PREFIX").map(|v| v.to_string()).unwrap_or_else(|_| "kw_live".into());
    for _ in 0..4 {
        let random = super::random_bytes::<RANDOM_BYTES_FOR_KEY>()
            .map_err(|_| Refusal(503, "RANDOM_UNAVAILABLE", "no randomness".into()))?;
        if let Ok(key) = generate_key(&prefix, &random) {
            return Ok(key);
        }
    }
    Err(Refusal(500, "INTERNAL", "could not generate a key".into()))
}

fn with_plaintext(view: Value, key: &str) -> Value {
    let mut view = view;
    if let Some(map) = view.as_object_mut() {
        map.insert("api_key".into(), Value::String(key.to_string()));
    }
    view
}

async fn create(req: &mut Request, env: &Env, store: &Store, now: i64) -> Answer {
    no_query(req)?;
    let body = read_json(req).await?;
    let attrs = attributes(&body)?;
    let key = new_key(env)?;
    let digest = key_digest(&key);
    let mut record = KeyRecord::blank(new_id(now)?, digest, now)
        .with_attributes(attrs, WriteMode::Create)
        .map_err(Refusal::field)?;
    record.version = 1;
    record.key_preview = Some(key_preview(&key));
    store.put(&record, true).await?;
    Ok(reply::success(201, with_plaintext(record.view(now), &key))?)
}

async fn update(req: &mut Request, store: &Store, id: &str, now: i64) -> Answer {
    no_query(req)?;
    check_id(id)?;
    let body = read_json(req).await?;
    let attrs = attributes(&body)?;
    let record = load(store, id).await?;
    if record.is_revoked() {
        return Err(Refusal(409, "KEY_REVOKED", "the key is revoked, which is final: it cannot be changed or reactivated".into()));
    }
    let mut next = record.with_attributes(attrs, WriteMode::Update).map_err(Refusal::field)?;
    next.version = record.version.saturating_add(1);
    next.updated_at = format_rfc3339(now);
    store.put(&next, false).await?;
    Ok(reply::success(200, next.view(now))?)
}

async fn delete(store: &Store, id: &str, now: i64) -> Answer {
    let record = load(store, id).await?;
    if record.status(now) == KeyStatus::Active {
        return Err(Refusal(409, "KEY_ACTIVE", "only a key that is not active can be deleted: expire or revoke it first".into()));
    }
    let tombstone = record.is_revoked().then(|| tombstone_of(&record, now));
    store.delete(&record, tombstone.as_ref()).await?;
    Ok(reply::success(200, json!({"id": record.id, "deleted": true}))?)
}

/// What stays of a deleted revoked key: enough to keep answering KEY_REVOKED, nothing else.
fn tombstone_of(record: &KeyRecord, now: i64) -> KeyRecord {
    let mut t = KeyRecord::blank(record.id.clone(), record.digest.clone(), now);
    t.name = "(deleted)".into();
    t.active = false;
    t.revoked_at = record.revoked_at.clone();
    t.version = record.version;
    t
}

fn revoked(record: &KeyRecord, now: i64) -> KeyRecord {
    let mut next = record.clone();
    next.active = false;
    next.revoked_at = Some(format_rfc3339(now));
    next.version = record.version.saturating_add(1);
    next.updated_at = format_rfc3339(now);
    next
}

async fn revoke(store: &Store, id: &str, now: i64) -> Answer {
    let record = load(store, id).await?;
    if record.is_revoked() {
        return Ok(reply::success(200, record.view(now))?);
    }
    let next = revoked(&record, now);
    store.put(&next, false).await?;
    Ok(reply::success(200, next.view(now))?)
}

async fn roll(req: &mut Request, env: &Env, store: &Store, id: &str, now: i64) -> Answer {
    no_query(req)?;
    check_id(id)?;
    let body = read_json(req).await?;
    let object = body.as_object().ok_or_else(|| Refusal::bad("body: must be a JSON object"))?;
    if let Some(other) = object.keys().find(|k| k.as_str() != "grace_seconds") {
        return Err(Refusal::bad(format!("{other}: is not a roll field (expected only \"grace_seconds\")")));
    }
    let grace = object
        .get("grace_seconds")
        .ok_or_else(|| Refusal::bad("grace_seconds: is required"))
        .map(whole_number)?
        .filter(|g| *g <= MAX_GRACE_SECONDS)
        .ok_or_else(|| Refusal::bad(format!("grace_seconds: must be an integer from 0 to {MAX_GRACE_SECONDS}")))?;
    let old = load(store, id).await?;
    if old.is_revoked() {
        return Err(Refusal(409, "KEY_REVOKED", "a revoked key cannot be rolled".into()));
    }
    let key = new_key(env)?;
    let mut fresh = old.clone();
    fresh.id = new_id(now)?;
    fresh.digest = key_digest(&key);
    fresh.key_preview = Some(key_preview(&key));
    fresh.version = 1;
    fresh.active = true;
    fresh.created_at = format_rfc3339(now);
    fresh.updated_at = fresh.created_at.clone();
    let mut retired = old.clone();
    retired.version = old.version.saturating_add(1);
    retired.updated_at = format_rfc3339(now);
    if grace == 0 {
        retired.active = false;
    } else {
        let until = now.saturating_add(i64::try_from(grace).unwrap_or(0).saturating_mul(1000));
        let earlier = old
            .expires_at
            .as_deref()
            .and_then(crate::core::time::parse_rfc3339)
            .is_some_and(|at| at < until);
        if !earlier {
            retired.expires_at = Some(format_rfc3339(until));
        }
    }
    store.put(&fresh, true).await?;
    store.put(&retired, false).await?;
    let mut data = with_plaintext(fresh.view(now), &key);
    if let Some(map) = data.as_object_mut() {
        map.insert("rolled_from".into(), retired.view(now));
    }
    Ok(reply::success(201, data)?)
}

async fn push(req: &mut Request, store: &Store, digest: &str, now: i64) -> Answer {
    no_query(req)?;
    if !is_digest(digest) {
        return Err(Refusal::bad("digest: must be the lowercase hex SHA-256 of the key (64 characters)"));
    }
    let body = read_json(req).await?;
    let attrs = attributes(&body)?;
    let existing = store.record(digest).await?;
    let base = match &existing {
        Some(old) => {
            let mut b = KeyRecord::blank(old.id.clone(), digest.to_string(), now);
            b.created_at = old.created_at.clone();
            b
        }
        None => KeyRecord::blank(new_id(now)?, digest.to_string(), now),
    };
    let record = base.with_attributes(attrs, WriteMode::Push).map_err(Refusal::field)?;
    if let Some(old) = &existing {
        if old.is_revoked() {
            return Err(Refusal(409, "KEY_REVOKED", "the key is revoked, which is final: a push cannot bring it back".into()));
        }
        if record.version <= old.version {
            return Err(Refusal(
                409,
                "VERSION_CONFLICT",
                format!("version: must be above the stored version {}", old.version),
            ));
        }
    }
    store.put(&record, existing.is_none()).await?;
    Ok(reply::success(if existing.is_some() { 200 } else { 201 }, record.view(now))?)
}

async fn revocations(req: &mut Request, store: &Store, now: i64) -> Answer {
    no_query(req)?;
    let body = read_json(req).await?;
    let object = body.as_object().ok_or_else(|| Refusal::bad("body: must be a JSON object"))?;
    if let Some(other) = object.keys().find(|k| !matches!(k.as_str(), "ids" | "hashes")) {
        return Err(Refusal::bad(format!("{other}: is not a revocation field (expected \"ids\" and/or \"hashes\")")));
    }
    let list = |field: &str| -> std::result::Result<Vec<String>, Refusal> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().map(str::to_string).ok_or_else(|| Refusal::bad(format!("{field}[{i}]: must be a string")))
                })
                .collect(),
            Some(_) => Err(Refusal::bad(format!("{field}: must be an array of strings"))),
        }
    };
    let ids = list("ids")?;
    let hashes = list("hashes")?;
    if ids.is_empty() && hashes.is_empty() {
        return Err(Refusal::bad("ids: give at least one id or hash to revoke"));
    }
    for (field, list) in [("ids", &ids), ("hashes", &hashes)] {
        if list.len() > MAX_REVOCATIONS {
            return Err(Refusal::bad(format!("{field}: at most {MAX_REVOCATIONS} per call")));
        }
    }
    for (i, id) in ids.iter().enumerate() {
        if !is_key_id(id) {
            return Err(Refusal::bad(format!("ids[{i}]: \"{id}\" is not a key id")));
        }
    }
    for (i, h) in hashes.iter().enumerate() {
        if !is_digest(h) {
            return Err(Refusal::bad(format!("hashes[{i}]: must be a lowercase hex SHA-256 (64 characters)")));
        }
    }
    let mut done: Vec<Value> = Vec::new();
    let mut not_found: Vec<Value> = Vec::new();
    for id in &ids {
        match store.record_by_id(id).await? {
            None => not_found.push(Value::String(id.clone())),
            Some(record) => {
                if !record.is_revoked() {
                    store.put(&revoked(&record, now), false).await?;
                }
                done.push(Value::String(record.id));
            }
        }
    }
    for digest in &hashes {
        match store.record(digest).await? {
            Some(record) => {
                if !record.is_revoked() {
                    store.put(&revoked(&record, now), false).await?;
                }
                done.push(Value::String(record.id));
            }
            None => {
                // Revoked before the origin pushed it: keep a revoked record so no later push
                // can make the key valid.
                let mut record = KeyRecord::blank(new_id(now)?, digest.clone(), now);
                record.name = "(revoked before push)".into();
                record.active = false;
                record.revoked_at = Some(format_rfc3339(now));
                record.version = 1;
                store.put(&record, true).await?;
                done.push(Value::String(record.id));
            }
        }
    }
    Ok(reply::success(200, json!({"revoked": done, "not_found": not_found}))?)
}

async fn put_policy(req: &mut Request, store: &Store) -> Answer {
    no_query(req)?;
    let body = read_json(req).await?;
    let policy = RoutePolicy::from_value(&body).map_err(Refusal::field)?;
    let doc = serde_json::to_value(policy.doc()).map_err(|e| Refusal::bad(e.to_string()))?;
    store.put_policy(&doc.to_string()).await?;
    let mut extra = Map::new();
    extra.insert("source".into(), Value::String("stored".into()));
    Ok(reply::success_with(200, doc, extra)?)
}

async fn list(req: &Request, store: &Store) -> Answer {
    let url = req.url().map_err(|_| Refusal::bad("query: could not be read"))?;
    let query = url.query().unwrap_or("");
    let mut name: Option<String> = None;
    let mut contains: Option<String> = None;
    let mut page: Option<usize> = None;
    let mut per_page = DEFAULT_PER_PAGE;
    let mut token: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let field = pair.split_once('=').map_or(pair, |(k, _)| k);
        let value = query_values(pair, field)
            .next()
            .flatten()
            .ok_or_else(|| Refusal::bad(format!("{field}: is not valid percent-encoding")))?;
        match field {
            "name" => name = Some(value.to_lowercase()),
            "name_contains" => contains = Some(value.to_lowercase()),
            "page" => {
                page = Some(
                    value
                        .parse::<usize>()
                        .ok()
                        .filter(|p| *p <= 1_000_000)
                        .ok_or_else(|| Refusal::bad("page: must be an integer from 0"))?,
                )
            }
            "per_page" => {
                per_page = value
                    .parse::<usize>()
                    .ok()
                    .filter(|p| (1..=MAX_PER_PAGE).contains(p))
                    .ok_or_else(|| Refusal::bad(format!("per_page: must be an integer from 1 to {MAX_PER_PAGE}")))?
            }
            "page_token" => token = Some(value),
            other => return Err(Refusal::bad(format!("{other}: is not a list parameter"))),
        }
    }
    if page.is_some() && token.is_some() {
        return Err(Refusal::bad("page_token: cannot be combined with page"));
    }
    let after = match &token {
        None => None,
        Some(t) => Some(decode_token(t).ok_or_else(|| Refusal::bad("page_token: is not a token this API gave out"))?),
    };
    let entries: Vec<_> = store
        .index()
        .await?
        .into_iter()
        .filter(|e| name.as_ref().is_none_or(|n| e.name.to_lowercase() == *n))
        .filter(|e| contains.as_ref().is_none_or(|c| e.name.to_lowercase().contains(c.as_str())))
        .collect();
    let total = entries.len();
    let start = match &after {
        Some(after) => entries.iter().position(|e| e.id.as_str() > after.as_str()).unwrap_or(total),
        None => page.unwrap_or(0).saturating_mul(per_page).min(total),
    };
    let end = start.saturating_add(per_page).min(total);
    let slice = entries.get(start..end).unwrap_or(&[]);
    let mut records = Vec::with_capacity(slice.len());
    let now = super::now_ms();
    for entry in slice {
        if let Some(record) = store.record_by_id(&entry.id).await? {
            records.push(record.view(now));
        }
    }
    let next = (end < total).then(|| slice.last().map(|e| encode_token(&e.id))).flatten();
    let mut extra = Map::new();
    // The page asked for, even past the last one (an empty page, never moved to the last); for
    // a page_token (never given with page), the page the token's position falls in.
    extra.insert("page".into(), json!(page.unwrap_or(start / per_page)));
    extra.insert("per_page".into(), json!(per_page));
    extra.insert("num_records".into(), json!(total));
    extra.insert("num_pages".into(), json!(total.div_ceil(per_page)));
    extra.insert("page_token".into(), token.map_or(Value::Null, Value::String));
    extra.insert("next_page_token".into(), next.map_or(Value::Null, Value::String));
    Ok(reply::success_with(200, Value::Array(records), extra)?)
}

/// A page token names the last id of the previous page, so pages never overlap or skip even
/// while keys are added or deleted between calls.
fn encode_token(id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("after:{id}"))
}

fn decode_token(token: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let id = text.strip_prefix("after:")?;
    is_key_id(id).then(|| id.to_string())
}

async fn ping(req: &Request, store: &Store, now: i64) -> Answer {
    let url = req.url().map_err(|_| Refusal::bad("query: could not be read"))?;
    let headers = req.headers();
    let credential = find_credential(
        headers.get("authorization").ok().flatten().as_deref(),
        headers.get("x-api-key").ok().flatten().as_deref(),
        url.query(),
    );
    let credential = match credential {
        Err(e) => return Ok(gate_denial(&Decision::deny(Code::BadRequest, e.message))?),
        Ok(None) => return Ok(gate_denial(&Decision::deny(Code::MissingKey, "no API key was sent"))?),
        Ok(Some(c)) => c,
    };
    if let Err(e) = parse_key(&credential.key) {
        return Ok(gate_denial(&Decision::deny(Code::MalformedKey, format!("the API key is malformed: {e}")))?);
    }
    let Some(key) = store.key(&key_digest(&credential.key), now).await? else {
        return Ok(gate_denial(&Decision::deny(Code::UnknownKey, "the API key is not known"))?);
    };
    let client_ip = headers.get("cf-connecting-ip").ok().flatten();
    let decision = decide_permission(&key, None, client_ip.as_deref(), credential.workspace.as_deref(), now);
    if !decision.valid {
        return Ok(gate_denial(&decision)?);
    }
    Ok(reply::success(200, json!({"key_id": key.record.id, "type": key.record.key_type.as_str()}))?)
}

fn gate_denial(decision: &Decision) -> Result<Response> {
    reply::error(decision.code.status(), decision.code.as_str(), &decision.message)
}

/// `POST /verify`: what the gate would answer, as data, without calling the origin.
async fn verify(req: &mut Request, store: &Store, now: i64) -> Answer {
    no_query(req)?;
    let body = read_json(req).await?;
    let object = body.as_object().ok_or_else(|| Refusal::bad("body: must be a JSON object"))?;
    for field in object.keys() {
        if !matches!(field.as_str(), "key" | "method" | "path" | "ip" | "headers" | "body") {
            return Err(Refusal::bad(format!("{field}: is not a verify field")));
        }
    }
    let text = |field: &str| -> std::result::Result<Option<String>, Refusal> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Refusal::bad(format!("{field}: must be a string"))),
        }
    };
    let method = text("method")?.unwrap_or_else(|| "GET".into()).to_ascii_uppercase();
    let full_path = text("path")?.ok_or_else(|| Refusal::bad("path: is required"))?;
    if !full_path.starts_with('/') {
        return Err(Refusal::bad("path: must start with /"));
    }
    let (path, query) = full_path.split_once('?').map_or((full_path.as_str(), None), |(p, q)| (p, Some(q)));
    let ip = text("ip")?;
    let mut authorization = None;
    let mut x_api_key = None;
    match object.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (name, value) in h {
                let value = value.as_str().ok_or_else(|| Refusal::bad(format!("headers.{name}: must be a string")))?;
                match name.to_ascii_lowercase().as_str() {
                    "authorization" => authorization = Some(value.to_string()),
                    "x-api-key" => x_api_key = Some(value.to_string()),
                    _ => {}
                }
            }
        }
        Some(_) => return Err(Refusal::bad("headers: must be an object of strings")),
    }
    let body_bytes: Option<Vec<u8>> = match object.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone().into_bytes()),
        Some(other) => Some(other.to_string().into_bytes()),
    };
    if let Some(key) = text("key")? {
        // An explicit key is sent as a Bearer token unless the headers already carry one.
        if authorization.is_none() && x_api_key.is_none() {
            authorization = Some(format!("Bearer {key}"));
        } else {
            x_api_key.get_or_insert(key);
        }
    }
    let decision = match find_credential(authorization.as_deref(), x_api_key.as_deref(), query) {
        Err(e) => Decision::deny(Code::BadRequest, e.message),
        Ok(None) => Decision::deny(Code::MissingKey, "no API key was given"),
        Ok(Some(credential)) => match parse_key(&credential.key) {
            Err(e) => Decision::deny(Code::MalformedKey, format!("the API key is malformed: {e}")),
            Ok(_) => match store.key(&key_digest(&credential.key), now).await? {
                None => Decision::deny(Code::UnknownKey, "the API key is not known"),
                Some(key) => evaluate(&key, store, &method, path, ip.as_deref(), body_bytes.as_deref(), credential.workspace.as_deref(), now).await?,
            },
        },
    };
    Ok(reply::success(200, serde_json::to_value(&decision).unwrap_or(Value::Null))?)
}

#[allow(clippy::too_many_arguments)]
async fn evaluate(
    key: &Rc<CompiledKey>,
    store: &Store,
    method: &str,
    path: &str,
    ip: Option<&str>,
    body: Option<&[u8]>,
    workspace: Option<&str>,
    now: i64,
) -> std::result::Result<Decision, Refusal> {
    let policy = store.policy(now).await?;
    Ok(decide(key, &policy, &GateRequest { method, path, client_ip: ip, body, basic_workspace: workspace }, now))
}

/// The OpenAPI document, `www/openapi.json`, served from the static assets so that it does not
/// weigh on the Worker's wasm.
async fn openapi(env: &Env) -> Answer {
    let response = env.assets("ASSETS")?.fetch("https://assets.local/openapi.json", None).await?;
    if response.status_code() != 200 {
        return Err(Refusal(503, "STORE_UNAVAILABLE", "the OpenAPI document is not deployed".into()));
    }
    let mut response = response;
    let text = response.text().await?;
    let doc: Value = serde_json::from_str(&text).map_err(|_| Refusal(503, "STORE_UNAVAILABLE", "the OpenAPI document is not valid JSON".into()))?;
    Ok(reply::json(200, &doc)?)
}
