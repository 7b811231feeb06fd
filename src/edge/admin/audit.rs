//! `GET /audit`: who changed what, newest first, filtered by key or action, paged by cursor.

use serde_json::{json, Map, Value};
use worker::Request;

use super::{per_page, query_pairs, Answer, Call, Refusal};
use crate::core::key::is_key_id;
use crate::edge::ledger::parse_audit_id;
use crate::edge::reply;

const MAX_PER_PAGE: usize = 500;
const DEFAULT_PER_PAGE: usize = 100;
const ACTIONS: &[&str] = &[
    "create", "update", "expire", "reactivate", "revoke", "roll", "delete", "push", "policy_update", "import", "credits",
    "revoke_tokens", "rotate_signing_key", "workspace_create", "workspace_update", "workspace_delete",
    "leak", "webhook_create", "webhook_update", "webhook_delete",
];

pub(super) fn list(req: &Request, call: &Call<'_>) -> Answer {
    let mut key_id = None;
    let mut action = None;
    let mut before = None;
    let mut size = DEFAULT_PER_PAGE;
    let mut token = None;
    let mut workspace = call.scope.clone();
    for (field, value) in query_pairs(req)? {
        match field.as_str() {
            "key_id" => {
                if !is_key_id(&value) {
                    return Err(Refusal::bad("key_id: must look like key_ followed by 26 characters (a ULID)"));
                }
                key_id = Some(value);
            }
            "action" => {
                if !ACTIONS.contains(&value.as_str()) {
                    return Err(Refusal::bad(format!("action: must be one of {}", ACTIONS.join(", "))));
                }
                action = Some(value);
            }
            "page_token" => {
                before = Some(parse_audit_id(&value).ok_or_else(|| Refusal::bad("page_token: is not a token this API gave out"))?);
                token = Some(value);
            }
            "per_page" => size = per_page(&value, MAX_PER_PAGE)?,
            "workspace" => workspace = Some(super::list_workspace(call, value)?),
            other => return Err(Refusal::bad(format!("{other}: is not an audit parameter"))),
        }
    }
    // A key of another workspace than the call's is not found, as on every key route.
    if let (Some(id), Some(_)) = (key_id.as_deref(), call.scope.as_deref()) {
        if call.ledger.record_by_id(id)?.is_some_and(|r| !call.in_scope(&r)) {
            return Err(Refusal::not_found(id));
        }
    }
    // One more than a page tells whether another page follows.
    let mut entries = call.ledger.audit(key_id.as_deref(), action.as_deref(), workspace.as_deref(), before, size.saturating_add(1))?;
    let more = entries.len() > size;
    entries.truncate(size);
    let next = if more { entries.last().and_then(|e| e.get("id")).cloned().unwrap_or(Value::Null) } else { Value::Null };
    let mut extra = Map::new();
    extra.insert("per_page".into(), json!(size));
    extra.insert("page_token".into(), token.map_or(Value::Null, Value::String));
    extra.insert("next_page_token".into(), next);
    Ok(reply::success_with(200, Value::Array(entries), extra)?)
}
