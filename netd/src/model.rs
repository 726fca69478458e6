//! The daemon's persistent model: networks and sandboxes (backend-neutral), stored as one JSON
//! file per object under `--data-root`, each written atomically (temp file, fsync, rename).
use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    api::CreateRequest,
    dataplane::{GatewayMode, NetworkSpec, PortMapping},
};

/// How a sandbox is networked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Mode", content = "Target")]
pub enum NetworkMode {
    /// A bridge network (the default bridge or a user network), by network id.
    Bridge(String),
    Host,
    None,
    /// `container:ID`: share that sandbox's network namespace.
    Container(String),
}

impl NetworkMode {
    pub fn docker_name(&self, nets: &BTreeMap<String, Network>) -> String {
        match self {
            NetworkMode::Bridge(id) => nets.get(id).map_or_else(|| id.clone(), Network::docker_name),
            NetworkMode::Host => "host".into(),
            NetworkMode::None => "none".into(),
            NetworkMode::Container(id) => format!("container:{id}"),
        }
    }
}

/// A network (`bridge`, `host`, `none` are predefined; user networks are bridges too).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// `bridge`, `host` or `null`.
    pub driver: String,
    pub created: String,
    /// The default bridge (`bridge`, on `netd0` or `-b`).
    pub default_bridge: bool,
    /// Bridge networks only.
    pub bridge: Option<BridgeNet>,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BridgeNet {
    /// Dense index used by the dataplane (1 = default bridge).
    pub index: u32,
    pub bridge: String,
    /// Created by netd (removed on teardown) rather than adopted with `-b`.
    pub owned: bool,
    /// The IPv4 side: `None` on IPv6-only networks (`--ipv4=false`, Docker 28). Flattened, so
    /// the persisted layout of a network with IPv4 is the one of before (`subnet`, `gateway`,
    /// ... at the top level), and a file without them loads as IPv6-only.
    #[serde(flatten)]
    pub ipv4: Option<BridgeNetV4>,
    pub icc: bool,
    pub masquerade: bool,
    pub host_binding_ipv4: Ipv4Addr,
    pub mtu: u32,
    /// The IPv6 side (`--ipv6`): `None` on IPv4-only networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<BridgeNetV6>,
}

/// A network's IPv4 prefix, gateway (on the bridge) and address range.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BridgeNetV4 {
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// `--fixed-cidr` / `--ip-range`: where sandbox addresses come from.
    pub ip_range: Option<(Ipv4Addr, u8)>,
    /// Whether the subnet was given by the user (shown in IPAM.Config).
    pub user_subnet: bool,
    /// `com.docker.network.bridge.gateway_mode_ipv4`.
    pub gateway_mode: GatewayMode,
}

impl BridgeNet {
    /// Whether `--ip` (a static v4 address) may be asked for: a user-given v4 subnet.
    pub fn user_subnet4(&self) -> bool {
        self.ipv4.as_ref().is_some_and(|v| v.user_subnet)
    }
    /// Whether the network publishes container ports directly (routed gateway mode) rather
    /// than through NAT: the v4 side's mode, or the v6 side's on an IPv6-only network.
    pub fn routed(&self) -> bool {
        let mode = match (&self.ipv4, &self.ipv6) {
            (Some(v4), _) => v4.gateway_mode,
            (None, Some(v6)) => v6.gateway_mode,
            (None, None) => GatewayMode::Nat,
        };
        mode == GatewayMode::Routed
    }
}

/// A dual-stack network's IPv6 prefix, gateway (on the bridge) and address range.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BridgeNetV6 {
    pub subnet: Ipv6Addr,
    pub prefix_len: u8,
    pub gateway: Ipv6Addr,
    /// `--fixed-cidr-v6` (default bridge) / a v6 `--ip-range`.
    #[serde(default)]
    pub ip_range: Option<(Ipv6Addr, u8)>,
    /// Given by the user (`--subnet`, `--fixed-cidr-v6`) rather than from the pools.
    #[serde(default)]
    pub user_subnet: bool,
    /// `com.docker.network.bridge.gateway_mode_ipv6`.
    #[serde(default)]
    pub gateway_mode: GatewayMode,
}

