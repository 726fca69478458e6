//! Real Docker (Debian's docker.io 20.10, its own containerd) on netd: the `docker` CLI drives
//! netd's remote network driver (`docker network create -d netd`), with real packets between the
//! test's namespaces. One dockerd per dataplane, shared by the scenarios, which run in order
//! inside one #[test] per dataplane; each scenario leaves no container or network behind (checked).
//! `NETD_DOCKER_SCENARIOS=a,b` runs only the named scenarios. `NETD_DOCKER_DRIVER=bridge` runs the
//! scenarios on Docker's own bridge driver instead (netd-only checks skipped): Docker is the spec,
//! so the expectations themselves can be checked against it.
//!
//! See `netd_tests::docker` for how dockerd is confined to the test's namespaces.
use std::{
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use netd_tests::{
    TestDocker, addr,
    docker::{IMAGE, leftovers_of, unavailable},
    probe, require_root,
};

type Scenario = fn(&mut TestDocker, &str);

/// (name, body, runs under both dataplanes). Every scenario but the first drives netd's Docker
/// plugin (`netd up` serves it at the default /run/docker/plugins/netd.sock of the private mount
/// namespace). A scenario that does not depend on the dataplane
/// and costs real time (Docker's plugin retry) runs under one only.
const SCENARIOS: &[(&str, Scenario, bool)] = &[
    ("docker_bridge_in_test_netns", docker_bridge_in_test_netns, true),
    ("network_create_inspect_rm", network_create_inspect_rm, true),
    ("published_ports_every_form", published_ports_every_form, true),
    ("masquerade_seen_outside", masquerade_seen_outside, true),
    ("ipv6_dual_stack", ipv6_dual_stack, true),
    ("icc_and_isolation", icc_and_isolation, true),
    ("isolation_from_dockers_own_bridges", isolation_from_dockers_own_bridges, true),
    ("published_ports_across_networks_via_host_address", published_ports_across_networks_via_host_address, true),
    ("internal_network", internal_network, true),
    ("docker_dns_on_netd_network", docker_dns_on_netd_network, true),
    ("connect_disconnect", connect_disconnect, true),
    ("netd_kill9_under_100_flows", netd_kill9_under_100_flows, true),
    ("dockerd_live_restore", dockerd_live_restore, true),
    ("dockerd_restart_brings_back_restart_always", dockerd_restart_brings_back_restart_always, true),
    ("plugin_retry_when_netd_is_down", plugin_retry_when_netd_is_down, false),
    ("leftovers_after_rm_network_rm_and_down", leftovers_after_rm_network_rm_and_down, true),
];

/// Scenarios that fail today for a known reason in netd (each one's own comment says why); the
/// default run lists them as skipped instead of failing the suite on a gap that is on record.
const KNOWN_GAPS: &[&str] = &[];

fn run_scenarios(dataplane: &str) {
    if let Some(why) = unavailable() {
        if std::env::var_os("NETD_TESTS_ALLOW_NO_DOCKER").is_some() {
            eprintln!("SKIP real-Docker tests: {why}");
            return;
        }
        panic!("{why} (or set NETD_TESTS_ALLOW_NO_DOCKER=1 to skip these tests)");
    }
    let root_before = root_ns_snapshot();
    let t0 = Instant::now();
    let only: Option<Vec<String>> = std::env::var("NETD_DOCKER_SCENARIOS")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect());
    let mut td = TestDocker::start(&format!("dk{}", &dataplane[..1]), &["--dataplane", dataplane], &["--live-restore"])
        .expect("starting netd, containerd and dockerd in the test namespaces");
    eprintln!("[{dataplane}] netd + containerd + dockerd + image ready in {:.1}s", t0.elapsed().as_secs_f64());
    let ids = td.ids();
    let mut failed = Vec::new();
    for (name, body, both) in SCENARIOS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == name)) || (!both && dataplane != "ebpf") {
            continue;
        }
        // A known gap (docs/design-notes.md "Not yet"): it runs only when named in
        // NETD_DOCKER_SCENARIOS.
        if only.is_none() && KNOWN_GAPS.contains(name) {
            eprintln!("[{dataplane}] scenario {name}: SKIPPED (known gap; NETD_DOCKER_SCENARIOS={name} runs it)");
            continue;
        }
        let t = Instant::now();
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| body(&mut td, dataplane)));
        td.ensure_running();
        let left = td.reset();
        let verdict = match (&r, left.is_empty()) {
            (Ok(()), true) => "ok".to_string(),
            (Ok(()), false) => format!("FAILED: left {left:?}"),
            (Err(_), _) => "FAILED".to_string(),
        };
        eprintln!("[{dataplane}] scenario {name}: {verdict} ({:.1}s)", t.elapsed().as_secs_f64());
        if verdict != "ok" {
            failed.push(format!("{name}: {verdict}"));
        }
    }
    let t = Instant::now();
    drop(td);
    eprintln!("[{dataplane}] teardown {:.1}s; total {:.1}s", t.elapsed().as_secs_f64(), t0.elapsed().as_secs_f64());
    let left = leftovers_of(&ids);
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert_eq!(root_ns_snapshot(), root_before, "the machine's root namespace changed");
    assert!(failed.is_empty(), "[{dataplane}] failed scenarios: {failed:#?}");
}

/// What the tests must never change in the machine's root namespaces: links, Docker's iptables
/// chains and the machine's own plugin directory.
fn root_ns_snapshot() -> (Vec<String>, usize, Vec<String>) {
    let links = std::process::Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("").to_string()))
        .filter(|n| n.starts_with("docker") || n.starts_with("br-") || n.starts_with("veth") || n.starts_with("netd"))
        .collect();
    names.sort();
    let rules = std::process::Command::new("iptables-save").output().map(|o| o.stdout).unwrap_or_default();
    let docker_rules = String::from_utf8_lossy(&rules).lines().filter(|l| l.contains("DOCKER")).count();
    let plugins = std::fs::read_dir("/run/docker/plugins")
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    (names, docker_rules, plugins)
}

#[test]
fn docker_scenarios_ebpf() {
    require_root!();
    run_scenarios("ebpf");
}

#[test]
fn docker_scenarios_iptables() {
    require_root!();
    run_scenarios("iptables");
}

/// Retry a probe briefly (a container's server may still be starting).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 10s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The harness itself: a container on Docker's own bridge (docker0, iptables, docker-proxy)
/// inside the test's host namespace, reachable from outside and from another container.
fn docker_bridge_in_test_netns(td: &mut TestDocker, _dp: &str) {
    td.run_d(&["--name", "bweb", "-p", "8080:7000", IMAGE, "netd-probe", "serve", "--tag", "bweb", "7000"]);
    let out = td.th.outside.path();
    let e = eventually("outside -> docker0 published port", || {
        probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"hi").ok()
    });
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("bweb", "198.51.100.2"), "DNAT by Docker's rules, no SNAT");
    let ip = td.ip_of("bweb", "bridge");
    assert!(ip.starts_with("203.0.113."), "docker0 uses --bip: {ip}");
    td.run_d(&["--name", "bcli", IMAGE, "sleep", "600"]);
    let r = td.probe_tcp("bcli", &format!("{ip}:7000"), "icc").expect("container to container on docker0");
    assert!(r.starts_with("bweb:"), "{r}");
    // busybox httpd and wget work in the image.
    td.run_d(&["--name", "bhttp", "-p", "8081:80", IMAGE, "httpd", "-f", "-p", "80", "-h", "/www"]);
    let page = eventually("wget from outside", || {
        let o = td.th.outside.exec(&["curl", "-s", "-m", "3", "http://198.51.100.1:8081/"]).ok()?;
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    });
    assert_eq!(page, "ok\n");
    // dockerd's rules are in the test's host namespace.
    let rules = td.th.host.exec_ok(&["iptables-save", "-t", "nat"]).unwrap();
    assert!(rules.contains("--to-destination") && rules.contains("DOCKER"), "{rules}");
    td.ok(&["rm", "-f", "bweb", "bcli", "bhttp"]);
}

