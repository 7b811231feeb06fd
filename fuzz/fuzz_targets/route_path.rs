//! A request against the default route policy: method, path, client IP, Basic workspace and body,
//! through the whole decision (path splitting, the rule trie, the IP allowlist, events, the
//! attribute check). Input: a presence byte, then the five fields one per line (the body is the
//! rest, newlines and all).
//! Oracles: the same request always gets the same decision; an allowed request names the rule and
//! permission that allowed it, and that rule is the first one matching the path.
#![no_main]

use keyward::core::decision::{decide, GateRequest};
use keyward::core::policy::RoutePolicy;
use keyward::core::record::{CompiledKey, KeyRecord};
use keyward::core::Code;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const NOW: i64 = 1_780_000_000_000;

fn setup() -> &'static (RoutePolicy, Vec<CompiledKey>) {
    static SETUP: OnceLock<(RoutePolicy, Vec<CompiledKey>)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let policy = RoutePolicy::parse(include_str!("../../config/default-policy.json")).expect("default policy");
        let keys = [
            serde_json::json!({"name": "all", "permissions": ["*"]}),
            serde_json::json!({"name": "some", "permissions": ["users:*", "events:create", "profiles:update"],
                "workspace": "ws", "event_denylist": ["bad"], "ip_allowlist": ["10.0.0.0/8", "2001:db8::/32"],
                "attribute_allowlist": ["email", "tags", "vip"]}),
            serde_json::json!({"name": "profile", "type": "profile", "profile_id": "p1", "permissions": ["profiles:*"],
                "event_allowlist": ["page_visit"], "expires_at": "2030-01-01T00:00:00Z"}),
        ];
        let keys = keys
            .iter()
            .map(|v| CompiledKey::compile(KeyRecord::from_view(v).expect("record")).expect("compiles"))
            .collect();
        (policy, keys)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mask, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let mut parts = text.splitn(5, '\n');
    let mut field = |bit: u8| parts.next().filter(|_| mask & bit != 0);
    let method = field(1).unwrap_or("GET");
    let path = field(2).unwrap_or("/");
    let client_ip = field(4);
    let basic_workspace = field(8);
    let body = field(16).map(str::as_bytes);
    let (policy, keys) = setup();
    let request = GateRequest { method, path, client_ip, body, basic_workspace, origin: None, referer: None };
    for key in keys {
        let decision = decide(key, policy, &request, NOW);
        assert_eq!(decision, decide(key, policy, &request, NOW));
        if decision.valid {
            assert_eq!(decision.code, Code::Valid);
            let rule = decision.rule.and_then(|i| policy.rules().get(i)).expect("allowed without a rule");
            assert_eq!(decision.permission.as_deref(), Some(rule.permission.as_str()));
            let first = policy.find(method, path).expect("allowed a path that cannot be matched").expect("no rule");
            assert_eq!(first.rule.index, rule.index);
        }
    }
});
