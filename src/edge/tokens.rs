//! Tokens at the edge (contract section 15): the key exchanged for a short-lived signed token
//! (`POST /_keyward/v1/auth/token`, `/auth/refresh`), the public keys (`/_keyward/jwks.json`),
//! the gate's check of `Authorization: Bearer <token>`, and, inside the control plane, the
//! signing keys (SQLite), signing, rotation and `revoke_tokens`.
//!
//! The private keys never leave the control plane: it signs. The gate verifies with the public
//! keys, held in the isolate and fetched again only for a `kid` it does not know (at most once a
//! second) or after [`KEYS_MAX_AGE_MS`]; a token it verified once is remembered by its SHA-256, so
//! a warm token costs a hash and a lookup. Then the token's key decides, found by its digest (the
//! private claim `kwd`) exactly as the key itself is found: the same cache, KV read and change
//! feed, so the key's revocation, expiry or deletion ends its tokens within `SYNC_INTERVAL_MS`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use worker::{Env, Method, Request, Response, Result, SqlStorage, SqlStorageValue};

use super::admin::{authorize_call_in, Refusal};
use super::ledger::Ledger;
use super::reply;
use super::store::{self, Store};
use crate::core::cors::{self, Preflight};
use crate::core::credential::find_credential;
use crate::core::decision::decide_permission;
use crate::core::digest::key_digest;
use crate::core::key::parse_key;
use crate::core::record::{CompiledKey, KeyRecord, KeyStatus};
use crate::core::time::format_rfc3339;
use crate::core::token::{self, Claims, PublicKey, TokenError};
use crate::core::{Code, GateRequest};

/// The issuer when `TOKEN_ISSUER` is not set.
const DEFAULT_ISSUER: &str = "keyward";
/// The isolate's public keys are fetched again after this long, even when every `kid` is known.
const KEYS_MAX_AGE_MS: i64 = 300_000;
/// A `kid` the isolate does not know makes it fetch the keys again, at most this often.
const KEYS_REFETCH_MS: i64 = 1000;
/// Tokens remembered as verified; past it the memory starts again.
const VERIFIED_MAX: usize = 4096;
/// Largest body of an `/auth/...` call.
const MAX_AUTH_BODY: usize = 16 * 1024;
/// How long a JWKS answer may be cached (an origin's JOSE library fetches again for a new `kid`).
const JWKS_CACHE_CONTROL: &str = "public, max-age=60";
/// The Rate Limiting binding that counts logins per key and location (`[[ratelimits]]`).
const LOGIN_LIMITER: &str = "LOGIN_LIMITER";
/// Its period in wrangler.toml (`simple = { limit = ..., period = 60 }`): the `Retry-After` of a
/// refused login.
const LOGIN_LIMIT_PERIOD_SECONDS: u32 = 60;

#[derive(Default)]
struct KeySet {
    keys: Vec<PublicKey>,
    fetched_ms: Option<i64>,
    attempt_ms: i64,
}

thread_local! {
    static KEYS: RefCell<KeySet> = RefCell::new(KeySet::default());
    static VERIFIED: RefCell<HashMap<[u8; 32], Rc<Claims>>> = RefCell::new(HashMap::new());
    /// Tests only (`/_keyward/debug/token-clock`, with `KEYWARD_DEBUG`): added to the time tokens
    /// are checked at, so that a test sees a token expire without waiting for it.
    static CLOCK_OFFSET_MS: Cell<i64> = const { Cell::new(0) };
    static ISSUER: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// `TOKEN_ISSUER` (default `keyward`), read once per isolate: vars do not change while it lives.
fn issuer(env: &Env) -> String {
    if let Some(held) = ISSUER.with(|i| i.borrow().clone()) {
        return held;
    }
    let value = env.var("TOKEN_ISSUER").map(|v| v.to_string()).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| DEFAULT_ISSUER.into());
    ISSUER.with(|i| *i.borrow_mut() = Some(value.clone()));
    value
}

/// Reads the vars the fast path needs (it has no `env`): the issuer.
pub fn configure(env: &Env) {
    issuer(env);
}

/// The fast path's [`claims`], without I/O: `None` when only the complete path can answer (the
/// isolate does not hold the token's public key, or has not read its vars yet).
pub fn held_claims(token: &str, now: i64) -> Option<std::result::Result<Rc<Claims>, (Code, String)>> {
    let at = token_now(now);
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if let Some(claims) = VERIFIED.with(|v| v.borrow().get(&hash).cloned()) {
        if at >= claims.exp.saturating_mul(1000) {
            return Some(Err((Code::TokenExpired, "the token has expired".into())));
        }
        return Some(Ok(claims));
    }
    let issuer = ISSUER.with(|i| i.borrow().clone())?;
    let kid = match token::kid_of(token) {
        Ok(kid) => kid,
        Err(e) => return Some(Err((e.code, e.message))),
    };
    let keys = KEYS.with(|k| {
        let k = k.borrow();
        let fresh = k.fetched_ms.is_some_and(|at| now.saturating_sub(at) <= KEYS_MAX_AGE_MS);
        (fresh && k.keys.iter().any(|key| key.kid == kid)).then(|| k.keys.clone())
    })?;
    Some(match token::verify(token, &keys, &issuer, at) {
        Err(e) => Err((e.code, e.message)),
        Ok(claims) => {
            let claims = Rc::new(claims);
            remember_verified(hash, claims.clone());
            Ok(claims)
        }
    })
}

