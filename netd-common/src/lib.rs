//! Types shared by the eBPF programs (`netd-ebpf`) and userspace (`netd`).
//!
//! Every type that crosses the user/kernel boundary is `#[repr(C)]`, has explicit padding fields
//! (so no byte of a map key is ever uninitialised) and a compile-time size assertion, so a layout
//! change on one side cannot silently disagree with the other. Addresses and ports are stored in
//! **network byte order** exactly as they appear in packets; helpers convert.
#![no_std]

pub mod monitor;
pub mod tcp_window;
pub mod v6;

/// Map names, as they appear in the object file and under the bpffs pin directory.
pub mod map_names {
    pub const PROG_STATS: &str = "PROG_STATS";
    pub const DROP_STATS: &str = "DROP_STATS";
    pub const CONFIG: &str = "CONFIG";
    pub const PUBLISHED_V4: &str = "PUBLISHED_V4";
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const NETWORKS: &str = "NETWORKS";
    pub const UPLINKS: &str = "UPLINKS";
    pub const HOST_ADDRS: &str = "HOST_ADDRS";
    pub const LINKS: &str = "LINKS";
    pub const CT_V4: &str = "CT_V4";
    pub const PORT_STATS: &str = "PORT_STATS";
    /// One `u64`: conntrack pairs not yet established/answered (recounted by the GC, added to
    /// by the programs); new flows are refused above [`CT_UNASSURED_MAX`].
    pub const CT_UNASSURED: &str = "CT_UNASSURED";
    /// One `u64`: `bpf_ktime_get_ns` of the last host flow that got another source port
    /// (0: none live), so the host's TCP segments are looked up only while one may exist.
    pub const HOST_NAT: &str = "HOST_NAT";
    /// Ifindexes of the host's bridges that are Docker's own (docker0, `br-<12 hex>`, not
    /// netd's): traffic between them and netd's bridges is dropped both ways.
    pub const FOREIGN_BRIDGES: &str = "FOREIGN_BRIDGES";
    /// One `u32`: the generation of the host's routes and neighbours, bumped by userspace on
    /// every change; a conntrack entry's cached FIB result is used only while its `fib_gen`
    /// equals it (0: never cached).
    pub const FIB_GEN: &str = "FIB_GEN";
    /// The originator keys of the last new flows, a ring the early drop reads (with
    /// [`CT_UNASSURED`], pinned so that a restarted daemon's programs still find the unanswered
    /// flows of a flood that began before it).
    pub const NEW_FLOWS: &str = "NEW_FLOWS";
    /// One `u64`: the next slot of [`NEW_FLOWS`].
    pub const NEW_FLOWS_HEAD: &str = "NEW_FLOWS_HEAD";

    /// Every map, in pin order.
    pub const ALL: [&str; 17] = [
        PROG_STATS,
        DROP_STATS,
        CONFIG,
        PUBLISHED_V4,
        ENDPOINTS,
        NETWORKS,
        UPLINKS,
        HOST_ADDRS,
        LINKS,
        CT_V4,
        PORT_STATS,
        HOST_NAT,
        CT_UNASSURED,
        FOREIGN_BRIDGES,
        FIB_GEN,
        NEW_FLOWS,
        NEW_FLOWS_HEAD,
    ];
}

/// Map capacities (entries).
pub mod capacity {
    pub const PUBLISHED_V4: u32 = 65_536;
    pub const ENDPOINTS: u32 = 16_384;
    pub const NETWORKS: u32 = 1_024;
    pub const UPLINKS: u32 = 64;
    pub const FOREIGN_BRIDGES: u32 = 1_024;
    pub const HOST_ADDRS: u32 = 1_024;
    pub const LINKS: u32 = 16_384;
    /// Two entries per translated flow (both directions).
    pub const CT_V4: u32 = 262_144;
    /// One slot per published port.
    pub const PORT_STATS: u32 = 65_536;
}

