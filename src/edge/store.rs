//! The gate's read path: key records and the route policy from Workers KV (the edge replica), an
//! in-isolate cache in front, and the change feed that keeps both honest.
//!
//! KV may lag the source of truth (the control plane, `control.rs`) by up to about a minute in
//! another location. So each isolate follows the control plane's change log, at most once per
//! `SYNC_INTERVAL_MS` and in the background while traffic flows; the feed says which keys changed
//! and their newest version. A record older than the feed's version is not trusted: the gate asks
//! the control plane for that one record instead (once; the answer is cached). If the feed cannot
//! be read for `MAX_STALENESS_MS`, the gate fails closed.
//!
//! Distance (docs/distance.md): the control plane may be a continent away. Each feed answer is
//! shared within the location through the Cache API (`caches.default`, keyed by the cursor it
//! answers), and used from there while its view is recent (three quarters of an interval less the
//! round trip): the isolates of one location send the control plane about one read per interval,
//! and an idle isolate next to a busy one reads the location's copy (local) instead. A busy
//! isolate refreshes in the background (every quarter interval once its view is half an interval
//! old), so its view is never old enough to
//! make a request wait. `FRESHNESS` says what an isolate whose view is older does: `strict` reads
//! before answering once it is older than the interval plus its round trip, `bounded` answers
//! from a view up to `MAX_STALENESS_MS` old and catches up in the background.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use worker::{kv::KvStore, Env, Stub};

use super::cache;
use super::ledger::RECENT_WINDOW_MS;
use crate::core::cache::{digest_bytes, DigestBytes, Lookup};
use crate::core::record::{CompiledKey, KeyRecord};
use crate::core::RoutePolicy;

/// Feed pages read in one sync before leaving the rest to the next one.
const MAX_FEED_PAGES: usize = 20;

/// The store could not be read, or holds something unreadable: the gate fails closed.
#[derive(Debug)]
pub struct StoreError(pub String);

impl<E: std::fmt::Display> From<E> for StoreError {
    fn from(e: E) -> Self {
        StoreError(e.to_string())
    }
}

/// What the feed said last about a key: its newest version, whether a record (or tombstone) exists.
#[derive(Clone, Copy)]
struct Fresh {
    seq: i64,
    version: i64,
    present: bool,
    /// When the feed first said KV holds this change; KV is trusted for it a propagation window
    /// (RECENT_WINDOW_MS) later.
    kv_written_ms: Option<i64>,
}

struct CachedPolicy {
    value: Rc<RoutePolicy>,
    fetched_ms: i64,
    /// From the feed: current until the feed says otherwise, whatever the TTL.
    from_feed: bool,
}

#[derive(Default)]
struct FeedState {
    /// Change-log position read up to; -1 before the first read.
    cursor: i64,
    policy_seq: i64,
    /// When the view the isolate holds was the control plane's: the time the last successful
    /// read was sent to it, or the time of the location's copy it read (never later than true).
    last_ok_ms: Option<i64>,
    /// How long this isolate's last read of the control plane took (its round trip).
    rtt_ms: i64,
    first_request_ms: Option<i64>,
    last_attempt_ms: i64,
    in_flight: bool,
}

thread_local! {
    /// By the digest's bytes (`core::cache::digest_bytes`): a fixed-size key, no string each.
    static FRESH: RefCell<HashMap<DigestBytes, Fresh>> = RefCell::new(HashMap::new());
    static POLICY: RefCell<Option<CachedPolicy>> = const { RefCell::new(None) };
    static FEED: RefCell<FeedState> = RefCell::new(FeedState { cursor: -1, ..FeedState::default() });
    static SETTINGS: std::cell::Cell<Option<SyncSettings>> = const { std::cell::Cell::new(None) };
    /// `CACHE_TTL_SECONDS` in ms: vars do not change within an isolate, so read once.
    static TTL_MS: std::cell::Cell<Option<i64>> = const { std::cell::Cell::new(None) };
    /// `KEYWARD_TEST_REMOTE_DELAY_MS` (test-only), read once.
    static REMOTE_DELAY_MS: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    /// Feed reads by source, and the reads a request waited for (the debug stats).
    static FEED_READS: std::cell::Cell<FeedReads> = const { std::cell::Cell::new(FeedReads { control: 0, location: 0, inline: 0 }) };
    /// The records last compiled from KV, by slot (see [`compile_read`]).
    static COMPILED: RefCell<Vec<Option<Compiled>>> = RefCell::new((0..COMPILED_SLOTS).map(|_| None).collect());
}