// ---------------------------------------------------------------------------------------------
// Helpers for the netd-driver scenarios.

/// The driver under test: `netd`, or `bridge` to check the scenarios against Docker itself.
fn driver() -> &'static str {
    static D: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    D.get_or_init(|| std::env::var("NETD_DOCKER_DRIVER").unwrap_or_else(|_| "netd".into()))
}

fn on_netd() -> bool {
    driver() == "netd"
}

/// Subnets of the test host namespace (docker0 is 203.0.113.0/26, Docker's default pool
/// 203.0.113.128/25 in /28s).
const NET_A: &str = "203.0.113.64/28";
const NET_B: &str = "203.0.113.80/28";
const NET_C: &str = "203.0.113.96/28";
const NET_D: &str = "203.0.113.112/28";

/// `docker network create -d netd --subnet SUBNET [EXTRA...] NAME`: the network id.
fn netd_network(td: &TestDocker, name: &str, subnet: &str, extra: &[&str]) -> String {
    let mut a = vec!["network", "create", "-d", driver(), "--subnet", subnet];
    a.extend_from_slice(extra);
    a.push(name);
    td.ok(&a).trim().to_string()
}

/// A probe server container: `netd-probe serve --tag NAME PORTS...` with `ARGS` before the image.
fn server(td: &TestDocker, name: &str, args: &[&str], ports: &[&str]) -> String {
    let mut a = vec!["--name", name];
    a.extend_from_slice(args);
    a.extend_from_slice(&[IMAGE, "netd-probe", "serve", "--tag", name]);
    a.extend_from_slice(ports);
    td.run_d(&a)
}

/// An idle client container.
fn client(td: &TestDocker, name: &str, args: &[&str]) -> String {
    let mut a = vec!["--name", name];
    a.extend_from_slice(args);
    a.extend_from_slice(&[IMAGE, "sleep", "3600"]);
    td.run_d(&a)
}

