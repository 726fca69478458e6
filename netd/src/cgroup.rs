//! One cgroup v2 per sandbox, so that stopping a sandbox ends every process it started (as
//! Docker's containers end with their init), not only the main one.
//!
//! Layout: `<hook cgroup>/<cgroup-parent>/<sandbox id>`, where the hook cgroup is where the eBPF
//! dataplane attaches its sock_addr programs (`--cgroup`, default the cgroup2 root, mounted by
//! the daemon when this mount namespace has none). Programs attached to a cgroup apply to its
//! descendants too, so host-mode sandboxes keep the socket-level translation.
//!
//! The daemon creates the directory before starting the supervisor; the supervisor moves the
//! command into it between fork and exec (before any process of the sandbox can fork), and the
//! daemon ends the whole group with `cgroup.kill` when the main process has exited, when the
//! sandbox is stopped or killed, removed with `-f`, or the daemon goes down.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("mounting cgroup2 on {path}: {source}")]
    Mount { path: PathBuf, source: nix::Error },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io { what, path: path.to_path_buf(), source }
}

/// Whether `p` is a cgroup2 mount point in this mount namespace.
pub fn is_cgroup2_mount(p: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return false };
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2 && f[2] == "cgroup2" && Path::new(f[1]) == p
    })
}

/// The daemon's cgroup2 places: where the sock_addr hooks attach and where sandboxes live.
#[derive(Debug, Clone)]
pub struct Cgroups {
    /// `--cgroup`, or the cgroup2 root.
    pub hook: PathBuf,
    /// `<hook>/<cgroup-parent>`: one directory per sandbox below it.
    pub parent: PathBuf,
    /// A cgroup2 mount the daemon made itself (unmounted at shutdown).
    pub mounted: Option<PathBuf>,
}

impl Cgroups {
    /// Resolve (mounting cgroup2 at `mount_at` when there is no cgroup2 mount) and create the
    /// parent directory.
    ///
    /// Without `hook`, the daemon mounts the cgroup2 hierarchy itself at `mount_at` (its own
    /// mount, so its paths stay valid whatever other mounts come and go; a mount left there by
    /// a crashed daemon is reused).
    pub fn setup(hook: Option<&Path>, parent: &str, mount_at: &Path) -> Result<Self, CgroupError> {
        let mut mounted = None;
        let hook = match hook {
            Some(p) => p.to_path_buf(),
            None => {
                if !is_cgroup2_mount(mount_at) {
                    std::fs::create_dir_all(mount_at).map_err(io("creating", mount_at))?;
                    nix::mount::mount(
                        Some("cgroup2"),
                        mount_at,
                        Some("cgroup2"),
                        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOEXEC,
                        None::<&str>,
                    )
                    .map_err(|source| CgroupError::Mount { path: mount_at.to_path_buf(), source })?;
                }
                mounted = Some(mount_at.to_path_buf());
                mount_at.to_path_buf()
            }
        };
        let parent = hook.join(parent.trim_start_matches('/'));
        std::fs::create_dir_all(&parent).map_err(io("creating cgroup", &parent))?;
        Ok(Self { hook, parent, mounted })
    }

    /// The cgroup of sandbox `id`.
    pub fn sandbox(&self, id: &str) -> PathBuf {
        self.parent.join(id)
    }

    /// Create the cgroup of sandbox `id` (an existing one is reused).
    pub fn create(&self, id: &str) -> Result<PathBuf, CgroupError> {
        let p = self.sandbox(id);
        // The parent too: another daemon sharing it may have removed it when it went down.
        std::fs::create_dir_all(&p).map_err(io("creating cgroup", &p))?;
        Ok(p)
    }

    /// SIGKILL every process of sandbox `id`; true when some were there.
    pub fn kill(&self, id: &str) -> Result<bool, CgroupError> {
        let p = self.sandbox(id);
        if !populated(&p) {
            return Ok(false);
        }
        kill(&p)?;
        Ok(true)
    }

    /// Kill every process of sandbox `id`, wait (bounded, async) until none is left, and
    /// remove its cgroup. Absent: nothing to do. True when processes had to be killed.
    pub async fn end(&self, id: &str, timeout: Duration) -> Result<bool, CgroupError> {
        let p = self.sandbox(id);
        if !p.exists() {
            return Ok(false);
        }
        let pids = procs(&p);
        let killed = self.kill(id)?;
        let deadline = Instant::now() + timeout;
        while populated(&p) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Orphans of the sandbox were re-parented to the daemon (a subreaper): reap them, and
        // only them (the daemon's other children are waited for by their owners).
        for pid in pids {
            let _ =
                nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
        match std::fs::remove_dir(&p) {
            Ok(()) => Ok(killed),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(killed),
            Err(e) => Err(io("removing cgroup", &p)(e)),
        }
    }

    /// Remove the parent directory if no sandbox cgroup is left in it, and unmount our mount.
    pub fn shutdown(&self) {
        let _ = std::fs::remove_dir(&self.parent);
        self.unmount();
    }

    /// Unmount the cgroup2 mount we made (the cgroups themselves stay in the hierarchy).
    pub fn unmount(&self) {
        if let Some(m) = &self.mounted {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(m);
        }
    }
}

/// `cgroup.kill`: SIGKILL every process in the cgroup and its descendants (kernel >= 5.14;
/// older kernels: each process listed in `cgroup.procs`).
pub fn kill(cg: &Path) -> Result<(), CgroupError> {
    let f = cg.join("cgroup.kill");
    match std::fs::write(&f, "1") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::PermissionDenied => {
            for pid in procs(cg) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            Ok(())
        }
        Err(e) => Err(io("writing", &f)(e)),
    }
}

/// Whether any process is left in the cgroup (or below it).
pub fn populated(cg: &Path) -> bool {
    std::fs::read_to_string(cg.join("cgroup.events"))
        .map(|s| s.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

/// The processes directly in the cgroup.
pub fn procs(cg: &Path) -> Vec<i32> {
    std::fs::read_to_string(cg.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}
