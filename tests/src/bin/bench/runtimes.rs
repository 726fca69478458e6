//! The real-runtime rows of the bench (issues 13 and 16): the same image and server containers
//! on a runtime's own network (Docker's bridge driver with iptables and docker-proxy; podman's
//! CNI `bridge` + `portmap` chain) and on netd (`docker network create -d netd`; netd-cni), in
//! one run, measured interleaved so the machine's noise hits both sides alike.
use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use netd_tests::{TestDaemon, TestHost, docker::TestDocker, load::Sample, netns::in_netns, podman::Podman};
use serde_json::Value;

use crate::{Fig, a, bench_bin, measure, median};

/// How big the runtime rows are: `--quick` keeps them short enough for `cargo xtask test`.
#[derive(Clone, Copy)]
pub struct Size {
    pub dur: Duration,
    pub repeats: usize,
    /// Other published ports of the scaling row (issue: 1,000; quick: 10).
    pub ports: usize,
    /// Containers already running when `run -d` with 32 `-p` is timed (issue: 100).
    pub background: usize,
    /// Timed `run -d` with 32 `-p` per side.
    pub runs: usize,
}

impl Size {
    pub fn new(quick: bool, dur: Duration, repeats: usize) -> Self {
        if quick {
            // dockerd's start, the restart for `--userland-proxy=false` and `docker run` with
            // 32 docker-proxy processes take most of it: one timed run, few background containers.
            Self { dur, repeats, ports: 10, background: 4, runs: 1 }
        } else {
            Self { dur, repeats, ports: 1000, background: 100, runs: 5 }
        }
    }
}

/// The bench's own image, in both runtimes: busybox-static + `netd-bench` (its libraries too).
fn bins() -> Vec<(PathBuf, &'static str)> {
    vec![(PathBuf::from(bench_bin()), "bin/netd-bench")]
}

