//! netd's eBPF entry points. Every program is a thin wrapper: parse, account, decide.
//!
//! | program               | type                         | attach point                        |
//! |-----------------------|------------------------------|-------------------------------------|
//! | `netd_xdp_uplink`     | XDP (frags-aware)            | each uplink, native mode            |
//! | `netd_from_netdev`    | TC classifier (tcx ingress)  | each uplink                         |
//! | `netd_from_netdev_l3` | TC classifier (tcx ingress)  | each layer-3 uplink (tun, WireGuard) |
//! | `netd_to_netdev`      | TC classifier (tcx egress)   | each uplink                         |
//! | `netd_to_netdev_l3`   | TC classifier (tcx egress)   | each layer-3 uplink                 |
//! | `netd_from_container` | TC classifier (tcx ingress)  | each host-side sandbox veth         |
//! | `netd_sock_connect4`  | cgroup sock_addr connect4    | cgroup v2 (netns-cookie filtered)   |
//! | `netd_sock_sendmsg4`  | cgroup sock_addr sendmsg4    | cgroup v2 (netns-cookie filtered)   |
//! | `netd_sock_recvmsg4`  | cgroup sock_addr recvmsg4    | cgroup v2 (netns-cookie filtered)   |
//! | `netd_sock_connect6`  | cgroup sock_addr connect6    | cgroup v2 (netns-cookie filtered)   |
//! | `netd_sock_sendmsg6`  | cgroup sock_addr sendmsg6    | cgroup v2 (netns-cookie filtered)   |
//! | `netd_sock_recvmsg6`  | cgroup sock_addr recvmsg6    | cgroup v2 (netns-cookie filtered)   |
//! | `netd_to_bridge`      | TC classifier (tcx egress)   | each netd bridge                    |
//! | `netd_from_foreign_bridge` | TC classifier (tcx ingress) | each of Docker's own bridges   |
//!
//! Published ports: DNAT on the uplink's ingress, delivered with `bpf_redirect_peer` straight
//! into the sandbox; replies are translated back on the sandbox veth's ingress and routed to the
//! uplink with `bpf_fib_lookup` + `bpf_redirect`. Masquerade: on the sandbox veth's ingress when
//! the FIB says the packet leaves by an uplink. Hairpin, ICC and isolation also on the sandbox
//! veth; Docker's raw-table protections in XDP. Isolation from Docker's own bridges (docker0,
//! `br-<12 hex>`): on the sandbox veth for traffic the FIB sends into one, on the netd bridge's
//! egress for traffic routed in from one. Nothing here needs netfilter.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod conntrack;
#[cfg(target_arch = "bpf")]
mod forged;
#[cfg(target_arch = "bpf")]
mod icmp;
#[cfg(target_arch = "bpf")]
mod kctx;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod monitor;
#[cfg(target_arch = "bpf")]
mod nat;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod snat;
#[cfg(target_arch = "bpf")]
mod stats;
#[cfg(target_arch = "bpf")]
mod tcpwin;
#[cfg(target_arch = "bpf")]
mod v6;

#[cfg(target_arch = "bpf")]
mod progs {
    use core::mem::MaybeUninit;

    use aya_ebpf::{
        bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
        helpers::generated::{bpf_get_socket_cookie, bpf_skb_change_head},
        macros::{cgroup_sock_addr, classifier, map, xdp},
        maps::{LruHashMap, ProgramArray},
        programs::{SockAddrContext, TcContext, XdpContext},
    };
    use netd_common::{
        CT_ACT_FIB, CT_ACT_PEER, CT_F_L2, CtKey, DropReason, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, LinkKey,
        NET_F_ICC, NET_F_INTERNAL, NET_F_MASQUERADE, NET_F_PROTECT, NET_F_ROUTED, ProgId,
    };

    use crate::{
        conntrack::{self, apply_new, insert_pair, key_of},
        ct_value, icmp,
        maps::{
            LINKS, SCRATCH_FIB, UPLINKS, endpoint, in_daemon_netns, is_foreign_bridge, is_host_addr, network,
            published, published_exact,
        },
        parse::{self, ETH_HLEN, ETH_P_IP, ParseError, Pkt},
        snat::pick_port,
        stats,
    };

    const OK: i32 = TC_ACT_OK as i32;
    const SHOT: i32 = TC_ACT_SHOT as i32;

    #[inline(always)]
    fn is_loopback(addr: u32) -> bool {
        // Network byte order: the first octet is the lowest byte.
        addr & 0xff == 127
    }

    #[xdp(frags)]
    pub fn netd_xdp_uplink(ctx: XdpContext) -> u32 {
        let v = xdp_uplink(&ctx);
        // SAFETY: the program's context.
        let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
        crate::monitor::observe_xdp(
            ctx.data(),
            ctx.data_end(),
            ifindex,
            v == xdp_action::XDP_DROP,
            ProgId::XdpUplink as u32,
        );
        v
    }

    #[inline(always)]
    fn xdp_uplink(ctx: &XdpContext) -> u32 {
        let len = (ctx.data_end() - ctx.data()) as u64;
        stats::count_prog(ProgId::XdpUplink, len);
        match parse::l3_xdp(ctx) {
            Ok(l3) => {
                if is_loopback(l3.daddr) {
                    stats::count_drop(DropReason::LoopbackNotLo);
                    return xdp_action::XDP_DROP;
                }
                if let Some(ep) = endpoint(l3.daddr)
                    && let Some(net) = network(ep.net)
                    && net.flags & NET_F_PROTECT != 0
                {
                    stats::count_drop(DropReason::DirectToSandbox);
                    return xdp_action::XDP_DROP;
                }
                xdp_action::XDP_PASS
            }
            Err(ParseError::Malformed) => {
                // Not ours to judge: count it, let the stack drop it.
                stats::count_passed(DropReason::Malformed);
                xdp_action::XDP_PASS
            }
            Err(ParseError::NotIpv4) => crate::v6::xdp_uplink(ctx),
        }
    }

    /// Parse into `p` (the caller's slot, not a copy: stack; see `MaybeUninit`). False: not
    /// ours, or malformed (counted).
    #[inline(always)]
    fn parse_tc(ctx: &TcContext, p: *mut Pkt) -> bool {
        match parse::tc(ctx, p) {
            Ok(()) => true,
            Err(ParseError::Malformed) => {
                stats::count_passed(DropReason::Malformed);
                false
            }
            Err(ParseError::NotIpv4) => false,
        }
    }

