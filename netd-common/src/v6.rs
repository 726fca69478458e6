//! The IPv6 half of the maps the programs share with userspace (CT_V6 and the v6 twins of the
//! v4 maps). Same conventions as the v4 types: `#[repr(C)]`, explicit padding, size asserts,
//! addresses and ports in network byte order exactly as on the wire.
//!
//! An address is `[u32; 4]` (the 16 bytes of the address, each word read natively from the
//! packet): [`addr6`] and [`ipv6_of`] convert from and to `core::net::Ipv6Addr`.

/// An IPv6 address as the programs read it from packets.
pub type Addr6 = [u32; 4];

/// The wire form of an address (`Ipv6Addr::octets`, words in native order).
pub const fn addr6(octets: [u8; 16]) -> Addr6 {
    let o = octets;
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// The octets of a wire-form address.
pub const fn octets6(a: &Addr6) -> [u8; 16] {
    let (w0, w1, w2, w3) = (a[0].to_ne_bytes(), a[1].to_ne_bytes(), a[2].to_ne_bytes(), a[3].to_ne_bytes());
    [w0[0], w0[1], w0[2], w0[3], w1[0], w1[1], w1[2], w1[3], w2[0], w2[1], w2[2], w2[3], w3[0], w3[1], w3[2], w3[3]]
}

/// Map names (pinned under `<bpffs>/maps/` like the v4 ones).
pub mod map_names {
    pub const PUBLISHED_V6: &str = "PUBLISHED_V6";
    pub const ENDPOINTS_V6: &str = "ENDPOINTS_V6";
    pub const NETWORKS_V6: &str = "NETWORKS_V6";
    pub const UPLINKS_V6: &str = "UPLINKS_V6";
    pub const HOST_ADDRS_V6: &str = "HOST_ADDRS_V6";
    pub const CT_V6: &str = "CT_V6";
    /// One `u64`: unanswered `CT_V6` pairs (see `map_names::CT_UNASSURED`).
    pub const CT_UNASSURED_V6: &str = "CT_UNASSURED_V6";
    pub const FRAGS_V6: &str = "FRAGS_V6";
    /// `LinkKey6` -> 1: the `--link` exceptions under icc=false between v6 addresses.
    pub const LINKS_V6: &str = "LINKS_V6";

    /// Every pinned v6 map.
    pub const ALL: [&str; 9] = [
        PUBLISHED_V6,
        ENDPOINTS_V6,
        NETWORKS_V6,
        UPLINKS_V6,
        HOST_ADDRS_V6,
        CT_V6,
        CT_UNASSURED_V6,
        FRAGS_V6,
        LINKS_V6,
    ];
}

/// The IPv6 bodies as programs of their own, reached from the v4 entry points by tail call
/// through `V6_PROGS` (a program array): a daemon loads (and the kernel verifies) them only
/// when it has an IPv6 network. Until then the entry points pass IPv6 frames to the kernel.
pub mod progs {
    pub const FROM_NETDEV_V6: &str = "netd_from_netdev_v6";
    pub const TO_NETDEV_V6: &str = "netd_to_netdev_v6";
    pub const FROM_CONTAINER_V6: &str = "netd_from_container_v6";
    /// The uplink egress body on a layer-3 uplink (tun, WireGuard, PPP: no Ethernet header).
    pub const TO_NETDEV_L3_V6: &str = "netd_to_netdev_l3_v6";
    /// The program array (pinned with the maps: the programs a killed daemon put there go on
    /// serving until the next one replaces them).
    pub const V6_PROGS: &str = "V6_PROGS";
    /// `V6_PROGS` slots.
    pub const SLOT_FROM_NETDEV: u32 = 0;
    pub const SLOT_TO_NETDEV: u32 = 1;
    pub const SLOT_FROM_CONTAINER: u32 = 2;
    pub const SLOT_TO_NETDEV_L3: u32 = 3;
    /// (name, slot) of each.
    pub const ALL: [(&str, u32); 4] = [
        (FROM_NETDEV_V6, SLOT_FROM_NETDEV),
        (TO_NETDEV_V6, SLOT_TO_NETDEV),
        (FROM_CONTAINER_V6, SLOT_FROM_CONTAINER),
        (TO_NETDEV_L3_V6, SLOT_TO_NETDEV_L3),
    ];
}

/// Capacities (entries).
pub mod capacity {
    pub const PUBLISHED_V6: u32 = 65_536;
    pub const ENDPOINTS_V6: u32 = 16_384;
    pub const NETWORKS_V6: u32 = 1_024;
    pub const UPLINKS_V6: u32 = 64;
    pub const HOST_ADDRS_V6: u32 = 1_024;
    /// Two entries per translated flow (both directions). Half of `CT_V4`'s: an entry is
    /// 112 bytes of key and value instead of 64.
    pub const CT_V6: u32 = 131_072;
    pub const FRAGS_V6: u32 = 8_192;
    pub const LINKS_V6: u32 = 16_384;
}

/// Like [`crate::CT_UNASSURED_MAX`], for `CT_V6`.
pub const CT_UNASSURED_MAX_V6: u64 = capacity::CT_V6 as u64 / 4;

/// ICMPv6's protocol number (the `proto` of map keys).
pub const IPPROTO_ICMPV6: u8 = 58;

/// Key of `PUBLISHED_V6`: a host (address, port) for a protocol; the unspecified address `::`
/// is the wildcard, looked up after the exact address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PublishedKey6 {
    pub addr: Addr6,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of `PUBLISHED_V6`: where the port leads (a sandbox's IPv6 address and port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishedValue6 {
    pub addr: Addr6,
    pub port: u16,
    pub _pad: u16,
    /// Network index of the sandbox's endpoint.
    pub net: u32,
    /// Slot in `PORT_STATS` (shared with the v4 bindings).
    pub stats_slot: u32,
    /// `PUB6_F_*` (0 today).
    pub flags: u32,
}

/// Value of `NETWORKS_V6` (key: network index, the same index as `NETWORKS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkInfo6 {
    pub subnet: Addr6,
    pub gateway: Addr6,
    pub prefix_len: u32,
    pub bridge_ifindex: u32,
    pub gateway_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// `crate::NET_F_*`, for the network's IPv6 side (`gateway_mode_ipv6`).
    pub flags: u32,
}

