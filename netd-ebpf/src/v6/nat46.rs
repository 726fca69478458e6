//! NAT46 / NAT64 for a v4-only sandbox's IPv6 bindings (the `[::]` twin of its `-p`, or a v6
//! host address): Docker carries them through docker-proxy; here the datapath translates the
//! packets themselves, so no proxy task or listening socket serves them.
//!
//! - A new flow from an IPv6 client (outside, at uplink ingress; or a v6 sandbox's hairpin) to a
//!   `PUBLISHED_V6` binding whose target is a v4-mapped address (`::ffff:a.b.c.d`) gets a
//!   `CT_V6` pair: the originator's entry (`CT_ACT_NAT46`) turns the packet into IPv4 from the
//!   sandbox network's v4 gateway (what docker-proxy's connection shows the sandbox) with a
//!   source port picked like hairpin SNAT's (outside the host's ephemeral range, free in both
//!   `CT_V6` and `CT_V4`), into the sandbox's veth; the reply entry is keyed by the v4-mapped
//!   reply tuple (`CT_ACT_NAT64` / `CT_ACT_NAT64_PEER`).
//! - The sandbox's IPv4 reply reaches `netd_from_container` (v4), misses `CT_V4`, finds the
//!   mapped tuple in `CT_V6` ([`is_reply`]) and is handed by tail call to the v6 program of the
//!   veth, whose entry sees an IPv4 frame and calls [`from_sandbox`]: IPv6 again, with the
//!   original addresses and ports, routed to the client (or into the v6 sandbox's veth).
//! - `bpf_skb_change_proto` swaps the headers (it keeps `gso_size`, so a GSO packet's segments
//!   grow by 20 bytes); the MSS a sandbox announces in its SYN-ACK is lowered by 20 so a
//!   client's full segments still fit its IPv6 path; a v6 packet too big for the egress device
//!   after translation is dropped and counted (`Nat46`), as are IPv6 extension headers (but a
//!   fragment header alone), IPv4 options and UDP without checksum.
//! - Fragments both ways (RFC 7915 4.1/5.1): a client's IPv6 fragments become IPv4 ones
//!   ([`to_v4`], later ones by their `FRAGS_V6` record, [`frag_to_v4`]); the sandbox's IPv4
//!   fragments become IPv6 ones with a fragment header ([`from_sandbox`], later ones by their
//!   `FRAGS_46` record, [`frag_to_v6`]). They fit because the daemon gives the sandbox a route
//!   to its gateway (the NAT46 peer) 28 bytes under the MTU (`netlink::set_peer_mtu`).
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::{bpf_csum_diff, bpf_redirect_peer, bpf_skb_adjust_room, bpf_skb_change_proto},
    programs::TcContext,
};
use netd_common::{
    CT_ACT_NAT46, CT_ACT_NAT64, CT_ACT_NAT64_PEER, CtKey, DropReason, IPPROTO_TCP, IPPROTO_UDP,
    tcp_window::TCP_SYN,
    v6::{Addr6, CtKey6, CtValue6, PublishedValue6},
};

use super::{
    ct,
    maps::{CT_V6, FRAGS_46, SCRATCH_V6, published6},
    nat,
    parse::{ETH_P_IPV6, Pkt6},
    snat::{pick_port, ports},
};
use crate::{
    maps::{FragKey, endpoint, network},
    parse::{ETH_P_IP, Pkt},
    stats,
};

const OK: i32 = TC_ACT_OK as i32;
const SHOT: i32 = TC_ACT_SHOT as i32;
const ETH_HLEN: usize = 14;
const MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
/// IPv6's fragment header (next header value).
const NH_FRAGMENT: u8 = 44;
/// `BPF_ADJ_ROOM_NET`: room added or removed right after the (new) IP header.
const ADJ_ROOM_NET: u32 = 0;

/// `::ffff:a.b.c.d` of a wire-form IPv4 address.
#[inline(always)]
pub fn mapped(a: u32) -> Addr6 {
    [0, 0, MAPPED, a]
}

/// The IPv4 address of a v4-mapped one.
#[inline(always)]
pub fn v4_of(a: &Addr6) -> Option<u32> {
    (a[0] == 0 && a[1] == 0 && a[2] == MAPPED).then_some(a[3])
}

/// Where a NAT46 flow's replies go: routed (`CT_ACT_NAT64`, `ifindex` the uplink it came in
/// on) or into a v6 sandbox's veth (`CT_ACT_NAT64_PEER`, with the MACs).
pub struct Back {
    pub action: u8,
    pub ifindex: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
}

