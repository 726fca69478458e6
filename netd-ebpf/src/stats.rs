//! Per-CPU counters (no atomics needed: each CPU owns its slot).
use netd_common::{DropReason, ProgId};

use crate::maps::{DROP_STATS, PROG_STATS};

#[inline(always)]
pub fn count_prog(prog: ProgId, bytes: u64) {
    if let Some(c) = PROG_STATS.get_ptr_mut(prog as u32) {
        // SAFETY: per-CPU slot, valid for the duration of the program.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn count_drop(reason: DropReason) {
    if let Some(c) = DROP_STATS.get_ptr_mut(reason as u32) {
        // SAFETY: as above.
        unsafe {
            (*c).packets += 1;
        }
    }
}
