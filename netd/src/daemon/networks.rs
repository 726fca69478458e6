//! Networks: the default bridge (Docker's docker0 model), user bridge networks, endpoints
//! (veth pairs) and host-port reservations.
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsFd,
    path::Path,
};

use super::{ApiError, ApiResult, Daemon, HeldSocket, Shared, State};
use crate::{
    dataplane::{PortMapping, Proto},
    ipam::{self, Ipv4Net},
    model::{BridgeNet, Endpoint, Network},
};

/// Docker's default bridge name is docker0; netd's is netd0.
pub const DEFAULT_BRIDGE: &str = "netd0";
pub const DEFAULT_MTU: u32 = 1500;

impl Daemon {
    pub fn resolve_network(&self, st: &State, r: &str) -> ApiResult<String> {
        // Exact name first (Docker: full id, then name, then prefix).
        if let Some(n) = st.networks.values().find(|n| n.id == r) {
            return Ok(n.id.clone());
        }
        if let Some(n) = st.networks.values().find(|n| n.name == r) {
            return Ok(n.id.clone());
        }
        let m: Vec<&Network> = st.networks.values().filter(|n| n.id.starts_with(r)).collect();
        match m.len() {
            1 => Ok(m[0].id.clone()),
            0 => Err(ApiError::not_found(format!("network {r} not found"))),
            _ => Err(ApiError::bad(format!("network {r} is ambiguous ({} matches found based on ID prefix)", m.len()))),
        }
    }

    /// Create (or adopt) the kernel bridge for a bridge network and give it its gateway.
    pub async fn ensure_bridge(&self, b: &BridgeNet) -> Result<u32, String> {
        let idx = if b.owned {
            self.nl.create_bridge(&b.bridge, b.mtu).await.map_err(|e| format!("creating bridge {}: {e}", b.bridge))?
        } else {
            self.nl
                .link_index(&b.bridge)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("bridge {} not found", b.bridge))?
        };
        self.nl
            .add_address(&b.bridge, b.gateway, b.prefix_len)
            .await
            .map_err(|e| format!("adding {}/{} to {}: {e}", b.gateway, b.prefix_len, b.bridge))?;
        self.nl.set_up(&b.bridge).await.map_err(|e| format!("setting {} up: {e}", b.bridge))?;
        Ok(idx)
    }

    /// Address pool of a bridge network.
    pub fn pool_for(b: &BridgeNet) -> ipam::Pool {
        let subnet = Ipv4Net::new(b.subnet, b.prefix_len).expect("valid subnet");
        let range = b.ip_range.map(|(a, p)| Ipv4Net::new(a, p).expect("valid range"));
        ipam::Pool::new(subnet, b.gateway, range)
    }

    /// Create a veth pair for `cid` on network `net_id`, move its peer into the sandbox
    /// namespace as `eth<idx>`, address it and tell the dataplane. Undone on any failure.
    #[allow(clippy::too_many_arguments)]
    pub async fn attach_endpoint(
        self: &Shared,
        st: &mut State,
        cid: &str,
        net_id: &str,
        netns: &Path,
        idx: usize,
        static_ip: Option<Ipv4Addr>,
        mac: Option<&str>,
        aliases: Vec<String>,
    ) -> ApiResult<Endpoint> {
        let net = st
            .networks
            .get(net_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("network {net_id} not found")))?;
        let b = net.bridge.clone().ok_or_else(|| ApiError::bad(format!("network {} has no bridge", net.name)))?;
        let pool = st.pools.entry(net_id.to_string()).or_insert_with(|| Self::pool_for(&b));
        let ip = match static_ip {
            Some(ip) => pool.allocate_static(ip).map_err(|e| ApiError::bad(e.to_string()))?,
            None => pool.allocate().map_err(|e| ApiError::internal(e.to_string()))?,
        };
        let mac = match mac {
            Some(m) => ipam::parse_mac(m).map_err(|e| ApiError::bad(e.to_string()))?,
            None => ipam::mac_from_ip(ip),
        };
        let suffix: String = crate::names::new_id()[..7].to_string();
        let host_veth = format!("veth{suffix}");
        let peer_tmp = format!("vp{suffix}");
        let ifname = format!("eth{idx}");
        let ep = Endpoint {
            network_id: net_id.to_string(),
            endpoint_id: crate::names::new_id(),
            host_veth: host_veth.clone(),
            ifname: ifname.clone(),
            ip,
            prefix_len: b.prefix_len,
            gateway: b.gateway,
            mac,
            aliases,
            static_ip,
        };
        let r: Result<u32, String> = async {
            self.nl.create_veth(&host_veth, &peer_tmp, b.mtu).await.map_err(|e| format!("creating veth: {e}"))?;
            super::crash_point("run:veth-created");
            self.nl.set_master(&host_veth, &b.bridge).await.map_err(|e| format!("attaching to {}: {e}", b.bridge))?;
            let ns = std::fs::File::open(netns).map_err(|e| format!("opening {}: {e}", netns.display()))?;
            self.nl.move_to_netns(&peer_tmp, ns.as_fd()).await.map_err(|e| format!("moving veth: {e}"))?;
            let iface = crate::netlink::SandboxIface {
                tmp_name: peer_tmp.clone(),
                name: ifname.clone(),
                mac,
                addr: ip,
                prefix_len: b.prefix_len,
                mtu: b.mtu,
                gateway: (idx == 0).then_some(b.gateway),
            };
            let ns = netns.to_path_buf();
            tokio::task::spawn_blocking(move || crate::netlink::configure_sandbox(&ns, Some(iface)))
                .await
                .map_err(|e| format!("configuring {ifname}: {e}"))?
                .map_err(|e| format!("configuring {ifname}: {e}"))?;
            self.nl.set_up(&host_veth).await.map_err(|e| format!("setting {host_veth} up: {e}"))?;
            self.nl
                .link_index(&host_veth)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{host_veth} vanished"))
        }
        .await;
        let host_ifindex = match r {
            Ok(i) => i,
            Err(e) => {
                let _ = self.nl.delete_link(&host_veth).await;
                if let Some(p) = st.pools.get_mut(net_id) {
                    p.release(ip);
                }
                return Err(ApiError::internal(format!("failed to set up endpoint for {cid} on {}: {e}", net.name)));
            }
        };
        let bridge_ifindex = self.nl.link_index(&b.bridge).await.ok().flatten().unwrap_or(0);
        let spec = net.spec(bridge_ifindex).expect("bridge");
        let dp_ep = crate::dataplane::EndpointSpec {
            container_id: cid.to_string(),
            network_index: b.index,
            host_veth: host_veth.clone(),
            host_ifindex,
            ip,
            mac,
        };
        if let Err(e) = st.dp.endpoint_added(&spec, &dp_ep) {
            let _ = self.nl.delete_link(&host_veth).await;
            if let Some(p) = st.pools.get_mut(net_id) {
                p.release(ip);
            }
            return Err(ApiError::internal(format!("dataplane: {e}")));
        }
        Ok(ep)
    }

    /// Remove an endpoint: dataplane first, then the veth (its peer goes with it), then the
    /// address. Best effort; every step is idempotent.
    pub async fn detach_endpoint(self: &Shared, st: &mut State, cid: &str, ep: &Endpoint) {
        if let Some(net) = st.networks.get(&ep.network_id).cloned()
            && let Some(b) = &net.bridge
        {
            let spec = net.spec(0).expect("bridge");
            let dp_ep = crate::dataplane::EndpointSpec {
                container_id: cid.to_string(),
                network_index: b.index,
                host_veth: ep.host_veth.clone(),
                host_ifindex: 0,
                ip: ep.ip,
                mac: ep.mac,
            };
            if let Err(e) = st.dp.endpoint_removed(&spec, &dp_ep) {
                tracing::warn!(container = %cid, error = %e, "dataplane: removing endpoint");
            }
        }
        if let Err(e) = self.nl.delete_link(&ep.host_veth).await {
            tracing::warn!(container = %cid, veth = %ep.host_veth, error = %e, "deleting veth");
        }
        if let Some(p) = st.pools.get_mut(&ep.network_id) {
            p.release(ep.ip);
        }
    }
}

