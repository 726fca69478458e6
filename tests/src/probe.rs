//! TCP/UDP echo probes. Servers run on their own thread inside a namespace and stop when their
//! guard drops; clients return what came back, within a timeout.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::netns::in_netns;

pub const TIMEOUT: Duration = Duration::from_secs(3);
/// How long an echo server keeps an idle connection (the client side's waits use [`TIMEOUT`]).
pub const SERVER_IDLE: Duration = Duration::from_secs(30);

/// An echo server running in a namespace; prefixes each reply with `tag:` so a test can tell
/// which server answered, and reports the peer address it saw (`tag:PEER:payload`).
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl EchoServer {
    /// TCP and UDP echo on `addr` inside the namespace at `netns_path`.
    pub fn start(netns_path: &str, addr: SocketAddr, tag: &str) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tcp, udp) = in_netns(netns_path, move || -> Result<(TcpListener, UdpSocket)> {
            let t = TcpListener::bind(addr).with_context(|| format!("bind tcp {addr}"))?;
            let u = UdpSocket::bind(addr).with_context(|| format!("bind udp {addr}"))?;
            Ok((t, u))
        })??;
        tcp.set_nonblocking(true)?;
        udp.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut threads = Vec::new();
        {
            let stop = stop.clone();
            let tag = tag.to_string();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((mut s, peer)) => {
                            let tag = tag.clone();
                            std::thread::spawn(move || {
                                let _ = s.set_nonblocking(false);
                                // As `netd-probe serve`: a connection may idle across a daemon
                                // restart (kill -9 tests), which takes more than TIMEOUT under load.
                                let _ = s.set_read_timeout(Some(SERVER_IDLE));
                                let mut buf = [0u8; 65536];
                                while let Ok(n) = s.read(&mut buf) {
                                    if n == 0 {
                                        break;
                                    }
                                    let mut reply = format!("{tag}:{}:", peer_text(peer.ip())).into_bytes();
                                    reply.extend_from_slice(&buf[..n]);
                                    if s.write_all(&reply).is_err() {
                                        break;
                                    }
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }));
        }
        {
            let stop = stop.clone();
            let tag = tag.to_string();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                        let mut reply = format!("{tag}:{}:", peer_text(peer.ip())).into_bytes();
                        reply.extend_from_slice(&buf[..n]);
                        let _ = udp.send_to(&reply, peer);
                    }
                }
            }));
        }
        Ok(Self { stop, threads, addr })
    }
}

/// What an echo server answered: which server (`tag`) and the client address it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    pub tag: String,
    pub peer: String,
    pub payload: Vec<u8>,
}

/// `TAG:PEER:payload`; an IPv6 peer comes in brackets (`TAG:[2001:db8::2]:payload`) and is
/// returned without them.
pub fn parse_echo(reply: &[u8]) -> Result<Echo> {
    let s = reply;
    let first = s.iter().position(|b| *b == b':').context("no tag in reply")?;
    let rest = &s[first + 1..];
    let (peer, payload) = if rest.first() == Some(&b'[') {
        let close = rest.iter().position(|b| *b == b']').context("no ] after an IPv6 peer")?;
        (&rest[1..close], rest.get(close + 2..).unwrap_or_default())
    } else {
        let second = rest.iter().position(|b| *b == b':').context("no peer in reply")?;
        (&rest[..second], &rest[second + 1..])
    };
    Ok(Echo {
        tag: String::from_utf8_lossy(&s[..first]).into_owned(),
        peer: String::from_utf8_lossy(peer).into_owned(),
        payload: payload.to_vec(),
    })
}

/// How an echo server writes the client's address: IPv4 (also v4-mapped) plain, IPv6 in brackets.
pub fn peer_text(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// Connect from inside `netns_path` to `dst`, send `payload`, read the echo.
pub fn tcp_echo(netns_path: &str, dst: SocketAddr, payload: &[u8]) -> Result<Echo> {
    let payload = payload.to_vec();
    in_netns(netns_path, move || -> Result<Echo> {
        let mut s = TcpStream::connect_timeout(&dst, TIMEOUT).with_context(|| format!("tcp connect {dst}"))?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.write_all(&payload)?;
        let deadline = Instant::now() + TIMEOUT;
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            if let Ok(e) = parse_echo(&got)
                && e.payload.len() >= payload.len()
            {
                return Ok(e);
            }
            if Instant::now() > deadline {
                bail!("tcp {dst}: incomplete echo after {TIMEOUT:?}: {} bytes", got.len());
            }
            let n = s.read(&mut buf).with_context(|| format!("tcp read {dst}"))?;
            if n == 0 {
                bail!("tcp {dst}: closed after {} bytes", got.len());
            }
            got.extend_from_slice(&buf[..n]);
        }
    })?
}

