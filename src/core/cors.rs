//! CORS at the edge: the policy's `cors` settings, the answer to a browser's preflight, and the
//! headers every answer to an allowed origin carries. The gate and the console's playground call
//! the same functions, so the page shows what the edge does.
//!
//! Keys travel in headers, never in cookies, so no answer says `Access-Control-Allow-Credentials`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::code::Code;
use super::origin::{parse_origin, OriginList};
use super::policy::RoutePolicy;
use super::record::FieldError;

/// Headers a page may always send: the key's two header positions and a JSON content type.
pub const ALWAYS_ALLOWED_HEADERS: [&str; 3] = ["authorization", "content-type", "x-api-key"];
/// Headers a page may always read: when to retry, and the rate-limit headers (IETF draft).
pub const ALWAYS_EXPOSED_HEADERS: [&str; 3] = ["retry-after", "ratelimit", "ratelimit-policy"];
pub const MAX_AGE_LIMIT: u32 = 86_400;
const MAX_HEADERS: usize = 100;
const MAX_HEADER_NAME: usize = 100;
const MAX_ORIGINS: usize = 1_000;

/// The `cors` object of a policy document, exactly as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsDoc {
    pub allowed_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
}

/// The `cors` settings compiled: the origin list indexed, the header values joined once.
#[derive(Debug, Clone, PartialEq)]
pub struct CorsPolicy {
    origins: OriginList,
    allow_headers: String,
    expose_headers: String,
    max_age: Option<u32>,
}

impl CorsPolicy {
    /// Validates the policy's `cors` value; errors name the field (`cors.allowed_origins[1]`).
    pub fn from_value(value: &Value) -> Result<(CorsDoc, CorsPolicy), FieldError> {
        let object = value.as_object().ok_or_else(|| {
            FieldError::new("cors", "must be an object with \"allowed_origins\" (and optionally \"allowed_headers\", \"expose_headers\", \"max_age\")")
        })?;
        if let Some(unknown) =
            object.keys().find(|k| !matches!(k.as_str(), "allowed_origins" | "allowed_headers" | "expose_headers" | "max_age"))
        {
            return Err(FieldError::new(
                format!("cors.{unknown}"),
                "is not a cors field (allowed_origins, allowed_headers, expose_headers, max_age)",
            ));
        }
        let allowed_origins = match object.get("allowed_origins") {
            None => return Err(FieldError::new("cors.allowed_origins", "is required")),
            Some(v) => strings("cors.allowed_origins", v, MAX_ORIGINS)?,
        };
        let origins = OriginList::compile(&allowed_origins).map_err(|e| {
            FieldError::new(
                format!("cors.allowed_origins[{}]", e.index),
                format!("{:?} is not an origin (https://app.example.com or https://*.example.com): {}", e.entry, e.message),
            )
        })?;
        let allowed_headers = header_names("cors.allowed_headers", object.get("allowed_headers"))?;
        let expose_headers = header_names("cors.expose_headers", object.get("expose_headers"))?;
        let max_age = match object.get("max_age") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n <= MAX_AGE_LIMIT)
                    .ok_or_else(|| FieldError::new("cors.max_age", format!("must be a whole number of seconds from 0 to {MAX_AGE_LIMIT}")))?,
            ),
        };
        let compiled = CorsPolicy {
            origins,
            allow_headers: joined(&ALWAYS_ALLOWED_HEADERS, &allowed_headers),
            expose_headers: joined(&ALWAYS_EXPOSED_HEADERS, &expose_headers),
            max_age,
        };
        Ok((CorsDoc { allowed_origins, allowed_headers, expose_headers, max_age }, compiled))
    }

    /// Whether `origin` (an `Origin` header's value) is one of the allowed origins.
    pub fn allows(&self, origin: &str) -> bool {
        parse_origin(origin).is_ok_and(|o| self.origins.allows(&o))
    }
}

