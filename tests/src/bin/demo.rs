//! `cargo xtask demo`: Docker's network model on a host of its own, with the eBPF dataplane.
//!
//! Builds a "host" network namespace (where `netd up` runs) joined to an "outside" one (a LAN
//! client), starts a real web server in a sandbox with `-p 8080:80`, fetches the page from
//! outside, from the host's loopback and from another sandbox through the host address
//! (hairpin), shows masquerade to an outside server, prints `ps`/`port`/`inspect`/`stats`, and
//! removes everything. Then the same with real Docker: Debian's dockerd (installed by `cargo
//! xtask setup` with service starts blocked) started inside a second pair of namespaces with
//! private roots, `docker network create -d netd`, a busybox web server published with `-p`.
//! Nothing touches the machine's root network namespace nor its own Docker.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use netd_tests::{TestDaemon, TestDocker, TestHost, daemon::probe_bin, docker, probe};

fn step(s: &str) {
    println!("\n== {s}");
}

fn show(d: &TestDaemon, args: &[&str]) -> Result<String> {
    println!("$ netd {}", args.join(" "));
    let r = d.cli(args);
    print!("{}", r.stdout);
    if !r.stderr.is_empty() {
        eprint!("{}", r.stderr);
    }
    if r.code != 0 {
        bail!("netd {} exited {}", args.join(" "), r.code);
    }
    Ok(r.stdout)
}

/// curl from inside a namespace, retried briefly while the server starts.
fn curl(ns: &str, url: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("nsenter")
            .args([&format!("--net={ns}"), "--", "curl", "-s", "-m", "3", url])
            .output()
            .context("running curl")?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() > deadline {
            bail!("curl {url} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn main() -> Result<()> {
    if !netd_tests::is_root() {
        bail!("the demo creates network namespaces: run it as root (cargo xtask demo does)");
    }
    step("a host of our own: namespaces 'host' (runs netd) and 'outside' (a LAN client)");
    let th = TestHost::new("demo").context("creating namespaces")?;
    println!("host    {}: up0 {}/24, default route via the outside", th.host.name, th.host_ip);
    println!("outside {}: out0 {}/24", th.outside.name, th.outside_ip);

    step("netd up (eBPF dataplane; iptables FORWARD policy DROP to show it is not needed)");
    th.host.exec_ok(&["iptables", "-P", "FORWARD", "DROP"]).ok();
    let d = TestDaemon::start(&th, &["--dataplane", "ebpf"])?;
    show(&d, &["info"])?;

    step("a web server in a sandbox, published on 8080");
    let www = d.root.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "hello from a netd sandbox\n")?;
    let www_s = www.display().to_string();
    show(
        &d,
        &["run", "-d", "--name", "web", "-p", "8080:80", "-w", &www_s, "--", "python3", "-m", "http.server", "80"],
    )?;
    let probe = probe_bin().display().to_string();
    show(&d, &["run", "-d", "--name", "client", "--", "sleep", "600"])?;
    show(&d, &["ps"])?;
    show(&d, &["port", "web"])?;

    step("the page from outside (DNAT in tc ingress, bpf_redirect_peer into the sandbox)");
    let page = curl(&th.outside.path(), "http://198.51.100.1:8080/")?;
    print!("outside$ curl http://198.51.100.1:8080/\n{page}");
    step("from the host's loopback (cgroup connect4 hook, no proxy process)");
    let page = curl(&th.host.path(), "http://127.0.0.1:8080/")?;
    print!("host$ curl http://127.0.0.1:8080/\n{page}");
    step("from another sandbox through the host address (hairpin)");
    let out = show(&d, &["exec", "client", "--", "curl", "-s", "-m", "3", "http://198.51.100.1:8080/"])?;
    if !out.contains("hello from a netd sandbox") {
        bail!("hairpin fetch returned {out:?}");
    }

    step("masquerade: a sandbox talks to an outside server, which sees the host's address");
    let _srv = probe::EchoServer::start(&th.outside.path(), "198.51.100.2:6000".parse()?, "outside-server")?;
    show(&d, &["exec", "client", "--", &probe, "tcp", "198.51.100.2:6000", "hi"])?;
    show(&d, &["exec", "client", "--", "ping", "-c", "1", "-W", "2", "198.51.100.2"])?;

    step("Docker's protection: the outside cannot reach the sandbox address directly");
    netd_tests::ip(&["-n", &th.outside.name, "route", "add", "172.17.0.0/16", "via", "198.51.100.1"])?;
    let direct = Command::new("nsenter")
        .args([&format!("--net={}", th.outside.path()), "--", "curl", "-s", "-m", "2", "http://172.17.0.2:80/"])
        .status()?;
    println!("outside$ curl http://172.17.0.2:80/  -> {}", if direct.success() { "answered (!)" } else { "dropped" });

    step("counters");
    show(&d, &["stats"])?;
    let rules = th.host.exec_ok(&["iptables-save"]).unwrap_or_default();
    println!(
        "iptables rules mentioning netd in the host namespace: {}",
        rules.lines().filter(|l| l.contains("netd") || l.contains("DNAT")).count()
    );

    step("netd down: sandboxes stopped, bridge, veths, programs and namespaces removed");
    drop(d);
    drop(th);
    docker_part()?;
    println!("done");
    Ok(())
}

/// `apt-cache policy docker.io` names a candidate version.
fn apt_has_docker() -> bool {
    Command::new("apt-cache")
        .args(["policy", "docker.io"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim().starts_with("Candidate:") && !l.contains("(none)"))
        })
        .unwrap_or(false)
}

