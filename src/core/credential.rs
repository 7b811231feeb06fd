//! Finding the API key in a request: Bearer, Basic, `X-API-Key` or the `api_key` query parameter.

use base64::Engine;

/// Where a key was found; the gate strips each of these before forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    Bearer,
    Basic,
    Header,
    Query,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub key: String,
    /// The login half of Basic credentials, which must be the key's workspace.
    pub workspace: Option<String>,
    pub sources: Vec<CredentialSource>,
}

impl Credential {
    pub fn has(&self, source: CredentialSource) -> bool {
        self.sources.contains(&source)
    }
}

/// Credentials that cannot be read: two different keys, or a Basic header that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialError {
    pub message: String,
}

const MAX_CREDENTIAL_LEN: usize = 1024;

/// Looks in the contract's order; the same key in several places is fine, two different keys are not.
pub fn find_credential(
    authorization: Option<&str>,
    x_api_key: Option<&str>,
    query: Option<&str>,
) -> Result<Option<Credential>, CredentialError> {
    let mut found: Vec<(String, Option<String>, CredentialSource)> = Vec::new();
    if let Some(header) = authorization.map(str::trim) {
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            found.push((bounded(rest)?.to_string(), None, CredentialSource::Bearer));
        } else if scheme.eq_ignore_ascii_case("basic") {
            let (workspace, key) = decode_basic(rest)?;
            found.push((key, Some(workspace), CredentialSource::Basic));
        }
        // Other schemes belong to the origin, not to us; they are left alone.
    }
    if let Some(key) = x_api_key {
        found.push((bounded(key.trim())?.to_string(), None, CredentialSource::Header));
    }
    if let Some(query) = query {
        for value in query_values(query, "api_key") {
            let value = value.ok_or_else(|| bad("the api_key query parameter is not valid percent-encoding"))?;
            found.push((bounded(&value)?.to_string(), None, CredentialSource::Query));
        }
    }
    let mut iter = found.into_iter();
    let Some((key, mut workspace, source)) = iter.next() else {
        return Ok(None);
    };
    let mut credential = Credential { key, workspace: None, sources: vec![source] };
    for (other, other_workspace, other_source) in iter {
        if other != credential.key {
            return Err(bad("the request carries two different API keys"));
        }
        if workspace.is_none() {
            workspace = other_workspace;
        }
        if !credential.sources.contains(&other_source) {
            credential.sources.push(other_source);
        }
    }
    credential.workspace = workspace;
    Ok(Some(credential))
}

fn bad(message: &str) -> CredentialError {
    CredentialError { message: message.to_string() }
}

fn bounded(s: &str) -> Result<&str, CredentialError> {
    if s.len() > MAX_CREDENTIAL_LEN {
        Err(bad("the API key is too long"))
    } else {
        Ok(s)
    }
}

fn decode_basic(encoded: &str) -> Result<(String, String), CredentialError> {
    if encoded.len() > MAX_CREDENTIAL_LEN * 2 {
        return Err(bad("the Basic credentials are too long"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| bad("the Basic credentials are not valid base64"))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("the Basic credentials are not UTF-8"))?;
    let (workspace, key) = text
        .split_once(':')
        .ok_or_else(|| bad("the Basic credentials must be workspace:key"))?;
    Ok((workspace.to_string(), key.to_string()))
}

/// A query pair's raw name and value, split at the first `=` (no `=`: the name, and an empty value).
pub fn pair_halves(pair: &str) -> (&str, &str) {
    pair.split_once('=').unwrap_or((pair, ""))
}

/// Values of `name` in a query string, percent-decoded (`+` is a space); `None` for a bad escape.
pub fn query_values<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = Option<String>> + 'a {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair_halves(pair);
        (form_decode(k).as_deref() == Some(name)).then(|| form_decode(v))
    })
}

/// A query pair's name and value, each form-decoded (`+` a space, `%XX` a byte, UTF-8 after);
/// `None` if either is not valid percent-encoding.
pub fn form_pair(pair: &str) -> Option<(String, String)> {
    let (k, v) = pair_halves(pair);
    Some((form_decode(k)?, form_decode(v)?))
}

/// The query string without any `api_key` parameter, other parameters untouched and in order.
pub fn strip_api_key(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            !pair.is_empty() && form_decode(pair_halves(pair).0).as_deref() != Some("api_key")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// One name's or value's form decoding (`+` a space, `%XX` a byte, UTF-8 after); `None` if it is
/// not valid percent-encoding.
pub fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16))?;
                let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16))?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;
    use base64::Engine;

    fn basic(s: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s))
    }

    #[test]
    fn each_position() {
        let c = find_credential(Some("Bearer k1"), None, None).unwrap().unwrap();
        assert_eq!((c.key.as_str(), c.sources.as_slice()), ("k1", &[CredentialSource::Bearer][..]));
        let c = find_credential(Some(&basic("ws-1:k1")), None, None).unwrap().unwrap();
        assert_eq!(c.workspace.as_deref(), Some("ws-1"));
        assert_eq!(c.key, "k1");
        let c = find_credential(None, Some("k1"), None).unwrap().unwrap();
        assert_eq!(c.sources, vec![CredentialSource::Header]);
        let c = find_credential(None, None, Some("a=1&api_key=k%31&b=2")).unwrap().unwrap();
        assert_eq!(c.key, "k1");
        assert_eq!(find_credential(None, None, Some("a=1")).unwrap(), None);
        assert_eq!(find_credential(Some("Digest abc"), None, None).unwrap(), None);
    }

    #[test]
    fn same_key_twice_is_fine_two_keys_are_not() {
        let c = find_credential(Some("bearer k1"), Some("k1"), Some("api_key=k1")).unwrap().unwrap();
        assert_eq!(c.sources.len(), 3);
        assert!(find_credential(Some("Bearer k1"), Some("k2"), None).is_err());
        assert!(find_credential(None, None, Some("api_key=k1&api_key=k2")).is_err());
    }

    #[test]
    fn malformed_basic_is_an_error_not_a_crash() {
        assert!(find_credential(Some("Basic %%%"), None, None).is_err());
        assert!(find_credential(Some(&basic("no-colon")), None, None).is_err());
        assert!(find_credential(Some("Basic /w=="), None, None).is_err());
    }

    #[test]
    fn strips_only_api_key() {
        assert_eq!(strip_api_key("a=1&api_key=x&b=2"), "a=1&b=2");
        assert_eq!(strip_api_key("api%5Fkey=x"), "");
        assert_eq!(strip_api_key("api_keys=1"), "api_keys=1");
    }

    #[test]
    fn a_pair_decodes_its_name_as_well_as_its_value() {
        assert_eq!(form_pair("per%5Fpage=5"), Some(("per_page".into(), "5".into())));
        assert_eq!(form_pair("page%5Bsize%5D=a+b"), Some(("page[size]".into(), "a b".into())));
        assert_eq!(form_pair("flag"), Some(("flag".into(), String::new())));
        assert_eq!(form_pair("a=%zz"), None);
        assert_eq!(form_pair("%ff=1"), None, "not UTF-8");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(a in proptest::option::of(".{0,60}"), b in proptest::option::of(".{0,60}"), q in proptest::option::of(".{0,60}")) {
            let _ = find_credential(a.as_deref(), b.as_deref(), q.as_deref());
            if let Some(q) = q { let _ = strip_api_key(&q); }
        }
    }
}
