//! Per-key rate limits and usage credits: the two attributes and their validation, the exact
//! sliding log of recent requests, lazy credit refills, and the decision on one request from the
//! counts and `now`. The Limiter Durable Object (edge) keeps the state and calls these functions;
//! `/verify` and the playground call the same ones on counts given to them.
//!
//! Precedence, after every other check has allowed the request: `RATE_LIMITED`, then
//! `USAGE_EXCEEDED`. A refused request changes nothing: it neither counts in the window nor
//! spends credits.

use std::collections::VecDeque;

use serde::Serialize;
use serde_json::{Map, Value};

use super::code::Code;
use super::decision::Decision;
use super::record::{FieldError, KeyRecord};
use super::time::{start_of_utc_day, start_of_utc_month};

pub const MAX_LIMIT: u64 = 1_000_000;
pub const MAX_PERIOD_SECONDS: u64 = 86_400;
/// Credits are whole numbers up to 2^53, the largest a JSON number carries exactly everywhere.
pub const MAX_CREDITS: u64 = 1 << 53;
/// A route's `cost` (credits spent per allowed request), from 0 (free) to this.
pub const MAX_COST: u64 = 1_000_000;
pub const DEFAULT_COST: u64 = 1;

/// At most `limit` allowed requests in any rolling `period_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    pub limit: u64,
    pub period_seconds: u64,
    /// Shown only when it is not the default ([`RateMode::Exact`]).
    #[serde(skip_serializing_if = "RateMode::is_exact")]
    pub mode: RateMode,
}

/// Where a key's rate limit is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RateMode {
    /// Exactly, across all locations, by the key's Limiter Durable Object.
    #[default]
    Exact,
    /// Per location, approximately, by Cloudflare's Rate Limiting binding of the tier
    /// ([`RateLimit::local_binding`]): no Durable Object call.
    Local,
}

impl RateMode {
    pub fn is_exact(&self) -> bool {
        *self == RateMode::Exact
    }
}

/// The periods a Rate Limiting binding can count over (`simple.period` in wrangler.toml).
pub const LOCAL_PERIODS: [u64; 2] = [10, 60];
/// The prefix of a tier's binding name: `RATE_LIMIT_<limit>_PER_<period>`.
pub const LOCAL_TIER_PREFIX: &str = "RATE_LIMIT_";

impl RateLimit {
    /// The name of the Rate Limiting binding that counts a `local` limit: `RATE_LIMIT_100_PER_60`.
    pub fn local_binding(&self) -> String {
        format!("{LOCAL_TIER_PREFIX}{}_PER_{}", self.limit, self.period_seconds)
    }

    pub fn is_local(&self) -> bool {
        self.mode == RateMode::Local
    }

    pub fn period_ms(&self) -> i64 {
        i64::try_from(self.period_seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RefillInterval {
    Daily,
    Monthly,
}

impl RefillInterval {
    /// The start of the UTC day or month holding `now`: the last refill boundary.
    pub fn last_boundary(self, now: i64) -> i64 {
        match self {
            RefillInterval::Daily => start_of_utc_day(now),
            RefillInterval::Monthly => start_of_utc_month(now),
        }
    }

    /// The first boundary after `now`.
    pub fn next_boundary(self, now: i64) -> i64 {
        match self {
            RefillInterval::Daily => start_of_utc_day(now).saturating_add(86_400_000),
            // 32 days past the start of a month is always inside the next one.
            RefillInterval::Monthly => start_of_utc_month(start_of_utc_month(now).saturating_add(32 * 86_400_000)),
        }
    }
}

/// On each UTC day or month boundary, `remaining` becomes `amount` (it is set, not added to, as
/// Unkey does: unspent credits do not pile up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Refill {
    pub amount: u64,
    pub interval: RefillInterval,
}

/// A key's credits as its record holds them (read back by [`parse_credits`], not by serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Credits {
    /// The credits left when they were last written; the Limiter holds the live count.
    pub remaining: u64,
    pub refill: Option<Refill>,
    /// When `remaining` was last written through the management API (Unix ms). The Limiter takes
    /// `remaining` from a record whose stamp is newer than the one it holds, and otherwise keeps
    /// its own count: a record read late (a stale KV copy) never undoes spending.
    #[serde(skip_serializing_if = "is_zero")]
    pub set_at_ms: i64,
    /// The `credits.low` webhook event goes out when a request takes the live count from above
    /// this to it or below (docs/leaks-and-webhooks.md); none: no such event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_threshold: Option<u64>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Credits {
    /// The attribute as the management API shows it (the stamp is internal).
    pub fn view(&self, remaining: u64) -> Value {
        let refill = self.refill.map_or(Value::Null, |r| {
            serde_json::json!({"amount": r.amount, "interval": r.interval})
        });
        let mut view = serde_json::json!({"remaining": remaining, "refill": refill});
        if let (Some(low), Some(map)) = (self.low_threshold, view.as_object_mut()) {
            map.insert("low_threshold".into(), Value::from(low));
        }
        view
    }

    /// The same credits, ignoring the stamp.
    pub fn same_as(&self, other: &Credits) -> bool {
        self.remaining == other.remaining && self.refill == other.refill && self.low_threshold == other.low_threshold
    }
}

/// A JSON number that is a whole number (`5` or `5.0`) from 0 to 2^53.
pub fn whole_number(value: &Value) -> Option<u64> {
    if let Some(n) = value.as_u64() {
        return (n <= MAX_CREDITS).then_some(n);
    }
    let f = value.as_f64()?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "range and fraction checked first")]
    ((0.0..=9_007_199_254_740_992.0).contains(&f) && f.fract() == 0.0).then_some(f as u64)
}

