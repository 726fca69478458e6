//! IPv6 dual-stack, Docker 27+'s way, with real packets (issue 17): v6 networks and addresses,
//! `[::]` / `[::1]` / `[v6]` published ports from outside, the host and `::1`, NAT66
//! masquerade seen by an outside server, direct-access protection and isolation between v6
//! networks, AAAA names, a v4-only sandbox published on `[::]` (userland proxy). Each scenario
//! runs under both dataplanes (ip6tables is the reference). Addresses: ULA inside,
//! 2001:db8::/32 on the uplink.
use std::process::{Child, Stdio};

use netd_tests::{TestDaemon, TestHost, addr, probe, probe_path as p, require_root, settled, snmp};
use serde_json::Value;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn echo(out: &str) -> probe::Echo {
    probe::parse_echo(out.trim().as_bytes()).unwrap_or_else(|e| panic!("not an echo: {out:?}: {e:#}"))
}

fn drops(d: &TestDaemon) -> Value {
    let v: Value = serde_json::from_str(&d.ok(&["stats", "--format", "json"])).unwrap();
    let mut m = serde_json::Map::new();
    for r in v["drops"].as_array().unwrap() {
        m.insert(r[0].as_str().unwrap().to_string(), r[1].clone());
    }
    Value::Object(m)
}

macro_rules! both {
    ($body:ident, $ebpf:ident, $ipt:ident) => {
        #[test]
        fn $ebpf() {
            require_root!();
            $body("ebpf");
        }
        #[test]
        fn $ipt() {
            require_root!();
            $body("iptables");
        }
    };
}

both!(dual_stack, ebpf_dual_stack, iptables_dual_stack);