fn strings(field: &str, value: &Value, max: usize) -> Result<Vec<String>, FieldError> {
    let items = value.as_array().ok_or_else(|| FieldError::new(field, "must be an array of strings"))?;
    if items.len() > max {
        return Err(FieldError::new(field, format!("must have at most {max} entries")));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| v.as_str().map(str::to_string).ok_or_else(|| FieldError::new(format!("{field}[{i}]"), "must be a string")))
        .collect()
}

fn header_names(field: &str, value: Option<&Value>) -> Result<Vec<String>, FieldError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let names = strings(field, value, MAX_HEADERS)?;
    for (i, name) in names.iter().enumerate() {
        if name == "*" {
            return Err(FieldError::new(format!("{field}[{i}]"), "must name a header: a * would not cover Authorization"));
        }
        if !is_token(name) || name.len() > MAX_HEADER_NAME {
            return Err(FieldError::new(format!("{field}[{i}]"), format!("{name:?} is not an HTTP header name")));
        }
    }
    Ok(names)
}

/// An HTTP token (RFC 9110): what a method or a header name is made of.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn joined(always: &[&str], extra: &[String]) -> String {
    let mut names: Vec<String> = always.iter().map(|s| (*s).to_string()).collect();
    for name in extra {
        let name = name.to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(", ")
}

/// A header the edge sets on an answer: name (lowercase) and value.
pub type Header = (&'static str, String);

/// With `cors` in the policy keyward alone speaks CORS: these headers from the origin's answer are
/// dropped before keyward's own are set, so an origin's `*` cannot grant what the policy does not.
pub const OWNED_HEADERS: [&str; 6] = [
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
];

/// What the edge does with a request before any key is looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Preflight {
    /// Not a preflight: checked like any request.
    NotPreflight,
    /// A preflight, and the policy has no `cors`: it goes to the origin as it came, without a key.
    PassThrough,
    /// A preflight answered at the edge: 204 with the CORS headers, or a refusal.
    Answer { status: u16, code: Code, message: String, headers: Vec<Header> },
}

/// Methods a browser sends in uppercase whatever the page wrote (Fetch's method normalisation);
/// any other is sent as the page wrote it, and matched as written.
const NORMALISED_METHODS: [&str; 6] = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"];

/// The answer to a request that may be a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`. Granted (204) when the policy has `cors`, the origin is
/// allowed and some rule matches the method and path asked about (`HEAD` as the policy matches it).
pub fn preflight(policy: &RoutePolicy, method: &str, path: &str, origin: Option<&str>, request_method: Option<&str>) -> Preflight {
    let (Some(origin), Some(request_method)) = (origin, request_method) else {
        return Preflight::NotPreflight;
    };
    if method != "OPTIONS" {
        return Preflight::NotPreflight;
    }
    let Some(cors) = policy.cors() else {
        return Preflight::PassThrough;
    };
    if !cors.allows(origin) {
        return Preflight::Answer {
            status: 403,
            code: Code::OriginNotAllowed,
            message: format!("the origin {} may not call this API from a browser", shorten(origin)),
            headers: Vec::new(),
        };
    }
    let refuse = |code: Code, message: String| Preflight::Answer {
        status: code.status(),
        code,
        message,
        headers: response_headers(policy, Some(origin)),
    };
    let request_method = request_method.trim();
    if !is_token(request_method) || request_method.len() > 16 {
        return refuse(Code::BadRequest, "Access-Control-Request-Method is not an HTTP method".into());
    }
    let upper = request_method.to_ascii_uppercase();
    let matched = if NORMALISED_METHODS.contains(&upper.as_str()) { upper.as_str() } else { request_method };
    match policy.find(matched, path) {
        Err(e) => refuse(Code::BadRequest, e.message),
        Ok(None) => refuse(Code::RouteNotAllowed, format!("no route rule allows {matched} {path}")),
        Ok(Some(_)) => {
            let mut headers = vec![
                ("access-control-allow-origin", origin.to_string()),
                ("vary", "Origin".to_string()),
                ("access-control-allow-methods", matched.to_string()),
                ("access-control-allow-headers", cors.allow_headers.clone()),
            ];
            if let Some(age) = cors.max_age {
                headers.push(("access-control-max-age", age.to_string()));
            }
            Preflight::Answer { status: 204, code: Code::Valid, message: String::new(), headers }
        }
    }
}

