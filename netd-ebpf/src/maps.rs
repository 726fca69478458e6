//! Map definitions and small accessors.
use aya_ebpf::{
    helpers::generated::bpf_get_netns_cookie,
    macros::map,
    maps::{Array, PerCpuArray},
    programs::SockAddrContext,
};
use netd_common::{Config, DropReason, PacketCount, ProgId};

/// Packets/bytes per entry point (index: [`ProgId`]).
#[map(name = "PROG_STATS")]
pub static PROG_STATS: PerCpuArray<PacketCount> = PerCpuArray::with_max_entries(ProgId::COUNT, 0);

/// Packets per drop reason (index: [`DropReason`]).
#[map(name = "DROP_STATS")]
pub static DROP_STATS: PerCpuArray<PacketCount> = PerCpuArray::with_max_entries(DropReason::COUNT, 0);

/// One entry: global configuration written by userspace.
#[map(name = "CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// True when the socket belongs to the network namespace the daemon configured. An unset
/// cookie (0) matches nothing, so a freshly loaded object never acts machine-wide.
#[inline(always)]
pub fn in_daemon_netns(ctx: &SockAddrContext) -> bool {
    let Some(cfg) = config() else { return false };
    if cfg.netns_cookie == 0 {
        return false;
    }
    // SAFETY: the helper reads the context's socket; the context pointer comes from the kernel.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    cookie == cfg.netns_cookie
}