#[inline(always)]
fn untranslatable() -> i32 {
    stats::count_drop(DropReason::Nat46);
    SHOT
}

#[repr(C)]
struct Ip4Hdr {
    vihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag: u16,
    ttl: u8,
    proto: u8,
    csum: u16,
    saddr: u32,
    daddr: u32,
}

#[repr(C)]
struct Ip6Hdr {
    vtcfl: u32,
    plen: u16,
    next: u8,
    hop: u8,
    saddr: Addr6,
    daddr: Addr6,
}

/// Fold a `bpf_csum_diff` sum to a header checksum (in the buffer's byte order).
#[inline(always)]
pub fn fold(s: i64) -> u16 {
    let mut s = s as u64 & 0xffff_ffff;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

#[inline(always)]
fn csum_off(proto: u8, l4: usize) -> usize {
    if proto == IPPROTO_TCP { l4 + 16 } else { l4 + 6 }
}

#[inline(always)]
fn csum_flags(proto: u8) -> u64 {
    let mut f = BPF_F_PSEUDO_HDR as u64;
    if proto == IPPROTO_UDP {
        f |= BPF_F_MARK_MANGLED_0 as u64;
    }
    f
}

/// A new IPv6 flow to a binding whose target is a v4-mapped sandbox address (`pb.addr`): the
/// pair into `CT_V6`, [`APPLY`] (or a verdict).
#[inline(never)]
pub fn new_flow(_ctx: &TcContext, p: &mut Pkt6, back: &Back) -> i32 {
    let Some(pb) = published6(p.proto, &p.daddr, p.dport) else { return OK };
    let Some(s4) = v4_of(&pb.addr) else { return OK };
    if p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP {
        return OK;
    }
    let Some(ep) = endpoint(s4) else { return OK };
    let Some(net) = network(ep.net) else { return OK };
    let gw = mapped(net.gateway);
    let port = pick(p.proto, &pb.addr, &gw, ports(pb.port, p.sport));
    let pb: &PublishedValue6 = pb;
    if port > 0xffff {
        stats::count_drop(DropReason::SnatExhausted);
        return SHOT;
    }
    let port = port as u16;
    // SAFETY: per-CPU map value, valid for this program run.
    let Some(s) = SCRATCH_V6.get_ptr_mut(0).map(|s| unsafe { &mut *s }) else { return OK };
    s.k = ct::key_of(p);
    s.fwd = CtValue6 {
        saddr: gw,
        daddr: pb.addr,
        sport: port,
        dport: pb.port,
        action: CT_ACT_NAT46,
        ifindex: ep.ifindex,
        dmac: ep.mac,
        smac: net.gateway_mac,
        stats_slot: pb.stats_slot + 1,
        ..Default::default()
    };
    s.rk = CtKey6 { saddr: pb.addr, daddr: gw, sport: pb.port, dport: port, proto: p.proto, _pad: [0; 3] };
    s.rev = CtValue6 {
        saddr: p.daddr,
        daddr: p.saddr,
        sport: p.dport,
        dport: p.sport,
        action: back.action,
        ifindex: back.ifindex,
        dmac: back.dmac,
        smac: back.smac,
        ..Default::default()
    };
    if !ct::insert_pair(&s.k, &mut s.fwd, &s.rk, &mut s.rev) {
        return SHOT;
    }
    APPLY
}

/// [`new_flow`]'s "apply the pair in `SCRATCH_V6`" (the caller does, from its own frame: the
/// call chain below it has no room for another); no TC verdict.
pub const APPLY: i32 = i32::MIN;

/// A source port from the gateway toward the sandbox whose reply tuple is free in `CT_V6`
/// (mapped) and in `CT_V4` (a v4 hairpin flow from the same gateway); above 0xffff: none.
#[inline(always)]
fn pick(proto: u8, s4m: &Addr6, gw: &Addr6, ports: u32) -> u32 {
    let dport = (ports >> 16) as u16;
    for _ in 0..4 {
        let Some(port) = pick_port(proto, s4m, gw, ports, false) else { return 0x1_0000 };
        let k4 = CtKey { saddr: s4m[3], daddr: gw[3], sport: dport, dport: port, proto, _pad: [0; 3] };
        if !crate::conntrack::exists(&k4) {
            return port as u32;
        }
    }
    0x1_0000
}

/// Whether a NAT46 flow's reply holds the v4 hairpin tuple `daddr:dport -> gw:port` (the
/// sandbox's port to its network's gateway from a drawn port: a NAT46 flow's v4 side has the
/// same addresses) in `CT_V6`, v4-mapped; never while no NAT46 binding exists. The v4 hairpin's
/// draw (`snat::pick_port`, against `CT_V4`) then does not take it: the other half of
/// [`pick`]'s check. A call, its key in scratch (it runs below the veth program's frames).
#[inline(never)]
pub fn holds(proto: u8, daddr: u32, gw: u32, dport: u16, port: u16) -> bool {
    if !crate::maps::nat46_on() {
        return false;
    }
    let Some(s) = crate::maps::tcp_scratch() else { return true };
    let w = &mut s.key6 as *mut CtKey6 as *mut u32;
    // SAFETY: the ten aligned words of the 40-byte key.
    unsafe {
        w.write(0);
        w.add(1).write(0);
        w.add(2).write(MAPPED);
        w.add(3).write(daddr);
        w.add(4).write(0);
        w.add(5).write(0);
        w.add(6).write(MAPPED);
        w.add(7).write(gw);
        w.add(8).write(u32::from(dport) | (u32::from(port) << 16));
        w.add(9).write(u32::from(proto));
    }
    ct::exists(&s.key6)
}

/// `CT_ACT_NAT46`: the client's IPv6 packet becomes the entry's IPv4 one, into the sandbox. A
/// first fragment (the fragment header its only extension header) becomes an IPv4 first
/// fragment, and its translation is recorded in `FRAGS_V6` for the fragments that follow
/// ([`frag_to_v4`]).
#[inline(never)]
pub fn to_v4(ctx: &TcContext, p: &mut Pkt6, e: ct::Entry6) -> i32 {
    // SAFETY: map value pointer, valid for this program run.
    let v = unsafe { &*e };
    if p.l3 as usize != ETH_HLEN || p.later_fragment {
        return untranslatable();
    }
    if p.l4 as usize != ETH_HLEN + 40 {
        // Only a fragment header (8 bytes, right after the IPv6 header) is translated.
        let nh = ctx.load::<u8>(ETH_HLEN + 6).unwrap_or(0);
        if p.l4 as usize != ETH_HLEN + 48 || nh != NH_FRAGMENT {
            return untranslatable();
        }
    }
    if p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP {
        return OK;
    }
    if p.proto == IPPROTO_UDP && p.udp_csum_zero {
        return untranslatable();
    }
    if p.hop <= 1 {
        return SHOT;
    }
    if p.more_fragments {
        ct::frag_record(p, v);
    }
    let l4 = p.l4 as usize;
    if nat::set_port(ctx, p, true, v.sport).is_err() || nat::set_port(ctx, p, false, v.dport).is_err() {
        return SHOT;
    }
    // The pseudo-header: the two IPv6 addresses out, the two IPv4 ones in (the length and
    // protocol words add up the same in both: the datagram's length, in a fragment's too).
    let mut old = [p.saddr[0], p.saddr[1], p.saddr[2], p.saddr[3], p.daddr[0], p.daddr[1], p.daddr[2], p.daddr[3]];
    let mut new = [v.saddr[3], v.daddr[3]];
    // SAFETY: stack buffers of the given sizes.
    let diff = unsafe { bpf_csum_diff(old.as_mut_ptr(), 32, new.as_mut_ptr(), 8, 0) };
    if ctx.l4_csum_replace(csum_off(p.proto, l4), 0, diff as u32 as u64, csum_flags(p.proto)).is_err() {
        return SHOT;
    }
    if !hdr_to_v4(ctx, p.proto, p.hop, v.saddr[3], v.daddr[3]) {
        return SHOT;
    }
    ct::touch_at(p.proto, p.tcp_flags, e);
    stats::count_port(v.stats_slot, ctx.len() as u64);
    if crate::nat::set_macs(ctx, &v.dmac, &v.smac).is_err() {
        return SHOT;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect_peer(v.ifindex, 0) as i32 }
}

/// A later fragment of a datagram whose first fragment [`to_v4`] translated (its `FRAGS_V6`
/// record `v`): the same header swap, no L4 work, into the sandbox.
#[inline(never)]
pub fn frag_to_v4(ctx: &TcContext, p: &Pkt6, v: &CtValue6) -> i32 {
    if p.l3 as usize != ETH_HLEN || p.l4 as usize != ETH_HLEN + 48 {
        return untranslatable();
    }
    if p.hop <= 1 {
        return SHOT;
    }
    if !hdr_to_v4(ctx, p.proto, p.hop, v.saddr[3], v.daddr[3]) {
        return SHOT;
    }
    stats::count_port(v.stats_slot, ctx.len() as u64);
    if crate::nat::set_macs(ctx, &v.dmac, &v.smac).is_err() {
        return SHOT;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect_peer(v.ifindex, 0) as i32 }
}

/// The IPv6 header (and a fragment header right after it) replaced by an IPv4 one from `saddr`
/// to `daddr` (RFC 7915 5.1): TOS = traffic class, TTL = hop limit - 1; unfragmented: DF set,
/// id 0; a fragment: id = the fragment id's low 16 bits, the same offset, MF = M, DF clear.
#[inline(always)]
fn hdr_to_v4(ctx: &TcContext, proto: u8, hop: u8, saddr: u32, daddr: u32) -> bool {
    let Ok(w0) = ctx.load::<u32>(ETH_HLEN) else { return false };
    let Ok(plen) = ctx.load::<u16>(ETH_HLEN + 4) else { return false };
    let Ok(nh) = ctx.load::<u8>(ETH_HLEN + 6) else { return false };
    let mut plen = u16::from_be(plen);
    let (mut id, mut frag) = (0u16, 0x4000u16);
    let fragment = nh == NH_FRAGMENT;
    if fragment {
        let Ok(fo) = ctx.load::<u16>(ETH_HLEN + 42) else { return false };
        let Ok(fid) = ctx.load::<u32>(ETH_HLEN + 44) else { return false };
        let fo = u16::from_be(fo);
        id = u32::from_be(fid) as u16;
        frag = (fo >> 3) | ((fo & 1) << 13);
        plen = plen.wrapping_sub(8);
    }
    let tclass = ((u32::from_be(w0) >> 20) & 0xff) as u8;
    let mut h = Ip4Hdr {
        vihl: 0x45,
        tos: tclass,
        tot_len: plen.wrapping_add(20).to_be(),
        id: id.to_be(),
        frag: frag.to_be(),
        ttl: hop - 1,
        proto,
        csum: 0,
        saddr,
        daddr,
    };
    // SAFETY: the header on the stack, 20 bytes.
    h.csum = fold(unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, (&mut h as *mut Ip4Hdr).cast(), 20, 0) });
    // SAFETY: plain helper calls on the program's context. (After the swap the fragment header
    // is right after the 20 bytes that become the IPv4 header: `BPF_ADJ_ROOM_NET` takes it.)
    unsafe {
        if bpf_skb_change_proto(ctx.skb.skb.cast(), ETH_P_IP.to_be(), 0) != 0
            || (fragment && bpf_skb_adjust_room(ctx.skb.skb, -8, ADJ_ROOM_NET, 0) != 0)
        {
            return false;
        }
    }
    ctx.store(12, &ETH_P_IP.to_be(), 0).is_ok() && ctx.store(ETH_HLEN, &h, 0).is_ok()
}