fn number_in(field: &str, value: Option<&Value>, min: u64, max: u64) -> Result<u64, FieldError> {
    let value = value.ok_or_else(|| FieldError::new(field, "is required"))?;
    whole_number(value)
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| FieldError::new(field, format!("must be an integer from {min} to {max}")))
}

fn object_of<'v>(field: &str, value: &'v Value, allowed: &[&str]) -> Result<&'v Map<String, Value>, FieldError> {
    let object = value.as_object().ok_or_else(|| FieldError::new(field, "must be an object or null"))?;
    if let Some(other) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(FieldError::new(format!("{field}.{other}"), format!("is not a {field} field ({})", allowed.join(", "))));
    }
    Ok(object)
}

/// `ratelimit`: `{"limit": 1..1000000, "period_seconds": 1..86400, "mode": "exact" (default) |
/// "local"}` or null. A `local` limit counts over 10 or 60 s (all a Rate Limiting binding can);
/// whether a binding for its tier is declared is the edge's question, not the record's.
pub fn parse_ratelimit(value: &Value) -> Result<Option<RateLimit>, FieldError> {
    if value.is_null() {
        return Ok(None);
    }
    let object = object_of("ratelimit", value, &["limit", "period_seconds", "mode"])?;
    let limit = number_in("ratelimit.limit", object.get("limit"), 1, MAX_LIMIT)?;
    let period_seconds = number_in("ratelimit.period_seconds", object.get("period_seconds"), 1, MAX_PERIOD_SECONDS)?;
    let mode = match object.get("mode") {
        None | Some(Value::Null) => RateMode::Exact,
        Some(v) if v == "exact" => RateMode::Exact,
        Some(v) if v == "local" => RateMode::Local,
        Some(_) => return Err(FieldError::new("ratelimit.mode", "must be \"exact\" or \"local\"")),
    };
    if mode == RateMode::Local && !LOCAL_PERIODS.contains(&period_seconds) {
        return Err(FieldError::new("ratelimit.period_seconds", "must be 10 or 60 in \"local\" mode (a Rate Limiting binding's periods)"));
    }
    Ok(Some(RateLimit { limit, period_seconds, mode }))
}

/// The tier a binding's name declares (`RATE_LIMIT_100_PER_60` is 100 per 60 s), if it is one.
pub fn local_tier(name: &str) -> Option<(u64, u64)> {
    let (limit, period) = name.strip_prefix(LOCAL_TIER_PREFIX)?.split_once("_PER_")?;
    let (limit, period) = (limit.parse::<u64>().ok()?, period.parse::<u64>().ok()?);
    ((1..=MAX_LIMIT).contains(&limit) && LOCAL_PERIODS.contains(&period)).then_some((limit, period))
}

/// `credits`: `{"remaining": 0..2^53, "refill": null | {"amount": 1..2^53, "interval": "daily" | "monthly"}}` or null.
pub fn parse_credits(value: &Value) -> Result<Option<Credits>, FieldError> {
    if value.is_null() {
        return Ok(None);
    }
    let object = object_of("credits", value, &["remaining", "refill", "low_threshold"])?;
    let remaining = number_in("credits.remaining", object.get("remaining"), 0, MAX_CREDITS)?;
    let refill = match object.get("refill") {
        None | Some(Value::Null) => None,
        Some(refill) => {
            let r = object_of("credits.refill", refill, &["amount", "interval"])?;
            let amount = number_in("credits.refill.amount", r.get("amount"), 1, MAX_CREDITS)?;
            let interval = match r.get("interval").and_then(Value::as_str) {
                Some("daily") => RefillInterval::Daily,
                Some("monthly") => RefillInterval::Monthly,
                _ => return Err(FieldError::new("credits.refill.interval", "must be \"daily\" or \"monthly\"")),
            };
            Some(Refill { amount, interval })
        }
    };
    let low_threshold = match object.get("low_threshold") {
        None | Some(Value::Null) => None,
        Some(v) => Some(number_in("credits.low_threshold", Some(v), 0, MAX_CREDITS)?),
    };
    Ok(Some(Credits { remaining, refill, set_at_ms: 0, low_threshold }))
}

/// The requests of one key in its current window, oldest first, as `(instant, count)` so that a
/// burst within one millisecond takes one entry. Exact: a request counts from its instant until
/// `period` later.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingLog {
    entries: VecDeque<(i64, u64)>,
    total: u64,
}

