//! Usage counts: the tally an isolate keeps of the requests each known key made (per UTC hour and
//! outcome) until it flushes them, and the reading of `GET /api_keys/{id}/usage`'s parameters.

use std::collections::HashMap;

use super::time::{format_rfc3339, parse_rfc3339};
use super::Code;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// Keys a tally holds at most; requests of further keys are dropped (and counted as dropped)
/// until a flush makes room.
pub const MAX_TALLY_KEYS: usize = 10_000;
/// (key, hour, outcome) buckets a tally holds at most, all keys together.
pub const MAX_TALLY_BUCKETS: usize = 50_000;
/// Keys a flushed tally keeps room for (more is given back; see [`UsageTally::settle`]).
const TALLY_ROOM: usize = 64;
/// Buckets sent in one flush; the rest go in the next.
pub const MAX_BATCH_BUCKETS: usize = 5_000;
/// 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z: RFC 3339 writes the instants from the first
/// up to, not including, the second.
const FIRST_INSTANT_MS: i64 = -62_167_219_200_000;
const LAST_INSTANT_MS: i64 = 253_402_300_800_000;
/// The widest range one usage query may cover, per granularity.
pub const MAX_HOUR_BUCKETS: i64 = 31 * 24;
pub const MAX_DAY_BUCKETS: i64 = 366;

/// One key's counts since the last flush.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct KeyTally {
    /// The last allowed request (Unix ms), 0 when none since the last flush.
    last_valid_ms: i64,
    /// (hour number, outcome, count); a key rarely has more than a few at once.
    buckets: Vec<(i64, Code, u32)>,
}

/// What an isolate counted and has not yet flushed. Bounded: see [`MAX_TALLY_KEYS`] and
/// [`MAX_TALLY_BUCKETS`].
#[derive(Debug, Default)]
pub struct UsageTally {
    keys: HashMap<String, KeyTally>,
    buckets: usize,
    dropped: u64,
}

/// A part of a tally on its way to storage: settled (taken off the tally) once stored.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageBatch {
    /// `[key_id, hour number, outcome, count]`.
    pub counts: Vec<(String, i64, Code, u32)>,
    /// `[key_id, Unix ms of the last allowed request]`.
    pub last_used: Vec<(String, i64)>,
}

impl UsageBatch {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.last_used.is_empty()
    }
}

impl UsageTally {
    /// Counts one request of a known key with its outcome at `now_ms`.
    pub fn add(&mut self, key_id: &str, code: Code, now_ms: i64) {
        let hour = now_ms.div_euclid(HOUR_MS);
        if !self.keys.contains_key(key_id) {
            if self.keys.len() >= MAX_TALLY_KEYS || self.buckets >= MAX_TALLY_BUCKETS {
                self.dropped = self.dropped.saturating_add(1);
                return;
            }
            self.keys.insert(key_id.to_string(), KeyTally::default());
        }
        let Some(tally) = self.keys.get_mut(key_id) else { return };
        // Allowed by the gate: forwarded, whether or not the origin then answered.
        if matches!(code, Code::Valid | Code::OriginUnavailable | Code::OriginTimeout) {
            tally.last_valid_ms = tally.last_valid_ms.max(now_ms);
        }
        if let Some(bucket) = tally.buckets.iter_mut().find(|(h, c, _)| *h == hour && *c == code) {
            bucket.2 = bucket.2.saturating_add(1);
        } else if self.buckets < MAX_TALLY_BUCKETS {
            tally.buckets.push((hour, code, 1));
            self.buckets += 1;
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Requests not counted because the tally was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// A copy of at most `max_buckets` buckets (and the last-used times of their keys); the tally
    /// keeps them until [`settle`](Self::settle) says they were stored, so a failed flush loses nothing.
    pub fn batch(&self, max_buckets: usize) -> UsageBatch {
        let mut batch = UsageBatch::default();
        for (id, tally) in &self.keys {
            if batch.counts.len().saturating_add(tally.buckets.len()) > max_buckets && !batch.counts.is_empty() {
                break;
            }
            for (hour, code, n) in &tally.buckets {
                batch.counts.push((id.clone(), *hour, *code, *n));
            }
            if tally.last_valid_ms != 0 {
                batch.last_used.push((id.clone(), tally.last_valid_ms));
            }
        }
        batch
    }

    /// Takes a stored batch off the tally. Requests counted while it was being stored stay.
    pub fn settle(&mut self, batch: &UsageBatch) {
        for (id, hour, code, n) in &batch.counts {
            let Some(tally) = self.keys.get_mut(id.as_str()) else { continue };
            if let Some(bucket) = tally.buckets.iter_mut().find(|(h, c, _)| h == hour && c == code) {
                bucket.2 = bucket.2.saturating_sub(*n);
            }
            let before = tally.buckets.len();
            tally.buckets.retain(|(_, _, n)| *n > 0);
            self.buckets = self.buckets.saturating_sub(before - tally.buckets.len());
        }
        for (id, at) in &batch.last_used {
            if let Some(tally) = self.keys.get_mut(id.as_str()) {
                if tally.last_valid_ms <= *at {
                    tally.last_valid_ms = 0;
                }
            }
        }
        self.keys.retain(|_, t| !t.buckets.is_empty() || t.last_valid_ms != 0);
        // A burst of keys leaves the map's table at its peak size: once flushed, the room goes
        // back to the allocator (for the cache and the rest), keeping some for the next flush.
        let keep = self.keys.len().max(TALLY_ROOM);
        if self.keys.capacity() > 4 * keep {
            self.keys.shrink_to(keep);
        }
    }
}

/// How `GET /api_keys/{id}/usage` groups counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    pub fn bucket_ms(self) -> i64 {
        match self {
            Granularity::Hour => HOUR_MS,
            Granularity::Day => DAY_MS,
        }
    }

