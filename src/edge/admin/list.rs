//! `GET /api_keys`: listed keys by id, filtered by name, paged by number or by a keyset cursor, all
//! from indexed queries on the source of truth.

use serde_json::{json, Map, Value};
use worker::Request;

use super::{per_page, query_pairs, Answer, Call, Refusal};
use crate::core::page_token::{decode as decode_token, encode as encode_token};
use crate::edge::ledger::ListFilter;
use crate::edge::reply;

const MAX_PER_PAGE: usize = 500;
const DEFAULT_PER_PAGE: usize = 100;

pub(super) async fn list(req: &Request, call: &Call<'_>) -> Answer {
    let mut filter = ListFilter { workspace: call.scope.clone(), now: call.now, ..ListFilter::default() };
    let mut page: Option<usize> = None;
    let mut size = DEFAULT_PER_PAGE;
    let mut token: Option<String> = None;
    for (field, value) in query_pairs(req)? {
        match field.as_str() {
            "name" => filter.name = Some(value.to_lowercase()),
            "name_contains" => filter.name_contains = Some(value.to_lowercase()),
            "page" => {
                page = Some(
                    value
                        .parse::<usize>()
                        .ok()
                        .filter(|p| *p <= 1_000_000)
                        .ok_or_else(|| Refusal::bad("page: must be an integer from 0"))?,
                )
            }
            "per_page" => size = per_page(&value, MAX_PER_PAGE)?,
            "page_token" => token = Some(value),
            "workspace" => filter.workspace = Some(super::list_workspace(call, value)?),
            "status" => filter.status = Some(super::list_status(&value)?),
            other => return Err(Refusal::bad(format!("{other}: is not a list parameter"))),
        }
    }
    if page.is_some() && token.is_some() {
        return Err(Refusal::bad("page_token: cannot be combined with page"));
    }
    let after = match &token {
        None => None,
        Some(t) => Some(decode_token(t).ok_or_else(|| Refusal::bad("page_token: is not a token this API gave out"))?),
    };
    let (start, records, total) = match &after {
        // A keyset cursor: the page starts after the last id of the previous one, so pages never
        // overlap or skip, whatever is added or removed between calls.
        Some(after) => {
            let (records, total) = call.ledger.list(&filter, Some(after), 0, size)?;
            (call.ledger.position(&filter, after)?, records, total)
        }
        None => {
            let start = page.unwrap_or(0).saturating_mul(size);
            let (records, total) = call.ledger.list(&filter, None, start, size)?;
            (start, records, total)
        }
    };
    let end = start.saturating_add(records.len());
    let next = (end < total).then(|| records.last().map(|r| encode_token(&r.id))).flatten();
    // Keys with credits show their live count, read from their Limiters at once.
    let views: Vec<Value> = super::keys::live_views(call, &records).await?;
    let mut extra = Map::new();
    // The page asked for, even past the last one (an empty page, never moved to the last); for
    // a page_token (never given with page), the page the token's position falls in.
    extra.insert("page".into(), json!(page.unwrap_or(start / size)));
    extra.insert("per_page".into(), json!(size));
    extra.insert("num_records".into(), json!(total));
    extra.insert("num_pages".into(), json!(total.div_ceil(size)));
    extra.insert("page_token".into(), token.map_or(Value::Null, Value::String));
    extra.insert("next_page_token".into(), next.map_or(Value::Null, Value::String));
    Ok(reply::success_with(200, Value::Array(views), extra)?)
}
