//! `netd-floor`: the bench's minimal NAT hop (issue 19), not part of netd. netd never loads it;
//! `cargo xtask bench` attaches it to its `raw-sandbox+floor_nat` world to measure what the
//! least a correct eBPF NAT must do per established packet costs on this machine, next to netd's
//! own programs in the same rounds.
//!
//! Two entry points with one body, attached like netd's published-port path: `floor_nat_peer`
//! on the uplink's ingress (delivered into the sandbox with `bpf_redirect_peer`), `floor_nat_fib`
//! on the host-side sandbox veth's ingress (the reply, sent out of the uplink with
//! `bpf_redirect`). Per packet, both:
//! - parse Ethernet, IPv4 without options, not a fragment, TCP or UDP (all with direct packet
//!   access; anything else goes to the kernel);
//! - one lookup of the 5-tuple in a conntrack-like LRU hash (a miss is a new flow: one
//!   `bpf_fib_lookup`, and the entry is inserted with the route's device, MACs and MTU; no
//!   route or no neighbour yet leaves the packet to the kernel);
//! - a routed hop's checks: TTL (≤ 1 goes to the kernel, which answers time exceeded) and the
//!   egress MTU for a DF packet (`bpf_check_mtu` only when the packet is longer than the cached
//!   MTU, as netd does);
//! - the rewrite to the entry's tuple with both checksums updated incrementally (RFC 1624), the
//!   TTL decremented and the entry's MACs, written straight into the packet (the verifier's
//!   prologue makes a cloned head writable first, as it does for any program that writes);
//! - the entry's last-seen time and TCP FIN/RST seen (what its timeout needs);
//! - the redirect.
//!
//! The bench's entries translate a flow to itself (the raw sandbox has no published port), so
//! the packets arrive unchanged, but every step above runs on values read from the entry. What
//! it leaves out of netd's work: the L4 checksum of a CHECKSUM_PARTIAL packet takes the
//! addresses' difference only (netd reads `ip_summed` through a kfunc: one load); ports
//! statistics, TCP window tracking, policy (ICC, isolation), hairpin, ICMP errors, fragments,
//! IPv6, XDP and the rest of netd's cases.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{
        bindings::{BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, bpf_fib_lookup},
        helpers::generated::{
            bpf_check_mtu, bpf_fib_lookup as fib_lookup, bpf_ktime_get_coarse_ns, bpf_redirect, bpf_redirect_peer,
        },
        macros::{classifier, map},
        maps::{LruHashMap, PerCpuArray},
        programs::TcContext,
    };

    /// saddr, daddr, ports (source in the low half), protocol: 16 bytes, written as words (a
    /// struct with padding bytes is zeroed by a call to a byte loop on this target).
    type Key = [u32; 4];

    /// The tuple to write (network order, as read), the route (device, MACs, MTU) and the
    /// timeout's state: 40 bytes.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Val {
        saddr: u32,
        daddr: u32,
        sport: u16,
        dport: u16,
        ifindex: u32,
        mtu: u16,
        flags: u8,
        _pad: u8,
        /// Destination then source MAC, as the frame's first 12 bytes (three words: a byte array
        /// is copied by a call to a byte loop on this target).
        macs: [u32; 3],
        last_seen_ns: u64,
    }

    #[map]
    static FLOOR_CT: LruHashMap<Key, Val> = LruHashMap::with_max_entries(65_536, 0);
    #[map]
    static FLOOR_FIB: PerCpuArray<bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

    const OK: i32 = TC_ACT_OK as i32;
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    // Offsets in the frame (IPv4 without options).
    const TTL: usize = 22;
    const IP_CSUM: usize = 24;
    const SADDR: usize = 26;
    const L4: usize = 34;

    #[classifier]
    pub fn floor_nat_peer(ctx: TcContext) -> i32 {
        hop(&ctx, true)
    }

    #[classifier]
    pub fn floor_nat_fib(ctx: TcContext) -> i32 {
        hop(&ctx, false)
    }

    /// One's complement sum folded to 16 bits.
    #[inline(always)]
    fn fold(mut s: u64) -> u16 {
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s as u16
    }

    /// The one's complement difference of a 32-bit field going from `a` to `b` (RFC 1624:
    /// ~m + m'), as 16-bit words read in the packet's own byte order.
    #[inline(always)]
    fn diff32(a: u32, b: u32) -> u64 {
        let na = !a;
        (na & 0xffff) as u64 + (na >> 16) as u64 + (b & 0xffff) as u64 + (b >> 16) as u64
    }

    #[inline(always)]
    fn hop(ctx: &TcContext, peer: bool) -> i32 {
        let (data, end) = (ctx.data(), ctx.data_end());
        // Ethernet, IPv4 without options, and TCP's header up to its checksum (UDP's 8 bytes
        // are within it too, but a short UDP datagram is fine: checked below).
        if data + L4 + 8 > end {
            return OK;
        }
        // SAFETY (every read and write of the packet below): within [data, end), checked.
        let ethertype = unsafe { *((data + 12) as *const u16) };
        let vihl = unsafe { *((data + 14) as *const u8) };
        // 0x0800 as read on a little-endian machine; version 4 with a 20-byte header.
        if ethertype != 0x0008 || vihl != 0x45 {
            return OK;
        }
        // More fragments or a fragment offset (the DF bit aside): the kernel's.
        let frag = unsafe { *((data + 20) as *const u16) };
        if frag & 0xff3f != 0 {
            return OK;
        }
        let proto = unsafe { *((data + TTL + 1) as *const u8) };
        let csum_at = match proto {
            TCP => L4 + 16,
            UDP => L4 + 6,
            _ => return OK,
        };
        if data + csum_at + 2 > end {
            return OK;
        }
        let saddr = unsafe { *((data + SADDR) as *const u32) };
        let daddr = unsafe { *((data + SADDR + 4) as *const u32) };
        let ports = unsafe { *((data + L4) as *const u32) };
        let key: Key = [saddr, daddr, ports, proto as u32];
        let v = match FLOOR_CT.get_ptr_mut(&key) {
            Some(v) => v,
            None => match new_flow(ctx, &key) {
                Some(v) => v,
                None => return OK,
            },
        };
        // SAFETY: map value pointer, valid for this run.
        let v = unsafe { &mut *v };
        // The packet pointers again: the verifier forgets the bounds across the calls.
        let (data, end) = (ctx.data(), ctx.data_end());
        if data + csum_at + 2 > end {
            return OK;
        }
        let ttl = unsafe { *((data + TTL) as *const u8) };
        if ttl <= 1 {
            return OK;
        }
        let df = frag & 0x0040 != 0;
        if df && ctx.len() > v.mtu as u32 {
            let mut mtu_len: u32 = 0;
            // SAFETY: valid ctx and out pointer; BPF_MTU_CHK_SEGS (1), mtu_len 0, len_diff 0.
            if unsafe { bpf_check_mtu(ctx.skb.skb.cast(), v.ifindex, &mut mtu_len, 0, 1) } > 0 {
                return OK;
            }
        }
        let (data, end) = (ctx.data(), ctx.data_end());
        if data + csum_at + 2 > end {
            return OK;
        }
        let nports = (v.sport as u32) | ((v.dport as u32) << 16);
        let addrs = diff32(saddr, v.saddr) + diff32(daddr, v.daddr);
        // TTL and protocol are one 16-bit word: the TTL's byte is its low byte as read.
        let tp = unsafe { *((data + TTL) as *const u16) };
        let ip_csum = unsafe { *((data + IP_CSUM) as *const u16) };
        let ip_new = !fold((!ip_csum) as u64 + addrs + (!tp) as u64 + (tp - 1) as u64);
        let l4_csum = unsafe { *((data + csum_at) as *const u16) };
        let mut l4_new = l4_csum;
        if !(proto == UDP && l4_csum == 0) {
            l4_new = !fold((!l4_csum) as u64 + addrs + diff32(ports, nports));
            if proto == UDP && l4_new == 0 {
                l4_new = 0xffff;
            }
        }
        if proto == TCP {
            let fl = unsafe { *((data + L4 + 13) as *const u8) };
            // FIN or RST: the entry's timeout shortens.
            v.flags |= fl & 0x05;
        }
        unsafe {
            *(data as *mut u32) = v.macs[0];
            *((data + 4) as *mut u32) = v.macs[1];
            *((data + 8) as *mut u32) = v.macs[2];
            *((data + TTL) as *mut u16) = tp - 1;
            *((data + IP_CSUM) as *mut u16) = ip_new;
            *((data + SADDR) as *mut u32) = v.saddr;
            *((data + SADDR + 4) as *mut u32) = v.daddr;
            *((data + L4) as *mut u32) = nports;
            *((data + csum_at) as *mut u16) = l4_new;
        }
        // SAFETY: plain helper calls.
        v.last_seen_ns = unsafe { bpf_ktime_get_coarse_ns() };
        unsafe { if peer { bpf_redirect_peer(v.ifindex, 0) as i32 } else { bpf_redirect(v.ifindex, 0) as i32 } }
    }

    /// A new flow: its route, and the entry that translates it to itself. None: no route or
    /// no neighbour yet (the kernel's to handle).
    #[inline(never)]
    fn new_flow(ctx: &TcContext, key: &Key) -> Option<*mut Val> {
        let fib = FLOOR_FIB.get_ptr_mut(0)?;
        // SAFETY: per-CPU map value, valid for this run; nothing else runs on this CPU.
        let fib = unsafe { &mut *fib };
        let w = fib as *mut bpf_fib_lookup as *mut u64;
        for i in 0..8 {
            // SAFETY: within the 64-byte parameters; all-zero is valid.
            unsafe { w.add(i).write_volatile(0) };
        }
        fib.family = 2; // AF_INET
        // SAFETY: the context's skb.
        fib.ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
        fib.__bindgen_anon_3.ipv4_src = key[0];
        fib.__bindgen_anon_4.ipv4_dst = key[1];
        // SAFETY: valid ctx and parameters.
        let rc = unsafe { fib_lookup(ctx.skb.skb.cast(), fib, core::mem::size_of::<bpf_fib_lookup>() as i32, 0) };
        if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
            return None;
        }
        // Six half-words each (the MACs sit at even offsets of the 8-aligned parameters).
        let mut m = [0u16; 6];
        let d = fib.dmac.as_ptr() as *const u16;
        let sm = fib.smac.as_ptr() as *const u16;
        for i in 0..3 {
            // SAFETY: within the 6-byte arrays, 2-aligned in the 8-aligned parameters.
            unsafe {
                m[i] = d.add(i).read_volatile();
                m[i + 3] = sm.add(i).read_volatile();
            }
        }
        let w = |i: usize| (m[2 * i] as u32) | ((m[2 * i + 1] as u32) << 16);
        let v = Val {
            saddr: key[0],
            daddr: key[1],
            sport: key[2] as u16,
            dport: (key[2] >> 16) as u16,
            ifindex: fib.ifindex,
            // SAFETY: the union field the lookup wrote on success.
            mtu: unsafe { fib.__bindgen_anon_1.mtu_result },
            flags: 0,
            _pad: 0,
            macs: [w(0), w(1), w(2)],
            last_seen_ns: 0,
        };
        FLOOR_CT.insert(key, &v, 0).ok()?;
        FLOOR_CT.get_ptr_mut(key)
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(no_mangle)]
    #[unsafe(link_section = "license")]
    pub static LICENSE: [u8; 4] = *b"GPL\0";
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("netd-floor is an eBPF object for the bench; it is built with netd-ebpf");
    std::process::exit(1);
}
