//! netd's own load generator (like netperf's TCP_RR / TCP_CRR / TCP_STREAM and a UDP RR):
//! clients run on a thread inside a namespace, against `netd-bench serve` servers.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::netns::in_netns;

/// One measurement: operations per second and latency percentiles (µs), or throughput.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub gbit_s: f64,
    pub errors: u64,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Pin the calling thread to one CPU (client and server on different CPUs).
pub fn pin_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Request/response on one TCP connection: 64-byte requests, one read per response.
pub fn tcp_rr(ns: &str, dst: SocketAddr, dur: Duration, cpu: usize) -> Result<Sample> {
    in_netns(ns, move || -> Result<Sample> {
        pin_cpu(cpu);
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(3)).context("connect")?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let req = [b'r'; 64];
        let mut buf = [0u8; 4096];
        let mut lat = Vec::new();
        let start = Instant::now();
        while start.elapsed() < dur {
            let t = Instant::now();
            s.write_all(&req)?;
            let n = s.read(&mut buf)?;
            if n == 0 {
                anyhow::bail!("server closed");
            }
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(latency_sample(lat, 0, start))
    })?
}

/// Close with a RST (SO_LINGER 0) instead of a FIN and TIME_WAIT.
pub fn set_linger0(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid socket and option buffer.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Connect, request, response, close — per operation.
pub fn tcp_crr(ns: &str, dst: SocketAddr, dur: Duration, cpu: usize) -> Result<Sample> {
    in_netns(ns, move || -> Result<Sample> {
        pin_cpu(cpu);
        let req = [b'c'; 64];
        let mut buf = [0u8; 4096];
        let mut lat = Vec::new();
        let mut errors = 0;
        let start = Instant::now();
        while start.elapsed() < dur {
            let t = Instant::now();
            let r = (|| -> std::io::Result<()> {
                let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(3))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                s.write_all(&req)?;
                let _ = s.read(&mut buf)?;
                // RST instead of TIME_WAIT so the client's ports do not run out.
                set_linger0(&s);
                Ok(())
            })();
            match r {
                Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1e6),
                Err(_) => errors += 1,
            }
        }
        Ok(latency_sample(lat, errors, start))
    })?
}

/// Rate and latency percentiles of the operations timed since `start`.
fn latency_sample(mut lat: Vec<f64>, errors: u64, start: Instant) -> Sample {
    let secs = start.elapsed().as_secs_f64();
    Sample {
        ops_per_s: lat.len() as f64 / secs,
        p50_us: pct(&mut lat, 0.5),
        p99_us: pct(&mut lat, 0.99),
        errors,
        ..Default::default()
    }
}

/// One stream of 128 KiB writes into a sink.
pub fn tcp_stream(ns: &str, dst: SocketAddr, dur: Duration, cpu: usize) -> Result<Sample> {
    in_netns(ns, move || -> Result<Sample> {
        pin_cpu(cpu);
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(3)).context("connect")?;
        let chunk = vec![0u8; 128 << 10];
        let mut sent = 0u64;
        let start = Instant::now();
        while start.elapsed() < dur {
            s.write_all(&chunk)?;
            sent += chunk.len() as u64;
        }
        let secs = start.elapsed().as_secs_f64();
        Ok(Sample { gbit_s: sent as f64 * 8.0 / secs / 1e9, ..Default::default() })
    })?
}

/// UDP request/response (64 bytes), 1 s timeout per datagram (counted as an error).
pub fn udp_rr(ns: &str, dst: SocketAddr, dur: Duration, cpu: usize) -> Result<Sample> {
    in_netns(ns, move || -> Result<Sample> {
        pin_cpu(cpu);
        let s = UdpSocket::bind(if dst.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
        s.connect(dst)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        let req = [b'u'; 64];
        let mut buf = [0u8; 4096];
        let mut lat = Vec::new();
        let mut errors = 0;
        let start = Instant::now();
        while start.elapsed() < dur {
            let t = Instant::now();
            s.send(&req)?;
            match s.recv(&mut buf) {
                Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e6),
                Err(_) => errors += 1,
            }
        }
        Ok(latency_sample(lat, errors, start))
    })?
}

/// The server side (`netd-bench serve PORT`): TCP echo (for RR/CRR), a TCP sink on PORT+1,
/// UDP echo on PORT. One thread per connection; runs until killed. Dual-stack (`[::]`, v4 clients
/// as v4-mapped) where the namespace has IPv6, else `0.0.0.0`.
pub fn serve(port: u16) -> Result<()> {
    let any: std::net::IpAddr = if TcpListener::bind(("::", 0)).is_ok() {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    let echo = TcpListener::bind((any, port))?;
    let sink = TcpListener::bind((any, port + 1))?;
    let udp = UdpSocket::bind((any, port))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], peer);
        }
    });
    std::thread::spawn(move || {
        for s in sink.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; 256 << 10];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    for s in echo.incoming().flatten() {
        std::thread::spawn(move || {
            let mut s = s;
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 65536];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}
