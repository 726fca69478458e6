//! Map definitions and small accessors.
use aya_ebpf::{
    helpers::generated::bpf_get_netns_cookie,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::SockAddrContext,
};
use netd_common::{
    Config, CtKey, CtValue, DropReason, EndpointInfo, LinkKey, NetworkInfo, PacketCount, ProgId, PublishedKey,
    PublishedValue, UplinkInfo, capacity,
};

/// Packets/bytes per entry point (index: [`ProgId`]).
#[map(name = "PROG_STATS")]
pub static PROG_STATS: PerCpuArray<PacketCount> = PerCpuArray::with_max_entries(ProgId::COUNT, 0);

/// Packets per drop reason (index: [`DropReason`]).
#[map(name = "DROP_STATS")]
pub static DROP_STATS: PerCpuArray<PacketCount> = PerCpuArray::with_max_entries(DropReason::COUNT, 0);

/// `BPF_F_NO_PREALLOC`: maps that grow with published ports, sandboxes and links take memory per
/// entry instead of their whole capacity up front (a published port costs ~100 bytes of map
/// memory, see bench/report.md). Programs only read them; userspace writes them.
const NO_PREALLOC: u32 = 1;

/// One entry: global configuration written by userspace.
#[map(name = "CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// {host addr, port, proto} -> sandbox {addr, port}.
#[map(name = "PUBLISHED_V4")]
pub static PUBLISHED_V4: HashMap<PublishedKey, PublishedValue> =
    HashMap::with_max_entries(capacity::PUBLISHED_V4, NO_PREALLOC);

/// Sandbox address -> host-side veth, network, MAC.
#[map(name = "ENDPOINTS")]
pub static ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::with_max_entries(capacity::ENDPOINTS, NO_PREALLOC);

/// Network index -> subnet, gateway, flags.
#[map(name = "NETWORKS")]
pub static NETWORKS: HashMap<u32, NetworkInfo> = HashMap::with_max_entries(capacity::NETWORKS, 0);

/// Uplink ifindex -> masquerade address.
#[map(name = "UPLINKS")]
pub static UPLINKS: HashMap<u32, UplinkInfo> = HashMap::with_max_entries(capacity::UPLINKS, 0);

/// Ifindexes of Docker's own bridges (docker0, `br-<12 hex>`) in the daemon's namespace, netd's
/// bridges left out by userspace: isolated from netd's networks both ways.
#[map(name = "FOREIGN_BRIDGES")]
pub static FOREIGN_BRIDGES: HashMap<u32, u32> = HashMap::with_max_entries(capacity::FOREIGN_BRIDGES, 0);

/// Whether `ifindex` is one of Docker's own bridges.
#[inline(always)]
pub fn is_foreign_bridge(ifindex: u32) -> bool {
    // SAFETY: read-only lookup.
    unsafe { FOREIGN_BRIDGES.get(&ifindex).is_some() }
}

/// The host's own addresses (uplinks, bridge gateways): targets of hairpin and local access.
#[map(name = "HOST_ADDRS")]
pub static HOST_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(capacity::HOST_ADDRS, 0);

/// icc=false exceptions opened by `--link`.
#[map(name = "LINKS")]
pub static LINKS: HashMap<LinkKey, u32> = HashMap::with_max_entries(capacity::LINKS, NO_PREALLOC);

/// Connection tracking and NAT, both directions of each flow (LRU: a full table evicts the
/// oldest flows, it never refuses new ones).
#[map(name = "CT_V4")]
pub static CT_V4: LruHashMap<CtKey, CtValue> = LruHashMap::with_max_entries(capacity::CT_V4, 0);

/// `bpf_ktime_get_ns` of the last host flow given another source port (see `map_names::HOST_NAT`).
#[map(name = "HOST_NAT")]
pub static HOST_NAT: Array<u64> = Array::with_max_entries(1, 0);

/// Unanswered conntrack pairs (see `map_names::CT_UNASSURED`).
#[map(name = "CT_UNASSURED")]
pub static CT_UNASSURED: Array<u64> = Array::with_max_entries(1, 0);

/// The originator keys of the last `CT_UNASSURED_MAX` new flows, oldest at `NEW_FLOWS_HEAD`:
/// where the early drop looks for an unanswered flow to evict.
#[map(name = "NEW_FLOWS")]
pub static NEW_FLOWS: Array<CtKey> = Array::with_max_entries(netd_common::CT_UNASSURED_MAX as u32, 0);

/// One `u64`: the next slot of `NEW_FLOWS` (a count of new flows; not atomic across CPUs, a
/// lost update only makes one slot be written twice).
#[map(name = "NEW_FLOWS_HEAD")]
pub static NEW_FLOWS_HEAD: Array<u64> = Array::with_max_entries(1, 0);

/// A fragmented datagram: (addresses, IP id, protocol) of its first fragment.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FragKey {
    pub saddr: u32,
    pub daddr: u32,
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// The translation the first fragment got, for the fragments that follow it.
#[map(name = "FRAGS")]
pub static FRAGS: LruHashMap<FragKey, CtValue> = LruHashMap::with_max_entries(16_384, 0);

/// The host's route/neighbour generation (see `map_names::FIB_GEN`), written by userspace.
#[map(name = "FIB_GEN")]
pub static FIB_GEN: Array<u32> = Array::with_max_entries(1, 0);

/// The current route/neighbour generation (0: none published, nothing is cached).
#[inline(always)]
pub fn fib_gen() -> u32 {
    FIB_GEN.get(0).copied().unwrap_or(0)
}

