//! `BPF_PROG_TEST_RUN` on the NAT programs: frames in, rewritten frames out, checksums verified
//! from scratch, conntrack entries checked.
use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::maps::{HashMap as BpfHashMap, MapData};
use netd::{
    dataplane::ebpf::{be_addr, be_port},
    ebpf::{Loaded, test_run},
};
use netd_common::{
    CT_ACT_PEER, CtKey, CtValue, EndpointInfo, NET_F_ICC, NET_F_MASQUERADE, NET_F_PROTECT, NetworkInfo, PublishedKey,
    PublishedValue, SNAT_PORT_MIN, map_names as m, prog_names as p,
};
use netd_tests::require_root;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const HOST: [u8; 4] = [198, 51, 100, 1];
const CLIENT: [u8; 4] = [198, 51, 100, 2];
const SB: [u8; 4] = [172, 17, 0, 2];
const SB2: [u8; 4] = [172, 17, 0, 3];
const GW: [u8; 4] = [172, 17, 0, 1];
const SB_MAC: [u8; 6] = [0x02, 0x42, 172, 17, 0, 2];
const GW_MAC: [u8; 6] = [0x02, 0x42, 0xaa, 0xbb, 0xcc, 0xdd];

fn csum(data: &[u8], mut s: u32) -> u16 {
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Ethernet + IPv4 (IHL words) + L4 with valid checksums.
fn frame(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, ihl: u8, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    match proto {
        6 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&1u32.to_be_bytes());
            l4.extend_from_slice(&0u32.to_be_bytes());
            l4.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]); // SYN
        }
        17 => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        1 => {
            // echo request (type 8) with id = sport, or reply (type 0) with id = dport
            let (ty, id) = if sport != 0 { (8u8, sport) } else { (0u8, dport) };
            l4.extend_from_slice(&[ty, 0, 0, 0]);
            l4.extend_from_slice(&id.to_be_bytes());
            l4.extend_from_slice(&7u16.to_be_bytes());
        }
        _ => unreachable!(),
    }
    l4.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    match proto {
        6 => {
            let c = csum(&[pseudo.as_slice(), &l4].concat(), 0);
            l4[16..18].copy_from_slice(&c.to_be_bytes());
        }
        17 => {
            let c = csum(&[pseudo.as_slice(), &l4].concat(), 0);
            l4[6..8].copy_from_slice(&c.to_be_bytes());
        }
        _ => {
            let c = csum(&l4, 0);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
        }
    }
    let hl = ihl as usize * 4;
    let mut ip = vec![0u8; hl];
    ip[0] = 0x40 | ihl;
    ip[2..4].copy_from_slice(&((hl + l4.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    for b in ip.iter_mut().skip(20) {
        *b = 1; // NOP options
    }
    let c = csum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}

struct Parsed {
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    dmac: [u8; 6],
}

/// Parse and verify every checksum of a frame from scratch.
fn check(f: &[u8]) -> Parsed {
    let ip = &f[14..];
    let hl = (ip[0] & 0x0f) as usize * 4;
    assert_eq!(csum(&ip[..hl], 0), 0, "IPv4 header checksum");
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let l4 = &ip[hl..total];
    let proto = ip[9];
    let (src, dst) = (<[u8; 4]>::try_from(&ip[12..16]).unwrap(), <[u8; 4]>::try_from(&ip[16..20]).unwrap());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let (sport, dport) = match proto {
        6 => {
            assert_eq!(csum(&[pseudo.as_slice(), l4].concat(), 0), 0, "TCP checksum");
            (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]))
        }
        17 => {
            if l4[6..8] != [0, 0] {
                assert_eq!(csum(&[pseudo.as_slice(), l4].concat(), 0), 0, "UDP checksum");
            }
            (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]))
        }
        1 => {
            assert_eq!(csum(l4, 0), 0, "ICMP checksum");
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            if l4[0] == 8 { (id, 0) } else { (0, id) }
        }
        _ => (0, 0),
    };
    Parsed { src, dst, sport, dport, dmac: f[0..6].try_into().unwrap() }
}

fn ip(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

/// Programs loaded, maps seeded: 0.0.0.0:8080/tcp and :5353/udp -> 172.17.0.2:7000.
fn setup() -> Loaded {
    let mut l = Loaded::load().expect("load");
    {
        let mut h: BpfHashMap<&mut MapData, u32, u32> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::HOST_ADDRS).unwrap()).unwrap();
        h.insert(be_addr(ip(HOST)), 1, 0).unwrap();
        h.insert(be_addr(ip(GW)), 1, 0).unwrap();
    }
    {
        let mut pm: BpfHashMap<&mut MapData, PublishedKey, PublishedValue> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::PUBLISHED_V4).unwrap()).unwrap();
        for (proto, hp) in [(6u8, 8080u16), (17, 5353)] {
            let k = PublishedKey { addr: 0, port: be_port(hp), proto, _pad: 0 };
            let v = PublishedValue { addr: be_addr(ip(SB)), port: be_port(7000), _pad: 0, net: 1, stats_slot: 0 };
            pm.insert(k, v, 0).unwrap();
        }
    }
    {
        let mut e: BpfHashMap<&mut MapData, u32, EndpointInfo> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::ENDPOINTS).unwrap()).unwrap();
        e.insert(be_addr(ip(SB)), EndpointInfo { ifindex: 42, net: 1, mac: SB_MAC, _pad: [0; 2] }, 0).unwrap();
        e.insert(
            be_addr(ip(SB2)),
            EndpointInfo { ifindex: 43, net: 1, mac: [2, 0x42, 172, 17, 0, 3], _pad: [0; 2] },
            0,
        )
        .unwrap();
    }
    {
        let mut n: BpfHashMap<&mut MapData, u32, NetworkInfo> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::NETWORKS).unwrap()).unwrap();
        let info = NetworkInfo {
            subnet: be_addr(Ipv4Addr::new(172, 17, 0, 0)),
            mask: be_addr(Ipv4Addr::new(255, 255, 0, 0)),
            gateway: be_addr(ip(GW)),
            bridge_ifindex: 3,
            gateway_mac: GW_MAC,
            _pad: [0; 2],
            flags: NET_F_ICC | NET_F_MASQUERADE | NET_F_PROTECT,
        };
        n.insert(1, info, 0).unwrap();
    }
    l
}

fn ct(l: &Loaded) -> Vec<(CtKey, CtValue)> {
    let c: BpfHashMap<&MapData, CtKey, CtValue> = BpfHashMap::try_from(l.ebpf.map(m::CT_V4).unwrap()).unwrap();
    c.iter().filter_map(Result::ok).collect()
}

