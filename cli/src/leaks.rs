//! `leaks report FILE`: tell keyward of keys your own scanner found (`POST /leaks`). Plaintext keys
//! are checked and hashed here and only their digests are sent; a line whose checksum fails is a
//! false positive decided here, without a call.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use keyward::core::digest::{is_digest, key_digest};
use keyward::core::key::parse_key;
use keyward::core::leak::{source_actor, MAX_REPORT_TOKENS};
use serde_json::{json, Value};

use crate::client::data;
use crate::failure::Failure;
use crate::output::{self, Format};
use crate::revoke::with_retries;
use crate::Context;

#[derive(Subcommand)]
pub enum LeaksCommand {
    /// Report leaked keys: FILE has one key or digest a line, optionally followed by where it was found
    Report(ReportArgs),
}

#[derive(Args)]
pub struct ReportArgs {
    /// One `KEY_OR_DIGEST [URL]` a line (`-` for standard input); blank lines and `#` comments are skipped
    file: PathBuf,
    /// The scanner's name: the audit log's actor is leak:<source>
    #[arg(long, default_value = "cli")]
    source: String,
}

/// One line: the digest to send (none: not a key, a false positive) and the URL.
struct Line {
    hash: String,
    digest: Option<String>,
    url: Option<String>,
}

fn parse_line(text: &str) -> Line {
    let mut parts = text.split_whitespace();
    let token = parts.next().unwrap_or_default();
    let url = parts.next().map(str::to_string);
    if is_digest(token) {
        return Line { hash: token.to_string(), digest: Some(token.to_string()), url };
    }
    let hash = key_digest(token);
    let digest = parse_key(token).ok().map(|_| hash.clone());
    Line { hash, digest, url }
}

pub fn run(context: &Context, command: LeaksCommand) -> Result<ExitCode, Failure> {
    let LeaksCommand::Report(args) = command;
    if source_actor(&args.source).is_none() {
        return Err(Failure::new("--source: must be 1 to 40 lowercase letters, digits, '-', '_' or '.'"));
    }
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&args.file).map_err(|e| Failure::new(format!("{}: {e}", args.file.display())))?
    };
    let lines: Vec<Line> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(parse_line).collect();
    if lines.is_empty() {
        return Err(Failure::new(format!("{}: no keys or digests in it", args.file.display())));
    }
    let client = context.client()?;
    let mut results: Vec<Value> = lines.iter().map(|l| json!({"token_hash": l.hash, "label": "false_positive", "key_id": null})).collect();
    let sent: Vec<usize> = (0..lines.len()).filter(|&i| lines.get(i).is_some_and(|l| l.digest.is_some())).collect();
    for chunk in sent.chunks(MAX_REPORT_TOKENS) {
        let leaks: Vec<Value> = chunk
            .iter()
            .filter_map(|&i| lines.get(i))
            .map(|l| json!({"digest": l.digest, "url": l.url}))
            .collect();
        let answer = with_retries(|| client.post("/leaks", &json!({"source": args.source, "leaks": leaks})))?;
        let got = data(&answer).get("results").and_then(Value::as_array).cloned().unwrap_or_default();
        for (&i, result) in chunk.iter().zip(got) {
            if let Some(slot) = results.get_mut(i) {
                *slot = result;
            }
        }
    }
    let count = |label: &str| results.iter().filter(|r| r.get("label").and_then(Value::as_str) == Some(label)).count();
    match context.format {
        Format::Json => output::json(&json!({"results": results})),
        Format::Human => {
            print!("{}", output::table(&results, &["token_hash", "label", "key_id"]));
            println!("true_positive={} false_positive={}", count("true_positive"), count("false_positive"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn lines_are_hashed_here() {
        let key = crate::keys::new_key("kw_live").unwrap();
        let line = parse_line(&format!("{key} https://x"));
        assert_eq!(line.digest.as_deref(), Some(key_digest(&key).as_str()));
        assert_eq!(line.url.as_deref(), Some("https://x"));
        let typo = parse_line("kw_live_notakey");
        assert_eq!(typo.digest, None);
        assert_eq!(typo.hash, key_digest("kw_live_notakey"));
        let digest = key_digest("y");
        assert_eq!(parse_line(&digest).digest.as_deref(), Some(digest.as_str()));
    }
}
