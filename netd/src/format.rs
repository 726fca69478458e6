//! Docker CLI's human formats: `ps` columns (CREATED, STATUS, COMMAND, PORTS), the table
//! layout (tabwriter, 3 spaces of padding), and `stats` output.
use serde_json::Value;

/// go-units `HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    if s < 1 {
        return "Less than a second".into();
    }
    if s == 1 {
        return "1 second".into();
    }
    if s < 60 {
        return format!("{s} seconds");
    }
    let m = s / 60;
    if m == 1 {
        return "About a minute".into();
    }
    if m < 60 {
        return format!("{m} minutes");
    }
    let h = (s as f64 / 3600.0 + 0.5) as i64;
    if h == 1 {
        return "About an hour".into();
    }
    if h < 48 {
        return format!("{h} hours");
    }
    if h < 24 * 7 * 2 {
        return format!("{} days", h / 24);
    }
    if h < 24 * 30 * 2 {
        return format!("{} weeks", h / 24 / 7);
    }
    if h < 24 * 365 * 2 {
        return format!("{} months", h / 24 / 30);
    }
    format!("{} years", s / 3600 / 24 / 365)
}

pub fn created_column(age_secs: i64) -> String {
    format!("{} ago", human_duration(age_secs))
}

/// `Up 5 seconds`, `Exited (0) 3 minutes ago`, `Created`.
pub fn status_column(state: &str, exit_code: i64, since_started: Option<i64>, since_finished: Option<i64>) -> String {
    match state {
        "running" => format!("Up {}", human_duration(since_started.unwrap_or(0))),
        "exited" => format!("Exited ({exit_code}) {} ago", human_duration(since_finished.unwrap_or(0))),
        "created" => "Created".into(),
        other => other.to_string(),
    }
}

/// Seconds between an RFC 3339 UTC timestamp (as netd writes them) and `now`; `None` for
/// Docker's zero time (never started or finished).
pub fn secs_since_rfc3339(ts: &str, now: i64) -> Option<i64> {
    if ts.starts_with("0001-") {
        return None;
    }
    ts.parse::<jiff::Timestamp>().ok().map(|t| now - t.as_second())
}

/// `"python3 -m http.se…"`: quoted, 20 characters with an ellipsis unless `--no-trunc`.
pub fn command_column(cmd: &str, no_trunc: bool) -> String {
    let chars: Vec<char> = cmd.chars().collect();
    if no_trunc || chars.len() <= 20 {
        return format!("\"{cmd}\"");
    }
    format!("\"{}…\"", chars[..19].iter().collect::<String>())
}

/// The PORTS column from a list entry's `Ports` array.
pub fn ports_column(ports: &[Value]) -> String {
    let list: Vec<crate::ports::PortSummary> = ports
        .iter()
        .map(|p| crate::ports::PortSummary {
            ip: p["IP"].as_str().and_then(|s| s.parse().ok()),
            private_port: p["PrivatePort"].as_u64().unwrap_or(0) as u16,
            public_port: p["PublicPort"].as_u64().unwrap_or(0) as u16,
            proto: p["Type"].as_str().unwrap_or("tcp").to_string(),
        })
        .collect();
    crate::ports::displayable_ports(&list)
}

/// A table like Docker's `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`: each column as wide as
/// its widest cell + 3 spaces of padding, and at least 10.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat((w[i] + 3).max(10) - c.chars().count()));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `netd stats` as a table: one row per published port, one per drop reason.
pub fn stats_table(v: &Value) -> String {
    let mut rows = Vec::new();
    for p in v["ports"].as_array().into_iter().flatten() {
        rows.push(vec![
            format!("{}:{}", p["host_ip"].as_str().unwrap_or(""), p["host_port"]),
            p["proto"].as_str().unwrap_or("").to_string(),
            p["packets"].to_string(),
            p["bytes"].to_string(),
        ]);
    }
    for d in v["drops"].as_array().into_iter().flatten() {
        rows.push(vec![format!("drop:{}", d[0].as_str().unwrap_or("")), "-".into(), d[1].to_string(), "-".into()]);
    }
    table(&["PUBLISHED", "PROTO", "PACKETS", "BYTES"], &rows)
}

