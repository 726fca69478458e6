//! IPv6 header parsing (TC: `bpf_skb_load_bytes`; XDP: direct reads), extension headers
//! walked with a fixed bound.
use aya_ebpf::programs::{TcContext, XdpContext};
use netd_common::{
    IPPROTO_TCP, IPPROTO_UDP,
    v6::{Addr6, IPPROTO_ICMPV6},
};

use crate::parse::{ETH_HLEN, IP_OFF};

pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IP6_HLEN: usize = 40;
/// At most this many extension headers are walked; a packet with more is not translated
/// (passed to the kernel, which walks them itself).
pub const MAX_EXT: usize = 6;

const NH_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_AH: u8 = 51;
const NH_DSTOPTS: u8 = 60;

/// ICMPv6 echo request / reply.
pub const ICMP6_ECHO_REQUEST: u8 = 128;
pub const ICMP6_ECHO_REPLY: u8 = 129;

/// Why a frame is not handled.
#[derive(Clone, Copy)]
pub enum ParseError6 {
    /// Not IPv6, or an extension header chain longer than [`MAX_EXT`] or ending in one the
    /// programs do not know (ESP, mobility...): the kernel's.
    NotOurs,
    /// IPv6 ethertype but a truncated or inconsistent header.
    Malformed,
}

/// The fields of an IPv6 packet the programs decide on.
#[derive(Clone, Copy)]
pub struct Pkt6 {
    pub saddr: Addr6,
    pub daddr: Addr6,
    /// Offset of the IPv6 header (after the Ethernet header; 0 on a layer-3 device).
    pub l3: u32,
    /// Upper-layer protocol (after the extension headers).
    pub proto: u8,
    pub hop: u8,
    pub sport: u16,
    pub dport: u16,
    /// Offset of the upper-layer header.
    pub l4: u32,
    /// Fragment header's identification (network order as read), when there is one.
    pub frag_id: u32,
    /// The packet has L4 ports netd can translate (TCP, UDP, ICMPv6 echo; not a later fragment).
    pub has_ports: bool,
    /// A non-first fragment (no L4 header).
    pub later_fragment: bool,
    /// More fragments follow (M flag).
    pub more_fragments: bool,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub udp_csum_zero: bool,
}

impl Pkt6 {
    /// Neighbour discovery (RS, RA, NS, NA, redirect) and MLD: link-local control traffic,
    /// never translated or filtered.
    #[inline(always)]
    pub fn is_nd_or_mld(&self) -> bool {
        self.proto == IPPROTO_ICMPV6
            && !self.later_fragment
            && ((130..=137).contains(&self.icmp_type) || self.icmp_type == 143)
    }

    /// An ICMPv6 error (destination unreachable, packet too big, time exceeded, parameter
    /// problem).
    #[inline(always)]
    pub fn is_error(&self) -> bool {
        self.proto == IPPROTO_ICMPV6 && !self.later_fragment && (1..=4).contains(&self.icmp_type)
    }
}

/// Whether the frame is IPv6 (by its EtherType).
#[inline(always)]
pub fn is_ipv6(ctx: &TcContext) -> bool {
    ctx.load::<u16>(12).is_ok_and(|t| u16::from_be(t) == ETH_P_IPV6)
}

/// Parse into `out` (the per-CPU packet slot): 0, or the error. A BPF-to-BPF call, so its
/// paths end at one return.
#[inline(never)]
pub fn tc_into(ctx: &TcContext, out: &mut Pkt6) -> u32 {
    parsed_into(tc(ctx, IP_OFF), out)
}

/// [`tc_into`] for a packet that starts at its IPv6 header (a layer-3 device's egress; the
/// caller has checked `skb->protocol`).
#[inline(never)]
pub fn tc_l3_into(ctx: &TcContext, out: &mut Pkt6) -> u32 {
    parsed_into(tc(ctx, 0), out)
}

#[inline(always)]
fn parsed_into(r: Result<Pkt6, ParseError6>, out: &mut Pkt6) -> u32 {
    match r {
        Ok(p) => {
            *out = p;
            0
        }
        Err(ParseError6::NotOurs) => 1,
        Err(ParseError6::Malformed) => 2,
    }
}

