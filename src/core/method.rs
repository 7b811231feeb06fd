//! Method overrides: the headers and the `_method` query parameter by which many origin frameworks
//! let a request act as another method, so that the gate decides on the method the origin will act
//! on (contract section 9).

use serde::{Deserialize, Serialize};

use super::credential::{form_decode, pair_halves};

/// The override headers, lower-case; each is looked up once per gated request.
pub const OVERRIDE_HEADERS: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// The query parameter form (`?_method=DELETE`), matched without regard to case.
pub const OVERRIDE_PARAM: &str = "_method";

/// What the route policy's top-level `method_override` says to do with an override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodOverride {
    /// The default: a request carrying an override is refused with 400.
    #[default]
    Refuse,
    /// The overrides are removed before forwarding; the request's own method is checked.
    Strip,
    /// The overridden method is the one checked and forwarded; the overrides are removed.
    Honour,
}

impl MethodOverride {
    pub fn is_default(&self) -> bool {
        *self == MethodOverride::Refuse
    }
}

/// What the gate does with a request that carries an override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The method to check and to forward.
    pub method: String,
    /// Whether a `_method` query parameter must be removed before forwarding (the override
    /// headers always are).
    pub strip_param: bool,
}

/// An override that is refused: the message names the header or parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideError {
    pub message: String,
}

/// Whether the query string may hold a `_method` parameter: a cheap test that lets the common
/// request skip decoding its query. A `%` may spell the name in escapes, so it counts.
pub fn query_may_override(query: &str) -> bool {
    query.contains('%') || query.as_bytes().windows(OVERRIDE_PARAM.len()).any(|w| w.eq_ignore_ascii_case(OVERRIDE_PARAM.as_bytes()))
}

/// Applies `mode` to a request with method `method` whose override headers have the values
/// `headers` (in [`OVERRIDE_HEADERS`] order) and whose query is `query`. `Ok(None)`: the request
/// carries no override and goes on as it is.
pub fn resolve_override(
    mode: MethodOverride,
    method: &str,
    headers: [Option<&str>; 3],
    query: Option<&str>,
) -> Result<Option<Resolved>, OverrideError> {
    let params: Vec<Option<String>> = query.filter(|q| query_may_override(q)).map_or_else(Vec::new, |q| {
        q.split('&')
            .filter_map(|pair| {
                let (name, value) = pair_halves(pair);
                param_name_matches(name).then(|| form_decode(value))
            })
            .collect()
    });
    let first_header = OVERRIDE_HEADERS.iter().zip(headers).find_map(|(name, value)| value.map(|_| *name));
    let Some(source) = first_header.or(params.first().map(|_| "the _method query parameter")) else {
        return Ok(None);
    };
    let strip_param = !params.is_empty();
    match mode {
        MethodOverride::Refuse => Err(OverrideError {
            message: format!(
                "the request carries a method override ({source}); the route policy's method_override refuses them"
            ),
        }),
        MethodOverride::Strip => Ok(Some(Resolved { method: method.to_string(), strip_param })),
        MethodOverride::Honour => {
            let mut chosen: Option<String> = None;
            let values = headers.iter().flatten().map(|v| Some(v.to_string())).chain(params);
            for value in values {
                let value = value.ok_or_else(|| OverrideError {
                    message: "the _method query parameter is not valid percent-encoding".into(),
                })?;
                let candidate = value.trim().to_ascii_uppercase();
                if !is_forwardable_method(&candidate) {
                    return Err(OverrideError {
                        message: format!("the method override \"{}\" is not a method the gate can forward", truncate(&value)),
                    });
                }
                match &chosen {
                    Some(c) if *c != candidate => {
                        return Err(OverrideError { message: "the request carries two different method overrides".into() })
                    }
                    Some(_) => {}
                    None => chosen = Some(candidate),
                }
            }
            Ok(chosen.map(|method| Resolved { method, strip_param }))
        }
    }
}

/// Whether `name` (a raw query parameter name) is `_method` once decoded, in any case.
pub fn param_name_matches(name: &str) -> bool {
    form_decode(name).is_some_and(|n| n.eq_ignore_ascii_case(OVERRIDE_PARAM))
}

/// The query string without any `_method` parameter, other parameters untouched and in order.
pub fn strip_override_param(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            !pair.is_empty() && !param_name_matches(pair_halves(pair).0)
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The methods a Worker's `fetch` will send (it refuses CONNECT, TRACE and TRACK).
fn is_forwardable_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS")
}

