//! The daemon's passes over the conntrack tables (`CT_V4`, `CT_V6`): one algorithm for both
//! families, over [`CtFamily`].

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    os::fd::{AsFd, OwnedFd},
};

use netd_common::{
    CT_F_HOSTNAT, CT_F_REPLY, CtKey, CtValue, map_names,
    v6::{Addr6, CtKey6, CtValue6, map_names as m6},
};

use super::{CtMaps, ct_timeout, err};
use crate::dataplane::DpResult;

/// One conntrack family: its key, value and map, as the passes see them.
pub(super) trait CtFamily: aya::Pod + Copy + Eq + Hash {
    type Value: aya::Pod + Copy;
    /// The family's address (the host side of a published flow).
    type Addr: Eq + Hash + Copy;
    /// A total order on keys (sorting and binary search).
    type Order: Ord;
    const MAP: &'static str;
    /// This family's table, when the daemon has it.
    fn table(maps: &CtMaps) -> Option<&OwnedFd>;
    fn proto(&self) -> u8;
    fn order(&self) -> Self::Order;
    /// The key of the entry's other direction (its translation, reversed).
    fn partner(&self, v: &Self::Value) -> Self;
    /// Where a binding's flow has the host's address: the originator's destination (the client
    /// connected to it), the reply entry's translated source.
    fn host_sides(&self, v: &Self::Value) -> [(Self::Addr, u16); 2];
    /// The fields the timeouts read (action, flags, last seen), as a v4 value.
    fn state(v: &Self::Value) -> CtValue;
    fn stats_slot(v: &Self::Value) -> u32;
}

impl CtFamily for CtKey {
    type Value = CtValue;
    type Addr = u32;
    type Order = (u32, u32, u16, u16, u8);
    const MAP: &'static str = map_names::CT_V4;
    fn table(maps: &CtMaps) -> Option<&OwnedFd> {
        Some(&maps.ct)
    }
    fn proto(&self) -> u8 {
        self.proto
    }
    fn order(&self) -> Self::Order {
        (self.saddr, self.daddr, self.sport, self.dport, self.proto)
    }
    fn partner(&self, v: &CtValue) -> Self {
        CtKey { saddr: v.daddr, daddr: v.saddr, sport: v.dport, dport: v.sport, proto: self.proto, _pad: [0; 3] }
    }
    fn host_sides(&self, v: &CtValue) -> [(u32, u16); 2] {
        [(self.daddr, self.dport), (v.saddr, v.sport)]
    }
    fn state(v: &CtValue) -> CtValue {
        *v
    }
    fn stats_slot(v: &CtValue) -> u32 {
        v.stats_slot
    }
}

impl CtFamily for CtKey6 {
    type Value = CtValue6;
    type Addr = Addr6;
    type Order = (Addr6, Addr6, u16, u16, u8);
    const MAP: &'static str = m6::CT_V6;
    fn table(maps: &CtMaps) -> Option<&OwnedFd> {
        maps.ct6.as_ref()
    }
    fn proto(&self) -> u8 {
        self.proto
    }
    fn order(&self) -> Self::Order {
        (self.saddr, self.daddr, self.sport, self.dport, self.proto)
    }
    fn partner(&self, v: &CtValue6) -> Self {
        v.partner_key(self.proto)
    }
    fn host_sides(&self, v: &CtValue6) -> [(Addr6, u16); 2] {
        [(self.daddr, self.dport), (v.saddr, v.sport)]
    }
    fn state(v: &CtValue6) -> CtValue {
        v.state()
    }
    fn stats_slot(v: &CtValue6) -> u32 {
        v.stats_slot
    }
}

/// One GC pass's result for a family.
pub(super) struct GcPass {
    pub deleted: usize,
    /// Pairs (or lone entries) not yet assured: the programs' cap counts these.
    pub unassured: u64,
    /// Whether a live host flow has another port (the host-NAT hint stays).
    pub host_nat: bool,
}

impl CtMaps {
    /// The whole table, a few thousand entries per syscall (empty without the table).
    pub(super) fn dump_ct<K: CtFamily>(&self) -> DpResult<Vec<(K, K::Value)>> {
        let Some(fd) = K::table(self) else { return Ok(Vec::new()) };
        crate::bpfbatch::dump(fd.as_fd()).map_err(|e| err(K::MAP, e))
    }