/// Value of `UPLINKS_V6` (key: ifindex): the address NAT66 masquerades to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkInfo6 {
    pub addr: Addr6,
}

/// A flow as seen on the wire in one direction. ICMPv6 echo: the id is the source "port" of
/// requests and the destination "port" of replies, as for ICMP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey6 {
    pub saddr: Addr6,
    pub daddr: Addr6,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl CtKey6 {
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

/// What to do with a packet of a tracked IPv6 flow; the fields mean what [`crate::CtValue`]'s
/// do (`CT_ACT_*`, `CT_F_*`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue6 {
    pub saddr: Addr6,
    pub daddr: Addr6,
    pub sport: u16,
    pub dport: u16,
    pub action: u8,
    pub flags: u8,
    /// TCP window tracking, as `CtValue::wnd` ([`crate::tcp_window`]).
    pub wnd: u16,
    pub ifindex: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub stats_slot: u32,
    /// TCP window tracking, as `CtValue::ack`.
    pub ack: u32,
    pub last_seen_ns: u64,
    /// `CT_ACT_FIB`: the `FIB_GEN` at which `ifindex`, the MACs and `fib_mtu` were cached from
    /// `bpf_fib_lookup` (0: nothing cached), as `CtValue::fib_gen`.
    pub fib_gen: u32,
    /// `CT_ACT_FIB`: the egress MTU of the cached route.
    pub fib_mtu: u32,
}

impl CtValue6 {
    /// The key of the entry this one pairs with (its translation, reversed).
    pub const fn partner_key(&self, proto: u8) -> CtKey6 {
        CtKey6 { saddr: self.daddr, daddr: self.saddr, sport: self.dport, dport: self.sport, proto, _pad: [0; 3] }
    }

    /// The state fields as a v4 value (the GC's timeouts read only `action` and `flags`).
    pub fn state(&self) -> crate::CtValue {
        crate::CtValue { action: self.action, flags: self.flags, last_seen_ns: self.last_seen_ns, ..Default::default() }
    }
}

/// A fragmented IPv6 datagram: addresses, the fragment header's identification, and the
/// upper-layer protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey6 {
    pub saddr: Addr6,
    pub daddr: Addr6,
    pub id: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Key of `LINKS_V6` (`LinkKey`'s twin): under icc=false, `src` may open `dst:port/proto`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LinkKey6 {
    pub src: Addr6,
    pub dst: Addr6,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

const _: () = assert!(core::mem::size_of::<LinkKey6>() == 36);
const _: () = assert!(core::mem::size_of::<PublishedKey6>() == 20);
const _: () = assert!(core::mem::size_of::<PublishedValue6>() == 32);
const _: () = assert!(core::mem::size_of::<NetworkInfo6>() == 52);
const _: () = assert!(core::mem::size_of::<UplinkInfo6>() == 16);
const _: () = assert!(core::mem::size_of::<CtKey6>() == 40);
const _: () = assert!(core::mem::size_of::<CtValue6>() == 80);
const _: () = assert!(core::mem::size_of::<FragKey6>() == 40);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, no implicit padding (checked by the size asserts).
    unsafe impl aya::Pod for super::PublishedKey6 {}
    unsafe impl aya::Pod for super::PublishedValue6 {}
    unsafe impl aya::Pod for super::NetworkInfo6 {}
    unsafe impl aya::Pod for super::UplinkInfo6 {}
    unsafe impl aya::Pod for super::CtKey6 {}
    unsafe impl aya::Pod for super::CtValue6 {}
    unsafe impl aya::Pod for super::FragKey6 {}
    unsafe impl aya::Pod for super::LinkKey6 {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_round_trips() {
        let o = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(octets6(&addr6(o)), o);
        assert_eq!(addr6(o)[0].to_ne_bytes(), [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(core::mem::offset_of!(CtValue6, last_seen_ns), 64);
        assert_eq!(core::mem::offset_of!(CtValue6, smac), core::mem::offset_of!(CtValue6, dmac) + 6);
        assert_eq!(core::mem::offset_of!(NetworkInfo6, flags), 48);
    }
}
