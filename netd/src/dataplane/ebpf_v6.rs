//! The IPv6 half of the eBPF dataplane's userspace: `CT_V6` expiry (the same timeouts and
//! unanswered-flow recount as `CT_V4`) and the v6 map accessors.
use std::os::fd::AsFd;

use netd_common::v6::{Addr6, CtKey6, CtValue6, addr6, map_names as m6};

use super::{CtMaps, Ebpf, ct_timeout, err, release_freed_memory};
use crate::dataplane::{DpResult, EndpointSpec};

/// The wire form of an address, as the programs read it.
pub fn be_addr6(ip: std::net::Ipv6Addr) -> Addr6 {
    addr6(ip.octets())
}

/// A total order on v6 conntrack keys (`_pad` is always zero).
fn ct6_order(k: &CtKey6) -> ([u32; 4], [u32; 4], u16, u16, u8) {
    (k.saddr, k.daddr, k.sport, k.dport, k.proto)
}

impl CtMaps {
    fn ct6_dump(&self) -> DpResult<Vec<(CtKey6, CtValue6)>> {
        let Some(fd) = &self.ct6 else { return Ok(Vec::new()) };
        crate::bpfbatch::dump(fd.as_fd()).map_err(|e| err("CT_V6 lookup batch", e))
    }

    fn ct6_delete(&self, keys: &[CtKey6]) -> DpResult<usize> {
        let Some(fd) = &self.ct6 else { return Ok(0) };
        if keys.is_empty() {
            return Ok(0);
        }
        crate::bpfbatch::delete(fd.as_fd(), keys).map_err(|e| err("CT_V6 delete batch", e))
    }

    /// Delete every `CT_V6` entry matching `f` (both directions match on one of them: the
    /// predicate sees the key and the translation).
    pub(super) fn purge6(&self, f: impl Fn(&CtKey6, &CtValue6) -> bool) -> DpResult<usize> {
        let mut doomed: Vec<CtKey6> = self.ct6_dump()?.into_iter().filter(|(k, v)| f(k, v)).map(|(k, _)| k).collect();
        doomed.sort_unstable_by_key(ct6_order);
        doomed.dedup();
        self.ct6_delete(&doomed)
    }

    /// One GC pass over `CT_V6` at `now` (see `CtMaps::gc`): flows idle longer than their
    /// state's timeout go, both directions; the unanswered pairs are recounted into
    /// `CT_UNASSURED_V6`. Returns (entries deleted, whether a host flow has another port).
    pub(super) fn gc_v6(&self, now: u64) -> DpResult<(usize, bool)> {
        if self.ct6.is_none() {
            return Ok((0, false));
        }
        let mut all = self.ct6_dump()?;
        all.sort_unstable_by_key(|(k, _)| ct6_order(k));
        let mut doomed = Vec::new();
        let mut unassured = 0u64;
        let mut host_nat = false;
        for (k, v) in &all {
            let partner = v.partner_key(k.proto);
            let p = all.binary_search_by_key(&ct6_order(&partner), |(k, _)| ct6_order(k)).ok().map(|i| &all[i].1);
            let last = v.last_seen_ns.max(p.map_or(0, |p| p.last_seen_ns));
            let (timeout_s, assured) = ct_timeout(k.proto, &v.state(), p.map(CtValue6::state).as_ref());
            if now.saturating_sub(last) > timeout_s * 1_000_000_000 {
                doomed.push(*k);
            } else {
                host_nat |= v.flags & netd_common::CT_F_HOSTNAT != 0;
                if !assured && (v.flags & netd_common::CT_F_REPLY != 0 || p.is_none()) {
                    unassured += 1;
                }
            }
        }
        if let Some(fd) = &self.unassured6 {
            Self::cell(fd, m6::CT_UNASSURED_V6, Some(unassured))?;
        }
        drop(all);
        let n = self.ct6_delete(&doomed)?;
        drop(doomed);
        release_freed_memory();
        Ok((n, host_nat))
    }
}

impl Ebpf {
    /// An endpoint's IPv6 side goes: its `ENDPOINTS_V6` entry and every translation that
    /// involves its address.
    pub(super) fn endpoint6_removed(&mut self, ep: &EndpointSpec) -> DpResult<()> {
        let Some(ip6) = ep.ip6 else { return Ok(()) };
        let a = be_addr6(ip6);
        {
            let mut m: aya::maps::HashMap<&mut aya::maps::MapData, Addr6, netd_common::EndpointInfo> =
                self.map(m6::ENDPOINTS_V6)?;
            let _ = m.remove(&a);
        }
        let maps = self.ct_maps()?;
        maps.purge6(|k, v| k.saddr == a || k.daddr == a || v.saddr == a || v.daddr == a)?;
        Ok(())
    }
}
