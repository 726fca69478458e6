//! ICMP errors about NAT46 flows, translated between the families as RFC 7915 says (section
//! 4.2 for ICMPv4 to ICMPv6, 5.2 the other way), so each end hears of its own packet:
//!
//! - an ICMPv4 error from the sandbox's side quoting the flow's IPv4 packet (port unreachable
//!   for a UDP datagram to a closed port; fragmentation needed from a router there) becomes an
//!   ICMPv6 error to the v6 client from the address it talked to, quoting the client's own
//!   packet (a connected UDP client sees ECONNREFUSED; "fragmentation needed" becomes "packet
//!   too big" with the MTU + 20). The v4 veth program finds the flow ([`about_flow`]) and hands
//!   the frame by tail call to the v6 one ([`to_v6`]).
//! - an ICMPv6 error from outside (or from a v6 hairpin client's side) quoting the flow's IPv6
//!   packet (packet too big on the client's path, unreachable) becomes an ICMPv4 error to the
//!   sandbox from its network's gateway (its peer), quoting the sandbox's own packet
//!   ([`to_v4`]; "packet too big" becomes "fragmentation needed" with the MTU - 20).
//!
//! The error's length changes by 40 bytes (both IP headers), made with
//! `bpf_skb_change_proto` and `bpf_skb_adjust_room`; the new headers are written whole from
//! per-CPU scratch (`SCRATCH_ICMP46`), and the ICMP checksum follows from the old one (the quote
//! after the first 4 bytes of its L4 header is unchanged): minus the old headers, plus the new
//! ones and ICMPv6's pseudo-header. Not translated (dropped, counted as `nat46_untranslatable`):
//! options or extension headers in either header, errors whose ICMPv6 form would exceed 1280
//! bytes, and the types and codes RFC 7915 drops. The quoted TCP/UDP checksum is left as it is
//! (as for every translated error).
use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_SHOT},
    helpers::generated::{
        bpf_check_mtu, bpf_csum_diff, bpf_fib_lookup as fib_lookup, bpf_redirect_neigh, bpf_redirect_peer,
        bpf_skb_adjust_room, bpf_skb_change_proto, bpf_skb_load_bytes,
    },
    programs::TcContext,
};
use netd_common::{
    CT_ACT_NAT46, CT_ACT_NAT64, CT_ACT_NAT64_PEER, DropReason, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
    v6::{CtValue6, IPPROTO_ICMPV6},
};

use aya_ebpf::{macros::map, maps::PerCpuArray};

use super::{
    ct,
    maps::CT_V6,
    nat46::{fold, mapped},
    parse::{ETH_P_IPV6, Pkt6},
};
use crate::{
    maps::SCRATCH_FIB,
    parse::{ETH_HLEN, ETH_P_IP, Pkt},
    stats,
};

const SHOT: i32 = TC_ACT_SHOT as i32;
const AF_INET6: u8 = 10;
/// `BPF_ADJ_ROOM_NET`: room added or removed right after the (new) IP header.
const ADJ_ROOM_NET: u32 = 0;

#[inline(always)]
fn untranslatable() -> i32 {
    stats::count_drop(DropReason::Nat46);
    SHOT
}

#[inline(always)]
fn scratch() -> Option<&'static mut Icmp46Scratch> {
    // SAFETY: per-CPU map value, valid for this program run.
    SCRATCH_ICMP46.get_ptr_mut(0).map(|s| unsafe { &mut *s })
}

#[inline(always)]
fn csum_diff(from: *mut u32, from_size: u32, to: *mut u32, to_size: u32, seed: u32) -> u32 {
    // SAFETY: the callers pass scratch buffers of at least the given sizes (or null, 0).
    unsafe { bpf_csum_diff(from, from_size, to, to_size, seed) as u32 }
}

