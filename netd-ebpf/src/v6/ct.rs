//! IPv6 connection tracking (`CT_V6`), the same rules as `CT_V4` (see `crate::conntrack`):
//! both directions of a flow inserted as a pair with rollback, reply tuples unique
//! (`BPF_NOEXIST`, taken over only from the flow itself or an entry whose partner is gone), a
//! SYN on a closed flow starts over, the unanswered-flow cap with nf_conntrack's early drop,
//! state flags the userspace GC turns into timeouts, routed hops (hop limit) and fragments.
use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, TC_ACT_SHOT,
        bpf_fib_lookup, bpf_redir_neigh,
    },
    helpers::generated::{
        bpf_check_mtu, bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer,
    },
    programs::TcContext,
};
use netd_common::{
    CT_ACT_FIB, CT_ACT_HOSTFLOW, CT_ACT_NAT46, CT_ACT_PASS, CT_ACT_PEER, CT_F_ACKED, CT_F_CLOSING, CT_F_HOSTNAT,
    CT_F_L2, CT_F_REPLY, CT_F_SEEN, DropReason, EARLY_DROP_TRIES, IPPROTO_TCP,
    tcp_window::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    v6::{Addr6, CT_UNASSURED_MAX_V6, CtKey6, CtValue6, FragKey6},
};

use super::{
    maps::{CT_UNASSURED_V6, CT_V6, FRAGS_V6, NEW_FLOWS_HEAD_V6, NEW_FLOWS_V6, key_eq},
    nat,
    parse::Pkt6,
};
use crate::{maps::SCRATCH_FIB, stats, tcpwin};

const AF_INET6: u8 = 10;
const BPF_NOEXIST: u64 = 1;
const OK: i32 = TC_ACT_OK as i32;
const SHOT: i32 = TC_ACT_SHOT as i32;

#[inline(always)]
pub fn key_of(p: &Pkt6) -> CtKey6 {
    key6(&p.saddr, &p.daddr, p.sport, p.dport, p.proto)
}

/// A conntrack key, built word by word: `CtKey6 { .., _pad: [0; 3] }` is a call to a byte-loop
/// memset on the bpf target (no inline memset; see `conntrack::ct_key`). The protocol and the
/// padding are one 32-bit word (little-endian: the protocol is its low byte).
#[inline(always)]
pub fn key6(saddr: &Addr6, daddr: &Addr6, sport: u16, dport: u16, proto: u8) -> CtKey6 {
    let mut k = core::mem::MaybeUninit::<CtKey6>::uninit();
    let w = k.as_mut_ptr() as *mut u32;
    // SAFETY: ten aligned words cover the 40-byte key (layout asserted below); each is written.
    unsafe {
        for i in 0..4 {
            w.add(i).write(saddr[i]);
            w.add(4 + i).write(daddr[i]);
        }
        w.add(8).write(u32::from(sport) | (u32::from(dport) << 16));
        w.add(9).write(u32::from(proto));
        k.assume_init()
    }
}

const _: () = {
    assert!(core::mem::size_of::<CtKey6>() == 40 && core::mem::align_of::<CtKey6>() == 4);
    assert!(core::mem::offset_of!(CtKey6, daddr) == 16 && core::mem::offset_of!(CtKey6, sport) == 32);
    assert!(core::mem::offset_of!(CtKey6, dport) == 34 && core::mem::offset_of!(CtKey6, proto) == 36);
};

/// The entry of `k`, in the map (valid for this program run; may be deleted meanwhile).
#[inline(always)]
pub fn get(k: &CtKey6) -> Option<&'static CtValue6> {
    // SAFETY: map value pointer, valid for this program run.
    CT_V6.get_ptr(k).map(|v| unsafe { &*v })
}

#[inline(always)]
pub fn exists(k: &CtKey6) -> bool {
    CT_V6.get_ptr(k).is_some()
}

/// A conntrack entry in place (a map value pointer, valid for the program run): a packet's
/// window tracking, rewrite and timestamp all go through it, one lookup per packet (see
/// `conntrack::Entry`).
pub type Entry6 = *mut CtValue6;

