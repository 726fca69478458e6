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
        unix::process::CommandExt,
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
    // The copies of the daemon's namespace mounts (every sandbox's) that came with the new
    // mount namespace, dropped in one lazy unmount of their directory (`netns::own_mount`):
    // each copy held its namespace alive, N sandboxes held N² of them.
    if let Some(d) = std::env::var_os(ENV_NETNS_DIR) {
        crate::netns::detach_copies(Path::new(&d));
    }
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
    // (path, is a directory) as C strings, made before fork.
    let masks: Vec<(std::ffi::CString, bool)> = cfg
        .mask
        .iter()
        .filter(|p| p.exists())
        .filter_map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok().map(|c| (c, p.is_dir())))
        .collect();
    // The command starts directly inside the sandbox's cgroup (clone3 with CLONE_INTO_CGROUP):
    // a process that moves itself by writing `cgroup.procs` waits for an RCU grace period
    // (the cgroup threadgroup lock's write side), 20-30 ms per `netd run`. Kernels without
    // it (before 5.7) take the std spawn below, which writes `cgroup.procs` before exec.
    let spawned = match cfg.cgroup.as_ref() {
        Some(cg) => match fastspawn::Prepared::new(cfg, &log, &masks) {
            Ok(p) => p.spawn(cg),
            Err(e) => Err(fastspawn::SpawnError::Exec(e)),
        },
        None => Err(fastspawn::SpawnError::Unsupported),
    };
    let child_pid: i32 = match spawned {
        Ok(pid) => pid,
        Err(fastspawn::SpawnError::Exec(e)) => exec_failed(cfg, &mut report, &e),
        Err(fastspawn::SpawnError::Cgroup(e)) => {
            let _ = writeln!(report, "err 125 joining the sandbox's cgroup: {e}");
            std::process::exit(1);
        }
        Err(fastspawn::SpawnError::Unsupported) => match std_spawn(cfg, &log, &masks, &mut report) {
            Ok(c) => c.id() as i32,
            Err(e) => exec_failed(cfg, &mut report, &e),
        },
    };
    let _ = writeln!(report, "ok {} {}", std::process::id(), child_pid);
    drop(report);
    let code = fastspawn::wait(child_pid);
    let _ = crate::model::write_json(
        &cfg.exit_file,
        &ExitRecord { exit_code: code, finished_at: crate::model::rfc3339_now().0 },
        crate::model::Durability::No,
    );
    std::process::exit(0);
}

/// The command could not be started: report Docker's code and message, record the exit, end.
fn exec_failed(cfg: &ShimConfig, report: &mut File, e: &std::io::Error) -> ! {
    let (code, what) = match e.kind() {
        std::io::ErrorKind::NotFound => (127, "executable file not found in $PATH"),
        std::io::ErrorKind::PermissionDenied => (126, "permission denied"),
        _ => (126, "exec failed"),
    };
    let _ = writeln!(report, "err {code} failed to create task for container: exec: \"{}\": {what}", cfg.cmd[0]);
    let _ = crate::model::write_json(
        &cfg.exit_file,
        &ExitRecord { exit_code: code, finished_at: crate::model::rfc3339_now().0 },
        crate::model::Durability::No,
    );
    std::process::exit(1);
}

/// The portable spawn (std's `Command`): the child joins the sandbox's cgroup by writing
/// `cgroup.procs` before exec. Used where clone3's CLONE_INTO_CGROUP is not available.
fn std_spawn(
    cfg: &ShimConfig,
    log: &File,
    masks: &[(std::ffi::CString, bool)],
    report: &mut File,
) -> std::io::Result<std::process::Child> {
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
        .stderr(log.try_clone().map(Stdio::from).unwrap_or(Stdio::null()));
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
    let masks = masks.to_vec();
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
            if fastspawn::mask_paths(&masks) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(cgroup_procs);
    child
}