/// Whether a sandbox's ICMPv4 error (not about a `CT_V4` flow) quotes a NAT46 flow's IPv4
/// packet (never while no NAT46 binding exists): its reply direction (sandbox to gateway) is a `CT_V6` entry under v4-mapped
/// addresses. A call: the key is built in scratch.
#[inline(never)]
pub fn about_flow(ctx: &TcContext, p: &Pkt) -> bool {
    if !crate::maps::nat46_on() {
        return false;
    }
    let inner = p.l4 as usize + 8;
    let Ok(vihl) = ctx.load::<u8>(inner) else { return false };
    let Ok(iproto) = ctx.load::<u8>(inner + 9) else { return false };
    if vihl != 0x45 || (iproto != IPPROTO_TCP && iproto != IPPROTO_UDP) {
        return false;
    }
    let Ok(a) = ctx.load::<[u32; 2]>(inner + 12) else { return false };
    let Ok(ports) = ctx.load::<[u16; 2]>(inner + 20) else { return false };
    let Some(s) = crate::maps::tcp_scratch() else { return false };
    s.key6 = ct::key6(&mapped(a[1]), &mapped(a[0]), ports[1], ports[0], iproto);
    CT_V6.get_ptr(&s.key6).is_some_and(|v| {
        // SAFETY: map value pointer, valid for this program run.
        let a = unsafe { (*v).action };
        a == CT_ACT_NAT64 || a == CT_ACT_NAT64_PEER
    })
}

/// RFC 1191's plateau below a packet of `len` bytes (for a "fragmentation needed" without an
/// MTU, from a router older than RFC 1191).
#[inline(always)]
fn plateau(len: u16) -> u16 {
    match len {
        32001.. => 32000,
        17915.. => 17914,
        8167.. => 8166,
        4353.. => 4352,
        2003.. => 2002,
        1493.. => 1492,
        1007.. => 1006,
        509.. => 508,
        297.. => 296,
        _ => 68,
    }
}

/// ICMPv4 type/code/word (the 4 bytes after the checksum, as read) to ICMPv6's (RFC 7915
/// 4.2); None: dropped. `itot`: the quoted packet's total length (host order).
#[inline(always)]
fn map4to6(ty: u8, code: u8, word: [u8; 4], itot: u16) -> Option<(u8, u8, u32)> {
    match (ty, code) {
        // Destination unreachable.
        (3, 0 | 1 | 5 | 6 | 7 | 8 | 11 | 12) => Some((1, 0, 0)),
        (3, 2) => Some((4, 1, 6u32.to_be())),
        (3, 3) => Some((1, 4, 0)),
        (3, 4) => {
            let mtu = u16::from_be_bytes([word[2], word[3]]);
            let mtu = if mtu == 0 { plateau(itot) } else { mtu };
            Some((2, 0, (u32::from(mtu) + 20).to_be()))
        }
        (3, 9 | 10 | 13 | 15) => Some((1, 1, 0)),
        // Time exceeded.
        (11, c) => Some((3, c, 0)),
        // Parameter problem: the pointer moves to the same field of the IPv6 header.
        (12, 0 | 2) => {
            let ptr: u32 = match word[0] {
                0 => 0,
                1 => 1,
                2 | 3 => 4,
                8 => 7,
                9 => 6,
                12..=15 => 8,
                16..=19 => 24,
                _ => return None,
            };
            Some((4, 0, ptr.to_be()))
        }
        _ => None,
    }
}

/// ICMPv6 type/code/word to ICMPv4's (RFC 7915 5.2); None: dropped.
#[inline(always)]
fn map6to4(ty: u8, code: u8, word: [u8; 4]) -> Option<(u8, u8, u32)> {
    match (ty, code) {
        (1, 0 | 2 | 3) => Some((3, 1, 0)),
        (1, 1) => Some((3, 10, 0)),
        (1, 4) => Some((3, 3, 0)),
        (2, _) => {
            let mtu = u32::from_be_bytes(word).saturating_sub(20).clamp(68, 0xffff);
            Some((3, 4, mtu.to_be()))
        }
        (3, c) => Some((11, c, 0)),
        (4, 0) => {
            let ptr: u32 = match u32::from_be_bytes(word) {
                0 => 0,
                1 => 1,
                4 | 5 => 2,
                6 => 9,
                7 => 8,
                8..=23 => 12,
                24..=39 => 16,
                _ => return None,
            };
            Some((12, 0, (ptr << 24).to_be()))
        }
        (4, 1) => Some((3, 2, 0)),
        _ => None,
    }
}

