//! The Cloudflare Worker face: routes each request to the gate, the management API or the console.

mod admin;
mod cache;
mod control;
mod fast;
mod gate;
mod lease;
mod leaks;
mod ledger;
mod limiter;
mod limits;
mod reply;
mod store;
mod tokens;
mod usage;
mod webhooks;

use worker::{event, web_sys, Context, Env, Request, Response, Result};

pub(crate) fn now_ms() -> i64 {
    i64::try_from(worker::Date::now().as_millis()).unwrap_or(i64::MAX)
}

/// CSPRNG bytes from the platform (crypto.getRandomValues through getrandom's JS backend).
pub(crate) fn random_bytes<const N: usize>() -> std::result::Result<[u8; N], String> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> Result<Response> {
    // The worker crate reads any method it does not know as GET; refuse those instead.
    let raw_method = req.method();
    let known = worker::Method::all().iter().any(|m| m.as_ref() == raw_method);
    // The URL is parsed once per request and handed on.
    let url = worker::Url::parse(&req.url())?;
    let path = url.path();
    if !known {
        let message = format!("the method {raw_method} is not supported");
        if !path.starts_with("/_keyward/") {
            return reply::error(400, "BAD_REQUEST", &message);
        }
        let allow = match path.strip_prefix("/_keyward/v1/") {
            Some(rest) => admin::allowed_methods(&rest.split('/').collect::<Vec<_>>()),
            None if path == leaks::PATH => "POST",
            None => "GET",
        };
        let response = reply::error(405, "METHOD_NOT_ALLOWED", &message)?;
        response.headers().set("allow", allow)?;
        return Ok(response);
    }
    if path == "/_keyward" || path.starts_with("/_keyward/") {
        if path == "/_keyward/console" {
            let mut url = url.clone();
            url.set_path("/_keyward/console/");
            return reply::console_file(Response::redirect(url)?);
        }
        if let Some(rest) = path.strip_prefix("/_keyward/console/") {
            return match asset(&Request::from(req), &env, "", rest).await? {
                Some(file) => reply::console_file(file),
                None => reply::error(404, "NOT_FOUND", "no such console file"),
            };
        }
        if let Some(rest) = path.strip_prefix("/_keyward/v1/") {
            return management(req, &env, rest).await;
        }
        if path == leaks::PATH {
            return leaks::forward(Request::from(req), &env).await;
        }
        if path == "/_keyward/portal" {
            let mut url = url.clone();
            url.set_path("/_keyward/portal/");
            return reply::portal_file(Response::redirect(url)?, &env);
        }
        if let Some(rest) = path.strip_prefix("/_keyward/portal/") {
            // The link's exchange and the session's API live in the control plane; the page's
            // files are static.
            if rest.starts_with("api/") || (rest.is_empty() && url.query_pairs().any(|(k, _)| k == "link")) {
                return forward(Request::from(req), &env, MANAGEMENT_BODY).await;
            }
            return match asset(&Request::from(req), &env, "portal/", rest).await? {
                Some(file) => reply::portal_file(file, &env),
                None => reply::error(404, "NOT_FOUND", "no such portal file"),
            };
        }
        if path == "/_keyward/jwks.json" {
            return tokens::jwks(&worker::Method::from(raw_method), &env).await;
        }
        // Tests only: production never sets KEYWARD_DEBUG, so this is a 404 there.
        if path == "/_keyward/debug/token-clock" && env.var("KEYWARD_DEBUG").is_ok() {
            return tokens::debug_clock(&url);
        }
        // Tests only: production never sets KEYWARD_TEST_NOW_MS, so this is a 404 there.
        if (path == "/_keyward/debug/clock" || path == "/_keyward/debug/limiter-rows") && env.var("KEYWARD_TEST_NOW_MS").is_ok() {
            return limiter_debug(&url, &env).await;
        }
        // Test harnesses only: production never sets KEYWARD_DEBUG, so this is a 404 there.
        if path == "/_keyward/debug/neighbour" && env.var("KEYWARD_DEBUG").is_ok() {
            return match store::neighbour_read(&env).await {
                Ok(()) => reply::success(200, serde_json::json!({"shared": true})),
                Err(e) => reply::error(503, "STORE_UNAVAILABLE", &e.0),
            };
        }
        if path == "/_keyward/debug/stats" && env.var("KEYWARD_DEBUG").is_ok() {
            let mut stats = cache::stats();
            if let Some(map) = stats.as_object_mut() {
                map.insert("usage".into(), usage::stats());
                map.insert("feed".into(), store::feed_stats());
                map.insert("lease".into(), lease::stats());
            }
            return reply::success(200, stats);
        }
        return reply::error(404, "NOT_FOUND", "no such keyward endpoint");
    }
    let method = worker::Method::from(raw_method);
    gate::handle(req, method, url, &env, &ctx).await
}

