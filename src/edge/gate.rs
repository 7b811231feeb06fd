//! The gate: every request outside `/_keyward/` is checked here, then forwarded or refused.

use worker::wasm_bindgen_futures::JsFuture;
use worker::{web_sys, Context, Env, Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Response, Result};

use super::reply;
use super::store::{self, Store, SyncPlan, SyncSettings};
use crate::core::credential::{find_credential, strip_api_key, CredentialSource};
use crate::core::decision::MAX_INSPECTED_BODY;
use crate::core::digest::key_digest;
use crate::core::key::parse_key;
use crate::core::{decide, Code, GateRequest};

/// Works on the runtime's own request object: wrapping it in `worker::Request` would read the
/// request's `cf` properties on every request, which the gate never uses.
pub async fn handle(req: web_sys::Request, method: Method, url: worker::Url, env: &Env, ctx: &Context) -> Result<Response> {
    let now = super::now_ms();
    // The change feed: read in the background while traffic flows, before answering when this
    // isolate is new or was idle, and never trusted past MAX_STALENESS_MS.
    let settings = SyncSettings::from_env(env);
    match store::sync_plan(now, settings) {
        SyncPlan::Current => {}
        SyncPlan::Background => {
            let env = env.clone();
            ctx.wait_until(async move {
                let _ = store::sync(&env, false).await;
            });
        }
        SyncPlan::Inline => {
            let _ = store::sync(env, false).await;
        }
    }
    if store::too_stale(super::now_ms(), settings) {
        return deny(Code::StoreUnavailable, "the key store has not been reachable for too long");
    }
    // A copy: the incoming request's headers are immutable, and this copy is what is forwarded.
    let headers = Headers(req.headers()).clone();
    let credential = match find_credential(
        headers.get("authorization")?.as_deref(),
        headers.get("x-api-key")?.as_deref(),
        url.query(),
    ) {
        Err(e) => return deny(Code::BadRequest, &e.message),
        Ok(None) => return deny(Code::MissingKey, "no API key was sent (use Authorization: Bearer <key>)"),
        Ok(Some(c)) => c,
    };
    // The checksum turns away typos and garbage before any KV read.
    if let Err(e) = parse_key(&credential.key) {
        return deny(Code::MalformedKey, &format!("the API key is malformed: {e}"));
    }
    let digest = key_digest(&credential.key);
    let store = match Store::open(env) {
        Ok(s) => s,
        Err(_) => return deny(Code::StoreUnavailable, "the key store is unavailable"),
    };
    let key = match store.key(&digest, now).await {
        Err(_) => return deny(Code::StoreUnavailable, "the key store is unavailable"),
        Ok(None) => return deny(Code::UnknownKey, "the API key is not known"),
        Ok(Some(key)) => key,
    };
    let policy = match store.policy(now).await {
        Ok(p) => p,
        Err(_) => return deny(Code::StoreUnavailable, "the route policy is unavailable"),
    };
    let method_name = method.to_string();
    let path = url.path().to_string();
    let needs_body = matches!(policy.find(&method_name, &path), Ok(Some(m)) if m.rule.needs_body());
    let body = if needs_body {
        let declared = headers
            .get("content-length")?
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if declared > MAX_INSPECTED_BODY {
            return deny(Code::BadRequest, "the request body is larger than 256 KiB and cannot be inspected");
        }
        // An unreadable body is read as empty, which the decision answers with a 400.
        let bytes = match req.array_buffer() {
            Ok(promise) => JsFuture::from(promise).await.map(|b| js_sys::Uint8Array::new(&b).to_vec()).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if bytes.len() > MAX_INSPECTED_BODY {
            return deny(Code::BadRequest, "the request body is larger than 256 KiB and cannot be inspected");
        }
        Some(bytes)
    } else {
        None
    };
    let client_ip = headers.get("cf-connecting-ip")?;
    let decision = decide(
        &key,
        &policy,
        &GateRequest {
            method: &method_name,
            path: &path,
            client_ip: client_ip.as_deref(),
            body: body.as_deref(),
            basic_workspace: credential.workspace.as_deref(),
        },
        now,
    );
    if !decision.valid {
        return deny(decision.code, &decision.message);
    }

    // The copy of the client's headers made above (one JavaScript call), less what must go:
    // the credential, the Host of this Worker and any X-Keyward-* the client made up.
    let forwarded = headers;
    forwarded.delete("host")?;
    for name in ["x-keyward-key-id", "x-keyward-key-type", "x-keyward-profile-id"] {
        forwarded.delete(name)?;
    }
    if credential.has(CredentialSource::Bearer) || credential.has(CredentialSource::Basic) {
        forwarded.delete("authorization")?;
    }
    if credential.has(CredentialSource::Header) {
        forwarded.delete("x-api-key")?;
    }
    forwarded.set("x-keyward-key-id", &key.record.id)?;
    forwarded.set("x-keyward-key-type", key.record.key_type.as_str())?;
    if let Some(profile) = &key.record.profile_id {
        forwarded.set("x-keyward-profile-id", profile)?;
    }

    let origin = env.var("ORIGIN_URL")?.to_string();
    let mut target = format!("{}{}", origin.trim_end_matches('/'), url.path());
    if let Some(query) = url.query() {
        let query = if credential.has(CredentialSource::Query) { strip_api_key(query) } else { query.to_string() };
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
    match Fetch::Request(outbound).send().await {
        Ok(response) => Ok(response),
        Err(_) => reply::error(502, "ORIGIN_UNAVAILABLE", "the origin could not be reached"),
    }
}

fn deny(code: Code, message: &str) -> Result<Response> {
    reply::error(code.status(), code.as_str(), message)
}