/// One daemon for every step.
fn dual_stack(dataplane: &str) {
    let ebpf = dataplane == "ebpf";
    let th = TestHost::new(&format!("v6d{}", &dataplane[..1])).unwrap();
    // An upstream DNS server reachable over IPv6 only (the daemon's --dns).
    let _dns = Kill(
        th.outside
            .cmd(&[&p(), "dns-serve", "53", "--bind", "2001:db8:100::2", "v6up.test=203.0.113.9"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut d = TestDaemon::start(
        &th,
        &[
            "--dataplane",
            dataplane,
            "--dns",
            "2001:db8:100::2",
            "--ipv6",
            "--fixed-cidr-v6",
            "fd00:17:1::/64",
            "--default-address-pool",
            "base=10.123.0.0/16,size=24",
            "--default-address-pool",
            "base=fd00:abcd::/56,size=64",
        ],
    )
    .unwrap();
    let pr = p();
    let out = th.outside.path();
    let host = th.host.path();

    // The default bridge: v4 from the given pool (no --bip), v6 from --fixed-cidr-v6.
    let br: Value = serde_json::from_str(&d.ok(&["network", "inspect", "bridge"])).unwrap();
    assert_eq!(br[0]["EnableIPv6"], true, "{br}");
    assert_eq!(br[0]["IPAM"]["Config"][0]["Subnet"], "10.123.0.0/24", "{br}");
    assert_eq!(br[0]["IPAM"]["Config"][1]["Subnet"], "fd00:17:1::/64", "{br}");
    assert_eq!(br[0]["IPAM"]["Config"][1]["Gateway"], "fd00:17:1::1", "{br}");
    d.ok(&["run", "-d", "--name", "d0", "--", "sleep", "300"]);
    let i = d.inspect("d0");
    assert_eq!(i["NetworkSettings"]["GlobalIPv6Address"], "fd00:17:1::2", "{i}");
    assert_eq!(i["NetworkSettings"]["GlobalIPv6PrefixLen"], 64);
    assert_eq!(i["NetworkSettings"]["IPv6Gateway"], "fd00:17:1::1");

    // A user network with both subnets given, one from the pools (v4 and v6).
    d.ok(&["network", "create", "--ipv6", "--subnet", "10.17.0.0/24", "--subnet", "fd00:17:2::/64", "v6net"]);
    d.ok(&["network", "create", "--ipv6", "other"]);
    let o: Value = serde_json::from_str(&d.ok(&["network", "inspect", "other"])).unwrap();
    assert_eq!(o[0]["IPAM"]["Config"][0]["Subnet"], "10.123.1.0/24", "pools take effect: {o}");
    assert_eq!(o[0]["IPAM"]["Config"][1]["Subnet"], "fd00:abcd::/64", "v6 pool: {o}");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "v6net",
        "--network-alias",
        "www",
        "-p",
        "8080:7000",
        "-p",
        "5353:7000/udp",
        "-p",
        "[::1]:8081:7000",
        "-p",
        "[2001:db8:100::1]:8082:7000",
        "-p",
        "9100-9101:7000-7001",
        "--",
        &pr,
        "serve",
        "--tag",
        "web",
        "7000",
        "7001",
    ]);
    let i = d.inspect("web");
    let n = &i["NetworkSettings"]["Networks"]["v6net"];
    assert_eq!(n["GlobalIPv6Address"], "fd00:17:2::2", "{i}");
    assert_eq!(n["GlobalIPv6PrefixLen"], 64);
    assert_eq!(n["IPv6Gateway"], "fd00:17:2::1");
    let hosts = d.ok(&["exec", "web", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains("fd00:17:2::2\t") && hosts.contains("10.17.0.2\t"), "{hosts}");
    // `port`: both families, as Docker prints them.
    let ports = d.ok(&["port", "web"]);
    for l in [
        "7000/tcp -> 0.0.0.0:8080",
        "7000/tcp -> [::]:8080",
        "7000/udp -> 0.0.0.0:5353",
        "7000/udp -> [::]:5353",
        "7000/tcp -> [::1]:8081",
        "7000/tcp -> [2001:db8:100::1]:8082",
        "7001/tcp -> [::]:9101",
    ] {
        assert!(ports.lines().any(|x| x == l), "no {l:?} in {ports}");
    }
    assert!(!ports.contains("0.0.0.0:8081") && !ports.contains("0.0.0.0:8082"), "{ports}");
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("0.0.0.0:8080->7000/tcp") && ps.contains("[::]:8080->7000/tcp"), "{ps}");

    // From outside, both families; the sandbox sees the client's own address (DNAT, no SNAT).
    let e = probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"v4").expect("v4 8080 from outside");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("web", "198.51.100.2"));
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8080"), b"v6").expect("v6 8080 from outside");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("web", "2001:db8:100::2"));
    let e = probe::udp_echo(&out, addr("[2001:db8:100::1]:5353"), b"u6").expect("v6 udp from outside");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("web", "2001:db8:100::2"));
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8082"), b"x").expect("[2001:db8:100::1]:8082");
    assert_eq!(e.tag, "web");
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:9101"), b"x").expect("v6 range");
    assert_eq!(e.tag, "web");
    assert!(probe::tcp_echo(&out, addr("[2001:db8:100::1]:8081"), b"x").is_err(), "[::1] binding from outside");
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:8082"), b"x").is_err(), "v6-only binding over v4");
    // From the host: ::1 and the host's own v6 address (iptables: the userland proxy; eBPF:
    // translated at the socket by the connect6 hook, as v4 clients by connect4).
    for a in ["[::1]:8080", "[::1]:8081", "[2001:db8:100::1]:8080", "[2001:db8:100::1]:8082", "127.0.0.1:8080"] {
        let e = probe::tcp_echo(&host, addr(a), b"local").unwrap_or_else(|e| panic!("{a} from the host: {e:#}"));
        assert_eq!(e.tag, "web", "{a}");
    }
    let e = probe::udp_echo(&host, addr("[::1]:5353"), b"lu").expect("udp [::1]:5353 from the host");
    assert_eq!(e.tag, "web");

    // NAT66: the outside server sees the host's uplink address, for TCP and UDP.
    let _srv = probe::EchoServer::start(&out, addr("[2001:db8:100::2]:6000"), "outside").unwrap();
    let e = echo(&d.ok(&["exec", "web", "--", &pr, "tcp", "[2001:db8:100::2]:6000", "nat66"]));
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("outside", "2001:db8:100::1"));
    let e = echo(&d.ok(&["exec", "web", "--", &pr, "udp", "[2001:db8:100::2]:6000", "nat66u"]));
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("outside", "2001:db8:100::1"));

    // Protection: the outside routes to the ULA prefix directly: dropped.
    netd_tests::ip(&["-n", &th.outside.name, "-6", "route", "add", "fd00:17:2::/64", "via", "2001:db8:100::1"])
        .unwrap();
    assert!(probe::tcp_echo(&out, addr("[fd00:17:2::2]:7000"), b"direct").is_err(), "direct v6 access");
    if ebpf {
        let dr = drops(&d);
        assert!(dr["direct_to_sandbox"].as_u64().unwrap() >= 1, "{dr}");
    }

    // ICC within the network over v6, by name (AAAA through the embedded DNS, aliases too),
    // and isolation from another v6 network.
    d.ok(&["run", "-d", "--name", "cc", "--network", "v6net", "--", "sleep", "300"]);
    let e = echo(&d.ok(&["exec", "cc", "--", &pr, "tcp", "[fd00:17:2::2]:7000", "icc6"]));
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("web", "fd00:17:2::3"));
    let e = echo(&d.ok(&["exec", "cc", "--", &pr, "tcp6", "web:7000", "aaaa"]));
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("web", "fd00:17:2::3"), "AAAA for the name");
    let e = echo(&d.ok(&["exec", "cc", "--", &pr, "tcp6", "www:7000", "alias"]));
    assert_eq!(e.tag, "web", "AAAA for the alias");
    // Other names go to the upstream, over IPv6 (NAT66 from the sandbox's namespace).
    let mut up = String::new();
    for _ in 0..3 {
        let r = d.cli(&["exec", "cc", "--", "getent", "hosts", "v6up.test"]);
        up = r.stdout.clone();
        if r.code == 0 {
            break;
        }
    }
    assert!(up.starts_with("203.0.113.9"), "forwarded over v6: {up:?}");
    d.ok(&["run", "-d", "--name", "bb", "--network", "other", "--", "sleep", "300"]);
    let r = d.cli(&["exec", "bb", "--", &pr, "tcp", "[fd00:17:2::2]:7000", "iso"]);
    assert_ne!(r.code, 0, "v6 isolation between networks: {}", r.stdout);
    assert_eq!(d.inspect("bb")["NetworkSettings"]["Networks"]["other"]["GlobalIPv6Address"], "fd00:abcd::2");

    // A v4-only network: no IPv6 in the sandbox (Docker 26+), yet `[::]:8090` reaches it:
    // iptables through the userland proxy, as docker-proxy does; eBPF by NAT46 in its programs
    // (no proxy, no listener), the sandbox seeing the same peer either way: its gateway.
    d.ok(&["network", "create", "v4net"]);
    let v4net: Value = serde_json::from_str(&d.ok(&["network", "inspect", "v4net"])).unwrap();
    let gw4 = v4net[0]["IPAM"]["Config"][0]["Gateway"].as_str().unwrap().to_string();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "v4",
        "--network",
        "v4net",
        "-p",
        "8090:7000",
        "-p",
        "5354:7000/udp",
        "-p",
        "5367:7009/udp",
        "-p",
        "5368:7010/udp",
        "--",
        &pr,
        "serve",
        "--tag",
        "v4",
        "7000",
    ]);
    let off = d.ok(&["exec", "v4", "--", "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"]);
    assert_eq!(off.trim(), "1");
    assert_eq!(d.inspect("v4")["NetworkSettings"]["Networks"]["v4net"]["GlobalIPv6Address"], "");
    let ports = d.ok(&["port", "v4"]);
    for l in ["7000/tcp -> 0.0.0.0:8090", "7000/tcp -> [::]:8090", "7000/udp -> 0.0.0.0:5354", "7000/udp -> [::]:5354"]
    {
        assert!(ports.lines().any(|x| x == l), "no {l:?} in {ports}");
    }
    let cross = |d: &TestDaemon, th: &TestHost, when: &str| {
        let (out, host) = (th.outside.path(), th.host.path());
        let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8090"), b"to-v4")
            .unwrap_or_else(|e| panic!("v6 client to a v4-only sandbox {when}: {e:#}"));
        assert_eq!(
            (e.tag.as_str(), e.peer.as_str(), e.payload.as_slice()),
            ("v4", gw4.as_str(), &b"to-v4"[..]),
            "{when}"
        );
        let e = probe::udp_echo(&out, addr("[2001:db8:100::1]:5354"), b"u-v4")
            .unwrap_or_else(|e| panic!("v6 udp to a v4-only sandbox {when}: {e:#}"));
        assert_eq!((e.tag.as_str(), e.peer.as_str()), ("v4", gw4.as_str()), "{when}");
        for a in ["[::1]:8090", "[2001:db8:100::1]:8090"] {
            let e =
                probe::tcp_echo(&host, addr(a), b"to-v4").unwrap_or_else(|e| panic!("{a} from the host {when}: {e:#}"));
            assert_eq!((e.tag.as_str(), e.peer.as_str()), ("v4", gw4.as_str()), "{a} {when}");
        }
        let e = probe::udp_echo_connected(&host, addr("[::1]:5354"), b"c-v4")
            .unwrap_or_else(|e| panic!("connected udp ::1 to a v4-only sandbox {when}: {e:#}"));
        assert_eq!(e.tag, "v4", "{when}");
        // A sandbox with v6 through the host's v6 address (hairpin).
        let e = echo(&d.ok(&["exec", "web", "--", &pr, "tcp", "[2001:db8:100::1]:8090", "hp46"]));
        assert_eq!((e.tag.as_str(), e.peer.as_str()), ("v4", gw4.as_str()), "hairpin {when}");
        let e = echo(&d.ok(&["exec", "web", "--", &pr, "udp", "[2001:db8:100::1]:5354", "hp46u"]));
        assert_eq!(e.tag, "v4", "udp hairpin {when}");
        if ebpf {
            // A UDP datagram to a closed port of the sandbox: its ICMPv4 "port unreachable" comes
            // back translated to ICMPv6 (NAT46's errors), so a connected v6 client sees
            // ECONNREFUSED (iptables: the proxy's socket gets it; its client waits).
            let r = th.outside.exec_ok(&[&pr, "udp-connect", "[2001:db8:100::1]:5367", "closed"]).unwrap();
            assert_eq!(r.trim(), "refused", "udp to a closed port of a v4-only sandbox {when}");
            // Translated in the datapath: nothing of the daemon listens on the port, and the
            // `[::]` bindings count the packets (a proxy's would count none).
            let ss = th.host.exec_ok(&["ss", "-Hltn", "sport", "= :8090"]).unwrap_or_default();
            assert!(ss.trim().is_empty(), "a listener on 8090 {when}: {ss}");
            let st: Value = serde_json::from_str(&d.ok(&["stats", "--format", "json"])).unwrap();
            for (port, proto) in [(8090, "tcp"), (5354, "udp")] {
                let row = st["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["host_port"] == port && p["proto"] == proto && p["host_ip"] == "::")
                    .cloned()
                    .unwrap_or_else(|| panic!("no [::]:{port}/{proto} row {when}: {st}"));
                assert!(row["packets"].as_u64().unwrap() >= 1, "{row} {when}");
            }
        }
    };
    cross(&d, &th, "before a restart");
    if ebpf {
        nat46_icmp_errors(&d, &th);
    }
    let u = probe::udp_socket_in(&host, addr("[::]:0")).unwrap();
    if !ebpf {
        // Unconnected datagrams from a v6 socket to `[::1]`: the proxy (eBPF: not translated,
        // the kernel refuses a sendmsg6 rewrite to a v4-mapped address; docs/design-notes.md).
        let e = probe::udp_echo_on(&u, addr("[::1]:5354"), b"u-v4").expect("udp ::1 to a v4-only sandbox");
        assert_eq!(e.tag, "v4");
    }
    // And over v4 as before, from outside (DNAT keeps the client's address) and from the host's
    // loopback (iptables: the `[::]` twin's socket is dual-stack and proxies both halves;
    // eBPF: connect4/sendmsg4).
    let e = probe::tcp_echo(&out, addr("198.51.100.1:8090"), b"to-v4").expect("v4 client to a v4-only sandbox");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("v4", "198.51.100.2"));
    let e = probe::tcp_echo(&host, addr("127.0.0.1:8090"), b"lo4").expect("127.0.0.1 to a v4-only sandbox");
    assert_eq!(e.tag, "v4");
    let u4 = probe::udp_socket_in(&host, addr("0.0.0.0:0")).unwrap();
    let e = probe::udp_echo_on(&u4, addr("127.0.0.1:5354"), b"lu4").expect("udp 127.0.0.1 to a v4-only sandbox");
    assert_eq!(e.tag, "v4");
    let e = probe::udp_echo_on(&u, addr("[::ffff:127.0.0.1]:5354"), b"lm4").expect("udp v4-mapped loopback");
    assert_eq!(e.tag, "v4");

    // Routed v6 (gateway_mode_ipv6=routed): the published container port is reachable at the
    // sandbox's own v6 address, unmasqueraded both ways; other ports are not.
    d.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "fd00:17:3::/64",
        "-o",
        "com.docker.network.bridge.gateway_mode_ipv6=routed",
        "rt6",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "rt",
        "--network",
        "rt6",
        "-p",
        "7000:7000",
        "--",
        &pr,
        "serve",
        "--tag",
        "rt",
        "7000",
        "7001",
    ]);
    netd_tests::ip(&["-n", &th.outside.name, "-6", "route", "add", "fd00:17:3::/64", "via", "2001:db8:100::1"])
        .unwrap();
    let e = probe::tcp_echo(&out, addr("[fd00:17:3::2]:7000"), b"routed").expect("routed v6 to the sandbox");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("rt", "2001:db8:100::2"));
    assert!(probe::tcp_echo(&out, addr("[fd00:17:3::2]:7001"), b"x").is_err(), "unpublished routed port");
    let e = echo(&d.ok(&["exec", "rt", "--", &pr, "tcp", "[2001:db8:100::2]:6000", "out"]));
    assert_eq!(e.peer, "fd00:17:3::2", "no NAT66 in routed mode");

    // `network connect --ip6`: a second, dual-stack interface with the asked-for address.
    d.ok(&["network", "connect", "--ip6", "fd00:17:3::99", "rt6", "v4"]);
    let i = d.inspect("v4");
    assert_eq!(i["NetworkSettings"]["Networks"]["rt6"]["GlobalIPv6Address"], "fd00:17:3::99", "{i}");
    let e = echo(&d.ok(&["exec", "rt", "--", &pr, "tcp", "[fd00:17:3::99]:7000", "conn"]));
    assert_eq!(e.tag, "v4");
    // --ip6 needs a network with a user-given v6 subnet, as --ip does (Docker's message).
    let r = d.cli(&["network", "connect", "--ip6", "fd00:abcd::77", "other", "v4"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("networks with user configured subnets"), "{}", r.stderr);
    let r = d.cli(&["network", "connect", "--ip6", "fd00:99::1", "v4net", "rt"]);
    assert!(r.stderr.contains("IPv6 is not enabled on network v4net"), "{}", r.stderr);
    // rt6 (dual-stack) became `v4`'s gateway, so its bindings went there (Docker 28, see
    // `v6_only_steps`); leaving it gives v4net its twins back (checked after the restart).
    let ports = d.ok(&["port", "v4"]);
    assert!(ports.lines().any(|l| l == "7000/tcp -> [::]:8090"), "{ports}");
    d.ok(&["network", "disconnect", "rt6", "v4"]);

    // IPv6-only networks (Docker 28's `--ipv4=false`), kept through the restart below.
    let v6o = v6_only_steps(&d, &th, ebpf);

    // A killed and restarted daemon keeps the v6 addresses, bindings and rules.
    d.kill9_and_restart().unwrap();
    v6_only_after_restart(&d, &th, ebpf, &v6o);
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8080"), b"after").expect("v6 binding after a restart");
    assert_eq!(e.tag, "web");
    cross(&d, &th, "after a kill -9 restart");
    let e = probe::tcp_echo(&host, addr("[::1]:8081"), b"after").expect("[::1] binding after a restart");
    assert_eq!(e.tag, "web");
    for a in ["127.0.0.1:8090", "[::1]:8090"] {
        let e = probe::tcp_echo(&host, addr(a), b"after").unwrap_or_else(|e| panic!("{a} after a restart: {e:#}"));
        assert_eq!(e.tag, "v4", "{a}");
    }
    let e = probe::udp_echo(&host, addr("127.0.0.1:5354"), b"after").expect("udp 127.0.0.1 after a restart");
    assert_eq!(e.tag, "v4");
    d.ok(&["run", "-d", "--name", "dd", "--network", "v6net", "--", "sleep", "300"]);
    assert_eq!(
        d.inspect("dd")["NetworkSettings"]["Networks"]["v6net"]["GlobalIPv6Address"],
        "fd00:17:2::4",
        "restored v6 pool: no address handed out twice"
    );

    // Rules: NAT66 and the v6 DNAT are in ip6tables (eBPF: no rule at all), and removing the
    // sandbox removes them.
    let ip6 = th.host.exec_ok(&["ip6tables-save"]).unwrap_or_default();
    if ebpf {
        assert!(!ip6.contains("NETD") && !ip6.contains("DNAT"), "{ip6}");
    } else {
        assert!(ip6.contains("-A NETD-POSTROUTING -s fd00:17:2::/64 ! -o br-"), "{ip6}");
        assert!(ip6.contains("--to-destination [fd00:17:2::2]:7000"), "{ip6}");
    }
    d.ok(&["rm", "-f", "web"]);
    let ip6 = th.host.exec_ok(&["ip6tables-save"]).unwrap_or_default();
    assert!(!ip6.contains("[fd00:17:2::2]:7000") && !ip6.contains("fd00:17:2::2/128"), "{ip6}");
    assert!(probe::tcp_echo(&out, addr("[2001:db8:100::1]:8080"), b"x").is_err(), "removed binding answered");
    // The port is free again for a new binding of both families.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web2",
        "--network",
        "v6net",
        "-p",
        "8080:7000",
        "--",
        &pr,
        "serve",
        "--tag",
        "web2",
        "7000",
    ]);
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8080"), b"again").expect("republished v6 port");
    assert_eq!(e.tag, "web2");
    d.ok(&["rm", "-f", "web2", "cc", "bb", "v4", "d0", "rt", "dd"]);
    for n in ["v6net", "other", "v4net", "rt6"] {
        d.ok(&["network", "rm", n]);
    }
    let ip6 = th.host.exec_ok(&["ip6tables-save"]).unwrap_or_default();
    assert!(!ip6.contains("fd00:17:2::") && !ip6.contains("fd00:abcd::"), "{ip6}");
    // `netd down` removes every ip6tables chain and jump it made, and the FORWARD policy.
    d.down().unwrap();
    let ip6 = th.host.exec_ok(&["ip6tables-save"]).unwrap_or_default();
    assert!(!ip6.contains("NETD") && !ip6.contains(":FORWARD DROP"), "{ip6}");
}