/// The entry of `k` in place.
#[inline(always)]
pub fn get_mut(k: &CtKey6) -> Option<Entry6> {
    CT_V6.get_ptr_mut(k)
}

/// The entry of a packet's tuple as conntrack sees it (a TCP SYN on a closed flow starts a
/// new one: the old pair goes, the caller translates afresh).
#[inline(always)]
pub fn lookup_flow(p: &Pkt6, k: &CtKey6) -> Option<Entry6> {
    lookup_flow_in(p, k, false)
}

/// `lookup_flow` on the uplink: a SYN on a closed published-port flow whose translation would
/// come out the same again (`restart_published`) restarts the pair in place, as for IPv4
/// (`conntrack::lookup_flow_uplink`).
#[inline(always)]
pub fn lookup_flow_uplink(p: &Pkt6, k: &CtKey6) -> Option<Entry6> {
    lookup_flow_in(p, k, true)
}

#[inline(always)]
fn lookup_flow_in(p: &Pkt6, k: &CtKey6, uplink: bool) -> Option<Entry6> {
    let e = get_mut(k)?;
    // SAFETY: map value pointer, valid for this program run.
    let v = unsafe { &mut *e };
    if p.proto == IPPROTO_TCP && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && v.flags & CT_F_CLOSING != 0 {
        if uplink && restart_published(p, k, v) {
            return Some(e);
        }
        remove_pair(k, v);
        return None;
    }
    Some(e)
}

/// A client's SYN from a source port whose last connection to the same published port closed:
/// when the pair, removed, would be made again exactly as it is (`progs::dnat`'s two values,
/// the client's port kept), both entries start over in place, without the two deletes and two
/// inserts (see `conntrack::restart_published`, the IPv4 twin, for why and what is kept). A
/// NAT46 binding's flow (`CT_ACT_NAT64_PEER`) never matches: it goes as before.
/// A BPF-to-BPF call (its keys off the caller's frame).
#[inline(never)]
fn restart_published(p: &Pkt6, k: &CtKey6, v: &mut CtValue6) -> bool {
    use super::maps::{endpoint6, eq6, is_host_addr6, network6, published6};
    if v.action != CT_ACT_PEER
        || v.flags & (CT_F_REPLY | CT_F_L2 | CT_F_HOSTNAT) != 0
        || v.sport != p.sport
        || !eq6(&v.saddr, &p.saddr)
        || !is_host_addr6(&p.daddr)
    {
        return false;
    }
    let Some(pb) = published6(p.proto, &p.daddr, p.dport) else { return false };
    let Some(ep) = endpoint6(&pb.addr) else { return false };
    let Some(net) = network6(ep.net) else { return false };
    if !eq6(&v.daddr, &pb.addr)
        || v.dport != pb.port
        || v.ifindex != ep.ifindex
        || v.stats_slot != pb.stats_slot + 1
        || !crate::conntrack::mac_eq(&v.dmac, &ep.mac)
        || !crate::conntrack::mac_eq(&v.smac, &net.gateway_mac)
    {
        return false;
    }
    // Its reply entry, still paired with it and as `dnat` makes it.
    let rk = key6(&pb.addr, &p.saddr, pb.port, p.sport, p.proto);
    let Some(r) = get_mut(&rk) else { return false };
    // SAFETY: map value pointer, valid for this program run.
    let r = unsafe { &mut *r };
    if r.action != CT_ACT_FIB
        || r.flags & (CT_F_L2 | CT_F_HOSTNAT) != 0
        || !eq6(&r.saddr, &p.daddr)
        || !eq6(&r.daddr, &p.saddr)
        || r.sport != p.dport
        || r.dport != p.sport
        || r.stats_slot != 0
    {
        return false;
    }
    // Unanswered again (counted once: a flow whose client never acknowledged still counts).
    if v.flags & CT_F_ACKED != 0 {
        count_new(k);
    }
    let now = crate::conntrack::now();
    v.flags = 0;
    v.ack = 0;
    v.wnd = 0;
    v.last_seen_ns = now;
    r.flags = CT_F_REPLY;
    r.ack = 0;
    r.wnd = 0;
    r.last_seen_ns = now;
    true
}