/// The `CT_V6` key of a sandbox's IPv4 packet's tuple, its addresses v4-mapped.
#[inline(always)]
fn mapped_key(p: &Pkt) -> CtKey6 {
    super::ct::key6(&mapped(p.saddr), &mapped(p.daddr), p.sport, p.dport, p.proto)
}

/// Whether a sandbox's IPv4 packet without a `CT_V4` entry is the reply of a NAT46 flow (its
/// v4-mapped tuple is in `CT_V6`). A call: the key stays off the caller's frame.
#[inline(never)]
pub fn is_reply(p: &Pkt) -> bool {
    // No NAT46 binding, no NAT46 flow: no lookup (the flag is read here, not by the caller,
    // whose paths then stay one for the verifier).
    if !crate::maps::nat46_on() {
        return false;
    }
    let k = mapped_key(p);
    CT_V6.get_ptr(&k).is_some_and(|v| {
        // SAFETY: map value pointer, valid for this program run.
        let a = unsafe { (*v).action };
        a == CT_ACT_NAT64 || a == CT_ACT_NAT64_PEER
    })
}

/// A sandbox's IPv4 reply of a NAT46 flow (the v6 program of its veth, reached by tail call
/// from the v4 one): IPv6 with the flow's original addresses and ports.
#[inline(never)]
pub fn from_sandbox(ctx: TcContext) -> i32 {
    let ctx = &ctx;
    let mut slot = MaybeUninit::<Pkt>::uninit();
    if crate::parse::tc(ctx, slot.as_mut_ptr()).is_err() {
        return OK;
    }
    // SAFETY: written whole by `parse::tc`.
    let p = unsafe { &mut *slot.as_mut_ptr() };
    if crate::icmp::is_error(p) {
        // An ICMP error about a NAT46 flow (`icmp46::about_flow` sent it here).
        return super::icmp46::to_v6(ctx, p);
    }
    if p.later_fragment {
        return frag_to_v6(ctx, p);
    }
    if !p.has_ports || (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP) {
        return OK;
    }
    // SAFETY: per-CPU map value, valid for this program run.
    let Some(s) = SCRATCH_V6.get_ptr_mut(0).map(|s| unsafe { &mut *s }) else { return OK };
    s.rk = mapped_key(p);
    let Some(e) = CT_V6.get_ptr_mut(&s.rk) else { return OK };
    // SAFETY: map value pointer, valid for this program run.
    let v = unsafe { &*e };
    if v.action != CT_ACT_NAT64 && v.action != CT_ACT_NAT64_PEER {
        return OK;
    }
    if p.l4 as usize != ETH_HLEN + 20 || (p.proto == IPPROTO_UDP && p.udp_csum_zero) {
        return untranslatable();
    }
    if p.ttl <= 1 {
        return SHOT;
    }
    if p.more_fragments {
        // A first fragment: its translation for the fragments that follow ([`frag_to_v6`]).
        let _ = FRAGS_46.insert(&frag_key(p), v, 0);
    }
    if p.proto == IPPROTO_TCP {
        if !ct::track_at(ctx, p.l4 as usize, p.tcp_flags, e) {
            return SHOT;
        }
        if p.tcp_flags & TCP_SYN != 0 {
            clamp_mss(ctx, p.l4 as usize);
        }
    }
    to_v6(ctx, p, e)
}

