//! Web origins (`scheme://host[:port]`), lists of them with `https://*.domain` wildcards, and
//! which origin a request comes from: shared by a key's `origin_allowlist` and the policy's CORS.
//!
//! Parsing is strict, so that what is compared is what a browser sends: no path, query, user
//! info or empty label; hosts are ASCII (IDNs in their punycode form) and compared in lowercase;
//! the default port of `http` (80) and `https` (443) is the same as no port. A wildcard stands for
//! one or more whole labels on the left, never for the domain itself, and only in an entry of a
//! list: `https://*.example.com` matches `https://a.example.com` and `https://a.b.example.com`,
//! not `https://example.com`, `https://evilexample.com` nor `https://a.example.com.evil.net`.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv6Addr;

/// Longest origin (or list entry) accepted: a 253-character host with a scheme and a port.
pub const MAX_ORIGIN_LEN: usize = 300;
const MAX_SCHEME_LEN: usize = 32;
const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
/// A longer `Referer` is not read for its origin: the origin is at its start anyway.
const MAX_REFERER_LEN: usize = 8192;

/// An origin as a browser serialises it, normalised (lowercase, default port dropped).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// Why an origin or a list entry does not parse, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginError {
    pub message: String,
}

fn error(message: impl Into<String>) -> OriginError {
    OriginError { message: message.into() }
}

/// Which entry of an origin list did not parse, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginListError {
    pub index: usize,
    pub entry: String,
    pub message: String,
}

/// Parses an origin exactly as the `Origin` header carries it: `scheme://host[:port]`.
pub fn parse_origin(text: &str) -> Result<Origin, OriginError> {
    let (origin, wildcard) = parse(text)?;
    if wildcard {
        return Err(error("a request's origin cannot hold a wildcard"));
    }
    Ok(origin)
}

/// Parses `scheme://host[:port]`; the second value says whether the host began with `*.` (which
/// then is not part of `host`).
fn parse(text: &str) -> Result<(Origin, bool), OriginError> {
    if text.is_empty() {
        return Err(error("is empty"));
    }
    if text.len() > MAX_ORIGIN_LEN {
        return Err(error(format!("is longer than {MAX_ORIGIN_LEN} characters")));
    }
    if !text.is_ascii() {
        return Err(error("must be ASCII (write an international domain in its punycode form, xn--...)"));
    }
    let (scheme, authority) = text
        .split_once("://")
        .ok_or_else(|| error("must be scheme://host, such as https://app.example.com"))?;
    let scheme = scheme.to_ascii_lowercase();
    let scheme_ok = scheme.len() <= MAX_SCHEME_LEN
        && scheme.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && scheme.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return Err(error(format!("{scheme:?} is not a URL scheme")));
    }
    if let Some(c) = authority.chars().find(|c| matches!(c, '/' | '?' | '#' | '@' | '\\') || c.is_ascii_whitespace() || c.is_ascii_control()) {
        let what = match c {
            '/' | '?' | '#' | '\\' => "must be an origin only, without a path, query or fragment",
            '@' => "must not hold user information (user@)",
            _ => "must not contain spaces or control characters",
        };
        return Err(error(what));
    }
    let (host, port) = split_port(authority)?;
    let port = port.filter(|p| Some(*p) != default_port(&scheme));
    let (host, wildcard) = match host.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (host, false),
    };
    let host = host.to_ascii_lowercase();
    if host.starts_with('[') {
        if wildcard {
            return Err(error("a wildcard must be followed by a domain name, not an address"));
        }
    } else {
        check_domain(&host, wildcard)?;
    }
    Ok((Origin { scheme, host, port }, wildcard))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Splits `host[:port]`, where the host may be a bracketed IPv6 address.
