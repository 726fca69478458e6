//! Networks: the default bridge (Docker's docker0 model), user bridge networks, and the
//! sandbox front-end of endpoints (over the attachment core, `attach.rs`).
use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use super::{
    ApiError, ApiResult, Daemon, Shared, State,
    attach::{AddressRequest, AttachRequest},
};
use crate::{
    ipam::{self, Ipv4Net},
    model::{Attachment, BridgeNet, Endpoint, Network, Owner, PortOpts},
};

/// Docker's default bridge name is docker0; netd's is netd0.
pub const DEFAULT_BRIDGE: &str = "netd0";
pub const DEFAULT_MTU: u32 = 1500;

impl Daemon {
    pub fn resolve_network(&self, st: &State, r: &str) -> ApiResult<String> {
        // Exact name first (Docker: full id, then name, then prefix).
        if let Some(n) = st.networks.values().find(|n| n.id == r) {
            return Ok(n.id.clone());
        }
        if let Some(n) = st.networks.values().find(|n| n.name == r) {
            return Ok(n.id.clone());
        }
        let m: Vec<&Network> = st.networks.values().filter(|n| n.id.starts_with(r)).collect();
        match m.len() {
            1 => Ok(m[0].id.clone()),
            0 => Err(ApiError::not_found(format!("network {r} not found"))),
            _ => Err(ApiError::bad(format!("network {r} is ambiguous ({} matches found based on ID prefix)", m.len()))),
        }
    }

    /// A network by its full id or exact name only, never by an id prefix: for names that come
    /// from configuration (a CNI config's `network`), where a short name that happens to prefix
    /// another network's id must still mean the network of that name.
    pub fn resolve_network_exact(&self, st: &State, r: &str) -> ApiResult<String> {
        st.networks
            .values()
            .find(|n| n.id == r)
            .or_else(|| st.networks.values().find(|n| n.name == r))
            .map(|n| n.id.clone())
            .ok_or_else(|| ApiError::not_found(format!("network {r} not found")))
    }

    /// Create (or adopt) the kernel bridge for a bridge network and give it its gateway.
    pub async fn ensure_bridge(&self, b: &BridgeNet) -> Result<u32, String> {
        let idx = if b.owned {
            self.nl.create_bridge(&b.bridge, b.mtu).await.map_err(|e| format!("creating bridge {}: {e}", b.bridge))?
        } else {
            self.nl
                .link_index(&b.bridge)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("bridge {} not found", b.bridge))?
        };
        if let Some(v4) = &b.ipv4 {
            self.nl
                .add_address(&b.bridge, v4.gateway, v4.prefix_len)
                .await
                .map_err(|e| format!("adding {}/{} to {}: {e}", v4.gateway, v4.prefix_len, b.bridge))?;
        }
        if let Some(v6) = &b.ipv6 {
            self.nl
                .add_address6(&b.bridge, v6.gateway, v6.prefix_len)
                .await
                .map_err(|e| format!("adding {}/{} to {}: {e}", v6.gateway, v6.prefix_len, b.bridge))?;
            // Docker enables IPv6 forwarding in the daemon's namespace for its v6 networks.
            if self.cfg.up.ip_forward {
                ensure_ipv6_forwarding()?;
            }
        }
        self.nl.set_up(&b.bridge).await.map_err(|e| format!("setting {} up: {e}", b.bridge))?;
        Ok(idx)
    }

    /// IPv6 address pool of a dual-stack network.
    pub fn pool6_for(v6: &crate::model::BridgeNetV6) -> ipam::Pool6 {
        let subnet = ipam::Ipv6Net::new(v6.subnet, v6.prefix_len).expect("valid v6 subnet");
        let range = v6.ip_range.map(|(a, p)| ipam::Ipv6Net::new(a, p).expect("valid v6 range"));
        ipam::Pool6::new(subnet, v6.gateway, range)
    }

    /// IPv4 address pool of a bridge network (`None`: IPv6-only).
    pub fn pool_for(b: &BridgeNet) -> Option<ipam::Pool> {
        let v4 = b.ipv4.as_ref()?;
        let subnet = Ipv4Net::new(v4.subnet, v4.prefix_len).expect("valid subnet");
        let range = v4.ip_range.map(|(a, p)| Ipv4Net::new(a, p).expect("valid range"));
        Some(ipam::Pool::new(subnet, v4.gateway, range))
    }

    /// A sandbox's endpoint on network `net_id`: `eth<idx>` inside its namespace (the first
    /// one with the default route), through the attachment core.
    #[allow(clippy::too_many_arguments)]
    pub async fn attach_endpoint(
        self: &Shared,
        st: &mut State,
        cid: &str,
        net_id: &str,
        netns: &Path,
        idx: usize,
        static_ip: Option<Ipv4Addr>,
        static_ip6: Option<std::net::Ipv6Addr>,
        mac: Option<&str>,
        aliases: Vec<String>,
    ) -> ApiResult<Endpoint> {
        let mac = mac.map(|m| ipam::parse_mac(m).map_err(|e| ApiError::bad(e.to_string()))).transpose()?;
        // The families the sandbox's other endpoints have no default route for yet.
        let eps = st.containers.get(cid).map(|c| c.endpoints.clone()).unwrap_or_default();
        let family_routes =
            (idx > 0 && eps.iter().all(|e| e.ip.is_none()), idx > 0 && eps.iter().all(|e| e.ip6.is_none()));
        let a = self
            .attach(
                st,
                AttachRequest {
                    id: None,
                    owner: Owner::Sandbox { id: cid.to_string() },
                    network_id: net_id.to_string(),
                    netns: Some(netns.to_path_buf()),
                    ifname: format!("eth{idx}"),
                    address: static_ip.map_or(AddressRequest::Pool, AddressRequest::Static),
                    ip6: static_ip6,
                    mac,
                    default_route: idx == 0,
                    family_routes,
                    aliases,
                    port_opts: PortOpts::default(),
                },
            )
            .await?;
        Ok(a.endpoint())
    }

    /// Remove a sandbox's endpoint (its ports were unpublished before). Best effort.
    pub async fn detach_endpoint(self: &Shared, st: &mut State, cid: &str, ep: &Endpoint) {
        let a = Attachment::from_endpoint(cid, ep, None, Vec::new());
        self.detach(st, &a).await;
    }
}

