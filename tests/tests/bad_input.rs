//! Bad input to every CLI flag and API field: each is refused with a non-zero exit and a clear
//! error (Docker's wording where Docker has one), and nothing changes: the sandbox and network
//! lists and the links of the host namespace are identical before and after. Raw API abuse over
//! the socket gets a 4xx (or a closed connection) and the daemon keeps serving.
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netd_tests::{TestDaemon, TestHost, daemon::netd_bin, require_root};

/// What must not change: `ps -a -q`, `network ls -q`, `ip -o link` in the host namespace.
#[derive(Debug, PartialEq)]
struct Snapshot {
    ps: String,
    networks: String,
    links: String,
}

fn snapshot(th: &TestHost, d: &TestDaemon) -> Snapshot {
    Snapshot {
        ps: d.ok(&["ps", "-a", "-q", "--no-trunc"]),
        networks: d.ok(&["network", "ls", "-q", "--no-trunc"]),
        links: th.host.exec_ok(&["ip", "-o", "link"]).unwrap(),
    }
}

/// `netd ARGS` must fail with `msg` on stderr and leave everything as it was.
fn refused(th: &TestHost, d: &TestDaemon, before: &Snapshot, args: &[&str], msg: &str) {
    let r = d.cli(args);
    assert_ne!(r.code, 0, "netd {args:?} succeeded: {}", r.stdout);
    assert!(r.stderr.contains(msg), "netd {args:?}: expected {msg:?} on stderr, got {:?}", r.stderr);
    assert_eq!(&snapshot(th, d), before, "netd {args:?} changed state");
}

/// `netd run -d ARGS -- sleep 300`, and the same with `create`.
fn run_refused(th: &TestHost, d: &TestDaemon, before: &Snapshot, args: &[&str], msg: &str) {
    for verb in ["run", "create"] {
        let mut a = vec![verb];
        if verb == "run" {
            a.push("-d");
        }
        a.extend_from_slice(args);
        a.extend_from_slice(&["--", "sleep", "300"]);
        refused(th, d, before, &a, msg);
    }
}

