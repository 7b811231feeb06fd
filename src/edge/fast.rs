//! The gate's fast path: the common gated request answered with one synchronous call from the
//! entry module (src/entry.mjs), on plain values, from the isolate's memory.
//!
//! The entry calls [`gate_check`] with the request's method, path, query, credential headers,
//! client address and the time, and gets one number back (the `ANSWER_*` kind, flags and a
//! status). Whatever the fast path does not handle it hands to the complete path (`gate::handle`
//! through the worker crate's `fetch`), which is the reference: the fast path must give the same
//! answer, byte for byte, and forward the same request. It uses the same cache, policy and feed
//! state (`store`, `cache`), so both paths see one memory.
//!
//! Handled here: the credential in `Authorization` (Bearer or Basic) or `X-API-Key`, a key in the
//! cache or read from KV by the entry ([`gate_load`]), a policy in memory, no method override, a
//! body the entry read for an inspected route. Everything else (query credentials, overrides,
//! `Origin`, a record the feed says is newer than KV, a new or idle isolate, a stale store, keys
//! that [`gate::fast_path_eligible`] refuses, any error) is answered by the complete path.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::wasm_bindgen_futures::future_to_promise;
use worker::Env;

use super::gate;
use super::tokens;
use super::reply;
use super::store::{self, Held, SyncPlan, SyncSettings};
use super::cache;
use crate::core::credential::{find_credential, CredentialSource};
use crate::core::decision::decide_found;
use crate::core::digest::key_digest;
use crate::core::key::parse_key;
use crate::core::token::bearer_token;
use crate::core::method::{resolve_override, OVERRIDE_HEADERS};
use crate::core::policy::{PathError, RouteMatch, RoutePolicy};
use crate::core::{CompiledKey, Code, GateRequest};

/// The answer's kind, in its low 3 bits.
const KIND_MASK: u32 = 7;
const ANSWER_COMPLETE: u32 = 0;
const ANSWER_FORWARD: u32 = 1;
const ANSWER_DENY: u32 = 2;
const ANSWER_NEED_RECORD: u32 = 3;
const ANSWER_NEED_BODY: u32 = 4;
/// [`gate_body`] no longer holds the check: call [`gate_check`] again, with the body.
const ANSWER_AGAIN: u32 = 5;
/// Flags: run [`gate_background`] in `waitUntil`; run [`gate_unknown_read`] in `waitUntil`;
/// remove `Authorization` / `X-API-Key` before forwarding (the credential came there).
const FLAG_BACKGROUND: u32 = 1 << 4;
const FLAG_UNKNOWN_READ: u32 = 1 << 5;
const FLAG_STRIP_AUTHORIZATION: u32 = 1 << 6;
const FLAG_STRIP_X_API_KEY: u32 = 1 << 7;
/// `gate_check`'s `body_error` and `gate_failed`'s reasons.
const BODY_UNREADABLE: u32 = 2;
const BODY_TOO_LARGE: u32 = 3;
/// A forward's slot (bits 8 to 15), and whether the entry must fetch the slot's headers anew
/// with [`gate_text`] (bit 16); the same for an [`ANSWER_NEED_RECORD`]'s digest ([`gate_digest`]).
const SLOT_SHIFT: u32 = 8;
const FLAG_REFRESH: u32 = 1 << 16;
/// On a forward: the credential is a token; set `X-Keyward-Token-Id` to [`gate_token_id`].
const FLAG_TOKEN: u32 = 1 << 17;
/// On a refusal (whose status takes bits 16 and up): fetch the slot's body anew.
const FLAG_REFRESH_REFUSAL: u32 = 1 << 3;
/// The HTTP status of a refusal, from bit 16.
const STATUS_SHIFT: u32 = 16;
/// An [`ANSWER_NEED_BODY`]'s ticket for [`gate_body`], from bit 8 (24 bits; 0: none).
const TICKET_SHIFT: u32 = 8;
const TICKET_MASK: u32 = 0x00ff_ffff;
/// Checks waiting for their body at once; a 65th makes the oldest start again (`ANSWER_AGAIN`).
const WAITING_SLOTS: usize = 64;

