//! Key records through the management API (`keys ...`), keys made and hashed locally (`key new`,
//! `digest`), the origin's push of one record, and `verify`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use keyward::core::digest::key_digest;
use keyward::core::key::{generate_key, is_key_id, key_preview, parse_key, validate_prefix, RANDOM_BYTES_FOR_KEY};
use keyward::core::record::WriteMode;
use serde_json::{json, Map, Value};

use crate::attributes::{identity_of_digest, identity_of_key, validate, RecordFlags};
use crate::client::{encode, Client};
use crate::client::data;
use crate::failure::Failure;
use crate::output::{self, Format, KEY_COLUMNS};
use crate::Context;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// List key records (every page, or --limit)
    List(ListArgs),
    /// Show one record
    Get { id: String },
    /// Create a key at the edge; its plaintext is printed this once
    Create(RecordFlags),
    /// Change attributes of a record
    Update {
        id: String,
        #[command(flatten)]
        flags: RecordFlags,
    },
    /// Expire a key (active=false); it can be reactivated
    Expire { id: String },
    /// Reactivate an expired key (not a revoked one)
    Reactivate { id: String },
    /// Revoke a key: final
    Revoke { id: String },
    /// Make a new key with the same settings; the old one expires after the grace period
    Roll {
        id: String,
        #[arg(long, default_value_t = 0)]
        grace_seconds: u64,
    },
    /// Delete a key that is not active (expired or revoked)
    Delete { id: String },
}

