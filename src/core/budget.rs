//! The per-client bound on store reads for unknown keys: a token bucket per client address.
//!
//! Each store read that finds no key spends one token of the client's bucket; a client with an
//! empty bucket gets no store read for a key the cache does not hold until the bucket refills
//! (429 `RATE_LIMITED` with `Retry-After`). Known keys cost nothing, so a client using real keys
//! never runs dry. IPv6 clients are counted per /64, the block one subscriber usually holds.

use std::net::IpAddr;

use super::cache::ClockMap;
use super::ip::parse_addr;

/// Bucket size and refill rate; how many clients are tracked (the least used are forgotten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    pub burst: u32,
    pub refill_per_second: u32,
    pub max_clients: usize,
}

/// Per client: 100 unknown-key reads at once, then 10 a second.
pub const UNKNOWN_KEY_READS: BudgetLimits = BudgetLimits { burst: 100, refill_per_second: 10, max_clients: 10_000 };

#[derive(Debug, Clone)]
struct Bucket {
    /// Thousandths of a token, so that refill needs no floating point.
    milli_tokens: i64,
    updated_ms: i64,
}

#[derive(Debug, Clone)]
pub struct ClientBudget {
    limits: BudgetLimits,
    buckets: ClockMap<u128, Bucket>,
}

/// The client a request is counted against: its IPv4 address, or its IPv6 /64 (as an IPv6
/// number, IPv4 mapped). Requests without a readable address share one bucket.
pub fn client_of(ip: Option<&str>) -> u128 {
    match ip.and_then(|text| parse_addr(text).ok()) {
        Some(IpAddr::V4(v4)) => u128::from(v4.to_ipv6_mapped()),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6) & !u128::from(u64::MAX),
        },
        None => 0,
    }
}

impl ClientBudget {
    pub fn new(limits: BudgetLimits) -> Self {
        ClientBudget { limits, buckets: ClockMap::new(limits.max_clients) }
    }

    fn capacity(&self) -> i64 {
        i64::from(self.limits.burst) * 1000
    }

    fn level(&self, bucket: &Bucket, now_ms: i64) -> i64 {
        let elapsed = now_ms.saturating_sub(bucket.updated_ms).max(0);
        bucket
            .milli_tokens
            .saturating_add(elapsed.saturating_mul(i64::from(self.limits.refill_per_second)))
            .min(self.capacity())
    }

    /// `None` when `client` may cause a store read now; else the whole seconds until it may.
    pub fn retry_after(&mut self, client: u128, now_ms: i64) -> Option<u32> {
        let capacity = self.capacity();
        let refill = i64::from(self.limits.refill_per_second);
        let level = match self.buckets.get(&client) {
            None => capacity,
            Some((bucket, _)) => {
                let bucket = bucket.clone();
                self.level(&bucket, now_ms)
            }
        };
        if level >= 1000 {
            return None;
        }
        if refill == 0 {
            return Some(u32::MAX);
        }
        // Milli-tokens missing over milli-tokens per second, rounded up to whole seconds.
        let missing = 1000 - level;
        let seconds = (missing + refill * 1000 - 1) / (refill * 1000);
        Some(u32::try_from(seconds.max(1)).unwrap_or(u32::MAX))
    }

    /// A bucket refilled to the brim is the same as none: before a bucket is added, a couple of
    /// the table's are looked at and the full ones go, so the table holds the clients seen
    /// within a refill, not every client since the isolate started (up to `max_clients`).
    fn reap_full(&mut self, now_ms: i64) {
        let (capacity, refill) = (self.capacity(), i64::from(self.limits.refill_per_second));
        self.buckets.reap_where(2, |bucket, _| {
            let elapsed = now_ms.saturating_sub(bucket.updated_ms).max(0);
            bucket.milli_tokens.saturating_add(elapsed.saturating_mul(refill)) >= capacity
        });
    }

    /// Spends one token of `client`'s bucket (a store read found no key).
    pub fn charge(&mut self, client: u128, now_ms: i64) {
        let capacity = self.capacity();
        let level = match self.buckets.get(&client) {
            None => capacity,
            Some((bucket, _)) => {
                let bucket = bucket.clone();
                self.level(&bucket, now_ms)
            }
        };
        let bucket = Bucket { milli_tokens: level.saturating_sub(1000).max(0), updated_ms: now_ms };
        match self.buckets.get_mut(&client) {
            Some(existing) => *existing = bucket,
            None => {
                self.reap_full(now_ms);
                self.buckets.insert(client, bucket, now_ms);
            }
        }
    }

    /// Empties `client`'s bucket for `for_ms` (another counter, shared wider than this isolate,
    /// says the client is past its bound): no store read for it until then.
    pub fn shut_out(&mut self, client: u128, now_ms: i64, for_ms: i64) {
        let refill = i64::from(self.limits.refill_per_second);
        // The level that refills to exactly one token at now + for_ms.
        let bucket = Bucket { milli_tokens: 1000i64.saturating_sub(for_ms.max(0).saturating_mul(refill)), updated_ms: now_ms };
        match self.buckets.get_mut(&client) {
            Some(existing) => *existing = bucket,
            None => {
                self.reap_full(now_ms);
                self.buckets.insert(client, bucket, now_ms);
            }
        }
    }