/// Scratch space for `bpf_fib_lookup` parameters (one per CPU): kept off the BPF stack.
#[map(name = "SCRATCH_FIB")]
pub static SCRATCH_FIB: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for TCP window tracking (`tcpwin`), one per CPU, kept off the BPF stack (the
/// tracking runs where the call chains have little left): a SYN's options (read for its window
/// scale), a header not read straight from the linear data, an IPv6 receiver's key.
#[repr(C)]
pub struct TcpScratch {
    pub opts: [u8; 40],
    pub hdr: [u8; 12],
    pub _pad: u32,
    pub key6: netd_common::v6::CtKey6,
}

/// The bytes of an IPv4 packet's head that `nat::set_tuple` and the MAC stores write, one per
/// CPU, off the BPF stack, laid out as the frame is from byte [`SCRATCH_HEAD`] on (the frame's
/// offset `o` at byte `o + 2`, so the IPv4 header's byte 8 starts a word): bytes 2..14 the
/// Ethernet addresses (written by `set_tuple` with the headers), 14..24 the EtherType and the IPv4 header's first 8
/// bytes as the parser read them (`Pkt::head`, the common frame only), words [`SCRATCH_MID_AT`]..
/// the IPv4 header's TTL to destination address (bytes 8..20, written by `set_tuple`), words
/// [`SCRATCH_L4_AT`].. the first 20 bytes of the TCP header (UDP: 8) as the parser read them
/// (`Pkt::l4_copied`). `set_tuple` rewrites them in place and writes them back with one store:
/// from the frame's first byte when all of it is here (MACs, an IPv4 header without options),
/// else the IPv4 header's middle and the L4 header (adjacent without options) and the MACs apart.
#[map(name = "SCRATCH_L4")]
pub static SCRATCH_L4: PerCpuArray<[u32; 16]> = PerCpuArray::with_max_entries(1, 0);

/// The byte of `SCRATCH_L4` that holds the frame's first.
pub const SCRATCH_HEAD: usize = 2;
/// The word of `SCRATCH_L4` where the IPv4 header's byte 8 (the TTL) is.
pub const SCRATCH_MID_AT: usize = 6;
/// The word of `SCRATCH_L4` where the L4 header starts.
pub const SCRATCH_L4_AT: usize = 9;

#[map(name = "SCRATCH_TCP")]
pub static SCRATCH_TCP: PerCpuArray<TcpScratch> = PerCpuArray::with_max_entries(1, 0);

/// The per-CPU `TcpScratch`.
#[inline(always)]
pub fn tcp_scratch() -> Option<&'static mut TcpScratch> {
    // SAFETY: per-CPU map value, valid for this program run; nothing else runs on this CPU.
    SCRATCH_TCP.get_ptr_mut(0).map(|s| unsafe { &mut *s })
}

/// Packets/bytes per published port (slot from `PublishedValue::stats_slot`).
#[map(name = "PORT_STATS")]
pub static PORT_STATS: PerCpuArray<PacketCount> = PerCpuArray::with_max_entries(capacity::PORT_STATS, 0);

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// Whether some NAT46 binding exists (`CONFIG_F_NAT46`, set by the daemon): only then may a
/// sandbox's untracked IPv4 packet belong to a NAT46 flow (`v6::nat46`).
#[inline(always)]
pub fn nat46_on() -> bool {
    config().is_some_and(|c| c.flags & netd_common::CONFIG_F_NAT46 != 0)
}

/// True when the socket belongs to the network namespace the daemon configured. An unset
/// cookie (0) matches nothing, so a freshly loaded object never acts machine-wide.
#[inline(always)]
pub fn in_daemon_netns(ctx: &SockAddrContext) -> bool {
    let Some(cfg) = config() else { return false };
    if cfg.netns_cookie == 0 {
        return false;
    }
    // SAFETY: the helper reads the context's socket; the context pointer comes from the kernel.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    cookie == cfg.netns_cookie
}

#[inline(always)]
pub fn is_host_addr(addr: u32) -> bool {
    // SAFETY: read-only lookup.
    unsafe { HOST_ADDRS.get(&addr).is_some() }
}

/// The published port for (proto, host addr, port): the exact address first, then 0.0.0.0.
#[inline(always)]
pub fn published(proto: u8, addr: u32, port: u16) -> Option<PublishedValue> {
    let k = PublishedKey { addr, port, proto, _pad: 0 };
    // SAFETY: read-only lookups; values are copied out.
    unsafe {
        if let Some(v) = PUBLISHED_V4.get(&k) {
            return Some(*v);
        }
        PUBLISHED_V4.get(&PublishedKey { addr: 0, ..k }).copied()
    }
}

/// Exact published entry only (routed mode opens sandbox ports under their own address).
#[inline(always)]
pub fn published_exact(proto: u8, addr: u32, port: u16) -> bool {
    let k = PublishedKey { addr, port, proto, _pad: 0 };
    // SAFETY: read-only lookup.
    unsafe { PUBLISHED_V4.get(&k).is_some() }
}

/// In place (a map value, valid for the program run; userspace replaces entries whole):
/// copies would cost stack the call chains do not have.
#[inline(always)]
pub fn endpoint(addr: u32) -> Option<&'static EndpointInfo> {
    // SAFETY: read-only lookup.
    unsafe { ENDPOINTS.get(&addr) }
}

/// In place, as [`endpoint`].
#[inline(always)]
pub fn network(idx: u32) -> Option<&'static NetworkInfo> {
    // SAFETY: read-only lookup.
    unsafe { NETWORKS.get(&idx) }
}
