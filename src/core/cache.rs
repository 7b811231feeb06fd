//! The isolate's cache of key lookups, kept so that unknown keys can never evict known ones.
//!
//! Anyone can make well-formed keys (the checksum is public CRC-32), so the answers for unknown
//! keys live in their own small map: a flood of them churns that map only, and the known keys stay
//! in theirs. Both maps are bounded and evict by CLOCK (second chance), which keeps the keys that
//! are used and costs O(1) per operation. Entries past the TTL can never be answered from, so
//! each insertion also looks at a few slots and drops those gone stale: the maps hold about the
//! keys used within the last TTL, not every key ever used, and the isolate's memory (which never
//! shrinks) levels off with the traffic instead of creeping up to the caps. Time comes in as an
//! argument; nothing here reads a clock.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// A bounded map that evicts by CLOCK: each entry has a reference bit set when it is read; the
/// hand sweeps the slots, clearing set bits and evicting the first entry whose bit is clear.
#[derive(Debug, Clone)]
pub struct ClockMap<K, V> {
    index: HashMap<K, usize>,
    slots: Vec<Slot<K, V>>,
    hand: usize,
    /// Where [`ClockMap::reap`] looks next.
    reaper: usize,
    capacity: usize,
}

#[derive(Debug, Clone)]
struct Slot<K, V> {
    key: K,
    value: V,
    stamp_ms: i64,
    referenced: bool,
}

impl<K: Hash + Eq + Clone, V> ClockMap<K, V> {
    /// A map holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ClockMap { index: HashMap::new(), slots: Vec::new(), hand: 0, reaper: 0, capacity }
    }

    /// Like [`ClockMap::new`], with the room for every entry allocated at once: the map's memory
    /// never grows afterwards.
    pub fn with_room(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // The index is a hashbrown table: under churn its tombstones make it grow to hold twice
        // its entries before it settles on rehashing in place, so that is allocated at once.
        let index = HashMap::with_capacity(capacity.saturating_mul(2).saturating_add(2));
        ClockMap { index, slots: Vec::with_capacity(capacity), hand: 0, reaper: 0, capacity }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Removes every entry, keeping the room allocated.
    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.hand = 0;
        self.reaper = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The value and the time it was stored; marks the entry as used.
    pub fn get<Q>(&mut self, key: &Q) -> Option<(&V, i64)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.index.get(key)?;
        let slot = self.slots.get_mut(i)?;
        slot.referenced = true;
        Some((&slot.value, slot.stamp_ms))
    }

    /// Like [`ClockMap::get`], for changing the value in place.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.index.get(key)?;
        let slot = self.slots.get_mut(i)?;
        slot.referenced = true;
        Some(&mut slot.value)
    }

    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.index.contains_key(key)
    }

    /// Stores `value` under `key`, replacing any value there; when full, evicts one entry first.
    /// A new entry starts unreferenced, so one that is never read again is the next to go.
    pub fn insert(&mut self, key: K, value: V, stamp_ms: i64) {
        if let Some(slot) = self.index.get(&key).and_then(|&i| self.slots.get_mut(i)) {
            slot.value = value;
            slot.stamp_ms = stamp_ms;
            slot.referenced = true;
            return;
        }
        let slot = Slot { key: key.clone(), value, stamp_ms, referenced: false };
        if self.slots.len() < self.capacity {
            self.index.insert(key, self.slots.len());
            self.slots.push(slot);
            return;
        }
        let victim = self.sweep();
        if let Some(old) = self.slots.get_mut(victim) {
            self.index.remove(&old.key);
            *old = slot;
            self.index.insert(key, victim);
        }
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.index.get(key)?;
        self.remove_at(i)
    }

    /// Removes the entry in slot `i`; the last slot moves into its place.
    fn remove_at(&mut self, i: usize) -> Option<V> {
        if i >= self.slots.len() {
            return None;
        }
        let removed = self.slots.swap_remove(i);
        self.index.remove(&removed.key);
        // The last slot moved into the hole: point its index entry at its new place.
        if let Some(moved) = self.slots.get(i) {
            if let Some(at) = self.index.get_mut(&moved.key) {
                *at = i;
            }
        }
        if self.hand >= self.slots.len() {
            self.hand = 0;
        }
        if self.reaper > self.slots.len() {
            self.reaper = 0;
        }
        Some(removed.value)
    }

    /// Looks at up to `steps` slots from where the last call stopped, removing each entry stored
    /// `ttl_ms` or more before `now_ms` (one [`KeyCache::get`] would no longer answer from);
    /// returns how many it removed. O(`steps`): with one call per entry stored, the map levels
    /// off at a small multiple of the entries stored within one TTL, whatever its capacity
    /// (see [`REAP_STEPS`]).
    pub fn reap(&mut self, now_ms: i64, ttl_ms: i64, steps: usize) -> usize {
        self.reap_where(steps, |_, stamp| now_ms.saturating_sub(stamp) >= ttl_ms)
    }

    /// Like [`ClockMap::reap`], removing the entries `spent` says (given the value and the time
    /// it was stored) are worth no more than no entry at all.
    pub fn reap_where(&mut self, steps: usize, mut spent: impl FnMut(&V, i64) -> bool) -> usize {
        let mut removed = 0;
        for _ in 0..steps {
            if self.reaper >= self.slots.len() {
                self.reaper = 0;
            }
            let Some(slot) = self.slots.get(self.reaper) else { break };
            if spent(&slot.value, slot.stamp_ms) {
                // The last slot moves here: it is looked at next.
                self.remove_at(self.reaper);
                removed += 1;
            } else {
                self.reaper += 1;
            }
        }
        removed
    }

    /// Advances the hand to the slot to evict; at most two turns (the first clears every bit).
    fn sweep(&mut self) -> usize {
        let len = self.slots.len();
        for _ in 0..=(2 * len) {
            if self.hand >= len {
                self.hand = 0;
            }
            let here = self.hand;
            self.hand += 1;
            match self.slots.get_mut(here) {
                Some(slot) if slot.referenced => slot.referenced = false,
                _ => return here,
            }
        }
        0
    }
}

