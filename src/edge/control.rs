//! The control plane: one SQLite-backed Durable Object that owns every key record (the source of
//! truth), answers the management API, serves the change feed isolates follow, and keeps Workers KV
//! (the edge read replica) converged through an outbox it drains after each change and on alarms.

use std::cell::Cell;
use std::rc::Rc;

use serde_json::json;
use wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

use super::ledger::Ledger;
use super::reply;
use crate::core::record::KeyRecord;

/// The name of the one control-plane object (see docs/consistency.md, Limits of the design, for how it would shard).
pub const OBJECT_NAME: &str = "control";
/// KV writes made at once while draining the outbox.
const DRAIN_CHUNK: usize = 25;
/// A change touching more keys than this is written to KV by the alarm, after the answer.
const INLINE_DRAIN_MAX: usize = 16;
const MAX_BACKOFF_MS: i64 = 60_000;
const MAX_WRITES_PER_DRAIN: usize = 25;

#[durable_object]
pub struct ControlPlane {
    state: State,
    env: Env,
    ledger: Option<Rc<Ledger>>,
    draining: Rc<Cell<i64>>,
    /// Test-only fault injection (`KEYWARD_TEST_FAIL_KV_WRITES`, never set in wrangler.toml): how
    /// many KV writes still to fail, to show that the outbox repairs KV.
    kv_failures_left: Rc<Cell<u32>>,
}

