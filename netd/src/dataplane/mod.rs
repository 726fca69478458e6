//! The dataplane: everything that moves or filters packets for netd's model, behind one trait
//! with three backends — `ebpf` (TC/XDP/cgroup programs and BPF maps, the default), `iptables`
//! (Docker 29's rule layout, for equivalence tests and benchmarks) and `none` (topology only).
//!
//! The daemon calls the trait for every network, endpoint, port mapping and link change, in this
//! order: `init` once; `network_added` before any endpoint on it; `endpoint_added` before its
//! ports and links; removals in the reverse order; `shutdown` last. Every call is idempotent:
//! repeating an add is a no-op, removing what is absent is Ok (so reconcile after a crash can
//! simply replay the desired state).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

pub mod ebpf;
pub mod iptables;
pub mod noop;

/// Which backend `netd up --dataplane` selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Ebpf,
    Iptables,
    None,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Ebpf => "ebpf",
            Backend::Iptables => "iptables",
            Backend::None => "none",
        })
    }
}

/// Docker's `com.docker.network.bridge.gateway_mode_ipv4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayMode {
    #[default]
    Nat,
    NatUnprotected,
    Routed,
}

impl std::str::FromStr for GatewayMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nat" => Ok(Self::Nat),
            "nat-unprotected" => Ok(Self::NatUnprotected),
            "routed" => Ok(Self::Routed),
            other => Err(format!("unknown gateway mode {other:?}, expected one of nat, nat-unprotected, routed")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// What the daemon knows about its host when it starts the dataplane.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    /// Interfaces that lead out of the host (`--uplink`, default: every interface but `lo`,
    /// bridges, their ports and sandbox veths), followed live.
    pub uplinks: Vec<Uplink>,
    /// Every IPv4 address of the host namespace (Docker's `--dst-type LOCAL`), followed live.
    #[serde(default)]
    pub local_addrs: Vec<Ipv4Addr>,
    /// Every IPv6 address of the host namespace (`::1` aside, link-local included), followed
    /// live like `local_addrs`.
    #[serde(default)]
    pub local_addrs6: Vec<Ipv6Addr>,
    /// Bridges named like Docker's own (`docker0`, `br-<12 hex>`), followed live. netd's own
    /// bridges can match too (its user networks are `br-<id>`): each backend leaves out the
    /// bridges of its networks. The rest are isolated from netd's networks both ways, as
    /// Docker isolates its bridge networks from each other.
    #[serde(default)]
    pub docker_bridges: Vec<HostBridge>,
    /// `--userland-proxy` (iptables backend only; eBPF needs no proxy).
    pub userland_proxy: bool,
    /// Pin directory for maps and links (`--bpffs`).
    pub bpffs: std::path::PathBuf,
    /// cgroup v2 directory where the sock_addr programs attach (`--cgroup`).
    pub cgroup: Option<std::path::PathBuf>,
    /// `SO_NETNS_COOKIE` of the daemon's network namespace.
    pub netns_cookie: u64,
    #[serde(default)]
    pub xdp: XdpChoice,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uplink {
    pub name: String,
    pub ifindex: u32,
    pub addrs: Vec<Ipv4Addr>,
    /// Its IPv6 addresses, global ones first (NAT66 masquerades to the first global one).
    #[serde(default)]
    pub addrs6: Vec<Ipv6Addr>,
    /// Link kind (`veth`, ... or empty for physical devices).
    #[serde(default)]
    pub kind: String,
    /// No link-layer header (tun, WireGuard, PPP): the L3 program variant, no XDP.
    #[serde(default)]
    pub l3: bool,
}

/// A bridge of the host namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBridge {
    pub name: String,
    pub ifindex: u32,
}

