//! `--dataplane iptables`: Docker 29's iptables layout with netd's chain names, rendered by pure
//! functions and applied with one `iptables-restore --noflush` batch per change.
//!
//! Chains: filter `NETD`, `NETD-USER`, `NETD-FORWARD`, `NETD-CT`, `NETD-INTERNAL`,
//! `NETD-BRIDGE`; nat `NETD`. Where Docker appends to a built-in chain (nat POSTROUTING
//! MASQUERADE rules, raw PREROUTING drops), netd uses its own `NETD-POSTROUTING` and `NETD-RAW`
//! chains behind a single jump, so that a restarted daemon can flush and rebuild everything it
//! owns without parsing other programs' rules; the rules themselves are Docker's.
//!
//! Isolation from Docker's *own* bridge networks (docker0, `br-<12 hex>`; netd's bridges
//! aside) is netd's addition, in the mangle table's FORWARD (`NETD-ISOLATION-STAGE-1..3`, after
//! Docker 20.10's `DOCKER-ISOLATION-STAGE-1/2`): dockerd inserts its filter FORWARD rules at the
//! top whenever it starts or creates a network, and they accept `-i docker0 ! -o docker0`
//! before any jump netd could keep there; mangle FORWARD runs before filter FORWARD and Docker
//! leaves it alone, so both directions drop whichever daemon started last.
//!
//! IPv6 (`--ipv6` networks, `--ip6tables`, default true): the same chains in ip6tables, with
//! Docker 27+'s v6 rules (moby's `iptabler` ip6tables goldens): NAT66 masquerade of the
//! network's prefix in `nat` mode, DNAT of v6 bindings with `! -s fe80::/10`, `OUTPUT ! -d
//! ::1/128`, ICMPv6 in routed mode, the direct-access DROP per sandbox address; no loopback
//! DROP (`::1` is not routable). A `[::]` binding of an IPv4-only sandbox gets no rule: the
//! userland proxy serves it, as docker-proxy does.
use std::{collections::BTreeSet, io::Write, net::Ipv4Addr, process::Command};

use super::*;

const B: &str = "iptables";

/// One rule: table and rule spec (without `-A CHAIN`/`-I CHAIN`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// An ip6tables rule.
    pub v6: bool,
    pub table: &'static str,
    pub chain: &'static str,
    /// Insert at the head (Docker inserts per-port ACCEPTs before the network's DROP).
    pub head: bool,
    pub spec: String,
}

fn r(table: &'static str, chain: &'static str, spec: impl Into<String>) -> Rule {
    Rule { v6: false, table, chain, head: false, spec: spec.into() }
}

fn rh(table: &'static str, chain: &'static str, spec: impl Into<String>) -> Rule {
    Rule { v6: false, table, chain, head: true, spec: spec.into() }
}

/// The same rule in ip6tables.
fn six(mut rule: Rule) -> Rule {
    rule.v6 = true;
    rule
}

pub const FILTER_CHAINS: [&str; 6] = ["NETD", "NETD-USER", "NETD-FORWARD", "NETD-CT", "NETD-INTERNAL", "NETD-BRIDGE"];
pub const NAT_CHAINS: [&str; 3] = ["NETD", "NETD-POSTROUTING", "NETD-LOOPBACK"];
pub const RAW_CHAINS: [&str; 1] = ["NETD-RAW"];
pub const MANGLE_CHAINS: [&str; 3] = ["NETD-ISOLATION-STAGE-1", "NETD-ISOLATION-STAGE-2", "NETD-ISOLATION-STAGE-3"];

/// A filter chain nothing jumps to, holding one rule with a conntrack match for as long as netd
/// runs. The kernel registers conntrack's hooks in a namespace only while some rule needs them
/// (`nf_ct_netns_get`, taken by every conntrack match and NAT target). When a restarted daemon
/// flushes its chains before replaying them, the last such rule would go for a moment: packets
/// of established published flows are then neither tracked nor translated, reach the host's own
/// stack and are answered with a RST. Re-declaring this chain and adding its rule in one
/// transaction never lets the count reach zero, so the flush is harmless.
pub const CT_HOLD_CHAIN: &str = "NETD-CT-HOLD";

/// The batch that (re)creates [`CT_HOLD_CHAIN`]: its flush and its rule in one commit.
pub fn ct_hold_batch() -> String {
    format!("*filter\n:{c} - [0:0]\n-A {c} -m conntrack --ctstate INVALID -j RETURN\nCOMMIT\n", c = CT_HOLD_CHAIN)
}

/// Jumps from the built-in chains into netd's, both families (ip6tables: `::1/128` for the
/// loopback exclusion).
pub fn render_jumps(userland_proxy: bool) -> Vec<Rule> {
    let v4 = render_jumps4(userland_proxy);
    let v6: Vec<Rule> =
        v4.iter().map(|j| six(Rule { spec: j.spec.replace("127.0.0.0/8", "::1/128"), ..j.clone() })).collect();
    v4.into_iter().chain(v6).collect()
}

fn render_jumps4(userland_proxy: bool) -> Vec<Rule> {
    vec![
        r("filter", "FORWARD", "-j NETD-USER"),
        r("filter", "FORWARD", "-j NETD-FORWARD"),
        r("nat", "PREROUTING", "-m addrtype --dst-type LOCAL -j NETD"),
        if userland_proxy {
            r("nat", "OUTPUT", "! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j NETD")
        } else {
            r("nat", "OUTPUT", "-m addrtype --dst-type LOCAL -j NETD")
        },
        r("nat", "POSTROUTING", "-j NETD-POSTROUTING"),
        r("raw", "PREROUTING", "-j NETD-RAW"),
        r("mangle", "FORWARD", "-j NETD-ISOLATION-STAGE-1"),
    ]
}

/// Isolation between netd's bridges and Docker's own (`foreign`: bridges named like Docker's
/// that are not netd's), both ways: stage 1 sorts by the incoming bridge, stage 2 drops what
/// goes from a netd bridge into a Docker bridge, stage 3 the other way round. Traffic between
/// two netd bridges (netd's own isolation, in filter) or two Docker bridges (Docker's) passes.
pub fn render_isolation(netd: &BTreeSet<String>, foreign: &BTreeSet<String>) -> Vec<Rule> {
    let foreign: Vec<&String> = foreign.iter().filter(|f| !netd.contains(*f)).collect();
    if foreign.is_empty() || netd.is_empty() {
        return Vec::new();
    }
    let (s1, s2, s3) = (MANGLE_CHAINS[0], MANGLE_CHAINS[1], MANGLE_CHAINS[2]);
    // Published ports, either daemon's, stay reachable through the host's addresses (both
    // directions of a DNATed connection): Docker's containers reach ports published on another
    // network that way, through its userland proxy (on by default).
    let mut v = vec![r("mangle", s1, "-m conntrack --ctstate DNAT -j RETURN")];
    v.extend(netd.iter().map(|b| r("mangle", s1, format!("-i {b} -j {s2}"))));
    v.extend(foreign.iter().map(|f| r("mangle", s1, format!("-i {f} -j {s3}"))));
    v.extend(foreign.iter().map(|f| r("mangle", s2, format!("-o {f} -j DROP"))));
    v.extend(netd.iter().map(|b| r("mangle", s3, format!("-o {b} -j DROP"))));
    let v6: Vec<Rule> = v.iter().cloned().map(six).collect();
    v.extend(v6);
    v
}

/// The daemon's fixed rules (new-daemon.md).
pub fn render_base() -> Vec<Rule> {
    let v4 = vec![
        r("filter", "NETD-FORWARD", "-j NETD-CT"),
        r("filter", "NETD-FORWARD", "-j NETD-INTERNAL"),
        r("filter", "NETD-FORWARD", "-j NETD-BRIDGE"),
    ];
    let v6: Vec<Rule> = v4.iter().cloned().map(six).collect();
    v4.into_iter().chain(v6).collect()
}

