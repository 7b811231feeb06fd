//! The decision: given a key's record, the route policy and the facts of a request, allow or deny.
//!
//! Precedence, first failing check wins, so that a denial never tells the holder more than the
//! checks before it already allowed them to learn:
//!
//! 1. `KEY_REVOKED`
//! 2. `KEY_EXPIRED` (the `active` flag, then `expires_at`)
//! 3. `WORKSPACE_MISMATCH` (Basic credentials naming another workspace)
//! 4. `IP_NOT_ALLOWED`
//! 5. `ORIGIN_NOT_ALLOWED` (the key has an `origin_allowlist` and the request's `Origin`, else
//!    `Referer`'s origin, is missing or not on it): like the IP, where the key is used from, so a
//!    page on another website learns nothing about routes or permissions
//! 6. `BAD_REQUEST` (a path that cannot be matched safely, such as `%2F` or `..` segments)
//! 7. `ROUTE_NOT_ALLOWED` (no rule matches; `HEAD` is matched as `GET` unless a rule names it)
//! 8. `PERMISSION_DENIED`
//! 9. `PROFILE_MISMATCH`
//! 10. `BAD_REQUEST` (no readable event), then `EVENT_NOT_ALLOWED`
//! 11. `BAD_REQUEST` (unreadable body), then `ATTRIBUTE_NOT_ALLOWED`
//! 12. `RATE_LIMITED`, then `USAGE_EXCEEDED`: last, on the key's counts, in [`super::limits`]
//!     (the edge's Limiter Durable Object holds them), so that a refused request spends nothing
//!
//! Before any of these the gate itself answers `BAD_REQUEST` (two different keys),
//! `MISSING_KEY`, `MALFORMED_KEY` (no KV read) and `UNKNOWN_KEY`; and a CORS preflight, which
//! carries no key, is answered from the policy alone ([`super::cors::preflight`]).

use serde::Serialize;
use serde_json::Value;

use super::code::Code;
use super::ip::parse_addr;
use super::origin::{request_origin, RequestOrigin};
use super::policy::{EventSource, PathError, RouteMatch, RoutePolicy};
use super::record::{CompiledKey, KeyType};

/// What the gate knows about a request, independent of how it arrived.
#[derive(Debug, Clone, Copy, Default)]
pub struct GateRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// `CF-Connecting-IP`; `None` when the platform gave none.
    pub client_ip: Option<&'a str>,
    /// The body, when the matched rule needs it (see [`super::policy::RouteRule::needs_body`]).
    pub body: Option<&'a [u8]>,
    /// The workspace half of Basic credentials, when the key came that way.
    pub basic_workspace: Option<&'a str>,
    /// The `Origin` header, for a key's `origin_allowlist`.
    pub origin: Option<&'a str>,
    /// The `Referer` header, whose origin stands in when there is no `Origin`.
    pub referer: Option<&'a str>,
}

/// The answer, as data: the gate turns it into a forward or an error envelope, `/verify` and the
/// browser playground return it as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub valid: bool,
    pub code: Code,
    pub message: String,
    pub key_id: Option<String>,
    pub key_type: Option<KeyType>,
    pub profile_id: Option<String>,
    /// The permission the matched rule requires.
    pub permission: Option<String>,
    /// Index of the rule that decided, in policy order.
    pub rule: Option<usize>,
}

impl Decision {
    /// A denial known before any record is read (missing, malformed, unknown key, bad request).
    pub fn deny(code: Code, message: impl Into<String>) -> Decision {
        Decision {
            valid: false,
            code,
            message: message.into(),
            key_id: None,
            key_type: None,
            profile_id: None,
            permission: None,
            rule: None,
        }
    }
}

pub const MAX_INSPECTED_BODY: usize = 256 * 1024;

pub fn decide(key: &CompiledKey, policy: &RoutePolicy, request: &GateRequest<'_>, now_ms: i64) -> Decision {
    decide_found(key, policy.find(request.method, request.path), request, now_ms)
}

