//! HTTP routing and Docker-shaped JSON (inspect, list).
use std::{collections::BTreeMap, io::SeekFrom, os::fd::OwnedFd, sync::Arc, time::Duration};

use bytes::Bytes;
use hyper::Response;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncSeekExt},
    net::UnixStream,
};

use super::{ApiError, ApiResult, Shared};
use crate::{
    api::{self, CreateRequest, ErrorResponse, NetworkConnectRequest, NetworkCreateRequest, WaitResponse},
    model::{Container, NetworkMode, Status},
};

pub async fn serve_conn(d: Shared, s: UnixStream) {
    // A descriptor sent with the request's first bytes (netd-cni's network namespace); only the
    // `/cni/*` endpoints take it, it is closed otherwise. A client that sends nothing is dropped
    // after the header timeout.
    let Ok(passed_fd) = tokio::time::timeout(api::HEAD_TIMEOUT, crate::cni::fdpass::peek_fd(&s)).await else {
        return;
    };
    let passed_fd = Arc::new(std::sync::Mutex::new(passed_fd.ok().flatten()));
    api::serve_connection(s, move |req| {
        let d = d.clone();
        // Only the connection's first request can carry it.
        let fd = passed_fd.lock().ok().and_then(|mut f| f.take());
        async move { handle(d, req, fd).await }
    })
    .await;
}

async fn handle(
    d: Shared,
    req: hyper::Request<hyper::body::Incoming>,
    passed_fd: Option<OwnedFd>,
) -> Response<api::Body> {
    let req = match api::read_request(req).await {
        Ok(r) => r,
        Err(api::HttpError::TooLarge) => {
            return error_response(&ApiError {
                status: 413,
                message: format!("request body too large (limit {} bytes)", api::MAX_BODY),
            });
        }
        Err(e) => return error_response(&ApiError::bad(e.to_string())),
    };
    if req.path.starts_with("/cni/") {
        let (status, body) = super::cni::serve(&d, &req, passed_fd).await;
        after_reply(&d);
        return api::json_response(status, body);
    }
    drop(passed_fd);
    // Streaming endpoint.
    if let Some(r) = req.path.strip_prefix("/containers/").and_then(|p| p.strip_suffix("/logs"))
        && !r.contains('/')
    {
        if req.method != "GET" {
            return error_response(&method_not_allowed(&req, &["GET"]));
        }
        return stream_logs(&d, r, req.flag("follow")).await.unwrap_or_else(|e| error_response(&e));
    }
    // `netd monitor`: events as JSON lines, until the client goes.
    if req.path.trim_matches('/') == "events" {
        if req.method != "GET" {
            return error_response(&method_not_allowed(&req, &["GET"]));
        }
        return stream_events(&d, req.query.get("type").cloned(), req.query.get("event").cloned());
    }
    // `netd monitor --type drop|trace`: the dataplane's events as JSON lines.
    if req.path.trim_matches('/') == "monitor" {
        if req.method != "GET" {
            return error_response(&method_not_allowed(&req, &["GET"]));
        }
        return stream_dp_events(&d, req.query.get("type").map(String::as_str).unwrap_or("drop,trace"))
            .unwrap_or_else(|e| error_response(&e));
    }
    // `netd down`: the teardown's progress, streamed until it is done.
    if req.method == "POST" && req.path.trim_matches('/') == "shutdown" && req.flag("progress") {
        if let Err(e) = shutdown_allowed(&d, &req).await {
            return error_response(&e);
        }
        let resp = shutdown_progress(&d);
        d.shutdown.notify_one();
        return resp;
    }
    let resp = match route(&d, &req).await {
        Ok((status, v)) => {
            let body =
                if v.is_null() && status == 204 { Vec::new() } else { serde_json::to_vec(&v).unwrap_or_default() };
            api::json_response(status, body)
        }
        Err(e) => error_response(&e),
    };
    if req.method != "GET" {
        after_reply(&d);
    }
    resp
}

/// What a change left for after its reply (conntrack purge of freshly published ports), run
/// while the reply is written.
fn after_reply(d: &Shared) {
    let d = d.clone();
    tokio::spawn(async move {
        // A test hook: hold the work back so a test can start flows before it runs.
        static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
        let delay = DELAY.get_or_init(|| {
            std::env::var("NETD_TEST_DEFERRED_DELAY_MS").ok()?.parse().ok().map(std::time::Duration::from_millis)
        });
        if let Some(t) = delay {
            tokio::time::sleep(*t).await;
        }
        // Without the state lock: the conntrack scan must not hold up other requests.
        d.dp.ct_flush().await;
    });
}

