//! `audit`: the management audit log (`GET /audit`), newest first; `--follow` polls for new
//! entries and prints them oldest first, as they come.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::client::{encode, Client};
use crate::client::data;
use crate::failure::Failure;
use crate::output::{self, Format};
use crate::Context;

#[derive(Args)]
pub struct AuditArgs {
    /// Only entries for this key id
    #[arg(long)]
    key_id: Option<String>,
    /// Only entries with this action (e.g. create, update, revoke)
    #[arg(long)]
    action: Option<String>,
    /// How many entries to show (with --follow: before the new ones)
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Keep printing new entries as they are written
    #[arg(long)]
    follow: bool,
    /// Seconds between two polls with --follow
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
}

const COLUMNS: &[&str] = &["at", "actor", "action", "key_id", "changes"];

/// Attributes every change touches, left out of the summary.
const NOISE: &[&str] = &["created_at", "updated_at"];

/// `changes` in a few words: each changed attribute with its old and new value (`name=new` when
/// there was no old one, as for a new key).
pub fn summarize_changes(changes: Option<&Value>) -> String {
    let pair = |name: &str, change: &Value| -> String {
        let old = change.get("old").or_else(|| change.get("from")).filter(|v| !v.is_null());
        let new = change.get("new").or_else(|| change.get("to"));
        match (old, new) {
            (None, None) => format!("{name}={}", output::cell(Some(change))),
            (None, new) => format!("{name}={}", output::cell(new)),
            (old, new) => format!("{name}: {} -> {}", output::cell(old), output::cell(new)),
        }
    };
    let parts: Vec<String> = match changes {
        Some(Value::Object(map)) => map
            .iter()
            .filter(|(name, _)| !NOISE.contains(&name.as_str()))
            .map(|(name, change)| pair(name, change))
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let name = ["attribute", "field", "name"]
                    .iter()
                    .find_map(|f| item.get(*f).and_then(Value::as_str))
                    .unwrap_or("?");
                (name, item)
            })
            .filter(|(name, _)| !NOISE.contains(name))
            .map(|(name, item)| pair(name, item))
            .collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(other) => vec![other.to_string()],
    };
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

fn row(entry: &Value) -> Value {
    let mut row = entry.clone();
    if let Some(map) = row.as_object_mut() {
        let summary = summarize_changes(entry.get("changes"));
        map.insert("changes".into(), Value::String(summary));
    }
    row
}

/// One page of entries, newest first, and the token of the next (older) page.
fn page(client: &Client, args: &AuditArgs, per_page: usize, token: Option<&str>) -> Result<(Vec<Value>, Option<String>), Failure> {
    let mut query = format!("?per_page={}", per_page.clamp(1, 500));
    if let Some(id) = &args.key_id {
        query.push_str(&format!("&key_id={}", encode(id)));
    }
    if let Some(action) = &args.action {
        query.push_str(&format!("&action={}", encode(action)));
    }
    if let Some(t) = token {
        query.push_str(&format!("&page_token={}", encode(t)));
    }
    let answer = client.get(&format!("/audit{query}"))?;
    let entries = data(&answer).as_array().cloned().unwrap_or_default();
    let next = answer.get("next_page_token").and_then(Value::as_str).map(str::to_string);
    Ok((entries, next))
}

fn id_of(entry: &Value) -> String {
    entry.get("id").map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).unwrap_or_default()
}

pub fn run(context: &Context, args: &AuditArgs) -> Result<ExitCode, Failure> {
    if !(args.interval >= 0.1 && args.interval <= 3600.0) {
        return Err(Failure::new("--interval: must be 0.1 to 3600 seconds"));
    }
    let client = context.client()?;
    let mut entries: Vec<Value> = Vec::new();
    let mut token: Option<String> = None;
    while entries.len() < args.limit {
        let (batch, next) = page(&client, args, args.limit - entries.len(), token.as_deref())?;
        let empty = batch.is_empty();
        entries.extend(batch);
        token = next;
        if token.is_none() || empty {
            break;
        }
    }
    entries.truncate(args.limit);
    if !args.follow {
        match context.format {
            Format::Json => output::json(&Value::Array(entries)),
            Format::Human => print!("{}", output::table(&entries.iter().map(row).collect::<Vec<_>>(), COLUMNS)),
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Following: oldest first, like a log being written.
    let mut seen: HashSet<String> = entries.iter().map(id_of).collect();
    let print = |batch: &[Value], header: bool| match context.format {
        Format::Json => batch.iter().for_each(output::json),
        Format::Human => {
            let text = output::table(&batch.iter().map(row).collect::<Vec<_>>(), COLUMNS);
            let body = if header { text.as_str() } else { text.split_once('\n').map_or("", |(_, rest)| rest) };
            print!("{body}");
        }
    };
    entries.reverse();
    print(&entries, true);
    let mut failures = 0;
    loop {
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs_f64(args.interval));
        let fresh = match page(&client, args, 100, None) {
            Ok((batch, _)) => {
                failures = 0;
                batch
            }
            // A blip is waited out; five in a row end the command.
            Err(e) if failures < 4 => {
                failures += 1;
                eprintln!("keyward: {e} (trying again)");
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut new: Vec<Value> = fresh.into_iter().take_while(|e| !seen.contains(&id_of(e))).collect();
        if new.is_empty() {
            continue;
        }
        new.reverse();
        for entry in &new {
            seen.insert(id_of(entry));
        }
        print(&new, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_read_as_old_and_new() {
        assert_eq!(
            summarize_changes(Some(&json!({"name": {"old": "a", "new": "b"}, "active": {"old": true, "new": false}}))),
            "active: true -> false; name: a -> b"
        );
        assert_eq!(
            summarize_changes(Some(&json!([{"attribute": "permissions", "old": [], "new": ["x:y"]}]))),
            "permissions: - -> x:y"
        );
        assert_eq!(
            summarize_changes(Some(&json!({"name": {"old": null, "new": "ci"}, "created_at": {"old": null, "new": "t"}}))),
            "name=ci"
        );
        assert_eq!(summarize_changes(None), "-");
    }
}
