//! rtnetlink: netd's only way of changing links, addresses and routes (no shelling out to `ip`);
//! [`conntrack`]: the kernel's conntrack table over ctnetlink (no `conntrack` binary).
//!
//! [`Netlink`] talks to the namespace the daemon runs in. Configuration inside a sandbox's
//! namespace goes through [`configure_sandbox`], which opens a connection from a thread inside
//! that namespace. Every operation is idempotent: creating what exists is a no-op, deleting what
//! is absent is Ok.
pub mod conntrack;
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, BorrowedFd},
    path::Path,
};

use futures::TryStreamExt;
use rtnetlink::{
    Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        address::AddressAttribute,
        link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage},
        route::{RouteAddress, RouteAttribute, RouteMessage},
    },
};

use crate::ipam::Ipv4Net;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{0}")]
    Netlink(String),
    #[error("link {0} not found")]
    NoSuchLink(String),
    #[error("{0}")]
    Netns(#[from] crate::netns::NetnsError),
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, NetlinkError>;

fn nl(e: rtnetlink::Error) -> NetlinkError {
    NetlinkError::Netlink(e.to_string())
}

/// errno of a netlink error, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const ENOENT: i32 = 2;
const EADDRNOTAVAIL: i32 = 99;
const EBUSY: i32 = 16;

/// RTM_NEWADDR that treats "already there" as success and retries EBUSY for up to ~5 s.
/// CI saw `network create` (iptables dataplane, a subnet re-created right after the network
/// that had it was removed) fail "adding ... Device or resource busy" twice; a ~1 s retry of
/// the add alone did not outlast it, and where the EBUSY comes from is not known yet (each
/// retry is logged at warn to find out).
async fn add_addr(h: &Handle, idx: u32, addr: IpAddr, prefix: u8) -> std::result::Result<(), rtnetlink::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut tries = 0u32;
    loop {
        match h.address().add(idx, addr, prefix).execute().await {
            Ok(()) => {
                if tries > 0 {
                    tracing::warn!(%addr, ifindex = idx, tries, "address add: succeeded after EBUSY");
                }
                return Ok(());
            }
            Err(e) if errno(&e) == Some(EEXIST) => return Ok(()),
            Err(e) if errno(&e) == Some(EBUSY) && std::time::Instant::now() < deadline => {
                tries += 1;
                tracing::warn!(%addr, ifindex = idx, tries, "address add: EBUSY, retrying");
                tokio::time::sleep(std::time::Duration::from_millis((10 * u64::from(tries)).min(200))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A netlink connection to the namespace it was opened in.
#[derive(Clone)]
pub struct Netlink {
    h: Handle,
}

impl Netlink {
    /// Open a connection in the calling thread's namespace; must be called inside a tokio
    /// runtime (the connection task is spawned on it).
    pub fn open() -> Result<Self> {
        let (conn, h, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self { h })
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>> {
        let mut s = self.h.link().get().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(m) => Ok(m),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(nl(e)),
        }
    }

    /// Interface index by name (`None` when absent).
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link_by_name(name).await?.map(|m| m.header.index))
    }

    async fn index(&self, name: &str) -> Result<u32> {
        self.link_index(name).await?.ok_or_else(|| NetlinkError::NoSuchLink(name.to_string()))
    }

    /// Create a bridge (no-op when it exists) with this MTU; returns its index.
    pub async fn create_bridge(&self, name: &str, mtu: u32) -> Result<u32> {
        if let Some(i) = self.link_index(name).await? {
            self.set_mtu(i, mtu).await?;
            return Ok(i);
        }
        // A fixed MAC (02:42 + random, like docker0): a bridge without one takes the lowest MAC
        // of its ports and changes it as sandboxes come and go, which would make the gateway
        // MAC the dataplane writes into frames stale.
        let mut mac = [0x02u8, 0x42, 0, 0, 0, 0];
        rand::RngExt::fill(&mut rand::rng(), &mut mac[2..]);
        match self.h.link().add(LinkBridge::new(name).mtu(mtu).address(mac.to_vec()).build()).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(nl(e)),
        }
        self.index(name).await
    }

    async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.h.link().set(LinkUnspec::new_with_index(index).mtu(mtu).build()).execute().await.map_err(nl)
    }

    pub async fn set_up(&self, name: &str) -> Result<()> {
        let i = self.index(name).await?;
        self.h.link().set(LinkUnspec::new_with_index(i).up().build()).execute().await.map_err(nl)
    }

    /// Add `addr/prefix` to a link unless it is already there.
    pub async fn add_address(&self, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        // No address dump first: EEXIST already means "there".
        let i = self.index(name).await?;
        add_addr(&self.h, i, IpAddr::V4(addr), prefix).await.map_err(nl)
    }

    /// Give a link an IPv6 address without DAD (the bridge's v6 gateway; idempotent).
    pub async fn add_address6(&self, name: &str, addr: Ipv6Addr, prefix: u8) -> Result<()> {
        let i = self.index(name).await?;
        ipv6_conf(name, "disable_ipv6", "0");
        ipv6_conf(name, "accept_dad", "0");
        add_addr(&self.h, i, IpAddr::V6(addr), prefix).await.map_err(nl)
    }

    /// IPv6 routes of the namespace's main table as prefixes (the default route aside), to
    /// keep a pool's v6 subnet off prefixes the host already routes.
    pub async fn ipv6_routes(&self) -> Result<Vec<(Ipv6Addr, u8)>> {
        let mut s = self.h.route().get(RouteMessageBuilder::<Ipv6Addr>::new().build()).execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl)? {
            let len = m.header.destination_prefix_length;
            if len == 0 {
                continue;
            }
            for a in &m.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet6(d)) = a
                    && !d.is_unicast_link_local()
                    && !d.is_multicast()
                {
                    out.push((*d, len));
                }
            }
        }
        Ok(out)
    }

    /// Global (non link-local) IPv6 addresses of a link with their prefix lengths.
    pub async fn ipv6_addrs_cidr(&self, name: &str) -> Result<Vec<(Ipv6Addr, u8)>> {
        let i = self.index(name).await?;
        let mut s = self.h.address().get().set_link_index_filter(i).execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl)? {
            if m.header.index != i {
                continue;
            }
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V6(v6)) = a
                    && !v6.is_unicast_link_local()
                {
                    out.push((*v6, m.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// IPv4 addresses of a link with their prefix lengths.
    pub async fn ipv4_addrs_cidr(&self, name: &str) -> Result<Vec<(Ipv4Addr, u8)>> {
        let i = self.index(name).await?;
        let mut s = self.h.address().get().set_link_index_filter(i).execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl)? {
            if m.header.index != i {
                continue;
            }
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V4(v4)) = a {
                    out.push((*v4, m.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    pub async fn ipv4_addrs(&self, name: &str) -> Result<Vec<Ipv4Addr>> {
        Ok(self.ipv4_addrs_cidr(name).await?.into_iter().map(|(a, _)| a).collect())
    }

    /// Create a veth pair `host` <-> `peer` with this MTU (no-op when `host` exists).
    pub async fn create_veth(&self, host: &str, peer: &str, mtu: u32) -> Result<()> {
        if self.link_index(host).await?.is_some() {
            return Ok(());
        }
        match self.h.link().add(LinkVeth::new(host, peer).mtu(mtu).build()).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(nl(e)),
        }
        // The peer gets the MTU too (the kernel copies it only on some versions).
        if let Some(p) = self.link_index(peer).await? {
            self.set_mtu(p, mtu).await?;
        }
        Ok(())
    }

    /// One request for a sandbox's veth pair: `host` (down, enslaved to the bridge with index
    /// `bridge`) and its peer with its final name, MAC and MTU, created directly inside the
    /// namespace `ns` (here when `None`). No rename, no move between namespaces (each move
    /// waits for an RCU grace period), no lookups by name in between. Returns `host`'s index.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_veth_on_bridge(
        &self,
        host: &str,
        bridge: u32,
        mtu: u32,
        peer: &str,
        mac: [u8; 6],
        ns: Option<BorrowedFd<'_>>,
        group: u32,
    ) -> Result<u32> {
        let mut p =
            rtnetlink::LinkMessageBuilder::<LinkUnspec>::new().name(peer.to_string()).mtu(mtu).address(mac.to_vec());
        if let Some(fd) = ns {
            p = p.setns_by_fd(fd.as_raw_fd());
        }
        let msg = rtnetlink::LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .mtu(mtu)
            .controller(bridge)
            .link_group(group)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(p.build())))
            .build();
        self.h.link().add(msg).execute().await.map_err(nl)?;
        self.index(host).await
    }

    /// Set a link up by index.
    pub async fn set_up_index(&self, index: u32) -> Result<()> {
        self.h.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await.map_err(nl)
    }

    /// Take a link off its bridge and down, by index (Ok when it is gone): a bridge port's
    /// removal waits for an expedited RCU grace period at most, where deleting the link waits
    /// for every pending RCU callback (`rcu_barrier`, 10-20 ms on a loaded machine).
    pub async fn unbridge_index(&self, index: u32) -> Result<()> {
        match self.h.link().set(LinkUnspec::new_with_index(index).controller(0).down().build()).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(()),
            Err(e) => Err(nl(e)),
        }
    }

    /// Delete many links at once: each is put in link group `group`, then the group is deleted
    /// in one request, so the kernel unregisters them as one batch (one RCU grace period for
    /// all instead of one per link, ~20 ms each on a loaded machine). Links already gone are
    /// skipped; a kernel refusing group deletion gets one request per link.
    pub async fn delete_links(&self, names: &[String], group: u32) -> Result<()> {
        // Links made in the group already (`create_veth_on_bridge`): one request. Each link
        // moved into it here is one request under the rtnl lock, and its change notified.
        let mut del = self.h.link().del(0);
        del.message_mut().attributes.push(LinkAttribute::Group(group));
        let _ = del.execute().await;
        let mut grouped = 0;
        for n in names {
            let r = self.h.link().set(LinkUnspec::new_with_name(n).link_group(group).build()).execute().await;
            match r {
                Ok(()) => grouped += 1,
                Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => {}
                Err(e) => return Err(nl(e)),
            }
        }
        if grouped == 0 {
            return Ok(());
        }
        let mut del = self.h.link().del(0);
        del.message_mut().attributes.push(LinkAttribute::Group(group));
        match del.execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(()),
            Err(_) => {
                for n in names {
                    self.delete_link(n).await?;
                }
                Ok(())
            }
        }
    }

    /// Set a link's MAC address.
    pub async fn set_mac(&self, name: &str, mac: [u8; 6]) -> Result<()> {
        let i = self.index(name).await?;
        self.h.link().set(LinkUnspec::new_with_index(i).address(mac.to_vec()).build()).execute().await.map_err(nl)
    }

    /// The bridge a link is enslaved to (its index), if any.
    pub async fn master_of(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link_by_name(name).await?.and_then(|m| {
            m.attributes.iter().find_map(|a| if let LinkAttribute::Controller(c) = a { Some(*c) } else { None })
        }))
    }

    /// Attach `name` to bridge `bridge`.
    pub async fn set_master(&self, name: &str, bridge: &str) -> Result<()> {
        let i = self.index(name).await?;
        let b = self.index(bridge).await?;
        self.h.link().set(LinkUnspec::new_with_index(i).controller(b).build()).execute().await.map_err(nl)
    }

    /// Move a link into the namespace referred to by `ns`.
    pub async fn move_to_netns(&self, name: &str, ns: BorrowedFd<'_>) -> Result<()> {
        let i = self.index(name).await?;
        self.h.link().set(LinkUnspec::new_with_index(i).setns_by_fd(ns.as_raw_fd()).build()).execute().await.map_err(nl)
    }

    /// Delete a link (Ok when absent). Deleting one end of a veth removes both.
    pub async fn delete_link(&self, name: &str) -> Result<()> {
        let Some(i) = self.link_index(name).await? else { return Ok(()) };
        match self.h.link().del(i).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(()),
            Err(e) => Err(nl(e)),
        }
    }

    /// Names of the links enslaved to `bridge`.
    pub async fn bridge_ports(&self, bridge: &str) -> Result<Vec<String>> {
        let Some(b) = self.link_index(bridge).await? else { return Ok(Vec::new()) };
        let mut s = self.h.link().get().execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl)? {
            let master =
                m.attributes.iter().find_map(|a| if let LinkAttribute::Controller(c) = a { Some(*c) } else { None });
            if master == Some(b)
                && let Some(n) = link_name(&m)
            {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Every link's name and kind (`bridge`, `veth`, ... or "" for physical ones).
    pub async fn links(&self) -> Result<Vec<(String, String)>> {
        let mut s = self.h.link().get().execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl)? {
            let kind = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                        LinkInfo::Kind(k) => Some(k.to_string()),
                        _ => None,
                    }),
                    _ => None,
                })
                .unwrap_or_default();
            if let Some(n) = link_name(&m) {
                out.push((n, kind));
            }
        }
        Ok(out)
    }

    /// Destinations of the IPv4 routes of the main table (to avoid overlapping subnets).
    pub async fn ipv4_routes(&self) -> Result<Vec<Ipv4Net>> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut s = self.h.route().get(msg).execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl)? {
            let plen = m.header.destination_prefix_length;
            if plen == 0 {
                continue;
            }
            for a in &m.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet(d)) = a
                    && let Ok(n) = Ipv4Net::new(*d, plen)
                {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    /// Interfaces that hold an IPv4 default route (netd's default uplinks).
    pub async fn default_route_links(&self) -> Result<Vec<String>> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut s = self.h.route().get(msg).execute();
        let mut idx = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl)? {
            if m.header.destination_prefix_length != 0 || m.header.table != 254 {
                continue;
            }
            for a in &m.attributes {
                if let RouteAttribute::Oif(i) = a
                    && !idx.contains(i)
                {
                    idx.push(*i);
                }
            }
        }
        let mut out = Vec::new();
        for i in idx {
            let mut s = self.h.link().get().match_index(i).execute();
            if let Some(m) = s.try_next().await.map_err(nl)?
                && let Some(n) = link_name(&m)
            {
                out.push(n);
            }
        }
        Ok(out)
    }
}

