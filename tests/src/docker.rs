//! Real Docker for the tests: Debian's docker.io (20.10) dockerd and its own containerd, started
//! inside a [`TestHost`]'s host network namespace, next to a `netd up` serving the Docker plugin.
//!
//! Nothing of the machine's own Docker is read or changed:
//! - One private mount namespace ([`MountNs`], `unshare -m --propagation slave` in the host netns)
//!   holds tmpfs mounts over the fixed paths dockerd and containerd write whatever their flags
//!   say (`/run/docker` with `/run/docker/plugins`, `/run/containerd` with the shim sockets,
//!   `/etc/docker` with `key.json`), plus a private tmpfs for data-root, exec-root and containerd's
//!   root and state. netd, containerd and dockerd all run in it (`nsenter --mount --net`), so
//!   dockerd finds netd's socket at the default `/run/docker/plugins/netd.sock`, and the machine's
//!   `/run/docker/plugins` stays untouched. When its last process exits, every mount goes with it.
//! - dockerd gets its own `--config-file`, `--data-root`, `--exec-root`, `--pidfile`,
//!   `-H unix://...`, `--containerd` socket, `--cgroup-parent`, `--dns` (the outside namespace)
//!   and `--bip`/`--default-address-pool` in 203.0.113.0/24; its iptables rules land in the test's
//!   host namespace only. The CLI is Debian's `/usr/bin/docker` (not whatever `docker` is first on
//!   PATH) with a private `DOCKER_CONFIG`.
//! - The image is made offline: `docker import` of a rootfs with busybox-static and `netd-probe`
//!   (with the shared libraries it links).
//!
//! [`TestDocker`] owns all of it and, on drop, removes containers and networks, stops dockerd and
//! containerd, kills any shim left, brings netd down, kills the namespace holder, removes the
//! cgroups and the state directory, then the namespaces.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    TestDaemon, TestHost,
    daemon::{Cli, kill_shims, probe_bin, processes_under, tail},
};

/// Debian's docker CLI (`/usr/local/bin/docker` may be an unrelated one).
pub const DOCKER: &str = "/usr/bin/docker";
pub const DOCKERD: &str = "/usr/sbin/dockerd";
pub const CONTAINERD: &str = "/usr/bin/containerd";
pub const BUSYBOX: &str = "/bin/busybox";
/// The offline test image: busybox applets, `/bin/netd-probe`, `/www/index.html`.
pub const IMAGE: &str = "netd-test/bb:1";
/// Docker's own default bridge (`docker0`) in the test: `--bip`.
pub const DOCKER0_CIDR: &str = "203.0.113.1/26";
/// Docker's default pool for networks created without `--subnet`.
pub const DEFAULT_POOL: &str = "base=203.0.113.128/25,size=28";
/// Fixed paths dockerd/containerd write regardless of their flags, covered by a tmpfs each in the
/// private mount namespace. `/run/docker` and `/run/containerd` are created (empty) as mount points
/// when the machine has no Docker; nothing is ever written into them outside the namespace.
pub const FIXED_PATHS: &[&str] = &["/run/docker", "/run/containerd", "/etc/docker"];

/// Why the real-Docker tests cannot run here (None: they can).
pub fn unavailable() -> Option<String> {
    for b in [DOCKER, DOCKERD, CONTAINERD, BUSYBOX, "/usr/bin/containerd-shim-runc-v2", "/usr/bin/runc"] {
        if !Path::new(b).exists() {
            return Some(format!(
                "{b} is missing: run `cargo xtask setup` (installs Debian's docker.io, busybox-static)"
            ));
        }
    }
    None
}

/// A private mount namespace in a network namespace, held open by a sleeping process.
pub struct MountNs {
    holder: Child,
    pub pid: u32,
    /// A tmpfs mounted (inside the namespace only) on this directory.
    pub private: PathBuf,
    pub netns_path: String,
}

