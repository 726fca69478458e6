//! TCP window tracking in the programs: load a segment's fields and hand them to the shared
//! logic (`netd_common::tcp_window`), for `CT_V4` and `CT_V6` alike (their entries keep the same
//! `flags`/`ack`/`wnd` fields; only the receiver's lookup differs, passed in).
use aya_ebpf::{helpers::generated::bpf_skb_load_bytes, programs::TcContext};
use netd_common::{
    CT_WSCALE_NONE, DropReason,
    tcp_window::{self, Rst, Segment, TCP_RST},
};

use crate::{maps::tcp_scratch, parse::IP_OFF, stats};

/// The TCP header of an IPv4 frame without options: read straight from the linear data.
const L4_DIRECT: usize = IP_OFF + 20;

/// seq, ack, data offset (bytes), window of the TCP header at `l4` (the flags are the
/// caller's): from the linear data for the common frame, else with `bpf_skb_load_bytes`.
#[inline(always)]
fn load(ctx: &TcContext, l4: usize) -> Option<(u32, u32, usize, u16)> {
    let data = ctx.data();
    if l4 == L4_DIRECT && data + L4_DIRECT + 20 <= ctx.data_end() {
        // SAFETY: the 20-byte TCP header is within the linear data (checked above).
        return Some(unsafe {
            (
                u32::from_be(*((data + L4_DIRECT + 4) as *const u32)),
                u32::from_be(*((data + L4_DIRECT + 8) as *const u32)),
                ((*((data + L4_DIRECT + 12) as *const u8) >> 4) as usize) * 4,
                u16::from_be(*((data + L4_DIRECT + 14) as *const u16)),
            )
        });
    }
    let h = &mut tcp_scratch()?.hdr;
    // SAFETY: valid ctx; 12 bytes into the 12-byte scratch buffer.
    if unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), (l4 + 4) as u32, h.as_mut_ptr().cast(), 12) } != 0 {
        return None;
    }
    Some((
        u32::from_be_bytes([h[0], h[1], h[2], h[3]]),
        u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ((h[8] >> 4) as usize) * 4,
        u16::from_be_bytes([h[10], h[11]]),
    ))
}

/// The window scale option among a SYN's options (`doff` is the header's length): the scale or
/// `CT_WSCALE_NONE`. The options are loaded into per-CPU scratch; the walk is short for the
/// verifier's sake (every stack puts the option among its first six: Linux's MSS, SACK,
/// timestamps, NOP, window scale); options it does not get through count as the largest scale
/// (liberal).
#[inline(always)]
fn wscale(ctx: &TcContext, l4: usize, doff: usize) -> u16 {
    let n = if doff > 60 {
        40
    } else if doff > 20 {
        doff - 20
    } else {
        0
    };
    if n == 0 {
        return CT_WSCALE_NONE;
    }
    let Some(s) = tcp_scratch() else { return 14 };
    let s = &mut s.opts;
    // SAFETY: valid ctx; n (1..=40) bytes into the 40-byte scratch buffer.
    if n > 40
        || unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), (l4 + 20) as u32, s.as_mut_ptr().cast(), n as u32) } != 0
    {
        return 14;
    }
    let mut i = 0usize;
    for _ in 0..6 {
        if i >= n || i >= 39 {
            return CT_WSCALE_NONE;
        }
        let kind = s[i];
        if kind == 0 {
            return CT_WSCALE_NONE;
        }
        if kind == 1 {
            i += 1;
            continue;
        }
        let len = s[i + 1] as usize;
        if kind == 3 && len == 3 {
            if i + 2 >= n || i + 2 >= 40 {
                return CT_WSCALE_NONE;
            }
            return s[i + 2] as u16;
        }
        if len < 2 {
            return CT_WSCALE_NONE;
        }
        i += len;
    }
    if i >= n { CT_WSCALE_NONE } else { 14 }
}

/// One TCP segment (flags `tcp_flags`, header at `l4`) of a tracked flow whose entry holds
/// `flags`, `ack` and `wnd`, before it is translated. A RST is judged against its receiver's
/// window (`receiver`: the other direction's entry, looked up only for a RST); false: a blind
/// RST, counted (`invalid_rst`), to be dropped (the flow stays open). Any other segment updates
/// its direction's window state.
#[inline(always)]
pub fn track(
    ctx: &TcContext,
    l4: usize,
    tcp_flags: u8,
    flags: &mut u8,
    ack: &mut u32,
    wnd: &mut u16,
    receiver: impl FnOnce() -> Option<(u8, u32, u16)>,
) -> bool {
    let Some((seq, a, doff, win)) = load(ctx, l4) else { return true };
    let mut s = Segment { seq, ack: a, win, flags: tcp_flags, wscale: CT_WSCALE_NONE };
    if tcp_flags & TCP_RST != 0 {
        return match tcp_window::judge_rst(*flags, *wnd, receiver(), &s) {
            Rst::Invalid => {
                stats::count_drop(DropReason::InvalidRst);
                false
            }
            Rst::Close => {
                *flags |= netd_common::CT_F_CLOSING | netd_common::CT_F_RST;
                true
            }
            Rst::Keep => true,
        };
    }
    if tcp_window::wants_scale(*flags, tcp_flags) {
        s.wscale = wscale(ctx, l4, doff);
    }
    tcp_window::on_segment(flags, ack, wnd, &s);
    true
}
