//! The browser face: the core's functions for the console's playground, through wasm-bindgen.
//! Every answer is tagged data (`{"type": "success", ...}` or `{"type": "failure", "errors"}`);
//! nothing is thrown across the boundary.

use serde::Serialize;
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;

use crate::core::code::Code;
use crate::core::cors::{preflight, response_headers};
use crate::core::digest::key_digest;
use crate::core::key::{generate_key, key_preview, parse_key, RANDOM_BYTES_FOR_KEY};
use crate::core::record::{CompiledKey, FieldError, KeyRecord, WriteMode};
use crate::core::{decide, GateRequest, RoutePolicy};

fn to_js(value: &Value) -> JsValue {
    let serializer = serde_wasm_bindgen::Serializer::json_compatible();
    value.serialize(&serializer).unwrap_or(JsValue::NULL)
}

fn from_js(value: JsValue, what: &str) -> Result<Value, FieldError> {
    serde_wasm_bindgen::from_value(value).map_err(|e| FieldError::new(what, format!("is not JSON data: {e}")))
}

fn failure(e: &FieldError) -> JsValue {
    to_js(&json!({"type": "failure", "errors": [{"field": e.field, "message": e.message}]}))
}

/// Decides `request` (`{method, path, ip, body, basic_workspace, origin, referer}`) for a key
/// record in its API view form under `policy`, at `now_ms`: the same function the edge runs.
#[wasm_bindgen(js_name = decide)]
pub fn decide_js(record: JsValue, policy: JsValue, request: JsValue, now_ms: f64) -> JsValue {
    match decide_inner(record, policy, request, now_ms) {
        Ok(v) => to_js(&v),
        Err(e) => failure(&e),
    }
}

fn decide_inner(record: JsValue, policy: JsValue, request: JsValue, now_ms: f64) -> Result<Value, FieldError> {
    let record = KeyRecord::from_view(&from_js(record, "record")?)?;
    let key = CompiledKey::compile(record)?;
    let policy = RoutePolicy::from_value(&from_js(policy, "policy")?)?;
    let request = from_js(request, "request")?;
    let text = |field: &str| request.get(field).and_then(Value::as_str).map(str::to_string);
    let method = text("method").unwrap_or_else(|| "GET".into()).to_ascii_uppercase();
    let path = text("path").ok_or_else(|| FieldError::new("path", "is required"))?;
    let path = path.split_once('?').map_or(path.as_str(), |(p, _)| p).to_string();
    let ip = text("ip").filter(|s| !s.is_empty());
    let workspace = text("basic_workspace").filter(|s| !s.is_empty());
    let origin = text("origin").filter(|s| !s.is_empty());
    let referer = text("referer").filter(|s| !s.is_empty());
    let body: Option<Vec<u8>> = match request.get("body") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone().into_bytes()),
        Some(other) => Some(other.to_string().into_bytes()),
    };
    let now = now_ms as i64;
    let decision = decide(
        &key,
        &policy,
        &GateRequest {
            method: &method,
            path: &path,
            client_ip: ip.as_deref(),
            body: body.as_deref(),
            basic_workspace: workspace.as_deref(),
            origin: origin.as_deref(),
            referer: referer.as_deref(),
        },
        now,
    );
    // The limit and credit checks on counts the page gives: `recent` requests in the key's window
    // (default 0) and the record's own `credits.remaining`.
    let recent = request.get("recent").and_then(crate::core::limits::whole_number).unwrap_or(0);
    let counts = crate::core::limits::LimitCounts { recent, credits_remaining: None };
    let cost = crate::core::limits::cost_of(&policy, decision.rule);
    let decision = crate::core::limits::decide_limits(decision, &key.record, cost, &counts);
    let rule = decision.rule.and_then(|i| policy.doc().rules.get(i)).and_then(|r| serde_json::to_value(r).ok());
    Ok(json!({"type": "success", "decision": decision, "matched_rule": rule}))
}

