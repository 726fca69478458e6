//! `netd monitor --type drop|trace` (`GET /monitor?type=drop,trace`): the eBPF programs' events
//! (dropped packets with their reason, traced packets of `netd_from_netdev` and
//! `netd_from_container`) as they happen, the way `cilium monitor` shows Cilium's.
//!
//! The programs write events only while the `MONITOR` map says so: the first client of a kind
//! sets its bit, the last one to go clears it, so with nobody listening the datapath writes
//! nothing (see `netd-ebpf/src/monitor.rs`). One reader task drains the ring buffer and hands
//! each event to every client (a broadcast channel; a slow client misses events, and is told
//! how many).
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use netd_common::{
    DropReason, ProgId,
    monitor::{F_DROP, F_TRACE, KIND_DROP, MonitorEvent, VERDICT_DROP, VERDICT_REDIRECT},
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{ApiError, Shared};

/// One event as clients get it (JSON lines; [`DpEvent::text`] for the text form).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DpEvent {
    /// `drop` or `trace`.
    #[serde(rename = "type")]
    pub typ: String,
    /// The drop reason (`netd stats`' labels; `unknown` when none was recorded); absent for
    /// traces.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// `pass`, `redirect` or `drop`.
    pub verdict: String,
    /// The program that saw it (`netd_from_container`, ...).
    pub program: String,
    pub interface: String,
    pub ifindex: u32,
    /// 4, 6, or 0 (not IP).
    pub family: u8,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, or the protocol number.
    pub proto: String,
    pub src: String,
    pub dst: String,
    pub sport: u16,
    pub dport: u16,
    pub len: u32,
    /// The sandbox (netd's name; `docker:<endpoint>`, `cni:<container>`) owning the source or
    /// destination address, when one does.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub src_sandbox: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dst_sandbox: Option<String>,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

impl DpEvent {
    /// One line in the spirit of `cilium monitor`'s:
    /// `TIME drop (isolation) flow 10.1.0.2:40000 -> 10.2.0.2:80 tcp on veth1a2b3c4 (netd_from_container) a -> b`.
    pub fn text(&self) -> String {
        let t = crate::model::rfc3339(
            self.time_nano.div_euclid(1_000_000_000),
            self.time_nano.rem_euclid(1_000_000_000) as u32,
        );
        let head = match &self.reason {
            Some(r) => format!("{} ({r})", self.typ),
            None => format!("{} {}", self.typ, self.verdict),
        };
        let ep = |a: &str, p: u16| {
            if p == 0 {
                a.to_string()
            } else if a.contains(':') {
                format!("[{a}]:{p}")
            } else {
                format!("{a}:{p}")
            }
        };
        let mut s = format!(
            "{t} {head} flow {} -> {} {} on {} ({})",
            ep(&self.src, self.sport),
            ep(&self.dst, self.dport),
            self.proto,
            self.interface,
            self.program
        );
        if self.src_sandbox.is_some() || self.dst_sandbox.is_some() {
            let n = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            s.push_str(&format!(" {} -> {}", n(&self.src_sandbox), n(&self.dst_sandbox)));
        }
        s
    }
}

/// Decode one ring buffer record.
pub fn decode(b: &[u8]) -> Option<MonitorEvent> {
    if b.len() < std::mem::size_of::<MonitorEvent>() {
        return None;
    }
    // SAFETY: length checked; `MonitorEvent` is plain old data, read unaligned.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr() as *const MonitorEvent) })
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

fn addr(family: u8, b: &[u8; 16]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(*b))),
        _ => None,
    }
}

/// Who owns which address, and interface names (refreshed when an unknown one shows up, at
/// most every 200 ms).
#[derive(Default)]
struct Names {
    owners: HashMap<IpAddr, String>,
    ifaces: HashMap<u32, String>,
    at: Option<Instant>,
}

impl Names {
    fn stale(&self) -> bool {
        self.at.is_none_or(|t| t.elapsed() > Duration::from_millis(200))
    }

