//! The embedded eBPF object (built by `build.rs`) and the code that loads, attaches, reads and
//! describes it.
//!
//! Attachment happens by interface name, which the kernel resolves in the *calling thread's*
//! network namespace: call the attach functions from the daemon's namespace (the daemon runs in
//! it) or from a thread that has `setns`'d into it.

use std::{
    collections::{BTreeMap, HashMap},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, ProgramArray},
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, SchedClassifierLinkId},
        xdp::XdpLink,
    },
};
use netd_common::{Config, DropReason, PacketCount, ProgId, map_names, prog_names, v6::progs as V6};

/// aya-log's level in the object (a `.rodata` constant patched at load): 0 turns every log
/// statement off, and the verifier prunes them (no run-time cost); Debug (4) for `--bpf-log`.
const AYA_LOG_LEVEL: &str = "AYA_LOG_LEVEL";
const LOG_OFF: u8 = 0;
const LOG_DEBUG: u8 = 4;

/// `netd up --bpf-log`: read the programs' aya-log records and log them through `tracing`
/// (target `netd::bpf`, at INFO so that they show under the daemon's default filter), with
/// program and drop-reason numbers named. Poll the returned logger's descriptor and call
/// `flush` when it is readable.
pub fn bpf_logger(ebpf: &mut Ebpf) -> Result<aya_log::EbpfLogger<BpfLog>, aya_log::Error> {
    aya_log::EbpfLogger::init_with_logger(ebpf, BpfLog)
}

/// Forwards aya-log's records to `tracing`.
pub struct BpfLog;

impl log::Log for BpfLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        let msg = r.args().to_string();
        tracing::info!(target: "netd::bpf", "{}", describe_bpf_log(&msg));
    }
    fn flush(&self) {}
}

/// `drop: prog 3 reason 5 ifindex 7` → `netd_from_container: drop (isolation) on ifindex 7`.
pub fn describe_bpf_log(msg: &str) -> String {
    let w: Vec<&str> = msg.split_whitespace().collect();
    if let ["drop:", "prog", p, "reason", r, "ifindex", i] = w.as_slice()
        && let (Ok(p), Ok(r)) = (p.parse::<usize>(), r.parse::<usize>())
    {
        let prog = ProgId::ALL.get(p).map_or("unknown program", |p| p.prog_name());
        let reason = r.checked_sub(1).and_then(|r| DropReason::ALL.get(r)).map_or("unknown", |r| r.label());
        return format!("{prog}: drop ({reason}) on ifindex {i}");
    }
    msg.to_string()
}

#[cfg(test)]
#[test]
fn bpf_log_lines_are_named() {
    assert_eq!(
        describe_bpf_log("drop: prog 3 reason 5 ifindex 7"),
        "netd_from_container: drop (isolation) on ifindex 7"
    );
    assert_eq!(describe_bpf_log("drop: prog 0 reason 0 ifindex 2"), "netd_xdp_uplink: drop (unknown) on ifindex 2");
    assert_eq!(describe_bpf_log("something else"), "something else");
}

pub mod btf;
pub mod kfunc;

/// The ELF object holding every program and map of `netd-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netd-ebpf"));

/// The bench's minimal NAT hop (`netd-ebpf/src/floor.rs`, issue 19), built with [`OBJECT`]. netd
/// itself never loads it; `netd-bench` does, from here.
pub static FLOOR_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netd-floor"));

/// The object the loaders use: [`OBJECT`], or for development the file named by
/// `NETD_EBPF_OBJECT` (an eBPF change measured with the daemon and tools as built, without
/// relinking them: `netd-bench micro`/`profile` after building only `netd-ebpf`). Read once.
pub fn object() -> &'static [u8] {
    static OVERRIDE: std::sync::OnceLock<Option<&'static [u8]>> = std::sync::OnceLock::new();
    OVERRIDE
        .get_or_init(|| {
            let path = std::env::var_os("NETD_EBPF_OBJECT")?;
            match std::fs::read(&path) {
                Ok(b) => {
                    tracing::warn!(path = %std::path::Path::new(&path).display(), "eBPF object from NETD_EBPF_OBJECT");
                    Some(&*Box::leak(b.into_boxed_slice()))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "NETD_EBPF_OBJECT unreadable: the embedded object is used");
                    None
                }
            }
        })
        .unwrap_or(OBJECT)
}

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("parsing the eBPF object: {0}")]
    Parse(String),
    #[error("BPF_PROG_TEST_RUN: {0}")]
    TestRun(std::io::Error),
    #[error("pinning: {0}")]
    Pin(String),
    #[error("attaching to {ifname}: {source}")]
    Attach {
        ifname: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where each entry point is attached, for `cargo xtask build-ebpf` and `netd info`.
pub fn attach_point(name: &str) -> &'static str {
    match name {
        prog_names::XDP_UPLINK => "XDP on each uplink (native, generic fallback)",
        prog_names::FROM_NETDEV => "tcx ingress on each uplink",
        prog_names::FROM_NETDEV_L3 => "tcx ingress on each layer-3 uplink (tun, WireGuard, PPP)",
        prog_names::TO_NETDEV => "tcx egress on each uplink",
        prog_names::TO_NETDEV_L3 => "tcx egress on each layer-3 uplink (tun, WireGuard, PPP)",
        prog_names::FROM_CONTAINER => "tcx ingress on each host-side sandbox veth",
        prog_names::SOCK_CONNECT4 => "cgroup v2 connect4 (daemon netns only, by cookie)",
        prog_names::SOCK_SENDMSG4 => "cgroup v2 sendmsg4 (daemon netns only, by cookie)",
        prog_names::SOCK_RECVMSG4 => "cgroup v2 recvmsg4 (daemon netns only, by cookie)",
        prog_names::SOCK_CONNECT6 => "cgroup v2 connect6 (daemon netns only, by cookie)",
        prog_names::SOCK_SENDMSG6 => "cgroup v2 sendmsg6 (daemon netns only, by cookie)",
        prog_names::SOCK_RECVMSG6 => "cgroup v2 recvmsg6 (daemon netns only, by cookie)",
        prog_names::TO_BRIDGE => "tcx egress on each netd bridge",
        prog_names::FROM_FOREIGN_BRIDGE => "tcx ingress on each of Docker's own bridges",
        V6::FROM_NETDEV_V6 => "tail call (V6_PROGS) from netd_from_netdev[_l3], IPv6 frames",
        V6::TO_NETDEV_V6 => "tail call (V6_PROGS) from netd_to_netdev, IPv6 frames",
        V6::FROM_CONTAINER_V6 => "tail call (V6_PROGS) from netd_from_container, IPv6 frames",
        V6::TO_NETDEV_L3_V6 => "tail call (V6_PROGS) from netd_to_netdev_l3, IPv6 packets",
        _ => "unknown",
    }
}