/// The names Docker's bridge driver gives its bridges: `docker0` and `br-` + the first 12 hex
/// digits of the network id. (A Docker network created with `-o
/// com.docker.network.bridge.name=X` cannot be told from any other bridge, and is not matched.)
pub fn is_docker_bridge_name(name: &str) -> bool {
    name == "docker0"
        || name.strip_prefix("br-").is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `netd up --xdp`: where the uplink protections run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpChoice {
    /// Native XDP on physical uplinks; on veth uplinks tc only (while an XDP program is attached
    /// to a veth, the kernel turns TSO off on its peer, which costs throughput; see bench/report.md).
    #[default]
    Auto,
    Native,
    Generic,
    Off,
}

/// A bridge network as the dataplane sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Small dense number used in map values (the default bridge is 1).
    pub index: u32,
    pub id: String,
    pub name: String,
    pub bridge: String,
    pub bridge_ifindex: u32,
    /// The network's IPv4 side; `None` on IPv6-only networks (`--ipv4=false`): no v4 address on
    /// the bridge, no v4 rules or map entries, sandboxes without a v4 address.
    pub ipv4: Option<NetworkSpecV4>,
    pub icc: bool,
    pub masquerade: bool,
    pub internal: bool,
    /// Default host address for `-p` on this network (`--ip`, `host_binding_ipv4`).
    pub host_binding_ipv4: Ipv4Addr,
    pub mtu: u32,
    /// The network's IPv6 side (`--ipv6`); `None` on IPv4-only networks, whose sandboxes have
    /// IPv6 disabled on their interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<NetworkSpecV6>,
}

/// The IPv4 side of a bridge network: the bridge holds `gateway/prefix_len`, every sandbox gets
/// one address of `subnet/prefix_len` and a default route via `gateway`. `gateway_mode` is
/// Docker's `gateway_mode_ipv4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpecV4 {
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub gateway_mode: GatewayMode,
}

impl NetworkSpecV4 {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.subnet) & self.mask()
    }
    pub fn mask(&self) -> u32 {
        if self.prefix_len == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix_len)) }
    }
    /// `subnet/len` with host bits cleared, as iptables prints it.
    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(u32::from(self.subnet) & self.mask()), self.prefix_len)
    }
}

/// The IPv6 side of a dual-stack bridge network: the bridge holds `gateway/prefix_len` (plus
/// its link-local address), every sandbox gets one address of `subnet/prefix_len` and a
/// default route via `gateway`. `gateway_mode` is Docker's `gateway_mode_ipv6` (`nat`
/// masquerades whatever the prefix, ULA or global; `routed` does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpecV6 {
    pub subnet: Ipv6Addr,
    pub prefix_len: u8,
    pub gateway: Ipv6Addr,
    pub gateway_mode: GatewayMode,
}

impl NetworkSpecV6 {
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        let mask = if self.prefix_len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix_len)) };
        u128::from(ip) & mask == u128::from(self.subnet) & mask
    }
    /// `subnet/len` with host bits cleared, as iptables prints it.
    pub fn cidr(&self) -> String {
        let mask = if self.prefix_len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix_len)) };
        format!("{}/{}", Ipv6Addr::from(u128::from(self.subnet) & mask), self.prefix_len)
    }
}

impl NetworkSpec {
    /// Whether `ip` is in the network's IPv4 subnet (never on an IPv6-only network).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.ipv4.is_some_and(|v| v.contains(ip))
    }
}

/// A sandbox's interface on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub container_id: String,
    pub network_index: u32,
    /// Host-side veth (`veth<7 hex>`) and its ifindex in the daemon's namespace.
    pub host_veth: String,
    pub host_ifindex: u32,
    /// The sandbox's IPv4 address (`None` on IPv6-only networks).
    pub ip: Option<Ipv4Addr>,
    /// The sandbox's global IPv6 address on a dual-stack network (`None` on IPv4-only ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub mac: [u8; 6],
}

/// One published port, after allocation: host (ip, port) to sandbox (ip, port). The two
/// addresses are usually of one family: `0.0.0.0:8080 -> <sandbox v4>:80` and, on a dual-stack
/// network, `[::]:8080 -> [<sandbox v6>]:80` (Docker makes both for `-p 8080:80`). A v6 host
/// address with a v4 sandbox address is Docker's proxied binding (a v4-only sandbox published
/// on `[::]`): the iptables dataplane serves it with the userland proxy only (no ip6tables
/// rule), the eBPF dataplane translates v6 to v4 itself. Never v4 host, v6 sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub proto: Proto,
    /// `0.0.0.0` / `::` for every host address of that family.
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_ip: IpAddr,
    pub container_port: u16,
    pub network_index: u32,
    /// No userland proxy serves this binding whatever `--userland-proxy` says (CNI: the runtime
    /// holds the host port, netd only translates): the iptables dataplane gives it Docker's
    /// proxy-less rules (loopback and hairpin by DNAT). The eBPF dataplane needs no proxy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unproxied: bool,
}

