//! Port publishing in the control plane: every `-p` form and `-P`, Docker's `port`/`inspect`/
//! `ps` output, Docker's errors, and clean failure on a port clash.
use netd_tests::{TestDaemon, TestHost, probe, require_root};
use serde_json::Value;

#[test]
fn every_publish_form_is_allocated_and_shown_like_docker() {
    require_root!();
    let th = TestHost::new("ports").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8080:80",
        "-p",
        "53:53/udp",
        "-p",
        "127.0.0.1:8443:443",
        "-p",
        "198.51.100.1::9000",
        "-p",
        "7000-7002:7000-7002",
        "-p",
        "9100-9110:91",
        "-p",
        "5000",
        "--expose",
        "6000",
        "--",
        "sleep",
        "300",
    ]);
    let out = d.ok(&["port", "web"]);
    let lines: Vec<&str> = out.lines().collect();
    let eph = |prefix: &str| {
        lines.iter().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix} in {out}")).to_string()
    };
    let p5000: u16 = eph("5000/tcp -> 0.0.0.0:").rsplit(':').next().unwrap().parse().unwrap();
    let p9000: u16 = eph("9000/tcp -> 198.51.100.1:").rsplit(':').next().unwrap().parse().unwrap();
    let p91: u16 = eph("91/tcp -> 0.0.0.0:").rsplit(':').next().unwrap().parse().unwrap();
    let (lo, hi) = netd::ports::ephemeral_range();
    assert!(
        (lo..=hi).contains(&p5000) && (lo..=hi).contains(&p9000),
        "ephemeral ports from ip_local_port_range: {out}"
    );
    assert!((9100..=9110).contains(&p91), "a host range for one container port picks one of it: {out}");
    let expected = vec![
        "53/udp -> 0.0.0.0:53".to_string(),
        "80/tcp -> 0.0.0.0:8080".to_string(),
        format!("91/tcp -> 0.0.0.0:{p91}"),
        "443/tcp -> 127.0.0.1:8443".to_string(),
        format!("5000/tcp -> 0.0.0.0:{p5000}"),
        "7000/tcp -> 0.0.0.0:7000".to_string(),
        "7001/tcp -> 0.0.0.0:7001".to_string(),
        "7002/tcp -> 0.0.0.0:7002".to_string(),
        format!("9000/tcp -> 198.51.100.1:{p9000}"),
    ];
    assert_eq!(lines, expected, "netd port web");
    assert_eq!(d.ok(&["port", "web", "80"]), "0.0.0.0:8080\n");
    assert_eq!(d.ok(&["port", "web", "53/udp"]), "0.0.0.0:53\n");
    let r = d.cli(&["port", "web", "6000"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.trim(), "no public port '6000' published for web");

    let w = d.inspect("web");
    assert_eq!(w["HostConfig"]["PortBindings"]["80/tcp"], serde_json::json!([{"HostIp": "", "HostPort": "8080"}]));
    assert_eq!(w["HostConfig"]["PortBindings"]["91/tcp"], serde_json::json!([{"HostIp": "", "HostPort": "9100-9110"}]));
    assert_eq!(
        w["HostConfig"]["PortBindings"]["443/tcp"],
        serde_json::json!([{"HostIp": "127.0.0.1", "HostPort": "8443"}])
    );
    assert_eq!(w["NetworkSettings"]["Ports"]["80/tcp"], serde_json::json!([{"HostIp": "0.0.0.0", "HostPort": "8080"}]));
    assert_eq!(w["NetworkSettings"]["Ports"]["6000/tcp"], Value::Null, "exposed-only ports are null");
    assert!(w["Config"]["ExposedPorts"]["6000/tcp"].is_object());
    let ps = d.ok(&["ps"]);
    assert!(
        ps.contains("0.0.0.0:53->53/udp")
            && ps.contains("0.0.0.0:7000-7002->7000-7002/tcp")
            && ps.contains("0.0.0.0:8080->80/tcp")
            && ps.contains("6000/tcp"),
        "{ps}"
    );

    // The daemon holds the ports (bound sockets, like Docker): nobody else can take them.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").map(|_| ());
    assert!(taken.is_ok());
    let clash = th.host.run(|| std::net::TcpListener::bind("0.0.0.0:8080").is_err()).unwrap();
    assert!(clash, "8080 is held by netd while web runs");

    // -P publishes every exposed port on ephemeral ports.
    d.ok(&["run", "-d", "--name", "all", "-P", "--expose", "80", "--expose", "81-82/udp", "--", "sleep", "300"]);
    let out = d.ok(&["port", "all"]);
    let keys: Vec<&str> = out.lines().map(|l| l.split(" -> ").next().unwrap()).collect();
    assert_eq!(keys, ["80/tcp", "81/udp", "82/udp"], "{out}");

    // Stopping releases the ports; starting again re-publishes them.
    d.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(d.ok(&["port", "web"]), "");
    let free = th.host.run(|| std::net::TcpListener::bind("0.0.0.0:8080").is_ok()).unwrap();
    assert!(free, "stop releases 8080");
    d.ok(&["start", "web"]);
    assert!(d.ok(&["port", "web"]).contains("80/tcp -> 0.0.0.0:8080"));
}

