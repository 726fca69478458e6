//! User-defined networks with the embedded DNS server: resolution by name, alias and short id
//! on shared networks only, live `network connect`/`disconnect`, upstream forwarding to a DNS
//! server the test runs in the outside namespace, internal networks, and the default bridge's
//! "no names" rule. Runs for both dataplanes.
use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use netd_tests::{
    TestDaemon, TestHost,
    daemon::{Cli, probe_bin},
    require_root,
};
use serde_json::Value;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ip_of(d: &TestDaemon, name: &str, net: &str) -> String {
    let v: Value = serde_json::from_str(&d.ok(&["inspect", name])).unwrap();
    v[0]["NetworkSettings"]["Networks"][net]["IPAddress"].as_str().unwrap().to_string()
}

/// `getent hosts NAME` inside a sandbox: the address, or None when it does not resolve (two
/// tries: DNS is UDP, and a loaded 2-CPU machine can lose a datagram).
fn resolve(d: &TestDaemon, from: &str, name: &str) -> Option<String> {
    for _ in 0..2 {
        let r = d.cli(&["exec", from, "--", "getent", "hosts", name]);
        if r.code == 0 {
            return Some(r.stdout.split_whitespace().next().unwrap_or("").to_string());
        }
        eprintln!("getent hosts {name} in {from}: exit {} {}", r.code, r.stderr);
    }
    None
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn dns_scenario(dataplane: &str) {
    let th = TestHost::new(&format!("dn{}", &dataplane[..1])).unwrap();
    // The upstream DNS servers, in the outside namespace: a plain one (UDP and TCP), one that
    // forges answers before the real one, one that truncates every UDP answer.
    th.outside.exec_ok(&["ip", "addr", "add", "198.51.100.3/24", "dev", "out0"]).unwrap();
    th.outside.exec_ok(&["ip", "addr", "add", "198.51.100.4/24", "dev", "out0"]).unwrap();
    let serve = |ip: &str, flags: &[&str]| {
        let mut argv = vec![probe_bin().to_str().unwrap().to_string(), "dns-serve".into(), "53".into()];
        argv.extend(["--bind".to_string(), ip.to_string(), "--tcp".to_string()]);
        argv.extend(flags.iter().map(|f| f.to_string()));
        argv.push("example.test=203.0.113.7".into());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        Kill(th.outside.cmd(&argv).stdout(Stdio::null()).spawn().unwrap())
    };
    let _upstreams =
        [serve("198.51.100.2", &[]), serve("198.51.100.3", &["--spoof"]), serve("198.51.100.4", &["--truncate"])];
    let d = TestDaemon::start(&th, &["--dataplane", dataplane, "--dns", "198.51.100.2"]).unwrap();
    let pr = probe_bin().display().to_string();
    d.ok(&["network", "create", "front"]);
    d.ok(&["network", "create", "other"]);
    d.ok(&["network", "create", "--internal", "intern"]);
    let web_id = d
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "front",
            "--network-alias",
            "www",
            "--",
            &pr,
            "serve",
            "--tag",
            "web",
            "7000",
        ])
        .trim()
        .to_string();
    d.ok(&["run", "-d", "--name", "cli", "--network", "front", "--", "sleep", "300"]);
    d.ok(&["run", "-d", "--name", "third", "--network", "other", "--", "sleep", "300"]);
    let web_ip = ip_of(&d, "web", "front");

    // resolv.conf points at the embedded server and records the upstream.
    let rc = d.ok(&["exec", "cli", "--", "cat", "/etc/resolv.conf"]);
    assert!(rc.contains("\nnameserver 127.0.0.11\n") && rc.contains("# ExtServers: [198.51.100.2]"), "{rc}");

    // Same network: name, alias and short id resolve; TCP by name works.
    assert_eq!(resolve(&d, "cli", "web").as_deref(), Some(web_ip.as_str()));
    assert_eq!(resolve(&d, "cli", "www").as_deref(), Some(web_ip.as_str()));
    assert_eq!(resolve(&d, "cli", &web_id[..12]).as_deref(), Some(web_ip.as_str()));
    let out = d.ok(&["exec", "cli", "--", &pr, "tcp", "web:7000", "by-name"]);
    assert!(out.trim().starts_with("web:") && out.trim().ends_with(":by-name"), "{out}");
    let ptr = d.ok(&["exec", "cli", "--", "getent", "hosts", &web_ip]);
    assert!(ptr.contains("web.front"), "PTR: {ptr}");

    // Another network: neither resolves nor reaches.
    assert_eq!(resolve(&d, "third", "web"), None);
    let r = d.cli(&["exec", "third", "--", &pr, "tcp", &format!("{web_ip}:7000"), "x"]);
    assert_ne!(r.code, 0, "other network reached web");

    // After network connect: both; after disconnect: neither.
    d.ok(&["network", "connect", "front", "third"]);
    assert!(wait_for(|| resolve(&d, "third", "web").as_deref() == Some(web_ip.as_str())), "resolve after connect");
    let out = d.ok(&["exec", "third", "--", &pr, "tcp", "web:7000", "connected"]);
    assert!(out.trim().ends_with(":connected"), "{out}");
    let links = d.ok(&["exec", "third", "--", "ip", "-o", "-4", "addr", "show", "eth1"]);
    assert!(links.contains("eth1"), "{links}");
    d.ok(&["network", "disconnect", "front", "third"]);
    assert_eq!(resolve(&d, "third", "web"), None);
    let r = d.cli(&["exec", "third", "--", &pr, "tcp", &format!("{web_ip}:7000"), "x"]);
    assert_ne!(r.code, 0, "reached web after disconnect");
    let r = d.cli(&["exec", "third", "--", "ip", "link", "show", "eth1"]);
    assert_ne!(r.code, 0, "eth1 removed on disconnect");

    // Other names go upstream (the test's own DNS server, via masquerade).
    assert_eq!(resolve(&d, "cli", "example.test").as_deref(), Some("203.0.113.7"));
    assert_eq!(resolve(&d, "cli", "nonexistent.test"), None);
    // The forwarder, with a client that takes the first datagram it gets and checks only its own
    // transaction id: UDP and TCP; EDNS passes through to the upstream.
    let query = |from: &str, args: &[&str]| {
        let mut a = vec!["exec", from, "--", pr.as_str(), "dns-query", "127.0.0.11"];
        a.extend_from_slice(args);
        d.cli(&a)
    };
    let first = |r: Cli| (r.code, r.stdout.lines().next().unwrap_or("").to_string(), r.stderr);
    assert_eq!(first(query("cli", &["example.test"])).1, "203.0.113.7");
    assert_eq!(first(query("cli", &["example.test", "--tcp"])).1, "203.0.113.7");
    assert_eq!(first(query("cli", &["edns.test", "--edns"])).1, "203.0.113.9", "EDNS dropped on the way upstream");
    assert_eq!(first(query("cli", &["edns.test"])).1, "203.0.113.8");
    // An upstream path with forged answers first (wrong id, wrong question): only the real
    // answer reaches the sandbox.
    d.ok(&["run", "-d", "--name", "spoofed", "--network", "front", "--dns", "198.51.100.3", "--", "sleep", "300"]);
    for _ in 0..3 {
        let (code, ip, err) = first(query("spoofed", &["example.test"]));
        assert_eq!((code, ip.as_str()), (0, "203.0.113.7"), "forged upstream answer accepted or relayed: {err}");
    }
    // An upstream that truncates every UDP answer: the resolver retries over TCP itself and the
    // UDP client gets the full answer.
    d.ok(&["run", "-d", "--name", "trunc", "--network", "front", "--dns", "198.51.100.4", "--", "sleep", "300"]);
    let (code, ip, err) = first(query("trunc", &["example.test"]));
    assert_eq!((code, ip.as_str()), (0, "203.0.113.7"), "no TCP fallback on a truncated upstream answer: {err}");

    // Internal network: own names yes, outside names no, no route out.
    d.ok(&["run", "-d", "--name", "in1", "--network", "intern", "--", "sleep", "300"]);
    let in1_ip = ip_of(&d, "in1", "intern");
    assert_eq!(resolve(&d, "in1", "in1").as_deref(), Some(in1_ip.as_str()));
    assert_eq!(resolve(&d, "in1", "example.test"), None);
    let r = d.cli(&["exec", "in1", "--", &pr, "udp", "198.51.100.2:53", "x"]);
    assert_ne!(r.code, 0, "internal network reached outside");

    // The default bridge has no name resolution (Docker's rule).
    d.ok(&["run", "-d", "--name", "b0", "--", "sleep", "300"]);
    d.ok(&["run", "-d", "--name", "b1", "--", "sleep", "300"]);
    assert_eq!(resolve(&d, "b0", "b1"), None);
    let rc = d.ok(&["exec", "b0", "--", "cat", "/etc/resolv.conf"]);
    assert!(rc.contains("nameserver 198.51.100.2") && !rc.contains("127.0.0.11"), "{rc}");
}

#[test]
fn ebpf_dns() {
    require_root!();
    dns_scenario("ebpf");
}

#[test]
fn iptables_dns() {
    require_root!();
    dns_scenario("iptables");
}
