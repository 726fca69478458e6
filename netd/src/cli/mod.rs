//! The CLI: a thin client of the daemon's API, printing what Docker's CLI prints.
pub mod args;
pub mod man;

use std::{
    io::Write,
    os::fd::AsFd,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
};

use serde_json::Value;

use crate::api::{
    Client, ClientError, CreateRequest, CreateResponse, NetworkConnectRequest, NetworkCreateRequest, WaitResponse,
};
use args::{Cmd, NetworkCmd, RunArgs, StatsFormat};

/// A CLI failure: what to print and the exit code.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Api { message, .. } => Failure::new(1, format!("Error response from daemon: {message}")),
            other => Failure::new(1, other.to_string()),
        }
    }
}

type R = Result<(), Failure>;

pub fn pretty_json(v: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(v, &mut ser).expect("serializable");
    String::from_utf8(out).expect("utf-8")
}

/// Run a client command.
pub async fn run_client(socket: PathBuf, cmd: Cmd) -> R {
    let c = Client::new(&socket);
    match cmd {
        Cmd::Down { force } => down(&c, force).await,
        Cmd::Run(a) => run(&c, *a, true).await,
        Cmd::Create(a) => run(&c, *a, false).await,
        Cmd::Start { containers } => {
            each(&c, &containers, |c, n| async move {
                c.call("POST", &format!("/containers/{}/start", enc(&n)), None).await.map(|_| ())
            })
            .await
        }
        Cmd::Stop { time, containers } => {
            let q = time.map(|t| format!("?t={t}")).unwrap_or_default();
            each(&c, &containers, |c, n| {
                let q = q.clone();
                async move { c.call("POST", &format!("/containers/{}/stop{q}", enc(&n)), None).await.map(|_| ()) }
            })
            .await
        }
        Cmd::Restart { time, containers } => {
            let q = time.map(|t| format!("?t={t}")).unwrap_or_default();
            each(&c, &containers, |c, n| {
                let q = q.clone();
                async move { c.call("POST", &format!("/containers/{}/restart{q}", enc(&n)), None).await.map(|_| ()) }
            })
            .await
        }
        Cmd::Kill { signal, containers } => {
            each(&c, &containers, |c, n| {
                let s = signal.clone();
                async move {
                    c.call("POST", &format!("/containers/{}/kill?signal={}", enc(&n), enc(&s)), None).await.map(|_| ())
                }
            })
            .await
        }
        Cmd::Rm { force, containers } => {
            let q = if force { "?force=1" } else { "" };
            each(&c, &containers, |c, n| async move {
                c.call("DELETE", &format!("/containers/{}{q}", enc(&n)), None).await.map(|_| ())
            })
            .await
        }
        Cmd::Wait { containers } => {
            let mut failed = None;
            for n in containers {
                match c.json::<WaitResponse>("POST", &format!("/containers/{}/wait", enc(&n)), None::<&()>).await {
                    Ok(w) => println!("{}", w.status_code),
                    Err(e) => {
                        let f: Failure = e.into();
                        eprintln!("{}", f.message);
                        failed = Some(f);
                    }
                }
            }
            failed.map_or(Ok(()), |f| Err(Failure::new(f.code, String::new())))
        }
        Cmd::Ps { all, quiet, no_trunc } => ps(&c, all, quiet, no_trunc).await,
        Cmd::Logs { follow, container } => {
            let q = if follow { "?follow=1" } else { "" };
            let mut out = std::io::stdout();
            c.stream("GET", &format!("/containers/{}/logs{q}", enc(&container)), |b| {
                let _ = out.write_all(b);
                let _ = out.flush();
            })
            .await
            .map_err(Failure::from)
        }
        Cmd::Inspect { containers } => {
            let mut all = Vec::new();
            let mut failed = None;
            for n in &containers {
                match c.json::<Value>("GET", &format!("/containers/{}/json", enc(n)), None::<&()>).await {
                    Ok(Value::Array(v)) => all.extend(v),
                    Ok(_) => {}
                    Err(e) => {
                        let f: Failure = e.into();
                        failed = Some(f);
                    }
                }
            }
            println!("{}", pretty_json(&Value::Array(all)));
            match failed {
                Some(f) => Err(f),
                None => Ok(()),
            }
        }
        Cmd::Exec { env, workdir, container, cmd } => exec(&c, &container, &cmd, &env, workdir.as_deref()).await,
        Cmd::Port { container, port } => port_cmd(&c, &container, port.as_deref()).await,
        Cmd::Stats { format } => stats(&c, format).await,
        Cmd::Monitor { filter, format, json, types } => {
            let json = json || format == args::MonitorFormat::Json;
            if types.is_empty() {
                monitor(&c, &filter, json).await
            } else {
                if !filter.is_empty() {
                    return Err(Failure::new(125, "--filter applies to netd's own events, not to --type drop|trace"));
                }
                dp_monitor(&c, &types, json).await
            }
        }
        Cmd::Network(n) => network(&c, n).await,
        Cmd::Info => {
            let v: Value = c.json("GET", "/info", None::<&()>).await?;
            for (k, val) in v.as_object().into_iter().flatten() {
                println!("{k}: {}", val.as_str().map(str::to_string).unwrap_or_else(|| val.to_string()));
            }
            Ok(())
        }
        Cmd::Version => {
            println!("Client:\n Version:    {}\n", env!("CARGO_PKG_VERSION"));
            let v: Value = c.json("GET", "/version", None::<&()>).await?;
            println!(
                "Server:\n Version:    {}\n Kernel:     {}",
                v["Version"].as_str().unwrap_or(""),
                v["KernelVersion"].as_str().unwrap_or("")
            );
            Ok(())
        }
        Cmd::Up(_) | Cmd::Shim { .. } | Cmd::Debug(_) | Cmd::Completion { .. } => unreachable!("handled in main"),
    }
}

