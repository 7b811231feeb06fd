//! The gate: every request outside `/_keyward/` is checked here, then forwarded or refused.
//! A browser's request (one with `Origin`) also gets the policy's CORS treatment (`core::cors`).

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{
    web_sys, AbortController, Context, Delay, Env, Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Response,
    Result,
};

use super::cache;
use super::reply;
use super::store::{self, Store, SyncPlan, SyncSettings};
use super::usage;
use crate::core::cache::Lookup;
use crate::core::cors::{self, Preflight};
use crate::core::credential::{find_credential, strip_api_key, Credential, CredentialSource};
use crate::core::decision::MAX_INSPECTED_BODY;
use crate::core::digest::key_digest;
use crate::core::key::parse_key;
use crate::core::method::{resolve_override, strip_override_param, OVERRIDE_HEADERS};
use crate::core::decision::decide_found;
use crate::core::{CompiledKey, Code, GateRequest};

/// The Rate Limiting binding (wrangler.toml `[[ratelimits]]`) that counts unknown-key reads per
/// client across the location, and its window (`simple.period`, 10 s).
const UNKNOWN_KEY_LIMITER: &str = "UNKNOWN_KEY_LIMITER";
const UNKNOWN_KEY_WINDOW_MS: i64 = 10_000;

/// `ORIGIN_TIMEOUT_MS` when not set in wrangler.toml.
const DEFAULT_ORIGIN_TIMEOUT_MS: u32 = 30_000;

