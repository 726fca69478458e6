//! Per-CPU counters (no atomics needed: each CPU owns its slot).
use aya_ebpf::maps::PerCpuArray;
use netd_common::{DropReason, PacketCount, ProgId};

use crate::maps::{DROP_STATS, PORT_STATS, PROG_STATS};

#[inline(always)]
fn add(map: &PerCpuArray<PacketCount>, idx: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, valid for the duration of the program.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn count_prog(prog: ProgId, bytes: u64) {
    add(&PROG_STATS, prog as u32, bytes);
}

#[inline(always)]
pub fn count_drop(reason: DropReason) {
    add(&DROP_STATS, reason as u32, 0);
    crate::monitor::note_drop(reason as u32);
}

/// A packet counted under `reason` but passed on (the stack judges it): no drop for
/// `netd monitor` to report.
#[inline(always)]
pub fn count_passed(reason: DropReason) {
    add(&DROP_STATS, reason as u32, 0);
}

/// `slot_plus_one` as stored in `CtValue::stats_slot` (0: not a published-port flow).
#[inline(always)]
pub fn count_port(slot_plus_one: u32, bytes: u64) {
    if slot_plus_one != 0 {
        add(&PORT_STATS, slot_plus_one - 1, bytes);
    }
}
