//! The userland proxy of `--dataplane iptables --userland-proxy=true` (Docker's default): the
//! daemon listens on the host port itself (on the socket it already holds for the binding) and
//! relays to the sandbox, serving what iptables does not NAT (loopback, hairpin). One tokio task
//! per binding, no extra processes.
//!
//! [`Proxy::stop`] returns only once the binding's socket and every connection or flow it
//! relayed are closed, so the host port can be bound again at once (as Docker's `rm` frees it
//! by ending docker-proxy).
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd},
    sync::Arc,
    time::Duration,
};

use tokio::{io::Interest, net::UdpSocket, sync::oneshot, task::JoinHandle};

/// A running proxy for one binding.
pub struct Proxy {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Stop serving and wait until the host socket and every relayed connection or flow of
    /// this binding are closed.
    pub async fn stop(mut self) {
        drop(self.stop.take());
        // The task ends by itself on the signal; a bounded wait, then cut it off.
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task).await.is_err() {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }
}

/// How long a UDP client's flow lives without a reply (Docker's proxy: about a minute).
/// `NETD_UDP_PROXY_IDLE_MS` overrides it (a test hook, like `NETD_CRASH_AT`).
fn udp_idle() -> Duration {
    static V: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("NETD_UDP_PROXY_IDLE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(60), Duration::from_millis)
    })
}

/// At most this many UDP client flows per binding; the least recently active one makes room.
/// `NETD_UDP_PROXY_MAX_FLOWS` overrides it (a test hook).
fn udp_max_flows() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("NETD_UDP_PROXY_MAX_FLOWS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(4096)
    })
}

/// Relay TCP connections accepted on `sock` (bound, not yet listening) to `target`. The two may
/// be of different families (a `[::]` binding of an IPv4-only sandbox, as docker-proxy does).
pub fn tcp(sock: OwnedFd, target: SocketAddr) -> std::io::Result<Proxy> {
    // SAFETY: listen on a socket we own.
    if unsafe { libc::listen(sock.as_raw_fd(), 1024) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd is a bound, listening TCP socket we own.
    let std_l = unsafe { std::net::TcpListener::from_raw_fd(sock.into_raw_fd()) };
    std_l.set_nonblocking(true)?;
    let l = tokio::net::TcpListener::from_std(std_l)?;
    let (tx, mut rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = &mut rx => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                r = l.accept() => {
                    let Ok((mut inbound, _)) = r else { continue };
                    conns.spawn(async move {
                        if let Ok(Ok(mut out)) = tokio::time::timeout(
                            Duration::from_secs(5),
                            tokio::net::TcpStream::connect(target),
                        )
                        .await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    });
                }
            }
        }
        // Close the listening socket, then every relayed connection, before reporting done.
        drop(l);
        conns.shutdown().await;
    });
    Ok(Proxy { stop: Some(tx), task })
}

/// Receive one datagram on `sock` with the local address it was sent to (IP_PKTINFO, or
/// IPV6_PKTINFO on an IPv6 socket).
fn recv_pktinfo(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let m = recvmsg::<SockaddrStorage>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(std::io::Error::from)?;
    let mut local = None;
    for c in m.cmsgs().map_err(std::io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv4PacketInfo(pi) => {
                local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(pi.ipi_addr.s_addr))));
            }
            ControlMessageOwned::Ipv6PacketInfo(pi) => {
                local = Some(IpAddr::V6(Ipv6Addr::from(pi.ipi6_addr.s6_addr)));
            }
            _ => {}
        }
    }
    let from = m.address.and_then(|a| {
        if let Some(v4) = a.as_sockaddr_in() {
            Some(SocketAddr::new(IpAddr::V4(v4.ip()), v4.port()))
        } else {
            a.as_sockaddr_in6().map(|v6| SocketAddr::new(IpAddr::V6(v6.ip()), v6.port()))
        }
    });
    let n = m.bytes;
    from.map(|f| (n, f, local)).ok_or_else(|| std::io::Error::other("datagram without a source address"))
}