/// A link of the daemon's namespace as uplink selection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    pub name: String,
    pub index: u32,
    /// `veth`, `bridge`, ... or "" for physical devices.
    pub kind: String,
    /// The bridge (or bond) it is enslaved to.
    pub master: Option<u32>,
    /// Ethernet framing.
    pub ether: bool,
    /// A layer-3 device without link-layer header (tun, WireGuard, PPP, ipip): an uplink too,
    /// served by the L3 variant of the uplink program.
    pub l3: bool,
    pub addrs: Vec<Ipv4Addr>,
    /// IPv6 addresses, global ones before link-local ones.
    pub addrs6: Vec<Ipv6Addr>,
}

impl Netlink {
    /// Every link with its IPv4 addresses: one link dump, one address dump.
    pub async fn host_links(&self) -> Result<Vec<HostLink>> {
        let mut s = self.h.link().get().execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl)? {
            let Some(name) = link_name(&m) else { continue };
            let mut kind = String::new();
            let mut master = None;
            for a in &m.attributes {
                match a {
                    LinkAttribute::LinkInfo(infos) => {
                        for i in infos {
                            if let LinkInfo::Kind(k) = i {
                                kind = k.to_string();
                            }
                        }
                    }
                    LinkAttribute::Controller(c) => master = Some(*c),
                    _ => {}
                }
            }
            use rtnetlink::packet_route::link::LinkLayerType as T;
            let ether = m.header.link_layer_type == T::Ether;
            let l3 = matches!(m.header.link_layer_type, T::None | T::Ppp | T::Tunnel);
            out.push(HostLink {
                name,
                index: m.header.index,
                kind,
                master,
                ether,
                l3,
                addrs: Vec::new(),
                addrs6: Vec::new(),
            });
        }
        let mut s = self.h.address().get().execute();
        while let Some(m) = s.try_next().await.map_err(nl)? {
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V4(v4)) = a
                    && let Some(l) = out.iter_mut().find(|l| l.index == m.header.index)
                    && !l.addrs.contains(v4)
                {
                    l.addrs.push(*v4);
                }
                if let AddressAttribute::Address(IpAddr::V6(v6)) = a
                    && let Some(l) = out.iter_mut().find(|l| l.index == m.header.index)
                    && !l.addrs6.contains(v6)
                {
                    l.addrs6.push(*v6);
                }
            }
        }
        for l in &mut out {
            l.addrs6.sort_by_key(|a| a.is_unicast_link_local());
        }
        Ok(out)
    }
}