/// A sandbox's ICMPv4 error about a NAT46 flow (see [`about_flow`]; the v6 program of the
/// veth, by tail call): ICMPv6 to the flow's client.
#[inline(never)]
pub fn to_v6(ctx: &TcContext, p: &Pkt) -> i32 {
    if p.l4 as usize != ETH_HLEN + 20 {
        return untranslatable();
    }
    if p.ttl <= 1 {
        return SHOT;
    }
    let Ok(tos) = ctx.load::<u8>(ETH_HLEN + 1) else { return SHOT };
    let Ok(tot) = ctx.load::<u16>(ETH_HLEN + 2) else { return SHOT };
    let tot = u16::from_be(tot);
    // The ICMPv6 error is 40 bytes longer; at most IPv6's minimum MTU (Linux quotes 576 at most).
    if tot as usize + 40 > 1280 {
        return untranslatable();
    }
    let Some(s) = scratch() else { return SHOT };
    // The ICMP header, the quoted IPv4 header and the quoted ports: 32 bytes leave the checksum.
    // SAFETY: 32 bytes into the scratch buffer (96).
    if unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), p.l4 as u32, s.old.as_mut_ptr().cast(), 32) } != 0 {
        return untranslatable();
    }
    // SAFETY: `Old4` is 32 bytes of plain data at the buffer's start (96 bytes).
    let ob = unsafe { &*(s.old.as_ptr() as *const Old4) };
    let (ty, code, word) = (ob.icmp[0], ob.icmp[1], [ob.icmp[4], ob.icmp[5], ob.icmp[6], ob.icmp[7]]);
    let ih = &ob.inner;
    if ih[0] != 0x45 || (ih[9] != IPPROTO_TCP && ih[9] != IPPROTO_UDP) {
        return untranslatable();
    }
    let itot = u16::from_be_bytes([ih[2], ih[3]]);
    let Some((ty6, code6, word6)) = map4to6(ty, code, word, itot) else { return untranslatable() };
    let iproto = ih[9];
    let (itos, ittl) = (ih[1], ih[8]);
    let isaddr = u32::from_ne_bytes([ih[12], ih[13], ih[14], ih[15]]);
    let idaddr = u32::from_ne_bytes([ih[16], ih[17], ih[18], ih[19]]);
    let (isport, idport) = (ob.ports[0], ob.ports[1]);
    // The flow's reply direction (sandbox to gateway): where the client is, as it knows itself.
    let Some(t) = crate::maps::tcp_scratch() else { return SHOT };
    t.key6 = ct::key6(&mapped(idaddr), &mapped(isaddr), idport, isport, iproto);
    let Some(e) = CT_V6.get_ptr_mut(&t.key6) else { return untranslatable() };
    // SAFETY: map value pointer, valid for this program run.
    let v = unsafe { &*e };
    if v.action != CT_ACT_NAT64 && v.action != CT_ACT_NAT64_PEER {
        return untranslatable();
    }
    let h = &mut s.h6;
    h.outer.vtcfl = ((6u32 << 28) | (u32::from(tos) << 20)).to_be();
    h.outer.plen = tot.to_be();
    h.outer.next = IPPROTO_ICMPV6;
    h.outer.hop = p.ttl - 1;
    h.outer.saddr = v.saddr;
    h.outer.daddr = v.daddr;
    h.icmp = IcmpHdr { ty: ty6, code: code6, csum: 0, word: word6 };
    h.inner.vtcfl = ((6u32 << 28) | (u32::from(itos) << 20)).to_be();
    h.inner.plen = itot.wrapping_sub(20).to_be();
    h.inner.next = iproto;
    h.inner.hop = ittl;
    h.inner.saddr = v.daddr;
    h.inner.daddr = v.saddr;
    h.ports = [v.dport, v.sport];
    s.lnh = [u32::from(tot).to_be(), u32::from(IPPROTO_ICMPV6).to_be()];
    let sum = csum_diff(s.old.as_mut_ptr(), 32, (&mut h.icmp as *mut IcmpHdr).cast(), 52, 0);
    // The pseudo-header: both addresses (adjacent in the outer header), length, next header.
    // SAFETY: the outer header's bytes 8..40 inside the scratch value.
    let addrs = unsafe { (h as *mut Hdrs6 as *mut u8).add(8) as *mut u32 };
    let sum = csum_diff(core::ptr::null_mut(), 0, addrs, 32, sum);
    let sum = csum_diff(core::ptr::null_mut(), 0, s.lnh.as_mut_ptr(), 8, sum);
    h.icmp.csum = fold(i64::from(sum));
    // SAFETY: plain helper calls on the program's context.
    unsafe {
        if bpf_skb_change_proto(ctx.skb.skb.cast(), ETH_P_IPV6.to_be(), 0) != 0
            || bpf_skb_adjust_room(ctx.skb.skb, 20, ADJ_ROOM_NET, 0) != 0
        {
            return SHOT;
        }
    }
    if ctx.store(12, &ETH_P_IPV6.to_be(), 0).is_err() || ctx.store(ETH_HLEN, &s.h6, 0).is_err() {
        return SHOT;
    }
    deliver6(ctx, e)
}

