//! Security: the API socket is root-only and invisible to sandboxes; sandboxes cannot reach the
//! host's loopback services; forged frames from outside (destination 127.0.0.1, a sandbox
//! address, an unpublished port) never reach a sandbox.
use std::{os::unix::fs::MetadataExt, time::Duration};

use netd_tests::{
    TestDaemon, TestHost, addr,
    frames::{mac_of, send_raw, syn_frame},
    in_netns, probe, probe_path as p, require_root,
};
use serde_json::Value;

/// Connect to a unix socket as uid/gid 65534 (python drops privileges first).
fn connect_as_nobody(path: &str) -> std::process::Output {
    std::process::Command::new("python3")
        .args([
            "-c",
            "import os,socket,sys; os.setgroups([]); os.setgid(65534); os.setuid(65534); \
             s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')",
            path,
        ])
        .output()
        .expect("python3")
}

#[test]
fn api_socket_is_root_only_and_hidden_from_sandboxes() {
    require_root!();
    let th = TestHost::new("sock").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    let sock = d.socket.display().to_string();
    let md = std::fs::metadata(&d.socket).unwrap();
    assert_eq!((md.mode() & 0o777, md.uid()), (0o600, 0), "srw------- root");
    // The socket's directories are traversable, so only the socket's own mode stops this.
    let _ = std::process::Command::new("chmod").args(["o+x", "/run/netd-test"]).status();
    let _ = std::process::Command::new("chmod").arg("o+x").arg(&d.root).status();
    let o = connect_as_nobody(&sock);
    assert!(!o.status.success(), "a non-root user reached the API: {o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("PermissionError"), "{o:?}");

    // A sandbox (root inside) sees neither the socket nor the daemon's state directories.
    d.ok(&["run", "-d", "--name", "box", "--", "sleep", "300"]);
    for mode in [None, Some("host")] {
        let name = if mode.is_some() { "hostbox" } else { "box" };
        if let Some(m) = mode {
            d.ok(&["run", "-d", "--name", name, "--network", m, "--", "sleep", "300"]);
        }
        let r = d.cli(&[
            "exec",
            name,
            "--",
            "python3",
            "-c",
            "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('connected')",
            &sock,
        ]);
        assert_ne!(r.code, 0, "{name}: reached the daemon socket: {r:?}");
        assert!(!r.stdout.contains("connected"));
        for dir in [d.data_root(), d.exec_root()] {
            let r = d.cli(&["exec", name, "--", "ls", "-A", dir.to_str().unwrap()]);
            assert_eq!(r.stdout.trim(), "", "{name}: {} is empty inside: {r:?}", dir.display());
        }
    }
    // The daemon is unaffected.
    assert!(d.ok(&["ps", "-q"]).lines().count() == 2);
}

fn tcp_in_segs(ns: &str) -> u64 {
    in_netns(ns, || {
        let s = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
        let mut tcp = s.lines().filter(|l| l.starts_with("Tcp:"));
        let (h, v) = (tcp.next().unwrap(), tcp.next().unwrap());
        let i = h.split_whitespace().position(|x| x == "InSegs").unwrap();
        v.split_whitespace().nth(i).unwrap().parse().unwrap()
    })
    .unwrap()
}

fn outside_isolation(dataplane: &str) {
    let th = TestHost::new(&format!("sec{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane]).unwrap();
    let pr = p();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8080:7000",
        "-p",
        "127.0.0.1:8443:7001",
        "--",
        &pr,
        "serve",
        "--tag",
        "web",
        "7000",
        "7001",
        "7002",
    ]);
    let sb_ns = d.inspect("web")["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string();
    let sb_ip = d.inspect("web")["NetworkSettings"]["IPAddress"].as_str().unwrap().to_string();
    let out = th.outside.path();
    // Sanity: the published port works, from outside and (loopback binding) from the host.
    assert_eq!(probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"ok").unwrap().tag, "web");
    assert_eq!(probe::tcp_echo(&th.host.path(), addr("127.0.0.1:8443"), b"ok").unwrap().tag, "web");
    // Plain connections from outside: unpublished ports, the loopback-published port on the
    // host's address, the sandbox address with a route pointing at the host.
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:7002"), b"x").is_err(), "unpublished port");
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:8443"), b"x").is_err(), "loopback-published port");
    th.outside.exec_ok(&["ip", "route", "add", "172.16.0.0/12", "via", "198.51.100.1"]).unwrap();
    assert!(probe::tcp_echo(&out, addr(&format!("{sb_ip}:7000")), b"x").is_err(), "sandbox address");
    // Forged frames straight at the host's MAC: destination 127.0.0.1 (the loopback-published
    // port), the sandbox's address, and 127.0.0.1 of an unpublished port. None may reach it.
    let host_mac = mac_of(&th.host.path(), "up0");
    let out_mac = mac_of(&out, "out0");
    let sb: Vec<u8> = sb_ip.split('.').map(|x| x.parse().unwrap()).collect();
    let sb = [sb[0], sb[1], sb[2], sb[3]];
    let src = [198, 51, 100, 2];
    // Let the sanity connections' last segments (FIN/ACK, retransmitted SYNs of the refused
    // attempts) settle first: the counter must stand still for half a second (bounded).
    let mut before = tcp_in_segs(&sb_ns);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let now = tcp_in_segs(&sb_ns);
        if now == before {
            break;
        }
        before = now;
    }
    let mut frames = Vec::new();
    for _ in 0..5 {
        frames.push(syn_frame(host_mac, out_mac, src, [127, 0, 0, 1], 8443));
        frames.push(syn_frame(host_mac, out_mac, src, sb, 7000));
        frames.push(syn_frame(host_mac, out_mac, src, sb, 7002));
        frames.push(syn_frame(host_mac, out_mac, [127, 0, 0, 1], sb, 7000));
    }
    send_raw(&out, "out0", frames);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(tcp_in_segs(&sb_ns), before, "no forged segment reached the sandbox");
    if dataplane == "ebpf" {
        let v: Value = serde_json::from_str(&d.ok(&["stats", "--format", "json"])).unwrap();
        let drop = |r: &str| -> u64 {
            v["drops"].as_array().unwrap().iter().find(|x| x[0] == r).map_or(0, |x| x[1].as_u64().unwrap())
        };
        assert!(drop("direct_to_sandbox") >= 10, "{v}");
        assert!(drop("loopback_not_lo") >= 5, "{v}");
    }
    // And the sandbox cannot reach the host's loopback-only services.
    let _srv = probe::EchoServer::start(&th.host.path(), addr("127.0.0.1:9999"), "hostlo").unwrap();
    assert_eq!(probe::tcp_echo(&th.host.path(), addr("127.0.0.1:9999"), b"x").unwrap().tag, "hostlo");
    for target in ["172.17.0.1:9999", "198.51.100.1:9999", "127.0.0.1:9999", "172.17.0.1:8443"] {
        let r = d.cli(&["exec", "web", "--", &pr, "tcp", target, "x"]);
        assert!(r.code != 0 && !r.stdout.contains("hostlo"), "sandbox reached {target}: {r:?}");
    }
}

#[test]
fn ebpf_outside_and_sandboxes_cannot_cross_the_protections() {
    require_root!();
    outside_isolation("ebpf");
}

#[test]
fn iptables_outside_and_sandboxes_cannot_cross_the_protections() {
    require_root!();
    outside_isolation("iptables");
}
