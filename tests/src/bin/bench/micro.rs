//! `netd-bench micro`: the established-flow bodies of netd's TC programs timed by the kernel
//! alone (`BPF_PROG_TEST_RUN` with a repeat count), next to the floor programs (`floor.rs`) timed
//! the same way. No namespaces, no traffic, no scheduler between the runs: a steadier measure
//! of a program change than the run-time statistics of live traffic on a loaded machine (issue
//! 19). What it leaves out: the copy of a cloned packet's head on its first write (a test-run
//! packet is never cloned; `floor_write` in the live profile measures that) and the redirect
//! itself (a test run only returns the verdict).
//!
//! Each case seeds two conntrack entries that translate a packet's tuple into the other's, so
//! every run of a repeated test run rewrites the packet (addresses, ports, checksums, TTL, MACs)
//! and the packet is back where it started after an even number of runs, which is checked.
//!
//! A new connection's first segments (`new_flows`) are timed one run per test run, next to the
//! empty program timed the same way (what a single run's set-up and timer cost): a fresh
//! client port's SYN and the SYN-ACK, and a SYN from the same port once that flow closed, for
//! IPv4 and IPv6.
use std::{net::Ipv4Addr, os::fd::AsFd};

use anyhow::{Result, bail};
use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use netd::{
    dataplane::ebpf::{be_addr, be_port},
    ebpf::{Loaded, test_run_repeat},
};
use netd_common::{CT_ACT_FIB, CT_ACT_PEER, CT_F_ACKED, CT_F_REPLY, CT_F_SEEN, CtKey, CtValue, map_names as m};
use netd_tests::frames::csum;

const HOST: [u8; 4] = [198, 51, 100, 1];
const CLIENT: [u8; 4] = [198, 51, 100, 2];
const SB: [u8; 4] = [172, 17, 0, 2];
const SB_MAC: [u8; 6] = [0x02, 0x42, 172, 17, 0, 2];
const GW_MAC: [u8; 6] = [0x02, 0x42, 0xaa, 0xbb, 0xcc, 0xdd];
const TC_ACT_REDIRECT: u32 = 7;
/// Runs per test run: even (the packet comes back to its first tuple), and few enough that the
/// TTL (255, one less per routed hop) never reaches 1.
const REPEAT: u32 = 200;

/// An Ethernet + IPv4 (DF, TTL 255) + TCP ACK or UDP frame with `payload` bytes, checksums valid.
fn frame(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    frame_flags(proto, 0x10, src, dst, sport, dport, payload)
}

/// [`frame`] with the TCP flags byte given (0x02 a SYN, 0x12 a SYN-ACK).
fn frame_flags(proto: u8, flags: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        l4.extend_from_slice(&1000u32.to_be_bytes());
        l4.extend_from_slice(&2000u32.to_be_bytes());
        l4.extend_from_slice(&[0x50, flags, 0x20, 0x00, 0, 0, 0, 0]); // window 8192
    } else {
        l4.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend(std::iter::repeat_n(0x61u8, payload));
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    let c = csum(&[pseudo.as_slice(), &l4].concat());
    let at = if proto == 6 { 16 } else { 6 };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 255;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    // The MACs the entries set (the packet comes back to them).
    let mut f = [SB_MAC, GW_MAC].concat();
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}

fn key(proto: u8, s: [u8; 4], d: [u8; 4], sp: u16, dp: u16) -> CtKey {
    CtKey {
        saddr: be_addr(Ipv4Addr::from(s)),
        daddr: be_addr(Ipv4Addr::from(d)),
        sport: be_port(sp),
        dport: be_port(dp),
        proto,
        _pad: [0; 3],
    }
}

/// An established entry rewriting to `s:sp -> d:dp`, delivered by `action`.
fn entry(action: u8, s: [u8; 4], d: [u8; 4], sp: u16, dp: u16, reply: bool) -> CtValue {
    CtValue {
        saddr: be_addr(Ipv4Addr::from(s)),
        daddr: be_addr(Ipv4Addr::from(d)),
        sport: be_port(sp),
        dport: be_port(dp),
        action,
        flags: CT_F_SEEN | CT_F_ACKED | if reply { CT_F_REPLY } else { 0 },
        fib_mtu: 1500,
        ifindex: 42,
        dmac: SB_MAC,
        smac: GW_MAC,
        stats_slot: 1,
        ack: 1000,
        wnd: 0xfff0,
        fib_gen: 5,
        ..Default::default()
    }
}

