//! Leaked keys: what a report (GitHub's secret scanning through `edge::leaks`, or the operator's
//! own scanner through `POST /_keyward/v1/leaks`) does to each key it names. A known key is marked
//! (`leaked_at`, `leaked_url`) and acted on by `LEAK_ACTION`, in one ledger write with its audit
//! entry (actor `leak:<source>`).

use serde_json::{json, Value};
use worker::{Env, Request};

use super::{no_query, read_json, Answer, Call, Refusal};
use crate::core::digest::is_digest;
use crate::core::leak::{lookup_digest, source_actor, token_hash, LeakAction, MAX_FIELD_CHARS, MAX_REPORT_TOKENS};
use crate::core::time::format_rfc3339;
use crate::edge::ledger::{Actor, Ledger};
use crate::edge::reply;

/// One reported leak: the digest to look up (none: a false positive, not looked up) and where it
/// was found.
pub(crate) struct Leak {
    pub digest: Option<String>,
    pub url: String,
}

/// What a leak did: whether it named a known key (a true positive), and that key's id.
pub(crate) struct Outcome {
    pub key_id: Option<String>,
}

/// `LEAK_ACTION` from the environment; a value other than `revoke` or `expire` is refused (500)
/// rather than guessed at.
pub(crate) fn leak_action(env: &Env) -> std::result::Result<LeakAction, Refusal> {
    let value = env.var("LEAK_ACTION").ok().map(|v| v.to_string());
    LeakAction::parse(value.as_deref()).map_err(|e| Refusal(500, "CONFIGURATION_ERROR", e))
}

/// Applies each leak in order. Nothing is read for a leak without a digest. `workspace`: the
/// workspace the report is confined to; a key of another is not the reporter's (a false positive).
pub(crate) fn apply(
    env: &Env,
    ledger: &Ledger,
    now: i64,
    actor: &Actor,
    leaks: &[Leak],
    workspace: Option<&str>,
) -> std::result::Result<Vec<Outcome>, Refusal> {
    let action = leak_action(env)?;
    leaks.iter().map(|leak| apply_one(ledger, now, actor, action, leak, workspace)).collect()
}

fn apply_one(ledger: &Ledger, now: i64, actor: &Actor, action: LeakAction, leak: &Leak, workspace: Option<&str>) -> std::result::Result<Outcome, Refusal> {
    let Some(digest) = &leak.digest else { return Ok(Outcome { key_id: None }) };
    let Some(record) = ledger.record(digest)?.filter(|r| r.in_scope(workspace)) else { return Ok(Outcome { key_id: None }) };
    // A deleted revoked key keeps a tombstone: it is the operator's key (a true positive), already
    // refused everywhere, and has no record to mark.
    if record.is_revoked() && ledger.record_by_id(&record.id)?.is_none() {
        return Ok(Outcome { key_id: Some(record.id) });
    }
    let mut next = record.clone();
    if next.leaked_at.is_none() {
        next.leaked_at = Some(format_rfc3339(now));
        next.leaked_url = Some(leak.url.clone()).filter(|u| !u.is_empty());
    }
    let verb = match action {
        LeakAction::Revoke if !record.is_revoked() => {
            next.active = false;
            next.revoked_at = Some(format_rfc3339(now));
            "revoke"
        }
        LeakAction::Expire if record.active && !record.is_revoked() => {
            next.active = false;
            "expire"
        }
        _ => "leak",
    };
    if next == record {
        // Reported again: the report is audited, the record stays as it is.
        ledger.audit_entry(actor, "leak", Some(&record.id), &json!({"report_url": leak.url}), now)?;
    } else {
        next.version = record.version.saturating_add(1);
        next.updated_at = format_rfc3339(now);
        ledger.put(&next, Some(&record), actor, verb, now)?;
    }
    Ok(Outcome { key_id: Some(record.id) })
}

/// `POST /_keyward/v1/leaks`: `{"source": NAME, "leaks": [{"key": PLAINTEXT} or {"digest": HEX},
/// with an optional "url"]}`; answers each leak's `token_hash`, `label` and, for a known key, its id.
pub(super) async fn report(req: &mut Request, call: &Call<'_>) -> Answer {
    no_query(req)?;
    let body = read_json(req).await?;
    let object = body.as_object().ok_or_else(|| Refusal::bad("body: must be a JSON object"))?;
    if let Some(other) = object.keys().find(|k| !matches!(k.as_str(), "source" | "leaks")) {
        return Err(Refusal::bad(format!("{other}: is not a leak report field (expected \"source\" and \"leaks\")")));
    }
    let source = object.get("source").and_then(Value::as_str).unwrap_or_default();
    let actor = source_actor(source)
        .ok_or_else(|| Refusal::bad("source: must be 1 to 40 lowercase letters, digits, '-', '_' or '.' (e.g. \"trufflehog\")"))?;
    let items = object.get("leaks").and_then(Value::as_array).ok_or_else(|| Refusal::bad("leaks: must be an array"))?;
    if items.is_empty() || items.len() > MAX_REPORT_TOKENS {
        return Err(Refusal::bad(format!("leaks: must hold 1 to {MAX_REPORT_TOKENS} leaks")));
    }
    let mut leaks = Vec::with_capacity(items.len());
    let mut hashes = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let entry = item.as_object().ok_or_else(|| Refusal::bad(format!("leaks[{i}]: must be an object")))?;
        if let Some(other) = entry.keys().find(|k| !matches!(k.as_str(), "key" | "digest" | "url")) {
            return Err(Refusal::bad(format!("leaks[{i}].{other}: is not a leak field (expected \"key\" or \"digest\", and \"url\")")));
        }
        let url = match entry.get("url") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(u)) if u.chars().count() <= MAX_FIELD_CHARS => u.clone(),
            Some(_) => return Err(Refusal::bad(format!("leaks[{i}].url: must be a string of at most {MAX_FIELD_CHARS} characters"))),
        };
        let (hash, digest) = match (entry.get("key"), entry.get("digest")) {
            (Some(Value::String(key)), None) if !key.is_empty() && key.chars().count() <= MAX_FIELD_CHARS => (token_hash(key), lookup_digest(key)),
            (None, Some(Value::String(d))) if is_digest(d) => (d.clone(), Some(d.clone())),
            (Some(_), None) => return Err(Refusal::bad(format!("leaks[{i}].key: must be a string of 1 to {MAX_FIELD_CHARS} characters"))),
            (None, Some(_)) => return Err(Refusal::bad(format!("leaks[{i}].digest: must be a lowercase hex SHA-256 (64 characters)"))),
            _ => return Err(Refusal::bad(format!("leaks[{i}]: give exactly one of \"key\" and \"digest\""))),
        };
        hashes.push(hash);
        leaks.push(Leak { digest, url });
    }
    let outcomes = apply(call.env, call.ledger, call.now, &Actor::Leak(actor), &leaks, call.scope.as_deref())?;
    let results: Vec<Value> = hashes
        .into_iter()
        .zip(outcomes)
        .map(|(hash, outcome)| {
            let label = if outcome.key_id.is_some() { "true_positive" } else { "false_positive" };
            json!({"token_hash": hash, "label": label, "key_id": outcome.key_id})
        })
        .collect();
    Ok(reply::success(200, json!({"results": results}))?)
}