/// The management API: `ping` and the OpenAPI document here, everything else in the control
/// plane, which holds the source of truth. After a change, this isolate reads the change feed at
/// once, so the next request it gates sees the change.
async fn management(req: web_sys::Request, env: &Env, rest: &str) -> Result<Response> {
    let request = Request::from(req);
    match rest {
        "ping" if request.method() == worker::Method::Get => return admin::ping(&request, env, now_ms()).await,
        "openapi.json" if request.method() == worker::Method::Get => return admin::openapi(env).await,
        "auth/token" | "auth/refresh" | "auth/simple" => return tokens::auth(request, env, rest).await,
        _ => {}
    }
    forward(request, env, MANAGEMENT_BODY).await
}

/// How large a body `forward` takes, and how it refuses a larger one.
pub(crate) struct BodyLimit {
    pub bytes: usize,
    pub status: u16,
    pub code: &'static str,
}

/// The management API's and the portal's limit (400, as the control plane itself answers).
const MANAGEMENT_BODY: BodyLimit = BodyLimit { bytes: admin::MAX_BATCH_BODY_BYTES, status: 400, code: "BAD_REQUEST" };

/// Hands a request to the control plane (the management API, the portal's API, leak reports),
/// then, after a change, reads the change feed. A body over `limit` (declared or read) is refused
/// here.
pub(crate) async fn forward(mut request: Request, env: &Env, limit: BodyLimit) -> Result<Response> {
    let writes = request.method() != worker::Method::Get;
    let stub = match store::control_stub(env) {
        Ok(stub) => stub,
        Err(_) => return reply::error(503, "STORE_UNAVAILABLE", "the key store is unavailable"),
    };
    // The body is read here, whole, before it goes on: a request stream the control plane left
    // unread (it refuses bad tokens before reading) would fail after the answer was sent.
    let forwarded = if matches!(request.method(), worker::Method::Get | worker::Method::Head) {
        request
    } else {
        let too_big = || reply::error(limit.status, limit.code, &format!("body: must be at most {} bytes", limit.bytes));
        let declared = request.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit.bytes) {
            return too_big();
        }
        let body = request.bytes().await.unwrap_or_default();
        if body.len() > limit.bytes {
            return too_big();
        }
        let mut init = worker::RequestInit::new();
        init.with_method(request.method()).with_headers(request.headers().clone());
        if !body.is_empty() {
            init.with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
        }
        Request::new_with_init(request.url()?.as_str(), &init)?
    };
    store::remote_delay(env).await;
    let response = match stub.fetch_with_request(forwarded).await {
        // An answer that is not the control plane's own envelope is the runtime's (the object
        // could not be reached or was reset): the store is unavailable.
        Ok(response) if response.status_code() < 500 || is_json(&response) => response,
        _ => return reply::error(503, "STORE_UNAVAILABLE", "the key store is unavailable"),
    };
    if writes && response.status_code() < 300 {
        let _ = store::sync(env, store::SyncMode::Force).await;
    }
    Ok(response)
}

/// Sets the test clock of one Limiter (`clock?limiter=<key id>&now_ms=<Unix ms>`), or says how
/// many rows it holds (`limiter-rows?limiter=<key id>`).
async fn limiter_debug(url: &worker::Url, env: &Env) -> Result<Response> {
    let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.to_string());
    let Some(name) = param("limiter") else {
        return reply::error(400, "BAD_REQUEST", "limiter is required");
    };
    if url.path().ends_with("limiter-rows") {
        return match limits::call(env, &name, "rows", String::new()).await.map(|t| crate::core::limits::decode_fields::<2>(&t)) {
            Ok(Some([hits, credits])) => reply::success(200, serde_json::json!({"hits": hits, "credits": credits})),
            Ok(None) => reply::error(503, "STORE_UNAVAILABLE", "the limiter's rows were not understood"),
            Err(e) => reply::error(503, "STORE_UNAVAILABLE", &e),
        };
    }
    let Some(now) = param("now_ms").and_then(|v| v.parse::<i64>().ok()) else {
        return reply::error(400, "BAD_REQUEST", "limiter and now_ms are required");
    };
    match limits::call(env, &name, "clock", now.to_string()).await {
        Ok(_) => reply::success(200, serde_json::json!({"now_ms": now})),
        Err(e) => reply::error(503, "STORE_UNAVAILABLE", &e),
    }
}

fn is_json(response: &Response) -> bool {
    response.headers().get("content-type").ok().flatten().is_some_and(|t| t.starts_with("application/json"))
}

/// A static file from the assets binding: the console's (www/, `folder` "") or the portal's
/// (www/portal/, `folder` "portal/"); `None`: there is no such file. The Worker runs first for
/// every path, so assets are reachable only here, never in place of the gate.
async fn asset(req: &Request, env: &Env, folder: &str, rest: &str) -> Result<Option<Response>> {
    let mut url = req.url()?;
    let file = if rest.is_empty() { "index.html" } else { rest };
    url.set_path(&format!("/{folder}{file}"));
    url.set_query(None);
    let response = env.assets("ASSETS")?.fetch(url.to_string(), None).await?;
    Ok((response.status_code() != 404).then_some(response))
}