impl Network {
    /// The name Docker shows for it: `bridge` for the default bridge, else its own.
    pub fn docker_name(&self) -> String {
        if self.default_bridge { "bridge".into() } else { self.name.clone() }
    }

    pub fn spec(&self, bridge_ifindex: u32) -> Option<NetworkSpec> {
        let b = self.bridge.as_ref()?;
        Some(NetworkSpec {
            index: b.index,
            id: self.id.clone(),
            name: self.name.clone(),
            bridge: b.bridge.clone(),
            bridge_ifindex,
            ipv4: b.ipv4.as_ref().map(|v| crate::dataplane::NetworkSpecV4 {
                subnet: v.subnet,
                prefix_len: v.prefix_len,
                gateway: v.gateway,
                gateway_mode: v.gateway_mode,
            }),
            icc: b.icc,
            masquerade: b.masquerade,
            internal: self.internal,
            host_binding_ipv4: b.host_binding_ipv4,
            mtu: b.mtu,
            ipv6: b.ipv6.as_ref().map(|v| crate::dataplane::NetworkSpecV6 {
                subnet: v.subnet,
                prefix_len: v.prefix_len,
                gateway: v.gateway,
                gateway_mode: v.gateway_mode,
            }),
        })
    }
}

/// A sandbox's attachment to a bridge network (exists while it runs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub network_id: String,
    pub endpoint_id: String,
    pub host_veth: String,
    /// `eth0`, `eth1`, ... inside the sandbox.
    pub ifname: String,
    /// The IPv4 address, its prefix length and the network's gateway (`None` on IPv6-only
    /// networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub prefix_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    pub mac: [u8; 6],
    pub aliases: Vec<String>,
    /// Requested with `--ip` / `network connect --ip` (kept across restarts).
    pub static_ip: Option<Ipv4Addr>,
    /// The global IPv6 address on a dual-stack network, its prefix length and the network's
    /// v6 gateway (`None` on IPv4-only networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default)]
    pub prefix_len6: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// Requested with `--ip6` / `network connect --ip6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_ip6: Option<Ipv6Addr>,
}

/// Who owns an attachment: the front-end that asked for it and its key there. Every front-end
/// (netd's sandboxes, the Docker remote driver, the CNI plugin) looks its attachments up by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "Kind")]
pub enum Owner {
    /// A netd sandbox (`netd run`), by container id.
    Sandbox { id: String },
    /// A Docker endpoint (libnetwork remote driver), by EndpointID.
    Docker { endpoint_id: String },
    /// A CNI ADD, by its (container id, ifname, network config name) triple.
    Cni { container_id: String, ifname: String, config_name: String },
}

impl Owner {
    /// The owner's own key, for messages (`failed to set up endpoint for KEY ...`).
    pub fn key(&self) -> &str {
        match self {
            Owner::Sandbox { id } => id,
            Owner::Docker { endpoint_id } => endpoint_id,
            Owner::Cni { container_id, .. } => container_id,
        }
    }
    pub fn is_sandbox(&self) -> bool {
        matches!(self, Owner::Sandbox { .. })
    }
}

/// Where an attachment's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressSource {
    /// netd's IPAM picked the lowest free address of the network's range.
    Pool,
    /// Asked for (`--ip`, a CNI `ips` request): must be inside the subnet and free.
    Static,
    /// Allocated by someone else's IPAM (Docker's): recorded as used, never refused.
    External,
}

/// How an attachment's ports are published (kept with it so a restart replays them alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortOpts {
    /// Hold a bound socket per binding (Docker's model: nobody else can take the port).
    pub hold_socket: bool,
    /// Serve the binding from the daemon when the iptables dataplane runs with
    /// `--userland-proxy` (needs `hold_socket`).
    pub userland_proxy: bool,
}

impl Default for PortOpts {
    fn default() -> Self {
        Self { hold_socket: true, userland_proxy: true }
    }
}