/// Remove an entry and its other direction, if the partner still points back at it.
#[inline(always)]
pub fn remove_pair(k: &CtKey6, v: &CtValue6) {
    let partner = v.partner_key(k.proto);
    if let Some(pv) = get(&partner)
        && key_eq(&pv.partner_key(k.proto), k)
    {
        let _ = CT_V6.remove(&partner);
    }
    let _ = CT_V6.remove(k);
}

/// Insert both directions of a flow, or neither (see `conntrack::insert_pair`).
#[inline(always)]
pub fn insert_pair(k1: &CtKey6, v1: &mut CtValue6, k2: &CtKey6, v2: &mut CtValue6) -> bool {
    if !admit(k1) {
        return false;
    }
    // SAFETY: plain helper call.
    let now = crate::conntrack::now();
    v1.last_seen_ns = now;
    v2.last_seen_ns = now;
    v2.flags |= CT_F_REPLY;
    if CT_V6.insert(k1, &*v1, 0).is_err() {
        stats::count_drop(DropReason::CtInsert);
        return false;
    }
    if CT_V6.insert(k2, &*v2, BPF_NOEXIST).is_err() {
        let ours = match get(k2) {
            None => true,
            Some(o) => {
                let pk = o.partner_key(k2.proto);
                o.action != CT_ACT_HOSTFLOW && (key_eq(&pk, k1) || !exists(&pk))
            }
        };
        if !ours || CT_V6.insert(k2, &*v2, 0).is_err() {
            let _ = CT_V6.remove(k1);
            stats::count_drop(DropReason::CtInsert);
            return false;
        }
    }
    true
}

/// Count a new flow against `CT_UNASSURED_MAX_V6`; at the cap, early drop or refuse.
#[inline(always)]
fn admit(k: &CtKey6) -> bool {
    let Some(unassured) = CT_UNASSURED_V6.get_ptr_mut(0) else { return false };
    let Some(head) = NEW_FLOWS_HEAD_V6.get_ptr_mut(0) else { return false };
    // SAFETY: one-entry array slots, valid for this program run.
    let h = unsafe { *head };
    if unsafe { *unassured } as i64 >= CT_UNASSURED_MAX_V6 as i64 && !early_drop(h) {
        stats::count_drop(DropReason::CtFull);
        return false;
    }
    count_new(k);
    true
}

/// Count a new unanswered flow keyed `k` (`admit` without the cap: also for a flow restarted
/// in its own entries).
#[inline(always)]
fn count_new(k: &CtKey6) {
    let Some(unassured) = CT_UNASSURED_V6.get_ptr_mut(0) else { return };
    let Some(head) = NEW_FLOWS_HEAD_V6.get_ptr_mut(0) else { return };
    // SAFETY: one-entry array slots, valid for this program run (not atomic: the GC recounts).
    let h = unsafe { *head };
    unsafe {
        *unassured = (*unassured).wrapping_add(1);
        *head = h.wrapping_add(1);
    }
    let _ = NEW_FLOWS_V6.set((h % CT_UNASSURED_MAX_V6) as u32, k, 0);
}

/// nf_conntrack's early drop over the oldest recent new IPv6 flows (see
/// `conntrack::early_drop`).
#[inline(never)]
fn early_drop(head: u64) -> bool {
    for i in 0..EARLY_DROP_TRIES as u64 {
        let slot = ((head + i) % CT_UNASSURED_MAX_V6) as u32;
        let Some(k) = NEW_FLOWS_V6.get(slot) else { return false };
        let Some(v) = get(k) else { continue };
        if v.flags & CT_F_REPLY != 0 || v.action == CT_ACT_HOSTFLOW {
            continue;
        }
        let answered = if k.proto == IPPROTO_TCP {
            v.flags & CT_F_ACKED != 0
        } else {
            get(&v.partner_key(k.proto)).is_some_and(|r| r.flags & CT_F_SEEN != 0)
        };
        if answered {
            continue;
        }
        remove_pair(k, v);
        if let Some(u) = CT_UNASSURED_V6.get_ptr_mut(0) {
            // SAFETY: one-entry array slot.
            unsafe { *u = (*u).wrapping_sub(1) };
        }
        stats::count_drop(DropReason::CtEarlyDrop);
        return true;
    }
    false
}