    /// Uplink ingress: replies of masqueraded flows, and new connections to published ports.
    #[classifier]
    pub fn netd_from_netdev(ctx: TcContext) -> i32 {
        let v = from_netdev(&ctx);
        crate::monitor::observe(ctx.skb.skb, v, ProgId::FromNetdev as u32, true)
    }

    /// Whether the frame is IPv6 (`skb->protocol`, no packet read): the IPv6 bodies take it.
    #[inline(always)]
    fn is_ipv6(ctx: &TcContext) -> bool {
        ctx.skb.protocol() == u32::from(crate::v6::parse::ETH_P_IPV6.to_be())
    }

    /// The IPv6 bodies, loaded by the daemon when it has an IPv6 network
    /// (`netd_common::v6::progs`).
    #[map(name = "V6_PROGS")]
    static V6_PROGS: ProgramArray = ProgramArray::with_max_entries(4, 0);

    /// Hand the frame to the IPv6 body in `slot` (from the entry point's own frame, so no
    /// BPF-to-BPF caller limits the stack). Not loaded: the kernel's, untouched.
    #[inline(always)]
    fn to_v6(ctx: &TcContext, slot: u32) -> i32 {
        // SAFETY: a tail call with the program's own context; on failure control returns here.
        unsafe { V6_PROGS.tail_call(ctx, slot) };
        OK
    }

    // (A tail call does not come back: each v6 program reports its own verdict to the monitor,
    // as its entry point does for IPv4.)
    #[classifier]
    pub fn netd_from_netdev_v6(ctx: TcContext) -> i32 {
        let skb = ctx.skb.skb;
        let v = crate::v6::from_netdev(ctx);
        crate::monitor::observe(skb, v, ProgId::FromNetdev as u32, true)
    }

    #[classifier]
    pub fn netd_to_netdev_v6(ctx: TcContext) -> i32 {
        let skb = ctx.skb.skb;
        let v = crate::v6::to_netdev(ctx);
        crate::monitor::observe(skb, v, ProgId::ToNetdev as u32, false)
    }

    #[classifier]
    pub fn netd_to_netdev_l3_v6(ctx: TcContext) -> i32 {
        let skb = ctx.skb.skb;
        let v = crate::v6::to_netdev_l3(ctx);
        crate::monitor::observe(skb, v, ProgId::ToNetdev as u32, false)
    }

    #[classifier]
    pub fn netd_from_container_v6(ctx: TcContext) -> i32 {
        let skb = ctx.skb.skb;
        // An IPv4 frame here is a NAT46 flow's reply, handed over by `netd_from_container`.
        let v = if is_ipv6(&ctx) { crate::v6::from_container(ctx) } else { crate::v6::nat46::from_sandbox(ctx) };
        crate::monitor::observe(skb, v, ProgId::FromContainer as u32, true)
    }

    /// The same on a layer-3 uplink (tun, WireGuard, PPP: packets start at the IP header). The
    /// packet gets an Ethernet header first (`bpf_skb_change_head`, made for an L3 packet headed
    /// for an L2 device), so one body serves both: a translated packet is redirected into a
    /// sandbox's veth with it, and one passed to the stack is read from its IP header as before
    /// (the stack skips the header it is given as the packet's MAC header).
    #[classifier]
    pub fn netd_from_netdev_l3(ctx: TcContext) -> i32 {
        let proto = ctx.skb.protocol();
        let ipv6 = proto == u32::from(crate::v6::parse::ETH_P_IPV6.to_be());
        if proto != u32::from(ETH_P_IP.to_be()) && !ipv6 {
            return OK;
        }
        // SAFETY: plain helper call on the valid context.
        if unsafe { bpf_skb_change_head(ctx.skb.skb, ETH_HLEN as u32, 0) } != 0 {
            return OK;
        }
        let ethertype = if ipv6 { crate::v6::parse::ETH_P_IPV6 } else { ETH_P_IP };
        if ctx.store(12, &ethertype.to_be(), 0).is_err() {
            return OK;
        }
        let v = from_netdev(&ctx);
        crate::monitor::observe(ctx.skb.skb, v, ProgId::FromNetdev as u32, true)
    }

    #[inline(always)]
    fn from_netdev(ctx: &TcContext) -> i32 {
        // (Each body counts itself: a map key on the entry's own frame would cost it 16 bytes
        // of the 512 its body's calls share.)
        if is_ipv6(ctx) {
            return to_v6(ctx, netd_common::v6::progs::SLOT_FROM_NETDEV);
        }
        from_netdev_v4(TcContext::new(ctx.skb.skb))
    }