/// Slots of [`COMPILED`]: one per value of a digest's first byte.
const COMPILED_SLOTS: usize = 256;

/// A record as KV gave it (the SHA-256 of its bytes) and what it compiled to: a weak reference,
/// so that a record the cache let go is freed (docs/security.md: the isolate holds about the keys
/// in use); this request's record is held by the request (`fast::LOADED`).
struct Compiled {
    digest: DigestBytes,
    content: [u8; 32],
    key: Weak<CompiledKey>,
}

#[derive(Clone, Copy)]
struct FeedReads {
    control: u64,
    location: u64,
    inline: u64,
}

/// The cache key of the location's copy of a feed page (never a real host: `caches.default` is
/// keyed by URL, and nothing else is stored under this one).
const FEED_CACHE_URL: &str = "https://keyward-feed.internal/feed";
/// The header of a cached feed page: when the control plane's view it holds was current (ms).
const AS_OF_HEADER: &str = "x-keyward-feed-as-of";

/// `FRESHNESS`: what an isolate whose view of the feed is not recent does before answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Reads the feed (the location's copy, else the control plane) before answering when its
    /// view is older than two intervals.
    Strict,
    /// Answers from a view up to `MAX_STALENESS_MS` old and reads in the background.
    Bounded,
}

/// The feed timings, from wrangler.toml.
#[derive(Clone, Copy)]
pub struct SyncSettings {
    pub interval_ms: i64,
    pub max_staleness_ms: i64,
    pub freshness: Freshness,
}

impl SyncSettings {
    /// Read once per isolate: vars do not change while it lives.
    pub fn from_env(env: &Env) -> SyncSettings {
        if let Some(settings) = SETTINGS.with(std::cell::Cell::get) {
            return settings;
        }
        let read = |name: &str, default: i64| {
            env.var(name).ok().and_then(|v| v.to_string().parse::<i64>().ok()).unwrap_or(default).clamp(50, 3_600_000)
        };
        // Anything but "bounded" is strict: the safe reading of a mistyped value.
        let freshness = match env.var("FRESHNESS").map(|v| v.to_string()) {
            Ok(v) if v.trim().eq_ignore_ascii_case("bounded") => Freshness::Bounded,
            _ => Freshness::Strict,
        };
        let settings = SyncSettings { interval_ms: read("SYNC_INTERVAL_MS", 1000), max_staleness_ms: read("MAX_STALENESS_MS", 10_000), freshness };
        SETTINGS.with(|s| s.set(Some(settings)));
        settings
    }

    /// The settings once [`SyncSettings::from_env`] has read them (the fast path has no `env`).
    pub fn cached() -> Option<SyncSettings> {
        SETTINGS.with(std::cell::Cell::get)
    }
}

/// What a gated request must do about the feed before it is answered.
#[derive(Debug, PartialEq, Eq)]
pub enum SyncPlan {
    /// The feed was read recently: nothing to do.
    Current,
    /// Read the feed after answering (in `waitUntil`).
    Background,
    /// The isolate is new or was idle: read the feed before answering.
    Inline,
}

impl SyncSettings {
    /// How often an isolate with traffic may refresh its view once it is half an interval old: a
    /// quarter interval (from the location's copy when it is recent enough, a local read).
    pub fn refresh_ms(self) -> i64 {
        (self.interval_ms / 4).max(1)
    }

