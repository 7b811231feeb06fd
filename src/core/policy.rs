//! The route policy: which permission each method and path template needs, and where a route's
//! event name and profile id are found. The first matching rule decides; no match is a denial.
//! `HEAD` is matched as `GET` unless a rule names `HEAD` for the path. The policy's optional
//! `cors` settings are validated here and applied by [`super::cors`].

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::method::MethodOverride;
use super::cors::{CorsDoc, CorsPolicy};
use super::limits::{whole_number, DEFAULT_COST, MAX_COST};
use super::record::{is_concrete_permission, is_group_permission, FieldError, PermissionSet};

pub const MAX_RULES: usize = 10_000;
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;
const MAX_SEGMENTS: usize = 32;

/// One rule exactly as written in the policy document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub method: String,
    pub path: String,
    pub permission: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub attribute_check: bool,
    /// Credits an allowed request on this route spends from a key that has credits (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    pub rules: Vec<RuleDoc>,
    /// What the gate does with a method override (`X-HTTP-Method-Override`, `?_method=`...).
    #[serde(default, skip_serializing_if = "MethodOverride::is_default")]
    pub method_override: MethodOverride,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsDoc>,
    /// Named groups of permissions: a key whose `role` names one holds them too. Kept as the JSON
    /// object it was given (validated by [`RoutePolicy::from_value`]).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub roles: Map<String, Value>,
}

/// The role a key has when none is given: it grants nothing unless the policy defines it.
pub const DEFAULT_ROLE: &str = "organization_admin";
pub const MAX_ROLES: usize = 1000;

/// The policy's roles by name (sorted, as the policy's JSON object keeps them): each one's
/// permissions as written, and indexed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roles(Vec<(String, Vec<String>, PermissionSet)>);

impl Roles {
    fn find(&self, role: &str) -> Option<&(String, Vec<String>, PermissionSet)> {
        self.0.binary_search_by(|(name, _, _)| name.as_str().cmp(role)).ok().and_then(|i| self.0.get(i))
    }

    /// Whether `role` grants `permission` (a concrete `module:action`); an unknown role grants nothing.
    pub fn grants(&self, role: &str, permission: &str) -> bool {
        !self.0.is_empty() && self.find(role).is_some_and(|(_, _, set)| set.grants(permission))
    }

    /// Whether a record may name `role`: a defined role, or the default one.
    pub fn knows(&self, role: &str) -> bool {
        role == DEFAULT_ROLE || self.find(role).is_some()
    }

    /// The permissions `role` grants, as the policy writes them (none for an unknown role).
    pub fn permissions(&self, role: &str) -> &[String] {
        self.find(role).map_or(&[], |(_, list, _)| list.as_slice())
    }

    /// The defined roles' names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _, _)| name.as_str())
    }
}

fn is_role_name(name: &str) -> bool {
    (1..=100).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Validates the `roles` object (each field named: `roles.reader[1]`) and indexes it.
fn compile_roles(doc: &Map<String, Value>) -> Result<Roles, FieldError> {
    if doc.len() > MAX_ROLES {
        return Err(FieldError::new("roles", format!("must define at most {MAX_ROLES} roles")));
    }
    let mut roles = Vec::with_capacity(doc.len());
    // A JSON object's keys come sorted (serde_json's map is ordered), so the list is too.
    for (name, list) in doc {
        if !is_role_name(name) {
            return Err(FieldError::new(format!("roles.{name}"), "a role name is 1 to 100 characters of A-Z, a-z, 0-9, _, - and ."));
        }
        let items = list.as_array().ok_or_else(|| FieldError::new(format!("roles.{name}"), "must be an array of permissions"))?;
        let mut permissions = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(p) if is_group_permission(p) => permissions.push(p.to_string()),
                _ => {
                    return Err(FieldError::new(
                        format!("roles.{name}[{i}]"),
                        format!("{item} is not a permission (expected module:action, module:*, *:action or *)"),
                    ))
                }
            }
        }
        let set = PermissionSet::new(&permissions);
        roles.push((name.clone(), permissions, set));
    }
    Ok(Roles(roles))
}

