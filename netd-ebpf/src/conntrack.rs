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
        bpf_check_mtu, bpf_fib_lookup as fib_lookup, bpf_ktime_get_coarse_ns, bpf_redirect, bpf_redirect_neigh,
        bpf_redirect_peer,
    },
    programs::TcContext,
};
use netd_common::{
    CT_ACT_FIB, CT_ACT_HOSTFLOW, CT_ACT_PASS, CT_ACT_PEER, CT_F_ACKED, CT_F_CLOSING, CT_F_HOSTNAT, CT_F_L2, CT_F_REPLY,
    CT_F_SEEN, CT_UNASSURED_MAX, CtKey, CtValue, DropReason, EARLY_DROP_TRIES, IPPROTO_TCP,
    tcp_window::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

use crate::{
    maps::{CT_UNASSURED, CT_V4, FRAGS, FragKey, HOST_NAT, NEW_FLOWS, NEW_FLOWS_HEAD, SCRATCH_FIB, fib_gen},
    nat,
    parse::{IP_OFF, Pkt},
    snat, stats, tcpwin,
};

const AF_INET: u8 = 2;

/// The entries' clock: CLOCK_MONOTONIC as the GC reads it, at the kernel's tick resolution
/// (`bpf_ktime_get_coarse_ns` reads no clock source; the timeouts it serves are seconds).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_coarse_ns() }
}
const BPF_NOEXIST: u64 = 1;

/// A zeroed conntrack entry, written as seven words: `CtValue::default()` is a call to a byte
/// loop on the bpf target (no inline memset), 56 iterations per entry. Volatile, so the stores
/// are not merged back into that call. See [`ct_value!`].
#[inline(always)]
pub fn ct_zero() -> CtValue {
    const _: () = assert!(core::mem::size_of::<CtValue>() == 56 && core::mem::align_of::<CtValue>() == 8);
    let mut v = core::mem::MaybeUninit::<CtValue>::uninit();
    let w = v.as_mut_ptr() as *mut u64;
    // SAFETY: seven aligned words cover the entry; all-zero is a valid `CtValue`.
    unsafe {
        for i in 0..7 {
            w.add(i).write_volatile(0);
        }
        v.assume_init()
    }
}

/// `CtValue { field: value, .., ..Default::default() }` without the byte-loop memset: a
/// [`ct_zero`] entry with the given fields set.
#[macro_export]
macro_rules! ct_value {
    ($($f:ident : $v:expr),* $(,)?) => {{
        let mut v = $crate::conntrack::ct_zero();
        $( v.$f = $v; )*
        v
    }};
}

/// A conntrack key, built without zeroing its padding byte by byte: the bpf target has no
/// inline memset, so `CtKey { .., _pad: [0; 3] }` costs a call to a byte loop. The protocol
/// and the padding are one 32-bit word here (little-endian: the protocol is its low byte).
#[inline(always)]
pub fn ct_key(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> CtKey {
    let mut k = core::mem::MaybeUninit::<CtKey>::uninit();
    let w = k.as_mut_ptr() as *mut u32;
    // SAFETY: four aligned words cover the 16-byte key (layout asserted below); each is written.
    unsafe {
        w.write(saddr);
        w.add(1).write(daddr);
        w.add(2).write(u32::from(sport) | (u32::from(dport) << 16));
        w.add(3).write(u32::from(proto));
        k.assume_init()
    }
}

const _: () = {
    assert!(core::mem::size_of::<CtKey>() == 16 && core::mem::align_of::<CtKey>() == 4);
    assert!(core::mem::offset_of!(CtKey, daddr) == 4 && core::mem::offset_of!(CtKey, sport) == 8);
    assert!(core::mem::offset_of!(CtKey, dport) == 10 && core::mem::offset_of!(CtKey, proto) == 12);
};

/// `k` reversed (the other direction's tuple).
#[inline(always)]
pub fn reversed(k: &CtKey) -> CtKey {
    ct_key(k.daddr, k.saddr, k.dport, k.sport, k.proto)
}

#[inline(always)]
pub fn key_of(p: &Pkt) -> CtKey {
    ct_key(p.saddr, p.daddr, p.sport, p.dport, p.proto)
}

/// The entry of `k` in place (a map value, valid for the program run; never copied out: each
/// copy costs 56 bytes of a call chain's 512).
#[inline(always)]
pub fn lookup(k: &CtKey) -> Option<&'static CtValue> {
    // SAFETY: read-only lookup.
    unsafe { CT_V4.get(k) }
}

/// A conntrack entry in place (a map value pointer, valid for the program run): the fast path
/// reads and updates it without copying it out or looking it up again.
pub type Entry = *mut CtValue;

/// The entry of a packet's tuple, as conntrack sees it: a TCP SYN (no ACK) on a closed flow
/// starts a new connection (like a SYN in TIME_WAIT), so the old pair goes and the caller
/// translates afresh. Without this, a client reusing a source port would inherit a translation
/// whose reply tuple may since have been handed to another flow.
#[inline(always)]
pub fn lookup_flow(p: &Pkt, k: &CtKey) -> Option<Entry> {
    lookup_flow_in(p, k, false)
}

