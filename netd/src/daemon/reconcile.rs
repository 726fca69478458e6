//! Daemon start-up (adopting what a previous daemon left), serving, and teardown.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
    os::unix::ffi::OsStrExt,
    os::unix::fs::PermissionsExt,
    sync::Arc,
};

use tokio::net::UnixListener;

use super::{Config, Daemon, Shared, State, networks};
use crate::{
    dataplane::{HostBridge, HostInfo, Uplink},
    ipam::Ipv4Net,
    model::{BridgeNet, Network, NetworkMode, Status, Store},
    netlink::Netlink,
    ports::PortAllocator,
};

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("{0}")]
    Msg(String),
}

fn err(m: impl Into<String>) -> UpError {
    UpError::Msg(m.into())
}

/// `netd up`: build everything, serve until asked to stop, tear down.
pub async fn up(cfg: Config) -> Result<(), UpError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(err("netd up must run as root"));
    }
    for d in [&cfg.up.exec_root, &cfg.up.data_root, &cfg.netns_dir()] {
        std::fs::create_dir_all(d).map_err(|e| err(format!("creating {}: {e}", d.display())))?;
        let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
    }
    // One daemon per socket.
    if tokio::net::UnixStream::connect(&cfg.socket).await.is_ok() {
        return Err(err(format!("a netd daemon is already serving {}", cfg.socket.display())));
    }
    // The namespace mounts below a mount point of their own (see `netns::own_mount`). Made
    // here (not left by a `--live-restore` daemon whose sandboxes live below it): undone when
    // `up` fails before serving, so that bad input leaves nothing behind.
    struct UndoMount(Option<std::path::PathBuf>);
    impl Drop for UndoMount {
        fn drop(&mut self) {
            if let Some(dir) = self.0.take() {
                crate::netns::drop_own_mount(&dir);
            }
        }
    }
    let made = !crate::netns::is_mount_point(&cfg.netns_dir());
    crate::netns::own_mount(&cfg.netns_dir()).map_err(|e| err(format!("namespace directory: {e}")))?;
    let mut undo_mount = UndoMount(made.then(|| cfg.netns_dir()));
    let _ = std::fs::remove_file(&cfg.socket);
    // Docker's network plugin (legacy protocol): bound before anything changes (a second netd
    // fails here), served once everything it answers for is in place (calls wait in the backlog).
    let plugin = if cfg.up.docker_plugin == "none" {
        None
    } else {
        let p = super::docker_plugin::PluginSocket::bind(std::path::Path::new(&cfg.up.docker_plugin))
            .map_err(|e| err(format!("--docker-plugin: {e}")))?;
        tracing::info!(socket = %p.path.display(), "serving Docker's network plugin protocol");
        Some(p)
    };
    // One held socket per published port and address family (Docker's model; 10,000 ports are
    // 20,000 sockets): lift the fd limit to the kernel's `fs.nr_open`, as Docker's unit does
    // (`LimitNOFILE=infinity`), or at least the soft limit to the hard one without the privilege.
    let nr_open: libc::rlim_t =
        std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1 << 20);
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let want = libc::rlimit { rlim_cur: nr_open.max(lim.rlim_max), rlim_max: nr_open.max(lim.rlim_max) };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
    // Orphaned shims (after a daemon restart) are re-parented to us, so we can reap them.
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

    let nl = Netlink::open().map_err(|e| err(format!("netlink: {e}")))?;
    let store = Store::new(&cfg.up.data_root);
    let saved_ip_forward = super::sysctl_read("net.ipv4.ip_forward");

    // Networks: load, then make sure the predefined ones exist.
    let (nets, errs) = store.load_networks();
    for e in errs {
        tracing::warn!("ignoring unreadable network state: {e}");
    }
    let mut networks: BTreeMap<String, Network> = nets.into_iter().map(|n| (n.id.clone(), n)).collect();
    for n in networks::predefined(&mut networks) {
        store.save_network(&n).map_err(|e| err(format!("saving state: {e}")))?;
    }
    let routes = nl.ipv4_routes().await.map_err(|e| err(format!("listing routes: {e}")))?;
    let addr_pools = super::AddrPools::resolve(&cfg.up.default_address_pool, &cfg.up.data_root).map_err(err)?;
    let routes6: Vec<crate::ipam::Ipv6Net> = nl
        .ipv6_routes()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(a, l)| crate::ipam::Ipv6Net::new(a, l).ok())
        .collect();
    // `-b BRIDGE`: an existing bridge whose own address becomes the default bridge's gateway.
    let adopted = match cfg.up.bridge.as_deref() {
        None | Some("none") => None,
        Some(b) => {
            if nl.link_index(b).await.map_err(|e| err(e.to_string()))?.is_none() {
                return Err(err(format!("bridge {b} not found: create it first, or omit -b to let netd create netd0")));
            }
            let addrs = nl.ipv4_addrs_cidr(b).await.map_err(|e| err(e.to_string()))?;
            match (addrs.first(), &cfg.up.bip) {
                (Some(a), _) => Some(*a),
                (None, Some(_)) => None,
                (None, None) => return Err(err(format!("bridge {b} has no IPv4 address: give it one, or pass --bip"))),
            }
        }
    };
    let default_bridge = configure_default_bridge(&cfg, &mut networks, &routes, &routes6, &addr_pools, adopted)?;
    if let Some(n) = &default_bridge {
        store.save_network(n).map_err(|e| err(format!("saving state: {e}")))?;
    }

    // Uplinks: given, or the interfaces holding a default route.
    let (uplinks, (local_addrs, local_addrs6), docker_bridges) = resolve_uplinks(&nl, &cfg.up.uplink).await?;
    // Only once the flags have checked out against the host (-b, --uplink).
    if cfg.up.ip_forward && saved_ip_forward.as_deref() != Some("1") {
        super::sysctl_write("net.ipv4.ip_forward", "1").map_err(|e| err(format!("enabling ip_forward: {e}")))?;
    }
    // cgroup v2: where the sock_addr hooks attach, and the sandboxes' cgroups below it (so
    // host-mode sandboxes stay covered by the hooks).
    let cgroups = match crate::cgroup::Cgroups::setup(
        cfg.up.cgroup.as_deref(),
        &cfg.up.cgroup_parent,
        &cfg.up.exec_root.join("cgroup2"),
    ) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "no cgroup v2 for sandboxes: stopping a sandbox signals only its main process");
            None
        }
    };
    let host_info = HostInfo {
        uplinks,
        local_addrs,
        local_addrs6,
        docker_bridges,
        userland_proxy: cfg.up.userland_proxy,
        bpffs: cfg.up.bpffs.clone(),
        cgroup: cgroups.as_ref().map(|c| c.hook.clone()).or_else(|| cfg.up.cgroup.clone()),
        netns_cookie: crate::ebpf::current_netns_cookie().unwrap_or(0),
        xdp: cfg.up.xdp,
    };
    let mut dp = super::new_backend(cfg.up.dataplane, &cfg.up).map_err(err)?;
    // A backend without IPv6 refuses it up front, before anything is installed.
    if !dp.ipv6()
        && let Some(n) = networks.values().find(|n| n.bridge.as_ref().is_some_and(|b| b.ipv6.is_some()))
    {
        return Err(err(format!(
            "network {} has IPv6 enabled, which the {} dataplane does not support yet (use --dataplane iptables)",
            n.name, cfg.up.dataplane
        )));
    }
    dp.init(&host_info).map_err(|e| err(format!("dataplane: {e}")))?;
    // Subscribed before anything else changes routes (the networks' bridges come next).
    if let Some(bump) = dp.route_watcher() {
        follow_routes(bump);
    }
    let dp = super::Dp::new(dp);

    let daemon = Arc::new(Daemon {
        cfg: cfg.clone(),
        store,
        nl,
        dp: dp.clone(),
        state: super::StateLock::new(State {
            containers: BTreeMap::new(),
            networks,
            attachments: BTreeMap::new(),
            dp,
            allocator: PortAllocator::default(),
            pools: HashMap::new(),
            pools6: HashMap::new(),
            held: HashMap::new(),
            proxies: HashMap::new(),
            publish_timing: Default::default(),
            docker_timing: Default::default(),
            docker_join: HashMap::new(),
            starting: HashMap::new(),
            dns: HashMap::new(),
            host_info,
        }),
        changed: tokio::sync::Notify::new(),
        shutdown: tokio::sync::Notify::new(),
        started: std::time::Instant::now(),
        saved_ip_forward,
        cgroups,
        teardown_progress: tokio::sync::watch::Sender::new(Default::default()),
        addr_pools,
        ops: Default::default(),
        events: Default::default(),
        dp_monitor: Default::default(),
        deferred_links: Default::default(),
        teardown_slots: tokio::sync::Semaphore::new(16),
        pending_link_deletes: Default::default(),
        link_deleted: tokio::sync::Notify::new(),
        netns_spare: Default::default(),
        netns_refilling: Default::default(),
    });

    // Bridges and dataplane networks.
    {
        let mut st = daemon.state.lock().await;
        let nets: Vec<Network> = st.networks.values().cloned().collect();
        for n in nets {
            let Some(b) = &n.bridge else { continue };
            let idx = daemon.ensure_bridge(b).await.map_err(err)?;
            if let Some(pool) = Daemon::pool_for(b) {
                st.pools.insert(n.id.clone(), pool);
            }
            if let Some(v6) = &b.ipv6 {
                st.pools6.insert(n.id.clone(), Daemon::pool6_for(v6));
            }
            st.dp.network_added(&n.spec(idx).expect("bridge")).map_err(|e| err(format!("dataplane: {e}")))?;
        }
    }
    reconcile_containers(&daemon).await;

    let listener =
        UnixListener::bind(&cfg.socket).map_err(|e| err(format!("listening on {}: {e}", cfg.socket.display())))?;
    std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(format!("chmod {}: {e}", cfg.socket.display())))?;
    tracing::info!(socket = %cfg.socket.display(), dataplane = %cfg.up.dataplane, "netd is up");
    println!("netd is up: unix://{} (dataplane {})", cfg.socket.display(), cfg.up.dataplane);
    // Serving: the shutdown (`teardown`) undoes the mount from here on.
    undo_mount.0 = None;
    // systemd's Type=notify: the socket serves from here on.
    crate::sdnotify::notify("READY=1");
    // The first sandbox's network namespace, made ahead.
    daemon.refill_netns();

    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| err(e.to_string()))?;
    let mut int =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(|e| err(e.to_string()))?;
    let stop = daemon.shutdown.notified();
    tokio::pin!(stop);
    // Conntrack expiry: the dataplane's GC pass every 10 s (idle and closed flows go; the LRU
    // only evicts when the table is full, which would make new flows pay for eviction).
    // dockerd's --metrics-addr: Prometheus text on GET /metrics (the dataplane's counters and
    // publish timing), plain TCP in the daemon's namespace.
    // (The address was validated before anything was set up; a port in use is logged, not fatal.)
    if let Some(a) = &cfg.up.metrics_addr {
        match tokio::net::TcpListener::bind(a).await {
            Ok(l) => {
                let d = daemon.clone();
                tokio::spawn(async move {
                    while let Ok((s, _)) = l.accept().await {
                        let d = d.clone();
                        tokio::spawn(async move { serve_metrics(d, s).await });
                    }
                });
            }
            Err(e) => tracing::error!(addr = %a, error = %e, "--metrics-addr: not serving metrics"),
        }
    }
    tokio::spawn(follow_host(daemon.clone()));
    let mut gc = tokio::time::interval(std::time::Duration::from_secs(10));
    gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = gc.tick() => {
                let d = daemon.clone();
                tokio::spawn(async move {
                    d.gc_docker_endpoints().await;
                    // The conntrack scan runs without the state lock (and the dataplane's).
                    match d.dp.ct_run(true).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(expired = n, "conntrack gc"),
                        Err(e) => tracing::warn!(error = %e, "conntrack gc"),
                    }
                });
            }
            r = super::docker_plugin::accept_opt(&plugin) => {
                if let Ok(stream) = r {
                    let d = daemon.clone();
                    tokio::spawn(async move { super::docker_plugin::serve_conn(d, stream).await });
                }
            }
            r = listener.accept() => {
                if let Ok((stream, _)) = r {
                    let d = daemon.clone();
                    tokio::spawn(async move { super::handlers::serve_conn(d, stream).await });
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = &mut stop => break,
        }
    }
    crate::sdnotify::notify("STOPPING=1");
    // The plugin socket goes first: Docker must not find a dead one (every scan would dial it).
    drop(plugin);
    drop(listener);
    let _ = std::fs::remove_file(&cfg.socket);
    teardown(&daemon).await;
    daemon.teardown_progress.send_modify(|p| p.done = true);
    // Let `netd down` streams write their last line before the process exits (bounded).
    if daemon.teardown_progress.receiver_count() > 0 {
        for _ in 0..50 {
            if daemon.teardown_progress.receiver_count() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The default bridge: Docker's docker0 model (`-b`, `--bip`, `--fixed-cidr`, `--mtu`, `--icc`,
/// `--ip`), or none with `-b none`.
fn configure_default_bridge(
    cfg: &Config,
    networks: &mut BTreeMap<String, Network>,
    routes: &[Ipv4Net],
    routes6: &[crate::ipam::Ipv6Net],
    pools: &super::AddrPools,
    adopted: Option<(Ipv4Addr, u8)>,
) -> Result<Option<Network>, UpError> {
    let existing = networks.values().find(|n| n.default_bridge).map(|n| n.id.clone());
    if cfg.up.bridge.as_deref() == Some("none") {
        if let Some(id) = existing {
            networks.remove(&id);
        }
        return Ok(None);
    }
    let (bridge, owned) = match cfg.up.bridge.as_deref() {
        Some(b) => (b.to_string(), false),
        None => (networks::DEFAULT_BRIDGE.to_string(), true),
    };
    // Our own earlier bridge's route must not push us off our own subnet.
    let prev = existing.as_ref().and_then(|id| networks[id].bridge.clone());
    // The default bridge always has IPv4 (Docker's too).
    let prev4 = prev.as_ref().and_then(|p| p.ipv4.clone().map(|v| (p.bridge.clone(), v)));
    let routes: Vec<Ipv4Net> = routes
        .iter()
        .filter(|r| {
            prev4.as_ref().is_none_or(|(_, p)| {
                !(r.addr() == Ipv4Net::new(p.subnet, p.prefix_len).map(|n| n.addr()).unwrap_or(r.addr())
                    && r.prefix_len() == p.prefix_len)
            })
        })
        .copied()
        .collect();
    let (subnet, gateway) = match (&cfg.up.bip, &prev4, adopted) {
        (None, _, Some((a, p))) => (Ipv4Net::new(a, p).map_err(|e| err(e.to_string()))?, a),
        (None, Some((pb, p)), None) if *pb == bridge => {
            (Ipv4Net::new(p.subnet, p.prefix_len).map_err(|e| err(e.to_string()))?, p.gateway)
        }
        _ => networks::default_bridge_subnet(cfg.up.bip.as_deref(), &routes, &pools.v4).map_err(err)?,
    };
    // `--ipv6`: `--fixed-cidr-v6` as given (gateway ::1 of it), else the previous daemon's v6
    // subnet, else a /64 of the default v6 pools (Docker 27+).
    let ipv6 = if cfg.up.ipv6 {
        let prev6 = prev.as_ref().filter(|p| p.bridge == bridge).and_then(|p| p.ipv6.clone());
        let (sub6, user) = match (&cfg.up.fixed_cidr_v6, &prev6) {
            (Some(f), _) => (crate::ipam::parse_fixed_cidr_v6(f).map_err(err)?.trunc(), true),
            (None, Some(p)) if !p.user_subnet => {
                (crate::ipam::Ipv6Net::new(p.subnet, p.prefix_len).map_err(|e| err(e.to_string()))?, false)
            }
            (None, _) => {
                let mut taken: Vec<crate::ipam::Ipv6Net> = networks
                    .values()
                    .filter(|n| !n.default_bridge)
                    .filter_map(|n| n.bridge.as_ref()?.ipv6.as_ref())
                    .filter_map(|v| crate::ipam::Ipv6Net::new(v.subnet, v.prefix_len).ok())
                    .collect();
                taken.extend(routes6.iter().copied());
                let n = crate::ipam::pick_free_subnet6(&pools.v6, &taken)
                    .ok_or_else(|| err("no free IPv6 subnet in the default address pools for the default bridge"))?;
                (n, false)
            }
        };
        let gw6 = match &prev6 {
            Some(p) if p.subnet == sub6.network() && p.prefix_len == sub6.prefix_len() => p.gateway,
            _ => sub6.first_host(),
        };
        Some(crate::model::BridgeNetV6 {
            subnet: sub6.network(),
            prefix_len: sub6.prefix_len(),
            gateway: gw6,
            ip_range: None,
            user_subnet: user,
            gateway_mode: Default::default(),
        })
    } else {
        None
    };
    let ip_range = match &cfg.up.fixed_cidr {
        Some(fc) => {
            let r = crate::ipam::parse_fixed_cidr(fc, &subnet).map_err(|e| err(e.to_string()))?;
            Some((r.addr(), r.prefix_len()))
        }
        None => None,
    };
    let host_ip: Ipv4Addr = match &cfg.up.ip {
        Some(s) => s.parse().map_err(|_| err(format!("invalid --ip {s:?}: not an IPv4 address")))?,
        None => Ipv4Addr::UNSPECIFIED,
    };
    let b = BridgeNet {
        index: 1,
        bridge,
        owned,
        ipv4: Some(crate::model::BridgeNetV4 {
            subnet: subnet.network(),
            prefix_len: subnet.prefix_len(),
            gateway,
            ip_range,
            user_subnet: cfg.up.bip.is_some(),
            gateway_mode: Default::default(),
        }),
        icc: cfg.up.icc,
        masquerade: true,
        host_binding_ipv4: host_ip,
        mtu: cfg.up.mtu.unwrap_or(networks::DEFAULT_MTU),
        ipv6,
    };
    let mut options = BTreeMap::new();
    options.insert("com.docker.network.bridge.default_bridge".into(), "true".into());
    options.insert("com.docker.network.bridge.enable_icc".into(), b.icc.to_string());
    options.insert("com.docker.network.bridge.enable_ip_masquerade".into(), "true".into());
    options.insert("com.docker.network.bridge.host_binding_ipv4".into(), host_ip.to_string());
    options.insert("com.docker.network.bridge.name".into(), b.bridge.clone());
    options.insert("com.docker.network.driver.mtu".into(), b.mtu.to_string());
    let n = Network {
        id: existing.clone().unwrap_or_else(crate::names::new_id),
        name: "bridge".into(),
        driver: "bridge".into(),
        created: existing
            .as_ref()
            .map(|id| networks[id].created.clone())
            .unwrap_or_else(|| crate::model::rfc3339_now().0),
        default_bridge: true,
        bridge: Some(b),
        internal: false,
        options,
    };
    networks.insert(n.id.clone(), n.clone());
    Ok(Some(n))
}

type HostView = (Vec<Uplink>, (Vec<Ipv4Addr>, Vec<std::net::Ipv6Addr>), Vec<HostBridge>);

async fn resolve_uplinks(nl: &Netlink, given: &[String]) -> Result<HostView, UpError> {
    let links = nl.host_links().await.map_err(|e| err(format!("listing links: {e}")))?;
    if let Some(n) = given.iter().find(|g| !links.iter().any(|l| &l.name == *g)) {
        return Err(err(format!("uplink {n} not found")));
    }
    Ok(host_view(&links, given))
}

/// The uplinks, the local IPv4 addresses (127/8 aside) and the bridges named like Docker's of a
/// link listing.
pub fn host_view(links: &[crate::netlink::HostLink], given: &[String]) -> HostView {
    let uplinks = crate::netlink::select_uplinks(links, given)
        .into_iter()
        .map(|l| Uplink {
            name: l.name.clone(),
            ifindex: l.index,
            addrs: l.addrs.clone(),
            addrs6: l.addrs6.clone(),
            kind: l.kind.clone(),
            l3: l.l3 && !l.ether,
        })
        .collect();
    let mut addrs: Vec<Ipv4Addr> =
        links.iter().flat_map(|l| l.addrs.iter().copied()).filter(|a| !a.is_loopback()).collect();
    addrs.sort();
    addrs.dedup();
    let mut addrs6: Vec<std::net::Ipv6Addr> =
        links.iter().flat_map(|l| l.addrs6.iter().copied()).filter(|a| !a.is_loopback()).collect();
    addrs6.sort();
    addrs6.dedup();
    let bridges = links
        .iter()
        .filter(|l| l.kind == "bridge" && crate::dataplane::is_docker_bridge_name(&l.name))
        .map(|l| HostBridge { name: l.name.clone(), ifindex: l.index })
        .collect();
    (uplinks, (addrs, addrs6), bridges)
}

/// Call `bump` on every route, neighbour, link or address change of the daemon's namespace
/// (each can change where a flow's packets go next), at once, without the state lock.
fn follow_routes(mut bump: Box<dyn FnMut() + Send>) {
    use futures::StreamExt;
    use rtnetlink::MulticastGroup as G;
    let (conn, _h, mut msgs) = match rtnetlink::new_multicast_connection(&[
        G::Ipv4Route,
        G::Ipv6Route,
        G::Neigh,
        G::Link,
        G::Ipv4Ifaddr,
        G::Ipv6Ifaddr,
    ]) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "not following route changes: routes are looked up per packet");
            return;
        }
    };
    tokio::spawn(conn);
    tokio::spawn(async move {
        while msgs.next().await.is_some() {
            bump();
        }
    });
}

