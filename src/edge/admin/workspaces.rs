//! Workspaces (docs/workspaces.md): `GET/POST /workspaces`, `GET/PUT/DELETE /workspaces/{id}`,
//! `GET /workspaces/{id}/usage`, and every key route again under `/workspaces/{id}/`.
//!
//! A workspace is created explicitly (a row with a name and a permission ceiling) or exists
//! implicitly because keys name it in their `workspace`: an implicit workspace has its id as its
//! name and the ceiling `["*"]`, and becomes explicit when it is created or updated.

use serde_json::{json, Map, Value};
use worker::{Env, Method, Request};

use super::{authorize, boxed, no_query, query_pairs, read_json, scoped_call, Answer, Call, Need, Refusal};
use crate::core::record::{is_group_permission, is_workspace_id, PermissionSet, MAX_LIST_ENTRIES, MAX_NAME_CHARS};
use crate::core::time::format_rfc3339;
use crate::core::usage::UsageRange;
use crate::edge::ledger::{Ledger, WorkspaceCount, WorkspaceRow};
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

/// The ceiling of an explicit workspace (an implicit one has none: `["*"]`).
pub(super) fn ceiling(ledger: &Ledger, id: &str) -> std::result::Result<Option<PermissionSet>, Refusal> {
    Ok(ledger.workspace(id)?.map(|row| PermissionSet::new(&ceiling_list(&row))))
}

fn ceiling_list(row: &WorkspaceRow) -> Vec<String> {
    serde_json::from_str(&row.ceiling).unwrap_or_else(|_| vec!["*".to_string()])
}

