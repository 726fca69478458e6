//! `netd-shim shim CONFIG`: the per-sandbox supervisor ([`netd::shim`]) as a small executable of
//! its own. The daemon starts one per `netd run`; exec'ing the whole `netd` (its CLI parser,
//! eBPF loader, HTTP stack) for it cost several milliseconds of loading and relocation per
//! sandbox. The arguments are those of `netd shim CONFIG`, so the daemon recognises a live
//! supervisor the same way whichever executable runs it.
fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).zip(args.get(2)) {
        Some((cmd, config)) if cmd == "shim" => netd::shim::main(std::path::Path::new(config)),
        _ => {
            eprintln!("usage: netd-shim shim CONFIG (started by the netd daemon)");
            std::process::exit(2);
        }
    }
}
