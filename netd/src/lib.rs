//! netd: Docker's single-host network model, with NAT and filtering in eBPF.
pub mod dataplane;
pub mod ebpf;
