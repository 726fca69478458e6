//! The IPv6 datapath: parsing with a bounded extension-header walk, `CT_V6` conntrack, NAT66
//! (DNAT of published ports, masquerade, hairpin), ICMPv6 error translation, fragments, and the
//! protections, in modules of their own beside the v4 ones.
pub mod ct;
pub mod icmp;
pub mod icmp46;
pub mod maps;
pub mod nat;
pub mod nat46;
pub mod parse;
pub mod progs;
pub mod snat;

pub use progs::{from_container, from_netdev, to_netdev, to_netdev_l3, xdp_uplink};