fn docker_show(td: &TestDocker, args: &[&str]) -> Result<String> {
    println!("$ docker {}", args.join(" "));
    let r = td.cli(args);
    print!("{}", r.stdout);
    if !r.stderr.is_empty() {
        eprint!("{}", r.stderr);
    }
    if r.code != 0 {
        bail!("docker {} exited {}", args.join(" "), r.code);
    }
    Ok(r.stdout)
}

/// A real Docker container on a netd network.
fn docker_part() -> Result<()> {
    step("Docker: a container of Debian's dockerd on a netd network");
    if let Some(why) = docker::unavailable() {
        if !apt_has_docker() {
            println!("skipped: apt has no docker.io candidate on this machine ({why})");
            return Ok(());
        }
        bail!("{why}");
    }
    println!("dockerd and its containerd run in new 'host'/'outside' namespaces, in a private mount");
    println!("namespace (their own /run/docker/plugins, data-root, exec-root, socket, config), next to");
    println!("`netd up`, which serves Docker's plugin socket /run/docker/plugins/netd.sock there.");
    let td = TestDocker::start("demodk", &["--dataplane", "ebpf"], &[]).context("starting netd + dockerd")?;
    docker_show(&td, &["version", "--format", "docker {{.Server.Version}}"])?;
    docker_show(&td, &["network", "create", "-d", "netd", "appnet"])?;
    docker_show(&td, &["network", "ls"])?;
    docker_show(
        &td,
        &[
            "run",
            "-d",
            "--init",
            "--name",
            "web",
            "--network",
            "appnet",
            "-p",
            "8080:80",
            docker::IMAGE,
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ],
    )?;
    let page = curl(&td.th.outside.path(), "http://198.51.100.1:8080/")?;
    print!("outside$ curl http://198.51.100.1:8080/\n{page}");
    let page = curl(&td.th.host.path(), "http://127.0.0.1:8080/")?;
    print!("host$ curl http://127.0.0.1:8080/\n{page}");
    println!("(docker port is empty for a remote network driver; netd port shows the binding)");
    docker_show(&td, &["port", "web"])?;
    let ip = td.ip_of("web", "appnet");
    show(&td.netd, &["port", &ip])?;
    show(&td.netd, &["network", "ls"])?;
    docker_show(&td, &["rm", "-f", "web"])?;
    docker_show(&td, &["network", "rm", "appnet"])?;
    step("dockerd, containerd and netd stopped; namespaces removed");
    drop(td);
    Ok(())
}
