//! The CNI protocol as `netd-cni` speaks it (containernetworking/cni SPEC.md, 0.3.1 … 1.1.0):
//! the environment, the network configuration with netd's keys and the well-known capabilities,
//! error objects and their codes, and results shaped for the version the runtime asked for.
//!
//! Everything here is pure: it reads the values it is given and returns JSON or a [`CniError`].
use std::{collections::BTreeSet, net::Ipv4Addr};

use serde_json::{Map, Value, json};

use super::wire::{AddResponse, NetworkParams, PortMap};
use crate::ipam::Ipv4Net;

/// What `VERSION` answers. Debian 12's runtimes (libcni 1.1.2) speak 1.0.0 at most; 1.1.0 adds
/// STATUS and GC.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The plugin's own spec version (in VERSION's answer and in errors before a config was read).
pub const PLUGIN_VERSION: &str = "1.1.0";

/// The spec's error codes (SPEC.md "Error"), and netd's own from 100 on.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const NOT_AVAILABLE_LIMITED: u32 = 51;
    /// A host port of `portMappings` is taken (Docker's "port is already allocated").
    pub const PORT_ALLOCATED: u32 = 100;
    /// The requested address is taken, outside the network, or the pool is exhausted.
    pub const ADDRESS_UNAVAILABLE: u32 = 101;
    /// An attachment for this container ID and interface name exists already.
    pub const ATTACHMENT_EXISTS: u32 = 102;
    /// CHECK found the attachment different from what ADD made.
    pub const CHECK_FAILED: u32 = 103;
    /// The network the config names does not exist and the config cannot create it.
    pub const NO_SUCH_NETWORK: u32 = 104;
    /// Anything else the daemon failed at (a kernel operation, persistence).
    pub const INTERNAL: u32 = 999;
}

/// A CNI error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self { code, msg: msg.into(), details: String::new() }
    }
    pub fn with_details(mut self, d: impl Into<String>) -> Self {
        self.details = d.into();
        self
    }
    /// The error object as the plugin prints it on stdout.
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)
    }
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

/// `"1.0.0"` → (1, 0, 0); anything unparsable sorts first.
pub fn version_tuple(v: &str) -> (u32, u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` pairs, in order.
    pub args: Vec<(String, String)>,
}

impl Env {
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// `CNI_ARGS` keys netd reads or knows to be harmless; others need `IgnoreUnknown=1`.
const KNOWN_ARGS: &[&str] =
    &["IgnoreUnknown", "IP", "MAC", "K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"];

/// Read and check the environment (the reference `skel` rules and messages).
pub fn parse_env(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
    let get = |k: &str| get(k).filter(|v| !v.is_empty());
    let command = match get("CNI_COMMAND").as_deref() {
        None => return Err(CniError::new(code::INVALID_ENV, "required env variables [CNI_COMMAND] missing")),
        Some("ADD") => Command::Add,
        Some("DEL") => Command::Del,
        Some("CHECK") => Command::Check,
        Some("STATUS") => Command::Status,
        Some("GC") => Command::Gc,
        Some("VERSION") => Command::Version,
        Some(other) => return Err(CniError::new(code::INVALID_ENV, format!("unknown CNI_COMMAND: {other}"))),
    };
    let needs: &[&str] = match command {
        Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
        Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
        Command::Status | Command::Gc | Command::Version => &[],
    };
    let missing: Vec<&str> = needs.iter().copied().filter(|k| get(k).is_none()).collect();
    if !missing.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("required env variables [{}] missing", missing.join(",")),
        ));
    }
    let container_id = get("CNI_CONTAINERID").unwrap_or_default();
    let ifname = get("CNI_IFNAME").unwrap_or_default();
    if !needs.is_empty() {
        validate_container_id(&container_id)?;
        validate_ifname(&ifname)?;
    }
    let mut args = Vec::new();
    for pair in get("CNI_ARGS").unwrap_or_default().split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CniError::new(code::INVALID_ENV, format!("invalid CNI_ARGS pair {pair:?}: want KEY=VALUE")));
        };
        args.push((k.to_string(), v.to_string()));
    }
    let ignore_unknown = args.iter().any(|(k, v)| k == "IgnoreUnknown" && matches!(v.as_str(), "1" | "true" | "True"));
    if !ignore_unknown && let Some((k, _)) = args.iter().find(|(k, _)| !KNOWN_ARGS.contains(&k.as_str())) {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("unknown CNI_ARGS key {k:?} (set IgnoreUnknown=1 to ignore it)"),
        ));
    }
    Ok(Env { command, container_id, netns: get("CNI_NETNS").unwrap_or_default(), ifname, args })
}

/// The spec's container ID rule.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let ok = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(CniError::new(code::INVALID_ENV, format!("invalid characters in containerID {id:?}"))) }
}

/// The kernel's interface name rules (and the spec's).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = |why: &str| Err(CniError::new(code::INVALID_ENV, format!("invalid CNI_IFNAME {name:?}: {why}")));
    if name.len() > 15 {
        return bad("longer than 15 characters");
    }
    if name == "." || name == ".." {
        return bad("not a valid interface name");
    }
    if name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0) {
        return bad("contains '/', ':' or whitespace");
    }
    Ok(())
}

/// The runtime's capability arguments (`runtimeConfig`) netd implements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub port_mappings: Vec<PortMap>,
    /// Names for this attachment (the `aliases` entry of this network).
    pub aliases: Vec<String>,
    /// A static IPv4 address (`ips`).
    pub ip: Option<Ipv4Addr>,
    /// A static IPv6 address (`ips`), on a dual-stack network.
    pub ip6: Option<std::net::Ipv6Addr>,
    pub mac: Option<String>,
}

/// The network configuration of one invocation (stdin).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    /// The netd network (`network`; defaults to `name`).
    pub network: String,
    /// The daemon's socket (`socket`: a path or `unix://PATH`).
    pub socket: Option<String>,
    /// How to create the network when it does not exist.
    pub create: NetworkParams,
    pub runtime: RuntimeConfig,
    pub prev_result: Option<Value>,
    /// GC: `cni.dev/valid-attachments` ∪ `cni.dev/attachments` (container ID, ifname).
    pub valid_attachments: BTreeSet<(String, String)>,
}