/// Slots of each map looked at for stale entries per insertion (see [`ClockMap::reap`]): four,
/// which keeps a map under about twice the keys stored within one TTL (a removal moves the last
/// slot, a fresh one, under the reaper, so two would let it reach four or five times).
const REAP_STEPS: usize = 4;

/// What the cache knows about a key digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<V> {
    /// A record is stored under it (fresh within the TTL).
    Known(V),
    /// The store was asked and had nothing (fresh within the TTL).
    Unknown,
    /// Nothing fresh: the store must be read.
    Miss,
}

/// A key digest (64 lower-case hex digits, as `core::digest::key_digest` writes it) as its 32
/// bytes: a map key of fixed size, with no allocation of its own.
pub type DigestBytes = [u8; 32];

/// The bytes of `digest`; `None` for anything but 64 lower-case hex digits (so that two
/// different strings never share an entry).
pub fn digest_bytes(digest: &str) -> Option<DigestBytes> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let text = digest.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (&hi, &lo) = (pair.first()?, pair.get(1)?);
        *byte = (nibble(hi)? << 4) | nibble(lo)?;
    }
    Some(out)
}

/// Known keys and unknown ones, each in its own bounded map, by digest. The unknown map is the
/// negative area: small, and allocated whole when the cache is made, so that a flood of unknown
/// keys never grows the isolate's memory. A string that is not a digest is never cached.
#[derive(Debug, Clone)]
pub struct KeyCache<V> {
    known: ClockMap<DigestBytes, V>,
    unknown: ClockMap<DigestBytes, ()>,
}

impl<V: Clone> KeyCache<V> {
    pub fn new(known_capacity: usize, unknown_capacity: usize) -> Self {
        KeyCache { known: ClockMap::new(known_capacity), unknown: ClockMap::with_room(unknown_capacity) }
    }

    /// What is cached for `digest`, if it was stored less than `ttl_ms` before `now_ms`.
    pub fn get(&mut self, digest: &str, now_ms: i64, ttl_ms: i64) -> Lookup<V> {
        let Some(digest) = digest_bytes(digest) else { return Lookup::Miss };
        let fresh = |stamp: i64| now_ms.saturating_sub(stamp) < ttl_ms;
        if let Some((value, stamp)) = self.known.get(&digest) {
            return if fresh(stamp) { Lookup::Known(value.clone()) } else { Lookup::Miss };
        }
        match self.unknown.get(&digest) {
            Some((_, stamp)) if fresh(stamp) => Lookup::Unknown,
            _ => Lookup::Miss,
        }
    }

