//! `BPF_PROG_TEST_RUN` on the IPv6 half of the programs: IPv6 frames in (with extension
//! headers, fragments, ICMPv6), rewritten frames out, every checksum verified from scratch,
//! `CT_V6` entries checked. The v6 twins of `packet_nat.rs`.
use std::net::Ipv6Addr;

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use netd::{
    dataplane::ebpf::be_port,
    ebpf::{Loaded, test_run},
};
use netd_common::{
    CT_ACT_FIB, CT_ACT_HOSTFLOW, CT_ACT_PEER, CT_F_ACKED, CT_F_CLOSING, CT_F_REPLY, CT_F_RST, CT_F_SEEN, EndpointInfo,
    NET_F_ICC, NET_F_MASQUERADE, NET_F_PROTECT, NET_F_ROUTED, prog_names as p,
    v6::{
        Addr6, CT_UNASSURED_MAX_V6, CtKey6, CtValue6, NetworkInfo6, PublishedKey6, PublishedValue6, addr6,
        map_names as m6,
    },
};
use netd_tests::require_root;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP6: u8 = 58;

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
fn host() -> Ipv6Addr {
    a("2001:db8:1::1")
}
fn client() -> Ipv6Addr {
    a("2001:db8:1::2")
}
fn server() -> Ipv6Addr {
    a("2001:db8:2::5")
}
fn sb() -> Ipv6Addr {
    a("fd00:17::2")
}
fn sb2() -> Ipv6Addr {
    a("fd00:17::3")
}
fn gw() -> Ipv6Addr {
    a("fd00:17::1")
}
/// A sandbox of another network (index 2).
fn other() -> Ipv6Addr {
    a("fd00:18::2")
}
fn w(ip: Ipv6Addr) -> Addr6 {
    addr6(ip.octets())
}

const SB_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0, 2];
const SB2_MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0, 3];
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

/// The IPv6 pseudo-header sum's input.
fn pseudo(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.extend_from_slice(&(len as u32).to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, proto]);
    v
}

/// An upper-layer header + payload with a valid checksum. TCP: a SYN; UDP; ICMPv6: an echo
/// request (id = sport) when sport != 0, else an echo reply (id = dport).
fn l4(proto: u8, src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l = Vec::new();
    match proto {
        TCP => {
            l.extend_from_slice(&sport.to_be_bytes());
            l.extend_from_slice(&dport.to_be_bytes());
            l.extend_from_slice(&1u32.to_be_bytes());
            l.extend_from_slice(&0u32.to_be_bytes());
            l.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        }
        UDP => {
            l.extend_from_slice(&sport.to_be_bytes());
            l.extend_from_slice(&dport.to_be_bytes());
            l.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l.extend_from_slice(&[0, 0]);
        }
        ICMP6 => {
            let (ty, id) = if sport != 0 { (128u8, sport) } else { (129u8, dport) };
            l.extend_from_slice(&[ty, 0, 0, 0]);
            l.extend_from_slice(&id.to_be_bytes());
            l.extend_from_slice(&7u16.to_be_bytes());
        }
        _ => unreachable!(),
    }
    l.extend_from_slice(payload);
    let c = csum(&[pseudo(src, dst, proto, l.len()), l.clone()].concat(), 0);
    let at = match proto {
        TCP => 16,
        UDP => 6,
        _ => 2,
    };
    l[at..at + 2].copy_from_slice(&c.to_be_bytes());
    l
}

/// Ethernet + IPv6 (hop limit 64) + extension headers (kind, whole header with byte 0 left
/// for the next-header field) + `upper` (already built, protocol `proto`).
fn frame_raw(proto: u8, src: Ipv6Addr, dst: Ipv6Addr, exts: &[(u8, Vec<u8>)], upper: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (_, h)) in exts.iter().enumerate() {
        let mut h = h.clone();
        h[0] = exts.get(i + 1).map_or(proto, |e| e.0);
        body.extend_from_slice(&h);
    }
    body.extend_from_slice(upper);
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(body.len() as u16).to_be_bytes());
    ip.push(exts.first().map_or(proto, |e| e.0));
    ip.push(64);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
    f.extend_from_slice(&ip);
    f.extend_from_slice(&body);
    f
}

fn frame(proto: u8, src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    frame_raw(proto, src, dst, &[], &l4(proto, src, dst, sport, dport, payload))
}

/// A hop-by-hop or destination options header of 8 bytes (PadN).
fn opts(kind: u8) -> (u8, Vec<u8>) {
    (kind, vec![0, 0, 1, 4, 0, 0, 0, 0])
}

/// A fragment header: offset in 8-byte units, M flag, identification.
fn frag(off8: u16, more: bool, id: u32) -> (u8, Vec<u8>) {
    let mut h = vec![0, 0];
    h.extend_from_slice(&((off8 << 3) | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    (44, h)
}

#[derive(Debug)]
struct Parsed {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    hop: u8,
    dmac: [u8; 6],
}

/// Parse a frame (walking extension headers) and verify its upper-layer checksum from scratch
/// (the fragment carrying it is checked as if it were the whole datagram, as built).
fn check(f: &[u8]) -> Parsed {
    assert_eq!(&f[12..14], &[0x86, 0xdd]);
    let ip = &f[14..];
    let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    assert_eq!(ip.len(), 40 + plen, "payload length");
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
    let mut nh = ip[6];
    let mut off = 40;
    let mut later = false;
    loop {
        match nh {
            0 | 43 | 60 => {
                nh = ip[off];
                off += (ip[off + 1] as usize + 1) * 8;
            }
            44 => {
                later = u16::from_be_bytes([ip[off + 2], ip[off + 3]]) & 0xfff8 != 0;
                nh = ip[off];
                off += 8;
            }
            _ => break,
        }
    }
    let l = &ip[off..];
    let (mut sport, mut dport) = (0, 0);
    if !later {
        assert_eq!(csum(&[pseudo(src, dst, nh, l.len()), l.to_vec()].concat(), 0), 0, "proto {nh} checksum");
        match nh {
            TCP | UDP => {
                sport = u16::from_be_bytes([l[0], l[1]]);
                dport = u16::from_be_bytes([l[2], l[3]]);
            }
            ICMP6 if l[0] == 128 => sport = u16::from_be_bytes([l[4], l[5]]),
            ICMP6 if l[0] == 129 => dport = u16::from_be_bytes([l[4], l[5]]),
            _ => {}
        }
    }
    Parsed { src, dst, sport, dport, hop: ip[7], dmac: f[0..6].try_into().unwrap() }
}

fn hmap<'a, K: aya::Pod, V: aya::Pod>(l: &'a mut Loaded, name: &str) -> BpfHashMap<&'a mut MapData, K, V> {
    BpfHashMap::try_from(l.ebpf.map_mut(name).unwrap()).unwrap()
}

fn network(l: &mut Loaded, idx: u32, subnet: &str, gateway: Ipv6Addr, flags: u32) {
    let info = NetworkInfo6 {
        subnet: w(a(subnet)),
        gateway: w(gateway),
        prefix_len: 64,
        bridge_ifindex: 3,
        gateway_mac: GW_MAC,
        _pad: [0; 2],
        flags,
    };
    hmap::<u32, NetworkInfo6>(l, m6::NETWORKS_V6).insert(idx, info, 0).unwrap();
}

fn publish(l: &mut Loaded, host_ip: Ipv6Addr, proto: u8, hp: u16, to: Ipv6Addr, cp: u16, slot: u32) {
    let k = PublishedKey6 { addr: w(host_ip), port: be_port(hp), proto, _pad: 0 };
    let v = PublishedValue6 { addr: w(to), port: be_port(cp), _pad: 0, net: 1, stats_slot: slot, flags: 0 };
    hmap::<PublishedKey6, PublishedValue6>(l, m6::PUBLISHED_V6).insert(k, v, 0).unwrap();
}

