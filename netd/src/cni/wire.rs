//! Requests `netd-cni` sends to the daemon's `/cni/*` endpoints and the daemon's answers. The
//! CNI version shaping stays in the plugin ([`super::spec`]); the daemon answers in one neutral
//! shape. `POST /cni/add` and `POST /cni/check` carry the container's network namespace as a file
//! descriptor ([`super::fdpass`]).
use serde::{Deserialize, Serialize};

/// How to create the netd network when it does not exist (bridge driver semantics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkParams {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub icc: Option<bool>,
    pub internal: Option<bool>,
    pub mtu: Option<u32>,
    /// `"ipv6": true`: a dual-stack network (its v6 prefix from `subnet6` or netd's v6 pools).
    pub ipv6: Option<bool>,
    pub subnet6: Option<String>,
    pub gateway6: Option<String>,
    /// `"ipv4": false` (with IPv6): an IPv6-only network (Docker 28's `--ipv4=false`).
    pub ipv4: Option<bool>,
}

impl NetworkParams {
    /// Whether the config says anything about the network (then a missing one is created).
    pub fn any(&self) -> bool {
        self.subnet.is_some()
            || self.gateway.is_some()
            || self.icc.is_some()
            || self.internal.is_some()
            || self.mtu.is_some()
            || self.ipv6.is_some()
            || self.subnet6.is_some()
            || self.gateway6.is_some()
            || self.ipv4.is_some()
    }
}

/// One `portMappings` entry, checked (`host_ip` is empty when the runtime gave none: the
/// network's default binding address, as `-p 8080:80`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Who the attachment belongs to, as CNI names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CniOwner {
    pub container_id: String,
    pub ifname: String,
    /// The config's `name` (GC is per config).
    pub config_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddRequest {
    pub owner: CniOwner,
    /// `CNI_NETNS` as the runtime gave it (for the result's `sandbox`; the daemon uses the fd).
    pub netns_path: String,
    pub network: String,
    #[serde(default)]
    pub create: NetworkParams,
    #[serde(default)]
    pub port_mappings: Vec<PortMap>,
    #[serde(default)]
    pub ip: Option<String>,
    /// A static IPv6 address (`ips`), on a dual-stack network.
    #[serde(default)]
    pub ip6: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    /// DNS names of the attachment (`aliases`, and the runtime's container name).
    #[serde(default)]
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iface {
    pub name: String,
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// What ADD made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddResponse {
    pub bridge: Iface,
    pub host: Iface,
    pub container: Iface,
    /// `A.B.C.D/N`.
    pub address: String,
    pub gateway: Option<String>,
    /// On a dual-stack network: `ADDR/N` and the v6 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    pub routes: Vec<Route>,
    pub nameservers: Vec<String>,
    pub mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelRequest {
    pub owner: CniOwner,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    pub owner: CniOwner,
    pub network: String,
    /// The container address of `prevResult` (`A.B.C.D/N`).
    pub address: Option<String>,
    /// Its IPv6 address (`ADDR/N`), when it has one.
    #[serde(default)]
    pub address6: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    pub config_name: String,
    /// (container ID, ifname) pairs still in use.
    pub valid: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcResponse {
    pub removed: Vec<CniOwner>,
}

/// The daemon's error body on `/cni/*`: Docker's `message` plus the CNI error code to report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(default)]
    pub cni_code: Option<u32>,
}