    async fn refresh(&mut self, d: &Shared) {
        let st = d.state.lock().await;
        self.owners.clear();
        for a in st.attachments.values() {
            let who = match &a.owner {
                crate::model::Owner::Sandbox { id } => {
                    st.containers.get(id).map_or_else(|| id.clone(), |c| c.name.clone())
                }
                crate::model::Owner::Docker { endpoint_id } => {
                    format!("docker:{}", &endpoint_id[..endpoint_id.len().min(12)])
                }
                crate::model::Owner::Cni { container_id, .. } => {
                    format!("cni:{}", &container_id[..container_id.len().min(12)])
                }
            };
            if let Some(a4) = a.ip {
                self.owners.insert(IpAddr::V4(a4), who.clone());
            }
            if let Some(a6) = a.ip6 {
                self.owners.insert(IpAddr::V6(a6), who);
            }
        }
        drop(st);
        self.ifaces.clear();
        self.at = Some(Instant::now());
    }

    fn iface(&mut self, ifindex: u32) -> String {
        self.ifaces
            .entry(ifindex)
            .or_insert_with(|| {
                let mut buf = [0u8; libc::IF_NAMESIZE];
                // SAFETY: the buffer holds IF_NAMESIZE bytes, as the call requires.
                let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr() as *mut libc::c_char) };
                if p.is_null() {
                    format!("if{ifindex}")
                } else {
                    let n = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
                    String::from_utf8_lossy(&buf[..n]).into_owned()
                }
            })
            .clone()
    }

    async fn event(&mut self, d: &Shared, e: &MonitorEvent, time_nano: i64) -> DpEvent {
        let (src, dst) = (addr(e.family, &e.saddr), addr(e.family, &e.daddr));
        let unknown = |a: &Option<IpAddr>, o: &HashMap<IpAddr, String>| a.is_some_and(|a| !o.contains_key(&a));
        if self.stale() && (unknown(&src, &self.owners) || unknown(&dst, &self.owners) || self.at.is_none()) {
            self.refresh(d).await;
        }
        let kind_drop = e.kind == KIND_DROP;
        DpEvent {
            typ: if kind_drop { "drop" } else { "trace" }.into(),
            reason: kind_drop
                .then(|| DropReason::ALL.get(e.reason as usize).map_or("unknown", |r| r.label()).to_string()),
            verdict: match e.verdict {
                VERDICT_DROP => "drop",
                VERDICT_REDIRECT => "redirect",
                _ => "pass",
            }
            .into(),
            program: ProgId::ALL.get(e.prog as usize).map_or("unknown", |p| p.prog_name()).to_string(),
            interface: self.iface(e.ifindex),
            ifindex: e.ifindex,
            family: e.family,
            proto: proto_name(e.proto),
            src: src.map(|a| a.to_string()).unwrap_or_default(),
            dst: dst.map(|a| a.to_string()).unwrap_or_default(),
            sport: u16::from_be(e.sport),
            dport: u16::from_be(e.dport),
            len: e.len,
            src_sandbox: src.and_then(|a| self.owners.get(&a).cloned()),
            dst_sandbox: dst.and_then(|a| self.owners.get(&a).cloned()),
            time_nano,
        }
    }
}

/// The daemon's side of the dataplane monitor.
pub struct DpMonitor {
    tx: broadcast::Sender<Arc<DpEvent>>,
    /// Clients per kind: (drop, trace).
    clients: Mutex<(usize, usize)>,
    /// The reader task runs (started with the first client).
    reading: Mutex<bool>,
    /// The flags last written into the programs' `MONITOR` map.
    flags: std::sync::atomic::AtomicU32,
}

impl Default for DpMonitor {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(4096).0,
            clients: Mutex::new((0, 0)),
            reading: Mutex::new(false),
            flags: Default::default(),
        }
    }
}

/// A client's subscription: the events, and its share of the `MONITOR` flags (given back when
/// this goes).
pub struct Subscription {
    pub rx: broadcast::Receiver<Arc<DpEvent>>,
    pub drop: bool,
    pub trace: bool,
    d: Shared,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Err(e) = self.d.dp_monitor.change(&self.d, self.drop, self.trace, false) {
            tracing::warn!(error = %e, "netd monitor: clearing the dataplane's event flags");
        }
    }
}

