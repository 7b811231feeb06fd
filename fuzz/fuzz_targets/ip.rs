//! IP addresses and CIDR ranges (the IP allowlist, and `CF-Connecting-IP`).
//! Input: lines; the last is an address, the others an allowlist.
//! Oracles: parse → print → parse gives the same address or network; the compiled allowlist (merged
//! intervals, one binary search) answers exactly as checking every entry one by one does.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use keyward::core::ip::{parse_addr, parse_net, IpAllowlist, IpNet};
use libfuzzer_sys::fuzz_target;

fn print(net: IpNet) -> String {
    match net {
        IpNet::V4 { addr, prefix } => format!("{}/{prefix}", Ipv4Addr::from(addr)),
        IpNet::V6 { addr, prefix } => format!("{}/{prefix}", Ipv6Addr::from(addr)),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines: Vec<&str> = text.split('\n').collect();
    for line in &lines {
        if let Ok(addr) = parse_addr(line) {
            assert_eq!(parse_addr(&addr.to_string()), Ok(addr), "{line:?}");
            // An address is its own one-address network.
            let net = parse_net(line).expect("an address is not a network");
            assert!(net.contains(addr));
        }
        if let Ok(net) = parse_net(line) {
            let printed = print(net);
            assert_eq!(parse_net(&printed), Ok(net), "{line:?} printed as {printed:?}");
        }
    }
    let Some((addr_text, entries)) = lines.split_last() else { return };
    let Ok(addr) = parse_addr(addr_text) else { return };
    let nets: Vec<IpNet> = entries.iter().filter_map(|e| parse_net(e).ok()).collect();
    let valid: Vec<&str> = entries.iter().copied().filter(|e| parse_net(e).is_ok()).collect();
    let list = IpAllowlist::compile(&valid).expect("valid entries refused");
    assert_eq!(list.len(), valid.len());
    let one_by_one = nets.iter().any(|n| n.contains(addr));
    assert_eq!(list.contains(addr), one_by_one, "{addr} against {valid:?}");
    // An IPv4 address never matches an IPv6 range, nor the reverse.
    if let IpAddr::V4(v4) = addr {
        assert!(!list.contains(IpAddr::V6(v4.to_ipv6_mapped())) || nets.iter().any(|n| matches!(n, IpNet::V6 { .. })));
    }
    if entries.iter().any(|e| parse_net(e).is_err()) {
        assert!(IpAllowlist::compile(entries).is_err());
    }
});