/// `lookup_flow` on the uplink (`netd_from_netdev`): a SYN on a closed published-port flow
/// whose translation would come out the same again (`restart_published`) restarts the pair in
/// place; any other closed flow goes as in `lookup_flow`.
#[inline(always)]
pub fn lookup_flow_uplink(p: &Pkt, k: &CtKey) -> Option<Entry> {
    lookup_flow_in(p, k, true)
}

#[inline(always)]
fn lookup_flow_in(p: &Pkt, k: &CtKey, uplink: bool) -> Option<Entry> {
    let e = CT_V4.get_ptr_mut(k)?;
    // SAFETY: map value pointer, valid for this program run.
    let v = unsafe { &mut *e };
    if p.proto == IPPROTO_TCP && p.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && v.flags & CT_F_CLOSING != 0 {
        if uplink && restart_published(p, k, v) {
            return Some(e);
        }
        remove_closed(k, v);
        return None;
    }
    Some(e)
}

/// A packet of a tracked flow (`lookup_flow`'s entry): its TCP window state first (a blind RST
/// is dropped here, counted), then `apply`. None: no entry, a new flow.
#[inline(always)]
pub fn established(ctx: &TcContext, p: &mut Pkt, k: &CtKey) -> Option<i32> {
    let e = lookup_flow(p, k)?;
    Some(established_entry(ctx, p, e))
}

