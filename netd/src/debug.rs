//! Developer tools (`netd debug ...`).

/// Print every program and map of the embedded object; with `verifier_log`, load each program
/// in a throwaway network namespace and print the verifier's counts.
pub fn ebpf_object(verifier_log: bool, bpf_log: bool) -> anyhow::Result<()> {
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
        let (stats, t_v4, t_v6) = std::thread::spawn(move || -> anyhow::Result<_> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            // CPU time of this thread (the verifier runs in the loading thread's syscalls), which
            // a loaded machine does not distort as it does wall time.
            let cpu = || {
                // SAFETY: getrusage with a valid out pointer.
                let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
                unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
                let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                tv(ru.ru_utime) + tv(ru.ru_stime)
            };
            let c0 = cpu();
            let mut l = crate::ebpf::Loaded::load_without_v6(bpf_log)?;
            let c1 = cpu();
            l.ensure_v6()?;
            let c2 = cpu();
            Ok((l.verifier_stats(), c1 - c0, c2 - c1))
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
        println!(
            "load + verify, CPU time: {t_v4:.2} s without the IPv6 bodies (every daemon), {t_v6:.2} s for them (a daemon's first IPv6 network)"
        );
    }
    Ok(())
}
