//! Control-plane rows (issue 18), both dataplanes side by side: `netd run -d` with one `-p`
//! and `netd rm -f` latency (p50/p99 over sequential runs), N sandboxes created by parallel
//! clients (creates/s), `rm -f` of a sandbox with 100 published ports, and `netd down` of N
//! running sandboxes. Every figure includes the CLI's round trip (a `netd` process per call).
use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Instant,
};

use anyhow::{Result, bail};
use netd_tests::{TestDaemon, TestHost};
use serde_json::Value;

#[derive(Clone, Copy)]
pub struct Size {
    /// Sequential run/rm pairs for the latency percentiles.
    runs: usize,
    /// Sandboxes created in parallel, then torn down by `netd down`.
    many: usize,
    /// Parallel clients.
    workers: usize,
}

impl Size {
    pub fn new(quick: bool) -> Self {
        if quick { Self { runs: 20, many: 100, workers: 8 } } else { Self { runs: 100, many: 1000, workers: 8 } }
    }

    /// `--sandboxes N`: how many sandboxes `netd down` tears down (e.g. the 1,000 of the
    /// target with `--quick`'s short latency series).
    pub fn sandboxes(self, many: Option<usize>) -> Self {
        Self { many: many.unwrap_or(self.many), ..self }
    }

    /// `--runs N`: how many sequential run/rm pairs the percentiles are taken over.
    pub fn runs(self, runs: Option<usize>) -> Self {
        Self { runs: runs.unwrap_or(self.runs), ..self }
    }
}

struct Row {
    dataplane: &'static str,
    run: Vec<f64>,
    rm: Vec<f64>,
    creates_per_s: f64,
    rm100_ms: f64,
    down_s: f64,
    /// The state lock during the parallel creates (`netd stats` `lock`): longest wait and
    /// longest hold, ms (absent from a netd without it).
    lock_wait_max_ms: Option<f64>,
    lock_held_max_ms: Option<f64>,
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() { f64::NAN } else { v[((v.len() - 1) as f64 * p).round() as usize] }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// `netd ARGS` for every item from `workers` threads at once.
fn parallel(d: &TestDaemon, items: Vec<Vec<String>>, workers: usize) -> Result<()> {
    let items = Arc::new(Mutex::new(items));
    let failures = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (items, failures) = (items.clone(), failures.clone());
            s.spawn(move || {
                loop {
                    let Some(args) = items.lock().unwrap().pop() else { break };
                    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                    let r = d.cli(&argv);
                    if r.code != 0 {
                        failures.lock().unwrap().push(format!("{args:?}: {}{}", r.stdout, r.stderr));
                    }
                }
            });
        }
    });
    let f = failures.lock().unwrap();
    if let Some(first) = f.first() {
        bail!("{} of the parallel calls failed, first: {first}", f.len());
    }
    Ok(())
}

fn measure(dataplane: &'static str, size: Size) -> Result<Row> {
    let th = TestHost::new(&format!("bc{}", &dataplane[..1]))?;
    let mut d = TestDaemon::start(&th, &["--dataplane", dataplane])?;
    let mut run = Vec::new();
    let mut rm = Vec::new();
    for i in 0..size.runs {
        let name = format!("l{i}");
        let port = format!("{}:7000", 40000 + i);
        let t = Instant::now();
        d.ok(&["run", "-d", "--name", &name, "-p", &port, "--", "sleep", "100000"]);
        run.push(ms(t));
        let t = Instant::now();
        d.ok(&["rm", "-f", &name]);
        rm.push(ms(t));
    }
    d.ok(&["run", "-d", "--name", "p100", "-p", "41000-41099:7000-7099", "--", "sleep", "100000"]);
    let t = Instant::now();
    d.ok(&["rm", "-f", "p100"]);
    let rm100_ms = ms(t);
    let items: Vec<Vec<String>> = (0..size.many)
        .map(|i| {
            let mut a: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), format!("m{i}")];
            if i % 10 == 0 {
                a.extend(["-p".into(), format!("{}:7000", 42000 + i)]);
            }
            a.extend(["--".into(), "sleep".into(), "100000".into()]);
            a
        })
        .collect();
    let t = Instant::now();
    parallel(&d, items, size.workers)?;
    let creates_per_s = size.many as f64 / t.elapsed().as_secs_f64();
    let stats: Value = serde_json::from_str(&d.ok(&["stats", "--format", "json"])).unwrap_or_default();
    let lock_ms = |k: &str| stats["lock"][k].as_f64().map(|us| us / 1000.0);
    let t = Instant::now();
    d.down()?;
    let down_s = t.elapsed().as_secs_f64();
    Ok(Row {
        dataplane,
        run,
        rm,
        creates_per_s,
        rm100_ms,
        down_s,
        lock_wait_max_ms: lock_ms("wait_max_us"),
        lock_held_max_ms: lock_ms("held_max_us"),
    })
}