/// Forward and refusal slots: one per value of a byte.
const SLOTS: usize = 256;

/// Methods the worker crate knows (`worker::Method::all()`); others go to the complete path,
/// which refuses them.
const KNOWN_METHODS: [&str; 10] = ["HEAD", "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "REPORT"];

/// What the last call left for the entry to fetch with a second, synchronous call.
#[derive(Default)]
struct Last {
    /// The digest a [`ANSWER_NEED_RECORD`] asks for, and its slot.
    digest: String,
    digest_slot: u8,
    /// A refusal's JSON body, or a forward's `id\ntype[\nprofile]`.
    text: String,
    retry_after: Option<u32>,
    /// A forward's `X-Keyward-Token-Id` ([`FLAG_TOKEN`]).
    token_id: String,
}

thread_local! {
    static LAST: RefCell<Last> = RefCell::new(Last::default());
    /// Requests the fast path answered (forwarded or refused), for the debug stats.
    static ANSWERED: Cell<u64> = const { Cell::new(0) };
    /// The headers text (`id\ntype[\nprofile]`) each forward slot holds for the entry (see `check`).
    /// (A slot is a byte: plain vectors of 256, indexed, with no hashing on the way.)
    static FORWARD: RefCell<Vec<String>> = RefCell::new(vec![String::new(); SLOTS]);
    /// Which refusal (code and message) each refusal slot holds for the entry (see `deny`).
    static REFUSALS: RefCell<Vec<Option<(Code, String)>>> = RefCell::new(vec![None; SLOTS]);
    /// The digest each record slot holds for the entry: the last one it fetched with
    /// [`gate_digest`] for that slot (see [`need_record`]).
    static DIGESTS: RefCell<Vec<String>> = RefCell::new(vec![String::new(); SLOTS]);
    /// The record [`gate_load`] compiled, by digest and the request's `now`: the checks of this
    /// request use it even when the cache keeps nothing (`CACHE_TTL_SECONDS=0`), as `Store::key` does.
    /// Kept until the next read, which then finds the record compiled if its bytes are the same
    /// (`store::compile_read`).
    static LOADED: RefCell<Option<(String, i64, Rc<CompiledKey>)>> = const { RefCell::new(None) };
    /// Checks that found their key and route and wait for the body (see [`Waiting`]), by ticket.
    static WAITING: RefCell<Vec<Option<Waiting>>> = RefCell::new((0..WAITING_SLOTS).map(|_| None).collect());
    static LAST_TICKET: Cell<u32> = const { Cell::new(0) };
}

/// A check that stopped at [`ANSWER_NEED_BODY`]: what [`gate_body`] needs to finish it once the
/// body is read, without finding the credential, the key and the route again.
struct Waiting {
    ticket: u32,
    now: i64,
    key: Rc<CompiledKey>,
    digest: String,
    policy: Rc<RoutePolicy>,
    rule: usize,
    params: Vec<(String, String)>,
    method: String,
    path: String,
    client_ip: Option<String>,
    basic_workspace: Option<String>,
    strip: u32,
    /// The token's `jti` when the credential is a token.
    token_id: Option<String>,
}

/// How many requests the fast path answered itself (`GET /_keyward/debug/stats`, tests only).
pub fn answered() -> u64 {
    ANSWERED.with(Cell::get)
}

fn count(answer: u32) -> u32 {
    if matches!(answer & KIND_MASK, ANSWER_FORWARD | ANSWER_DENY) {
        ANSWERED.with(|n| n.set(n.get() + 1));
    }
    answer
}

/// A refusal. Its body is kept by the entry per slot (bits 8 to 15, like a forward's headers):
/// the same code and message again (the common case: a client retrying) is not built nor sent
/// again; [`FLAG_REFRESH_REFUSAL`] says the entry must fetch the body with [`gate_text`].
fn deny(code: Code, message: &str, flags: u32) -> u32 {
    let slot = refusal_slot(code, message);
    let current = REFUSALS.with(|r| {
        let mut r = r.borrow_mut();
        let Some(held) = r.get_mut(usize::from(slot)) else { return false };
        match held {
            Some((held, text)) if *held == code && text == message => true,
            _ => {
                *held = Some((code, message.to_string()));
                false
            }
        }
    });
    let answer = ANSWER_DENY | flags | (u32::from(slot) << SLOT_SHIFT) | (u32::from(code.status()) << STATUS_SHIFT);
    if current {
        return answer;
    }
    LAST.with(|l| l.borrow_mut().text = reply::error_text(code.as_str(), message));
    answer | FLAG_REFRESH_REFUSAL
}

/// The slot of a refusal: by its code and message.
fn refusal_slot(code: Code, message: &str) -> u8 {
    fnv_byte(code.as_str().bytes().chain(message.bytes()))
}

/// Reads the vars the fast path needs; returns `ORIGIN_TIMEOUT_MS`. Called once per isolate.
#[wasm_bindgen]
pub fn gate_configure(env: Env) -> u32 {
    store::configure(&env);
    tokens::configure(&env);
    gate::origin_timeout_ms(&env)
}

/// What the entry reads once, as JSON: the headers of keyward's JSON answers (`headers`, and
/// `unauthorized` for a 401) and the method override headers (`override_headers`: a request with
/// one goes to the complete path).
#[wasm_bindgen]
pub fn gate_constants() -> String {
    let mut value = reply::api_headers_json();
    if let Some(map) = value.as_object_mut() {
        map.insert("override_headers".into(), serde_json::Value::from(OVERRIDE_HEADERS.to_vec()));
    }
    value.to_string()
}

/// The check. `request` holds the request's facts on one line each (one string crosses into wasm,
/// not six): method, path, then query, `Authorization`, `X-API-Key` and `CF-Connecting-IP`, each
/// empty when absent and `=` + its value when present (none of them can hold a line feed).
/// `body`: the body the entry read after an [`ANSWER_NEED_BODY`], or `body_error` why it could
/// not ([`BODY_UNREADABLE`], [`BODY_TOO_LARGE`]; 0: none).
#[wasm_bindgen]
pub fn gate_check(request: &str, body: Option<Vec<u8>>, body_error: u32, now: f64) -> u32 {
    count(check(&Facts::parse(request), body.as_deref(), body_error, millis(now), None))
}

/// After [`ANSWER_NEED_BODY`]: the body the entry read (or `body_error` why it could not, as for
/// [`gate_check`]), for the check holding `ticket` (the answer's bits 8 and up), which it finishes.
/// [`ANSWER_AGAIN`]: no check holds that ticket any more; call [`gate_check`] with the body.
#[wasm_bindgen]
pub fn gate_body(ticket: u32, body: Option<Vec<u8>>, body_error: u32) -> u32 {
    let waiting = WAITING.with(|w| {
        let mut w = w.borrow_mut();
        let slot = w.get_mut(ticket as usize % WAITING_SLOTS)?;
        if slot.as_ref().is_some_and(|held| held.ticket == ticket) {
            slot.take()
        } else {
            None
        }
    });
    let Some(w) = waiting else { return ANSWER_AGAIN };
    if body_error != 0 {
        return count(refuse_body(&w.key, body_error, 0, w.now));
    }
    let Some(rule) = w.policy.rules().get(w.rule) else { return ANSWER_AGAIN };
    let request = GateRequest {
        method: &w.method,
        path: &w.path,
        client_ip: w.client_ip.as_deref(),
        body: body.as_deref(),
        basic_workspace: w.basic_workspace.as_deref(),
        origin: None,
        referer: None,
    };
    count(finish(&w.key, &w.digest, Ok(Some(RouteMatch { rule, params: w.params, roles: w.policy.roles() })), &request, (w.strip, w.token_id.as_deref()), 0, w.now))
}

/// `Date.now()`: an integer of ms, well inside i64.
#[allow(clippy::cast_possible_truncation)]
fn millis(now: f64) -> i64 {
    now as i64
}

struct Facts<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
    client_ip: Option<&'a str>,
}