impl MountNs {
    pub fn new(netns_path: &str, private: &Path, ready: &Path) -> Result<Self> {
        for p in FIXED_PATHS {
            if !Path::new(p).exists() {
                std::fs::create_dir_all(p).with_context(|| format!("creating mount point {p}"))?;
            }
        }
        std::fs::create_dir_all(private)?;
        let _ = std::fs::remove_file(ready);
        let mut script = String::from("set -e\n");
        for p in FIXED_PATHS {
            script.push_str(&format!("mount -t tmpfs -o mode=0755 netd-test {p}\n"));
        }
        script.push_str("mkdir -p /run/docker/plugins\n");
        script.push_str(&format!("mount -t tmpfs -o mode=0711 netd-test {}\n", private.display()));
        script.push_str(&format!("echo ready > {}\nexec sleep 2147483647\n", ready.display()));
        let holder = Command::new("nsenter")
            .arg(format!("--net={netns_path}"))
            .args(["--", "unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning the mount namespace holder")?;
        let pid = holder.id();
        let mut ns = Self { holder, pid, private: private.to_path_buf(), netns_path: netns_path.to_string() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            if let Ok(Some(st)) = ns.holder.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = ns.holder.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                bail!("mount namespace holder exited with {st}: {err}");
            }
            if Instant::now() > deadline {
                bail!("mount namespace holder not ready within 10s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // `sh` execs `sleep` in place: the pid is the holder, in the new mount namespace.
        Ok(ns)
    }

    /// `/proc/PID/ns/mnt` of the holder.
    pub fn path(&self) -> String {
        format!("/proc/{}/ns/mnt", self.pid)
    }

    /// `nsenter --mount=... --net=... -- ARGV`: a command in this mount and network namespace.
    pub fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount={}", self.path())).arg(format!("--net={}", self.netns_path)).arg("--").args(argv);
        c
    }

    /// Run ARGV in the namespace; its stdout, or an error with its output.
    pub fn exec_ok(&self, argv: &[&str]) -> Result<String> {
        let out = self.cmd(argv).stdin(Stdio::null()).output().with_context(|| format!("running {argv:?}"))?;
        if !out.status.success() {
            bail!(
                "{argv:?} in the docker mount namespace: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Debian's dockerd + a containerd of its own, in a [`MountNs`].
struct Dockerd {
    root: PathBuf,
    socket: PathBuf,
    args: Vec<String>,
    cgroup_parent: String,
    dockerd: Option<Child>,
    containerd: Option<Child>,
}

/// dockerd, containerd and netd in one private mount namespace of a [`TestHost`]'s host netns.
/// Fields drop in order: Docker first, then netd (its plugin must outlive Docker's last call),
/// then the mount namespace, then the network namespaces.
pub struct TestDocker {
    docker: Dockerd,
    pub netd: TestDaemon,
    pub mnt: MountNs,
    pub th: TestHost,
    _root: RootDir,
}

impl TestDocker {
    /// A TestHost, a private mount namespace, `netd up NETD_ARGS` (serving the plugin at the
    /// default `/run/docker/plugins/netd.sock`), containerd and dockerd (`DOCKERD_ARGS` added),
    /// and the offline image.
    pub fn start(tag: &str, netd_args: &[&str], dockerd_args: &[&str]) -> Result<Self> {
        if let Some(why) = unavailable() {
            bail!("{why}");
        }
        let name = crate::unique("dk");
        let root = PathBuf::from(format!("/run/netd-test/{name}"));
        std::fs::create_dir_all(&root)?;
        // Declared first, dropped last (also when a step below fails).
        let root_guard = RootDir(root.clone());
        let th = TestHost::new(tag)?;
        // A Docker host's usual filter FORWARD policy (dockerd sets it when it turns ip_forward
        // on itself): nothing of netd may depend on FORWARD accepting.
        th.host.exec_ok(&["iptables", "-P", "FORWARD", "DROP"])?;
        let mnt = MountNs::new(&th.host.path(), &root.join("priv"), &root.join("mnt.ready"))?;
        let netd = TestDaemon::start_in(&th, Some(&mnt.path()), netd_args)?;
        let mut docker = Dockerd {
            socket: root.join("docker.sock"),
            root,
            args: dockerd_args.iter().map(|s| s.to_string()).collect(),
            cgroup_parent: format!("netd-test-{name}"),
            dockerd: None,
            containerd: None,
        };
        let mut td_err = None;
        if let Err(e) = docker.start_containerd(&mnt).and_then(|_| docker.start_dockerd(&mnt)) {
            td_err = Some(e);
        }
        let td = Self { docker, netd, mnt, th, _root: root_guard };
        if let Some(e) = td_err {
            return Err(e);
        }
        td.import_image()?;
        Ok(td)
    }

    pub fn root(&self) -> &Path {
        &self.docker.root
    }

    /// `docker ARGS` (Debian's CLI, this dockerd, a private config dir).
    pub fn cli(&self, args: &[&str]) -> Cli {
        self.docker.cli(args)
    }

    /// `docker ARGS`, panicking with the output and both daemons' logs when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.cli(args);
        if r.code != 0 {
            panic!(
                "docker {args:?} failed ({}):\nstdout: {}\nstderr: {}\n--- dockerd log:\n{}\n--- netd log:\n{}",
                r.code,
                r.stdout,
                r.stderr,
                tail(&self.dockerd_log(), 30),
                tail(&self.netd.log(), 30)
            );
        }
        r.stdout
    }

    /// `docker run -d --init ARGS`: the new container's id.
    pub fn run_d(&self, args: &[&str]) -> String {
        let mut a = vec!["run", "-d", "--init"];
        a.extend_from_slice(args);
        self.ok(&a).trim().to_string()
    }

    /// `docker inspect` of one object, parsed.
    pub fn inspect(&self, what: &[&str]) -> serde_json::Value {
        let mut a = what.to_vec();
        if a.len() == 1 {
            a.insert(0, "inspect");
        }
        let v: serde_json::Value = serde_json::from_str(&self.ok(&a)).expect("inspect JSON");
        v[0].clone()
    }

    /// A container's address on a network (`docker inspect`).
    pub fn ip_of(&self, ctr: &str, network: &str) -> String {
        let v = self.inspect(&[ctr]);
        v["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("{ctr} has no address on {network}: {v}"))
            .to_string()
    }

    /// `docker exec CTR ARGV...` (no panic: the caller checks `code`).
    pub fn exec(&self, ctr: &str, argv: &[&str]) -> Cli {
        let mut a = vec!["exec", ctr];
        a.extend_from_slice(argv);
        self.cli(&a)
    }

    /// `netd-probe tcp ADDR PAYLOAD` from inside a container: the echo line, or None.
    pub fn probe_tcp(&self, ctr: &str, target: &str, payload: &str) -> Option<String> {
        let r = self.exec(ctr, &["netd-probe", "tcp", target, payload]);
        (r.code == 0).then(|| r.stdout.trim().to_string())
    }

    /// `netd-probe udp ADDR PAYLOAD` from inside a container.
    pub fn probe_udp(&self, ctr: &str, target: &str, payload: &str) -> Option<String> {
        let r = self.exec(ctr, &["netd-probe", "udp", target, payload]);
        (r.code == 0).then(|| r.stdout.trim().to_string())
    }

    pub fn dockerd_log(&self) -> String {
        std::fs::read_to_string(self.docker.root.join("dockerd.log")).unwrap_or_default()
    }

    /// A command in the private mount namespace and the host netns (what dockerd sees).
    pub fn in_mnt(&self, argv: &[&str]) -> Result<String> {
        self.mnt.exec_ok(argv)
    }

    /// Stop dockerd (SIGTERM; with `--live-restore` its containers keep running) and start it
    /// again with the same flags, waiting until it serves.
    pub fn restart_dockerd(&mut self) -> Result<()> {
        self.docker.stop_dockerd()?;
        self.docker.start_dockerd(&self.mnt)
    }

    /// Restart dockerd with other extra flags (replacing those given to `start`).
    pub fn restart_dockerd_with(&mut self, dockerd_args: &[&str]) -> Result<()> {
        self.docker.stop_dockerd()?;
        self.docker.args = dockerd_args.iter().map(|s| s.to_string()).collect();
        self.docker.start_dockerd(&self.mnt)
    }

    /// dockerd's extra flags (as given to `start` or `restart_dockerd_with`).
    pub fn dockerd_args(&self) -> Vec<String> {
        self.docker.args.clone()
    }

    /// Stop dockerd only (SIGTERM, bounded wait).
    pub fn stop_dockerd(&mut self) -> Result<()> {
        self.docker.stop_dockerd()
    }

    pub fn start_dockerd(&mut self) -> Result<()> {
        self.docker.start_dockerd(&self.mnt)
    }

    /// Bring back whatever a failed scenario left stopped: netd (it serves the plugin) and
    /// dockerd.
    pub fn ensure_running(&mut self) {
        if self.netd.cli(&["info"]).code != 0 {
            self.netd.kill9_only();
            if let Err(e) = self.netd.restart() {
                eprintln!("warning: restarting netd: {e:#}");
            }
        }
        let running = self.docker.dockerd.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if !running {
            self.docker.dockerd = None;
            if let Err(e) = self.docker.start_dockerd(&self.mnt) {
                eprintln!("warning: restarting dockerd: {e:#}");
            }
        }
    }

    /// Remove every container and every network that is not one of Docker's three: the state
    /// each scenario must leave. Returns what it had to remove.
    pub fn reset(&self) -> Vec<String> {
        let mut removed = Vec::new();
        let ids = self.cli(&["ps", "-aq"]).stdout;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut a = vec!["rm", "-f"];
            a.extend(ids.iter().copied());
            let _ = self.cli(&a);
            removed.extend(ids.iter().map(|i| format!("container {i}")));
        }
        let nets = self.cli(&["network", "ls", "--format", "{{.Name}}"]).stdout;
        for n in nets.split_whitespace().filter(|n| !["bridge", "host", "none"].contains(n)) {
            let _ = self.cli(&["network", "rm", n]);
            removed.push(format!("network {n}"));
        }
        removed
    }

    /// The offline image: busybox-static applets, `netd-probe` with the libraries it links, and a
    /// page for `httpd` (`/www/index.html` = "ok").
    fn import_image(&self) -> Result<()> {
        self.import(IMAGE, &[(probe_bin(), "bin/netd-probe")])
    }

    /// Another offline image `tag`: what [`image_tar`] puts in it (the test image plus `bins`).
    pub fn import(&self, tag: &str, bins: &[(PathBuf, &str)]) -> Result<()> {
        let tar = image_tar(&self.docker.root.join("rootfs"), bins)?;
        let t = tar.display().to_string();
        let r = self.cli(&["import", "-c", "CMD [\"/bin/sh\"]", &t, tag]).ok().context("docker import");
        let _ = std::fs::remove_file(&tar);
        r.map(|_| ())
    }

    /// What this test left anywhere: processes naming its directories, its cgroups, its state
    /// directories. Empty after drop (see [`leftovers_of`]).
    pub fn ids(&self) -> (PathBuf, PathBuf, String) {
        (self.docker.root.clone(), self.netd.root.clone(), self.docker.cgroup_parent.clone())
    }
}

/// Everything of a dropped [`TestDocker`] (its `ids()`) that is still there.
pub fn leftovers_of(ids: &(PathBuf, PathBuf, String)) -> Vec<String> {
    let (droot, nroot, cg) = ids;
    let mut left = Vec::new();
    for root in [droot, nroot] {
        for (pid, cmd) in processes_under(root) {
            let c: Vec<String> = cmd.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            left.push(format!("process {pid}: {}", c.join(" ")));
        }
        if root.exists() {
            left.push(format!("directory {}", root.display()));
        }
    }
    for d in cgroup_dirs(cg) {
        left.push(format!("cgroup {}", d.display()));
    }
    left
}

fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else { return Vec::new() };
    rd.flatten().map(|e| e.path().join(parent)).filter(|p| p.is_dir()).collect()
}

/// A rootfs tarball for an offline image (`DIR.tar`, DIR removed): busybox-static applets, each
/// (binary, path in the image) of `bins` with the shared libraries it links, `/www/index.html` =
/// "ok", `/etc/passwd` and `/etc/group`. Docker and podman import the same tarball.
pub fn image_tar(rootfs: &Path, bins: &[(PathBuf, &str)]) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(rootfs);
    for d in ["bin", "www", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))?;
    let list = Command::new(BUSYBOX).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    for (bin, dest) in bins {
        copy_with_libs(bin, rootfs, dest)?;
    }
    std::fs::write(rootfs.join("www/index.html"), "ok\n")?;
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
    let tar = rootfs.with_extension("tar");
    crate::daemon::Cli::from_output(Command::new("tar").arg("-C").arg(rootfs).arg("-cf").arg(&tar).arg(".").output()?)
        .ok()
        .context("tar of the image rootfs")?;
    let _ = std::fs::remove_dir_all(rootfs);
    Ok(tar)
}

/// Copy an ELF binary to `rootfs/dest` with every shared library `ldd` lists (same paths).
fn copy_with_libs(bin: &Path, rootfs: &Path, dest: &str) -> Result<()> {
    std::fs::copy(bin, rootfs.join(dest)).with_context(|| format!("copying {}", bin.display()))?;
    let out = Command::new("ldd").arg(bin).output().context("ldd")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else { continue };
        let target = rootfs.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("lib dir"))?;
        // Follow symlinks: the library's content under the name the loader asks for.
        std::fs::copy(path, &target).with_context(|| format!("copying {path}"))?;
    }
    Ok(())
}