    fn max_buckets(self) -> i64 {
        match self {
            Granularity::Hour => MAX_HOUR_BUCKETS,
            Granularity::Day => MAX_DAY_BUCKETS,
        }
    }

    /// The range asked for when `from` is not given: the last 24 hours, or the last 30 days.
    fn default_span_ms(self) -> i64 {
        match self {
            Granularity::Hour => DAY_MS,
            Granularity::Day => 30 * DAY_MS,
        }
    }
}

/// A usage query: whole UTC buckets from `start_ms` (inclusive) to `end_ms` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRange {
    pub granularity: Granularity,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// A bad usage parameter: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError(pub String);

impl UsageRange {
    /// Reads `from`, `to` and `granularity` (each optional; defaults: `to` now, `granularity`
    /// hour, `from` a day (hour) or 30 days (day) before `to`). The range becomes the buckets it
    /// touches; more than [`MAX_HOUR_BUCKETS`] or [`MAX_DAY_BUCKETS`] of them is refused.
    pub fn parse(pairs: &[(String, String)], now_ms: i64) -> Result<UsageRange, ParamError> {
        let (mut from, mut to, mut granularity) = (None, None, Granularity::Hour);
        for (name, value) in pairs {
            match name.as_str() {
                "from" | "to" => {
                    let ms = parse_rfc3339(value).ok_or_else(|| {
                        ParamError(format!("{name}: must be an RFC 3339 timestamp such as 2030-01-31T12:00:00Z"))
                    })?;
                    if name == "from" {
                        from = Some(ms);
                    } else {
                        to = Some(ms);
                    }
                }
                "granularity" => {
                    granularity = match value.as_str() {
                        "hour" => Granularity::Hour,
                        "day" => Granularity::Day,
                        _ => return Err(ParamError("granularity: must be \"hour\" or \"day\"".into())),
                    };
                }
                other => return Err(ParamError(format!("{other}: is not a usage parameter (from, to, granularity)"))),
            }
        }
        let to = to.unwrap_or(now_ms);
        let from = from.unwrap_or_else(|| to.saturating_sub(granularity.default_span_ms()).max(FIRST_INSTANT_MS));
        if from >= to {
            return Err(ParamError("from: must be before to".into()));
        }
        let size = granularity.bucket_ms();
        let start_ms = from.div_euclid(size).saturating_mul(size);
        let end_ms = to.saturating_add(size - 1).div_euclid(size).saturating_mul(size);
        if end_ms >= LAST_INSTANT_MS {
            return Err(ParamError("to: must fall in a bucket that ends by 9999-12-31T23:59:59Z".into()));
        }
        let buckets = (end_ms - start_ms) / size;
        if buckets > granularity.max_buckets() {
            let span = match granularity {
                Granularity::Hour => "31 days",
                Granularity::Day => "366 days",
            };
            return Err(ParamError(format!("to: the range may cover at most {span} with granularity={}", granularity.as_str())));
        }
        Ok(UsageRange { granularity, start_ms, end_ms })
    }

    /// The first and one-past-last hour numbers the range covers.
    pub fn hours(&self) -> (i64, i64) {
        (self.start_ms.div_euclid(HOUR_MS), self.end_ms.div_euclid(HOUR_MS))
    }

