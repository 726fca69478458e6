//! `netd network ...`: create, list, inspect, remove, prune, connect, disconnect (Docker's
//! shapes and messages).
use std::{collections::BTreeMap, net::Ipv4Addr};

use serde_json::{Value, json};

use super::{ApiError, ApiResult, Daemon, Shared};
use crate::{
    api::{NetworkConnectRequest, NetworkCreateRequest},
    dataplane::GatewayMode,
    ipam::{self, Ipv4Net},
    model::{BridgeNet, Network, NetworkMode, Status},
};

const PREDEFINED: [&str; 3] = ["bridge", "host", "none"];

/// The bridge driver's `-o` options, parsed.
pub(super) struct BridgeOpts {
    pub icc: bool,
    pub masquerade: bool,
    pub host_ip: Ipv4Addr,
    pub mtu: u32,
    pub gateway_mode: GatewayMode,
}

/// Docker's networks (the remote driver's) take Docker's containers only: netd's own sandboxes
/// would share Docker's IPAM range without Docker knowing.
pub(super) fn refuse_docker_network(n: &Network) -> ApiResult<()> {
    if n.driver == super::docker_plugin::DRIVER {
        return Err(ApiError {
            status: 403,
            message: format!(
                "network {} is managed by Docker (driver {}): use the docker CLI for it",
                n.id,
                super::docker_plugin::DRIVER
            ),
        });
    }
    Ok(())
}

fn opt_bool(opts: &BTreeMap<String, String>, key: &str, default: bool) -> ApiResult<bool> {
    match opts.get(key).map(String::as_str) {
        None => Ok(default),
        Some("true" | "1" | "True" | "TRUE" | "t" | "T") => Ok(true),
        Some("false" | "0" | "False" | "FALSE" | "f" | "F") => Ok(false),
        Some(v) => Err(ApiError::bad(format!(
            "failed to parse {key} value: strconv.ParseBool: parsing \"{v}\": invalid syntax"
        ))),
    }
}

impl Daemon {
    pub async fn network_create(self: &Shared, r: NetworkCreateRequest) -> ApiResult<String> {
        // The IPv6 programs may still be loading (right after `netd up`): waited for here,
        // not under the state lock, where every other request would queue behind it.
        if r.enable_ipv6 {
            self.dp.ready_v6().await;
        }
        let mut st = self.state.lock().await;
        if r.name.is_empty() {
            return Err(ApiError::bad("network name cannot be empty"));
        }
        crate::names::validate_name(&r.name).map_err(|_| {
            ApiError::bad(format!("invalid network name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", r.name))
        })?;
        if PREDEFINED.contains(&r.name.as_str()) {
            return Err(ApiError {
                status: 403,
                message: format!("operation is not permitted on predefined {} network ", r.name),
            });
        }
        if st.networks.values().any(|n| n.name == r.name) {
            return Err(ApiError::conflict(format!("network with name {} already exists", r.name)));
        }
        let driver = if r.driver.is_empty() { "bridge" } else { r.driver.as_str() };
        if driver != "bridge" {
            return Err(ApiError::not_found(format!("plugin \"{driver}\" not found")));
        }
        let known = [
            "com.docker.network.bridge.name",
            "com.docker.network.bridge.enable_icc",
            "com.docker.network.bridge.enable_ip_masquerade",
            "com.docker.network.bridge.host_binding_ipv4",
            "com.docker.network.driver.mtu",
            "com.docker.network.bridge.gateway_mode_ipv4",
            "com.docker.network.bridge.gateway_mode_ipv6",
            crate::advertise::NMSGS_OPT,
            crate::advertise::INTERVAL_OPT,
        ];
        for k in r.options.keys() {
            if !known.contains(&k.as_str()) {
                return Err(ApiError::bad(format!(
                    "unsupported bridge option {k:?} (netd supports: {})",
                    known.join(", ")
                )));
            }
        }
        crate::advertise::options(&r.options).map_err(ApiError::bad)?;
        let BridgeOpts { icc, masquerade, host_ip, mtu, gateway_mode } = self.bridge_options(&st, &r.options)?;
        let index = st.networks.values().filter_map(|n| n.bridge.as_ref().map(|b| b.index)).max().unwrap_or(1) + 1;
        let id = crate::names::new_id();
        let bridge = match r.options.get("com.docker.network.bridge.name") {
            Some(b) => {
                if b.is_empty() || b.len() > 15 || b.contains('/') || b.contains(char::is_whitespace) {
                    return Err(ApiError::bad(format!("invalid bridge name {b:?}")));
                }
                if st.networks.values().any(|n| n.bridge.as_ref().is_some_and(|x| &x.bridge == b)) {
                    return Err(ApiError::conflict(format!("bridge name {b} is already in use by another network")));
                }
                b.clone()
            }
            None => format!("br-{}", &id[..12]),
        };
        // IPv6-only (`--ipv4=false`, Docker 28): no v4 IPAM at all; a v4 subnet, gateway or
        // range with it is an error (Docker keeps and ignores them).
        let ipv4 = if r.enable_ipv4 == Some(false) {
            if !r.enable_ipv6 {
                return Err(ApiError::bad("IPv4 or IPv6 must be enabled"));
            }
            if let Some(v) = r.subnet.as_ref().or(r.gateway.as_ref()).or(r.ip_range.as_ref()) {
                return Err(ApiError::bad(format!(
                    "an IPv4 --subnet, --gateway or --ip-range ({v}) needs IPv4: the network is IPv6-only (--ipv4=false)"
                )));
            }
            None
        } else {
            Some(self.network_v4(&st, &r, gateway_mode).await?)
        };
        let ipv6 = self.network_v6(&mut st, &r).await?;
        let b = BridgeNet { index, bridge, owned: true, ipv4, icc, masquerade, host_binding_ipv4: host_ip, mtu, ipv6 };
        let n = Network {
            id: id.clone(),
            name: r.name.clone(),
            driver: "bridge".into(),
            created: crate::model::rfc3339_now().0,
            default_bridge: false,
            bridge: Some(b.clone()),
            internal: r.internal,
            options: r.options.clone(),
        };
        self.install_network(&mut st, n).await?;
        Ok(id)
    }

