//! Port specs (`-p`, `--expose`), exactly as Docker parses them (go-connections `nat`), the
//! host-port bookkeeping, and Docker's output formats for `port` and `ps`.
use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use crate::dataplane::Proto;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("{0}")]
    Docker(String),
}

fn e(msg: impl Into<String>) -> PortError {
    PortError::Docker(msg.into())
}

/// A port's protocol as Docker accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortProto {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PortProto::Tcp => "tcp",
            PortProto::Udp => "udp",
            PortProto::Sctp => "sctp",
        })
    }
}

fn parse_proto(p: &str) -> Result<PortProto, PortError> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok(PortProto::Tcp),
        "udp" => Ok(PortProto::Udp),
        "sctp" => Ok(PortProto::Sctp),
        _ => Err(e(format!("invalid proto: {}", p.to_ascii_lowercase()))),
    }
}

/// One binding of a `-p` spec, after range expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    pub proto: PortProto,
    pub host_ip: Option<IpAddr>,
    /// 0 = ephemeral; `start..=end` a range to pick one port from (one container port) or the
    /// port paired with this container port.
    pub host_port_start: u16,
    pub host_port_end: u16,
    pub container_port: u16,
}

fn parse_port_number(s: &str) -> Result<u16, String> {
    if s.is_empty() {
        return Err("value is empty".into());
    }
    match s.parse::<i64>() {
        Ok(v) if (0..=65535).contains(&v) => Ok(v as u16),
        Ok(_) => Err("value out of range (0–65535)".into()),
        Err(_) => Err("invalid syntax".into()),
    }
}

/// `8000` or `8000-8010` (Docker's `parsePortRange`).
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    if s.is_empty() {
        return Err("empty string specified for ports".into());
    }
    let (start, end) = match s.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let sp = parse_port_number(start).map_err(|x| format!("invalid start port '{start}': {x}"))?;
    let Some(end) = end.filter(|e| *e != start) else { return Ok((sp, sp)) };
    let ep = parse_port_number(end).map_err(|x| format!("invalid end port '{end}': {x}"))?;
    if ep < sp {
        return Err(format!("invalid port range: {s}"));
    }
    Ok((sp, ep))
}

fn split_parts(raw: &str) -> (String, String, String) {
    let parts: Vec<&str> = raw.split(':').collect();
    match parts.len() {
        1 => (String::new(), String::new(), parts[0].into()),
        2 => (String::new(), parts[0].into(), parts[1].into()),
        3 => (parts[0].into(), parts[1].into(), parts[2].into()),
        n => (parts[..n - 2].join(":"), parts[n - 2].into(), parts[n - 1].into()),
    }
}

/// Parse one `-p` value: `CPORT`, `HPORT:CPORT`, `IP::CPORT`, `IP:HPORT:CPORT`, `[IPv6]:...`,
/// `/tcp|/udp|/sctp`, ranges. Errors are Docker's.
pub fn parse_port_spec(raw: &str) -> Result<Vec<PortBinding>, PortError> {
    let (mut ip, host_port, container) = split_parts(raw);
    let (cport, proto) = match container.split_once('/') {
        Some((p, pr)) => (p.to_string(), if pr.is_empty() { "tcp".to_string() } else { pr.to_string() }),
        None => (container.clone(), "tcp".to_string()),
    };
    if cport.is_empty() {
        return Err(e(format!("no port specified: {raw}<empty>")));
    }
    let proto = parse_proto(&proto)?;
    if ip.starts_with('[') {
        match ip.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            Some(inner) => ip = inner.to_string(),
            None => return Err(e(format!("invalid IP address {ip}: missing ']' in address"))),
        }
    }
    let host_ip = if ip.is_empty() {
        None
    } else {
        Some(ip.parse::<IpAddr>().map_err(|_| e(format!("invalid IP address: {ip}")))?)
    };
    let (cs, ce) = parse_port_range(&cport).map_err(|_| e(format!("invalid containerPort: {cport}")))?;
    let (mut hs, mut he) = (0u16, 0u16);
    if !host_port.is_empty() {
        (hs, he) = parse_port_range(&host_port).map_err(|_| e(format!("invalid hostPort: {host_port}")))?;
        if ce - cs != he - hs && ce != cs {
            return Err(e(format!("invalid ranges specified for container and host Ports: {cport} and {host_port}")));
        }
    }
    let count = u32::from(ce - cs) + 1;
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let cp = cs + i as u16;
        let (s, en) = if host_port.is_empty() {
            (0, 0)
        } else if count == 1 {
            (hs, he)
        } else {
            (hs + i as u16, hs + i as u16)
        };
        out.push(PortBinding { proto, host_ip, host_port_start: s, host_port_end: en, container_port: cp });
    }
    Ok(out)
}