/// A bridge network's rules (usernet-*.md): DROP of traffic entering the bridge from
/// elsewhere, conntrack ACCEPT, icc, internal isolation, masquerade. An IPv6-only network has
/// its ip6tables rules only (Docker's iptabler configures a family only with its prefix).
pub fn render_network(n: &NetworkSpec, userland_proxy: bool) -> Vec<Rule> {
    let br = &n.bridge;
    let Some(n4) = &n.ipv4 else { return render_network6(n, userland_proxy) };
    let sub = n4.cidr();
    if n.internal {
        // usernet-internal.md: no DROP/BRIDGE/CT rules, the INTERNAL pair at the head.
        let mut v = vec![
            r("filter", "NETD-FORWARD", format!("-i {br} -o {br} -j {}", if n.icc { "ACCEPT" } else { "DROP" })),
            rh("filter", "NETD-INTERNAL", format!("! -s {sub} -o {br} -j DROP")),
            rh("filter", "NETD-INTERNAL", format!("! -d {sub} -i {br} -j DROP")),
        ];
        v.extend(render_network6(n, userland_proxy));
        return v;
    }
    let mut v = render_bridged(br, &sub, n4.gateway_mode, "icmp", n, userland_proxy);
    v.extend(render_network6(n, userland_proxy));
    v
}

/// A non-internal network's rules for one family (usernet-*.md; the ip6tables goldens have the
/// same layout): direct access by gateway mode (`icmp`: the family's ICMP protocol name),
/// conntrack ACCEPT, icc, and Docker's MASQUERADE rules at the head of POSTROUTING.
fn render_bridged(
    br: &str,
    sub: &str,
    mode: GatewayMode,
    icmp: &str,
    n: &NetworkSpec,
    userland_proxy: bool,
) -> Vec<Rule> {
    let mut v = Vec::new();
    match mode {
        // usernet-portmap-natunprot.md: anything may be routed to the sandboxes.
        GatewayMode::NatUnprotected => v.push(r("filter", "NETD", format!("! -i {br} -o {br} -j ACCEPT"))),
        // usernet-portmap-routed.md: ICMP, published container ports (per port), nothing else.
        GatewayMode::Routed => {
            v.push(r("filter", "NETD", format!("-o {br} -p {icmp} -j ACCEPT")));
            v.push(r("filter", "NETD", format!("! -i {br} -o {br} -j DROP")));
        }
        GatewayMode::Nat => v.push(r("filter", "NETD", format!("! -i {br} -o {br} -j DROP"))),
    }
    v.extend([
        r("filter", "NETD-BRIDGE", format!("-o {br} -j NETD")),
        r("filter", "NETD-CT", format!("-o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")),
    ]);
    if n.icc {
        v.push(r("filter", "NETD-FORWARD", format!("-i {br} -j ACCEPT")));
    } else {
        v.push(r("filter", "NETD-FORWARD", format!("-i {br} -o {br} -j DROP")));
        v.push(r("filter", "NETD-FORWARD", format!("-i {br} ! -o {br} -j ACCEPT")));
    }
    if !userland_proxy {
        v.push(rh("nat", "NETD-POSTROUTING", format!("-o {br} -m addrtype --src-type LOCAL -j MASQUERADE")));
    }
    if n.masquerade && mode != GatewayMode::Routed {
        v.push(rh("nat", "NETD-POSTROUTING", format!("-s {sub} ! -o {br} -j MASQUERADE")));
    }
    v
}

/// The ip6tables rules of a dual-stack network (none for an IPv4-only one): the v4 layout with
/// the v6 prefix and the v6 gateway mode (Docker 27+: NAT66 masquerade whatever the prefix).
fn render_network6(n: &NetworkSpec, userland_proxy: bool) -> Vec<Rule> {
    let Some(v6) = &n.ipv6 else { return Vec::new() };
    let br = &n.bridge;
    let sub = v6.cidr();
    if n.internal {
        // moby iptabler `internal=true` ip6tables golden.
        return vec![
            six(r("filter", "NETD-FORWARD", format!("-i {br} -o {br} -j {}", if n.icc { "ACCEPT" } else { "DROP" }))),
            six(rh("filter", "NETD-INTERNAL", format!("! -s {sub} ! -i {br} -o {br} -j DROP"))),
            six(rh("filter", "NETD-INTERNAL", format!("! -d {sub} -i {br} ! -o {br} -j DROP"))),
        ];
    }
    render_bridged(br, &sub.to_string(), v6.gateway_mode, "ipv6-icmp", n, userland_proxy).into_iter().map(six).collect()
}

/// Docker's direct-access protection for a sandbox address in nat mode (each family by its
/// own gateway mode).
pub fn render_endpoint(n: &NetworkSpec, ep: &EndpointSpec) -> Vec<Rule> {
    let mut v = Vec::new();
    if let (Some(n4), Some(ip)) = (&n.ipv4, ep.ip)
        && n4.gateway_mode == GatewayMode::Nat
    {
        v.push(r("raw", "NETD-RAW", format!("-d {ip}/32 ! -i {} -j DROP", n.bridge)));
    }
    if let (Some(v6), Some(ip6)) = (&n.ipv6, ep.ip6)
        && v6.gateway_mode == GatewayMode::Nat
        && !n.internal
    {
        v.push(six(r("raw", "NETD-RAW", format!("-d {ip6}/128 ! -i {} -j DROP", n.bridge))));
    }
    v
}

/// The jump into `NETD-LOOPBACK` (nat OUTPUT to 127.0.0.0/8), installed with the first
/// [`PortMapping::unproxied`] binding under `--userland-proxy`: the daemon's own jump leaves
/// loopback to the proxy, these bindings have none.
pub fn loopback_jump() -> Rule {
    r("nat", "OUTPUT", "-d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j NETD-LOOPBACK")
}

/// One published port (usernet-portmap*.md). A binding without a userland proxy
/// ([`PortMapping::unproxied`], CNI) gets the proxy-less rules under `--userland-proxy` too,
/// plus what the daemon-wide proxy-less setup gives every binding there: loopback DNAT
/// (`NETD-LOOPBACK`) and masquerade of the loopback source onto the bridge.
pub fn render_port(n: &NetworkSpec, p: &PortMapping, userland_proxy: bool) -> Vec<Rule> {
    if p.is_cross_family() {
        // A `[::]` binding of an IPv4-only sandbox: the userland proxy serves it (Docker's
        // iptabler adds no rule for it either).
        return Vec::new();
    }
    if let (std::net::IpAddr::V6(host), std::net::IpAddr::V6(ctr)) = (p.host_ip, p.container_ip) {
        return render_port6(n, p, host, ctr, userland_proxy && !p.unproxied);
    }
    let (std::net::IpAddr::V4(host_ip), std::net::IpAddr::V4(container_ip)) = (p.host_ip, p.container_ip) else {
        return Vec::new();
    };
    let p = &V4Port { host_ip, container_ip, ..V4Port::of(p) };
    let per_port_noproxy = userland_proxy && p.unproxied;
    let userland_proxy = userland_proxy && !p.unproxied;
    let br = &n.bridge;
    let pr = p.proto.as_str();
    let accept = rh(
        "filter",
        "NETD",
        format!("-d {}/32 ! -i {br} -o {br} -p {pr} -m {pr} --dport {} -j ACCEPT", p.container_ip, p.container_port),
    );
    let mut v = Vec::new();
    match n.ipv4.map_or(GatewayMode::Nat, |n4| n4.gateway_mode) {
        // Routed: the container port is opened for direct access; no DNAT.
        GatewayMode::Routed => return vec![accept],
        GatewayMode::NatUnprotected => {}
        GatewayMode::Nat => v.push(accept),
    }
    let dst = if p.host_ip.is_unspecified() { String::new() } else { format!("-d {}/32 ", p.host_ip) };
    let inif = if userland_proxy { format!("! -i {br} ") } else { String::new() };
    let dnat = format!(
        "{dst}{inif}-p {pr} -m {pr} --dport {} -j DNAT --to-destination {}:{}",
        p.host_port, p.container_ip, p.container_port
    );
    v.push(r("nat", "NETD", dnat.clone()));
    if !userland_proxy {
        v.push(r(
            "nat",
            "NETD-POSTROUTING",
            format!(
                "-s {ip}/32 -d {ip}/32 -p {pr} -m {pr} --dport {} -j MASQUERADE",
                p.container_port,
                ip = p.container_ip
            ),
        ));
    }
    if per_port_noproxy && (p.host_ip.is_unspecified() || p.host_ip.is_loopback()) {
        v.push(r("nat", "NETD-LOOPBACK", dnat));
        v.push(r(
            "nat",
            "NETD-POSTROUTING",
            format!(
                "-s 127.0.0.0/8 -d {}/32 -o {br} -p {pr} -m {pr} --dport {} -j MASQUERADE",
                p.container_ip, p.container_port
            ),
        ));
    }
    if p.host_ip.is_loopback() {
        v.push(r(
            "raw",
            "NETD-RAW",
            format!("-d {}/32 ! -i lo -p {pr} -m {pr} --dport {} -j DROP", p.host_ip, p.host_port),
        ));
    }
    v
}