struct Case {
    name: &'static str,
    prog: &'static str,
    frame: Vec<u8>,
    /// (key, value) pairs to seed.
    ct: Vec<(CtKey, CtValue)>,
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for proto in [6u8, 17] {
        // Uplink ingress: a client's packet to a published port, DNAT into the sandbox
        // (`bpf_redirect_peer`). The second entry maps the sandbox tuple back, so runs alternate.
        v.push(Case {
            name: if proto == 6 { "from_netdev, published port, TCP ACK" } else { "from_netdev, published port, UDP" },
            prog: netd_common::prog_names::FROM_NETDEV,
            frame: frame(proto, CLIENT, HOST, 40000, 8080, 64),
            ct: vec![
                (key(proto, CLIENT, HOST, 40000, 8080), entry(CT_ACT_PEER, CLIENT, SB, 40000, 7000, false)),
                (key(proto, CLIENT, SB, 40000, 7000), entry(CT_ACT_PEER, CLIENT, HOST, 40000, 8080, false)),
            ],
        });
        // Sandbox veth ingress: the server's reply, reverse DNAT, the cached route (`FIB_GEN`),
        // `bpf_redirect` to the uplink.
        v.push(Case {
            name: if proto == 6 { "from_container, reply, TCP ACK" } else { "from_container, reply, UDP" },
            prog: netd_common::prog_names::FROM_CONTAINER,
            frame: frame(proto, SB, CLIENT, 7000, 40000, 64),
            ct: vec![
                (key(proto, SB, CLIENT, 7000, 40000), entry(CT_ACT_FIB, HOST, CLIENT, 8080, 40000, true)),
                (key(proto, HOST, CLIENT, 8080, 40000), entry(CT_ACT_FIB, SB, CLIENT, 7000, 40000, true)),
            ],
        });
    }
    v
}

/// After an even number of runs the packet is back at its first tuple and MACs, every checksum
/// valid, its TTL one less per run: each run translated it.
fn verify(frame: &[u8], out: &[u8], verdict: u32) -> Result<()> {
    if verdict != TC_ACT_REDIRECT || out.len() != frame.len() {
        bail!("verdict {verdict}, {} bytes out: not redirected", out.len());
    }
    let ip = &out[14..34];
    if csum(ip) != 0 {
        bail!("IPv4 header checksum invalid after {REPEAT} runs");
    }
    if ip[8] as u32 != 255 - REPEAT {
        bail!("TTL {} after {REPEAT} runs: not every run made the routed hop", ip[8]);
    }
    let l4 = &out[34..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, ip[9]]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    if csum(&[pseudo.as_slice(), l4].concat()) != 0 {
        bail!("L4 checksum invalid after {REPEAT} runs");
    }
    let same = |r: std::ops::Range<usize>| out[r.clone()] == frame[r];
    if !same(0..22) || !same(26..frame.len()) {
        bail!("the packet is not back at its first tuple after {REPEAT} runs");
    }
    Ok(())
}

/// Mean ns per run over `calls` test runs of `REPEAT` runs each: (median of the calls' means,
/// minimum).
fn time(prog: std::os::fd::BorrowedFd<'_>, frame: &[u8], calls: usize, check: bool) -> Result<(f64, f64)> {
    let mut d = Vec::with_capacity(calls);
    for _ in 0..calls {
        let r = test_run_repeat(prog, frame, REPEAT)?;
        if check {
            verify(frame, &r.data_out, r.retval)?;
        }
        d.push(r.duration_ns as f64);
    }
    d.sort_by(f64::total_cmp);
    Ok((d[d.len() / 2], d[0]))
}