    /// The IPv4 body (a BPF-to-BPF call: its frame and the IPv6 body's never add up).
    #[inline(never)]
    fn from_netdev_v4(ctx: TcContext) -> i32 {
        let ctx = &ctx;
        stats::count_prog(ProgId::FromNetdev, ctx.len() as u64);
        let f = conntrack::fast_v4(ctx, true);
        if f != conntrack::FAST_MISS && f != conntrack::FAST_NO_ENTRY {
            return f;
        }
        let mut slot = MaybeUninit::<Pkt>::uninit();
        if !parse_tc(ctx, slot.as_mut_ptr()) {
            return OK;
        }
        // SAFETY: written whole by `parse_tc`.
        let p = unsafe { &mut *slot.as_mut_ptr() };
        // Docker's protections, also here: the uplink may run without XDP (veth uplinks, where
        // native XDP costs more than it saves, see bench/report.md).
        if is_loopback(p.daddr) {
            stats::count_drop(DropReason::LoopbackNotLo);
            return SHOT;
        }
        // The flow's entry first: an entry that rewrites the destination (a published port, a
        // masqueraded flow's reply) was made for one of the host's addresses, never a sandbox's,
        // so the protection below (a hash lookup per packet) cannot apply to it.
        let k = key_of(p);
        let e = if p.has_ports && f != conntrack::FAST_NO_ENTRY { conntrack::lookup_flow_uplink(p, &k) } else { None };
        // SAFETY: map value pointer, valid for this program run.
        let dnat = e.is_some_and(|e| unsafe { (*e).daddr } != p.daddr);
        // The destination's endpoint when it is a sandbox address (once: the protection and
        // the unprotected path below).
        let dst = if dnat { None } else { endpoint(p.daddr) };
        if let Some(ep) = dst
            && let Some(net) = network(ep.net)
            && net.flags & NET_F_PROTECT != 0
        {
            stats::count_drop(DropReason::DirectToSandbox);
            return SHOT;
        }
        if p.later_fragment {
            return match conntrack::apply_fragment(ctx, p) {
                Some(v) => v,
                // May belong to a translated flow (a published port, a masqueraded reply):
                // never passed on untranslated.
                None if is_host_addr(p.daddr) => conntrack::frag_unknown(),
                None => OK,
            };
        }
        if p.more_fragments && is_host_addr(p.daddr) {
            // Untranslated unless a translation below overwrites it.
            conntrack::frag_pass(p);
        }
        if !p.has_ports {
            if icmp::is_error(p)
                && let Some(v) = icmp::translate_error(ctx, p)
            {
                return v;
            }
            return OK;
        }
        if let Some(e) = e {
            return conntrack::established_entry(ctx, p, e);
        }
        // Straight to a sandbox address: routed and nat-unprotected networks allow it (routed:
        // only ICMP and published container ports); nat mode was dropped in XDP already.
        if let Some(ep) = dst
            && let Some(net) = network(ep.net)
            && net.flags & NET_F_PROTECT == 0
        {
            let open =
                net.flags & NET_F_ROUTED == 0 || p.proto == IPPROTO_ICMP || published_exact(p.proto, p.daddr, p.dport);
            if !open {
                stats::count_drop(DropReason::DirectToSandbox);
                return SHOT;
            }
            let mut fwd = ct_value! {
                saddr: p.saddr,
                daddr: p.daddr,
                sport: p.sport,
                dport: p.dport,
                action: CT_ACT_PEER,
                ifindex: ep.ifindex,
                dmac: ep.mac,
                smac: net.gateway_mac,
            };
            let rk = conntrack::reversed(&k);
            let mut rev = ct_value! {
                saddr: p.daddr,
                daddr: p.saddr,
                sport: p.dport,
                dport: p.sport,
                action: CT_ACT_FIB,
            };
            if !insert_pair(&k, &mut fwd, &rk, &mut rev) {
                return SHOT;
            }
            return apply_new(ctx, p, &k);
        }
        if p.proto == IPPROTO_ICMP || !is_host_addr(p.daddr) {
            return OK;
        }
        dnat_published(ctx, p, &k)
    }

    /// A new connection to one of the host's addresses: DNAT to the sandbox of the port
    /// published there (the client's address kept), or OK (not netd's) when there is none.
    #[inline(always)]
    fn dnat_published(ctx: &TcContext, p: &mut Pkt, k: &CtKey) -> i32 {
        let Some(pb) = published(p.proto, p.daddr, p.dport) else { return OK };
        let Some(ep) = endpoint(pb.addr) else { return OK };
        let Some(net) = network(ep.net) else { return OK };
        // The client's port toward the sandbox, unless another flow's reply tuple holds it (the
        // same client ip:port to another host port of the same sandbox port): then another one,
        // as nf_nat does, so neither flow loses its replies.
        let Some(cport) = pick_port(p.proto, pb.addr, p.saddr, pb.port, p.sport, true) else {
            stats::count_drop(DropReason::SnatExhausted);
            return SHOT;
        };
        // (`conntrack::restart_published` checks a closed pair against these two values.)
        let mut fwd = ct_value! {
            saddr: p.saddr,
            daddr: pb.addr,
            sport: cport,
            dport: pb.port,
            action: CT_ACT_PEER,
            ifindex: ep.ifindex,
            dmac: ep.mac,
            smac: net.gateway_mac,
            stats_slot: pb.stats_slot + 1,
        };
        let rk = conntrack::ct_key(pb.addr, p.saddr, pb.port, cport, p.proto);
        let mut rev = ct_value! {
            saddr: p.daddr,
            daddr: p.saddr,
            sport: p.dport,
            dport: p.sport,
            action: CT_ACT_FIB,
        };
        if !insert_pair(k, &mut fwd, &rk, &mut rev) {
            return SHOT;
        }
        apply_new(ctx, p, k)
    }

    /// Uplink egress: host-originated flows reserve their reply tuple against masquerade, and
    /// get another source port when a sandbox flow holds theirs (see `conntrack::host_egress`).
    #[classifier]
    pub fn netd_to_netdev(ctx: TcContext) -> i32 {
        let skb = ctx.skb.skb;
        // Forwarded packets (a sandbox's, redirected here by `netd_from_container`, or routed
        // by the kernel) came in on some device: nothing in either family's body is for them
        // (host flows and the host's own ICMP errors only), so they leave without being parsed
        // and, for IPv6, without the tail call.
        // SAFETY: reading the context's skb.
        let v = if unsafe { (*skb).ingress_ifindex } != 0 {
            stats::count_prog(ProgId::ToNetdev, ctx.len() as u64);
            OK
        } else if is_ipv6(&ctx) {
            to_v6(&ctx, netd_common::v6::progs::SLOT_TO_NETDEV)
        } else {
            to_netdev_v4(ctx)
        };
        crate::monitor::observe(skb, v, ProgId::ToNetdev as u32, false)
    }

    #[inline(never)]
    fn to_netdev_v4(ctx: TcContext) -> i32 {
        stats::count_prog(ProgId::ToNetdev, ctx.len() as u64);
        // (Forwarded packets left in `netd_to_netdev`.)
        let mut slot = MaybeUninit::<Pkt>::uninit();
        if !parse_tc(&ctx, slot.as_mut_ptr()) {
            return OK;
        }
        // SAFETY: written whole by `parse_tc`.
        to_netdev(ctx, unsafe { &mut *slot.as_mut_ptr() })
    }