/// An IPv6 packet of a NAT46 flow's reply direction, built: to a v6 sandbox's veth
/// (`CT_ACT_NAT64_PEER`) or routed from the uplink it came in on (`CT_ACT_NAT64`). A daemon
/// without an IPv6 network (no `--ipv6`: IPv6 forwarding off, which `bpf_fib_lookup` refuses)
/// still serves the `[::]` twins of its bindings: then the kernel's own output route and
/// neighbour (`bpf_redirect_neigh` without parameters) out of that uplink. Too big for the
/// egress device (a UDP datagram within 20 bytes of the MTU): dropped, counted.
#[inline(never)]
pub fn deliver6(ctx: &TcContext, e: ct::Entry6) -> i32 {
    // SAFETY: map value pointer, valid for this program run.
    let v = unsafe { &*e };
    if v.action == CT_ACT_NAT64_PEER {
        if crate::nat::set_macs(ctx, &v.dmac, &v.smac).is_err() {
            return SHOT;
        }
        // SAFETY: plain helper call.
        return unsafe { bpf_redirect_peer(v.ifindex, 0) as i32 };
    }
    let Some(fib) = SCRATCH_FIB.get_ptr_mut(0) else { return SHOT };
    // SAFETY: per-CPU map value, valid for this program run.
    let fib = unsafe { &mut *fib };
    crate::conntrack::zero_fib(fib);
    fib.family = AF_INET6;
    fib.ifindex = v.ifindex;
    fib.__bindgen_anon_3.ipv6_src = v.saddr;
    fib.__bindgen_anon_4.ipv6_dst = v.daddr;
    // SAFETY: valid ctx and params pointers.
    let rc = unsafe { fib_lookup(ctx.skb.skb.cast(), fib, core::mem::size_of_val(fib) as i32, 0) };
    let out = if rc == BPF_FIB_LKUP_RET_FWD_DISABLED as i64 {
        v.ifindex
    } else if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 || rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        fib.ifindex
    } else {
        return SHOT;
    };
    let mut mtu_len: u32 = 0;
    // SAFETY: valid ctx and out pointer; BPF_MTU_CHK_SEGS (a GSO packet by its segments).
    if unsafe { bpf_check_mtu(ctx.skb.skb.cast(), out, &mut mtu_len, 0, 1) } > 0 {
        return untranslatable();
    }
    if rc == BPF_FIB_LKUP_RET_FWD_DISABLED as i64 {
        // SAFETY: plain helper call (no parameters: the kernel routes and resolves).
        return unsafe { bpf_redirect_neigh(out, core::ptr::null_mut(), 0, 0) as i32 };
    }
    ct::redirect_with(ctx, rc, fib)
}