/// Key of `PUBLISHED_V4`: a host (address, port) for a protocol. `addr` 0 is the wildcard
/// (`0.0.0.0`); the programs look up the exact address first. Network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PublishedKey {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of `PUBLISHED_V4`: where the port leads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishedValue {
    /// Sandbox address and port (network byte order).
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
    /// Network index of the sandbox's endpoint.
    pub net: u32,
    /// Slot in `PORT_STATS`.
    pub stats_slot: u32,
}

/// Value of `ENDPOINTS` (key: sandbox IPv4 address, network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Host-side veth (target of `bpf_redirect_peer`).
    pub ifindex: u32,
    pub net: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Value of `NETWORKS` (key: network index).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    pub subnet: u32,
    pub mask: u32,
    pub gateway: u32,
    pub bridge_ifindex: u32,
    pub gateway_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// `NET_F_*`.
    pub flags: u32,
}

pub const NET_F_ICC: u32 = 1 << 0;
pub const NET_F_MASQUERADE: u32 = 1 << 1;
pub const NET_F_INTERNAL: u32 = 1 << 2;
/// nat mode: packets from outside to sandbox addresses are dropped (Docker's raw rule).
pub const NET_F_PROTECT: u32 = 1 << 3;
/// routed mode: no NAT; sandbox addresses reachable from outside on published container ports
/// (registered in `PUBLISHED_V4` under the sandbox's own address) and ICMP.
pub const NET_F_ROUTED: u32 = 1 << 4;

/// Value of `UPLINKS` (key: ifindex): the address used for masquerade.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkInfo {
    pub addr: u32,
    pub _pad: u32,
}

/// Key of `LINKS`: under icc=false, `src` may open `dst:port/proto` (`--link`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LinkKey {
    pub src: u32,
    pub dst: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// A flow as seen on the wire in one direction (network byte order). For ICMP echo the id is