    /// How old a view the location's copy of a feed page may hold and still be used, for an
    /// isolate `rtt_ms` from the control plane: recent enough that a view refreshed from it stays
    /// within [`SyncSettings::trusted_age_ms`] until the next refresh, even when that one must go
    /// to the control plane. So a busy isolate never reads before answering.
    fn shared_age_ms(self, rtt_ms: i64) -> i64 {
        (self.interval_ms - self.refresh_ms() - rtt_ms).max(0)
    }

    /// The oldest view an isolate answers from without reading the feed first. Strict: one
    /// interval plus the isolate's round trip to the control plane, so that a change is honoured
    /// everywhere within that (the contract's bound); bounded: `MAX_STALENESS_MS`.
    fn trusted_age_ms(self, rtt_ms: i64) -> i64 {
        match self.freshness {
            Freshness::Strict => self.interval_ms.saturating_add(rtt_ms),
            Freshness::Bounded => self.max_staleness_ms,
        }
    }
}

/// Plans the feed read for a request at `now`. A view refreshed in the background while traffic
/// flows is never old enough for `Inline`: only an isolate that is new, or whose view is older
/// than [`SyncSettings::trusted_age_ms`] (it was idle), reads before answering.
pub fn sync_plan(now: i64, settings: SyncSettings) -> SyncPlan {
    FEED.with(|f| {
        let mut f = f.borrow_mut();
        f.first_request_ms.get_or_insert(now);
        // A view under half an interval old needs no refresh yet: the background work (a cache
        // read, sometimes a control-plane read) is isolate time, so it is not done 4 times a second.
        let young = f.last_ok_ms.is_some_and(|ok| now.saturating_sub(ok) < settings.interval_ms / 2);
        let due = !f.in_flight && !young && now.saturating_sub(f.last_attempt_ms) >= settings.refresh_ms();
        if !due {
            return SyncPlan::Current;
        }
        let trusted = f.last_ok_ms.is_some_and(|ok| now.saturating_sub(ok) <= settings.trusted_age_ms(f.rtt_ms));
        if trusted {
            SyncPlan::Background
        } else {
            SyncPlan::Inline
        }
    })
}

/// Counts a feed read a request waits for (`SyncPlan::Inline`), for the debug stats.
pub fn count_inline() {
    FEED_READS.with(|c| {
        let mut n = c.get();
        n.inline += 1;
        c.set(n);
    });
}

/// The feed reads of this isolate (`GET /_keyward/debug/stats`, tests only): from the control
/// plane, from the location's copy, and those a request waited for.
pub fn feed_stats() -> serde_json::Value {
    let n = FEED_READS.with(std::cell::Cell::get);
    serde_json::json!({"control": n.control, "location": n.location, "inline": n.inline})
}

/// Waits `KEYWARD_TEST_REMOTE_DELAY_MS` (test-only, never set in production) before a call from
/// this isolate to the control plane or a Limiter, as if it were that far away.
pub async fn remote_delay(env: &Env) {
    let ms = REMOTE_DELAY_MS.with(|cell| {
        cell.get().unwrap_or_else(|| {
            let ms = env.var("KEYWARD_TEST_REMOTE_DELAY_MS").ok().and_then(|v| v.to_string().trim().parse::<u64>().ok()).unwrap_or(0).min(60_000);
            cell.set(Some(ms));
            ms
        })
    });
    if ms > 0 {
        worker::Delay::from(std::time::Duration::from_millis(ms)).await;
    }
}

/// True when the feed has not been read for longer than `MAX_STALENESS_MS`: fail closed.
pub fn too_stale(now: i64, settings: SyncSettings) -> bool {
    FEED.with(|f| {
        let f = f.borrow();
        let since = f.last_ok_ms.or(f.first_request_ms).unwrap_or(now);
        now.saturating_sub(since) > settings.max_staleness_ms
    })
}