/// Programs loaded, v6 maps seeded: [::]:8080/tcp and [::]:5353/udp -> [fd00:17::2]:7000 on
/// network 1 (nat mode, icc), fd00:17::3 its neighbour, fd00:18::2 on network 2.
fn setup_with(flags: u32) -> Loaded {
    let mut l = Loaded::load().expect("load");
    {
        let mut h = hmap::<Addr6, u32>(&mut l, m6::HOST_ADDRS_V6);
        h.insert(w(host()), 1, 0).unwrap();
        h.insert(w(gw()), 1, 0).unwrap();
    }
    publish(&mut l, Ipv6Addr::UNSPECIFIED, TCP, 8080, sb(), 7000, 0);
    publish(&mut l, Ipv6Addr::UNSPECIFIED, UDP, 5353, sb(), 7000, 1);
    {
        let mut e = hmap::<Addr6, EndpointInfo>(&mut l, m6::ENDPOINTS_V6);
        e.insert(w(sb()), EndpointInfo { ifindex: 42, net: 1, mac: SB_MAC, _pad: [0; 2] }, 0).unwrap();
        e.insert(w(sb2()), EndpointInfo { ifindex: 43, net: 1, mac: SB2_MAC, _pad: [0; 2] }, 0).unwrap();
        e.insert(w(other()), EndpointInfo { ifindex: 44, net: 2, mac: [2, 0x42, 0, 0, 0, 4], _pad: [0; 2] }, 0)
            .unwrap();
    }
    network(&mut l, 1, "fd00:17::", gw(), flags);
    network(&mut l, 2, "fd00:18::", a("fd00:18::1"), NET_F_ICC | NET_F_MASQUERADE | NET_F_PROTECT);
    l
}

fn setup() -> Loaded {
    setup_with(NET_F_ICC | NET_F_MASQUERADE | NET_F_PROTECT)
}

fn ct(l: &Loaded) -> Vec<(CtKey6, CtValue6)> {
    let c: BpfHashMap<&MapData, CtKey6, CtValue6> = BpfHashMap::try_from(l.ebpf.map(m6::CT_V6).unwrap()).unwrap();
    c.iter().filter_map(Result::ok).collect()
}

fn ct_get(l: &Loaded, k: &CtKey6) -> Option<CtValue6> {
    let c: BpfHashMap<&MapData, CtKey6, CtValue6> = BpfHashMap::try_from(l.ebpf.map(m6::CT_V6).unwrap()).unwrap();
    c.get(k, 0).ok()
}

fn key(proto: u8, s: Ipv6Addr, d: Ipv6Addr, sport: u16, dport: u16) -> CtKey6 {
    CtKey6 { saddr: w(s), daddr: w(d), sport: be_port(sport), dport: be_port(dport), proto, _pad: [0; 3] }
}

fn run(l: &Loaded, prog: &'static str, f: &[u8]) -> netd::ebpf::TestRun {
    test_run(l.prog_fd(prog).unwrap(), f).unwrap()
}

#[test]
fn dnat6_and_reverse_nat_keep_checksums_valid() {
    require_root!();
    let l = setup();
    for (proto, hp) in [(TCP, 8080u16), (UDP, 5353)] {
        let r = run(&l, p::FROM_NETDEV, &frame(proto, client(), host(), 40000, hp, b"payload"));
        assert_eq!(r.retval, TC_ACT_REDIRECT, "redirected into the sandbox (bpf_redirect_peer)");
        let o = check(&r.data_out);
        assert_eq!((o.src, o.dst, o.sport, o.dport), (client(), sb(), 40000, 7000), "proto {proto}");
        assert_eq!(o.dmac, SB_MAC);
        assert_eq!(o.hop, 63, "a routed hop: hop limit decremented");
        let r = run(&l, p::FROM_CONTAINER, &frame(proto, sb(), client(), 7000, 40000, b"answer"));
        assert_eq!(r.retval, TC_ACT_OK, "no route in the test's namespace: the kernel's to route");
        let o = check(&r.data_out);
        assert_eq!((o.src, o.dst, o.sport, o.dport), (host(), client(), hp, 40000), "reverse proto {proto}");
    }
    let entries = ct(&l);
    assert_eq!(entries.len(), 4, "two directions per flow: {entries:?}");
    let fwd = entries.iter().find(|(k, _)| k.dport == be_port(8080)).unwrap();
    assert_eq!((fwd.1.action, fwd.1.ifindex), (CT_ACT_PEER, 42));
    assert!(ct(&l).iter().all(|(k, v)| v.flags & CT_F_SEEN != 0 || k.proto == 0), "both directions seen");
    // The v4 table is untouched by IPv6 flows.
    let c4: BpfHashMap<&MapData, netd_common::CtKey, netd_common::CtValue> =
        BpfHashMap::try_from(l.ebpf.map(netd_common::map_names::CT_V4).unwrap()).unwrap();
    assert_eq!(c4.keys().count(), 0);
}

#[test]
fn an_exact_host_address_binding_wins_over_the_wildcard() {
    require_root!();
    let mut l = setup();
    publish(&mut l, host(), TCP, 8080, sb2(), 9000, 2);
    let o = check(&run(&l, p::FROM_NETDEV, &frame(TCP, client(), host(), 40100, 8080, b"")).data_out);
    assert_eq!((o.dst, o.dport), (sb2(), 9000));
    // Not a host address: not translated.
    let f = frame(TCP, client(), a("2001:db8:1::99"), 40101, 8080, b"");
    let r = run(&l, p::FROM_NETDEV, &f);
    assert_eq!((r.retval, r.data_out == f), (TC_ACT_OK, true));
}

#[test]
fn extension_headers_are_walked_and_bounded() {
    require_root!();
    let l = setup();
    // Hop-by-hop + destination options before TCP: the ports are found after them.
    let upper = l4(TCP, client(), host(), 40200, 8080, b"ext");
    let f = frame_raw(TCP, client(), host(), &[opts(0), opts(60)], &upper);
    let r = run(&l, p::FROM_NETDEV, &f);
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let o = check(&r.data_out);
    assert_eq!((o.dst, o.dport), (sb(), 7000));
    // A chain longer than the bound: left to the kernel, untouched, nothing tracked.
    let n = ct(&l).len();
    let exts: Vec<(u8, Vec<u8>)> = (0..7).map(|_| opts(60)).collect();
    let f = frame_raw(TCP, client(), host(), &exts, &l4(TCP, client(), host(), 40201, 8080, b""));
    let r = run(&l, p::FROM_NETDEV, &f);
    assert_eq!((r.retval, r.data_out == f, ct(&l).len()), (TC_ACT_OK, true, n));
    // Truncated inside the TCP header: not translated, counted as malformed.
    let before = l.drop_stats().unwrap()["malformed"];
    let mut t = frame(TCP, client(), host(), 40202, 8080, b"");
    t.truncate(14 + 40 + 2);
    t[18..20].copy_from_slice(&2u16.to_be_bytes());
    let r = run(&l, p::FROM_NETDEV, &t);
    assert_eq!((r.retval, r.data_out == t), (TC_ACT_OK, true));
    assert_eq!(l.drop_stats().unwrap()["malformed"], before + 1);
}

