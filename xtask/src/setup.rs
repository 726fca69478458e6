//! `cargo xtask setup`: make a fresh machine of this kind able to build, test, demo and bench
//! netd. Every step checks first and acts only when something is missing.
use std::{fs, path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail};

use crate::run as sh;

/// Debian packages: LLVM 22 for bpf-linker, and the tools the tests and bench use.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "iptables",
    "nftables",
    "iperf3",
    "conntrack",
    "bpftool",
    "tcpdump",
    "iputils-ping",
    "util-linux",
    "procps",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian's Docker (20.10; pulls containerd, runc, tini) for the real-Docker tests and the demo,
/// and busybox-static for their offline image. Installed with service starts blocked: the tests
/// start dockerd themselves, inside their own namespaces, and the machine gets no dockerd, no
/// docker0 and no Docker rule in its root namespace.
const DOCKER_PACKAGES: &[&str] = &["docker.io", "busybox-static"];

/// Debian's podman 4.3 with the CNI network stack (not netavark: `--no-install-recommends` and
/// containernetworking-plugins), conmon and crun, for the netd-cni tests. Installed with service
/// starts blocked like Docker; the tests give podman a private containers.conf
/// (`network_backend = "cni"`), CNI config dir, storage and run roots.
const PODMAN_PACKAGES: &[&str] =
    &["podman", "containernetworking-plugins", "conmon", "crun", "golang-github-containers-common", "busybox-static"];

pub fn run() -> Result<()> {
    let t = Instant::now();
    eprintln!("xtask setup: checking this machine");
    apt()?;
    docker()?;
    podman()?;
    nightly_rust_src()?;
    bpf_linker()?;
    kernel_checks()?;
    eprintln!("xtask setup: ready ({:.1}s)", t.elapsed().as_secs_f64());
    Ok(())
}

fn ok(what: &str) {
    eprintln!("  ok    {what}");
}

fn is_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        ok("Debian packages");
        return Ok(());
    }
    if !nix_is_root() {
        bail!("missing Debian packages {missing:?}; run `cargo xtask setup` as root to install them");
    }
    eprintln!("  setup installing Debian packages: {}", missing.join(" "));
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    sh(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))?;
    Ok(())
}

/// Install [`DOCKER_PACKAGES`] with a `policy-rc.d` that forbids every service start for the
/// duration of the install (restored afterwards), so no dockerd/containerd starts in the
/// machine's root namespace. Skipped, with a note, when apt has no `docker.io` candidate.
fn docker() -> Result<()> {
    let missing: Vec<&str> = DOCKER_PACKAGES.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        ok("Debian's docker.io and busybox-static (for the real-Docker tests)");
        return Ok(());
    }
    if !nix_is_root() {
        bail!("missing Debian packages {missing:?}; run `cargo xtask setup` as root to install them");
    }
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    if !has_candidate("docker.io") {
        eprintln!("  skip  docker.io: apt has no candidate for it (the real-Docker tests and demo part are skipped)");
        return Ok(());
    }
    eprintln!("  setup installing {} with service starts blocked (policy-rc.d exits 101)", missing.join(" "));
    let docker0_before = Path::new("/sys/class/net/docker0").exists();
    {
        let _guard = PolicyRcGuard::install()?;
        sh(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing))?;
    }
    if !docker0_before && Path::new("/sys/class/net/docker0").exists() {
        bail!("installing docker.io created docker0 in the root namespace (a dockerd started despite policy-rc.d)");
    }
    ok("docker.io and busybox-static installed; no service was started");
    Ok(())
}

/// Install [`PODMAN_PACKAGES`] (podman's CNI backend, for the netd-cni tests) with service starts
/// blocked; skipped with a note when apt has no podman candidate.
fn podman() -> Result<()> {
    let missing: Vec<&str> = PODMAN_PACKAGES.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        ok("Debian's podman with the CNI plugins (for the netd-cni tests)");
        return Ok(());
    }
    if !nix_is_root() {
        bail!("missing Debian packages {missing:?}; run `cargo xtask setup` as root to install them");
    }
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    if !has_candidate("podman") {
        eprintln!("  skip  podman: apt has no candidate for it (the podman scenarios are skipped)");
        return Ok(());
    }
    eprintln!("  setup installing {} with service starts blocked (policy-rc.d exits 101)", missing.join(" "));
    {
        let _guard = PolicyRcGuard::install()?;
        sh(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing))?;
    }
    ok("podman and the CNI plugins installed; no service was started");
    Ok(())
}

