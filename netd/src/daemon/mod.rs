//! The daemon: owns the model, the kernel objects (bridges, veths, namespaces) and the
//! dataplane, and serves the API.
//!
//! Concurrency: one async mutex around [`State`] (the model: names, addresses, ports,
//! attachments), held only for short critical sections. Sandbox start and teardown reserve what
//! they need (address, name) under it, do the kernel work (namespace, veth, routes, map entries,
//! process spawn; on removal the reverse) without it, and commit under it again, so runs and
//! removals of different sandboxes overlap. Operations on one sandbox are serialised by its own
//! lock ([`Daemon::op_lock`], taken before the state lock, never while holding it). The
//! dataplane has its own lock ([`Dp`]), held for map updates only; conntrack scans (the GC, the
//! purges after publish and removal) run under neither. Waiting (stop timeouts, logs follow,
//! wait) happens outside every lock. A failed step rolls back what the operation did.
pub mod attach;
pub mod cni;
pub mod containers;
pub mod dns;
pub mod docker_plugin;
pub mod dpmonitor;
pub mod events;
pub mod handlers;
pub mod netcrud;
pub mod networks;
pub mod proxy;
pub mod reconcile;
pub mod steps;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::sync::{Mutex, Notify};

use crate::{
    cli::args::UpArgs,
    dataplane::{Backend, Dataplane, DpResult, EndpointSpec, HostInfo, LinkRule, NetworkSpec, PortMapping, Stats},
    ipam,
    model::{Container, Network, Store},
    netlink::Netlink,
    ports::PortAllocator,
};

/// Daemon-wide settings resolved from `netd up` flags (and `--config-file`).
#[derive(Debug, Clone)]
pub struct Config {
    pub up: UpArgs,
    pub socket: PathBuf,
    /// The `netd` executable (to start shims).
    pub exe: PathBuf,
}

impl Config {
    pub fn netns_dir(&self) -> PathBuf {
        self.up.exec_root.join("netns")
    }
    pub fn runtime_dir(&self, id: &str) -> PathBuf {
        self.up.exec_root.join("containers").join(id)
    }
}

/// An error for the API: an HTTP status and Docker's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> Self {
        Self { status: 400, message: msg.into() }
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self { status: 404, message: msg.into() }
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self { status: 409, message: msg.into() }
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self { status: 500, message: msg.into() }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A held host-port reservation: a bound socket, as Docker holds one per binding (TCP bound but
/// not listening), so no other program can take the port while the binding exists.
pub enum HeldSocket {
    Udp(std::net::UdpSocket),
    TcpRaw(std::os::fd::OwnedFd),
}

pub struct State {
    pub containers: BTreeMap<String, Container>,
    pub networks: BTreeMap<String, Network>,
    /// Every attachment (sandbox endpoints, Docker endpoints, CNI attachments) by id.
    pub attachments: BTreeMap<String, crate::model::Attachment>,
    pub dp: Dp,
    pub allocator: PortAllocator,
    /// Address pools per bridge network id.
    pub pools: HashMap<String, ipam::Pool>,
    /// IPv6 address pools per dual-stack network id.
    pub pools6: HashMap<String, ipam::Pool6>,
    /// Held sockets per published binding: (proto, host ip, host port).
    pub held: HashMap<(crate::dataplane::Proto, IpAddr, u16), HeldSocket>,
    /// Embedded DNS server tasks per sandbox (user networks).
    pub dns: HashMap<String, Vec<tokio::task::JoinHandle<()>>>,
    /// Userland proxy tasks per binding (iptables dataplane with --userland-proxy).
    pub proxies: HashMap<(crate::dataplane::Proto, IpAddr, u16), proxy::Proxy>,
    pub host_info: HostInfo,
    /// How long publishing took (host-port allocation and reservation plus the dataplane).
    pub publish_timing: PublishTiming,
    /// Docker's Join + ProgramExternalConnectivity inside netd, per endpoint (the plugin's
    /// publish latency).
    pub docker_timing: PublishTiming,
    /// Time spent in each endpoint's Join and waited for the state lock before it, until its
    /// ProgramExternalConnectivity adds them up.
    pub docker_join: HashMap<String, (std::time::Duration, std::time::Duration)>,
    /// Sandbox starts in flight per network id: the network cannot be removed under them.
    pub starting: HashMap<String, usize>,
}

impl State {
    /// `GET /stats` and the metrics endpoint: the dataplane's counters and the publish timing.
    pub fn stats_json(&self) -> crate::dataplane::DpResult<serde_json::Value> {
        let mut v = serde_json::to_value(self.dp.stats()?).unwrap_or_default();
        v["publish"] = serde_json::to_value(self.publish_timing).unwrap_or_default();
        v["docker"] = serde_json::to_value(self.docker_timing).unwrap_or_default();
        Ok(v)
    }

    /// Whether a sandbox start holds addresses on network `id` (not yet committed).
    pub fn starting_on(&self, id: &str) -> bool {
        self.starting.get(id).is_some_and(|n| *n > 0)
    }
}

/// Publish latency, as `netd stats` and the metrics endpoint report it (the bench reads it).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct PublishTiming {
    /// Publish requests served (one per sandbox start with ports).
    pub count: u64,
    /// Ports of the last request.
    pub last_ports: usize,
    /// The work, without the time spent waiting for the state lock (`*_wait_us`).
    pub last_us: u64,
    pub max_us: u64,
    pub total_us: u64,
    /// Time the request waited for the state lock before its work began.
    pub last_wait_us: u64,
    pub max_wait_us: u64,
    pub total_wait_us: u64,
}