#[test]
fn dnat_and_reverse_nat_keep_checksums_valid() {
    require_root!();
    let l = setup();
    for (proto, hp) in [(6u8, 8080u16), (17, 5353)] {
        let f = frame(proto, CLIENT, HOST, 40000, hp, 5, b"payload");
        let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &f).unwrap();
        assert_eq!(r.retval, TC_ACT_REDIRECT, "redirected into the sandbox (bpf_redirect_peer)");
        let o = check(&r.data_out);
        assert_eq!((o.src, o.dst, o.sport, o.dport), (CLIENT, SB, 40000, 7000), "proto {proto}");
        assert_eq!(o.dmac, SB_MAC);
        // The reply through the sandbox veth is translated back to the published address.
        let reply = frame(proto, SB, CLIENT, 7000, 40000, 5, b"answer");
        let r = test_run(l.prog_fd(p::FROM_CONTAINER).unwrap(), &reply).unwrap();
        let o = check(&r.data_out);
        assert_eq!((o.src, o.dst, o.sport, o.dport), (HOST, CLIENT, hp, 40000), "reverse proto {proto}");
    }
    let entries = ct(&l);
    assert_eq!(entries.len(), 4, "two directions per flow: {entries:?}");
    let fwd = entries.iter().find(|(k, _)| k.dport == be_port(8080)).unwrap();
    assert_eq!(fwd.1.action, CT_ACT_PEER);
    assert_eq!(fwd.1.ifindex, 42);
    // The published-port counter moved.
    let s = l.prog_stats().unwrap();
    assert!(s[p::FROM_NETDEV].packets >= 2);
}

#[test]
fn udp_without_checksum_stays_without() {
    require_root!();
    let l = setup();
    let mut f = frame(17, CLIENT, HOST, 40001, 5353, 5, b"x");
    let l4 = 14 + 20;
    f[l4 + 6] = 0;
    f[l4 + 7] = 0;
    let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &f).unwrap();
    assert_eq!(&r.data_out[l4 + 6..l4 + 8], &[0, 0], "a zero UDP checksum means none and must stay zero");
    let o = check(&r.data_out);
    assert_eq!((o.dst, o.dport), (SB, 7000));
}

#[test]
fn ip_options_truncation_and_fragments() {
    require_root!();
    let l = setup();
    // IHL 7 (8 bytes of options): the L4 header is found after them.
    let f = frame(6, CLIENT, HOST, 40002, 8080, 7, b"opt");
    let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &f).unwrap();
    let o = check(&r.data_out);
    assert_eq!((o.dst, o.dport), (SB, 7000));
    // Truncated inside the TCP header: not translated, not crashed, counted.
    let mut t = frame(6, CLIENT, HOST, 40003, 8080, 5, b"");
    t.truncate(14 + 20 + 2);
    let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &t).unwrap();
    assert_eq!(r.retval, TC_ACT_OK);
    assert_eq!(r.data_out, t);
    assert!(l.drop_stats().unwrap()["malformed"] >= 1);
    // A non-first fragment whose payload happens to look like ports 40000 -> 8080: untouched
    // (and, its first fragment never seen, dropped: see later_fragments_follow_...).
    let mut frag = frame(17, CLIENT, HOST, 40000, 8080, 5, b"more data");
    frag[14 + 6] = 0x00;
    frag[14 + 7] = 0x10; // fragment offset 16 (x8 bytes)
    let hl = 20;
    frag[14 + 10] = 0;
    frag[14 + 11] = 0;
    let c = csum(&frag[14..14 + hl], 0);
    frag[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &frag).unwrap();
    assert_eq!(r.retval, TC_ACT_SHOT);
    assert_eq!(r.data_out, frag, "a later fragment has no L4 header to translate");
}

#[test]
fn icmp_echo_reply_id_is_translated_back() {
    require_root!();
    let mut l = setup();
    // A masqueraded ping: the host sent id 61000 for the sandbox's id 7 (seeded here).
    let key = CtKey {
        saddr: be_addr(ip(CLIENT)),
        daddr: be_addr(ip(HOST)),
        sport: 0,
        dport: be_port(61000),
        proto: 1,
        _pad: [0; 3],
    };
    let val = CtValue {
        saddr: be_addr(ip(CLIENT)),
        daddr: be_addr(ip(SB)),
        sport: 0,
        dport: be_port(7),
        action: CT_ACT_PEER,
        ifindex: 42,
        dmac: SB_MAC,
        smac: GW_MAC,
        ..Default::default()
    };
    {
        let mut c: BpfHashMap<&mut MapData, CtKey, CtValue> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::CT_V4).unwrap()).unwrap();
        c.insert(key, val, 0).unwrap();
    }
    let f = frame(1, CLIENT, HOST, 0, 61000, 5, b"pingdata");
    let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &f).unwrap();
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let o = check(&r.data_out);
    assert_eq!((o.src, o.dst, o.dport), (CLIENT, SB, 7), "echo reply id back to the sandbox's");
}

#[test]
fn hairpin_snat_picks_another_port_on_collision() {
    require_root!();
    let mut l = setup();
    // Occupy the reply tuple the kept source port would need (sandbox:7000 -> gateway:45000).
    let busy = CtKey {
        saddr: be_addr(ip(SB)),
        daddr: be_addr(ip(GW)),
        sport: be_port(7000),
        dport: be_port(45000),
        proto: 6,
        _pad: [0; 3],
    };
    {
        let mut c: BpfHashMap<&mut MapData, CtKey, CtValue> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::CT_V4).unwrap()).unwrap();
        c.insert(busy, CtValue { action: netd_common::CT_ACT_HOSTFLOW, ..Default::default() }, 0).unwrap();
    }
    // Sandbox .3 reaches the host's published port 8080 (its neighbour .2 serves it).
    let f = frame(6, SB2, HOST, 45000, 8080, 5, b"hairpin");
    let r = test_run(l.prog_fd(p::FROM_CONTAINER).unwrap(), &f).unwrap();
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let o = check(&r.data_out);
    assert_eq!((o.src, o.dst, o.dport), (GW, SB, 7000), "DNAT to the target, SNAT to the gateway");
    let hairpin_range =
        |p: u16| p >= SNAT_PORT_MIN || (netd_common::HAIRPIN_LOW_MIN..=netd_common::HAIRPIN_LOW_MAX).contains(&p);
    assert!(hairpin_range(o.sport), "collision: a port from the hairpin SNAT ranges, got {}", o.sport);
    // Even without a collision hairpin never keeps the source port: the host's own connections
    // to sandboxes come from the gateway address with ephemeral ports (a regression the bench
    // found: loopback connections failed once hairpin flows had taken their tuples).
    let f = frame(6, SB2, HOST, 45001, 8080, 5, b"hairpin");
    let r = test_run(l.prog_fd(p::FROM_CONTAINER).unwrap(), &f).unwrap();
    assert!(hairpin_range(check(&r.data_out).sport));
    // Never the host's ephemeral range, over many new flows.
    for sport in 45002..45200 {
        let f = frame(6, SB2, HOST, sport, 8080, 5, b"hairpin");
        let p = check(&test_run(l.prog_fd(p::FROM_CONTAINER).unwrap(), &f).unwrap().data_out).sport;
        assert!(hairpin_range(p), "{p}");
    }
}

