//! Leases (docs/distance.md): a busy key's Limiter may be a continent away, so an isolate that
//! sees many requests of a key takes a share of its window and credits from the Limiter
//! ([`crate::core::limits::lease`]) and spends it locally, without a round trip per request.
//!
//! - A key's requests ask for one request at a time (exactly as without leases) until this
//!   isolate has seen [`MIN_RATE`] of them within a lease's time (`LEASE_TTL_MS`); then each call
//!   asks for as many as it saw in that time (the Limiter grants at most half of what is left).
//! - When what is held falls below half of that, the next share is taken in the background
//!   (prefetch), so a steady key does not wait.
//! - A share ends `LEASE_TTL_MS` after it was asked for (a tenth earlier, for clock skew); what is
//!   left of it then (or when the key's limits change) is given back to the Limiter. The Limiter
//!   counts a share's requests at its end, so each counts for a full period after it was used:
//!   never more forwarded than the limit or the credits, across isolates and locations.
//! - A request the Limiter refuses while this isolate's own calls for shares are in flight waits
//!   for them and takes from what they brought: concurrent requests in one isolate lose nothing.
//!   While another isolate holds unused requests, a request may be refused: at most
//!   `LEASE_TTL_MS` (the share then comes back), documented in docs/distance.md.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use worker::Env;

use super::limiter::{LeaseAsk, LeaseGrant, LimitRequest};
use crate::core::limits::Admission;
use crate::core::Code;

/// Requests of a key within one lease's time before this isolate asks for more than one.
const MIN_RATE: u64 = 8;
/// The most requests one call asks for.
const MAX_WANT: u64 = 1000;
/// `LEASE_TTL_MS` when not set.
const DEFAULT_TTL_MS: i64 = 2000;
/// How long a refused request waits at most for this isolate's calls in flight.
const MAX_WAIT_MS: i64 = 5000;
/// How long one background sweep stays (a `waitUntil` is not forever).
const SWEEP_FOR_MS: i64 = 20_000;

/// Requests this isolate may forward on its own, from one grant.
struct Share {
    left: u64,
    /// Where the Limiter counts them, to give back the unused ones.
    at: i64,
    /// This isolate's clock: none is used at or after it.
    ends_ms: i64,
    epoch: i64,
    cost: u64,
    /// The Limiter's counts after the grant (for the headers of the requests spent from it).
    admission: Admission,
}

#[derive(Default)]
struct KeyLeases {
    /// The limits the shares were taken under: other limits (a change of the record) end them.
    request: Option<LimitRequest>,
    shares: Vec<Share>,
    /// Shares ended with requests left, to give back.
    returns: Vec<Share>,
    /// Calls in flight that asked for more than one request.
    wanting: u32,
    prefetch_due: bool,
    prefetching: bool,
    window_start: i64,
    window_count: u64,
    last_window: u64,
}