#[test]
fn bad_cli_values_are_refused_without_state_change() {
    require_root!();
    let th = TestHost::new("bad").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    // Existing objects, to collide with.
    d.ok(&["network", "create", "--subnet", "10.80.0.0/24", "-o", "com.docker.network.bridge.name=taken0", "net1"]);
    d.ok(&["run", "-d", "--name", "c1", "--", "sleep", "300"]);
    let before = snapshot(&th, &d);
    assert!(before.ps.lines().count() == 1 && before.networks.lines().count() == 4, "{before:?}");

    let name_err = |n: &str| format!("Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
    let long_bad = format!("{}/x", "a".repeat(300));
    let long_host = "h".repeat(64);
    let run_cases: Vec<(Vec<&str>, String)> = vec![
        // -p: ports out of range, bad ranges, protocols, addresses (checked by the CLI, as Docker's).
        (vec!["-p", "70000:80"], "invalid hostPort: 70000".into()),
        (vec!["-p", "80:70000"], "invalid containerPort: 70000".into()),
        (vec!["-p", "99999"], "invalid containerPort: 99999".into()),
        (vec!["--publish=-1:80"], "invalid hostPort: -1".into()),
        (vec!["-p", "8080-8070:80"], "invalid hostPort: 8080-8070".into()),
        (vec!["-p", "90-80"], "invalid containerPort: 90-80".into()),
        (
            vec!["-p", "8000-8010:80-82"],
            "invalid ranges specified for container and host Ports: 80-82 and 8000-8010".into(),
        ),
        (vec!["-p", "80/sctpx"], "invalid proto: sctpx".into()),
        (vec!["-p", "300.1.1.1:80:80"], "invalid IP address: 300.1.1.1".into()),
        (vec!["-p", "[::1:80:80"], "missing ']' in address".into()),
        (vec!["-p", "8080:"], "no port specified: 8080:<empty>".into()),
        (vec!["-p", ""], "no port specified: <empty>".into()),
        (vec!["-p", "abc"], "invalid containerPort: abc".into()),
        // Malformed IPv6 host addresses (Docker's messages).
        (vec!["-p", "[zz::1]:8080:80"], "invalid IP address: zz::1".into()),
        (vec!["-p", "[::1:8080:80"], "invalid IP address [::1: missing ']' in address".into()),
        (vec!["-p", "[fe80::1%eth0x]:8080:80"], "invalid IP address: fe80::1%eth0x".into()),
        // Valid for Docker, refused by netd's dataplanes (TCP/UDP only), clearly.
        (vec!["-p", "80/sctp"], "sctp is not supported by netd's dataplanes".into()),
        // --ip6.
        (vec!["--network", "net1", "--ip6", "zz::1"], "invalid IPv6 address: zz::1".into()),
        (vec!["--network", "net1", "--ip6", "10.80.0.5"], "invalid IPv6 address: 10.80.0.5".into()),
        (vec!["--ip6", "fd00::5"], "user-specified IP address is supported on user-defined networks only".into()),
        (
            vec!["--network", "net1", "--ip6", "fd00::5"],
            "user specified IPv6 address is not supported: IPv6 is not enabled on network net1".into(),
        ),
        // --expose.
        (vec!["--expose", "80:80"], "invalid port format for --expose: 80:80".into()),
        (vec!["--expose", "90-80"], "invalid range format for --expose: 90-80".into()),
        (vec!["--expose", "70000"], "invalid range format for --expose: 70000".into()),
        (vec!["--expose", "80/foo"], "invalid proto: foo".into()),
        // Names.
        (vec!["--name", "a/b"], name_err("a/b")),
        (vec!["--name", ".."], name_err("..")),
        (vec!["--name", "a b"], name_err("a b")),
        (vec!["--name", "x"], name_err("x")),
        (vec!["--name", "_x"], name_err("_x")),
        (vec!["--name", "web\n"], name_err("web\n")),
        (vec!["--name", "wéb"], name_err("wéb")),
        (vec!["--name", &long_bad], name_err(&long_bad)),
        (vec!["--name", "c1"], "Conflict. The container name \"/c1\" is already in use by container".into()),
        // Network modes.
        (vec!["--network", "nosuch"], "network nosuch not found".into()),
        (vec!["--network", "container:"], "invalid container format container:<name|id>".into()),
        (vec!["--network", "container:nosuch"], "No such container: nosuch".into()),
        (vec!["--network", "host", "--link", "c1"], "host type networking can't be used with links".into()),
        (vec!["--network", "container:c1", "-p", "80"], "conflicting options: port publishing".into()),
        (vec!["--network", "container:c1", "--dns", "1.1.1.1"], "conflicting options: dns and the network mode".into()),
        // Addresses.
        (vec!["--network", "net1", "--ip", "10.80.0.999"], "invalid IPv4 address: 10.80.0.999".into()),
        (vec!["--network", "net1", "--ip", "10.81.0.5"], "no configured subnet contains IP address 10.81.0.5".into()),
        (vec!["--ip", "172.17.0.9"], "user-specified IP address is supported on user-defined networks only".into()),
        (vec!["--mac-address", "zz:42:ac:11:00:02"], "zz:42:ac:11:00:02 is not a valid mac address".into()),
        (vec!["--mac-address", "+2:42:ac:11:00:02"], "+2:42:ac:11:00:02 is not a valid mac address".into()),
        (vec!["--mac-address", "01:00:5e:00:00:01"], "is a multicast address".into()),
        (vec!["--dns", "bogus"], "IP address is not correctly formatted: bogus".into()),
        (vec!["--dns", "1.2.3.4.5"], "IP address is not correctly formatted: 1.2.3.4.5".into()),
        // The kernel takes at most 63 characters: refused at create, not left unstartable.
        (vec!["--hostname", &long_host], "at most 63 characters".into()),
        (vec!["--domainname", &long_host], "at most 63 characters".into()),
        (vec!["--add-host", "nohost"], "bad format for add-host: \"nohost\"".into()),
        (vec!["--add-host", "h:300.1.1.1"], "invalid IP address in add-host: \"300.1.1.1\"".into()),
        (vec!["--link", "nosuch"], "could not get container for nosuch: No such container: nosuch".into()),
        (vec!["--network-alias", "a"], "network-scoped aliases are only supported for user-defined networks".into()),
        // Flags netd does not have (Docker's --restart): a usage error, not a silent default.
        (vec!["--restart", "always"], "unexpected argument '--restart'".into()),
    ];
    for (args, msg) in &run_cases {
        run_refused(&th, &d, &before, args, msg);
    }
    // A port spec is refused by the CLI before the daemon is asked, with Docker's exit code.
    let r = d.cli(&["run", "-d", "-p", "70000:80", "--", "sleep", "1"]);
    assert_eq!(r.code, 125, "{r:?}");
    let r = d.cli(&["run", "-d", "--dns", "bogus", "--", "sleep", "1"]);
    assert_eq!(r.code, 125, "{r:?}");
    // Missing command, bad numbers for numeric flags: usage errors.
    refused(&th, &d, &before, &["run", "-d"], "required arguments were not provided");
    refused(&th, &d, &before, &["stop", "-t", "abc", "c1"], "invalid value 'abc'");

    let create = |extra: &[&str], name: &str| -> Vec<String> {
        let mut a: Vec<String> = ["network", "create"].iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(name.to_string());
        a
    };
    let long_net = "n".repeat(300) + " x";
    let net_cases: Vec<(Vec<String>, &str)> = vec![
        // Subnets, gateways, ranges.
        (create(&["--subnet", "10.92.0.0/33"], "x1"), "invalid CIDR address: 10.92.0.0/33"),
        (create(&["--subnet", "300.0.0.0/24"], "x1"), "invalid CIDR address: 300.0.0.0/24"),
        (create(&["--subnet", "10.92.0.0"], "x1"), "invalid CIDR address: 10.92.0.0"),
        (create(&["--subnet", "10.92.0.0/-1"], "x1"), "invalid CIDR address: 10.92.0.0/-1"),
        (create(&["--subnet", ""], "x1"), "invalid CIDR address: "),
        (create(&["--subnet", "10.80.0.0/25"], "x1"), "Pool overlaps with other one on this address space"),
        (create(&["--subnet", "10.0.0.0/8"], "x1"), "Pool overlaps with other one on this address space"),
        (create(&["--subnet", "172.17.5.0/24"], "x1"), "Pool overlaps with other one on this address space"),
        (
            create(&["--subnet", "10.92.0.0/24", "--gateway", "10.93.0.1"], "x1"),
            "no matching subnet for gateway 10.93.0.1",
        ),
        (create(&["--subnet", "10.92.0.0/24", "--gateway", "bogus"], "x1"), "invalid gateway address \"bogus\""),
        (create(&["--subnet", "10.92.0.0/24", "--gateway", "10.92.0.0/24"], "x1"), "invalid gateway address"),
        (create(&["--gateway", "10.92.0.1"], "x1"), "gateway and ip-range require a subnet"),
        (create(&["--ip-range", "10.92.0.0/25"], "x1"), "gateway and ip-range require a subnet"),
        (
            create(&["--subnet", "10.92.0.0/24", "--ip-range", "10.93.0.0/25"], "x1"),
            "no matching subnet for range 10.93.0.0/25",
        ),
        (
            create(&["--subnet", "10.92.0.0/24", "--ip-range", "10.92.0.0/16"], "x1"),
            "no matching subnet for range 10.92.0.0/16",
        ),
        (create(&["--subnet", "10.92.0.0/24", "--ip-range", "nope"], "x1"), "invalid CIDR address: nope"),
        // IPv6 subnets (Docker's validateIpamConfig / validateIPv6Subnet messages).
        (
            create(&["--ipv6", "--subnet", "fd00:92::1/64"], "x1"),
            "invalid subnet fd00:92::1/64: it should be fd00:92::/64",
        ),
        (create(&["--ipv6", "--subnet", "fd00:92::/129"], "x1"), "invalid CIDR address: fd00:92::/129"),
        (
            create(&["--ipv6", "--subnet", "fe80::/80"], "x1"),
            "'fe80::/80' clashes with the Link-Local prefix 'fe80::/64'",
        ),
        (create(&["--ipv6", "--subnet", "ff00::/64"], "x1"), "multicast subnet 'ff00::/64' is not allowed"),
        (
            create(&["--ipv6", "--subnet", "fd00:92::/64", "--gateway", "fd00:93::1"], "x1"),
            "invalid gateway fd00:93::1: parent subnet fd00:92::/64 doesn't contain this address",
        ),
        (create(&["--ipv6", "--gateway", "fd00:93::1"], "x1"), "gateway and ip-range require a subnet"),
        (create(&["--subnet", "fd00:92::/64"], "x1"), "an IPv6 --subnet, --gateway or --ip-range needs --ipv6"),
        (
            create(&["--ipv6", "--subnet", "fd00:92::/64", "--subnet", "fd00:94::/64"], "x1"),
            "netd supports one --subnet per address family",
        ),
        (create(&["--ipv4=false"], "x1"), "IPv4 or IPv6 must be enabled"),
        (
            create(&["--ipv6", "--ipv4=false", "--subnet", "10.92.0.0/24"], "x1"),
            "needs IPv4: the network is IPv6-only (--ipv4=false)",
        ),
        (
            create(&["--ipv6", "--ipv4=false", "--subnet", "fd00:92::/64", "--gateway", "10.92.0.1"], "x1"),
            "needs IPv4: the network is IPv6-only (--ipv4=false)",
        ),
        (create(&["--ipv6=maybe"], "x1"), "invalid value 'maybe' for '--ipv6"),
        // Drivers and options.
        (create(&["-d", "overlay"], "x1"), "plugin \"overlay\" not found"),
        (create(&["-o", "com.docker.network.driver.mtu=abc"], "x1"), "invalid MTU value \"abc\""),
        (create(&["-o", "com.docker.network.driver.mtu=-1"], "x1"), "invalid MTU value \"-1\""),
        (
            create(&["-o", "com.docker.network.driver.mtu=10"], "x1"),
            "invalid MTU value 10: must be between 68 and 65535",
        ),
        (create(&["-o", "com.docker.network.driver.mtu=99999"], "x1"), "invalid MTU value 99999"),
        (
            create(&["-o", "com.docker.network.bridge.enable_icc=maybe"], "x1"),
            "strconv.ParseBool: parsing \"maybe\": invalid syntax",
        ),
        (
            create(&["-o", "com.docker.network.bridge.host_binding_ipv4=1.2.3"], "x1"),
            "failed to parse host_binding_ipv4 value",
        ),
        (create(&["-o", "com.docker.network.bridge.name=waytoolongbridge0"], "x1"), "invalid bridge name"),
        (create(&["-o", "com.docker.network.bridge.name=a/b"], "x1"), "invalid bridge name \"a/b\""),
        (
            create(&["-o", "com.docker.network.bridge.name=taken0"], "x1"),
            "bridge name taken0 is already in use by another network",
        ),
        (create(&["-o", "com.docker.network.bridge.gateway_mode_ipv4=bogus"], "x1"), "bogus"),
        (create(&["-o", "no.such.option=1"], "x1"), "unsupported bridge option \"no.such.option\""),
        (create(&["-o", "noequals"], "x1"), "invalid key/value pair format in driver options: noequals"),
        // Names.
        (create(&[], "a/b"), "invalid network name \"a/b\""),
        (create(&[], ".."), "invalid network name \"..\""),
        (create(&[], "a b"), "invalid network name \"a b\""),
        (create(&[], "x"), "invalid network name \"x\""),
        (create(&[], &long_net), "invalid network name"),
        (create(&[], ""), "network name cannot be empty"),
        (create(&[], "net1"), "network with name net1 already exists"),
        (create(&[], "bridge"), "operation is not permitted on predefined bridge network"),
        (create(&[], "host"), "operation is not permitted on predefined host network"),
        // Other network commands.
        (["network", "rm", "nosuch"].map(String::from).to_vec(), "network nosuch not found"),
        (["network", "rm", "none"].map(String::from).to_vec(), "none is a pre-defined network and cannot be removed"),
        (["network", "connect", "nosuch", "c1"].map(String::from).to_vec(), "network nosuch not found"),
        (["network", "connect", "net1", "nosuch"].map(String::from).to_vec(), "No such container: nosuch"),
        (["network", "connect", "--ip", "bogus", "net1", "c1"].map(String::from).to_vec(), "bogus"),
        (
            ["network", "connect", "--ip", "10.81.0.9", "net1", "c1"].map(String::from).to_vec(),
            "requested address is out of range",
        ),
        (["network", "disconnect", "net1", "c1"].map(String::from).to_vec(), "is not connected to network net1"),
        (["network", "inspect", "nosuch"].map(String::from).to_vec(), "network nosuch not found"),
        (["network", "create", "--driver"].map(String::from).to_vec(), "a value is required for '--driver"),
    ];
    for (args, msg) in &net_cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&th, &d, &before, &args, msg);
    }
    // Other commands with bad references.
    for (args, msg) in [
        (vec!["start", "nosuch"], "No such container: nosuch"),
        (vec!["rm", "nosuch"], "No such container: nosuch"),
        (vec!["inspect", "nosuch"], "No such container: nosuch"),
        (vec!["port", "c1", "70000"], "invalid port '70000'"),
        (vec!["port", "c1", "80/bogus"], "invalid proto: bogus"),
        (vec!["kill", "-s", "NOSUCHSIG", "c1"], "NOSUCHSIG"),
        (vec!["stats", "--format", "yaml"], "invalid value 'yaml' for '--format <FORMAT>'"),
    ] {
        refused(&th, &d, &before, &args, msg);
    }
    // Usage errors exit 125 as Docker's CLI does (clap alone would exit 2), and name the values
    // an enumerated flag takes; help stays exit 0.
    for args in
        [&["stats", "--format", "yaml"][..], &["--bogus"], &["run", "--bogus-flag", "x"], &["network", "nosuch"]]
    {
        let r = d.cli(args);
        assert_eq!(r.code, 125, "netd {args:?}: {r:?}");
    }
    assert!(d.cli(&["stats", "--format", "yaml"]).stderr.contains("[possible values: table, json, prometheus]"));
    assert_eq!(d.cli(&["--help"]).code, 0);
    assert_eq!(d.cli(&["network", "--help"]).code, 0);
    let nb = netd_bin().display().to_string();
    // Completions: each shell's script names the subcommands; an unknown shell is a usage error.
    for (shell, marker) in [("bash", "_netd()"), ("zsh", "#compdef netd"), ("fish", "complete -c netd")] {
        let o = th.host.exec(&[&nb, "completion", shell]).unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && out.contains(marker) && out.contains("network"), "completion {shell}: {o:?}");
    }
    assert_eq!(th.host.exec(&[&nb, "completion", "tcsh"]).unwrap().status.code(), Some(125));
    let o = th.host.exec(&[&nb, "-H", "tcp://1.2.3.4:2375", "ps"]).unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("netd listens on unix sockets only"), "{o:?}");
    // c1 still runs after `kill -s NOSUCHSIG`.
    assert!(d.ok(&["ps", "-q"]).lines().count() == 1);

    // Docker accepts long container names (no length limit): so does netd, and they work.
    let long = "l".repeat(300);
    d.ok(&["create", "--name", &long, "--", "sleep", "1"]);
    assert!(d.ok(&["ps", "-a"]).contains(&long));
    d.ok(&["rm", &long]);
    assert_eq!(snapshot(&th, &d), before);
    // The daemon's log goes to a file here (as under systemd or a pipe): plain text, no ANSI
    // colour codes.
    let log = d.log();
    assert!(log.contains("INFO"), "daemon log has no INFO lines: {log:?}");
    assert!(!log.contains('\x1b'), "ANSI escape codes in a daemon log written to a file: {log:?}");
}