/// Follow the host's interfaces and addresses (rtnetlink): uplinks that appear get the
/// programs, addresses that appear or change enter the maps, as with Docker, whose rules name
/// no interface (`--dst-type LOCAL`, `! -o bridge`).
pub async fn follow_host(d: Shared) {
    use futures::StreamExt;
    let mut rx = match crate::netlink::watch_links() {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(error = %e, "not following interface changes");
            return;
        }
    };
    while rx.next().await.is_some() {
        // A change comes as a burst of messages (link, address, up): look once it settles.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        while rx.try_recv().is_ok() {}
        let links = match d.nl.host_links().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing links");
                continue;
            }
        };
        let (uplinks, (addrs, addrs6), bridges) = host_view(&links, &d.cfg.up.uplink);
        let mut st = d.state.lock().await;
        if st.host_info.uplinks == uplinks
            && st.host_info.local_addrs == addrs
            && st.host_info.local_addrs6 == addrs6
            && st.host_info.docker_bridges == bridges
        {
            continue;
        }
        tracing::info!(
            uplinks = ?uplinks.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            addrs = ?addrs,
            docker_bridges = ?bridges.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
            "host interfaces changed"
        );
        st.host_info.uplinks = uplinks;
        st.host_info.local_addrs = addrs;
        st.host_info.local_addrs6 = addrs6;
        st.host_info.docker_bridges = bridges;
        let hi = st.host_info.clone();
        if let Err(e) = st.dp.host_changed(&hi) {
            tracing::warn!(error = %e, "dataplane: following interface changes");
        }
    }
}

