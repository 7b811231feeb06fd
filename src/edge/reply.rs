//! The JSON envelope every keyward answer uses: `{"success", "data", "error_code", "error_message"}`.

use serde_json::{json, Value};
use worker::{Headers, Response, Result};

pub fn json(status: u16, body: &Value) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json; charset=utf-8")?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::from_bytes(body.to_string().into_bytes())?
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

pub fn error(status: u16, code: &str, message: &str) -> Result<Response> {
    let response = json(
        status,
        &json!({"success": false, "data": null, "error_code": code, "error_message": message}),
    )?;
    if status == 401 {
        response.headers().set("www-authenticate", "Bearer realm=\"keyward\"")?;
    }
    Ok(response)
}
