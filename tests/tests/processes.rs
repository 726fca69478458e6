//! Every process of a sandbox ends with it (Docker ends a container's processes with its
//! init): each sandbox has its own cgroup v2, and stop, kill, `rm -f` and `netd down` leave no
//! process of the sandbox behind and its network namespace gone. Host-mode sandboxes, now in a
//! child cgroup, keep the eBPF socket hooks (127.0.0.1:hport). Run per dataplane.
use std::time::{Duration, Instant};

use netd_tests::{TestDaemon, TestHost, probe_path as p, require_root};

/// A `sleep` argument no other test uses: `1000.<pid><k>` (k differs per scenario too).
fn marker(k: u32) -> String {
    format!("1000.{}{k:03}", std::process::id())
}

/// Live (not zombie) processes whose command line is exactly `sleep MARKER`.
fn sleepers(m: &str) -> Vec<i32> {
    let want = format!("sleep\0{m}\0");
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes()))
        .filter(|pid| {
            let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            st.rsplit_once(") ").is_some_and(|(_, r)| !r.starts_with('Z'))
        })
        .collect()
}

/// Now, in the clock ticks since boot that `/proc/PID/stat` start times use.
fn ticks_now() -> u64 {
    let up: f64 = std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (up * hz) as u64
}

/// Processes started before `before` (ticks since boot) whose network namespace is `ns`
/// (`net:[inode]`). Only those can have been in the sandbox's namespace: once it is freed, its
/// inode number may be reused by a namespace of a process started later (other tests).
fn in_netns(ns: &str, before: u64) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let start: u64 =
                st.rsplit_once(") ").and_then(|(_, r)| r.split_whitespace().nth(19)?.parse().ok()).unwrap_or(u64::MAX);
            start <= before
        })
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|l| l.to_string_lossy() == ns))
        .collect()
}

/// The cgroup2 hierarchy mounted privately for the test's checks (the daemon's own mount
/// goes away with it at `netd down`).
struct Cg2(std::path::PathBuf);

impl Cg2 {
    fn new(tag: &str) -> Self {
        let p = std::path::PathBuf::from(format!("/run/netd-test/cg2-{}", netd_tests::unique(tag)));
        std::fs::create_dir_all(&p).unwrap();
        nix::mount::mount(Some("cgroup2"), &p, Some("cgroup2"), nix::mount::MsFlags::empty(), None::<&str>)
            .expect("mount cgroup2");
        Self(p)
    }
    fn sandbox(&self, d: &TestDaemon, id: &str) -> std::path::PathBuf {
        self.0.join(d.cgroup_parent()).join(id)
    }
}