#[derive(Deserialize)]
struct FeedAnswer {
    head: i64,
    policy_seq: i64,
    policy: Option<serde_json::Value>,
    changes: Vec<FeedChange>,
    more: bool,
    reset: bool,
    kv_pending_from: i64,
}

#[derive(Deserialize)]
struct FeedChange {
    seq: i64,
    digest: String,
    version: i64,
    present: i64,
}

#[derive(Deserialize)]
struct RecordAnswer {
    record: Option<KeyRecord>,
}

pub fn control_stub(env: &Env) -> Result<Stub, StoreError> {
    Ok(env.durable_object("CONTROL")?.id_from_name(super::control::OBJECT_NAME)?.get_stub()?)
}

/// Why the feed is read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// After the answers, while traffic flows: the location's copy when it is recent enough to
    /// keep the view trusted until the next refresh; else the control plane, unless another
    /// isolate of the location is reading it right now (then the view is kept, and the next
    /// refresh looks again).
    Background,
    /// A request waits: the location's copy when its view is under one interval old, else the
    /// control plane.
    Inline,
    /// After a management write: the control plane, even while another read is in flight, so
    /// this isolate sees the change at once.
    Force,
}

/// Reads the change feed from where this isolate left it and applies it (see [`SyncMode`]); the
/// control plane's answer becomes the location's copy.
pub async fn sync(env: &Env, mode: SyncMode) -> Result<(), StoreError> {
    let start = FEED.with(|f| {
        let mut f = f.borrow_mut();
        if f.in_flight && mode != SyncMode::Force {
            return None;
        }
        f.in_flight = true;
        f.last_attempt_ms = super::now_ms();
        Some(())
    });
    if start.is_none() {
        return Ok(());
    }
    let outcome = read_feed(env, mode).await;
    FEED.with(|f| {
        let mut f = f.borrow_mut();
        f.in_flight = false;
        if let Ok(Some(as_of)) = outcome {
            f.last_ok_ms = Some(f.last_ok_ms.map_or(as_of, |ok| ok.max(as_of)));
        }
    });
    outcome.map(|_| ())
}

/// Reads and applies the feed's pages; the time the view it gave was current (the oldest page's),
/// or `None` when it left the read to another isolate of the location.
async fn read_feed(env: &Env, mode: SyncMode) -> Result<Option<i64>, StoreError> {
    let settings = SyncSettings::from_env(env);
    let mut as_of = i64::MAX;
    for page in 0..MAX_FEED_PAGES {
        let (cursor, policy_seq, rtt) = FEED.with(|f| {
            let f = f.borrow();
            (f.cursor, f.policy_seq, f.rtt_ms)
        });
        let key = format!("{FEED_CACHE_URL}?after={cursor}&policy={policy_seq}");
        let nearby = match mode {
            SyncMode::Force => None,
            SyncMode::Inline => location_copy(&key, settings.interval_ms).await,
            SyncMode::Background => location_copy(&key, settings.shared_age_ms(rtt)).await,
        };
        let (text, page_as_of) = match nearby {
            Some(copy) => {
                FEED_READS.with(|c| {
                    let mut n = c.get();
                    n.location += 1;
                    c.set(n);
                });
                copy
            }
            None => {
                let claim = format!("{key}&claim");
                if page == 0 && mode == SyncMode::Background && claimed(&claim, rtt).await {
                    return Ok(None);
                }
                let sent = super::now_ms();
                if mode != SyncMode::Force {
                    put_cached(&claim, "", sent, settings).await;
                }
                let text = read_control(env, cursor, policy_seq).await?;
                let took = super::now_ms().saturating_sub(sent);
                FEED.with(|f| f.borrow_mut().rtt_ms = took);
                put_cached(&key, &text, sent, settings).await;
                (text, sent)
            }
        };
        as_of = as_of.min(page_as_of);
        let answer: FeedAnswer = serde_json::from_str(&text)?;
        let more = answer.more;
        apply(answer, super::now_ms())?;
        if !more {
            break;
        }
    }
    Ok(Some(as_of.min(super::now_ms())))
}