#[test]
fn protections6_in_xdp_and_tc() {
    require_root!();
    let l = setup();
    let direct = frame(TCP, client(), sb(), 40300, 7000, b"");
    assert_eq!(run(&l, p::XDP_UPLINK, &direct).retval, XDP_DROP, "nat mode: no direct access from outside");
    assert_eq!(run(&l, p::FROM_NETDEV, &direct).retval, TC_ACT_SHOT, "also without XDP");
    let lo = frame(TCP, client(), Ipv6Addr::LOCALHOST, 40301, 8080, b"");
    assert_eq!(run(&l, p::XDP_UPLINK, &lo).retval, XDP_DROP);
    assert_eq!(run(&l, p::FROM_NETDEV, &lo).retval, TC_ACT_SHOT);
    let ok = frame(TCP, client(), host(), 40302, 8080, b"");
    assert_eq!(run(&l, p::XDP_UPLINK, &ok).retval, XDP_PASS);
    let d = l.drop_stats().unwrap();
    assert_eq!((d["direct_to_sandbox"], d["loopback_not_lo"]), (2, 2));
    // A sandbox sending to [::1] (a forged frame): dropped, never a published port.
    let r = run(&l, p::FROM_CONTAINER, &frame(TCP, sb(), Ipv6Addr::LOCALHOST, 40303, 8080, b""));
    assert_eq!(r.retval, TC_ACT_SHOT);
}

#[test]
fn routed_mode_opens_published_container_ports_and_icmp_only() {
    require_root!();
    let mut l = setup_with(NET_F_ICC | NET_F_ROUTED);
    // Routed mode: the container port opens under the sandbox's own address.
    publish(&mut l, sb(), TCP, 7000, sb(), 7000, 3);
    let f = frame(TCP, client(), sb(), 40400, 7000, b"");
    assert_eq!(run(&l, p::XDP_UPLINK, &f).retval, XDP_PASS);
    let r = run(&l, p::FROM_NETDEV, &f);
    assert_eq!(r.retval, TC_ACT_REDIRECT, "published container port reached directly");
    let o = check(&r.data_out);
    assert_eq!((o.src, o.dst, o.dport, o.hop), (client(), sb(), 7000, 63), "no NAT, a routed hop");
    let r = run(&l, p::FROM_NETDEV, &frame(TCP, client(), sb(), 40401, 22, b""));
    assert_eq!(r.retval, TC_ACT_SHOT, "an unpublished port is closed");
    let r = run(&l, p::FROM_NETDEV, &frame(ICMP6, client(), sb(), 0x77, 0, b"ping"));
    assert_eq!(r.retval, TC_ACT_REDIRECT, "ICMPv6 echo reaches the sandbox");
    // Replies go back untranslated.
    let r = run(&l, p::FROM_CONTAINER, &frame(TCP, sb(), client(), 7000, 40400, b""));
    let o = check(&r.data_out);
    assert_eq!((o.src, o.sport), (sb(), 7000));
    // nat-unprotected: every port of the sandbox is reachable directly.
    let l = setup_with(NET_F_ICC | NET_F_MASQUERADE);
    let r = run(&l, p::FROM_NETDEV, &frame(TCP, client(), sb(), 40402, 22, b""));
    assert_eq!(r.retval, TC_ACT_REDIRECT);
}

/// Neighbour discovery and router solicitation/advertisement frames.
fn nd(ty: u8, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0, 0, 0, 0, 0];
    if ty == 135 || ty == 136 {
        m.extend_from_slice(&gw().octets()); // target
    }
    let c = csum(&[pseudo(src, dst, ICMP6, m.len()), m.clone()].concat(), 0);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = frame_raw(ICMP6, src, dst, &[], &m);
    f[14 + 7] = 255;
    f
}

#[test]
fn neighbour_discovery_passes_untouched_everywhere() {
    require_root!();
    // icc=false too: ND is never filtered (as ARP is not).
    for flags in [NET_F_ICC | NET_F_MASQUERADE | NET_F_PROTECT, NET_F_MASQUERADE | NET_F_PROTECT] {
        let l = setup_with(flags);
        let frames = [
            nd(133, sb(), a("ff02::2")),                         // router solicitation
            nd(134, gw(), a("ff02::1")),                         // router advertisement
            nd(135, sb(), a("ff02::1:ff00:1")),                  // neighbour solicitation (solicited-node)
            nd(135, sb(), gw()),                                 // unicast NS (NUD) to the gateway
            nd(136, sb(), sb2()),                                // neighbour advertisement to a neighbour
            nd(135, Ipv6Addr::UNSPECIFIED, a("ff02::1:ff00:2")), // DAD
        ];
        for (i, f) in frames.iter().enumerate() {
            let r = run(&l, p::FROM_CONTAINER, f);
            assert_eq!((r.retval, r.data_out == *f), (TC_ACT_OK, true), "from a sandbox: type {}", f[54]);
            // On the uplink, ND for the host's own addresses (one to a sandbox's address from
            // outside is dropped by the protections, as everything else to it).
            if i == 4 {
                continue;
            }
            for prog in [p::FROM_NETDEV, p::TO_NETDEV] {
                let r = run(&l, prog, f);
                assert_eq!((r.retval, r.data_out == *f), (TC_ACT_OK, true), "{prog}: type {}", f[54]);
            }
            assert_eq!(run(&l, p::XDP_UPLINK, f).retval, XDP_PASS);
        }
        assert!(ct(&l).is_empty());
        let d = l.drop_stats().unwrap();
        assert_eq!(d.values().sum::<u64>(), 0, "nothing dropped: {d:?}");
    }
}

#[test]
fn icc_and_isolation6() {
    require_root!();
    let l = setup();
    // Same network, icc=true: straight into the neighbour's veth.
    let f = frame(TCP, sb(), sb2(), 40500, 80, b"");
    let r = run(&l, p::FROM_CONTAINER, &f);
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    assert_eq!(&r.data_out[0..6], &SB2_MAC);
    // Another network: isolated (both ways).
    let r = run(&l, p::FROM_CONTAINER, &frame(TCP, sb(), other(), 40501, 80, b""));
    assert_eq!(r.retval, TC_ACT_SHOT);
    let r = run(&l, p::FROM_CONTAINER, &frame(TCP, other(), sb(), 40502, 80, b""));
    assert_eq!(r.retval, TC_ACT_SHOT);
    assert_eq!(l.drop_stats().unwrap()["isolation"], 2);
    // Multicast with icc=true: the bridge's (passed).
    let r = run(&l, p::FROM_CONTAINER, &frame(UDP, sb(), a("ff02::fb"), 5353, 5353, b"mdns"));
    assert_eq!(r.retval, TC_ACT_OK);
    // icc=false: neighbours and multicast between sandboxes are dropped (ND is not, above).
    let l = setup_with(NET_F_MASQUERADE | NET_F_PROTECT);
    assert_eq!(run(&l, p::FROM_CONTAINER, &f).retval, TC_ACT_SHOT);
    let r = run(&l, p::FROM_CONTAINER, &frame(UDP, sb(), a("ff02::fb"), 5353, 5353, b"mdns"));
    assert_eq!(r.retval, TC_ACT_SHOT);
    assert_eq!(l.drop_stats().unwrap()["icc"], 2);
    // The gateway (a host address) stays reachable, and published ports through it.
    let r = run(&l, p::FROM_CONTAINER, &frame(TCP, sb(), gw(), 40503, 22, b""));
    assert_eq!(r.retval, TC_ACT_OK);
}

#[test]
fn hairpin6_snats_to_the_gateway_and_replies_come_back() {
    require_root!();
    let l = setup();
    // Sandbox fd00:17::3 reaches the host's published port 8080 (its neighbour .2 serves it).
    let r = run(&l, p::FROM_CONTAINER, &frame(TCP, sb2(), host(), 45000, 8080, b"hairpin"));
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let o = check(&r.data_out);
    assert_eq!((o.src, o.dst, o.dport), (gw(), sb(), 7000), "DNAT to the target, SNAT to the gateway");
    let hairpin_range = |p: u16| {
        p >= netd_common::SNAT_PORT_MIN || (netd_common::HAIRPIN_LOW_MIN..=netd_common::HAIRPIN_LOW_MAX).contains(&p)
    };
    assert!(hairpin_range(o.sport), "never the original port: {}", o.sport);
    // The target's reply comes back to the client as the host's published port.
    let r = run(&l, p::FROM_CONTAINER, &frame(TCP, sb(), gw(), 7000, o.sport, b"back"));
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let b = check(&r.data_out);
    assert_eq!((b.src, b.dst, b.sport, b.dport, b.dmac), (host(), sb2(), 8080, 45000, SB2_MAC));
    // Its own published port (the sandbox reaches itself).
    let r = run(&l, p::FROM_CONTAINER, &frame(UDP, sb(), host(), 45001, 5353, b"self"));
    let o = check(&r.data_out);
    assert_eq!((o.src, o.dst, o.dport), (gw(), sb(), 7000));
}

