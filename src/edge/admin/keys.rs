//! Keys made and managed at the edge: create, get, update (expire, reactivate), revoke, roll, delete.

use std::future::Future;
use std::pin::Pin;

use serde_json::{json, Value};
use worker::{Env, Request};

use super::{attributes, check_id, load, no_query, read_json, shown, whole_number, Answer, Call, Refusal};
use crate::core::digest::key_digest;
use crate::core::limits::{Credits, MAX_CREDITS};
use crate::edge::limiter::LimitRequest;
use crate::edge::limits;
use crate::core::key::{generate_key, key_preview, new_key_id, RANDOM_BYTES_FOR_KEY};
use crate::core::record::{KeyRecord, KeyStatus, WriteMode};
use crate::core::time::format_rfc3339;
use crate::edge::reply;

const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

pub(super) fn new_id(now: i64) -> std::result::Result<String, Refusal> {
    let random = crate::edge::random_bytes::<10>().map_err(|_| Refusal(503, "RANDOM_UNAVAILABLE", "no randomness".into()))?;
    Ok(new_key_id(now, &random))
}

fn new_key(env: &Env) -> std::result::Result<String, Refusal> {
    let prefix = env.var("KEY_PREFIX").map(|v| v.to_string()).unwrap_or_else(|_| "kw_live".into());
    for _ in 0..4 {
        let random = crate::edge::random_bytes::<RANDOM_BYTES_FOR_KEY>()
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

pub(super) async fn create(req: &mut Request, call: &Call<'_>) -> Answer {
    no_query(req)?;
    let body = read_json(req).await?;
    let attrs = attributes(&body)?;
    let key = new_key(call.env)?;
    let digest = key_digest(&key);
    let mut record = KeyRecord::blank(new_id(call.now)?, digest, call.now)
        .with_attributes(attrs, WriteMode::Create)
        .map_err(Refusal::field)?;
    super::place(call, &mut record, None)?;
    super::check_grants(call, &record, true)?;
    super::check_tier(call.env, &record, None)?;
    crate::edge::tokens::give_salt(&mut record)?;
    record.version = 1;
    record.key_preview = Some(key_preview(&key));
    record.stamp_credits(None, call.now);
    call.ledger.put(&record, None, &call.actor, "create", call.now)?;
    Ok(reply::success(201, with_plaintext(shown(call, &record)?, &key))?)
}

pub(super) async fn get(req: &Request, call: &Call<'_>, id: &str) -> Answer {
    no_query(req)?;
    let record = load(call, id)?;
    Ok(reply::success(200, live_view(call, &record).await?)?)
}

/// The key's view with its live credits, which its Limiter holds (the record's count is the one
/// last written through the API).
pub(super) async fn live_view(call: &Call<'_>, record: &KeyRecord) -> std::result::Result<Value, Refusal> {
    let views = live_views(call, std::slice::from_ref(record)).await?;
    views.into_iter().next().ok_or_else(|| Refusal(500, "INTERNAL", "internal error: no view".into()))
}

/// The views of `records`, each with its live credits, read from the Limiters at once. Boxed, so
/// that the one compiled copy serves every call that shows keys.
pub(super) fn live_views<'a>(
    call: &'a Call<'_>,
    records: &'a [KeyRecord],
) -> Pin<Box<dyn Future<Output = std::result::Result<Vec<Value>, Refusal>> + 'a>> {
    Box::pin(async move {
        // The views as every call shows them (with last_used_at), then the live credits.
        let views = super::shown_all(call, records)?;
        futures_util::future::try_join_all(records.iter().zip(views).map(|(record, mut view)| async move {
        if record.credits.is_none() {
            return Ok(view);
        }
        let counts = limits::peek(call.env, record, 0)
            .await
            .map_err(|_| Refusal(503, "STORE_UNAVAILABLE", "the key's credits (its Limiter) could not be read".into()))?;
        if let (Some(remaining), Some(credits)) = (counts.and_then(|c| c.credits_remaining), view.get_mut("credits").and_then(Value::as_object_mut)) {
            credits.insert("remaining".into(), Value::from(remaining));
        }
        Ok(view)
    }))
    .await
    })
}