impl Dockerd {
    fn priv_dir(&self) -> PathBuf {
        self.root.join("priv")
    }

    fn cli(&self, args: &[&str]) -> Cli {
        let out = Command::new(DOCKER)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.root.join("cli"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running docker");
        Cli::from_output(out)
    }

    fn log_file(&self, name: &str) -> Result<(std::fs::File, std::fs::File)> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(self.root.join(name))?;
        Ok((f.try_clone()?, f))
    }

    fn start_containerd(&mut self, mnt: &MountNs) -> Result<()> {
        let p = self.priv_dir();
        let dir = self.root.join("containerd");
        std::fs::create_dir_all(&dir)?;
        let sock = dir.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{p}/containerd-root"
state = "{p}/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{s}"
[ttrpc]
  address = "{s}.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{p}/containerd-opt"
"#,
            p = p.display(),
            s = sock.display()
        );
        let cfg = dir.join("config.toml");
        std::fs::write(&cfg, config)?;
        let (o, e) = self.log_file("containerd.log")?;
        let cfg_s = cfg.display().to_string();
        let child = mnt
            .cmd(&[CONTAINERD, "--config", &cfg_s])
            .stdin(Stdio::null())
            .stdout(o)
            .stderr(e)
            .spawn()
            .context("spawning containerd")?;
        self.containerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Some(Ok(Some(st))) = self.containerd.as_mut().map(|c| c.try_wait()) {
                bail!("containerd exited with {st}: {}", self.log("containerd.log"));
            }
            if Instant::now() > deadline {
                bail!("containerd did not serve within 20s: {}", self.log("containerd.log"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn log(&self, name: &str) -> String {
        tail(&std::fs::read_to_string(self.root.join(name)).unwrap_or_default(), 30)
    }

    fn start_dockerd(&mut self, mnt: &MountNs) -> Result<()> {
        let p = self.priv_dir();
        let cfg = self.root.join("daemon.json");
        if !cfg.exists() {
            std::fs::write(&cfg, "{}\n")?;
        }
        let s = |x: &Path| x.display().to_string();
        let mut argv: Vec<String> = vec![
            DOCKERD.into(),
            "--config-file".into(),
            s(&cfg),
            "--data-root".into(),
            s(&p.join("docker-data")),
            "--exec-root".into(),
            s(&p.join("docker-exec")),
            "--pidfile".into(),
            s(&self.root.join("dockerd.pid")),
            "-H".into(),
            format!("unix://{}", self.socket.display()),
            "--containerd".into(),
            s(&self.root.join("containerd/containerd.sock")),
            "--cgroup-parent".into(),
            self.cgroup_parent.clone(),
            "--bip".into(),
            DOCKER0_CIDR.into(),
            "--default-address-pool".into(),
            DEFAULT_POOL.into(),
            "--dns".into(),
            "198.51.100.2".into(),
        ];
        argv.extend(self.args.iter().cloned());
        let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (o, e) = self.log_file("dockerd.log")?;
        let child = mnt.cmd(&argv_ref).stdin(Stdio::null()).stdout(o).stderr(e).spawn().context("spawning dockerd")?;
        self.dockerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() && self.cli(&["version"]).code == 0 {
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.dockerd.as_mut().map(|c| c.try_wait()) {
                self.dockerd = None;
                bail!("dockerd exited with {st}: {}", self.log("dockerd.log"));
            }
            if Instant::now() > deadline {
                bail!("dockerd did not serve within 60s: {}", self.log("dockerd.log"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop_dockerd(&mut self) -> Result<()> {
        let Some(mut c) = self.dockerd.take() else { return Ok(()) };
        // nsenter execs dockerd: the child is dockerd itself.
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = c.try_wait() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!("dockerd did not stop within 30s of SIGTERM (killed): {}", self.log("dockerd.log"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_containerd(&mut self) {
        if let Some(mut c) = self.containerd.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches!(c.try_wait(), Ok(Some(_))) {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for TestDocker {
    fn drop(&mut self) {
        // Containers and networks first, while dockerd and netd's plugin both answer (with
        // --live-restore, containers would outlive dockerd).
        if self.docker.dockerd.is_some() {
            self.reset();
        }
        if let Err(e) = self.docker.stop_dockerd() {
            eprintln!("warning: {e:#}");
        }
        self.docker.stop_containerd();
        // Shims (and their containers) a crash left: their command lines name our sockets.
        kill_shims(&self.docker.root);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_under(&self.docker.root).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Container processes named no path of ours: they died with their shims, or sit in our
        // cgroups.
        for d in cgroup_dirs(&self.docker.cgroup_parent) {
            kill_cgroup_tree(&d);
        }
        // netd (its TestDaemon), the mount namespace holder and the network namespaces drop
        // after this, in field order; the cgroups and our directory go now.
        remove_cgroups(&self.docker.cgroup_parent);
    }
}

/// SIGKILL every process listed in a cgroup v1/v2 directory tree.
fn kill_cgroup_tree(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            kill_cgroup_tree(&p);
        }
    }
    for f in ["cgroup.procs", "tasks"] {
        if let Ok(s) = std::fs::read_to_string(dir.join(f)) {
            for pid in s.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// rmdir the containers' cgroups (deepest first) under `parent` in every hierarchy.
fn remove_cgroups(parent: &str) {
    fn rm_tree(dir: &Path) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    rm_tree(&e.path());
                }
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: cgroup {} not removed", dir.display());
    }
    for d in cgroup_dirs(parent) {
        rm_tree(&d);
    }
}

/// The state directory, removed after every other part (netd, holder, netns) has dropped.
struct RootDir(PathBuf);
impl Drop for RootDir {
    fn drop(&mut self) {
        crate::daemon::umount_below(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