/// The header swap of [`from_sandbox`] and the delivery (a BPF-to-BPF call: the FIB
/// parameters are in per-CPU scratch).
#[inline(never)]
fn to_v6(ctx: &TcContext, p: &mut Pkt, e: ct::Entry6) -> i32 {
    // SAFETY: map value pointer, valid for this program run.
    let v = unsafe { &*e };
    let l4 = p.l4 as usize;
    if crate::nat::set_port(ctx, p, true, v.sport).is_err() || crate::nat::set_port(ctx, p, false, v.dport).is_err() {
        return SHOT;
    }
    let mut old = [p.saddr, p.daddr];
    let mut new = [v.saddr[0], v.saddr[1], v.saddr[2], v.saddr[3], v.daddr[0], v.daddr[1], v.daddr[2], v.daddr[3]];
    // SAFETY: stack buffers of the given sizes.
    let diff = unsafe { bpf_csum_diff(old.as_mut_ptr(), 8, new.as_mut_ptr(), 32, 0) };
    if ctx.l4_csum_replace(csum_off(p.proto, l4), 0, diff as u32 as u64, csum_flags(p.proto)).is_err() {
        return SHOT;
    }
    if !hdr_to_v6(ctx, p.proto, p.ttl, v) {
        return SHOT;
    }
    ct::touch_at(p.proto, p.tcp_flags, e);
    super::icmp46::deliver6(ctx, e)
}