/// `POST /api_keys/{id}/credits`: `{"set": N}` or `{"add": N}` on the live count.
pub(super) async fn credits(req: &mut Request, call: &Call<'_>, id: &str) -> Answer {
    no_query(req)?;
    check_id(id)?;
    let body = read_json(req).await?;
    let object = body.as_object().ok_or_else(|| Refusal::bad("body: must be a JSON object"))?;
    if let Some(other) = object.keys().find(|k| !matches!(k.as_str(), "set" | "add")) {
        return Err(Refusal::bad(format!("{other}: is not a credits field (expected \"set\" or \"add\")")));
    }
    let amount = |field: &str| -> std::result::Result<Option<u64>, Refusal> {
        object
            .get(field)
            .map(|v| whole_number(v).filter(|n| *n <= MAX_CREDITS))
            .map(|n| n.ok_or_else(|| Refusal::bad(format!("{field}: must be an integer from 0 to 2^53 ({MAX_CREDITS})"))))
            .transpose()
    };
    let (set, add) = (amount("set")?, amount("add")?);
    if set.is_some() == add.is_some() {
        return Err(Refusal::bad("set: give exactly one of \"set\" and \"add\""));
    }
    let record = load(call, id)?;
    if record.is_revoked() {
        return Err(Refusal(409, "KEY_REVOKED", "the key is revoked, which is final: it cannot be changed".into()));
    }
    let stamp = record.credits.map_or(0, |c| c.set_at_ms.saturating_add(1)).max(call.now);
    let remaining = match record.credits {
        // A key without credits gets them, with no refill.
        None => set.or(add).unwrap_or(0),
        Some(credits) => {
            let change = LimitRequest { credits: Some(credits), set, add, stamp, ..LimitRequest::default() };
            let answer = limits::call(call.env, record.limiter_name(), "credits", change.encode()).await.map_err(|e| {
                if e.contains("BAD_REQUEST") {
                    Refusal::bad(format!("add: would take the credits past 2^53 ({MAX_CREDITS})"))
                } else {
                    Refusal(503, "STORE_UNAVAILABLE", "the key's credits (its Limiter) could not be reached".into())
                }
            })?;
            answer.trim().parse::<u64>().map_err(|_| Refusal(503, "STORE_UNAVAILABLE", "the key's Limiter gave no count".into()))?
        }
    };
    let mut next = record.clone();
    let refill = record.credits.and_then(|c| c.refill);
    let low_threshold = record.credits.and_then(|c| c.low_threshold);
    next.credits = Some(Credits { remaining, refill, set_at_ms: stamp, low_threshold });
    next.version = record.version.saturating_add(1);
    next.updated_at = format_rfc3339(call.now);
    call.ledger.put(&next, Some(&record), &call.actor, "credits", call.now)?;
    Ok(reply::success(200, shown(call, &next)?)?)
}

/// What a change to `active` is called in the audit log.
fn update_action(old: &KeyRecord, next: &KeyRecord) -> &'static str {
    match (old.active, next.active) {
        (true, false) => "expire",
        (false, true) => "reactivate",
        _ => "update",
    }
}

pub(super) async fn update(req: &mut Request, call: &Call<'_>, id: &str) -> Answer {
    no_query(req)?;
    check_id(id)?;
    let body = read_json(req).await?;
    let attrs = attributes(&body)?;
    let record = load(call, id)?;
    if record.is_revoked() {
        return Err(Refusal(409, "KEY_REVOKED", "the key is revoked, which is final: it cannot be changed or reactivated".into()));
    }
    let mut next = record.with_attributes(attrs, WriteMode::Update).map_err(Refusal::field)?;
    super::place(call, &mut next, Some(&record))?;
    let granting = ["permissions", "role", "workspace"].iter().any(|f| attrs.contains_key(*f));
    super::check_grants(call, &next, granting)?;
    super::check_tier(call.env, &next, Some(&record))?;
    crate::edge::tokens::give_salt(&mut next)?;
    next.version = record.version.saturating_add(1);
    next.updated_at = format_rfc3339(call.now);
    // Credits given here are set, whatever the Limiter counted: they get a new stamp.
    next.stamp_credits(Some(&record), call.now);
    call.ledger.put(&next, Some(&record), &call.actor, update_action(&record, &next), call.now)?;
    Ok(reply::success(200, live_view(call, &next).await?)?)
}

