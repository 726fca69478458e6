//! Just enough BTF for netd: the type table of raw BTF (the kernel's `/sys/kernel/btf/vmlinux`,
//! a loaded program's) with names, for [`super::kfunc`], and a loaded program's whole name
//! ([`prog_name`]).
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use aya_obj::generated::{bpf_btf_info, bpf_cmd, bpf_func_info, bpf_prog_info};

/// One type record: its kind, name offset, kind flag, vlen and where its extra records start.
pub struct Ty {
    pub kind: u32,
    pub name: u32,
    pub kflag: bool,
    pub vlen: usize,
    pub extra: usize,
}

pub const KIND_STRUCT: u32 = 4;
pub const KIND_UNION: u32 = 5;
pub const KIND_FUNC: u32 = 12;

/// Raw BTF, its types indexed by id (0: void).
pub struct Btf<'a> {
    b: &'a [u8],
    str_off: usize,
    pub types: Vec<Ty>,
}

impl<'a> Btf<'a> {
    /// The type table of little-endian raw BTF (None: not BTF, or a kind unknown here).
    pub fn parse(b: &'a [u8]) -> Option<Self> {
        if b.get(..2)? != [0x9f, 0xeb] {
            return None;
        }
        let mut t = Btf { b, str_off: 0, types: Vec::new() };
        let hdr_len = t.u32_at(4)? as usize;
        let (type_off, type_len) = (t.u32_at(8)? as usize + hdr_len, t.u32_at(12)? as usize);
        t.str_off = t.u32_at(16)? as usize + hdr_len;
        t.types.push(Ty { kind: 0, name: 0, kflag: false, vlen: 0, extra: 0 });
        let mut o = type_off;
        while o + 12 <= type_off + type_len {
            let info = t.u32_at(o + 4)?;
            let (kind, vlen, kflag) = ((info >> 24) & 0x1f, (info & 0xffff) as usize, info >> 31 == 1);
            let extra = o + 12;
            let size = match kind {
                1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
                3 => 12,                      // ARRAY
                4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
                2 | 7..=12 | 16 | 18 => 0,    // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
                _ => return None,
            };
            let name = t.u32_at(o)?;
            t.types.push(Ty { kind, name, kflag, vlen, extra });
            o = extra + size;
        }
        Some(t)
    }

    pub fn u32_at(&self, o: usize) -> Option<u32> {
        self.b.get(o..o + 4).map(|x| u32::from_le_bytes(x.try_into().unwrap()))
    }

    /// The string at `off` of the string section.
    pub fn name(&self, off: u32) -> Option<&'a [u8]> {
        let s = self.b.get(self.str_off + off as usize..)?;
        Some(&s[..s.iter().position(|&c| c == 0)?])
    }

    /// The id of the first type of `kind` named `n`.
    pub fn find(&self, kind: u32, n: &[u8]) -> Option<usize> {
        self.types.iter().position(|t| t.kind == kind && self.name(t.name) == Some(n))
    }

    /// The name of type `id`.
    pub fn type_name(&self, id: u32) -> Option<&'a str> {
        std::str::from_utf8(self.name(self.types.get(id as usize)?.name)?).ok()
    }
}

fn bpf(cmd: bpf_cmd, attr: &mut [u64; 3]) -> std::io::Result<i64> {
    // SAFETY: the commands used here read at most these 24 bytes of attr and write only into
    // buffers the caller's attr points to.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd as i32, attr.as_mut_ptr(), std::mem::size_of_val(attr) as u32) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r) }
}

/// `BPF_OBJ_GET_INFO_BY_FD` into `info` (a `bpf_*_info`).
fn obj_info<T>(fd: i32, info: &mut T) -> std::io::Result<()> {
    let mut attr = [0u64; 3];
    attr[0] = fd as u32 as u64 | ((std::mem::size_of::<T>() as u64) << 32);
    attr[1] = info as *mut T as u64;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(drop)
}

/// The raw BTF object `id` the kernel holds (a loaded program's or map's).
pub fn raw_btf(id: u32) -> std::io::Result<Vec<u8>> {
    let mut attr = [id as u64, 0, 0];
    let fd = bpf(bpf_cmd::BPF_BTF_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: a new fd, ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: plain data, all-zero valid.
    let mut info: bpf_btf_info = unsafe { std::mem::zeroed() };
    obj_info(fd.as_raw_fd(), &mut info)?;
    let mut buf = vec![0u8; info.btf_size as usize];
    // SAFETY: as above.
    info = unsafe { std::mem::zeroed() };
    info.btf = buf.as_mut_ptr() as u64;
    info.btf_size = buf.len() as u32;
    obj_info(fd.as_raw_fd(), &mut info)?;
    buf.truncate(info.btf_size as usize);
    Ok(buf)
}

/// A loaded program's whole name: the name of its entry function in its BTF (the first
/// `func_info` record), as `bpftool prog show` gives it. The kernel's own `name` keeps 15
/// characters, one for `netd_from_container` and `netd_from_container_v6` (`netd_from_conta`).
/// None: a program without BTF or func_info (or not ours to read).
pub fn prog_name(prog: BorrowedFd<'_>) -> Option<String> {
    // SAFETY: plain data, all-zero valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut fi = bpf_func_info { insn_off: 0, type_id: 0 };
    info.nr_func_info = 1;
    info.func_info_rec_size = std::mem::size_of::<bpf_func_info>() as u32;
    info.func_info = &mut fi as *mut bpf_func_info as u64;
    obj_info(prog.as_raw_fd(), &mut info).ok()?;
    if info.btf_id == 0 || info.nr_func_info == 0 || fi.type_id == 0 {
        return None;
    }
    let raw = raw_btf(info.btf_id).ok()?;
    let btf = Btf::parse(&raw)?;
    (btf.types.get(fi.type_id as usize)?.kind == KIND_FUNC).then(|| btf.type_name(fi.type_id).map(str::to_string))?
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// Loaded programs' names come back whole, past the kernel's 15 characters (root: loads
    /// the object).
    #[test]
    fn loaded_programs_have_their_whole_names() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let l = crate::ebpf::Loaded::load_with_log(crate::ebpf::OBJECT, false).expect("load");
        for name in [netd_common::prog_names::FROM_FOREIGN_BRIDGE, netd_common::v6::progs::FROM_CONTAINER_V6] {
            let fd = l.prog_fd(name).expect("fd");
            assert!(name.len() > 15);
            assert_eq!(prog_name(fd.as_fd()).as_deref(), Some(name));
        }
    }
}
