//! The per-sandbox supervisor (`netd shim CONFIG`), so sandboxes outlive the daemon.
//!
//! The daemon spawns `netd shim`, which (still single-threaded) joins the sandbox's network
//! namespace, creates its own mount (and UTS) namespace, makes `/` a recursive slave so nothing
//! leaks back to the host, bind-mounts the sandbox's `/etc/hosts`, `/etc/resolv.conf` and
//! `/etc/hostname`, sets the hostname, and forks. The child becomes a session leader, starts the
//! command with its output going to the log file, reports `ok SHIM_PID PID` (or the exec error)
//! through a pipe, waits for the command and writes its exit status atomically to the exit file.
//! The first process relays that one line to the daemon and exits, so the supervisor is nobody's
//! child but init's (or a subreaper's) and survives `kill -9` of the daemon.
use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use nix::{
    mount::{MsFlags, mount},
    sched::{CloneFlags, setns, unshare},
    unistd::{ForkResult, fork, setsid},
};
use serde::{Deserialize, Serialize};

/// Docker's default PATH for containers.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    pub id: String,
    /// Network namespace to join (`None`: stay in the daemon's, i.e. host mode).
    pub netns: Option<PathBuf>,
    /// A new UTS namespace with this hostname/domainname (`None`: share the host's).
    pub uts: Option<(String, String)>,
    /// (source file, target path) bind mounts inside the new mount namespace.
    pub binds: Vec<(PathBuf, PathBuf)>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub log: PathBuf,
    pub exit_file: PathBuf,
    /// Hidden from the command (not from the supervisor, which writes the exit record): the
    /// daemon's socket (covered by /dev/null) and its state directories (an empty read-only
    /// tmpfs), so a sandbox cannot drive the daemon or read other sandboxes' state.
    #[serde(default)]
    pub mask: Vec<PathBuf>,
    /// The sandbox's cgroup v2: the command is moved into it before it runs, so everything it
    /// starts can be ended together (`cgroup.kill`). The supervisor itself stays outside.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
}

/// What the shim records when the command ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i64,
    pub finished_at: String,
}

/// Where the exit record lives for a shim config (read by the daemon).
pub fn read_exit(path: &Path) -> Option<ExitRecord> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// Entry point of `netd shim CONFIG`; never returns.
pub fn main(config: &Path) -> ! {
    match run(config) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            println!("err 125 {e}");
            std::process::exit(1);
        }
    }
}

fn run(config: &Path) -> Result<(), String> {
    let cfg: ShimConfig =
        serde_json::from_slice(&fs::read(config).map_err(|e| format!("reading {}: {e}", config.display()))?)
            .map_err(|e| format!("parsing {}: {e}", config.display()))?;
    if cfg.cmd.is_empty() {
        return Err("no command specified".into());
    }

    if let Some(ns) = &cfg.netns {
        let f = File::open(ns).map_err(|e| format!("opening netns {}: {e}", ns.display()))?;
        setns(f.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| format!("joining netns: {e}"))?;
    }
    let mut flags = CloneFlags::CLONE_NEWNS;
    if cfg.uts.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
        .map_err(|e| format!("making / rslave: {e}"))?;
    for (src, dst) in &cfg.binds {
        if !dst.exists() {
            continue; // e.g. no /etc/hostname on this host: nothing to cover
        }
        mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| format!("bind-mounting {} on {}: {e}", src.display(), dst.display()))?;
    }
    if let Some((host, domain)) = &cfg.uts {
        nix::unistd::sethostname(host).map_err(|e| format!("sethostname: {e}"))?;
        if !domain.is_empty() {
            // SAFETY: valid pointer/length pair.
            let rc = unsafe { libc::setdomainname(domain.as_ptr().cast(), domain.len()) };
            if rc != 0 {
                return Err(format!("setdomainname: {}", std::io::Error::last_os_error()));
            }
        }
    }

    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the shim is single-threaded here (no runtime was started), so fork is sound.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => {
            drop(wr);
            let mut msg = String::new();
            let _ = File::from(rd).read_to_string(&mut msg);
            let line = msg.lines().next().unwrap_or("err 125 supervisor died before starting the command");
            println!("{line}");
            Ok(())
        }
        ForkResult::Child => {
            drop(rd);
            supervise(&cfg, wr)
        }
    }
}