fn remember_verified(hash: [u8; 32], claims: Rc<Claims>) {
    VERIFIED.with(|v| {
        let mut v = v.borrow_mut();
        if v.len() >= VERIFIED_MAX {
            v.clear();
        }
        v.insert(hash, claims);
    });
}

/// Sets the tokens' test clock offset (`offset_ms`), tests only.
pub fn set_clock_offset(offset_ms: i64) {
    CLOCK_OFFSET_MS.with(|c| c.set(offset_ms));
}

fn token_now(now: i64) -> i64 {
    now.saturating_add(CLOCK_OFFSET_MS.with(Cell::get))
}

/// Why a token is refused at the gate: a token code with its message, or the store failed.
pub enum Refused {
    Token(Code, String),
    Store,
}

impl From<TokenError> for Refused {
    fn from(e: TokenError) -> Self {
        Refused::Token(e.code, e.message)
    }
}

/// The claims of a token the gate accepts the signature, issuer and times of. The key is not
/// judged here ([`judge`]). `x_api_key` / `query`: a key beside a token is refused.
pub async fn claims(env: &Env, token: &str, x_api_key: Option<&str>, query: Option<&str>, now: i64) -> std::result::Result<Rc<Claims>, Refused> {
    if let Some((code, message)) = token::beside_a_key(x_api_key, query) {
        return Err(Refused::Token(code, message.into()));
    }
    let at = token_now(now);
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if let Some(claims) = VERIFIED.with(|v| v.borrow().get(&hash).cloned()) {
        if at >= claims.exp.saturating_mul(1000) {
            return Err(Refused::Token(Code::TokenExpired, "the token has expired".into()));
        }
        return Ok(claims);
    }
    let kid = token::kid_of(token)?;
    let keys = public_keys(env, &kid, now).await?;
    let claims = Rc::new(token::verify(token, &keys, &issuer(env), at)?);
    remember_verified(hash, claims.clone());
    Ok(claims)
}

/// The refusal of a token whose key was found: the key is not the token's (`sub`), or the key's
/// `revoke_tokens` came after the token was issued. `None`: the key's own rules decide.
pub fn judge(claims: &Claims, key: &CompiledKey) -> Option<(Code, &'static str)> {
    if key.record.id != claims.sub {
        return Some((Code::TokenInvalid, "the token is not valid: its key is not the one it names"));
    }
    if claims.idt.is_some() && !key.record.simple_auth {
        return Some((Code::TokenInvalid, "the token is not valid: its key no longer has simple_auth"));
    }
    if token::revoked_by_key(claims.iat_ms, key.record.tokens_not_before) {
        return Some((Code::TokenInvalid, "the token was revoked (its key's tokens issued before revoke_tokens are refused)"));
    }
    None
}

/// The key a token decides with: the key itself, or for a simple-authentication token the key
/// with the customer as its profile (so the profile rules and `X-Keyward-Profile-Id` are theirs).
pub fn as_token_key(claims: &Claims, key: Rc<CompiledKey>) -> Rc<CompiledKey> {
    if claims.idt.is_none() || claims.profile == key.record.profile_id {
        return key;
    }
    let mut customer = (*key).clone();
    customer.record.profile_id.clone_from(&claims.profile);
    Rc::new(customer)
}

/// A token's claims as the control plane sees them (`POST /verify`): checked against the keys it
/// publishes, with this deployment's issuer, at the tokens' clock. The key is not judged here.
pub fn control_claims(ledger: &Ledger, env: &Env, token: &str, now: i64) -> std::result::Result<Claims, (Code, String)> {
    let keys = published(ledger.sql(), now).map_err(|Refusal(_, _, message)| (Code::StoreUnavailable, message))?;
    let keys: Vec<PublicKey> = keys.iter().filter_map(|k| STANDARD.decode(&k.public).ok().and_then(|p| PublicKey::from_bytes(&k.kid, &p))).collect();
    token::verify(token, &keys, &issuer(env), token_now(now)).map_err(|e| (e.code, e.message))
}

/// The message when a token's key has no record any more (deleted).
pub const KEY_GONE: &str = "the token is not valid: its key no longer exists";

