//! The CNI front-end: `netd-cni`, a plugin binary that runtimes (podman's CNI backend, containerd's
//! CRI, kubelet, Nomad) execute, and that forwards each operation to the running daemon.
//!
//! - [`spec`]: the CNI protocol itself (spec 0.3.1 … 1.1.0): environment, network configuration,
//!   error objects with their codes, and results in the requested version's shape. Pure code.
//! - [`wire`]: the requests the plugin sends to the daemon's `/cni/*` endpoints and its answers.
//! - [`fdpass`]: the network namespace travels as a file descriptor (SCM_RIGHTS) on the API socket,
//!   because the runtime's netns path may live in a mount namespace the daemon cannot see.
//! - [`plugin`]: the binary's logic (one exec = one operation), a thin client of the daemon.
//!
//! The daemon side is `daemon::cni`; the plugin never touches netlink or the dataplane.
pub mod fdpass;
pub mod plugin;
pub mod spec;
pub mod wire;
