//! `netd-probe`: the test and demo workload.
//!
//! `netd-probe serve [--tag T] PORT...`   TCP and UDP echo on [::]:PORT (dual-stack; 0.0.0.0:PORT
//!                                         where IPv6 is off), replies `T:PEER:payload` (v4 peers
//!                                         as plain IPv4)
//! `netd-probe tcp ADDR:PORT [PAYLOAD]`    connect, send, print the echo (3 s timeout)
//! `netd-probe tcp6|udp6 NAME:PORT [PAYLOAD]`   the same to the name's first IPv6 address (AAAA)
//! `netd-probe udp ADDR:PORT [PAYLOAD]`    one datagram, print the echo (3 s, retried)
//! `netd-probe udpc ADDR:PORT [PAYLOAD]`   the same from a connected socket (the kernel drops
//!                                         replies from any other source address or port)
//! `netd-probe dns-serve PORT [--bind IP] [--tcp] [--truncate] [--spoof] NAME=IP...`   a test DNS server
//! `netd-probe dns-query SERVER NAME [--tcp] [--edns]`   one A query, print the addresses
//! `netd-probe udp-df ADDR:PORT SIZE`      a small echo first, then SIZE-byte datagrams with DF
//!                                          (IP_PMTUDISC_DO): prints `EMSGSIZE mtu=N` once the
//!                                          path MTU comes back, or `echo N` if a big one echoed
//! `netd-probe udp-send ADDR:PORT [PAYLOAD]`   one datagram from a connected socket, closed at once
//! `netd-probe udp6-pmtu ADDR:PORT`        a connected IPv6 socket sends until its path MTU
//!                                          drops (6 s): prints `mtu=N`
//! `netd-probe udp-peer PORT MODE`         UDP on 0.0.0.0:PORT, one datagram, then (connected to
//!                                          its sender) `refused`: a late reply, then prints
//!                                          `refused`/`timeout`; `big`: 1400-byte replies until the
//!                                          path MTU drops (6 s), prints `mtu=N`; `fragneeded:MTU`:
//!                                          answers with an ICMP "fragmentation needed" (raw socket,
//!                                          what a router on the way would send), prints `sent`;
//!                                          `recv`: prints the sender's address and the datagram
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

const TIMEOUT: Duration = Duration::from_secs(3);

/// `tcp6`/`udp6`: a name resolves to its first IPv6 address instead of its first IPv4 one.
static PREFER_V6: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("tcp") => client_tcp(&args[1..]),
        Some("udp") => client_udp(&args[1..], false),
        Some("tcp6") => {
            PREFER_V6.store(true, std::sync::atomic::Ordering::Relaxed);
            client_tcp(&args[1..])
        }
        Some("udp6") => {
            PREFER_V6.store(true, std::sync::atomic::Ordering::Relaxed);
            client_udp(&args[1..], false)
        }
        Some("udpc") => client_udp(&args[1..], true),
        Some("udp-df") => client_udp_df(&args[1..]),
        Some("udp-connect") => client_udp_connected(&args[1..]),
        Some("udp-send") => udp_send(&args[1..]),
        Some("udp6-pmtu") => udp6_pmtu(&args[1..]),
        Some("udp-peer") => udp_peer(&args[1..]),
        Some("dns-serve") => dns_serve(&args[1..]),
        Some("dns-query") => dns_query(&args[1..]),
        _ => {
            eprintln!(
                "usage: netd-probe serve [--tag T] PORT... | tcp ADDR:PORT [PAYLOAD] | udp|udpc ADDR:PORT [PAYLOAD] | dns-serve PORT NAME=IP..."
            );
            2
        }
    };
    std::process::exit(code);
}

fn serve(args: &[String]) -> i32 {
    let mut tag = std::env::var("HOSTNAME").unwrap_or_else(|_| "probe".into());
    let mut ports = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--tag" {
            tag = it.next().cloned().unwrap_or_default();
        } else if let Ok(p) = a.parse::<u16>() {
            ports.push(p);
        }
    }
    let mut threads = Vec::new();
    for p in ports {
        // Dual-stack where the namespace has IPv6 (v4 clients arrive as ::ffff:a.b.c.d).
        let t = TcpListener::bind(("::", p))
            .or_else(|_| TcpListener::bind(("0.0.0.0", p)))
            .unwrap_or_else(|e| panic!("bind tcp {p}: {e}"));
        let u = UdpSocket::bind(("::", p))
            .or_else(|_| UdpSocket::bind(("0.0.0.0", p)))
            .unwrap_or_else(|e| panic!("bind udp {p}: {e}"));
        println!("listening on {p}/tcp and {p}/udp");
        let tag1 = tag.clone();
        threads.push(std::thread::spawn(move || {
            for s in t.incoming().flatten() {
                let tag = tag1.clone();
                std::thread::spawn(move || echo_tcp(s, &tag));
            }
        }));
        let tag2 = tag.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok((n, peer)) = u.recv_from(&mut buf) {
                let mut reply = format!("{tag2}:{}:", peer_text(peer.ip())).into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = u.send_to(&reply, peer);
            }
        }));
    }
    let _ = std::io::stdout().flush();
    for t in threads {
        let _ = t.join();
    }
    0
}