#[test]
fn a_syn_on_a_closed_flow_starts_a_new_translation() {
    require_root!();
    let l = setup();
    let ct = |l: &Loaded, k: &CtKey| -> Option<CtValue> {
        let c: BpfHashMap<&MapData, CtKey, CtValue> = BpfHashMap::try_from(l.ebpf.map(m::CT_V4).unwrap()).unwrap();
        c.get(k, 0).ok()
    };
    let fwd = CtKey {
        saddr: be_addr(ip(SB2)),
        daddr: be_addr(ip(HOST)),
        sport: be_port(45100),
        dport: be_port(8080),
        proto: 6,
        _pad: [0; 3],
    };
    let rev = |port: u16| CtKey {
        saddr: be_addr(ip(SB)),
        daddr: be_addr(ip(GW)),
        sport: be_port(7000),
        dport: be_port(port),
        proto: 6,
        _pad: [0; 3],
    };
    // Hairpin connection, then its FIN.
    let syn = frame(6, SB2, HOST, 45100, 8080, 5, b"");
    let r = test_run(l.prog_fd(p::FROM_CONTAINER).unwrap(), &syn).unwrap();
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let first = check(&r.data_out).sport;
    assert!(ct(&l, &rev(first)).is_some(), "reply direction recorded");
    let mut fin = syn.clone();
    fin[14 + 20 + 13] = 0x11; // FIN|ACK (the program rewrites checksums incrementally)
    assert_eq!(test_run(l.prog_fd(p::FROM_CONTAINER).unwrap(), &fin).unwrap().retval, TC_ACT_REDIRECT);
    assert_ne!(ct(&l, &fwd).unwrap().flags & netd_common::CT_F_CLOSING, 0, "FIN marks the flow closing");
    // The client reuses its source port: a new connection, not the closed one's translation
    // (whose reply tuple the SNAT allocator may already have given to another flow).
    let r = test_run(l.prog_fd(p::FROM_CONTAINER).unwrap(), &syn).unwrap();
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let second = check(&r.data_out).sport;
    let v = ct(&l, &fwd).expect("new forward entry");
    assert_eq!(v.flags & netd_common::CT_F_CLOSING, 0, "a fresh entry, not the closed one");
    assert_eq!(v.sport, be_port(second));
    let back = ct(&l, &rev(second)).expect("new reply entry");
    assert_eq!((back.daddr, back.dport), (fwd.saddr, fwd.sport), "reply entry points at the client");
    if second != first {
        assert!(ct(&l, &rev(first)).is_none(), "the closed flow's reply tuple went with it");
    }
}

#[test]
fn protections_in_xdp() {
    require_root!();
    let l = setup();
    const XDP_DROP: u32 = 1;
    const XDP_PASS: u32 = 2;
    let direct = frame(6, CLIENT, SB, 40000, 7000, 5, b"");
    assert_eq!(test_run(l.prog_fd(p::XDP_UPLINK).unwrap(), &direct).unwrap().retval, XDP_DROP);
    let lo = frame(6, CLIENT, [127, 0, 0, 1], 40000, 8080, 5, b"");
    assert_eq!(test_run(l.prog_fd(p::XDP_UPLINK).unwrap(), &lo).unwrap().retval, XDP_DROP);
    let ok = frame(6, CLIENT, HOST, 40000, 8080, 5, b"");
    assert_eq!(test_run(l.prog_fd(p::XDP_UPLINK).unwrap(), &ok).unwrap().retval, XDP_PASS);
    let d = l.drop_stats().unwrap();
    assert_eq!((d["direct_to_sandbox"], d["loopback_not_lo"]), (1, 1));
}

#[test]
fn conntrack_gc_expires_idle_and_closed_flows_in_pairs() {
    require_root!();
    use netd::dataplane::{
        Dataplane,
        ebpf::{Ebpf, monotonic_ns},
    };
    let mut l = setup();
    let now = monotonic_ns();
    let seen = netd_common::CT_F_SEEN;
    let pair = |proto: u8, sport: u16, age_s: u64, flags: u8| {
        let k = CtKey {
            saddr: be_addr(ip(CLIENT)),
            daddr: be_addr(ip(HOST)),
            sport: be_port(sport),
            dport: be_port(8080),
            proto,
            _pad: [0; 3],
        };
        let v = CtValue {
            saddr: k.saddr,
            daddr: be_addr(ip(SB)),
            sport: k.sport,
            dport: be_port(7000),
            action: CT_ACT_PEER,
            flags,
            last_seen_ns: now - age_s * 1_000_000_000,
            ..Default::default()
        };
        let rk = CtKey { saddr: v.daddr, daddr: v.saddr, sport: v.dport, dport: v.sport, proto, _pad: [0; 3] };
        let rv = CtValue {
            saddr: k.daddr,
            daddr: k.saddr,
            sport: k.dport,
            dport: k.sport,
            action: netd_common::CT_ACT_FIB,
            // The reply side: seen when the flow was answered; no ACK, FIN or RST of its own.
            flags: (flags & netd_common::CT_F_SEEN) | netd_common::CT_F_REPLY,
            last_seen_ns: now - age_s * 1_000_000_000,
            ..Default::default()
        };
        [(k, v), (rk, rv)]
    };
    {
        let mut c: BpfHashMap<&mut MapData, CtKey, CtValue> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::CT_V4).unwrap()).unwrap();
        for (k, v) in pair(17, 1000, 300, 0)
            .into_iter() // idle UDP: goes
            .chain(pair(17, 1001, 5, 0)) // fresh UDP: stays
            .chain(pair(6, 1002, 60, netd_common::CT_F_CLOSING | netd_common::CT_F_RST)) // reset TCP, 60 s ago: goes
            .chain(pair(6, 1003, 60, 0)) // unanswered SYN, 60 s: stays (SYN_SENT 120 s)
            .chain(pair(6, 1004, 130, 0)) // unanswered SYN, 130 s: goes
            .chain(pair(6, 1005, 200, seen | netd_common::CT_F_ACKED)) // established, 200 s idle: stays (5 days)
            .chain(pair(6, 1006, 60, seen | netd_common::CT_F_ACKED | netd_common::CT_F_CLOSING)) // half-closed, 60 s: stays
            .chain(pair(6, 1007, 130, seen | netd_common::CT_F_ACKED | netd_common::CT_F_CLOSING)) // half-closed, 130 s: goes
            .chain(pair(17, 1008, 60, 0)) // unanswered UDP, 60 s: goes (30 s)
            .chain(pair(17, 1009, 60, seen))
        // answered UDP, 60 s: stays (120 s)
        {
            c.insert(k, v, 0).unwrap();
        }
    }
    let mut dp = Ebpf::with_loaded(l);
    assert_eq!(
        dp.gc().unwrap(),
        10,
        "both directions of: the idle UDP flow, the reset TCP flow, the old unanswered SYN, the old half-closed \
         flow, the unanswered UDP flow"
    );
    assert_eq!(dp.gc().unwrap(), 0);
}

