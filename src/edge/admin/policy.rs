//! `GET` and `PUT /policy`: the route policy, stored in the source of truth.

use serde_json::{Map, Value};
use worker::{Env, Request};

use super::{no_query, read_json, Answer, Call, Refusal};
use crate::core::RoutePolicy;
use crate::edge::reply;
use crate::edge::store::StoreError;

/// The policy document in force and where it comes from (`stored` or `default`).
pub(super) fn current(env: &Env, call: &Call<'_>) -> std::result::Result<(String, &'static str), Refusal> {
    Ok(match call.ledger.policy()? {
        Some((doc, _)) => (doc, "stored"),
        None => (crate::edge::store::default_policy(env), "default"),
    })
}

pub(super) fn get(env: &Env, call: &Call<'_>) -> Answer {
    let (text, source) = current(env, call)?;
    let doc: Value = serde_json::from_str(&text).map_err(|_| Refusal::from(StoreError("bad policy".into())))?;
    let mut extra = Map::new();
    extra.insert("source".into(), Value::String(source.into()));
    Ok(reply::success_with(200, doc, extra)?)
}

pub(super) async fn put(req: &mut Request, call: &Call<'_>) -> Answer {
    no_query(req)?;
    let body = read_json(req).await?;
    let policy = RoutePolicy::from_value(&body).map_err(Refusal::field)?;
    let doc = serde_json::to_value(policy.doc()).map_err(|e| Refusal::bad(e.to_string()))?;
    call.ledger.put_policy(&doc.to_string(), &call.actor, call.now)?;
    let mut extra = Map::new();
    extra.insert("source".into(), Value::String("stored".into()));
    Ok(reply::success_with(200, doc, extra)?)
}
