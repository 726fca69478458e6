//! The kernel's conntrack table over ctnetlink (NETLINK_NETFILTER, subsystem CTNETLINK): dump
//! the IPv4 and IPv6 entries and delete those a filter selects, as `conntrack -D` does, without needing
//! the `conntrack` binary (often not installed on a real host). Used by the iptables dataplane to
//! drop stale translations when a host port is (re)published or released. Acts on the network
//! namespace of the calling thread (the daemon's).
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_ZONE: u16 = 18;

/// The original-direction tuple of a conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// Conntrack zone (0 unless set).
    pub zone: u16,
}

/// Delete every entry (IPv4 and IPv6) whose original tuple `select` picks; returns how many went. An entry
/// that vanished between the dump and the delete is not an error.
pub fn delete_where(select: impl Fn(&Tuple) -> bool) -> io::Result<usize> {
    let sock = Socket::open()?;
    let doomed: Vec<Tuple> = sock.dump()?.into_iter().filter(|t| select(t)).collect();
    let mut n = 0;
    for t in &doomed {
        match sock.delete(t) {
            Ok(()) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Every entry's original tuple (both families).
pub fn list() -> io::Result<Vec<Tuple>> {
    Socket::open()?.dump()
}

struct Socket {
    fd: OwnedFd,
    seq: std::cell::Cell<u32>,
}

impl Socket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Replies to a dump of a large table: a generous receive buffer, and a bounded wait.
        let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
        // SAFETY: setsockopt with a correctly sized timeval.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        Ok(Self { fd, seq: std::cell::Cell::new(1) })
    }

    /// `family`: the nfgenmsg family (`AF_UNSPEC` dumps every family; a delete names its tuple's).
    fn send(&self, msg_type: u16, flags: u16, family: u8, attrs: &[u8]) -> io::Result<u32> {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let len = 16 + 4 + attrs.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg_type).to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        // nfgenmsg: family, version 0, res_id 0.
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend_from_slice(attrs);
        // SAFETY: sending a buffer we own to the kernel (destination: pid 0, the default).
        let r = unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(seq)
    }

    /// Read messages until `on` says the exchange with `seq` is over.
    fn recv_until(&self, seq: u32, mut on: impl FnMut(u16, &[u8]) -> io::Result<bool>) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: receiving into a buffer we own.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
                let mseq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
                if len < 16 || len > rest.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
                }
                let body = &rest[16..len];
                rest = &rest[align(len).min(rest.len())..];
                if mseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(body.get(0..4).unwrap_or(&[0; 4]).try_into().unwrap());
                        return if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) };
                    }
                    _ => {
                        if on(ty, body)? {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    fn dump(&self) -> io::Result<Vec<Tuple>> {
        let seq = self.send(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, libc::AF_UNSPEC as u8, &[])?;
        let mut out = Vec::new();
        self.recv_until(seq, |_, body| {
            if let Some(t) = body.get(4..).and_then(parse_entry) {
                out.push(t);
            }
            Ok(false)
        })?;
        Ok(out)
    }

    fn delete(&self, t: &Tuple) -> io::Result<()> {
        let family = if t.src.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 } as u8;
        let seq = self.send(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, family, &entry_attrs(t))?;
        self.recv_until(seq, |_, _| Ok(true))
    }
}

/// The attributes naming one entry: its original tuple (and zone when not 0).
fn entry_attrs(t: &Tuple) -> Vec<u8> {
    let mut ip = Vec::new();
    match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            attr(&mut ip, CTA_IP_V4_SRC, &s.octets());
            attr(&mut ip, CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(x) => x,
                IpAddr::V4(x) => x.to_ipv6_mapped(),
            };
            attr(&mut ip, CTA_IP_V6_SRC, &v6(s).octets());
            attr(&mut ip, CTA_IP_V6_DST, &v6(d).octets());
        }
    }
    let mut proto = Vec::new();
    attr(&mut proto, CTA_PROTO_NUM, &[t.proto]);
    attr(&mut proto, CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
    attr(&mut proto, CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
    let mut tuple = Vec::new();
    attr(&mut tuple, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
    attr(&mut tuple, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
    let mut attrs = Vec::new();
    attr(&mut attrs, CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple);
    if t.zone != 0 {
        attr(&mut attrs, CTA_ZONE, &t.zone.to_be_bytes());
    }
    attrs
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

fn attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + align(len) - len, 0);
}

/// (type without flags, payload) of each attribute in `b`.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[align(len).min(b.len())..];
        Some((ty, payload))
    })
}

fn parse_entry(b: &[u8]) -> Option<Tuple> {
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let mut t = Tuple { proto: 0, src: any, dst: any, sport: 0, dport: 0, zone: 0 };
    let mut seen = false;
    for (ty, p) in attrs(b) {
        match ty {
            CTA_TUPLE_ORIG => {
                seen = true;
                for (ty, p) in attrs(p) {
                    match ty {
                        CTA_TUPLE_IP => {
                            for (ty, p) in attrs(p) {
                                match (ty, <[u8; 4]>::try_from(p), <[u8; 16]>::try_from(p)) {
                                    (CTA_IP_V4_SRC, Ok(a), _) => t.src = Ipv4Addr::from(a).into(),
                                    (CTA_IP_V4_DST, Ok(a), _) => t.dst = Ipv4Addr::from(a).into(),
                                    (CTA_IP_V6_SRC, _, Ok(a)) => t.src = Ipv6Addr::from(a).into(),
                                    (CTA_IP_V6_DST, _, Ok(a)) => t.dst = Ipv6Addr::from(a).into(),
                                    _ => {}
                                }
                            }
                        }
                        CTA_TUPLE_PROTO => {
                            for (ty, p) in attrs(p) {
                                match ty {
                                    CTA_PROTO_NUM => t.proto = *p.first()?,
                                    CTA_PROTO_SRC_PORT => t.sport = u16::from_be_bytes(p.get(..2)?.try_into().ok()?),
                                    CTA_PROTO_DST_PORT => t.dport = u16::from_be_bytes(p.get(..2)?.try_into().ok()?),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            CTA_ZONE => t.zone = u16::from_be_bytes(p.get(..2)?.try_into().ok()?),
            _ => {}
        }
    }
    seen.then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delete_request_parses_back_to_its_tuple() {
        let t = Tuple {
            proto: 17,
            src: Ipv4Addr::new(198, 51, 100, 2).into(),
            dst: Ipv4Addr::new(198, 51, 100, 1).into(),
            sport: 40000,
            dport: 5353,
            zone: 3,
        };
        let attrs = entry_attrs(&t);
        assert_eq!(parse_entry(&attrs), Some(t));
        assert_eq!(parse_entry(&attrs[..3]), None, "truncated");
        let t6 = Tuple { src: "2001:db8:100::2".parse().unwrap(), dst: "2001:db8:100::1".parse().unwrap(), ..t };
        assert_eq!(parse_entry(&entry_attrs(&t6)), Some(t6));
    }
}