fn error_response(e: &ApiError) -> Response<api::Body> {
    let body = serde_json::to_vec(&ErrorResponse { message: e.message.clone() }).unwrap_or_default();
    let mut r = api::json_response(e.status, body);
    if e.status == 405
        && let Some(allow) = e.message.split(" (allowed: ").nth(1).and_then(|a| a.strip_suffix(')'))
        && let Ok(v) = hyper::header::HeaderValue::from_str(allow)
    {
        r.headers_mut().insert(hyper::header::ALLOW, v);
    }
    r
}

fn method_not_allowed(req: &api::Request, allowed: &[&str]) -> ApiError {
    ApiError {
        status: 405,
        message: format!("method not allowed: {} {} (allowed: {})", req.method, req.path, allowed.join(", ")),
    }
}

/// The methods the API serves on a path (empty: no such path).
fn allowed_methods(segs: &[&str]) -> Vec<&'static str> {
    let mut m = Vec::new();
    let mut add = |ok: bool, method: &'static str| {
        if ok && !m.contains(&method) {
            m.push(method);
        }
    };
    match segs {
        ["_ping" | "version" | "info" | "networks" | "stats" | "events" | "monitor"] => add(true, "GET"),
        ["shutdown"] => add(true, "POST"),
        ["containers", id] => {
            add(*id == "json", "GET");
            add(*id == "create", "POST");
            add(true, "DELETE");
        }
        ["containers", _, op] => {
            add(*op == "json", "GET");
            add(matches!(*op, "start" | "stop" | "restart" | "exec-cgroup" | "kill" | "wait"), "POST");
        }
        ["networks", id] => {
            add(true, "GET");
            add(matches!(*id, "create" | "prune"), "POST");
            add(true, "DELETE");
        }
        ["networks", _, "connect" | "disconnect"] => add(true, "POST"),
        ["endpoints", _, "json"] => add(true, "GET"),
        _ => {}
    }
    m
}

/// `POST /shutdown` without `force` is refused while Docker endpoints are on netd networks.
async fn shutdown_allowed(d: &Shared, req: &api::Request) -> ApiResult<()> {
    if req.flag("force") {
        return Ok(());
    }
    let st = d.state.lock().await;
    let n = st.attachments.values().filter(|a| matches!(a.owner, crate::model::Owner::Docker { .. })).count();
    if n > 0 && !d.cfg.up.live_restore {
        return Err(ApiError::conflict(format!(
            "{n} Docker endpoint(s) are on netd networks: remove those containers first, or use netd down --force (their interfaces go)"
        )));
    }
    Ok(())
}