    /// The same on a layer-3 uplink's egress (tun, WireGuard, PPP): the packet starts at its IP
    /// header and is parsed and rewritten there (nothing can be prepended on the way out). IPv6
    /// packets go to the IPv6 egress body's layer-3 twin (`netd_to_netdev_l3_v6`).
    #[classifier]
    pub fn netd_to_netdev_l3(ctx: TcContext) -> i32 {
        let proto = ctx.skb.protocol();
        let skb = ctx.skb.skb;
        let v = if proto == u32::from(ETH_P_IP.to_be()) {
            to_netdev_l3_v4(ctx)
        } else if proto == u32::from(crate::v6::parse::ETH_P_IPV6.to_be()) {
            to_v6(&ctx, netd_common::v6::progs::SLOT_TO_NETDEV_L3)
        } else {
            return OK;
        };
        crate::monitor::observe(skb, v, ProgId::ToNetdev as u32, false)
    }

    #[inline(never)]
    fn to_netdev_l3_v4(ctx: TcContext) -> i32 {
        stats::count_prog(ProgId::ToNetdev, ctx.len() as u64);
        let mut slot = MaybeUninit::<Pkt>::uninit();
        match parse::tc_l3(&ctx, slot.as_mut_ptr()) {
            Ok(()) => {}
            Err(ParseError::Malformed) => {
                stats::count_passed(DropReason::Malformed);
                return OK;
            }
            Err(ParseError::NotIpv4) => return OK,
        }
        // SAFETY: written whole by `tc_l3`.
        to_netdev(ctx, unsafe { &mut *slot.as_mut_ptr() })
    }

    /// The uplink egress body, after parsing (`p.l3`: where the IP header starts).
    #[inline(always)]
    fn to_netdev(ctx: TcContext, p: &mut Pkt) -> i32 {
        if !p.has_ports || p.proto == IPPROTO_ICMP {
            // The host's own ICMP error about a translated flow (its TTL ran out on the hop
            // to a sandbox, after DNAT): the client must see its own packet quoted.
            if icmp::is_error(p)
                && unsafe { (*ctx.skb.skb).ingress_ifindex } == 0
                && let Some(v) = icmp::translate_host_error(&ctx, p)
            {
                return v;
            }
            return OK;
        }
        // UDP: every datagram; TCP: SYN, FIN and RST, and every segment only while a host flow
        // has another source port.
        let new_flow = p.proto != IPPROTO_TCP || p.tcp_flags & 0x12 == 0x02;
        if !new_flow && p.tcp_flags & 0x05 == 0 && !conntrack::host_nat_active() {
            return OK;
        }
        let ifindex = unsafe { (*ctx.skb.skb).ifindex };
        // SAFETY: read-only lookup.
        let up = unsafe { UPLINKS.get(&ifindex).copied() };
        if !up.is_some_and(|u| u.addr == p.saddr) {
            return OK;
        }
        // Forwarded packets (translated sandbox flows) came in on some device; the host's own
        // have no ingress device. (Not the socket: a sandbox's socket stays attached to its
        // packets across the veth.)
        if unsafe { (*ctx.skb.skb).ingress_ifindex } != 0 {
            return OK;
        }
        conntrack::host_egress(&ctx, p, new_flow)
    }

    /// Host-side sandbox veth ingress: translated flows, hairpin, isolation, ICC, masquerade.
    #[classifier]
    pub fn netd_from_container(ctx: TcContext) -> i32 {
        let skb = ctx.skb.skb;
        let v = if is_ipv6(&ctx) {
            to_v6(&ctx, netd_common::v6::progs::SLOT_FROM_CONTAINER)
        } else {
            match from_container_v4(ctx) {
                // The reply of a NAT46 flow: the v6 program makes it IPv6 (`v6::nat46`).
                TO_NAT64 => to_v6(&TcContext::new(skb), netd_common::v6::progs::SLOT_FROM_CONTAINER),
                v => v,
            }
        };
        crate::monitor::observe(skb, v, ProgId::FromContainer as u32, true)
    }

    #[inline(never)]
    fn from_container_v4(ctx: TcContext) -> i32 {
        stats::count_prog(ProgId::FromContainer, ctx.len() as u64);
        let f = conntrack::fast_v4(&ctx, false);
        if f != conntrack::FAST_MISS && f != conntrack::FAST_NO_ENTRY {
            return f;
        }
        let mut slot = MaybeUninit::<Pkt>::uninit();
        if !parse_tc(&ctx, slot.as_mut_ptr()) {
            return OK;
        }
        // SAFETY: written whole by `parse_tc`.
        let p = unsafe { &mut *slot.as_mut_ptr() };
        // (A later fragment or an ICMP error has no ports: handled below.)
        let k = key_of(p);
        if p.has_ports
            && f != conntrack::FAST_NO_ENTRY
            && let Some(verdict) = conntrack::established(&ctx, p, &k)
        {
            return verdict;
        }
        if p.has_ports && crate::v6::nat46::is_reply(p) {
            return TO_NAT64;
        }
        // The rest in a BPF-to-BPF call, and a new flow's entry applied here, not inside it:
        // its frame and `apply`'s would not fit 512 bytes together.
        match from_container_new(&ctx, p, &k) {
            APPLY_NEW => apply_new(&ctx, p, &k),
            verdict => verdict,
        }
    }

    /// A sandbox's packet from an address that is no sandbox's, to a sandbox: judged by where the
    /// frame goes ([`crate::forged::to_sandbox`]); to anything else, the kernel's. (A call: its
    /// frame is not the caller's.)
    #[inline(never)]
    fn unknown_source(ctx: &TcContext, p: &Pkt) -> i32 {
        let Some(dst) = endpoint(p.daddr) else { return OK };
        let Some(net) = network(dst.net) else { return OK };
        crate::forged::to_sandbox(ctx, &dst.mac, net.flags & NET_F_ICC != 0)
    }

    /// "Apply the entry just inserted" (`apply_new`), left to the caller; no TC verdict.
    const APPLY_NEW: i32 = i32::MIN;
    /// "A NAT46 flow's reply: tail call to the v6 program" (from the entry's frame); no verdict.
    const TO_NAT64: i32 = i32::MIN + 1;

