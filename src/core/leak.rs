//! Leak reports: GitHub's secret-scanning partner format, its ECDSA P-256 signature, and what each
//! reported token is (a keyward key whose digest may be known, or a false positive found without
//! any store read). Pure: the public keys, the body and the headers come from the caller.
//!
//! The signature itself is checked by the platform's WebCrypto at the edge (`crypto.subtle.verify`,
//! edge::leaks): a P-256 implementation in the wasm cost 39 KB of the Worker's gzip budget. Here:
//! the keys read from GitHub's PEM list (checked to be P-256 SPKI), and the DER signature turned
//! into the raw `r || s` WebCrypto takes, both checked against the `p256` crate in the tests.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use super::digest::key_digest;
use super::key::parse_key;

/// Largest report body; bigger ones are refused (413) before anything is verified or parsed.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// Most tokens in one report.
pub const MAX_REPORT_TOKENS: usize = 1000;
/// Longest `token`, `type`, `url` or `source` taken from a report.
pub const MAX_FIELD_CHARS: usize = 2048;

/// The DER of a P-256 public key's SubjectPublicKeyInfo, up to the 65-byte uncompressed point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits, 04 ...) }.
const P256_SPKI_PREFIX: [u8; 27] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01,
    0x07, 0x03, 0x42, 0x00, 0x04,
];

/// One public key of GitHub's published list: its identifier and its SPKI DER (P-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub id: String,
    pub spki: Vec<u8>,
}

/// The SPKI DER inside a `-----BEGIN PUBLIC KEY-----` PEM, if it is a P-256 key.
fn p256_spki_of_pem(pem: &str) -> Result<Vec<u8>, &'static str> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|rest| rest.trim_end().strip_suffix("-----END PUBLIC KEY-----"))
        .ok_or("not a -----BEGIN PUBLIC KEY----- PEM")?;
    let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD.decode(base64).map_err(|_| "its base64 does not decode")?;
    if der.len() != P256_SPKI_PREFIX.len() + 64 || !der.starts_with(&P256_SPKI_PREFIX) {
        return Err("not an uncompressed P-256 (prime256v1) public key");
    }
    Ok(der)
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
        let spki = p256_spki_of_pem(pem).map_err(|e| format!("public_keys[{i}].key: {e}"))?;
        keys.push(PublicKey { id: id.to_string(), spki });
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

/// What to verify: the key `key_id` names and the signature (base64 of a DER ECDSA P-256
/// signature) as the raw 64-byte `r || s` WebCrypto takes. The edge then checks it over the body.
pub fn prepare<'k>(keys: &'k [PublicKey], key_id: Option<&str>, signature: Option<&str>) -> Result<(&'k PublicKey, [u8; 64]), SignatureError> {
    let (Some(key_id), Some(signature)) = (key_id.map(str::trim), signature.map(str::trim)) else {
        return Err(SignatureError::Missing);
    };
    if key_id.is_empty() || signature.is_empty() {
        return Err(SignatureError::Missing);
    }
    let key = keys.iter().find(|k| k.id == key_id).ok_or(SignatureError::UnknownKey)?;
    let der = STANDARD.decode(signature).map_err(|_| SignatureError::Malformed)?;
    Ok((key, der_signature_to_raw(&der).ok_or(SignatureError::Malformed)?))
}

/// `SEQUENCE { INTEGER r, INTEGER s }` (DER, each from 1 to 32 bytes after its sign byte) as 32
/// big-endian bytes each.
pub fn der_signature_to_raw(der: &[u8]) -> Option<[u8; 64]> {
    let (&tag, rest) = der.split_first()?;
    let (&len, body) = rest.split_first()?;
    if tag != 0x30 || usize::from(len) != body.len() || len >= 0x80 {
        return None;
    }
    let mut raw = [0u8; 64];
    let mut at = body;
    for half in 0..2 {
        let (&itag, rest) = at.split_first()?;
        let (&ilen, rest) = rest.split_first()?;
        let ilen = usize::from(ilen);
        if itag != 0x02 || ilen == 0 || ilen > 33 || rest.len() < ilen {
            return None;
        }
        let (int, next) = rest.split_at(ilen);
        // DER: no needless leading zero, and never negative.
        if int.first().is_some_and(|b| b & 0x80 != 0) || (ilen > 1 && int.first() == Some(&0) && int.get(1).is_some_and(|b| b & 0x80 == 0)) {
            return None;
        }
        let digits = match int.split_first() {
            Some((0, tail)) if ilen == 33 => tail,
            _ if ilen == 33 => return None,
            _ => int,
        };
        if digits.len() > 32 {
            return None;
        }
        let slot = raw.get_mut(half * 32 + 32 - digits.len()..half * 32 + 32)?;
        slot.copy_from_slice(digits);
        at = next;
    }
    at.is_empty().then_some(raw)
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
    use p256::ecdsa::signature::{Signer, Verifier};
    use p256::ecdsa::{Signature, SigningKey};
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

    #[test]
    fn keys_and_signatures_agree_with_p256() {
        let (a, b) = (signing_key(7), signing_key(9));
        let keys = parse_public_keys(&doc(&[("a", &a), ("b", &b)])).unwrap();
        assert_eq!(keys[0].spki, a.verifying_key().to_public_key_der().unwrap().as_bytes());
        // Many signatures, so that short r and s (leading zeros dropped in DER) come up.
        for i in 0..300u32 {
            let body = format!("[{{\"token\":\"{i}\"}}]");
            let sig: Signature = a.sign(body.as_bytes());
            let der = STANDARD.encode(sig.to_der().as_bytes());
            let (key, raw) = prepare(&keys, Some("a"), Some(&der)).unwrap();
            assert_eq!(key.id, "a");
            assert_eq!(raw.as_slice(), sig.to_bytes().as_slice());
            let back = Signature::from_slice(&raw).unwrap();
            assert!(a.verifying_key().verify(body.as_bytes(), &back).is_ok());
        }
    }

    #[test]
    fn refusals() {
        let a = signing_key(7);
        let keys = parse_public_keys(&doc(&[("a", &a)])).unwrap();
        let sig: Signature = a.sign(b"x");
        let der = STANDARD.encode(sig.to_der().as_bytes());
        assert_eq!(prepare(&keys, Some("c"), Some(&der)).unwrap_err(), SignatureError::UnknownKey);
        assert_eq!(prepare(&keys, None, Some(&der)).unwrap_err(), SignatureError::Missing);
        assert_eq!(prepare(&keys, Some("a"), Some("")).unwrap_err(), SignatureError::Missing);
        assert_eq!(prepare(&keys, Some("a"), Some("!!")).unwrap_err(), SignatureError::Malformed);
        assert_eq!(prepare(&keys, Some("a"), Some("AAAA")).unwrap_err(), SignatureError::Malformed);
        let mut long = sig.to_der().as_bytes().to_vec();
        long.push(0);
        assert_eq!(der_signature_to_raw(&long), None);
        assert_eq!(der_signature_to_raw(&[0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x01]), None, "negative r");
        assert_eq!(der_signature_to_raw(&[0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01]), None, "a needless zero");
        assert!(der_signature_to_raw(&[0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x07]).is_some());
        let mut wide = vec![0x30, 0x26, 0x02, 0x21, 0x01];
        wide.extend([0x80; 32]);
        wide.extend([0x02, 0x01, 0x01]);
        assert_eq!(der_signature_to_raw(&wide), None, "an r of 33 significant bytes");
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