/// The minimal NAT hop (`floor::NAT`) on the same frames as netd's first cases, each seeded with
/// the identity entry the live bench's flows get (a 40-byte value: the tuple as read, ifindex,
/// MTU, flags, MACs as three words, last seen), checked like netd's (TTL, checksums, the packet
/// otherwise unchanged).
fn floor_nat(calls: usize, check: bool) -> Result<()> {
    use aya::programs::SchedClassifier;
    let mut bpf = aya::Ebpf::load(netd::ebpf::FLOOR_OBJECT)?;
    for (proto, name) in [(6u8, "floor_nat_peer"), (17, "floor_nat_peer"), (6, "floor_nat_fib")] {
        let f = frame(proto, CLIENT, HOST, 40000, 8080, 64);
        let w = |o: usize| u32::from_ne_bytes([f[o], f[o + 1], f[o + 2], f[o + 3]]);
        let key: [u32; 4] = [w(26), w(30), w(34), proto as u32];
        let mut v = [0u8; 40];
        v[0..12].copy_from_slice(&f[26..38]); // saddr, daddr, ports
        v[12..16].copy_from_slice(&42u32.to_ne_bytes());
        v[16..18].copy_from_slice(&1500u16.to_ne_bytes());
        v[20..32].copy_from_slice(&f[0..12]);
        {
            let mut ct: BpfHashMap<&mut MapData, [u32; 4], [u8; 40]> =
                BpfHashMap::try_from(bpf.map_mut("FLOOR_CT").unwrap())?;
            ct.insert(key, v, 0)?;
        }
        let p: &mut SchedClassifier = bpf.program_mut(name).unwrap().try_into()?;
        if p.fd().is_err() {
            p.load()?;
        }
        let (med, min) = time(p.fd()?.as_fd(), &f, calls, check)?;
        println!("| {name}, {} | {med:.0} | {min:.0} |", if proto == 6 { "TCP ACK" } else { "UDP" });
    }
    Ok(())
}

