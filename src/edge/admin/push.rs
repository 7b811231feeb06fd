//! What the origin sends: one record by digest, many records at once (batch), and bulk revocation.

use serde_json::{json, Map, Value};
use worker::Request;

use super::keys::{new_id, revoked};
use super::{attributes, no_query, read_json, read_json_up_to, shown, Answer, Call, Refusal, MAX_BATCH_BODY_BYTES};
use crate::core::digest::is_digest;
use crate::core::key::is_key_id;
use crate::core::record::{KeyRecord, WriteMode};
use crate::core::time::format_rfc3339;
use crate::edge::reply;

const MAX_REVOCATIONS: usize = 1000;
const MAX_BATCH: usize = 1000;

/// What a push did to the stored record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushed {
    Created,
    Updated,
    Unchanged,
}

impl Pushed {
    fn as_str(self) -> &'static str {
        match self {
            Pushed::Created => "created",
            Pushed::Updated => "updated",
            Pushed::Unchanged => "unchanged",
        }
    }
}

fn check_digest(digest: &str) -> std::result::Result<(), Refusal> {
    if is_digest(digest) {
        Ok(())
    } else {
        Err(Refusal::bad("digest: must be the lowercase hex SHA-256 of the key (64 characters)"))
    }
}

/// Applies one pushed record. With `same_version_is_unchanged` (batch), the same version with the
/// same attributes again is `unchanged` rather than a conflict, so a batch can be sent twice.
fn apply(
    call: &Call<'_>,
    digest: &str,
    attrs: &Map<String, Value>,
    same_version_is_unchanged: bool,
) -> std::result::Result<(Pushed, KeyRecord), Refusal> {
    let now = call.now;
    // A key of another workspace than the call's is not found (nor is its tombstone).
    let existing = call.ledger.record(digest)?;
    if existing.as_ref().is_some_and(|r| !call.in_scope(r)) {
        return Err(Refusal(404, "NOT_FOUND", "no key of this workspace has this digest".into()));
    }
    let base = match &existing {
        Some(old) => {
            let mut b = KeyRecord::blank(old.id.clone(), digest.to_string(), now);
            b.created_at = old.created_at.clone();
            b
        }
        None => KeyRecord::blank(new_id(now)?, digest.to_string(), now),
    };
    let mut record = base.with_attributes(attrs, WriteMode::Push).map_err(Refusal::field)?;
    super::place(call, &mut record, existing.as_ref())?;
    super::check_grants(call, &record, true)?;
    super::check_tier(call.env, &record, existing.as_ref())?;
    crate::edge::tokens::give_salt(&mut record)?;
    // A push repeating the credits already stored keeps the live count (an origin pushes whole
    // records on every change, and must not refill the key each time); other credits are set.
    if let (Some(new), Some(stored)) = (record.credits, existing.as_ref().and_then(|o| o.credits)) {
        if new.same_as(&stored) {
            record.credits = Some(stored);
        }
    }
    record.stamp_credits(existing.as_ref(), now);
    let Some(old) = &existing else {
        call.ledger.put(&record, None, &call.actor, "push", now)?;
        return Ok((Pushed::Created, record));
    };
    if old.is_revoked() {
        return Err(Refusal(409, "KEY_REVOKED", "the key is revoked, which is final: a push cannot bring it back".into()));
    }
    if same_version_is_unchanged && record.version == old.version {
        let mut same = record.clone();
        same.updated_at = old.updated_at.clone();
        same.key_preview = old.key_preview.clone();
        if same.view(now) == old.view(now) {
            return Ok((Pushed::Unchanged, old.clone()));
        }
    }
    if record.version <= old.version {
        return Err(Refusal(409, "VERSION_CONFLICT", format!("version: must be above the stored version {}", old.version)));
    }
    call.ledger.put(&record, Some(old), &call.actor, "push", now)?;
    Ok((Pushed::Updated, record))
}

/// `PUT /keys/{digest}`: the origin pushes a record for a key it made itself.
pub(super) async fn push(req: &mut Request, call: &Call<'_>, digest: &str) -> Answer {
    no_query(req)?;
    check_digest(digest)?;
    let body = read_json(req).await?;
    let attrs = attributes(&body)?;
    let (pushed, record) = apply(call, digest, attrs, false)?;
    Ok(reply::success(if pushed == Pushed::Created { 201 } else { 200 }, shown(call, &record)?)?)
}