/// The `cniVersion` of a config, for errors and VERSION (without judging the rest).
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

/// The spec's network name rule.
fn valid_name(s: &str) -> bool {
    s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn opt_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CniError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(format!("{key:?} must be a string, not {other}"))),
    }
}

fn opt_bool(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, CniError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid(format!("{key:?} must be true or false, not {other}"))),
    }
}

/// Parse and check stdin for `command` (not VERSION).
pub fn parse_conf(stdin: &[u8], command: Command) -> Result<NetConf, CniError> {
    let root: Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(code::DECODE, format!("decoding the network configuration: {e}")))?;
    let Value::Object(m) = root else {
        return Err(CniError::new(code::DECODE, "decoding the network configuration: not a JSON object"));
    };
    let cni_version = opt_str(&m, "cniVersion")?.unwrap_or("0.1.0").to_string();
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("incompatible CNI versions; config is {cni_version:?}, plugin supports {SUPPORTED_VERSIONS:?}"),
        ));
    }
    let v = version_tuple(&cni_version);
    let needs = match command {
        Command::Check => (0, 4, 0),
        Command::Status | Command::Gc => (1, 1, 0),
        _ => (0, 0, 0),
    };
    if v < needs {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "config version does not allow {} (it needs cniVersion {}.{}.{} or later)",
                command.as_str(),
                needs.0,
                needs.1,
                needs.2
            ),
        ));
    }
    let name = opt_str(&m, "name")?.ok_or_else(|| invalid("missing network name (\"name\")"))?.to_string();
    if !valid_name(&name) {
        return Err(invalid(format!("invalid network name {name:?}: letters, digits, '_', '.' and '-' only")));
    }
    let network = opt_str(&m, "network")?.unwrap_or(&name).to_string();
    if network.is_empty() || network.len() > 255 {
        return Err(invalid(format!("invalid \"network\" {network:?}")));
    }
    if let Some(ipam) = m.get("ipam").filter(|v| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty())) {
        return Err(CniError::new(
            code::UNSUPPORTED_FIELD,
            format!("unsupported field \"ipam\": {ipam}: netd-cni takes addresses from the netd network's IPAM"),
        ));
    }
    let socket = opt_str(&m, "socket")?.map(str::to_string);
    if let Some(s) = &socket {
        socket_path(s)?;
    }
    let create = parse_network_params(&m)?;
    let runtime = match m.get("runtimeConfig") {
        None | Some(Value::Null) => RuntimeConfig::default(),
        Some(Value::Object(rc)) => parse_runtime_config(rc, &name, &network)?,
        Some(other) => return Err(invalid(format!("\"runtimeConfig\" must be an object, not {other}"))),
    };
    let prev_result = match m.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(other) => {
            return Err(CniError::new(code::DECODE, format!("\"prevResult\" must be an object, not {other}")));
        }
    };
    let mut valid_attachments = BTreeSet::new();
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        match m.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for e in a {
                    let cid = e.get("containerID").and_then(Value::as_str);
                    let ifname = e.get("ifname").and_then(Value::as_str);
                    match (cid, ifname) {
                        (Some(c), Some(i)) => {
                            valid_attachments.insert((c.to_string(), i.to_string()));
                        }
                        _ => return Err(invalid(format!("{key:?}: entry {e} needs \"containerID\" and \"ifname\""))),
                    }
                }
            }
            Some(other) => return Err(invalid(format!("{key:?} must be an array, not {other}"))),
        }
    }
    Ok(NetConf { cni_version, name, network, socket, create, runtime, prev_result, valid_attachments })
}

