//! Usage at the edge: each isolate tallies the requests of known keys in memory ([`record`], one
//! map update on the request's path), and flushes the tally in batches, at most once per
//! `USAGE_FLUSH_MS`, after the answer (`wait_until`), to the control plane's SQLite; the usage
//! queries and `last_used_at` read it there.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use serde::Deserialize;
use worker::{Delay, Env, Method, Request, RequestInit, SqlStorage, SqlStorageValue};

use super::store::{self, StoreError};
use crate::core::usage::{UsageRange, UsageTally, HOUR_MS, MAX_BATCH_BUCKETS};
use crate::core::Code;

/// `USAGE_FLUSH_MS` when not set in wrangler.toml.
const DEFAULT_FLUSH_MS: i64 = 5_000;
/// How long one flusher (the background task of one request) goes on flushing while counts keep
/// coming; the next request after it starts another. Well under the 30 s a `wait_until` may run.
const FLUSHER_LIFETIME_MS: i64 = 20_000;

thread_local! {
    static TALLY: RefCell<UsageTally> = RefCell::new(UsageTally::default());
    /// When the running flusher was started (0: none).
    static FLUSHER: Cell<i64> = const { Cell::new(0) };
    /// When this isolate last sent (or tried to send) a batch.
    static LAST_FLUSH: Cell<i64> = const { Cell::new(0) };
    static FLUSH_MS: Cell<i64> = const { Cell::new(0) };
    /// Test-only fault injection (`KEYWARD_TEST_FAIL_USAGE_FLUSHES`, never set in wrangler.toml):
    /// how many flushes still to fail, to show that a failed flush loses nothing.
    static FAILURES_LEFT: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Counts one request of a known key (one whose record was found) with its outcome. Synchronous
/// and allocation-free for a key already in the tally.
pub fn record(key_id: &str, code: Code, now_ms: i64) {
    TALLY.with(|t| t.borrow_mut().add(key_id, code, now_ms));
}

/// Whether the request just counted should start a flusher after its answer (the gate's
/// background work, [`flush_in_background`]): counts wait and no flusher runs.
pub fn flush_due(now_ms: i64) -> bool {
    !TALLY.with(|t| t.borrow().is_empty()) && !flusher_alive(now_ms)
}

/// A flusher the runtime cut off never cleared its mark; past its lifetime it is gone.
fn flusher_alive(now_ms: i64) -> bool {
    let running = FLUSHER.get();
    running != 0 && now_ms.saturating_sub(running) < FLUSHER_LIFETIME_MS + FLUSH_MS.get() + 10_000
}

/// Runs the flusher in the request's `waitUntil`, unless counts are not waiting or one runs.
pub async fn flush_in_background(env: &Env) {
    let now = super::now_ms();
    if !flush_due(now) {
        return;
    }
    FLUSHER.set(now);
    run_flusher(env.clone(), now).await;
}

/// Flushes once the interval since the last flush has passed, again while counts keep coming,
/// until its lifetime is over. It gives up its mark before its last flush, so a request counted
/// after that flush's copy was taken starts a new flusher.
async fn run_flusher(env: Env, started: i64) {
    let interval = flush_ms(&env);
    loop {
        let last_round = super::now_ms().saturating_sub(started) >= FLUSHER_LIFETIME_MS;
        if last_round && FLUSHER.get() == started {
            FLUSHER.set(0);
        }
        let wait = LAST_FLUSH.get().saturating_add(interval).saturating_sub(super::now_ms());
        if wait > 0 {
            Delay::from(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;
        }
        let _ = flush(&env).await;
        if last_round {
            return;
        }
        if TALLY.with(|t| t.borrow().is_empty()) {
            if FLUSHER.get() == started {
                FLUSHER.set(0);
            }
            return;
        }
    }
}

/// Sends one batch to the control plane; a failed send leaves it in the tally for the next one.
async fn flush(env: &Env) -> Result<(), StoreError> {
    LAST_FLUSH.set(super::now_ms());
    let batch = TALLY.with(|t| t.borrow().batch(MAX_BATCH_BUCKETS));
    if batch.is_empty() {
        return Ok(());
    }
    let failures = FAILURES_LEFT.get().unwrap_or_else(|| {
        env.var("KEYWARD_TEST_FAIL_USAGE_FLUSHES").ok().and_then(|v| v.to_string().parse().ok()).unwrap_or(0)
    });
    FAILURES_LEFT.set(Some(failures.saturating_sub(1)));
    if failures > 0 {
        return Err(StoreError("a test made this flush fail".into()));
    }
    let body = serde_json::to_string(&batch)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let request = Request::new_with_init("https://control/_internal/usage", &init)?;
    store::remote_delay(env).await;
    let response = store::control_stub(env)?.fetch_with_request(request).await?;
    if response.status_code() != 200 {
        return Err(StoreError(format!("the control plane answered {}", response.status_code())));
    }
    TALLY.with(|t| t.borrow_mut().settle(&batch));
    Ok(())
}

fn flush_ms(env: &Env) -> i64 {
    let cached = FLUSH_MS.get();
    if cached > 0 {
        return cached;
    }
    let ms = env
        .var("USAGE_FLUSH_MS")
        .ok()
        .and_then(|v| v.to_string().trim().parse::<i64>().ok())
        .filter(|ms| (100..=60_000).contains(ms))
        .unwrap_or(DEFAULT_FLUSH_MS);
    FLUSH_MS.set(ms);
    ms
}

/// What the isolate holds, for the test harness's debug endpoint.
pub fn stats() -> serde_json::Value {
    TALLY.with(|t| {
        let t = t.borrow();
        serde_json::json!({"keys": t.key_count(), "buckets": t.bucket_count(), "dropped": t.dropped()})
    })
}

// The control plane's side: the tables, the batch upsert and the reads.

/// How long hourly counts are kept: past the widest query (366 days by day) with room to spare.
const RETENTION_HOURS: i64 = 400 * 24;

thread_local! {
    /// The hour the control plane last dropped expired counts in.
    static PRUNED_HOUR: Cell<i64> = const { Cell::new(i64::MIN) };
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage (
  key_id TEXT NOT NULL,
  hour INTEGER NOT NULL,
  outcome TEXT NOT NULL,
  count INTEGER NOT NULL,
  PRIMARY KEY (key_id, hour, outcome)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_by_hour ON usage (hour);
CREATE TABLE IF NOT EXISTS last_used (
  key_id TEXT PRIMARY KEY,
  at INTEGER NOT NULL
) WITHOUT ROWID;
";

pub fn create_schema(sql: &SqlStorage) -> Result<(), StoreError> {
    sql.exec(SCHEMA, None)?;
    Ok(())
}

/// Adds a flushed batch (a [`crate::core::usage::UsageBatch`] as JSON): each count onto its (key, hour, outcome) row,
/// each last-used time when later than the stored one. Keys no longer listed (deleted meanwhile)
/// are left out. Two statements, whatever the batch's size; SQLite reads the JSON itself.
pub fn apply(sql: &SqlStorage, batch: &str, now_ms: i64) -> Result<(), StoreError> {
    // Once an hour, the hours no query can reach any more go (an indexed range delete).
    let hour = now_ms.div_euclid(HOUR_MS);
    if PRUNED_HOUR.get() != hour {
        sql.exec("DELETE FROM usage WHERE hour < ?", vec![SqlStorageValue::Integer(hour - RETENTION_HOURS)])?;
        PRUNED_HOUR.set(hour);
    }
    sql.exec(
        "INSERT INTO usage (key_id, hour, outcome, count)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?, '$.counts')
         WHERE (value ->> 0) IN (SELECT id FROM keys) AND (value ->> 3) > 0
         ON CONFLICT (key_id, hour, outcome) DO UPDATE SET count = count + excluded.count",
        vec![SqlStorageValue::String(batch.to_string())],
    )?;
    sql.exec(
        "INSERT INTO last_used (key_id, at)
         SELECT value ->> 0, value ->> 1 FROM json_each(?, '$.last_used')
         WHERE (value ->> 0) IN (SELECT id FROM keys)
         ON CONFLICT (key_id) DO UPDATE SET at = max(at, excluded.at)",
        vec![SqlStorageValue::String(batch.to_string())],
    )?;
    Ok(())
}

#[derive(Deserialize)]
struct UsageRow {
    hour: i64,
    outcome: String,
    n: i64,
}

/// The stored counts of one key within a range, as `(hour number, outcome, count)`.
pub fn counts(sql: &SqlStorage, key_id: &str, range: &UsageRange) -> Result<Vec<(i64, String, i64)>, StoreError> {
    let (first, end) = range.hours();
    let rows: Vec<UsageRow> = sql
        .exec(
            "SELECT hour, outcome, count AS n FROM usage WHERE key_id = ? AND hour >= ? AND hour < ?",
            vec![SqlStorageValue::String(key_id.to_string()), SqlStorageValue::Integer(first), SqlStorageValue::Integer(end)],
        )?
        .to_array()?;
    Ok(rows.into_iter().map(|r| (r.hour, r.outcome, r.n)).collect())
}

/// The stored counts of every listed key of a workspace within a range, summed per hour and
/// outcome (the keys through the `(workspace, id)` index, their rows through the primary key).
pub fn workspace_counts(sql: &SqlStorage, workspace: &str, range: &UsageRange) -> Result<Vec<(i64, String, i64)>, StoreError> {
    let (first, end) = range.hours();
    let rows: Vec<UsageRow> = sql
        .exec(
            "SELECT u.hour AS hour, u.outcome AS outcome, SUM(u.count) AS n FROM keys k JOIN usage u ON u.key_id = k.id
             WHERE k.workspace = ? AND u.hour >= ? AND u.hour < ? GROUP BY u.hour, u.outcome",
            vec![SqlStorageValue::String(workspace.to_string()), SqlStorageValue::Integer(first), SqlStorageValue::Integer(end)],
        )?
        .to_array()?;
    Ok(rows.into_iter().map(|r| (r.hour, r.outcome, r.n)).collect())
}

#[derive(Deserialize)]
struct LastUsedRow {
    key_id: String,
    at: i64,
}

/// The last allowed request (Unix ms) of each of `ids` that has one, in one query, by id.
pub fn last_used(sql: &SqlStorage, ids: &[&str]) -> Result<Vec<(String, i64)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<LastUsedRow> = sql
        .exec(
            "SELECT key_id, at FROM last_used WHERE key_id IN (SELECT value FROM json_each(?)) ORDER BY key_id",
            vec![SqlStorageValue::String(serde_json::to_string(ids)?)],
        )?
        .to_array()?;
    Ok(rows.into_iter().map(|r| (r.key_id, r.at)).collect())
}

/// A deleted key's usage goes with it.
pub fn forget(sql: &SqlStorage, key_id: &str) -> Result<(), StoreError> {
    for table in ["usage", "last_used"] {
        sql.exec(&format!("DELETE FROM {table} WHERE key_id = ?"), vec![SqlStorageValue::String(key_id.to_string())])?;
    }
    Ok(())
}