impl PublishTiming {
    pub fn record(&mut self, ports: usize, took: std::time::Duration) {
        self.record_waited(ports, took, std::time::Duration::ZERO);
    }

    pub fn record_waited(&mut self, ports: usize, took: std::time::Duration, waited: std::time::Duration) {
        let us = took.as_micros() as u64;
        let w = waited.as_micros() as u64;
        self.count += 1;
        self.last_ports = ports;
        self.last_us = us;
        self.max_us = self.max_us.max(us);
        self.total_us += us;
        self.last_wait_us = w;
        self.max_wait_us = self.max_wait_us.max(w);
        self.total_wait_us += w;
    }
}

/// How the state lock is used (`netd stats` `lock`): acquisitions, time waited for it and time
/// it was held, in microseconds.
#[derive(Debug, Default)]
pub struct LockStats {
    count: std::sync::atomic::AtomicU64,
    wait_total_us: std::sync::atomic::AtomicU64,
    wait_max_us: std::sync::atomic::AtomicU64,
    held_total_us: std::sync::atomic::AtomicU64,
    held_max_us: std::sync::atomic::AtomicU64,
}

impl LockStats {
    fn waited(&self, d: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let us = d.as_micros() as u64;
        self.count.fetch_add(1, Relaxed);
        self.wait_total_us.fetch_add(us, Relaxed);
        self.wait_max_us.fetch_max(us, Relaxed);
    }

    fn held(&self, d: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let us = d.as_micros() as u64;
        self.held_total_us.fetch_add(us, Relaxed);
        self.held_max_us.fetch_max(us, Relaxed);
    }

    pub fn json(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        serde_json::json!({
            "count": self.count.load(Relaxed),
            "wait_total_us": self.wait_total_us.load(Relaxed),
            "wait_max_us": self.wait_max_us.load(Relaxed),
            "held_total_us": self.held_total_us.load(Relaxed),
            "held_max_us": self.held_max_us.load(Relaxed),
        })
    }
}

