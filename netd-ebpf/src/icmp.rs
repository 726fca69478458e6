//! ICMP errors (destination unreachable incl. fragmentation needed, time exceeded, parameter
//! problem) about a translated flow, translated back like nf_nat does: the embedded header
//! (addresses, ports or echo id, its IP checksum) gets the other side's view of the flow, the
//! outer destination becomes the flow's sender as it knows itself, the outer source the
//! translated address when the flow's peer itself answered (a router's address is kept), and
//! the ICMP checksum follows every change. Without this a sandbox whose UDP datagram hits a
//! closed port waits for a timeout instead of getting ECONNREFUSED.
use aya_ebpf::programs::TcContext;
use netd_common::{CT_ACT_HOSTFLOW, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    conntrack::{self, deliver},
    nat,
    parse::Pkt,
};

/// An ICMP error (the caller looks no further for anything else).
#[inline(always)]
pub fn is_error(p: &Pkt) -> bool {
    p.proto == IPPROTO_ICMP && !p.later_fragment && (p.icmp_type == 3 || p.icmp_type == 11 || p.icmp_type == 12)
}

/// Translate an ICMP error about a tracked flow and deliver it as the flow's entry says.
/// None: not about a flow netd translates (the caller goes on as for any packet).
#[inline(always)]
pub fn translate_error(ctx: &TcContext, p: &mut Pkt) -> Option<i32> {
    rewrite_error(ctx, p, false)
}

/// Translate an ICMP error the host itself sends (time exceeded for a packet whose last hop
/// was toward a sandbox, after its DNAT) on its way out of an uplink: it already goes where the
/// flow's client is, so only the rewrite (the client must see its own packet quoted, never the
/// sandbox's address). None: not about a flow netd translates.
#[inline(always)]
pub fn translate_host_error(ctx: &TcContext, p: &mut Pkt) -> Option<i32> {
    rewrite_error(ctx, p, true)
}

/// Rewrite an ICMP error about a tracked flow, then deliver it as the entry says (`in_place`:
/// let it go on where it goes). None: about no translated flow.
#[inline(always)]
fn rewrite_error(ctx: &TcContext, p: &mut Pkt, in_place: bool) -> Option<i32> {
    let inner = p.l4 as usize + 8;
    let vihl: u8 = ctx.load(inner).ok()?;
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    let iproto: u8 = ctx.load(inner + 9).ok()?;
    let isaddr: u32 = ctx.load(inner + 12).ok()?;
    let idaddr: u32 = ctx.load(inner + 16).ok()?;
    let il4 = inner + ihl;
    // The embedded packet's "ports" as conntrack keys them (echo: id as source of requests,
    // destination of replies), and where each one sits (0: not in the packet).
    let (isport, idport, soff, doff) = match iproto {
        IPPROTO_TCP | IPPROTO_UDP => (ctx.load::<u16>(il4).ok()?, ctx.load::<u16>(il4 + 2).ok()?, il4, il4 + 2),
        IPPROTO_ICMP => {
            let ty: u8 = ctx.load(il4).ok()?;
            let id: u16 = ctx.load(il4 + 4).ok()?;
            match ty {
                8 => (id, 0, il4 + 4, 0),
                0 => (0, id, 0, il4 + 4),
                _ => return None,
            }
        }
        _ => return None,
    };
    // The error travels against the packet it quotes: the entry of its direction is keyed by
    // the quoted tuple reversed, and says how that direction is translated.
    let k = crate::conntrack::ct_key(idaddr, isaddr, idport, isport, iproto);
    let v = conntrack::lookup(&k)?;
    if v.action == CT_ACT_HOSTFLOW {
        return None;
    }
    let csum = p.l4 as usize + 2;
    let old_ipsum: u16 = ctx.load(inner + 10).ok()?;
    // Quoted packet: source = the translated reply's destination, and so on.
    if rewrite_inner_addr(ctx, csum, inner, 12, isaddr, v.daddr).is_err()
        || rewrite_inner_addr(ctx, csum, inner, 16, idaddr, v.saddr).is_err()
    {
        return Some(aya_ebpf::bindings::TC_ACT_SHOT as i32);
    }
    let new_ipsum: u16 = ctx.load(inner + 10).ok()?;
    if ctx.l4_csum_replace(csum, old_ipsum as u64, new_ipsum as u64, 2).is_err()
        || (soff != 0 && rewrite_inner_port(ctx, csum, soff, isport, v.dport).is_err())
        || (doff != 0 && rewrite_inner_port(ctx, csum, doff, idport, v.sport).is_err())
    {
        return Some(aya_ebpf::bindings::TC_ACT_SHOT as i32);
    }
    // Outer header (ICMP's checksum does not cover it).
    let src = if p.saddr == idaddr { v.saddr } else { p.saddr };
    if nat::set_addr(ctx, p, true, src).is_err() || nat::set_addr(ctx, p, false, v.daddr).is_err() {
        return Some(aya_ebpf::bindings::TC_ACT_SHOT as i32);
    }
    if in_place {
        return Some(aya_ebpf::bindings::TC_ACT_OK as i32);
    }
    Some(deliver(ctx, v))
}

/// An address of the quoted header: the field, the quoted IP checksum and the ICMP checksum.
#[inline(always)]
fn rewrite_inner_addr(ctx: &TcContext, csum: usize, inner: usize, off: usize, old: u32, new: u32) -> Result<(), i64> {
    if old == new {
        return Ok(());
    }
    ctx.l3_csum_replace(inner + 10, old as u64, new as u64, 4)?;
    ctx.l4_csum_replace(csum, old as u64, new as u64, 4)?;
    ctx.store(inner + off, &new, 0)
}

/// A port (or echo id) of the quoted packet and the ICMP checksum. The quoted TCP/UDP checksum
/// is left as it is: the receiver of an ICMP error does not check it (and the quote may not
/// hold the whole segment).
#[inline(always)]
fn rewrite_inner_port(ctx: &TcContext, csum: usize, off: usize, old: u16, new: u16) -> Result<(), i64> {
    if old == new {
        return Ok(());
    }
    ctx.l4_csum_replace(csum, old as u64, new as u64, 2)?;
    ctx.store(off, &new, 0)
}