/// Where a route's event name is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSource {
    PathParam(String),
    BodyField(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteRule {
    pub index: usize,
    pub method: String,
    pub path: String,
    pub permission: String,
    pub event: Option<EventSource>,
    pub profile: Option<String>,
    pub attribute_check: bool,
    /// Credits an allowed request spends ([`super::limits::DEFAULT_COST`] unless the rule says).
    pub cost: u64,
    segments: Vec<Segment>,
}

impl RouteRule {
    /// Whether deciding on this route needs the request body.
    pub fn needs_body(&self) -> bool {
        self.attribute_check || matches!(self.event, Some(EventSource::BodyField(_)))
    }

    fn method_matches(&self, method: &str) -> bool {
        self.method == "*" || self.method == method
    }
}

/// Rules ending at a node of the path trie, by their policy index.
#[derive(Debug, Clone, Default, PartialEq)]
struct TrieNode {
    literals: HashMap<String, TrieNode>,
    param: Option<Box<TrieNode>>,
    rules: Vec<usize>,
}

/// A validated policy, indexed so that finding the first matching rule does not scan every rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePolicy {
    doc: PolicyDoc,
    rules: Vec<RouteRule>,
    trie: TrieNode,
    cors: Option<CorsPolicy>,
    /// Whether any rule names `HEAD` (else a `HEAD` is matched as `GET` without a second look).
    names_head: bool,
    roles: Roles,
}

/// The rule that matched a request, with the values of its path parameters (percent-decoded).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch<'p> {
    pub rule: &'p RouteRule,
    pub params: Vec<(String, String)>,
    /// The policy's roles, for a key whose own permissions lack the rule's.
    pub roles: &'p Roles,
}

impl RouteMatch<'_> {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A request path that cannot be matched safely (so it is refused, not guessed at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    pub message: String,
}

impl RoutePolicy {
    /// Parses and validates a policy document; errors name the offending field (`rules[3].path`).
    pub fn parse(json: &str) -> Result<RoutePolicy, FieldError> {
        if json.len() > MAX_POLICY_BYTES {
            return Err(FieldError::new("policy", format!("must be at most {MAX_POLICY_BYTES} bytes")));
        }
        let value: Value = serde_json::from_str(json)
            .map_err(|e| FieldError::new("policy", format!("is not valid JSON: {e}")))?;
        RoutePolicy::from_value(&value)
    }

