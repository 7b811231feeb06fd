//! `GET /api_keys/{id}/usage`: a key's request counts per hour or day, by outcome.

use serde_json::Value;
use worker::Request;

use super::{load, query_pairs, Answer, Call, Refusal};
use crate::core::usage::UsageRange;
use crate::edge::reply;

pub(super) fn usage(req: &Request, call: &Call<'_>, id: &str) -> Answer {
    let range = UsageRange::parse(&query_pairs(req)?, call.now).map_err(|e| Refusal::bad(e.0))?;
    let record = load(call, id)?;
    let rows = crate::edge::usage::counts(call.ledger.sql(), &record.id, &range)?;
    let mut data = range.buckets(&rows);
    if let Some(map) = data.as_object_mut() {
        map.insert("key_id".into(), Value::String(record.id.clone()));
    }
    Ok(reply::success(200, data)?)
}
