//! Packet rewriting with incremental checksum updates: computed here for the IPv4 header and,
//! where the programs can read `ip_summed` (`kctx`), for TCP and UDP; else `l4_csum_replace`
//! (the pseudo-header flag when an address changes, `MARK_MANGLED_0` so a UDP checksum of 0
//! stays "none").
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::generated::bpf_csum_update,
    programs::TcContext,
};
use netd_common::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    kctx::{self, CHECKSUM_COMPLETE, CHECKSUM_PARTIAL},
    maps::{SCRATCH_HEAD, SCRATCH_L4, SCRATCH_L4_AT, SCRATCH_MID_AT},
    parse::{HEAD_COPIED, HEAD_MACS_DONE, Pkt, SCRATCH_FLAGS},
};

#[inline(always)]
fn l4_csum_off(p: &Pkt) -> Option<usize> {
    match p.proto {
        IPPROTO_TCP => Some(p.l4 as usize + 16),
        IPPROTO_UDP => Some(p.l4 as usize + 6),
        IPPROTO_ICMP => Some(p.l4 as usize + 2),
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
    let off = p.l3 as usize + if src { 12 } else { 16 };
    // TCP/UDP checksums cover the pseudo-header (addresses); ICMP's does not.
    if !p.later_fragment && (p.proto == IPPROTO_TCP || (p.proto == IPPROTO_UDP && !p.udp_csum_zero)) {
        let coff = l4_csum_off(p).unwrap_or(0);
        let mut flags = BPF_F_PSEUDO_HDR as u64 | 4;
        if p.proto == IPPROTO_UDP {
            flags |= BPF_F_MARK_MANGLED_0 as u64;
        }
        ctx.l4_csum_replace(coff, old as u64, new as u64, flags)?;
    }
    ctx.l3_csum_replace(p.l3 as usize + 10, old as u64, new as u64, 4)?;
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
    let off = if p.proto == IPPROTO_ICMP { p.l4 as usize + 4 } else { p.l4 as usize + if src { 0 } else { 2 } };
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

/// Set both Ethernet addresses (12 contiguous, 4-aligned bytes: destination, then source; a
/// conntrack entry's `dmac` and `smac`) in one store, unless `set_tuple` wrote them already
/// with the headers (`HEAD_MACS_DONE`, which this consumes).
///
/// The bytes go through `SCRATCH_L4` (its bytes 2..14, with half-word copies) rather than to
/// `bpf_skb_store_bytes` in place: that helper copies with `rep movsb`, and an entry's MACs
/// straddle a cache line in one entry of eight (`CT_V4`'s elements are 120 bytes, so a value's
/// offset in its line cycles through the multiples of 8), which cost that copy ~45 ns a packet
/// on this VM (`netd-bench micro`, bench/report.md "seventh pass").
#[inline(always)]
pub fn set_macs12(ctx: &TcContext, macs: &[u8; 12]) -> Result<(), i64> {
    let Some(h) = SCRATCH_L4.get_ptr_mut(0) else { return Err(0) };
    let b = h as *mut u8;
    // SAFETY: per-CPU map value, valid for this program run (64 bytes); `macs` is 4-aligned
    // (asserted in netd-common for the callers' entries), six half-words.
    unsafe {
        let f = *b.add(SCRATCH_FLAGS);
        if f & HEAD_MACS_DONE != 0 {
            *b.add(SCRATCH_FLAGS) = f & !HEAD_MACS_DONE;
            return Ok(());
        }
        store_staged(ctx, b, macs)
    }
}

/// [`set_macs12`] for the IPv6 programs, which never write the MACs with the headers.
#[inline(always)]
pub fn store_macs(ctx: &TcContext, macs: &[u8; 12]) -> Result<(), i64> {
    let Some(h) = SCRATCH_L4.get_ptr_mut(0) else { return Err(0) };
    // SAFETY: as in `set_macs12`.
    unsafe { store_staged(ctx, h as *mut u8, macs) }
}

/// The MACs staged in the slot ([`stage_macs`]) and stored into the frame's first 12 bytes.
///
/// # Safety
/// As [`stage_macs`].
#[inline(always)]
unsafe fn store_staged(ctx: &TcContext, b: *mut u8, macs: &[u8; 12]) -> Result<(), i64> {
    // SAFETY: the caller's; the slot's bytes 2..14.
    unsafe {
        stage_macs(b, macs);
        ctx.store(0, &*(b.add(SCRATCH_HEAD) as *const [u8; 12]), 0)
    }
}

/// The MACs into the slot's bytes 2..14 (`SCRATCH_HEAD`), where the frame's are.
///
/// # Safety
/// `b` is `SCRATCH_L4`'s slot; `macs` 2-aligned.
#[inline(always)]
unsafe fn stage_macs(b: *mut u8, macs: &[u8; 12]) {
    let m = macs.as_ptr() as *const u16;
    // SAFETY: the caller's.
    unsafe {
        let d = b.add(SCRATCH_HEAD) as *mut u16;
        for i in 0..6 {
            *d.add(i) = *m.add(i);
        }
    }
}

/// A routed hop: decrement the TTL (the caller has checked it is above 1), fixing the header
/// checksum over the 16-bit word the TTL shares with the protocol.
#[inline(always)]
pub fn dec_ttl(ctx: &TcContext, p: &mut Pkt) -> Result<(), i64> {
    let old = u16::from_ne_bytes([p.ttl, p.proto]);
    let ttl = p.ttl - 1;
    let new = u16::from_ne_bytes([ttl, p.proto]);
    ctx.l3_csum_replace(p.l3 as usize + 10, old as u64, new as u64, 2)?;
    ctx.store(p.l3 as usize + 8, &ttl, 0)?;
    p.ttl = ttl;
    Ok(())
}

/// One's complement sum folded to 32 bits (a `__wsum`, as `bpf_l4_csum_replace` takes a diff).
#[inline(always)]
fn fold32(mut s: u64) -> u32 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s as u32
}

/// Folded to 16 bits.
#[inline(always)]
fn fold16(s: u32) -> u16 {
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// TTL, protocol, header checksum and both addresses: the bytes of the IPv4 header NAT and a
/// routed hop change (8..20), written with one store.
#[repr(C)]
struct IpMid {
    ttl: u8,
    proto: u8,
    check: u16,
    saddr: u32,
    daddr: u32,
}

/// Rewrite a packet with ports (TCP, UDP, ICMP echo; not a later fragment) to the tuple
/// `saddr:sport -> daddr:dport`, and decrement its TTL when `dec_ttl` (a routed hop; the caller
/// checked it is above 1), with as few helper calls as the checksums allow. Where the programs
/// read `ip_summed` (`kctx`), TCP and UDP get their checksum computed here ([`set_l4`]) and the
/// IPv4 header's middle (TTL, checksum, addresses) and the L4 header up to its checksum are
/// rewritten in `SCRATCH_L4` and written back with one store when the IPv4 header has no
/// options (they are adjacent then), two otherwise; with `macs` (not null: the 12 bytes of the
/// Ethernet addresses the packet leaves with, from its entry) and the common frame (the parser
/// copied its head, `HEAD_COPIED`) that one store starts at the frame's first byte and takes the
/// MACs too (`HEAD_MACS_DONE`: `set_macs12` then leaves them). Without `ip_summed`: the IPv4 header's
/// middle with one store, and the L4 checksum by difference (one call for the addresses, which
/// its pseudo-header covers, one for the ports, which a CHECKSUM_PARTIAL packet's checksum
/// field must not see) and a store for the ports.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn set_tuple(
    ctx: &TcContext,
    p: &mut Pkt,
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    dec_ttl: bool,
    macs: *const [u8; 12],
) -> Result<(), i64> {
    let addrs = p.saddr != saddr || p.daddr != daddr;
    // The L4 checksum's difference for the addresses (its pseudo-header), before they change.
    let adiff = if addrs { fold32(!p.saddr as u64 + saddr as u64 + !p.daddr as u64 + daddr as u64) } else { 0 };
    let kl4 = (p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP) && kctx::available();
    if kl4 {
        // (The branch not taken by a `.rodata` constant is dead code to the verifier.)
        return if set_l4(ctx, p, saddr, daddr, dec_ttl, addrs, adiff, (sport as u32) | ((dport as u32) << 16), macs) {
            Ok(())
        } else {
            Err(0)
        };
    }
    if addrs || dec_ttl {
        let (mid, ttl) = ip_mid(p, saddr, daddr, dec_ttl);
        ctx.store(p.l3 as usize + 8, &mid, 0)?;
        p.ttl = ttl;
        p.ip_csum = mid.check;
        p.saddr = saddr;
        p.daddr = daddr;
    }
    // The L4 header last: nothing of the above is live across its calls (the 512-byte stack
    // of the longest call chains has no room left).
    let new = (sport as u32) | ((dport as u32) << 16);
    if p.proto == IPPROTO_ICMP {
        // The echo id: only one of the two "ports" is in the packet.
        set_port(ctx, p, true, sport)?;
        set_port(ctx, p, false, dport)?;
    } else if p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP {
        // Without the kernel's `ip_summed` (no kfunc or no BTF, see `kctx`): the helpers,
        // which read it.
        let csum = !(p.proto == IPPROTO_UDP && p.udp_csum_zero);
        let mangled = if p.proto == IPPROTO_UDP { BPF_F_MARK_MANGLED_0 as u64 } else { 0 };
        let coff = l4_csum_off(p).unwrap_or(0);
        if p.sport != sport || p.dport != dport {
            let old = (p.sport as u32) | ((p.dport as u32) << 16);
            if csum {
                ctx.l4_csum_replace(coff, old as u64, new as u64, 4 | mangled)?;
            }
            ctx.store(p.l4 as usize, &new, 0)?;
            p.sport = sport;
            p.dport = dport;
        }
        if addrs && csum {
            // Size 0: `to` is the difference itself.
            ctx.l4_csum_replace(coff, 0, adiff as u64, BPF_F_PSEUDO_HDR as u64 | mangled)?;
        }
    } else if p.sport != sport || p.dport != dport {
        ctx.store(p.l4 as usize, &new, 0)?;
        p.sport = sport;
        p.dport = dport;
    }
    Ok(())
}

/// [`set_tuple`] for `conntrack::fast_v4`: the common frame (Ethernet, IPv4 without options,
/// TCP's first 20 bytes or UDP's 8 in the linear data; TTL above 1, checked by the caller)
/// rewritten to `v`'s tuple with the TTL decremented and `v`'s MACs, read and written straight
/// in the linear data (the verifier's prologue makes a cloned head writable first, as
/// `bpf_skb_store_bytes` does). The checksums as [`set_l4`] computes them, from the packet's
/// `ip_summed` (`kctx`: the caller checked it is available). False: the frame is shorter than
/// that (nothing written).
#[inline(always)]
pub fn rewrite_direct(ctx: &TcContext, udp: bool, v: &netd_common::CtValue) -> bool {
    const IP: usize = crate::parse::IP_OFF;
    const L4: usize = IP + 20;
    let coff = if udp { L4 + 6 } else { L4 + 16 };
    let data = ctx.data();
    if data + L4 + 20 > ctx.data_end() {
        return false;
    }
    // SAFETY (each read): within the first L4 + 20 bytes, checked above.
    let (tp, ip_csum, saddr, daddr, old, field) = unsafe {
        (
            *((data + IP + 8) as *const u16),
            *((data + IP + 10) as *const u16),
            *((data + IP + 12) as *const u32),
            *((data + IP + 16) as *const u32),
            *((data + L4) as *const u32),
            *((data + coff) as *const u16),
        )
    };
    // The TTL is the low byte of its word as read, above 1: no borrow.
    let ntp = tp - 1;
    let new = (v.sport as u32) | ((v.dport as u32) << 16);
    let ip_new = !fold16(fold32(
        (!ip_csum) as u64
            + (!tp) as u64
            + ntp as u64
            + (!saddr) as u64
            + v.saddr as u64
            + (!daddr) as u64
            + v.daddr as u64,
    ));
    let adiff = if saddr != v.saddr || daddr != v.daddr {
        fold32((!saddr) as u64 + v.saddr as u64 + (!daddr) as u64 + v.daddr as u64)
    } else {
        0
    };
    let check = l4_check(ctx, kctx::ip_summed(ctx), udp, field, adiff, old, new);
    // The packet pointers again (a helper call above).
    let data = ctx.data();
    if data + L4 + 20 > ctx.data_end() {
        return false;
    }
    let m = v.dmac.as_ptr() as *const u32;
    // SAFETY: within the bytes checked above; `dmac`/`smac` are 12 adjacent, 4-aligned bytes of
    // the entry (netd-common asserts the layout).
    unsafe {
        *(data as *mut u32) = *m;
        *((data + 4) as *mut u32) = *m.add(1);
        *((data + 8) as *mut u32) = *m.add(2);
        *((data + IP + 8) as *mut u16) = ntp;
        *((data + IP + 10) as *mut u16) = ip_new;
        *((data + IP + 12) as *mut u32) = v.saddr;
        *((data + IP + 16) as *mut u32) = v.daddr;
        *((data + L4) as *mut u32) = new;
        *((data + coff) as *mut u16) = check;
    }
    true
}

/// The IPv4 header's bytes 8..20 for the new addresses (and TTL), with the header checksum
/// updated by RFC 1624 (HC' = ~(~HC + ~m + m'), over every changed 16-bit word); and the new TTL.
#[inline(always)]
fn ip_mid(p: &Pkt, saddr: u32, daddr: u32, dec_ttl: bool) -> (IpMid, u8) {
    let ttl = if dec_ttl { p.ttl - 1 } else { p.ttl };
    let old_tp = u16::from_ne_bytes([p.ttl, p.proto]) as u32;
    let new_tp = u16::from_ne_bytes([ttl, p.proto]) as u32;
    let s = (!p.ip_csum) as u64
        + (!(old_tp as u16)) as u64
        + new_tp as u64
        + (!p.saddr) as u64
        + saddr as u64
        + (!p.daddr) as u64
        + daddr as u64;
    let check = !fold16(fold32(s));
    (IpMid { ttl, proto: p.proto, check, saddr, daddr }, ttl)
}

/// The new L4 checksum field of a TCP or UDP packet (`udp`) whose field reads `field`, for an
/// address change `adiff` (the pseudo-header's difference, 0 for none) and ports `old` -> `new`
/// (as read, source in the low half), by the packet's `ip_summed` (`summed`): a CHECKSUM_PARTIAL
/// field holds the pseudo-header's sum (the device or the stack adds the rest), so only the
/// addresses go into it; any other holds the whole checksum, which takes both differences, and a
/// CHECKSUM_COMPLETE packet's `skb->csum` follows the field's change by the addresses
/// (`bpf_csum_update`). A UDP checksum of 0 ("none") stays 0; one that comes out 0 is sent as
/// 0xffff. [`set_l4`] and [`rewrite_direct`] both compute it here.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn l4_check(ctx: &TcContext, summed: u8, udp: bool, field: u16, adiff: u32, old: u32, new: u32) -> u16 {
    if udp && field == 0 {
        return 0;
    }
    let check = if summed == CHECKSUM_PARTIAL {
        fold16(fold32(field as u64 + adiff as u64))
    } else {
        let pdiff = if old != new { (!old) as u64 + new as u64 } else { 0 };
        !fold16(fold32((!field) as u64 + adiff as u64 + pdiff))
    };
    if summed == CHECKSUM_COMPLETE && adiff != 0 {
        // skb->csum - adiff (the ports' change and the field's share of it cancel out).
        // SAFETY: valid ctx.
        unsafe { bpf_csum_update(ctx.skb.skb.cast(), !adiff) };
    }
    if udp && check == 0 { 0xffff } else { check }
}