/// What the edge does for a browser on `origin` making `request` (`{method, path, origin}`) under
/// `policy`: the answer to its preflight (`OPTIONS` asking for that method), and the CORS headers
/// on the answer to the request itself. The same functions the gate calls.
#[wasm_bindgen(js_name = corsOutcome)]
pub fn cors_outcome(policy: JsValue, request: JsValue) -> JsValue {
    let result = from_js(policy, "policy").and_then(|p| RoutePolicy::from_value(&p)).and_then(|policy| {
        let request = from_js(request, "request")?;
        let text = |field: &str| request.get(field).and_then(Value::as_str).map(str::to_string);
        let method = text("method").unwrap_or_else(|| "GET".into());
        let path = text("path").ok_or_else(|| FieldError::new("path", "is required"))?;
        let path = path.split_once('?').map_or(path.as_str(), |(p, _)| p).to_string();
        let origin = text("origin").filter(|s| !s.is_empty());
        let answer = preflight(&policy, "OPTIONS", &path, origin.as_deref(), origin.as_ref().map(|_| method.as_str()));
        let headers = response_headers(&policy, origin.as_deref());
        Ok(json!({"type": "success", "cors": policy.cors().is_some(), "preflight": answer, "response_headers": headers}))
    });
    match result {
        Ok(v) => to_js(&v),
        Err(e) => failure(&e),
    }
}

/// Validates key attributes as `POST` (`mode` "create") or `PUT` ("update") would.
#[wasm_bindgen(js_name = validateAttributes)]
pub fn validate_attributes(attributes: JsValue, mode: &str) -> JsValue {
    let mode = if mode == "update" { WriteMode::Update } else { WriteMode::Create };
    let result = from_js(attributes, "api_key").and_then(|v| {
        let map = v.as_object().cloned().ok_or_else(|| FieldError::new("api_key", "must be an object"))?;
        let mut base = KeyRecord::blank("key_playground".into(), String::new(), 0);
        if mode == WriteMode::Update {
            base.name = "playground".into();
        }
        base.with_attributes(&map, mode)
    });
    match result {
        Ok(r) => to_js(&json!({"type": "success", "record": r.view(0)})),
        Err(e) => failure(&e),
    }
}

/// Validates a route policy document.
#[wasm_bindgen(js_name = validatePolicy)]
pub fn validate_policy(policy: JsValue) -> JsValue {
    match from_js(policy, "policy").and_then(|v| RoutePolicy::from_value(&v)) {
        Ok(p) => to_js(&json!({"type": "success", "rules": p.rules().len()})),
        Err(e) => failure(&e),
    }
}

/// Checks a key's shape and checksum, as the gate does before any KV read.
#[wasm_bindgen(js_name = parseKey)]
pub fn parse_key_js(key: &str) -> JsValue {
    match parse_key(key) {
        Ok(p) => to_js(&json!({"type": "success", "prefix": p.prefix, "preview": key_preview(key), "digest": key_digest(key)})),
        Err(e) => to_js(&json!({"type": "failure", "errors": [{"field": "key", "message": e.to_string()}]})),
    }
}

/// Verifies a token (its form, `alg`, `kid`, signature, issuer and times) against `jwks` (a JWK
/// set as `/_keyward/jwks.json` serves it) at `now_ms`: the same function the gate runs.
/// `{"type": "success", "code": "VALID", "claims"}` or `{"type": "success", "code", "message"}`.
#[wasm_bindgen(js_name = verifyToken)]
pub fn verify_token_js(token: &str, jwks: JsValue, issuer: &str, now_ms: f64) -> JsValue {
    use crate::core::token::{verify, PublicKey};
    let jwks = match from_js(jwks, "jwks") {
        Ok(v) => v,
        Err(e) => return failure(&e),
    };
    let keys: Vec<PublicKey> = jwks.get("keys").and_then(Value::as_array).map(|a| a.iter().filter_map(PublicKey::from_jwk).collect()).unwrap_or_default();
    #[allow(clippy::cast_possible_truncation, reason = "Date.now() is an integer of ms, well inside i64")]
    let now = now_ms as i64;
    match verify(token, &keys, issuer, now) {
        Ok(claims) => to_js(&json!({"type": "success", "code": "VALID", "claims": claims})),
        Err(e) => to_js(&json!({"type": "success", "code": e.code.as_str(), "message": e.message})),
    }
}

