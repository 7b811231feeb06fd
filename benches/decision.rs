//! What one check costs natively: keyward's whole check (key format and checksum, SHA-256,
//! decision) and its decision alone, beside the same decision written as a cedar-policy policy
//! set, and how the cost grows with the size of a key's lists.
//!
//! `cargo bench --features bench --bench decision` prints criterion's figures and writes
//! percentiles (ns per check, p50/p99 over batches) to bench-output/native.json for
//! scripts/bench.sh's table.
#![expect(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "benchmark harness")]

use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant};

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet, Request, RestrictedExpression};
use criterion::Criterion;
use keyward::core::digest::key_digest;
use keyward::core::key::{generate_key, parse_key};
use keyward::core::record::{CompiledKey, KeyRecord};
use keyward::core::{decide, Code, GateRequest, RoutePolicy};
use serde_json::{json, Value};

const NOW: i64 = 1_790_000_000_000;
const CLIENT_IP: &str = "198.51.100.77";
const BODY: &str = r#"{"action":"event_17","params":{"url":"/pricing","referrer":"search"}}"#;

/// A small deterministic generator, so every run checks the same record.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

fn cidrs(n: usize) -> Vec<String> {
    let mut rng = Lcg(7);
    let mut out: Vec<String> = (0..n.saturating_sub(1))
        .map(|_| {
            let prefix = 8 + (rng.next() % 25) as u8;
            let a = rng.next() as u32 | 0x0100_0000;
            // Keep 198.51.100.0/24 (the client) out of the random ones.
            let a = if a >> 24 == 198 { a ^ 0x0400_0000 } else { a };
            format!("{}/{prefix}", std::net::Ipv4Addr::from(a))
        })
        .collect();
    out.push("198.51.100.0/24".into()); // the one that matches, last
    out
}

fn permissions(n: usize) -> Vec<String> {
    let mut out: Vec<String> = (0..n.saturating_sub(1)).map(|i| format!("module_{i}:read")).collect();
    out.push("events:create".into());
    out
}

fn events(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("event_{i}")).collect()
}

fn record(perms: usize, events_n: usize, cidrs_n: usize, key: &str) -> KeyRecord {
    let view = json!({
        "id": "key_01JBENCH000000000000000000",
        "name": "benchmark key",
        "permissions": permissions(perms),
        "event_allowlist": events(events_n),
        "event_denylist": ["event_blocked"],
        "ip_allowlist": cidrs(cidrs_n),
        "expires_at": "2099-01-01T00:00:00Z",
    });
    let mut r = KeyRecord::from_view(&view).unwrap();
    r.digest = key_digest(key);
    r
}

fn policy() -> RoutePolicy {
    RoutePolicy::parse(&std::fs::read_to_string("config/default-policy.json").unwrap()).unwrap()
}

fn bench_key() -> String {
    let bytes: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
    generate_key("kw_live", &bytes).unwrap()
}

/// The gate's whole check once the record is in the isolate: what every request pays.
fn full_check(key_text: &str, key: &CompiledKey, policy: &RoutePolicy) -> Code {
    if parse_key(key_text).is_err() {
        return Code::MalformedKey;
    }
    if key_digest(key_text) != key.record.digest {
        return Code::UnknownKey;
    }
    decide_only(key, policy)
}

fn decide_only(key: &CompiledKey, policy: &RoutePolicy) -> Code {
    let request = GateRequest {
        method: "POST",
        path: "/v4/events",
        client_ip: Some(CLIENT_IP),
        body: Some(BODY.as_bytes()),
        basic_workspace: None,
        origin: None,
        referer: None,
    };
    decide(key, policy, &request, NOW).code
}

struct Cedar {
    policies: PolicySet,
    entities: Entities,
    authorizer: Authorizer,
}

/// The same decision as a cedar policy: active, not expired, the route's permission, the event
/// lists, and the IP allowlist as a disjunction of ranges (cedar has no set-of-ranges test).
fn cedar(perms: usize, events_n: usize, cidrs_n: usize) -> Cedar {
    let ranges: Vec<String> = cidrs(cidrs_n).iter().map(|c| format!("context.ip.isInRange(ip(\"{c}\"))")).collect();
    let text = format!(
        "permit(principal, action, resource) when {{ principal.active && context.now < principal.expires_at \
         && principal.permissions.contains(context.permission) \
         && !principal.event_denylist.contains(context.event) \
         && principal.event_allowlist.contains(context.event) && ({}) }};",
        ranges.join(" || ")
    );
    let policies = PolicySet::from_str(&text).expect("cedar policy");
    let entities = Entities::from_json_value(
        json!([{
            "uid": {"type": "Key", "id": "bench"},
            "attrs": {
                "active": true,
                "expires_at": 4_070_908_800_000_i64,
                "permissions": permissions(perms),
                "event_allowlist": events(events_n),
                "event_denylist": ["event_blocked"],
            },
            "parents": []
        }]),
        None,
    )
    .expect("cedar entities");
    Cedar { policies, entities, authorizer: Authorizer::new() }
}

