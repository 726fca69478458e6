//! `BPF_PROG_TEST_RUN`: frames through the programs without any interface.
use netd::ebpf::{Loaded, test_run};
use netd_common::prog_names as p;
use netd_tests::require_root;

const XDP_PASS: u32 = 2;
const TC_ACT_OK: u32 = 0;

/// Ethernet + IPv4 (+ options) + UDP frame.
fn udp_frame(ihl_words: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
    let ihl = ihl_words as usize * 4;
    let total = ihl + 8 + payload.len();
    let mut ip = vec![0u8; ihl];
    ip[0] = 0x40 | ihl_words;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 51, 100, 2]);
    ip[16..20].copy_from_slice(&[198, 51, 100, 1]);
    for b in ip.iter_mut().skip(20) {
        *b = 1; // NOP options
    }
    let csum = checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&5000u16.to_be_bytes());
    f.extend_from_slice(&8080u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

#[test]
fn xdp_and_tc_pass_and_count_frames() {
    require_root!();
    let l = Loaded::load().expect("load");
    let frame = udp_frame(5, b"hello");
    let r = test_run(l.prog_fd(p::XDP_UPLINK).unwrap(), &frame).expect("xdp test run");
    assert_eq!(r.retval, XDP_PASS);
    assert_eq!(r.data_out, frame, "counting must not change the packet");
    // IP options are parsed through IHL.
    let r = test_run(l.prog_fd(p::XDP_UPLINK).unwrap(), &udp_frame(7, b"opts")).unwrap();
    assert_eq!(r.retval, XDP_PASS);
    let r = test_run(l.prog_fd(p::FROM_NETDEV).unwrap(), &frame).expect("tc test run");
    assert_eq!(r.retval, TC_ACT_OK);

    let s = l.prog_stats().unwrap();
    assert_eq!(s[p::XDP_UPLINK].packets, 2);
    assert_eq!(s[p::XDP_UPLINK].bytes, (frame.len() + udp_frame(7, b"opts").len()) as u64);
    assert_eq!(s[p::FROM_NETDEV].packets, 1);
    assert_eq!(s[p::TO_NETDEV].packets, 0);
    assert_eq!(l.drop_stats().unwrap()["malformed"], 0);
}

#[test]
fn truncated_ipv4_is_counted_malformed() {
    require_root!();
    let l = Loaded::load().expect("load");
    let mut frame = udp_frame(5, b"x");
    frame.truncate(14 + 12); // IPv4 header cut in the middle
    let r = test_run(l.prog_fd(p::XDP_UPLINK).unwrap(), &frame).unwrap();
    assert_eq!(r.retval, XDP_PASS);
    // IHL claiming 60 bytes of header in a 20-byte packet.
    let mut lying = udp_frame(5, b"");
    lying[14] = 0x4f;
    lying.truncate(14 + 20);
    let r = test_run(l.prog_fd(p::XDP_UPLINK).unwrap(), &lying).unwrap();
    assert_eq!(r.retval, XDP_PASS);
    // Not IPv4 (ARP): not counted as malformed.
    let mut arp = udp_frame(5, b"");
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    test_run(l.prog_fd(p::XDP_UPLINK).unwrap(), &arp).unwrap();
    assert_eq!(l.drop_stats().unwrap()["malformed"], 2);
    assert_eq!(l.prog_stats().unwrap()[p::XDP_UPLINK].packets, 3);
}
