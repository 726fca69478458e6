//! The daemon side of `netd-cni`: the `/cni/add`, `/cni/del`, `/cni/check` and `/cni/gc`
//! endpoints, thin over the attachment core (`attach.rs`). The container's network namespace
//! arrives as a descriptor with the request ([`crate::cni::fdpass`]); the core reaches it as
//! `/proc/self/fd/N` for the duration of the request, and the record keeps the runtime's path.
//!
//! CNI attachments publish their ports reserve-only (`PortOpts::RESERVE_ONLY`): netd's allocator
//! and the dataplane, no held socket and no userland proxy (a rootful podman's conmon holds the
//! host ports itself); the iptables dataplane gives them the proxy-less rules per binding
//! ([`crate::dataplane::PortMapping::unproxied`]).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, OwnedFd},
    path::PathBuf,
};

use super::{
    ApiError, Shared,
    attach::{self, AddressRequest, AttachRequest},
};
use crate::{
    api::{self, NetworkCreateRequest},
    cni::{
        spec::code,
        wire::{
            self, AddRequest, AddResponse, CheckRequest, CniOwner, DelRequest, GcRequest, GcResponse, Iface, Route,
        },
    },
    dataplane::Proto,
    model::{Owner, PortOpts, PortRequest},
};

/// An error of a `/cni/*` endpoint: HTTP status, message and the CNI code the plugin reports.
#[derive(Debug)]
pub struct CniApiError {
    pub status: u16,
    pub code: u32,
    pub message: String,
}

impl CniApiError {
    fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

type CniResult<T> = Result<T, CniApiError>;

/// Serve one `/cni/*` request; `fd` is the descriptor that came with it, if any.
pub async fn serve(d: &Shared, req: &api::Request, fd: Option<OwnedFd>) -> (u16, Vec<u8>) {
    fn body<T: serde::de::DeserializeOwned>(b: &[u8]) -> CniResult<T> {
        api::decode_json(b).map_err(|e| CniApiError::new(400, code::DECODE, e))
    }
    let r: CniResult<serde_json::Value> = match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/cni/add") => match body::<AddRequest>(&req.body) {
            Ok(r) => add(d, r, fd).await.map(|v| serde_json::to_value(v).unwrap_or_default()),
            Err(e) => Err(e),
        },
        ("POST", "/cni/del") => match body::<DelRequest>(&req.body) {
            Ok(r) => del(d, r).await.map(|_| serde_json::json!({})),
            Err(e) => Err(e),
        },
        ("POST", "/cni/check") => match body::<CheckRequest>(&req.body) {
            Ok(r) => check(d, r, fd).await.map(|_| serde_json::json!({})),
            Err(e) => Err(e),
        },
        ("POST", "/cni/gc") => match body::<GcRequest>(&req.body) {
            Ok(r) => gc(d, r).await.map(|v| serde_json::to_value(v).unwrap_or_default()),
            Err(e) => Err(e),
        },
        _ => Err(CniApiError::new(404, code::INTERNAL, format!("page not found: {} {}", req.method, req.path))),
    };
    match r {
        Ok(v) => (200, serde_json::to_vec(&v).unwrap_or_default()),
        Err(e) => {
            let b = wire::ErrorBody { message: e.message, cni_code: Some(e.code) };
            (e.status, serde_json::to_vec(&b).unwrap_or_default())
        }
    }
}

fn owner(o: &CniOwner) -> Owner {
    Owner::Cni { container_id: o.container_id.clone(), ifname: o.ifname.clone(), config_name: o.config_name.clone() }
}