/// An ICMPv6 error quoting a NAT46 flow's IPv6 packet (its originator's entry `v`, found by
/// `v6::icmp`): ICMPv4 to the sandbox from its gateway, quoting the sandbox's own packet.
#[inline(never)]
pub fn to_v4(ctx: &TcContext, p: &Pkt6, v: &CtValue6) -> i32 {
    if p.l3 as usize != ETH_HLEN || p.l4 as usize != ETH_HLEN + 40 || v.action != CT_ACT_NAT46 {
        return untranslatable();
    }
    if p.hop <= 1 {
        return SHOT;
    }
    let Ok(w0) = ctx.load::<u32>(ETH_HLEN) else { return SHOT };
    let Ok(plen) = ctx.load::<u16>(ETH_HLEN + 4) else { return SHOT };
    let plen = u16::from_be(plen);
    let Some(s) = scratch() else { return SHOT };
    // Leaving the checksum: the pseudo-header (addresses, length, next header), the ICMPv6
    // header, the quoted IPv6 header and the quoted ports (92 bytes).
    // SAFETY: 32 and 52 bytes into the scratch buffer (96) at their offsets.
    unsafe {
        let o = s.old.as_mut_ptr();
        if bpf_skb_load_bytes(ctx.skb.skb.cast(), (ETH_HLEN + 8) as u32, o.cast(), 32) != 0
            || bpf_skb_load_bytes(ctx.skb.skb.cast(), p.l4, o.add(10).cast(), 52) != 0
        {
            return untranslatable();
        }
        *o.add(8) = u32::from(plen).to_be();
        *o.add(9) = u32::from(IPPROTO_ICMPV6).to_be();
    }
    // SAFETY: `Old6` is 92 bytes of plain data at the buffer's start (96 bytes).
    let ob = unsafe { &*(s.old.as_ptr() as *const Old6) };
    let (ty, code, word) = (ob.icmp[0], ob.icmp[1], [ob.icmp[4], ob.icmp[5], ob.icmp[6], ob.icmp[7]]);
    let Some((ty4, code4, word4)) = map6to4(ty, code, word) else { return untranslatable() };
    let ih = &ob.inner;
    let ivtc = u32::from_be_bytes([ih[0], ih[1], ih[2], ih[3]]);
    let iplen = u16::from_be_bytes([ih[4], ih[5]]);
    let (iproto, ihop) = (ih[6], ih[7]);
    let h = &mut s.h4;
    h.outer = Ip4Hdr {
        vihl: 0x45,
        tos: ((u32::from_be(w0) >> 20) & 0xff) as u8,
        // 40 bytes less than the ICMPv6 packet: 20 + (plen - 20).
        tot_len: plen.to_be(),
        id: 0,
        frag: 0,
        ttl: p.hop - 1,
        proto: IPPROTO_ICMP,
        csum: 0,
        saddr: v.saddr[3],
        daddr: v.daddr[3],
    };
    h.icmp = IcmpHdr { ty: ty4, code: code4, csum: 0, word: word4 };
    h.inner = Ip4Hdr {
        vihl: 0x45,
        tos: ((ivtc >> 20) & 0xff) as u8,
        tot_len: iplen.wrapping_add(20).to_be(),
        id: 0,
        frag: 0x4000u16.to_be(),
        ttl: ihop,
        proto: iproto,
        csum: 0,
        saddr: v.daddr[3],
        daddr: v.saddr[3],
    };
    h.ports = [v.dport, v.sport];
    h.inner.csum = fold(i64::from(csum_diff(core::ptr::null_mut(), 0, (&mut h.inner as *mut Ip4Hdr).cast(), 20, 0)));
    h.outer.csum = fold(i64::from(csum_diff(core::ptr::null_mut(), 0, (&mut h.outer as *mut Ip4Hdr).cast(), 20, 0)));
    h.icmp.csum = fold(i64::from(csum_diff(s.old.as_mut_ptr(), 92, (&mut h.icmp as *mut IcmpHdr).cast(), 32, 0)));
    // SAFETY: plain helper calls on the program's context.
    unsafe {
        if bpf_skb_change_proto(ctx.skb.skb.cast(), ETH_P_IP.to_be(), 0) != 0
            || bpf_skb_adjust_room(ctx.skb.skb, -20, ADJ_ROOM_NET, 0) != 0
        {
            return SHOT;
        }
    }
    if ctx.store(12, &ETH_P_IP.to_be(), 0).is_err() || ctx.store(ETH_HLEN, &s.h4, 0).is_err() {
        return SHOT;
    }
    if crate::nat::set_macs(ctx, &v.dmac, &v.smac).is_err() {
        return SHOT;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect_peer(v.ifindex, 0) as i32 }
}