fn echo_tcp(mut s: TcpStream, tag: &str) {
    let peer = s.peer_addr().map(|a| peer_text(a.ip())).unwrap_or_default();
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 65536];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        let mut reply = format!("{tag}:{peer}:").into_bytes();
        reply.extend_from_slice(&buf[..n]);
        if s.write_all(&reply).is_err() {
            break;
        }
    }
}

/// The client address in a reply: IPv4 (also v4-mapped) plain, IPv6 in brackets (as
/// `netd_tests::probe::parse_echo` reads it).
fn peer_text(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// `ADDR:PORT` or `NAME:PORT` (resolved through the sandbox's /etc/hosts and resolv.conf).
fn target(args: &[String]) -> Option<(SocketAddr, Vec<u8>)> {
    use std::net::ToSocketAddrs;
    let a = args.first()?;
    let addr: SocketAddr = match a.parse() {
        Ok(x) => x,
        Err(_) => match a.to_socket_addrs() {
            Ok(mut it) => {
                if PREFER_V6.load(std::sync::atomic::Ordering::Relaxed) {
                    it.find(SocketAddr::is_ipv6)?
                } else {
                    it.find(SocketAddr::is_ipv4)?
                }
            }
            Err(e) => {
                eprintln!("resolving {a}: {e}");
                return None;
            }
        },
    };
    let payload = args.get(1).cloned().unwrap_or_else(|| "ping".into()).into_bytes();
    Some((addr, payload))
}

fn client_tcp(args: &[String]) -> i32 {
    let Some((addr, payload)) = target(args) else { return 2 };
    let r = (|| -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.write_all(&payload)?;
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while !got.ends_with(&payload) {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok(got)
    })();
    match r {
        Ok(b) => {
            println!("{}", String::from_utf8_lossy(&b));
            0
        }
        Err(e) => {
            eprintln!("tcp {addr}: {e}");
            1
        }
    }
}

fn client_udp(args: &[String], connected: bool) -> i32 {
    let Some((addr, payload)) = target(args) else { return 2 };
    let s = match UdpSocket::bind(if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp bind: {e}");
            return 1;
        }
    };
    if connected && let Err(e) = s.connect(addr) {
        eprintln!("udp connect {addr}: {e}");
        return 1;
    }
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 65536];
    for _ in 0..6 {
        let sent = if connected { s.send(&payload) } else { s.send_to(&payload, addr) };
        if sent.is_err() {
            continue;
        }
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            println!("{}", String::from_utf8_lossy(&buf[..n]));
            return 0;
        }
    }
    eprintln!("udp {addr}: no answer within 3s");
    1
}

fn client_udp_df(args: &[String]) -> i32 {
    use std::os::fd::AsRawFd;
    let Some((addr, _)) = target(args) else { return 2 };
    let Some(size) = args.get(1).and_then(|s| s.parse::<usize>().ok()) else { return 2 };
    let s = match UdpSocket::bind("0.0.0.0:0").and_then(|s| s.connect(addr).map(|_| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp {addr}: {e}");
            return 1;
        }
    };
    let fd = s.as_raw_fd();
    let v: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: valid fd and option pointer.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
    let mut buf = [0u8; 65536];
    // The flow exists (and is translated) before the big datagrams.
    let mut small = false;
    for _ in 0..6 {
        if s.send(b"small").is_ok() && s.recv(&mut buf).is_ok() {
            small = true;
            break;
        }
    }
    if !small {
        eprintln!("udp {addr}: no echo for the small datagram");
        return 1;
    }
    let big = vec![b'x'; size];
    for _ in 0..10 {
        match s.send(&big).and_then(|_| s.recv(&mut buf)) {
            Ok(n) => {
                println!("echo {n}");
                return 0;
            }
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                let mut mtu: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as u32;
                // SAFETY: valid fd and out pointers.
                unsafe {
                    libc::getsockopt(
                        fd,
                        libc::IPPROTO_IP,
                        libc::IP_MTU,
                        (&mut mtu as *mut libc::c_int).cast(),
                        &mut len,
                    )
                };
                println!("EMSGSIZE mtu={mtu}");
                return 0;
            }
            Err(_) => {}
        }
    }
    println!("no answer");
    1
}

