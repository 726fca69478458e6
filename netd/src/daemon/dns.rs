//! The embedded DNS server of user-defined networks: `127.0.0.11:53` (UDP and TCP) inside each
//! sandbox's network namespace, answering A (and PTR) for the names, `--network-alias`es and
//! short ids of running sandboxes (and the aliases of other attachments, e.g. CNI's) that share a
//! user network with the asker (a CNI container asks too: its resolver is keyed by its
//! attachment id), forwarding every other name to the upstream servers (`--dns`,
//! else the host's resolv.conf) from the sandbox's namespace. Internal networks answer their own
//! names and never forward. Messages are parsed and built with hickory-proto.
//!
//! Lookups read a snapshot of the model ([`View`]) that the daemon swaps in whenever the state
//! lock is released (`StateLock`), so a query never waits for the daemon-wide lock.
//!
//! Forwarding (RFC 5452's defences): each upstream query leaves from a fresh socket (a random
//! source port chosen by the kernel) created in the sandbox's namespace by a per-namespace socket
//! factory thread (one `setns` per thread, not per query; the thread exits when idle), with a
//! random transaction id. A reply counts only when it comes from the upstream queried (connected
//! socket), carries that id and repeats the question; anything else is ignored until the
//! timeout. A truncated UDP reply is retried over TCP (and the full answer returned when it fits
//! the client's UDP size, EDNS included). The query's bytes are relayed unchanged but for the id,
//! so EDNS options pass through.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, Query, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::oneshot,
    task::JoinHandle,
};

