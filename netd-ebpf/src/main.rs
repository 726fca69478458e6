//! netd's eBPF entry points. Every program is a thin wrapper: parse, account, decide.
//!
//! | program               | type                         | attach point                        |
//! |-----------------------|------------------------------|-------------------------------------|
//! | `netd_xdp_uplink`     | XDP (frags-aware)            | each uplink, native mode            |
//! | `netd_from_netdev`    | TC classifier (tcx ingress)  | each uplink                         |
//! | `netd_to_netdev`      | TC classifier (tcx egress)   | each uplink                         |
//! | `netd_from_container` | TC classifier (tcx ingress)  | each host-side sandbox veth         |
//! | `netd_sock_connect4`  | cgroup sock_addr connect4    | cgroup v2 (netns-cookie filtered)   |
//! | `netd_sock_sendmsg4`  | cgroup sock_addr sendmsg4    | cgroup v2 (netns-cookie filtered)   |
//! | `netd_sock_recvmsg4`  | cgroup sock_addr recvmsg4    | cgroup v2 (netns-cookie filtered)   |
//!
//! At this stage the programs parse headers, count packets per entry point and pass.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod stats;

#[cfg(target_arch = "bpf")]
mod progs {
    use aya_ebpf::{
        bindings::{TC_ACT_OK, xdp_action},
        macros::{cgroup_sock_addr, classifier, xdp},
        programs::{SockAddrContext, TcContext, XdpContext},
    };
    use netd_common::{DropReason, ProgId};

    use crate::{parse, stats};

    #[xdp(frags)]
    pub fn netd_xdp_uplink(ctx: XdpContext) -> u32 {
        let len = (ctx.data_end() - ctx.data()) as u64;
        stats::count_prog(ProgId::XdpUplink, len);
        match parse::l3_xdp(&ctx) {
            Ok(_) => xdp_action::XDP_PASS,
            Err(parse::ParseError::Malformed) => {
                // A truncated IPv4 header is not ours to judge yet: count it, let the stack drop it.
                stats::count_drop(DropReason::Malformed);
                xdp_action::XDP_PASS
            }
            Err(parse::ParseError::NotIpv4) => xdp_action::XDP_PASS,
        }
    }

    #[classifier]
    pub fn netd_from_netdev(ctx: TcContext) -> i32 {
        tc_count(&ctx, ProgId::FromNetdev)
    }

    #[classifier]
    pub fn netd_to_netdev(ctx: TcContext) -> i32 {
        tc_count(&ctx, ProgId::ToNetdev)
    }

    #[classifier]
    pub fn netd_from_container(ctx: TcContext) -> i32 {
        tc_count(&ctx, ProgId::FromContainer)
    }

    #[inline(always)]
    fn tc_count(ctx: &TcContext, prog: ProgId) -> i32 {
        stats::count_prog(prog, ctx.len() as u64);
        if let Err(parse::ParseError::Malformed) = parse::l3_tc(ctx) {
            stats::count_drop(DropReason::Malformed);
        }
        TC_ACT_OK
    }

    #[cgroup_sock_addr(connect4)]
    pub fn netd_sock_connect4(ctx: SockAddrContext) -> i32 {
        sock_count(&ctx, ProgId::SockConnect4)
    }

    #[cgroup_sock_addr(sendmsg4)]
    pub fn netd_sock_sendmsg4(ctx: SockAddrContext) -> i32 {
        sock_count(&ctx, ProgId::SockSendmsg4)
    }

    #[cgroup_sock_addr(recvmsg4)]
    pub fn netd_sock_recvmsg4(ctx: SockAddrContext) -> i32 {
        sock_count(&ctx, ProgId::SockRecvmsg4)
    }

    /// cgroup hooks see every network namespace of the machine: act only on the daemon's own.
    #[inline(always)]
    fn sock_count(ctx: &SockAddrContext, prog: ProgId) -> i32 {
        if crate::maps::in_daemon_netns(ctx) {
            stats::count_prog(prog, 0);
        }
        1 // allow
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// Built for the host only when someone runs `cargo build --workspace`; the real object is the
/// bpf target build done by `netd/build.rs`.
#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("netd-ebpf is an eBPF object; build it with `cargo xtask build-ebpf`");
    std::process::exit(1);
}