impl SlidingLog {
    pub fn from_entries(entries: impl IntoIterator<Item = (i64, u64)>) -> SlidingLog {
        let mut log = SlidingLog::default();
        for (at, count) in entries {
            log.add(at, count);
        }
        log
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn entries(&self) -> impl Iterator<Item = &(i64, u64)> {
        self.entries.iter()
    }

    /// The newest entry, as the store must now hold it after [`SlidingLog::add`].
    pub fn newest(&self) -> Option<(i64, u64)> {
        self.entries.back().copied()
    }

    /// Forgets the requests made at or before `now - period_ms`; returns that cut-off instant.
    pub fn forget_expired(&mut self, period_ms: i64, now: i64) -> i64 {
        let cutoff = now.saturating_sub(period_ms);
        while let Some(&(at, count)) = self.entries.front() {
            if at > cutoff {
                break;
            }
            self.entries.pop_front();
            self.total = self.total.saturating_sub(count);
        }
        cutoff
    }

    /// Counts `count` requests at `at`; a clock that went back adds them to the newest entry, so
    /// the log stays in order.
    pub fn add(&mut self, at: i64, count: u64) {
        match self.entries.back_mut() {
            Some((last, n)) if *last >= at => *n = n.saturating_add(count),
            _ => self.entries.push_back((at, count)),
        }
        self.total = self.total.saturating_add(count);
    }

    /// Takes back up to `count` requests counted at exactly `at` (a lease's unused share, see
    /// [`lease`]); returns how many it took back. None when the entry has left the window.
    pub fn remove(&mut self, at: i64, count: u64) -> u64 {
        let Some(index) = self.entries.iter().position(|&(entry, _)| entry == at) else { return 0 };
        let Some(entry) = self.entries.get_mut(index) else { return 0 };
        let taken = entry.1.min(count);
        entry.1 -= taken;
        self.total = self.total.saturating_sub(taken);
        if entry.1 == 0 {
            self.entries.remove(index);
        }
        taken
    }

    /// Milliseconds from `now` until fewer than `limit` requests are in the window.
    pub fn wait_ms(&self, limit: u64, period_ms: i64, now: i64) -> i64 {
        let excess = self.total.saturating_sub(limit).saturating_add(1);
        if self.total < limit {
            return 0;
        }
        let mut freed = 0u64;
        for &(at, count) in &self.entries {
            freed = freed.saturating_add(count);
            if freed >= excess {
                return at.saturating_add(period_ms).saturating_sub(now).max(1);
            }
        }
        period_ms
    }

    /// Milliseconds from `now` until the window's oldest request leaves it (0: empty).
    pub fn reset_ms(&self, period_ms: i64, now: i64) -> i64 {
        self.entries.front().map_or(0, |&(at, _)| at.saturating_add(period_ms).saturating_sub(now).max(0))
    }
}

/// The live credits of a key, as the Limiter holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditState {
    pub remaining: u64,
    /// The last refill boundary applied (or when the credits were set).
    pub refilled_at_ms: i64,
    /// The record stamp ([`Credits::set_at_ms`]) these credits came from.
    pub set_at_ms: i64,
}

impl CreditState {
    /// The state after seeing `credits` from a record: the record's `remaining` when its stamp is
    /// newer than the one held (or nothing is held), else the held state.
    pub fn adopt(held: Option<CreditState>, credits: &Credits, now: i64) -> CreditState {
        match held {
            Some(state) if state.set_at_ms >= credits.set_at_ms => state,
            _ => CreditState {
                remaining: credits.remaining,
                refilled_at_ms: if credits.set_at_ms > 0 { credits.set_at_ms } else { now },
                set_at_ms: credits.set_at_ms,
            },
        }
    }

    /// Applies a refill whose boundary has passed since the last one; returns whether it did.
    pub fn refill(&mut self, refill: Option<&Refill>, now: i64) -> bool {
        let Some(refill) = refill else { return false };
        let boundary = refill.interval.last_boundary(now);
        if self.refilled_at_ms < boundary {
            self.remaining = refill.amount.min(MAX_CREDITS);
            self.refilled_at_ms = boundary;
            return true;
        }
        false
    }
}

/// The window of a rate-limited key after a request, for the `RateLimit` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    pub limit: u64,
    pub period_seconds: u64,
    /// Requests still allowed in the window.
    pub remaining: u64,
    /// Seconds until the window's oldest request leaves it.
    pub reset_seconds: u64,
}

/// The outcome of the limit and credit checks for one request. Written to and read from JSON by
/// hand (the Limiter's answer to the gate): serde's derives for it would weigh on the Worker's wasm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// `VALID`, `RATE_LIMITED` or `USAGE_EXCEEDED`.
    pub code: Code,
    /// Seconds to wait (RATE_LIMITED: until a request leaves the window; USAGE_EXCEEDED: until
    /// the next refill, 0 when none).
    pub retry_after_seconds: u64,
    pub rate: Option<RateStatus>,
    /// Credits left after this request (unchanged when it was refused).
    pub credits_remaining: Option<u64>,
}

/// The Limiter's wire format: whole numbers separated by spaces, `-` for none. Internal to one
/// deployment (the gate and its Limiters are the same build), and far lighter in the Worker's
/// wasm than JSON with serde.
pub fn encode_fields(fields: &[Option<i64>]) -> String {
    let mut out = String::with_capacity(fields.len() * 8);
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match field {
            Some(n) => out.push_str(&n.to_string()),
            None => out.push('-'),
        }
    }
    out
}

