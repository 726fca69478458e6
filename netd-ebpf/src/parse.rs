//! Header parsing. XDP reads the packet directly (bounds-checked against `data_end`); TC uses
//! `bpf_skb_load_bytes`, which also works when headers are not in the linear area.
use aya_ebpf::{
    helpers::generated::bpf_skb_load_bytes,
    programs::{TcContext, XdpContext},
};
use netd_common::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    kctx,
    maps::{SCRATCH_L4, SCRATCH_L4_AT},
};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const IP_OFF: usize = ETH_HLEN;

#[derive(Clone, Copy)]
pub enum ParseError {
    /// Not an IPv4 frame: not our business.
    NotIpv4,
    /// IPv4 ethertype but the header is truncated or inconsistent.
    Malformed,
}

/// The fields of an IPv4 packet that the programs decide on (network byte order kept as read).
#[derive(Clone, Copy)]
pub struct L3 {
    pub daddr: u32,
}

#[inline(always)]
fn parse(data: usize, data_end: usize) -> Result<L3, ParseError> {
    if data + ETH_HLEN > data_end {
        return Err(ParseError::NotIpv4);
    }
    // SAFETY: bounds checked above.
    let ethertype = u16::from_be(unsafe { *((data + 12) as *const u16) });
    if ethertype != ETH_P_IP {
        return Err(ParseError::NotIpv4);
    }
    let ip = data + ETH_HLEN;
    if ip + 20 > data_end {
        return Err(ParseError::Malformed);
    }
    // SAFETY: 20 bytes of IPv4 header are within bounds.
    let vihl = unsafe { *(ip as *const u8) };
    if vihl >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let ihl_bytes = ((vihl & 0x0f) as usize) * 4;
    if ihl_bytes < 20 || ip + ihl_bytes > data_end {
        return Err(ParseError::Malformed);
    }
    // SAFETY: as above.
    Ok(L3 { daddr: unsafe { *((ip + 16) as *const u32) } })
}

#[inline(always)]
pub fn l3_xdp(ctx: &XdpContext) -> Result<L3, ParseError> {
    parse(ctx.data(), ctx.data_end())
}

/// A parsed IPv4 packet in a TC context, with the L4 "ports" netd translates (for ICMP echo:
/// the id as source port of requests and destination port of replies).
#[derive(Clone, Copy, Default)]
pub struct Pkt {
    pub proto: u8,
    /// Offset of the IPv4 header: `ETH_HLEN`, or 0 on a layer-3 device's egress.
    pub l3: u8,
    /// Offset of the L4 header (u16 rather than usize: the struct is on the callers' stacks).
    pub l4: u16,
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    /// The packet has L4 ports netd can translate (TCP, UDP, ICMP echo; not a later fragment).
    pub has_ports: bool,
    /// A non-first fragment (no L4 header).
    pub later_fragment: bool,
    /// More fragments follow (MF flag).
    pub more_fragments: bool,
    /// DF: the sender asked for path MTU discovery (too big: ICMP fragmentation needed).
    pub dont_fragment: bool,
    /// Time to live as received.
    pub ttl: u8,
    /// The IPv4 identification field (keys fragment translation).
    pub ip_id: u16,
    /// TCP flags byte, 0 for others.
    pub tcp_flags: u8,
    /// ICMP: 8 = echo request, 0 = echo reply.
    pub icmp_type: u8,
    /// UDP checksum is 0 (not computed): must stay 0.
    pub udp_csum_zero: bool,
    /// The IPv4 header checksum as read (updated here by `nat::set_tuple`).
    pub ip_csum: u16,
    /// TCP/UDP whose header's first 20 bytes (TCP; UDP's 8) are in the per-CPU `SCRATCH_L4` as
    /// read (straight from the linear data, or loaded), so `nat::set_tuple` can write the
    /// header back whole with a checksum it computes.
    pub l4_copied: bool,
    /// The kernel's `skb->ip_summed` (`kctx`; 0 where the loader could not give access).
    pub summed: u8,
}

