//! Sandbox lifecycle: create, start (namespace, veth, address, ports, /etc files, shim), stop,
//! remove, and the exit path. Docker's order and messages.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

use tokio::io::unix::AsyncFd;

use super::{
    ApiError, ApiResult, Daemon, Shared, State,
    attach::{AddressRequest, AttachRequest},
};
use crate::{
    api::{CreateRequest, CreateResponse},
    dataplane::{PortMapping, Proto},
    model::{Container, Endpoint, NetworkMode, PortRequest, RequestedBinding, RunState, Status},
    shim::{self, ShimConfig},
};

/// Docker's default stop timeout.
pub const DEFAULT_STOP_TIMEOUT: i64 = 10;

impl Daemon {
    /// Resolve a user reference (full id, name, unique id prefix) to an id.
    pub fn resolve_container(&self, st: &State, r: &str) -> ApiResult<String> {
        let pairs: Vec<(&str, &str)> = st.containers.values().map(|c| (c.id.as_str(), c.name.as_str())).collect();
        crate::names::resolve(r, &pairs).map(str::to_string).map_err(|e| match e {
            crate::names::ResolveError::NotFound => ApiError::not_found(format!("No such container: {r}")),
            crate::names::ResolveError::Ambiguous => {
                ApiError::bad(format!("multiple IDs found with provided prefix: {r}"))
            }
        })
    }