/// Starting the command with clone3(CLONE_INTO_CGROUP) and execve, without std's `Command`
/// (which cannot pass a cgroup). Everything the child needs is prepared before the clone; the
/// child makes only async-signal-safe calls until exec.
mod fastspawn {
    use std::{
        ffi::{CString, c_char},
        fs::File,
        os::fd::{AsRawFd, OwnedFd},
        path::Path,
    };

    pub enum SpawnError {
        /// No CLONE_INTO_CGROUP here (or no cgroup): use the portable spawn.
        Unsupported,
        /// The sandbox's cgroup could not be opened.
        Cgroup(std::io::Error),
        /// The command could not be started (chdir, mount or exec failed in the child).
        Exec(std::io::Error),
    }

    /// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2).
    #[repr(C)]
    #[derive(Default)]
    pub(super) struct CloneArgs {
        pub flags: u64,
        pub pidfd: u64,
        pub child_tid: u64,
        pub parent_tid: u64,
        pub exit_signal: u64,
        pub stack: u64,
        pub stack_size: u64,
        pub tls: u64,
        pub set_tid: u64,
        pub set_tid_size: u64,
        pub cgroup: u64,
    }

    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

    pub struct Prepared {
        /// Where to try the program, in PATH order (one entry when it has a slash).
        candidates: Vec<CString>,
        argv: Vec<CString>,
        envp: Vec<CString>,
        workdir: CString,
        log: i32,
        masks: Vec<(CString, bool)>,
    }

    impl Prepared {
        pub fn new(cfg: &super::ShimConfig, log: &File, masks: &[(CString, bool)]) -> Result<Self, std::io::Error> {
            let bad = |_| std::io::Error::from_raw_os_error(libc::EINVAL);
            let mut envp = Vec::new();
            let mut path = None;
            for kv in &cfg.env {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                if k == "PATH" {
                    path = Some(v.to_string());
                }
                envp.push(CString::new(format!("{k}={v}")).map_err(bad)?);
            }
            if path.is_none() {
                envp.push(CString::new(format!("PATH={}", super::DEFAULT_PATH)).map_err(bad)?);
            }
            let prog = &cfg.cmd[0];
            let candidates = if prog.contains('/') {
                vec![CString::new(prog.as_str()).map_err(bad)?]
            } else {
                let path = path.as_deref().unwrap_or(super::DEFAULT_PATH);
                path.split(':')
                    .map(|d| if d.is_empty() { "." } else { d })
                    .map(|d| CString::new(format!("{d}/{prog}")).map_err(bad))
                    .collect::<Result<_, _>>()?
            };
            Ok(Self {
                candidates,
                argv: cfg.cmd.iter().map(|a| CString::new(a.as_str()).map_err(bad)).collect::<Result<_, _>>()?,
                envp,
                workdir: CString::new(cfg.workdir.as_deref().unwrap_or("/")).map_err(bad)?,
                log: log.as_raw_fd(),
                masks: masks.to_vec(),
            })
        }