/// `SCRATCH_L4`'s byte [`SCRATCH_FLAGS`] (`nat`): the EtherType and the IPv4 header's first 8
/// bytes are in the slot (the common frame, `tc_direct`). Written by every parse that copies the
/// L4 header (`Pkt::l4_copied`), so it always speaks of the packet at hand.
pub const HEAD_COPIED: u8 = 1;
/// `SCRATCH_L4`'s byte [`SCRATCH_FLAGS`]: `set_tuple` wrote the Ethernet addresses with the
/// headers (`nat::set_macs12` then does not); cleared by the parse and by `set_macs12`.
pub const HEAD_MACS_DONE: u8 = 2;
/// The byte of `SCRATCH_L4` that holds the `HEAD_*` flags.
pub const SCRATCH_FLAGS: usize = 0;

/// The frame's bytes 12..22 (the EtherType, IPv4 for this parser, and the IPv4 header's first
/// 8 bytes) into `SCRATCH_L4`'s bytes 14..24 (`SCRATCH_HEAD`), for `set_tuple`'s one store from
/// the frame's first byte.
///
/// # Safety
/// `data` is the linear data's start with at least 22 bytes readable (checked by the caller).
#[inline(always)]
unsafe fn copy_head(s: &mut [u32; 16], data: usize) {
    const _: () = assert!(crate::maps::SCRATCH_HEAD == 2 && crate::maps::SCRATCH_MID_AT == 6);
    // SAFETY: the caller's; bytes 14..24 of the 64-byte, 8-aligned slot.
    unsafe {
        *(s.as_mut_ptr() as *mut u8).add(SCRATCH_FLAGS) = HEAD_COPIED;
        *(s.as_mut_ptr() as *mut u16).add(7) = ETH_P_IP.to_be();
        *(s.as_mut_ptr() as *mut u64).add(2) = *((data + IP_OFF) as *const u64);
    }
}

