//! netd's Docker remote network driver, driven over its unix socket with the exact JSON Docker
//! sends (shared/research/real-runtimes.md §A.3), the way dockerd drives it: the test plays
//! dockerd (it moves and configures the veth peer itself, as libnetwork does) and checks real
//! packets through the published ports, a kill -9 of netd, and what every call leaves behind.
//! Every scenario runs under both dataplanes. (tests/tests/docker.rs runs the real dockerd.)
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use netd_tests::{Netns, TestDaemon, TestHost, addr, ip, probe, require_root};
use serde_json::{Value, json};

/// One plugin call (HTTP/1.1 POST, JSON body as Docker's plugin client sends it).
fn call(sock: &Path, method: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = UnixStream::connect(sock).unwrap_or_else(|e| panic!("connecting {}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let b = body.map(|v| v.to_string()).unwrap_or_default();
    write!(
        s,
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A call that must succeed (200, no `Err`).
fn ok(sock: &Path, method: &str, body: Value) -> Value {
    let (st, v) = call(sock, method, Some(&body));
    assert!(st == 200 && v.get("Err").is_none(), "{method} {body}: {st} {v}");
    v
}

/// A call that must fail: the `Err` text.
fn err(sock: &Path, method: &str, body: Value) -> String {
    let (st, v) = call(sock, method, Some(&body));
    assert_ne!(st, 200, "{method} {body} succeeded: {v}");
    v["Err"].as_str().unwrap_or_else(|| panic!("{method}: no Err in {v}")).to_string()
}

fn hex_id(tag: &str) -> String {
    let t = netd_tests::unique(tag);
    let mut h: String = t.bytes().map(|b| format!("{b:02x}")).collect();
    while h.len() < 64 {
        h.push('0');
    }
    h.truncate(64);
    h
}

/// The plugin socket's directory (made by netd, removed by it; removed here too on failure).
struct PluginDir(PathBuf);
impl Drop for PluginDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn portmap(entries: &[(u8, u16, &str, u16, u16)]) -> Value {
    let pm: Vec<Value> = entries
        .iter()
        .map(|(p, c, hip, hp, hpe)| json!({"Proto": p, "IP": "", "Port": c, "HostIP": hip, "HostPort": hp, "HostPortEnd": hpe}))
        .collect();
    let exposed: Vec<Value> = entries.iter().map(|(p, c, ..)| json!({"Proto": p, "Port": c})).collect();
    json!({"com.docker.network.endpoint.exposedports": exposed, "com.docker.network.portmap": pm})
}

/// Docker's side of Join: move the peer into the container's namespace, rename it `eth0`,
/// address it, route via the gateway (libnetwork's `osl` does this after Join).
fn docker_moves_peer(th: &TestHost, src: &str, ns: &Netns, cidr: &str, gw: &str) {
    ip(&["-n", &th.host.name, "link", "set", src, "netns", &ns.name]).unwrap();
    ip(&["-n", &ns.name, "link", "set", src, "name", "eth0"]).unwrap();
    ip(&["-n", &ns.name, "addr", "add", cidr, "dev", "eth0"]).unwrap();
    ip(&["-n", &ns.name, "link", "set", "eth0", "up"]).unwrap();
    ip(&["-n", &ns.name, "route", "add", "default", "via", gw]).unwrap();
}

fn host_has_link(th: &TestHost, name: &str) -> bool {
    th.host.exec(&["ip", "link", "show", name]).is_ok_and(|o| o.status.success())
}

fn scenario(dp: &str) {
    let th = TestHost::new("dplug").unwrap();
    let pdir = PluginDir(PathBuf::from(format!("/run/netd-test/{}", netd_tests::unique("dpp"))));
    let sock = pdir.0.join("plugins").join("netd.sock");
    let mut d = TestDaemon::start(&th, &["--dataplane", dp, "--docker-plugin", &sock.display().to_string()]).unwrap();
    let info: Value = serde_json::from_str(&d.ok(&["info"])).unwrap_or(Value::Null);
    assert!(sock.exists(), "plugin socket {} not served: {info}", sock.display());

    // Handshake and the methods with fixed answers.
    let (st, v) = call(&sock, "Plugin.Activate", None);
    assert_eq!((st, v), (200, json!({"Implements": ["NetworkDriver"]})));
    let (st, v) = call(&sock, "NetworkDriver.GetCapabilities", None);
    assert_eq!((st, &v["Scope"], &v["ConnectivityScope"]), (200, &json!("local"), &json!("local")), "{v}");
    let (st, _) = call(&sock, "NetworkDriver.GwAllocCheck", Some(&json!({"Options": {}})));
    assert_eq!(st, 404, "unknown methods are 404 (not implemented)");
    let (st, _) = call(&sock, "IpamDriver.RequestPool", Some(&json!({})));
    assert_eq!(st, 404);
    let (st, v) = call(&sock, "NetworkDriver.EndpointOperInfo", Some(&json!({"NetworkID": "x", "EndpointID": "y"})));
    assert_eq!((st, v), (200, json!({"Value": {}})), "EndpointOperInfo is always 200 with a Value map");
    for m in ["NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete"] {
        ok(&sock, m, json!({"DiscoveryType": 1, "DiscoveryData": {"Address": "198.51.100.1", "self": true}}));
    }
    let (st, v) = call(&sock, "NetworkDriver.CreateNetwork", None);
    assert!(st != 200 && v["Err"].as_str().is_some_and(|e| e.contains("JSON")), "empty body: {st} {v}");

    // CreateNetwork exactly as `docker network create -d netd --subnet 203.0.113.0/28
    // --aux-address ... -o ... n1` sends it (plus a field a newer Docker might add).
    let nid = hex_id("net");
    let br = netd_tests::unique("ndp");
    let create = json!({
        "NetworkID": nid,
        "Options": {
            "com.docker.network.enable_ipv4": true,
            "com.docker.network.enable_ipv6": false,
            "com.docker.network.generic": {
                "com.docker.network.bridge.name": br,
                "com.docker.network.bridge.enable_icc": "true",
                "com.docker.network.driver.mtu": "1400",
            },
            "com.docker.network.some_future_option": {"x": 1},
        },
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "203.0.113.0/28", "Gateway": "203.0.113.1/28",
                      "AuxAddresses": {"host1": "203.0.113.5/28"}}],
        "IPv6Data": null,
        "FutureField": [1, 2],
    });
    ok(&sock, "NetworkDriver.CreateNetwork", create.clone());
    ok(&sock, "NetworkDriver.CreateNetwork", create.clone()); // repeated: no-op
    let l = th.host.exec_ok(&["ip", "-o", "addr", "show", &br]).unwrap();
    assert!(l.contains("203.0.113.1/28"), "netd's bridge with Docker's gateway: {l}");
    let l = th.host.exec_ok(&["ip", "-o", "link", "show", &br]).unwrap();
    assert!(l.contains("mtu 1400"), "{l}");
    let ls = d.ok(&["network", "ls"]);
    assert!(ls.contains(&nid[..12]) && ls.contains("netd"), "netd network ls lists Docker's network: {ls}");
    // Bad networks: Docker-style errors, nothing made.
    let mut v6 = create.clone();
    v6["NetworkID"] = json!(hex_id("v6"));
    v6["Options"]["com.docker.network.enable_ipv6"] = json!(true);
    // A bridge name and an IPv4 pool of its own, so the missing IPv6 pool is what fails.
    v6["Options"]["com.docker.network.generic"]["com.docker.network.bridge.name"] = json!(netd_tests::unique("ndq"));
    v6["IPv4Data"][0] =
        json!({"AddressSpace": "LocalDefault", "Pool": "203.0.113.16/28", "Gateway": "203.0.113.17/28"});
    let e = err(&sock, "NetworkDriver.CreateNetwork", v6);
    assert!(e.contains("IPv6"), "{e}");
    let mut overlap = create.clone();
    overlap["NetworkID"] = json!(hex_id("ov"));
    overlap["Options"]["com.docker.network.generic"] = json!({});
    assert!(err(&sock, "NetworkDriver.CreateNetwork", overlap).contains("overlaps"));
    let mut badmtu = create.clone();
    badmtu["NetworkID"] = json!(hex_id("mtu"));
    badmtu["IPv4Data"][0]["Pool"] = json!("203.0.113.16/28");
    badmtu["IPv4Data"][0]["Gateway"] = json!("203.0.113.17/28");
    badmtu["Options"]["com.docker.network.generic"] = json!({"com.docker.network.driver.mtu": "abc"});
    assert!(err(&sock, "NetworkDriver.CreateNetwork", badmtu).contains("MTU"));
    assert!(!d.ok(&["network", "ls"]).contains("203.0.113.17"), "a failed create left a network");

    // Endpoint 1: Docker's IPAM address, no MAC: netd answers with the MAC it gave the peer.
    let e1 = hex_id("ep1");
    let ce = |eid: &str, addr: &str, mac: &str| {
        json!({"NetworkID": nid, "EndpointID": eid,
               "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": mac},
               "Options": portmap(&[(6, 7000, "", 8080, 8080)])})
    };
    let v = ok(&sock, "NetworkDriver.CreateEndpoint", ce(&e1, "203.0.113.2/28", ""));
    assert_eq!(v, json!({"Interface": {"MacAddress": "02:42:cb:00:71:02"}}), "only the MAC comes back");
    assert!(
        err(
            &sock,
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": hex_id("nonet"), "EndpointID": hex_id("x"),
            "Interface": {"Address": "203.0.113.9/28"}})
        )
        .contains("not found")
    );
    let join = |eid: &str| {
        ok(
            &sock,
            "NetworkDriver.Join",
            json!({"NetworkID": nid, "EndpointID": eid, "SandboxKey": "/var/run/docker/netns/7541c34f2dc7",
                   "Options": portmap(&[(6, 7000, "", 8080, 8080)])}),
        )
    };
    let j = join(&e1);
    assert_eq!((&j["InterfaceName"]["DstPrefix"], &j["Gateway"]), (&json!("eth"), &json!("203.0.113.1")), "{j}");
    let src = j["InterfaceName"]["SrcName"].as_str().unwrap().to_string();
    assert!(src.len() <= 15, "{src}");
    let l = th.host.exec_ok(&["ip", "-o", "link", "show", &src]).expect("the peer waits in the host namespace");
    assert!(l.contains("02:42:cb:00:71:02") && l.contains("mtu 1400"), "{l}");
    let c1 = Netns::new(&format!("{}c1", th.host.name)).unwrap();
    docker_moves_peer(&th, &src, &c1, "203.0.113.2/28", "203.0.113.1");
    let _srv = probe::EchoServer::start(&c1.path(), addr("0.0.0.0:7000"), "c1").unwrap();
    let _srv2 = probe::EchoServer::start(&c1.path(), addr("0.0.0.0:7001"), "c1b").unwrap();
    // ProgramExternalConnectivity: every form Docker sends.
    let pec = json!({"NetworkID": nid, "EndpointID": e1, "Options": {
        "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 7000}, {"Proto": 17, "Port": 7000}, {"Proto": 6, "Port": 7001}],
        "com.docker.network.portmap": [
            {"Proto": 6, "IP": "", "Port": 7000, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
            {"Proto": 17, "IP": "", "Port": 7000, "HostIP": "", "HostPort": 5353, "HostPortEnd": 5353},
            {"Proto": 6, "IP": "", "Port": 7000, "HostIP": "127.0.0.1", "HostPort": 8443, "HostPortEnd": 8443},
            {"Proto": 6, "IP": "", "Port": 7001, "HostIP": "", "HostPort": 0, "HostPortEnd": 0},
            {"Proto": 6, "IP": "", "Port": 7001, "HostIP": "198.51.100.1", "HostPort": 9100, "HostPortEnd": 9110}],
        "com.docker.network.driver.private.no_proxy_6to4": true}});
    ok(&sock, "NetworkDriver.ProgramExternalConnectivity", pec.clone());
    ok(&sock, "NetworkDriver.ProgramExternalConnectivity", pec.clone()); // repeated (v29): no change
    ok(&sock, "NetworkDriver.EndpointOperInfo", json!({"NetworkID": nid, "EndpointID": e1}));

    let out = th.outside.path();
    let e = probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"x").expect("8080 from outside");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("c1", "198.51.100.2"), "DNAT keeps the client address");
    assert_eq!(probe::udp_echo(&out, addr("198.51.100.1:5353"), b"u").expect("udp 5353").tag, "c1");
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:8443"), b"x").is_err(), "127.0.0.1 binding from outside");
    assert_eq!(probe::tcp_echo(&out, addr("198.51.100.1:9100"), b"x").expect("range, first free").tag, "c1b");
    // Docker 29's no_proxy_6to4 (another endpoint is the v6 gateway): no `[::]` twin here.
    assert!(probe::tcp_echo(&out, addr("[2001:db8:100::1]:8080"), b"x").is_err(), "[::] twin despite no_proxy_6to4");
    let host = th.host.path();
    for a in ["127.0.0.1:8080", "198.51.100.1:8080", "127.0.0.1:8443"] {
        assert_eq!(
            probe::tcp_echo(&host, addr(a), b"h").map(|e| e.tag).ok().as_deref(),
            Some("c1"),
            "{a} from the host"
        );
    }
    // Masquerade: the container's own connections leave with the host's address.
    let _osrv = probe::EchoServer::start(&out, addr("198.51.100.2:6000"), "outside").unwrap();
    let e = probe::tcp_echo(&c1.path(), addr("198.51.100.2:6000"), b"m").expect("container -> outside");
    assert_eq!(e.peer, "198.51.100.1", "masqueraded");

    // netd's own CLI shows what Docker cannot: by EndpointID prefix and by address.
    let by_id = d.ok(&["port", &e1[..12]]);
    assert_eq!(by_id, d.ok(&["port", "203.0.113.2"]));
    let lines: Vec<&str> = by_id.lines().collect();
    for want in [
        "7000/tcp -> 0.0.0.0:8080",
        "7000/udp -> 0.0.0.0:5353",
        "7000/tcp -> 127.0.0.1:8443",
        "7001/tcp -> 198.51.100.1:9100",
    ] {
        assert!(lines.contains(&want), "{want} in {by_id}");
    }
    let eph: u16 = lines
        .iter()
        .find_map(|l| l.strip_prefix("7001/tcp -> 0.0.0.0:"))
        .unwrap_or_else(|| panic!("ephemeral binding in {by_id}"))
        .parse()
        .unwrap();
    let (lo, hi) = netd::ports::ephemeral_range();
    assert!((lo..=hi).contains(&eph), "{eph}");
    assert_eq!(probe::tcp_echo(&out, addr(&format!("198.51.100.1:{eph}")), b"x").expect("ephemeral").tag, "c1b");
    assert_eq!(d.ok(&["port", &e1[..12], "7000/udp"]), "0.0.0.0:5353\n");
    let ni: Value = serde_json::from_str(&d.ok(&["network", "inspect", &nid[..12]])).unwrap();
    let ni = &ni[0];
    assert_eq!(ni["Driver"], "netd", "{ni}");
    assert_eq!(ni["Containers"][&e1]["IPv4Address"], "203.0.113.2/28", "{ni}");
    assert_eq!(ni["Options"]["com.docker.network.bridge.name"], br.as_str(), "{ni}");
    let stats: Value = serde_json::from_str(&d.ok(&["stats", "--format", "json"])).unwrap();
    assert_eq!(
        (stats["docker"]["count"].as_u64(), stats["docker"]["last_ports"].as_u64()),
        (Some(1), Some(5)),
        "{stats}"
    );
    // The same timing in the Prometheus exposition (what the metrics endpoint serves).
    let prom = d.ok(&["stats", "--format", "prometheus"]);
    for want in ["netd_docker_publish_seconds_count 1\n", "netd_docker_publish_last_ports 5\n"] {
        assert!(prom.contains(want), "{want} in {prom}");
    }
    if dp == "ebpf" {
        let p = stats["ports"].as_array().unwrap().iter().find(|p| p["host_port"] == 8080).cloned();
        assert!(p.is_some_and(|p| p["packets"].as_u64().unwrap_or(0) > 0), "netd stats counts the port: {stats}");
    }
    // netd's own sandboxes cannot join Docker's network (two IPAMs on one subnet).
    let r = d.cli(&["run", "-d", "--network", &nid, "--", "sleep", "5"]);
    assert!(r.code != 0 && r.stderr.contains("managed by Docker"), "{r:?}");

    // Endpoint 2 with its own MAC, and a host port already taken: Docker's message, nothing kept.
    let e2 = hex_id("ep2");
    let v = ok(&sock, "NetworkDriver.CreateEndpoint", ce(&e2, "203.0.113.3/28", "02:42:aa:bb:cc:dd"));
    assert_eq!(v, json!({}), "no MAC back when Docker chose one");
    join(&e2);
    let msg = err(
        &sock,
        "NetworkDriver.ProgramExternalConnectivity",
        json!({"NetworkID": nid, "EndpointID": e2, "Options": portmap(&[(6, 7000, "", 9200, 9200), (6, 7000, "", 8080, 8080)])}),
    );
    assert_eq!(msg, "Bind for 0.0.0.0:8080 failed: port is already allocated");
    assert!(d.ok(&["port", &e2[..12]]).is_empty(), "a failed publish keeps nothing");
    assert!(
        host_has_link(&th, "lo") && th.host.run(|| std::net::TcpListener::bind("0.0.0.0:9200").is_ok()).unwrap(),
        "9200 released"
    );

    // netd down refuses while Docker endpoints exist; nothing stops.
    let r = d.cli(&["down"]);
    assert!(r.code != 0 && r.stderr.contains("--force"), "{r:?}");
    assert_eq!(probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"x").unwrap().tag, "c1");

    // Endpoint 3 lives in a namespace that goes away while netd is dead.
    let e3 = hex_id("ep3");
    ok(&sock, "NetworkDriver.CreateEndpoint", ce(&e3, "203.0.113.4/28", ""));
    let j3 = join(&e3);
    let c3 = Netns::new(&format!("{}c3", th.host.name)).unwrap();
    docker_moves_peer(&th, j3["InterfaceName"]["SrcName"].as_str().unwrap(), &c3, "203.0.113.4/28", "203.0.113.1");
    let v3 = d.inspect_network_containers(&nid);
    assert!(v3.contains(&e3), "{v3:?}");

    // kill -9 under an open flow: the flow and the ports survive; the restarted netd serves the
    // plugin again and answers for the network Docker created before.
    let mut flow = netd_tests::in_netns(&out, || {
        let s = std::net::TcpStream::connect_timeout(&addr("198.51.100.1:8080"), Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    })
    .unwrap();
    let mut ping = |m: &str, log: &dyn Fn() -> String| {
        let mut buf = [0u8; 64];
        flow.write_all(m.as_bytes()).unwrap();
        let r = flow.read(&mut buf);
        let got = r.as_ref().map(|n| String::from_utf8_lossy(&buf[..*n]).to_string());
        assert!(got.as_ref().is_ok_and(|g| g.ends_with(m)), "{m}: {got:?}\ndaemon log:\n{}", log());
    };
    ping("before", &|| d.log());
    d.kill9_only();
    assert!(sock.exists(), "kill -9 cannot remove the socket");
    ping("netd dead", &|| d.log());
    drop(c3); // the container of endpoint 3 vanished while netd was down
    d.restart().unwrap();
    ping("after restart", &|| d.log());
    assert_eq!(
        call(&sock, "Plugin.Activate", None).0,
        200,
        "a restarted netd serves the plugin (stale socket replaced)"
    );
    assert_eq!(probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"x").unwrap().tag, "c1");
    assert!(d.ok(&["port", &e1[..12]]).contains("7000/tcp -> 0.0.0.0:8080"), "ports adopted");
    let v = d.inspect_network_containers(&nid);
    assert!(v.contains(&e1) && v.contains(&e2) && !v.contains(&e3), "endpoint 3 cleaned up: {v:?}");
    let e4 = hex_id("ep4");
    ok(&sock, "NetworkDriver.CreateEndpoint", ce(&e4, "203.0.113.4/28", ""));
    join(&e4);

    // Teardown as Docker does it: Revoke, Leave, DeleteEndpoint; then DeleteNetwork.
    ok(&sock, "NetworkDriver.RevokeExternalConnectivity", json!({"NetworkID": nid, "EndpointID": e1}));
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"x").is_err(), "8080 after Revoke");
    assert!(d.ok(&["port", &e1[..12]]).is_empty());
    ok(&sock, "NetworkDriver.Leave", json!({"NetworkID": nid, "EndpointID": e1}));
    let host_veths = th.host.exec_ok(&["ip", "-o", "link", "show", "master", &br]).unwrap();
    assert_eq!(host_veths.lines().count(), 3, "{host_veths}");
    for e in [&e1, &e2, &e4] {
        ok(&sock, "NetworkDriver.DeleteEndpoint", json!({"NetworkID": nid, "EndpointID": e}));
    }
    ok(&sock, "NetworkDriver.DeleteEndpoint", json!({"NetworkID": nid, "EndpointID": e1})); // again: fine
    assert!(c1.exec_ok(&["ip", "-o", "link"]).unwrap().lines().all(|l| !l.contains("eth0")), "eth0 went with the veth");
    assert_eq!(th.host.exec_ok(&["ip", "-o", "link", "show", "master", &br]).unwrap().trim(), "");
    ok(&sock, "NetworkDriver.DeleteNetwork", json!({"NetworkID": nid}));
    ok(&sock, "NetworkDriver.DeleteNetwork", json!({"NetworkID": nid}));
    assert!(!host_has_link(&th, &br), "bridge left after DeleteNetwork");
    assert!(!d.ok(&["network", "ls"]).contains(&nid[..12]));

    // netd down: the socket and the directory netd made for it go.
    d.down().unwrap();
    assert!(!sock.exists(), "socket left after netd down");
    let links = th.host.exec_ok(&["ip", "-o", "link"]).unwrap();
    assert!(!links.contains("veth") && !links.contains("vp"), "{links}");
}

