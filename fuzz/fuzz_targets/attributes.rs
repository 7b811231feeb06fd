//! The attribute reader: which profile attributes (and tags) a body asks to change, against the
//! key's attribute allowlist. Input: the allowlist on the first line (comma-separated), the body
//! after it. Oracle: the decision is the one worked out here from serde_json's reading of the body.
#![no_main]

use keyward::core::decision::{decide, GateRequest};
use keyward::core::policy::RoutePolicy;
use keyward::core::record::{CompiledKey, KeyRecord};
use keyward::core::Code;
use keyward_fuzz::head_and_rest;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let (allow, body) = head_and_rest(data);
    let Ok(allow) = std::str::from_utf8(allow) else { return };
    let allowed: Vec<&str> = allow.split(',').filter(|a| !a.is_empty()).collect();
    let view = json!({"name": "k", "permissions": ["*"], "attribute_allowlist": allowed});
    let Ok(record) = KeyRecord::from_view(&view) else { return };
    let key = CompiledKey::compile(record).expect("a validated record does not compile");
    let policy = RoutePolicy::parse(
        r#"{"rules":[{"method":"PUT","path":"/profiles/{p}","permission":"profiles:update","attribute_check":true}]}"#,
    )
    .expect("policy");
    let request = GateRequest { method: "PUT", path: "/profiles/p1", client_ip: None, body: Some(body), basic_workspace: None, origin: None, referer: None };
    let decision = decide(&key, &policy, &request, 0);

    let expected = match serde_json::from_slice::<Value>(body) {
        _ if body.is_empty() || body.len() > 256 * 1024 => Code::BadRequest,
        Err(_) | Ok(Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_)) => Code::BadRequest,
        Ok(Value::Object(map)) => {
            let mut code = Code::Valid;
            for (field, value) in &map {
                if field == "tags" {
                    match value.as_array() {
                        Some(tags) if tags.iter().all(Value::is_string) => {
                            if tags.iter().any(|t| !allowed.contains(&t.as_str().unwrap_or_default())) {
                                code = Code::AttributeNotAllowed;
                            }
                        }
                        _ => {
                            code = Code::BadRequest;
                            break;
                        }
                    }
                } else if !allowed.contains(&field.as_str()) {
                    code = Code::AttributeNotAllowed;
                }
            }
            code
        }
    };
    assert_eq!(decision.code, expected, "{:?} against {allowed:?}: {}", String::from_utf8_lossy(body), decision.message);
    assert_eq!(decision.valid, expected == Code::Valid);
});
