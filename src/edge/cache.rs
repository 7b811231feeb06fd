//! The isolate's memory of key lookups and of each client's unknown-key reads (the data
//! structures are in `core::cache` and `core::budget`; this module holds the one instance of each).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde_json::{json, Value};
use wasm_bindgen::JsCast;

use crate::core::budget::{client_of, ClientBudget, UNKNOWN_KEY_READS};
use crate::core::cache::{KeyCache, Lookup};
use crate::core::CompiledKey;

/// Known keys: every key in use fits many times over. Unknown keys: enough to answer a client
/// that retries a dead key without a read, small enough that a flood costs little memory.
const KNOWN_KEYS: usize = 10_000;
const UNKNOWN_KEYS: usize = 1_024;

thread_local! {
    static KEYS: RefCell<KeyCache<Rc<CompiledKey>>> = RefCell::new(KeyCache::new(KNOWN_KEYS, UNKNOWN_KEYS));
    static BUDGET: RefCell<ClientBudget> = RefCell::new(ClientBudget::new(UNKNOWN_KEY_READS));
    static KEY_READS: Cell<u64> = const { Cell::new(0) };
    static UNKNOWN_READS_REFUSED: Cell<u64> = const { Cell::new(0) };
    static LIMITER_REFUSALS: Cell<u64> = const { Cell::new(0) };
}

pub fn get(digest: &str, now_ms: i64, ttl_ms: i64) -> Lookup<Rc<CompiledKey>> {
    KEYS.with(|c| c.borrow_mut().get(digest, now_ms, ttl_ms))
}

/// Caches `key` for `digest`; a few entries past `ttl_ms` are dropped on the way (`core::cache`).
pub fn insert_known(digest: &str, key: Rc<CompiledKey>, now_ms: i64, ttl_ms: i64) {
    KEYS.with(|c| c.borrow_mut().insert_known(digest, key, now_ms, ttl_ms));
}

/// Caches that no record exists for `digest` (in the small unknown-key map).
pub fn insert_unknown(digest: &str, now_ms: i64, ttl_ms: i64) {
    KEYS.with(|c| c.borrow_mut().insert_unknown(digest, now_ms, ttl_ms));
}

pub fn forget(digest: &str) {
    KEYS.with(|c| c.borrow_mut().forget(digest));
}

/// Forgets every key (the change feed was reset).
pub fn clear() {
    KEYS.with(|c| c.borrow_mut().clear());
}

/// Counts one read of a key record from KV (reported by the debug stats only).
pub fn count_key_read() {
    KEY_READS.with(|n| n.set(n.get() + 1));
}

/// `None` when the client at `ip` may cause a KV read for a key the cache does not hold; else
/// the seconds it must wait, because its reads found too many unknown keys.
pub fn unknown_read_retry_after(ip: Option<&str>, now_ms: i64) -> Option<u32> {
    let wait = BUDGET.with(|b| b.borrow_mut().retry_after(client_of(ip), now_ms));
    if wait.is_some() {
        UNKNOWN_READS_REFUSED.with(|n| n.set(n.get() + 1));
    }
    wait
}

/// A KV read for the client at `ip` found no key: it spends from the client's budget.
pub fn charge_unknown_read(ip: Option<&str>, now_ms: i64) {
    BUDGET.with(|b| b.borrow_mut().charge(client_of(ip), now_ms));
}

/// The name the client at `ip` is counted under by the Rate Limiting binding.
pub fn client_name(ip: Option<&str>) -> String {
    format!("{:032x}", client_of(ip))
}

/// The location-wide count (the Rate Limiting binding) says the client at `ip` is past its
/// bound: no more unknown-key reads for it in this isolate for `for_ms`.
pub fn shut_out(ip: Option<&str>, now_ms: i64, for_ms: i64) {
    LIMITER_REFUSALS.with(|n| n.set(n.get() + 1));
    BUDGET.with(|b| b.borrow_mut().shut_out(client_of(ip), now_ms, for_ms));
}

/// What `GET /_keyward/debug/stats` reports, when `KEYWARD_DEBUG` is set (tests only).
pub fn stats() -> Value {
    let (known, unknown) = KEYS.with(|c| c.borrow().sizes());
    let memory = wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .ok()
        .map(|m| js_sys::ArrayBuffer::from(m.buffer()).byte_length());
    json!({
        "key_reads": KEY_READS.with(Cell::get),
        "unknown_reads_refused": UNKNOWN_READS_REFUSED.with(Cell::get),
        "limiter_refusals": LIMITER_REFUSALS.with(Cell::get),
        "cached_known": known,
        "cached_unknown": unknown,
        "cached_known_capacity": KNOWN_KEYS,
        "cached_unknown_capacity": UNKNOWN_KEYS,
        "budget_clients": BUDGET.with(|b| b.borrow().clients()),
        "feed_recent": super::store::recent_count(),
        "wasm_memory_bytes": memory,
        "fast_path_answers": super::fast::answered(),
    })
}