impl<'a> Facts<'a> {
    /// [`gate_check`]'s one string, a line each.
    fn parse(request: &'a str) -> Facts<'a> {
        let mut lines = request.split('\n');
        let mut next = || lines.next().unwrap_or("");
        let (method, path) = (next(), next());
        let mut optional = || next().strip_prefix('=');
        let (query, authorization, x_api_key, client_ip) = (optional(), optional(), optional(), optional());
        Facts { method, path, query, authorization, x_api_key, client_ip }
    }
}

/// `digest`: the key's digest when the caller has it (the key's SHA-256 is then not taken again).
fn check(facts: &Facts<'_>, body: Option<&[u8]>, body_error: u32, now: i64, digest: Option<&str>) -> u32 {
    let Facts { method, path, query, authorization, x_api_key, client_ip } = *facts;
    if !KNOWN_METHODS.contains(&method) || path == "/_keyward" || path.starts_with("/_keyward/") {
        return ANSWER_COMPLETE;
    }
    let Some(settings) = SyncSettings::cached() else { return ANSWER_COMPLETE };
    let mut flags = match store::sync_plan(now, settings) {
        SyncPlan::Current => 0,
        SyncPlan::Background => FLAG_BACKGROUND,
        SyncPlan::Inline => return ANSWER_COMPLETE,
    };
    if store::too_stale(now, settings) {
        return ANSWER_COMPLETE;
    }
    // A token (one with a '.', which no key has) goes to the complete path (`edge::tokens`);
    // it is looked for only where a key would be refused, so keys cost nothing more.
    let credential = match find_credential(authorization, x_api_key, query) {
        Err(_) if bearer_token(authorization).is_some() => return ANSWER_COMPLETE,
        Err(e) => return deny(Code::BadRequest, &e.message, flags),
        Ok(None) => return deny(Code::MissingKey, gate::NO_KEY, flags),
        Ok(Some(c)) if c.has(CredentialSource::Query) => return ANSWER_COMPLETE,
        Ok(Some(c)) => c,
    };
    // A token alone in Bearer: checked here when the isolate holds its public key (else the
    // complete path fetches it), then found by its key's digest like a key. A token of simple
    // authentication (the customer as profile) goes to the complete path.
    let mut token = None;
    if let Err(e) = parse_key(&credential.key) {
        let Some(raw) = bearer_token(authorization) else {
            return deny(Code::MalformedKey, &gate::malformed_key(e), flags);
        };
        if credential.sources.len() != 1 {
            return ANSWER_COMPLETE;
        }
        match tokens::held_claims(raw, now) {
            None => return ANSWER_COMPLETE,
            Some(Err((code, message))) => return deny(code, &message, flags),
            Some(Ok(claims)) if claims.idt.is_some() => return ANSWER_COMPLETE,
            Some(Ok(claims)) => token = Some(claims),
        }
    }
    let digest = match &token {
        Some(claims) => claims.kwd.clone(),
        None => digest.map_or_else(|| key_digest(&credential.key), str::to_string),
    };
    let loaded = LOADED.with(|l| l.borrow().as_ref().filter(|(d, at, _)| *d == digest && *at == now).map(|(_, _, key)| key.clone()));
    let held = match loaded {
        Some(key) => store::judged(&digest, key),
        None => match store::held_key(&digest, now) {
            Some(held) => held,
            None => return ANSWER_COMPLETE,
        },
    };
    let key = match held {
        Held::Stale => return ANSWER_COMPLETE,
        Held::Miss => {
            // A token's digest is signed: no unknown-key budget for it.
            if let Some(seconds) = cache::unknown_read_retry_after(client_ip, now).filter(|_| token.is_none()) {
                LAST.with(|l| l.borrow_mut().retry_after = Some(seconds));
                return deny(Code::RateLimited, gate::TOO_MANY_UNKNOWN_KEYS, flags);
            }
            return need_record(digest, flags);
        }
        Held::Ready(None) if token.is_some() => return deny(Code::TokenInvalid, tokens::KEY_GONE, flags),
        Held::Ready(None) => return deny(Code::UnknownKey, gate::UNKNOWN_KEY, flags),
        Held::Ready(Some(key)) => key,
    };
    if !gate::fast_path_eligible(&key) {
        return ANSWER_COMPLETE;
    }
    if let Some((code, message)) = token.as_ref().and_then(|claims| tokens::judge(claims, &key)) {
        flags |= background_if(gate::settle(&key, code, now));
        return deny(code, message, flags);
    }
    let token_id = token.map(|claims| claims.jti.clone());
    let Some(policy) = store::held_policy(now) else { return ANSWER_COMPLETE };
    // The entry sends requests with an override header to the complete path; a `_method`
    // parameter is found here.
    match resolve_override(policy.method_override(), method, [None, None, None], query) {
        Err(e) => {
            flags |= background_if(gate::settle(&key, Code::BadRequest, now));
            return deny(Code::BadRequest, &e.message, flags);
        }
        Ok(Some(_)) => return ANSWER_COMPLETE,
        Ok(None) => {}
    }
    let mut strip = 0;
    if credential.has(CredentialSource::Bearer) || credential.has(CredentialSource::Basic) {
        strip |= FLAG_STRIP_AUTHORIZATION;
    }
    if credential.has(CredentialSource::Header) {
        strip |= FLAG_STRIP_X_API_KEY;
    }
    let found = policy.find(method, path);
    if body.is_none() && matches!(&found, Ok(Some(m)) if m.rule.needs_body()) {
        if body_error != 0 {
            return refuse_body(&key, body_error, flags, now);
        }
        let Ok(Some(found)) = found else { return ANSWER_NEED_BODY | flags };
        let Some(rule) = policy.rules().iter().position(|r| std::ptr::eq(r, found.rule)) else { return ANSWER_NEED_BODY | flags };
        let params = found.params;
        let ticket = LAST_TICKET.with(|t| {
            let next = (t.get() % TICKET_MASK) + 1;
            t.set(next);
            next
        });
        let waiting = Waiting {
            ticket,
            now,
            key,
            digest,
            policy,
            rule,
            params,
            method: method.to_string(),
            path: path.to_string(),
            client_ip: client_ip.map(str::to_string),
            basic_workspace: credential.workspace,
            strip,
            token_id,
        };
        WAITING.with(|w| {
            if let Some(slot) = w.borrow_mut().get_mut(ticket as usize % WAITING_SLOTS) {
                *slot = Some(waiting);
            }
        });
        return ANSWER_NEED_BODY | flags | (ticket << TICKET_SHIFT);
    }
    let request = GateRequest {
        method,
        path,
        client_ip,
        body,
        basic_workspace: credential.workspace.as_deref(),
        origin: None,
        referer: None,
    };
    finish(&key, &digest, found, &request, (strip, token_id.as_deref()), flags, now)
}

/// FNV-1a of `bytes`, folded to a byte.
fn fnv_byte(bytes: impl IntoIterator<Item = u8>) -> u8 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    hash.to_le_bytes().iter().fold(0, |a, b| a ^ b)
}