/// The preflight of one of keyward's own endpoints that a page may call with a key (`POST
/// /_keyward/v1/auth/token` and the other token calls): as [`preflight`], under the same `cors`
/// settings, with the endpoint's one method (`allowed`) in place of a route rule. Without `cors`
/// in the policy, no page of another origin may call it.
pub fn preflight_endpoint(policy: &RoutePolicy, origin: &str, request_method: &str, allowed: &str) -> Preflight {
    let Some(cors) = policy.cors().filter(|c| c.allows(origin)) else {
        return Preflight::Answer {
            status: 403,
            code: Code::OriginNotAllowed,
            message: format!("the origin {} may not call this API from a browser", shorten(origin)),
            headers: Vec::new(),
        };
    };
    if !request_method.trim().eq_ignore_ascii_case(allowed) {
        return Preflight::Answer {
            status: 400,
            code: Code::BadRequest,
            message: format!("only {allowed} is allowed here"),
            headers: response_headers(policy, Some(origin)),
        };
    }
    let mut headers = vec![
        ("access-control-allow-origin", origin.to_string()),
        ("vary", "Origin".to_string()),
        ("access-control-allow-methods", allowed.to_string()),
        ("access-control-allow-headers", cors.allow_headers.clone()),
    ];
    if let Some(age) = cors.max_age {
        headers.push(("access-control-max-age", age.to_string()));
    }
    Preflight::Answer { status: 204, code: Code::Valid, message: String::new(), headers }
}

/// The CORS headers for any other answer to a request with this `Origin`, forwarded or denied:
/// none without `cors` in the policy (the origin's own pass through); else `Vary: Origin`, with the
/// grant for an allowed origin, in place of any [`OWNED_HEADERS`] the origin sent.
pub fn response_headers(policy: &RoutePolicy, origin: Option<&str>) -> Vec<Header> {
    let Some(cors) = policy.cors() else {
        return Vec::new();
    };
    let mut headers = vec![("vary", "Origin".to_string())];
    if let Some(origin) = origin.filter(|o| cors.allows(o)) {
        headers.push(("access-control-allow-origin", origin.to_string()));
        headers.push(("access-control-expose-headers", cors.expose_headers.clone()));
    }
    headers
}