/// The common packet read straight from the linear data (no helper call): an IPv4 header
/// without options and the whole L4 header in the linear area. None: anything else, which
/// [`tc_slow`] reads (and judges) with `bpf_skb_load_bytes`. Same result as `tc_slow`.
#[inline(always)]
fn tc_direct(ctx: &TcContext) -> Option<Pkt> {
    let data = ctx.data();
    let end = ctx.data_end();
    const L4: usize = IP_OFF + 20;
    if data + L4 + 8 > end {
        return None;
    }
    // SAFETY: the first L4 + 8 bytes are within the linear data (checked above).
    let (eth_type, vihl, ip_id, frag, ttl, proto, ip_csum, saddr, daddr) = unsafe {
        (
            *((data + 12) as *const u16),
            *((data + IP_OFF) as *const u8),
            *((data + IP_OFF + 4) as *const u16),
            u16::from_be(*((data + IP_OFF + 6) as *const u16)),
            *((data + IP_OFF + 8) as *const u8),
            *((data + IP_OFF + 9) as *const u8),
            *((data + IP_OFF + 10) as *const u16),
            *((data + IP_OFF + 12) as *const u32),
            *((data + IP_OFF + 16) as *const u32),
        )
    };
    if u16::from_be(eth_type) != ETH_P_IP || vihl != 0x45 {
        return None;
    }
    let mut p = Pkt {
        proto,
        l3: IP_OFF as u8,
        l4: L4 as u16,
        saddr,
        daddr,
        sport: 0,
        dport: 0,
        has_ports: false,
        later_fragment: frag & 0x1fff != 0,
        more_fragments: frag & 0x2000 != 0,
        dont_fragment: frag & 0x4000 != 0,
        ttl,
        ip_id,
        tcp_flags: 0,
        icmp_type: 0,
        udp_csum_zero: false,
        ip_csum,
        l4_copied: false,
        summed: 0,
    };
    if p.later_fragment {
        return Some(p);
    }
    match proto {
        IPPROTO_TCP => {
            if data + L4 + 20 > end {
                return None;
            }
            // SAFETY: the 20-byte TCP header is within the linear data (checked above).
            unsafe {
                p.sport = *((data + L4) as *const u16);
                p.dport = *((data + L4 + 2) as *const u16);
                p.tcp_flags = *((data + L4 + 13) as *const u8);
                if let Some(s) = SCRATCH_L4.get_ptr_mut(0) {
                    let w = data + L4;
                    let s = &mut *s;
                    copy_head(s, data);
                    s[SCRATCH_L4_AT] = *(w as *const u32);
                    s[SCRATCH_L4_AT + 1] = *((w + 4) as *const u32);
                    s[SCRATCH_L4_AT + 2] = *((w + 8) as *const u32);
                    s[SCRATCH_L4_AT + 3] = *((w + 12) as *const u32);
                    s[SCRATCH_L4_AT + 4] = *((w + 16) as *const u32);
                    p.l4_copied = true;
                }
            }
            p.has_ports = true;
        }
        IPPROTO_UDP => {
            // SAFETY: the 8-byte UDP header is within the linear data (checked first).
            unsafe {
                p.sport = *((data + L4) as *const u16);
                p.dport = *((data + L4 + 2) as *const u16);
                p.udp_csum_zero = *((data + L4 + 6) as *const u16) == 0;
                if let Some(s) = SCRATCH_L4.get_ptr_mut(0) {
                    copy_head(&mut *s, data);
                    (*s)[SCRATCH_L4_AT] = *((data + L4) as *const u32);
                    (*s)[SCRATCH_L4_AT + 1] = *((data + L4 + 4) as *const u32);
                    p.l4_copied = true;
                }
            }
            p.has_ports = true;
        }
        IPPROTO_ICMP => {
            // SAFETY: type and id are within the first 8 bytes (checked first).
            let (ty, id) = unsafe { (*((data + L4) as *const u8), *((data + L4 + 4) as *const u16)) };
            p.icmp_type = ty;
            match ty {
                8 => {
                    p.sport = id;
                    p.has_ports = true;
                }
                0 => {
                    p.dport = id;
                    p.has_ports = true;
                }
                _ => {}
            }
        }
        _ => {}
    }
    Some(p)
}

/// Parse into `out`. A BPF-to-BPF call, on purpose: the packet then lives in the caller's
/// stack as one struct, read from there; inlined, the compiler keeps each field in a register
/// or a spill slot of its own across the helper calls that follow, which costs the callers'
/// frames (512 bytes for a whole call chain) more than a hundred bytes.
///
/// `out` may be uninitialized (a `MaybeUninit` slot: zeroing it first costs a byte loop, as the
/// bpf target has no inline memset): it is written whole on success, untouched on error.
#[inline(never)]
pub fn tc(ctx: &TcContext, out: *mut Pkt) -> Result<(), ParseError> {
    let p = match tc_direct(ctx) {
        Some(p) => p,
        None => {
            let eth_type: u16 = ctx.load(12).map_err(|_| ParseError::NotIpv4)?;
            if u16::from_be(eth_type) != ETH_P_IP {
                return Err(ParseError::NotIpv4);
            }
            tc_loads(ctx, IP_OFF)?
        }
    };
    // SAFETY: the caller's slot, valid for a write.
    unsafe { out.write(p) };
    // SAFETY: just written.
    for_rewrite(ctx, unsafe { &mut *out });
    Ok(())
}

/// `Pkt::summed` for `nat::set_tuple`, where the loader gave the programs `ip_summed` (`kctx`;
/// a `.rodata` constant to the verifier).
#[inline(always)]
fn for_rewrite(ctx: &TcContext, p: &mut Pkt) {
    if kctx::available() {
        p.summed = kctx::ip_summed(ctx);
    }
}

/// The same on a layer-3 device's egress (tun, WireGuard, PPP): the IPv4 header at offset 0,
/// no Ethernet header (the caller checked the protocol). Rare: always through the loads.
#[inline(never)]
pub fn tc_l3(ctx: &TcContext, out: *mut Pkt) -> Result<(), ParseError> {
    let p = tc_loads(ctx, 0)?;
    // SAFETY: as in `tc`.
    unsafe { out.write(p) };
    // SAFETY: just written.
    for_rewrite(ctx, unsafe { &mut *out });
    Ok(())
}

