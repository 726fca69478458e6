//! `--dataplane ebpf`: the model written into BPF maps, programs attached to the uplinks, the
//! sandbox veths and a cgroup v2 directory. No iptables or nftables rule is installed.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
    path::PathBuf,
};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray},
    programs::tc::SchedClassifierLinkId,
};
use netd_common::{
    CONFIG_F_ENABLED, CONFIG_F_NAT46, Config, CtKey, CtValue, DropReason, EndpointInfo, LinkKey, NET_F_ICC,
    NET_F_INTERNAL, NET_F_MASQUERADE, NET_F_PROTECT, NetworkInfo, PacketCount, PublishedKey, PublishedValue,
    UplinkInfo, capacity, map_names, v6::CtKey6,
};

use super::*;
use crate::ebpf::Loaded;
use netd_common::v6::map_names as m6;

#[path = "ebpf_ct.rs"]
mod ct;
#[path = "ebpf_v6.rs"]
mod v6;

const B: &str = "ebpf";

fn err(ctx: impl Into<String>, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::new(B, ctx, e)
}

/// Network byte order u32 of an address, as the programs read it from packets.
pub fn be_addr(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub fn be_port(p: u16) -> u16 {
    p.to_be()
}

#[derive(Default)]
pub struct Ebpf {
    /// `netd up --bpf-log`: the programs' debug log on, read into the daemon's log.
    pub bpf_log: bool,
    loaded: Option<Loaded>,
    /// Host-side veth -> its tcx link (None: pinned, detached by name).
    veth_links: HashMap<String, Option<SchedClassifierLinkId>>,
    /// The pin directory (`--bpffs`) and whether we mounted bpffs on it.
    pin_dir: Option<PathBuf>,
    bpffs_mounted: bool,
    /// Published port -> stats slot.
    slots: HashMap<(Proto, std::net::IpAddr, u16), u32>,
    free_slots: Vec<u32>,
    next_slot: u32,
    /// cgroup2 mount we made ourselves (unmounted on shutdown).
    cgroup_mount: Option<PathBuf>,
    /// What this daemon installed (or replayed), so `prune` knows what else is stale.
    live_networks: HashSet<u32>,
    live_endpoints: HashSet<u32>,
    live_published: HashSet<PublishedKey>,
    live_links: HashSet<LinkKey>,
    /// The same for the IPv6 maps (`ebpf_v6.rs`).
    v6: v6::State6,
    /// `SO_NETNS_COOKIE` written into `CONFIG` (kept to rewrite it with a new port range).
    netns_cookie: u64,
    /// The host's `ip_local_port_range` as last written into `CONFIG`.
    port_range: Option<(u16, u16)>,
    /// `CONFIG_F_NAT46` as last written into `CONFIG` ([`Ebpf::sync_nat46`]).
    nat46: bool,
    /// (proto, host port) -> stats slot of bindings published since the last purge: their
    /// stale conntrack entries are removed after the reply (`deferred`), so publishing costs
    /// map updates only, not a scan of the whole conntrack table.
    pending_publish: Vec<(u8, u16, u32)>,
    /// Translations to purge (of removed endpoints, bindings and links), queued for the next
    /// conntrack job ([`Dataplane::ct_job`]), which scans the table without the lock.
    pending_purge: PurgeSet,
    /// Sequence number of the last queued conntrack change.
    seq: u64,
    /// Stats slots of removed bindings, reusable once the job purging their flows has run
    /// (the purge matches flows by slot): (sequence number, slot).
    quarantine: Vec<(u64, u32)>,
    /// The conntrack maps' fds, shared with the jobs.
    ct: Option<std::sync::Arc<CtMaps>>,
    /// Uplinks with programs attached, and how XDP is chosen for new ones.
    uplinks: Vec<Uplink>,
    xdp: XdpChoice,
    /// The host's local addresses in `HOST_ADDRS` (besides the gateways).
    local_addrs: HashSet<Ipv4Addr>,
    gateways: HashSet<Ipv4Addr>,
    /// netd's bridges by network index: (name, ifindex), each with `netd_to_bridge` on its egress.
    bridges: HashMap<u32, (String, u32)>,
    /// The host's bridges named like Docker's (netd's among them); `FOREIGN_BRIDGES` holds
    /// those that are not netd's.
    docker_bridges: Vec<HostBridge>,
    /// Those of them (not netd's) with `netd_from_foreign_bridge` attached.
    foreign_attached: Vec<HostBridge>,
    /// The teardown has begun ([`Dataplane::tearing_down`]): removed endpoints keep their
    /// veth's program until [`Dataplane::shutdown`], after their devices are gone.
    tearing_down: bool,
}

/// MAC address of an interface of the caller's network namespace (SIOCGIFHWADDR).
pub fn if_hwaddr(name: &str) -> std::io::Result<[u8; 6]> {
    // SAFETY: a zeroed ifreq with a NUL-terminated name; ioctl on a fresh socket.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in name.bytes().take(15).enumerate() {
            ifr.ifr_name[i] = b as libc::c_char;
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr);
        let e = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(e);
        }
        let sa = ifr.ifr_ifru.ifru_hwaddr.sa_data;
        Ok([sa[0] as u8, sa[1] as u8, sa[2] as u8, sa[3] as u8, sa[4] as u8, sa[5] as u8])
    }
}

/// The v4 `LINKS` key of a rule (`None`: one end has no v4 address).
fn link_key(l: &LinkRule) -> Option<LinkKey> {
    let (src, dst) = l.v4()?;
    Some(LinkKey { src: be_addr(src), dst: be_addr(dst), port: be_port(l.port), proto: l.proto.number(), _pad: 0 })
}

/// The bindings as the programs key them: routed networks have no DNAT, so the container port
/// opens under the sandbox's own address. IPv4 bindings only: this dataplane has no IPv6 yet
/// ([`Dataplane::ipv6`] is false, so the daemon makes no v6 binding for it).
fn map_keys(net: &NetworkSpec, ports: &[PortMapping]) -> Vec<PortMapping> {
    let v4 = ports.iter().filter(|p| p.host_ip.is_ipv4() && p.container_ip.is_ipv4());
    if net.ipv4.is_none_or(|n| n.gateway_mode != GatewayMode::Routed) {
        return v4.cloned().collect();
    }
    v4.map(|p| PortMapping { host_ip: p.container_ip, host_port: p.container_port, ..p.clone() }).collect()
}

/// [`map_keys`] for the IPv6 bindings (`PUBLISHED_V6`), by the network's `gateway_mode_ipv6`.
/// Cross-family bindings (`[::]` or a v6 host address to a v4-only sandbox,
/// [`PortMapping::is_cross_family`]) lead to the sandbox's v4-mapped address, which the
/// programs translate with NAT46 (`netd-ebpf/src/v6/nat46.rs`); not on routed networks (the
/// daemon makes none there).
fn map_keys6(net: &NetworkSpec, ports: &[PortMapping]) -> Vec<PortMapping> {
    let routed4 = net.ipv4.is_some_and(|n| n.gateway_mode == GatewayMode::Routed);
    let cross = ports.iter().filter(|p| p.is_cross_family() && !routed4);
    let v6 = ports.iter().filter(|p| p.host_ip.is_ipv6() && p.container_ip.is_ipv6());
    if net.ipv6.is_none_or(|n| n.gateway_mode != GatewayMode::Routed) {
        return v6.chain(cross).cloned().collect();
    }
    v6.map(|p| PortMapping { host_ip: p.container_ip, host_port: p.container_port, ..p.clone() })
        .chain(cross.cloned())
        .collect()
}

