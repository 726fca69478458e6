//! Types shared by the eBPF programs (`netd-ebpf`) and userspace (`netd`).
//!
//! Every type that crosses the user/kernel boundary is `#[repr(C)]`, has explicit padding fields
//! (so no byte of a map key is ever uninitialised) and a compile-time size assertion, so a layout
//! change on one side cannot silently disagree with the other. Addresses and ports are stored in
//! **network byte order** exactly as they appear in packets; helpers convert.
#![no_std]

/// Map names, as they appear in the object file and under the bpffs pin directory.
pub mod map_names {
    pub const PROG_STATS: &str = "PROG_STATS";
    pub const DROP_STATS: &str = "DROP_STATS";
    pub const CONFIG: &str = "CONFIG";
}

/// Entry points of the object, as named in the ELF (and in `bpftool prog show`).
pub mod prog_names {
    pub const XDP_UPLINK: &str = "netd_xdp_uplink";
    pub const FROM_NETDEV: &str = "netd_from_netdev";
    pub const TO_NETDEV: &str = "netd_to_netdev";
    pub const FROM_CONTAINER: &str = "netd_from_container";
    pub const SOCK_CONNECT4: &str = "netd_sock_connect4";
    pub const SOCK_SENDMSG4: &str = "netd_sock_sendmsg4";
    pub const SOCK_RECVMSG4: &str = "netd_sock_recvmsg4";

    pub const ALL: [&str; 7] =
        [XDP_UPLINK, FROM_NETDEV, TO_NETDEV, FROM_CONTAINER, SOCK_CONNECT4, SOCK_SENDMSG4, SOCK_RECVMSG4];
}

/// Index of each entry point in [`map_names::PROG_STATS`] (a per-CPU array of [`PacketCount`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgId {
    XdpUplink = 0,
    FromNetdev = 1,
    ToNetdev = 2,
    FromContainer = 3,
    SockConnect4 = 4,
    SockSendmsg4 = 5,
    SockRecvmsg4 = 6,
}

impl ProgId {
    pub const COUNT: u32 = 7;
    pub const ALL: [ProgId; 7] = [
        ProgId::XdpUplink,
        ProgId::FromNetdev,
        ProgId::ToNetdev,
        ProgId::FromContainer,
        ProgId::SockConnect4,
        ProgId::SockSendmsg4,
        ProgId::SockRecvmsg4,
    ];

    /// The ELF name of the entry point this counter belongs to.
    pub const fn prog_name(self) -> &'static str {
        prog_names::ALL[self as usize]
    }
}

/// Why a program dropped (or refused) a packet; index into [`map_names::DROP_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Headers shorter than their own length fields claim.
    Malformed = 0,
    /// From outside straight to a sandbox address (Docker's raw `-d C ! -i bridge -j DROP`).
    DirectToSandbox = 1,
    /// To 127.0.0.0/8 but not arriving on `lo`.
    LoopbackNotLo = 2,
    /// Inter-container traffic refused by icc=false.
    Icc = 3,
    /// Traffic between two different networks.
    Isolation = 4,
    /// No free SNAT port after the bounded number of tries.
    SnatExhausted = 5,
    /// A conntrack/NAT pair could not be inserted.
    CtInsert = 6,
}

impl DropReason {
    pub const COUNT: u32 = 7;
    pub const ALL: [DropReason; 7] = [
        DropReason::Malformed,
        DropReason::DirectToSandbox,
        DropReason::LoopbackNotLo,
        DropReason::Icc,
        DropReason::Isolation,
        DropReason::SnatExhausted,
        DropReason::CtInsert,
    ];

    /// Label used in `netd stats` and in the Prometheus `reason` label.
    pub const fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::DirectToSandbox => "direct_to_sandbox",
            DropReason::LoopbackNotLo => "loopback_not_lo",
            DropReason::Icc => "icc",
            DropReason::Isolation => "isolation",
            DropReason::SnatExhausted => "snat_exhausted",
            DropReason::CtInsert => "ct_insert",
        }
    }
}

/// Packets and bytes seen; value of the per-CPU counter maps (summed in userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketCount {
    pub packets: u64,
    pub bytes: u64,
}

/// Global knobs set by userspace before the programs are attached; value of the one-entry
/// `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `bpf_get_netns_cookie` of the daemon's network namespace: the cgroup sock_addr hooks act
    /// only on sockets of this namespace (they see every namespace of the machine).
    pub netns_cookie: u64,
    /// Bit flags, see `CONFIG_F_*`.
    pub flags: u32,
    pub _pad: u32,
}

/// Count every packet per entry point (always on; the cost is one per-CPU add).
pub const CONFIG_F_ENABLED: u32 = 1 << 0;

/// IP protocol numbers used as the `proto` field of map keys.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

const _: () = assert!(core::mem::size_of::<PacketCount>() == 16);
const _: () = assert!(core::mem::size_of::<Config>() == 16);
const _: () = assert!(core::mem::size_of::<ProgId>() == 4);
const _: () = assert!(core::mem::size_of::<DropReason>() == 4);
const _: () = assert!(ProgId::ALL.len() == ProgId::COUNT as usize);
const _: () = assert!(DropReason::ALL.len() == DropReason::COUNT as usize);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, no implicit padding (checked by the size asserts).
    unsafe impl aya::Pod for super::PacketCount {}
    unsafe impl aya::Pod for super::Config {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prog_ids_match_names() {
        for (i, id) in ProgId::ALL.iter().enumerate() {
            assert_eq!(*id as usize, i);
            assert_eq!(id.prog_name(), prog_names::ALL[i]);
        }
        assert_eq!(ProgId::FromContainer.prog_name(), "netd_from_container");
    }

    #[test]
    fn drop_reasons_are_dense_and_labelled() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(!r.label().is_empty());
        }
    }

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(core::mem::align_of::<PacketCount>(), 8);
        assert_eq!(core::mem::offset_of!(Config, flags), 8);
        assert_eq!(core::mem::offset_of!(PacketCount, bytes), 8);
    }
}
