//! The per-run floor of a TC program on this machine (issue 19): two minimal programs,
//! assembled here by hand and attached with TCX links to the raw path's uplink (ingress and
//! egress of the host's `up0`), measured by the same kernel run-time statistics as netd's.
//!
//! - `floor_empty`: returns TC_ACT_OK at once. What the kernel's accounting and the TCX
//!   dispatch cost per run, with no work at all.
//! - `floor_lookup`: one `bpf_map_lookup_elem` of a 16-byte key that is present in a 65,536
//!   entry LRU hash with 56-byte values (the shape of netd's conntrack, `CT_V4`), then TC_ACT_OK.
//!   The least an established-flow program can do: it must find its flow.
//! - `floor_write`: the same lookup, then one byte of the packet read and written back with
//!   `bpf_skb_load_bytes` / `bpf_skb_store_bytes`. A TCP segment arrives cloned (its sender keeps
//!   the original for retransmission), so the first write into it copies the packet's head
//!   (`skb_ensure_writable`): what any program that rewrites a header pays, NAT of every kind
//!   (nf_nat's mangling too).
//!
//! netd's programs also parse the packet, rewrite addresses and checksums and redirect; these
//! say how much of a run's time is there before any of that.
//!
//! - `floor_nat`: the least a correct NAT hop does for an established packet, written in Rust
//!   like netd's programs (`netd-ebpf/src/floor.rs`, the `netd-floor` object): parse, one
//!   conntrack lookup, the routed hop's TTL and MTU checks, the rewrite with both checksums, the
//!   entry's MACs and timestamp, and the redirect. Attached like netd's published-port path (the
//!   uplink's ingress delivering with `bpf_redirect_peer`, the sandbox veth's ingress sending the
//!   reply out with `bpf_redirect`) in the raw sandbox world, its entries translating each flow
//!   to itself.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Result, bail};

pub const EMPTY: &str = "floor_empty";
pub const LOOKUP: &str = "floor_lookup";
pub const WRITE: &str = "floor_write";
/// The prefix of `floor_nat_peer` and `floor_nat_fib`.
pub const NAT: &str = "floor_nat";

const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_PROG_LOAD: i64 = 5;
const BPF_LINK_CREATE: i64 = 28;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// One eBPF instruction: opcode, dst/src registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0xf);
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

/// The bpf(2) syscall with an attr buffer; the fd it returns, if any.
fn bpf(cmd: i64, attr: &mut [u8]) -> std::io::Result<i64> {
    // SAFETY: attr is a valid, writable buffer of the given size that outlives the call; the
    // kernel reads (and for some commands writes) at most that many bytes.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r) }
}

fn put32(a: &mut [u8], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(a: &mut [u8], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: a new descriptor the kernel just returned to us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// An LRU hash shaped like CT_V4 holding the all-zero key.
fn conntrack_like_map() -> Result<OwnedFd> {
    let mut a = [0u8; 128];
    put32(&mut a, 0, BPF_MAP_TYPE_LRU_HASH);
    put32(&mut a, 4, 16);
    put32(&mut a, 8, 56);
    put32(&mut a, 12, 65_536);
    let map = owned(bpf(BPF_MAP_CREATE, &mut a)?);
    let (key, value) = ([0u8; 16], [0u8; 56]);
    let mut u = [0u8; 32];
    put32(&mut u, 0, map.as_raw_fd() as u32);
    put64(&mut u, 8, key.as_ptr() as u64);
    put64(&mut u, 16, value.as_ptr() as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &mut u)?;
    Ok(map)
}

fn load(name: &str, insns: &[[u8; 8]], attach: u32) -> Result<OwnedFd> {
    let code: Vec<u8> = insns.concat();
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut a = [0u8; 128];
    put32(&mut a, 0, BPF_PROG_TYPE_SCHED_CLS);
    put32(&mut a, 4, insns.len() as u32);
    put64(&mut a, 8, code.as_ptr() as u64);
    put64(&mut a, 16, license.as_ptr() as u64);
    put32(&mut a, 24, 1);
    put32(&mut a, 28, log.len() as u32);
    put64(&mut a, 32, log.as_mut_ptr() as u64);
    a[48..48 + name.len()].copy_from_slice(name.as_bytes());
    put32(&mut a, 68, attach);
    match bpf(BPF_PROG_LOAD, &mut a) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            bail!("loading {name}: {e}: {}", String::from_utf8_lossy(&log[..end]))
        }
    }
}

fn link(prog: &OwnedFd, ifindex: u32, attach: u32) -> Result<OwnedFd> {
    let mut a = [0u8; 64];
    put32(&mut a, 0, prog.as_raw_fd() as u32);
    put32(&mut a, 4, ifindex);
    put32(&mut a, 8, attach);
    Ok(owned(bpf(BPF_LINK_CREATE, &mut a)?))
}

