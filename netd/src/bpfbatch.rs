//! Batched hash-map access (`BPF_MAP_LOOKUP_BATCH` / `BPF_MAP_DELETE_BATCH`).
//!
//! Walking a map with `get_next_key` + `lookup` costs two syscalls per entry: a full conntrack
//! table (262,144 entries) took ~0.3 s that way, and every publish, unpublish, sandbox removal and
//! GC pass scans it. The batch commands move thousands of entries per syscall.
use std::{
    io,
    mem::{MaybeUninit, size_of},
    os::fd::{AsRawFd, BorrowedFd},
};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Entries per syscall; large enough that a hash bucket never overflows it (ENOSPC).
const CHUNK: usize = 4096;

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid `bpf_attr.batch` prefix; the pointers in it point at buffers
    // sized for `count` entries that live for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut BatchAttr, size_of::<BatchAttr>() as u32) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Every (key, value) of a hash map (per-CPU maps excluded), in as few syscalls as possible.
pub fn dump<K: aya::Pod, V: aya::Pod>(fd: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(CHUNK);
    let mut vals: Vec<MaybeUninit<V>> = Vec::with_capacity(CHUNK);
    // The batch token of hash maps is a bucket index (u32); a u64 leaves room.
    let mut token_in = 0u64;
    let mut token_out = 0u64;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &token_in as *const u64 as u64 },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: vals.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = attr.count as usize;
        for i in 0..n.min(CHUNK) {
            // SAFETY: the kernel wrote `count` keys and values; K and V are Pod.
            unsafe { out.push((keys.as_ptr().add(i).read().assume_init(), vals.as_ptr().add(i).read().assume_init())) };
        }
        match r {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}

/// Delete `keys` from a hash map; keys already gone are skipped (an LRU map may have evicted them).
pub fn delete<K: aya::Pod>(fd: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let mut done = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let n = rest.len().min(CHUNK);
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: n as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        let r = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        let k = attr.count as usize;
        done += k;
        match r {
            Ok(()) => rest = &rest[n..],
            // The batch stops at the first missing key: skip it and go on.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => rest = &rest[(k + 1).min(rest.len())..],
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf_elem(cmd: libc::c_long, attr: &mut ElemAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid `bpf_attr` element-command prefix whose key and value pointers
    // point at buffers of the map's key and value sizes that live for the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut ElemAttr, size_of::<ElemAttr>() as u32) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// One entry of a (non per-CPU) map; `None` when the key is absent.
pub fn lookup<K: aya::Pod, V: aya::Pod>(fd: BorrowedFd<'_>, key: &K) -> io::Result<Option<V>> {
    let mut v = MaybeUninit::<V>::uninit();
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key as *const K as u64,
        value: v.as_mut_ptr() as u64,
        ..Default::default()
    };
    match bpf_elem(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        // SAFETY: the kernel wrote the value; V is Pod.
        Ok(()) => Ok(Some(unsafe { v.assume_init() })),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write one entry of a (non per-CPU) map (`BPF_ANY`).
pub fn update<K: aya::Pod, V: aya::Pod>(fd: BorrowedFd<'_>, key: &K, value: &V) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key as *const K as u64,
        value: value as *const V as u64,
        ..Default::default()
    };
    bpf_elem(BPF_MAP_UPDATE_ELEM, &mut attr)
}