    pub fn from_value(value: &Value) -> Result<RoutePolicy, FieldError> {
        let object = value
            .as_object()
            .ok_or_else(|| FieldError::new("policy", "must be a JSON object with a \"rules\" array"))?;
        if let Some(unknown) = object.keys().find(|k| !matches!(k.as_str(), "rules" | "method_override" | "cors" | "roles")) {
            return Err(FieldError::new(unknown.clone(), "is not a policy field (\"rules\", \"method_override\", \"cors\", \"roles\")"));
        }
        let roles = match object.get("roles") {
            None => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(_) => return Err(FieldError::new("roles", "must be an object of role name to permissions")),
        };
        let method_override = match object.get("method_override") {
            None => MethodOverride::default(),
            Some(value) => serde_json::from_value(value.clone()).map_err(|_| {
                FieldError::new("method_override", "must be \"refuse\", \"strip\" or \"honour\"")
            })?,
        };
        let rules = object
            .get("rules")
            .and_then(Value::as_array)
            .ok_or_else(|| FieldError::new("rules", "must be an array"))?;
        if rules.len() > MAX_RULES {
            return Err(FieldError::new("rules", format!("must have at most {MAX_RULES} rules")));
        }
        let mut docs = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            // Checked before serde so that the error names the field, not the rule.
            if let Some(cost) = rule.get("cost") {
                if whole_number(cost).filter(|c| *c <= MAX_COST).is_none() {
                    return Err(FieldError::new(format!("rules[{i}].cost"), format!("must be an integer from 0 to {MAX_COST}")));
                }
            }
            let doc: RuleDoc = serde_json::from_value(rule.clone()).map_err(|e| {
                FieldError::new(format!("rules[{i}]"), e.to_string())
            })?;
            docs.push(doc);
        }
        let (cors_doc, cors) = match object.get("cors") {
            None | Some(Value::Null) => (None, None),
            Some(value) => {
                let (doc, compiled) = CorsPolicy::from_value(value)?;
                (Some(doc), Some(compiled))
            }
        };
        RoutePolicy::build(PolicyDoc { rules: docs, method_override, cors: cors_doc, roles }, cors)
    }

    pub fn from_doc(doc: PolicyDoc) -> Result<RoutePolicy, FieldError> {
        let cors = match &doc.cors {
            None => None,
            Some(c) => {
                let value = serde_json::to_value(c).map_err(|e| FieldError::new("cors", e.to_string()))?;
                Some(CorsPolicy::from_value(&value)?.1)
            }
        };
        RoutePolicy::build(doc, cors)
    }

    fn build(doc: PolicyDoc, cors: Option<CorsPolicy>) -> Result<RoutePolicy, FieldError> {
        let mut rules = Vec::with_capacity(doc.rules.len());
        let mut trie = TrieNode::default();
        for (index, rule) in doc.rules.iter().enumerate() {
            let compiled = compile_rule(index, rule)?;
            let mut node = &mut trie;
            for segment in &compiled.segments {
                node = match segment {
                    Segment::Literal(s) => node.literals.entry(s.clone()).or_default(),
                    Segment::Param(_) => node.param.get_or_insert_with(Default::default),
                };
            }
            node.rules.push(index);
            rules.push(compiled);
        }
        let names_head = rules.iter().any(|r| r.method == "HEAD");
        let roles = compile_roles(&doc.roles)?;
        Ok(RoutePolicy { doc, rules, trie, cors, names_head, roles })
    }

    pub fn doc(&self) -> &PolicyDoc {
        &self.doc
    }

    pub fn rules(&self) -> &[RouteRule] {
        &self.rules
    }

    pub fn method_override(&self) -> MethodOverride {
        self.doc.method_override
    }

    pub fn cors(&self) -> Option<&CorsPolicy> {
        self.cors.as_ref()
    }

    pub fn roles(&self) -> &Roles {
        &self.roles
    }

    /// The first rule (in policy order) matching `method` and `path`, if any. A `HEAD` is matched
    /// as a `GET` (HTTP's HEAD is a GET without the body) unless some rule names `HEAD` for this
    /// path, in which case it is matched as itself.
    pub fn find(&self, method: &str, path: &str) -> Result<Option<RouteMatch<'_>>, PathError> {
        let segments = split_request_path(path)?;
        let mut best: Option<usize> = None;
        let mut method = method;
        if method == "HEAD" {
            let mut named: Option<usize> = None;
            if self.names_head {
                collect(&self.trie, &segments, "HEAD", &self.rules, &mut named, true);
            }
            if named.is_none() {
                method = "GET";
            }
        }
        collect(&self.trie, &segments, method, &self.rules, &mut best, false);
        let Some(rule) = best.and_then(|i| self.rules.get(i)) else {
            return Ok(None);
        };
        let params = rule
            .segments
            .iter()
            .zip(segments.iter())
            .filter_map(|(template, actual)| match template {
                Segment::Param(name) => Some((name.clone(), actual.clone())),
                Segment::Literal(_) => None,
            })
            .collect();
        Ok(Some(RouteMatch { rule, params, roles: &self.roles }))
    }
}

/// Finds the first rule at the end of `rest` whose method matches (`exact`: names `method` itself,
/// not `*`).
fn collect(node: &TrieNode, rest: &[String], method: &str, rules: &[RouteRule], best: &mut Option<usize>, exact: bool) {
    match rest.split_first() {
        None => {
            for &i in &node.rules {
                if best.is_some_and(|b| b <= i) {
                    break;
                }
                let matches = |r: &RouteRule| if exact { r.method == method } else { r.method_matches(method) };
                if rules.get(i).is_some_and(matches) {
                    *best = Some(i);
                    break;
                }
            }
        }
        Some((head, tail)) => {
            if let Some(child) = node.literals.get(head) {
                collect(child, tail, method, rules, best, exact);
            }
            // A parameter stands for one segment, and an empty segment is not one.
            if let Some(child) = node.param.as_ref().filter(|_| !head.is_empty()) {
                collect(child, tail, method, rules, best, exact);
            }
        }
    }
}