/// The API speaks HTTP/1.1 the way real clients do (curl over the unix socket): a chunked request
/// body is read whole, a connection is kept alive across requests, a wrong method is 405 with an
/// `Allow` header, and a client that stalls inside its headers is cut off.
#[test]
fn api_speaks_http_1_1_to_curl() {
    require_root!();
    let th = TestHost::new("apihttp").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    let sock = d.socket.display().to_string();
    let curl = |args: &[&str], stdin: &[u8]| -> (String, String) {
        let mut c = Command::new("curl")
            .args(["-sS", "-v", "-m", "20", "--unix-socket", &sock])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl");
        c.stdin.take().unwrap().write_all(stdin).unwrap();
        let o = c.wait_with_output().unwrap();
        (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    // A chunked body (curl streams stdin that way): the network is created from it.
    let (out, err) = curl(
        &[
            "-X",
            "POST",
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
            "-w",
            "\n%{http_code}",
            "http://netd/networks/create",
        ],
        br#"{"Name": "chunky", "Subnet": "10.81.0.0/24"}"#,
    );
    assert!(err.contains("Transfer-Encoding: chunked"), "curl did not send a chunked body: {err}");
    assert_eq!(out.lines().last(), Some("201"), "{out} {err}");
    let inspect = d.ok(&["network", "inspect", "chunky"]);
    assert!(inspect.contains("10.81.0.0/24"), "{inspect}");
    // Keep-alive: two requests, one connection.
    let (out, err) = curl(&["http://netd/_ping", "http://netd/version"], b"");
    assert!(out.contains("\"OK\"") && out.contains("ApiVersion"), "{out}");
    assert!(err.contains("Re-using existing connection"), "the connection was not kept alive: {err}");
    // A known path with a wrong method: 405, and which methods it takes.
    let (out, err) = curl(&["-X", "DELETE", "-w", "\n%{http_code}", "http://netd/_ping"], b"");
    assert_eq!(out.lines().last(), Some("405"), "{out} {err}");
    assert!(out.contains("method not allowed: DELETE /_ping (allowed: GET)"), "{out}");
    assert!(err.to_ascii_lowercase().contains("< allow: get"), "{err}");
    let (out, _) = curl(&["-X", "POST", "-w", "\n%{http_code}", "http://netd/nosuch"], b"");
    assert_eq!(out.lines().last(), Some("404"), "unknown paths stay 404: {out}");
    // A client stalling in its headers is disconnected (header timeout), not held forever.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.write_all(b"GET /_ping HTTP/1.1\r\nHost: netd\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    let r = s.read_to_end(&mut out);
    assert!(r.is_ok(), "still connected after {:?}: {r:?}", t.elapsed());
    assert!(!String::from_utf8_lossy(&out).contains(" 200 "), "{}", String::from_utf8_lossy(&out));
    d.ok(&["network", "rm", "chunky"]);
}

/// In a case's statuses: the daemon may close without answering.
const CLOSED: u16 = 0;

/// One raw HTTP exchange on the daemon's socket; `None` when the daemon closed without answering.
fn raw(socket: &Path, bytes: &[u8], close_write: bool) -> Option<(u16, String)> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    if close_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("POST {path} HTTP/1.1\r\nHost: netd\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn raw_api_abuse_gets_4xx_and_the_daemon_keeps_serving() {
    require_root!();
    let th = TestHost::new("badapi").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    d.ok(&["network", "create", "--subnet", "10.80.0.0/24", "net1"]);
    d.ok(&["run", "-d", "--name", "c1", "--", "sleep", "300"]);
    let before = snapshot(&th, &d);
    let max = netd::api::MAX_BODY;

    let mut endless_header = b"GET /_ping HTTP/1.1\r\nX-Long: ".to_vec();
    endless_header.extend(std::iter::repeat_n(b'a', 64 << 10));
    let huge_name = format!(r#"{{"Name":"{}","Cmd":["sleep","1"]}}"#, "a".repeat(max + 10));
    // (what, bytes, close our write side, acceptable statuses, expected text in the answer)
    type Case<'a> = (&'a str, Vec<u8>, bool, &'a [u16], &'a str);
    let cases: Vec<Case> = vec![
        ("invalid JSON", post("/containers/create", b"{\"Cmd\": [\"sleep\""), true, &[400], "invalid JSON"),
        ("not JSON", post("/containers/create", b"\x00\xff garbage"), true, &[400], "invalid JSON"),
        ("empty body", post("/containers/create", b""), true, &[400], "invalid JSON"),
        ("wrong type Cmd", post("/containers/create", br#"{"Cmd":"sleep 1"}"#), true, &[400], "invalid JSON"),
        ("wrong type Name", post("/containers/create", br#"{"Name":5,"Cmd":["sleep"]}"#), true, &[400], "invalid JSON"),
        ("array body", post("/containers/create", b"[]"), true, &[400], "invalid JSON"),
        ("no command", post("/containers/create", b"{}"), true, &[400], "no command specified"),
        (
            "bad port via API",
            post("/containers/create", br#"{"Cmd":["sleep","1"],"Publish":["70000:80"]}"#),
            true,
            &[400],
            "invalid hostPort: 70000",
        ),
        (
            "bad expose via API",
            post("/containers/create", br#"{"Cmd":["sleep","1"],"Expose":["1-99999"]}"#),
            true,
            &[400],
            "invalid range format for --expose",
        ),
        (
            "bad name via API",
            post("/containers/create", br#"{"Cmd":["sleep","1"],"Name":"../../etc"}"#),
            true,
            &[400],
            "Invalid container name (../../etc)",
        ),
        (
            "bad dns via API",
            post("/containers/create", br#"{"Cmd":["sleep","1"],"Dns":["x"]}"#),
            true,
            &[400],
            "IP address is not correctly formatted: x",
        ),
        (
            "unknown mode via API",
            post("/containers/create", br#"{"Cmd":["sleep","1"],"NetworkMode":"nosuch"}"#),
            true,
            &[404],
            "network nosuch not found",
        ),
        ("network wrong types", post("/networks/create", br#"{"Name":["x"]}"#), true, &[400], "invalid JSON"),
        (
            "network bad subnet",
            post("/networks/create", br#"{"Name":"x1","Subnet":"10.0.0.0/99"}"#),
            true,
            &[400],
            "invalid CIDR address",
        ),
        (
            "network overlap",
            post("/networks/create", br#"{"Name":"x1","Subnet":"10.80.0.128/25"}"#),
            true,
            &[400],
            "Pool overlaps with other one on this address space",
        ),
        ("network bad name", post("/networks/create", br#"{"Name":"../x"}"#), true, &[400], "invalid network name"),
        ("connect wrong types", post("/networks/net1/connect", br#"{"Container":1}"#), true, &[400], "invalid JSON"),
        ("unknown path", b"GET /nosuch HTTP/1.1\r\n\r\n".to_vec(), true, &[404], "page not found"),
        (
            "unknown method",
            b"PUT /containers/create HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            true,
            &[405],
            "method not allowed: PUT /containers/create (allowed: POST, DELETE)",
        ),
        ("path traversal", b"GET /containers/..%2F..%2Fetc%2Fpasswd/json HTTP/1.1\r\n\r\n".to_vec(), true, &[404], ""),
        ("dot id", b"DELETE /containers/.. HTTP/1.1\r\n\r\n".to_vec(), true, &[404], "No such container: .."),
        (
            "bad stop timeout",
            b"POST /containers/c1/stop?t=abc HTTP/1.1\r\n\r\n".to_vec(),
            true,
            &[400],
            "invalid value for t: abc",
        ),
        (
            "Content-Length above MAX_BODY",
            format!("POST /containers/create HTTP/1.1\r\nContent-Length: {}\r\n\r\n", max + 1).into_bytes(),
            false,
            &[413],
            "request body too large",
        ),
        (
            "Content-Length overflow",
            b"POST /containers/create HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
            true,
            &[400],
            "",
        ),
        (
            "negative Content-Length",
            b"POST /containers/create HTTP/1.1\r\nContent-Length: -5\r\n\r\n".to_vec(),
            true,
            &[400],
            "",
        ),
        (
            "body above MAX_BODY",
            post("/containers/create", huge_name.as_bytes()),
            false,
            &[413],
            "request body too large",
        ),
        (
            "truncated body",
            b"POST /containers/create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"Cmd\":".to_vec(),
            true,
            &[400],
            "",
        ),
        ("truncated headers", b"POST /containers/create HTTP/1.1\r\nContent-Le".to_vec(), true, &[CLOSED], ""),
        // Malformed heads are hyper's to refuse: 400 (431 for an endless head) without a body,
        // or, for a request cut short, the connection closed.
        ("garbage", b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec(), true, &[400], ""),
        ("no version", b"GET /_ping\r\n\r\n".to_vec(), true, &[400], ""),
        ("HTTP/2", b"GET /_ping HTTP/2\r\n\r\n".to_vec(), true, &[400], ""),
        ("non-UTF-8 head", b"GET /\xff\xfe HTTP/1.1\r\n\r\n".to_vec(), true, &[400], ""),
        ("headers without end", endless_header, false, &[431], ""),
        ("empty", Vec::new(), true, &[CLOSED], ""),
    ];
    for (what, bytes, close_write, statuses, msg) in cases {
        let t = Instant::now();
        let r = raw(&d.socket, &bytes, close_write);
        match &r {
            Some((status, text)) => {
                assert!(statuses.contains(status), "{what}: {status} {text}");
                assert!(text.contains(msg), "{what}: expected {msg:?} in {text}");
            }
            // Only acceptable where the daemon refuses before reading what we still send, or
            // where there is no request to answer.
            None => assert!(
                statuses.contains(&413) || statuses.contains(&CLOSED),
                "{what}: connection closed without an answer"
            ),
        }
        assert!(t.elapsed() < Duration::from_secs(15), "{what}: took {:?}", t.elapsed());
        assert_eq!(snapshot(&th, &d), before, "{what} changed state");
        assert_eq!(d.ok(&["ps", "-q"]).lines().count(), 1, "{what}: the daemon keeps serving");
    }
    // Many half-open connections at once do not stop the daemon serving others.
    let idle: Vec<UnixStream> = (0..64).map(|_| UnixStream::connect(&d.socket).unwrap()).collect();
    assert_eq!(d.ok(&["ps", "-q"]).lines().count(), 1);
    drop(idle);
    assert_eq!(snapshot(&th, &d), before);
}

/// `netd up` with bad flags: exit 1 with a clear error, nothing created in the namespace (no
/// links, ip_forward untouched), nothing left serving.
#[test]
fn bad_up_flags_are_refused_before_touching_anything() {
    require_root!();
    let th = TestHost::new("badup").unwrap();
    let links = || th.host.exec_ok(&["ip", "-o", "link"]).unwrap();
    let fwd = || th.host.exec_ok(&["cat", "/proc/sys/net/ipv4/ip_forward"]).unwrap();
    let (links0, fwd0) = (links(), fwd());
    /// Removes the throwaway roots also when an assertion fails.
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = Dir(std::path::PathBuf::from(format!("/run/netd-test/{}", netd_tests::unique("badup"))));
    let root = dir.0.clone();
    std::fs::create_dir_all(&root).unwrap();
    let up = |extra: &[&str]| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", th.host.path()))
            .arg("--")
            .arg(netd_bin())
            .arg("up")
            .arg("--exec-root")
            .arg(root.join("run"))
            .arg("--data-root")
            .arg(root.join("lib"))
            .arg("--bpffs")
            .arg(root.join("bpf"))
            .arg("-H")
            .arg(format!("unix://{}", root.join("netd.sock").display()))
            .args(if extra.contains(&"--dataplane") { &[][..] } else { &["--dataplane", "none"][..] })
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                return (st.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned());
            }
            if Instant::now() > deadline {
                // It came up: stop it so the test can fail cleanly.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let _ = child.wait();
                return (0, "still running after 20s".to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for (args, msg) in [
        (vec!["--bip", "10.20.0.0/16"], "the bridge address must be a host address of the subnet"),
        (vec!["--bip", "10.20.255.255/16"], "the bridge address must be a host address of the subnet"),
        (vec!["--bip", "bogus"], "invalid CIDR address: bogus"),
        (vec!["--bip", "10.20.0.1/40"], "invalid CIDR address: 10.20.0.1/40"),
        (vec!["--bip", "10.20.0.1"], "invalid CIDR address: 10.20.0.1"),
        (
            vec!["--bip", "10.20.0.1/16", "--fixed-cidr", "10.30.0.0/24"],
            "--fixed-cidr 10.30.0.0/24 is not inside the bridge subnet 10.20.0.0/16",
        ),
        (vec!["--bip", "10.20.0.1/24", "--fixed-cidr", "10.20.0.0/16"], "is not inside the bridge subnet 10.20.0.0/24"),
        (vec!["--fixed-cidr", "nope"], "invalid CIDR address: nope"),
        (vec!["--mtu", "10"], "invalid MTU 10: must be between 68 and 65535"),
        (vec!["--mtu", "70000"], "invalid MTU 70000: must be between 68 and 65535"),
        (vec!["--mtu", "abc"], "invalid value 'abc' for '--mtu"),
        (vec!["--ip", "1.2.3"], "invalid --ip \"1.2.3\": not an IPv4 address"),
        (vec!["--dns", "bogus"], "IP address is not correctly formatted: bogus"),
        (vec!["--metrics-addr", "nonsense"], "invalid --metrics-addr \"nonsense\": want IP:PORT"),
        (vec!["--default-address-pool", "base=10.0.0.0/8,size=4"], "invalid pool size 4 for base 10.0.0.0/8"),
        (vec!["--default-address-pool", "base=bogus,size=24"], "invalid CIDR address: bogus"),
        (vec!["--default-address-pool", "base=fd00::/48,size=40"], "invalid pool size 40 for base fd00::/48"),
        (
            vec!["--ipv6", "--fixed-cidr-v6", "2001:db8::1"],
            "invalid fixed-cidr-v6: invalid fixed-cidr-v6: netip.ParsePrefix(\"2001:db8::1\"): no '/'",
        ),
        (
            vec!["--ipv6", "--fixed-cidr-v6", "10.0.0.0/8"],
            "invalid fixed-cidr-v6: invalid fixed-cidr-v6: '10.0.0.0/8' is not a valid IPv6 subnet",
        ),
        (
            vec!["--ipv6", "--fixed-cidr-v6", "2001:db8::/200"],
            "netip.ParsePrefix(\"2001:db8::/200\"): prefix length out of range",
        ),
        (vec!["--ip6tables", "maybe"], "invalid value 'maybe' for '--ip6tables"),
        (vec!["--iptables-backend", "bogus"], "invalid value 'bogus' for '--iptables-backend"),
        (vec!["--log-level", "chatty"], "invalid value 'chatty' for '--log-level"),
        (vec!["--dataplane", "bogus"], "invalid value 'bogus' for '--dataplane"),
        (vec!["--xdp", "bogus"], "invalid value 'bogus' for '--xdp"),
        (vec!["--icc", "maybe"], "invalid value 'maybe' for '--icc"),
        (vec!["-b", "nosuchbr"], "bridge nosuchbr not found"),
        (vec!["--uplink", "nosuch0"], "uplink nosuch0 not found"),
    ] {
        let (code, stderr) = up(&args);
        assert_ne!(code, 0, "netd up {args:?} did not fail: {stderr}");
        assert!(stderr.contains(msg), "netd up {args:?}: expected {msg:?} on stderr, got {stderr:?}");
        assert_eq!(links(), links0, "netd up {args:?} changed links");
        assert_eq!(fwd(), fwd0, "netd up {args:?} changed ip_forward");
        assert!(!root.join("netd.sock").exists() || UnixStream::connect(root.join("netd.sock")).is_err());
        // Nor a mount: the namespace directory's own mount point goes with the failed start.
        let ns_dir = root.join("run/netns");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.lines().any(|l| l.split(' ').nth(4) == ns_dir.to_str()),
            "netd up {args:?} left a mount on {}",
            ns_dir.display()
        );
    }
    drop(dir);
}