/// Rewrite the packet to the entry's tuple and deliver it (see `conntrack::apply`): routed hops
/// decrement the hop limit; a packet that cannot make the hop (hop limit 1, or too big for the
/// egress device) goes to the kernel, which answers it (time exceeded, packet too big). A TCP
/// segment's window state comes first (`track`: a blind RST is dropped, counted), called from
/// the caller's frame: below `apply_entry` the call chains have no room for it.
#[inline(always)]
pub fn apply(ctx: &TcContext, p: &mut Pkt6, e: Entry6) -> i32 {
    // SAFETY: map value pointer, valid for this program run.
    if p.proto == IPPROTO_TCP && unsafe { (*e).action } != CT_ACT_HOSTFLOW && !track(ctx, p, e) {
        return SHOT;
    }
    // SAFETY: as above.
    if unsafe { (*e).action } == CT_ACT_NAT46 {
        // (Here, not in `apply_entry`: the chain below that has no room for its frame.)
        return super::nat46::to_v4(ctx, p, e);
    }
    apply_entry(ctx, p, e)
}

/// Apply the entry just inserted under `k` (by `insert_pair`), found again in place so the
/// packet updates the stored entry as every later one does.
#[inline(always)]
pub fn apply_new(ctx: &TcContext, p: &mut Pkt6, k: &CtKey6) -> i32 {
    match get_mut(k) {
        Some(e) => apply(ctx, p, e),
        None => {
            // Evicted again at once (a full LRU under a flood): no translation to apply.
            stats::count_drop(DropReason::CtInsert);
            SHOT
        }
    }
}

#[inline(never)]
fn apply_entry(ctx: &TcContext, p: &mut Pkt6, e: Entry6) -> i32 {
    // SAFETY: map value pointer, valid for this program run (racy updates are harmless).
    let v = unsafe { &*e };
    if v.action == CT_ACT_HOSTFLOW {
        return OK;
    }
    if v.action == CT_ACT_FIB {
        if p.hop <= 1 {
            return OK;
        }
        // The route this flow was last sent along, until `FIB_GEN` moves (a route, neighbour,
        // link or address change), as `CT_V4`'s entries keep it: no FIB lookup per packet.
        let cur = crate::maps::fib_gen();
        if cur != 0 && v.fib_gen == cur {
            // IPv6 routers never fragment: a packet longer than the route's MTU goes to the
            // kernel ("packet too big") unless the helper finds it fits (GSO, per segment).
            if ctx.len() > v.fib_mtu && crate::conntrack::mtu_exceeded(ctx, v.ifindex) {
                return OK;
            }
            if let Err(verdict) = translate(ctx, p, e, true) {
                return verdict;
            }
            if crate::nat::store_macs(ctx, entry_macs(v)).is_err() {
                return SHOT;
            }
            // SAFETY: plain helper call.
            return unsafe { bpf_redirect(v.ifindex, 0) as i32 };
        }
        let Some(fib) = SCRATCH_FIB.get_ptr_mut(0) else { return OK };
        // SAFETY: per-CPU map value, valid for this program run.
        let fib = unsafe { &mut *fib };
        let rc = fib_route(ctx, fib, &v.saddr, &v.daddr);
        // IPv6 routers never fragment: every packet too big gets "packet too big".
        if too_big(ctx, rc, fib) {
            return OK;
        }
        if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 && cur != 0 {
            // SAFETY: map value pointer, valid for this program run; racing CPUs write the
            // same route.
            let w = unsafe { &mut *e };
            w.ifindex = fib.ifindex;
            crate::conntrack::copy6(&mut w.dmac, &fib.dmac);
            crate::conntrack::copy6(&mut w.smac, &fib.smac);
            // SAFETY: union field the lookup wrote (the egress MTU on success).
            w.fib_mtu = u32::from(unsafe { fib.__bindgen_anon_1.mtu_result });
            w.fib_gen = cur;
        }
        if let Err(verdict) = translate(ctx, p, e, true) {
            return verdict;
        }
        return redirect_with(ctx, rc, fib);
    }
    let routed = v.action == CT_ACT_PEER && v.flags & CT_F_L2 == 0;
    if let Err(verdict) = translate(ctx, p, e, routed) {
        return verdict;
    }
    deliver(ctx, v)
}

