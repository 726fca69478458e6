//! netd: Docker's single-host network model, with NAT and filtering in eBPF.
pub mod api;
pub mod bpfbatch;
pub mod cli;
pub mod daemon;
pub mod dataplane;
pub mod debug;
pub mod ebpf;
pub mod etcfiles;
pub mod format;
pub mod ipam;
pub mod logging;
pub mod model;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod ports;
pub mod shim;