/// The descriptor must be a network namespace (`NS_GET_NSTYPE`).
fn netns_path(fd: Option<&OwnedFd>) -> CniResult<PathBuf> {
    let fd = fd.ok_or_else(|| {
        CniApiError::new(
            400,
            code::INVALID_ENV,
            "the container's network namespace must come with the request (SCM_RIGHTS)",
        )
    })?;
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl without arguments on a descriptor we own.
    let t = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if t != libc::CLONE_NEWNET {
        return Err(CniApiError::new(400, code::UNKNOWN_CONTAINER, "CNI_NETNS is not a network namespace"));
    }
    Ok(PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
}

fn fmt_mac(m: [u8; 6]) -> String {
    super::handlers::fmt_mac(m)
}

/// The netd network the config names; created from the config's keys when missing.
async fn ensure_network(d: &Shared, r: &AddRequest) -> CniResult<()> {
    {
        let st = d.state.lock().await;
        if d.resolve_network_exact(&st, &r.network).is_ok() {
            return Ok(());
        }
    }
    let c = &r.create;
    if !c.any() {
        return Err(CniApiError::new(
            404,
            code::NO_SUCH_NETWORK,
            format!(
                "network {} not found: create it with `netd network create {}`, or give \"subnet\" (and \"gateway\", \"icc\", \"internal\", \"mtu\" as needed) in the CNI config",
                r.network, r.network
            ),
        ));
    }
    let mut options = BTreeMap::new();
    if let Some(icc) = c.icc {
        options.insert("com.docker.network.bridge.enable_icc".to_string(), icc.to_string());
    }
    if let Some(mtu) = c.mtu {
        options.insert("com.docker.network.driver.mtu".to_string(), mtu.to_string());
    }
    let req = NetworkCreateRequest {
        name: r.network.clone(),
        driver: "bridge".into(),
        subnet: c.subnet.clone(),
        gateway: c.gateway.clone(),
        ip_range: None,
        internal: c.internal.unwrap_or(false),
        options,
        enable_ipv6: c.ipv6.unwrap_or(false),
        subnet_v6: c.subnet6.clone(),
        gateway_v6: c.gateway6.clone(),
        enable_ipv4: c.ipv4,
        ..Default::default()
    };
    match d.network_create(req).await {
        Ok(_) => Ok(()),
        // Another ADD created it meanwhile.
        Err(e) if e.status == 409 && e.message.contains("already exists") => Ok(()),
        Err(e) => Err(CniApiError::new(
            e.status,
            if e.status == 400 { code::INVALID_CONFIG } else { code::INTERNAL },
            format!("creating network {}: {}", r.network, e.message),
        )),
    }
}

fn attach_error(e: ApiError) -> CniApiError {
    let m = e.message.to_ascii_lowercase();
    let address = m.contains("address already in use")
        || m.contains("no available addresses")
        || m.contains("out of range")
        || m.contains("not in the subnet");
    CniApiError::new(e.status, if address { code::ADDRESS_UNAVAILABLE } else { code::INTERNAL }, e.message)
}

async fn add(d: &Shared, r: AddRequest, fd: Option<OwnedFd>) -> CniResult<AddResponse> {
    let ns = netns_path(fd.as_ref())?;
    let bad = |m: String| CniApiError::new(400, code::INVALID_CONFIG, m);
    let address = match &r.ip {
        Some(s) => AddressRequest::Static(s.parse::<Ipv4Addr>().map_err(|_| bad(format!("invalid address {s:?}")))?),
        None => AddressRequest::Pool,
    };
    let ip6 = match &r.ip6 {
        Some(s) => Some(s.parse::<Ipv6Addr>().map_err(|_| bad(format!("invalid address {s:?}")))?),
        None => None,
    };
    let mac = r.mac.as_deref().map(crate::ipam::parse_mac).transpose().map_err(|e| bad(e.to_string()))?;
    let mut ports = Vec::with_capacity(r.port_mappings.len());
    for p in &r.port_mappings {
        let proto = match p.protocol.as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => return Err(bad(format!("unsupported protocol {other:?}"))),
        };
        let host_ip = match p.host_ip.as_str() {
            "" => None,
            s => Some(s.parse::<std::net::IpAddr>().map_err(|_| bad(format!("invalid IP address: {s}")))?),
        };
        ports.push(PortRequest {
            proto,
            host_ip,
            host_port_start: p.host_port,
            host_port_end: p.host_port,
            container_port: p.container_port,
        });
    }
    ensure_network(d, &r).await?;
    // The state lock is held only to check, to reserve the address and host ports and to
    // commit; the veth, the namespace's configuration, the dataplane and the resolver's
    // sockets are made without it, so ADDs of different containers run in parallel. Calls
    // for one (container, ifname, config) are serialised by its op lock.
    let who = owner(&r.owner);
    let _op = d.op_lock(&attach::attachment_op_key(&who)).await;
    let (net_id, net, b) = {
        let st = d.state.lock().await;
        let net_id = d
            .resolve_network_exact(&st, &r.network)
            .map_err(|e| CniApiError::new(404, code::NO_SUCH_NETWORK, e.message))?;
        let net = st.networks[&net_id].clone();
        let Some(b) = net.bridge.clone() else {
            return Err(bad(format!(
                "network {} is not a bridge network: netd-cni attaches to bridge networks",
                net.name
            )));
        };
        if attach::by_owner(&st, &who).is_some() {
            return Err(CniApiError::new(
                409,
                code::ATTACHMENT_EXISTS,
                format!(
                    "container {} already has interface {} on network {} (config {})",
                    r.owner.container_id, r.owner.ifname, net.name, r.owner.config_name
                ),
            ));
        }
        (net_id, net, b)
    };
    let a = d
        .attach_unlocked(
            AttachRequest {
                id: None,
                owner: who,
                network_id: net_id.clone(),
                netns: Some(ns),
                ifname: r.owner.ifname.clone(),
                address,
                ip6,
                mac,
                default_route: !net.internal,
                family_routes: (false, false),
                aliases: r.names.clone(),
                port_opts: PortOpts::RESERVE_ONLY,
            },
            |st| {
                if st.networks.contains_key(&net_id) {
                    Ok(())
                } else {
                    Err(ApiError::not_found(format!("network {} not found", net.name)))
                }
            },
        )
        .await
        .map_err(attach_error)?;
    if !ports.is_empty()
        && let Err(e) = d.publish_unlocked(&a.id, &ports, &r.owner.container_id).await
    {
        d.detach_unlocked(&a).await;
        let c = if e.message.contains("port is already allocated") { code::PORT_ALLOCATED } else { code::INTERNAL };
        return Err(CniApiError::new(e.status, c, e.message));
    }
    // The iptables dataplane has no userland proxy for these ports: a container reaching its own
    // published port through the host's address needs hairpin mode on its bridge port (as
    // Docker sets it without the proxy). The eBPF dataplane redirects hairpin traffic itself.
    if d.dp.backend() == crate::dataplane::Backend::Iptables
        && let Err(e) = d.nl.set_hairpin(&a.host_veth, true).await
    {
        d.detach_unlocked(&a).await;
        return Err(CniApiError::new(500, code::INTERNAL, format!("setting hairpin mode on {}: {e}", a.host_veth)));
    }
    // Name resolution (user networks): netd's embedded DNS at 127.0.0.11 inside the pod, as for
    // netd's sandboxes, offered in the result (`dns.nameservers`; using it is the runtime's
    // choice). Its upstream sockets are made in the pod's namespace through a descriptor the
    // resolver keeps until DEL.
    let mut nameservers = Vec::new();
    let dns = if net.default_bridge {
        None
    } else {
        match start_dns(d, &a.id, fd.as_ref()) {
            Ok(tasks) => {
                nameservers.push(super::dns::RESOLVER.to_string());
                Some(tasks)
            }
            Err(e) => {
                tracing::warn!(attachment = %a.id, error = %e, "embedded DNS server for a CNI container");
                None
            }
        }
    };
    {
        let mut st = d.state.lock().await;
        if let Some(tasks) = dns {
            st.dns.insert(a.id.clone(), tasks);
        }
        // The record keeps the runtime's path (the descriptor is gone after this request).
        if let Some(x) = st.attachments.get_mut(&a.id) {
            x.netns = Some(PathBuf::from(&r.netns_path));
            let x = x.clone();
            if let Err(e) = d.store.save_attachment(&x) {
                tracing::warn!(attachment = %x.id, error = %e, "saving attachment state");
            }
        }
    }
    let bridge_mac = d.nl.link_mac(&b.bridge).await.ok().flatten().map(fmt_mac).unwrap_or_default();
    let host_mac = d.nl.link_mac(&a.host_veth).await.ok().flatten().map(fmt_mac).unwrap_or_default();
    let mut routes = Vec::new();
    if !net.internal {
        if let Some(g) = a.gateway {
            routes.push(Route { dst: "0.0.0.0/0".into(), gw: Some(g.to_string()) });
        }
        if let Some(g6) = a.gateway6 {
            routes.push(Route { dst: "::/0".into(), gw: Some(g6.to_string()) });
        }
    }
    Ok(AddResponse {
        bridge: Iface { name: b.bridge.clone(), mac: bridge_mac, sandbox: None },
        host: Iface { name: a.host_veth.clone(), mac: host_mac, sandbox: None },
        container: Iface { name: a.ifname.clone(), mac: fmt_mac(a.mac), sandbox: Some(r.netns_path.clone()) },
        address: a.ip.map(|ip| format!("{ip}/{}", a.prefix_len)).unwrap_or_default(),
        gateway: a.gateway.map(|g| g.to_string()),
        address6: a.ip6.map(|x| format!("{x}/{}", a.prefix_len6)),
        gateway6: a.gateway6.map(|g| g.to_string()),
        routes,
        nameservers,
        mtu: b.mtu,
    })
}