    /// A packet from a sandbox without a conntrack entry: later fragments, ICMP errors about a
    /// translated flow, hairpin, isolation, ICC, masquerade (a new entry under `k` returns
    /// [`APPLY_NEW`]). A BPF-to-BPF call (stack, see above).
    #[inline(never)]
    fn from_container_new(ctx: &TcContext, p: &mut Pkt, k: &CtKey) -> i32 {
        if p.later_fragment {
            if let Some(verdict) = conntrack::apply_fragment(ctx, p) {
                return verdict;
            }
            // A NAT46 reply's later fragment: the v6 program makes it IPv6 too.
            if crate::v6::nat46::is_reply_fragment(p) {
                return TO_NAT64;
            }
        }
        if icmp::is_error(p) {
            if let Some(v) = icmp::translate_error(ctx, p) {
                return v;
            }
            // About a NAT46 flow: the v6 program makes it ICMPv6 (`v6::icmp46`).
            if crate::v6::icmp46::about_flow(ctx, p) {
                return TO_NAT64;
            }
        }
        let k = *k;
        let Some(src) = endpoint(p.saddr) else { return unknown_source(ctx, p) };
        let Some(net) = network(src.net) else { return OK };
        let here = unsafe { (*ctx.skb.skb).ifindex };

        // 127.0.0.0/8 never arrives from a sandbox (the kernel drops it as martian): a forged
        // frame to the gateway's MAC must not reach a port published on 127.0.0.1.
        if is_loopback(p.daddr) {
            stats::count_drop(DropReason::LoopbackNotLo);
            return SHOT;
        }
        // To one of the host's addresses: a published port (hairpin) or the host itself.
        if is_host_addr(p.daddr) {
            if p.has_ports
                && p.proto != IPPROTO_ICMP
                && let Some(pb) = published(p.proto, p.daddr, p.dport)
                && let Some(dst) = endpoint(pb.addr)
                && let Some(dnet) = network(dst.net)
            {
                // An internal network has no way out, not even through a host address.
                if net.flags & NET_F_INTERNAL != 0 {
                    stats::count_drop(DropReason::Internal);
                    return SHOT;
                }
                // DNAT to the target and SNAT to the target network's gateway, so replies come
                // back through here whether the target is this sandbox, a neighbour or another
                // network's sandbox.
                // Never the original port: the host's own connections to sandboxes come from the
                // gateway address with ephemeral ports, and must not meet a hairpin tuple.
                let Some(port) = pick_port(p.proto, pb.addr, dnet.gateway, pb.port, p.sport, false) else {
                    stats::count_drop(DropReason::SnatExhausted);
                    return SHOT;
                };
                // Nor one a NAT46 flow to the same sandbox port holds (1 in ~36k draws while one
                // exists): this packet goes, its retransmission draws again.
                if crate::v6::nat46::holds(p.proto, pb.addr, dnet.gateway, pb.port, port) {
                    stats::count_drop(DropReason::SnatExhausted);
                    return SHOT;
                }
                let mut fwd = ct_value! {
                    saddr: dnet.gateway,
                    daddr: pb.addr,
                    sport: port,
                    dport: pb.port,
                    action: CT_ACT_PEER,
                    ifindex: dst.ifindex,
                    dmac: dst.mac,
                    smac: dnet.gateway_mac,
                    stats_slot: pb.stats_slot + 1,
                };
                let rk = conntrack::ct_key(pb.addr, dnet.gateway, pb.port, port, p.proto);
                let mut rev = ct_value! {
                    saddr: p.daddr,
                    daddr: p.saddr,
                    sport: p.dport,
                    dport: p.sport,
                    action: CT_ACT_PEER,
                    ifindex: here,
                    dmac: src.mac,
                    smac: net.gateway_mac,
                };
                if !insert_pair(&k, &mut fwd, &rk, &mut rev) {
                    return SHOT;
                }
                return APPLY_NEW;
            }
            // Not netd's port (one Docker publishes, a host service): netfilter may DNAT it into
            // one of Docker's bridges, whose replies netd_to_bridge then lets in by this record.
            if p.has_ports && p.proto != IPPROTO_ICMP {
                let rk = conntrack::reversed(&k);
                // SAFETY: read-only lookup (it also refreshes the entry's LRU age).
                if unsafe { HOST_BOUND_V4.get(&rk).is_none() } {
                    let _ = HOST_BOUND_V4.insert(&rk, &1, 0);
                }
            }
            return OK;
        }

        // To another sandbox.
        if let Some(dst) = endpoint(p.daddr) {
            if dst.net != src.net {
                stats::count_drop(DropReason::Isolation);
                return SHOT;
            }
            if net.flags & NET_F_ICC != 0 {
                return to_peer(ctx, &dst.mac, &net.gateway_mac, dst.ifindex);
            }
            // icc=false: only the exact ports opened by --link (and their replies, via CT).
            let lk = LinkKey { src: p.saddr, dst: p.daddr, port: p.dport, proto: p.proto, _pad: 0 };
            // SAFETY: read-only lookup.
            if p.has_ports && unsafe { LINKS.get(&lk).is_some() } {
                // Both directions peer to peer, never through the bridge (where br_netfilter
                // and a FORWARD policy of DROP would see them): a layer-2 hop, TTL untouched.
                let mut same = ct_value! {
                    saddr: p.saddr,
                    daddr: p.daddr,
                    sport: p.sport,
                    dport: p.dport,
                    action: CT_ACT_PEER,
                    flags: CT_F_L2,
                    ifindex: dst.ifindex,
                    dmac: dst.mac,
                    smac: src.mac,
                };
                let rk = conntrack::reversed(&k);
                let mut rev = ct_value! {
                    saddr: p.daddr,
                    daddr: p.saddr,
                    sport: p.dport,
                    dport: p.sport,
                    action: CT_ACT_PEER,
                    flags: CT_F_L2,
                    ifindex: here,
                    dmac: src.mac,
                    smac: dst.mac,
                };
                insert_pair(&k, &mut same, &rk, &mut rev);
                conntrack::frag_peer(&p, dst.ifindex, &dst.mac, &src.mac);
                return to_peer(ctx, &dst.mac, &net.gateway_mac, dst.ifindex);
            }
            stats::count_drop(DropReason::Icc);
            return SHOT;
        }

        // icc=false: no subnet or limited broadcast, no multicast between sandboxes (the
        // bridge would flood it to every port).
        if net.flags & NET_F_ICC == 0
            && (p.daddr == net.subnet | !net.mask || p.daddr == u32::MAX || p.daddr & 0xf0 == 0xe0)
        {
            stats::count_drop(DropReason::Icc);
            return SHOT;
        }

        // Leaving the host.
        if net.flags & NET_F_INTERNAL != 0 {
            stats::count_drop(DropReason::Isolation);
            return SHOT;
        }
        // Into one of Docker's own bridge networks (docker0, `br-<12 hex>`): isolated from
        // netd's networks as Docker isolates its bridge networks from each other.
        let egress = fib_egress(ctx, &p);
        if egress.is_some_and(is_foreign_bridge) {
            stats::count_drop(DropReason::Isolation);
            return SHOT;
        }
        if p.later_fragment
            && net.flags & NET_F_MASQUERADE != 0
            && (p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP || p.proto == IPPROTO_ICMP)
        {
            // Its first fragment was not translated here: it would leave with the sandbox's
            // address.
            return conntrack::frag_unknown();
        }
        // A routed hop the packet cannot make (TTL exceeded): the kernel answers it from the
        // gateway, untranslated, as it does for Docker (traceroute's first hop).
        if !p.has_ports || p.later_fragment || p.ttl <= 1 {
            return OK;
        }
        if net.flags & NET_F_MASQUERADE == 0 {
            // No NAT (routed mode, or masquerade off): still forwarded by BPF, tracked so the
            // replies come back straight into the sandbox.
            let mut same = ct_value! {
                saddr: p.saddr,
                daddr: p.daddr,
                sport: p.sport,
                dport: p.dport,
                action: CT_ACT_FIB,
            };
            let rk = conntrack::reversed(&k);
            let mut rev = ct_value! {
                saddr: p.daddr,
                daddr: p.saddr,
                sport: p.dport,
                dport: p.sport,
                action: CT_ACT_PEER,
                ifindex: here,
                dmac: src.mac,
                smac: net.gateway_mac,
            };
            if !insert_pair(&k, &mut same, &rk, &mut rev) {
                return SHOT;
            }
            return APPLY_NEW;
        }
        masquerade(p, &k, egress, here, &src.mac, &net.gateway_mac)
    }