/// The route/neighbour generation the programs compare their cached FIB results with
/// (`map_names::FIB_GEN`): [`FibGen::bump`] on every route or neighbour change makes every
/// conntrack entry look its route up again on its next packet.
pub struct FibGen {
    fd: std::os::fd::OwnedFd,
    generation: u32,
}

impl FibGen {
    /// A new generation (never 0, which means "nothing cached").
    pub fn bump(&mut self) -> std::io::Result<()> {
        self.generation = self.generation.wrapping_add(1).max(1);
        self.write(self.generation)
    }

    fn write(&self, generation: u32) -> std::io::Result<()> {
        // bpf_attr for BPF_MAP_UPDATE_ELEM (2): map_fd, key, value, flags.
        #[repr(C)]
        struct Attr {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let key = 0u32;
        let attr = Attr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &generation as *const u32 as u64,
            flags: 0,
        };
        // SAFETY: a valid bpf_attr prefix whose pointers outlive the call.
        let r = unsafe { libc::syscall(libc::SYS_bpf, 2, &attr as *const Attr, std::mem::size_of::<Attr>() as u32) };
        if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }
}

impl Drop for FibGen {
    /// Nobody follows the routes any more (the daemon stops, its datapath may stay with
    /// `--live-restore`): generation 0, the programs look routes up per packet again.
    fn drop(&mut self) {
        let _ = self.write(0);
    }
}

/// A program of the object as the ELF describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramDesc {
    pub name: String,
    pub kind: String,
    pub attach_point: &'static str,
}

/// A map of the object as the ELF describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDesc {
    pub name: String,
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// Programs and maps of an object, read from the ELF alone (no kernel needed).
pub fn describe(object: &[u8]) -> Result<(Vec<ProgramDesc>, Vec<MapDesc>), EbpfError> {
    use aya_obj::ProgramSection as S;
    let obj = aya_obj::Object::parse(object).map_err(|e| EbpfError::Parse(e.to_string()))?;
    let mut progs: Vec<ProgramDesc> = obj
        .programs
        .iter()
        .map(|(name, p)| {
            let kind = match &p.section {
                S::Xdp { frags, .. } => format!("xdp{}", if *frags { " (frags)" } else { "" }),
                S::SchedClassifier => "sched_cls (tc)".to_string(),
                S::CgroupSockAddr { attach_type } => format!("cgroup/sock_addr {attach_type:?}").to_lowercase(),
                other => format!("{other:?}"),
            };
            ProgramDesc { name: name.clone(), kind, attach_point: attach_point(name) }
        })
        .collect();
    progs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut maps: Vec<MapDesc> = obj
        .maps
        .iter()
        .filter(|(name, _)| !name.starts_with('.'))
        .map(|(name, m)| MapDesc {
            name: name.clone(),
            map_type: map_type_name(m.map_type()).to_string(),
            key_size: m.key_size(),
            value_size: m.value_size(),
            max_entries: m.max_entries(),
        })
        .collect();
    maps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((progs, maps))
}

fn map_type_name(t: u32) -> &'static str {
    match t {
        1 => "hash",
        2 => "array",
        5 => "percpu_hash",
        6 => "percpu_array",
        9 => "lru_hash",
        10 => "lru_percpu_hash",
        11 => "lpm_trie",
        27 => "ringbuf",
        _ => "other",
    }
}

/// The loaded object: every program loaded into the kernel.
///
/// With a pin directory, maps live at `DIR/maps/NAME` and every attachment at `DIR/links/...`:
/// the datapath keeps running when the daemon dies (even `kill -9`), and the next daemon
/// reuses the maps (established flows keep their translations) and swaps its freshly loaded
/// programs into the pinned links atomically.
pub struct Loaded {
    pub ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    /// Pinned links this process holds, by pin path.
    pinned: HashMap<PathBuf, PinnedLink>,
    /// Whether the IPv6 bodies are loaded and in `V6_PROGS` ([`Loaded::ensure_v6`]).
    v6_loaded: bool,
    /// The IPv6 bodies being loaded and verified on a thread of their own
    /// ([`Loaded::spawn_v6`]), joined by [`Loaded::ensure_v6`].
    v6_pending: Option<std::thread::JoinHandle<Result<Ebpf, EbpfError>>>,
    /// Set (and notified) by that thread when it is done, loaded or failed: what
    /// [`Loaded::v6_waiter`] waits on without the dataplane's lock.
    v6_done: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    /// The second instance of the object whose IPv6 bodies that thread loaded (sharing every
    /// map of this one): their programs live as long as it does.
    v6_ebpf: Option<Ebpf>,
}

impl Loaded {
    /// Load the embedded object and every program in it.
    pub fn load() -> Result<Self, EbpfError> {
        Self::load_from(object())
    }

    pub fn load_from(object: &[u8]) -> Result<Self, EbpfError> {
        Self::load_with_log(object, false)
    }

    /// Without pins; `bpf_log`: the programs' debug log statements kept (else pruned at load).
    pub fn load_with_log(object: &[u8], bpf_log: bool) -> Result<Self, EbpfError> {
        raise_memlock();
        let level = if bpf_log { &LOG_DEBUG } else { &LOG_OFF };
        let (object, off, shift) = kfunc::prepare(object, kfunc::kernel());
        let ebpf = aya::EbpfLoader::new()
            .override_global(AYA_LOG_LEVEL, level, false)
            .override_global(kfunc::CSUM_OFF, &off, false)
            .override_global(kfunc::CSUM_SHIFT, &shift, false)
            .load(&object)?;
        let mut l = Self::finish(ebpf, None)?;
        // Tests and tools run every body.
        l.ensure_v6()?;
        Ok(l)
    }

