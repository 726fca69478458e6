//! `netd-cni` executed the way CNI runtimes execute it (env + stdin, `prevResult` threaded to
//! CHECK and DEL), against a daemon in the test's namespaces: every verb, every error path,
//! repeated ADD/DEL, and the reference `portmap` plugin's checklist with real packets. Each
//! scenario runs per dataplane.
use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use netd_tests::{
    Netns, TestDaemon, TestHost, addr,
    cni::{Runtime, result_ip},
    in_netns, probe, require_root, unique,
};
use serde_json::{Value, json};

const CAPS: &str = r#"{"portMappings": true, "aliases": true, "ips": true, "mac": true}"#;

/// The daemon with its defaults (the iptables dataplane with `--userland-proxy`: CNI ports,
/// which have no proxy, get the proxy-less rules per binding).
fn daemon(th: &TestHost, dataplane: &str) -> TestDaemon {
    TestDaemon::start(th, &["--dataplane", dataplane]).unwrap()
}

fn runtime(th: &TestHost, d: &TestDaemon, name: &str, version: &str, extra: Value) -> Runtime {
    let mut plugin = json!({"type": "netd-cni", "socket": format!("unix://{}", d.socket.display()),
                            "capabilities": serde_json::from_str::<Value>(CAPS).unwrap()});
    for (k, v) in extra.as_object().unwrap() {
        plugin[k] = v.clone();
    }
    Runtime::new(&th.host.path(), name, version, plugin)
}

fn ports(v: Value) -> Value {
    json!({"portMappings": v})
}

/// Host-side veths on `bridge` in the host namespace.
fn bridge_ports(th: &TestHost, bridge: &str) -> Vec<String> {
    let out = th.host.exec_ok(&["ip", "-o", "link", "show", "master", bridge]).unwrap_or_default();
    out.lines().filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap().to_string())).collect()
}

fn has_eth0(ns: &Netns) -> bool {
    ns.exec(&["ip", "link", "show", "eth0"]).map(|o| o.status.success()).unwrap_or(false)
}