/// Answers the workspace routes; `None`: not one of them (a flat key route).
pub(super) async fn route(req: &mut Request, env: &Env, ledger: &Ledger, now: i64, method: &Method, segments: &[&str]) -> Option<Answer> {
    let answer = match segments {
        ["workspaces"] => boxed(collection(req, env, ledger, now, method)).await,
        ["workspaces", id] => boxed(one(req, env, ledger, now, method, id)).await,
        ["workspaces", id, "usage"] => boxed(usage(req, env, ledger, now, method, id)).await,
        ["workspaces", id, rest @ ..] => {
            if let Err(e) = check_workspace_id(id) {
                return Some(Err(e));
            }
            boxed(super::keys_route(req, env, ledger, now, method, rest, Some(id))).await
        }
        _ => return None,
    };
    Some(answer)
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

fn view(id: &str, row: Option<&WorkspaceRow>, count: Option<&WorkspaceCount>) -> Value {
    let ceiling = row.map_or_else(|| vec!["*".to_string()], ceiling_list);
    json!({
        "id": id,
        "name": row.map_or(id, |r| r.name.as_str()),
        "permission_ceiling": ceiling,
        "explicit": row.is_some(),
        "key_count": count.map_or(0, |c| c.keys),
        "active_key_count": count.map_or(0, |c| c.active),
        "created_at": row.map(|r| format_rfc3339(r.created_at)),
        "updated_at": row.map(|r| format_rfc3339(r.updated_at)),
    })
}

/// One workspace's view, or 404 when it exists neither explicitly nor through keys.
fn shown(ledger: &Ledger, id: &str, now: i64) -> std::result::Result<Value, Refusal> {
    let row = ledger.workspace(id)?;
    let count = ledger.workspace_counts(Some(id), now)?.into_iter().next();
    if row.is_none() && count.is_none() {
        return Err(not_found(id));
    }
    Ok(view(id, row.as_ref(), count.as_ref()))
}

async fn collection(req: &mut Request, env: &Env, ledger: &Ledger, now: i64, method: &Method) -> Answer {
    match method {
        Method::Get => {
            let call = call_for(req, env, ledger, now, Need::Permission("keys:read"), None)?;
            no_query(req)?;
            let rows = ledger.workspaces()?;
            let counts = ledger.workspace_counts(call.scope.as_deref(), now)?;
            // Explicit and implicit workspaces, merged by id.
            let mut ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).chain(counts.iter().map(|c| c.workspace.as_str())).collect();
            ids.sort_unstable();
            ids.dedup();
            let list: Vec<Value> = ids
                .into_iter()
                .filter(|id| call.scope.as_deref().is_none_or(|w| w == *id))
                .map(|id| view(id, rows.iter().find(|r| r.id == id), counts.iter().find(|c| c.workspace == id)))
                .collect();
            let mut extra = Map::new();
            extra.insert("num_records".into(), json!(list.len()));
            Ok(reply::success_with(200, Value::Array(list), extra)?)
        }
        Method::Post => {
            let call = call_for(req, env, ledger, now, Need::AdminOrUnconfined("keys:create"), None)?;
            no_query(req)?;
            let body = read_json(req).await?;
            let attrs = wrapper(&body)?;
            let id = match attrs.get("id") {
                Some(Value::String(id)) => id.clone(),
                Some(_) => return Err(Refusal::bad("id: must be a string")),
                None => return Err(Refusal::bad("id: is required")),
            };
            if !is_workspace_id(&id) {
                return Err(Refusal::bad("id: must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -"));
            }
            let mut row = WorkspaceRow { id: id.clone(), name: id.clone(), ceiling: "[\"*\"]".into(), created_at: now, updated_at: now };
            apply(&mut row, attrs, true)?;
            if ledger.workspace(&id)?.is_some() {
                return Err(Refusal(409, "WORKSPACE_EXISTS", format!("id: the workspace {id} already exists")));
            }
            let count = ledger.workspace_counts(Some(&id), now)?.into_iter().next();
            let shown = view(&id, Some(&row), count.as_ref());
            ledger.put_workspace(&row, None, &shown, &call.actor, "workspace_create", now)?;
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

/// Applies `name` and `permission_ceiling` onto a row (`id` only on create: it is read-only).
fn apply(row: &mut WorkspaceRow, attrs: &Map<String, Value>, creating: bool) -> std::result::Result<(), Refusal> {
    for (field, value) in attrs {
        match field.as_str() {
            "id" if creating => {}
            "id" => {
                if value.as_str() != Some(row.id.as_str()) {
                    return Err(Refusal::bad("id: is read-only (a workspace keeps its id)"));
                }
            }
            "name" => {
                let name = value.as_str().ok_or_else(|| Refusal::bad("name: must be a string"))?;
                let n = name.chars().count();
                if n == 0 || n > MAX_NAME_CHARS || name.trim().is_empty() {
                    return Err(Refusal::bad(format!("name: must be 1 to {MAX_NAME_CHARS} characters long, not blank")));
                }
                if name.chars().any(char::is_control) {
                    return Err(Refusal::bad("name: must not contain control characters"));
                }
                row.name = name.to_string();
            }
            "permission_ceiling" => {
                let items = value.as_array().ok_or_else(|| Refusal::bad("permission_ceiling: must be an array of permissions"))?;
                if items.len() > MAX_LIST_ENTRIES {
                    return Err(Refusal::bad(format!("permission_ceiling: must have at most {MAX_LIST_ENTRIES} entries")));
                }
                let mut list = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(p) if is_group_permission(p) => list.push(p.to_string()),
                        Some(p) => {
                            return Err(Refusal::bad(format!(
                                "permission_ceiling[{i}]: \"{p}\" is not a permission (expected module:action, module:*, *:action or *)"
                            )))
                        }
                        None => return Err(Refusal::bad(format!("permission_ceiling[{i}]: must be a string"))),
                    }
                }
                row.ceiling = serde_json::to_string(&list).map_err(|e| Refusal::bad(e.to_string()))?;
            }
            "key_count" | "active_key_count" | "explicit" | "created_at" | "updated_at" => {
                return Err(Refusal::bad(format!("{field}: is read-only")));
            }
            other => return Err(Refusal::bad(format!("{other}: is not a workspace attribute"))),
        }
    }
    Ok(())
}

async fn one(req: &mut Request, env: &Env, ledger: &Ledger, now: i64, method: &Method, id: &str) -> Answer {
    let need = match method {
        Method::Get => Need::Permission("keys:read"),
        Method::Put => Need::AdminOrUnconfined("keys:update"),
        Method::Delete => Need::AdminOrUnconfined("keys:delete"),
        _ => return Err(not_allowed(method)),
    };
    check_workspace_id(id)?;
    // A management key of a workspace learns nothing of another (404); its own it may only read.
    let call = match call_for(req, env, ledger, now, need, Some(id)) {
        Err(refused @ Refusal(403, _, _)) if *method != Method::Get => {
            let caller = authorize(req, env, ledger, Need::Permission("keys:read"), now);
            return Err(match caller.map(|c| c.workspace) {
                Ok(Some(w)) if w != id => not_found(id),
                Ok(Some(_)) => Refusal(403, "PERMISSION_DENIED", "a workspace's own management key cannot change workspaces".into()),
                _ => refused,
            });
        }
        other => other?,
    };
    no_query(req)?;
    match method {
        Method::Get => Ok(reply::success(200, shown(ledger, id, now)?)?),
        Method::Put => {
            let body = read_json(req).await?;
            let attrs = wrapper(&body)?;
            let old = ledger.workspace(id)?;
            let count = ledger.workspace_counts(Some(id), now)?.into_iter().next();
            if old.is_none() && count.is_none() {
                return Err(not_found(id));
            }
            let before = view(id, old.as_ref(), count.as_ref());
            let mut row = old.clone().unwrap_or(WorkspaceRow {
                id: id.to_string(),
                name: id.to_string(),
                ceiling: "[\"*\"]".into(),
                created_at: now,
                updated_at: now,
            });
            apply(&mut row, attrs, false)?;
            row.updated_at = now;
            let after = view(id, Some(&row), count.as_ref());
            ledger.put_workspace(&row, Some(&before), &after, &call.actor, "workspace_update", now)?;
            Ok(reply::success(200, after)?)
        }
        _ => {
            let Some(row) = ledger.workspace(id)? else {
                return Err(if ledger.workspace_counts(Some(id), now)?.is_empty() {
                    not_found(id)
                } else {
                    Refusal(404, "NOT_FOUND", format!("the workspace {id} was never created: it exists only through its keys"))
                });
            };
            let count = ledger.workspace_counts(Some(id), now)?.into_iter().next();
            if let Some(active) = count.as_ref().map(|c| c.active).filter(|n| *n > 0) {
                return Err(Refusal(
                    409,
                    "WORKSPACE_HAS_ACTIVE_KEYS",
                    format!("the workspace {id} has {active} active keys: expire or revoke them first"),
                ));
            }
            let before = view(id, Some(&row), count.as_ref());
            ledger.delete_workspace(id, &before, &call.actor, now)?;
            Ok(reply::success(200, json!({"id": id, "deleted": true}))?)
        }
    }
}

/// `GET /workspaces/{id}/usage`: every listed key of the workspace, by outcome.
async fn usage(req: &mut Request, env: &Env, ledger: &Ledger, now: i64, method: &Method, id: &str) -> Answer {
    if *method != Method::Get {
        return Err(not_allowed(method));
    }
    check_workspace_id(id)?;
    let _call = call_for(req, env, ledger, now, Need::Permission("keys:read"), Some(id))?;
    let range = UsageRange::parse(&query_pairs(req)?, now).map_err(|e| Refusal::bad(e.0))?;
    shown(ledger, id, now)?;
    let rows = crate::edge::usage::workspace_counts(ledger.sql(), id, &range)?;
    let mut data = range.buckets(&rows);
    if let Some(map) = data.as_object_mut() {
        map.insert("workspace".into(), Value::String(id.to_string()));
    }
    Ok(reply::success(200, data)?)
}
