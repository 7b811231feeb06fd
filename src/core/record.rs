//! Key records: what is stored per key, how every attribute is validated, and the compiled form
//! the gate checks requests against.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ip::IpAllowlist;
use super::limits::{parse_credits, parse_ratelimit, Credits, RateLimit};
use super::origin::OriginList;
use super::time::{format_rfc3339, parse_rfc3339};

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_DESCRIPTION_CHARS: usize = 500;
pub const MAX_METADATA_BYTES: usize = 1024;
pub const MAX_SHORT_CHARS: usize = 100;
pub const MAX_ENTRY_CHARS: usize = 200;
/// Entries per list (permissions, events, IPs, attributes): generous, but bounded.
pub const MAX_LIST_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    #[default]
    Workspace,
    Profile,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Workspace => "workspace",
            KeyType::Profile => "profile",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Expired,
    Revoked,
}

/// One key as stored in KV under its digest. The plaintext is never part of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub digest: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type", default)]
    pub key_type: KeyType,
    #[serde(default)]
    pub profile_id: Option<String>,
    pub role: String,
    #[serde(default)]
    pub workspace: Option<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub event_allowlist: Vec<String>,
    #[serde(default)]
    pub event_denylist: Vec<String>,
    #[serde(default)]
    pub ip_allowlist: Vec<String>,
    /// Websites the key may be used from (exact origins or `https://*.domain`); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origin_allowlist: Vec<String>,
    #[serde(default)]
    pub attribute_allowlist: Option<Vec<String>>,
    pub active: bool,
    #[serde(default)]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub key_preview: Option<String>,
    /// At most so many allowed requests per rolling period (contract section 8); none: unlimited.
    /// Read back through the same validator as the API (and serde's derive would weigh on the wasm).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "stored_ratelimit")]
    pub ratelimit: Option<RateLimit>,
    /// Credits each allowed request spends from; none: unmetered.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "stored_credits")]
    pub credits: Option<Credits>,
    /// The name of the Limiter Durable Object holding this key's window and live credits: the
    /// key's own id, or, for a key made by rolling another, the rolled key's Limiter (a roll
    /// replaces the secret, not the quota). Not part of the API view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limiter: Option<String>,
    /// Tokens of this key issued before this time (Unix ms) are refused: set by
    /// `POST /api_keys/{id}/revoke_tokens` (contract section 15). Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_not_before: Option<i64>,
    /// Simple authentication (contract section 15): a profile key whose customers log in with
    /// an HMAC-SHA256 of their identifier under `simple_auth_salt` (made at the edge with the
    /// CSPRNG when this turns on; read-only, shown to management calls).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub simple_auth: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple_auth_salt: Option<String>,
    /// When a leak report (GitHub's secret scanning or the operator's own scanner) first named
    /// this key, and where it was found (docs/leaks-and-webhooks.md). Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaked_url: Option<String>,
}