use super::{Shared, State};
use crate::model::{NetworkMode, Owner, Status};

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
    let udp = Arc::new(UdpSocket::from_std(udp)?);
    let tcp = TcpListener::from_std(tcp)?;
    let ctx = Arc::new(Ctx { d, cid, sockets: SocketFactory::new(netns) });
    let c1 = ctx.clone();
    let t1 = tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let Ok((n, peer)) = udp.recv_from(&mut buf).await else { continue };
            let q = buf[..n].to_vec();
            let (c, u) = (c1.clone(), udp.clone());
            tokio::spawn(async move {
                if let Some(resp) = handle(&c, &q, false).await {
                    let _ = u.send_to(&resp, peer).await;
                }
            });
        }
    });
    let t2 = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = tcp.accept().await else { continue };
            let c = ctx.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        let len = s.read_u16().await? as usize;
                        let mut q = vec![0u8; len];
                        s.read_exact(&mut q).await?;
                        if let Some(resp) = handle(&c, &q, true).await {
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

/// One sandbox's resolver.
struct Ctx {
    d: Shared,
    cid: String,
    sockets: SocketFactory,
}

// ---------------------------------------------------------------------------------------------
// The model snapshot

/// What the resolver needs of the model, rebuilt and swapped in by the daemon whenever the state
/// lock is released (see `StateLock`); lookups read it without any lock.
#[derive(Debug, Default)]
pub struct View {
    askers: HashMap<String, Asker>,
    entries: Vec<Entry>,
}

/// A sandbox that may ask.
#[derive(Debug)]
struct Asker {
    /// Its user networks (the default bridge has no name resolution, as in Docker).
    nets: Vec<String>,
    /// `--link NAME:ALIAS` (on a user network a link acts as an alias for the linking sandbox).
    links: Vec<(String, String)>,
    /// Its own `--dns` (else the daemon's).
    dns: Vec<String>,
    mode_none: bool,
    /// On user networks only, all of them internal: never forward.
    all_internal: bool,
}

/// One address with names on a user network.
#[derive(Debug)]
struct Entry {
    net_id: String,
    net_name: String,
    /// The sandbox's name (PTR target, `--link` target); `None` for other attachments.
    sandbox: Option<String>,
    /// Lower-case names that resolve to `ip` (name, short id, aliases).
    names: Vec<String>,
    /// `None`: no v4 address (IPv6-only network), no A record.
    ip: Option<Ipv4Addr>,
    /// The IPv6 address on a dual-stack network (AAAA records, ip6.arpa PTR).
    ip6: Option<Ipv6Addr>,
}

impl View {
    pub fn build(st: &State) -> View {
        let user_net = |id: &str| st.networks.get(id).filter(|n| !n.default_bridge);
        let mut v = View::default();
        for c in st.containers.values() {
            let nets: Vec<String> = c
                .endpoints
                .iter()
                .filter(|e| user_net(&e.network_id).is_some())
                .map(|e| e.network_id.clone())
                .collect();
            // Only sandboxes on a user network run a resolver (`Daemon::start_dns`), so only
            // they ask; the others (the default bridge's) cost nothing here. The view is rebuilt
            // whenever the state changes: per-sandbox work for every sandbox made each change
            // cost O(sandboxes), and N sandboxes' starts and teardowns O(N²).
            if nets.is_empty() {
                continue;
            }
            let all_internal = nets.iter().all(|n| user_net(n).is_some_and(|n| n.internal));
            v.askers.insert(
                c.id.clone(),
                Asker {
                    nets,
                    all_internal,
                    links: c
                        .config
                        .links
                        .iter()
                        .map(|l| {
                            let (n, a) = l.split_once(':').unwrap_or((l, l));
                            (n.trim_start_matches('/').to_string(), a.to_ascii_lowercase())
                        })
                        .collect(),
                    dns: c.config.dns.clone(),
                    mode_none: matches!(c.mode, NetworkMode::None),
                },
            );
            if c.state.status != Status::Running {
                continue;
            }
            for ep in &c.endpoints {
                let Some(net) = user_net(&ep.network_id) else { continue };
                let mut names = vec![c.name.to_ascii_lowercase(), c.id[..12].to_string()];
                names.extend(ep.aliases.iter().map(|a| a.to_ascii_lowercase()));
                v.entries.push(Entry {
                    net_id: ep.network_id.clone(),
                    net_name: net.name.clone(),
                    sandbox: Some(c.name.clone()),
                    names,
                    ip: ep.ip,
                    ip6: ep.ip6,
                });
            }
        }
        // CNI containers ask through the resolver netd serves in their namespace (keyed by
        // the attachment id): their network's names, else the daemon's upstreams.
        for a in st.attachments.values().filter(|a| matches!(a.owner, Owner::Cni { .. })) {
            let Some(net) = user_net(&a.network_id) else { continue };
            v.askers.insert(
                a.id.clone(),
                Asker {
                    nets: vec![a.network_id.clone()],
                    links: Vec::new(),
                    dns: Vec::new(),
                    mode_none: false,
                    all_internal: net.internal,
                },
            );
        }
        // Other attachments (CNI, Docker) resolve by their aliases.
        for a in st.attachments.values().filter(|a| !matches!(a.owner, Owner::Sandbox { .. }) && !a.aliases.is_empty())
        {
            let Some(net) = user_net(&a.network_id) else { continue };
            v.entries.push(Entry {
                net_id: a.network_id.clone(),
                net_name: net.name.clone(),
                sandbox: None,
                names: a.aliases.iter().map(|x| x.to_ascii_lowercase()).collect(),
                ip: a.ip,
                ip6: a.ip6,
            });
        }
        v
    }
}

/// What the model says about a name, for the asking sandbox.
#[derive(Debug, PartialEq)]
enum Answer {
    Local(Vec<Record>),
    /// Not ours: forward (unless every network of the asker is internal).
    Forward(Vec<SocketAddr>),
    Refuse,
}

fn norm(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}

fn resolve(v: &View, cid: &str, daemon_dns: &[String], name: &Name, qtype: RecordType) -> Answer {
    let Some(me) = v.askers.get(cid) else { return Answer::Refuse };
    let qn = norm(&name.to_ascii());
    let mut records = Vec::new();
    let mut known = false;
    for e in v.entries.iter().filter(|e| me.nets.contains(&e.net_id)) {
        if qtype == RecordType::PTR
            && (e.ip.is_some_and(|a| qn == ptr_name(a)) || e.ip6.is_some_and(|a| qn == ptr_name6(a)))
        {
            known = true;
            let target = e.sandbox.as_deref().or(e.names.first().map(String::as_str)).unwrap_or_default();
            if let Ok(t) = Name::from_ascii(format!("{target}.{}.", e.net_name)) {
                records.push(Record::from_rdata(name.clone(), TTL, RData::PTR(rdata::PTR(t))));
            }
            continue;
        }
        let linked = e.sandbox.as_ref().is_some_and(|s| me.links.iter().any(|(n, a)| n == s && *a == qn));
        if linked || e.names.contains(&qn) {
            known = true;
            if let Some(a4) = e.ip
                && (qtype == RecordType::A || qtype == RecordType::ANY)
            {
                records.push(Record::from_rdata(name.clone(), TTL, RData::A(rdata::A(a4))));
            }
            if let Some(a6) = e.ip6
                && (qtype == RecordType::AAAA || qtype == RecordType::ANY)
            {
                records.push(Record::from_rdata(name.clone(), TTL, RData::AAAA(rdata::AAAA(a6))));
            }
        }
    }
    if known {
        return Answer::Local(records);
    }
    if me.mode_none || me.all_internal {
        return Answer::Refuse;
    }
    let host_rc = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let dns = if me.dns.is_empty() { daemon_dns } else { &me.dns[..] };
    Answer::Forward(
        crate::etcfiles::upstreams(&host_rc, dns)
            .into_iter()
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .filter(|a| !a.is_loopback())
            .map(|a| SocketAddr::new(a, 53))
            .collect(),
    )
}

fn ptr_name(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
}

/// `b.a.9.8....ip6.arpa` of an IPv6 address (nibbles, least significant first).
fn ptr_name6(ip: Ipv6Addr) -> String {
    let mut s = String::with_capacity(72);
    for b in ip.octets().iter().rev() {
        s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
    }
    s.push_str("ip6.arpa");
    s
}

// ---------------------------------------------------------------------------------------------
// Serving a query

async fn handle(c: &Ctx, q: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let msg = Message::from_vec(q).ok()?;
    if msg.metadata.message_type != MessageType::Query {
        return None;
    }
    let query = msg.queries.first()?.clone();
    let view = c.d.state.dns_view();
    let ans = resolve(&view, &c.cid, &c.d.cfg.up.dns, query.name(), query.query_type());
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
        Answer::Forward(upstreams) => {
            let client_udp_size = if tcp { usize::MAX } else { udp_size(&msg) };
            match forward(&c.sockets, q, &query, &upstreams, tcp, client_udp_size).await {
                Some(r) => Some(r),
                None => {
                    resp.metadata.response_code = ResponseCode::ServFail;
                    resp.to_vec().ok()
                }
            }
        }
    }
}

