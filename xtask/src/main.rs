//! `cargo xtask <task>`: everything a fresh machine needs, in one place.
mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what this machine lacks (Debian packages, nightly rust-src, bpf-linker) and
    /// check the kernel. Idempotent; fast when already done.
    Setup,
    /// Build the eBPF object (the same build as netd/build.rs) and list its programs and maps
    BuildEbpf {
        /// Load every program in a throwaway network namespace and print the verifier's counts
        #[arg(long)]
        verifier_log: bool,
    },
    /// Set up, then run unit, BPF_PROG_TEST_RUN packet and root integration tests
    Test {
        /// Extra arguments passed to the test binaries (e.g. a test name filter)
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, then run the demo inside namespaces it creates and removes
    Demo,
    /// Generate man pages (netd.1, netd-run.1, ...) from the CLI definition into DIR
    Man {
        /// Where the pages go (default: <target dir>/man)
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Measure eBPF vs iptables vs the raw path, and Docker / podman on their own networks vs on
    /// netd; writes DIR/report.md and SVG plots
    Bench {
        /// A smoke run (short figures, fewer sizes): finishes in a few minutes
        #[arg(long)]
        quick: bool,
        /// Skip the Docker and podman rows (the core rows only, e.g. on an idle machine)
        #[arg(long)]
        no_runtimes: bool,
        /// Where the report goes
        #[arg(long, default_value = "bench")]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Setup => setup::run(),
        Task::BuildEbpf { verifier_log } => build_ebpf(verifier_log),
        Task::Test { args } => test(&args),
        Task::Demo => demo(),
        Task::Bench { quick, no_runtimes, out } => bench(quick, no_runtimes, &out),
        Task::Man { out } => man(out),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Run a command, echoing it, failing on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", show(cmd));
    let st = cmd.status().with_context(|| format!("spawning {}", show(cmd)))?;
    if !st.success() {
        bail!("{} failed: {st}", show(cmd));
    }
    Ok(())
}

pub fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Cargo's target directory as cargo itself resolves it (`CARGO_TARGET_DIR`, `build.target-dir`
/// in a config file, or `<workspace>/target`), so every binary we run is the one just built.
fn target_dir() -> Result<PathBuf> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", out.status);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let dir = v["target_directory"].as_str().context("cargo metadata has no target_directory")?;
    Ok(PathBuf::from(dir))
}

/// A binary of this workspace built in `profile` (`debug` or `release`).
fn built(profile: &str, name: &str) -> Result<Command> {
    Ok(Command::new(target_dir()?.join(profile).join(name)))
}

fn build_ebpf(verifier_log: bool) -> Result<()> {
    // Building netd runs netd/build.rs, which builds netd-ebpf with aya-build and embeds the
    // object; the binary then describes the very object it embeds.
    let t = Instant::now();
    run(cargo().args(["build", "--package", "netd"]))?;
    eprintln!("built in {:.1}s", t.elapsed().as_secs_f64());
    let out_dir = netd_out_dir()?;
    eprintln!("object: {}", out_dir.join("netd-ebpf").display());
    let mut c = built("debug", "netd")?;
    c.args(["debug", "ebpf-object"]);
    if verifier_log {
        c.arg("--verifier-log");
    }
    run(&mut c)
}

/// OUT_DIR of netd's build script, from cargo's JSON messages.
fn netd_out_dir() -> Result<PathBuf> {
    let out = cargo().args(["build", "--package", "netd", "--message-format=json"]).stderr(Stdio::null()).output()?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] == "build-script-executed"
            && let Some(d) = v["out_dir"].as_str()
            && Path::new(d).join("netd-ebpf").exists()
        {
            return Ok(PathBuf::from(d));
        }
    }
    bail!("could not find netd's build-script OUT_DIR in cargo's output")
}

fn test(args: &[String]) -> Result<()> {
    let t = Instant::now();
    setup::run()?;
    // The integration tests drive the real binaries (netd, netd-probe): build them first.
    run(cargo().args(["build", "--package", "netd", "--package", "netd-tests", "--bins"]))?;
    let mut c = cargo();
    // Every crate but netd-ebpf (a bpf-target object, built by netd/build.rs): netd-common,
    // netd and xtask unit tests, then tests/ (BPF_PROG_TEST_RUN and root integration tests).
    c.args(["test", "--workspace", "--exclude", "netd-ebpf", "--no-fail-fast"]);
    if !args.is_empty() {
        c.arg("--").args(args);
    }
    run(&mut c)?;
    // The bench's smoke run, so CI exercises it (no thresholds: figures go to target/).
    bench(true, false, &target_dir()?.join("bench-quick"))?;
    // The bench's test-run cases, a few calls each: each checks its packet after the runs (TTL,
    // both checksums, the tuple), netd's established bodies and the floor NAT hop alike.
    run(built("release", "netd-bench")?.args(["micro", "--calls", "5"]))?;
    eprintln!("xtask test: done in {:.0}s", t.elapsed().as_secs_f64());
    Ok(())
}

fn bench(quick: bool, no_runtimes: bool, out: &Path) -> Result<()> {
    setup::run()?;
    // Release builds: the load generator must not be the bottleneck.
    run(cargo().args(["build", "--release", "--package", "netd", "--package", "netd-tests", "--bins"]))?;
    let mut c = built("release", "netd-bench")?;
    c.arg("run").arg("--out").arg(out);
    if quick {
        c.arg("--quick");
    }
    if no_runtimes {
        c.arg("--no-runtimes");
    }
    run(&mut c)
}

fn man(out: Option<PathBuf>) -> Result<()> {
    let out = match out {
        Some(o) => o,
        None => target_dir()?.join("man"),
    };
    run(cargo().args(["build", "--package", "netd"]))?;
    run(built("debug", "netd")?.args(["debug", "man"]).arg(&out))
}

fn demo() -> Result<()> {
    setup::run()?;
    run(cargo().args(["build", "--package", "netd", "--package", "netd-tests", "--bins"]))?;
    run(&mut built("debug", "netd-demo")?)
}