/// Adopt sandboxes whose supervisor still runs; clean up the rest; remove orphans (veths on
/// our bridges and namespace mounts that no sandbox owns).
async fn reconcile_containers(d: &Shared) {
    let (containers, errs) = d.store.load_containers();
    for e in errs {
        tracing::warn!("ignoring unreadable container state: {e}");
    }
    let mut st = d.state.lock().await;
    let mut to_clean = Vec::new();
    let mut adopted: HashSet<String> = HashSet::new();
    for mut c in containers {
        let cfg_path = d.cfg.runtime_dir(&c.id).join("shim.json");
        if c.state.status == Status::Running {
            if crate::shim::is_alive(c.state.shim_pid, &cfg_path) {
                // Re-register its attachments: addresses, ports, dataplane (all idempotent),
                // then its link rules.
                let primary = match &c.mode {
                    NetworkMode::Bridge(nid) => Some(nid.clone()),
                    _ => None,
                };
                for ep in &c.endpoints {
                    // Each binding with the endpoint of the network it goes through (one per
                    // family when the v4 and v6 gateways differ).
                    let idx = st.networks.get(&ep.network_id).and_then(|n| n.bridge.as_ref()).map(|b| b.index);
                    let ports: Vec<_> = c.ports.iter().filter(|m| Some(m.network_index) == idx).cloned().collect();
                    let a = crate::model::Attachment::from_endpoint(&c.id, ep, c.netns.clone(), ports);
                    d.adopt(&mut st, a).await;
                    if primary.as_deref() == Some(ep.network_id.as_str())
                        && !c.link_rules.is_empty()
                        && let Some(spec) = st.networks.get(&ep.network_id).and_then(|n| n.spec(0))
                    {
                        let _ = st.dp.links_added(&spec, &c.link_rules);
                    }
                }
                let shim_pid = c.state.shim_pid;
                let id = c.id.clone();
                adopted.insert(id.clone());
                st.containers.insert(c.id.clone(), c);
                d.start_dns(&mut st, &id);
                d.watch_exit(id, shim_pid, cfg_path);
                continue;
            }
            to_clean.push(c.id.clone());
        } else if !c.endpoints.is_empty() || !c.ports.is_empty() || c.netns.is_some() {
            // Stopped, but a crash interrupted its teardown: finish it.
            to_clean.push(c.id.clone());
        }
        if c.state.status == Status::Running {
            let rec = crate::shim::read_exit(&d.cfg.runtime_dir(&c.id).join("exit.json"));
            c.state.exit_code = rec.as_ref().map_or(255, |r| r.exit_code);
            c.state.finished_at = rec.map_or_else(|| crate::model::rfc3339_now().0, |r| r.finished_at);
        }
        st.containers.insert(c.id.clone(), c);
    }
    // Supervisors of sandboxes that never committed (the daemon died between starting the
    // process and saving its state) run on with nobody owning them: stop them.
    for id in kill_stray_shims(&d.cfg.up.exec_root.join("containers"), &adopted) {
        d.end_all(&id).await;
    }
    drop(st);
    for id in &to_clean {
        d.teardown_networking(id).await;
    }
    let mut st = d.state.lock().await;
    for id in to_clean {
        if let Some(c) = st.containers.get_mut(&id)
            && c.state.status == Status::Running
        {
            c.state.status = Status::Exited;
            c.state.pid = 0;
            c.state.shim_pid = 0;
            let _ = d.store.save_container(c);
        }
    }
    // Docker's and CNI's attachments (persisted by the attachment core).
    d.reconcile_attachments(&mut st).await;
    // Cgroups of sandboxes not running (a crash between creating one and starting the command,
    // or during a stop): nothing of them may run on.
    let stopped: Vec<String> =
        st.containers.values().filter(|c| c.state.status != Status::Running).map(|c| c.id.clone()).collect();
    for id in stopped {
        d.end_all(&id).await;
    }
    // The dataplane now holds exactly the replayed state plus whatever a crash left: drop the rest.
    match st.dp.prune() {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "dataplane: removed state of sandboxes that are gone"),
        Err(e) => tracing::warn!(error = %e, "dataplane: pruning stale state"),
    }
    // Orphans: namespace mounts and veths on our bridges that nobody owns.
    let owned_ns: HashSet<_> = st.containers.values().filter_map(|c| c.netns.clone()).collect();
    if let Ok(rd) = std::fs::read_dir(d.cfg.netns_dir()) {
        for e in rd.flatten() {
            if !owned_ns.contains(&e.path()) {
                tracing::info!(path = %e.path().display(), "removing orphan network namespace");
                let _ = crate::netns::delete(&e.path());
            }
        }
    }
    let owned_veths: HashSet<String> = st
        .containers
        .values()
        .flat_map(|c| c.endpoints.iter().map(|e| e.host_veth.clone()))
        .chain(st.attachments.values().map(|a| a.host_veth.clone()))
        .collect();
    let bridges: Vec<String> =
        st.networks.values().filter_map(|n| n.bridge.as_ref().map(|b| b.bridge.clone())).collect();
    for br in bridges {
        if let Ok(ports) = d.nl.bridge_ports(&br).await {
            for p in ports {
                if p.starts_with("veth") && !owned_veths.contains(&p) {
                    tracing::info!(veth = %p, bridge = %br, "removing orphan veth");
                    let _ = d.nl.delete_link(&p).await;
                }
            }
        }
    }
    // A pair created but not yet enslaved or moved (a crash right after creating it): both ends
    // are still here, the peer under its temporary `vp…` name. Only netd names its peers so.
    if let Ok(links) = d.nl.links().await {
        for (name, kind) in links {
            if let Some(sfx) = name.strip_prefix("vp")
                && kind == "veth"
                && !owned_veths.contains(&format!("veth{sfx}"))
            {
                tracing::info!(veth = %name, "removing orphan veth pair");
                let _ = d.nl.delete_link(&name).await;
            }
        }
    }
}