/// The isolate's public keys, fetched from the control plane when `kid` is not among them (at
/// most once a [`KEYS_REFETCH_MS`]) or they are older than [`KEYS_MAX_AGE_MS`].
async fn public_keys(env: &Env, kid: &str, now: i64) -> std::result::Result<Vec<PublicKey>, Refused> {
    let (keys, due) = KEYS.with(|k| {
        let k = k.borrow();
        let known = k.keys.iter().any(|key| key.kid == kid);
        let old = k.fetched_ms.is_none_or(|at| now.saturating_sub(at) > KEYS_MAX_AGE_MS);
        let may = now.saturating_sub(k.attempt_ms) >= KEYS_REFETCH_MS || k.fetched_ms.is_none();
        (k.keys.clone(), (old || !known) && may)
    });
    if !due {
        return Ok(keys);
    }
    KEYS.with(|k| k.borrow_mut().attempt_ms = now);
    let fetched = fetch_jwks(env).await.ok_or(Refused::Store)?;
    let keys: Vec<PublicKey> = fetched.get("keys").and_then(Value::as_array).map(|a| a.iter().filter_map(PublicKey::from_jwk).collect()).unwrap_or_default();
    KEYS.with(|k| {
        let mut k = k.borrow_mut();
        k.keys = keys.clone();
        k.fetched_ms = Some(now);
    });
    Ok(keys)
}

async fn fetch_jwks(env: &Env) -> Option<Value> {
    let stub = store::control_stub(env).ok()?;
    store::remote_delay(env).await;
    let mut response = stub.fetch_with_str("https://control/_internal/jwks").await.ok()?;
    if response.status_code() != 200 {
        return None;
    }
    response.json::<Value>().await.ok()
}

/// `GET /_keyward/jwks.json`: the public keys tokens are signed with, for any JOSE library.
pub async fn jwks(method: &Method, env: &Env) -> Result<Response> {
    if !matches!(method, Method::Get | Method::Head) {
        let response = reply::error(405, "METHOD_NOT_ALLOWED", &format!("{method} is not allowed here"))?;
        response.headers().set("allow", "GET")?;
        return Ok(response);
    }
    let Some(set) = fetch_jwks(env).await else {
        return reply::error(503, "STORE_UNAVAILABLE", "the signing keys are unavailable");
    };
    let response = reply::json(200, &set)?;
    response.headers().set("cache-control", JWKS_CACHE_CONTROL)?;
    Ok(response)
}

/// `POST /_keyward/v1/auth/token` and `/auth/refresh`, answered by the Worker: the key (or the
/// token) is checked on the gate's own read path, then the control plane signs.
pub async fn auth(mut req: Request, env: &Env, rest: &str) -> Result<Response> {
    if !matches!(rest, "auth/token" | "auth/refresh" | "auth/simple") {
        return reply::error(404, "NOT_FOUND", "no such management endpoint");
    }
    // A page of another origin (a web app logging in with its profile key) is answered under the
    // route policy's `cors` settings, as the gate answers it.
    let origin = req.headers().get("origin").ok().flatten();
    let asked = req.headers().get("access-control-request-method").ok().flatten();
    if let (Method::Options, Some(origin), Some(asked)) = (req.method(), origin.as_deref(), asked.as_deref()) {
        let Some(policy) = route_policy(env).await else {
            return reply::error(503, "STORE_UNAVAILABLE", "the route policy is unavailable");
        };
        let Preflight::Answer { status, code, message, headers } = cors::preflight_endpoint(&policy, origin, asked, "POST") else {
            return reply::error(403, "ORIGIN_NOT_ALLOWED", "this preflight cannot be answered");
        };
        let response = if status == 204 { Response::empty()?.with_status(204) } else { reply::error(status, code.as_str(), &message)? };
        return with_cors_headers(response, &headers);
    }
    let response = if req.method() == Method::Post {
        match auth_answer(&mut req, env, rest).await {
            Ok(response) => response,
            Err(Refusal(status, code, message)) => {
                let response = reply::error(status, code, &message)?;
                if code == Code::RateLimited.as_str() {
                    response.headers().set("retry-after", &LOGIN_LIMIT_PERIOD_SECONDS.to_string())?;
                }
                response
            }
        }
    } else {
        let response = reply::error(405, "METHOD_NOT_ALLOWED", &format!("{} is not allowed here", req.method()))?;
        response.headers().set("allow", "POST")?;
        response
    };
    let Some(origin) = origin else { return Ok(response) };
    match route_policy(env).await {
        Some(policy) => with_cors_headers(response, &cors::response_headers(&policy, Some(&origin))),
        None => Ok(response),
    }
}

