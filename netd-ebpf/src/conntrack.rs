//! Connection tracking and the translations it carries: each translated flow is two `CT_V4`
//! entries, one per direction, inserted as a pair (the first is removed again when the second
//! cannot be inserted). A packet whose tuple has an entry is rewritten to the entry's tuple and
//! delivered the way the entry says.
use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, TC_ACT_SHOT,
        bpf_fib_lookup, bpf_redir_neigh,
    },
    helpers::generated::{
        bpf_check_mtu, bpf_fib_lookup as fib_lookup, bpf_ktime_get_ns, bpf_redirect, bpf_redirect_neigh,
        bpf_redirect_peer,
    },
    programs::TcContext,
};
use netd_common::{
    CT_ACT_FIB, CT_ACT_HOSTFLOW, CT_ACT_PASS, CT_ACT_PEER, CT_F_CLOSING, CT_F_L2, CtKey, CtValue, DropReason,
    IPPROTO_TCP,
};

use crate::{
    maps::{CT_V4, FRAGS, FragKey, SCRATCH_FIB},
    nat,
    parse::{IP_OFF, Pkt},
    stats,
};

const AF_INET: u8 = 2;
const BPF_NOEXIST: u64 = 1;

#[inline(always)]
pub fn key_of(p: &Pkt) -> CtKey {
    CtKey { saddr: p.saddr, daddr: p.daddr, sport: p.sport, dport: p.dport, proto: p.proto, _pad: [0; 3] }
}

#[inline(always)]
pub fn lookup(k: &CtKey) -> Option<CtValue> {
    // SAFETY: read-only lookup, copied out.
    unsafe { CT_V4.get(k).copied() }
}

/// The entry of a packet's tuple, as conntrack sees it: a TCP SYN (no ACK) on a closed flow
/// starts a new connection (like a SYN in TIME_WAIT), so the old pair goes and the caller
/// translates afresh. Without this, a client reusing a source port would inherit a translation
/// whose reply tuple may since have been handed to another flow.
#[inline(always)]
pub fn lookup_flow(p: &Pkt, k: &CtKey) -> Option<CtValue> {
    let v = lookup(k)?;
    if p.proto == IPPROTO_TCP && p.tcp_flags & 0x12 == 0x02 && v.flags & CT_F_CLOSING != 0 {
        remove_pair(k, &v);
        return None;
    }
    Some(v)
}

/// Remove an entry and its other direction (the partner is keyed by the reverse of the
/// translated tuple), if the partner still points back at it.
#[inline(always)]
pub fn remove_pair(k: &CtKey, v: &CtValue) {
    let partner =
        CtKey { saddr: v.daddr, daddr: v.saddr, sport: v.dport, dport: v.sport, proto: k.proto, _pad: [0; 3] };
    if let Some(pv) = lookup(&partner)
        && pv.daddr == k.saddr
        && pv.dport == k.sport
        && pv.saddr == k.daddr
        && pv.sport == k.dport
    {
        let _ = CT_V4.remove(&partner);
    }
    let _ = CT_V4.remove(k);
}

#[inline(always)]
pub fn exists(k: &CtKey) -> bool {
    // SAFETY: read-only lookup.
    unsafe { CT_V4.get(k).is_some() }
}

/// Insert both directions of a flow, or neither.
#[inline(always)]
pub fn insert_pair(k1: &CtKey, v1: &CtValue, k2: &CtKey, v2: &CtValue) -> bool {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let v1 = &CtValue { last_seen_ns: now, ..*v1 };
    let v2 = &CtValue { last_seen_ns: now, ..*v2 };
    if CT_V4.insert(k1, v1, 0).is_err() {
        stats::count_drop(DropReason::CtInsert);
        return false;
    }
    if CT_V4.insert(k2, v2, 0).is_err() {
        let _ = CT_V4.remove(k1);
        stats::count_drop(DropReason::CtInsert);
        return false;
    }
    true
}

/// Record a host-originated flow's reply tuple so masquerade never reuses it (only when no
/// entry exists: a translated flow's own entry wins).
#[inline(always)]
pub fn note_host_flow(p: &Pkt) {
    let rk = key_of(p).reversed();
    if exists(&rk) {
        return;
    }
    let v = CtValue { action: CT_ACT_HOSTFLOW, ..Default::default() };
    let _ = CT_V4.insert(&rk, &v, BPF_NOEXIST);
}

