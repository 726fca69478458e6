//! IPv6 packet rewriting. IPv6 has no header checksum; TCP, UDP and ICMPv6 checksums cover the
//! pseudo-header, so an address change is one `bpf_csum_diff` over the 16 bytes folded into the
//! L4 checksum with the pseudo-header flag (which also handles CHECKSUM_PARTIAL skbs).
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::generated::bpf_csum_diff,
    programs::TcContext,
};
use netd_common::{
    IPPROTO_TCP, IPPROTO_UDP,
    v6::{Addr6, IPPROTO_ICMPV6},
};

use super::{
    maps::eq6,
    parse::{ICMP6_ECHO_REPLY, ICMP6_ECHO_REQUEST, Pkt6},
};

#[inline(always)]
pub fn l4_csum_off(proto: u8, l4: usize) -> Option<usize> {
    match proto {
        IPPROTO_TCP => Some(l4 + 16),
        IPPROTO_UDP => Some(l4 + 6),
        IPPROTO_ICMPV6 => Some(l4 + 2),
        _ => None,
    }
}

/// The checksum difference of replacing `old` by `new` (16 bytes each).
#[inline(always)]
pub fn diff16(old: &Addr6, new: &Addr6) -> u64 {
    let mut o = *old;
    let mut n = *new;
    // SAFETY: both buffers are 16 bytes on the stack.
    unsafe { bpf_csum_diff(o.as_mut_ptr(), 16, n.as_mut_ptr(), 16, 0) as u32 as u64 }
}

/// Replace the source (`src = true`) or destination address, fixing the L4 checksum (in the
/// first fragment only: later ones carry none).
#[inline(always)]
pub fn set_addr(ctx: &TcContext, p: &mut Pkt6, src: bool, new: &Addr6) -> Result<(), i64> {
    let old = if src { p.saddr } else { p.daddr };
    if eq6(&old, new) {
        return Ok(());
    }
    if !p.later_fragment
        && (p.proto == IPPROTO_TCP || p.proto == IPPROTO_ICMPV6 || (p.proto == IPPROTO_UDP && !p.udp_csum_zero))
        && let Some(coff) = l4_csum_off(p.proto, p.l4 as usize)
    {
        let mut flags = BPF_F_PSEUDO_HDR as u64;
        if p.proto == IPPROTO_UDP {
            flags |= BPF_F_MARK_MANGLED_0 as u64;
        }
        ctx.l4_csum_replace(coff, 0, diff16(&old, new), flags)?;
    }
    ctx.store(p.l3 as usize + if src { 8 } else { 24 }, new, 0)?;
    if src {
        p.saddr = *new;
    } else {
        p.daddr = *new;
    }
    Ok(())
}

/// Replace the source or destination port (ICMPv6 echo: the id).
#[inline(always)]
pub fn set_port(ctx: &TcContext, p: &mut Pkt6, src: bool, new: u16) -> Result<(), i64> {
    let old = if src { p.sport } else { p.dport };
    if old == new || !p.has_ports {
        return Ok(());
    }
    let l4 = p.l4 as usize;
    let off = if p.proto == IPPROTO_ICMPV6 { l4 + 4 } else { l4 + if src { 0 } else { 2 } };
    if p.proto == IPPROTO_ICMPV6
        && ((src && p.icmp_type != ICMP6_ECHO_REQUEST) || (!src && p.icmp_type != ICMP6_ECHO_REPLY))
    {
        return Ok(()); // the id is only one of the two "ports"
    }
    if !(p.proto == IPPROTO_UDP && p.udp_csum_zero)
        && let Some(coff) = l4_csum_off(p.proto, l4)
    {
        let mut flags = 2u64;
        if p.proto == IPPROTO_UDP {
            flags |= BPF_F_MARK_MANGLED_0 as u64;
        }
        ctx.l4_csum_replace(coff, old as u64, new as u64, flags)?;
    }
    ctx.store(off, &new, 0)?;
    if src {
        p.sport = new;
    } else {
        p.dport = new;
    }
    Ok(())
}

/// A routed hop: decrement the hop limit (the caller has checked it is above 1). No checksum
/// covers it.
#[inline(always)]
pub fn dec_hop(ctx: &TcContext, p: &mut Pkt6) -> Result<(), i64> {
    let hop = p.hop - 1;
    ctx.store(p.l3 as usize + 7, &hop, 0)?;
    p.hop = hop;
    Ok(())
}