/// `udp-send ADDR:PORT [PAYLOAD]`: send one datagram and close the socket (its port is closed
/// when the answer comes: the sender's kernel answers "port unreachable").
fn udp_send(args: &[String]) -> i32 {
    let Some((addr, payload)) = target(args) else { return 2 };
    let r = UdpSocket::bind(if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })
        .and_then(|s| s.connect(addr).and_then(|_| s.send(&payload)));
    match r {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("udp-send {addr}: {e}");
            1
        }
    }
}

/// The path MTU of a connected socket (`IP_MTU` / `IPV6_MTU`).
fn sock_mtu(s: &UdpSocket, v6: bool) -> i32 {
    use std::os::fd::AsRawFd;
    let (level, opt) = if v6 { (libc::IPPROTO_IPV6, libc::IPV6_MTU) } else { (libc::IPPROTO_IP, libc::IP_MTU) };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as u32;
    // SAFETY: valid fd and out pointers.
    unsafe { libc::getsockopt(s.as_raw_fd(), level, opt, (&mut mtu as *mut libc::c_int).cast(), &mut len) };
    mtu
}

/// Send `payload` every 500 ms until the socket's path MTU is below `below` (6 s); the MTU.
fn until_mtu_below(s: &UdpSocket, v6: bool, payload: &[u8], below: i32) -> i32 {
    let mut mtu = sock_mtu(s, v6);
    for i in 0..60 {
        if mtu > 0 && mtu < below {
            break;
        }
        if i % 5 == 0 {
            let _ = s.send(payload);
        }
        std::thread::sleep(Duration::from_millis(100));
        mtu = sock_mtu(s, v6);
    }
    mtu
}

/// `udp6-pmtu ADDR:PORT`: the path MTU an ICMPv6 "packet too big" about this socket's
/// datagrams set (printed `mtu=N`; the interface's when none came).
fn udp6_pmtu(args: &[String]) -> i32 {
    let Some((addr, payload)) = target(args) else { return 2 };
    let s = match UdpSocket::bind("[::]:0").and_then(|s| s.connect(addr).map(|_| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp6-pmtu {addr}: {e}");
            return 1;
        }
    };
    let first = sock_mtu(&s, true);
    println!("mtu={}", until_mtu_below(&s, true, &payload, first));
    0
}

/// `udp-peer PORT MODE`: see the usage at the top.
fn udp_peer(args: &[String]) -> i32 {
    let (Some(port), Some(mode)) = (args.first().and_then(|p| p.parse::<u16>().ok()), args.get(1)) else { return 2 };
    let r = (|| -> std::io::Result<String> {
        let s = UdpSocket::bind(("0.0.0.0", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; 65536];
        let (n, peer) = s.recv_from(&mut buf)?;
        s.connect(peer)?;
        if mode == "refused" {
            // The client is gone by now: its kernel answers the reply with "port unreachable".
            std::thread::sleep(Duration::from_millis(500));
            s.send(b"late")?;
            s.set_read_timeout(Some(TIMEOUT))?;
            return Ok(match s.recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused".into(),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    "timeout".into()
                }
                Err(e) => return Err(e),
                Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            });
        }
        if mode == "recv" {
            return Ok(format!("{} {}", peer.ip(), String::from_utf8_lossy(&buf[..n])));
        }
        if mode == "big" {
            let first = sock_mtu(&s, false);
            return Ok(format!("mtu={}", until_mtu_below(&s, false, &[b'b'; 1400], first)));
        }
        let mtu: u16 = mode
            .strip_prefix("fragneeded:")
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("mode {mode}")))?;
        let (SocketAddr::V4(local), SocketAddr::V4(peer)) = (s.local_addr()?, peer) else {
            return Err(std::io::Error::other("IPv4 only"));
        };
        // (`connect` chose the local address: the one the datagram came to.)
        let quote = ipv4_udp_quote(*peer.ip(), peer.port(), *local.ip(), port, &buf[..n.min(8)]);
        let mut icmp = vec![3u8, 4, 0, 0, 0, 0];
        icmp.extend_from_slice(&mtu.to_be_bytes());
        icmp.extend_from_slice(&quote);
        let c = inet_csum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        send_raw_icmp(*peer.ip(), &icmp)?;
        Ok("sent".into())
    })();
    match r {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("udp-peer {port}: {e}");
            1
        }
    }
}