fn compile_rule(index: usize, rule: &RuleDoc) -> Result<RouteRule, FieldError> {
    let at = |field: &str| format!("rules[{index}].{field}");
    let method = rule.method.to_ascii_uppercase();
    if method != "*" && (method.is_empty() || method.len() > 16 || !method.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(FieldError::new(at("method"), format!("\"{}\" is not an HTTP method or *", rule.method)));
    }
    let segments = parse_template(&rule.path).map_err(|m| FieldError::new(at("path"), m))?;
    let params: Vec<&str> = segments
        .iter()
        .filter_map(|s| match s {
            Segment::Param(p) => Some(p.as_str()),
            Segment::Literal(_) => None,
        })
        .collect();
    if !is_concrete_permission(&rule.permission) {
        return Err(FieldError::new(
            at("permission"),
            format!("\"{}\" is not a module:action permission", rule.permission),
        ));
    }
    let event = match rule.event.as_deref() {
        None => None,
        Some(source) => Some(match source.split_once(':') {
            Some(("path", name)) if params.contains(&name) => EventSource::PathParam(name.to_string()),
            Some(("path", name)) => {
                return Err(FieldError::new(at("event"), format!("path parameter \"{name}\" is not in the path template")))
            }
            Some(("body", field)) if !field.is_empty() && field.len() <= 100 => {
                EventSource::BodyField(field.to_string())
            }
            _ => {
                return Err(FieldError::new(at("event"), "must be \"path:NAME\" or \"body:FIELD\""))
            }
        }),
    };
    if let Some(profile) = rule.profile.as_deref() {
        if !params.contains(&profile) {
            return Err(FieldError::new(at("profile"), format!("path parameter \"{profile}\" is not in the path template")));
        }
    }
    Ok(RouteRule {
        index,
        method,
        path: rule.path.clone(),
        permission: rule.permission.clone(),
        event,
        profile: rule.profile.clone(),
        attribute_check: rule.attribute_check,
        cost: match rule.cost {
            None => DEFAULT_COST,
            Some(c) if c <= MAX_COST => c,
            Some(_) => return Err(FieldError::new(at("cost"), format!("must be an integer from 0 to {MAX_COST}"))),
        },
        segments,
    })
}

fn parse_template(path: &str) -> Result<Vec<Segment>, String> {
    let rest = path.strip_prefix('/').ok_or("must start with /")?;
    if path.len() > 1000 {
        return Err("must be at most 1000 characters".into());
    }
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = HashSet::new();
    let mut segments = Vec::new();
    for raw in rest.split('/') {
        if raw.is_empty() {
            return Err("must not have empty segments (// or a trailing /)".into());
        }
        if let Some(inner) = raw.strip_prefix('{') {
            let name = inner.strip_suffix('}').ok_or_else(|| format!("segment \"{raw}\" is not a whole {{name}}"))?;
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("\"{{{name}}}\" is not a valid parameter name"));
            }
            if !seen.insert(name.to_string()) {
                return Err(format!("parameter \"{name}\" appears twice"));
            }
            segments.push(Segment::Param(name.to_string()));
        } else if raw.contains(['{', '}']) {
            return Err(format!("segment \"{raw}\" mixes text and a parameter"));
        } else {
            let decoded = percent_decode(raw).ok_or_else(|| format!("segment \"{raw}\" has a bad %-escape"))?;
            segments.push(Segment::Literal(decoded));
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(format!("must have at most {MAX_SEGMENTS} segments"));
        }
    }
    Ok(segments)
}