/// TCP echo from a container, retried while the server starts: the reply's tag.
fn tcp_from(td: &TestDocker, ctr: &str, target: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        if let Some(r) = td.probe_tcp(ctr, target, "x") {
            return Some(r);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A TCP connection from a container that must NOT succeed (one 2 s try).
fn tcp_blocked(td: &TestDocker, ctr: &str, target: &str) -> bool {
    td.exec(ctr, &["timeout", "2", "netd-probe", "tcp", target, "x"]).code != 0
}

/// Every (container, target) pair must be blocked; checked in parallel (each waits its 2 s).
fn all_blocked(td: &TestDocker, pairs: &[(&str, &String)], why: &str) {
    let reached: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = pairs
            .iter()
            .map(|(from, to)| {
                s.spawn(move || (!tcp_blocked(td, from, &format!("{to}:7000"))).then(|| format!("{from} -> {to}")))
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    assert!(reached.is_empty(), "{why}: {reached:?}");
}

/// TCP echo from a namespace of the test, retried while the server starts: (tag, peer).
fn echo_ns(ns: &str, target: &str) -> Option<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        if let Ok(e) = probe::tcp_echo(ns, addr(target), b"x") {
            return Some((e.tag, e.peer));
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn host_links(td: &TestDocker) -> Vec<String> {
    let out = td.th.host.exec_ok(&["ip", "-o", "link"]).unwrap();
    out.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap_or(n).to_string()).collect()
}

/// Host-side veths in the test host namespace that are enslaved to `bridge`.
fn veths_on(td: &TestDocker, bridge: &str) -> usize {
    let out = td.th.host.exec_ok(&["ip", "-o", "link", "show", "master", bridge]).unwrap_or_default();
    out.lines().count()
}

/// The bridge netd made for a Docker network: the link holding the network's gateway address.
fn bridge_with(td: &TestDocker, gateway: &str) -> Option<String> {
    let out = td.th.host.exec_ok(&["ip", "-o", "-4", "addr"]).unwrap();
    out.lines()
        .find(|l| l.contains(&format!(" {gateway}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
}

/// `netd port TARGET`: the lines (Docker's format, `7000/tcp -> 0.0.0.0:8080`).
fn netd_port(td: &TestDocker, target: &str) -> Vec<String> {
    let out = if on_netd() { td.netd.ok(&["port", target]) } else { td.ok(&["port", target]) };
    out.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
}

/// The host port `netd port` shows for `cport` (e.g. "7002/tcp") bound to `host_ip`.
fn host_port_of(lines: &[String], cport: &str, host_ip: &str) -> u16 {
    lines
        .iter()
        .find_map(|l| {
            let (c, h) = l.split_once(" -> ")?;
            (c == cport && h.rsplit_once(':')?.0 == host_ip).then(|| h.rsplit_once(':').unwrap().1.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {cport} -> {host_ip}:* in {lines:?}"))
}

/// Entries of a pinned eBPF map of netd (the pins live in the private mount namespace).
fn map_len(td: &TestDocker, map: &str) -> usize {
    let path = td.netd.bpffs.join("maps").join(map).display().to_string();
    let out = td.in_mnt(&["bpftool", "-j", "map", "dump", "pinned", &path]).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    v.as_array().map_or(0, Vec::len)
}

/// DNAT rules in the test host namespace's nat table (iptables dataplane and Docker's docker0).
fn dnat_rules(td: &TestDocker) -> Vec<String> {
    let rules = td.th.host.exec_ok(&["iptables-save", "-t", "nat"]).unwrap();
    rules.lines().filter(|l| l.contains("-j DNAT")).map(str::to_string).collect()
}

/// A process (netd-probe ARGS) in a namespace of the test, killed on drop.
struct NsProcess(std::process::Child);
impl NsProcess {
    fn start(ns: &netd_tests::Netns, args: &[&str]) -> Self {
        let pr = netd_tests::probe_path();
        let mut argv = vec![pr.as_str()];
        argv.extend_from_slice(args);
        let c = ns
            .cmd(&argv)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawning netd-probe");
        std::thread::sleep(Duration::from_millis(200));
        Self(c)
    }
}
impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios on netd's Docker network driver.

/// `docker network create -d netd` with the bridge driver's options, inspect, a container that
/// gets `--ip`/`--mac-address`/MTU from them, rm; a bad option changes nothing.
fn network_create_inspect_rm(td: &mut TestDocker, _dp: &str) {
    let id = netd_network(
        td,
        "opts",
        NET_A,
        &[
            "--gateway",
            "203.0.113.65",
            "--ip-range",
            "203.0.113.72/29",
            "--aux-address",
            "reserved=203.0.113.66",
            "-o",
            "com.docker.network.bridge.name=ndopts0",
            "-o",
            "com.docker.network.bridge.enable_icc=true",
            "-o",
            "com.docker.network.bridge.enable_ip_masquerade=true",
            "-o",
            "com.docker.network.bridge.host_binding_ipv4=0.0.0.0",
            "-o",
            "com.docker.network.driver.mtu=1400",
        ],
    );
    let v = td.inspect(&["network", "inspect", "opts"]);
    assert_eq!(v["Driver"], driver(), "{v}");
    assert_eq!(v["Scope"], "local", "{v}");
    assert_eq!(v["Id"], id.as_str());
    let ipam = &v["IPAM"]["Config"][0];
    assert_eq!((ipam["Subnet"].as_str(), ipam["Gateway"].as_str()), (Some(NET_A), Some("203.0.113.65")), "{v}");
    assert_eq!(ipam["IPRange"], "203.0.113.72/29", "{v}");
    assert_eq!(v["Options"]["com.docker.network.driver.mtu"], "1400", "{v}");
    // netd built the bridge: the name, the gateway address, the MTU.
    let link = td.th.host.exec_ok(&["ip", "-o", "addr", "show", "ndopts0"]).expect("bridge ndopts0");
    assert!(link.contains("203.0.113.65/28"), "{link}");
    // netd lists Docker's network by its id (and the bridge name).
    if on_netd() {
        let ls = td.netd.ok(&["network", "ls"]);
        assert!(ls.contains(&id[..12]), "netd network ls lacks {id}: {ls}");
        let ni = td.netd.ok(&["network", "inspect", &id]);
        assert!(ni.contains("ndopts0") && ni.contains("203.0.113.65"), "{ni}");
    }
    // A container: address from the --ip-range, --ip and --mac-address honoured, MTU, route.
    client(td, "o1", &["--network", "opts"]);
    let ip1 = td.ip_of("o1", "opts");
    let last: u8 = ip1.rsplit('.').next().unwrap().parse().unwrap();
    assert!((72..80).contains(&last), "address {ip1} outside --ip-range 203.0.113.72/29");
    client(td, "o2", &["--network", "opts", "--ip", "203.0.113.70", "--mac-address", "02:42:aa:bb:cc:dd"]);
    let eth0 = td.exec("o2", &["ip", "-o", "addr", "show", "eth0"]).stdout;
    assert!(eth0.contains("203.0.113.70/28"), "{eth0}");
    let l = td.exec("o2", &["ip", "-o", "link", "show", "eth0"]).stdout;
    assert!(l.contains("02:42:aa:bb:cc:dd") && l.contains("mtu 1400"), "{l}");
    let r = td.exec("o2", &["ip", "route"]).stdout;
    assert!(r.contains("default via 203.0.113.65"), "{r}");
    assert_eq!(veths_on(td, "ndopts0"), 2, "one host-side veth per container on the bridge");
    let l = td.th.host.exec_ok(&["ip", "-o", "link", "show", "ndopts0"]).unwrap();
    assert!(l.contains("mtu 1400"), "{l}");
    let ip2 = td.ip_of("o2", "opts");
    assert!(tcp_blocked(td, "o1", &format!("{ip2}:7000")), "nothing listens: refused or dropped");
    td.ok(&["rm", "-f", "o1", "o2"]);
    td.ok(&["network", "rm", "opts"]);
    assert!(!host_links(td).contains(&"ndopts0".to_string()), "bridge left after network rm");
    assert!(!on_netd() || !td.netd.ok(&["network", "ls"]).contains(&id[..12]), "netd still lists the removed network");

    // Without --subnet: Docker's IPAM picks from its pool, netd puts the gateway on a bridge.
    td.ok(&["network", "create", "-d", driver(), "auto"]);
    let v = td.inspect(&["network", "inspect", "auto"]);
    let gw = v["IPAM"]["Config"][0]["Gateway"].as_str().unwrap().to_string();
    assert!(gw.starts_with("203.0.113."), "default pool: {v}");
    assert!(bridge_with(td, &gw).is_some(), "no bridge holds the gateway {gw}");
    td.ok(&["network", "rm", "auto"]);
    assert!(bridge_with(td, &gw).is_none(), "bridge with {gw} left after rm");

    // A bad option: Docker reports netd's error; no network, no bridge.
    let before = host_links(td);
    let r = td.cli(&["network", "create", "-d", driver(), "-o", "com.docker.network.driver.mtu=abc", "bad"]);
    assert_ne!(r.code, 0, "bad mtu accepted: {r:?}");
    assert!(r.stderr.to_lowercase().contains("mtu"), "error names the option: {}", r.stderr);
    assert!(td.cli(&["network", "inspect", "bad"]).code != 0, "network exists after a failed create");
    assert_eq!(host_links(td), before, "a failed create left links");
}

/// `docker run` with every `-p` form on a netd network: from outside, the host's loopback and
/// address, hairpin; `docker port` shows nothing (remote driver), `netd port` shows all.
fn published_ports_every_form(td: &mut TestDocker, dp: &str) {
    netd_network(td, "pub", NET_B, &[]);
    server(
        td,
        "web",
        &[
            "--network",
            "pub",
            "-p",
            "8080:7000",
            "-p",
            "5353:7000/udp",
            "-p",
            "127.0.0.1:8443:7000",
            "-p",
            "9000-9001:7000-7001",
            "-p",
            "198.51.100.1:8082:7000",
            "-p",
            "198.51.100.1::7001",
            "-p",
            "7002",
            "-P",
            "--expose",
            "7003",
        ],
        &["7000", "7001", "7002", "7003"],
    );
    let out = td.th.outside.path();
    let (tag, peer) = echo_ns(&out, "198.51.100.1:8080").expect("HPORT:CPORT from outside");
    assert_eq!((tag.as_str(), peer.as_str()), ("web", "198.51.100.2"), "DNAT keeps the client's address");
    let e = probe::udp_echo(&out, addr("198.51.100.1:5353"), b"u").expect("udp from outside");
    assert_eq!(e.tag, "web");
    assert_eq!(echo_ns(&out, "198.51.100.1:9001").map(|x| x.0).as_deref(), Some("web"), "range 9001->7001");
    assert_eq!(echo_ns(&out, "198.51.100.1:8082").map(|x| x.0).as_deref(), Some("web"), "IP:HPORT:CPORT");
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:8443"), b"x").is_err(), "127.0.0.1-bound port from outside");
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:7000"), b"x").is_err(), "unpublished port answered");
    // The container is IPv4-only; a binding without a host address is published on `[::]` too
    // (Docker 20.10+ on a host with IPv6): v6 clients reach it through the userland proxy
    // (iptables) or NAT46 in the programs (eBPF), the container seeing its gateway as the peer
    // either way. Explicit v4 host addresses get no twin.
    if on_netd() {
        let (tag, peer) = echo_ns(&out, "[2001:db8:100::1]:8080").expect("[::]:8080 from a v6 client");
        assert_eq!((tag.as_str(), peer.as_str()), ("web", "203.0.113.81"), "v6 client -> v4-only container");
        let e = probe::udp_echo(&out, addr("[2001:db8:100::1]:5353"), b"u6").expect("udp [::]:5353 from a v6 client");
        assert_eq!(e.tag, "web");
        assert_eq!(echo_ns(&out, "[2001:db8:100::1]:9001").map(|x| x.0).as_deref(), Some("web"), "range over v6");
        assert!(probe::tcp_echo(&out, addr("[2001:db8:100::1]:8082"), b"x").is_err(), "198.51.100.1 binding over v6");
        assert!(probe::tcp_echo(&out, addr("[2001:db8:100::1]:8443"), b"x").is_err(), "127.0.0.1 binding over v6");
        let host = td.th.host.path();
        assert_eq!(echo_ns(&host, "[::1]:8080").map(|x| x.0).as_deref(), Some("web"), "[::1]:8080 from the host");
    }
    // Docker cannot show a remote driver's ports; netd can (by endpoint address).
    let ip = td.ip_of("web", "pub");
    let lines = if on_netd() {
        assert_eq!(td.ok(&["port", "web"]).trim(), "", "docker port shows nothing for a remote driver");
        netd_port(td, &ip)
    } else {
        netd_port(td, "web")
    };
    assert!(lines.iter().any(|l| l == "7000/tcp -> 0.0.0.0:8080"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "7000/udp -> 0.0.0.0:5353"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "7000/tcp -> 127.0.0.1:8443"), "{lines:?}");
    if on_netd() {
        for l in ["7000/tcp -> [::]:8080", "7000/udp -> [::]:5353"] {
            assert!(lines.iter().any(|x| x == l), "{l} missing: {lines:?}");
        }
        assert!(!lines.iter().any(|l| l.ends_with("[::]:8443") || l.ends_with("[::]:8082")), "{lines:?}");
    }
    let eph_ip = host_port_of(&lines, "7001/tcp", "198.51.100.1");
    let eph = host_port_of(&lines, "7002/tcp", "0.0.0.0");
    let exposed = host_port_of(&lines, "7003/tcp", "0.0.0.0");
    for p in [eph_ip, eph, exposed] {
        let t = format!("198.51.100.1:{p}");
        assert_eq!(echo_ns(&out, &t).map(|x| x.0).as_deref(), Some("web"), "ephemeral {t} from outside");
    }
    // From the host itself: loopback and its own address, no proxy process.
    let host = td.th.host.path();
    for a in ["127.0.0.1:8080", "198.51.100.1:8080", "127.0.0.1:8443"] {
        assert_eq!(echo_ns(&host, a).map(|x| x.0).as_deref(), Some("web"), "{a} from the host");
    }
    // Hairpin: another container and the server itself, through the host's address.
    client(td, "cli", &["--network", "pub"]);
    assert!(tcp_from(td, "cli", "198.51.100.1:8080").is_some_and(|r| r.starts_with("web:")), "hairpin");
    assert!(tcp_from(td, "web", "198.51.100.1:8080").is_some_and(|r| r.starts_with("web:")), "hairpin to itself");
    // A taken host port: Docker's message.
    let r =
        td.cli(&["run", "-d", "--init", "--name", "dup", "--network", "pub", "-p", "8080:7000", IMAGE, "sleep", "60"]);
    assert_ne!(r.code, 0, "second binding of 8080 accepted");
    assert!(r.stderr.contains("port is already allocated"), "{}", r.stderr);
    let _ = td.cli(&["rm", "-f", "dup"]);
    // Bindings are in netd's dataplane.
    if !on_netd() {
    } else if dp == "ebpf" {
        assert!(map_len(td, "PUBLISHED_V4") >= 8, "published-port map");
    } else {
        assert!(dnat_rules(td).iter().any(|l| l.contains(&format!("{ip}:7000"))), "{:?}", dnat_rules(td));
    }
    td.ok(&["rm", "-f", "web", "cli"]);
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"x").is_err(), "port open after rm -f");
    td.ok(&["network", "rm", "pub"]);
}

/// Masquerade: an outside server sees the host's address; with enable_ip_masquerade=false it
/// sees the container's.
fn masquerade_seen_outside(td: &mut TestDocker, _dp: &str) {
    let out_ns = td.th.outside.path();
    let _srv = probe::EchoServer::start(&out_ns, addr("198.51.100.2:6000"), "outside").unwrap();
    netd_network(td, "masq", NET_A, &[]);
    // nat-unprotected as well: in nat mode Docker's (28+) direct-access drop would eat the replies.
    let nomasq = [
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "-o",
        "com.docker.network.bridge.gateway_mode_ipv4=nat-unprotected",
    ];
    netd_network(td, "nomasq", NET_B, &nomasq);
    client(td, "m1", &["--network", "masq"]);
    client(td, "m2", &["--network", "nomasq"]);
    let r = tcp_from(td, "m1", "198.51.100.2:6000").expect("m1 -> outside");
    assert!(r.starts_with("outside:198.51.100.1:"), "masqueraded to the uplink address: {r}");
    // The outside needs a route back to the unmasqueraded subnet.
    netd_tests::ip(&["-n", &td.th.outside.name, "route", "add", NET_B, "via", "198.51.100.1"]).unwrap();
    let ip2 = td.ip_of("m2", "nomasq");
    let r = tcp_from(td, "m2", "198.51.100.2:6000");
    let _ = netd_tests::ip(&["-n", &td.th.outside.name, "route", "del", NET_B]);
    let r = r.expect("m2 -> outside");
    assert!(r.starts_with(&format!("outside:{ip2}:")), "no masquerade: {r}");
    // ICMP too.
    assert_eq!(td.exec("m1", &["ping", "-c", "1", "-W", "2", "198.51.100.2"]).code, 0, "ping outside");
    td.ok(&["rm", "-f", "m1", "m2"]);
    td.ok(&["network", "rm", "masq", "nomasq"]);
}

/// `docker network create --ipv6 -d netd --subnet V4 --subnet V6`: Docker's IPAM gives netd the
/// v6 pool and gateway (`IPv6Data`, on the bridge) and each endpoint its v6 address
/// (`AddressIPv6`); Join's `GatewayIPv6` is the container's default v6 route. Over IPv6, with real
/// packets: container to container, a `-p` port from outside (`[::]` binding, no SNAT) and from
/// the host's `::1`, NAT66 masquerade seen by an outside server; v4 keeps working alongside.
/// NETD_DOCKER_DRIVER=bridge gives the same answers once dockerd (20.10) runs with `--ipv6
/// --fixed-cidr-v6 P --experimental --ip6tables` (without them, no v6 NAT or forwarding); only
/// `docker port` differs (20.10 prints `:::8086`, netd `[::]:8086` as Docker 27+).
fn ipv6_dual_stack(td: &mut TestDocker, _dp: &str) {
    const V6: &str = "fd00:d0c:1::/64";
    // Docker's own bridge driver (20.10) does IPv6 NAT and filtering only with these daemon flags
    // (ip6tables is experimental there); netd's driver needs none of them.
    let before = td.dockerd_args();
    if !on_netd() {
        let mut a: Vec<&str> = before.iter().map(String::as_str).collect();
        a.extend(["--ipv6", "--fixed-cidr-v6", "fd00:d0c:ff::/64", "--experimental", "--ip6tables"]);
        td.restart_dockerd_with(&a).expect("dockerd with --ipv6 --ip6tables");
    }
    let out = td.th.outside.path();
    let _srv = probe::EchoServer::start(&out, addr("[2001:db8:100::2]:6000"), "outside").unwrap();
    // A dataplane without IPv6 refuses the network with a clear error and creates nothing.
    // Only the v6 subnet, as users type it: Docker's IPAM takes the v4 pool from its default
    // pools (20.10 has no --ipv4=false, so every network has IPv4).
    let r = td.cli(&["network", "create", "-d", driver(), "--ipv6", "--subnet", V6, "v6n"]);
    if on_netd() && r.code != 0 && r.stderr.contains("IPv6 networks are not supported by the") {
        assert!(td.cli(&["network", "inspect", "v6n"]).code != 0, "network exists after a refused create");
        assert!(bridge_with(td, "203.0.113.65").is_none(), "a bridge was left by a refused create");
        eprintln!("  ipv6_dual_stack: the dataplane has no IPv6 yet ({}): refusal checked only", r.stderr.trim());
        return;
    }
    assert_eq!(r.code, 0, "network create --ipv6: {r:?}\n{}", netd_tests::daemon::tail(&td.netd.log(), 20));
    let v = td.inspect(&["network", "inspect", "v6n"]);
    assert_eq!(v["EnableIPv6"], true, "{v}");
    let cfg = v["IPAM"]["Config"].as_array().cloned().unwrap_or_default();
    let c6 = cfg.iter().find(|c| c["Subnet"] == V6).unwrap_or_else(|| panic!("no {V6} in {v}"));
    let gw6 = c6["Gateway"].as_str().unwrap_or("fd00:d0c:1::1").to_string();
    assert_eq!(gw6, "fd00:d0c:1::1", "Docker's IPAM gateway: the first address");
    let c4 = cfg.iter().find(|c| c["Subnet"] != V6).unwrap_or_else(|| panic!("no v4 pool in {v}"));
    let sub4 = c4["Subnet"].as_str().unwrap_or("").to_string();
    assert!(sub4.starts_with("203.0.113.1") || sub4.starts_with("203.0.113.2"), "v4 from the default pool: {v}");
    // The bridge holds both gateways.
    let a6 = td.th.host.exec_ok(&["ip", "-o", "-6", "addr"]).unwrap();
    assert!(a6.contains(&format!("{gw6}/64")), "no bridge holds {gw6}: {a6}");
    server(td, "w6", &["--network", "v6n", "-p", "8086:7000", "-p", "8087:7000/udp"], &["7000"]);
    client(td, "c6", &["--network", "v6n"]);
    let w = td.inspect(&["w6"]);
    let ip6 = w["NetworkSettings"]["Networks"]["v6n"]["GlobalIPv6Address"].as_str().unwrap_or("").to_string();
    assert!(ip6.starts_with("fd00:d0c:1::"), "v6 address from Docker's IPAM: {w}");
    assert_eq!(w["NetworkSettings"]["Networks"]["v6n"]["IPv6Gateway"], gw6.as_str(), "{w}");
    let ip4 = td.ip_of("w6", "v6n");
    assert!(ip4.starts_with(&sub4[..sub4.rfind('.').unwrap_or(0)]), "v4 address {ip4} in {sub4}");
    let eth0 = td.exec("c6", &["ip", "-o", "-6", "addr", "show", "eth0"]).stdout;
    assert!(eth0.contains("fd00:d0c:1::") && eth0.contains("/64"), "{eth0}");
    let r6 = td.exec("c6", &["ip", "-6", "route"]).stdout;
    assert!(r6.contains(&format!("default via {gw6}")), "default v6 route via the gateway: {r6}");
    // Container to container over IPv6.
    let r = tcp_from(td, "c6", &format!("[{ip6}]:7000")).expect("c6 -> [w6]:7000");
    assert!(r.starts_with("w6:"), "{r}");
    // The published port over IPv6 from outside: DNAT to the v6 address keeps the client's.
    let (tag, peer) = echo_ns(&out, "[2001:db8:100::1]:8086").expect("[host v6]:8086 from outside");
    assert_eq!(tag, "w6");
    assert_eq!(peer, "2001:db8:100::2", "DNAT keeps the v6 client's address");
    let e = probe::udp_echo(&out, addr("[2001:db8:100::1]:8087"), b"u6").expect("v6 udp from outside");
    assert_eq!(e.tag, "w6");
    let (tag, _) = echo_ns(&out, "198.51.100.1:8086").expect("v4 still published");
    assert_eq!(tag, "w6");
    // From the host's `::1` (Docker's proxy; netd's eBPF dataplane: the connect6 hook).
    let host = td.th.host.path();
    assert_eq!(echo_ns(&host, "[::1]:8086").map(|x| x.0).as_deref(), Some("w6"), "[::1]:8086 from the host");
    if on_netd() {
        let ip = td.ip_of("w6", "v6n");
        let lines = netd_port(td, &ip);
        for l in ["7000/tcp -> 0.0.0.0:8086", "7000/tcp -> [::]:8086", "7000/udp -> [::]:8087"] {
            assert!(lines.iter().any(|x| x == l), "{l} missing: {lines:?}");
        }
    }
    // Masquerade over IPv6 (NAT66 to the uplink's v6 address), and ICMPv6.
    let r = tcp_from(td, "c6", "[2001:db8:100::2]:6000").expect("c6 -> outside over v6");
    assert!(r.starts_with("outside:[2001:db8:100::1]:"), "masqueraded to the uplink's v6 address: {r}");
    assert_eq!(td.exec("c6", &["ping", "-6", "-c", "1", "-W", "2", "2001:db8:100::2"]).code, 0, "ping6 outside");
    // IPv6 stays on for the container's interface of a v6 network.
    let off = td.exec("c6", &["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"]).stdout;
    assert_eq!(off.trim(), "0", "IPv6 off on a v6 network's interface");
    td.ok(&["rm", "-f", "w6", "c6"]);
    assert!(probe::tcp_echo(&out, addr("[2001:db8:100::1]:8086"), b"x").is_err(), "v6 port open after rm -f");
    td.ok(&["network", "rm", "v6n"]);
    let a6 = td.th.host.exec_ok(&["ip", "-o", "-6", "addr"]).unwrap();
    assert!(!a6.contains(&format!("{gw6}/64")), "v6 gateway left after network rm: {a6}");
    if !on_netd() {
        let a: Vec<&str> = before.iter().map(String::as_str).collect();
        td.restart_dockerd_with(&a).expect("dockerd with its usual flags");
    }
}

/// ICC within a network, enable_icc=false (names still resolve), isolation between two netd
/// networks both ways; each still reaches the outside.
fn icc_and_isolation(td: &mut TestDocker, _dp: &str) {
    netd_network(td, "n1", NET_A, &[]);
    netd_network(td, "n2", NET_B, &["-o", "com.docker.network.bridge.enable_icc=false"]);
    server(td, "cta", &["--network", "n1"], &["7000"]);
    server(td, "ctb", &["--network", "n1"], &["7000"]);
    server(td, "ctc", &["--network", "n2"], &["7000"]);
    server(td, "ctd", &["--network", "n2"], &["7000"]);
    let (a, c) = (td.ip_of("cta", "n1"), td.ip_of("ctc", "n2"));
    assert!(tcp_from(td, "ctb", &format!("{a}:7000")).is_some_and(|r| r.starts_with("cta:")), "ICC on n1");
    assert!(tcp_from(td, "ctb", "cta:7000").is_some_and(|r| r.starts_with("cta:")), "by name on n1");
    let ns = td.exec("ctd", &["nslookup", "ctc"]).stdout;
    assert!(ns.contains(&c), "names still resolve under icc=false: {ns}");
    // IPv4-only networks: no IPv6 on the container's interface (Docker 20.10 turns it off in
    // every container namespace, whatever the driver; netd, on the host-side veth).
    let v6 = td.exec("cta", &["sh", "-c", "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6; ip -6 addr"]).stdout;
    assert_eq!(v6.trim(), "1", "IPv6 on a container of an IPv4-only network: {v6}");
    all_blocked(td, &[("ctd", &c), ("cta", &c), ("ctc", &a), ("ctb", &c)], "icc=false on n2; n1 and n2 isolated");
    let _srv = probe::EchoServer::start(&td.th.outside.path(), addr("198.51.100.2:6000"), "outside").unwrap();
    for ctr in ["cta", "ctc"] {
        assert!(tcp_from(td, ctr, "198.51.100.2:6000").is_some(), "{ctr} -> outside");
    }
    td.ok(&["rm", "-f", "cta", "ctb", "ctc", "ctd"]);
    td.ok(&["network", "rm", "n1", "n2"]);
}

/// netd networks and Docker's own bridge networks (docker0 and a `-d bridge` network) must not
/// reach each other, either way, while each still reaches the outside.
fn isolation_from_dockers_own_bridges(td: &mut TestDocker, _dp: &str) {
    netd_network(td, "n1", NET_A, &[]);
    netd_network(td, "n2", NET_B, &["-o", "com.docker.network.bridge.enable_icc=false"]);
    td.ok(&["network", "create", "-d", "bridge", "dbr"]);
    server(td, "cta", &["--network", "n1"], &["7000"]);
    server(td, "ctd", &["--network", "n2"], &["7000"]);
    server(td, "ctz", &[], &["7000"]); // docker0
    server(td, "cty", &["--network", "dbr"], &["7000"]);
    let (a, d, z, y) =
        (td.ip_of("cta", "n1"), td.ip_of("ctd", "n2"), td.ip_of("ctz", "bridge"), td.ip_of("cty", "dbr"));
    let pairs =
        [("cta", &z), ("ctz", &a), ("cta", &y), ("cty", &a), ("ctd", &z), ("ctz", &d), ("ctd", &y), ("cty", &d)];
    all_blocked(td, &pairs, "netd networks and Docker's bridge networks must be isolated");
    let _srv = probe::EchoServer::start(&td.th.outside.path(), addr("198.51.100.2:6000"), "outside").unwrap();
    for ctr in ["cta", "ctz", "cty"] {
        assert!(tcp_from(td, ctr, "198.51.100.2:6000").is_some(), "{ctr} -> outside");
    }
    td.ok(&["rm", "-f", "cta", "ctd", "ctz", "cty"]);
    td.ok(&["network", "rm", "n1", "n2", "dbr"]);
}

/// A container reaching a port that a container on ANOTHER network published, through the
/// host's address (198.51.100.1:HPORT): netd networks, docker0 and a Docker `-d bridge` network,
/// every direction. Docker is the reference: the same check between its own two bridge networks
/// (docker0 -> a port published on `dbr`), whose answer every netd pair must give too. With
/// `NETD_DOCKER_DRIVER=bridge` every pair is Docker's own, which pins the reference itself.
fn published_ports_across_networks_via_host_address(td: &mut TestDocker, _dp: &str) {
    netd_network(td, "n1", NET_A, &[]);
    netd_network(td, "n2", NET_B, &[]);
    td.ok(&["network", "create", "-d", "bridge", "dbr"]);
    server(td, "pa", &["--network", "n1", "-p", "8090:7000"], &["7000"]);
    server(td, "py", &["--network", "dbr", "-p", "8091:7000"], &["7000"]);
    client(td, "cb", &["--network", "n2"]);
    client(td, "cz", &[]); // docker0
    // Each published port answers from outside first, so "blocked" below is not "not ready".
    let out = td.th.outside.path();
    for (port, tag) in [("8090", "pa"), ("8091", "py")] {
        let (t, _) = echo_ns(&out, &format!("198.51.100.1:{port}")).unwrap_or_else(|| panic!("outside -> {port}"));
        assert_eq!(t, tag);
    }
    // What each client observes: "reached" or "blocked".
    let observe = |from: &str, port: &str| -> &'static str {
        let r = td.exec(from, &["timeout", "3", "netd-probe", "tcp", &format!("198.51.100.1:{port}"), "x"]);
        if r.code == 0 { "reached" } else { "blocked" }
    };
    let reference = observe("cz", "8091"); // Docker's bridge -> a port Docker published on dbr
    let pairs = [("cz", "8090"), ("py", "8090"), ("cb", "8090"), ("pa", "8091"), ("cb", "8091")];
    let got: Vec<(String, &str)> = pairs.iter().map(|(f, p)| (format!("{f} -> :{p}"), observe(f, p))).collect();
    eprintln!("[{}] via the host address, Docker's own docker0 -> dbr: {reference}; {got:?}", driver());
    for (what, o) in &got {
        assert_eq!(*o, reference, "{what} via the host address: {o}, Docker's bridge gives {reference}");
    }
    // The sandbox's own published port through the host address (hairpin) always works.
    assert!(tcp_from(td, "pa", "198.51.100.1:8090").is_some(), "pa -> its own published port");
    td.ok(&["rm", "-f", "pa", "py", "cb", "cz"]);
    td.ok(&["network", "rm", "n1", "n2", "dbr"]);
}

/// `--internal`: no default route, no way out, published ports not reachable; the containers
/// still reach each other.
fn internal_network(td: &mut TestDocker, _dp: &str) {
    let _srv = probe::EchoServer::start(&td.th.outside.path(), addr("198.51.100.2:6000"), "outside").unwrap();
    netd_network(td, "int", NET_C, &["--internal"]);
    server(td, "i1", &["--network", "int", "-p", "8085:7000"], &["7000"]);
    client(td, "i2", &["--network", "int"]);
    assert!(tcp_from(td, "i2", "i1:7000").is_some_and(|r| r.starts_with("i1:")), "inside the internal network");
    assert!(tcp_blocked(td, "i2", "198.51.100.2:6000"), "internal container reached outside");
    assert!(tcp_blocked(td, "i2", "198.51.100.1:8085"), "internal container reached the host address");
    assert!(probe::tcp_echo(&td.th.outside.path(), addr("198.51.100.1:8085"), b"x").is_err(), "published on internal");
    td.ok(&["rm", "-f", "i1", "i2"]);
    td.ok(&["network", "rm", "int"]);
}

/// Docker's embedded DNS on a netd network: container names, 127.0.0.11 in resolv.conf, own
/// address in /etc/hosts, and external names forwarded (through netd's NAT) to `--dns`.
fn docker_dns_on_netd_network(td: &mut TestDocker, _dp: &str) {
    let _dns = NsProcess::start(&td.th.outside, &["dns-serve", "53", "ext.test=198.51.100.2"]);
    netd_network(td, "dnsnet", NET_A, &[]);
    server(td, "web", &["--network", "dnsnet", "--network-alias", "www"], &["7000"]);
    client(td, "cli", &["--network", "dnsnet"]);
    let web_ip = td.ip_of("web", "dnsnet");
    let rc = td.exec("cli", &["cat", "/etc/resolv.conf"]).stdout;
    assert!(rc.contains("nameserver 127.0.0.11"), "{rc}");
    let hosts = td.exec("web", &["cat", "/etc/hosts"]).stdout;
    assert!(hosts.contains(&web_ip), "{hosts}");
    for name in ["web", "www"] {
        let ns = td.exec("cli", &["nslookup", name]).stdout;
        assert!(ns.contains(&web_ip), "{name}: {ns}");
    }
    assert!(tcp_from(td, "cli", "web:7000").is_some_and(|r| r.starts_with("web:")), "connect by name");
    let ns = td.exec("cli", &["nslookup", "ext.test"]);
    assert!(ns.stdout.contains("198.51.100.2"), "external name through Docker's DNS and netd: {ns:?}");
    td.ok(&["rm", "-f", "web", "cli"]);
    td.ok(&["network", "rm", "dnsnet"]);
}

/// `docker network connect/disconnect` a second netd network: an interface (and host veth)
/// appears and goes, with reachability following it.
fn connect_disconnect(td: &mut TestDocker, _dp: &str) {
    netd_network(td, "c1", NET_A, &[]);
    netd_network(td, "c2", NET_B, &[]);
    let b1 = bridge_with(td, "203.0.113.65").unwrap();
    let b2 = bridge_with(td, "203.0.113.81").unwrap();
    server(td, "cta", &["--network", "c1"], &["7000"]);
    client(td, "ctb", &["--network", "c2"]);
    let a1 = td.ip_of("cta", "c1");
    assert!(tcp_blocked(td, "ctb", &format!("{a1}:7000")), "isolated before connect");
    assert_eq!(veths_on(td, &b2), 1);
    td.ok(&["network", "connect", "c2", "cta"]);
    let a2 = td.ip_of("cta", "c2");
    assert!(a2.starts_with("203.0.113.8") || a2.starts_with("203.0.113.9"), "{a2}");
    assert_eq!(veths_on(td, &b2), 2, "connect added a host veth on c2's bridge");
    let l = td.exec("cta", &["ip", "-o", "-4", "addr"]).stdout;
    assert!(l.contains(&format!("{a2}/28")), "second interface in the container: {l}");
    assert!(tcp_from(td, "ctb", &format!("{a2}:7000")).is_some_and(|r| r.starts_with("cta:")), "b -> a on c2");
    td.ok(&["network", "disconnect", "c2", "cta"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while veths_on(td, &b2) != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(veths_on(td, &b2), 1, "disconnect removed the host veth");
    let l = td.exec("cta", &["ip", "-o", "-4", "addr"]).stdout;
    assert!(!l.contains(&a2), "address gone after disconnect: {l}");
    assert!(tcp_blocked(td, "ctb", &format!("{a2}:7000")), "b reaches a after disconnect");
    assert_eq!(veths_on(td, &b1), 1);
    td.ok(&["rm", "-f", "cta", "ctb"]);
    td.ok(&["network", "rm", "c1", "c2"]);
}

/// kill -9 of netd while 100 TCP flows cross a published port: not one exchange fails, and the
/// restarted netd answers Docker's next calls for the old network.
fn netd_kill9_under_100_flows(td: &mut TestDocker, _dp: &str) {
    use std::io::{Read, Write};
    netd_network(td, "k9", NET_A, &[]);
    server(td, "web", &["--network", "k9", "-p", "8080:7000"], &["7000"]);
    echo_ns(&td.th.outside.path(), "198.51.100.1:8080").expect("published port up");
    let mut flows = netd_tests::in_netns(&td.th.outside.path(), || {
        (0..100)
            .map(|_| {
                let s = std::net::TcpStream::connect_timeout(&addr("198.51.100.1:8080"), Duration::from_secs(3))
                    .expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                s
            })
            .collect::<Vec<_>>()
    })
    .unwrap();
    let mut round = 0;
    let mut exchange = |flows: &mut Vec<std::net::TcpStream>, when: &str| {
        for (i, s) in flows.iter_mut().enumerate() {
            let msg = format!("f{i}r{round}");
            let mut buf = [0u8; 128];
            let r = s.write_all(msg.as_bytes()).and_then(|_| s.read(&mut buf));
            match r {
                Ok(n) if String::from_utf8_lossy(&buf[..n]).ends_with(&msg) => {}
                other => panic!("flow {i} {when}: {other:?}"),
            }
        }
        round += 1;
    };
    exchange(&mut flows, "before");
    td.netd.kill9_only();
    exchange(&mut flows, "while netd is dead");
    td.netd.restart().unwrap();
    exchange(&mut flows, "after restart");
    drop(flows);
    // The restarted netd knows the network Docker created before (Docker does not replay it).
    server(td, "web2", &["--network", "k9", "-p", "8081:7000"], &["7000"]);
    assert_eq!(echo_ns(&td.th.outside.path(), "198.51.100.1:8081").map(|x| x.0).as_deref(), Some("web2"));
    assert_eq!(echo_ns(&td.th.outside.path(), "198.51.100.1:8080").map(|x| x.0).as_deref(), Some("web"));
    td.ok(&["rm", "-f", "web", "web2"]);
    td.ok(&["network", "rm", "k9"]);
}

/// dockerd restarted (SIGTERM, start) with `--live-restore`: the container keeps running and its
/// published port and open connections keep working; Docker's calls work afterwards.
fn dockerd_live_restore(td: &mut TestDocker, _dp: &str) {
    use std::io::{Read, Write};
    netd_network(td, "lr", NET_A, &[]);
    server(td, "web", &["--network", "lr", "-p", "8080:7000"], &["7000"]);
    let out = td.th.outside.path();
    echo_ns(&out, "198.51.100.1:8080").expect("published port up");
    let mut s = netd_tests::in_netns(&out, || {
        let s = std::net::TcpStream::connect_timeout(&addr("198.51.100.1:8080"), Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    })
    .unwrap();
    let ping = |s: &mut std::net::TcpStream, m: &str| {
        let mut buf = [0u8; 64];
        s.write_all(m.as_bytes()).unwrap();
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with(m), "{m}");
    };
    ping(&mut s, "before");
    td.stop_dockerd().unwrap();
    ping(&mut s, "dockerd-down");
    assert_eq!(echo_ns(&out, "198.51.100.1:8080").map(|x| x.0).as_deref(), Some("web"), "new flow, dockerd down");
    td.start_dockerd().unwrap();
    ping(&mut s, "after");
    let st = td.ok(&["inspect", "-f", "{{.State.Running}}", "web"]);
    assert_eq!(st.trim(), "true");
    assert_eq!(echo_ns(&out, "198.51.100.1:8080").map(|x| x.0).as_deref(), Some("web"));
    client(td, "cli", &["--network", "lr"]);
    assert!(tcp_from(td, "cli", "web:7000").is_some(), "new container after the restart");
    td.ok(&["rm", "-f", "web", "cli"]);
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"x").is_err(), "port left after rm");
    td.ok(&["network", "rm", "lr"]);
}

/// dockerd restarted without `--live-restore`: it stops the container, and on start brings the
/// `--restart=always` one back through new endpoint calls, with the same published port.
fn dockerd_restart_brings_back_restart_always(td: &mut TestDocker, _dp: &str) {
    let saved = td.dockerd_args();
    let plain: Vec<String> = saved.iter().filter(|a| *a != "--live-restore").cloned().collect();
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    td.restart_dockerd_with(&plain).unwrap();
    netd_network(td, "ra", NET_B, &[]);
    server(td, "web", &["--network", "ra", "--restart=always", "-p", "8080:7000"], &["7000"]);
    let out = td.th.outside.path();
    assert_eq!(echo_ns(&out, "198.51.100.1:8080").map(|x| x.0).as_deref(), Some("web"));
    let pid0 = td.ok(&["inspect", "-f", "{{.State.Pid}}", "web"]);
    td.stop_dockerd().unwrap();
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"x").is_err(), "the container outlived dockerd");
    td.start_dockerd().unwrap();
    let running = eventually("web restarted", || {
        let st = td.cli(&["inspect", "-f", "{{.State.Running}} {{.State.Pid}}", "web"]).stdout;
        st.starts_with("true").then_some(st)
    });
    assert_ne!(running.split_whitespace().nth(1), Some(pid0.trim()), "a new process");
    assert_eq!(echo_ns(&out, "198.51.100.1:8080").map(|x| x.0).as_deref(), Some("web"), "same port after restart");
    td.ok(&["rm", "-f", "web"]);
    td.ok(&["network", "rm", "ra"]);
    let saved: Vec<&str> = saved.iter().map(String::as_str).collect();
    td.restart_dockerd_with(&saved).unwrap();
}

/// With netd down, Docker retries the plugin for about 30 s and then fails with an error; the
/// only scenario that waits for that.
fn plugin_retry_when_netd_is_down(td: &mut TestDocker, _dp: &str) {
    if !on_netd() {
        return;
    }
    netd_network(td, "pr", NET_A, &[]);
    td.netd.down().unwrap();
    let t = Instant::now();
    let r = td.cli(&["run", "-d", "--init", "--name", "late", "--network", "pr", IMAGE, "sleep", "60"]);
    let took = t.elapsed();
    assert_ne!(r.code, 0, "docker run succeeded without its network plugin: {r:?}");
    assert!(took < Duration::from_secs(45), "gave up after {took:?}");
    eprintln!("docker run without the plugin failed after {:.1}s: {}", took.as_secs_f64(), r.stderr.trim());
    let _ = td.cli(&["rm", "-f", "late"]);
    td.netd.restart().unwrap();
    // Back: the persisted network answers Docker at once.
    let t = Instant::now();
    client(td, "ok", &["--network", "pr"]);
    assert!(t.elapsed() < Duration::from_secs(10), "docker run after netd's restart took {:?}", t.elapsed());
    td.ok(&["rm", "-f", "ok"]);
    td.ok(&["network", "rm", "pr"]);
}

/// What `docker rm -f`, `docker network rm` and `netd down` leave: nothing (links, pins, map
/// entries, rules, the plugin socket); `netd down` refuses while Docker endpoints exist.
fn leftovers_after_rm_network_rm_and_down(td: &mut TestDocker, dp: &str) {
    if !on_netd() {
        return;
    }
    let links0 = host_links(td);
    let dnat0 = dnat_rules(td).len();
    netd_network(td, "lo1", NET_D, &["-o", "com.docker.network.bridge.name=ndleft0"]);
    server(td, "w1", &["--network", "lo1", "-p", "8080:7000", "-p", "8081:7000/udp"], &["7000"]);
    server(td, "w2", &["--network", "lo1", "-p", "8082:7000"], &["7000"]);
    let ip1 = td.ip_of("w1", "lo1");
    assert_eq!(veths_on(td, "ndleft0"), 2);
    // netd down refuses while Docker endpoints exist, and everything keeps working.
    let r = td.netd.cli(&["down"]);
    assert_ne!(r.code, 0, "netd down with Docker endpoints: {r:?}");
    assert_eq!(echo_ns(&td.th.outside.path(), "198.51.100.1:8080").map(|x| x.0).as_deref(), Some("w1"));
    td.ok(&["rm", "-f", "w1"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while veths_on(td, "ndleft0") != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(veths_on(td, "ndleft0"), 1, "w1's veth left after docker rm -f");
    assert!(td.netd.cli(&["port", &ip1]).stdout.trim().is_empty(), "w1's ports still listed");
    if dp == "ebpf" {
        assert_eq!(map_len(td, "PUBLISHED_V4"), 1, "only w2's binding is left in the map");
        assert_eq!(map_len(td, "ENDPOINTS"), 1, "only w2's endpoint is left in the map");
    } else {
        assert_eq!(dnat_rules(td).len(), dnat0 + 1, "only w2's DNAT rule: {:?}", dnat_rules(td));
    }
    td.ok(&["rm", "-f", "w2"]);
    td.ok(&["network", "rm", "lo1"]);
    assert_eq!(host_links(td), links0, "links after docker rm -f + network rm");
    if dp == "ebpf" {
        for m in ["PUBLISHED_V4", "ENDPOINTS"] {
            assert_eq!(map_len(td, m), 0, "{m} entries left");
        }
        let pins = td.in_mnt(&["ls", &td.netd.bpffs.join("links").display().to_string()]).unwrap_or_default();
        assert!(!pins.contains("veth"), "veth link pins left: {pins}");
    } else {
        assert_eq!(dnat_rules(td).len(), dnat0, "DNAT rules left: {:?}", dnat_rules(td));
    }
    // netd down: the plugin socket goes with it, and every link and pin netd made.
    assert!(td.in_mnt(&["ls", "/run/docker/plugins"]).unwrap().contains("netd.sock"));
    td.netd.down().unwrap();
    let plugins = td.in_mnt(&["ls", "-A", "/run/docker/plugins"]).unwrap();
    assert_eq!(plugins.trim(), "", "socket left in /run/docker/plugins after netd down");
    let links: Vec<String> = host_links(td);
    let mut expect = vec!["lo".to_string(), "up0".to_string(), "docker0".to_string()];
    expect.sort();
    let mut got = links.clone();
    got.sort();
    assert_eq!(got, expect, "links netd left after down");
    let pins = td.in_mnt(&["sh", "-c", &format!("ls -A {} 2>/dev/null || true", td.netd.bpffs.display())]).unwrap();
    assert_eq!(pins.trim(), "", "pins left under netd's bpffs after down");
    let rules = td.th.host.exec_ok(&["iptables-save"]).unwrap();
    assert!(!rules.contains("NETD"), "netd's rules left after down: {rules}");
    td.netd.restart().unwrap();
}
