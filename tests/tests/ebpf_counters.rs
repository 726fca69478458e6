//! The eBPF programs attached to real interfaces in test namespaces see real packets: XDP (native
//! mode on veth) and both TC directions on the uplink, TC ingress on a sandbox-side veth, and the
//! cgroup sock_addr hooks, which must count only sockets of the daemon's own namespace.
use std::{net::SocketAddr, process::Command};

use netd::ebpf::{Loaded, current_netns_cookie};
use netd_common::{CONFIG_F_ENABLED, Config, prog_names as p};
use netd_tests::{TestCgroup, TestHost, probe, require_root, unique};

#[test]
fn programs_count_real_packets_on_veth_and_cgroup() {
    require_root!();
    let th = TestHost::new("ctr").expect("test host");
    let sb = th.add_peer("s", "vsb0", "10.99.0.1/24", "10.99.0.2/24", "10.99.0.1").expect("sandbox peer");
    let cg = TestCgroup::new(&unique("netd-ctr")).expect("cgroup");

    // Load and attach inside the host namespace (attach resolves interface names there).
    let cg_dir = cg.dir().to_path_buf();
    let loaded = th
        .host
        .run(move || -> anyhow::Result<(Loaded, aya::programs::XdpMode)> {
            let mut l = Loaded::load()?;
            l.set_config(Config {
                netns_cookie: current_netns_cookie()?,
                flags: CONFIG_F_ENABLED,
                port_lo: 0,
                port_hi: 0,
            })?;
            let mode = l.attach_uplink("up0")?;
            let _ = l.attach_container("vsb0")?;
            l.attach_cgroup(std::fs::File::open(&cg_dir)?)?;
            Ok((l, mode))
        })
        .unwrap()
        .expect("load and attach");
    let (loaded, mode) = loaded;
    assert!(matches!(mode, aya::programs::XdpMode::Driver), "XDP must run in native mode on veth, got {mode:?}");
    // Counters start at zero, but the kernel's own IPv6 neighbour discovery may already have
    // crossed the link: assert on deltas.
    let before = loaded.prog_stats().unwrap();
    assert!(before.values().all(|c| c.packets < 5), "fresh counters: {before:?}");

    // Outside -> host: TCP and UDP echo through the uplink (XDP + tc ingress, tc egress replies).
    let _srv = probe::EchoServer::start(&th.host.path(), "198.51.100.1:7000".parse().unwrap(), "host").unwrap();
    for i in 0..5 {
        let e = probe::tcp_echo(&th.outside.path(), "198.51.100.1:7000".parse().unwrap(), format!("tcp{i}").as_bytes())
            .expect("tcp echo");
        assert_eq!(e.tag, "host");
        assert_eq!(e.peer, "198.51.100.2");
        let e = probe::udp_echo(&th.outside.path(), "198.51.100.1:7000".parse().unwrap(), b"udp").expect("udp echo");
        assert_eq!(e.payload, b"udp");
    }
    // Sandbox -> host over the sandbox veth (tc ingress on the host side).
    let _srv2 = probe::EchoServer::start(&th.host.path(), "10.99.0.1:7001".parse().unwrap(), "gw").unwrap();
    let e = probe::tcp_echo(&sb.path(), "10.99.0.1:7001".parse().unwrap(), b"from-sandbox").expect("sandbox echo");
    assert_eq!(e.peer, "10.99.0.2");

    // A process in the test cgroup, in the host netns: its connect() is seen by connect4.
    // The same from the outside netns (same cgroup, other netns) must NOT be counted.
    let connect = |ns: &str, dst: SocketAddr| {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec nsenter --net={ns} bash -c 'exec 3<>/dev/tcp/{}/{} && echo hi >&3'",
            cg.dir().display(),
            dst.ip(),
            dst.port()
        );
        let st = Command::new("bash").arg("-c").arg(&script).status().expect("bash");
        assert!(st.success(), "connect via {ns} failed");
    };
    let _srv3 = probe::EchoServer::start(&th.outside.path(), "198.51.100.2:7002".parse().unwrap(), "out").unwrap();
    for _ in 0..3 {
        connect(&th.host.path(), "198.51.100.2:7002".parse().unwrap());
    }
    // The same over IPv6 (`::1` of each namespace): connect6 counts the host netns' only.
    let _lo6 = probe::EchoServer::start(&th.host.path(), "[::1]:7003".parse().unwrap(), "lo6").unwrap();
    let _lo6o = probe::EchoServer::start(&th.outside.path(), "[::1]:7003".parse().unwrap(), "lo6o").unwrap();
    for _ in 0..2 {
        connect(&th.host.path(), "[::1]:7003".parse().unwrap());
    }
    let mid = loaded.prog_stats().unwrap();
    for _ in 0..4 {
        connect(&th.outside.path(), "198.51.100.1:7000".parse().unwrap());
        connect(&th.outside.path(), "[::1]:7003".parse().unwrap());
    }

    let mut after = loaded.prog_stats().unwrap();
    eprintln!("counters: {after:#?}");
    for (name, c) in after.iter_mut() {
        c.packets -= before[name].packets;
        c.bytes -= before[name].bytes;
    }
    // 5 TCP exchanges (>= 4 packets each) + 5 UDP + the cgroup test's connects.
    assert!(after[p::XDP_UPLINK].packets >= 25, "xdp: {:?}", after[p::XDP_UPLINK]);
    assert!(after[p::FROM_NETDEV].packets >= 25, "tc ingress: {:?}", after[p::FROM_NETDEV]);
    assert!(after[p::TO_NETDEV].packets >= 15, "tc egress: {:?}", after[p::TO_NETDEV]);
    assert!(after[p::XDP_UPLINK].bytes > after[p::XDP_UPLINK].packets * 40, "xdp bytes counted");
    assert!(after[p::FROM_CONTAINER].packets >= 3, "sandbox veth: {:?}", after[p::FROM_CONTAINER]);
    assert_eq!(mid[p::SOCK_CONNECT4].packets, 3, "connect4 counts the 3 connects in the daemon netns");
    assert_eq!(
        after[p::SOCK_CONNECT4].packets,
        3,
        "connects from another netns in the same cgroup must be ignored (netns cookie check)"
    );
    assert_eq!(mid[p::SOCK_CONNECT6].packets, 2, "connect6 counts the 2 connects in the daemon netns");
    assert_eq!(after[p::SOCK_CONNECT6].packets, 2, "connect6: connects from another netns must be ignored");
    drop(loaded); // detach before the cgroup goes
}