/// The refusal of a request whose inspected body could not be read (`body_error`).
fn refuse_body(key: &CompiledKey, body_error: u32, flags: u32, now: i64) -> u32 {
    let flags = flags | background_if(gate::settle(key, Code::BadRequest, now));
    let message = if body_error == BODY_UNREADABLE { gate::UNREADABLE_BODY } else { gate::TOO_LARGE_BODY };
    deny(Code::BadRequest, message, flags)
}

/// The decision on a request whose key and route are found, and the answer to the entry: a
/// refusal, or a forward (`strip`: the credential's headers to remove).
fn finish(
    key: &Rc<CompiledKey>,
    digest: &str,
    found: Result<Option<RouteMatch<'_>>, PathError>,
    request: &GateRequest<'_>,
    (strip, token_id): (u32, Option<&str>),
    mut flags: u32,
    now: i64,
) -> u32 {
    let decision = decide_found(key, found, request, now);
    let code = if decision.valid { Code::Valid } else { decision.code };
    flags |= background_if(gate::settle(key, code, now));
    if !decision.valid {
        return deny(decision.code, &decision.message, flags);
    }
    flags |= strip;
    if let Some(jti) = token_id {
        flags |= FLAG_TOKEN;
        LAST.with(|l| l.borrow_mut().token_id = jti.to_string());
    }
    // The forward's headers: the entry keeps them per slot, and fetches them only when the slot
    // holds other values than this record's (another key, or this key's record changed).
    let slot = digest_slot(digest);
    flags |= u32::from(slot) << SLOT_SHIFT;
    let record = &key.record;
    let current = FORWARD.with(|f| {
        let mut f = f.borrow_mut();
        // (Every byte has its slot: `spare` is never used, but keeps this total.)
        let mut spare = String::new();
        let held = f.get_mut(usize::from(slot)).unwrap_or(&mut spare);
        let profile = record.profile_id.as_deref();
        let mut lines = held.split('\n');
        if lines.next() == Some(record.id.as_str()) && lines.next() == Some(record.key_type.as_str()) && lines.next() == profile {
            return true;
        }
        held.clear();
        held.push_str(&record.id);
        held.push('\n');
        held.push_str(record.key_type.as_str());
        if let Some(profile) = profile {
            held.push('\n');
            held.push_str(profile);
        }
        LAST.with(|l| l.borrow_mut().text.clone_from(held));
        false
    });
    if current {
        return ANSWER_FORWARD | flags;
    }
    ANSWER_FORWARD | flags | FLAG_REFRESH
}