/// The IPv4 address of a binding ([`map_keys`] keeps v4 bindings only).
fn v4(ip: std::net::IpAddr) -> Ipv4Addr {
    match ip {
        std::net::IpAddr::V4(a) => a,
        std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

/// CLOCK_MONOTONIC in ns (what `bpf_ktime_get_ns` returns).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Whether `p` is on a bpf filesystem.
fn is_bpffs(p: &std::path::Path) -> bool {
    nix::sys::statfs::statfs(p).map(|s| s.filesystem_type().0 == 0xcafe4a11).unwrap_or(false)
}

fn cgroup2_mount() -> Option<PathBuf> {
    let m = std::fs::read_to_string("/proc/self/mounts").ok()?;
    m.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    })
}

impl Ebpf {
    /// A dataplane around an already loaded object (tests drive it without a daemon).
    pub fn with_loaded(l: Loaded) -> Self {
        Self { loaded: Some(l), ..Default::default() }
    }

    fn l(&mut self) -> DpResult<&mut Loaded> {
        self.loaded.as_mut().ok_or_else(|| err("state", "not initialised"))
    }

    fn map<K: aya::Pod, V: aya::Pod>(&mut self, name: &'static str) -> DpResult<BpfHashMap<&mut MapData, K, V>> {
        let l = self.l()?;
        let m = l.ebpf.map_mut(name).ok_or_else(|| err(name, "missing map"))?;
        BpfHashMap::try_from(m).map_err(|e| err(name, e))
    }