thread_local! {
    /// Vars do not change within an isolate: read once.
    static ORIGIN_TIMEOUT_MS: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Works on the runtime's own request object: wrapping it in `worker::Request` would read the
/// request's `cf` properties on every request, which the gate never uses.
pub async fn handle(req: web_sys::Request, method: Method, url: worker::Url, env: &Env, ctx: &Context) -> Result<Response> {
    let now = super::now_ms();
    // The change feed: read in the background while traffic flows, before answering when this
    // isolate is new or was idle (FRESHNESS), and never trusted past MAX_STALENESS_MS.
    let settings = SyncSettings::from_env(env);
    match store::sync_plan(now, settings) {
        SyncPlan::Current => {}
        SyncPlan::Background => {
            let env = env.clone();
            ctx.wait_until(async move { background(&env).await });
        }
        SyncPlan::Inline => {
            store::count_inline();
            let _ = store::sync(env, store::SyncMode::Inline).await;
        }
    }
    if store::too_stale(super::now_ms(), settings) {
        return deny(Code::StoreUnavailable, "the key store has not been reachable for too long");
    }
    // Only browsers send Origin; every other request goes straight to the key check.
    let Some(origin) = req.headers().get("origin").ok().flatten() else {
        return check(req, method, url, env, ctx, now).await;
    };
    let policy = match Store::open(env) {
        Ok(store) => store.policy(now).await.ok(),
        Err(_) => None,
    };
    let Some(policy) = policy else {
        return deny(Code::StoreUnavailable, "the route policy is unavailable");
    };
    let asked = req.headers().get("access-control-request-method").ok().flatten();
    match cors::preflight(&policy, method.as_ref(), url.path(), Some(&origin), asked.as_deref()) {
        Preflight::NotPreflight => {}
        Preflight::PassThrough => {
            let headers = Headers(req.headers()).clone();
            drop_client_identity(&headers)?;
            return forward(&req, method, &url, env, headers, (false, false), None).await.0;
        }
        Preflight::Answer { status, code, message, headers } => {
            let answer = if status == 204 { Response::empty()?.with_status(204) } else { reply::error(status, code.as_str(), &message)? };
            return with_headers(answer, &headers);
        }
    }
    let response = check(req, method, url, env, ctx, now).await?;
    with_headers(response, &cors::response_headers(&policy, Some(&origin)))
}

/// Sets the CORS `headers` on a response, in place of any CORS headers it had; none (no `cors` in
/// the policy) leaves it untouched. A fetched response's headers are immutable, so on a copy.
fn with_headers(response: Response, headers: &[cors::Header]) -> Result<Response> {
    if headers.is_empty() {
        return Ok(response);
    }
    let copy = response.headers().clone();
    for name in cors::OWNED_HEADERS {
        copy.delete(name)?;
    }
    for (name, value) in headers {
        match (*name, copy.get(name)?) {
            ("vary", Some(vary)) if vary.split(',').any(|v| v.trim().eq_ignore_ascii_case(value)) => {}
            ("vary", Some(vary)) => copy.set(name, &format!("{vary}, {value}"))?,
            _ => copy.set(name, value)?,
        }
    }
    Ok(response.with_headers(copy))
}

/// After a KV read found no key (charged to the client's budget in this isolate): the isolate's
/// bucket bounds this isolate; the Rate Limiting binding counts across the location, after the
/// answer, and shuts the client out here when it is past. Both paths run it in `waitUntil`.
pub(crate) async fn count_unknown_read(env: &Env, ip: Option<&str>) {
    if let Ok(limiter) = env.rate_limiter(UNKNOWN_KEY_LIMITER) {
        let outcome = limiter.limit(cache::client_name(ip)).await;
        if outcome.is_ok_and(|o| !o.success) {
            cache::shut_out(ip, super::now_ms(), UNKNOWN_KEY_WINDOW_MS);
        }
    }
}

/// Whether a known key's requests may be answered by the fast path (`super::fast`). Anything
/// that needs more than the isolate's memory and the request's plain facts goes to the complete
/// path: an `origin_allowlist` (decided on `Origin`/`Referer`, which the fast path does not read).
/// A key with a `ratelimit` or `credits` needs its Limiter (a Durable Object call) on every
/// allowed request: the complete path's last check ([`super::limits::admit`]).
pub(crate) fn fast_path_eligible(key: &CompiledKey) -> bool {
    key.origin_allowlist.is_empty() && !key.record.is_limited()
}

/// Every answer to a request that names a known key, allowed or refused, on either path, passes
/// through here once, with the code it is answered with (`Code::Valid` when forwarded).
/// Returns whether background work is due (the caller then runs [`background`] in `waitUntil`).
/// Usage: the outcome is counted for the key, and a flusher is asked for when none runs.
pub(crate) fn settle(key: &CompiledKey, code: Code, now_ms: i64) -> bool {
    usage::record(&key.record.id, code, now_ms);
    usage::flush_due(now_ms)
}

/// The work a request leaves for after its answer (in `waitUntil`): the change feed's read when
/// it is due, and the usage flusher when counts wait and none runs.
pub(crate) async fn background(env: &Env) {
    // Asked for by usage alone, the feed is read only if it is due anyway.
    let due = SyncSettings::cached().is_none_or(|s| store::sync_plan(super::now_ms(), s) != SyncPlan::Current);
    if due {
        let _ = store::sync(env, store::SyncMode::Background).await;
    }
    usage::flush_in_background(env).await;
}

/// The key check, then the forward or the denial.
async fn check(req: web_sys::Request, method: Method, url: worker::Url, env: &Env, ctx: &Context, now: i64) -> Result<Response> {
    // A copy: the incoming request's headers are immutable, and this copy is what is forwarded.
    let headers = Headers(req.headers()).clone();
    let client_ip = headers.get("cf-connecting-ip")?;
    let authorization = headers.get("authorization")?;
    // A token (contract section 15) in place of a key: its signature and times are checked
    // without any read, then its key is found by the digest it carries.
    if let Some(raw) = crate::core::token::bearer_token(authorization.as_deref()) {
        let claims = match super::tokens::claims(env, raw, headers.get("x-api-key")?.as_deref(), url.query(), now).await {
            Ok(c) => c,
            Err(super::tokens::Refused::Token(code, message)) => return deny(code, &message),
            Err(super::tokens::Refused::Store) => return deny(Code::StoreUnavailable, "the signing keys are unavailable"),
        };
        let store = match Store::open(env) {
            Ok(s) => s,
            Err(_) => return deny(Code::StoreUnavailable, "the key store is unavailable"),
        };
        let key = match store.key(&claims.kwd, now).await {
            Err(_) => return deny(Code::StoreUnavailable, "the key store is unavailable"),
            Ok(None) => return deny(Code::TokenInvalid, super::tokens::KEY_GONE),
            Ok(Some(key)) => key,
        };
        if let Some((code, message)) = super::tokens::judge(&claims, &key) {
            return settled(&key, deny(code, message), code, env, ctx, now);
        }
        let key = super::tokens::as_token_key(&claims, key);
        let credential = Credential { key: String::new(), workspace: None, sources: vec![CredentialSource::Bearer] };
        return decided(req, method, url, env, ctx, now, Checked { headers, client_ip, credential, key, store, token_id: Some(claims.jti.clone()) }).await;
    }
    let credential = match find_credential(
        authorization.as_deref(),
        headers.get("x-api-key")?.as_deref(),
        url.query(),
    ) {
        Err(e) => return deny(Code::BadRequest, &e.message),
        Ok(None) => return deny(Code::MissingKey, NO_KEY),
        Ok(Some(c)) => c,
    };
    // The checksum turns away typos and garbage before any KV read.
    if let Err(e) = parse_key(&credential.key) {
        return deny(Code::MalformedKey, &malformed_key(e));
    }
    let digest = key_digest(&credential.key);
    let store = match Store::open(env) {
        Ok(s) => s,
        Err(_) => return deny(Code::StoreUnavailable, "the key store is unavailable"),
    };
    // Anyone can make well-formed keys, so the KV reads that find none are bounded per client:
    // a client past its bound gets no KV read for a key the cache does not hold.
    let miss = matches!(store.cached_key(&digest, now), Lookup::Miss);
    if miss {
        if let Some(seconds) = cache::unknown_read_retry_after(client_ip.as_deref(), now) {
            let response = deny(Code::RateLimited, TOO_MANY_UNKNOWN_KEYS)?;
            response.headers().set("retry-after", &seconds.to_string())?;
            return Ok(response);
        }
    }
    let key = match store.key(&digest, now).await {
        Err(_) => return deny(Code::StoreUnavailable, "the key store is unavailable"),
        Ok(None) => {
            if miss {
                cache::charge_unknown_read(client_ip.as_deref(), now);
                let env = env.clone();
                let ip = client_ip.clone();
                ctx.wait_until(async move { count_unknown_read(&env, ip.as_deref()).await });
            }
            return deny(Code::UnknownKey, UNKNOWN_KEY);
        }
        Ok(Some(key)) => key,
    };
    decided(req, method, url, env, ctx, now, Checked { headers, client_ip, credential, key, store, token_id: None }).await
}

/// What the credential check found: the request's headers (a copy, to forward), the client's
/// address, the credential (for a token: Bearer, no workspace), its key, and the token's id.
struct Checked {
    headers: Headers,
    client_ip: Option<String>,
    credential: Credential,
    key: Rc<CompiledKey>,
    store: Store,
    token_id: Option<String>,
}

/// The key's rules on the request, then the forward or the denial.
async fn decided(req: web_sys::Request, method: Method, url: worker::Url, env: &Env, ctx: &Context, now: i64, checked: Checked) -> Result<Response> {
    let Checked { headers, client_ip, credential, key, store, token_id } = checked;
    let policy = match store.policy(now).await {
        Ok(p) => p,
        Err(_) => {
            let answer = deny(Code::StoreUnavailable, "the route policy is unavailable");
            return settled(&key, answer, Code::StoreUnavailable, env, ctx, now);
        }
    };
    // The method the origin will act on: the request's own, unless an override header or a
    // `_method` parameter says otherwise and the policy honours it.
    let [a, b, c] = OVERRIDE_HEADERS;
    let overrides = [headers.get(a)?, headers.get(b)?, headers.get(c)?];
    let resolved = match resolve_override(
        policy.method_override(),
        method.as_ref(),
        [overrides[0].as_deref(), overrides[1].as_deref(), overrides[2].as_deref()],
        url.query(),
    ) {
        Err(e) => return settled(&key, deny(Code::BadRequest, &e.message), Code::BadRequest, env, ctx, now),
        Ok(r) => r,
    };
    let method = match &resolved {
        Some(r) => Method::from(r.method.clone()),
        None => method,
    };
    let method_name = method.to_string();
    let path = url.path().to_string();
    // The route is looked up once: here, to know whether the body is read, and decided on below.
    let found = policy.find(&method_name, &path);
    let needs_body = matches!(&found, Ok(Some(m)) if m.rule.needs_body());
    let body = if needs_body {
        let declared = headers
            .get("content-length")?
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        match read_inspected_body(&req, declared).await {
            Ok(bytes) => Some(bytes),
            Err(BodyError::TooLarge) => {
                let answer = deny(Code::BadRequest, TOO_LARGE_BODY);
                return settled(&key, answer, Code::BadRequest, env, ctx, now);
            }
            Err(BodyError::Unreadable) => {
                return settled(&key, deny(Code::BadRequest, UNREADABLE_BODY), Code::BadRequest, env, ctx, now)
            }
        }
    } else {
        None
    };
    let (origin, referer) = (headers.get("origin")?, headers.get("referer")?);
    let decision = decide_found(
        &key,
        found,
        &GateRequest {
            method: &method_name,
            path: &path,
            client_ip: client_ip.as_deref(),
            body: body.as_deref(),
            basic_workspace: credential.workspace.as_deref(),
            origin: origin.as_deref(),
            referer: referer.as_deref(),
        },
        now,
    );
    if !decision.valid {
        return settled(&key, deny(decision.code, &decision.message), decision.code, env, ctx, now);
    }
    // The copy of the client's headers made above (one JavaScript call), less what must go:
    // the credential, the Host of this Worker and any X-Keyward-* the client made up.
    let forwarded = headers;
    drop_client_identity(&forwarded)?;
    if credential.has(CredentialSource::Bearer) || credential.has(CredentialSource::Basic) {
        forwarded.delete("authorization")?;
    }
    if credential.has(CredentialSource::Header) {
        forwarded.delete("x-api-key")?;
    }
    if resolved.is_some() {
        for name in OVERRIDE_HEADERS {
            forwarded.delete(name)?;
        }
    }
    forwarded.set("x-keyward-key-id", &key.record.id)?;
    forwarded.set("x-keyward-key-type", key.record.key_type.as_str())?;
    if let Some(jti) = &token_id {
        forwarded.set(super::tokens::TOKEN_ID_HEADER, jti)?;
    }
    if let Some(profile) = &key.record.profile_id {
        forwarded.set("x-keyward-profile-id", profile)?;
    }
    // Last: the key's rate limit and credits (no call at all for a key with neither).
    let admitted = super::limits::admit(env, &key.record, super::limits::cost(&policy, decision.rule), &forwarded).await?;
    if super::lease::background_due() {
        let env = env.clone();
        ctx.wait_until(async move { super::lease::background(&env).await });
    }
    let fields = match admitted {
        super::limits::Admit::Refuse((code, refused)) => return settled(&key, Ok(refused), code, env, ctx, now),
        super::limits::Admit::Forward(fields) => fields,
    };
    let strip = (credential.has(CredentialSource::Query), resolved.as_ref().is_some_and(|r| r.strip_param));
    let (response, code) = forward(&req, method, &url, env, forwarded, strip, body).await;
    // Counted under the answer the client got: VALID, or the gate's 502/504 when the origin failed.
    let response = settled(&key, response, code, env, ctx, now)?;
    if fields.is_empty() {
        return Ok(response);
    }
    // The key's RateLimit-Policy / RateLimit fields on every answer, added to the origin's own.
    let headers = response.headers().clone();
    for (name, value) in &fields {
        headers.append(name, value)?;
    }
    Ok(response.with_headers(headers))
}

/// The Host of this Worker and any X-Keyward-* the client made up never reach the origin.
fn drop_client_identity(headers: &Headers) -> Result<()> {
    headers.delete("host")?;
    for name in ["x-keyward-key-id", "x-keyward-key-type", "x-keyward-profile-id", super::limits::CREDITS_HEADER, super::tokens::TOKEN_ID_HEADER] {
        headers.delete(name)?;
    }
    Ok(())
}

/// Sends the request on to the origin with `forwarded` as its headers (and `body`, when it was
/// read for the check); `strip` says whether the query loses its `api_key` (the credential came
/// there) and its `_method` (an override the policy strips or honours).
async fn forward(
    req: &web_sys::Request,
    method: Method,
    url: &worker::Url,
    env: &Env,
    forwarded: Headers,
    (key_in_query, strip_override): (bool, bool),
    body: Option<Vec<u8>>,
) -> (Result<Response>, Code) {
    let answer = forward_to_origin(req, method, url, env, forwarded, (key_in_query, strip_override), body).await;
    match answer {
        Ok(Ok(response)) => (Ok(response), Code::Valid),
        Ok(Err(Code::OriginTimeout)) => {
            let message = format!("the origin did not answer within {} ms", origin_timeout_ms(env));
            (deny(Code::OriginTimeout, &message), Code::OriginTimeout)
        }
        Ok(Err(_)) => (deny(Code::OriginUnavailable, "the origin could not be reached"), Code::OriginUnavailable),
        Err(e) => (Err(e), Code::OriginUnavailable),
    }
}

/// The origin's answer, or the code of the gate's own (`ORIGIN_UNREACHABLE`, `ORIGIN_TIMEOUT`).
async fn forward_to_origin(
    req: &web_sys::Request,
    method: Method,
    url: &worker::Url,
    env: &Env,
    forwarded: Headers,
    (key_in_query, strip_override): (bool, bool),
    body: Option<Vec<u8>>,
) -> Result<std::result::Result<Response, Code>> {
    let origin = env.var("ORIGIN_URL")?.to_string();
    let mut target = format!("{}{}", origin.trim_end_matches('/'), url.path());
    if let Some(query) = url.query() {
        let mut query = if key_in_query { strip_api_key(query) } else { query.to_string() };
        if strip_override {
            query = strip_override_param(&query);
        }
        if !query.is_empty() {
            target.push('?');
            target.push_str(&query);
        }
    }
    let mut init = RequestInit::new();
    let forwards_body = !matches!(method, Method::Get | Method::Head);
    init.with_method(method).with_headers(forwarded).with_redirect(RequestRedirect::Manual);
    if forwards_body {
        match body {
            Some(bytes) => {
                init.with_body(Some(js_sys::Uint8Array::from(bytes.as_slice()).into()));
            }
            None => {
                if let Some(stream) = req.body() {
                    init.with_body(Some(stream.into()));
                }
            }
        }
    }
    let outbound = Request::new_with_init(&target, &init)?;
    // The wait for the origin's answer is bounded; the request is never sent twice, so a
    // request that is not idempotent cannot be repeated by the gate.
    let timeout_ms = origin_timeout_ms(env);
    let controller = AbortController::default();
    let signal = controller.signal();
    let sent = Fetch::Request(outbound);
    let mut answer = pin!(sent.send_with_signal(&signal));
    let mut timer = pin!(Delay::from(Duration::from_millis(u64::from(timeout_ms))));
    let outcome = poll_fn(|cx| {
        if let Poll::Ready(result) = answer.as_mut().poll(cx) {
            return Poll::Ready(Some(result));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await;
    match outcome {
        Some(Ok(response)) => Ok(Ok(response)),
        Some(Err(_)) => Ok(Err(Code::OriginUnavailable)),
        None => {
            // Only when the wait is over: aborting an answer that arrived would cut its body.
            controller.abort();
            Ok(Err(Code::OriginTimeout))
        }
    }
}

pub(crate) fn origin_timeout_ms(env: &Env) -> u32 {
    ORIGIN_TIMEOUT_MS.with(|cell| {
        cell.get().unwrap_or_else(|| {
            let ms = env
                .var("ORIGIN_TIMEOUT_MS")
                .ok()
                .and_then(|v| v.to_string().trim().parse::<u32>().ok())
                .filter(|ms| *ms > 0)
                .unwrap_or(DEFAULT_ORIGIN_TIMEOUT_MS);
            cell.set(Some(ms));
            ms
        })
    })
}

enum BodyError {
    TooLarge,
    Unreadable,
}

/// How much of a refused body is still read and thrown away (never copied into the isolate's
/// memory) so that the answer goes back on a connection in good order; past it, the rest is
/// abandoned and the runtime may have to drop the connection.
const MAX_DISCARDED_BODY: usize = 1024 * 1024;

/// Reads a body the gate must inspect chunk by chunk, and stops at the first chunk that would
/// take it past the limit: a body without a Content-Length (chunked) is never held whole, and one
/// that declares more than the limit is refused before any of it is kept.
async fn read_inspected_body(req: &web_sys::Request, declared: usize) -> std::result::Result<Vec<u8>, BodyError> {
    let Some(stream) = req.body() else {
        return Ok(Vec::new());
    };
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    if declared > MAX_INSPECTED_BODY {
        discard(&reader, MAX_DISCARDED_BODY).await;
        return Err(BodyError::TooLarge);
    }
    let mut bytes: Vec<u8> = Vec::new();
    loop {
        let Some(chunk) = next_chunk(&reader).await? else {
            return Ok(bytes);
        };
        let start = bytes.len();
        let end = start.saturating_add(chunk.length() as usize);
        if end > MAX_INSPECTED_BODY {
            discard(&reader, MAX_DISCARDED_BODY.saturating_sub(chunk.length() as usize)).await;
            return Err(BodyError::TooLarge);
        }
        bytes.resize(end, 0);
        if let Some(into) = bytes.get_mut(start..end) {
            chunk.copy_to(into);
        }
    }
}

async fn next_chunk(reader: &web_sys::ReadableStreamDefaultReader) -> std::result::Result<Option<js_sys::Uint8Array>, BodyError> {
    let step = JsFuture::from(reader.read()).await.map_err(|_| BodyError::Unreadable)?;
    let done = js_sys::Reflect::get(&step, &"done".into()).map_err(|_| BodyError::Unreadable)?;
    if done.is_truthy() {
        return Ok(None);
    }
    let value = js_sys::Reflect::get(&step, &"value".into()).map_err(|_| BodyError::Unreadable)?;
    value.dyn_into().map(Some).map_err(|_| BodyError::Unreadable)
}

/// Reads and drops at most `budget` more bytes; a body longer than that is abandoned. The lock
/// is released rather than the stream cancelled: workerd then still sends the answer, where a
/// cancel often resets the connection before the client has read it.
async fn discard(reader: &web_sys::ReadableStreamDefaultReader, budget: usize) {
    let mut left = budget;
    while let Ok(Some(chunk)) = next_chunk(reader).await {
        match left.checked_sub(chunk.length() as usize) {
            Some(rest) => left = rest,
            None => break,
        }
    }
    reader.release_lock();
}

/// A refusal of a request naming a known key: through [`settle`] first.
fn settled(key: &CompiledKey, answer: Result<Response>, code: Code, env: &Env, ctx: &Context, now: i64) -> Result<Response> {
    if settle(key, code, now) {
        let env = env.clone();
        ctx.wait_until(async move { background(&env).await });
    }
    answer
}

/// The refusals both paths give in the same words (`super::fast` answers them too).
pub(crate) const NO_KEY: &str = "no API key was sent (use Authorization: Bearer <key>)";
pub(crate) const UNKNOWN_KEY: &str = "the API key is not known";
pub(crate) const TOO_MANY_UNKNOWN_KEYS: &str = "too many unknown API keys from this address; retry later";
pub(crate) fn malformed_key(error: impl std::fmt::Display) -> String {
    format!("the API key is malformed: {error}")
}
pub(crate) const UNREADABLE_BODY: &str = "the request body could not be read";
pub(crate) const TOO_LARGE_BODY: &str = "the request body is larger than 256 KiB and cannot be inspected";

fn deny(code: Code, message: &str) -> Result<Response> {
    reply::error(code.status(), code.as_str(), message)
}