/// Test harnesses only (`/_keyward/debug/neighbour`, under KEYWARD_DEBUG): what a busy
/// neighbour isolate's background read leaves in the location: the control plane's feed page
/// from this isolate's position, shared as the location's copy, without changing this isolate's
/// view. (`wrangler dev` runs one isolate per Worker, and its processes share no cache.)
pub async fn neighbour_read(env: &Env) -> Result<(), StoreError> {
    let settings = SyncSettings::from_env(env);
    let (cursor, policy_seq) = FEED.with(|f| {
        let f = f.borrow();
        (f.cursor, f.policy_seq)
    });
    let sent = super::now_ms();
    let text = read_control(env, cursor, policy_seq).await?;
    put_cached(&format!("{FEED_CACHE_URL}?after={cursor}&policy={policy_seq}"), &text, sent, settings).await;
    Ok(())
}

/// One feed page from the control plane, as its JSON text.
async fn read_control(env: &Env, cursor: i64, policy_seq: i64) -> Result<String, StoreError> {
    let stub = control_stub(env)?;
    remote_delay(env).await;
    FEED_READS.with(|c| {
        let mut n = c.get();
        n.control += 1;
        c.set(n);
    });
    let mut response = stub.fetch_with_str(&format!("https://control/_internal/feed?after={cursor}&policy={policy_seq}")).await?;
    if response.status_code() != 200 {
        return Err(StoreError(format!("the change feed answered {}", response.status_code())));
    }
    Ok(response.text().await?)
}

/// The location's copy of the feed page under `key`, when its view is at most `max_age_ms` old:
/// its text and when it was current. Any failure is a miss (the control plane is read instead).
async fn location_copy(key: &str, max_age_ms: i64) -> Option<(String, i64)> {
    let mut response = worker::Cache::default().get(key, false).await.ok()??;
    let as_of = response.headers().get(AS_OF_HEADER).ok()??.parse::<i64>().ok()?;
    if super::now_ms().saturating_sub(as_of) > max_age_ms {
        return None;
    }
    Some((response.text().await.ok()?, as_of))
}

/// Whether another isolate of the location claimed the control-plane read under `claim` recently
/// (within two of this isolate's round trips): its answer will be the location's copy.
async fn claimed(claim: &str, rtt_ms: i64) -> bool {
    let Some(response) = worker::Cache::default().get(claim, false).await.ok().flatten() else { return false };
    let at = response.headers().get(AS_OF_HEADER).ok().flatten().and_then(|v| v.parse::<i64>().ok());
    at.is_some_and(|at| super::now_ms().saturating_sub(at) < rtt_ms.saturating_mul(2).max(50))
}

/// Stores `text` in the location's cache under `key`, stamped `as_of` (a feed page the control
/// plane gave, or an empty claim on the next read). Best effort: a failed put only means the next
/// isolate reads the control plane itself.
async fn put_cached(key: &str, text: &str, as_of: i64, settings: SyncSettings) {
    let Ok(mut response) = worker::Response::ok(text) else { return };
    let headers = response.headers_mut();
    // Kept a little longer than it is used; the as-of header decides.
    let seconds = settings.interval_ms / 1000 + 1;
    if headers.set("cache-control", &format!("max-age={seconds}")).is_err() || headers.set(AS_OF_HEADER, &as_of.to_string()).is_err() {
        return;
    }
    let _ = worker::Cache::default().put(key, response).await;
}