#[derive(Args)]
pub struct ListArgs {
    /// Only the key with this name (case-insensitive)
    #[arg(long)]
    name: Option<String>,
    /// Only keys whose name contains this text (case-insensitive)
    #[arg(long)]
    name_contains: Option<String>,
    /// Only keys with this status: active, expired or revoked
    #[arg(long, value_parser = ["active", "expired", "revoked"])]
    status: Option<String>,
    /// Stop after this many records
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Make a key in keyward's format here (CSPRNG, checksum); nothing is sent
    New {
        /// The key's prefix
        #[arg(long, default_value = "kw_live")]
        prefix: String,
        /// How many keys
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
}

#[derive(Args)]
pub struct PushArgs {
    /// The plaintext key (hashed here; `-` reads it from standard input)
    #[arg(long, conflicts_with = "digest", required_unless_present = "digest")]
    key: Option<String>,
    /// The key's SHA-256 digest (lowercase hex)
    #[arg(long)]
    digest: Option<String>,
    /// The record's version: must be above the stored one
    #[arg(long)]
    version: u64,
    #[command(flatten)]
    flags: RecordFlags,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The key to check (`-` reads it from standard input); or give it in --header
    #[arg(long)]
    key: Option<String>,
    #[arg(long, default_value = "GET")]
    method: String,
    /// The request path, e.g. /api/v2/projects/1/users
    #[arg(long)]
    path: String,
    /// The client address
    #[arg(long)]
    ip: Option<String>,
    /// A request header as "Name: value" (repeatable)
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The request body
    #[arg(long)]
    body: Option<String>,
}

fn check_id(id: &str) -> Result<(), Failure> {
    if is_key_id(id) {
        Ok(())
    } else {
        Err(Failure::new(format!("ID: \"{id}\" is not a key id (key_ followed by 26 characters)")))
    }
}

fn print_record(context: &Context, record: &Value) {
    match context.format {
        Format::Json => output::json(record),
        Format::Human => print!("{}", output::fields(record)),
    }
}

/// Prints a record that carries a new key's plaintext, saying that it is shown once.
fn print_new_key(context: &Context, record: &Value) {
    match context.format {
        Format::Json => output::json(record),
        Format::Human => {
            let mut rest = record.clone();
            let key = rest.as_object_mut().and_then(|m| m.remove("api_key"));
            if let Some(Value::String(key)) = key {
                println!("api_key: {key}");
                println!("(the key is shown this once: store it now)");
            }
            if let Some(old) = rest.as_object_mut().and_then(|m| m.remove("rolled_from")) {
                print!("{}", output::fields(&rest));
                println!("rolled_from:");
                print!("{}", output::fields(&old));
            } else {
                print!("{}", output::fields(&rest));
            }
        }
    }
}

pub fn run_keys(context: &Context, command: KeysCommand) -> Result<ExitCode, Failure> {
    let client = context.client()?;
    match command {
        KeysCommand::List(args) => list(context, &client, &args)?,
        KeysCommand::Get { id } => {
            check_id(&id)?;
            print_record(context, data(&client.get(&format!("/api_keys/{id}"))?));
        }
        KeysCommand::Create(flags) => {
            let attributes = flags.to_map()?;
            validate(&attributes, WriteMode::Create).map_err(|e| Failure::new(format!("refused before sending: {e}")))?;
            let answer = client.post("/api_keys", &json!({"api_key": attributes}))?;
            print_new_key(context, data(&answer));
        }
        KeysCommand::Update { id, flags } => {
            check_id(&id)?;
            let attributes = flags.to_map()?;
            if attributes.is_empty() {
                return Err(Failure::new("nothing to change: give at least one attribute"));
            }
            validate(&attributes, WriteMode::Update).map_err(|e| Failure::new(format!("refused before sending: {e}")))?;
            let answer = client.put(&format!("/api_keys/{id}"), &json!({"api_key": attributes}))?;
            print_record(context, data(&answer));
        }
        KeysCommand::Expire { id } => set_active(context, &client, &id, false)?,
        KeysCommand::Reactivate { id } => set_active(context, &client, &id, true)?,
        KeysCommand::Revoke { id } => {
            check_id(&id)?;
            print_record(context, data(&client.post(&format!("/api_keys/{id}/revoke"), &json!({}))?));
        }
        KeysCommand::Roll { id, grace_seconds } => {
            check_id(&id)?;
            let answer = client.post(&format!("/api_keys/{id}/roll"), &json!({"grace_seconds": grace_seconds}))?;
            print_new_key(context, data(&answer));
        }
        KeysCommand::Delete { id } => {
            check_id(&id)?;
            let answer = client.delete(&format!("/api_keys/{id}"))?;
            match context.format {
                Format::Json => output::json(data(&answer)),
                Format::Human => println!("deleted {id}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn set_active(context: &Context, client: &Client, id: &str, active: bool) -> Result<(), Failure> {
    check_id(id)?;
    let answer = client.put(&format!("/api_keys/{id}"), &json!({"api_key": {"active": active}}))?;
    print_record(context, data(&answer));
    Ok(())
}

/// Every record, following `next_page_token` (keyset pages never overlap or skip).
fn list(context: &Context, client: &Client, args: &ListArgs) -> Result<(), Failure> {
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut records: Vec<Value> = Vec::new();
    let mut token: Option<String> = None;
    while records.len() < limit {
        let per_page = (limit - records.len()).min(500);
        let mut query = format!("?per_page={per_page}");
        if let Some(name) = &args.name {
            query.push_str(&format!("&name={}", encode(name)));
        }
        if let Some(text) = &args.name_contains {
            query.push_str(&format!("&name_contains={}", encode(text)));
        }
        if let Some(status) = &args.status {
            query.push_str(&format!("&status={}", encode(status)));
        }
        if let Some(t) = &token {
            query.push_str(&format!("&page_token={}", encode(t)));
        }
        let answer = client.get(&format!("/api_keys{query}"))?;
        let page = data(&answer).as_array().cloned().unwrap_or_default();
        let empty = page.is_empty();
        records.extend(page);
        token = answer.get("next_page_token").and_then(Value::as_str).map(str::to_string);
        if token.is_none() || empty {
            break;
        }
    }
    records.truncate(limit);
    match context.format {
        Format::Json => output::json(&Value::Array(records)),
        Format::Human => {
            print!("{}", output::table(&records, KEY_COLUMNS));
            if std::io::stdout().is_terminal() {
                println!("{} key{}", records.len(), if records.len() == 1 { "" } else { "s" });
            }
        }
    }
    Ok(())
}

/// Reads a secret given as `-` from standard input (so it stays out of shell history).
fn secret(value: &str) -> Result<String, Failure> {
    if value != "-" {
        return Ok(value.to_string());
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

pub fn new_key(prefix: &str) -> Result<String, Failure> {
    validate_prefix(prefix).map_err(|e| Failure::new(format!("--prefix: {e}")))?;
    // About 3 % of bytes are discarded; 64 bytes almost never fall short, and a retry fixes it.
    for _ in 0..8 {
        let mut random = [0u8; RANDOM_BYTES_FOR_KEY];
        getrandom::fill(&mut random).map_err(|e| Failure::new(format!("the system's random number generator failed: {e}")))?;
        if let Ok(key) = generate_key(prefix, &random) {
            return Ok(key);
        }
    }
    Err(Failure::new("not enough random bytes to make a key"))
}

pub fn run_key(context: &Context, command: KeyCommand) -> Result<ExitCode, Failure> {
    match command {
        KeyCommand::New { prefix, count } => {
            for _ in 0..count {
                let key = new_key(&prefix)?;
                match context.format {
                    Format::Json => output::json(&json!({"key": key, "digest": key_digest(&key), "key_preview": key_preview(&key)})),
                    Format::Human => println!("{key}"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Digest of one key; a key that is not in keyward's format is refused, as the gate would.
fn digest_of(key: &str) -> Result<String, String> {
    parse_key(key).map_err(|e| format!("not a keyward key: {e}"))?;
    Ok(key_digest(key))
}

pub fn digest(context: &Context, key: Option<&str>) -> Result<ExitCode, Failure> {
    let print = |key: &str, digest: &str| match context.format {
        Format::Json => output::json(&json!({"digest": digest, "key_preview": key_preview(key)})),
        Format::Human => println!("{digest}"),
    };
    match key {
        Some(key) if key != "-" => {
            let digest = digest_of(key).map_err(|e| Failure::new(format!("KEY: {e}")))?;
            print(key, &digest);
        }
        _ => {
            for (i, line) in std::io::stdin().lock().lines().enumerate() {
                let line = line?;
                let key = line.trim();
                if key.is_empty() {
                    continue;
                }
                let digest = digest_of(key).map_err(|e| Failure::new(format!("line {}: {e}", i + 1)))?;
                print(key, &digest);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn push(context: &Context, args: &PushArgs) -> Result<ExitCode, Failure> {
    let identity = match (&args.key, &args.digest) {
        (Some(key), _) => identity_of_key("--key", &secret(key)?),
        (None, Some(digest)) => identity_of_digest("--digest", digest),
        (None, None) => return Err(Failure::new("--key or --digest: give one")),
    }
    .map_err(|e| Failure::new(e.to_string()))?;
    let mut attributes: Map<String, Value> = args.flags.to_map()?;
    attributes.insert("version".into(), Value::from(args.version));
    if let Some(preview) = &identity.preview {
        attributes.entry("key_preview").or_insert_with(|| Value::String(preview.clone()));
    }
    validate(&attributes, WriteMode::Push).map_err(|e| Failure::new(format!("refused before sending: {e}")))?;
    let client = context.client()?;
    let answer = client.put(&format!("/keys/{}", identity.digest), &json!({"api_key": attributes}))?;
    print_record(context, data(&answer));
    Ok(ExitCode::SUCCESS)
}

pub fn verify(context: &Context, args: &VerifyArgs) -> Result<ExitCode, Failure> {
    let mut headers = Map::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            // The text is not echoed: a header is where a key usually is.
            .ok_or_else(|| Failure::new("--header: must be \"Name: value\""))?;
        headers.insert(name.trim().to_ascii_lowercase(), Value::String(value.trim().to_string()));
    }
    let mut body = json!({"method": args.method.to_ascii_uppercase(), "path": args.path, "headers": headers});
    if let Some(map) = body.as_object_mut() {
        if let Some(key) = &args.key {
            map.insert("key".into(), Value::String(secret(key)?));
        }
        if let Some(ip) = &args.ip {
            map.insert("ip".into(), Value::String(ip.clone()));
        }
        if let Some(text) = &args.body {
            map.insert("body".into(), Value::String(text.clone()));
        }
    }
    let client = context.client()?;
    let answer = client.post("/verify", &body)?;
    let decision = data(&answer);
    match context.format {
        Format::Json => output::json(decision),
        Format::Human => print!("{}", output::fields(decision)),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn new_keys_parse_and_differ() {
        let a = new_key("kw_test").unwrap();
        let b = new_key("kw_test").unwrap();
        assert_ne!(a, b);
        assert!(parse_key(&a).is_ok());
        assert!(a.starts_with("kw_test_"));
        assert!(new_key("bad-prefix").is_err());
    }

    #[test]
    fn digest_refuses_what_the_gate_would() {
        let key = new_key("kw_live").unwrap();
        assert_eq!(digest_of(&key).unwrap(), key_digest(&key));
        assert!(digest_of("kw_live_short").is_err());
    }
}
