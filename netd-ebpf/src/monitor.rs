//! `netd monitor --type drop|trace`: events into the `EVENTS` ring buffer, only while the daemon
//! has a monitor client (the `MONITOR` flags). Nothing here runs inside a program's body: the
//! entry points call [`observe`] with the verdict their body returned (the body's frame is gone
//! by then, so the emitter's frame never adds to the body's 512 bytes), and a counted drop
//! records its reason in a per-CPU slot ([`note_drop`]) only while drops are monitored. The map
//! keys are a `.rodata` zero, not a stack slot: these calls add no stack to the bodies.
//!
//! Cost with nobody listening: one array read (the verifier inlines array lookups) per packet
//! of the traced entry points, one per counted drop; no ring buffer access.
use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::generated::bpf_map_lookup_elem,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use netd_common::monitor::{
    EVENTS_BYTES, F_DROP, F_TRACE, KIND_DROP, KIND_TRACE, MonitorEvent, REASON_UNKNOWN, VERDICT_DROP, VERDICT_PASS,
    VERDICT_REDIRECT,
};

#[map(name = "MONITOR")]
static MONITOR: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map(name = "LAST_DROP")]
static LAST_DROP: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The key of the one-entry maps, in `.rodata` (a map key may point into a map value).
static ZERO: u32 = 0;

/// Entry 0 of a one-entry array (`map`: the map's definition; both map types are
/// `#[repr(transparent)]` over it).
#[inline(always)]
fn slot<M>(map: &M) -> Option<*mut u32> {
    // SAFETY: a lookup in a map of u32 values; the key is a static.
    let p = unsafe { bpf_map_lookup_elem(map as *const M as *mut _, &ZERO as *const u32 as *const _) };
    if p.is_null() { None } else { Some(p as *mut u32) }
}

/// What is monitored (`F_*`), 0 with nobody listening.
#[inline(always)]
fn flags() -> u32 {
    // SAFETY: a valid map value pointer.
    slot(&MONITOR).map_or(0, |p| unsafe { *p })
}

/// Whether `netd up --bpf-log` asked for the programs' debug log (aya-log's level, a `.rodata`
/// constant the loader sets: without the flag the verifier prunes every logging branch, so the
/// log costs nothing at run time).
#[inline(always)]
fn bpf_log() -> bool {
    aya_log_ebpf::macro_support::level_enabled(aya_log_ebpf::macro_support::Level::Debug)
}

/// A drop was counted with `reason`: remember it for [`observe`] while drops are monitored
/// (or logged).
#[inline(always)]
pub fn note_drop(reason: u32) {
    if (bpf_log() || flags() & F_DROP != 0)
        && let Some(p) = slot(&LAST_DROP)
    {
        // SAFETY: this CPU's slot.
        unsafe { *p = reason + 1 };
    }
}

/// After a TC entry point's body: report the packet when its kind of event is monitored
/// (`trace`: this entry point's passed and redirected packets are traced too). Returns
/// `verdict`.
#[inline(always)]
pub fn observe(skb: *mut __sk_buff, verdict: i32, prog: u32, trace: bool) -> i32 {
    let drop = verdict == TC_ACT_SHOT as i32;
    if drop && bpf_log() {
        // SAFETY: the program's context.
        log_drop(skb, unsafe { (*skb).ifindex }, prog);
    }
    if !drop && !trace {
        return verdict;
    }
    let f = flags();
    if f & (if drop { F_DROP } else { F_TRACE }) != 0 {
        // SAFETY: the program's context.
        let (data, end, ifindex, len) =
            unsafe { ((*skb).data as usize, (*skb).data_end as usize, (*skb).ifindex, (*skb).len) };
        let v = if drop {
            VERDICT_DROP
        } else if verdict == TC_ACT_REDIRECT as i32 {
            VERDICT_REDIRECT
        } else {
            VERDICT_PASS
        };
        emit(data, end, ifindex, meta(len, v, prog));
    }
    verdict
}

/// `netd up --bpf-log`: one debug line per dropped packet (program, reason, interface), read
/// by the daemon through aya-log. The reason stays for [`emit`] when drops are also monitored.
#[inline(never)]
fn log_drop(ctx: *mut __sk_buff, ifindex: u32, prog: u32) {
    let monitored = flags() & F_DROP != 0;
    let reason = match slot(&LAST_DROP) {
        // SAFETY: this CPU's slot.
        Some(p) => unsafe {
            let r = *p;
            if !monitored {
                *p = 0;
            }
            r
        },
        None => 0,
    };
    // `reason` is `DropReason + 1`; 0: none recorded.
    aya_log_ebpf::debug!(&ctx, "drop: prog {} reason {} ifindex {}", prog, reason, ifindex);
}