async fn serve_metrics(d: Shared, s: tokio::net::TcpStream) {
    crate::api::serve_connection(s, move |req| {
        let d = d.clone();
        async move {
            const TEXT: &str = "text/plain; version=0.0.4";
            match (req.method(), req.uri().path()) {
                (&hyper::Method::GET, "/metrics") => {
                    let v = d.stats_json().await.unwrap_or_default();
                    crate::api::response(200, TEXT, crate::format::prometheus(&v))
                }
                (_, "/metrics") => {
                    let mut r = crate::api::response(405, TEXT, "405 method not allowed\n");
                    r.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("GET"));
                    r
                }
                _ => crate::api::response(404, TEXT, "404 page not found\n"),
            }
        }
    })
    .await;
}

/// SIGKILL (process group: the supervisor and its command) every `netd shim` whose config lives
/// under `containers_dir` and belongs to no adopted sandbox.
fn kill_stray_shims(containers_dir: &std::path::Path, adopted: &HashSet<String>) -> Vec<String> {
    let mut killed = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.len() < 3 || args[1] != b"shim" {
            continue;
        }
        let cfg = std::path::Path::new(std::ffi::OsStr::from_bytes(args[2]));
        let Ok(rel) = cfg.strip_prefix(containers_dir) else { continue };
        let Some(id) = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()) else { continue };
        if !adopted.contains(&id) {
            tracing::info!(container = %id, pid, "stopping the supervisor of a sandbox that never started");
            // SAFETY: signalling a process group we identified by its command line.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
            killed.push(id);
        }
    }
    killed
}

