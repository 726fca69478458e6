//! Network namespace guards.
use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsFd,
    process::{Command, Output},
};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

/// Run `ip ARGS...` and fail with its stderr when it fails.
pub fn ip(args: &[&str]) -> Result<Output> {
    let out = Command::new("ip").args(args).output().context("running ip")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// A named network namespace (`/run/netns/NAME`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Result<Self> {
        ip(&["netns", "add", name])?;
        let ns = Self { name: name.to_string() };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `nsenter --net=... CMD`: joins only the network namespace (unlike `ip netns exec`, which
    /// also remounts /sys and so hides bpffs and cgroup mounts).
    pub fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path())).arg("--").args(argv);
        c
    }

    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        self.cmd(argv).output().with_context(|| format!("running {argv:?} in {}", self.name))
    }

    pub fn exec_ok(&self, argv: &[&str]) -> Result<String> {
        let out = self.exec(argv)?;
        if !out.status.success() {
            bail!(
                "{argv:?} in {} failed: {}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run a closure on a fresh OS thread that has joined this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        in_netns(&self.path(), f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes left inside would keep the namespace alive: kill them first.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: removing netns {}: {e:#}", self.name);
        }
    }
}

/// Run `f` on a dedicated OS thread that has `setns`'d into the namespace at `path`.
pub fn in_netns<T: Send + 'static>(path: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let owned = path.to_string();
    std::thread::spawn(move || -> Result<T> {
        let fd = File::open(&owned).with_context(|| format!("open {owned}"))?;
        setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {owned}"))?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {path} panicked"))?
}

/// The standard topology: a "host" namespace (where netd runs) and an "outside" namespace (a
/// client on the LAN), joined by a veth: host `up0` 198.51.100.1/24 and 2001:db8:100::1/64,
/// outside `out0` 198.51.100.2/24 and 2001:db8:100::2/64 (documentation prefixes; the v6
/// addresses without DAD, so they work at once), default routes of both families via the
/// outside.
pub struct TestHost {
    pub host: Netns,
    pub outside: Netns,
    pub uplink: &'static str,
    pub host_ip: Ipv4Addr,
    pub outside_ip: Ipv4Addr,
    pub host_ip6: Ipv6Addr,
    pub outside_ip6: Ipv6Addr,
}

impl TestHost {
    pub fn new(tag: &str) -> Result<Self> {
        let base = crate::unique(tag);
        let host = Netns::new(&format!("{base}h"))?;
        let outside = Netns::new(&format!("{base}o"))?;
        let th = Self {
            host,
            outside,
            uplink: "up0",
            host_ip: Ipv4Addr::new(198, 51, 100, 1),
            outside_ip: Ipv4Addr::new(198, 51, 100, 2),
            host_ip6: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1),
            outside_ip6: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2),
        };
        ip(&[
            "-n",
            &th.host.name,
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "out0",
            "netns",
            &th.outside.name,
        ])?;
        ip(&["-n", &th.host.name, "addr", "add", "198.51.100.1/24", "dev", "up0"])?;
        ip(&["-n", &th.host.name, "link", "set", "up0", "up"])?;
        ip(&["-n", &th.outside.name, "addr", "add", "198.51.100.2/24", "dev", "out0"])?;
        ip(&["-n", &th.outside.name, "link", "set", "out0", "up"])?;
        // The host's default route points at the outside namespace, so the uplink is detected
        // the way netd detects it on a real machine.
        ip(&["-n", &th.host.name, "route", "add", "default", "via", "198.51.100.2"])?;
        ip(&["-n", &th.host.name, "-6", "addr", "add", "2001:db8:100::1/64", "dev", "up0", "nodad"])?;
        ip(&["-n", &th.outside.name, "-6", "addr", "add", "2001:db8:100::2/64", "dev", "out0", "nodad"])?;
        ip(&["-n", &th.host.name, "-6", "route", "add", "default", "via", "2001:db8:100::2"])?;
        Ok(th)
    }

    /// Another namespace joined to the host by a veth (`<hostif>` in the host, `eth0` inside),
    /// addressed `addr/24` with `gw` as default route; used before netd builds sandboxes itself.
    pub fn add_peer(&self, tag: &str, hostif: &str, host_cidr: &str, addr_cidr: &str, gw: &str) -> Result<Netns> {
        let ns = Netns::new(&format!("{}{tag}", self.host.name))?;
        ip(&["-n", &self.host.name, "link", "add", hostif, "type", "veth", "peer", "name", "eth0", "netns", &ns.name])?;
        ip(&["-n", &self.host.name, "addr", "add", host_cidr, "dev", hostif])?;
        ip(&["-n", &self.host.name, "link", "set", hostif, "up"])?;
        ip(&["-n", &ns.name, "addr", "add", addr_cidr, "dev", "eth0"])?;
        ip(&["-n", &ns.name, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns.name, "route", "add", "default", "via", gw])?;
        Ok(ns)
    }
}
