//! Bad input through every door: CLI flags of `run`, `network create` and `up`, and raw
//! requests on the API socket. Each gets a clear error (Docker's words where Docker has them),
//! a non-zero exit or a 4xx status, and changes nothing.
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    time::Duration,
};

use netd_tests::{TestDaemon, TestHost, require_root};

/// Everything a failed request must leave as it was.
fn state(th: &TestHost, d: &TestDaemon) -> String {
    let mut s = d.ok(&["ps", "-a", "-q", "--no-trunc"]);
    s += &d.ok(&["network", "ls", "-q", "--no-trunc"]);
    s += &th.host.exec_ok(&["ip", "-o", "link"]).unwrap();
    s += &th.host.exec_ok(&["ip", "-o", "-4", "addr"]).unwrap();
    s += &th.host.exec_ok(&["ip", "route"]).unwrap();
    s += &format!("{:?}", std::fs::read_dir(d.exec_root().join("netns")).map(|r| r.count()).ok());
    s
}

#[test]
fn malformed_cli_values_get_clear_errors_and_change_nothing() {
    require_root!();
    let th = TestHost::new("bad").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    d.ok(&["network", "create", "--subnet", "10.77.0.0/24", "used"]);
    d.ok(&["run", "-d", "--name", "there", "--", "sleep", "300"]);
    let before = state(&th, &d);
    let long = "x".repeat(300);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // Names.
        (vec!["run", "-d", "--name", "a/b", "--", "true"], "Invalid container name (a/b)"),
        (vec!["run", "-d", "--name", "..", "--", "true"], "Invalid container name (..)"),
        (vec!["run", "-d", "--name", "has space", "--", "true"], "Invalid container name (has space)"),
        (vec!["run", "-d", "--name", "x", "--", "true"], "Invalid container name (x)"),
        (vec!["run", "-d", "--name", "there", "--", "true"], "is already in use by container"),
        // Network modes.
        (vec!["run", "-d", "--network", "nosuch", "--", "true"], "network nosuch not found"),
        (vec!["run", "-d", "--network", "container:nosuch", "--", "true"], "No such container: nosuch"),
        (vec!["run", "-d", "--network", "host", "--ip", "10.77.0.9", "--", "true"], "invalid endpoint settings"),
        // Addresses.
        (vec!["run", "-d", "--network", "used", "--ip", "10.78.0.5", "--", "true"], "invalid endpoint settings"),
        (vec!["run", "-d", "--network", "used", "--ip", "not-an-ip", "--", "true"], "invalid IPv4 address: not-an-ip"),
        (vec!["run", "-d", "--mac-address", "zz:zz", "--", "true"], "zz:zz is not a valid mac address"),
        (vec!["run", "-d", "--dns", "300.1.1.1", "--", "true"], "300.1.1.1 is not an ip address"),
        (vec!["run", "-d", "--add-host", "nocolon", "--", "true"], "bad format for add-host: \"nocolon\""),
        (vec!["run", "-d", "--add-host", "h:999.1.1.1", "--", "true"], "invalid IP address in add-host"),
        (vec!["run", "-d", "--hostname", &long, "--", "true"], "at most 63 characters"),
        // Ports (the forms themselves are covered in daemon_ports.rs).
        (vec!["run", "-d", "-p", "0-70000:80", "--", "true"], "invalid hostPort: 0-70000"),
        (vec!["run", "-d", "-p", "9-5:80", "--", "true"], "invalid hostPort: 9-5"),
        (vec!["run", "-d", "--expose", "10-5", "--", "true"], "invalid range format for --expose: 10-5"),
        // Networks.
        (
            vec!["network", "create", "--subnet", "10.77.0.0/16", "overlapping"],
            "Pool overlaps with other one on this address space",
        ),
        (vec!["network", "create", "--subnet", "banana", "n1"], "invalid CIDR address: banana"),
        (
            vec!["network", "create", "--subnet", "10.80.0.0/24", "--ip-range", "10.81.0.0/24", "n2"],
            "no matching subnet for range 10.81.0.0/24",
        ),
        (
            vec!["network", "create", "--subnet", "10.80.0.0/24", "--gateway", "10.80.0.300", "n3"],
            "invalid gateway address",
        ),
        (vec!["network", "create", "-d", "overlay", "n4"], "plugin \"overlay\" not found"),
        (vec!["network", "create", "-o", "com.docker.network.driver.mtu=abc", "n5"], "invalid MTU value \"abc\""),
        (
            vec!["network", "create", "-o", "com.docker.network.bridge.gateway_mode_ipv4=bogus", "n6"],
            "unknown gateway mode \"bogus\"",
        ),
        (vec!["network", "create", "used"], "network with name used already exists"),
        (vec!["network", "create", "a/b"], "invalid network name \"a/b\""),
        (vec!["network", "connect", "nosuch", "there"], "network nosuch not found"),
        (vec!["network", "connect", "used", "nosuch"], "No such container: nosuch"),
        // Lifecycle on things that do not exist.
        (vec!["rm", "nosuch"], "No such container: nosuch"),
        (vec!["stop", "nosuch"], "No such container: nosuch"),
        (vec!["exec", "nosuch", "--", "true"], "No such container: nosuch"),
        (vec!["port", "nosuch"], "No such container: nosuch"),
    ];
    for (args, msg) in &cases {
        let r = d.cli(args);
        assert_ne!(r.code, 0, "{args:?} succeeded: {r:?}");
        assert!(!r.stderr.trim().is_empty(), "{args:?}: no error message");
        assert!(r.stderr.contains(msg), "{args:?}: expected {msg:?} in {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
        assert_eq!(state(&th, &d), before, "{args:?} changed state");
    }
    // A 300-character name is accepted, as by Docker, and removable.
    d.ok(&["run", "-d", "--name", &long, "--", "sleep", "300"]);
    d.ok(&["rm", "-f", &long]);
    assert_eq!(state(&th, &d), before);
}