/// `GET /_keyward/v1/ping` with a token: its key's id and type and the token's id, or the
/// refusal the gate would give the token (its key's rules that need no route: status, IP, website).
pub async fn ping(req: &Request, env: &Env, token: &str, now: i64) -> Result<Response> {
    let headers = req.headers();
    let query = req.url().ok().and_then(|u| u.query().map(str::to_string));
    let x_api_key = headers.get("x-api-key").ok().flatten();
    let claims = match claims(env, token, x_api_key.as_deref(), query.as_deref(), now).await {
        Ok(c) => c,
        Err(Refused::Token(code, message)) => return reply::error(code.status(), code.as_str(), &message),
        Err(Refused::Store) => return reply::error(503, "STORE_UNAVAILABLE", "the signing keys are unavailable"),
    };
    let Ok(store) = Store::open(env) else {
        return reply::error(503, "STORE_UNAVAILABLE", "the key store is unavailable");
    };
    let key = match store.key(&claims.kwd, now).await {
        Err(_) => return reply::error(503, "STORE_UNAVAILABLE", "the key store is unavailable"),
        Ok(None) => return reply::error(401, Code::TokenInvalid.as_str(), KEY_GONE),
        Ok(Some(key)) => key,
    };
    if let Some((code, message)) = judge(&claims, &key) {
        return reply::error(code.status(), code.as_str(), message);
    }
    let key = as_token_key(&claims, key);
    let client_ip = headers.get("cf-connecting-ip").ok().flatten();
    let (origin, referer) = (headers.get("origin").ok().flatten(), headers.get("referer").ok().flatten());
    let request = GateRequest { client_ip: client_ip.as_deref(), origin: origin.as_deref(), referer: referer.as_deref(), ..GateRequest::default() };
    let decision = decide_permission(&key, None, &request, now);
    if !decision.valid {
        return reply::error(decision.code.status(), decision.code.as_str(), &decision.message);
    }
    reply::success(200, json!({"key_id": key.record.id, "type": key.record.key_type.as_str(), "token_id": claims.jti}))
}

async fn route_policy(env: &Env) -> Option<Rc<crate::core::RoutePolicy>> {
    Store::open(env).ok()?.policy(super::now_ms()).await.ok()
}

/// Sets CORS headers on one of keyward's own answers (their headers are mutable).
fn with_cors_headers(response: Response, headers: &[cors::Header]) -> Result<Response> {
    for (name, value) in headers {
        response.headers().set(name, value)?;
    }
    Ok(response)
}

type Answer = std::result::Result<Response, Refusal>;

fn denial(code: Code, message: impl Into<String>) -> Refusal {
    Refusal(code.status(), code.as_str(), message.into())
}

/// The body of an `/auth/...` call as JSON; `None` when empty.
async fn read_body(req: &mut Request) -> std::result::Result<Option<Value>, Refusal> {
    let declared = req.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_AUTH_BODY) {
        return Err(denial(Code::BadRequest, format!("body: must be at most {MAX_AUTH_BODY} bytes")));
    }
    let bytes = req.bytes().await.unwrap_or_default();
    if bytes.len() > MAX_AUTH_BODY {
        return Err(denial(Code::BadRequest, format!("body: must be at most {MAX_AUTH_BODY} bytes")));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| denial(Code::BadRequest, format!("body: is not valid JSON ({e})")))
}

/// The `ttl_seconds` of a `/auth/token` or `/auth/refresh` body (its only field): `None` when absent.
fn requested_ttl(body: Option<&Value>) -> std::result::Result<Option<Value>, Refusal> {
    let Some(body) = body else { return Ok(None) };
    let object = body.as_object().ok_or_else(|| denial(Code::BadRequest, "body: must be a JSON object"))?;
    if let Some(other) = object.keys().find(|k| k.as_str() != "ttl_seconds") {
        return Err(denial(Code::BadRequest, format!("{other}: is not a token field (expected only \"ttl_seconds\")")));
    }
    Ok(object.get("ttl_seconds").cloned())
}

/// The customer a simple-authentication token is for: `(identifier_type, identifier)`.
type Subject = Option<(String, String)>;