fn inet_csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The IPv4 + UDP headers of a datagram `src:sport -> dst:dport` with `payload` (as an ICMP
/// error quotes it: DF set, UDP checksum 0).
fn ipv4_udp_quote(src: std::net::Ipv4Addr, sport: u16, dst: std::net::Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let tot = (28 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&tot.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = inet_csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// One ICMP message to `dst` from a raw socket (the kernel adds the IP header).
fn send_raw_icmp(dst: std::net::Ipv4Addr, msg: &[u8]) -> std::io::Result<()> {
    // SAFETY: plain socket calls with valid buffers; the fd is closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(dst.octets()) },
            sin_zero: [0; 8],
        };
        let r = libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        let e = std::io::Error::last_os_error();
        libc::close(fd);
        if r < 0 { Err(e) } else { Ok(()) }
    }
}

/// `udp-connect ADDR:PORT [PAYLOAD]`: a connected UDP socket sends and waits 3 s; prints
/// `refused` (ECONNREFUSED: an ICMP port unreachable came back), `timeout`, or the answer.
fn client_udp_connected(args: &[String]) -> i32 {
    let Some((addr, payload)) = target(args) else { return 2 };
    let r = (|| -> std::io::Result<String> {
        let s = UdpSocket::bind(if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
        s.connect(addr)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.send(&payload)?;
        let mut buf = [0u8; 65536];
        match s.recv(&mut buf) {
            Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok("refused".into()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Ok("timeout".into())
            }
            Err(e) => Err(e),
        }
    })();
    match r {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("udp-connect {addr}: {e}");
            1
        }
    }
}

/// A tiny authoritative DNS server for tests: answers A for the given NAME=IP pairs, NXDOMAIN
/// for anything else; `edns.test` answers 203.0.113.9 when the query carried EDNS, else
/// 203.0.113.8. `--tcp` serves TCP on the same port too; `--truncate` answers every UDP query
/// with the TC bit and no answers (the full answer only over TCP); `--spoof` sends, before each
/// real UDP answer, one with another transaction id and one for another question, both claiming
/// 198.51.100.66 (what a forwarder must ignore).
fn dns_serve(args: &[String]) -> i32 {
    let Some(port) = args.first().and_then(|p| p.parse::<u16>().ok()) else { return 2 };
    let flag = |f: &str| args[1..].iter().any(|a| a == f);
    let (tcp, truncate, spoof) = (flag("--tcp"), flag("--truncate"), flag("--spoof"));
    // `--bind IP`: one address (several test servers on one namespace), default all.
    let bind: std::net::IpAddr = args
        .windows(2)
        .find(|w| w[0] == "--bind")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let table: Vec<(String, std::net::Ipv4Addr)> = args[1..]
        .iter()
        .filter_map(|kv| kv.split_once('=').and_then(|(n, ip)| Some((n.to_ascii_lowercase(), ip.parse().ok()?))))
        .collect();
    if tcp {
        let l = TcpListener::bind((bind, port)).unwrap_or_else(|e| panic!("bind tcp {port}: {e}"));
        let table = table.clone();
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let _ = c.set_read_timeout(Some(TIMEOUT));
                let mut len = [0u8; 2];
                if c.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                if c.read_exact(&mut q).is_err() {
                    continue;
                }
                if let Some(r) = dns_answer(&table, &q, false) {
                    let _ = c.write_all(&[&(r.len() as u16).to_be_bytes()[..], &r].concat());
                }
            }
        });
    }
    let sock = UdpSocket::bind((bind, port)).unwrap_or_else(|e| panic!("bind udp {port}: {e}"));
    println!("dns on {bind}:{port}/udp{}", if tcp { "+tcp" } else { "" });
    let mut buf = [0u8; 4096];
    while let Ok((n, peer)) = sock.recv_from(&mut buf) {
        if spoof {
            for forged in dns_forgeries(&buf[..n]) {
                let _ = sock.send_to(&forged, peer);
            }
        }
        if let Some(b) = dns_answer(&table, &buf[..n], truncate) {
            let _ = sock.send_to(&b, peer);
        }
    }
    0
}