    /// The conntrack maps, shared with jobs that run without the dataplane.
    fn ct_maps(&mut self) -> DpResult<std::sync::Arc<CtMaps>> {
        if let Some(c) = &self.ct {
            return Ok(c.clone());
        }
        let l = self.loaded.as_ref().ok_or_else(|| err("state", "not initialised"))?;
        let fd = |name: &'static str| -> DpResult<std::os::fd::OwnedFd> {
            use std::os::fd::AsFd;
            match l.ebpf.map(name) {
                Some(aya::maps::Map::LruHashMap(d) | aya::maps::Map::HashMap(d) | aya::maps::Map::Array(d)) => {
                    d.fd().as_fd().try_clone_to_owned().map_err(|e| err(name, e))
                }
                _ => Err(err(name, "missing map")),
            }
        };
        let c = std::sync::Arc::new(CtMaps {
            ct: fd(map_names::CT_V4)?,
            unassured: fd(map_names::CT_UNASSURED)?,
            host_nat: fd(map_names::HOST_NAT)?,
            ct6: fd(netd_common::v6::map_names::CT_V6).ok(),
            unassured6: fd(netd_common::v6::map_names::CT_UNASSURED_V6).ok(),
        });
        self.ct = Some(c.clone());
        Ok(c)
    }

    /// Delete every CT entry matching `f` now (and the stale translations of bindings published
    /// since the last pass). Startup's prune only; changes queue theirs for a job.
    fn purge_ct(&mut self, f: impl Fn(&CtKey, &CtValue) -> bool) -> DpResult<usize> {
        let fresh = std::mem::take(&mut self.pending_publish);
        let host = self.host_addrs(!fresh.is_empty())?;
        let maps = self.ct_maps()?;
        maps.purge_ct::<CtKey>(fresh, &host, f)
    }

    /// The keys of `HOST_ADDRS` when `want` (the stale-translation check needs them).
    fn host_addrs(&mut self, want: bool) -> DpResult<HashSet<u32>> {
        if !want {
            return Ok(HashSet::new());
        }
        let m: BpfHashMap<&mut MapData, u32, u32> = self.map(map_names::HOST_ADDRS)?;
        Ok(m.keys().filter_map(Result::ok).collect())
    }

    /// Queue a purge (run by the next job) and count the change.
    fn queue_purge(&mut self, f: impl FnOnce(&mut PurgeSet)) {
        f(&mut self.pending_purge);
        self.seq += 1;
    }

    /// The queued purges and stale translations of fresh bindings, plus a GC pass when `gc`, as
    /// one job: a scan of the table serves every change queued since the last.
    fn take_job(&mut self, gc: bool) -> DpResult<Option<CtJob>> {
        if self.pending_publish.is_empty() && self.v6.pending_publish.is_empty() && self.pending_purge.is_empty() && !gc
        {
            return Ok(None);
        }
        let maps = self.ct_maps()?;
        if gc {
            self.follow_port_range()?;
        }
        let fresh = std::mem::take(&mut self.pending_publish);
        let host = self.host_addrs(!fresh.is_empty())?;
        let fresh6 = std::mem::take(&mut self.v6.pending_publish);
        let host6 = self.host_addrs6(!fresh6.is_empty())?;
        let purge = std::mem::take(&mut self.pending_purge);
        let run = move || -> DpResult<usize> {
            let mut n = 0;
            if !fresh.is_empty() || !purge.is_empty() {
                n += maps.purge_ct::<CtKey>(fresh, &host, |k, v| purge.matches(k, v))?;
            }
            if !fresh6.is_empty() || !purge.is_empty() {
                n += maps.purge_ct::<CtKey6>(fresh6, &host6, |k, v| purge.matches6(k, v))?;
            }
            if gc {
                n += maps.gc()?;
            }
            Ok(n)
        };
        Ok(Some(CtJob { seq: self.seq, run: Box::new(run) }))
    }

    fn host_addr(&mut self, ip: Ipv4Addr, add: bool) -> DpResult<()> {
        let mut m: BpfHashMap<&mut MapData, u32, u32> = self.map(map_names::HOST_ADDRS)?;
        if add { m.insert(be_addr(ip), 1, 0) } else { m.remove(&be_addr(ip)).or(Ok(())) }
            .map_err(|e| err("HOST_ADDRS", e))
    }

    /// `UPLINKS[ifindex]`: the address masquerade uses on it (0: none yet, no masquerade).
    fn uplink_info(&mut self, up: &Uplink) -> DpResult<()> {
        let addr = up.addrs.first().copied().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let mut m: BpfHashMap<&mut MapData, u32, UplinkInfo> = self.map(map_names::UPLINKS)?;
        m.insert(up.ifindex, UplinkInfo { addr: be_addr(addr), _pad: 0 }, 0).map_err(|e| err("UPLINKS", e))
    }

    fn attach_uplink(&mut self, up: &Uplink) -> DpResult<()> {
        if up.l3 {
            self.l()?.attach_uplink_l3(&up.name).map_err(|e| err(format!("attaching to {}", up.name), e))?;
            tracing::info!(uplink = %up.name, "eBPF programs attached (layer-3 device)");
            return Ok(());
        }
        let xdp = match self.xdp {
            XdpChoice::Native => Some(aya::programs::XdpMode::Driver),
            XdpChoice::Generic => Some(aya::programs::XdpMode::Skb),
            XdpChoice::Off => None,
            XdpChoice::Auto if up.kind == "veth" => None,
            XdpChoice::Auto => Some(aya::programs::XdpMode::Driver),
        };
        let mode =
            self.l()?.attach_uplink_with(&up.name, xdp).map_err(|e| err(format!("attaching to {}", up.name), e))?;
        tracing::info!(uplink = %up.name, xdp_mode = ?mode, "eBPF programs attached");
        Ok(())
    }

    /// `HOST_ADDRS` = the host's addresses (uplinks' and every other local one) + gateways.
    fn set_local_addrs(&mut self, host: &HostInfo) -> DpResult<()> {
        let want: HashSet<Ipv4Addr> =
            host.local_addrs.iter().chain(host.uplinks.iter().flat_map(|u| u.addrs.iter())).copied().collect();
        let gone: Vec<Ipv4Addr> =
            self.local_addrs.difference(&want).filter(|a| !self.gateways.contains(a)).copied().collect();
        let new: Vec<Ipv4Addr> = want.difference(&self.local_addrs).copied().collect();
        for a in gone {
            self.host_addr(a, false)?;
        }
        for a in new {
            self.host_addr(a, true)?;
        }
        self.local_addrs = want;
        Ok(())
    }

    /// `FOREIGN_BRIDGES` = Docker's bridges that are not netd's. netd's: its networks' (by
    /// name and ifindex), and those whose `bridge-NAME` link is pinned (a restarted daemon's
    /// networks before their replay, so none of them is taken for Docker's meanwhile).
    fn sync_foreign_bridges(&mut self) -> DpResult<()> {
        let pins = self.pin_dir.as_ref().map(|d| d.join("links"));
        let netd = |b: &HostBridge| {
            self.bridges.values().any(|(n, i)| *n == b.name || *i == b.ifindex)
                || pins.as_ref().is_some_and(|d| d.join(format!("bridge-{}", b.name)).exists())
        };
        let foreign: Vec<HostBridge> = self.docker_bridges.iter().filter(|b| !netd(b)).cloned().collect();
        let want: HashSet<u32> = foreign.iter().map(|b| b.ifindex).collect();
        {
            let mut m: BpfHashMap<&mut MapData, u32, u32> = self.map(map_names::FOREIGN_BRIDGES)?;
            let have: Vec<u32> = m.keys().filter_map(Result::ok).collect();
            for k in have.iter().filter(|k| !want.contains(k)) {
                let _ = m.remove(k);
            }
            for k in want.iter().filter(|k| !have.contains(k)) {
                m.insert(*k, 1, 0).map_err(|e| err("FOREIGN_BRIDGES", e))?;
            }
        }
        // Their ingress program (ports netd publishes, reached from Docker's containers through
        // a host address): attached to each new one, let go for each gone one (its pin too,
        // also a previous daemon's).
        let gone: Vec<HostBridge> = self.foreign_attached.iter().filter(|b| !foreign.contains(b)).cloned().collect();
        let l = self.l()?;
        for b in &gone {
            l.unpin(&format!("foreign-{}", b.name));
        }
        for name in l.pinned_links("foreign-") {
            if !foreign.iter().any(|b| b.name == name) {
                l.unpin(&format!("foreign-{name}"));
            }
        }
        self.foreign_attached.retain(|b| foreign.contains(b));
        let mut errors = Vec::new();
        let new: Vec<HostBridge> = foreign.iter().filter(|b| !self.foreign_attached.contains(b)).cloned().collect();
        for b in new {
            match self.l()?.attach_foreign_bridge(&b.name) {
                Ok(()) => self.foreign_attached.push(b),
                // Gone meanwhile, or not attachable: the next change tries again.
                Err(e) => errors.push(format!("{}: {e}", b.name)),
            }
        }
        if !errors.is_empty() {
            tracing::warn!(errors = ?errors, "attaching to Docker's bridges");
        }
        Ok(())
    }

    /// The stats slot of a binding (a new one for a new binding).
    fn slot_for(&mut self, p: &PortMapping) -> DpResult<u32> {
        let key = (p.proto, p.host_ip, p.host_port);
        if let Some(s) = self.slots.get(&key) {
            return Ok(*s);
        }
        let s = self.free_slots.pop().unwrap_or_else(|| {
            self.next_slot += 1;
            self.next_slot - 1
        });
        if s >= capacity::PORT_STATS {
            return Err(err("PORT_STATS", "too many published ports"));
        }
        self.slots.insert(key, s);
        Ok(s)
    }

    /// A fresh binding starts its counters at zero.
    fn zero_stats(&mut self, slot: u32) -> DpResult<()> {
        let l = self.l()?;
        let m = l.ebpf.map_mut(map_names::PORT_STATS).ok_or_else(|| err("PORT_STATS", "missing"))?;
        let mut arr: PerCpuArray<&mut MapData, PacketCount> =
            PerCpuArray::try_from(m).map_err(|e| err("PORT_STATS", e))?;
        let n = aya::util::nr_cpus().map_err(|(_, e)| err("nr_cpus", e))?;
        let _ = arr.set(
            slot,
            aya::maps::PerCpuValues::try_from(vec![PacketCount::default(); n]).map_err(|e| err("PORT_STATS", e))?,
            0,
        );
        Ok(())
    }

    fn published_key(p: &PortMapping) -> PublishedKey {
        PublishedKey { addr: be_addr(v4(p.host_ip)), port: be_port(p.host_port), proto: p.proto.number(), _pad: 0 }
    }
}

/// What queued purges remove: every translation of these sandbox addresses, of these bindings
/// (by stats slot, and reply entries by host port) and between these `--link` pairs.
#[derive(Default)]
struct PurgeSet {
    addrs: HashSet<u32>,
    slots: HashSet<u32>,
    ports: HashSet<(u8, u16)>,
    pairs: Vec<(u32, u32)>,
    /// Sandbox IPv6 addresses (`CT_V6`; `slots` and `ports` hold for both tables).
    addrs6: HashSet<netd_common::v6::Addr6>,
    /// The v6 ends of removed `--link` pairs.
    pairs6: Vec<(netd_common::v6::Addr6, netd_common::v6::Addr6)>,
}

impl PurgeSet {
    fn is_empty(&self) -> bool {
        self.addrs.is_empty()
            && self.slots.is_empty()
            && self.ports.is_empty()
            && self.pairs.is_empty()
            && self.addrs6.is_empty()
            && self.pairs6.is_empty()
    }

