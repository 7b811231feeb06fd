//! A key record as the gate reads it from KV (the origin may write KV through the push API, and
//! a store can be corrupted): deserialize, compile, and check a request against it. A bad record
//! must be an error, never a crash; one that reads back serializes to itself.
#![no_main]

use keyward::core::decision::{decide, GateRequest};
use keyward::core::policy::RoutePolicy;
use keyward::core::record::{CompiledKey, KeyRecord};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn policy() -> &'static RoutePolicy {
    static POLICY: OnceLock<RoutePolicy> = OnceLock::new();
    POLICY.get_or_init(|| RoutePolicy::parse(include_str!("../../config/default-policy.json")).expect("default policy"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(record) = serde_json::from_slice::<KeyRecord>(data) else { return };
    let stored = serde_json::to_string(&record).expect("a record does not serialize");
    let read: KeyRecord = serde_json::from_str(&stored).expect("a record does not read back");
    assert_eq!(read, record);
    let _ = record.view(0);
    let _ = record.status(i64::MAX);
    let Ok(key) = CompiledKey::compile(record) else { return };
    for (method, path, body) in [
        ("GET", "/api/v2/projects/1/users", None),
        ("POST", "/v4/events", Some(&br#"{"action":"x"}"#[..])),
        ("PUT", "/v4/profiles/p1", Some(&br#"{"email":"a","tags":["t"]}"#[..])),
    ] {
        let request = GateRequest { method, path, client_ip: Some("10.1.2.3"), body, basic_workspace: None, origin: None, referer: None };
        let _ = decide(&key, policy(), &request, 1_780_000_000_000);
    }
});