    /// `POST /containers/create`.
    pub async fn create(self: &Shared, req: CreateRequest) -> ApiResult<CreateResponse> {
        let mut st = self.state.lock().await;
        let mut warnings = Vec::new();
        if req.cmd.is_empty() {
            return Err(ApiError::bad("no command specified"));
        }
        // The kernel takes at most 64 bytes (with the NUL) for either: refuse here, at create,
        // rather than leave a sandbox that can never start.
        for (what, v) in [("hostname", req.hostname.as_deref()), ("domainname", req.domainname.as_deref())] {
            if let Some(v) = v
                && v.len() > 63
            {
                return Err(ApiError::bad(format!(
                    "invalid {what} \"{}...\": at most 63 characters",
                    v.chars().take(16).collect::<String>()
                )));
            }
        }
        // Network mode and Docker's container-mode conflicts.
        let mode_str = if req.network_mode.is_empty() { "bridge".to_string() } else { req.network_mode.clone() };
        let mode = if mode_str == "container" || mode_str.starts_with("container:") {
            let target = mode_str.strip_prefix("container:").unwrap_or("");
            if target.is_empty() {
                return Err(ApiError::bad("invalid network mode: invalid container format container:<name|id>"));
            }
            validate_container_mode(&req)?;
            let tid = self.resolve_container(&st, target)?;
            NetworkMode::Container(tid)
        } else {
            match mode_str.as_str() {
                "host" => {
                    if !req.links.is_empty() {
                        return Err(ApiError::bad(
                            "conflicting options: host type networking can't be used with links. This would result in undefined behavior",
                        ));
                    }
                    if !req.publish.is_empty() || req.publish_all {
                        warnings.push("Published ports are discarded when using host network mode".to_string());
                    }
                    NetworkMode::Host
                }
                "none" => NetworkMode::None,
                "bridge" | "default" => {
                    let id = st
                        .networks
                        .values()
                        .find(|n| n.default_bridge)
                        .map(|n| n.id.clone())
                        .ok_or_else(|| ApiError::not_found("network bridge not found"))?;
                    NetworkMode::Bridge(id)
                }
                other => {
                    let id = self.resolve_network(&st, other)?;
                    let n = &st.networks[&id];
                    super::netcrud::refuse_docker_network(n)?;
                    match n.driver.as_str() {
                        "host" => NetworkMode::Host,
                        "null" => NetworkMode::None,
                        _ => NetworkMode::Bridge(id),
                    }
                }
            }
        };
        if req.mac_address.is_some() && !matches!(mode, NetworkMode::Bridge(_)) {
            return Err(ApiError::bad("conflicting options: mac-address and the network mode"));
        }
        // Static address: only on user-defined networks with a user subnet, inside it.
        if let Some(ip) = &req.ip {
            let addr: Ipv4Addr = ip.parse().map_err(|_| ApiError::bad(format!("invalid IPv4 address: {ip}")))?;
            match &mode {
                NetworkMode::Bridge(id) => {
                    let n = &st.networks[id];
                    if n.default_bridge {
                        return Err(ApiError::bad(
                            "invalid endpoint settings:\nuser-specified IP address is supported on user-defined networks only",
                        ));
                    }
                    let b = n.bridge.as_ref().expect("bridge network");
                    if b.ipv4.is_none() {
                        return Err(ApiError::bad(format!(
                            "invalid endpoint settings:\nno configured subnet contains IP address {addr}"
                        )));
                    }
                    if !b.user_subnet4() {
                        return Err(ApiError::bad(
                            "user specified IP address is supported only when connecting to networks with user configured subnets",
                        ));
                    }
                    if !n.spec(0).expect("bridge").contains(addr) {
                        return Err(ApiError::bad(format!(
                            "invalid endpoint settings:\nno configured subnet contains IP address {addr}"
                        )));
                    }
                }
                _ => {
                    return Err(ApiError::bad(
                        "invalid endpoint settings:\nuser-specified IP address is supported on user-defined networks only",
                    ));
                }
            }
        }
        // `--ip6`: a dual-stack user network with a user subnet, inside its v6 subnet.
        if let Some(ip6) = &req.ip6 {
            let addr: std::net::Ipv6Addr =
                ip6.parse().map_err(|_| ApiError::bad(format!("invalid IPv6 address: {ip6}")))?;
            match &mode {
                NetworkMode::Bridge(id) if !st.networks[id].default_bridge => {
                    let n = &st.networks[id];
                    let Some(v6) = n.bridge.as_ref().and_then(|b| b.ipv6.as_ref()) else {
                        return Err(ApiError::bad(format!(
                            "invalid endpoint settings:\nuser specified IPv6 address is not supported: IPv6 is not enabled on network {}",
                            n.name
                        )));
                    };
                    if !v6.user_subnet {
                        return Err(ApiError::bad(
                            "user specified IP address is supported only when connecting to networks with user configured subnets",
                        ));
                    }
                    let spec = n.spec(0).and_then(|s| s.ipv6).expect("v6 network");
                    if !spec.contains(addr) {
                        return Err(ApiError::bad(format!(
                            "invalid endpoint settings:\nno configured subnet contains IP address {addr}"
                        )));
                    }
                }
                _ => {
                    return Err(ApiError::bad(
                        "invalid endpoint settings:\nuser-specified IP address is supported on user-defined networks only",
                    ));
                }
            }
        }
        if let Some(mac) = &req.mac_address {
            crate::ipam::parse_mac(mac).map_err(|e| ApiError::bad(e.to_string()))?;
        }
        if !req.network_aliases.is_empty()
            && !matches!(&mode, NetworkMode::Bridge(id) if !st.networks[id].default_bridge)
        {
            return Err(ApiError::bad(
                "invalid endpoint settings:\nnetwork-scoped aliases are only supported for user-defined networks",
            ));
        }
        // Ports: parse every spec now (Docker's CLI does), allocation happens at start.
        let mut requested = Vec::new();
        let mut exposed = Vec::new();
        // Order kept as given (inspect's ExposedPorts); the set makes a 10,000-port range linear.
        let mut seen = std::collections::HashSet::new();
        for spec in &req.publish {
            for b in crate::ports::parse_port_spec(spec).map_err(|e| ApiError::bad(e.to_string()))? {
                crate::ports::check_supported(&b, st.dp.ipv6(), &st.dp.backend().to_string())
                    .map_err(|e| ApiError::bad(e.to_string()))?;
                let key = format!("{}/{}", b.container_port, b.proto);
                if seen.insert(key.clone()) {
                    exposed.push(key);
                }
                requested.push(RequestedBinding {
                    proto: b.proto.to_string(),
                    container_port: b.container_port,
                    host_ip: b.host_ip.map(|i| i.to_string()).unwrap_or_default(),
                    host_port: match (b.host_port_start, b.host_port_end) {
                        (0, _) => String::new(),
                        (s, e) if s == e => s.to_string(),
                        (s, e) => format!("{s}-{e}"),
                    },
                });
            }
        }
        for spec in &req.expose {
            for k in crate::ports::parse_expose(spec).map_err(|e| ApiError::bad(e.to_string()))? {
                let key = k.to_string();
                if seen.insert(key.clone()) {
                    exposed.push(key);
                }
            }
        }
        if !exposed.is_empty() && matches!(mode, NetworkMode::Container(_)) {
            return Err(ApiError::bad("conflicting options: port exposing and the container type network mode"));
        }
        for d in &req.dns {
            super::validate_dns(d).map_err(ApiError::bad)?;
        }
        for h in &req.extra_hosts {
            crate::etcfiles::parse_add_host(h).map_err(|e| ApiError::bad(e.to_string()))?;
        }
        for l in &req.links {
            self.check_link(&st, l, &mode)?;
        }
        // Name.
        let name = match &req.name {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(n);
                crate::names::validate_name(n).map_err(|e| ApiError::bad(e.to_string()))?;
                if let Some(other) = st.containers.values().find(|c| c.name == n) {
                    return Err(ApiError::conflict(format!(
                        "Conflict. The container name \"/{n}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                        other.id
                    )));
                }
                n.to_string()
            }
            None => {
                let taken: std::collections::HashSet<String> = st.containers.values().map(|c| c.name.clone()).collect();
                crate::names::random_name(|n| taken.contains(n))
            }
        };
        let id = crate::names::new_id();
        let hostname = req.hostname.clone().unwrap_or_else(|| match mode {
            NetworkMode::Host => nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default(),
            _ => id[..12].to_string(),
        });
        let (created, created_unix) = crate::model::rfc3339_now();
        let mode_id = match &mode {
            NetworkMode::Bridge(nid) => Some(nid.clone()),
            _ => None,
        };
        let c = Container {
            id: id.clone(),
            name,
            created,
            created_unix,
            config: req.clone(),
            mode,
            extra_networks: Vec::new(),
            hostname,
            domainname: req.domainname.clone().unwrap_or_default(),
            requested,
            exposed,
            state: RunState::default(),
            endpoints: Vec::new(),
            ports: Vec::new(),
            restart_count: 0,
            netns: None,
            link_rules: Vec::new(),
            gw_priority: match &mode_id {
                Some(nid) if req.gw_priority != 0 => [(nid.clone(), req.gw_priority)].into(),
                _ => Default::default(),
            },
        };
        self.store.save_container(&c).map_err(|e| ApiError::internal(format!("saving state: {e}")))?;
        self.events.emit("container", "create", &id, &[("name", c.name.clone())]);
        st.containers.insert(id.clone(), c);
        Ok(CreateResponse { id, warnings })
    }

    /// `--link NAME[:ALIAS]` at create: the target must exist (Docker's message).
    fn check_link(&self, st: &State, link: &str, _mode: &NetworkMode) -> ApiResult<()> {
        let name = link.split_once(':').map_or(link, |(n, _)| n).trim_start_matches('/');
        self.resolve_container(st, name)
            .map(|_| ())
            .map_err(|_| ApiError::bad(format!("could not get container for {name}: No such container: {name}")))
    }

    /// At start, every linked sandbox must be running (Docker's message).
    fn check_links_running(&self, st: &State, c: &Container) -> ApiResult<()> {
        for l in &c.config.links {
            let (name, alias) = l.split_once(':').unwrap_or((l, l));
            let name = name.trim_start_matches('/');
            let tid = self
                .resolve_container(st, name)
                .map_err(|_| ApiError::bad(format!("could not get container for {name}: No such container: {name}")))?;
            let t = &st.containers[&tid];
            if t.state.status != Status::Running {
                return Err(ApiError::bad(format!(
                    "Cannot link to a non running container: /{} AS /{}/{}",
                    t.name, c.name, alias
                )));
            }
        }
        Ok(())
    }

    /// `POST /containers/{id}/start`. The kernel work runs without the state lock (see
    /// [`Daemon::bring_up`]); the sandbox's own lock keeps other operations on it out.
    pub async fn start(self: &Shared, r: &str) -> ApiResult<()> {
        let id = {
            let st = self.state.lock().await;
            let id = self.resolve_container(&st, r)?;
            if st.containers[&id].state.status == Status::Running {
                return Ok(()); // Docker: starting a running container is a no-op
            }
            id
        };
        let _op = self.op_lock(&id).await;
        match self.start_op(&id).await {
            Ok(()) => {
                self.changed.notify_waiters();
                Ok(())
            }
            Err(e) => {
                let mut st = self.state.lock().await;
                if let Some(c) = st.containers.get_mut(&id) {
                    c.state.error = e.message.clone();
                    let _ = self.store.save_container(c);
                }
                Err(e)
            }
        }
    }

    /// Start sandbox `id` (its op lock held): checks and address reservations under the state
    /// lock, then [`Daemon::bring_up`]; a failure rolls back what was done.
    async fn start_op(self: &Shared, id: &str) -> ApiResult<()> {
        let mut undo = Undo::default();
        let (c, join_netns, starting) = {
            let mut st = self.state.lock().await;
            let c = st
                .containers
                .get(id)
                .cloned()
                .ok_or_else(|| ApiError::not_found(format!("No such container: {id}")))?;
            if c.state.status == Status::Running {
                return Ok(()); // started meanwhile
            }
            // container:NAME needs NAME running.
            let join_netns = match &c.mode {
                NetworkMode::Container(tid) => {
                    if tid == id {
                        return Err(ApiError::bad("cannot join own network namespace"));
                    }
                    let t = st
                        .containers
                        .get(tid)
                        .ok_or_else(|| ApiError::not_found(format!("No such container: {tid}")))?;
                    if t.state.status != Status::Running {
                        return Err(ApiError::conflict(format!(
                            "cannot join network namespace of a non running container: container {} is {}",
                            t.name,
                            t.state.status.as_str()
                        )));
                    }
                    Some(PathBuf::from(format!("/proc/{}/ns/net", t.state.pid)))
                }
                _ => None,
            };
            self.check_links_running(&st, &c)?;
            // Every endpoint's address, reserved now; the networks stay while we start.
            if let NetworkMode::Bridge(net_id) = &c.mode {
                let nets: Vec<String> =
                    std::iter::once(net_id.clone()).chain(c.extra_networks.iter().cloned()).collect();
                // Each family's default route from its gateway network (Docker's order:
                // `gw-priority`, dual-stack, name; `attach::gateway_pick`).
                let cands: Vec<super::attach::GwCand> = nets
                    .iter()
                    .map(|nid| {
                        let n = st.networks.get(nid);
                        // An internal network has no gateway (Docker's bridge `Join`).
                        let b = n.filter(|n| !n.internal).and_then(|n| n.bridge.as_ref());
                        super::attach::GwCand {
                            v4: b.is_some_and(|b| b.ipv4.is_some()),
                            v6: b.is_some_and(|b| b.ipv6.is_some()),
                            priority: c.gw_priority_of(nid),
                            name: n.map(crate::model::Network::docker_name).unwrap_or_default(),
                        }
                    })
                    .collect();
                let (g4, g6) = super::attach::gateway_pick(&cands);
                for (i, nid) in nets.iter().enumerate() {
                    let family_routes = (g4 == Some(i), g6 == Some(i));
                    let r = self
                        .endpoint_request(&c, nid, i)
                        .map(|req| AttachRequest { default_route: false, family_routes, ..req })
                        .and_then(|req| self.attach_reserve(&mut st, req));
                    match r {
                        Ok(r) => undo.reserved.push(r),
                        Err(e) => {
                            for r in &undo.reserved {
                                super::attach::attach_release(&mut st, r);
                            }
                            return Err(e);
                        }
                    }
                }
                for nid in &nets {
                    *st.starting.entry(nid.clone()).or_default() += 1;
                }
                (c, join_netns, nets)
            } else {
                (c, join_netns, Vec::new())
            }
        };
        super::steps::mark("reserve");
        let rt = self.cfg.runtime_dir(id);
        let mut result =
            std::fs::create_dir_all(&rt).map_err(|e| ApiError::internal(format!("creating {}: {e}", rt.display())));
        if result.is_ok() {
            result = self.bring_up(&c, join_netns, &mut undo).await;
        }
        if result.is_err() {
            self.roll_back(id, &mut undo).await;
        }
        let mut st = self.state.lock().await;
        for nid in &starting {
            if let Some(n) = st.starting.get_mut(nid) {
                *n = n.saturating_sub(1);
            }
        }
        result
    }

    /// Mount a network namespace at `path` for a sandbox's start: the spare one made ahead
    /// ([`Daemon::refill_netns`]) when there is one (a bind mount), else a new one (a thread
    /// of its own). Returns whether its loopback has IPv6 (`None`: `path` had one already).
    async fn take_netns(self: &Shared, path: &std::path::Path) -> ApiResult<Option<bool>> {
        let err = |e: String| ApiError::internal(format!("creating network namespace: {e}"));
        let spare = self.netns_spare.lock().unwrap_or_else(|e| e.into_inner()).take();
        let r = match spare {
            Some(s) if !crate::netns::is_nsfs(path) => s.mount_at(path).map(Some).map_err(|e| err(e.to_string())),
            _ => {
                let pp = path.to_path_buf();
                tokio::task::spawn_blocking(move || crate::netns::create_probed(&pp))
                    .await
                    .map_err(|e| err(e.to_string()))?
                    .map_err(|e| err(e.to_string()))
            }
        };
        if r.is_err() {
            self.refill_netns();
        }
        r
    }

    /// Make the next spare network namespace in the background (one at a time; none during
    /// the shutdown).
    pub fn refill_netns(self: &Shared) {
        use std::sync::atomic::Ordering;
        let shutting_down = self.deferred_links.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if shutting_down
            || self.netns_spare.lock().unwrap_or_else(|e| e.into_inner()).is_some()
            || self.netns_refilling.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let d = self.clone();
        tokio::task::spawn_blocking(move || {
            match crate::netns::spare() {
                Ok(s) => {
                    let down = d.deferred_links.lock().unwrap_or_else(|e| e.into_inner()).is_some();
                    if !down {
                        d.netns_spare.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(s);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "making a spare network namespace"),
            }
            d.netns_refilling.store(false, Ordering::SeqCst);
        });
    }

    /// The attachment request of a sandbox's `i`th endpoint, on network `nid`.
    fn endpoint_request(&self, c: &Container, nid: &str, i: usize) -> ApiResult<AttachRequest> {
        let static_ip: Option<Ipv4Addr> =
            if i == 0 { c.config.ip.as_deref().and_then(|s| s.parse().ok()) } else { None };
        let mac = c.config.mac_address.as_deref().filter(|_| i == 0);
        let mac = mac.map(|m| crate::ipam::parse_mac(m).map_err(|e| ApiError::bad(e.to_string()))).transpose()?;
        Ok(AttachRequest {
            id: None,
            owner: crate::model::Owner::Sandbox { id: c.id.clone() },
            network_id: nid.to_string(),
            netns: Some(self.cfg.netns_dir().join(&c.id)),
            ifname: format!("eth{i}"),
            address: static_ip.map_or(AddressRequest::Pool, AddressRequest::Static),
            ip6: if i == 0 { c.config.ip6.as_deref().and_then(|s| s.parse().ok()) } else { None },
            mac,
            default_route: i == 0,
            family_routes: (false, false),
            aliases: if i == 0 { c.config.network_aliases.clone() } else { Vec::new() },
            port_opts: crate::model::PortOpts::default(),
        })
    }

    /// Everything `start` does after validation; records what to undo on failure. The state
    /// lock is taken for short sections only: the namespace, veths, addresses, routes and the
    /// dataplane's endpoints are made without it (their addresses were reserved), then ports,
    /// link rules and /etc files under it, the process spawned without it, and the result
    /// committed under it.
    async fn bring_up(self: &Shared, c: &Container, join_netns: Option<PathBuf>, undo: &mut Undo) -> ApiResult<()> {
        let id = c.id.clone();
        let rt = self.cfg.runtime_dir(&id);
        let dp = self.dp.clone();
        // 1. Network namespace (and whether its `lo` has IPv6, for /etc/hosts, read on the
        // thread that made it).
        let mut lo_ipv6 = None;
        let netns_path = match &c.mode {
            NetworkMode::Bridge(_) | NetworkMode::None => {
                let p = self.cfg.netns_dir().join(&id);
                lo_ipv6 = self.take_netns(&p).await?;
                undo.netns = Some(p.clone());
                super::steps::mark("netns");
                super::crash_point("run:netns");
                // `lo` comes up with the first endpoint's configuration (same thread, same
                // netlink socket inside the namespace); without endpoints, on its own.
                if undo.reserved.is_empty() {
                    let pp = p.clone();
                    tokio::task::spawn_blocking(move || crate::netlink::configure_sandbox(&pp, None))
                        .await
                        .map_err(|e| ApiError::internal(format!("bringing lo up: {e}")))?
                        .map_err(|e| ApiError::internal(format!("bringing lo up: {e}")))?;
                }
                Some(p)
            }
            NetworkMode::Container(_) => join_netns.clone(),
            NetworkMode::Host => None,
        };
        // 2. Endpoints (bridge mode): veth, address, routes, dataplane.
        let mut pairs = Vec::new();
        let mut reserved = std::mem::take(&mut undo.reserved).into_iter();
        while let Some(r) = reserved.next() {
            match self.attach_kernel(&dp, &r).await {
                Ok(a) => {
                    undo.made.push(a.clone());
                    pairs.push((r, a));
                }
                Err(e) => {
                    undo.reserved.push(r);
                    undo.reserved.extend(reserved);
                    return Err(e);
                }
            }
        }
        if !pairs.is_empty() {
            super::steps::mark("endpoints");
            super::crash_point("run:endpoint");
        }
        // 3. Under the lock: the endpoints registered, published ports reserved, link rules,
        // /etc files, the process's environment.
        let (mut publishing, link_rules, files, env) = {
            let mut st = self.state.lock().await;
            for (r, a) in pairs {
                let aid = a.id.clone();
                undo.made.retain(|m| m.id != aid);
                // On failure it undid itself.
                let a = self.attach_commit(&mut st, &r, a).await?;
                undo.endpoints.push(a.endpoint());
            }
            let endpoints = undo.endpoints.clone();
            // Published ports (bridge mode only; host mode discards them with a warning), each
            // family through the endpoint of its default gateway (Docker 28).
            let mut publishing = Vec::new();
            if matches!(c.mode, NetworkMode::Bridge(_)) {
                for (i, fam) in super::attach::gateways(&st, c, &endpoints) {
                    let ep = &endpoints[i];
                    let p = self.publish_sandbox(&mut st, c, ep, fam)?;
                    undo.ports.extend(p.maps.iter().cloned());
                    publishing.push((ep.endpoint_id.clone(), p));
                }
            }
            // --link on the default bridge: the exact (proto, port) pairs of the target's
            // exposed ports are opened under icc=false (replies follow through conntrack).
            let mut link_rules = Vec::new();
            if let (NetworkMode::Bridge(net_id), Some(ep)) = (&c.mode, endpoints.first()) {
                for l in &c.config.links {
                    let name = l.split_once(':').map_or(l.as_str(), |(n, _)| n).trim_start_matches('/');
                    let Ok(tid) = self.resolve_container(&st, name) else { continue };
                    let t = &st.containers[&tid];
                    let Some(tep) = t.endpoints.iter().find(|e| &e.network_id == net_id) else { continue };
                    for k in &t.exposed {
                        let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
                        let proto = if proto == "udp" { Proto::Udp } else { Proto::Tcp };
                        if let Ok(port) = port.parse() {
                            let idx = st.networks[net_id].bridge.as_ref().map_or(0, |b| b.index);
                            let v4 = ep.ip.zip(tep.ip);
                            let v6 = ep.ip6.zip(tep.ip6);
                            if v4.is_none() && v6.is_none() {
                                continue;
                            }
                            link_rules.push(crate::dataplane::LinkRule {
                                network_index: idx,
                                src: v4.map(|x| x.0),
                                dst: v4.map(|x| x.1),
                                proto,
                                port,
                                v6,
                            });
                        }
                    }
                }
                if !link_rules.is_empty() {
                    let spec = st.networks[net_id].spec(0).expect("bridge");
                    st.dp.links_added(&spec, &link_rules).map_err(|e| ApiError::internal(format!("dataplane: {e}")))?;
                    undo.links = link_rules.clone();
                    undo.links_net = Some(net_id.clone());
                }
            }
            super::steps::mark("locked:ports+links");
            let files = self.write_etc_files(&st, c, &endpoints, &rt, lo_ipv6)?;
            super::steps::mark("locked:etc-files");
            let mut env: Vec<String> = Vec::new();
            env.push(format!("PATH={}", shim::DEFAULT_PATH));
            env.push(format!("HOSTNAME={}", c.hostname));
            env.extend(self.link_env(&st, c));
            env.extend(c.config.env.iter().cloned());
            env.push("HOME=/root".into());
            dedup_env(&mut env);
            (publishing, link_rules, files, env)
        };
        // 4. The ports into the dataplane, without the state lock (reserved above). A NAT46
        // binding needs the IPv6 programs, whose background load (right after `netd up`) is
        // waited for here, holding no lock.
        if publishing.iter().any(|(_, p)| p.maps.iter().any(PortMapping::is_cross_family)) {
            dp.ready_v6().await;
        }
        for (_, p) in publishing.iter_mut() {
            p.program(&dp, &c.name)?;
        }
        super::steps::mark("ports-program");
        // 5. The shim and the process.
        let log = self.store.log_file(&id);
        let exit_file = rt.join("exit.json");
        let _ = std::fs::remove_file(&exit_file);
        let uts = match (&c.mode, &c.config.hostname) {
            (NetworkMode::Host, None) => None,
            _ => Some((c.hostname.clone(), c.domainname.clone())),
        };
        // Its own cgroup, so that every process it starts ends with it.
        let cgroup = match self.cgroups.as_ref().map(|cg| cg.create(&id)).transpose() {
            Ok(p) => p,
            Err(e) => return Err(ApiError::internal(format!("creating the sandbox's cgroup: {e}"))),
        };
        undo.cgroup = cgroup.is_some();
        super::steps::mark("cgroup");
        let shim_cfg = ShimConfig {
            id: id.clone(),
            netns: netns_path.clone(),
            uts,
            binds: files,
            cmd: c.config.cmd.clone(),
            env,
            workdir: c.config.workdir.clone(),
            log,
            exit_file: exit_file.clone(),
            mask: vec![self.cfg.socket.clone(), self.cfg.up.data_root.clone(), self.cfg.up.exec_root.clone()],
            cgroup,
        };
        let cfg_path = rt.join("shim.json");
        crate::model::write_json(&cfg_path, &shim_cfg, crate::model::Durability::No)
            .map_err(|e| ApiError::internal(format!("writing shim config: {e}")))?;
        let exe = self.cfg.exe.clone();
        let cfgp = cfg_path.clone();
        let netns_dir = self.cfg.netns_dir();
        let (shim_pid, pid) = match tokio::task::spawn_blocking(move || shim::spawn(&exe, &cfgp, &netns_dir)).await {
            Ok(Ok(p)) => p,
            Ok(Err((code, msg))) => {
                if let Some(cc) = self.state.lock().await.containers.get_mut(&id) {
                    cc.state.exit_code = code;
                }
                return Err(ApiError { status: if code == 125 { 500 } else { 400 }, message: msg });
            }
            Err(e) => return Err(ApiError::internal(format!("supervisor task: {e}"))),
        };
        super::steps::mark("shim");
        super::crash_point("run:spawned");
        // 6. Commit: saved first, so a failure leaves nothing but what roll_back undoes.
        let mut st = self.state.lock().await;
        let mut cc =
            st.containers.get(&id).cloned().ok_or_else(|| ApiError::not_found(format!("No such container: {id}")))?;
        cc.state = RunState {
            status: Status::Running,
            pid,
            shim_pid,
            exit_code: 0,
            started_at: crate::model::rfc3339_now().0,
            finished_at: cc.state.finished_at.clone(),
            error: String::new(),
        };
        cc.endpoints = undo.endpoints.clone();
        cc.ports = publishing.iter().flat_map(|(_, p)| p.maps.iter().cloned()).collect();
        cc.link_rules = link_rules;
        cc.netns = netns_path.filter(|p| p.starts_with(self.cfg.netns_dir()));
        let own_netns = cc.netns.is_some();
        self.store.save_container(&cc).map_err(|e| ApiError::internal(format!("saving state: {e}")))?;
        for (eid, p) in publishing {
            self.publish_commit(&mut st, &eid, p);
        }
        for ep in &cc.endpoints {
            self.network_event(&st, "connect", &ep.network_id, &id);
        }
        self.events.emit("container", "start", &id, &[("name", cc.name.clone())]);
        st.containers.insert(id.clone(), cc);
        *undo = Undo::default();
        self.start_dns(&mut st, &id);
        drop(st);
        self.watch_exit(id, shim_pid, cfg_path);
        super::steps::mark("commit");
        // The next sandbox's namespace, made now rather than beside this one's setup (its
        // kernel work takes the rtnl lock this start's own steps need).
        if own_netns {
            self.refill_netns();
        }
        Ok(())
    }

    /// Undo a partial start: ports, endpoints, namespace — in reverse order; the kernel work
    /// without the state lock, the model's reservations under it at the end.
    async fn roll_back(self: &Shared, id: &str, undo: &mut Undo) {
        let dp = self.dp.clone();
        if undo.cgroup {
            self.end_all(id).await;
        }
        let (links_spec, ports_by_net, eps) = {
            let st = self.state.lock().await;
            let spec = |nid: &Option<String>| nid.as_ref().and_then(|n| st.networks.get(n)).and_then(|n| n.spec(0));
            let eps: Vec<(crate::model::Attachment, Option<(crate::dataplane::NetworkSpec, u32)>)> = undo
                .endpoints
                .iter()
                .map(|ep| crate::model::Attachment::from_endpoint(id, ep, None, Vec::new()))
                .chain(undo.made.iter().cloned())
                .map(|a| {
                    let n = super::attach::net_of(&st, &a.network_id);
                    (a, n)
                })
                .collect();
            (spec(&undo.links_net), super::attach::ports_by_net(&st, &undo.ports), eps)
        };
        if let Some(spec) = &links_spec {
            let _ = dp.links_removed(spec, &undo.links).await;
        }
        for (spec, ports) in &ports_by_net {
            let _ = dp.ports_removed(spec, ports).await;
        }
        for (a, net) in eps.iter().rev() {
            self.detach_kernel(&dp, a, net.as_ref()).await;
        }
        if let Some(p) = &undo.netns {
            let _ = crate::netns::delete(p);
        }
        let mut st = self.state.lock().await;
        super::attach::unreserve_ports(&mut st, &undo.ports);
        for (a, _) in &eps {
            self.detach_commit(&mut st, a);
        }
        for r in &undo.reserved {
            super::attach::attach_release(&mut st, r);
        }
    }

    /// Watch the shim; when it ends, run the exit path.
    pub fn watch_exit(self: &Shared, id: String, shim_pid: i32, cfg_path: PathBuf) {
        let d = self.clone();
        tokio::spawn(async move {
            match shim::pidfd_open(shim_pid) {
                Ok(fd) => {
                    // SAFETY: we own the pidfd and keep it alive inside the AsyncFd until it is dropped.
                    if let Ok(afd) = unsafe { AsyncFd::register(fd) } {
                        let _ = afd.readable().await;
                    }
                }
                Err(_) => {
                    // Already gone (or pidfd unsupported): poll /proc as a fallback.
                    while shim::is_alive(shim_pid, &cfg_path) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            // If we are its subreaper, reap it.
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(shim_pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            super::steps::timed("exit", &id.clone(), d.on_exit(&id, shim_pid)).await;
        });
    }

    /// The sandbox's process ended: record the status, tear its networking down (without the
    /// state lock), auto-remove.
    pub async fn on_exit(self: &Shared, id: &str, shim_pid: i32) {
        let _op = self.op_lock(id).await;
        {
            let st = self.state.lock().await;
            let Some(c) = st.containers.get(id) else { return };
            if c.state.shim_pid != shim_pid || c.state.status != Status::Running {
                return; // a stale watcher (restarted since)
            }
        }
        let rec = shim::read_exit(&self.cfg.runtime_dir(id).join("exit.json"));
        // At shutdown, a bounded number of teardowns at once (see `Daemon::teardown_slots`).
        let shutting_down = self.deferred_links.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        let _slot = if shutting_down { self.teardown_slots.acquire().await.ok() } else { None };
        self.teardown_networking(id).await;
        let auto_remove = {
            let mut st = self.state.lock().await;
            let Some(c) = st.containers.get_mut(id) else { return };
            c.state.status = Status::Exited;
            c.state.pid = 0;
            c.state.shim_pid = 0;
            match rec {
                Some(r) => {
                    c.state.exit_code = r.exit_code;
                    c.state.finished_at = r.finished_at;
                }
                None => {
                    c.state.exit_code = 255;
                    c.state.finished_at = crate::model::rfc3339_now().0;
                }
            }
            let _ = self.store.save_container(c);
            self.events.emit(
                "container",
                "die",
                id,
                &[("exitCode", c.state.exit_code.to_string()), ("name", c.name.clone())],
            );
            c.config.auto_remove
        };
        if auto_remove {
            self.remove_sandbox(id).await;
        }
        self.changed.notify_waiters();
    }

    /// Remove a stopped sandbox's processes (whatever its main process left running, as
    /// Docker ends a container with its init), networking (endpoints, ports, namespace) and
    /// runtime files. Sandboxes joined with `container:` lose `eth0` with it and keep `lo`.
    /// The caller holds the sandbox's op lock (or runs alone: start-up, shutdown). The kernel
    /// work runs without the state lock; addresses and host ports are released only after it
    /// (and after every translation of them is purged), under the lock.
    pub async fn teardown_networking(self: &Shared, id: &str) {
        type Net = Option<(crate::dataplane::NetworkSpec, u32)>;
        let dp = self.dp.clone();
        // 1. What to undo, and the bindings' proxies taken out (under the lock).
        let (c, primary, proxies, eps, ports_by_net) = {
            let mut st = self.state.lock().await;
            let Some(c) = st.containers.get(id).cloned() else { return };
            Self::stop_dns(&mut st, id);
            let primary = match &c.mode {
                NetworkMode::Bridge(nid) => st.networks.get(nid).and_then(|n| n.spec(0)),
                _ => None,
            };
            let proxies: Vec<super::proxy::Proxy> =
                c.ports.iter().filter_map(|m| st.proxies.remove(&(m.proto, m.host_ip, m.host_port))).collect();
            let ports_by_net = super::attach::ports_by_net(&st, &c.ports);
            let eps: Vec<(crate::model::Attachment, Net)> = c
                .endpoints
                .iter()
                .map(|ep| {
                    let a = st
                        .attachments
                        .get(&ep.endpoint_id)
                        .cloned()
                        .unwrap_or_else(|| crate::model::Attachment::from_endpoint(id, ep, None, Vec::new()));
                    let n = super::attach::net_of(&st, &ep.network_id);
                    (a, n)
                })
                .collect();
            (c, primary, proxies, eps, ports_by_net)
        };
        super::steps::mark("td:collect");
        // 2. The kernel work, without the lock.
        self.end_all(id).await;
        super::steps::mark("td:end_all");
        if let (Some(spec), false) = (&primary, c.link_rules.is_empty())
            && let Err(e) = dp.links_removed(spec, &c.link_rules).await
        {
            tracing::warn!(container = %id, error = %e, "dataplane: removing link rules");
        }
        if matches!(c.mode, NetworkMode::Bridge(_)) && !c.ports.is_empty() {
            for (spec, ports) in &ports_by_net {
                if let Err(e) = dp.ports_removed(spec, ports).await {
                    tracing::warn!(container = %id, error = %e, "dataplane: removing ports");
                }
            }
            super::steps::mark("td:ports");
            futures::future::join_all(proxies.into_iter().map(|p| p.stop())).await;
            super::steps::mark("td:proxies");
            super::crash_point("rm:unpublished");
        }
        let mut deleting = Vec::new();
        for (a, net) in eps.iter().rev() {
            deleting.extend(self.detach_sandbox_veth(&dp, a, net.as_ref()).await);
        }
        if !c.endpoints.is_empty() {
            super::steps::mark("td:detach");
            super::crash_point("rm:detached");
        }
        // At shutdown the namespaces go together at the end, in one lazy unmount of their
        // directory (`teardown`): each unmount on its own waits for the mount lock and an RCU
        // grace period.
        let shutting_down = self.deferred_links.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if let Some(p) = c.netns.clone().filter(|_| !shutting_down) {
            let r = tokio::task::spawn_blocking(move || crate::netns::delete(&p)).await;
            if let Ok(Err(e)) = r {
                tracing::warn!(container = %id, error = %e, "removing network namespace");
            }
        }
        super::steps::mark("td:netns");
        let _ = std::fs::remove_dir_all(self.cfg.runtime_dir(id));
        super::steps::mark("td:rundir");
        for h in deleting {
            let _ = h.await;
        }
        super::steps::mark("td:veth-deleted");
        // 3. Commit: host ports and addresses released, the records gone.
        let mut st = self.state.lock().await;
        super::attach::unreserve_ports(&mut st, &c.ports);
        for m in &c.ports {
            self.events.emit("port", "unpublish", &super::events::port_id(m), &[("container", id.to_string())]);
        }
        for (a, _) in &eps {
            self.detach_commit(&mut st, a);
            self.network_event(&st, "disconnect", &a.network_id, id);
        }
        if let Some(cc) = st.containers.get_mut(id) {
            cc.endpoints.clear();
            cc.ports.clear();
            cc.link_rules.clear();
            cc.netns = None;
        }
        drop(st);
        super::steps::mark("td:commit");
    }

    /// `POST /containers/{id}/stop`: SIGTERM, wait up to `t` seconds, SIGKILL.
    pub async fn stop(self: &Shared, r: &str, t: Option<i64>) -> ApiResult<()> {
        let (id, pid, shim_pid) = {
            let st = self.state.lock().await;
            let id = self.resolve_container(&st, r)?;
            let c = &st.containers[&id];
            if c.state.status != Status::Running {
                return Ok(());
            }
            (id, c.state.pid, c.state.shim_pid)
        };
        let t = t.unwrap_or(DEFAULT_STOP_TIMEOUT);
        let _ = shim::signal_command(pid, shim_pid, nix::sys::signal::Signal::SIGTERM);
        if t >= 0 && self.wait_not_running(&id, shim_pid, Duration::from_secs(t as u64)).await {
            self.events.emit("container", "stop", &id, &[]);
            return Ok(());
        }
        let _ = shim::signal_command(pid, shim_pid, nix::sys::signal::Signal::SIGKILL);
        self.kill_all(&id);
        if self.wait_not_running(&id, shim_pid, Duration::from_secs(10)).await {
            self.events.emit("container", "stop", &id, &[]);
            Ok(())
        } else {
            Err(ApiError::internal(format!(
                "cannot stop container: {id}: tried to kill container, but did not receive an exit event"
            )))
        }
    }

    /// `POST /containers/{id}/kill`.
    /// `netd exec`: move the exec's process into the sandbox's cgroup before it starts the
    /// command, so the command and whatever it leaves running end with the sandbox (stop, kill,
    /// rm, down), as a `docker exec` process belongs to its container. No cgroups: a no-op.
    pub async fn exec_join_cgroup(self: &Shared, r: &str, pid: i32) -> ApiResult<()> {
        let st = self.state.lock().await;
        let id = self.resolve_container(&st, r)?;
        if st.containers[&id].state.status != Status::Running {
            return Err(ApiError::conflict(format!("container {id} is not running")));
        }
        let Some(cg) = self.cgroups.as_ref() else { return Ok(()) };
        let dir = cg.sandbox(&id);
        if !dir.exists() {
            // A sandbox started by a netd without per-sandbox cgroups (adopted after an upgrade).
            return Ok(());
        }
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .map_err(|e| ApiError::internal(format!("moving process {pid} into {}: {e}", procs.display())))
    }

    pub async fn kill(self: &Shared, r: &str, signal: &str) -> ApiResult<()> {
        let st = self.state.lock().await;
        let id = self.resolve_container(&st, r)?;
        let c = &st.containers[&id];
        if c.state.status != Status::Running {
            return Err(ApiError::conflict(format!("cannot kill container: {r}: container {id} is not running")));
        }
        let sig = parse_signal(signal).ok_or_else(|| ApiError::bad(format!("Invalid signal: {signal}")))?;
        shim::signal_command(c.state.pid, c.state.shim_pid, sig)
            .map_err(|e| ApiError::internal(format!("cannot kill container: {r}: {e}")))?;
        self.events.emit("container", "kill", &id, &[("name", c.name.clone()), ("signal", (sig as i32).to_string())]);
        Ok(())
    }

    /// True once the sandbox is no longer running with this shim (or `timeout` passed: false).
    async fn wait_not_running(self: &Shared, id: &str, shim_pid: i32, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            {
                let st = self.state.lock().await;
                match st.containers.get(id) {
                    None => return true,
                    Some(c) if c.state.status != Status::Running || c.state.shim_pid != shim_pid => return true,
                    _ => {}
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// `POST /containers/{id}/wait`: block until not running; the exit code.
    pub async fn wait(self: &Shared, r: &str) -> ApiResult<i64> {
        loop {
            let notified = self.changed.notified();
            {
                let st = self.state.lock().await;
                let id = match self.resolve_container(&st, r) {
                    Ok(id) => id,
                    Err(e) => return Err(e),
                };
                let c = &st.containers[&id];
                if c.state.status != Status::Running {
                    return Ok(c.state.exit_code);
                }
            }
            notified.await;
        }
    }

    /// `DELETE /containers/{id}`.
    pub async fn remove(self: &Shared, r: &str, force: bool) -> ApiResult<()> {
        let id = {
            let st = self.state.lock().await;
            self.resolve_container(&st, r)?
        };
        // A running sandbox is stopped first (its exit path tears its networking down, under
        // its op lock); a start that slips in between is caught by the check under the op lock.
        let mut early = Vec::new();
        for _ in 0..3 {
            let (running, name, shim_pid) = {
                let st = self.state.lock().await;
                let Some(c) = st.containers.get(&id) else {
                    return Err(ApiError::not_found(format!("No such container: {r}")));
                };
                (c.state.status == Status::Running, c.name.clone(), c.state.shim_pid)
            };
            if running {
                if !force {
                    return Err(ApiError::conflict(format!(
                        "cannot remove container \"/{name}\": container is running: stop the container before removing or force remove"
                    )));
                }
                self.kill(&id, "KILL").await.ok();
                self.kill_all(&id);
                // Its veths' deletion (the longest step of the teardown, an RCU barrier in the
                // kernel) overlaps with the processes' exit; the exit path's teardown finds
                // them gone. Awaited before the answer.
                if early.is_empty() {
                    let veths: Vec<String> = {
                        let st = self.state.lock().await;
                        let c = st.containers.get(&id);
                        c.map(|c| c.endpoints.iter().map(|e| e.host_veth.clone()).collect()).unwrap_or_default()
                    };
                    early.extend(veths.into_iter().map(|v| self.delete_link_task(v)));
                }
                super::steps::mark("rm:kill");
                self.wait_not_running(&id, shim_pid, Duration::from_secs(10)).await;
                super::steps::mark("rm:wait-exit");
            }
            let op = self.op_lock(&id).await;
            let still = {
                let st = self.state.lock().await;
                match st.containers.get(&id) {
                    None => return Ok(()), // removed meanwhile (--rm)
                    Some(c) => c.state.status == Status::Running,
                }
            };
            if still {
                drop(op);
                continue;
            }
            super::steps::mark("rm:op-lock");
            self.remove_sandbox(&id).await;
            super::steps::mark("rm:remove");
            for h in early {
                let _ = h.await;
            }
            drop(op);
            self.op_forget(&id);
            self.changed.notify_waiters();
            return Ok(());
        }
        Err(ApiError::conflict(format!("cannot remove container \"{r}\": it keeps being restarted")))
    }

    /// Tear down and forget a stopped sandbox (its op lock held).
    pub async fn remove_sandbox(self: &Shared, id: &str) {
        self.teardown_networking(id).await;
        super::crash_point("rm:torn-down");
        if let Some(c) = self.state.lock().await.containers.remove(id) {
            self.events.emit("container", "destroy", id, &[("name", c.name)]);
        }
        if let Err(e) = self.store.remove_container(id) {
            tracing::warn!(container = %id, error = %e, "removing state");
        }
    }

    /// Host-port allocation for a sandbox, all-or-nothing, of the host-address families `fam`
    /// on endpoint `ep` (programmed into the dataplane and committed by the caller).
    pub(super) fn publish_sandbox(
        &self,
        st: &mut State,
        c: &Container,
        ep: &Endpoint,
        fam: super::attach::Families,
    ) -> ApiResult<super::attach::Publishing> {
        let mut reqs = Vec::new();
        let proto = |p: &str| match p {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => Err(ApiError::bad(format!("unsupported protocol {other}"))),
        };
        for rb in &c.requested {
            let (start, end) = match rb.host_port.split_once('-') {
                Some((a, z)) => (a.parse().unwrap_or(0), z.parse().unwrap_or(0)),
                None => {
                    let p = rb.host_port.parse().unwrap_or(0);
                    (p, p)
                }
            };
            let host_ip: Option<IpAddr> = if rb.host_ip.is_empty() {
                None
            } else {
                Some(rb.host_ip.parse().map_err(|_| ApiError::bad(format!("Invalid ip address: {}", rb.host_ip)))?)
            };
            reqs.push(PortRequest {
                proto: proto(&rb.proto)?,
                host_ip,
                host_port_start: start,
                host_port_end: end,
                container_port: rb.container_port,
            });
        }
        if c.config.publish_all {
            let mut have: std::collections::HashSet<(u16, Proto)> =
                reqs.iter().map(|r| (r.container_port, r.proto)).collect();
            for key in &c.exposed {
                let (port, p) = key.split_once('/').unwrap_or((key, "tcp"));
                let port: u16 = port.parse().unwrap_or(0);
                let p = proto(p)?;
                if have.insert((port, p)) {
                    reqs.push(PortRequest {
                        proto: p,
                        host_ip: None,
                        host_port_start: 0,
                        host_port_end: 0,
                        container_port: port,
                    });
                }
            }
        }
        self.publish_reserve_families(st, &ep.endpoint_id, &reqs, fam)
    }

    /// Docker's link environment variables for this sandbox's `--link`s.
    fn link_env(&self, st: &State, c: &Container) -> Vec<String> {
        let mut env = Vec::new();
        for l in &c.config.links {
            let (name, alias) = l.split_once(':').unwrap_or((l, l));
            let Ok(tid) = self.resolve_container(st, name.trim_start_matches('/')) else { continue };
            let t = &st.containers[&tid];
            // Docker's link variables name the target's IPv4 address.
            let Some(ip) = t.endpoints.first().and_then(|e| e.ip) else { continue };
            env.extend(crate::etcfiles::link_env(alias, &c.name, &t.name, ip, &t.exposed, &t.config.env));
        }
        env
    }

    /// Whether sandbox `c` gets the IPv6 lines of /etc/hosts (Docker 26+'s `IPv6Enabled`): its
    /// namespace's loopback has IPv6; host mode: the daemon's namespace has it.
    pub(super) fn sandbox_ipv6(&self, c: &Container) -> bool {
        let ns = match &c.mode {
            NetworkMode::Host => {
                return std::fs::read_to_string("/proc/sys/net/ipv6/conf/lo/disable_ipv6")
                    .is_ok_and(|v| v.trim() == "0");
            }
            NetworkMode::Container(t) => self.cfg.netns_dir().join(t),
            _ => self.cfg.netns_dir().join(&c.id),
        };
        crate::netns::lo_ipv6_enabled(&ns)
    }

    /// Write hosts / resolv.conf / hostname for the sandbox and return the bind list.
    fn write_etc_files(
        &self,
        st: &State,
        c: &Container,
        eps: &[Endpoint],
        rt: &std::path::Path,
        lo_ipv6: Option<bool>,
    ) -> ApiResult<Vec<(PathBuf, PathBuf)>> {
        // container:NAME shares the target's files, as Docker does.
        if let NetworkMode::Container(tid) = &c.mode {
            let trt = self.cfg.runtime_dir(tid);
            return Ok(vec![
                (trt.join("hosts"), "/etc/hosts".into()),
                (trt.join("resolv.conf"), "/etc/resolv.conf".into()),
                (trt.join("hostname"), "/etc/hostname".into()),
            ]);
        }
        let gw = eps.first().and_then(|e| e.gateway).or_else(|| {
            st.networks
                .values()
                .find(|n| n.default_bridge)
                .and_then(|n| n.bridge.as_ref()?.ipv4.as_ref())
                .map(|v| v.gateway)
        });
        let mut extra: Vec<(String, IpAddr)> = Vec::new();
        for h in &c.config.extra_hosts {
            let (host, ip) = crate::etcfiles::parse_add_host(h).map_err(|e| ApiError::bad(e.to_string()))?;
            let ip = match ip {
                crate::etcfiles::HostIp::Ip(ip) => ip,
                crate::etcfiles::HostIp::HostGateway => {
                    IpAddr::V4(gw.ok_or_else(|| ApiError::bad("unable to derive the IP value for host-gateway"))?)
                }
            };
            extra.push((host, ip));
        }
        // Links on the default bridge: Docker's line is the alias, the target's hostname, then
        // its name unless the alias is the name (`IP\twebsrv <hostname> srv`).
        for l in &c.config.links {
            let (name, alias) = l.split_once(':').unwrap_or((l, l));
            if let Ok(tid) = self.resolve_container(st, name.trim_start_matches('/'))
                && let Some(ep) = st.containers[&tid].endpoints.first()
            {
                let t = &st.containers[&tid];
                let Some(ip) = ep.ip.map(IpAddr::V4).or(ep.ip6.map(IpAddr::V6)) else { continue };
                extra.push((link_hosts_names(alias, &t.hostname, &t.name), ip));
            }
        }
        let hosts = if matches!(c.mode, NetworkMode::Host) && extra.is_empty() {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            let own = super::netcrud::own_addrs(eps);
            let ipv6 = lo_ipv6.unwrap_or_else(|| self.sandbox_ipv6(c));
            crate::etcfiles::hosts_file(&c.hostname, &c.domainname, &own, &extra, ipv6)
        };
        let host_rc = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let dns: Vec<String> = if c.config.dns.is_empty() { self.cfg.up.dns.clone() } else { c.config.dns.clone() };
        let search =
            if c.config.dns_search.is_empty() { self.cfg.up.dns_search.clone() } else { c.config.dns_search.clone() };
        let opts =
            if c.config.dns_options.is_empty() { self.cfg.up.dns_opt.clone() } else { c.config.dns_options.clone() };
        let user_net = matches!(&c.mode, NetworkMode::Bridge(nid) if !st.networks[nid].default_bridge);
        let rc = if matches!(c.mode, NetworkMode::Host) {
            crate::etcfiles::resolv_conf_host_mode(&host_rc, "/etc/resolv.conf", &dns, &search, &opts)
        } else if user_net {
            crate::etcfiles::resolv_conf_internal(&host_rc, "/etc/resolv.conf", &dns, &search, &opts)
        } else {
            crate::etcfiles::resolv_conf_default(&host_rc, "/etc/resolv.conf", &dns, &search, &opts)
        };
        let write = |name: &str, content: &str| -> ApiResult<PathBuf> {
            let p = rt.join(name);
            std::fs::write(&p, content).map_err(|e| ApiError::internal(format!("writing {}: {e}", p.display())))?;
            Ok(p)
        };
        Ok(vec![
            (write("hosts", &hosts)?, "/etc/hosts".into()),
            (write("resolv.conf", &rc)?, "/etc/resolv.conf".into()),
            (write("hostname", &format!("{}\n", c.hostname))?, "/etc/hostname".into()),
        ])
    }
}

/// What a failed start must undo.
#[derive(Default)]
struct Undo {
    links: Vec<crate::dataplane::LinkRule>,
    links_net: Option<String>,
    netns: Option<PathBuf>,
    /// Addresses reserved whose veth was not made.
    reserved: Vec<super::attach::Reserved>,
    /// Veths made, not registered yet.
    made: Vec<crate::model::Attachment>,
    /// Registered endpoints.
    endpoints: Vec<Endpoint>,
    ports: Vec<PortMapping>,
    cgroup: bool,
}

fn validate_container_mode(req: &CreateRequest) -> ApiResult<()> {
    let err = |m: &str| Err(ApiError::bad(m));
    if req.hostname.is_some() {
        return err("conflicting options: hostname and the network mode");
    }
    if !req.links.is_empty() {
        return err(
            "conflicting options: container type network can't be used with links. This would result in undefined behavior",
        );
    }
    if !req.dns.is_empty() {
        return err("conflicting options: dns and the network mode");
    }
    if !req.extra_hosts.is_empty() {
        return err("conflicting options: custom host-to-IP mapping and the network mode");
    }
    if !req.publish.is_empty() || req.publish_all {
        return err("conflicting options: port publishing and the container type network mode");
    }
    if !req.expose.is_empty() {
        return err("conflicting options: port exposing and the container type network mode");
    }
    Ok(())
}

/// The names of a `--link` hosts line, in Docker's order: alias, the target's hostname, and
/// the target's name when it differs from the alias (no de-duplication beyond that, as Docker).
fn link_hosts_names(alias: &str, hostname: &str, name: &str) -> String {
    let alias = alias.trim_start_matches('/');
    let mut s = format!("{alias} {hostname}");
    if alias != name {
        s.push(' ');
        s.push_str(name);
    }
    s
}

/// Later entries win, like Docker's env merge.
fn dedup_env(env: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for kv in env.iter().rev() {
        let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k).to_string();
        if seen.insert(k) {
            out.push(kv.clone());
        }
    }
    out.reverse();
    *env = out;
}

pub fn parse_signal(s: &str) -> Option<nix::sys::signal::Signal> {
    use std::str::FromStr;
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok();
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    nix::sys::signal::Signal::from_str(&name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_dedup_keeps_last() {
        let mut e = vec!["PATH=/a".into(), "X=1".into(), "PATH=/b".into()];
        dedup_env(&mut e);
        assert_eq!(e, ["X=1", "PATH=/b"]);
    }

    #[test]
    fn link_hosts_line_is_dockers() {
        assert_eq!(link_hosts_names("websrv", "0123456789ab", "srv"), "websrv 0123456789ab srv");
        assert_eq!(link_hosts_names("srv", "0123456789ab", "srv"), "srv 0123456789ab");
        assert_eq!(link_hosts_names("srv", "myhost", "srv"), "srv myhost");
    }

    #[test]
    fn signals_parse_docker_forms() {
        assert_eq!(parse_signal("KILL"), Some(nix::sys::signal::Signal::SIGKILL));
        assert_eq!(parse_signal("sigterm"), Some(nix::sys::signal::Signal::SIGTERM));
        assert_eq!(parse_signal("9"), Some(nix::sys::signal::Signal::SIGKILL));
        assert_eq!(parse_signal("NOPE"), None);
    }

    #[test]
    fn container_mode_conflicts_in_docker_order() {
        let mut r = CreateRequest { hostname: Some("x".into()), publish: vec!["80".into()], ..Default::default() };
        assert_eq!(
            validate_container_mode(&r).unwrap_err().message,
            "conflicting options: hostname and the network mode"
        );
        r.hostname = None;
        assert_eq!(
            validate_container_mode(&r).unwrap_err().message,
            "conflicting options: port publishing and the container type network mode"
        );
        r.publish.clear();
        r.dns = vec!["1.1.1.1".into()];
        assert_eq!(validate_container_mode(&r).unwrap_err().message, "conflicting options: dns and the network mode");
    }
}