fn cedar_check(c: &Cedar) -> bool {
    // What a gate using cedar does per request: build the request and its context, then ask.
    let body: Value = serde_json::from_str(BODY).unwrap();
    let event = body["action"].as_str().unwrap_or_default();
    let context = Context::from_pairs([
        ("ip".to_string(), RestrictedExpression::from_str(&format!("ip(\"{CLIENT_IP}\")")).unwrap()),
        ("event".to_string(), RestrictedExpression::new_string(event.to_string())),
        ("permission".to_string(), RestrictedExpression::new_string("events:create".to_string())),
        ("now".to_string(), RestrictedExpression::new_long(NOW)),
    ])
    .unwrap();
    let request = Request::new(
        EntityUid::from_str(r#"Key::"bench""#).unwrap(),
        EntityUid::from_str(r#"Action::"call""#).unwrap(),
        EntityUid::from_str(r#"Route::"POST /v4/events""#).unwrap(),
        context,
        None,
    )
    .unwrap();
    c.authorizer.is_authorized(&request, &c.policies, &c.entities).decision() == cedar_policy::Decision::Allow
}

/// ns per call at the 50th and 99th percentile over batches of `batch` calls.
fn percentiles(mut f: impl FnMut(), batch: u32, budget: Duration) -> (f64, f64, usize) {
    for _ in 0..batch {
        f();
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || samples.len() < 50 {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        samples.push(t.elapsed().as_nanos() as f64 / f64::from(batch));
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), samples.len())
}

fn main() {
    let key_text = bench_key();
    let key = CompiledKey::compile(record(20, 50, 100, &key_text)).unwrap();
    let policy = policy();
    assert_eq!(full_check(&key_text, &key, &policy), Code::Valid, "the benchmark request must pass");
    let peer = cedar(20, 50, 100);
    assert!(cedar_check(&peer), "the cedar request must be allowed");

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .configure_from_args();
    let mut group = criterion.benchmark_group("check");
    group.bench_function("keyward full check", |b| b.iter(|| full_check(black_box(&key_text), &key, &policy)));
    group.bench_function("keyward decide", |b| b.iter(|| decide_only(black_box(&key), &policy)));
    group.bench_function("cedar is_authorized", |b| b.iter(|| cedar_check(black_box(&peer))));
    group.finish();

    let budget = Duration::from_millis(1500);
    let mut results = serde_json::Map::new();
    let mut put = |name: &str, (p50, p99, n): (f64, f64, usize)| {
        println!("{name:<48} p50 {p50:>10.1} ns   p99 {p99:>10.1} ns   ({n} batches)");
        results.insert(name.to_string(), json!({"p50_ns": p50, "p99_ns": p99, "batches": n}));
    };
    put("native/keyward_full_check", percentiles(|| { black_box(full_check(black_box(&key_text), &key, &policy)); }, 200, budget));
    put("native/keyward_decide", percentiles(|| { black_box(decide_only(black_box(&key), &policy)); }, 200, budget));
    put("native/cedar", percentiles(|| { black_box(cedar_check(black_box(&peer))); }, 20, budget));
    put("native/sha256_digest", percentiles(|| { black_box(key_digest(black_box(&key_text))); }, 200, budget));
    put("native/parse_key", percentiles(|| { black_box(parse_key(black_box(&key_text)).is_ok()); }, 200, budget));
    // What usage counting adds to a request: one tally update for a key already in a tally of
    // 1 000 keys (the gate's usage::record).
    let mut tally = keyward::core::usage::UsageTally::default();
    for i in 0..1_000 {
        tally.add(&format!("key_{i:026}"), Code::Valid, 0);
    }
    let warm = "key_00000000000000000000000500".to_string();
    put("native/usage_record", percentiles(|| tally.add(black_box(&warm), Code::Valid, black_box(1)), 200, budget));
    for n in [10usize, 1_000, 10_000] {
        let big = CompiledKey::compile(record(n, 50, n, &key_text)).unwrap();
        put(&format!("scale/decide_{n}_cidrs_and_permissions"), percentiles(|| { black_box(decide_only(black_box(&big), &policy)); }, 200, budget));
        let peer_n = cedar(n, 50, n.min(1_000));
        if n <= 1_000 {
            put(&format!("scale/cedar_{n}_cidrs_and_permissions"), percentiles(|| { black_box(cedar_check(black_box(&peer_n))); }, 5, budget));
        }
    }
    for n in [10usize, 1_000, 10_000] {
        let rules: Vec<Value> = (0..n - 1)
            .map(|i| json!({"method": "GET", "path": format!("/api/m{i}/items/{{id}}"), "permission": format!("m{i}:read")}))
            .chain(std::iter::once(json!({"method": "POST", "path": "/v4/events", "permission": "events:create", "event": "body:action"})))
            .collect();
        let big_policy = RoutePolicy::from_value(&json!({ "rules": rules })).unwrap();
        put(&format!("scale/decide_{n}_route_rules"), percentiles(|| { black_box(decide_only(black_box(&key), &big_policy)); }, 200, budget));
    }
    std::fs::create_dir_all("bench-output").unwrap();
    std::fs::write("bench-output/native.json", serde_json::to_string_pretty(&Value::Object(results)).unwrap()).unwrap();
}