    /// Egress of a netd bridge: what the host routes into it. Packets routed in from one of
    /// Docker's own bridges (the ingress device of a forwarded packet is the bridge it came
    /// up through) are dropped: Docker's FORWARD rules accept `-i docker0 ! -o docker0`, and
    /// nothing else of netd sees them. Host-originated packets have no ingress device.
    ///
    /// One exception, as with Docker's userland proxy: the replies of a flow a sandbox started to
    /// one of the host's addresses, which netfilter DNATed to a port Docker publishes on its
    /// bridge (`HOST_BOUND_V4`, recorded by `netd_from_container`; the reply arrives here after
    /// netfilter's un-DNAT, from the address the sandbox connected to).
    #[classifier]
    pub fn netd_to_bridge(ctx: TcContext) -> i32 {
        let v = to_bridge(&ctx);
        crate::monitor::observe(ctx.skb.skb, v, ProgId::ToBridge as u32, false)
    }

    #[inline(always)]
    fn to_bridge(ctx: &TcContext) -> i32 {
        stats::count_prog(ProgId::ToBridge, ctx.len() as u64);
        let from = unsafe { (*ctx.skb.skb).ingress_ifindex };
        if from != 0 && is_foreign_bridge(from) {
            let mut p = Pkt::default();
            if parse_tc(ctx, &mut p)
                && p.has_ports
                && p.proto != IPPROTO_ICMP
                && is_host_addr(p.saddr)
                // SAFETY: read-only lookup.
                && unsafe { HOST_BOUND_V4.get(&key_of(&p)).is_some() }
            {
                return OK;
            }
            stats::count_drop(DropReason::Isolation);
            return SHOT;
        }
        OK
    }

    /// Flows sandboxes started to one of the host's addresses on a port netd does not publish,
    /// keyed by their reply tuple (see `netd_to_bridge`). Not pinned: a restarted daemon's
    /// programs start empty, and a flow's next packet from the sandbox records it again.
    #[map(name = "HOST_BOUND_V4")]
    static HOST_BOUND_V4: LruHashMap<CtKey, u8> = LruHashMap::with_max_entries(16_384, 0);

    /// Ingress of Docker's own bridges (docker0, `br-<12 hex>`): what Docker's containers send
    /// up to the host. A connection to a port netd publishes, through one of the host's
    /// addresses, is translated as if it came from the uplink: Docker's containers reach ports
    /// published on other networks through the host's addresses (its userland proxy, on by
    /// default, relays them). Nothing else is touched here; the isolation of netd's networks
    /// is on their side (`netd_from_container`, `netd_to_bridge`).
    #[classifier]
    pub fn netd_from_foreign_bridge(ctx: TcContext) -> i32 {
        let v = from_foreign_bridge(&ctx);
        crate::monitor::observe(ctx.skb.skb, v, ProgId::FromForeignBridge as u32, true)
    }

    #[inline(always)]
    fn from_foreign_bridge(ctx: &TcContext) -> i32 {
        stats::count_prog(ProgId::FromForeignBridge, ctx.len() as u64);
        let mut slot = MaybeUninit::<Pkt>::uninit();
        if !parse_tc(ctx, slot.as_mut_ptr()) {
            return OK;
        }
        // SAFETY: written whole by `parse_tc`.
        let p = unsafe { &mut *slot.as_mut_ptr() };
        if p.later_fragment {
            return conntrack::apply_fragment(ctx, p).unwrap_or(OK);
        }
        if !p.has_ports || p.proto == IPPROTO_ICMP {
            return OK;
        }
        let k = key_of(p);
        if let Some(verdict) = conntrack::established(ctx, p, &k) {
            return verdict;
        }
        if !is_host_addr(p.daddr) || is_loopback(p.daddr) {
            return OK;
        }
        dnat_published(ctx, p, &k)
    }

