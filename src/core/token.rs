//! Tokens (contract section 15): a key exchanged for a short-lived JSON Web Token (RFC 7519),
//! signed with EdDSA over Ed25519 (RFC 8037), `kid` in the header.
//!
//! Everything here is pure: signing takes the private key's 32 bytes and the claims (the caller
//! drew the key and the `jti` from the platform's CSPRNG); verification takes the token, the
//! public keys, the expected issuer and `now`. The gate, the control plane and the tests all use
//! these functions, so a token is read one way everywhere.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::record::KeyType;
use super::Code;

/// The one algorithm keyward signs with and accepts (a header naming any other is refused).
pub const ALG: &str = "EdDSA";
/// Longest token read: far above what keyward makes (about 600 bytes), and bounded so that a
/// huge header costs nothing.
pub const MAX_TOKEN_LEN: usize = 4096;
/// `ttl_seconds` bounds and default.
pub const MIN_TTL_SECONDS: u64 = 60;
pub const MAX_TTL_SECONDS: u64 = 86_400;
pub const DEFAULT_TTL_SECONDS: u64 = 3600;
/// How far in the future a token's `nbf` may be (the signer's clock ahead of the gate's).
pub const NBF_LEEWAY_MS: i64 = 5000;

/// A token's claims. `kwd` is private to keyward: the SHA-256 digest of the token's key (not a
/// secret: the digest is what the store is keyed by), so that the gate finds the key's record
/// exactly as it finds it for the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The key's id.
    pub sub: String,
    pub iat: i64,
    /// `iat` in milliseconds (keyward's private claim), for `revoke_tokens`.
    #[serde(default)]
    pub iat_ms: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    #[serde(rename = "type")]
    pub key_type: KeyType,
    #[serde(default)]
    pub workspace: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    pub kwd: String,
    /// A simple-authentication token (a customer of a profile key): how `profile` identifies the
    /// customer (`email` or `custom_id`). Absent on a key's own token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idt: Option<String>,
}

/// A public key the gate accepts tokens of.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub kid: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// From its 32 bytes; `None` when they are not a point of the curve.
    pub fn from_bytes(kid: &str, bytes: &[u8]) -> Option<PublicKey> {
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        Some(PublicKey { kid: kid.to_string(), key: VerifyingKey::from_bytes(&bytes).ok()? })
    }

    /// From a JWK as [`jwk`] writes it (`kty` OKP, `crv` Ed25519, `x`, `kid`).
    pub fn from_jwk(jwk: &Value) -> Option<PublicKey> {
        if jwk.get("kty")?.as_str()? != "OKP" || jwk.get("crv")?.as_str()? != "Ed25519" {
            return None;
        }
        let x = URL_SAFE_NO_PAD.decode(jwk.get("x")?.as_str()?).ok()?;
        PublicKey::from_bytes(jwk.get("kid")?.as_str()?, &x)
    }
}

/// The public key (32 bytes) of a private key (32 bytes from the CSPRNG).
pub fn public_of(secret: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

/// The JWK of a public key, as `/_keyward/jwks.json` lists it.
pub fn jwk(kid: &str, public: &[u8]) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(public), "kid": kid, "alg": ALG, "use": "sig"})
}

/// A refused token: `TOKEN_INVALID` or `TOKEN_EXPIRED`, and why, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub code: Code,
    pub message: String,
}

fn invalid(message: impl Into<String>) -> TokenError {
    TokenError { code: Code::TokenInvalid, message: format!("the token is not valid: {}", message.into()) }
}

/// The signed token for `claims` under the private key `secret` named `kid`.
pub fn sign(claims: &Claims, kid: &str, secret: &[u8; 32]) -> String {
    let header = json!({"alg": ALG, "typ": "JWT", "kid": kid});
    let payload = serde_json::to_string(claims).unwrap_or_default();
    let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    let signature = SigningKey::from_bytes(secret).sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    token
}

/// The `Authorization: Bearer` value when it is a token rather than a key: keys never hold a
/// `.` (they are `<prefix>_<base62>`), a JWT always does.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let header = authorization?.trim();
    let (scheme, rest) = header.split_once(' ')?;
    let rest = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && rest.contains('.')).then_some(rest)
}

/// The refusal of a request carrying a token and also a key (`x-api-key`, or `api_key=` in the
/// `query`): which of them was meant is not guessed. `None`: the token comes alone.
pub fn beside_a_key(x_api_key: Option<&str>, query: Option<&str>) -> Option<(Code, &'static str)> {
    let in_query = query.is_some_and(|q| super::credential::query_values(q, "api_key").next().is_some());
    (x_api_key.is_some() || in_query).then_some((Code::BadRequest, "the request carries a token and an API key; send one of them"))
}