/// [`decide`] with the route already looked up (`policy.find(request.method, request.path)`):
/// the gate finds the rule once, to know whether its body must be read, and decides with it.
pub fn decide_found(
    key: &CompiledKey,
    found: Result<Option<RouteMatch<'_>>, PathError>,
    request: &GateRequest<'_>,
    now_ms: i64,
) -> Decision {
    let record = &key.record;
    let mut decision = Decision {
        valid: false,
        code: Code::Valid,
        message: String::new(),
        key_id: Some(record.id.clone()),
        key_type: Some(record.key_type),
        profile_id: record.profile_id.clone(),
        permission: None,
        rule: None,
    };
    let deny = |mut d: Decision, code: Code, message: String| {
        d.code = code;
        d.message = message;
        d
    };

    if record.is_revoked() {
        return deny(decision, Code::KeyRevoked, "the API key has been revoked".into());
    }
    if !record.active {
        return deny(decision, Code::KeyExpired, "the API key has expired".into());
    }
    if key.expires_at_ms.is_some_and(|at| at <= now_ms) {
        return deny(decision, Code::KeyExpired, "the API key has expired".into());
    }
    if let Some(workspace) = request.basic_workspace {
        if record.workspace.as_deref() != Some(workspace) {
            return deny(
                decision,
                Code::WorkspaceMismatch,
                "the workspace in the Basic credentials is not this key's workspace".into(),
            );
        }
    }
    if !key.ip_allowlist.is_empty() {
        let allowed = request
            .client_ip
            .and_then(|ip| parse_addr(ip).ok())
            .is_some_and(|addr| key.ip_allowlist.contains(addr));
        if !allowed {
            return deny(decision, Code::IpNotAllowed, "the API key may not be used from this address".into());
        }
    }
    if !key.origin_allowlist.is_empty() {
        let refused = match request_origin(request.origin, request.referer) {
            RequestOrigin::Known(origin) if key.origin_allowlist.allows(&origin) => None,
            RequestOrigin::Known(origin) => Some(format!("the API key may not be used from the website {origin}")),
            RequestOrigin::Opaque(origin) => Some(format!("the API key may not be used from the origin {origin}")),
            RequestOrigin::Missing => Some(
                "the API key may only be used from its allowed websites, and the request names none (no Origin or Referer)".into(),
            ),
        };
        if let Some(message) = refused {
            return deny(decision, Code::OriginNotAllowed, message);
        }
    }
    let matched: RouteMatch<'_> = match found {
        Err(e) => return deny(decision, Code::BadRequest, e.message),
        Ok(None) => {
            return deny(
                decision,
                Code::RouteNotAllowed,
                format!("no route rule allows {} {}", request.method, request.path),
            )
        }
        Ok(Some(m)) => m,
    };
    let rule = matched.rule;
    decision.rule = Some(rule.index);
    decision.permission = Some(rule.permission.clone());
    // The key's role is asked only when its own permissions lack the rule's: an allowed request
    // pays nothing for roles.
    if !key.permissions.grants(&rule.permission) && !matched.roles.grants(&record.role, &rule.permission) {
        return deny(
            decision,
            Code::PermissionDenied,
            format!("the API key lacks the permission {}", rule.permission),
        );
    }
    if record.key_type == KeyType::Profile {
        let target = rule.profile.as_deref().and_then(|p| matched.param(p));
        if target.is_none() || target != record.profile_id.as_deref() {
            return deny(
                decision,
                Code::ProfileMismatch,
                "a profile key may only access its own profile".into(),
            );
        }
    }
    if let Some(source) = &rule.event {
        // A body event is read by scanning the top level of the JSON for its one field, without
        // building the document: the common case pays for no allocation but the event name.
        let (event, why) = match source {
            EventSource::PathParam(name) => (matched.param(name).map(str::to_string), None),
            EventSource::BodyField(field) => match body_field(request.body, field) {
                Ok(Some(Value::String(event))) => (Some(event), None),
                Ok(_) => (None, None),
                Err(why) => (None, Some(why)),
            },
        };
        let Some(event) = event.filter(|e| !e.is_empty()) else {
            let message = match (source, why) {
                (EventSource::PathParam(name), _) => format!("the request path has no event in {{{name}}}"),
                (EventSource::BodyField(field), Some(why)) => {
                    format!("the event name is read from the body field \"{field}\", but {why}")
                }
                (EventSource::BodyField(field), None) => {
                    format!("the request body has no string field \"{field}\" naming the event")
                }
            };
            return deny(decision, Code::BadRequest, message);
        };
        let listed = !key.event_allowlist.is_empty() && !key.event_allowlist.contains(&event);
        if key.event_denylist.contains(&event) || listed {
            return deny(
                decision,
                Code::EventNotAllowed,
                format!("the API key may not send the event \"{event}\""),
            );
        }
    }
    if rule.attribute_check {
        if let Some(allowed) = &key.attribute_allowlist {
            let body_json = parse_body(request.body);
            let object = match &body_json {
                Ok(Value::Object(map)) => map,
                Ok(_) => return deny(decision, Code::BadRequest, "the request body must be a JSON object".into()),
                Err(why) => return deny(decision, Code::BadRequest, format!("the attributes cannot be checked: {why}")),
            };
            let mut refused: Vec<String> = Vec::new();
            for (field, value) in object {
                if field == "tags" {
                    let Some(tags) = value.as_array() else {
                        return deny(decision, Code::BadRequest, "the body field \"tags\" must be an array of strings".into());
                    };
                    for tag in tags {
                        let Some(tag) = tag.as_str() else {
                            return deny(decision, Code::BadRequest, "the body field \"tags\" must be an array of strings".into());
                        };
                        if !allowed.contains(tag) {
                            refused.push(tag.to_string());
                        }
                    }
                } else if !allowed.contains(field) {
                    refused.push(field.clone());
                }
            }
            if !refused.is_empty() {
                refused.sort();
                refused.dedup();
                return deny(
                    decision,
                    Code::AttributeNotAllowed,
                    format!("the API key may not modify: {}", refused.join(", ")),
                );
            }
        }
    }
    decision.valid = true;
    decision.message = "the API key is valid for this request".into();
    decision
}