    /// Load the embedded object without its IPv6 bodies (see [`Loaded::ensure_v6`]);
    /// `bpf_log` as for [`Loaded::load_with_log`].
    pub fn load_without_v6(bpf_log: bool) -> Result<Self, EbpfError> {
        raise_memlock();
        let level = if bpf_log { &LOG_DEBUG } else { &LOG_OFF };
        let (object, off, shift) = kfunc::prepare(object(), kfunc::kernel());
        let ebpf = aya::EbpfLoader::new()
            .override_global(AYA_LOG_LEVEL, level, false)
            .override_global(kfunc::CSUM_OFF, &off, false)
            .override_global(kfunc::CSUM_SHIFT, &shift, false)
            .load(&object)?;
        Self::finish(ebpf, None)
    }

    /// Load with maps pinned under `dir/maps` (created, or reused when present). `bpf_log`:
    /// the programs' debug log on (`netd up --bpf-log`; read it with [`bpf_logger`]).
    pub fn load_pinned(dir: &Path, bpf_log: bool) -> Result<Self, EbpfError> {
        raise_memlock();
        let maps = dir.join("maps");
        std::fs::create_dir_all(&maps).map_err(|e| EbpfError::Pin(format!("creating {}: {e}", maps.display())))?;
        std::fs::create_dir_all(dir.join("links")).map_err(|e| EbpfError::Pin(format!("creating links dir: {e}")))?;
        let mut loader = aya::EbpfLoader::new();
        let paths: Vec<(&'static str, PathBuf)> = pinned_map_names().into_iter().map(|n| (n, maps.join(n))).collect();
        for (n, p) in &paths {
            loader.map_pin_path(n, p.clone());
        }
        loader.override_global(AYA_LOG_LEVEL, if bpf_log { &LOG_DEBUG } else { &LOG_OFF }, false);
        let (object, off, shift) = kfunc::prepare(object(), kfunc::kernel());
        loader.override_global(kfunc::CSUM_OFF, &off, false).override_global(kfunc::CSUM_SHIFT, &shift, false);
        let ebpf = loader.load(&object)?;
        Self::finish(ebpf, Some(dir.to_path_buf()))
    }

    /// Whether `dir` holds pinned state from an earlier daemon.
    pub fn has_pins(dir: &Path) -> bool {
        dir.join("maps").join(map_names::CT_V4).exists()
    }

    fn finish(mut ebpf: Ebpf, pin_dir: Option<PathBuf>) -> Result<Self, EbpfError> {
        for name in prog_names::ALL {
            let prog = ebpf.program_mut(name).ok_or(EbpfError::MissingProgram(name))?;
            let r = match prog {
                aya::programs::Program::Xdp(p) => p.load(),
                aya::programs::Program::SchedClassifier(p) => p.load(),
                aya::programs::Program::CgroupSockAddr(p) => p.load(),
                _ => Ok(()),
            };
            r.map_err(|source| EbpfError::Program { name, source })?;
        }
        Ok(Self {
            ebpf,
            pin_dir,
            pinned: HashMap::new(),
            v6_loaded: false,
            v6_pending: None,
            v6_done: Arc::default(),
            v6_ebpf: None,
        })
    }

    /// Start loading the IPv6 bodies on a thread of their own (the verifier spends seconds on
    /// them), so a daemon's first IPv6 network or NAT46 binding does not wait for it
    /// ([`Loaded::ensure_v6`] joins the thread, and still waits when it comes first). The
    /// thread loads a second instance of the object whose maps are this instance's own (aya
    /// reuses a map pinned at the path given for it: the pinned maps at theirs, every other
    /// one pinned for the moment under `DIR/v6load/`), so its programs read and write the same
    /// maps. Only with a pin directory (a daemon); `bpf_log` as for [`Loaded::load_pinned`].
    pub fn spawn_v6(&mut self, bpf_log: bool) -> Result<(), EbpfError> {
        let Some(dir) = self.pin_dir.clone() else { return Ok(()) };
        if self.v6_loaded || self.v6_pending.is_some() {
            return Ok(());
        }
        let tmp = dir.join("v6load");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| EbpfError::Pin(format!("creating {}: {e}", tmp.display())))?;
        let pinned = pinned_map_names();
        let mut paths: Vec<(String, PathBuf)> = Vec::new();
        for (name, map) in self.ebpf.maps() {
            // Global data (`.rodata`, `.bss`): the second instance's own.
            if name.starts_with('.') {
                continue;
            }
            if pinned.contains(&name) {
                paths.push((name.to_string(), dir.join("maps").join(name)));
                continue;
            }
            let p = tmp.join(name);
            map.pin(&p).map_err(|e| EbpfError::Pin(format!("pinning {}: {e}", p.display())))?;
            paths.push((name.to_string(), p));
        }
        let done = Arc::clone(&self.v6_done);
        let h = std::thread::Builder::new()
            .name("netd-v6-load".into())
            .spawn(move || {
                // Whatever the outcome: waiters go on (ensure_v6 then joins, or loads itself).
                struct Done(Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);
                impl Drop for Done {
                    fn drop(&mut self) {
                        *self.0.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
                        self.0.1.notify_all();
                    }
                }
                let _done = Done(done);
                let t0 = std::time::Instant::now();
                let mut loader = aya::EbpfLoader::new();
                for (n, p) in &paths {
                    loader.map_pin_path(n.as_str(), p.as_path());
                }
                loader.override_global(AYA_LOG_LEVEL, if bpf_log { &LOG_DEBUG } else { &LOG_OFF }, false);
                let (object, off, shift) = kfunc::prepare(object(), kfunc::kernel());
                loader.override_global(kfunc::CSUM_OFF, &off, false).override_global(kfunc::CSUM_SHIFT, &shift, false);
                let r = loader.load(&object);
                // The maps are open in the second instance now (or it failed): the moment's pins go.
                let _ = std::fs::remove_dir_all(&tmp);
                let mut ebpf = r?;
                for (name, _) in V6::ALL {
                    let prog: &mut SchedClassifier = program(&mut ebpf, name)?;
                    prog.load().map_err(|source| EbpfError::Program { name, source })?;
                }
                tracing::info!(took_ms = t0.elapsed().as_millis() as u64, "IPv6 programs loaded in the background");
                test_v6_load_gate();
                Ok(ebpf)
            })
            .map_err(|e| EbpfError::Pin(format!("starting the IPv6 loader thread: {e}")))?;
        self.v6_pending = Some(h);
        Ok(())
    }

