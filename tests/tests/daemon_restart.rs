//! Sandboxes outlive the daemon; a restarted daemon adopts them; churn leaves nothing behind.
use std::{
    os::unix::net::UnixDatagram,
    path::PathBuf,
    time::{Duration, Instant},
};

use netd_tests::{TestDaemon, TestHost, daemon::probe_bin, docker::MountNs, require_root};

#[test]
fn kill9_then_up_adopts_sandboxes_and_their_exit_status() {
    require_root!();
    let th = TestHost::new("adopt").unwrap();
    let mut d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    let p = probe_bin().display().to_string();
    d.ok(&["run", "-d", "--name", "srv", "--", &p, "serve", "--tag", "srv", "7000"]);
    d.ok(&["run", "-d", "--name", "cli", "--", "sleep", "300"]);
    d.ok(&["run", "-d", "--name", "short", "--", "sh", "-c", "sleep 2; echo finished; exit 7"]);
    let pid_before = d.inspect("srv")["State"]["Pid"].as_i64().unwrap();

    d.kill9_and_restart_after(Duration::from_secs(3)).unwrap();

    // The running sandboxes were adopted: same process, same address, still reachable.
    let srv = d.inspect("srv");
    assert_eq!(srv["State"]["Status"], "running");
    assert_eq!(srv["State"]["Pid"].as_i64().unwrap(), pid_before);
    let ip = srv["NetworkSettings"]["IPAddress"].as_str().unwrap().to_string();
    let out = d.ok(&["exec", "cli", "--", &p, "tcp", &format!("{ip}:7000"), "after-restart"]);
    assert_eq!(out.trim(), "srv:172.17.0.3:after-restart");
    // The one that exited while no daemon ran kept its status and output.
    let short = d.inspect("short");
    assert_eq!(short["State"]["Status"], "exited");
    assert_eq!(short["State"]["ExitCode"], 7);
    assert_eq!(d.ok(&["logs", "short"]), "finished\n");
    // New sandboxes get fresh addresses (the adopted ones stay reserved).
    d.ok(&["run", "-d", "--name", "new", "--", "sleep", "300"]);
    assert_eq!(d.inspect("new")["NetworkSettings"]["IPAddress"], "172.17.0.4");
    // The adopted sandbox is still under the daemon's control.
    d.ok(&["stop", "-t", "1", "srv"]);
    assert_eq!(d.inspect("srv")["State"]["Status"], "exited");
    let veths = th.host.exec_ok(&["ip", "-o", "link", "show", "master", "netd0"]).unwrap();
    assert_eq!(veths.lines().count(), 2, "cli and new keep theirs, srv's is gone: {veths}");
}

#[test]
fn orphans_of_a_crashed_daemon_are_cleaned_up() {
    require_root!();
    let th = TestHost::new("orph").unwrap();
    let mut d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    d.ok(&["run", "-d", "--name", "gone", "--", "sleep", "300"]);
    let pid = d.inspect("gone")["State"]["Pid"].as_i64().unwrap() as i32;
    // Crash the daemon and kill the sandbox's process behind its back.
    d.kill9_only();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(300));
    d.restart().unwrap();
    assert_eq!(d.inspect("gone")["State"]["Status"], "exited");
    let veths = th.host.exec_ok(&["ip", "-o", "link", "show", "master", "netd0"]).unwrap();
    assert!(veths.trim().is_empty(), "orphan veth removed: {veths}");
    let ns: Vec<_> = std::fs::read_dir(d.exec_root().join("netns")).unwrap().collect();
    assert!(ns.is_empty(), "orphan netns mounts removed");
}

#[test]
fn churn_200_sandboxes_leaves_nothing() {
    require_root!();
    let th = TestHost::new("churn").unwrap();
    let d = TestDaemon::start(&th, &["--dataplane", "none"]).unwrap();
    let t = Instant::now();
    for batch in 0..10 {
        let mut names = Vec::new();
        for i in 0..20 {
            let n = format!("c{batch}x{i}");
            d.ok(&["run", "-d", "--name", &n, "-p", "80", "--", "sleep", "300"]);
            names.push(n);
        }
        let mut args = vec!["rm", "-f"];
        args.extend(names.iter().map(String::as_str));
        d.ok(&args);
    }
    eprintln!("200 sandboxes created and removed in {:.1}s", t.elapsed().as_secs_f64());
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
    let veths = th.host.exec_ok(&["ip", "-o", "link", "show", "master", "netd0"]).unwrap();
    assert!(veths.trim().is_empty(), "{veths}");
    let links = th.host.exec_ok(&["ip", "-o", "link"]).unwrap();
    assert!(!links.contains("veth") && !links.contains("vp"), "{links}");
    assert_eq!(std::fs::read_dir(d.exec_root().join("netns")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(d.data_root().join("containers")).unwrap().count(), 0);
    // The daemon's own cgroup2 mount (the sandboxes' cgroups) and its namespace directory's
    // (a mount point of its own, see `netns::own_mount`) stay while it runs; nothing else.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let own = [d.exec_root().join("cgroup2"), d.exec_root().join("netns")];
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(d.root.to_str().unwrap()))
        .filter(|l| !own.iter().any(|o| l.split_whitespace().nth(1) == o.to_str()))
        .collect();
    assert!(left.is_empty(), "no mounts left under the test root: {left:?}");
    // The address pool is whole again: the next sandbox gets .2.
    d.ok(&["run", "-d", "--name", "after", "--", "sleep", "300"]);
    assert_eq!(d.inspect("after")["NetworkSettings"]["IPAddress"], "172.17.0.2");
}