/// The control-plane section of the report (markdown).
pub fn control(quick: bool, sandboxes: Option<usize>, runs: Option<usize>, dataplane: Option<&str>) -> String {
    let size = Size::new(quick).sandboxes(sandboxes).runs(runs);
    let load0 = super::loadavg();
    let mut rows = Vec::new();
    let mut s = String::new();
    for dp in ["ebpf", "iptables"] {
        if dataplane.is_some_and(|d| d != dp) {
            continue;
        }
        println!("  control plane: {dp}");
        match measure(dp, size) {
            Ok(r) => {
                println!(
                    "  control plane {dp}: run p50 {:.1} ms p99 {:.1} ms, rm p50 {:.1} ms p99 {:.1} ms, {:.0} creates/s, rm with 100 ports {:.1} ms, down of {} in {:.2} s",
                    pct(&r.run, 0.5),
                    pct(&r.run, 0.99),
                    pct(&r.rm, 0.5),
                    pct(&r.rm, 0.99),
                    r.creates_per_s,
                    r.rm100_ms,
                    size.many,
                    r.down_s
                );
                rows.push(r);
            }
            Err(e) => {
                let _ = writeln!(s, "- {dp}: not measured: {e:#}");
            }
        }
    }
    let load1 = super::loadavg();
    let mut out = String::new();
    let _ = writeln!(out, "## Control plane (issue 18)\n");
    let _ = writeln!(
        out,
        "{} sequential `netd run -d -p HPORT:7000 -- sleep` / `netd rm -f` pairs; {} sandboxes (one in ten with a `-p`) created by {} parallel clients, then `netd down` with all of them running. Times include the CLI's round trip. 1-min load average {load0:.2} before, {load1:.2} after (2 CPUs; other work shares the machine when it is above 1).\n",
        size.runs, size.many, size.workers
    );
    let _ = writeln!(
        out,
        "| dataplane | `run -d` with one `-p` p50 / p99 (ms) | `rm -f` p50 / p99 (ms) | parallel creates/s | `rm -f` with 100 ports (ms) | `netd down` of {} (s) | state lock: longest wait / hold (ms) |\n|---|---|---|---|---|---|---|",
        size.many
    );
    for r in &rows {
        let lock = match (r.lock_wait_max_ms, r.lock_held_max_ms) {
            (Some(w), Some(h)) => format!("{w:.1} / {h:.1}"),
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} | {:.1} | {:.2} | {lock} |",
            r.dataplane,
            pct(&r.run, 0.5),
            pct(&r.run, 0.99),
            pct(&r.rm, 0.5),
            pct(&r.rm, 0.99),
            r.creates_per_s,
            r.rm100_ms,
            r.down_s
        );
    }
    out.push_str(&s);
    if let Some(r) = rows.iter().find(|r| r.dataplane == "ebpf") {
        let yes = |b: bool| if b { "yes" } else { "**no**" };
        let p50 = pct(&r.run, 0.5);
        let down = if size.many == 1000 { r.down_s } else { f64::NAN };
        let _ = writeln!(out, "\n| target (eBPF) | measured | goal | met |\n|---|---|---|---|");
        let _ = writeln!(out, "| `netd run -d` with one `-p`, p50 | {p50:.1} ms | ≤ 20 ms | {} |", yes(p50 <= 20.0));
        let _ = writeln!(
            out,
            "| `rm -f` of a sandbox with 100 ports | {:.1} ms | ≤ 50 ms | {} |",
            r.rm100_ms,
            yes(r.rm100_ms <= 50.0)
        );
        if down.is_nan() {
            let _ = writeln!(
                out,
                "| `netd down` of 1,000 sandboxes | {:.2} s for {} (--quick) | ≤ 5 s | not measured at 1,000 |",
                r.down_s, size.many
            );
        } else {
            let _ = writeln!(out, "| `netd down` of 1,000 sandboxes | {down:.2} s | ≤ 5 s | {} |", yes(down <= 5.0));
        }
    }
    out
}