async fn auth_answer(req: &mut Request, env: &Env, rest: &str) -> Answer {
    let now = super::now_ms();
    let body = read_body(req).await?;
    let headers = req.headers();
    let url = req.url().map_err(|_| denial(Code::BadRequest, "query: could not be read"))?;
    let authorization = headers.get("authorization").ok().flatten();
    let x_api_key = headers.get("x-api-key").ok().flatten();
    let client_ip = headers.get("cf-connecting-ip").ok().flatten();
    let (origin, referer) = (headers.get("origin").ok().flatten(), headers.get("referer").ok().flatten());
    let store = Store::open(env).map_err(|_| denial(Code::StoreUnavailable, "the key store is unavailable"))?;
    let bearer = token::bearer_token(authorization.as_deref());
    let (key, workspace, ttl, subject): (Rc<CompiledKey>, Option<String>, u64, Subject) = if rest == "auth/refresh" {
        let ttl_field = requested_ttl(body.as_ref())?;
        let Some(raw) = bearer else {
            return Err(denial(Code::TokenInvalid, "send the token to refresh as Authorization: Bearer <token>"));
        };
        let claims = match claims(env, raw, x_api_key.as_deref(), url.query(), now).await {
            Ok(c) => c,
            Err(Refused::Token(code, message)) => return Err(denial(code, message)),
            Err(Refused::Store) => return Err(denial(Code::StoreUnavailable, "the signing keys are unavailable")),
        };
        let key = store.key(&claims.kwd, now).await.map_err(|_| denial(Code::StoreUnavailable, "the key store is unavailable"))?;
        let key = key.ok_or_else(|| denial(Code::TokenInvalid, KEY_GONE))?;
        if let Some((code, message)) = judge(&claims, &key) {
            return Err(denial(code, message));
        }
        // The same lifetime as the token refreshed, unless the body asks for another.
        let ttl = match ttl_field {
            None => u64::try_from(claims.exp.saturating_sub(claims.iat)).unwrap_or(0).clamp(token::MIN_TTL_SECONDS, token::MAX_TTL_SECONDS),
            Some(v) => token::parse_ttl(Some(&v)).map_err(|e| denial(Code::BadRequest, e))?,
        };
        let subject = claims.idt.clone().zip(claims.profile.clone());
        (key, None, ttl, subject)
    } else {
        if bearer.is_some() {
            return Err(denial(Code::BadRequest, "this call takes an API key; a token is exchanged for a new one at /_keyward/v1/auth/refresh"));
        }
        let credential = match find_credential(authorization.as_deref(), x_api_key.as_deref(), url.query()) {
            Err(e) => return Err(denial(Code::BadRequest, e.message)),
            Ok(None) => return Err(denial(Code::MissingKey, super::gate::NO_KEY)),
            Ok(Some(c)) => c,
        };
        parse_key(&credential.key).map_err(|e| denial(Code::MalformedKey, super::gate::malformed_key(e)))?;
        let key = store.key(&key_digest(&credential.key), now).await.map_err(|_| denial(Code::StoreUnavailable, "the key store is unavailable"))?;
        let key = key.ok_or_else(|| denial(Code::UnknownKey, super::gate::UNKNOWN_KEY))?;
        let (ttl, subject) = if rest == "auth/simple" {
            let ask = token::parse_simple_auth(body.as_ref().unwrap_or(&Value::Null)).map_err(|e| denial(Code::BadRequest, e))?;
            (ask.ttl_seconds, Some(simple_subject(&key, ask)?))
        } else {
            (token::parse_ttl(requested_ttl(body.as_ref())?.as_ref()).map_err(|e| denial(Code::BadRequest, e))?, None)
        };
        (key, credential.workspace, ttl, subject)
    };
    let request = GateRequest {
        client_ip: client_ip.as_deref(),
        basic_workspace: workspace.as_deref(),
        origin: origin.as_deref(),
        referer: referer.as_deref(),
        ..GateRequest::default()
    };
    let decision = decide_permission(&key, None, &request, now);
    if !decision.valid {
        return Err(denial(decision.code, decision.message));
    }
    login_admitted(env, &key.record.id).await?;
    let mut ask = json!({"digest": key.record.digest, "ttl_seconds": ttl, "iss": issuer(env)});
    if let (Some(map), Some((identifier_type, identifier))) = (ask.as_object_mut(), subject) {
        map.insert("subject".into(), json!({"identifier_type": identifier_type, "identifier": identifier}));
    }
    let signed = sign_remotely(env, &ask).await?;
    let response = reply::success(200, signed)?;
    Ok(response)
}

/// Logins (token, refresh, simple) per key and location, counted by the Rate Limiting binding
/// `LOGIN_LIMITER` (wrangler.toml: `LOGIN_LIMIT_PERIOD_SECONDS` long windows). Each login is a
/// signing call to the control plane, so a client that logs in on every request, or a flood
/// with one valid key, is turned away here before it reaches the control plane. Without the
/// binding, logins are not counted.
async fn login_admitted(env: &Env, key_id: &str) -> std::result::Result<(), Refusal> {
    let Ok(limiter) = env.rate_limiter(LOGIN_LIMITER) else { return Ok(()) };
    match limiter.limit(key_id.to_string()).await {
        Ok(outcome) if !outcome.success => Err(denial(
            Code::RateLimited,
            format!("too many logins with this API key; keep a token until it nears its expiry, then refresh it (retry after {LOGIN_LIMIT_PERIOD_SECONDS} s)"),
        )),
        _ => Ok(()),
    }
}

/// Checks a simple-authentication request against its key: a profile key with `simple_auth`,
/// whose attribute allowlist lets the customer's identifier and `uuid` through, and a signature
/// that is the HMAC-SHA256 of the identifier under the key's salt.
fn simple_subject(key: &CompiledKey, ask: token::SimpleAuth) -> std::result::Result<(String, String), Refusal> {
    let record = &key.record;
    if record.key_type != crate::core::record::KeyType::Profile {
        return Err(denial(Code::BadRequest, "simple authentication needs a profile key"));
    }
    let Some(salt) = record.simple_auth_salt.as_deref().filter(|_| record.simple_auth) else {
        return Err(denial(Code::BadRequest, "simple_auth: is not turned on for this key (PUT {\"simple_auth\": true} gives it a salt)"));
    };
    let missing = token::missing_attributes(record.attribute_allowlist.as_deref(), &ask.identifier_type);
    if !missing.is_empty() {
        return Err(denial(
            Code::BadRequest,
            format!("attribute_allowlist: must include uuid and {} for simple authentication by {} (missing: {})", token::identifier_attribute(&ask.identifier_type), ask.identifier_type, missing.join(", ")),
        ));
    }
    if !token::simple_signature_ok(salt, &ask.identifier, &ask.signature) {
        return Err(Refusal(401, "UNAUTHORIZED", "signature: is not the HMAC-SHA256 of the identifier under the key's salt".into()));
    }
    Ok((ask.identifier_type, ask.identifier))
}