/// `socket`: a path or `unix://PATH`.
pub fn socket_path(s: &str) -> Result<std::path::PathBuf, CniError> {
    match s.strip_prefix("unix://").unwrap_or(s) {
        p if p.starts_with('/') => Ok(p.into()),
        _ => Err(invalid(format!("invalid \"socket\" {s:?}: want an absolute path or unix:///path"))),
    }
}

fn parse_network_params(m: &Map<String, Value>) -> Result<NetworkParams, CniError> {
    let subnet = opt_str(m, "subnet")?
        .map(|s| {
            let n: Ipv4Net = s
                .parse()
                .map_err(|_| invalid(format!("invalid \"subnet\" {s:?}: want an IPv4 CIDR such as 10.89.0.0/24")))?;
            if n.prefix_len() > 30 {
                return Err(invalid(format!(
                    "invalid \"subnet\" {s:?}: a /{} has no room for a gateway and an address",
                    n.prefix_len()
                )));
            }
            Ok(n)
        })
        .transpose()?;
    let gateway = opt_str(m, "gateway")?
        .map(|g| g.parse::<Ipv4Addr>().map_err(|_| invalid(format!("invalid \"gateway\" {g:?}: not an IPv4 address"))))
        .transpose()?;
    match (subnet, gateway) {
        (None, Some(g)) => return Err(invalid(format!("\"gateway\" {g} needs a \"subnet\""))),
        (Some(n), Some(g)) if !n.contains(g) => {
            return Err(invalid(format!("\"gateway\" {g} is not in \"subnet\" {n}")));
        }
        _ => {}
    }
    let ipv6 = opt_bool(m, "ipv6")?;
    let subnet6 = opt_str(m, "subnet6")?
        .map(|s| {
            let n: crate::ipam::Ipv6Net = s
                .parse()
                .map_err(|_| invalid(format!("invalid \"subnet6\" {s:?}: want an IPv6 CIDR such as fd00:89::/64")))?;
            crate::ipam::validate_ipv6_subnet(std::net::IpAddr::V6(n.addr()), n.prefix_len())
                .map_err(|e| invalid(format!("invalid \"subnet6\": {e}")))?;
            if n.prefix_len() > 126 {
                return Err(invalid(format!(
                    "invalid \"subnet6\" {s:?}: a /{} has no room for a gateway and an address",
                    n.prefix_len()
                )));
            }
            Ok(n.trunc())
        })
        .transpose()?;
    let gateway6 = opt_str(m, "gateway6")?
        .map(|g| {
            g.parse::<std::net::Ipv6Addr>()
                .map_err(|_| invalid(format!("invalid \"gateway6\" {g:?}: not an IPv6 address")))
        })
        .transpose()?;
    match (subnet6, gateway6) {
        (None, Some(g)) => return Err(invalid(format!("\"gateway6\" {g} needs a \"subnet6\""))),
        (Some(n), Some(g)) if !n.contains(g) => {
            return Err(invalid(format!("\"gateway6\" {g} is not in \"subnet6\" {n}")));
        }
        _ => {}
    }
    if ipv6 == Some(false) && subnet6.is_some() {
        return Err(invalid("\"subnet6\" needs \"ipv6\": true (or no \"ipv6\" key)"));
    }
    // An IPv6-only network: no v4 IPAM at all (Docker 28's `--ipv4=false`).
    let ipv4 = opt_bool(m, "ipv4")?;
    if ipv4 == Some(false) {
        if ipv6 == Some(false) || (ipv6.is_none() && subnet6.is_none()) {
            return Err(invalid("IPv4 or IPv6 must be enabled: \"ipv4\": false needs \"ipv6\": true or a \"subnet6\""));
        }
        if let Some(v4) = subnet.map(|s| s.to_string()).or(gateway.map(|g| g.to_string())) {
            return Err(invalid(format!(
                "\"subnet\"/\"gateway\" ({v4}) need IPv4: the network is IPv6-only (\"ipv4\": false)"
            )));
        }
    }
    let mtu = match m.get("mtu") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n @ 68..=65535) => Some(n as u32),
            _ => return Err(invalid(format!("invalid \"mtu\" {v}: must be between 68 and 65535"))),
        },
    };
    Ok(NetworkParams {
        subnet: subnet.map(|s| s.to_string()),
        gateway: gateway.map(|g| g.to_string()),
        icc: opt_bool(m, "icc")?,
        internal: opt_bool(m, "internal")?,
        mtu,
        ipv6: ipv6.or(subnet6.map(|_| true)),
        subnet6: subnet6.map(|s| s.to_string()),
        gateway6: gateway6.map(|g| g.to_string()),
        ipv4,
    })
}