    /// Caches the record found for `digest`; entries older than `ttl_ms` seen on the way go.
    /// With no TTL (`ttl_ms` ≤ 0) nothing would ever be found fresh: nothing is kept.
    pub fn insert_known(&mut self, digest: &str, value: V, now_ms: i64, ttl_ms: i64) {
        if ttl_ms <= 0 {
            return;
        }
        self.reap(now_ms, ttl_ms);
        let Some(digest) = digest_bytes(digest) else { return };
        self.unknown.remove(&digest);
        self.known.insert(digest, value, now_ms);
    }

    /// Caches that the store has no record for `digest`; entries older than `ttl_ms` seen on the
    /// way go. With no TTL, as [`KeyCache::insert_known`].
    pub fn insert_unknown(&mut self, digest: &str, now_ms: i64, ttl_ms: i64) {
        if ttl_ms <= 0 {
            return;
        }
        self.reap(now_ms, ttl_ms);
        let Some(digest) = digest_bytes(digest) else { return };
        self.known.remove(&digest);
        self.unknown.insert(digest, (), now_ms);
    }

    /// A few slots of each map, for entries past the TTL (see [`ClockMap::reap`]).
    fn reap(&mut self, now_ms: i64, ttl_ms: i64) {
        self.known.reap(now_ms, ttl_ms, REAP_STEPS);
        self.unknown.reap(now_ms, ttl_ms, REAP_STEPS);
    }

    /// Drops whatever is cached for `digest` (after a write), so the next lookup reads the store.
    pub fn forget(&mut self, digest: &str) {
        let Some(digest) = digest_bytes(digest) else { return };
        self.known.remove(&digest);
        self.unknown.remove(&digest);
    }

    /// Forgets everything (keeping the maps' room).
    pub fn clear(&mut self) {
        self.known.clear();
        self.unknown.clear();
    }