    pub(super) fn delete_ct<K: CtFamily>(&self, keys: &[K]) -> DpResult<usize> {
        let Some(fd) = K::table(self) else { return Ok(0) };
        if keys.is_empty() {
            return Ok(0);
        }
        crate::bpfbatch::delete(fd.as_fd(), keys).map_err(|e| err(K::MAP, e))
    }

    fn has_ct<K: CtFamily>(&self, k: &K) -> DpResult<bool> {
        let Some(fd) = K::table(self) else { return Ok(false) };
        crate::bpfbatch::lookup::<K, K::Value>(fd.as_fd(), k).map(|v| v.is_some()).map_err(|e| err(K::MAP, e))
    }

    /// Delete every entry matching `f` (both directions of a flow match on one of them, so the
    /// caller's predicate looks at both the key and the translation), and the stale
    /// translations of the bindings in `fresh` ((proto, host port, stats slot + 1), published
    /// since the last pass): never a stale translation for a (re)published port, moby#53384's
    /// class of bug. The latest binding of a port wins. `host`: the addresses the programs take
    /// for the host's (`HOST_ADDRS`, `HOST_ADDRS_V6`).
    pub(super) fn purge_ct<K: CtFamily>(
        &self,
        fresh: Vec<(u8, u16, u32)>,
        host: &HashSet<K::Addr>,
        f: impl Fn(&K, &K::Value) -> bool,
    ) -> DpResult<usize> {
        if K::table(self).is_none() {
            return Ok(0);
        }
        let fresh: HashMap<(u8, u16), u32> = fresh.into_iter().map(|(pr, hp, s)| ((pr, hp), s)).collect();
        // A sandbox's own flow to a server's port of the same number has the host's address on
        // neither side.
        let stale = |k: &K, v: &K::Value| {
            k.host_sides(v).iter().any(|(ha, hp)| {
                host.contains(ha) && fresh.get(&(k.proto(), *hp)).is_some_and(|slot| K::stats_slot(v) != *slot)
            })
        };
        // The purge runs after the reply, so flows may start on the new binding while it dumps.
        // Only an originator's entry carries its binding's slot; a reply entry (slot 0) goes with
        // its stale originator, or alone when it has none (checked again in the map: the dump is
        // not a snapshot, and a fresh flow's originator may be in buckets it had passed).
        let all = self.dump_ct::<K>()?;
        let present: HashSet<K> = if fresh.is_empty() { HashSet::new() } else { all.iter().map(|(k, _)| *k).collect() };
        let mut doomed: Vec<K> = Vec::new();
        for (k, v) in &all {
            if f(k, v) {
                doomed.push(*k);
            } else if stale(k, v) {
                let partner = k.partner(v);
                if K::state(v).flags & CT_F_REPLY == 0 {
                    doomed.extend([*k, partner]);
                } else if !present.contains(&partner) && !self.has_ct(&partner)? {
                    doomed.push(*k);
                }
            }
        }
        drop(all);
        doomed.sort_unstable_by_key(K::order);
        doomed.dedup();
        self.delete_ct(&doomed)
    }

    /// One expiry pass over a family's table at `now`: a flow (both directions) goes when its
    /// newer direction has been idle longer than its state's timeout ([`ct_timeout`]).
    pub(super) fn gc_ct<K: CtFamily>(&self, now: u64) -> DpResult<GcPass> {
        // One sorted copy of the table, searched for partners: a full v4 table (262,144 entries)
        // is 16 MiB here, where a HashMap beside the dump doubled it.
        let mut all = self.dump_ct::<K>()?;
        all.sort_unstable_by_key(|(k, _)| k.order());
        let mut doomed = Vec::new();
        let mut unassured = 0u64;
        let mut host_nat = false;
        for (k, v) in &all {
            let partner = k.partner(v);
            let p = all.binary_search_by_key(&partner.order(), |(k, _)| k.order()).ok().map(|i| K::state(&all[i].1));
            let s = K::state(v);
            let last = s.last_seen_ns.max(p.map_or(0, |p| p.last_seen_ns));
            let (timeout_s, assured) = ct_timeout(k.proto(), &s, p.as_ref());
            if now.saturating_sub(last) > timeout_s * 1_000_000_000 {
                doomed.push(*k);
            } else {
                host_nat |= s.flags & CT_F_HOSTNAT != 0;
                // One per pair (the reply side), or per lone entry.
                if !assured && (s.flags & CT_F_REPLY != 0 || p.is_none()) {
                    unassured += 1;
                }
            }
        }
        drop(all);
        let deleted = self.delete_ct(&doomed)?;
        Ok(GcPass { deleted, unassured, host_nat })
    }
}
