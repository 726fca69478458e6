//! Address management like Docker's default IPAM: subnets, the default address pools,
//! per-network pools that hand out the lowest free address (never the network address, the
//! broadcast address or the gateway), static addresses, and MAC addresses derived from IPs.
//! IPv6 (`Ipv6Net`, `Pool6`, `PoolSpec6`) follows the same rules: a v6 network's gateway is its
//! first address (`::1`), sandboxes get `::2` on; without a subnet, a /64 of the default v6
//! pools (a ULA /48 of the host, Docker 27+'s `deriveULABaseNetwork`).
use std::{
    collections::BTreeSet,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("invalid CIDR address: {0}")]
    InvalidCidr(String),
    /// Docker: `ipamapi.ErrIPAlreadyAllocated`.
    #[error("Address already in use")]
    AlreadyAllocated,
    /// Docker: `ipamapi.ErrNoAvailableIPs`.
    #[error("no available addresses on this pool")]
    NoAvailable,
    /// Docker: `ipamapi.ErrIPOutOfRange`.
    #[error("requested address is out of range")]
    OutOfRange,
    #[error("{0}")]
    Invalid(String),
}

/// An IPv4 prefix: an address (kept as given, e.g. a gateway) and a length. The arithmetic is
/// `ipnet`'s; this type adds Docker's parsing rules and messages and serde as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net(ipnet::Ipv4Net);

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, IpamError> {
        ipnet::Ipv4Net::new(addr, len).map(Self).map_err(|_| IpamError::InvalidCidr(format!("{addr}/{len}")))
    }
    pub fn addr(&self) -> Ipv4Addr {
        self.0.addr()
    }
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }
    pub fn mask(&self) -> u32 {
        u32::from(self.0.netmask())
    }
    pub fn network(&self) -> Ipv4Addr {
        self.0.network()
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        self.0.broadcast()
    }
    /// The prefix with host bits cleared.
    pub fn trunc(&self) -> Self {
        Self(self.0.trunc())
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.contains(&ip)
    }
    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        self.0.contains(&other.0)
    }
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.0.contains(&other.0.network()) || other.0.contains(&self.0.network())
    }
    /// First usable host address (the network address + 1; the address itself for /31, /32).
    pub fn first_host(&self) -> Ipv4Addr {
        if self.prefix_len() >= 31 { self.network() } else { Ipv4Addr::from(u32::from(self.network()) + 1) }
    }
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix_len())
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix_len())
    }
}

