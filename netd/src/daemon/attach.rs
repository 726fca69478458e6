//! The attachment core: a network namespace (or, until its owner moves it, a veth peer left in
//! the daemon's namespace) joined to a netd network through a veth pair, with its address, MAC,
//! published ports and names. netd's own sandboxes (`containers.rs`), the Docker remote driver
//! and the CNI plugin are thin front-ends over these operations; none of them touches netlink,
//! IPAM, the port allocator or the dataplane directly.
//!
//! API (methods on [`Daemon`], all called with the state lock held, each all-or-nothing):
//! - [`Daemon::attach`]`(st, AttachRequest)` → [`Attachment`]: allocate the address
//!   ([`AddressRequest::Pool`], `Static(ip)` or `External(ip)` for an outside IPAM such as
//!   Docker's), create `veth<7hex>` + peer `vp<7hex>`, enslave the host side to the network's
//!   bridge, then either move the peer into `netns` and configure it there (name `ifname`, MAC,
//!   MTU, address, default route when `default_route`, `lo` up) or leave it in the daemon's
//!   namespace under its temporary name with its MAC set (`netns: None`, Docker moves and renames
//!   it), and tell the dataplane. The attachment is registered in `State::attachments` and,
//!   unless the owner is a sandbox, persisted as `<data-root>/attachments/<id>.json`.
//! - [`Daemon::publish`]`(st, id, &[PortRequest], name)` → the actual bindings: host ports from
//!   netd's allocator (exact, range = first free, 0 = ephemeral from `ip_local_port_range`),
//!   held sockets and the userland proxy as [`PortOpts`] says (`PortOpts::RESERVE_ONLY` for CNI),
//!   then the dataplane. Errors are Docker's (`Bind for 0.0.0.0:8080 failed: port is already
//!   allocated`). [`Daemon::unpublish`] removes bindings (all or some).
//! - [`Daemon::detach`]`(st, &Attachment)`: ports, dataplane, veth (the peer goes with it,
//!   wherever it is), address, record. Best effort, idempotent, also for an attachment that is
//!   not registered (a crash left it half made).
//! - [`Daemon::check_attachment`]: the host veth exists on the right bridge and, with a netns,
//!   the interface inside it has the address (CNI CHECK).
//! - Lookups: [`attachments_of`] (by owner kind/predicate), [`by_owner`], `st.attachments[id]`.
//! - Restart: [`Daemon::adopt`] replays one attachment (addresses, ports, dataplane);
//!   [`Daemon::reconcile_attachments`] loads the persisted ones and adopts those whose host veth
//!   still exists (the others' netns went away with their container: the record is dropped).
//!   A sandbox's attachments are persisted in its container record instead, committed with its
//!   process, and adopted by the sandbox reconcile.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsFd,
    path::PathBuf,
};

use super::{ApiError, ApiResult, Daemon, HeldSocket, Shared, State};
use crate::{
    dataplane::{EndpointSpec, NetworkSpec, PortMapping, Proto},
    ipam,
    model::{AddressSource, Attachment, Owner, PortOpts, PortRequest},
};

/// Where an attachment's IPv4 address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRequest {
    /// The lowest free address of the network's range (netd's IPAM).
    Pool,
    /// This address, which must be inside the subnet and free.
    Static(Ipv4Addr),
    /// Allocated by an outside IPAM (Docker's): must be inside the subnet; recorded as used.
    External(Ipv4Addr),
}

/// What [`Daemon::attach`] needs.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    /// The attachment id (Docker's EndpointID); `None`: a new 64-hex id.
    pub id: Option<String>,
    pub owner: Owner,
    pub network_id: String,
    /// Move the peer into this namespace (a bind mount or `/proc/PID/ns/net`); `None`: leave it in
    /// the daemon's namespace under its temporary name.
    pub netns: Option<PathBuf>,
    /// The peer's name inside `netns` (ignored without one).
    pub ifname: String,
    pub address: AddressRequest,
    /// `--ip6`: this IPv6 address on a dual-stack network (else the lowest free one of its v6
    /// range); refused on an IPv4-only network.
    pub ip6: Option<Ipv6Addr>,
    /// `None`: Docker's `02:42:` + the IPv4 bytes.
    pub mac: Option<[u8; 6]>,
    /// Add a default route via the network's gateway inside `netns`.
    pub default_route: bool,
    /// A default route of one family (v4, v6) even without `default_route`: no earlier network
    /// of the sandbox has that family (Docker 28 picks each family's gateway on its own, e.g.
    /// the v4 one of an IPv4 network joined after an IPv6-only one).
    pub family_routes: (bool, bool),
    pub aliases: Vec<String>,
    pub port_opts: PortOpts,
}

/// An attachment's network and address, reserved under the state lock while its kernel
/// objects are made without it ([`Daemon::attach_reserve`]).
pub struct Reserved {
    pub req: AttachRequest,
    net: crate::model::Network,
    b: crate::model::BridgeNet,
    /// The v4 address (`None` on an IPv6-only network).
    pub ip: Option<Ipv4Addr>,
    /// On a dual-stack network: (address, prefix length, gateway, source).
    v6: Option<(Ipv6Addr, u8, Ipv6Addr, AddressSource)>,
    source: AddressSource,
}

/// Give a reservation's addresses back (its attachment never came up).
pub fn attach_release(st: &mut State, r: &Reserved) {
    if let (Some(ip), Some(p)) = (r.ip, st.pools.get_mut(&r.net.id)) {
        p.release(ip);
    }
    if let (Some((a6, ..)), Some(p)) = (r.v6, st.pools6.get_mut(&r.net.id)) {
        p.release(a6);
    }
}

/// Host ports allocated for a publish, to be programmed into the dataplane
/// ([`Publishing::program`], no state lock needed) and committed ([`Daemon::publish_commit`]).
pub struct Publishing {
    spec: NetworkSpec,
    pub maps: Vec<PortMapping>,
    proxy: bool,
    /// NAT46 bindings on the eBPF dataplane with `--ip-forward`: IPv6 forwarding turned on
    /// ([`super::networks::ensure_ipv6_forwarding`]) when they are programmed.
    v6_forward: bool,
    /// NAT46 bindings of a v4-only sandbox: (namespace, interface, v4 gateway, MTU - 28), the
    /// route to its NAT46 peer ([`crate::netlink::set_peer_mtu`]) set when they are programmed.
    peer_mtu: Option<(std::path::PathBuf, String, Ipv4Addr, u32)>,
    /// Time spent so far (lock waits excluded).
    took: std::time::Duration,
}

impl Publishing {
    /// Phase 2 of [`Daemon::publish`]: the dataplane. On failure the caller unreserves the
    /// ports ([`unreserve_ports`]).
    pub fn program(&mut self, dp: &super::Dp, name: &str) -> ApiResult<()> {
        let t0 = std::time::Instant::now();
        dp.ports_added(&self.spec, &self.maps).map_err(|e| {
            ApiError::internal(format!("driver failed programming external connectivity on endpoint {name}: {e}"))
        })?;
        if self.v6_forward
            && let Err(e) = super::networks::ensure_ipv6_forwarding()
        {
            tracing::warn!(error = %e, "NAT46 bindings need IPv6 forwarding");
        }
        if let Some((ns, ifname, gw, mtu)) = &self.peer_mtu
            && let Err(e) = crate::netlink::set_peer_mtu(ns, ifname, *gw, *mtu)
        {
            tracing::warn!(error = %e, %gw, mtu, "the NAT46 peer's route MTU in the sandbox (its datagrams over the MTU cannot go back to IPv6 clients)");
        }
        super::crash_point("publish:programmed");
        self.took += t0.elapsed();
        Ok(())
    }
}

/// Docker 27+'s unsolicited ARP / neighbour advertisements for the sandbox's new interface
/// ([`crate::advertise`]): the first now, the rest `advertise_addr_ms` apart in the
/// background. Best effort: a failure is logged, the attachment stands.
async fn advertise_addrs(
    netns: &std::path::Path,
    ifname: &str,
    mac: [u8; 6],
    ip: Option<Ipv4Addr>,
    ip6: Option<Ipv6Addr>,
    opts: &std::collections::BTreeMap<String, String>,
) {
    let (n, interval) = crate::advertise::options(opts)
        .unwrap_or((crate::advertise::NMSGS_DEFAULT, crate::advertise::INTERVAL_DEFAULT));
    if n == 0 {
        return;
    }
    let (ns, name) = (netns.to_path_buf(), ifname.to_string());
    let s = match tokio::task::spawn_blocking(move || crate::advertise::Sender::open(&ns, &name, mac, ip, ip6)).await {
        Ok(Ok(Some(s))) => s,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::warn!(%ifname, error = %e, "unsolicited ARP/NA: opening the socket");
            return;
        }
        Err(e) => {
            tracing::warn!(%ifname, error = %e, "unsolicited ARP/NA: opening the socket");
            return;
        }
    };
    if let Err(e) = s.send() {
        tracing::warn!(%ifname, error = %e, "unsolicited ARP/NA");
        return;
    }
    if n > 1 {
        tokio::spawn(async move {
            for _ in 1..n {
                tokio::time::sleep(interval).await;
                // The interface is gone (the sandbox left): done.
                if s.send().is_err() {
                    break;
                }
            }
        });
    }
}