impl PortOpts {
    /// Reserve the host port in netd's allocator and program the dataplane only: no socket,
    /// no proxy (what a CNI portmap does).
    pub const RESERVE_ONLY: PortOpts = PortOpts { hold_socket: false, userland_proxy: false };
}

/// A host-port request of one binding: `host_port_start == 0` is ephemeral, a range picks the
/// first free port of it, `host_ip` `None` is the network's default binding address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRequest {
    pub proto: crate::dataplane::Proto,
    /// Either family; `None`: the network's default (`0.0.0.0`, plus `[::]` as Docker does).
    pub host_ip: Option<IpAddr>,
    pub host_port_start: u16,
    pub host_port_end: u16,
    pub container_port: u16,
}

/// A network namespace (or, until its owner moves it, a veth peer in the daemon's own
/// namespace) joined to a netd network. See `daemon::attach` for the operations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attachment {
    /// The attachment's id (a sandbox's endpoint id, Docker's EndpointID, or a new id).
    pub id: String,
    pub owner: Owner,
    pub network_id: String,
    /// Host-side veth (`veth<7 hex>`, on the network's bridge) and its ifindex.
    pub host_veth: String,
    pub host_ifindex: u32,
    /// The namespace the peer was moved into (`None`: the peer is still in the daemon's
    /// namespace under `ifname`, for its owner to move, as Docker does).
    pub netns: Option<PathBuf>,
    /// The peer's name: inside `netns`, or its temporary name in the daemon's namespace.
    pub ifname: String,
    /// The IPv4 side (address, prefix length, gateway); `None` on IPv6-only networks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub prefix_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 side on a dual-stack network (address, prefix length, gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default)]
    pub prefix_len6: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// Where the v6 address came from (`Static`: `--ip6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source6: Option<AddressSource>,
    pub mac: [u8; 6],
    pub source: AddressSource,
    /// A default route via the gateway was added inside `netns`.
    pub default_route: bool,
    /// The actual bindings (after allocation).
    pub ports: Vec<PortMapping>,
    pub port_opts: PortOpts,
    pub aliases: Vec<String>,
    pub created: String,
}

impl Attachment {
    /// The sandbox view of an attachment (what a container record keeps).
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            network_id: self.network_id.clone(),
            endpoint_id: self.id.clone(),
            host_veth: self.host_veth.clone(),
            ifname: self.ifname.clone(),
            ip: self.ip,
            prefix_len: self.prefix_len,
            gateway: self.gateway,
            mac: self.mac,
            aliases: self.aliases.clone(),
            static_ip: self.ip.filter(|_| self.source == AddressSource::Static),
            ip6: self.ip6,
            prefix_len6: self.prefix_len6,
            gateway6: self.gateway6,
            static_ip6: self.ip6.filter(|_| self.source6 == Some(AddressSource::Static)),
        }
    }

    /// The attachment a sandbox's endpoint record stands for (rebuilt at restart).
    pub fn from_endpoint(cid: &str, ep: &Endpoint, netns: Option<PathBuf>, ports: Vec<PortMapping>) -> Self {
        Self {
            id: ep.endpoint_id.clone(),
            owner: Owner::Sandbox { id: cid.to_string() },
            network_id: ep.network_id.clone(),
            host_veth: ep.host_veth.clone(),
            host_ifindex: 0,
            netns,
            ifname: ep.ifname.clone(),
            ip: ep.ip,
            prefix_len: ep.prefix_len,
            gateway: ep.gateway,
            ip6: ep.ip6,
            prefix_len6: ep.prefix_len6,
            gateway6: ep.gateway6,
            source6: ep.ip6.map(|_| if ep.static_ip6.is_some() { AddressSource::Static } else { AddressSource::Pool }),
            mac: ep.mac,
            source: if ep.static_ip.is_some() { AddressSource::Static } else { AddressSource::Pool },
            default_route: ep.ifname == "eth0",
            ports,
            port_opts: PortOpts::default(),
            aliases: ep.aliases.clone(),
            created: String::new(),
        }
    }
}