fn split_port(authority: &str) -> Result<(&str, Option<u16>), OriginError> {
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let close = inner.find(']').ok_or_else(|| error("has an IPv6 address without its closing ]"))?;
        let (address, after) = inner.split_at(close);
        address
            .parse::<Ipv6Addr>()
            .map_err(|_| error(format!("{address:?} is not an IPv6 address")))?;
        // `after` starts with the `]`; the host keeps its brackets, as origins write it.
        let after = after.get(1..).unwrap_or_default();
        let host_len = authority.len() - after.len();
        let host = authority.get(..host_len).unwrap_or_default();
        match after {
            "" => (host, None),
            rest => (host, Some(rest.strip_prefix(':').ok_or_else(|| error("has text after the IPv6 address"))?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => {
            let valid = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
            let number = p.parse::<u16>().ok().filter(|n| valid && *n > 0);
            Some(number.ok_or_else(|| error(format!("{p:?} is not a port (1 to 65535)")))?)
        }
    };
    if host.is_empty() {
        return Err(error("has no host"));
    }
    Ok((host, port))
}

/// A domain name (or dotted IPv4 address): labels of letters, digits, `-` and `_`, none empty.
fn check_domain(host: &str, after_wildcard: bool) -> Result<(), OriginError> {
    if host.len() > MAX_HOST_LEN {
        return Err(error(format!("has a host longer than {MAX_HOST_LEN} characters")));
    }
    let mut labels = 0;
    for label in host.split('.') {
        if label == "*" {
            return Err(error("may have a wildcard only as its leftmost label (https://*.example.com)"));
        }
        if label.is_empty() {
            return Err(error("has an empty label in its host (.. or a leading or trailing dot)"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(error(format!("has a label longer than {MAX_LABEL_LEN} characters")));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(error(format!("has {c:?} in its host, which no domain name holds")));
        }
        labels += 1;
    }
    if after_wildcard && labels < 2 {
        return Err(error("must name a domain of at least two labels after the wildcard (https://*.example.com)"));
    }
    Ok(())
}

/// The origin a request comes from, as a browser states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOrigin {
    /// Neither `Origin` nor a `Referer` with a readable origin.
    Missing,
    /// An `Origin` that is not a tuple origin (`null` from a sandboxed frame or a `file:` page, or
    /// garbage): it matches no list.
    Opaque(String),
    Known(Origin),
}

/// `Origin` when the request has one, else the origin of `Referer`. A present but opaque `Origin`
/// is not replaced by `Referer`: the browser withheld the origin on purpose.
pub fn request_origin(origin: Option<&str>, referer: Option<&str>) -> RequestOrigin {
    if let Some(origin) = origin {
        let origin = origin.trim();
        return match parse_origin(origin) {
            Ok(o) => RequestOrigin::Known(o),
            Err(_) => RequestOrigin::Opaque(origin.chars().take(64).collect()),
        };
    }
    match referer.and_then(referer_origin) {
        Some(o) => RequestOrigin::Known(o),
        None => RequestOrigin::Missing,
    }
}

/// The origin of a `Referer` URL, when it has one.
pub fn referer_origin(referer: &str) -> Option<Origin> {
    let referer = referer.trim();
    if referer.len() > MAX_REFERER_LEN {
        return None;
    }
    let (scheme, rest) = referer.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..end)?;
    parse_origin(&format!("{scheme}://{authority}")).ok()
}

/// Origins and `scheme://*.domain[:port]` wildcards, looked up in a time that does not grow with
/// the list: exact origins in a set, and for wildcards one set probe per label of the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OriginList {
    exact: HashSet<Origin>,
    /// Each wildcard as the origin of its domain (`https://*.example.com` as `https://example.com`).
    subdomains_of: HashSet<Origin>,
}

impl OriginList {
    pub fn compile<S: AsRef<str>>(entries: &[S]) -> Result<OriginList, OriginListError> {
        let mut list = OriginList::default();
        for (index, entry) in entries.iter().enumerate() {
            let entry = entry.as_ref();
            let (origin, wildcard) = parse(entry).map_err(|e| OriginListError {
                index,
                entry: entry.to_string(),
                message: e.message,
            })?;
            if wildcard {
                list.subdomains_of.insert(origin);
            } else {
                list.exact.insert(origin);
            }
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.subdomains_of.is_empty()
    }

    pub fn allows(&self, origin: &Origin) -> bool {
        if self.exact.contains(origin) {
            return true;
        }
        if self.subdomains_of.is_empty() || origin.host.starts_with('[') {
            return false;
        }
        // Each proper suffix of the host that starts after a dot: a.b.example.com is looked up as
        // b.example.com, example.com and com.
        let mut probe = origin.clone();
        let mut rest = origin.host.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            probe.host.clear();
            probe.host.push_str(parent);
            if self.subdomains_of.contains(&probe) {
                return true;
            }
            rest = parent;
        }
        false
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(entries: &[&str]) -> OriginList {
        OriginList::compile(entries).unwrap()
    }

    fn allows(entries: &[&str], origin: &str) -> bool {
        list(entries).allows(&parse_origin(origin).unwrap())
    }

    #[test]
    fn exact_origins_match_themselves_only() {
        let l = ["https://app.example.com", "http://localhost:3000"];
        assert!(allows(&l, "https://app.example.com"));
        assert!(allows(&l, "HTTPS://App.Example.COM"));
        assert!(allows(&l, "https://app.example.com:443"));
        assert!(allows(&l, "http://localhost:3000"));
        assert!(!allows(&l, "http://app.example.com"));
        assert!(!allows(&l, "https://app.example.com:8443"));
        assert!(!allows(&l, "https://x.app.example.com"));
        assert!(!allows(&l, "http://localhost"));
        assert!(!allows(&l, "http://localhost:3001"));
    }

    #[test]
    fn wildcards_match_subdomains_and_not_look_alikes() {
        let l = ["https://*.example.com"];
        assert!(allows(&l, "https://app.example.com"));
        assert!(allows(&l, "https://a.b.example.com"));
        assert!(!allows(&l, "https://example.com"));
        assert!(!allows(&l, "https://evilexample.com"));
        assert!(!allows(&l, "https://app.example.com.evil.net"));
        assert!(!allows(&l, "https://example.com.evil.net"));
        assert!(!allows(&l, "http://app.example.com"));
        assert!(!allows(&l, "https://app.example.com:8443"));
        assert!(!allows(&l, "https://app.example.co"));
        assert!(allows(&["https://*.example.com:8443"], "https://app.example.com:8443"));
        assert!(!allows(&["https://*.example.com:8443"], "https://app.example.com"));
    }

    #[test]
    fn bad_entries_say_why() {
        for bad in [
            "", "example.com", "https://", "https://*", "https://*.com", "https://app.*.example.com",
            "https://a*.example.com", "https://*example.com", "https://example.com/", "https://example.com/app",
            "https://example.com?x", "https://u@example.com", "https://example.com:0", "https://example.com:65536",
            "https://example.com:x", "https://exa mple.com", "https://exämple.com", "https://example..com",
            "https://.example.com", "https://example.com.", "1https://example.com", "https://[::1", "https://[nope]",
            "https://*.[::1]", "https://[::1]x", "*", "null",
        ] {
            let e = OriginList::compile(&["https://ok.example.com", bad]).unwrap_err();
            assert_eq!(e.index, 1, "{bad}");
            assert!(!e.message.is_empty(), "{bad}");
        }
        assert!(OriginList::compile(&[format!("https://{}.com", "a".repeat(64))]).is_err());
        assert!(OriginList::compile(&[format!("https://{}", "a.".repeat(140) + "com")]).is_err());
    }

    #[test]
    fn good_entries() {
        for good in [
            "https://example.com", "http://localhost", "http://127.0.0.1:8080", "http://[::1]:3000",
            "https://*.example.co.uk", "capacitor://localhost", "chrome-extension://abcdefghijklmnop",
            "https://xn--bcher-kva.example", "https://under_score.example.com",
        ] {
            assert!(OriginList::compile(&[good]).is_ok(), "{good}");
        }
        assert!(allows(&["http://[::1]:3000"], "http://[::1]:3000"));
    }

    #[test]
    fn the_request_origin_is_origin_else_the_referers() {
        let known = |s: &str| RequestOrigin::Known(parse_origin(s).unwrap());
        assert_eq!(request_origin(Some("https://a.example.com"), Some("https://b.example.com/x")), known("https://a.example.com"));
        assert_eq!(request_origin(None, Some("https://b.example.com:8443/page?q=1#f")), known("https://b.example.com:8443"));
        assert_eq!(request_origin(None, Some("https://b.example.com")), known("https://b.example.com"));
        assert_eq!(request_origin(None, Some("https://b.example.com?x")), known("https://b.example.com"));
        assert_eq!(request_origin(Some("null"), Some("https://b.example.com/")), RequestOrigin::Opaque("null".into()));
        assert_eq!(request_origin(None, None), RequestOrigin::Missing);
        assert_eq!(request_origin(None, Some("/relative")), RequestOrigin::Missing);
        assert_eq!(request_origin(None, Some("https://user@b.example.com/")), RequestOrigin::Missing);
        assert_eq!(parse_origin("https://app.example.com:443").unwrap().to_string(), "https://app.example.com");
        assert_eq!(parse_origin("http://h:8080").unwrap().to_string(), "http://h:8080");
    }

    fn label() -> impl Strategy<Value = String> {
        prop_oneof!["[a-c]{1,3}", Just("example".to_string()), Just("com".to_string()), Just("evil".to_string())]
    }

    fn host() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(label(), 1..5)
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in ".{0,80}") {
            let _ = parse_origin(&text);
            let _ = referer_origin(&text);
            let _ = OriginList::compile(&[text]);
        }

        #[test]
        fn a_wildcard_matches_exactly_the_hosts_under_its_domain(
            domain in proptest::collection::vec(label(), 2..4), host in host(),
            scheme in prop_oneof![Just("http"), Just("https")], port in proptest::option::of(prop_oneof![Just(443u16), Just(8443u16)]),
            asked_scheme in prop_oneof![Just("http"), Just("https")], asked_port in proptest::option::of(prop_oneof![Just(443u16), Just(8443u16)]),
        ) {
            let domain = domain.join(".");
            let host = host.join(".");
            let port_text = |p: Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_default();
            let l = list(&[&format!("{scheme}://*.{domain}{}", port_text(port))]);
            let origin = parse_origin(&format!("{asked_scheme}://{host}{}", port_text(asked_port))).unwrap();
            let effective = |s: &str, p: Option<u16>| p.filter(|p| !(s == "https" && *p == 443));
            let expected = host.ends_with(&format!(".{domain}"))
                && scheme == asked_scheme
                && effective(scheme, port) == effective(asked_scheme, asked_port);
            prop_assert_eq!(l.allows(&origin), expected);
        }

        #[test]
        fn an_exact_entry_matches_exactly_its_origin(a in host(), b in host()) {
            let (a, b) = (a.join("."), b.join("."));
            let l = list(&[&format!("https://{a}")]);
            prop_assert_eq!(l.allows(&parse_origin(&format!("https://{b}")).unwrap()), a == b);
            prop_assert_eq!(l.allows(&parse_origin(&format!("https://{}", b.to_ascii_uppercase())).unwrap()), a == b);
        }

        #[test]
        fn a_parsed_origin_prints_as_it_parses(host in host(), port in proptest::option::of(1u16..)) {
            let text = format!("https://{}{}", host.join("."), port.map(|p| format!(":{p}")).unwrap_or_default());
            let origin = parse_origin(&text).unwrap();
            prop_assert_eq!(parse_origin(&origin.to_string()).unwrap(), origin.clone());
            prop_assert_eq!(referer_origin(&format!("{text}/some/page?x=1")), Some(origin));
        }
    }
}