impl Daemon {
    /// The link group of this daemon's host veths (made in it), which the shutdown deletes in
    /// one request: "ne" in ASCII and 16 bits of the socket path's hash, so that daemons
    /// sharing a namespace keep apart.
    pub fn teardown_group(&self) -> u32 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.cfg.socket.hash(&mut h);
        0x6e65_0000 | (h.finish() as u32 & 0xffff)
    }
}

/// Stop sandboxes `ids` at shutdown as `netd stop` does (SIGTERM, up to the stop timeout, then
/// SIGKILL), all at once and with one waiter: a waiter per sandbox woke on every exit, N×N
/// wake-ups for N sandboxes. `netd down` streams the count as they stop.
async fn stop_all(d: &Shared, ids: &[String]) {
    use nix::sys::signal::Signal;
    let total = ids.len();
    d.teardown_progress.send_modify(|p| *p = crate::daemon::TeardownProgress { stopped: 0, total, done: false });
    let signal_all = |sig: Signal| {
        let d = d.clone();
        async move {
            let st = d.state.lock().await;
            let mut running = Vec::new();
            for id in ids {
                if let Some(c) = st.containers.get(id)
                    && c.state.status == Status::Running
                {
                    let _ = crate::shim::signal_command(c.state.pid, c.state.shim_pid, sig);
                    running.push(id.clone());
                }
            }
            running
        }
    };
    let wait_all = |timeout: std::time::Duration| {
        let d = d.clone();
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let notified = d.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let left = {
                    let st = d.state.lock().await;
                    ids.iter()
                        .filter(|id| st.containers.get(*id).is_some_and(|c| c.state.status == Status::Running))
                        .count()
                };
                d.teardown_progress.send_modify(|p| p.stopped = total - left);
                if left == 0 || tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return left;
                }
            }
        }
    };
    let termed = signal_all(Signal::SIGTERM).await;
    let left = wait_all(std::time::Duration::from_secs(super::containers::DEFAULT_STOP_TIMEOUT as u64)).await;
    if left > 0 {
        for id in signal_all(Signal::SIGKILL).await {
            d.kill_all(&id);
        }
        if wait_all(std::time::Duration::from_secs(10)).await > 0 {
            tracing::warn!("stopping on shutdown: some sandboxes did not stop");
        }
    }
    let st = d.state.lock().await;
    for id in termed {
        if st.containers.get(&id).is_some_and(|c| c.state.status != Status::Running) {
            d.events.emit("container", "stop", &id, &[]);
        }
    }
}