fn enc(s: &str) -> String {
    crate::api::percent_encode(s)
}

/// Run `f` for each name, printing the name on success (Docker's `rm`/`stop`/`start` output)
/// and the error otherwise; non-zero exit if any failed.
async fn each<F, Fut>(c: &Client, names: &[String], f: F) -> R
where
    F: Fn(Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let mut failed = false;
    for n in names {
        match f(c.clone(), n.clone()).await {
            Ok(()) => println!("{n}"),
            Err(e) => {
                let f: Failure = e.into();
                eprintln!("{}", f.message);
                failed = true;
            }
        }
    }
    if failed { Err(Failure::new(1, String::new())) } else { Ok(()) }
}

async fn down(c: &Client, force: bool) -> R {
    // The daemon streams the teardown's progress until it is done.
    let path = if force { "/shutdown?force=1&progress=1" } else { "/shutdown?progress=1" };
    let mut out = std::io::stdout();
    let r = c.stream("POST", path, |b| {
        use std::io::Write;
        let _ = out.write_all(b);
        let _ = out.flush();
    });
    match r.await {
        // The daemon exits right after the teardown: a cut stream is its end.
        Ok(()) | Err(ClientError::Protocol(_)) => {}
        Err(e) => return Err(e.into()),
    }
    // Then (bounded) until it has closed its socket and exited.
    for _ in 0..1200 {
        if tokio::net::UnixStream::connect(&c.socket).await.is_err() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(Failure::new(1, "the daemon did not stop within 60s"))
}

fn run_err(e: ClientError) -> Failure {
    match e {
        ClientError::Api { message, .. } => Failure::new(
            125,
            format!("netd: Error response from daemon: {message}\n\nRun 'netd run --help' for more information"),
        ),
        other => Failure::new(125, format!("netd: {other}")),
    }
}

/// Docker's `--network` long syntax, one network: `name=NET,alias=A,ip=IP,ip6=IP,
/// mac-address=MAC,gw-priority=N` (keys and values lowercased, as Docker's CLI does).
#[derive(Debug, Default, PartialEq)]
struct NetworkAttachOpt {
    target: String,
    aliases: Vec<String>,
    ip: Option<String>,
    ip6: Option<String>,
    mac: Option<String>,
    gw_priority: i64,
}

/// `None` for the plain form (`--network NET`); Docker's messages for bad fields.
fn network_opt(v: &str) -> Result<Option<NetworkAttachOpt>, String> {
    // Docker's test for the long syntax: `\w+=\w+` anywhere in the value.
    let w = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = v.as_bytes();
    if !(1..b.len().saturating_sub(1)).any(|i| b[i] == b'=' && w(b[i - 1]) && w(b[i + 1])) {
        return Ok(None);
    }
    let mut o = NetworkAttachOpt::default();
    for field in v.split(',') {
        let lower = field.to_lowercase();
        let Some((key, val)) = lower.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(format!("invalid field {field}"));
        };
        let (key, val) = (key.trim(), val.trim().to_string());
        let addr = |val: &str| -> Result<String, String> {
            val.parse::<std::net::IpAddr>()
                .map(|_| val.to_string())
                .map_err(|_| format!("ParseAddr({val:?}): unable to parse IP"))
        };
        match key {
            "name" => o.target = val,
            "alias" => o.aliases.push(val),
            "ip" => o.ip = Some(addr(&val)?),
            "ip6" => o.ip6 = Some(addr(&val)?),
            "mac-address" => o.mac = Some(val),
            "gw-priority" => {
                o.gw_priority = val.parse().map_err(|e: std::num::ParseIntError| {
                    let why = match e.kind() {
                        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                            "value out of range"
                        }
                        _ => "invalid syntax",
                    };
                    format!("invalid gw-priority ({val}): {why}")
                })?
            }
            "link-local-ip" | "driver-opt" => return Err(format!("{key} is not supported by netd")),
            _ => return Err(format!("invalid field key {key}")),
        }
    }
    if o.target.is_empty() {
        return Err("network name/id is not specified".into());
    }
    Ok(Some(o))
}