enum Undo {
    Map((Vec<String>, Vec<String>), &'static str),
    Rule(String, &'static str),
}

fn hex(b: &[u8]) -> Vec<String> {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Delete one entry of a pinned map of the daemon; returns (key, value) as hex bytes.
fn bpf_take(d: &TestDaemon, map: &str, key: &[u8]) -> (Vec<String>, Vec<String>) {
    let path = d.bpffs.join("maps").join(map);
    let k = hex(key);
    let o = std::process::Command::new("bpftool")
        .args(["-j", "map", "lookup", "pinned"])
        .arg(&path)
        .arg("key")
        .arg("hex")
        .args(&k)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{map} lookup: {e}: {o:?}"));
    let value: Vec<String> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().trim_start_matches("0x").to_string())
        .collect();
    let del = std::process::Command::new("bpftool")
        .args(["map", "delete", "pinned"])
        .arg(&path)
        .arg("key")
        .arg("hex")
        .args(&k)
        .status()
        .unwrap();
    assert!(del.success(), "deleting from {map}");
    (k, value)
}

fn bpf_put(d: &TestDaemon, map: &str, key: &[String], value: &[String]) {
    let ok = std::process::Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(d.bpffs.join("maps").join(map))
        .args(["key", "hex"])
        .args(key)
        .args(["value", "hex"])
        .args(value)
        .status()
        .unwrap();
    assert!(ok.success(), "updating {map}");
}

/// Delete the rule of `table` (in the test's host namespace) whose `iptables-save` line starts
/// with `prefix`; returns the line with `-A` (to put it back with `iptables -t TABLE LINE`).
fn ipt_take(th: &TestHost, table: &str, prefix: &str) -> String {
    let save = th.host.exec_ok(&["iptables-save", "-t", table]).unwrap();
    let line =
        save.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {save}")).to_string();
    let del = line.replacen("-A ", "-D ", 1);
    th.host.exec_ok(&[&["iptables", "-t", table], &del.split_whitespace().collect::<Vec<_>>()[..]].concat()).unwrap();
    line
}

fn harness(dataplane: &str) {
    let th = TestHost::new(&format!("cni{}", &dataplane[..1])).unwrap();
    let mut d = daemon(&th, dataplane);
    let rt = runtime(&th, &d, "netdnet", "1.0.0", json!({"network": "cn1", "subnet": "203.0.113.0/24"}));

    // VERSION.
    let v = rt.version();
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(v.json()["supportedVersions"], json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"]));

    // ADD: the network is created from the config's keys; a full result.
    let c1 = Netns::new(&unique("cnc")).unwrap();
    let r = rt.add(
        "ctr1",
        &c1.path(),
        "eth0",
        &ports(json!([{"hostPort": 8080, "containerPort": 7000, "protocol": "tcp"}])),
    );
    assert_eq!(r.code, 0, "{r:?}\n{}", d.log());
    let res = r.json();
    assert_eq!(res["cniVersion"], "1.0.0");
    let ifs = res["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3, "{res}");
    assert!(ifs[0]["name"].as_str().unwrap().starts_with("br-"), "{res}");
    assert!(ifs[1]["name"].as_str().unwrap().starts_with("veth"), "{res}");
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], c1.path());
    for i in ifs {
        let mac = i["mac"].as_str().unwrap();
        assert!(netd::ipam::parse_mac(mac).is_ok(), "unparsable mac {mac:?} in {res}");
    }
    assert_eq!(res["ips"], json!([{"address": "203.0.113.2/24", "gateway": "203.0.113.1", "interface": 2}]));
    assert_eq!(res["routes"], json!([{"dst": "0.0.0.0/0", "gw": "203.0.113.1"}]));
    let addr_out = c1.exec_ok(&["ip", "-o", "-4", "addr", "show", "eth0"]).unwrap();
    assert!(addr_out.contains("203.0.113.2/24"), "{addr_out}");
    let route = c1.exec_ok(&["ip", "route", "show", "default"]).unwrap();
    assert!(route.contains("via 203.0.113.1 dev eth0"), "{route}");
    let mac_out = c1.exec_ok(&["ip", "-o", "link", "show", "eth0"]).unwrap();
    assert!(mac_out.contains(ifs[2]["mac"].as_str().unwrap()), "{mac_out}");
    let net: Value = serde_json::from_str(&d.ok(&["network", "inspect", "cn1"])).unwrap();
    assert_eq!(net[0]["IPAM"]["Config"][0]["Subnet"], "203.0.113.0/24");
    let bridge = ifs[0]["name"].as_str().unwrap().to_string();
    assert_eq!(bridge_ports(&th, &bridge), [ifs[1]["name"].as_str().unwrap()]);

    // CHECK passes with prevResult; ADD again for the same (container, ifname) fails.
    let c = rt.check("ctr1", &c1.path(), "eth0", &json!({}));
    assert_eq!(c.code, 0, "{c:?}");
    assert_eq!(c.stdout.trim(), "");
    let again = rt.add("ctr1", &c1.path(), "eth0", &json!({}));
    assert_eq!(again.err_code(), 102, "{again:?}");

    // A taken host port: code 100, Docker's message, nothing left behind.
    let c2 = Netns::new(&unique("cnc")).unwrap();
    let clash = rt.add(
        "ctr2",
        &c2.path(),
        "eth0",
        &ports(json!([{"hostPort": 9090, "containerPort": 1}, {"hostPort": 8080, "containerPort": 7000}])),
    );
    assert_eq!(clash.err_code(), 100, "{clash:?}");
    assert_eq!(clash.err_msg(), "Bind for 0.0.0.0:8080 failed: port is already allocated");
    assert_eq!(clash.json()["cniVersion"], "1.0.0");
    assert!(!has_eth0(&c2), "no interface left in the container");
    assert_eq!(bridge_ports(&th, &bridge).len(), 1, "no veth left on the bridge");
    // The address and 9090 were rolled back: the next ADD gets .3 and 9090.
    let r2 = rt.add("ctr2", &c2.path(), "eth0", &ports(json!([{"hostPort": 9090, "containerPort": 1}])));
    assert_eq!(r2.code, 0, "{r2:?}");
    assert_eq!(result_ip(&r2.json()), "203.0.113.3");

    // ips and mac capabilities; a taken static address is code 101.
    let c3 = Netns::new(&unique("cnc")).unwrap();
    let r3 = rt.add("ctr3", &c3.path(), "eth0", &json!({"ips": ["203.0.113.50/24"], "mac": "02:00:00:00:aa:01"}));
    assert_eq!(r3.code, 0, "{r3:?}");
    assert_eq!(result_ip(&r3.json()), "203.0.113.50");
    assert_eq!(r3.json()["interfaces"][2]["mac"], "02:00:00:00:aa:01");
    let c4 = Netns::new(&unique("cnc")).unwrap();
    let taken = rt.add("ctr4", &c4.path(), "eth0", &json!({"ips": ["203.0.113.50/24"]}));
    assert_eq!(taken.err_code(), 101, "{taken:?}");
    assert!(!has_eth0(&c4));

    // CHECK notices a missing default route (code 103), and passes again once it is back.
    c1.exec_ok(&["ip", "route", "del", "default"]).unwrap();
    let bad = rt.check("ctr1", &c1.path(), "eth0", &json!({}));
    assert_eq!(bad.err_code(), 103, "{bad:?}");
    assert!(bad.err_msg().contains("default route"), "{bad:?}");
    c1.exec_ok(&["ip", "route", "add", "default", "via", "203.0.113.1"]).unwrap();
    assert_eq!(rt.check("ctr1", &c1.path(), "eth0", &json!({})).code, 0);
    // CHECK reads the dataplane as the kernel holds it: the endpoint and the published port,
    // removed behind netd's back, fail it (code 103, what is missing named); put back, it passes.
    let breaks: [(&str, Vec<u8>, &str); 2] = if dataplane == "ebpf" {
        [
            ("ENDPOINTS", vec![203, 0, 113, 2], "endpoint 203.0.113.2 is missing"),
            ("PUBLISHED_V4", vec![0, 0, 0, 0, 0x1f, 0x90, 6, 0], "published port 0.0.0.0:8080/tcp is missing"),
        ]
    } else {
        [
            ("raw", Vec::new(), "-A NETD-RAW -d 203.0.113.2/32"),
            ("nat", Vec::new(), "-A NETD -p tcp -m tcp --dport 8080 -j DNAT --to-destination 203.0.113.2:7000"),
        ]
    };
    for (what, key, want) in breaks {
        let undo = if dataplane == "ebpf" {
            Undo::Map(bpf_take(&d, what, &key), what)
        } else {
            Undo::Rule(ipt_take(&th, what, want), what)
        };
        let bad = rt.check("ctr1", &c1.path(), "eth0", &json!({}));
        assert_eq!(bad.err_code(), 103, "{what} removed: {bad:?}");
        assert!(bad.err_msg().contains(want.trim_start_matches("-A ")), "{what}: {}", bad.err_msg());
        match undo {
            Undo::Map((k, v), m) => bpf_put(&d, m, &k, &v),
            Undo::Rule(line, t) => th
                .host
                .exec_ok(&[&["iptables", "-t", t], &line.split_whitespace().collect::<Vec<_>>()[..]].concat())
                .map(drop)
                .unwrap(),
        }
        let ok = rt.check("ctr1", &c1.path(), "eth0", &json!({}));
        assert_eq!(ok.code, 0, "{what} put back: {ok:?}");
    }
    // CHECK of an unknown container.
    let unknown = rt.check("nosuch", &c4.path(), "eth0", &json!({}));
    assert_ne!(unknown.code, 0, "{unknown:?}");

    // DEL: idempotent; frees the port.
    assert_eq!(rt.del("ctr1", &c1.path(), "eth0", &json!({})).code, 0);
    assert!(!has_eth0(&c1));
    assert_eq!(rt.del("ctr1", &c1.path(), "eth0", &json!({})).code, 0, "second DEL");
    let r5 = rt.add("ctr4", &c4.path(), "eth0", &ports(json!([{"hostPort": 8080, "containerPort": 7000}])));
    assert_eq!(r5.code, 0, "8080 is free after DEL: {r5:?}");
    // DEL after the runtime removed the namespace (and without CNI_NETNS).
    let gone = Netns::new(&unique("cnc")).unwrap();
    assert_eq!(rt.add("ctr5", &gone.path(), "eth0", &json!({})).code, 0);
    let before = bridge_ports(&th, &bridge).len();
    drop(gone);
    assert_eq!(rt.del("ctr5", "", "eth0", &json!({})).code, 0);
    assert!(bridge_ports(&th, &bridge).len() < before, "DEL removed the host veth");

    // Repeated ADD/DEL of one container: no leftovers, same address each time.
    let c6 = Netns::new(&unique("cnc")).unwrap();
    let base = bridge_ports(&th, &bridge).len();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let a = rt.add(
            "ctr6",
            &c6.path(),
            "eth1",
            &ports(json!([{"hostPort": 7070, "containerPort": 70, "protocol": "udp"}])),
        );
        assert_eq!(a.code, 0, "{a:?}");
        seen.push(result_ip(&a.json()));
        assert_eq!(rt.del("ctr6", &c6.path(), "eth1", &json!({})).code, 0);
    }
    seen.dedup();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(bridge_ports(&th, &bridge).len(), base);

    // Versions: a 0.4.0 config gets a 0.4.0-shaped result; CHECK is refused below 0.4.0.
    let old = runtime(&th, &d, "netdnet", "0.4.0", json!({"network": "cn1"}));
    let c7 = Netns::new(&unique("cnc")).unwrap();
    let r7 = old.add("ctr7", &c7.path(), "eth0", &json!({}));
    assert_eq!(r7.code, 0, "{r7:?}");
    assert_eq!((r7.json()["cniVersion"].clone(), r7.json()["ips"][0]["version"].clone()), (json!("0.4.0"), json!("4")));
    assert_eq!(old.check("ctr7", &c7.path(), "eth0", &json!({})).code, 0);
    let older = runtime(&th, &d, "netdnet", "0.3.1", json!({"network": "cn1"}));
    assert_eq!(older.check("ctr7", &c7.path(), "eth0", &json!({})).err_code(), 1);

    // GC (1.1.0): this config's attachments not listed go; the listed ones, another config's
    // and netd's own sandboxes on the same network stay.
    let gcrt = runtime(&th, &d, "netdnet", "1.1.0", json!({"network": "cn1"}));
    assert_eq!(gcrt.status().code, 0);
    let other = runtime(&th, &d, "othercfg", "1.0.0", json!({"network": "cn1"}));
    let c8 = Netns::new(&unique("cnc")).unwrap();
    assert_eq!(other.add("ctr8", &c8.path(), "eth0", &json!({})).code, 0);
    d.ok(&["run", "-d", "--name", "sb", "--network", "cn1", "--", "sleep", "300"]);
    let g = gcrt.gc(&[("ctr2", "eth0")]);
    assert_eq!(g.code, 0, "{g:?}");
    assert!(has_eth0(&c2), "listed attachment kept");
    assert!(has_eth0(&c8), "another config's attachment kept");
    for (ns, what) in [(&c3, "ctr3"), (&c4, "ctr4"), (&c7, "ctr7")] {
        assert!(!has_eth0(ns), "{what} collected");
    }
    let sb = d.inspect("sb");
    assert_eq!(sb["State"]["Status"], "running");
    assert!(sb["NetworkSettings"]["Networks"]["cn1"]["IPAddress"].as_str().is_some_and(|s| !s.is_empty()));
    // `aliases` (and the runtime's container name, K8S_POD_NAME) resolve through netd's embedded
    // DNS for the network's sandboxes.
    let ca = Netns::new(&unique("cnc")).unwrap();
    let ra = rt.add_with_args(
        "ctra",
        &ca.path(),
        "eth0",
        &json!({"aliases": {"netdnet": ["dbalias"]}}),
        "IgnoreUnknown=1;K8S_POD_NAME=podweb",
    );
    assert_eq!(ra.code, 0, "{ra:?}");
    let aip = result_ip(&ra.json());
    for name in ["dbalias", "podweb"] {
        let ok = (0..3).any(|_| {
            let r = d.cli(&["exec", "sb", "--", "getent", "hosts", name]);
            r.code == 0 && r.stdout.split_whitespace().next() == Some(aip.as_str())
        });
        assert!(ok, "{name} does not resolve to {aip} from a sandbox on the network");
    }
    // Inside CNI containers: netd's resolver at 127.0.0.11 (offered in the result) answers the
    // network's names, the CNI aliases and netd's sandboxes alike; DEL takes it away.
    assert_eq!(ra.json()["dns"]["nameservers"], json!(["127.0.0.11"]), "{}", ra.stdout);
    let sbip = d.inspect("sb")["NetworkSettings"]["Networks"]["cn1"]["IPAddress"].as_str().unwrap().to_string();
    let lookup = |ns: &Netns, name: &str| -> Option<String> {
        let o = ns.exec(&["timeout", "5", "busybox", "nslookup", name, "127.0.0.11"]).ok()?;
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        // The answer section follows the server's own "Address: 127.0.0.11:53".
        out.lines()
            .filter_map(|l| l.strip_prefix("Address: "))
            .map(str::trim)
            .find(|a| !a.starts_with("127.0.0.11"))
            .map(str::to_string)
    };
    for (name, want) in [("dbalias", aip.as_str()), ("podweb", aip.as_str()), ("sb", sbip.as_str())] {
        assert_eq!(lookup(&c2, name).as_deref(), Some(want), "{name} from CNI container ctr2");
    }
    assert_eq!(lookup(&ca, "dbalias").as_deref(), Some(aip.as_str()), "its own alias");
    assert_eq!(rt.del("ctr2", &c2.path(), "eth0", &json!({})).code, 0);
    assert_eq!(lookup(&c2, "dbalias"), None, "the resolver outlived DEL");
    // A daemon killed and restarted: the CNI container's resolver is back (its namespace path is
    // visible to the daemon here) and CHECK finds the replayed dataplane intact.
    d.kill9_and_restart().unwrap();
    assert_eq!(lookup(&ca, "dbalias").as_deref(), Some(aip.as_str()), "resolver after a restart");
    let ck = rt.check("ctra", &ca.path(), "eth0", &json!({}));
    assert_eq!(ck.code, 0, "CHECK after a restart: {ck:?}");
    // 8080 (ctr4's) is free again.
    let c9 = Netns::new(&unique("cnc")).unwrap();
    assert_eq!(rt.add("ctr9", &c9.path(), "eth0", &ports(json!([{"hostPort": 8080, "containerPort": 1}]))).code, 0);

    // Error paths.
    let e = rt.exec_raw(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "x")], b"{}");
    assert_eq!(e.err_code(), 4, "{e:?}");
    let e = rt.exec_raw(
        &[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "x"), ("CNI_NETNS", &c9.path()), ("CNI_IFNAME", "eth0")],
        b"{not json",
    );
    assert_eq!(e.err_code(), 6);
    let bad = runtime(&th, &d, "netdnet", "1.0.0", json!({"network": "cn2", "subnet": "203.0.113.0/33"}));
    let e = bad.add("x1", &c9.path(), "eth1", &json!({}));
    assert_eq!(e.err_code(), 7, "{e:?}");
    let nonet = runtime(&th, &d, "netdnet", "1.0.0", json!({"network": "nosuchnet"}));
    let e = nonet.add("x1", &c9.path(), "eth1", &json!({}));
    assert_eq!(e.err_code(), 104, "{e:?}");
    assert!(e.err_msg().contains("network nosuchnet not found"), "{e:?}");
    let e = rt.add("x1", "/run/netns/does-not-exist", "eth1", &json!({}));
    assert_eq!(e.err_code(), 3, "{e:?}");
    let e = rt.add("x1", &c9.path(), "eth1", &ports(json!([{"hostPort": 1, "containerPort": 1, "protocol": "sctp"}])));
    assert_eq!(e.err_code(), 7);
    let e = rt.add("x1", &c9.path(), "eth1", &json!({"ips": ["198.51.100.77/24"]}));
    assert_eq!(e.err_code(), 101, "an address outside the subnet: {e:?}");
    assert!(!c9.exec_ok(&["ip", "link"]).unwrap().contains("eth1"), "failed ADDs left nothing");
    // The daemon is down: STATUS says 50.
    let mut gone_d = runtime(&th, &d, "netdnet", "1.1.0", json!({"network": "cn1"}));
    gone_d.plugin["socket"] = json!("/run/netd-test/no-such-daemon.sock");
    let s = gone_d.status();
    assert_eq!(s.err_code(), 50, "{s:?}");
    assert!(s.err_msg().starts_with("Cannot connect to the netd daemon at unix:///run/netd-test/no-such-daemon.sock"));
}