/// The dataplane behind its own lock, shared by the state and by work done outside the state
/// lock. Every method locks it for the one call (map updates, an `iptables-restore`); the
/// removals then run the conntrack purge they queued without it ([`Dp::ct_run`]), and return
/// once it is done, so an address or host port released after them has no stale translation.
#[derive(Clone)]
pub struct Dp {
    inner: Arc<std::sync::Mutex<Box<dyn Dataplane>>>,
    /// Serialises conntrack jobs; holds the sequence number of the last change purged.
    ct: Arc<Mutex<u64>>,
    /// The shutdown's teardown is under way ([`Dp::tearing_down`]): the purges queued by each
    /// sandbox's removal wait for one scan at the end ([`Dp::ct_final`]).
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl Dp {
    pub fn new(dp: Box<dyn Dataplane>) -> Self {
        Self { inner: Arc::new(std::sync::Mutex::new(dp)), ct: Arc::new(Mutex::new(0)), down: Default::default() }
    }

    fn g(&self) -> std::sync::MutexGuard<'_, Box<dyn Dataplane>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn backend(&self) -> Backend {
        self.g().backend()
    }
    pub fn ipv6(&self) -> bool {
        self.g().ipv6()
    }
    pub fn network_added(&self, net: &NetworkSpec) -> DpResult<()> {
        self.g().network_added(net)
    }
    pub fn network_removed(&self, net: &NetworkSpec) -> DpResult<()> {
        self.g().network_removed(net)
    }
    pub fn endpoint_added(&self, net: &NetworkSpec, ep: &EndpointSpec) -> DpResult<()> {
        self.g().endpoint_added(net, ep)
    }
    pub fn ports_added(&self, net: &NetworkSpec, ports: &[PortMapping]) -> DpResult<()> {
        self.g().ports_added(net, ports)
    }
    pub fn links_added(&self, net: &NetworkSpec, links: &[LinkRule]) -> DpResult<()> {
        self.g().links_added(net, links)
    }
    /// The endpoint's map entries and programs go, then (without the dataplane's lock) every
    /// translation of its address.
    pub async fn endpoint_removed(&self, net: &NetworkSpec, ep: &EndpointSpec) -> DpResult<()> {
        let r = self.g().endpoint_removed(net, ep);
        self.ct_flush().await;
        r
    }
    pub async fn ports_removed(&self, net: &NetworkSpec, ports: &[PortMapping]) -> DpResult<()> {
        let r = self.g().ports_removed(net, ports);
        self.ct_flush().await;
        r
    }
    pub async fn links_removed(&self, net: &NetworkSpec, links: &[LinkRule]) -> DpResult<()> {
        let r = self.g().links_removed(net, links);
        self.ct_flush().await;
        r
    }
    pub fn stats(&self) -> DpResult<Stats> {
        self.g().stats()
    }
    pub fn missing(&self, net: &NetworkSpec, ep: &EndpointSpec, ports: &[PortMapping]) -> DpResult<Vec<String>> {
        self.g().missing(net, ep, ports)
    }
    pub fn host_changed(&self, host: &HostInfo) -> DpResult<()> {
        self.g().host_changed(host)
    }
    pub fn prune(&self) -> DpResult<usize> {
        self.g().prune()
    }
    pub fn tearing_down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.g().tearing_down()
    }

    /// At the end of the shutdown's teardown: the purges every removal queued, in one scan.
    pub async fn ct_final(&self) {
        if let Err(e) = self.ct_run(false).await {
            tracing::warn!(error = %e, "dataplane: conntrack purge");
        }
    }
    pub fn shutdown(&self, keep: bool) -> DpResult<()> {
        self.g().shutdown(keep)
    }
    pub fn set_monitor(&self, flags: u32) -> DpResult<()> {
        self.g().set_monitor(flags)
    }
    pub fn take_events(&self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        self.g().take_events()
    }

    /// Wait, holding no lock (callers hold none either), for what the dataplane still
    /// prepares in the background ([`Dataplane::pending_load`]: the eBPF dataplane's IPv6
    /// programs right after `netd up`). Called before a change that needs it takes the state
    /// lock, so that `ps`, `inspect` and other runs meanwhile are not queued behind it.
    pub async fn ready_v6(&self) {
        let w = self.g().pending_load();
        if let Some(w) = w {
            let t0 = std::time::Instant::now();
            tracing::info!("v6-load-wait: the IPv6 programs are still loading; waiting (no lock held)");
            let _ = tokio::task::spawn_blocking(w).await;
            tracing::info!(waited_ms = t0.elapsed().as_millis() as u64, "waited for the IPv6 programs' load");
        }
    }

    /// Run the conntrack work queued so far (purges of removed endpoints, ports and links, and
    /// of stale translations of freshly published ports), plus a GC pass when `gc`; the table
    /// is scanned without the dataplane's lock (and callers hold no state lock). Jobs run one at
    /// a time: a caller whose changes another job already covered returns at once, and one
    /// scan serves every change queued while the previous one ran.
    pub async fn ct_run(&self, gc: bool) -> DpResult<usize> {
        let want = self.g().ct_seq();
        let mut done = self.ct.lock().await;
        if !gc && *done >= want {
            return Ok(0);
        }
        let job = match self.g().ct_job(gc) {
            Ok(Some(j)) => j,
            Ok(None) => return Ok(0),
            Err(e) => return Err(e),
        };
        let seq = job.seq;
        let r = match tokio::task::spawn_blocking(job.run).await {
            Ok(r) => r,
            Err(e) => Err(crate::dataplane::DataplaneError::new("dataplane", "conntrack job", e)),
        };
        *done = (*done).max(seq);
        self.g().ct_done(seq);
        r
    }

    /// [`Dp::ct_run`] without a GC pass, errors logged. During the shutdown's teardown the
    /// work stays queued for [`Dp::ct_final`] (one table scan instead of one per sandbox).
    pub async fn ct_flush(&self) {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.ct_run(false).await {
            tracing::warn!(error = %e, "dataplane: conntrack purge");
        }
    }
}