    fn matches(&self, k: &CtKey, v: &CtValue) -> bool {
        let a = &self.addrs;
        (a.contains(&k.saddr) || a.contains(&k.daddr) || a.contains(&v.saddr) || a.contains(&v.daddr))
            || self.slots.contains(&v.stats_slot)
            || (v.stats_slot == 0
                && v.action == netd_common::CT_ACT_FIB
                && (self.ports.contains(&(k.proto, k.dport)) || self.ports.contains(&(k.proto, v.sport))))
            || self.pairs.iter().any(|&(s, d)| (k.saddr == s && k.daddr == d) || (k.saddr == d && k.daddr == s))
    }
}

/// The conntrack maps (own fds), used by jobs that run without the dataplane's lock.
pub struct CtMaps {
    ct: std::os::fd::OwnedFd,
    unassured: std::os::fd::OwnedFd,
    host_nat: std::os::fd::OwnedFd,
    /// `CT_V6` and its unanswered count (see `ebpf_v6.rs`).
    ct6: Option<std::os::fd::OwnedFd>,
    unassured6: Option<std::os::fd::OwnedFd>,
}

impl CtMaps {
    /// A one-entry `u64` array: its value, then `set` written when given.
    fn cell(fd: &std::os::fd::OwnedFd, name: &'static str, set: Option<u64>) -> DpResult<u64> {
        use std::os::fd::AsFd;
        let old = crate::bpfbatch::lookup::<u32, u64>(fd.as_fd(), &0).map_err(|e| err(name, e))?.unwrap_or(0);
        if let Some(v) = set {
            crate::bpfbatch::update(fd.as_fd(), &0u32, &v).map_err(|e| err(name, e))?;
        }
        Ok(old)
    }

    /// Conntrack expiry: a flow (both directions) goes when its newer direction has been idle
    /// longer than its state's timeout ([`ct_timeout`]: nf_conntrack's defaults, e.g. TCP
    /// established 5 days, unanswered SYN 120 s, UDP unanswered 30 s). The pass also recounts
    /// the unanswered flows the programs cap (`CT_UNASSURED`) and clears the host-NAT hint
    /// when no host flow has another port any more.
    /// The LRU map also evicts the oldest entries when full, so new flows never wedge.
    fn gc(&self) -> DpResult<usize> {
        let now = monotonic_ns();
        let v4 = self.gc_ct::<CtKey>(now)?;
        Self::cell(&self.unassured, map_names::CT_UNASSURED, Some(v4.unassured))?;
        let v6 = self.gc_ct::<CtKey6>(now)?;
        if let Some(fd) = &self.unassured6 {
            Self::cell(fd, m6::CT_UNASSURED_V6, Some(v6.unassured))?;
        }
        if !(v4.host_nat || v6.host_nat) {
            let t = Self::cell(&self.host_nat, map_names::HOST_NAT, None)?;
            // A host flow translated since the dump began is not in it: keep the hint a while.
            if t != 0 && now.saturating_sub(t) > 30_000_000_000 {
                Self::cell(&self.host_nat, map_names::HOST_NAT, Some(0))?;
            }
        }
        release_freed_memory();
        Ok(v4.deleted + v6.deleted)
    }
}

/// `net.ipv4.ip_local_port_range` of the calling thread's network namespace.
pub fn local_port_range() -> Option<(u16, u16)> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// Give the heap's free pages back to the kernel after a GC pass: the pass's working set (up to
/// 16 MiB with a full table) would otherwise stay in the daemon's RSS until the next pass.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How long a flow may stay idle (seconds), nf_conntrack's defaults by state, and whether it
/// is established (TCP) or answered (UDP, ICMP): entries that are not are the ones a flood
/// makes, counted against `CT_UNASSURED_MAX`. `a` is an entry, `b` its partner if present.
pub fn ct_timeout(proto: u8, a: &CtValue, b: Option<&CtValue>) -> (u64, bool) {
    use netd_common::{CT_ACT_HOSTFLOW, CT_F_ACKED, CT_F_CLOSING, CT_F_RST, CT_F_SEEN, ct_timeout as t};
    if a.action == CT_ACT_HOSTFLOW {
        // A host flow's marker, refreshed by each UDP datagram, closed by the host's FIN/RST.
        return match proto {
            6 if a.flags & CT_F_CLOSING != 0 => (t::TCP_HALF_CLOSED, true),
            6 => (t::TCP_ESTABLISHED, true),
            17 => (t::UDP_REPLIED, true),
            _ => (t::ICMP, true),
        };
    }
    let bf = b.map_or(0, |b| b.flags);
    let flags = a.flags | bf;
    let both_seen = a.flags & CT_F_SEEN != 0 && bf & CT_F_SEEN != 0;
    match proto {
        6 => {
            let assured = flags & CT_F_ACKED != 0;
            let both_closing = a.flags & CT_F_CLOSING != 0 && bf & CT_F_CLOSING != 0;
            let s = if flags & CT_F_RST != 0 || both_closing {
                t::TCP_CLOSED
            } else if flags & CT_F_CLOSING != 0 {
                t::TCP_HALF_CLOSED
            } else if assured {
                t::TCP_ESTABLISHED
            } else if both_seen {
                t::TCP_SYN_RECV
            } else {
                t::TCP_SYN_SENT
            };
            (s, assured)
        }
        17 => (if both_seen { t::UDP_REPLIED } else { t::UDP_UNREPLIED }, both_seen),
        _ => (t::ICMP, both_seen),
    }
}

impl Ebpf {
    fn run_job(&mut self, gc: bool) -> DpResult<usize> {
        let Some(j) = self.take_job(gc)? else { return Ok(0) };
        let seq = j.seq;
        let r = (j.run)();
        self.ct_done(seq);
        r
    }

    /// Write the host's ephemeral port range into `CONFIG` when it changed (at start and at
    /// every GC pass): SNAT draws its ports outside it.
    fn follow_port_range(&mut self) -> DpResult<()> {
        let r = local_port_range();
        if r == self.port_range && r.is_some() {
            return Ok(());
        }
        let was = self.port_range;
        self.port_range = r;
        self.write_config()?;
        if was.is_some() {
            tracing::info!(?r, "ip_local_port_range changed: SNAT ports follow");
        }
        Ok(())
    }

    /// `CONFIG` from the netns cookie, the port range and whether any NAT46 binding exists.
    fn write_config(&mut self) -> DpResult<()> {
        let (port_lo, port_hi) = self.port_range.unwrap_or((0, 0));
        let mut flags = CONFIG_F_ENABLED;
        if self.nat46 {
            flags |= CONFIG_F_NAT46;
        }
        let cookie = self.netns_cookie;
        self.l()?.set_config(Config { netns_cookie: cookie, flags, port_lo, port_hi }).map_err(|e| err("CONFIG", e))
    }

    /// `CONFIG_F_NAT46` on while some NAT46 binding is in `PUBLISHED_V6` (the v4 veth program
    /// then looks a sandbox's untracked IPv4 packets up in `CT_V6`), off when none is left.
    fn sync_nat46(&mut self) -> DpResult<()> {
        let want = self.v6.has_nat46();
        if want == self.nat46 {
            return Ok(());
        }
        self.nat46 = want;
        self.write_config()
    }
}