#[test]
fn icmp6_echo_reply_id_is_translated_back() {
    require_root!();
    let mut l = setup();
    // A masqueraded ping: the host sent id 61000 for the sandbox's id 7 (seeded).
    let k = key(ICMP6, server(), host(), 0, 61000);
    let v = CtValue6 {
        saddr: w(server()),
        daddr: w(sb()),
        sport: 0,
        dport: be_port(7),
        action: CT_ACT_PEER,
        ifindex: 42,
        dmac: SB_MAC,
        smac: GW_MAC,
        ..Default::default()
    };
    hmap::<CtKey6, CtValue6>(&mut l, m6::CT_V6).insert(k, v, 0).unwrap();
    let r = run(&l, p::FROM_NETDEV, &frame(ICMP6, server(), host(), 0, 61000, b"pingdata"));
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let o = check(&r.data_out);
    assert_eq!((o.src, o.dst, o.dport), (server(), sb(), 7), "echo reply id back to the sandbox's");
}

/// An ICMPv6 error (type, code, 4-byte field) from `src` to `dst` quoting `quoted` (an IPv6
/// packet from its IP header on), checksum valid.
fn icmp6_error(ty: u8, code: u8, field: u32, src: Ipv6Addr, dst: Ipv6Addr, quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&field.to_be_bytes());
    m.extend_from_slice(quoted);
    let c = csum(&[pseudo(src, dst, ICMP6, m.len()), m.clone()].concat(), 0);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    frame_raw(ICMP6, src, dst, &[], &m)
}

/// The quoted packet of an ICMPv6 error frame: (src, dst, sport, dport).
fn quote_of(f: &[u8]) -> (Ipv6Addr, Ipv6Addr, u16, u16) {
    let q = &f[14 + 40 + 8..];
    (
        Ipv6Addr::from(<[u8; 16]>::try_from(&q[8..24]).unwrap()),
        Ipv6Addr::from(<[u8; 16]>::try_from(&q[24..40]).unwrap()),
        u16::from_be_bytes([q[40], q[41]]),
        u16::from_be_bytes([q[42], q[43]]),
    )
}

#[test]
fn icmp6_errors_about_published_flows_are_translated_back() {
    require_root!();
    let l = setup();
    let r = run(&l, p::FROM_NETDEV, &frame(UDP, client(), host(), 40600, 5353, b"q"));
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let quoted = r.data_out[14..].to_vec(); // as the sandbox got it: client:40600 -> sb:7000
    // The sandbox answers port unreachable (type 1 code 4), quoting it.
    let e = icmp6_error(1, 4, 0, sb(), client(), &quoted);
    let r = run(&l, p::FROM_CONTAINER, &e);
    let o = check(&r.data_out);
    assert_eq!((o.src, o.dst), (host(), client()), "outer: from the host's address to the client");
    assert_eq!(quote_of(&r.data_out), (client(), host(), 40600, 5353), "quote: the client's own packet");
    // The kernel's own time exceeded (hop limit 1 after DNAT), leaving by the uplink: the
    // client sees its own packet quoted, never the sandbox's address.
    let mut f = frame(TCP, client(), host(), 40601, 8080, b"");
    f[14 + 7] = 1;
    let r = run(&l, p::FROM_NETDEV, &f);
    assert_eq!(r.retval, TC_ACT_OK, "hop limit 1: translated, left to the kernel to answer");
    let translated = check(&r.data_out);
    assert_eq!((translated.dst, translated.hop), (sb(), 1));
    let e = icmp6_error(3, 0, 0, gw(), client(), &r.data_out[14..]);
    let r = run(&l, p::TO_NETDEV, &e);
    assert_eq!(r.retval, TC_ACT_OK);
    let o = check(&r.data_out);
    assert_eq!((o.src, o.dst), (gw(), client()), "a router's error keeps its source");
    assert_eq!(quote_of(&r.data_out), (client(), host(), 40601, 8080));
}

/// Both directions of a masqueraded flow: sandbox `sb():sport` -> `server():dport` leaving as
/// `host():nat_port`.
fn masq_pair(proto: u8, sport: u16, dport: u16, nat_port: u16) -> [(CtKey6, CtValue6); 2] {
    let k = key(proto, sb(), server(), sport, dport);
    let v = CtValue6 {
        saddr: w(host()),
        daddr: w(server()),
        sport: be_port(nat_port),
        dport: be_port(dport),
        action: CT_ACT_FIB,
        flags: CT_F_SEEN,
        ..Default::default()
    };
    let rk = key(proto, server(), host(), dport, nat_port);
    let rv = CtValue6 {
        saddr: w(server()),
        daddr: w(sb()),
        sport: be_port(dport),
        dport: be_port(sport),
        action: CT_ACT_PEER,
        flags: CT_F_REPLY,
        ifindex: 42,
        dmac: SB_MAC,
        smac: GW_MAC,
        ..Default::default()
    };
    [(k, v), (rk, rv)]
}

#[test]
fn icmp6_errors_about_masqueraded_flows_reach_the_sandbox() {
    require_root!();
    let mut l = setup();
    {
        let mut c = hmap::<CtKey6, CtValue6>(&mut l, m6::CT_V6);
        for (k, v) in masq_pair(UDP, 5000, 53, 62000).into_iter().chain(masq_pair(TCP, 5001, 443, 62001)) {
            c.insert(k, v, 0).unwrap();
        }
    }
    let router = a("2001:db8:1::fe");
    // What left the host: host:62000 -> server:53 (UDP) and host:62001 -> server:443 (TCP).
    let udp_out = frame(UDP, host(), server(), 62000, 53, &[0u8; 32]);
    let tcp_out = frame(TCP, host(), server(), 62001, 443, b"");
    for (ty, code, field, from, quoted, sport, dport) in [
        (2u8, 0u8, 1280u32, router, &udp_out, 5000u16, 53u16), // packet too big, from a router
        (3, 0, 0, router, &tcp_out, 5001, 443),                // time exceeded
        (4, 0, 42, router, &udp_out, 5000, 53),                // parameter problem (pointer 42)
        (1, 4, 0, server(), &udp_out, 5000, 53),               // port unreachable from the server
    ] {
        let e = icmp6_error(ty, code, field, from, host(), &quoted[14..]);
        let r = run(&l, p::FROM_NETDEV, &e);
        assert_eq!(r.retval, TC_ACT_REDIRECT, "type {ty} into the sandbox");
        let o = check(&r.data_out);
        assert_eq!((o.src, o.dst, o.dmac), (from, sb(), SB_MAC), "type {ty}: outer");
        assert_eq!(quote_of(&r.data_out), (sb(), server(), sport, dport), "type {ty}: the sandbox's own packet");
        assert_eq!(&r.data_out[14 + 44..14 + 48], &field.to_be_bytes(), "MTU / pointer kept");
    }
    // An error about no tracked flow: the kernel's, untouched.
    let stray = frame(UDP, host(), server(), 62999, 53, b"");
    let e = icmp6_error(1, 4, 0, server(), host(), &stray[14..]);
    let r = run(&l, p::FROM_NETDEV, &e);
    assert_eq!((r.retval, r.data_out == e), (TC_ACT_OK, true));
}

