//! `POST /_keyward/leaks/github`: GitHub's secret-scanning partner endpoint. The isolate refuses an
//! oversized body and hands the rest to the control plane, which verifies the signature against
//! GitHub's public keys (`LEAK_REPORT_PUBLIC_KEYS`, or fetched from GitHub and cached), acts on each
//! known key (admin::leaks) and answers GitHub's format: the bare JSON array of
//! `{token_hash, token_type, label}`. Then the isolate reads the change feed, so it refuses the
//! revoked keys at once; other isolates follow within `SYNC_INTERVAL_MS`.

use std::cell::RefCell;

use serde_json::{json, Value};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Env, Request, Response, Result};

use super::admin::leaks::{apply, Leak};
use super::ledger::{Actor, Ledger};
use super::reply;
use crate::core::leak::{lookup_digest, parse_public_keys, parse_report, prepare, token_hash, PublicKey, SignatureError, MAX_REPORT_BYTES};

pub const PATH: &str = "/_keyward/leaks/github";
/// Where GitHub publishes the keys it signs secret-scanning reports with.
const GITHUB_KEYS_URL: &str = "https://api.github.com/meta/public_keys/secret_scanning";
/// How long fetched keys are used before they are fetched again.
const KEYS_TTL_MS: i64 = 60 * 60 * 1000;
/// A report signed by a key the cache does not know fetches the list again, at most this often.
const KEYS_REFETCH_MS: i64 = 60 * 1000;

/// The isolate's side: size, method, then the control plane.
pub async fn forward(request: Request, env: &Env) -> Result<Response> {
    if request.method() != worker::Method::Post {
        let response = reply::error(405, "METHOD_NOT_ALLOWED", &format!("{} is not allowed here", request.method()))?;
        response.headers().set("allow", "POST")?;
        return Ok(response);
    }
    let limit = super::BodyLimit { bytes: MAX_REPORT_BYTES, status: 413, code: "PAYLOAD_TOO_LARGE" };
    super::forward(request, env, limit).await
}

thread_local! {
    /// GitHub's keys as last fetched, and when (in the control plane's isolate).
    static FETCHED: RefCell<Option<(i64, Vec<PublicKey>)>> = const { RefCell::new(None) };
}

/// The control plane's side.
pub async fn github(mut req: Request, env: &Env, ledger: &Ledger, now: i64) -> Result<Response> {
    let body = req.bytes().await.unwrap_or_default();
    if body.len() > MAX_REPORT_BYTES {
        return reply::error(413, "PAYLOAD_TOO_LARGE", &format!("body: must be at most {MAX_REPORT_BYTES} bytes"));
    }
    let headers = req.headers();
    let key_id = headers.get("github-public-key-identifier").ok().flatten();
    let signature = headers.get("github-public-key-signature").ok().flatten();
    if key_id.is_none() || signature.is_none() {
        return reply::error(401, "MISSING_SIGNATURE", "send Github-Public-Key-Identifier and Github-Public-Key-Signature");
    }
    let keys = match public_keys(env, key_id.as_deref().unwrap_or_default(), now).await {
        Ok(keys) => keys,
        Err((status, code, message)) => return reply::error(status, code, &message),
    };
    let (key, raw) = match prepare(&keys, key_id.as_deref(), signature.as_deref()) {
        Ok(prepared) => prepared,
        Err(e) => return reply::error(401, e.code(), e.message()),
    };
    match webcrypto_verify(&key.spki, &raw, &body).await {
        Ok(true) => {}
        Ok(false) => return reply::error(401, SignatureError::Mismatch.code(), SignatureError::Mismatch.message()),
        Err(e) => return reply::error(500, "INTERNAL", &format!("the signature could not be checked: {e}")),
    }
    let tokens = match parse_report(&body) {
        Ok(tokens) => tokens,
        Err(message) => return reply::error(400, "BAD_REQUEST", &message),
    };
    let leaks: Vec<Leak> = tokens.iter().map(|t| Leak { digest: lookup_digest(&t.token), url: t.url.clone() }).collect();
    let outcomes = match apply(env, ledger, now, &Actor::Leak("leak:github".into()), &leaks, None) {
        Ok(outcomes) => outcomes,
        Err(super::admin::Refusal(status, code, message)) => return reply::error(status, code, &message),
    };
    let answer: Vec<Value> = tokens
        .iter()
        .zip(outcomes)
        .map(|(token, outcome)| {
            let label = if outcome.key_id.is_some() { "true_positive" } else { "false_positive" };
            json!({"token_hash": token_hash(&token.token), "token_type": token.token_type, "label": label})
        })
        .collect();
    reply::json(200, &Value::Array(answer))
}