fn apply(answer: FeedAnswer, now: i64) -> Result<(), StoreError> {
    if answer.reset {
        cache::clear();
        FRESH.with(|c| c.borrow_mut().clear());
    }
    let policy = match answer.policy {
        Some(doc) => Some(Rc::new(RoutePolicy::from_value(&doc).map_err(|e| StoreError(format!("the route policy is invalid: {e}")))?)),
        None => None,
    };
    FRESH.with(|fresh| {
        let mut fresh = fresh.borrow_mut();
        for change in answer.changes {
            cache::forget(&change.digest);
            // Digests are what the control plane stored for records it validated.
            let Some(digest) = digest_bytes(&change.digest) else { continue };
            let entry = Fresh { seq: change.seq, version: change.version, present: change.present != 0, kv_written_ms: None };
            match fresh.get_mut(&digest) {
                Some(known) if known.seq >= change.seq => {}
                Some(known) => *known = entry,
                None => {
                    fresh.insert(digest, entry);
                }
            }
        }
        let pending_from = if answer.kv_pending_from > 0 { answer.kv_pending_from } else { i64::MAX };
        for entry in fresh.values_mut() {
            if entry.kv_written_ms.is_none() && entry.seq < pending_from {
                entry.kv_written_ms = Some(now);
            }
        }
        fresh.retain(|_, f| f.kv_written_ms.is_none_or(|at| now.saturating_sub(at) < RECENT_WINDOW_MS));
    });
    FEED.with(|f| {
        let mut f = f.borrow_mut();
        if answer.head > f.cursor {
            f.cursor = answer.head;
        }
        if answer.policy_seq > f.policy_seq {
            if let Some(policy) = policy {
                POLICY.with(|p| *p.borrow_mut() = Some(CachedPolicy { value: policy, fetched_ms: now, from_feed: true }));
            }
            f.policy_seq = answer.policy_seq;
        }
    });
    Ok(())
}

pub struct Store {
    kv: KvStore,
    ttl_ms: i64,
    /// Read only when the policy is not in memory: it is a few KiB copied out of JavaScript.
    env: Env,
}

impl Store {
    pub fn open(env: &Env) -> Result<Store, StoreError> {
        let kv = env.kv("KEYS")?;
        Ok(Store { kv, ttl_ms: ttl_ms(env), env: env.clone() })
    }

    /// The compiled key stored under `digest`: from the cache when fresh, else from KV, and from
    /// the control plane when the feed knows a newer version than either.
    pub async fn key(&self, digest: &str, now_ms: i64) -> Result<Option<Rc<CompiledKey>>, StoreError> {
        let value = match self.cached_key(digest, now_ms) {
            Lookup::Known(key) => Some(key),
            Lookup::Unknown => None,
            Lookup::Miss => {
                let value = self.kv_key(digest).await?;
                remember(digest, value.clone(), now_ms, self.ttl_ms);
                value
            }
        };
        if !older_than_feed(digest, value.as_ref()) {
            return Ok(value);
        }
        let value = compile(self.authoritative(digest).await?)?;
        remember(digest, value.clone(), now_ms, self.ttl_ms);
        Ok(value)
    }

    /// What the isolate's cache holds for `digest`, without reading KV (nor checking the feed).
    pub fn cached_key(&self, digest: &str, now_ms: i64) -> Lookup<Rc<CompiledKey>> {
        cache::get(digest, now_ms, self.ttl_ms)
    }

    /// The key's record read from KV, compiled (`compile_read`).
    async fn kv_key(&self, digest: &str) -> Result<Option<Rc<CompiledKey>>, StoreError> {
        cache::count_key_read();
        match self.kv.get(&format!("key:{digest}")).text().await? {
            None => Ok(None),
            Some(text) => compile_read(digest, &text).map(Some),
        }
    }

    /// One record from the source of truth, for a key whose KV copy is older than the feed says.
    async fn authoritative(&self, digest: &str) -> Result<Option<KeyRecord>, StoreError> {
        remote_delay(&self.env).await;
        let mut response = control_stub(&self.env)?.fetch_with_str(&format!("https://control/_internal/record?digest={digest}")).await?;
        if response.status_code() != 200 {
            return Err(StoreError(format!("the control plane answered {}", response.status_code())));
        }
        Ok(response.json::<RecordAnswer>().await?.record)
    }

