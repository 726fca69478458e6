//! Network namespaces bind-mounted at arbitrary paths (like `ip netns add`, but under netd's
//! exec-root), and running code inside one on a dedicated OS thread.
//!
//! `setns` changes the calling *thread*; doing it on a tokio worker would move that worker, so
//! every namespace switch here happens on a fresh thread that ends with the closure.
use std::{
    fs::File,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("namespace thread panicked")]
    Panicked,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> NetnsError + 'a {
    move |source| NetnsError::Io { op, path: path.to_path_buf(), source }
}

fn sys<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> NetnsError + 'a {
    move |source| NetnsError::Sys { op, path: path.to_path_buf(), source }
}

/// Create a new network namespace and bind-mount it at `path` (idempotent: an existing
/// namespace mount at `path` is kept).
pub fn create(path: &Path) -> Result<(), NetnsError> {
    create_probed(path).map(|_| ())
}

/// [`create`], and whether the new namespace's loopback has IPv6 ([`lo_ipv6_enabled`]), read
/// on the thread that made it (`None`: the namespace was there already).
pub fn create_probed(path: &Path) -> Result<Option<bool>, NetnsError> {
    if is_nsfs(path) {
        return Ok(None);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("mkdir", dir))?;
    }
    File::create(path).map_err(io("create", path))?;
    let target = path.to_path_buf();
    let r = std::thread::spawn(move || -> Result<Option<bool>, NetnsError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(sys("unshare", &target))?;
        let me = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(Some(me.as_str()), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(sys("bind-mount", &target))?;
        Ok(Some(lo_ipv6_here()))
    })
    .join()
    .map_err(|_| NetnsError::Panicked)?;
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}

/// A network namespace made ahead of need ([`spare`]), held by an open `nsfs` file until it
/// is mounted where a sandbox's namespace goes ([`Spare::mount_at`]). Nothing outlives the
/// daemon: a spare nobody took goes with the file (at shutdown, or when the daemon dies).
pub struct Spare {
    ns: File,
    /// Whether its loopback has IPv6 ([`lo_ipv6_enabled`]), read when it was made.
    pub lo_ipv6: bool,
}

/// Make a [`Spare`] namespace: a thread of its own enters a new network namespace and keeps a
/// file of it (the creation, ~1 ms of kernel work plus a thread, off a sandbox's start).
pub fn spare() -> Result<Spare, NetnsError> {
    std::thread::spawn(move || -> Result<Spare, NetnsError> {
        let here = Path::new("/proc/thread-self/ns/net");
        unshare(CloneFlags::CLONE_NEWNET).map_err(sys("unshare", here))?;
        let me = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        let ns = File::open(&me).map_err(io("open", here))?;
        Ok(Spare { ns, lo_ipv6: lo_ipv6_here() })
    })
    .join()
    .map_err(|_| NetnsError::Panicked)?
}

impl Spare {
    /// Mount the namespace at `path` (which must not hold one): one bind mount, no thread.
    /// Returns whether its loopback has IPv6.
    pub fn mount_at(self, path: &Path) -> Result<bool, NetnsError> {
        use std::os::fd::AsRawFd;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("mkdir", dir))?;
        }
        File::create(path).map_err(io("create", path))?;
        let src = format!("/proc/self/fd/{}", self.ns.as_raw_fd());
        if let Err(e) = mount(Some(src.as_str()), path, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
            let _ = std::fs::remove_file(path);
            return Err(NetnsError::Sys { op: "bind-mount", path: path.to_path_buf(), source: e });
        }
        Ok(self.lo_ipv6)
    }
}

