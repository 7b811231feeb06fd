//! The JSON envelope every keyward answer uses: `{"success", "data", "error_code", "error_message"}`.

use serde_json::{json, Value};
use worker::{Headers, Response, Result};

/// Sent with every answer keyward itself makes (management API, gate denials): nothing in a JSON
/// answer may run, be framed, be sniffed into HTML or leak the URL to another site.
const API_HEADERS: [(&str, &str); 3] = [
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
];

/// Sent with every console file. Scripts and styles come only from the console's own files (no
/// inline script, style attribute or on* handler); `wasm-unsafe-eval` lets the playground compile
/// the core's WebAssembly and allows no `eval`; the console may not be framed (clickjacking a
/// signed-in operator into Revoke or Delete).
const CONSOLE_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

/// Adds the console's security headers to a console file's response.
pub fn console_file(response: Response) -> Result<Response> {
    // The assets binding's headers are immutable; a copy is not.
    let headers = response.headers().clone();
    for (name, value) in CONSOLE_HEADERS {
        headers.set(name, value)?;
    }
    Ok(response.with_headers(headers))
}

/// Sent with every portal file: as the console's, except that the page may show the operator's
/// logo from any https address, and may be framed by the origins listed in
/// `KEYWARD_PORTAL_FRAME_ANCESTORS` (space-separated; none: not at all).
pub fn portal_file(response: Response, env: &worker::Env) -> Result<Response> {
    let ancestors = env
        .var("KEYWARD_PORTAL_FRAME_ANCESTORS")
        .ok()
        .map(|v| v.to_string())
        .filter(|v| !v.trim().is_empty() && v.chars().all(|c| c.is_ascii_graphic() || c == ' ') && !v.contains([';', ',', '\'']));
    let csp = format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' https: data:; \
         connect-src 'self'; object-src 'none'; frame-ancestors {}; base-uri 'none'; form-action 'self'",
        ancestors.as_deref().unwrap_or("'none'")
    );
    let headers = response.headers().clone();
    headers.set("content-security-policy", &csp)?;
    headers.set("x-content-type-options", "nosniff")?;
    headers.set("referrer-policy", "no-referrer")?;
    headers.set("cache-control", "no-store")?;
    if ancestors.is_none() {
        headers.set("x-frame-options", "DENY")?;
    }
    Ok(response.with_headers(headers))
}

pub fn json(status: u16, body: &Value) -> Result<Response> {
    json_text(status, body.to_string())
}

fn json_text(status: u16, body: String) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", JSON_CONTENT_TYPE)?;
    headers.set("cache-control", "no-store")?;
    for (name, value) in API_HEADERS {
        headers.set(name, value)?;
    }
    Ok(Response::from_bytes(body.into_bytes())?
        .with_status(status)
        .with_headers(headers))
}

pub fn success(status: u16, data: Value) -> Result<Response> {
    json(status, &json!({"success": true, "data": data, "error_code": null, "error_message": null}))
}

pub fn success_with(status: u16, data: Value, extra: serde_json::Map<String, Value>) -> Result<Response> {
    let mut body = serde_json::Map::new();
    body.insert("success".into(), Value::Bool(true));
    body.insert("data".into(), data);
    body.insert("error_code".into(), Value::Null);
    body.insert("error_message".into(), Value::Null);
    body.extend(extra);
    json(status, &Value::Object(body))
}

/// The headers of every keyward JSON answer, and the one a 401 adds, as JSON: the entry module
/// (src/entry.mjs) reads them once to build the fast path's refusals.
pub fn api_headers_json() -> Value {
    let mut map = serde_json::Map::new();
    map.insert("content-type".into(), Value::from(JSON_CONTENT_TYPE));
    map.insert("cache-control".into(), Value::from("no-store"));
    for (name, value) in API_HEADERS {
        map.insert(name.into(), Value::from(value));
    }
    json!({"headers": map, "unauthorized": {"www-authenticate": WWW_AUTHENTICATE}})
}

/// Sent with every 401.
const WWW_AUTHENTICATE: &str = "Bearer realm=\"keyward\"";

const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// The body of an error answer, the same text on both paths of the gate.
pub fn error_text(code: &str, message: &str) -> String {
    json!({"success": false, "data": null, "error_code": code, "error_message": message}).to_string()
}

pub fn error(status: u16, code: &str, message: &str) -> Result<Response> {
    let response = json_text(status, error_text(code, message))?;
    if status == 401 {
        response.headers().set("www-authenticate", WWW_AUTHENTICATE)?;
    }
    Ok(response)
}