/// Rewrite the packet to the entry's tuple and deliver it. Returns the TC verdict.
///
/// Delivery other than same-bridge (`CT_F_L2`) is a routed hop, as it is for the kernel: the TTL
/// is decremented, and a packet that cannot make the hop goes to the kernel instead, which
/// answers it (time exceeded; fragmentation needed for a DF packet too big for the egress
/// device). A packet leaving toward the FIB (from a sandbox) is handed over untranslated, so the
/// ICMP error comes from the gateway to the sandbox as with Docker.
///
/// A BPF-to-BPF call, not inlined: the FIB parameters and the callers' entries would not fit
/// one 512-byte frame in `netd_from_container`, which applies entries in several places.
#[inline(never)]
pub fn apply(ctx: &TcContext, p: &mut Pkt, k: &CtKey, v: &CtValue) -> i32 {
    if v.action == CT_ACT_HOSTFLOW {
        return TC_ACT_OK as i32;
    }
    if v.action == CT_ACT_FIB {
        if p.ttl <= 1 {
            return TC_ACT_OK as i32;
        }
        // The FIB parameters live in a per-CPU scratch slot: this function's frame and its
        // callers' must fit 512 bytes together.
        let Some(fib) = SCRATCH_FIB.get_ptr_mut(0) else { return TC_ACT_OK as i32 };
        // SAFETY: per-CPU map value, valid for this program run; nothing else runs on this CPU
        // meanwhile.
        let fib = unsafe { &mut *fib };
        let rc = fib_route(ctx, fib, v.saddr, v.daddr);
        if p.dont_fragment && too_big(ctx, rc, fib) {
            return TC_ACT_OK as i32;
        }
        if let Err(verdict) = translate(ctx, p, k, v, true) {
            return verdict;
        }
        return redirect_with(ctx, rc, fib);
    }
    let routed = v.action == CT_ACT_PEER && v.flags & CT_F_L2 == 0;
    if let Err(verdict) = translate(ctx, p, k, v, routed) {
        return verdict;
    }
    deliver(ctx, v)
}

/// Rewrite to the entry's tuple, account, and make the routed hop (TTL). Err: the verdict.
#[inline(always)]
fn translate(ctx: &TcContext, p: &mut Pkt, k: &CtKey, v: &CtValue, routed: bool) -> Result<(), i32> {
    // The first fragment of a fragmented datagram: later fragments (no L4 header) get the
    // same address translation and delivery.
    if p.more_fragments && !p.later_fragment {
        let fk = FragKey { saddr: p.saddr, daddr: p.daddr, id: p.ip_id, proto: p.proto, _pad: 0 };
        let _ = FRAGS.insert(&fk, v, 0);
    }
    if rewrite(ctx, p, v).is_err() {
        stats::count_drop(DropReason::Malformed);
        return Err(TC_ACT_SHOT as i32);
    }
    stats::count_port(v.stats_slot, ctx.len() as u64);
    touch(ctx, p, k);
    if routed {
        if p.ttl <= 1 {
            // Translated toward a sandbox: the kernel forwards it and answers time exceeded.
            return Err(TC_ACT_OK as i32);
        }
        if nat::dec_ttl(ctx, p).is_err() {
            return Err(TC_ACT_SHOT as i32);
        }
    }
    Ok(())
}

/// The route for `saddr -> daddr` (tot_len 0: the kernel checks the skb itself against the
/// egress MTU, which understands GSO packets).
#[inline(always)]
fn fib_route(ctx: &TcContext, fib: &mut bpf_fib_lookup, saddr: u32, daddr: u32) -> i64 {
    // SAFETY: plain-old-data; every field the lookup reads starts at zero (tot_len 0 above all).
    *fib = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    fib.__bindgen_anon_3.ipv4_src = saddr;
    fib.__bindgen_anon_4.ipv4_dst = daddr;
    // SAFETY: valid ctx and params pointers.
    unsafe { fib_lookup(ctx.skb.skb.cast(), fib, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) }
}

/// Whether the packet exceeds the egress device's MTU: the FIB's own check (non-GSO) and
/// `bpf_check_mtu` with `BPF_MTU_CHK_SEGS` (GSO segments too, and no slack).
#[inline(always)]
fn too_big(ctx: &TcContext, rc: i64, fib: &bpf_fib_lookup) -> bool {
    if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 {
        return true;
    }
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 && rc != BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        return false;
    }
    let mut mtu_len: u32 = 0;
    // SAFETY: valid ctx and out pointer; BPF_MTU_CHK_SEGS (1) requires mtu_len 0, len_diff 0.
    let r = unsafe { bpf_check_mtu(ctx.skb.skb.cast(), fib.ifindex, &mut mtu_len, 0, 1) };
    r > 0
}

/// Redirect along a FIB result looked up before the rewrite.
#[inline(always)]
fn redirect_with(ctx: &TcContext, rc: i64, fib: &mut bpf_fib_lookup) -> i32 {
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        if nat::set_macs(ctx, &fib.dmac, &fib.smac).is_err() {
            return TC_ACT_SHOT as i32;
        }
        // SAFETY: plain helper call.
        return unsafe { bpf_redirect(fib.ifindex, 0) as i32 };
    }
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
        nh.nh_family = AF_INET as u32;
        nh.__bindgen_anon_1.ipv4_nh = unsafe { fib.__bindgen_anon_4.ipv4_dst };
        // SAFETY: valid params pointer.
        return unsafe {
            bpf_redirect_neigh(fib.ifindex, &mut nh, core::mem::size_of::<bpf_redir_neigh>() as i32, 0) as i32
        };
    }
    TC_ACT_OK as i32
}