pub struct Daemon {
    pub cfg: Config,
    pub store: Store,
    pub nl: Netlink,
    pub state: StateLock,
    /// The dataplane (the same one as `State::dp`), for work done without the state lock.
    pub dp: Dp,
    /// Wakes every waiter when any sandbox changes state (wait, stop, logs --follow).
    pub changed: Notify,
    /// Set when shutdown was requested (`netd down`, SIGTERM).
    pub shutdown: Notify,
    pub started: std::time::Instant,
    /// ip_forward before we changed it (restored on teardown).
    pub saved_ip_forward: Option<String>,
    /// Where each sandbox's cgroup lives (`None`: no cgroup2 here; only main processes are
    /// signalled).
    pub cgroups: Option<crate::cgroup::Cgroups>,
    /// How far the shutdown teardown is (`netd down` streams it).
    pub teardown_progress: tokio::sync::watch::Sender<TeardownProgress>,
    /// Where subnets come from when none is given (`--default-address-pool`, both families).
    pub addr_pools: AddrPools,
    /// Per-sandbox operation locks ([`Daemon::op_lock`]).
    pub ops: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// `netd monitor`'s event stream.
    pub events: events::Events,
    /// `netd monitor --type drop|trace`: the dataplane's events.
    pub dp_monitor: dpmonitor::DpMonitor,
    /// The shutdown teardown: host veths are not deleted one by one (each deletion waits for
    /// an RCU grace period under the kernel's rtnl lock, so N sandboxes took N of them in a
    /// row) but collected here and deleted in one batch at the end.
    pub deferred_links: std::sync::Mutex<Option<Vec<String>>>,
    /// Sandboxes torn down at once during the shutdown: a bounded number, so they finish one
    /// after another and `netd down`'s count moves steadily (1,000 teardowns started together
    /// advanced in lockstep: the count stayed at 0 for most of the teardown).
    pub teardown_slots: tokio::sync::Semaphore,
    /// Host veths being deleted in the background after a sandbox's removal (see
    /// [`Daemon::detach_sandbox_veth`]): how many, and a wake-up when one is done.
    pub pending_link_deletes: std::sync::atomic::AtomicUsize,
    pub link_deleted: Notify,
    /// A network namespace made ahead of the next sandbox's start ([`Daemon::take_netns`]),
    /// and whether one is being made.
    pub netns_spare: std::sync::Mutex<Option<crate::netns::Spare>>,
    pub netns_refilling: std::sync::atomic::AtomicBool,
}