/// Send `buf` to `to` from the local address `from` (IP_PKTINFO's `ipi_spec_dst`, or
/// IPV6_PKTINFO's `ipi6_addr`), so the reply leaves from the address the client sent to.
fn send_from(sock: &UdpSocket, buf: &[u8], to: SocketAddr, from: Option<IpAddr>) -> std::io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrIn, SockaddrIn6, sendmsg};
    let iov = [std::io::IoSlice::new(buf)];
    match to {
        SocketAddr::V4(to) => {
            let dst = SockaddrIn::from(to);
            let pi;
            let cmsgs: &[ControlMessage] = match from {
                Some(IpAddr::V4(a)) if !a.is_unspecified() => {
                    pi = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr { s_addr: u32::from(a).to_be() },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    &[ControlMessage::Ipv4PacketInfo(&pi)]
                }
                _ => &[],
            };
            sendmsg(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), Some(&dst)).map_err(std::io::Error::from)
        }
        SocketAddr::V6(to) => {
            let dst = SockaddrIn6::from(to);
            let pi;
            let cmsgs: &[ControlMessage] = match from {
                Some(IpAddr::V6(a)) if !a.is_unspecified() => {
                    pi = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: a.octets() }, ipi6_ifindex: 0 };
                    &[ControlMessage::Ipv6PacketInfo(&pi)]
                }
                _ => &[],
            };
            sendmsg(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), Some(&dst)).map_err(std::io::Error::from)
        }
    }
}

/// One client's flow: the upstream socket (connected to the sandbox) and when it last spoke.
struct Flow {
    up: Arc<UdpSocket>,
    generation: u64,
    last: tokio::time::Instant,
    relay: tokio::task::AbortHandle,
}

/// Relay UDP datagrams received on `sock` to `target`, one upstream socket per client. Replies
/// go back from the address and port the client sent to; a client's flow ends after
/// [`udp_idle`] without a reply, and a later datagram from it starts a new one.
pub fn udp(sock: std::net::UdpSocket, target: SocketAddr) -> std::io::Result<Proxy> {
    sock.set_nonblocking(true)?;
    if sock.local_addr()?.is_ipv6() {
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv6RecvPacketInfo, &true)
            .map_err(std::io::Error::from)?;
    } else {
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv4PacketInfo, &true)
            .map_err(std::io::Error::from)?;
    }
    let front = Arc::new(UdpSocket::from_std(sock)?);
    let (tx, mut rx) = oneshot::channel::<()>();
    let (idle, max) = (udp_idle(), udp_max_flows());
    let task = tokio::spawn(async move {
        // Reply relays: each ends when its flow is idle and reports (client, generation).
        let mut relays: tokio::task::JoinSet<(SocketAddr, u64)> = tokio::task::JoinSet::new();
        let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
        let mut next_gen = 0u64;
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, client, local) = tokio::select! {
                biased;
                _ = &mut rx => break,
                Some(done) = relays.join_next(), if !relays.is_empty() => {
                    // A relay that ended by itself (idle): forget its flow, unless a newer flow
                    // of the same client took its place.
                    if let Ok((client, generation)) = done
                        && flows.get(&client).is_some_and(|f| f.generation == generation)
                    {
                        flows.remove(&client);
                    }
                    continue;
                }
                r = front.async_io(Interest::READABLE, || recv_pktinfo(&front, &mut buf)) => match r {
                    Ok(x) => x,
                    Err(_) => continue,
                },
            };
            let now = tokio::time::Instant::now();
            if let Some(f) = flows.get_mut(&client) {
                f.last = now;
                let _ = f.up.send(&buf[..n]).await;
                continue;
            }
            if flows.len() >= max {
                // Full: the least recently active flow makes room.
                if let Some(oldest) = flows.iter().min_by_key(|(_, f)| f.last).map(|(c, _)| *c)
                    && let Some(f) = flows.remove(&oldest)
                {
                    f.relay.abort();
                }
            }
            let any: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("addr");
            let Ok(u) = UdpSocket::bind(any).await else { continue };
            if u.connect(target).await.is_err() {
                continue;
            }
            let up = Arc::new(u);
            next_gen += 1;
            let generation = next_gen;
            let (u2, f2) = (up.clone(), front.clone());
            let relay = relays.spawn(async move {
                let mut b = vec![0u8; 65536];
                while let Ok(Ok(m)) = tokio::time::timeout(idle, u2.recv(&mut b)).await {
                    let _ = f2.async_io(Interest::WRITABLE, || send_from(&f2, &b[..m], client, local)).await;
                }
                (client, generation)
            });
            let _ = up.send(&buf[..n]).await;
            flows.insert(client, Flow { up, generation, last: now, relay });
        }
        // Every relay holds the host socket: end them all, then close it.
        flows.clear();
        relays.shutdown().await;
        drop(front);
    });
    Ok(Proxy { stop: Some(tx), task })
}
