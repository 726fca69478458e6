//! A UDP host port released by one sandbox and published by another: a client that keeps its
//! source port must reach the new sandbox at once, not the old one through a stale translation.
//! The iptables dataplane deletes the kernel's conntrack entries of the port over ctnetlink
//! (the `conntrack` binary is shadowed by one that fails and leaves a mark, so the test proves
//! it is not used); the eBPF dataplane purges its own conntrack. Runs for both dataplanes.
use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use netd_tests::{TestDaemon, TestHost, daemon::probe_bin, in_netns, require_root, unique};

/// One datagram from 198.51.100.2:40123 (a fixed source port) to the published port; the echo.
fn ask(th: &TestHost, payload: &str) -> Option<String> {
    let payload = payload.to_string();
    in_netns(&th.outside.path(), move || {
        // UDP has no TIME_WAIT: each call binds the same source port again.
        let s = UdpSocket::bind(SocketAddr::from(([198, 51, 100, 2], 40123))).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let mut buf = [0u8; 512];
        for _ in 0..3 {
            s.send_to(payload.as_bytes(), "198.51.100.1:5353").ok()?;
            if let Ok(n) = s.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    })
    .ok()
    .flatten()
}

fn udp_port_moves_to_a_new_sandbox(dataplane: &str) {
    let th = TestHost::new(&format!("ct{}", &dataplane[..1])).unwrap();
    // A `conntrack` that fails and leaves a mark, first in the daemon's PATH.
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = Dir(std::path::PathBuf::from(format!("/run/netd-test/{}", unique("ctbin"))));
    std::fs::create_dir_all(&dir.0).unwrap();
    let mark = dir.0.join("conntrack-was-run");
    let shim = dir.0.join("conntrack");
    std::fs::write(&shim, format!("#!/bin/sh\ntouch {}\nexit 1\n", mark.display())).unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", dir.0.display(), std::env::var("PATH").unwrap_or_default());
    let d = TestDaemon::start_env(&th, &[("PATH", &path)], &["--dataplane", dataplane]).unwrap();
    let pr = probe_bin().display().to_string();

    d.ok(&["run", "-d", "--name", "u1", "-p", "5353:5353/udp", "--", &pr, "serve", "--tag", "u1", "5353"]);
    let r = ask(&th, "one").expect("no answer from u1");
    assert!(r.starts_with("u1:"), "{r}");
    d.ok(&["rm", "-f", "u1"]);
    // u1's address goes to another sandbox, so a stale translation would lead nowhere useful.
    d.ok(&["run", "-d", "--name", "filler", "--", "sleep", "300"]);
    d.ok(&["run", "-d", "--name", "u2", "-p", "5353:5353/udp", "--", &pr, "serve", "--tag", "u2", "5353"]);
    let mut got = None;
    for _ in 0..5 {
        got = ask(&th, "two");
        if got.is_some() {
            break;
        }
    }
    let r = got.expect("the client's flow still goes to the removed sandbox (stale conntrack)");
    assert!(r.starts_with("u2:"), "{r}");
    assert!(!mark.exists(), "the daemon ran the conntrack binary");
}

#[test]
fn ebpf_udp_port_moves_to_a_new_sandbox() {
    require_root!();
    udp_port_moves_to_a_new_sandbox("ebpf");
}

#[test]
fn iptables_udp_port_moves_to_a_new_sandbox() {
    require_root!();
    udp_port_moves_to_a_new_sandbox("iptables");
}