fn truncate(s: &str) -> String {
    s.chars().take(20).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;

    const NONE: [Option<&str>; 3] = [None, None, None];

    #[test]
    fn no_override_is_none_in_every_mode() {
        for mode in [MethodOverride::Refuse, MethodOverride::Strip, MethodOverride::Honour] {
            assert_eq!(resolve_override(mode, "GET", NONE, None), Ok(None));
            assert_eq!(resolve_override(mode, "GET", NONE, Some("a=1&method=x&_methods=y")), Ok(None));
        }
    }

    #[test]
    fn refuse_names_each_header_and_the_parameter() {
        for (i, name) in OVERRIDE_HEADERS.iter().enumerate() {
            let mut headers = NONE;
            headers[i] = Some("DELETE");
            let e = resolve_override(MethodOverride::Refuse, "GET", headers, None).unwrap_err();
            assert!(e.message.contains(name), "{e:?}");
        }
        for query in ["_method=DELETE", "a=1&_METHOD=delete", "%5Fmethod=DELETE", "_method", "_method="] {
            let e = resolve_override(MethodOverride::Refuse, "GET", NONE, Some(query)).unwrap_err();
            assert!(e.message.contains("_method"), "{query}: {e:?}");
        }
        // Present but empty is still an override: some frameworks read an empty one as absent,
        // others do not, so the gate does not guess.
        assert!(resolve_override(MethodOverride::Refuse, "GET", [Some(""), None, None], None).is_err());
    }

    #[test]
    fn strip_keeps_the_method() {
        let r = resolve_override(MethodOverride::Strip, "GET", [None, Some("DELETE"), None], None).unwrap().unwrap();
        assert_eq!(r, Resolved { method: "GET".into(), strip_param: false });
        let r = resolve_override(MethodOverride::Strip, "POST", NONE, Some("_method=PUT")).unwrap().unwrap();
        assert_eq!(r, Resolved { method: "POST".into(), strip_param: true });
    }

    #[test]
    fn honour_checks_the_overridden_method() {
        let r = resolve_override(MethodOverride::Honour, "GET", [Some("delete"), None, None], None).unwrap().unwrap();
        assert_eq!(r.method, "DELETE");
        let r = resolve_override(MethodOverride::Honour, "POST", NONE, Some("x=1&_method=%50UT")).unwrap().unwrap();
        assert_eq!(r, Resolved { method: "PUT".into(), strip_param: true });
        let same = resolve_override(MethodOverride::Honour, "POST", [Some("PUT"), Some("put"), None], Some("_method=PUT"));
        assert_eq!(same.unwrap().unwrap().method, "PUT");
        for (headers, query) in [
            ([Some("PUT"), Some("DELETE"), None], None),
            ([Some("PUT"), None, None], Some("_method=DELETE")),
            ([Some("TRACE"), None, None], None),
            ([Some("DEL ETE"), None, None], None),
            ([Some(""), None, None], None),
            (NONE, Some("_method=%zz")),
        ] {
            assert!(resolve_override(MethodOverride::Honour, "GET", headers, query).is_err(), "{headers:?} {query:?}");
        }
    }

    #[test]
    fn strips_only_the_override_parameter() {
        assert_eq!(strip_override_param("a=1&_method=DELETE&b=2"), "a=1&b=2");
        assert_eq!(strip_override_param("%5fMethod=x&_methods=1"), "_methods=1");
        assert_eq!(strip_override_param("a=1"), "a=1");
    }

    #[test]
    fn the_mode_reads_and_prints_as_the_policy_spells_it() {
        for (mode, text) in [(MethodOverride::Refuse, "\"refuse\""), (MethodOverride::Strip, "\"strip\""), (MethodOverride::Honour, "\"honour\"")] {
            assert_eq!(serde_json::to_string(&mode).unwrap(), text);
            assert_eq!(serde_json::from_str::<MethodOverride>(text).unwrap(), mode);
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_refuse_refuses_what_honour_sees(
            h in proptest::array::uniform3(proptest::option::of(".{0,12}")),
            q in proptest::option::of(".{0,40}"),
        ) {
            let headers = [h[0].as_deref(), h[1].as_deref(), h[2].as_deref()];
            let refuse = resolve_override(MethodOverride::Refuse, "GET", headers, q.as_deref());
            let strip = resolve_override(MethodOverride::Strip, "GET", headers, q.as_deref());
            let _ = resolve_override(MethodOverride::Honour, "GET", headers, q.as_deref());
            // Whatever strip would act on, refuse refuses; nothing to strip, nothing to refuse.
            proptest::prop_assert_eq!(refuse.is_err(), strip.as_ref().is_ok_and(Option::is_some));
            if let Some(q) = q {
                let stripped = strip_override_param(&q);
                proptest::prop_assert_eq!(resolve_override(MethodOverride::Refuse, "GET", [None, None, None], Some(&stripped)), Ok(None));
            }
        }
    }
}