/// `net.ipv6.conf.{all,default}.forwarding=1` in the daemon's namespace (idempotent): what Docker
/// sets for its IPv6 networks, and what the eBPF dataplane's NAT46 needs too (the v6 reply of a
/// translated flow is routed with `bpf_fib_lookup`, which refuses to while IPv6 forwarding is
/// off), even without any IPv6 network.
pub fn ensure_ipv6_forwarding() -> Result<(), String> {
    for k in ["net.ipv6.conf.all.forwarding", "net.ipv6.conf.default.forwarding"] {
        if super::sysctl_read(k).as_deref() != Some("1") {
            super::sysctl_write(k, "1").map_err(|e| format!("enabling {k}: {e}"))?;
        }
    }
    Ok(())
}

/// Pick the default bridge's subnet like Docker: `--bip` as given, else 172.17.0.1/16 unless
/// it overlaps a route of the host, else the first free subnet of the default pools.
pub fn default_bridge_subnet(
    bip: Option<&str>,
    routes: &[Ipv4Net],
    pools: &[Ipv4Net],
) -> Result<(Ipv4Net, Ipv4Addr), String> {
    if let Some(bip) = bip {
        let (net, gw) = ipam::parse_bip(bip).map_err(|e| e.to_string())?;
        return Ok((net, gw));
    }
    let net = ipam::pick_free_subnet(pools, routes)
        .ok_or("no free subnet in the default address pools for the default bridge")?;
    Ok((net, net.first_host()))
}

/// Ids of the predefined networks are kept across restarts.
pub fn predefined(networks: &mut BTreeMap<String, Network>) -> Vec<Network> {
    let mut added = Vec::new();
    for (name, driver) in [("host", "host"), ("none", "null")] {
        if !networks.values().any(|n| n.name == name) {
            let n = Network {
                id: crate::names::new_id(),
                name: name.into(),
                driver: driver.into(),
                created: crate::model::rfc3339_now().0,
                default_bridge: false,
                bridge: None,
                internal: false,
                options: BTreeMap::new(),
            };
            networks.insert(n.id.clone(), n.clone());
            added.push(n);
        }
    }
    added
}