/// What netd's dataplanes cannot publish, refused clearly: SCTP, and IPv6 host addresses when
/// the dataplane (`backend`) has no IPv6 (`ipv6` false).
pub fn check_supported(b: &PortBinding, ipv6: bool, backend: &str) -> Result<(), PortError> {
    if !ipv6 && let Some(IpAddr::V6(v6)) = b.host_ip {
        return Err(e(format!(
            "IPv6 port bindings are not supported by the {backend} dataplane yet: [{v6}]:{}/{} (netd up --dataplane iptables has them)",
            b.container_port, b.proto
        )));
    }
    if b.proto == PortProto::Sctp {
        return Err(e(format!("sctp is not supported by netd's dataplanes: {}/sctp", b.container_port)));
    }
    Ok(())
}

/// A container port key, `80/tcp` (Docker's `nat.Port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub port: u16,
    pub proto: PortProto,
}

impl PortKey {
    /// `80`, `80/tcp`, `53/udp` (default tcp).
    pub fn parse(s: &str) -> Result<Self, PortError> {
        let (p, pr) = s.split_once('/').unwrap_or((s, "tcp"));
        let proto = parse_proto(if pr.is_empty() { "tcp" } else { pr })?;
        let port = parse_port_number(p).map_err(|x| e(format!("invalid port '{p}': {x}")))?;
        Ok(Self { port, proto })
    }
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto)
    }
}

/// `--expose 80`, `--expose 8000-8010/udp`.
pub fn parse_expose(s: &str) -> Result<Vec<PortKey>, PortError> {
    if s.contains(':') {
        return Err(e(format!("invalid port format for --expose: {s}")));
    }
    let (p, pr) = s.split_once('/').unwrap_or((s, "tcp"));
    let proto = parse_proto(if pr.is_empty() { "tcp" } else { pr })?;
    let (a, b) = parse_port_range(p).map_err(|x| e(format!("invalid range format for --expose: {s}, error: {x}")))?;
    Ok((a..=b).map(|port| PortKey { port, proto }).collect())
}

/// `host:port` as Go's `net.JoinHostPort` prints it.
pub fn format_host_addr(ip: &str, port: &str) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

/// Go's `sortorder.NaturalLess`: digit runs compare as numbers.
pub fn natural_less(a: &str, b: &str) -> bool {
    natural_cmp(a, b) == std::cmp::Ordering::Less
}

fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let na = std::str::from_utf8(&a[si..i]).unwrap_or("0").trim_start_matches('0');
            let nb = std::str::from_utf8(&b[sj..j]).unwrap_or("0").trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then(na.cmp(nb));
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

/// `netd port NAME` lines: `80/tcp -> 0.0.0.0:8080`, naturally sorted like Docker.
/// `bindings`: (container key, host ip, host port).
pub fn format_port_lines(bindings: &[(String, String, String)]) -> Vec<String> {
    let mut out: Vec<String> =
        bindings.iter().map(|(k, ip, port)| format!("{k} -> {}", format_host_addr(ip, port))).collect();
    out.sort_by(|a, b| natural_cmp(a, b));
    out
}

/// One entry of a list response's `Ports` (Docker's `PortSummary`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSummary {
    pub ip: Option<IpAddr>,
    pub private_port: u16,
    pub public_port: u16,
    pub proto: String,
}

