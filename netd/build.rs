//! Builds `netd-ebpf` for the bpf target (aya-build, nightly + `-Z build-std=core`) and leaves the
//! object at `$OUT_DIR/netd-ebpf`, which `netd::ebpf::OBJECT` embeds. `cargo xtask build-ebpf`
//! runs this same build script (it builds this crate) and reads the object from `OUT_DIR`.
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().expect("workspace root");
    let ebpf_dir = root.join("netd-ebpf");
    let common_dir = root.join("netd-common");
    // aya-build watches the package directory; the shared types are compiled into it too.
    println!("cargo:rerun-if-changed={}", common_dir.display());
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    let ebpf_dir = ebpf_dir.to_str().expect("utf-8 path").to_owned();
    aya_build::build_ebpf(
        [aya_build::Package { name: "netd-ebpf", root_dir: &ebpf_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