/// Prometheus text exposition of the dataplane counters.
pub fn prometheus(v: &Value) -> String {
    let mut s = String::new();
    s.push_str(
        "# HELP netd_port_packets_total Packets through a published port.\n# TYPE netd_port_packets_total counter\n",
    );
    for p in v["ports"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "netd_port_packets_total{{proto=\"{}\",host_ip=\"{}\",host_port=\"{}\"}} {}\n",
            p["proto"].as_str().unwrap_or(""),
            p["host_ip"].as_str().unwrap_or(""),
            p["host_port"],
            p["packets"]
        ));
    }
    s.push_str("# HELP netd_port_bytes_total Bytes through a published port.\n# TYPE netd_port_bytes_total counter\n");
    for p in v["ports"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "netd_port_bytes_total{{proto=\"{}\",host_ip=\"{}\",host_port=\"{}\"}} {}\n",
            p["proto"].as_str().unwrap_or(""),
            p["host_ip"].as_str().unwrap_or(""),
            p["host_port"],
            p["bytes"]
        ));
    }
    s.push_str("# HELP netd_drops_total Packets dropped by reason.\n# TYPE netd_drops_total counter\n");
    for d in v["drops"].as_array().into_iter().flatten() {
        s.push_str(&format!("netd_drops_total{{reason=\"{}\"}} {}\n", d[0].as_str().unwrap_or(""), d[1]));
    }
    // The sandbox publish step, and Docker's Join + ProgramExternalConnectivity (the plugin's
    // publish): the same summary and gauge each.
    for (key, metric, help) in [
        ("publish", "netd_publish", "Time to publish a sandbox's ports (allocation, reservation, dataplane)."),
        (
            "docker",
            "netd_docker_publish",
            "Time netd spent in Docker's Join + ProgramExternalConnectivity of one endpoint (its ports published).",
        ),
    ] {
        let p = &v[key];
        if !p.is_object() {
            continue;
        }
        s.push_str(&format!("# HELP {metric}_seconds {help}\n# TYPE {metric}_seconds summary\n"));
        s.push_str(&format!("{metric}_seconds_sum {}\n", p["total_us"].as_u64().unwrap_or(0) as f64 / 1e6));
        s.push_str(&format!("{metric}_seconds_count {}\n", p["count"].as_u64().unwrap_or(0)));
        s.push_str(&format!(
            "# HELP {metric}_last_seconds Time the last one took.\n# TYPE {metric}_last_seconds gauge\n"
        ));
        s.push_str(&format!("{metric}_last_seconds {}\n", p["last_us"].as_u64().unwrap_or(0) as f64 / 1e6));
        s.push_str(&format!("# HELP {metric}_last_ports Ports of the last one.\n# TYPE {metric}_last_ports gauge\n"));
        s.push_str(&format!("{metric}_last_ports {}\n", p["last_ports"].as_u64().unwrap_or(0)));
    }
    // The daemon's state lock: how long requests waited for it and how long it was held.
    let l = &v["lock"];
    if l.is_object() {
        let secs = |k: &str| l[k].as_u64().unwrap_or(0) as f64 / 1e6;
        s.push_str("# HELP netd_state_lock_acquisitions_total Times the daemon's state lock was taken.\n# TYPE netd_state_lock_acquisitions_total counter\n");
        s.push_str(&format!("netd_state_lock_acquisitions_total {}\n", l["count"].as_u64().unwrap_or(0)));
        for (what, help) in [("wait", "waited for"), ("held", "held")] {
            s.push_str(&format!(
                "# HELP netd_state_lock_{what}_seconds_total Time the daemon's state lock was {help}, in all.\n# TYPE netd_state_lock_{what}_seconds_total counter\n"
            ));
            s.push_str(&format!("netd_state_lock_{what}_seconds_total {}\n", secs(&format!("{what}_total_us"))));
            s.push_str(&format!(
                "# HELP netd_state_lock_{what}_max_seconds The longest the daemon's state lock was {help}.\n# TYPE netd_state_lock_{what}_max_seconds gauge\n"
            ));
            s.push_str(&format!("netd_state_lock_{what}_max_seconds {}\n", secs(&format!("{what}_max_us"))));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_like_go_units() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(45), "45 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(150), "2 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(status_column("exited", 3, None, Some(120)), "Exited (3) 2 minutes ago");
        assert_eq!(status_column("running", 0, Some(5), None), "Up 5 seconds");
        assert_eq!(status_column("created", 0, None, None), "Created");
        assert_eq!(created_column(7200), "2 hours ago");
    }

    #[test]
    fn rfc3339_age() {
        let t = crate::model::rfc3339(1_795_000_000, 0);
        assert_eq!(secs_since_rfc3339(&t, 1_795_000_010), Some(10));
        assert_eq!(secs_since_rfc3339(crate::model::ZERO_TIME, 5), None);
    }

    #[test]
    fn command_and_table() {
        assert_eq!(command_column("sleep 300", false), "\"sleep 300\"");
        assert_eq!(command_column("python3 -m http.server 80", false), "\"python3 -m http.ser…\"");
        let t = table(&["CONTAINER ID", "NAMES"], &[vec!["abc".into(), "web".into()]]);
        assert_eq!(t, "CONTAINER ID   NAMES\nabc            web\n");
        let t = table(
            &["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
            &[vec!["15bb459ca1f8".into(), "bridge".into(), "bridge".into(), "local".into()]],
        );
        assert_eq!(t, "NETWORK ID     NAME      DRIVER    SCOPE\n15bb459ca1f8   bridge    bridge    local\n");
    }

    #[test]
    fn prometheus_names() {
        let v = serde_json::json!({"ports": [{"proto": "tcp", "host_ip": "0.0.0.0", "host_port": 8080, "packets": 3, "bytes": 180}], "drops": [["icc", 2]]});
        let p = prometheus(&v);
        assert!(p.contains("netd_port_packets_total{proto=\"tcp\",host_ip=\"0.0.0.0\",host_port=\"8080\"} 3\n"));
        assert!(p.contains("netd_drops_total{reason=\"icc\"} 2\n"));
        assert!(!p.contains("netd_docker_publish"), "no timing object, no timing metric: {p}");
    }

    #[test]
    fn prometheus_publish_and_docker_timing() {
        let t = |count, last, ports| json_timing(count, last, ports);
        let v = serde_json::json!({"publish": t(2, 1500, 1), "docker": t(1, 2500, 32)});
        let p = prometheus(&v);
        for want in [
            "netd_publish_seconds_count 2\n",
            "netd_publish_last_seconds 0.0015\n",
            "netd_docker_publish_seconds_sum 0.0025\n",
            "netd_docker_publish_seconds_count 1\n",
            "netd_docker_publish_last_seconds 0.0025\n",
            "netd_docker_publish_last_ports 32\n",
            "# TYPE netd_docker_publish_seconds summary\n",
        ] {
            assert!(p.contains(want), "{want} in {p}");
        }
    }

    fn json_timing(count: u64, last_us: u64, ports: u64) -> Value {
        serde_json::json!({"count": count, "last_ports": ports, "last_us": last_us, "max_us": last_us, "total_us": last_us * count})
    }
}
