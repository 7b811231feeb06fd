//! The decision: given a key's record, the route policy and the facts of a request, allow or deny.
//!
//! Precedence, first failing check wins, so that a denial never tells the holder more than the
//! checks before it already allowed them to learn:
//!
//! 1. `KEY_REVOKED`
//! 2. `KEY_EXPIRED` (the `active` flag, then `expires_at`)
//! 3. `WORKSPACE_MISMATCH` (Basic credentials naming another workspace)
//! 4. `IP_NOT_ALLOWED`
//! 5. `BAD_REQUEST` (a path that cannot be matched safely, such as `%2F` or `..` segments)
//! 6. `ROUTE_NOT_ALLOWED` (no rule matches)
//! 7. `PERMISSION_DENIED`
//! 8. `PROFILE_MISMATCH`
//! 9. `BAD_REQUEST` (no readable event), then `EVENT_NOT_ALLOWED`
//! 10. `BAD_REQUEST` (unreadable body), then `ATTRIBUTE_NOT_ALLOWED`
//!
//! Before any of these the gate itself answers `BAD_REQUEST` (two different keys),
//! `MISSING_KEY`, `MALFORMED_KEY` (no KV read) and `UNKNOWN_KEY`.

use serde::Serialize;
use serde_json::Value;

use super::code::Code;
use super::ip::parse_addr;
use super::policy::{EventSource, RouteMatch, RoutePolicy};
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
    let matched: RouteMatch<'_> = match policy.find(request.method, request.path) {
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
    if !key.permissions.grants(&rule.permission) {
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
    let body_json = if rule.needs_body() { parse_body(request.body) } else { Err("") };
    if let Some(source) = &rule.event {
        let event = match source {
            EventSource::PathParam(name) => matched.param(name).map(str::to_string),
            EventSource::BodyField(field) => body_json
                .as_ref()
                .ok()
                .and_then(|v| v.get(field.as_str()))
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        let Some(event) = event.filter(|e| !e.is_empty()) else {
            let message = match source {
                EventSource::PathParam(name) => format!("the request path has no event in {{{name}}}"),
                EventSource::BodyField(field) => match &body_json {
                    Err(why) => format!("the event name is read from the body field \"{field}\", but {why}"),
                    Ok(_) => format!("the request body has no string field \"{field}\" naming the event"),
                },
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

fn parse_body(body: Option<&[u8]>) -> Result<Value, &'static str> {
    let body = body.filter(|b| !b.is_empty()).ok_or("the request has no body")?;
    if body.len() > MAX_INSPECTED_BODY {
        return Err("the request body is larger than 256 KiB");
    }
    serde_json::from_slice(body).map_err(|_| "the request body is not valid JSON")
}

/// The check for a key used outside a route: the management API (`keys:read`, ...) and `/ping`.
/// Same precedence as [`decide`] up to the IP allowlist, then the permission if one is asked for.
pub fn decide_permission(
    key: &CompiledKey,
    permission: Option<&str>,
    client_ip: Option<&str>,
    basic_workspace: Option<&str>,
    now_ms: i64,
) -> Decision {
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
            }],
        }),
        None => RoutePolicy::from_doc(super::policy::PolicyDoc { rules: Vec::new() }),
    };
    let Ok(policy) = policy else {
        return Decision::deny(Code::PermissionDenied, "the permission asked for is not valid");
    };
    let request = GateRequest { method: "GET", path: "/", client_ip, body: None, basic_workspace };
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