/// The SHA-256 digest under which a key is stored.
#[wasm_bindgen]
pub fn digest(key: &str) -> String {
    key_digest(key)
}

/// A new key from the browser's CSPRNG (crypto.getRandomValues).
#[wasm_bindgen(js_name = generateKey)]
pub fn generate_key_js(prefix: &str) -> JsValue {
    let mut random = [0u8; RANDOM_BYTES_FOR_KEY];
    if getrandom::fill(&mut random).is_err() {
        return to_js(&json!({"type": "failure", "errors": [{"field": "random", "message": "no randomness available"}]}));
    }
    match generate_key(prefix, &random) {
        Ok(key) => to_js(&json!({"type": "success", "key": key, "digest": key_digest(&key), "preview": key_preview(&key)})),
        Err(e) => to_js(&json!({"type": "failure", "errors": [{"field": "prefix", "message": e.to_string()}]})),
    }
}

/// A key record and a policy compiled once, for checking many requests: what the edge does with
/// a cached record. The playground's `decide` compiles both on every call instead.
#[wasm_bindgen]
pub struct Checker {
    key: CompiledKey,
    policy: RoutePolicy,
    /// The codes as JavaScript strings, made once: handing one back is a reference, where
    /// returning a Rust `String` would be decoded (TextDecoder) on every call.
    codes: Vec<JsValue>,
}

#[wasm_bindgen]
impl Checker {
    /// Compiles `record` (API view form) and `policy`; `undefined` when either is invalid (use
    /// `decide` or `validatePolicy` to see why).
    #[wasm_bindgen(js_name = compile)]
    pub fn compile(record: JsValue, policy: JsValue) -> Option<Checker> {
        let record = KeyRecord::from_view(&from_js(record, "record").ok()?).ok()?;
        let key = CompiledKey::compile(record).ok()?;
        let policy = RoutePolicy::from_value(&from_js(policy, "policy").ok()?).ok()?;
        let codes = Code::ALL.iter().map(|c| JsValue::from_str(c.as_str())).collect();
        Some(Checker { key, policy, codes })
    }

    /// The gate's whole check for one request: key format and checksum, SHA-256 digest, then the
    /// decision. Returns the code (`VALID` or a denial code); a digest that is not this record's
    /// is `UNKNOWN_KEY`, as a KV miss would be.
    pub fn check(&self, key: &str, method: &str, path: &str, ip: Option<String>, body: Option<String>, now_ms: f64) -> JsValue {
        if parse_key(key).is_err() {
            return self.code(Code::MalformedKey);
        }
        if key_digest(key) != self.key.record.digest {
            return self.code(Code::UnknownKey);
        }
        let request = GateRequest {
            method,
            path,
            client_ip: ip.as_deref(),
            body: body.as_deref().map(str::as_bytes),
            basic_workspace: None,
            origin: None,
            referer: None,
        };
        self.code(decide(&self.key, &self.policy, &request, now_ms as i64).code)
    }

    fn code(&self, code: Code) -> JsValue {
        self.codes.get(code as usize).cloned().unwrap_or_else(|| JsValue::from_str(code.as_str()))
    }

    /// Binds the compiled record to a key's digest, as KV does by storing it under the digest.
    #[wasm_bindgen(js_name = bindKey)]
    pub fn bind_key(&mut self, key: &str) {
        self.key.record.digest = key_digest(key);
    }
}
