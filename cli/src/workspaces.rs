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