        /// Start the command inside cgroup `cg`; its PID.
        pub fn spawn(&self, cg: &Path) -> Result<i32, SpawnError> {
            let dir = match std::fs::File::open(cg) {
                Ok(d) => d,
                Err(e) => return Err(SpawnError::Cgroup(e)),
            };
            let mut argv: Vec<*const c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
            argv.push(std::ptr::null());
            let mut envp: Vec<*const c_char> = self.envp.iter().map(|a| a.as_ptr()).collect();
            envp.push(std::ptr::null());
            // The exec error travels back on a close-on-exec pipe: EOF means exec succeeded.
            let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Exec(e.into()))?;
            let args = CloneArgs {
                flags: CLONE_INTO_CGROUP,
                exit_signal: libc::SIGCHLD as u64,
                cgroup: dir.as_raw_fd() as u64,
                ..Default::default()
            };
            // SAFETY: a fork-like clone3 (no CLONE_VM, no new stack) of a single-threaded
            // process; the child only makes async-signal-safe calls on memory prepared above,
            // then execs or _exits.
            let pid = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, size_of::<CloneArgs>()) };
            if pid == 0 {
                unsafe { self.child(&argv, &envp, wr.as_raw_fd()) }
            }
            drop(wr);
            if pid < 0 {
                let e = std::io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL | libc::EOPNOTSUPP | libc::EBADF) => {
                        Err(SpawnError::Unsupported)
                    }
                    _ => Err(SpawnError::Cgroup(e)),
                };
            }
            let pid = pid as i32;
            let mut buf = [0u8; 4];
            let n = read_full(&rd, &mut buf);
            if n == 4 {
                // The child failed and exits: reap it, report why.
                wait(pid);
                return Err(SpawnError::Exec(std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf))));
            }
            Ok(pid)
        }

        /// In the child: stdio, working directory, signals, masks, then exec along the PATH.
        unsafe fn child(&self, argv: &[*const c_char], envp: &[*const c_char], report: i32) -> ! {
            unsafe {
                let fail = |errno: i32| -> ! {
                    let b = errno.to_ne_bytes();
                    libc::write(report, b.as_ptr().cast(), 4);
                    libc::_exit(127)
                };
                let errno = || *libc::__errno_location();
                // stdin stays /dev/null (the supervisor's); output to the log.
                if libc::dup2(self.log, 1) < 0 || libc::dup2(self.log, 2) < 0 {
                    fail(errno());
                }
                if libc::chdir(self.workdir.as_ptr()) != 0 {
                    fail(errno());
                }
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                if mask_paths(&self.masks) != 0 {
                    fail(errno());
                }
                // execvp's rule: EACCES anywhere wins over a later ENOENT.
                let mut err = libc::ENOENT;
                let mut eacces = false;
                for c in &self.candidates {
                    libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    err = errno();
                    match err {
                        libc::EACCES => eacces = true,
                        libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                        _ => break,
                    }
                }
                if eacces && matches!(err, libc::ENOENT | libc::ENOTDIR) {
                    err = libc::EACCES;
                }
                fail(err)
            }
        }
    }

    /// Hide `masks` in a mount namespace of the caller's own (async-signal-safe): 0 or -1.
    pub fn mask_paths(masks: &[(CString, bool)]) -> i32 {
        if masks.is_empty() {
            return 0;
        }
        // SAFETY: plain syscalls on C strings made before fork.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return -1;
            }
            for (p, dir) in masks {
                let rc = if *dir {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        p.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        c"size=4k,mode=0".as_ptr().cast(),
                    )
                } else {
                    libc::mount(c"/dev/null".as_ptr(), p.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null())
                };
                if rc != 0 {
                    return -1;
                }
            }
        }
        0
    }

    fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
        let mut got = 0;
        while got < buf.len() {
            // SAFETY: reading into our buffer.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf[got..].as_mut_ptr().cast(), buf.len() - got) };
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        got
    }

    /// Wait for child `pid`; its exit code as a shell reports it (128 + signal).
    pub fn wait(pid: i32) -> i64 {
        let mut status = 0;
        loop {
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            if r == pid {
                break;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return 255;
        }
        if libc::WIFEXITED(status) {
            i64::from(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            128 + i64::from(libc::WTERMSIG(status))
        } else {
            255
        }
    }
}

/// The supervisor's environment: the daemon's namespace directory (a mount point of its own,
/// `netns::own_mount`), let go of in the supervisor's mount namespace.
const ENV_NETNS_DIR: &str = "NETD_SHIM_NETNS_DIR";

/// Spawn a shim for `config` and wait for its one-line report: `(shim_pid, pid)` or the error
/// (with Docker's exit code: 125 daemon-side, 126 not executable, 127 not found).
pub fn spawn(netd_exe: &Path, config: &Path, netns_dir: &Path) -> Result<(i32, i32), (i64, String)> {
    // `netd-shim` next to `netd` when it was built (small, quick to start), else `netd shim`.
    let small = netd_exe.with_file_name("netd-shim");
    let exe = if small.is_file() { small.as_path() } else { netd_exe };
    let out = Command::new(exe)
        .arg("shim")
        .arg(config)
        .env(ENV_NETNS_DIR, netns_dir)
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
        use super::fastspawn::CloneArgs;
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