/// A netlink socket of the calling thread's namespace subscribed to link and IPv4 address
/// changes; each message received means "look again". Call inside a tokio runtime.
pub fn watch_links() -> Result<futures::channel::mpsc::UnboundedReceiver<()>> {
    use futures::StreamExt;
    let (conn, _h, mut msgs) = rtnetlink::new_multicast_connection(&[
        rtnetlink::MulticastGroup::Link,
        rtnetlink::MulticastGroup::Ipv4Ifaddr,
        rtnetlink::MulticastGroup::Ipv6Ifaddr,
    ])?;
    tokio::spawn(conn);
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        while msgs.next().await.is_some() {
            if tx.unbounded_send(()).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// netd's own veth names (`veth` + 7 hex on the host side, `vp` + 7 hex for the peer before it
/// moves into the sandbox); Docker names its veths the same way.
pub fn is_sandbox_veth(name: &str) -> bool {
    let hex7 = |s: &str| s.len() == 7 && s.bytes().all(|b| b.is_ascii_hexdigit());
    name.strip_prefix("veth").is_some_and(hex7) || name.strip_prefix("vp").is_some_and(hex7)
}

/// The uplinks among `links`: with `given` (`--uplink`), exactly those that exist; otherwise
/// every link except `lo`, bridges, bridge (or bond) ports, sandbox veths and devices that are
/// neither Ethernet nor plain layer 3 (Docker's `! -o bridge`: everything that is not a bridge
/// leads out, VPN devices such as tun and WireGuard included).
pub fn select_uplinks<'a>(links: &'a [HostLink], given: &[String]) -> Vec<&'a HostLink> {
    if !given.is_empty() {
        return given.iter().filter_map(|g| links.iter().find(|l| &l.name == g)).collect();
    }
    links
        .iter()
        .filter(|l| {
            l.name != "lo" && (l.ether || l.l3) && l.kind != "bridge" && l.master.is_none() && !is_sandbox_veth(&l.name)
        })
        .collect()
}