#[test]
fn later_fragments6_follow_the_first_fragments_translation() {
    require_root!();
    let l = setup();
    // First fragment: UDP header + payload, M set.
    let upper = l4(UDP, client(), host(), 40700, 5353, &[b'a'; 64]);
    let first = frame_raw(UDP, client(), host(), &[frag(0, true, 0x4242)], &upper);
    let r = run(&l, p::FROM_NETDEV, &first);
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let o = check(&r.data_out);
    assert_eq!((o.dst, o.dport), (sb(), 7000), "first fragment DNATed, ports after the fragment header");
    // A later fragment: no L4 header, same translation, payload untouched.
    let later = frame_raw(UDP, client(), host(), &[frag(9, false, 0x4242)], &[b'b'; 32]);
    let r = run(&l, p::FROM_NETDEV, &later);
    assert_eq!(r.retval, TC_ACT_REDIRECT, "delivered where the first fragment went");
    let o = check(&r.data_out);
    assert_eq!((o.dst, o.hop, o.dmac), (sb(), 63, SB_MAC));
    assert_eq!(&r.data_out[14 + 48..], &later[14 + 48..]);
    // A later fragment whose first was never seen, to a host address: dropped and counted.
    let before = l.drop_stats().unwrap()["frag_unknown"];
    let stray = frame_raw(UDP, client(), host(), &[frag(9, false, 0x4343)], &[b'b'; 32]);
    assert_eq!(run(&l, p::FROM_NETDEV, &stray).retval, TC_ACT_SHOT);
    assert_eq!(l.drop_stats().unwrap()["frag_unknown"], before + 1);
    // The host's own fragmented datagram: its later fragments pass.
    let own = frame_raw(UDP, client(), host(), &[frag(0, true, 0x4444)], &l4(UDP, client(), host(), 1, 9999, &[0; 64]));
    assert_eq!(run(&l, p::FROM_NETDEV, &own).retval, TC_ACT_OK);
    let own_later = frame_raw(UDP, client(), host(), &[frag(9, false, 0x4444)], &[b'c'; 32]);
    let r = run(&l, p::FROM_NETDEV, &own_later);
    assert_eq!((r.retval, r.data_out == own_later), (TC_ACT_OK, true));
    // Outbound: a sandbox's later fragment with no translated first one would leave with the
    // sandbox's address under masquerade: dropped, never leaked.
    let out = frame_raw(UDP, sb(), server(), &[frag(9, false, 0x4545)], &[b'd'; 32]);
    assert_eq!(run(&l, p::FROM_CONTAINER, &out).retval, TC_ACT_SHOT);
    assert_eq!(l.drop_stats().unwrap()["frag_unknown"], before + 2);
}

/// A TCP segment: sequence and acknowledgement numbers, flags, window, and for a SYN the MSS
/// option and a window scale option (after a NOP, as Linux sends them) when `wscale` is given.
#[allow(clippy::too_many_arguments)]
fn tcp_seg6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    (sport, dport): (u16, u16),
    (seq, ack): (u32, u32),
    flags: u8,
    win: u16,
    wscale: Option<u8>,
) -> Vec<u8> {
    let mut opts = Vec::new();
    if flags & 0x02 != 0 {
        opts.extend_from_slice(&[2, 4, 0x05, 0xa0]); // MSS 1440
        if let Some(ws) = wscale {
            opts.extend_from_slice(&[1, 3, 3, ws]);
        }
    }
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&seq.to_be_bytes());
    u.extend_from_slice(&ack.to_be_bytes());
    u.extend_from_slice(&[(((20 + opts.len()) / 4) << 4) as u8, flags]);
    u.extend_from_slice(&win.to_be_bytes());
    u.extend_from_slice(&[0, 0, 0, 0]);
    u.extend_from_slice(&opts);
    let c = csum(&[pseudo(src, dst, TCP, u.len()), u.clone()].concat(), 0);
    u[16..18].copy_from_slice(&c.to_be_bytes());
    frame_raw(TCP, src, dst, &[], &u)
}

/// `CT_V6` judges RSTs against the receiver's window as `CT_V4` does (the same
/// `netd_common::tcp_window` logic): after a handshake with window scale 7 both ways, a RST
/// 512 KiB past the client's next expected byte is dropped and counted (the old fixed 1 MiB
/// bound took it and closed the flow), one 60,000 bytes in (inside 502 << 7) passes without
/// closing, an exact one closes; a new SYN on the closed flow starts a fresh entry; a RST
/// answering a SYN must acknowledge it.
#[test]
fn rsts6_are_judged_against_the_receivers_window() {
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const ACK: u8 = 0x10;
    require_root!();
    let l = setup();
    let c = |cport: u16, seq: u32, ack: u32, flags: u8, win: u16, ws: Option<u8>| {
        run(&l, p::FROM_NETDEV, &tcp_seg6(client(), host(), (cport, 8080), (seq, ack), flags, win, ws)).retval
    };
    let s = |cport: u16, seq: u32, ack: u32, flags: u8, win: u16, ws: Option<u8>| {
        run(&l, p::FROM_CONTAINER, &tcp_seg6(sb(), client(), (7000, cport), (seq, ack), flags, win, ws)).retval
    };
    let ck = key(TCP, client(), host(), 42000, 8080);
    let sk = key(TCP, sb(), client(), 7000, 42000);
    let closing = |k: &CtKey6| ct_get(&l, k).unwrap().flags & (CT_F_CLOSING | CT_F_RST);
    assert_eq!(c(42000, 1000, 0, SYN, 64240, Some(7)), TC_ACT_REDIRECT);
    assert_ne!(s(42000, 5000, 1001, SYN | ACK, 64800, Some(7)), TC_ACT_SHOT);
    assert_eq!(c(42000, 1001, 5001, ACK, 502, None), TC_ACT_REDIRECT);
    assert_ne!(s(42000, 5001, 1001, ACK | 0x08, 509, None), TC_ACT_SHOT);
    assert_eq!(c(42000, 1001, 5101, ACK, 502, None), TC_ACT_REDIRECT);
    let v = ct_get(&l, &ck).unwrap();
    assert_eq!(v.flags & CT_F_ACKED, CT_F_ACKED, "the ACK marks it established");
    assert_eq!((v.ack, v.wnd >> 4, v.wnd & 15), (5101, 32, 7), "the client's window state");
    let drops = || l.drop_stats().unwrap()["invalid_rst"];
    let d0 = drops();
    assert_eq!(s(42000, 5101 + 512 * 1024, 0, RST, 0, None), TC_ACT_SHOT, "blind RST dropped");
    assert_eq!(c(42000, 1001 + 600_000, 0, RST, 0, None), TC_ACT_SHOT, "blind RST from the client dropped");
    assert_eq!(drops(), d0 + 2, "and counted");
    assert_eq!(closing(&ck) | closing(&sk), 0, "blind RSTs leave the flow open");
    assert_ne!(s(42000, 5101 + 60_000, 0, RST, 0, None), TC_ACT_SHOT, "in the scaled window: passes");
    assert_eq!(closing(&sk), 0, "an inexact RST in the window leaves the flow as it is");
    assert_ne!(s(42000, 5101, 0, RST, 0, None), TC_ACT_SHOT);
    assert_eq!(closing(&sk), CT_F_CLOSING | CT_F_RST, "an exact RST closes");
    // A new SYN on the closed flow: a fresh entry.
    assert_eq!(c(42000, 9000, 0, SYN, 64240, Some(7)), TC_ACT_REDIRECT);
    assert_eq!(closing(&ck), 0, "a fresh entry, not the closed one");
    // A closed port: the sandbox answers a SYN with RST|ACK, which must acknowledge it.
    let sk2 = key(TCP, sb(), client(), 7000, 42200);
    assert_eq!(c(42200, 7000, 0, SYN, 64240, Some(7)), TC_ACT_REDIRECT);
    assert_eq!(s(42200, 0, 12345, RST | ACK, 0, None), TC_ACT_SHOT, "a RST not acknowledging the SYN");
    assert_eq!(closing(&sk2), 0);
    assert_ne!(s(42200, 0, 7001, RST | ACK, 0, None), TC_ACT_SHOT, "the refusal passes");
    assert_ne!(closing(&sk2), 0, "and closes the flow");
}