/// `netd down` streams the teardown's progress (`k/N sandboxes stopped`) and returns once the
/// daemon is gone; started by systemd (`NOTIFY_SOCKET`), the daemon reports `READY=1` once its
/// socket serves and `STOPPING=1` when the teardown begins.
#[test]
fn down_streams_progress_and_notifies_systemd() {
    require_root!();
    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = Dir(PathBuf::from(format!("/run/netd-test/{}", netd_tests::unique("sdn"))));
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join("notify.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let recv = || {
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).expect("a datagram on NOTIFY_SOCKET");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let th = TestHost::new("dprog").unwrap();
    let mut d =
        TestDaemon::start_env(&th, &[("NOTIFY_SOCKET", path.to_str().unwrap())], &["--dataplane", "none"]).unwrap();
    assert_eq!(recv(), "READY=1");
    assert!(std::os::unix::net::UnixStream::connect(&d.socket).is_ok(), "READY=1 before the socket serves");
    let n = 12;
    for i in 0..n {
        d.ok(&["run", "-d", "--name", &format!("s{i}"), "-p", "80", "--", "sleep", "300"]);
    }
    let out = d.down_output(&["down"]).unwrap();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.last().copied(), Some(format!("{n}/{n} sandboxes stopped").as_str()), "{}", out.stdout);
    let mut prev = 0;
    for l in &lines {
        let k: usize = l
            .strip_suffix(&format!("/{n} sandboxes stopped"))
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {l:?}"));
        assert!(k >= prev, "progress goes forward: {}", out.stdout);
        prev = k;
    }
    assert!(!d.socket.exists(), "netd down returned before the daemon removed its socket");
    // The sandboxes' host veths went in the teardown's one batch deletion.
    let links = th.host.exec_ok(&["ip", "-o", "link", "show"]).unwrap();
    assert!(!links.lines().any(|l| l.contains(": veth")), "veths left after netd down:\n{links}");
    assert_eq!(recv(), "STOPPING=1");
}

/// `netd up` with its default pin directory (`/sys/fs/bpf/netd`) where /sys/fs/bpf is not
/// mounted (a machine whose init mounts no bpffs): the daemon mounts bpffs there itself, pins
/// its maps and programs, and removes the pins at `netd down`. In a private mount namespace (the
/// mount stays in it); the test's own mount table is checked unchanged.
#[test]
fn default_pin_dir_gets_a_bpffs_mounted_when_there_is_none() {
    require_root!();
    let th = TestHost::new("bpfd").unwrap();
    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let root = Dir(PathBuf::from(format!("/run/netd-test/{}", netd_tests::unique("bpfd"))));
    let ns = MountNs::new(&th.host.path(), &root.0.join("priv"), &root.0.join("ready")).unwrap();
    let in_ns = |script: &str| -> String {
        let o = ns.cmd(&["sh", "-c", script]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    // bpffs mounts on /sys/fs/bpf, in a mount table.
    let bpf_mounts =
        |table: &str| table.lines().filter(|l| l.contains(" /sys/fs/bpf ") && l.contains(" - bpf ")).count();
    let ours = || std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let before = bpf_mounts(&ours());
    // Whatever the machine has there stays out of the namespace's view (unmounted in it only).
    in_ns("while umount /sys/fs/bpf 2>/dev/null; do :; done; true");
    assert_eq!(bpf_mounts(&in_ns("cat /proc/self/mountinfo")), 0);

    let mut d = TestDaemon::start_default_bpffs(&th, &ns.path(), &["--dataplane", "ebpf"]).unwrap();
    assert_eq!(bpf_mounts(&in_ns("cat /proc/self/mountinfo")), 1, "netd mounted bpffs: {}", d.log());
    let pin_dir = d.bpffs.display().to_string();
    let pins = in_ns(&format!("find {pin_dir} -type f | wc -l"));
    assert!(pins.parse::<u32>().unwrap_or(0) > 0, "nothing pinned under {pin_dir}: {}", d.log());
    assert_eq!(bpf_mounts(&ours()), before, "the test's own /sys/fs/bpf untouched");
    d.down().unwrap();
    assert_eq!(in_ns(&format!("ls -A {pin_dir} 2>/dev/null | wc -l")), "0", "pins left after down");
    assert_eq!(bpf_mounts(&ours()), before);
}
