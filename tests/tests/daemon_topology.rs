//! The daemon and Docker's bridge topology (dataplane `none`: topology only), with real
//! sandboxes, real processes and real packets.
use netd_tests::{TestDaemon, TestHost, daemon::probe_bin, ip, probe, require_root};

fn probe() -> String {
    probe_bin().display().to_string()
}

/// Wait (bounded) until a TCP echo through `exec` succeeds.
fn exec_tcp(d: &TestDaemon, from: &str, dst: &str, payload: &str) -> Result<String, String> {
    let p = probe();
    let mut last = String::new();
    for _ in 0..30 {
        let r = d.cli(&["exec", from, "--", &p, "tcp", dst, payload]);
        if r.code == 0 {
            return Ok(r.stdout.trim().to_string());
        }
        last = format!("{} {}", r.stdout, r.stderr);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(last)
}

#[test]
fn default_bridge_is_dockers_docker0_model() {
    require_root!();
    let th = TestHost::new("topo").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();

    // The bridge: netd0 with 172.17.0.1/16, up.
    let link = th.host.exec_ok(&["ip", "-o", "-4", "addr", "show", "dev", "netd0"]).unwrap();
    assert!(link.contains("172.17.0.1/16"), "{link}");

    let id_a = d.serve("sa", &[], "7000");
    d.serve("sb", &[], "7000");
    assert_eq!(id_a.len(), 64, "run -d prints the full id: {id_a}");

    let a = d.inspect("sa");
    let b = d.inspect("sb");
    assert_eq!(a["Name"], "/sa");
    assert_eq!(a["State"]["Status"], "running");
    assert_eq!(a["NetworkSettings"]["IPAddress"], "172.17.0.2");
    assert_eq!(b["NetworkSettings"]["IPAddress"], "172.17.0.3");
    assert_eq!(a["NetworkSettings"]["Gateway"], "172.17.0.1");
    assert_eq!(a["NetworkSettings"]["IPPrefixLen"], 16);
    assert_eq!(a["NetworkSettings"]["MacAddress"], "02:42:ac:11:00:02");
    assert_eq!(a["NetworkSettings"]["Networks"]["bridge"]["IPAddress"], "172.17.0.2");
    assert_eq!(a["Config"]["Hostname"], &id_a[..12]);

    // Inside: eth0 with the address, MAC and route Docker sets, lo up.
    let addr = d.ok(&["exec", "sa", "--", "ip", "-o", "-4", "addr", "show"]);
    assert!(
        addr.contains("eth0    inet 172.17.0.2/16")
            || addr.contains("eth0\tinet 172.17.0.2/16")
            || addr.contains("eth0 inet 172.17.0.2/16"),
        "{addr}"
    );
    assert!(addr.contains("lo    inet 127.0.0.1/8") || addr.contains("127.0.0.1/8"), "{addr}");
    let route = d.ok(&["exec", "sa", "--", "ip", "route"]);
    assert!(route.contains("default via 172.17.0.1 dev eth0"), "{route}");
    let link = d.ok(&["exec", "sa", "--", "ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains("link/ether 02:42:ac:11:00:02"), "{link}");
    let hostname = d.ok(&["exec", "sa", "--", "cat", "/etc/hostname"]);
    assert_eq!(hostname.trim(), &id_a[..12]);
    let uname = d.ok(&["exec", "sa", "--", "hostname"]);
    assert_eq!(uname.trim(), &id_a[..12]);

    // The host side: veth<7 hex> on netd0.
    let veths = th.host.exec_ok(&["ip", "-o", "link", "show", "master", "netd0"]).unwrap();
    let names: Vec<&str> =
        veths.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap()).collect();
    assert_eq!(names.len(), 2, "{veths}");
    for n in &names {
        assert!(n.starts_with("veth") && n.len() == 11 && n[4..].chars().all(|c| c.is_ascii_hexdigit()), "{n}");
    }

    // Real packets: sandbox to sandbox, and to the bridge address (a server on the host).
    let e = exec_tcp(&d, "sa", "172.17.0.3:7000", "hello-b").expect("a -> b");
    assert_eq!(e, "sb:172.17.0.2:hello-b");
    let _gw = probe::EchoServer::start(&th.host.path(), "172.17.0.1:7100".parse().unwrap(), "host").unwrap();
    let e = exec_tcp(&d, "sb", "172.17.0.1:7100", "hello-host").expect("b -> gateway");
    assert_eq!(e, "host:172.17.0.3:hello-host");

    // rm -f prints the names given and removes the veths.
    let out = d.ok(&["rm", "-f", "sa", "sb"]);
    assert_eq!(out, "sa\nsb\n");
    let veths = th.host.exec_ok(&["ip", "-o", "link", "show", "master", "netd0"]).unwrap();
    assert!(veths.trim().is_empty(), "veths left: {veths}");
    drop(d);
    // netd down removed the bridge.
    let links = th.host.exec_ok(&["ip", "-o", "link"]).unwrap();
    assert!(!links.contains("netd0"), "{links}");
}

#[test]
fn bip_fixed_cidr_mtu_and_existing_bridge() {
    require_root!();
    let th = TestHost::new("bip").unwrap();
    {
        let d = TestDaemon::start(
            &th,
            &["--dataplane", "none", "--bip", "10.55.0.1/24", "--fixed-cidr", "10.55.0.128/25", "--mtu", "1400"],
        )
        .unwrap();
        let link = th.host.exec_ok(&["ip", "-o", "addr", "show", "dev", "netd0"]).unwrap();
        assert!(link.contains("10.55.0.1/24"), "{link}");
        let l = th.host.exec_ok(&["ip", "-o", "link", "show", "netd0"]).unwrap();
        assert!(l.contains("mtu 1400"), "{l}");
        d.serve("xx", &[], "7000");
        let x = d.inspect("xx");
        let ip: std::net::Ipv4Addr = x["NetworkSettings"]["IPAddress"].as_str().unwrap().parse().unwrap();
        assert!(ip.octets()[3] >= 128 && ip.octets()[..3] == [10, 55, 0], "address {ip} must come from --fixed-cidr");
        assert_eq!(x["NetworkSettings"]["Gateway"], "10.55.0.1");
        assert_eq!(x["NetworkSettings"]["IPPrefixLen"], 24);
        let l = d.ok(&["exec", "xx", "--", "ip", "-o", "link", "show", "eth0"]);
        assert!(l.contains("mtu 1400"), "{l}");
        let e = exec_tcp(&d, "xx", "10.55.0.1:9", "q");
        assert!(e.is_err(), "nothing listens on the gateway's port 9");
    }
    // -b: an existing bridge with its own address; netd uses it and leaves it in place.
    ip(&["-n", &th.host.name, "link", "add", "mybr0", "type", "bridge"]).unwrap();
    ip(&["-n", &th.host.name, "addr", "add", "10.66.0.1/24", "dev", "mybr0"]).unwrap();
    ip(&["-n", &th.host.name, "link", "set", "mybr0", "up"]).unwrap();
    {
        let d = TestDaemon::start(&th, &["--dataplane", "none", "-b", "mybr0"]).unwrap();
        d.serve("yy", &[], "7000");
        let y = d.inspect("yy");
        assert_eq!(y["NetworkSettings"]["IPAddress"], "10.66.0.2");
        assert_eq!(y["NetworkSettings"]["Gateway"], "10.66.0.1");
        let veths = th.host.exec_ok(&["ip", "-o", "link", "show", "master", "mybr0"]).unwrap();
        assert_eq!(veths.lines().count(), 1, "{veths}");
        let links = th.host.exec_ok(&["ip", "-o", "link"]).unwrap();
        assert!(!links.contains("netd0"), "no netd0 with -b: {links}");
    }
    let after = th.host.exec_ok(&["ip", "-o", "addr", "show", "dev", "mybr0"]).unwrap();
    assert!(after.contains("10.66.0.1/24"), "the user's bridge keeps its address: {after}");
    // -b none: no default bridge; bridge mode is refused, none mode works.
    {
        let d = TestDaemon::start(&th, &["--dataplane", "none", "-b", "none"]).unwrap();
        let r = d.cli(&["run", "-d", "--", "true"]);
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains("network bridge not found"), "{}", r.stderr);
        d.ok(&["run", "-d", "--network", "none", "--name", "nn", "--", "sleep", "60"]);
    }
}

#[test]
fn default_subnet_skips_routed_172_17() {
    require_root!();
    let th = TestHost::new("pool").unwrap();
    // Something on the host already routes 172.17.0.0/16: Docker takes the next free pool.
    ip(&["-n", &th.host.name, "link", "add", "lanx0", "type", "veth", "peer", "name", "lanx1"]).unwrap();
    ip(&["-n", &th.host.name, "addr", "add", "172.17.5.1/16", "dev", "lanx0"]).unwrap();
    ip(&["-n", &th.host.name, "link", "set", "lanx0", "up"]).unwrap();
    ip(&["-n", &th.host.name, "link", "set", "lanx1", "up"]).unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    let link = th.host.exec_ok(&["ip", "-o", "-4", "addr", "show", "dev", "netd0"]).unwrap();
    assert!(link.contains("172.18.0.1/16"), "{link}");
    drop(d);
}

#[test]
fn host_none_and_container_modes() {
    require_root!();
    let th = TestHost::new("modes").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    let p = probe();

    // host: the daemon's namespace; -p is discarded with Docker's warning.
    let r = d.cli(&[
        "run",
        "-d",
        "--name",
        "hm",
        "--network",
        "host",
        "-p",
        "8080:80",
        "--",
        &p,
        "serve",
        "--tag",
        "hm",
        "7200",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("WARNING: Published ports are discarded when using host network mode"), "{}", r.stderr);
    let addrs = d.ok(&["exec", "hm", "--", "ip", "-o", "-4", "addr"]);
    assert!(addrs.contains("198.51.100.1"), "host mode sees the host's uplink: {addrs}");
    let e = probe::tcp_echo(&th.outside.path(), "198.51.100.1:7200".parse().unwrap(), b"x")
        .expect("host-mode server reachable from outside");
    assert_eq!(e.tag, "hm");
    let h = d.inspect("hm");
    assert_eq!(h["HostConfig"]["NetworkMode"], "host");
    assert_eq!(h["NetworkSettings"]["IPAddress"], "");

    // none: only lo.
    d.ok(&["run", "-d", "--name", "nm", "--network", "none", "--", "sleep", "300"]);
    let links = d.ok(&["exec", "nm", "--", "ip", "-o", "link"]);
    let names: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(names, ["lo"], "{links}");

    // container:NAME shares the namespace (same eth0, same address).
    d.serve("base", &[], "7300");
    d.ok(&["run", "-d", "--name", "jj", "--network", "container:base", "--", "sleep", "300"]);
    let ja = d.ok(&["exec", "jj", "--", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(ja.contains("172.17.0.2/16"), "{ja}");
    let e = d.ok(&["exec", "jj", "--", &p, "tcp", "127.0.0.1:7300", "shared"]);
    assert_eq!(e.trim(), "base:127.0.0.1:shared", "the joiner reaches base's server on loopback");
    let jh = d.ok(&["exec", "jj", "--", "cat", "/etc/hostname"]);
    let base_id = d.inspect("base")["Id"].as_str().unwrap().to_string();
    assert_eq!(jh.trim(), &base_id[..12], "joiner shares base's /etc/hostname");

    // Every conflicting option gets Docker's error, exit 125, and creates nothing.
    let before = d.ok(&["ps", "-a", "-q"]);
    for (flags, msg) in [
        (vec!["-p", "80:80"], "conflicting options: port publishing and the container type network mode"),
        (vec!["-P"], "conflicting options: port publishing and the container type network mode"),
        (vec!["--expose", "80"], "conflicting options: port exposing and the container type network mode"),
        (vec!["--hostname", "x"], "conflicting options: hostname and the network mode"),
        (vec!["--dns", "198.51.100.2"], "conflicting options: dns and the network mode"),
        (vec!["--add-host", "a:1.2.3.4"], "conflicting options: custom host-to-IP mapping and the network mode"),
        (
            vec!["--link", "base:b"],
            "conflicting options: container type network can't be used with links. This would result in undefined behavior",
        ),
        (vec!["--mac-address", "02:42:00:00:00:01"], "conflicting options: mac-address and the network mode"),
    ] {
        let mut args = vec!["run", "-d", "--network", "container:base"];
        args.extend(flags.iter().copied());
        args.extend(["--", "true"]);
        let r = d.cli(&args);
        assert_eq!(r.code, 125, "{flags:?}: {}", r.stderr);
        assert!(r.stderr.contains(msg), "{flags:?}: {}", r.stderr);
    }
    assert_eq!(d.ok(&["ps", "-a", "-q"]), before, "failed runs create nothing");
    let r = d.cli(&["run", "-d", "--network", "container:nosuch", "--", "true"]);
    assert_eq!(r.code, 125);
    assert!(r.stderr.contains("No such container: nosuch"), "{}", r.stderr);

    // When base stops, the joiner keeps running with only lo.
    d.ok(&["stop", "-t", "1", "base"]);
    let links = d.ok(&["exec", "jj", "--", "ip", "-o", "link"]);
    let names: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(names, ["lo"], "{links}");
    assert_eq!(d.inspect("jj")["State"]["Status"], "running");
}

#[test]
fn etc_files_are_dockers() {
    require_root!();
    let th = TestHost::new("etc").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none", "--dns", "198.51.100.2", "--dns-search", "example.test"])
        .unwrap();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "ee",
        "--hostname",
        "web",
        "--domainname",
        "example.org",
        "--add-host",
        "db:10.1.2.3",
        "--add-host",
        "gw:host-gateway",
        "--",
        "sleep",
        "300",
    ]);
    let hosts = d.ok(&["exec", "ee", "--", "cat", "/etc/hosts"]);
    assert_eq!(
        hosts,
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::\tip6-localnet\nff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n10.1.2.3\tdb\n172.17.0.1\tgw\n172.17.0.2\tweb.example.org web\n"
    );
    let rc = d.ok(&["exec", "ee", "--", "cat", "/etc/resolv.conf"]);
    assert!(rc.starts_with("# Generated by Docker Engine."), "{rc}");
    assert!(rc.contains("\nnameserver 198.51.100.2\n"), "{rc}");
    assert!(rc.contains("\nsearch example.test\n"), "{rc}");
    assert!(!rc.contains("10.255.255.53"), "--dns replaces the host's servers: {rc}");
    let hn = d.ok(&["exec", "ee", "--", "hostname"]);
    assert_eq!(hn.trim(), "web");
    let dn = d.ok(&["exec", "ee", "--", "cat", "/proc/sys/kernel/domainname"]);
    assert_eq!(dn.trim(), "example.org");
    // The host's own files are untouched (rslave mount namespace).
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(!host_hosts.contains("web.example.org"));

    // Per-sandbox --dns/--dns-option override the daemon's.
    d.ok(&["run", "-d", "--name", "ff", "--dns", "198.51.100.9", "--dns-option", "ndots:2", "--", "sleep", "300"]);
    let rc = d.ok(&["exec", "ff", "--", "cat", "/etc/resolv.conf"]);
    assert!(rc.contains("\nnameserver 198.51.100.9\n") && rc.contains("\noptions ndots:2\n"), "{rc}");
    // -e, and Docker's env defaults.
    d.ok(&["run", "-d", "--name", "gg", "-e", "FOO=bar", "--", "sleep", "300"]);
    let env = d.ok(&["exec", "gg", "--", "sh", "-c", "echo $FOO $HOSTNAME $PATH"]);
    let gid = d.inspect("gg")["Id"].as_str().unwrap().to_string();
    assert_eq!(env.trim(), format!("bar {} /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", &gid[..12]));
}

#[test]
fn run_attached_exit_codes_logs_and_lifecycle() {
    require_root!();
    let th = TestHost::new("life").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    // Attached run streams output and returns the exit code.
    let r = d.cli(&["run", "--name", "once", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.contains("out") && r.stdout.contains("err"), "{r:?}");
    assert_eq!(d.ok(&["logs", "once"]), "out\nerr\n");
    assert_eq!(d.inspect("once")["State"]["ExitCode"], 3);
    assert_eq!(d.inspect("once")["State"]["Status"], "exited");
    // 127 / 126 like Docker.
    let r = d.cli(&["run", "--rm", "--", "/nonexistent-binary"]);
    assert_eq!(r.code, 127, "{r:?}");
    let r = d.cli(&["run", "--rm", "--", "/etc/hostname"]);
    assert_eq!(r.code, 126, "{r:?}");
    // --rm removes on exit.
    let r = d.cli(&["run", "--rm", "--name", "gone", "--", "true"]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = d.cli(&["inspect", "gone"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("No such container: gone"), "{r:?}");
    // Name conflicts: Docker's message with the full id.
    let id = d.ok(&["run", "-d", "--name", "web", "--", "sleep", "300"]).trim().to_string();
    let r = d.cli(&["run", "-d", "--name", "web", "--", "sleep", "1"]);
    assert_eq!(r.code, 125);
    assert!(
        r.stderr.contains(&format!("Conflict. The container name \"/web\" is already in use by container \"{id}\"")),
        "{}",
        r.stderr
    );
    // Prefix references, stop/start/restart, ps.
    let ps = d.ok(&["ps"]);
    assert!(ps.starts_with("CONTAINER ID"), "{ps}");
    assert!(ps.contains(&id[..12]) && ps.contains("Up "), "{ps}");
    assert_eq!(d.ok(&["stop", "-t", "1", &id[..8]]), format!("{}\n", &id[..8]));
    assert_eq!(d.inspect("web")["State"]["Status"], "exited");
    assert!(!d.ok(&["ps", "-q"]).contains(&id[..12]));
    assert!(d.ok(&["ps", "-a", "-q"]).contains(&id[..12]));
    d.ok(&["start", "web"]);
    assert_eq!(d.inspect("web")["State"]["Status"], "running");
    d.ok(&["restart", "-t", "1", "web"]);
    assert_eq!(d.inspect("web")["RestartCount"], 1);
    let r = d.cli(&["rm", "web"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("stop the container before removing or force remove"), "{}", r.stderr);
    d.ok(&["rm", "-f", "web"]);
    let r = d.cli(&["stop", "nosuch"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("Error response from daemon: No such container: nosuch"), "{}", r.stderr);
}

#[test]
fn cli_without_daemon_says_so() {
    require_root!();
    let out = std::process::Command::new(netd_tests::daemon::netd_bin())
        .args(["-H", "unix:///run/netd-test/nonexistent.sock", "ps"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Cannot connect to the netd daemon at unix:///run/netd-test/nonexistent.sock. Is the daemon running?"
    );
}