/// `POST /keys/batch`: up to 1 000 records, each applied or refused on its own.
pub(super) async fn batch(req: &mut Request, call: &Call<'_>) -> Answer {
    no_query(req)?;
    let body = read_json_up_to(req, MAX_BATCH_BODY_BYTES).await?;
    let object = body.as_object().ok_or_else(|| Refusal::bad("body: must be a JSON object"))?;
    if let Some(other) = object.keys().find(|k| k.as_str() != "records") {
        return Err(Refusal::bad(format!("{other}: is not a batch field (expected only \"records\")")));
    }
    let items = object
        .get("records")
        .and_then(Value::as_array)
        .ok_or_else(|| Refusal::bad("records: must be an array of records"))?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(Refusal::bad(format!("records: must hold 1 to {MAX_BATCH} records")));
    }
    let mut results = Vec::with_capacity(items.len());
    let (mut created, mut updated, mut unchanged, mut refused) = (0usize, 0usize, 0usize, 0usize);
    for (i, item) in items.iter().enumerate() {
        let outcome = batch_item(call, item);
        let digest = item.get("digest").and_then(Value::as_str).map_or(Value::Null, |d| Value::String(d.to_string()));
        match outcome {
            Ok(pushed) => {
                *match pushed {
                    Pushed::Created => &mut created,
                    Pushed::Updated => &mut updated,
                    Pushed::Unchanged => &mut unchanged,
                } += 1;
                results.push(json!({"digest": digest, "status": pushed.as_str(), "error_code": null, "error_message": null}));
            }
            Err(Refusal(_, code, message)) => {
                refused += 1;
                results.push(json!({"digest": digest, "status": "refused", "error_code": code,
                    "error_message": format!("records[{i}].{message}")}));
            }
        }
    }
    Ok(reply::success(
        200,
        json!({"results": results, "created": created, "updated": updated, "unchanged": unchanged, "refused": refused}),
    )?)
}

fn batch_item(call: &Call<'_>, item: &Value) -> std::result::Result<Pushed, Refusal> {
    let object = item.as_object().ok_or_else(|| Refusal::bad("record: must be a JSON object"))?;
    let digest = object
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::bad("digest: is required (the lowercase hex SHA-256 of the key)"))?;
    check_digest(digest)?;
    let mut attrs = object.clone();
    attrs.remove("digest");
    apply(call, digest, &attrs, true).map(|(pushed, _)| pushed)
}

/// `POST /revocations`: revoke many keys by id and/or digest.
pub(super) async fn revocations(req: &mut Request, call: &Call<'_>) -> Answer {
    no_query(req)?;
    let now = call.now;
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
        match call.ledger.record_by_id(id)?.filter(|r| call.in_scope(r)) {
            None => not_found.push(Value::String(id.clone())),
            Some(record) => {
                if !record.is_revoked() {
                    call.ledger.put(&revoked(&record, now), Some(&record), &call.actor, "revoke", now)?;
                }
                done.push(Value::String(record.id));
            }
        }
    }
    for digest in &hashes {
        match call.ledger.record(digest)? {
            // Another workspace's key: not found, and left as it is.
            Some(record) if !call.in_scope(&record) => not_found.push(Value::String(digest.clone())),
            Some(record) => {
                if !record.is_revoked() {
                    call.ledger.put(&revoked(&record, now), Some(&record), &call.actor, "revoke", now)?;
                }
                done.push(Value::String(record.id));
            }
            None => {
                // Revoked before the origin pushed it: keep a revoked record so no later push
                // can make the key valid.
                let mut record = KeyRecord::blank(new_id(now)?, digest.clone(), now);
                record.name = "(revoked before push)".into();
                record.workspace = call.scope.clone();
                record.active = false;
                record.revoked_at = Some(format_rfc3339(now));
                record.version = 1;
                call.ledger.put(&record, None, &call.actor, "revoke", now)?;
                done.push(Value::String(record.id));
            }
        }
    }
    Ok(reply::success(200, json!({"revoked": done, "not_found": not_found}))?)
}