    /// Hand a packet straight to a sandbox on the same bridge (no bridge, no netfilter: a
    /// FORWARD policy of DROP with bridge-nf-call-iptables cannot touch it).
    #[inline(always)]
    fn to_peer(ctx: &TcContext, dmac: &[u8; 6], smac: &[u8; 6], ifindex: u32) -> i32 {
        let _ = smac;
        // Keep the sender's source MAC: the receiver learns the real neighbour.
        if ctx.store(0, dmac, 0).is_err() {
            return SHOT;
        }
        // SAFETY: plain helper call.
        unsafe { aya_ebpf::helpers::generated::bpf_redirect_peer(ifindex, 0) as i32 }
    }

    /// Source NAT to the uplink's address for a new flow leaving by an uplink ([`APPLY_NEW`]
    /// once its entries are in).
    #[inline(always)]
    fn masquerade(p: &mut Pkt, k: &CtKey, egress: Option<u32>, here: u32, src_mac: &[u8; 6], gw_mac: &[u8; 6]) -> i32 {
        let Some(egress) = egress else { return OK };
        // SAFETY: read-only lookup.
        let Some(up) = (unsafe { UPLINKS.get(&egress).copied() }) else { return OK };
        if up.addr == 0 {
            return OK; // an uplink without an address yet
        }
        let Some(port) = pick_port(p.proto, p.daddr, up.addr, p.dport, p.sport, true) else {
            stats::count_drop(DropReason::SnatExhausted);
            return SHOT;
        };
        let mut fwd = ct_value! {
            saddr: up.addr,
            daddr: p.daddr,
            sport: port,
            dport: p.dport,
            action: CT_ACT_FIB,
        };
        let rk = conntrack::ct_key(p.daddr, up.addr, p.dport, port, p.proto);
        let mut rev = ct_value! {
            saddr: p.daddr,
            daddr: p.saddr,
            sport: p.dport,
            dport: p.sport,
            action: CT_ACT_PEER,
            ifindex: here,
            dmac: *src_mac,
            smac: *gw_mac,
        };
        if !insert_pair(k, &mut fwd, &rk, &mut rev) {
            return SHOT;
        }
        APPLY_NEW
    }

    /// The egress ifindex the FIB picks for this packet (before translation).
    #[inline(always)]
    fn fib_egress(ctx: &TcContext, p: &Pkt) -> Option<u32> {
        use aya_ebpf::{bindings::bpf_fib_lookup, helpers::generated::bpf_fib_lookup as fib_lookup};
        // In the per-CPU scratch slot (off the stack); `apply` fills it afresh afterwards.
        let fib = SCRATCH_FIB.get_ptr_mut(0)?;
        // SAFETY: per-CPU map value, valid for this program run.
        let fib = unsafe { &mut *fib };
        conntrack::zero_fib(fib);
        fib.family = 2;
        fib.ifindex = unsafe { (*ctx.skb.skb).ingress_ifindex };
        fib.__bindgen_anon_3.ipv4_src = p.saddr;
        fib.__bindgen_anon_4.ipv4_dst = p.daddr;
        // BPF_FIB_LOOKUP_SKIP_NEIGH (1 << 3): only the route matters here.
        let rc = unsafe { fib_lookup(ctx.skb.skb.cast(), fib, core::mem::size_of::<bpf_fib_lookup>() as i32, 1 << 3) };
        if rc == 0 || rc == 7 { Some(fib.ifindex) } else { None }
    }

    /// Per socket: the address a UDP client sent to before translation (for recvmsg4).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SockRevKey {
        pub cookie: u64,
        pub addr: u32,
        pub port: u16,
        pub _pad: u16,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SockRevValue {
        pub addr: u32,
        pub port: u16,
        pub _pad: u16,
    }

    #[map(name = "SOCK_REV_V4")]
    static SOCK_REV_V4: LruHashMap<SockRevKey, SockRevValue> = LruHashMap::with_max_entries(65_536, 0);

