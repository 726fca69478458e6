//! `cargo xtask demo`: builds a small world of network namespaces, runs netd's eBPF programs
//! in it, pushes real traffic through, prints what the programs counted, and removes it all.
use std::net::SocketAddr;

use anyhow::{Context, Result};
use netd::ebpf::{Loaded, current_netns_cookie};
use netd_common::{CONFIG_F_ENABLED, Config};
use netd_tests::{TestHost, probe};

fn main() -> Result<()> {
    if !netd_tests::is_root() {
        anyhow::bail!("the demo creates network namespaces: run it as root");
    }
    println!("netd demo: a host namespace with an uplink to an outside namespace, and a sandbox");
    let th = TestHost::new("demo").context("creating namespaces")?;
    let sb = th.add_peer("s", "vsb0", "10.99.0.1/24", "10.99.0.2/24", "10.99.0.1")?;
    println!("  host    {}  up0 {}/24", th.host.name, th.host_ip);
    println!("  outside {}  out0 {}/24", th.outside.name, th.outside_ip);
    println!("  sandbox {}  eth0 10.99.0.2/24 (host side vsb0)", sb.name);

    let (loaded, mode) = th.host.run(|| -> Result<_> {
        let mut l = Loaded::load()?;
        l.set_config(Config { netns_cookie: current_netns_cookie()?, flags: CONFIG_F_ENABLED, _pad: 0 })?;
        let mode = l.attach_uplink("up0")?;
        let _ = l.attach_container("vsb0")?;
        Ok((l, mode))
    })??;
    println!("  attached: XDP ({mode:?} mode) + tcx ingress/egress on up0, tcx ingress on vsb0\n");

    let addr: SocketAddr = "198.51.100.1:7000".parse()?;
    let _srv = probe::EchoServer::start(&th.host.path(), addr, "host")?;
    let _gw = probe::EchoServer::start(&th.host.path(), "10.99.0.1:7000".parse()?, "gw")?;
    for i in 0..10 {
        let e = probe::tcp_echo(&th.outside.path(), addr, format!("hello {i}").as_bytes())?;
        if i == 0 {
            println!("  outside -> host tcp: server '{}' saw client {}", e.tag, e.peer);
        }
        probe::udp_echo(&th.outside.path(), addr, b"udp")?;
    }
    let e = probe::tcp_echo(&sb.path(), "10.99.0.1:7000".parse()?, b"hi")?;
    println!("  sandbox -> host tcp: server '{}' saw client {}\n", e.tag, e.peer);

    println!("{:<22} {:>10} {:>12}", "PROGRAM", "PACKETS", "BYTES");
    for (name, c) in loaded.prog_stats()? {
        println!("{:<22} {:>10} {:>12}", name, c.packets, c.bytes);
    }
    drop(loaded);
    drop(sb);
    drop(th);
    println!("\nremoved every namespace, link and program the demo created");
    Ok(())
}
