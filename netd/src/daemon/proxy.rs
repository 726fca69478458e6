//! The userland proxy of `--dataplane iptables --userland-proxy=true` (Docker's default): the
//! daemon listens on the host port itself (on the socket it already holds for the binding) and
//! relays to the sandbox, serving what iptables does not NAT (loopback, hairpin). One tokio task
//! per binding, no extra processes.
use std::{
    collections::HashMap,
    net::{SocketAddr, SocketAddrV4},
    os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd},
    sync::Arc,
    time::Duration,
};

use tokio::{net::UdpSocket, task::JoinHandle};

/// Relay TCP connections accepted on `sock` (bound, not yet listening) to `target`.
pub fn tcp(sock: OwnedFd, target: SocketAddrV4) -> std::io::Result<JoinHandle<()>> {
    // SAFETY: listen on a socket we own.
    if unsafe { libc::listen(sock.as_raw_fd(), 1024) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd is a bound, listening TCP socket we own.
    let std_l = unsafe { std::net::TcpListener::from_raw_fd(sock.into_raw_fd()) };
    std_l.set_nonblocking(true)?;
    let l = tokio::net::TcpListener::from_std(std_l)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = l.accept().await else { continue };
            tokio::spawn(async move {
                if let Ok(Ok(mut out)) =
                    tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(SocketAddr::V4(target)))
                        .await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    }))
}

/// Relay UDP datagrams received on `sock` to `target`, one upstream socket per client.
pub fn udp(sock: std::net::UdpSocket, target: SocketAddrV4) -> std::io::Result<JoinHandle<()>> {
    sock.set_nonblocking(true)?;
    let front = Arc::new(UdpSocket::from_std(sock)?);
    Ok(tokio::spawn(async move {
        // Reply relays live in this set: aborting the proxy drops it, which aborts them, so the
        // host port is free again at once.
        let mut relays = tokio::task::JoinSet::new();
        let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, client)) = front.recv_from(&mut buf).await else { continue };
            let up = match clients.get(&client) {
                Some(u) => u.clone(),
                None => {
                    let Ok(u) = UdpSocket::bind("0.0.0.0:0").await else { continue };
                    if u.connect(SocketAddr::V4(target)).await.is_err() {
                        continue;
                    }
                    let u = Arc::new(u);
                    let (u2, f2) = (u.clone(), front.clone());
                    relays.spawn(async move {
                        let mut b = vec![0u8; 65536];
                        // Replies until the flow is idle for a minute.
                        while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(60), u2.recv(&mut b)).await {
                            let _ = f2.send_to(&b[..m], client).await;
                        }
                    });
                    clients.insert(client, u.clone());
                    u
                }
            };
            let _ = up.send(&buf[..n]).await;
        }
    }))
}