fn shorten(text: &str) -> String {
    text.chars().take(100).collect()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoint_preflights_follow_the_cors_settings() {
        let with = policy(json!({"allowed_origins": ["https://app.example.com"], "max_age": 60}));
        let Preflight::Answer { status, headers, .. } = preflight_endpoint(&with, "https://app.example.com", "post", "POST") else { panic!() };
        assert_eq!(status, 204);
        assert!(headers.contains(&("access-control-allow-methods", "POST".to_string())));
        assert!(headers.contains(&("access-control-max-age", "60".to_string())));
        let Preflight::Answer { status, code, .. } = preflight_endpoint(&with, "https://evil.example.com", "POST", "POST") else { panic!() };
        assert_eq!((status, code), (403, Code::OriginNotAllowed));
        let Preflight::Answer { status, .. } = preflight_endpoint(&with, "https://app.example.com", "DELETE", "POST") else { panic!() };
        assert_eq!(status, 400);
        let without = RoutePolicy::from_value(&json!({"rules": []})).unwrap();
        let Preflight::Answer { status, .. } = preflight_endpoint(&without, "https://app.example.com", "POST", "POST") else { panic!() };
        assert_eq!(status, 403);
    }

    fn policy(cors: Value) -> RoutePolicy {
        RoutePolicy::from_value(&json!({"rules": [
            {"method": "GET", "path": "/users/{id}", "permission": "users:read"},
            {"method": "PATCH", "path": "/users/{id}", "permission": "users:update"},
        ], "cors": cors}))
        .unwrap()
    }

    fn standard() -> RoutePolicy {
        policy(json!({"allowed_origins": ["https://app.example.com", "https://*.example.org"],
            "allowed_headers": ["X-Request-Id"], "expose_headers": ["X-Trace"], "max_age": 600}))
    }

    fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
        headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_preflight_from_an_allowed_origin_for_an_allowed_route_is_granted() {
        let p = standard();
        for origin in ["https://app.example.com", "https://shop.example.org"] {
            let Preflight::Answer { status, code, headers, .. } = preflight(&p, "OPTIONS", "/users/7", Some(origin), Some("GET")) else {
                panic!("not answered")
            };
            assert_eq!((status, code), (204, Code::Valid));
            assert_eq!(header(&headers, "access-control-allow-origin"), Some(origin));
            assert_eq!(header(&headers, "vary"), Some("Origin"));
            assert_eq!(header(&headers, "access-control-allow-methods"), Some("GET"));
            assert_eq!(header(&headers, "access-control-allow-headers"), Some("authorization, content-type, x-api-key, x-request-id"));
            assert_eq!(header(&headers, "access-control-max-age"), Some("600"));
            assert_eq!(header(&headers, "access-control-allow-credentials"), None);
        }
        let head = preflight(&p, "OPTIONS", "/users/7", Some("https://app.example.com"), Some("HEAD"));
        assert!(matches!(head, Preflight::Answer { status: 204, .. }), "{head:?}");
    }

    #[test]
    fn preflights_refused() {
        let p = standard();
        let at = |origin: &str, method: &str, path: &str| match preflight(&p, "OPTIONS", path, Some(origin), Some(method)) {
            Preflight::Answer { status, code, headers, .. } => (status, code, header(&headers, "access-control-allow-origin").map(str::to_string)),
            other => panic!("{other:?}"),
        };
        let mine = Some("https://app.example.com".to_string());
        assert_eq!(at("https://evil.example.net", "GET", "/users/7"), (403, Code::OriginNotAllowed, None));
        assert_eq!(at("https://example.org", "GET", "/users/7"), (403, Code::OriginNotAllowed, None));
        assert_eq!(at("https://app.example.com.evil.net", "GET", "/users/7"), (403, Code::OriginNotAllowed, None));
        assert_eq!(at("null", "GET", "/users/7"), (403, Code::OriginNotAllowed, None));
        assert_eq!(at("https://app.example.com", "DELETE", "/users/7"), (403, Code::RouteNotAllowed, mine.clone()));
        assert_eq!(at("https://app.example.com", "GET", "/nowhere"), (403, Code::RouteNotAllowed, mine.clone()));
        assert_eq!(at("https://app.example.com", "GET", "/users/%2F"), (400, Code::BadRequest, mine.clone()));
        assert_eq!(at("https://app.example.com", "G T", "/users/7"), (400, Code::BadRequest, mine.clone()));
        // A method outside Fetch's normalisation is matched as the page wrote it.
        assert_eq!(at("https://app.example.com", "patch", "/users/7"), (403, Code::RouteNotAllowed, mine.clone()));
        assert_eq!(at("https://app.example.com", "PATCH", "/users/7").0, 204);
        assert_eq!(at("https://app.example.com", "get", "/users/7").0, 204);
    }

    #[test]
    fn not_a_preflight_or_no_cors() {
        let p = standard();
        assert_eq!(preflight(&p, "OPTIONS", "/users/7", Some("https://app.example.com"), None), Preflight::NotPreflight);
        assert_eq!(preflight(&p, "OPTIONS", "/users/7", None, Some("GET")), Preflight::NotPreflight);
        assert_eq!(preflight(&p, "GET", "/users/7", Some("https://app.example.com"), Some("GET")), Preflight::NotPreflight);
        let bare = RoutePolicy::from_value(&json!({"rules": []})).unwrap();
        assert_eq!(preflight(&bare, "OPTIONS", "/users/7", Some("https://app.example.com"), Some("GET")), Preflight::PassThrough);
        assert!(response_headers(&bare, Some("https://app.example.com")).is_empty());
    }

    #[test]
    fn answers_to_an_allowed_origin_carry_the_cors_headers() {
        let p = standard();
        let h = response_headers(&p, Some("https://a.b.example.org"));
        assert_eq!(header(&h, "access-control-allow-origin"), Some("https://a.b.example.org"));
        assert_eq!(header(&h, "vary"), Some("Origin"));
        assert_eq!(header(&h, "access-control-expose-headers"), Some("retry-after, ratelimit, ratelimit-policy, x-trace"));
        let other = response_headers(&p, Some("https://evilexample.org"));
        assert_eq!(other, vec![("vary", "Origin".to_string())]);
        assert_eq!(response_headers(&p, None), vec![("vary", "Origin".to_string())]);
    }

    #[test]
    fn bad_cors_settings_name_the_field() {
        let cases = [
            (json!([]), "cors"),
            (json!({}), "cors.allowed_origins"),
            (json!({"allowed_origins": "https://a.com"}), "cors.allowed_origins"),
            (json!({"allowed_origins": ["https://a.com", "a.com"]}), "cors.allowed_origins[1]"),
            (json!({"allowed_origins": ["https://a.com", 5]}), "cors.allowed_origins[1]"),
            (json!({"allowed_origins": ["https://*.com"]}), "cors.allowed_origins[0]"),
            (json!({"allowed_origins": ["https://a.*.com"]}), "cors.allowed_origins[0]"),
            (json!({"allowed_origins": ["https://a.com/"]}), "cors.allowed_origins[0]"),
            (json!({"allowed_origins": [], "allowed_headers": ["ok", "bad header"]}), "cors.allowed_headers[1]"),
            (json!({"allowed_origins": [], "allowed_headers": ["*"]}), "cors.allowed_headers[0]"),
            (json!({"allowed_origins": [], "expose_headers": "x"}), "cors.expose_headers"),
            (json!({"allowed_origins": [], "expose_headers": ["x:y"]}), "cors.expose_headers[0]"),
            (json!({"allowed_origins": [], "max_age": -1}), "cors.max_age"),
            (json!({"allowed_origins": [], "max_age": 86401}), "cors.max_age"),
            (json!({"allowed_origins": [], "max_age": 1.5}), "cors.max_age"),
            (json!({"allowed_origins": [], "credentials": true}), "cors.credentials"),
        ];
        for (cors, field) in cases {
            let e = RoutePolicy::from_value(&json!({"rules": [], "cors": cors})).unwrap_err();
            assert_eq!(e.field, field, "{cors}: {e}");
        }
    }

    #[test]
    fn the_document_round_trips() {
        let p = standard();
        let text = serde_json::to_string(p.doc()).unwrap();
        let again = RoutePolicy::parse(&text).unwrap();
        assert_eq!(again.doc(), p.doc());
        assert!(text.contains("\"max_age\":600"));
        let bare = RoutePolicy::from_value(&json!({"rules": []})).unwrap();
        assert_eq!(serde_json::to_string(bare.doc()).unwrap(), r#"{"rules":[]}"#);
    }

    proptest::proptest! {
        #[test]
        fn preflight_never_panics(method in ".{0,8}", path in ".{0,40}", origin in proptest::option::of(".{0,40}"),
                                  asked in proptest::option::of(".{0,10}")) {
            let _ = preflight(&standard(), &method, &path, origin.as_deref(), asked.as_deref());
            let _ = response_headers(&standard(), origin.as_deref());
        }

        #[test]
        fn only_allowed_origins_ever_get_a_grant(
            labels in proptest::collection::vec(proptest::sample::select(vec!["app", "example", "com", "org", "evil", "x"]), 1..5),
            scheme in "https?",
        ) {
            let host = labels.join(".");
            let origin = format!("{scheme}://{host}");
            let p = standard();
            let allowed = scheme == "https" && (host == "app.example.com" || host.ends_with(".example.org"));
            let granted = response_headers(&p, Some(&origin)).iter().any(|(n, _)| *n == "access-control-allow-origin");
            proptest::prop_assert_eq!(granted, allowed);
            let pre = preflight(&p, "OPTIONS", "/users/1", Some(&origin), Some("GET"));
            proptest::prop_assert_eq!(matches!(pre, Preflight::Answer { status: 204, .. }), allowed);
        }
    }
}