/// `netd exec NAME -- netd-probe udp-peer PORT MODE` in the background while `client` runs
/// (retried until the peer answered, at most 10 times): what the peer printed.
fn udp_peer_with(d: &TestDaemon, name: &str, port: &str, mode: &str, client: impl Fn()) -> String {
    let pr = p();
    std::thread::scope(|sc| {
        let peer = sc.spawn(|| d.cli(&["exec", name, "--", &pr, "udp-peer", port, mode]));
        std::thread::sleep(std::time::Duration::from_millis(500));
        for _ in 0..10 {
            if peer.is_finished() {
                break;
            }
            client();
            std::thread::sleep(std::time::Duration::from_millis(700));
        }
        let r = peer.join().unwrap();
        assert_eq!(r.code, 0, "udp-peer {mode}: {}{}", r.stdout, r.stderr);
        r.stdout.trim().to_string()
    })
}

/// eBPF: ICMP errors about NAT46 flows (the v4-only sandbox `v4`, published on `[::]:5368` ->
/// 7010/udp), translated between the families as RFC 7915 says, with real packets both ways.
/// (iptables: the userland proxy ends both flows; no error crosses it.)
fn nat46_icmp_errors(d: &TestDaemon, th: &TestHost) {
    let pr = p();
    let (out, host6) = (&th.outside, "[2001:db8:100::1]:5368");
    // ICMPv4 "fragmentation needed" from the sandbox's side (a router there would send it; the
    // sandbox's raw socket does, quoting the datagram it got) -> ICMPv6 "packet too big" with
    // the MTU + 20: the v6 client's path MTU drops to it.
    let got = std::thread::scope(|sc| {
        let peer = sc.spawn(|| d.cli(&["exec", "v4", "--", &pr, "udp-peer", "7010", "fragneeded:1380"]));
        std::thread::sleep(std::time::Duration::from_millis(500));
        let c = out.exec_ok(&[&pr, "udp6-pmtu", host6]).unwrap();
        let r = peer.join().unwrap();
        assert_eq!((r.code, r.stdout.trim()), (0, "sent"), "{}", r.stderr);
        c
    });
    assert_eq!(got.trim(), "mtu=1400", "frag-needed 1380 -> packet too big 1400");
    // ICMPv6 "port unreachable" from outside (the client closed its socket before the sandbox's
    // late reply) -> ICMPv4 to the sandbox, whose connected socket sees ECONNREFUSED.
    let r = udp_peer_with(d, "v4", "7010", "refused", || {
        let _ = out.exec(&[&pr, "udp-send", host6, "early"]);
    });
    assert_eq!(r, "refused", "port unreachable from outside -> the sandbox");
    // ICMPv6 "packet too big" from a router on the client's path (the outside namespace
    // forwarding to a far client over a 1300-byte link) -> ICMPv4 "fragmentation needed" with
    // the MTU - 20: the sandbox's path MTU to its peer drops to 1280.
    let far = netd_tests::Netns::new(&format!("{}f", th.host.name)).unwrap();
    netd_tests::ip(&[
        "-n", &out.name, "link", "add", "ptb0", "mtu", "1300", "type", "veth", "peer", "name", "eth0", "netns",
        &far.name,
    ])
    .unwrap();
    netd_tests::ip(&["-n", &far.name, "link", "set", "eth0", "mtu", "1300", "up"]).unwrap();
    netd_tests::ip(&["-n", &out.name, "link", "set", "ptb0", "up"]).unwrap();
    netd_tests::ip(&["-n", &out.name, "-6", "addr", "add", "2001:db8:200::1/64", "dev", "ptb0", "nodad"]).unwrap();
    netd_tests::ip(&["-n", &far.name, "-6", "addr", "add", "2001:db8:200::2/64", "dev", "eth0", "nodad"]).unwrap();
    netd_tests::ip(&["-n", &far.name, "-6", "route", "add", "default", "via", "2001:db8:200::1"]).unwrap();
    out.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]).unwrap();
    let r = udp_peer_with(d, "v4", "7010", "big", || {
        let _ = far.exec(&[&pr, "udp-send", host6, "far"]);
    });
    assert_eq!(r, "mtu=1280", "packet too big 1300 from the client's path -> frag-needed 1280");
    let dr = drops(d);
    assert_eq!(dr["nat46_untranslatable"], 0, "{dr}");
    nat46_fragments(d, th);
}

/// eBPF: a UDP datagram larger than the path (3000 bytes, which the v6 client's kernel
/// fragments) to the v4-only sandbox's `[::]:5368`: its fragments become IPv4 fragments
/// (the first one's ports and checksum translated, the later ones following its `FRAGS_V6`
/// record), and the sandbox's kernel reassembles the whole datagram, from its gateway; the
/// sandbox's echo of it, fragmented, comes back whole (IPv6 fragments, `FRAGS_46`).
fn nat46_fragments(d: &TestDaemon, th: &TestHost) {
    let pr = p();
    let gw4 = d.inspect("v4")["NetworkSettings"]["Networks"]["v4net"]["Gateway"].as_str().unwrap().to_string();
    let big: String = (0..3000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let before = drops(d);
    let got = udp_peer_with(d, "v4", "7010", "recv", || {
        let _ = th.outside.exec(&[&pr, "udp-send", "[2001:db8:100::1]:5368", &big]);
    });
    assert_eq!(got, format!("{gw4} {big}"), "the 3000-byte datagram, whole, from the gateway");
    // Back: the sandbox's reply is bigger than its MTU too. Its route to the gateway (its NAT46
    // peer) has an MTU 28 bytes under the device's, so its fragments fit IPv6 once the v4 veth
    // program has grown them (the IPv6 header's 20 bytes, a fragment header's 8).
    let r = d.ok(&["exec", "v4", "--", "ip", "-4", "route", "show", &gw4]);
    assert!(r.contains("mtu 1472"), "the route to the NAT46 peer: {r}");
    let e = probe::udp_echo(&th.outside.path(), addr("[2001:db8:100::1]:5354"), big.as_bytes())
        .expect("the 3000-byte datagram echoed back to the v6 client");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("v4", gw4.as_str()));
    assert!(e.payload == big.as_bytes(), "echoed payload: {} bytes", e.payload.len());
    let dr = drops(d);
    for k in ["nat46_untranslatable", "frag_unknown"] {
        assert_eq!(dr[k], before[k], "{k}: {dr}");
    }
}

/// What [`v6_only_steps`] leaves for [`v6_only_after_restart`].
struct V6Only {
    bridge: String,
}

