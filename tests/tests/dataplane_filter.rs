//! Issue 14's filtering and forwarding scenarios, each run under both dataplanes with real
//! packets, where the iptables dataplane (the kernel's own forwarding, conntrack and nf_nat) is
//! the reference: internal networks have no way out (item 1), routed hops decrement and check
//! the TTL (3), interfaces and addresses that appear after `netd up` are followed (5), a
//! sandbox's forged frame to 127.0.0.1 goes nowhere (6), `--icc=false` also stops broadcast and
//! IPv6 (10), linked flows never touch netfilter (11), and path MTU discovery works on
//! established flows (DF datagrams too big for the uplink come back as EMSGSIZE).
//!
//! Each scenario prints what each endpoint observed as `DIFF|scenario|dataplane|observation`
//! lines (the differential table in docs/reliability.md is made of them) and asserts the
//! observation Docker gives, so both dataplanes must print the same.
use std::time::{Duration, Instant};

use netd_tests::{
    Netns, TestDaemon, TestHost, addr,
    frames::{csum, mac_of, send_raw, syn_frame},
    in_netns, ip, probe, probe_path as p, require_root, settled, snmp, unique,
};
use serde_json::Value;

fn drops(d: &TestDaemon) -> Value {
    let v: Value = serde_json::from_str(&d.ok(&["stats", "--format", "json"])).unwrap();
    let mut m = serde_json::Map::new();
    for r in v["drops"].as_array().unwrap() {
        m.insert(r[0].as_str().unwrap().to_string(), r[1].clone());
    }
    Value::Object(m)
}

/// One cell of the differential table: printed, then compared with Docker's answer.
fn observe(scenario: &str, dataplane: &str, got: &str, docker: &str) {
    eprintln!("DIFF|{scenario}|{dataplane}|{got}");
    assert_eq!(got, docker, "{scenario} under {dataplane}: observed {got:?}, Docker gives {docker:?}");
}

/// Retry `f` until it returns true (bounded).
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sandbox_ns(d: &TestDaemon, name: &str) -> String {
    d.inspect(name)["NetworkSettings"]["SandboxKey"].as_str().unwrap().to_string()
}

fn ip4(s: &str) -> [u8; 4] {
    let v: Vec<u8> = s.split('.').map(|x| x.parse().unwrap()).collect();
    [v[0], v[1], v[2], v[3]]
}

