//! Developer tools (`netd debug ...`).

/// Print every program and map of the embedded object; with `verifier_log`, load each program
/// in a throwaway network namespace and print the verifier's counts.
pub fn ebpf_object(verifier_log: bool) -> anyhow::Result<()> {
    let (progs, maps) = crate::ebpf::describe(crate::ebpf::OBJECT)?;
    println!("eBPF object: {} bytes, {} programs, {} maps", crate::ebpf::OBJECT.len(), progs.len(), maps.len());
    println!();
    println!("{:<22} {:<32} ATTACH POINT", "PROGRAM", "TYPE");
    for p in &progs {
        println!("{:<22} {:<32} {}", p.name, p.kind, p.attach_point);
    }
    println!();
    println!("{:<14} {:<14} {:>8} {:>10} {:>12}", "MAP", "TYPE", "KEY", "VALUE", "MAX_ENTRIES");
    for m in &maps {
        println!("{:<14} {:<14} {:>8} {:>10} {:>12}", m.name, m.map_type, m.key_size, m.value_size, m.max_entries);
    }
    if verifier_log {
        // Load in a throwaway network namespace on a dedicated thread: nothing is attached, and
        // nothing of the caller's namespace is touched.
        let stats = std::thread::spawn(|| -> anyhow::Result<_> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            let l = crate::ebpf::Loaded::load()?;
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