/// Unmount and remove a namespace created by [`create`] (Ok when absent).
pub fn delete(path: &Path) -> Result<(), NetnsError> {
    if !path.exists() {
        return Ok(());
    }
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(NetnsError::Sys { op: "umount", path: path.to_path_buf(), source: e }),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(NetnsError::Io { op: "remove", path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

/// Make `dir` (where the namespaces are mounted) a private mount point of its own, a bind
/// mount onto itself, as `ip netns` does for /run/netns (idempotent: kept when it already is
/// one). Every supervisor's mount namespace starts as a copy of the daemon's, namespace mounts
/// included, and a copy holds its namespace alive: N sandboxes held N² copies, and removing them
/// (at `netd down`, in the kernel's mount and netns cleanup) grew with the square. A mount point
/// of its own lets each supervisor drop the whole set in one lazy unmount ([`detach_copies`]);
/// private, so namespaces mounted later do not propagate into the supervisors' namespaces.
pub fn own_mount(dir: &Path) -> Result<(), NetnsError> {
    std::fs::create_dir_all(dir).map_err(io("mkdir", dir))?;
    if !is_mount_point(dir) {
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(sys("bind-mount", dir))?;
    }
    mount(None::<&str>, dir, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>).map_err(sys("make-private", dir))
}

/// Undo [`own_mount`] (at shutdown, once every namespace below it is gone).
pub fn drop_own_mount(dir: &Path) {
    if is_mount_point(dir) {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
    }
}

/// In a supervisor's fresh mount namespace: let go of its copies of the namespace mounts below
/// `dir` (a mount point of its own, [`own_mount`]) in one lazy unmount. Not a mount point (a
/// daemon from before): nothing to do.
pub fn detach_copies(dir: &Path) {
    let _ = umount2(dir, MntFlags::MNT_DETACH);
}

/// Remove every namespace mounted below `dir` (the daemon's shutdown): one lazy unmount of the
/// whole set when `dir` is a mount point of its own ([`own_mount`]), where unmounting them one
/// by one waits for an RCU grace period each; then the files (and any namespace still mounted
/// on one, [`delete`]).
pub fn delete_all(dir: &Path) {
    if is_mount_point(dir) {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if is_nsfs(&p) {
            let _ = delete(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Whether `path` is a mount point (of any file system) in this mount namespace.
pub fn is_mount_point(path: &Path) -> bool {
    is_netns_mount(path)
}

/// Whether `path` is a namespace file (a namespace is mounted on it): one `statfs`, where
/// [`is_netns_mount`] reads the whole mount table (one line per sandbox).
pub fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// Whether `path` currently has a namespace mounted on it.
pub fn is_netns_mount(path: &Path) -> bool {
    let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let p = path.to_string_lossy();
    m.lines().any(|l| l.split_whitespace().nth(4) == Some(p.as_ref()))
}

/// Run `f` on a fresh OS thread that has joined the network namespace at `path`.
pub fn run_in<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetnsError> {
    let target = path.to_path_buf();
    std::thread::spawn(move || -> Result<T, NetnsError> {
        let fd = File::open(&target).map_err(io("open", &target))?;
        setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(sys("setns", &target))?;
        Ok(f())
    })
    .join()
    .map_err(|_| NetnsError::Panicked)?
}

/// Whether the namespace at `path` has IPv6 on its loopback (`::1`): what Docker 26+ looks at to
/// keep or drop the IPv6 lines of a container's /etc/hosts (`IPv6LoEnabled`). False when the
/// kernel has no IPv6, or `net.ipv6.conf.lo.disable_ipv6` (or `all`) is 1 in the namespace.
pub fn lo_ipv6_enabled(path: &Path) -> bool {
    run_in(path, lo_ipv6_here).unwrap_or(false)
}

/// [`lo_ipv6_enabled`] for the calling thread's namespace.
fn lo_ipv6_here() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/lo/disable_ipv6").is_ok_and(|v| v.trim() == "0")
}

/// Run a future on a single-threaded runtime on a thread inside the namespace at `path`
/// (sockets it opens, e.g. netlink, belong to that namespace).
pub fn block_on_in<T: Send + 'static, F>(path: &Path, f: impl FnOnce() -> F + Send + 'static) -> Result<T, NetnsError>
where
    F: std::future::Future<Output = T>,
{
    run_in(path, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(f())
    })
}