/// A salt for a record that turned `simple_auth` on (32 bytes from the CSPRNG, in hex).
pub fn give_salt(record: &mut KeyRecord) -> std::result::Result<(), Refusal> {
    if record.simple_auth && record.simple_auth_salt.is_none() {
        let bytes = super::random_bytes::<32>().map_err(|_| Refusal(503, "RANDOM_UNAVAILABLE", "no randomness".into()))?;
        record.simple_auth_salt = Some(bytes.iter().map(|b| format!("{b:02x}")).collect());
    }
    Ok(())
}

/// Asks the control plane to sign a token for the key at `ask.digest`.
async fn sign_remotely(env: &Env, ask: &Value) -> std::result::Result<Value, Refusal> {
    let unavailable = || denial(Code::StoreUnavailable, "the control plane could not sign the token");
    let stub = store::control_stub(env).map_err(|_| unavailable())?;
    let mut init = worker::RequestInit::new();
    init.with_method(Method::Post).with_body(Some(ask.to_string().into()));
    let request = Request::new_with_init("https://control/_internal/sign", &init).map_err(|_| unavailable())?;
    store::remote_delay(env).await;
    let mut response = stub.fetch_with_request(request).await.map_err(|_| unavailable())?;
    let status = response.status_code();
    let body: Value = response.json().await.map_err(|_| unavailable())?;
    if status == 200 {
        return Ok(body);
    }
    let code = body.get("error_code").and_then(Value::as_str).and_then(|c| Code::ALL.iter().find(|k| k.as_str() == c).copied());
    let message = body.get("error_message").and_then(Value::as_str).unwrap_or("the token could not be signed");
    Err(code.map_or_else(unavailable, |c| denial(c, message)))
}

// ---- The control plane's side (inside the Durable Object) ----

/// `state`: `current` (signs), `next` (published ahead, so that every isolate and every origin's
/// cached JWKS already knows it when a rotation makes it current), `retired` (published until
/// `last_exp`, the `exp` of the last token it signed, then deleted).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS signing_keys (
  kid TEXT PRIMARY KEY,
  secret TEXT NOT NULL,
  public TEXT NOT NULL,
  state TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  retired_at INTEGER,
  last_exp INTEGER NOT NULL DEFAULT 0
);
";

pub fn create_schema(sql: &SqlStorage) -> std::result::Result<(), super::store::StoreError> {
    sql.exec(SCHEMA, None)?;
    Ok(())
}

#[derive(Deserialize)]
struct KeyRow {
    kid: String,
    secret: String,
    public: String,
    retired_at: Option<i64>,
    last_exp: i64,
}

fn text(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_string())
}

fn int(n: i64) -> SqlStorageValue {
    SqlStorageValue::Integer(n)
}

fn rows(sql: &SqlStorage, query: &str, bindings: Vec<SqlStorageValue>) -> std::result::Result<Vec<KeyRow>, Refusal> {
    let unavailable = |_| denial(Code::StoreUnavailable, "the signing keys are unavailable");
    sql.exec(query, bindings).map_err(unavailable)?.to_array::<KeyRow>().map_err(unavailable)
}

fn run(sql: &SqlStorage, query: &str, bindings: Vec<SqlStorageValue>) -> std::result::Result<(), Refusal> {
    sql.exec(query, bindings).map(|_| ()).map_err(|_| denial(Code::StoreUnavailable, "the signing keys are unavailable"))
}