/// Reads `N` fields written by [`encode_fields`]; `None` when there are not exactly `N` or one is
/// neither `-` nor a whole number.
pub fn decode_fields<const N: usize>(text: &str) -> Option<[Option<i64>; N]> {
    let mut out = [None; N];
    let mut parts = text.split(' ');
    for slot in &mut out {
        *slot = match parts.next()? {
            "-" => None,
            n => Some(n.parse::<i64>().ok()?),
        };
    }
    parts.next().is_none().then_some(out)
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Admission {
    /// `code retry_after limit period left reset credits` (`code`: its index in [`Code::ALL`]).
    pub fn encode(&self) -> String {
        let rate = self.rate;
        encode_fields(&[
            Some(self.code as i64),
            Some(signed(self.retry_after_seconds)),
            rate.map(|r| signed(r.limit)),
            rate.map(|r| signed(r.period_seconds)),
            rate.map(|r| signed(r.remaining)),
            rate.map(|r| signed(r.reset_seconds)),
            self.credits_remaining.map(signed),
        ])
    }

    pub fn decode(text: &str) -> Option<Admission> {
        let [code, retry, limit, period, left, reset, credits] = decode_fields::<7>(text)?;
        let code = Code::ALL.get(usize::try_from(code?).ok()?).copied()?;
        let rate = match (limit, period, left, reset) {
            (Some(limit), Some(period), Some(left), Some(reset)) => Some(RateStatus {
                limit: unsigned(limit),
                period_seconds: unsigned(period),
                remaining: unsigned(left),
                reset_seconds: unsigned(reset),
            }),
            _ => None,
        };
        Some(Admission { code, retry_after_seconds: unsigned(retry?), rate, credits_remaining: credits.map(unsigned) })
    }
}

/// The one place the precedence lives: the rate limit (`recent` requests in the window), then
/// the credits (`remaining` must cover `cost`).
pub fn limit_code(rate: Option<(u64, u64)>, credits: Option<(u64, u64)>) -> Code {
    if rate.is_some_and(|(recent, limit)| recent >= limit) {
        return Code::RateLimited;
    }
    if credits.is_some_and(|(remaining, cost)| remaining < cost) {
        return Code::UsageExceeded;
    }
    Code::Valid
}

pub fn limit_message(code: Code) -> &'static str {
    match code {
        Code::RateLimited => "the API key's rate limit is reached; retry later",
        Code::UsageExceeded => "the API key has no credits left for this request",
        _ => "the API key is within its limits",
    }
}

fn ceil_seconds(ms: i64) -> u64 {
    u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000)
}

/// Decides one request and, when it is allowed, counts it in `log` and spends `cost` from
/// `credits` (after any refill due). Refused, nothing changes but expired entries and refills.
pub fn admit(
    rate: Option<(&RateLimit, &mut SlidingLog)>,
    credits: Option<(&mut CreditState, Option<&Refill>)>,
    cost: u64,
    now: i64,
) -> Admission {
    let mut rate = rate;
    let mut credits = credits;
    if let Some((limit, log)) = rate.as_mut() {
        log.forget_expired(limit.period_ms(), now);
    }
    if let Some((state, refill)) = credits.as_mut() {
        state.refill(*refill, now);
    }
    let code = limit_code(
        rate.as_ref().map(|(limit, log)| (log.total(), limit.limit)),
        credits.as_ref().map(|(state, _)| (state.remaining, cost)),
    );
    let mut retry_after_seconds = 0;
    match code {
        Code::Valid => {
            if let Some((_, log)) = rate.as_mut() {
                log.add(now, 1);
            }
            if let Some((state, _)) = credits.as_mut() {
                state.remaining = state.remaining.saturating_sub(cost);
            }
        }
        Code::RateLimited => {
            if let Some((limit, log)) = rate.as_ref() {
                retry_after_seconds = ceil_seconds(log.wait_ms(limit.limit, limit.period_ms(), now)).max(1);
            }
        }
        _ => {
            if let Some((_, Some(refill))) = credits.as_ref() {
                retry_after_seconds = ceil_seconds(refill.interval.next_boundary(now).saturating_sub(now)).max(1);
            }
        }
    }
    Admission {
        code,
        retry_after_seconds,
        rate: rate.map(|(limit, log)| RateStatus {
            limit: limit.limit,
            period_seconds: limit.period_seconds,
            remaining: limit.limit.saturating_sub(log.total()),
            reset_seconds: ceil_seconds(log.reset_ms(limit.period_ms(), now)),
        }),
        credits_remaining: credits.map(|(state, _)| state.remaining),
    }
}

/// A lease (docs/distance.md): besides the request it admits (if any), a share of the key's
/// window and credits that one isolate may spend on its own until `now + ttl_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The request's outcome (for a prefetch, with no request: `VALID` and the counts after it).
    pub admission: Admission,
    /// Requests granted besides the one admitted, each of the route's `cost` in credits.
    pub extra: u64,
    /// Where the extra requests are counted in the window: at the lease's end, the latest instant
    /// any of them can be forwarded, so that each counts for a full period after it was used.
    pub at: i64,
}