/// A new connection's first segments, one test run each (a repeated run would find the entries
/// the first one inserted): the client's SYN to a published port on the uplink (`from_netdev`:
/// the lookups of the host address, the binding, the sandbox and its network, the reply tuple's
/// check, both inserts, the window's first state, DNAT, `bpf_redirect_peer`), and the server's
/// SYN-ACK (`from_container`, its route already cached: the full body a SYN-ACK takes), then,
/// the flow marked closed, a SYN from the same client port (the closed pair restarted in place,
/// `conntrack::restart_published`). Each call gets its own client port; the entries go again
/// after it (outside the timed runs).
fn new_flows(l: &mut Loaded, calls: usize, check: bool) -> Result<()> {
    use netd_common::{EndpointInfo, NET_F_MASQUERADE, NET_F_PROTECT, NetworkInfo, PublishedKey, PublishedValue};
    let sb = be_addr(Ipv4Addr::from(SB));
    {
        let mut h: BpfHashMap<&mut MapData, u32, u32> = BpfHashMap::try_from(l.ebpf.map_mut(m::HOST_ADDRS).unwrap())?;
        h.insert(be_addr(Ipv4Addr::from(HOST)), 1, 0)?;
    }
    {
        let mut pm: BpfHashMap<&mut MapData, PublishedKey, PublishedValue> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::PUBLISHED_V4).unwrap())?;
        let k = PublishedKey { addr: 0, port: be_port(8080), proto: 6, _pad: 0 };
        pm.insert(k, PublishedValue { addr: sb, port: be_port(7000), _pad: 0, net: 1, stats_slot: 1 }, 0)?;
    }
    {
        let mut em: BpfHashMap<&mut MapData, u32, EndpointInfo> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::ENDPOINTS).unwrap())?;
        em.insert(sb, EndpointInfo { ifindex: 42, net: 1, mac: SB_MAC, _pad: [0; 2] }, 0)?;
    }
    {
        let mut nm: BpfHashMap<&mut MapData, u32, NetworkInfo> =
            BpfHashMap::try_from(l.ebpf.map_mut(m::NETWORKS).unwrap())?;
        let n = NetworkInfo {
            subnet: be_addr(Ipv4Addr::new(172, 17, 0, 0)),
            mask: be_addr(Ipv4Addr::new(255, 255, 0, 0)),
            gateway: be_addr(Ipv4Addr::new(172, 17, 0, 1)),
            bridge_ifindex: 41,
            gateway_mac: GW_MAC,
            _pad: [0; 2],
            flags: NET_F_MASQUERADE | NET_F_PROTECT,
        };
        nm.insert(1, n, 0)?;
    }
    {
        // What one test run costs around any program: the timer's reads and the run's set-up.
        let fds = crate::floor::load_only(crate::floor::EMPTY)?;
        let f = frame(6, CLIENT, HOST, 40000, 8080, 64);
        let mut d: Vec<f64> = (0..calls)
            .map(|_| test_run_repeat(fds[0].as_fd(), &f, 1).map(|r| r.duration_ns as f64))
            .collect::<Result<_, _>>()?;
        d.sort_by(f64::total_cmp);
        println!("| {} (1 run per call) | {:.0} | {:.0} |", crate::floor::EMPTY, d[d.len() / 2], d[0]);
    }
    let (mut syn, mut synack, mut again) =
        (Vec::with_capacity(calls), Vec::with_capacity(calls), Vec::with_capacity(calls));
    for i in 0..calls {
        let cport = 20_000 + i as u16;
        let fk = key(6, CLIENT, HOST, cport, 8080);
        let rk = key(6, SB, CLIENT, 7000, cport);
        let f = frame_flags(6, 0x02, CLIENT, HOST, cport, 8080, 0);
        let r = test_run_repeat(l.prog_fd(netd_common::prog_names::FROM_NETDEV)?, &f, 1)?;
        if check && (r.retval != TC_ACT_REDIRECT || r.data_out[30..34] != SB) {
            bail!("SYN {i}: verdict {}, not translated to the sandbox", r.retval);
        }
        syn.push(r.duration_ns as f64);
        // The reply entry's route as a first SYN-ACK would have cached it.
        {
            let mut ct: BpfHashMap<&mut MapData, CtKey, CtValue> =
                BpfHashMap::try_from(l.ebpf.map_mut(m::CT_V4).unwrap())?;
            let Ok(mut v) = ct.get(&rk, 0) else {
                // (An experiment's object that inserted nothing.)
                let _ = ct.remove(&fk);
                continue;
            };
            v.fib_gen = 5;
            v.fib_mtu = 1500;
            v.ifindex = 43;
            ct.insert(rk, v, 0)?;
        }
        let f = frame_flags(6, 0x12, SB, CLIENT, 7000, cport, 0);
        let r = test_run_repeat(l.prog_fd(netd_common::prog_names::FROM_CONTAINER)?, &f, 1)?;
        if check && (r.retval != TC_ACT_REDIRECT || r.data_out[26..30] != HOST) {
            bail!("SYN-ACK {i}: verdict {}, not translated to the host address", r.retval);
        }
        synack.push(r.duration_ns as f64);
        let mut ct: BpfHashMap<&mut MapData, CtKey, CtValue> = BpfHashMap::try_from(l.ebpf.map_mut(m::CT_V4).unwrap())?;
        // The client closes (as its FIN would mark it), then opens again from the same port.
        let mut v = ct.get(&fk, 0)?;
        v.flags |= netd_common::CT_F_CLOSING;
        ct.insert(fk, v, 0)?;
        let f = frame_flags(6, 0x02, CLIENT, HOST, cport, 8080, 0);
        let r = test_run_repeat(l.prog_fd(netd_common::prog_names::FROM_NETDEV)?, &f, 1)?;
        if check && (r.retval != TC_ACT_REDIRECT || r.data_out[30..34] != SB) {
            bail!("SYN {i} again: verdict {}, not translated to the sandbox", r.retval);
        }
        again.push(r.duration_ns as f64);
        let mut ct: BpfHashMap<&mut MapData, CtKey, CtValue> = BpfHashMap::try_from(l.ebpf.map_mut(m::CT_V4).unwrap())?;
        ct.remove(&fk)?;
        let _ = ct.remove(&rk);
    }
    single_run_rows([
        ("from_netdev, new connection, TCP SYN", syn),
        ("from_container, new connection, TCP SYN-ACK", synack),
        ("from_netdev, new connection from a closed flow's port, TCP SYN", again),
    ]);
    Ok(())
}