/// Per-CPU scratch of the translation: what leaves the checksum, the new headers.
#[repr(C)]
pub struct Icmp46Scratch {
    /// [`Old4`] or [`Old6`], as read from the packet.
    pub old: [u32; 24],
    pub h6: Hdrs6,
    pub h4: Hdrs4,
    /// ICMPv6's pseudo-header length and next-header words.
    pub lnh: [u32; 2],
}

#[map(name = "SCRATCH_ICMP46")]
static SCRATCH_ICMP46: PerCpuArray<Icmp46Scratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct IcmpHdr {
    pub ty: u8,
    pub code: u8,
    pub csum: u16,
    pub word: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ip4Hdr {
    pub vihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag: u16,
    pub ttl: u8,
    pub proto: u8,
    pub csum: u16,
    pub saddr: u32,
    pub daddr: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ip6Hdr {
    pub vtcfl: u32,
    pub plen: u16,
    pub next: u8,
    pub hop: u8,
    pub saddr: netd_common::v6::Addr6,
    pub daddr: netd_common::v6::Addr6,
}

/// An ICMPv6 error as built in scratch: the outer header, the ICMPv6 header, the quoted IPv6
/// header and the quoted ports (92 bytes, written at the IP header's offset).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Hdrs6 {
    pub outer: Ip6Hdr,
    pub icmp: IcmpHdr,
    pub inner: Ip6Hdr,
    pub ports: [u16; 2],
}

/// The same for ICMPv4 (52 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Hdrs4 {
    pub outer: Ip4Hdr,
    pub icmp: IcmpHdr,
    pub inner: Ip4Hdr,
    pub ports: [u16; 2],
}

/// The ICMPv4 error's bytes that leave the checksum, as read (32 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Old4 {
    pub icmp: [u8; 8],
    pub inner: [u8; 20],
    pub ports: [u16; 2],
}

/// The ICMPv6 error's (92 bytes): the pseudo-header (40), the ICMPv6 header, the quoted header
/// and ports.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Old6 {
    pub pseudo: [u32; 10],
    pub icmp: [u8; 8],
    pub inner: [u8; 40],
    pub ports: [u16; 2],
}

const _: () = {
    assert!(core::mem::size_of::<Hdrs6>() == 92 && core::mem::size_of::<Hdrs4>() == 52);
    assert!(core::mem::size_of::<Old4>() == 32 && core::mem::size_of::<Old6>() == 92);
    assert!(core::mem::offset_of!(Hdrs6, icmp) == 40 && core::mem::offset_of!(Hdrs4, icmp) == 20);
    assert!(core::mem::offset_of!(Ip6Hdr, saddr) == 8);
};
