//! The one kfunc netd's programs call, `bpf_cast_to_kern_ctx`, and the one field they read
//! through it, `struct sk_buff`'s `ip_summed` (netd-ebpf's `kctx` module). aya 0.14 has neither
//! kfunc relocations nor CO-RE, so the loader does both here, from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`): the object's calls to the made-up helper [`KCTX_MAGIC`] become
//! kfunc calls (`BPF_PSEUDO_KFUNC_CALL` with the function's BTF id), and the field's byte offset
//! and bit position go into the object's `.rodata` ([`CSUM_OFF`], [`CSUM_SHIFT`]).
//!
//! Without BTF, the kfunc or the field (an older or unusual kernel), the calls become `r0 = 0`
//! and the offset stays 0: the programs then take their helper-based checksum path, and the
//! verifier drops the other as dead code.
use std::borrow::Cow;

/// The made-up helper id netd-ebpf's `kctx` calls (ASCII "netd"), as the loader finds it.
pub const KCTX_MAGIC: i32 = 0x6e65_7464;
/// The `.rodata` globals netd-ebpf's `kctx` reads.
pub const CSUM_OFF: &str = "NETD_SKB_CSUM_OFF";
pub const CSUM_SHIFT: &str = "NETD_SKB_CSUM_SHIFT";

/// What the running kernel's BTF says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernCtx {
    /// BTF id of `bpf_cast_to_kern_ctx` in vmlinux.
    pub cast_id: u32,
    /// Byte offset in `struct sk_buff` of the byte holding `ip_summed`, and its bit position.
    pub csum_off: u32,
    pub csum_shift: u32,
}

/// The running kernel's [`KernCtx`], read once (None: no BTF, or it lacks either).
pub fn kernel() -> Option<KernCtx> {
    static K: std::sync::OnceLock<Option<KernCtx>> = std::sync::OnceLock::new();
    *K.get_or_init(|| {
        let k = std::fs::read("/sys/kernel/btf/vmlinux").ok().and_then(|b| from_btf(&b));
        if k.is_none() {
            tracing::info!(
                "no bpf_cast_to_kern_ctx or sk_buff.ip_summed in the kernel's BTF: NAT checksums through the helpers"
            );
        }
        k
    })
}

/// The object with its magic calls made kfunc calls (`k`) or `r0 = 0` (None), and the values
/// for [`CSUM_OFF`]/[`CSUM_SHIFT`] (0: the programs use the helpers).
pub fn prepare(object: &[u8], k: Option<KernCtx>) -> (Cow<'_, [u8]>, u32, u32) {
    let mut calls = Vec::new();
    for_each_code_section(object, |off, len| {
        let mut i = off;
        while i + 8 <= off + len {
            let insn = &object[i..i + 8];
            // BPF_JMP | BPF_CALL, no registers, no offset, imm = the magic id.
            if insn[0] == 0x85 && insn[1] == 0 && insn[2..4] == [0, 0] && insn[4..8] == KCTX_MAGIC.to_le_bytes() {
                calls.push(i);
            }
            i += 8;
        }
    });
    if calls.is_empty() {
        // An object without the calls (an older one from NETD_EBPF_OBJECT): nothing to do.
        return (Cow::Borrowed(object), 0, 0);
    }
    let mut b = object.to_vec();
    for i in calls {
        match k {
            Some(k) => {
                // src_reg BPF_PSEUDO_KFUNC_CALL (2), imm the BTF id, offset 0 (vmlinux).
                b[i + 1] = 0x20;
                b[i + 4..i + 8].copy_from_slice(&k.cast_id.to_le_bytes());
            }
            None => {
                // BPF_ALU64 | BPF_MOV | BPF_K: r0 = 0 (never run: the verifier drops it).
                b[i..i + 8].copy_from_slice(&[0xb7, 0, 0, 0, 0, 0, 0, 0]);
            }
        }
    }
    let (off, shift) = k.map_or((0, 0), |k| (k.csum_off, k.csum_shift));
    (Cow::Owned(b), off, shift)
}