    /// The IPv4 side of a new network: the given subnet (checked for overlap), or the first
    /// free one of the default pools; its gateway and range.
    async fn network_v4(
        &self,
        st: &super::State,
        r: &NetworkCreateRequest,
        gateway_mode: GatewayMode,
    ) -> ApiResult<crate::model::BridgeNetV4> {
        let in_use: Vec<Ipv4Net> = st
            .networks
            .values()
            .filter_map(|n| n.bridge.as_ref()?.ipv4.as_ref().and_then(|v| Ipv4Net::new(v.subnet, v.prefix_len).ok()))
            .collect();
        let (subnet, user_subnet) = match &r.subnet {
            Some(s) => {
                let net: Ipv4Net = s.parse().map_err(|e: ipam::IpamError| ApiError::bad(e.to_string()))?;
                if in_use.iter().any(|u| u.overlaps(&net)) {
                    return Err(ApiError::bad(
                        "invalid pool request: Pool overlaps with other one on this address space".to_string(),
                    ));
                }
                (net, true)
            }
            None => {
                if r.gateway.is_some() || r.ip_range.is_some() {
                    return Err(ApiError::bad(
                        "invalid pool request: gateway and ip-range require a subnet (--subnet)",
                    ));
                }
                let mut taken = in_use.clone();
                taken.extend(self.nl.ipv4_routes().await.unwrap_or_default());
                let net = ipam::pick_free_subnet(&self.addr_pools.v4, &taken)
                    .ok_or_else(|| ApiError::bad("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"))?;
                (net, false)
            }
        };
        let gateway = match &r.gateway {
            Some(g) => {
                let gw: Ipv4Addr = g.parse().map_err(|_| ApiError::bad(format!("invalid gateway address {g:?}")))?;
                if !subnet.contains(gw) {
                    return Err(ApiError::bad(format!("no matching subnet for gateway {gw}")));
                }
                gw
            }
            None => subnet.first_host(),
        };
        let ip_range = match &r.ip_range {
            Some(ir) => {
                let rn: Ipv4Net = ir.parse().map_err(|e: ipam::IpamError| ApiError::bad(e.to_string()))?;
                if !subnet.contains_net(&rn) {
                    return Err(ApiError::bad(format!("no matching subnet for range {ir}")));
                }
                Some((rn.addr(), rn.prefix_len()))
            }
            None => None,
        };
        Ok(crate::model::BridgeNetV4 {
            subnet: subnet.network(),
            prefix_len: subnet.prefix_len(),
            gateway,
            ip_range,
            user_subnet,
            gateway_mode,
        })
    }