impl FromStr for Ipv4Net {
    type Err = IpamError;
    fn from_str(s: &str) -> Result<Self, IpamError> {
        let bad = || IpamError::InvalidCidr(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        if l.is_empty() || l.len() > 2 || !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let len: u8 = l.parse().map_err(|_| bad())?;
        Self::new(addr, len).map_err(|_| bad())
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A base network split into subnets of one size (`--default-address-pool base=,size=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    pub base: Ipv4Net,
    pub size: u8,
}

/// Docker's local default pools: 172.17–172.31 as /16s, then 192.168.0.0/16 as /20s.
pub fn default_pool_specs() -> Vec<PoolSpec> {
    [
        ("172.17.0.0/16", 16),
        ("172.18.0.0/16", 16),
        ("172.19.0.0/16", 16),
        ("172.20.0.0/14", 16),
        ("172.24.0.0/14", 16),
        ("172.28.0.0/14", 16),
        ("192.168.0.0/16", 20),
    ]
    .into_iter()
    .map(|(b, s)| PoolSpec { base: b.parse().expect("valid"), size: s })
    .collect()
}

/// Every candidate subnet of the pools, in order.
pub fn expand(specs: &[PoolSpec]) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    for s in specs {
        let step = 1u64 << (32 - s.size);
        let start = u64::from(u32::from(s.base.network()));
        let end = start + s.base.size();
        let mut a = start;
        while a < end {
            if let Ok(n) = Ipv4Net::new(Ipv4Addr::from(a as u32), s.size) {
                out.push(n);
            }
            a += step;
        }
    }
    out
}

pub fn default_pools() -> Vec<Ipv4Net> {
    expand(&default_pool_specs())
}

/// Parse `--default-address-pool base=CIDR,size=N`.
pub fn parse_address_pool(s: &str) -> Result<PoolSpec, IpamError> {
    let mut base = None;
    let mut size = None;
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("base", v)) => base = Some(v.parse::<Ipv4Net>()?),
            Some(("size", v)) => {
                size = Some(v.parse::<u8>().map_err(|_| IpamError::Invalid(format!("invalid size: {v}")))?)
            }
            _ => return Err(IpamError::Invalid(format!("unexpected key in address pool: {kv}"))),
        }
    }
    let base = base.ok_or_else(|| IpamError::Invalid("address pool requires base".into()))?;
    let size = size.ok_or_else(|| IpamError::Invalid("address pool requires size".into()))?;
    if size < base.prefix_len() || size > 32 {
        return Err(IpamError::Invalid(format!("invalid pool size {size} for base {base}")));
    }
    Ok(PoolSpec { base: base.trunc(), size })
}

/// Any `--default-address-pool` entry: Docker takes both families in one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyPool {
    V4(PoolSpec),
    V6(PoolSpec6),
}

/// Parse `--default-address-pool base=CIDR,size=N` of either family.
pub fn parse_address_pool_any(s: &str) -> Result<AnyPool, IpamError> {
    let base = s.split(',').find_map(|kv| kv.strip_prefix("base=")).unwrap_or("");
    if !base.contains(':') {
        return parse_address_pool(s).map(AnyPool::V4);
    }
    let mut b6 = None;
    let mut size = None;
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("base", v)) => b6 = Some(v.parse::<Ipv6Net>()?),
            Some(("size", v)) => {
                size = Some(v.parse::<u8>().map_err(|_| IpamError::Invalid(format!("invalid size: {v}")))?)
            }
            _ => return Err(IpamError::Invalid(format!("unexpected key in address pool: {kv}"))),
        }
    }
    let base = b6.ok_or_else(|| IpamError::Invalid("address pool requires base".into()))?;
    let size = size.ok_or_else(|| IpamError::Invalid("address pool requires size".into()))?;
    if size < base.prefix_len() || size > 128 {
        return Err(IpamError::Invalid(format!("invalid pool size {size} for base {base}")));
    }
    Ok(AnyPool::V6(PoolSpec6 { base: base.trunc(), size }))
}

/// The daemon's pools for each family: `--default-address-pool` entries, else Docker's local
/// defaults for IPv4; for IPv6, the given v6 entries, else the host's ULA /48 in /64s (Docker
/// 27+ adds it whenever no v6 pool is configured).
pub fn pools_from_config(given: &[String], ula_global_id: u64) -> Result<(Vec<PoolSpec>, Vec<PoolSpec6>), IpamError> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for g in given {
        match parse_address_pool_any(g)? {
            AnyPool::V4(p) => v4.push(p),
            AnyPool::V6(p) => v6.push(p),
        }
    }
    if given.is_empty() {
        v4 = default_pool_specs();
    }
    if v6.is_empty() {
        v6.push(ula_pool(ula_global_id));
    }
    Ok((v4, v6))
}

/// `fdXX:XXXX:XXXX::/48` split into /64s from a 40-bit Global ID (RFC 4193 §3.2).
pub fn ula_pool(global_id: u64) -> PoolSpec6 {
    let gid = u128::from(global_id & ((1 << 40) - 1));
    let addr = Ipv6Addr::from((0xfdu128 << 120) | (gid << 80));
    PoolSpec6 { base: Ipv6Net::new(addr, 48).expect("valid"), size: 64 }
}

/// The first v6 subnet of the pools overlapping nothing in use (routes, other networks). A
/// pool is walked lazily (a /48 in /64s has 65,536 candidates), at most `LIMIT` per pool.
pub fn pick_free_subnet6(pools: &[PoolSpec6], in_use: &[Ipv6Net]) -> Option<Ipv6Net> {
    const LIMIT: u128 = 1 << 20;
    for p in pools {
        let step = if p.size >= 128 { 1u128 } else { 1u128 << (128 - u32::from(p.size)) };
        let start = u128::from(p.base.network());
        let count = if p.size - p.base.prefix_len() >= 127 {
            LIMIT
        } else {
            (1u128 << (p.size - p.base.prefix_len())).min(LIMIT)
        };
        for i in 0..count {
            let Some(a) = start.checked_add(i * step) else { break };
            let Ok(n) = Ipv6Net::new(Ipv6Addr::from(a), p.size) else { break };
            if !in_use.iter().any(|u| u.overlaps(&n)) {
                return Some(n);
            }
        }
    }
    None
}

/// The first pool subnet overlapping nothing in use (routes, other networks).
pub fn pick_free_subnet(pools: &[Ipv4Net], in_use: &[Ipv4Net]) -> Option<Ipv4Net> {
    pools.iter().find(|p| !in_use.iter().any(|u| u.overlaps(p))).copied()
}

/// `--bip 10.20.0.1/16`: the bridge address and its subnet (Docker's rules: a host address).
pub fn parse_bip(s: &str) -> Result<(Ipv4Net, Ipv4Addr), IpamError> {
    let n: Ipv4Net = s.parse()?;
    if n.prefix_len() < 31 && (n.addr() == n.network() || n.addr() == n.broadcast()) {
        return Err(IpamError::Invalid(format!(
            "--bip {s}: the bridge address must be a host address of the subnet, e.g. {}/{}",
            n.first_host(),
            n.prefix_len()
        )));
    }
    Ok((n.trunc(), n.addr()))
}

/// `--fixed-cidr`: must lie inside the bridge subnet.
pub fn parse_fixed_cidr(s: &str, subnet: &Ipv4Net) -> Result<Ipv4Net, IpamError> {
    let r: Ipv4Net = s.parse()?;
    let r = r.trunc();
    if !subnet.contains_net(&r) {
        return Err(IpamError::Invalid(format!("--fixed-cidr {s} is not inside the bridge subnet {}", subnet.trunc())));
    }
    Ok(r)
}

/// An IPv6 prefix (address kept as given, e.g. a gateway, and a length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Net(ipnet::Ipv6Net);

impl Ipv6Net {
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, IpamError> {
        ipnet::Ipv6Net::new(addr, len).map(Self).map_err(|_| IpamError::InvalidCidr(format!("{addr}/{len}")))
    }
    pub fn addr(&self) -> Ipv6Addr {
        self.0.addr()
    }
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }
    pub fn network(&self) -> Ipv6Addr {
        self.0.network()
    }
    pub fn last(&self) -> Ipv6Addr {
        self.0.broadcast()
    }
    pub fn trunc(&self) -> Self {
        Self(self.0.trunc())
    }
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        self.0.contains(&ip)
    }
    pub fn contains_net(&self, other: &Ipv6Net) -> bool {
        self.0.contains(&other.0)
    }
    pub fn overlaps(&self, other: &Ipv6Net) -> bool {
        self.0.contains(&other.0.network()) || other.0.contains(&self.0.network())
    }
    /// The gateway Docker picks: the subnet's first address after the anycast one (`::1`).
    pub fn first_host(&self) -> Ipv6Addr {
        if self.prefix_len() >= 127 { self.network() } else { Ipv6Addr::from(u128::from(self.network()) + 1) }
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix_len())
    }
}

impl FromStr for Ipv6Net {
    type Err = IpamError;
    fn from_str(s: &str) -> Result<Self, IpamError> {
        let bad = || IpamError::InvalidCidr(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv6Addr = a.parse().map_err(|_| bad())?;
        if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let len: u8 = l.parse().map_err(|_| bad())?;
        Self::new(addr, len).map_err(|_| bad())
    }
}

/// A v6 base network split into subnets of one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec6 {
    pub base: Ipv6Net,
    pub size: u8,
}

/// Go's `netip.ParsePrefix` errors (what Docker's messages quote).
pub fn go_parse_prefix(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let pre = format!("netip.ParsePrefix({s:?})");
    let Some((a, l)) = s.rsplit_once('/') else { return Err(format!("{pre}: no '/'")) };
    let addr: std::net::IpAddr = a.parse().map_err(|_| format!("{pre}: ParseAddr({a:?}): unable to parse IP"))?;
    if l.is_empty() || (l.len() > 1 && l.starts_with('0')) || !l.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{pre}: bad bits after slash: {l:?}"));
    }
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match l.parse::<u32>() {
        Ok(n) if n <= max => Ok((addr, n as u8)),
        _ => Err(format!("{pre}: prefix length out of range")),
    }
}

/// Docker's `validateIPv6Subnet` (bridge driver): the messages it gives.
pub fn validate_ipv6_subnet(addr: std::net::IpAddr, len: u8) -> Result<Ipv6Net, String> {
    let shown = format!("{addr}/{len}");
    let v6 = match addr {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => v6,
        _ => return Err(format!("'{shown}' is not a valid IPv6 subnet")),
    };
    if v6.is_multicast() {
        return Err(format!("multicast subnet '{shown}' is not allowed"));
    }
    let n = Ipv6Net::new(v6, len).map_err(|e| e.to_string())?;
    let ll = Ipv6Net::new(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 64).expect("valid");
    if n.trunc() != ll && ll.overlaps(&n) {
        return Err(format!("'{shown}' clashes with the Link-Local prefix 'fe80::/64'"));
    }
    Ok(n)
}

/// `--fixed-cidr-v6 P` (dockerd's `ValidateFixedCIDRV6`, whose error is wrapped twice).
pub fn parse_fixed_cidr_v6(s: &str) -> Result<Ipv6Net, String> {
    go_parse_prefix(s)
        .and_then(|(a, l)| validate_ipv6_subnet(a, l))
        .map_err(|e| format!("invalid fixed-cidr-v6: invalid fixed-cidr-v6: {e}"))
}

/// The v6 addresses of one network: lowest free from `range` (default the subnet), never the
/// subnet-router anycast address (`::`) or the gateway.
#[derive(Debug, Clone)]
pub struct Pool6 {
    subnet: Ipv6Net,
    gateway: Ipv6Addr,
    range: Ipv6Net,
    used: BTreeSet<u128>,
}

impl Pool6 {
    pub fn new(subnet: Ipv6Net, gateway: Ipv6Addr, range: Option<Ipv6Net>) -> Self {
        let subnet = subnet.trunc();
        let mut used = BTreeSet::new();
        if subnet.prefix_len() < 127 {
            used.insert(u128::from(subnet.network()));
        }
        used.insert(u128::from(gateway));
        Self { subnet, gateway, range: range.map(|r| r.trunc()).unwrap_or(subnet), used }
    }
    pub fn subnet(&self) -> Ipv6Net {
        self.subnet
    }
    pub fn allocate(&mut self) -> Result<Ipv6Addr, IpamError> {
        let start = u128::from(self.range.network());
        let end = u128::from(self.range.last());
        // The used set is ordered: walk it from the start instead of probing 2^64 addresses.
        let mut a = start;
        for u in self.used.range(start..=end) {
            if *u != a {
                break;
            }
            if a == end {
                return Err(IpamError::NoAvailable);
            }
            a += 1;
        }
        self.used.insert(a);
        Ok(Ipv6Addr::from(a))
    }
    pub fn allocate_static(&mut self, ip: Ipv6Addr) -> Result<Ipv6Addr, IpamError> {
        if !self.subnet.contains(ip) {
            return Err(IpamError::OutOfRange);
        }
        if !self.used.insert(u128::from(ip)) {
            return Err(IpamError::AlreadyAllocated);
        }
        Ok(ip)
    }
    pub fn restore(&mut self, ip: Ipv6Addr) -> Result<(), IpamError> {
        if !self.subnet.contains(ip) {
            return Err(IpamError::OutOfRange);
        }
        self.used.insert(u128::from(ip));
        Ok(())
    }
    pub fn release(&mut self, ip: Ipv6Addr) {
        let v = u128::from(ip);
        if v != u128::from(self.gateway) && v != u128::from(self.subnet.network()) {
            self.used.remove(&v);
        }
    }
}

/// Docker's bridge driver MAC: `02:42:` followed by the IPv4 address bytes.
pub fn mac_from_ip(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// A random locally administered unicast MAC (Docker's `GenerateRandomMAC`), for a sandbox
/// without an IPv4 address to derive one from (IPv6-only networks).
pub fn random_mac() -> [u8; 6] {
    use rand::RngExt;
    let mut m = [0u8; 6];
    rand::rng().fill(&mut m);
    m[0] = (m[0] & 0xfe) | 0x02;
    m
}

/// A sandbox's MAC: `02:42:` + its IPv4 address, or random without one.
pub fn mac_for(ip: Option<Ipv4Addr>) -> [u8; 6] {
    ip.map_or_else(random_mac, mac_from_ip)
}

/// Parse `--mac-address` (Docker: `invalid MAC address`).
pub fn parse_mac(s: &str) -> Result<[u8; 6], IpamError> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bad = || IpamError::Invalid(format!("{s} is not a valid mac address"));
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        // Two hex digits (from_str_radix alone would also take "+f").
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if m[0] & 1 == 1 {
        return Err(IpamError::Invalid(format!("{s} is a multicast address, not valid for an interface")));
    }
    Ok(m)
}

/// The addresses of one network.
#[derive(Debug, Clone)]
pub struct Pool {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    range: Ipv4Net,
    used: BTreeSet<u32>,
}

impl Pool {
    pub fn new(subnet: Ipv4Net, gateway: Ipv4Addr, range: Option<Ipv4Net>) -> Self {
        let subnet = subnet.trunc();
        let mut used = BTreeSet::new();
        if subnet.prefix_len() < 31 {
            used.insert(u32::from(subnet.network()));
            used.insert(u32::from(subnet.broadcast()));
        }
        used.insert(u32::from(gateway));
        Self { subnet, gateway, range: range.map(|r| r.trunc()).unwrap_or(subnet), used }
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The lowest free address of the range.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let start = u32::from(self.range.network());
        let end = u32::from(self.range.broadcast());
        let mut a = start;
        loop {
            if !self.used.contains(&a) {
                self.used.insert(a);
                return Ok(Ipv4Addr::from(a));
            }
            if a == end {
                return Err(IpamError::NoAvailable);
            }
            a += 1;
        }
    }

    /// A specific address (`--ip`): inside the subnet and free.
    pub fn allocate_static(&mut self, ip: Ipv4Addr) -> Result<Ipv4Addr, IpamError> {
        if !self.subnet.contains(ip) {
            return Err(IpamError::OutOfRange);
        }
        if !self.used.insert(u32::from(ip)) {
            return Err(IpamError::AlreadyAllocated);
        }
        Ok(ip)
    }

    /// Re-mark an address found in use after a restart (Ok if already marked).
    pub fn restore(&mut self, ip: Ipv4Addr) -> Result<(), IpamError> {
        if !self.subnet.contains(ip) {
            return Err(IpamError::OutOfRange);
        }
        self.used.insert(u32::from(ip));
        Ok(())
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        let v = u32::from(ip);
        let reserved = v == u32::from(self.gateway)
            || (self.subnet.prefix_len() < 31
                && (v == u32::from(self.subnet.network()) || v == u32::from(self.subnet.broadcast())));
        if !reserved {
            self.used.remove(&v);
        }
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parsing_and_math() {
        let x = n("172.17.5.9/16");
        assert_eq!(x.network(), Ipv4Addr::new(172, 17, 0, 0));
        assert_eq!(x.broadcast(), Ipv4Addr::new(172, 17, 255, 255));
        assert_eq!(x.first_host(), Ipv4Addr::new(172, 17, 0, 1));
        assert!(x.contains(Ipv4Addr::new(172, 17, 200, 1)));
        assert!(!x.contains(Ipv4Addr::new(172, 18, 0, 1)));
        assert!(n("10.0.0.0/8").overlaps(&n("10.1.0.0/16")));
        assert!(!n("10.0.0.0/16").overlaps(&n("10.1.0.0/16")));
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0/8", "x/8", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8/8"] {
            assert_eq!(bad.parse::<Ipv4Net>(), Err(IpamError::InvalidCidr(bad.into())), "{bad}");
        }
        assert_eq!(IpamError::InvalidCidr("a".into()).to_string(), "invalid CIDR address: a");
    }

    #[test]
    fn default_pools_are_dockers() {
        let p = default_pools();
        assert_eq!(p[0], n("172.17.0.0/16"));
        assert_eq!(p[14], n("172.31.0.0/16"));
        assert_eq!(p[15], n("192.168.0.0/20"));
        assert_eq!(p[16], n("192.168.16.0/20"));
        assert_eq!(p.len(), 15 + 16);
        // 172.17 routed on the host: the next one.
        assert_eq!(pick_free_subnet(&p, &[n("172.17.5.0/24")]), Some(n("172.18.0.0/16")));
        // Everything in 172.16/12 taken: 192.168.0.0/20.
        assert_eq!(pick_free_subnet(&p, &[n("172.16.0.0/12")]), Some(n("192.168.0.0/20")));
        // A default route (0/0) is not a subnet in use: the caller filters /0 routes.
        let spec = parse_address_pool("base=10.10.0.0/16,size=24").unwrap();
        assert_eq!(expand(&[spec])[1], n("10.10.1.0/24"));
        assert!(parse_address_pool("base=10.10.0.0/16,size=8").is_err());
    }

    #[test]
    fn bip_and_fixed_cidr() {
        assert_eq!(parse_bip("10.20.0.1/16").unwrap(), (n("10.20.0.0/16"), Ipv4Addr::new(10, 20, 0, 1)));
        assert!(parse_bip("10.20.0.0/16").is_err());
        assert!(parse_bip("10.20.255.255/16").is_err());
        let sub = n("10.55.0.0/24");
        assert_eq!(parse_fixed_cidr("10.55.0.128/25", &sub).unwrap(), n("10.55.0.128/25"));
        assert!(parse_fixed_cidr("10.56.0.0/25", &sub).is_err());
    }

    #[test]
    fn lowest_free_allocation_never_hands_out_reserved() {
        let mut p = Pool::new(n("172.17.0.0/16"), Ipv4Addr::new(172, 17, 0, 1), None);
        assert_eq!(p.allocate().unwrap(), Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(p.allocate().unwrap(), Ipv4Addr::new(172, 17, 0, 3));
        p.release(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(p.allocate().unwrap(), Ipv4Addr::new(172, 17, 0, 2), "lowest free, as Docker's default IPAM");
        // Releasing the gateway is refused.
        p.release(Ipv4Addr::new(172, 17, 0, 1));
        assert_ne!(p.allocate().unwrap(), Ipv4Addr::new(172, 17, 0, 1));
        // A /30 has two hosts: gateway + one.
        let mut small = Pool::new(n("10.0.0.0/30"), Ipv4Addr::new(10, 0, 0, 1), None);
        assert_eq!(small.allocate().unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(small.allocate(), Err(IpamError::NoAvailable));
        assert_eq!(IpamError::NoAvailable.to_string(), "no available addresses on this pool");
    }

    #[test]
    fn range_and_static() {
        let mut p = Pool::new(n("10.55.0.0/24"), Ipv4Addr::new(10, 55, 0, 1), Some(n("10.55.0.128/25")));
        assert_eq!(p.allocate().unwrap(), Ipv4Addr::new(10, 55, 0, 128));
        assert_eq!(p.allocate_static(Ipv4Addr::new(10, 55, 0, 7)).unwrap(), Ipv4Addr::new(10, 55, 0, 7));
        assert_eq!(p.allocate_static(Ipv4Addr::new(10, 55, 0, 7)), Err(IpamError::AlreadyAllocated));
        assert_eq!(p.allocate_static(Ipv4Addr::new(10, 55, 0, 1)), Err(IpamError::AlreadyAllocated));
        assert_eq!(p.allocate_static(Ipv4Addr::new(10, 56, 0, 1)), Err(IpamError::OutOfRange));
        assert_eq!(IpamError::AlreadyAllocated.to_string(), "Address already in use");
        p.restore(Ipv4Addr::new(10, 55, 0, 129)).unwrap();
        assert_eq!(p.allocate().unwrap(), Ipv4Addr::new(10, 55, 0, 130));
    }

    #[test]
    fn ipv6_pools_and_allocation() {
        // Docker 27+: a ULA /48 split into /64s; the first free one.
        let p = ula_pool(0x12_3456_789a);
        assert_eq!(p.base.to_string(), "fd12:3456:789a::/48");
        let first = pick_free_subnet6(&[p], &[]).unwrap();
        assert_eq!(first.to_string(), "fd12:3456:789a::/64");
        let second = pick_free_subnet6(&[p], &[first]).unwrap();
        assert_eq!(second.to_string(), "fd12:3456:789a:1::/64");
        let (v4, v6) = pools_from_config(&["base=10.10.0.0/16,size=24".into()], 1).unwrap();
        assert_eq!((v4.len(), v6.len()), (1, 1), "a v4-only list still gets the ULA pool");
        assert_eq!(v6[0].base.to_string(), "fd00:0:1::/48");
        let (v4, v6) = pools_from_config(&["base=fd99::/56,size=64".into()], 1).unwrap();
        assert_eq!((v4.len(), v6[0].base.to_string()), (0, "fd99::/56".to_string()));
        let (v4, _) = pools_from_config(&[], 1).unwrap();
        assert_eq!(v4, default_pool_specs());
        assert!(parse_address_pool_any("base=fd99::/56,size=40").is_err());
        // Gateway ::1, sandboxes from ::2, lowest free.
        let sub: Ipv6Net = "fd00:1::/64".parse().unwrap();
        let mut pool = Pool6::new(sub, sub.first_host(), None);
        assert_eq!(pool.allocate().unwrap(), "fd00:1::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(pool.allocate().unwrap(), "fd00:1::3".parse::<Ipv6Addr>().unwrap());
        pool.release("fd00:1::2".parse().unwrap());
        assert_eq!(pool.allocate().unwrap(), "fd00:1::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(pool.allocate_static("fd00:1::3".parse().unwrap()), Err(IpamError::AlreadyAllocated));
        assert_eq!(pool.allocate_static("fd00:2::3".parse().unwrap()), Err(IpamError::OutOfRange));
        let mut ranged = Pool6::new(sub, sub.first_host(), Some("fd00:1::100/120".parse().unwrap()));
        assert_eq!(ranged.allocate().unwrap(), "fd00:1::100".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn fixed_cidr_v6_errors_are_dockers() {
        assert_eq!(parse_fixed_cidr_v6("2001:db8:1::/64").unwrap().to_string(), "2001:db8:1::/64");
        assert_eq!(
            parse_fixed_cidr_v6("2001:db8::1").unwrap_err(),
            "invalid fixed-cidr-v6: invalid fixed-cidr-v6: netip.ParsePrefix(\"2001:db8::1\"): no '/'"
        );
        assert_eq!(
            parse_fixed_cidr_v6("10.0.0.0/8").unwrap_err(),
            "invalid fixed-cidr-v6: invalid fixed-cidr-v6: '10.0.0.0/8' is not a valid IPv6 subnet"
        );
        assert_eq!(
            parse_fixed_cidr_v6("fe80::/80").unwrap_err(),
            "invalid fixed-cidr-v6: invalid fixed-cidr-v6: 'fe80::/80' clashes with the Link-Local prefix 'fe80::/64'"
        );
        assert!(parse_fixed_cidr_v6("2001:db8::/129").unwrap_err().ends_with("prefix length out of range"));
        assert!(parse_fixed_cidr_v6("ff02::/16").unwrap_err().contains("multicast subnet"));
    }

    #[test]
    fn macs() {
        assert_eq!(mac_from_ip(Ipv4Addr::new(172, 17, 0, 2)), [0x02, 0x42, 172, 17, 0, 2]);
        assert_eq!(parse_mac("02:42:ac:11:00:02").unwrap(), [0x02, 0x42, 0xac, 0x11, 0, 2]);
        assert!(parse_mac("02:42:ac:11:00").is_err());
        assert!(parse_mac("zz:42:ac:11:00:02").is_err());
        assert!(parse_mac("01:00:5e:00:00:01").is_err(), "multicast");
    }
}

/// Property tests: CIDR, `--bip`, `--fixed-cidr`, address-pool and MAC parsing never panic, and
/// generated valid values round-trip.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn cidr_ish() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9./,=a-z]{0,24}",
            (any::<[u8; 4]>(), 0u32..=300).prop_map(|(a, l)| format!("{}/{l}", Ipv4Addr::from(a))),
            (any::<[u8; 4]>(), "[0-9+\\- ]{0,4}").prop_map(|(a, l)| format!("{}/{l}", Ipv4Addr::from(a))),
        ]
    }

    fn net() -> impl Strategy<Value = (Ipv4Addr, u8)> {
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| (Ipv4Addr::from(a), l))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn parsers_never_panic(s in cidr_ish()) {
            if let Ok(n) = s.parse::<Ipv4Net>() {
                prop_assert!(n.prefix_len() <= 32);
                prop_assert!(n.contains(n.addr()) && n.contains(n.network()) && n.contains(n.broadcast()));
                let _ = (n.first_host(), n.size(), n.trunc());
            }
            if let Ok((sub, gw)) = parse_bip(&s) {
                prop_assert!(sub.contains(gw) && sub == sub.trunc(), "{s:?}");
            }
            if let Ok(p) = parse_address_pool(&s) {
                prop_assert!(p.size >= p.base.prefix_len() && p.size <= 32, "{s:?}");
            }
            let sub = Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap();
            if let Ok(r) = parse_fixed_cidr(&s, &sub) {
                prop_assert!(sub.contains_net(&r), "{s:?}");
            }
            let _ = parse_mac(&s);
        }

        #[test]
        fn new_accepts_exactly_lengths_up_to_32(a in any::<[u8; 4]>(), len in any::<u8>()) {
            let r = Ipv4Net::new(Ipv4Addr::from(a), len);
            prop_assert_eq!(r.is_ok(), len <= 32);
            if let Ok(n) = r {
                prop_assert_eq!((n.addr(), n.prefix_len()), (Ipv4Addr::from(a), len));
                prop_assert_eq!(n.size(), 1u64 << (32 - len));
            }
        }

        #[test]
        fn cidr_round_trips((a, l) in net()) {
            let s = format!("{a}/{l}");
            let n: Ipv4Net = s.parse().unwrap();
            prop_assert_eq!((n.addr(), n.prefix_len()), (a, l));
            prop_assert_eq!(n.to_string(), s);
            let json = serde_json::to_string(&n).unwrap();
            prop_assert_eq!(serde_json::from_str::<Ipv4Net>(&json).unwrap(), n);
        }

        #[test]
        fn bad_prefix_lengths_are_rejected(a in any::<[u8; 4]>(), l in 33u64..) {
            let s = format!("{}/{l}", Ipv4Addr::from(a));
            prop_assert_eq!(s.parse::<Ipv4Net>(), Err(IpamError::InvalidCidr(s.clone())));
            prop_assert_eq!(parse_bip(&s), Err(IpamError::InvalidCidr(s.clone())));
        }

        #[test]
        fn bip_takes_host_addresses_only((a, l) in net()) {
            let n = Ipv4Net::new(a, l).unwrap();
            let s = format!("{a}/{l}");
            let host = l >= 31 || (a != n.network() && a != n.broadcast());
            match parse_bip(&s) {
                Ok((sub, gw)) => {
                    prop_assert!(host, "{s} accepted");
                    prop_assert_eq!((sub, gw), (n.trunc(), a));
                }
                Err(e) => {
                    prop_assert!(!host, "{s}: {e}");
                    prop_assert!(e.to_string().contains("must be a host address"), "{e}");
                }
            }
        }

        #[test]
        fn fixed_cidr_must_be_inside((a, l) in net(), (b, m) in net()) {
            let sub = Ipv4Net::new(a, l).unwrap();
            let r = Ipv4Net::new(b, m).unwrap();
            let got = parse_fixed_cidr(&format!("{b}/{m}"), &sub);
            prop_assert_eq!(got.is_ok(), sub.contains_net(&r.trunc()));
            if let Ok(x) = got {
                prop_assert_eq!(x, r.trunc());
            }
        }

        #[test]
        fn address_pools_round_trip((a, l) in net(), size in 0u32..=40) {
            let s = format!("base={a}/{l},size={size}");
            match parse_address_pool(&s) {
                Ok(p) => {
                    prop_assert!(size >= u32::from(l) && size <= 32, "{s}");
                    prop_assert_eq!(p, PoolSpec { base: Ipv4Net::new(a, l).unwrap().trunc(), size: size as u8 });
                }
                Err(e) => {
                    prop_assert!(size < u32::from(l) || size > 32, "{s}: {e}");
                }
            }
            // Key order does not matter; a missing key or an unknown one is an error.
            prop_assert_eq!(
                parse_address_pool(&format!("size={size},base={a}/{l}")).is_ok(),
                parse_address_pool(&s).is_ok()
            );
            for bad in [format!("base={a}/{l}"), format!("size={size}"), format!("{s},x=1")] {
                prop_assert!(parse_address_pool(&bad).is_err(), "{}", bad);
            }
        }

        #[test]
        fn macs_round_trip(m in any::<[u8; 6]>(), sep in prop_oneof![Just(':'), Just('-')]) {
            let s = m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(&sep.to_string());
            match parse_mac(&s) {
                Ok(x) => prop_assert_eq!(x, m),
                Err(e) => prop_assert!(m[0] & 1 == 1 && e.to_string().contains("multicast"), "{s}: {e}"),
            }
        }

        #[test]
        fn macs_take_hex_digits_only(
            m in any::<[u8; 5]>(),
            bad in "[^0-9a-fA-F]{2}|[^0-9a-fA-F][0-9a-fA-F]|[0-9a-fA-F][^0-9a-fA-F]",
        ) {
            let s = format!("{bad}:{}", m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"));
            prop_assert!(parse_mac(&s).is_err(), "{s:?}");
        }
    }
}
