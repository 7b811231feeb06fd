//! Method overrides: the three override headers and the `_method` query parameter.
//! Input: a presence byte, then the method, the three header values and the query, one per line.
//! Oracles: the cheap test that lets a query skip decoding never skips a real `_method`; the query
//! forwarded after stripping holds no `_method`, and with no header left nothing is an override;
//! "strip" checks the request's own method, "honour" only a method the gate can forward, and
//! "refuse" refuses exactly what the other two see as an override.
#![no_main]

use keyward::core::method::{param_name_matches, query_may_override, resolve_override, strip_override_param, MethodOverride};
use keyward_fuzz::fields;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some([method, h1, h2, h3, query]) = fields::<5>(data) else { return };
    let method = method.unwrap_or("GET");
    let headers = [h1, h2, h3];
    if let Some(q) = query {
        let named = q.split('&').any(|pair| param_name_matches(pair.split_once('=').map_or(pair, |(k, _)| k)));
        if named {
            assert!(query_may_override(q), "the pre-filter skipped a _method in {q:?}");
        }
        let stripped = strip_override_param(q);
        assert!(!stripped.split('&').any(|pair| param_name_matches(pair.split_once('=').map_or(pair, |(k, _)| k))));
        assert_eq!(resolve_override(MethodOverride::Refuse, method, [None; 3], Some(&stripped)), Ok(None));
    }
    let refused = resolve_override(MethodOverride::Refuse, method, headers, query);
    let stripped = resolve_override(MethodOverride::Strip, method, headers, query);
    let honoured = resolve_override(MethodOverride::Honour, method, headers, query);
    let carries = headers.iter().any(Option::is_some) || stripped.as_ref().is_ok_and(|r| r.as_ref().is_some_and(|r| r.strip_param));
    assert_eq!(refused.is_err(), carries, "refuse and strip disagree on whether there is an override");
    match stripped.expect("strip never refuses") {
        Some(r) => assert_eq!(r.method, method),
        None => assert!(!carries),
    }
    if let Ok(Some(r)) = honoured {
        assert!(matches!(r.method.as_str(), "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"), "{:?}", r.method);
    }
});