/// What was asked for with `-p`, per container port (Docker's `HostConfig.PortBindings`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestedBinding {
    pub proto: String,
    pub container_port: u16,
    pub host_ip: String,
    /// `""` (ephemeral), `"8080"` or `"8000-8010"`.
    pub host_port: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub status: Status,
    /// The sandbox's main process.
    pub pid: i32,
    /// Its supervisor (outlives the daemon).
    pub shim_pid: i32,
    pub exit_code: i64,
    pub started_at: String,
    pub finished_at: String,
    pub error: String,
}

impl Default for RunState {
    fn default() -> Self {
        Self {
            status: Status::Created,
            pid: 0,
            shim_pid: 0,
            exit_code: 0,
            started_at: ZERO_TIME.into(),
            finished_at: ZERO_TIME.into(),
            error: String::new(),
        }
    }
}

pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub created: String,
    pub created_unix: i64,
    pub config: CreateRequest,
    pub mode: NetworkMode,
    /// Extra user networks joined with `network connect` (ids) beyond the one in `mode`.
    pub extra_networks: Vec<String>,
    pub hostname: String,
    pub domainname: String,
    pub requested: Vec<RequestedBinding>,
    /// `80/tcp` keys of every exposed port (`--expose` and `-p` container ports).
    pub exposed: Vec<String>,
    pub state: RunState,
    /// Live while running.
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<PortMapping>,
    pub restart_count: u32,
    /// The network namespace bind mount while running (bridge and none modes).
    pub netns: Option<PathBuf>,
    /// icc=false exceptions opened by this sandbox's `--link`s while it runs.
    #[serde(default)]
    pub link_rules: Vec<crate::dataplane::LinkRule>,
    /// Docker 28's gateway priority of each network (id) joined with one other than 0.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub gw_priority: std::collections::BTreeMap<String, i64>,
}

impl Container {
    /// The gateway priority of network `id` for this sandbox (0 unless set).
    pub fn gw_priority_of(&self, id: &str) -> i64 {
        self.gw_priority.get(id).copied().unwrap_or(0)
    }
}

/// When a JSON write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the call returns (fsync of the file, then of its directory).
    Now,
    /// Soon after, from a background thread ([`sync_later`]): the write is visible (to a
    /// restarted daemon too) when the call returns; only a power loss in between can lose it.
    Later,
    /// Never explicitly: runtime files under the exec-root (a tmpfs on real hosts), which a
    /// reboot clears anyway.
    No,
}

/// Atomic JSON write: temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    write_json(path, value, Durability::Now)
}

/// Atomic JSON write (temp file in the same directory, renamed over `path`), synced to disk as
/// `sync` says.
pub fn write_json(path: &Path, value: &impl Serialize, sync: Durability) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
        if sync == Durability::Now {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    match sync {
        Durability::Now => {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Durability::Later => sync_later(path),
        Durability::No => {}
    }
    Ok(())
}

/// Queue `path` (and its directory) for an fsync on a background thread, which syncs every
/// file queued meanwhile in one pass. Sandbox records change on every create, start, exit and
/// removal: syncing them inline cost 1-15 ms per change on this machine's disk, under the
/// state lock for some (a `netd down` of N sandboxes paid N of them in a row). A daemon that
/// crashes loses nothing (the page cache holds the renamed file); a power loss, which ends
/// every sandbox anyway, can lose the last few milliseconds of changes, and the loader skips
/// an unreadable record.
pub fn sync_later(path: &Path) {
    use std::sync::{Mutex, OnceLock, mpsc};
    static QUEUE: OnceLock<Mutex<mpsc::Sender<PathBuf>>> = OnceLock::new();
    let q = QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<PathBuf>();
        let _ = std::thread::Builder::new().name("netd-sync".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut files = std::collections::BTreeSet::from([first]);
                while let Ok(p) = rx.try_recv() {
                    files.insert(p);
                }
                let mut dirs = std::collections::BTreeSet::new();
                for f in &files {
                    if let Ok(h) = fs::File::open(f) {
                        let _ = h.sync_all();
                    }
                    if let Some(d) = f.parent() {
                        dirs.insert(d.to_path_buf());
                    }
                }
                for d in dirs {
                    if let Ok(h) = fs::File::open(&d) {
                        let _ = h.sync_all();
                    }
                }
            }
        });
        Mutex::new(tx)
    });
    let _ = q.lock().unwrap_or_else(|e| e.into_inner()).send(path.to_path_buf());
}

