//! The route policy document (`PUT /_keyward/v1/policy`, `ROUTE_POLICY`).
//! Oracle: parse → print → parse round-trips: a policy that parses prints (as the API returns it)
//! to a document that parses to the same policy, with the same rules in the same order.
#![no_main]

use keyward::core::policy::RoutePolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(policy) = RoutePolicy::parse(text) else { return };
    let printed = serde_json::to_string(policy.doc()).expect("a policy does not print");
    let again = RoutePolicy::parse(&printed).expect("a printed policy does not parse");
    assert_eq!(again.doc(), policy.doc());
    assert_eq!(again.rules(), policy.rules());
    // Every rule's own path, with its parameters filled in, finds a rule.
    for rule in policy.rules() {
        let path: String = rule.path.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/");
        let method = if rule.method == "*" { "GET" } else { rule.method.as_str() };
        if let Ok(found) = policy.find(method, &path) {
            let found = found.expect("a rule's own path finds no rule");
            assert!(found.rule.index <= rule.index, "rule {} found for rule {}", found.rule.index, rule.index);
        }
    }
});