/// A network's dataplane spec and index (`None`: gone, or not a bridge network).
pub fn net_of(st: &State, id: &str) -> Option<(NetworkSpec, u32)> {
    let n = st.networks.get(id)?;
    Some((n.spec(0)?, n.bridge.as_ref()?.index))
}

/// Every attachment whose owner matches.
pub fn attachments_of<'a>(st: &'a State, f: impl Fn(&Owner) -> bool + 'a) -> impl Iterator<Item = &'a Attachment> + 'a {
    st.attachments.values().filter(move |a| f(&a.owner))
}

/// The attachment of exactly this owner.
pub fn by_owner<'a>(st: &'a State, owner: &Owner) -> Option<&'a Attachment> {
    st.attachments.values().find(|a| &a.owner == owner)
}

fn endpoint_spec(a: &Attachment, network_index: u32) -> EndpointSpec {
    EndpointSpec {
        container_id: a.owner.key().to_string(),
        network_index,
        host_veth: a.host_veth.clone(),
        host_ifindex: a.host_ifindex,
        ip: a.ip,
        ip6: a.ip6,
        mac: a.mac,
    }
}

impl Daemon {
    fn persist_attachment(&self, a: &Attachment) {
        if !a.owner.is_sandbox()
            && let Err(e) = self.store.save_attachment(a)
        {
            tracing::warn!(attachment = %a.id, error = %e, "saving attachment state");
        }
    }

    /// Join a namespace (or a veth peer for its owner to move) to a network. Undone on failure.
    /// Holds the state lock throughout (the sandbox start runs the three phases itself:
    /// [`Daemon::attach_reserve`] and [`Daemon::attach_commit`] under the lock,
    /// [`Daemon::attach_kernel`] without it).
    pub async fn attach(self: &Shared, st: &mut State, req: AttachRequest) -> ApiResult<Attachment> {
        let r = self.attach_reserve(st, req)?;
        let dp = st.dp.clone();
        let a = match self.attach_kernel(&dp, &r).await {
            Ok(a) => a,
            Err(e) => {
                attach_release(st, &r);
                return Err(e);
            }
        };
        self.attach_commit(st, &r, a).await
    }