/// The on-disk layout under `--data-root`.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

impl Store {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }
    pub fn container_file(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("container.json")
    }
    pub fn log_file(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("container.log")
    }
    pub fn network_file(&self, id: &str) -> PathBuf {
        self.root.join("networks").join(format!("{id}.json"))
    }

    pub fn attachment_file(&self, id: &str) -> PathBuf {
        self.root.join("attachments").join(format!("{id}.json"))
    }
    pub fn save_attachment(&self, a: &Attachment) -> std::io::Result<()> {
        write_json(&self.attachment_file(&a.id), a, Durability::Later)
    }
    pub fn remove_attachment(&self, id: &str) -> std::io::Result<()> {
        match fs::remove_file(self.attachment_file(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
    pub fn load_attachments(&self) -> (Vec<Attachment>, Vec<String>) {
        let files = fs::read_dir(self.root.join("attachments"))
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect())
            .unwrap_or_default();
        Self::load_all(files)
    }

    pub fn save_container(&self, c: &Container) -> std::io::Result<()> {
        write_json(&self.container_file(&c.id), c, Durability::Later)
    }
    pub fn save_network(&self, n: &Network) -> std::io::Result<()> {
        write_json_atomic(&self.network_file(&n.id), n)
    }
    pub fn remove_container(&self, id: &str) -> std::io::Result<()> {
        match fs::remove_dir_all(self.container_dir(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
    pub fn remove_network(&self, id: &str) -> std::io::Result<()> {
        match fs::remove_file(self.network_file(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every parsable object of a kind; unreadable files are reported, not fatal.
    fn load_all<T: serde::de::DeserializeOwned>(files: Vec<PathBuf>) -> (Vec<T>, Vec<String>) {
        let mut ok = Vec::new();
        let mut errs = Vec::new();
        for f in files {
            match fs::read(&f)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(v) => ok.push(v),
                Err(e) => errs.push(format!("{}: {e}", f.display())),
            }
        }
        (ok, errs)
    }

    pub fn load_containers(&self) -> (Vec<Container>, Vec<String>) {
        let files = fs::read_dir(self.root.join("containers"))
            .map(|rd| rd.flatten().map(|e| e.path().join("container.json")).filter(|p| p.exists()).collect())
            .unwrap_or_default();
        Self::load_all(files)
    }

    pub fn load_networks(&self) -> (Vec<Network>, Vec<String>) {
        let files = fs::read_dir(self.root.join("networks"))
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect())
            .unwrap_or_default();
        Self::load_all(files)
    }
}

/// RFC 3339 UTC timestamp with nanoseconds, as Docker prints `Created`.
pub fn rfc3339_now() -> (String, i64) {
    let now = jiff::Timestamp::now();
    (rfc3339_of(now), now.as_second())
}

pub fn rfc3339(secs: i64, nanos: u32) -> String {
    jiff::Timestamp::new(secs, nanos.min(999_999_999) as i32).map(rfc3339_of).unwrap_or_else(|_| ZERO_TIME.to_string())
}

fn rfc3339_of(t: jiff::Timestamp) -> String {
    jiff::fmt::temporal::DateTimePrinter::new().precision(Some(9)).timestamp_to_string(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_795_000_000, 5), "2026-11-18T11:06:40.000000005Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn sandbox_endpoint_round_trips_through_an_attachment() {
        let ep = Endpoint {
            network_id: "n".into(),
            endpoint_id: "e".into(),
            host_veth: "veth1234567".into(),
            ifname: "eth0".into(),
            ip: Some(Ipv4Addr::new(198, 51, 100, 7)),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(198, 51, 100, 1)),
            mac: [2, 0x42, 198, 51, 100, 7],
            aliases: vec!["a".into()],
            static_ip: Some(Ipv4Addr::new(198, 51, 100, 7)),
            ip6: Some("fd00:1::7".parse().unwrap()),
            prefix_len6: 64,
            gateway6: Some("fd00:1::1".parse().unwrap()),
            static_ip6: None,
        };
        let a = Attachment::from_endpoint("c", &ep, None, Vec::new());
        assert_eq!(a.owner, Owner::Sandbox { id: "c".into() });
        assert_eq!(a.source, AddressSource::Static);
        assert!(a.default_route);
        assert_eq!(a.endpoint(), ep);
        // Persisted owners keep their kind and keys.
        let o = Owner::Cni { container_id: "x".into(), ifname: "eth1".into(), config_name: "c1".into() };
        let back: Owner = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn bridge_net_v4_is_optional_and_keeps_the_old_layout() {
        // A network file as netd wrote it before IPv4 became optional: the v4 side flat.
        let old = r#"{"index":2,"bridge":"br-x","owned":true,"subnet":"198.51.100.0","prefix_len":24,
            "gateway":"198.51.100.1","ip_range":null,"user_subnet":true,"icc":true,"masquerade":true,
            "gateway_mode":"nat","host_binding_ipv4":"0.0.0.0","mtu":1500}"#;
        let b: BridgeNet = serde_json::from_str(old).unwrap();
        let v4 = b.ipv4.clone().expect("v4 side");
        assert_eq!(
            (v4.subnet, v4.prefix_len, v4.gateway),
            ("198.51.100.0".parse().unwrap(), 24, "198.51.100.1".parse().unwrap())
        );
        assert!(b.user_subnet4() && !b.routed() && b.ipv6.is_none());
        // Written back in the same flat layout.
        let v: serde_json::Value = serde_json::to_value(&b).unwrap();
        assert_eq!(v["subnet"], "198.51.100.0");
        assert_eq!(v["gateway_mode"], "nat");
        // IPv6-only: no v4 key at all, read back as such.
        let six = BridgeNet {
            ipv4: None,
            ipv6: Some(BridgeNetV6 {
                subnet: "fd00:6::".parse().unwrap(),
                prefix_len: 64,
                gateway: "fd00:6::1".parse().unwrap(),
                ip_range: None,
                user_subnet: true,
                gateway_mode: GatewayMode::Routed,
            }),
            ..b
        };
        let v = serde_json::to_value(&six).unwrap();
        assert!(v.get("subnet").is_none() && v.get("gateway").is_none());
        let back: BridgeNet = serde_json::from_value(v).unwrap();
        assert!(back.ipv4.is_none() && !back.user_subnet4() && back.routed());
        assert_eq!(back.ipv6.unwrap().gateway, "fd00:6::1".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn v6_only_endpoint_has_no_v4_fields() {
        let ep = Endpoint {
            network_id: "n".into(),
            endpoint_id: "e".into(),
            host_veth: "veth7654321".into(),
            ifname: "eth0".into(),
            ip: None,
            prefix_len: 0,
            gateway: None,
            mac: [2, 0, 0, 0, 0, 1],
            aliases: Vec::new(),
            static_ip: None,
            ip6: Some("fd00:6::2".parse().unwrap()),
            prefix_len6: 64,
            gateway6: Some("fd00:6::1".parse().unwrap()),
            static_ip6: None,
        };
        let v = serde_json::to_value(&ep).unwrap();
        assert!(v.get("ip").is_none() && v.get("gateway").is_none());
        let back: Endpoint = serde_json::from_value(v).unwrap();
        assert_eq!(back, ep);
        let a = Attachment::from_endpoint("c", &ep, None, Vec::new());
        assert_eq!((a.ip, a.gateway, a.source), (None, None, AddressSource::Pool));
        assert_eq!(a.endpoint(), ep);
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = std::env::temp_dir().join(format!("netd-model-{}", std::process::id()));
        let p = dir.join("x.json");
        write_json_atomic(&p, &vec![1, 2, 3]).unwrap();
        write_json_atomic(&p, &vec![4]).unwrap();
        let v: Vec<i32> = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(v, [4]);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temp file left");
        fs::remove_dir_all(dir).unwrap();
    }
}