/// The `FRAGS_46` key of a sandbox's IPv4 fragment.
#[inline(always)]
fn frag_key(p: &Pkt) -> FragKey {
    FragKey { saddr: p.saddr, daddr: p.daddr, id: p.ip_id, proto: p.proto, _pad: 0 }
}

/// Whether a sandbox's later IPv4 fragment (no `FRAGS` record) belongs to a NAT46 reply whose
/// first fragment [`from_sandbox`] translated: the v4 program then hands it to the v6 one. A
/// call: the key stays off the caller's frame; no lookup while no NAT46 binding exists.
#[inline(never)]
pub fn is_reply_fragment(p: &Pkt) -> bool {
    crate::maps::nat46_on() && FRAGS_46.get_ptr(&frag_key(p)).is_some()
}

/// A later IPv4 fragment of a NAT46 reply ([`is_reply_fragment`]): the same header swap as its
/// first fragment's (plus the fragment header), no L4 work, delivered where it went.
#[inline(never)]
fn frag_to_v6(ctx: &TcContext, p: &Pkt) -> i32 {
    let fk = frag_key(p);
    let Some(e) = FRAGS_46.get_ptr_mut(&fk) else { return ct::frag_unknown() };
    // SAFETY: map value pointer, valid for this program run.
    let v = unsafe { &*e };
    if p.l4 as usize != ETH_HLEN + 20 {
        return untranslatable();
    }
    if p.ttl <= 1 {
        return SHOT;
    }
    if !hdr_to_v6(ctx, p.proto, p.ttl, v) {
        return SHOT;
    }
    let verdict = super::icmp46::deliver6(ctx, e);
    if !p.more_fragments {
        let _ = FRAGS_46.remove(&fk);
    }
    verdict
}