    /// While the background load ([`Loaded::spawn_v6`]) runs: a blocking wait for its end,
    /// to run without any lock (the daemon's state lock, the dataplane's), so that the
    /// [`Loaded::ensure_v6`] that follows finds the thread done and only joins it. `None`:
    /// nothing to wait for.
    pub fn v6_waiter(&self) -> Option<Box<dyn FnOnce() + Send>> {
        if self.v6_loaded || self.v6_pending.is_none() {
            return None;
        }
        let done = Arc::clone(&self.v6_done);
        Some(Box::new(move || {
            let (m, cv) = &*done;
            let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded: the thread's work is finite, and ensure_v6 joins it anyway.
            let until = std::time::Instant::now() + std::time::Duration::from_secs(300);
            while !*g {
                let left = until.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                g = cv.wait_timeout(g, left).unwrap_or_else(|e| e.into_inner()).0;
            }
        }))
    }

    /// Load the IPv6 bodies and put them in `V6_PROGS` (once; the verifier spends seconds on
    /// them, which a daemon without an IPv6 network never pays). Returns whether it loaded them
    /// now.
    pub fn ensure_v6(&mut self) -> Result<bool, EbpfError> {
        if self.v6_loaded {
            return Ok(false);
        }
        if let Some(h) = self.v6_pending.take() {
            if !h.is_finished() {
                tracing::info!("v6-load-wait: the IPv6 programs are still loading; waiting (dataplane lock held)");
            }
            match h.join() {
                Ok(Ok(mut b)) => {
                    let fds = v6_fds(&mut b)?;
                    self.set_v6_progs(&fds)?;
                    self.v6_ebpf = Some(b);
                    self.v6_loaded = true;
                    return Ok(true);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "loading the IPv6 programs in the background failed: loading them here")
                }
                Err(_) => tracing::warn!("the IPv6 loader thread panicked: loading the programs here"),
            }
        }
        let fds = v6_fds(&mut self.ebpf)?;
        self.set_v6_progs(&fds)?;
        self.v6_loaded = true;
        Ok(true)
    }

    fn set_v6_progs(&mut self, fds: &[(u32, aya::programs::ProgramFd)]) -> Result<(), EbpfError> {
        let map = self.ebpf.map_mut(V6::V6_PROGS).ok_or(EbpfError::MissingMap(V6::V6_PROGS))?;
        let mut arr: ProgramArray<&mut MapData> =
            ProgramArray::try_from(map).map_err(|source| EbpfError::Map { name: V6::V6_PROGS, source })?;
        for (slot, fd) in fds {
            arr.set(*slot, fd, 0).map_err(|source| EbpfError::Map { name: V6::V6_PROGS, source })?;
        }
        Ok(())
    }

    /// A program of the object: the IPv6 bodies from the instance that loaded them.
    /// The background loader's instance holds the whole object but loads only the IPv6 bodies:
    /// every other program comes from the main instance (asking the second copy for
    /// `netd_from_container` found it unloaded, and no sandbox could be attached after the
    /// first NAT46 binding).
    fn prog(&self, name: &str) -> Option<&aya::programs::Program> {
        let v6 = V6::ALL.iter().any(|(n, _)| *n == name);
        self.v6_ebpf.as_ref().filter(|_| v6).and_then(|b| b.program(name)).or_else(|| self.ebpf.program(name))
    }

    /// Whether the IPv6 bodies are loaded.
    pub fn v6_loaded(&self) -> bool {
        self.v6_loaded
    }

    /// Empty `V6_PROGS` when this daemon has not loaded the IPv6 bodies (an earlier daemon's
    /// stay in the pinned array until the replay shows whether any IPv6 network is left).
    pub fn clear_v6_if_unused(&mut self) -> Result<(), EbpfError> {
        if self.v6_loaded {
            return Ok(());
        }
        let map = self.ebpf.map_mut(V6::V6_PROGS).ok_or(EbpfError::MissingMap(V6::V6_PROGS))?;
        let mut arr: ProgramArray<&mut MapData> =
            ProgramArray::try_from(map).map_err(|source| EbpfError::Map { name: V6::V6_PROGS, source })?;
        for (_, slot) in V6::ALL {
            let _ = arr.clear_index(&slot);
        }
        Ok(())
    }

    fn link_pin(&self, rel: &str) -> Option<PathBuf> {
        self.pin_dir.as_ref().map(|d| d.join("links").join(rel))
    }

    /// Keep `fd` attached beyond this process by pinning it at `path`.
    fn pin_link(&mut self, fd: FdLink, path: PathBuf) -> Result<(), EbpfError> {
        let pl = fd.pin(&path).map_err(|e| EbpfError::Pin(format!("pinning {}: {e}", path.display())))?;
        self.pinned.insert(path, pl);
        Ok(())
    }

    /// A link a previous daemon pinned at `path`, unpinned and handed to us (None if absent).
    fn adopt(path: &Path) -> Option<FdLink> {
        if !path.exists() {
            return None;
        }
        match PinnedLink::from_pin(path).map(PinnedLink::unpin) {
            Ok(Ok(fd)) => Some(fd),
            _ => {
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    /// Drop a pinned attachment (detaches it).
    pub fn unpin(&mut self, rel: &str) {
        if let Some(p) = self.link_pin(rel) {
            self.pinned.remove(&p);
            let _ = std::fs::remove_file(&p);
        }
    }

    /// Per program: the instruction count the verifier processed (`verified_insns`, 5.16+),
    /// and the translated size in bytes.
    pub fn verifier_stats(&self) -> Vec<(&'static str, Option<u32>, Option<u32>)> {
        prog_names::ALL
            .iter()
            .chain(V6::ALL.iter().map(|(n, _)| n))
            .map(|name| {
                let info = self.prog(name).and_then(|p| p.info().ok());
                (
                    *name,
                    info.as_ref().and_then(|i| i.verified_instruction_count()),
                    info.as_ref().and_then(|i| i.size_translated()),
                )
            })
            .collect()
    }

    /// Write the global configuration (netns cookie for the cgroup hooks, flags).
    pub fn set_config(&mut self, cfg: Config) -> Result<(), EbpfError> {
        let map = self.ebpf.map_mut(map_names::CONFIG).ok_or(EbpfError::MissingMap("CONFIG"))?;
        let mut arr: Array<&mut MapData, Config> =
            Array::try_from(map).map_err(|source| EbpfError::Map { name: "CONFIG", source })?;
        arr.set(0, cfg, 0).map_err(|source| EbpfError::Map { name: "CONFIG", source })
    }

    /// A handle on `FIB_GEN` that outlives `&mut self` (a dup of the map's fd), set to a fresh
    /// generation: conntrack entries cached routes under an earlier daemon's generations, and
    /// routes may have changed while no daemon ran.
    pub fn fib_gen(&mut self) -> Result<FibGen, EbpfError> {
        let map = self.ebpf.map(map_names::FIB_GEN).ok_or(EbpfError::MissingMap("FIB_GEN"))?;
        let arr: Array<&MapData, u32> =
            Array::try_from(map).map_err(|source| EbpfError::Map { name: "FIB_GEN", source })?;
        let cur = arr.get(&0, 0).unwrap_or(0);
        let aya::maps::Map::Array(md) = map else { return Err(EbpfError::MissingMap("FIB_GEN")) };
        let fd = md.fd().as_fd().try_clone_to_owned().map_err(|e| EbpfError::Pin(format!("FIB_GEN fd: {e}")))?;
        let mut g = FibGen { fd, generation: cur };
        // Not one an earlier daemon of this pin directory could have left in an entry either.
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        g.generation = g.generation.wrapping_add((ts.tv_nsec as u32 >> 8) | 1);
        g.bump().map_err(|e| EbpfError::Pin(format!("FIB_GEN: {e}")))?;
        Ok(g)
    }

    /// XDP (native, falling back to generic) and both TC directions on an uplink.
    pub fn attach_uplink(&mut self, ifname: &str) -> Result<XdpMode, EbpfError> {
        self.attach_uplink_with(ifname, Some(XdpMode::Driver)).map(|m| m.unwrap_or(XdpMode::Driver))
    }

    /// XDP in `xdp` mode (None: no XDP; the tc ingress program enforces the same protections)
    /// and both TC directions on an uplink. Returns the XDP mode in use.
    pub fn attach_uplink_with(&mut self, ifname: &str, xdp: Option<XdpMode>) -> Result<Option<XdpMode>, EbpfError> {
        let mode = match xdp {
            Some(m) => Some(self.attach_xdp(ifname, m)?),
            None => {
                self.unpin(&format!("xdp-{ifname}"));
                None
            }
        };
        self.attach_tc_pinned(prog_names::FROM_NETDEV, ifname, TcAttachType::Ingress, &format!("tc-in-{ifname}"))?;
        self.attach_tc_pinned(prog_names::TO_NETDEV, ifname, TcAttachType::Egress, &format!("tc-out-{ifname}"))?;
        Ok(mode)
    }

    /// A layer-3 uplink (no Ethernet header: tun, WireGuard, PPP): the L3 variants of the
    /// programs (ingress gives each packet an Ethernet header first; egress parses from the IP
    /// header: host flows reserve their tuples against masquerade and get another source port on
    /// a clash, the host's ICMP errors about translated flows are rewritten), and no XDP.
    pub fn attach_uplink_l3(&mut self, ifname: &str) -> Result<(), EbpfError> {
        self.unpin(&format!("xdp-{ifname}"));
        self.attach_tc_pinned(prog_names::FROM_NETDEV_L3, ifname, TcAttachType::Ingress, &format!("tc-in-{ifname}"))?;
        self.attach_tc_pinned(prog_names::TO_NETDEV_L3, ifname, TcAttachType::Egress, &format!("tc-out-{ifname}"))
    }

    /// TC ingress on a host-side sandbox veth: a `cls_bpf` filter ([`cls_bpf_attach`]), which
    /// lives as long as the device (nothing to pin; a new daemon replaces the program in place).
    /// A tcx link (what the uplink and bridges use) waits for an RCU grace period under the
    /// rtnl lock on every attach, 8-14 ms of each `netd run`. Always `Ok(None)` (no link id).
    pub fn attach_container(&mut self, ifname: &str) -> Result<Option<SchedClassifierLinkId>, EbpfError> {
        let name = prog_names::FROM_CONTAINER;
        let attach_err = |source| EbpfError::Attach { ifname: ifname.to_string(), source };
        let index = nix::net::if_::if_nametoindex(ifname).map_err(|e| attach_err(e.into()))?;
        cls_bpf_attach(self.prog_fd(name)?, index, name).map_err(attach_err)?;
        // A tcx link an earlier netd pinned for this veth goes now (else both would run).
        self.unpin(&format!("veth-{ifname}"));
        Ok(None)
    }

    /// Detach the program from a sandbox veth (Ok when the veth is already gone, which also
    /// took its filter: the daemon deletes the veth first).
    pub fn detach_container(&mut self, ifname: &str, id: Option<SchedClassifierLinkId>) -> Result<(), EbpfError> {
        self.unpin(&format!("veth-{ifname}"));
        if let Ok(index) = nix::net::if_::if_nametoindex(ifname) {
            cls_bpf_detach(index).map_err(|source| EbpfError::Attach { ifname: ifname.to_string(), source })?;
        }
        let Some(id) = id else { return Ok(()) };
        let name = prog_names::FROM_CONTAINER;
        let prog: &mut SchedClassifier = program(&mut self.ebpf, name)?;
        prog.detach(id).map_err(|source| EbpfError::Program { name, source })
    }

    /// TC egress on a netd bridge (isolation from Docker's own bridges), pinned as
    /// `bridge-IF`. Without a pin directory the attachment lives as long as this object.
    pub fn attach_bridge(&mut self, ifname: &str) -> Result<(), EbpfError> {
        self.attach_tc_pinned(prog_names::TO_BRIDGE, ifname, TcAttachType::Egress, &format!("bridge-{ifname}"))
    }

    /// TC ingress on one of Docker's own bridges (ports netd publishes, reached from Docker's
    /// containers through a host address), pinned as `foreign-IF` (the same without a pin
    /// directory).
    pub fn attach_foreign_bridge(&mut self, ifname: &str) -> Result<(), EbpfError> {
        let rel = format!("foreign-{ifname}");
        self.attach_tc_pinned(prog_names::FROM_FOREIGN_BRIDGE, ifname, TcAttachType::Ingress, &rel)
    }

    /// The names of the pinned links whose file name starts with `prefix` (a previous daemon's
    /// included), without the prefix.
    pub fn pinned_links(&self, prefix: &str) -> Vec<String> {
        let Some(dir) = self.pin_dir.as_ref().map(|d| d.join("links")) else { return Vec::new() };
        let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
        rd.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.strip_prefix(prefix).map(str::to_string))
            .collect()
    }

    /// Leave every pinned attachment in place when this object goes (`--live-restore`, or a
    /// daemon that is being restarted): the datapath keeps running without us.
    pub fn keep_pins(&mut self) {
        for (_, pl) in self.pinned.drain() {
            std::mem::forget(pl);
        }
    }

    fn attach_xdp(&mut self, ifname: &str, want: XdpMode) -> Result<XdpMode, EbpfError> {
        let name = prog_names::XDP_UPLINK;
        let pin = self.link_pin(&format!("xdp-{ifname}"));
        let adopted = pin.as_deref().and_then(Self::adopt);
        let prog: &mut Xdp = program(&mut self.ebpf, name)?;
        let pe = |source| EbpfError::Program { name, source };
        let (id, mode) = match adopted.map(XdpLink::try_from) {
            Some(Ok(link)) => (prog.attach_to_link(link).map_err(pe)?, XdpMode::Driver),
            _ => match prog.attach(ifname, want) {
                Ok(id) => (id, want),
                Err(native) => {
                    tracing::warn!(%ifname, error = %native, "native XDP refused, using generic XDP");
                    (prog.attach(ifname, XdpMode::Skb).map_err(pe)?, XdpMode::Skb)
                }
            },
        };
        if let Some(p) = pin {
            let fd: FdLink =
                prog.take_link(id).map_err(pe)?.try_into().map_err(|e: LinkError| EbpfError::Pin(e.to_string()))?;
            self.pin_link(fd, p)?;
        }
        Ok(mode)
    }

    fn attach_tc(
        &mut self,
        name: &'static str,
        ifname: &str,
        dir: TcAttachType,
    ) -> Result<SchedClassifierLinkId, EbpfError> {
        let prog: &mut SchedClassifier = program(&mut self.ebpf, name)?;
        prog.attach(ifname, dir).map_err(|source| EbpfError::Program { name, source })
    }

    /// Attach (or adopt a previous daemon's pinned attachment) and pin it under `rel`. Without
    /// a pin directory this is a plain attach.
    fn attach_tc_pinned(
        &mut self,
        name: &'static str,
        ifname: &str,
        dir: TcAttachType,
        rel: &str,
    ) -> Result<(), EbpfError> {
        let Some(pin) = self.link_pin(rel) else {
            self.attach_tc(name, ifname, dir)?;
            return Ok(());
        };
        let adopted = Self::adopt(&pin);
        let prog: &mut SchedClassifier = program(&mut self.ebpf, name)?;
        let pe = |source| EbpfError::Program { name, source };
        let id = match adopted.map(SchedClassifierLink::try_from) {
            Some(Ok(link)) => prog.attach_to_link(link).map_err(pe)?,
            _ => prog.attach(ifname, dir).map_err(pe)?,
        };
        let fd: FdLink =
            prog.take_link(id).map_err(pe)?.try_into().map_err(|e: LinkError| EbpfError::Pin(e.to_string()))?;
        self.pin_link(fd, pin)
    }

    /// The sock_addr hooks (connect, sendmsg, recvmsg for each family) on a cgroup v2 directory.
    pub fn attach_cgroup<F: AsFd>(&mut self, cgroup: F) -> Result<(), EbpfError> {
        const HOOKS: [&str; 6] = [
            prog_names::SOCK_CONNECT4,
            prog_names::SOCK_SENDMSG4,
            prog_names::SOCK_RECVMSG4,
            prog_names::SOCK_CONNECT6,
            prog_names::SOCK_SENDMSG6,
            prog_names::SOCK_RECVMSG6,
        ];
        let pins: Vec<Option<PathBuf>> = HOOKS.iter().map(|n| self.link_pin(&format!("cgroup-{n}"))).collect();
        // A previous daemon's hooks: attach ours first, then let go of theirs (no gap).
        let old: Vec<FdLink> = pins.iter().flatten().filter_map(|p| Self::adopt(p)).collect();
        for (i, name) in HOOKS.into_iter().enumerate() {
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            // With bpf_link (kernel >= 5.7, what aya uses here) the kernel attaches in multi
            // mode itself and the attach flags must be 0 ("Single"); several daemons (one per
            // network namespace) can share a cgroup, each program acting only on its own
            // namespace (cookie check).
            let id = prog
                .attach(cgroup.as_fd(), CgroupAttachMode::Single)
                .map_err(|source| EbpfError::Program { name, source })?;
            if let Some(p) = &pins[i] {
                let fd: FdLink = prog
                    .take_link(id)
                    .map_err(|source| EbpfError::Program { name, source })?
                    .try_into()
                    .map_err(|e: LinkError| EbpfError::Pin(e.to_string()))?;
                self.pin_link(fd, p.clone())?;
            }
        }
        drop(old);
        Ok(())
    }

    /// File descriptor of a loaded program (for `BPF_PROG_TEST_RUN`).
    pub fn prog_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, EbpfError> {
        let prog = self.prog(name).ok_or(EbpfError::MissingProgram(name))?;
        prog.fd().map(|fd| fd.as_fd()).map_err(|source| EbpfError::Program { name, source })
    }

    fn sum_counts(&self, map: &'static str, n: u32) -> Result<Vec<PacketCount>, EbpfError> {
        let m = self.ebpf.map(map).ok_or(EbpfError::MissingMap(map))?;
        let arr: PerCpuArray<&MapData, PacketCount> =
            PerCpuArray::try_from(m).map_err(|source| EbpfError::Map { name: map, source })?;
        (0..n)
            .map(|i| {
                let per_cpu = arr.get(&i, 0).map_err(|source| EbpfError::Map { name: map, source })?;
                Ok(per_cpu.iter().fold(PacketCount::default(), |acc, c| PacketCount {
                    packets: acc.packets + c.packets,
                    bytes: acc.bytes + c.bytes,
                }))
            })
            .collect()
    }

    /// Packets and bytes seen by each entry point, summed over CPUs.
    pub fn prog_stats(&self) -> Result<BTreeMap<&'static str, PacketCount>, EbpfError> {
        let counts = self.sum_counts(map_names::PROG_STATS, ProgId::COUNT)?;
        Ok(ProgId::ALL.iter().map(|p| (p.prog_name(), counts[*p as usize])).collect())
    }

    /// Packets per drop reason, summed over CPUs.
    pub fn drop_stats(&self) -> Result<BTreeMap<&'static str, u64>, EbpfError> {
        let counts = self.sum_counts(map_names::DROP_STATS, DropReason::COUNT)?;
        Ok(DropReason::ALL.iter().map(|r| (r.label(), counts[*r as usize].packets)).collect())
    }
}

