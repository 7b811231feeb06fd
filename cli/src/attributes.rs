//! Record attributes as the CLI gathers them (flags, CSV cells, JSON lines), and their local
//! validation with keyward's core, so a bad record is refused before anything is sent.

use clap::Args;
use keyward::core::digest::{is_digest, key_digest};
use keyward::core::key::{key_preview, parse_key};
use keyward::core::record::{FieldError, KeyRecord, WriteMode};
use serde_json::{Map, Value};

use crate::failure::Failure;

/// Attributes that hold a list of strings: a CSV cell or a flag splits them on spaces, commas,
/// semicolons or `|`, unless the text is a JSON array.
pub const LIST_ATTRIBUTES: &[&str] = &[
    "permissions",
    "event_allowlist",
    "event_denylist",
    "ip_allowlist",
    "attribute_allowlist",
    "origin_allowlist",
];

/// Turns the text of one attribute (a CSV cell, a `--set` value) into its JSON value.
/// An empty text means "not given".
pub fn value_from_text(name: &str, text: &str) -> Result<Option<Value>, FieldError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let json = |t: &str| {
        serde_json::from_str::<Value>(t).map(Some).map_err(|e| FieldError::new(name, format!("is not valid JSON: {e}")))
    };
    if LIST_ATTRIBUTES.contains(&name) {
        if text.starts_with('[') {
            return json(text);
        }
        let items = text
            .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '|'))
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_string()))
            .collect();
        return Ok(Some(Value::Array(items)));
    }
    match name {
        "active" => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Some(Value::Bool(true))),
            "false" | "no" | "0" => Ok(Some(Value::Bool(false))),
            _ => Err(FieldError::new(name, "must be true or false")),
        },
        "version" => text
            .parse::<u64>()
            .map(|v| Some(Value::from(v)))
            .map_err(|_| FieldError::new(name, "must be a positive integer")),
        _ if text.starts_with('{') || text.starts_with('[') || text == "null" => json(text),
        _ => Ok(Some(Value::String(text.to_string()))),
    }
}

/// Checks attributes the way keyward will, with its own core. For an update the stored record is
/// not known here, so the base is chosen to agree with the attributes' own type.
pub fn validate(attributes: &Map<String, Value>, mode: WriteMode) -> Result<(), FieldError> {
    let mut base = KeyRecord::blank("key_local".into(), String::new(), 0);
    if mode == WriteMode::Update {
        let says_profile = attributes.get("type").and_then(Value::as_str) == Some("profile")
            || (attributes.contains_key("profile_id") && attributes.get("type").and_then(Value::as_str) != Some("workspace"));
        if says_profile {
            base.key_type = keyward::core::record::KeyType::Profile;
            base.profile_id = Some("profile".into());
        }
    }
    base.with_attributes(attributes, mode).map(|_| ())
}

/// Where a record's key comes from: a plaintext key (hashed here, never sent) or its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    pub digest: String,
    /// The preview records show (`prefix_...last4`), known only from a plaintext key.
    pub preview: Option<String>,
}

/// A plaintext key in keyward's format, checked (shape and checksum) and hashed locally.
pub fn identity_of_key(field: &str, key: &str) -> Result<KeyIdentity, FieldError> {
    parse_key(key).map_err(|e| FieldError::new(field, format!("is not a keyward key: {e}")))?;
    Ok(KeyIdentity { digest: key_digest(key), preview: Some(key_preview(key)) })
}

pub fn identity_of_digest(field: &str, digest: &str) -> Result<KeyIdentity, FieldError> {
    if is_digest(digest) {
        Ok(KeyIdentity { digest: digest.to_string(), preview: None })
    } else {
        Err(FieldError::new(field, "must be the lowercase hex SHA-256 of the key (64 characters)"))
    }
}

/// Attributes given as flags, for `keys create`, `keys update` and `push`.
#[derive(Args, Debug, Clone, Default)]
pub struct RecordFlags {
    /// Name (1 to 100 characters)
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// workspace or profile
    #[arg(long = "type", value_name = "TYPE")]
    pub key_type: Option<String>,
    #[arg(long)]
    pub profile_id: Option<String>,
    #[arg(long)]
    pub role: Option<String>,
    /// A permission such as users:read (repeat, or separate with commas)
    #[arg(long = "permission", value_name = "MODULE:ACTION", value_delimiter = ',')]
    pub permissions: Vec<String>,
    /// An allowed client address or CIDR (repeat, or separate with commas)
    #[arg(long = "ip", value_name = "ADDRESS", value_delimiter = ',')]
    pub ips: Vec<String>,
    /// RFC 3339 time after which the key is expired
    #[arg(long)]
    pub expires_at: Option<String>,
    /// Metadata, a JSON object of at most 1 KiB
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    /// Any attribute as NAME=VALUE (lists split on commas; JSON for objects), repeatable
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// All attributes at once, as a JSON object (`@FILE` reads it from a file)
    #[arg(long, value_name = "JSON")]
    pub attributes: Option<String>,
}