/// The same for XDP (drops only).
#[inline(always)]
pub fn observe_xdp(data: usize, end: usize, ifindex: u32, dropped: bool, prog: u32) {
    if dropped && flags() & F_DROP != 0 {
        emit(data, end, ifindex, meta((end - data) as u32, VERDICT_DROP, prog));
    }
}

/// [`emit`]'s last argument (a BPF call takes five at most): length, verdict, program.
#[inline(always)]
fn meta(len: u32, verdict: u8, prog: u32) -> u64 {
    (u64::from(len) << 32) | (u64::from(verdict) << 8) | u64::from(prog & 0xff)
}

/// Write one event (a BPF-to-BPF call, off every body's frame).
#[inline(never)]
fn emit(data: usize, end: usize, ifindex: u32, meta: u64) {
    let (len, verdict, prog) = ((meta >> 32) as u32, (meta >> 8) as u8, meta as u8);
    let reason = if verdict == VERDICT_DROP {
        match slot(&LAST_DROP) {
            // SAFETY: this CPU's slot.
            Some(p) => unsafe {
                let r = *p;
                *p = 0;
                if r == 0 { REASON_UNKNOWN } else { (r - 1) as u8 }
            },
            None => REASON_UNKNOWN,
        }
    } else {
        0
    };
    let Some(mut entry) = EVENTS.reserve::<MonitorEvent>(0) else { return };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record; zeroed, then filled field by field (no copy of a
    // stack temporary: this frame stays small), before it is submitted.
    unsafe {
        core::ptr::write_bytes(e, 0, 1);
        let e = &mut *e;
        e.kind = if verdict == VERDICT_DROP { KIND_DROP } else { KIND_TRACE };
        e.reason = reason;
        e.prog = prog;
        e.verdict = verdict;
        e.ifindex = ifindex;
        e.len = len;
        fill(e, data, end);
    }
    entry.submit(0);
}

/// The packet's family, protocol, addresses and ports (bounds-checked direct reads).
#[inline(always)]
fn fill(e: &mut MonitorEvent, data: usize, end: usize) {
    const ETH: usize = 14;
    if data + ETH > end {
        return;
    }
    // SAFETY: checked above.
    let et = unsafe { u16::from_be(*((data + 12) as *const u16)) };
    let l4 = match et {
        0x0800 => {
            if data + ETH + 20 > end {
                return;
            }
            let ip = data + ETH;
            // SAFETY: 20 bytes checked above.
            unsafe {
                let ihl = ((*(ip as *const u8) & 0x0f) as usize) * 4;
                let frag = u16::from_be(*((ip + 6) as *const u16)) & 0x1fff;
                e.family = 4;
                e.proto = *((ip + 9) as *const u8);
                core::ptr::copy_nonoverlapping((ip + 12) as *const u8, e.saddr.as_mut_ptr(), 4);
                core::ptr::copy_nonoverlapping((ip + 16) as *const u8, e.daddr.as_mut_ptr(), 4);
                if frag != 0 || ihl < 20 {
                    return;
                }
                ip + (ihl & 0x3c)
            }
        }
        0x86dd => {
            if data + ETH + 40 > end {
                return;
            }
            let ip = data + ETH;
            // SAFETY: 40 bytes checked above.
            unsafe {
                e.family = 6;
                e.proto = *((ip + 6) as *const u8);
                core::ptr::copy_nonoverlapping((ip + 8) as *const u8, e.saddr.as_mut_ptr(), 16);
                core::ptr::copy_nonoverlapping((ip + 24) as *const u8, e.daddr.as_mut_ptr(), 16);
            }
            ip + 40
        }
        _ => return,
    };
    if l4 + 4 > end {
        return;
    }
    // SAFETY: 4 bytes checked above.
    unsafe {
        match e.proto {
            6 | 17 => {
                e.sport = *(l4 as *const u16);
                e.dport = *((l4 + 2) as *const u16);
            }
            // ICMP / ICMPv6 echo: the id (requests as source, replies as destination, as the
            // conntrack keys have it).
            1 | 58 if l4 + 6 <= end => {
                let t = *(l4 as *const u8);
                let id = *((l4 + 4) as *const u16);
                if t == 8 || t == 128 {
                    e.sport = id;
                } else if t == 0 || t == 129 {
                    e.dport = id;
                }
            }
            _ => {}
        }
    }
}
