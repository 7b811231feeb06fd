//! `policy get|put|check`: the route policy. `check` validates a policy file with keyward's core
//! and runs the known-answer vectors written for the default policy against it, locally, so a
//! change that alters a known answer is seen before it is put.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use keyward::core::record::{CompiledKey, KeyRecord};
use keyward::core::time::parse_rfc3339;
use keyward::core::limits;
use keyward::core::{decide, GateRequest, RoutePolicy};
use serde_json::{json, Value};

use crate::client::data;
use crate::failure::Failure;
use crate::output::{self, Format};
use crate::Context;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/vectors.rs"));
}

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Print the route policy in force
    Get,
    /// Replace the route policy with FILE (checked here first)
    Put { file: PathBuf },
    /// Validate FILE and run the known-answer vectors against it, locally
    Check {
        file: PathBuf,
        /// Read vector files (*.json) from this folder instead of the ones built in
        #[arg(long, value_name = "DIR")]
        vectors: Option<PathBuf>,
    },
}

/// Reads and validates a policy file; the error names the file and the field.
pub fn load(path: &Path) -> Result<(RoutePolicy, Value), Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
    let policy = RoutePolicy::parse(&text).map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
    Ok((policy, value))
}

pub fn run(context: &Context, command: PolicyCommand) -> Result<ExitCode, Failure> {
    match command {
        PolicyCommand::Get => {
            let answer = context.unscoped_client()?.get("/policy")?;
            match context.format {
                Format::Json => output::json(data(&answer)),
                Format::Human => println!("{}", serde_json::to_string_pretty(data(&answer)).unwrap_or_default()),
            }
        }
        PolicyCommand::Put { file } => {
            let (policy, value) = load(&file)?;
            let answer = context.unscoped_client()?.put("/policy", &value)?;
            match context.format {
                Format::Json => output::json(data(&answer)),
                Format::Human => println!("policy replaced: {} rules", policy.rules().len()),
            }
        }
        PolicyCommand::Check { file, vectors } => return check(context, &file, vectors.as_deref()),
    }
    Ok(ExitCode::SUCCESS)
}

/// One vector whose answer under the checked policy is not the known one.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    pub vector: String,
    pub expected: Value,
    pub got: Value,
}

/// Runs every case of the vector files written for the default policy against `policy`.
/// Returns how many cases ran and those that disagree.
#[allow(clippy::needless_update, reason = "the core's request may gain fields; they keep their defaults here")]
pub fn run_vectors(policy: &RoutePolicy, files: &[(String, String)]) -> Result<(usize, Vec<Disagreement>), Failure> {
    let mut count = 0;
    let mut disagreements = Vec::new();
    for (name, text) in files {
        let file: Value = serde_json::from_str(text).map_err(|e| Failure::new(format!("vectors {name}: {e}")))?;
        if file.get("policy").and_then(Value::as_str) != Some("default") {
            continue;
        }
        let now = file
            .get("now")
            .and_then(Value::as_str)
            .and_then(parse_rfc3339)
            .ok_or_else(|| Failure::new(format!("vectors {name}: now: must be an RFC 3339 time")))?;
        for case in file.get("cases").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            count += 1;
            let label = format!("{name}: {}", case.get("name").and_then(Value::as_str).unwrap_or("?"));
            let record = KeyRecord::from_view(case.get("record").unwrap_or(&Value::Null))
                .and_then(CompiledKey::compile)
                .map_err(|e| Failure::new(format!("vectors {label}: record: {e}")))?;
            let request = case.get("request").unwrap_or(&Value::Null);
            let text = |f: &str| request.get(f).and_then(Value::as_str);
            let method = text("method").unwrap_or("GET").to_ascii_uppercase();
            let decision = decide(
                &record,
                policy,
                &GateRequest {
                    method: &method,
                    path: text("path").unwrap_or("/"),
                    client_ip: text("ip"),
                    body: text("body").map(str::as_bytes),
                    basic_workspace: text("basic_workspace"),
                    ..GateRequest::default()
                },
                now,
            );
            // Last, the key's rate limit and credits on the case's counts (`recent` requests just
            // allowed, each spending its cost from the record's credits), as the gate decides.
            let recent = request.get("recent").and_then(Value::as_u64).unwrap_or(0);
            let cost = limits::cost_of(policy, decision.rule);
            let decision = limits::decide_limits(decision, &record.record, cost, &limits::LimitCounts { recent, credits_remaining: None });
            let expect = case.get("expect").cloned().unwrap_or(Value::Null);
            let mut agrees = Some(decision.valid) == expect.get("valid").and_then(Value::as_bool)
                && Some(decision.code.as_str()) == expect.get("code").and_then(Value::as_str);
            if let Some(p) = expect.get("permission") {
                agrees &= decision.permission.as_deref() == p.as_str();
            }
            if let Some(r) = expect.get("rule") {
                agrees &= decision.rule.map(|i| i as u64) == r.as_u64();
            }
            if !agrees {
                disagreements.push(Disagreement {
                    vector: label,
                    expected: expect,
                    got: json!({"valid": decision.valid, "code": decision.code.as_str(),
                        "permission": decision.permission, "rule": decision.rule}),
                });
            }
        }
    }
    Ok((count, disagreements))
}