fn stored_ratelimit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<RateLimit>, D::Error> {
    parse_ratelimit(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn stored_credits<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Credits>, D::Error> {
    let mut value = Value::deserialize(d)?;
    let set_at_ms = value.as_object_mut().and_then(|m| m.remove("set_at_ms")).and_then(|v| v.as_i64()).unwrap_or(0);
    Ok(parse_credits(&value).map_err(serde::de::Error::custom)?.map(|c| Credits { set_at_ms, ..c }))
}

/// A bad attribute: which one, and what is wrong with it, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Which call the attributes come from: it decides what is required and what is read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `POST /api_keys`: `name` required, `version` read-only.
    Create,
    /// `PUT /api_keys/{id}`: everything optional, `version` read-only.
    Update,
    /// `PUT /keys/{digest}` from the origin: `name` and `version` required.
    Push,
}

const READ_ONLY: &[&str] = &["id", "status", "created_at", "updated_at", "revoked_at", "digest", "last_used_at", "tokens_not_before", "simple_auth_salt", "leaked_at", "leaked_url"];

impl KeyRecord {
    /// A new record with every attribute at its default, to which attributes are then applied.
    pub fn blank(id: String, digest: String, now_ms: i64) -> KeyRecord {
        let now = format_rfc3339(now_ms);
        KeyRecord {
            id,
            digest,
            name: String::new(),
            description: String::new(),
            key_type: KeyType::Workspace,
            profile_id: None,
            role: "organization_admin".to_string(),
            workspace: None,
            permissions: Vec::new(),
            event_allowlist: Vec::new(),
            event_denylist: Vec::new(),
            ip_allowlist: Vec::new(),
            origin_allowlist: Vec::new(),
            attribute_allowlist: None,
            active: true,
            revoked_at: None,
            expires_at: None,
            metadata: Map::new(),
            version: 0,
            created_at: now.clone(),
            updated_at: now,
            key_preview: None,
            ratelimit: None,
            credits: None,
            limiter: None,
            tokens_not_before: None,
            simple_auth: false,
            simple_auth_salt: None,
            leaked_at: None,
            leaked_url: None,
        }
    }

    /// The name of this key's Limiter Durable Object.
    pub fn limiter_name(&self) -> &str {
        self.limiter.as_deref().unwrap_or(&self.id)
    }

    /// Whether the gate must consult the Limiter for this key.
    pub fn is_limited(&self) -> bool {
        self.ratelimit.is_some() || self.credits.is_some()
    }

    /// Stamps credits written by this change (their stamp is 0) with `now`, later than any stamp
    /// `previous` held, so that the Limiter takes them over its own count.
    pub fn stamp_credits(&mut self, previous: Option<&KeyRecord>, now: i64) {
        let floor = previous.and_then(|p| p.credits).map_or(0, |c| c.set_at_ms.saturating_add(1));
        if let Some(credits) = self.credits.as_mut() {
            if credits.set_at_ms == 0 {
                credits.set_at_ms = now.max(floor).max(1);
            }
        }
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// Whether a caller confined to `scope` (a workspace; none: every workspace) may see this key.
    pub fn in_scope(&self, scope: Option<&str>) -> bool {
        scope.is_none_or(|w| self.workspace.as_deref() == Some(w))
    }

    pub fn status(&self, now_ms: i64) -> KeyStatus {
        if self.is_revoked() {
            KeyStatus::Revoked
        } else if !self.active || self.expired_by_time(now_ms) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }

    fn expired_by_time(&self, now_ms: i64) -> bool {
        self.expires_at
            .as_deref()
            .and_then(parse_rfc3339)
            .is_some_and(|at| at <= now_ms)
    }

    /// Applies attributes from a request body onto a copy of `self`; `self` is untouched on error,
    /// so nothing is ever half-written.
    pub fn with_attributes(
        &self,
        attributes: &Map<String, Value>,
        mode: WriteMode,
    ) -> Result<KeyRecord, FieldError> {
        let mut next = self.clone();
        let mut saw_name = false;
        let mut saw_version = false;
        for (field, value) in attributes {
            let field = field.as_str();
            match field {
                "name" => {
                    next.name = bounded_string(field, value, 1, MAX_NAME_CHARS)?;
                    if next.name.trim().is_empty() {
                        return Err(FieldError::new(field, "must not be blank"));
                    }
                    saw_name = true;
                }
                "description" => {
                    next.description = if value.is_null() {
                        String::new()
                    } else {
                        bounded_string(field, value, 0, MAX_DESCRIPTION_CHARS)?
                    };
                }
                "type" => {
                    next.key_type = match value.as_str() {
                        Some("workspace") => KeyType::Workspace,
                        Some("profile") => KeyType::Profile,
                        _ => return Err(FieldError::new(field, "must be \"workspace\" or \"profile\"")),
                    };
                }
                "profile_id" => next.profile_id = optional_string(field, value, MAX_SHORT_CHARS)?,
                "role" => next.role = bounded_string(field, value, 1, MAX_SHORT_CHARS)?,
                "workspace" => {
                    let workspace = optional_string(field, value, MAX_SHORT_CHARS)?;
                    // The workspace is the login half of Basic auth, which cannot hold a colon,
                    // and the id of a workspace (docs/workspaces.md).
                    if workspace.as_deref().is_some_and(|w| w.contains(':')) {
                        return Err(FieldError::new(field, "must not contain ':'"));
                    }
                    if workspace.as_deref().is_some_and(|w| !is_workspace_id(w)) {
                        return Err(FieldError::new(field, "must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -"));
                    }
                    next.workspace = workspace;
                }
                "permissions" => {
                    let list = string_list(field, value)?;
                    for (i, p) in list.iter().enumerate() {
                        if !is_permission(p) {
                            return Err(FieldError::new(
                                format!("{field}[{i}]"),
                                format!("\"{p}\" is not a permission (expected module:action, module:* or *)"),
                            ));
                        }
                    }
                    next.permissions = list;
                }
                "event_allowlist" | "event_denylist" => {
                    let list = string_list(field, value)?;
                    for (i, e) in list.iter().enumerate() {
                        check_entry(&format!("{field}[{i}]"), e)?;
                    }
                    if field == "event_allowlist" {
                        next.event_allowlist = list;
                    } else {
                        next.event_denylist = list;
                    }
                }
                "ip_allowlist" => {
                    let list = string_list(field, value)?;
                    IpAllowlist::compile(&list).map_err(|e| {
                        FieldError::new(
                            format!("{field}[{}]", e.index),
                            format!("\"{}\" is not an IP address or CIDR: {}", e.entry, e.message),
                        )
                    })?;
                    next.ip_allowlist = list;
                }
                "origin_allowlist" => {
                    let list = string_list(field, value)?;
                    OriginList::compile(&list).map_err(|e| {
                        FieldError::new(
                            format!("{field}[{}]", e.index),
                            format!(
                                "{:?} is not an origin (https://app.example.com, http://localhost:3000 or https://*.example.com): {}",
                                e.entry, e.message
                            ),
                        )
                    })?;
                    next.origin_allowlist = list;
                }
                "attribute_allowlist" => {
                    next.attribute_allowlist = if value.is_null() {
                        None
                    } else {
                        let list = string_list(field, value)?;
                        for (i, a) in list.iter().enumerate() {
                            check_entry(&format!("{field}[{i}]"), a)?;
                        }
                        Some(list)
                    };
                }
                "active" => {
                    next.active =
                        value.as_bool().ok_or_else(|| FieldError::new(field, "must be true or false"))?;
                }
                "expires_at" => {
                    next.expires_at = match value {
                        Value::Null => None,
                        Value::String(s) => {
                            let ms = parse_rfc3339(s).ok_or_else(|| {
                                FieldError::new(field, "must be an RFC 3339 timestamp such as 2030-01-31T12:00:00Z")
                            })?;
                            Some(format_rfc3339(ms))
                        }
                        _ => return Err(FieldError::new(field, "must be an RFC 3339 timestamp or null")),
                    };
                }
                "metadata" => {
                    next.metadata = match value {
                        Value::Null => Map::new(),
                        Value::Object(map) => {
                            let size = serde_json::to_string(map).map(|s| s.len()).unwrap_or(usize::MAX);
                            if size > MAX_METADATA_BYTES {
                                return Err(FieldError::new(
                                    field,
                                    format!("must be at most {MAX_METADATA_BYTES} bytes of JSON (got {size})"),
                                ));
                            }
                            map.clone()
                        }
                        _ => return Err(FieldError::new(field, "must be a JSON object")),
                    };
                }
                "ratelimit" => next.ratelimit = parse_ratelimit(value)?,
                "simple_auth" => {
                    next.simple_auth = value.as_bool().ok_or_else(|| FieldError::new(field, "must be true or false"))?;
                    if !next.simple_auth {
                        next.simple_auth_salt = None;
                    }
                }
                "credits" => next.credits = parse_credits(value)?,
                "version" if mode == WriteMode::Push => {
                    // 7 and 7.0 are the same JSON number.
                    let whole = value.as_u64().or_else(|| {
                        value.as_f64().filter(|f| f.fract() == 0.0 && (1.0..=9_007_199_254_740_992.0).contains(f)).map(
                            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "range checked")]
                            |f| f as u64,
                        )
                    });
                    next.version = whole
                        .filter(|v| *v >= 1 && *v <= (1u64 << 53))
                        .ok_or_else(|| FieldError::new(field, "must be a positive integer"))?;
                    saw_version = true;
                }
                "key_preview" if mode == WriteMode::Push => {
                    next.key_preview = optional_string(field, value, 64)?;
                }
                "version" | "key_preview" => {
                    return Err(FieldError::new(field, "is read-only"));
                }
                f if READ_ONLY.contains(&f) => return Err(FieldError::new(f, "is read-only")),
                other => return Err(FieldError::new(other, "is not a key attribute")),
            }
        }
        if matches!(mode, WriteMode::Create | WriteMode::Push) && !saw_name {
            return Err(FieldError::new("name", "is required"));
        }
        if mode == WriteMode::Push && !saw_version {
            return Err(FieldError::new("version", "is required"));
        }
        match (next.key_type, &next.profile_id) {
            (KeyType::Profile, None) => {
                return Err(FieldError::new("profile_id", "is required for a profile key"))
            }
            (KeyType::Workspace, Some(_)) => {
                return Err(FieldError::new("profile_id", "is only allowed on a profile key"))
            }
            _ => {}
        }
        if next.simple_auth && next.key_type != KeyType::Profile {
            return Err(FieldError::new("simple_auth", "is only allowed on a profile key"));
        }
        Ok(next)
    }

    /// Rebuilds a record from its management-API view (what `GET /api_keys/{id}` returns), as the
    /// playground and the known-answer vectors hold it. Read-only fields are taken as they are;
    /// every other attribute is validated as an update would be.
    pub fn from_view(view: &Value) -> Result<KeyRecord, FieldError> {
        let object = view.as_object().ok_or_else(|| FieldError::new("record", "must be a JSON object"))?;
        let text = |field: &str| object.get(field).and_then(Value::as_str).map(str::to_string);
        let mut attributes = object.clone();
        for field in ["id", "status", "created_at", "updated_at", "revoked_at", "version", "key_preview", "api_key", "rolled_from", "last_used_at", "tokens_not_before", "simple_auth_salt", "leaked_at", "leaked_url"] {
            attributes.remove(field);
        }
        let mut base = KeyRecord::blank(text("id").unwrap_or_else(|| "key_playground".into()), String::new(), 0);
        base.name = "playground".into();
        let mut record = base.with_attributes(&attributes, WriteMode::Update)?;
        if text("status").as_deref() == Some("revoked") || text("revoked_at").is_some() {
            record.revoked_at = Some(text("revoked_at").unwrap_or_else(|| format_rfc3339(0)));
            record.active = false;
        }
        if let Some(v) = object.get("version").and_then(Value::as_u64) {
            record.version = v;
        }
        Ok(record)
    }

    /// The record as the management API shows it: no digest, a derived `status`.
    pub fn view(&self, now_ms: i64) -> Value {
        let mut map = Map::new();
        map.insert("id".into(), Value::String(self.id.clone()));
        map.insert("name".into(), Value::String(self.name.clone()));
        map.insert("description".into(), Value::String(self.description.clone()));
        map.insert("type".into(), Value::String(self.key_type.as_str().into()));
        map.insert("profile_id".into(), opt(&self.profile_id));
        map.insert("role".into(), Value::String(self.role.clone()));
        map.insert("workspace".into(), opt(&self.workspace));
        map.insert("permissions".into(), strings(&self.permissions));
        map.insert("event_allowlist".into(), strings(&self.event_allowlist));
        map.insert("event_denylist".into(), strings(&self.event_denylist));
        map.insert("ip_allowlist".into(), strings(&self.ip_allowlist));
        map.insert("origin_allowlist".into(), strings(&self.origin_allowlist));
        map.insert(
            "attribute_allowlist".into(),
            self.attribute_allowlist.as_ref().map_or(Value::Null, |l| strings(l)),
        );
        map.insert("active".into(), Value::Bool(self.active && !self.is_revoked()));
        let status = match self.status(now_ms) {
            KeyStatus::Active => "active",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
        };
        map.insert("status".into(), Value::String(status.into()));
        map.insert("expires_at".into(), opt(&self.expires_at));
        map.insert("revoked_at".into(), opt(&self.revoked_at));
        map.insert("leaked_at".into(), opt(&self.leaked_at));
        map.insert("leaked_url".into(), opt(&self.leaked_url));
        map.insert("metadata".into(), Value::Object(self.metadata.clone()));
        map.insert("version".into(), Value::from(self.version));
        map.insert("created_at".into(), Value::String(self.created_at.clone()));
        map.insert("updated_at".into(), Value::String(self.updated_at.clone()));
        map.insert("key_preview".into(), opt(&self.key_preview));
        map.insert("ratelimit".into(), self.ratelimit.map_or(Value::Null, |r| serde_json::json!(r)));
        map.insert("credits".into(), self.credits.map_or(Value::Null, |c| c.view(c.remaining)));
        map.insert("tokens_not_before".into(), self.tokens_not_before.map_or(Value::Null, |ms| Value::String(format_rfc3339(ms))));
        map.insert("simple_auth".into(), Value::Bool(self.simple_auth));
        map.insert("simple_auth_salt".into(), opt(&self.simple_auth_salt));
        Value::Object(map)
    }
}