/// the source "port" of requests and the destination "port" of replies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl CtKey {
    /// The tuple of the other direction.
    pub const fn reversed(&self) -> Self {
        Self {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// What to do with a packet of a tracked flow: rewrite to this tuple, then deliver.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    /// `CT_ACT_*`.
    pub action: u8,
    /// `CT_F_*`.
    pub flags: u8,
    /// `CT_ACT_FIB`: the egress MTU of the cached route (see `fib_gen`).
    pub fib_mtu: u16,
    /// Host-side veth for `CT_ACT_PEER`; `CT_ACT_FIB`: the cached route's egress device.
    pub ifindex: u32,
    /// `CT_ACT_PEER`: the sandbox's and its gateway's MAC; `CT_ACT_FIB`: the cached next hop's
    /// and the egress device's.
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// `PORT_STATS` slot + 1 (0: not a published-port flow).
    pub stats_slot: u32,
    /// TCP window tracking ([`tcp_window`]): the highest acknowledgement number this direction
    /// sent (the next byte it expects, the left edge of its receive window); for the originator
    /// until its first ACK, its SYN's end.
    pub ack: u32,
    pub last_seen_ns: u64,
    /// `CT_ACT_FIB`: the `FIB_GEN` at which `ifindex`, the MACs and `fib_mtu` were cached from
    /// `bpf_fib_lookup` (0: nothing cached). A route or neighbour change bumps `FIB_GEN`, so a
    /// stale cache is never used.
    pub fib_gen: u32,
    /// TCP window tracking ([`tcp_window`]): the window this direction sent with `ack`, in
    /// units of 16 bytes (rounded up) in the top 12 bits, its SYN's window scale in the low 4
    /// ([`CT_WSCALE_NONE`]: none announced).
    pub wnd: u16,
    pub _pad: u16,
}

/// Deliver into a sandbox with `bpf_redirect_peer(ifindex)`.
pub const CT_ACT_PEER: u8 = 1;
/// Route with `bpf_fib_lookup` and redirect toward the egress device.
pub const CT_ACT_FIB: u8 = 2;
/// Let the stack have it (rewritten if needed).
pub const CT_ACT_PASS: u8 = 3;
/// A marker for a host-originated flow (reserves its tuple against SNAT reuse).
pub const CT_ACT_HOSTFLOW: u8 = 4;
/// NAT46 (`CT_V6` only): an IPv6 packet for a v4-only sandbox's `[::]` (or v6 host address)
/// binding becomes IPv4 to the entry's v4-mapped tuple (`::ffff:gateway` -> `::ffff:sandbox`),
/// delivered into the sandbox's veth (`CT_ACT_PEER`'s fields).
pub const CT_ACT_NAT46: u8 = 5;
/// NAT64 (`CT_V6` only, keyed by the v4-mapped reply tuple): the sandbox's IPv4 reply becomes
/// IPv6 to the entry's tuple, routed (`bpf_fib_lookup` as if it came in on `ifindex`, the
/// uplink the flow arrived on).
pub const CT_ACT_NAT64: u8 = 6;
/// NAT64 into a veth (`CT_ACT_PEER`'s fields): the reply of a v6 sandbox's hairpin flow.
pub const CT_ACT_NAT64_PEER: u8 = 7;

/// This direction sent a FIN or an in-window RST.
pub const CT_F_CLOSING: u8 = 1 << 0;
/// Same-bridge delivery (a `--link` flow under icc=false): a layer-2 hop, so the TTL is left
/// alone, as on the bridge. Without it, `CT_ACT_PEER`/`CT_ACT_FIB` are routed hops (TTL
/// decremented, checked).
pub const CT_F_L2: u8 = 1 << 7;
/// A packet was seen in this direction (both directions seen: the flow was answered).
pub const CT_F_SEEN: u8 = 1 << 1;
/// TCP: this direction sent a segment with ACK and without SYN (with an answer: established,
/// nf_conntrack's "assured").
pub const CT_F_ACKED: u8 = 1 << 2;
/// TCP: this direction sent an in-window RST.
pub const CT_F_RST: u8 = 1 << 3;
/// A host flow that got another source port (its tuple clashed with a sandbox flow's).
pub const CT_F_HOSTNAT: u8 = 1 << 4;
/// The reply direction's entry of a pair (the other one is the originator's).
pub const CT_F_REPLY: u8 = 1 << 5;
/// TCP: this direction's SYN was seen (its window scale in `wnd` is valid, and the flow's
/// windows are tracked; a flow without both is one picked up mid-stream, judged liberally).
pub const CT_F_SYN: u8 = 1 << 6;
/// `wnd`'s scale bits when the SYN announced no window scale.
pub const CT_WSCALE_NONE: u16 = 15;

/// At most this many flows (pairs) not yet established (TCP) or answered (UDP, ICMP): a SYN
/// flood fills this share of `CT_V4` and no more, so the LRU never evicts established flows for
/// it. At the cap a new flow evicts the oldest unanswered one, as nf_conntrack's early drop
/// does (`ct_early_drop`); only when the oldest ones it looks at are all answered is the new
/// flow dropped (`ct_full`) until the GC expires unanswered ones.
pub const CT_UNASSURED_MAX: u64 = capacity::CT_V4 as u64 / 4;

/// How many of the oldest recent new flows the early drop looks at for an unanswered one.
pub const EARLY_DROP_TRIES: u32 = 8;

/// Conntrack timeouts (seconds), nf_conntrack's defaults: an unanswered TCP SYN (SYN_SENT),
/// answered but not established (SYN_RECV), established, half-closed (one FIN), closed
/// (FIN both ways, or RST); UDP unanswered / answered; ICMP.
pub mod ct_timeout {
    pub const TCP_SYN_SENT: u64 = 120;
    pub const TCP_SYN_RECV: u64 = 60;
    pub const TCP_ESTABLISHED: u64 = 432_000;
    pub const TCP_HALF_CLOSED: u64 = 120;
    pub const TCP_CLOSED: u64 = 10;
    pub const UDP_UNREPLIED: u64 = 30;
    pub const UDP_REPLIED: u64 = 120;
    pub const ICMP: u64 = 30;
}

/// Source ports masquerade picks when the sandbox's own port is taken (and hairpin always):
/// outside the host's ephemeral range (`net.ipv4.ip_local_port_range`, in [`Config`]), so the
/// host's own connections never pick them. These bounds apply when the range is unknown
/// (Linux's default range 32768-60999).
pub const SNAT_PORT_MIN: u16 = 61_000;
pub const SNAT_PORT_MAX: u16 = 65_535;
pub const SNAT_TRIES: u32 = 16;
/// Hairpin SNAT (to a gateway address, toward a sandbox) also uses 1024-32767: the host's own
/// connections from a gateway address take ephemeral ports (32768-60999) and are not tracked, so
/// hairpin stays out of that range but needs more than 61000-65535 alone. A closed tuple is
/// held for a second, and short connections at over 4,536/s exhausted the small range.
pub const HAIRPIN_LOW_MIN: u16 = 1024;
pub const HAIRPIN_LOW_MAX: u16 = 32_767;

/// Entry points of the object, as named in the ELF (and in `bpftool prog show`).
pub mod prog_names {
    pub const XDP_UPLINK: &str = "netd_xdp_uplink";
    pub const FROM_NETDEV: &str = "netd_from_netdev";
    /// The same for a layer-3 uplink (no Ethernet header).
    pub const FROM_NETDEV_L3: &str = "netd_from_netdev_l3";
    /// The egress of a layer-3 uplink.
    pub const TO_NETDEV_L3: &str = "netd_to_netdev_l3";
    pub const TO_NETDEV: &str = "netd_to_netdev";
    pub const FROM_CONTAINER: &str = "netd_from_container";
    pub const SOCK_CONNECT4: &str = "netd_sock_connect4";
    pub const SOCK_SENDMSG4: &str = "netd_sock_sendmsg4";
    pub const SOCK_RECVMSG4: &str = "netd_sock_recvmsg4";
    pub const SOCK_CONNECT6: &str = "netd_sock_connect6";
    pub const SOCK_SENDMSG6: &str = "netd_sock_sendmsg6";
    pub const SOCK_RECVMSG6: &str = "netd_sock_recvmsg6";
    pub const TO_BRIDGE: &str = "netd_to_bridge";
    pub const FROM_FOREIGN_BRIDGE: &str = "netd_from_foreign_bridge";

    pub const ALL: [&str; 14] = [
        XDP_UPLINK,
        FROM_NETDEV,
        TO_NETDEV,
        FROM_CONTAINER,
        SOCK_CONNECT4,
        SOCK_SENDMSG4,
        SOCK_RECVMSG4,
        TO_BRIDGE,
        FROM_FOREIGN_BRIDGE,
        SOCK_CONNECT6,
        SOCK_SENDMSG6,
        SOCK_RECVMSG6,
        // Counted as FromNetdev and ToNetdev (same bodies): not ProgIds of their own.
        FROM_NETDEV_L3,
        TO_NETDEV_L3,
    ];
}

/// Index of each entry point in [`map_names::PROG_STATS`] (a per-CPU array of [`PacketCount`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgId {
    XdpUplink = 0,
    FromNetdev = 1,
    ToNetdev = 2,
    FromContainer = 3,
    SockConnect4 = 4,
    SockSendmsg4 = 5,
    SockRecvmsg4 = 6,
    ToBridge = 7,
    FromForeignBridge = 8,
    SockConnect6 = 9,
    SockSendmsg6 = 10,
    SockRecvmsg6 = 11,
}

