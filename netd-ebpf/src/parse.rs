//! Bounds-checked header parsing for XDP and TC contexts.
//!
//! Offsets are re-derived from `data`/`data_end` on every access so the verifier can prove each
//! read; IPv4 options are honoured through the IHL field.
use aya_ebpf::programs::{TcContext, XdpContext};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;

#[derive(Clone, Copy)]
pub enum ParseError {
    /// Not an IPv4 frame: not our business.
    NotIpv4,
    /// IPv4 ethertype but the header is truncated or inconsistent.
    Malformed,
}

/// The fields of an IPv4 packet that the programs decide on (network byte order kept as read).
#[derive(Clone, Copy)]
pub struct L3 {
    pub proto: u8,
    pub ihl_bytes: usize,
    pub saddr: u32,
    pub daddr: u32,
    /// Fragment offset in 8-byte units and the MF flag.
    pub frag_off: u16,
}

#[inline(always)]
fn parse(data: usize, data_end: usize) -> Result<L3, ParseError> {
    if data + ETH_HLEN > data_end {
        return Err(ParseError::NotIpv4);
    }
    // SAFETY: bounds checked above.
    let ethertype = u16::from_be(unsafe { *((data + 12) as *const u16) });
    if ethertype != ETH_P_IP {
        return Err(ParseError::NotIpv4);
    }
    let ip = data + ETH_HLEN;
    if ip + 20 > data_end {
        return Err(ParseError::Malformed);
    }
    // SAFETY: 20 bytes of IPv4 header are within bounds.
    let vihl = unsafe { *(ip as *const u8) };
    if vihl >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let ihl_bytes = ((vihl & 0x0f) as usize) * 4;
    if ihl_bytes < 20 || ip + ihl_bytes > data_end {
        return Err(ParseError::Malformed);
    }
    // SAFETY: as above.
    unsafe {
        Ok(L3 {
            proto: *((ip + 9) as *const u8),
            ihl_bytes,
            saddr: *((ip + 12) as *const u32),
            daddr: *((ip + 16) as *const u32),
            frag_off: u16::from_be(*((ip + 6) as *const u16)),
        })
    }
}

#[inline(always)]
pub fn l3_xdp(ctx: &XdpContext) -> Result<L3, ParseError> {
    parse(ctx.data(), ctx.data_end())
}

#[inline(always)]
pub fn l3_tc(ctx: &TcContext) -> Result<L3, ParseError> {
    parse(ctx.data(), ctx.data_end())
}
