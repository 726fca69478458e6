//! Debian's podman (4.3, CNI backend) inside a test: its own mount namespace (a holder process
//! made with `unshare -m --propagation slave` inside the test's host network namespace, with a
//! tmpfs over /run/netns, /var/lib (libcni's cache) and /run/crun, and a cgroup2 mount over /sys/fs/cgroup so crun sees a unified
//! hierarchy), a private containers.conf (`network_backend = "cni"`, netd-cni's directory first
//! in `cni_plugin_dirs`), a private CNI config dir, storage and run roots, and an image imported
//! offline from a busybox-static rootfs. Nothing of the machine's own podman is read or changed.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    TestDaemon, TestHost,
    daemon::{Cli, bin_dir, umount_below},
};

pub fn available() -> bool {
    Path::new("/usr/bin/podman").exists() && Path::new("/usr/bin/crun").exists() && Path::new("/bin/busybox").exists()
}

pub struct Podman {
    pub root: PathBuf,
    holder: Child,
}

impl Podman {
    /// Podman for `th`, with a conflist `name` → netd network `network` (created from `subnet`).
    pub fn start(th: &TestHost, d: &TestDaemon, name: &str, network: &str, subnet: &str) -> Result<Self> {
        let root = PathBuf::from(format!("/run/netd-test/{}", crate::unique("pm")));
        for sub in ["cni", "tmp", "root", "runroot", "rootfs/bin", "rootfs/www"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let r = root.display().to_string();
        std::fs::copy("/bin/busybox", root.join("rootfs/bin/busybox"))?;
        for a in ["sh", "httpd", "wget", "nc", "ip", "sleep", "cat", "nslookup"] {
            std::os::unix::fs::symlink("busybox", root.join("rootfs/bin").join(a))?;
        }
        std::fs::write(root.join("rootfs/www/index.html"), "ok\n")?;
        let tar =
            Command::new("tar").args(["-C", &format!("{r}/rootfs"), "-cf", &format!("{r}/bb.tar"), "."]).status()?;
        if !tar.success() {
            bail!("tar of the rootfs failed");
        }
        std::fs::write(
            root.join("containers.conf"),
            format!(
                "[containers]\ncgroups = \"disabled\"\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"]\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\nnetwork_config_dir = \"{r}/cni\"\n\
                 [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{r}/tmp/events.log\"\n\
                 tmp_dir = \"{r}/tmp\"\nstatic_dir = \"{r}/root/libpod\"\nvolume_path = \"{r}/root/volumes\"\n",
                bin_dir().display()
            ),
        )?;
        std::fs::write(
            root.join("cni").join(format!("{name}.conflist")),
            serde_json::to_vec(&serde_json::json!({
                "cniVersion": "1.0.0", "name": name,
                "plugins": [{"type": "netd-cni", "network": network, "subnet": subnet,
                             "socket": format!("unix://{}", d.socket.display()),
                             "capabilities": {"portMappings": true, "aliases": true}}]}))?,
        )?;
        let ready = root.join("ready");
        // crun keeps its state in /run/crun (a tmpfs of our own over it, inside the namespace).
        // The empty mount point is created here and never removed, as Docker's FIXED_PATHS: an
        // rmdir of it in the root mount namespace succeeds while another test's namespace has its
        // tmpfs there, and the kernel then detaches that tmpfs (a mount point removed in another
        // namespace is unmounted), so that test's crun loses its state mid-run (`crun kill`:
        // "error opening file /run/crun/ID/status").
        if !Path::new("/run/crun").exists() {
            std::fs::create_dir_all("/run/crun").context("creating the mount point /run/crun")?;
        }
        let holder = Command::new("nsenter")
            .arg(format!("--net={}", th.host.path()))
            .args(["--", "unshare", "-m", "--propagation", "slave", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs tmpfs /run/netns && mount -t tmpfs tmpfs /var/lib && mount -t tmpfs tmpfs /run/crun && \
                 mount -t cgroup2 none /sys/fs/cgroup && touch {} && exec sleep 100000",
                ready.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the mount namespace holder")?;
        let p = Self { root, holder };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            if Instant::now() > deadline {
                bail!("podman's mount namespace did not come up");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        p.ok(&["import", "--change", "CMD=/bin/sh", &format!("{r}/bb.tar"), "localhost/bb:1"])?;
        Ok(p)
    }

    /// `podman ARGS` inside the private mount namespace and the test's host netns (killed after
    /// 120 s).
    pub fn cmd(&self, args: &[&str]) -> Cli {
        self.cmd_within(120, args)
    }

    /// `podman ARGS`, killed after `secs` seconds (the bench's 1,000-port container takes
    /// minutes with the `portmap` plugin).
    pub fn cmd_within(&self, secs: u32, args: &[&str]) -> Cli {
        let r = self.root.display().to_string();
        let mut c = Command::new("timeout");
        c.args([&secs.to_string(), "nsenter", "-t", &self.holder.id().to_string(), "-m", "-n", "--", "podman"])
            .args(["--root", &format!("{r}/root"), "--runroot", &format!("{r}/runroot")])
            .args(args)
            .env("CONTAINERS_CONF", format!("{r}/containers.conf"))
            .stdin(Stdio::null());
        let o = c.output().expect("running podman");
        Cli {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Another offline image `tag`: `podman import` of [`crate::docker::image_tar`] (busybox
    /// applets plus `bins` with their libraries), the tarball Docker imports too.
    pub fn import(&self, tag: &str, bins: &[(PathBuf, &str)]) -> Result<()> {
        let tar = crate::docker::image_tar(&self.root.join("rootfs-extra"), bins)?;
        let r = self.ok(&["import", "--change", "CMD=/bin/sh", &tar.display().to_string(), tag]);
        let _ = std::fs::remove_file(&tar);
        r.map(|_| ())
    }

    pub fn ok(&self, args: &[&str]) -> Result<String> {
        self.ok_within(120, args)
    }

    pub fn ok_within(&self, secs: u32, args: &[&str]) -> Result<String> {
        let c = self.cmd_within(secs, args);
        if c.code != 0 {
            bail!("podman {args:?}: exit {}: {}{}", c.code, c.stdout, c.stderr);
        }
        Ok(c.stdout)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-af", "-t", "0"]);
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        // conmon and container processes of this root, if any survived.
        crate::daemon::kill_shims(&self.root);
        umount_below(&self.root);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