/// The default address pools of each family, resolved at start (Docker's
/// `networkOptions`: the given pools, else the local defaults; plus the host's ULA /48 when
/// no v6 pool is given).
#[derive(Debug, Clone)]
pub struct AddrPools {
    /// Every candidate IPv4 subnet, in order.
    pub v4: Vec<ipam::Ipv4Net>,
    pub v6: Vec<ipam::PoolSpec6>,
}

impl AddrPools {
    /// The pools for `--default-address-pool` values, with the host's ULA Global ID from
    /// `<data-root>/ula-global-id` (40 random bits, made once: RFC 4193's pseudo-random Global
    /// ID, stable for the host as Docker's, which hashes its engine id).
    pub fn resolve(given: &[String], data_root: &Path) -> Result<Self, String> {
        let f = data_root.join("ula-global-id");
        let gid = match std::fs::read_to_string(&f).ok().and_then(|s| u64::from_str_radix(s.trim(), 16).ok()) {
            Some(g) => g,
            None => {
                let g = rand::random::<u64>() & ((1 << 40) - 1);
                std::fs::write(&f, format!("{g:010x}\n")).map_err(|e| format!("writing {}: {e}", f.display()))?;
                g
            }
        };
        let (v4, v6) =
            ipam::pools_from_config(given, gid).map_err(|e| format!("invalid --default-address-pool: {e}"))?;
        Ok(Self { v4: ipam::expand(&v4), v6 })
    }
}

/// Sandboxes stopped so far of those running when the teardown began; `done` once the daemon
/// has removed everything (it exits right after).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TeardownProgress {
    pub stopped: usize,
    pub total: usize,
    pub done: bool,
}

pub type Shared = Arc<Daemon>;

/// The daemon-wide lock around [`State`], plus a snapshot of what the embedded DNS needs
/// ([`dns::View`]), rebuilt from the state each time a guard is released: name lookups read the
/// snapshot and never wait for operations that hold the lock (kernel work, teardown).
pub struct StateLock {
    inner: Mutex<State>,
    view: arc_swap::ArcSwap<dns::View>,
    pub stats: LockStats,
}

impl StateLock {
    pub fn new(st: State) -> Self {
        let view = arc_swap::ArcSwap::from_pointee(dns::View::build(&st));
        Self { inner: Mutex::new(st), view, stats: LockStats::default() }
    }

    pub async fn lock(&self) -> StateGuard<'_> {
        let t0 = std::time::Instant::now();
        let g = self.inner.lock().await;
        let now = std::time::Instant::now();
        let waited = now - t0;
        self.stats.waited(waited);
        StateGuard { g, view: &self.view, stats: &self.stats, since: now, waited, dirty: false }
    }

    /// The model as of the last released guard.
    pub fn dns_view(&self) -> Arc<dns::View> {
        self.view.load_full()
    }
}

pub struct StateGuard<'a> {
    g: tokio::sync::MutexGuard<'a, State>,
    view: &'a arc_swap::ArcSwap<dns::View>,
    stats: &'a LockStats,
    since: std::time::Instant,
    /// How long this guard's owner waited for the lock.
    pub waited: std::time::Duration,
    /// Borrowed mutably: the DNS snapshot is rebuilt when the guard goes.
    dirty: bool,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.g
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.dirty = true;
        &mut self.g
    }
}

impl Drop for StateGuard<'_> {
    /// Still under the lock: the snapshot is a consistent picture of one state. Readers (the
    /// many waiters of `wait`, `stop`, `logs -f`) change nothing and rebuild nothing.
    fn drop(&mut self) {
        if self.dirty {
            self.view.store(Arc::new(dns::View::build(&self.g)));
        }
        self.stats.held(self.since.elapsed());
    }
}