thread_local! {
    /// By the key's Limiter name.
    static LEASES: RefCell<HashMap<String, KeyLeases>> = RefCell::new(HashMap::new());
    static TTL_MS: Cell<i64> = const { Cell::new(0) };
    static BACKGROUND_DUE: Cell<bool> = const { Cell::new(false) };
    /// When the running sweep wakes next (none running when past).
    static SWEEP_UNTIL: Cell<i64> = const { Cell::new(0) };
    /// Requests spent from shares, and calls to Limiters (the debug stats).
    static SPENT_LOCALLY: Cell<u64> = const { Cell::new(0) };
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

/// `LEASE_TTL_MS`, read once per isolate.
fn ttl_ms(env: &Env) -> i64 {
    let cached = TTL_MS.with(Cell::get);
    if cached > 0 {
        return cached;
    }
    let ms = env
        .var("LEASE_TTL_MS")
        .ok()
        .and_then(|v| v.to_string().trim().parse::<i64>().ok())
        .unwrap_or(DEFAULT_TTL_MS)
        .clamp(100, 60_000);
    TTL_MS.with(|t| t.set(ms));
    ms
}

/// The debug stats: requests spent from shares, calls to Limiters, requests held now.
pub fn stats() -> serde_json::Value {
    let held: u64 = LEASES.with(|l| l.borrow().values().flat_map(|k| k.shares.iter()).map(|s| s.left).sum());
    serde_json::json!({"spent_locally": SPENT_LOCALLY.with(Cell::get), "limiter_calls": CALLS.with(Cell::get), "held": held})
}

/// Whether [`background`] has work (the gate then runs it in `waitUntil`).
pub fn background_due() -> bool {
    BACKGROUND_DUE.with(Cell::get)
}

/// The request's outcome from its key's Limiter, through this isolate's shares when it holds
/// any: `Err` when the Limiter cannot be reached (the gate fails closed).
pub async fn admit(env: &Env, name: &str, request: LimitRequest) -> Result<Admission, String> {
    let ttl = ttl_ms(env);
    let now = super::now_ms();
    let want = LEASES.with(|l| {
        let mut l = l.borrow_mut();
        let key = l.entry(name.to_string()).or_default();
        settle(key, &request, now);
        let since = now.saturating_sub(key.window_start);
        if since >= ttl {
            // The last window's count says the rate only if it was the window just before.
            key.last_window = if since < ttl.saturating_mul(2) { key.window_count } else { 0 };
            key.window_count = 0;
            key.window_start = now;
        }
        key.window_count += 1;
        let seen = key.last_window.max(key.window_count);
        if seen >= MIN_RATE {
            seen.min(MAX_WANT)
        } else {
            1
        }
    });
    if let Some(admission) = take(name, now, want, request.cost) {
        return Ok(admission);
    }
    let (returned, wanting) = LEASES.with(|l| {
        let mut l = l.borrow_mut();
        let key = l.entry(name.to_string()).or_default();
        if want > 1 {
            key.wanting += 1;
        }
        (key.returns.pop(), want > 1)
    });
    let sent = super::now_ms();
    let answer = call(env, name, &request, true, want.saturating_sub(1), ttl, returned.as_ref()).await;
    let admission = LEASES.with(|l| {
        let mut l = l.borrow_mut();
        let key = l.entry(name.to_string()).or_default();
        if wanting {
            key.wanting = key.wanting.saturating_sub(1);
        }
        match answer {
            Ok(grant) => {
                if same_limits(key.request.as_ref(), &request) {
                    keep(key, &request, grant.extra, &grant, sent, ttl);
                } else if grant.extra > 0 {
                    // The key's limits changed while the call was out: its extra goes back.
                    key.returns.push(Share { left: grant.extra, at: grant.at, ends_ms: sent, epoch: grant.epoch, cost: request.cost, admission: grant.admission });
                    BACKGROUND_DUE.with(|b| b.set(true));
                }
                Ok(shown(grant.admission, grant.extra, request.cost))
            }
            Err(e) => {
                if let Some(share) = returned {
                    key.returns.push(share);
                }
                Err(e)
            }
        }
    })?;
    if admission.code == Code::Valid {
        return Ok(admission);
    }
    // Refused: this isolate's other calls in flight may bring requests it can spend.
    let start = super::now_ms();
    while LEASES.with(|l| l.borrow().get(name).is_some_and(|k| k.wanting > 0 || k.prefetching)) && super::now_ms().saturating_sub(start) < MAX_WAIT_MS {
        worker::Delay::from(std::time::Duration::from_millis(2)).await;
    }
    Ok(take(name, super::now_ms(), want, request.cost).unwrap_or(admission))
}

/// Whether shares taken under `a` may be spent under `b`: the same rate limit and credits (the
/// route's cost may differ: each share keeps its own).
fn same_limits(a: Option<&LimitRequest>, b: &LimitRequest) -> bool {
    a.is_some_and(|a| a.ratelimit == b.ratelimit && a.credits == b.credits)
}

/// Ends the shares taken under other limits than `request` and those past their end.
fn settle(key: &mut KeyLeases, request: &LimitRequest, now: i64) {
    if !same_limits(key.request.as_ref(), request) {
        key.returns.append(&mut key.shares);
    }
    key.request = Some(*request);
    let (ended, live): (Vec<Share>, Vec<Share>) = key.shares.drain(..).partition(|s| s.ends_ms <= now || s.left == 0);
    key.shares = live;
    key.returns.extend(ended.into_iter().filter(|s| s.left > 0));
    if !key.returns.is_empty() {
        BACKGROUND_DUE.with(|b| b.set(true));
    }
}

/// One request of `cost` from this isolate's shares of the key, if it holds any.
fn take(name: &str, now: i64, want: u64, cost: u64) -> Option<Admission> {
    LEASES.with(|l| {
        let mut l = l.borrow_mut();
        let key = l.get_mut(name)?;
        let share = key.shares.iter_mut().filter(|s| s.left > 0 && s.ends_ms > now && s.cost == cost).min_by_key(|s| s.ends_ms)?;
        share.left -= 1;
        let admission = shown(share.admission, share.left, share.cost);
        let held: u64 = key.shares.iter().filter(|s| s.ends_ms > now && s.cost == cost).map(|s| s.left).sum();
        if want > 1 && held < want / 2 && !key.prefetching {
            key.prefetch_due = true;
            BACKGROUND_DUE.with(|b| b.set(true));
        }
        SPENT_LOCALLY.with(|n| n.set(n.get() + 1));
        Some(admission)
    })
}

/// The counts a request spent from a grant shows: the Limiter's after the grant, plus what is
/// still held of it (each request of a grant shows its own place in the Limiter's count).
fn shown(granted: Admission, left: u64, cost: u64) -> Admission {
    let mut admission = granted;
    if admission.code == Code::Valid {
        if let Some(rate) = admission.rate.as_mut() {
            rate.remaining = rate.remaining.saturating_add(left);
        }
        admission.credits_remaining = admission.credits_remaining.map(|c| c.saturating_add(left.saturating_mul(cost)));
    }
    admission
}

/// Keeps the extra requests of a grant as a share.
fn keep(key: &mut KeyLeases, request: &LimitRequest, extra: u64, grant: &LeaseGrant, sent: i64, ttl: i64) {
    if extra == 0 {
        return;
    }
    key.shares.push(Share {
        left: extra,
        at: grant.at,
        ends_ms: sent.saturating_add(ttl - ttl / 10),
        epoch: grant.epoch,
        cost: request.cost,
        admission: grant.admission,
    });
    BACKGROUND_DUE.with(|b| b.set(true));
}

async fn call(env: &Env, name: &str, request: &LimitRequest, take_now: bool, want: u64, ttl: i64, returned: Option<&Share>) -> Result<LeaseGrant, String> {
    let ask = LeaseAsk {
        take_now,
        want,
        ttl_ms: ttl,
        return_at: returned.map_or(0, |s| s.at),
        return_count: returned.map_or(0, |s| s.left),
        return_cost: returned.map_or(0, |s| s.cost),
        return_epoch: returned.map_or(0, |s| s.epoch),
    };
    CALLS.with(|n| n.set(n.get() + 1));
    let text = super::limits::call(env, name, "lease", format!("{}\n{}", request.encode(), ask.encode())).await?;
    LeaseGrant::decode(&text).ok_or_else(|| "the limiter's lease was not understood".to_string())
}

/// After the answers (`waitUntil`): takes the next shares of busy keys before they run out, and
/// gives back what ended unused, waking when the next share ends while any is held.
pub async fn background(env: &Env) {
    BACKGROUND_DUE.with(|b| b.set(false));
    let ttl = ttl_ms(env);
    let prefetch: Vec<(String, LimitRequest, u64)> = LEASES.with(|l| {
        let mut l = l.borrow_mut();
        l.iter_mut()
            .filter(|(_, k)| k.prefetch_due && !k.prefetching && k.request.is_some())
            .filter_map(|(name, k)| {
                k.prefetch_due = false;
                k.prefetching = true;
                Some((name.clone(), k.request?, k.last_window.max(k.window_count).clamp(1, MAX_WANT)))
            })
            .collect()
    });
    for (name, request, want) in prefetch {
        let returned = LEASES.with(|l| l.borrow_mut().get_mut(&name).and_then(|k| k.returns.pop()));
        let sent = super::now_ms();
        let answer = call(env, &name, &request, false, want, ttl, returned.as_ref()).await;
        LEASES.with(|l| {
            let mut l = l.borrow_mut();
            let Some(key) = l.get_mut(&name) else { return };
            key.prefetching = false;
            match answer {
                // Taken under other limits meanwhile: given back at once.
                Ok(grant) if !same_limits(key.request.as_ref(), &request) && grant.extra > 0 => key.returns.push(Share {
                    left: grant.extra,
                    at: grant.at,
                    ends_ms: sent,
                    epoch: grant.epoch,
                    cost: request.cost,
                    admission: grant.admission,
                }),
                Ok(_) if !same_limits(key.request.as_ref(), &request) => {}
                Ok(grant) => keep(key, &request, grant.extra, &grant, sent, ttl),
                Err(_) => key.returns.extend(returned),
            }
        });
    }
    sweep(env).await;
}

/// Gives back what ended unused; while shares are held, waits for the next one to end (one sweep
/// at a time, for at most [`SWEEP_FOR_MS`]).
async fn sweep(env: &Env) {
    let start = super::now_ms();
    loop {
        let now = super::now_ms();
        let returns: Vec<(String, LimitRequest, Share)> = LEASES.with(|l| {
            let mut l = l.borrow_mut();
            let mut out = Vec::new();
            for (name, key) in l.iter_mut() {
                let Some(request) = key.request else { continue };
                settle(key, &request, now);
                out.extend(key.returns.drain(..).map(|s| (name.clone(), request, s)));
            }
            // Keys with nothing held and no traffic for a while are forgotten.
            l.retain(|_, k| !k.shares.is_empty() || k.prefetching || k.wanting > 0 || now.saturating_sub(k.window_start) < 60_000);
            out
        });
        BACKGROUND_DUE.with(|b| b.set(false));
        for (name, request, share) in returns {
            let ttl = ttl_ms(env);
            if call(env, &name, &request, false, 0, ttl, Some(&share)).await.is_err() {
                // The requests stay counted until their period ends; credits stay spent.
                worker::console_error!("keyward: a lease of {} could not be given back", name);
            }
        }
        let next = LEASES.with(|l| l.borrow().values().flat_map(|k| k.shares.iter()).map(|s| s.ends_ms).min());
        let now = super::now_ms();
        let Some(next) = next else { return };
        if SWEEP_UNTIL.with(Cell::get) > now || now.saturating_sub(start) > SWEEP_FOR_MS {
            return;
        }
        let wake = next.max(now) + 5;
        SWEEP_UNTIL.with(|s| s.set(wake));
        let wait = u64::try_from(wake - now).unwrap_or(5);
        worker::Delay::from(std::time::Duration::from_millis(wait)).await;
        SWEEP_UNTIL.with(|s| s.set(0));
    }
}