/// Item 1: a sandbox on an `--internal` network reaches no published port, neither through the
/// host's uplink address nor through its own gateway.
fn internal_network_has_no_way_out(dataplane: &str) {
    let th = TestHost::new(&format!("fin{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane]).unwrap();
    let pr = p();
    d.serve("web", &["-p", "8080:7000"], "7000");
    d.ok(&["network", "create", "--internal", "intnet"]);
    d.ok(&["run", "-d", "--name", "in1", "--network", "intnet", "--", "sleep", "300"]);
    let gw = d.inspect("in1")["NetworkSettings"]["Networks"]["intnet"]["Gateway"].as_str().unwrap().to_string();
    // Sanity: the port answers from outside.
    assert_eq!(probe::tcp_echo(&th.outside.path(), addr("198.51.100.1:8080"), b"ok").unwrap().tag, "web");
    let mut seen = Vec::new();
    for (what, target) in [("uplink", "198.51.100.1:8080".to_string()), ("gateway", format!("{gw}:8080"))] {
        let r = d.cli(&["exec", "in1", "--", &pr, "tcp", &target, "x"]);
        seen.push(format!("{what}:{}", if r.code == 0 && r.stdout.contains("web:") { "reached" } else { "blocked" }));
    }
    observe("internal-to-published", dataplane, &seen.join(","), "uplink:blocked,gateway:blocked");
    if dataplane == "ebpf" {
        assert!(drops(&d)["internal"].as_u64().unwrap() >= 2, "{}", drops(&d));
    }
    // Docker's bridge driver gives an internal network no gateway: no default route in the
    // sandbox, and (Docker 28's gateway selection) neither its default route nor its published
    // ports go through an internal network while another network is there.
    let r = d.ok(&["exec", "in1", "--", "ip", "-4", "route", "show", "default"]);
    assert!(r.trim().is_empty(), "a sandbox on an internal network has a default route: {r}");
    d.serve("in2", &["--network", "intnet", "-p", "8081:7000"], "7000");
    d.ok(&["network", "connect", "bridge", "in2"]);
    let r = d.ok(&["exec", "in2", "--", "ip", "-4", "route", "show", "default"]);
    assert!(r.contains("dev eth1"), "the default route goes through the bridge network, not the internal one: {r}");
    let mut answer = None;
    for _ in 0..10 {
        answer = probe::tcp_echo(&th.outside.path(), addr("198.51.100.1:8081"), b"x").ok().map(|e| e.tag);
        if answer.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(answer.as_deref(), Some("in2"), "the published port goes through the bridge network");
    let port = d.ok(&["port", "in2"]);
    assert!(port.contains("7000/tcp -> 0.0.0.0:8081"), "{port}");
    gateway_order_is_dockers(&th, &d);
}

/// Docker's gateway order (`Endpoint.Less`): among networks of equal `gw-priority` the name
/// decides, not the join order, and a higher priority wins. The default route and the
/// published ports follow the gateway (checked with real connections from outside).
fn gateway_order_is_dockers(th: &TestHost, d: &TestDaemon) {
    let reach = |port: &str| {
        let mut tag = None;
        for _ in 0..10 {
            tag = probe::tcp_echo(&th.outside.path(), addr(&format!("198.51.100.1:{port}")), b"x").ok().map(|e| e.tag);
            if tag.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        tag
    };
    let default_dev = |name: &str| {
        let r = d.ok(&["exec", name, "--", "ip", "-4", "route", "show", "default"]);
        r.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or("none").to_string()
    };
    d.ok(&["network", "create", "zeta"]);
    d.ok(&["network", "create", "alpha"]);
    let serve = |name: &str, net: &str, port: &str| {
        d.serve(name, &["--network", net, "-p", &format!("{port}:7000")], "7000");
    };
    // Joined zeta first, then alpha: alpha sorts first and becomes the gateway.
    serve("gwn", "zeta", "8082");
    assert_eq!(reach("8082").as_deref(), Some("gwn"));
    assert_eq!(default_dev("gwn"), "eth0");
    d.ok(&["network", "connect", "alpha", "gwn"]);
    assert_eq!(default_dev("gwn"), "eth1", "alpha sorts before zeta: Docker's gateway");
    assert_eq!(reach("8082").as_deref(), Some("gwn"), "the published port through alpha");
    let alpha_ip = d.inspect("gwn")["NetworkSettings"]["Networks"]["alpha"]["IPAddress"].as_str().unwrap().to_string();
    let seen = d.ok(&["exec", "gwn", "--", "ip", "-4", "route", "get", "198.51.100.2"]);
    assert!(seen.contains(&format!("src {alpha_ip}")), "outbound from alpha's address: {seen}");
    // Leaving alpha hands the gateway back to zeta.
    d.ok(&["network", "disconnect", "alpha", "gwn"]);
    assert_eq!(default_dev("gwn"), "eth0");
    assert_eq!(reach("8082").as_deref(), Some("gwn"), "the published port back through zeta");
    // gw-priority (Docker 28): zeta at priority 1 keeps the gateway when alpha joins; bridge
    // joined at priority 2 takes it.
    serve("gwp", "name=zeta,gw-priority=1", "8083");
    assert_eq!(d.inspect("gwp")["NetworkSettings"]["Networks"]["zeta"]["GwPriority"], 1);
    d.ok(&["network", "connect", "alpha", "gwp"]);
    assert_eq!(default_dev("gwp"), "eth0", "priority 1 beats the name");
    assert_eq!(reach("8083").as_deref(), Some("gwp"));
    d.ok(&["network", "connect", "--gw-priority", "2", "bridge", "gwp"]);
    assert_eq!(default_dev("gwp"), "eth2", "priority 2 takes the gateway");
    assert_eq!(d.inspect("gwp")["NetworkSettings"]["Networks"]["bridge"]["GwPriority"], 2);
    assert_eq!(reach("8083").as_deref(), Some("gwp"), "the published port through the default bridge");
    // Bad input: Docker's messages, exit 125, nothing created.
    let before = d.ok(&["ps", "-aq"]).lines().count();
    for (arg, msg) in [
        ("name=zeta,gw-priority=x", "invalid gw-priority (x): invalid syntax"),
        ("name=zeta,color=red", "invalid field key color"),
        ("alias=a,gw-priority=1", "network name/id is not specified"),
    ] {
        let r = d.cli(&["run", "-d", "--network", arg, "--", "sleep", "1"]);
        assert_eq!(r.code, 125, "{arg}: {}", r.stderr);
        assert!(r.stderr.contains(msg) && r.stderr.contains("for \"--network\" flag"), "{arg}: {}", r.stderr);
    }
    assert_eq!(d.ok(&["ps", "-aq"]).lines().count(), before, "a bad --network created a sandbox");
}

/// Item 3: the host is a routed hop: `ping -t 1` gets "time to live exceeded" from the gateway
/// and replies arrive with the TTL decremented once.
fn ttl_is_decremented_and_checked(dataplane: &str) {
    let th = TestHost::new(&format!("ftl{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane]).unwrap();
    d.ok(&["run", "-d", "--name", "t1", "--", "sleep", "300"]);
    let r = d.cli(&["exec", "t1", "--", "ping", "-n", "-c", "1", "-W", "2", "-t", "1", "198.51.100.2"]);
    let exceeded = if r.stdout.contains("From 172.17.0.1") && r.stdout.contains("Time to live exceeded") {
        "time-exceeded-from-172.17.0.1"
    } else if r.stdout.contains("1 received") {
        "echo-reply"
    } else {
        "nothing"
    };
    observe("ping-ttl-1", dataplane, exceeded, "time-exceeded-from-172.17.0.1");
    // The outside answers with TTL 64; one routed hop later the sandbox sees 63.
    let r = d.ok(&["exec", "t1", "--", "ping", "-n", "-c", "1", "-W", "2", "198.51.100.2"]);
    let ttl = r.split_whitespace().find_map(|w| w.strip_prefix("ttl=")).unwrap_or("none").to_string();
    observe("echo-reply-ttl", dataplane, &format!("ttl={ttl}"), "ttl=63");
    // Inbound too: a published port's SYN with TTL 1 is not delivered (the host answers it
    // with time exceeded); TTL 2 reaches the sandbox.
    d.ok(&["run", "-d", "--name", "t2", "-p", "8080:7000", "--", &p(), "serve", "--tag", "t2", "7000"]);
    let sb = sandbox_ns(&d, "t2");
    let out = th.outside.path();
    assert_eq!(probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"ok").unwrap().tag, "t2");
    let host_mac = mac_of(&th.host.path(), "up0");
    let out_mac = mac_of(&out, "out0");
    let mut got = Vec::new();
    let dbg = std::env::var("DPF_DEBUG").is_ok();
    let mut tds = Vec::new();
    if dbg {
        tds.push(
            std::process::Command::new("nsenter")
                .arg(format!("--net={sb}"))
                .args(["tcpdump", "-l", "-n", "-i", "eth0", "-v", "tcp"])
                .spawn()
                .unwrap(),
        );
        tds.push(th.host.cmd(&["tcpdump", "-l", "-n", "-i", "any", "-v", "tcp or icmp"]).spawn().unwrap());
        std::thread::sleep(Duration::from_secs(1));
    }
    for ttl in [1u8, 2] {
        let before = settled(&sb, "Tcp", "InSegs");
        let mut f = syn_frame(host_mac, out_mac, [198, 51, 100, 2], [198, 51, 100, 1], 8080);
        f[14 + 8] = ttl;
        f[14 + 10] = 0;
        f[14 + 11] = 0;
        let c = csum(&f[14..34]);
        f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
        send_raw(&out, "out0", vec![f]);
        std::thread::sleep(Duration::from_millis(300));
        got.push(format!(
            "ttl{ttl}:{}",
            if snmp(&sb, "Tcp", "InSegs") > before { "delivered" } else { "not-delivered" }
        ));
    }
    for mut t in tds {
        std::thread::sleep(Duration::from_millis(500));
        let _ = t.kill();
        let _ = t.wait();
    }
    observe("inbound-syn-ttl", dataplane, &got.join(","), "ttl1:not-delivered,ttl2:delivered");
}

/// Item 5: an interface added after `netd up` (veth `lan0`, 203.0.113.1/24) is an uplink like
/// the others: published ports answer on its address, masquerade applies toward it, sandbox
/// addresses are not reachable through it; an address change is picked up.
fn interfaces_are_followed_live(dataplane: &str) {
    let th = TestHost::new(&format!("flv{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane]).unwrap();
    let pr = p();
    d.ok(&["run", "-d", "--name", "web", "-p", "8080:7000", "--", &pr, "serve", "--tag", "web", "7000"]);
    let lan = Netns::new(&unique("flan")).unwrap();
    ip(&["-n", &th.host.name, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1", "netns", &lan.name])
        .unwrap();
    ip(&["-n", &th.host.name, "addr", "add", "203.0.113.1/24", "dev", "lan0"]).unwrap();
    ip(&["-n", &th.host.name, "link", "set", "lan0", "up"]).unwrap();
    ip(&["-n", &lan.name, "addr", "add", "203.0.113.2/24", "dev", "lan1"]).unwrap();
    ip(&["-n", &lan.name, "link", "set", "lan1", "up"]).unwrap();
    let _srv = probe::EchoServer::start(&lan.path(), addr("203.0.113.2:6000"), "lan").unwrap();
    // The published port on the new address (the daemon follows within a moment).
    let published = eventually(Duration::from_secs(5), || {
        probe::tcp_echo(&lan.path(), addr("203.0.113.1:8080"), b"new").is_ok_and(|e| e.tag == "web")
    });
    observe("new-iface-published-port", dataplane, if published { "answers" } else { "refused" }, "answers");
    // Masquerade toward it.
    let r = d.cli(&["exec", "web", "--", &pr, "tcp", "203.0.113.2:6000", "m"]);
    observe("new-iface-masquerade", dataplane, r.stdout.trim(), "lan:203.0.113.1:m");
    // No direct access to the sandbox through it.
    ip(&["-n", &lan.name, "route", "add", "172.17.0.0/16", "via", "203.0.113.1"]).unwrap();
    let direct = probe::tcp_echo(&lan.path(), addr("172.17.0.2:7000"), b"direct").is_ok();
    observe("new-iface-direct-to-sandbox", dataplane, if direct { "reached" } else { "blocked" }, "blocked");
    // The address changes (a DHCP renewal with a new lease).
    ip(&["-n", &th.host.name, "addr", "del", "203.0.113.1/24", "dev", "lan0"]).unwrap();
    ip(&["-n", &th.host.name, "addr", "add", "203.0.113.5/24", "dev", "lan0"]).unwrap();
    let published = eventually(Duration::from_secs(5), || {
        probe::tcp_echo(&lan.path(), addr("203.0.113.5:8080"), b"renewed").is_ok_and(|e| e.tag == "web")
    });
    observe("changed-address-published-port", dataplane, if published { "answers" } else { "refused" }, "answers");
    // (The published port may answer at once through the userland proxy's wildcard socket, so
    // it does not show that the daemon has followed yet: masquerade gets the same bounded
    // moment.)
    let mut seen = String::new();
    eventually(Duration::from_secs(5), || {
        seen = d.cli(&["exec", "web", "--", &pr, "tcp", "203.0.113.2:6000", "m2"]).stdout.trim().to_string();
        seen == "lan:203.0.113.5:m2"
    });
    observe("changed-address-masquerade", dataplane, &seen, "lan:203.0.113.5:m2");
    // The first uplink is unaffected.
    assert_eq!(probe::tcp_echo(&th.outside.path(), addr("198.51.100.1:8080"), b"up0").unwrap().tag, "web");
    if dataplane == "ebpf" {
        assert!(drops(&d)["direct_to_sandbox"].as_u64().unwrap() >= 1, "{}", drops(&d));
        let info = d.ok(&["info"]);
        assert!(info.contains("lan0"), "uplinks listed: {info}");
    }
}

/// Item 6 (and --icc=false, isolation): a sandbox with CAP_NET_RAW sends SYNs to the gateway's
/// MAC with destination 127.0.0.1, where another sandbox published a port.
fn forged_loopback_from_a_sandbox(dataplane: &str) {
    let th = TestHost::new(&format!("flo{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane, "--icc=false"]).unwrap();
    let pr = p();
    d.ok(&["run", "-d", "--name", "web", "-p", "127.0.0.1:8443:7001", "--", &pr, "serve", "--tag", "web", "7001"]);
    d.ok(&["run", "-d", "--name", "atk", "--", "sleep", "300"]);
    d.ok(&["network", "create", "other"]);
    d.ok(&["run", "-d", "--name", "atk2", "--network", "other", "--", "sleep", "300"]);
    assert_eq!(probe::tcp_echo(&th.host.path(), addr("127.0.0.1:8443"), b"ok").unwrap().tag, "web");
    let web_ns = sandbox_ns(&d, "web");
    let before = settled(&web_ns, "Tcp", "InSegs");
    for (name, net) in [("atk", "bridge"), ("atk2", "other")] {
        let ns = sandbox_ns(&d, name);
        let v = d.inspect(name);
        let me = ip4(v["NetworkSettings"]["Networks"][net]["IPAddress"].as_str().unwrap());
        let gw = v["NetworkSettings"]["Networks"][net]["Gateway"].as_str().unwrap().to_string();
        // The bridge holding the gateway address.
        let addrs = th.host.exec_ok(&["ip", "-o", "-4", "addr", "show"]).unwrap();
        let bridge = addrs
            .lines()
            .find(|l| l.contains(&format!(" {gw}/")))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .to_string();
        let gw_mac = mac_of(&th.host.path(), &bridge);
        let my_mac = mac_of(&ns, "eth0");
        let frames = (0..5).map(|_| syn_frame(gw_mac, my_mac, me, [127, 0, 0, 1], 8443)).collect();
        send_raw(&ns, "eth0", frames);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = snmp(&web_ns, "Tcp", "InSegs");
    observe(
        "sandbox-forged-127.0.0.1",
        dataplane,
        if after > before { "reached" } else { "not-reached" },
        "not-reached",
    );
    // The counter is web's: the host's own connection to the port moves it.
    assert_eq!(probe::tcp_echo(&th.host.path(), addr("127.0.0.1:8443"), b"ok").unwrap().tag, "web");
    assert!(snmp(&web_ns, "Tcp", "InSegs") > after, "web's counter did not move for the host's connection");
    if dataplane == "ebpf" {
        assert!(drops(&d)["loopback_not_lo"].as_u64().unwrap() >= 10, "{}", drops(&d));
    }
    // Forged sources to web itself. Docker's FORWARD rules judge by interface, not address: a
    // frame bridged to web's MAC from its own bridge meets icc=false, one routed from the other
    // network meets isolation, whatever source address it claims (the gateway's, a made-up
    // one, a sandbox's of the other network).
    let web_ip = ip4(d.inspect("web")["NetworkSettings"]["IPAddress"].as_str().unwrap());
    let web_mac = mac(d.inspect("web")["NetworkSettings"]["MacAddress"].as_str().unwrap());
    let net_of = |name: &str, net: &str| {
        let v = d.inspect(name);
        let n = &v["NetworkSettings"]["Networks"][net];
        (ip4(n["IPAddress"].as_str().unwrap()), ip4(n["Gateway"].as_str().unwrap()))
    };
    let ((atk_ip, bridge_gw), (atk2_ip, other_gw)) = (net_of("atk", "bridge"), net_of("atk2", "other"));
    let bridge_of = |gw: [u8; 4]| {
        let gw = format!("{}.{}.{}.{}", gw[0], gw[1], gw[2], gw[3]);
        let addrs = th.host.exec_ok(&["ip", "-o", "-4", "addr", "show"]).unwrap();
        let b = addrs.lines().find(|l| l.contains(&format!(" {gw}/"))).and_then(|l| l.split_whitespace().nth(1));
        mac_of(&th.host.path(), b.unwrap())
    };
    let before = settled(&web_ns, "Tcp", "InSegs");
    let (atk_ns, atk2_ns) = (sandbox_ns(&d, "atk"), sandbox_ns(&d, "atk2"));
    let atk_mac = mac_of(&atk_ns, "eth0");
    let bridged: Vec<Vec<u8>> = [bridge_gw, [10, 99, 0, 5], atk2_ip]
        .iter()
        .flat_map(|src| (0..3).map(move |_| syn_frame(web_mac, atk_mac, *src, web_ip, 7001)))
        .collect();
    send_raw(&atk_ns, "eth0", bridged);
    let atk2_mac = mac_of(&atk2_ns, "eth0");
    let other_gw_mac = bridge_of(other_gw);
    let routed: Vec<Vec<u8>> = [other_gw, [10, 99, 0, 5], atk_ip]
        .iter()
        .flat_map(|src| (0..3).map(move |_| syn_frame(other_gw_mac, atk2_mac, *src, web_ip, 7001)))
        .collect();
    send_raw(&atk2_ns, "eth0", routed);
    std::thread::sleep(Duration::from_millis(300));
    let after = snmp(&web_ns, "Tcp", "InSegs");
    observe(
        "sandbox-forged-sources-to-a-sandbox",
        dataplane,
        if after > before { "reached" } else { "not-reached" },
        "not-reached",
    );
    if dataplane == "ebpf" {
        let dr = drops(&d);
        assert!(dr["icc"].as_u64().unwrap() >= 6 && dr["isolation"].as_u64().unwrap() >= 6, "{dr}");
    }
}

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    [v[0], v[1], v[2], v[3], v[4], v[5]]
}

/// Item 10: under `--icc=false`, no subnet broadcast between sandboxes and no IPv6 at all on
/// the interfaces of an IPv4-only network (sandbox `eth0` and the host-side veth).
fn icc_false_stops_broadcast_and_ipv6(dataplane: &str) {
    let th = TestHost::new(&format!("fbc{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane, "--icc=false"]).unwrap();
    let pr = p();
    d.ok(&["run", "-d", "--name", "a1", "--", "sleep", "300"]);
    d.ok(&["run", "-d", "--name", "b1", "--", &pr, "serve", "--tag", "b1", "7000"]);
    let (a_ns, b_ns) = (sandbox_ns(&d, "a1"), sandbox_ns(&d, "b1"));
    // IPv6 is off on both ends of every sandbox veth.
    let read = |ns: &str, f: String| in_netns(ns, move || std::fs::read_to_string(f).unwrap_or_default()).unwrap();
    let sb6 = read(&b_ns, "/proc/sys/net/ipv6/conf/eth0/disable_ipv6".into());
    let links = th.host.exec_ok(&["ip", "-o", "link", "show", "master", "netd0"]).unwrap();
    let veths: Vec<String> =
        links.lines().filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap().to_string())).collect();
    assert_eq!(veths.len(), 2, "{links}");
    let host6: Vec<String> = veths
        .iter()
        .map(|v| read(&th.host.path(), format!("/proc/sys/net/ipv6/conf/{v}/disable_ipv6")).trim().to_string())
        .collect();
    observe(
        "ipv4-only-net-ipv6",
        dataplane,
        &format!("sandbox:{},host-veth:{}", sb6.trim(), host6.join("/")),
        "sandbox:1,host-veth:1/1",
    );
    // IPv6 link-local between the sandboxes (all-nodes multicast from a1): b1 never answers.
    let b_mac = d.inspect("b1")["NetworkSettings"]["MacAddress"].as_str().unwrap().to_string();
    let m: Vec<u8> = b_mac.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    let b_ll = format!(
        "fe80::{:x}:{:x}:{:x}:{:x}",
        u16::from_be_bytes([m[0] ^ 2, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]])
    );
    let r = d.cli(&["exec", "a1", "--", "ping", "-6", "-n", "-c", "2", "-W", "1", "ff02::1%eth0"]);
    observe(
        "icc-false-ipv6-link-local",
        dataplane,
        if r.stdout.contains(&b_ll) { "answered" } else { "silent" },
        "silent",
    );
    // Subnet broadcast from a1: b1 (listening on the port) receives nothing.
    let before = settled(&b_ns, "Udp", "InDatagrams");
    in_netns(&a_ns, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_broadcast(true).unwrap();
        for _ in 0..5 {
            let _ = s.send_to(b"bcast", "172.17.255.255:7000");
        }
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got = snmp(&b_ns, "Udp", "InDatagrams") - before;
    observe("icc-false-subnet-broadcast", dataplane, &format!("received:{got}"), "received:0");
    // The counter is b1's: a datagram from the host does arrive.
    probe::udp_echo(&th.host.path(), addr("172.17.0.3:7000"), b"host").expect("host to b1");
    assert!(snmp(&b_ns, "Udp", "InDatagrams") > before, "b1's counter did not move for the host's datagram");
    if dataplane == "ebpf" {
        assert!(drops(&d)["icc"].as_u64().unwrap() >= 5, "{}", drops(&d));
    }
}

/// Item 11: `--link` flows under `--icc=false` keep working with a FORWARD policy of DROP and
/// bridge-nf-call-iptables on (a host with ufw, firewalld or Docker): the eBPF dataplane must
/// not pass any packet of theirs through the bridge.
fn linked_flows_ignore_forward_drop(dataplane: &str) {
    let th = TestHost::new(&format!("flk{}", &dataplane[..1])).unwrap();
    th.host.exec_ok(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"]).unwrap();
    th.host.exec_ok(&["iptables", "-P", "FORWARD", "DROP"]).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane, "--icc=false"]).unwrap();
    let pr = p();
    d.ok(&[
        "run", "-d", "--name", "db", "--expose", "7000", "--expose", "7000/udp", "--", &pr, "serve", "--tag", "db",
        "7000",
    ]);
    d.ok(&["run", "-d", "--name", "app", "--link", "db:dbalias", "--", "sleep", "300"]);
    // Many segments each way on one connection (the handshake alone is not enough), from the
    // app's namespace.
    let app = sandbox_ns(&d, "app");
    let tcp = match probe::tcp_echo(&app, addr("172.17.0.2:7000"), &[b'y'; 30_000]) {
        Ok(e) if e.tag == "db" && e.payload.iter().filter(|b| **b == b'y').count() == 30_000 => "echoed",
        _ => "failed",
    };
    let udp = match probe::udp_echo(&app, addr("172.17.0.2:7000"), b"u") {
        Ok(e) if e.tag == "db" && e.peer == "172.17.0.3" => "echoed",
        _ => "failed",
    };
    observe("linked-flow-forward-drop", dataplane, &format!("tcp:{tcp},udp:{udp}"), "tcp:echoed,udp:echoed");
    // Unlinked stays closed.
    let r = d.cli(&["exec", "db", "--", &pr, "tcp", "172.17.0.3:7000", "reverse"]);
    assert_ne!(r.code, 0);
}

/// Path MTU: a DF datagram of an established flow, larger than the uplink's MTU, comes back to
/// the sandbox as EMSGSIZE (ICMP fragmentation needed from the gateway), not lost.
fn path_mtu_on_established_flows(dataplane: &str) {
    let th = TestHost::new(&format!("fmt{}", &dataplane[..1])).unwrap();
    ip(&["-n", &th.host.name, "link", "set", "up0", "mtu", "1280"]).unwrap();
    ip(&["-n", &th.outside.name, "link", "set", "out0", "mtu", "1280"]).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane]).unwrap();
    let pr = p();
    let _srv = probe::EchoServer::start(&th.outside.path(), addr("198.51.100.2:6000"), "outside").unwrap();
    d.ok(&["run", "-d", "--name", "m1", "--", "sleep", "300"]);
    let r = d.cli(&["exec", "m1", "--", &pr, "udp-df", "198.51.100.2:6000", "1400"]);
    observe("df-udp-1400-over-mtu-1280", dataplane, r.stdout.trim(), "EMSGSIZE mtu=1280");
    // Fits: echoed.
    let r = d.cli(&["exec", "m1", "--", &pr, "udp-df", "198.51.100.2:6000", "1200"]);
    assert!(r.stdout.starts_with("echo "), "{r:?}");
    // TCP (GSO on the veth) through the smaller MTU.
    let e = probe::tcp_echo(&sandbox_ns(&d, "m1"), addr("198.51.100.2:6000"), &[b'z'; 60_000]).expect("tcp");
    assert_eq!(e.payload.iter().filter(|b| **b == b'z').count(), 60_000);
}

/// Issue 13: Docker's own bridge networks (docker0, `br-<12 hex>`, not netd's) and netd's
/// networks do not reach each other, either way, as Docker isolates its bridge networks; any
/// other bridge (a VM's, another runtime's) is not Docker's and stays reachable, as from a
/// Docker container. The bridge gets its Docker name while netd runs (followed live). Without
/// Docker here, no FORWARD rule of Docker's is involved: netd alone must drop.
fn docker_bridges_are_isolated(dataplane: &str) {
    let th = TestHost::new(&format!("fdb{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane]).unwrap();
    let pr = p();
    d.ok(&["run", "-d", "--name", "web", "--", &pr, "serve", "--tag", "web", "7000"]);
    let web = d.inspect("web")["NetworkSettings"]["IPAddress"].as_str().unwrap().to_string();
    // A bridge with an address and a namespace behind it (what docker0 and a container are).
    let h = th.host.name.as_str();
    ip(&["-n", h, "link", "add", "virbr7", "type", "bridge"]).unwrap();
    ip(&["-n", h, "addr", "add", "203.0.113.1/24", "dev", "virbr7"]).unwrap();
    ip(&["-n", h, "link", "set", "virbr7", "up"]).unwrap();
    let ctr = Netns::new(&unique("fdbc")).unwrap();
    ip(&["-n", h, "link", "add", "dbp0", "type", "veth", "peer", "name", "eth0", "netns", &ctr.name]).unwrap();
    ip(&["-n", h, "link", "set", "dbp0", "master", "virbr7", "up"]).unwrap();
    ip(&["-n", &ctr.name, "addr", "add", "203.0.113.2/24", "dev", "eth0"]).unwrap();
    ip(&["-n", &ctr.name, "link", "set", "eth0", "up"]).unwrap();
    ip(&["-n", &ctr.name, "route", "add", "default", "via", "203.0.113.1"]).unwrap();
    let _srv = probe::EchoServer::start(&ctr.path(), addr("203.0.113.2:7000"), "dctr").unwrap();
    let from_sandbox = || {
        let r = d.cli(&["exec", "web", "--", "timeout", "1", &pr, "tcp", "203.0.113.2:7000", "x"]);
        if r.code == 0 && r.stdout.contains("dctr:") { "reached" } else { "blocked" }
    };
    let web_t = format!("{web}:7000");
    let from_ctr = || {
        let r = ctr.exec(&["timeout", "1", &pr, "tcp", &web_t, "x"]).unwrap();
        if r.status.success() && String::from_utf8_lossy(&r.stdout).contains("web:") { "reached" } else { "blocked" }
    };
    // (A first connection also resolves the new bridge's neighbours: bounded retries.)
    let reached = eventually(Duration::from_secs(6), || from_sandbox() == "reached");
    observe("other-bridge-from-sandbox", dataplane, if reached { "reached" } else { "blocked" }, "reached");
    // Now it is named like a Docker network's bridge.
    ip(&["-n", h, "link", "set", "virbr7", "down"]).unwrap();
    ip(&["-n", h, "link", "set", "virbr7", "name", "br-0123456789ab"]).unwrap();
    ip(&["-n", h, "link", "set", "br-0123456789ab", "up"]).unwrap();
    let followed = eventually(Duration::from_secs(6), || from_sandbox() == "blocked");
    observe("docker-bridge-from-sandbox", dataplane, if followed { "blocked" } else { "reached" }, "blocked");
    observe("sandbox-from-docker-bridge", dataplane, from_ctr(), "blocked");
    // The sandbox still reaches the outside.
    let _out = probe::EchoServer::start(&th.outside.path(), addr("198.51.100.2:6000"), "outside").unwrap();
    let r = d.cli(&["exec", "web", "--", &pr, "tcp", "198.51.100.2:6000", "o"]);
    observe("sandbox-to-outside", dataplane, r.stdout.trim(), "outside:198.51.100.1:o");
    if dataplane == "ebpf" {
        assert!(drops(&d)["isolation"].as_u64().unwrap() >= 2, "{}", drops(&d));
    }
}

/// A tun device in a namespace, served by a thread of this process acting as the network behind
/// it: UDP datagrams to 203.0.113.2:6000 are echoed as `tun:<source address>:<payload>` (what a
/// server behind a VPN sees), every other packet is handed to `rx`; `send` injects a packet as
/// if it arrived through the device.
struct TunPeer {
    fd: std::sync::Arc<std::fs::File>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// An IPv4 + UDP packet, checksums right.
fn udp_packet(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let ulen = 8 + payload.len();
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(ulen as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(ulen as u16).to_be_bytes());
    pseudo.extend_from_slice(&udp);
    let c = match csum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let tot = (20 + ulen) as u16;
    let mut iph = vec![0x45, 0, (tot >> 8) as u8, tot as u8, 0, 1, 0x40, 0, 64, 17, 0, 0];
    iph.extend_from_slice(&src);
    iph.extend_from_slice(&dst);
    let c = csum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    iph.extend_from_slice(&udp);
    iph
}

/// An IPv6 + UDP packet (no extension headers), checksum right.
fn udp6_packet(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let ulen = 8 + payload.len();
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(ulen as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(ulen as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    pseudo.extend_from_slice(&udp);
    let c = match csum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut ip6 = vec![0x60, 0, 0, 0];
    ip6.extend_from_slice(&(ulen as u16).to_be_bytes());
    ip6.extend_from_slice(&[17, 64]);
    ip6.extend_from_slice(&src.octets());
    ip6.extend_from_slice(&dst.octets());
    ip6.extend_from_slice(&udp);
    ip6
}

/// The server behind the tun: `[2001:db8:300::2]:6000` (IPv6) as `203.0.113.2:6000` is for IPv4.
const TUN_SERVER6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x300, 0, 0, 0, 0, 2);

/// `[src]:sport` of an IPv6 UDP packet to `TUN_SERVER6:6000` (no extension headers).
fn to_tun_server6(pk: &[u8]) -> Option<(std::net::Ipv6Addr, u16)> {
    if pk.len() < 48 || pk[0] >> 4 != 6 || pk[6] != 17 || pk[24..40] != TUN_SERVER6.octets() {
        return None;
    }
    if u16::from_be_bytes([pk[42], pk[43]]) != 6000 {
        return None;
    }
    let src: [u8; 16] = pk[8..24].try_into().ok()?;
    Some((src.into(), u16::from_be_bytes([pk[40], pk[41]])))
}

impl TunPeer {
    fn start(ns: &str, name: &str) -> TunPeer {
        use std::{io::Read, os::fd::AsRawFd};
        let name = name.to_string();
        let file = in_netns(ns, move || {
            let f = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").unwrap();
            let mut ifr = [0u8; 40];
            ifr[..name.len()].copy_from_slice(name.as_bytes());
            // IFF_TUN | IFF_NO_PI
            ifr[16..18].copy_from_slice(&0x1001u16.to_ne_bytes());
            // SAFETY: TUNSETIFF with a 40-byte ifreq.
            let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x400454ca, ifr.as_mut_ptr()) };
            assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
            f
        })
        .unwrap();
        let fd = std::sync::Arc::new(file);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (fd2, stop2) = (fd.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let mut pfd = libc::pollfd { fd: fd2.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: poll on one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 200) } <= 0 {
                    continue;
                }
                let Ok(n) = (&*fd2).read(&mut buf) else { break };
                let pk = buf[..n].to_vec();
                let ihl = usize::from(pk[0] & 0x0f) * 4;
                if pk.len() >= ihl + 8 && pk[0] >> 4 == 4 && pk[9] == 17 && pk[16..20] == [203, 0, 113, 2] {
                    let dport = u16::from_be_bytes([pk[ihl + 2], pk[ihl + 3]]);
                    if dport == 6000 {
                        let sport = u16::from_be_bytes([pk[ihl], pk[ihl + 1]]);
                        let src = [pk[12], pk[13], pk[14], pk[15]];
                        let mut msg = format!("tun:{}.{}.{}.{}:", src[0], src[1], src[2], src[3]).into_bytes();
                        msg.extend_from_slice(&pk[ihl + 8..]);
                        let reply = udp_packet([203, 0, 113, 2], src, 6000, sport, &msg);
                        let _ = std::io::Write::write(&mut &*fd2, &reply);
                        continue;
                    }
                }
                if let Some((src, sport)) = to_tun_server6(&pk) {
                    let mut msg = format!("tun:[{src}]:").into_bytes();
                    msg.extend_from_slice(&pk[48..]);
                    let reply = udp6_packet(TUN_SERVER6, src, 6000, sport, &msg);
                    let _ = std::io::Write::write(&mut &*fd2, &reply);
                    continue;
                }
                if tx.send(pk).is_err() {
                    break;
                }
            }
        });
        TunPeer { fd, stop, rx, thread: Some(thread) }
    }

    fn send(&self, pk: &[u8]) {
        std::io::Write::write_all(&mut &*self.fd, pk).unwrap();
    }
}

impl Drop for TunPeer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Send `msg` to `dst` and wait for an answer (4 tries, 700 ms each).
fn udp_exchange(s: &std::net::UdpSocket, dst: std::net::SocketAddr, msg: &str) -> String {
    let _ = s.set_read_timeout(Some(Duration::from_millis(700)));
    let mut buf = [0u8; 2048];
    for _ in 0..4 {
        if s.send_to(msg.as_bytes(), dst).is_err() {
            continue;
        }
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    }
    "timeout".into()
}

/// Item 5, a VPN: the default route goes through a layer-3 device (tun, no Ethernet header).
/// Sandbox traffic leaving through it is masqueraded to its address, and a published port
/// answers a client behind it on that address.
fn layer3_uplink(dataplane: &str) {
    let th = TestHost::new(&format!("fl3{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane]).unwrap();
    let pr = p();
    d.ok(&["run", "-d", "--name", "u1", "-p", "5354:7000/udp", "--", &pr, "serve", "--tag", "u1", "7000"]);
    // The VPN comes up after `netd up`, and takes the default route.
    let tun = TunPeer::start(&th.host.path(), "tunv0");
    ip(&["-n", &th.host.name, "addr", "add", "203.0.113.1/24", "dev", "tunv0"]).unwrap();
    ip(&["-n", &th.host.name, "link", "set", "tunv0", "up"]).unwrap();
    ip(&["-n", &th.host.name, "route", "replace", "default", "dev", "tunv0"]).unwrap();
    let mut seen = String::new();
    eventually(Duration::from_secs(5), || {
        let r = d.cli(&["exec", "u1", "--", &pr, "udp-connect", "203.0.113.2:6000", "vpn"]);
        seen = r.stdout.trim().to_string();
        seen == "tun:203.0.113.1:vpn"
    });
    observe("l3-uplink-masquerade", dataplane, &seen, "tun:203.0.113.1:vpn");
    // A client behind the VPN to the published port on the tun's address.
    let mut answer = String::from("nothing");
    for _ in 0..5 {
        tun.send(&udp_packet([203, 0, 113, 2], [203, 0, 113, 1], 41000, 5354, b"in"));
        let end = Instant::now() + Duration::from_millis(700);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Ok(pk) = tun.rx.recv_timeout(left) else { break };
            let ihl = usize::from(pk[0] & 0x0f) * 4;
            if pk.len() > ihl + 8 && pk[9] == 17 && u16::from_be_bytes([pk[ihl + 2], pk[ihl + 3]]) == 41000 {
                answer = format!(
                    "from {}.{}.{}.{}:{} {}",
                    pk[12],
                    pk[13],
                    pk[14],
                    pk[15],
                    u16::from_be_bytes([pk[ihl], pk[ihl + 1]]),
                    String::from_utf8_lossy(&pk[ihl + 8..])
                );
                break;
            }
        }
        if answer != "nothing" {
            break;
        }
    }
    observe("l3-uplink-published-port", dataplane, &answer, "from 203.0.113.1:5354 u1:203.0.113.2:in");
    // Item 4 through the tun: a sandbox flow and a host flow from one source port to one server
    // behind it, in both orders; each gets its own replies (the later flow gets another source
    // port, as nf_nat does; the uplink's egress program does it for the host's flows).
    let sb = sandbox_ns(&d, "u1");
    let server: std::net::SocketAddr = "203.0.113.2:6000".parse().unwrap();
    let bind =
        |ns: &str, port: u16| in_netns(ns, move || std::net::UdpSocket::bind(("0.0.0.0", port)).unwrap()).unwrap();
    let s1 = bind(&sb, 40000);
    let a = udp_exchange(&s1, server, "sb1");
    let h1 = bind(&th.host.path(), 40000);
    let b = udp_exchange(&h1, server, "host1");
    let c = udp_exchange(&s1, server, "sb2");
    let h2 = bind(&th.host.path(), 41000);
    let e = udp_exchange(&h2, server, "host2");
    let s2 = bind(&sb, 41000);
    let f = udp_exchange(&s2, server, "sb3");
    let g = udp_exchange(&h2, server, "host3");
    observe(
        "l3-uplink-host-and-sandbox-flows-on-one-source-port",
        dataplane,
        &format!("sandbox first: {a} {b} {c}; host first: {e} {f} {g}"),
        "sandbox first: tun:203.0.113.1:sb1 tun:203.0.113.1:host1 tun:203.0.113.1:sb2; \
         host first: tun:203.0.113.1:host2 tun:203.0.113.1:sb3 tun:203.0.113.1:host3",
    );
    if dataplane == "ebpf" {
        let info = d.ok(&["info"]);
        assert!(info.contains("tunv0"), "uplinks listed: {info}");
    }
}

/// The IPv6 twin of `layer3_uplink` (issue 17): through a tun holding the v6 default route,
/// a dual-stack sandbox's flows are masqueraded (NAT66) to the tun's address, a published port
/// answers a client behind it, and a host flow and a sandbox flow from one source port to one
/// server each get their own replies, in both orders (the layer-3 egress program reserves the
/// host's v6 tuples, as `netd_to_netdev`'s IPv6 body does on Ethernet uplinks).
fn layer3_uplink_ipv6(dataplane: &str) {
    let th = TestHost::new(&format!("fl6{}", &dataplane[..1])).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", dataplane, "--ipv6", "--fixed-cidr-v6", "fd00:33::/64"]).unwrap();
    let pr = p();
    d.ok(&["run", "-d", "--name", "u1", "-p", "5354:7000/udp", "--", &pr, "serve", "--tag", "u1", "7000"]);
    let tun = TunPeer::start(&th.host.path(), "tunv6");
    ip(&["-n", &th.host.name, "-6", "addr", "add", "2001:db8:300::1/64", "dev", "tunv6", "nodad"]).unwrap();
    ip(&["-n", &th.host.name, "link", "set", "tunv6", "up"]).unwrap();
    ip(&["-n", &th.host.name, "-6", "route", "replace", "default", "dev", "tunv6"]).unwrap();
    let mut seen = String::new();
    eventually(Duration::from_secs(5), || {
        let r = d.cli(&["exec", "u1", "--", &pr, "udp-connect", "[2001:db8:300::2]:6000", "vpn"]);
        seen = r.stdout.trim().to_string();
        seen == "tun:[2001:db8:300::1]:vpn"
    });
    observe("l3-uplink-masquerade-v6", dataplane, &seen, "tun:[2001:db8:300::1]:vpn");
    // A client behind the VPN to the published port on the tun's v6 address.
    let client: std::net::Ipv6Addr = "2001:db8:300::2".parse().unwrap();
    let host6: std::net::Ipv6Addr = "2001:db8:300::1".parse().unwrap();
    let mut answer = String::from("nothing");
    for _ in 0..5 {
        tun.send(&udp6_packet(client, host6, 41000, 5354, b"in"));
        let end = Instant::now() + Duration::from_millis(700);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Ok(pk) = tun.rx.recv_timeout(left) else { break };
            if pk.len() > 48 && pk[0] >> 4 == 6 && pk[6] == 17 && u16::from_be_bytes([pk[42], pk[43]]) == 41000 {
                let src: [u8; 16] = pk[8..24].try_into().unwrap();
                answer = format!(
                    "from [{}]:{} {}",
                    std::net::Ipv6Addr::from(src),
                    u16::from_be_bytes([pk[40], pk[41]]),
                    String::from_utf8_lossy(&pk[48..])
                );
                break;
            }
        }
        if answer != "nothing" {
            break;
        }
    }
    observe("l3-uplink-published-port-v6", dataplane, &answer, "from [2001:db8:300::1]:5354 u1:[2001:db8:300::2]:in");
    // A sandbox flow and a host flow from one source port to the server behind the tun.
    let sb = sandbox_ns(&d, "u1");
    let server: std::net::SocketAddr = "[2001:db8:300::2]:6000".parse().unwrap();
    let bind = |ns: &str, port: u16| in_netns(ns, move || std::net::UdpSocket::bind(("::", port)).unwrap()).unwrap();
    let s1 = bind(&sb, 40000);
    let a = udp_exchange(&s1, server, "sb1");
    let h1 = bind(&th.host.path(), 40000);
    let b = udp_exchange(&h1, server, "host1");
    let c = udp_exchange(&s1, server, "sb2");
    let h2 = bind(&th.host.path(), 41000);
    let e = udp_exchange(&h2, server, "host2");
    let s2 = bind(&sb, 41000);
    let f = udp_exchange(&s2, server, "sb3");
    let g = udp_exchange(&h2, server, "host3");
    let t = "tun:[2001:db8:300::1]";
    observe(
        "l3-uplink-host-and-sandbox-flows-on-one-source-port-v6",
        dataplane,
        &format!("sandbox first: {a} {b} {c}; host first: {e} {f} {g}"),
        &format!("sandbox first: {t}:sb1 {t}:host1 {t}:sb2; host first: {t}:host2 {t}:sb3 {t}:host3"),
    );
}

macro_rules! both {
    ($f:ident, $e:ident, $i:ident) => {
        #[test]
        fn $e() {
            require_root!();
            $f("ebpf");
        }
        #[test]
        fn $i() {
            require_root!();
            $f("iptables");
        }
    };
}

both!(internal_network_has_no_way_out, ebpf_internal_network_has_no_way_out, iptables_internal_network_has_no_way_out);
both!(ttl_is_decremented_and_checked, ebpf_ttl_is_decremented_and_checked, iptables_ttl_is_decremented_and_checked);
both!(interfaces_are_followed_live, ebpf_interfaces_are_followed_live, iptables_interfaces_are_followed_live);
both!(forged_loopback_from_a_sandbox, ebpf_forged_loopback_from_a_sandbox, iptables_forged_loopback_from_a_sandbox);
both!(
    icc_false_stops_broadcast_and_ipv6,
    ebpf_icc_false_stops_broadcast_and_ipv6,
    iptables_icc_false_stops_broadcast_and_ipv6
);
both!(
    linked_flows_ignore_forward_drop,
    ebpf_linked_flows_ignore_forward_drop,
    iptables_linked_flows_ignore_forward_drop
);
both!(path_mtu_on_established_flows, ebpf_path_mtu_on_established_flows, iptables_path_mtu_on_established_flows);
both!(docker_bridges_are_isolated, ebpf_docker_bridges_are_isolated, iptables_docker_bridges_are_isolated);
both!(layer3_uplink, ebpf_layer3_uplink, iptables_layer3_uplink);
both!(layer3_uplink_ipv6, ebpf_layer3_uplink_ipv6, iptables_layer3_uplink_ipv6);