    /// The IPv6 side of a new network (`--ipv6`, a v6 `--subnet`/`--gateway`/`--ip-range`):
    /// given, or a /64 of the default v6 pools (Docker 27+), checked like Docker's
    /// `validateIpamConfig` / `validateIPv6Subnet`.
    async fn network_v6(
        &self,
        st: &mut super::State,
        r: &NetworkCreateRequest,
    ) -> ApiResult<Option<crate::model::BridgeNetV6>> {
        if !r.enable_ipv6 {
            if r.subnet_v6.is_some() || r.gateway_v6.is_some() || r.ip_range_v6.is_some() {
                return Err(ApiError::bad(
                    "an IPv6 --subnet, --gateway or --ip-range needs --ipv6 (netd enables IPv6 only when asked)",
                ));
            }
            return Ok(None);
        }
        if !st.dp.ipv6() {
            return Err(ApiError::bad(format!(
                "IPv6 networks are not supported by the {} dataplane yet (netd up --dataplane iptables has them)",
                st.dp.backend()
            )));
        }
        let in_use: Vec<ipam::Ipv6Net> = st
            .networks
            .values()
            .filter_map(|n| n.bridge.as_ref()?.ipv6.as_ref())
            .filter_map(|v| ipam::Ipv6Net::new(v.subnet, v.prefix_len).ok())
            .collect();
        let (subnet, user_subnet) = match &r.subnet_v6 {
            Some(s) => {
                let net: ipam::Ipv6Net = s.parse().map_err(|e: ipam::IpamError| ApiError::bad(e.to_string()))?;
                if net != net.trunc() {
                    return Err(ApiError::bad(format!(
                        "invalid network config:\ninvalid subnet {s}: it should be {}",
                        net.trunc()
                    )));
                }
                ipam::validate_ipv6_subnet(std::net::IpAddr::V6(net.addr()), net.prefix_len())
                    .map_err(ApiError::bad)?;
                if in_use.iter().any(|u| u.overlaps(&net)) {
                    return Err(ApiError::bad(
                        "invalid pool request: Pool overlaps with other one on this address space".to_string(),
                    ));
                }
                (net, true)
            }
            None => {
                if r.gateway_v6.is_some() || r.ip_range_v6.is_some() {
                    return Err(ApiError::bad(
                        "invalid pool request: gateway and ip-range require a subnet (--subnet)",
                    ));
                }
                let mut taken = in_use.clone();
                taken.extend(
                    self.nl
                        .ipv6_routes()
                        .await
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|(a, l)| ipam::Ipv6Net::new(a, l).ok()),
                );
                let net = ipam::pick_free_subnet6(&self.addr_pools.v6, &taken).ok_or_else(|| {
                    ApiError::bad("could not find an available, non-overlapping IPv6 address pool among the defaults to assign to the network")
                })?;
                (net, false)
            }
        };
        let gateway = match &r.gateway_v6 {
            Some(g) => {
                let gw: std::net::Ipv6Addr =
                    g.parse().map_err(|_| ApiError::bad(format!("invalid gateway address {g:?}")))?;
                if !subnet.contains(gw) {
                    return Err(ApiError::bad(format!(
                        "invalid network config:\ninvalid gateway {gw}: parent subnet {subnet} doesn't contain this address"
                    )));
                }
                gw
            }
            None => subnet.first_host(),
        };
        let ip_range = match &r.ip_range_v6 {
            Some(ir) => {
                let rn: ipam::Ipv6Net = ir.parse().map_err(|e: ipam::IpamError| ApiError::bad(e.to_string()))?;
                if !subnet.contains_net(&rn) {
                    return Err(ApiError::bad(format!("no matching subnet for range {ir}")));
                }
                Some((rn.addr(), rn.prefix_len()))
            }
            None => None,
        };
        let gateway_mode: GatewayMode = match r.options.get("com.docker.network.bridge.gateway_mode_ipv6") {
            Some(v) => v.parse().map_err(ApiError::bad)?,
            None => GatewayMode::Nat,
        };
        Ok(Some(crate::model::BridgeNetV6 {
            subnet: subnet.network(),
            prefix_len: subnet.prefix_len(),
            gateway,
            ip_range,
            user_subnet,
            gateway_mode,
        }))
    }

    /// The bridge driver's options (`-o`), Docker's parsing and messages.
    pub(super) fn bridge_options(&self, st: &super::State, opts: &BTreeMap<String, String>) -> ApiResult<BridgeOpts> {
        let icc = opt_bool(opts, "com.docker.network.bridge.enable_icc", true)?;
        let masquerade = opt_bool(opts, "com.docker.network.bridge.enable_ip_masquerade", true)?;
        let host_ip: Ipv4Addr = match opts.get("com.docker.network.bridge.host_binding_ipv4") {
            Some(v) => v.parse().map_err(|_| {
                ApiError::bad(format!("failed to parse host_binding_ipv4 value: invalid IP address {v:?}"))
            })?,
            None => self.default_host_ip(st),
        };
        let mtu: u32 = match opts.get("com.docker.network.driver.mtu") {
            Some(v) => v.parse().map_err(|_| ApiError::bad(format!("invalid MTU value {v:?}")))?,
            None => self.cfg.up.mtu.unwrap_or(super::networks::DEFAULT_MTU),
        };
        if !(68..=65535).contains(&mtu) {
            return Err(ApiError::bad(format!("invalid MTU value {mtu}: must be between 68 and 65535")));
        }
        let gateway_mode: GatewayMode = match opts.get("com.docker.network.bridge.gateway_mode_ipv4") {
            Some(v) => v.parse().map_err(ApiError::bad)?,
            None => GatewayMode::Nat,
        };
        Ok(BridgeOpts { icc, masquerade, host_ip, mtu, gateway_mode })
    }

    /// Make a new bridge network real: the bridge with its gateway, the dataplane, the state
    /// file, the address pool. Undone on failure.
    pub(super) async fn install_network(&self, st: &mut super::State, n: Network) -> ApiResult<()> {
        let b = n.bridge.clone().expect("bridge network");
        let ifindex = match self.ensure_bridge(&b).await {
            Ok(i) => i,
            Err(e) => {
                // A bridge made for this network goes with the failure (an adopted `-b`
                // bridge stays).
                if b.owned {
                    let _ = self.nl.delete_link(&b.bridge).await;
                }
                return Err(ApiError::internal(e));
            }
        };
        if let Err(e) = st.dp.network_added(&n.spec(ifindex).expect("bridge")) {
            let _ = self.nl.delete_link(&b.bridge).await;
            return Err(ApiError::internal(format!("dataplane: {e}")));
        }
        if let Err(e) = self.store.save_network(&n) {
            let _ = st.dp.network_removed(&n.spec(ifindex).expect("bridge"));
            let _ = self.nl.delete_link(&b.bridge).await;
            return Err(ApiError::internal(format!("saving state: {e}")));
        }
        if let Some(pool) = Self::pool_for(&b) {
            st.pools.insert(n.id.clone(), pool);
        }
        if let Some(v6) = &b.ipv6 {
            st.pools6.insert(n.id.clone(), Self::pool6_for(v6));
        }
        self.events.emit("network", "create", &n.id, &[("name", n.name.clone()), ("type", n.driver.clone())]);
        st.networks.insert(n.id.clone(), n);
        Ok(())
    }

    fn default_host_ip(&self, st: &super::State) -> Ipv4Addr {
        st.networks
            .values()
            .find(|n| n.default_bridge)
            .and_then(|n| n.bridge.as_ref())
            .map_or(Ipv4Addr::UNSPECIFIED, |b| b.host_binding_ipv4)
    }

    /// A `network connect|disconnect` event (Docker's attributes: the container, the
    /// network's name and driver).
    pub(super) fn network_event(&self, st: &super::State, action: &str, nid: &str, cid: &str) {
        let (name, typ) = st.networks.get(nid).map_or_else(Default::default, |n| (n.name.clone(), n.driver.clone()));
        self.events.emit("network", action, nid, &[("container", cid.to_string()), ("name", name), ("type", typ)]);
    }

    /// The op lock of the sandbox `r` refers to.
    async fn sandbox_op(self: &Shared, r: &str) -> ApiResult<tokio::sync::OwnedMutexGuard<()>> {
        let id = {
            let st = self.state.lock().await;
            self.resolve_container(&st, r)?
        };
        Ok(self.op_lock(&id).await)
    }

    fn network_in_use(st: &super::State, id: &str) -> bool {
        st.starting_on(id)
            || st.attachments.values().any(|a| a.network_id == id)
            || st.containers.values().any(|c| {
                c.endpoints.iter().any(|e| e.network_id == id)
                    || matches!(&c.mode, NetworkMode::Bridge(n) if n == id) && c.state.status == Status::Running
            })
    }

    pub async fn network_remove(self: &Shared, r: &str) -> ApiResult<()> {
        let mut st = self.state.lock().await;
        let id = self.resolve_network(&st, r)?;
        let n = st.networks[&id].clone();
        if n.default_bridge || PREDEFINED.contains(&n.name.as_str()) {
            return Err(ApiError {
                status: 403,
                message: format!("{} is a pre-defined network and cannot be removed", n.name),
            });
        }
        refuse_docker_network(&n)?;
        if Self::network_in_use(&st, &id) {
            return Err(ApiError::conflict(format!(
                "error while removing network: network {} id {} has active endpoints",
                n.name, n.id
            )));
        }
        self.remove_network_locked(&mut st, &n).await;
        Ok(())
    }

    pub(super) async fn remove_network_locked(&self, st: &mut super::State, n: &Network) {
        if let Some(spec) = n.spec(0)
            && let Err(e) = st.dp.network_removed(&spec)
        {
            tracing::warn!(network = %n.name, error = %e, "dataplane: removing network");
        }
        if let Some(b) = &n.bridge
            && b.owned
            && let Err(e) = self.nl.delete_link(&b.bridge).await
        {
            tracing::warn!(bridge = %b.bridge, error = %e, "deleting bridge");
        }
        st.pools.remove(&n.id);
        st.pools6.remove(&n.id);
        st.networks.remove(&n.id);
        let _ = self.store.remove_network(&n.id);
        self.events.emit("network", "destroy", &n.id, &[("name", n.name.clone()), ("type", n.driver.clone())]);
    }

    pub async fn network_prune(self: &Shared) -> ApiResult<Value> {
        let mut st = self.state.lock().await;
        let candidates: Vec<Network> = st
            .networks
            .values()
            .filter(|n| !n.default_bridge && !PREDEFINED.contains(&n.name.as_str()))
            .filter(|n| n.driver != super::docker_plugin::DRIVER)
            .filter(|n| {
                !st.containers.values().any(|c| {
                    matches!(&c.mode, NetworkMode::Bridge(x) if *x == n.id) || c.extra_networks.contains(&n.id)
                })
            })
            .cloned()
            .collect();
        let mut deleted = Vec::new();
        for n in candidates {
            self.remove_network_locked(&mut st, &n).await;
            deleted.push(n.name);
        }
        deleted.sort();
        Ok(json!({"NetworksDeleted": deleted}))
    }

    pub async fn network_list(&self) -> Value {
        let st = self.state.lock().await;
        let mut v: Vec<Value> = st.networks.values().map(|n| self.network_json(&st, n, false)).collect();
        v.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
        Value::Array(v)
    }

    pub async fn network_inspect(&self, r: &str) -> ApiResult<Value> {
        let st = self.state.lock().await;
        let id = self.resolve_network(&st, r)?;
        Ok(self.network_json(&st, &st.networks[&id], true))
    }

    fn network_json(&self, st: &super::State, n: &Network, detail: bool) -> Value {
        let mut ipam_cfg = Vec::new();
        if let Some(b) = &n.bridge {
            if let Some(v4) = &b.ipv4 {
                let mut c = serde_json::Map::new();
                c.insert("Subnet".into(), json!(format!("{}/{}", v4.subnet, v4.prefix_len)));
                if let Some((a, p)) = v4.ip_range {
                    c.insert("IPRange".into(), json!(format!("{a}/{p}")));
                }
                c.insert("Gateway".into(), json!(v4.gateway.to_string()));
                ipam_cfg.push(Value::Object(c));
            }
            if let Some(v6) = &b.ipv6 {
                let mut c = serde_json::Map::new();
                c.insert("Subnet".into(), json!(format!("{}/{}", v6.subnet, v6.prefix_len)));
                if let Some((a, p)) = v6.ip_range {
                    c.insert("IPRange".into(), json!(format!("{a}/{p}")));
                }
                c.insert("Gateway".into(), json!(v6.gateway.to_string()));
                ipam_cfg.push(Value::Object(c));
            }
        }
        let v6addr = |ip6: Option<std::net::Ipv6Addr>, len: u8| ip6.map_or(String::new(), |a| format!("{a}/{len}"));
        let v4addr = |ip: Option<Ipv4Addr>, len: u8| ip.map_or(String::new(), |a| format!("{a}/{len}"));
        let mut containers = serde_json::Map::new();
        if detail {
            for c in st.containers.values() {
                for ep in c.endpoints.iter().filter(|e| e.network_id == n.id) {
                    containers.insert(
                        c.id.clone(),
                        json!({
                            "Name": c.name,
                            "EndpointID": ep.endpoint_id,
                            "MacAddress": super::handlers::fmt_mac(ep.mac),
                            "IPv4Address": v4addr(ep.ip, ep.prefix_len),
                            "IPv6Address": v6addr(ep.ip6, ep.prefix_len6),
                        }),
                    );
                }
                if n.driver == "host" && matches!(c.mode, NetworkMode::Host) && c.state.status == Status::Running {
                    containers.insert(c.id.clone(), json!({"Name": c.name, "EndpointID": "", "MacAddress": "", "IPv4Address": "", "IPv6Address": ""}));
                }
            }
        }
        if detail {
            // Docker's endpoints (and CNI's): by EndpointID, as Docker never names its containers.
            for a in st.attachments.values().filter(|a| a.network_id == n.id && !a.owner.is_sandbox()) {
                let name = match &a.owner {
                    crate::model::Owner::Cni { container_id, ifname, .. } => format!("{container_id}/{ifname}"),
                    _ => String::new(),
                };
                containers.insert(
                    a.id.clone(),
                    json!({
                        "Name": name,
                        "EndpointID": a.id,
                        "MacAddress": super::handlers::fmt_mac(a.mac),
                        "IPv4Address": v4addr(a.ip, a.prefix_len),
                        "IPv6Address": v6addr(a.ip6, a.prefix_len6),
                    }),
                );
            }
        }
        let mut options = n.options.clone();
        if let Some(b) = &n.bridge
            && !n.default_bridge
        {
            options.entry("com.docker.network.bridge.name".into()).or_insert_with(|| b.bridge.clone());
        }
        json!({
            "Name": n.name,
            "Id": n.id,
            "Created": n.created,
            "Scope": "local",
            "Driver": n.driver,
            "EnableIPv4": n.bridge.as_ref().is_some_and(|b| b.ipv4.is_some()),
            "EnableIPv6": n.bridge.as_ref().is_some_and(|b| b.ipv6.is_some()),
            "IPAM": {"Driver": "default", "Options": null, "Config": ipam_cfg},
            "Internal": n.internal,
            "Attachable": false,
            "Ingress": false,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": false,
            "Containers": containers,
            "Options": options,
            "Labels": {},
        })
    }

    /// `network connect NET CTR`: a running sandbox gets `ethN` on NET at once; a stopped one
    /// gets it at its next start.
    pub async fn network_connect(self: &Shared, net: &str, r: NetworkConnectRequest) -> ApiResult<()> {
        // Not while a start or teardown of the sandbox runs (they work without the state lock).
        let _op = self.sandbox_op(&r.container).await?;
        // A v6 network or the sandbox's bindings (NAT46 twins) may need the IPv6 programs:
        // their background load is waited for before the state lock is taken for the change.
        let may_need_v6 = {
            let st = self.state.lock().await;
            let v6_net = self
                .resolve_network(&st, net)
                .is_ok_and(|id| st.networks.get(&id).and_then(|n| n.bridge.as_ref()).is_some_and(|b| b.ipv6.is_some()));
            let ports = self.resolve_container(&st, &r.container).is_ok_and(|id| {
                st.containers
                    .get(&id)
                    .is_some_and(|c| !c.ports.is_empty() || !c.config.publish.is_empty() || c.config.publish_all)
            });
            v6_net || ports
        };
        if may_need_v6 {
            self.dp.ready_v6().await;
        }
        let mut st = self.state.lock().await;
        let nid = self.resolve_network(&st, net)?;
        let cid = self.resolve_container(&st, &r.container)?;
        let n = st.networks[&nid].clone();
        let c = st.containers[&cid].clone();
        refuse_docker_network(&n)?;
        if n.bridge.is_none() {
            return Err(ApiError::bad(
                "container cannot be disconnected from host network or connected to host network".to_string(),
            ));
        }
        match &c.mode {
            NetworkMode::Bridge(_) => {}
            NetworkMode::Host => {
                return Err(ApiError::bad(
                    "container cannot be disconnected from host network or connected to host network",
                ));
            }
            NetworkMode::None => {
                return Err(ApiError::bad(
                    "container cannot be connected to multiple networks with one of the networks in private (none) mode",
                ));
            }
            NetworkMode::Container(_) => {
                return Err(ApiError::bad(
                    "conflicting options: container type network can't be used with links. This would result in undefined behavior",
                ));
            }
        }
        let already = matches!(&c.mode, NetworkMode::Bridge(x) if *x == nid) || c.extra_networks.contains(&nid);
        if already {
            return Err(ApiError {
                status: 403,
                message: format!("endpoint with name {} already exists in network {}", c.name, n.name),
            });
        }
        let static_ip: Option<Ipv4Addr> = match &r.ip {
            Some(s) => Some(s.parse().map_err(|_| ApiError::bad(format!("invalid IPv4 address: {s}")))?),
            None => None,
        };
        if let Some(ip) = static_ip
            && n.bridge.as_ref().is_some_and(|b| b.ipv4.is_none())
        {
            // Docker's `validateEndpointIPAddress`: an IPv6-only network has no v4 subnet.
            return Err(ApiError::bad(format!(
                "invalid endpoint settings:\nno configured subnet contains IP address {ip}"
            )));
        }
        if static_ip.is_some() && (n.default_bridge || !n.bridge.as_ref().is_some_and(|b| b.user_subnet4())) {
            return Err(ApiError::bad(if n.default_bridge {
                "invalid endpoint settings:\nuser-specified IP address is supported on user-defined networks only"
            } else {
                "user specified IP address is supported only when connecting to networks with user configured subnets"
            }));
        }
        let static_ip6: Option<std::net::Ipv6Addr> = match &r.ip6 {
            Some(s) => Some(s.parse().map_err(|_| ApiError::bad(format!("invalid IPv6 address: {s}")))?),
            None => None,
        };
        if static_ip6.is_some() && n.bridge.as_ref().is_none_or(|b| b.ipv6.is_none()) {
            return Err(ApiError::bad(format!(
                "invalid endpoint settings:\nuser specified IPv6 address is not supported: IPv6 is not enabled on network {}",
                n.name
            )));
        }
        if static_ip6.is_some()
            && (n.default_bridge || !n.bridge.as_ref().and_then(|b| b.ipv6.as_ref()).is_some_and(|v| v.user_subnet))
        {
            return Err(ApiError::bad(if n.default_bridge {
                "invalid endpoint settings:\nuser-specified IP address is supported on user-defined networks only"
            } else {
                "user specified IP address is supported only when connecting to networks with user configured subnets"
            }));
        }
        if c.state.status == Status::Running {
            let netns = c.netns.clone().ok_or_else(|| ApiError::internal("sandbox has no network namespace"))?;
            let idx = c.endpoints.len();
            let ep = self
                .attach_endpoint(&mut st, &cid, &nid, &netns, idx, static_ip, static_ip6, None, r.aliases.clone())
                .await?;
            super::crash_point("connect:attached");
            self.network_event(&st, "connect", &nid, &cid);
            // Docker 28 (`sbJoin`: the gateway endpoints before and after): a network that
            // becomes a family's gateway (the sandbox's first address of the family, or the
            // first dual-stack network) takes its default route and bindings (a v4-only
            // sandbox's `[::]` twin goes to the new network's v6 address; an IPv6-only one
            // gains its v4 bindings; a dual-stack network takes both families).
            let before = super::attach::gateways(&st, &c, &c.endpoints);
            let mut eps = c.endpoints.clone();
            eps.push(ep.clone());
            let mut with = c.clone();
            if r.gw_priority != 0 {
                with.gw_priority.insert(nid.clone(), r.gw_priority);
            }
            let after = super::attach::gateways(&st, &with, &eps);
            let gw_of = |split: &[(usize, super::attach::Families)], v6: bool| {
                split.iter().find(|(_, f)| if v6 { f.v6 } else { f.v4 }).map(|(i, _)| *i)
            };
            let fam = super::attach::Families {
                v4: gw_of(&after, false) == Some(idx) && gw_of(&before, false).is_none_or(|i| i != idx),
                v6: gw_of(&after, true) == Some(idx) && gw_of(&before, true).is_none_or(|i| i != idx),
            };
            let cc = st.containers.get_mut(&cid).expect("container");
            cc.endpoints.push(ep);
            if fam.v4 || fam.v6 {
                self.regateway(&mut st, &cid, idx, fam).await;
            }
        }
        let cc = st.containers.get_mut(&cid).expect("container");
        if r.gw_priority != 0 {
            cc.gw_priority.insert(nid.clone(), r.gw_priority);
        }
        cc.extra_networks.push(nid);
        let _ = self.store.save_container(cc);
        drop(st);
        self.refresh_hosts(&cid).await;
        Ok(())
    }

    pub async fn network_disconnect(self: &Shared, net: &str, ctr: &str) -> ApiResult<()> {
        let _op = self.sandbox_op(ctr).await?;
        let mut st = self.state.lock().await;
        let nid = self.resolve_network(&st, net)?;
        let cid = self.resolve_container(&st, ctr)?;
        let c = st.containers[&cid].clone();
        let n = st.networks[&nid].clone();
        let primary = matches!(&c.mode, NetworkMode::Bridge(x) if *x == nid);
        if !primary && !c.extra_networks.contains(&nid) {
            return Err(ApiError {
                status: 403,
                message: format!("container {} is not connected to network {}", c.id, n.name),
            });
        }
        // The families whose gateway endpoint leaves, and the endpoint that takes them over.
        let mut regw: Vec<(usize, super::attach::Families)> = Vec::new();
        if let Some(ep) = c.endpoints.iter().find(|e| e.network_id == nid).cloned() {
            // The bindings that go through this network (all of them on the primary, unless
            // the v4 and v6 gateways are two networks).
            let index = n.bridge.as_ref().map(|b| b.index);
            let ports: Vec<_> = c.ports.iter().filter(|m| Some(m.network_index) == index).cloned().collect();
            if !ports.is_empty() {
                self.unpublish(&mut st, &ep.endpoint_id, &nid, &ports).await;
                st.containers.get_mut(&cid).expect("c").ports.retain(|m| !ports.contains(m));
            }
            self.detach_endpoint(&mut st, &cid, &ep).await;
            self.network_event(&st, "disconnect", &nid, &cid);
            st.containers.get_mut(&cid).expect("c").endpoints.retain(|e| e.network_id != nid);
            // Docker 28 (`sbLeave`: the gateway endpoints before and after): a family whose
            // gateway network leaves gets the next one as its gateway, which takes the
            // family's default route and bindings (the v6 gateway leaving a v4-only network
            // gives it its `[::]` twin back; the v4 gateway leaving, the other v4 network
            // publishes `0.0.0.0` again).
            let removed = c.endpoints.iter().position(|e| e.network_id == nid);
            let gw_of = |split: &[(usize, super::attach::Families)], v6: bool| {
                split.iter().find(|(_, f)| if v6 { f.v6 } else { f.v4 }).map(|(i, _)| *i)
            };
            let before = super::attach::gateways(&st, &c, &c.endpoints);
            let after = super::attach::gateways(&st, &c, &st.containers[&cid].endpoints);
            for (i, f) in after {
                let fam = super::attach::Families {
                    v4: f.v4 && gw_of(&before, false) == removed,
                    v6: f.v6 && gw_of(&before, true) == removed,
                };
                if fam.v4 || fam.v6 {
                    regw.push((i, fam));
                }
            }
        }
        let cc = st.containers.get_mut(&cid).expect("container");
        cc.gw_priority.remove(&nid);
        if primary {
            // Docker leaves the sandbox with no network; netd moves its mode to `none`.
            cc.mode = match cc.extra_networks.first().cloned() {
                Some(next) => {
                    cc.extra_networks.remove(0);
                    NetworkMode::Bridge(next)
                }
                None => NetworkMode::None,
            };
        } else {
            cc.extra_networks.retain(|x| *x != nid);
        }
        let _ = self.store.save_container(cc);
        for (i, fam) in regw {
            self.regateway(&mut st, &cid, i, fam).await;
        }
        drop(st);
        self.refresh_hosts(&cid).await;
        Ok(())
    }

    /// Make a running sandbox's endpoint `i` the gateway of the families `fam`: their default
    /// routes through its interface (Docker's `updateGateway`; a family the endpoint has no
    /// address of keeps none) and their bindings published through it ([`Self::move_ports_to`]).
    async fn regateway(self: &Shared, st: &mut super::State, cid: &str, i: usize, fam: super::attach::Families) {
        let Some(c) = st.containers.get(cid) else { return };
        let Some(gep) = c.endpoints.get(i).cloned() else { return };
        let gw4 = gep.gateway.filter(|_| fam.v4 && gep.ip.is_some());
        let gw6 = gep.gateway6.filter(|_| fam.v6 && gep.ip6.is_some());
        if let Some(ns) = c.netns.clone()
            && (gw4.is_some() || gw6.is_some())
        {
            let ifname = gep.ifname.clone();
            let r =
                tokio::task::spawn_blocking(move || crate::netlink::set_default_routes(&ns, &ifname, gw4, gw6)).await;
            if let Ok(Err(e)) = r {
                tracing::warn!(container = %cid, error = %e, "moving the default route to the new gateway");
            }
        }
        self.move_ports_to(st, cid, i, fam).await;
    }

    /// Publish a running sandbox's bindings of the host-address families `fam` through its
    /// endpoint `i` (the new gateway of those families), after removing the ones of those
    /// families that went through other networks. Best effort: a host port taken meanwhile is
    /// logged and left out. State lock held; the sandbox's op lock too.
    async fn move_ports_to(self: &Shared, st: &mut super::State, cid: &str, i: usize, fam: super::attach::Families) {
        let Some(c) = st.containers.get(cid).cloned() else { return };
        let Some(ep) = c.endpoints.get(i).cloned() else { return };
        let index = st.networks.get(&ep.network_id).and_then(|n| n.bridge.as_ref()).map(|b| b.index);
        let of_fam = |m: &crate::dataplane::PortMapping| if m.host_ip.is_ipv6() { fam.v6 } else { fam.v4 };
        let moving: Vec<_> = c.ports.iter().filter(|m| of_fam(m) && Some(m.network_index) != index).cloned().collect();
        for other in &c.endpoints {
            let oidx = st.networks.get(&other.network_id).and_then(|n| n.bridge.as_ref()).map(|b| b.index);
            let maps: Vec<_> = moving.iter().filter(|m| Some(m.network_index) == oidx).cloned().collect();
            if !maps.is_empty() {
                self.unpublish(st, &other.endpoint_id, &other.network_id, &maps).await;
            }
        }
        if let Some(cc) = st.containers.get_mut(cid) {
            cc.ports.retain(|m| !moving.contains(m));
        }
        let r = match self.publish_sandbox(st, &c, &ep, fam) {
            Ok(mut p) => match p.program(&st.dp.clone(), &c.name) {
                Ok(()) => Ok(p),
                Err(e) => {
                    super::attach::unreserve_ports(st, &p.maps);
                    Err(e)
                }
            },
            Err(e) => Err(e),
        };
        match r {
            Ok(p) => {
                let maps = self.publish_commit(st, &ep.endpoint_id, p);
                if let Some(cc) = st.containers.get_mut(cid) {
                    cc.ports.extend(maps);
                    let _ = self.store.save_container(cc);
                }
            }
            Err(e) => {
                tracing::warn!(container = %cid, network = %ep.network_id, error = %e.message, "moving published ports to the new gateway");
            }
        }
    }

    /// Rewrite a running sandbox's /etc/hosts after its addresses changed (the bind mount
    /// follows the file's inode, so write in place).
    pub async fn refresh_hosts(&self, cid: &str) {
        let st = self.state.lock().await;
        let Some(c) = st.containers.get(cid) else { return };
        if c.state.status != Status::Running {
            return;
        }
        let own: Vec<std::net::IpAddr> = own_addrs(&c.endpoints);
        let mut extra = Vec::new();
        for h in &c.config.extra_hosts {
            if let Ok((host, crate::etcfiles::HostIp::Ip(ip))) = crate::etcfiles::parse_add_host(h) {
                extra.push((host, ip));
            }
        }
        // Docker 26+ (`rebuildHostsFile`): the IPv6 lines only when the loopback has IPv6.
        let content = crate::etcfiles::hosts_file(&c.hostname, &c.domainname, &own, &extra, self.sandbox_ipv6(c));
        let path = self.cfg.runtime_dir(cid).join("hosts");
        let _ = std::fs::write(path, content);
    }
}

/// A sandbox's own addresses for /etc/hosts: each endpoint's IPv4 address, then its IPv6 one
/// (Docker writes both lines for the container's names).
pub fn own_addrs(eps: &[crate::model::Endpoint]) -> Vec<std::net::IpAddr> {
    let mut v: Vec<std::net::IpAddr> = eps.iter().filter_map(|e| e.ip.map(std::net::IpAddr::V4)).collect();
    v.extend(eps.iter().filter_map(|e| e.ip6.map(std::net::IpAddr::V6)));
    v
}