fn link_name(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| if let LinkAttribute::IfName(n) = a { Some(n.clone()) } else { None })
}

/// The sandbox side of an endpoint: rename the moved veth peer, set MAC/MTU/address, bring it
/// up, and add the default route.
#[derive(Debug, Clone)]
pub struct SandboxIface {
    pub tmp_name: String,
    pub name: String,
    pub mac: [u8; 6],
    /// The IPv4 address and prefix length (`None`: an IPv6-only network).
    pub addr: Option<(Ipv4Addr, u8)>,
    pub mtu: u32,
    pub gateway: Option<Ipv4Addr>,
    /// An IPv4-only network: IPv6 off on the interface (no link-local address, no IPv6 at all).
    pub disable_ipv6: bool,
    /// A dual-stack network: the sandbox's global IPv6 address (added without DAD, as Docker
    /// does) and, with `gateway`, a default IPv6 route via the network's v6 gateway.
    pub addr6: Option<(Ipv6Addr, u8)>,
    pub gateway6: Option<Ipv6Addr>,
}

/// Set an IPv6 sysctl of an interface of the calling thread's namespace (best effort).
pub fn ipv6_conf(ifname: &str, key: &str, value: &str) {
    let p = format!("/proc/sys/net/ipv6/conf/{ifname}/{key}");
    if let Err(e) = std::fs::write(&p, value)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%ifname, key, error = %e, "setting an IPv6 sysctl");
    }
}