fn lines_of(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// IPv6-only networks (`network create --ipv6 --ipv4=false`, Docker 28), on the dual-stack
/// daemon of [`dual_stack`] (its outside echo server, `other` network and `v4` sandbox on
/// `v4net` are used): no v4 IPAM, bridge address or sandbox address; `-p` on `[::]` only;
/// NAT66; AAAA-only names; /etc/hosts; isolation; a sandbox on it plus an IPv4 network.
fn v6_only_steps(d: &TestDaemon, th: &TestHost, ebpf: bool) -> V6Only {
    let pr = p();
    let out = th.outside.path();
    let host = th.host.path();
    let id = d.ok(&["network", "create", "--ipv6", "--ipv4=false", "--subnet", "fd00:17:6::/64", "v6only"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let n: Value = serde_json::from_str(&d.ok(&["network", "inspect", "v6only"])).unwrap();
    assert_eq!((&n[0]["EnableIPv4"], &n[0]["EnableIPv6"]), (&Value::Bool(false), &Value::Bool(true)), "{n}");
    let cfg = n[0]["IPAM"]["Config"].as_array().unwrap();
    assert_eq!(cfg.len(), 1, "only the v6 IPAM config: {n}");
    assert_eq!((cfg[0]["Subnet"].as_str(), cfg[0]["Gateway"].as_str()), (Some("fd00:17:6::/64"), Some("fd00:17:6::1")));
    let bridge = n[0]["Options"]["com.docker.network.bridge.name"].as_str().unwrap().to_string();
    // The bridge has the v6 gateway and no v4 address.
    let a4 = th.host.exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", &bridge]).unwrap();
    assert!(a4.trim().is_empty(), "v4 address on the IPv6-only bridge: {a4}");
    let a6 = th.host.exec_ok(&["ip", "-6", "-o", "addr", "show", "dev", &bridge]).unwrap();
    assert!(a6.contains("fd00:17:6::1/64"), "{a6}");
    // Without a subnet: a /64 of the v6 pools, and still no v4 one.
    d.ok(&["network", "create", "--ipv6", "--ipv4=false", "v6pool"]);
    let n: Value = serde_json::from_str(&d.ok(&["network", "inspect", "v6pool"])).unwrap();
    let cfg = n[0]["IPAM"]["Config"].as_array().unwrap();
    assert_eq!(cfg.len(), 1, "{n}");
    assert!(cfg[0]["Subnet"].as_str().unwrap().starts_with("fd00:abcd:"), "{n}");
    d.ok(&["network", "rm", "v6pool"]);

    // A sandbox: only a v6 address, gateway and link-local; `-p` publishes on `[::]` only
    // (Docker: no v4 binding without a container v4 address, an explicit v4 host address is
    // left out).
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web6",
        "--network",
        "v6only",
        "-p",
        "8085:7000",
        "-p",
        "127.0.0.1:8086:7000",
        "-p",
        "5355:7000/udp",
        "--",
        &pr,
        "serve",
        "--tag",
        "web6",
        "7000",
    ]);
    let i = d.inspect("web6");
    let ns = &i["NetworkSettings"]["Networks"]["v6only"];
    assert_eq!(ns["IPAddress"], "", "{i}");
    assert_eq!(ns["IPPrefixLen"], 0, "{i}");
    assert_eq!(ns["Gateway"], "", "{i}");
    assert_eq!(ns["GlobalIPv6Address"], "fd00:17:6::2", "{i}");
    assert_eq!(ns["GlobalIPv6PrefixLen"], 64, "{i}");
    assert_eq!(ns["IPv6Gateway"], "fd00:17:6::1", "{i}");
    let v4in = d.ok(&["exec", "web6", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(v4in.trim().is_empty(), "v4 address in the sandbox: {v4in}");
    let v6in = d.ok(&["exec", "web6", "--", "ip", "-6", "-o", "addr", "show", "dev", "eth0"]);
    assert!(v6in.contains("fd00:17:6::2/64") && v6in.contains("fe80::"), "global and link-local: {v6in}");
    let r6 = d.ok(&["exec", "web6", "--", "ip", "-6", "route", "show", "default"]);
    assert!(r6.contains("via fd00:17:6::1"), "{r6}");
    let ports = d.ok(&["port", "web6"]);
    assert_eq!(lines_of(&ports), ["7000/tcp -> [::]:8085", "7000/udp -> [::]:5355"], "{ports}");
    let hosts = d.ok(&["exec", "web6", "--", "cat", "/etc/hosts"]);
    let hn = i["Config"]["Hostname"].as_str().unwrap().to_string();
    let own: Vec<&str> = hosts.lines().filter(|l| l.split_whitespace().skip(1).any(|n| n == hn)).collect();
    assert_eq!(own.len(), 1, "one line for the sandbox: {hosts}");
    assert!(own[0].starts_with("fd00:17:6::2\t"), "its v6 address only: {hosts}");

    // From outside over v6 (DNAT keeps the client's address), nothing over v4; the host's ::1.
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8085"), b"v6only").expect("v6 8085 from outside");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("web6", "2001:db8:100::2"));
    let e = probe::udp_echo(&out, addr("[2001:db8:100::1]:5355"), b"u6only").expect("v6 udp 5355 from outside");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("web6", "2001:db8:100::2"));
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:8085"), b"x").is_err(), "no v4 binding");
    assert!(probe::tcp_echo(&host, addr("127.0.0.1:8086"), b"x").is_err(), "explicit v4 binding left out");
    let e = probe::tcp_echo(&host, addr("[::1]:8085"), b"lo6").expect("[::1]:8085 from the host");
    assert_eq!(e.tag, "web6");
    // NAT66 to the outside (the server of `dual_stack` on [2001:db8:100::2]:6000).
    let e = echo(&d.ok(&["exec", "web6", "--", &pr, "tcp", "[2001:db8:100::2]:6000", "nat66"]));
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("outside", "2001:db8:100::1"));
    // Protection: direct access from outside to the sandbox's address is dropped.
    netd_tests::ip(&["-n", &th.outside.name, "-6", "route", "add", "fd00:17:6::/64", "via", "2001:db8:100::1"])
        .unwrap();
    assert!(probe::tcp_echo(&out, addr("[fd00:17:6::2]:7000"), b"direct").is_err(), "direct v6 access");

    // Names: AAAA between two sandboxes, no A record.
    d.ok(&["run", "-d", "--name", "c6", "--network", "v6only", "--", "sleep", "300"]);
    let e = echo(&d.ok(&["exec", "c6", "--", &pr, "tcp6", "web6:7000", "aaaa"]));
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("web6", "fd00:17:6::3"), "AAAA by name");
    let a = d.cli(&["exec", "c6", "--", &pr, "dns-query", "127.0.0.11", "web6"]);
    assert!(!a.stdout.contains('.'), "an A record for an IPv6-only sandbox: {a:?}");
    let g = d.ok(&["exec", "c6", "--", "getent", "hosts", "web6"]);
    assert!(g.starts_with("fd00:17:6::2"), "{g}");
    // Isolation from the dual-stack network `other`.
    let r = d.cli(&["exec", "bb", "--", &pr, "tcp", "[fd00:17:6::2]:7000", "iso"]);
    assert_ne!(r.code, 0, "v6 isolation from an IPv6-only network: {}", r.stdout);
    // `--ip` has no v4 subnet to come from (Docker's message).
    let r = d.cli(&["network", "connect", "--ip", "10.17.0.50", "v6only", "bb"]);
    assert!(r.stderr.contains("no configured subnet contains IP address 10.17.0.50"), "{r:?}");

    // A sandbox on the IPv6-only network and an IPv4 one: both families work.
    let v4ip = d.inspect("v4")["NetworkSettings"]["Networks"]["v4net"]["IPAddress"].as_str().unwrap().to_string();
    d.ok(&["run", "-d", "--name", "mix", "--network", "v6only", "--", "sleep", "300"]);
    d.ok(&["network", "connect", "v4net", "mix"]);
    let e = echo(&d.ok(&["exec", "mix", "--", &pr, "tcp", &format!("{v4ip}:7000"), "mix4"]));
    assert_eq!(e.tag, "v4", "v4 over the IPv4 network");
    let e = echo(&d.ok(&["exec", "mix", "--", &pr, "tcp", "[fd00:17:6::2]:7000", "mix6"]));
    assert_eq!(e.tag, "web6", "v6 over the IPv6-only network");
    let e = echo(&d.ok(&["exec", "mix", "--", &pr, "tcp", "[2001:db8:100::2]:6000", "mixout"]));
    assert_eq!(e.peer, "2001:db8:100::1", "NAT66 from the mixed sandbox");
    // Each family's default route from the first network that has it (Docker 28's per-family
    // gateway): v4 via the IPv4 network joined second, masqueraded to the outside.
    let v4gw = d.inspect("mix")["NetworkSettings"]["Networks"]["v4net"]["Gateway"].as_str().unwrap().to_string();
    let r4 = d.ok(&["exec", "mix", "--", "ip", "-4", "route", "show", "default"]);
    assert!(r4.contains(&format!("via {v4gw} dev eth1")), "{r4}");
    let _srv4 = probe::EchoServer::start(&out, addr("198.51.100.2:6007"), "out4").unwrap();
    let e = echo(&d.ok(&["exec", "mix", "--", &pr, "tcp", "198.51.100.2:6007", "mixout4"]));
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("out4", "198.51.100.1"), "v4 masquerade from the mixed sandbox");

    // Per-family gateways for `-p` (Docker 28's TestGatewaySelection): v4 bindings go through
    // the network of the v4 default route, v6 ones through the one of the v6 default route.
    // A v4-only sandbox: `[::]:8095` is its twin (proxy / NAT46: the peer is v4net's gateway).
    d.ok(&[
        "run",
        "-d",
        "--name",
        "gws",
        "--network",
        "v4net",
        "-p",
        "8095:7000",
        "--",
        &pr,
        "serve",
        "--tag",
        "gws",
        "7000",
    ]);
    let gw4 = d.inspect("gws")["NetworkSettings"]["Networks"]["v4net"]["Gateway"].as_str().unwrap().to_string();
    // (tag, peer) of an echo from outside, retried for 5 s while the server starts.
    let echo_from_out = |target: String| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match probe::tcp_echo(&out, addr(&target), b"gw") {
                Ok(e) => return Ok((e.tag, e.peer)),
                Err(e) if std::time::Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    };
    let v4peer = |port: &str| echo_from_out(format!("198.51.100.1:{port}"));
    let v6peer = |port: &str| echo_from_out(format!("[2001:db8:100::1]:{port}"));
    let gws = |p: &str| Some(("gws".to_string(), p.to_string()));
    assert_eq!(v4peer("8095").ok(), gws("198.51.100.2"), "v4 client, v4-only sandbox");
    assert_eq!(v6peer("8095").ok(), gws(&gw4), "v6 client through the twin");
    // Joining the IPv6-only network makes it the v6 gateway: `[::]:8095` now leads to the
    // sandbox's v6 address there (DNAT keeps the v6 client's address); v4 stays.
    d.ok(&["network", "connect", "v6only", "gws"]);
    assert_eq!(v6peer("8095").ok(), gws("2001:db8:100::2"), "v6 binding moved to the IPv6-only network");
    assert_eq!(v4peer("8095").ok(), gws("198.51.100.2"), "v4 binding kept on v4net");
    let ports = d.ok(&["port", "gws"]);
    assert_eq!(lines_of(&ports), ["7000/tcp -> 0.0.0.0:8095", "7000/tcp -> [::]:8095"], "{ports}");
    // Leaving it again: the twin comes back to the v4 network.
    d.ok(&["network", "disconnect", "v6only", "gws"]);
    assert_eq!(v6peer("8095").ok(), gws(&gw4), "the twin is back after the v6 gateway left");
    assert_eq!(v4peer("8095").ok(), gws("198.51.100.2"));
    // A dual-stack network joined takes over both gateways (Docker 28's `sbJoin` and
    // `Endpoint.Less`: dual-stack first), with the default routes and every binding; when it
    // leaves again (`sbLeave`), v4net becomes the gateway again: `0.0.0.0:8097` (the reply
    // needs the v4 default route back on eth0) and its `[::]` twin.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "gwm",
        "--network",
        "v4net",
        "-p",
        "8097:7000",
        "--",
        &pr,
        "serve",
        "--tag",
        "gwm",
        "7000",
    ]);
    let gw4m = d.inspect("gwm")["NetworkSettings"]["Networks"]["v4net"]["Gateway"].as_str().unwrap().to_string();
    let gwm = |p: &str| Some(("gwm".to_string(), p.to_string()));
    assert_eq!(v6peer("8097").ok(), gwm(&gw4m), "the [::] twin of the v4-only sandbox");
    d.ok(&["network", "connect", "other", "gwm"]);
    let on_other = &d.inspect("gwm")["NetworkSettings"]["Networks"]["other"];
    let (ip_o, gw_o) = (on_other["IPAddress"].as_str().unwrap().to_string(), on_other["Gateway"].as_str().unwrap());
    let r4 = d.ok(&["exec", "gwm", "--", "ip", "-4", "route", "show", "default"]);
    assert_eq!(r4.lines().count(), 1, "{r4}");
    assert!(r4.contains(&format!("via {gw_o} dev eth1")), "the v4 default route moved to the dual-stack network: {r4}");
    assert_eq!(v4peer("8097").ok(), gwm("198.51.100.2"), "v4 through the dual-stack network");
    assert_eq!(v6peer("8097").ok(), gwm("2001:db8:100::2"), "v6 through the dual-stack network");
    if !ebpf {
        let nat = th.host.exec_ok(&["iptables-save", "-t", "nat"]).unwrap();
        assert!(
            nat.lines().any(|l| l.contains("--dport 8097") && l.contains(&format!("--to-destination {ip_o}:7000"))),
            "v4 DNAT to the dual-stack network's address: {nat}"
        );
    }
    d.ok(&["network", "disconnect", "other", "gwm"]);
    let r4 = d.ok(&["exec", "gwm", "--", "ip", "-4", "route", "show", "default"]);
    assert!(r4.contains(&format!("via {gw4m} dev eth0")), "{r4}");
    assert_eq!(v4peer("8097").ok(), gwm("198.51.100.2"), "v4 binding back on v4net with the gateway");
    assert_eq!(v6peer("8097").ok(), gwm(&gw4m), "the [::] twin on v4net after the dual-stack gateway left");
    let ports = d.ok(&["port", "gwm"]);
    assert_eq!(lines_of(&ports), ["7000/tcp -> 0.0.0.0:8097", "7000/tcp -> [::]:8097"], "{ports}");
    let i = d.inspect("gwm");
    let hp: Vec<&str> = i["NetworkSettings"]["Ports"]["7000/tcp"]
        .as_array()
        .map(|a| a.iter().filter_map(|b| b["HostPort"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(hp, ["8097", "8097"], "{i}");
    // The dual-stack network as the first one, v4net joined: leaving the first (the primary)
    // moves the gateway and bindings to v4net too.
    d.ok(&["rm", "-f", "gwm"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "gwm",
        "--network",
        "other",
        "-p",
        "8097:7000",
        "--",
        &pr,
        "serve",
        "--tag",
        "gwm",
        "7000",
    ]);
    d.ok(&["network", "connect", "v4net", "gwm"]);
    assert_eq!(v4peer("8097").ok(), gwm("198.51.100.2"));
    d.ok(&["network", "disconnect", "other", "gwm"]);
    let gw4m = d.inspect("gwm")["NetworkSettings"]["Networks"]["v4net"]["Gateway"].as_str().unwrap().to_string();
    let r4 = d.ok(&["exec", "gwm", "--", "ip", "-4", "route", "show", "default"]);
    assert!(r4.contains(&format!("via {gw4m} dev eth1")), "{r4}");
    assert_eq!(v4peer("8097").ok(), gwm("198.51.100.2"), "v4 binding moved to v4net after the primary left");
    assert_eq!(v6peer("8097").ok(), gwm(&gw4m), "and the [::] twin");
    d.ok(&["rm", "-f", "gwm"]);
    // At start: first network IPv6-only, then an IPv4 one (connected while created): both
    // families are published, each through its own network. (A fixed --ip6: `gws` just gave
    // its v6 address back, and a reused address with a new random MAC meets the bridge's stale
    // neighbour entry for a few seconds; see docs/design-notes.md.)
    d.ok(&[
        "create",
        "--name",
        "gws2",
        "--network",
        "v6only",
        "--ip6",
        "fd00:17:6::96",
        "-p",
        "8096:7000",
        "--",
        &pr,
        "serve",
        "--tag",
        "gws2",
        "7000",
    ]);
    d.ok(&["network", "connect", "v4net", "gws2"]);
    d.ok(&["start", "gws2"]);
    let gws2 = |p: &str| Some(("gws2".to_string(), p.to_string()));
    assert_eq!(v6peer("8096").ok(), gws2("2001:db8:100::2"), "v6 through the IPv6-only first network");
    assert_eq!(v4peer("8096").ok(), gws2("198.51.100.2"), "v4 through the IPv4 network joined second");
    let ports = d.ok(&["port", "gws2"]);
    assert_eq!(lines_of(&ports), ["7000/tcp -> 0.0.0.0:8096", "7000/tcp -> [::]:8096"], "{ports}");
    d.ok(&["rm", "-f", "gws", "gws2"]);
    for a in ["198.51.100.1:8096", "[2001:db8:100::1]:8096", "[2001:db8:100::1]:8095"] {
        assert!(probe::tcp_echo(&out, addr(a), b"x").is_err(), "{a} answers after rm -f");
    }

    // Rules: v6 only for this network (iptables), none at all (eBPF).
    let bridge_rules = |cmd: &str| -> Vec<String> {
        th.host.exec_ok(&[cmd]).unwrap_or_default().lines().filter(|l| l.contains(&bridge)).map(String::from).collect()
    };
    let (r4, r6) = (bridge_rules("iptables-save"), bridge_rules("ip6tables-save"));
    assert!(r4.is_empty(), "iptables rules for an IPv6-only network: {r4:?}");
    if ebpf {
        assert!(r6.is_empty(), "{r6:?}");
    } else {
        assert!(r6.iter().any(|l| l.contains("-s fd00:17:6::/64 ! -o") && l.contains("MASQUERADE")), "{r6:?}");
    }
    d.ok(&["rm", "-f", "c6", "mix"]);
    V6Only { bridge }
}

/// After [`dual_stack`]'s kill -9 and restart: the IPv6-only network and its sandbox are back
/// as they were; removing them leaves nothing.
fn v6_only_after_restart(d: &TestDaemon, th: &TestHost, ebpf: bool, v: &V6Only) {
    let out = th.outside.path();
    let n: Value = serde_json::from_str(&d.ok(&["network", "inspect", "v6only"])).unwrap();
    assert_eq!(n[0]["EnableIPv4"], false, "{n}");
    assert_eq!(n[0]["IPAM"]["Config"].as_array().unwrap().len(), 1, "{n}");
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8085"), b"after").expect("v6-only binding after a restart");
    assert_eq!(e.tag, "web6");
    d.ok(&["rm", "-f", "web6"]);
    d.ok(&["network", "rm", "v6only"]);
    assert!(th.host.exec(&["ip", "link", "show", &v.bridge]).map(|o| !o.status.success()).unwrap_or(true));
    // The rules go with the network (the bridge's removal reaches the host-change follower,
    // which had seen it for a moment as a foreign bridge, within a few seconds).
    let mut ip6 = String::new();
    for _ in 0..50 {
        ip6 = th.host.exec_ok(&["ip6tables-save"]).unwrap_or_default();
        if !ip6.contains("fd00:17:6::") && !ip6.contains(&v.bridge) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!ip6.contains("fd00:17:6::") && !ip6.contains(&v.bridge), "{ip6}");
    if ebpf {
        assert!(!ip6.contains("NETD"), "{ip6}");
    }
}

both!(
    ipv6_without_proxy_icc_false_and_internal,
    ebpf_ipv6_without_proxy_icc_false_and_internal,
    iptables_ipv6_without_proxy_icc_false_and_internal
);

/// `--userland-proxy=false` (Docker's proxy-less DNAT and hairpin masquerade; eBPF needs no
/// proxy either way), `--icc=false` and `--internal` on v6 networks.
fn ipv6_without_proxy_icc_false_and_internal(dataplane: &str) {
    let th = TestHost::new(&format!("v6n{}", &dataplane[..1])).unwrap();
    let ebpf = dataplane == "ebpf";
    let d = TestDaemon::start(&th, &["--dataplane", dataplane, "--userland-proxy=false"]).unwrap();
    let pr = p();
    let out = th.outside.path();
    let host = th.host.path();
    d.ok(&["network", "create", "--ipv6", "--subnet", "fd00:18:1::/64", "n1"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "s1",
        "--network",
        "n1",
        "-p",
        "8080:7000",
        "-p",
        "5353:7000/udp",
        "-p",
        "[::1]:8081:7000",
        "--",
        &pr,
        "serve",
        "--tag",
        "s1",
        "7000",
    ]);
    d.ok(&["run", "-d", "--name", "s2", "--network", "n1", "--", "sleep", "300"]);
    // Published on [::] by DNAT alone; the client's address reaches the sandbox.
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8080"), b"np").expect("v6 DNAT without the proxy");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("s1", "2001:db8:100::2"));
    // Host processes over v6, no proxy: the host's v6 address (ip6tables' OUTPUT DNAT; eBPF's
    // connect6/sendmsg6/recvmsg6), and on eBPF `::1` too (ip6tables cannot DNAT loopback
    // traffic, Docker's limit without its proxy). A UDP client sees replies come from the
    // address it sent to (recvmsg6 restores it), connected or not.
    let mut local: Vec<&str> = vec!["[2001:db8:100::1]:8080"];
    if ebpf {
        local.extend(["[::1]:8080", "[::1]:8081"]);
    }
    for a in &local {
        let e = probe::tcp_echo(&host, addr(a), b"local6").unwrap_or_else(|e| panic!("{a} from the host: {e:#}"));
        assert_eq!(e.tag, "s1", "{a}");
    }
    let u = probe::udp_socket_in(&host, addr("[::]:0")).unwrap();
    let mut local: Vec<&str> = vec!["[2001:db8:100::1]:5353"];
    if ebpf {
        local.push("[::1]:5353");
    }
    for a in &local {
        let e = probe::udp_echo_on(&u, addr(a), b"u6").unwrap_or_else(|e| panic!("udp {a} from the host: {e:#}"));
        assert_eq!(e.tag, "s1", "{a}");
        let e = probe::udp_echo_connected(&host, addr(a), b"c6").unwrap_or_else(|e| panic!("connected {a}: {e:#}"));
        assert_eq!(e.tag, "s1", "{a}");
    }
    if ebpf {
        // `[::1]:8081` is a loopback binding: not on the host's other addresses.
        assert!(probe::tcp_echo(&host, addr("[2001:db8:100::1]:8081"), b"x").is_err());
    }
    // Hairpin over v6: a neighbour through the host's v6 address (DNAT from the bridge too,
    // masqueraded back). (A sandbox to its own published port needs the bridge port's hairpin
    // mode, which netd sets for CNI attachments only, for v4 and v6 alike.)
    let e = echo(&d.ok(&["exec", "s2", "--", &pr, "tcp", "[2001:db8:100::1]:8080", "hp"]));
    assert_eq!(e.tag, "s1");
    // Without the proxy a v4-only sandbox gets no [::] binding (Docker leaves it out).
    d.ok(&["network", "create", "v4only"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "s4",
        "--network",
        "v4only",
        "-p",
        "8090:7000",
        "-p",
        "5355:7000/udp",
        "--",
        &pr,
        "serve",
        "--tag",
        "s4",
        "7000",
    ]);
    let ports = d.ok(&["port", "s4"]);
    assert!(ports.contains("7000/tcp -> 0.0.0.0:8090\n") && !ports.contains("[::]"), "{ports}");
    assert!(probe::tcp_echo(&out, addr("[2001:db8:100::1]:8090"), b"x").is_err());
    // A dual-stack socket reaching the v4 binding through v4-mapped addresses (the kernel talks
    // IPv4 for it): as the host's v4 clients (ip6tables/iptables: OUTPUT DNAT; eBPF: connect6
    // and recvmsg6 on the mapped address, sendmsg4 for the datagrams).
    let e = probe::tcp_echo(&host, addr("[::ffff:198.51.100.1]:8090"), b"m").expect("v4-mapped host address");
    assert_eq!(e.tag, "s4");
    let e = probe::udp_echo_on(&u, addr("[::ffff:198.51.100.1]:5355"), b"mu").expect("v4-mapped udp");
    assert_eq!(e.tag, "s4");
    let e =
        probe::udp_echo_connected(&host, addr("[::ffff:198.51.100.1]:5355"), b"mc").expect("v4-mapped udp, connected");
    assert_eq!(e.tag, "s4");
    if ebpf {
        let e = probe::tcp_echo(&host, addr("[::ffff:127.0.0.1]:8090"), b"m").expect("v4-mapped loopback");
        assert_eq!(e.tag, "s4");
    }

    // icc=false: no v6 between sandboxes of the network; out of it still works.
    d.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "fd00:18:2::/64",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "noicc",
    ]);
    d.ok(&["run", "-d", "--name", "i1", "--network", "noicc", "--", &pr, "serve", "--tag", "i1", "7000"]);
    d.ok(&["run", "-d", "--name", "i2", "--network", "noicc", "--", "sleep", "300"]);
    let r = d.cli(&["exec", "i2", "--", &pr, "tcp", "[fd00:18:2::2]:7000", "icc"]);
    assert_ne!(r.code, 0, "icc=false let v6 through: {}", r.stdout);
    let _srv = probe::EchoServer::start(&out, addr("[2001:db8:100::2]:6000"), "outside").unwrap();
    let e = echo(&d.ok(&["exec", "i2", "--", &pr, "tcp", "[2001:db8:100::2]:6000", "out"]));
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("outside", "2001:db8:100::1"));

    // internal: v6 inside the network only, nothing out, nothing in.
    d.ok(&["network", "create", "--ipv6", "--internal", "--subnet", "fd00:18:3::/64", "inner"]);
    d.ok(&["run", "-d", "--name", "in1", "--network", "inner", "--", &pr, "serve", "--tag", "in1", "7000"]);
    d.ok(&["run", "-d", "--name", "in2", "--network", "inner", "--", "sleep", "300"]);
    let e = echo(&d.ok(&["exec", "in2", "--", &pr, "tcp", "[fd00:18:3::2]:7000", "inside"]));
    assert_eq!(e.tag, "in1");
    let r = d.cli(&["exec", "in2", "--", &pr, "tcp", "[2001:db8:100::2]:6000", "leak"]);
    assert_ne!(r.code, 0, "an internal v6 network reached outside: {}", r.stdout);
    // And the networks are isolated from each other over v6.
    let r = d.cli(&["exec", "i2", "--", &pr, "tcp", "[fd00:18:1::2]:7000", "cross"]);
    assert_ne!(r.code, 0, "v6 between networks: {}", r.stdout);
}