fn supervise(cfg: &ShimConfig, report: OwnedFd) -> ! {
    let _ = setsid();
    // Detach from the daemon's pipes, or the daemon would wait for our EOF forever.
    if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let mut report = File::from(report);
    let log = match OpenOptions::new().create(true).append(true).open(&cfg.log) {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(report, "err 125 opening log {}: {e}", cfg.log.display());
            std::process::exit(1);
        }
    };
    let mut cmd = Command::new(&cfg.cmd[0]);
    cmd.args(&cfg.cmd[1..]).env_clear();
    let mut has_path = false;
    for kv in &cfg.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        has_path |= k == "PATH";
        cmd.env(k, v);
    }
    if !has_path {
        cmd.env("PATH", DEFAULT_PATH);
    }
    cmd.current_dir(cfg.workdir.as_deref().unwrap_or("/"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map(Stdio::from).unwrap_or(Stdio::null()))
        .stderr(Stdio::from(log));
    // The cgroup's process list, opened before fork (O_CLOEXEC): the child writes "0" (itself)
    // before exec, so no process of the sandbox ever runs outside it.
    let cgroup_procs = match cfg.cgroup.as_ref().map(|p| OpenOptions::new().write(true).open(p.join("cgroup.procs"))) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            let _ = writeln!(report, "err 125 joining the sandbox's cgroup: {e}");
            std::process::exit(1);
        }
    };
    let cgroup_fd = cgroup_procs.as_ref().map(|f| f.as_raw_fd());
    // (path, is a directory) as C strings, made before fork.
    let masks: Vec<(std::ffi::CString, bool)> = cfg
        .mask
        .iter()
        .filter(|p| p.exists())
        .filter_map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok().map(|c| (c, p.is_dir())))
        .collect();
    // SAFETY: only async-signal-safe calls between fork and exec (the supervisor is single
    // threaded): restore default signal dispositions, then hide the masked paths in a mount
    // namespace of the command's own.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = cgroup_fd
                && libc::write(fd, c"0".as_ptr().cast(), 1) != 1
            {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            if !masks.is_empty() {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for (p, dir) in &masks {
                    let rc = if *dir {
                        libc::mount(
                            c"tmpfs".as_ptr(),
                            p.as_ptr(),
                            c"tmpfs".as_ptr(),
                            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                            c"size=4k,mode=0".as_ptr().cast(),
                        )
                    } else {
                        libc::mount(
                            c"/dev/null".as_ptr(),
                            p.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND,
                            std::ptr::null(),
                        )
                    };
                    if rc != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let (code, what) = match e.kind() {
                std::io::ErrorKind::NotFound => (127, "executable file not found in $PATH"),
                std::io::ErrorKind::PermissionDenied => (126, "permission denied"),
                _ => (126, "exec failed"),
            };
            let _ =
                writeln!(report, "err {code} failed to create task for container: exec: \"{}\": {what}", cfg.cmd[0]);
            let _ = crate::model::write_json_atomic(
                &cfg.exit_file,
                &ExitRecord { exit_code: code, finished_at: crate::model::rfc3339_now().0 },
            );
            std::process::exit(1);
        }
    };
    let _ = writeln!(report, "ok {} {}", std::process::id(), child.id());
    drop(report);
    let code = match child.wait() {
        Ok(st) => st.code().map(i64::from).unwrap_or_else(|| 128 + i64::from(st.signal().unwrap_or(0))),
        Err(_) => 255,
    };
    let _ = crate::model::write_json_atomic(
        &cfg.exit_file,
        &ExitRecord { exit_code: code, finished_at: crate::model::rfc3339_now().0 },
    );
    std::process::exit(0);
}

/// Spawn a shim for `config` and wait for its one-line report: `(shim_pid, pid)` or the error
/// (with Docker's exit code: 125 daemon-side, 126 not executable, 127 not found).
pub fn spawn(netd_exe: &Path, config: &Path) -> Result<(i32, i32), (i64, String)> {
    let out = Command::new(netd_exe)
        .arg("shim")
        .arg(config)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| (125, format!("starting the supervisor: {e}")))?;
    let line = String::from_utf8_lossy(&out.stdout);
    let line = line.lines().next().unwrap_or("").trim();
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("ok"), Some(shim), Some(pid)) => match (shim.parse(), pid.parse()) {
            (Ok(s), Ok(p)) => Ok((s, p)),
            _ => Err((125, format!("bad supervisor report {line:?}"))),
        },
        (Some("err"), Some(code), Some(msg)) => Err((code.parse().unwrap_or(125), msg.to_string())),
        _ => Err((125, format!("supervisor failed: {line:?}"))),
    }
}

/// Whether `pid` is still a live `netd shim` for `config` (guards against pid reuse).
pub fn is_alive(pid: i32, config: &Path) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie (state Z) has finished.
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next().unwrap_or('?'));
    if state == Some('Z') {
        return false;
    }
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.len() >= 3 && args[1] == b"shim" && args[2] == config.as_os_str().as_encoded_bytes()
}

/// Signal a sandbox's main process `pid`, the child of supervisor `shim_pid`, through a pidfd:
/// the pidfd pins one process, which is signalled only if it is still the supervisor's child, so
/// a PID reused by another process after the command exited is never signalled (ESRCH instead).
pub fn signal_command(pid: i32, shim_pid: i32, sig: nix::sys::signal::Signal) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    if pid <= 0 {
        return Err(nix::errno::Errno::ESRCH);
    }
    let fd = pidfd_open(pid).map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::ESRCH)))?;
    if shim_pid > 0 && parent_of(pid) != Some(shim_pid) {
        return Err(nix::errno::Errno::ESRCH);
    }
    // SAFETY: plain syscall on a pidfd we own; no siginfo.
    let rc = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), sig as libc::c_int, std::ptr::null::<u8>(), 0)
    };
    if rc < 0 { Err(nix::errno::Errno::last()) } else { Ok(()) }
}

