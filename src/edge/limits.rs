//! The gate's last check: a key's rate limit and credits, decided by its Limiter Durable Object
//! after every other check has allowed the request. A key with neither attribute costs nothing
//! here: no call is made. A `local` rate limit is counted by the Rate Limiting binding of its tier
//! (`RATE_LIMIT_<limit>_PER_<period>`, wrangler.toml) instead: a key with only that makes no
//! Durable Object call either.

use std::future::Future;
use std::pin::Pin;

use worker::{Env, Headers, Method, Request, RequestInit, Response, Result};

use super::limiter::{Counts, LimitRequest};
use super::reply;
use crate::core::limits::{limit_message, local_tier, ratelimit_headers, RateLimit, RateStatus};
use crate::core::record::KeyRecord;
use crate::core::Code;

/// The binding of the Limiter class (wrangler.toml).
const LIMITER: &str = "LIMITER";
/// The header that tells the origin how many credits the key has left after this request.
pub const CREDITS_HEADER: &str = "x-keyward-credits-remaining";

pub use crate::core::limits::cost_of as cost;

/// Calls `op` on the Limiter named `name` with `body` (its wire format, [`encode_fields`]); any
/// failure (unreachable, reset, not its answer) is `Err`. Boxed, so that its callers (the gate,
/// `/verify`, the management API) share one compiled copy.
///
/// [`encode_fields`]: crate::core::limits::encode_fields
pub fn call<'a>(env: &'a Env, name: &'a str, op: &'a str, body: String) -> Pin<Box<dyn Future<Output = std::result::Result<String, String>> + 'a>> {
    Box::pin(call_text(env, name, op, body))
}

async fn call_text(env: &Env, name: &str, op: &str, body: String) -> std::result::Result<String, String> {
    let namespace = env.durable_object(LIMITER).map_err(|e| e.to_string())?;
    let stub = namespace.id_from_name(name).and_then(|id| id.get_stub()).map_err(|e| e.to_string())?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let request = Request::new_with_init(&format!("https://limiter/{op}"), &init).map_err(|e| e.to_string())?;
    super::store::remote_delay(env).await;
    let mut response = stub.fetch_with_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status_code();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("the limiter answered {status}: {text}"));
    }
    Ok(text)
}

/// The request to send a key's Limiter, or `None` when the key has neither credits nor an exact
/// rate limit (a `local` one is never the Limiter's).
pub fn limit_request(record: &KeyRecord, cost: u64) -> Option<LimitRequest> {
    let ratelimit = record.ratelimit.filter(|r| !r.is_local());
    (ratelimit.is_some() || record.credits.is_some()).then_some(LimitRequest { ratelimit, credits: record.credits, cost, ..LimitRequest::default() })
}

/// The `local` tiers this deployment declares (`RATE_LIMIT_<limit>_PER_<period>` bindings), as
/// `<limit>/<period>s`, for the management API's refusal of a tier that has none.
pub fn declared_tiers(env: &Env) -> Vec<String> {
    // In the order wrangler.toml declares them.
    let names = js_sys::Reflect::own_keys(env).map(|a| a.to_vec()).unwrap_or_default();
    names.iter().filter_map(|n| local_tier(&n.as_string()?)).map(|(limit, period)| format!("{limit}/{period}s")).collect()
}

/// Whether the binding a `local` limit needs is declared here.
pub fn has_tier(env: &Env, rate: &RateLimit) -> bool {
    env.rate_limiter(&rate.local_binding()).is_ok()
}

/// The counts a key's Limiter holds now (after any refill due), changing nothing: for `/verify`
/// and the live `credits.remaining` of the key's view.
pub async fn peek(env: &Env, record: &KeyRecord, cost: u64) -> std::result::Result<Option<Counts>, String> {
    match limit_request(record, cost) {
        None => Ok(None),
        Some(request) => {
            let answer = call(env, record.limiter_name(), "peek", request.encode()).await?;
            Counts::decode(&answer).map(Some).ok_or_else(|| "the limiter's counts were not understood".into())
        }
    }
}

/// A refusal by the limit checks: its code (for usage counting) and the answer.
pub type Refused = (Code, Response);