/// The IPv4 header replaced by an IPv6 one to `v`'s addresses (RFC 7915 4.1): traffic class =
/// TOS, hop limit = TTL - 1; a fragment (MF or an offset) gets a fragment header too: the
/// protocol, the same offset, M = MF, id = the IPv4 id zero-extended (28 bytes more in all).
#[inline(always)]
fn hdr_to_v6(ctx: &TcContext, proto: u8, ttl: u8, v: &CtValue6) -> bool {
    let Ok(tos) = ctx.load::<u8>(ETH_HLEN + 1) else { return false };
    let Ok(tot) = ctx.load::<u16>(ETH_HLEN + 2) else { return false };
    let Ok(id) = ctx.load::<u16>(ETH_HLEN + 4) else { return false };
    let Ok(frag) = ctx.load::<u16>(ETH_HLEN + 6) else { return false };
    let frag = u16::from_be(frag);
    let fragment = frag & 0x3fff != 0;
    let extra: u16 = if fragment { 8 } else { 0 };
    let h = Ip6Hdr {
        vtcfl: ((6u32 << 28) | ((tos as u32) << 20)).to_be(),
        plen: (u16::from_be(tot).wrapping_sub(20).wrapping_add(extra)).to_be(),
        next: if fragment { NH_FRAGMENT } else { proto },
        hop: ttl - 1,
        saddr: v.saddr,
        daddr: v.daddr,
    };
    // SAFETY: plain helper calls on the program's context. (`BPF_ADJ_ROOM_NET` after the swap:
    // the room right after the IPv6 header.)
    unsafe {
        if bpf_skb_change_proto(ctx.skb.skb.cast(), ETH_P_IPV6.to_be(), 0) != 0
            || (fragment && bpf_skb_adjust_room(ctx.skb.skb, 8, ADJ_ROOM_NET, 0) != 0)
        {
            return false;
        }
    }
    if ctx.store(12, &ETH_P_IPV6.to_be(), 0).is_err() || ctx.store(ETH_HLEN, &h, 0).is_err() {
        return false;
    }
    if fragment {
        let o = (((frag & 0x1fff) << 3) | ((frag >> 13) & 1)).to_be_bytes();
        let fh: [u8; 4] = [proto, 0, o[0], o[1]];
        let fid = u32::from(u16::from_be(id)).to_be();
        if ctx.store(ETH_HLEN + 40, &fh, 0).is_err() || ctx.store(ETH_HLEN + 44, &fid, 0).is_err() {
            return false;
        }
    }
    true
}

/// A sandbox's SYN(-ACK): its MSS option lowered by 20 (the IPv6 header's extra bytes), so the
/// client's full segments fit its IPv6 path after translation.
#[inline(never)]
fn clamp_mss(ctx: &TcContext, l4: usize) {
    let Ok(doff) = ctx.load::<u8>(l4 + 12) else { return };
    let hl = ((doff >> 4) as usize) * 4;
    let mut off = 20usize;
    for _ in 0..12 {
        if off + 4 > hl || off > 56 {
            return;
        }
        let Ok(kind) = ctx.load::<u8>(l4 + off) else { return };
        match kind {
            0 => return,
            1 => off += 1,
            2 => {
                let Ok(raw) = ctx.load::<u16>(l4 + off + 2) else { return };
                let mss = u16::from_be(raw);
                if mss > 556 {
                    let new = (mss - 20).to_be();
                    if ctx.l4_csum_replace(l4 + 16, raw as u64, new as u64, 2).is_ok() {
                        let _ = ctx.store(l4 + off + 2, &new, 0);
                    }
                }
                return;
            }
            _ => {
                let Ok(len) = ctx.load::<u8>(l4 + off + 1) else { return };
                if len < 2 {
                    return;
                }
                off += len as usize;
            }
        }
    }
}