    /// How many known and unknown entries are held.
    pub fn sizes(&self) -> (usize, usize) {
        (self.known.len(), self.unknown.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A digest as the gate makes one (64 lower-case hex digits), for a label.
    fn d(label: &str) -> String {
        crate::core::digest::key_digest(label)
    }

    #[test]
    fn unknown_keys_never_evict_known_ones() {
        let mut cache: KeyCache<u32> = KeyCache::new(100, 16);
        for i in 0..100 {
            cache.insert_known(&d(&format!("known-{i}")), i, 0, 1000);
        }
        for i in 0..100_000 {
            let digest = d(&format!("flood-{i}"));
            assert_eq!(cache.get(&digest, 1, 1000), Lookup::Miss);
            cache.insert_unknown(&digest, 1, 1000);
        }
        for i in 0..100 {
            assert_eq!(cache.get(&d(&format!("known-{i}")), 2, 1000), Lookup::Known(i));
        }
        assert_eq!(cache.sizes(), (100, 16));
        assert_eq!(cache.get(&d("flood-99999"), 2, 1000), Lookup::Unknown);
    }

    #[test]
    fn entries_go_stale_after_the_ttl() {
        let mut cache: KeyCache<u32> = KeyCache::new(4, 4);
        cache.insert_known(&d("a"), 1, 1000, 1000);
        cache.insert_unknown(&d("b"), 1000, 1000);
        assert_eq!(cache.get(&d("a"), 1999, 1000), Lookup::Known(1));
        assert_eq!(cache.get(&d("a"), 2000, 1000), Lookup::Miss);
        assert_eq!(cache.get(&d("b"), 1999, 1000), Lookup::Unknown);
        assert_eq!(cache.get(&d("b"), 2000, 1000), Lookup::Miss);
        assert_eq!(cache.get(&d("a"), 1000, 0), Lookup::Miss, "a TTL of 0 caches nothing");
    }

    #[test]
    fn a_key_is_known_or_unknown_never_both() {
        let mut cache: KeyCache<u32> = KeyCache::new(4, 4);
        cache.insert_unknown(&d("a"), 0, 10);
        cache.insert_known(&d("a"), 7, 0, 10);
        assert_eq!(cache.get(&d("a"), 0, 10), Lookup::Known(7));
        assert_eq!(cache.sizes(), (1, 0));
        cache.insert_unknown(&d("a"), 0, 10);
        assert_eq!(cache.get(&d("a"), 0, 10), Lookup::Unknown);
        assert_eq!(cache.sizes(), (0, 1));
        cache.forget(&d("a"));
        assert_eq!(cache.get(&d("a"), 0, 10), Lookup::Miss);
        assert_eq!(cache.sizes(), (0, 0));
        cache.insert_known(&d("b"), 1, 0, 10);
        cache.insert_unknown(&d("c"), 0, 10);
        cache.clear();
        assert_eq!(cache.sizes(), (0, 0));
        assert_eq!(cache.get(&d("b"), 0, 10), Lookup::Miss);
    }

    #[test]
    fn clock_keeps_what_is_read_and_evicts_what_is_not() {
        let mut map: ClockMap<u32, ()> = ClockMap::new(4);
        for k in 0..4 {
            map.insert(k, (), 0);
        }
        // 0 and 1 are used; 2 and 3 are not. Two new entries take the places of 2 and 3.
        map.get(&0);
        map.get(&1);
        map.insert(10, (), 0);
        map.insert(11, (), 0);
        assert!(map.contains(&0) && map.contains(&1));
        assert!(!map.contains(&2) && !map.contains(&3));
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn a_hot_key_survives_a_scan_of_cold_ones() {
        let mut map: ClockMap<u32, ()> = ClockMap::new(64);
        map.insert(0, (), 0);
        for k in 1..10_000 {
            map.get(&0);
            map.insert(k, (), 0);
        }
        assert!(map.contains(&0));
    }

    #[test]
    fn only_digests_are_cached_each_under_its_own_bytes() {
        let mut cache: KeyCache<u32> = KeyCache::new(4, 4);
        let upper = d("a").to_uppercase();
        for not_a_digest in ["", "a", &upper, &d("a")[1..], &format!("{}0", d("a")), &d("a").replacen('0', "g", 1)] {
            assert_eq!(digest_bytes(not_a_digest), None, "{not_a_digest:?}");
            cache.insert_known(not_a_digest, 1, 0, 10);
            cache.insert_unknown(not_a_digest, 0, 10);
            assert_eq!(cache.get(not_a_digest, 0, 10), Lookup::Miss);
        }
        assert_eq!(cache.sizes(), (0, 0));
        let bytes = digest_bytes(&d("a")).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, d("a"), "the bytes print back as the digest");
        assert_eq!(digest_bytes(&"f".repeat(64)), Some([0xff; 32]));
    }

    #[test]
    fn the_unknown_map_is_allocated_whole_and_clear_keeps_the_room() {
        let mut cache: KeyCache<u32> = KeyCache::new(100, 64);
        let room = (cache.unknown.slots.capacity(), cache.unknown.index.capacity());
        assert!(room.0 >= 64 && room.1 >= 64);
        // A flood: the map full and churning (evictions) for long, then stale and reaped.
        for i in 0..5000 {
            cache.insert_unknown(&d(&i.to_string()), i / 10, 10);
            assert_eq!((cache.unknown.slots.capacity(), cache.unknown.index.capacity()), room, "at {i}");
        }
        cache.clear();
        assert_eq!(cache.sizes(), (0, 0));
        assert_eq!((cache.unknown.slots.capacity(), cache.unknown.index.capacity()), room);
    }

    #[test]
    fn stale_entries_go_as_new_ones_arrive_so_the_maps_level_off() {
        // A new key every ms, each used once, a TTL of 100 ms, room for 10 000: without reaping
        // the map would fill to its capacity; with it, it holds about the last TTL's keys.
        let mut cache: KeyCache<u32> = KeyCache::new(10_000, 1_024);
        let mut largest = (0, 0);
        for t in 0..100_000i64 {
            cache.insert_known(&d(&format!("k{t}")), 0, t, 100);
            cache.insert_unknown(&d(&format!("u{t}")), t, 100);
            let (known, unknown) = cache.sizes();
            largest = (largest.0.max(known), largest.1.max(unknown));
        }
        assert!(largest.0 <= 2 * 100 + 2 && largest.1 <= 2 * 100 + 2, "largest {largest:?}");
        assert!(cache.known.slots.capacity() <= 512 && cache.known.index.capacity() <= 1024);
        assert_eq!(cache.unknown.slots.capacity(), 1_024, "the unknown map never grew past its room");
        // Every key stored within the TTL is still answered.
        for t in 99_901..100_000i64 {
            assert_eq!(cache.get(&d(&format!("k{t}")), 100_000, 100), Lookup::Known(0));
            assert_eq!(cache.get(&d(&format!("u{t}")), 100_000, 100), Lookup::Unknown);
        }
        // Known keys alone (each insertion looks at REAP_STEPS slots of the known map only):
        // under twice one TTL's keys.
        let mut cache: KeyCache<u32> = KeyCache::new(10_000, 1_024);
        let mut most = 0;
        for t in 0..100_000i64 {
            cache.insert_known(&d(&format!("k{t}")), 0, t, 100);
            most = most.max(cache.sizes().0);
        }
        assert!(most <= 2 * 100, "most {most}");
    }

    #[test]
    fn reaping_keeps_fresh_entries_and_the_index_whole() {
        let mut map: ClockMap<u32, u32> = ClockMap::new(8);
        for k in 0..8 {
            map.insert(k, k, if k % 2 == 0 { 0 } else { 50 });
        }
        // At 60 with a TTL of 30, the entries stored at 0 are stale and those at 50 are not.
        let mut removed = 0;
        for _ in 0..8 {
            removed += map.reap(60, 30, 2);
        }
        assert_eq!(removed, 4);
        assert_eq!(map.len(), 4);
        for k in 0..8 {
            assert_eq!(map.contains(&k), k % 2 == 1, "key {k}");
            if k % 2 == 1 {
                assert_eq!(map.get(&k), Some((&k, 50)));
            }
        }
        assert_eq!(map.reap(60, 30, 100), 0, "nothing fresh is removed, however far it looks");
        assert_eq!(map.reap(80, 30, 100), 4);
        assert!(map.is_empty());
        assert_eq!(map.reap(80, 30, 3), 0, "an empty map is a no-op");
    }

    /// An [`Op`], or time passing (ms): one in five steps waits, as each operation is one in five.
    #[derive(Debug, Clone)]
    enum Timed {
        Op(Op),
        Wait(u8),
    }

    fn timed() -> impl Strategy<Value = Timed> {
        prop_oneof![4 => op().prop_map(Timed::Op), 1 => any::<u8>().prop_map(Timed::Wait)]
    }

    #[derive(Debug, Clone)]
    enum Op {
        Known(u8, u32),
        Unknown(u8),
        Forget(u8),
        Get(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Known(k, v)),
            any::<u8>().prop_map(Op::Unknown),
            any::<u8>().prop_map(Op::Forget),
            any::<u8>().prop_map(Op::Get),
        ]
    }

    proptest! {
        /// Against a model with no bounds: the cache holds at most its capacities, never answers
        /// with a value other than the last one stored, and its index always agrees with its slots.
        #[test]
        fn agrees_with_an_unbounded_model(ops in proptest::collection::vec(op(), 0..400), known_cap in 1usize..12, unknown_cap in 1usize..6) {
            let mut cache: KeyCache<u32> = KeyCache::new(known_cap, unknown_cap);
            let mut model: HashMap<String, Option<u32>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Known(k, v) => { cache.insert_known(&d(&k.to_string()), v, 0, 10); model.insert(d(&k.to_string()), Some(v)); }
                    Op::Unknown(k) => { cache.insert_unknown(&d(&k.to_string()), 0, 10); model.insert(d(&k.to_string()), None); }
                    Op::Forget(k) => { cache.forget(&d(&k.to_string())); model.remove(&d(&k.to_string())); }
                    Op::Get(k) => {
                        let k = d(&k.to_string());
                        match cache.get(&k, 0, 10) {
                            Lookup::Known(v) => prop_assert_eq!(model.get(&k), Some(&Some(v))),
                            Lookup::Unknown => prop_assert_eq!(model.get(&k), Some(&None)),
                            Lookup::Miss => {}
                        }
                    }
                }
                let (known, unknown) = cache.sizes();
                prop_assert!(known <= known_cap && unknown <= unknown_cap);
                for (key, &i) in cache.known.index.iter() {
                    prop_assert_eq!(&cache.known.slots[i].key, key);
                }
                for (key, &i) in cache.unknown.index.iter() {
                    prop_assert_eq!(&cache.unknown.slots[i].key, key);
                }
                prop_assert_eq!(cache.known.index.len(), cache.known.slots.len());
                prop_assert_eq!(cache.unknown.index.len(), cache.unknown.slots.len());
            }
        }