/// `netd network inspect` Containers keys (Docker endpoints are keyed by EndpointID).
trait InspectExt {
    fn inspect_network_containers(&self, nid: &str) -> Vec<String>;
}
impl InspectExt for TestDaemon {
    fn inspect_network_containers(&self, nid: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.ok(&["network", "inspect", nid])).unwrap();
        v[0]["Containers"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }
}

#[test]
fn ebpf_docker_plugin_protocol() {
    require_root!();
    scenario("ebpf");
}

#[test]
fn iptables_docker_plugin_protocol() {
    require_root!();
    scenario("iptables");
}

/// `--docker-plugin` validation, and `netd down --force` with endpoints.
#[test]
fn plugin_flags_and_forced_down() {
    require_root!();
    let th = TestHost::new("dpf").unwrap();
    let r = TestDaemon::start(&th, &["--dataplane", "none", "--docker-plugin", "relative.sock"]);
    assert!(r.is_err_and(|e| e.to_string().contains("--docker-plugin")), "a relative socket path is refused");
    let pdir = PluginDir(PathBuf::from(format!("/run/netd-test/{}", netd_tests::unique("dpf"))));
    let sock = pdir.0.join("netd.sock");
    let s = sock.display().to_string();
    let mut d = TestDaemon::start(&th, &["--dataplane", "none", "--docker-plugin", &s]).unwrap();
    // A second daemon on the same plugin socket is refused (and does not steal it).
    let r = TestDaemon::start(&th, &["--dataplane", "none", "--docker-plugin", &s]);
    assert!(r.is_err_and(|e| e.to_string().contains("already serving")));
    assert_eq!(call(&sock, "Plugin.Activate", None).0, 200);
    let nid = hex_id("fnet");
    ok(
        &sock,
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": nid, "Options": {},
        "IPv4Data": [{"Pool": "203.0.113.32/28", "Gateway": "203.0.113.33/28"}]}),
    );
    let eid = hex_id("fep");
    ok(
        &sock,
        "NetworkDriver.CreateEndpoint",
        json!({"NetworkID": nid, "EndpointID": eid,
        "Interface": {"Address": "203.0.113.34/28"}}),
    );
    assert_ne!(d.cli(&["down"]).code, 0);
    // netd's CLI cannot remove Docker's network.
    let r = d.cli(&["network", "rm", &nid[..12]]);
    assert!(r.code != 0 && r.stderr.contains("managed by Docker"), "{r:?}");
    let r = d.cli(&["down", "--force"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(d.wait_exit(Duration::from_secs(30)), "netd down --force");
    assert!(!sock.exists());
    assert!(!pdir.0.exists(), "the directory netd made for the socket is removed with it");
    let links = th.host.exec_ok(&["ip", "-o", "link"]).unwrap();
    assert!(!links.contains("veth") && !links.contains("br-"), "{links}");
}