/// Checks a token: its form, header (`alg` EdDSA, a known `kid`), signature, issuer, `nbf` and
/// `exp` at `now_ms`, in that order, so that a forged token is `TOKEN_INVALID` whatever its times.
/// What the token's key allows is not decided here: the caller reads its record by `kwd`.
pub fn verify(token: &str, keys: &[PublicKey], issuer: &str, now_ms: i64) -> Result<Claims, TokenError> {
    let claims = verify_signature(token, keys)?;
    if claims.iss != issuer {
        return Err(invalid(format!("it was issued by {:?}, not by this deployment", claims.iss)));
    }
    if now_ms.saturating_add(NBF_LEEWAY_MS) < claims.nbf.saturating_mul(1000) {
        return Err(invalid("it is not valid yet (nbf)"));
    }
    if now_ms >= claims.exp.saturating_mul(1000) {
        return Err(TokenError { code: Code::TokenExpired, message: "the token has expired".into() });
    }
    Ok(claims)
}

/// The header's `kid` (so that the caller can fetch the public keys again when it knows none by
/// that name), or why the token cannot even be read.
pub fn kid_of(token: &str) -> Result<String, TokenError> {
    Ok(parts(token)?.header.kid)
}

#[derive(Deserialize)]
struct Header {
    kid: String,
    #[serde(default)]
    crit: Option<Value>,
}

/// A token taken apart: its header, the signing input (the encoded header and payload), the
/// decoded payload and signature.
struct Parts<'a> {
    header: Header,
    input: &'a str,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn parts(token: &str) -> Result<Parts<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid(format!("it is longer than {MAX_TOKEN_LEN} bytes")));
    }
    let mut pieces = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (pieces.next(), pieces.next(), pieces.next(), pieces.next()) else {
        return Err(invalid("it must be three base64url parts separated by dots"));
    };
    let decode = |part: &str, name: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| invalid(format!("its {name} is not base64url")));
    let header_bytes = decode(header, "header")?;
    let header_value: Value = serde_json::from_slice(&header_bytes).map_err(|_| invalid("its header is not JSON"))?;
    match header_value.get("alg").and_then(Value::as_str) {
        Some(ALG) => {}
        Some(other) if other.eq_ignore_ascii_case("none") => return Err(invalid("the algorithm none is refused")),
        Some(other) => return Err(invalid(format!("the algorithm {other:?} is refused (only {ALG})"))),
        None => return Err(invalid("its header has no alg")),
    }
    let parsed: Header = serde_json::from_value(header_value).map_err(|_| invalid("its header has no kid"))?;
    if parsed.crit.is_some() {
        return Err(invalid("its header has crit, which is not supported"));
    }
    let payload_bytes = decode(payload, "payload")?;
    let signature_bytes = decode(signature, "signature")?;
    let input_len = header.len().saturating_add(1).saturating_add(payload.len());
    let input = token.get(..input_len).unwrap_or_default();
    Ok(Parts { header: parsed, input, payload: payload_bytes, signature: signature_bytes })
}

fn verify_signature(token: &str, keys: &[PublicKey]) -> Result<Claims, TokenError> {
    let Parts { header, input, payload, signature } = parts(token)?;
    let key = keys.iter().find(|k| k.kid == header.kid).ok_or_else(|| invalid(format!("no signing key has the kid {:?}", header.kid)))?;
    let signature: [u8; 64] = signature.as_slice().try_into().map_err(|_| invalid("its signature is not 64 bytes"))?;
    key.key
        .verify_strict(input.as_bytes(), &Signature::from_bytes(&signature))
        .map_err(|_| invalid("its signature does not match"))?;
    serde_json::from_slice(&payload).map_err(|_| invalid("its claims are not keyward's"))
}

/// `ttl_seconds` of a token request: absent or null is the default; otherwise a whole number
/// from [`MIN_TTL_SECONDS`] to [`MAX_TTL_SECONDS`].
pub fn parse_ttl(value: Option<&Value>) -> Result<u64, String> {
    let bad = || format!("ttl_seconds: must be an integer from {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}");
    match value {
        None | Some(Value::Null) => Ok(DEFAULT_TTL_SECONDS),
        Some(v) => {
            let n = v.as_u64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && (0.0..1e9).contains(f)).map(
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "range and fraction checked")]
                |f| f as u64,
            ));
            n.filter(|n| (MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(n)).ok_or_else(bad)
        }
    }
}