/// The maps pinned under `DIR/maps` ([`Loaded::load_pinned`]).
fn pinned_map_names() -> Vec<&'static str> {
    map_names::ALL
        .iter()
        .chain(["SOCK_REV_V4", "SOCK_REV_V6", "FRAGS", "FRAGS_46", V6::V6_PROGS].iter())
        .chain(netd_common::v6::map_names::ALL.iter())
        .copied()
        .collect()
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it (harmless on newer ones).
fn raise_memlock() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// Result of one `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone)]
pub struct TestRun {
    /// The program's return value (XDP action, TC verdict, ...).
    pub retval: u32,
    /// The packet as the program left it.
    pub data_out: Vec<u8>,
    pub duration_ns: u32,
}

/// Run a loaded program once on `data_in` with `BPF_PROG_TEST_RUN` (no attachment needed).
pub fn test_run(prog: BorrowedFd<'_>, data_in: &[u8]) -> Result<TestRun, EbpfError> {
    test_run_repeat(prog, data_in, 1)
}

/// `test_run` with the kernel running the program `repeat` times on the same packet (which
/// keeps each run's rewrites); `duration_ns` is the mean time of one run (`netd-bench micro`).
pub fn test_run_repeat(prog: BorrowedFd<'_>, data_in: &[u8], repeat: u32) -> Result<TestRun, EbpfError> {
    // `union bpf_attr`'s `test` member (include/uapi/linux/bpf.h), zero-padded.
    #[repr(C, align(8))]
    #[derive(Default)]
    struct TestAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: [u32; 5],
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut out = vec![0u8; data_in.len() + 256];
    let mut attr = TestAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data_in.len() as u32,
        data_size_out: out.len() as u32,
        data_in: data_in.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..Default::default()
    };
    // SAFETY: attr points at a correctly laid out, fully initialised bpf_attr prefix; the kernel
    // reads data_in and writes at most data_size_out bytes to data_out.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &mut attr as *mut TestAttr, std::mem::size_of::<TestAttr>())
    };
    if rc < 0 {
        return Err(EbpfError::TestRun(std::io::Error::last_os_error()));
    }
    out.truncate(attr.data_size_out as usize);
    Ok(TestRun { retval: attr.retval, data_out: out, duration_ns: attr.duration })
}

