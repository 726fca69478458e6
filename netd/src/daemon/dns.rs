//! The embedded DNS server of user-defined networks: `127.0.0.11:53` (UDP and TCP) inside each
//! sandbox's network namespace, answering A (and PTR) for the names, `--network-alias`es and
//! short ids of running sandboxes that share a user network with the asker, forwarding every
//! other name to the upstream servers (`--dns`, else the host's resolv.conf) from the sandbox's
//! namespace. Internal networks answer their own names and never forward. Messages are parsed
//! and built with hickory-proto.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
    task::JoinHandle,
};

use super::Shared;
use crate::model::{NetworkMode, Status};

pub const RESOLVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
const TTL: u32 = 600;

/// Bind the resolver's sockets inside `netns` and serve them. The returned tasks stop when
/// aborted (sandbox stopped).
pub fn start(d: Shared, cid: String, netns: PathBuf) -> std::io::Result<Vec<JoinHandle<()>>> {
    let (udp, tcp) = crate::netns::run_in(&netns, || -> std::io::Result<_> {
        let u = std::net::UdpSocket::bind((RESOLVER, 53))?;
        let t = std::net::TcpListener::bind((RESOLVER, 53))?;
        u.set_nonblocking(true)?;
        t.set_nonblocking(true)?;
        Ok((u, t))
    })
    .map_err(std::io::Error::other)??;
    let udp = UdpSocket::from_std(udp)?;
    let tcp = TcpListener::from_std(tcp)?;
    let (d1, c1, n1) = (d.clone(), cid.clone(), netns.clone());
    let t1 = tokio::spawn(async move {
        let udp = std::sync::Arc::new(udp);
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = udp.recv_from(&mut buf).await else { continue };
            let q = buf[..n].to_vec();
            let (d, c, ns, u) = (d1.clone(), c1.clone(), n1.clone(), udp.clone());
            tokio::spawn(async move {
                if let Some(resp) = handle(&d, &c, &ns, &q, false).await {
                    let _ = u.send_to(&resp, peer).await;
                }
            });
        }
    });
    let t2 = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = tcp.accept().await else { continue };
            let (d, c, ns) = (d.clone(), cid.clone(), netns.clone());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        let len = s.read_u16().await? as usize;
                        let mut q = vec![0u8; len];
                        s.read_exact(&mut q).await?;
                        if let Some(resp) = handle(&d, &c, &ns, &q, true).await {
                            s.write_u16(resp.len() as u16).await?;
                            s.write_all(&resp).await?;
                        }
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), std::io::Error>(())
                })
                .await;
            });
        }
    });
    Ok(vec![t1, t2])
}

/// What the daemon's state says about a name, for the asking sandbox.
enum Answer {
    Local(Vec<Record>),
    /// Not ours: forward (unless every network of the asker is internal).
    Forward {
        upstreams: Vec<SocketAddr>,
    },
    Refuse,
}

async fn handle(d: &Shared, cid: &str, netns: &Path, q: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let msg = Message::from_vec(q).ok()?;
    if msg.metadata.message_type != MessageType::Query {
        return None;
    }
    let query = msg.queries.first()?.clone();
    let ans = resolve(d, cid, query.name(), query.query_type()).await;
    let mut resp = Message::response(msg.metadata.id, msg.metadata.op_code);
    resp.metadata.recursion_desired = msg.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_query(query.clone());
    match ans {
        Answer::Local(records) => {
            resp.metadata.authoritative = true;
            for r in records {
                resp.add_answer(r);
            }
            resp.to_vec().ok()
        }
        Answer::Refuse => {
            resp.metadata.response_code = ResponseCode::ServFail;
            resp.to_vec().ok()
        }
        Answer::Forward { upstreams } => match forward(netns, q, &upstreams, tcp).await {
            Some(r) => Some(r),
            None => {
                resp.metadata.response_code = ResponseCode::ServFail;
                resp.to_vec().ok()
            }
        },
    }
}

fn norm(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}