/// Splits a request path into decoded segments, refusing the shapes an origin might read
/// differently from us (encoded slashes, dot segments, bad escapes) so no rule can be sidestepped.
pub fn split_request_path(path: &str) -> Result<Vec<String>, PathError> {
    let bad = |m: &str| PathError { message: m.to_string() };
    let rest = path.strip_prefix('/').ok_or_else(|| bad("the path must start with /"))?;
    if path.len() > 4096 {
        return Err(bad("the path is too long"));
    }
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for raw in rest.split('/') {
        let decoded = percent_decode(raw).ok_or_else(|| bad("the path has a malformed %-escape"))?;
        if decoded.contains(['/', '\\']) || decoded == "." || decoded == ".." {
            return Err(bad("the path has an encoded slash or a dot segment"));
        }
        out.push(decoded);
        if out.len() > 64 {
            return Err(bad("the path has too many segments"));
        }
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16))?;
            let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16))?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(v: Value) -> RoutePolicy {
        RoutePolicy::from_value(&v).unwrap()
    }

    fn contract_policy() -> RoutePolicy {
        policy(json!({"rules": [
          {"method": "GET",  "path": "/api/v2/betas/{beta_id}/testers", "permission": "users:read"},
          {"method": "POST", "path": "/v4/events/{event}", "permission": "events:create", "event": "path:event"},
          {"method": "POST", "path": "/v4/events", "permission": "events:create", "event": "body:action"},
          {"method": "PUT",  "path": "/v4/profiles/{profile}", "permission": "profiles:update",
           "profile": "profile", "attribute_check": true}
        ]}))
    }

    #[test]
    fn matches_templates_and_extracts_params() {
        let p = contract_policy();
        let m = p.find("GET", "/api/v2/betas/42/testers").unwrap().unwrap();
        assert_eq!(m.rule.permission, "users:read");
        assert_eq!(m.param("beta_id"), Some("42"));
        assert!(p.find("POST", "/api/v2/betas/42/testers").unwrap().is_none());
        assert!(p.find("GET", "/api/v2/betas/42/testers/").unwrap().is_none());
        assert!(p.find("GET", "/api/v2/betas/testers").unwrap().is_none());
        let m = p.find("POST", "/v4/events/sign%75p").unwrap().unwrap();
        assert_eq!(m.param("event"), Some("signup"));
        assert!(m.rule.event.is_some());
        assert!(p.find("PUT", "/v4/profiles/p1").unwrap().unwrap().rule.needs_body());
    }

    #[test]
    fn first_matching_rule_wins() {
        let p = policy(json!({"rules": [
            {"method": "*", "path": "/a/{x}", "permission": "a:read"},
            {"method": "GET", "path": "/a/b", "permission": "a:special"},
            {"method": "GET", "path": "/c/d", "permission": "c:read"},
            {"method": "*", "path": "/c/{y}", "permission": "c:any"},
        ]}));
        assert_eq!(p.find("GET", "/a/b").unwrap().unwrap().rule.permission, "a:read");
        assert_eq!(p.find("GET", "/c/d").unwrap().unwrap().rule.permission, "c:read");
        assert_eq!(p.find("POST", "/c/d").unwrap().unwrap().rule.permission, "c:any");
    }

    #[test]
    fn refuses_ambiguous_paths() {
        let p = contract_policy();
        assert!(p.find("GET", "/api/v2/betas/1%2F2/testers").is_err());
        assert!(p.find("GET", "/api/v2/betas/../testers").is_err());
        assert!(p.find("GET", "/api/v2/betas/%zz/testers").is_err());
        assert!(p.find("GET", "no-slash").is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (json!([]), "policy"),
            (json!({"rules": [], "extra": 1}), "extra"),
            (json!({"rules": [], "method_override": "allow"}), "method_override"),
            (json!({"rules": [], "method_override": true}), "method_override"),
            (json!({"rules": [], "method_override": "Strip"}), "method_override"),
            (json!({"rules": {}}), "rules"),
            (json!({"rules": [{"method": "GET", "path": "/a"}]}), "rules[0]"),
            (json!({"rules": [{"method": "GET", "path": "/a", "permission": "a:read", "x": 1}]}), "rules[0]"),
            (json!({"rules": [{"method": "GE T", "path": "/a", "permission": "a:read"}]}), "rules[0].method"),
            (json!({"rules": [{"method": "GET", "path": "a", "permission": "a:read"}]}), "rules[0].path"),
            (json!({"rules": [{"method": "GET", "path": "/a/{", "permission": "a:read"}]}), "rules[0].path"),
            (json!({"rules": [{"method": "GET", "path": "/a/x{y}", "permission": "a:read"}]}), "rules[0].path"),
            (json!({"rules": [{"method": "GET", "path": "/{a}/{a}", "permission": "a:read"}]}), "rules[0].path"),
            (json!({"rules": [{"method": "GET", "path": "/a//b", "permission": "a:read"}]}), "rules[0].path"),
            (json!({"rules": [{"method": "GET", "path": "/a", "permission": "a:*"}]}), "rules[0].permission"),
            (json!({"rules": [{"method": "GET", "path": "/a", "permission": "a:read", "event": "path:e"}]}), "rules[0].event"),
            (json!({"rules": [{"method": "GET", "path": "/a", "permission": "a:read", "event": "query:e"}]}), "rules[0].event"),
            (json!({"rules": [{"method": "GET", "path": "/a", "permission": "a:read", "cost": -1}]}), "rules[0].cost"),
            (json!({"rules": [{"method": "GET", "path": "/a", "permission": "a:read", "cost": 1_000_001}]}), "rules[0].cost"),
            (json!({"rules": [{"method": "GET", "path": "/a", "permission": "a:read", "cost": "2"}]}), "rules[0].cost"),
            (json!({"rules": [{"method": "GET", "path": "/a", "permission": "a:read", "profile": "p"}]}), "rules[0].profile"),
        ];
        for (input, field) in cases {
            let e = RoutePolicy::from_value(&input).unwrap_err();
            assert_eq!(e.field, field, "{input}: {e}");
        }
    }

    #[test]
    fn method_override_is_read_kept_and_printed_only_when_set() {
        assert_eq!(contract_policy().method_override(), MethodOverride::Refuse);
        assert!(!serde_json::to_string(contract_policy().doc()).unwrap().contains("method_override"));
        for (text, mode) in [("refuse", MethodOverride::Refuse), ("strip", MethodOverride::Strip), ("honour", MethodOverride::Honour)] {
            let p = policy(json!({"rules": [], "method_override": text}));
            assert_eq!(p.method_override(), mode);
            let again = RoutePolicy::from_value(&serde_json::to_value(p.doc()).unwrap()).unwrap();
            assert_eq!(again.method_override(), mode);
        }
    }

    #[test]
    fn default_policy_in_wrangler_toml_is_the_config_file() {
        let file = include_str!("../../config/default-policy.json");
        let toml = include_str!("../../wrangler.toml");
        let embedded = toml
            .split("ROUTE_POLICY = '''")
            .nth(1)
            .and_then(|rest| rest.split("'''").next())
            .unwrap();
        let a: Value = serde_json::from_str(file).unwrap();
        let b: Value = serde_json::from_str(embedded).unwrap();
        assert_eq!(a, b, "run scripts/sync-policy.sh after editing config/default-policy.json");
        assert!(RoutePolicy::parse(file).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn find_never_panics(method in "[A-Z*]{0,7}", path in ".{0,80}") {
            let _ = contract_policy().find(&method, &path);
        }

        #[test]
        fn trie_agrees_with_a_linear_scan(
            templates in proptest::collection::vec(
                (proptest::sample::select(vec!["GET", "POST", "HEAD", "*"]),
                 proptest::collection::vec(proptest::sample::select(vec!["a", "b", "{p}", "{q}"]), 0..4)),
                1..30),
            path in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "c"]), 0..4),
            method in proptest::sample::select(vec!["GET", "POST", "PUT", "HEAD"]),
        ) {
            let rules: Vec<Value> = templates.iter().filter_map(|(m, segs)| {
                let mut seen = HashSet::new();
                let segs: Vec<String> = segs.iter().enumerate().map(|(i, s)| {
                    if s.starts_with('{') { format!("{{p{i}}}") } else { s.to_string() }
                }).collect();
                if !segs.iter().all(|s| seen.insert(s.clone()) || !s.starts_with('{')) { return None; }
                Some(json!({"method": m, "path": format!("/{}", segs.join("/")), "permission": "m:a"}))
            }).collect();
            let p = policy(json!({"rules": rules}));
            let request = format!("/{}", path.join("/"));
            let got = p.find(method, &request).unwrap().map(|m| m.rule.index);
            let on_path = |r: &&RouteRule| r.segments.len() == path.len()
                && r.segments.iter().zip(&path).all(|(s, a)| match s {
                    Segment::Literal(l) => l == a,
                    Segment::Param(_) => true,
                });
            // HEAD is GET unless a rule on this path names HEAD itself.
            let as_method = if method == "HEAD" && !p.rules().iter().filter(on_path).any(|r| r.method == "HEAD") { "GET" } else { method };
            let want = p.rules().iter().filter(on_path).find(|r| r.method_matches(as_method)).map(|r| r.index);
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn roles_are_validated_naming_the_field() {
        let rules = serde_json::json!([{"method": "GET", "path": "/a", "permission": "a:read"}]);
        let err = |roles: Value| RoutePolicy::from_value(&serde_json::json!({"rules": rules, "roles": roles})).unwrap_err().field;
        assert_eq!(err(serde_json::json!(["reader"])), "roles");
        assert_eq!(err(Value::Null), "roles");
        assert_eq!(err(serde_json::json!({"reader": "a:read"})), "roles.reader");
        assert_eq!(err(serde_json::json!({"reader": ["a:read", 5]})), "roles.reader[1]");
        assert_eq!(err(serde_json::json!({"reader": ["A:read"]})), "roles.reader[0]");
        assert_eq!(err(serde_json::json!({"no spaces": []})), "roles.no spaces");
        let ok = RoutePolicy::from_value(&serde_json::json!({"rules": rules, "roles": {"reader": ["*:read"], "all": ["*"]}})).unwrap();
        assert!(ok.roles().grants("reader", "x:read") && !ok.roles().grants("reader", "x:write"));
        assert!(ok.roles().knows("organization_admin") && ok.roles().knows("all") && !ok.roles().knows("ghost"));
        // The document keeps them (GET /policy shows them).
        assert_eq!(ok.doc().roles.len(), 2);
    }
}