#[test]
fn harness_every_verb_and_error_path_ebpf() {
    require_root!();
    harness("ebpf");
}

#[test]
fn harness_every_verb_and_error_path_iptables() {
    require_root!();
    harness("iptables");
}

/// UDP echo from a fixed source port (so a stale conntrack entry would catch it).
fn udp_from(ns: &str, src: u16, dst: SocketAddr, payload: &[u8]) -> anyhow::Result<probe::Echo> {
    let payload = payload.to_vec();
    in_netns(ns, move || -> anyhow::Result<probe::Echo> {
        let s = UdpSocket::bind(("0.0.0.0", src))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 2048];
        for _ in 0..6 {
            s.send_to(&payload, dst)?;
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return probe::parse_echo(&buf[..n]);
            }
        }
        anyhow::bail!("udp {dst} from :{src}: no echo")
    })?
}

/// The reference `portmap` plugin's integration checklist, on netd.
fn portmap_checklist(dataplane: &str) {
    let th = TestHost::new(&format!("cpm{}", &dataplane[..1])).unwrap();
    let d = daemon(&th, dataplane);
    let rt = runtime(&th, &d, "netdnet", "1.0.0", json!({"network": "cpm", "subnet": "203.0.113.0/24"}));
    let c1 = Netns::new(&unique("cpc")).unwrap();
    let _s1 = probe::EchoServer::start(&c1.path(), addr("0.0.0.0:7000"), "c1").unwrap();
    let maps = ports(json!([{"hostPort": 8080, "containerPort": 7000, "protocol": "tcp"},
                            {"hostPort": 5353, "containerPort": 7000, "protocol": "udp"}]));
    let r = rt.add("pm1", &c1.path(), "eth0", &maps);
    assert_eq!(r.code, 0, "{r:?}\n{}", d.log());
    let ip = result_ip(&r.json());
    let host = th.host.path();
    let out = th.outside.path();
    // 1. The container IP directly (from the host).
    let e = probe::tcp_echo(&host, format!("{ip}:7000").parse().unwrap(), b"direct").expect("container IP");
    assert_eq!(e.tag, "c1");
    // 2. Host IP:hostPort from outside (DNAT); the container sees the client.
    let e = probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"dnat").expect("host ip:8080 from outside");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("c1", "198.51.100.2"));
    let e = probe::udp_echo(&out, addr("198.51.100.1:5353"), b"u").expect("udp 5353 from outside");
    assert_eq!(e.tag, "c1");
    // A v6 client: the `[::]` twin of the v4-only container's mapping is NAT46 on eBPF (the
    // container sees its gateway; the daemon has no IPv6 network at all, so the first such
    // binding loads the v6 programs and turns IPv6 forwarding on); none on iptables.
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8080"), b"nat46");
    if dataplane == "ebpf" {
        let e = e.expect("[::]:8080 from a v6 client");
        assert_eq!((e.tag.as_str(), e.peer.as_str()), ("c1", "203.0.113.1"));
        let e = probe::udp_echo(&out, addr("[2001:db8:100::1]:5353"), b"u46").expect("udp [::]:5353 from a v6 client");
        assert_eq!(e.tag, "c1");
    } else {
        assert!(e.is_err(), "a v4-only CNI container reached over IPv6 on iptables: {e:?}");
    }
    // 3. 127.0.0.1:hostPort and host IP:hostPort from the host.
    for a in ["127.0.0.1:8080", "198.51.100.1:8080"] {
        let e = probe::tcp_echo(&host, addr(a), b"local").unwrap_or_else(|e| panic!("{a} from the host: {e:#}"));
        assert_eq!(e.tag, "c1", "{a}");
    }
    // 4. Hairpin: host IP:hostPort from inside the same container.
    let e = probe::tcp_echo(&c1.path(), addr("198.51.100.1:8080"), b"hairpin").expect("hairpin");
    assert_eq!(e.tag, "c1");
    // Masquerade: the container reaching outside shows up as the host.
    let _ext = probe::EchoServer::start(&out, addr("198.51.100.2:9000"), "ext").unwrap();
    let e = probe::tcp_echo(&c1.path(), addr("198.51.100.2:9000"), b"out").expect("container to outside");
    assert_eq!(e.peer, "198.51.100.1", "masqueraded");
    // 5. UDP: a second container reuses the host port after the first is deleted; a client
    // keeping its source port reaches the new one (no stale translation).
    let e = udp_from(&out, 40_000, addr("198.51.100.1:5353"), b"a").expect("udp to c1");
    assert_eq!(e.tag, "c1");
    assert_eq!(rt.del("pm1", &c1.path(), "eth0", &maps).code, 0);
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"x").is_err(), "deleted container still answers");
    let c2 = Netns::new(&unique("cpc")).unwrap();
    let _s2 = probe::EchoServer::start(&c2.path(), addr("0.0.0.0:7000"), "c2").unwrap();
    let r = rt.add("pm2", &c2.path(), "eth0", &maps);
    assert_eq!(r.code, 0, "{r:?}");
    let e = udp_from(&out, 40_000, addr("198.51.100.1:5353"), b"b").expect("udp to c2 from the same source port");
    assert_eq!(e.tag, "c2");
    let e = probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"c2").expect("tcp to c2");
    assert_eq!(e.tag, "c2");
    assert_eq!(rt.del("pm2", &c2.path(), "eth0", &maps).code, 0);
}

