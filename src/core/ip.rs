//! TEMPORARY linear stub so the crate compiles until the real ip.rs lands (being written).
use std::net::IpAddr;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpNet { V4 { addr: u32, prefix: u8 }, V6 { addr: u128, prefix: u8 } }
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpParseError { pub message: String }
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpListError { pub index: usize, pub entry: String, pub message: String }
pub fn parse_addr(s: &str) -> Result<IpAddr, IpParseError> { s.parse().map_err(|_| IpParseError { message: "bad".into() }) }
pub fn parse_net(s: &str) -> Result<IpNet, IpParseError> {
    let (a, p) = s.split_once('/').unwrap_or((s, ""));
    let addr = parse_addr(a)?;
    match addr { IpAddr::V4(v) => Ok(IpNet::V4 { addr: u32::from(v), prefix: if p.is_empty() {32} else {p.parse().map_err(|_| IpParseError{message:"bad".into()})?} }),
      IpAddr::V6(v) => Ok(IpNet::V6 { addr: u128::from(v), prefix: if p.is_empty() {128} else {p.parse().map_err(|_| IpParseError{message:"bad".into()})?} }) }
}
impl IpNet { pub fn contains(&self, addr: IpAddr) -> bool { match (self, addr) {
  (IpNet::V4{addr: n, prefix}, IpAddr::V4(a)) => { let m = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0); (u32::from(a) & m) == (n & m) }
  (IpNet::V6{addr: n, prefix}, IpAddr::V6(a)) => { let m = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0); (u128::from(a) & m) == (n & m) }
  _ => false } } }
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IpAllowlist { nets: Vec<IpNet> }
impl IpAllowlist {
    pub fn compile<S: AsRef<str>>(entries: &[S]) -> Result<IpAllowlist, IpListError> {
        let mut nets = Vec::new();
        for (index, e) in entries.iter().enumerate() { nets.push(parse_net(e.as_ref()).map_err(|x| IpListError { index, entry: e.as_ref().into(), message: x.message })?); }
        Ok(IpAllowlist { nets })
    }
    pub fn is_empty(&self) -> bool { self.nets.is_empty() }
    pub fn len(&self) -> usize { self.nets.len() }
    pub fn contains(&self, addr: IpAddr) -> bool { self.nets.iter().any(|n| n.contains(addr)) }
}