fn parse_runtime_config(rc: &Map<String, Value>, name: &str, network: &str) -> Result<RuntimeConfig, CniError> {
    let mut out = RuntimeConfig::default();
    match rc.get("portMappings") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for e in a {
                out.port_mappings.push(parse_port_mapping(e)?);
            }
        }
        Some(other) => return Err(invalid(format!("\"portMappings\" must be an array, not {other}"))),
    }
    match rc.get("aliases") {
        None | Some(Value::Null) => {}
        Some(Value::Object(by_net)) => {
            // Keyed by the runtime's network name (podman: the conflist's name).
            for key in [name, network] {
                match by_net.get(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(names)) => {
                        for n in names {
                            let n = n.as_str().ok_or_else(|| invalid(format!("\"aliases\": {n} is not a string")))?;
                            if !out.aliases.iter().any(|a| a == n) {
                                out.aliases.push(n.to_string());
                            }
                        }
                    }
                    Some(other) => return Err(invalid(format!("\"aliases\".{key:?} must be an array, not {other}"))),
                }
            }
        }
        Some(other) => return Err(invalid(format!("\"aliases\" must be an object, not {other}"))),
    }
    match rc.get("ips") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for e in a {
                let s = e.as_str().ok_or_else(|| invalid(format!("\"ips\": {e} is not a string")))?;
                if s.contains(':') {
                    out.ip6 = Some(parse_static_ip6(s, out.ip6)?);
                } else {
                    out.ip = Some(parse_static_ip(s, out.ip)?);
                }
            }
        }
        Some(other) => return Err(invalid(format!("\"ips\" must be an array, not {other}"))),
    }
    if let Some(mac) = opt_str(rc, "mac")? {
        crate::ipam::parse_mac(mac).map_err(|e| invalid(format!("invalid \"mac\": {e}")))?;
        out.mac = Some(mac.to_string());
    }
    Ok(out)
}

/// One static address (`ips` entry or `IP=` in CNI_ARGS): `A.B.C.D` or `A.B.C.D/N`.
pub fn parse_static_ip(s: &str, already: Option<Ipv4Addr>) -> Result<Ipv4Addr, CniError> {
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    if addr.contains(':') {
        return Err(invalid(format!("static address {s:?}: IPv6 addresses are not supported yet")));
    }
    let ip: Ipv4Addr = addr.parse().map_err(|_| invalid(format!("invalid static address {s:?}")))?;
    if let Some(prev) = already.filter(|p| *p != ip) {
        return Err(invalid(format!("static addresses {prev} and {ip}: a netd attachment has one IPv4 address")));
    }
    Ok(ip)
}

/// One static IPv6 address (`ips` entry): `ADDR` or `ADDR/N`.
pub fn parse_static_ip6(s: &str, already: Option<std::net::Ipv6Addr>) -> Result<std::net::Ipv6Addr, CniError> {
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    let ip: std::net::Ipv6Addr = addr.parse().map_err(|_| invalid(format!("invalid static address {s:?}")))?;
    if let Some(prev) = already.filter(|p| *p != ip) {
        return Err(invalid(format!("static addresses {prev} and {ip}: a netd attachment has one IPv6 address")));
    }
    Ok(ip)
}