/// Turn IPv6 off on an interface of the calling thread's network namespace (best effort: a
/// kernel without IPv6 has nothing to turn off).
pub fn disable_ipv6(ifname: &str) {
    let p = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    if let Err(e) = std::fs::write(&p, "1")
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%ifname, error = %e, "disabling IPv6");
    }
}

/// Inside the namespace at `netns`: bring `lo` up and configure `iface` (if any). Blocking
/// (runs on its own thread with its own netlink socket); call from `spawn_blocking`.
pub fn configure_sandbox(netns: &Path, iface: Option<SandboxIface>) -> Result<()> {
    crate::netns::block_on_in(netns, move || async move {
        let n = Netlink::open()?;
        let lo = n.index("lo").await?;
        n.h.link().set(LinkUnspec::new_with_index(lo).up().build()).execute().await.map_err(nl)?;
        let Some(i) = iface else { return Ok(()) };
        let idx = match n.link_index(&i.tmp_name).await? {
            Some(x) => x,
            None => n.index(&i.name).await?, // already renamed (retry)
        };
        // A peer created under a temporary name is renamed (and given its MAC and MTU) here;
        // one created inside the namespace with its final name has them already.
        if i.tmp_name != i.name {
            n.h.link()
                .set(
                    LinkUnspec::new_with_index(idx)
                        .down()
                        .name(i.name.clone())
                        .address(i.mac.to_vec())
                        .mtu(i.mtu)
                        .build(),
                )
                .execute()
                .await
                .map_err(nl)?;
        }
        if i.disable_ipv6 && i.addr6.is_none() {
            disable_ipv6(&i.name);
        }
        if let Some((a4, p4)) = i.addr {
            add_addr(&n.h, idx, IpAddr::V4(a4), p4).await.map_err(nl)?;
        }
        if let Some((a6, p6)) = i.addr6 {
            // Docker adds the address with IFA_F_NODAD: no DAD wait before it can be used; the
            // address is the network's IPAM's, no router advertisement configures anything.
            ipv6_conf(&i.name, "disable_ipv6", "0");
            ipv6_conf(&i.name, "accept_dad", "0");
            ipv6_conf(&i.name, "accept_ra", "0");
            add_addr(&n.h, idx, IpAddr::V6(a6), p6).await.map_err(nl)?;
        }
        n.h.link().set(LinkUnspec::new_with_index(idx).up().build()).execute().await.map_err(nl)?;
        if let Some(gw) = i.gateway {
            let r = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).output_interface(idx).build();
            match n.h.route().add(r).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(nl(e)),
            }
        }
        if let Some(gw6) = i.gateway6 {
            let r = RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw6).output_interface(idx).build();
            match n.h.route().add(r).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(nl(e)),
            }
        }
        Ok(())
    })?
}