impl RecordFlags {
    /// The attributes these flags give, in the order: --attributes, then each flag, then --set.
    pub fn to_map(&self) -> Result<Map<String, Value>, Failure> {
        let mut map = match &self.attributes {
            None => Map::new(),
            Some(text) => {
                let text = match text.strip_prefix('@') {
                    Some(path) => std::fs::read_to_string(path).map_err(|e| Failure::new(format!("--attributes: {path}: {e}")))?,
                    None => text.clone(),
                };
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(map)) => map,
                    Ok(_) => return Err(Failure::new("--attributes: must be a JSON object")),
                    Err(e) => return Err(Failure::new(format!("--attributes: is not valid JSON: {e}"))),
                }
            }
        };
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.insert(name.to_string(), value);
            }
        };
        put("name", self.name.clone().map(Value::String));
        put("description", self.description.clone().map(Value::String));
        put("type", self.key_type.clone().map(Value::String));
        put("profile_id", self.profile_id.clone().map(Value::String));
        put("role", self.role.clone().map(Value::String));
        put("expires_at", self.expires_at.clone().map(Value::String));
        let list = |items: &[String]| (!items.is_empty()).then(|| items.iter().map(|s| Value::String(s.clone())).collect());
        put("permissions", list(&self.permissions));
        put("ip_allowlist", list(&self.ips));
        if let Some(text) = &self.metadata {
            let value = serde_json::from_str(text).map_err(|e| Failure::new(format!("--metadata: is not valid JSON: {e}")))?;
            map.insert("metadata".into(), value);
        }
        for entry in &self.set {
            let (name, text) = entry
                .split_once('=')
                .ok_or_else(|| Failure::new(format!("--set: \"{entry}\" must be NAME=VALUE")))?;
            let value = value_from_text(name.trim(), text).map_err(|e| Failure::new(format!("--set {e}")))?;
            map.insert(name.trim().to_string(), value.unwrap_or(Value::Null));
        }
        Ok(map)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_become_typed_values() {
        assert_eq!(value_from_text("permissions", "users:read, rewards:*|x:y").unwrap(), Some(json!(["users:read", "rewards:*", "x:y"])));
        assert_eq!(value_from_text("ip_allowlist", r#"["10.0.0.0/8"]"#).unwrap(), Some(json!(["10.0.0.0/8"])));
        assert_eq!(value_from_text("active", "FALSE").unwrap(), Some(json!(false)));
        assert_eq!(value_from_text("version", "7").unwrap(), Some(json!(7)));
        assert_eq!(value_from_text("metadata", r#"{"team":"a"}"#).unwrap(), Some(json!({"team": "a"})));
        assert_eq!(value_from_text("name", "  ci  ").unwrap(), Some(json!("ci")));
        assert_eq!(value_from_text("name", "").unwrap(), None);
        assert_eq!(value_from_text("version", "x").unwrap_err().field, "version");
        assert_eq!(value_from_text("metadata", "{nope").unwrap_err().field, "metadata");
    }

    #[test]
    fn validation_is_the_core_s() {
        let attrs = |v: Value| v.as_object().cloned().unwrap();
        assert!(validate(&attrs(json!({"name": "a", "version": 1})), WriteMode::Push).is_ok());
        assert_eq!(validate(&attrs(json!({"name": "a"})), WriteMode::Push).unwrap_err().field, "version");
        assert_eq!(
            validate(&attrs(json!({"name": "a", "version": 1, "ip_allowlist": ["x"]})), WriteMode::Push).unwrap_err().field,
            "ip_allowlist[0]"
        );
        assert_eq!(validate(&attrs(json!({"colour": "red"})), WriteMode::Update).unwrap_err().field, "colour");
        assert!(validate(&attrs(json!({"profile_id": "p2"})), WriteMode::Update).is_ok());
        assert!(validate(&attrs(json!({"type": "workspace"})), WriteMode::Update).is_ok());
    }

    #[test]
    fn keys_are_checked_and_hashed_here() {
        let key = keyward::core::key::generate_key("kw_test", &[7u8; 64]).unwrap();
        let id = identity_of_key("key", &key).unwrap();
        assert_eq!(id.digest, key_digest(&key));
        assert!(id.preview.unwrap().starts_with("kw_test_..."));
        assert_eq!(identity_of_key("key", "kw_test_nope").unwrap_err().field, "key");
        assert_eq!(identity_of_digest("digest", "ABC").unwrap_err().field, "digest");
    }

    #[test]
    fn flags_make_attributes() {
        let flags = RecordFlags {
            name: Some("ci".into()),
            permissions: vec!["users:read".into()],
            set: vec!["event_denylist=a,b".into(), "expires_at=".into()],
            attributes: Some(r#"{"role": "viewer", "name": "overridden"}"#.into()),
            ..RecordFlags::default()
        };
        let map = flags.to_map().unwrap();
        assert_eq!(
            Value::Object(map),
            json!({"role": "viewer", "name": "ci", "permissions": ["users:read"], "event_denylist": ["a", "b"], "expires_at": null})
        );
        assert!(RecordFlags { set: vec!["x".into()], ..RecordFlags::default() }.to_map().is_err());
    }
}
