//! Test harness for netd: throwaway network namespaces, a `TestHost` (a "host" netns where netd
//! runs and an "outside" netns joined to it by a veth), and TCP/UDP echo probes with timeouts.
//!
//! Nothing here touches the machine's root network namespace: links are created directly inside
//! the test's namespaces (`ip -n NS link add ... peer ... netns OTHER`), and every guard removes
//! what it created on drop, also when the test panics.
pub mod cgroup;
pub mod cni;
pub mod daemon;
pub mod docker;
pub mod frames;
pub mod load;
pub mod netns;
pub mod podman;
pub mod probe;

pub use cgroup::TestCgroup;
pub use daemon::TestDaemon;
pub use docker::TestDocker;
pub use netns::{Netns, TestHost, in_netns, ip};

/// Skip (return early from) a test that needs root, saying why.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!("SKIP {}: needs root (network namespaces, eBPF)", module_path!());
            return;
        }
    };
}

/// `netd-probe`, the test servers and clients (next to the test binary).
pub fn probe_path() -> String {
    daemon::probe_bin().display().to_string()
}

/// A socket address literal.
pub fn addr(s: &str) -> std::net::SocketAddr {
    s.parse().expect("socket address")
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A name unique to this process and call, short enough for interface and netns names.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}x{n}", std::process::id() % 100_000)
}
