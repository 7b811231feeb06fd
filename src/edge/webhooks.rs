//! Webhooks, the control plane's side: the endpoints, the event outbox written in the same
//! transaction as each key change (`enqueue`, called by the ledger), and delivery from the alarm,
//! a round per alarm, per Standard Webhooks: signed, at least once, in order per key and endpoint (a key's next
//! event waits until the one before it is delivered or given up), retried on the schedule
//! `WEBHOOK_RETRY_SCHEDULE_MS` for `WEBHOOK_RETRY_WINDOW_MS` (24 h), each attempt logged.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{AbortController, Delay, Env, Headers, Method, Request, RequestInit, SqlStorage, SqlStorageValue};

use super::store::StoreError;
use crate::core::time::format_rfc3339;
use crate::core::webhook::{key_events, next_attempt, parse_schedule, sign, unreachable_host, DEFAULT_RETRY_WINDOW_MS};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhooks (
  id TEXT PRIMARY KEY,
  url TEXT NOT NULL,
  events TEXT NOT NULL,
  secret TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  webhook_id TEXT NOT NULL,
  ordering TEXT NOT NULL,
  type TEXT NOT NULL,
  payload TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  window_from INTEGER NOT NULL,
  next_at INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_events_pending ON webhook_events (state, webhook_id, ordering, seq);
CREATE INDEX IF NOT EXISTS webhook_events_by_hook ON webhook_events (webhook_id, seq);
CREATE TABLE IF NOT EXISTS webhook_attempts (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  event_seq INTEGER NOT NULL,
  at INTEGER NOT NULL,
  status INTEGER,
  error TEXT,
  duration_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_attempts_by_event ON webhook_attempts (event_seq, seq);
-- Keys whose expires_at has passed and whose key.expired went out, per expires_at (a new one
-- expires again). The index finds the keys with an expires_at without reading the others.
CREATE TABLE IF NOT EXISTS expiry_announced (
  digest TEXT PRIMARY KEY,
  expires_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_expiry ON keys (json_extract(record, '$.expires_at'))
  WHERE json_extract(record, '$.expires_at') IS NOT NULL;
";

/// The Unix ms of a key's `expires_at`, in SQL.
const EXPIRES_MS: &str = "CAST(ROUND((julianday(json_extract(record, '$.expires_at')) - 2440587.5) * 86400000.0) AS INTEGER)";
/// Keys that expire by time: an `expires_at`, active, not revoked.
const EXPIRING: &str = "json_extract(record, '$.expires_at') IS NOT NULL AND json_extract(record, '$.active') = 1
  AND json_extract(record, '$.revoked_at') IS NULL";

/// Most events sent in one round, that is one alarm (one per key and endpoint).
const ROUND: i64 = 25;
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Delivered and given-up events are kept this long for the delivery log.
const LOG_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

pub fn create_schema(sql: &SqlStorage) -> Result<(), StoreError> {
    sql.exec(SCHEMA, None)?;
    Ok(())
}

fn text(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_string())
}

fn int(n: i64) -> SqlStorageValue {
    SqlStorageValue::Integer(n)
}

/// The `webhook-id` of an event: the same on every attempt.
pub fn message_id(seq: i64) -> String {
    format!("msg_{seq:012}")
}

pub fn parse_message_id(id: &str) -> Option<i64> {
    let digits = id.strip_prefix("msg_")?;
    (digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

#[derive(Deserialize)]
struct HookRow {
    id: String,
    events: String,
}

/// Writes the events a key change makes, one row per subscribed endpoint, in the caller's
/// transaction. `old`/`new` are the record's management views: no plaintext key is ever in them.
pub fn enqueue(sql: &SqlStorage, key_id: &str, old: Option<&Value>, new: Option<&Value>, now: i64) -> Result<(), StoreError> {
    let events = key_events(old, new);
    let data = new.or(old).cloned().unwrap_or(Value::Null);
    for event in events {
        enqueue_event(sql, key_id, event, &data, now)?;
    }
    Ok(())
}

/// One event of a key, for each endpoint subscribed to it.
fn enqueue_event(sql: &SqlStorage, key_id: &str, event: &str, data: &Value, now: i64) -> Result<(), StoreError> {
    let hooks: Vec<HookRow> = sql.exec("SELECT id, events FROM webhooks ORDER BY id", None)?.to_array()?;
    let subscribed: Vec<&HookRow> =
        hooks.iter().filter(|h| serde_json::from_str::<Vec<String>>(&h.events).is_ok_and(|e| e.iter().any(|x| x == event))).collect();
    if subscribed.is_empty() {
        return Ok(());
    }
    let payload = json!({"type": event, "timestamp": format_rfc3339(now), "data": data}).to_string();
    for hook in subscribed {
        sql.exec(
            "INSERT INTO webhook_events (webhook_id, ordering, type, payload, created_at, window_from, next_at, attempts, state)
             VALUES (?, ?, ?, ?, ?, ?, ?, 0, 'pending')",
            vec![text(&hook.id), text(key_id), text(event), text(&payload), int(now), int(now), int(now)],
        )?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct DueRow {
    seq: i64,
    payload: String,
    window_from: i64,
    attempts: i64,
    url: String,
    secret: String,
}

#[derive(Deserialize)]
struct NextRow {
    n: Option<i64>,
}

/// When the next pending event can go out (Unix ms), if any: only the oldest pending event of
/// each key and endpoint can, the others wait for it.
pub fn next_due(sql: &SqlStorage) -> Result<Option<i64>, StoreError> {
    let rows: Vec<NextRow> = sql
        .exec(
            "SELECT MIN(e.next_at) AS n FROM webhook_events e
              WHERE e.state = 'pending'
                AND e.seq = (SELECT MIN(p.seq) FROM webhook_events p
                              WHERE p.state = 'pending' AND p.webhook_id = e.webhook_id AND p.ordering = e.ordering)",
            None,
        )?
        .to_array()?;
    Ok(rows.into_iter().next().and_then(|r| r.n))
}

/// Sends one round: the oldest pending event of each key and endpoint, when it is due, all at
/// once; records each attempt and answers when the next pending event is due (the caller sets
/// the alarm for then; a key's next event is due at once after the one before it went out).
///
/// Every request of the round is started before the first await, so they all belong to the
/// event that runs this (the alarm), and the object is not held back while receivers answer: a
/// slow receiver delays only its own events, never the management API or the change feed.
pub async fn deliver(sql: &SqlStorage, env: &Env) -> Result<Option<i64>, StoreError> {
    let schedule = parse_schedule(env.var("WEBHOOK_RETRY_SCHEDULE_MS").ok().map(|v| v.to_string()).as_deref());
    let window = env.var("WEBHOOK_RETRY_WINDOW_MS").ok().and_then(|v| v.to_string().parse::<i64>().ok()).unwrap_or(DEFAULT_RETRY_WINDOW_MS);
    let timeout = env.var("WEBHOOK_TIMEOUT_MS").ok().and_then(|v| v.to_string().parse::<u64>().ok()).unwrap_or(DEFAULT_TIMEOUT_MS);
    let now = super::now_ms();
    let due: Vec<DueRow> = sql
        .exec(
            "SELECT e.seq, e.payload, e.window_from, e.attempts, w.url, w.secret
               FROM webhook_events e JOIN webhooks w ON w.id = e.webhook_id
              WHERE e.state = 'pending' AND e.next_at <= ?
                AND e.seq = (SELECT MIN(p.seq) FROM webhook_events p
                              WHERE p.state = 'pending' AND p.webhook_id = e.webhook_id AND p.ordering = e.ordering)
              ORDER BY e.seq LIMIT ?",
            vec![int(now), int(ROUND)],
        )?
        .to_array()?;
    if !due.is_empty() {
        let sends: Vec<_> = due.iter().map(|row| start(row, now, timeout)).collect();
        let outcomes = futures_util::future::join_all(sends).await;
        let after = super::now_ms();
        for (row, (status, error)) in due.iter().zip(outcomes) {
            sql.exec(
                "INSERT INTO webhook_attempts (event_seq, at, status, error, duration_ms) VALUES (?, ?, ?, ?, ?)",
                vec![
                    int(row.seq),
                    int(now),
                    status.map_or(SqlStorageValue::Null, |s| int(i64::from(s))),
                    error.as_deref().map_or(SqlStorageValue::Null, text),
                    int(after.saturating_sub(now)),
                ],
            )?;
            let attempts = row.attempts.saturating_add(1);
            if status.is_some_and(|s| (200..300).contains(&s)) {
                sql.exec("UPDATE webhook_events SET state = 'delivered', attempts = ? WHERE seq = ?", vec![int(attempts), int(row.seq)])?;
            } else {
                match next_attempt(&schedule, attempts, row.window_from, after, window) {
                    Some(at) => sql.exec(
                        "UPDATE webhook_events SET attempts = ?, next_at = ? WHERE seq = ?",
                        vec![int(attempts), int(at), int(row.seq)],
                    )?,
                    None => sql.exec("UPDATE webhook_events SET state = 'failed', attempts = ? WHERE seq = ?", vec![int(attempts), int(row.seq)])?,
                };
            }
        }
    }
    let old = int(super::now_ms().saturating_sub(LOG_RETENTION_MS));
    sql.exec(
        "DELETE FROM webhook_attempts WHERE event_seq IN (SELECT seq FROM webhook_events WHERE state != 'pending' AND created_at < ?)",
        vec![old.clone()],
    )?;
    sql.exec("DELETE FROM webhook_events WHERE state != 'pending' AND created_at < ?", vec![old])?;
    next_due(sql)
}

/// One attempt, started now (the request is sent before this returns): the receiver's status,
/// or why there was none.
fn start(row: &DueRow, now: i64, timeout_ms: u64) -> impl Future<Output = (Option<u16>, Option<String>)> {
    let id = message_id(row.seq);
    let timestamp = now.div_euclid(1000);
    let controller = AbortController::default();
    let sent = unreachable_host(&row.url)
        .map_or(Ok(()), Err)
        .and_then(|()| sign(&row.secret, &id, timestamp, &row.payload).ok_or_else(|| "the endpoint's secret is not valid base64".to_string()))
        .and_then(|signature| {
            let headers = Headers::new();
            let set = |name: &str, value: &str| headers.set(name, value).map_err(|e| e.to_string());
            set("content-type", "application/json")?;
            set("user-agent", "keyward-webhooks")?;
            set("webhook-id", &id)?;
            set("webhook-timestamp", &timestamp.to_string())?;
            set("webhook-signature", &signature)?;
            let mut init = RequestInit::new();
            init.with_method(Method::Post).with_headers(headers).with_body(Some(row.payload.clone().into()));
            let request = Request::new_with_init(&row.url, &init).map_err(|e| format!("the request could not be made: {e}"))?;
            let options = worker::web_sys::RequestInit::new();
            options.set_signal(Some(&controller.signal()));
            let scope: worker::web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
            Ok(JsFuture::from(scope.fetch_with_request_and_init(request.inner(), &options)))
        });
    async move {
        let mut answer = match sent {
            Ok(answer) => answer,
            Err(e) => return (None, Some(e)),
        };
        let mut timer = Box::pin(Delay::from(Duration::from_millis(timeout_ms)));
        let outcome = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = Pin::new(&mut answer).poll(cx) {
                return Poll::Ready(Some(result));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await;
        match outcome {
            Some(Ok(response)) => match response.dyn_into::<worker::web_sys::Response>() {
                Ok(response) => (Some(response.status()), None),
                Err(_) => (None, Some("the answer was not a response".into())),
            },
            Some(Err(e)) => (None, Some(format!("no answer: {}", e.as_string().unwrap_or_else(|| format!("{e:?}"))))),
            None => {
                controller.abort();
                (None, Some(format!("no answer within {timeout_ms} ms")))
            }
        }
    }
}

/// Whether any endpoint wants `event`.
fn wanted(sql: &SqlStorage, event: &str) -> Result<bool, StoreError> {
    let rows: Vec<NextRow> = sql
        .exec("SELECT COUNT(*) AS n FROM webhooks WHERE EXISTS (SELECT 1 FROM json_each(webhooks.events) WHERE value = ?)", vec![text(event)])?
        .to_array()?;
    Ok(rows.into_iter().next().and_then(|r| r.n).unwrap_or(0) > 0)
}

/// `key.expired` for keys whose `expires_at` has passed (nothing is written when that happens, so
/// the change log has no row for it): once per key and `expires_at`, from the alarm, which is set
/// for the next such time. Answers when the next key expires, if any endpoint wants the event.
pub fn announce_expiries(sql: &SqlStorage, now: i64) -> Result<Option<i64>, StoreError> {
    if !wanted(sql, "key.expired")? {
        return Ok(None);
    }
    let due: Vec<RecordRow> = sql
        .exec(
            &format!(
                "SELECT record FROM keys k WHERE {EXPIRING} AND {EXPIRES_MS} <= ?
                   AND NOT EXISTS (SELECT 1 FROM expiry_announced a WHERE a.digest = k.digest AND a.expires_at = json_extract(k.record, '$.expires_at'))
                 LIMIT 500"
            ),
            vec![int(now)],
        )?
        .to_array()?;
    for row in due {
        let record: crate::core::record::KeyRecord = serde_json::from_str(&row.record)?;
        enqueue_event(sql, &record.id, "key.expired", &record.view(now), now)?;
        sql.exec(
            "INSERT OR REPLACE INTO expiry_announced (digest, expires_at) VALUES (?, ?)",
            vec![text(&record.digest), text(record.expires_at.as_deref().unwrap_or_default())],
        )?;
    }
    sql.exec("DELETE FROM expiry_announced WHERE digest NOT IN (SELECT digest FROM keys)", None)?;
    let next: Vec<NextRow> =
        sql.exec(&format!("SELECT MIN({EXPIRES_MS}) AS n FROM keys WHERE {EXPIRING} AND {EXPIRES_MS} > ?"), vec![int(now)])?.to_array()?;
    Ok(next.into_iter().next().and_then(|r| r.n))
}

/// Called by a Limiter whose credits a request took to zero or across the key's low threshold:
/// asks the control plane to make the event. A failure is logged; the request's answer stands.
pub async fn notify_credits(env: &Env, event: &str, limiter: &str, remaining: u64) {
    let outcome = async {
        let stub = super::store::control_stub(env).map_err(|e| e.0)?;
        let url = format!("https://control/_internal/credits-event?event={event}&limiter={}&remaining={remaining}", limiter);
        let mut init = RequestInit::new();
        init.with_method(Method::Post);
        let request = Request::new_with_init(&url, &init).map_err(|e| e.to_string())?;
        let response = stub.fetch_with_request(request).await.map_err(|e| e.to_string())?;
        if response.status_code() == 200 {
            Ok(())
        } else {
            Err(format!("the control plane answered {}", response.status_code()))
        }
    };
    if let Err(e) = outcome.await {
        worker::console_error!("keyward: the {} event of limiter {} was not made: {}", event, limiter, e);
    }
}

#[derive(Deserialize)]
struct RecordRow {
    record: String,
}

/// The control plane's side of [`notify_credits`]: the event for each listed key that counts on
/// that Limiter (the key, and keys rolled from it), with the live count in `data.credits`.
pub fn credits_event(sql: &SqlStorage, event: &str, limiter: &str, remaining: u64, now: i64) -> Result<(), StoreError> {
    if !matches!(event, "credits.low" | "credits.exhausted") {
        return Err(StoreError(format!("{event} is not a credits event")));
    }
    let rows: Vec<RecordRow> = sql
        .exec(
            "SELECT record FROM keys WHERE id = ?1 OR json_extract(record, '$.limiter') = ?1 ORDER BY id",
            vec![text(limiter)],
        )?
        .to_array()?;
    for row in rows {
        let record: crate::core::record::KeyRecord = serde_json::from_str(&row.record)?;
        let mut view = record.view(now);
        if let Some(credits) = view.get_mut("credits").and_then(Value::as_object_mut) {
            credits.insert("remaining".into(), Value::from(remaining));
        }
        enqueue_event(sql, &record.id, event, &view, now)?;
    }
    Ok(())
}