async fn resolve(d: &Shared, cid: &str, name: &Name, qtype: RecordType) -> Answer {
    let st = d.state.lock().await;
    let Some(me) = st.containers.get(cid) else { return Answer::Refuse };
    // The asker's user networks (the default bridge has no name resolution, as in Docker).
    let my_nets: Vec<String> = me
        .endpoints
        .iter()
        .map(|e| e.network_id.clone())
        .filter(|n| st.networks.get(n).is_some_and(|n| !n.default_bridge))
        .collect();
    let qn = norm(&name.to_ascii());
    let mut records = Vec::new();
    let mut known = false;
    for other in st.containers.values().filter(|c| c.state.status == Status::Running) {
        for ep in other.endpoints.iter().filter(|e| my_nets.contains(&e.network_id)) {
            let net_name = st.networks.get(&ep.network_id).map(|n| n.name.clone()).unwrap_or_default();
            // PTR for a sandbox address.
            if qtype == RecordType::PTR && qn == ptr_name(ep.ip) {
                known = true;
                if let Ok(target) = Name::from_ascii(format!("{}.{}.", other.name, net_name)) {
                    records.push(Record::from_rdata(name.clone(), TTL, RData::PTR(rdata::PTR(target))));
                }
                continue;
            }
            let mut names: Vec<String> = vec![other.name.to_ascii_lowercase(), other.id[..12].to_string()];
            names.extend(ep.aliases.iter().map(|a| a.to_ascii_lowercase()));
            // `--link` on a user network acts as an alias for the linking sandbox.
            for l in &me.config.links {
                let (n, alias) = l.split_once(':').unwrap_or((l, l));
                if n.trim_start_matches('/') == other.name {
                    names.push(alias.to_ascii_lowercase());
                }
            }
            if names.contains(&qn) {
                known = true;
                if qtype == RecordType::A || qtype == RecordType::ANY {
                    records.push(Record::from_rdata(name.clone(), TTL, RData::A(rdata::A(ep.ip))));
                }
            }
        }
    }
    if known {
        return Answer::Local(records);
    }
    let all_internal = !my_nets.is_empty() && my_nets.iter().all(|n| st.networks.get(n).is_some_and(|n| n.internal));
    if all_internal || matches!(me.mode, NetworkMode::None) {
        return Answer::Refuse;
    }
    let host_rc = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let dns = if me.config.dns.is_empty() { d.cfg.up.dns.clone() } else { me.config.dns.clone() };
    let upstreams = crate::etcfiles::upstreams(&host_rc, &dns)
        .into_iter()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .filter(|a| !a.is_loopback())
        .map(|a| SocketAddr::new(a, 53))
        .collect();
    Answer::Forward { upstreams }
}

fn ptr_name(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
}

/// Relay a query to the upstreams from inside the sandbox's namespace (2 s each).
async fn forward(netns: &Path, q: &[u8], upstreams: &[SocketAddr], tcp: bool) -> Option<Vec<u8>> {
    let ns = netns.to_path_buf();
    for up in upstreams {
        let (q, ns, up) = (q.to_vec(), ns.clone(), *up);
        let r = tokio::task::spawn_blocking(move || {
            crate::netns::run_in(&ns, move || -> std::io::Result<Vec<u8>> {
                use std::io::{Read, Write};
                if tcp {
                    let mut s = std::net::TcpStream::connect_timeout(&up, Duration::from_secs(2))?;
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.write_all(&(q.len() as u16).to_be_bytes())?;
                    s.write_all(&q)?;
                    let mut l = [0u8; 2];
                    s.read_exact(&mut l)?;
                    let mut out = vec![0u8; u16::from_be_bytes(l) as usize];
                    s.read_exact(&mut out)?;
                    Ok(out)
                } else {
                    let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.send_to(&q, up)?;
                    let mut buf = vec![0u8; 4096];
                    let (n, _) = s.recv_from(&mut buf)?;
                    buf.truncate(n);
                    Ok(buf)
                }
            })
        })
        .await;
        if let Ok(Ok(Ok(resp))) = r {
            return Some(resp);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_names() {
        assert_eq!(ptr_name(Ipv4Addr::new(10, 77, 0, 2)), "2.0.77.10.in-addr.arpa");
        assert_eq!(norm("Web."), "web");
    }
}