/// The priority and handle of the sandbox veths' cls_bpf filter ([`cls_bpf_attach`]).
const CLS_BPF_PRIO: u32 = 1;
const CLS_BPF_HANDLE: u32 = 1;

/// Attach SchedClassifier `prog` to the ingress of device `ifindex` (of the calling thread's
/// network namespace) as a direct-action `cls_bpf` filter under a `clsact` qdisc, over
/// netlink, replacing the filter a previous attach left (same priority and handle). A tcx
/// attach (`bpf_link`) waits for a normal RCU grace period under the rtnl lock (8-14 ms with
/// HZ=250, one per `netd run`); the first filter of a fresh clsact waits for an expedited one
/// at most. The program sees the same return codes (TCX_NEXT is TC_ACT_UNSPEC, TCX_PASS
/// TC_ACT_OK, ...). The filter lives as long as the device (no pin needed).
pub fn cls_bpf_attach(prog: BorrowedFd<'_>, ifindex: u32, name: &str) -> std::io::Result<()> {
    let nl = RtSock::new()?;
    // clsact: handle ffff:0, parent TC_H_CLSACT. EEXIST: already there.
    let mut q = tcmsg(ifindex, 0xffff_0000, 0xffff_fff1, 0);
    nla(&mut q, 1, b"clsact\0");
    match nl.request(36 /* RTM_NEWQDISC */, 0x400 | 0x200 /* CREATE|EXCL */, &q) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(e),
    }
    // The filter: parent ffff:fff2 (ingress), info = prio << 16 | htons(ETH_P_ALL).
    let mut f = tcmsg(ifindex, CLS_BPF_HANDLE, 0xffff_fff2, (CLS_BPF_PRIO << 16) | u32::from(0x0003u16.to_be()));
    nla(&mut f, 1, b"bpf\0");
    let mut opts = Vec::new();
    nla(&mut opts, 6 /* TCA_BPF_FD */, &(prog.as_raw_fd() as u32).to_ne_bytes());
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    nla(&mut opts, 7 /* TCA_BPF_NAME */, &n);
    nla(&mut opts, 8 /* TCA_BPF_FLAGS */, &1u32.to_ne_bytes() /* TCA_BPF_FLAG_ACT_DIRECT */);
    nla(&mut f, 2 /* TCA_OPTIONS */, &opts);
    // CREATE without EXCL: an existing filter with this handle is replaced.
    nl.request(44 /* RTM_NEWTFILTER */, 0x400, &f)
}