/// A binding's fields with its addresses as IPv4 (the v4 renderer's view).
struct V4Port {
    proto: Proto,
    host_ip: Ipv4Addr,
    host_port: u16,
    container_ip: Ipv4Addr,
    container_port: u16,
    unproxied: bool,
}

impl V4Port {
    fn of(p: &PortMapping) -> Self {
        Self {
            proto: p.proto,
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: p.host_port,
            container_ip: Ipv4Addr::UNSPECIFIED,
            container_port: p.container_port,
            unproxied: p.unproxied,
        }
    }
}

/// One v6 binding to a v6 sandbox address (moby's `setPerPortIptables` for IPv6): the
/// per-port ACCEPT, DNAT with `! -s fe80::/10`, hairpin masquerade without the proxy; no
/// loopback DROP.
fn render_port6(
    n: &NetworkSpec,
    p: &PortMapping,
    host: std::net::Ipv6Addr,
    ctr: std::net::Ipv6Addr,
    userland_proxy: bool,
) -> Vec<Rule> {
    let Some(v6) = &n.ipv6 else { return Vec::new() };
    let br = &n.bridge;
    let pr = p.proto.as_str();
    let accept = rh(
        "filter",
        "NETD",
        format!("-d {ctr}/128 ! -i {br} -o {br} -p {pr} -m {pr} --dport {} -j ACCEPT", p.container_port),
    );
    let mut v = Vec::new();
    match v6.gateway_mode {
        GatewayMode::Routed => return vec![six(accept)],
        GatewayMode::NatUnprotected => {}
        GatewayMode::Nat => v.push(accept),
    }
    let dst = if host.is_unspecified() { String::new() } else { format!("-d {host}/128 ") };
    let inif = if userland_proxy { format!("! -i {br} ") } else { String::new() };
    v.push(r(
        "nat",
        "NETD",
        format!(
            "! -s fe80::/10 {dst}{inif}-p {pr} -m {pr} --dport {} -j DNAT --to-destination [{ctr}]:{}",
            p.host_port, p.container_port
        ),
    ));
    if !userland_proxy {
        v.push(r(
            "nat",
            "NETD-POSTROUTING",
            format!("-s {ctr}/128 -d {ctr}/128 -p {pr} -m {pr} --dport {} -j MASQUERADE", p.container_port),
        ));
    }
    v.into_iter().map(six).collect()
}

/// `--link` exceptions under icc=false (both directions of the exact port), in ip6tables too
/// when both ends have a v6 address (Docker's link rules per family).
pub fn render_link(n: &NetworkSpec, l: &LinkRule) -> Vec<Rule> {
    let br = &n.bridge;
    let pr = l.proto.as_str();
    let pair = |src: &dyn std::fmt::Display, dst: &dyn std::fmt::Display| {
        [
            rh(
                "filter",
                "NETD-FORWARD",
                format!("-s {src} -d {dst} -i {br} -o {br} -p {pr} -m {pr} --dport {} -j ACCEPT", l.port),
            ),
            rh(
                "filter",
                "NETD-FORWARD",
                format!("-s {dst} -d {src} -i {br} -o {br} -p {pr} -m {pr} --sport {} -j ACCEPT", l.port),
            ),
        ]
    };
    let mut v = l.v4().map_or_else(Vec::new, |(s, d)| pair(&s, &d).to_vec());
    if let Some((s6, d6)) = l.v6
        && n.ipv6.is_some()
    {
        v.extend(pair(&s6, &d6).into_iter().map(six));
    }
    v
}

