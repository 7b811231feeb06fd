//! `revoke`: many keys at once, by id, plaintext key (hashed here) or digest, through
//! `POST /revocations` in chunks of at most 1000.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use keyward::core::digest::{is_digest, key_digest};
use keyward::core::key::{is_key_id, parse_key};
use serde_json::{json, Value};

use crate::client::CallError;
use crate::client::data;
use crate::failure::Failure;
use crate::output::{self, Format};
use crate::Context;

/// The most ids and hashes one `POST /revocations` takes, together.
pub const CHUNK: usize = 1000;

#[derive(Args)]
pub struct RevokeArgs {
    /// Ids, keys or digests to revoke
    items: Vec<String>,
    /// A file of ids, keys or digests, one a line (`-` for standard input)
    #[arg(long, value_name = "FILE")]
    from_file: Option<PathBuf>,
}

/// One line of the input, sorted into what the API takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Id(String),
    Digest(String),
}

/// An id, a digest, or a plaintext key in keyward's format (hashed here, never sent).
pub fn classify(text: &str) -> Result<Target, String> {
    if is_key_id(text) {
        Ok(Target::Id(text.to_string()))
    } else if is_digest(text) {
        Ok(Target::Digest(text.to_string()))
    } else {
        match parse_key(text) {
            Ok(_) => Ok(Target::Digest(key_digest(text))),
            Err(e) => Err(format!("not a key id, a SHA-256 digest or a keyward key ({e})")),
        }
    }
}

fn read_lines(args: &RevokeArgs) -> Result<Vec<(String, String)>, Failure> {
    let mut lines: Vec<(String, String)> = args
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| (format!("argument {}", i + 1), item.trim().to_string()))
        .collect();
    if let Some(path) = &args.from_file {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))?
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                lines.push((format!("line {}", i + 1), line.to_string()));
            }
        }
    }
    if lines.is_empty() {
        return Err(Failure::new("nothing to revoke: give ids, keys or digests, or --from-file FILE"));
    }
    Ok(lines)
}

pub fn run(context: &Context, args: &RevokeArgs) -> Result<ExitCode, Failure> {
    let lines = read_lines(args)?;
    let mut targets: Vec<Target> = Vec::new();
    let mut seen: HashSet<Target> = HashSet::new();
    let mut failed: Vec<Value> = Vec::new();
    for (place, text) in &lines {
        match classify(text) {
            Ok(target) => {
                if seen.insert(target.clone()) {
                    targets.push(target);
                }
            }
            // The line itself is not echoed: it may be a mistyped secret.
            Err(why) => failed.push(json!({"where": place, "error": why})),
        }
    }
    let client = context.client()?;
    let mut revoked: Vec<Value> = Vec::new();
    let mut not_found: Vec<Value> = Vec::new();
    for chunk in targets.chunks(CHUNK) {
        let ids: Vec<&str> = chunk.iter().filter_map(|t| if let Target::Id(id) = t { Some(id.as_str()) } else { None }).collect();
        let hashes: Vec<&str> =
            chunk.iter().filter_map(|t| if let Target::Digest(d) = t { Some(d.as_str()) } else { None }).collect();
        let answer = with_retries(|| client.post("/revocations", &json!({"ids": ids, "hashes": hashes})))?;
        let list = |field: &str| data(&answer).get(field).unwrap_or(&Value::Null).as_array().cloned().unwrap_or_default();
        revoked.extend(list("revoked"));
        not_found.extend(list("not_found"));
    }
    let ok = failed.is_empty() && not_found.is_empty();
    match context.format {
        Format::Json => output::json(&json!({"revoked": revoked, "not_found": not_found, "failed": failed})),
        Format::Human => {
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
            for f in &failed {
                eprintln!("{}: {}", text(f.get("where")), text(f.get("error")));
            }
            for id in &not_found {
                eprintln!("{}: no such key", text(Some(id)));
            }
            println!("revoked={} not_found={} failed={}", revoked.len(), not_found.len(), failed.len());
        }
    }
    if ok {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(Failure::new(format!(
            "{} of {} could not be revoked (not found or not an id, key or digest)",
            failed.len() + not_found.len(),
            lines.len()
        )))
    }
}

/// Revocation is idempotent, so a call that got no answer or a 5xx is simply made again.
pub fn with_retries(mut call: impl FnMut() -> Result<Value, CallError>) -> Result<Value, Failure> {
    let mut delay = std::time::Duration::from_millis(500);
    for _ in 0..4 {
        match call() {
            Err(e) if e.is_transient() => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            other => return other.map_err(Failure::from),
        }
    }
    call().map_err(Failure::from)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn lines_are_sorted_into_ids_and_digests() {
        let key = crate::keys::new_key("kw_live").unwrap();
        assert_eq!(classify(&key).unwrap(), Target::Digest(key_digest(&key)));
        let digest = key_digest("x");
        assert_eq!(classify(&digest).unwrap(), Target::Digest(digest.clone()));
        let id = keyward::core::key::new_key_id(1, &[0; 10]);
        assert_eq!(classify(&id).unwrap(), Target::Id(id.clone()));
        assert!(classify("kw_live_typo").is_err());
        assert!(classify(&digest.to_uppercase()).is_err());
    }
}