    /// Translate a socket's destination when it targets a published port on a host address.
    #[inline(always)]
    fn sock_translate(ctx: &SockAddrContext, prog: ProgId, remember: bool) -> i32 {
        if !in_daemon_netns(ctx) {
            return 1;
        }
        stats::count_prog(prog, 0);
        // SAFETY: the context pointer is valid for the program's run.
        let sa = unsafe { &mut *ctx.sock_addr };
        let proto = sa.protocol as u8;
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return 1;
        }
        let ip = sa.user_ip4;
        let port = sa.user_port as u16;
        if !is_loopback(ip) && !is_host_addr(ip) {
            return 1;
        }
        let Some(pb) = published(proto, ip, port) else { return 1 };
        sa.user_ip4 = pb.addr;
        sa.user_port = pb.port as u32;
        if remember {
            // SAFETY: plain helper call on the valid context.
            let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
            let k = SockRevKey { cookie, addr: pb.addr, port: pb.port, _pad: 0 };
            let _ = SOCK_REV_V4.insert(&k, &SockRevValue { addr: ip, port, _pad: 0 }, 0);
        }
        1
    }

    /// Per socket: the address an IPv6 UDP client sent to before translation (for recvmsg6).
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SockRevKey6 {
        pub cookie: u64,
        pub addr: [u32; 4],
        pub port: u16,
        pub _pad: [u16; 3],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct SockRevValue6 {
        pub addr: [u32; 4],
        pub port: u16,
        pub _pad: u16,
    }

    #[map(name = "SOCK_REV_V6")]
    static SOCK_REV_V6: LruHashMap<SockRevKey6, SockRevValue6> = LruHashMap::with_max_entries(65_536, 0);

    /// `::ffff:0:0/96` (an IPv4 address on a dual-stack socket): its IPv4 address.
    #[inline(always)]
    fn v4_mapped(a: &[u32; 4]) -> Option<u32> {
        (a[0] == 0 && a[1] == 0 && a[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])).then_some(a[3])
    }

    /// The connect4/sendmsg4 translation for IPv6 sockets: `::1` or a host v6 address to the
    /// sandbox of a `PUBLISHED_V6` binding; a v4-mapped address (a dual-stack socket reaching
    /// an IPv4 host address) through `PUBLISHED_V4`, to the sandbox's v4-mapped address, as the
    /// kernel then talks IPv4 for the socket (the v4 hooks do not run for it).
    #[inline(always)]
    fn sock_translate6(ctx: &SockAddrContext, prog: ProgId, remember: bool, connect: bool) -> i32 {
        if !in_daemon_netns(ctx) {
            return 1;
        }
        stats::count_prog(prog, 0);
        // SAFETY: the context pointer is valid for the program's run.
        let sa = unsafe { &mut *ctx.sock_addr };
        let proto = sa.protocol as u8;
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return 1;
        }
        let ip = [sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]];
        let port = sa.user_port as u16;
        // SAFETY: plain helper call on the valid context (only when a translation is kept).
        let cookie = || unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
        if let Some(v4) = v4_mapped(&ip) {
            if !is_loopback(v4) && !is_host_addr(v4) {
                return 1;
            }
            let Some(pb) = published(proto, v4, port) else { return 1 };
            sa.user_ip6[3] = pb.addr;
            sa.user_port = pb.port as u32;
            if remember {
                let k = SockRevKey { cookie: cookie(), addr: pb.addr, port: pb.port, _pad: 0 };
                let _ = SOCK_REV_V4.insert(&k, &SockRevValue { addr: v4, port, _pad: 0 }, 0);
            }
            return 1;
        }
        if !crate::v6::maps::is_loopback6(&ip) && !crate::v6::maps::is_host_addr6(&ip) {
            return 1;
        }
        let Some(pb) = crate::v6::maps::published6(proto, &ip, port) else { return 1 };
        let (to, to_port) = (pb.addr, pb.port);
        // A v4-only sandbox's binding (NAT46): its v4-mapped address, so a dual-stack socket
        // talks IPv4 to the sandbox, as a v4 client would (an IPV6_V6ONLY socket cannot:
        // connect fails with ENETUNREACH). Not for unconnected datagrams: the kernel refuses a
        // sendmsg6 rewritten to a v4-mapped address (ENOTSUPP), so they go untranslated.
        if !connect && v4_mapped(&to).is_some() {
            return 1;
        }
        sa.user_ip6[0] = to[0];
        sa.user_ip6[1] = to[1];
        sa.user_ip6[2] = to[2];
        sa.user_ip6[3] = to[3];
        sa.user_port = to_port as u32;
        if remember {
            let k = SockRevKey6 { cookie: cookie(), addr: to, port: to_port, _pad: [0; 3] };
            let _ = SOCK_REV_V6.insert(&k, &SockRevValue6 { addr: ip, port, _pad: 0 }, 0);
        }
        1
    }

    #[cgroup_sock_addr(connect6)]
    pub fn netd_sock_connect6(ctx: SockAddrContext) -> i32 {
        sock_translate6(&ctx, ProgId::SockConnect6, true, true)
    }

    /// (A v4-mapped destination never gets here: the kernel sends it as IPv4, through sendmsg4.)
    #[cgroup_sock_addr(sendmsg6)]
    pub fn netd_sock_sendmsg6(ctx: SockAddrContext) -> i32 {
        sock_translate6(&ctx, ProgId::SockSendmsg6, true, false)
    }

    /// UDP replies on IPv6 sockets (v4-mapped ones too, remembered by sendmsg4 or connect6).
    #[cgroup_sock_addr(recvmsg6)]
    pub fn netd_sock_recvmsg6(ctx: SockAddrContext) -> i32 {
        if !in_daemon_netns(&ctx) {
            return 1;
        }
        stats::count_prog(ProgId::SockRecvmsg6, 0);
        // SAFETY: as above.
        let sa = unsafe { &mut *ctx.sock_addr };
        let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
        let ip = [sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]];
        let port = sa.user_port as u16;
        if let Some(v4) = v4_mapped(&ip) {
            // A NAT46 binding reached over v6 (`::1`, a host v6 address) by a connected socket.
            let k6 = SockRevKey6 { cookie, addr: ip, port, _pad: [0; 3] };
            // SAFETY: read-only lookup, copied out.
            if let Some(v) = unsafe { SOCK_REV_V6.get(&k6).copied() } {
                sa.user_ip6[0] = v.addr[0];
                sa.user_ip6[1] = v.addr[1];
                sa.user_ip6[2] = v.addr[2];
                sa.user_ip6[3] = v.addr[3];
                sa.user_port = v.port as u32;
                return 1;
            }
            let k = SockRevKey { cookie, addr: v4, port, _pad: 0 };
            // SAFETY: read-only lookup.
            if let Some(v) = unsafe { SOCK_REV_V4.get(&k) } {
                sa.user_ip6[3] = v.addr;
                sa.user_port = v.port as u32;
            }
            return 1;
        }
        let k = SockRevKey6 { cookie, addr: ip, port, _pad: [0; 3] };
        // SAFETY: read-only lookup, copied out.
        if let Some(v) = unsafe { SOCK_REV_V6.get(&k).copied() } {
            sa.user_ip6[0] = v.addr[0];
            sa.user_ip6[1] = v.addr[1];
            sa.user_ip6[2] = v.addr[2];
            sa.user_ip6[3] = v.addr[3];
            sa.user_port = v.port as u32;
        }
        1
    }

    #[cgroup_sock_addr(connect4)]
    pub fn netd_sock_connect4(ctx: SockAddrContext) -> i32 {
        // UDP sockets may connect() and then recv: remember for them too.
        sock_translate(&ctx, ProgId::SockConnect4, true)
    }

    #[cgroup_sock_addr(sendmsg4)]
    pub fn netd_sock_sendmsg4(ctx: SockAddrContext) -> i32 {
        sock_translate(&ctx, ProgId::SockSendmsg4, true)
    }

    /// UDP replies: show the client the address it sent to, not the sandbox's.
    #[cgroup_sock_addr(recvmsg4)]
    pub fn netd_sock_recvmsg4(ctx: SockAddrContext) -> i32 {
        if !in_daemon_netns(&ctx) {
            return 1;
        }
        stats::count_prog(ProgId::SockRecvmsg4, 0);
        // SAFETY: as above.
        let sa = unsafe { &mut *ctx.sock_addr };
        let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
        let k = SockRevKey { cookie, addr: sa.user_ip4, port: sa.user_port as u16, _pad: 0 };
        // SAFETY: read-only lookup.
        if let Some(v) = unsafe { SOCK_REV_V4.get(&k) } {
            sa.user_ip4 = v.addr;
            sa.user_port = v.port as u32;
        }
        1
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
