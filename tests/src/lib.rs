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

/// A counter of /proc/net/snmp (`Tcp: InSegs`, `Udp: InDatagrams`), or with an empty `proto` of
/// /proc/net/snmp6 (`Icmp6InRouterSolicits`), read inside a namespace (`/proc/thread-self`:
/// `/proc/net` is the main thread's namespace, not this thread's).
pub fn snmp(ns: &str, proto: &'static str, field: &'static str) -> u64 {
    in_netns(ns, move || {
        if proto.is_empty() {
            let s = std::fs::read_to_string("/proc/thread-self/net/snmp6").unwrap();
            return s
                .lines()
                .find_map(|l| l.strip_prefix(field).and_then(|v| v.trim().parse().ok()))
                .unwrap_or_else(|| panic!("no {field} in snmp6"));
        }
        let s = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
        let mut rows = s.lines().filter(|l| l.starts_with(&format!("{proto}:")));
        let (h, v) = (rows.next().unwrap(), rows.next().unwrap());
        let i = h.split_whitespace().position(|x| x == field).unwrap();
        v.split_whitespace().nth(i).unwrap().parse().unwrap()
    })
    .unwrap()
}

/// The counter once it has stood still for half a second (bounded).
pub fn settled(ns: &str, proto: &'static str, field: &'static str) -> u64 {
    let mut before = snmp(ns, proto, field);
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = snmp(ns, proto, field);
        if now == before {
            break;
        }
        before = now;
    }
    before
}
