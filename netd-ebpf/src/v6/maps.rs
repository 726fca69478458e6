//! The IPv6 maps (twins of `crate::maps`' v4 ones) and their accessors.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use netd_common::{
    EndpointInfo,
    v6::{
        Addr6, CT_UNASSURED_MAX_V6, CtKey6, CtValue6, FragKey6, LinkKey6, NetworkInfo6, PublishedKey6, PublishedValue6,
        UplinkInfo6, capacity,
    },
};

/// `BPF_F_NO_PREALLOC`, as for the v4 maps that grow with ports and sandboxes.
const NO_PREALLOC: u32 = 1;

/// {host addr, port, proto} -> sandbox {addr, port}; `::` is the wildcard.
#[map(name = "PUBLISHED_V6")]
pub static PUBLISHED_V6: HashMap<PublishedKey6, PublishedValue6> =
    HashMap::with_max_entries(capacity::PUBLISHED_V6, NO_PREALLOC);

/// Sandbox IPv6 address -> host-side veth, network, MAC.
#[map(name = "ENDPOINTS_V6")]
pub static ENDPOINTS_V6: HashMap<Addr6, EndpointInfo> = HashMap::with_max_entries(capacity::ENDPOINTS_V6, NO_PREALLOC);

/// Network index -> IPv6 subnet, gateway, flags (the network's `gateway_mode_ipv6`).
#[map(name = "NETWORKS_V6")]
pub static NETWORKS_V6: HashMap<u32, NetworkInfo6> = HashMap::with_max_entries(capacity::NETWORKS_V6, 0);

/// Uplink ifindex -> the address NAT66 masquerades to.
#[map(name = "UPLINKS_V6")]
pub static UPLINKS_V6: HashMap<u32, UplinkInfo6> = HashMap::with_max_entries(capacity::UPLINKS_V6, 0);

/// The host's own IPv6 addresses (every local one, plus the networks' v6 gateways).
#[map(name = "HOST_ADDRS_V6")]
pub static HOST_ADDRS_V6: HashMap<Addr6, u32> = HashMap::with_max_entries(capacity::HOST_ADDRS_V6, 0);

/// The `--link` exceptions under icc=false (`LINKS`' twin): `src` may open `dst:port/proto`.
#[map(name = "LINKS_V6")]
pub static LINKS_V6: HashMap<LinkKey6, u32> = HashMap::with_max_entries(capacity::LINKS_V6, NO_PREALLOC);

/// IPv6 connection tracking and NAT, both directions of each flow (LRU, as `CT_V4`).
#[map(name = "CT_V6")]
pub static CT_V6: LruHashMap<CtKey6, CtValue6> = LruHashMap::with_max_entries(capacity::CT_V6, 0);

/// Unanswered `CT_V6` pairs (see `map_names::CT_UNASSURED`).
#[map(name = "CT_UNASSURED_V6")]
pub static CT_UNASSURED_V6: Array<u64> = Array::with_max_entries(1, 0);

/// The originator keys of the last `CT_UNASSURED_MAX_V6` new IPv6 flows (see `NEW_FLOWS`).
#[map(name = "NEW_FLOWS_V6")]
pub static NEW_FLOWS_V6: Array<CtKey6> = Array::with_max_entries(CT_UNASSURED_MAX_V6 as u32, 0);

/// One `u64`: the next slot of `NEW_FLOWS_V6`.
#[map(name = "NEW_FLOWS_HEAD_V6")]
pub static NEW_FLOWS_HEAD_V6: Array<u64> = Array::with_max_entries(1, 0);

/// The translation an IPv6 first fragment got, for the fragments that follow it.
#[map(name = "FRAGS_V6")]
pub static FRAGS_V6: LruHashMap<FragKey6, CtValue6> = LruHashMap::with_max_entries(capacity::FRAGS_V6, 0);

/// A v4-only sandbox's first IPv4 fragment of a NAT46 flow's reply, by its IPv4 fragment key:
/// the flow's `CT_V6` reply value, for the fragments that follow (`nat46::from_sandbox`).
#[map(name = "FRAGS_46")]
pub static FRAGS_46: LruHashMap<crate::maps::FragKey, CtValue6> = LruHashMap::with_max_entries(4_096, 0);

