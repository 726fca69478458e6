//! The IPv6 bodies of the entry points (`main.rs` hands them every IPv6 frame): the same
//! decisions as the v4 bodies, on `CT_V6` and the v6 maps. Each is a BPF-to-BPF call, so its
//! frame and the v4 body's never add up.
//!
//! - uplink ingress: Docker's protections (no direct access to sandbox addresses from outside
//!   in `nat` mode, `::1` only on lo), DNAT of published ports (the host's addresses, `::` the
//!   wildcard), replies of masqueraded flows, ICMPv6 errors, fragments;
//! - sandbox veth ingress: ICC and isolation, hairpin, NAT66 masquerade toward an uplink
//!   (`nat` mode), tracked forwarding without NAT (`routed`), ICMPv6 errors, fragments;
//! - uplink egress: the host's own flows keep their tuples against masquerade, the host's ICMPv6
//!   errors about translated flows are rewritten;
//! - neighbour discovery (RS/RA/NS/NA/redirect) and MLD pass untouched everywhere.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    helpers::generated::bpf_redirect_peer,
    programs::{TcContext, XdpContext},
};
use netd_common::{
    CT_ACT_FIB, CT_ACT_HOSTFLOW, CT_ACT_NAT64, CT_ACT_NAT64_PEER, CT_ACT_PASS, CT_ACT_PEER, CT_F_CLOSING, CT_F_HOSTNAT,
    CT_F_L2, CT_F_SEEN, DropReason, EndpointInfo, IPPROTO_TCP, IPPROTO_UDP, NET_F_ICC, NET_F_INTERNAL,
    NET_F_MASQUERADE, NET_F_PROTECT, NET_F_ROUTED,
    v6::{CtKey6, CtValue6, IPPROTO_ICMPV6, PublishedValue6},
};

use super::{
    ct, icmp,
    maps::{
        CT_V6, NewFlow6, SCRATCH_PKT6, SCRATCH_V6, endpoint6, is_host_addr6, is_loopback6, is_multicast6, linked6,
        network6, published6, published6_exact, uplink6,
    },
    nat46,
    parse::{self, Pkt6},
    snat::{pick_port, ports},
};
use crate::{
    maps::{HOST_NAT, is_foreign_bridge},
    stats,
};

const OK: i32 = TC_ACT_OK as i32;
const SHOT: i32 = TC_ACT_SHOT as i32;
const BPF_NOEXIST: u64 = 1;

#[inline(always)]
fn parse_tc(ctx: &TcContext) -> Option<&'static mut Pkt6> {
    // SAFETY: per-CPU map value, valid for this program run.
    let p = unsafe { &mut *SCRATCH_PKT6.get_ptr_mut(0)? };
    match parse::tc_into(ctx, p) {
        0 => Some(p),
        2 => {
            stats::count_drop(DropReason::Malformed);
            None
        }
        _ => None,
    }
}

/// The new flow's scratch slot (off the stack).
#[inline(always)]
fn scratch() -> Option<&'static mut NewFlow6> {
    // SAFETY: per-CPU map value, valid for this program run; nothing else on this CPU uses it
    // until the flow is inserted and applied.
    SCRATCH_V6.get_ptr_mut(0).map(|s| unsafe { &mut *s })
}

/// Whether `daddr` is a sandbox's address that outside must not reach (`nat` mode).
#[inline(always)]
fn protected(daddr: &netd_common::v6::Addr6) -> bool {
    endpoint6(daddr).and_then(|ep| network6(ep.net)).is_some_and(|n| n.flags & NET_F_PROTECT != 0)
}

