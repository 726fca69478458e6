//! `netd monitor --type drop|trace`: dataplane events the programs write to a ring buffer while
//! a monitor client is attached (the daemon sets [`MONITOR`](map_names::MONITOR) only then; with
//! nobody listening the programs pay one array read per packet and write nothing).

/// Maps of the monitor (not pinned: a restarted daemon makes new ones, and its monitor clients
/// attach again).
pub mod map_names {
    /// One-entry `Array<u32>`: the `F_*` bits of what the programs report.
    pub const MONITOR: &str = "MONITOR";
    /// Ring buffer of [`super::MonitorEvent`]s.
    pub const EVENTS: &str = "EVENTS";
    /// One-entry per-CPU `Array<u32>`: the reason of the drop the current program counted
    /// (`DropReason + 1`; 0: none), recorded only while drops are monitored.
    pub const LAST_DROP: &str = "LAST_DROP";
}

/// Report dropped packets (verdict `TC_ACT_SHOT` / `XDP_DROP`), with their reason.
pub const F_DROP: u32 = 1 << 0;
/// Report every packet the per-packet programs (`netd_from_netdev`, `netd_from_container`)
/// pass or redirect.
pub const F_TRACE: u32 = 1 << 1;

/// [`MonitorEvent::kind`].
pub const KIND_DROP: u8 = 1;
pub const KIND_TRACE: u8 = 2;

/// [`MonitorEvent::reason`] of a drop without a recorded [`crate::DropReason`].
pub const REASON_UNKNOWN: u8 = 0xff;

/// [`MonitorEvent::verdict`]: what the program did with the packet.
pub const VERDICT_PASS: u8 = 0;
pub const VERDICT_DROP: u8 = 1;
pub const VERDICT_REDIRECT: u8 = 2;

/// Ring buffer size in bytes (a power-of-2 multiple of the page size).
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// One event, as the program saw the packet when it finished with it (after its
/// translation: a DNATed packet shows the sandbox's address and port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorEvent {
    /// [`KIND_DROP`] or [`KIND_TRACE`].
    pub kind: u8,
    /// A [`crate::DropReason`] (drops), [`REASON_UNKNOWN`], or 0 (traces).
    pub reason: u8,
    /// The [`crate::ProgId`] of the program.
    pub prog: u8,
    /// 4, 6, or 0 (not IP).
    pub family: u8,
    /// IP protocol (0 when not IP).
    pub proto: u8,
    /// `VERDICT_*`.
    pub verdict: u8,
    pub _pad: [u8; 2],
    /// The interface the program runs on (`skb->ifindex`, XDP's `ingress_ifindex`).
    pub ifindex: u32,
    /// Packet length in bytes.
    pub len: u32,
    /// Network byte order (0 without ports; ICMP echo: the id in `sport`).
    pub sport: u16,
    pub dport: u16,
    /// IPv4 addresses in the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<MonitorEvent>() == 52);