fn background_if(due: bool) -> u32 {
    if due {
        FLAG_BACKGROUND
    } else {
        0
    }
}

/// After [`ANSWER_NEED_RECORD`] with [`FLAG_REFRESH`]: the digest whose record the entry reads
/// from KV (`key:<digest>`), which its slot holds from now on.
#[wasm_bindgen]
pub fn gate_digest() -> String {
    let (digest, slot) = LAST.with(|l| {
        let l = l.borrow();
        (l.digest.clone(), l.digest_slot)
    });
    DIGESTS.with(|d| {
        if let Some(held) = d.borrow_mut().get_mut(usize::from(slot)) {
            held.clone_from(&digest);
        }
    });
    digest
}

/// A check that needs the key's record from KV. The entry keeps the digests it fetched per slot
/// (bits 8 to 15, the digest's first byte, like a forward's headers): a key read again (the
/// common case with a short `CACHE_TTL_SECONDS`) costs no string from wasm. [`FLAG_REFRESH`]: the
/// slot holds another digest, and the entry fetches this one with [`gate_digest`]. A slot counts
/// as held only once fetched, so an answer the entry drops leaves nothing out of step.
fn need_record(digest: String, flags: u32) -> u32 {
    let slot = digest_slot(&digest);
    let answer = ANSWER_NEED_RECORD | flags | (u32::from(slot) << SLOT_SHIFT);
    if DIGESTS.with(|d| d.borrow().get(usize::from(slot)) == Some(&digest)) {
        return answer;
    }
    LAST.with(|l| {
        let mut l = l.borrow_mut();
        l.digest = digest;
        l.digest_slot = slot;
    });
    answer | FLAG_REFRESH
}