#[inline(always)]
fn translate(ctx: &TcContext, p: &mut Pkt6, e: Entry6, routed: bool) -> Result<(), i32> {
    // SAFETY: map value pointer, valid for this program run.
    let v = unsafe { &*e };
    if p.more_fragments && !p.later_fragment {
        let fk = frag_key(p);
        let _ = FRAGS_V6.insert(&fk, v, 0);
    }
    if rewrite(ctx, p, v).is_err() {
        stats::count_drop(DropReason::Malformed);
        return Err(SHOT);
    }
    stats::count_port(v.stats_slot, ctx.len() as u64);
    touch(p, e);
    if routed {
        if p.hop <= 1 {
            return Err(OK);
        }
        if nat::dec_hop(ctx, p).is_err() {
            return Err(SHOT);
        }
    }
    Ok(())
}

#[inline(always)]
fn rewrite(ctx: &TcContext, p: &mut Pkt6, v: &CtValue6) -> Result<(), i64> {
    nat::set_addr(ctx, p, true, &v.saddr)?;
    nat::set_addr(ctx, p, false, &v.daddr)?;
    nat::set_port(ctx, p, true, v.sport)?;
    nat::set_port(ctx, p, false, v.dport)?;
    Ok(())
}

/// TCP window tracking for one segment of the flow stored under `k` (the shared logic of
/// `crate::tcpwin`, as `CT_V4`'s): false, a blind RST (counted). Only a RST looks up the other
/// direction's entry. A BPF-to-BPF call from `apply`'s caller.
#[inline(always)]
fn track(ctx: &TcContext, p: &Pkt6, e: Entry6) -> bool {
    track_at(ctx, p.l4 as usize, p.tcp_flags, e)
}

/// [`track`] by the segment's TCP header offset and flags (the NAT64 body has an IPv4 packet).
#[inline(never)]
pub fn track_at(ctx: &TcContext, l4: usize, tcp_flags: u8, e: Entry6) -> bool {
    // SAFETY: map value pointer, valid for this program run; racy updates of the window fields
    // and flag bits are harmless.
    let v = unsafe { &mut *e };
    // The receiver's entry, keyed by the reverse of this direction's translation (the key in
    // per-CPU scratch: this runs below `apply`'s callers, and 40 bytes of stack are too many).
    let (saddr, daddr, sport, dport) = (&v.saddr as *const Addr6, &v.daddr as *const Addr6, v.sport, v.dport);
    tcpwin::track(ctx, l4, tcp_flags, &mut v.flags, &mut v.ack, &mut v.wnd, || {
        let s = crate::maps::tcp_scratch()?;
        // SAFETY: the entry's own address fields, valid for this program run.
        // SAFETY: the entry's own address fields, valid for this program run.
        s.key6 = key6(unsafe { &*daddr }, unsafe { &*saddr }, dport, sport, IPPROTO_TCP);
        get(&s.key6).map(|r| (r.flags, r.ack, r.wnd))
    })
}

/// Timestamp and state flags (see `conntrack::touch`; a RST's effect is `track`'s).
#[inline(always)]
fn touch(p: &Pkt6, e: Entry6) {
    touch_at(p.proto, p.tcp_flags, e)
}

/// [`touch`] by protocol and TCP flags.
#[inline(always)]
pub fn touch_at(proto: u8, tcp_flags: u8, e: Entry6) {
    // SAFETY: map value pointer valid for this program run; racy updates are harmless.
    unsafe {
        (*e).last_seen_ns = crate::conntrack::now();
        let mut f = (*e).flags;
        let fl = tcp_flags;
        if proto == IPPROTO_TCP && fl & TCP_RST == 0 {
            if fl & TCP_FIN != 0 {
                f |= CT_F_CLOSING;
            }
            if fl & (TCP_SYN | TCP_ACK) == TCP_ACK {
                f |= CT_F_ACKED;
            }
        }
        let was = (*e).flags;
        let done = if proto == IPPROTO_TCP {
            was & CT_F_REPLY == 0 && was & CT_F_ACKED == 0 && f & CT_F_ACKED != 0
        } else {
            was & CT_F_REPLY != 0 && was & CT_F_SEEN == 0
        };
        (*e).flags = f | CT_F_SEEN;
        if done && let Some(u) = CT_UNASSURED_V6.get_ptr_mut(0) {
            *u = (*u).wrapping_sub(1);
        }
    }
}