/// The body as a JSON document, for the attribute check (at most [`MAX_INSPECTED_BODY`] bytes).
pub fn parse_body(body: Option<&[u8]>) -> Result<Value, &'static str> {
    let body = body.filter(|b| !b.is_empty()).ok_or("the request has no body")?;
    if body.len() > MAX_INSPECTED_BODY {
        return Err("the request body is larger than 256 KiB");
    }
    serde_json::from_slice(body).map_err(|_| "the request body is not valid JSON")
}

/// The value of one top-level field of a JSON object body (the last one if it repeats), found
/// without building the document; `Ok(None)` when the body is JSON but not an object holding it.
pub fn body_field(body: Option<&[u8]>, field: &str) -> Result<Option<Value>, &'static str> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    struct IsField<'f>(&'f str);
    impl<'de> DeserializeSeed<'de> for IsField<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl Visitor<'_> for IsField<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a field name")
        }
        fn visit_str<E>(self, name: &str) -> Result<bool, E> {
            Ok(name == self.0)
        }
    }
    /// Skips one value while checking it as strictly as parsing it would (serde's `IgnoredAny`
    /// does not check that a number is in range, found by fuzzing), without building it.
    struct Skip;
    impl<'de> DeserializeSeed<'de> for Skip {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Skip {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while map.next_key_seed(Skip)?.is_some() {
                map.next_value_seed(Skip)?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Skip)?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    struct Scan<'f>(&'f str);
    impl<'de> Visitor<'de> for Scan<'_> {
        type Value = Option<Value>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
            let mut found = None;
            while let Some(wanted) = map.next_key_seed(IsField(self.0))? {
                if wanted {
                    found = Some(map.next_value::<Value>()?);
                } else {
                    map.next_value_seed(Skip)?;
                }
            }
            Ok(found)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Value>, A::Error> {
            while seq.next_element_seed(Skip)?.is_some() {}
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Option<Value>, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Option<Value>, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Option<Value>, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Option<Value>, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Option<Value>, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Option<Value>, E> {
            Ok(None)
        }
    }

    let body = body.filter(|b| !b.is_empty()).ok_or("the request has no body")?;
    if body.len() > MAX_INSPECTED_BODY {
        return Err("the request body is larger than 256 KiB");
    }
    // Skipped values are not checked for UTF-8 by serde_json (found by fuzzing): check the whole
    // body first, or a body the origin would refuse or read otherwise could pass the scan.
    let body = std::str::from_utf8(body).map_err(|_| "the request body is not valid JSON")?;
    let mut reader = serde_json::Deserializer::from_str(body);
    let found = reader.deserialize_any(Scan(field)).map_err(|_| "the request body is not valid JSON")?;
    reader.end().map_err(|_| "the request body is not valid JSON")?;
    Ok(found)
}