pub(super) async fn delete(call: &Call<'_>, id: &str) -> Answer {
    let record = load(call, id)?;
    if record.status(call.now) == KeyStatus::Active {
        return Err(Refusal(409, "KEY_ACTIVE", "only a key that is not active can be deleted: expire or revoke it first".into()));
    }
    let tombstone = record.is_revoked().then(|| tombstone_of(&record, call.now));
    call.ledger.delete(&record, tombstone.as_ref(), &call.actor, call.now)?;
    crate::edge::usage::forget(call.ledger.sql(), &record.id)?;
    // Its Limiter's rows (window, credits) go too, unless a key rolled from it (or that it was
    // rolled from) still counts there. Any key may have had limits once, so it is always asked;
    // a Limiter that never held anything is left as empty as it was.
    let limiter = record.limiter_name();
    if !call.ledger.limiter_in_use(limiter, &record.digest)? {
        if let Err(e) = limits::call(call.env, limiter, "forget", String::new()).await {
            // The key is gone either way; its rows are unreachable (no new key gets its name).
            worker::console_error!("keyward: the Limiter of deleted key {} kept its rows: {}", record.id, e);
        }
    }
    Ok(reply::success(200, json!({"id": record.id, "deleted": true}))?)
}

/// What stays of a deleted revoked key: enough to keep answering KEY_REVOKED, nothing else.
fn tombstone_of(record: &KeyRecord, now: i64) -> KeyRecord {
    let mut t = KeyRecord::blank(record.id.clone(), record.digest.clone(), now);
    t.name = "(deleted)".into();
    // Still its workspace's: a push of the digest there answers KEY_REVOKED, elsewhere 404.
    t.workspace = record.workspace.clone();
    t.active = false;
    t.revoked_at = record.revoked_at.clone();
    t.version = record.version.saturating_add(1);
    t
}

pub(super) fn revoked(record: &KeyRecord, now: i64) -> KeyRecord {
    let mut next = record.clone();
    next.active = false;
    next.revoked_at = Some(format_rfc3339(now));
    next.version = record.version.saturating_add(1);
    next.updated_at = format_rfc3339(now);
    next
}

pub(super) fn revoke(call: &Call<'_>, id: &str) -> Answer {
    let record = load(call, id)?;
    if record.is_revoked() {
        return Ok(reply::success(200, shown(call, &record)?)?);
    }
    let next = revoked(&record, call.now);
    call.ledger.put(&next, Some(&record), &call.actor, "revoke", call.now)?;
    Ok(reply::success(200, shown(call, &next)?)?)
}

pub(super) async fn roll(req: &mut Request, call: &Call<'_>, id: &str) -> Answer {
    no_query(req)?;
    check_id(id)?;
    let now = call.now;
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
    let old = load(call, id)?;
    if old.is_revoked() {
        return Err(Refusal(409, "KEY_REVOKED", "a revoked key cannot be rolled".into()));
    }
    // Rolling hands out a new secret with the old key's permissions: a management key confined
    // to its workspace may not obtain one that holds more than it does.
    super::check_grants(call, &old, call.confined.is_some())?;
    let key = new_key(call.env)?;
    let mut fresh = old.clone();
    fresh.id = new_id(now)?;
    // The new key shares the old one's Limiter: rolling replaces the secret, not the quota.
    fresh.limiter = Some(old.limiter_name().to_string());
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
    call.ledger.put(&fresh, None, &call.actor, "create", now)?;
    call.ledger.put(&retired, Some(&old), &call.actor, "roll", now)?;
    let mut data = with_plaintext(live_view(call, &fresh).await?, &key);
    if let Some(map) = data.as_object_mut() {
        map.insert("rolled_from".into(), shown(call, &retired)?);
    }
    Ok(reply::success(201, data)?)
}
