//! `/_keyward/v1/webhooks`: the endpoints that are told of key changes, their delivery log and
//! redelivery (edge::webhooks delivers). The secret is shown once, by the call that makes it.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use worker::{Request, SqlStorageValue};

use super::{no_query, query_pairs, read_json, Answer, Call, Refusal};
use crate::core::time::format_rfc3339;
use crate::core::webhook::{check_settings, new_secret};
use crate::edge::reply;
use crate::edge::webhooks::{message_id, parse_message_id};

const MAX_WEBHOOKS: i64 = 100;

#[derive(Deserialize)]
struct HookRow {
    id: String,
    url: String,
    events: String,
    created_at: i64,
    updated_at: i64,
}

impl HookRow {
    fn view(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "events": serde_json::from_str::<Value>(&self.events).unwrap_or(Value::Null),
            "created_at": format_rfc3339(self.created_at),
            "updated_at": format_rfc3339(self.updated_at),
        })
    }
}

fn text(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_string())
}

fn int(n: i64) -> SqlStorageValue {
    SqlStorageValue::Integer(n)
}

fn store(e: impl std::fmt::Display) -> Refusal {
    Refusal(503, "STORE_UNAVAILABLE", format!("the webhook tables are unavailable: {e}"))
}

fn settings(body: &Value) -> std::result::Result<&Map<String, Value>, Refusal> {
    let object = body.as_object().ok_or_else(|| Refusal::bad("body: must be a JSON object"))?;
    if let Some(other) = object.keys().find(|k| k.as_str() != "webhook") {
        return Err(Refusal::bad(format!("{other}: is not a request field (expected only \"webhook\")")));
    }
    object.get("webhook").and_then(Value::as_object).ok_or_else(|| Refusal::bad("webhook: must be an object with url and events"))
}

fn check_hook_id(id: &str) -> std::result::Result<(), Refusal> {
    let ok = id.len() == 29 && id.starts_with("wh_") && id.bytes().skip(3).all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Refusal::bad("id: must look like wh_ followed by 26 characters"))
    }
}

fn load(call: &Call<'_>, id: &str) -> std::result::Result<HookRow, Refusal> {
    check_hook_id(id)?;
    let rows: Vec<HookRow> = call
        .ledger
        .sql()
        .exec("SELECT id, url, events, created_at, updated_at FROM webhooks WHERE id = ?", vec![text(id)])
        .and_then(|c| c.to_array())
        .map_err(store)?;
    rows.into_iter().next().ok_or_else(|| Refusal(404, "NOT_FOUND", format!("no webhook has the id {id}")))
}

#[derive(Deserialize)]
struct CountRow {
    n: i64,
}

pub(super) async fn create(req: &mut Request, call: &Call<'_>) -> Answer {
    no_query(req)?;
    let body = read_json(req).await?;
    let (url, events) = check_settings(settings(&body)?, false).map_err(Refusal::bad)?;
    let sql = call.ledger.sql();
    let count: Vec<CountRow> = sql.exec("SELECT COUNT(*) AS n FROM webhooks", None).and_then(|c| c.to_array()).map_err(store)?;
    if count.first().is_some_and(|c| c.n >= MAX_WEBHOOKS) {
        return Err(Refusal(409, "TOO_MANY_WEBHOOKS", format!("at most {MAX_WEBHOOKS} webhook endpoints")));
    }
    let key_id = super::keys::new_id(call.now)?;
    let id = format!("wh_{}", key_id.strip_prefix("key_").unwrap_or(&key_id));
    let random = crate::edge::random_bytes::<24>().map_err(|_| Refusal(503, "RANDOM_UNAVAILABLE", "no randomness".into()))?;
    let secret = new_secret(&random);
    let events = serde_json::to_string(&events.unwrap_or_default()).unwrap_or_default();
    sql.exec(
        "INSERT INTO webhooks (id, url, events, secret, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        vec![text(&id), text(&url.unwrap_or_default()), text(&events), text(&secret), int(call.now), int(call.now)],
    )
    .map_err(store)?;
    let hook = load(call, &id)?;
    call.ledger.audit_entry(&call.actor, "webhook_create", None, &json!({"webhook": {"old": null, "new": hook.view()}}), call.now)?;
    let mut view = hook.view();
    if let Some(map) = view.as_object_mut() {
        map.insert("secret".into(), Value::String(secret));
    }
    Ok(reply::success(201, view)?)
}

pub(super) fn list(req: &Request, call: &Call<'_>) -> Answer {
    no_query(req)?;
    let rows: Vec<HookRow> = call
        .ledger
        .sql()
        .exec("SELECT id, url, events, created_at, updated_at FROM webhooks ORDER BY id", None)
        .and_then(|c| c.to_array())
        .map_err(store)?;
    Ok(reply::success(200, Value::Array(rows.iter().map(HookRow::view).collect()))?)
}

pub(super) fn get(req: &Request, call: &Call<'_>, id: &str) -> Answer {
    no_query(req)?;
    Ok(reply::success(200, load(call, id)?.view())?)
}