/// Admits a request (`take_now`) as [`admit`] does, then grants up to `want` more requests to
/// the caller: at most half of what the rate limit and the credits leave after it, so that other
/// isolates and locations keep a share. The extra requests are counted in the log at
/// `now + ttl_ms` and spent from the credits at once; what the caller does not use it gives back
/// with [`return_lease`]. The sum of what is admitted and leased never passes the limit nor the
/// credits, so neither does what is forwarded.
pub fn lease(
    rate: Option<(&RateLimit, &mut SlidingLog)>,
    credits: Option<(&mut CreditState, Option<&Refill>)>,
    cost: u64,
    take_now: bool,
    want: u64,
    ttl_ms: i64,
    now: i64,
) -> Lease {
    let (mut rate, mut credits) = (rate, credits);
    let mut admission = if take_now {
        admit(
            rate.as_mut().map(|(limit, log)| (*limit, &mut **log)),
            credits.as_mut().map(|(state, refill)| (&mut **state, *refill)),
            cost,
            now,
        )
    } else {
        if let Some((limit, log)) = rate.as_mut() {
            log.forget_expired(limit.period_ms(), now);
        }
        if let Some((state, refill)) = credits.as_mut() {
            state.refill(*refill, now);
        }
        Admission { code: Code::Valid, retry_after_seconds: 0, rate: None, credits_remaining: None }
    };
    let at = now.saturating_add(ttl_ms.max(0));
    let mut extra = 0;
    if admission.code == Code::Valid {
        let rate_room = rate.as_ref().map_or(u64::MAX, |(limit, log)| limit.limit.saturating_sub(log.total()));
        let credit_room = credits.as_ref().map_or(u64::MAX, |(state, _)| state.remaining.checked_div(cost).unwrap_or(u64::MAX));
        extra = want.min(rate_room.min(credit_room) / 2);
        if extra > 0 {
            if let Some((_, log)) = rate.as_mut() {
                log.add(at, extra);
            }
            if let Some((state, _)) = credits.as_mut() {
                state.remaining = state.remaining.saturating_sub(extra.saturating_mul(cost));
            }
        }
        admission.rate = rate.as_ref().map(|(limit, log)| RateStatus {
            limit: limit.limit,
            period_seconds: limit.period_seconds,
            remaining: limit.limit.saturating_sub(log.total()),
            reset_seconds: ceil_seconds(log.reset_ms(limit.period_ms(), now)),
        });
        admission.credits_remaining = credits.as_ref().map(|(state, _)| state.remaining);
    }
    Lease { admission, extra, at }
}

/// Gives back `count` requests of a lease counted at `at` (each `cost` credits). The credits come
/// back only if they are still the ones the lease was taken from (`epoch`: the state's
/// `refilled_at_ms` then): a refill or a `set` since (both move it) has replaced them.
pub fn return_lease(rate: Option<&mut SlidingLog>, credits: Option<&mut CreditState>, at: i64, count: u64, cost: u64, epoch: i64) {
    if let Some(log) = rate {
        log.remove(at, count);
    }
    if let Some(state) = credits {
        if state.refilled_at_ms == epoch {
            state.remaining = state.remaining.saturating_add(count.saturating_mul(cost)).min(MAX_CREDITS);
        }
    }
}

/// The `RateLimit-Policy` and `RateLimit` fields (IETF httpapi rate-limit headers draft): the
/// policy's quota and window, and what is left of it with the seconds until it frees up.
pub fn ratelimit_headers(status: &RateStatus) -> [(&'static str, String); 2] {
    [
        ("ratelimit-policy", format!("\"key\";q={};w={}", status.limit, status.period_seconds)),
        ("ratelimit", format!("\"key\";r={};t={}", status.remaining, status.reset_seconds)),
    ]
}

/// The credits an allowed request on the policy's rule at `rule` spends.
pub fn cost_of(policy: &super::policy::RoutePolicy, rule: Option<usize>) -> u64 {
    rule.and_then(|i| policy.rules().get(i)).map_or(DEFAULT_COST, |r| r.cost)
}

/// The counts `/verify` and the playground decide on: `recent` requests in the key's window and
/// the credits left. `None` is the model the vectors and the playground use: `recent` identical
/// requests were just allowed, each spending its cost from the record's `credits.remaining`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitCounts {
    pub recent: u64,
    pub credits_remaining: Option<u64>,
}