/// Stop everything and remove what netd created (unless `--live-restore`).
pub async fn teardown(d: &Shared) {
    if d.cfg.up.live_restore {
        if let Err(e) = d.dp.shutdown(true) {
            tracing::warn!(error = %e, "dataplane shutdown");
        }
        if let Some(cg) = &d.cgroups {
            // The sandboxes' cgroups stay (the next daemon finds them); only our mount goes.
            cg.unmount();
        }
        tracing::info!("live-restore: sandboxes and dataplane left running");
        return;
    }
    let ids: Vec<String> = {
        let st = d.state.lock().await;
        st.containers.values().filter(|c| c.state.status == Status::Running).map(|c| c.id.clone()).collect()
    };
    // Host veths are deleted in one batch at the end, their programs after them.
    *d.deferred_links.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
    d.wait_link_deletes(std::time::Duration::from_secs(10)).await;
    d.netns_spare.lock().unwrap_or_else(|e| e.into_inner()).take();
    d.dp.tearing_down();
    stop_all(d, &ids).await;
    let running: Vec<String> = {
        let st = d.state.lock().await;
        st.containers.values().filter(|c| !c.endpoints.is_empty() || c.netns.is_some()).map(|c| c.id.clone()).collect()
    };
    futures::future::join_all(running.iter().map(|id| d.teardown_networking(id))).await;
    // Attachments of other owners (Docker endpoints, CNI) go with their networks, all at once
    // (the kernel work without the state lock).
    let rest: Vec<crate::model::Attachment> = d.state.lock().await.attachments.values().cloned().collect();
    futures::future::join_all(rest.iter().map(|a| d.detach_unlocked(a))).await;
    d.dp.ct_final().await;
    let veths = d.deferred_links.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
    if let Err(e) = d.nl.delete_links(&veths, d.teardown_group()).await {
        tracing::warn!(error = %e, "deleting the sandboxes' veths");
    }
    // Namespaces left over (each sandbox's teardown removed its own), in one lazy unmount of
    // their directory.
    let dir = d.cfg.netns_dir();
    let _ = tokio::task::spawn_blocking(move || crate::netns::delete_all(&dir)).await;
    let st = d.state.lock().await;
    let nets: Vec<Network> = st.networks.values().cloned().collect();
    for n in &nets {
        if let Some(spec) = n.spec(0) {
            let _ = st.dp.network_removed(&spec);
        }
    }
    if let Err(e) = st.dp.shutdown(false) {
        tracing::warn!(error = %e, "dataplane shutdown");
    }
    for n in &nets {
        if let Some(b) = &n.bridge
            && b.owned
            && let Err(e) = d.nl.delete_link(&b.bridge).await
        {
            tracing::warn!(bridge = %b.bridge, error = %e, "deleting bridge");
        }
    }
    if let Some(v) = &d.saved_ip_forward
        && v != "1"
    {
        let _ = super::sysctl_write("net.ipv4.ip_forward", v);
    }
    if let Some(cg) = &d.cgroups {
        cg.shutdown();
    }
    crate::netns::drop_own_mount(&d.cfg.netns_dir());
    let _ = std::fs::remove_dir(d.cfg.netns_dir());
    let _ = std::fs::remove_dir_all(d.cfg.up.exec_root.join("containers"));
    tracing::info!("netd is down");
}
