//! Source-port choice for the translations netd makes (masquerade, hairpin, a host flow or a
//! published-port flow whose reply tuple is taken): a tuple is handed out only when its reply
//! tuple is free in `CT_V4`, and random ports are drawn outside the host's ephemeral range
//! (`net.ipv4.ip_local_port_range` of the daemon's netns, kept in `CONFIG` by userspace), so
//! no host socket picks one of them afterwards.
use aya_ebpf::helpers::generated::bpf_get_prandom_u32;
use netd_common::{CT_F_CLOSING, CtKey, DEFAULT_PORT_RANGE, SNAT_FLOOR, SNAT_TRIES};

use crate::{conntrack, maps::config};

/// The host's ephemeral range (host byte order).
#[inline(always)]
fn host_range() -> (u32, u32) {
    match config() {
        Some(c) if c.port_lo != 0 && c.port_hi >= c.port_lo => (c.port_lo as u32, c.port_hi as u32),
        _ => (DEFAULT_PORT_RANGE.0 as u32, DEFAULT_PORT_RANGE.1 as u32),
    }
}

/// A source port for `new_saddr -> daddr:dport` whose reply tuple is free. With `keep`, the
/// original port when free; otherwise (or when taken) random ports of SNAT_FLOOR-65535 outside
/// the host's ephemeral range (all of SNAT_FLOOR-65535 when the range leaves nothing). A tuple
/// whose flow closed (FIN/RST) over a second ago counts as free, like a TIME_WAIT slot being
/// reused, so short connections do not exhaust the range.
#[inline(always)]
pub fn pick_port(proto: u8, daddr: u32, new_saddr: u32, dport: u16, orig: u16, keep: bool) -> Option<u16> {
    let mut rk = conntrack::ct_key(daddr, new_saddr, dport, orig, proto);
    if keep && free(&rk) {
        return Some(orig);
    }
    let (lo, hi) = host_range();
    let floor = SNAT_FLOOR as u32;
    // Below the range: floor..lo-1; above: hi+1..65535.
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
            return Some(port);
        }
    }
    None
}

/// Whether a reply tuple may be handed to a new flow (a closed flow's tuple is, after a second).
#[inline(always)]
pub fn free(rk: &CtKey) -> bool {
    match conntrack::lookup(rk) {
        None => true,
        Some(v) => {
            let now = conntrack::now();
            if v.flags & CT_F_CLOSING != 0 && now.saturating_sub(v.last_seen_ns) > 1_000_000_000 {
                // The closed flow's own direction must not outlive its reply tuple.
                conntrack::remove_pair(rk, v);
                true
            } else {
                false
            }
        }
    }
}