impl DpMonitor {
    /// Count a client in (`add`) or out and write the flags the counts give.
    fn change(&self, d: &Shared, drop: bool, trace: bool, add: bool) -> Result<(), String> {
        let mut c = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let old = *c;
        let step = |n: usize, on: bool| {
            if !on {
                n
            } else if add {
                n + 1
            } else {
                n.saturating_sub(1)
            }
        };
        *c = (step(c.0, drop), step(c.1, trace));
        let flags = if c.0 > 0 { F_DROP } else { 0 } | if c.1 > 0 { F_TRACE } else { 0 };
        if let Err(e) = d.dp.set_monitor(flags) {
            if add {
                *c = old;
            }
            return Err(e.to_string());
        }
        self.flags.store(flags, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// `netd stats`' `monitor`: the clients per kind and the flags the programs see.
    pub fn json(&self) -> serde_json::Value {
        let c = *self.clients.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({
            "drop_clients": c.0,
            "trace_clients": c.1,
            "flags": self.flags.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The reader: drains the ring buffer whenever it has records.
    fn start_reader(&self, d: &Shared) -> Result<(), String> {
        let mut reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        if *reading {
            return Ok(());
        }
        let rb = d.dp.take_events().ok_or("the dataplane has no event ring buffer")?;
        // SAFETY: the ring buffer owns its descriptor and lives inside the AsyncFd until it is
        // dropped (with the task).
        let mut fd = unsafe { tokio::io::unix::AsyncFd::register(rb) }
            .map_err(|e| format!("polling the event ring buffer: {e}"))?;
        *reading = true;
        let d = d.clone();
        tokio::spawn(async move {
            let mut names = Names::default();
            loop {
                let Ok(mut g) = fd.readable_mut().await else { return };
                let mut batch = Vec::new();
                {
                    let rb = g.get_inner_mut();
                    while let Some(item) = rb.next() {
                        if let Some(e) = decode(&item) {
                            batch.push(e);
                        }
                    }
                }
                g.clear_ready();
                let now = jiff::Timestamp::now().as_nanosecond() as i64;
                for e in &batch {
                    let ev = names.event(&d, e, now).await;
                    let _ = d.dp_monitor.tx.send(Arc::new(ev));
                }
            }
        });
        Ok(())
    }
}

/// Subscribe a client to the dataplane's drop and/or trace events. Err: this dataplane has
/// none (iptables, none), or they could not be turned on.
pub fn subscribe(d: &Shared, drop: bool, trace: bool) -> Result<Subscription, ApiError> {
    let m = &d.dp_monitor;
    let rx = m.tx.subscribe();
    m.change(d, drop, trace, true).map_err(ApiError::bad)?;
    let sub = Subscription { rx, drop, trace, d: d.clone() };
    m.start_reader(d).map_err(ApiError::internal)?;
    Ok(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_prints_like_cilium_monitor() {
        let mut e = MonitorEvent {
            kind: KIND_DROP,
            reason: DropReason::Isolation as u8,
            prog: 3,
            family: 4,
            proto: 6,
            ..Default::default()
        };
        e.saddr[..4].copy_from_slice(&[10, 1, 0, 2]);
        e.daddr[..4].copy_from_slice(&[10, 2, 0, 2]);
        e.sport = 40000u16.to_be();
        e.dport = 80u16.to_be();
        // SAFETY: plain old data viewed as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(&e as *const MonitorEvent as *const u8, std::mem::size_of::<MonitorEvent>())
        };
        let back = decode(bytes).expect("decodes");
        assert_eq!(back, e);
        assert!(decode(&bytes[..10]).is_none());
        let ev = DpEvent {
            typ: "drop".into(),
            reason: Some("isolation".into()),
            verdict: "drop".into(),
            program: "netd_from_container".into(),
            interface: "veth1a2b3c4".into(),
            ifindex: 7,
            family: 4,
            proto: "tcp".into(),
            src: "10.1.0.2".into(),
            dst: "10.2.0.2".into(),
            sport: 40000,
            dport: 80,
            len: 60,
            src_sandbox: Some("a".into()),
            dst_sandbox: None,
            time_nano: 1_700_000_000_000_000_123,
        };
        assert_eq!(
            ev.text(),
            "2023-11-14T22:13:20.000000123Z drop (isolation) flow 10.1.0.2:40000 -> 10.2.0.2:80 tcp on veth1a2b3c4 (netd_from_container) a -> -"
        );
    }
}