    pub fn clients(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]
mod tests {
    use super::*;

    const SMALL: BudgetLimits = BudgetLimits { burst: 3, refill_per_second: 2, max_clients: 4 };

    #[test]
    fn a_client_gets_its_burst_then_waits_for_the_refill() {
        let mut budget = ClientBudget::new(SMALL);
        let a = client_of(Some("192.0.2.1"));
        for _ in 0..3 {
            assert_eq!(budget.retry_after(a, 0), None);
            budget.charge(a, 0);
        }
        assert_eq!(budget.retry_after(a, 0), Some(1));
        assert_eq!(budget.retry_after(a, 499), Some(1));
        assert_eq!(budget.retry_after(a, 500), None, "half a second refills one token at 2/s");
        budget.charge(a, 500);
        assert_eq!(budget.retry_after(a, 500), Some(1));
        assert_eq!(budget.retry_after(a, 100_000), None);
    }

    #[test]
    fn clients_are_apart() {
        let mut budget = ClientBudget::new(SMALL);
        let a = client_of(Some("192.0.2.1"));
        let b = client_of(Some("192.0.2.2"));
        for _ in 0..3 {
            budget.charge(a, 0);
        }
        assert!(budget.retry_after(a, 0).is_some());
        assert_eq!(budget.retry_after(b, 0), None);
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_v4_as_v4() {
        assert_eq!(client_of(Some("2001:db8:1:2::1")), client_of(Some("2001:db8:1:2:ffff::9")));
        assert_ne!(client_of(Some("2001:db8:1:2::1")), client_of(Some("2001:db8:1:3::1")));
        assert_eq!(client_of(Some("::ffff:192.0.2.1")), client_of(Some("192.0.2.1")));
        assert_ne!(client_of(Some("192.0.2.1")), client_of(Some("192.0.2.2")));
        assert_eq!(client_of(None), client_of(Some("not an address")));
    }

    #[test]
    fn a_client_shut_out_waits_the_whole_time() {
        let mut budget = ClientBudget::new(SMALL);
        let a = client_of(Some("192.0.2.1"));
        budget.shut_out(a, 1000, 10_000);
        assert_eq!(budget.retry_after(a, 1000), Some(10));
        assert_eq!(budget.retry_after(a, 6000), Some(5));
        assert_eq!(budget.retry_after(a, 10_999), Some(1));
        assert_eq!(budget.retry_after(a, 11_000), None);
        assert_eq!(budget.retry_after(client_of(Some("192.0.2.2")), 1000), None);
    }

    #[test]
    fn the_client_table_is_bounded() {
        let mut budget = ClientBudget::new(SMALL);
        for i in 0..1000u32 {
            budget.charge(u128::from(i) + 1, 0);
        }
        assert!(budget.clients() <= 4);
    }

    #[test]
    fn full_buckets_go_so_the_table_holds_the_clients_seen_within_a_refill() {
        // One unknown-key read each, from a new client every 10 ms: a bucket is full again 500 ms
        // after its read, the same as none, so the table holds about the last 500 ms's clients.
        let limits = BudgetLimits { max_clients: 10_000, ..SMALL };
        let mut budget = ClientBudget::new(limits);
        let mut largest = 0;
        for i in 0..5_000u32 {
            let now = i64::from(i) * 10;
            assert_eq!(budget.retry_after(u128::from(i), now), None);
            budget.charge(u128::from(i), now);
            largest = largest.max(budget.clients());
        }
        assert!(largest <= 3 * 50, "largest {largest}");
        // A client whose bucket is not full is kept, and still counted.
        let mut budget = ClientBudget::new(limits);
        let a = client_of(Some("192.0.2.1"));
        for _ in 0..3 {
            budget.charge(a, 0);
        }
        for i in 0..100u32 {
            budget.charge(u128::from(i) + 7, 100 + i64::from(i));
        }
        assert_eq!(budget.retry_after(a, 200), Some(1), "the spent bucket survived the reaping");
    }

    proptest::proptest! {
        /// Over any run of requests from one client, the reads allowed never exceed the burst
        /// plus what the elapsed time refilled.
        #[test]
        fn reads_stay_within_the_bound(steps in proptest::collection::vec(0i64..400, 1..300)) {
            let mut budget = ClientBudget::new(SMALL);
            let mut now = 0i64;
            let mut reads = 0i64;
            for step in steps {
                now += step;
                if budget.retry_after(7, now).is_none() {
                    budget.charge(7, now);
                    reads += 1;
                }
            }
            proptest::prop_assert!(reads <= 3 + now * 2 / 1000 + 1);
        }
    }
}
