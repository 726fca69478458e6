//! Docker's remote network driver (libnetwork's legacy plugin protocol: HTTP+JSON on a unix
//! socket, by default `/run/docker/plugins/netd.sock`, so `docker network create -d netd`).
//! A thin front-end over the attachment core (`attach.rs`); reference for every call, its JSON
//! and the order Docker 20.10 and 29 make them: shared/research/real-runtimes.md §A.
//!
//! - A Docker network is a netd bridge network (driver `netd`, name = Docker's NetworkID) with
//!   Docker's IPAM subnet and gateway and the bridge driver's `-o` options; persisted, because
//!   Docker never replays `CreateNetwork`.
//! - `CreateEndpoint` attaches a veth pair with Docker's address and leaves the peer in netd's
//!   namespace; `Join` names it (`SrcName`) for Docker to move and rename (`eth`N); the ports
//!   are published at `ProgramExternalConnectivity` (the gateway endpoint only, Docker's rule),
//!   keyed on the IPAM address and the host veth: on 20.10 the namespace is populated later.
//! - Handlers never call Docker; errors are `{"Err": "..."}` (HTTP 500, as Docker's plugin SDK),
//!   unknown methods 404, unknown JSON fields are ignored, `EndpointOperInfo` is always 200.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Instant,
};

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::net::{UnixListener, UnixStream};

use super::{
    ApiError, ApiResult, Daemon, Shared, State,
    attach::{AddressRequest, AttachRequest, attachment_op_key},
};
use crate::{
    api,
    dataplane::Proto,
    ipam::Ipv4Net,
    model::{BridgeNet, BridgeNetV6, Network, Owner, PortOpts, PortRequest},
};

/// Where `netd up` serves the plugin unless `--docker-plugin` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/netd.sock";
/// The driver name Docker knows netd by (the socket's basename) and netd's `Driver` of them.
pub const DRIVER: &str = "netd";

/// The plugin's listening socket; removing it (and the directories netd made for it) on drop.
pub struct PluginSocket {
    pub path: PathBuf,
    listener: UnixListener,
    made_dirs: Vec<PathBuf>,
}

impl PluginSocket {
    /// Bind `path` (its directory is made when missing). A live socket there is an error; a
    /// stale one (nobody answers) is replaced.
    pub fn bind(path: &Path) -> Result<Self, String> {
        let mut made_dirs = Vec::new();
        let mut missing: Vec<PathBuf> =
            path.ancestors().skip(1).take_while(|d| !d.exists()).map(Path::to_path_buf).collect();
        missing.reverse();
        for d in &missing {
            std::fs::create_dir(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
            made_dirs.push(d.clone());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!("a Docker plugin is already serving {} (another netd?)", path.display()));
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|e| format!("listening on {}: {e}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        made_dirs.reverse();
        Ok(Self { path: path.to_path_buf(), listener, made_dirs })
    }

    pub async fn accept(&self) -> std::io::Result<UnixStream> {
        self.listener.accept().await.map(|(s, _)| s)
    }
}

impl Drop for PluginSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        for d in &self.made_dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Accept on the plugin socket if there is one; never resolves otherwise.
pub async fn accept_opt(p: &Option<PluginSocket>) -> std::io::Result<UnixStream> {
    match p {
        Some(p) => p.accept().await,
        None => std::future::pending().await,
    }
}

/// One connection (HTTP/1.1, keep-alive as Docker's plugin client uses it).
pub async fn serve_conn(d: Shared, s: UnixStream) {
    api::serve_connection(s, move |req| {
        let d = d.clone();
        async move {
            let (status, v) = match api::read_request(req).await {
                Ok(req) => d.plugin_call(&req.path, &req.body).await,
                Err(e) => {
                    (if matches!(e, api::HttpError::TooLarge) { 413 } else { 400 }, json!({"Err": e.to_string()}))
                }
            };
            let body = serde_json::to_vec(&v).unwrap_or_default();
            let d2 = d.clone();
            // The purge after a publish, without the state lock.
            tokio::spawn(async move { d2.dp.ct_flush().await });
            api::json_response(status, body)
        }
    })
    .await;
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IpamData {
    #[serde(rename = "Pool")]
    pool: String,
    #[serde(rename = "Gateway")]
    gateway: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateNetworkReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "Options")]
    options: Option<Map<String, Value>>,
    #[serde(rename = "IPv4Data")]
    ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data")]
    ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EndpointInterface {
    #[serde(rename = "Address")]
    address: String,
    #[serde(rename = "AddressIPv6")]
    address_ipv6: String,
    #[serde(rename = "MacAddress")]
    mac_address: String,
}

/// The body of every endpoint call (each uses the fields it needs).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EndpointReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(rename = "Interface")]
    interface: Option<EndpointInterface>,
    #[serde(rename = "Options")]
    options: Option<Map<String, Value>>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    api::decode_json(body).map_err(ApiError::bad)
}

/// `"203.0.113.2/24"` (Docker's IPAM strings: the address with its prefix length, host bits
/// kept), or a bare address (/32).
fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    match s.parse::<ipnet::Ipv4Net>() {
        Ok(n) => Some((n.addr(), n.prefix_len())),
        Err(_) => Some((s.parse().ok()?, 32)),
    }
}