/// Serve the embedded DNS inside the namespace of `fd` for attachment `id`: a duplicate of the
/// descriptor stays open (held by one of the returned tasks) so that the resolver can make its
/// upstream sockets there for as long as it runs.
fn start_dns(d: &Shared, id: &str, fd: Option<&OwnedFd>) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>> {
    let fd = fd.ok_or_else(|| std::io::Error::other("no namespace descriptor"))?.try_clone()?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let mut tasks = super::dns::start(d.clone(), id.to_string(), path)?;
    tasks.push(tokio::spawn(async move {
        let _keep = fd;
        std::future::pending::<()>().await
    }));
    Ok(tasks)
}

/// After a restart: the embedded DNS of an adopted CNI attachment on a user network, through
/// the runtime's namespace path when the daemon can open it (a path in another mount namespace,
/// as podman's, cannot be: that container's resolver stays down until its next ADD).
pub fn restart_dns(d: &Shared, st: &mut super::State, id: &str, netns: Option<&std::path::Path>) {
    let Some(a) = st.attachments.get(id) else { return };
    if st.networks.get(&a.network_id).is_none_or(|n| n.default_bridge) || st.dns.contains_key(id) {
        return;
    }
    let Some(path) = netns else { return };
    let fd = match std::fs::File::open(path) {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            tracing::info!(attachment = %id, netns = %path.display(), error = %e, "CNI container's namespace not reachable: no resolver");
            return;
        }
    };
    if netns_path(Some(&fd)).is_err() {
        return;
    }
    match start_dns(d, id, Some(&fd)) {
        Ok(tasks) => {
            st.dns.insert(id.to_string(), tasks);
        }
        Err(e) => tracing::warn!(attachment = %id, error = %e, "embedded DNS server for a CNI container"),
    }
}