/// [`set_tuple`] for TCP and UDP when the program can read the packet's `ip_summed` (`kctx`):
/// the L4 checksum computed here, and the IPv4 header's middle and the L4 header from the ports
/// to the checksum rewritten in `SCRATCH_L4` (where the parser put the L4 header,
/// `Pkt::l4_copied`) and written back with one store when the IPv4 header has no options (two
/// otherwise; from the frame's first byte with the MACs when `macs` is given and the parser
/// copied the frame's head, see [`set_tuple`]), where `bpf_l4_csum_replace` took a call for the
/// ports, one for the addresses and a store for the ports, and the IPv4 header a store of its
/// own.
///
/// The arithmetic is `bpf_l4_csum_replace`'s: a CHECKSUM_PARTIAL packet's field holds the
/// pseudo-header's sum (the device or the stack adds the rest), so only the addresses go into
/// it; any other holds the whole checksum, which takes both differences, and a
/// CHECKSUM_COMPLETE packet's `skb->csum` follows the field's change by the addresses
/// (`bpf_csum_update`). A UDP checksum of 0 ("none") stays 0, one that comes out 0 is sent as
/// 0xffff. False: the header could not be read or written.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn set_l4(
    ctx: &TcContext,
    p: &mut Pkt,
    saddr: u32,
    daddr: u32,
    dec_ttl: bool,
    addrs: bool,
    adiff: u32,
    new: u32,
    macs: *const [u8; 12],
) -> bool {
    let Some(h) = SCRATCH_L4.get_ptr_mut(0) else { return false };
    // SAFETY: per-CPU map value, valid for this program run, filled by the parser.
    let h = unsafe { &mut *h };
    const M: usize = SCRATCH_MID_AT;
    let b = h as *const [u32; 16] as *const u8;
    let mid = addrs || dec_ttl;
    if mid {
        let (m, ttl) = ip_mid(p, saddr, daddr, dec_ttl);
        h[M] = u32::from(m.ttl) | (u32::from(m.proto) << 8) | (u32::from(m.check) << 16);
        h[M + 1] = m.saddr;
        h[M + 2] = m.daddr;
        p.ttl = ttl;
        p.ip_csum = m.check;
        p.saddr = saddr;
        p.daddr = daddr;
    }
    let old = (p.sport as u32) | ((p.dport as u32) << 16);
    // The IPv4 header's middle and the L4 header adjacent (no options): one store for both.
    let adjacent = p.l4 as usize == p.l3 as usize + 20;
    if !addrs && old == new {
        // A TTL alone (a routed hop without NAT).
        // SAFETY: the slot's 12 bytes from word M.
        return !mid || ctx.store(p.l3 as usize + 8, unsafe { &*(b.add(M * 4) as *const [u8; 12]) }, 0).is_ok();
    }
    if !p.l4_copied {
        return false;
    }
    if !mid && adjacent {
        // The ports alone: the IPv4 header's bytes as they are, for the one store.
        h[M] = u32::from(p.ttl) | (u32::from(p.proto) << 8) | (u32::from(p.ip_csum) << 16);
        h[M + 1] = p.saddr;
        h[M + 2] = p.daddr;
    }
    let udp = p.proto == IPPROTO_UDP;
    const L: usize = SCRATCH_L4_AT;
    let field = if udp { (h[L + 1] >> 16) as u16 } else { h[L + 4] as u16 };
    let check = l4_check(ctx, p.summed, udp, field, adiff, old, new);
    p.sport = new as u16;
    p.dport = (new >> 16) as u16;
    h[L] = new;
    if udp {
        // Length, then checksum.
        h[L + 1] = (h[L + 1] & 0xffff) | ((check as u32) << 16);
    } else {
        // Checksum, then the urgent pointer.
        h[L + 4] = (h[L + 4] & 0xffff_0000) | check as u32;
    }
    // SAFETY (each store's source): bytes of the 64-byte slot: from the frame's first
    // (`SCRATCH_HEAD`: MACs, EtherType, the IPv4 header, TCP's first 18 bytes through the
    // checksum or UDP's 8), from the IPv4 header's middle (word M, 12 bytes, then the L4
    // header's) or from the L4 header's first (word L).
    let bm = h as *mut [u32; 16] as *mut u8;
    // SAFETY: the slot's flags byte.
    if adjacent && !macs.is_null() && unsafe { *bm.add(SCRATCH_FLAGS) } & HEAD_COPIED != 0 {
        // The whole head in one store, the MACs too (copied into the slot as `set_macs12`
        // does, which then leaves them).
        // SAFETY: `macs` is a live entry's 12 MAC bytes, 4-aligned (netd-common asserts it).
        unsafe { stage_macs(bm, &*macs) };
        let r = if udp {
            ctx.store(0, unsafe { &*(b.add(SCRATCH_HEAD) as *const [u8; 42]) }, 0)
        } else {
            ctx.store(0, unsafe { &*(b.add(SCRATCH_HEAD) as *const [u8; 52]) }, 0)
        };
        if r.is_err() {
            return false;
        }
        // SAFETY: the slot's flags byte.
        unsafe { *bm.add(SCRATCH_FLAGS) = HEAD_MACS_DONE };
        return true;
    }
    if adjacent {
        let r = if udp {
            ctx.store(p.l3 as usize + 8, unsafe { &*(b.add(M * 4) as *const [u8; 20]) }, 0)
        } else {
            ctx.store(p.l3 as usize + 8, unsafe { &*(b.add(M * 4) as *const [u8; 30]) }, 0)
        };
        return r.is_ok();
    }
    if mid && ctx.store(p.l3 as usize + 8, unsafe { &*(b.add(M * 4) as *const [u8; 12]) }, 0).is_err() {
        return false;
    }
    let r = if udp {
        ctx.store(p.l4 as usize, unsafe { &*(b.add(L * 4) as *const [u8; 8]) }, 0)
    } else {
        ctx.store(p.l4 as usize, unsafe { &*(b.add(L * 4) as *const [u8; 18]) }, 0)
    };
    r.is_ok()
}