/// Inside the namespace at `netns`: make `ifname` hold the default route of each family given
/// (`gw4`, `gw6`), replacing one through another interface (the sandbox's gateway endpoint
/// moved: Docker's `updateGateway`). Blocking; call from `spawn_blocking`.
pub fn set_default_routes(netns: &Path, ifname: &str, gw4: Option<Ipv4Addr>, gw6: Option<Ipv6Addr>) -> Result<()> {
    let ifname = ifname.to_string();
    crate::netns::block_on_in(netns, move || async move {
        let n = Netlink::open()?;
        let idx = n.index(&ifname).await?;
        if let Some(gw) = gw4 {
            let r = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).output_interface(idx).build();
            n.h.route().add(r).replace().execute().await.map_err(nl)?;
        }
        if let Some(gw6) = gw6 {
            let r = RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw6).output_interface(idx).build();
            n.h.route().add(r).replace().execute().await.map_err(nl)?;
        }
        Ok(())
    })?
}

/// Inside the namespace at `netns`: a route to `peer` (the network's v4 gateway, the address
/// NAT46 flows come from) through `ifname` with `mtu`, so the sandbox's datagrams and
/// fragments to it still fit an IPv6 packet of the device's MTU after NAT64 (28 bytes more:
/// the IPv6 header's 20, a fragment header's 8). Replaces an earlier one. Blocking; call from
/// `spawn_blocking`.
pub fn set_peer_mtu(netns: &Path, ifname: &str, peer: Ipv4Addr, mtu: u32) -> Result<()> {
    use rtnetlink::packet_route::route::{RouteMetric, RouteScope};
    let ifname = ifname.to_string();
    crate::netns::block_on_in(netns, move || async move {
        let n = Netlink::open()?;
        let idx = n.index(&ifname).await?;
        let mut r = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(peer, 32)
            .output_interface(idx)
            .scope(RouteScope::Link)
            .build();
        r.attributes.push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        n.h.route().add(r).replace().execute().await.map_err(nl)?;
        Ok(())
    })?
}

