//! Packet rewriting with incremental checksum updates (`l3/l4_csum_replace`; the pseudo-header
//! flag when an address changes, `MARK_MANGLED_0` so a UDP checksum of 0 stays "none").
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use netd_common::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use crate::parse::{IP_OFF, Pkt};

#[inline(always)]
fn l4_csum_off(p: &Pkt) -> Option<usize> {
    match p.proto {
        IPPROTO_TCP => Some(p.l4 + 16),
        IPPROTO_UDP => Some(p.l4 + 6),
        IPPROTO_ICMP => Some(p.l4 + 2),
        _ => None,
    }
}

/// Replace the source (`src = true`) or destination address.
#[inline(always)]
pub fn set_addr(ctx: &TcContext, p: &mut Pkt, src: bool, new: u32) -> Result<(), i64> {
    let old = if src { p.saddr } else { p.daddr };
    if old == new {
        return Ok(());
    }
    let off = IP_OFF + if src { 12 } else { 16 };
    // TCP/UDP checksums cover the pseudo-header (addresses); ICMP's does not.
    if !p.later_fragment && (p.proto == IPPROTO_TCP || (p.proto == IPPROTO_UDP && !p.udp_csum_zero)) {
        let coff = l4_csum_off(p).unwrap_or(0);
        let mut flags = BPF_F_PSEUDO_HDR as u64 | 4;
        if p.proto == IPPROTO_UDP {
            flags |= BPF_F_MARK_MANGLED_0 as u64;
        }
        ctx.l4_csum_replace(coff, old as u64, new as u64, flags)?;
    }
    ctx.l3_csum_replace(IP_OFF + 10, old as u64, new as u64, 4)?;
    ctx.store(off, &new, 0)?;
    if src {
        p.saddr = new;
    } else {
        p.daddr = new;
    }
    Ok(())
}

/// Replace the source or destination port (ICMP echo: the id).
#[inline(always)]
pub fn set_port(ctx: &TcContext, p: &mut Pkt, src: bool, new: u16) -> Result<(), i64> {
    let old = if src { p.sport } else { p.dport };
    if old == new || !p.has_ports {
        return Ok(());
    }
    let off = if p.proto == IPPROTO_ICMP { p.l4 + 4 } else { p.l4 + if src { 0 } else { 2 } };
    if p.proto == IPPROTO_ICMP && ((src && p.icmp_type != 8) || (!src && p.icmp_type != 0)) {
        return Ok(()); // the id is only one of the two "ports"
    }
    if !(p.proto == IPPROTO_UDP && p.udp_csum_zero)
        && let Some(coff) = l4_csum_off(p)
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

/// Set the Ethernet addresses.
#[inline(always)]
pub fn set_macs(ctx: &TcContext, dst: &[u8; 6], src: &[u8; 6]) -> Result<(), i64> {
    ctx.store(0, dst, 0)?;
    ctx.store(6, src, 0)?;
    Ok(())
}

/// A routed hop: decrement the TTL (the caller has checked it is above 1), fixing the header
/// checksum over the 16-bit word the TTL shares with the protocol.
#[inline(always)]
pub fn dec_ttl(ctx: &TcContext, p: &mut Pkt) -> Result<(), i64> {
    let old = u16::from_ne_bytes([p.ttl, p.proto]);
    let ttl = p.ttl - 1;
    let new = u16::from_ne_bytes([ttl, p.proto]);
    ctx.l3_csum_replace(IP_OFF + 10, old as u64, new as u64, 2)?;
    ctx.store(IP_OFF + 8, &ttl, 0)?;
    p.ttl = ttl;
    Ok(())
}