    /// Phase 1 of [`Daemon::attach`] (state lock held): the network and the address.
    pub fn attach_reserve(&self, st: &mut State, req: AttachRequest) -> ApiResult<Reserved> {
        let net = st
            .networks
            .get(&req.network_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("network {} not found", req.network_id)))?;
        let b = net.bridge.clone().ok_or_else(|| ApiError::bad(format!("network {} has no bridge", net.name)))?;
        let (ip, source) = match (&b.ipv4, Self::pool_for(&b)) {
            (Some(v4), Some(fresh)) => {
                let pool = st.pools.entry(req.network_id.clone()).or_insert(fresh);
                let (ip, source) = match req.address {
                    AddressRequest::Pool => {
                        (pool.allocate().map_err(|e| ApiError::internal(e.to_string()))?, AddressSource::Pool)
                    }
                    AddressRequest::Static(ip) => {
                        (pool.allocate_static(ip).map_err(|e| ApiError::bad(e.to_string()))?, AddressSource::Static)
                    }
                    AddressRequest::External(ip) => {
                        pool.restore(ip).map_err(|_| {
                            ApiError::bad(format!("address {ip} is not in the subnet {}/{}", v4.subnet, v4.prefix_len))
                        })?;
                        (ip, AddressSource::External)
                    }
                };
                (Some(ip), source)
            }
            // An IPv6-only network: no v4 address to give or to take (Docker's
            // `validateEndpointIPAddress` with no v4 pool).
            _ => match req.address {
                AddressRequest::Pool => (None, AddressSource::Pool),
                AddressRequest::Static(ip) | AddressRequest::External(ip) => {
                    return Err(ApiError::bad(format!(
                        "invalid endpoint settings:\nno configured subnet contains IP address {ip}"
                    )));
                }
            },
        };
        let net_id = req.network_id.clone();
        // The v6 address on a dual-stack network (static `--ip6`, else the lowest free).
        let v6 = match (&b.ipv6, req.ip6) {
            (None, None) => None,
            (None, Some(_)) => {
                if let (Some(ip), Some(p)) = (ip, st.pools.get_mut(&net_id)) {
                    p.release(ip);
                }
                return Err(ApiError::bad(format!(
                    "invalid endpoint settings:\nuser specified IPv6 address is not supported: IPv6 is not enabled on network {}",
                    net.name
                )));
            }
            (Some(v6), want) => {
                let pool6 = st.pools6.entry(net_id.clone()).or_insert_with(|| Self::pool6_for(v6));
                let r = match want {
                    Some(w) => pool6
                        .allocate_static(w)
                        .map(|a| (a, AddressSource::Static))
                        .map_err(|e| ApiError::bad(e.to_string())),
                    None => pool6
                        .allocate()
                        .map(|a| (a, AddressSource::Pool))
                        .map_err(|e| ApiError::internal(e.to_string())),
                };
                match r {
                    Ok((a6, src)) => Some((a6, v6.prefix_len, v6.gateway, src)),
                    Err(e) => {
                        if let (Some(ip), Some(p)) = (ip, st.pools.get_mut(&net_id)) {
                            p.release(ip);
                        }
                        return Err(e);
                    }
                }
            }
        };
        Ok(Reserved { req, net, b, ip, v6, source })
    }

    /// Phase 2 of [`Daemon::attach`] (no state lock needed): the veth pair, the peer's
    /// namespace and configuration, the dataplane's endpoint. On failure the veth is gone again
    /// (the address stays reserved: [`attach_release`]).
    pub async fn attach_kernel(&self, dp: &super::Dp, r: &Reserved) -> ApiResult<Attachment> {
        let (req, b, ip, v6) = (&r.req, &r.b, r.ip, r.v6);
        let mac = req.mac.unwrap_or_else(|| ipam::mac_for(ip));
        let suffix: String = crate::names::new_id()[..7].to_string();
        let host_veth = format!("veth{suffix}");
        let peer_tmp = format!("vp{suffix}");
        let ifname = if req.netns.is_some() { req.ifname.clone() } else { peer_tmp.clone() };
        let bridge_ifindex = self.nl.link_index(&b.bridge).await.ok().flatten().unwrap_or(0);
        super::steps::mark("ep:bridge-index");
        let res: Result<u32, String> = async {
            let ns = match &req.netns {
                Some(p) => Some(std::fs::File::open(p).map_err(|e| format!("opening {}: {e}", p.display()))?),
                None => None,
            };
            if bridge_ifindex == 0 {
                return Err(format!("bridge {} not found", b.bridge));
            }
            // The pair in one request: the host end on the bridge, the peer inside the
            // sandbox's namespace under its final name and MAC (for a Docker endpoint, which
            // Docker moves itself, under a temporary name here).
            let host_index = self
                .nl
                .create_veth_on_bridge(
                    &host_veth,
                    bridge_ifindex,
                    b.mtu,
                    &ifname,
                    mac,
                    ns.as_ref().map(|f| f.as_fd()),
                    self.teardown_group(),
                )
                .await
                .map_err(|e| format!("creating veth: {e}"))?;
            // No IPv6 on the host end (a bridge port needs none), and on an IPv4-only network
            // none on the sandbox's end either, as Docker 26+ does, so sandboxes cannot talk
            // link-local IPv6 past --icc=false.
            crate::netlink::disable_ipv6(&host_veth);
            super::steps::mark("ep:veth");
            super::crash_point("run:veth-created");
            // iptables without the userland proxy: a sandbox reaching its own published port
            // through a host address is DNATed back out of the port it came in by, which needs
            // the bridge port's hairpin mode (Docker sets it then). eBPF redirects hairpin itself.
            if !self.cfg.up.userland_proxy && dp.backend() == crate::dataplane::Backend::Iptables {
                self.nl.set_hairpin(&host_veth, true).await.map_err(|e| format!("hairpin mode on {host_veth}: {e}"))?;
            }
            if let Some(netns) = &req.netns {
                let iface = crate::netlink::SandboxIface {
                    tmp_name: ifname.clone(),
                    name: ifname.clone(),
                    mac,
                    addr: ip.zip(b.ipv4.as_ref().map(|v| v.prefix_len)),
                    mtu: b.mtu,
                    gateway: b.ipv4.as_ref().filter(|_| req.default_route || req.family_routes.0).map(|v| v.gateway),
                    disable_ipv6: true,
                    addr6: v6.map(|(a, p, _, _)| (a, p)),
                    gateway6: v6.filter(|_| req.default_route || req.family_routes.1).map(|(_, _, g, _)| g),
                };
                let ns = netns.clone();
                tokio::task::spawn_blocking(move || crate::netlink::configure_sandbox(&ns, Some(iface)))
                    .await
                    .map_err(|e| format!("configuring {ifname}: {e}"))?
                    .map_err(|e| format!("configuring {ifname}: {e}"))?;
            }
            super::steps::mark("ep:configure");
            self.nl.set_up_index(host_index).await.map_err(|e| format!("setting {host_veth} up: {e}"))?;
            super::steps::mark("ep:up");
            Ok(host_index)
        }
        .await;
        let host_ifindex = match res {
            Ok(i) => i,
            Err(e) => {
                let _ = self.nl.delete_link(&host_veth).await;
                return Err(ApiError::internal(format!(
                    "failed to set up endpoint for {} on {}: {e}",
                    req.owner.key(),
                    r.net.name
                )));
            }
        };
        let a = Attachment {
            id: req.id.clone().unwrap_or_else(crate::names::new_id),
            owner: req.owner.clone(),
            network_id: r.net.id.clone(),
            host_veth: host_veth.clone(),
            host_ifindex,
            netns: req.netns.clone(),
            ifname,
            ip,
            prefix_len: b.ipv4.as_ref().filter(|_| ip.is_some()).map_or(0, |v| v.prefix_len),
            gateway: b.ipv4.as_ref().filter(|_| ip.is_some()).map(|v| v.gateway),
            ip6: v6.map(|x| x.0),
            prefix_len6: v6.map_or(0, |x| x.1),
            gateway6: v6.map(|x| x.2),
            source6: v6.map(|x| x.3),
            mac,
            source: r.source,
            default_route: req.default_route && req.netns.is_some(),
            ports: Vec::new(),
            port_opts: req.port_opts,
            aliases: req.aliases.clone(),
            created: crate::model::rfc3339_now().0,
        };
        let spec = r.net.spec(bridge_ifindex).expect("bridge");
        if let Err(e) = dp.endpoint_added(&spec, &endpoint_spec(&a, b.index)) {
            let _ = self.nl.delete_link(&host_veth).await;
            return Err(ApiError::internal(format!("dataplane: {e}")));
        }
        super::steps::mark("ep:dataplane");
        if let Some(netns) = &req.netns {
            advertise_addrs(netns, &a.ifname, mac, ip, a.ip6, &r.net.options).await;
            super::steps::mark("ep:advertise");
        }
        Ok(a)
    }

    /// Phase 3 of [`Daemon::attach`] (state lock held): persist (other owners than sandboxes)
    /// and register. Undone on failure (veth, dataplane, address).
    pub async fn attach_commit(self: &Shared, st: &mut State, r: &Reserved, a: Attachment) -> ApiResult<Attachment> {
        if !a.owner.is_sandbox()
            && let Err(e) = self.store.save_attachment(&a)
        {
            let spec = r.net.spec(0).expect("bridge");
            let _ = st.dp.endpoint_removed(&spec, &endpoint_spec(&a, r.b.index)).await;
            let _ = self.nl.delete_link(&a.host_veth).await;
            attach_release(st, r);
            return Err(ApiError::internal(format!("saving state: {e}")));
        }
        st.attachments.insert(a.id.clone(), a.clone());
        Ok(a)
    }

    /// Remove an attachment: its ports, the dataplane's endpoint, the veth (its peer goes with
    /// it), the address and the record. Best effort; every step is idempotent. `a` may be a
    /// record the registry does not hold (a crash left it half made).
    pub async fn detach(self: &Shared, st: &mut State, a: &Attachment) {
        let cur = st.attachments.get(&a.id).cloned().unwrap_or_else(|| a.clone());
        // A CNI container's embedded DNS (none for other owners).
        Self::stop_dns(st, &cur.id);
        if !cur.ports.is_empty() {
            self.unpublish(st, &cur.id, &cur.network_id, &cur.ports).await;
        }
        let net = net_of(st, &cur.network_id);
        let dp = st.dp.clone();
        self.detach_kernel(&dp, &cur, net.as_ref()).await;
        self.detach_commit(st, &cur);
    }

    /// The kernel half of [`Daemon::detach`] (no state lock needed): the dataplane's endpoint
    /// (and, once this returns, every translation of its address) and the veth. `net`: the
    /// network's spec and index ([`net_of`]), `None` when the network is gone.
    pub async fn detach_kernel(&self, dp: &super::Dp, cur: &Attachment, net: Option<&(NetworkSpec, u32)>) {
        // The veth first: the eBPF program leaves a deleted device without waiting (a detach
        // from a live one waits for an RCU grace period under the rtnl lock). At shutdown the
        // veths go in one batch at the end (see `Daemon::deferred_links`), the programs after
        // them (`Dp::tearing_down`).
        let deferred = match self.deferred_links.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            Some(later) => {
                later.push(cur.host_veth.clone());
                true
            }
            None => false,
        };
        if !deferred && let Err(e) = self.nl.delete_link(&cur.host_veth).await {
            tracing::warn!(owner = %cur.owner.key(), veth = %cur.host_veth, error = %e, "deleting veth");
        }
        super::steps::mark("td:veth-delete");
        if let Some((spec, index)) = net {
            let mut e = endpoint_spec(cur, *index);
            e.host_ifindex = 0;
            if let Err(e) = dp.endpoint_removed(spec, &e).await {
                tracing::warn!(owner = %cur.owner.key(), error = %e, "dataplane: removing endpoint");
            }
        }
    }

    /// [`Daemon::detach_kernel`] for a sandbox being removed, its veth's deletion overlapped
    /// with the rest of the teardown: the veth leaves its bridge (and goes down) at once, the
    /// dataplane forgets the endpoint, and the deletion, which waits for every pending RCU
    /// callback in the kernel (10-20 ms, most of an `rm`), runs on a task of its own; the
    /// caller awaits the handle before it reports the sandbox gone (nothing is left once it
    /// has). At shutdown, the veths go in one batch instead (`None`).
    pub async fn detach_sandbox_veth(
        self: &Shared,
        dp: &super::Dp,
        cur: &Attachment,
        net: Option<&(NetworkSpec, u32)>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let deferred = self.deferred_links.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if deferred || cur.host_ifindex == 0 {
            self.detach_kernel(dp, cur, net).await;
            return None;
        }
        if let Err(e) = self.nl.unbridge_index(cur.host_ifindex).await {
            tracing::warn!(owner = %cur.owner.key(), veth = %cur.host_veth, error = %e, "taking veth off its bridge");
            self.detach_kernel(dp, cur, net).await;
            return None;
        }
        super::steps::mark("td:unbridge");
        if let Some((spec, index)) = net {
            let mut e = endpoint_spec(cur, *index);
            e.host_ifindex = 0;
            if let Err(e) = dp.endpoint_removed(spec, &e).await {
                tracing::warn!(owner = %cur.owner.key(), error = %e, "dataplane: removing endpoint");
            }
        }
        super::steps::mark("td:endpoint");
        Some(self.delete_link_task(cur.host_veth.clone()))
    }

    /// Delete link `name` on a task of its own (counted until done, see
    /// [`Daemon::wait_link_deletes`]).
    pub fn delete_link_task(self: &Shared, name: String) -> tokio::task::JoinHandle<()> {
        use std::sync::atomic::Ordering;
        self.pending_link_deletes.fetch_add(1, Ordering::SeqCst);
        let d = self.clone();
        tokio::spawn(async move {
            if let Err(e) = d.nl.delete_link(&name).await {
                tracing::warn!(veth = %name, error = %e, "deleting veth");
            }
            d.pending_link_deletes.fetch_sub(1, Ordering::SeqCst);
            d.link_deleted.notify_waiters();
        })
    }

    /// Wait (bounded) until the background veth deletions ([`Daemon::detach_sandbox_veth`])
    /// are done.
    pub async fn wait_link_deletes(&self, timeout: std::time::Duration) {
        use std::sync::atomic::Ordering;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.link_deleted.notified();
            if self.pending_link_deletes.load(Ordering::SeqCst) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!("veth deletions still running after {}s", timeout.as_secs());
                return;
            }
        }
    }

    /// The model half of [`Daemon::detach`] (state lock held): the address and the record.
    pub fn detach_commit(&self, st: &mut State, cur: &Attachment) {
        if let (Some(ip), Some(p)) = (cur.ip, st.pools.get_mut(&cur.network_id)) {
            p.release(ip);
        }
        if let (Some(a6), Some(p)) = (cur.ip6, st.pools6.get_mut(&cur.network_id)) {
            p.release(a6);
        }
        st.attachments.remove(&cur.id);
        if !cur.owner.is_sandbox()
            && let Err(e) = self.store.remove_attachment(&cur.id)
        {
            tracing::warn!(attachment = %cur.id, error = %e, "removing attachment state");
        }
    }

    /// Publish ports of attachment `id` (all-or-nothing). `name` is the endpoint's name in
    /// Docker's error text (`driver failed programming external connectivity on endpoint NAME`).
    /// Holds the state lock throughout (a sandbox start runs the phases itself).
    pub fn publish(&self, st: &mut State, id: &str, reqs: &[PortRequest], name: &str) -> ApiResult<Vec<PortMapping>> {
        let mut p = self.publish_reserve(st, id, reqs)?;
        if let Err(e) = p.program(&st.dp.clone(), name) {
            unreserve_ports(st, &p.maps);
            return Err(e);
        }
        Ok(self.publish_commit(st, id, p))
    }

    /// Phase 1 of [`Daemon::publish`] (state lock held): host ports allocated and reserved.
    pub fn publish_reserve(&self, st: &mut State, id: &str, reqs: &[PortRequest]) -> ApiResult<Publishing> {
        self.publish_reserve_families(st, id, reqs, Families::BOTH)
    }

    /// [`Daemon::publish_reserve`] of the bindings of some host-address families only: on a
    /// sandbox whose v4 and v6 default gateways are on two networks, each family is published
    /// through its own gateway's endpoint (Docker 28, [`gateway_split`]); `V4` alone on a
    /// v4-only endpoint makes no `[::]` twin.
    pub fn publish_reserve_families(
        &self,
        st: &mut State,
        id: &str,
        reqs: &[PortRequest],
        fam: Families,
    ) -> ApiResult<Publishing> {
        let t0 = std::time::Instant::now();
        let a =
            st.attachments.get(id).cloned().ok_or_else(|| ApiError::not_found(format!("endpoint {id} not found")))?;
        let net = st
            .networks
            .get(&a.network_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("network {} not found", a.network_id)))?;
        let b = net.bridge.as_ref().ok_or_else(|| ApiError::bad(format!("network {} has no bridge", net.name)))?;
        let proxied = a.port_opts.hold_socket && a.port_opts.userland_proxy && proxied(&self.cfg, st, b.index);
        // A v4-only attachment's v6 bindings (its `[::]` twin, Docker's proxied binding) on the
        // eBPF dataplane: translated by its programs (NAT46, [`nat46`]), no listener, no proxy.
        // The same for every owner: netd's sandboxes, Docker endpoints and CNI containers
        // (whose reserve-only ports never get a proxy, so on iptables they get no twin).
        let nat46 = a.ip6.is_none() && nat46(&self.cfg, st, b.index);
        let v6_ok = st.dp.ipv6();
        if !v6_ok && let Some(r) = reqs.iter().find(|r| r.host_ip.is_some_and(|i| i.is_ipv6())) {
            return Err(ApiError::bad(format!(
                "IPv6 port bindings are not supported by the {} dataplane yet: [{}]:{}/{} (netd up --dataplane iptables has them)",
                st.dp.backend(),
                r.host_ip.expect("v6"),
                r.container_port,
                r.proto.as_str()
            )));
        }
        // The implicit `[::]` twin of a binding without a host address (Docker 27+), for every
        // owner: to the attachment's v6 address, else to its v4 one through the userland proxy
        // (iptables) or NAT46 (eBPF); without either, none ([`binding_groups`]).
        let implicit_v6 = v6_ok && b.host_binding_ipv4.is_unspecified();
        let mut groups = binding_groups(reqs, b.host_binding_ipv4, a.ip, a.ip6, proxied || nat46, implicit_v6);
        for g in &mut groups {
            g.targets.retain(|(h, _)| if h.is_ipv6() { fam.v6 } else { fam.v4 });
        }
        let maps = allocate_ports(st, &groups, b.index, a.port_opts.hold_socket, proxied, a.port_opts.userland_proxy)?;
        super::crash_point("publish:allocated");
        let v6_forward = self.cfg.up.ip_forward
            && st.dp.backend() == crate::dataplane::Backend::Ebpf
            && maps.iter().any(PortMapping::is_cross_family);
        // The sandbox sees NAT46 flows come from its gateway: its datagrams and fragments to it
        // 28 bytes under the MTU, so they fit IPv6 after translation (design notes, NAT46).
        let peer_mtu = if nat46 && maps.iter().any(PortMapping::is_cross_family) {
            a.netns
                .clone()
                .zip(b.ipv4.as_ref())
                .map(|(ns, v4)| (ns, a.ifname.clone(), v4.gateway, b.mtu.saturating_sub(28)))
        } else {
            None
        };
        Ok(Publishing {
            spec: net.spec(0).expect("bridge"),
            maps,
            proxy: a.port_opts.userland_proxy,
            v6_forward,
            peer_mtu,
            took: t0.elapsed(),
        })
    }

    /// Phase 3 of [`Daemon::publish`] (state lock held): proxies, timing, the attachment's
    /// bindings. The bindings.
    pub fn publish_commit(&self, st: &mut State, id: &str, p: Publishing) -> Vec<PortMapping> {
        let t0 = std::time::Instant::now();
        let maps = p.maps;
        if p.proxy {
            start_proxies(&self.cfg, st, &maps);
        }
        if !maps.is_empty() {
            st.publish_timing.record(maps.len(), p.took + t0.elapsed());
        }
        if maps.len() > 256 {
            // A big range's transient allocations go back to the system, so RSS tracks what
            // the daemon keeps per port.
            // SAFETY: glibc malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
        let owner = st.attachments.get(id).map(|a| a.owner.key().to_string()).unwrap_or_default();
        for m in &maps {
            self.events.emit(
                "port",
                "publish",
                &super::events::port_id(m),
                &[("container", owner.clone()), ("target", format!("{}:{}", m.container_ip, m.container_port))],
            );
        }
        if let Some(aa) = st.attachments.get_mut(id) {
            aa.ports.extend(maps.iter().cloned());
            let aa = aa.clone();
            self.persist_attachment(&aa);
        }
        maps
    }

    /// Remove bindings of attachment `id` on network `network_id` (the attachment need not be
    /// registered any more): dataplane, then host ports, held sockets and proxies. Returns once
    /// the host ports can be bound again (the proxies and their connections are closed).
    /// Holds the state lock throughout ([`Daemon::unpublish_unlocked`] does not).
    pub async fn unpublish(&self, st: &mut State, id: &str, network_id: &str, maps: &[PortMapping]) {
        if maps.is_empty() {
            return;
        }
        if let Some(spec) = st.networks.get(network_id).and_then(|n| n.spec(0))
            && let Err(e) = st.dp.ports_removed(&spec, maps).await
        {
            tracing::warn!(error = %e, "dataplane: removing ports");
        }
        release_ports(st, maps).await;
        self.unpublish_commit(st, id, maps);
    }

    /// The model half of an unpublish (state lock held, the dataplane and the proxies done):
    /// host ports and held sockets released, events, the attachment's bindings.
    fn unpublish_commit(&self, st: &mut State, id: &str, maps: &[PortMapping]) {
        unreserve_ports(st, maps);
        let owner = st.attachments.get(id).map(|a| a.owner.key().to_string()).unwrap_or_default();
        for m in maps {
            self.events.emit("port", "unpublish", &super::events::port_id(m), &[("container", owner.clone())]);
        }
        if let Some(a) = st.attachments.get_mut(id) {
            // A set: a sandbox's 20,000 bindings against themselves were 2·10⁸ comparisons.
            let gone: std::collections::HashSet<&PortMapping> = maps.iter().collect();
            a.ports.retain(|m| !gone.contains(m));
            let a = a.clone();
            self.persist_attachment(&a);
        }
    }

    /// [`Daemon::attach`] with the state lock held only for the reservation and the commit: the
    /// veth, the namespace's configuration and the dataplane's endpoint are made without it
    /// (the Docker driver's CreateEndpoint, CNI ADD). `check` runs under the lock first
    /// (a duplicate owner, ...). The network stays while the kernel work runs
    /// (`State::starting`). The caller serialises operations on one owner
    /// ([`Daemon::op_lock`] on [`attachment_op_key`]).
    pub async fn attach_unlocked(
        self: &Shared,
        req: AttachRequest,
        check: impl FnOnce(&State) -> ApiResult<()>,
    ) -> ApiResult<Attachment> {
        let r = {
            let mut st = self.state.lock().await;
            check(&st)?;
            let r = self.attach_reserve(&mut st, req)?;
            *st.starting.entry(r.req.network_id.clone()).or_default() += 1;
            r
        };
        let res = self.attach_kernel(&self.dp, &r).await;
        let mut st = self.state.lock().await;
        if let Some(n) = st.starting.get_mut(&r.req.network_id) {
            *n = n.saturating_sub(1);
        }
        match res {
            Ok(a) => self.attach_commit(&mut st, &r, a).await,
            Err(e) => {
                attach_release(&mut st, &r);
                Err(e)
            }
        }
    }

    /// [`Daemon::publish`] with the state lock held only while host ports are allocated and
    /// committed; the dataplane is programmed without it. Also returns how long this waited
    /// for the state lock.
    pub async fn publish_unlocked(
        &self,
        id: &str,
        reqs: &[PortRequest],
        name: &str,
    ) -> ApiResult<(Vec<PortMapping>, std::time::Duration)> {
        let (mut p, mut waited) = {
            let mut st = self.state.lock().await;
            let w = st.waited;
            (self.publish_reserve(&mut st, id, reqs)?, w)
        };
        if p.maps.iter().any(PortMapping::is_cross_family) {
            self.dp.ready_v6().await;
        }
        let r = p.program(&self.dp, name);
        let mut st = self.state.lock().await;
        waited += st.waited;
        if let Err(e) = r {
            unreserve_ports(&mut st, &p.maps);
            return Err(e);
        }
        Ok((self.publish_commit(&mut st, id, p), waited))
    }

    /// [`Daemon::unpublish`] of every binding of attachment `id`, with the state lock held only
    /// to take the bindings and to release their host ports: the dataplane (and the conntrack
    /// purge that follows a removal) and the proxies run without it.
    pub async fn unpublish_unlocked(&self, id: &str) {
        let (maps, spec, proxies) = {
            let mut st = self.state.lock().await;
            let Some(a) = st.attachments.get(id).cloned() else { return };
            if a.ports.is_empty() {
                return;
            }
            let spec = st.networks.get(&a.network_id).and_then(|n| n.spec(0));
            let proxies = take_proxies(&mut st, &a.ports);
            (a.ports, spec, proxies)
        };
        self.unpublish_kernel(spec.as_ref(), &maps, proxies).await;
        let mut st = self.state.lock().await;
        self.unpublish_commit(&mut st, id, &maps);
    }

    /// The kernel half of an unpublish: the dataplane's bindings, then the proxies (and every
    /// connection they relay) stopped.
    async fn unpublish_kernel(
        &self,
        spec: Option<&NetworkSpec>,
        maps: &[PortMapping],
        proxies: Vec<super::proxy::Proxy>,
    ) {
        if let Some(spec) = spec
            && !maps.is_empty()
            && let Err(e) = self.dp.ports_removed(spec, maps).await
        {
            tracing::warn!(error = %e, "dataplane: removing ports");
        }
        futures::future::join_all(proxies.into_iter().map(|p| p.stop())).await;
    }

    /// [`Daemon::detach`] with the state lock held only to take what to undo and to release
    /// the addresses, host ports and the record afterwards (nothing is reused before the
    /// kernel objects are gone); the dataplane, the conntrack purge and the veth without it.
    /// The caller serialises operations on one owner ([`Daemon::op_lock`]).
    pub async fn detach_unlocked(self: &Shared, a: &Attachment) {
        let (cur, net, spec, proxies) = {
            let mut st = self.state.lock().await;
            let cur = st.attachments.get(&a.id).cloned().unwrap_or_else(|| a.clone());
            Self::stop_dns(&mut st, &cur.id);
            let spec = st.networks.get(&cur.network_id).and_then(|n| n.spec(0));
            let proxies = take_proxies(&mut st, &cur.ports);
            let net = net_of(&st, &cur.network_id);
            (cur, net, spec, proxies)
        };
        self.unpublish_kernel(spec.as_ref(), &cur.ports, proxies).await;
        self.detach_kernel(&self.dp, &cur, net.as_ref()).await;
        let mut st = self.state.lock().await;
        if !cur.ports.is_empty() {
            self.unpublish_commit(&mut st, &cur.id, &cur.ports);
        }
        self.detach_commit(&mut st, &cur);
    }

    /// Replay one attachment after a restart: its address, host ports (held sockets, proxies)
    /// and the dataplane's endpoint and ports. Idempotent.
    pub async fn adopt(self: &Shared, st: &mut State, mut a: Attachment) {
        // Records written before bindings carried it.
        for m in &mut a.ports {
            m.unproxied |= !a.port_opts.userland_proxy;
        }
        if let (Some(ip), Some(p)) = (a.ip, st.pools.get_mut(&a.network_id)) {
            let _ = p.restore(ip);
        }
        if let Some(a6) = a.ip6 {
            if !st.pools6.contains_key(&a.network_id)
                && let Some(v6) = st.networks.get(&a.network_id).and_then(|n| n.bridge.as_ref()?.ipv6.clone())
            {
                st.pools6.insert(a.network_id.clone(), Self::pool6_for(&v6));
            }
            if let Some(p) = st.pools6.get_mut(&a.network_id) {
                let _ = p.restore(a6);
            }
        }
        for m in &a.ports {
            st.allocator.mark(m.proto, m.host_ip, m.host_port);
            // The `0.0.0.0` half of a shared pair: the `[::]` half's socket holds it.
            let twin = shared_twin(&a.ports, m);
            if twin == Some(Twin::V4Half) {
                continue;
            }
            // A plain bind, as before the proxy listeners had SO_REUSEADDR: with it, TCP flows
            // DNATed through the port were reset across a kill -9 and restart under load
            // (reliability.rs iptables_kill9_under_load_loses_nothing).
            let b = match twin {
                Some(_) => bind_dual_stack(m.proto, m.host_port, false),
                None => bind_host_port(m.proto, m.host_ip, m.host_port, false),
            };
            if a.port_opts.hold_socket
                && let Ok(s) = b
            {
                st.held.insert((m.proto, m.host_ip, m.host_port), s);
            }
        }
        if a.port_opts.userland_proxy {
            let ports = a.ports.clone();
            start_proxies(&self.cfg, st, &ports);
        }
        a.host_ifindex = self.nl.link_index(&a.host_veth).await.ok().flatten().unwrap_or(0);
        if let Some(net) = st.networks.get(&a.network_id).cloned()
            && let Some(b) = &net.bridge
        {
            let bidx = self.nl.link_index(&b.bridge).await.ok().flatten().unwrap_or(0);
            let spec = net.spec(bidx).expect("bridge");
            let _ = st.dp.endpoint_added(&spec, &endpoint_spec(&a, b.index));
            if !a.ports.is_empty() {
                let _ = st.dp.ports_added(&spec, &a.ports);
                if self.cfg.up.ip_forward
                    && st.dp.backend() == crate::dataplane::Backend::Ebpf
                    && a.ports.iter().any(PortMapping::is_cross_family)
                    && let Err(e) = super::networks::ensure_ipv6_forwarding()
                {
                    tracing::warn!(error = %e, "NAT46 bindings need IPv6 forwarding");
                }
            }
        }
        st.attachments.insert(a.id.clone(), a);
    }

    /// At start-up: adopt every persisted (non-sandbox) attachment whose host veth still exists;
    /// drop the records of the others (their namespace, and the veth with it, went away while
    /// netd was down, or a crash came before the veth was made).
    pub async fn reconcile_attachments(self: &Shared, st: &mut State) {
        let (atts, errs) = self.store.load_attachments();
        for e in errs {
            tracing::warn!("ignoring unreadable attachment state: {e}");
        }
        for a in atts {
            let alive = self.nl.link_index(&a.host_veth).await.ok().flatten().is_some();
            let net_ok = st.networks.get(&a.network_id).is_some_and(|n| n.bridge.is_some());
            if alive && net_ok {
                let cni = matches!(a.owner, Owner::Cni { .. });
                let (id, ns) = (a.id.clone(), a.netns.clone());
                self.adopt(st, a).await;
                if cni {
                    // Its resolver died with the previous daemon.
                    super::cni::restart_dns(self, st, &id, ns.as_deref());
                }
            } else {
                tracing::info!(attachment = %a.id, owner = %a.owner.key(), veth = %a.host_veth, "attachment is gone: removing its record");
                let _ = self.nl.delete_link(&a.host_veth).await;
                let _ = self.store.remove_attachment(&a.id);
            }
        }
    }

    /// What the dataplane lacks of attachment `a` (its endpoint, its network, its bindings), as
    /// the kernel has it: one sentence per missing piece (CNI CHECK).
    /// `net`: the attachment's network as the model has it (`None`: gone). No state lock needed.
    pub async fn dataplane_missing(
        &self,
        net: Option<&crate::model::Network>,
        a: &Attachment,
    ) -> Result<Vec<String>, String> {
        let net = net.ok_or_else(|| format!("network {} not found", a.network_id))?;
        let b = net.bridge.as_ref().ok_or_else(|| format!("network {} has no bridge", net.name))?;
        let bidx = self.nl.link_index(&b.bridge).await.ok().flatten().unwrap_or(0);
        let spec = net.spec(bidx).expect("bridge");
        self.dp.missing(&spec, &endpoint_spec(a, b.index), &a.ports).map_err(|e| e.to_string())
    }

    /// Whether attachment `id` is intact: its host veth exists and is on its network's bridge;
    /// with a namespace, the interface inside has its address. The first problem found.
    pub async fn check_attachment(&self, st: &State, id: &str) -> Result<(), String> {
        let a = st.attachments.get(id).ok_or_else(|| format!("attachment {id} not found"))?;
        let net = st.networks.get(&a.network_id).ok_or_else(|| format!("network {} not found", a.network_id))?;
        let b = net.bridge.as_ref().ok_or_else(|| format!("network {} has no bridge", net.name))?;
        let bidx = self.nl.link_index(&b.bridge).await.map_err(|e| e.to_string())?;
        match self.nl.master_of(&a.host_veth).await.map_err(|e| e.to_string())? {
            None if self.nl.link_index(&a.host_veth).await.ok().flatten().is_none() => {
                return Err(format!("host interface {} is missing", a.host_veth));
            }
            m if m != bidx || bidx.is_none() => {
                return Err(format!("host interface {} is not on bridge {}", a.host_veth, b.bridge));
            }
            _ => {}
        }
        if let Some(ns) = a.netns.clone() {
            let ifname = a.ifname.clone();
            let addrs = tokio::task::spawn_blocking(move || crate::netlink::addrs_in(&ns, &ifname))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            match addrs {
                None => {
                    return Err(format!(
                        "interface {} is missing in {}",
                        a.ifname,
                        a.netns.as_ref().unwrap().display()
                    ));
                }
                Some(v) if a.ip.is_some_and(|ip| !v.contains(&(ip, a.prefix_len))) => {
                    return Err(format!(
                        "interface {} does not have address {}/{}",
                        a.ifname,
                        a.ip.expect("v4"),
                        a.prefix_len
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Try to reserve a host port the way Docker does: bind a socket (TCP bound, not listening;
/// UDP bound) in the daemon's namespace and hold it while the binding exists. IPv6 sockets are
/// `IPV6_V6ONLY`, so `[::]:8080` and `0.0.0.0:8080` are two bindings, as in Docker 27+.
///
/// `proxied`: the socket becomes the userland proxy's listener. It then gets `SO_REUSEADDR`
/// (as Docker's Go listeners), so that connections of a removed binding still closing
/// (TIME_WAIT) do not keep the port from the next sandbox; a listener with it still refuses
/// every other bind. A reservation that never listens keeps the plain bind, which refuses
/// other `SO_REUSEADDR` binders too.
pub fn bind_host_port(proto: Proto, ip: IpAddr, port: u16, proxied: bool) -> std::io::Result<HeldSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(ip, port);
    let domain = if ip.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    match proto {
        Proto::Tcp => {
            let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
            if ip.is_ipv6() {
                s.set_only_v6(true)?;
            }
            if proxied {
                s.set_reuse_address(true)?;
            }
            s.bind(&addr.into())?;
            Ok(HeldSocket::TcpRaw(s.into()))
        }
        Proto::Udp => {
            let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
            if ip.is_ipv6() {
                s.set_only_v6(true)?;
            }
            s.bind(&addr.into())?;
            Ok(HeldSocket::Udp(s.into()))
        }
    }
}

/// Which host-address families a publish covers ([`Daemon::publish_reserve_families`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    pub const BOTH: Families = Families { v4: true, v6: true };
    pub const V4: Families = Families { v4: true, v6: false };
    pub const V6: Families = Families { v4: false, v6: true };
}

/// One gateway candidate: a network a sandbox is on, as Docker's `Endpoint.Less` sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GwCand {
    /// The network gives a v4 / v6 gateway (an `--internal` one gives none).
    pub v4: bool,
    pub v6: bool,
    /// Docker 28's `gw-priority` of the sandbox on this network.
    pub priority: i64,
    /// The network's name (Docker's tie-break).
    pub name: String,
}

/// Docker's gateway choice (`Endpoint.Less`, then `getGatewayEndpoint`): the candidates
/// ordered by gateway priority (highest first), then the number of families they give a
/// gateway for (dual-stack first), then network name; the v4 gateway is the first with v4,
/// the v6 one the first with v6. Before Docker 28 the same order without priorities decided
/// the one gateway endpoint: the name, not the join order, wins among equals.
pub fn gateway_pick(cands: &[GwCand]) -> (Option<usize>, Option<usize>) {
    let mut order: Vec<usize> = (0..cands.len()).collect();
    let count = |c: &GwCand| u8::from(c.v4) + u8::from(c.v6);
    order.sort_by(|&i, &j| {
        let (a, b) = (&cands[i], &cands[j]);
        b.priority.cmp(&a.priority).then(count(b).cmp(&count(a))).then(a.name.cmp(&b.name)).then(i.cmp(&j))
    });
    (order.iter().copied().find(|&i| cands[i].v4), order.iter().copied().find(|&i| cands[i].v6))
}

/// Docker 28's per-family gateway for port bindings (moby's `TestGatewaySelection`): which of
/// a sandbox's endpoints (by position) publishes which host-address family, in
/// [`gateway_pick`]'s order. Both families through one endpoint when that is the same, or
/// when the sandbox has one family only (a v4-only sandbox's `[::]` twin goes to its v4
/// address, through the proxy or NAT46). The default routes follow the same choice. An
/// endpoint on an `--internal` network is never a gateway (Docker's bridge `Join` gives it no
/// gateway, so `getGatewayEndpoint` skips it): no default route and no bindings through it.
/// `meta` gives each endpoint's network: (internal, priority, name).
pub fn gateway_split(
    eps: &[crate::model::Endpoint],
    meta: &dyn Fn(&crate::model::Endpoint) -> (bool, i64, String),
) -> Vec<(usize, Families)> {
    let cands: Vec<GwCand> = eps
        .iter()
        .map(|e| {
            let (internal, priority, name) = meta(e);
            GwCand { v4: !internal && e.ip.is_some(), v6: !internal && e.ip6.is_some(), priority, name }
        })
        .collect();
    match gateway_pick(&cands) {
        (Some(a), Some(b)) if a != b => vec![(a, Families::V4), (b, Families::V6)],
        (Some(a), _) | (None, Some(a)) => vec![(a, Families::BOTH)],
        (None, None) => Vec::new(),
    }
}

/// [`gateway_split`] of sandbox `c`'s endpoints `eps` with the model's networks (internal
/// flag, name) and `c`'s gateway priorities.
pub fn gateways(st: &State, c: &crate::model::Container, eps: &[crate::model::Endpoint]) -> Vec<(usize, Families)> {
    gateway_split(eps, &|e| {
        let n = st.networks.get(&e.network_id);
        (
            n.is_some_and(|n| n.internal),
            c.gw_priority_of(&e.network_id),
            n.map(crate::model::Network::docker_name).unwrap_or_default(),
        )
    })
}

/// Bindings grouped by the network they go through (`PortMapping::network_index`), each with
/// its network's dataplane spec (networks gone are left out).
pub fn ports_by_net(st: &State, maps: &[PortMapping]) -> Vec<(NetworkSpec, Vec<PortMapping>)> {
    let mut out: Vec<(NetworkSpec, Vec<PortMapping>)> = Vec::new();
    for m in maps {
        if let Some((_, v)) = out.iter_mut().find(|(_, v)| v[0].network_index == m.network_index) {
            v.push(m.clone());
            continue;
        }
        let spec = st
            .networks
            .values()
            .find(|n| n.bridge.as_ref().is_some_and(|b| b.index == m.network_index))
            .and_then(|n| n.spec(0));
        if let Some(spec) = spec {
            out.push((spec, vec![m.clone()]));
        }
    }
    out
}

/// Which half of a shared `0.0.0.0`/`[::]` pair a binding is (see [`allocate_ports`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Twin {
    V4Half,
    V6Half,
}

/// Whether `m` is half of a `0.0.0.0`/`[::]` pair to one v4 sandbox address (the `[::]` twin
/// of a v4-only sandbox's binding) among `maps`: such a pair is held by one dual-stack socket.
fn shared_twin(maps: &[PortMapping], m: &PortMapping) -> Option<Twin> {
    if !m.host_ip.is_unspecified() || !m.container_ip.is_ipv4() {
        return None;
    }
    let paired = maps.iter().any(|o| {
        o.proto == m.proto
            && o.host_port == m.host_port
            && o.container_ip == m.container_ip
            && o.container_port == m.container_port
            && o.host_ip.is_unspecified()
            && o.host_ip.is_ipv6() != m.host_ip.is_ipv6()
    });
    paired.then_some(if m.host_ip.is_ipv6() { Twin::V6Half } else { Twin::V4Half })
}

/// A socket on `[::]:port` that also takes IPv4 (`IPV6_V6ONLY` off): the host port of both
/// halves of a shared pair, reserved (and proxied) through one descriptor.
fn bind_dual_stack(proto: Proto, port: u16, proxied: bool) -> std::io::Result<HeldSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    let (ty, pr) = match proto {
        Proto::Tcp => (Type::STREAM, Protocol::TCP),
        Proto::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let s = Socket::new(Domain::IPV6, ty, Some(pr))?;
    s.set_only_v6(false)?;
    if proxied && proto == Proto::Tcp {
        s.set_reuse_address(true)?;
    }
    s.bind(&addr.into())?;
    Ok(match proto {
        Proto::Tcp => HeldSocket::TcpRaw(s.into()),
        Proto::Udp => HeldSocket::Udp(s.into()),
    })
}

/// One request after Docker's normalisation (`sortAndNormPBs`): the host addresses that must
/// get the same host port (`0.0.0.0` and `[::]` for `-p 8080:80`), each with the sandbox
/// address it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingGroup {
    pub proto: Proto,
    pub start: u16,
    pub end: u16,
    pub container_port: u16,
    /// (host ip, sandbox ip).
    pub targets: Vec<(IpAddr, IpAddr)>,
}

/// Docker's expansion of port requests into bindings per family: a v4 binding when the host
/// address is v4 or not given (then the network's default); a v6 one when the host address is
/// v6, or not given with a `0.0.0.0` default (`[::]`, when `implicit_v6`), to the sandbox's v6
/// address, else, with the userland proxy, to its v4 address (Docker's proxied binding); with
/// neither the v6 binding is left out (Docker logs it and goes on). A sandbox without a v4
/// address (IPv6-only network) gets no v4 binding: an explicit v4 host address is ignored, as
/// Docker's `configurePortBindingIPv4` ignores it.
pub fn binding_groups(
    reqs: &[PortRequest],
    default_v4: Ipv4Addr,
    ip: Option<Ipv4Addr>,
    ip6: Option<Ipv6Addr>,
    proxied: bool,
    implicit_v6: bool,
) -> Vec<BindingGroup> {
    let v6_target = ip6.map(IpAddr::V6).or_else(|| ip.filter(|_| proxied).map(IpAddr::V4));
    reqs.iter()
        .map(|r| {
            let mut targets = Vec::new();
            match r.host_ip {
                Some(IpAddr::V4(h)) => {
                    if let Some(ip) = ip {
                        targets.push((IpAddr::V4(h), IpAddr::V4(ip)));
                    }
                }
                Some(IpAddr::V6(h)) => {
                    if let Some(t) = v6_target {
                        targets.push((IpAddr::V6(h), t));
                    }
                }
                None => {
                    if let Some(ip) = ip {
                        targets.push((IpAddr::V4(default_v4), IpAddr::V4(ip)));
                    }
                    if implicit_v6 && let Some(t) = v6_target {
                        targets.push((IpAddr::V6(Ipv6Addr::UNSPECIFIED), t));
                    }
                }
            }
            BindingGroup {
                proto: r.proto,
                start: r.host_port_start,
                end: r.host_port_end,
                container_port: r.container_port,
                targets,
            }
        })
        .collect()
}

/// Docker's message for a host port that cannot be bound.
fn bind_error(proto: Proto, host_ip: IpAddr, port: u16, e: &std::io::Error) -> String {
    let hp = crate::ports::format_host_addr(&host_ip.to_string(), &port.to_string());
    if e.kind() == std::io::ErrorKind::AddrInUse {
        format!("Bind for {hp} failed: port is already allocated")
    } else if e.kind() == std::io::ErrorKind::AddrNotAvailable {
        format!("failed to bind host port {hp}/{}: cannot assign requested address", proto.as_str())
    } else {
        format!("failed to bind host port {hp}/{}: {e}", proto.as_str())
    }
}

/// Allocate every binding of a request (all-or-nothing), holding a socket for each when
/// `hold`. Each group gets one host port for all its host addresses (the first port of its
/// range, or ephemeral, free for every one of them). `proxy_opt` false: the bindings never get
/// a userland proxy ([`PortMapping::unproxied`]).
fn allocate_ports(
    st: &mut State,
    groups: &[BindingGroup],
    net_index: u32,
    hold: bool,
    proxied: bool,
    proxy_opt: bool,
) -> ApiResult<Vec<PortMapping>> {
    let mut done: Vec<PortMapping> = Vec::new();
    let (lo, hi) = crate::ports::ephemeral_range();
    let reserved = crate::ports::reserved_ports();
    for g in groups {
        if g.targets.is_empty() {
            continue;
        }
        let (start, end) = (g.start, g.end);
        // Candidate ports: the given one, a range (first free), or ephemeral.
        let candidates: Box<dyn Iterator<Item = u16>> = if start == 0 {
            Box::new((lo..=hi).filter(|p| !reserved.contains(p)))
        } else {
            Box::new(start..=end.max(start))
        };
        // `0.0.0.0` and its `[::]` twin to one v4-only sandbox: one dual-stack socket holds
        // (and, on iptables, proxies) both, one descriptor per port instead of two.
        let shared = g.targets.len() == 2
            && g.targets[0].0 == IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            && g.targets[1].0 == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            && g.targets[0].1 == g.targets[1].1
            && g.targets[1].1.is_ipv4();
        let mut got: Option<(u16, Vec<Option<HeldSocket>>)> = None;
        let mut last_err = None;
        'ports: for port in candidates {
            let mut socks = Vec::new();
            for (i, &(host_ip, _)) in g.targets.iter().enumerate() {
                if st.allocator.is_allocated(g.proto, host_ip, port) {
                    let hp = crate::ports::format_host_addr(&host_ip.to_string(), &port.to_string());
                    last_err = Some(format!("Bind for {hp} failed: port is already allocated"));
                    continue 'ports;
                }
                let listen = proxied;
                let b = match (shared, i) {
                    (true, 0) => {
                        socks.push(None);
                        continue;
                    }
                    // (Errors name the v4 address, as the separate v4 bind did.)
                    (true, _) => bind_dual_stack(g.proto, port, listen).map_err(|e| (g.targets[0].0, e)),
                    _ => bind_host_port(g.proto, host_ip, port, listen).map_err(|e| (host_ip, e)),
                };
                match b {
                    Ok(sock) => socks.push(Some(sock)),
                    Err((ip, e)) => {
                        last_err = Some(bind_error(g.proto, ip, port, &e));
                        if start != 0 && start == end {
                            break 'ports;
                        }
                        continue 'ports;
                    }
                }
            }
            got = Some((port, socks));
            break;
        }
        match got {
            Some((port, socks)) => {
                for (&(host_ip, container_ip), sock) in g.targets.iter().zip(socks) {
                    st.allocator.mark(g.proto, host_ip, port);
                    if hold && let Some(sock) = sock {
                        st.held.insert((g.proto, host_ip, port), sock);
                    }
                    done.push(PortMapping {
                        proto: g.proto,
                        host_ip,
                        host_port: port,
                        container_ip,
                        container_port: g.container_port,
                        network_index: net_index,
                        unproxied: !proxy_opt,
                    });
                }
            }
            None => {
                let msg = if start == 0 {
                    "all ports are allocated".to_string()
                } else {
                    last_err.unwrap_or_else(|| "all ports are allocated".into())
                };
                unreserve_ports(st, &done);
                return Err(ApiError::internal(msg));
            }
        }
    }
    Ok(done)
}

/// Drop the reservations of bindings that have no proxy (any more): a publish that failed
/// halfway, or a teardown that stopped the proxies itself.
pub fn unreserve_ports(st: &mut State, maps: &[PortMapping]) {
    for m in maps {
        st.allocator.unmark(m.proto, m.host_ip, m.host_port);
        st.held.remove(&(m.proto, m.host_ip, m.host_port));
    }
}

/// Stop the userland proxies of bindings: once this returns their host ports can be bound
/// again (the caller unreserves them).
async fn release_ports(st: &mut State, maps: &[PortMapping]) {
    let stopping = take_proxies(st, maps);
    futures::future::join_all(stopping.into_iter().map(|p| p.stop())).await;
}

/// The userland proxies of bindings, taken out of the state to be stopped without its lock.
fn take_proxies(st: &mut State, maps: &[PortMapping]) -> Vec<super::proxy::Proxy> {
    maps.iter().filter_map(|m| st.proxies.remove(&(m.proto, m.host_ip, m.host_port))).collect()
}

/// The key of an attachment's operation lock ([`Daemon::op_lock`]) for owners other than
/// sandboxes (whose lock is keyed by the sandbox id): a Docker endpoint's id, a CNI
/// (container, interface, config).
pub fn attachment_op_key(o: &Owner) -> String {
    match o {
        Owner::Sandbox { id } => id.clone(),
        Owner::Docker { endpoint_id } => format!("docker/{endpoint_id}"),
        Owner::Cni { container_id, ifname, config_name } => format!("cni/{config_name}/{container_id}/{ifname}"),
    }
}

/// Whether bindings on network `net_index` are served by the userland proxy: the iptables
/// dataplane with `--userland-proxy` (Docker's default), except routed networks, which publish
/// container ports directly (no host port to proxy).
fn proxied(cfg: &super::Config, st: &State, net_index: u32) -> bool {
    cfg.up.dataplane == crate::dataplane::Backend::Iptables
        && cfg.up.userland_proxy
        && !st.networks.values().any(|n| n.bridge.as_ref().is_some_and(|b| b.index == net_index && b.routed()))
}

/// Whether a v4-only sandbox on network `net_index` gets cross-family bindings (v6 host
/// address to its v4 address, [`PortMapping::is_cross_family`]; Docker's proxied binding,
/// made only with `--userland-proxy`) that the eBPF dataplane's programs translate (NAT46 at
/// the uplink and on sandbox veths, the connect6 hook for host processes) instead of a proxy:
/// the eBPF dataplane with `--userland-proxy`, outside of routed networks. Their host ports
/// are held (not listening), so conflicts still get Docker's errors.
fn nat46(cfg: &super::Config, st: &State, net_index: u32) -> bool {
    cfg.up.dataplane == crate::dataplane::Backend::Ebpf
        && cfg.up.userland_proxy
        && !st.networks.values().any(|n| {
            n.bridge.as_ref().is_some_and(|b| {
                b.index == net_index
                    && (b.ipv4.as_ref().is_some_and(|v| v.gateway_mode == crate::dataplane::GatewayMode::Routed)
                        || b.ipv6.as_ref().is_some_and(|v| v.gateway_mode == crate::dataplane::GatewayMode::Routed))
            })
        })
}

/// With the iptables dataplane and `--userland-proxy` (Docker's default), serve each binding
/// from its held socket: loopback and hairpin traffic, which iptables does not NAT, reach the
/// namespace through the daemon.
fn start_proxies(cfg: &super::Config, st: &mut State, maps: &[PortMapping]) {
    for m in maps {
        let key = (m.proto, m.host_ip, m.host_port);
        if st.proxies.contains_key(&key) || m.unproxied || !proxied(cfg, st, m.network_index) {
            continue;
        }
        let target = SocketAddr::new(m.container_ip, m.container_port);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host_ip: Option<&str>) -> PortRequest {
        PortRequest {
            proto: Proto::Tcp,
            host_ip: host_ip.map(|h| h.parse().unwrap()),
            host_port_start: 8080,
            host_port_end: 8080,
            container_port: 80,
        }
    }

    fn targets(g: &[BindingGroup]) -> Vec<(String, String)> {
        g.iter().flat_map(|g| g.targets.iter().map(|(h, c)| (h.to_string(), c.to_string()))).collect()
    }

    /// Docker 28's per-family gateways: each family through the first endpoint that has it.
    #[test]
    fn gateway_split_per_family() {
        let ep = |v4: bool, v6: bool| crate::model::Endpoint {
            network_id: String::new(),
            endpoint_id: String::new(),
            host_veth: String::new(),
            ifname: String::new(),
            ip: v4.then_some(Ipv4Addr::new(10, 0, 0, 2)),
            prefix_len: 24,
            gateway: None,
            mac: [0; 6],
            aliases: Vec::new(),
            static_ip: None,
            ip6: v6.then(|| "fd00::2".parse().unwrap()),
            prefix_len6: 64,
            gateway6: None,
            static_ip6: None,
        };
        assert_eq!(
            gateway_split(&[ep(true, false)], &|e| (false, 0, e.network_id.clone())),
            [(0, Families::BOTH)],
            "v4-only: the twin on it"
        );
        assert_eq!(
            gateway_split(&[ep(true, true), ep(false, true)], &|e| (false, 0, e.network_id.clone())),
            [(0, Families::BOTH)]
        );
        assert_eq!(
            gateway_split(&[ep(false, true), ep(true, false)], &|e| (false, 0, e.network_id.clone())),
            [(1, Families::V4), (0, Families::V6)]
        );
        // A dual-stack network is the gateway of both families (Docker 28's `Endpoint.Less`).
        assert_eq!(
            gateway_split(&[ep(true, false), ep(true, true)], &|e| (false, 0, e.network_id.clone())),
            [(1, Families::BOTH)]
        );
        assert_eq!(
            gateway_split(&[ep(false, true), ep(true, false), ep(true, true)], &|e| (false, 0, e.network_id.clone())),
            [(2, Families::BOTH)]
        );
        assert!(gateway_split(&[], &|e| (false, 0, e.network_id.clone())).is_empty());
        // An internal network is never the gateway: the other network takes both families,
        // and a sandbox on internal networks only has none.
        let mut int = ep(true, true);
        int.network_id = "int".into();
        assert_eq!(
            gateway_split(&[int.clone(), ep(true, false)], &|e| (e.network_id == "int", 0, e.network_id.clone())),
            [(1, Families::BOTH)]
        );
        assert!(gateway_split(&[int], &|e| (e.network_id == "int", 0, e.network_id.clone())).is_empty());
    }

    /// Docker's `Endpoint.Less`: the network name, not the join order, decides among equals;
    /// a higher `gw-priority` wins over the name and over dual-stack.
    #[test]
    fn gateway_pick_by_priority_then_families_then_name() {
        let c = |v4: bool, v6: bool, priority: i64, name: &str| GwCand { v4, v6, priority, name: name.into() };
        // Joined zeta then alpha: alpha is the gateway.
        assert_eq!(gateway_pick(&[c(true, false, 0, "zeta"), c(true, false, 0, "alpha")]), (Some(1), None));
        // A priority wins over the name.
        assert_eq!(gateway_pick(&[c(true, false, 1, "zeta"), c(true, false, 0, "alpha")]), (Some(0), None));
        // Dual-stack wins among equal priorities, whatever the names.
        assert_eq!(gateway_pick(&[c(true, false, 0, "a"), c(true, true, 0, "b")]), (Some(1), Some(1)));
        // A v4-only network with a higher priority takes v4; v6 goes to the dual-stack one.
        assert_eq!(gateway_pick(&[c(true, true, 0, "a"), c(true, false, 5, "b")]), (Some(1), Some(0)));
        // Negative priorities sort last.
        assert_eq!(gateway_pick(&[c(true, false, -1, "a"), c(true, false, 0, "b")]), (Some(1), None));
        // No gateway for a family nobody gives.
        assert_eq!(gateway_pick(&[c(false, false, 9, "a")]), (None, None));
    }

    /// Docker's `sortAndNormPBs`: `-p 8080:80` is a v4 and a `[::]` binding with one port; on a
    /// v4-only sandbox the v6 one goes to the v4 address through the proxy, or is left out.
    #[test]
    fn bindings_per_family_like_docker() {
        let v4 = Some(Ipv4Addr::new(10, 0, 0, 2));
        let v6: Ipv6Addr = "fd00::2".parse().unwrap();
        let any = Ipv4Addr::UNSPECIFIED;
        let s = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        // Dual-stack sandbox.
        let g = binding_groups(&[req(None)], any, v4, Some(v6), true, true);
        assert_eq!(g.len(), 1, "one group: the same host port for both");
        assert_eq!(targets(&g), s(&[("0.0.0.0", "10.0.0.2"), ("::", "fd00::2")]));
        // v4-only sandbox: proxied to v4, or no v6 binding without the proxy.
        assert_eq!(
            targets(&binding_groups(&[req(None)], any, v4, None, true, true)),
            s(&[("0.0.0.0", "10.0.0.2"), ("::", "10.0.0.2")])
        );
        assert_eq!(targets(&binding_groups(&[req(None)], any, v4, None, false, true)), s(&[("0.0.0.0", "10.0.0.2")]));
        // Explicit addresses: one family each.
        assert_eq!(
            targets(&binding_groups(&[req(Some("::1"))], any, v4, Some(v6), true, true)),
            s(&[("::1", "fd00::2")])
        );
        assert_eq!(
            targets(&binding_groups(&[req(Some("127.0.0.1"))], any, v4, Some(v6), true, true)),
            s(&[("127.0.0.1", "10.0.0.2")])
        );
        // No implicit `[::]` (a backend without IPv6, or a specific default address).
        assert_eq!(
            targets(&binding_groups(&[req(None)], any, v4, Some(v6), true, false)),
            s(&[("0.0.0.0", "10.0.0.2")])
        );
        // IPv6-only sandbox (Docker's `configurePortBindingIPv4` with no container v4): `[::]`
        // only, an explicit v4 host address is left out, a v6 one kept.
        assert_eq!(targets(&binding_groups(&[req(None)], any, None, Some(v6), true, true)), s(&[("::", "fd00::2")]));
        assert_eq!(targets(&binding_groups(&[req(None)], any, None, Some(v6), false, true)), s(&[("::", "fd00::2")]));
        assert!(targets(&binding_groups(&[req(Some("127.0.0.1"))], any, None, Some(v6), true, true)).is_empty());
        assert_eq!(
            targets(&binding_groups(&[req(Some("::1"))], any, None, Some(v6), true, true)),
            s(&[("::1", "fd00::2")])
        );
        // A specific v4 default binding address: nothing for it.
        let ip = Ipv4Addr::new(198, 51, 100, 1);
        assert!(targets(&binding_groups(&[req(None)], ip, None, Some(v6), true, false)).is_empty());
    }
}