impl DurableObject for ControlPlane {
    fn new(state: State, env: Env) -> Self {
        let ledger = match Ledger::open(state.storage().sql()) {
            Ok(l) => Some(Rc::new(l)),
            Err(e) => {
                worker::console_error!("keyward: the control plane's schema could not be created: {}", e.0);
                None
            }
        };
        if let Some(l) = &ledger {
            if let Err(e) = super::usage::create_schema(l.sql()) {
                worker::console_error!("keyward: the usage tables could not be created: {}", e.0);
            }
            if let Err(e) = super::admin::portal::create_schema(l.sql()) {
                worker::console_error!("keyward: the portal's table could not be created: {}", e.0);
            }
            if let Err(e) = super::tokens::create_schema(l.sql()) {
                worker::console_error!("keyward: the signing keys' table could not be created: {}", e.0);
            }
            if let Err(e) = super::webhooks::create_schema(l.sql()) {
                worker::console_error!("keyward: the webhook tables could not be created: {}", e.0);
            }
        }
        let failures = env
            .var("KEYWARD_TEST_FAIL_KV_WRITES")
            .ok()
            .and_then(|v| v.to_string().parse::<u32>().ok())
            .unwrap_or(0);
        if let Some(ledger) = ledger.clone() {
            let kv_env = env.clone();
            // Events wait until a deployment whose records lived only in KV is imported.
            let _init = state.block_concurrency_while(async move {
                if let Err(e) = migrate_from_kv(&ledger, &kv_env).await {
                    worker::console_error!("keyward: importing records from KV failed: {}", e);
                }
                Ok(())
            });
        }
        ControlPlane { state, env, ledger, draining: Rc::new(Cell::new(0)), kv_failures_left: Rc::new(Cell::new(failures)) }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Some(ledger) = self.ledger.clone() else {
            return reply::error(503, "STORE_UNAVAILABLE", "the key store is unavailable");
        };
        let url = req.url()?;
        let now = super::now_ms();
        let path = url.path().to_string();
        if path == "/_internal/feed" {
            let mut after = -1i64;
            let mut policy_seq = 0i64;
            for (k, v) in url.query_pairs() {
                match k.as_ref() {
                    "after" => after = v.parse().unwrap_or(-1),
                    "policy" => policy_seq = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
            return match ledger.feed(after, policy_seq, now) {
                Ok(feed) => reply::json(200, &serde_json::to_value(&feed).unwrap_or_default()),
                Err(_) => reply::error(503, "STORE_UNAVAILABLE", "the change log is unavailable"),
            };
        }
        if path == "/_internal/usage" {
            // Only this Worker's isolates call it: the batch goes to SQLite as the JSON they sent.
            let Ok(batch) = req.text().await else {
                return reply::error(400, "BAD_REQUEST", "body: could not be read");
            };
            return match super::usage::apply(ledger.sql(), &batch, now) {
                Ok(()) => reply::json(200, &json!({"stored": true})),
                Err(_) => reply::error(503, "STORE_UNAVAILABLE", "the usage tables are unavailable"),
            };
        }
        if path == "/_internal/credits-event" {
            let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.to_string()).unwrap_or_default();
            let remaining = param("remaining").parse::<u64>().unwrap_or(0);
            return match super::webhooks::credits_event(ledger.sql(), &param("event"), &param("limiter"), remaining, now) {
                Ok(()) => {
                    if let Ok(Some(at)) = super::webhooks::next_due(ledger.sql()) {
                        schedule_alarm(&self.state.storage(), at, now).await;
                    }
                    reply::json(200, &json!({"stored": true}))
                }
                Err(e) => reply::error(400, "BAD_REQUEST", &e.0),
            };
        }
        if path == "/_internal/record" {
            let digest = url.query_pairs().find(|(k, _)| k == "digest").map(|(_, v)| v.to_string()).unwrap_or_default();
            return match ledger.record(&digest) {
                Ok(record) => reply::json(200, &json!({"record": record})),
                Err(_) => reply::error(503, "STORE_UNAVAILABLE", "the key store is unavailable"),
            };
        }
        if let Some(answer) = super::tokens::internal(&mut req, &path, &ledger, now).await {
            return answer;
        }
        if let Some(rest) = path.strip_prefix("/_keyward/portal/") {
            let rest = rest.to_string();
            return super::admin::portal::handle(req, &self.env, &rest, &ledger, now).await;
        }
        let response = if path == super::leaks::PATH {
            super::leaks::github(req, &self.env, &ledger, now).await?
        } else {
            let Some(rest) = path.strip_prefix("/_keyward/v1/") else {
                return reply::error(404, "NOT_FOUND", "no such control-plane endpoint");
            };
            let rest = rest.to_string();
            match super::tokens::manage(&mut req, &self.env, &rest, &ledger, now).await {
                Some(answer) => answer?,
                None => super::admin::handle(req, &self.env, &rest, &ledger, now).await?,
            }
        };
        let _ = ledger.prune_changes(now);
        // Small changes reach KV before the answer; big ones (a batch) after it, a chunk per alarm.
        match ledger.outbox_len() {
            Ok(0) => {}
            Ok(n) if n <= INLINE_DRAIN_MAX => self.drain().await,
            Ok(_) => {
                // An i64 is an offset from now in milliseconds.
                let _ = self.state.storage().set_alarm(0i64).await;
            }
            Err(_) => {}
        }
        // Webhook events this change made go out from an alarm, at once; the alarm also makes
        // key.expired when the next key expires by time (edge::webhooks).
        let expiry = super::webhooks::announce_expiries(ledger.sql(), now).ok().flatten();
        let next = super::webhooks::next_due(ledger.sql()).ok().flatten();
        if let Some(at) = [next, expiry].into_iter().flatten().min() {
            schedule_alarm(&self.state.storage(), at, super::now_ms()).await;
        }
        Ok(response)
    }

    async fn alarm(&self) -> Result<Response> {
        let started = super::now_ms();
        // Both start in this first poll: the webhook requests are sent before anything is awaited.
        let (next, ()) = futures_util::future::join(self.deliver_webhooks(), self.drain()).await;
        if let Some(at) = next {
            schedule_alarm(&self.state.storage(), at, started).await;
        }
        Response::ok("drained")
    }
}

/// Asks for an alarm at `at` (Unix ms) unless one set after `set_after` is already due then or
/// sooner: the KV outbox and the webhook outbox share the object's one alarm. An alarm at or
/// before `set_after` is the one running now (or about to), which ends with its handler: it
/// does not count.
async fn schedule_alarm(storage: &worker::Storage, at: i64, set_after: i64) {
    if storage.get_alarm().await.ok().flatten().is_some_and(|current| current > set_after && current <= at) {
        return;
    }
    // An i64 is an offset from now in milliseconds.
    let _ = storage.set_alarm(at.saturating_sub(super::now_ms()).max(0)).await;
}

impl ControlPlane {
    /// Writes (a bounded part of) the outbox to KV with every other event of this object held back
    /// until it is done: Rust futures of different events share one executor, so a KV write
    /// started while another event's code runs would belong to that event, and fail when that
    /// event answers first. The rest, if any, goes on in the next alarm.
    fn drain(&self) -> impl std::future::Future<Output = ()> {
        let drainer = self.drainer();
        let gate = self.state.block_concurrency_while(async move {
            drainer.run().await;
            Ok(())
        });
        async move {
            let _ = gate.await;
        }
    }