#[test]
fn a_taken_reply_tuple6_gets_another_client_port_never_overwritten() {
    require_root!();
    let mut l = setup();
    publish(&mut l, Ipv6Addr::UNSPECIFIED, TCP, 8081, sb(), 7000, 4);
    let reply_key = |cport: u16| key(TCP, sb(), client(), 7000, cport);
    let o = check(&run(&l, p::FROM_NETDEV, &frame(TCP, client(), host(), 43000, 8080, b"")).data_out);
    assert_eq!(o.sport, 43000, "the client's port kept when free");
    let first = ct_get(&l, &reply_key(43000)).unwrap();
    let r = run(&l, p::FROM_NETDEV, &frame(TCP, client(), host(), 43000, 8081, b""));
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let o = check(&r.data_out);
    assert_ne!(o.sport, 43000, "another client port toward the sandbox");
    assert_eq!(ct_get(&l, &reply_key(43000)).unwrap(), first, "the first flow's reply entry is untouched");
    for (cport, hp) in [(43000u16, 8080u16), (o.sport, 8081)] {
        let r = run(&l, p::FROM_CONTAINER, &frame(TCP, sb(), client(), 7000, cport, b""));
        let b = check(&r.data_out);
        assert_eq!((b.src, b.sport, b.dport), (host(), hp, 43000));
    }
}

#[test]
fn host_flows6_keep_their_tuple_against_translated_flows() {
    require_root!();
    let mut l = setup();
    {
        let mut up = hmap::<u32, netd_common::v6::UplinkInfo6>(&mut l, m6::UPLINKS_V6);
        // BPF_PROG_TEST_RUN's skb is on the namespace's loopback device (ifindex 1).
        up.insert(1, netd_common::v6::UplinkInfo6 { addr: w(host()) }, 0).unwrap();
    }
    // The host's own UDP datagram from the uplink address: its reply tuple is reserved.
    let f = frame(UDP, host(), server(), 50000, 53, b"q");
    let r = run(&l, p::TO_NETDEV, &f);
    assert_eq!((r.retval, r.data_out == f), (TC_ACT_OK, true));
    let m = ct_get(&l, &key(UDP, server(), host(), 53, 50000)).expect("host flow marker");
    assert_eq!(m.action, CT_ACT_HOSTFLOW);
    // A masqueraded flow holds host:50001 -> server:53; the host's own flow on that tuple gets
    // another source port, and its replies come back to it, never into the sandbox.
    {
        let mut c = hmap::<CtKey6, CtValue6>(&mut l, m6::CT_V6);
        for (k, v) in masq_pair(UDP, 50001, 53, 50001) {
            c.insert(k, v, 0).unwrap();
        }
    }
    let r = run(&l, p::TO_NETDEV, &frame(UDP, host(), server(), 50001, 53, b"q"));
    assert_eq!(r.retval, TC_ACT_OK);
    let o = check(&r.data_out);
    assert_ne!(o.sport, 50001, "another source port for the host's flow");
    let r = run(&l, p::FROM_NETDEV, &frame(UDP, server(), host(), 53, o.sport, b"a"));
    let b = check(&r.data_out);
    assert_eq!((r.retval, b.dst, b.dport), (TC_ACT_OK, host(), 50001), "the reply back to the host's socket");
}

#[test]
fn conntrack6_gc_expires_idle_and_closed_flows_in_pairs() {
    require_root!();
    use netd::dataplane::{
        Dataplane,
        ebpf::{Ebpf, monotonic_ns},
    };
    let mut l = setup();
    let now = monotonic_ns();
    let pair = |proto: u8, sport: u16, age_s: u64, flags: u8| {
        let k = key(proto, client(), host(), sport, 8080);
        let v = CtValue6 {
            saddr: k.saddr,
            daddr: w(sb()),
            sport: k.sport,
            dport: be_port(7000),
            action: CT_ACT_PEER,
            flags,
            last_seen_ns: now - age_s * 1_000_000_000,
            ..Default::default()
        };
        let rk = v.partner_key(proto);
        let rv = CtValue6 {
            saddr: k.daddr,
            daddr: k.saddr,
            sport: k.dport,
            dport: k.sport,
            action: CT_ACT_FIB,
            flags: (flags & CT_F_SEEN) | CT_F_REPLY,
            last_seen_ns: now - age_s * 1_000_000_000,
            ..Default::default()
        };
        [(k, v), (rk, rv)]
    };
    let seen = CT_F_SEEN;
    {
        let mut c = hmap::<CtKey6, CtValue6>(&mut l, m6::CT_V6);
        for (k, v) in pair(UDP, 1000, 300, 0)
            .into_iter() // idle UDP: goes
            .chain(pair(UDP, 1001, 5, 0)) // fresh UDP: stays
            .chain(pair(TCP, 1002, 60, CT_F_CLOSING | CT_F_RST)) // reset, 60 s ago: goes
            .chain(pair(TCP, 1003, 60, 0)) // unanswered SYN, 60 s: stays
            .chain(pair(TCP, 1004, 130, 0)) // unanswered SYN, 130 s: goes
            .chain(pair(TCP, 1005, 200, seen | CT_F_ACKED)) // established, 200 s: stays
            .chain(pair(TCP, 1007, 130, seen | CT_F_ACKED | CT_F_CLOSING)) // half-closed, 130 s: goes
            .chain(pair(UDP, 1009, 60, seen)) // answered UDP, 60 s: stays
            .chain(pair(ICMP6, 1010, 40, seen))
        // ICMPv6, 40 s: goes (30 s)
        {
            c.insert(k, v, 0).unwrap();
        }
    }
    let mut dp = Ebpf::with_loaded(l);
    assert_eq!(dp.gc().unwrap(), 10, "both directions of five expired flows");
    assert_eq!(dp.gc().unwrap(), 0);
}

#[test]
fn unanswered_flows6_are_capped_with_early_drop() {
    require_root!();
    let mut l = setup();
    // The table is at its cap of unanswered flows; the oldest recent new flow is an unanswered
    // UDP flow (both directions present).
    let [(k, v), (rk, rv)] = masq_pair(UDP, 6000, 53, 6000);
    let rv = CtValue6 { flags: CT_F_REPLY, ..rv };
    {
        let mut c = hmap::<CtKey6, CtValue6>(&mut l, m6::CT_V6);
        c.insert(k, v, 0).unwrap();
        c.insert(rk, rv, 0).unwrap();
    }
    {
        let mut nf: Array<&mut MapData, CtKey6> = Array::try_from(l.ebpf.map_mut("NEW_FLOWS_V6").unwrap()).unwrap();
        nf.set(0, k, 0).unwrap();
        let mut u: Array<&mut MapData, u64> = Array::try_from(l.ebpf.map_mut(m6::CT_UNASSURED_V6).unwrap()).unwrap();
        u.set(0, CT_UNASSURED_MAX_V6, 0).unwrap();
    }
    let r = run(&l, p::FROM_NETDEV, &frame(TCP, client(), host(), 44000, 8080, b""));
    assert_eq!(r.retval, TC_ACT_REDIRECT, "the new flow is admitted");
    assert!(ct_get(&l, &k).is_none() && ct_get(&l, &rk).is_none(), "the oldest unanswered flow evicted, both ways");
    assert_eq!(l.drop_stats().unwrap()["ct_early_drop"], 1);
    // Nothing unanswered left among the oldest: the next new flow is refused (ct_full).
    {
        let mut u: Array<&mut MapData, u64> = Array::try_from(l.ebpf.map_mut(m6::CT_UNASSURED_V6).unwrap()).unwrap();
        u.set(0, CT_UNASSURED_MAX_V6, 0).unwrap();
    }
    let r = run(&l, p::FROM_NETDEV, &frame(TCP, client(), host(), 44001, 8080, b""));
    assert_eq!(r.retval, TC_ACT_SHOT);
    assert_eq!(l.drop_stats().unwrap()["ct_full"], 1);
}