#[test]
fn portmap_checklist_ebpf() {
    require_root!();
    portmap_checklist("ebpf");
}

#[test]
fn portmap_checklist_iptables() {
    require_root!();
    portmap_checklist("iptables");
}

/// Real podman (CNI backend, private roots, its own mount namespace): a published port from
/// outside, from 127.0.0.1 and by hairpin; masquerade; `podman rm -f` leaves nothing.
fn podman_run(dataplane: &str) {
    if !netd_tests::podman::available() {
        eprintln!("SKIP: podman, crun or busybox-static not installed (cargo xtask setup)");
        return;
    }
    let th = TestHost::new(&format!("cpo{}", &dataplane[..1])).unwrap();
    let d = daemon(&th, dataplane);
    let pm = netd_tests::podman::Podman::start(&th, &d, "netdnet", "netdnet", "203.0.113.0/24").unwrap();
    let info = pm.ok(&["info", "--format", "{{.Host.NetworkBackend}}"]).unwrap();
    assert_eq!(info.trim(), "cni");
    let out = th.outside.path();
    let _ext = probe::EchoServer::start(&out, addr("198.51.100.2:9000"), "ext").unwrap();
    pm.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "netdnet",
        "-p",
        "8080:80",
        "localhost/bb:1",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ])
    .unwrap_or_else(|e| panic!("{e:#}\n{}", d.log()));
    assert_eq!(pm.ok(&["port", "web"]).unwrap().trim(), "80/tcp -> 0.0.0.0:8080");
    let ip = pm.ok(&["inspect", "web", "--format", "{{.NetworkSettings.Networks.netdnet.IPAddress}}"]).unwrap();
    assert_eq!(ip.trim(), "203.0.113.2");
    let wget = |ns: &str, url: &str| -> String {
        let o = std::process::Command::new("nsenter")
            .args([&format!("--net={ns}"), "--", "timeout", "5", "busybox", "wget", "-qO-", url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // From outside, from the host's loopback (conmon holds :8080, netd's translation wins), by IP.
    assert_eq!(wget(&out, "http://198.51.100.1:8080/"), "ok\n", "from outside");
    // The container is IPv4-only: a mapping without hostIP is published on `[::]` too. On eBPF
    // a v6 client reaches it through NAT46 in the programs (conmon holds only 0.0.0.0:8080); on
    // iptables CNI bindings have no proxy and ip6tables cannot translate v6 to v4, so there is
    // no `[::]` binding (as the reference `portmap` plugin).
    let v6 = wget(&out, "http://[2001:db8:100::1]:8080/");
    if dataplane == "ebpf" {
        assert_eq!(v6, "ok\n", "[::]:8080 from a v6 client");
        assert_eq!(wget(&th.host.path(), "http://[::1]:8080/"), "ok\n", "[::1]:8080 from the host");
    } else {
        assert!(v6.is_empty(), "a v6 client reached a v4-only CNI container on iptables: {v6}");
    }
    assert_eq!(wget(&th.host.path(), "http://127.0.0.1:8080/"), "ok\n", "from 127.0.0.1");
    assert_eq!(wget(&th.host.path(), "http://203.0.113.2/"), "ok\n", "container IP");
    // Hairpin: the container to the host's address and its own published port.
    let h = pm.ok(&["exec", "web", "wget", "-qO-", "http://198.51.100.1:8080/"]).unwrap();
    assert_eq!(h, "ok\n", "hairpin");
    // Masquerade: the outside server sees the host's address.
    let m = pm.ok(&["exec", "web", "sh", "-c", "echo hi | nc -w 2 198.51.100.2 9000"]).unwrap();
    assert_eq!(m.trim(), "ext:198.51.100.1:hi", "masquerade");
    // Names: podman writes the resolver the result offers (127.0.0.11) into the container's
    // resolv.conf; netd answers another container's name (K8S_POD_NAME) there.
    pm.ok(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "netdnet",
        "--network-alias",
        "pgsql",
        "localhost/bb:1",
        "sleep",
        "300",
    ])
    .unwrap();
    let dbip = pm.ok(&["inspect", "db", "--format", "{{.NetworkSettings.Networks.netdnet.IPAddress}}"]).unwrap();
    let rc = pm.ok(&["exec", "web", "cat", "/etc/resolv.conf"]).unwrap();
    assert!(rc.lines().any(|l| l.trim() == "nameserver 127.0.0.11"), "{rc}");
    let l = pm.ok(&["exec", "web", "nslookup", "db"]).unwrap();
    assert!(l.lines().any(|x| x.trim() == format!("Address: {}", dbip.trim())), "db from web: {l}");
    let l = pm.ok(&["exec", "web", "nslookup", "pgsql"]).unwrap();
    assert!(l.lines().any(|x| x.trim() == format!("Address: {}", dbip.trim())), "--network-alias pgsql from web: {l}");
    pm.ok(&["rm", "-f", "-t", "0", "db"]).unwrap();
    // rm -f leaves nothing: no veth on the bridge, no attachment record, the port is free.
    let net: Value = serde_json::from_str(&d.ok(&["network", "inspect", "netdnet"])).unwrap();
    let bridge = net[0]["Options"]["com.docker.network.bridge.name"].as_str().map(str::to_string);
    // `-t 0`: httpd is PID 1 and ignores SIGTERM; podman would wait its 10 s stop timeout.
    pm.ok(&["rm", "-f", "-t", "0", "web"]).unwrap();
    let bridge = bridge.unwrap_or_else(|| format!("br-{}", &net[0]["Id"].as_str().unwrap()[..12]));
    assert!(bridge_ports(&th, &bridge).is_empty(), "veth left after rm -f");
    let recs = std::fs::read_dir(d.data_root().join("attachments")).map(|r| r.count()).unwrap_or(0);
    assert_eq!(recs, 0, "attachment record left after rm -f");
    // Nor map entries / rules of the container.
    if dataplane == "ebpf" {
        for m in ["ENDPOINTS", "PUBLISHED_V4", "PUBLISHED_V6"] {
            let o = std::process::Command::new("bpftool")
                .args(["-j", "map", "dump", "pinned"])
                .arg(d.bpffs.join("maps").join(m))
                .output()
                .unwrap();
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v.as_array().map_or(usize::MAX, Vec::len), 0, "{m} entries left after rm -f: {v}");
        }
    } else {
        let rules = th.host.exec_ok(&["iptables-save"]).unwrap();
        assert!(!rules.contains("203.0.113.2"), "rules of the container left after rm -f:\n{rules}");
    }
    assert!(wget(&out, "http://198.51.100.1:8080/").is_empty(), "8080 still answers");
    let rt = runtime(&th, &d, "netdnet", "1.0.0", json!({"network": "netdnet"}));
    let c = Netns::new(&unique("cpp")).unwrap();
    let r = rt.add("after", &c.path(), "eth0", &ports(json!([{"hostPort": 8080, "containerPort": 80}])));
    assert_eq!(r.code, 0, "8080 reusable after rm -f: {r:?}");
    assert_eq!(rt.del("after", &c.path(), "eth0", &json!({})).code, 0);
}