    /// Sends a round of the webhook events that are due (edge::webhooks::deliver, which does not
    /// hold other events back while receivers answer); answers when the next one is due.
    async fn deliver_webhooks(&self) -> Option<i64> {
        let ledger = self.ledger.clone()?;
        let expiry = match super::webhooks::announce_expiries(ledger.sql(), super::now_ms()) {
            Ok(at) => at,
            Err(e) => {
                worker::console_error!("keyward: key.expired events could not be made: {}", e.0);
                None
            }
        };
        match super::webhooks::deliver(ledger.sql(), &self.env).await {
            Ok(next) => [next, expiry].into_iter().flatten().min(),
            Err(e) => {
                worker::console_error!("keyward: webhook delivery failed: {}", e.0);
                Some(super::now_ms().saturating_add(1000))
            }
        }
    }

    fn drainer(&self) -> Drainer {
        Drainer {
            ledger: self.ledger.clone(),
            env: self.env.clone(),
            storage: self.state.storage(),
            draining: self.draining.clone(),
            kv_failures_left: self.kv_failures_left.clone(),
        }
    }
}

/// What writing the outbox to KV needs, owned, so that it can also run after the answer.
struct Drainer {
    ledger: Option<Rc<Ledger>>,
    env: Env,
    storage: worker::Storage,
    draining: Rc<Cell<i64>>,
    kv_failures_left: Rc<Cell<u32>>,
}

impl Drainer {
    /// Writes what the outbox owes to KV. One drain at a time: a second caller leaves it to the
    /// running one, which loops until the outbox is empty. A failed write stays in the outbox
    /// and an alarm retries it with backoff, so KV converges and nothing is lost.
    async fn run(self) {
        let Some(ledger) = self.ledger.clone() else { return };
        // The time the running drain started (0: none). One that was cut off without clearing it
        // is taken over after a minute.
        let now = super::now_ms();
        let running = self.draining.get();
        if running != 0 && now.saturating_sub(running) < 60_000 {
            return;
        }
        self.draining.set(now);
        let outcome = self.drain_all(&ledger).await;
        self.draining.set(0);
        if let Err(retry_in) = outcome {
            // An i64 is an offset from now in milliseconds.
            let _ = self.storage.set_alarm(retry_in).await;
        }
    }