#[inline(always)]
fn tc(ctx: &TcContext, l3: usize) -> Result<Pkt6, ParseError6> {
    if l3 != 0 && !is_ipv6(ctx) {
        return Err(ParseError6::NotOurs);
    }
    let vtc: u8 = ctx.load(l3).map_err(|_| ParseError6::Malformed)?;
    if vtc >> 4 != 6 {
        return Err(ParseError6::Malformed);
    }
    let nh_hop: [u8; 2] = ctx.load(l3 + 6).map_err(|_| ParseError6::Malformed)?;
    let saddr: Addr6 = ctx.load(l3 + 8).map_err(|_| ParseError6::Malformed)?;
    let daddr: Addr6 = ctx.load(l3 + 24).map_err(|_| ParseError6::Malformed)?;
    let mut p = Pkt6 {
        saddr,
        daddr,
        l3: l3 as u32,
        proto: nh_hop[0],
        hop: nh_hop[1],
        sport: 0,
        dport: 0,
        l4: (l3 + IP6_HLEN) as u32,
        frag_id: 0,
        has_ports: false,
        later_fragment: false,
        more_fragments: false,
        tcp_flags: 0,
        icmp_type: 0,
        udp_csum_zero: false,
    };
    let mut off = l3 + IP6_HLEN;
    let mut nh = nh_hop[0];
    let mut known = false;
    for _ in 0..MAX_EXT {
        match nh {
            NH_HOP | NH_ROUTING | NH_DSTOPTS => {
                let h: [u8; 2] = ctx.load(off).map_err(|_| ParseError6::Malformed)?;
                nh = h[0];
                off += (h[1] as usize + 1) * 8;
            }
            NH_AH => {
                let h: [u8; 2] = ctx.load(off).map_err(|_| ParseError6::Malformed)?;
                nh = h[0];
                off += (h[1] as usize + 2) * 4;
            }
            NH_FRAGMENT => {
                let h: [u8; 4] = ctx.load(off).map_err(|_| ParseError6::Malformed)?;
                let id: u32 = ctx.load(off + 4).map_err(|_| ParseError6::Malformed)?;
                let fo = u16::from_be_bytes([h[2], h[3]]);
                p.later_fragment = fo & 0xfff8 != 0;
                p.more_fragments = fo & 1 != 0;
                p.frag_id = id;
                nh = h[0];
                off += 8;
            }
            _ => {
                known = true;
                break;
            }
        }
        // (Keeps the offset bounded for the verifier: no header chain is this long.)
        if off > 1024 {
            return Err(ParseError6::NotOurs);
        }
    }
    if !known {
        return Err(ParseError6::NotOurs);
    }
    p.proto = nh;
    p.l4 = off as u32;
    if p.later_fragment {
        return Ok(p);
    }
    match nh {
        IPPROTO_TCP | IPPROTO_UDP => {
            let ports: [u16; 2] = ctx.load(off).map_err(|_| ParseError6::Malformed)?;
            p.sport = ports[0];
            p.dport = ports[1];
            p.has_ports = true;
            if nh == IPPROTO_TCP {
                p.tcp_flags = ctx.load(off + 13).map_err(|_| ParseError6::Malformed)?;
            } else {
                let c: u16 = ctx.load(off + 6).map_err(|_| ParseError6::Malformed)?;
                p.udp_csum_zero = c == 0;
            }
        }
        IPPROTO_ICMPV6 => {
            let ty: u8 = ctx.load(off).map_err(|_| ParseError6::Malformed)?;
            p.icmp_type = ty;
            if ty == ICMP6_ECHO_REQUEST || ty == ICMP6_ECHO_REPLY {
                let id: u16 = ctx.load(off + 4).map_err(|_| ParseError6::Malformed)?;
                if ty == ICMP6_ECHO_REQUEST {
                    p.sport = id;
                } else {
                    p.dport = id;
                }
                p.has_ports = true;
            }
        }
        _ => {}
    }
    Ok(p)
}

/// XDP: the destination address of an IPv6 frame (None: not IPv6, or truncated).
#[inline(always)]
pub fn daddr_xdp(ctx: &XdpContext) -> Option<Addr6> {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + ETH_HLEN + IP6_HLEN > end {
        return None;
    }
    // SAFETY: bounds checked above.
    unsafe {
        if u16::from_be(*((data + 12) as *const u16)) != ETH_P_IPV6 {
            return None;
        }
        let d = data + ETH_HLEN + 24;
        Some([
            core::ptr::read_unaligned(d as *const u32),
            core::ptr::read_unaligned((d + 4) as *const u32),
            core::ptr::read_unaligned((d + 8) as *const u32),
            core::ptr::read_unaligned((d + 12) as *const u32),
        ])
    }
}