/// One datagram from [2001:db8:100::2]:40123 (a fixed source port) to the host's v6 address.
fn ask6(th: &TestHost, payload: &str) -> Option<String> {
    let payload = payload.to_string();
    netd_tests::in_netns(&th.outside.path(), move || {
        let s = std::net::UdpSocket::bind("[2001:db8:100::2]:40123").ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(1))).ok()?;
        let mut buf = [0u8; 512];
        for _ in 0..3 {
            s.send_to(payload.as_bytes(), "[2001:db8:100::1]:5353").ok()?;
            if let Ok(n) = s.recv(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    })
    .ok()
    .flatten()
}

both!(
    v6_udp_port_moves_to_a_new_sandbox,
    ebpf_v6_udp_port_moves_to_a_new_sandbox,
    iptables_v6_udp_port_moves_to_a_new_sandbox
);

/// The v6 twin of conntrack_flush.rs: a UDP host port moved to another sandbox is reached at
/// once by a client that keeps its source port (the kernel's v6 conntrack entries of the port
/// are deleted over ctnetlink; eBPF: `CT_V6`'s, by the purge after the publish).
fn v6_udp_port_moves_to_a_new_sandbox(dataplane: &str) {
    let th = TestHost::new(&format!("v6c{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane]).unwrap();
    let pr = p();
    d.ok(&["network", "create", "--ipv6", "--subnet", "fd00:19::/64", "n6"]);
    let run = |name: &str| {
        d.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "n6",
            "-p",
            "5353:5353/udp",
            "--",
            &pr,
            "serve",
            "--tag",
            name,
            "5353",
        ]);
    };
    run("u1");
    let r = ask6(&th, "one").expect("no answer from u1");
    assert!(r.starts_with("u1:"), "{r}");
    d.ok(&["rm", "-f", "u1"]);
    // u1's v6 address goes to another sandbox: a stale translation would lead nowhere.
    d.ok(&["run", "-d", "--name", "filler", "--network", "n6", "--", "sleep", "300"]);
    run("u2");
    let mut got = None;
    for _ in 0..5 {
        got = ask6(&th, "two");
        if got.is_some() {
            break;
        }
    }
    let r = got.expect("the client's v6 flow still goes to the removed sandbox (stale conntrack)");
    assert!(r.starts_with("u2:"), "{r}");
}