/// Docker's `DisplayablePorts`: the `PORTS` column of `ps`.
pub fn displayable_ports(ports: &[PortSummary]) -> String {
    let mut ports = ports.to_vec();
    ports.sort_by(|a, b| {
        a.private_port
            .cmp(&b.private_port)
            .then_with(|| a.ip.cmp(&b.ip))
            .then_with(|| a.public_port.cmp(&b.public_port))
            .then_with(|| a.proto.cmp(&b.proto))
    });
    let mut groups: std::collections::HashMap<String, (u16, u16)> = std::collections::HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut result = Vec::new();
    let mut host = Vec::new();
    for p in &ports {
        let cur = p.private_port;
        let mut key = p.proto.clone();
        if let Some(ip) = p.ip {
            if p.public_port != cur {
                host.push(format!(
                    "{}->{}/{}",
                    format_host_addr(&ip.to_string(), &p.public_port.to_string()),
                    cur,
                    p.proto
                ));
                continue;
            }
            key = format!("{ip}/{}", p.proto);
        }
        match groups.get_mut(&key) {
            None => {
                groups.insert(key.clone(), (cur, cur));
                order.push(key);
            }
            Some(g) if cur == g.1.wrapping_add(1) => g.1 = cur,
            Some(g) => {
                result.push(form_group(&key, g.0, g.1));
                *g = (cur, cur);
            }
        }
    }
    for k in &order {
        let g = groups[k];
        result.push(form_group(k, g.0, g.1));
    }
    result.extend(host);
    result.join(", ")
}

fn form_group(key: &str, start: u16, last: u16) -> String {
    let (ip, ty) = match key.rsplit_once('/') {
        Some((ip, ty)) => (Some(ip), ty),
        None => (None, key),
    };
    let mut group = start.to_string();
    if start != last {
        group = format!("{group}-{last}");
    }
    if let Some(ip) = ip {
        group = format!("{}->{group}", format_host_addr(ip, &group));
    }
    format!("{group}/{ty}")
}

/// `/proc/sys/net/ipv4/ip_local_port_range` of the caller's namespace (Linux default 32768–60999).
pub fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_port_range_file(&s))
        .unwrap_or((32768, 60999))
}

pub fn parse_port_range_file(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(|x| x.parse::<u16>());
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b))) if a <= b => Some((a, b)),
        _ => None,
    }
}

/// `/proc/sys/net/ipv4/ip_local_reserved_ports` (`8080,9000-9010`).
pub fn reserved_ports() -> HashSet<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
        .map(|s| parse_reserved(&s))
        .unwrap_or_default()
}

pub fn parse_reserved(s: &str) -> HashSet<u16> {
    let mut out = HashSet::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        if let Ok((a, b)) = parse_port_range(part.trim()) {
            out.extend(a..=b);
        }
    }
    out
}

/// Which (proto, host ip, port) bindings netd holds. A wildcard (0.0.0.0) binding conflicts
/// with every specific address on the same port and protocol, and vice versa.
#[derive(Debug, Default)]
pub struct PortAllocator {
    taken: HashSet<(Proto, IpAddr, u16)>,
    /// How many `taken` entries each (proto, is IPv4, port) has, so a wildcard's conflict check
    /// is one lookup: scanning `taken` made publishing a range O(N²) (10,000 ports: minutes).
    per_port: HashMap<(Proto, bool, u16), u32>,
}

