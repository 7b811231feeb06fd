//! The gate's last check: a key's rate limit and credits, decided by its Limiter Durable Object
//! after every other check has allowed the request. A key with neither attribute costs nothing
//! here: no call is made.

use std::future::Future;
use std::pin::Pin;

use worker::{Env, Headers, Method, Request, RequestInit, Response, Result};

use super::limiter::{Counts, LimitRequest};
use super::reply;
use crate::core::limits::{limit_message, ratelimit_headers, Admission};
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
    let mut response = stub.fetch_with_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status_code();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("the limiter answered {status}: {text}"));
    }
    Ok(text)
}

/// The request to send a key's Limiter, or `None` when the key has neither attribute.
pub fn limit_request(record: &KeyRecord, cost: u64) -> Option<LimitRequest> {
    record.is_limited().then_some(LimitRequest { ratelimit: record.ratelimit, credits: record.credits, cost, ..LimitRequest::default() })
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

/// Checks and spends for an allowed request: `Ok(None)` to forward it (with the credits left set
/// on `forwarded`), `Ok(Some((code, answer)))` to refuse it. A Limiter that cannot be reached
/// refuses (fail closed): limits and credits are promises, not hints.
pub async fn admit(env: &Env, record: &KeyRecord, cost: u64, forwarded: &Headers) -> Result<Option<Refused>> {
    let Some(request) = limit_request(record, cost) else {
        return Ok(None);
    };
    // Boxed: the gate's own future stays as small as it was for keys without limits.
    let limited: Pin<Box<dyn Future<Output = Result<Option<Refused>>> + '_>> = Box::pin(admit_limited(env, record, request, forwarded));
    limited.await
}

async fn admit_limited(env: &Env, record: &KeyRecord, request: LimitRequest, forwarded: &Headers) -> Result<Option<Refused>> {
    let answer = call(env, record.limiter_name(), "check", request.encode()).await;
    let admission = match answer.and_then(|a| Admission::decode(&a).ok_or_else(|| "the limiter's answer was not understood".into())) {
        Ok(a) => a,
        Err(e) => {
            worker::console_error!("keyward: the limiter of {} could not be reached: {}", record.id, e);
            let message = "the rate limit and credit store (Limiter) could not be reached; the request was not forwarded";
            return Ok(Some((Code::StoreUnavailable, reply::error(503, Code::StoreUnavailable.as_str(), message)?)));
        }
    };
    if admission.code == Code::Valid {
        if let Some(remaining) = admission.credits_remaining {
            forwarded.set(CREDITS_HEADER, &remaining.to_string())?;
        }
        return Ok(None);
    }
    let response = reply::error(admission.code.status(), admission.code.as_str(), limit_message(admission.code))?;
    if admission.retry_after_seconds > 0 {
        response.headers().set("retry-after", &admission.retry_after_seconds.to_string())?;
    }
    if let Some(rate) = &admission.rate {
        for (name, value) in ratelimit_headers(rate) {
            response.headers().set(name, &value)?;
        }
    }
    Ok(Some((admission.code, response)))
}