/// Each executable section (`SHF_EXECINSTR`) of a little-endian ELF64 object: (file offset,
/// size).
fn for_each_code_section(elf: &[u8], mut f: impl FnMut(usize, usize)) {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u64_at = |o: usize| elf.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return;
    }
    let (Some(shoff), Some(shentsize), Some(shnum)) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c)) else { return };
    for s in 0..shnum {
        let h = shoff + s * shentsize;
        let (Some(flags), Some(off), Some(size)) = (u64_at(h + 8), u64_at(h + 0x18), u64_at(h + 0x20)) else {
            return;
        };
        const SHF_EXECINSTR: usize = 4;
        if flags & SHF_EXECINSTR != 0 && off.checked_add(size).is_some_and(|e| e <= elf.len()) {
            f(off, size);
        }
    }
}

/// [`KernCtx`] from raw BTF (the kernel's `vmlinux`): the FUNC `bpf_cast_to_kern_ctx` and the
/// `ip_summed` member of STRUCT `sk_buff` (inside its anonymous structs and unions).
pub fn from_btf(b: &[u8]) -> Option<KernCtx> {
    use super::btf::{Btf, KIND_FUNC, KIND_STRUCT, KIND_UNION};
    let btf = Btf::parse(b)?;
    let cast_id = btf.find(KIND_FUNC, b"bpf_cast_to_kern_ctx")? as u32;
    let skb = btf.find(KIND_STRUCT, b"sk_buff")?;
    // Depth-first through anonymous members: the bit offset of `ip_summed` and its bit size.
    fn walk(btf: &Btf<'_>, id: usize, base: u32, depth: u32) -> Option<(u32, u32)> {
        let t = btf.types.get(id)?;
        if depth > 4 || !(t.kind == KIND_STRUCT || t.kind == KIND_UNION) {
            return None;
        }
        for m in 0..t.vlen {
            let r = t.extra + 12 * m;
            let (mname, mtype, moff) = (btf.u32_at(r)?, btf.u32_at(r + 4)? as usize, btf.u32_at(r + 8)?);
            let (bit, bits) = if t.kflag { (moff & 0xff_ffff, moff >> 24) } else { (moff, 0) };
            if mname == 0 {
                if let Some(x) = walk(btf, mtype, base + bit, depth + 1) {
                    return Some(x);
                }
            } else if btf.name(mname) == Some(b"ip_summed") {
                return Some((base + bit, bits));
            }
        }
        None
    }
    let (bit, bits) = walk(&btf, skb, 0, 0)?;
    // Two bits within one byte (as on every kernel since ip_summed became a bitfield).
    if bits != 2 || bit % 8 > 6 {
        return None;
    }
    Some(KernCtx { cast_id, csum_off: bit / 8, csum_shift: bit % 8 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF gives the values `bpftool btf dump` shows (where it has BTF).
    #[test]
    fn reads_this_kernels_btf() {
        let Ok(b) = std::fs::read("/sys/kernel/btf/vmlinux") else { return };
        let k = from_btf(&b).expect("bpf_cast_to_kern_ctx and sk_buff.ip_summed");
        assert!(k.cast_id > 0);
        // ip_summed sits in the headers group after the list pointers, sk, tstamp, cb (48 bytes),
        // and the lengths: well inside the struct, never at its start.
        assert!(k.csum_off > 64 && k.csum_off < 256, "{k:?}");
        assert!(k.csum_shift <= 6);
        assert_eq!(from_btf(&b[..100]), None);
    }

    /// The magic calls become kfunc calls (or `r0 = 0`), only in code sections.
    #[test]
    fn patches_the_magic_calls() {
        let (b, off, shift) = prepare(crate::ebpf::OBJECT, None);
        let n = |obj: &[u8], pat: &[u8]| obj.windows(8).step_by(1).filter(|w| *w == pat).count();
        let magic = [0x85, 0, 0, 0, 0x64, 0x74, 0x65, 0x6e];
        assert!(n(crate::ebpf::OBJECT, &magic) > 0, "the object calls the magic helper");
        assert_eq!((n(&b, &magic), off, shift), (0, 0, 0));
        let k = KernCtx { cast_id: 4242, csum_off: 128, csum_shift: 5 };
        let (b, off, shift) = prepare(crate::ebpf::OBJECT, Some(k));
        assert_eq!((off, shift), (128, 5));
        assert_eq!(n(&b, &magic), 0);
        assert!(n(&b, &[0x85, 0x20, 0, 0, 0x92, 0x10, 0, 0]) > 0);
    }
}