/// Test hook for crash consistency: with `NETD_CRASH_AT=<point>` in its environment the daemon
/// SIGKILLs itself when it reaches that point (no cleanup, exactly like `kill -9`). The points
/// are named `run:netns`, `run:veth-created`, `run:endpoint`, `publish:allocated`, `publish:programmed`,
/// `run:spawned`, `rm:unpublished`, `rm:detached`, `rm:torn-down`, `connect:attached`.
pub fn crash_point(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if AT.get_or_init(|| std::env::var("NETD_CRASH_AT").ok()).as_deref() == Some(name) {
        tracing::error!(point = name, "NETD_CRASH_AT: killing the daemon");
        // SAFETY: signalling ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// Default sysctl path helper: sysctls are per network namespace, and the daemon's whole
/// process lives in its own, so plain file writes act on that namespace only.
pub fn sysctl_read(key: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(key.replace('.', "/"))).ok().map(|s| s.trim().to_string())
}

pub fn sysctl_write(key: &str, value: &str) -> std::io::Result<()> {
    std::fs::write(Path::new("/proc/sys").join(key.replace('.', "/")), value)
}

pub fn new_backend(b: Backend, up: &UpArgs) -> Result<Box<dyn Dataplane>, String> {
    match b {
        Backend::None => Ok(Box::new(crate::dataplane::noop::Noop::default())),
        Backend::Ebpf => {
            let mut e = crate::dataplane::ebpf::Ebpf::default();
            e.bpf_log = up.bpf_log;
            Ok(Box::new(e))
        }
        Backend::Iptables => Ok(Box::new(crate::dataplane::iptables::Iptables::new(
            up.iptables_backend.as_str(),
            up.userland_proxy,
            up.ip6tables,
        ))),
    }
}

/// Makes the daemon's heap give memory back to the kernel after large, short-lived buffers.
///
/// glibc's malloc raises its mmap threshold to the size of every large block that is freed (up
/// to 32 MiB), so after one request that builds big buffers (a sandbox with 10,000 published
/// ports serialises a ~5 MB record, clones binding lists and grows hash tables), every later
/// buffer of that size comes from the heap and stays in the daemon's RSS when freed. Measured
/// with a release build (`run -d -p 20000-29999:20000-29999`, 20,000 bindings): anonymous RSS
/// grew by 16.7 MB with the defaults, 6.4 MB with a fixed 64 KiB mmap threshold and a 128 KiB
/// trim threshold; heaptrack showed ~5 MB of it live, the rest freed but kept by malloc.
/// Call before any thread starts. A no-op outside glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tunables; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Resolve `netd up` flags into the daemon's configuration.
pub fn config_from_args(up: UpArgs, socket: PathBuf) -> Result<Config, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the netd executable: {e}"))?;
    if let Some(m) = up.mtu
        && !(68..=65535).contains(&m)
    {
        return Err(format!("invalid MTU {m}: must be between 68 and 65535"));
    }
    // Every value that can be checked without the host is checked here, before `up` touches
    // anything (sysctls, state, links), as dockerd validates its configuration first.
    let bip = up.bip.as_deref().map(crate::ipam::parse_bip).transpose().map_err(|e| e.to_string())?;
    if let Some(fc) = &up.fixed_cidr {
        match &bip {
            Some((subnet, _)) => crate::ipam::parse_fixed_cidr(fc, subnet).map(|_| ()),
            None => fc.parse::<crate::ipam::Ipv4Net>().map(|_| ()),
        }
        .map_err(|e| e.to_string())?;
    }
    if let Some(ip) = &up.ip {
        ip.parse::<std::net::Ipv4Addr>().map_err(|_| format!("invalid --ip {ip:?}: not an IPv4 address"))?;
    }
    for d in &up.dns {
        validate_dns(d)?;
    }
    if let Some(a) = &up.metrics_addr {
        a.parse::<std::net::SocketAddr>().map_err(|_| format!("invalid --metrics-addr {a:?}: want IP:PORT"))?;
    }
    if up.docker_plugin != "none" {
        let p = std::path::Path::new(&up.docker_plugin);
        if !p.is_absolute() || p.file_stem().is_none() || up.docker_plugin.len() > 107 {
            return Err(format!(
                "invalid --docker-plugin {:?}: want an absolute socket path (at most 107 bytes) or none",
                up.docker_plugin
            ));
        }
    }
    for p in &up.default_address_pool {
        crate::ipam::parse_address_pool_any(p).map_err(|e| format!("invalid --default-address-pool {p:?}: {e}"))?;
    }
    if let Some(v6) = &up.fixed_cidr_v6 {
        crate::ipam::parse_fixed_cidr_v6(v6)?;
    }
    // Constructing a backend has no side effects: ask it whether it has IPv6.
    if up.ipv6 && !new_backend(up.dataplane, &up)?.ipv6() {
        return Err(format!(
            "--ipv6: the {} dataplane does not support IPv6 yet (use --dataplane iptables)",
            up.dataplane
        ));
    }
    Ok(Config { up, socket, exe })
}

