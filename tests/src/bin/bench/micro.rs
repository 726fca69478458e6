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
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        l4.extend_from_slice(&1000u32.to_be_bytes());
        l4.extend_from_slice(&2000u32.to_be_bytes());
        l4.extend_from_slice(&[0x50, 0x10, 0x20, 0x00, 0, 0, 0, 0]); // ACK, window 8192
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
    Ok(())
}