/// ECDSA P-256 with SHA-256 through the platform's WebCrypto: `spki` the key's SPKI DER, `raw`
/// the signature's `r || s`.
async fn webcrypto_verify(spki: &[u8], raw: &[u8; 64], body: &[u8]) -> std::result::Result<bool, String> {
    use js_sys::{Array, Function, Object, Promise, Reflect, Uint8Array};
    use wasm_bindgen::{JsCast, JsValue};
    let text = |e: JsValue| e.as_string().unwrap_or_else(|| format!("{e:?}"));
    let get = |target: &JsValue, name: &str| Reflect::get(target, &JsValue::from_str(name)).map_err(text);
    let subtle = get(&get(&js_sys::global().into(), "crypto")?, "subtle")?;
    let algorithm = |pairs: &[(&str, &str)]| -> std::result::Result<Object, String> {
        let object = Object::new();
        for (name, value) in pairs {
            Reflect::set(&object, &JsValue::from_str(name), &JsValue::from_str(value)).map_err(text)?;
        }
        Ok(object)
    };
    let call = |method: &str, args: Array| -> std::result::Result<Promise, String> {
        let function: Function = get(&subtle, method)?.dyn_into().map_err(text)?;
        Ok(Promise::from(function.apply(&subtle, &args).map_err(text)?))
    };
    let import = Array::of5(
        &JsValue::from_str("spki"),
        &Uint8Array::from(spki).into(),
        &algorithm(&[("name", "ECDSA"), ("namedCurve", "P-256")])?.into(),
        &JsValue::FALSE,
        &Array::of1(&JsValue::from_str("verify")).into(),
    );
    let key = JsFuture::from(call("importKey", import)?).await.map_err(text)?;
    let check = Array::of4(
        &algorithm(&[("name", "ECDSA"), ("hash", "SHA-256")])?.into(),
        &key,
        &Uint8Array::from(raw.as_slice()).into(),
        &Uint8Array::from(body).into(),
    );
    Ok(JsFuture::from(call("verify", check)?).await.map_err(text)?.as_bool() == Some(true))
}

type Failure = (u16, &'static str, String);

/// The public keys to verify with: `LEAK_REPORT_PUBLIC_KEYS` where set, else GitHub's, fetched
/// and cached for an hour (again sooner when a report names a key the cache lacks: GitHub rotates).
async fn public_keys(env: &Env, key_id: &str, now: i64) -> std::result::Result<Vec<PublicKey>, Failure> {
    if let Ok(doc) = env.var("LEAK_REPORT_PUBLIC_KEYS") {
        return parse_public_keys(&doc.to_string()).map_err(|e| (500, "CONFIGURATION_ERROR", format!("LEAK_REPORT_PUBLIC_KEYS: {e}")));
    }
    let cached = FETCHED.with(|f| f.borrow().clone());
    if let Some((at, keys)) = &cached {
        let fresh = now.saturating_sub(*at) < KEYS_TTL_MS;
        let knows = keys.iter().any(|k| k.id == key_id);
        if fresh && (knows || now.saturating_sub(*at) < KEYS_REFETCH_MS) {
            return Ok(keys.clone());
        }
    }
    match fetch_github_keys().await {
        Ok(keys) => {
            FETCHED.with(|f| *f.borrow_mut() = Some((now, keys.clone())));
            Ok(keys)
        }
        // GitHub unreachable: the last list, however old, rather than refusing genuine reports.
        Err(e) => match cached {
            Some((_, keys)) => Ok(keys),
            None => Err((503, "KEYS_UNAVAILABLE", format!("GitHub's public keys could not be fetched: {e}"))),
        },
    }
}

async fn fetch_github_keys() -> std::result::Result<Vec<PublicKey>, String> {
    let headers = worker::Headers::new();
    headers.set("accept", "application/json").map_err(|e| e.to_string())?;
    headers.set("user-agent", "keyward").map_err(|e| e.to_string())?;
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Get).with_headers(headers);
    let request = Request::new_with_init(GITHUB_KEYS_URL, &init).map_err(|e| e.to_string())?;
    let mut response = worker::Fetch::Request(request).send().await.map_err(|e| e.to_string())?;
    if response.status_code() != 200 {
        return Err(format!("{GITHUB_KEYS_URL} answered {}", response.status_code()));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    parse_public_keys(&text)
}
