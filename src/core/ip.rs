//! Strictly parsed IPv4/IPv6 addresses and CIDR ranges, and allowlists that match with one
//! binary search whatever their size.
//!
//! Modelled on cedar's `ipaddr` extension: an IPv4 address never matches an IPv6 range (nor the
//! reverse, not even through `::ffff:a.b.c.d`), octets and prefixes with leading zeros are
//! refused, the prefix must be in range, and masks are built with checked shifts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest text accepted for one address or range; the longest valid IPv6 CIDR is 49 characters.
pub const MAX_ENTRY_LEN: usize = 64;

/// A network: an address with its host bits cleared and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpNet {
    V4 { addr: u32, prefix: u8 },
    V6 { addr: u128, prefix: u8 },
}

/// Why one address or range did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpParseError {
    pub message: String,
}

/// Which entry of an allowlist did not parse, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpListError {
    pub index: usize,
    pub entry: String,
    pub message: String,
}

fn error(message: impl Into<String>) -> IpParseError {
    IpParseError { message: message.into() }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0)
}

/// Parses a single IPv4 or IPv6 address (no prefix, no zone, no brackets).
pub fn parse_addr(text: &str) -> Result<IpAddr, IpParseError> {
    if text.is_empty() {
        return Err(error("is empty"));
    }
    if text.len() > MAX_ENTRY_LEN {
        return Err(error(format!("is longer than {MAX_ENTRY_LEN} characters")));
    }
    if text.contains(':') {
        // std's parser is strict already (no zones, no brackets, at most one `::`).
        return text
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| error(format!("{text:?} is not an IPv6 address")));
    }
    // std refuses octets with leading zeros, which some parsers read as octal.
    text.parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .map_err(|_| error(format!("{text:?} is not an IPv4 address (four decimal octets 0-255, no leading zeros)")))
}

fn parse_prefix(text: &str, max: u8) -> Result<u8, IpParseError> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (text.len() > 1 && text.starts_with('0')) || text.len() > 3 {
        return Err(error(format!("prefix {text:?} must be a number from 0 to {max} without leading zeros")));
    }
    match text.parse::<u8>() {
        Ok(prefix) if prefix <= max => Ok(prefix),
        _ => Err(error(format!("prefix {text:?} is out of range 0 to {max}"))),
    }
}

/// Parses an address (a /32 or /128 network) or a CIDR range. Host bits are cleared, so
/// `10.1.2.3/8` is `10.0.0.0/8`, as most routers read it.
pub fn parse_net(text: &str) -> Result<IpNet, IpParseError> {
    if text.len() > MAX_ENTRY_LEN {
        return Err(error(format!("is longer than {MAX_ENTRY_LEN} characters")));
    }
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    match parse_addr(addr_text)? {
        IpAddr::V4(v4) => {
            let prefix = match prefix_text {
                Some(p) => parse_prefix(p, 32)?,
                None => 32,
            };
            Ok(IpNet::V4 { addr: u32::from(v4) & mask_v4(prefix), prefix })
        }
        IpAddr::V6(v6) => {
            let prefix = match prefix_text {
                Some(p) => parse_prefix(p, 128)?,
                None => 128,
            };
            Ok(IpNet::V6 { addr: u128::from(v6) & mask_v6(prefix), prefix })
        }
    }
}

impl IpNet {
    /// Whether `addr` is in this network; an address of the other family never is.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (*self, addr) {
            (IpNet::V4 { addr: net, prefix }, IpAddr::V4(a)) => u32::from(a) & mask_v4(prefix) == net,
            (IpNet::V6 { addr: net, prefix }, IpAddr::V6(a)) => u128::from(a) & mask_v6(prefix) == net,
            _ => false,
        }
    }
}

/// A compiled IP allowlist: every entry turned into an address interval, sorted and merged, so a
/// lookup is one binary search however many entries and prefix lengths the list holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
    len: usize,
}

/// Sorts intervals and merges those that overlap or touch.
fn merge<T: Ord + Copy>(mut intervals: Vec<(T, T)>, next_of: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    intervals.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(intervals.len());
    for (start, end) in intervals {
        match merged.last_mut() {
            Some(last) if next_of(last.1).is_none_or(|n| start <= n) => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => merged.push((start, end)),
        }
    }
    merged
}

fn within<T: Ord + Copy>(intervals: &[(T, T)], addr: T) -> bool {
    let after = intervals.partition_point(|(start, _)| *start <= addr);
    after.checked_sub(1).and_then(|i| intervals.get(i)).is_some_and(|(_, end)| addr <= *end)
}

