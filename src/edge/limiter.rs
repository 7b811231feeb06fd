//! The Limiter: one SQLite-backed Durable Object per key (named by [`KeyRecord::limiter_name`])
//! holding the key's sliding log of recent requests and its live credits. Each request is decided
//! by the pure core ([`crate::core::limits::admit`]) inside one event with no await between
//! reading and writing the state, and a Durable Object runs one event's synchronous code at a
//! time: concurrency cannot let more requests through than the limit or the credits allow.
//! Every change is written to the object's SQLite before the answer leaves (output gate), so
//! neither the window nor the credits are lost when the object is evicted.
//!
//! [`KeyRecord::limiter_name`]: crate::core::record::KeyRecord::limiter_name

use std::cell::{Cell, RefCell};

use serde::Deserialize;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, SqlStorageValue, State};

use super::reply;
use crate::core::limits::{
    admit, decode_fields, encode_fields, lease, return_lease, CreditState, Credits, RateLimit, RateMode, Refill, RefillInterval, SlidingLog, MAX_CREDITS,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hits (at INTEGER PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS credits (
  one INTEGER PRIMARY KEY CHECK (one = 1),
  remaining INTEGER NOT NULL,
  refilled_at INTEGER NOT NULL,
  set_at INTEGER NOT NULL
);
";

/// What the gate, `/verify` and the management API send: the key's attributes as its record
/// holds them (the record is the authority for the settings, the Limiter for the counts), the
/// route's cost, and for `/credits` the change (`set` or `add`) with the control plane's stamp.
/// On the wire: [`encode_fields`], in the order of [`LimitRequest::encode`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LimitRequest {
    pub ratelimit: Option<RateLimit>,
    pub credits: Option<Credits>,
    pub cost: u64,
    pub set: Option<u64>,
    pub add: Option<u64>,
    pub stamp: i64,
}

impl LimitRequest {
    /// `limit period remaining set_at refill_amount refill_interval(1 daily, 2 monthly) cost set add stamp low_threshold`.
    pub fn encode(&self) -> String {
        let (rate, credits) = (self.ratelimit, self.credits);
        let refill = credits.and_then(|c| c.refill);
        encode_fields(&[
            rate.map(|r| i64_of(r.limit)),
            rate.map(|r| i64_of(r.period_seconds)),
            credits.map(|c| i64_of(c.remaining)),
            credits.map(|c| c.set_at_ms),
            refill.map(|r| i64_of(r.amount)),
            refill.map(|r| if r.interval == RefillInterval::Daily { 1 } else { 2 }),
            Some(i64_of(self.cost)),
            self.set.map(i64_of),
            self.add.map(i64_of),
            Some(self.stamp),
            credits.and_then(|c| c.low_threshold).map(i64_of),
        ])
    }

    pub fn decode(text: &str) -> Option<LimitRequest> {
        let [limit, period, remaining, set_at, amount, interval, cost, set, add, stamp, low] = decode_fields::<11>(text)?;
        let ratelimit = match (limit, period) {
            (Some(limit), Some(period)) => Some(RateLimit { limit: u64_of(limit).max(1), period_seconds: u64_of(period).max(1), mode: RateMode::Exact }),
            _ => None,
        };
        let refill = match (amount, interval) {
            (Some(amount), Some(1)) => Some(Refill { amount: u64_of(amount), interval: RefillInterval::Daily }),
            (Some(amount), Some(_)) => Some(Refill { amount: u64_of(amount), interval: RefillInterval::Monthly }),
            _ => None,
        };
        let credits = remaining.map(|r| Credits { remaining: u64_of(r), refill, set_at_ms: set_at.unwrap_or(0), low_threshold: low.map(u64_of) });
        Some(LimitRequest {
            ratelimit,
            credits,
            cost: u64_of(cost?),
            set: set.map(u64_of),
            add: add.map(u64_of),
            stamp: stamp.unwrap_or(0),
        })
    }
}

/// What a `/lease` call asks besides its [`LimitRequest`] (docs/distance.md): `take_now` (a
/// request waits for this answer and takes one request of it), `want` more requests for the
/// isolate to spend on its own until `ttl_ms` from now, and a share of an earlier lease to give
/// back first (`return_count` requests counted at `return_at`, `return_cost` credits each,
/// taken while the credits' refill epoch was `return_epoch`). On the wire: [`encode_fields`],
/// on the line after the [`LimitRequest`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LeaseAsk {
    pub take_now: bool,
    pub want: u64,
    pub ttl_ms: i64,
    pub return_at: i64,
    pub return_count: u64,
    pub return_cost: u64,
    pub return_epoch: i64,
}