/// `::ffff:a.b.c.d`.
fn mapped(v4: std::net::Ipv4Addr) -> Ipv6Addr {
    v4.to_ipv6_mapped()
}

/// The NAT46 fragment tests' world: a v4-only sandbox 10.46.0.2 (MAC `mac`) on v4 network 7
/// (gateway 10.46.0.1) and its binding [::]:5400/udp -> ::ffff:10.46.0.2:7000. Returns the
/// sandbox's and the gateway's addresses.
fn nat46_udp_world(l: &mut Loaded, mac: [u8; 6]) -> (std::net::Ipv4Addr, std::net::Ipv4Addr) {
    use netd::dataplane::ebpf::be_addr;
    use netd_common::{NetworkInfo, map_names as m};
    use std::net::Ipv4Addr;
    let (s4, gw4) = (Ipv4Addr::new(10, 46, 0, 2), Ipv4Addr::new(10, 46, 0, 1));
    hmap::<u32, EndpointInfo>(l, m::ENDPOINTS)
        .insert(be_addr(s4), EndpointInfo { ifindex: 46, net: 7, mac, _pad: [0; 2] }, 0)
        .unwrap();
    let info = NetworkInfo {
        subnet: be_addr(Ipv4Addr::new(10, 46, 0, 0)),
        mask: be_addr(Ipv4Addr::new(255, 255, 255, 0)),
        gateway: be_addr(gw4),
        bridge_ifindex: 3,
        gateway_mac: GW_MAC,
        _pad: [0; 2],
        flags: NET_F_ICC | NET_F_MASQUERADE | NET_F_PROTECT,
    };
    hmap::<u32, NetworkInfo>(l, m::NETWORKS).insert(7, info, 0).unwrap();
    publish(l, Ipv6Addr::UNSPECIFIED, UDP, 5400, mapped(s4), 7000, 2);
    (s4, gw4)
}

/// The IPv4 header's checksum folds to zero.
fn ip4_csum_ok(h: &[u8]) -> bool {
    csum(&h[..20], 0) == 0
}

#[test]
fn nat46_fragments_become_ipv4_fragments() {
    require_root!();
    let mut l = setup();
    // A v4-only sandbox on v4 network 7, its binding [::]:5400/udp -> ::ffff:10.46.0.2:7000.
    let (s4, gw4) = nat46_udp_world(&mut l, SB_MAC);
    // One 104-byte UDP datagram (8 + 96), checksummed whole, in two fragments: 72 bytes at
    // offset 0 (M set), 32 at offset 9 (8-byte units).
    let payload: Vec<u8> = (0..96u8).collect();
    let udp = l4(UDP, client(), host(), 40800, 5400, &payload);
    let first = frame_raw(UDP, client(), host(), &[frag(0, true, 0xabcd_1234)], &udp[..72]);
    let later = frame_raw(UDP, client(), host(), &[frag(9, false, 0xabcd_1234)], &udp[72..]);
    let r1 = run(&l, p::FROM_NETDEV, &first);
    assert_eq!(r1.retval, TC_ACT_REDIRECT, "the first fragment into the sandbox");
    let r2 = run(&l, p::FROM_NETDEV, &later);
    assert_eq!(r2.retval, TC_ACT_REDIRECT, "the later fragment follows its FRAGS_V6 record");
    for (o, tot, frag_field) in [(&r1.data_out, 20 + 72, 0x2000u16), (&r2.data_out, 20 + 32, 9)] {
        assert_eq!(&o[12..14], &[0x08, 0x00], "IPv4");
        let h = &o[14..34];
        assert_eq!(h[0], 0x45);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]) as usize, tot, "total length");
        assert_eq!(o.len(), 14 + tot);
        assert_eq!(u16::from_be_bytes([h[4], h[5]]), 0x1234, "id: the fragment id's low 16 bits");
        assert_eq!(u16::from_be_bytes([h[6], h[7]]), frag_field, "MF / offset, DF clear");
        assert_eq!((h[8], h[9]), (63, UDP), "TTL = hop limit - 1, protocol");
        assert!(ip4_csum_ok(h), "header checksum");
        assert_eq!((&h[12..16], &h[16..20]), (&gw4.octets()[..], &s4.octets()[..]), "from the gateway to the sandbox");
        assert_eq!(&o[0..6], &SB_MAC);
    }
    assert_eq!(&r2.data_out[34..], &udp[72..], "the later fragment's payload untouched");
    // Reassembled, the datagram's checksum holds over the IPv4 pseudo-header, port 7000.
    let mut d = r1.data_out[34..].to_vec();
    d.extend_from_slice(&r2.data_out[34..]);
    assert_eq!(u16::from_be_bytes([d[2], d[3]]), 7000);
    let mut ph = Vec::new();
    ph.extend_from_slice(&gw4.octets());
    ph.extend_from_slice(&s4.octets());
    ph.extend_from_slice(&[0, UDP]);
    ph.extend_from_slice(&(d.len() as u16).to_be_bytes());
    assert_eq!(csum(&[ph, d.clone()].concat(), 0), 0, "UDP checksum of the reassembled datagram");
    assert_eq!(&d[8..], &payload[..]);
    assert_eq!(l.drop_stats().unwrap()["nat46_untranslatable"], 0);
}

/// Ethernet + IPv4 (id, fragment field, TTL 64, checksummed) + `data`.
fn frame4(proto: u8, src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, id: u16, frag: u16, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + data.len()) as u16).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = csum(&h, 0);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&h);
    f.extend_from_slice(data);
    f
}