/// The FIB parameters of `saddr -> daddr` from the packet's ingress device (tot_len 0: the
/// kernel checks GSO packets itself). Zeroed and filled word by word: `mem::zeroed()` and the
/// address assignments compiled to calls of byte loops (memset, 64 iterations; memmove, 16
/// each) on the bpf target, on every packet of a routed flow.
#[inline(always)]
fn fib_params(ctx: &TcContext, fib: &mut bpf_fib_lookup, saddr: &Addr6, daddr: &Addr6) {
    crate::conntrack::zero_fib(fib);
    fib.family = AF_INET6;
    fib.ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    // SAFETY: the union fields are four-word arrays inside the 64-byte parameters.
    unsafe {
        let src = fib.__bindgen_anon_3.ipv6_src.as_mut_ptr();
        let dst = fib.__bindgen_anon_4.ipv6_dst.as_mut_ptr();
        for i in 0..4 {
            src.add(i).write_volatile(saddr[i]);
            dst.add(i).write_volatile(daddr[i]);
        }
    }
}

#[inline(always)]
fn fib_route(ctx: &TcContext, fib: &mut bpf_fib_lookup, saddr: &Addr6, daddr: &Addr6) -> i64 {
    fib_params(ctx, fib, saddr, daddr);
    // SAFETY: valid ctx and params pointers.
    unsafe { fib_lookup(ctx.skb.skb.cast(), fib, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) }
}

/// The egress device of `saddr -> daddr` (route only, no neighbour), in the FIB scratch slot.
#[inline(always)]
pub fn fib_egress(ctx: &TcContext, saddr: &Addr6, daddr: &Addr6) -> Option<u32> {
    let fib = SCRATCH_FIB.get_ptr_mut(0)?;
    // SAFETY: per-CPU map value, valid for this program run.
    let fib = unsafe { &mut *fib };
    fib_params(ctx, fib, saddr, daddr);
    // BPF_FIB_LOOKUP_SKIP_NEIGH (1 << 3).
    let rc = unsafe { fib_lookup(ctx.skb.skb.cast(), fib, core::mem::size_of::<bpf_fib_lookup>() as i32, 1 << 3) };
    if rc == 0 || rc == 7 { Some(fib.ifindex) } else { None }
}

#[inline(always)]
fn too_big(ctx: &TcContext, rc: i64, fib: &bpf_fib_lookup) -> bool {
    if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 {
        return true;
    }
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 && rc != BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        return false;
    }
    let mut mtu_len: u32 = 0;
    // SAFETY: valid ctx and out pointer; BPF_MTU_CHK_SEGS.
    unsafe { bpf_check_mtu(ctx.skb.skb.cast(), fib.ifindex, &mut mtu_len, 0, 1) > 0 }
}

#[inline(always)]
pub fn redirect_with(ctx: &TcContext, rc: i64, fib: &mut bpf_fib_lookup) -> i32 {
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        if crate::nat::set_macs(ctx, &fib.dmac, &fib.smac).is_err() {
            return SHOT;
        }
        // SAFETY: plain helper call.
        return unsafe { bpf_redirect(fib.ifindex, 0) as i32 };
    }
    if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
        nh.nh_family = AF_INET6 as u32;
        nh.__bindgen_anon_1.ipv6_nh = unsafe { fib.__bindgen_anon_4.ipv6_dst };
        // SAFETY: valid params pointer.
        return unsafe {
            bpf_redirect_neigh(fib.ifindex, &mut nh, core::mem::size_of::<bpf_redir_neigh>() as i32, 0) as i32
        };
    }
    OK
}