/// Remove [`cls_bpf_attach`]'s filter from device `ifindex` (Ok when it or the device is gone).
pub fn cls_bpf_detach(ifindex: u32) -> std::io::Result<()> {
    let nl = RtSock::new()?;
    let f = tcmsg(ifindex, CLS_BPF_HANDLE, 0xffff_fff2, (CLS_BPF_PRIO << 16) | u32::from(0x0003u16.to_be()));
    match nl.request(45 /* RTM_DELTFILTER */, 0, &f) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENOENT | libc::EINVAL)) => Ok(()),
        r => r,
    }
}

/// `struct tcmsg` (family AF_UNSPEC).
fn tcmsg(ifindex: u32, handle: u32, parent: u32, info: u32) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    b.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    b.extend_from_slice(&handle.to_ne_bytes());
    b.extend_from_slice(&parent.to_ne_bytes());
    b.extend_from_slice(&info.to_ne_bytes());
    b
}

/// Append a netlink attribute (4-byte aligned).
fn nla(b: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    b.extend_from_slice(&(len as u16).to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(data);
    b.resize(b.len().next_multiple_of(4), 0);
}

/// A NETLINK_ROUTE socket for one request at a time (blocking, acked).
struct RtSock(std::os::fd::OwnedFd);

impl RtSock {
    fn new() -> std::io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the fd is ours.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd.
        Ok(Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    /// Send message `ty` with `flags` (| NLM_F_REQUEST | NLM_F_ACK) and `body`; the kernel's ack.
    fn request(&self, ty: u16, flags: u16, body: &[u8]) -> std::io::Result<()> {
        let len = 16 + body.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&(flags | 0x1 | 0x4).to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes()); // seq
        m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel's
        m.extend_from_slice(body);
        // SAFETY: sending our buffer to the kernel (a zeroed sockaddr_nl addresses it).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        let rc = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                m.as_ptr().cast(),
                m.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: reading into our buffer.
            let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            let mut off = 0;
            while off + 16 <= n {
                let mlen = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
                let mty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2 bytes"));
                if mty == 2 /* NLMSG_ERROR */ && off + 20 <= n {
                    let code = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().expect("4 bytes"));
                    return if code == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(-code)) };
                }
                if mlen < 16 {
                    break;
                }
                off += mlen.next_multiple_of(4);
            }
        }
    }
}