/// The instructions of `which` (EMPTY, LOOKUP or WRITE) and the map they use, if any.
fn body(which: &str) -> Result<(Vec<[u8; 8]>, Option<OwnedFd>)> {
    // r0 = 0 (TC_ACT_OK); exit
    let ret = [insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)];
    if which == EMPTY {
        return Ok((ret.to_vec(), None));
    }
    let map = conntrack_like_map()?;
    let mut v = vec![
        // r6 = r1 (the context, kept across the calls)
        insn(0xbf, 6, 1, 0, 0),
        // *(u64 *)(r10 - 8) = 0; *(u64 *)(r10 - 16) = 0: the 16-byte key on the stack
        insn(0x7a, 10, 0, -8, 0),
        insn(0x7a, 10, 0, -16, 0),
        // r2 = r10; r2 += -16
        insn(0xbf, 2, 10, 0, 0),
        insn(0x07, 2, 0, 0, -16),
        // r1 = map (ld_imm64, BPF_PSEUDO_MAP_FD)
        insn(0x18, 1, 1, 0, map.as_raw_fd()),
        insn(0, 0, 0, 0, 0),
        // call bpf_map_lookup_elem
        insn(0x85, 0, 0, 0, 1),
    ];
    if which == WRITE {
        v.extend([
            // bpf_skb_load_bytes(ctx, 22, r10 - 24, 1): the IPv4 TTL byte
            insn(0xbf, 1, 6, 0, 0),
            insn(0xb7, 2, 0, 0, 22),
            insn(0xbf, 3, 10, 0, 0),
            insn(0x07, 3, 0, 0, -24),
            insn(0xb7, 4, 0, 0, 1),
            insn(0x85, 0, 0, 0, 26),
            // if r0 != 0 goto exit (skip the store's 7 instructions)
            insn(0x55, 0, 0, 7, 0),
            // bpf_skb_store_bytes(ctx, 22, r10 - 24, 1, 0): the same byte written back
            insn(0xbf, 1, 6, 0, 0),
            insn(0xb7, 2, 0, 0, 22),
            insn(0xbf, 3, 10, 0, 0),
            insn(0x07, 3, 0, 0, -24),
            insn(0xb7, 4, 0, 0, 1),
            insn(0xb7, 5, 0, 0, 0),
            insn(0x85, 0, 0, 0, 9),
        ]);
    }
    v.extend(ret);
    Ok((v, Some(map)))
}

/// Load `which` (EMPTY, LOOKUP or WRITE) and attach it to both directions of `ifindex` in the
/// calling thread's network namespace. The returned descriptors hold everything: dropping them
/// detaches.
pub fn attach(which: &str, ifindex: u32) -> Result<Vec<OwnedFd>> {
    let (body, map) = body(which)?;
    let mut keep: Vec<OwnedFd> = map.into_iter().collect();
    for dir in [BPF_TCX_INGRESS, BPF_TCX_EGRESS] {
        let prog = load(which, &body, dir)?;
        keep.push(link(&prog, ifindex, dir)?);
        keep.push(prog);
    }
    Ok(keep)
}

/// Load `which` without attaching it (for `BPF_PROG_TEST_RUN`): the program's descriptor, then
/// its map's, if any.
pub fn load_only(which: &str) -> Result<Vec<OwnedFd>> {
    let (body, map) = body(which)?;
    let mut keep = vec![load(which, &body, BPF_TCX_INGRESS)?];
    keep.extend(map);
    Ok(keep)
}

/// Load [`NAT`] and attach it like netd's published-port path, in the calling thread's network
/// namespace: `floor_nat_peer` on `uplink`'s ingress (a tcx link, as netd's uplink), and
/// `floor_nat_fib` on the host-side sandbox veth `veth`'s ingress (a `cls_bpf` filter, as netd's
/// sandbox veths; it goes with the device). Dropping the returned object detaches the link.
pub fn attach_nat(uplink: &str, veth: &str) -> Result<aya::Ebpf> {
    use std::os::fd::AsFd;

    use anyhow::Context;
    use aya::programs::{SchedClassifier, TcAttachType};
    let mut bpf = aya::Ebpf::load(netd::ebpf::FLOOR_OBJECT).context("loading netd-floor")?;
    for name in ["floor_nat_peer", "floor_nat_fib"] {
        let p: &mut SchedClassifier = bpf.program_mut(name).with_context(|| format!("{name} missing"))?.try_into()?;
        p.load().with_context(|| format!("loading {name}"))?;
        if name == "floor_nat_peer" {
            p.attach(uplink, TcAttachType::Ingress).with_context(|| format!("attaching {name} to {uplink}"))?;
        } else {
            let idx = nix::net::if_::if_nametoindex(veth)?;
            netd::ebpf::cls_bpf_attach(p.fd()?.as_fd(), idx, name)
                .with_context(|| format!("attaching {name} to {veth}"))?;
        }
    }
    Ok(bpf)
}

/// Run time (ns) and count of every loaded program whose name starts with `name`, per name
/// (only this bench loads them; [`NAT`] is two programs).
pub fn runtime(name: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut t = std::collections::BTreeMap::new();
    for p in aya::programs::loaded_programs().flatten() {
        if let Some(n) = p.name_as_str().filter(|n| n.starts_with(name)) {
            let e: &mut (u64, u64) = t.entry(n.to_string()).or_default();
            e.0 += p.run_time().as_nanos() as u64;
            e.1 += p.run_count();
        }
    }
    t
}