/// An entry's `dmac` and `smac` as the 12 bytes of an Ethernet header's addresses (adjacent
/// in `CtValue6`, asserted in netd-common), read in place: one store for both.
#[inline(always)]
fn entry_macs(v: &CtValue6) -> &[u8; 12] {
    // SAFETY: `smac` follows `dmac` in the `#[repr(C)]` layout.
    unsafe { &*(v.dmac.as_ptr() as *const [u8; 12]) }
}

#[inline(always)]
pub fn deliver(ctx: &TcContext, v: &CtValue6) -> i32 {
    match v.action {
        CT_ACT_PEER => {
            if crate::nat::store_macs(ctx, entry_macs(v)).is_err() {
                return SHOT;
            }
            // SAFETY: plain helper call.
            unsafe { bpf_redirect_peer(v.ifindex, 0) as i32 }
        }
        CT_ACT_FIB => redirect_fib(ctx),
        _ => OK,
    }
}

/// Route the rewritten packet and redirect it to the egress device.
#[inline(always)]
fn redirect_fib(ctx: &TcContext) -> i32 {
    use crate::parse::IP_OFF;
    let Ok(saddr) = ctx.load::<Addr6>(IP_OFF + 8) else { return OK };
    let Ok(daddr) = ctx.load::<Addr6>(IP_OFF + 24) else { return OK };
    let Some(fib) = SCRATCH_FIB.get_ptr_mut(0) else { return OK };
    // SAFETY: per-CPU map value, valid for this program run.
    let fib = unsafe { &mut *fib };
    let rc = fib_route(ctx, fib, &saddr, &daddr);
    redirect_with(ctx, rc, fib)
}

#[inline(always)]
fn frag_key(p: &Pkt6) -> FragKey6 {
    FragKey6 { saddr: p.saddr, daddr: p.daddr, id: p.frag_id, proto: p.proto, _pad: [0; 3] }
}

/// Remember an untranslated first fragment (to a host address), so its later fragments are
/// told from fragments whose first one was never seen.
#[inline(always)]
pub fn frag_pass(p: &Pkt6) {
    let fk = frag_key(p);
    let v = CtValue6 { saddr: p.saddr, daddr: p.daddr, action: CT_ACT_PASS, ..Default::default() };
    let _ = FRAGS_V6.insert(&fk, &v, 0);
}

/// Record a first fragment's translation `v` (its flow's entry) for the fragments that follow.
#[inline(always)]
pub fn frag_record(p: &Pkt6, v: &CtValue6) {
    let fk = frag_key(p);
    let _ = FRAGS_V6.insert(&fk, v, 0);
}

/// A later fragment with no recorded translation: dropped and counted.
#[inline(always)]
pub fn frag_unknown() -> i32 {
    stats::count_drop(DropReason::FragUnknown);
    SHOT
}

/// A later fragment of a datagram whose first fragment was translated: same addresses, same
/// delivery, same routed hop. None: its first fragment was not seen.
#[inline(never)]
pub fn apply_fragment(ctx: &TcContext, p: &mut Pkt6) -> Option<i32> {
    let fk = frag_key(p);
    // SAFETY: map value pointer, valid for this program run.
    let v = unsafe { &*FRAGS_V6.get_ptr(&fk)? };
    if v.action == CT_ACT_NAT46 {
        // A NAT46 datagram's: IPv4 fragments into the v4-only sandbox.
        let verdict = super::nat46::frag_to_v4(ctx, p, v);
        if !p.more_fragments {
            let _ = FRAGS_V6.remove(&fk);
        }
        return Some(verdict);
    }
    let routed = v.action == CT_ACT_FIB || (v.action == CT_ACT_PEER && v.flags & CT_F_L2 == 0);
    if routed && p.hop <= 1 {
        return Some(OK);
    }
    if nat::set_addr(ctx, p, true, &v.saddr).is_err() || nat::set_addr(ctx, p, false, &v.daddr).is_err() {
        return Some(SHOT);
    }
    if routed && nat::dec_hop(ctx, p).is_err() {
        return Some(SHOT);
    }
    stats::count_port(v.stats_slot, ctx.len() as u64);
    let verdict = deliver(ctx, v);
    if !p.more_fragments {
        let _ = FRAGS_V6.remove(&fk);
    }
    Some(verdict)
}