/// The outcome of the limit checks: forward (with the `RateLimit-Policy` / `RateLimit` fields
/// the client's answer gets, none for a key without a rate limit) or refuse.
pub enum Admit {
    Forward(Vec<(&'static str, String)>),
    Refuse(Refused),
}

/// Checks and spends for an allowed request (setting the credits left on `forwarded`). A Limiter
/// or a binding that cannot be reached refuses (fail closed): limits and credits are promises.
pub async fn admit(env: &Env, record: &KeyRecord, cost: u64, forwarded: &Headers) -> Result<Admit> {
    if !record.is_limited() {
        return Ok(Admit::Forward(Vec::new()));
    }
    // Boxed: the gate's own future stays as small as it was for keys without limits.
    let limited: Pin<Box<dyn Future<Output = Result<Admit>> + '_>> = Box::pin(admit_limited(env, record, cost, forwarded));
    limited.await
}

fn unreachable(what: &str) -> Result<Admit> {
    let message = format!("the rate limit and credit store ({what}) could not be reached; the request was not forwarded");
    Ok(Admit::Refuse((Code::StoreUnavailable, reply::error(503, Code::StoreUnavailable.as_str(), &message)?)))
}

/// A `local` limit: the binding of its tier counts the request (under the key's Limiter name, so
/// a rolled key shares it) and says whether it fits. It does not say how many are left nor when
/// its window ends, so a refusal's `Retry-After` and `t` are the period (an upper bound).
async fn admit_local(env: &Env, record: &KeyRecord, rate: &RateLimit) -> Result<std::result::Result<(), Admit>> {
    let outcome = match env.rate_limiter(&rate.local_binding()) {
        Ok(binding) => binding.limit(record.limiter_name().to_string()).await.map(|o| o.success),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(true) => Ok(Ok(())),
        Ok(false) => {
            let status = RateStatus { limit: rate.limit, period_seconds: rate.period_seconds, remaining: 0, reset_seconds: rate.period_seconds };
            Ok(Err(Admit::Refuse(refusal(Code::RateLimited, rate.period_seconds, Some(&status))?)))
        }
        Err(e) => {
            worker::console_error!("keyward: the rate limit binding {} failed: {}", rate.local_binding(), e);
            Ok(Err(unreachable(&format!("the Rate Limiting binding {}", rate.local_binding()))?))
        }
    }
}

fn refusal(code: Code, retry_after: u64, rate: Option<&RateStatus>) -> Result<Refused> {
    let response = reply::error(code.status(), code.as_str(), limit_message(code))?;
    if retry_after > 0 {
        response.headers().set("retry-after", &retry_after.to_string())?;
    }
    if let Some(rate) = rate {
        for (name, value) in ratelimit_headers(rate) {
            response.headers().set(name, &value)?;
        }
    }
    Ok((code, response))
}

async fn admit_limited(env: &Env, record: &KeyRecord, cost: u64, forwarded: &Headers) -> Result<Admit> {
    let mut fields = Vec::new();
    if let Some(rate) = record.ratelimit.filter(RateLimit::is_local) {
        if let Err(refused) = admit_local(env, record, &rate).await? {
            return Ok(refused);
        }
        let [policy, _] = ratelimit_headers(&RateStatus { limit: rate.limit, period_seconds: rate.period_seconds, remaining: 0, reset_seconds: 0 });
        fields.push(policy);
    }
    let Some(request) = limit_request(record, cost) else {
        return Ok(Admit::Forward(fields));
    };
    // Through this isolate's shares of the key's window and credits when it holds any (leases,
    // docs/distance.md); otherwise one call to the Limiter, which may lease more.
    let admission = match super::lease::admit(env, record.limiter_name(), request).await {
        Ok(a) => a,
        Err(e) => {
            worker::console_error!("keyward: the limiter of {} could not be reached: {}", record.id, e);
            return unreachable("Limiter");
        }
    };
    if admission.code == Code::Valid {
        if let Some(remaining) = admission.credits_remaining {
            forwarded.set(CREDITS_HEADER, &remaining.to_string())?;
        }
        if let Some(rate) = &admission.rate {
            fields.extend(ratelimit_headers(rate));
        }
        return Ok(Admit::Forward(fields));
    }
    Ok(Admit::Refuse(refusal(admission.code, admission.retry_after_seconds, admission.rate.as_ref())?))
}