#[test]
fn invalid_specs_get_dockers_errors_and_change_nothing() {
    require_root!();
    let th = TestHost::new("badp").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    for (spec, msg) in [
        ("abc", "invalid containerPort: abc"),
        ("x:80", "invalid hostPort: x"),
        ("70000:80", "invalid hostPort: 70000"),
        ("80/foo", "invalid proto: foo"),
        ("1.2.3.999:80:80", "invalid IP address: 1.2.3.999"),
        ("8000-8010:80-82", "invalid ranges specified for container and host Ports: 80-82 and 8000-8010"),
        ("[zz::1]:8080:80", "invalid IP address: zz::1"),
        ("[::1:8080:80", "missing ']' in address"),
    ] {
        let r = d.cli(&["run", "-d", "-p", spec, "--", "true"]);
        assert_eq!(r.code, 125, "{spec}: {r:?}");
        assert!(r.stderr.contains(msg), "{spec}: {}", r.stderr);
    }
    let r = d.cli(&["run", "-d", "--expose", "80:80", "--", "true"]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("invalid port format for --expose: 80:80"), "{}", r.stderr);
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "nothing was created");
    for bad in ["--name=a/b", "--name=..", "--name=with space"] {
        let r = d.cli(&["run", "-d", bad, "--", "true"]);
        assert_eq!(r.code, 125, "{bad}");
        assert!(r.stderr.contains("Invalid container name"), "{bad}: {}", r.stderr);
    }
    let long = format!("--name={}", "x".repeat(300));
    let r = d.cli(&["run", "-d", &long, "--", "true"]);
    assert_eq!(r.code, 0, "Docker accepts long names: {r:?}");
}

#[test]
fn a_port_clash_fails_cleanly() {
    require_root!();
    let th = TestHost::new("clash").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    // Another program on the host holds 0.0.0.0:8080.
    let _other = probe::EchoServer::start(&th.host.path(), "0.0.0.0:8080".parse().unwrap(), "other").unwrap();
    let r = d.cli(&["run", "-d", "--name", "c1", "-p", "9090:90", "-p", "8080:80", "--", "sleep", "300"]);
    assert_eq!(r.code, 125, "{r:?}");
    assert!(r.stderr.contains("Bind for 0.0.0.0:8080 failed: port is already allocated"), "{}", r.stderr);
    // Nothing half-done: no veth, 9090 released, the sandbox stays Created (as Docker leaves it).
    let veths = th.host.exec_ok(&["ip", "-o", "link", "show", "master", "netd0"]).unwrap();
    assert!(veths.trim().is_empty(), "{veths}");
    let free = th.host.run(|| std::net::TcpListener::bind("0.0.0.0:9090").is_ok()).unwrap();
    assert!(free, "9090 was rolled back");
    let v: Value = serde_json::from_str(&d.ok(&["inspect", "c1"])).unwrap();
    assert_eq!(v[0]["State"]["Status"], "created");
    // Between sandboxes.
    d.ok(&["run", "-d", "--name", "c2", "-p", "9191:80", "--", "sleep", "300"]);
    let r = d.cli(&["run", "-d", "--name", "c3", "-p", "9191:80", "--", "sleep", "300"]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("Bind for 0.0.0.0:9191 failed: port is already allocated"), "{}", r.stderr);
    // A specific address clashes with the wildcard on the same port.
    let r = d.cli(&["run", "-d", "--name", "c4", "-p", "198.51.100.1:9191:80", "--", "sleep", "300"]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("port is already allocated"), "{}", r.stderr);
    // udp on the same number is independent.
    d.ok(&["run", "-d", "--name", "c5", "-p", "9191:80/udp", "--", "sleep", "300"]);
}

#[test]
fn daemon_ip_is_the_default_host_address() {
    require_root!();
    let th = TestHost::new("dip").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "ebpf", "--ip", "198.51.100.1"]).unwrap();
    let pr = netd_tests::daemon::probe_bin().display().to_string();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8080:7000",
        "-p",
        "0.0.0.0:8081:7000",
        "--",
        &pr,
        "serve",
        "--tag",
        "web",
        "7000",
    ]);
    assert_eq!(d.ok(&["port", "web"]), "7000/tcp -> 0.0.0.0:8081\n7000/tcp -> 198.51.100.1:8080\n");
    let e = probe::tcp_echo(&th.outside.path(), "198.51.100.1:8080".parse().unwrap(), b"x").expect("bound to --ip");
    assert_eq!(e.tag, "web");
    // Not on other host addresses (the bridge address), unlike the 0.0.0.0 binding.
    assert!(probe::tcp_echo(&th.host.path(), "172.17.0.1:8080".parse().unwrap(), b"x").is_err());
    assert!(probe::tcp_echo(&th.host.path(), "172.17.0.1:8081".parse().unwrap(), b"x").is_ok());
}
