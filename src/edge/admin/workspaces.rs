//! Workspaces (docs/workspaces.md): `GET/POST /workspaces`, `GET/PUT/DELETE /workspaces/{id}`,
//! `GET /workspaces/{id}/usage`, and every key route again under `/workspaces/{id}/`.
//!
//! A workspace is created explicitly (a row with a name and a permission ceiling) or exists
//! implicitly because keys name it in their `workspace`: an implicit workspace has its id as its
//! name and the ceiling `["*"]`, and becomes explicit when it is created or updated.

use serde_json::{json, Map, Value};
use worker::{Env, Method, Request};

use super::{authorize, json_of, no_query, scoped_call, Answer, Call, Need, Refusal, MAX_BODY_BYTES};
use crate::core::record::{is_group_permission, is_workspace_id, PermissionSet, MAX_LIST_ENTRIES, MAX_NAME_CHARS};
use crate::edge::ledger::Ledger;
use crate::edge::reply;

pub(super) fn not_found(id: &str) -> Refusal {
    Refusal(404, "NOT_FOUND", format!("no workspace has the id {id}"))
}

fn check_workspace_id(id: &str) -> std::result::Result<(), Refusal> {
    if is_workspace_id(id) {
        Ok(())
    } else {
        Err(Refusal::bad("workspace: an id is 1 to 64 characters of A-Z, a-z, 0-9, _ and -"))
    }
}

/// The ceiling of a created workspace (an implicit one has none: `["*"]`).
pub(super) fn ceiling(ledger: &Ledger, id: &str) -> std::result::Result<Option<PermissionSet>, Refusal> {
    Ok(ledger
        .workspace_ceiling(id)?
        .map(|text| PermissionSet::new(&serde_json::from_str::<Vec<String>>(&text).unwrap_or_default())))
}

/// A workspace id from the path, or a 400.
pub(super) fn checked(id: &str) -> std::result::Result<&str, Refusal> {
    check_workspace_id(id).map(|()| id)
}

/// Answers `/workspaces`, `/workspaces/{id}` and `/workspaces/{id}/usage`, with the request's
/// body already read (`body`).
pub(super) fn route(req: &Request, env: &Env, ledger: &Ledger, now: i64, method: &Method, segments: &[&str], body: &[u8]) -> Answer {
    match segments {
        ["workspaces"] => collection(req, env, ledger, now, method, body),
        ["workspaces", id] => one(req, env, ledger, now, method, checked(id)?, body),
        ["workspaces", id, "usage"] => usage(req, env, ledger, now, method, checked(id)?),
        _ => Err(Refusal(404, "NOT_FOUND", "no such management endpoint".into())),
    }
}

fn not_allowed(method: &Method) -> Refusal {
    Refusal(405, "METHOD_NOT_ALLOWED", format!("{method} is not allowed here"))
}

/// The caller's call, for a workspace route naming `named` (a management key of another
/// workspace gets a 404).
fn call_for<'a>(req: &Request, env: &'a Env, ledger: &'a Ledger, now: i64, need: Need, named: Option<&str>) -> std::result::Result<Call<'a>, Refusal> {
    let caller = authorize(req, env, ledger, need, now)?;
    scoped_call(env, ledger, now, caller, named)
}

/// One workspace's view, or 404 when it exists neither explicitly nor through keys.
fn shown(ledger: &Ledger, id: &str, now: i64) -> std::result::Result<Value, Refusal> {
    ledger.workspace_views(Some(id), now)?.into_iter().next().ok_or_else(|| not_found(id))
}

fn collection(req: &Request, env: &Env, ledger: &Ledger, now: i64, method: &Method, body: &[u8]) -> Answer {
    match method {
        Method::Get => {
            let call = call_for(req, env, ledger, now, Need::Permission("keys:read"), None)?;
            no_query(req)?;
            let list = ledger.workspace_views(call.scope.as_deref(), now)?;
            let mut extra = Map::new();
            extra.insert("num_records".into(), json!(list.len()));
            Ok(reply::success_with(200, Value::Array(list), extra)?)
        }
        Method::Post => {
            let call = call_for(req, env, ledger, now, Need::Permission("keys:create"), None)?;
            if call.confined.is_some() {
                return Err(Refusal(403, "PERMISSION_DENIED", "a workspace's own management key cannot create workspaces".into()));
            }
            no_query(req)?;
            let body = json_of(body, MAX_BODY_BYTES)?;
            let attrs = wrapper(&body)?;
            let id = match attrs.get("id") {
                Some(Value::String(id)) if is_workspace_id(id) => id.clone(),
                Some(Value::String(_)) => return Err(Refusal::bad("id: must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -")),
                Some(_) => return Err(Refusal::bad("id: must be a string")),
                None => return Err(Refusal::bad("id: is required")),
            };
            let (mut name, mut ceiling) = (id.clone(), "[\"*\"]".to_string());
            apply(&mut name, &mut ceiling, attrs, None)?;
            if ledger.workspace_ceiling(&id)?.is_some() {
                return Err(Refusal(409, "WORKSPACE_EXISTS", format!("id: the workspace {id} already exists")));
            }
            let shown = ledger.put_workspace(&id, &name, &ceiling, None, &call.actor, now)?;
            Ok(reply::success(201, shown)?)
        }
        _ => Err(not_allowed(method)),
    }
}

