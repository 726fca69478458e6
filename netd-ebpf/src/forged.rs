//! A sandbox's packet from an address that is no sandbox's (forged: the gateway's, another
//! network's, made up) to a sandbox, in either family.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use netd_common::DropReason;

use crate::stats;

/// Docker's FORWARD rules judge by interface, not address, so netd judges such a frame by where
/// it goes. Bridged to the target's own MAC (`dst_mac`), it is on the target's bridge: ICC
/// (`icc`, the target network's) decides. Sent to a gateway, it would be routed across:
/// isolation drops it.
#[inline(always)]
pub fn to_sandbox(ctx: &TcContext, dst_mac: &[u8; 6], icc: bool) -> i32 {
    let m = dst_mac;
    let bridged = ctx.load::<u32>(0).is_ok_and(|a| a == u32::from_ne_bytes([m[0], m[1], m[2], m[3]]))
        && ctx.load::<u16>(4).is_ok_and(|b| b == u16::from_ne_bytes([m[4], m[5]]));
    if bridged {
        if icc {
            return TC_ACT_OK as i32;
        }
        stats::count_drop(DropReason::Icc);
    } else {
        stats::count_drop(DropReason::Isolation);
    }
    TC_ACT_SHOT as i32
}
