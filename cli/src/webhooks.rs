//! `webhooks`: the endpoints keyward tells of key changes (`/webhooks`), their delivery log and
//! redelivery. The secret is printed once, by `create`.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Map, Value};

use crate::client::{data, encode};
use crate::failure::Failure;
use crate::output::{self, Format};
use crate::Context;

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// List the endpoints
    List,
    /// Register an endpoint; prints its whsec_ secret, this once
    Create {
        /// Where events are POSTed (http:// or https://); `--url` is keyward's own URL
        #[arg(long, value_name = "URL")]
        endpoint: String,
        /// Events to send (key.created, key.updated, key.expired, key.revoked, key.deleted, key.leaked); repeat or separate with commas
        #[arg(long = "event", value_delimiter = ',', required = true)]
        events: Vec<String>,
    },
    /// Show one endpoint
    Get { id: String },
    /// Change an endpoint's URL and/or events
    Update {
        id: String,
        /// The endpoint's new URL
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        #[arg(long = "event", value_delimiter = ',')]
        events: Vec<String>,
    },
    /// Remove an endpoint and its pending events
    Delete { id: String },
    /// The endpoint's events, newest first, with each attempt
    Deliveries {
        id: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Send an event again now (same webhook-id)
    Redeliver { id: String, msg_id: String },
}

const COLUMNS: &[&str] = &["id", "url", "events", "created_at"];
const DELIVERY_COLUMNS: &[&str] = &["id", "type", "key_id", "state", "attempt_count", "last_status", "next_attempt_at"];

fn print_one(context: &Context, value: &Value) {
    match context.format {
        Format::Json => output::json(value),
        Format::Human => print!("{}", output::fields(value)),
    }
}

/// A delivery with its last attempt's status, for the table.
fn delivery_row(d: &Value) -> Value {
    let mut row = d.clone();
    let last = d.get("attempts").and_then(Value::as_array).and_then(|a| a.last()).map(|a| {
        a.get("status").filter(|s| !s.is_null()).cloned().unwrap_or_else(|| a.get("error").cloned().unwrap_or(Value::Null))
    });
    if let Some(map) = row.as_object_mut() {
        map.insert("last_status".into(), last.unwrap_or(Value::Null));
    }
    row
}

pub fn run(context: &Context, command: WebhooksCommand) -> Result<ExitCode, Failure> {
    let client = context.client()?;
    match command {
        WebhooksCommand::List => {
            let answer = client.get("/webhooks")?;
            let rows = data(&answer).as_array().cloned().unwrap_or_default();
            match context.format {
                Format::Json => output::json(&Value::Array(rows)),
                Format::Human => print!("{}", output::table(&rows, COLUMNS)),
            }
        }
        WebhooksCommand::Create { endpoint, events } => {
            let answer = client.post("/webhooks", &json!({"webhook": {"url": endpoint, "events": events}}))?;
            print_one(context, data(&answer));
            if context.format == Format::Human {
                eprintln!("keep the secret: it is not shown again");
            }
        }
        WebhooksCommand::Get { id } => print_one(context, data(&client.get(&format!("/webhooks/{}", encode(&id)))?)),
        WebhooksCommand::Update { id, endpoint, events } => {
            let mut settings = Map::new();
            if let Some(url) = endpoint {
                settings.insert("url".into(), Value::String(url));
            }
            if !events.is_empty() {
                settings.insert("events".into(), json!(events));
            }
            if settings.is_empty() {
                return Err(Failure::new("nothing to change: give --endpoint and/or --event"));
            }
            let answer = client.put(&format!("/webhooks/{}", encode(&id)), &json!({"webhook": settings}))?;
            print_one(context, data(&answer));
        }
        WebhooksCommand::Delete { id } => {
            client.delete(&format!("/webhooks/{}", encode(&id)))?;
            match context.format {
                Format::Json => output::json(&json!({"id": id, "deleted": true})),
                Format::Human => println!("deleted {id}"),
            }
        }
        WebhooksCommand::Deliveries { id, limit } => {
            let per_page = limit.clamp(1, 500);
            let answer = client.get(&format!("/webhooks/{}/deliveries?per_page={per_page}", encode(&id)))?;
            let rows = data(&answer).as_array().cloned().unwrap_or_default();
            match context.format {
                Format::Json => output::json(&Value::Array(rows)),
                Format::Human => {
                    let rows: Vec<Value> = rows.iter().map(delivery_row).collect();
                    print!("{}", output::table(&rows, DELIVERY_COLUMNS));
                }
            }
        }
        WebhooksCommand::Redeliver { id, msg_id } => {
            let answer = client.post(&format!("/webhooks/{}/deliveries/{}/redeliver", encode(&id), encode(&msg_id)), &json!({}))?;
            print_one(context, data(&answer));
        }
    }
    Ok(ExitCode::SUCCESS)
}