fn opt(value: &Option<String>) -> Value {
    value.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

fn strings(list: &[String]) -> Value {
    Value::Array(list.iter().map(|s| Value::String(s.clone())).collect())
}

fn bounded_string(field: &str, value: &Value, min: usize, max: usize) -> Result<String, FieldError> {
    let s = value.as_str().ok_or_else(|| FieldError::new(field, "must be a string"))?;
    let n = s.chars().count();
    if n < min || n > max {
        return Err(FieldError::new(
            field,
            format!("must be {min} to {max} characters long (got {n})"),
        ));
    }
    if s.chars().any(char::is_control) && field != "description" {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(s.to_string())
}

fn optional_string(field: &str, value: &Value, max: usize) -> Result<Option<String>, FieldError> {
    if value.is_null() {
        return Ok(None);
    }
    bounded_string(field, value, 1, max).map(Some)
}

fn string_list(field: &str, value: &Value) -> Result<Vec<String>, FieldError> {
    let items = value
        .as_array()
        .ok_or_else(|| FieldError::new(field, "must be an array of strings"))?;
    if items.len() > MAX_LIST_ENTRIES {
        return Err(FieldError::new(
            field,
            format!("must have at most {MAX_LIST_ENTRIES} entries (got {})", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .map(str::to_string)
                .ok_or_else(|| FieldError::new(format!("{field}[{i}]"), "must be a string"))
        })
        .collect()
}

fn check_entry(field: &str, entry: &str) -> Result<(), FieldError> {
    let n = entry.chars().count();
    if n == 0 || n > MAX_ENTRY_CHARS {
        return Err(FieldError::new(field, format!("must be 1 to {MAX_ENTRY_CHARS} characters long")));
    }
    if entry.chars().any(char::is_control) {
        return Err(FieldError::new(field, "must not contain control characters"));
    }
    Ok(())
}

fn is_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `*`, `module:*` or `module:action`, with lowercase letters, digits, `_` and `-`.
pub fn is_permission(p: &str) -> bool {
    if p == "*" {
        return true;
    }
    match p.split_once(':') {
        Some((module, action)) => is_name_part(module) && (action == "*" || is_name_part(action)),
        None => false,
    }
}

/// A permission a role or a workspace's ceiling may hold: a key's, or `*:action` (that action of
/// every module).
pub fn is_group_permission(p: &str) -> bool {
    is_permission(p) || p.strip_prefix("*:").is_some_and(is_name_part)
}

/// A workspace id: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn is_workspace_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A rule's permission must be concrete: wildcards belong to keys, not to routes.
pub fn is_concrete_permission(p: &str) -> bool {
    match p.split_once(':') {
        Some((module, action)) => is_name_part(module) && is_name_part(action),
        None => false,
    }
}

/// The permissions of a key, indexed so that a check costs the same for 10 or 10 000 of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PermissionSet {
    everything: bool,
    whole_modules: HashSet<String>,
    /// `*:action` (roles and ceilings only): that action of every module.
    whole_actions: HashSet<String>,
    exact: HashSet<String>,
}

impl PermissionSet {
    pub fn new<S: AsRef<str>>(permissions: &[S]) -> PermissionSet {
        let mut set = PermissionSet::default();
        for p in permissions {
            let p = p.as_ref();
            if p == "*" {
                set.everything = true;
            } else if let Some(module) = p.strip_suffix(":*") {
                set.whole_modules.insert(module.to_string());
            } else if let Some(action) = p.strip_prefix("*:").filter(|a| is_name_part(a)) {
                set.whole_actions.insert(action.to_string());
            } else if is_permission(p) {
                set.exact.insert(p.to_string());
            }
        }
        set
    }

    /// Whether holding `permission` (which may be a wildcard) gives nothing this set does not:
    /// `*` only under `*`, `module:*` under `*` or `module:*`, `module:action` whenever granted.
    pub fn covers(&self, permission: &str) -> bool {
        if self.everything {
            return true;
        }
        match (permission.strip_suffix(":*"), permission.strip_prefix("*:")) {
            (Some(module), _) => self.whole_modules.contains(module),
            (None, Some(action)) => self.whole_actions.contains(action),
            (None, None) => permission != "*" && self.grants(permission),
        }
    }

    /// Whether `permission` (a concrete `module:action`) is granted.
    pub fn grants(&self, permission: &str) -> bool {
        if self.everything || self.exact.contains(permission) {
            return true;
        }
        permission.split_once(':').is_some_and(|(module, action)| {
            self.whole_modules.contains(module) || (!self.whole_actions.is_empty() && self.whole_actions.contains(action))
        })
    }
}

/// A record prepared for checking requests: lists turned into sets, CIDRs parsed, expiry read.
#[derive(Debug, Clone)]
pub struct CompiledKey {
    pub record: KeyRecord,
    pub permissions: PermissionSet,
    pub ip_allowlist: IpAllowlist,
    pub origin_allowlist: OriginList,
    pub event_allowlist: HashSet<String>,
    pub event_denylist: HashSet<String>,
    pub attribute_allowlist: Option<HashSet<String>>,
    pub expires_at_ms: Option<i64>,
}

impl CompiledKey {
    /// Fails only on a record that could not have passed validation (a corrupted store).
    pub fn compile(record: KeyRecord) -> Result<CompiledKey, FieldError> {
        let ip_allowlist = IpAllowlist::compile(&record.ip_allowlist).map_err(|e| {
            FieldError::new(format!("ip_allowlist[{}]", e.index), e.message)
        })?;
        let origin_allowlist = OriginList::compile(&record.origin_allowlist).map_err(|e| {
            FieldError::new(format!("origin_allowlist[{}]", e.index), e.message)
        })?;
        let expires_at_ms = match record.expires_at.as_deref() {
            None => None,
            Some(s) => Some(
                parse_rfc3339(s)
                    .ok_or_else(|| FieldError::new("expires_at", "is not an RFC 3339 timestamp"))?,
            ),
        };
        Ok(CompiledKey {
            permissions: PermissionSet::new(&record.permissions),
            ip_allowlist,
            origin_allowlist,
            event_allowlist: record.event_allowlist.iter().cloned().collect(),
            event_denylist: record.event_denylist.iter().cloned().collect(),
            attribute_allowlist: record
                .attribute_allowlist
                .as_ref()
                .map(|l| l.iter().cloned().collect()),
            expires_at_ms,
            record,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn blank() -> KeyRecord {
        KeyRecord::blank("key_1".into(), "d".repeat(64), 0)
    }

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn err(v: Value, mode: WriteMode) -> FieldError {
        blank().with_attributes(&attrs(v), mode).unwrap_err()
    }

    #[test]
    fn a_confined_caller_sees_its_own_workspace_only() {
        let mut record = blank();
        assert!(record.in_scope(None));
        assert!(!record.in_scope(Some("acme")));
        record.workspace = Some("acme".into());
        assert!(record.in_scope(None));
        assert!(record.in_scope(Some("acme")));
        assert!(!record.in_scope(Some("acme2")));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/record.rs): without correctly rounded float parsing
    /// (serde_json's `float_roundtrip`), a metadata number read back from its stored form could
    /// come out one bit different, so each store and read changed the record.
    #[test]
    fn metadata_numbers_survive_store_and_read() {
        let body = r#"{"name": "k", "metadata": {"a": [0, 2222222184467440737095516162.2222222220, 22222222.22222]}}"#;
        let record = blank().with_attributes(&attrs(serde_json::from_str(body).unwrap()), WriteMode::Create).unwrap();
        let stored = serde_json::to_string(&record).unwrap();
        let read: KeyRecord = serde_json::from_str(&stored).unwrap();
        assert_eq!(read, record);
    }

    #[test]
    fn limits_and_credits_survive_store_and_read() {
        let mut record = blank()
            .with_attributes(
                &attrs(json!({"name": "k", "ratelimit": {"limit": 5, "period_seconds": 10},
                    "credits": {"remaining": 9_007_199_254_740_992u64, "refill": {"amount": 3, "interval": "daily"}}})),
                WriteMode::Create,
            )
            .unwrap();
        record.stamp_credits(None, 1_700_000_000_000);
        let stored = serde_json::to_string(&record).unwrap();
        let read: KeyRecord = serde_json::from_str(&stored).unwrap();
        assert_eq!(read, record);
        assert_eq!(read.credits.unwrap().set_at_ms, 1_700_000_000_000);
        assert!(serde_json::from_str::<KeyRecord>(&stored.replace("\"limit\":5", "\"limit\":0")).is_err());
    }

    /// Found with the record fuzz target's oracle (on a hand-made input; the fuzzer had not reached
    /// it in 30 s): an offset carried the expiry out of the
    /// years RFC 3339 can write, so the record stored did not compile for the gate.
    #[test]
    fn an_expiry_outside_years_0000_to_9999_is_refused() {
        for at in ["0000-01-01T00:00:00+23:59", "9999-12-31T23:59:59-00:01"] {
            assert_eq!(err(json!({"name": "k", "expires_at": at}), WriteMode::Create).field, "expires_at");
        }
        let record = blank().with_attributes(&attrs(json!({"expires_at": "9999-12-31T23:59:59+00:01"})), WriteMode::Update).unwrap();
        assert!(CompiledKey::compile(record).is_ok());
    }

    #[test]
    fn create_applies_defaults_and_attributes() {
        let r = blank()
            .with_attributes(
                &attrs(json!({"name": "ci", "permissions": ["users:read", "rewards:*", "*"],
                    "ip_allowlist": ["10.0.0.0/8", "::1"], "expires_at": "2030-01-01T00:00:00+01:00",
                    "metadata": {"team": "growth"}})),
                WriteMode::Create,
            )
            .unwrap();
        assert_eq!(r.name, "ci");
        assert_eq!(r.role, "organization_admin");
        assert_eq!(r.key_type, KeyType::Workspace);
        assert_eq!(r.expires_at.as_deref(), Some("2029-12-31T23:00:00.000Z"));
        assert_eq!(r.status(0), KeyStatus::Active);
    }

    #[test]
    fn every_field_rule_names_the_field() {
        let cases = [
            (json!({}), "name"),
            (json!({"name": ""}), "name"),
            (json!({"name": "x".repeat(101)}), "name"),
            (json!({"name": 5}), "name"),
            (json!({"name": "   "}), "name"),
            (json!({"name": "a", "description": "x".repeat(501)}), "description"),
            (json!({"name": "a", "type": "team"}), "type"),
            (json!({"name": "a", "type": "profile"}), "profile_id"),
            (json!({"name": "a", "profile_id": "p1"}), "profile_id"),
            (json!({"name": "a", "role": ""}), "role"),
            (json!({"name": "a", "workspace": "a:b"}), "workspace"),
            (json!({"name": "a", "permissions": "users:read"}), "permissions"),
            (json!({"name": "a", "permissions": ["users:read", "users"]}), "permissions[1]"),
            (json!({"name": "a", "permissions": ["Users:Read"]}), "permissions[0]"),
            (json!({"name": "a", "event_allowlist": [""]}), "event_allowlist[0]"),
            (json!({"name": "a", "event_denylist": [1]}), "event_denylist[0]"),
            (json!({"name": "a", "ip_allowlist": ["10.0.0.0/33"]}), "ip_allowlist[0]"),
            (json!({"name": "a", "ip_allowlist": ["1.2.3.4", "nope"]}), "ip_allowlist[1]"),
            (json!({"name": "a", "origin_allowlist": "https://a.com"}), "origin_allowlist"),
            (json!({"name": "a", "origin_allowlist": ["https://a.com", "a.com"]}), "origin_allowlist[1]"),
            (json!({"name": "a", "origin_allowlist": ["https://a.*.com"]}), "origin_allowlist[0]"),
            (json!({"name": "a", "origin_allowlist": ["https://a.com/app"]}), "origin_allowlist[0]"),
            (json!({"name": "a", "origin_allowlist": [7]}), "origin_allowlist[0]"),
            (json!({"name": "a", "attribute_allowlist": "email"}), "attribute_allowlist"),
            (json!({"name": "a", "active": "yes"}), "active"),
            (json!({"name": "a", "expires_at": "tomorrow"}), "expires_at"),
            (json!({"name": "a", "metadata": [1]}), "metadata"),
            (json!({"name": "a", "metadata": {"x": "y".repeat(1100)}}), "metadata"),
            (json!({"name": "a", "version": 3}), "version"),
            (json!({"name": "a", "id": "key_2"}), "id"),
            (json!({"name": "a", "status": "active"}), "status"),
            (json!({"name": "a", "colour": "red"}), "colour"),
            (json!({"name": "a", "ratelimit": {"limit": 0, "period_seconds": 10}}), "ratelimit.limit"),
            (json!({"name": "a", "ratelimit": {"limit": 5, "period_seconds": 86_401}}), "ratelimit.period_seconds"),
            (json!({"name": "a", "credits": {"remaining": 9_007_199_254_740_993u64}}), "credits.remaining"),
            (json!({"name": "a", "credits": {"remaining": 1, "refill": {"amount": 1, "interval": "hourly"}}}), "credits.refill.interval"),
        ];
        for (input, field) in cases {
            let e = err(input.clone(), WriteMode::Create);
            assert_eq!(e.field, field, "{input}: {e}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn push_requires_version() {
        assert_eq!(err(json!({"name": "a"}), WriteMode::Push).field, "version");
        assert_eq!(err(json!({"name": "a", "version": 0}), WriteMode::Push).field, "version");
        assert_eq!(err(json!({"name": "a", "version": -1}), WriteMode::Push).field, "version");
        let r = blank()
            .with_attributes(&attrs(json!({"name": "a", "version": 7})), WriteMode::Push)
            .unwrap();
        assert_eq!(r.version, 7);
    }

    #[test]
    fn update_is_partial_and_error_leaves_record_alone() {
        let r = blank()
            .with_attributes(&attrs(json!({"name": "a", "permissions": ["users:read"]})), WriteMode::Create)
            .unwrap();
        let r2 = r.with_attributes(&attrs(json!({"description": "d"})), WriteMode::Update).unwrap();
        assert_eq!(r2.permissions, vec!["users:read"]);
        assert_eq!(r2.name, "a");
        let before = r2.clone();
        assert!(r2
            .with_attributes(&attrs(json!({"name": "b", "ip_allowlist": ["x"]})), WriteMode::Update)
            .is_err());
        assert_eq!(r2, before);
    }

    #[test]
    fn status_follows_flags_and_time() {
        let mut r = blank();
        r.expires_at = Some("1970-01-01T00:00:01.000Z".into());
        assert_eq!(r.status(999), KeyStatus::Active);
        assert_eq!(r.status(1000), KeyStatus::Expired);
        r.expires_at = None;
        r.active = false;
        assert_eq!(r.status(0), KeyStatus::Expired);
        r.revoked_at = Some("1970-01-01T00:00:00.000Z".into());
        assert_eq!(r.status(0), KeyStatus::Revoked);
        assert_eq!(r.view(0)["status"], "revoked");
        assert!(r.view(0).get("digest").is_none());
    }

    #[test]
    fn view_round_trips_through_from_view() {
        let mut r = blank()
            .with_attributes(
                &attrs(json!({"name": "a", "type": "profile", "profile_id": "p1", "permissions": ["x:y"],
                    "attribute_allowlist": ["email"], "ip_allowlist": ["10.0.0.0/8"],
                    "origin_allowlist": ["https://*.example.com"], "ratelimit": {"limit": 5, "period_seconds": 10},
                    "credits": {"remaining": 7, "refill": {"amount": 9, "interval": "monthly"}}})),
                WriteMode::Create,
            )
            .unwrap();
        r.revoked_at = Some("2026-01-01T00:00:00.000Z".into());
        r.active = false;
        let back = KeyRecord::from_view(&r.view(0)).unwrap();
        assert_eq!(back.view(0), r.view(0));
        assert_eq!(KeyRecord::from_view(&json!({"ip_allowlist": ["x"]})).unwrap_err().field, "ip_allowlist[0]");
    }

    #[test]
    fn permission_wildcards() {
        let set = PermissionSet::new(&["users:read", "rewards:*"]);
        assert!(set.grants("users:read"));
        assert!(!set.grants("users:delete"));
        assert!(set.grants("rewards:delete"));
        assert!(!set.grants("projects:read"));
        assert!(PermissionSet::new(&["*"]).grants("projects:delete"));
        assert!(!PermissionSet::new::<&str>(&[]).grants("users:read"));
    }

    proptest::proptest! {
        #[test]
        fn a_permission_set_never_grants_what_it_does_not_contain(
            held in proptest::collection::vec("[a-c]{1,2}:[a-c]{1,2}", 0..8),
            asked in "[a-c]{1,2}:[a-c]{1,2}",
        ) {
            let set = PermissionSet::new(&held);
            proptest::prop_assert_eq!(set.grants(&asked), held.contains(&asked));
        }

        #[test]
        fn attributes_never_panic(json in ".{0,200}") {
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&json) {
                let _ = blank().with_attributes(&map, WriteMode::Create);
            }
        }
    }

    #[test]
    fn covers_tells_whether_a_permission_gives_nothing_more() {
        let set = PermissionSet::new(&["users:*", "projects:read", "*:list"]);
        for p in ["users:*", "users:read", "projects:read", "*:list", "rewards:list"] {
            assert!(set.covers(p), "{p}");
        }
        for p in ["*", "projects:*", "projects:write", "*:read", "rewards:*"] {
            assert!(!set.covers(p), "{p}");
        }
        assert!(PermissionSet::new(&["*"]).covers("*"));
        assert!(is_workspace_id("Acme_1-x") && !is_workspace_id("") && !is_workspace_id("a b") && !is_workspace_id(&"a".repeat(65)));
        assert!(is_group_permission("*:read") && !is_permission("*:read"));
    }
}
