//! Source-port choice for IPv6 translations: the same rules as `crate::snat` against `CT_V6`
//! (the original port when its reply tuple is free and `keep`, else random ports outside the
//! host's ephemeral range; a tuple closed over a second ago counts as free).
use aya_ebpf::helpers::generated::bpf_get_prandom_u32;
use netd_common::{
    CT_F_CLOSING, DEFAULT_PORT_RANGE, SNAT_FLOOR, SNAT_TRIES,
    v6::{Addr6, CtKey6},
};

use super::ct;
use crate::maps::config;

#[inline(always)]
fn host_range() -> (u32, u32) {
    match config() {
        Some(c) if c.port_lo != 0 && c.port_hi >= c.port_lo => (c.port_lo as u32, c.port_hi as u32),
        _ => (DEFAULT_PORT_RANGE.0 as u32, DEFAULT_PORT_RANGE.1 as u32),
    }
}

/// A source port for `new_saddr -> daddr:dport` whose reply tuple is free (see
/// `snat::pick_port`). A BPF-to-BPF call: its key stays off the callers' frames.
#[inline(always)]
pub fn pick_port(proto: u8, daddr: &Addr6, new_saddr: &Addr6, ports: u32, keep: bool) -> Option<u16> {
    let r = pick(proto, daddr, new_saddr, ports, keep);
    if r == NONE { None } else { Some(r as u16) }
}

/// [`pick_port`]'s body; above 0xffff: none (an `Option` return would take a sixth argument).
#[inline(never)]
fn pick(proto: u8, daddr: &Addr6, new_saddr: &Addr6, ports: u32, keep: bool) -> u32 {
    // (Five arguments at most for a BPF call: the two ports share one, dport high.)
    let dport = (ports >> 16) as u16;
    let orig = ports as u16;
    let mut rk = ct::key6(daddr, new_saddr, dport, orig, proto);
    if keep && free(&rk) {
        return orig as u32;
    }
    let (lo, hi) = host_range();
    let floor = SNAT_FLOOR as u32;
    let low = if lo > floor { lo - floor } else { 0 };
    let high = if hi < 65_535 { 65_535 - hi } else { 0 };
    let (low, high, hi) = if low + high == 0 { (65_536 - floor, 0, 65_535) } else { (low, high, hi) };
    let n = (low + high).max(1);
    for _ in 0..SNAT_TRIES {
        // SAFETY: plain helper call.
        let r = unsafe { bpf_get_prandom_u32() } % n;
        let p = if r < low { floor + r } else { hi + 1 + (r - low) };
        let port = (p as u16).to_be();
        rk.dport = port;
        if free(&rk) {
            return port as u32;
        }
    }
    NONE
}

const NONE: u32 = 0x1_0000;

/// Both ports in one argument for [`pick_port`] (network byte order each).
#[inline(always)]
pub fn ports(dport: u16, orig: u16) -> u32 {
    ((dport as u32) << 16) | orig as u32
}

#[inline(always)]
fn free(rk: &CtKey6) -> bool {
    match ct::get(rk) {
        None => true,
        Some(v) => {
            // SAFETY: plain helper call.
            let now = crate::conntrack::now();
            if v.flags & CT_F_CLOSING != 0 && now.saturating_sub(v.last_seen_ns) > 1_000_000_000 {
                ct::remove_pair(rk, v);
                true
            } else {
                false
            }
        }
    }
}