impl ProgId {
    pub const COUNT: u32 = 12;
    pub const ALL: [ProgId; 12] = [
        ProgId::XdpUplink,
        ProgId::FromNetdev,
        ProgId::ToNetdev,
        ProgId::FromContainer,
        ProgId::SockConnect4,
        ProgId::SockSendmsg4,
        ProgId::SockRecvmsg4,
        ProgId::ToBridge,
        ProgId::FromForeignBridge,
        ProgId::SockConnect6,
        ProgId::SockSendmsg6,
        ProgId::SockRecvmsg6,
    ];

    /// The ELF name of the entry point this counter belongs to.
    pub const fn prog_name(self) -> &'static str {
        prog_names::ALL[self as usize]
    }
}

/// Why a program dropped (or refused) a packet; index into [`map_names::DROP_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Headers shorter than their own length fields claim.
    Malformed = 0,
    /// From outside straight to a sandbox address (Docker's raw `-d C ! -i bridge -j DROP`).
    DirectToSandbox = 1,
    /// To 127.0.0.0/8 but not arriving on `lo`.
    LoopbackNotLo = 2,
    /// Inter-container traffic refused by icc=false.
    Icc = 3,
    /// Traffic between two different networks.
    Isolation = 4,
    /// No free SNAT port after the bounded number of tries.
    SnatExhausted = 5,
    /// A conntrack/NAT pair could not be inserted.
    CtInsert = 6,
    /// From a sandbox on an `--internal` network to a port published by another sandbox (an
    /// internal network has no way out, not even through a host address).
    Internal = 7,
    /// A non-first fragment with no recorded translation (it arrived before its first
    /// fragment, or that one was not seen): a BPF program cannot queue it, passing it would
    /// leak or lose it untranslated.
    FragUnknown = 8,
    /// A new flow while the conntrack table holds [`CT_UNASSURED_MAX`] unanswered flows (a SYN
    /// flood): established flows keep their entries.
    CtFull = 9,
    /// Not a drop of the packet counted: an unanswered flow evicted at [`CT_UNASSURED_MAX`] to
    /// make room for a new one (nf_conntrack's early drop); its next packet starts over.
    CtEarlyDrop = 10,
    /// A TCP RST outside its receiver's window (a blind RST): nf_conntrack marks it invalid and
    /// NAT never applies to it; the flow stays open.
    InvalidRst = 11,
    /// A packet of a NAT46/NAT64 flow (a v4-only sandbox's `[::]` binding) that cannot be
    /// translated: a fragment, IPv6 extension headers, IPv4 options, a UDP datagram without
    /// checksum, or one too big for the egress device once its header grew by 20 bytes.
    Nat46 = 12,
}