/// An `iptables-restore --noflush` batch: `op` is `-A`/`-I` for adds (per rule) or `-D`.
pub fn batch(rules: &[Rule], delete: bool, declare: &[(&'static str, &'static [&'static str])]) -> String {
    let mut out = String::new();
    for table in ["raw", "mangle", "nat", "filter"] {
        let decl: Vec<&str> =
            declare.iter().filter(|(t, _)| *t == table).flat_map(|(_, c)| c.iter().copied()).collect();
        let rs: Vec<&Rule> = rules.iter().filter(|r| r.table == table).collect();
        if rs.is_empty() && decl.is_empty() {
            continue;
        }
        out.push_str(&format!("*{table}\n"));
        for c in decl {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        // Head insertions go in reverse, so that a group of them keeps its order at the top.
        let mut ordered: Vec<&Rule> = rs.iter().filter(|r| r.head && !delete).rev().copied().collect();
        ordered.extend(rs.iter().filter(|r| !r.head || delete).copied());
        for r in ordered {
            if delete {
                out.push_str(&format!("-D {} {}\n", r.chain, r.spec));
            } else if r.head {
                out.push_str(&format!("-I {} 1 {}\n", r.chain, r.spec));
            } else {
                out.push_str(&format!("-A {} {}\n", r.chain, r.spec));
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

pub struct Iptables {
    restore: &'static str,
    cmd: &'static str,
    /// `ip6tables-restore` / `ip6tables` of the same backend.
    restore6: &'static str,
    cmd6: &'static str,
    /// `--ip6tables`: v6 rules are installed (else v6 networks get none, as Docker).
    ip6tables: bool,
    userland_proxy: bool,
    /// [`loopback_jump`] is in place.
    loopback_jump: bool,
    /// Every rule currently installed (besides the jumps), so removal deletes exactly them and
    /// repeating an add is a no-op.
    installed: BTreeSet<Rule>,
    /// nft backend: the `ip` tables (raw, nat, filter) that did not exist before netd came up;
    /// `netd down` deletes them again when nothing but empty built-in chains remains.
    new_tables: Vec<&'static str>,
    /// The same for the `ip6` family.
    new_tables6: Vec<&'static str>,
    /// netd's bridges and the host's bridges named like Docker's, and the isolation rules
    /// rendered from them (rebuilt as a whole when either changes).
    bridges: BTreeSet<String>,
    docker_bridges: BTreeSet<String>,
    isolation: Vec<Rule>,
}

impl Iptables {
    pub fn new(backend: &str, userland_proxy: bool, ip6tables: bool) -> Self {
        let (restore, cmd, restore6, cmd6) = if backend == "legacy" {
            ("iptables-legacy-restore", "iptables-legacy", "ip6tables-legacy-restore", "ip6tables-legacy")
        } else {
            ("iptables-nft-restore", "iptables-nft", "ip6tables-nft-restore", "ip6tables-nft")
        };
        Self {
            restore,
            cmd,
            restore6,
            cmd6,
            ip6tables,
            userland_proxy,
            loopback_jump: false,
            installed: BTreeSet::new(),
            new_tables: Vec::new(),
            new_tables6: Vec::new(),
            bridges: BTreeSet::new(),
            docker_bridges: BTreeSet::new(),
            isolation: Vec::new(),
        }
    }

    /// Rebuild the mangle isolation chains when the bridges changed (one batch: declaring the
    /// chains flushes them, the rules follow in the same commit).
    fn sync_isolation(&mut self) -> DpResult<()> {
        let rules: Vec<Rule> =
            render_isolation(&self.bridges, &self.docker_bridges).into_iter().filter(|r| self.wants(r)).collect();
        if rules == self.isolation {
            return Ok(());
        }
        let (v4, v6): (Vec<Rule>, Vec<Rule>) = rules.iter().cloned().partition(|r| !r.v6);
        self.run_restore(&batch(&v4, false, &[("mangle", &MANGLE_CHAINS)]))?;
        if self.ip6tables {
            self.run_restore6(&batch(&v6, false, &[("mangle", &MANGLE_CHAINS)]))?;
        }
        self.isolation = rules;
        Ok(())
    }

    /// Whether a rule of this family is installed at all (`--ip6tables=false`: no v6 rules).
    fn wants(&self, r: &Rule) -> bool {
        !r.v6 || self.ip6tables
    }

    /// Apply an ip6tables-restore batch.
    fn run_restore6(&self, input: &str) -> DpResult<()> {
        self.run_restore_with(self.restore6, input)
    }

    /// Apply the rules of each family with its own restore (one batch per family).
    fn run_rules(&self, rules: &[Rule], delete: bool) -> DpResult<()> {
        let (v4, v6): (Vec<Rule>, Vec<Rule>) = rules.iter().cloned().partition(|r| !r.v6);
        if !v4.is_empty() {
            self.run_restore(&batch(&v4, delete, &[]))?;
        }
        if !v6.is_empty() {
            self.run_restore6(&batch(&v6, delete, &[]))?;
        }
        Ok(())
    }

    fn run_restore(&self, input: &str) -> DpResult<()> {
        self.run_restore_with(self.restore, input)
    }

    fn run_restore_with(&self, restore: &'static str, input: &str) -> DpResult<()> {
        let mut child = Command::new(restore)
            .args(["--noflush", "--wait"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| DataplaneError::new(B, format!("running {restore}"), e))?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .map_err(|e| DataplaneError::new(B, "writing rules", e))?;
        let out = child.wait_with_output().map_err(|e| DataplaneError::new(B, "waiting", e))?;
        if !out.status.success() {
            return Err(DataplaneError::new(
                B,
                format!("{restore} failed for:\n{input}"),
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
        Ok(())
    }

    fn add(&mut self, rules: Vec<Rule>) -> DpResult<()> {
        let new: Vec<Rule> = rules.into_iter().filter(|r| self.wants(r) && !self.installed.contains(r)).collect();
        if new.is_empty() {
            return Ok(());
        }
        self.run_rules(&new, false)?;
        self.installed.extend(new);
        Ok(())
    }

    fn remove(&mut self, rules: Vec<Rule>) -> DpResult<()> {
        let old: Vec<Rule> = rules.into_iter().filter(|r| self.installed.contains(r)).collect();
        if old.is_empty() {
            return Ok(());
        }
        self.run_rules(&old, true)?;
        for r in old {
            self.installed.remove(&r);
        }
        Ok(())
    }

    /// Whether a jump rule exists (`iptables -C`).
    fn has(&self, rule: &Rule) -> bool {
        let args: Vec<String> =
            ["-t", rule.table, "-C", rule.chain].iter().map(|s| s.to_string()).chain(shell_words(&rule.spec)).collect();
        let cmd = if rule.v6 { self.cmd6 } else { self.cmd };
        Command::new(cmd).args(["--wait"]).args(&args).output().is_ok_and(|o| o.status.success())
    }

    fn remove_jumps(&self) {
        for j in render_jumps(true).into_iter().chain(render_jumps(false)).chain([loopback_jump()]) {
            if !self.wants(&j) {
                continue;
            }
            // Bounded: a jump that cannot be deleted must not hang the daemon.
            for _ in 0..16 {
                if !self.has(&j) || self.run_rules(std::slice::from_ref(&j), true).is_err() {
                    break;
                }
            }
        }
    }
}

fn shell_words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

impl Dataplane for Iptables {
    fn backend(&self) -> Backend {
        Backend::Iptables
    }

    fn ipv6(&self) -> bool {
        true
    }

    fn init(&mut self, host: &HostInfo) -> DpResult<()> {
        if self.cmd == "iptables-nft" {
            let existing = nft_tables("ip");
            // A previous daemon of ours may have left them: only record what is really absent.
            self.new_tables =
                ["raw", "mangle", "nat", "filter"].into_iter().filter(|t| !existing.contains(*t)).collect();
            if self.ip6tables {
                let existing = nft_tables("ip6");
                self.new_tables6 =
                    ["raw", "mangle", "nat", "filter"].into_iter().filter(|t| !existing.contains(*t)).collect();
            }
        }
        // Conntrack stays registered through the rebuild below (see CT_HOLD_CHAIN): established
        // flows a previous daemon published keep being translated while the chains are empty.
        self.run_restore(&ct_hold_batch())?;
        if self.ip6tables {
            self.run_restore6(&ct_hold_batch())?;
        }
        // Whatever a previous daemon left: our jumps first, then our chains are (re)declared,
        // which flushes them, and rebuilt from the replayed state.
        self.remove_jumps();
        self.loopback_jump = false;
        let declare: [(&'static str, &'static [&'static str]); 4] =
            [("filter", &FILTER_CHAINS), ("nat", &NAT_CHAINS), ("raw", &RAW_CHAINS), ("mangle", &MANGLE_CHAINS)];
        let (base4, base6): (Vec<Rule>, Vec<Rule>) = render_base().into_iter().partition(|r| !r.v6);
        self.run_restore(&batch(&base4, false, &declare))?;
        self.installed = base4.into_iter().collect();
        if self.ip6tables {
            self.run_restore6(&batch(&base6, false, &declare))?;
            self.installed.extend(base6);
        }
        let jumps: Vec<Rule> = render_jumps(self.userland_proxy).into_iter().filter(|r| self.wants(r)).collect();
        self.run_rules(&jumps, false)?;
        // Docker sets the FORWARD policy to DROP when it enables forwarding (both families).
        self.run_restore("*filter\n:FORWARD DROP [0:0]\nCOMMIT\n")?;
        if self.ip6tables {
            self.run_restore6("*filter\n:FORWARD DROP [0:0]\nCOMMIT\n")?;
        }
        self.docker_bridges = host.docker_bridges.iter().map(|b| b.name.clone()).collect();
        Ok(())
    }

    fn host_changed(&mut self, host: &HostInfo) -> DpResult<()> {
        self.docker_bridges = host.docker_bridges.iter().map(|b| b.name.clone()).collect();
        self.sync_isolation()
    }

    fn network_added(&mut self, net: &NetworkSpec) -> DpResult<()> {
        if !self.userland_proxy {
            // Docker's --userland-proxy=false: 127.0.0.1 may be DNATed onto the bridge.
            let p = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", net.bridge);
            std::fs::write(&p, "1").map_err(|e| DataplaneError::new(B, p, e))?;
        }
        self.add(render_network(net, self.userland_proxy))?;
        self.bridges.insert(net.bridge.clone());
        self.sync_isolation()
    }

    fn network_removed(&mut self, net: &NetworkSpec) -> DpResult<()> {
        self.remove(render_network(net, self.userland_proxy))?;
        self.bridges.remove(&net.bridge);
        self.sync_isolation()
    }

    fn endpoint_added(&mut self, net: &NetworkSpec, ep: &EndpointSpec) -> DpResult<()> {
        self.add(render_endpoint(net, ep))
    }

    fn endpoint_removed(&mut self, net: &NetworkSpec, ep: &EndpointSpec) -> DpResult<()> {
        self.remove(render_endpoint(net, ep))
    }

    fn ports_added(&mut self, net: &NetworkSpec, ports: &[PortMapping]) -> DpResult<()> {
        if self.userland_proxy && ports.iter().any(|p| p.unproxied) {
            // What --userland-proxy=false sets for every bridge, for this one's proxy-less
            // bindings: 127.0.0.1 may be DNATed onto the bridge, through the loopback jump.
            let p = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", net.bridge);
            std::fs::write(&p, "1").map_err(|e| DataplaneError::new(B, p, e))?;
            if !self.loopback_jump {
                self.run_restore(&batch(&[loopback_jump()], false, &[]))?;
                self.loopback_jump = true;
            }
        }
        let rules = ports.iter().flat_map(|p| render_port(net, p, self.userland_proxy)).collect();
        self.add(rules)?;
        // A UDP port (re)published: drop conntrack entries of the host port, so no stale
        // translation survives (flush by the *host* port, where moby#53384 used the wrong one).
        flush_udp_host_ports(ports);
        Ok(())
    }

    fn ports_removed(&mut self, net: &NetworkSpec, ports: &[PortMapping]) -> DpResult<()> {
        let rules = ports.iter().flat_map(|p| render_port(net, p, self.userland_proxy)).collect();
        self.remove(rules)?;
        flush_udp_host_ports(ports);
        Ok(())
    }

    fn missing(&mut self, net: &NetworkSpec, ep: &EndpointSpec, ports: &[PortMapping]) -> DpResult<Vec<String>> {
        let mut want = render_network(net, self.userland_proxy);
        want.extend(render_endpoint(net, ep));
        if self.userland_proxy && ports.iter().any(|p| p.unproxied) {
            want.push(loopback_jump());
        }
        want.extend(ports.iter().flat_map(|p| render_port(net, p, self.userland_proxy)));
        let mut seen = BTreeSet::new();
        Ok(want
            .into_iter()
            .filter(|r| self.wants(r) && seen.insert(r.clone()) && !self.has(r))
            .map(|r| {
                format!(
                    "rule missing in the {}{} table: -A {} {}",
                    if r.v6 { "ip6 " } else { "" },
                    r.table,
                    r.chain,
                    r.spec
                )
            })
            .collect())
    }

    fn links_added(&mut self, net: &NetworkSpec, links: &[LinkRule]) -> DpResult<()> {
        self.add(links.iter().flat_map(|l| render_link(net, l)).collect())
    }

    fn links_removed(&mut self, net: &NetworkSpec, links: &[LinkRule]) -> DpResult<()> {
        self.remove(links.iter().flat_map(|l| render_link(net, l)).collect())
    }

    fn stats(&self) -> DpResult<Stats> {
        Ok(Stats::default())
    }

    fn shutdown(&mut self, keep: bool) -> DpResult<()> {
        if keep {
            return Ok(());
        }
        self.remove_jumps();
        self.loopback_jump = false;
        let mut input = String::new();
        for (table, chains) in [
            ("raw", &RAW_CHAINS[..]),
            ("mangle", &MANGLE_CHAINS[..]),
            ("nat", &NAT_CHAINS[..]),
            ("filter", &FILTER_CHAINS[..]),
        ] {
            input.push_str(&format!("*{table}\n"));
            for c in chains {
                input.push_str(&format!(":{c} - [0:0]\n"));
            }
            for c in chains {
                input.push_str(&format!("-X {c}\n"));
            }
            if table == "filter" {
                // Last, with everything else: nothing is left to keep translated.
                input.push_str(&format!(":{CT_HOLD_CHAIN} - [0:0]\n-X {CT_HOLD_CHAIN}\n"));
            }
            input.push_str("COMMIT\n");
        }
        self.run_restore(&input)?;
        self.run_restore("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")?;
        if self.ip6tables {
            self.run_restore6(&input)?;
            self.run_restore6("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")?;
        }
        self.installed.clear();
        self.isolation.clear();
        // Tables iptables-nft created for us go too, if nobody else put a rule in them.
        for (family, cmd, tables) in [
            ("ip", self.cmd, std::mem::take(&mut self.new_tables)),
            ("ip6", self.cmd6, std::mem::take(&mut self.new_tables6)),
        ] {
            for t in tables {
                let rules = Command::new(cmd).args(["--wait", "-t", t, "-S"]).output();
                let only_policies = rules.is_ok_and(|o| {
                    o.status.success()
                        && String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .all(|l| l.starts_with("-P ") && l.ends_with(" ACCEPT"))
                });
                if only_policies {
                    let _ = Command::new("nft").args(["delete", "table", family, t]).output();
                }
            }
        }
        Ok(())
    }
}

/// Delete the kernel's conntrack entries of UDP flows to these host ports (over ctnetlink, one
/// dump for all of them; no `conntrack` binary needed). A failure is logged, not fatal: the
/// rules are in place, only an old flow may keep its stale translation until it expires.
fn flush_udp_host_ports(ports: &[PortMapping]) {
    let hp: std::collections::HashSet<u16> =
        ports.iter().filter(|p| p.proto == Proto::Udp).map(|p| p.host_port).collect();
    if hp.is_empty() {
        return;
    }
    match crate::netlink::conntrack::delete_where(|t| t.proto == 17 && hp.contains(&t.dport)) {
        Ok(n) => tracing::debug!(entries = n, "conntrack: flushed UDP flows of republished host ports"),
        Err(e) => tracing::warn!(error = %e, "conntrack: flushing UDP flows of host ports"),
    }
}

/// Names of the nftables tables of a family (`ip`, `ip6`) of this namespace (`nft -j`, not
/// scraped text).
fn nft_tables(family: &str) -> std::collections::HashSet<String> {
    Command::new("nft")
        .args(["-j", "list", "tables", family])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| nft_table_names(&o.stdout))
        .unwrap_or_default()
}

/// Table names of `nft -j list tables` output: `{"nftables": [{"metainfo": ...}, {"table":
/// {"family": "ip", "name": "nat", ...}}, ...]}`.
fn nft_table_names(json: &[u8]) -> std::collections::HashSet<String> {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["table"]["name"].as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_json_table_names() {
        let out = br#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "nat", "handle": 1}}, {"table": {"family": "ip", "name": "filter", "handle": 2}}]}"#;
        let names = nft_table_names(out);
        assert_eq!(names.len(), 2);
        assert!(names.contains("nat") && names.contains("filter"));
        assert!(nft_table_names(b"garbage").is_empty());
    }

    fn net(icc: bool, internal: bool) -> NetworkSpec {
        NetworkSpec {
            index: 2,
            id: "x".into(),
            name: "bridge1".into(),
            bridge: "bridge1".into(),
            bridge_ifindex: 0,
            ipv4: Some(NetworkSpecV4 {
                subnet: Ipv4Addr::new(192, 0, 2, 0),
                prefix_len: 24,
                gateway: Ipv4Addr::new(192, 0, 2, 1),
                gateway_mode: GatewayMode::Nat,
            }),
            icc,
            masquerade: !internal,
            internal,
            host_binding_ipv4: Ipv4Addr::UNSPECIFIED,
            mtu: 1500,
            ipv6: None,
        }
    }

    fn port(host_ip: Ipv4Addr) -> PortMapping {
        PortMapping {
            proto: Proto::Tcp,
            host_ip: host_ip.into(),
            host_port: 8080,
            container_ip: Ipv4Addr::new(192, 0, 2, 2).into(),
            container_port: 80,
            network_index: 2,
            unproxied: false,
        }
    }

    /// The IPv4 rules, as `[table] -A CHAIN spec`.
    fn lines(rules: &[Rule]) -> Vec<String> {
        rules.iter().filter(|r| !r.v6).map(|r| format!("[{}] -A {} {}", r.table, r.chain, r.spec)).collect()
    }

    /// The IPv6 rules, likewise.
    fn lines6(rules: &[Rule]) -> Vec<String> {
        rules.iter().filter(|r| r.v6).map(|r| format!("[{}] -A {} {}", r.table, r.chain, r.spec)).collect()
    }

    /// moby integration/network/bridge/iptablesdoc/generated/usernet-portmap.md, with Docker's
    /// chain names mapped to netd's (DOCKER -> NETD, ...; POSTROUTING -> NETD-POSTROUTING and
    /// raw PREROUTING -> NETD-RAW behind one jump each).
    #[test]
    fn usernet_portmap_matches_dockers_rules() {
        let n = net(true, false);
        let mut got = lines(&render_network(&n, true));
        got.extend(lines(&render_port(&n, &port(Ipv4Addr::UNSPECIFIED), true)));
        let ep = EndpointSpec {
            container_id: "c".into(),
            network_index: 2,
            host_veth: "v".into(),
            host_ifindex: 0,
            ip: Some(Ipv4Addr::new(192, 0, 2, 2)),
            ip6: None,
            mac: [0; 6],
        };
        got.extend(lines(&render_endpoint(&n, &ep)));
        let want = [
            "[filter] -A NETD ! -i bridge1 -o bridge1 -j DROP",
            "[filter] -A NETD-BRIDGE -o bridge1 -j NETD",
            "[filter] -A NETD-CT -o bridge1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "[filter] -A NETD-FORWARD -i bridge1 -j ACCEPT",
            "[nat] -A NETD-POSTROUTING -s 192.0.2.0/24 ! -o bridge1 -j MASQUERADE",
            "[filter] -A NETD -d 192.0.2.2/32 ! -i bridge1 -o bridge1 -p tcp -m tcp --dport 80 -j ACCEPT",
            "[nat] -A NETD ! -i bridge1 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80",
            "[raw] -A NETD-RAW -d 192.0.2.2/32 ! -i bridge1 -j DROP",
        ];
        assert_eq!(got, want);
    }

    /// A binding without a proxy (CNI) under `--userland-proxy`: the proxy-less DNAT (also from
    /// the bridge, for hairpin) and hairpin masquerade, plus loopback DNAT and its masquerade.
    #[test]
    fn unproxied_binding_under_the_proxy_gets_loopback_and_hairpin_rules() {
        let n = net(true, false);
        let p = PortMapping { unproxied: true, ..port(Ipv4Addr::UNSPECIFIED) };
        let got = lines(&render_port(&n, &p, true));
        let want = [
            "[filter] -A NETD -d 192.0.2.2/32 ! -i bridge1 -o bridge1 -p tcp -m tcp --dport 80 -j ACCEPT",
            "[nat] -A NETD -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80",
            "[nat] -A NETD-POSTROUTING -s 192.0.2.2/32 -d 192.0.2.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE",
            "[nat] -A NETD-LOOPBACK -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80",
            "[nat] -A NETD-POSTROUTING -s 127.0.0.0/8 -d 192.0.2.2/32 -o bridge1 -p tcp -m tcp --dport 80 -j MASQUERADE",
        ];
        assert_eq!(got, want);
        // A binding on another host address has no loopback rules; without the proxy
        // daemon-wide the binding renders as any other.
        let other = PortMapping { unproxied: true, ..port(Ipv4Addr::new(198, 51, 100, 1)) };
        assert!(!lines(&render_port(&n, &other, true)).iter().any(|l| l.contains("LOOPBACK") || l.contains("127.")));
        assert_eq!(render_port(&n, &p, false), render_port(&n, &port(Ipv4Addr::UNSPECIFIED), false));
    }

    /// usernet-portmap-noicc.md, usernet-internal.md, usernet-portmap-lo.md,
    /// usernet-portmap-noproxy.md.
    #[test]
    fn noicc_internal_loopback_and_noproxy_match_docker() {
        let noicc = lines(&render_network(&net(false, false), true));
        assert!(noicc.contains(&"[filter] -A NETD-FORWARD -i bridge1 -o bridge1 -j DROP".to_string()));
        assert!(noicc.contains(&"[filter] -A NETD-FORWARD -i bridge1 ! -o bridge1 -j ACCEPT".to_string()));
        let internal = lines(&render_network(&net(false, true), true));
        assert!(internal.contains(&"[filter] -A NETD-INTERNAL ! -s 192.0.2.0/24 -o bridge1 -j DROP".to_string()));
        assert!(internal.contains(&"[filter] -A NETD-INTERNAL ! -d 192.0.2.0/24 -i bridge1 -j DROP".to_string()));
        assert!(!internal.iter().any(|l| l.contains("MASQUERADE")), "internal networks are not masqueraded");
        let lo = lines(&render_port(&net(true, false), &port(Ipv4Addr::LOCALHOST), true));
        assert!(lo.contains(&"[nat] -A NETD -d 127.0.0.1/32 ! -i bridge1 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80".to_string()));
        assert!(
            lo.contains(&"[raw] -A NETD-RAW -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 8080 -j DROP".to_string())
        );
        let noproxy = lines(&render_port(&net(true, false), &port(Ipv4Addr::UNSPECIFIED), false));
        assert!(
            noproxy.contains(
                &"[nat] -A NETD -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.0.2.2:80".to_string()
            )
        );
        assert!(
            noproxy.contains(
                &"[nat] -A NETD-POSTROUTING -s 192.0.2.2/32 -d 192.0.2.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE"
                    .to_string()
            )
        );
        let jumps = lines(&render_jumps(false));
        assert!(jumps.contains(&"[nat] -A OUTPUT -m addrtype --dst-type LOCAL -j NETD".to_string()));
        let jumps = lines(&render_jumps(true));
        assert!(jumps.contains(&"[nat] -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j NETD".to_string()));
    }

    /// Apply batches to an empty model of the tables, as iptables-restore would.
    fn simulate(batches: &[String]) -> std::collections::BTreeMap<(String, String), Vec<String>> {
        let mut t: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
        for b in batches {
            let mut table = String::new();
            for line in b.lines() {
                if let Some(x) = line.strip_prefix('*') {
                    table = x.to_string();
                } else if let Some(rest) = line.strip_prefix("-A ") {
                    let (chain, spec) = rest.split_once(' ').unwrap();
                    t.entry((table.clone(), chain.into())).or_default().push(spec.into());
                } else if let Some(rest) = line.strip_prefix("-I ") {
                    let mut it = rest.splitn(3, ' ');
                    let (chain, _pos, spec) = (it.next().unwrap(), it.next(), it.next().unwrap());
                    t.entry((table.clone(), chain.into())).or_default().insert(0, spec.into());
                }
            }
        }
        t
    }

    /// A golden file (Docker's rules) with Docker's names mapped to netd's: DOCKER* chains to
    /// NETD*, and the rules Docker keeps in nat POSTROUTING / raw PREROUTING into netd's own
    /// NETD-POSTROUTING / NETD-RAW chains behind one jump each.
    fn golden(text: &str) -> std::collections::BTreeMap<(String, String), Vec<String>> {
        let mut t: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
        let mut table = String::new();
        for line in text.lines() {
            if let Some(x) = line.strip_prefix('*') {
                table = x.to_string();
                continue;
            }
            let Some(rest) = line.strip_prefix("-A ") else { continue };
            let rest = rest.replace("DOCKER", "NETD");
            let (mut chain, spec) = rest.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
            if table == "nat" && chain == "POSTROUTING" {
                chain = "NETD-POSTROUTING".into();
            }
            if table == "raw" && chain == "PREROUTING" {
                chain = "NETD-RAW".into();
            }
            t.entry((table.clone(), chain)).or_default().push(spec);
        }
        if text.contains("*nat") {
            t.entry(("nat".into(), "POSTROUTING".into())).or_default().push("-j NETD-POSTROUTING".into());
        }
        if text.contains("*raw") {
            t.entry(("raw".into(), "PREROUTING".into())).or_default().push("-j NETD-RAW".into());
        }
        t
    }

    /// `n` with its v4 gateway mode set.
    fn with_mode(n: NetworkSpec, mode: GatewayMode) -> NetworkSpec {
        NetworkSpec { ipv4: n.ipv4.map(|v| NetworkSpecV4 { gateway_mode: mode, ..v }), ..n }
    }

    fn docker0() -> NetworkSpec {
        NetworkSpec {
            index: 1,
            name: "bridge".into(),
            bridge: "docker0".into(),
            ipv4: Some(NetworkSpecV4 {
                subnet: Ipv4Addr::new(172, 17, 0, 0),
                prefix_len: 16,
                gateway: Ipv4Addr::new(172, 17, 0, 1),
                gateway_mode: GatewayMode::Nat,
            }),
            ..net(true, false)
        }
    }

    /// The IPv4 batches netd applies for a scenario: init, the networks, the endpoint, the port.
    fn scenario(nets: &[NetworkSpec], port_on: Option<(&NetworkSpec, PortMapping)>, proxy: bool) -> Vec<String> {
        scenario_family(nets, port_on, proxy, false)
    }

    /// The batches of one family (ip6tables: `v6`).
    fn scenario_family(
        nets: &[NetworkSpec],
        port_on: Option<(&NetworkSpec, PortMapping)>,
        proxy: bool,
        v6: bool,
    ) -> Vec<String> {
        let fam = |rs: Vec<Rule>| -> Vec<Rule> { rs.into_iter().filter(|r| r.v6 == v6).collect() };
        let mut b = vec![batch(&fam(render_base()), false, &[]), batch(&fam(render_jumps(proxy)), false, &[])];
        for n in nets {
            b.push(batch(&fam(render_network(n, proxy)), false, &[]));
        }
        if let Some((n, p)) = port_on {
            let ep = EndpointSpec {
                container_id: "c1".into(),
                network_index: n.index,
                host_veth: "veth0".into(),
                host_ifindex: 0,
                ip: Some(match p.container_ip {
                    std::net::IpAddr::V4(a) => a,
                    std::net::IpAddr::V6(_) => Ipv4Addr::new(192, 0, 2, 2),
                }),
                ip6: match p.container_ip {
                    std::net::IpAddr::V6(a) => Some(a),
                    std::net::IpAddr::V4(_) => None,
                },
                mac: [0; 6],
            };
            b.push(batch(&fam(render_endpoint(n, &ep)), false, &[]));
            b.push(batch(&fam(render_port(n, &p, proxy)), false, &[]));
        }
        b
    }

    fn assert_golden(name: &str, text: &str, batches: &[String]) {
        let got = simulate(batches);
        let want = golden(text);
        for (k, v) in &want {
            assert_eq!(got.get(k), Some(v), "{name}: chain {k:?}");
        }
        // Only the tables the document shows (some show filter and nat only).
        for (k, v) in &got {
            if !v.is_empty() && text.contains(&format!("*{}", k.0)) {
                assert_eq!(want.get(k), Some(v), "{name}: netd has extra rules in {k:?}");
            }
        }
    }

    #[test]
    fn golden_new_daemon() {
        assert_golden("new-daemon", include_str!("testdata/new-daemon.golden"), &scenario(&[docker0()], None, true));
    }

    #[test]
    fn golden_usernet_portmap() {
        let b1 = net(true, false);
        assert_golden(
            "usernet-portmap",
            include_str!("testdata/usernet-portmap.golden"),
            &scenario(&[docker0(), b1.clone()], Some((&b1, port(Ipv4Addr::UNSPECIFIED))), true),
        );
    }

    #[test]
    fn golden_usernet_portmap_lo() {
        let b1 = net(true, false);
        assert_golden(
            "usernet-portmap-lo",
            include_str!("testdata/usernet-portmap-lo.golden"),
            &scenario(&[docker0(), b1.clone()], Some((&b1, port(Ipv4Addr::LOCALHOST))), true),
        );
    }

    #[test]
    fn golden_usernet_portmap_noicc() {
        let b1 = net(false, false);
        assert_golden(
            "usernet-portmap-noicc",
            include_str!("testdata/usernet-portmap-noicc.golden"),
            &scenario(&[docker0(), b1.clone()], Some((&b1, port(Ipv4Addr::UNSPECIFIED))), true),
        );
    }

    #[test]
    fn golden_usernet_portmap_noproxy() {
        let b1 = net(true, false);
        assert_golden(
            "usernet-portmap-noproxy",
            include_str!("testdata/usernet-portmap-noproxy.golden"),
            &scenario(&[docker0(), b1.clone()], Some((&b1, port(Ipv4Addr::UNSPECIFIED))), false),
        );
    }

    #[test]
    fn golden_usernet_internal() {
        let icc = NetworkSpec { name: "bridgeICC".into(), bridge: "bridgeICC".into(), ..net(true, true) };
        let noicc = NetworkSpec {
            name: "bridgeNoICC".into(),
            bridge: "bridgeNoICC".into(),
            ipv4: Some(NetworkSpecV4 { subnet: Ipv4Addr::new(198, 51, 100, 0), ..net(false, true).ipv4.unwrap() }),
            ..net(false, true)
        };
        assert_golden(
            "usernet-internal",
            include_str!("testdata/usernet-internal.golden"),
            &scenario(&[docker0(), icc, noicc], None, true),
        );
    }

    #[test]
    fn golden_usernet_portmap_routed_and_natunprot() {
        let routed = with_mode(net(true, false), GatewayMode::Routed);
        assert_golden(
            "usernet-portmap-routed",
            include_str!("testdata/usernet-portmap-routed.golden"),
            &scenario(&[docker0(), routed.clone()], Some((&routed, port(Ipv4Addr::UNSPECIFIED))), true),
        );
        let unprot = with_mode(net(true, false), GatewayMode::NatUnprotected);
        assert_golden(
            "usernet-portmap-natunprot",
            include_str!("testdata/usernet-portmap-natunprot.golden"),
            &scenario(&[docker0(), unprot.clone()], Some((&unprot, port(Ipv4Addr::UNSPECIFIED))), true),
        );
    }

    /// The dual-stack network of moby's `iptabler` unit test (`br-dummy`, fd49:efd7:54aa::/64).
    fn dummy6(icc: bool, internal: bool, mode: GatewayMode) -> NetworkSpec {
        NetworkSpec {
            name: "dummy".into(),
            bridge: "br-dummy".into(),
            ipv4: Some(NetworkSpecV4 {
                subnet: Ipv4Addr::new(192, 168, 0, 0),
                prefix_len: 24,
                gateway: Ipv4Addr::new(192, 168, 0, 1),
                gateway_mode: mode,
            }),
            masquerade: mode != GatewayMode::Routed && !internal,
            ipv6: Some(NetworkSpecV6 {
                subnet: "fd49:efd7:54aa::".parse().unwrap(),
                prefix_len: 64,
                gateway: "fd49:efd7:54aa::ffff".parse().unwrap(),
                gateway_mode: mode,
            }),
            ..net(icc, internal)
        }
    }

    fn port6(host: &str) -> PortMapping {
        PortMapping {
            proto: Proto::Tcp,
            host_ip: host.parse().unwrap(),
            host_port: 8080,
            container_ip: "fd49:efd7:54aa::1".parse().unwrap(),
            container_port: 80,
            network_index: 2,
            unproxied: false,
        }
    }

    /// moby's iptabler ip6tables goldens (Docker 27+'s v6 rules) against netd's v6 batches,
    /// for the tables `tables`; filter FORWARD is left out (netd also jumps to NETD-USER there).
    fn assert_golden6(name: &str, text: &str, batches: &[String], tables: &[&str]) {
        let keep = |k: &(String, String)| tables.contains(&k.0.as_str()) && !(k.0 == "filter" && k.1 == "FORWARD");
        let got: std::collections::BTreeMap<_, _> =
            simulate(batches).into_iter().filter(|(k, v)| keep(k) && !v.is_empty()).collect();
        let want: std::collections::BTreeMap<_, _> = golden(text).into_iter().filter(|(k, _)| keep(k)).collect();
        assert_eq!(got, want, "{name}");
    }

    #[test]
    fn golden_ip6_usernet_portmap_proxy_noproxy_and_lo() {
        let n = dummy6(true, false, GatewayMode::Nat);
        assert_golden6(
            "ip6 usernet-portmap",
            include_str!("testdata/ip6-usernet-portmap.golden"),
            &scenario_family(std::slice::from_ref(&n), Some((&n, port6("::"))), true, true),
            &["raw", "filter", "nat"],
        );
        assert_golden6(
            "ip6 usernet-portmap-noproxy",
            include_str!("testdata/ip6-usernet-portmap-noproxy.golden"),
            &scenario_family(std::slice::from_ref(&n), Some((&n, port6("::"))), false, true),
            &["raw", "filter", "nat"],
        );
        assert_golden6(
            "ip6 usernet-portmap-lo",
            include_str!("testdata/ip6-usernet-portmap-lo.golden"),
            &scenario_family(std::slice::from_ref(&n), Some((&n, port6("::1"))), true, true),
            &["raw", "filter", "nat"],
        );
        // No IPv4 rule names a v6 address, and no v6 rule a v4 one.
        let all = render_network(&n, true);
        assert!(lines(&all).iter().all(|l| !l.contains("fd49")), "{:?}", lines(&all));
        assert!(lines6(&all).iter().all(|l| !l.contains("192.168.")), "{:?}", lines6(&all));
    }

    #[test]
    fn golden_ip6_routed_and_internal() {
        let n = dummy6(false, false, GatewayMode::Routed);
        // The unit test maps a host port in routed mode too (a DNAT netd never needs there):
        // the filter table only.
        assert_golden6(
            "ip6 routed noicc",
            include_str!("testdata/ip6-usernet-portmap-routed-noicc.golden"),
            &scenario_family(std::slice::from_ref(&n), Some((&n, port6("::"))), true, true),
            &["raw", "filter"],
        );
        let n = dummy6(true, true, GatewayMode::Nat);
        assert_golden6(
            "ip6 internal",
            include_str!("testdata/ip6-usernet-internal.golden"),
            &scenario_family(&[n], None, true, true),
            &["filter", "nat"],
        );
    }

    /// `--link` under icc=false on a dual-stack bridge: the exact port both ways, per family.
    #[test]
    fn links_get_their_v6_pair_on_a_dual_stack_network() {
        let n = dummy6(false, false, GatewayMode::Nat);
        let mut l = LinkRule {
            network_index: 2,
            src: Some(Ipv4Addr::new(192, 168, 0, 3)),
            dst: Some(Ipv4Addr::new(192, 168, 0, 2)),
            proto: Proto::Tcp,
            port: 80,
            v6: Some(("fd49:efd7:54aa::3".parse().unwrap(), "fd49:efd7:54aa::2".parse().unwrap())),
        };
        let got = lines6(&render_link(&n, &l));
        assert_eq!(
            got,
            [
                "[filter] -A NETD-FORWARD -s fd49:efd7:54aa::3 -d fd49:efd7:54aa::2 -i br-dummy -o br-dummy -p tcp -m tcp --dport 80 -j ACCEPT",
                "[filter] -A NETD-FORWARD -s fd49:efd7:54aa::2 -d fd49:efd7:54aa::3 -i br-dummy -o br-dummy -p tcp -m tcp --sport 80 -j ACCEPT",
            ]
        );
        assert_eq!(lines(&render_link(&n, &l)).len(), 2);
        l.v6 = None;
        assert!(lines6(&render_link(&n, &l)).is_empty());
    }

    /// `--ip6tables=false`: no ip6tables rule is installed or expected (Docker's flag).
    #[test]
    fn ip6tables_off_keeps_v4_rules_only() {
        let off = Iptables::new("nft", true, false);
        let on = Iptables::new("nft", true, true);
        let rules = render_network(&dummy6(true, false, GatewayMode::Nat), true);
        assert!(rules.iter().any(|r| r.v6) && rules.iter().any(|r| !r.v6));
        assert!(rules.iter().all(|r| off.wants(r) != r.v6));
        assert!(rules.iter().all(|r| on.wants(r)));
    }

    /// A `[::]` binding of an IPv4-only sandbox is the proxy's: no rule in either family.
    #[test]
    fn cross_family_binding_has_no_rules() {
        let n = net(true, false);
        let p = PortMapping { host_ip: "::".parse().unwrap(), ..port(Ipv4Addr::UNSPECIFIED) };
        assert!(p.is_cross_family());
        assert!(render_port(&n, &p, true).is_empty());
        // An IPv4-only network renders no ip6tables rule at all; the jumps exist in both.
        assert!(lines6(&render_network(&n, true)).is_empty());
        assert!(
            lines6(&render_jumps(true))
                .contains(&"[nat] -A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j NETD".to_string())
        );
    }

    /// Docker's own bridges vs netd's: both directions drop, nothing between two netd bridges
    /// or two Docker bridges, nothing at all without a Docker bridge; a netd bridge named like
    /// Docker's (`br-<id>`) is netd's.
    #[test]
    fn isolation_from_dockers_bridges() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();
        let netd = set(&["netd0", "br-aaaaaaaaaaaa"]);
        assert!(render_isolation(&netd, &set(&["br-aaaaaaaaaaaa"])).is_empty());
        assert!(render_isolation(&set(&[]), &set(&["docker0"])).is_empty());
        let got = lines(&render_isolation(&netd, &set(&["docker0", "br-aaaaaaaaaaaa"])));
        assert_eq!(
            got,
            [
                "[mangle] -A NETD-ISOLATION-STAGE-1 -m conntrack --ctstate DNAT -j RETURN",
                "[mangle] -A NETD-ISOLATION-STAGE-1 -i br-aaaaaaaaaaaa -j NETD-ISOLATION-STAGE-2",
                "[mangle] -A NETD-ISOLATION-STAGE-1 -i netd0 -j NETD-ISOLATION-STAGE-2",
                "[mangle] -A NETD-ISOLATION-STAGE-1 -i docker0 -j NETD-ISOLATION-STAGE-3",
                "[mangle] -A NETD-ISOLATION-STAGE-2 -o docker0 -j DROP",
                "[mangle] -A NETD-ISOLATION-STAGE-3 -o br-aaaaaaaaaaaa -j DROP",
                "[mangle] -A NETD-ISOLATION-STAGE-3 -o netd0 -j DROP",
            ]
        );
        let b = batch(&render_isolation(&netd, &set(&["docker0"])), false, &[("mangle", &MANGLE_CHAINS)]);
        assert!(b.starts_with("*mangle\n:NETD-ISOLATION-STAGE-1 - [0:0]\n"), "{b}");
        assert!(lines(&render_jumps(true)).contains(&"[mangle] -A FORWARD -j NETD-ISOLATION-STAGE-1".to_string()));
        for (name, docker) in [
            ("docker0", true),
            ("br-0123456789ab", true),
            ("br-0123456789abc", false),
            ("br-lan", false),
            ("br-0123456789ag", false),
            ("virbr0", false),
            ("docker1", false),
        ] {
            assert_eq!(super::super::is_docker_bridge_name(name), docker, "{name}");
        }
    }

    #[test]
    fn add_and_remove_render_the_same_rules() {
        let n = net(true, false);
        let rules = render_port(&n, &port(Ipv4Addr::UNSPECIFIED), true);
        let add = batch(&rules, false, &[]);
        let del = batch(&rules, true, &[]);
        assert!(add.contains("-I NETD 1 -d 192.0.2.2/32"));
        assert!(del.contains("-D NETD -d 192.0.2.2/32"));
        assert_eq!(
            add.lines().filter(|l| l.starts_with("-")).count(),
            del.lines().filter(|l| l.starts_with("-D")).count()
        );
    }
}