/// A line `k/N sandboxes stopped` as sandboxes stop (at most every 200 ms, and the last),
/// then the stream ends when the teardown is done.
fn shutdown_progress(d: &Shared) -> Response<api::Body> {
    let mut rx = d.teardown_progress.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        let mut shown = None;
        loop {
            let p = *rx.borrow_and_update();
            if p.total > 0 && shown != Some(p.stopped) {
                shown = Some(p.stopped);
                if tx.send(Bytes::from(format!("{}/{} sandboxes stopped\n", p.stopped, p.total))).await.is_err() {
                    return;
                }
            }
            if p.done || rx.changed().await.is_err() {
                return;
            }
            // At most a line per 200 ms, except the last.
            let q = *rx.borrow();
            if shown.is_some() && !q.done && q.stopped < q.total {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    api::stream_response(out)
}

/// Every event from now on (`type` and `event` filter them, comma-separated values), one JSON
/// object per line.
fn stream_events(d: &Shared, typ: Option<String>, action: Option<String>) -> Response<api::Body> {
    let mut rx = d.events.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(e) => {
                        if !super::events::matches(&e, typ.as_deref(), action.as_deref()) {
                            continue;
                        }
                        let mut line = serde_json::to_vec(&e).unwrap_or_default();
                        line.push(b'\n');
                        if tx.send(Bytes::from(line)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "netd monitor: a slow client missed events");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    api::stream_response(out)
}

/// `type`: `drop`, `trace`, or both comma-separated. Errors before the stream starts (an
/// unknown type, a dataplane without events).
fn stream_dp_events(d: &Shared, types: &str) -> ApiResult<Response<api::Body>> {
    let (mut drop, mut trace) = (false, false);
    for t in types.split(',') {
        match t {
            "drop" => drop = true,
            "trace" => trace = true,
            _ => return Err(ApiError::bad(format!("invalid monitor type {t:?}: want drop or trace"))),
        }
    }
    let mut sub = super::dpmonitor::subscribe(d, drop, trace)?;
    let (tx, out) = tokio::sync::mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        // An empty line each second without events: a client that went away is noticed (the
        // write fails) and its share of the programs' flags given back, even when nothing
        // happens on the dataplane.
        let mut beat = tokio::time::interval(std::time::Duration::from_secs(1));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    if tx.send(Bytes::from_static(b"\n")).await.is_err() {
                        return;
                    }
                }
                r = sub.rx.recv() => match r {
                    Ok(e) => {
                        if (e.typ == "drop" && !sub.drop) || (e.typ == "trace" && !sub.trace) {
                            continue;
                        }
                        let mut line = serde_json::to_vec(&*e).unwrap_or_default();
                        line.push(b'\n');
                        if tx.send(Bytes::from(line)).await.is_err() {
                            return;
                        }
                        beat.reset();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "netd monitor: a slow client missed dataplane events");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    Ok(api::stream_response(out))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    api::decode_json(body).map_err(ApiError::bad)
}

async fn route(d: &Shared, req: &api::Request) -> ApiResult<(u16, Value)> {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["_ping"]) => Ok((200, json!("OK"))),
        ("GET", ["version"]) => Ok((200, version())),
        ("GET", ["info"]) => Ok((200, d.info().await)),
        ("POST", ["shutdown"]) => {
            shutdown_allowed(d, req).await?;
            d.shutdown.notify_one();
            Ok((204, Value::Null))
        }
        ("POST", ["containers", "create"]) => {
            let r: CreateRequest = parse(&req.body)?;
            let out = d.create(r).await?;
            Ok((201, serde_json::to_value(out).unwrap_or_default()))
        }
        ("GET", ["containers", "json"]) => Ok((200, d.list(req.flag("all")).await)),
        ("GET", ["containers", id, "json"]) => Ok((200, d.inspect(id).await?)),
        ("POST", ["containers", id, "start"]) => {
            super::steps::timed("start", id, d.start(id)).await.map(|_| (204, Value::Null))
        }
        ("POST", ["containers", id, "stop"]) => {
            let t = req
                .query
                .get("t")
                .map(|t| t.parse::<i64>().map_err(|_| ApiError::bad(format!("invalid value for t: {t}"))))
                .transpose()?;
            d.stop(id, t).await.map(|_| (204, Value::Null))
        }
        ("POST", ["containers", id, "restart"]) => {
            let t = req
                .query
                .get("t")
                .map(|t| t.parse::<i64>().map_err(|_| ApiError::bad(format!("invalid value for t: {t}"))))
                .transpose()?;
            d.stop(id, t).await?;
            d.start(id).await?;
            let mut st = d.state.lock().await;
            if let Ok(cid) = d.resolve_container(&st, id)
                && let Some(c) = st.containers.get_mut(&cid)
            {
                c.restart_count += 1;
                let _ = d.store.save_container(c);
            }
            Ok((204, Value::Null))
        }
        ("POST", ["containers", id, "exec-cgroup"]) => {
            let r: Value = parse(&req.body)?;
            let pid = r["Pid"].as_i64().filter(|p| *p > 0 && *p <= i32::MAX as i64);
            let pid = pid.ok_or_else(|| ApiError::bad("exec-cgroup: Pid must be a positive process id"))?;
            d.exec_join_cgroup(id, pid as i32).await.map(|_| (204, Value::Null))
        }
        ("POST", ["containers", id, "kill"]) => {
            let sig = req.query.get("signal").cloned().unwrap_or_else(|| "KILL".into());
            d.kill(id, &sig).await.map(|_| (204, Value::Null))
        }
        ("POST", ["containers", id, "wait"]) => {
            let code = d.wait(id).await?;
            Ok((200, serde_json::to_value(WaitResponse { status_code: code }).unwrap_or_default()))
        }
        ("DELETE", ["containers", id]) => {
            super::steps::timed("rm", id, d.remove(id, req.flag("force"))).await.map(|_| (204, Value::Null))
        }
        ("GET", ["networks"]) => Ok((200, d.network_list().await)),
        ("GET", ["networks", id]) => Ok((200, d.network_inspect(id).await?)),
        ("POST", ["networks", "create"]) => {
            let r: NetworkCreateRequest = parse(&req.body)?;
            let id = d.network_create(r).await?;
            Ok((201, json!({"Id": id, "Warning": ""})))
        }
        ("POST", ["networks", "prune"]) => Ok((200, d.network_prune().await?)),
        ("DELETE", ["networks", id]) => d.network_remove(id).await.map(|_| (204, Value::Null)),
        ("POST", ["networks", id, "connect"]) => {
            let r: NetworkConnectRequest = parse(&req.body)?;
            d.network_connect(id, r).await.map(|_| (200, Value::Null))
        }
        ("POST", ["networks", id, "disconnect"]) => {
            let r: NetworkConnectRequest = parse(&req.body)?;
            d.network_disconnect(id, &r.container).await.map(|_| (200, Value::Null))
        }
        ("GET", ["endpoints", id, "json"]) => Ok((200, d.endpoint_json(id).await?)),
        ("GET", ["stats"]) => {
            let v = d.stats_json().await.map_err(|e| ApiError::internal(e.to_string()))?;
            Ok((200, v))
        }
        _ => match allowed_methods(&segs) {
            m if m.is_empty() => Err(ApiError::not_found(format!("page not found: {} {}", req.method, req.path))),
            m => Err(method_not_allowed(req, &m)),
        },
    }
}

fn version() -> Value {
    json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": "1.0",
        "Os": "linux",
        "Arch": std::env::consts::ARCH,
        "KernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

/// Stream the sandbox's log; with `follow`, until it stops running.
async fn stream_logs(d: &Shared, r: &str, follow: bool) -> ApiResult<Response<api::Body>> {
    let id = {
        let st = d.state.lock().await;
        d.resolve_container(&st, r)?
    };
    let path = d.store.log_file(&id);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let d = d.clone();
    tokio::spawn(async move {
        let mut f = tokio::fs::File::open(&path).await.ok();
        let mut buf = vec![0u8; 64 << 10];
        let mut pos = 0u64;
        loop {
            // Check liveness before reading, so the last bytes written before exit are read.
            let running = {
                let st = d.state.lock().await;
                st.containers.get(&id).is_some_and(|c| c.state.status == Status::Running)
            };
            if f.is_none() {
                f = tokio::fs::File::open(&path).await.ok();
            }
            if let Some(file) = f.as_mut() {
                let _ = file.seek(SeekFrom::Start(pos)).await;
                loop {
                    let n = file.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    pos += n as u64;
                    if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        return; // client went away
                    }
                }
            }
            if !follow || !running || tx.is_closed() {
                return;
            }
            let notified = d.changed.notified();
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    });
    Ok(api::stream_response(rx))
}

impl super::Daemon {
    /// `GET /stats` and the metrics endpoint: the dataplane's counters, the publish timings and
    /// how the state lock is used (`lock`: waits and hold times).
    pub async fn stats_json(&self) -> crate::dataplane::DpResult<Value> {
        let mut v = self.state.lock().await.stats_json()?;
        v["lock"] = self.state.stats.json();
        v["monitor"] = self.dp_monitor.json();
        Ok(v)
    }

    pub async fn info(&self) -> Value {
        let st = self.state.lock().await;
        let running = st.containers.values().filter(|c| c.state.status == Status::Running).count();
        let stopped = st.containers.len() - running;
        json!({
            "Containers": st.containers.len(),
            "ContainersRunning": running,
            "ContainersStopped": stopped,
            "Networks": st.networks.len(),
            "Dataplane": st.dp.backend().to_string(),
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "DataRoot": self.cfg.up.data_root,
            "ExecRoot": self.cfg.up.exec_root,
            "Socket": self.cfg.socket,
            "Uplinks": st.host_info.uplinks.iter().map(|u| u.name.clone()).collect::<Vec<_>>(),
            "DockerPlugin": if self.cfg.up.docker_plugin == "none" { Value::Null } else { json!(self.cfg.up.docker_plugin) },
            "Attachments": st.attachments.len(),
            "UptimeSeconds": self.started.elapsed().as_secs(),
            "KernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        })
    }

    /// `GET /containers/json`: Docker's list shape (the fields `ps` needs).
    pub async fn list(&self, all: bool) -> Value {
        let st = self.state.lock().await;
        let mut v: Vec<&Container> =
            st.containers.values().filter(|c| all || c.state.status == Status::Running).collect();
        v.sort_by(|a, b| b.created.cmp(&a.created));
        Value::Array(
            v.into_iter()
                .map(|c| {
                    json!({
                        "Id": c.id,
                        "Names": [format!("/{}", c.name)],
                        "Command": c.config.cmd.join(" "),
                        "Created": c.created_unix,
                        "State": c.state.status.as_str(),
                        "Status": status_text(c),
                        "Ports": ports_list(c),
                        "Exposed": c.exposed,
                        "StartedAt": c.state.started_at,
                        "FinishedAt": c.state.finished_at,
                        "ExitCode": c.state.exit_code,
                        "NetworkMode": c.mode.docker_name(&st.networks),
                    })
                })
                .collect(),
        )
    }

    /// `GET /containers/{id}/json`: Docker's inspect shape.
    pub async fn inspect(&self, r: &str) -> ApiResult<Value> {
        let st = self.state.lock().await;
        let id = self.resolve_container(&st, r)?;
        let c = &st.containers[&id];
        let rt = self.cfg.runtime_dir(&id);
        let mut port_bindings: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for b in &c.requested {
            port_bindings
                .entry(format!("{}/{}", b.container_port, b.proto))
                .or_default()
                .push(json!({"HostIp": b.host_ip, "HostPort": b.host_port}));
        }
        let mut ports: BTreeMap<String, Value> = BTreeMap::new();
        if c.state.status == Status::Running && matches!(c.mode, NetworkMode::Bridge(_)) {
            for k in &c.exposed {
                ports.insert(k.clone(), Value::Null);
            }
            for m in &c.ports {
                let key = format!("{}/{}", m.container_port, m.proto.as_str());
                let e = ports.entry(key).or_insert(Value::Null);
                if e.is_null() {
                    *e = Value::Array(Vec::new());
                }
                if let Value::Array(a) = e {
                    a.push(json!({"HostIp": m.host_ip.to_string(), "HostPort": m.host_port.to_string()}));
                }
            }
        }
        let mut networks = serde_json::Map::new();
        for ep in &c.endpoints {
            let Some(n) = st.networks.get(&ep.network_id) else { continue };
            let name = n.docker_name();
            networks.insert(
                name,
                json!({
                    "IPAMConfig": if ep.static_ip.is_none() && ep.static_ip6.is_none() { Value::Null } else {
                        let mut m = serde_json::Map::new();
                        if let Some(ip) = ep.static_ip {
                            m.insert("IPv4Address".into(), json!(ip.to_string()));
                        }
                        if let Some(ip) = ep.static_ip6 {
                            m.insert("IPv6Address".into(), json!(ip.to_string()));
                        }
                        Value::Object(m)
                    },
                    "Links": if n.default_bridge && !c.config.links.is_empty() { json!(c.config.links) } else { Value::Null },
                    "Aliases": if ep.aliases.is_empty() { Value::Null } else { json!(ep.aliases) },
                    "MacAddress": fmt_mac(ep.mac),
                    "GwPriority": c.gw_priority_of(&ep.network_id),
                    "NetworkID": n.id,
                    "EndpointID": ep.endpoint_id,
                    "Gateway": ep.gateway.map(|g| g.to_string()).unwrap_or_default(),
                    "IPAddress": ep.ip.map(|a| a.to_string()).unwrap_or_default(),
                    "IPPrefixLen": ep.prefix_len,
                    "IPv6Gateway": ep.gateway6.map(|g| g.to_string()).unwrap_or_default(),
                    "GlobalIPv6Address": ep.ip6.map(|a| a.to_string()).unwrap_or_default(),
                    "GlobalIPv6PrefixLen": if ep.ip6.is_some() { ep.prefix_len6 } else { 0 },
                    "DNSNames": if n.default_bridge { Value::Null } else { json!(dns_names(c, &ep.aliases)) },
                }),
            );
        }
        // Stopped sandboxes still list their networks (without addresses), as Docker does.
        if c.endpoints.is_empty()
            && let NetworkMode::Bridge(nid) = &c.mode
        {
            for nid in std::iter::once(nid).chain(c.extra_networks.iter()) {
                if let Some(n) = st.networks.get(nid) {
                    let name = n.docker_name();
                    networks.insert(name, json!({"NetworkID": n.id, "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "MacAddress": ""}));
                }
            }
        }
        let primary = c.endpoints.first();
        let default_ep = c.endpoints.iter().find(|e| st.networks.get(&e.network_id).is_some_and(|n| n.default_bridge));
        let mut exposed = serde_json::Map::new();
        for k in &c.exposed {
            exposed.insert(k.clone(), json!({}));
        }
        let status = c.state.status;
        Ok(json!([{
            "Id": c.id,
            "Created": c.created,
            "Path": c.config.cmd.first(),
            "Args": c.config.cmd.iter().skip(1).collect::<Vec<_>>(),
            "State": {
                "Status": status.as_str(),
                "Running": status == Status::Running,
                "Paused": false,
                "Restarting": false,
                "OOMKilled": false,
                "Dead": false,
                "Pid": c.state.pid,
                "ExitCode": c.state.exit_code,
                "Error": c.state.error,
                "StartedAt": c.state.started_at,
                "FinishedAt": c.state.finished_at,
            },
            "ResolvConfPath": rt.join("resolv.conf"),
            "HostnamePath": rt.join("hostname"),
            "HostsPath": rt.join("hosts"),
            "LogPath": self.store.log_file(&c.id),
            "Name": format!("/{}", c.name),
            "RestartCount": c.restart_count,
            "HostConfig": {
                "NetworkMode": c.mode.docker_name(&st.networks),
                "PortBindings": port_bindings,
                "PublishAllPorts": c.config.publish_all,
                "AutoRemove": c.config.auto_remove,
                "Dns": c.config.dns,
                "DnsOptions": c.config.dns_options,
                "DnsSearch": c.config.dns_search,
                "ExtraHosts": if c.config.extra_hosts.is_empty() { Value::Null } else { json!(c.config.extra_hosts) },
                "Links": if c.config.links.is_empty() { Value::Null } else { json!(c.config.links) },
            },
            "Config": {
                "Hostname": c.hostname,
                "Domainname": c.domainname,
                "ExposedPorts": if exposed.is_empty() { Value::Null } else { Value::Object(exposed) },
                "Env": c.config.env,
                "Cmd": c.config.cmd,
                "WorkingDir": c.config.workdir.clone().unwrap_or_default(),
            },
            "NetworkSettings": {
                "SandboxID": c.netns.as_ref().map(|_| c.id.clone()).unwrap_or_default(),
                "SandboxKey": c.netns.clone().map(|p| p.display().to_string()).unwrap_or_default(),
                "Ports": ports,
                "Gateway": default_ep.and_then(|e| e.gateway).map(|g| g.to_string()).unwrap_or_default(),
                "IPAddress": default_ep.and_then(|e| e.ip).map(|a| a.to_string()).unwrap_or_default(),
                "IPPrefixLen": default_ep.map(|e| e.prefix_len).unwrap_or(0),
                "MacAddress": default_ep.map(|e| fmt_mac(e.mac)).unwrap_or_default(),
                "EndpointID": default_ep.map(|e| e.endpoint_id.clone()).unwrap_or_default(),
                "IPv6Gateway": default_ep.and_then(|e| e.gateway6).map(|g| g.to_string()).unwrap_or_default(),
                "GlobalIPv6Address": default_ep.and_then(|e| e.ip6).map(|a| a.to_string()).unwrap_or_default(),
                "GlobalIPv6PrefixLen": default_ep.filter(|e| e.ip6.is_some()).map_or(0, |e| e.prefix_len6),
                "Networks": networks,
            },
            // netd's own: the first network's address (its v6 one on an IPv6-only network).
            "Primary": primary.and_then(|e| e.ip.map(|a| a.to_string()).or(e.ip6.map(|a| a.to_string()))),
        }]))
    }
}

fn dns_names(c: &Container, aliases: &[String]) -> Vec<String> {
    let mut v = vec![c.name.clone()];
    v.extend(aliases.iter().cloned());
    v.push(c.id[..12].to_string());
    v.dedup();
    v
}

pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Docker's `Status` text of a list entry.
fn status_text(c: &Container) -> Value {
    json!({
        "State": c.state.status.as_str(),
        "StartedAt": c.state.started_at,
        "FinishedAt": c.state.finished_at,
        "ExitCode": c.state.exit_code,
    })
}

/// `Ports` of a list entry: every published binding, plus exposed-only ports.
fn ports_list(c: &Container) -> Value {
    let mut out = Vec::new();
    let running = c.state.status == Status::Running;
    for k in &c.exposed {
        let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
        let p: u16 = p.parse().unwrap_or(0);
        let bound: Vec<_> = if running {
            c.ports.iter().filter(|m| m.container_port == p && m.proto.as_str() == proto).collect()
        } else {
            Vec::new()
        };
        if bound.is_empty() {
            out.push(json!({"PrivatePort": p, "Type": proto}));
        }
        for m in bound {
            out.push(json!({"IP": m.host_ip.to_string(), "PrivatePort": p, "PublicPort": m.host_port, "Type": proto}));
        }
    }
    Value::Array(out)
}