/// A digest's slot: its first byte.
fn digest_slot(digest: &str) -> u8 {
    digest.get(..2).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(0)
}

/// A refusal's body, or a forward's `id\ntype[\nprofile]`, from the last call.
#[wasm_bindgen]
pub fn gate_text() -> String {
    LAST.with(|l| l.borrow().text.clone())
}

/// After a forward with [`FLAG_TOKEN`]: the token's `jti`, for `X-Keyward-Token-Id`.
#[wasm_bindgen]
pub fn gate_token_id() -> String {
    LAST.with(|l| l.borrow().token_id.clone())
}

/// The `Retry-After` seconds of the last 429, if any (taken: it is reported once).
#[wasm_bindgen]
pub fn gate_retry_after() -> Option<u32> {
    LAST.with(|l| l.borrow_mut().retry_after.take())
}

/// After [`ANSWER_NEED_RECORD`]: the record the entry read from KV for `digest` (its JSON text,
/// as the complete path reads it too; `None`: no record), and the check of the request (the same
/// `request` and `now` as [`gate_check`]'s) with that record: the same answers as [`gate_check`],
/// so the entry calls once per KV read.
#[wasm_bindgen]
pub fn gate_load(request: &str, digest: &str, record: Option<String>, now: f64) -> u32 {
    let now = millis(now);
    let facts = Facts::parse(request);
    count(match store::loaded(digest, record.as_deref(), now) {
        Err(_) => deny(Code::StoreUnavailable, "the key store is unavailable", 0),
        // A token whose key is gone (its digest is signed: not an unknown key to charge for).
        Ok(Held::Ready(None)) if bearer_token(facts.authorization).is_some() => deny(Code::TokenInvalid, tokens::KEY_GONE, 0),
        Ok(Held::Ready(None)) => {
            cache::charge_unknown_read(facts.client_ip, now);
            deny(Code::UnknownKey, gate::UNKNOWN_KEY, FLAG_UNKNOWN_READ)
        }
        Ok(Held::Ready(Some(key))) => {
            LOADED.with(|l| *l.borrow_mut() = Some((digest.to_string(), now, key)));
            check(&facts, None, 0, now, Some(digest))
        }
        Ok(Held::Stale | Held::Miss) => ANSWER_COMPLETE,
    })
}

