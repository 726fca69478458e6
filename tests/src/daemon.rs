//! `TestDaemon`: `netd up` running inside a `TestHost`'s host namespace with its own exec-root,
//! data-root, bpffs directory and socket; stopped (and everything removed) on drop.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::netns::TestHost;

/// The workspace's target directory holding `netd` and `netd-probe` (next to the test binary).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("deps dir");
    if dir.ends_with("deps") { dir.parent().expect("target dir").to_path_buf() } else { dir.to_path_buf() }
}

pub fn netd_bin() -> PathBuf {
    bin_dir().join("netd")
}

/// Whether this netd serves Docker's plugin (`netd up --docker-plugin PATH|none`, issue 13).
pub fn netd_has_docker_plugin() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        Command::new(netd_bin())
            .args(["up", "--help"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--docker-plugin"))
    })
}

pub fn probe_bin() -> PathBuf {
    bin_dir().join("netd-probe")
}

/// Result of one CLI call.
#[derive(Debug)]
pub struct Cli {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    /// The result of a finished command.
    pub fn from_output(o: Output) -> Self {
        Self::from(o)
    }
    pub fn ok(self) -> Result<String> {
        if self.code != 0 {
            bail!("exit {}: {}{}", self.code, self.stdout, self.stderr);
        }
        Ok(self.stdout)
    }
}

pub struct TestDaemon {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    pub netns_path: String,
    pub args: Vec<String>,
    /// Extra environment of the next `netd up` (e.g. the `NETD_CRASH_AT` test hook).
    pub env: Vec<(String, String)>,
    /// Mount namespace (`/proc/PID/ns/mnt`) the daemon runs in, when not the test's own (a Docker
    /// test runs netd and dockerd in one private mount namespace, see `docker::MountNs`).
    pub mount_ns: Option<String>,
    /// `bpffs` is this test's own directory, passed as `--bpffs` and removed on drop. False for
    /// a daemon on netd's default pin directory (only inside a private mount namespace).
    own_bpffs: bool,
    child: Option<Child>,
}

impl TestDaemon {
    /// Start `netd up ARGS` in the host namespace of `th` and wait (bounded) until it serves.
    pub fn start(th: &TestHost, extra: &[&str]) -> Result<Self> {
        Self::start_in(th, None, extra)
    }

    /// As [`TestDaemon::start`], with extra environment for `netd up` (e.g. a `PATH`).
    pub fn start_env(th: &TestHost, env: &[(&str, &str)], extra: &[&str]) -> Result<Self> {
        Self::start_with(th, None, env, extra)
    }

    /// As [`TestDaemon::start`], inside the mount namespace `mount_ns` (`/proc/PID/ns/mnt`).
    pub fn start_in(th: &TestHost, mount_ns: Option<&str>, extra: &[&str]) -> Result<Self> {
        Self::start_with(th, mount_ns, &[], extra)
    }

    /// As [`TestDaemon::start_in`], without `--bpffs`: netd's default pin directory
    /// (`/sys/fs/bpf/netd`), which only a private mount namespace may have (`mount_ns`, required).
    pub fn start_default_bpffs(th: &TestHost, mount_ns: &str, extra: &[&str]) -> Result<Self> {
        Self::build(th, Some(mount_ns), &[], extra, false)
    }

    fn start_with(th: &TestHost, mount_ns: Option<&str>, env: &[(&str, &str)], extra: &[&str]) -> Result<Self> {
        Self::build(th, mount_ns, env, extra, true)
    }

