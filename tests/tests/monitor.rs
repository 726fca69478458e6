//! `netd monitor`: the event stream of sandboxes, networks and published ports, in Docker's
//! JSON shape (`--format json`) and Docker's text lines (the default), with filters.
use std::{
    io::BufRead,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use netd_tests::{TestDaemon, TestHost, daemon::netd_bin, require_root};
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
