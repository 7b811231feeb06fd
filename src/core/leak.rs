//! Leak reports: GitHub's secret-scanning partner format, its ECDSA P-256 signature, and what each
//! reported token is (a keyward key whose digest may be known, or a false positive found without
//! any store read). Pure: the public keys, the body and the headers come from the caller.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde_json::Value;

use super::digest::key_digest;
use super::key::parse_key;

/// Largest report body; bigger ones are refused (413) before anything is verified or parsed.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// Most tokens in one report.
pub const MAX_REPORT_TOKENS: usize = 1000;
/// Longest `token`, `type`, `url` or `source` taken from a report.
pub const MAX_FIELD_CHARS: usize = 2048;

/// One public key of GitHub's published list.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub id: String,
    pub key: VerifyingKey,
}

/// Reads GitHub's shape, `{"public_keys": [{"key_identifier", "key": PEM, "is_current"}]}`. A key
/// whose PEM is not a P-256 SPKI public key is an error naming it: a list half understood would
/// refuse genuine reports later with no word of why.
pub fn parse_public_keys(doc: &str) -> Result<Vec<PublicKey>, String> {
    let value: Value = serde_json::from_str(doc).map_err(|e| format!("public keys: not valid JSON ({e})"))?;
    let list = value
        .get("public_keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "public keys: expected {\"public_keys\": [{\"key_identifier\", \"key\", \"is_current\"}]}".to_string())?;
    let mut keys = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let id = entry
            .get("key_identifier")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("public_keys[{i}].key_identifier: must be a non-empty string"))?;
        let pem = entry.get("key").and_then(Value::as_str).ok_or_else(|| format!("public_keys[{i}].key: must be a PEM string"))?;
        let key = VerifyingKey::from_public_key_pem(pem.trim())
            .map_err(|e| format!("public_keys[{i}].key: not a P-256 public key in PEM ({e})"))?;
        keys.push(PublicKey { id: id.to_string(), key });
    }
    Ok(keys)
}

/// Why a report's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No `Github-Public-Key-Identifier` or no `Github-Public-Key-Signature`.
    Missing,
    /// The identifier names no key of the list.
    UnknownKey,
    /// Not base64 of a DER ECDSA signature.
    Malformed,
    /// Well formed, but not a signature of this body by that key.
    Mismatch,
}

impl SignatureError {
    pub fn code(self) -> &'static str {
        match self {
            SignatureError::Missing => "MISSING_SIGNATURE",
            SignatureError::UnknownKey => "UNKNOWN_SIGNING_KEY",
            SignatureError::Malformed | SignatureError::Mismatch => "BAD_SIGNATURE",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            SignatureError::Missing => "send Github-Public-Key-Identifier and Github-Public-Key-Signature",
            SignatureError::UnknownKey => "Github-Public-Key-Identifier names no known public key",
            SignatureError::Malformed => "Github-Public-Key-Signature is not base64 of a DER ECDSA signature",
            SignatureError::Mismatch => "Github-Public-Key-Signature does not verify for this body",
        }
    }
}

/// Verifies `signature` (base64 of a DER ECDSA P-256 signature over SHA-256 of `body`) with the key
/// that `key_id` names.
pub fn verify(keys: &[PublicKey], key_id: Option<&str>, signature: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    let (Some(key_id), Some(signature)) = (key_id.map(str::trim), signature.map(str::trim)) else {
        return Err(SignatureError::Missing);
    };
    if key_id.is_empty() || signature.is_empty() {
        return Err(SignatureError::Missing);
    }
    let key = keys.iter().find(|k| k.id == key_id).ok_or(SignatureError::UnknownKey)?;
    let der = STANDARD.decode(signature).map_err(|_| SignatureError::Malformed)?;
    let signature = DerSignature::try_from(der.as_slice()).map_err(|_| SignatureError::Malformed)?;
    key.key.verify(body, &signature).map_err(|_| SignatureError::Mismatch)
}

/// One token of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedToken {
    pub token: String,
    pub token_type: String,
    pub url: String,
    pub source: String,
}

/// Reads GitHub's report: a JSON array of 1 to [`MAX_REPORT_TOKENS`] objects with a string
/// `token` and optional strings `type`, `url` and `source` (other fields, which GitHub may add,
/// are ignored). An error names the field.
pub fn parse_report(body: &[u8]) -> Result<Vec<ReportedToken>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("body: is not valid JSON ({e})"))?;
    let items = value.as_array().ok_or_else(|| "body: must be a JSON array of {token, type, url, source}".to_string())?;
    if items.is_empty() || items.len() > MAX_REPORT_TOKENS {
        return Err(format!("body: must hold 1 to {MAX_REPORT_TOKENS} tokens"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let object = item.as_object().ok_or_else(|| format!("[{i}]: must be an object"))?;
            let field = |name: &str, required: bool| -> Result<String, String> {
                match object.get(name) {
                    None | Some(Value::Null) if !required => Ok(String::new()),
                    Some(Value::String(s)) if (!required || !s.is_empty()) && s.chars().count() <= MAX_FIELD_CHARS => Ok(s.clone()),
                    _ if required => Err(format!("[{i}].{name}: must be a non-empty string of at most {MAX_FIELD_CHARS} characters")),
                    _ => Err(format!("[{i}].{name}: must be a string of at most {MAX_FIELD_CHARS} characters")),
                }
            };
            Ok(ReportedToken { token: field("token", true)?, token_type: field("type", false)?, url: field("url", false)?, source: field("source", false)? })
        })
        .collect()
}