impl LinkRule {
    /// The v4 (source, destination) pair, when both ends have one.
    pub fn v4(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        self.src.zip(self.dst)
    }
}

impl PortMapping {
    /// Host and sandbox addresses of different families (a `[::]` binding of a v4-only sandbox).
    pub fn is_cross_family(&self) -> bool {
        self.host_ip.is_ipv4() != self.container_ip.is_ipv4()
    }
}

/// An icc=false exception opened by `--link`: `src` may reach `dst:port/proto` (and its replies),
/// over IPv4 when both have a v4 address, over IPv6 when both have a v6 one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LinkRule {
    pub network_index: u32,
    /// Both ends' IPv4 addresses (`None` when one of them has none: an IPv6-only network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<Ipv4Addr>,
    pub proto: Proto,
    pub port: u16,
    /// Both ends' IPv6 addresses on a dual-stack network: the exception holds for v6 too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v6: Option<(Ipv6Addr, Ipv6Addr)>,
}

/// Counters a dataplane reports for `netd stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub ports: Vec<PortStats>,
    pub drops: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortStats {
    pub proto: Proto,
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub packets: u64,
    pub bytes: u64,
}

pub type DpResult<T> = Result<T, DataplaneError>;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("{backend}: {context}: {message}")]
    Failed { backend: &'static str, context: String, message: String },
}

impl DataplaneError {
    pub fn new(backend: &'static str, context: impl Into<String>, e: impl std::fmt::Display) -> Self {
        Self::Failed { backend, context: context.into(), message: e.to_string() }
    }
}

/// Conntrack work a backend queued (purges after removals and publishes, a GC pass), to run
/// without the dataplane's lock ([`Dataplane::ct_job`]).
pub struct CtJob {
    /// The sequence number of the last queued change the job covers.
    pub seq: u64,
    pub run: Box<dyn FnOnce() -> DpResult<usize> + Send>,
}