/// The parent PID of `pid` (`/proc/PID/stat`, after the command name).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split_whitespace().nth(1)?.parse().ok()
}

/// A pidfd for `pid` (readable when it exits), usable for processes that are not our children.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is owned by us.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: a fresh fd from the kernel.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

#[cfg(test)]
mod tests {
    use nix::{errno::Errno, sys::signal::Signal};

    /// Only the supervisor's child is signalled: the same PID under another parent (what a
    /// reused PID looks like) gets ESRCH and lives on.
    #[test]
    fn signal_command_checks_the_parent() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let me = std::process::id() as i32;
        assert_eq!(super::signal_command(pid, me + 1, Signal::SIGKILL), Err(Errno::ESRCH));
        assert!(child.try_wait().unwrap().is_none(), "signalled under the wrong parent");
        assert_eq!(super::signal_command(pid, me, Signal::SIGKILL), Ok(()));
        let st = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
        assert_eq!(super::signal_command(0, me, Signal::SIGKILL), Err(Errno::ESRCH));
    }

    /// The race `stop` and `kill` run into: they read the command's PID under the state lock
    /// and signal it later; meanwhile the command may exit and its PID go to another process.
    /// Here the PID really is reused (`clone3` with `set_tid` gives a new process exactly the
    /// freed PID, under another parent), and neither SIGTERM nor SIGKILL reaches it.
    #[test]
    fn a_reused_pid_is_never_signalled() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: clone3 with set_tid needs root");
            return;
        }
        /// `struct clone_args` up to `set_tid_size` (CLONE_ARGS_SIZE_VER1).
        #[repr(C)]
        #[derive(Default)]
        struct CloneArgs {
            flags: u64,
            pidfd: u64,
            child_tid: u64,
            parent_tid: u64,
            exit_signal: u64,
            stack: u64,
            stack_size: u64,
            tls: u64,
            set_tid: u64,
            set_tid_size: u64,
        }
        let me = std::process::id() as i32;
        for _ in 0..5 {
            // The sandbox's command, our child: we play its supervisor.
            let mut cmd = std::process::Command::new("sleep").arg("30").spawn().unwrap();
            let pid = cmd.id() as i32;
            cmd.kill().unwrap();
            cmd.wait().unwrap(); // reaped: `pid` is free
            // Another process takes `pid`, under another parent (a forked middleman).
            let (r, w) = nix::unistd::pipe().unwrap();
            let tid: libc::pid_t = pid;
            let args = CloneArgs {
                exit_signal: libc::SIGCHLD as u64,
                set_tid: &tid as *const libc::pid_t as u64,
                set_tid_size: 1,
                ..Default::default()
            };
            // SAFETY: the child only makes raw syscalls (no allocation, no locks) until it is
            // killed: clone3, write, pause.
            let middle = match unsafe { nix::unistd::fork() }.unwrap() {
                nix::unistd::ForkResult::Child => unsafe {
                    let rc = libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, size_of::<CloneArgs>());
                    if rc == 0 {
                        loop {
                            libc::pause();
                        }
                    }
                    let v: i64 = if rc < 0 { -(*libc::__errno_location() as i64) } else { rc };
                    libc::write(std::os::fd::AsRawFd::as_raw_fd(&w), &v as *const i64 as *const libc::c_void, 8);
                    loop {
                        libc::pause();
                    }
                },
                nix::unistd::ForkResult::Parent { child } => child,
            };
            drop(w);
            let mut buf = [0u8; 8];
            let n = nix::unistd::read(&r, &mut buf).unwrap();
            assert_eq!(n, 8);
            let got = i64::from_ne_bytes(buf);
            let cleanup = |pid: Option<i32>| {
                if let Some(p) = pid {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
                }
                let _ = nix::sys::signal::kill(middle, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(middle, None);
            };
            if got == -(libc::EEXIST as i64) {
                cleanup(None); // someone else took the PID first: try again
                continue;
            }
            if got < 0 {
                cleanup(None);
                eprintln!("skipped: clone3 set_tid unsupported here (errno {})", -got);
                return;
            }
            assert_eq!(got, pid as i64, "the new process has the freed PID");
            assert_eq!(super::parent_of(pid), Some(middle.as_raw()), "under another parent");
            let r1 = super::signal_command(pid, me, Signal::SIGTERM);
            let r2 = super::signal_command(pid, me, Signal::SIGKILL);
            std::thread::sleep(std::time::Duration::from_millis(100));
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
                .unwrap_or(false);
            cleanup(Some(pid));
            assert_eq!((r1, r2), (Err(Errno::ESRCH), Err(Errno::ESRCH)), "the reused PID was signalled");
            assert!(alive, "the process that reused the PID was killed");
            return;
        }
        panic!("the PID was taken by another process five times in a row");
    }
}
