//! `netd`: the daemon and its CLI.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "netd", version, about = "Docker's single-host network model with an eBPF datapath")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the netd version information
    Version,
    /// Developer tools
    #[command(hide = true, subcommand)]
    Debug(DebugCmd),
}

#[derive(Subcommand)]
enum DebugCmd {
    /// Print every program and map of the embedded eBPF object
    EbpfObject {
        /// Also load each program into the kernel (inside a throwaway network namespace) and
        /// print the verifier's processed instruction count
        #[arg(long)]
        verifier_log: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Version => {
            println!("netd version {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Cmd::Debug(DebugCmd::EbpfObject { verifier_log }) => ebpf_object(verifier_log),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn ebpf_object(verifier_log: bool) -> anyhow::Result<()> {
    let (progs, maps) = netd::ebpf::describe(netd::ebpf::OBJECT)?;
    println!("eBPF object: {} bytes, {} programs, {} maps", netd::ebpf::OBJECT.len(), progs.len(), maps.len());
    println!();
    println!("{:<22} {:<32} ATTACH POINT", "PROGRAM", "TYPE");
    for p in &progs {
        println!("{:<22} {:<32} {}", p.name, p.kind, p.attach_point);
    }
    println!();
    println!("{:<14} {:<14} {:>8} {:>10} {:>12}", "MAP", "TYPE", "KEY", "VALUE", "MAX_ENTRIES");
    for m in &maps {
        println!(
            "{:<14} {:<14} {:>8} {:>10} {:>12}",
            m.name, m.map_type, m.key_size, m.value_size, m.max_entries
        );
    }
    if verifier_log {
        // Load in a throwaway network namespace on a dedicated thread: nothing is attached, and
        // nothing of the caller's namespace is touched.
        let stats = std::thread::spawn(|| -> anyhow::Result<_> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            let l = netd::ebpf::Loaded::load()?;
            Ok(l.verifier_stats())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("loader thread panicked"))??;
        println!();
        println!("{:<22} {:>20} {:>16}", "PROGRAM", "VERIFIED INSNS", "XLATED BYTES");
        for (name, insns, size) in stats {
            let f = |v: Option<u32>| v.map_or_else(|| "n/a".to_string(), |v| v.to_string());
            println!("{:<22} {:>20} {:>16}", name, f(insns), f(size));
        }
        println!("\nall {} programs loaded and verified", progs.len());
    }
    Ok(())
}