#[test]
fn later_fragments_follow_the_first_fragments_translation() {
    require_root!();
    let l = setup();
    let set_frag = |f: &mut Vec<u8>, id: u16, mf: bool, off8: u16| {
        f[14 + 4..14 + 6].copy_from_slice(&id.to_be_bytes());
        let v = (if mf { 0x2000 } else { 0 }) | off8;
        f[14 + 6..14 + 8].copy_from_slice(&v.to_be_bytes());
        f[14 + 10] = 0;
        f[14 + 11] = 0;
        let c = csum(&f[14..34], 0);
        f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    };
    // First fragment: UDP header + part of the payload, MF set.
    let mut first = frame(17, CLIENT, HOST, 40010, 5353, 5, &[b'a'; 64]);
    first[14 + 2..14 + 4].copy_from_slice(&((20 + 8 + 64) as u16).to_be_bytes());
    set_frag(&mut first, 0x4242, true, 0);
    let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &first).unwrap();
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    assert_eq!(&r.data_out[14 + 16..14 + 20], &SB, "first fragment DNATed");
    // A later fragment of the same datagram: no L4 header, same translation.
    let mut later = frame(17, CLIENT, HOST, 0x6262, 0x6262, 5, &[b'b'; 32]);
    set_frag(&mut later, 0x4242, false, 9);
    let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &later).unwrap();
    assert_eq!(r.retval, TC_ACT_REDIRECT, "delivered where the first fragment went");
    assert_eq!(&r.data_out[14 + 16..14 + 20], &SB, "later fragment's destination rewritten");
    assert_eq!(csum(&r.data_out[14..34], 0), 0, "IPv4 header checksum");
    assert_eq!(&r.data_out[34..], &later[34..], "its payload (no ports in it) untouched");
    // A later fragment of a datagram whose first fragment was never seen, to a host address:
    // it may belong to a translated flow, so it is dropped and counted, never passed on
    // untranslated (a BPF program cannot queue it until its first fragment comes).
    let before = l.drop_stats().unwrap()["frag_unknown"];
    let mut stray = later.clone();
    set_frag(&mut stray, 0x4343, false, 9);
    let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &stray).unwrap();
    assert_eq!(r.retval, TC_ACT_SHOT);
    assert_eq!(l.drop_stats().unwrap()["frag_unknown"], before + 1);
    // An untranslated first fragment to the host records a pass: its later fragments pass.
    let mut own = frame(17, CLIENT, HOST, 40011, 9999, 5, &[b'c'; 64]);
    own[14 + 2..14 + 4].copy_from_slice(&((20 + 8 + 64) as u16).to_be_bytes());
    set_frag(&mut own, 0x4444, true, 0);
    assert_eq!(test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &own).unwrap().retval, TC_ACT_OK);
    let mut own_later = later.clone();
    set_frag(&mut own_later, 0x4444, false, 9);
    let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &own_later).unwrap();
    assert_eq!((r.retval, r.data_out == own_later), (TC_ACT_OK, true), "the host's own fragments pass untouched");
}

/// A conntrack key from readable parts.
fn tuple(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, proto: u8) -> CtKey {
    CtKey {
        saddr: be_addr(ip(src)),
        daddr: be_addr(ip(dst)),
        sport: be_port(sport),
        dport: be_port(dport),
        proto,
        _pad: [0; 3],
    }
}

/// The reply direction of a translated entry `(k, v)`: keyed by the translated tuple reversed,
/// translating back to `k` reversed, with `base`'s action, flags and slot.
fn reply_entry(k: &CtKey, v: &CtValue, base: CtValue) -> (CtKey, CtValue) {
    let rk = CtKey { saddr: v.daddr, daddr: v.saddr, sport: v.dport, dport: v.sport, proto: k.proto, _pad: [0; 3] };
    (rk, CtValue { saddr: k.daddr, daddr: k.saddr, sport: k.dport, dport: k.sport, ..base })
}

#[test]
fn republishing_a_port_purges_its_stale_translations_after_the_reply() {
    require_root!();
    use netd::dataplane::{Dataplane, GatewayMode, NetworkSpec, NetworkSpecV4, PortMapping, Proto, ebpf::Ebpf};
    let mut l = setup();
    // UDP flows translated by an earlier binding (stats slot 7) of host port 5353, and one of
    // another port that must stay.
    let pair = |dport: u16| {
        let k = CtKey {
            saddr: be_addr(ip(CLIENT)),
            daddr: be_addr(ip(HOST)),
            sport: be_port(dport + 30000),
            dport: be_port(dport),
            proto: 17,
            _pad: [0; 3],
        };
        let v = CtValue {
            saddr: k.saddr,
            daddr: be_addr(ip(SB)),
            sport: k.sport,
            dport: be_port(53),
            action: CT_ACT_PEER,
            stats_slot: 7,
            ..Default::default()
        };
        let (rk, rv) =
            reply_entry(&k, &v, CtValue { action: netd_common::CT_ACT_FIB, stats_slot: 7, ..Default::default() });
        [(k, v), (rk, rv)]
    };
    {
        let mut c: BpfHashMap<&mut MapData, CtKey, CtValue> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::CT_V4).unwrap()).unwrap();
        for (k, v) in pair(5353).into_iter().chain(pair(6000)) {
            c.insert(k, v, 0).unwrap();
        }
        // A sandbox's own masqueraded flow to a server's port 5353 outside: not the binding's.
        let k = tuple(SB, 41000, CLIENT, 5353, 17);
        // Translated to the host's address, ports kept.
        let (daddr, sport, dport, action) = (k.daddr, k.sport, k.dport, netd_common::CT_ACT_FIB);
        let v = CtValue { saddr: be_addr(ip(HOST)), daddr, sport, dport, action, ..Default::default() };
        let (rk, rv) =
            reply_entry(&k, &v, CtValue { action: CT_ACT_PEER, flags: netd_common::CT_F_REPLY, ..Default::default() });
        c.insert(k, v, 0).unwrap();
        c.insert(rk, rv, 0).unwrap();
    }
    let mut dp = Ebpf::with_loaded(l);
    let net = NetworkSpec {
        index: 1,
        id: "x".into(),
        name: "bridge".into(),
        bridge: "lo".into(),
        bridge_ifindex: 1,
        ipv4: Some(NetworkSpecV4 { subnet: ip(GW), prefix_len: 24, gateway: ip(GW), gateway_mode: GatewayMode::Nat }),
        icc: true,
        masquerade: true,
        internal: false,
        host_binding_ipv4: Ipv4Addr::UNSPECIFIED,
        mtu: 1500,
        ipv6: None,
    };
    let port = PortMapping {
        proto: Proto::Udp,
        host_ip: Ipv4Addr::UNSPECIFIED.into(),
        host_port: 5353,
        container_ip: ip(SB2).into(),
        container_port: 53,
        network_index: 1,
        unproxied: false,
    };
    dp.ports_added(&net, std::slice::from_ref(&port)).unwrap();
    // The binding is live at once; the stale flow's two entries go with the deferred pass
    // (the daemon runs it right after the reply), the other port's stay.
    assert_eq!(dp.deferred().unwrap(), 2, "both directions of the stale 5353 flow, not the sandbox's own");
    assert_eq!(dp.deferred().unwrap(), 0, "nothing left to do");
    // Publishing the same binding again (a restart's replay) purges nothing.
    dp.ports_added(&net, std::slice::from_ref(&port)).unwrap();
    assert_eq!(dp.deferred().unwrap(), 0);
}