/// Per-CPU scratch space for a new flow's two keys and two values: kept off the 512-byte BPF
/// stack (an IPv6 pair is 224 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NewFlow6 {
    pub k: CtKey6,
    pub rk: CtKey6,
    pub fwd: CtValue6,
    pub rev: CtValue6,
}

#[map(name = "SCRATCH_V6")]
pub static SCRATCH_V6: PerCpuArray<NewFlow6> = PerCpuArray::with_max_entries(1, 0);

/// The parsed IPv6 packet (one per CPU). In map memory on purpose: the verifier does not
/// follow values read back from a map, so the many paths through the bounded extension-header
/// walk (each leaving other offsets behind) meet again after it instead of multiplying the
/// rest of the program.
#[map(name = "SCRATCH_PKT6")]
pub static SCRATCH_PKT6: PerCpuArray<super::parse::Pkt6> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn eq6(a: &Addr6, b: &Addr6) -> bool {
    // (No memcmp on the bpf target: compare the words.)
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) == 0
}

#[inline(always)]
pub fn key_eq(a: &CtKey6, b: &CtKey6) -> bool {
    eq6(&a.saddr, &b.saddr) && eq6(&a.daddr, &b.daddr) && a.sport == b.sport && a.dport == b.dport && a.proto == b.proto
}

#[inline(always)]
pub fn is_host_addr6(a: &Addr6) -> bool {
    // SAFETY: read-only lookup.
    unsafe { HOST_ADDRS_V6.get(a).is_some() }
}

/// `::1` (the loopback address).
#[inline(always)]
pub fn is_loopback6(a: &Addr6) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == u32::from_ne_bytes([0, 0, 0, 1])
}

/// A multicast address (ff00::/8).
#[inline(always)]
pub fn is_multicast6(a: &Addr6) -> bool {
    a[0].to_ne_bytes()[0] == 0xff
}

// (References into the maps, not copies: the IPv6 bodies keep their frames small, since
// their callers' v4 frames count against the same 512 bytes.)
#[inline(always)]
pub fn endpoint6(a: &Addr6) -> Option<&'static EndpointInfo> {
    // SAFETY: read-only lookup; map values stay valid for the program run.
    unsafe { ENDPOINTS_V6.get(a) }
}

#[inline(always)]
pub fn network6(idx: u32) -> Option<&'static NetworkInfo6> {
    // SAFETY: as above.
    unsafe { NETWORKS_V6.get(&idx) }
}

/// The published port for (proto, host addr, port): the exact address first, then `::`.
#[inline(always)]
pub fn published6(proto: u8, addr: &Addr6, port: u16) -> Option<&'static PublishedValue6> {
    let k = PublishedKey6 { addr: *addr, port, proto, _pad: 0 };
    // SAFETY: read-only lookups; map values stay valid for the program run.
    unsafe {
        if let Some(v) = PUBLISHED_V6.get(&k) {
            return Some(v);
        }
        PUBLISHED_V6.get(&PublishedKey6 { addr: [0; 4], ..k })
    }
}

/// Whether a `--link` opened `dst:port/proto` to `src` (icc=false).
#[inline(always)]
pub fn linked6(src: &Addr6, dst: &Addr6, port: u16, proto: u8) -> bool {
    let k = LinkKey6 { src: *src, dst: *dst, port, proto, _pad: 0 };
    // SAFETY: read-only lookup.
    unsafe { LINKS_V6.get(&k).is_some() }
}

/// Exact published entry only (routed mode opens sandbox ports under their own address).
#[inline(always)]
pub fn published6_exact(proto: u8, addr: &Addr6, port: u16) -> bool {
    let k = PublishedKey6 { addr: *addr, port, proto, _pad: 0 };
    // SAFETY: read-only lookup.
    unsafe { PUBLISHED_V6.get(&k).is_some() }
}

#[inline(always)]
pub fn uplink6(ifindex: u32) -> Option<Addr6> {
    // SAFETY: read-only lookup, copied out.
    unsafe { UPLINKS_V6.get(&ifindex).map(|u| u.addr) }
}