/// The largest UDP reply the client takes: its EDNS payload size, else 512 (RFC 1035).
fn udp_size(msg: &Message) -> usize {
    msg.edns.as_ref().map_or(512, |e| (e.max_payload() as usize).max(512))
}

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Relay a query to the upstreams in turn (2 s each) from the sandbox's namespace.
async fn forward(
    f: &SocketFactory,
    q: &[u8],
    question: &Query,
    upstreams: &[SocketAddr],
    tcp: bool,
    client_udp_size: usize,
) -> Option<Vec<u8>> {
    let client_id = [q[0], q[1]];
    for &up in upstreams {
        let id: u16 = rand::random();
        let mut out = q.to_vec();
        out[..2].copy_from_slice(&id.to_be_bytes());
        let reply = if tcp {
            exchange_tcp(f, &out, up, id, question).await
        } else {
            match exchange_udp(f, &out, up, id, question).await {
                Some(r) if truncated(&r) => match exchange_tcp(f, &out, up, id, question).await {
                    Some(full) if full.len() <= client_udp_size => Some(full),
                    // Too big for the client over UDP (or no TCP upstream): the truncated
                    // reply tells the client to retry over TCP itself.
                    _ => Some(r),
                },
                r => r,
            }
        };
        if let Some(mut r) = reply {
            r[..2].copy_from_slice(&client_id);
            return Some(r);
        }
    }
    None
}

fn truncated(r: &[u8]) -> bool {
    r.len() > 2 && r[2] & 0x02 != 0
}

/// Whether `r` answers our query: the id we sent and the same question (RFC 5452 §9.1).
fn matches(r: &[u8], id: u16, question: &Query) -> bool {
    let Ok(m) = Message::from_vec(r) else { return false };
    m.metadata.id == id
        && m.metadata.message_type == MessageType::Response
        && m.queries.len() == 1
        && m.queries[0].query_type() == question.query_type()
        && m.queries[0].query_class() == question.query_class()
        && norm(&m.queries[0].name().to_ascii()) == norm(&question.name().to_ascii())
}

async fn exchange_udp(f: &SocketFactory, q: &[u8], up: SocketAddr, id: u16, question: &Query) -> Option<Vec<u8>> {
    let fd = f.socket(Kind::Udp, up).await?;
    let s = UdpSocket::from_std(std::net::UdpSocket::from(fd)).ok()?;
    // Connected: the kernel drops datagrams from any other sender.
    s.connect(up).await.ok()?;
    s.send(q).await.ok()?;
    let mut buf = vec![0u8; 65535];
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        loop {
            let n = s.recv(&mut buf).await.ok()?;
            if matches(&buf[..n], id, question) {
                return Some(buf[..n].to_vec());
            }
            tracing::debug!(upstream = %up, "DNS: ignored a reply that does not match the query");
        }
    })
    .await
    .ok()
    .flatten()
}