/// The IPv4 addresses of `ifname` inside the namespace at `netns` (`None` when the link is
/// absent there). Blocking; call from `spawn_blocking`.
pub fn addrs_in(netns: &Path, ifname: &str) -> Result<Option<Vec<(Ipv4Addr, u8)>>> {
    let ifname = ifname.to_string();
    crate::netns::block_on_in(netns, move || async move {
        let n = Netlink::open()?;
        if n.link_index(&ifname).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(n.ipv4_addrs_cidr(&ifname).await?))
    })?
}

/// Remove an IPv4 address (Ok when absent).
pub async fn del_address(n: &Netlink, name: &str, addr: Ipv4Addr, prefix: u8) -> Result<()> {
    let Some(i) = n.link_index(name).await? else { return Ok(()) };
    let mut s = n.h.address().get().set_link_index_filter(i).execute();
    while let Some(m) = s.try_next().await.map_err(nl)? {
        let hit = m.header.prefix_len == prefix
            && m.attributes.iter().any(|a| matches!(a, AddressAttribute::Address(IpAddr::V4(v)) if *v == addr));
        if hit {
            match n.h.address().del(m).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => {}
                Err(e) => return Err(nl(e)),
            }
        }
    }
    Ok(())
}

impl Netlink {
    /// Bridge port hairpin mode of `name` (frames may leave by the port they came in by), as
    /// Docker sets it with `--userland-proxy=false` for a sandbox reaching its own published
    /// port through the host's address.
    pub async fn set_hairpin(&self, name: &str, on: bool) -> Result<()> {
        use rtnetlink::{
            packet_core::DefaultNla,
            packet_route::{AddressFamily, link::LinkProtoInfoBridge},
        };
        // `bridge link set dev NAME hairpin on`: RTM_SETLINK, family AF_BRIDGE, nested
        // IFLA_PROTINFO with IFLA_BRPORT_MODE (4).
        const IFLA_BRPORT_MODE: u16 = 4;
        let i = self.index(name).await?;
        let mut m = LinkMessage::default();
        m.header.index = i;
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes.push(LinkAttribute::ProtoInfoBridge(vec![LinkProtoInfoBridge::Other(DefaultNla::new(
            IFLA_BRPORT_MODE,
            vec![u8::from(on)],
        ))]));
        self.h.link().set(m).execute().await.map_err(nl)
    }

    /// The MAC address of a link (`None` when the link is absent).
    pub async fn link_mac(&self, name: &str) -> Result<Option<[u8; 6]>> {
        Ok(self.link_by_name(name).await?.and_then(|m| link_mac(&m)))
    }
}

fn link_mac(m: &LinkMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(b) if b.len() == 6 => Some([b[0], b[1], b[2], b[3], b[4], b[5]]),
        _ => None,
    })
}