#[test]
fn malformed_up_flags_fail_before_touching_the_host() {
    require_root!();
    let th = TestHost::new("badup").unwrap();
    let before =
        th.host.exec_ok(&["ip", "-o", "link"]).unwrap() + &th.host.exec_ok(&["ip", "-o", "-4", "addr"]).unwrap();
    for (args, msg) in [
        (&["--bip", "10.0.0.1/40"][..], "invalid"),
        (&["--bip", "banana"], "invalid"),
        (&["--bip", "10.0.0.1/24", "--fixed-cidr", "192.168.0.0/24"], "is not inside the bridge subnet"),
        (&["--mtu", "10"], "invalid MTU 10"),
        (&["--ip", "1.2.3"], "invalid --ip"),
        (&["--dataplane", "nosuch"], "invalid value 'nosuch' for '--dataplane"),
        (&["--iptables-backend", "nosuch"], "invalid --iptables-backend"),
        (&["--default-address-pool", "base=nosuch,size=24"], "invalid --default-address-pool"),
        (&["--dns", "not-an-ip"], "not-an-ip is not an ip address"),
    ] {
        let r = TestDaemon::start(
            &th,
            &if args.contains(&"--dataplane") { args.to_vec() } else { [&["--dataplane", "none"][..], args].concat() },
        );
        let e = match r {
            Ok(d) => panic!("netd up {args:?} started: {}", d.log()),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains(msg), "{args:?}: {e}");
        assert!(!e.contains("panicked"), "{args:?}: {e}");
        let after =
            th.host.exec_ok(&["ip", "-o", "link"]).unwrap() + &th.host.exec_ok(&["ip", "-o", "-4", "addr"]).unwrap();
        assert_eq!(after, before, "netd up {args:?} changed the namespace");
    }
}

/// One raw request on the API socket; returns the status line and body.
fn raw(sock: &std::path::Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: netd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn malformed_api_requests_get_4xx_and_change_nothing() {
    require_root!();
    let th = TestHost::new("badapi").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    d.ok(&["run", "-d", "--name", "there", "--", "sleep", "300"]);
    let before = state(&th, &d);
    let huge = format!("POST /containers/create HTTP/1.1\r\nContent-Length: {}\r\n\r\n", netd::api::MAX_BODY + 1);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (post("/containers/create", "{not json"), "400"),
        (post("/containers/create", "[]"), "400"),
        (post("/containers/create", r#"{"Name": 5}"#), "400"),
        (post("/containers/create", r#"{"Cmd": "not a list"}"#), "400"),
        (post("/networks/create", r#"{"Name": "x", "IPAM": "nope"}"#), "400"),
        (
            post(
                "/networks/create",
                r#"{"Name": "x", "Driver": "bridge", "IPAM": {"Config": [{"Subnet": "1.2.3.4/99"}]}}"#,
            ),
            "400",
        ),
        (post("/networks/nosuch/connect", r#"{"Container": "there"}"#), "404"),
        (post("/containers/there/kill?signal=NOSUCH", ""), "400"),
        (b"GET /no/such/path HTTP/1.1\r\n\r\n".to_vec(), "404"),
        (huge.into_bytes(), "413"),
        (b"\x00\x01\x02 garbage\r\n\r\n".to_vec(), "400"),
        (b"POST /containers/create HTTP/1.1\r\nContent-Length: banana\r\n\r\n".to_vec(), "400"),
        (b"POST /containers/create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"short\":".to_vec(), ""),
        (b"GET /containers/json HTTP/1.1\r\nX: unterminated".to_vec(), ""),
        (Vec::new(), ""),
    ];
    for (req, status) in &cases {
        let resp = raw(&d.socket, req);
        let line = resp.lines().next().unwrap_or("");
        if status.is_empty() {
            // Truncated requests: an error status or a closed connection, never a success.
            assert!(!line.contains(" 2"), "{:?}: {resp}", String::from_utf8_lossy(req));
        } else {
            assert!(line.contains(status), "{:?}: expected {status}: {resp}", String::from_utf8_lossy(req));
            assert!(resp.contains("\"message\""), "{:?}: Docker's error body: {resp}", String::from_utf8_lossy(req));
        }
        assert_eq!(state(&th, &d), before, "{:?} changed state", String::from_utf8_lossy(req));
    }
    // Still serving.
    assert_eq!(d.ok(&["ps", "-q"]).lines().count(), 1);
}