both!(links_under_icc_false_over_ipv6, ebpf_links_under_icc_false_over_ipv6, iptables_links_under_icc_false_over_ipv6);

/// `--link` on a dual-stack default bridge with `--icc=false`: the linked sandbox reaches the
/// target's exposed port over IPv6 too, nothing else does.
fn links_under_icc_false_over_ipv6(dataplane: &str) {
    let th = TestHost::new(&format!("v6l{}", &dataplane[..1])).unwrap();
    let d =
        TestDaemon::start(&th, &["--dataplane", dataplane, "--ipv6", "--fixed-cidr-v6", "fd00:20::/64", "--icc=false"])
            .unwrap();
    let pr = p();
    d.ok(&["run", "-d", "--name", "t1", "--expose", "7000", "--", &pr, "serve", "--tag", "t1", "7000", "7001"]);
    d.ok(&["run", "-d", "--name", "t2", "--link", "t1", "--", "sleep", "300"]);
    d.ok(&["run", "-d", "--name", "t3", "--", "sleep", "300"]);
    // Docker's icc=false DROP (`-i br -o br`) also drops the bridged neighbour discovery
    // between sandboxes (ICMPv6, seen by ip6tables through br_netfilter), with netd's rules as
    // with Docker's: the test gives the two ends each other's MAC, so it checks the link rules.
    // (eBPF passes neighbour discovery under icc=false, as ARP: the entries change nothing.)
    let mac = |n: &str| d.inspect(n)["NetworkSettings"]["MacAddress"].as_str().unwrap().to_string();
    let (m1, m2) = (mac("t1"), mac("t2"));
    d.ok(&["exec", "t2", "--", "ip", "-6", "neigh", "replace", "fd00:20::2", "lladdr", &m1, "dev", "eth0"]);
    d.ok(&["exec", "t1", "--", "ip", "-6", "neigh", "replace", "fd00:20::3", "lladdr", &m2, "dev", "eth0"]);
    d.ok(&["exec", "t3", "--", "ip", "-6", "neigh", "replace", "fd00:20::2", "lladdr", &m1, "dev", "eth0"]);
    let e = echo(&d.ok(&["exec", "t2", "--", &pr, "tcp", "[fd00:20::2]:7000", "link6"]));
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("t1", "fd00:20::3"));
    let r = d.cli(&["exec", "t2", "--", &pr, "tcp", "[fd00:20::2]:7001", "x"]);
    assert_ne!(r.code, 0, "a port the link does not name: {}", r.stdout);
    let r = d.cli(&["exec", "t3", "--", &pr, "tcp", "[fd00:20::2]:7000", "x"]);
    assert_ne!(r.code, 0, "an unlinked sandbox under icc=false: {}", r.stdout);
}

/// Docker 26+: a sandbox of an IPv4-only network has IPv6 off on its interface, and its
/// /etc/hosts keeps the `::1`/`ip6-*` lines only while its namespace's loopback has IPv6
/// (Docker's `IPv6Enabled` probe, asked again whenever the file is rebuilt: here at `network
/// connect`, after IPv6 was turned off in the whole namespace).
#[test]
fn v4_only_sandbox_ipv6_off_and_hosts_lines() {
    require_root!();
    let th = TestHost::new("v6h").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "iptables"]).unwrap();
    d.ok(&["network", "create", "--subnet", "10.26.0.0/24", "a26"]);
    d.ok(&["network", "create", "--subnet", "10.26.1.0/24", "b26"]);
    d.ok(&["run", "-d", "--name", "h26", "--network", "a26", "--", "sleep", "300"]);
    let off = d.ok(&["exec", "h26", "--", "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"]);
    assert_eq!(off.trim(), "1", "IPv6 on the interface of a v4-only network");
    let hosts = d.ok(&["exec", "h26", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains("::1\tlocalhost ip6-localhost ip6-loopback"), "lo has IPv6: {hosts}");
    // IPv6 off in the whole namespace (what `--sysctl net.ipv6.conf.all.disable_ipv6=1` does).
    let pid = d.inspect("h26")["State"]["Pid"].as_i64().unwrap();
    let ns = format!("/proc/{pid}/ns/net");
    for k in ["all", "default", "lo"] {
        let p = format!("/proc/sys/net/ipv6/conf/{k}/disable_ipv6");
        netd_tests::in_netns(&ns, move || std::fs::write(&p, "1")).unwrap().unwrap();
    }
    d.ok(&["network", "connect", "b26", "h26"]);
    let hosts = d.ok(&["exec", "h26", "--", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("::1") && !hosts.contains("ip6-"), "IPv6 lines with IPv6 off: {hosts}");
    assert!(hosts.contains("127.0.0.1\tlocalhost") && hosts.contains("10.26.1."), "{hosts}");
    d.ok(&["rm", "-f", "h26"]);
}

/// A router solicitation from `ns`'s `ifname` (its link-local source) to ff02::2, hop limit 255
/// as RFC 4861 requires (a raw ICMPv6 socket: the kernel fills the checksum).
fn send_router_solicitation(ns: &str, ifname: &str) {
    let ifname = std::ffi::CString::new(ifname).unwrap();
    netd_tests::in_netns(ns, move || {
        // SAFETY: plain socket calls on a fresh raw socket with zeroed, filled-in structs.
        unsafe {
            let fd = libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6);
            assert!(fd >= 0, "raw ICMPv6 socket: {}", std::io::Error::last_os_error());
            let idx = libc::if_nametoindex(ifname.as_ptr());
            let hops: libc::c_int = 255;
            let sz = std::mem::size_of::<libc::c_int>() as u32;
            libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_HOPS,
                (&hops as *const libc::c_int).cast(),
                sz,
            );
            let ifi = idx as libc::c_int;
            libc::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, (&ifi as *const libc::c_int).cast(), sz);
            let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
            sa.sin6_family = libc::AF_INET6 as u16;
            sa.sin6_addr.s6_addr = "ff02::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
            sa.sin6_scope_id = idx;
            let rs = [133u8, 0, 0, 0, 0, 0, 0, 0];
            let n = libc::sendto(
                fd,
                rs.as_ptr().cast(),
                rs.len(),
                0,
                (&sa as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as u32,
            );
            assert_eq!(n, rs.len() as isize, "sendto: {}", std::io::Error::last_os_error());
            libc::close(fd);
        }
    })
    .unwrap();
}

both!(forged_v6_frames_and_ndp, ebpf_forged_v6_frames_and_ndp, iptables_forged_v6_frames_and_ndp);