impl PortAllocator {
    /// Per address family: `0.0.0.0` conflicts with every IPv4 address, `::` with every IPv6
    /// address (the held `[::]` sockets are `IPV6_V6ONLY`, so the two wildcards do not clash).
    pub fn is_allocated(&self, proto: Proto, ip: IpAddr, port: u16) -> bool {
        let any =
            if ip.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) };
        if self.taken.contains(&(proto, ip, port)) || self.taken.contains(&(proto, any, port)) {
            return true;
        }
        ip.is_unspecified() && self.per_port.contains_key(&(proto, ip.is_ipv4(), port))
    }
    pub fn mark(&mut self, proto: Proto, ip: IpAddr, port: u16) {
        if self.taken.insert((proto, ip, port)) {
            *self.per_port.entry((proto, ip.is_ipv4(), port)).or_default() += 1;
        }
    }
    pub fn unmark(&mut self, proto: Proto, ip: IpAddr, port: u16) {
        if self.taken.remove(&(proto, ip, port))
            && let std::collections::hash_map::Entry::Occupied(mut e) = self.per_port.entry((proto, ip.is_ipv4(), port))
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
    pub fn len(&self) -> usize {
        self.taken.len()
    }
    pub fn is_empty(&self) -> bool {
        self.taken.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> PortBinding {
        let v = parse_port_spec(s).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        v[0].clone()
    }

    #[test]
    fn every_docker_form() {
        let b = one("80");
        assert_eq!((b.host_ip, b.host_port_start, b.container_port, b.proto), (None, 0, 80, PortProto::Tcp));
        let b = one("8080:80");
        assert_eq!((b.host_port_start, b.host_port_end, b.container_port), (8080, 8080, 80));
        let b = one("127.0.0.1::80");
        assert_eq!((b.host_ip, b.host_port_start), (Some("127.0.0.1".parse().unwrap()), 0));
        let b = one("127.0.0.1:8080:80/udp");
        assert_eq!((b.host_port_start, b.proto), (8080, PortProto::Udp));
        let b = one("[::1]:8080:80");
        assert_eq!(b.host_ip, Some("::1".parse().unwrap()));
        let b = one("[::]::80");
        assert_eq!((b.host_ip, b.host_port_start), (Some("::".parse().unwrap()), 0));
        let b = one("53/UDP");
        assert_eq!(b.proto, PortProto::Udp, "proto is case-insensitive");
        let b = one("8000-8010:80");
        assert_eq!((b.host_port_start, b.host_port_end, b.container_port), (8000, 8010, 80));
        let v = parse_port_spec("8000-8002:80-82").unwrap();
        assert_eq!(
            v.iter().map(|b| (b.host_port_start, b.host_port_end, b.container_port)).collect::<Vec<_>>(),
            [(8000, 8000, 80), (8001, 8001, 81), (8002, 8002, 82)]
        );
        let v = parse_port_spec("80-82").unwrap();
        assert_eq!(
            v.iter().map(|b| (b.host_port_start, b.container_port)).collect::<Vec<_>>(),
            [(0, 80), (0, 81), (0, 82)]
        );
        let b = one("9000-9000:90");
        assert_eq!((b.host_port_start, b.host_port_end), (9000, 9000));
    }

    #[test]
    fn dockers_errors() {
        let err = |s: &str| parse_port_spec(s).unwrap_err().to_string();
        assert_eq!(err("abc"), "invalid containerPort: abc");
        assert_eq!(err("8080:abc"), "invalid containerPort: abc");
        assert_eq!(err("70000"), "invalid containerPort: 70000");
        assert_eq!(err("x:80"), "invalid hostPort: x");
        assert_eq!(err("99999:80"), "invalid hostPort: 99999");
        assert_eq!(err("80/foo"), "invalid proto: foo");
        assert_eq!(err("1.2.3.999:80:80"), "invalid IP address: 1.2.3.999");
        assert_eq!(
            err("8000-8010:80-82"),
            "invalid ranges specified for container and host Ports: 80-82 and 8000-8010"
        );
        assert_eq!(err("90-80"), "invalid containerPort: 90-80");
        assert_eq!(err("8080:"), "no port specified: 8080:<empty>");
        assert!(check_supported(&one("[::1]:8080:80"), false, "ebpf").unwrap_err().to_string().contains("IPv6"));
        assert!(check_supported(&one("[::1]:8080:80"), true, "iptables").is_ok());
        assert!(check_supported(&one("80/sctp"), true, "iptables").is_err());
        assert!(check_supported(&one("80/udp"), false, "ebpf").is_ok());
    }

    #[test]
    fn expose_and_keys() {
        assert_eq!(parse_expose("80").unwrap(), [PortKey { port: 80, proto: PortProto::Tcp }]);
        assert_eq!(parse_expose("8000-8002/udp").unwrap().len(), 3);
        assert_eq!(parse_expose("80:80").unwrap_err().to_string(), "invalid port format for --expose: 80:80");
        assert!(parse_expose("x").unwrap_err().to_string().starts_with("invalid range format for --expose: x"));
        assert_eq!(PortKey::parse("53/udp").unwrap().to_string(), "53/udp");
        assert_eq!(PortKey::parse("80").unwrap().to_string(), "80/tcp");
    }

    #[test]
    fn port_output_is_natural_sorted() {
        let b = vec![
            ("8080/tcp".to_string(), "0.0.0.0".to_string(), "9000".to_string()),
            ("80/tcp".to_string(), "0.0.0.0".to_string(), "8080".to_string()),
            ("80/tcp".to_string(), "::".to_string(), "8080".to_string()),
            ("443/udp".to_string(), "127.0.0.1".to_string(), "443".to_string()),
        ];
        assert_eq!(
            format_port_lines(&b),
            ["80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080", "443/udp -> 127.0.0.1:443", "8080/tcp -> 0.0.0.0:9000"]
        );
        assert!(natural_less("a2", "a10"));
    }

    #[test]
    fn ps_ports_column_like_docker() {
        let ip = Some("0.0.0.0".parse().unwrap());
        let p = |private: u16, public: u16, ip: Option<IpAddr>, proto: &str| PortSummary {
            ip,
            private_port: private,
            public_port: public,
            proto: proto.into(),
        };
        assert_eq!(displayable_ports(&[p(80, 8080, ip, "tcp")]), "0.0.0.0:8080->80/tcp");
        assert_eq!(
            displayable_ports(&[p(8000, 8000, ip, "tcp"), p(8001, 8001, ip, "tcp"), p(8002, 8002, ip, "tcp")]),
            "0.0.0.0:8000-8002->8000-8002/tcp"
        );
        assert_eq!(displayable_ports(&[p(80, 0, None, "tcp"), p(81, 0, None, "tcp")]), "80-81/tcp");
        assert_eq!(
            displayable_ports(&[p(53, 53, ip, "udp"), p(80, 8080, ip, "tcp")]),
            "0.0.0.0:53->53/udp, 0.0.0.0:8080->80/tcp"
        );
    }

    #[test]
    fn proc_formats() {
        assert_eq!(parse_port_range_file("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_reserved("8080,9000-9002\n"), [8080, 9000, 9001, 9002].into_iter().collect());
        assert!(parse_reserved("\n").is_empty());
    }

    #[test]
    fn wildcard_conflicts_with_specific() {
        let mut a = PortAllocator::default();
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let any6: IpAddr = "::".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        a.mark(Proto::Tcp, lo, 8080);
        assert!(a.is_allocated(Proto::Tcp, any, 8080));
        assert!(!a.is_allocated(Proto::Udp, any, 8080), "tcp and udp are independent");
        assert!(!a.is_allocated(Proto::Tcp, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 8080));
        assert!(!a.is_allocated(Proto::Tcp, any6, 8080), "the families are independent");
        a.mark(Proto::Tcp, lo, 8080);
        a.mark(Proto::Tcp, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 8080);
        a.unmark(Proto::Tcp, lo, 8080);
        assert!(a.is_allocated(Proto::Tcp, any, 8080), "one specific binding is left on the port");
        a.unmark(Proto::Tcp, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 8080);
        assert!(!a.is_allocated(Proto::Tcp, any, 8080), "no binding left on the port");
        a.unmark(Proto::Tcp, lo, 8080);
        assert!(!a.is_allocated(Proto::Tcp, any, 8080), "unmarking twice changes nothing");
        a.mark(Proto::Tcp, any, 8080);
        assert!(a.is_allocated(Proto::Tcp, lo, 8080));
        assert!(!a.is_allocated(Proto::Tcp, lo6, 8080));
        a.mark(Proto::Tcp, any6, 8080);
        assert!(a.is_allocated(Proto::Tcp, lo6, 8080));
        assert_eq!(a.len(), 2);
    }
}

/// Property tests: the parsers never panic on arbitrary input, valid specs round-trip to their
/// numbers, and out-of-range ports, reversed and mismatched ranges are Docker's errors.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn proto() -> impl Strategy<Value = (String, PortProto)> {
        prop_oneof![
            Just(("tcp".to_string(), PortProto::Tcp)),
            Just(("udp".to_string(), PortProto::Udp)),
            Just(("sctp".to_string(), PortProto::Sctp)),
            Just(("UDP".to_string(), PortProto::Udp)),
            Just(("Tcp".to_string(), PortProto::Tcp)),
        ]
    }

    /// A range `start..=start+len` inside 1..=65535.
    fn range() -> impl Strategy<Value = (u16, u16)> {
        (1u16..=65535).prop_flat_map(|s| (Just(s), 0..=(65535 - s).min(300))).prop_map(|(s, l)| (s, s + l))
    }

    fn fmt_range((a, b): (u16, u16)) -> String {
        if a == b { a.to_string() } else { format!("{a}-{b}") }
    }

    /// Text built from the characters that matter to the port grammar, to reach deep paths.
    fn port_ish() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just(":"),
                Just("/"),
                Just("-"),
                Just("["),
                Just("]"),
                Just("."),
                Just("0"),
                Just("80"),
                Just("65535"),
                Just("65536"),
                Just("99999999999999999999"),
                Just("tcp"),
                Just("udp"),
                Just("::1"),
                Just("127.0.0.1"),
                Just(" "),
                Just("+"),
                Just("é"),
            ],
            0..12,
        )
        .prop_map(|v| v.concat())
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), port_ish(), "[0-9:/\\-\\[\\].a-z]{0,24}"]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn parsers_never_panic(s in any_text()) {
            if let Ok(v) = parse_port_spec(&s) {
                prop_assert!(!v.is_empty(), "{s:?}");
                for b in &v {
                    prop_assert!(b.host_port_start <= b.host_port_end, "{s:?}: {b:?}");
                    let _ = check_supported(b, false, "ebpf");
                }
            }
            if let Ok((a, b)) = parse_port_range(&s) {
                prop_assert!(a <= b, "{s:?}");
            }
            if let Ok(v) = parse_expose(&s) {
                prop_assert!(!v.is_empty() && !s.contains(':'), "{s:?}");
            }
            if let Ok(k) = PortKey::parse(&s) {
                prop_assert_eq!(PortKey::parse(&k.to_string()), Ok(k));
            }
        }

        #[test]
        fn host_container_proto_round_trips(h in 0u16..=65535, c in 0u16..=65535, (pt, pr) in proto()) {
            let v = parse_port_spec(&format!("{h}:{c}/{pt}")).unwrap();
            prop_assert_eq!(v, vec![PortBinding {
                proto: pr, host_ip: None, host_port_start: h, host_port_end: h, container_port: c,
            }]);
            let v = parse_port_spec(&format!("{c}/{pt}")).unwrap();
            prop_assert_eq!((v.len(), v[0].host_port_start, v[0].container_port, v[0].proto), (1, 0, c, pr));
        }

        #[test]
        fn host_ip_round_trips(ip in any::<[u8; 4]>(), h in 1u16..=65535, c in 1u16..=65535, v6 in any::<[u16; 8]>()) {
            let ip4 = IpAddr::from(ip);
            let b = &parse_port_spec(&format!("{ip4}:{h}:{c}")).unwrap()[0];
            prop_assert_eq!((b.host_ip, b.host_port_start, b.container_port), (Some(ip4), h, c));
            prop_assert!(check_supported(b, false, "ebpf").is_ok());
            let b = &parse_port_spec(&format!("{ip4}::{c}/udp")).unwrap()[0];
            prop_assert_eq!((b.host_ip, b.host_port_start, b.proto), (Some(ip4), 0, PortProto::Udp));
            let ip6 = IpAddr::from(v6);
            let b = &parse_port_spec(&format!("[{ip6}]:{h}:{c}")).unwrap()[0];
            prop_assert_eq!((b.host_ip, b.host_port_start), (Some(ip6), h));
            prop_assert!(check_supported(b, false, "ebpf").unwrap_err().to_string().contains("IPv6"));
            prop_assert!(check_supported(b, true, "iptables").is_ok());
        }

        #[test]
        fn equal_length_ranges_map_one_to_one(hs in 1u16..=65535, cs in 1u16..=65535, len in 0u16..300) {
            let len = len.min(65535 - hs).min(65535 - cs);
            let spec = format!("{}:{}", fmt_range((hs, hs + len)), fmt_range((cs, cs + len)));
            let v = parse_port_spec(&spec).unwrap();
            prop_assert_eq!(v.len(), usize::from(len) + 1);
            for (i, b) in v.iter().enumerate() {
                let i = i as u16;
                prop_assert_eq!((b.host_port_start, b.host_port_end, b.container_port), (hs + i, hs + i, cs + i));
            }
        }

        #[test]
        fn host_range_for_one_container_port(h in range(), c in 1u16..=65535) {
            let v = parse_port_spec(&format!("{}:{c}", fmt_range(h))).unwrap();
            prop_assert_eq!(v.len(), 1);
            prop_assert_eq!((v[0].host_port_start, v[0].host_port_end, v[0].container_port), (h.0, h.1, c));
        }

        #[test]
        fn mismatched_range_lengths_are_rejected(h in range(), c in range()) {
            prop_assume!(c.0 != c.1 && h.1 - h.0 != c.1 - c.0);
            let (hr, cr) = (fmt_range(h), fmt_range(c));
            prop_assert_eq!(
                parse_port_spec(&format!("{hr}:{cr}")).unwrap_err().to_string(),
                format!("invalid ranges specified for container and host Ports: {cr} and {hr}")
            );
        }

        #[test]
        fn out_of_range_ports_are_rejected(big in 65536u64..=u64::MAX, ok in 1u16..=65535) {
            prop_assert_eq!(
                parse_port_spec(&format!("{big}:{ok}")).unwrap_err().to_string(),
                format!("invalid hostPort: {big}")
            );
            prop_assert_eq!(
                parse_port_spec(&format!("{ok}:{big}")).unwrap_err().to_string(),
                format!("invalid containerPort: {big}")
            );
            prop_assert_eq!(
                parse_port_spec(&format!("{ok}-{big}")).unwrap_err().to_string(),
                format!("invalid containerPort: {ok}-{big}")
            );
            prop_assert!(parse_port_range(&big.to_string()).is_err());
            prop_assert!(PortKey::parse(&big.to_string()).is_err());
            let msg = parse_expose(&format!("{big}/udp")).unwrap_err().to_string();
            prop_assert!(msg.starts_with(&format!("invalid range format for --expose: {big}/udp")), "{}", msg);
        }

        #[test]
        fn reversed_ranges_are_rejected(
            (a, b) in (0u16..65535).prop_flat_map(|b| (b + 1..=65535, Just(b))),
            c in 1u16..=65535,
        ) {
            prop_assert_eq!(parse_port_range(&format!("{a}-{b}")), Err(format!("invalid port range: {a}-{b}")));
            prop_assert_eq!(
                parse_port_spec(&format!("{a}-{b}:{c}")).unwrap_err().to_string(),
                format!("invalid hostPort: {a}-{b}")
            );
            prop_assert_eq!(
                parse_port_spec(&format!("{a}-{b}")).unwrap_err().to_string(),
                format!("invalid containerPort: {a}-{b}")
            );
            let r = parse_expose(&format!("{a}-{b}"));
            prop_assert!(r.is_err(), "{:?}", r);
        }

        #[test]
        fn bad_protocols_are_rejected(p in "[a-zA-Z0-9]{1,8}", c in 1u16..=65535) {
            prop_assume!(!["tcp", "udp", "sctp"].contains(&p.to_ascii_lowercase().as_str()));
            let want = format!("invalid proto: {}", p.to_ascii_lowercase());
            prop_assert_eq!(parse_port_spec(&format!("{c}/{p}")).unwrap_err().to_string(), want.clone());
            prop_assert_eq!(parse_expose(&format!("{c}/{p}")).unwrap_err().to_string(), want.clone());
            prop_assert_eq!(PortKey::parse(&format!("{c}/{p}")).unwrap_err().to_string(), want);
        }

        #[test]
        fn expose_ranges_and_keys_round_trip(r in range(), (pt, pr) in proto()) {
            let v = parse_expose(&format!("{}/{pt}", fmt_range(r))).unwrap();
            let want: Vec<PortKey> = (r.0..=r.1).map(|port| PortKey { port, proto: pr }).collect();
            prop_assert_eq!(&v, &want);
            for k in v {
                prop_assert_eq!(PortKey::parse(&k.to_string()), Ok(k));
            }
            let colon = format!("{}:{}", r.0, r.1);
            prop_assert_eq!(
                parse_expose(&colon).unwrap_err().to_string(),
                format!("invalid port format for --expose: {colon}")
            );
        }
    }
}