fn opt_true(opts: &Map<String, Value>, key: &str) -> bool {
    match opts.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// Docker's port-map entries (`com.docker.network.portmap`) as netd's port requests.
fn port_requests(opts: &Map<String, Value>) -> ApiResult<Vec<PortRequest>> {
    let mut out = Vec::new();
    let Some(list) = opts.get("com.docker.network.portmap").and_then(Value::as_array) else { return Ok(out) };
    for pm in list {
        let num = |k: &str| pm.get(k).and_then(Value::as_u64).unwrap_or(0);
        let proto = match num("Proto") {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            132 => return Err(ApiError::bad("netd does not support sctp port mappings (only tcp and udp)")),
            n => return Err(ApiError::bad(format!("unsupported protocol number {n} in port mapping"))),
        };
        let host_ip = match pm.get("HostIP").and_then(Value::as_str).unwrap_or("") {
            "" => None,
            s => match s.parse::<std::net::IpAddr>() {
                Ok(a) => Some(a),
                Err(_) => return Err(ApiError::bad(format!("invalid host IP {s:?} in port mapping"))),
            },
        };
        let port = |v: u64, what: &str| {
            u16::try_from(v).map_err(|_| ApiError::bad(format!("invalid {what} {v} in port mapping")))
        };
        let cport = port(num("Port"), "Port")?;
        if cport == 0 {
            return Err(ApiError::bad("invalid containerPort: 0"));
        }
        let start = port(num("HostPort"), "HostPort")?;
        let end = port(num("HostPortEnd"), "HostPortEnd")?;
        let (start, end) = match (start, end) {
            (0, _) => (0, 0),
            (s, 0) => (s, s),
            (s, e) if e >= s => (s, e),
            (s, e) => return Err(ApiError::bad(format!("invalid host port range {s}-{e}"))),
        };
        out.push(PortRequest { proto, host_ip, host_port_start: start, host_port_end: end, container_port: cport });
    }
    Ok(out)
}

/// The IPv6 side of a Docker network: `IPv6Data` from Docker's IPAM (one pool and its gateway,
/// as the bridge driver takes them), or `None` on an IPv4-only network. `--ipv6` without v6 data
/// (an IPAM that gave none) and v6 data on a dataplane without IPv6 are errors.
fn docker_network_v6(
    st: &State,
    opts: &Map<String, Value>,
    data: &[IpamData],
    generic: &BTreeMap<String, String>,
) -> ApiResult<Option<BridgeNetV6>> {
    if !opt_true(opts, "com.docker.network.enable_ipv6") && data.is_empty() {
        return Ok(None);
    }
    if !st.dp.ipv6() {
        return Err(ApiError::bad(format!(
            "IPv6 networks are not supported by the {} dataplane yet (netd up --dataplane iptables has them)",
            st.dp.backend()
        )));
    }
    let d = match data {
        [d] => d,
        [] => {
            return Err(ApiError::bad(
                "netd needs an IPv6 subnet from Docker's IPAM for --ipv6 (give --subnet with an IPv6 prefix)",
            ));
        }
        _ => return Err(ApiError::bad("netd supports one IPv6 subnet per network")),
    };
    let subnet: ipnet::Ipv6Net =
        d.pool.parse().map_err(|_| ApiError::bad(format!("invalid IPv6 pool {:?} from IPAM", d.pool)))?;
    let subnet6 = crate::ipam::validate_ipv6_subnet(std::net::IpAddr::V6(subnet.addr()), subnet.prefix_len())
        .map_err(ApiError::bad)?
        .trunc();
    if subnet.prefix_len() > 126 {
        return Err(ApiError::bad(format!("netd needs an IPv6 subnet of /126 or larger from IPAM, got {}", d.pool)));
    }
    let gateway = match parse_cidr6(&d.gateway) {
        Some((g, _)) if subnet6.contains(g) => g,
        Some(_) => return Err(ApiError::bad(format!("no matching subnet for gateway {}", d.gateway))),
        None => return Err(ApiError::bad("netd needs an IPv6 gateway address from Docker's IPAM")),
    };
    let overlap = st
        .networks
        .values()
        .filter_map(|n| n.bridge.as_ref()?.ipv6.as_ref())
        .filter_map(|v| crate::ipam::Ipv6Net::new(v.subnet, v.prefix_len).ok())
        .any(|u| u.overlaps(&subnet6));
    if overlap {
        return Err(ApiError::bad("invalid pool request: Pool overlaps with other one on this address space"));
    }
    let gateway_mode = match generic.get("com.docker.network.bridge.gateway_mode_ipv6") {
        Some(v) => v.parse().map_err(ApiError::bad)?,
        None => crate::dataplane::GatewayMode::Nat,
    };
    Ok(Some(BridgeNetV6 {
        subnet: subnet6.network(),
        prefix_len: subnet6.prefix_len(),
        gateway,
        ip_range: None,
        user_subnet: true,
        gateway_mode,
    }))
}

/// `Interface.AddressIPv6` of `CreateEndpoint` on network `b`: Docker's IPAM address (required
/// on a dual-stack network, refused on an IPv4-only one).
fn endpoint_ip6(b: &BridgeNet, s: &str) -> ApiResult<Option<Ipv6Addr>> {
    match (&b.ipv6, s) {
        (None, "") => Ok(None),
        (None, s) => Err(ApiError::bad(format!("IPv6 address {s} on a network without IPv6"))),
        (Some(_), "") => {
            Err(ApiError::bad("netd needs the endpoint's IPv6 address from Docker's IPAM on an IPv6 network"))
        }
        (Some(v6), s) => {
            let (a, plen) = parse_cidr6(s).ok_or_else(|| ApiError::bad(format!("invalid IPv6 address {s:?}")))?;
            let net = crate::ipam::Ipv6Net::new(v6.subnet, v6.prefix_len).expect("valid v6 subnet");
            if !net.contains(a) || (s.contains('/') && plen != v6.prefix_len) {
                return Err(ApiError::bad(format!("address {s} is not in the network's subnet {net}")));
            }
            Ok(Some(a))
        }
    }
}

/// `"fd00::2/64"` (or a bare address: /128), as [`parse_cidr`] for IPv6.
fn parse_cidr6(s: &str) -> Option<(Ipv6Addr, u8)> {
    match s.parse::<ipnet::Ipv6Net>() {
        Ok(n) => Some((n.addr(), n.prefix_len())),
        Err(_) => Some((s.parse().ok()?, 128)),
    }
}

fn docker_endpoint(st: &State, eid: &str) -> Option<crate::model::Attachment> {
    st.attachments.get(eid).filter(|a| matches!(a.owner, Owner::Docker { .. })).cloned()
}

impl Daemon {
    /// Route one plugin call; the status and JSON body of the reply.
    pub async fn plugin_call(self: &Shared, path: &str, body: &[u8]) -> (u16, Value) {
        let method = path.trim_start_matches('/');
        let r: ApiResult<Value> = match method {
            "Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver"]})),
            "NetworkDriver.GetCapabilities" => Ok(json!({"Scope": "local", "ConnectivityScope": "local"})),
            "NetworkDriver.CreateNetwork" => match parse(body) {
                Ok(r) => self.docker_create_network(r).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.DeleteNetwork" => match parse::<EndpointReq>(body) {
                Ok(r) => self.docker_delete_network(&r.network_id).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.CreateEndpoint" => match parse(body) {
                Ok(r) => self.docker_create_endpoint(r).await,
                Err(e) => Err(e),
            },
            // Always 200 with a Value map: an error here fails `docker run` on 20.10.
            "NetworkDriver.EndpointOperInfo" => Ok(json!({"Value": {}})),
            "NetworkDriver.DeleteEndpoint" => match parse::<EndpointReq>(body) {
                Ok(r) => self.docker_delete_endpoint(&r.endpoint_id).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.Join" => match parse::<EndpointReq>(body) {
                Ok(r) => self.docker_join(&r).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.Leave" => Ok(json!({})),
            "NetworkDriver.ProgramExternalConnectivity" => match parse::<EndpointReq>(body) {
                Ok(r) => self.docker_program(&r).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.RevokeExternalConnectivity" => match parse::<EndpointReq>(body) {
                Ok(r) => self.docker_revoke(&r.endpoint_id).await,
                Err(e) => Err(e),
            },
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
            _ => return (404, json!({"Err": format!("{method}: method not implemented by netd")})),
        };
        match r {
            Ok(v) => (200, v),
            Err(e) => {
                tracing::warn!(method, error = %e.message, "docker plugin call failed");
                (500, json!({"Err": e.message}))
            }
        }
    }

    async fn docker_create_network(self: &Shared, r: CreateNetworkReq) -> ApiResult<Value> {
        if r.ipv6_data.as_ref().is_some_and(|v| !v.is_empty()) {
            self.dp.ready_v6().await;
        }
        let mut st = self.state.lock().await;
        let id = r.network_id;
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ApiError::bad(format!("invalid NetworkID {id:?}")));
        }
        if st.networks.get(&id).is_some_and(|n| n.driver == DRIVER) {
            return Ok(json!({})); // a repeated call
        }
        let opts = r.options.unwrap_or_default();
        let v4 = r.ipv4_data.unwrap_or_default();
        let data = match v4.as_slice() {
            [d] => d,
            [] => return Err(ApiError::bad("netd needs an IPv4 subnet from Docker's IPAM")),
            _ => return Err(ApiError::bad("netd supports one IPv4 subnet per network")),
        };
        let subnet: Ipv4Net =
            data.pool.parse().map_err(|_| ApiError::bad(format!("invalid IPv4 pool {:?} from IPAM", data.pool)))?;
        if subnet.prefix_len() == 0 || subnet.prefix_len() > 30 {
            return Err(ApiError::bad(format!(
                "netd needs a subnet of /1 to /30 from IPAM, got {} (the null IPAM driver is not supported)",
                data.pool
            )));
        }
        let gateway = match parse_cidr(&data.gateway) {
            Some((g, _)) if subnet.contains(g) => g,
            Some(_) => return Err(ApiError::bad(format!("no matching subnet for gateway {}", data.gateway))),
            None => return Err(ApiError::bad("netd needs a gateway address from Docker's IPAM")),
        };
        // `-o k=v` arrive as strings under com.docker.network.generic; the bridge driver's names.
        let generic: BTreeMap<String, String> = opts
            .get("com.docker.network.generic")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect()
            })
            .unwrap_or_default();
        let o = self.bridge_options(&st, &generic)?;
        let internal = opt_true(&opts, "com.docker.network.internal")
            || generic.get("com.docker.network.internal").is_some_and(|v| v == "true");
        let bridge = match generic.get("com.docker.network.bridge.name") {
            Some(b) => {
                if b.is_empty() || b.len() > 15 || b.contains('/') || b.contains(char::is_whitespace) {
                    return Err(ApiError::bad(format!("invalid bridge name {b:?}")));
                }
                if st.networks.values().any(|n| n.bridge.as_ref().is_some_and(|x| &x.bridge == b)) {
                    return Err(ApiError::conflict(format!("bridge name {b} is already in use by another network")));
                }
                b.clone()
            }
            None => format!("br-{}", &id[..id.len().min(12)]),
        };
        let overlap = st
            .networks
            .values()
            .filter_map(|n| n.bridge.as_ref()?.ipv4.as_ref().and_then(|v| Ipv4Net::new(v.subnet, v.prefix_len).ok()))
            .any(|u| u.overlaps(&subnet));
        if overlap {
            return Err(ApiError::bad("invalid pool request: Pool overlaps with other one on this address space"));
        }
        let ipv6 = docker_network_v6(&st, &opts, r.ipv6_data.as_deref().unwrap_or_default(), &generic)?;
        let index = st.networks.values().filter_map(|n| n.bridge.as_ref().map(|b| b.index)).max().unwrap_or(1) + 1;
        let n = Network {
            id: id.clone(),
            name: id.clone(),
            driver: DRIVER.into(),
            created: crate::model::rfc3339_now().0,
            default_bridge: false,
            bridge: Some(BridgeNet {
                index,
                bridge,
                owned: true,
                // Docker's networks always have IPv4 here (netd's driver takes no IPv6-only
                // network: `CreateNetwork` needs the v4 pool).
                ipv4: Some(crate::model::BridgeNetV4 {
                    subnet: subnet.network(),
                    prefix_len: subnet.prefix_len(),
                    gateway,
                    ip_range: None,
                    user_subnet: true,
                    gateway_mode: o.gateway_mode,
                }),
                icc: o.icc,
                masquerade: o.masquerade,
                host_binding_ipv4: o.host_ip,
                mtu: o.mtu,
                ipv6,
            }),
            internal,
            options: generic,
        };
        self.install_network(&mut st, n).await?;
        tracing::info!(network = %id, "docker: network created");
        Ok(json!({}))
    }

    async fn docker_delete_network(self: &Shared, id: &str) -> ApiResult<Value> {
        let mut st = self.state.lock().await;
        let Some(n) = st.networks.get(id).cloned() else { return Ok(json!({})) };
        if n.driver != DRIVER {
            return Err(ApiError::bad(format!("network {id} is not a Docker network of netd")));
        }
        // Endpoints Docker lost track of (it deletes a network only without endpoints).
        let stale: Vec<_> = st.attachments.values().filter(|a| a.network_id == n.id).cloned().collect();
        for a in &stale {
            self.detach(&mut st, a).await;
        }
        self.remove_network_locked(&mut st, &n).await;
        tracing::info!(network = %id, "docker: network deleted");
        Ok(json!({}))
    }

    /// Docker endpoints whose host veth is gone: their container (and its namespace, the veth
    /// with it) went away without `DeleteEndpoint` (dockerd or the container was killed).
    /// Takes the state lock only to list them and, per endpoint, for the detach's model half.
    pub async fn gc_docker_endpoints(self: &Shared) {
        let docker: Vec<_> = {
            let st = self.state.lock().await;
            st.attachments.values().filter(|a| matches!(a.owner, Owner::Docker { .. })).cloned().collect()
        };
        if docker.is_empty() {
            return;
        }
        let Ok(links) = self.nl.links().await else { return };
        let names: std::collections::HashSet<String> = links.into_iter().map(|(n, _)| n).collect();
        for a in docker.iter().filter(|a| !names.contains(&a.host_veth)) {
            let key = attachment_op_key(&a.owner);
            let op = self.op_lock(&key).await;
            // Deleted meanwhile (DeleteEndpoint, another GC pass).
            if docker_endpoint(&*self.state.lock().await, &a.id).is_none() {
                continue;
            }
            tracing::info!(endpoint = %a.id, veth = %a.host_veth, "docker: endpoint's veth is gone: removing it");
            self.detach_unlocked(a).await;
            drop(op);
            self.op_forget(&key);
        }
    }

    /// CreateEndpoint: the veth and the dataplane's endpoint are made without the state lock
    /// (held only to check, reserve the address and commit), so endpoints of different
    /// containers are created in parallel; calls for one endpoint are serialised by its op lock.
    async fn docker_create_endpoint(self: &Shared, r: EndpointReq) -> ApiResult<Value> {
        let eid = r.endpoint_id.clone();
        if eid.is_empty() || !eid.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ApiError::bad(format!("invalid EndpointID {eid:?}")));
        }
        // Endpoints whose container went away without DeleteEndpoint (before taking this
        // endpoint's op lock: the pass takes theirs).
        self.gc_docker_endpoints().await;
        let owner = Owner::Docker { endpoint_id: eid.clone() };
        let _op = self.op_lock(&attachment_op_key(&owner)).await;
        let net = {
            let st = self.state.lock().await;
            let net = st
                .networks
                .get(&r.network_id)
                .filter(|n| n.driver == DRIVER)
                .cloned()
                .ok_or_else(|| ApiError::not_found(format!("network {} not found", r.network_id)))?;
            if docker_endpoint(&st, &eid).is_some() {
                return Ok(json!({})); // a repeated call
            }
            net
        };
        let b = net.bridge.clone().expect("bridge network");
        let iface = r.interface.unwrap_or_default();
        let ip6 = endpoint_ip6(&b, &iface.address_ipv6)?;
        let (ip, plen) = match parse_cidr(&iface.address) {
            Some(x) if !iface.address.is_empty() => x,
            _ if iface.address.is_empty() => {
                return Err(ApiError::bad(
                    "netd needs the endpoint's IPv4 address from Docker's IPAM (the null IPAM driver is not supported)",
                ));
            }
            _ => return Err(ApiError::bad(format!("invalid address {:?}", iface.address))),
        };
        let Some(v4) = &b.ipv4 else {
            return Err(ApiError::bad(format!("network {} has no IPv4 subnet", r.network_id)));
        };
        let subnet = Ipv4Net::new(v4.subnet, v4.prefix_len).expect("valid subnet");
        if !subnet.contains(ip) || (iface.address.contains('/') && plen != v4.prefix_len) {
            return Err(ApiError::bad(format!(
                "address {} is not in the network's subnet {}/{}",
                iface.address, v4.subnet, v4.prefix_len
            )));
        }
        let mac = match iface.mac_address.as_str() {
            "" => None,
            m => Some(crate::ipam::parse_mac(m).map_err(|e| ApiError::bad(e.to_string()))?),
        };
        let a = self
            .attach_unlocked(
                AttachRequest {
                    id: Some(eid.clone()),
                    owner,
                    network_id: net.id.clone(),
                    netns: None,
                    ifname: String::new(),
                    address: AddressRequest::External(ip),
                    ip6,
                    mac,
                    default_route: false,
                    family_routes: (false, false),
                    aliases: Vec::new(),
                    port_opts: PortOpts::default(),
                },
                |st| {
                    // The network went away meanwhile (it cannot while the kernel work runs).
                    if st.networks.contains_key(&net.id) {
                        Ok(())
                    } else {
                        Err(ApiError::not_found(format!("network {} not found", net.id)))
                    }
                },
            )
            .await?;
        tracing::info!(endpoint = %eid, ip = %ip, ip6 = ?ip6, veth = %a.host_veth, "docker: endpoint created");
        // Docker takes a MAC from the driver only when it did not choose one.
        Ok(if mac.is_some() {
            json!({})
        } else {
            json!({"Interface": {"MacAddress": super::handlers::fmt_mac(a.mac)}})
        })
    }

    /// DeleteEndpoint: the dataplane (and its conntrack purge) and the veth without the state
    /// lock.
    async fn docker_delete_endpoint(self: &Shared, eid: &str) -> ApiResult<Value> {
        let key = attachment_op_key(&Owner::Docker { endpoint_id: eid.to_string() });
        let op = self.op_lock(&key).await;
        let a = docker_endpoint(&*self.state.lock().await, eid);
        if let Some(a) = a {
            self.detach_unlocked(&a).await;
            self.state.lock().await.docker_join.remove(eid);
            tracing::info!(endpoint = %eid, "docker: endpoint deleted");
        }
        drop(op);
        self.op_forget(&key);
        Ok(json!({}))
    }

    async fn docker_join(self: &Shared, r: &EndpointReq) -> ApiResult<Value> {
        let mut st = self.state.lock().await;
        let t0 = Instant::now();
        let waited = st.waited;
        let a = docker_endpoint(&st, &r.endpoint_id)
            .ok_or_else(|| ApiError::not_found(format!("endpoint {} not found", r.endpoint_id)))?;
        let internal = st.networks.get(&a.network_id).is_some_and(|n| n.internal);
        let mut resp = json!({
            "InterfaceName": {"SrcName": a.ifname, "DstPrefix": "eth"},
            "StaticRoutes": [],
            "DisableGatewayService": internal,
        });
        if !internal {
            resp["Gateway"] = json!(a.gateway.map(|g| g.to_string()).unwrap_or_default());
            if let Some(g6) = a.gateway6 {
                resp["GatewayIPv6"] = json!(g6.to_string());
            }
        }
        st.docker_join.insert(a.id.clone(), (t0.elapsed(), waited));
        Ok(resp)
    }

    /// ProgramExternalConnectivity: host ports allocated and committed under the state lock,
    /// the dataplane programmed without it.
    async fn docker_program(self: &Shared, r: &EndpointReq) -> ApiResult<Value> {
        let t0 = Instant::now();
        let _op = self.op_lock(&attachment_op_key(&Owner::Docker { endpoint_id: r.endpoint_id.clone() })).await;
        let (a, mut waited) = {
            let st = self.state.lock().await;
            let a = docker_endpoint(&st, &r.endpoint_id)
                .ok_or_else(|| ApiError::not_found(format!("endpoint {} not found", r.endpoint_id)))?;
            if st.networks.get(&a.network_id).is_some_and(|n| n.internal) || !a.ports.is_empty() {
                return Ok(json!({})); // nothing to publish, or already published
            }
            (a, st.waited)
        };
        let opts = r.options.clone().unwrap_or_default();
        let mut reqs = port_requests(&opts)?;
        // Docker 29 says so when another endpoint of the container is its IPv6 gateway: this
        // (IPv4-only) endpoint then gets no binding from a host IPv6 address (the `[::]` twin
        // that the proxy or NAT46 would serve); the v6 bindings go through the other one.
        if opt_true(&opts, "com.docker.network.driver.private.no_proxy_6to4") && a.ip6.is_none() {
            let default_v4 = {
                let st = self.state.lock().await;
                st.networks.get(&a.network_id).and_then(|n| n.bridge.as_ref()).map(|b| b.host_binding_ipv4)
            };
            let default_v4 = std::net::IpAddr::V4(default_v4.unwrap_or(Ipv4Addr::UNSPECIFIED));
            reqs.retain(|q| !q.host_ip.is_some_and(|h| h.is_ipv6()));
            for q in &mut reqs {
                q.host_ip.get_or_insert(default_v4);
            }
        }
        let (maps, w) = self.publish_unlocked(&a.id, &reqs, &a.id[..a.id.len().min(12)]).await?;
        waited += w;
        let mut st = self.state.lock().await;
        waited += st.waited;
        let (join, join_waited) = st.docker_join.remove(&a.id).unwrap_or_default();
        st.docker_timing.record_waited(maps.len(), join + t0.elapsed().saturating_sub(waited), join_waited + waited);
        tracing::info!(endpoint = %a.id, ports = maps.len(), "docker: external connectivity programmed");
        Ok(json!({}))
    }

    /// RevokeExternalConnectivity: the dataplane's bindings (and the conntrack purge) without
    /// the state lock.
    async fn docker_revoke(self: &Shared, eid: &str) -> ApiResult<Value> {
        let _op = self.op_lock(&attachment_op_key(&Owner::Docker { endpoint_id: eid.to_string() })).await;
        let a = docker_endpoint(&*self.state.lock().await, eid);
        if let Some(a) = a
            && !a.ports.is_empty()
        {
            self.unpublish_unlocked(&a.id).await;
        }
        Ok(json!({}))
    }

    /// `GET /endpoints/{ref}/json`: a non-sandbox attachment by id prefix or address, with its
    /// bindings in Docker's `NetworkSettings.Ports` shape (what `netd port` prints).
    pub async fn endpoint_json(&self, r: &str) -> ApiResult<Value> {
        let st = self.state.lock().await;
        let m: Vec<_> = st
            .attachments
            .values()
            .filter(|a| !a.owner.is_sandbox())
            .filter(|a| {
                a.id.starts_with(r)
                    || a.ip.is_some_and(|ip| ip.to_string() == r)
                    || a.ip6.is_some_and(|ip| ip.to_string() == r)
            })
            .collect();
        let a = match m.as_slice() {
            [a] => *a,
            [] => return Err(ApiError::not_found(format!("No such container or endpoint: {r}"))),
            _ => return Err(ApiError::bad(format!("multiple endpoints match {r}"))),
        };
        let mut ports: BTreeMap<String, Value> = BTreeMap::new();
        for p in &a.ports {
            let e = ports.entry(format!("{}/{}", p.container_port, p.proto.as_str())).or_insert_with(|| json!([]));
            if let Value::Array(v) = e {
                v.push(json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}));
            }
        }
        Ok(json!({
            "Id": a.id,
            "NetworkID": a.network_id,
            "Owner": a.owner,
            "IPAddress": a.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            "HostVeth": a.host_veth,
            "Ports": ports,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_maps_in_every_form_docker_sends() {
        let opts: Map<String, Value> = serde_json::from_str(
            r#"{"com.docker.network.portmap": [
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
                {"Proto": 17, "IP": "", "Port": 53, "HostIP": "127.0.0.1", "HostPort": 5353, "HostPortEnd": 5353},
                {"Proto": 6, "IP": "", "Port": 91, "HostIP": "", "HostPort": 9100, "HostPortEnd": 9110},
                {"Proto": 6, "IP": "", "Port": 92, "HostIP": "", "HostPort": 0, "HostPortEnd": 0},
                {"Proto": 6, "Port": 93, "HostPort": 7000, "Future": true}
            ], "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}]}"#,
        )
        .unwrap();
        let r = port_requests(&opts).unwrap();
        let got: Vec<_> =
            r.iter().map(|p| (p.proto, p.host_ip, p.host_port_start, p.host_port_end, p.container_port)).collect();
        assert_eq!(
            got,
            [
                (Proto::Tcp, None, 8080, 8080, 80),
                (Proto::Udp, Some(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST)), 5353, 5353, 53),
                (Proto::Tcp, None, 9100, 9110, 91),
                (Proto::Tcp, None, 0, 0, 92),
                (Proto::Tcp, None, 7000, 7000, 93),
            ]
        );
        let bad = |j: &str| port_requests(&serde_json::from_str(j).unwrap()).unwrap_err().message;
        assert!(bad(r#"{"com.docker.network.portmap": [{"Proto": 132, "Port": 80}]}"#).contains("sctp"));
        let v6 = port_requests(
            &serde_json::from_str(
                r#"{"com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostIP": "::", "HostPort": 8080}]}"#,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(v6[0].host_ip, Some(std::net::IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
        assert!(
            bad(r#"{"com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostIP": "::x"}]}"#)
                .contains("invalid host IP")
        );
        assert!(port_requests(&Map::new()).unwrap().is_empty());
    }

    #[test]
    fn ipam_strings() {
        assert_eq!(parse_cidr("203.0.113.2/24"), Some((Ipv4Addr::new(203, 0, 113, 2), 24)));
        assert_eq!(parse_cidr("203.0.113.1"), Some((Ipv4Addr::new(203, 0, 113, 1), 32)));
        assert_eq!(parse_cidr("x/24"), None);
        assert_eq!(parse_cidr("1.2.3.4/33"), None);
        assert_eq!(parse_cidr("1.2.3.4/"), None);
        assert_eq!(parse_cidr("1.2.3.4/24/1"), None);
        assert_eq!(parse_cidr("2001:db8::1/64"), None);
        assert_eq!(parse_cidr(""), None);
        assert_eq!(parse_cidr6("fd00:1::2/64"), Some(("fd00:1::2".parse().unwrap(), 64)));
        assert_eq!(parse_cidr6("fd00:1::1"), Some(("fd00:1::1".parse().unwrap(), 128)));
        assert_eq!(parse_cidr6("203.0.113.2/24"), None);
    }
}