/// Neighbour discovery across the bridge (a sandbox resolves its gateway and a neighbour, ping6
/// both ways, a router solicitation reaches the host) and forged IPv6 frames with real packets:
/// from sandboxes, a source address of the gateway, of another sandbox or made up, to a
/// sandbox of an icc=false network (bridged) and from another network (routed); from outside,
/// straight to the sandbox's v6 address and with `::1` either side. None reaches it.
fn forged_v6_frames_and_ndp(dataplane: &str) {
    use netd_tests::frames::{mac_of, send_raw, syn6_frame};
    let th = TestHost::new(&format!("v6f{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane]).unwrap();
    let pr = p();
    let bridge = |n: &str| format!("com.docker.network.bridge.name={n}");
    let icc_off = "com.docker.network.bridge.enable_icc=false";
    d.ok(&["network", "create", "--ipv6", "--subnet", "fd00:21:1::/64", "-o", icc_off, "-o", &bridge("brf6a"), "fa"]);
    d.ok(&["network", "create", "--ipv6", "--subnet", "fd00:21:2::/64", "-o", &bridge("brf6b"), "fb"]);
    let run = |name: &str, net: &str, serve: bool| {
        let mut a = vec!["run", "-d", "--name", name, "--network", net];
        if name == "web" {
            a.extend(["-p", "8080:7000"]);
        }
        if serve {
            a.extend(["--", pr.as_str(), "serve", "--tag", name, "7000"]);
        } else {
            a.extend(["--", "sleep", "300"]);
        }
        d.ok(&a);
    };
    run("web", "fa", true); // fd00:21:1::2
    run("atk", "fa", false); // ::3
    run("s3", "fa", false); // ::4
    run("nb", "fb", true); // fd00:21:2::2
    run("atk2", "fb", false); // fd00:21:2::3
    let ns = |n: &str| d.inspect(n)["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string();
    let host = th.host.path();
    let (mac_a, mac_b) = (mac_of(&host, "brf6a"), mac_of(&host, "brf6b"));
    let fmt_mac = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");

    // Neighbour discovery: the sandbox resolves its gateway (NS/NA across the veth and the
    // bridge, under icc=false too) and pings it; on an icc=true network a neighbour too.
    for (sb, gw, mac) in [("atk", "fd00:21:1::1", mac_a), ("atk2", "fd00:21:2::1", mac_b)] {
        d.ok(&["exec", sb, "--", "ip", "-6", "neigh", "flush", "dev", "eth0"]);
        let r = d.cli(&["exec", sb, "--", "ping", "-6", "-c", "1", "-W", "3", gw]);
        assert_eq!(r.code, 0, "{sb} ping6 {gw}: {} {}", r.stdout, r.stderr);
        let n = d.ok(&["exec", sb, "--", "ip", "-6", "neigh", "show", gw, "dev", "eth0"]);
        assert!(n.contains(&format!("lladdr {}", fmt_mac(mac))), "{sb} resolved {gw}: {n:?}");
    }
    let r = d.cli(&["exec", "atk2", "--", "ping", "-6", "-c", "1", "-W", "3", "fd00:21:2::2"]);
    assert_eq!(r.code, 0, "ping6 a neighbour: {} {}", r.stdout, r.stderr);
    let n = d.ok(&["exec", "atk2", "--", "ip", "-6", "neigh", "show", "fd00:21:2::2", "dev", "eth0"]);
    let nb_mac = fmt_mac(mac_of(&ns("nb"), "eth0"));
    assert!(n.contains(&format!("lladdr {nb_mac}")), "atk2 resolved nb: {n:?}");
    let e = echo(&d.ok(&["exec", "atk2", "--", &pr, "tcp", "[fd00:21:2::2]:7000", "nd"]));
    assert_eq!(e.tag, "nb");
    // A router solicitation from a sandbox reaches the host (the bridge answers as a router
    // would; RFC 4861 wants hop limit 255, so nothing may have routed it).
    let rs_before = snmp(&host, "", "Icmp6InRouterSolicits");
    send_router_solicitation(&ns("atk"), "eth0");
    send_router_solicitation(&ns("atk2"), "eth0");
    let mut rs_after = rs_before;
    for _ in 0..20 {
        rs_after = snmp(&host, "", "Icmp6InRouterSolicits");
        if rs_after >= rs_before + 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(rs_after >= rs_before + 2, "router solicitations reaching the host: {rs_before} -> {rs_after}");

    // Forged frames toward web ([fd00:21:1::2]:7000).
    let web = "fd00:21:1::2".parse().unwrap();
    let v6 = |s: &str| -> std::net::Ipv6Addr { s.parse().unwrap() };
    let web_ns = ns("web");
    let web_mac = mac_of(&web_ns, "eth0");
    let before = settled(&web_ns, "Tcp", "InSegs");
    // From a neighbour on the icc=false network, bridged to web's MAC: the gateway's address,
    // another sandbox's (not linked), a made-up one of the subnet, a link-local one.
    let atk_ns = ns("atk");
    let atk_mac = mac_of(&atk_ns, "eth0");
    let mut frames = Vec::new();
    for src in ["fd00:21:1::1", "fd00:21:1::4", "fd00:21:1::99", "fe80::99"] {
        frames.extend((0..3).map(|_| syn6_frame(web_mac, atk_mac, v6(src), web, 7000)));
    }
    send_raw(&atk_ns, "eth0", frames);
    // From another network, routed through its gateway's MAC: its gateway's address, web's
    // gateway's, a made-up one.
    let atk2_ns = ns("atk2");
    let atk2_mac = mac_of(&atk2_ns, "eth0");
    let mut frames = Vec::new();
    for src in ["fd00:21:2::1", "fd00:21:1::1", "fd00:21:2::99"] {
        frames.extend((0..3).map(|_| syn6_frame(mac_b, atk2_mac, v6(src), web, 7000)));
    }
    send_raw(&atk2_ns, "eth0", frames);
    // From outside at the host's MAC: straight to web's address, to ::1, from ::1.
    let out = th.outside.path();
    let (up_mac, out_mac) = (mac_of(&host, "up0"), mac_of(&out, "out0"));
    netd_tests::ip(&["-n", &th.outside.name, "-6", "route", "add", "fd00:21:1::/64", "via", "2001:db8:100::1"])
        .unwrap();
    let client = v6("2001:db8:100::2");
    let mut frames = Vec::new();
    for _ in 0..3 {
        frames.push(syn6_frame(up_mac, out_mac, client, web, 7000));
        frames.push(syn6_frame(up_mac, out_mac, client, v6("::1"), 8080));
        frames.push(syn6_frame(up_mac, out_mac, v6("::1"), web, 7000));
    }
    send_raw(&out, "out0", frames);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after = snmp(&web_ns, "Tcp", "InSegs");
    assert_eq!(after, before, "forged v6 segments reached web");
    // The counter is web's: a real client moves it (the published port over v6).
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8080"), b"real").expect("v6 published port");
    assert_eq!(e.tag, "web");
    assert!(snmp(&web_ns, "Tcp", "InSegs") > after, "web's counter did not move");
    if dataplane == "ebpf" {
        let dr = drops(&d);
        let n = |r: &str| dr[r].as_u64().unwrap_or(0);
        assert!(n("icc") >= 12, "bridged forged frames: {dr}");
        assert!(n("isolation") >= 9, "routed forged frames: {dr}");
        assert!(n("direct_to_sandbox") >= 3 && n("loopback_not_lo") >= 3, "from outside: {dr}");
    }
}

both!(
    a_next_hop_mac_change_reaches_established_v6_flows,
    ebpf_a_next_hop_mac_change_reaches_established_v6_flows,
    iptables_a_next_hop_mac_change_reaches_established_v6_flows
);

/// The v6 twin of dataplane.rs `*_a_next_hop_mac_change_reaches_established_flows`: the eBPF
/// fast path caches a routed v6 flow's route (egress device, next hop's MAC, MTU) in its
/// `CT_V6` entry while the daemon's FIB generation is unchanged. The next hop changes its MAC
/// and the host learns it: a sandbox's established NAT66 flow must follow at once, as the
/// kernel's forwarding does (with a stale cache its segments would go to the old MAC, which
/// the outside drops as not its own).
fn a_next_hop_mac_change_reaches_established_v6_flows(dataplane: &str) {
    let th = TestHost::new(&format!("n6{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane]).unwrap();
    d.ok(&["network", "create", "--ipv6", "--subnet", "fd00:19:1::/64", "n1"]);
    d.ok(&["run", "-d", "--name", "na", "--network", "n1", "--", "sleep", "300"]);
    let sandbox = d.inspect("na")["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string();
    let (third, peer) = probe::next_hop_mac_change(&th, &sandbox, addr("[2001:db8:100::2]:9090"), "02:00:5e:10:00:46");
    assert_eq!(third, Ok(()), "{dataplane}: the established v6 flow after the next hop's MAC changed");
    assert_eq!(peer, "2001:db8:100::1", "{dataplane}: NAT66 to the uplink's address");
}

/// eBPF: a v4 hairpin flow and a NAT46 flow to the same sandbox port would have the same v4
/// reply tuple (the sandbox port to the network's gateway from a drawn port): each draw checks
/// the other's table, so neither takes the other's replies. With one port left outside the
/// host's ephemeral range both must draw it: the hairpin, second, finds none free (counted),
/// and the NAT46 flow keeps its replies. (iptables: the proxy's connection and nf_nat never meet.)
/// `--ip-forward=false`: the NAT46 replies reach the client without IPv6 forwarding too.
#[test]
fn ebpf_nat46_and_v4_hairpin_never_share_a_reply_tuple() {
    require_root!();
    let th = TestHost::new("n46h").unwrap();
    th.host.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=1025 65535"]).unwrap();
    // (No IPv6 forwarding: the NAT46 replies go by the kernel's output route, not the FIB.)
    let d = TestDaemon::start(&th, &["--dataplane", "ebpf", "--ip-forward=false"]).unwrap();
    let pr = p();
    d.ok(&["run", "-d", "--name", "tg", "-p", "5354:7000/udp", "--", &pr, "serve", "--tag", "tg", "7000"]);
    d.ok(&["run", "-d", "--name", "cl", "--", "sleep", "300"]);
    let a = probe::udp_socket_in(&th.outside.path(), addr("[::]:0")).unwrap();
    let e = probe::udp_echo_on(&a, addr("[2001:db8:100::1]:5354"), b"n46").unwrap_or_else(|e| {
        let dump = |m: &str| {
            let o = std::process::Command::new("bpftool")
                .args(["map", "dump", "pinned", &d.bpffs.join("maps").join(m).display().to_string()])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
        };
        panic!(
            "a NAT46 flow: {e:#}\n{}\n{}\nPUB6 {}\nHA6 {}\nCT6 {}\nCFG {}\n{}",
            d.ok(&["port", "tg"]),
            d.ok(&["stats", "--format", "json"]),
            dump("PUBLISHED_V6"),
            dump("HOST_ADDRS_V6"),
            dump("CT_V6"),
            dump("CONFIG"),
            d.log()
        )
    });
    assert_eq!(e.tag, "tg");
    let r = d.cli(&["exec", "cl", "--", &pr, "udp", "198.51.100.1:5354", "hp"]);
    assert_ne!(r.code, 0, "the hairpin took the NAT46 flow's reply tuple: {}", r.stdout);
    let dr = drops(&d);
    assert!(dr["snat_exhausted"].as_u64().unwrap() >= 1, "{dr}");
    let e = probe::udp_echo_on(&a, addr("[2001:db8:100::1]:5354"), b"again").expect("the NAT46 flow after the hairpin");
    assert_eq!((e.tag.as_str(), e.payload.as_slice()), ("tg", &b"again"[..]));
}

/// Opens the daemon's `NETD_TEST_V6_LOAD_GATE` when dropped (also when the test fails), so
/// the background load finishes and the daemon can go down.
struct Gate(std::path::PathBuf);
impl Gate {
    fn open(&self) {
        std::fs::write(&self.0, b"open").unwrap();
    }
}
impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, b"open");
    }
}

/// `netd ARGS` on a thread of its own; the receiver gets its result.
fn cli_bg(d: &TestDaemon, args: &[&str]) -> std::sync::mpsc::Receiver<netd_tests::daemon::Cli> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut c = std::process::Command::new("nsenter");
    c.arg(format!("--net={}", d.netns_path))
        .arg("--")
        .arg(netd_tests::daemon::netd_bin())
        .arg("-H")
        .arg(format!("unix://{}", d.socket.display()))
        .args(args)
        .stdin(Stdio::null());
    std::thread::spawn(move || {
        let _ = tx.send(netd_tests::daemon::Cli::from_output(c.output().expect("running netd")));
    });
    rx
}

/// How many requests the daemon's log shows waiting for the background IPv6 load (with or
/// without a lock held), waited for (bounded) to reach `n`.
fn v6_load_waiters(d: &TestDaemon, n: usize) {
    for _ in 0..1200 {
        if d.log().matches("v6-load-wait:").count() >= n {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{n} request(s) never waited for the IPv6 load:\n{}", d.log());
}

/// eBPF: the IPv6 programs load and verify on a thread of their own from `netd up`; the first
/// changes that need them right after (a dual-stack network, a NAT46 `[::]` twin) wait for
/// that load holding no lock, so other requests (`ps`, `network ls`, `inspect`, another `run`)
/// are answered meanwhile. Deterministic: the daemon's load is held back by a gate file
/// (`NETD_TEST_V6_LOAD_GATE`, a test hook), the cheap calls must answer while the v6 changes
/// still wait, and once the gate opens the v6 datapath works (real packets: NAT46 and a
/// dual-stack network's published port from an IPv6 client). Before the fix, `network create
/// --ipv6` waited under the state lock (and a NAT46 `run` under the dataplane's lock, on a
/// runtime worker), and `ps` hung until the load ended.
#[test]
fn ebpf_v6_load_waits_outside_the_locks() {
    require_root!();
    let th = TestHost::new("v6lw").unwrap();
    let gate_dir = std::path::PathBuf::from(format!("/run/netd-test/{}", netd_tests::unique("v6gate")));
    std::fs::create_dir_all(&gate_dir).unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(gate_dir.clone());
    let gate_path = gate_dir.join("gate");
    let d = TestDaemon::start_env(
        &th,
        &[("NETD_TEST_V6_LOAD_GATE", gate_path.to_str().unwrap())],
        &["--dataplane", "ebpf"],
    )
    .unwrap();
    // Declared after the daemon: dropped (opened) before it goes down.
    let gate = Gate(gate_path);
    let pr = p();
    let answer = |rx: &std::sync::mpsc::Receiver<netd_tests::daemon::Cli>, what: &str| -> netd_tests::daemon::Cli {
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{what} got no answer while the IPv6 load was held back:\n{}", d.log()))
    };
    // 1. A dual-stack network: waits for the load.
    let create = cli_bg(&d, &["network", "create", "--ipv6", "--subnet", "fd00:31::/64", "n6"]);
    v6_load_waiters(&d, 1);
    // Meanwhile: the state lock and the dataplane's are free.
    let r = answer(&cli_bg(&d, &["ps"]), "netd ps");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = answer(&cli_bg(&d, &["network", "ls"]), "netd network ls");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = answer(&cli_bg(&d, &["run", "-d", "--name", "plain", "--", "sleep", "300"]), "a v4 netd run");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // 2. A v4-only sandbox published on [::] too (its NAT46 twin): waits as well.
    let run46 =
        cli_bg(&d, &["run", "-d", "--name", "w4", "-p", "8080:7000", "--", &pr, "serve", "--tag", "w4", "7000"]);
    v6_load_waiters(&d, 2);
    let r = answer(&cli_bg(&d, &["inspect", "plain"]), "netd inspect");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = answer(&cli_bg(&d, &["ps", "-a"]), "netd ps -a");
    assert!(r.stdout.contains("plain"), "{}", r.stdout);
    // The order: both v6 changes are still waiting after every answer above.
    assert!(create.try_recv().is_err(), "network create --ipv6 finished before the IPv6 load did");
    assert!(run46.try_recv().is_err(), "the NAT46 run finished before the IPv6 load did");
    gate.open();
    let r = answer(&create, "network create --ipv6 (after the gate opened)");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = answer(&run46, "the NAT46 run (after the gate opened)");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // (`d.ok` would wait for the probe to listen; this run went through `cli_bg`: under load
    // the probe binds after `run -d` returns, and a client connecting before is refused.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !d.cli(&["logs", "w4"]).stdout.contains("listening on ") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Nothing ran the v6 datapath before its programs were in place: both work now.
    let out = th.outside.path();
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8080"), b"n46").expect("NAT46 [::]:8080 from outside");
    assert_eq!(e.tag, "w4");
    d.ok(&[
        "run",
        "-d",
        "--name",
        "w6",
        "--network",
        "n6",
        "-p",
        "8081:7000",
        "--",
        &pr,
        "serve",
        "--tag",
        "w6",
        "7000",
    ]);
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8081"), b"v6").expect("v6 8081 from outside");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("w6", "2001:db8:100::2"), "DNAT66 keeps the client");
}

both!(address_reuse_with_another_mac, ebpf_address_reuse_with_another_mac, iptables_address_reuse_with_another_mac);

/// A sandbox's address handed to the next sandbox with another MAC (an IPv6-only network's
/// random MACs; `--mac-address` for IPv4): a peer that talked to the old holder, and the host
/// (a published port from outside), reach the new one at once, because the new interface
/// sends Docker 27+'s unsolicited neighbour advertisement / gratuitous ARP (3, 1 s apart)
/// and their neighbour entries take the new MAC. The peers' and the host's neighbour entries
/// stay reachable for 60-180 s here (`base_reachable_time_ms` 120 s, set in the test's own
/// namespaces), so without the advertisements the old MAC is used throughout the bounded wait
/// (two 3 s connection attempts): the iptables run fails then. (eBPF passes either way: its
/// programs deliver a frame to a sandbox with the MAC of `ENDPOINTS`/`ENDPOINTS_V6`, whatever
/// MAC the sender used; the twin shows the same answers.)
fn address_reuse_with_another_mac(dataplane: &str) {
    let th = TestHost::new(&format!("v6r{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane]).unwrap();
    let pr = p();
    let out = th.outside.path();
    let id = d.ok(&["network", "create", "--ipv6", "--ipv4=false", "--subnet", "fd00:41::/64", "n6only"]);
    // The host's entries on the bridge (a non-initial namespace has no `neigh.default`).
    let br = format!("br-{}", &id.trim()[..12]);
    th.host.exec_ok(&["sysctl", "-qw", &format!("net.ipv6.neigh.{br}.base_reachable_time_ms=120000")]).unwrap();
    d.ok(&["network", "create", "--subnet", "10.41.0.0/24", "n4"]);
    let slow_neigh = |name: &str, fam: &str| {
        d.ok(&[
            "exec",
            name,
            "--",
            "sh",
            "-c",
            &format!("echo 120000 > /proc/sys/net/{fam}/neigh/eth0/base_reachable_time_ms"),
        ]);
    };
    d.ok(&["run", "-d", "--name", "p6", "--network", "n6only", "--", "sleep", "300"]);
    slow_neigh("p6", "ipv6");
    d.ok(&["run", "-d", "--name", "p4", "--network", "n4", "--", "sleep", "300"]);
    slow_neigh("p4", "ipv4");
    let serve = |name: &str, net: &str, addr_flag: &str, addr: &str, extra: &[&str]| {
        let mut a = vec!["run", "-d", "--name", name, "--network", net, addr_flag, addr];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--", &pr, "serve", "--tag", name, "7000"]);
        d.ok(&a);
    };
    let from_peer = |peer: &str, target: &str| -> Option<String> {
        (0..2).find_map(|_| {
            let r = d.cli(&["exec", peer, "--", &pr, "tcp", target, "reuse"]);
            (r.code == 0).then(|| echo(&r.stdout).tag)
        })
    };
    let from_outside = |target: &str| -> Option<String> {
        (0..2).find_map(|_| probe::tcp_echo(&out, addr(target), b"reuse").ok().map(|e| e.tag))
    };
    let mac = |n: &str| {
        d.inspect(n)["NetworkSettings"]["Networks"].as_object().unwrap().values().next().unwrap()["MacAddress"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // IPv6-only: the old holder, talked to by the peer and from outside (through the host).
    serve("a6", "n6only", "--ip6", "fd00:41::10", &["-p", "8090:7000"]);
    assert_eq!(from_peer("p6", "[fd00:41::10]:7000").as_deref(), Some("a6"));
    assert_eq!(from_outside("[2001:db8:100::1]:8090").as_deref(), Some("a6"));
    let old = mac("a6");
    d.ok(&["rm", "-f", "a6"]);
    serve("b6", "n6only", "--ip6", "fd00:41::10", &["-p", "8090:7000"]);
    assert_ne!(mac("b6"), old, "random MACs on an IPv6-only network");
    assert_eq!(
        from_peer("p6", "[fd00:41::10]:7000").as_deref(),
        Some("b6"),
        "the peer still sends to the old MAC (no unsolicited NA)"
    );
    assert_eq!(
        from_outside("[2001:db8:100::1]:8090").as_deref(),
        Some("b6"),
        "the host still sends to the old MAC (no unsolicited NA)"
    );

    // IPv4: the same address with another MAC.
    serve("a4", "n4", "--ip", "10.41.0.10", &[]);
    // Docker's options and messages (bad input changes nothing).
    let r = d.cli(&["network", "create", "-o", "com.docker.network.advertise_addr_nmsgs=4", "badadv"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("com.docker.network.advertise_addr_nmsgs must be in the range 0 to 3"), "{}", r.stderr);
    assert_ne!(d.cli(&["network", "inspect", "badadv"]).code, 0, "a refused network was created");
    assert_eq!(from_peer("p4", "10.41.0.10:7000").as_deref(), Some("a4"));
    d.ok(&["rm", "-f", "a4"]);
    serve("b4", "n4", "--ip", "10.41.0.10", &["--mac-address", "02:42:0a:29:00:99"]);
    assert_eq!(
        from_peer("p4", "10.41.0.10:7000").as_deref(),
        Some("b4"),
        "the peer still sends to the old MAC (no gratuitous ARP)"
    );
}

/// `conntrack_nat`'s reused client port over IPv6: one client `[2001:db8:100::2]:45100`,
/// connection after connection to `[2001:db8:100::1]:8080`, each closed by its RST (SO_LINGER 0),
/// the last by a FIN; every connection gets its own echo (the eBPF dataplane restarts the closed
/// `CT_V6` pair in place, ip6tables' conntrack recreates it).
fn client_port6_reused_after_close(dataplane: &str) {
    use std::{
        io::{Read, Write},
        net::SocketAddr,
    };
    let th = TestHost::new(&format!("v6u{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane, "--ipv6", "--fixed-cidr-v6", "fd00:21::/64"]).unwrap();
    let pr = p();
    d.ok(&["run", "-d", "--name", "web", "-p", "8080:7000", "--", &pr, "serve", "--tag", "web", "7000"]);
    let out = th.outside.path();
    let dst = addr("[2001:db8:100::1]:8080");
    // The server listening (from another client port).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while probe::tcp_echo(&out, dst, b"up").is_err() {
        assert!(std::time::Instant::now() < deadline, "the published port never answered");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let got = netd_tests::in_netns(&out, move || {
        let local: SocketAddr = "[2001:db8:100::2]:45100".parse().unwrap();
        (0..6)
            .map(|i| {
                let mut s = tcp6_from(local, dst).map_err(|e| format!("connection {i}: {e}"))?;
                let msg = format!("n{i}");
                s.write_all(msg.as_bytes()).map_err(|e| format!("write {i}: {e}"))?;
                let mut got = String::new();
                let mut buf = [0u8; 512];
                while !got.ends_with(&msg) {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
                if i < 5 {
                    netd_tests::load::set_linger0(&s);
                }
                Ok(got)
            })
            .collect::<Result<Vec<String>, String>>()
    })
    .unwrap()
    .unwrap();
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &format!("web:[2001:db8:100::2]:n{i}"), "connection {i} from the reused port");
    }
}

/// A TCP connection from a fixed local IPv6 address and port (SO_REUSEADDR), 3 s read timeout.
fn tcp6_from(local: std::net::SocketAddr, dst: std::net::SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let sa = |a: std::net::SocketAddr| {
        let std::net::SocketAddr::V6(a) = a else { panic!("{a}: not IPv6") };
        // SAFETY: an all-zero sockaddr_in6 is valid; the fields are then set.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as u16;
        sa.sin6_port = a.port().to_be();
        sa.sin6_addr.s6_addr = a.ip().octets();
        sa
    };
    let len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    // SAFETY: socket/setsockopt/bind/connect with valid arguments; the fd is owned by the stream.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = std::net::TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&one as *const libc::c_int).cast(), 4);
        let (l, r) = (sa(local), sa(dst));
        if libc::bind(fd, (&l as *const libc::sockaddr_in6).cast(), len) < 0
            || libc::connect(fd, (&r as *const libc::sockaddr_in6).cast(), len) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        s.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
        Ok(s)
    }
}

both!(
    client_port6_reused_after_close,
    ebpf_a_client_port6_reused_after_resets_carries_every_connection,
    iptables_a_client_port6_reused_after_resets_carries_every_connection
);