fn parse_port_mapping(e: &Value) -> Result<PortMap, CniError> {
    let bad = |why: String| invalid(format!("invalid portMappings entry {e}: {why}"));
    let o = e.as_object().ok_or_else(|| bad("not an object".into()))?;
    let port = |key: &str| -> Result<u16, CniError> {
        match o.get(key).and_then(Value::as_u64) {
            Some(p @ 1..=65535) => Ok(p as u16),
            _ => Err(bad(format!("{key:?} must be a port between 1 and 65535"))),
        }
    };
    let host_port = port("hostPort")?;
    let container_port = port("containerPort")?;
    let protocol = match o.get("protocol") {
        None | Some(Value::Null) => "tcp".to_string(),
        Some(Value::String(p)) => p.to_ascii_lowercase(),
        Some(other) => return Err(bad(format!("\"protocol\" {other} is not a string"))),
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(bad(format!("unsupported protocol {protocol:?} (tcp and udp are)")));
    }
    let host_ip = match o.get("hostIP") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(bad(format!("\"hostIP\" {other} is not a string"))),
    };
    match host_ip.as_str() {
        "" => {}
        s => {
            s.parse::<std::net::IpAddr>().map_err(|_| bad(format!("invalid IP address: {s}")))?;
        }
    }
    Ok(PortMap { host_ip, host_port, container_port, protocol })
}

