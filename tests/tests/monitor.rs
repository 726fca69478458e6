//! `netd monitor`: the event stream of sandboxes, networks and published ports, in Docker's
//! JSON shape (`--format json`) and Docker's text lines (the default), with filters.
use std::{
    io::BufRead,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use netd_tests::{Netns, TestDaemon, TestHost, daemon::netd_bin, ip, probe, require_root, unique};
use serde_json::Value;

/// A running `netd monitor ARGS`, its lines on a channel; killed on drop.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Monitor {
    fn start(d: &TestDaemon, args: &[&str]) -> Self {
        let mut child = Command::new(netd_bin())
            .arg("-H")
            .arg(format!("unix://{}", d.socket.display()))
            .arg("monitor")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("netd monitor");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Every line up to and including the first one `f` accepts (bounded wait).
    fn until(&mut self, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(l) => {
                    let hit = f(&l);
                    self.seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) if Instant::now() >= deadline => {
                    eprintln!("no {what} within {timeout:?}; seen: {:#?}", self.seen);
                    return false;
                }
                Err(_) => {}
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ev(l: &str) -> Value {
    serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event: {l:?}: {e}"))
}

#[test]
fn monitor_streams_sandbox_network_and_port_events_like_docker_events() {
    require_root!();
    let th = TestHost::new("mon").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "ebpf"]).unwrap();
    let mut json = Monitor::start(&d, &["--format", "json"]);
    let mut text = Monitor::start(&d, &[]);
    let mut only_ports = Monitor::start(&d, &["--filter", "type=port"]);
    // The monitors subscribe once their request reaches the daemon: create networks until
    // each of them has seen one (bounded).
    let mut synced = false;
    for i in 0..20 {
        d.ok(&["network", "create", &format!("sync{i}")]);
        let got = |m: &mut Monitor| m.until("a network event", Duration::from_millis(500), |l| l.contains("network"));
        if got(&mut json) && got(&mut text) {
            synced = true;
            break;
        }
    }
    assert!(synced, "the monitors never saw a network event");
    let id = d.ok(&["run", "-d", "--name", "web", "-p", "8080:80", "--", "sleep", "600"]).trim().to_string();
    d.ok(&["kill", "web"]);
    d.ok(&["wait", "web"]);
    d.ok(&["rm", "web"]);
    assert!(json.until("the destroy event", Duration::from_secs(10), |l| l.contains("\"destroy\"")));
    let events: Vec<Value> = json.seen.iter().map(|l| ev(l)).collect();
    for e in &events {
        assert_eq!(e["scope"], "local");
        assert!(e["timeNano"].as_i64().unwrap() / 1_000_000_000 == e["time"].as_i64().unwrap());
    }
    let of = |typ: &str, action: &str| {
        events.iter().position(|e| e["Type"] == typ && e["Action"] == action).unwrap_or_else(|| {
            panic!("no {typ} {action} event in {:#?}", json.seen);
        })
    };
    let create = of("container", "create");
    let publish = of("port", "publish");
    let connect =
        events.iter().position(|e| e["Type"] == "network" && e["Action"] == "connect").expect("network connect");
    let start = of("container", "start");
    let kill = of("container", "kill");
    let die = of("container", "die");
    let unpublish = of("port", "unpublish");
    let disconnect = of("network", "disconnect");
    let destroy = of("container", "destroy");
    assert!(create < publish && publish < start && connect < start, "{:#?}", json.seen);
    assert!(start < kill && kill < die && die < destroy, "{:#?}", json.seen);
    assert!(kill < unpublish && unpublish < destroy && kill < disconnect, "{:#?}", json.seen);
    for i in [create, start, kill, die, destroy] {
        assert_eq!(events[i]["Actor"]["ID"], id.as_str());
        assert_eq!(events[i]["Actor"]["Attributes"]["name"], "web");
    }
    assert_eq!(events[kill]["Actor"]["Attributes"]["signal"], "9");
    assert_eq!(events[die]["Actor"]["Attributes"]["exitCode"], "137");
    assert_eq!(events[publish]["Actor"]["ID"], "0.0.0.0:8080/tcp");
    assert_eq!(events[publish]["Actor"]["Attributes"]["container"], id.as_str());
    assert_eq!(events[connect]["Actor"]["Attributes"]["container"], id.as_str());
    assert_eq!(events[connect]["Actor"]["Attributes"]["name"], "bridge");
    // Docker's text line: time with nanoseconds, type, action, id, sorted attributes.
    assert!(text.until("the text destroy line", Duration::from_secs(10), |l| l.contains(" container destroy ")));
    let line = text.seen.iter().find(|l| l.contains(" container die ")).expect("a die line");
    let (time, rest) = line.split_once(' ').unwrap();
    assert_eq!(rest, format!("container die {id} (exitCode=137, name=web)"));
    assert!(time.len() == 30 && time.ends_with('Z') && time.as_bytes()[19] == b'.', "time {time:?}");
    // The filtered monitor saw the port events only.
    assert!(only_ports.until("unpublish", Duration::from_secs(10), |l| l.contains(" port unpublish ")));
    assert!(only_ports.seen.iter().all(|l| l.split(' ').nth(1) == Some("port")), "{:#?}", only_ports.seen);
    // A bad filter is a usage error, as Docker's.
    let r = d.cli(&["monitor", "--filter", "colour=red"]);
    assert_eq!(r.code, 125, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("invalid filter"), "{}", r.stderr);
}

/// `netd ARGS` started in the background (killed when dropped): a client that would wait for
/// a timeout the test has no use for.
struct Bg(Child);

impl Bg {
    fn start(d: &TestDaemon, args: &[&str]) -> Self {
        let c = Command::new(netd_bin())
            .arg("-H")
            .arg(format!("unix://{}", d.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("netd");
        Self(c)
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The monitor clients the daemon counts (`netd stats`: `monitor.drop_clients`,
/// `monitor.trace_clients`) and the flags it wrote into the programs' `MONITOR` map.
fn monitor_stats(d: &TestDaemon) -> Value {
    let v: Value = serde_json::from_str(&d.ok(&["stats", "--format", "json"])).unwrap();
    v["monitor"].clone()
}

/// `netd monitor --type drop|trace` (eBPF): a packet dropped between two networks shows up with
/// its reason, tuple, interface and sandboxes; a connection to a published port from outside
/// shows up as traced packets; the programs' flags are cleared once the clients go; a daemon
/// without the eBPF dataplane refuses with a clear error. With `--bpf-log` the programs' aya-log
/// line for the drop reaches the daemon's log.
#[test]
fn ebpf_monitor_shows_drops_and_traces() {
    require_root!();
    let th = TestHost::new("mdp").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "ebpf", "--bpf-log"]).unwrap();
    let pr = netd_tests::probe_path();
    d.ok(&["network", "create", "--subnet", "10.78.0.0/24", "mfront"]);
    d.ok(&["network", "create", "--subnet", "10.79.0.0/24", "mback"]);
    d.ok(&["run", "-d", "--name", "src", "--network", "mfront", "--", "sleep", "300"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "dst",
        "--network",
        "mback",
        "-p",
        "8080:7000",
        "--",
        &pr,
        "serve",
        "--tag",
        "dst",
        "7000",
    ]);
    assert_eq!(monitor_stats(&d)["flags"], 0, "no client: the programs write nothing");
    let mut drops = Monitor::start(&d, &["--type", "drop", "--json"]);
    let mut traces = Monitor::start(&d, &["--type", "trace", "--json"]);
    // Isolation: src (mfront) to dst (mback) is dropped by netd_from_container. Repeated until
    // the monitor's subscription is live (bounded).
    let isolation = |l: &str| l.contains("\"isolation\"") && l.contains("10.79.0.2");
    let mut seen = false;
    for _ in 0..10 {
        let _probe = Bg::start(&d, &["exec", "src", "--", &pr, "tcp", "10.79.0.2:7000", "x"]);
        if drops.until("an isolation drop", Duration::from_secs(2), isolation) {
            seen = true;
            break;
        }
    }
    assert!(seen, "no isolation drop in `netd monitor --type drop`");
    let e = ev(drops.seen.iter().rev().find(|l| isolation(l)).unwrap());
    assert_eq!(e["type"], "drop");
    assert_eq!(e["reason"], "isolation");
    assert_eq!(e["verdict"], "drop");
    assert_eq!(e["program"], "netd_from_container");
    assert_eq!((e["family"].as_u64(), e["proto"].as_str()), (Some(4), Some("tcp")));
    assert_eq!((e["src"].as_str(), e["dst"].as_str()), (Some("10.78.0.2"), Some("10.79.0.2")));
    assert_eq!(e["dport"], 7000);
    assert!(e["sport"].as_u64().unwrap() >= 1024, "{e}");
    assert_eq!((e["src_sandbox"].as_str(), e["dst_sandbox"].as_str()), (Some("src"), Some("dst")));
    assert!(e["interface"].as_str().unwrap().starts_with("veth"), "the sandbox's host veth: {e}");
    // The programs' own debug log (aya-log), named by the daemon.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.log().contains("netd_from_container: drop (isolation) on ifindex") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        d.log().contains("netd::bpf: netd_from_container: drop (isolation) on ifindex"),
        "no aya-log line: {}",
        netd_tests::daemon::tail(&d.log(), 30)
    );
    // Only drops on the drop monitor.
    assert!(drops.seen.iter().all(|l| ev(l)["type"] == "drop"), "{:#?}", drops.seen);
    // Trace: a connection from outside to the published port, DNATed by netd_from_netdev and
    // redirected into dst; dst's replies seen by netd_from_container.
    let out = th.outside.path();
    let e = probe::tcp_echo(&out, "198.51.100.1:8080".parse().unwrap(), b"traced").expect("published port");
    assert_eq!(e.tag, "dst");
    let dnat = |l: &str| {
        let e = ev(l);
        e["program"] == "netd_from_netdev" && e["dst"] == "10.79.0.2" && e["dport"] == 7000
    };
    assert!(traces.until("the published-port flow", Duration::from_secs(5), dnat), "no trace of the DNATed flow");
    let e = ev(traces.seen.iter().find(|l| dnat(l)).unwrap());
    assert_eq!((e["type"].as_str(), e["verdict"].as_str()), (Some("trace"), Some("redirect")), "{e}");
    assert_eq!((e["src"].as_str(), e["proto"].as_str()), (Some("198.51.100.2"), Some("tcp")));
    assert_eq!(e["dst_sandbox"], "dst");
    assert!(e.get("reason").is_none(), "{e}");
    assert!(
        traces.until("a reply from dst", Duration::from_secs(5), |l| {
            let e = ev(l);
            e["program"] == "netd_from_container" && e["src_sandbox"] == "dst" || e["src"] == "198.51.100.1"
        }),
        "no trace of dst's replies"
    );
    // A Docker container (a namespace behind a bridge named like a Docker network's) reaching
    // the published port through the host's address on its bridge: DNATed by
    // netd_from_foreign_bridge, which traces it too.
    let h = th.host.name.as_str();
    ip(&["-n", h, "link", "add", "br-00000000feed", "type", "bridge"]).unwrap();
    ip(&["-n", h, "addr", "add", "203.0.113.1/24", "dev", "br-00000000feed"]).unwrap();
    ip(&["-n", h, "link", "set", "br-00000000feed", "up"]).unwrap();
    let ctr = Netns::new(&unique("mfb")).unwrap();
    ip(&["-n", h, "link", "add", "mfbp0", "type", "veth", "peer", "name", "eth0", "netns", &ctr.name]).unwrap();
    ip(&["-n", h, "link", "set", "mfbp0", "master", "br-00000000feed", "up"]).unwrap();
    ip(&["-n", &ctr.name, "addr", "add", "203.0.113.2/24", "dev", "eth0"]).unwrap();
    ip(&["-n", &ctr.name, "link", "set", "eth0", "up"]).unwrap();
    let foreign = |l: &str| {
        let e = ev(l);
        e["program"] == "netd_from_foreign_bridge" && e["src"] == "203.0.113.2" && e["dst"] == "10.79.0.2"
    };
    // (The daemon follows the new bridge live: bounded retries until its program is on it.)
    let mut reached = None;
    for _ in 0..10 {
        if let Ok(e) = probe::tcp_echo(&ctr.path(), "203.0.113.1:8080".parse().unwrap(), b"fb") {
            reached = Some(e);
            if traces.until("the foreign bridge's flow", Duration::from_secs(2), foreign) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(reached.expect("published port from the Docker bridge").tag, "dst");
    let e = ev(traces.seen.iter().find(|l| foreign(l)).expect("no trace from netd_from_foreign_bridge"));
    assert_eq!((e["type"].as_str(), e["dport"].as_u64()), (Some("trace"), Some(7000)), "{e}");
    assert_eq!((e["interface"].as_str(), e["dst_sandbox"].as_str()), (Some("br-00000000feed"), Some("dst")), "{e}");
    // Text lines, as `cilium monitor` prints them.
    let mut text = Monitor::start(&d, &["--type", "drop"]);
    let mut seen = false;
    for _ in 0..10 {
        let _probe = Bg::start(&d, &["exec", "src", "--", &pr, "tcp", "10.79.0.2:7000", "x"]);
        if text.until("a text drop line", Duration::from_secs(2), |l| l.contains(" drop (isolation) flow 10.78.0.2:")) {
            seen = true;
            break;
        }
    }
    assert!(seen, "no text drop line");
    let line = text.seen.iter().rev().find(|l| l.contains(" drop (isolation) ")).unwrap();
    assert!(
        line.contains(" -> 10.79.0.2:7000 tcp on veth") && line.ends_with("(netd_from_container) src -> dst"),
        "{line}"
    );
    // With both kinds monitored the flags say so; once every client has gone they are clear.
    assert_eq!(monitor_stats(&d)["flags"], 3, "{}", monitor_stats(&d));
    drop((drops, traces, text));
    let deadline = Instant::now() + Duration::from_secs(10);
    while monitor_stats(&d)["flags"] != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(monitor_stats(&d), serde_json::json!({"drop_clients": 0, "trace_clients": 0, "flags": 0}));
    // A bad type is a usage error; a dataplane without events says so.
    let r = d.cli(&["monitor", "--type", "colour"]);
    assert_eq!(r.code, 125, "{}{}", r.stdout, r.stderr);
    let th2 = TestHost::new("mdn").unwrap();
    let none = TestDaemon::start(&th2, &["--dataplane", "none"]).unwrap();
    let r = none.cli(&["monitor", "--type", "drop"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("dataplane events need the eBPF dataplane"), "{}", r.stderr);
}