/// Random, truncated and bit-flipped frames through every packet program with
/// `BPF_PROG_TEST_RUN`: the kernel runs every one (no crash, no verifier surprise), verdicts are
/// ones the programs may return, a program only ever writes the bytes NAT owns (MACs, addresses,
/// ports/ids, checksums), a translated well-formed frame keeps valid checksums, and every run is
/// counted by its program.
#[test]
fn fuzzed_frames_are_counted_and_never_mistranslated() {
    require_root!();
    let l = setup();
    let seed: u64 = std::env::var("NETD_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6e65_7464);
    let mut x = seed | 1;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let valid: Vec<Vec<u8>> = vec![
        frame(6, CLIENT, HOST, 40000, 8080, 5, b"published"),
        frame(17, CLIENT, HOST, 40001, 5353, 5, b"published udp"),
        frame(6, CLIENT, HOST, 40002, 8080, 7, b"with options"),
        frame(6, SB, CLIENT, 40003, 9000, 5, b"masquerade"),
        frame(17, SB, CLIENT, 40004, 53, 5, b"masquerade udp"),
        frame(6, SB2, HOST, 40005, 8080, 5, b"hairpin"),
        frame(1, SB, CLIENT, 0x1234, 0, 5, b"ping"),
        frame(6, CLIENT, SB, 40006, 7000, 5, b"direct"),
    ];
    let progs = [p::XDP_UPLINK, p::FROM_NETDEV, p::TO_NETDEV, p::FROM_CONTAINER];
    let before = l.prog_stats().unwrap();
    let mut runs: BTreeMap<&str, u64> = BTreeMap::new();
    let mut verdicts: BTreeMap<(&str, u32), u64> = BTreeMap::new();
    let cases = 16_000;
    for i in 0..cases {
        let kind = rnd() % 3;
        let f: Vec<u8> = match kind {
            0 => (0..rnd() % 160).map(|_| rnd() as u8).collect(),
            1 => {
                let v = &valid[(rnd() % valid.len() as u64) as usize];
                v[..(rnd() as usize % (v.len() + 1))].to_vec()
            }
            _ => {
                let mut v = valid[(rnd() % valid.len() as u64) as usize].clone();
                for _ in 0..1 + rnd() % 3 {
                    let at = (rnd() as usize) % v.len().min(70);
                    v[at] ^= 1 << (rnd() % 8);
                }
                v
            }
        };
        let name = progs[i % progs.len()];
        let r = match test_run(l.prog_fd(name).unwrap(), &f) {
            Ok(r) => r,
            Err(e) => {
                // The kernel's own checks for a test skb: an Ethernet header, and a whole IPv4
                // or IPv6 header when the EtherType says so.
                let short = f.len() < 14
                    || (f[12..14] == [0x08, 0x00] && f.len() < 34)
                    || (f[12..14] == [0x86, 0xdd] && f.len() < 54);
                assert!(short, "{name} refused a {}-byte frame: {e}", f.len());
                continue;
            }
        };
        *runs.entry(name).or_default() += 1;
        *verdicts.entry((name, r.retval)).or_default() += 1;
        let allowed: &[u32] = if name == p::XDP_UPLINK { &[1, 2] } else { &[TC_ACT_OK, 2, TC_ACT_REDIRECT] };
        assert!(allowed.contains(&r.retval), "{name}: verdict {} for {f:02x?}", r.retval);
        assert_eq!(r.data_out.len(), f.len(), "{name} resized a frame");
        if r.data_out == f {
            continue;
        }
        // Which bytes NAT may touch, from the input's own headers.
        let ihl = if f.len() > 14 { (f[14] & 0x0f) as usize * 4 } else { 0 };
        let l4 = 14 + ihl;
        let may = |o: usize| {
            o < 12
                || o == 22 // TTL: a routed hop decrements it
                || (24..26).contains(&o)
                || (26..34).contains(&o)
                || (l4..l4 + 8).contains(&o)
                || (l4 + 16..l4 + 18).contains(&o)
        };
        for (o, (a, b)) in f.iter().zip(&r.data_out).enumerate() {
            assert!(a == b || may(o), "{name} wrote byte {o} of {f:02x?} -> {:02x?}", r.data_out);
        }
        // A translated frame that was well formed (untouched or only truncated past its
        // payload is not well formed) keeps valid checksums.
        if kind != 0 && valid.contains(&f) {
            check(&r.data_out);
        }
    }
    let after = l.prog_stats().unwrap();
    for name in progs {
        let counted = after[name].packets - before[name].packets;
        assert_eq!(counted, runs.get(name).copied().unwrap_or(0), "{name}: every run counted");
    }
    eprintln!("{cases} fuzzed frames (seed {seed}): {verdicts:?}");
}

/// A full conntrack table never refuses a new flow: the LRU evicts the oldest entries.
#[test]
fn a_full_conntrack_table_evicts_instead_of_wedging() {
    require_root!();
    let mut l = setup();
    {
        let mut c: BpfHashMap<&mut MapData, CtKey, CtValue> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::CT_V4).unwrap()).unwrap();
        let v = CtValue { action: netd_common::CT_ACT_HOSTFLOW, ..Default::default() };
        for i in 0..netd_common::capacity::CT_V4 {
            let k = CtKey { saddr: 0x0a00_0000 | i, daddr: 1, sport: 1, dport: 1, proto: 17, _pad: [0; 3] };
            c.insert(k, v, 0).unwrap();
        }
        let n = c.keys().count() as u32;
        assert!(n > netd_common::capacity::CT_V4 * 9 / 10, "the table is (nearly) full: {n}");
    }
    let drops = l.drop_stats().unwrap()["ct_insert"];
    for sport in 41000..41100 {
        let f = frame(6, CLIENT, HOST, sport, 8080, 5, b"new");
        let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &f).unwrap();
        assert_eq!(r.retval, TC_ACT_REDIRECT, "new flow {sport} translated into a full table");
        let k = CtKey {
            saddr: be_addr(ip(CLIENT)),
            daddr: be_addr(ip(HOST)),
            sport: be_port(sport),
            dport: be_port(8080),
            proto: 6,
            _pad: [0; 3],
        };
        let c: BpfHashMap<&MapData, CtKey, CtValue> = BpfHashMap::try_from(l.ebpf.map(m::CT_V4).unwrap()).unwrap();
        assert!(c.get(&k, 0).is_ok(), "flow {sport} recorded");
    }
    assert_eq!(l.drop_stats().unwrap()["ct_insert"], drops, "no insert failed");
}