pub(super) async fn update(req: &mut Request, call: &Call<'_>, id: &str) -> Answer {
    no_query(req)?;
    check_hook_id(id)?;
    let body = read_json(req).await?;
    let (url, events) = check_settings(settings(&body)?, true).map_err(Refusal::bad)?;
    let old = load(call, id)?;
    let url = url.unwrap_or_else(|| old.url.clone());
    let events = events.map_or_else(|| old.events.clone(), |e| serde_json::to_string(&e).unwrap_or_default());
    call.ledger
        .sql()
        .exec("UPDATE webhooks SET url = ?, events = ?, updated_at = ? WHERE id = ?", vec![text(&url), text(&events), int(call.now), text(id)])
        .map_err(store)?;
    let hook = load(call, id)?;
    call.ledger.audit_entry(&call.actor, "webhook_update", None, &json!({"webhook": {"old": old.view(), "new": hook.view()}}), call.now)?;
    Ok(reply::success(200, hook.view())?)
}

pub(super) fn delete(call: &Call<'_>, id: &str) -> Answer {
    let old = load(call, id)?;
    let sql = call.ledger.sql();
    let run = |q: &str| sql.exec(q, vec![text(id)]).map(|_| ()).map_err(store);
    run("DELETE FROM webhook_attempts WHERE event_seq IN (SELECT seq FROM webhook_events WHERE webhook_id = ?)")?;
    run("DELETE FROM webhook_events WHERE webhook_id = ?")?;
    run("DELETE FROM webhooks WHERE id = ?")?;
    call.ledger.audit_entry(&call.actor, "webhook_delete", None, &json!({"webhook": {"old": old.view(), "new": null}}), call.now)?;
    Ok(reply::success(200, json!({"id": id, "deleted": true}))?)
}

#[derive(Deserialize)]
struct EventRow {
    seq: i64,
    ordering: String,
    #[serde(rename = "type")]
    kind: String,
    created_at: i64,
    next_at: i64,
    attempts: i64,
    state: String,
    log: Option<String>,
}

const EVENT_QUERY: &str = "SELECT e.seq, e.ordering, e.type, e.created_at, e.next_at, e.attempts, e.state,
    (SELECT json_group_array(json_object('at', a.at, 'status', a.status, 'error', a.error, 'duration_ms', a.duration_ms))
       FROM (SELECT * FROM webhook_attempts WHERE event_seq = e.seq ORDER BY seq) a) AS log
  FROM webhook_events e";

fn event_view(row: &EventRow) -> Value {
    let log: Vec<Value> = row.log.as_deref().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
    let attempts: Vec<Value> = log
        .into_iter()
        .map(|a| {
            json!({
                "at": a.get("at").and_then(Value::as_i64).map(format_rfc3339),
                "status": a.get("status").cloned().unwrap_or(Value::Null),
                "error": a.get("error").cloned().unwrap_or(Value::Null),
                "duration_ms": a.get("duration_ms").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    json!({
        "id": message_id(row.seq),
        "type": row.kind,
        "key_id": row.ordering,
        "state": row.state,
        "created_at": format_rfc3339(row.created_at),
        "next_attempt_at": (row.state == "pending").then(|| format_rfc3339(row.next_at)),
        "attempt_count": row.attempts,
        "attempts": attempts,
    })
}

/// `GET /webhooks/{id}/deliveries`: each event for this endpoint, newest first, with every attempt.
pub(super) fn deliveries(req: &Request, call: &Call<'_>, id: &str) -> Answer {
    let mut limit = 100usize;
    for (name, value) in query_pairs(req)? {
        match name.as_str() {
            "per_page" => limit = super::per_page(&value, 500)?,
            other => return Err(Refusal::bad(format!("{other}: is not a query parameter here (expected per_page)"))),
        }
    }
    load(call, id)?;
    let rows: Vec<EventRow> = call
        .ledger
        .sql()
        .exec(&format!("{EVENT_QUERY} WHERE e.webhook_id = ? ORDER BY e.seq DESC LIMIT ?"), vec![text(id), int(i64::try_from(limit).unwrap_or(100))])
        .and_then(|c| c.to_array())
        .map_err(store)?;
    Ok(reply::success(200, Value::Array(rows.iter().map(event_view).collect()))?)
}

/// `POST /webhooks/{id}/deliveries/{msg_id}/redeliver`: the event goes out again now (same
/// `webhook-id`, so a receiver that already has it can tell), whatever became of it before.
pub(super) fn redeliver(call: &Call<'_>, id: &str, msg: &str) -> Answer {
    load(call, id)?;
    let seq = parse_message_id(msg).ok_or_else(|| Refusal::bad("msg_id: must look like msg_ followed by 12 digits"))?;
    let sql = call.ledger.sql();
    let find = || -> std::result::Result<Option<EventRow>, Refusal> {
        let rows: Vec<EventRow> = sql
            .exec(&format!("{EVENT_QUERY} WHERE e.webhook_id = ? AND e.seq = ?"), vec![text(id), int(seq)])
            .and_then(|c| c.to_array())
            .map_err(store)?;
        Ok(rows.into_iter().next())
    };
    if find()?.is_none() {
        return Err(Refusal(404, "NOT_FOUND", format!("webhook {id} has no delivery {msg}")));
    }
    // A fresh retry window from now.
    sql.exec(
        "UPDATE webhook_events SET state = 'pending', next_at = ?, window_from = ? WHERE seq = ?",
        vec![int(call.now), int(call.now), int(seq)],
    )
    .map_err(store)?;
    let row = find()?.ok_or_else(|| Refusal(404, "NOT_FOUND", format!("webhook {id} has no delivery {msg}")))?;
    Ok(reply::success(200, event_view(&row))?)
}