/// Send one UDP datagram from inside `netns_path` to `dst` and wait for the echo.
pub fn udp_echo(netns_path: &str, dst: SocketAddr, payload: &[u8]) -> Result<Echo> {
    let payload = payload.to_vec();
    in_netns(netns_path, move || -> Result<Echo> {
        let s = UdpSocket::bind(if dst.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 65536];
        // A few tries: the first datagram may race ARP resolution.
        for _ in 0..6 {
            s.send_to(&payload, dst).with_context(|| format!("udp send {dst}"))?;
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return parse_echo(&buf[..n]);
            }
        }
        bail!("udp {dst}: no echo within 3s")
    })?
}

/// Like [`udp_echo`], from a connected socket: the kernel delivers only replies that come from
/// exactly `dst` (address and port), as a connected UDP client expects.
pub fn udp_echo_connected(netns_path: &str, dst: SocketAddr, payload: &[u8]) -> Result<Echo> {
    let payload = payload.to_vec();
    in_netns(netns_path, move || -> Result<Echo> {
        let s = UdpSocket::bind(if dst.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
        s.connect(dst).with_context(|| format!("udp connect {dst}"))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 65536];
        for _ in 0..6 {
            // ECONNREFUSED from an earlier try's ICMP: try again.
            let _ = s.send(&payload);
            if let Ok(n) = s.recv(&mut buf) {
                return parse_echo(&buf[..n]);
            }
        }
        bail!("udp {dst} (connected): no echo within 3s")
    })?
}

/// A UDP socket created in `netns_path` (it stays in that namespace wherever it is used).
pub fn udp_socket_in(netns_path: &str, bind: SocketAddr) -> Result<UdpSocket> {
    in_netns(netns_path, move || -> Result<UdpSocket> {
        let s = UdpSocket::bind(bind).with_context(|| format!("udp bind {bind}"))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        Ok(s)
    })?
}

/// One echo through `s` to `dst` (a few tries), or the error.
pub fn udp_echo_on(s: &UdpSocket, dst: SocketAddr, payload: &[u8]) -> Result<Echo> {
    let mut buf = [0u8; 65536];
    for _ in 0..6 {
        s.send_to(payload, dst).with_context(|| format!("udp send {dst}"))?;
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            if from != dst {
                bail!("udp {dst}: reply from {from}");
            }
            return parse_echo(&buf[..n]);
        }
    }
    bail!("udp {dst}: no echo within 3s")
}

/// A TCP connection opened from inside `netns_path` (kept open by the caller).
pub fn tcp_connect_in(netns_path: &str, dst: SocketAddr) -> Result<TcpStream> {
    in_netns(netns_path, move || -> Result<TcpStream> {
        let s = TcpStream::connect_timeout(&dst, TIMEOUT).with_context(|| format!("tcp connect {dst}"))?;
        s.set_read_timeout(Some(TIMEOUT))?;
        Ok(s)
    })?
}

/// The established-flow half of the next-hop MAC change scenarios (dataplane.rs, ipv6.rs): a
/// flow from `sandbox` (its netns path) to a server at `server` in the outside namespace makes
/// two exchanges (the second rides the eBPF fast path's cached route), then the outside's
/// `out0` takes `new_mac` and the host learns it (`ip neigh replace`), then a third exchange.
/// Returns the third exchange's outcome and the peer address the server saw.
pub fn next_hop_mac_change(
    th: &crate::TestHost,
    sandbox: &str,
    server: SocketAddr,
    new_mac: &str,
) -> (std::result::Result<(), String>, String) {
    let listener = th.outside.run(move || std::net::TcpListener::bind(server)).unwrap().unwrap();
    let srv = std::thread::spawn(move || -> std::io::Result<String> {
        let (mut s, peer) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut b = [0u8; 4];
        for _ in 0..3 {
            s.read_exact(&mut b)?;
            s.write_all(&b)?;
        }
        Ok(peer.ip().to_string())
    });
    let mut c = tcp_connect_in(sandbox, server).expect("sandbox -> outside server");
    c.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let exchange = |c: &mut TcpStream, m: &[u8; 4]| -> std::result::Result<(), String> {
        c.write_all(m).map_err(|e| e.to_string())?;
        let mut b = [0u8; 4];
        c.read_exact(&mut b).map_err(|e| e.to_string())?;
        if &b == m { Ok(()) } else { Err(format!("echoed {b:?}")) }
    };
    exchange(&mut c, b"one!").expect("first exchange");
    exchange(&mut c, b"two!").expect("second exchange");
    let link = th.outside.exec_ok(&["ip", "-o", "link", "show", "dev", "out0"]).unwrap();
    assert!(link.contains("link/ether") && !link.contains(new_mac), "{link}");
    th.outside.exec_ok(&["ip", "link", "set", "dev", "out0", "address", new_mac]).unwrap();
    let ip = server.ip().to_string();
    th.host.exec_ok(&["ip", "neigh", "replace", &ip, "lladdr", new_mac, "dev", th.uplink, "nud", "reachable"]).unwrap();
    let third = exchange(&mut c, b"3rd!");
    let peer = match srv.join().unwrap() {
        Ok(p) => p,
        Err(e) => format!("server side: {e}"),
    };
    (third, peer)
}