/// Try to reserve a host port the way Docker does: bind a socket (TCP bound, not listening;
/// UDP bound) in the daemon's namespace and hold it while the binding exists.
pub fn bind_host_port(proto: Proto, ip: Ipv4Addr, port: u16) -> std::io::Result<HeldSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddrV4::new(ip, port);
    match proto {
        Proto::Tcp => {
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            s.bind(&addr.into())?;
            Ok(HeldSocket::TcpRaw(s.into()))
        }
        Proto::Udp => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.bind(&addr.into())?;
            Ok(HeldSocket::Udp(s.into()))
        }
    }
}

/// Allocate every binding of a request (all-or-nothing), holding a socket for each.
/// `specs`: (proto, host ip, host port start, end (0 = ephemeral), container port).
pub fn allocate_ports(
    st: &mut State,
    specs: &[(String, Ipv4Addr, u16, u16, u16)],
    container_ip: Ipv4Addr,
    net_index: u32,
) -> ApiResult<Vec<PortMapping>> {
    let mut done: Vec<PortMapping> = Vec::new();
    let fail = |st: &mut State, done: &[PortMapping], e: ApiError| -> ApiResult<Vec<PortMapping>> {
        release_ports(st, done);
        Err(e)
    };
    let (lo, hi) = crate::ports::ephemeral_range();
    let reserved = crate::ports::reserved_ports();
    for (proto_s, host_ip, start, end, cport) in specs {
        let proto = match proto_s.as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => return fail(st, &done, ApiError::bad(format!("unsupported protocol {other}"))),
        };
        // Candidate ports: the given one, a range (first free), or ephemeral.
        let candidates: Box<dyn Iterator<Item = u16>> = if *start == 0 {
            Box::new((lo..=hi).filter(|p| !reserved.contains(p)))
        } else {
            Box::new(*start..=(*end).max(*start))
        };
        let mut got = None;
        let mut last_err = None;
        for port in candidates {
            if st.allocator.is_allocated(proto, *host_ip, port) {
                last_err = Some(format!("Bind for {host_ip}:{port} failed: port is already allocated"));
                continue;
            }
            match bind_host_port(proto, *host_ip, port) {
                Ok(sock) => {
                    st.allocator.mark(proto, *host_ip, port);
                    st.held.insert((proto, *host_ip, port), sock);
                    got = Some(port);
                    break;
                }
                Err(e) => {
                    last_err = Some(if e.kind() == std::io::ErrorKind::AddrInUse {
                        format!("Bind for {host_ip}:{port} failed: port is already allocated")
                    } else if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                        format!(
                            "failed to bind host port {host_ip}:{port}/{}: cannot assign requested address",
                            proto.as_str()
                        )
                    } else {
                        format!("failed to bind host port {host_ip}:{port}/{}: {e}", proto.as_str())
                    });
                    if *start != 0 && start == end {
                        break;
                    }
                }
            }
        }
        match got {
            Some(port) => done.push(PortMapping {
                proto,
                host_ip: *host_ip,
                host_port: port,
                container_ip,
                container_port: *cport,
                network_index: net_index,
            }),
            None => {
                let msg = if *start == 0 {
                    "all ports are allocated".to_string()
                } else {
                    last_err.unwrap_or_else(|| "all ports are allocated".into())
                };
                return fail(st, &done, ApiError::internal(msg));
            }
        }
    }
    Ok(done)
}

