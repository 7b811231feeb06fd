//! The gate's decision as data: `POST /verify` (in the control plane, on the source of truth),
//! `GET /ping` (in the Worker, on the gate's own read path), and the OpenAPI document.

use std::rc::Rc;

use serde_json::{json, Value};
use worker::{Env, Request, Response, Result};

use super::{no_query, read_json, Answer, Call, Refusal};
use crate::core::credential::find_credential;
use crate::core::decision::{decide_permission, Decision};
use crate::core::digest::key_digest;
use crate::core::key::parse_key;
use crate::core::limits::{decide_limits, LimitCounts};
use crate::core::method::{resolve_override, OVERRIDE_HEADERS};
use crate::core::record::CompiledKey;
use crate::core::{decide, Code, GateRequest, RoutePolicy};
use crate::edge::{limits, reply, tokens};
use crate::edge::store::{Store, StoreError};

/// `GET /ping`: the key's id, or the gate's denial.
pub async fn ping(req: &Request, env: &Env, now: i64) -> Result<Response> {
    match ping_answer(req, env, now).await {
        Ok(response) => Ok(response),
        Err(Refusal(status, code, message)) => reply::error(status, code, &message),
    }
}

/// The OpenAPI document, `www/openapi.json`, served from the static assets so that it does not
/// weigh on the Worker's wasm.
pub async fn openapi(env: &Env) -> Result<Response> {
    match openapi_answer(env).await {
        Ok(response) => Ok(response),
        Err(Refusal(status, code, message)) => reply::error(status, code, &message),
    }
}

async fn ping_answer(req: &Request, env: &Env, now: i64) -> Answer {
    let store = Store::open(env)?;
    let url = req.url().map_err(|_| Refusal::bad("query: could not be read"))?;
    let headers = req.headers();
    // A token in place of the key (docs/tokens.md).
    let authorization = headers.get("authorization").ok().flatten();
    if let Some(token) = crate::core::token::bearer_token(authorization.as_deref()) {
        return Ok(crate::edge::tokens::ping(req, env, token, now).await?);
    }
    let credential = find_credential(
        headers.get("authorization").ok().flatten().as_deref(),
        headers.get("x-api-key").ok().flatten().as_deref(),
        url.query(),
    );
    let credential = match credential {
        Err(e) => return Ok(gate_denial(&Decision::deny(Code::BadRequest, e.message))?),
        Ok(None) => return Ok(gate_denial(&Decision::deny(Code::MissingKey, "no API key was sent"))?),
        Ok(Some(c)) => c,
    };
    if let Err(e) = parse_key(&credential.key) {
        return Ok(gate_denial(&Decision::deny(Code::MalformedKey, format!("the API key is malformed: {e}")))?);
    }
    let Some(key) = store.key(&key_digest(&credential.key), now).await? else {
        return Ok(gate_denial(&Decision::deny(Code::UnknownKey, "the API key is not known"))?);
    };
    let client_ip = headers.get("cf-connecting-ip").ok().flatten();
    let (origin, referer) = (headers.get("origin").ok().flatten(), headers.get("referer").ok().flatten());
    let request = GateRequest {
        client_ip: client_ip.as_deref(),
        basic_workspace: credential.workspace.as_deref(),
        origin: origin.as_deref(),
        referer: referer.as_deref(),
        ..GateRequest::default()
    };
    let decision = decide_permission(&key, None, &request, now);
    if !decision.valid {
        return Ok(gate_denial(&decision)?);
    }
    Ok(reply::success(200, json!({"key_id": key.record.id, "type": key.record.key_type.as_str()}))?)
}

fn gate_denial(decision: &Decision) -> Result<Response> {
    reply::error(decision.code.status(), decision.code.as_str(), &decision.message)
}