impl LeaseAsk {
    pub fn encode(&self) -> String {
        encode_fields(&[
            Some(i64::from(self.take_now)),
            Some(i64_of(self.want)),
            Some(self.ttl_ms),
            Some(self.return_at),
            Some(i64_of(self.return_count)),
            Some(i64_of(self.return_cost)),
            Some(self.return_epoch),
        ])
    }

    pub fn decode(text: &str) -> Option<LeaseAsk> {
        let [take_now, want, ttl, at, count, cost, epoch] = decode_fields::<7>(text)?;
        Some(LeaseAsk {
            take_now: take_now? != 0,
            want: u64_of(want?),
            ttl_ms: ttl?.clamp(0, 60_000),
            return_at: at?,
            return_count: u64_of(count?),
            return_cost: u64_of(cost?),
            return_epoch: epoch?,
        })
    }
}

/// The Limiter's answer to `/lease`: the request's [`Admission`](crate::core::limits::Admission)
/// (its encoding), then on the next line `extra at epoch`: the requests leased besides it, where
/// they are counted, and the credits' refill epoch they were taken in.
pub struct LeaseGrant {
    pub admission: crate::core::limits::Admission,
    pub extra: u64,
    pub at: i64,
    pub epoch: i64,
}

impl LeaseGrant {
    pub fn decode(text: &str) -> Option<LeaseGrant> {
        let (admission, rest) = text.split_once('\n')?;
        let [extra, at, epoch] = decode_fields::<3>(rest)?;
        Some(LeaseGrant { admission: crate::core::limits::Admission::decode(admission)?, extra: u64_of(extra?), at: at?, epoch: epoch.unwrap_or(0) })
    }
}

/// The counts before a request, for `/verify` and the key's view: `recent credits_remaining`.
#[derive(Debug)]
pub struct Counts {
    pub recent: u64,
    pub credits_remaining: Option<u64>,
}

impl Counts {
    pub fn decode(text: &str) -> Option<Counts> {
        let [recent, credits] = decode_fields::<2>(text)?;
        Some(Counts { recent: u64_of(recent?), credits_remaining: credits.map(u64_of) })
    }
}

#[derive(Deserialize)]
struct HitRow {
    at: i64,
    n: i64,
}

#[derive(Deserialize)]
struct CreditRow {
    remaining: i64,
    refilled_at: i64,
    set_at: i64,
}

/// Adds any refill of the key's credits due at `now`; the count after it, before the step spends.
fn refill_due(credits: &mut Option<CreditState>, req: &LimitRequest, now: i64) -> Option<u64> {
    if let (Some(state), Some(c)) = (credits.as_mut(), req.credits.as_ref()) {
        state.refill(c.refill.as_ref(), now);
    }
    credits.map(|c| c.remaining)
}

/// The key's credits and their refill, as `admit` and `lease` take them.
fn credits_with_refill<'a>(credits: &'a mut Option<CreditState>, req: &'a LimitRequest) -> Option<(&'a mut CreditState, Option<&'a Refill>)> {
    match (credits.as_mut(), req.credits.as_ref()) {
        (Some(state), Some(c)) => Some((state, c.refill.as_ref())),
        _ => None,
    }
}

struct Held {
    log: SlidingLog,
    credits: Option<CreditState>,
}