pub fn release_ports(st: &mut State, maps: &[PortMapping]) {
    for m in maps {
        st.allocator.unmark(m.proto, m.host_ip, m.host_port);
        st.held.remove(&(m.proto, m.host_ip, m.host_port));
        if let Some(t) = st.proxies.remove(&(m.proto, m.host_ip, m.host_port)) {
            t.abort();
        }
    }
}

/// With the iptables dataplane and `--userland-proxy` (Docker's default), serve each binding
/// from its held socket: loopback and hairpin traffic, which iptables does not NAT, reach the
/// sandbox through the daemon.
pub fn start_proxies(cfg: &super::Config, st: &mut State, maps: &[PortMapping]) {
    if cfg.up.dataplane != crate::dataplane::Backend::Iptables || !cfg.up.userland_proxy {
        return;
    }
    for m in maps {
        let key = (m.proto, m.host_ip, m.host_port);
        if st.proxies.contains_key(&key) {
            continue;
        }
        // Routed networks publish container ports directly: no host port to proxy.
        let routed = st.networks.values().any(|n| {
            n.bridge
                .as_ref()
                .is_some_and(|b| b.index == m.network_index && b.gateway_mode == crate::dataplane::GatewayMode::Routed)
        });
        if routed {
            continue;
        }
        let target = SocketAddrV4::new(m.container_ip, m.container_port);
        let r = match st.held.remove(&key) {
            Some(HeldSocket::TcpRaw(fd)) => super::proxy::tcp(fd, target),
            Some(HeldSocket::Udp(s)) => super::proxy::udp(s, target),
            None => continue,
        };
        match r {
            Ok(h) => {
                st.proxies.insert(key, h);
            }
            Err(e) => tracing::warn!(port = m.host_port, error = %e, "userland proxy"),
        }
    }
}

/// Pick the default bridge's subnet like Docker: `--bip` as given, else 172.17.0.1/16 unless
/// it overlaps a route of the host, else the first free subnet of the default pools.
pub fn default_bridge_subnet(bip: Option<&str>, routes: &[Ipv4Net]) -> Result<(Ipv4Net, Ipv4Addr), String> {
    if let Some(bip) = bip {
        let (net, gw) = ipam::parse_bip(bip).map_err(|e| e.to_string())?;
        return Ok((net, gw));
    }
    let pools = ipam::default_pools();
    let net = ipam::pick_free_subnet(&pools, routes)
        .ok_or("no free subnet in the default address pools for the default bridge")?;
    Ok((net, net.first_host()))
}

/// Ids of the predefined networks are kept across restarts.
pub fn predefined(networks: &mut BTreeMap<String, Network>) -> Vec<Network> {
    let mut added = Vec::new();
    for (name, driver) in [("host", "host"), ("none", "null")] {
        if !networks.values().any(|n| n.name == name) {
            let n = Network {
                id: crate::names::new_id(),
                name: name.into(),
                driver: driver.into(),
                created: crate::model::rfc3339_now().0,
                default_bridge: false,
                bridge: None,
                internal: false,
                options: BTreeMap::new(),
            };
            networks.insert(n.id.clone(), n.clone());
            added.push(n);
        }
    }
    added
}