        /// With time passing and the TTL reaping: with room for every key, a fresh entry is
        /// always answered with the last value stored (reaping never removes one), a stale one
        /// never; with less room, an answer is never wrong. The index always agrees with the slots.
        #[test]
        fn reaping_agrees_with_a_timed_model(ops in proptest::collection::vec(timed(), 0..400), ttl in 0i64..300, small in any::<bool>()) {
            let (known_cap, unknown_cap) = if small { (8, 4) } else { (256, 256) };
            let mut cache: KeyCache<u32> = KeyCache::new(known_cap, unknown_cap);
            let mut model: HashMap<String, (Option<u32>, i64)> = HashMap::new();
            let mut now = 0i64;
            for op in ops {
                match op {
                    Timed::Op(Op::Known(k, v)) => { cache.insert_known(&d(&k.to_string()), v, now, ttl); model.insert(d(&k.to_string()), (Some(v), now)); }
                    Timed::Op(Op::Unknown(k)) => { cache.insert_unknown(&d(&k.to_string()), now, ttl); model.insert(d(&k.to_string()), (None, now)); }
                    Timed::Op(Op::Forget(k)) => { cache.forget(&d(&k.to_string())); model.remove(&d(&k.to_string())); }
                    Timed::Wait(ms) => now += i64::from(ms),
                    Timed::Op(Op::Get(k)) => {
                        let k = d(&k.to_string());
                        let want = model.get(&k).filter(|(_, at)| now - at < ttl).map(|(v, _)| *v);
                        match (cache.get(&k, now, ttl), want) {
                            (Lookup::Known(v), Some(Some(w))) => prop_assert_eq!(v, w),
                            (Lookup::Unknown, Some(None)) => {}
                            (Lookup::Miss, Some(_)) => prop_assert!(small, "a fresh entry was lost with room to spare"),
                            (Lookup::Miss, None) => {}
                            (got, want) => prop_assert!(false, "answered {:?}, the model says {:?}", got, want),
                        }
                    }
                }
                for (key, &i) in cache.known.index.iter() {
                    prop_assert_eq!(&cache.known.slots[i].key, key);
                }
                for (key, &i) in cache.unknown.index.iter() {
                    prop_assert_eq!(&cache.unknown.slots[i].key, key);
                }
                prop_assert_eq!(cache.known.index.len(), cache.known.slots.len());
                prop_assert_eq!(cache.unknown.index.len(), cache.unknown.slots.len());
                let (known, unknown) = cache.sizes();
                prop_assert!(known <= known_cap && unknown <= unknown_cap);
            }
        }

        /// However unknown digests are interleaved, every known key inserted (within capacity)
        /// is still there afterwards.
        #[test]
        fn no_unknown_flood_evicts_a_known_key(flood in proptest::collection::vec(any::<u16>(), 0..2000)) {
            let mut cache: KeyCache<u8> = KeyCache::new(8, 4);
            for k in 0..8u8 {
                cache.insert_known(&d(&format!("k{k}")), k, 0, 10);
            }
            for n in flood {
                let digest = d(&format!("u{n}"));
                if cache.get(&digest, 0, 10) == Lookup::Miss {
                    cache.insert_unknown(&digest, 0, 10);
                }
            }
            for k in 0..8u8 {
                prop_assert_eq!(cache.get(&d(&format!("k{k}")), 0, 10), Lookup::Known(k));
            }
        }
    }
}