/// An interface inside a namespace, as CNI CHECK looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceState {
    pub mac: [u8; 6],
    pub addrs: Vec<(Ipv4Addr, u8)>,
    /// Global IPv6 addresses.
    pub addrs6: Vec<(Ipv6Addr, u8)>,
    /// Gateway of the main table's IPv4 default route through this interface.
    pub default_gw: Option<Ipv4Addr>,
    /// Gateway of the main table's IPv6 default route through this interface.
    pub default_gw6: Option<Ipv6Addr>,
}

impl Netlink {
    /// The gateway of the main table's default route through interface `idx`, in the address
    /// family of the dump request `req`.
    async fn default_gateway(&self, req: RouteMessage, idx: u32) -> Result<Option<RouteAddress>> {
        let mut s = self.h.route().get(req).execute();
        let mut found = None;
        while let Some(m) = s.try_next().await.map_err(nl)? {
            if m.header.destination_prefix_length != 0 || m.header.table != 254 {
                continue;
            }
            let oif = m.attributes.iter().any(|a| matches!(a, RouteAttribute::Oif(i) if *i == idx));
            let gw = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(g) => Some(g.clone()),
                _ => None,
            });
            if oif && gw.is_some() {
                found = gw;
            }
        }
        Ok(found)
    }
}

/// `ifname` inside the namespace at `netns` (`None` when absent there). Blocking; call from
/// `spawn_blocking`.
pub fn iface_in(netns: &Path, ifname: &str) -> Result<Option<IfaceState>> {
    let ifname = ifname.to_string();
    crate::netns::block_on_in(netns, move || async move {
        let n = Netlink::open()?;
        let Some(link) = n.link_by_name(&ifname).await? else { return Ok(None) };
        let idx = link.header.index;
        let addrs = n.ipv4_addrs_cidr(&ifname).await?;
        let default_gw = match n.default_gateway(RouteMessageBuilder::<Ipv4Addr>::new().build(), idx).await? {
            Some(RouteAddress::Inet(g)) => Some(g),
            _ => None,
        };
        let addrs6 = n.ipv6_addrs_cidr(&ifname).await?;
        let default_gw6 = match n.default_gateway(RouteMessageBuilder::<Ipv6Addr>::new().build(), idx).await? {
            Some(RouteAddress::Inet6(g)) => Some(g),
            _ => None,
        };
        Ok(Some(IfaceState { mac: link_mac(&link).unwrap_or_default(), addrs, addrs6, default_gw, default_gw6 }))
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, kind: &str, master: Option<u32>, ether: bool) -> HostLink {
        HostLink {
            name: name.into(),
            index: 0,
            kind: kind.into(),
            master,
            ether,
            l3: false,
            addrs: Vec::new(),
            addrs6: Vec::new(),
        }
    }

    #[test]
    fn every_interface_but_bridges_their_ports_and_sandbox_veths_is_an_uplink() {
        let links = [
            link("lo", "", None, false),
            link("eth0", "", None, true),
            link("lan0", "veth", None, true),
            link("eth0.100", "vlan", None, true),
            link("netd0", "bridge", None, true),
            link("docker0", "bridge", None, true),
            link("vethab12cd3", "veth", Some(7), true),
            link("veth0123abc", "veth", None, true), // a sandbox veth before it is enslaved
            link("vp0123abc", "veth", None, true),
            link("vethother", "veth", Some(9), true),
            HostLink { l3: true, ..link("wg0", "wireguard", None, false) },
            HostLink { l3: true, ..link("tun0", "tun", None, false) },
            link("sit0", "sit", None, false),
        ];
        let names = |v: Vec<&HostLink>| v.into_iter().map(|l| l.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(select_uplinks(&links, &[])), ["eth0", "lan0", "eth0.100", "wg0", "tun0"]);
        // --uplink: exactly the named ones that exist.
        let given = ["lan0".to_string(), "nosuch".to_string()];
        assert_eq!(names(select_uplinks(&links, &given)), ["lan0"]);
        assert!(is_sandbox_veth("veth0123abc") && !is_sandbox_veth("veth0") && !is_sandbox_veth("vethXYZ1234"));
    }
}