fn ct_get(l: &Loaded, k: &CtKey) -> Option<CtValue> {
    let c: BpfHashMap<&MapData, CtKey, CtValue> = BpfHashMap::try_from(l.ebpf.map(m::CT_V4).unwrap()).unwrap();
    c.get(k, 0).ok()
}

/// A TCP segment: sequence and acknowledgement numbers, flags, window, a SYN's window scale
/// option (with MSS and NOP before it, as Linux sends them) and `len` bytes of data.
#[allow(clippy::too_many_arguments)]
fn tcp_seg_opts(
    src: [u8; 4],
    dst: [u8; 4],
    (sport, dport): (u16, u16),
    (seq, ack): (u32, u32),
    flags: u8,
    win: u16,
    wscale: Option<u8>,
    len: usize,
) -> Vec<u8> {
    let mut opts = vec![2, 4, 0x05, 0xb4]; // MSS 1460
    if let Some(ws) = wscale {
        opts.extend_from_slice(&[1, 3, 3, ws]);
    }
    if flags & 0x02 == 0 {
        opts.clear();
    }
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&ack.to_be_bytes());
    l4.extend_from_slice(&[(((20 + opts.len()) / 4) << 4) as u8, flags]);
    l4.extend_from_slice(&win.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 0]);
    l4.extend_from_slice(&opts);
    l4.extend(std::iter::repeat_n(b'd', len));
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let c = csum(&[pseudo.as_slice(), &l4].concat(), 0);
    l4[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = csum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;

/// A TCP flow through the published port 8080 -> 172.17.0.2:7000 from CLIENT:`cport`: the
/// client's segments go through `netd_from_netdev`, the sandbox's through
/// `netd_from_container`. Returns (client's entry key, sandbox's entry key).
fn client_and_sandbox_keys(cport: u16) -> (CtKey, CtKey) {
    let c = CtKey {
        saddr: be_addr(ip(CLIENT)),
        daddr: be_addr(ip(HOST)),
        sport: be_port(cport),
        dport: be_port(8080),
        proto: 6,
        _pad: [0; 3],
    };
    let s = CtKey {
        saddr: be_addr(ip(SB)),
        daddr: be_addr(ip(CLIENT)),
        sport: be_port(7000),
        dport: be_port(cport),
        proto: 6,
        _pad: [0; 3],
    };
    (c, s)
}

fn closing(l: &Loaded, k: &CtKey) -> u8 {
    ct_get(l, k).unwrap().flags & (netd_common::CT_F_CLOSING | netd_common::CT_F_RST)
}

/// nf_conntrack's window tracking, in essence: after a handshake with window scaling (both
/// SYNs announce scale 7) and some data, a RST is judged against its receiver's window (the
/// highest ACK it sent, plus its window shifted by its scale): 512 KiB past it is dropped and
/// counted (the old fixed 1 MiB bound took it), 60,000 bytes in (inside 502 << 7 = 64,256,
/// kept as 512 << 7; outside the unscaled 502) passes without closing (the receiver's challenge ACK decides),
/// exactly at it closes the flow. The sandbox's RSTs are judged against the client's window.
#[test]
fn rsts_are_judged_against_the_receivers_scaled_window() {
    require_root!();
    let l = setup();
    let (ck, sk) = client_and_sandbox_keys(42000);
    let from_client = |seq: u32, ack: u32, flags: u8, win: u16, ws: Option<u8>, len: usize| {
        let f = tcp_seg_opts(CLIENT, HOST, (42000, 8080), (seq, ack), flags, win, ws, len);
        test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &f).unwrap().retval
    };
    let from_sandbox = |seq: u32, ack: u32, flags: u8, win: u16, ws: Option<u8>, len: usize| {
        let f = tcp_seg_opts(SB, CLIENT, (7000, 42000), (seq, ack), flags, win, ws, len);
        test_run(l.prog_fd(p::FROM_CONTAINER).unwrap(), &f).unwrap().retval
    };
    assert_eq!(from_client(1000, 0, SYN, 64240, Some(7), 0), TC_ACT_REDIRECT);
    assert_ne!(from_sandbox(5000, 1001, SYN | ACK, 65160, Some(7), 0), TC_ACT_SHOT);
    assert_eq!(from_client(1001, 5001, ACK, 502, None, 0), TC_ACT_REDIRECT);
    assert_ne!(from_sandbox(5001, 1001, PSH_ACK, 509, None, 100), TC_ACT_SHOT);
    assert_eq!(from_client(1001, 5101, ACK, 502, None, 0), TC_ACT_REDIRECT);
    let (c, s) = (ct_get(&l, &ck).unwrap(), ct_get(&l, &sk).unwrap());
    // Windows in units of 16 bytes (rounded up), the scale in the low 4 bits.
    assert_eq!((c.ack, c.wnd >> 4, c.wnd & 15), (5101, 32, 7), "the client's window state");
    assert_eq!((s.ack, s.wnd >> 4, s.wnd & 15), (1001, 32, 7), "the sandbox's window state");
    let drops = || l.drop_stats().unwrap()["invalid_rst"];
    let d0 = drops();

    // From the sandbox to the client (window 502 << 7 from 5101).
    assert_eq!(from_sandbox(5101 + 512 * 1024, 0, RST, 0, None, 0), TC_ACT_SHOT, "blind RST dropped");
    assert_eq!(drops(), d0 + 1, "and counted");
    assert_eq!(closing(&l, &sk) | closing(&l, &ck), 0, "a blind RST leaves the flow open");
    assert_ne!(from_sandbox(5101 + 60_000, 0, RST, 0, None, 0), TC_ACT_SHOT, "in the scaled window: passes");
    assert_eq!(closing(&l, &sk), 0, "an inexact RST in the window leaves the flow as it is");
    assert_eq!(from_sandbox(5101 + 70_000, 0, RST, 0, None, 0), TC_ACT_SHOT, "past the scaled window");
    // From the client to the sandbox (window 509 << 7 from 1001).
    assert_eq!(from_client(1001 + 600_000, 0, RST, 0, None, 0), TC_ACT_SHOT);
    assert_eq!(from_client(1001u32.wrapping_sub(10), 0, RST, 0, None, 0), TC_ACT_SHOT, "before the window");
    assert_eq!(drops(), d0 + 4);
    assert_eq!(closing(&l, &ck), 0);
    // Exact: closes.
    assert_ne!(from_sandbox(5101, 0, RST, 0, None, 0), TC_ACT_SHOT);
    assert_eq!(closing(&l, &sk), netd_common::CT_F_CLOSING | netd_common::CT_F_RST, "an exact RST closes");
}