/// The claims' times for a token made at `now_ms` to live `ttl_seconds`: `(iat, exp)` in Unix
/// seconds. `exp` is never past the key's own `expires_at`.
pub fn times(now_ms: i64, ttl_seconds: u64, key_expires_ms: Option<i64>) -> (i64, i64) {
    let now_s = now_ms.div_euclid(1000);
    let mut exp = now_s.saturating_add(i64::try_from(ttl_seconds).unwrap_or(i64::MAX));
    if let Some(ms) = key_expires_ms {
        exp = exp.min(ms.div_euclid(1000));
    }
    (now_s, exp)
}

/// Whether a token issued at `iat_ms` (its private claim, in milliseconds: `iat` has only
/// seconds, and a token made in the same second just after a `revoke_tokens` must live) was
/// ended by its key's `revoke_tokens` at `tokens_not_before_ms`.
pub fn revoked_by_key(iat_ms: i64, tokens_not_before_ms: Option<i64>) -> bool {
    tokens_not_before_ms.is_some_and(|ms| iat_ms < ms)
}

/// A simple-authentication request (`POST /auth/simple`): the customer's identifier, how it
/// identifies them, and the HMAC-SHA256 of the identifier under the key's salt, in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleAuth {
    pub identifier_type: String,
    pub identifier: String,
    pub signature: String,
    pub ttl_seconds: u64,
}

/// Longest identifier accepted (an e-mail address is at most 254 characters).
pub const MAX_IDENTIFIER_CHARS: usize = 256;

/// Reads an `/auth/simple` body; the error names the field.
pub fn parse_simple_auth(body: &Value) -> Result<SimpleAuth, String> {
    let object = body.as_object().ok_or("body: must be a JSON object")?;
    if let Some(other) = object.keys().find(|k| !matches!(k.as_str(), "identifier_type" | "identifier" | "signature" | "ttl_seconds")) {
        return Err(format!("{other}: is not a simple authentication field (expected identifier_type, identifier, signature, ttl_seconds)"));
    }
    let text = |field: &str| -> Result<String, String> {
        match object.get(field) {
            None | Some(Value::Null) => Err(format!("{field}: is required")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{field}: must be a string")),
        }
    };
    let identifier_type = text("identifier_type")?;
    if !matches!(identifier_type.as_str(), "email" | "custom_id") {
        return Err("identifier_type: must be \"email\" or \"custom_id\"".into());
    }
    let identifier = text("identifier")?;
    let n = identifier.chars().count();
    if n == 0 || n > MAX_IDENTIFIER_CHARS || identifier.chars().any(char::is_control) {
        return Err(format!("identifier: must be 1 to {MAX_IDENTIFIER_CHARS} characters, without control characters"));
    }
    let signature = text("signature")?;
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("signature: must be the HMAC-SHA256 of the identifier under the key's salt, as 64 hex characters".into());
    }
    let ttl_seconds = parse_ttl(object.get("ttl_seconds"))?;
    Ok(SimpleAuth { identifier_type, identifier, signature: signature.to_ascii_lowercase(), ttl_seconds })
}

/// The profile attribute an identifier type names (Synerise's: `email`, `customId`).
pub fn identifier_attribute(identifier_type: &str) -> &'static str {
    if identifier_type == "email" {
        "email"
    } else {
        "customId"
    }
}

/// What the key's attribute allowlist lacks for simple authentication by `identifier_type`:
/// `uuid` and the identifier's attribute. No allowlist (no limit) lacks nothing.
pub fn missing_attributes(allowlist: Option<&[String]>, identifier_type: &str) -> Vec<&'static str> {
    let Some(list) = allowlist else { return Vec::new() };
    ["uuid", identifier_attribute(identifier_type)].into_iter().filter(|a| !list.iter().any(|l| l == a)).collect()
}