#[test]
fn podman_run_publish_ebpf() {
    require_root!();
    podman_run("ebpf");
}

#[test]
fn podman_run_publish_iptables() {
    require_root!();
    podman_run("iptables");
}

/// The config keys with real packets: `hostIP` bindings answer on that address only, `mtu` is
/// the pod's interface's and the path's, an `internal` network has no way out (nor in),
/// `icc: false` keeps pods apart, `gateway` is the pods' way out; networks are isolated and a
/// pod's address is not reachable from outside (Docker 28); the daemon found by `NETD_HOST`.
fn config_keys(dataplane: &str) {
    let th = TestHost::new(&format!("cck{}", &dataplane[..1])).unwrap();
    let d = daemon(&th, dataplane);
    let host = th.host.path();
    let out = th.outside.path();
    // hostIP: a binding on 198.51.100.1 and one on 127.0.0.1; the host has 198.51.100.3 too.
    th.host.exec_ok(&["ip", "addr", "add", "198.51.100.3/24", "dev", "up0"]).unwrap();
    let rt = runtime(&th, &d, "netdnet", "1.0.0", json!({"network": "ck1", "subnet": "203.0.113.0/26"}));
    let h1 = Netns::new(&unique("ckc")).unwrap();
    let _s1 = probe::EchoServer::start(&h1.path(), addr("0.0.0.0:7000"), "h1").unwrap();
    let maps = ports(json!([{"hostPort": 8081, "containerPort": 7000, "hostIP": "198.51.100.1"},
                            {"hostPort": 8082, "containerPort": 7000, "hostIP": "127.0.0.1"}]));
    let r = rt.add("h1", &h1.path(), "eth0", &maps);
    assert_eq!(r.code, 0, "{r:?}\n{}", d.log());
    for (ns, a, answers) in [
        (&out, "198.51.100.1:8081", true),
        (&out, "198.51.100.3:8081", false),
        (&host, "198.51.100.1:8081", true),
        (&host, "198.51.100.3:8081", false),
        (&host, "127.0.0.1:8081", false),
        (&host, "127.0.0.1:8082", true),
        (&host, "198.51.100.1:8082", false),
        (&out, "198.51.100.1:8082", false),
    ] {
        let e = probe::tcp_echo(ns, addr(a), b"hostip");
        let from = if *ns == out { "outside" } else { "the host" };
        match (answers, e) {
            (true, Ok(e)) => assert_eq!(e.tag, "h1", "{a} from {from}"),
            (true, Err(e)) => panic!("{a} from {from}: {e:#}"),
            (false, Ok(e)) => panic!("{a} from {from} answered ({e:?}): the binding is on another address"),
            (false, Err(_)) => {}
        }
    }
    assert_eq!(rt.del("h1", &h1.path(), "eth0", &maps).code, 0);

    // The config's "network" is a name: one that happens to prefix another network's id (here
    // the none network's short id) is still created and used as a network of its own, never
    // taken for that network (tests naming networks "c4" failed ~1 run in 100 that way).
    let none_id: Value = serde_json::from_str(&d.ok(&["network", "inspect", "none"])).unwrap();
    let short = none_id[0]["Id"].as_str().unwrap()[..12].to_string();
    let rtp = runtime(&th, &d, "prefixnet", "1.0.0", json!({"network": short, "subnet": "203.0.113.192/27"}));
    let p1 = Netns::new(&unique("ckc")).unwrap();
    let r = rtp.add("p1", &p1.path(), "eth0", &json!({}));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.json()["ips"][0]["address"].as_str().unwrap().starts_with("203.0.113.19"), "{}", r.stdout);
    let made: Value = serde_json::from_str(&d.ok(&["network", "inspect", &short])).unwrap();
    assert_eq!(made[0]["Name"], short.as_str(), "{made}");
    assert_eq!(made[0]["Driver"], "bridge", "{made}");
    assert_eq!(rtp.del("p1", &p1.path(), "eth0", &json!({})).code, 0);
    d.ok(&["network", "rm", &short]); // its subnet is the icc network's below

    // mtu: the network made from the config has it; the pod's interface, the host veth and the
    // path to outside carry 1400-byte packets and no bigger (DF).
    let rtm =
        runtime(&th, &d, "mtunet", "1.1.0", json!({"network": "ckmtu", "subnet": "203.0.113.64/26", "mtu": 1400}));
    let m1 = Netns::new(&unique("ckc")).unwrap();
    let r = rtm.add("m1", &m1.path(), "eth0", &json!({}));
    assert_eq!(r.code, 0, "{r:?}");
    let res = r.json();
    assert_eq!(res["interfaces"][2]["mtu"], 1400, "{res}");
    assert!(m1.exec_ok(&["ip", "-o", "link", "show", "eth0"]).unwrap().contains(" mtu 1400 "));
    let hv = res["interfaces"][1]["name"].as_str().unwrap();
    assert!(th.host.exec_ok(&["ip", "-o", "link", "show", hv]).unwrap().contains(" mtu 1400 "));
    let ping =
        |size: &str| m1.exec(&["ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", size, "198.51.100.2"]).unwrap();
    let p = ping("1372");
    assert!(p.status.success(), "1400-byte packet to outside: {}", String::from_utf8_lossy(&p.stdout));
    let p = ping("1373");
    assert!(!p.status.success(), "1401 bytes passed an mtu-1400 interface");
    assert!(
        String::from_utf8_lossy(&p.stderr).contains("mtu=1400")
            || String::from_utf8_lossy(&p.stdout).contains("mtu=1400"),
        "{p:?}"
    );

    // internal: no default route (nor routes in the result), the pods reach each other, nothing
    // leaves (even with a default route added by hand) and nothing comes in from outside.
    let rti = runtime(
        &th,
        &d,
        "intnet",
        "1.0.0",
        json!({"network": "ckint", "subnet": "203.0.113.128/26", "internal": true}),
    );
    let i1 = Netns::new(&unique("ckc")).unwrap();
    let i2 = Netns::new(&unique("ckc")).unwrap();
    let _si1 = probe::EchoServer::start(&i1.path(), addr("0.0.0.0:7000"), "i1").unwrap();
    let r1 = rti.add("i1", &i1.path(), "eth0", &json!({}));
    assert_eq!(r1.code, 0, "{r1:?}");
    assert_eq!(r1.json()["routes"], json!([]), "{}", r1.stdout);
    let r2 = rti.add("i2", &i2.path(), "eth0", &json!({}));
    assert_eq!(r2.code, 0, "{r2:?}");
    let i1ip = result_ip(&r1.json());
    assert!(i1.exec_ok(&["ip", "route", "show", "default"]).unwrap().trim().is_empty());
    let e = probe::tcp_echo(&i2.path(), format!("{i1ip}:7000").parse().unwrap(), b"icc").expect("pod to pod");
    assert_eq!(e.tag, "i1");
    let _ext = probe::EchoServer::start(&out, addr("198.51.100.2:9000"), "ext").unwrap();
    assert!(probe::tcp_echo(&i2.path(), addr("198.51.100.2:9000"), b"x").is_err(), "no route, no way out");
    i2.exec_ok(&["ip", "route", "add", "default", "via", "203.0.113.129"]).unwrap();
    th.outside.exec_ok(&["ip", "route", "add", "203.0.113.128/26", "via", "198.51.100.1"]).unwrap();
    // icc=false and gateway (a network made through NETD_HOST, no `socket` key): the pods get
    // that gateway and reach outside through it, but not each other.
    let mut rtc = runtime(
        &th,
        &d,
        "iccnet",
        "1.0.0",
        json!({"network": "ckicc", "subnet": "203.0.113.192/26", "gateway": "203.0.113.254", "icc": false}),
    );
    rtc.plugin.as_object_mut().unwrap().remove("socket");
    rtc.env.push(("NETD_HOST".into(), format!("unix://{}", d.socket.display())));
    let j1 = Netns::new(&unique("ckc")).unwrap();
    let j2 = Netns::new(&unique("ckc")).unwrap();
    let _sj1 = probe::EchoServer::start(&j1.path(), addr("0.0.0.0:7000"), "j1").unwrap();
    let rj1 = rtc.add("j1", &j1.path(), "eth0", &json!({}));
    assert_eq!(rj1.code, 0, "{rj1:?}");
    assert_eq!(rj1.json()["ips"][0]["gateway"], "203.0.113.254", "{}", rj1.stdout);
    assert_eq!(rtc.add("j2", &j2.path(), "eth0", &json!({})).code, 0);
    assert!(j2.exec_ok(&["ip", "route", "show", "default"]).unwrap().contains("via 203.0.113.254"));
    let e = probe::tcp_echo(&j2.path(), addr("198.51.100.2:9000"), b"out").expect("icc=false pod to outside");
    assert_eq!(e.peer, "198.51.100.1", "masqueraded");
    let j1t: SocketAddr = format!("{}:7000", result_ip(&rj1.json())).parse().unwrap();
    let i2p = i2.path();
    let j2p = j2.path();
    let target: SocketAddr = format!("{i1ip}:7000").parse().unwrap();
    // Isolation between networks and Docker 28's direct-access protection: a pod of another
    // network and the outside (routed to the subnet) cannot reach j1, the host can.
    th.outside.exec_ok(&["ip", "route", "add", "203.0.113.192/26", "via", "198.51.100.1"]).unwrap();
    let e = probe::tcp_echo(&host, j1t, b"h").expect("the host to a pod's address");
    assert_eq!(e.tag, "j1");
    let m1p = m1.path();
    let (leave, enter, icc, other_net, direct) = std::thread::scope(|s| {
        let a = s.spawn(|| probe::tcp_echo(&i2p, addr("198.51.100.2:9000"), b"x"));
        let b = s.spawn(|| probe::tcp_echo(&out, target, b"x"));
        let c = s.spawn(|| probe::tcp_echo(&j2p, j1t, b"x"));
        let d = s.spawn(|| probe::tcp_echo(&m1p, j1t, b"x"));
        let e = s.spawn(|| probe::tcp_echo(&out, j1t, b"x"));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap(), d.join().unwrap(), e.join().unwrap())
    });
    assert!(leave.is_err(), "an internal pod reached outside: {leave:?}");
    assert!(enter.is_err(), "outside reached an internal pod: {enter:?}");
    assert!(icc.is_err(), "pods of an icc=false network reached each other: {icc:?}");
    assert!(other_net.is_err(), "a pod of another network reached j1: {other_net:?}");
    assert!(direct.is_err(), "outside reached a pod's address directly: {direct:?}");
    assert_eq!(rtm.del("m1", &m1.path(), "eth0", &json!({})).code, 0);
    assert_eq!(rtc.del("j1", &j1.path(), "eth0", &json!({})).code, 0);
    assert_eq!(rtc.del("j2", &j2.path(), "eth0", &json!({})).code, 0);
    let e = probe::tcp_echo(&i2.path(), target, b"icc").expect("pod to pod with the route");
    assert_eq!(e.tag, "i1");
    assert_eq!(rti.del("i1", &i1.path(), "eth0", &json!({})).code, 0);
    assert_eq!(rti.del("i2", &i2.path(), "eth0", &json!({})).code, 0);
}