/// A `--dns` server address (Docker's `opts.ValidateIPAddress` and its message).
pub fn validate_dns(d: &str) -> Result<(), String> {
    match d.trim().parse::<std::net::IpAddr>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("IP address is not correctly formatted: {d}")),
    }
}

impl Daemon {
    /// The lock that serialises operations on sandbox `id` (start, teardown, removal, connect),
    /// so that each runs its kernel work without the state lock while no other operation on the
    /// same sandbox interleaves. Take it before the state lock, never while holding it.
    pub async fn op_lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
            ops.entry(id.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }

    /// Forget the operation lock of a removed sandbox (when nobody else waits for it).
    pub fn op_forget(&self, id: &str) {
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        if ops.get(id).is_some_and(|m| Arc::strong_count(m) == 1) {
            ops.remove(id);
        }
    }

    /// SIGKILL every process of sandbox `id` at once (its cgroup), without waiting.
    pub fn kill_all(&self, id: &str) {
        if let Some(cg) = &self.cgroups
            && let Err(e) = cg.kill(id)
        {
            tracing::warn!(container = %id, error = %e, "killing the sandbox's processes");
        }
    }

    /// End every process left in sandbox `id`'s cgroup, wait until they are gone (bounded) and
    /// remove the cgroup. Idempotent.
    pub async fn end_all(&self, id: &str) {
        if let Some(cg) = &self.cgroups {
            match cg.end(id, std::time::Duration::from_secs(5)).await {
                Ok(true) => tracing::info!(container = %id, "killed the sandbox's remaining processes"),
                Ok(false) => {}
                Err(e) => tracing::warn!(container = %id, error = %e, "ending the sandbox's processes"),
            }
        }
    }

    /// Start the embedded DNS server of a running sandbox that is on a user network.
    pub fn start_dns(self: &Shared, st: &mut State, cid: &str) {
        let Some(c) = st.containers.get(cid) else { return };
        let Some(ns) = c.netns.clone() else { return };
        let on_user_net = c.endpoints.iter().any(|e| st.networks.get(&e.network_id).is_some_and(|n| !n.default_bridge));
        if !on_user_net || st.dns.contains_key(cid) {
            return;
        }
        match dns::start(self.clone(), cid.to_string(), ns) {
            Ok(tasks) => {
                st.dns.insert(cid.to_string(), tasks);
            }
            Err(e) => tracing::warn!(container = %cid, error = %e, "embedded DNS server"),
        }
    }

    pub fn stop_dns(st: &mut State, cid: &str) {
        for t in st.dns.remove(cid).unwrap_or_default() {
            t.abort();
        }
    }
}