#[durable_object]
pub struct Limiter {
    state: State,
    sql: SqlStorage,
    /// Whether the tables exist: false when they could not be made, and after `/forget` (which
    /// deletes them with everything else) until the object is asked something again.
    schema_ok: Cell<bool>,
    held: RefCell<Option<Held>>,
    /// Test-only (`KEYWARD_TEST_NOW_MS`, which production never sets): the Limiter's clock, set
    /// by the test through `/clock` so that windows and refills pass without waiting.
    test_clock: Option<Cell<i64>>,
    env: Env,
    /// The webhook event the request just decided made (`credits.low`/`credits.exhausted`) and
    /// the count it left.
    crossed: RefCell<Vec<(&'static str, u64)>>,
}

fn int(n: i64) -> SqlStorageValue {
    SqlStorageValue::Integer(n)
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl DurableObject for Limiter {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        let schema_ok = match sql.exec(SCHEMA, None) {
            Ok(_) => true,
            Err(e) => {
                worker::console_error!("keyward: the limiter's schema could not be created: {}", e);
                false
            }
        };
        let test_clock = env.var("KEYWARD_TEST_NOW_MS").ok().map(|v| {
            let start = v.to_string().trim().parse::<i64>().unwrap_or_else(|_| super::now_ms());
            Cell::new(start)
        });
        Limiter { state, sql, schema_ok: Cell::new(schema_ok), held: RefCell::new(None), test_clock, env, crossed: RefCell::new(Vec::new()) }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        if path == "/forget" {
            // The key was deleted: its window and credits go, and the object's storage with them.
            *self.held.borrow_mut() = None;
            self.schema_ok.set(false);
            self.state.storage().delete_all().await?;
            return Response::ok("");
        }
        if !self.schema_ok.get() {
            match self.sql.exec(SCHEMA, None) {
                Ok(_) => self.schema_ok.set(true),
                Err(_) => return reply::error(503, "STORE_UNAVAILABLE", "the limiter's store is unavailable"),
            }
        }
        // Parsed here rather than by the runtime's JSON.parse, whose numbers would lose 2^53.
        let Ok(body) = req.text().await else {
            return reply::error(400, "BAD_REQUEST", "body: could not be read");
        };
        // From here on nothing awaits: the decision and its writes are one step.
        let outcome = match path.as_str() {
            "/lease" => match body.split_once('\n').and_then(|(r, a)| Some((LimitRequest::decode(r)?, LeaseAsk::decode(a)?))) {
                Some((r, ask)) => self.lease(&r, &ask),
                None => return reply::error(400, "BAD_REQUEST", "body: not a lease request"),
            },
            "/check" | "/peek" | "/credits" => match LimitRequest::decode(&body) {
                Some(r) if path == "/credits" => self.change_credits(&r),
                Some(r) => self.check(&r, path == "/check"),
                None => return reply::error(400, "BAD_REQUEST", "body: not a limiter request"),
            },
            "/clock" => match (&self.test_clock, body.trim().parse::<i64>().ok()) {
                (Some(clock), Some(now)) => {
                    clock.set(now);
                    Ok(now.to_string())
                }
                _ => return reply::error(404, "NOT_FOUND", "no test clock here"),
            },
            // Test-only, like `/clock`: how many rows the object holds (`hits credits`).
            "/rows" if self.test_clock.is_some() => self.rows(),
            _ => return reply::error(404, "NOT_FOUND", "no such limiter call"),
        };
        // A request that took the credits to zero, or across the key's low threshold: the control
        // plane makes the webhook event (once: only this request crossed it). Rare, so awaited here.
        let crossed = std::mem::take(&mut *self.crossed.borrow_mut());
        if let Some(name) = self.state.id().name().filter(|_| !crossed.is_empty()) {
            for (event, remaining) in crossed {
                super::webhooks::notify_credits(&self.env, event, &name, remaining).await;
            }
        }
        match outcome {
            Ok(text) => Response::ok(text),
            Err(Refused(status, code, message)) => reply::error(status, code, &message),
        }
    }
}

struct Refused(u16, &'static str, String);

impl From<worker::Error> for Refused {
    fn from(e: worker::Error) -> Self {
        Refused(503, "STORE_UNAVAILABLE", format!("the limiter's store failed: {e}"))
    }
}

impl Limiter {
    fn rows(&self) -> std::result::Result<String, Refused> {
        let query = "SELECT (SELECT COUNT(*) FROM hits) AS at, (SELECT COUNT(*) FROM credits) AS n";
        let rows: Vec<HitRow> = self.sql.exec(query, None)?.to_array()?;
        Ok(rows.first().map_or_else(String::new, |r| encode_fields(&[Some(r.at), Some(r.n)])))
    }

    fn now(&self) -> i64 {
        self.test_clock.as_ref().map_or_else(super::now_ms, Cell::get)
    }

    /// The state, read from SQLite the first time this object runs.
    fn load(&self) -> std::result::Result<(), Refused> {
        if self.held.borrow().is_some() {
            return Ok(());
        }
        let hits: Vec<HitRow> = self.sql.exec("SELECT at, n FROM hits ORDER BY at", None)?.to_array()?;
        let credits: Vec<CreditRow> =
            self.sql.exec("SELECT remaining, refilled_at, set_at FROM credits WHERE one = 1", None)?.to_array()?;
        let held = Held {
            log: SlidingLog::from_entries(hits.into_iter().map(|h| (h.at, u64_of(h.n)))),
            credits: credits.into_iter().next().map(|c| CreditState {
                remaining: u64_of(c.remaining),
                refilled_at_ms: c.refilled_at,
                set_at_ms: c.set_at,
            }),
        };
        *self.held.borrow_mut() = Some(held);
        Ok(())
    }

    /// Drops the window's entries older than the rate limit's period, in memory and in SQLite
    /// (the delete only when something was dropped); nothing without a rate limit.
    fn forget_expired_hits(&self, log: &mut SlidingLog, ratelimit: Option<&RateLimit>, now: i64) -> std::result::Result<(), Refused> {
        if let Some(limit) = ratelimit {
            let oldest = log.entries().next().copied();
            let cutoff = log.forget_expired(limit.period_ms(), now);
            if oldest.is_some_and(|(at, _)| at <= cutoff) {
                self.sql.exec("DELETE FROM hits WHERE at <= ?", vec![int(cutoff)])?;
            }
        }
        Ok(())
    }

    /// Writes the credits a step left and holds them, when the step changed them.
    fn keep_credits(&self, held: &mut Held, credits: Option<CreditState>, before: Option<CreditState>) -> std::result::Result<(), Refused> {
        if let Some(state) = credits.filter(|c| Some(*c) != before) {
            self.save_credits(&state)?;
            held.credits = Some(state);
        }
        Ok(())
    }

    fn save_credits(&self, state: &CreditState) -> std::result::Result<(), Refused> {
        self.sql.exec(
            "INSERT INTO credits (one, remaining, refilled_at, set_at) VALUES (1, ?, ?, ?)
             ON CONFLICT (one) DO UPDATE SET remaining = excluded.remaining, refilled_at = excluded.refilled_at, set_at = excluded.set_at",
            vec![int(i64_of(state.remaining)), int(state.refilled_at_ms), int(state.set_at_ms)],
        )?;
        Ok(())
    }

    /// `/check` (decides and, when allowed, counts and spends) or `/peek` (the counts, unchanged).
    fn check(&self, req: &LimitRequest, commit: bool) -> std::result::Result<String, Refused> {
        self.load()?;
        let now = self.now();
        let mut held = self.held.borrow_mut();
        let Some(held) = held.as_mut() else {
            return Err(Refused(503, "STORE_UNAVAILABLE", "the limiter's state could not be read".into()));
        };
        let credits_before = held.credits;
        let mut credits = req.credits.map(|c| CreditState::adopt(held.credits, &c, now));
        if !commit {
            let mut log = held.log.clone();
            let recent = req.ratelimit.map_or(0, |r| {
                log.forget_expired(r.period_ms(), now);
                log.total()
            });
            let _ = refill_due(&mut credits, req, now);
            return Ok(encode_fields(&[Some(i64_of(recent)), credits.map(|c| i64_of(c.remaining))]));
        }
        self.forget_expired_hits(&mut held.log, req.ratelimit.as_ref(), now)?;
        let total_before = held.log.total();
        // The count before this request (after any refill due now), to see it cross a threshold.
        let prior = refill_due(&mut credits, req, now);
        let admission = admit(req.ratelimit.as_ref().map(|r| (r, &mut held.log)), credits_with_refill(&mut credits, req), req.cost, now);
        if held.log.total() != total_before {
            if let Some((at, n)) = held.log.newest() {
                self.sql.exec(
                    "INSERT INTO hits (at, n) VALUES (?, ?) ON CONFLICT (at) DO UPDATE SET n = excluded.n",
                    vec![int(at), int(i64_of(n))],
                )?;
            }
        }
        self.keep_credits(held, credits, credits_before)?;
        self.note_crossing(prior, credits.map(|c| c.remaining), req);
        Ok(admission.encode())
    }

    /// `/lease` (docs/distance.md): gives back the unused share of an earlier lease, then admits
    /// the waiting request (if any) and leases more, all in one step with its writes.
    fn lease(&self, req: &LimitRequest, ask: &LeaseAsk) -> std::result::Result<String, Refused> {
        self.load()?;
        let now = self.now();
        let mut held = self.held.borrow_mut();
        let Some(held) = held.as_mut() else {
            return Err(Refused(503, "STORE_UNAVAILABLE", "the limiter's state could not be read".into()));
        };
        let credits_before = held.credits;
        let mut credits = req.credits.map(|c| CreditState::adopt(held.credits, &c, now));
        let mut touched: Vec<i64> = Vec::new();
        if ask.return_count > 0 {
            return_lease(req.ratelimit.map(|_| &mut held.log), credits.as_mut(), ask.return_at, ask.return_count, ask.return_cost, ask.return_epoch);
            touched.push(ask.return_at);
        }
        self.forget_expired_hits(&mut held.log, req.ratelimit.as_ref(), now)?;
        // The count before this step's grant (after what was given back and any refill due now).
        let prior = refill_due(&mut credits, req, now);
        let granted = lease(
            req.ratelimit.as_ref().map(|r| (r, &mut held.log)),
            credits_with_refill(&mut credits, req),
            req.cost,
            ask.take_now,
            ask.want,
            ask.ttl_ms,
            now,
        );
        if req.ratelimit.is_some() {
            // What this step may have changed: the entries from now on, and the one given back.
            touched.extend(held.log.entries().map(|&(at, _)| at).filter(|at| *at >= now));
            for at in touched {
                match held.log.entries().find(|(entry, _)| *entry == at) {
                    Some(&(at, n)) => self.sql.exec(
                        "INSERT INTO hits (at, n) VALUES (?, ?) ON CONFLICT (at) DO UPDATE SET n = excluded.n",
                        vec![int(at), int(i64_of(n))],
                    )?,
                    None => self.sql.exec("DELETE FROM hits WHERE at = ?", vec![int(at)])?,
                };
            }
        }
        let epoch = credits.map_or(0, |c| c.refilled_at_ms);
        self.keep_credits(held, credits, credits_before)?;
        self.note_crossing(prior, credits.map(|c| c.remaining), req);
        Ok(format!("{}\n{}", granted.admission.encode(), encode_fields(&[Some(i64_of(granted.extra)), Some(granted.at), Some(epoch)])))
    }

    /// Notes the webhook events a step made (the caller sends them after the step): `credits.low`
    /// when it took the count across the key's low threshold, `credits.exhausted` to zero. With
    /// leases (docs/distance.md) the count is the Limiter's: credits leased out count as spent.
    fn note_crossing(&self, before: Option<u64>, after: Option<u64>, req: &LimitRequest) {
        let (Some(before), Some(after)) = (before, after) else { return };
        let low = req.credits.and_then(|c| c.low_threshold);
        // One step can cross both (a lease taking the last credits at once): low first.
        let mut crossed = self.crossed.borrow_mut();
        if low.is_some_and(|t| before > t && after <= t) {
            crossed.push(("credits.low", after));
        }
        if before > 0 && after == 0 {
            crossed.push(("credits.exhausted", after));
        }
    }

    /// `POST /api_keys/{id}/credits`: sets or adds, on the live count, in one step.
    fn change_credits(&self, change: &LimitRequest) -> std::result::Result<String, Refused> {
        let Some(credits) = change.credits else {
            return Err(Refused(400, "BAD_REQUEST", "credits: the key has none".into()));
        };
        self.load()?;
        let now = self.now();
        let mut held = self.held.borrow_mut();
        let Some(held) = held.as_mut() else {
            return Err(Refused(503, "STORE_UNAVAILABLE", "the limiter's state could not be read".into()));
        };
        let mut state = CreditState::adopt(held.credits, &credits, now);
        state.refill(credits.refill.as_ref(), now);
        state.remaining = match (change.set, change.add) {
            (Some(n), None) => n,
            (None, Some(n)) => match state.remaining.checked_add(n).filter(|r| *r <= MAX_CREDITS) {
                Some(r) => r,
                None => {
                    return Err(Refused(400, "BAD_REQUEST", format!("add: would take the credits ({}) past 2^53", state.remaining)))
                }
            },
            _ => return Err(Refused(400, "BAD_REQUEST", "set: give exactly one of set and add".into())),
        };
        state.set_at_ms = state.set_at_ms.max(change.stamp);
        if change.set.is_some() {
            // A set replaces the credits, as a refill does: a lease taken before gives none back.
            state.refilled_at_ms = state.refilled_at_ms.max(change.stamp);
        }
        self.save_credits(&state)?;
        held.credits = Some(state);
        Ok(i64_of(state.remaining).to_string())
    }
}