/// A client reusing its source port for a new connection to the same published port, after the
/// last one closed: the pair is restarted in place when it would be made again the same (same
/// binding, the client's port kept), so the reply entry keeps its cached route and the SYN-ACK
/// uses it; the flow's TCP state starts afresh. When the binding changed meanwhile, the closed
/// pair goes and the SYN gets the new translation.
#[test]
fn a_reused_client_port_restarts_its_closed_published_flow_in_place() {
    require_root!();
    let mut l = setup();
    let (ck, sk) = client_and_sandbox_keys(42200);
    let from_client = |l: &Loaded, seq: u32, ack: u32, flags: u8| {
        let f = tcp_seg_opts(CLIENT, HOST, (42200, 8080), (seq, ack), flags, 502, Some(7), 0);
        test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &f).unwrap()
    };
    let from_sandbox = |l: &Loaded, sport: u16, seq: u32, ack: u32, flags: u8| {
        let f = tcp_seg_opts(SB, CLIENT, (sport, 42200), (seq, ack), flags, 509, Some(7), 0);
        test_run(l.prog_fd(p::FROM_CONTAINER).unwrap(), &f).unwrap()
    };
    assert_eq!(from_client(&l, 1000, 0, SYN).retval, TC_ACT_REDIRECT);
    assert_ne!(from_sandbox(&l, 7000, 5000, 1001, SYN | ACK).retval, TC_ACT_SHOT);
    assert_eq!(from_client(&l, 1001, 5001, ACK).retval, TC_ACT_REDIRECT);
    assert_eq!(from_client(&l, 1001, 5001, 0x11).retval, TC_ACT_REDIRECT, "FIN|ACK");
    assert_ne!(closing(&l, &ck), 0, "the client's FIN closes its direction");
    // The reply entry's route as a first reply caches it (the test's namespace has none).
    const DMAC: [u8; 6] = [2, 0, 0, 0, 0, 0x77];
    {
        let mut g: aya::maps::Array<&mut MapData, u32> =
            aya::maps::Array::try_from(l.ebpf.map_mut(m::FIB_GEN).unwrap()).unwrap();
        g.set(0, 5, 0).unwrap();
        let mut c: BpfHashMap<&mut MapData, CtKey, CtValue> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::CT_V4).unwrap()).unwrap();
        let mut v = c.get(&sk, 0).unwrap();
        (v.ifindex, v.dmac, v.smac, v.fib_mtu, v.fib_gen) = (77, DMAC, [2, 0, 0, 0, 0, 0x78], 1500, 5);
        c.insert(sk, v, 0).unwrap();
    }
    assert_eq!(ct(&l).len(), 2);

    // The same client port again, a new ISN: the same translation, both entries restarted.
    let r = from_client(&l, 90_000, 0, SYN);
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let o = check(&r.data_out);
    assert_eq!((o.src, o.dst, o.sport, o.dport), (CLIENT, SB, 42200, 7000));
    let (c, s) = (ct_get(&l, &ck).unwrap(), ct_get(&l, &sk).unwrap());
    assert_eq!(c.flags & (netd_common::CT_F_CLOSING | netd_common::CT_F_ACKED), 0, "the client's state starts afresh");
    assert_ne!(c.flags & netd_common::CT_F_SYN, 0, "from its SYN");
    assert_eq!(s.flags, netd_common::CT_F_REPLY, "the reply direction not seen yet");
    assert_eq!((s.ifindex, s.dmac, s.fib_gen), (77, DMAC, 5), "restarted in place: the cached route kept");
    assert_eq!(ct(&l).len(), 2, "no other entry");
    // The SYN-ACK goes out along the cached route, translated back.
    let r = from_sandbox(&l, 7000, 30_000, 90_001, SYN | ACK);
    assert_eq!(r.retval, TC_ACT_REDIRECT, "bpf_redirect along the cached route");
    let o = check(&r.data_out);
    assert_eq!((o.src, o.dst, o.sport, o.dport, o.dmac), (HOST, CLIENT, 8080, 42200, DMAC));
    assert_eq!(from_client(&l, 90_001, 30_001, ACK).retval, TC_ACT_REDIRECT);
    assert_ne!(ct_get(&l, &ck).unwrap().flags & netd_common::CT_F_ACKED, 0);

    // Closed again, and the port now leads to 7001: a new translation, the old pair gone.
    assert_eq!(from_client(&l, 90_001, 30_001, 0x11).retval, TC_ACT_REDIRECT);
    {
        let mut pm: BpfHashMap<&mut MapData, PublishedKey, PublishedValue> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::PUBLISHED_V4).unwrap()).unwrap();
        let k = PublishedKey { addr: 0, port: be_port(8080), proto: 6, _pad: 0 };
        let v = PublishedValue { addr: be_addr(ip(SB)), port: be_port(7001), _pad: 0, net: 1, stats_slot: 0 };
        pm.insert(k, v, 0).unwrap();
    }
    let r = from_client(&l, 200_000, 0, SYN);
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let o = check(&r.data_out);
    assert_eq!((o.dst, o.sport, o.dport), (SB, 42200, 7001), "the new binding");
    assert!(ct_get(&l, &sk).is_none(), "the closed pair's reply entry went with it");
    let (_, sk2) = client_and_sandbox_keys(42200);
    let sk2 = CtKey { sport: be_port(7001), ..sk2 };
    let n = ct_get(&l, &sk2).expect("the new reply entry");
    assert_eq!((n.ifindex, n.fib_gen), (0, 0), "a new entry: no route cached yet");
    assert_eq!(ct(&l).len(), 2);
}