/// The refusal the entry makes after the check: `reason` 0, the origin could not be reached;
/// 1, it did not answer within `timeout_ms`; 2, the inspected body could not be read; 3, it is
/// larger than the bound (the same answers as `gate.rs`).
#[wasm_bindgen]
pub fn gate_failed(reason: u32, timeout_ms: u32) -> u32 {
    match reason {
        0 => deny(Code::OriginUnavailable, "the origin could not be reached", 0),
        1 => deny(Code::OriginTimeout, &format!("the origin did not answer within {timeout_ms} ms"), 0),
        BODY_UNREADABLE => deny(Code::BadRequest, gate::UNREADABLE_BODY, 0),
        BODY_TOO_LARGE => deny(Code::BadRequest, gate::TOO_LARGE_BODY, 0),
        _ => deny(Code::BadRequest, "the request could not be handled", 0),
    }
}

/// The work [`FLAG_BACKGROUND`] asks for, run by the entry in `waitUntil`.
#[wasm_bindgen]
pub fn gate_background(env: Env) -> js_sys::Promise {
    future_to_promise(async move {
        gate::background(&env).await;
        Ok(JsValue::UNDEFINED)
    })
}

/// The location-wide count of a KV read that found no key ([`FLAG_UNKNOWN_READ`]), in `waitUntil`.
#[wasm_bindgen]
pub fn gate_unknown_read(env: Env, client_ip: Option<String>) -> js_sys::Promise {
    future_to_promise(async move {
        gate::count_unknown_read(&env, client_ip.as_deref()).await;
        Ok(JsValue::UNDEFINED)
    })
}