/// Bounded wait until `dst` accepts a TCP connection from namespace `ns`.
fn wait_serving(ns: &str, dst: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = in_netns(ns, move || TcpStream::connect_timeout(&dst, Duration::from_millis(500)).is_ok())?;
        if up {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{dst} did not answer from {ns} within 30s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `-p H:C` for 32 host ports from `base` (container ports 7000..7031).
fn p32(base: u16) -> Vec<String> {
    (0..32u16).flat_map(|i| ["-p".to_string(), format!("{}:{}", base + i, 7000 + i)]).collect()
}

/// A port range `-p B-E:B-E` of `n` ports.
fn range(base: usize, n: usize) -> String {
    format!("{base}-{}:{base}-{}", base + n - 1, base + n - 1)
}

/// Measured values of one row per side (0: the runtime's own network, 1: netd).
#[derive(Default)]
struct Row {
    v: [Vec<f64>; 2],
}

impl Row {
    fn push(&mut self, side: usize, x: f64) {
        if x.is_finite() && x > 0.0 {
            self.v[side].push(x);
        }
    }
    fn med(&self, side: usize) -> Option<f64> {
        (!self.v[side].is_empty()).then(|| median(&self.v[side]))
    }
    fn cell(&self, side: usize, prec: usize) -> String {
        let v = &self.v[side];
        match self.med(side) {
            None => "–".into(),
            Some(m) if v.len() > 1 => {
                let lo = v.iter().cloned().fold(f64::MAX, f64::min);
                let hi = v.iter().cloned().fold(0.0, f64::max);
                format!("{m:.prec$} [{lo:.prec$}–{hi:.prec$}]")
            }
            Some(m) => format!("{m:.prec$}"),
        }
    }
    fn ratio(&self) -> Option<f64> {
        match (self.med(1), self.med(0)) {
            (Some(n), Some(o)) if o > 0.0 => Some(n / o),
            _ => None,
        }
    }
}

/// A goal on a ratio: `(≥ or ≤, value)`.
#[derive(Clone, Copy)]
enum Goal {
    None,
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    fn show(self) -> String {
        match self {
            Goal::None => "–".into(),
            Goal::AtLeast(g) => format!("≥ {g}×"),
            Goal::AtMost(g) => format!("≤ {g}×"),
        }
    }
    fn met(self, r: Option<f64>) -> &'static str {
        match (self, r) {
            (Goal::None, _) => "–",
            (_, None) => "not measured",
            (Goal::AtLeast(g), Some(r)) => {
                if r >= g {
                    "yes"
                } else {
                    "**no**"
                }
            }
            (Goal::AtMost(g), Some(r)) => {
                if r <= g {
                    "yes"
                } else {
                    "**no**"
                }
            }
        }
    }
}

fn table_row(s: &mut String, label: &str, row: &Row, prec: usize, goal: Goal) {
    let r = row.ratio();
    let _ = writeln!(
        s,
        "| {label} | {} | {} | {} | {} | {} |",
        row.cell(0, prec),
        row.cell(1, prec),
        r.map_or("–".into(), |r| format!("{r:.2}×")),
        goal.show(),
        goal.met(r)
    );
}

/// The ratio row of a scaling series: each side's CRR with N other ports against none.
fn flat_row(s: &mut String, label: &str, none: &Row, many: &Row, goal: f64) {
    let r = |side| match (many.med(side), none.med(side)) {
        (Some(m), Some(z)) if z > 0.0 => Some(m / z),
        _ => None,
    };
    let show = |x: Option<f64>| x.map_or("–".into(), |x| format!("{x:.2}×"));
    let _ = writeln!(
        s,
        "| {label} | {} | {} | – | netd ≥ {goal}× | {} |",
        show(r(0)),
        show(r(1)),
        Goal::AtLeast(goal).met(r(1))
    );
}

fn record(row: &mut Row, side: usize, fig: Fig, s: &Sample) {
    row.push(side, if fig == Fig::Stream { s.gbit_s } else { s.ops_per_s });
}

/// `docker ARGS` with an error that carries its output.
fn dk(td: &TestDocker, args: &[&str]) -> Result<String> {
    td.cli(args).ok().with_context(|| format!("docker {}", args.join(" ")))
}

fn dk_own(td: &TestDocker, args: &[String]) -> Result<String> {
    dk(td, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// netd's own timing of Docker's Join + ProgramExternalConnectivity for the last endpoint
/// (`netd stats`: `docker.last_us`), when that endpoint had `ports` ports.
fn join_pec_ms(d: &TestDaemon, ports: u64) -> Option<f64> {
    let r = d.cli(&["stats", "--format", "json"]);
    let v: Value = serde_json::from_str(&r.stdout).ok()?;
    (v["docker"]["last_ports"].as_u64() == Some(ports)).then(|| v["docker"]["last_us"].as_f64().unwrap_or(0.0) / 1000.0)
}

/// netd's publish step of the last sandbox or CNI attachment with `ports` ports.
fn publish_ms(d: &TestDaemon, ports: u64) -> Option<f64> {
    let r = d.cli(&["stats", "--format", "json"]);
    let v: Value = serde_json::from_str(&r.stdout).ok()?;
    (v["publish"]["last_ports"].as_u64() == Some(ports))
        .then(|| v["publish"]["last_us"].as_f64().unwrap_or(0.0) / 1000.0)
}

const DOCKER_IMAGE: &str = "netd-bench/bb:1";
/// (side, network, server's host port; the stream sink is the next port).
const DOCKER_SIDES: [(&str, &str, u16); 2] = [("docker", "dbr", 9080), ("netd", "nbr", 8080)];

fn docker_servers(td: &TestDocker) -> Result<()> {
    for (side, net, port) in DOCKER_SIDES {
        dk_own(
            td,
            &[
                "run",
                "-d",
                "--init",
                "--name",
                &format!("srv-{side}"),
                "--network",
                net,
                "-p",
                &format!("{port}:7000"),
                "-p",
                &format!("{}:7001", port + 1),
                DOCKER_IMAGE,
                "taskset",
                "-c",
                "1",
                "netd-bench",
                "serve",
                "7000",
            ]
            .map(String::from),
        )?;
    }
    for (_, _, port) in DOCKER_SIDES {
        wait_serving(&td.th.outside.path(), a(&format!("198.51.100.1:{port}")))?;
        wait_serving(&td.th.outside.path(), a(&format!("198.51.100.1:{}", port + 1)))?;
    }
    Ok(())
}

fn rm_all(td: &TestDocker) -> Result<()> {
    let ids = dk(td, &["ps", "-aq"])?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut a = vec!["rm", "-f"];
        a.extend(ids);
        dk(td, &a)?;
    }
    Ok(())
}

/// Issue 13's rows: Docker's bridge vs a netd network, same dockerd, image and server.
pub fn docker(size: Size) -> String {
    let head = "## Docker: its own bridge (iptables, docker-proxy) vs a netd network (eBPF)\n\n";
    if let Some(why) = netd_tests::docker::unavailable() {
        return format!("{head}Not measured in this run: {why}\n");
    }
    match docker_rows(size) {
        Ok(s) => format!("{head}{s}"),
        Err(e) => format!("{head}Not measured in this run: {e:#}\n"),
    }
}

fn docker_rows(z: Size) -> Result<String> {
    let t0 = Instant::now();
    println!("  docker: netd + containerd + dockerd in a test namespace");
    let mut td = TestDocker::start("bdk", &["--dataplane", "ebpf"], &[])?;
    td.import(DOCKER_IMAGE, &bins())?;
    let version = dk(&td, &["version", "--format", "{{.Server.Version}}"])?.trim().to_string();
    // Two /26 (50 background containers each in the full run) outside Docker's default pool
    // (203.0.113.128/25): the pool must keep free /28s, or a restarted dockerd fails to set up
    // its default bridge ("no available network").
    dk(&td, &["network", "create", "-d", "bridge", "--subnet", "203.0.113.64/26", "dbr"])?;
    dk(&td, &["network", "create", "-d", "netd", "--subnet", "203.0.113.128/26", "nbr"])?;
    docker_servers(&td)?;
    println!("  docker: dockerd, image, networks and servers ready in {:.1}s", t0.elapsed().as_secs_f64());
    let out = td.th.outside.path();
    let host = td.th.host.path();
    // Phase 1, dockerd's defaults (docker-proxy per binding).
    let plan: [(&str, Fig, &String, &str); 4] = [
        ("TCP stream, published port from outside (Gbit/s)", Fig::Stream, &out, "198.51.100.1"),
        ("TCP RR, published port from outside (ops/s)", Fig::Rr, &out, "198.51.100.1"),
        ("TCP CRR, published port from outside (ops/s)", Fig::Crr, &out, "198.51.100.1"),
        ("TCP CRR, 127.0.0.1 → published port (ops/s)", Fig::Crr, &host, "127.0.0.1"),
    ];
    let mut rows: Vec<Row> = (0..plan.len()).map(|_| Row::default()).collect();
    let mut rr_p50 = Row::default();
    for _ in 0..z.repeats {
        for (i, (label, fig, ns, ip)) in plan.iter().enumerate() {
            for (side, (name, _, port)) in DOCKER_SIDES.iter().enumerate() {
                let s = measure(*fig, ns, a(&format!("{ip}:{port}")), z.dur);
                println!(
                    "  docker {label} / {name}: {:.0} ops/s p50 {:.0} µs {:.2} Gbit/s{}",
                    s.ops_per_s,
                    s.p50_us,
                    s.gbit_s,
                    if s.errors > 0 { format!(" ({} errors)", s.errors) } else { String::new() }
                );
                record(&mut rows[i], side, *fig, &s);
                if *fig == Fig::Rr {
                    rr_p50.push(side, s.p50_us);
                }
            }
        }
    }
    // The floor of the 127.0.0.1 row: the same connections from the host straight to each
    // server's own address, with nothing translated and no proxy.
    let mut floor = Row::default();
    let direct: Vec<String> = DOCKER_SIDES.iter().map(|(side, net, _)| td.ip_of(&format!("srv-{side}"), net)).collect();
    for _ in 0..z.repeats {
        for (side, ip) in direct.iter().enumerate() {
            let s = measure(Fig::Crr, &host, a(&format!("{ip}:7000")), z.dur);
            println!("  docker CRR host -> {ip}:7000 (no NAT) / {}: {:.0} ops/s", DOCKER_SIDES[side].0, s.ops_per_s);
            record(&mut floor, side, Fig::Crr, &s);
        }
    }
    // `docker run -d` with 32 -p among `background` containers (half on each network).
    for i in 0..z.background {
        let net = DOCKER_SIDES[i % 2].1;
        dk(&td, &["run", "-d", "--init", "--network", net, DOCKER_IMAGE, "sleep", "100000"])?;
    }
    let mut run32 = Row::default();
    let mut joinpec = Vec::new();
    let mut pubstep = Vec::new();
    for r in 0..z.runs {
        for (side, (name, net, _)) in DOCKER_SIDES.iter().enumerate() {
            let cname = format!("p32-{name}-{r}");
            let mut args: Vec<String> =
                ["run", "-d", "--init", "--name", &cname, "--network", net].map(String::from).to_vec();
            args.extend(p32(if side == 0 { 30000 } else { 30100 }));
            args.extend([DOCKER_IMAGE, "sleep", "100000"].map(String::from));
            let t = Instant::now();
            dk_own(&td, &args)?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            run32.push(side, ms);
            if side == 1 {
                joinpec.extend(join_pec_ms(&td.netd, 32));
                pubstep.extend(publish_ms(&td.netd, 32));
            }
            println!("  docker run -d with 32 -p / {name}: {ms:.0} ms");
            dk(&td, &["rm", "-f", &cname])?;
        }
    }
    // Phase 2: the ports-scaling rows with `--userland-proxy=false` on Docker's side (1,000
    // bindings would otherwise start 1,000 docker-proxy processes). dockerd restarts without
    // --live-restore, so the containers go first and the servers come back.
    println!("  docker: phase 1 done at {:.1}s", t0.elapsed().as_secs_f64());
    rm_all(&td)?;
    td.restart_dockerd_with(&["--userland-proxy=false"])?;
    docker_servers(&td)?;
    println!("  docker: restarted with --userland-proxy=false at {:.1}s", t0.elapsed().as_secs_f64());
    let (none, many, fillers, filler_err) = scaling(
        z,
        &out,
        |side, n| {
            let base = if side == 0 { 20000 } else { 22000 };
            let (_, net, _) = DOCKER_SIDES[side];
            let spec = range(base, n);
            let args = [
                "run",
                "-d",
                "--init",
                "--name",
                &format!("filler{side}"),
                "--network",
                net,
                "-p",
                &spec,
                DOCKER_IMAGE,
            ];
            let mut args: Vec<String> = args.map(String::from).to_vec();
            args.extend(["sleep", "100000"].map(String::from));
            dk_own(&td, &args).map(|_| ())
        },
        DOCKER_SIDES.map(|s| s.2),
    )?;
    drop(td);
    let took = t0.elapsed().as_secs_f64();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "One dockerd (Debian's docker.io {version}) with its containerd and `netd up --dataplane ebpf`, all in one test host namespace; the same image (busybox-static + `netd-bench`, imported offline) and the same server (`netd-bench serve`, pinned to CPU 1) on `docker network create dbr` (Docker's bridge driver: iptables, docker-proxy, the defaults) and on `docker network create -d netd nbr`. Clients: the outside namespace, or the host namespace for 127.0.0.1, pinned to CPU 0. Both networks share the host, so Docker's bridge traffic also passes netd's uplink program (a lookup miss). The ports-scaling rows run after restarting dockerd with `--userland-proxy=false` (otherwise one docker-proxy process per binding); {} other published ports{}. {} repeat(s) of {:.1} s per figure, medians, min–max in brackets. These rows took {took:.0} s (setup and teardown included).\n",
        z.ports,
        if z.ports < 1000 { " (`--quick`; the full run uses 1,000)" } else { "" },
        z.repeats,
        z.dur.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| figure | Docker's bridge | netd network | netd / Docker | target | met |\n|---|---|---|---|---|---|"
    );
    for (i, (label, fig, ..)) in plan.iter().enumerate() {
        let goal = match i {
            2 => Goal::AtLeast(1.1),
            3 => Goal::AtLeast(3.0),
            _ => Goal::None,
        };
        table_row(&mut s, label, &rows[i], if *fig == Fig::Stream { 2 } else { 0 }, goal);
        if *fig == Fig::Rr {
            table_row(&mut s, "TCP RR p50, published port from outside (µs; lower is better)", &rr_p50, 0, Goal::None);
        }
    }
    table_row(
        &mut s,
        "TCP CRR, host → the server's own address (no NAT, no proxy: the floor of the row above)",
        &floor,
        0,
        Goal::None,
    );
    table_row(
        &mut s,
        "TCP CRR from outside, no other published ports (ops/s; Docker `--userland-proxy=false`)",
        &none,
        0,
        Goal::None,
    );
    table_row(
        &mut s,
        &format!("TCP CRR from outside, {} other published ports (ops/s; Docker `--userland-proxy=false`)", z.ports),
        &many,
        0,
        Goal::None,
    );
    flat_row(&mut s, &format!("CRR with {} other ports / with none", z.ports), &none, &many, 0.95);
    table_row(
        &mut s,
        &format!(
            "`docker run -d` with 32 `-p` among {} containers (ms per run, CLI round trip; lower is better)",
            z.background
        ),
        &run32,
        0,
        Goal::AtMost(1.0),
    );
    let jp = (!joinpec.is_empty()).then(|| median(&joinpec));
    let jmax = joinpec.iter().cloned().fold(0.0, f64::max);
    let _ = writeln!(
        s,
        "| Join + ProgramExternalConnectivity with 32 ports inside netd (ms; `netd stats` `docker.last_us`, the state-lock wait not included: `docker.last_wait_us`) | – | {} | – | ≤ 5 ms | {} |",
        jp.map_or("not measured".into(), |m| format!(
            "{m:.3} (max {jmax:.3}, {} run(s); its publish step {})",
            joinpec.len(),
            if pubstep.is_empty() { "–".to_string() } else { format!("{:.3}", median(&pubstep)) }
        )),
        match jp {
            Some(m) if m <= 5.0 => "yes",
            Some(_) => "**no**",
            None => "not measured",
        }
    );
    // What the 127.0.0.1 target asks for, against what no translation at all gives.
    if let (Some(dl), Some(nl), Some(fl)) =
        (rows[3].med(0), rows[3].med(1), floor.med(0).into_iter().chain(floor.med(1)).reduce(f64::max))
    {
        let _ = writeln!(
            s,
            "\n127.0.0.1 → published port: netd's {nl:.0} ops/s is {:.2}× the floor (a connection from the host straight to the container's address, {fl:.0} ops/s, the better side's); 3× Docker's {dl:.0} would be {:.0} ops/s, {:.2}× that floor, so the ≥ 3× target is above what any datapath can reach here: the floor itself is {:.2}× Docker's figure.",
            nl / fl,
            3.0 * dl,
            3.0 * dl / fl,
            fl / dl
        );
    }
    let _ = writeln!(
        s,
        "\nStarting the container with {} published ports (the scaling row's filler, `docker run -d`): Docker's bridge {}, netd {} (ms).\n",
        z.ports,
        fillers.cell(0, 0),
        fillers.cell(1, 0)
    );
    if let Some(e) = &filler_err {
        let _ = writeln!(s, "The rows with {} other ports were not measured: {e}\n", z.ports);
    }
    let _ = writeln!(
        s,
        "Ratios are netd / Docker; for CRR and throughput higher is better, for p50 and `docker run` lower is. The Join + ProgramExternalConnectivity figure is netd's own handler time (both calls, lock waits included, Docker's work between them not), exposed by `netd stats --format json` (`docker`) and the metrics endpoint (`netd_docker_publish_*`)."
    );
    Ok(s)
}

/// CRR from outside at N=0 and N=`size.ports` other published ports on both sides, interleaved;
/// `add(side, n)` starts the filler with n ports. Returns (none, many, filler start times, why
/// the rows with other ports are missing when a filler could not start).
fn scaling(
    z: Size,
    out: &str,
    mut add: impl FnMut(usize, usize) -> Result<()>,
    ports: [u16; 2],
) -> Result<(Row, Row, Row, Option<String>)> {
    let (mut none, mut many, mut fillers) = (Row::default(), Row::default(), Row::default());
    for n in [0, z.ports] {
        if n > 0 {
            for side in 0..2 {
                let t = Instant::now();
                if let Err(e) = add(side, n) {
                    return Ok((none, many, fillers, Some(format!("{e:#}"))));
                }
                fillers.push(side, t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        for _ in 0..z.repeats {
            for (side, port) in ports.iter().enumerate() {
                let s = measure(Fig::Crr, out, a(&format!("198.51.100.1:{port}")), z.dur);
                println!("  CRR with {n} other ports / side {side}: {:.0} ops/s", s.ops_per_s);
                (if n == 0 { &mut none } else { &mut many }).push(side, s.ops_per_s);
            }
        }
    }
    Ok((none, many, fillers, None))
}

const PODMAN_IMAGE: &str = "localhost/netd-bench:1";
/// (side, network, server's host port).
const PODMAN_SIDES: [(&str, &str, u16); 2] = [("cni", "cnibr", 9080), ("netd", "netdnet", 8080)];

/// Issue 16's rows: podman's own CNI chain vs netd-cni.
pub fn podman(size: Size) -> String {
    let head = "## Podman (CNI): its own `bridge` + `portmap` chain (iptables) vs netd-cni (eBPF)\n\n";
    if !netd_tests::podman::available() {
        return format!(
            "{head}Not measured in this run: podman, crun or busybox-static is not installed (`cargo xtask setup`).\n"
        );
    }
    match podman_rows(size) {
        Ok(s) => format!("{head}{s}"),
        Err(e) => format!("{head}Not measured in this run: {e:#}\n"),
    }
}

fn pm_own(pm: &Podman, args: &[String]) -> Result<String> {
    pm.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn podman_rows(z: Size) -> Result<String> {
    let t0 = Instant::now();
    println!("  podman: netd + podman (CNI backend) in a test namespace");
    let th = TestHost::new("bpm")?;
    let d = TestDaemon::start(&th, &["--dataplane", "ebpf"])?;
    let pm = Podman::start(&th, &d, "netdnet", "netdnet", "203.0.113.0/25")?;
    // podman writes its own CNI conflist (bridge, portmap, firewall, tuning) for this network.
    pm.ok(&["network", "create", "--subnet", "203.0.113.128/25", "cnibr"])?;
    pm.import(PODMAN_IMAGE, &bins())?;
    let version = pm.ok(&["version", "--format", "{{.Client.Version}}"])?.trim().to_string();
    for (side, net, port) in PODMAN_SIDES {
        pm_own(
            &pm,
            &[
                "run",
                "-d",
                "--name",
                &format!("srv-{side}"),
                "--network",
                net,
                "-p",
                &format!("{port}:7000"),
                PODMAN_IMAGE,
                "taskset",
                "-c",
                "1",
                "netd-bench",
                "serve",
                "7000",
            ]
            .map(String::from),
        )?;
    }
    let out = th.outside.path();
    let host = th.host.path();
    for (_, _, port) in PODMAN_SIDES {
        wait_serving(&out, a(&format!("198.51.100.1:{port}")))?;
    }
    let plan: [(&str, &String, &str); 2] = [
        ("TCP CRR, published port from outside (ops/s)", &out, "198.51.100.1"),
        ("TCP CRR, 127.0.0.1 → published port (ops/s)", &host, "127.0.0.1"),
    ];
    let mut rows: Vec<Row> = (0..plan.len()).map(|_| Row::default()).collect();
    for _ in 0..z.repeats {
        for (i, (label, ns, ip)) in plan.iter().enumerate() {
            for (side, (name, _, port)) in PODMAN_SIDES.iter().enumerate() {
                let s = measure(Fig::Crr, ns, a(&format!("{ip}:{port}")), z.dur);
                println!("  podman {label} / {name}: {:.0} ops/s p50 {:.0} µs", s.ops_per_s, s.p50_us);
                record(&mut rows[i], side, Fig::Crr, &s);
            }
        }
    }
    let mut run32 = Row::default();
    let mut publish = Vec::new();
    for r in 0..z.runs {
        for (side, (name, net, _)) in PODMAN_SIDES.iter().enumerate() {
            let cname = format!("p32-{name}-{r}");
            let mut args: Vec<String> = ["run", "-d", "--name", &cname, "--network", net].map(String::from).to_vec();
            args.extend(p32(if side == 0 { 30000 } else { 30100 }));
            args.extend([PODMAN_IMAGE, "sleep", "100000"].map(String::from));
            let t = Instant::now();
            pm_own(&pm, &args)?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            run32.push(side, ms);
            if side == 1 {
                publish.extend(publish_ms(&d, 32));
            }
            println!("  podman run -d with 32 -p / {name}: {ms:.0} ms");
            pm.ok(&["rm", "-f", "-t", "0", &cname])?;
        }
    }
    let (none, many, fillers, filler_err) = scaling(
        z,
        &out,
        |side, n| {
            let base = if side == 0 { 20000 } else { 22000 };
            let (_, net, _) = PODMAN_SIDES[side];
            let spec = range(base, n);
            let name = format!("filler{side}");
            pm.ok_within(
                1800,
                &["run", "-d", "--name", &name, "--network", net, "-p", &spec, PODMAN_IMAGE, "sleep", "100000"],
            )
            .map(|_| ())
        },
        PODMAN_SIDES.map(|s| s.2),
    )?;
    drop(pm);
    drop(d);
    drop(th);
    let took = t0.elapsed().as_secs_f64();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Debian's podman {version} (CNI backend, private roots and config) and `netd up --dataplane ebpf` in one test host namespace; the same image (busybox-static + `netd-bench`, `podman import`) and server (`netd-bench serve`, pinned to CPU 1) on `podman network create cnibr` (podman's own conflist: `bridge`, `portmap`, `firewall`, `tuning`; iptables) and on a netd-cni conflist (`netdnet`). {} other published ports in the scaling rows{}. {} repeat(s) of {:.1} s per figure, medians, min–max in brackets. These rows took {took:.0} s (setup and teardown included).\n",
        z.ports,
        if z.ports < 1000 { " (`--quick`; the full run uses 1,000)" } else { "" },
        z.repeats,
        z.dur.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| figure | podman's CNI bridge + portmap | netd-cni | netd / podman | target | met |\n|---|---|---|---|---|---|"
    );
    table_row(&mut s, plan[0].0, &rows[0], 0, Goal::AtLeast(1.1));
    table_row(&mut s, plan[1].0, &rows[1], 0, Goal::None);
    table_row(&mut s, "TCP CRR from outside, no other published ports (ops/s)", &none, 0, Goal::None);
    table_row(
        &mut s,
        &format!("TCP CRR from outside, {} other published ports (ops/s)", z.ports),
        &many,
        0,
        Goal::None,
    );
    flat_row(&mut s, &format!("CRR with {} other ports / with none", z.ports), &none, &many, 0.95);
    table_row(
        &mut s,
        "`podman run -d` with 32 `-p` (ms per run, CLI round trip; lower is better)",
        &run32,
        0,
        Goal::None,
    );
    let pb = (!publish.is_empty()).then(|| median(&publish));
    let _ = writeln!(
        s,
        "| netd's publish step of that ADD, 32 ports (ms; `netd stats` `publish.last_us`) | – | {} | – | – | – |",
        pb.map_or("not measured".into(), |m| format!("{m:.3}"))
    );
    let _ = writeln!(
        s,
        "\nStarting the container with {} published ports (the scaling row's filler, `podman run -d`): podman's CNI chain {}, netd-cni {} (ms). Rootful podman's conmon holds every host port as a socket on both sides.",
        z.ports,
        fillers.cell(0, 0),
        fillers.cell(1, 0)
    );
    if let Some(e) = &filler_err {
        let _ = writeln!(s, "\nThe rows with {} other ports were not measured: {e}", z.ports);
    }
    Ok(s)
}
