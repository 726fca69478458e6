//! Sandbox lifecycle: create, start (namespace, veth, address, ports, /etc files, shim), stop,
//! remove, and the exit path. Docker's order and messages.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

use tokio::io::unix::AsyncFd;

use super::{ApiError, ApiResult, Daemon, Shared, State};
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
                    if !b.user_subnet {
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
        for spec in &req.publish {
            for b in crate::ports::parse_port_spec(spec).map_err(|e| ApiError::bad(e.to_string()))? {
                crate::ports::check_supported(&b, st.dp.ipv6(), &st.dp.backend().to_string())
                    .map_err(|e| ApiError::bad(e.to_string()))?;
                let key = format!("{}/{}", b.container_port, b.proto);
                if !exposed.contains(&key) {
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
                if !exposed.contains(&key) {
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
        };
        self.store.save_container(&c).map_err(|e| ApiError::internal(format!("saving state: {e}")))?;
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

    /// `POST /containers/{id}/start`.
    pub async fn start(self: &Shared, r: &str) -> ApiResult<()> {
        let mut st = self.state.lock().await;
        let id = self.resolve_container(&st, r)?;
        if st.containers[&id].state.status == Status::Running {
            return Ok(()); // Docker: starting a running container is a no-op
        }
        match self.start_locked(&mut st, &id).await {
            Ok(()) => {
                self.changed.notify_waiters();
                Ok(())
            }
            Err(e) => {
                if let Some(c) = st.containers.get_mut(&id) {
                    c.state.error = e.message.clone();
                    let _ = self.store.save_container(c);
                }
                Err(e)
            }
        }
    }

    async fn start_locked(self: &Shared, st: &mut State, id: &str) -> ApiResult<()> {
        let c = st.containers[id].clone();
        // container:NAME needs NAME running.
        let join_netns = match &c.mode {
            NetworkMode::Container(tid) => {
                if tid == id {
                    return Err(ApiError::bad("cannot join own network namespace"));
                }
                let t =
                    st.containers.get(tid).ok_or_else(|| ApiError::not_found(format!("No such container: {tid}")))?;
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
        self.check_links_running(st, &c)?;
        let rt = self.cfg.runtime_dir(id);
        std::fs::create_dir_all(&rt).map_err(|e| ApiError::internal(format!("creating {}: {e}", rt.display())))?;
        let mut undo = Undo::default();
        let result = self.bring_up(st, &c, join_netns, &mut undo).await;
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.roll_back(st, id, undo).await;
                Err(e)
            }
        }
    }

    /// Everything `start` does after validation; records what to undo on failure.
    async fn bring_up(
        self: &Shared,
        st: &mut State,
        c: &Container,
        join_netns: Option<PathBuf>,
        undo: &mut Undo,
    ) -> ApiResult<()> {
        let id = c.id.clone();
        let rt = self.cfg.runtime_dir(&id);
        // 1. Network namespace.
        let netns_path = match &c.mode {
            NetworkMode::Bridge(_) | NetworkMode::None => {
                let p = self.cfg.netns_dir().join(&id);
                crate::netns::create(&p).map_err(|e| ApiError::internal(format!("creating network namespace: {e}")))?;
                undo.netns = Some(p.clone());
                super::crash_point("run:netns");
                let pp = p.clone();
                tokio::task::spawn_blocking(move || crate::netlink::configure_sandbox(&pp, None))
                    .await
                    .map_err(|e| ApiError::internal(format!("bringing lo up: {e}")))?
                    .map_err(|e| ApiError::internal(format!("bringing lo up: {e}")))?;
                Some(p)
            }
            NetworkMode::Container(_) => join_netns.clone(),
            NetworkMode::Host => None,
        };
        // 2. Endpoints (bridge mode): veth, address, routes, dataplane.
        let mut endpoints = Vec::new();
        if let NetworkMode::Bridge(net_id) = &c.mode {
            let mut nets = vec![net_id.clone()];
            nets.extend(c.extra_networks.iter().cloned());
            for (i, nid) in nets.iter().enumerate() {
                let static_ip = if i == 0 { c.config.ip.as_deref().and_then(|s| s.parse().ok()) } else { None };
                let static_ip6 = if i == 0 { c.config.ip6.as_deref().and_then(|s| s.parse().ok()) } else { None };
                let aliases = if i == 0 { c.config.network_aliases.clone() } else { Vec::new() };
                let ep = self
                    .attach_endpoint(
                        st,
                        &id,
                        nid,
                        netns_path.as_ref().expect("bridge netns"),
                        i,
                        static_ip,
                        static_ip6,
                        c.config.mac_address.as_deref().filter(|_| i == 0),
                        aliases,
                    )
                    .await?;
                undo.endpoints.push(ep.clone());
                endpoints.push(ep);
            }
            super::crash_point("run:endpoint");
        }
        // 3. Published ports (bridge mode only; host mode discards them with a warning).
        let mut ports = Vec::new();
        if let (NetworkMode::Bridge(net_id), Some(ep)) = (&c.mode, endpoints.first()) {
            ports = self.publish_sandbox(st, c, ep)?;
            undo.ports = ports.clone();
            undo.ports_net = Some((net_id.clone(), ep.endpoint_id.clone()));
        }
        // 3b. --link on the default bridge: the exact (proto, port) pairs of the target's exposed
        // ports are opened under icc=false (replies follow through conntrack).
        let mut link_rules = Vec::new();
        if let (NetworkMode::Bridge(net_id), Some(ep)) = (&c.mode, endpoints.first()) {
            for l in &c.config.links {
                let name = l.split_once(':').map_or(l.as_str(), |(n, _)| n).trim_start_matches('/');
                let Ok(tid) = self.resolve_container(st, name) else { continue };
                let t = &st.containers[&tid];
                let Some(tep) = t.endpoints.iter().find(|e| &e.network_id == net_id) else { continue };
                for k in &t.exposed {
                    let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
                    let proto =
                        if proto == "udp" { crate::dataplane::Proto::Udp } else { crate::dataplane::Proto::Tcp };
                    if let Ok(port) = port.parse() {
                        let idx = st.networks[net_id].bridge.as_ref().map_or(0, |b| b.index);
                        link_rules.push(crate::dataplane::LinkRule {
                            network_index: idx,
                            src: ep.ip,
                            dst: tep.ip,
                            proto,
                            port,
                            v6: ep.ip6.zip(tep.ip6),
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
        // 4. /etc files.
        let files = self.write_etc_files(st, c, &endpoints, &rt)?;
        // 5. The shim and the process.
        let log = self.store.log_file(&id);
        let exit_file = rt.join("exit.json");
        let _ = std::fs::remove_file(&exit_file);
        let mut env: Vec<String> = Vec::new();
        env.push(format!("PATH={}", shim::DEFAULT_PATH));
        env.push(format!("HOSTNAME={}", c.hostname));
        env.extend(self.link_env(st, c));
        env.extend(c.config.env.iter().cloned());
        env.push("HOME=/root".into());
        dedup_env(&mut env);
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
        crate::model::write_json_atomic(&cfg_path, &shim_cfg)
            .map_err(|e| ApiError::internal(format!("writing shim config: {e}")))?;
        let exe = self.cfg.exe.clone();
        let cfgp = cfg_path.clone();
        let (shim_pid, pid) = match tokio::task::spawn_blocking(move || shim::spawn(&exe, &cfgp)).await {
            Ok(Ok(p)) => p,
            Ok(Err((code, msg))) => {
                if let Some(cc) = st.containers.get_mut(&id) {
                    cc.state.exit_code = code;
                }
                return Err(ApiError { status: if code == 125 { 500 } else { 400 }, message: msg });
            }
            Err(e) => return Err(ApiError::internal(format!("supervisor task: {e}"))),
        };
        super::crash_point("run:spawned");
        // 6. Commit.
        let cc = st.containers.get_mut(&id).expect("container");
        cc.state = RunState {
            status: Status::Running,
            pid,
            shim_pid,
            exit_code: 0,
            started_at: crate::model::rfc3339_now().0,
            finished_at: cc.state.finished_at.clone(),
            error: String::new(),
        };
        cc.endpoints = endpoints;
        cc.ports = ports;
        cc.link_rules = link_rules;
        cc.netns = netns_path.filter(|p| p.starts_with(self.cfg.netns_dir()));
        self.store.save_container(cc).map_err(|e| ApiError::internal(format!("saving state: {e}")))?;
        *undo = Undo::default();
        self.start_dns(st, &id);
        self.watch_exit(id, shim_pid, cfg_path);
        Ok(())
    }

    /// Undo a partial start: ports, endpoints, namespace — in reverse order.
    async fn roll_back(self: &Shared, st: &mut State, id: &str, undo: Undo) {
        if undo.cgroup {
            self.end_all(id).await;
        }
        if let Some(nid) = &undo.links_net
            && let Some(spec) = st.networks.get(nid).and_then(|n| n.spec(0))
        {
            let _ = st.dp.links_removed(&spec, &undo.links);
        }
        if let Some((nid, eid)) = &undo.ports_net {
            self.unpublish(st, eid, nid, &undo.ports).await;
        }
        for ep in undo.endpoints.iter().rev() {
            self.detach_endpoint(st, id, ep).await;
        }
        if let Some(p) = &undo.netns {
            let _ = crate::netns::delete(p);
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
            d.on_exit(&id, shim_pid).await;
        });
    }

    /// The sandbox's process ended: record the status, tear its networking down, auto-remove.
    pub async fn on_exit(self: &Shared, id: &str, shim_pid: i32) {
        let mut st = self.state.lock().await;
        let Some(c) = st.containers.get(id) else { return };
        if c.state.shim_pid != shim_pid || c.state.status != Status::Running {
            return; // a stale watcher (restarted since)
        }
        let rec = shim::read_exit(&self.cfg.runtime_dir(id).join("exit.json"));
        self.teardown_networking(&mut st, id).await;
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
        let auto_remove = c.config.auto_remove;
        if auto_remove {
            self.remove_locked(&mut st, id).await;
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Remove a stopped sandbox's processes (whatever its main process left running, as
    /// Docker ends a container with its init), networking (endpoints, ports, namespace) and
    /// runtime files. Sandboxes joined with `container:` lose `eth0` with it and keep `lo`.
    pub async fn teardown_networking(self: &Shared, st: &mut State, id: &str) {
        let Some(c) = st.containers.get(id).cloned() else { return };
        self.end_all(id).await;
        Self::stop_dns(st, id);
        if let (NetworkMode::Bridge(nid), false) = (&c.mode, c.link_rules.is_empty())
            && let Some(spec) = st.networks.get(nid).and_then(|n| n.spec(0))
            && let Err(e) = st.dp.links_removed(&spec, &c.link_rules)
        {
            tracing::warn!(container = %id, error = %e, "dataplane: removing link rules");
        }
        if let (NetworkMode::Bridge(nid), false) = (&c.mode, c.ports.is_empty()) {
            let eid =
                c.endpoints.iter().find(|e| &e.network_id == nid).map(|e| e.endpoint_id.clone()).unwrap_or_default();
            self.unpublish(st, &eid, nid, &c.ports).await;
            super::crash_point("rm:unpublished");
        }
        for ep in c.endpoints.iter().rev() {
            self.detach_endpoint(st, id, ep).await;
        }
        if !c.endpoints.is_empty() {
            super::crash_point("rm:detached");
        }
        if let Some(p) = &c.netns
            && let Err(e) = crate::netns::delete(p)
        {
            tracing::warn!(container = %id, error = %e, "removing network namespace");
        }
        let _ = std::fs::remove_dir_all(self.cfg.runtime_dir(id));
        if let Some(cc) = st.containers.get_mut(id) {
            cc.endpoints.clear();
            cc.ports.clear();
            cc.link_rules.clear();
            cc.netns = None;
        }
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
            return Ok(());
        }
        let _ = shim::signal_command(pid, shim_pid, nix::sys::signal::Signal::SIGKILL);
        self.kill_all(&id);
        if self.wait_not_running(&id, shim_pid, Duration::from_secs(10)).await {
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
        let (id, running) = {
            let st = self.state.lock().await;
            let id = self.resolve_container(&st, r)?;
            let running = st.containers[&id].state.status == Status::Running;
            (id, running)
        };
        if running {
            if !force {
                return Err(ApiError::conflict(
                    "cannot remove container \"/".to_string()
                        + &self.state.lock().await.containers[&id].name
                        + "\": container is running: stop the container before removing or force remove",
                ));
            }
            self.kill(&id, "KILL").await.ok();
            self.kill_all(&id);
            let shim_pid = self.state.lock().await.containers.get(&id).map(|c| c.state.shim_pid).unwrap_or(0);
            self.wait_not_running(&id, shim_pid, Duration::from_secs(10)).await;
        }
        let mut st = self.state.lock().await;
        self.remove_locked(&mut st, &id).await;
        drop(st);
        self.changed.notify_waiters();
        Ok(())
    }

    pub async fn remove_locked(self: &Shared, st: &mut State, id: &str) {
        self.teardown_networking(st, id).await;
        super::crash_point("rm:torn-down");
        st.containers.remove(id);
        if let Err(e) = self.store.remove_container(id) {
            tracing::warn!(container = %id, error = %e, "removing state");
        }
    }

    /// Host-port allocation for a starting sandbox, all-or-nothing, on its primary endpoint.
    fn publish_sandbox(&self, st: &mut State, c: &Container, ep: &Endpoint) -> ApiResult<Vec<PortMapping>> {
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
            for key in &c.exposed {
                let (port, p) = key.split_once('/').unwrap_or((key, "tcp"));
                let port: u16 = port.parse().unwrap_or(0);
                let p = proto(p)?;
                if !reqs.iter().any(|r| r.container_port == port && r.proto == p) {
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
        self.publish(st, &ep.endpoint_id, &reqs, &c.name)
    }

    /// Docker's link environment variables for this sandbox's `--link`s.
    fn link_env(&self, st: &State, c: &Container) -> Vec<String> {
        let mut env = Vec::new();
        for l in &c.config.links {
            let (name, alias) = l.split_once(':').unwrap_or((l, l));
            let Ok(tid) = self.resolve_container(st, name.trim_start_matches('/')) else { continue };
            let t = &st.containers[&tid];
            let Some(ep) = t.endpoints.first() else { continue };
            env.extend(crate::etcfiles::link_env(alias, &c.name, &t.name, ep.ip, &t.exposed, &t.config.env));
        }
        env
    }

    /// Write hosts / resolv.conf / hostname for the sandbox and return the bind list.
    fn write_etc_files(
        &self,
        st: &State,
        c: &Container,
        eps: &[Endpoint],
        rt: &std::path::Path,
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
        let gw = eps.first().map(|e| e.gateway).or_else(|| {
            st.networks.values().find(|n| n.default_bridge).and_then(|n| n.bridge.as_ref()).map(|b| b.gateway)
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
                extra.push((link_hosts_names(alias, &t.hostname, &t.name), IpAddr::V4(ep.ip)));
            }
        }
        let hosts = if matches!(c.mode, NetworkMode::Host) && extra.is_empty() {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            let own = super::netcrud::own_addrs(eps);
            crate::etcfiles::hosts_file(&c.hostname, &c.domainname, &own, &extra, true)
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
    endpoints: Vec<Endpoint>,
    ports: Vec<PortMapping>,
    /// (network id, endpoint id) the ports were published on.
    ports_net: Option<(String, String)>,
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