impl DropReason {
    pub const COUNT: u32 = 13;
    pub const ALL: [DropReason; 13] = [
        DropReason::Malformed,
        DropReason::DirectToSandbox,
        DropReason::LoopbackNotLo,
        DropReason::Icc,
        DropReason::Isolation,
        DropReason::SnatExhausted,
        DropReason::CtInsert,
        DropReason::Internal,
        DropReason::FragUnknown,
        DropReason::CtFull,
        DropReason::CtEarlyDrop,
        DropReason::InvalidRst,
        DropReason::Nat46,
    ];

    /// Label used in `netd stats` and in the Prometheus `reason` label.
    pub const fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::DirectToSandbox => "direct_to_sandbox",
            DropReason::LoopbackNotLo => "loopback_not_lo",
            DropReason::Icc => "icc",
            DropReason::Isolation => "isolation",
            DropReason::SnatExhausted => "snat_exhausted",
            DropReason::CtInsert => "ct_insert",
            DropReason::Internal => "internal",
            DropReason::FragUnknown => "frag_unknown",
            DropReason::CtFull => "ct_full",
            DropReason::CtEarlyDrop => "ct_early_drop",
            DropReason::InvalidRst => "invalid_rst",
            DropReason::Nat46 => "nat46_untranslatable",
        }
    }
}

/// Packets and bytes seen; value of the per-CPU counter maps (summed in userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCount {
    pub packets: u64,
    pub bytes: u64,
}