    /// The route policy: from the feed once it has been read, else the one in KV (or the default
    /// from wrangler.toml), re-read after the cache TTL.
    pub async fn policy(&self, now_ms: i64) -> Result<Rc<RoutePolicy>, StoreError> {
        let hit = POLICY.with(|p| {
            p.borrow()
                .as_ref()
                .filter(|e| e.from_feed || now_ms - e.fetched_ms < self.ttl_ms)
                .map(|e| e.value.clone())
        });
        if let Some(policy) = hit {
            return Ok(policy);
        }
        let text = match self.kv.get("policy").text().await? {
            Some(text) => text,
            None => default_policy(&self.env),
        };
        let policy = Rc::new(
            RoutePolicy::parse(&text).map_err(|e| StoreError(format!("the route policy is invalid: {e}")))?,
        );
        POLICY.with(|p| {
            let mut p = p.borrow_mut();
            // A policy the feed delivered meanwhile stays.
            if !p.as_ref().is_some_and(|e| e.from_feed) {
                *p = Some(CachedPolicy { value: policy.clone(), fetched_ms: now_ms, from_feed: false });
            }
        });
        Ok(policy)
    }
}

/// `CACHE_TTL_SECONDS` in ms, read from `env` once per isolate.
fn ttl_ms(env: &Env) -> i64 {
    TTL_MS.with(|cell| {
        cell.get().unwrap_or_else(|| {
            let ms = env
                .var("CACHE_TTL_SECONDS")
                .ok()
                .and_then(|v| v.to_string().parse::<i64>().ok())
                .unwrap_or(30)
                .clamp(0, 3600)
                * 1000;
            cell.set(Some(ms));
            ms
        })
    })
}

/// Whether the feed knows a newer version of `digest` than `value` (the cached or KV copy): then
/// only the control plane's answer is trusted.
fn older_than_feed(digest: &str, value: Option<&Rc<CompiledKey>>) -> bool {
    let Some(fresh) = digest_bytes(digest).and_then(|d| FRESH.with(|f| f.borrow().get(&d).copied())) else { return false };
    let have = value.map_or(-1, |k| i64::try_from(k.record.version).unwrap_or(i64::MAX));
    if fresh.present {
        have < fresh.version
    } else {
        value.is_some() && have < fresh.version
    }
}

/// How many keys' recent versions the isolate keeps from the feed (the debug stats).
pub fn recent_count() -> usize {
    FRESH.with(|f| f.borrow().len())
}

/// What the isolate holds for `digest` without any I/O, for the gate's fast path.
pub enum Held {
    /// The cache's answer, which the feed does not contradict: the key, or `None` (no such key).
    Ready(Option<Rc<CompiledKey>>),
    /// Not in the cache (or expired): read KV, then [`loaded`].
    Miss,
    /// The feed knows a newer version: only the complete path (which asks the control plane) may answer.
    Stale,
}

/// The fast path's [`Store::key`] without I/O. `None`: the TTL has not been read yet.
pub fn held_key(digest: &str, now_ms: i64) -> Option<Held> {
    let ttl_ms = TTL_MS.with(std::cell::Cell::get)?;
    Some(match cache::get(digest, now_ms, ttl_ms) {
        Lookup::Miss => Held::Miss,
        Lookup::Known(key) if older_than_feed(digest, Some(&key)) => Held::Stale,
        Lookup::Known(key) => Held::Ready(Some(key)),
        Lookup::Unknown if older_than_feed(digest, None) => Held::Stale,
        Lookup::Unknown => Held::Ready(None),
    })
}