#[test]
fn nat46_reply_fragments_become_ipv6_fragments() {
    use netd_common::{CONFIG_F_ENABLED, CONFIG_F_NAT46, Config};
    require_root!();
    let mut l = setup();
    l.set_config(Config { netns_cookie: 0, flags: CONFIG_F_ENABLED | CONFIG_F_NAT46, port_lo: 0, port_hi: 0 }).unwrap();
    let (s4, gw4) = nat46_udp_world(&mut l, [2, 0x42, 10, 46, 0, 2]);
    // The flow: the v6 sandbox sb() to [host]:5400 (a hairpin: its replies go back into sb's
    // veth, no route needed), NAT46 to 10.46.0.2:7000 from the gateway's drawn port.
    let q = frame(UDP, sb(), host(), 40800, 5400, b"q");
    let r = run(&l, p::FROM_CONTAINER, &q);
    assert_eq!(r.retval, TC_ACT_REDIRECT, "the NAT46 hairpin");
    assert_eq!(&r.data_out[12..14], &[0x08, 0x00]);
    let port = u16::from_be_bytes([r.data_out[34], r.data_out[35]]);
    // The sandbox's 104-byte reply datagram in two IPv4 fragments (72 bytes MF, 32 at 9).
    let payload: Vec<u8> = (100..196u8).collect();
    let mut udp = vec![];
    udp.extend_from_slice(&7000u16.to_be_bytes());
    udp.extend_from_slice(&port.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&payload);
    let mut ph = Vec::new();
    ph.extend_from_slice(&s4.octets());
    ph.extend_from_slice(&gw4.octets());
    ph.extend_from_slice(&[0, UDP]);
    ph.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    let c = csum(&[ph, udp.clone()].concat(), 0);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let first = frame4(UDP, s4, gw4, 0x4321, 0x2000, &udp[..72]);
    let later = frame4(UDP, s4, gw4, 0x4321, 9, &udp[72..]);
    let r1 = run(&l, p::FROM_CONTAINER, &first);
    assert_eq!(r1.retval, TC_ACT_REDIRECT, "the first fragment back to the v6 sandbox");
    let r2 = run(&l, p::FROM_CONTAINER, &later);
    assert_eq!(r2.retval, TC_ACT_REDIRECT, "the later fragment follows its FRAGS_46 record");
    for (o, len, field) in [(&r1.data_out, 72usize, 1u16), (&r2.data_out, 32, 9 << 3)] {
        assert_eq!(&o[12..14], &[0x86, 0xdd], "IPv6");
        let ip = &o[14..];
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]) as usize, 8 + len, "payload length");
        assert_eq!(o.len(), 14 + 48 + len);
        assert_eq!((ip[6], ip[7]), (44, 63), "a fragment header next, hop limit = TTL - 1");
        assert_eq!((&ip[8..24], &ip[24..40]), (&host().octets()[..], &sb().octets()[..]));
        let fh = &ip[40..48];
        assert_eq!((fh[0], fh[1]), (UDP, 0));
        assert_eq!(u16::from_be_bytes([fh[2], fh[3]]), field, "offset, M = MF");
        assert_eq!(u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]), 0x4321, "id: the v4 id zero-extended");
        assert_eq!(&o[0..6], &SB_MAC);
    }
    assert_eq!(&r2.data_out[62..], &udp[72..], "the later fragment's payload untouched");
    let mut d = r1.data_out[62..].to_vec();
    d.extend_from_slice(&r2.data_out[62..]);
    assert_eq!((u16::from_be_bytes([d[0], d[1]]), u16::from_be_bytes([d[2], d[3]])), (5400, 40800));
    assert_eq!(csum(&[pseudo(host(), sb(), UDP, d.len()), d.clone()].concat(), 0), 0, "UDP checksum, reassembled");
    assert_eq!(&d[8..], &payload[..]);
    assert_eq!(l.drop_stats().unwrap()["nat46_untranslatable"], 0);
}

/// A client reusing its source port after its last connection to the same published port
/// closed: the SYN restarts both entries in place (the IPv4 twin:
/// `packet_nat::a_reused_client_port_restarts_its_closed_published_flow_in_place`). Same
/// translation, fresh TCP state, the reply's cached route kept, counted as one new unanswered
/// flow, no other entry; once the binding leads elsewhere, a closed flow gets the new
/// translation and its old pair goes.
#[test]
fn a_reused_client_port6_restarts_its_closed_published_flow_in_place() {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FIN_ACK: u8 = 0x11;
    require_root!();
    let mut l = setup();
    let ck = key(TCP, client(), host(), 42200, 8080);
    let sk = key(TCP, sb(), client(), 7000, 42200);
    let c = |l: &Loaded, seq: u32, ack: u32, flags: u8| {
        run(l, p::FROM_NETDEV, &tcp_seg6(client(), host(), (42200, 8080), (seq, ack), flags, 502, Some(7)))
    };
    let s = |l: &Loaded, sport: u16, seq: u32, ack: u32, flags: u8| {
        run(l, p::FROM_CONTAINER, &tcp_seg6(sb(), client(), (sport, 42200), (seq, ack), flags, 509, Some(7)))
    };
    let unassured = |l: &Loaded| {
        let u: Array<&MapData, u64> = Array::try_from(l.ebpf.map(m6::CT_UNASSURED_V6).unwrap()).unwrap();
        u.get(&0, 0).unwrap() as i64
    };
    assert_eq!(c(&l, 1000, 0, SYN).retval, TC_ACT_REDIRECT);
    assert_ne!(s(&l, 7000, 5000, 1001, SYN | ACK).retval, TC_ACT_SHOT);
    assert_eq!(c(&l, 1001, 5001, ACK).retval, TC_ACT_REDIRECT);
    assert_eq!(c(&l, 1001, 5001, FIN_ACK).retval, TC_ACT_REDIRECT);
    assert_ne!(ct_get(&l, &ck).unwrap().flags & CT_F_CLOSING, 0, "the client's FIN closes its direction");
    // The reply entry's route as a first reply caches it (the test's namespace has none).
    const DMAC: [u8; 6] = [2, 0, 0, 0, 0, 0x77];
    {
        let mut g: Array<&mut MapData, u32> =
            Array::try_from(l.ebpf.map_mut(netd_common::map_names::FIB_GEN).unwrap()).unwrap();
        g.set(0, 5, 0).unwrap();
        let mut m = hmap::<CtKey6, CtValue6>(&mut l, m6::CT_V6);
        let mut v = m.get(&sk, 0).unwrap();
        (v.ifindex, v.dmac, v.smac, v.fib_mtu, v.fib_gen) = (77, DMAC, [2, 0, 0, 0, 0, 0x78], 1500, 5);
        m.insert(sk, v, 0).unwrap();
    }
    assert_eq!(ct(&l).len(), 2);
    let u0 = unassured(&l);

    // The same client port again, a new ISN: the same translation, both entries restarted.
    let r = c(&l, 90_000, 0, SYN);
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let o = check(&r.data_out);
    assert_eq!((o.src, o.dst, o.sport, o.dport), (client(), sb(), 42200, 7000));
    let (cv, sv) = (ct_get(&l, &ck).unwrap(), ct_get(&l, &sk).unwrap());
    assert_eq!(cv.flags & (CT_F_CLOSING | CT_F_ACKED), 0, "the client's state starts afresh");
    assert_eq!(sv.flags, CT_F_REPLY, "the reply direction not seen yet");
    assert_eq!((sv.ifindex, sv.dmac, sv.fib_gen), (77, DMAC, 5), "restarted in place: the cached route kept");
    assert_eq!(ct(&l).len(), 2, "no other entry");
    assert_eq!(unassured(&l), u0 + 1, "an unanswered flow again, counted once");
    // The SYN-ACK goes out along the cached route, translated back.
    let r = s(&l, 7000, 30_000, 90_001, SYN | ACK);
    assert_eq!(r.retval, TC_ACT_REDIRECT, "bpf_redirect along the cached route");
    let o = check(&r.data_out);
    assert_eq!((o.src, o.dst, o.sport, o.dport, o.dmac), (host(), client(), 8080, 42200, DMAC));
    assert_eq!(c(&l, 90_001, 30_001, ACK).retval, TC_ACT_REDIRECT);
    assert_ne!(ct_get(&l, &ck).unwrap().flags & CT_F_ACKED, 0);

    // Closed again, and the port now leads to 7001: a new translation, the old pair gone.
    assert_eq!(c(&l, 90_001, 30_001, FIN_ACK).retval, TC_ACT_REDIRECT);
    publish(&mut l, Ipv6Addr::UNSPECIFIED, TCP, 8080, sb(), 7001, 0);
    let r = c(&l, 200_000, 0, SYN);
    assert_eq!(r.retval, TC_ACT_REDIRECT);
    let o = check(&r.data_out);
    assert_eq!((o.dst, o.sport, o.dport), (sb(), 42200, 7001), "the new binding");
    assert!(ct_get(&l, &sk).is_none(), "the closed pair's reply entry went with it");
    let n = ct_get(&l, &key(TCP, sb(), client(), 7001, 42200)).expect("the new reply entry");
    assert_eq!((n.ifindex, n.fib_gen), (0, 0), "a new entry: no route cached yet");
    assert_eq!(ct(&l).len(), 2);
}