/// A new signing key from the platform CSPRNG, stored in `state`.
fn new_signing_key(sql: &SqlStorage, state: &str, now: i64) -> std::result::Result<KeyRow, Refusal> {
    let no_randomness = |_| Refusal(503, "RANDOM_UNAVAILABLE", "no randomness".into());
    let secret = super::random_bytes::<32>().map_err(no_randomness)?;
    let kid_bytes = super::random_bytes::<9>().map_err(no_randomness)?;
    let kid = format!("kw-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kid_bytes));
    let row = KeyRow { kid, secret: STANDARD.encode(secret), public: STANDARD.encode(token::public_of(&secret)), retired_at: None, last_exp: 0 };
    run(
        sql,
        "INSERT INTO signing_keys (kid, secret, public, state, created_at, retired_at, last_exp) VALUES (?, ?, ?, ?, ?, NULL, 0)",
        vec![text(&row.kid), text(&row.secret), text(&row.public), text(state), int(now)],
    )?;
    Ok(row)
}

const COLUMNS: &str = "kid, secret, public, retired_at, last_exp";

/// The key in `state` (`current` or `next`), made on first use.
fn key_in(sql: &SqlStorage, state: &str, now: i64) -> std::result::Result<KeyRow, Refusal> {
    let found = rows(sql, &format!("SELECT {COLUMNS} FROM signing_keys WHERE state = ? ORDER BY created_at DESC LIMIT 1"), vec![text(state)])?;
    match found.into_iter().next() {
        Some(row) => Ok(row),
        None => new_signing_key(sql, state, now),
    }
}

/// The current signing key; the current and the next one are made on first use.
fn current_key(sql: &SqlStorage, now: i64) -> std::result::Result<KeyRow, Refusal> {
    let current = key_in(sql, "current", now)?;
    key_in(sql, "next", now)?;
    Ok(current)
}

/// The keys whose tokens may be valid now or soon: the current one, the next one, and every
/// retired one until its last token's `exp`. Retired keys past that are deleted, private half
/// and all.
fn published(sql: &SqlStorage, now: i64) -> std::result::Result<Vec<KeyRow>, Refusal> {
    let now_s = now.div_euclid(1000);
    run(sql, "DELETE FROM signing_keys WHERE state = 'retired' AND last_exp <= ?", vec![int(now_s)])?;
    let order = "CASE state WHEN 'current' THEN 0 WHEN 'next' THEN 1 ELSE 2 END, created_at DESC";
    rows(sql, &format!("SELECT {COLUMNS} FROM signing_keys ORDER BY {order}"), vec![])
}

fn jwks_of(keys: &[KeyRow]) -> Value {
    let list: Vec<Value> = keys.iter().filter_map(|k| STANDARD.decode(&k.public).ok().map(|p| token::jwk(&k.kid, &p))).collect();
    json!({"keys": list})
}

#[derive(Deserialize)]
struct SignAsk {
    digest: String,
    ttl_seconds: u64,
    iss: String,
    #[serde(default)]
    subject: Option<SignSubject>,
}

#[derive(Deserialize)]
struct SignSubject {
    identifier_type: String,
    identifier: String,
}

/// The control plane's internal token calls (`/_internal/jwks`, `/_internal/sign`), which only
/// this Worker's isolates reach: `None` for any other path.
pub async fn internal(req: &mut Request, path: &str, ledger: &Ledger, now: i64) -> Option<Result<Response>> {
    let answer = match path {
        "/_internal/jwks" => {
            // The current key exists from the first look, so the set is never empty.
            current_key(ledger.sql(), now).and_then(|_| published(ledger.sql(), now)).map(|keys| reply::json(200, &jwks_of(&keys)))
        }
        "/_internal/sign" => sign(req, ledger, now).await,
        _ => return None,
    };
    Some(match answer {
        Ok(response) => response,
        Err(Refusal(status, code, message)) => reply::error(status, code, &message),
    })
}

async fn sign(req: &mut Request, ledger: &Ledger, now: i64) -> std::result::Result<Result<Response>, Refusal> {
    let ask: SignAsk = req.json().await.map_err(|_| denial(Code::BadRequest, "body: not a sign request"))?;
    let record = ledger.record(&ask.digest).map_err(|_| denial(Code::StoreUnavailable, "the key store is unavailable"))?;
    let record = record.ok_or_else(|| denial(Code::UnknownKey, super::gate::UNKNOWN_KEY))?;
    // The source of truth has the last word on the key's status (the edge's copy may lag).
    match record.status(now) {
        KeyStatus::Active => {}
        KeyStatus::Revoked => return Err(denial(Code::KeyRevoked, "the API key has been revoked")),
        KeyStatus::Expired => return Err(denial(Code::KeyExpired, "the API key has expired")),
    }
    if ask.subject.is_some() && !(record.simple_auth && record.simple_auth_salt.is_some()) {
        return Err(denial(Code::BadRequest, "simple_auth: is not turned on for this key"));
    }
    let ttl = ask.ttl_seconds.clamp(token::MIN_TTL_SECONDS, token::MAX_TTL_SECONDS);
    let (token, expires_in) = issue(ledger.sql(), &record, ttl, &ask.iss, ask.subject, now)?;
    Ok(reply::json(200, &json!({"token": token, "token_type": "Bearer", "expires_in": expires_in})))
}

/// Signs a token for `record` with the current key, and notes how long that key must be kept.
fn issue(sql: &SqlStorage, record: &KeyRecord, ttl: u64, iss: &str, subject: Option<SignSubject>, now: i64) -> std::result::Result<(String, i64), Refusal> {
    let key = current_key(sql, now)?;
    let secret: [u8; 32] = STANDARD
        .decode(&key.secret)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| denial(Code::StoreUnavailable, "the signing key is unreadable"))?;
    let jti_bytes = super::random_bytes::<16>().map_err(|_| Refusal(503, "RANDOM_UNAVAILABLE", "no randomness".into()))?;
    let expires = record.expires_at.as_deref().and_then(crate::core::time::parse_rfc3339);
    let (iat, exp) = token::times(now, ttl, expires);
    let claims = Claims {
        iss: iss.to_string(),
        sub: record.id.clone(),
        iat,
        iat_ms: now,
        nbf: iat,
        exp,
        jti: format!("tok_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti_bytes)),
        key_type: record.key_type,
        workspace: record.workspace.clone(),
        profile: subject.as_ref().map_or_else(|| record.profile_id.clone(), |s| Some(s.identifier.clone())),
        kwd: record.digest.clone(),
        idt: subject.map(|s| s.identifier_type),
    };
    if exp > key.last_exp {
        run(sql, "UPDATE signing_keys SET last_exp = ? WHERE kid = ?", vec![int(exp), text(&key.kid)])?;
    }
    Ok((token::sign(&claims, &key.kid, &secret), exp.saturating_sub(now.div_euclid(1000)).max(0)))
}

/// The management calls on tokens, answered in the control plane: `POST signing_keys/rotate`
/// (admin token) and `POST api_keys/{id}/revoke_tokens` (`keys:update`). `None`: not one of them.
pub async fn manage(req: &mut Request, env: &Env, rest: &str, ledger: &Ledger, now: i64) -> Option<Result<Response>> {
    let all: Vec<&str> = rest.split('/').collect();
    // revoke_tokens also under /workspaces/{w}/ (docs/workspaces.md): that workspace's keys only.
    let (specified, segments) = match all.as_slice() {
        ["workspaces", w, tail @ ..] => (Some(*w), tail),
        whole => (None, whole),
    };
    let permission = match segments {
        ["signing_keys", "rotate"] if specified.is_none() => None,
        ["api_keys", _, "revoke_tokens"] => Some("keys:update"),
        _ => return None,
    };
    // Read whole before answering (see admin::handle).
    let _ = req.bytes().await;
    let answer = if req.method() == Method::Post {
        match authorize_call_in(req, env, ledger, permission, now, specified) {
            Err(refusal) => Err(refusal),
            Ok((actor, scope)) => match segments {
                ["api_keys", id, "revoke_tokens"] => revoke_tokens(ledger, &actor, id, scope.as_deref(), now),
                _ => rotate(ledger, &actor, now),
            },
        }
    } else {
        Err(Refusal(405, "METHOD_NOT_ALLOWED", format!("{} is not allowed here", req.method())))
    };
    Some(match answer {
        Ok(response) => response,
        Err(Refusal(status, code, message)) => {
            let response = reply::error(status, code, &message);
            if status == 405 {
                if let Ok(r) = &response {
                    let _ = r.headers().set("allow", "POST");
                }
            }
            response
        }
    })
}

fn revoke_tokens(ledger: &Ledger, actor: &super::ledger::Actor, id: &str, scope: Option<&str>, now: i64) -> std::result::Result<Result<Response>, Refusal> {
    let unavailable = |_| denial(Code::StoreUnavailable, "the key store is unavailable");
    let record = ledger
        .record_by_id(id)
        .map_err(unavailable)?
        .filter(|r| r.in_scope(scope))
        .ok_or_else(|| Refusal(404, "NOT_FOUND", format!("no key has the id {id}")))?;
    let mut next = record.clone();
    next.tokens_not_before = Some(now);
    next.version = record.version.saturating_add(1);
    next.updated_at = format_rfc3339(now);
    ledger.put(&next, Some(&record), actor, "revoke_tokens", now).map_err(unavailable)?;
    Ok(reply::success(200, json!({"id": next.id, "tokens_not_before": format_rfc3339(now)})))
}

fn rotate(ledger: &Ledger, actor: &super::ledger::Actor, now: i64) -> std::result::Result<Result<Response>, Refusal> {
    let sql = ledger.sql();
    let old = current_key(sql, now)?;
    run(sql, "UPDATE signing_keys SET state = 'retired', retired_at = ? WHERE state = 'current'", vec![int(now)])?;
    run(sql, "UPDATE signing_keys SET state = 'current' WHERE state = 'next'", vec![])?;
    let fresh = current_key(sql, now)?;
    let next = key_in(sql, "next", now)?;
    let keys = published(sql, now)?;
    let retired: Vec<Value> = keys
        .iter()
        .filter(|k| k.retired_at.is_some())
        .map(|k| json!({"kid": k.kid, "kept_until": format_rfc3339(k.last_exp.saturating_mul(1000))}))
        .collect();
    let mut changes = Map::new();
    changes.insert("kid".into(), json!({"old": old.kid, "new": fresh.kid}));
    ledger.audit_entry(actor, "rotate_signing_key", None, &Value::Object(changes), now).map_err(|_| denial(Code::StoreUnavailable, "the audit log is unavailable"))?;
    Ok(reply::success(200, json!({"kid": fresh.kid, "next_kid": next.kid, "retired": retired, "jwks": jwks_of(&keys)})))
}

/// Tests only: `/_keyward/debug/token-clock?offset_ms=N`.
pub fn debug_clock(url: &worker::Url) -> Result<Response> {
    let offset = url.query_pairs().find(|(k, _)| k == "offset_ms").and_then(|(_, v)| v.parse::<i64>().ok());
    match offset {
        Some(ms) => {
            set_clock_offset(ms);
            reply::success(200, json!({"offset_ms": ms}))
        }
        None => reply::error(400, "BAD_REQUEST", "offset_ms is required"),
    }
}

/// The header the origin gets the token's `jti` in (any such header a client sends is dropped).
pub const TOKEN_ID_HEADER: &str = "x-keyward-token-id";