impl Dataplane for Ebpf {
    fn backend(&self) -> Backend {
        Backend::Ebpf
    }

    /// The IPv6 bodies of the programs, fed by the v6 maps (`ebpf_v6.rs`).
    fn ipv6(&self) -> bool {
        true
    }

    /// The background load of the IPv6 programs, while it runs.
    fn pending_load(&mut self) -> Option<Box<dyn FnOnce() + Send>> {
        self.loaded.as_ref()?.v6_waiter()
    }

    fn set_monitor(&mut self, flags: u32) -> DpResult<()> {
        use netd_common::monitor::map_names::MONITOR;
        let l = self.l()?;
        let m = l.ebpf.map_mut(MONITOR).ok_or_else(|| err(MONITOR, "missing map"))?;
        let mut a: aya::maps::Array<&mut MapData, u32> = aya::maps::Array::try_from(m).map_err(|e| err(MONITOR, e))?;
        a.set(0, flags, 0).map_err(|e| err(MONITOR, e))
    }

    fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        let m = self.loaded.as_mut()?.ebpf.take_map(netd_common::monitor::map_names::EVENTS)?;
        aya::maps::RingBuf::try_from(m).ok()
    }

    fn init(&mut self, host: &HostInfo) -> DpResult<()> {
        // Maps and links are pinned under --bpffs: they outlive a crashed daemon, and the next
        // one adopts them (established flows keep their translations). The default pin directory
        // lives in the kernel's conventional bpffs mount, /sys/fs/bpf; where nothing mounted it
        // (init systems usually do), it is mounted there as they would, and kept (shared).
        let conventional = std::path::Path::new("/sys/fs/bpf");
        if host.bpffs.parent() == Some(conventional) && !is_bpffs(conventional) {
            nix::mount::mount(Some("bpf"), conventional, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
                .map_err(|e| err("mounting bpffs on /sys/fs/bpf", e))?;
        }
        std::fs::create_dir_all(&host.bpffs).map_err(|e| err(format!("creating {}", host.bpffs.display()), e))?;
        if !is_bpffs(&host.bpffs) {
            nix::mount::mount(Some("bpf"), &host.bpffs, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
                .map_err(|e| err(format!("mounting bpffs on {}", host.bpffs.display()), e))?;
        }
        // A bpffs of its own (mounted by this daemon or by a predecessor that was killed) goes
        // away on shutdown; a directory inside a shared bpffs (/sys/fs/bpf/netd) only loses its pins.
        self.bpffs_mounted = !host.bpffs.parent().is_some_and(is_bpffs);
        let adopting = Loaded::has_pins(&host.bpffs);
        let mut l = Loaded::load_pinned(&host.bpffs, self.bpf_log).map_err(|e| err("loading programs", e))?;
        // The IPv6 bodies load meanwhile (seconds of verifier time), before the first IPv6
        // network or NAT46 binding asks for them (which then waits for the rest, if any).
        if let Err(e) = l.spawn_v6(self.bpf_log) {
            tracing::warn!(error = %e, "the IPv6 programs load with the first IPv6 network or NAT46 binding");
        }
        if self.bpf_log {
            let logger = crate::ebpf::bpf_logger(&mut l.ebpf).map_err(|e| err("--bpf-log", e))?;
            let rt = tokio::runtime::Handle::try_current().map_err(|e| err("--bpf-log", e))?;
            rt.spawn(async move {
                // SAFETY: the logger owns its ring buffer's descriptor and lives inside the
                // AsyncFd for as long as this task.
                let Ok(mut fd) = (unsafe { tokio::io::unix::AsyncFd::register(logger) }) else { return };
                while let Ok(mut g) = fd.readable_mut().await {
                    g.get_inner_mut().flush();
                    g.clear_ready();
                }
            });
        }
        self.pin_dir = Some(host.bpffs.clone());
        self.netns_cookie = host.netns_cookie;
        self.loaded = Some(l);
        self.follow_port_range()?;
        if adopting {
            // Published ports keep their counter slots.
            let entries: Vec<(PublishedKey, PublishedValue)> = {
                let m: BpfHashMap<&mut MapData, PublishedKey, PublishedValue> = self.map(map_names::PUBLISHED_V4)?;
                m.iter().filter_map(Result::ok).collect()
            };
            for (k, v) in entries {
                let proto = if k.proto == 6 { Proto::Tcp } else { Proto::Udp };
                let ip = Ipv4Addr::from(k.addr.to_ne_bytes());
                self.slots.insert((proto, ip.into(), u16::from_be(k.port)), v.stats_slot);
                self.next_slot = self.next_slot.max(v.stats_slot + 1);
            }
            self.adopt_published6()?;
            self.sync_nat46()?;
            tracing::info!(ports = self.slots.len(), "adopted pinned eBPF state");
        }
        self.xdp = host.xdp;
        for up in &host.uplinks {
            self.uplink_info(up)?;
            self.uplink_info6(up)?;
            self.attach_uplink(up)?;
            self.uplinks.push(up.clone());
        }
        self.set_local_addrs(host)?;
        self.set_local_addrs6(host)?;
        self.docker_bridges = host.docker_bridges.clone();
        self.sync_foreign_bridges()?;
        // The sock_addr hooks: the given cgroup, else the cgroup2 root (mounted if needed).
        let cg = match &host.cgroup {
            Some(p) => p.clone(),
            None => match cgroup2_mount() {
                Some(p) => p,
                None => {
                    let p = host.bpffs.with_extension("cgroup2");
                    std::fs::create_dir_all(&p).map_err(|e| err("cgroup2 mount point", e))?;
                    nix::mount::mount(Some("cgroup2"), &p, Some("cgroup2"), nix::mount::MsFlags::empty(), None::<&str>)
                        .map_err(|e| err("mounting cgroup2", e))?;
                    self.cgroup_mount = Some(p.clone());
                    p
                }
            },
        };
        let f = std::fs::File::open(&cg).map_err(|e| err(format!("opening cgroup {}", cg.display()), e))?;
        self.l()?.attach_cgroup(f).map_err(|e| err("attaching sock_addr hooks", e))?;
        Ok(())
    }

    fn route_watcher(&mut self) -> Option<Box<dyn FnMut() + Send>> {
        match self.l().ok()?.fib_gen() {
            Ok(mut g) => Some(Box::new(move || {
                if let Err(e) = g.bump() {
                    tracing::warn!(error = %e, "FIB_GEN: cached routes may be stale");
                }
            })),
            Err(e) => {
                tracing::warn!(error = %e, "FIB_GEN: routes are looked up per packet");
                None
            }
        }
    }

    fn network_added(&mut self, net: &NetworkSpec) -> DpResult<()> {
        let mut flags = 0;
        if net.icc {
            flags |= NET_F_ICC;
        }
        if net.internal {
            flags |= NET_F_INTERNAL;
        }
        let gateway_mac = if_hwaddr(&net.bridge).map_err(|e| err(format!("MAC of {}", net.bridge), e))?;
        // An IPv6-only network has no `NETWORKS` entry (nor any v4 endpoint to look it up).
        if let Some(n4) = &net.ipv4 {
            let mut flags = flags;
            if net.masquerade && n4.gateway_mode != GatewayMode::Routed {
                flags |= NET_F_MASQUERADE;
            }
            if n4.gateway_mode == GatewayMode::Routed {
                flags |= netd_common::NET_F_ROUTED;
            }
            if n4.gateway_mode == GatewayMode::Nat {
                flags |= NET_F_PROTECT;
            }
            let info = NetworkInfo {
                subnet: be_addr(n4.subnet),
                mask: be_addr(Ipv4Addr::from(n4.mask())),
                gateway: be_addr(n4.gateway),
                bridge_ifindex: net.bridge_ifindex,
                gateway_mac,
                _pad: [0; 2],
                flags,
            };
            {
                let mut m: BpfHashMap<&mut MapData, u32, NetworkInfo> = self.map(map_names::NETWORKS)?;
                m.insert(net.index, info, 0).map_err(|e| err("NETWORKS", e))?;
            }
            self.live_networks.insert(net.index);
            self.gateways.insert(n4.gateway);
            self.host_addr(n4.gateway, true)?;
        }
        self.network6_added(net, gateway_mac, flags)?;
        // Isolation from Docker's own bridges: what is routed into this bridge from one.
        self.l()?.attach_bridge(&net.bridge).map_err(|e| err(format!("attaching to {}", net.bridge), e))?;
        self.bridges.insert(net.index, (net.bridge.clone(), net.bridge_ifindex));
        self.sync_foreign_bridges()
    }

    fn network_removed(&mut self, net: &NetworkSpec) -> DpResult<()> {
        {
            let mut m: BpfHashMap<&mut MapData, u32, NetworkInfo> = self.map(map_names::NETWORKS)?;
            let _ = m.remove(&net.index);
        }
        self.live_networks.remove(&net.index);
        self.network6_removed(net)?;
        if let Some((name, _)) = self.bridges.remove(&net.index) {
            self.l()?.unpin(&format!("bridge-{name}"));
        }
        self.sync_foreign_bridges()?;
        let Some(n4) = &net.ipv4 else { return Ok(()) };
        self.gateways.remove(&n4.gateway);
        if self.local_addrs.contains(&n4.gateway) {
            return Ok(());
        }
        self.host_addr(n4.gateway, false)
    }

    fn host_changed(&mut self, host: &HostInfo) -> DpResult<()> {
        let same = |a: &Uplink, b: &Uplink| a.name == b.name && a.ifindex == b.ifindex;
        let old = std::mem::take(&mut self.uplinks);
        for o in old.iter().filter(|o| !host.uplinks.iter().any(|n| same(o, n))) {
            {
                let mut m: BpfHashMap<&mut MapData, u32, UplinkInfo> = self.map(map_names::UPLINKS)?;
                let _ = m.remove(&o.ifindex);
            }
            self.uplink_gone6(o.ifindex)?;
            // Gone (or now a bridge port): its pinned links go, which detaches them.
            let l = self.l()?;
            for rel in [format!("xdp-{}", o.name), format!("tc-in-{}", o.name), format!("tc-out-{}", o.name)] {
                l.unpin(&rel);
            }
            tracing::info!(uplink = %o.name, "uplink gone");
        }
        let mut errors = Vec::new();
        for n in &host.uplinks {
            if !old.iter().any(|o| same(o, n))
                && let Err(e) = self.attach_uplink(n)
            {
                // Not counted as attached: the next change tries again.
                errors.push(e.to_string());
                continue;
            }
            self.uplink_info(n)?;
            self.uplink_info6(n)?;
            self.uplinks.push(n.clone());
        }
        self.set_local_addrs(host)?;
        self.set_local_addrs6(host)?;
        self.docker_bridges = host.docker_bridges.clone();
        self.sync_foreign_bridges()?;
        if errors.is_empty() { Ok(()) } else { Err(err("uplinks", errors.join("; "))) }
    }

    fn endpoint_added(&mut self, net: &NetworkSpec, ep: &EndpointSpec) -> DpResult<()> {
        if let Some(ip) = ep.ip {
            {
                let mut m: BpfHashMap<&mut MapData, u32, EndpointInfo> = self.map(map_names::ENDPOINTS)?;
                let info = EndpointInfo { ifindex: ep.host_ifindex, net: net.index, mac: ep.mac, _pad: [0; 2] };
                m.insert(be_addr(ip), info, 0).map_err(|e| err("ENDPOINTS", e))?;
            }
            self.live_endpoints.insert(be_addr(ip));
        }
        self.endpoint6_added(net, ep)?;
        if !self.veth_links.contains_key(&ep.host_veth) {
            let id = self
                .l()?
                .attach_container(&ep.host_veth)
                .map_err(|e| err(format!("attaching to {}", ep.host_veth), e))?;
            self.veth_links.insert(ep.host_veth.clone(), id);
        }
        Ok(())
    }

    fn endpoint_removed(&mut self, _net: &NetworkSpec, ep: &EndpointSpec) -> DpResult<()> {
        // The daemon deletes the veth first, and its filter with it (`detach_container` only
        // removes a live device's). At the teardown the devices go in one batch later.
        if !self.tearing_down {
            let id = self.veth_links.remove(&ep.host_veth).flatten();
            let _ = self.l()?.detach_container(&ep.host_veth, id);
        }
        let a = ep.ip.map(be_addr);
        if let Some(a) = a {
            {
                let mut m: BpfHashMap<&mut MapData, u32, EndpointInfo> = self.map(map_names::ENDPOINTS)?;
                let _ = m.remove(&a);
            }
            self.live_endpoints.remove(&a);
        }
        // No translation may outlive the endpoint (a restarted sandbox gets a clean slate): the
        // next conntrack job, which the daemon runs before the address is reused.
        let a6 = ep.ip6.map(v6::be_addr6);
        self.queue_purge(|p| {
            p.addrs.extend(a);
            p.addrs6.extend(a6);
            // NAT46 flows to a v4-only sandbox are keyed by its v4-mapped address in `CT_V6`.
            p.addrs6.extend(ep.ip.map(|ip| v6::be_addr6(ip.to_ipv6_mapped())));
        });
        self.endpoint6_removed(ep)
    }

    fn ports_added(&mut self, net: &NetworkSpec, ports: &[PortMapping]) -> DpResult<()> {
        let ports_in = ports;
        let ports = &map_keys(net, ports);
        let mut fresh: Vec<(u8, u16, u32)> = Vec::new();
        for p in ports {
            let slot = self.slot_for(p)?;
            let v = PublishedValue {
                addr: be_addr(v4(p.container_ip)),
                port: be_port(p.container_port),
                _pad: 0,
                net: p.network_index,
                stats_slot: slot,
            };
            let unchanged = {
                let mut m: BpfHashMap<&mut MapData, PublishedKey, PublishedValue> =
                    self.map(map_names::PUBLISHED_V4)?;
                let old = m.get(&Self::published_key(p), 0).ok();
                m.insert(Self::published_key(p), v, 0).map_err(|e| err("PUBLISHED_V4", e))?;
                old == Some(v)
            };
            self.live_published.insert(Self::published_key(p));
            if unchanged {
                // Replayed after a restart: keep the counters and the established flows.
                continue;
            }
            self.zero_stats(slot)?;
            fresh.push((p.proto.number(), be_port(p.host_port), slot + 1));
        }
        self.ports6_added(net, ports_in)?;
        // Stale translations of these ports go right after the reply (the next conntrack job).
        if !fresh.is_empty() {
            self.pending_publish.extend(fresh);
            self.seq += 1;
        }
        Ok(())
    }

    fn missing(&mut self, net: &NetworkSpec, ep: &EndpointSpec, ports: &[PortMapping]) -> DpResult<Vec<String>> {
        let mut out = self.missing6(net, ep, ports)?;
        if net.ipv4.is_some() {
            let m: BpfHashMap<&mut MapData, u32, NetworkInfo> = self.map(map_names::NETWORKS)?;
            if m.get(&net.index, 0).is_err() {
                out.push(format!("network {} (index {}) is missing from the NETWORKS map", net.name, net.index));
            }
        }
        if let Some(ip) = ep.ip {
            let m: BpfHashMap<&mut MapData, u32, EndpointInfo> = self.map(map_names::ENDPOINTS)?;
            match m.get(&be_addr(ip), 0) {
                Err(_) => out.push(format!("endpoint {ip} is missing from the ENDPOINTS map")),
                Ok(v) if v.ifindex != ep.host_ifindex || v.mac != ep.mac || v.net != net.index => out.push(format!(
                    "endpoint {ip} in the ENDPOINTS map leads to ifindex {} (network {}), not {} ({}, network {})",
                    v.ifindex, v.net, ep.host_ifindex, ep.host_veth, net.index
                )),
                Ok(_) => {}
            }
        }
        let m: BpfHashMap<&mut MapData, PublishedKey, PublishedValue> = self.map(map_names::PUBLISHED_V4)?;
        for p in &map_keys(net, ports) {
            let what = format!("published port {}:{}/{}", p.host_ip, p.host_port, p.proto.as_str());
            match m.get(&Self::published_key(p), 0) {
                Err(_) => out.push(format!("{what} is missing from the PUBLISHED_V4 map")),
                Ok(v) if v.addr != be_addr(v4(p.container_ip)) || v.port != be_port(p.container_port) => {
                    out.push(format!(
                        "{what} in the PUBLISHED_V4 map leads to {}:{}, not {}:{}",
                        Ipv4Addr::from(u32::from_be(v.addr)),
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

    fn ports_removed(&mut self, net: &NetworkSpec, ports: &[PortMapping]) -> DpResult<()> {
        let ports_in = ports;
        let ports = &map_keys(net, ports);
        let mut gone: Vec<(u8, u16, u32)> = Vec::new();
        for p in ports {
            {
                let mut m: BpfHashMap<&mut MapData, PublishedKey, PublishedValue> =
                    self.map(map_names::PUBLISHED_V4)?;
                let _ = m.remove(&Self::published_key(p));
            }
            self.live_published.remove(&Self::published_key(p));
            if let Some(s) = self.slots.remove(&(p.proto, p.host_ip, p.host_port)) {
                gone.push((p.proto.number(), be_port(p.host_port), s));
            }
        }
        gone.extend(self.ports6_removed(net, ports_in)?);
        // Both directions of the ports' flows, by the next conntrack job (one scan for the
        // whole request, and for whatever else is queued by then); the slots are reused after.
        if !gone.is_empty() {
            self.queue_purge(|q| {
                for g in &gone {
                    q.slots.insert(g.2 + 1);
                    q.ports.insert((g.0, g.1));
                }
            });
            let seq = self.seq;
            self.quarantine.extend(gone.iter().map(|g| (seq, g.2)));
        }
        Ok(())
    }

    fn links_added(&mut self, _net: &NetworkSpec, links: &[LinkRule]) -> DpResult<()> {
        let keys: Vec<LinkKey> = links.iter().filter_map(link_key).collect();
        let mut m: BpfHashMap<&mut MapData, LinkKey, u32> = self.map(map_names::LINKS)?;
        for k in &keys {
            m.insert(k, 1, 0).map_err(|e| err("LINKS", e))?;
        }
        self.live_links.extend(keys);
        self.links6_added(links)
    }

    fn links_removed(&mut self, _net: &NetworkSpec, links: &[LinkRule]) -> DpResult<()> {
        let keys: Vec<LinkKey> = links.iter().filter_map(link_key).collect();
        {
            let mut m: BpfHashMap<&mut MapData, LinkKey, u32> = self.map(map_names::LINKS)?;
            for k in &keys {
                let _ = m.remove(k);
            }
        }
        for k in &keys {
            self.live_links.remove(k);
        }
        if !links.is_empty() {
            self.queue_purge(|q| {
                q.pairs.extend(links.iter().filter_map(LinkRule::v4).map(|(s, d)| (be_addr(s), be_addr(d))));
                q.pairs6.extend(links.iter().filter_map(|l| l.v6).map(|(s, d)| (v6::be_addr6(s), v6::be_addr6(d))));
            });
        }
        self.links6_removed(links)
    }

    /// The queued conntrack work, run here (tests; the daemon runs [`Dataplane::ct_job`]s).
    fn deferred(&mut self) -> DpResult<usize> {
        self.run_job(false)
    }

    fn ct_seq(&self) -> u64 {
        self.seq
    }

    fn ct_job(&mut self, gc: bool) -> DpResult<Option<CtJob>> {
        self.take_job(gc)
    }

    fn ct_done(&mut self, seq: u64) {
        let (done, keep): (Vec<_>, Vec<_>) = self.quarantine.drain(..).partition(|(s, _)| *s <= seq);
        self.quarantine = keep;
        self.free_slots.extend(done.into_iter().map(|(_, slot)| slot));
    }

    fn prune(&mut self) -> DpResult<usize> {
        fn stale<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
            dp: &mut Ebpf,
            name: &'static str,
            live: &HashSet<K>,
        ) -> DpResult<Vec<K>> {
            let m: BpfHashMap<&mut MapData, K, V> = dp.map(name)?;
            let doomed: Vec<K> = m.keys().filter_map(Result::ok).filter(|k| !live.contains(k)).collect();
            let mut m: BpfHashMap<&mut MapData, K, V> = dp.map(name)?;
            for k in &doomed {
                let _ = m.remove(k);
            }
            Ok(doomed)
        }
        let mut n = 0;
        let nets = std::mem::take(&mut self.live_networks);
        n += stale::<u32, NetworkInfo>(self, map_names::NETWORKS, &nets)?.len();
        self.live_networks = nets;
        let eps = std::mem::take(&mut self.live_endpoints);
        let gone_eps = stale::<u32, EndpointInfo>(self, map_names::ENDPOINTS, &eps)?;
        self.live_endpoints = eps;
        n += gone_eps.len();
        let pubs = std::mem::take(&mut self.live_published);
        let gone_pubs = stale::<PublishedKey, PublishedValue>(self, map_names::PUBLISHED_V4, &pubs)?;
        self.live_published = pubs;
        n += gone_pubs.len();
        let links = std::mem::take(&mut self.live_links);
        n += stale::<LinkKey, u32>(self, map_names::LINKS, &links)?.len();
        self.live_links = links;
        n += self.prune6()?;
        // No IPv6 network replayed: an earlier daemon's IPv6 bodies leave `V6_PROGS`.
        self.l()?.clear_v6_if_unused().map_err(|e| err("V6_PROGS", e))?;
        // No translation may outlive what it pointed at.
        if !gone_eps.is_empty() || !gone_pubs.is_empty() {
            let eps: HashSet<u32> = gone_eps.into_iter().collect();
            let ports: HashSet<(u8, u16)> = gone_pubs.iter().map(|k| (k.proto, k.port)).collect();
            n += self.purge_ct(|k, v| {
                eps.contains(&k.saddr)
                    || eps.contains(&k.daddr)
                    || eps.contains(&v.saddr)
                    || eps.contains(&v.daddr)
                    || (v.stats_slot != 0
                        && (ports.contains(&(k.proto, k.dport)) || ports.contains(&(k.proto, v.sport))))
            })?;
        }
        // Pinned tc links of veths no live sandbox owns (their veth went with a crash).
        if let Some(dir) = self.pin_dir.as_ref().map(|d| d.join("links")) {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let stale_veth = name.strip_prefix("veth-").is_some_and(|v| !self.veth_links.contains_key(v));
                let stale_bridge =
                    name.strip_prefix("bridge-").is_some_and(|b| !self.bridges.values().any(|(n, _)| n == b));
                if stale_veth || stale_bridge {
                    tracing::info!(pin = %name, "removing stale pinned link");
                    self.l()?.unpin(&name);
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// A GC pass ([`CtMaps::gc`]) with the queued purges, run here (tests; the daemon runs
    /// [`Dataplane::ct_job`]s without the dataplane's lock). Also follows the host's port range.
    fn gc(&mut self) -> DpResult<usize> {
        self.run_job(true)
    }

    fn stats(&self) -> DpResult<Stats> {
        let Some(l) = &self.loaded else { return Ok(Stats::default()) };
        let m = l.ebpf.map(map_names::PORT_STATS).ok_or_else(|| err("PORT_STATS", "missing"))?;
        let arr: PerCpuArray<&MapData, PacketCount> = PerCpuArray::try_from(m).map_err(|e| err("PORT_STATS", e))?;
        let mut ports: Vec<PortStats> = Vec::new();
        let sorted: BTreeMap<_, _> = self.slots.iter().map(|(k, v)| (*k, *v)).collect();
        for ((proto, ip, port), slot) in sorted {
            let v = arr.get(&slot, 0).map_err(|e| err("PORT_STATS", e))?;
            let (packets, bytes) = v.iter().fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes));
            ports.push(PortStats { proto, host_ip: ip, host_port: port, packets, bytes });
        }
        let drops = l.drop_stats().map_err(|e| err("DROP_STATS", e))?;
        let drops = DropReason::ALL.iter().map(|r| (r.label().to_string(), drops[r.label()])).collect();
        Ok(Stats { ports, drops })
    }

    fn tearing_down(&mut self) {
        self.tearing_down = true;
    }

    fn shutdown(&mut self, keep: bool) -> DpResult<()> {
        self.veth_links.clear();
        self.ct = None;
        if keep {
            // --live-restore: pins stay, the datapath runs on without the daemon.
            if let Some(l) = self.loaded.as_mut() {
                l.keep_pins();
            }
            self.loaded = None;
            return Ok(());
        }
        // Removing the pins and closing our fds detaches every link and frees every map.
        self.loaded = None;
        if let Some(d) = self.pin_dir.take() {
            if self.bpffs_mounted {
                let _ = nix::mount::umount2(&d, nix::mount::MntFlags::MNT_DETACH);
            }
            if let Err(e) = std::fs::remove_dir_all(&d) {
                tracing::warn!(dir = %d.display(), error = %e, "removing pins");
            }
        }
        if let Some(p) = self.cgroup_mount.take() {
            let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(&p);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_matches_the_wire() {
        // 172.17.0.2 on the wire is ac 11 00 02; the programs read it as a native u32.
        assert_eq!(be_addr(Ipv4Addr::new(172, 17, 0, 2)).to_ne_bytes(), [172, 17, 0, 2]);
        assert_eq!(be_port(8080).to_ne_bytes(), 8080u16.to_be_bytes());
    }

    #[test]
    fn conntrack_timeouts_follow_nf_conntrack_states() {
        use netd_common::{CT_ACT_HOSTFLOW, CT_F_ACKED, CT_F_CLOSING, CT_F_REPLY, CT_F_RST, CT_F_SEEN};
        let v = |flags: u8| CtValue { flags, ..Default::default() };
        let (seen, reply) = (CT_F_SEEN, CT_F_SEEN | CT_F_REPLY);
        // TCP: SYN only, SYN answered, established, half-closed, closed, reset.
        assert_eq!(ct_timeout(6, &v(seen), Some(&v(CT_F_REPLY))), (120, false));
        assert_eq!(ct_timeout(6, &v(seen), Some(&v(reply))), (60, false));
        assert_eq!(ct_timeout(6, &v(seen | CT_F_ACKED), Some(&v(reply))), (432_000, true));
        assert_eq!(ct_timeout(6, &v(seen | CT_F_ACKED | CT_F_CLOSING), Some(&v(reply))), (120, true));
        assert_eq!(ct_timeout(6, &v(seen | CT_F_ACKED | CT_F_CLOSING), Some(&v(reply | CT_F_CLOSING))), (10, true));
        assert_eq!(ct_timeout(6, &v(seen | CT_F_ACKED), Some(&v(reply | CT_F_CLOSING | CT_F_RST))), (10, true));
        // UDP: unanswered, answered; ICMP.
        assert_eq!(ct_timeout(17, &v(seen), Some(&v(CT_F_REPLY))), (30, false));
        assert_eq!(ct_timeout(17, &v(seen), Some(&v(reply))), (120, true));
        assert_eq!(ct_timeout(1, &v(seen), None), (30, false));
        // A host flow's marker lives as long as the host's flow (never counted as unanswered).
        let m = CtValue { action: CT_ACT_HOSTFLOW, ..Default::default() };
        assert_eq!(ct_timeout(6, &m, None), (432_000, true));
        assert_eq!(ct_timeout(17, &m, None), (120, true));
    }

    #[test]
    fn the_port_range_is_read_from_the_netns() {
        let (lo, hi) = local_port_range().expect("ip_local_port_range");
        assert!(lo > 0 && lo <= hi, "{lo}-{hi}");
    }
}