/// `apt-cache policy PKG` names a candidate version.
fn has_candidate(pkg: &str) -> bool {
    output(Command::new("apt-cache").args(["policy", pkg]))
        .map(|o| {
            o.lines().any(|l| {
                let l = l.trim();
                l.starts_with("Candidate:") && !l.contains("(none)")
            })
        })
        .unwrap_or(false)
}

const POLICY_RC: &str = "/usr/sbin/policy-rc.d";

/// `/usr/sbin/policy-rc.d` exiting 101 ("action forbidden") while it lives; on drop, whatever was
/// there before is put back (content and mode), or the file is removed if there was none.
struct PolicyRcGuard {
    previous: Option<(Vec<u8>, fs::Permissions)>,
}

impl PolicyRcGuard {
    fn install() -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let previous = match fs::read(POLICY_RC) {
            Ok(b) => Some((b, fs::metadata(POLICY_RC)?.permissions())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).context(POLICY_RC),
        };
        let tmp = format!("{POLICY_RC}.netd-setup");
        fs::write(
            &tmp,
            "#!/bin/sh\n# written by netd's `cargo xtask setup` during an install: no service starts\nexit 101\n",
        )
        .with_context(|| format!("writing {tmp}"))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, POLICY_RC).with_context(|| format!("installing {POLICY_RC}"))?;
        Ok(Self { previous })
    }
}

impl Drop for PolicyRcGuard {
    fn drop(&mut self) {
        let r = match &self.previous {
            Some((bytes, perm)) => {
                fs::write(POLICY_RC, bytes).and_then(|_| fs::set_permissions(POLICY_RC, perm.clone()))
            }
            None => fs::remove_file(POLICY_RC),
        };
        if let Err(e) = r {
            eprintln!("  WARNING restoring {POLICY_RC}: {e}");
        }
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn output(cmd: &mut Command) -> Option<String> {
    cmd.output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn nightly_rust_src() -> Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("  setup installing the nightly toolchain (eBPF builds need -Z build-std)");
        sh(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let comps = output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
        .unwrap_or_default();
    if comps.lines().any(|l| l.starts_with("rust-src")) {
        ok("nightly toolchain with rust-src");
    } else {
        eprintln!("  setup adding rust-src to nightly");
        sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let have = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        ok(&format!("bpf-linker {BPF_LINKER_VERSION}"));
        return Ok(());
    }
    eprintln!("  setup building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes, once)");
    sh(Command::new("cargo").env("LLVM_PREFIX", "/usr/lib/llvm-22").args([
        "install",
        "--locked",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        "llvm-22",
    ]))?;
    Ok(())
}

fn kernel_checks() -> Result<()> {
    let mut missing = Vec::new();
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        ok("kernel BTF (/sys/kernel/btf/vmlinux)");
    } else {
        missing.push("kernel BTF: /sys/kernel/btf/vmlinux is absent (CONFIG_DEBUG_INFO_BTF=y needed)");
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (6, 6) {
        ok(&format!("kernel {} has TCX links (>= 6.6)", release.trim()));
    } else {
        missing.push("TCX: kernel older than 6.6 (netd attaches TC programs with tcx links)");
    }
    let fss = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if fss.lines().any(|l| l.trim_end().ends_with("cgroup2")) {
        ok("cgroup v2 available (netd mounts it where needed)");
    } else {
        missing.push("cgroup v2: not in /proc/filesystems (the sock_addr hooks need it)");
    }
    if fss.lines().any(|l| l.trim_end().ends_with("\tbpf")) {
        ok("bpf filesystem available");
    } else {
        missing.push("bpffs: not in /proc/filesystems");
    }
    if missing.is_empty() {
        return Ok(());
    }
    for m in &missing {
        eprintln!("  MISSING {m}");
    }
    bail!("this kernel lacks {} feature(s) netd needs (see above)", missing.len())
}