    fn build(
        th: &TestHost,
        mount_ns: Option<&str>,
        env: &[(&str, &str)],
        extra: &[&str],
        own_bpffs: bool,
    ) -> Result<Self> {
        let tag = crate::unique("nd");
        let root = PathBuf::from(format!("/run/netd-test/{tag}"));
        // A pin directory of its own under the test root: the daemon mounts a private bpffs there
        // (the machine's /sys/fs/bpf is neither needed nor touched).
        let bpffs = if own_bpffs { root.join("bpf") } else { PathBuf::from(netd::cli::args::DEFAULT_BPFFS) };
        std::fs::create_dir_all(&root)?;
        let mut d = Self {
            socket: root.join("netd.sock"),
            root,
            bpffs,
            netns_path: th.host.path(),
            args: extra.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            mount_ns: mount_ns.map(str::to_string),
            own_bpffs,
            child: None,
        };
        d.spawn()?;
        Ok(d)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.root.join("daemon.log"))?;
        let mut c = Command::new("nsenter");
        if let Some(m) = &self.mount_ns {
            c.arg(format!("--mount={m}"));
        }
        c.arg(format!("--net={}", self.netns_path))
            .arg("--")
            .arg(netd_bin())
            .arg("up")
            .arg("--exec-root")
            .arg(self.root.join("run"))
            .arg("--data-root")
            .arg(self.root.join("lib"))
            .args(if self.own_bpffs { vec![std::ffi::OsStr::new("--bpffs"), self.bpffs.as_os_str()] } else { vec![] })
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            // Sandbox cgroups of this daemon only (tests check that none is left).
            .arg("--cgroup-parent")
            .arg(self.cgroup_parent())
            .args(&self.args)
            .args(self.plugin_args())
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = c.spawn().context("spawning netd up")?;
        self.child = Some(child);
        // Loading and verifying the eBPF programs takes ~10 s on an idle 2-core machine and several
        // times that when parallel tests build or verify too: bounded, with room.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(ch) = self.child.as_mut()
                && let Ok(Some(st)) = ch.try_wait()
            {
                bail!("netd up exited with {st}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("netd up did not serve within 60s: {}", self.log())
    }

    /// `--docker-plugin none` unless the test runs netd in a private mount namespace (a Docker
    /// test, whose `/run/docker/plugins` is a tmpfs of its own) or chose a path itself: parallel
    /// tests must not share the machine-wide default socket `/run/docker/plugins/netd.sock`.
    fn plugin_args(&self) -> Vec<&'static str> {
        if self.mount_ns.is_some()
            || self.args.iter().any(|a| a.starts_with("--docker-plugin"))
            || !netd_has_docker_plugin()
        {
            return Vec::new();
        }
        vec!["--docker-plugin", "none"]
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("daemon.log")).unwrap_or_default()
    }

    /// Run `netd ARGS` against this daemon (from the host namespace, like a user on the host).
    pub fn cli(&self, args: &[&str]) -> Cli {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path))
            .arg("--")
            .arg(netd_bin())
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running netd");
        Cli::from(out)
    }

    /// `netd ARGS`, failing the test with the output when it exits non-zero.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.cli(args);
        if r.code != 0 {
            panic!(
                "netd {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
                r.code,
                r.stdout,
                r.stderr,
                tail(&self.log(), 40)
            );
        }
        self.wait_serving(args, &r.stdout);
        r.stdout
    }

    /// `run -d --name NAME EXTRA... -- PROBE serve --tag NAME PORT`: a probe server in a new
    /// sandbox (waited for, see [`Self::ok`]); the sandbox's id.
    pub fn serve(&self, name: &str, extra: &[&str], port: &str) -> String {
        let p = probe_bin().display().to_string();
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", &p, "serve", "--tag", name, port]);
        self.ok(&args).trim().to_string()
    }

    /// After `run -d ... PROBE serve [--tag T] PORT...`: wait (bounded) until the probe says it
    /// listens on every port (`netd logs`), as a user waits for a service before using it. `run
    /// -d` returns once the command is started; under load the probe binary takes a while to
    /// bind, and a client connecting before it does is refused.
    fn wait_serving(&self, args: &[&str], stdout: &str) {
        if args.first() != Some(&"run") || !args.iter().any(|a| *a == "-d" || *a == "--detach") {
            return;
        }
        let Some(at) = args.iter().position(|a| *a == "serve") else { return };
        if at == 0 || !args[at - 1].ends_with("probe") {
            return;
        }
        let mut ports = 0;
        let mut it = args[at + 1..].iter();
        while let Some(a) = it.next() {
            if *a == "--tag" {
                it.next();
            } else if a.parse::<u16>().is_ok() {
                ports += 1;
            }
        }
        let name = match args.iter().position(|a| *a == "--name") {
            Some(i) if i + 1 < at => args[i + 1].to_string(),
            _ => stdout.trim().to_string(),
        };
        if ports == 0 || name.is_empty() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let r = self.cli(&["logs", &name]);
            if r.code != 0 || r.stdout.matches("listening on ").count() >= ports {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the daemon with SIGKILL (sandboxes survive) and start it again.
    pub fn kill9_and_restart(&mut self) -> Result<()> {
        self.kill9_and_restart_after(Duration::ZERO)
    }

    /// SIGKILL the daemon, wait `gap` with no daemon running, start it again.
    pub fn kill9_and_restart_after(&mut self, gap: Duration) -> Result<()> {
        self.kill9_only();
        std::thread::sleep(gap);
        self.restart()
    }

    /// SIGKILL the daemon and leave it down.
    pub fn kill9_only(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait (bounded) for the daemon process to exit by itself; true if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.as_mut().map(|c| c.try_wait()) {
                None => return true,
                Some(Ok(Some(_))) => {
                    self.child = None;
                    return true;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        false
    }

    /// Start the daemon again with the same arguments and directories.
    pub fn restart(&mut self) -> Result<()> {
        self.spawn()
    }

    /// `netd down` and wait for the process to exit.
    pub fn down(&mut self) -> Result<()> {
        self.down_with(&["down"])
    }

    /// `netd down ARGS...` (e.g. `--force`) and wait for the process to exit.
    pub fn down_with(&mut self, args: &[&str]) -> Result<()> {
        self.down_output(args).map(drop)
    }

    /// As [`TestDaemon::down_with`]; what `netd down` printed.
    pub fn down_output(&mut self, args: &[&str]) -> Result<Cli> {
        let r = self.cli(args);
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    bail!("netd did not exit after down: {}", self.log());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if r.code != 0 {
            bail!("netd down: {}{}", r.stdout, r.stderr);
        }
        Ok(r)
    }

    /// `netd inspect NAME`, the one object.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", name])).expect("inspect JSON");
        v[0].clone()
    }

    /// Resident memory of the daemon process (kB), while it runs.
    pub fn rss_kb(&self) -> Option<u64> {
        // nsenter execs netd, so the child is the daemon itself.
        let pid = self.child.as_ref()?.id();
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        st.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
    }

    /// The daemon's resident memory between its periodic passes: the lowest of samples taken
    /// over one conntrack-GC period (10 s) and a bit, so a pass's transient working set, which
    /// one sample can land in, is not read as growth. Leaks still show: they stay.
    pub fn settled_rss_kb(&self) -> Option<u64> {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(12);
        let mut min = self.rss_kb()?;
        while std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(200));
            min = min.min(self.rss_kb()?);
        }
        Some(min)
    }

    /// `--cgroup-parent` of this daemon: its sandboxes' cgroups are below it.
    pub fn cgroup_parent(&self) -> String {
        format!("netd-test-{}", self.root.file_name().unwrap_or_default().to_string_lossy())
    }

    pub fn data_root(&self) -> PathBuf {
        self.root.join("lib")
    }
    pub fn exec_root(&self) -> PathBuf {
        self.root.join("run")
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        // --force: a failed test may leave Docker endpoints, which a plain down refuses.
        if self.child.is_some()
            && let Err(e) = self.down_with(&["down", "--force"])
        {
            eprintln!("warning: netd down: {e:#}");
        }
        // Whatever a crashed daemon left: sandbox processes, sandbox cgroups (while its cgroup2
        // mount is still there), namespace mounts, pins.
        kill_shims(&self.root);
        let parent = self.exec_root().join("cgroup2").join(self.cgroup_parent());
        if let Ok(rd) = std::fs::read_dir(&parent) {
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                let _ = std::fs::write(e.path().join("cgroup.kill"), "1");
                let _ = std::fs::remove_dir(e.path());
            }
            let _ = std::fs::remove_dir(&parent);
        }
        umount_below(&self.root);
        if self.own_bpffs {
            let _ = std::fs::remove_dir_all(&self.bpffs);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Kill `netd shim` processes (and their children) whose config lives under `root`.
pub fn kill_shims(root: &Path) {
    for (pid, _) in processes_under(root) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Processes whose command line names a path under `root`, with their arguments.
pub fn processes_under(root: &Path) -> Vec<(i32, Vec<Vec<u8>>)> {
    // With the trailing slash: ".../nd123x1" must not match ".../nd123x10/..." of another test.
    let mut needle = root.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            cmd.windows(needle.len())
                .any(|w| w == needle.as_slice())
                .then(|| (pid, cmd.split(|b| *b == 0).map(<[u8]>::to_vec).collect()))
        })
        .collect()
}

/// Unmount every mount point below `root` (deepest first).
pub fn umount_below(root: &Path) {
    let Ok(m) = std::fs::read_to_string("/proc/self/mounts") else { return };
    let mut points: Vec<&str> =
        m.lines().filter_map(|l| l.split_whitespace().nth(1)).filter(|p| Path::new(p).starts_with(root)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}