    /// Every bucket of the range, with the counts of stored `(hour number, outcome, count)` rows
    /// that fall in it, as the API shows them (empty buckets included, outcomes by name).
    pub fn buckets(&self, rows: &[(i64, String, i64)]) -> serde_json::Value {
        use serde_json::{json, Map, Value};
        let size = self.granularity.bucket_ms();
        let count = usize::try_from((self.end_ms - self.start_ms) / size).unwrap_or(0);
        let mut buckets: Vec<(Map<String, Value>, i64)> = vec![(Map::new(), 0); count];
        let mut totals: Map<String, Value> = Map::new();
        let mut total = 0i64;
        for (hour, outcome, n) in rows {
            let at = hour.saturating_mul(HOUR_MS);
            if at < self.start_ms || at >= self.end_ms {
                continue;
            }
            let Some((counts, sum)) = usize::try_from((at - self.start_ms) / size).ok().and_then(|i| buckets.get_mut(i)) else {
                continue;
            };
            let old = counts.get(outcome).and_then(Value::as_i64).unwrap_or(0);
            counts.insert(outcome.clone(), json!(old + n));
            *sum += n;
            let old = totals.get(outcome).and_then(Value::as_i64).unwrap_or(0);
            totals.insert(outcome.clone(), json!(old + n));
            total += n;
        }
        let mut start = self.start_ms;
        let list: Vec<Value> = buckets
            .into_iter()
            .map(|(counts, sum)| {
                let bucket = json!({"start": format_rfc3339(start), "counts": counts, "total": sum});
                start += size;
                bucket
            })
            .collect();
        json!({
            "granularity": self.granularity.as_str(),
            "from": format_rfc3339(self.start_ms),
            "to": format_rfc3339(self.end_ms),
            "buckets": list,
            "totals": totals,
            "total": total,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_115_200_000; // 2025-11-26T00:00:00Z

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn tally_counts_per_hour_and_outcome_and_keeps_the_last_allowed_time() {
        let mut t = UsageTally::default();
        t.add("key_a", Code::Valid, T0 + 10);
        t.add("key_a", Code::Valid, T0 + 20);
        t.add("key_a", Code::PermissionDenied, T0 + 30);
        t.add("key_a", Code::Valid, T0 + HOUR_MS);
        t.add("key_b", Code::RouteNotAllowed, T0 + 40);
        let mut batch = t.batch(MAX_BATCH_BUCKETS);
        batch.counts.sort_by_key(|(id, h, c, _)| (id.clone(), *h, *c as usize));
        batch.last_used.sort();
        let h = T0 / HOUR_MS;
        assert_eq!(
            batch.counts,
            vec![
                ("key_a".into(), h, Code::Valid, 2),
                ("key_a".into(), h, Code::PermissionDenied, 1),
                ("key_a".into(), h + 1, Code::Valid, 1),
                ("key_b".into(), h, Code::RouteNotAllowed, 1),
            ]
        );
        assert_eq!(batch.last_used, vec![("key_a".into(), T0 + HOUR_MS)]);
    }

    #[test]
    fn settling_keeps_what_was_counted_during_the_flush() {
        let mut t = UsageTally::default();
        t.add("key_a", Code::Valid, T0);
        let batch = t.batch(MAX_BATCH_BUCKETS);
        t.add("key_a", Code::Valid, T0 + 1);
        t.settle(&batch);
        let rest = t.batch(MAX_BATCH_BUCKETS);
        assert_eq!(rest.counts, vec![("key_a".into(), T0 / HOUR_MS, Code::Valid, 1)]);
        assert_eq!(rest.last_used, vec![("key_a".into(), T0 + 1)]);
        t.settle(&rest);
        assert!(t.is_empty());
        assert_eq!(t.bucket_count(), 0);
    }

    #[test]
    fn an_unsettled_batch_stays_for_the_next_flush() {
        let mut t = UsageTally::default();
        t.add("key_a", Code::KeyExpired, T0);
        let first = t.batch(MAX_BATCH_BUCKETS);
        let second = t.batch(MAX_BATCH_BUCKETS);
        assert_eq!(first, second);
        assert!(first.last_used.is_empty(), "a denied request does not set last_used_at");
        t.add("key_b", Code::OriginTimeout, T0 + 5);
        assert_eq!(t.batch(MAX_BATCH_BUCKETS).last_used, vec![("key_b".into(), T0 + 5)], "one the origin failed does");
    }

    #[test]
    fn the_tally_is_bounded() {
        let mut t = UsageTally::default();
        for i in 0..MAX_TALLY_KEYS + 5 {
            t.add(&format!("key_{i}"), Code::Valid, T0);
        }
        assert_eq!(t.key_count(), MAX_TALLY_KEYS);
        assert_eq!(t.dropped(), 5);
        let batch = t.batch(100);
        assert_eq!(batch.counts.len(), 100);
    }

    #[test]
    fn a_flushed_tally_frees_its_keys_and_gives_back_a_burst_s_room() {
        let mut t = UsageTally::default();
        for i in 0..5_000 {
            t.add(&format!("key_{i}"), Code::Valid, T0);
        }
        assert!(t.keys.capacity() >= 5_000);
        while !t.is_empty() {
            let batch = t.batch(MAX_BATCH_BUCKETS);
            t.settle(&batch);
        }
        assert_eq!((t.key_count(), t.bucket_count()), (0, 0));
        assert!(t.keys.capacity() <= 4 * TALLY_ROOM, "room kept: {}", t.keys.capacity());
        // A tally of a few keys keeps its room from flush to flush.
        t.add("key_a", Code::Valid, T0);
        let room = t.keys.capacity();
        let batch = t.batch(MAX_BATCH_BUCKETS);
        t.settle(&batch);
        assert_eq!(t.keys.capacity(), room);
    }

    #[test]
    fn range_defaults_and_alignment() {
        let r = UsageRange::parse(&[], T0 + 90 * 60_000).unwrap();
        assert_eq!(r.granularity, Granularity::Hour);
        assert_eq!((r.end_ms - r.start_ms) / HOUR_MS, 25, "the hour now is included");
        let r = UsageRange::parse(&pairs(&[("granularity", "day")]), T0 + 1).unwrap();
        assert_eq!((r.end_ms - r.start_ms) / DAY_MS, 31);
        let r = UsageRange::parse(&pairs(&[("from", "2025-11-26T00:30:00Z"), ("to", "2025-11-26T02:00:00Z")]), 0).unwrap();
        assert_eq!((r.start_ms, r.end_ms), (T0, T0 + 2 * HOUR_MS));
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let bad = |list: &[(&str, &str)]| UsageRange::parse(&pairs(list), T0).unwrap_err().0;
        assert!(bad(&[("from", "yesterday")]).starts_with("from:"));
        assert!(bad(&[("to", "2025-13-01T00:00:00Z")]).starts_with("to:"));
        assert!(bad(&[("granularity", "minute")]).starts_with("granularity:"));
        assert!(bad(&[("limit", "3")]).starts_with("limit:"));
        assert!(bad(&[("from", "2025-11-26T02:00:00Z"), ("to", "2025-11-26T01:00:00Z")]).starts_with("from:"));
        assert!(bad(&[("from", "2025-01-01T00:00:00Z"), ("to", "2025-11-26T00:00:00Z")]).starts_with("to:"));
        assert!(bad(&[("to", "9999-12-31T23:30:00Z")]).starts_with("to:"));
        let earliest = UsageRange::parse(&pairs(&[("to", "0000-01-01T05:00:00Z")]), T0).unwrap();
        assert_eq!(crate::core::time::format_rfc3339(earliest.start_ms), "0000-01-01T00:00:00.000Z");
        assert!(UsageRange::parse(&pairs(&[("granularity", "day"), ("from", "2025-01-01T00:00:00Z"), ("to", "2025-11-26T00:00:00Z")]), T0).is_ok());
    }

    #[test]
    fn buckets_sum_rows_by_day() {
        let r = UsageRange::parse(&pairs(&[("granularity", "day"), ("from", "2025-11-25T00:00:00Z"), ("to", "2025-11-27T00:00:00Z")]), 0).unwrap();
        let h = T0 / HOUR_MS;
        let rows = vec![(h, "VALID".to_string(), 3), (h + 5, "VALID".to_string(), 2), (h - 1, "KEY_EXPIRED".to_string(), 1), (h + 48, "VALID".to_string(), 9)];
        let v = r.buckets(&rows);
        assert_eq!(v["buckets"].as_array().unwrap().len(), 2);
        assert_eq!(v["buckets"][0]["counts"]["KEY_EXPIRED"], 1);
        assert_eq!(v["buckets"][1]["counts"]["VALID"], 5);
        assert_eq!(v["totals"]["VALID"], 5);
        assert_eq!(v["total"], 6);
    }
}