/// A client's SYN from a source port whose last connection to the same published port closed
/// (a client cycling through its ports, a load generator, many clients behind one NAT): when
/// the pair, removed, would be made again exactly as it is (`dnat_published`'s two values: the
/// checks below follow them; the binding still leads to the same
/// sandbox address, port, device and MACs through the same host port; the client keeps its
/// port because its old reply tuple was the one freed), both entries start over in place (their
/// TCP state, flags and time; the reply's cached route stays, checked against `FIB_GEN` as
/// always) rather than being removed and inserted again. Same entries for every later packet,
/// without the two deletes and two inserts, whose LRU list work on cold memory was most of a
/// new connection's time (bench/report.md, "tenth pass"). As nf_conntrack, which kills and
/// recreates a closed connection reopened by a SYN, the table does not grow: the restarted flow
/// is unanswered again (counted once in `CT_UNASSURED`) but never refused at the cap.
/// A BPF-to-BPF call (its keys off the caller's frame).
#[inline(never)]
fn restart_published(p: &Pkt, k: &CtKey, v: &mut CtValue) -> bool {
    use crate::maps::{endpoint, is_host_addr, network, published};
    // The originator's entry of a published-port flow on the uplink (DNAT, the client's port
    // kept: the only translation `dnat_published` makes when the client's reply tuple is free).
    if v.action != CT_ACT_PEER
        || v.flags & (CT_F_REPLY | CT_F_L2 | CT_F_HOSTNAT) != 0
        || v.saddr != p.saddr
        || v.sport != p.sport
        || !is_host_addr(p.daddr)
    {
        return false;
    }
    let Some(pb) = published(p.proto, p.daddr, p.dport) else { return false };
    let Some(ep) = endpoint(pb.addr) else { return false };
    let Some(net) = network(ep.net) else { return false };
    if v.daddr != pb.addr
        || v.dport != pb.port
        || v.ifindex != ep.ifindex
        || v.stats_slot != pb.stats_slot + 1
        || !mac_eq(&v.dmac, &ep.mac)
        || !mac_eq(&v.smac, &net.gateway_mac)
    {
        return false;
    }
    // Its reply entry, still paired with it and as `dnat_published` makes it.
    let rk = ct_key(pb.addr, p.saddr, pb.port, p.sport, p.proto);
    let Some(r) = CT_V4.get_ptr_mut(&rk) else { return false };
    // SAFETY: map value pointer, valid for this program run.
    let r = unsafe { &mut *r };
    if r.action != CT_ACT_FIB
        || r.flags & (CT_F_L2 | CT_F_HOSTNAT) != 0
        || r.saddr != p.daddr
        || r.daddr != p.saddr
        || r.sport != p.dport
        || r.dport != p.sport
        || r.stats_slot != 0
    {
        return false;
    }
    // Unanswered again: counted as a new flow, unless it never stopped counting (its client never
    // acknowledged: one count per flow, as the next ACK takes one off).
    if v.flags & CT_F_ACKED != 0 {
        count_new(k);
    }
    let now = now();
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

/// Two MAC addresses equal (as a word and a half-word: an array comparison is a call to
/// `bcmp`, which the bpf target does not have).
#[inline(always)]
pub fn mac_eq(a: &[u8; 6], b: &[u8; 6]) -> bool {
    // SAFETY: within both 6-byte arrays, read unaligned.
    unsafe {
        (a.as_ptr() as *const u32).read_unaligned() == (b.as_ptr() as *const u32).read_unaligned()
            && (a.as_ptr().add(4) as *const u16).read_unaligned() == (b.as_ptr().add(4) as *const u16).read_unaligned()
    }
}

/// `established` for an entry the caller looked up (`lookup_flow`).
#[inline(always)]
pub fn established_entry(ctx: &TcContext, p: &mut Pkt, e: Entry) -> i32 {
    if p.proto == IPPROTO_TCP && !track(ctx, p, e) {
        return TC_ACT_SHOT as i32;
    }
    apply(ctx, p, e)
}

/// Not taken by [`fast_v4`]: the program's full IPv4 body decides.
pub const FAST_MISS: i32 = i32::MIN + 2;
/// Not taken by [`fast_v4`], whose lookup found no entry for the packet's tuple: the full body
/// decides without looking it up again (nothing inserts between the two; the fast path's key is
/// `key_of` the full body's parse of the same frame).
pub const FAST_NO_ENTRY: i32 = i32::MIN + 3;

/// The established-flow fast path (issue 19), tried first by `netd_from_netdev` and
/// `netd_from_container` for IPv4: the common frame of a flow whose entry needs nothing but the
/// rewrite, in one small body read and written straight in the linear data, where the full body
/// builds a `Pkt`, stages the head in `SCRATCH_L4` and goes through the general rewrite for
/// every case of Docker's model (bench/report.md, "eighth pass": that structure was most of
/// netd's time over the minimal NAT hop).
///
/// Taken only when every step is what the full body would do for the packet:
/// - Ethernet + IPv4 without options, not a fragment (no MF, no offset), TTL above 1 (a routed
///   hop; at 1 the kernel answers time exceeded), and TCP without SYN, with ACK or RST
///   (`lookup_flow`'s closed-flow rule cannot apply; a RST is judged against the receiver's
///   window as `track` judges it, and `touch` only sets flag bits: a FIN marks its direction
///   closing, as in the full body), or UDP; the L4 header's first 20 bytes in the linear data; the loader gave the programs
///   `ip_summed` (`kctx`);
/// - an entry (one lookup) that is a routed `CT_ACT_PEER` (into a sandbox with
///   `bpf_redirect_peer`, TTL decremented) or a `CT_ACT_FIB` with its route cached under the
///   current `FIB_GEN` (out with `bpf_redirect`; a DF packet too big for the route is the
///   kernel's, as in `apply`);
/// - on the uplink (`from_netdev`), an entry that rewrites the destination (a published port, a
///   masqueraded flow's reply): the full body's protection of sandbox addresses and its loopback
///   drop then cannot apply (a loopback destination is left to it anyway).
///
/// Then, as `established_entry` + `apply` + `translate` do: TCP window tracking (`tcpwin`), the
/// rewrite with the TTL and the entry's MACs ([`nat::rewrite_direct`], the same checksum
/// arithmetic as `nat::set_tuple`), the port counter, `touch`, the redirect. Anything else:
/// [`FAST_MISS`] before any state changed (the full body looks the entry up again), or
/// [`FAST_NO_ENTRY`] when the flow has none (the full body does not look again: traffic that is
/// not translated, ICC and to the host above all, pays one lookup as before).
#[inline(never)]
pub fn fast_v4(ctx: &TcContext, from_netdev: bool) -> i32 {
    if !crate::kctx::available() {
        // (A `.rodata` constant: the rest is dead code to the verifier then.)
        return FAST_MISS;
    }
    const L4: usize = IP_OFF + 20;
    let data = ctx.data();
    if data + L4 + 20 > ctx.data_end() {
        return FAST_MISS;
    }
    // SAFETY (each read): within the first L4 + 20 bytes of the linear data, checked above.
    let (eth_type, vihl, frag, tp, saddr, daddr, ports, tcp_flags) = unsafe {
        (
            *((data + 12) as *const u16),
            *((data + IP_OFF) as *const u8),
            *((data + IP_OFF + 6) as *const u16),
            *((data + IP_OFF + 8) as *const u16),
            *((data + IP_OFF + 12) as *const u32),
            *((data + IP_OFF + 16) as *const u32),
            *((data + L4) as *const u32),
            *((data + L4 + 13) as *const u8),
        )
    };
    // 0x0800 and the fragment field as read (little-endian): MF and the offset's high bits are
    // the first byte's low six bits, the offset's low bits the second byte; DF is 0x40.
    if eth_type != 0x0008 || vihl != 0x45 || frag & 0xff3f != 0 {
        return FAST_MISS;
    }
    // TTL and protocol as read: the TTL is the low byte.
    let (ttl, proto) = (tp as u8, (tp >> 8) as u8);
    let udp = proto == netd_common::IPPROTO_UDP;
    // TCP: no SYN, and an ACK or a RST (a segment with neither is the full body's).
    if !udp && (proto != IPPROTO_TCP || tcp_flags & TCP_SYN != 0 || tcp_flags & (TCP_ACK | TCP_RST) == 0) {
        return FAST_MISS;
    }
    // Network byte order: a loopback destination's first octet is the lowest byte.
    if ttl <= 1 || (from_netdev && daddr & 0xff == 127) {
        return FAST_MISS;
    }
    let k = ct_key(saddr, daddr, ports as u16, (ports >> 16) as u16, proto);
    let Some(e) = CT_V4.get_ptr_mut(&k) else { return FAST_NO_ENTRY };
    // SAFETY: map value pointer, valid for this program run (racy updates as in `apply`).
    let v = unsafe { &mut *e };
    if from_netdev && v.daddr == daddr {
        return FAST_MISS;
    }
    let fib = v.action == CT_ACT_FIB;
    if fib {
        let cur = fib_gen();
        if cur == 0 || v.fib_gen != cur {
            return FAST_MISS;
        }
        // `apply`'s MTU check: the helper only for a DF packet longer than the cached MTU (a
        // GSO packet may still be fine segment by segment); too big, the kernel's.
        if frag & 0x0040 != 0 && ctx.len() > v.fib_mtu as u32 && mtu_exceeded(ctx, v.ifindex) {
            return TC_ACT_OK as i32;
        }
    } else if v.action != CT_ACT_PEER || v.flags & CT_F_L2 != 0 {
        return FAST_MISS;
    }
    // Window tracking; a RST is judged against its receiver's window, whose entry is keyed by
    // the reverse of this direction's translation (as `track` does): false, a blind RST.
    let (rs, rd, rsp, rdp) = (v.daddr, v.saddr, v.dport, v.sport);
    if !udp
        && !tcpwin::track(ctx, L4, tcp_flags, &mut v.flags, &mut v.ack, &mut v.wnd, || {
            receiver(&ct_key(rs, rd, rsp, rdp, IPPROTO_TCP))
        })
    {
        return TC_ACT_SHOT as i32;
    }
    if !nat::rewrite_direct(ctx, udp, v) {
        stats::count_drop(DropReason::Malformed);
        return TC_ACT_SHOT as i32;
    }
    stats::count_port(v.stats_slot, ctx.len() as u64);
    touch_flags(proto, tcp_flags, v);
    // SAFETY: plain helper calls.
    unsafe { if fib { bpf_redirect(v.ifindex, 0) as i32 } else { bpf_redirect_peer(v.ifindex, 0) as i32 } }
}

/// TCP window tracking for one segment of the flow whose entry is `e` (see
/// `netd_common::tcp_window`): false, a blind RST (counted). Host-flow markers are not tracked.
/// A BPF-to-BPF call from the programs' top level (never below `apply`, whose callers' frames
/// leave it no room); only a RST looks up the other direction's entry.
#[inline(never)]
fn track(ctx: &TcContext, p: &Pkt, e: Entry) -> bool {
    // SAFETY: map value pointer, valid for this program run; racy updates of the window fields
    // and flag bits are harmless (the next segment writes them again).
    let v = unsafe { &mut *e };
    if v.action == CT_ACT_HOSTFLOW {
        return true;
    }
    // The receiver's entry: keyed by the reverse of this direction's translation.
    let (saddr, daddr, sport, dport) = (v.daddr, v.saddr, v.dport, v.sport);
    tcpwin::track(ctx, p.l4 as usize, p.tcp_flags, &mut v.flags, &mut v.ack, &mut v.wnd, || {
        receiver(&ct_key(saddr, daddr, sport, dport, IPPROTO_TCP))
    })
}

/// A RST's receiver for window tracking: the flags, ACK and window of the entry under `pk`, the
/// reverse of the sender's translation (looked up only for a RST).
#[inline(always)]
fn receiver(pk: &CtKey) -> Option<(u8, u32, u16)> {
    lookup(pk).map(|r| (r.flags, r.ack, r.wnd))
}

/// `remove_pair` for `lookup_flow`, as a BPF-to-BPF call: its keys stay off the stack of the
/// program's frame, which heads every call chain (512 bytes in all).
#[inline(never)]
fn remove_closed(k: &CtKey, v: &CtValue) {
    remove_pair(k, v);
}

/// Apply the entry just inserted under `k` (by `insert_pair`): found again in place, so the
/// packet updates the stored entry as every later one does.
#[inline(always)]
pub fn apply_new(ctx: &TcContext, p: &mut Pkt, k: &CtKey) -> i32 {
    match CT_V4.get_ptr_mut(k) {
        Some(e) => {
            // The first segment's window state (a SYN's above all).
            if p.proto == IPPROTO_TCP && !track(ctx, p, e) {
                return TC_ACT_SHOT as i32;
            }
            apply(ctx, p, e)
        }
        None => {
            // Evicted again at once (a full LRU under a flood): no translation to apply.
            stats::count_drop(DropReason::CtInsert);
            TC_ACT_SHOT as i32
        }
    }
}

/// Remove an entry and its other direction (the partner is keyed by the reverse of the
/// translated tuple), if the partner still points back at it.
#[inline(always)]
pub fn remove_pair(k: &CtKey, v: &CtValue) {
    let partner = ct_key(v.daddr, v.saddr, v.dport, v.sport, k.proto);
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

/// The key of the entry that `v` (stored under `k`) pairs with: the reverse of its translation.
#[inline(always)]
fn partner_key(k: &CtKey, v: &CtValue) -> CtKey {
    ct_key(v.daddr, v.saddr, v.dport, v.sport, k.proto)
}

/// Insert both directions of a flow, or neither. The reply side goes in with `BPF_NOEXIST`, as
/// the kernel keeps reply tuples unique: two CPUs can never hand one reply tuple to two flows.
/// A reply tuple held by this same flow (a race on its first packets, or its other half was
/// evicted) or by an entry whose partner is gone is taken over.
#[inline(always)]
pub fn insert_pair(k1: &CtKey, v1: &mut CtValue, k2: &CtKey, v2: &mut CtValue) -> bool {
    // A new flow is unanswered: under a flood of them, evict the oldest unanswered one (or,
    // failing that, refuse) rather than let the LRU evict established flows.
    if !admit(k1) {
        return false;
    }
    let now = now();
    // (Set in the callers' values: copies would cost stack.)
    v1.last_seen_ns = now;
    v2.last_seen_ns = now;
    v2.flags |= CT_F_REPLY;
    if CT_V4.insert(k1, &*v1, 0).is_err() {
        stats::count_drop(DropReason::CtInsert);
        return false;
    }
    if CT_V4.insert(k2, &*v2, BPF_NOEXIST).is_err() {
        let ours = match lookup(k2) {
            None => true,
            Some(o) => {
                let pk = partner_key(k2, o);
                o.action != CT_ACT_HOSTFLOW && (pk == *k1 || !exists(&pk))
            }
        };
        if !ours || CT_V4.insert(k2, &*v2, 0).is_err() {
            let _ = CT_V4.remove(k1);
            stats::count_drop(DropReason::CtInsert);
            return false;
        }
    }
    true
}

/// Count a new (unanswered) flow, keyed `k` by its originator, against `CT_UNASSURED_MAX`; at
/// the cap, make room by the early drop or refuse (false, counted `ct_full`). The flow becomes
/// the newest of `NEW_FLOWS`, overwriting the oldest slot, which the early drop looked at first.
#[inline(always)]
fn admit(k: &CtKey) -> bool {
    let Some(unassured) = CT_UNASSURED.get_ptr_mut(0) else { return false };
    let Some(head) = NEW_FLOWS_HEAD.get_ptr_mut(0) else { return false };
    // SAFETY: one-entry array slots, valid for this program run.
    let h = unsafe { *head };
    // (Signed: the programs' decrements may run ahead of the GC's recount.)
    if unsafe { *unassured } as i64 >= CT_UNASSURED_MAX as i64 && !early_drop(h) {
        stats::count_drop(DropReason::CtFull);
        return false;
    }
    count_new(k);
    true
}

/// Count a new unanswered flow keyed `k` (`admit` without the cap: also for a flow restarted in
/// its own entries): one more in `CT_UNASSURED`, and the newest of `NEW_FLOWS`.
#[inline(always)]
fn count_new(k: &CtKey) {
    let Some(unassured) = CT_UNASSURED.get_ptr_mut(0) else { return };
    let Some(head) = NEW_FLOWS_HEAD.get_ptr_mut(0) else { return };
    // SAFETY: one-entry array slots, valid for this program run. Not atomic (the bpf target has
    // no fetch-add in core): a lost update between CPUs is corrected by the GC's recount (of the
    // counter; a slot written twice).
    let h = unsafe { *head };
    unsafe {
        *unassured = (*unassured).wrapping_add(1);
        *head = h.wrapping_add(1);
    }
    let _ = NEW_FLOWS.set((h % CT_UNASSURED_MAX) as u32, k, 0);
}

/// nf_conntrack's early drop: at the cap of unanswered flows, evict the oldest one still
/// unanswered among the `EARLY_DROP_TRIES` oldest recent new flows (a TCP flow whose originator
/// never acknowledged, a UDP/ICMP flow never answered), both directions. False: all of them
/// were answered (or gone), nothing evicted. A BPF-to-BPF call (stack, see `apply`).
#[inline(never)]
fn early_drop(head: u64) -> bool {
    for i in 0..EARLY_DROP_TRIES as u64 {
        let slot = ((head + i) % CT_UNASSURED_MAX) as u32;
        let Some(k) = NEW_FLOWS.get(slot) else { return false };
        let Some(v) = CT_V4.get_ptr(k) else { continue };
        // SAFETY: map value pointer, valid for this program run (read before its removal).
        let v = unsafe { &*v };
        if v.flags & CT_F_REPLY != 0 || v.action == CT_ACT_HOSTFLOW {
            continue; // a slot overwritten meanwhile by a reply key's pair: not this one
        }
        let answered = if k.proto == IPPROTO_TCP {
            v.flags & CT_F_ACKED != 0
        } else {
            let pk = partner_key(k, v);
            // SAFETY: read-only lookup.
            unsafe { CT_V4.get(&pk) }.is_some_and(|r| r.flags & CT_F_SEEN != 0)
        };
        if answered {
            continue;
        }
        remove_pair(k, v);
        if let Some(u) = CT_UNASSURED.get_ptr_mut(0) {
            // SAFETY: one-entry array slot, valid for this program run.
            unsafe { *u = (*u).wrapping_sub(1) };
        }
        stats::count_drop(DropReason::CtEarlyDrop);
        return true;
    }
    false
}

/// Whether a host flow got another source port lately (then the host's TCP segments are
/// looked up; otherwise only SYNs, FINs and RSTs are).
#[inline(always)]
pub fn host_nat_active() -> bool {
    HOST_NAT.get(0).is_some_and(|t| *t != 0)
}

/// A packet a host socket sends from an uplink address (UDP, or TCP while `new_flow` is a SYN).
///
/// Its reply tuple is reserved with a `CT_ACT_HOSTFLOW` marker (with a real last-seen time, so
/// the GC keeps it while the flow lives) so masquerade never hands it to a sandbox flow. When a
/// sandbox flow already holds that reply tuple (same source port, same server), the host's flow
/// gets another source port, as nf_nat does for the later of two clashing flows: both keep
/// working, and the host's replies never go into the sandbox.
#[inline(always)]
pub fn host_egress(ctx: &TcContext, p: &mut Pkt, new_flow: bool) -> i32 {
    let k = key_of(p);
    if let Some(e) = CT_V4.get_ptr_mut(&k)
        // SAFETY: map value pointer, valid for this program run.
        && unsafe { (*e).flags } & CT_F_HOSTNAT != 0
    {
        if p.proto == IPPROTO_TCP && !track(ctx, p, e) {
            return TC_ACT_SHOT as i32;
        }
        return apply(ctx, p, e);
    }
    let rk = reversed(&k);
    let now = now();
    match CT_V4.get_ptr_mut(&rk) {
        None if new_flow => {
            let v = ct_value! { action: CT_ACT_HOSTFLOW, flags: CT_F_SEEN, last_seen_ns: now };
            let _ = CT_V4.insert(&rk, &v, BPF_NOEXIST);
        }
        None => {}
        Some(e) => {
            // SAFETY: map value pointer valid for this program run; racy updates of a
            // timestamp and flag bits are harmless.
            unsafe {
                if (*e).action == CT_ACT_HOSTFLOW {
                    (*e).last_seen_ns = now;
                    if p.proto == IPPROTO_TCP && p.tcp_flags & 0x05 != 0 {
                        (*e).flags |= CT_F_CLOSING;
                    } else if new_flow {
                        (*e).flags &= !CT_F_CLOSING;
                    }
                    return TC_ACT_OK as i32;
                }
            }
            if !new_flow {
                return TC_ACT_OK as i32;
            }
            // Taken by a translated flow: this host flow gets another source port.
            let Some(port) = snat::pick_port(p.proto, p.daddr, p.saddr, p.dport, p.sport, false) else {
                stats::count_drop(DropReason::SnatExhausted);
                return TC_ACT_SHOT as i32;
            };
            let mut fwd = ct_value! {
                saddr: p.saddr,
                daddr: p.daddr,
                sport: port,
                dport: p.dport,
                action: CT_ACT_PASS,
                flags: CT_F_HOSTNAT,
            };
            let rk2 = ct_key(rk.saddr, rk.daddr, p.dport, port, rk.proto);
            let mut rev = ct_value! {
                saddr: p.daddr,
                daddr: p.saddr,
                sport: p.dport,
                dport: p.sport,
                action: CT_ACT_PASS,
                flags: CT_F_HOSTNAT,
            };
            if !insert_pair(&k, &mut fwd, &rk2, &mut rev) {
                return TC_ACT_SHOT as i32;
            }
            if let Some(t) = HOST_NAT.get_ptr_mut(0) {
                // SAFETY: one-entry array slot, valid for this program run.
                unsafe { *t = now };
            }
            return apply_new(ctx, p, &k);
        }
    }
    TC_ACT_OK as i32
}

/// Rewrite the packet to the entry's tuple and deliver it. Returns the TC verdict.
///
/// Delivery other than same-bridge (`CT_F_L2`) is a routed hop, as it is for the kernel: the TTL
/// is decremented, and a packet that cannot make the hop goes to the kernel instead, which
/// answers it (time exceeded; fragmentation needed for a DF packet too big for the egress
/// device). A packet leaving toward the FIB (from a sandbox) is handed over untranslated, so the
/// ICMP error comes from the gateway to the sandbox as with Docker.
///
/// The entry is the stored one (`e`, in place): its state is updated through it, and a FIB
/// entry keeps the route it was last sent along (egress device, MACs, MTU) until `FIB_GEN`
/// moves on, so an established flow makes no FIB lookup.
///
/// A BPF-to-BPF call, not inlined: the FIB parameters and the callers' entries would not fit
/// one 512-byte frame in `netd_from_container`, which applies entries in several places.
#[inline(never)]
pub fn apply(ctx: &TcContext, p: &mut Pkt, e: Entry) -> i32 {
    // SAFETY: map value pointer, valid for this program run; concurrent updates from another
    // CPU touch timestamps, flag bits and the cached route, each of which is fine to race.
    let v = unsafe { &mut *e };
    if v.action == CT_ACT_HOSTFLOW {
        return TC_ACT_OK as i32;
    }
    if v.action == CT_ACT_FIB {
        if p.ttl <= 1 {
            return TC_ACT_OK as i32;
        }
        let cur = fib_gen();
        if cur != 0 && v.fib_gen == cur {
            // The cached route. The MTU check as below, its helper only for a packet longer
            // than the route's MTU (a GSO packet may still be fine segment by segment).
            if p.dont_fragment && ctx.len() > v.fib_mtu as u32 && mtu_exceeded(ctx, v.ifindex) {
                return TC_ACT_OK as i32;
            }
            if let Err(verdict) = translate(ctx, p, v, true, true) {
                return verdict;
            }
            if nat::set_macs12(ctx, entry_macs(v)).is_err() {
                return TC_ACT_SHOT as i32;
            }
            // SAFETY: plain helper call.
            return unsafe { bpf_redirect(v.ifindex, 0) as i32 };
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
        if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 && cur != 0 {
            v.ifindex = fib.ifindex;
            copy6(&mut v.dmac, &fib.dmac);
            copy6(&mut v.smac, &fib.smac);
            // SAFETY: union field the lookup wrote (the egress MTU on success).
            v.fib_mtu = unsafe { fib.__bindgen_anon_1.mtu_result };
            v.fib_gen = cur;
        }
        if let Err(verdict) = translate(ctx, p, v, true, false) {
            return verdict;
        }
        return redirect_with(ctx, rc, fib);
    }
    let routed = v.action == CT_ACT_PEER && v.flags & CT_F_L2 == 0;
    if let Err(verdict) = translate(ctx, p, v, routed, v.action == CT_ACT_PEER) {
        return verdict;
    }
    deliver(ctx, v)
}

/// Rewrite to the entry's tuple, account, and make the routed hop (TTL). Err: the verdict.
/// `macs`: the packet leaves with the entry's MACs (`deliver`, the cached route), which
/// `set_tuple` then writes with the headers where it can (`nat::set_macs12` does not write them
/// again); not for a packet the TTL leaves to the kernel, which keeps its own.
#[inline(always)]
fn translate(ctx: &TcContext, p: &mut Pkt, v: &mut CtValue, routed: bool, macs: bool) -> Result<(), i32> {
    // The first fragment of a fragmented datagram: later fragments (no L4 header) get the
    // same address translation and delivery.
    if p.more_fragments && !p.later_fragment {
        let fk = FragKey { saddr: p.saddr, daddr: p.daddr, id: p.ip_id, proto: p.proto, _pad: 0 };
        let _ = FRAGS.insert(&fk, &*v, 0);
    }
    // The routed hop's TTL decrement goes into the same header write.
    let dec_ttl = routed && p.ttl > 1;
    let macs = if macs && (dec_ttl || !routed) { entry_macs(v) as *const [u8; 12] } else { core::ptr::null() };
    if nat::set_tuple(ctx, p, v.saddr, v.daddr, v.sport, v.dport, dec_ttl, macs).is_err() {
        stats::count_drop(DropReason::Malformed);
        return Err(TC_ACT_SHOT as i32);
    }
    stats::count_port(v.stats_slot, ctx.len() as u64);
    touch(p, v);
    if routed && !dec_ttl {
        // Translated toward a sandbox: the kernel forwards it and answers time exceeded.
        return Err(TC_ACT_OK as i32);
    }
    Ok(())
}

/// The route for `saddr -> daddr` (tot_len 0: the kernel checks the skb itself against the
/// egress MTU, which understands GSO packets).
#[inline(always)]
fn fib_route(ctx: &TcContext, fib: &mut bpf_fib_lookup, saddr: u32, daddr: u32) -> i64 {
    // Every field the lookup reads starts at zero (tot_len 0 above all).
    zero_fib(fib);
    fib.family = AF_INET;
    fib.ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
    fib.__bindgen_anon_3.ipv4_src = saddr;
    fib.__bindgen_anon_4.ipv4_dst = daddr;
    // SAFETY: valid ctx and params pointers.
    unsafe { fib_lookup(ctx.skb.skb.cast(), fib, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) }
}

/// Zero the FIB parameters as eight words: `*fib = zeroed()` is a call to a byte loop on the bpf
/// target (no inline memset), 64 iterations per lookup. Volatile, so the stores are not merged
/// back into that call.
#[inline(always)]
pub fn zero_fib(fib: &mut bpf_fib_lookup) {
    const _: () = assert!(core::mem::size_of::<bpf_fib_lookup>() == 64);
    let w = fib as *mut bpf_fib_lookup as *mut u64;
    for i in 0..8 {
        // SAFETY: within the 64-byte, 8-aligned parameters; all-zero is a valid value.
        unsafe { w.add(i).write_volatile(0) };
    }
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
    mtu_exceeded(ctx, fib.ifindex)
}

/// `bpf_check_mtu` with `BPF_MTU_CHK_SEGS` against the device `ifindex`.
#[inline(always)]
pub fn mtu_exceeded(ctx: &TcContext, ifindex: u32) -> bool {
    let mut mtu_len: u32 = 0;
    // SAFETY: valid ctx and out pointer; BPF_MTU_CHK_SEGS (1) requires mtu_len 0, len_diff 0.
    let r = unsafe { bpf_check_mtu(ctx.skb.skb.cast(), ifindex, &mut mtu_len, 0, 1) };
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

/// Remember an untranslated first fragment (to a host address), so its later fragments are
/// told from fragments whose first fragment was never seen (`frag_unknown`).
#[inline(always)]
pub fn frag_pass(p: &Pkt) {
    let fk = FragKey { saddr: p.saddr, daddr: p.daddr, id: p.ip_id, proto: p.proto, _pad: 0 };
    let v = ct_value! { saddr: p.saddr, daddr: p.daddr, action: CT_ACT_PASS };
    let _ = FRAGS.insert(&fk, &v, 0);
}

/// A first fragment handed straight to a sandbox on the same bridge (a `--link` flow's first
/// packet): its later fragments follow it there.
#[inline(always)]
pub fn frag_peer(p: &Pkt, ifindex: u32, dmac: &[u8; 6], smac: &[u8; 6]) {
    if !p.more_fragments || p.later_fragment {
        return;
    }
    let fk = FragKey { saddr: p.saddr, daddr: p.daddr, id: p.ip_id, proto: p.proto, _pad: 0 };
    let v = ct_value! {
        saddr: p.saddr,
        daddr: p.daddr,
        action: CT_ACT_PEER,
        flags: CT_F_L2,
        ifindex: ifindex,
        dmac: *dmac,
        smac: *smac,
    };
    let _ = FRAGS.insert(&fk, &v, 0);
}

/// A later fragment with no recorded translation: dropped and counted.
#[inline(always)]
pub fn frag_unknown() -> i32 {
    stats::count_drop(DropReason::FragUnknown);
    TC_ACT_SHOT as i32
}

/// A later fragment of a datagram whose first fragment was translated: same addresses, same
/// delivery (it carries no ports). Returns None when the first fragment was not seen.
#[inline(always)]
pub fn apply_fragment(ctx: &TcContext, p: &mut Pkt) -> Option<i32> {
    let fk = FragKey { saddr: p.saddr, daddr: p.daddr, id: p.ip_id, proto: p.proto, _pad: 0 };
    // SAFETY: read-only lookup, copied out.
    let v = unsafe { FRAGS.get(&fk).copied() }?;
    // A routed hop, as for its first fragment (a same-bridge `--link` hop is not one). One that
    // cannot make it goes to the kernel untranslated (no ICMP error for a later fragment).
    let routed = v.action == CT_ACT_FIB || (v.action == CT_ACT_PEER && v.flags & CT_F_L2 == 0);
    if routed && p.ttl <= 1 {
        return Some(TC_ACT_OK as i32);
    }
    if nat::set_addr(ctx, p, true, v.saddr).is_err() || nat::set_addr(ctx, p, false, v.daddr).is_err() {
        return Some(TC_ACT_SHOT as i32);
    }
    if routed && nat::dec_ttl(ctx, p).is_err() {
        return Some(TC_ACT_SHOT as i32);
    }
    stats::count_port(v.stats_slot, ctx.len() as u64);
    if !p.more_fragments {
        let _ = FRAGS.remove(&fk);
    }
    Some(deliver(ctx, &v))
}

/// Refresh the entry's timestamp and the state the GC's timeouts follow: seen in this
/// direction, TCP established (an ACK without SYN), FIN. (A RST's effect and the windows are
/// `track`'s, before the rewrite.) Through the stored entry (racy updates of a timestamp and
/// flag bits are harmless).
#[inline(always)]
fn touch(p: &Pkt, e: &mut CtValue) {
    touch_flags(p.proto, p.tcp_flags, e);
}

/// [`touch`] for a packet of protocol `proto` with TCP flags `fl` (0 for others).
#[inline(always)]
fn touch_flags(proto: u8, fl: u8, e: &mut CtValue) {
    e.last_seen_ns = now();
    let was = e.flags;
    let mut f = was;
    if proto == IPPROTO_TCP && fl & TCP_RST == 0 {
        if fl & TCP_FIN != 0 {
            f |= CT_F_CLOSING;
        }
        if fl & (TCP_SYN | TCP_ACK) == TCP_ACK {
            f |= CT_F_ACKED;
        }
    }
    // Answered (UDP, ICMP: the reply's first packet) or established (TCP: the originator's
    // first ACK): no longer counted against CT_UNASSURED_MAX.
    let done = if proto == IPPROTO_TCP {
        was & CT_F_REPLY == 0 && was & CT_F_ACKED == 0 && f & CT_F_ACKED != 0
    } else {
        was & CT_F_REPLY != 0 && was & CT_F_SEEN == 0
    };
    f |= CT_F_SEEN;
    if f != was {
        e.flags = f;
    }
    if done && let Some(u) = CT_UNASSURED.get_ptr_mut(0) {
        // SAFETY: one-entry array slot, valid for this program run.
        unsafe { *u = (*u).wrapping_sub(1) };
    }
}

/// A MAC address copied byte by byte (volatile: a 6-byte copy is otherwise a call to a byte
/// loop on the bpf target).
#[inline(always)]
pub fn copy6(dst: &mut [u8; 6], src: &[u8; 6]) {
    for i in 0..6 {
        // SAFETY: in bounds of both arrays.
        unsafe { dst.as_mut_ptr().add(i).write_volatile(src[i]) };
    }
}

/// An entry's `dmac` and `smac` as the 12 bytes of an Ethernet header's addresses (they are
/// adjacent in `CtValue`), read in place.
#[inline(always)]
fn entry_macs(v: &CtValue) -> &[u8; 12] {
    // SAFETY: `smac` follows `dmac` in the `#[repr(C)]` layout (asserted in netd-common).
    unsafe { &*(v.dmac.as_ptr() as *const [u8; 12]) }
}

#[inline(always)]
pub fn deliver(ctx: &TcContext, v: &CtValue) -> i32 {
    match v.action {
        CT_ACT_PEER => {
            if nat::set_macs12(ctx, entry_macs(v)).is_err() {
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
    // The parameters in the per-CPU scratch slot, off the callers' stack (see `apply`; its FIB
    // path does not come here).
    let Some(fib) = SCRATCH_FIB.get_ptr_mut(0) else { return TC_ACT_OK as i32 };
    // SAFETY: per-CPU map value, valid for this program run.
    let fib = unsafe { &mut *fib };
    // tot_len 0: the kernel checks the MTU against the skb itself, which understands GSO
    // packets (a 64 KB TSO segment is fine; an explicit length would get FRAG_NEEDED).
    let rc = fib_route(ctx, fib, saddr, daddr);
    redirect_with(ctx, rc, fib)
}
