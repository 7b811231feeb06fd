//! `workspaces`: the workspaces of a deployment (`/workspaces`), each customer's keys with a
//! permission ceiling (docs/workspaces.md).

use std::process::ExitCode;

use clap::Subcommand;
use keyward::core::record::{is_group_permission, is_workspace_id};
use serde_json::{json, Map, Value};

use crate::client::{data, encode};
use crate::failure::Failure;
use crate::output::{self, Format};
use crate::Context;

const COLUMNS: &[&str] = &["id", "name", "key_count", "active_key_count", "explicit", "permission_ceiling"];

#[derive(Subcommand)]
pub enum WorkspacesCommand {
    /// List the workspaces (created ones and those only keys name), with their key counts
    List,
    /// Show one workspace
    Get { id: String },
    /// Create a workspace
    Create {
        /// 1 to 64 characters of A-Z, a-z, 0-9, _ and -
        id: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// Change a workspace's name or permission ceiling
    Update {
        id: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// Delete a workspace that has no active keys
    Delete { id: String },
    /// A one-time link to the workspace's portal for one of its users (POST /workspaces/{id}/portal_sessions)
    Link {
        id: String,
        /// The customer's own user id (recorded in the audit log as portal:<user>)
        #[arg(long)]
        user: String,
        /// Where the portal's Return button leads (an absolute http(s) URL)
        #[arg(long = "return-url", value_name = "URL")]
        return_url: String,
        /// How long the link may wait to be opened, then how long the session lasts (60 to 3600)
        #[arg(long = "ttl", value_name = "SECONDS")]
        ttl: Option<u32>,
        /// The page's title
        #[arg(long)]
        title: Option<String>,
        /// The page's logo: an http(s) URL or a path on keyward's host
        #[arg(long = "logo-url", value_name = "URL")]
        logo_url: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct Fields {
    /// The workspace's name
    #[arg(long)]
    name: Option<String>,
    /// A permission its keys may hold at most (repeat, or separate with commas; default *)
    #[arg(long = "ceiling", value_name = "PERMISSION", value_delimiter = ',')]
    ceiling: Vec<String>,
}

impl Fields {
    fn to_map(&self) -> Result<Map<String, Value>, Failure> {
        let mut map = Map::new();
        if let Some(name) = &self.name {
            map.insert("name".into(), Value::String(name.clone()));
        }
        if !self.ceiling.is_empty() {
            if let Some(bad) = self.ceiling.iter().find(|p| !is_group_permission(p)) {
                return Err(Failure::new(format!("--ceiling: \"{bad}\" is not a permission (module:action, module:*, *:action or *)")));
            }
            map.insert("permission_ceiling".into(), json!(self.ceiling));
        }
        Ok(map)
    }
}

fn check(id: &str) -> Result<(), Failure> {
    if is_workspace_id(id) {
        Ok(())
    } else {
        Err(Failure::new(format!("ID: \"{id}\" is not a workspace id (1 to 64 characters of A-Z, a-z, 0-9, _ and -)")))
    }
}

fn print(context: &Context, value: &Value) {
    match context.format {
        Format::Json => output::json(value),
        Format::Human => print!("{}", output::fields(value)),
    }
}

pub fn run(context: &Context, command: WorkspacesCommand) -> Result<ExitCode, Failure> {
    let client = context.unscoped_client()?;
    match command {
        WorkspacesCommand::List => {
            let answer = client.get("/workspaces")?;
            let rows = data(&answer).as_array().cloned().unwrap_or_default();
            match context.format {
                Format::Json => output::json(&Value::Array(rows)),
                Format::Human => print!("{}", output::table(&rows, COLUMNS)),
            }
        }
        WorkspacesCommand::Get { id } => {
            check(&id)?;
            print(context, data(&client.get(&format!("/workspaces/{}", encode(&id)))?));
        }
        WorkspacesCommand::Create { id, fields } => {
            check(&id)?;
            let mut map = fields.to_map()?;
            map.insert("id".into(), Value::String(id));
            print(context, data(&client.post("/workspaces", &json!({"workspace": map}))?));
        }
        WorkspacesCommand::Update { id, fields } => {
            check(&id)?;
            let map = fields.to_map()?;
            if map.is_empty() {
                return Err(Failure::new("nothing to change: give --name or --ceiling"));
            }
            print(context, data(&client.put(&format!("/workspaces/{}", encode(&id)), &json!({"workspace": map}))?));
        }
        WorkspacesCommand::Link { id, user, return_url, ttl, title, logo_url } => {
            check(&id)?;
            if user.is_empty() || user.chars().count() > 128 {
                return Err(Failure::new("--user: must be 1 to 128 characters"));
            }
            if !(return_url.starts_with("https://") || return_url.starts_with("http://")) {
                return Err(Failure::new(format!("--return-url: \"{return_url}\" is not an absolute http(s) URL")));
            }
            if ttl.is_some_and(|t| !(60..=3600).contains(&t)) {
                return Err(Failure::new("--ttl: must be 60 to 3600 seconds"));
            }
            let mut body = json!({"user": user, "return_url": return_url});
            for (name, value) in [("ttl_seconds", ttl.map(Value::from)), ("title", title.map(Value::from)), ("logo_url", logo_url.map(Value::from))] {
                if let (Some(map), Some(value)) = (body.as_object_mut(), value) {
                    map.insert(name.into(), value);
                }
            }
            let answer = client.post(&format!("/workspaces/{}/portal_sessions", encode(&id)), &body)?;
            match context.format {
                Format::Json => output::json(data(&answer)),
                Format::Human => println!("{}", data(&answer).get("url").and_then(Value::as_str).unwrap_or_default()),
            }
        }
        WorkspacesCommand::Delete { id } => {
            check(&id)?;
            let answer = client.delete(&format!("/workspaces/{}", encode(&id)))?;
            match context.format {
                Format::Json => output::json(data(&answer)),
                Format::Human => println!("deleted workspace {id}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