/// Global knobs set by userspace before the programs are attached; value of the one-entry
/// `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `bpf_get_netns_cookie` of the daemon's network namespace: the cgroup sock_addr hooks act
    /// only on sockets of this namespace (they see every namespace of the machine).
    pub netns_cookie: u64,
    /// Bit flags, see `CONFIG_F_*`.
    pub flags: u32,
    /// The host's ephemeral port range (`net.ipv4.ip_local_port_range` of the daemon's netns,
    /// host byte order; 0/0: unknown, Linux's default assumed). SNAT never draws from it.
    pub port_lo: u16,
    pub port_hi: u16,
}

/// Linux's default `ip_local_port_range`.
pub const DEFAULT_PORT_RANGE: (u16, u16) = (32_768, 60_999);
/// Lowest port SNAT draws (below: privileged ports).
pub const SNAT_FLOOR: u16 = 1024;

/// Count every packet per entry point (always on; the cost is one per-CPU add).
pub const CONFIG_F_ENABLED: u32 = 1 << 0;
/// Some `PUBLISHED_V6` binding leads to a v4-only sandbox (NAT46): a sandbox's IPv4 packet
/// without a `CT_V4` entry may be a NAT46 flow's reply (or an ICMP error about one), looked up
/// in `CT_V6`. Without it the programs skip that lookup.
pub const CONFIG_F_NAT46: u32 = 1 << 1;

/// IP protocol numbers used as the `proto` field of map keys.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

const _: () = assert!(core::mem::size_of::<PacketCount>() == 16);
const _: () = assert!(core::mem::size_of::<PublishedKey>() == 8);
const _: () = assert!(core::mem::size_of::<PublishedValue>() == 16);
const _: () = assert!(core::mem::size_of::<EndpointInfo>() == 16);
const _: () = assert!(core::mem::size_of::<NetworkInfo>() == 28);
const _: () = assert!(core::mem::size_of::<UplinkInfo>() == 8);
const _: () = assert!(core::mem::size_of::<LinkKey>() == 12);
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);
const _: () = assert!(core::mem::size_of::<CtValue>() == 56);
// The programs write `dmac` and `smac` into a frame as one 12-byte block.
const _: () = assert!(core::mem::offset_of!(CtValue, smac) == core::mem::offset_of!(CtValue, dmac) + 6);
// ... read as three aligned words (`nat::set_macs12` in netd-ebpf).
const _: () = assert!(core::mem::offset_of!(CtValue, dmac) % 4 == 0);
const _: () = assert!(core::mem::offset_of!(v6::CtValue6, dmac) % 4 == 0 && core::mem::align_of::<v6::CtValue6>() >= 4);
const _: () = assert!(core::mem::size_of::<Config>() == 16);
const _: () = assert!(core::mem::size_of::<ProgId>() == 4);
const _: () = assert!(core::mem::size_of::<DropReason>() == 4);
const _: () = assert!(ProgId::ALL.len() == ProgId::COUNT as usize);
const _: () = assert!(DropReason::ALL.len() == DropReason::COUNT as usize);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, no implicit padding (checked by the size asserts).
    unsafe impl aya::Pod for super::PacketCount {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::PublishedKey {}
    unsafe impl aya::Pod for super::PublishedValue {}
    unsafe impl aya::Pod for super::EndpointInfo {}
    unsafe impl aya::Pod for super::NetworkInfo {}
    unsafe impl aya::Pod for super::UplinkInfo {}
    unsafe impl aya::Pod for super::LinkKey {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtValue {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prog_ids_match_names() {
        for (i, id) in ProgId::ALL.iter().enumerate() {
            assert_eq!(*id as usize, i);
            assert_eq!(id.prog_name(), prog_names::ALL[i]);
        }
        assert_eq!(ProgId::FromContainer.prog_name(), "netd_from_container");
    }

    #[test]
    fn drop_reasons_are_dense_and_labelled() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(!r.label().is_empty());
        }
    }

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(core::mem::align_of::<PacketCount>(), 8);
        assert_eq!(core::mem::offset_of!(Config, flags), 8);
        assert_eq!(core::mem::offset_of!(PacketCount, bytes), 8);
    }
}
