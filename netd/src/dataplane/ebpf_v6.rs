//! The IPv6 half of the eBPF dataplane's userspace: the v6 maps filled from the model the way
//! the v4 ones are (`NETWORKS_V6`, `ENDPOINTS_V6`, `PUBLISHED_V6`, `UPLINKS_V6`,
//! `HOST_ADDRS_V6`), their adoption and pruning after a restart, and `CT_V6` purges and expiry
//! (the same timeouts and unanswered-flow recount as `CT_V4`). The programs take every IPv6
//! frame into their v6 bodies (`netd-ebpf/src/v6/`); with these maps empty they pass it.
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv6Addr},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use netd_common::{
    EndpointInfo, NET_F_MASQUERADE, NET_F_PROTECT, NET_F_ROUTED,
    v6::{
        Addr6, CtKey6, CtValue6, LinkKey6, NetworkInfo6, PublishedKey6, PublishedValue6, UplinkInfo6, addr6,
        map_names as m6,
    },
};

use super::{Ebpf, PurgeSet, be_port, err, map_keys6};
use crate::dataplane::{
    DpResult, EndpointSpec, GatewayMode, HostInfo, LinkRule, NetworkSpec, PortMapping, Proto, Uplink,
};

/// What the daemon wrote into the v6 maps (or replayed), so `prune` knows what else is stale.
#[derive(Default)]
pub(super) struct State6 {
    /// (proto, host port, stats slot + 1) of v6 bindings published since the last purge (see
    /// `Ebpf::pending_publish`; a table of their own, since a port's v4 and v6 bindings have
    /// a slot each).
    pub pending_publish: Vec<(u8, u16, u32)>,
    live_networks: HashSet<u32>,
    live_endpoints: HashSet<Addr6>,
    live_published: HashSet<PublishedKey6>,
    live_links: HashSet<LinkKey6>,
    /// The NAT46 bindings among them (to a v4-mapped address): `CONFIG_F_NAT46` while any.
    nat46: HashSet<PublishedKey6>,
    /// The host's v6 addresses in `HOST_ADDRS_V6` (besides the gateways), and the gateways.
    local_addrs: HashSet<Ipv6Addr>,
    gateways: HashSet<Ipv6Addr>,
}

impl State6 {
    /// Whether some NAT46 binding is in `PUBLISHED_V6`.
    pub fn has_nat46(&self) -> bool {
        !self.nat46.is_empty()
    }
}