/// `POST /verify`: what the gate would answer, as data, without calling the origin.
pub(super) async fn verify(req: &mut Request, call: &Call<'_>) -> Answer {
    let now = call.now;
    no_query(req)?;
    let body = read_json(req).await?;
    let object = body.as_object().ok_or_else(|| Refusal::bad("body: must be a JSON object"))?;
    for field in object.keys() {
        if !matches!(field.as_str(), "key" | "method" | "path" | "ip" | "headers" | "body") {
            return Err(Refusal::bad(format!("{field}: is not a verify field")));
        }
    }
    let text = |field: &str| -> std::result::Result<Option<String>, Refusal> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Refusal::bad(format!("{field}: must be a string"))),
        }
    };
    let method = text("method")?.unwrap_or_else(|| "GET".into()).to_ascii_uppercase();
    let full_path = text("path")?.ok_or_else(|| Refusal::bad("path: is required"))?;
    if !full_path.starts_with('/') {
        return Err(Refusal::bad("path: must start with /"));
    }
    let (path, query) = full_path.split_once('?').map_or((full_path.as_str(), None), |(p, q)| (p, Some(q)));
    let ip = text("ip")?;
    let mut authorization = None;
    let mut x_api_key = None;
    let mut overrides: [Option<String>; 3] = Default::default();
    let (mut origin, mut referer) = (None, None);
    match object.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => {
            for (name, value) in h {
                let value = value.as_str().ok_or_else(|| Refusal::bad(format!("headers.{name}: must be a string")))?;
                match name.to_ascii_lowercase().as_str() {
                    "authorization" => authorization = Some(value.to_string()),
                    "x-api-key" => x_api_key = Some(value.to_string()),
                    "origin" => origin = Some(value.to_string()),
                    "referer" => referer = Some(value.to_string()),
                    other => {
                        if let Some(slot) = OVERRIDE_HEADERS.iter().position(|h| *h == other).and_then(|i| overrides.get_mut(i)) {
                            *slot = Some(value.to_string());
                        }
                    }
                }
            }
        }
        Some(_) => return Err(Refusal::bad("headers: must be an object of strings")),
    }
    let body_bytes: Option<Vec<u8>> = match object.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone().into_bytes()),
        Some(other) => Some(other.to_string().into_bytes()),
    };
    if let Some(key) = text("key")? {
        // An explicit key is sent as a Bearer token unless the headers already carry one.
        if authorization.is_none() && x_api_key.is_none() {
            authorization = Some(format!("Bearer {key}"));
        } else {
            x_api_key.get_or_insert(key);
        }
    }
    let asked = Asked { method, path, query, ip: ip.as_deref(), body: body_bytes.as_deref(), origin: origin.as_deref(), referer: referer.as_deref(), overrides };
    let decision = match crate::core::token::bearer_token(authorization.as_deref()) {
        // A token in place of the key (docs/tokens.md): its signature and times, then its key.
        Some(token) => match crate::core::token::beside_a_key(x_api_key.as_deref(), query) {
            Some((code, message)) => Decision::deny(code, message),
            None => match tokens::control_claims(call.ledger, call.env, token, now) {
                Err((code, message)) => Decision::deny(code, message),
                Ok(claims) => match known_key(call, &claims.kwd)? {
                    None => Decision::deny(Code::TokenInvalid, tokens::KEY_GONE),
                    Some(key) => match tokens::judge(&claims, &key) {
                        Some((code, message)) => Decision::deny(code, message),
                        None => decide_asked(call, &tokens::as_token_key(&claims, Rc::new(key)), None, &asked).await?,
                    },
                },
            },
        },
        None => match find_credential(authorization.as_deref(), x_api_key.as_deref(), query) {
            Err(e) => Decision::deny(Code::BadRequest, e.message),
            Ok(None) => Decision::deny(Code::MissingKey, "no API key was given"),
            Ok(Some(credential)) => match parse_key(&credential.key) {
                Err(e) => Decision::deny(Code::MalformedKey, format!("the API key is malformed: {e}")),
                Ok(_) => match known_key(call, &key_digest(&credential.key))? {
                    None => Decision::deny(Code::UnknownKey, "the API key is not known"),
                    Some(key) => decide_asked(call, &key, credential.workspace.as_deref(), &asked).await?,
                },
            },
        },
    };
    Ok(reply::success(200, serde_json::to_value(&decision).unwrap_or(Value::Null))?)
}

/// The key with this digest, compiled, from the source of truth; a call confined to a workspace
/// knows only that workspace's keys.
fn known_key(call: &Call<'_>, digest: &str) -> std::result::Result<Option<CompiledKey>, Refusal> {
    let Some(record) = call.ledger.record(digest)?.filter(|r| call.in_scope(r)) else { return Ok(None) };
    CompiledKey::compile(record).map(Some).map_err(|_| Refusal::from(StoreError("stored record is invalid".into())))
}

/// What `POST /verify` asks about, beside the credential.
struct Asked<'a> {
    method: String,
    path: &'a str,
    query: Option<&'a str>,
    ip: Option<&'a str>,
    body: Option<&'a [u8]>,
    origin: Option<&'a str>,
    referer: Option<&'a str>,
    overrides: [Option<String>; 3],
}

/// The gate's decision for a known key on the asked request, on the stored policy, with the
/// key's counts read from its Limiter last (unchanged), as at the gate.
async fn decide_asked(call: &Call<'_>, key: &CompiledKey, basic_workspace: Option<&str>, asked: &Asked<'_>) -> std::result::Result<Decision, Refusal> {
    let (text, _) = super::policy::current(call.env, call)?;
    let policy = RoutePolicy::parse(&text).map_err(|_| Refusal::from(StoreError("the route policy is invalid".into())))?;
    // The same method-override rule as the gate (contract section 9).
    let [a, b, c] = &asked.overrides;
    let method = match resolve_override(policy.method_override(), &asked.method, [a.as_deref(), b.as_deref(), c.as_deref()], asked.query) {
        Err(e) => return Ok(Decision::deny(Code::BadRequest, e.message)),
        Ok(resolved) => resolved.map_or_else(|| asked.method.clone(), |r| r.method),
    };
    let request = GateRequest {
        method: &method,
        path: asked.path,
        client_ip: asked.ip,
        body: asked.body,
        basic_workspace,
        origin: asked.origin,
        referer: asked.referer,
    };
    let decision = decide(key, &policy, &request, call.now);
    if !decision.valid {
        return Ok(decision);
    }
    let cost = limits::cost(&policy, decision.rule);
    Ok(match limits::peek(call.env, &key.record, cost).await {
        Ok(None) => decision,
        Ok(Some(c)) => {
            let counts = LimitCounts { recent: c.recent, credits_remaining: c.credits_remaining };
            decide_limits(decision, &key.record, cost, &counts)
        }
        Err(_) => Decision::deny(Code::StoreUnavailable, "the key's Limiter could not be reached"),
    })
}

async fn openapi_answer(env: &Env) -> Answer {
    let response = env.assets("ASSETS")?.fetch("https://assets.local/openapi.json", None).await?;
    if response.status_code() != 200 {
        return Err(Refusal(503, "STORE_UNAVAILABLE", "the OpenAPI document is not deployed".into()));
    }
    let mut response = response;
    let text = response.text().await?;
    let doc: Value = serde_json::from_str(&text).map_err(|_| Refusal(503, "STORE_UNAVAILABLE", "the OpenAPI document is not valid JSON".into()))?;
    Ok(reply::json(200, &doc)?)
}
