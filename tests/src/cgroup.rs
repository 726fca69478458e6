//! A throwaway cgroup v2 directory for the sock_addr hooks, so tests never attach at the root
//! of the machine's cgroup tree.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

pub struct TestCgroup {
    pub path: PathBuf,
    /// Set when we mounted cgroup2 ourselves (unmounted on drop).
    mounted: Option<PathBuf>,
}

/// The first cgroup2 mount point of this mount namespace.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
    })
}

/// Move every process of cgroup `from` into cgroup `to` (best effort: one that exits meanwhile
/// is gone anyway).
pub fn move_procs(from: &Path, to: &Path) {
    for pid in fs::read_to_string(from.join("cgroup.procs")).unwrap_or_default().split_whitespace() {
        let _ = fs::write(to.join("cgroup.procs"), pid);
    }
}

impl TestCgroup {
    pub fn new(name: &str) -> Result<Self> {
        let (root, mounted) = match cgroup2_mount() {
            Some(p) => (p, None),
            None => {
                let p = PathBuf::from(format!("/run/netd-tests/cgroup2-{}", std::process::id()));
                fs::create_dir_all(&p)?;
                nix::mount::mount(Some("cgroup2"), &p, Some("cgroup2"), nix::mount::MsFlags::empty(), None::<&str>)
                    .context("mount cgroup2")?;
                (p.clone(), Some(p))
            }
        };
        let path = root.join(name);
        fs::create_dir_all(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self { path, mounted })
    }

    pub fn procs(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    pub fn dir(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Move any straggler back to the parent, then remove the directory.
        if let Some(parent) = self.path.parent() {
            move_procs(&self.path, parent);
        }
        if let Err(e) = fs::remove_dir(&self.path) {
            eprintln!("warning: removing cgroup {}: {e}", self.path.display());
        }
        if let Some(m) = &self.mounted {
            let _ = nix::mount::umount(m);
            let _ = fs::remove_dir(m);
        }
    }
}