async fn exchange_tcp(f: &SocketFactory, q: &[u8], up: SocketAddr, id: u16, question: &Query) -> Option<Vec<u8>> {
    let fd = f.socket(Kind::Tcp, up).await?;
    let sock = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        let mut s: TcpStream = sock.connect(up).await.ok()?;
        s.write_all(&[&(q.len() as u16).to_be_bytes()[..], q].concat()).await.ok()?;
        let len = s.read_u16().await.ok()? as usize;
        let mut out = vec![0u8; len];
        s.read_exact(&mut out).await.ok()?;
        matches(&out, id, question).then_some(out)
    })
    .await
    .ok()
    .flatten()
}

// ---------------------------------------------------------------------------------------------
// Sockets in the sandbox's namespace

#[derive(Debug, Clone, Copy)]
enum Kind {
    Udp,
    Tcp,
}

type SocketReq = (Kind, SocketAddr, oneshot::Sender<std::io::Result<OwnedFd>>);

/// Creates sockets inside one network namespace: a thread that entered it once serves
/// requests, and exits after a minute without any (the next request starts a new one).
struct SocketFactory {
    netns: PathBuf,
    tx: Mutex<Option<mpsc::Sender<SocketReq>>>,
}

const FACTORY_IDLE: Duration = Duration::from_secs(60);

impl SocketFactory {
    fn new(netns: PathBuf) -> Self {
        Self { netns, tx: Mutex::new(None) }
    }

    /// A non-blocking socket of `kind` for talking to `up`, created in the namespace.
    async fn socket(&self, kind: Kind, up: SocketAddr) -> Option<OwnedFd> {
        let (rtx, rrx) = oneshot::channel();
        let mut req = Some((kind, up, rtx));
        for _ in 0..2 {
            let tx = {
                let mut g = self.tx.lock().unwrap_or_else(|e| e.into_inner());
                match g.as_ref() {
                    Some(t) => t.clone(),
                    None => {
                        let t = spawn_factory(&self.netns).ok()?;
                        *g = Some(t.clone());
                        t
                    }
                }
            };
            match tx.send(req.take()?) {
                Ok(()) => break,
                // The thread exited (idle): start another and retry once.
                Err(mpsc::SendError(back)) => {
                    req = Some(back);
                    *self.tx.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
            }
        }
        match rrx.await {
            Ok(Ok(fd)) => Some(fd),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "DNS: creating an upstream socket");
                None
            }
            Err(_) => None,
        }
    }
}

fn spawn_factory(netns: &Path) -> std::io::Result<mpsc::Sender<SocketReq>> {
    let (tx, rx) = mpsc::channel::<SocketReq>();
    let ns = std::fs::File::open(netns)?;
    std::thread::Builder::new().name("netd-dns-sock".into()).spawn(move || {
        use std::os::fd::AsFd;
        let entered = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET);
        loop {
            let Ok((kind, up, reply)) = rx.recv_timeout(FACTORY_IDLE) else { return };
            let r = match &entered {
                Ok(()) => new_socket(kind, up),
                Err(e) => Err(std::io::Error::from(*e)),
            };
            let _ = reply.send(r);
        }
    })?;
    Ok(tx)
}

fn new_socket(kind: Kind, up: SocketAddr) -> std::io::Result<OwnedFd> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if up.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = match kind {
        Kind::Udp => Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?,
        Kind::Tcp => Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?,
    };
    s.set_nonblocking(true)?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: u16, name: &str, tc: bool) -> Vec<u8> {
        let mut m = Message::response(id, hickory_proto::op::OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.metadata.truncation = tc;
        m.to_vec().unwrap()
    }

    #[test]
    fn only_replies_to_our_question_and_id_count() {
        let q = Query::query(Name::from_ascii("Example.Test.").unwrap(), RecordType::A);
        assert!(matches(&reply(7, "example.test.", false), 7, &q));
        assert!(!matches(&reply(8, "example.test.", false), 7, &q), "wrong id");
        assert!(!matches(&reply(7, "other.test.", false), 7, &q), "wrong question");
        assert!(!matches(b"\x00\x07garbage", 7, &q));
        let mut query = Message::new(7, MessageType::Query, hickory_proto::op::OpCode::Query);
        query.add_query(q.clone());
        assert!(!matches(&query.to_vec().unwrap(), 7, &q), "a query is no reply");
        assert!(truncated(&reply(7, "example.test.", true)) && !truncated(&reply(7, "example.test.", false)));
        assert_eq!(udp_size(&query), 512);
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(1232);
        query.edns = Some(e);
        assert_eq!(udp_size(&query), 1232);
    }

    #[test]
    fn ptr_names() {
        assert_eq!(ptr_name(Ipv4Addr::new(10, 77, 0, 2)), "2.0.77.10.in-addr.arpa");
        assert_eq!(
            ptr_name6("2001:db8::567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
        assert_eq!(norm("Web."), "web");
    }
}