/// `VERSION`'s answer.
pub fn version_result() -> Value {
    json!({"cniVersion": PLUGIN_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
}

/// The ADD result in `version`'s shape, appended to a `prevResult` when netd-cni is chained
/// after another plugin (interface indexes shift past the previous ones).
pub fn add_result(version: &str, r: &AddResponse, prev: Option<&Value>) -> Value {
    let legacy = version_tuple(version) < (1, 0, 0);
    let mut interfaces: Vec<Value> = prev.and_then(|p| p["interfaces"].as_array().cloned()).unwrap_or_default();
    let mut ips: Vec<Value> = prev.and_then(|p| p["ips"].as_array().cloned()).unwrap_or_default();
    let mut routes: Vec<Value> = prev.and_then(|p| p["routes"].as_array().cloned()).unwrap_or_default();
    // Results below 1.0.0 carry ips[].version; 1.0.0 removed it.
    for ip in &mut ips {
        if let Some(o) = ip.as_object_mut() {
            if legacy {
                if !o.contains_key("version") {
                    let v6 = o.get("address").and_then(Value::as_str).is_some_and(|a| a.contains(':'));
                    o.insert("version".into(), json!(if v6 { "6" } else { "4" }));
                }
            } else {
                o.remove("version");
            }
        }
    }
    let base = interfaces.len();
    interfaces.push(json!({"name": r.bridge.name, "mac": r.bridge.mac}));
    interfaces.push(json!({"name": r.host.name, "mac": r.host.mac}));
    let mut c = json!({"name": r.container.name, "mac": r.container.mac, "sandbox": r.container.sandbox});
    if version_tuple(version) >= (1, 1, 0) && r.mtu > 0 {
        c["mtu"] = json!(r.mtu);
        interfaces[base]["mtu"] = json!(r.mtu);
        interfaces[base + 1]["mtu"] = json!(r.mtu);
    }
    interfaces.push(c);
    // No v4 entry on an IPv6-only network.
    if !r.address.is_empty() {
        let mut ip = json!({"address": r.address, "interface": base + 2});
        if let Some(g) = &r.gateway {
            ip["gateway"] = json!(g);
        }
        if legacy {
            ip["version"] = json!("4");
        }
        ips.push(ip);
    }
    if let Some(a6) = &r.address6 {
        let mut ip = json!({"address": a6, "interface": base + 2});
        if let Some(g) = &r.gateway6 {
            ip["gateway"] = json!(g);
        }
        if legacy {
            ip["version"] = json!("6");
        }
        ips.push(ip);
    }
    for rt in &r.routes {
        let mut v = json!({"dst": rt.dst});
        if let Some(gw) = &rt.gw {
            v["gw"] = json!(gw);
        }
        routes.push(v);
    }
    let mut dns = prev.map(|p| p["dns"].clone()).filter(Value::is_object).unwrap_or_else(|| json!({}));
    if !r.nameservers.is_empty() {
        let mut ns: Vec<Value> = dns["nameservers"].as_array().cloned().unwrap_or_default();
        for n in &r.nameservers {
            if !ns.iter().any(|x| x == n) {
                ns.push(json!(n));
            }
        }
        dns["nameservers"] = Value::Array(ns);
    }
    json!({"cniVersion": version, "interfaces": interfaces, "ips": ips, "routes": routes, "dns": dns})
}

/// From a `prevResult` (any supported version): the IPv4 address of the interface named
/// `ifname` that lives in a sandbox, as `A.B.C.D/N`.
pub fn prev_address(prev: &Value, ifname: &str) -> Option<String> {
    prev_address_of(prev, ifname, false)
}

/// As [`prev_address`], its IPv6 address (`ADDR/N`).
pub fn prev_address6(prev: &Value, ifname: &str) -> Option<String> {
    prev_address_of(prev, ifname, true)
}

fn prev_address_of(prev: &Value, ifname: &str, v6: bool) -> Option<String> {
    let ifaces = prev["interfaces"].as_array()?;
    prev["ips"].as_array()?.iter().find_map(|ip| {
        let i = ip["interface"].as_u64()? as usize;
        let iface = ifaces.get(i)?;
        let a = ip["address"].as_str()?;
        (a.contains(':') == v6
            && iface["name"] == ifname
            && iface.get("sandbox").is_some_and(|s| s.as_str().is_some_and(|s| !s.is_empty())))
        .then(|| a.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::wire::{Iface, Route};

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_env(|k| m.get(k).cloned())
    }

    #[test]
    fn env_rules_and_messages() {
        let e = env(&[]).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (4, "required env variables [CNI_COMMAND] missing"));
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")]).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (4, "required env variables [CNI_NETNS,CNI_IFNAME] missing"));
        let e = env(&[("CNI_COMMAND", "FOO")]).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (4, "unknown CNI_COMMAND: FOO"));
        let ok = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]).unwrap();
        assert_eq!((ok.command, ok.netns.as_str()), (Command::Del, ""), "DEL needs no netns");
        let e = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "a/b"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert_eq!(e.code, 4);
        let e = env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "averyveryverylongname")])
            .unwrap_err();
        assert_eq!(e.code, 4, "{e}");
        let base = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")];
        let with = |a: &str| {
            let mut v = base.to_vec();
            v.push(("CNI_ARGS", a));
            env(&v)
        };
        let e = with("FOO=1").unwrap_err();
        assert!(e.code == 4 && e.msg.contains("FOO"), "{e}");
        let ok = with("IgnoreUnknown=1;FOO=1;K8S_POD_NAME=web;IP=10.0.0.5").unwrap();
        assert_eq!((ok.arg("K8S_POD_NAME"), ok.arg("IP")), (Some("web"), Some("10.0.0.5")));
        assert_eq!(with("novalue").unwrap_err().code, 4);
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "GC")]).is_ok());
    }

    fn conf(v: Value, cmd: Command) -> Result<NetConf, CniError> {
        parse_conf(&serde_json::to_vec(&v).unwrap(), cmd)
    }

    #[test]
    fn config_keys_and_capabilities() {
        let c = conf(
            json!({"cniVersion": "1.0.0", "name": "netdnet", "type": "netd-cni", "network": "n1",
                   "socket": "unix:///run/x.sock", "subnet": "10.89.7.0/24", "gateway": "10.89.7.1", "icc": false,
                   "internal": true, "mtu": 1400,
                   "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                                                      {"hostPort": 53, "containerPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"}],
                                     "aliases": {"netdnet": ["web", "www"], "other": ["x"]},
                                     "ips": ["10.89.7.9/24"], "mac": "02:00:00:00:00:09"}}),
            Command::Add,
        )
        .unwrap();
        assert_eq!(c.network, "n1");
        assert_eq!(socket_path(c.socket.as_deref().unwrap()).unwrap(), std::path::PathBuf::from("/run/x.sock"));
        assert_eq!(c.create.subnet.as_deref(), Some("10.89.7.0/24"));
        assert_eq!((c.create.icc, c.create.internal, c.create.mtu), (Some(false), Some(true), Some(1400)));
        assert_eq!(c.runtime.port_mappings.len(), 2);
        assert_eq!(c.runtime.port_mappings[0].host_ip, "", "none given: the network's default binding address");
        assert_eq!(
            (c.runtime.port_mappings[1].protocol.as_str(), c.runtime.port_mappings[1].host_ip.as_str()),
            ("udp", "127.0.0.1")
        );
        assert_eq!(c.runtime.aliases, ["web", "www"]);
        assert_eq!(c.runtime.ip, Some(Ipv4Addr::new(10, 89, 7, 9)));
        assert_eq!(c.runtime.mac.as_deref(), Some("02:00:00:00:00:09"));
        // network defaults to name
        let c = conf(json!({"cniVersion": "0.4.0", "name": "n2", "type": "netd-cni"}), Command::Add).unwrap();
        assert_eq!(c.network, "n2");
    }

    #[test]
    fn bad_configs_get_the_spec_codes() {
        let cases: Vec<(Value, Command, u32, &str)> = vec![
            (json!({"cniVersion": "0.2.0", "name": "n"}), Command::Add, 1, "incompatible CNI versions"),
            (json!({"name": "n"}), Command::Add, 1, "config is \"0.1.0\""),
            (json!({"cniVersion": "0.3.1", "name": "n"}), Command::Check, 1, "does not allow CHECK"),
            (json!({"cniVersion": "1.0.0", "name": "n"}), Command::Status, 1, "does not allow STATUS"),
            (json!({"cniVersion": "1.0.0", "name": "n"}), Command::Gc, 1, "does not allow GC"),
            (json!({"cniVersion": "1.0.0"}), Command::Add, 7, "missing network name"),
            (json!({"cniVersion": "1.0.0", "name": "a b"}), Command::Add, 7, "invalid network name"),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "subnet": "10.0.0.0/33"}),
                Command::Add,
                7,
                "invalid \"subnet\"",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "subnet": "10.0.0.0/24", "gateway": "10.1.0.1"}),
                Command::Add,
                7,
                "not in",
            ),
            (json!({"cniVersion": "1.0.0", "name": "n", "gateway": "10.1.0.1"}), Command::Add, 7, "needs a \"subnet\""),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "icc": "no"}),
                Command::Add,
                7,
                "\"icc\" must be true or false",
            ),
            (json!({"cniVersion": "1.0.0", "name": "n", "mtu": 10}), Command::Add, 7, "invalid \"mtu\""),
            (json!({"cniVersion": "1.0.0", "name": "n", "socket": "tcp://x"}), Command::Add, 7, "invalid \"socket\""),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "host-local"}}),
                Command::Add,
                2,
                "unsupported field \"ipam\"",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {"portMappings": [{"hostPort": 0, "containerPort": 80}]}}),
                Command::Add,
                7,
                "hostPort",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "sctp"}]}}),
                Command::Add,
                7,
                "unsupported protocol",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80, "hostIP": "::x"}]}}),
                Command::Add,
                7,
                "invalid IP address: ::x",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "subnet6": "fd00::/129"}),
                Command::Add,
                7,
                "invalid \"subnet6\"",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "subnet6": "fe80::/80"}),
                Command::Add,
                7,
                "clashes with the Link-Local prefix",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "subnet6": "fd00:1::/64", "gateway6": "fd00:2::1"}),
                Command::Add,
                7,
                "is not in \"subnet6\"",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "gateway6": "fd00:2::1"}),
                Command::Add,
                7,
                "needs a \"subnet6\"",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipv6": false, "subnet6": "fd00:1::/64"}),
                Command::Add,
                7,
                "needs \"ipv6\": true",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipv4": false}),
                Command::Add,
                7,
                "IPv4 or IPv6 must be enabled",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "ipv4": false, "subnet6": "fd00:1::/64", "subnet": "10.0.0.0/24"}),
                Command::Add,
                7,
                "the network is IPv6-only",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {"ips": ["fd00::2", "fd00::3"]}}),
                Command::Add,
                7,
                "one IPv6 address",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {"ips": ["10.0.0.2/24", "10.0.0.3/24"]}}),
                Command::Add,
                7,
                "one IPv4 address",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "runtimeConfig": {"mac": "zz"}}),
                Command::Add,
                7,
                "invalid \"mac\"",
            ),
            (
                json!({"cniVersion": "1.1.0", "name": "n", "cni.dev/valid-attachments": [{"ifname": "eth0"}]}),
                Command::Gc,
                7,
                "containerID",
            ),
        ];
        for (v, cmd, code, msg) in cases {
            let e = conf(v.clone(), cmd).unwrap_err();
            assert_eq!(e.code, code, "{v}: {e}");
            assert!(e.msg.contains(msg), "{v}: {e}");
        }
        let e = parse_conf(b"{not json", Command::Add).unwrap_err();
        assert_eq!(e.code, 6);
        assert_eq!(parse_conf(b"[1]", Command::Add).unwrap_err().code, 6);
    }

    #[test]
    fn gc_reads_both_attachment_keys() {
        let c = conf(
            json!({"cniVersion": "1.1.0", "name": "n",
                   "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
                   "cni.dev/attachments": [{"containerID": "b", "ifname": "eth1"}, {"containerID": "a", "ifname": "eth0"}]}),
            Command::Gc,
        )
        .unwrap();
        let v: Vec<_> = c.valid_attachments.into_iter().collect();
        assert_eq!(v, [("a".into(), "eth0".into()), ("b".into(), "eth1".into())]);
    }

    fn sample() -> AddResponse {
        AddResponse {
            bridge: Iface { name: "nd-n1".into(), mac: "02:00:00:00:00:01".into(), sandbox: None },
            host: Iface { name: "veth1234567".into(), mac: "aa:bb:cc:dd:ee:01".into(), sandbox: None },
            container: Iface {
                name: "eth0".into(),
                mac: "02:42:0a:59:07:05".into(),
                sandbox: Some("/run/netns/c1".into()),
            },
            address: "10.89.7.5/24".into(),
            gateway: Some("10.89.7.1".into()),
            address6: None,
            gateway6: None,
            routes: vec![Route { dst: "0.0.0.0/0".into(), gw: Some("10.89.7.1".into()) }],
            nameservers: vec!["127.0.0.11".into()],
            mtu: 1500,
        }
    }

    #[test]
    fn results_take_the_requested_versions_shape() {
        let r = add_result("1.0.0", &sample(), None);
        assert_eq!(
            r,
            json!({"cniVersion": "1.0.0",
                   "interfaces": [{"name": "nd-n1", "mac": "02:00:00:00:00:01"},
                                  {"name": "veth1234567", "mac": "aa:bb:cc:dd:ee:01"},
                                  {"name": "eth0", "mac": "02:42:0a:59:07:05", "sandbox": "/run/netns/c1"}],
                   "ips": [{"address": "10.89.7.5/24", "gateway": "10.89.7.1", "interface": 2}],
                   "routes": [{"dst": "0.0.0.0/0", "gw": "10.89.7.1"}],
                   "dns": {"nameservers": ["127.0.0.11"]}})
        );
        let r = add_result("0.4.0", &sample(), None);
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["cniVersion"], "0.4.0");
        let r = add_result("1.1.0", &sample(), None);
        assert_eq!(r["interfaces"][2]["mtu"], 1500);
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(prev_address(&r, "eth0").as_deref(), Some("10.89.7.5/24"));
        assert_eq!(prev_address(&r, "eth1"), None);
        // Chained after another plugin: its interfaces come first, indexes shift.
        let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "x0", "sandbox": "/run/netns/c1"}],
                          "ips": [{"address": "10.1.0.2/24", "interface": 0}], "routes": [], "dns": {}});
        let r = add_result("1.0.0", &sample(), Some(&prev));
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 4);
        assert_eq!(r["ips"][1]["interface"], 3);
        assert_eq!(r["ips"][0]["address"], "10.1.0.2/24");
        // Dual-stack: a second ips entry on the same interface, and the v6 default route.
        let mut d = sample();
        d.address6 = Some("fd00:89::2/64".into());
        d.gateway6 = Some("fd00:89::1".into());
        d.routes.push(Route { dst: "::/0".into(), gw: Some("fd00:89::1".into()) });
        let r = add_result("1.0.0", &d, None);
        assert_eq!(r["ips"][1], json!({"address": "fd00:89::2/64", "gateway": "fd00:89::1", "interface": 2}));
        assert_eq!(r["routes"][1], json!({"dst": "::/0", "gw": "fd00:89::1"}));
        assert_eq!(prev_address(&r, "eth0").as_deref(), Some("10.89.7.5/24"));
        assert_eq!(prev_address6(&r, "eth0").as_deref(), Some("fd00:89::2/64"));
        assert_eq!(add_result("0.4.0", &d, None)["ips"][1]["version"], "6");
        assert_eq!(prev_address6(&add_result("1.0.0", &sample(), None), "eth0"), None);
        // IPv6-only: the v6 entry alone.
        let mut d6 = d.clone();
        d6.address = String::new();
        d6.gateway = None;
        d6.routes.remove(0);
        let r = add_result("1.0.0", &d6, None);
        assert_eq!(r["ips"], json!([{"address": "fd00:89::2/64", "gateway": "fd00:89::1", "interface": 2}]));
        assert_eq!(r["routes"], json!([{"dst": "::/0", "gw": "fd00:89::1"}]));
        assert_eq!((prev_address(&r, "eth0"), prev_address6(&r, "eth0").as_deref()), (None, Some("fd00:89::2/64")));
    }

    #[test]
    fn errors_and_version() {
        let e = CniError::new(100, "Bind for 0.0.0.0:8080 failed: port is already allocated");
        assert_eq!(
            e.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 100, "msg": "Bind for 0.0.0.0:8080 failed: port is already allocated"})
        );
        assert_eq!(e.clone().with_details("d").to_json("1.0.0")["details"], "d");
        assert_eq!(version_result()["supportedVersions"], json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
        assert_eq!(peek_version(br#"{"cniVersion":"0.4.0"}"#).as_deref(), Some("0.4.0"));
    }
}