/// XDP on an uplink, for an IPv6 frame: Docker's raw-table protections.
#[inline(always)]
pub fn xdp_uplink(ctx: &XdpContext) -> u32 {
    let Some(daddr) = parse::daddr_xdp(ctx) else { return xdp_action::XDP_PASS };
    if is_loopback6(&daddr) {
        stats::count_drop(DropReason::LoopbackNotLo);
        return xdp_action::XDP_DROP;
    }
    if protected(&daddr) {
        stats::count_drop(DropReason::DirectToSandbox);
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

/// Uplink ingress, IPv6.
#[inline(never)]
pub fn from_netdev(ctx: TcContext) -> i32 {
    let ctx = &ctx;
    stats::count_prog(netd_common::ProgId::FromNetdev, ctx.len() as u64);
    let Some(p) = parse_tc(ctx) else { return OK };
    // The protections first, as in XDP (nothing from outside is for a sandbox's address in
    // nat mode, not even neighbour discovery).
    if is_loopback6(&p.daddr) {
        stats::count_drop(DropReason::LoopbackNotLo);
        return SHOT;
    }
    if protected(&p.daddr) {
        stats::count_drop(DropReason::DirectToSandbox);
        return SHOT;
    }
    if p.is_nd_or_mld() {
        return OK;
    }
    if p.later_fragment {
        return match ct::apply_fragment(ctx, p) {
            Some(v) => v,
            None if is_host_addr6(&p.daddr) => ct::frag_unknown(),
            None => OK,
        };
    }
    if p.more_fragments && is_host_addr6(&p.daddr) {
        ct::frag_pass(p);
    }
    if !p.has_ports {
        if p.is_error()
            && let Some(v) = icmp::translate_error(ctx, p)
        {
            return v;
        }
        return OK;
    }
    let k = ct::key_of(p);
    if let Some(e) = ct::lookup_flow_uplink(p, &k) {
        return ct::apply(ctx, p, e);
    }
    if endpoint6(&p.daddr).is_some() {
        return direct(ctx, p);
    }
    if p.proto == IPPROTO_ICMPV6 || !is_host_addr6(&p.daddr) {
        return OK;
    }
    match dnat(ctx, p) {
        nat46::APPLY => {
            // A v4-only sandbox's binding: NAT46, replies routed back out.
            // SAFETY: reading the context's skb.
            let ifindex = unsafe { (*ctx.skb.skb).ifindex };
            let back = nat46::Back { action: CT_ACT_NAT64, ifindex, dmac: [0; 6], smac: [0; 6] };
            nat46_apply(ctx, p, &back)
        }
        v => v,
    }
}

/// A new NAT46 flow ([`nat46::new_flow`]) and its first packet, from the caller's frame.
#[inline(always)]
fn nat46_apply(ctx: &TcContext, p: &mut Pkt6, back: &nat46::Back) -> i32 {
    match nat46::new_flow(ctx, p, back) {
        nat46::APPLY => match scratch() {
            Some(s) => ct::apply_new(ctx, p, &s.k),
            None => OK,
        },
        v => v,
    }
}

/// From outside straight to a sandbox address of a `nat-unprotected` or `routed` network
/// (`nat` was dropped above): routed opens only ICMPv6 and the published container ports.
#[inline(never)]
fn direct(ctx: &TcContext, p: &mut Pkt6) -> i32 {
    let Some(ep) = endpoint6(&p.daddr) else { return OK };
    let Some(net) = network6(ep.net) else { return OK };
    let open =
        net.flags & NET_F_ROUTED == 0 || p.proto == IPPROTO_ICMPV6 || published6_exact(p.proto, &p.daddr, p.dport);
    if !open {
        stats::count_drop(DropReason::DirectToSandbox);
        return SHOT;
    }
    let Some(s) = scratch() else { return OK };
    s.k = ct::key_of(p);
    s.fwd = CtValue6 {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: p.sport,
        dport: p.dport,
        action: CT_ACT_PEER,
        ifindex: ep.ifindex,
        dmac: ep.mac,
        smac: net.gateway_mac,
        ..Default::default()
    };
    s.rk = s.k.reversed();
    s.rev = CtValue6 {
        saddr: p.daddr,
        daddr: p.saddr,
        sport: p.dport,
        dport: p.sport,
        action: CT_ACT_FIB,
        ..Default::default()
    };
    if !ct::insert_pair(&s.k, &mut s.fwd, &s.rk, &mut s.rev) {
        return SHOT;
    }
    ct::apply_new(ctx, p, &s.k)
}

/// A new connection to a published port on one of the host's addresses.
#[inline(never)]
fn dnat(ctx: &TcContext, p: &mut Pkt6) -> i32 {
    let Some(pb) = published6(p.proto, &p.daddr, p.dport) else { return OK };
    if nat46::v4_of(&pb.addr).is_some() {
        // A v4-only sandbox's binding: NAT46 (the caller's, from its frame).
        return nat46::APPLY;
    }
    let Some(ep) = endpoint6(&pb.addr) else { return OK };
    let Some(net) = network6(ep.net) else { return OK };
    // The client's port toward the sandbox unless another flow's reply tuple holds it.
    // (`ct::restart_published` checks a closed pair against these two values.)
    let Some(cport) = pick_port(p.proto, &pb.addr, &p.saddr, ports(pb.port, p.sport), true) else {
        stats::count_drop(DropReason::SnatExhausted);
        return SHOT;
    };
    let Some(s) = scratch() else { return OK };
    s.k = ct::key_of(p);
    s.fwd = CtValue6 {
        saddr: p.saddr,
        daddr: pb.addr,
        sport: cport,
        dport: pb.port,
        action: CT_ACT_PEER,
        ifindex: ep.ifindex,
        dmac: ep.mac,
        smac: net.gateway_mac,
        stats_slot: pb.stats_slot + 1,
        ..Default::default()
    };
    s.rk = CtKey6 { saddr: pb.addr, daddr: p.saddr, sport: pb.port, dport: cport, proto: p.proto, _pad: [0; 3] };
    s.rev = CtValue6 {
        saddr: p.daddr,
        daddr: p.saddr,
        sport: p.dport,
        dport: p.sport,
        action: CT_ACT_FIB,
        ..Default::default()
    };
    if !ct::insert_pair(&s.k, &mut s.fwd, &s.rk, &mut s.rev) {
        return SHOT;
    }
    ct::apply_new(ctx, p, &s.k)
}

/// Where a sandbox's packet came in: its veth, MAC and gateway MAC (the reply direction's
/// delivery).
#[derive(Clone, Copy)]
struct Here {
    ifindex: u32,
    src_mac: [u8; 6],
    gw_mac: [u8; 6],
}

/// Host-side sandbox veth ingress, IPv6.
#[inline(never)]
pub fn from_container(ctx: TcContext) -> i32 {
    let ctx = &ctx;
    stats::count_prog(netd_common::ProgId::FromContainer, ctx.len() as u64);
    let Some(p) = parse_tc(ctx) else { return OK };
    if p.is_nd_or_mld() {
        return OK;
    }
    if p.later_fragment
        && let Some(v) = ct::apply_fragment(ctx, p)
    {
        return v;
    }
    if p.is_error()
        && let Some(v) = icmp::translate_error(ctx, p)
    {
        return v;
    }
    let k = ct::key_of(p);
    if p.has_ports
        && let Some(e) = ct::lookup_flow(p, &k)
    {
        return ct::apply(ctx, p, e);
    }
    // Traffic from addresses netd does not know (link-local, SLAAC) is the kernel's, unless it
    // is for a sandbox's address (a forged source must not slip past ICC and isolation).
    let Some(src) = endpoint6(&p.saddr) else { return unknown_source(ctx, p) };
    let Some(net) = network6(src.net) else { return OK };
    let here = Here { ifindex: unsafe { (*ctx.skb.skb).ifindex }, src_mac: src.mac, gw_mac: net.gateway_mac };
    // ::1 never arrives from a sandbox (the kernel drops it as martian): a forged frame must
    // not reach a port published on [::1].
    if is_loopback6(&p.daddr) {
        stats::count_drop(DropReason::LoopbackNotLo);
        return SHOT;
    }
    if is_host_addr6(&p.daddr) {
        if p.has_ports
            && p.proto != IPPROTO_ICMPV6
            && let Some(pb) = published6(p.proto, &p.daddr, p.dport)
        {
            if net.flags & NET_F_INTERNAL != 0 {
                stats::count_drop(DropReason::Internal);
                return SHOT;
            }
            return match hairpin(ctx, p, pb, &here) {
                nat46::APPLY => {
                    // A v4-only sandbox's binding: NAT46, replies back into this veth.
                    let back = nat46::Back {
                        action: CT_ACT_NAT64_PEER,
                        ifindex: here.ifindex,
                        dmac: here.src_mac,
                        smac: here.gw_mac,
                    };
                    nat46_apply(ctx, p, &back)
                }
                v => v,
            };
        }
        return OK;
    }
    if let Some(dst) = endpoint6(&p.daddr) {
        if dst.net != src.net {
            stats::count_drop(DropReason::Isolation);
            return SHOT;
        }
        if net.flags & NET_F_ICC != 0 {
            return to_peer(ctx, dst);
        }
        // icc=false: only the exact ports opened by `--link` (and their replies, via CT_V6).
        if p.has_ports && p.proto != IPPROTO_ICMPV6 && linked6(&p.saddr, &p.daddr, p.dport, p.proto) {
            return link(ctx, p, dst, &here);
        }
        stats::count_drop(DropReason::Icc);
        return SHOT;
    }
    if is_multicast6(&p.daddr) {
        // Link-scope traffic (ND and MLD passed above): the bridge floods it, icc=false stops it.
        if net.flags & NET_F_ICC == 0 {
            stats::count_drop(DropReason::Icc);
            return SHOT;
        }
        return OK;
    }
    if net.flags & NET_F_INTERNAL != 0 {
        stats::count_drop(DropReason::Isolation);
        return SHOT;
    }
    let egress = ct::fib_egress(ctx, &p.saddr, &p.daddr);
    if egress.is_some_and(is_foreign_bridge) {
        stats::count_drop(DropReason::Isolation);
        return SHOT;
    }
    if p.later_fragment
        && net.flags & NET_F_MASQUERADE != 0
        && (p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP || p.proto == IPPROTO_ICMPV6)
    {
        // Its first fragment was not translated here: it would leave with the sandbox's address.
        return ct::frag_unknown();
    }
    // A routed hop the packet cannot make: the kernel answers time exceeded from the gateway.
    if !p.has_ports || p.later_fragment || p.hop <= 1 {
        return OK;
    }
    if net.flags & NET_F_MASQUERADE == 0 {
        return forward(ctx, p, &here);
    }
    masquerade(ctx, p, egress.unwrap_or(0), &here)
}

/// A packet from a sandbox whose source is no sandbox address (the gateway's, another
/// network's, made up, link-local) to a sandbox's address: what Docker's rules do with it,
/// whatever its source. A frame to the sandbox's own MAC is bridged (ICC decides: the bridge
/// delivers it when icc=true); anything else is routed through the host toward it, which the
/// isolation rules (and the per-sandbox raw DROP) stop. Otherwise the kernel's.
#[inline(never)]
fn unknown_source(ctx: &TcContext, p: &Pkt6) -> i32 {
    let Some(dst) = endpoint6(&p.daddr) else { return OK };
    let Some(net) = network6(dst.net) else { return OK };
    crate::forged::to_sandbox(ctx, &dst.mac, net.flags & NET_F_ICC != 0)
}

/// Same network, icc=true: straight into the peer's veth.
#[inline(always)]
fn to_peer(ctx: &TcContext, dst: &EndpointInfo) -> i32 {
    if ctx.store(0, &dst.mac, 0).is_err() {
        return SHOT;
    }
    // SAFETY: plain helper call.
    unsafe { bpf_redirect_peer(dst.ifindex, 0) as i32 }
}

/// A `--link` flow under icc=false: tracked, both directions peer to peer (never through the
/// bridge), a layer-2 hop (hop limit untouched), as the v4 body does.
#[inline(never)]
fn link(ctx: &TcContext, p: &mut Pkt6, dst: &EndpointInfo, here: &Here) -> i32 {
    let Some(s) = scratch() else { return OK };
    s.k = ct::key_of(p);
    s.fwd = CtValue6 {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: p.sport,
        dport: p.dport,
        action: CT_ACT_PEER,
        flags: CT_F_L2,
        ifindex: dst.ifindex,
        dmac: dst.mac,
        smac: here.src_mac,
        ..Default::default()
    };
    s.rk = s.k.reversed();
    s.rev = CtValue6 {
        saddr: p.daddr,
        daddr: p.saddr,
        sport: p.dport,
        dport: p.sport,
        action: CT_ACT_PEER,
        flags: CT_F_L2,
        ifindex: here.ifindex,
        dmac: here.src_mac,
        smac: dst.mac,
        ..Default::default()
    };
    if !ct::insert_pair(&s.k, &mut s.fwd, &s.rk, &mut s.rev) {
        return SHOT;
    }
    ct::apply_new(ctx, p, &s.k)
}

/// A sandbox to a published port through a host address: DNAT to the target, SNAT to the
/// target network's IPv6 gateway (replies come back through here, whoever the target is).
#[inline(never)]
fn hairpin(ctx: &TcContext, p: &mut Pkt6, pb: &PublishedValue6, here: &Here) -> i32 {
    if nat46::v4_of(&pb.addr).is_some() {
        // A v4-only sandbox's binding: NAT46 (the caller's, from its frame).
        return nat46::APPLY;
    }
    let Some(dst) = endpoint6(&pb.addr) else { return OK };
    let Some(dnet) = network6(dst.net) else { return OK };
    let Some(port) = pick_port(p.proto, &pb.addr, &dnet.gateway, ports(pb.port, p.sport), false) else {
        stats::count_drop(DropReason::SnatExhausted);
        return SHOT;
    };
    let Some(s) = scratch() else { return OK };
    s.k = ct::key_of(p);
    s.fwd = CtValue6 {
        saddr: dnet.gateway,
        daddr: pb.addr,
        sport: port,
        dport: pb.port,
        action: CT_ACT_PEER,
        ifindex: dst.ifindex,
        dmac: dst.mac,
        smac: dnet.gateway_mac,
        stats_slot: pb.stats_slot + 1,
        ..Default::default()
    };
    s.rk = CtKey6 { saddr: pb.addr, daddr: dnet.gateway, sport: pb.port, dport: port, proto: p.proto, _pad: [0; 3] };
    s.rev = CtValue6 {
        saddr: p.daddr,
        daddr: p.saddr,
        sport: p.dport,
        dport: p.sport,
        action: CT_ACT_PEER,
        ifindex: here.ifindex,
        dmac: here.src_mac,
        smac: here.gw_mac,
        ..Default::default()
    };
    if !ct::insert_pair(&s.k, &mut s.fwd, &s.rk, &mut s.rev) {
        return SHOT;
    }
    ct::apply_new(ctx, p, &s.k)
}

/// No NAT (`routed`, or masquerade off): forwarded by BPF, tracked so replies come back
/// straight into the sandbox.
#[inline(never)]
fn forward(ctx: &TcContext, p: &mut Pkt6, here: &Here) -> i32 {
    let Some(s) = scratch() else { return OK };
    s.k = ct::key_of(p);
    s.fwd = CtValue6 {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: p.sport,
        dport: p.dport,
        action: CT_ACT_FIB,
        ..Default::default()
    };
    s.rk = s.k.reversed();
    s.rev = CtValue6 {
        saddr: p.daddr,
        daddr: p.saddr,
        sport: p.dport,
        dport: p.sport,
        action: CT_ACT_PEER,
        ifindex: here.ifindex,
        dmac: here.src_mac,
        smac: here.gw_mac,
        ..Default::default()
    };
    if !ct::insert_pair(&s.k, &mut s.fwd, &s.rk, &mut s.rev) {
        return SHOT;
    }
    ct::apply_new(ctx, p, &s.k)
}

/// NAT66: source to the uplink's IPv6 address for a new flow leaving by an uplink (Docker
/// masquerades whatever the prefix, ULA or global).
#[inline(never)]
fn masquerade(ctx: &TcContext, p: &mut Pkt6, egress: u32, here: &Here) -> i32 {
    let Some(up) = uplink6(egress) else { return OK };
    if up[0] | up[1] | up[2] | up[3] == 0 {
        return OK; // an uplink without an IPv6 address
    }
    let Some(port) = pick_port(p.proto, &p.daddr, &up, ports(p.dport, p.sport), true) else {
        stats::count_drop(DropReason::SnatExhausted);
        return SHOT;
    };
    let Some(s) = scratch() else { return OK };
    s.k = ct::key_of(p);
    s.fwd =
        CtValue6 { saddr: up, daddr: p.daddr, sport: port, dport: p.dport, action: CT_ACT_FIB, ..Default::default() };
    s.rk = CtKey6 { saddr: p.daddr, daddr: up, sport: p.dport, dport: port, proto: p.proto, _pad: [0; 3] };
    s.rev = CtValue6 {
        saddr: p.daddr,
        daddr: p.saddr,
        sport: p.dport,
        dport: p.sport,
        action: CT_ACT_PEER,
        ifindex: here.ifindex,
        dmac: here.src_mac,
        smac: here.gw_mac,
        ..Default::default()
    };
    if !ct::insert_pair(&s.k, &mut s.fwd, &s.rk, &mut s.rev) {
        return SHOT;
    }
    ct::apply_new(ctx, p, &s.k)
}

/// Uplink egress, IPv6: the host's own flows from an uplink address reserve their tuple (and
/// get another source port when a sandbox flow holds it); the host's ICMPv6 errors about a
/// translated flow are rewritten.
#[inline(never)]
pub fn to_netdev(ctx: TcContext) -> i32 {
    let ctx = &ctx;
    stats::count_prog(netd_common::ProgId::ToNetdev, ctx.len() as u64);
    let Some(p) = parse_tc(ctx) else { return OK };
    to_netdev_body(ctx, p)
}

/// The same on a layer-3 uplink's egress (tun, WireGuard, PPP): the packet starts at its IPv6
/// header (`Pkt6::l3` = 0), parsed and rewritten there.
#[inline(never)]
pub fn to_netdev_l3(ctx: TcContext) -> i32 {
    let ctx = &ctx;
    stats::count_prog(netd_common::ProgId::ToNetdev, ctx.len() as u64);
    // SAFETY: per-CPU map value, valid for this program run.
    let Some(p) = SCRATCH_PKT6.get_ptr_mut(0).map(|p| unsafe { &mut *p }) else { return OK };
    match parse::tc_l3_into(ctx, p) {
        0 => {}
        2 => {
            stats::count_passed(DropReason::Malformed);
            return OK;
        }
        _ => return OK,
    }
    to_netdev_body(ctx, p)
}

#[inline(always)]
fn to_netdev_body(ctx: &TcContext, p: &mut Pkt6) -> i32 {
    // SAFETY: reading the context's skb.
    let ingress = unsafe { (*ctx.skb.skb).ingress_ifindex };
    if !p.has_ports || p.proto == IPPROTO_ICMPV6 {
        if p.is_error()
            && ingress == 0
            && let Some(v) = icmp::translate_host_error(ctx, p)
        {
            return v;
        }
        return OK;
    }
    let new_flow = p.proto != IPPROTO_TCP || p.tcp_flags & 0x12 == 0x02;
    if !new_flow && p.tcp_flags & 0x05 == 0 && !HOST_NAT.get(0).is_some_and(|t| *t != 0) {
        return OK;
    }
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if !uplink6(ifindex).is_some_and(|a| super::maps::eq6(&a, &p.saddr)) || ingress != 0 {
        return OK;
    }
    host_egress(ctx, p, new_flow)
}

/// See `conntrack::host_egress`.
#[inline(always)]
fn host_egress(ctx: &TcContext, p: &mut Pkt6, new_flow: bool) -> i32 {
    let k = ct::key_of(p);
    if let Some(e) = ct::get_mut(&k)
        && unsafe { (*e).flags } & CT_F_HOSTNAT != 0
    {
        return ct::apply(ctx, p, e);
    }
    let rk = k.reversed();
    // SAFETY: plain helper call.
    let now = crate::conntrack::now();
    let Some(e) = CT_V6.get_ptr_mut(&rk) else {
        if new_flow {
            let v = CtValue6 { action: CT_ACT_HOSTFLOW, flags: CT_F_SEEN, last_seen_ns: now, ..Default::default() };
            let _ = CT_V6.insert(&rk, &v, BPF_NOEXIST);
        }
        return OK;
    };
    // SAFETY: map value pointer valid for this program run; racy updates are harmless.
    unsafe {
        if (*e).action == CT_ACT_HOSTFLOW {
            (*e).last_seen_ns = now;
            if p.proto == IPPROTO_TCP && p.tcp_flags & 0x05 != 0 {
                (*e).flags |= CT_F_CLOSING;
            } else if new_flow {
                (*e).flags &= !CT_F_CLOSING;
            }
            return OK;
        }
    }
    if !new_flow {
        return OK;
    }
    host_flow_nat(ctx, p)
}

/// A host flow whose tuple a translated flow holds: another source port for it.
#[inline(never)]
fn host_flow_nat(ctx: &TcContext, p: &mut Pkt6) -> i32 {
    let Some(port) = pick_port(p.proto, &p.daddr, &p.saddr, ports(p.dport, p.sport), false) else {
        stats::count_drop(DropReason::SnatExhausted);
        return SHOT;
    };
    let Some(s) = scratch() else { return OK };
    s.k = ct::key_of(p);
    s.fwd = CtValue6 {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: port,
        dport: p.dport,
        action: CT_ACT_PASS,
        flags: CT_F_HOSTNAT,
        ..Default::default()
    };
    s.rk = CtKey6 { saddr: p.daddr, daddr: p.saddr, sport: p.dport, dport: port, proto: p.proto, _pad: [0; 3] };
    s.rev = CtValue6 {
        saddr: p.daddr,
        daddr: p.saddr,
        sport: p.dport,
        dport: p.sport,
        action: CT_ACT_PASS,
        flags: CT_F_HOSTNAT,
        ..Default::default()
    };
    if !ct::insert_pair(&s.k, &mut s.fwd, &s.rk, &mut s.rev) {
        return SHOT;
    }
    if let Some(t) = HOST_NAT.get_ptr_mut(0) {
        // SAFETY: one-entry array slot.
        unsafe { *t = crate::conntrack::now() };
    }
    ct::apply_new(ctx, p, &s.k)
}
