//! `keyward`: the origin's command line for a keyward deployment. It makes keys locally in
//! keyward's format, hashes them locally (a plaintext key is never sent), validates records with
//! keyward's own core before sending them, and drives the management API.

mod attributes;
mod audit;
mod client;
mod failure;
mod import;
mod keys;
mod leaks;
mod output;
mod policy;
mod revoke;
mod token;
mod workspaces;
mod webhooks;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use client::Client;
use failure::Failure;
use output::Format;

#[derive(Parser)]
#[command(name = "keyward", version, about = "The origin's command line for keyward, the edge API-key gateway")]
#[command(after_help = "Configuration: --url and --token, or KEYWARD_URL and KEYWARD_TOKEN. The token is never printed.")]
struct Cli {
    /// The keyward deployment, e.g. https://api.example.com
    #[arg(long, env = "KEYWARD_URL", global = true)]
    url: Option<String>,
    /// The management token (ADMIN_TOKEN or a key with keys:* permissions)
    #[arg(long, env = "KEYWARD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print machine-readable JSON instead of tables and text
    #[arg(long, global = true)]
    json: bool,
    /// Work in this workspace only: key commands, push, import, revoke, verify and audit go to
    /// /workspaces/{WORKSPACE}/... (a key created or pushed there belongs to it)
    #[arg(long, env = "KEYWARD_WORKSPACE", global = true)]
    workspace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage key records through the management API
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Work with a key locally (nothing is sent)
    #[command(subcommand)]
    Key(keys::KeyCommand),
    /// Print the SHA-256 digest keyward stores for KEY (or for each line of standard input)
    Digest {
        /// The key; `-` or nothing reads keys from standard input, one a line
        key: Option<String>,
    },
    /// Push one record for a key the origin made itself (PUT /keys/{digest}); only the digest is sent
    Push(keys::PushArgs),
    /// Import records from a JSONL or CSV file in batches (POST /keys/batch)
    Import(import::ImportArgs),
    /// Revoke keys by id, key or digest (POST /revocations)
    Revoke(revoke::RevokeArgs),
    /// Read, replace or check the route policy
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Ask the edge for its decision on a request, without calling the origin (POST /verify)
    Verify(keys::VerifyArgs),
    /// Read the audit log, newest first; --follow prints new entries as they come
    Audit(audit::AuditArgs),
    /// Exchange a key for a short-lived signed token (POST /auth/token), or refresh a token
    Token(token::TokenArgs),
    /// Manage workspaces: each customer's keys, with a permission ceiling
    #[command(subcommand)]
    Workspaces(workspaces::WorkspacesCommand),
    /// Report leaked keys found by your own scanner (POST /leaks); plaintext keys are hashed here
    #[command(subcommand)]
    Leaks(leaks::LeaksCommand),
    /// Manage the webhook endpoints keyward tells of key changes, and their deliveries
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Print a shell completion script
    Completions {
        shell: clap_complete::Shell,
    },
}

/// What a command needs from the global options.
pub struct Context {
    url: Option<String>,
    token: Option<String>,
    workspace: Option<String>,
    pub format: Format,
}

impl Context {
    /// The management API client, within `--workspace` when given; only commands that talk to
    /// keyward ask for it.
    pub fn client(&self) -> Result<Client, Failure> {
        let client = self.unscoped_client()?;
        match self.workspace.as_deref().filter(|w| !w.is_empty()) {
            None => Ok(client),
            Some(w) if keyward::core::record::is_workspace_id(w) => Ok(client.within(w)),
            Some(w) => Err(Failure::new(format!("--workspace: \"{w}\" is not a workspace id (1 to 64 characters of A-Z, a-z, 0-9, _ and -)"))),
        }
    }

    /// The client for calls that belong to no workspace (the policy, the workspaces themselves).
    pub fn unscoped_client(&self) -> Result<Client, Failure> {
        let url = self
            .url
            .as_deref()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Failure::new("--url: give keyward's URL (or set KEYWARD_URL)"))?;
        let token = self.token.as_deref().unwrap_or("");
        Client::new(url, token)
    }
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let context = Context {
        url: cli.url,
        token: cli.token,
        workspace: cli.workspace,
        format: if cli.json { Format::Json } else { Format::Human },
    };
    match cli.command {
        Command::Keys(command) => keys::run_keys(&context, command),
        Command::Key(command) => keys::run_key(&context, command),
        Command::Digest { key } => keys::digest(&context, key.as_deref()),
        Command::Push(args) => keys::push(&context, &args),
        Command::Import(args) => import::run(&context, &args),
        Command::Revoke(args) => revoke::run(&context, &args),
        Command::Policy(command) => policy::run(&context, command),
        Command::Verify(args) => keys::verify(&context, &args),
        Command::Audit(args) => audit::run(&context, &args),
        Command::Token(args) => token::run(&context, &args),
        Command::Workspaces(command) => workspaces::run(&context, command),
        Command::Leaks(command) => leaks::run(&context, command),
        Command::Webhooks(command) => webhooks::run(&context, command),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "keyward", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Help and version as clap prints them; a usage mistake as one line, like every other error.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
        let _ = e.print();
        return if e.exit_code() == 0 { ExitCode::SUCCESS } else { ExitCode::from(2) };
    }
    let text = e.render().to_string();
    let why: Vec<&str> = text
        .lines()
        .take_while(|line| !line.starts_with("Usage:"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let why = why.join(" ");
    eprintln!("keyward: {} (see keyward --help)", why.strip_prefix("error: ").unwrap_or(&why));
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe would be an error at every println;
    // the default action ends the process quietly instead, like any other command-line tool.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    match run(cli) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("keyward: {failure}");
            ExitCode::FAILURE
        }
    }
}