/// The check for a key used outside a route: the management API (`keys:read`, ...) and `/ping`.
/// Same precedence as [`decide`] up to the origin allowlist, then the permission if one is asked
/// for. Of `request` only the client address, Basic workspace, `Origin` and `Referer` are read.
pub fn decide_permission(key: &CompiledKey, permission: Option<&str>, request: &GateRequest<'_>, now_ms: i64) -> Decision {
    let policy = match permission {
        // One rule granting the asked permission on the one path we then ask about.
        Some(p) => RoutePolicy::from_doc(super::policy::PolicyDoc {
            rules: vec![super::policy::RuleDoc {
                method: "*".into(),
                path: "/".into(),
                permission: p.into(),
                event: None,
                profile: None,
                attribute_check: false,
                cost: None,
            }],
            ..Default::default()
        }),
        None => RoutePolicy::from_doc(super::policy::PolicyDoc::default()),
    };
    let Ok(policy) = policy else {
        return Decision::deny(Code::PermissionDenied, "the permission asked for is not valid");
    };
    let request = GateRequest { method: "GET", path: "/", body: None, ..*request };
    let decision = decide(key, &policy, &request, now_ms);
    if permission.is_none() && decision.code == Code::RouteNotAllowed {
        // No permission asked for: reaching the route check means every key check passed.
        return Decision {
            valid: true,
            code: Code::Valid,
            message: "the API key is valid".into(),
            rule: None,
            permission: None,
            ..decision
        };
    }
    // A profile key has no profile in a management path; its permission alone decides here.
    if decision.code == Code::ProfileMismatch {
        return Decision { valid: true, code: Code::Valid, message: "the API key is valid".into(), ..decision };
    }
    decision
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    use crate::core::record::KeyRecord;

    const NOW: i64 = 1_780_000_000_000;

    fn key(view: Value) -> CompiledKey {
        CompiledKey::compile(KeyRecord::from_view(&view).unwrap()).unwrap()
    }

    fn policy() -> RoutePolicy {
        RoutePolicy::from_value(&json!({"rules": [
            {"method": "GET", "path": "/users/{id}", "permission": "users:read"},
            {"method": "DELETE", "path": "/users/{id}", "permission": "users:delete"},
            {"method": "POST", "path": "/events/{event}", "permission": "events:create", "event": "path:event"},
            {"method": "POST", "path": "/events", "permission": "events:create", "event": "body:action"},
            {"method": "PUT", "path": "/profiles/{p}", "permission": "profiles:update", "profile": "p", "attribute_check": true},
        ]}))
        .unwrap()
    }

    fn run(view: Value, method: &str, path: &str, ip: Option<&str>, body: Option<&str>, ws: Option<&str>) -> Decision {
        let request = GateRequest { method, path, client_ip: ip, body: body.map(str::as_bytes), basic_workspace: ws, ..GateRequest::default() };
        decide(&key(view), &policy(), &request, NOW)
    }

    /// A key, a request (method, path, client IP, body, Basic workspace) and the expected code.
    type Row = (Value, &'static str, &'static str, Option<&'static str>, Option<&'static str>, Option<&'static str>, Code);

    #[test]
    fn each_rule_allows_and_denies() {
        let table: &[Row] = &[
            (json!({"permissions": ["users:read"]}), "GET", "/users/1", None, None, None, Code::Valid),
            (json!({"permissions": ["users:read"]}), "DELETE", "/users/1", None, None, None, Code::PermissionDenied),
            (json!({"permissions": ["users:*"]}), "DELETE", "/users/1", None, None, None, Code::Valid),
            (json!({"permissions": ["*"]}), "GET", "/nowhere", None, None, None, Code::RouteNotAllowed),
            (json!({"permissions": ["*"], "active": false}), "GET", "/users/1", None, None, None, Code::KeyExpired),
            (json!({"permissions": ["*"], "expires_at": "2020-01-01T00:00:00Z"}), "GET", "/users/1", None, None, None, Code::KeyExpired),
            (json!({"permissions": ["*"], "expires_at": "2099-01-01T00:00:00Z"}), "GET", "/users/1", None, None, None, Code::Valid),
            (json!({"permissions": ["*"], "status": "revoked"}), "GET", "/users/1", None, None, None, Code::KeyRevoked),
            (json!({"permissions": ["*"], "ip_allowlist": ["10.0.0.0/8"]}), "GET", "/users/1", Some("10.9.9.9"), None, None, Code::Valid),
            (json!({"permissions": ["*"], "ip_allowlist": ["10.0.0.0/8"]}), "GET", "/users/1", Some("11.0.0.1"), None, None, Code::IpNotAllowed),
            (json!({"permissions": ["*"], "ip_allowlist": ["10.0.0.0/8"]}), "GET", "/users/1", None, None, None, Code::IpNotAllowed),
            (json!({"permissions": ["*"], "workspace": "w1"}), "GET", "/users/1", None, None, Some("w1"), Code::Valid),
            (json!({"permissions": ["*"], "workspace": "w1"}), "GET", "/users/1", None, None, Some("w2"), Code::WorkspaceMismatch),
            (json!({"permissions": ["*"], "event_allowlist": ["a"]}), "POST", "/events/a", None, None, None, Code::Valid),
            (json!({"permissions": ["*"], "event_allowlist": ["a"]}), "POST", "/events/b", None, None, None, Code::EventNotAllowed),
            (json!({"permissions": ["*"], "event_denylist": ["a"]}), "POST", "/events", None, Some(r#"{"action":"a"}"#), None, Code::EventNotAllowed),
            (json!({"permissions": ["*"]}), "POST", "/events", None, Some("[]"), None, Code::BadRequest),
            (json!({"permissions": ["*"], "attribute_allowlist": ["email"]}), "PUT", "/profiles/p", None, Some(r#"{"email":"x"}"#), None, Code::Valid),
            (json!({"permissions": ["*"], "attribute_allowlist": ["email"]}), "PUT", "/profiles/p", None, Some(r#"{"age":1}"#), None, Code::AttributeNotAllowed),
            (json!({"permissions": ["*"], "type": "profile", "profile_id": "p"}), "PUT", "/profiles/p", None, Some("{}"), None, Code::Valid),
            (json!({"permissions": ["*"], "type": "profile", "profile_id": "p"}), "PUT", "/profiles/q", None, Some("{}"), None, Code::ProfileMismatch),
            (json!({"permissions": ["*"], "type": "profile", "profile_id": "p"}), "GET", "/users/1", None, None, None, Code::ProfileMismatch),
        ];
        for (view, method, path, ip, body, ws, code) in table {
            let d = run(view.clone(), method, path, *ip, *body, *ws);
            assert_eq!(d.code, *code, "{view} {method} {path}: {}", d.message);
            assert_eq!(d.valid, *code == Code::Valid);
        }
    }

    #[test]
    fn precedence_when_several_apply() {
        // Everything wrong at once: each check, removed in turn, reveals the next one.
        let mut view = json!({
            "permissions": [], "status": "revoked", "active": false, "workspace": "w1",
            "ip_allowlist": ["10.0.0.0/8"], "type": "profile", "profile_id": "p", "event_allowlist": ["x"],
        });
        let order = [
            ("status", Code::KeyRevoked),
            ("active", Code::KeyExpired),
            ("workspace", Code::WorkspaceMismatch),
            ("ip_allowlist", Code::IpNotAllowed),
            ("permissions", Code::PermissionDenied),
            ("type", Code::ProfileMismatch),
            ("event_allowlist", Code::EventNotAllowed),
        ];
        for (fix, code) in order {
            let d = run(view.clone(), "POST", "/events/y", Some("192.0.2.1"), None, Some("w2"));
            assert_eq!(d.code, code, "before fixing {fix}: {}", d.message);
            let map = view.as_object_mut().unwrap();
            match fix {
                "status" => {
                    map.remove("status");
                }
                "active" => {
                    map.insert("active".into(), json!(true));
                }
                "workspace" => {
                    map.insert("workspace".into(), json!("w2"));
                }
                "ip_allowlist" => {
                    map.insert("ip_allowlist".into(), json!([]));
                }
                "permissions" => {
                    map.insert("permissions".into(), json!(["events:create"]));
                }
                "type" => {
                    map.insert("type".into(), json!("workspace"));
                    map.insert("profile_id".into(), Value::Null);
                }
                _ => {
                    map.insert("event_allowlist".into(), json!(["y"]));
                }
            }
        }
        assert!(run(view, "POST", "/events/y", Some("192.0.2.1"), None, Some("w2")).valid);
    }

    /// Found by fuzzing (fuzz/fuzz_targets/body_event.rs): invalid UTF-8 in a skipped string, a
    /// skipped number out of range.
    #[test]
    fn body_scan_refuses_what_parsing_refuses() {
        let bodies: [&[u8]; 6] = [
            b"[22222E2222] ",
            b"{\"x\":[1e999],\"action\":\"a\"}",
            b"{\"x\":{\"y\":-1e400}}",
            b"[1,2,{\"a\x8a\":3}] ",
            b"{\"x\":\"\xff\",\"action\":\"a\"}",
            b"{\"act\xffion\":\"b\",\"action\":\"a\"}",
        ];
        for body in bodies {
            assert_eq!(body_field(Some(body), "action"), Err("the request body is not valid JSON"));
            assert_eq!(body_field(Some(body), "action"), parse_body(Some(body)).map(|v| v.get("action").cloned()));
        }
    }

    #[test]
    fn origin_allowlist_reads_origin_else_referer() {
        let view = json!({"permissions": ["*"], "origin_allowlist": ["https://app.example.com", "https://*.example.org"]});
        let k = key(view);
        let at = |origin: Option<&str>, referer: Option<&str>| {
            let request = GateRequest { method: "GET", path: "/users/1", origin, referer, ..GateRequest::default() };
            decide(&k, &policy(), &request, NOW).code
        };
        assert_eq!(at(Some("https://app.example.com"), None), Code::Valid);
        assert_eq!(at(Some("https://shop.example.org"), None), Code::Valid);
        assert_eq!(at(None, Some("https://app.example.com/page?x=1")), Code::Valid);
        assert_eq!(at(None, Some("https://a.b.example.org/")), Code::Valid);
        assert_eq!(at(None, None), Code::OriginNotAllowed);
        assert_eq!(at(Some("https://app.example.com.evil.net"), None), Code::OriginNotAllowed);
        assert_eq!(at(Some("https://evilexample.org"), None), Code::OriginNotAllowed);
        assert_eq!(at(Some("https://example.org"), None), Code::OriginNotAllowed);
        assert_eq!(at(Some("http://app.example.com"), None), Code::OriginNotAllowed);
        // Origin decides when present, even against an allowed Referer; an opaque one is refused.
        assert_eq!(at(Some("https://evil.net"), Some("https://app.example.com/")), Code::OriginNotAllowed);
        assert_eq!(at(Some("null"), Some("https://app.example.com/")), Code::OriginNotAllowed);
        assert_eq!(at(None, Some("not a url")), Code::OriginNotAllowed);
        // No allowlist: any origin, or none.
        let open = key(json!({"permissions": ["*"]}));
        let request = GateRequest { method: "GET", path: "/users/1", origin: Some("https://evil.net"), ..GateRequest::default() };
        assert!(decide(&open, &policy(), &request, NOW).valid);
    }

    #[test]
    fn origin_is_checked_after_the_ip_and_before_the_route() {
        let k = key(json!({"permissions": [], "ip_allowlist": ["10.0.0.0/8"], "origin_allowlist": ["https://app.example.com"]}));
        let request = |ip, origin| GateRequest { method: "GET", path: "/nowhere", client_ip: Some(ip), origin, ..GateRequest::default() };
        let code = |r: GateRequest<'_>| decide(&k, &policy(), &r, NOW).code;
        assert_eq!(code(request("11.0.0.1", Some("https://evil.net"))), Code::IpNotAllowed);
        assert_eq!(code(request("10.0.0.1", Some("https://evil.net"))), Code::OriginNotAllowed);
        assert_eq!(code(request("10.0.0.1", Some("https://app.example.com"))), Code::RouteNotAllowed);
        let revoked = key(json!({"permissions": ["*"], "status": "revoked", "origin_allowlist": ["https://app.example.com"]}));
        let r = GateRequest { method: "GET", path: "/users/1", origin: Some("https://evil.net"), ..GateRequest::default() };
        assert_eq!(decide(&revoked, &policy(), &r, NOW).code, Code::KeyRevoked);
    }

    #[test]
    fn head_is_checked_as_get_unless_a_rule_names_it() {
        let d = run(json!({"permissions": ["users:read"]}), "HEAD", "/users/1", None, None, None);
        assert_eq!((d.code, d.rule), (Code::Valid, Some(0)));
        assert_eq!(run(json!({"permissions": ["users:delete"]}), "HEAD", "/users/1", None, None, None).code, Code::PermissionDenied);
        assert_eq!(run(json!({"permissions": ["*"]}), "HEAD", "/events/x", None, None, None).code, Code::RouteNotAllowed);
        let named = RoutePolicy::from_value(&json!({"rules": [
            {"method": "GET", "path": "/a/{id}", "permission": "a:read"},
            {"method": "HEAD", "path": "/a/{id}", "permission": "a:peek"},
            {"method": "GET", "path": "/b", "permission": "b:read"},
        ]}))
        .unwrap();
        let k = key(json!({"permissions": ["a:read", "b:read"]}));
        let head = |path| decide(&k, &named, &GateRequest { method: "HEAD", path, ..GateRequest::default() }, NOW);
        assert_eq!((head("/a/1").code, head("/a/1").permission.as_deref()), (Code::PermissionDenied, Some("a:peek")));
        assert_eq!(head("/b").code, Code::Valid);
    }

    #[test]
    fn management_permission_checks() {
        let k = key(json!({"permissions": ["keys:read"]}));
        let none = GateRequest::default();
        assert!(decide_permission(&k, Some("keys:read"), &none, NOW).valid);
        assert_eq!(decide_permission(&k, Some("keys:delete"), &none, NOW).code, Code::PermissionDenied);
        assert!(decide_permission(&k, None, &none, NOW).valid);
        let expired = key(json!({"permissions": ["*"], "active": false}));
        assert_eq!(decide_permission(&expired, None, &none, NOW).code, Code::KeyExpired);
        let browser = key(json!({"permissions": ["*"], "origin_allowlist": ["https://app.example.com"]}));
        assert_eq!(decide_permission(&browser, None, &none, NOW).code, Code::OriginNotAllowed);
        let from_app = GateRequest { origin: Some("https://app.example.com"), ..GateRequest::default() };
        assert!(decide_permission(&browser, Some("keys:read"), &from_app, NOW).valid);
    }

    fn arb_event() -> impl Strategy<Value = String> {
        "[a-d]{1,2}"
    }

    proptest! {
        #[test]
        fn decision_is_deterministic(method in "(GET|POST|PUT|DELETE|get)", path in "/[a-z/{}%.0-9]{0,30}",
                                     ip in proptest::option::of("[0-9.:a-f]{0,20}"), body in proptest::option::of(".{0,40}"),
                                     ws in proptest::option::of("w[12]")) {
            let view = json!({"permissions": ["users:*", "events:create"], "workspace": "w1", "ip_allowlist": ["10.0.0.0/8", "::/0"]});
            let a = run(view.clone(), &method, &path, ip.as_deref(), body.as_deref(), ws.as_deref());
            let b = run(view, &method, &path, ip.as_deref(), body.as_deref(), ws.as_deref());
            prop_assert_eq!(a, b);
        }

        #[test]
        fn denylist_always_wins(allow in proptest::collection::vec(arb_event(), 0..6),
                                deny in proptest::collection::vec(arb_event(), 1..6),
                                pick in any::<prop::sample::Index>()) {
            let event = pick.get(&deny).clone();
            let view = json!({"permissions": ["*"], "event_allowlist": allow, "event_denylist": deny});
            let by_path = run(view.clone(), "POST", &format!("/events/{event}"), None, None, None);
            prop_assert_eq!(by_path.code, Code::EventNotAllowed);
            let body = json!({"action": event}).to_string();
            let by_body = run(view, "POST", "/events", None, Some(&body), None);
            prop_assert_eq!(by_body.code, Code::EventNotAllowed);
        }

        #[test]
        fn allowlist_admits_only_its_events(allow in proptest::collection::vec(arb_event(), 1..6), event in arb_event()) {
            let view = json!({"permissions": ["*"], "event_allowlist": allow.clone()});
            let d = run(view, "POST", &format!("/events/{event}"), None, None, None);
            prop_assert_eq!(d.valid, allow.contains(&event));
        }

        #[test]
        fn body_field_scan_agrees_with_parsing_the_document(
            entries in proptest::collection::vec(("[a-c]", prop_oneof![
                "[a-z]{0,4}".prop_map(Value::from), any::<i32>().prop_map(Value::from),
                Just(json!({"a": [1, {"b": "x"}]})), Just(Value::Null)]), 0..5),
            garbage in proptest::option::of("[\\[\\]{}:,\"a0 ]{0,12}"),
        ) {
            let mut text = String::from("{");
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 { text.push(','); }
                text.push_str(&format!("\"{k}\":{v}"));
            }
            text.push('}');
            let body = garbage.unwrap_or(text);
            let scanned = body_field(Some(body.as_bytes()), "a");
            let parsed = parse_body(Some(body.as_bytes())).map(|v| v.get("a").cloned());
            prop_assert_eq!(scanned, parsed, "{}", body);
        }

        #[test]
        fn decide_never_panics_on_any_request(method in ".{0,8}", path in ".{0,60}", ip in proptest::option::of(".{0,40}"),
                                             body in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
                                             ws in proptest::option::of(".{0,10}"), origin in proptest::option::of(".{0,30}"),
                                             referer in proptest::option::of(".{0,40}")) {
            let k = key(json!({"permissions": ["*"], "attribute_allowlist": ["a"], "event_allowlist": ["e"], "ip_allowlist": ["0.0.0.0/0"],
                               "origin_allowlist": ["https://*.example.com", "http://localhost:3000"]}));
            let request = GateRequest { method: &method, path: &path, client_ip: ip.as_deref(), body: body.as_deref(), basic_workspace: ws.as_deref(), origin: origin.as_deref(), referer: referer.as_deref() };
            let _ = decide(&k, &policy(), &request, NOW);
        }
    }

    #[test]
    fn a_role_adds_the_policy_permissions_and_only_when_defined() {
        let with_roles = RoutePolicy::from_value(&json!({"rules": [
            {"method": "GET", "path": "/users/{id}", "permission": "users:read"},
            {"method": "DELETE", "path": "/users/{id}", "permission": "users:delete"},
            {"method": "GET", "path": "/invoices", "permission": "invoices:read"},
        ], "roles": {"reader": ["*:read"], "billing": ["invoices:*"]}}))
        .unwrap();
        let code = |view: Value, method: &str, path: &str| {
            decide(&key(view), &with_roles, &GateRequest { method, path, ..GateRequest::default() }, NOW).code
        };
        assert_eq!(code(json!({"role": "reader"}), "GET", "/users/1"), Code::Valid);
        assert_eq!(code(json!({"role": "reader"}), "GET", "/invoices"), Code::Valid);
        assert_eq!(code(json!({"role": "reader"}), "DELETE", "/users/1"), Code::PermissionDenied);
        assert_eq!(code(json!({"role": "billing"}), "GET", "/invoices"), Code::Valid);
        assert_eq!(code(json!({"role": "billing"}), "GET", "/users/1"), Code::PermissionDenied);
        assert_eq!(code(json!({"role": "billing", "permissions": ["users:*"]}), "DELETE", "/users/1"), Code::Valid);
        // The default role grants nothing unless the policy defines it; an undefined role neither.
        assert_eq!(code(json!({}), "GET", "/users/1"), Code::PermissionDenied);
        assert_eq!(code(json!({"role": "ghost"}), "GET", "/users/1"), Code::PermissionDenied);
        // The same keys under a policy without roles.
        assert_eq!(decide(&key(json!({"role": "reader"})), &policy(), &GateRequest { method: "GET", path: "/users/1", ..GateRequest::default() }, NOW).code, Code::PermissionDenied);
    }
}