async fn run(c: &Client, a: RunArgs, start: bool) -> R {
    let mut gw_priority = 0;
    // Client-side validation, as Docker's CLI parses -p before calling the daemon.
    for p in &a.publish {
        if let Err(e) = crate::ports::parse_port_spec(p) {
            return Err(Failure::new(125, format!("netd: {e}\n\nRun 'netd run --help' for more information")));
        }
    }
    let usage = |e: String| Failure::new(125, format!("netd: {e}\n\nRun 'netd run --help' for more information"));
    let net = network_opt(&a.network)
        .map_err(|e| usage(format!("invalid argument \"{}\" for \"--network\" flag: {e}", a.network)))?;
    let mut a = a;
    if let Some(n) = net {
        // Docker's `parseNetworkOpts`: a per-network value and its flag together conflict.
        let both = |flag: bool, per: bool, what: &str| {
            if flag && per { Err(usage(format!("conflicting options: cannot specify both {what}"))) } else { Ok(()) }
        };
        both(!a.network_alias.is_empty(), !n.aliases.is_empty(), "--network-alias and per-network alias")?;
        both(a.ip.is_some(), n.ip.is_some(), "--ip and per-network IPv4 address")?;
        both(a.ip6.is_some(), n.ip6.is_some(), "--ip6 and per-network IPv6 address")?;
        both(a.mac_address.is_some(), n.mac.is_some(), "--mac-address and per-network MAC address")?;
        a.network = n.target;
        a.network_alias.extend(n.aliases);
        a.ip = a.ip.or(n.ip);
        a.ip6 = a.ip6.or(n.ip6);
        a.mac_address = a.mac_address.or(n.mac);
        gw_priority = n.gw_priority;
    }
    let req = CreateRequest {
        gw_priority,
        name: a.name.clone(),
        cmd: a.cmd.clone(),
        env: a.env.clone(),
        hostname: a.hostname.clone(),
        domainname: a.domainname.clone(),
        network_mode: a.network.clone(),
        publish: a.publish.clone(),
        publish_all: a.publish_all,
        expose: a.expose.clone(),
        dns: a.dns.clone(),
        dns_search: a.dns_search.clone(),
        dns_options: a.dns_option.clone(),
        extra_hosts: a.add_host.clone(),
        links: a.link.clone(),
        ip: a.ip.clone(),
        ip6: a.ip6.clone(),
        mac_address: a.mac_address.clone(),
        network_aliases: a.network_alias.clone(),
        auto_remove: a.rm,
        workdir: a.workdir.clone(),
    };
    let created: CreateResponse = c.json("POST", "/containers/create", Some(&req)).await.map_err(run_err)?;
    for w in &created.warnings {
        eprintln!("WARNING: {w}");
    }
    if !start {
        println!("{}", created.id);
        return Ok(());
    }
    let id = created.id.clone();
    if let Err(e) = c.call("POST", &format!("/containers/{id}/start"), None).await {
        // Docker: 126/127 when the command cannot be run, 125 otherwise.
        let code = c
            .json::<Value>("GET", &format!("/containers/{id}/json"), None::<&()>)
            .await
            .ok()
            .and_then(|v| v[0]["State"]["ExitCode"].as_i64())
            .filter(|c| *c == 126 || *c == 127)
            .unwrap_or(125) as u8;
        if a.rm {
            let _ = c.call("DELETE", &format!("/containers/{id}?force=1"), None).await;
        }
        let mut f = run_err(e);
        f.code = code;
        return Err(f);
    }
    if a.detach {
        println!("{id}");
        return Ok(());
    }
    let mut out = std::io::stdout();
    let _ = c
        .stream("GET", &format!("/containers/{id}/logs?follow=1"), |b| {
            let _ = out.write_all(b);
            let _ = out.flush();
        })
        .await;
    match c.json::<WaitResponse>("POST", &format!("/containers/{id}/wait"), None::<&()>).await {
        Ok(w) => {
            let code = w.status_code.clamp(0, 255) as u8;
            if code == 0 { Ok(()) } else { Err(Failure::new(code, String::new())) }
        }
        // Removed by --rm before we asked: it exited; the log stream has ended.
        Err(ClientError::Api { status: 404, .. }) if a.rm => Ok(()),
        Err(e) => Err(run_err(e)),
    }
}