impl IpAllowlist {
    /// Parses every entry; the first bad one is reported with its position.
    pub fn compile<S: AsRef<str>>(entries: &[S]) -> Result<IpAllowlist, IpListError> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let entry = entry.as_ref();
            let net = parse_net(entry).map_err(|e| IpListError {
                index,
                entry: entry.chars().take(MAX_ENTRY_LEN).collect(),
                message: e.message,
            })?;
            match net {
                IpNet::V4 { addr, prefix } => v4.push((addr, addr | !mask_v4(prefix))),
                IpNet::V6 { addr, prefix } => v6.push((addr, addr | !mask_v6(prefix))),
            }
        }
        Ok(IpAllowlist {
            v4: merge(v4, |x: u32| x.checked_add(1)),
            v6: merge(v6, |x: u128| x.checked_add(1)),
            len: entries.len(),
        })
    }

    /// No entries: the key may be used from any address.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many entries the list was compiled from.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether `addr` falls in any entry of its own family.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => within(&self.v4, u32::from(a)),
            IpAddr::V6(a) => within(&self.v6, u128::from(a)),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> IpAddr {
        parse_addr(s).unwrap()
    }

    #[test]
    fn parses_addresses_and_ranges() {
        assert_eq!(parse_net("10.0.0.0/8").unwrap(), IpNet::V4 { addr: 0x0a00_0000, prefix: 8 });
        assert_eq!(parse_net("10.1.2.3/8").unwrap(), IpNet::V4 { addr: 0x0a00_0000, prefix: 8 });
        assert_eq!(parse_net("192.168.1.1").unwrap(), IpNet::V4 { addr: 0xc0a8_0101, prefix: 32 });
        assert_eq!(parse_net("0.0.0.0/0").unwrap(), IpNet::V4 { addr: 0, prefix: 0 });
        assert_eq!(parse_net("2001:db8::/32").unwrap(), IpNet::V6 { addr: 0x2001_0db8 << 96, prefix: 32 });
        assert_eq!(parse_net("::1").unwrap(), IpNet::V6 { addr: 1, prefix: 128 });
        assert_eq!(parse_net("::/0").unwrap(), IpNet::V6 { addr: 0, prefix: 0 });
    }

    #[test]
    fn refuses_sloppy_input() {
        for bad in [
            "", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/08", "10.0.0.0/-1", "10.0.0.0/+8",
            "010.0.0.1", "10.0.0.01", "10.0.0", "10.0.0.0.0", "256.0.0.1", "1.2.3.4 ", " 1.2.3.4",
            "1.2.3.4/8/8", "fe80::1%eth0", "[::1]", "::1::2", "localhost", "0x7f.0.0.1",
            "10.0.0.0/0008", "1.2.3.4/32a",
        ] {
            assert!(parse_net(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("{}/8", "1".repeat(70));
        assert!(parse_net(&long).unwrap_err().message.contains("longer"));
        assert!(parse_net("10.0.0.0/33").unwrap_err().message.contains("prefix"));
    }

    #[test]
    fn families_never_mix() {
        let v4_any = parse_net("0.0.0.0/0").unwrap();
        let v6_any = parse_net("::/0").unwrap();
        assert!(v4_any.contains(addr("8.8.8.8")));
        assert!(!v4_any.contains(addr("::ffff:8.8.8.8")));
        assert!(!v6_any.contains(addr("8.8.8.8")));
        assert!(v6_any.contains(addr("::ffff:8.8.8.8")));
    }

    #[test]
    fn allowlist_matches_by_range() {
        let list = IpAllowlist::compile(&["10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "10.0.0.0/8"]).unwrap();
        assert_eq!(list.len(), 4);
        assert!(list.contains(addr("10.200.3.4")));
        assert!(list.contains(addr("192.168.1.7")));
        assert!(!list.contains(addr("192.168.1.8")));
        assert!(list.contains(addr("2001:db8:ffff::1")));
        assert!(!list.contains(addr("2001:db9::1")));
        assert!(!list.contains(addr("::ffff:10.0.0.1")));
        assert!(IpAllowlist::compile::<&str>(&[]).unwrap().is_empty());
        let err = IpAllowlist::compile(&["10.0.0.0/8", "10.0.0.0/40"]).unwrap_err();
        assert_eq!((err.index, err.entry.as_str()), (1, "10.0.0.0/40"));
    }

    fn reference_contains(nets: &[IpNet], a: IpAddr) -> bool {
        // Straightforward bit-by-bit comparison, independent of the masks above.
        nets.iter().any(|n| match (*n, a) {
            (IpNet::V4 { addr, prefix }, IpAddr::V4(x)) => {
                (0..u32::from(prefix)).all(|i| (addr >> (31 - i)) & 1 == (u32::from(x) >> (31 - i)) & 1)
            }
            (IpNet::V6 { addr, prefix }, IpAddr::V6(x)) => {
                (0..u32::from(prefix)).all(|i| (addr >> (127 - i)) & 1 == (u128::from(x) >> (127 - i)) & 1)
            }
            _ => false,
        })
    }

    fn arb_net() -> impl Strategy<Value = String> {
        prop_oneof![
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, p)| format!("{}/{p}", Ipv4Addr::from(a))),
            (any::<u128>(), 0u8..=128).prop_map(|(a, p)| format!("{}/{p}", Ipv6Addr::from(a))),
            // Near misses share leading bits with a few fixed networks.
            (0u8..=32).prop_map(|p| format!("10.1.0.0/{p}")),
        ]
    }

    fn arb_addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u16>().prop_map(|x| IpAddr::V4(Ipv4Addr::new(10, 1, (x >> 8) as u8, x as u8))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = parse_net(&s);
        }

        #[test]
        fn parse_never_panics_on_ip_like_text(s in "[0-9a-f:./]{0,50}") {
            let _ = parse_net(&s);
        }

        #[test]
        fn allowlist_agrees_with_reference(entries in proptest::collection::vec(arb_net(), 0..40),
                                           probes in proptest::collection::vec(arb_addr(), 1..40)) {
            let list = IpAllowlist::compile(&entries).unwrap();
            let nets: Vec<IpNet> = entries.iter().map(|e| parse_net(e).unwrap()).collect();
            for probe in probes {
                prop_assert_eq!(list.contains(probe), reference_contains(&nets, probe), "{:?} in {:?}", probe, entries);
            }
        }

        #[test]
        fn display_round_trips(a in any::<u128>(), p in 0u8..=128) {
            let text = format!("{}/{p}", Ipv6Addr::from(a));
            let net = parse_net(&text).unwrap();
            prop_assert!(net.contains(IpAddr::V6(Ipv6Addr::from(a))));
        }
    }
}