/// Whether `signature_hex` is the HMAC-SHA256 of `identifier` under `salt` (its text, as the
/// management API shows it), compared in constant time.
pub fn simple_signature_ok(salt: &str, identifier: &str, signature_hex: &str) -> bool {
    use hmac::{Hmac, Mac};
    let Some(expected) = decode_hex(signature_hex) else { return false };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(salt.as_bytes()) else { return false };
    mac.update(identifier.as_bytes());
    mac.verify_slice(&expected).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16);
    hex.as_bytes().chunks(2).map(|pair| match pair {
        [hi, lo] => Some(u8::try_from(digit(*hi)? * 16 + digit(*lo)?).ok()?),
        _ => None,
    }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7; 32];
    const NOW: i64 = 1_800_000_000_000;

    fn claims() -> Claims {
        Claims {
            iss: "keyward".into(),
            sub: "key_01".into(),
            iat: NOW / 1000,
            iat_ms: NOW,
            nbf: NOW / 1000,
            exp: NOW / 1000 + 3600,
            jti: "tok_1".into(),
            key_type: KeyType::Workspace,
            workspace: Some("ws".into()),
            profile: None,
            kwd: "ab".repeat(32),
            idt: None,
        }
    }

    fn keys() -> Vec<PublicKey> {
        PublicKey::from_bytes("k1", &public_of(&SECRET)).into_iter().collect()
    }

    fn code(token: &str, now: i64) -> Code {
        verify(token, &keys(), "keyward", now).err().map_or(Code::Valid, |e| e.code)
    }

    fn forge(header: &str, payload: &str, signature: &str) -> String {
        format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload), signature)
    }

    #[test]
    fn signs_and_verifies() {
        let token = sign(&claims(), "k1", &SECRET);
        assert_eq!(verify(&token, &keys(), "keyward", NOW), Ok(claims()));
        assert_eq!(code(&token, NOW + 3_599_999), Code::Valid);
    }

    #[test]
    fn expiry_is_exact_to_the_millisecond() {
        let token = sign(&claims(), "k1", &SECRET);
        assert_eq!(code(&token, NOW + 3_600_000), Code::TokenExpired);
        assert_eq!(code(&token, NOW + 3_601_000), Code::TokenExpired);
    }

    #[test]
    fn not_yet_valid_is_invalid() {
        let mut c = claims();
        c.nbf = NOW / 1000 + 60;
        assert_eq!(code(&sign(&c, "k1", &SECRET), NOW), Code::TokenInvalid);
        c.nbf = NOW / 1000 + 2;
        assert_eq!(code(&sign(&c, "k1", &SECRET), NOW), Code::Valid);
    }

    #[test]
    fn adversarial_tokens_are_invalid() {
        let token = sign(&claims(), "k1", &SECRET);
        let mut pieces = token.split('.');
        let (h, p, s) = (pieces.next().unwrap_or(""), pieces.next().unwrap_or(""), pieces.next().unwrap_or(""));
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(p).unwrap_or_default()).unwrap_or_default();
        let cases = [
            // alg none, with and without a signature
            forge(r#"{"alg":"none","kid":"k1"}"#, &payload, ""),
            forge(r#"{"alg":"NONE","kid":"k1"}"#, &payload, s),
            // HS256 "signed" with the public key as the secret: refused by its alg alone
            forge(r#"{"alg":"HS256","kid":"k1"}"#, &payload, s),
            forge(r#"{"alg":"ES256","kid":"k1"}"#, &payload, s),
            // a changed claim
            forge(r#"{"alg":"EdDSA","kid":"k1"}"#, &payload.replace("key_01", "key_02"), s),
            // an unknown kid, no kid, a crit header
            forge(r#"{"alg":"EdDSA","kid":"k9"}"#, &payload, s),
            forge(r#"{"alg":"EdDSA"}"#, &payload, s),
            forge(r#"{"alg":"EdDSA","kid":"k1","crit":["exp"]}"#, &payload, s),
            // a truncated signature, no signature, a padded one, four parts, two parts
            format!("{h}.{p}.{}", s.get(..s.len() - 4).unwrap_or("")),
            format!("{h}.{p}."),
            format!("{h}.{p}.{s}=="),
            format!("{h}.{p}.{s}.{s}"),
            format!("{h}.{p}"),
            // not base64, not JSON
            format!("!!.{p}.{s}"),
            format!("{}.{p}.{s}", URL_SAFE_NO_PAD.encode("not json")),
            // a huge header
            forge(&format!(r#"{{"alg":"EdDSA","kid":"k1","x":"{}"}}"#, "a".repeat(5000)), &payload, s),
            String::from("."),
            String::new(),
        ];
        for (i, bad) in cases.iter().enumerate() {
            assert_eq!(code(bad, NOW), Code::TokenInvalid, "case {i}: {bad}");
        }
    }

    #[test]
    fn another_deployments_token_is_invalid() {
        let other = sign(&claims(), "k1", &[9; 32]);
        assert_eq!(code(&other, NOW), Code::TokenInvalid);
        let mut c = claims();
        c.iss = "elsewhere".into();
        assert_eq!(code(&sign(&c, "k1", &SECRET), NOW), Code::TokenInvalid);
    }

    #[test]
    fn an_expired_forgery_is_invalid_not_expired() {
        let mut c = claims();
        c.exp = 1;
        let token = sign(&c, "k1", &[9; 32]);
        assert_eq!(code(&token, NOW), Code::TokenInvalid);
    }

    #[test]
    fn jwk_round_trips() {
        let jwk = jwk("k1", &public_of(&SECRET));
        let key = PublicKey::from_jwk(&jwk).map(|k| k.kid);
        assert_eq!(key.as_deref(), Some("k1"));
        assert!(PublicKey::from_jwk(&json!({"kty": "EC", "crv": "P-256", "x": "", "kid": "k"})).is_none());
    }

    #[test]
    fn bearer_token_tells_tokens_from_keys() {
        assert_eq!(bearer_token(Some("Bearer a.b.c")), Some("a.b.c"));
        assert_eq!(bearer_token(Some("bearer  a.b.c ")), Some("a.b.c"));
        assert_eq!(bearer_token(Some("Bearer kw_live_abc")), None);
        assert_eq!(bearer_token(Some("Basic a.b")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn a_key_beside_a_token_is_refused() {
        assert_eq!(beside_a_key(None, None), None);
        assert_eq!(beside_a_key(None, Some("page=2&api_keys=x")), None);
        for (header, query) in [(Some("kw_live_abc"), None), (None, Some("page=2&api_key=kw_live_abc")), (Some(""), Some("api_key="))] {
            assert_eq!(beside_a_key(header, query).map(|(code, _)| code), Some(Code::BadRequest), "{header:?} {query:?}");
        }
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!(parse_ttl(None), Ok(3600));
        assert_eq!(parse_ttl(Some(&json!(60))), Ok(60));
        assert_eq!(parse_ttl(Some(&json!(86400.0))), Ok(86400));
        for bad in [json!(59), json!(86401), json!(-5), json!(1.5), json!("60"), json!(true)] {
            assert!(parse_ttl(Some(&bad)).is_err_and(|e| e.starts_with("ttl_seconds:")), "{bad}");
        }
    }

    #[test]
    fn times_respect_key_expiry_and_revoke_tokens() {
        assert_eq!(times(NOW + 400, 60, None), (NOW / 1000, NOW / 1000 + 60));
        assert_eq!(times(NOW, 3600, Some(NOW + 10_500)), (NOW / 1000, NOW / 1000 + 10));
        // revoke_tokens at NOW + 300 ms: a token made at NOW + 500 ms (the same second) lives
        assert!(!revoked_by_key(NOW + 500, Some(NOW + 300)));
        assert!(revoked_by_key(NOW + 299, Some(NOW + 300)));
        assert!(!revoked_by_key(NOW, None));
    }

    #[test]
    fn simple_auth_signatures() {
        use hmac::{Hmac, Mac};
        let salt = "5a1t";
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(salt.as_bytes()).unwrap_or_else(|_| unreachable!());
        mac.update(b"ann@example.com");
        let good: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert!(simple_signature_ok(salt, "ann@example.com", &good));
        assert!(!simple_signature_ok(salt, "bob@example.com", &good));
        assert!(!simple_signature_ok("other", "ann@example.com", &good));
        assert!(!simple_signature_ok(salt, "ann@example.com", good.get(..62).unwrap_or("")));
        assert!(!simple_signature_ok(salt, "ann@example.com", "zz"));
        let body = json!({"identifier_type": "email", "identifier": "ann@example.com", "signature": good.to_uppercase()});
        assert_eq!(parse_simple_auth(&body).map(|s| s.signature), Ok(good.clone()));
        for (bad, field) in [
            (json!({"identifier_type": "phone", "identifier": "x", "signature": good}), "identifier_type:"),
            (json!({"identifier_type": "email", "signature": good}), "identifier:"),
            (json!({"identifier_type": "email", "identifier": "", "signature": good}), "identifier:"),
            (json!({"identifier_type": "email", "identifier": "x", "signature": "abc"}), "signature:"),
            (json!({"identifier_type": "email", "identifier": "x", "signature": good, "extra": 1}), "extra:"),
            (json!({"identifier_type": "email", "identifier": "x", "signature": good, "ttl_seconds": 5}), "ttl_seconds:"),
        ] {
            assert!(parse_simple_auth(&bad).is_err_and(|e| e.starts_with(field)), "{bad}");
        }
        let list = vec!["uuid".to_string(), "email".to_string()];
        assert!(missing_attributes(Some(&list), "email").is_empty());
        assert_eq!(missing_attributes(Some(&list), "custom_id"), vec!["customId"]);
        assert_eq!(missing_attributes(Some(&[]), "email"), vec!["uuid", "email"]);
        assert!(missing_attributes(None, "email").is_empty());
    }
}