#[test]
fn config_keys_hostip_mtu_internal_icc_ebpf() {
    require_root!();
    config_keys("ebpf");
}

#[test]
fn config_keys_hostip_mtu_internal_icc_iptables() {
    require_root!();
    config_keys("iptables");
}

/// IPv6 through netd-cni: `"subnet6"` in the config makes a dual-stack network; ADD gives the
/// container a v6 address and gateway (a second `ips` entry on the same interface) and a `::/0`
/// route; CHECK verifies them (and fails once the v6 address is gone); portMappings reach the
/// container over IPv6 from outside (no hostIP: `[::]` as well; hostIP `::`: IPv6 only), from
/// the host's own v6 address and by hairpin; NAT66 masquerade; DEL closes the ports and frees
/// the address. A container of an IPv4-only network has IPv6 off on its interface (Docker 26+).
fn dual_stack(dataplane: &str) {
    let th = TestHost::new(&format!("cv6{}", &dataplane[..1])).unwrap();
    let d = daemon(&th, dataplane);
    let rt = runtime(
        &th,
        &d,
        "netd6",
        "1.0.0",
        json!({"network": "c6", "subnet": "203.0.113.0/25", "subnet6": "fd00:c6::/64"}),
    );
    let c1 = Netns::new(&unique("c6c")).unwrap();
    let _s1 = probe::EchoServer::start(&c1.path(), addr("[::]:7000"), "c1").unwrap();
    let maps = ports(json!([{"hostPort": 8080, "containerPort": 7000, "protocol": "tcp"},
                            {"hostPort": 5353, "containerPort": 7000, "protocol": "udp"},
                            {"hostPort": 8081, "containerPort": 7000, "protocol": "tcp", "hostIP": "::"}]));
    let r = rt.add("v6a", &c1.path(), "eth0", &maps);
    assert_eq!(r.code, 0, "{r:?}\n{}", d.log());
    let j = r.json();
    assert_eq!(j["ips"][1], json!({"address": "fd00:c6::2/64", "gateway": "fd00:c6::1", "interface": 2}), "{j}");
    assert!(j["routes"].as_array().unwrap().contains(&json!({"dst": "::/0", "gw": "fd00:c6::1"})), "{j}");
    let a6 = c1.exec_ok(&["ip", "-o", "-6", "addr", "show", "eth0"]).unwrap();
    assert!(a6.contains("fd00:c6::2/64"), "{a6}");
    let r6 = c1.exec_ok(&["ip", "-6", "route"]).unwrap();
    assert!(r6.contains("default via fd00:c6::1 dev eth0"), "{r6}");
    let host = th.host.path();
    let out = th.outside.path();
    let e = probe::tcp_echo(&host, addr("[fd00:c6::2]:7000"), b"direct").expect("container v6 from the host");
    assert_eq!(e.tag, "c1");
    // Published over IPv6 from outside; DNAT keeps the client's address.
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8080"), b"dnat6").expect("[host v6]:8080 from outside");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("c1", "2001:db8:100::2"));
    let e = probe::udp_echo(&out, addr("[2001:db8:100::1]:5353"), b"u6").expect("udp [host v6]:5353 from outside");
    assert_eq!(e.tag, "c1");
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8081"), b"only6").expect("hostIP :: from outside");
    assert_eq!(e.tag, "c1");
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:8081"), b"x").is_err(), "hostIP :: answered over IPv4");
    let e = probe::tcp_echo(&out, addr("198.51.100.1:8080"), b"v4").expect("v4 still published");
    assert_eq!(e.tag, "c1");
    // Host processes to a v6 published port (no proxy for CNI bindings): the host's v6 address
    // (ip6tables' OUTPUT DNAT, eBPF's connect6 hook), and `::1` on eBPF only (ip6tables cannot
    // DNAT loopback traffic; the reference `portmap` plugin has the same limit).
    let mut local = vec!["[2001:db8:100::1]:8080"];
    if dataplane == "ebpf" {
        local.push("[::1]:8080");
    }
    for a in local {
        let e = probe::tcp_echo(&host, addr(a), b"local6").unwrap_or_else(|e| panic!("{a} from the host: {e:#}"));
        assert_eq!(e.tag, "c1");
    }
    if dataplane == "ebpf" {
        let u = probe::udp_socket_in(&host, addr("[::]:0")).unwrap();
        let e = probe::udp_echo_on(&u, addr("[::1]:5353"), b"lu6").expect("udp [::1]:5353 from the host");
        assert_eq!(e.tag, "c1");
    }
    let e = probe::tcp_echo(&c1.path(), addr("[2001:db8:100::1]:8080"), b"hairpin6").expect("v6 hairpin");
    assert_eq!(e.tag, "c1");
    // NAT66: the container reaching outside shows up as the host's v6 address.
    let _ext = probe::EchoServer::start(&out, addr("[2001:db8:100::2]:9000"), "ext").unwrap();
    let e = probe::tcp_echo(&c1.path(), addr("[2001:db8:100::2]:9000"), b"out6").expect("container to outside v6");
    assert_eq!(e.peer, "2001:db8:100::1", "masqueraded to the uplink's v6 address");
    // CHECK sees the v6 address and route; without the address it fails.
    let c = rt.check("v6a", &c1.path(), "eth0", &json!({}));
    assert_eq!(c.code, 0, "{c:?}");
    c1.exec_ok(&["ip", "-6", "addr", "del", "fd00:c6::2/64", "dev", "eth0"]).unwrap();
    let c = rt.check("v6a", &c1.path(), "eth0", &json!({}));
    assert_ne!(c.code, 0, "CHECK passed without the v6 address");
    assert!(c.err_msg().contains("fd00:c6::2"), "{c:?}");
    // DEL: ports closed, the address free again for the next container.
    assert_eq!(rt.del("v6a", &c1.path(), "eth0", &maps).code, 0);
    assert!(probe::tcp_echo(&out, addr("[2001:db8:100::1]:8080"), b"x").is_err(), "v6 port open after DEL");
    let c2 = Netns::new(&unique("c6c")).unwrap();
    let r = rt.add("v6b", &c2.path(), "eth0", &json!({"ips": ["fd00:c6::9"]}));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["ips"][1]["address"], "fd00:c6::9/64", "static v6 address from runtimeConfig.ips");
    assert_eq!(rt.del("v6b", &c2.path(), "eth0", &json!({})).code, 0);
    // An IPv4-only network: IPv6 off on the container's interface, and a v6 address refused.
    let rt4 = runtime(&th, &d, "netd4", "1.0.0", json!({"network": "c4", "subnet": "203.0.113.128/25"}));
    let c3 = Netns::new(&unique("c6c")).unwrap();
    let r = rt4.add("v4a", &c3.path(), "eth0", &json!({"ips": ["fd00:c6::7"]}));
    assert_ne!(r.code, 0, "a v6 address on a v4-only network: {r:?}");
    assert!(r.err_msg().contains("IPv6 is not enabled"), "{r:?}");
    let r = rt4.add("v4a", &c3.path(), "eth0", &json!({}));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.json()["ips"].as_array().unwrap().len() == 1, "{}", r.stdout);
    let off = c3.exec_ok(&["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"]).unwrap();
    assert_eq!(off.trim(), "1", "IPv6 on a v4-only network's interface");
    assert_eq!(rt4.del("v4a", &c3.path(), "eth0", &json!({})).code, 0);
    // An IPv6-only network (`"ipv4": false`, Docker 28's --ipv4=false): the container gets the
    // v6 address, gateway and route only; `portMappings` are published on `[::]` only; NAT66.
    let rt6 = runtime(&th, &d, "netd6o", "1.0.0", json!({"network": "c6o", "ipv4": false, "subnet6": "fd00:c7::/64"}));
    let c4 = Netns::new(&unique("c6c")).unwrap();
    let _s4 = probe::EchoServer::start(&c4.path(), addr("[::]:7000"), "c4").unwrap();
    let maps6 = ports(json!([{"hostPort": 8090, "containerPort": 7000, "protocol": "tcp"},
                             {"hostPort": 5390, "containerPort": 7000, "protocol": "udp"}]));
    let r = rt6.add("v6o", &c4.path(), "eth0", &maps6);
    assert_eq!(r.code, 0, "{r:?}\n{}", d.log());
    let j = r.json();
    assert_eq!(j["ips"], json!([{"address": "fd00:c7::2/64", "gateway": "fd00:c7::1", "interface": 2}]), "{j}");
    assert_eq!(j["routes"], json!([{"dst": "::/0", "gw": "fd00:c7::1"}]), "{j}");
    let a4 = c4.exec_ok(&["ip", "-o", "-4", "addr", "show", "eth0"]).unwrap();
    assert!(a4.trim().is_empty(), "a v4 address on an IPv6-only network: {a4}");
    let e = probe::tcp_echo(&out, addr("[2001:db8:100::1]:8090"), b"v6o").expect("[::]:8090 from outside");
    assert_eq!((e.tag.as_str(), e.peer.as_str()), ("c4", "2001:db8:100::2"));
    let e = probe::udp_echo(&out, addr("[2001:db8:100::1]:5390"), b"u6o").expect("udp [::]:5390 from outside");
    assert_eq!(e.tag, "c4");
    assert!(probe::tcp_echo(&out, addr("198.51.100.1:8090"), b"x").is_err(), "v4 binding of an IPv6-only container");
    let e = probe::tcp_echo(&c4.path(), addr("[2001:db8:100::2]:9000"), b"o6").expect("IPv6-only container to outside");
    assert_eq!(e.peer, "2001:db8:100::1", "NAT66");
    let c = rt6.check("v6o", &c4.path(), "eth0", &json!({}));
    assert_eq!(c.code, 0, "CHECK of an IPv6-only container: {c:?}");
    let inspect: Value = serde_json::from_str(&d.ok(&["network", "inspect", "c6o"])).unwrap();
    assert_eq!(inspect[0]["EnableIPv4"], false, "{inspect}");
    assert_eq!(rt6.del("v6o", &c4.path(), "eth0", &maps6).code, 0);
    assert!(probe::tcp_echo(&out, addr("[2001:db8:100::1]:8090"), b"x").is_err(), "v6 port open after DEL");
}

#[test]
fn dual_stack_iptables() {
    require_root!();
    dual_stack("iptables");
}

#[test]
fn dual_stack_ebpf() {
    require_root!();
    dual_stack("ebpf");
}