/// One table row per case timed one run per call: median and minimum (cases an experiment's
/// object left empty are skipped).
fn single_run_rows<const N: usize>(rows: [(&str, Vec<f64>); N]) {
    for (name, mut d) in rows {
        if d.is_empty() {
            continue;
        }
        d.sort_by(f64::total_cmp);
        println!("| {name} (1 run per call) | {:.0} | {:.0} |", d[d.len() / 2], d[0]);
    }
}

/// `netd-bench micro [--calls N] [--no-check]`: a table of ns per run, printed (`--no-check`: for
/// experiments that leave out part of the rewrite on purpose).
pub fn micro(calls: usize, check: bool) -> Result<()> {
    let mut l = Loaded::load()?;
    {
        let mut g: Array<&mut MapData, u32> = Array::try_from(l.ebpf.map_mut(m::FIB_GEN).unwrap())?;
        g.set(0, 5, 0)?;
    }
    println!("| case | ns per run (median of {calls} test runs of {REPEAT}) | min |\n|---|---|---|");
    for which in [crate::floor::EMPTY, crate::floor::LOOKUP] {
        let fds = crate::floor::load_only(which)?;
        let f = frame(6, CLIENT, HOST, 40000, 8080, 64);
        let (med, min) = time(fds[0].as_fd(), &f, calls, false)?;
        println!("| {which} | {med:.0} | {min:.0} |");
    }
    floor_nat(calls, check)?;
    for c in cases() {
        {
            let mut ct: BpfHashMap<&mut MapData, CtKey, CtValue> =
                BpfHashMap::try_from(l.ebpf.map_mut(m::CT_V4).unwrap())?;
            for (k, v) in &c.ct {
                ct.insert(k, v, 0)?;
            }
        }
        let (med, min) = time(l.prog_fd(c.prog)?, &c.frame, calls, check)?;
        println!("| {} | {med:.0} | {min:.0} |", c.name);
    }
    new_flows(&mut l, calls, check)?;
    new_flows6(&mut l, calls, check)
}

/// An Ethernet + IPv6 (hop limit 64) + TCP frame with the flags byte given, checksum valid.
fn frame6(flags: u8, src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&1000u32.to_be_bytes());
    l4.extend_from_slice(&2000u32.to_be_bytes());
    l4.extend_from_slice(&[0x50, flags, 0x20, 0x00, 0, 0, 0, 0]);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 6]);
    let c = csum(&[pseudo.as_slice(), &l4].concat());
    l4[16..18].copy_from_slice(&c.to_be_bytes());
    let mut f = [SB_MAC, GW_MAC].concat();
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[6, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&l4);
    f
}