impl Drop for Cg2 {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A sandbox running `sh -c 'sleep BG & exec sleep MAIN'` (plus `pre;` first, if given).
struct Bg {
    name: String,
    id: String,
    bg: String,
    main: String,
    netns: String,
    /// Every process of the sandbox started by then (ticks since boot).
    started_by: u64,
}

fn start_bg(d: &TestDaemon, cg: &Cg2, name: &str, k: u32, extra: &[&str], pre: &str) -> Bg {
    let (bg, main) = (marker(k), marker(k + 1));
    let script = format!("{pre}sleep {bg} & exec sleep {main}");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", &script]);
    let id = d.ok(&args).trim().to_string();
    wait_until("both processes", Duration::from_secs(10), || sleepers(&bg).len() == 1 && sleepers(&main).len() == 1);
    // ps / inspect report the main process; both are in the sandbox's cgroup.
    let pid = d.inspect(name)["State"]["Pid"].as_i64().unwrap() as i32;
    assert_eq!(sleepers(&main), [pid], "inspect's Pid is the main process");
    let procs = std::fs::read_to_string(cg.sandbox(d, &id).join("cgroup.procs")).unwrap();
    for p in [sleepers(&bg)[0], pid] {
        assert!(procs.lines().any(|l| l.trim() == p.to_string()), "{p} in the sandbox's cgroup: {procs}");
    }
    let ps = d.ok(&["ps"]);
    assert!(ps.lines().any(|l| l.ends_with(name)), "{ps}");
    let netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap().to_string_lossy().into_owned();
    Bg { name: name.to_string(), id, bg, main, netns, started_by: ticks_now() }
}

/// Nothing of `b` is left: no process, its namespace (for a namespace of its own), its cgroup.
fn assert_gone(d: &TestDaemon, cg: &Cg2, b: &Bg, own_netns: bool, how: &str) {
    wait_until(&format!("{} gone after {how}", b.name), Duration::from_secs(10), || {
        sleepers(&b.bg).is_empty() && sleepers(&b.main).is_empty()
    });
    if own_netns {
        let left: Vec<String> = in_netns(&b.netns, b.started_by)
            .iter()
            .map(|p| {
                let c = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                format!("{p}: {}", String::from_utf8_lossy(&c).replace('\0', " "))
            })
            .collect();
        assert!(left.is_empty(), "{how}: processes left in {}'s {}: {left:?}", b.name, b.netns);
        assert!(!d.exec_root().join("netns").join(&b.id).exists(), "{how}: namespace mount left");
    }
    assert!(!cg.sandbox(d, &b.id).exists(), "{how}: cgroup left");
}

fn sandbox_processes_end_with_it(dataplane: &str) {
    let k0 = if dataplane == "ebpf" { 100 } else { 200 };
    let th = TestHost::new(&format!("pr{}", &dataplane[..1])).unwrap();
    let mut d = TestDaemon::start(&th, &["--dataplane", dataplane]).unwrap();
    let cg = Cg2::new(&format!("pr{}", &dataplane[..1]));
    let pr = p();

    // rm -f: everything is gone when it returns, also what `netd exec` left running.
    let b = start_bg(&d, &cg, "rmf", k0 + 10, &[], "");
    let ex = marker(k0 + 15);
    d.ok(&["exec", "rmf", "--", "sh", "-c", &format!("sleep {ex} >/dev/null 2>&1 &")]);
    wait_until("the exec'd background process", Duration::from_secs(10), || sleepers(&ex).len() == 1);
    let procs = std::fs::read_to_string(cg.sandbox(&d, &b.id).join("cgroup.procs")).unwrap_or_default();
    assert!(
        procs.lines().any(|l| l.trim() == sleepers(&ex)[0].to_string()),
        "exec'd process in the sandbox's cgroup: {procs}"
    );
    d.ok(&["rm", "-f", "rmf"]);
    assert!(sleepers(&b.bg).is_empty() && sleepers(&b.main).is_empty(), "rm -f returned with processes left");
    assert!(sleepers(&ex).is_empty(), "a process `netd exec` started outlived rm -f");
    assert_gone(&d, &cg, &b, true, "rm -f");

    // stop: SIGTERM ends the main process, the rest goes with it.
    let b = start_bg(&d, &cg, "stp", k0 + 20, &[], "");
    d.ok(&["stop", "-t", "5", "stp"]);
    assert_gone(&d, &cg, &b, true, "stop");
    assert_eq!(d.inspect("stp")["State"]["Status"], "exited");
    // Restarting it starts both again in a fresh cgroup; kill ends them all.
    d.ok(&["start", "stp"]);
    wait_until("restarted", Duration::from_secs(10), || sleepers(&b.bg).len() == 1 && sleepers(&b.main).len() == 1);
    assert!(cg.sandbox(&d, &b.id).exists());
    d.ok(&["kill", "stp"]);
    d.ok(&["wait", "stp"]);
    assert_gone(&d, &cg, &b, false, "kill");

    // Host mode: the sandbox's own cgroup is below the one the socket hooks are attached to,
    // so its processes still reach published ports on 127.0.0.1 (eBPF: translated at connect).
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "8080:7000",
        "-p",
        "5353:7000/udp",
        "--",
        &pr,
        "serve",
        "--tag",
        "web",
        "7000",
    ]);
    let hb = start_bg(
        &d,
        &cg,
        "hb",
        k0 + 30,
        &["--network", "host"],
        &format!(
            "for i in 1 2 3 4 5 6 7 8 9 10; do {pr} tcp 127.0.0.1:8080 hosttcp && break; sleep 0.3; done; {pr} udp 127.0.0.1:5353 hostudp; "
        ),
    );
    let logs = d.ok(&["logs", "hb"]);
    assert!(logs.lines().any(|l| l.starts_with("web:") && l.ends_with(":hosttcp")), "{dataplane}: {logs}");
    assert!(logs.lines().any(|l| l.starts_with("web:") && l.ends_with(":hostudp")), "{dataplane}: {logs}");

    // netd down: every sandbox's processes end (bridge and host mode), namespaces go.
    let b = start_bg(&d, &cg, "dwn", k0 + 40, &["-p", "9090:7000"], "");
    d.down().unwrap();
    assert_gone(&d, &cg, &b, true, "down");
    assert_gone(&d, &cg, &hb, false, "down (host mode)");
    assert!(!cg.0.join(d.cgroup_parent()).exists(), "cgroup parent left after down");
}

#[test]
fn ebpf_sandbox_processes_end_with_it() {
    require_root!();
    sandbox_processes_end_with_it("ebpf");
}

#[test]
fn iptables_sandbox_processes_end_with_it() {
    require_root!();
    sandbox_processes_end_with_it("iptables");
}