/// The contract every backend implements. Calls come from the daemon through its dataplane
/// lock (`daemon::Dp`), one at a time; they may block briefly (map updates, one
/// `iptables-restore`). Scans of the conntrack table are not done in them but queued and
/// handed out as a [`CtJob`].
pub trait Dataplane: Send {
    fn backend(&self) -> Backend;
    /// Whether this backend implements IPv6: dual-stack networks (v6 endpoints, NAT66,
    /// isolation) and v6 port bindings (`[::]`, `[::1]`, proxied v6-to-v4). When false the
    /// daemon refuses `--ipv6` networks and v6 `-p` addresses with a clear error and makes no
    /// implicit `[::]` binding, so IPv6 never half-works.
    fn ipv6(&self) -> bool {
        false
    }
    /// Attach programs / install base rules. `live` = state adopted from a previous daemon
    /// (pinned maps, existing rules) that must be kept, not rebuilt.
    fn init(&mut self, host: &HostInfo) -> DpResult<()>;
    fn network_added(&mut self, net: &NetworkSpec) -> DpResult<()>;
    fn network_removed(&mut self, net: &NetworkSpec) -> DpResult<()>;
    fn endpoint_added(&mut self, net: &NetworkSpec, ep: &EndpointSpec) -> DpResult<()>;
    fn endpoint_removed(&mut self, net: &NetworkSpec, ep: &EndpointSpec) -> DpResult<()>;
    fn ports_added(&mut self, net: &NetworkSpec, ports: &[PortMapping]) -> DpResult<()>;
    fn ports_removed(&mut self, net: &NetworkSpec, ports: &[PortMapping]) -> DpResult<()>;
    fn links_added(&mut self, net: &NetworkSpec, links: &[LinkRule]) -> DpResult<()>;
    fn links_removed(&mut self, net: &NetworkSpec, links: &[LinkRule]) -> DpResult<()>;
    fn stats(&self) -> DpResult<Stats>;
    /// What the installed datapath lacks of an endpoint and its bindings (CNI CHECK), read from
    /// the kernel (map entries, rules), not from the backend's own bookkeeping: one sentence per
    /// missing or wrong piece, empty when everything is in place.
    fn missing(&mut self, _net: &NetworkSpec, _ep: &EndpointSpec, _ports: &[PortMapping]) -> DpResult<Vec<String>> {
        Ok(Vec::new())
    }
    /// The host's interfaces or addresses changed (rtnetlink): `host` holds the uplinks and
    /// local addresses now. Backends whose rules do not name interfaces ignore it.
    fn host_changed(&mut self, _host: &HostInfo) -> DpResult<()> {
        Ok(())
    }
    /// Something to call on every change of the host's routes or neighbours (rtnetlink), from
    /// outside the state lock: the eBPF dataplane's conntrack entries cache their routes (next
    /// hop, MACs, MTU) and must look them up again. None: nothing is cached.
    fn route_watcher(&mut self) -> Option<Box<dyn FnMut() + Send>> {
        None
    }
    /// While something a later change may need is still being prepared in the background (the
    /// eBPF dataplane's IPv6 programs, loading and verifying for seconds after `netd up`): a
    /// blocking wait for it, which the daemon runs without its locks before a change that
    /// needs it (a dual-stack network, a NAT46 binding), so that other requests do not queue
    /// behind the wait. `None`: nothing pending. The change itself still waits if it comes
    /// first (correctness never depends on this).
    fn pending_load(&mut self) -> Option<Box<dyn FnOnce() + Send>> {
        None
    }
    /// Work a change left for after its reply (the eBPF dataplane's conntrack purge for freshly
    /// published ports): run by the daemon right after each request and by the GC tick.
    fn deferred(&mut self) -> DpResult<usize> {
        Ok(0)
    }
    /// After a restart has replayed every live sandbox: remove whatever the backend still holds
    /// beyond that (a daemon killed in the middle of a change can leave entries, links or pins
    /// of sandboxes that never came up or were half removed). Returns how many went.
    fn prune(&mut self) -> DpResult<usize> {
        Ok(0)
    }
    /// Expire idle or closed flows (called periodically). Returns how many entries went.
    fn gc(&mut self) -> DpResult<usize> {
        Ok(0)
    }
    /// The sequence number of the last conntrack change queued (0: this backend queues none).
    fn ct_seq(&self) -> u64 {
        0
    }
    /// Take the queued conntrack work, plus a GC pass when `gc`, as a job that runs without
    /// the dataplane (`None`: nothing to do). Jobs are run one at a time, in the order taken.
    fn ct_job(&mut self, _gc: bool) -> DpResult<Option<CtJob>> {
        Ok(None)
    }
    /// The job covering changes up to `seq` has run: what it protected (stats slots of removed
    /// bindings) may be reused.
    fn ct_done(&mut self, _seq: u64) {}
    /// `netd monitor --type drop|trace`: what the programs report from now on
    /// (`netd_common::monitor::F_*`; 0: nothing, the state without a monitor client). Err:
    /// this backend has no dataplane events.
    fn set_monitor(&mut self, _flags: u32) -> DpResult<()> {
        Err(DataplaneError::new(
            "monitor",
            "netd monitor --type drop|trace",
            format!("dataplane events need the eBPF dataplane (this daemon runs {})", self.backend()),
        ))
    }
    /// The ring buffer the programs write `netd monitor`'s events to (taken once, by the
    /// daemon's reader).
    fn take_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        None
    }
    /// The daemon's teardown has begun (`netd down`): everything goes, and [`Dataplane::shutdown`]
    /// follows once the sandboxes' devices are deleted (in one batch). A backend may leave to
    /// it what it would otherwise undo per endpoint: the eBPF dataplane leaves each veth's
    /// program (a filter that goes with its device) to the batch deletion.
    fn tearing_down(&mut self) {}
    /// Remove everything this backend installed (`keep` = leave the datapath running for
    /// `--live-restore`, only drop the daemon's handles).
    fn shutdown(&mut self, keep: bool) -> DpResult<()>;
}
