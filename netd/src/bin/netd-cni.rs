//! `netd-cni`: the CNI plugin (spec 0.3.1 … 1.1.0) that attaches containers of podman,
//! containerd/CRI, kubelet or Nomad to a netd network. A thin client of the running daemon.
fn main() -> std::process::ExitCode {
    netd::cni::plugin::main()
}