fn dns_answer(table: &[(String, std::net::Ipv4Addr)], q: &[u8], truncate: bool) -> Option<Vec<u8>> {
    use hickory_proto::{
        op::{Message, ResponseCode},
        rr::{Name, RData, Record, RecordType, rdata},
    };
    let q = Message::from_vec(q).ok()?;
    let query = q.queries.first().cloned()?;
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.add_query(query.clone());
    let name = query.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let ip = if name == "edns.test" {
        Some(if q.edns.is_some() {
            std::net::Ipv4Addr::new(203, 0, 113, 9)
        } else {
            std::net::Ipv4Addr::new(203, 0, 113, 8)
        })
    } else {
        table.iter().find(|(n, _)| *n == name).map(|(_, ip)| *ip)
    };
    match ip {
        Some(_) if truncate => r.metadata.truncation = true,
        Some(ip) => {
            if query.query_type() == RecordType::A {
                let owner = Name::from_ascii(query.name().to_ascii()).unwrap_or_default();
                r.add_answer(Record::from_rdata(owner, 60, RData::A(rdata::A(ip))));
            }
        }
        None => r.metadata.response_code = ResponseCode::NXDomain,
    }
    r.to_vec().ok()
}

/// Two forged answers to `q`: wrong transaction id, and right id but another question.
fn dns_forgeries(q: &[u8]) -> Vec<Vec<u8>> {
    use hickory_proto::{
        op::{Message, Query},
        rr::{Name, RData, Record, RecordType, rdata},
    };
    let Ok(q) = Message::from_vec(q) else { return Vec::new() };
    let Some(query) = q.queries.first().cloned() else { return Vec::new() };
    let evil = std::net::Ipv4Addr::new(198, 51, 100, 66);
    let mut out = Vec::new();
    let mut wrong_id = Message::response(q.metadata.id.wrapping_add(1), q.metadata.op_code);
    wrong_id.add_query(query.clone());
    wrong_id.add_answer(Record::from_rdata(query.name().clone(), 60, RData::A(rdata::A(evil))));
    out.extend(wrong_id.to_vec());
    let other = Name::from_ascii("other.test.").unwrap_or_default();
    let mut wrong_q = Message::response(q.metadata.id, q.metadata.op_code);
    wrong_q.add_query(Query::query(other.clone(), RecordType::A));
    wrong_q.add_answer(Record::from_rdata(other, 60, RData::A(rdata::A(evil))));
    out.extend(wrong_q.to_vec());
    out
}

/// One A query to SERVER (port 53) over UDP (no TCP retry: a truncated reply exits 3) or TCP;
/// prints each address on a line; exit 1 on no answer.
fn dns_query(args: &[String]) -> i32 {
    use hickory_proto::{
        op::{Edns, Message, MessageType, OpCode, Query},
        rr::{Name, RData, RecordType},
    };
    let (Some(server), Some(name)) = (args.first(), args.get(1)) else { return 2 };
    let flag = |f: &str| args[2..].iter().any(|a| a == f);
    let Ok(server) = format!("{server}:53").parse::<SocketAddr>() else { return 2 };
    let Ok(qname) = Name::from_ascii(format!("{}.", name.trim_end_matches('.'))) else { return 2 };
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(qname, RecordType::A));
    if flag("--edns") {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.edns = Some(e);
    }
    let Ok(q) = m.to_vec() else { return 2 };
    let reply: Option<Vec<u8>> = if flag("--tcp") {
        (|| {
            let mut s = TcpStream::connect_timeout(&server, TIMEOUT).ok()?;
            s.set_read_timeout(Some(TIMEOUT)).ok()?;
            s.write_all(&[&(q.len() as u16).to_be_bytes()[..], &q].concat()).ok()?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len).ok()?;
            let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut r).ok()?;
            Some(r)
        })()
    } else {
        (|| {
            let s = UdpSocket::bind("0.0.0.0:0").ok()?;
            s.set_read_timeout(Some(TIMEOUT)).ok()?;
            s.send_to(&q, server).ok()?;
            let mut buf = vec![0u8; 65535];
            // The first datagram is the answer: a client that trusted whatever came first.
            let (n, _) = s.recv_from(&mut buf).ok()?;
            Some(buf[..n].to_vec())
        })()
    };
    let Some(r) = reply.and_then(|r| Message::from_vec(&r).ok()) else {
        eprintln!("dns-query {name}: no answer");
        return 1;
    };
    if r.metadata.id != id {
        eprintln!("dns-query {name}: reply with transaction id {} (sent {id})", r.metadata.id);
        return 4;
    }
    if r.metadata.truncation {
        eprintln!("dns-query {name}: truncated");
        return 3;
    }
    let mut any = false;
    for rec in &r.answers {
        if let RData::A(a) = &rec.data {
            println!("{}", a.0);
            any = true;
        }
    }
    if any { 0 } else { 1 }
}
