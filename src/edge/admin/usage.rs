//! `GET /api_keys/{id}/usage`: a key's request counts per hour or day, by outcome.

use serde_json::Value;
use worker::Request;

use super::{load, query_pairs, Answer, Call, Refusal};
use crate::core::usage::UsageRange;
use crate::edge::reply;

pub(super) fn usage(req: &Request, call: &Call<'_>, id: &str) -> Answer {
    let range = range(req, call)?;
    let record = load(call, id)?;
    let rows = crate::edge::usage::counts(call.ledger.sql(), &record.id, &range)?;
    answer(&range, &rows, "key_id", id)
}

/// The range a usage call asks for (read first, so that a bad parameter is a 400 whatever else
/// is wrong).
pub(super) fn range(req: &Request, call: &Call<'_>) -> std::result::Result<UsageRange, Refusal> {
    UsageRange::parse(&query_pairs(req)?, call.now).map_err(|e| Refusal::bad(e.0))
}

/// The usage answer of counted `rows`, naming what it counts (`field: value`).
pub(super) fn answer(range: &UsageRange, rows: &[(i64, String, i64)], field: &str, value: &str) -> Answer {
    let mut data = range.buckets(rows);
    if let Some(map) = data.as_object_mut() {
        map.insert(field.into(), Value::String(value.to_string()));
    }
    Ok(reply::success(200, data)?)
}
