//! `keyward token`: a key exchanged for a short-lived signed token (POST /auth/token), or a token
//! for a new one (POST /auth/refresh). See docs/tokens.md.

use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use crate::client::{data, CallError, Client};
use crate::failure::Failure;
use crate::output::{self, Format};
use crate::Context;

#[derive(Args)]
pub struct TokenArgs {
    /// The key to log in with (`-` reads it from standard input); default: --token / KEYWARD_TOKEN
    #[arg(long)]
    key: Option<String>,
    /// The token's lifetime in seconds, 60 to 86400 (default 3600; with --refresh, the old token's)
    #[arg(long, value_parser = clap::value_parser!(u64).range(60..=86400))]
    ttl: Option<u64>,
    /// Exchange this token (`-`: from standard input) for a new one instead of logging in
    #[arg(long, conflicts_with = "key")]
    refresh: Option<String>,
}

/// Prints the token alone (so that `TOKEN=$(keyward token)` works), or with --json the answer's
/// `data`: `{token, token_type, expires_in}`.
pub fn run(context: &Context, args: &TokenArgs) -> Result<ExitCode, Failure> {
    let url = context.url.as_deref().filter(|u| !u.is_empty()).ok_or_else(|| Failure::new("--url: give keyward's URL (or set KEYWARD_URL)"))?;
    let (credential, path) = match (&args.refresh, &args.key) {
        (Some(token), _) => (read(token)?, "/auth/refresh"),
        (None, Some(key)) => (read(key)?, "/auth/token"),
        (None, None) => (context.token.clone().unwrap_or_default(), "/auth/token"),
    };
    if credential.is_empty() {
        return Err(Failure::new("--key: give the key to log in with (or --token / KEYWARD_TOKEN)"));
    }
    let body = args.ttl.map_or_else(|| json!({}), |ttl| json!({"ttl_seconds": ttl}));
    let what = if args.refresh.is_some() { "token" } else { "key" };
    let answer = Client::new(url, &credential)?.post(path, &body).map_err(|e| match e {
        // Not the management token's refusal (the client's default words): the key's or the token's.
        CallError::Refused(r) => Failure::new(format!("keyward refused the {what} ({} {}: {})", r.status, r.code, r.message)),
        other => Failure::from(other),
    })?;
    let token = data(&answer);
    match context.format {
        Format::Json => output::json(token),
        Format::Human => println!("{}", token.get("token").and_then(Value::as_str).unwrap_or_default()),
    }
    Ok(ExitCode::SUCCESS)
}

fn read(value: &str) -> Result<String, Failure> {
    if value != "-" {
        return Ok(value.to_string());
    }
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)?;
    Ok(line.trim().to_string())
}