/// A later fragment of a datagram whose first fragment was translated: same addresses, same
/// delivery (it carries no ports). Returns None when the first fragment was not seen.
#[inline(always)]
pub fn apply_fragment(ctx: &TcContext, p: &mut Pkt) -> Option<i32> {
    let fk = FragKey { saddr: p.saddr, daddr: p.daddr, id: p.ip_id, proto: p.proto, _pad: 0 };
    // SAFETY: read-only lookup, copied out.
    let v = unsafe { FRAGS.get(&fk).copied() }?;
    if nat::set_addr(ctx, p, true, v.saddr).is_err() || nat::set_addr(ctx, p, false, v.daddr).is_err() {
        return Some(TC_ACT_SHOT as i32);
    }
    stats::count_port(v.stats_slot, ctx.len() as u64);
    if !p.more_fragments {
        let _ = FRAGS.remove(&fk);
    }
    Some(deliver(ctx, &v))
}

#[inline(always)]
fn rewrite(ctx: &TcContext, p: &mut Pkt, v: &CtValue) -> Result<(), i64> {
    nat::set_addr(ctx, p, true, v.saddr)?;
    nat::set_addr(ctx, p, false, v.daddr)?;
    nat::set_port(ctx, p, true, v.sport)?;
    nat::set_port(ctx, p, false, v.dport)?;
    Ok(())
}

/// Refresh the entry's timestamp; remember a TCP close so userspace can expire it early.
#[inline(always)]
fn touch(_ctx: &TcContext, p: &Pkt, k: &CtKey) {
    if let Some(e) = CT_V4.get_ptr_mut(k) {
        // SAFETY: map value pointer valid for this program run; racy updates of a timestamp
        // and a flag bit are harmless.
        unsafe {
            (*e).last_seen_ns = bpf_ktime_get_ns();
            if p.proto == IPPROTO_TCP && p.tcp_flags & 0x05 != 0 {
                (*e).flags |= CT_F_CLOSING;
            }
        }
    }
}

#[inline(always)]
pub fn deliver(ctx: &TcContext, v: &CtValue) -> i32 {
    match v.action {
        CT_ACT_PEER => {
            if nat::set_macs(ctx, &v.dmac, &v.smac).is_err() {
                return TC_ACT_SHOT as i32;
            }
            // SAFETY: plain helper call.
            unsafe { bpf_redirect_peer(v.ifindex, 0) as i32 }
        }
        CT_ACT_FIB => redirect_fib(ctx),
        CT_ACT_PASS => TC_ACT_OK as i32,
        _ => TC_ACT_OK as i32,
    }
}

/// Route the (rewritten) packet with the kernel's FIB and redirect it to the egress device,
/// bypassing netfilter's FORWARD chain. Anything the FIB cannot resolve goes up the stack.
#[inline(always)]
pub fn redirect_fib(ctx: &TcContext) -> i32 {
    let Ok(saddr) = ctx.load::<u32>(IP_OFF + 12) else { return TC_ACT_OK as i32 };
    let Ok(daddr) = ctx.load::<u32>(IP_OFF + 16) else { return TC_ACT_OK as i32 };
    // SAFETY: zeroed plain-old-data struct.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    // tot_len 0: the kernel checks the MTU against the skb itself, which understands GSO
    // packets (a 64 KB TSO segment is fine; an explicit length would get FRAG_NEEDED).
    fib.__bindgen_anon_3.ipv4_src = saddr;
    fib.__bindgen_anon_4.ipv4_dst = daddr;
    // SAFETY: valid ctx and params pointers.
    let rc = unsafe { fib_lookup(ctx.skb.skb.cast(), &mut fib, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) };
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        if nat::set_macs(ctx, &fib.dmac, &fib.smac).is_err() {
            return TC_ACT_SHOT as i32;
        }
        // SAFETY: plain helper call.
        return unsafe { bpf_redirect(fib.ifindex, 0) as i32 };
    }
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
        nh.nh_family = AF_INET as u32;
        nh.__bindgen_anon_1.ipv4_nh = unsafe { fib.__bindgen_anon_4.ipv4_dst };
        // SAFETY: valid params pointer.
        return unsafe {
            bpf_redirect_neigh(fib.ifindex, &mut nh, core::mem::size_of::<bpf_redir_neigh>() as i32, 0) as i32
        };
    }
    TC_ACT_OK as i32
}