/// [`new_flows`] for IPv6 (`[::]:8080` published to a sandbox's ULA address; `CT_V6`).
fn new_flows6(l: &mut Loaded, calls: usize, check: bool) -> Result<()> {
    use std::net::Ipv6Addr;

    use netd_common::{
        EndpointInfo, NET_F_MASQUERADE, NET_F_PROTECT,
        v6::{Addr6, CtKey6, CtValue6, NetworkInfo6, PublishedKey6, PublishedValue6, addr6, map_names as m6},
    };
    let (host, client, sb): (Ipv6Addr, Ipv6Addr, Ipv6Addr) =
        ("2001:db8:100::1".parse()?, "2001:db8:100::2".parse()?, "fd00:17::2".parse()?);
    let w = |a: Ipv6Addr| addr6(a.octets());
    let key6 = |s: Ipv6Addr, d: Ipv6Addr, sp: u16, dp: u16| CtKey6 {
        saddr: w(s),
        daddr: w(d),
        sport: be_port(sp),
        dport: be_port(dp),
        proto: 6,
        _pad: [0; 3],
    };
    {
        let mut h: BpfHashMap<&mut MapData, Addr6, u32> =
            BpfHashMap::try_from(l.ebpf.map_mut(m6::HOST_ADDRS_V6).unwrap())?;
        h.insert(w(host), 1, 0)?;
        let mut pm: BpfHashMap<&mut MapData, PublishedKey6, PublishedValue6> =
            BpfHashMap::try_from(l.ebpf.map_mut(m6::PUBLISHED_V6).unwrap())?;
        let k = PublishedKey6 { addr: [0; 4], port: be_port(8080), proto: 6, _pad: 0 };
        pm.insert(
            k,
            PublishedValue6 { addr: w(sb), port: be_port(7000), _pad: 0, net: 1, stats_slot: 1, flags: 0 },
            0,
        )?;
        let mut em: BpfHashMap<&mut MapData, Addr6, EndpointInfo> =
            BpfHashMap::try_from(l.ebpf.map_mut(m6::ENDPOINTS_V6).unwrap())?;
        em.insert(w(sb), EndpointInfo { ifindex: 42, net: 1, mac: SB_MAC, _pad: [0; 2] }, 0)?;
        let mut nm: BpfHashMap<&mut MapData, u32, NetworkInfo6> =
            BpfHashMap::try_from(l.ebpf.map_mut(m6::NETWORKS_V6).unwrap())?;
        let n = NetworkInfo6 {
            subnet: w("fd00:17::".parse()?),
            gateway: w("fd00:17::1".parse()?),
            prefix_len: 64,
            bridge_ifindex: 41,
            gateway_mac: GW_MAC,
            _pad: [0; 2],
            flags: NET_F_MASQUERADE | NET_F_PROTECT,
        };
        nm.insert(1, n, 0)?;
    }
    let (mut syn, mut synack, mut again) =
        (Vec::with_capacity(calls), Vec::with_capacity(calls), Vec::with_capacity(calls));
    let to = |f: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap());
    let from = |f: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap());
    for i in 0..calls {
        let cport = 20_000 + i as u16;
        let fk = key6(client, host, cport, 8080);
        let rk = key6(sb, client, 7000, cport);
        let f = frame6(0x02, client, host, cport, 8080);
        let r = test_run_repeat(l.prog_fd(netd_common::prog_names::FROM_NETDEV)?, &f, 1)?;
        if check && (r.retval != TC_ACT_REDIRECT || to(&r.data_out) != sb) {
            bail!("IPv6 SYN {i}: verdict {}, not translated to the sandbox", r.retval);
        }
        syn.push(r.duration_ns as f64);
        {
            let mut ct: BpfHashMap<&mut MapData, CtKey6, CtValue6> =
                BpfHashMap::try_from(l.ebpf.map_mut(m6::CT_V6).unwrap())?;
            let Ok(mut v) = ct.get(&rk, 0) else {
                let _ = ct.remove(&fk);
                continue;
            };
            (v.fib_gen, v.fib_mtu, v.ifindex) = (5, 1500, 43);
            ct.insert(rk, v, 0)?;
        }
        let f = frame6(0x12, sb, client, 7000, cport);
        let r = test_run_repeat(l.prog_fd(netd_common::prog_names::FROM_CONTAINER)?, &f, 1)?;
        if check && (r.retval != TC_ACT_REDIRECT || from(&r.data_out) != host) {
            bail!("IPv6 SYN-ACK {i}: verdict {}, not translated to the host address", r.retval);
        }
        synack.push(r.duration_ns as f64);
        let mut ct: BpfHashMap<&mut MapData, CtKey6, CtValue6> =
            BpfHashMap::try_from(l.ebpf.map_mut(m6::CT_V6).unwrap())?;
        let mut v = ct.get(&fk, 0)?;
        v.flags |= netd_common::CT_F_CLOSING;
        ct.insert(fk, v, 0)?;
        let f = frame6(0x02, client, host, cport, 8080);
        let r = test_run_repeat(l.prog_fd(netd_common::prog_names::FROM_NETDEV)?, &f, 1)?;
        if check && (r.retval != TC_ACT_REDIRECT || to(&r.data_out) != sb) {
            bail!("IPv6 SYN {i} again: verdict {}, not translated to the sandbox", r.retval);
        }
        again.push(r.duration_ns as f64);
        let mut ct: BpfHashMap<&mut MapData, CtKey6, CtValue6> =
            BpfHashMap::try_from(l.ebpf.map_mut(m6::CT_V6).unwrap())?;
        ct.remove(&fk)?;
        let _ = ct.remove(&rk);
    }
    single_run_rows([
        ("from_netdev, IPv6 new connection, TCP SYN", syn),
        ("from_container, IPv6 new connection, TCP SYN-ACK", synack),
        ("from_netdev, IPv6 new connection from a closed flow's port, TCP SYN", again),
    ]);
    Ok(())
}