/// Window scaling applies only when both SYNs announce it (RFC 7323); a RST answering a SYN
/// must acknowledge it; a flow picked up mid-stream (no SYN seen) is judged liberally, as
/// nf_conntrack's pickup does.
#[test]
fn rst_window_needs_both_scales_and_answers_to_syns_must_ack_them() {
    require_root!();
    let l = setup();
    let run_c = |cport: u16, seq: u32, ack: u32, flags: u8, win: u16, ws: Option<u8>| {
        let f = tcp_seg_opts(CLIENT, HOST, (cport, 8080), (seq, ack), flags, win, ws, 0);
        test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &f).unwrap().retval
    };
    let run_s = |cport: u16, seq: u32, ack: u32, flags: u8, win: u16, ws: Option<u8>| {
        let f = tcp_seg_opts(SB, CLIENT, (7000, cport), (seq, ack), flags, win, ws, 0);
        test_run(l.prog_fd(p::FROM_CONTAINER).unwrap(), &f).unwrap().retval
    };
    // The sandbox's SYN-ACK has no window scale: the client's 502 is 502 bytes.
    run_c(42100, 1000, 0, SYN, 64240, Some(7));
    run_s(42100, 5000, 1001, SYN | ACK, 65160, None);
    run_c(42100, 1001, 5001, ACK, 502, None);
    assert_eq!(run_s(42100, 5001 + 60_000, 0, RST, 0, None), TC_ACT_SHOT, "unscaled: 60,000 is outside 502 (512)");
    assert_ne!(run_s(42100, 5001 + 400, 0, RST, 0, None), TC_ACT_SHOT, "400 is inside");
    let (_, sk) = client_and_sandbox_keys(42100);
    assert_eq!(closing(&l, &sk), 0);

    // A closed port: the sandbox answers the SYN with RST|ACK acknowledging it.
    let (ck, sk) = client_and_sandbox_keys(42200);
    run_c(42200, 9000, 0, SYN, 64240, Some(7));
    assert_eq!(run_s(42200, 0, 12345, RST | ACK, 0, None), TC_ACT_SHOT, "a RST not acknowledging the SYN");
    assert_eq!(closing(&l, &sk), 0);
    assert_ne!(run_s(42200, 0, 9001, RST | ACK, 0, None), TC_ACT_SHOT, "the refusal passes");
    assert_ne!(closing(&l, &sk), 0, "and closes the flow");
    let _ = ck;

    // Picked up mid-stream (first segment an ACK): any RST closes it.
    let (ck, _) = client_and_sandbox_keys(42300);
    assert_eq!(run_c(42300, 777_777, 1, ACK, 502, None), TC_ACT_REDIRECT);
    run_s(42300, 1, 777_777, ACK, 502, None);
    assert_eq!(run_c(42300, 0x4000_0000, 0, RST, 0, None), TC_ACT_REDIRECT, "liberal on pickup");
    assert_ne!(closing(&l, &ck), 0);
}

#[test]
fn a_taken_reply_tuple_gets_another_client_port_never_overwritten() {
    require_root!();
    let mut l = setup();
    // Another published port of the same sandbox port: 8081 -> 172.17.0.2:7000.
    {
        let mut pm: BpfHashMap<&mut MapData, PublishedKey, PublishedValue> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::PUBLISHED_V4).unwrap()).unwrap();
        let k = PublishedKey { addr: 0, port: be_port(8081), proto: 6, _pad: 0 };
        pm.insert(k, PublishedValue { addr: be_addr(ip(SB)), port: be_port(7000), _pad: 0, net: 1, stats_slot: 0 }, 0)
            .unwrap();
    }
    let reply_key = |cport: u16| CtKey {
        saddr: be_addr(ip(SB)),
        daddr: be_addr(ip(CLIENT)),
        sport: be_port(7000),
        dport: be_port(cport),
        proto: 6,
        _pad: [0; 3],
    };
    let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &frame(6, CLIENT, HOST, 43000, 8080, 5, b"")).unwrap();
    assert_eq!(check(&r.data_out).sport, 43000, "the client's port kept when free");
    let first = ct_get(&l, &reply_key(43000)).unwrap();
    // Same client ip:port to the other host port: its reply tuple would be the first flow's.
    let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &frame(6, CLIENT, HOST, 43000, 8081, 5, b"")).unwrap();
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let o = check(&r.data_out);
    assert_ne!(o.sport, 43000, "another client port toward the sandbox");
    assert_eq!(ct_get(&l, &reply_key(43000)).unwrap(), first, "the first flow's reply entry is untouched");
    let second = ct_get(&l, &reply_key(o.sport)).unwrap();
    assert_eq!((second.sport, second.dport), (be_port(8081), be_port(43000)), "replies go back as 8081 -> 43000");
    // Replies of each flow come back from their own host port.
    for (cport, hp) in [(43000u16, 8080u16), (o.sport, 8081)] {
        let r = test_run(l.prog_fd(p::FROM_CONTAINER).unwrap(), &frame(6, SB, CLIENT, 7000, cport, 5, b"")).unwrap();
        let b = check(&r.data_out);
        assert_eq!((b.src, b.sport, b.dport), (HOST, hp, 43000));
    }
}

#[test]
fn icmp_errors_are_translated_back_with_valid_checksums() {
    require_root!();
    let l = setup();
    // A datagram from outside to the published UDP port, DNATed to the sandbox.
    let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &frame(17, CLIENT, HOST, 40020, 5353, 5, b"q")).unwrap();
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let quoted = r.data_out[14..].to_vec(); // as the sandbox received it: CLIENT:40020 -> SB:7000
    // The sandbox answers port unreachable, quoting it.
    let mut icmp = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted);
    let c = csum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ipb = vec![0u8; 20];
    ipb[0] = 0x45;
    ipb[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ipb[8] = 64;
    ipb[9] = 1;
    ipb[12..16].copy_from_slice(&SB);
    ipb[16..20].copy_from_slice(&CLIENT);
    let c = csum(&ipb, 0);
    ipb[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&ipb);
    f.extend_from_slice(&icmp);
    let r = test_run(l.prog_fd(p::FROM_CONTAINER).unwrap(), &f).unwrap();
    let o = &r.data_out[14..];
    assert_eq!(csum(&o[..20], 0), 0, "outer IPv4 checksum");
    assert_eq!((&o[12..16], &o[16..20]), (&HOST[..], &CLIENT[..]), "outer: from the host's address to the client");
    let ic = &o[20..];
    assert_eq!(csum(ic, 0), 0, "ICMP checksum over the rewritten quote");
    let inner = &ic[8..];
    assert_eq!(csum(&inner[..20], 0), 0, "quoted IPv4 checksum");
    assert_eq!((&inner[12..16], &inner[16..20]), (&CLIENT[..], &HOST[..]), "quote: the client's own packet");
    assert_eq!(
        (u16::from_be_bytes([inner[20], inner[21]]), u16::from_be_bytes([inner[22], inner[23]])),
        (40020, 5353),
        "quoted ports: client port -> published port"
    );
}
