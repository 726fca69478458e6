//! ICMPv6 errors (destination unreachable, packet too big, time exceeded, parameter problem)
//! about a translated flow, translated back as nf_nat does (see `crate::icmp`): the quoted
//! header gets the other side's view of the flow, the outer destination becomes the flow's
//! sender as it knows itself, the outer source the translated address when the flow's peer
//! itself answered. ICMPv6's checksum covers the pseudo-header and the whole quote: every
//! change is folded into it.
use aya_ebpf::programs::TcContext;
use netd_common::{
    CT_ACT_HOSTFLOW, CT_ACT_NAT46, IPPROTO_TCP, IPPROTO_UDP,
    v6::{Addr6, CtKey6, IPPROTO_ICMPV6},
};

use super::{
    ct,
    maps::eq6,
    nat,
    parse::{ICMP6_ECHO_REPLY, ICMP6_ECHO_REQUEST, IP6_HLEN, Pkt6},
};

const OK: i32 = aya_ebpf::bindings::TC_ACT_OK as i32;
const SHOT: i32 = aya_ebpf::bindings::TC_ACT_SHOT as i32;

/// Translate an ICMPv6 error about a tracked flow and deliver it as the flow's entry says.
/// None: not about a flow netd translates.
#[inline(never)]
pub fn translate_error(ctx: &TcContext, p: &mut Pkt6) -> Option<i32> {
    rewrite_error(ctx, p, false)
}

/// The host's own ICMPv6 error about a translated flow, on its way out of an uplink: only
/// rewritten (the client sees its own packet quoted).
#[inline(never)]
pub fn translate_host_error(ctx: &TcContext, p: &mut Pkt6) -> Option<i32> {
    rewrite_error(ctx, p, true)
}

#[inline(always)]
fn rewrite_error(ctx: &TcContext, p: &mut Pkt6, in_place: bool) -> Option<i32> {
    let inner = p.l4 as usize + 8;
    let vtc: u8 = ctx.load(inner).ok()?;
    if vtc >> 4 != 6 {
        return None;
    }
    let iproto: u8 = ctx.load(inner + 6).ok()?;
    let isaddr: Addr6 = ctx.load(inner + 8).ok()?;
    let idaddr: Addr6 = ctx.load(inner + 24).ok()?;
    let il4 = inner + IP6_HLEN;
    // The quoted packet's "ports" as conntrack keys them, and where each sits (0: absent).
    let (isport, idport, soff, doff) = match iproto {
        IPPROTO_TCP | IPPROTO_UDP => (ctx.load::<u16>(il4).ok()?, ctx.load::<u16>(il4 + 2).ok()?, il4, il4 + 2),
        IPPROTO_ICMPV6 => {
            let ty: u8 = ctx.load(il4).ok()?;
            let id: u16 = ctx.load(il4 + 4).ok()?;
            match ty {
                ICMP6_ECHO_REQUEST => (id, 0, il4 + 4, 0),
                ICMP6_ECHO_REPLY => (0, id, 0, il4 + 4),
                _ => return None,
            }
        }
        _ => return None,
    };
    // The error travels against the packet it quotes: its direction's entry is keyed by the
    // quoted tuple reversed.
    let k = CtKey6 { saddr: idaddr, daddr: isaddr, sport: idport, dport: isport, proto: iproto, _pad: [0; 3] };
    let v = ct::get(&k)?;
    if v.action == CT_ACT_HOSTFLOW {
        return None;
    }
    if v.action == CT_ACT_NAT46 {
        // About a NAT46 flow: ICMPv4 to the sandbox (the host's own errors: none about them).
        return if in_place { None } else { Some(super::icmp46::to_v4(ctx, p, v)) };
    }
    let csum = p.l4 as usize + 2;
    if rewrite_inner_addr(ctx, csum, inner + 8, &isaddr, &v.daddr).is_err()
        || rewrite_inner_addr(ctx, csum, inner + 24, &idaddr, &v.saddr).is_err()
        || (soff != 0 && rewrite_inner_port(ctx, csum, soff, isport, v.dport).is_err())
        || (doff != 0 && rewrite_inner_port(ctx, csum, doff, idport, v.sport).is_err())
    {
        return Some(SHOT);
    }
    // Outer header: covered by ICMPv6's checksum through the pseudo-header.
    let src = if eq6(&p.saddr, &idaddr) { v.saddr } else { p.saddr };
    if nat::set_addr(ctx, p, true, &src).is_err() || nat::set_addr(ctx, p, false, &v.daddr).is_err() {
        return Some(SHOT);
    }
    if in_place {
        return Some(OK);
    }
    Some(ct::deliver(ctx, v))
}

/// An address of the quoted header and the ICMPv6 checksum (the quote is payload: no
/// pseudo-header flag).
#[inline(always)]
fn rewrite_inner_addr(ctx: &TcContext, csum: usize, off: usize, old: &Addr6, new: &Addr6) -> Result<(), i64> {
    if eq6(old, new) {
        return Ok(());
    }
    ctx.l4_csum_replace(csum, 0, nat::diff16(old, new), 0)?;
    ctx.store(off, new, 0)
}

/// A port (or echo id) of the quoted packet and the ICMPv6 checksum. The quoted TCP/UDP
/// checksum is left as it is, as for IPv4.
#[inline(always)]
fn rewrite_inner_port(ctx: &TcContext, csum: usize, off: usize, old: u16, new: u16) -> Result<(), i64> {
    if old == new {
        return Ok(());
    }
    ctx.l4_csum_replace(csum, old as u64, new as u64, 2)?;
    ctx.store(off, &new, 0)
}