    /// `Err(ms)`: some write failed (or the drain stopped at its bound); go on in that many milliseconds.
    async fn drain_all(&self, ledger: &Ledger) -> std::result::Result<(), i64> {
        let kv = self.env.kv("KEYS").map_err(|_| 1000i64)?;
        let binding = js_sys::Reflect::get(&self.env, &JsValue::from_str("KEYS")).map_err(|_| 1000i64)?;
        let mut written = 0usize;
        loop {
            // The rest goes on in an alarm, so no one drain holds other events back for long.
            if written >= MAX_WRITES_PER_DRAIN {
                return Err(0);
            }
            let rows = ledger.outbox(DRAIN_CHUNK).map_err(|_| 1000i64)?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut writes = Vec::with_capacity(rows.len());
            for row in &rows {
                let value = ledger.kv_value(&row.target).map_err(|_| 1000i64)?;
                let fail = self.kv_failures_left.get() > 0;
                if fail {
                    self.kv_failures_left.set(self.kv_failures_left.get() - 1);
                }
                let kv = kv.clone();
                let binding = binding.clone();
                let target = row.target.clone();
                writes.push(async move {
                    if fail {
                        return false;
                    }
                    match value {
                        Some(text) => kv_put(&binding, &target, &text).await,
                        None => kv.delete(&target).await.is_ok(),
                    }
                });
            }
            written += writes.len();
            let results = futures_util::future::join_all(writes).await;
            let mut worst_attempts: Option<i64> = None;
            for (row, ok) in rows.iter().zip(results) {
                if ok {
                    let _ = ledger.outbox_done(&row.target, row.seq);
                } else {
                    let _ = ledger.outbox_failed(&row.target);
                    worst_attempts = Some(worst_attempts.unwrap_or(0).max(row.attempts));
                }
            }
            if let Some(attempts) = worst_attempts {
                let exponent = u32::try_from(attempts.clamp(0, 6)).unwrap_or(6);
                return Err((500i64 << exponent).min(MAX_BACKOFF_MS));
            }
        }
    }
}

/// KV's `put(key, value)` called on the binding itself: the worker crate's put builder serialises
/// an options object with serde-wasm-bindgen, code (about 5 KB of wasm) for no option this put
/// uses. (`delete` has no options and stays on the worker crate's `KvStore`.)
async fn kv_put(kv: &JsValue, key: &str, value: &str) -> bool {
    let Ok(put) = js_sys::Reflect::get(kv, &JsValue::from_str("put")) else { return false };
    let Ok(put) = put.dyn_into::<js_sys::Function>() else { return false };
    match put.call2(kv, &JsValue::from_str(key), &JsValue::from_str(value)) {
        Ok(promise) => JsFuture::from(js_sys::Promise::from(promise)).await.is_ok(),
        Err(_) => false,
    }
}

/// The one-time import of a deployment whose records lived only in KV (keyward before the control
/// plane): every `key:` record, listed when its `id:` entry exists, else kept as a tombstone, and
/// the stored policy. Runs when the object first starts; marked done so it never runs again.
async fn migrate_from_kv(ledger: &Ledger, env: &Env) -> std::result::Result<(), String> {
    if ledger.meta("kv_imported").map_err(|e| e.0)?.is_some() {
        return Ok(());
    }
    let kv = env.kv("KEYS").map_err(|e| e.to_string())?;
    let now = super::now_ms();
    let mut listed_ids = std::collections::HashSet::new();
    let mut digests = Vec::new();
    for prefix in ["id:", "key:"] {
        let mut cursor: Option<String> = None;
        loop {
            let mut list = kv.list().prefix(prefix.into()).limit(1000);
            if let Some(c) = cursor.take() {
                list = list.cursor(c);
            }
            let page = list.execute().await.map_err(|e| e.to_string())?;
            for key in page.keys {
                if let Some(id) = key.name.strip_prefix("id:") {
                    listed_ids.insert(id.to_string());
                } else if let Some(digest) = key.name.strip_prefix("key:") {
                    digests.push(digest.to_string());
                }
            }
            match page.cursor.filter(|c| !page.list_complete && !c.is_empty()) {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    let mut imported = 0usize;
    for digest in digests {
        let Some(text) = kv.get(&format!("key:{digest}")).text().await.map_err(|e| e.to_string())? else { continue };
        let Ok(record) = serde_json::from_str::<KeyRecord>(&text) else { continue };
        ledger.import(&record, listed_ids.contains(&record.id), now).map_err(|e| e.0)?;
        imported += 1;
    }
    if let Some(doc) = kv.get("policy").text().await.map_err(|e| e.to_string())? {
        ledger.import_policy(&doc).map_err(|e| e.0)?;
    }
    ledger.set_meta("kv_imported", &imported.to_string()).map_err(|e| e.0)?;
    Ok(())
}