/// Applies the limit and credit checks to a decision the other checks allowed, on counts given
/// (no state is changed). A key with neither attribute, or a refused decision, is returned as is.
pub fn decide_limits(decision: Decision, record: &KeyRecord, cost: u64, counts: &LimitCounts) -> Decision {
    if !decision.valid || (record.ratelimit.is_none() && record.credits.is_none()) {
        return decision;
    }
    let code = limit_code(
        record.ratelimit.map(|r| (counts.recent, r.limit)),
        record.credits.map(|c| {
            let remaining = counts.credits_remaining.unwrap_or_else(|| c.remaining.saturating_sub(counts.recent.saturating_mul(cost)));
            (remaining, cost)
        }),
    );
    if code == Code::Valid {
        return decision;
    }
    Decision { valid: false, code, message: limit_message(code).into(), ..decision }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::core::time::parse_rfc3339;
    use serde_json::json;

    fn at(s: &str) -> i64 {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn attributes_are_validated_naming_the_field() {
        let cases = [
            (json!({"limit": 0, "period_seconds": 10}), "ratelimit.limit"),
            (json!({"limit": -1, "period_seconds": 10}), "ratelimit.limit"),
            (json!({"limit": 1.5, "period_seconds": 10}), "ratelimit.limit"),
            (json!({"limit": 1_000_001, "period_seconds": 10}), "ratelimit.limit"),
            (json!({"limit": 5, "period_seconds": 0}), "ratelimit.period_seconds"),
            (json!({"limit": 5, "period_seconds": 86_401}), "ratelimit.period_seconds"),
            (json!({"limit": 5}), "ratelimit.period_seconds"),
            (json!({"limit": 5, "period_seconds": 1, "burst": 2}), "ratelimit.burst"),
            (json!(5), "ratelimit"),
        ];
        for (value, field) in cases {
            assert_eq!(parse_ratelimit(&value).unwrap_err().field, field, "{value}");
        }
        assert_eq!(
            parse_ratelimit(&json!({"limit": 5, "period_seconds": 10.0})).unwrap(),
            Some(RateLimit { limit: 5, period_seconds: 10, mode: RateMode::Exact })
        );
        let local = parse_ratelimit(&json!({"limit": 100, "period_seconds": 60, "mode": "local"})).unwrap().unwrap();
        assert_eq!(local.local_binding(), "RATE_LIMIT_100_PER_60");
        assert_eq!(serde_json::to_value(local).unwrap(), json!({"limit": 100, "period_seconds": 60, "mode": "local"}));
        let exact = parse_ratelimit(&json!({"limit": 5, "period_seconds": 7, "mode": "exact"})).unwrap().unwrap();
        assert_eq!(serde_json::to_value(exact).unwrap(), json!({"limit": 5, "period_seconds": 7}), "the default is not shown");
        for (value, field) in [
            (json!({"limit": 5, "period_seconds": 30, "mode": "local"}), "ratelimit.period_seconds"),
            (json!({"limit": 5, "period_seconds": 10, "mode": "nearby"}), "ratelimit.mode"),
            (json!({"limit": 5, "period_seconds": 10, "mode": 1}), "ratelimit.mode"),
        ] {
            assert_eq!(parse_ratelimit(&value).unwrap_err().field, field, "{value}");
        }
        assert_eq!(local_tier("RATE_LIMIT_100_PER_60"), Some((100, 60)));
        for bad in ["RATE_LIMIT_100_PER_30", "RATE_LIMIT_0_PER_10", "RATE_LIMIT_x_PER_10", "UNKNOWN_KEY_LIMITER", "RATE_LIMIT_10"] {
            assert_eq!(local_tier(bad), None, "{bad}");
        }
        assert_eq!(parse_ratelimit(&Value::Null).unwrap(), None);
        let cases = [
            (json!({"remaining": -1}), "credits.remaining"),
            (json!({"remaining": 9_007_199_254_740_993u64}), "credits.remaining"),
            (json!({"remaining": 1e300}), "credits.remaining"),
            (json!({}), "credits.remaining"),
            (json!({"remaining": 1, "refill": {"amount": 0, "interval": "daily"}}), "credits.refill.amount"),
            (json!({"remaining": 1, "refill": {"amount": 5, "interval": "weekly"}}), "credits.refill.interval"),
            (json!({"remaining": 1, "refill": {"amount": 5}}), "credits.refill.interval"),
            (json!({"remaining": 1, "refill": 5}), "credits.refill"),
            (json!({"remaining": 1, "refil": null}), "credits.refil"),
        ];
        for (value, field) in cases {
            assert_eq!(parse_credits(&value).unwrap_err().field, field, "{value}");
        }
        let c = parse_credits(&json!({"remaining": 9_007_199_254_740_992u64, "refill": {"amount": 10, "interval": "monthly"}})).unwrap().unwrap();
        assert_eq!(c.remaining, MAX_CREDITS);
        assert_eq!(c.refill, Some(Refill { amount: 10, interval: RefillInterval::Monthly }));
    }

    #[test]
    fn boundaries_are_utc_days_and_months() {
        let now = at("2026-02-28T23:59:59.999Z");
        assert_eq!(RefillInterval::Daily.last_boundary(now), at("2026-02-28T00:00:00Z"));
        assert_eq!(RefillInterval::Daily.next_boundary(now), at("2026-03-01T00:00:00Z"));
        assert_eq!(RefillInterval::Monthly.last_boundary(now), at("2026-02-01T00:00:00Z"));
        assert_eq!(RefillInterval::Monthly.next_boundary(now), at("2026-03-01T00:00:00Z"));
        assert_eq!(RefillInterval::Monthly.next_boundary(at("2026-12-31T12:00:00Z")), at("2027-01-01T00:00:00Z"));
        assert_eq!(RefillInterval::Monthly.last_boundary(at("2024-02-29T10:00:00Z")), at("2024-02-01T00:00:00Z"));
    }

    #[test]
    fn five_per_ten_seconds() {
        let limit = RateLimit { limit: 5, period_seconds: 10, mode: RateMode::Exact };
        let mut log = SlidingLog::default();
        let t0 = 1_000_000;
        for i in 0..5 {
            let a = admit(Some((&limit, &mut log)), None, 1, t0 + i * 100);
            assert_eq!(a.code, Code::Valid);
            assert_eq!(a.rate.unwrap().remaining, 4 - u64::try_from(i).unwrap());
        }
        let a = admit(Some((&limit, &mut log)), None, 1, t0 + 1000);
        assert_eq!(a.code, Code::RateLimited);
        // The first request leaves the window at t0 + 10 000: 9 s from now.
        assert_eq!(a.retry_after_seconds, 9);
        assert_eq!(a.rate.unwrap().remaining, 0);
        assert_eq!(log.total(), 5, "a refused request is not counted");
        assert_eq!(admit(Some((&limit, &mut log)), None, 1, t0 + 9_999).code, Code::RateLimited);
        assert_eq!(admit(Some((&limit, &mut log)), None, 1, t0 + 10_000).code, Code::Valid);
        assert_eq!(admit(Some((&limit, &mut log)), None, 1, t0 + 10_001).code, Code::RateLimited);
    }

    #[test]
    fn credits_never_go_below_zero_and_refused_requests_spend_nothing() {
        let mut state = CreditState { remaining: 3, refilled_at_ms: 0, set_at_ms: 1 };
        assert_eq!(admit(None, Some((&mut state, None)), 2, 10).code, Code::Valid);
        assert_eq!(state.remaining, 1);
        let a = admit(None, Some((&mut state, None)), 2, 11);
        assert_eq!((a.code, a.retry_after_seconds, a.credits_remaining), (Code::UsageExceeded, 0, Some(1)));
        assert_eq!(admit(None, Some((&mut state, None)), 0, 12).code, Code::Valid, "a free route");
        // A rate-limited request spends no credit.
        let limit = RateLimit { limit: 1, period_seconds: 60, mode: RateMode::Exact };
        let mut log = SlidingLog::from_entries([(12, 1)]);
        assert_eq!(admit(Some((&limit, &mut log)), Some((&mut state, None)), 1, 13).code, Code::RateLimited);
        assert_eq!(state.remaining, 1);
    }

    #[test]
    fn refill_sets_remaining_on_the_boundary_lazily() {
        let refill = Refill { amount: 20, interval: RefillInterval::Daily };
        let set = at("2026-05-01T12:00:00Z");
        let mut state = CreditState::adopt(None, &Credits { remaining: 1, refill: Some(refill), set_at_ms: set, low_threshold: None }, set + 5);
        assert_eq!(state.refilled_at_ms, set);
        assert_eq!(admit(None, Some((&mut state, Some(&refill))), 1, at("2026-05-01T23:59:59Z")).code, Code::Valid);
        let a = admit(None, Some((&mut state, Some(&refill))), 1, at("2026-05-01T23:59:59.500Z"));
        assert_eq!((a.code, a.retry_after_seconds), (Code::UsageExceeded, 1));
        let a = admit(None, Some((&mut state, Some(&refill))), 1, at("2026-05-03T08:00:00Z"));
        assert_eq!((a.code, a.credits_remaining), (Code::Valid, Some(19)), "set to the amount, once");
        assert_eq!(state.refilled_at_ms, at("2026-05-03T00:00:00Z"));
    }

    #[test]
    fn a_stale_record_never_undoes_spending() {
        let credits = Credits { remaining: 10, refill: None, set_at_ms: 100, low_threshold: None };
        let held = CreditState { remaining: 4, refilled_at_ms: 100, set_at_ms: 100 };
        assert_eq!(CreditState::adopt(Some(held), &credits, 500).remaining, 4);
        let newer = Credits { set_at_ms: 200, ..credits };
        assert_eq!(CreditState::adopt(Some(held), &newer, 500).remaining, 10);
    }

    #[test]
    fn precedence_rate_limit_then_credits() {
        assert_eq!(limit_code(Some((5, 5)), Some((0, 1))), Code::RateLimited);
        assert_eq!(limit_code(Some((4, 5)), Some((0, 1))), Code::UsageExceeded);
        assert_eq!(limit_code(None, Some((1, 1))), Code::Valid);
        assert_eq!(limit_code(None, None), Code::Valid);
    }

    #[test]
    fn an_admission_survives_the_wire() {
        let a = Admission {
            code: Code::RateLimited,
            retry_after_seconds: 3,
            rate: Some(RateStatus { limit: 5, period_seconds: 10, remaining: 0, reset_seconds: 3 }),
            credits_remaining: Some(MAX_CREDITS),
        };
        assert_eq!(Admission::decode(&a.encode()), Some(a));
        let b = Admission { code: Code::UsageExceeded, retry_after_seconds: 0, rate: None, credits_remaining: None };
        assert_eq!(b.encode(), "19 0 - - - - -");
        assert_eq!(Admission::decode(&b.encode()), Some(b));
        for bad in ["", "99 0 - - - - -", "1 0 - - - -", "1 0 - - - - - -", "1 x - - - - -", "1  0 - - - - -"] {
            assert_eq!(Admission::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn headers_follow_the_draft() {
        let [(p, pv), (r, rv)] = ratelimit_headers(&RateStatus { limit: 5, period_seconds: 10, remaining: 0, reset_seconds: 7 });
        assert_eq!((p, pv.as_str()), ("ratelimit-policy", "\"key\";q=5;w=10"));
        assert_eq!((r, rv.as_str()), ("ratelimit", "\"key\";r=0;t=7"));
    }

    proptest::proptest! {
        /// Whatever the arrival times, no rolling window ever holds more than `limit` allowed requests.
        #[test]
        fn no_window_holds_more_than_the_limit(
            limit in 1u64..6,
            period in 1u64..4,
            gaps in proptest::collection::vec(0i64..1500, 1..80),
        ) {
            let rule = RateLimit { limit, period_seconds: period, mode: RateMode::Exact };
            let mut log = SlidingLog::default();
            let mut now = 0i64;
            let mut allowed = Vec::new();
            for gap in gaps {
                now += gap;
                if admit(Some((&rule, &mut log)), None, 1, now).code == Code::Valid {
                    allowed.push(now);
                }
            }
            for (i, &start) in allowed.iter().enumerate() {
                let within = allowed[i..].iter().take_while(|&&t| t < start + rule.period_ms()).count();
                proptest::prop_assert!(within as u64 <= limit);
            }
        }

        #[test]
        fn parsing_never_panics(json in ".{0,120}") {
            if let Ok(value) = serde_json::from_str::<Value>(&json) {
                let _ = parse_ratelimit(&value);
                let _ = parse_credits(&value);
            }
        }
    }

    #[test]
    fn a_lease_takes_at_most_half_of_what_is_left_and_gives_back_what_was_not_used() {
        let rate = RateLimit { limit: 10, period_seconds: 60, mode: RateMode::Exact };
        let mut log = SlidingLog::default();
        let mut credits = CreditState { remaining: 100, refilled_at_ms: 0, set_at_ms: 0 };
        let first = lease(Some((&rate, &mut log)), Some((&mut credits, None)), 2, true, 50, 1000, 5000);
        assert_eq!(first.admission.code, Code::Valid);
        // 9 left after the request: 4 leased, counted at the lease's end.
        assert_eq!((first.extra, first.at), (4, 6000));
        assert_eq!(log.total(), 5);
        assert_eq!(credits.remaining, 90);
        assert_eq!(first.admission.rate.map(|r| r.remaining), Some(5));
        assert_eq!(first.admission.credits_remaining, Some(90));
        // A prefetch takes no request of its own.
        let second = lease(Some((&rate, &mut log)), Some((&mut credits, None)), 2, false, 50, 1000, 5100);
        assert_eq!((second.admission.code, second.extra, second.at), (Code::Valid, 2, 6100));
        assert_eq!(log.total(), 7);
        // Unused: 3 of the first lease come back, window and credits.
        return_lease(Some(&mut log), Some(&mut credits), first.at, 3, 2, 0);
        assert_eq!((log.total(), credits.remaining), (4, 92));
        // A set or a refill since the lease: the credits it came from are gone, the window still
        // frees up.
        credits.refilled_at_ms = 7;
        return_lease(Some(&mut log), Some(&mut credits), second.at, 2, 2, 0);
        assert_eq!((log.total(), credits.remaining), (2, 92));
        // Nothing more than the entry held, and nothing for an entry that left.
        return_lease(Some(&mut log), None, first.at, 9, 2, 0);
        assert_eq!(log.total(), 1);
        // A refused request gets no lease.
        let full = RateLimit { limit: 1, period_seconds: 60, mode: RateMode::Exact };
        let refused = lease(Some((&full, &mut log)), None, 1, true, 50, 1000, 5200);
        assert_eq!((refused.admission.code, refused.extra), (Code::RateLimited, 0));
    }

    proptest::proptest! {
        /// Isolates take leases and forward each leased request at any instant before the lease
        /// ends; the Limiter admits others directly; unused shares come back. In no window of
        /// the period are more requests forwarded than the limit, and credits never go below 0.
        #[test]
        fn leases_never_let_more_through_than_the_limit(
            steps in proptest::collection::vec((0i64..300, 0u8..4, 1u64..20, 0u64..100), 1..200),
        ) {
            let period_ms = 1000;
            let rate = RateLimit { limit: 12, period_seconds: 1, mode: RateMode::Exact };
            let mut log = SlidingLog::default();
            let mut credits = CreditState { remaining: 150, refilled_at_ms: 0, set_at_ms: 0 };
            let mut now = 0i64;
            let mut forwarded: Vec<i64> = Vec::new();
            let mut spent = 0u64;
            for (gap, op, want, used_at) in steps {
                now += gap;
                let lease = lease(Some((&rate, &mut log)), Some((&mut credits, None)), 1, op != 0, want, 400, now);
                if lease.admission.code == Code::Valid && op != 0 {
                    forwarded.push(now);
                    spent += 1;
                }
                // The isolate uses part of the extras, somewhere before the lease ends.
                let used = if op == 3 { lease.extra } else { lease.extra / 2 };
                for i in 0..used {
                    forwarded.push(now + (used_at as i64 * 4 + i as i64).min(400));
                }
                spent += used;
                return_lease(Some(&mut log), Some(&mut credits), lease.at, lease.extra - used, 1, 0);
            }
            forwarded.sort_unstable();
            for (i, &start) in forwarded.iter().enumerate() {
                let within = forwarded[i..].iter().take_while(|&&t| t < start + period_ms).count();
                proptest::prop_assert!(within <= 12, "{} forwarded in the window from {}", within, start);
            }
            proptest::prop_assert!(spent <= 150);
            proptest::prop_assert_eq!(credits.remaining, 150 - spent);
        }
    }
}