/// The `{"workspace": {...}}` wrapper.
fn wrapper(body: &Value) -> std::result::Result<&Map<String, Value>, Refusal> {
    let object = body.as_object().ok_or_else(|| Refusal::bad("body: must be a JSON object"))?;
    if let Some(other) = object.keys().find(|k| k.as_str() != "workspace") {
        return Err(Refusal::bad(format!("{other}: is not a request field (expected only \"workspace\")")));
    }
    object
        .get("workspace")
        .and_then(Value::as_object)
        .ok_or_else(|| Refusal::bad("workspace: must be an object of workspace attributes"))
}

/// Applies `name` and `permission_ceiling` (a JSON array, as stored); `id` is read-only once
/// created (`existing`: the id being changed).
fn apply(name: &mut String, ceiling: &mut String, attrs: &Map<String, Value>, existing: Option<&str>) -> std::result::Result<(), Refusal> {
    for (field, value) in attrs {
        match field.as_str() {
            "id" => {
                if existing.is_some_and(|id| value.as_str() != Some(id)) {
                    return Err(Refusal::bad("id: is read-only (a workspace keeps its id)"));
                }
            }
            "name" => {
                let text = value.as_str().ok_or_else(|| Refusal::bad("name: must be a string"))?;
                let n = text.chars().count();
                if n == 0 || n > MAX_NAME_CHARS || text.trim().is_empty() || text.chars().any(char::is_control) {
                    return Err(Refusal::bad(format!("name: must be 1 to {MAX_NAME_CHARS} characters long, not blank, without control characters")));
                }
                *name = text.to_string();
            }
            "permission_ceiling" => {
                let items = value.as_array().ok_or_else(|| Refusal::bad("permission_ceiling: must be an array of permissions"))?;
                if items.len() > MAX_LIST_ENTRIES {
                    return Err(Refusal::bad(format!("permission_ceiling: must have at most {MAX_LIST_ENTRIES} entries")));
                }
                for (i, item) in items.iter().enumerate() {
                    if !item.as_str().is_some_and(is_group_permission) {
                        return Err(Refusal::bad(format!(
                            "permission_ceiling[{i}]: {item} is not a permission (expected module:action, module:*, *:action or *)"
                        )));
                    }
                }
                *ceiling = value.to_string();
            }
            "key_count" | "active_key_count" | "explicit" | "created_at" | "updated_at" => {
                return Err(Refusal::bad(format!("{field}: is read-only")));
            }
            other => return Err(Refusal::bad(format!("{other}: is not a workspace attribute"))),
        }
    }
    Ok(())
}

fn one(req: &Request, env: &Env, ledger: &Ledger, now: i64, method: &Method, id: &str, body: &[u8]) -> Answer {
    let need = match method {
        Method::Get => Need::Permission("keys:read"),
        Method::Put => Need::Permission("keys:update"),
        Method::Delete => Need::Permission("keys:delete"),
        _ => return Err(not_allowed(method)),
    };
    // A management key of a workspace learns nothing of another (404); its own it may only read.
    let call = call_for(req, env, ledger, now, need, Some(id))?;
    if call.confined.is_some() && *method != Method::Get {
        return Err(Refusal(403, "PERMISSION_DENIED", "a workspace's own management key cannot change workspaces".into()));
    }
    no_query(req)?;
    let before = shown(ledger, id, now);
    match method {
        Method::Get => Ok(reply::success(200, before?)?),
        Method::Put => {
            let body = json_of(body, MAX_BODY_BYTES)?;
            let attrs = wrapper(&body)?;
            let before = before?;
            let text = |field: &str| before.get(field).map(Value::to_string).unwrap_or_default();
            let mut name = before.get("name").and_then(Value::as_str).unwrap_or(id).to_string();
            let mut ceiling = text("permission_ceiling");
            apply(&mut name, &mut ceiling, attrs, Some(id))?;
            let after = ledger.put_workspace(id, &name, &ceiling, Some(before), &call.actor, now)?;
            Ok(reply::success(200, after)?)
        }
        _ => {
            let before = before?;
            if before.get("explicit") != Some(&Value::Bool(true)) {
                return Err(Refusal(404, "NOT_FOUND", format!("the workspace {id} was never created: it exists only through its keys")));
            }
            if let Some(active) = before.get("active_key_count").and_then(Value::as_i64).filter(|n| *n > 0) {
                return Err(Refusal(
                    409,
                    "WORKSPACE_HAS_ACTIVE_KEYS",
                    format!("the workspace {id} has {active} active keys: expire or revoke them first"),
                ));
            }
            ledger.delete_workspace(id, before, &call.actor, now)?;
            Ok(reply::success(200, json!({"id": id, "deleted": true}))?)
        }
    }
}

/// `GET /workspaces/{id}/usage`: every listed key of the workspace, by outcome.
fn usage(req: &Request, env: &Env, ledger: &Ledger, now: i64, method: &Method, id: &str) -> Answer {
    if *method != Method::Get {
        return Err(not_allowed(method));
    }
    let call = call_for(req, env, ledger, now, Need::Permission("keys:read"), Some(id))?;
    let range = super::usage::range(req, &call)?;
    shown(ledger, id, now)?;
    let rows = crate::edge::usage::workspace_counts(ledger.sql(), id, &range)?;
    super::usage::answer(&range, &rows, "workspace", id)
}
