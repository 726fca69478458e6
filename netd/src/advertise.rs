//! Unsolicited ARP and neighbour advertisements for a freshly configured sandbox interface,
//! as Docker 27+ sends them (libnetwork's `advertiseAddrs`): addresses are handed out again
//! at once when a sandbox leaves, and the next holder of an address may have another MAC (an
//! IPv6-only network's random MACs, `--mac-address`), so the bridge's and the other sandboxes'
//! neighbour entries are told the new MAC instead of sending to the old one until their entry
//! expires (15-45 s reachable, then 5 s of probing).
//!
//! From inside the sandbox's namespace, out of its interface: a gratuitous ARP request
//! (sender = target = the v4 address; RFC 5227's announcement) for IPv4, an unsolicited NA to
//! `ff02::1` with the override flag and the target link-layer address (RFC 4861 7.2.6) for
//! IPv6. The receivers' kernels update an existing entry (a gratuitous ARP overrides the
//! entry whatever its lock time, an NA with O set replaces the address) and create none.
//! The first message goes before the attach returns, the rest in the background, `interval`
//! apart; they stop when the interface is gone. Network options as Docker's:
//! `com.docker.network.advertise_addr_nmsgs` (0-3, default 3; 0 turns it off) and
//! `com.docker.network.advertise_addr_ms` (100-2000, default 1000).
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::Duration,
};

pub const NMSGS_OPT: &str = "com.docker.network.advertise_addr_nmsgs";
pub const INTERVAL_OPT: &str = "com.docker.network.advertise_addr_ms";
pub const NMSGS_DEFAULT: u32 = 3;
pub const INTERVAL_DEFAULT: Duration = Duration::from_millis(1000);

/// The network options' values, Docker's checks and messages.
pub fn options(opts: &std::collections::BTreeMap<String, String>) -> Result<(u32, Duration), String> {
    let n = match opts.get(NMSGS_OPT) {
        None => NMSGS_DEFAULT,
        Some(v) => {
            let n: i64 = v.parse().map_err(|_| format!("value for option {NMSGS_OPT} {v:?} must be an integer"))?;
            if !(0..=3).contains(&n) {
                return Err(format!("{NMSGS_OPT} must be in the range 0 to 3"));
            }
            n as u32
        }
    };
    let ms = match opts.get(INTERVAL_OPT) {
        None => INTERVAL_DEFAULT,
        Some(v) => {
            let ms: i64 =
                v.parse().map_err(|_| format!("value for option {INTERVAL_OPT} {v:?} must be integer milliseconds"))?;
            if !(100..=2000).contains(&ms) {
                return Err(format!("{INTERVAL_OPT} must be in the range 100 to 2000"));
            }
            Duration::from_millis(ms as u64)
        }
    };
    Ok((n, ms))
}

/// A gratuitous ARP request: who-has `ip` tell `ip` (`mac`), broadcast.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // Target hardware address: zero.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// An unsolicited neighbour advertisement of `ip` at `mac` to all nodes (`ff02::1`), from
/// `ip` itself, override flag set, hop limit 255, with the target link-layer address option.
pub fn unsol_na_frame(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 86] {
    let mut f = [0u8; 86];
    let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    f[14] = 0x60;
    f[18..20].copy_from_slice(&32u16.to_be_bytes());
    f[20] = 58;
    f[21] = 255;
    f[22..38].copy_from_slice(&ip.octets());
    f[38..54].copy_from_slice(&dst.octets());
    let icmp = &mut f[54..86];
    icmp[0] = 136;
    icmp[4] = 0x20; // override
    icmp[8..24].copy_from_slice(&ip.octets());
    icmp[24] = 2; // target link-layer address
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac);
    let c = icmp6_checksum(ip, dst, icmp);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f
}

