//! Runs the known-answer vectors in tests/vectors/*.json through the core. The same files are run
//! through the Worker (tests/e2e/vectors.test.mjs, via /verify) and through the wasm core in the
//! browser (tests/browser), so the three provably agree.
#![expect(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test harness")]

use std::path::Path;

use keyward::core::limits;
use keyward::core::record::{CompiledKey, KeyRecord};
use keyward::core::time::parse_rfc3339;
use keyward::core::{decide, GateRequest, RoutePolicy};
use serde_json::Value;

fn policy_of(file: &Value) -> RoutePolicy {
    match &file["policy"] {
        Value::String(s) if s == "default" => {
            let text = std::fs::read_to_string("config/default-policy.json").unwrap();
            RoutePolicy::parse(&text).unwrap()
        }
        doc => RoutePolicy::from_value(doc).unwrap(),
    }
}

#[test]
fn known_answer_vectors() {
    let mut files: Vec<_> = std::fs::read_dir(Path::new("tests/vectors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "the vector files are missing");
    let mut count = 0;
    let mut failures = Vec::new();
    for path in files {
        let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let policy = policy_of(&file);
        let now = parse_rfc3339(file["now"].as_str().unwrap()).expect("now");
        for case in file["cases"].as_array().unwrap() {
            count += 1;
            let name = format!("{}: {}", path.display(), case["name"].as_str().unwrap());
            let record = KeyRecord::from_view(&case["record"]).unwrap_or_else(|e| panic!("{name}: record: {e}"));
            let key = CompiledKey::compile(record).unwrap_or_else(|e| panic!("{name}: compile: {e}"));
            let request = &case["request"];
            let text = |f: &str| request.get(f).and_then(Value::as_str);
            let method = text("method").unwrap().to_ascii_uppercase();
            let decision = decide(
                &key,
                &policy,
                &GateRequest {
                    method: &method,
                    path: text("path").unwrap(),
                    client_ip: text("ip"),
                    body: text("body").map(str::as_bytes),
                    basic_workspace: text("basic_workspace"),
                    origin: text("origin"),
                    referer: text("referer"),
                },
                now,
            );
            // Last, the limit and credit checks on the case's counts: `recent` requests already
            // in the key's window (the edge test makes them for real) and the record's credits.
            let recent = request.get("recent").and_then(Value::as_u64).unwrap_or(0);
            let cost = limits::cost_of(&policy, decision.rule);
            let decision = limits::decide_limits(decision, &key.record, cost, &limits::LimitCounts { recent, credits_remaining: None });
            let expect = &case["expect"];
            let mut wrong = Vec::new();
            if Some(decision.valid) != expect["valid"].as_bool() {
                wrong.push(format!("valid {}", decision.valid));
            }
            if decision.code.as_str() != expect["code"].as_str().unwrap() {
                wrong.push(format!("code {}", decision.code.as_str()));
            }
            if let Some(p) = expect.get("permission") {
                if decision.permission.as_deref() != p.as_str() {
                    wrong.push(format!("permission {:?}", decision.permission));
                }
            }
            if let Some(r) = expect.get("rule") {
                if decision.rule.map(|i| i as u64) != r.as_u64() {
                    wrong.push(format!("rule {:?}", decision.rule));
                }
            }
            if !wrong.is_empty() {
                failures.push(format!("{name}: expected {expect}, got {} ({})", wrong.join(", "), decision.message));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {count} vectors disagree:\n{}", failures.len(), failures.join("\n"));
    assert!(count >= 80, "only {count} vectors");
}

/// The token vectors (tests/vectors/tokens/verify.json, made with Node's crypto) through the
/// core's verification; the same file runs through the wasm core in Chromium.
#[test]
fn token_vectors() {
    use keyward::core::token::{verify, PublicKey};
    let file: Value = serde_json::from_str(&std::fs::read_to_string("tests/vectors/tokens/verify.json").unwrap()).unwrap();
    let keys: Vec<PublicKey> = file["jwks"]["keys"].as_array().unwrap().iter().map(|k| PublicKey::from_jwk(k).unwrap()).collect();
    let issuer = file["issuer"].as_str().unwrap();
    let cases = file["cases"].as_array().unwrap();
    assert!(cases.len() >= 20, "the token vectors are missing");
    let mut failures = Vec::new();
    for case in cases {
        let outcome = verify(case["token"].as_str().unwrap(), &keys, issuer, case["now_ms"].as_i64().unwrap());
        let (code, sub, profile) = match &outcome {
            Ok(claims) => ("VALID", Some(claims.sub.clone()), claims.profile.clone()),
            Err(e) => (e.code.as_str(), None, None),
        };
        let expected_profile = case.get("profile").and_then(Value::as_str).map(str::to_string);
        if code != case["code"].as_str().unwrap()
            || (code == "VALID" && (sub.as_deref() != case["sub"].as_str() || profile != expected_profile))
        {
            failures.push(format!("{}: got {code} {outcome:?}", case["name"]));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