/// Any packet whose IPv4 header starts at `ip`, through `bpf_skb_load_bytes` (headers outside
/// the linear area, IP options, malformed headers).
#[inline(always)]
fn tc_loads(ctx: &TcContext, ip: usize) -> Result<Pkt, ParseError> {
    let vihl: u8 = ctx.load(ip).map_err(|_| ParseError::Malformed)?;
    if vihl >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(ParseError::Malformed);
    }
    let ip_id: u16 = ctx.load(ip + 4).map_err(|_| ParseError::Malformed)?;
    let frag: u16 = ctx.load(ip + 6).map_err(|_| ParseError::Malformed)?;
    let frag = u16::from_be(frag);
    // TTL and protocol in one load.
    let ttl_proto: [u8; 2] = ctx.load(ip + 8).map_err(|_| ParseError::Malformed)?;
    let (ttl, proto) = (ttl_proto[0], ttl_proto[1]);
    let ip_csum: u16 = ctx.load(ip + 10).map_err(|_| ParseError::Malformed)?;
    let saddr: u32 = ctx.load(ip + 12).map_err(|_| ParseError::Malformed)?;
    let daddr: u32 = ctx.load(ip + 16).map_err(|_| ParseError::Malformed)?;
    let l4 = ip + ihl;
    let mut p = Pkt {
        proto,
        l3: ip as u8,
        l4: l4 as u16,
        saddr,
        daddr,
        sport: 0,
        dport: 0,
        has_ports: false,
        later_fragment: frag & 0x1fff != 0,
        more_fragments: frag & 0x2000 != 0,
        dont_fragment: frag & 0x4000 != 0,
        ttl,
        ip_id,
        tcp_flags: 0,
        icmp_type: 0,
        udp_csum_zero: false,
        ip_csum,
        l4_copied: false,
        summed: 0,
    };
    if p.later_fragment {
        return Ok(p);
    }
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let sport: u16 = ctx.load(l4).map_err(|_| ParseError::Malformed)?;
            let dport: u16 = ctx.load(l4 + 2).map_err(|_| ParseError::Malformed)?;
            p.sport = sport;
            p.dport = dport;
            p.has_ports = true;
            if proto == IPPROTO_TCP {
                p.tcp_flags = ctx.load(l4 + 13).map_err(|_| ParseError::Malformed)?;
            } else {
                let c: u16 = ctx.load(l4 + 6).map_err(|_| ParseError::Malformed)?;
                p.udp_csum_zero = c == 0;
            }
            // The header for `nat::set_tuple` (a TCP header shorter than 20 bytes is left out:
            // a translation then drops it as malformed).
            if let Some(s) = SCRATCH_L4.get_ptr_mut(0) {
                // Not the common frame: no head bytes for `set_tuple` (nor a stale flag).
                // SAFETY: the slot's first byte.
                unsafe { *(s as *mut u8).add(SCRATCH_FLAGS) = 0 };
                let n = if proto == IPPROTO_TCP { 20 } else { 8 };
                // SAFETY: valid ctx; at most 20 bytes into the slot's last 20.
                p.l4_copied = unsafe {
                    bpf_skb_load_bytes(ctx.skb.skb.cast(), l4 as u32, s.cast::<u32>().add(SCRATCH_L4_AT).cast(), n)
                } == 0;
            }
        }
        IPPROTO_ICMP => {
            let ty: u8 = ctx.load(l4).map_err(|_| ParseError::Malformed)?;
            let id: u16 = ctx.load(l4 + 4).map_err(|_| ParseError::Malformed)?;
            p.icmp_type = ty;
            match ty {
                8 => {
                    p.sport = id;
                    p.has_ports = true;
                }
                0 => {
                    p.dport = id;
                    p.has_ports = true;
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(p)
}