/// `SO_NETNS_COOKIE` of the calling thread's network namespace (the value
/// `bpf_get_netns_cookie` returns for sockets of that namespace).
pub fn current_netns_cookie() -> std::io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: socket/getsockopt/close with valid arguments and an 8-byte out buffer.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(fd, libc::SOL_SOCKET, SO_NETNS_COOKIE, (&mut cookie as *mut u64).cast(), &mut len);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 { Err(err) } else { Ok(cookie) }
    }
}

/// Test hook: with `NETD_TEST_V6_LOAD_GATE=<path>` in the daemon's environment the background
/// IPv6 loader ([`Loaded::spawn_v6`]) does not finish before `<path>` exists (at most 120 s), so
/// a test can keep the load "in progress" for as long as it needs (`ipv6.rs`
/// `ebpf_v6_load_waits_outside_the_locks`). Unset: nothing.
fn test_v6_load_gate() {
    let Some(gate) = std::env::var_os("NETD_TEST_V6_LOAD_GATE") else { return };
    let gate = PathBuf::from(gate);
    tracing::info!(gate = %gate.display(), "NETD_TEST_V6_LOAD_GATE: the IPv6 load waits for the gate");
    for _ in 0..2400 {
        if gate.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The IPv6 bodies of `ebpf` (loaded here when they are not yet) as (`V6_PROGS` slot, fd).
fn v6_fds(ebpf: &mut Ebpf) -> Result<Vec<(u32, aya::programs::ProgramFd)>, EbpfError> {
    let mut fds = Vec::new();
    for (name, slot) in V6::ALL {
        let prog: &mut SchedClassifier = program(ebpf, name)?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| EbpfError::Program { name, source })?;
        }
        let fd = prog
            .fd()
            .and_then(|fd| fd.try_clone().map_err(Into::into))
            .map_err(|source| EbpfError::Program { name, source })?;
        fds.push((slot, fd));
    }
    Ok(fds)
}

/// The program `name` of the object, as its kind `P` (SchedClassifier, Xdp, CgroupSockAddr).
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut P, EbpfError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(EbpfError::MissingProgram(name))?
        .try_into()
        .map_err(|source| EbpfError::Program { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_has_every_entry_point_and_map() {
        let (progs, maps) = describe(OBJECT).expect("parse embedded object");
        let names: Vec<&str> = progs.iter().map(|p| p.name.as_str()).collect();
        for want in prog_names::ALL {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let xdp = progs.iter().find(|p| p.name == prog_names::XDP_UPLINK).unwrap();
        assert_eq!(xdp.kind, "xdp (frags)");
        let stats = maps.iter().find(|m| m.name == map_names::PROG_STATS).unwrap();
        assert_eq!(stats.map_type, "percpu_array");
        assert_eq!(stats.key_size, 4);
        assert_eq!(stats.value_size, std::mem::size_of::<PacketCount>() as u32);
        assert_eq!(stats.max_entries, ProgId::COUNT);
        let cfg = maps.iter().find(|m| m.name == map_names::CONFIG).unwrap();
        assert_eq!(cfg.value_size, std::mem::size_of::<Config>() as u32);
    }
}