async fn ps(c: &Client, all: bool, quiet: bool, no_trunc: bool) -> R {
    let v: Value = c.json("GET", &format!("/containers/json{}", if all { "?all=1" } else { "" }), None::<&()>).await?;
    let list = v.as_array().cloned().unwrap_or_default();
    if quiet {
        for e in &list {
            let id = e["Id"].as_str().unwrap_or("");
            println!("{}", if no_trunc { id } else { &id[..12.min(id.len())] });
        }
        return Ok(());
    }
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let mut rows = Vec::new();
    for e in &list {
        let id = e["Id"].as_str().unwrap_or("");
        let cmd = e["Command"].as_str().unwrap_or("");
        let created = e["Created"].as_i64().unwrap_or(now);
        let state = e["State"].as_str().unwrap_or("");
        let status = crate::format::status_column(
            state,
            e["ExitCode"].as_i64().unwrap_or(0),
            crate::format::secs_since_rfc3339(e["StartedAt"].as_str().unwrap_or(""), now),
            crate::format::secs_since_rfc3339(e["FinishedAt"].as_str().unwrap_or(""), now),
        );
        let ports = crate::format::ports_column(e["Ports"].as_array().map(Vec::as_slice).unwrap_or(&[]));
        let names = e["Names"][0].as_str().unwrap_or("").trim_start_matches('/').to_string();
        rows.push(vec![
            if no_trunc { id.to_string() } else { id[..12.min(id.len())].to_string() },
            crate::format::command_column(cmd, no_trunc),
            crate::format::created_column(now - created),
            status,
            ports,
            names,
        ]);
    }
    print!("{}", crate::format::table(&["CONTAINER ID", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"], &rows));
    Ok(())
}

async fn port_cmd(c: &Client, name: &str, filter: Option<&str>) -> R {
    // A sandbox, else a Docker endpoint (by EndpointID prefix or address: Docker never tells
    // netd its container names).
    let v: Value = match c.json("GET", &format!("/containers/{}/json", enc(name)), None::<&()>).await {
        Err(ClientError::Api { status: 404, message }) => {
            match c.json::<Value>("GET", &format!("/endpoints/{}/json", enc(name)), None::<&()>).await {
                Ok(e) => serde_json::json!([{"NetworkSettings": {"Ports": e["Ports"]}}]),
                Err(ClientError::Api { status: 404, .. }) => {
                    return Err(ClientError::Api { status: 404, message }.into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        r => r?,
    };
    let ports = &v[0]["NetworkSettings"]["Ports"];
    let mut bindings: Vec<(String, String, String)> = Vec::new();
    for (k, list) in ports.as_object().into_iter().flatten() {
        for b in list.as_array().into_iter().flatten() {
            bindings.push((
                k.clone(),
                b["HostIp"].as_str().unwrap_or("").into(),
                b["HostPort"].as_str().unwrap_or("").into(),
            ));
        }
    }
    match filter {
        None => {
            for line in crate::ports::format_port_lines(&bindings) {
                println!("{line}");
            }
            Ok(())
        }
        Some(f) => {
            let key = crate::ports::PortKey::parse(f).map_err(|e| Failure::new(1, format!("Error: {e}")))?;
            let k = key.to_string();
            let matched: Vec<_> = bindings.iter().filter(|b| b.0 == k).collect();
            if matched.is_empty() {
                // docker/cli: the port as the user typed it.
                return Err(Failure::new(1, format!("no public port '{f}' published for {name}")));
            }
            for b in matched {
                println!("{}", crate::ports::format_host_addr(&b.1, &b.2));
            }
            Ok(())
        }
    }
}

/// `netd exec`: join the sandbox process's net, UTS and mount namespaces and run the command.
async fn exec(c: &Client, name: &str, cmd: &[String], env: &[String], workdir: Option<&str>) -> R {
    let v: Value = c.json("GET", &format!("/containers/{}/json", enc(name)), None::<&()>).await?;
    let st = &v[0]["State"];
    if st["Running"].as_bool() != Some(true) {
        return Err(Failure::new(
            1,
            format!("Error response from daemon: container {} is not running", v[0]["Id"].as_str().unwrap_or(name)),
        ));
    }
    let pid = st["Pid"].as_i64().unwrap_or(0);
    // The sandbox process's own environment (PATH, HOSTNAME, link variables, -e), as Docker's
    // exec starts from the container's environment.
    let mut envs: Vec<String> = std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|kv| !kv.is_empty())
                .map(|kv| String::from_utf8_lossy(kv).into_owned())
                .collect()
        })
        .unwrap_or_default();
    envs.extend(env.iter().cloned());
    let hostname = v[0]["Config"]["Hostname"].as_str().unwrap_or("").to_string();
    // Join the sandbox's cgroup first: the command (and anything it starts) is then a process of
    // the sandbox and ends with it, as with `docker exec`.
    let id = v[0]["Id"].as_str().unwrap_or(name).to_string();
    let join = serde_json::json!({ "Pid": std::process::id() }).to_string();
    c.call("POST", &format!("/containers/{}/exec-cgroup", enc(&id)), Some(join.as_bytes())).await?;
    let status = exec_in(pid as i32, cmd, &envs, &hostname, workdir);
    match status {
        Ok(code) => {
            if code == 0 {
                Ok(())
            } else {
                Err(Failure::new(code as u8, String::new()))
            }
        }
        Err((code, msg)) => Err(Failure::new(code, msg)),
    }
}

fn exec_in(
    pid: i32,
    cmd: &[String],
    env: &[String],
    hostname: &str,
    workdir: Option<&str>,
) -> Result<i32, (u8, String)> {
    use nix::sched::{CloneFlags, setns};
    let open = |ns: &str| {
        std::fs::File::open(format!("/proc/{pid}/ns/{ns}"))
            .map_err(|e| (126u8, format!("opening namespace {ns} of {pid}: {e}")))
    };
    let (net, uts, mnt) = (open("net")?, open("uts")?, open("mnt")?);
    let mut command = std::process::Command::new(&cmd[0]);
    command.args(&cmd[1..]).env_clear();
    let mut has_path = false;
    for kv in env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        has_path |= k == "PATH";
        command.env(k, v);
    }
    if !has_path {
        command.env("PATH", crate::shim::DEFAULT_PATH);
    }
    if !hostname.is_empty() {
        command.env("HOSTNAME", hostname);
    }
    command.current_dir(workdir.unwrap_or("/"));
    // SAFETY: only setns (a syscall) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            setns(net.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            setns(uts.as_fd(), CloneFlags::CLONE_NEWUTS).map_err(std::io::Error::from)?;
            setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    match command.status() {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err((
            127,
            format!(
                "OCI runtime exec failed: exec failed: unable to start container process: exec: \"{}\": executable file not found in $PATH: unknown",
                cmd[0]
            ),
        )),
        Err(e) => {
            Err((126, format!("OCI runtime exec failed: exec failed: unable to start container process: {e}: unknown")))
        }
    }
}

/// `netd monitor`: the daemon's event stream, as Docker's text lines or JSON lines.
async fn monitor(c: &Client, filters: &[String], json: bool) -> R {
    let mut q: Vec<String> = Vec::new();
    let (mut typ, mut action): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
    for f in filters {
        match f.split_once('=') {
            Some(("type", v)) if matches!(v, "container" | "network" | "port") => typ.push(v),
            Some(("event", v)) if !v.is_empty() => action.push(v),
            _ => {
                return Err(Failure::new(
                    125,
                    format!("invalid filter '{f}': want type=container|network|port or event=ACTION"),
                ));
            }
        }
    }
    if !typ.is_empty() {
        q.push(format!("type={}", enc(&typ.join(","))));
    }
    if !action.is_empty() {
        q.push(format!("event={}", enc(&action.join(","))));
    }
    let path = if q.is_empty() { "/events".to_string() } else { format!("/events?{}", q.join("&")) };
    let mut buf: Vec<u8> = Vec::new();
    let mut out = std::io::stdout();
    c.stream("GET", &path, |b| {
        buf.extend_from_slice(b);
        while let Some(i) = buf.iter().position(|&x| x == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let line = &line[..line.len() - 1];
            if json {
                let _ = out.write_all(line);
                let _ = out.write_all(b"\n");
            } else if let Ok(e) = serde_json::from_slice::<crate::daemon::events::Event>(line) {
                let _ = writeln!(out, "{}", e.text());
            }
            let _ = out.flush();
        }
    })
    .await
    .map_err(Failure::from)
}

/// `netd monitor --type drop|trace`: the dataplane's events, text lines or JSON lines.
async fn dp_monitor(c: &Client, types: &[args::DpEventType], json: bool) -> R {
    let mut t: Vec<&str> = types
        .iter()
        .map(|t| match t {
            args::DpEventType::Drop => "drop",
            args::DpEventType::Trace => "trace",
        })
        .collect();
    t.sort_unstable();
    t.dedup();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = std::io::stdout();
    c.stream("GET", &format!("/monitor?type={}", enc(&t.join(","))), |b| {
        buf.extend_from_slice(b);
        while let Some(i) = buf.iter().position(|&x| x == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let line = &line[..line.len() - 1];
            if line.is_empty() {
                continue; // the daemon's keep-alive
            }
            if json {
                let _ = out.write_all(line);
                let _ = out.write_all(b"\n");
            } else if let Ok(e) = serde_json::from_slice::<crate::daemon::dpmonitor::DpEvent>(line) {
                let _ = writeln!(out, "{}", e.text());
            }
            let _ = out.flush();
        }
    })
    .await
    .map_err(Failure::from)
}

async fn stats(c: &Client, format: StatsFormat) -> R {
    let v: Value = c.json("GET", "/stats", None::<&()>).await?;
    match format {
        StatsFormat::Json => println!("{}", pretty_json(&v)),
        StatsFormat::Prometheus => print!("{}", crate::format::prometheus(&v)),
        StatsFormat::Table => print!("{}", crate::format::stats_table(&v)),
    }
    Ok(())
}

async fn network(c: &Client, cmd: NetworkCmd) -> R {
    match cmd {
        NetworkCmd::Create { driver, subnet, gateway, ip_range, internal, opt, name, ipv6, ipv4 } => {
            let mut options = std::collections::BTreeMap::new();
            for o in opt {
                let (k, v) = o
                    .split_once('=')
                    .ok_or_else(|| Failure::new(1, format!("invalid key/value pair format in driver options: {o}")))?;
                options.insert(k.to_string(), v.to_string());
            }
            // One value per address family (an IPv6 value has a ':').
            let split = |flag: &str, v: Vec<String>| -> Result<(Option<String>, Option<String>), Failure> {
                let (v6, v4): (Vec<String>, Vec<String>) = v.into_iter().partition(|x| x.contains(':'));
                if v4.len() > 1 || v6.len() > 1 {
                    return Err(Failure::new(
                        1,
                        format!("netd supports one --{flag} per address family (one IPv4, one IPv6)"),
                    ));
                }
                Ok((v4.into_iter().next(), v6.into_iter().next()))
            };
            let (subnet, subnet_v6) = split("subnet", subnet)?;
            let (gateway, gateway_v6) = split("gateway", gateway)?;
            let (ip_range, ip_range_v6) = split("ip-range", ip_range)?;
            let req = NetworkCreateRequest {
                name,
                driver,
                subnet,
                gateway,
                ip_range,
                internal,
                options,
                enable_ipv6: ipv6,
                enable_ipv4: (!ipv4).then_some(false),
                subnet_v6,
                gateway_v6,
                ip_range_v6,
            };
            let v: Value = c.json("POST", "/networks/create", Some(&req)).await?;
            println!("{}", v["Id"].as_str().unwrap_or(""));
            Ok(())
        }
        NetworkCmd::Ls { quiet, no_trunc } => {
            let v: Value = c.json("GET", "/networks", None::<&()>).await?;
            let list = v.as_array().cloned().unwrap_or_default();
            let short = |id: &str| if no_trunc { id.to_string() } else { id[..12.min(id.len())].to_string() };
            if quiet {
                for n in &list {
                    println!("{}", short(n["Id"].as_str().unwrap_or("")));
                }
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|n| {
                    vec![
                        short(n["Id"].as_str().unwrap_or("")),
                        n["Name"].as_str().unwrap_or("").into(),
                        n["Driver"].as_str().unwrap_or("").into(),
                        n["Scope"].as_str().unwrap_or("").into(),
                    ]
                })
                .collect();
            print!("{}", crate::format::table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows));
            Ok(())
        }
        NetworkCmd::Inspect { networks } => {
            let mut all = Vec::new();
            let mut failed = None;
            for n in &networks {
                match c.json::<Value>("GET", &format!("/networks/{}", enc(n)), None::<&()>).await {
                    Ok(v) => all.push(v),
                    Err(e) => failed = Some(Failure::from(e)),
                }
            }
            println!("{}", pretty_json(&Value::Array(all)));
            failed.map_or(Ok(()), Err)
        }
        NetworkCmd::Rm { networks } => {
            each(c, &networks, |c, n| async move {
                c.call("DELETE", &format!("/networks/{}", enc(&n)), None).await.map(|_| ())
            })
            .await
        }
        NetworkCmd::Connect { alias, ip, ip6, gw_priority, network, container } => {
            let req = NetworkConnectRequest { container, aliases: alias, ip, ip6, gw_priority };
            c.call(
                "POST",
                &format!("/networks/{}/connect", enc(&network)),
                Some(&serde_json::to_vec(&req).unwrap_or_default()),
            )
            .await?;
            Ok(())
        }
        NetworkCmd::Disconnect { force: _, network, container } => {
            let req = NetworkConnectRequest { container, ..Default::default() };
            c.call(
                "POST",
                &format!("/networks/{}/disconnect", enc(&network)),
                Some(&serde_json::to_vec(&req).unwrap_or_default()),
            )
            .await?;
            Ok(())
        }
        NetworkCmd::Prune { force: _ } => {
            let v: Value = c.json("POST", "/networks/prune", None::<&()>).await?;
            let del: Vec<&str> =
                v["NetworksDeleted"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if !del.is_empty() {
                println!("Deleted Networks:");
                for d in del {
                    println!("{d}");
                }
            }
            Ok(())
        }
    }
}

/// Resolve `-H`/`NETD_HOST` for client commands.
pub fn client_socket(host: Option<&str>) -> Result<PathBuf, Failure> {
    args::socket_path(host, Path::new(args::DEFAULT_EXEC_ROOT)).map_err(|e| Failure::new(1, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Docker's `--network` long syntax and its messages (docker/cli `opts.NetworkOpt.Set`).
    #[test]
    fn network_long_syntax() {
        assert_eq!(network_opt("bridge"), Ok(None));
        assert_eq!(network_opt("container:web"), Ok(None));
        let o = network_opt("name=Front,alias=w1,ip=198.51.100.9,gw-priority=-3").unwrap().unwrap();
        assert_eq!(o.target, "front", "lowercased as Docker's CLI does");
        assert_eq!((o.aliases, o.ip.as_deref(), o.gw_priority), (vec!["w1".to_string()], Some("198.51.100.9"), -3));
        assert_eq!(network_opt("name=n,foo=1"), Err("invalid field key foo".into()));
        assert_eq!(network_opt("name=n,gw-priority=x"), Err("invalid gw-priority (x): invalid syntax".into()));
        assert_eq!(network_opt("alias=a"), Err("network name/id is not specified".into()));
        assert_eq!(network_opt("name=n,junk"), Err("invalid field junk".into()));
        assert!(network_opt("name=n,ip=300.1.1.1").unwrap_err().contains("unable to parse IP"));
    }
}