/// DEL: idempotent; succeeds when the attachment (or its namespace) is already gone.
/// The dataplane (and its conntrack purge) and the veth are removed without the state lock.
async fn del(d: &Shared, r: DelRequest) -> CniResult<()> {
    let who = owner(&r.owner);
    let key = attach::attachment_op_key(&who);
    let op = d.op_lock(&key).await;
    let a = attach::by_owner(&*d.state.lock().await, &who).cloned();
    if let Some(a) = a {
        d.detach_unlocked(&a).await;
    }
    drop(op);
    d.op_forget(&key);
    Ok(())
}

async fn check(d: &Shared, r: CheckRequest, fd: Option<OwnedFd>) -> CniResult<()> {
    let ns = netns_path(fd.as_ref())?;
    let failed = |m: String| CniApiError::new(500, code::CHECK_FAILED, m);
    let st = d.state.lock().await;
    let a = attach::by_owner(&st, &owner(&r.owner)).cloned().ok_or_else(|| {
        CniApiError::new(
            404,
            code::UNKNOWN_CONTAINER,
            format!("no attachment of container {} with interface {}", r.owner.container_id, r.owner.ifname),
        )
    })?;
    let have = a.ip.map(|ip| format!("{ip}/{}", a.prefix_len)).unwrap_or_default();
    if let Some(want) = &r.address
        && *want != have
    {
        return Err(failed(format!("prevResult has address {want}, the attachment has {have}")));
    }
    let have6 = a.ip6.map(|x| format!("{x}/{}", a.prefix_len6));
    if r.address6.is_some() && r.address6 != have6 {
        return Err(failed(format!(
            "prevResult has address {}, the attachment has {}",
            r.address6.as_deref().unwrap_or(""),
            have6.as_deref().unwrap_or("no IPv6 address")
        )));
    }
    // Host side: the veth exists and is on the network's bridge.
    let bridge = st.networks.get(&a.network_id).and_then(|n| n.bridge.as_ref()).map(|b| b.bridge.clone());
    let ports = a.ports.clone();
    let allocated = ports.iter().all(|m| st.allocator.is_allocated(m.proto, m.host_ip, m.host_port));
    drop(st);
    let bridge = bridge.ok_or_else(|| failed(format!("network {} is gone", a.network_id)))?;
    let bidx = d.nl.link_index(&bridge).await.map_err(|e| failed(e.to_string()))?;
    if d.nl.link_index(&a.host_veth).await.map_err(|e| failed(e.to_string()))?.is_none() {
        return Err(failed(format!("host interface {} is missing", a.host_veth)));
    }
    let master = d.nl.master_of(&a.host_veth).await.map_err(|e| failed(e.to_string()))?;
    if bidx.is_none() || master != bidx {
        return Err(failed(format!("host interface {} is not on bridge {bridge}", a.host_veth)));
    }
    // Published ports: still reserved in netd's allocator.
    if !allocated {
        return Err(failed("a published host port is no longer reserved".into()));
    }
    let ifname = a.ifname.clone();
    let nsp = ns.clone();
    let inside = tokio::task::spawn_blocking(move || crate::netlink::iface_in(&nsp, &ifname))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?
        .ok_or_else(|| failed(format!("interface {} is missing in the container", a.ifname)))?;
    if a.ip.is_some_and(|ip| !inside.addrs.contains(&(ip, a.prefix_len))) {
        return Err(failed(format!("interface {} does not have address {have}", a.ifname)));
    }
    if inside.mac != a.mac {
        return Err(failed(format!(
            "interface {} has MAC {}, the attachment has {}",
            a.ifname,
            fmt_mac(inside.mac),
            fmt_mac(a.mac)
        )));
    }
    if let Some(a6) = a.ip6
        && !inside.addrs6.contains(&(a6, a.prefix_len6))
    {
        return Err(failed(format!("interface {} does not have address {a6}/{}", a.ifname, a.prefix_len6)));
    }
    if a.default_route
        && let Some(g6) = a.gateway6
        && inside.default_gw6 != Some(g6)
    {
        return Err(failed(format!(
            "no default IPv6 route via {g6} on {} in the container (found {:?})",
            a.ifname, inside.default_gw6
        )));
    }
    if a.default_route
        && let Some(g) = a.gateway
        && inside.default_gw != Some(g)
    {
        return Err(failed(format!(
            "no default route via {g} on {} in the container (found {:?})",
            a.ifname, inside.default_gw
        )));
    }
    // The dataplane: the endpoint, the network and every binding, as the kernel holds them.
    let (a, net) = {
        let st = d.state.lock().await;
        let a = st.attachments.get(&a.id).cloned().ok_or_else(|| failed("the attachment went away".into()))?;
        let net = st.networks.get(&a.network_id).cloned();
        (a, net)
    };
    let missing = d.dataplane_missing(net.as_ref(), &a).await.map_err(failed)?;
    if !missing.is_empty() {
        return Err(failed(format!(
            "the {} dataplane lacks what this container needs: {}",
            d.cfg.up.dataplane,
            missing.join("; ")
        )));
    }
    Ok(())
}