/// The ICMPv6 checksum of `msg` (its checksum field zero) over the pseudo-header.
pub fn icmp6_checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A packet socket opened inside the sandbox's namespace, with the index of its interface
/// there: sends from any thread go out of that interface.
pub struct Sender {
    fd: OwnedFd,
    ifindex: i32,
    frames: Vec<Vec<u8>>,
}

impl Sender {
    /// Open it inside the namespace at `netns` for `ifname` (blocking: a thread of its own
    /// joins the namespace). `None` when there is nothing to advertise.
    pub fn open(
        netns: &Path,
        ifname: &str,
        mac: [u8; 6],
        v4: Option<Ipv4Addr>,
        v6: Option<Ipv6Addr>,
    ) -> std::io::Result<Option<Self>> {
        let mut frames = Vec::new();
        if let Some(ip) = v4 {
            frames.push(garp_frame(mac, ip).to_vec());
        }
        if let Some(ip) = v6 {
            frames.push(unsol_na_frame(mac, ip).to_vec());
        }
        if frames.is_empty() {
            return Ok(None);
        }
        let name = std::ffi::CString::new(ifname).map_err(std::io::Error::other)?;
        let r = crate::netns::run_in(netns, move || -> std::io::Result<(OwnedFd, i32)> {
            // SAFETY: plain syscalls; the descriptor is owned at once.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if ifindex == 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Protocol 0: send only, nothing is received on it.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok((unsafe { OwnedFd::from_raw_fd(fd) }, ifindex as i32))
        })
        .map_err(std::io::Error::other)??;
        Ok(Some(Self { fd: r.0, ifindex: r.1, frames }))
    }

    /// Send each frame once (non-blocking). Err when the interface is gone.
    pub fn send(&self) -> std::io::Result<()> {
        for f in &self.frames {
            // SAFETY: a zeroed sockaddr_ll filled in below, and a frame of the given length.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_ifindex = self.ifindex;
            sa.sll_halen = 6;
            sa.sll_addr[..6].copy_from_slice(&f[0..6]);
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    f.as_ptr().cast(),
                    f.len(),
                    libc::MSG_DONTWAIT,
                    (&sa as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn na_checksum_verifies() {
        let f = unsol_na_frame([2, 0, 0, 0, 0, 9], "fd00:1::2".parse().unwrap());
        let src: Ipv6Addr = "fd00:1::2".parse().unwrap();
        let dst: Ipv6Addr = "ff02::1".parse().unwrap();
        // Over the message with its checksum in place, the sum is 0 (complemented: 0).
        assert_eq!(icmp6_checksum(src, dst, &f[54..86]), 0);
        assert_eq!((f[54], f[58], f[21]), (136, 0x20, 255));
    }

    #[test]
    fn garp_is_a_request_for_its_own_address() {
        let f = garp_frame([2, 0x42, 1, 2, 3, 4], Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(&f[28..32], &f[38..42]);
        assert_eq!(u16::from_be_bytes([f[20], f[21]]), 1);
    }

    #[test]
    fn options_are_dockers() {
        let mut o = std::collections::BTreeMap::new();
        assert_eq!(options(&o).unwrap(), (3, Duration::from_millis(1000)));
        o.insert(NMSGS_OPT.to_string(), "4".to_string());
        assert_eq!(options(&o).unwrap_err(), "com.docker.network.advertise_addr_nmsgs must be in the range 0 to 3");
        o.insert(NMSGS_OPT.to_string(), "0".to_string());
        o.insert(INTERVAL_OPT.to_string(), "nonsense".to_string());
        assert_eq!(
            options(&o).unwrap_err(),
            "value for option com.docker.network.advertise_addr_ms \"nonsense\" must be integer milliseconds"
        );
        o.insert(INTERVAL_OPT.to_string(), "99".to_string());
        assert_eq!(options(&o).unwrap_err(), "com.docker.network.advertise_addr_ms must be in the range 100 to 2000");
        o.insert(INTERVAL_OPT.to_string(), "100".to_string());
        assert_eq!(options(&o).unwrap(), (0, Duration::from_millis(100)));
    }
}