/// The address of a wire-form one.
pub fn ipv6_of(a: &Addr6) -> Ipv6Addr {
    Ipv6Addr::from(netd_common::v6::octets6(a))
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// The v6 exception of a `--link` rule whose ends both have v6 addresses.
fn link_key6(l: &LinkRule) -> Option<LinkKey6> {
    let (src, dst) = l.v6?;
    Some(LinkKey6 { src: be_addr6(src), dst: be_addr6(dst), port: be_port(l.port), proto: l.proto.number(), _pad: 0 })
}

fn published_key6(p: &PortMapping) -> PublishedKey6 {
    PublishedKey6 { addr: be_addr6(v6(p.host_ip)), port: be_port(p.host_port), proto: p.proto.number(), _pad: 0 }
}

/// The wire form of an address, as the programs read it.
pub fn be_addr6(ip: std::net::Ipv6Addr) -> Addr6 {
    addr6(ip.octets())
}

impl PurgeSet {
    /// [`PurgeSet::matches`] for `CT_V6` entries.
    pub(super) fn matches6(&self, k: &CtKey6, v: &CtValue6) -> bool {
        let a = &self.addrs6;
        (a.contains(&k.saddr) || a.contains(&k.daddr) || a.contains(&v.saddr) || a.contains(&v.daddr))
            || self.slots.contains(&v.stats_slot)
            || (v.stats_slot == 0
                && (v.action == netd_common::CT_ACT_FIB
                    || v.action == netd_common::CT_ACT_NAT64
                    || v.action == netd_common::CT_ACT_NAT64_PEER)
                && (self.ports.contains(&(k.proto, k.dport)) || self.ports.contains(&(k.proto, v.sport))))
            || self.pairs6.iter().any(|(s, d)| (k.saddr == *s && k.daddr == *d) || (k.saddr == *d && k.daddr == *s))
    }
}

impl Ebpf {
    fn map6<K: aya::Pod, V: aya::Pod>(&mut self, name: &'static str) -> DpResult<BpfHashMap<&mut MapData, K, V>> {
        self.map(name)
    }

    /// The keys of `HOST_ADDRS_V6` when `want`.
    pub(super) fn host_addrs6(&mut self, want: bool) -> DpResult<HashSet<Addr6>> {
        if !want {
            return Ok(HashSet::new());
        }
        let m: BpfHashMap<&mut MapData, Addr6, u32> = self.map6(m6::HOST_ADDRS_V6)?;
        Ok(m.keys().filter_map(Result::ok).collect())
    }

    fn host_addr6(&mut self, ip: Ipv6Addr, add: bool) -> DpResult<()> {
        let mut m: BpfHashMap<&mut MapData, Addr6, u32> = self.map6(m6::HOST_ADDRS_V6)?;
        if add { m.insert(be_addr6(ip), 1, 0) } else { m.remove(&be_addr6(ip)).or(Ok(())) }
            .map_err(|e| err(m6::HOST_ADDRS_V6, e))
    }

    /// `HOST_ADDRS_V6` = the host's v6 addresses (link-local ones too, as Docker's
    /// `--dst-type LOCAL`) + the networks' v6 gateways.
    pub(super) fn set_local_addrs6(&mut self, host: &HostInfo) -> DpResult<()> {
        let want: HashSet<Ipv6Addr> = host
            .local_addrs6
            .iter()
            .chain(host.uplinks.iter().flat_map(|u| u.addrs6.iter()))
            .filter(|a| !a.is_loopback() && !a.is_unspecified())
            .copied()
            .collect();
        let gone: Vec<Ipv6Addr> =
            self.v6.local_addrs.difference(&want).filter(|a| !self.v6.gateways.contains(a)).copied().collect();
        let new: Vec<Ipv6Addr> = want.difference(&self.v6.local_addrs).copied().collect();
        for a in gone {
            self.host_addr6(a, false)?;
        }
        for a in new {
            self.host_addr6(a, true)?;
        }
        self.v6.local_addrs = want;
        Ok(())
    }

    /// `UPLINKS_V6[ifindex]`: the address NAT66 masquerades to, the uplink's first global one
    /// (`::`: none yet, no masquerade; a link-local source would not be routed back).
    pub(super) fn uplink_info6(&mut self, up: &Uplink) -> DpResult<()> {
        let addr = up
            .addrs6
            .iter()
            .find(|a| !a.is_unicast_link_local() && !a.is_loopback() && !a.is_multicast())
            .copied()
            .unwrap_or(Ipv6Addr::UNSPECIFIED);
        let mut m: BpfHashMap<&mut MapData, u32, UplinkInfo6> = self.map6(m6::UPLINKS_V6)?;
        m.insert(up.ifindex, UplinkInfo6 { addr: be_addr6(addr) }, 0).map_err(|e| err(m6::UPLINKS_V6, e))
    }

    pub(super) fn uplink_gone6(&mut self, ifindex: u32) -> DpResult<()> {
        let mut m: BpfHashMap<&mut MapData, u32, UplinkInfo6> = self.map6(m6::UPLINKS_V6)?;
        let _ = m.remove(&ifindex);
        Ok(())
    }

    /// A network's IPv6 side (`None` on IPv4-only networks: nothing). `flags` holds the
    /// family-neutral `NET_F_ICC` / `NET_F_INTERNAL`; the rest follows `gateway_mode_ipv6`.
    pub(super) fn network6_added(&mut self, net: &NetworkSpec, gateway_mac: [u8; 6], mut flags: u32) -> DpResult<()> {
        let Some(n6) = net.ipv6 else { return Ok(()) };
        let t0 = std::time::Instant::now();
        if self.l()?.ensure_v6().map_err(|e| err("loading the IPv6 programs", e))? {
            tracing::info!(took_ms = t0.elapsed().as_millis() as u64, "IPv6 programs loaded (first IPv6 network)");
        }
        if net.masquerade && n6.gateway_mode != GatewayMode::Routed {
            flags |= NET_F_MASQUERADE;
        }
        if n6.gateway_mode == GatewayMode::Routed {
            flags |= NET_F_ROUTED;
        }
        if n6.gateway_mode == GatewayMode::Nat {
            flags |= NET_F_PROTECT;
        }
        let mask = if n6.prefix_len == 0 { 0 } else { u128::MAX << (128 - u32::from(n6.prefix_len)) };
        let info = NetworkInfo6 {
            subnet: be_addr6(Ipv6Addr::from(u128::from(n6.subnet) & mask)),
            gateway: be_addr6(n6.gateway),
            prefix_len: u32::from(n6.prefix_len),
            bridge_ifindex: net.bridge_ifindex,
            gateway_mac,
            _pad: [0; 2],
            flags,
        };
        {
            let mut m: BpfHashMap<&mut MapData, u32, NetworkInfo6> = self.map6(m6::NETWORKS_V6)?;
            m.insert(net.index, info, 0).map_err(|e| err(m6::NETWORKS_V6, e))?;
        }
        self.v6.live_networks.insert(net.index);
        self.v6.gateways.insert(n6.gateway);
        self.host_addr6(n6.gateway, true)
    }

    pub(super) fn network6_removed(&mut self, net: &NetworkSpec) -> DpResult<()> {
        {
            let mut m: BpfHashMap<&mut MapData, u32, NetworkInfo6> = self.map6(m6::NETWORKS_V6)?;
            let _ = m.remove(&net.index);
        }
        self.v6.live_networks.remove(&net.index);
        let Some(n6) = net.ipv6 else { return Ok(()) };
        self.v6.gateways.remove(&n6.gateway);
        if self.v6.local_addrs.contains(&n6.gateway) {
            return Ok(());
        }
        self.host_addr6(n6.gateway, false)
    }

    pub(super) fn endpoint6_added(&mut self, net: &NetworkSpec, ep: &EndpointSpec) -> DpResult<()> {
        let Some(ip6) = ep.ip6 else { return Ok(()) };
        let a = be_addr6(ip6);
        let info = EndpointInfo { ifindex: ep.host_ifindex, net: net.index, mac: ep.mac, _pad: [0; 2] };
        let mut m: BpfHashMap<&mut MapData, Addr6, EndpointInfo> = self.map6(m6::ENDPOINTS_V6)?;
        m.insert(a, info, 0).map_err(|e| err(m6::ENDPOINTS_V6, e))?;
        self.v6.live_endpoints.insert(a);
        Ok(())
    }

    /// An endpoint's IPv6 side goes: its `ENDPOINTS_V6` entry (its translations are purged
    /// with the v4 ones, by the next conntrack job).
    pub(super) fn endpoint6_removed(&mut self, ep: &EndpointSpec) -> DpResult<()> {
        let Some(ip6) = ep.ip6 else { return Ok(()) };
        let a = be_addr6(ip6);
        {
            let mut m: BpfHashMap<&mut MapData, Addr6, EndpointInfo> = self.map6(m6::ENDPOINTS_V6)?;
            let _ = m.remove(&a);
        }
        self.v6.live_endpoints.remove(&a);
        Ok(())
    }

    /// The v6 bindings of `ports` into `PUBLISHED_V6` (stats slots shared with the v4 ones);
    /// the stale translations of fresh ones go with the next conntrack job.
    pub(super) fn ports6_added(&mut self, net: &NetworkSpec, ports: &[PortMapping]) -> DpResult<()> {
        let mut fresh = Vec::new();
        let keys = map_keys6(net, ports);
        // A cross-family binding on a v4-only network: NAT46 is in the v6 programs.
        if keys.iter().any(PortMapping::is_cross_family) {
            let t0 = std::time::Instant::now();
            if self.l()?.ensure_v6().map_err(|e| err("loading the IPv6 programs", e))? {
                tracing::info!(
                    waited_ms = t0.elapsed().as_millis() as u64,
                    "IPv6 programs in V6_PROGS (first NAT46 binding)"
                );
            }
            // The flag before the binding: its flows' replies are looked for at once.
            self.v6.nat46.extend(keys.iter().filter(|p| p.is_cross_family()).map(published_key6));
            self.sync_nat46()?;
        }
        for p in &keys {
            let slot = self.slot_for(p)?;
            let v = PublishedValue6 {
                addr: be_addr6(v6(p.container_ip)),
                port: be_port(p.container_port),
                _pad: 0,
                net: p.network_index,
                stats_slot: slot,
                flags: 0,
            };
            let key = published_key6(p);
            let unchanged = {
                let mut m: BpfHashMap<&mut MapData, PublishedKey6, PublishedValue6> = self.map6(m6::PUBLISHED_V6)?;
                let old = m.get(&key, 0).ok();
                m.insert(key, v, 0).map_err(|e| err(m6::PUBLISHED_V6, e))?;
                old == Some(v)
            };
            self.v6.live_published.insert(key);
            if unchanged {
                continue;
            }
            self.zero_stats(slot)?;
            fresh.push((p.proto.number(), be_port(p.host_port), slot + 1));
        }
        if !fresh.is_empty() {
            self.v6.pending_publish.extend(fresh);
            self.seq += 1;
        }
        Ok(())
    }

    /// The v6 bindings of `ports` out of `PUBLISHED_V6`: (proto, host port, freed slot) each.
    pub(super) fn ports6_removed(&mut self, net: &NetworkSpec, ports: &[PortMapping]) -> DpResult<Vec<(u8, u16, u32)>> {
        let mut gone = Vec::new();
        for p in &map_keys6(net, ports) {
            let key = published_key6(p);
            {
                let mut m: BpfHashMap<&mut MapData, PublishedKey6, PublishedValue6> = self.map6(m6::PUBLISHED_V6)?;
                let _ = m.remove(&key);
            }
            self.v6.live_published.remove(&key);
            self.v6.nat46.remove(&key);
            if let Some(s) = self.slots.remove(&(p.proto, p.host_ip, p.host_port)) {
                gone.push((p.proto.number(), be_port(p.host_port), s));
            }
        }
        self.sync_nat46()?;
        Ok(gone)
    }

    /// The v6 side of `--link` exceptions (`LinkRule.v6`) into `LINKS_V6`.
    pub(super) fn links6_added(&mut self, links: &[LinkRule]) -> DpResult<()> {
        let keys: Vec<LinkKey6> = links.iter().filter_map(link_key6).collect();
        if keys.is_empty() {
            return Ok(());
        }
        let mut m: BpfHashMap<&mut MapData, LinkKey6, u32> = self.map6(m6::LINKS_V6)?;
        for k in &keys {
            m.insert(k, 1, 0).map_err(|e| err(m6::LINKS_V6, e))?;
        }
        self.v6.live_links.extend(keys);
        Ok(())
    }

    /// Out of `LINKS_V6` (their flows are purged with the v4 pairs, by the next conntrack job).
    pub(super) fn links6_removed(&mut self, links: &[LinkRule]) -> DpResult<()> {
        let keys: Vec<LinkKey6> = links.iter().filter_map(link_key6).collect();
        if keys.is_empty() {
            return Ok(());
        }
        {
            let mut m: BpfHashMap<&mut MapData, LinkKey6, u32> = self.map6(m6::LINKS_V6)?;
            for k in &keys {
                let _ = m.remove(k);
            }
        }
        for k in &keys {
            self.v6.live_links.remove(k);
        }
        Ok(())
    }

    /// A restarted daemon's v6 bindings keep their counter slots.
    pub(super) fn adopt_published6(&mut self) -> DpResult<()> {
        let entries: Vec<(PublishedKey6, PublishedValue6)> = {
            let m: BpfHashMap<&mut MapData, PublishedKey6, PublishedValue6> = self.map6(m6::PUBLISHED_V6)?;
            m.iter().filter_map(Result::ok).collect()
        };
        for (k, v) in entries {
            if ipv6_of(&v.addr).to_ipv4_mapped().is_some() {
                // An earlier daemon's NAT46 binding: its flows' replies keep being looked for
                // until the replay shows whether it stays (`prune6`).
                self.v6.nat46.insert(k);
            }
            let proto = if k.proto == 6 { Proto::Tcp } else { Proto::Udp };
            self.slots.insert((proto, IpAddr::V6(ipv6_of(&k.addr)), u16::from_be(k.port)), v.stats_slot);
            self.next_slot = self.next_slot.max(v.stats_slot + 1);
        }
        Ok(())
    }

    /// [`crate::dataplane::Dataplane::missing`] for the v6 maps.
    pub(super) fn missing6(
        &mut self,
        net: &NetworkSpec,
        ep: &EndpointSpec,
        ports: &[PortMapping],
    ) -> DpResult<Vec<String>> {
        let mut out = Vec::new();
        if net.ipv6.is_some() {
            let m: BpfHashMap<&mut MapData, u32, NetworkInfo6> = self.map6(m6::NETWORKS_V6)?;
            if m.get(&net.index, 0).is_err() {
                out.push(format!("network {} (index {}) is missing from the NETWORKS_V6 map", net.name, net.index));
            }
        }
        if let Some(ip6) = ep.ip6 {
            let m: BpfHashMap<&mut MapData, Addr6, EndpointInfo> = self.map6(m6::ENDPOINTS_V6)?;
            match m.get(&be_addr6(ip6), 0) {
                Err(_) => out.push(format!("endpoint {ip6} is missing from the ENDPOINTS_V6 map")),
                Ok(v) if v.ifindex != ep.host_ifindex || v.mac != ep.mac || v.net != net.index => out.push(format!(
                    "endpoint {ip6} in the ENDPOINTS_V6 map leads to ifindex {} (network {}), not {} ({}, network {})",
                    v.ifindex, v.net, ep.host_ifindex, ep.host_veth, net.index
                )),
                Ok(_) => {}
            }
        }
        let m: BpfHashMap<&mut MapData, PublishedKey6, PublishedValue6> = self.map6(m6::PUBLISHED_V6)?;
        for p in &map_keys6(net, ports) {
            let what = format!("published port [{}]:{}/{}", p.host_ip, p.host_port, p.proto.as_str());
            match m.get(&published_key6(p), 0) {
                Err(_) => out.push(format!("{what} is missing from the PUBLISHED_V6 map")),
                Ok(v) if v.addr != be_addr6(v6(p.container_ip)) || v.port != be_port(p.container_port) => {
                    out.push(format!(
                        "{what} in the PUBLISHED_V6 map leads to [{}]:{}, not [{}]:{}",
                        ipv6_of(&v.addr),
                        u16::from_be(v.port),
                        p.container_ip,
                        p.container_port
                    ))
                }
                Ok(_) => {}
            }
        }
        Ok(out)
    }

    /// After a restart's replay: the v6 entries no live network, endpoint or binding owns go,
    /// with every translation of the endpoints and bindings among them.
    pub(super) fn prune6(&mut self) -> DpResult<usize> {
        fn stale<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
            dp: &mut Ebpf,
            name: &'static str,
            live: &HashSet<K>,
        ) -> DpResult<Vec<K>> {
            let doomed: Vec<K> = {
                let m: BpfHashMap<&mut MapData, K, V> = dp.map6(name)?;
                m.keys().filter_map(Result::ok).filter(|k| !live.contains(k)).collect()
            };
            let mut m: BpfHashMap<&mut MapData, K, V> = dp.map6(name)?;
            for k in &doomed {
                let _ = m.remove(k);
            }
            Ok(doomed)
        }
        let nets = std::mem::take(&mut self.v6.live_networks);
        let mut n = stale::<u32, NetworkInfo6>(self, m6::NETWORKS_V6, &nets)?.len();
        self.v6.live_networks = nets;
        let eps = std::mem::take(&mut self.v6.live_endpoints);
        let gone_eps = stale::<Addr6, EndpointInfo>(self, m6::ENDPOINTS_V6, &eps)?;
        self.v6.live_endpoints = eps;
        let pubs = std::mem::take(&mut self.v6.live_published);
        let gone_pubs = stale::<PublishedKey6, PublishedValue6>(self, m6::PUBLISHED_V6, &pubs)?;
        self.v6.live_published = pubs;
        for k in &gone_pubs {
            self.v6.nat46.remove(k);
        }
        self.sync_nat46()?;
        let links = std::mem::take(&mut self.v6.live_links);
        n += stale::<LinkKey6, u32>(self, m6::LINKS_V6, &links)?.len();
        self.v6.live_links = links;
        n += gone_eps.len() + gone_pubs.len();
        if !gone_eps.is_empty() || !gone_pubs.is_empty() {
            let eps: HashSet<Addr6> = gone_eps.into_iter().collect();
            let ports: HashSet<(u8, u16)> = gone_pubs.iter().map(|k| (k.proto, k.port)).collect();
            let maps = self.ct_maps()?;
            n += maps.purge_ct::<CtKey6>(Vec::new(), &HashSet::new(), |k, v| {
                eps.contains(&k.saddr)
                    || eps.contains(&k.daddr)
                    || eps.contains(&v.saddr)
                    || eps.contains(&v.daddr)
                    || (v.stats_slot != 0
                        && (ports.contains(&(k.proto, k.dport)) || ports.contains(&(k.proto, v.sport))))
            })?;
        }
        Ok(n)
    }
}