/// GC: remove this config's attachments that the runtime no longer lists. Never touches
/// netd's sandboxes or Docker's endpoints, nor another config's attachments.
async fn gc(d: &Shared, r: GcRequest) -> CniResult<GcResponse> {
    let valid: BTreeSet<(String, String)> = r.valid.into_iter().collect();
    let victims: Vec<_> = attach::attachments_of(&*d.state.lock().await, |o| match o {
        Owner::Cni { container_id, ifname, config_name } => {
            *config_name == r.config_name && !valid.contains(&(container_id.clone(), ifname.clone()))
        }
        _ => false,
    })
    .cloned()
    .collect();
    let mut out = GcResponse::default();
    for a in victims {
        let key = attach::attachment_op_key(&a.owner);
        let op = d.op_lock(&key).await;
        // Removed meanwhile (a DEL).
        if !d.state.lock().await.attachments.contains_key(&a.id) {
            continue;
        }
        d.detach_unlocked(&a).await;
        drop(op);
        d.op_forget(&key);
        if let Owner::Cni { container_id, ifname, config_name } = &a.owner {
            out.removed.push(CniOwner {
                container_id: container_id.clone(),
                ifname: ifname.clone(),
                config_name: config_name.clone(),
            });
        }
    }
    Ok(out)
}