/// The fast path read `text` from KV for `digest` (`None`: no such record): compiled and cached
/// as [`Store::key`] does, and counted as one KV read.
pub fn loaded(digest: &str, text: Option<&str>, now_ms: i64) -> Result<Held, StoreError> {
    cache::count_key_read();
    let value = match text {
        None => None,
        Some(text) => Some(compile_read(digest, text)?),
    };
    remember(digest, value.clone(), now_ms, TTL_MS.with(std::cell::Cell::get).unwrap_or(i64::MAX));
    Ok(if older_than_feed(digest, value.as_ref()) { Held::Stale } else { Held::Ready(value) })
}

/// The key the fast path read from KV for this request (`loaded`), judged against the feed
/// again: with `CACHE_TTL_SECONDS=0` the cache never holds it, and the request uses the copy it read.
pub fn judged(digest: &str, key: Rc<CompiledKey>) -> Held {
    if older_than_feed(digest, Some(&key)) {
        Held::Stale
    } else {
        Held::Ready(Some(key))
    }
}

/// The policy in memory, if [`Store::policy`] would use it without reading KV.
pub fn held_policy(now_ms: i64) -> Option<Rc<RoutePolicy>> {
    let ttl_ms = TTL_MS.with(std::cell::Cell::get)?;
    POLICY.with(|p| p.borrow().as_ref().filter(|e| e.from_feed || now_ms - e.fetched_ms < ttl_ms).map(|e| e.value.clone()))
}

/// Reads the vars the fast path needs (it has no `env`) into this isolate's memory.
pub fn configure(env: &Env) {
    SyncSettings::from_env(env);
    ttl_ms(env);
}

/// The route policy from wrangler.toml, in force until one is stored.
pub fn default_policy(env: &Env) -> String {
    env.var("ROUTE_POLICY").map(|v| v.to_string()).unwrap_or_else(|_| "{\"rules\":[]}".into())
}

fn compile(record: Option<KeyRecord>) -> Result<Option<Rc<CompiledKey>>, StoreError> {
    record.map(compile_record).transpose()
}

fn compile_record(record: KeyRecord) -> Result<Rc<CompiledKey>, StoreError> {
    Ok(Rc::new(CompiledKey::compile(record).map_err(|e| StoreError(format!("stored record is invalid: {e}")))?))
}

/// A record read from KV (its JSON text), compiled. The same text read again for the same key
/// gives the record compiled the last time, found by the SHA-256 of the text, without parsing nor
/// compiling it again, as long as something still holds it: the cache (an entry past its
/// TTL stays until it is reaped) or the fast path's last read (`fast::LOADED`, which keeps the
/// record of the last request that read one, the common case with `CACHE_TTL_SECONDS=0`). A slot
/// (the digest's first byte) holds the latest record read for a key of that slot.
fn compile_read(digest: &str, text: &str) -> Result<Rc<CompiledKey>, StoreError> {
    let Some(digest_key) = digest_bytes(digest) else { return compile_text(text) };
    let content: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    let slot = usize::from(digest_key[0]);
    let known = COMPILED.with(|c| {
        c.borrow().get(slot)?.as_ref().filter(|held| held.digest == digest_key && held.content == content).and_then(|held| held.key.upgrade())
    });
    if let Some(key) = known {
        return Ok(key);
    }
    let key = compile_text(text)?;
    COMPILED.with(|c| {
        if let Some(held) = c.borrow_mut().get_mut(slot) {
            *held = Some(Compiled { digest: digest_key, content, key: Rc::downgrade(&key) });
        }
    });
    Ok(key)
}

fn compile_text(text: &str) -> Result<Rc<CompiledKey>, StoreError> {
    compile_record(serde_json::from_str(text)?)
}

fn remember(digest: &str, value: Option<Rc<CompiledKey>>, now_ms: i64, ttl_ms: i64) {
    match value {
        Some(key) => cache::insert_known(digest, key, now_ms, ttl_ms),
        None => cache::insert_unknown(digest, now_ms, ttl_ms),
    }
}