fn vector_files(dir: Option<&Path>) -> Result<Vec<(String, String)>, Failure> {
    let Some(dir) = dir else {
        return Ok(embedded::VECTORS.iter().map(|(n, t)| ((*n).to_string(), (*t).to_string())).collect());
    };
    let entries = std::fs::read_dir(dir).map_err(|e| Failure::new(format!("--vectors {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(|e| Failure::new(format!("{}: {e}", p.display())))?;
            Ok((p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), text))
        })
        .collect()
}

fn check(context: &Context, file: &Path, vectors: Option<&Path>) -> Result<ExitCode, Failure> {
    let (policy, _) = load(file)?;
    let files = vector_files(vectors)?;
    let (count, disagreements) = run_vectors(&policy, &files)?;
    match context.format {
        Format::Json => output::json(&json!({
            "valid": true, "rules": policy.rules().len(), "vectors": count,
            "disagreements": disagreements.iter().map(|d| json!({"vector": d.vector, "expected": d.expected, "got": d.got})).collect::<Vec<_>>(),
        })),
        Format::Human => {
            println!("{}: valid, {} rules", file.display(), policy.rules().len());
            for d in &disagreements {
                println!("  differs: {}: expected {}, got {}", d.vector, d.expected, d.got);
            }
            println!("vectors: {} agree, {} differ", count - disagreements.len(), disagreements.len());
        }
    }
    if disagreements.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Failure::new(format!(
            "{} of {count} known-answer vectors differ under {}",
            disagreements.len(),
            file.display()
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    fn default_policy() -> RoutePolicy {
        RoutePolicy::parse(include_str!("../../config/default-policy.json")).unwrap()
    }

    #[test]
    fn the_default_policy_agrees_with_every_built_in_vector() {
        let files = vector_files(None).unwrap();
        let (count, disagreements) = run_vectors(&default_policy(), &files).unwrap();
        assert!(count >= 80, "only {count} vectors");
        assert!(disagreements.is_empty(), "{disagreements:?}");
    }

    #[test]
    fn a_policy_without_a_route_disagrees() {
        let mut doc = default_policy().doc().clone();
        doc.rules.retain(|r| !r.path.ends_with("/users"));
        let policy = RoutePolicy::from_doc(doc).unwrap();
        let (_, disagreements) = run_vectors(&policy, &vector_files(None).unwrap()).unwrap();
        assert!(!disagreements.is_empty());
        assert!(disagreements.iter().any(|d| d.got["code"] == "ROUTE_NOT_ALLOWED"));
    }
}
