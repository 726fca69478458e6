//! `netd-probe`: the test and demo workload.
//!
//! `netd-probe serve [--tag T] PORT...`   TCP and UDP echo on 0.0.0.0:PORT, replies `T:PEER:payload`
//! `netd-probe tcp ADDR:PORT [PAYLOAD]`    connect, send, print the echo (3 s timeout)
//! `netd-probe udp ADDR:PORT [PAYLOAD]`    one datagram, print the echo (3 s, retried)
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

const TIMEOUT: Duration = Duration::from_secs(3);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("tcp") => client_tcp(&args[1..]),
        Some("udp") => client_udp(&args[1..]),
        Some("dns-serve") => dns_serve(&args[1..]),
        _ => {
            eprintln!(
                "usage: netd-probe serve [--tag T] PORT... | tcp ADDR:PORT [PAYLOAD] | udp ADDR:PORT [PAYLOAD] | dns-serve PORT NAME=IP..."
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
        let t = TcpListener::bind(("0.0.0.0", p)).unwrap_or_else(|e| panic!("bind tcp {p}: {e}"));
        let u = UdpSocket::bind(("0.0.0.0", p)).unwrap_or_else(|e| panic!("bind udp {p}: {e}"));
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
                let mut reply = format!("{tag2}:{}:", peer.ip()).into_bytes();
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
    let peer = s.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
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

/// `ADDR:PORT` or `NAME:PORT` (resolved through the sandbox's /etc/hosts and resolv.conf).
fn target(args: &[String]) -> Option<(SocketAddr, Vec<u8>)> {
    use std::net::ToSocketAddrs;
    let a = args.first()?;
    let addr: SocketAddr = match a.parse() {
        Ok(x) => x,
        Err(_) => match a.to_socket_addrs() {
            Ok(mut it) => it.find(SocketAddr::is_ipv4)?,
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

fn client_udp(args: &[String]) -> i32 {
    let Some((addr, payload)) = target(args) else { return 2 };
    let s = match UdpSocket::bind("0.0.0.0:0") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp bind: {e}");
            return 1;
        }
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 65536];
    for _ in 0..6 {
        if s.send_to(&payload, addr).is_err() {
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

/// A tiny authoritative DNS server (UDP) for tests: answers A for the given NAME=IP pairs,
/// NXDOMAIN for anything else.
fn dns_serve(args: &[String]) -> i32 {
    use hickory_proto::{
        op::{Message, ResponseCode},
        rr::{Name, RData, Record, RecordType, rdata},
    };
    let Some(port) = args.first().and_then(|p| p.parse::<u16>().ok()) else { return 2 };
    let table: Vec<(String, std::net::Ipv4Addr)> = args[1..]
        .iter()
        .filter_map(|kv| kv.split_once('=').and_then(|(n, ip)| Some((n.to_ascii_lowercase(), ip.parse().ok()?))))
        .collect();
    let sock = UdpSocket::bind(("0.0.0.0", port)).unwrap_or_else(|e| panic!("bind udp {port}: {e}"));
    println!("dns on {port}/udp");
    let mut buf = [0u8; 4096];
    while let Ok((n, peer)) = sock.recv_from(&mut buf) {
        let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
        let Some(query) = q.queries.first().cloned() else { continue };
        let mut r = Message::response(q.metadata.id, q.metadata.op_code);
        r.metadata.recursion_desired = q.metadata.recursion_desired;
        r.add_query(query.clone());
        let name = query.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
        match table.iter().find(|(n, _)| *n == name) {
            Some((_, ip)) => {
                if query.query_type() == RecordType::A {
                    let owner = Name::from_ascii(query.name().to_ascii()).unwrap_or_default();
                    r.add_answer(Record::from_rdata(owner, 60, RData::A(rdata::A(*ip))));
                }
            }
            None => r.metadata.response_code = ResponseCode::NXDomain,
        }
        if let Ok(b) = r.to_vec() {
            let _ = sock.send_to(&b, peer);
        }
    }
    0
}
