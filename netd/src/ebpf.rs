//! The embedded eBPF object built by `build.rs`.

/// The ELF object holding every program and map of `netd-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netd-ebpf"));