/// The digest to look up for a reported token: only a keyward key with a valid checksum has one;
/// anything else is a false positive without a store read.
pub fn lookup_digest(token: &str) -> Option<String> {
    parse_key(token).ok().map(|_| key_digest(token))
}

/// `token_hash` of GitHub's answer: the SHA-256 hex of the token.
pub fn token_hash(token: &str) -> String {
    key_digest(token)
}

/// The audit actor of a leak source: 1 to 40 lowercase letters, digits, `-`, `_` or `.`.
pub fn source_actor(source: &str) -> Option<String> {
    let ok = !source.is_empty()
        && source.len() <= 40
        && source.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| format!("leak:{source}"))
}

/// `LEAK_ACTION`: what is done to a leaked key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakAction {
    Revoke,
    Expire,
}

impl LeakAction {
    /// `revoke` (also when unset) or `expire`; anything else is a configuration error.
    pub fn parse(value: Option<&str>) -> Result<LeakAction, String> {
        match value.map(str::trim) {
            None | Some("" | "revoke") => Ok(LeakAction::Revoke),
            Some("expire") => Ok(LeakAction::Expire),
            Some(other) => Err(format!("LEAK_ACTION: must be \"revoke\" or \"expire\" (got {other:?})")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    fn signing_key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32].into()).unwrap()
    }

    fn doc(keys: &[(&str, &SigningKey)]) -> String {
        let list: Vec<Value> = keys
            .iter()
            .map(|(id, k)| {
                let pem = k.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
                serde_json::json!({"key_identifier": id, "key": pem, "is_current": true})
            })
            .collect();
        serde_json::json!({"public_keys": list}).to_string()
    }

    fn sign(k: &SigningKey, body: &[u8]) -> String {
        let sig: p256::ecdsa::Signature = k.sign(body);
        STANDARD.encode(sig.to_der().as_bytes())
    }

    #[test]
    fn verifies_only_the_signed_body_with_the_named_key() {
        let (a, b) = (signing_key(7), signing_key(9));
        let keys = parse_public_keys(&doc(&[("a", &a), ("b", &b)])).unwrap();
        let body = br#"[{"token":"x","type":"t","url":"u","source":"content"}]"#;
        let sig = sign(&a, body);
        assert_eq!(verify(&keys, Some("a"), Some(&sig), body), Ok(()));
        assert_eq!(verify(&keys, Some("b"), Some(&sig), body), Err(SignatureError::Mismatch));
        assert_eq!(verify(&keys, Some("a"), Some(&sig), b"[]"), Err(SignatureError::Mismatch));
        assert_eq!(verify(&keys, Some("c"), Some(&sig), body), Err(SignatureError::UnknownKey));
        assert_eq!(verify(&keys, None, Some(&sig), body), Err(SignatureError::Missing));
        assert_eq!(verify(&keys, Some("a"), Some(""), body), Err(SignatureError::Missing));
        assert_eq!(verify(&keys, Some("a"), Some("!!"), body), Err(SignatureError::Malformed));
        assert_eq!(verify(&keys, Some("a"), Some("AAAA"), body), Err(SignatureError::Malformed));
    }

    #[test]
    fn public_key_list_errors_name_the_entry() {
        assert!(parse_public_keys("{}").unwrap_err().contains("public_keys"));
        let bad = r#"{"public_keys":[{"key_identifier":"x","key":"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}]}"#;
        assert!(parse_public_keys(bad).unwrap_err().contains("public_keys[0].key"));
        assert!(parse_public_keys(r#"{"public_keys":[{"key":"k"}]}"#).unwrap_err().contains("key_identifier"));
    }

    #[test]
    fn report_shape() {
        let ok = parse_report(br#"[{"token":"t","type":"kw","url":"https://x","source":"content","extra":1}]"#).unwrap();
        assert_eq!(ok[0].token, "t");
        assert_eq!(ok[0].url, "https://x");
        assert!(parse_report(b"{}").is_err());
        assert!(parse_report(b"[]").is_err());
        assert!(parse_report(b"not json").is_err());
        assert!(parse_report(br#"[{"type":"x"}]"#).unwrap_err().contains("[0].token"));
        assert!(parse_report(br#"[{"token":"t","url":5}]"#).unwrap_err().contains("[0].url"));
    }

    #[test]
    fn only_a_checksummed_key_is_looked_up() {
        let key = crate::core::key::generate_key("kw_test", &[1u8; 64]).unwrap();
        assert_eq!(lookup_digest(&key), Some(key_digest(&key)));
        let mut bad = key.clone();
        bad.pop();
        bad.push(if key.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(lookup_digest(&bad), None);
        assert_eq!(lookup_digest("ghp_notours"), None);
    }

    #[test]
    fn sources_and_actions() {
        assert_eq!(source_actor("github").as_deref(), Some("leak:github"));
        assert_eq!(source_actor("Trufflehog"), None);
        assert_eq!(source_actor(""), None);
        assert_eq!(LeakAction::parse(None), Ok(LeakAction::Revoke));
        assert_eq!(LeakAction::parse(Some("expire")), Ok(LeakAction::Expire));
        assert!(LeakAction::parse(Some("delete")).is_err());
    }
}
